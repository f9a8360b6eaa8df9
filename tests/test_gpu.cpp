// GPU suite: what only the CUDA backend has. The kernels' parity with the reference (every op,
// every shape, accumulate and fresh gradients) is tests/test_parity.cpp, compiled into this suite
// for CUDA; this file holds the rest: device memory helpers, the TF32 opt-in, bitwise
// reproducibility of the reductions, and whole-model runs on the GPU. Inputs are seeded
// uniform(-1, 1), never zeros.
//
// Without a CUDA device (or in a build without CUDA) every case is skipped visibly: one line
// "skipped: no CUDA device (<reason>)" on stdout, the cases counted as skipped, exit status 0.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/ref/kernels.h"
#include "model/sampler.h"
#include "model/trainer.h"
#include "tests/device_buf.h"
#include "tests/expect.h"

namespace {

using prsr::ConvGeom;
namespace cuda = prsr::cuda;
namespace ref = prsr::ref;

// Asked at static-initialisation time, so that the skip line comes before doctest's output.
const bool g_gpu_probe = gpu_ok();

// ---------------------------------------------------------------- host helpers

std::vector<float> random_vec(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) {
    x = u(rng);
    if (x == 0.0f) x = 0.5f;
  }
  return v;
}

std::vector<uint8_t> random_targets(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> u(0, prsr::kLevels - 1);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = uint8_t(u(rng));
  return v;
}

// Device buffers (tests/device_buf.h): upload a host vector, download on get().
template <class T>
using Dev = Buf<T, prsr::Device::Cuda>;
using DevF = Dev<float>;

void expect_equal_bits(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  REQUIRE(a.size() == b.size());
  size_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) ++diff;
  INFO(what << ": " << diff << " elements differ between two runs");
  CHECK(diff == 0);
}

// Tolerance for a float32 sum of `terms` products of O(1) values.
double sum_atol(double terms) { return 2e-6 * terms + 1e-6; }

}  // namespace

// ================================================================ memory helpers

TEST_CASE("gpu: memory round trip, copy_device, fill, synchronize" * doctest::skip(!gpu_ok())) {
  const auto h = random_vec(1001, 11);
  DevF a(h), b(random_vec(1001, 12));
  cuda::copy_device(b.p, a.p, h.size() * sizeof(float));
  cuda::synchronize();
  CHECK(b.get() == h);
  cuda::fill(a.p, 0.25f, 1001);
  CHECK(a.get() == std::vector<float>(1001, 0.25f));
  CHECK(cuda::unavailable_reason() != nullptr);
}

// ================================================================ TF32

TEST_CASE("gpu: TF32 opt-in changes nothing but precision" * doctest::skip(!gpu_ok())) {
  const ConvGeom g{2, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1};
  const size_t nx = size_t(g.n) * g.ci * g.h * g.w, nw = size_t(g.co) * g.ci * 9;
  const size_t ny = size_t(g.n) * g.co * g.ho() * g.wo();
  const auto x = random_vec(nx, 1), w = random_vec(nw, 2);
  std::vector<float> yr(ny);
  ref::conv2d_forward(yr.data(), x.data(), w.data(), (const float*)nullptr, g);
  DevF dx(x), dw(w), y(random_vec(ny, 3));
  cuda::set_tf32(true);
  cuda::conv2d_forward(y.p, dx.p, dw.p, nullptr, g);
  const auto y_tf32 = y.get();
  cuda::set_tf32(false);
  // TF32 keeps 10 mantissa bits: about 1e-3 relative per product.
  expect_close("conv y (TF32)", y_tf32, yr, 2e-3 * 288, 1e-2);
  cuda::conv2d_forward(y.p, dx.p, dw.p, nullptr, g);
  expect_close("conv y (back to float32)", y.get(), yr, sum_atol(288), 1e-4);
}

// ================================================================ determinism

TEST_CASE("gpu: reductions are bitwise reproducible" * doctest::skip(!gpu_ok())) {
  const int n = 4, colors = 3, hw = 256, c = 8;
  const size_t nl = size_t(n) * colors * prsr::kLevels * hw, nt = size_t(n) * colors * hw;
  DevF a(random_vec(nl, 1)), b(random_vec(nl, 2));
  Dev<uint8_t> t(random_targets(nt, 3));
  DevF l1(std::vector<float>{0}), l2(std::vector<float>{0});
  cuda::softmax_ce_forward(l1.p, a.p, b.p, t.p, n, colors, hw);
  cuda::softmax_ce_forward(l2.p, a.p, b.p, t.p, n, colors, hw);
  expect_equal_bits(l1.get(), l2.get(), "softmax_ce loss");

  const size_t nx = size_t(n) * c * 1024;
  DevF x(random_vec(nx, 4)), gm(random_vec(c, 5)), bt(random_vec(c, 6));
  DevF y(random_vec(nx, 7)), mean(random_vec(c, 8)), inv(random_vec(c, 9));
  DevF rm(random_vec(c, 10)), rv(random_vec(c, 11));
  cuda::batchnorm_forward_train(y.p, mean.p, inv.p, rm.p, rv.p, x.p, gm.p, bt.p, n, c, 1024, 0.1f, 1e-5f);
  const auto m1 = mean.get(), i1 = inv.get();
  cuda::batchnorm_forward_train(y.p, mean.p, inv.p, rm.p, rv.p, x.p, gm.p, bt.p, n, c, 1024, 0.1f, 1e-5f);
  expect_equal_bits(mean.get(), m1, "bn mean");
  expect_equal_bits(inv.get(), i1, "bn invstd");

  const ConvGeom g{n, c, 32, 32, 16, 3, 5, 2, 0, 2, 2};
  const size_t nw = size_t(g.co) * g.ci * g.kh * g.kw, ny = size_t(n) * g.co * 32 * 32;
  DevF w(random_vec(nw, 12)), dy(random_vec(ny, 13));
  const auto dw0 = random_vec(nw, 14);
  DevF dw1(dw0), dw2(dw0), db1(random_vec(g.co, 15)), db2(db1.get());
  cuda::conv2d_backward(nullptr, dw1.p, db1.p, dy.p, x.p, w.p, g);
  cuda::conv2d_backward(nullptr, dw2.p, db2.p, dy.p, x.p, w.p, g);
  expect_equal_bits(dw1.get(), dw2.get(), "conv dw");
  expect_equal_bits(db1.get(), db2.get(), "conv db");
}

// ================================================================ whole-model GPU tests
// Reserved for the lead: model forward/backward on --device cuda against the CPU backend,
// a few training steps, sampler parity. Add them below this line.

using namespace prsr;

namespace {

ModelConfig gpu_model_config(int colors) {
  ModelConfig c;
  c.colors = colors;
  c.size = 16;
  c.cond_channels = 8;
  c.cond_blocks = 1;
  c.prior_channels = colors == 3 ? 12 : 8;
  c.prior_layers = 2;
  c.kernel = 5;
  c.first_kernel = 7;
  c.head = 64;
  return c;
}

std::vector<uint8_t> gpu_images(int n, const ModelConfig& c, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(size_t(n) * c.size * c.size * c.colors);
  for (auto& x : v) x = uint8_t(rng() % 256);
  return v;
}

}  // namespace

// The full model on the GPU against the double reference (as the CPU backend is tested in
// test_model.cpp): logits, loss, every parameter gradient and the running statistics.
TEST_CASE("gpu: whole model logits, loss and gradients match the reference" * doctest::skip(!gpu_ok())) {
  for (int colors : {1, 3}) {
    const ModelConfig cfg = gpu_model_config(colors);
    Model<float> mg(cfg, Device::Cuda);
    Model<double> md(cfg, Device::Ref);
    mg.init(3);
    {
      const auto pf = mg.params.download();
      std::vector<double> pd(pf.begin(), pf.end());
      md.params.upload(pd);
    }
    const auto img = gpu_images(4, cfg, 11);
    struct Out {
      std::vector<float> a, b, grad, params;
      double loss = 0;
    };
    auto run = [&](auto& m, auto zero) {
      using T = decltype(zero);
      std::vector<T> xs, ys;
      std::vector<uint8_t> tg;
      make_batch_vec<T>(img.data(), 4, colors, cfg.size, xs, ys, tg);
      Graph<T> g(m.device());
      Tensor<T>* x = g.tensor({4, colors, cfg.low(), cfg.low()}, false, "x");
      Tensor<T>* y = g.tensor({4, colors, cfg.size, cfg.size}, false, "y");
      auto* t = static_cast<uint8_t*>(g.arena().alloc(tg.size()));
      device_upload(m.device(), x->data, xs.data(), xs.size() * sizeof(T));
      device_upload(m.device(), y->data, ys.data(), ys.size() * sizeof(T));
      device_upload(m.device(), t, tg.data(), tg.size());
      m.params.zero_grad();
      auto L = m.loss(g, x, y, ByteTensor{{4, colors, cfg.size, cfg.size}, m.device(), t}, true);
      g.backward(L.total);
      std::vector<T> a(L.a->numel()), b(L.b->numel());
      device_download(m.device(), a.data(), L.a->data, a.size() * sizeof(T));
      device_download(m.device(), b.data(), L.b->data, b.size() * sizeof(T));
      T lv;
      device_download(m.device(), &lv, L.total->data, sizeof(T));
      Out o;
      o.a.assign(a.begin(), a.end());
      o.b.assign(b.begin(), b.end());
      for (auto v : m.params.download_grad()) o.grad.push_back(float(v));
      for (auto v : m.params.download()) o.params.push_back(float(v));
      o.loss = double(lv);
      return o;
    };
    const Out og = run(mg, 0.f), od = run(md, 0.0);
    expect_close("A logits", og.a, od.a, 1e-5, 1e-4);
    expect_close("B logits", og.b, od.b, 1e-5, 1e-4);
    CHECK(og.loss == doctest::Approx(od.loss).epsilon(1e-5));
    expect_close("parameter gradients", og.grad, od.grad, 2e-6, 1e-3);
    expect_close("parameters and running stats", og.params, od.params, 1e-6, 1e-5);
  }
}

TEST_CASE("gpu: training steps follow the CPU backend" * doctest::skip(!gpu_ok())) {
  const ModelConfig cfg = gpu_model_config(3);
  Model<float> mc(cfg, Device::Cpu), mg(cfg, Device::Cuda);
  mc.init(5);
  mg.init(5);
  const auto img = gpu_images(4, cfg, 2);
  std::vector<const uint8_t*> p;
  for (int b = 0; b < 4; ++b) p.push_back(img.data() + size_t(b) * cfg.size * cfg.size * 3);
  Trainer<float> tc(mc, OptimConfig{}, 4), tg(mg, OptimConfig{}, 4);
  for (int s = 0; s < 3; ++s) {
    const StepResult rc = tc.step(p.data(), s), rg = tg.step(p.data(), s);
    CHECK(rg.loss == doctest::Approx(rc.loss).epsilon(1e-4));
  }
  expect_close("parameters after 3 steps", mg.params.download(), mc.params.download(), 1e-5, 1e-3);
}

TEST_CASE("gpu: the cached sampler on a GPU model equals the naive GPU sampler" * doctest::skip(!gpu_ok())) {
  ModelConfig cfg = gpu_model_config(3);
  cfg.size = 8;
  Model<float> m(cfg, Device::Cuda);
  m.init(7);
  const auto x = gpu_images(2, ModelConfig{cfg}, 4);  // only the first 2*2*2*3 bytes are used
  SampleOptions o;
  o.seed = 5;
  const auto cached = sample_images(m, x.data(), 2, o);
  o.cached = false;
  const auto naive = sample_images(m, x.data(), 2, o);
  CHECK(cached == naive);
}
