// The GPU cached sampler's algorithm, verified on the CPU: model/sampler_gpu.h's
// sample_images_gpu_emulated runs the CUDA kernels' bodies (model/sampler_kernels.h, the same
// code nvcc compiles) on the host, block by block, serially or on several threads per block
// with a barrier for __syncthreads. It must draw exactly the CPU cached sampler's images for
// the same seed (and so the naive sampler's), with logits equal to float32 rounding.
// (tests/test_gpu_sampler.cpp runs the real kernels where there is a GPU.)
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "model/sampler.h"
#include "model/sampler_gpu.h"
#include "tests/sampler_fixture.h"

using namespace prsr;
using namespace prsr::test;

namespace {

int distinct_values(const std::vector<uint8_t>& v) {
  bool seen[256] = {};
  int d = 0;
  for (uint8_t x : v)
    if (!seen[x]) seen[x] = true, ++d;
  return d;
}

}  // namespace

TEST_CASE("sampler_gpu (host launcher): the GPU kernels' algorithm draws the CPU cached sampler's images") {
  struct Setup {
    int colors, size, kernel, first_kernel, n;
  };
  for (Setup su : {Setup{1, 8, 3, 5, 3}, Setup{3, 8, 5, 7, 2}, Setup{3, 12, 3, 5, 1}}) {
    ModelConfig cfg = sampler_config(su.colors, su.size, su.kernel);
    cfg.first_kernel = su.first_kernel;  // 7 and 5: the default model's shapes
    Model<float> m(cfg, Device::Cpu);
    m.init(21);
    scale_params(m, 0.85f);
    const auto x = random_low(su.n, cfg.low(), su.colors, 5);
    for (float tau : {1.0f, 0.7f}) {
      SampleOptions o;
      o.temperature = tau;
      o.seed = 777;
      std::vector<float> lc, lg;
      o.logits_out = &lc;
      const auto cpu = sample_images(m, x.data(), su.n, o);
      o.logits_out = &lg;
      const auto gpu = sample_images_gpu_emulated(m, x.data(), su.n, o);
      INFO("C=" << su.colors << " size=" << su.size << " k=" << su.kernel << "/" << su.first_kernel << " n=" << su.n
                << " tau=" << tau);
      CHECK(gpu == cpu);
      REQUIRE(lg.size() == lc.size());
      const double err = logit_error(lg, lc);
      std::printf("  GPU kernels (host) vs CPU cached C=%d size=%d k=%d/%d tau=%.1f: max logit diff %.2e (relative)\n",
                  su.colors, su.size, su.kernel, su.first_kernel, tau, err);
      CHECK(err <= 2e-5);
      CHECK(distinct_values(gpu) > 5);  // not a degenerate image
    }
    SampleOptions o1, o2;  // a different seed gives different images
    o1.seed = 1;
    o2.seed = 2;
    CHECK(sample_images_gpu_emulated(m, x.data(), su.n, o1) != sample_images_gpu_emulated(m, x.data(), su.n, o2));
  }
}

TEST_CASE("sampler_gpu (host launcher): equal to the naive sampler; no gated layers; a width not a multiple of C") {
  struct Setup {
    int colors, channels, layers;
  };
  for (Setup su : {Setup{3, 6, 2}, Setup{3, 4, 0}, Setup{1, 4, 0}, Setup{3, 5, 1}}) {
    const NaiveComparison r = against_naive(su.colors, su.channels, su.layers,
                                            [](Model<float>& m, const uint8_t* x, int n, const SampleOptions& o) {
                                              return sample_images_gpu_emulated(m, x, n, o);
                                            });
    INFO("C=" << su.colors << " p=" << su.channels << " layers=" << su.layers);
    CHECK(r.images == r.naive);
    REQUIRE(r.logits.size() == r.naive_logits.size());
    CHECK(logit_error(r.logits, r.naive_logits) <= 2e-5);
  }
}

TEST_CASE("sampler_gpu (host launcher): several threads per block (a barrier for __syncthreads) give the same bits") {
  // Each output is computed by one thread with the same sum whatever the block size, so the
  // logits are bitwise those of the serial run; a missing barrier or a thread's share left out
  // shows up here (3 threads: shares of unequal size; 5: more threads than some steps' outputs).
  ModelConfig cfg = sampler_config(3, 8, 3);
  Model<float> m(cfg, Device::Cpu);
  m.init(12);
  scale_params(m, 0.85f);
  const auto x = random_low(2, cfg.low(), 3, 44);
  SampleOptions o;
  o.seed = 5;
  o.temperature = 0.9f;
  std::vector<float> l1, lt;
  o.logits_out = &l1;
  const auto serial = sample_images_gpu_emulated(m, x.data(), 2, o, 1);
  for (int threads : {3, 5}) {
    o.logits_out = &lt;
    INFO("threads per block " << threads);
    CHECK(sample_images_gpu_emulated(m, x.data(), 2, o, threads) == serial);
    REQUIRE(lt.size() == l1.size());
    CHECK(std::memcmp(lt.data(), l1.data(), lt.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("sampler_gpu (host launcher): argmax and mean decoding, stop_after and progress as the CPU sampler") {
  ModelConfig cfg = sampler_config(3, 8, 3);
  Model<float> m(cfg, Device::Cpu);
  m.init(4);
  const auto x = random_low(2, cfg.low(), 3, 9);
  for (DecodeMode mode : {DecodeMode::Argmax, DecodeMode::Mean}) {
    SampleOptions o;
    o.mode = mode;
    o.seed = 3;
    INFO(decode_mode_name(mode));
    CHECK(sample_images_gpu_emulated(m, x.data(), 2, o) == sample_images(m, x.data(), 2, o));
  }
  // Stopping in the middle of a row and at a row's end: the undrawn sub-pixels stay 0.
  for (long stop : {long(8 * 3 * 2 + 5), long(8 * 3 * 3)}) {
    SampleOptions o;
    o.seed = 9;
    o.stop_after = stop;
    int calls = 0, last = 0;
    o.progress = [&](int done, int total) {
      ++calls;
      last = done;
      CHECK(total == 8);
    };
    const auto gpu = sample_images_gpu_emulated(m, x.data(), 2, o);
    const int gpu_calls = calls, gpu_last = last;
    calls = last = 0;
    const auto cpu = sample_images(m, x.data(), 2, o);
    INFO("stop_after " << stop);
    CHECK(gpu == cpu);
    CHECK(gpu_calls == calls);
    CHECK(gpu_last == last);
    CHECK(gpu[size_t(8 * 8 * 3) - 1] == 0);  // the last sub-pixel of image 0 was not drawn
  }
}

TEST_CASE("sampler_gpu (host launcher): refuses what the cached sampler refuses; bad options") {
  ModelConfig cfg = sampler_config(3, 8, 3);
  const auto x = random_low(1, cfg.low(), 3, 1);
  Model<float> m(cfg, Device::Cpu);
  m.gated[0].h.pad_l -= 1;  // misses its last tap
  SampleOptions o;
  CHECK_THROWS_WITH_AS(sample_images_gpu_emulated(m, x.data(), 1, o), doctest::Contains("prior.layer0.h"), Error);
  Model<float> ok(cfg, Device::Cpu);
  o.temperature = 0;
  CHECK_THROWS_AS(sample_images_gpu_emulated(ok, x.data(), 1, o), Error);
  o.temperature = 1;
  CHECK_THROWS_AS(sample_images_gpu_emulated(ok, x.data(), 0, o), Error);
  // A CPU model is not the GPU sampler's.
  CHECK_THROWS_AS(sample_images_gpu(ok, x.data(), 1, o), Error);
  // A head too wide for the row kernel's shared memory (1500 outputs per colour; 1408 fit).
  ModelConfig wide = cfg;
  wide.head = 4500;
  Model<float> mw(wide, Device::Cpu);
  CHECK_THROWS_WITH_AS(sample_images_gpu_emulated(mw, x.data(), 1, o), doctest::Contains("prior.head1"), Error);
  CHECK_THROWS_WITH_AS(sample_images_gpu_emulated(mw, x.data(), 1, o), doctest::Contains("shared memory"), Error);
}

TEST_CASE("sampler_gpu (host launcher): the default model's shapes, its first rows equal the CPU cached sampler's") {
  // 32 x 32, 20 gated layers of 32 channels, head 1024 (the widest product: 341 outputs of one
  // colour, the largest shared-memory use): two rows and a few pixels of the third.
  ModelConfig cfg;
  Model<float> m(cfg, Device::Cpu);
  m.init(1);
  const auto x = random_low(2, cfg.low(), cfg.colors, 3);
  SampleOptions o;
  o.seed = 42;
  o.stop_after = long(cfg.size) * cfg.colors * 2 + 5;
  std::vector<float> lc, lg;
  o.logits_out = &lc;
  const auto cpu = sample_images(m, x.data(), 2, o);
  o.logits_out = &lg;
  const auto gpu = sample_images_gpu_emulated(m, x.data(), 2, o);
  CHECK(gpu == cpu);
  REQUIRE(lg.size() == lc.size());
  CHECK(logit_error(lg, lc) <= 2e-5);
  CHECK(distinct_values(gpu) > 5);
}
