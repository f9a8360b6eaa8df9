// Sampling y ~ p(y | x) one sub-pixel at a time, in raster order, R < G < B (docs/design.md 1.4).
//
//   naive:  A(x) once, then the whole prior B over the full image for every sub-pixel
//           (32*32*C forward passes). Any backend. The ground truth for the cached sampler.
//   cached: (Ramachandran et al. 2017) every layer keeps the rows it still needs: the vertical
//           stack runs once per row, the horizontal stack and the head once per pixel and
//           colour, at that position only and for that colour's outputs only, batched over the
//           images as small GEMMs (model/sampler_gemm.h). The default. For a Device::Cpu
//           model it runs on the host in float32, on every OpenMP thread: images shared out
//           among them, or with fewer images than threads, a team: thread 0 runs the chain of
//           small products, the others meanwhile the parts whose inputs are already final
//           (head2's rows of the earlier colours, the h layers' left taps), and all share head2
//           and the vertical stack. For a Device::Cuda model it runs on the GPU's own kernels
//           (model/sampler_gpu.h: the same algorithm, the same draws).
//
// Both draw the same random numbers in the same order (position, colour, image), so with the
// same seed they produce the same images; their logits agree to float32 rounding.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/model.h"

namespace prsr {

enum class DecodeMode {
  Sample,  // draw from softmax((A + B) / temperature)   (default)
  Mean,    // the mean of softmax(A + B), rounded: not a sample, a point estimate
  Argmax,  // the most likely level: not a sample either
};
DecodeMode parse_decode_mode(const std::string& s);  // "sample" | "mean" | "argmax"
const char* decode_mode_name(DecodeMode m);

// Where the cached sampler's time goes (seconds, measured on thread 0 when
// SampleOptions::profile is set): the vertical stack (per row), the horizontal stack's
// products and gates (per pixel and colour), link (per row) and res (per pixel), head1 (and
// gathering head2's non-zero inputs), head2's products, combining A + B, the softmax and the
// draw, and (a team) waiting for the other threads (barriers, results not yet written).
struct SamplerProfile {
  double vertical = 0, horizontal = 0, link_res = 0, head = 0, head2 = 0, draw = 0, wait = 0;
  double total() const { return vertical + horizontal + link_res + head + head2 + draw + wait; }
};

// The cached sampler's arithmetic per image, in FLOPs (2 per multiply-add), from the model's
// shapes as the cached sampler runs them: per colour only that colour's outputs, over the
// inputs its mask lets them read.
struct SamplerFlops {
  double vertical = 0, horizontal = 0, link_res = 0, head = 0;
  double total() const { return vertical + horizontal + link_res + head; }
};
SamplerFlops cached_sampler_flops(Model<float>& model);

struct SampleOptions {
  DecodeMode mode = DecodeMode::Sample;
  float temperature = 1.0f;
  uint64_t seed = 0;
  bool cached = true;
  // Called after each completed row (done rows, total rows) for progress bars; may be empty.
  std::function<void(int, int)> progress;
  // Tests: when set, receives the logits (A + B, before the temperature) of every drawn
  // sub-pixel: index ((pixel * C + colour) * n + image) * 256 + level.
  std::vector<float>* logits_out = nullptr;
  // Benchmarks: stop after this many sub-pixel positions (pixel * C + colour); -1 = all.
  // Undrawn sub-pixels stay 0.
  long stop_after = -1;
  // Benchmarks: when set, the cached sampler adds its time per part here.
  SamplerProfile* profile = nullptr;
};

// Throws prsr::Error naming the layer when the model's prior is not one the cached sampler can
// run (it reads every shape and padding from the layers, and needs: vertical layers that end
// at the current row, horizontal 1 x k layers that end at the current pixel, 1x1 link, res and
// head layers, gated layers 2p wide on a p-wide stack). sample_images checks it when cached.
void check_cacheable(const Model<float>& model);

// The steps of the CPU samplers' draw (exposed for tests).
// The first level with the largest logit, as the scan "best = l where logits[l] > logits[best]"
// from level 0 (a NaN at level 0 is best; NaNs elsewhere never are).
int best_level(const float* logits);
// The draw's exponentials: p[l] = exp((logits[l] - logits[best]) / t) for the 256 levels, +0
// where the exponent is below -746, computed as model/sampler_kernels.h's draw_exp (4 at a time
// where the CPU has AVX2 and FMA: the same bits). With cum, also their running sums in level
// order: cum[l] = ((p[0] + p[1]) + ...) + p[l].
void draw_exponentials(const float* logits, int best, double t, double* p, double* cum = nullptr);
// The sampled level from the exponentials p (draw_exponentials), the best level and a uniform
// u in [0, 1): gpu_sampler::finish_draw's kSample, bit for bit, by bisection of the prefix sums;
// sample_level_from_sums takes those sums (draw_exponentials' cum).
int sample_level(const double* p, int best, double u);
int sample_level_from_sums(const double* cum, int best, double u);

// x: n low-res images, uint8 HWC (s/4 x s/4 x C). Returns n high-res images, uint8 HWC.
// A model trained with loss "l2" has no prior: it returns its regression, rounded.
std::vector<uint8_t> sample_images(Model<float>& model, const uint8_t* x, int n, const SampleOptions& opt);

}  // namespace prsr
