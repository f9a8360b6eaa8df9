// GPU suite: every prsr::cuda kernel against prsr::ref::<float> (engine/ref/kernels.h), forward
// and backward, on seeded uniform(-1, 1) inputs. Gradient buffers are pre-filled with random
// values (never zeros) so that accumulation (+=) is checked, and forward outputs are pre-filled
// so that overwriting is checked. Tolerances are per op: float32 sums of `terms` products.
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
#include "model/trainer.h"
#include "model/sampler.h"

namespace {

using prsr::ConvGeom;
using prsr::DeconvGeom;
namespace cuda = prsr::cuda;
namespace ref = prsr::ref;

// Asked once, at static-initialisation time (the skip decorators below call it while the cases
// register), so the reason line is printed before doctest's own output.
bool gpu_ok() {
  static const bool ok = [] {
    const bool a = cuda::available();
    if (!a) {
      std::printf("skipped: no CUDA device (%s)\n", cuda::unavailable_reason());
      std::fflush(stdout);
    }
    return a;
  }();
  return ok;
}
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

// A device buffer: uploads a host vector, downloads on get(). Freed on scope exit.
template <class T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(const std::vector<T>& h) : n(h.size()) {
    p = static_cast<T*>(cuda::malloc_device(n * sizeof(T)));
    cuda::copy_to_device(p, h.data(), n * sizeof(T));
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  ~Dev() {
    try {
      cuda::free_device(p);
    } catch (...) {
    }
  }
  std::vector<T> get() const {
    std::vector<T> h(n);
    cuda::copy_to_host(h.data(), p, n * sizeof(T));
    return h;
  }
};
using DevF = Dev<float>;

// Element-wise |got - want| <= atol + rtol * |want|; reports the worst element.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double rtol,
                  double atol, const char* what) {
  REQUIRE(got.size() == want.size());
  size_t bad = 0, worst = 0;
  double worst_excess = -1e300, max_diff = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(double(got[i]) - double(want[i]));
    const double tol = atol + rtol * std::fabs(double(want[i]));
    const bool ok = d <= tol;  // false for NaN
    if (!ok) ++bad;
    const double excess = ok ? d - tol : 1e300;
    if (excess > worst_excess) worst_excess = excess, worst = i;
    if (d > max_diff || d != d) max_diff = d;
  }
  INFO(what << ": " << bad << " of " << got.size() << " elements out of tolerance (rtol " << rtol
            << ", atol " << atol << "); max |diff| " << max_diff << "; worst at " << worst
            << ": got " << got[worst] << ", want " << want[worst]);
  CHECK(bad == 0);
}

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

// ---------------------------------------------------------------- convolution helpers

// Forward (with and without bias) and backward (all gradients, dx alone, dw + db alone).
void check_conv(const ConvGeom& g, uint32_t seed) {
  CAPTURE(g.n); CAPTURE(g.ci); CAPTURE(g.h); CAPTURE(g.w); CAPTURE(g.co); CAPTURE(g.kh);
  CAPTURE(g.kw); CAPTURE(g.pad_t); CAPTURE(g.pad_b); CAPTURE(g.pad_l); CAPTURE(g.pad_r);
  const size_t nx = size_t(g.n) * g.ci * g.h * g.w, nw = size_t(g.co) * g.ci * g.kh * g.kw;
  const size_t ny = size_t(g.n) * g.co * g.ho() * g.wo();
  const auto x = random_vec(nx, seed), w = random_vec(nw, seed + 1), b = random_vec(g.co, seed + 2);
  const auto dy = random_vec(ny, seed + 3), y0 = random_vec(ny, seed + 4);
  const auto dx0 = random_vec(nx, seed + 5), dw0 = random_vec(nw, seed + 6);
  const auto db0 = random_vec(g.co, seed + 7);
  const double k_terms = double(g.ci) * g.kh * g.kw;
  const double px_terms = double(g.n) * g.ho() * g.wo();

  DevF dx_(x), dw_(w), db_(b), ddy(dy);
  for (const bool with_bias : {true, false}) {
    std::vector<float> yr(ny);
    ref::conv2d_forward(yr.data(), x.data(), w.data(), with_bias ? b.data() : nullptr, g);
    DevF y(y0);
    cuda::conv2d_forward(y.p, dx_.p, dw_.p, with_bias ? db_.p : nullptr, g);
    expect_close(y.get(), yr, 1e-4, sum_atol(k_terms), with_bias ? "conv y (bias)" : "conv y");
  }
  {  // all gradients
    auto dxr = dx0, dwr = dw0, dbr = db0;
    ref::conv2d_backward(dxr.data(), dwr.data(), dbr.data(), dy.data(), x.data(), w.data(), g);
    DevF dx(dx0), dw(dw0), db(db0);
    cuda::conv2d_backward(dx.p, dw.p, db.p, ddy.p, dx_.p, dw_.p, g);
    expect_close(dx.get(), dxr, 1e-4, sum_atol(double(g.co) * g.kh * g.kw), "conv dx");
    expect_close(dw.get(), dwr, 1e-4, sum_atol(px_terms), "conv dw");
    expect_close(db.get(), dbr, 1e-4, sum_atol(px_terms), "conv db");
  }
  {  // dx only
    auto dxr = dx0;
    ref::conv2d_backward(dxr.data(), (float*)nullptr, (float*)nullptr, dy.data(), x.data(),
                         w.data(), g);
    DevF dx(dx0);
    cuda::conv2d_backward(dx.p, nullptr, nullptr, ddy.p, dx_.p, dw_.p, g);
    expect_close(dx.get(), dxr, 1e-4, sum_atol(double(g.co) * g.kh * g.kw), "conv dx alone");
  }
  {  // dw and db only
    auto dwr = dw0, dbr = db0;
    ref::conv2d_backward((float*)nullptr, dwr.data(), dbr.data(), dy.data(), x.data(), w.data(), g);
    DevF dw(dw0), db(db0);
    cuda::conv2d_backward(nullptr, dw.p, db.p, ddy.p, dx_.p, dw_.p, g);
    expect_close(dw.get(), dwr, 1e-4, sum_atol(px_terms), "conv dw alone");
    expect_close(db.get(), dbr, 1e-4, sum_atol(px_terms), "conv db alone");
  }
}

void check_deconv(const DeconvGeom& g, uint32_t seed) {
  CAPTURE(g.n); CAPTURE(g.ci); CAPTURE(g.h); CAPTURE(g.w); CAPTURE(g.co); CAPTURE(g.k);
  CAPTURE(g.stride); CAPTURE(g.pad); CAPTURE(g.out_pad);
  const size_t nx = size_t(g.n) * g.ci * g.h * g.w, nw = size_t(g.co) * g.ci * g.k * g.k;
  const size_t ny = size_t(g.n) * g.co * g.ho() * g.wo();
  const auto x = random_vec(nx, seed), w = random_vec(nw, seed + 1), b = random_vec(g.co, seed + 2);
  const auto dy = random_vec(ny, seed + 3), y0 = random_vec(ny, seed + 4);
  const auto dx0 = random_vec(nx, seed + 5), dw0 = random_vec(nw, seed + 6);
  const auto db0 = random_vec(g.co, seed + 7);
  const double in_terms = double(g.ci) * g.k * g.k;   // per output: at most ci * k * k
  const double dx_terms = double(g.co) * g.k * g.k;
  const double px_terms = double(g.n) * g.ho() * g.wo();

  DevF dx_(x), dw_(w), db_(b), ddy(dy);
  for (const bool with_bias : {true, false}) {
    std::vector<float> yr(ny);
    ref::deconv2d_forward(yr.data(), x.data(), w.data(), with_bias ? b.data() : nullptr, g);
    DevF y(y0);
    cuda::deconv2d_forward(y.p, dx_.p, dw_.p, with_bias ? db_.p : nullptr, g);
    expect_close(y.get(), yr, 1e-4, sum_atol(in_terms), with_bias ? "deconv y (bias)" : "deconv y");
  }
  {
    auto dxr = dx0, dwr = dw0, dbr = db0;
    ref::deconv2d_backward(dxr.data(), dwr.data(), dbr.data(), dy.data(), x.data(), w.data(), g);
    DevF dx(dx0), dw(dw0), db(db0);
    cuda::deconv2d_backward(dx.p, dw.p, db.p, ddy.p, dx_.p, dw_.p, g);
    expect_close(dx.get(), dxr, 1e-4, sum_atol(dx_terms), "deconv dx");
    expect_close(dw.get(), dwr, 1e-4, sum_atol(double(g.n) * g.h * g.w), "deconv dw");
    expect_close(db.get(), dbr, 1e-4, sum_atol(px_terms), "deconv db");
  }
  {
    auto dxr = dx0;
    ref::deconv2d_backward(dxr.data(), (float*)nullptr, (float*)nullptr, dy.data(), x.data(),
                           w.data(), g);
    DevF dx(dx0);
    cuda::deconv2d_backward(dx.p, nullptr, nullptr, ddy.p, dx_.p, dw_.p, g);
    expect_close(dx.get(), dxr, 1e-4, sum_atol(dx_terms), "deconv dx alone");
  }
  {
    auto dwr = dw0, dbr = db0;
    ref::deconv2d_backward((float*)nullptr, dwr.data(), dbr.data(), dy.data(), x.data(), w.data(),
                           g);
    DevF dw(dw0), db(db0);
    cuda::deconv2d_backward(nullptr, dw.p, db.p, ddy.p, dx_.p, dw_.p, g);
    expect_close(dw.get(), dwr, 1e-4, sum_atol(double(g.n) * g.h * g.w), "deconv dw alone");
    expect_close(db.get(), dbr, 1e-4, sum_atol(px_terms), "deconv db alone");
  }
}

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

// ================================================================ convolution

TEST_CASE("gpu: conv2d forward and backward, model kernel shapes" * doctest::skip(!gpu_ok())) {
  // {n, ci, h, w, co, kh, kw, pad_t, pad_b, pad_l, pad_r}
  const ConvGeom geoms[] = {
      {2, 3, 7, 5, 4, 3, 3, 1, 1, 1, 1},    // 3x3 pad 1
      {3, 5, 6, 7, 6, 1, 1, 0, 0, 0, 0},    // 1x1 (direct GEMM, no im2col)
      {2, 4, 9, 8, 5, 4, 7, 3, 0, 3, 3},    // vertical stack, first layer (4x7, t3 b0 l3 r3)
      {2, 3, 8, 9, 4, 3, 5, 2, 0, 2, 2},    // vertical stack (3x5, t2 b0 l2 r2)
      {2, 5, 5, 7, 3, 1, 4, 0, 0, 3, 0},    // horizontal stack, first layer (1x4, l3)
      {1, 4, 6, 5, 6, 1, 3, 0, 0, 2, 0},    // horizontal stack (1x3, l2)
      {3, 1, 1, 1, 2, 1, 1, 0, 0, 0, 0},    // 1x1 on one pixel (the cached sampler)
      {2, 3, 5, 5, 2, 1, 1, 1, 0, 0, 1},    // 1x1 with padding (not direct)
      {1, 2, 4, 3, 3, 3, 3, 0, 0, 0, 0},    // valid conv, no padding
      {2, 32, 32, 32, 64, 3, 3, 1, 1, 1, 1},  // conditioning-net size
      {2, 32, 32, 32, 64, 1, 1, 0, 0, 0, 0},  // 1x1 head size
  };
  uint32_t seed = 100;
  for (const auto& g : geoms) {
    check_conv(g, seed);
    seed += 10;
  }
}

TEST_CASE("gpu: conv2d over several column chunks" * doctest::skip(!gpu_ok())) {
  // K*P = 64*4*7 * 32*32 = 1.8M floats per image: 36 images per chunk, so 37 images take two.
  check_conv(ConvGeom{37, 64, 32, 32, 2, 4, 7, 3, 0, 3, 3}, 900);
}

TEST_CASE("gpu: deconv2d forward and backward" * doctest::skip(!gpu_ok())) {
  // {n, ci, h, w, co, k, stride, pad, out_pad}
  const DeconvGeom geoms[] = {
      {2, 3, 4, 5, 4, 3, 2, 1, 1},    // the model's upsampling: 3x3, stride 2, pad 1, out_pad 1
      {1, 5, 3, 3, 2, 3, 2, 1, 1},
      {3, 4, 7, 6, 3, 3, 2, 1, 1},
      {2, 32, 8, 8, 32, 3, 2, 1, 1},  // 8 -> 16 at the model's width
      {2, 32, 16, 16, 32, 3, 2, 1, 1},  // 16 -> 32
      {2, 3, 5, 4, 2, 4, 2, 1, 0},    // k 4, stride 2
      {2, 2, 3, 3, 3, 3, 1, 0, 0},    // stride 1 (full correlation)
      {1, 2, 3, 4, 2, 2, 3, 0, 1},    // stride > k: output pixels nobody writes (bias only)
  };
  uint32_t seed = 300;
  for (const auto& g : geoms) {
    check_deconv(g, seed);
    seed += 10;
  }
}

TEST_CASE("gpu: deconv2d over several column chunks" * doctest::skip(!gpu_ok())) {
  // M*P = 64*9 * 64*64 = 2.4M floats per image: 28 images per chunk, so 29 images take two.
  check_deconv(DeconvGeom{29, 1, 64, 64, 64, 3, 2, 1, 1}, 950);
}

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
  expect_close(y_tf32, yr, 1e-2, 2e-3 * 288, "conv y (TF32)");
  cuda::conv2d_forward(y.p, dx.p, dw.p, nullptr, g);
  expect_close(y.get(), yr, 1e-4, sum_atol(288), "conv y (back to float32)");
}

// ================================================================ element-wise

TEST_CASE("gpu: element-wise ops forward and backward" * doctest::skip(!gpu_ok())) {
  for (const size_t n : {size_t(1), size_t(1000), size_t(65537)}) {
    CAPTURE(n);
    const auto a = random_vec(n, 21), m = random_vec(n, 22), dy = random_vec(n, 23);
    const auto out0 = random_vec(n, 24), acc0 = random_vec(n, 25);
    DevF da_(a), dm(m), ddy(dy);
    const double r = 1e-6, at = 1e-6;
    {
      auto want = out0;
      ref::fill(want.data(), 0.75f, n);
      DevF y(out0);
      cuda::fill(y.p, 0.75f, n);
      expect_close(y.get(), want, 0, 0, "fill");
    }
    {
      auto want = acc0;
      ref::axpy(want.data(), -0.3f, a.data(), n);
      DevF y(acc0);
      cuda::axpy(y.p, -0.3f, da_.p, n);
      expect_close(y.get(), want, r, at, "axpy");
    }
    {
      std::vector<float> want(n);
      ref::add_forward(want.data(), a.data(), m.data(), n);
      DevF y(out0);
      cuda::add_forward(y.p, da_.p, dm.p, n);
      expect_close(y.get(), want, 0, 0, "add");
    }
    {
      std::vector<float> want(n);
      ref::mul_forward(want.data(), a.data(), m.data(), n);
      DevF y(out0);
      cuda::mul_forward(y.p, da_.p, dm.p, n);
      expect_close(y.get(), want, 0, 0, "mul");
      auto gw = acc0;
      ref::mul_backward(gw.data(), dy.data(), m.data(), n);
      DevF g(acc0);
      cuda::mul_backward(g.p, ddy.p, dm.p, n);
      expect_close(g.get(), gw, r, at, "mul backward");
    }
    // Activations: forward from a, backward from the reference's own output.
    struct Act {
      const char* name;
      void (*ref_f)(float*, const float*, size_t);
      void (*ref_b)(float*, const float*, const float*, size_t, unsigned);
      void (*cu_f)(float*, const float*, size_t);
      void (*cu_b)(float*, const float*, const float*, size_t, unsigned);
    };
    const Act acts[] = {
        {"relu", ref::relu_forward<float>, ref::relu_backward<float>, cuda::relu_forward,
         cuda::relu_backward},
        {"tanh", ref::tanh_forward<float>, ref::tanh_backward<float>, cuda::tanh_forward,
         cuda::tanh_backward},
        {"sigmoid", ref::sigmoid_forward<float>, ref::sigmoid_backward<float>,
         cuda::sigmoid_forward, cuda::sigmoid_backward},
    };
    for (const auto& act : acts) {
      CAPTURE(act.name);
      std::vector<float> yr(n);
      act.ref_f(yr.data(), a.data(), n);
      DevF y(out0);
      act.cu_f(y.p, da_.p, n);
      expect_close(y.get(), yr, 1e-6, 1e-6, "activation forward");
      auto gw = acc0;
      act.ref_b(gw.data(), dy.data(), yr.data(), n, 0u);
      DevF yref(yr), g(acc0);
      act.cu_b(g.p, ddy.p, yref.p, n, 0u);
      expect_close(g.get(), gw, 1e-6, 1e-6, "activation backward");
      // a fresh gradient (backend.h): NaN garbage that must be overwritten
      std::vector<float> gf(n, 0.0f);
      act.ref_b(gf.data(), dy.data(), yr.data(), n, 0u);
      DevF gfresh(std::vector<float>(n, std::nanf("")));
      act.cu_b(gfresh.p, ddy.p, yref.p, n, 1u);
      expect_close(gfresh.get(), gf, 1e-6, 1e-6, "activation backward [fresh]");
    }
  }
}

TEST_CASE("gpu: gate forward and backward" * doctest::skip(!gpu_ok())) {
  const int shapes[][3] = {{1, 1, 1}, {2, 3, 7}, {3, 32, 64}, {2, 5, 1023}};
  uint32_t seed = 40;
  for (const auto& s : shapes) {
    const int n = s[0], c = s[1], hw = s[2];
    CAPTURE(n); CAPTURE(c); CAPTURE(hw);
    const size_t nz = size_t(n) * 2 * c * hw, ny = size_t(n) * c * hw;
    const auto z = random_vec(nz, seed), dy = random_vec(ny, seed + 1);
    const auto y0 = random_vec(ny, seed + 2), dz0 = random_vec(nz, seed + 3);
    std::vector<float> yr(ny);
    ref::gate_forward(yr.data(), z.data(), n, c, hw);
    auto dzr = dz0;
    ref::gate_backward(dzr.data(), dy.data(), z.data(), n, c, hw);
    DevF dz_(z), ddy(dy), y(y0), dz(dz0);
    cuda::gate_forward(y.p, dz_.p, n, c, hw);
    cuda::gate_backward(dz.p, ddy.p, dz_.p, n, c, hw);
    expect_close(y.get(), yr, 1e-5, 1e-6, "gate y");
    expect_close(dz.get(), dzr, 1e-5, 1e-6, "gate dz");
    seed += 10;
  }
}

TEST_CASE("gpu: down_shift forward and backward" * doctest::skip(!gpu_ok())) {
  const int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {64, 32, 32}, {2, 1, 9}};
  uint32_t seed = 60;
  for (const auto& s : shapes) {
    const int planes = s[0], h = s[1], w = s[2];
    CAPTURE(planes); CAPTURE(h); CAPTURE(w);
    const size_t nt = size_t(planes) * h * w;
    const auto x = random_vec(nt, seed), dy = random_vec(nt, seed + 1);
    const auto y0 = random_vec(nt, seed + 2), dx0 = random_vec(nt, seed + 3);
    std::vector<float> yr(nt);
    ref::down_shift_forward(yr.data(), x.data(), planes, h, w);
    auto dxr = dx0;
    ref::down_shift_backward(dxr.data(), dy.data(), planes, h, w);
    DevF dx_(x), ddy(dy), y(y0), dx(dx0);
    cuda::down_shift_forward(y.p, dx_.p, planes, h, w);
    cuda::down_shift_backward(dx.p, ddy.p, planes, h, w);
    expect_close(y.get(), yr, 0, 0, "down_shift y");
    expect_close(dx.get(), dxr, 1e-6, 1e-6, "down_shift dx");
    seed += 10;
  }
}

// ================================================================ batch norm

TEST_CASE("gpu: batchnorm train / eval forward and backward" * doctest::skip(!gpu_ok())) {
  const int shapes[][3] = {{2, 3, 7}, {4, 5, 64}, {1, 2, 1}, {3, 32, 1024}, {32, 4, 64}};
  uint32_t seed = 80;
  for (const auto& s : shapes) {
    const int n = s[0], c = s[1], hw = s[2];
    CAPTURE(n); CAPTURE(c); CAPTURE(hw);
    const size_t nt = size_t(n) * c * hw;
    auto x = random_vec(nt, seed);
    for (size_t i = 0; i < nt; ++i) x[i] = 0.5f + 2.0f * x[i];  // non-zero mean, spread 2
    const auto gamma = random_vec(c, seed + 1), beta = random_vec(c, seed + 2);
    const auto dy = random_vec(nt, seed + 3), y0 = random_vec(nt, seed + 4);
    auto rvar0 = random_vec(c, seed + 5);
    for (auto& v : rvar0) v = 0.5f + std::fabs(v);  // a variance: positive
    const auto rmean0 = random_vec(c, seed + 6), junk = random_vec(c, seed + 7);
    const auto dx0 = random_vec(nt, seed + 8), dg0 = random_vec(c, seed + 9);
    const auto db0 = random_vec(c, seed + 10);
    const float momentum = 0.1f, eps = 1e-5f;
    const double terms = double(n) * hw;
    DevF dx_(x), dgamma_(gamma), dbeta_(beta), ddy(dy);

    // training forward
    std::vector<float> yr(nt), meanr = junk, invr = junk;
    auto rmr = rmean0, rvr = rvar0;
    ref::batchnorm_forward_train(yr.data(), meanr.data(), invr.data(), rmr.data(), rvr.data(),
                                 x.data(), gamma.data(), beta.data(), n, c, hw, momentum, eps);
    DevF y(y0), mean(junk), inv(junk), rm(rmean0), rv(rvar0);
    cuda::batchnorm_forward_train(y.p, mean.p, inv.p, rm.p, rv.p, dx_.p, dgamma_.p, dbeta_.p, n,
                                  c, hw, momentum, eps);
    expect_close(mean.get(), meanr, 1e-5, 1e-6, "bn mean");
    expect_close(inv.get(), invr, 1e-5, 1e-6, "bn invstd");
    expect_close(rm.get(), rmr, 1e-5, 1e-6, "bn running_mean");
    expect_close(rv.get(), rvr, 1e-5, 1e-6, "bn running_var");
    expect_close(y.get(), yr, 1e-4, 1e-5, "bn train y");

    // training backward (from the reference's saved statistics)
    for (const bool training : {true, false}) {
      CAPTURE(training);
      auto dxr = dx0, dgr = dg0, dbr = db0;
      ref::batchnorm_backward(dxr.data(), dgr.data(), dbr.data(), dy.data(), x.data(),
                              gamma.data(), meanr.data(), invr.data(), n, c, hw, training);
      DevF dmean(meanr), dinv(invr), dx(dx0), dg(dg0), db(db0);
      cuda::batchnorm_backward(dx.p, dg.p, db.p, ddy.p, dx_.p, dgamma_.p, dmean.p, dinv.p, n, c,
                               hw, training);
      expect_close(dx.get(), dxr, 1e-4, 1e-5, "bn dx");
      expect_close(dg.get(), dgr, 1e-4, sum_atol(terms), "bn dgamma");
      expect_close(db.get(), dbr, 1e-4, sum_atol(terms), "bn dbeta");
      // null gradients are skipped
      auto dgr2 = dg0;
      ref::batchnorm_backward((float*)nullptr, dgr2.data(), (float*)nullptr, dy.data(), x.data(),
                              gamma.data(), meanr.data(), invr.data(), n, c, hw, training);
      DevF dg2(dg0);
      cuda::batchnorm_backward(nullptr, dg2.p, nullptr, ddy.p, dx_.p, dgamma_.p, dmean.p, dinv.p,
                               n, c, hw, training);
      expect_close(dg2.get(), dgr2, 1e-4, sum_atol(terms), "bn dgamma alone");
    }

    // evaluation forward
    std::vector<float> yer(nt), mer = junk, ier = junk;
    ref::batchnorm_forward_eval(yer.data(), mer.data(), ier.data(), rmean0.data(), rvar0.data(),
                                x.data(), gamma.data(), beta.data(), n, c, hw, eps);
    DevF ye(y0), me(junk), ie(junk), rm0(rmean0), rv0(rvar0);
    cuda::batchnorm_forward_eval(ye.p, me.p, ie.p, rm0.p, rv0.p, dx_.p, dgamma_.p, dbeta_.p, n, c,
                                 hw, eps);
    expect_close(me.get(), mer, 0, 0, "bn eval mean");
    expect_close(ie.get(), ier, 1e-6, 1e-7, "bn eval invstd");
    expect_close(ye.get(), yer, 1e-5, 1e-5, "bn eval y");
    seed += 20;
  }
}

// ================================================================ losses

TEST_CASE("gpu: softmax cross-entropy forward and backward" * doctest::skip(!gpu_ok())) {
  const int shapes[][3] = {{1, 1, 1}, {2, 1, 7}, {2, 3, 7}, {3, 3, 64}, {2, 3, 1024}};
  uint32_t seed = 500;
  for (const auto& s : shapes) {
    const int n = s[0], colors = s[1], hw = s[2];
    const size_t nl = size_t(n) * colors * prsr::kLevels * hw, nt = size_t(n) * colors * hw;
    auto a = random_vec(nl, seed), b = random_vec(nl, seed + 1);
    for (auto& v : a) v *= 4.0f;  // peakier softmax than uniform(-1, 1)
    const auto target = random_targets(nt, seed + 2);
    const auto da0 = random_vec(nl, seed + 3), db0 = random_vec(nl, seed + 4);
    const std::vector<float> dloss = {0.7f};
    DevF a_(a), b_(b), dl(dloss);
    Dev<uint8_t> t_(target);
    for (const bool with_b : {false, true}) {
      CAPTURE(n); CAPTURE(colors); CAPTURE(hw); CAPTURE(with_b);
      const float* bh = with_b ? b.data() : nullptr;
      const float* bd = with_b ? b_.p : nullptr;
      float lr = 0;
      ref::softmax_ce_forward(&lr, a.data(), bh, target.data(), n, colors, hw);
      DevF loss(std::vector<float>{123.0f});
      cuda::softmax_ce_forward(loss.p, a_.p, bd, t_.p, n, colors, hw);
      expect_close(loss.get(), {lr}, 1e-5, 1e-6, "softmax_ce loss");

      // both gradients, then each alone
      auto dar = da0, dbr = db0;
      ref::softmax_ce_backward(dar.data(), dbr.data(), dloss.data(), a.data(), bh, target.data(),
                               n, colors, hw);
      DevF da(da0), db(db0);
      cuda::softmax_ce_backward(da.p, db.p, dl.p, a_.p, bd, t_.p, n, colors, hw);
      expect_close(da.get(), dar, 1e-5, 1e-7, "softmax_ce da");
      expect_close(db.get(), dbr, 1e-5, 1e-7, "softmax_ce db");
      DevF da2(da0), db2(db0);
      cuda::softmax_ce_backward(da2.p, nullptr, dl.p, a_.p, bd, t_.p, n, colors, hw);
      cuda::softmax_ce_backward(nullptr, db2.p, dl.p, a_.p, bd, t_.p, n, colors, hw);
      expect_close(da2.get(), dar, 1e-5, 1e-7, "softmax_ce da alone");
      expect_close(db2.get(), dbr, 1e-5, 1e-7, "softmax_ce db alone");
    }
    seed += 10;
  }
}

TEST_CASE("gpu: mse and mean forward and backward" * doctest::skip(!gpu_ok())) {
  for (const size_t n : {size_t(1), size_t(1000), size_t(300001)}) {
    CAPTURE(n);
    const auto a = random_vec(n, 31), t = random_vec(n, 32), acc0 = random_vec(n, 33);
    const std::vector<float> dl = {-1.3f};
    DevF a_(a), t_(t), dl_(dl);
    float mr = 0, mean_r = 0;
    ref::mse_forward(&mr, a.data(), t.data(), n);
    ref::mean_forward(&mean_r, a.data(), n);
    DevF out(std::vector<float>{99.0f}), out2(std::vector<float>{99.0f});
    cuda::mse_forward(out.p, a_.p, t_.p, n);
    cuda::mean_forward(out2.p, a_.p, n);
    expect_close(out.get(), {mr}, 1e-5, 1e-7, "mse");
    expect_close(out2.get(), {mean_r}, 1e-5, 1e-7, "mean");
    auto gr = acc0, gr2 = acc0;
    ref::mse_backward(gr.data(), dl.data(), a.data(), t.data(), n);
    ref::mean_backward(gr2.data(), dl.data(), n);
    DevF g(acc0), g2(acc0);
    cuda::mse_backward(g.p, dl_.p, a_.p, t_.p, n);
    cuda::mean_backward(g2.p, dl_.p, n);
    expect_close(g.get(), gr, 1e-6, 1e-7, "mse backward");
    expect_close(g2.get(), gr2, 1e-6, 1e-7, "mean backward");
  }
}

// ================================================================ optimisers

TEST_CASE("gpu: rmsprop and adam steps" * doctest::skip(!gpu_ok())) {
  const size_t n = 10007;
  const auto w0 = random_vec(n, 71), g = random_vec(n, 72), m0 = random_vec(n, 73);
  auto ms0 = random_vec(n, 74);
  for (auto& v : ms0) v = std::fabs(v) + 0.1f;  // a mean square: positive
  DevF g_(g);
  {
    auto w = w0, ms = ms0, mom = m0;
    DevF dw(w0), dms(ms0), dmom(m0);
    for (int step = 0; step < 3; ++step) {
      ref::rmsprop_step(w.data(), ms.data(), mom.data(), g.data(), n, 4e-4f, 0.95f, 0.9f, 1e-8f);
      cuda::rmsprop_step(dw.p, dms.p, dmom.p, g_.p, n, 4e-4f, 0.95f, 0.9f, 1e-8f);
    }
    expect_close(dw.get(), w, 1e-6, 1e-7, "rmsprop w");
    expect_close(dms.get(), ms, 1e-6, 1e-7, "rmsprop ms");
    expect_close(dmom.get(), mom, 1e-5, 1e-8, "rmsprop mom");
  }
  for (const long t : {1L, 7L}) {
    CAPTURE(t);
    auto w = w0, m = m0, v = ms0;
    DevF dw(w0), dm(m0), dv(ms0);
    ref::adam_step(w.data(), m.data(), v.data(), g.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f, t);
    cuda::adam_step(dw.p, dm.p, dv.p, g_.p, n, 1e-3f, 0.9f, 0.999f, 1e-8f, t);
    expect_close(dw.get(), w, 1e-6, 1e-7, "adam w");
    expect_close(dm.get(), m, 1e-6, 1e-7, "adam m");
    expect_close(dv.get(), v, 1e-6, 1e-7, "adam v");
  }
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
  cuda::batchnorm_forward_train(y.p, mean.p, inv.p, rm.p, rv.p, x.p, gm.p, bt.p, n, c, 1024, 0.1f,
                                1e-5f);
  const auto m1 = mean.get(), i1 = inv.get();
  cuda::batchnorm_forward_train(y.p, mean.p, inv.p, rm.p, rv.p, x.p, gm.p, bt.p, n, c, 1024, 0.1f,
                                1e-5f);
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

void expect_close_vec(const std::vector<float>& a, const std::vector<float>& b, double rtol, double atol,
                      const char* what) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  size_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = std::fabs(double(a[i]) - b[i]);
    worst = std::max(worst, e);
    if (e > atol + rtol * std::fabs(double(b[i]))) ++bad;
  }
  INFO(what << ": max abs diff " << worst);
  CHECK(bad == 0);
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
    struct Out { std::vector<float> a, b, grad, params; double loss = 0; };
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
    expect_close_vec(og.a, od.a, 1e-4, 1e-5, "A logits");
    expect_close_vec(og.b, od.b, 1e-4, 1e-5, "B logits");
    CHECK(og.loss == doctest::Approx(od.loss).epsilon(1e-5));
    expect_close_vec(og.grad, od.grad, 1e-3, 2e-6, "parameter gradients");
    expect_close_vec(og.params, od.params, 1e-5, 1e-6, "parameters and running stats");
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
  expect_close_vec(mg.params.download(), mc.params.download(), 1e-3, 1e-5, "parameters after 3 steps");
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
