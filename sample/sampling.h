// ./build/sample's sampling: the plan (mode, sampler, samples per input, temperatures) and
// every (input, sample) pair drawn in batches with reproducible seeds (docs/sample.md).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cli/args.h"
#include "model/sampler.h"
#include "sample/inputs.h"
#include "sample/models.h"
#include "sample/options.h"

namespace prsr::sample_cli {

struct Plan {
  SampleOptions opt;  // mode and sampler; seed and temperature are set per batch
  int S = 1;          // samples per input and temperature
  std::vector<float> temps;
};

// --mode, --naive, --samples-per-input and --temperature; a deterministic decoding (an l2 model,
// --mode mean|argmax) gets S = 1 (and an l2 model one temperature) with a note. Prints the
// "sampling: ..." line.
Plan plan_sampling(const Args& a, const ModelConfig& cfg, size_t n_inputs);

struct Samples {
  std::vector<std::vector<std::vector<uint8_t>>> model;  // [temperature][input * S + k], HWC
  std::vector<std::vector<uint8_t>> l2;                  // [input]: the baseline, when loaded
  bool interrupted = false;                              // hooks.stop said stop: the batches not drawn are left empty
};

// What sample_everything does around its batches; every member may be empty.
struct BatchHooks {
  // done(t, j): sample j (= input * S + k) at temperature index t is already there
  // (--skip-existing). A batch whose samples are all done is not drawn (its entries stay
  // empty); the others are drawn whole, so every image is the one an uninterrupted run draws.
  std::function<bool(size_t t, int j)> done;
  // After each drawn batch at temperature index t: samples [first, first + n) are in `s`.
  std::function<void(size_t t, int first, int n, const std::vector<std::vector<uint8_t>>& s)> batch_done;
  // Polled after each batch (after batch_done): true stops there (Ctrl-C).
  std::function<bool()> stop;
};

// Every (input, sample) pair at every temperature, then the baseline; one progress bar over
// all of it, then the "sampled ..." line. Batch b of temperature index t is drawn with seed
// splitmix64(seed ^ splitmix64(t << 32 | b)).
Samples sample_everything(Models& models, const std::vector<Input>& inputs, const Plan& plan, int batch, uint64_t seed,
                          const BatchHooks& hooks = {});

using cli::fmt_temperature;  // cli/args.h: "1.0", "0.9", "1e-05"

}  // namespace prsr::sample_cli
