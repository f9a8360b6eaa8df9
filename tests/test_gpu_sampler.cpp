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
#include "tests/sampler_fixture.h"

using namespace prsr;
using namespace prsr::test;

namespace {

const bool g_gpu_sampler_probe = gpu_ok();

}  // namespace

TEST_CASE("gpu sampler: the cached sampler's kernels == the GPU naive sampler, C = 1 and 3, batch 3" *
          doctest::skip(!gpu_ok())) {
  for (int colors : {1, 3}) {
    const ModelConfig cfg = sampler_config(colors, 8, 3);
    Model<float> m(cfg, Device::Cuda);
    m.init(21);
    scale_params(m, 0.85f);
    const auto x = random_low(3, cfg.low(), cfg.colors, 5);
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
  const ModelConfig cfg = sampler_config(3, 8, 3);
  Model<float> m(cfg, Device::Cuda);
  m.init(12);
  scale_params(m, 0.85f);
  const auto x = random_low(4, cfg.low(), cfg.colors, 44);
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
  const ModelConfig cfg = sampler_config(3, 8, 3);
  Model<float> mg(cfg, Device::Cuda), mc(cfg, Device::Cpu);
  mg.init(3);
  mc.params.upload(mg.params.download());
  const auto x = random_low(2, cfg.low(), cfg.colors, 9);
  SampleOptions o;
  o.seed = 11;
  CHECK(sample_images(mg, x.data(), 2, o) == sample_images(mc, x.data(), 2, o));
}
