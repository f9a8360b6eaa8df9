// Small models and inputs shared by the sampler tests (tests/test_sampler.cpp: CPU samplers;
// tests/test_sampler_gpu.cpp: the GPU sampler's kernels run on the host; tests/test_gpu_sampler.cpp:
// the same on a GPU).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "model/model.h"
#include "model/sampler.h"

namespace prsr::test {

// A model small enough to sample naively in a test: size x size, C colours, 2 gated layers of
// kernel k (first layer 5), a 16-wide head.
inline ModelConfig sampler_config(int colors, int size, int kernel) {
  ModelConfig c;
  c.colors = colors;
  c.size = size;
  c.cond_channels = 4;
  c.cond_blocks = 1;
  c.prior_channels = colors == 3 ? 6 : 4;
  c.prior_layers = 2;
  c.kernel = kernel;
  c.first_kernel = 5;
  c.head = 16;
  return c;
}

// Larger weights than He init so the distributions are peaked and far from uniform.
inline void scale_params(Model<float>& m, float s) {
  auto h = m.params.download();
  for (size_t i = 0; i < m.params.trainable_count(); ++i) h[i] *= s;
  m.params.upload(h);
}

// n random low-res images, L x L x C uint8.
inline std::vector<uint8_t> random_low(int n, int L, int C, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> x(size_t(n) * L * L * C);
  for (auto& v : x) v = uint8_t(rng() % 256);
  return x;
}

// max |a - b| relative to max(1, max |b|).
inline double logit_error(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, mx = 1;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, double(std::fabs(a[i] - b[i])));
    mx = std::max(mx, double(std::fabs(b[i])));
  }
  return err / mx;
}

// One model of sampler_config(colors, 8, 3) with the prior `channels` wide and `layers` gated
// layers (init seed 8, weights x 0.85), two random inputs, sampling seed 31: the images and
// logits of `sampler` (called as sample_images is) and of the naive sampler.
struct NaiveComparison {
  std::vector<uint8_t> images, naive;
  std::vector<float> logits, naive_logits;
};
template <class Sampler>
NaiveComparison against_naive(int colors, int channels, int layers, Sampler sampler) {
  ModelConfig cfg = sampler_config(colors, 8, 3);
  cfg.prior_channels = channels;
  cfg.prior_layers = layers;
  Model<float> m(cfg, Device::Cpu);
  m.init(8);
  scale_params(m, 0.85f);
  const auto x = random_low(2, cfg.low(), colors, 6);
  NaiveComparison r;
  SampleOptions o;
  o.seed = 31;
  o.logits_out = &r.logits;
  r.images = sampler(m, x.data(), 2, o);
  o.logits_out = &r.naive_logits;
  o.cached = false;
  r.naive = sample_images(m, x.data(), 2, o);
  return r;
}

}  // namespace prsr::test
