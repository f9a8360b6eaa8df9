// GPU suite: the cached sampler on the GPU's own kernels (model/sampler_gpu.h), which
// sample_images runs for a Device::Cuda model. It must draw the GPU naive sampler's images for
// the same seed (the naive sampler runs the whole prior through the CUDA backend's kernels),
// the same images as the same kernel bodies run on the host (tests/test_sampler_gpu.cpp checks
// those against the CPU samplers without a GPU), and the same bits run after run.
//
// Without a CUDA device every case is skipped visibly (tests/device_buf.h's gpu_ok line).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "model/sampler.h"
#include "model/sampler_gpu.h"
#include "tests/device_buf.h"

using namespace prsr;

namespace {

const bool g_gpu_sampler_probe = gpu_ok();

ModelConfig small_config(int colors) {
  ModelConfig c;
  c.colors = colors;
  c.size = 8;
  c.cond_channels = 4;
  c.cond_blocks = 1;
  c.prior_channels = colors == 3 ? 6 : 4;
  c.prior_layers = 2;
  c.kernel = 3;
  c.first_kernel = 5;
  c.head = 16;
  return c;
}

// Larger weights than He init: peaked distributions, far from uniform.
void scale_weights(Model<float>& m, float s) {
  auto h = m.params.download();
  for (size_t i = 0; i < m.params.trainable_count(); ++i) h[i] *= s;
  m.params.upload(h);
}

std::vector<uint8_t> low_images(int n, const ModelConfig& c, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> x(size_t(n) * c.low() * c.low() * c.colors);
  for (auto& v : x) v = uint8_t(rng() % 256);
  return x;
}

double logit_error(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, mx = 1;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, double(std::fabs(a[i] - b[i])));
    mx = std::max(mx, double(std::fabs(b[i])));
  }
  return err / mx;
}

}  // namespace

TEST_CASE("gpu sampler: the cached sampler's kernels == the GPU naive sampler, C = 1 and 3, batch 3" *
          doctest::skip(!gpu_ok())) {
  for (int colors : {1, 3}) {
    const ModelConfig cfg = small_config(colors);
    Model<float> m(cfg, Device::Cuda);
    m.init(21);
    scale_weights(m, 0.85f);
    const auto x = low_images(3, cfg, 5);
    for (float tau : {1.0f, 0.7f}) {
      SampleOptions o;
      o.temperature = tau;
      o.seed = 777;
      std::vector<float> lc, ln;
      o.logits_out = &lc;
      const auto cached = sample_images(m, x.data(), 3, o);  // the GPU cached sampler
      o.logits_out = &ln;
      o.cached = false;
      const auto naive = sample_images(m, x.data(), 3, o);
      INFO("C=" << colors << " tau=" << tau);
      CHECK(cached == naive);
      REQUIRE(lc.size() == ln.size());
      const double err = logit_error(lc, ln);
      std::printf("  GPU cached vs GPU naive C=%d tau=%.1f: max logit diff %.2e (relative)\n", colors, tau, err);
      CHECK(err <= 2e-5);
    }
  }
}

TEST_CASE("gpu sampler: the device kernels == the same bodies on the host, and the same bits twice" *
          doctest::skip(!gpu_ok())) {
  const ModelConfig cfg = small_config(3);
  Model<float> m(cfg, Device::Cuda);
  m.init(12);
  scale_weights(m, 0.85f);
  const auto x = low_images(4, cfg, 44);
  SampleOptions o;
  o.seed = 5;
  o.temperature = 0.9f;
  std::vector<float> ld, lh, ld2;
  o.logits_out = &ld;
  const auto dev = sample_images_gpu(m, x.data(), 4, o);
  o.logits_out = &lh;
  const auto host = sample_images_gpu_emulated(m, x.data(), 4, o);
  CHECK(dev == host);
  CHECK(logit_error(ld, lh) <= 2e-5);  // CUDA's tanhf / expf and FMA contraction: float rounding
  o.logits_out = &ld2;
  CHECK(sample_images_gpu(m, x.data(), 4, o) == dev);
  REQUIRE(ld2.size() == ld.size());
  CHECK(std::memcmp(ld2.data(), ld.data(), ld.size() * sizeof(float)) == 0);
  // Argmax and mean decoding, and a run stopped in the middle of a row.
  for (DecodeMode mode : {DecodeMode::Argmax, DecodeMode::Mean}) {
    SampleOptions d;
    d.mode = mode;
    CHECK(sample_images_gpu(m, x.data(), 4, d) == sample_images_gpu_emulated(m, x.data(), 4, d));
  }
  SampleOptions s;
  s.seed = 2;
  s.stop_after = 8 * 3 * 3 + 4;
  CHECK(sample_images_gpu(m, x.data(), 4, s) == sample_images_gpu_emulated(m, x.data(), 4, s));
}

TEST_CASE("gpu sampler: a GPU model samples the CPU model's images (same weights, same seed)" *
          doctest::skip(!gpu_ok())) {
  const ModelConfig cfg = small_config(3);
  Model<float> mg(cfg, Device::Cuda), mc(cfg, Device::Cpu);
  mg.init(3);
  mc.params.upload(mg.params.download());
  const auto x = low_images(2, cfg, 9);
  SampleOptions o;
  o.seed = 11;
  CHECK(sample_images(mg, x.data(), 2, o) == sample_images(mc, x.data(), 2, o));
}
