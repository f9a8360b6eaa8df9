// ./build/sample: super-resolve 8x8 images with a trained checkpoint (docs/design.md 3, 4).
//
//   inputs  --input FILE|DIR, or --data NAME --split S --count N
//   output  a PNG grid, one row per input: nearest | bicubic | samples | ground truth,
//           and every sample as its own PNG in --out-dir
//   --eval  held-out bits/dim, PSNR, SSIM and consistency for the model at each temperature,
//           bicubic and (with --baseline-ckpt) the ResNet-L2 model; a table on stdout, the
//           same as CSV and JSON beside --out.
//   --nll   bits/dim of A + B and of A alone on a whole split, batched, without sampling
//           (sample/nll.h); a table on stdout, CSV and JSON beside --out.
// docs/sample.md is the user's page; every error is one line "error: ..." and exit code 1.
// Ctrl-C (SIGINT / SIGTERM) finishes the current batch, writes its PNGs and exits 130 / 143;
// --skip-existing continues such a run with the same images.
//
// run() takes the steps in order, each in its own file: the flags (sample/options.h), the
// device and checkpoints (sample/models.h), the inputs (sample/inputs.h), the sampling plan and
// the samples (sample/sampling.h, progress bar in sample/progress.h), the grid and the PNGs
// (sample/outputs.h), the --eval rows and files (sample/report.h).
#include <omp.h>

#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "engine/error.h"
#include "sample/inputs.h"
#include "sample/models.h"
#include "sample/nll.h"
#include "sample/options.h"
#include "sample/outputs.h"
#include "sample/progress.h"
#include "sample/report.h"
#include "sample/sampling.h"

using namespace prsr;
using namespace prsr::sample_cli;

namespace {

int run(const Args& a) {
  if (a.threads > 0) omp_set_num_threads(a.threads);
  Models models = load_models(a);
  if (a.nll) return run_nll(a, models);  // no sampling (sample/nll.h)
  const ModelConfig& cfg = models.main.info.model;
  std::string label;
  const std::vector<Input> inputs = read_inputs(a, cfg.colors, cfg.size, label);
  const Plan plan = plan_sampling(a, cfg, inputs.size());
  check_outputs_writable(a);
  const Samples have = a.skip_existing ? find_existing(a, cfg, inputs, plan) : Samples{};
  // Each batch's PNGs are written as soon as it is drawn, so a Ctrl-C loses at most the batch
  // in progress.
  long written = 0;
  BatchHooks hooks;
  if (a.skip_existing) hooks.done = [&](size_t t, int j) { return !have.model[t][size_t(j)].empty(); };
  if (!a.eval)
    hooks.batch_done = [&](size_t t, int first, int n, const std::vector<std::vector<uint8_t>>& s) {
      written += write_batch_pngs(a, cfg, inputs, plan, t, first, n, s, have);
    };
  hooks.stop = [] { return stop_signal() != 0; };
  stop_gracefully_on_signals();
  Samples samples = sample_everything(models, inputs, plan, a.batch, a.seed, hooks);
  const char* where = a.out_dir.c_str();
  if (samples.interrupted) {
    const int sig = stop_signal();
    std::printf("%s: stopped after the batch in progress; wrote %ld sample PNG%s in %s/%s\n",
                sig == SIGINT ? "interrupted (SIGINT)" : "stopped (SIGTERM)", written, written == 1 ? "" : "s", where,
                a.eval ? "" : " (run again with --skip-existing to continue)");
    return 128 + sig;
  }
  for (size_t t = 0; t < have.model.size(); ++t)  // the skipped samples, read back, for the grid
    for (size_t j = 0; j < have.model[t].size(); ++j)
      if (samples.model[t][j].empty()) samples.model[t][j] = have.model[t][j];
  write_grid(a, cfg, inputs, plan, samples);
  if (a.eval) evaluate(a, models, inputs, label, plan, samples);
  else
    std::printf("wrote %ld sample PNG%s (%dx%d) in %s/\n", written, written == 1 ? "" : "s", cfg.size, cfg.size, where);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Line-buffered stdout even into a pipe or file, so that it interleaves with the progress
  // bar on stderr in the order things happened.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  take_signals_in_one_thread();  // before OpenMP starts its threads: they inherit the mask
  try {
    const Args a = parse_args(argc, argv);
    if (a.help) {
      print_help();
      return 0;
    }
    return run(a);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    if (progress_line_open()) std::fputc('\n', stderr);  // a progress bar was mid-line
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
