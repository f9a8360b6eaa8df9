#include "train/periodic.h"

#include <algorithm>
#include <cstdio>

#include "data/preprocess.h"
#include "engine/error.h"
#include "eval/grid.h"
#include "model/sampler.h"
#include "train/console.h"

namespace prsr::train_cli {

namespace {

struct SamplingInterrupted {};

}  // namespace

HeldOut::HeldOut(const prsr::data::Dataset& valid, int valid_count, int batch, int rank, int ranks,
                 void (*sum)(double*, int))
    : valid_(valid),
      n_(std::min(valid_count, valid.n)),
      batch_(batch),
      rank_(rank),
      ranks_(ranks),
      sum_(sum),
      ptrs_(size_t(batch)) {}

std::pair<double, double> HeldOut::evaluate(prsr::Trainer<float>& trainer) {
  double t[2] = {0, 0};  // sums of loss and bits/dim, every batch weighted by its size
  for (int i = batch_ * rank_; i < n_; i += batch_ * ranks_) {
    const int n = std::min(batch_, n_ - i);
    for (int k = 0; k < n; ++k) ptrs_[size_t(k)] = valid_.image(i + k);
    const prsr::StepResult r = trainer.evaluate(ptrs_.data(), n);
    t[0] += r.loss * n;
    t[1] += r.nll_bits * n;
  }
  if (ranks_ > 1) sum_(t, 2);
  return std::make_pair(t[0] / n_, t[1] / n_);
}

SampleGrids::SampleGrids(const prsr::data::Dataset& valid, const prsr::ModelConfig& m, int sample_rows, uint64_t seed,
                         const std::string& out)
    : valid_(valid),
      rows_(std::min(sample_rows, valid.n)),
      C_(m.colors),
      S_(m.size),
      Lo_(m.low()),
      hr_bytes_(size_t(S_) * S_ * C_),
      lr_bytes_(size_t(Lo_) * Lo_ * C_),
      pixel_(m.has_prior()),
      seed_(seed),
      out_(out),
      x_(size_t(rows_) * 2 * lr_bytes_) {
  for (int r = 0; r < rows_; ++r)
    for (int k = 0; k < 2; ++k)
      prsr::data::box_downsample4(valid_.image(r), S_, C_, x_.data() + (size_t(r) * 2 + k) * lr_bytes_);
}

void SampleGrids::write(prsr::Model<float>& model, long step) {
  try {
    prsr::Grid grid;
    std::vector<std::vector<uint8_t>> outs;
    const float temps[2] = {1.0f, 0.8f};
    const int n_temps = pixel_ ? 2 : 1;
    for (int t = 0; t < n_temps; ++t) {
      prsr::SampleOptions so;
      so.temperature = temps[t];
      so.seed = seed_;
      // Ctrl-C while sampling: abandon the grid (the training state is not touched by it).
      so.progress = [](int, int) {
        if (g_signal) throw SamplingInterrupted();
      };
      outs.push_back(prsr::sample_images(model, x_.data(), rows_ * 2, so));
    }
    for (int r = 0; r < rows_; ++r) {
      std::vector<prsr::data::Image> row;
      row.push_back(prsr::make_image(x_.data() + size_t(r) * 2 * lr_bytes_, Lo_, Lo_, C_));
      for (int t = 0; t < n_temps; ++t)
        for (int k = 0; k < (pixel_ ? 2 : 1); ++k)
          row.push_back(prsr::make_image(outs[size_t(t)].data() + (size_t(r) * 2 + k) * hr_bytes_, S_, S_, C_));
      row.push_back(prsr::make_image(valid_.image(r), S_, S_, C_));
      grid.add_row(std::move(row));
    }
    char name[64];
    std::snprintf(name, sizeof name, "/samples_step%07ld.png", step);
    grid.write(out_ + name);
    grid.write(out_ + "/samples_latest.png");
    say("samples    step %ld: %s%s", step, (out_ + name).c_str(),
        pixel_ ? "  (input | tau 1.0 x2 | tau 0.8 x2 | truth)" : "  (input | L2 prediction | truth)");
  } catch (const SamplingInterrupted&) {
    say("samples    step %ld: abandoned (interrupted)", step);
  } catch (const Error& e) {
    // A grid is a by-product: a failure is reported, never fatal to training.
    if (!warned_) say("warning: no sample grid at step %ld: %s", step, e.what());
    warned_ = true;
  }
}

}  // namespace prsr::train_cli
