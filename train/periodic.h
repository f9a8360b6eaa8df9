// What ./build/train reports besides the checkpoint while it trains: held-out figures on a
// fixed validation subset (every --eval-every steps) and a PNG grid of samples of fixed
// validation inputs (every --sample-every steps). Neither changes the training state or the
// data order (tests/test_cli_train.cpp: a resumed run that evaluates and samples at other steps
// ends bit-identical).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "data/dataset.h"
#include "model/config.h"
#include "model/model.h"
#include "model/trainer.h"

namespace prsr::train_cli {

// The first min(--valid-count, valid.n) validation images, evaluated `batch` at a time.
class HeldOut {
 public:
  // Several ranks (train/distributed.h): rank `rank` of `ranks` evaluates every ranks-th batch
  // and `sum` (all-reduce, in place) adds the ranks' totals; every rank must call evaluate().
  HeldOut(const prsr::data::Dataset& valid, int valid_count, int batch, int rank = 0, int ranks = 1,
          void (*sum)(double*, int) = nullptr);
  int count() const { return n_; }
  // (mean loss, mean bits/dim) over the subset (evaluation-mode batch norm, no gradients),
  // every batch weighted by its size. The loss is MSE for --loss l2 (bits/dim 0 then).
  std::pair<double, double> evaluate(prsr::Trainer<float>& trainer);

 private:
  const prsr::data::Dataset& valid_;
  int n_, batch_, rank_, ranks_;
  void (*sum_)(double*, int);
  std::vector<const uint8_t*> ptrs_;  // batch_ entries
};

// OUT/samples_stepNNNNNNN.png and a copy OUT/samples_latest.png. The inputs are the first
// min(--sample-rows, valid.n) validation images box-downsampled to low x low, each twice; one
// row per input: input | tau 1.0 x2 | tau 0.8 x2 | truth with the prior (--loss pixel), input
// | L2 prediction | truth without. Sampling uses --seed, so grids of the same step agree.
class SampleGrids {
 public:
  SampleGrids(const prsr::data::Dataset& valid, const prsr::ModelConfig& m, int sample_rows, uint64_t seed,
              const std::string& out);
  // Writes the grid of `step` and says so. Ctrl-C while sampling abandons the grid (said too);
  // an Error is a warning the first time and silent after: a grid is a by-product, never fatal.
  void write(prsr::Model<float>& model, long step);

 private:
  const prsr::data::Dataset& valid_;
  int rows_, C_, S_, Lo_;
  size_t hr_bytes_, lr_bytes_;
  bool pixel_;
  uint64_t seed_;
  std::string out_;
  std::vector<uint8_t> x_;  // rows_ * 2 inputs, lr_bytes_ each
  bool warned_ = false;
};

}  // namespace prsr::train_cli
