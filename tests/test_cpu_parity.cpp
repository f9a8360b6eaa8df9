// prsr::cpu against the reference (engine/ref/kernels.h), element by element.
//
// Every input is random (uniform, seeded), never zeros. Forward outputs are pre-filled with
// garbage to check that they are overwritten; gradient buffers are pre-filled with random values
// (the same for both backends) to check that backward accumulates (+=). Null gradient pointers
// are swept; every backward also runs with its gradients marked fresh (pre-filled with NaN: they
// must be overwritten). Reductions and batch-norm statistics are also compared with the reference run in
// double. Tolerances are per op, scaled by the reduction length. One line per comparison prints
// the max abs difference.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu/conv.h"
#include "engine/mask.h"
#include "engine/ref/kernels.h"

using namespace prsr;

namespace {

using Vec = std::vector<float>;
using DVec = std::vector<double>;

std::mt19937& rng() {
  static std::mt19937 g(20240611u);
  return g;
}

Vec rnd(size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  Vec v(n);
  for (auto& x : v) x = u(rng());
  return v;
}

std::vector<uint8_t> rnd_u8(size_t n) {
  std::uniform_int_distribution<int> u(0, 255);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = uint8_t(u(rng()));
  return v;
}

DVec to_d(const Vec& v) { return DVec(v.begin(), v.end()); }

// A fresh gradient buffer (backend.h): garbage the kernel must overwrite, never read. NaN, so
// that any element read or left unwritten fails the comparison.
Vec garbage(size_t n) { return Vec(n, std::nanf("")); }

// |got - want| <= atol + rtol * |want| for every element; prints the max abs difference.
template <class W>
void expect_close(const std::string& what, const float* got, const W* want, size_t n, double atol,
                  double rtol) {
  double max_abs = 0;
  size_t bad = 0, first_bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const double g = got[i], w = double(want[i]);
    const double d = std::fabs(g - w);
    if (!(d <= atol + rtol * std::fabs(w))) {  // also catches NaN
      if (bad++ == 0) first_bad = i;
    }
    if (d > max_abs || std::isnan(d)) max_abs = d;
  }
  std::printf("  %-58s n=%-8zu max|diff| = %.3g\n", what.c_str(), n, max_abs);
  if (bad) {
    INFO(what << ": " << bad << " of " << n << " elements differ, first at " << first_bad
              << ": got " << got[first_bad] << ", want " << double(want[first_bad]));
    CHECK(bad == 0);
  } else {
    CHECK(true);
  }
}
template <class W>
void expect_close(const std::string& what, const Vec& got, const std::vector<W>& want,
                  double atol, double rtol) {
  REQUIRE(got.size() == want.size());
  expect_close(what, got.data(), want.data(), got.size(), atol, rtol);
}

std::string str(const ConvGeom& g) {
  char b[160];
  std::snprintf(b, sizeof b, "n%d %d->%d %dx%d k%dx%d pad t%d b%d l%d r%d", g.n, g.ci, g.co, g.h,
                g.w, g.kh, g.kw, g.pad_t, g.pad_b, g.pad_l, g.pad_r);
  return b;
}
std::string str(const DeconvGeom& g) {
  char b[160];
  std::snprintf(b, sizeof b, "n%d %d->%d %dx%d k%d s%d p%d op%d", g.n, g.ci, g.co, g.h, g.w, g.k,
                g.stride, g.pad, g.out_pad);
  return b;
}

// Float error of a dot product of length k with entries of size ~1: ~ sqrt(k) * eps typically,
// k * eps at worst; allow the worst with margin.
double dot_tol(long k) { return 2e-6 * double(k) + 1e-5; }

// ---------------------------------------------------------------- convolution
// The backward of a convolution-like op on the CPU backend against the reference, from the
// caller's dy. First accumulating into random gradients: the reference once with every
// gradient (each is computed independently of the others), then the CPU backend with each mask
// of dx, dw, db present or null (every mask with all_masks, else dx+dw+db, dx+dw and dw; db only
// with a bias). Then fresh gradients (backend.h): NaN-filled, overwritten, equal to the
// reference's from zero. cpu(dx, dw, db, fresh) and ref(dx, dw, db) run the op.
struct GradTols { double dx, dw, db; };
template <class Cpu, class Ref>
void backward_parity(const std::string& op, const std::string& tag, size_t nx, size_t nw, size_t nb, bool bias,
                     bool all_masks, GradTols tol, Cpu cpu, Ref ref) {
  const Vec dx0 = rnd(nx), dw0 = rnd(nw), db0 = rnd(nb);
  Vec dx_r = dx0, dw_r = dw0, db_r = db0;
  ref(dx_r.data(), dw_r.data(), db_r.data());
  for (int mask = 1; mask < 8; ++mask) {
    if (!bias && (mask & 4)) continue;
    if (!all_masks && mask != 7 && mask != 3 && mask != 2) continue;
    const bool hx = mask & 1, hw = mask & 2, hb = mask & 4;
    Vec dx = dx0, dw = dw0, db = db0;
    cpu(hx ? dx.data() : nullptr, hw ? dw.data() : nullptr, hb ? db.data() : nullptr, 0u);
    const std::string m = " [" + std::string(hx ? "dx" : "--") + (hw ? "dw" : "--") + (hb ? "db" : "--") + "]";
    if (hx) expect_close(op + " dx " + tag + m, dx, dx_r, tol.dx, 1e-4);
    if (hw) expect_close(op + " dw " + tag + m, dw, dw_r, tol.dw, 1e-4);
    if (hb) expect_close(op + " db " + tag + m, db, db_r, tol.db, 1e-4);
  }
  Vec fx_r(nx, 0.0f), fw_r(nw, 0.0f), fb_r(nb, 0.0f);
  ref(fx_r.data(), fw_r.data(), fb_r.data());
  for (unsigned fresh : {1u, 7u}) {
    Vec dx = garbage(nx), dw = fresh & 2u ? garbage(nw) : Vec(nw, 0.0f), db = fresh & 4u ? garbage(nb) : Vec(nb, 0.0f);
    cpu(dx.data(), dw.data(), bias ? db.data() : nullptr, fresh);
    const std::string m = " [fresh " + std::to_string(fresh) + "]";
    expect_close(op + " dx " + tag + m, dx, fx_r, tol.dx, 1e-4);
    expect_close(op + " dw " + tag + m, dw, fw_r, tol.dw, 1e-4);
    if (bias) expect_close(op + " db " + tag + m, db, fb_r, tol.db, 1e-4);
  }
}

void conv_case(const ConvGeom& g, bool bias, bool all_masks) {
  const size_t nx = size_t(g.n) * g.ci * g.h * g.w, nw = size_t(g.co) * g.ci * g.kh * g.kw;
  const size_t ny = size_t(g.n) * g.co * g.ho() * g.wo();
  const Vec x = rnd(nx), w = rnd(nw), b = rnd(g.co), dy = rnd(ny);
  const std::string tag = str(g) + (bias ? " +b" : "");
  const long k_fwd = long(g.ci) * g.kh * g.kw, k_w = long(g.n) * g.ho() * g.wo();

  Vec y = rnd(ny, 5, 6), y_ref(ny);
  cpu::conv2d_forward(y.data(), x.data(), w.data(), bias ? b.data() : nullptr, g);
  ref::conv2d_forward<float>(y_ref.data(), x.data(), w.data(), bias ? b.data() : nullptr, g);
  expect_close("conv2d_forward " + tag, y, y_ref, dot_tol(k_fwd), 1e-4);

  backward_parity("conv2d_backward", tag, nx, nw, size_t(g.co), bias, all_masks,
                  {dot_tol(long(g.co) * g.kh * g.kw), dot_tol(k_w), dot_tol(k_w)},
                  [&](float* dx, float* dw, float* db, unsigned fresh) {
                    cpu::conv2d_backward(dx, dw, db, dy.data(), x.data(), w.data(), g, fresh);
                  },
                  [&](float* dx, float* dw, float* db) {
                    ref::conv2d_backward<float>(dx, dw, db, dy.data(), x.data(), w.data(), g);
                  });
}

void deconv_case(const DeconvGeom& g, bool bias, bool all_masks) {
  const size_t nx = size_t(g.n) * g.ci * g.h * g.w, nw = size_t(g.co) * g.ci * g.k * g.k;
  const size_t ny = size_t(g.n) * g.co * g.ho() * g.wo();
  const Vec x = rnd(nx), w = rnd(nw), b = rnd(g.co), dy = rnd(ny);
  const std::string tag = str(g) + (bias ? " +b" : "");
  const long k_fwd = long(g.ci) * g.k * g.k, k_w = long(g.n) * g.h * g.w;

  Vec y = rnd(ny, 5, 6), y_ref(ny);
  cpu::deconv2d_forward(y.data(), x.data(), w.data(), bias ? b.data() : nullptr, g);
  ref::deconv2d_forward<float>(y_ref.data(), x.data(), w.data(), bias ? b.data() : nullptr, g);
  expect_close("deconv2d_forward " + tag, y, y_ref, dot_tol(k_fwd), 1e-4);

  backward_parity("deconv2d_backward", tag, nx, nw, size_t(g.co), bias, all_masks,
                  {dot_tol(long(g.co) * g.k * g.k), dot_tol(k_w), dot_tol(long(g.n) * g.ho() * g.wo())},
                  [&](float* dx, float* dw, float* db, unsigned fresh) {
                    cpu::deconv2d_backward(dx, dw, db, dy.data(), x.data(), w.data(), g, fresh);
                  },
                  [&](float* dx, float* dw, float* db) {
                    ref::deconv2d_backward<float>(dx, dw, db, dy.data(), x.data(), w.data(), g);
                  });
}

}  // namespace

TEST_CASE("cpu parity: conv2d forward and backward, the model's kernel shapes") {
  // {n, ci, h, w, co, kh, kw, pad_t, pad_b, pad_l, pad_r}
  const ConvGeom geoms[] = {
      {2, 5, 9, 7, 4, 3, 3, 1, 1, 1, 1},    // conditioning 3x3 pad 1
      {1, 3, 9, 7, 6, 1, 1, 0, 0, 0, 0},    // 1x1
      {2, 3, 9, 7, 5, 4, 7, 3, 0, 3, 3},    // first vertical (7 -> 4x7)
      {2, 5, 9, 7, 6, 3, 5, 2, 0, 2, 2},    // vertical (5 -> 3x5)
      {2, 3, 9, 7, 5, 1, 4, 0, 0, 3, 0},    // first horizontal 1x4
      {1, 5, 9, 7, 10, 1, 3, 0, 0, 2, 0},   // horizontal 1x3
      {3, 1, 5, 6, 2, 3, 3, 1, 1, 1, 1},    // C = 1 input, n = 3
      {2, 16, 16, 16, 32, 3, 5, 2, 0, 2, 2},  // model-sized channels (32 -> 2c halved)
      {2, 32, 8, 8, 32, 3, 3, 1, 1, 1, 1},  // conditioning 32 -> 32 at 8x8
      {2, 32, 8, 8, 64, 1, 1, 0, 0, 0, 0},  // 1x1 link/res sized
      {1, 24, 5, 3, 300, 1, 1, 0, 0, 0, 0}, // 1x1 with >= 256 channels (head-like)
      {2, 300, 3, 5, 7, 1, 1, 0, 0, 0, 0},  // 1x1 with >= 256 input channels
  };
  // the default per-shape layout rule, then every geometry in both layouts explicitly
  using L = cpu::detail::ConvLayout;
  for (L layout : {L::Default, L::Plain, L::Any}) {
    cpu::detail::set_conv_layout(layout);
    std::printf("  -- conv layout: %s\n",
                layout == L::Default ? "default rule" : layout == L::Plain ? "plain" : "blocked");
    for (const auto& g : geoms) {
      conv_case(g, false, layout == L::Default);
      conv_case(g, true, layout == L::Default);
    }
  }
  cpu::detail::set_conv_layout(L::Default);
  // a second call with a cached geometry must give the same result (cache reuse)
  const ConvGeom g = geoms[3];
  const Vec x = rnd(size_t(g.n) * g.ci * g.h * g.w), w = rnd(size_t(g.co) * g.ci * g.kh * g.kw);
  const size_t ny = size_t(g.n) * g.co * g.ho() * g.wo();
  Vec y1(ny), y2(ny, 7.0f), y_ref(ny);
  cpu::conv2d_forward(y1.data(), x.data(), w.data(), nullptr, g);
  cpu::conv2d_forward(y2.data(), x.data(), w.data(), nullptr, g);
  ref::conv2d_forward<float>(y_ref.data(), x.data(), w.data(), nullptr, g);
  CHECK(y1 == y2);
  expect_close("conv2d_forward cached rerun " + str(g), y2, y_ref, dot_tol(g.ci * 15), 1e-4);
}

// A 1x1 conv whose weights carry a colour mask with contiguous groups (the prior head): with
// ConvGeom::colors set the CPU backend skips the masked blocks. Compared with the reference run
// densely on the same masked weights: y and dx everywhere, dw on the allowed entries; the masked
// entries of dw must be left as they were (the contract in backend.h).
TEST_CASE("cpu parity: 1x1 conv with colour blocks (masked prior head)") {
  struct Case { ConvGeom g; bool bias; };
  auto geom = [](int n, int ci, int h, int w, int co, int colors, bool strict) {
    ConvGeom g{n, ci, h, w, co, 1, 1, 0, 0, 0, 0};
    g.colors = colors;
    g.strict = strict;
    return g;
  };
  const Case cases[] = {
      {geom(6, 40, 3, 4, 300, 3, false), true},   // head1-like, n > 4: blocks of images
      {geom(5, 300, 2, 3, 96, 3, false), true},   // head2-like (ci >= 256: backward on GEMMs)
      {geom(2, 300, 2, 3, 96, 3, false), false},  // n < 4: one block, threaded GEMMs
      {geom(6, 258, 3, 2, 260, 3, true), true},   // mask A: the first colour reads nothing
      {geom(5, 20, 3, 2, 270, 3, true), false},   // mask A without bias: those rows are zero
      {geom(3, 24, 3, 3, 300, 1, false), true},   // one colour: dense
  };
  for (const Case& c : cases) {
    const ConvGeom& g = c.g;
    MaskSpec ms{c.g.strict ? MaskKind::A : MaskKind::B, g.colors, g.ci, g.co, 0, 0};
    const std::vector<float> mask = colour_mask<float>(g.co, g.ci, 1, 1, ms);
    const size_t nx = size_t(g.n) * g.ci * g.h * g.w, nw = size_t(g.co) * g.ci, ny = size_t(g.n) * g.co * g.h * g.w;
    Vec w = rnd(nw);
    for (size_t i = 0; i < nw; ++i) w[i] *= mask[i];
    const Vec x = rnd(nx), b = rnd(g.co), dy = rnd(ny);
    const float* bp = c.bias ? b.data() : nullptr;
    char tag[96];
    std::snprintf(tag, sizeof tag, "n%d %d->%d %dx%d colours %d%s", g.n, g.ci, g.co, g.h, g.w, g.colors,
                  g.strict ? " (A)" : " (B)");
    Vec y = rnd(ny, 5, 6), y_ref(ny);
    cpu::conv2d_forward(y.data(), x.data(), w.data(), bp, g);
    ref::conv2d_forward<float>(y_ref.data(), x.data(), w.data(), bp, g);
    expect_close(std::string("conv1x1 blocks forward ") + tag, y, y_ref, dot_tol(g.ci), 1e-4);

    const Vec dx0 = rnd(nx), dw0 = rnd(nw), db0 = rnd(g.co);
    Vec dx = dx0, dw = dw0, db = db0, dx_r = dx0, dw_r = dw0, db_r = db0;
    cpu::conv2d_backward(dx.data(), dw.data(), c.bias ? db.data() : nullptr, dy.data(), x.data(), w.data(), g);
    ref::conv2d_backward<float>(dx_r.data(), dw_r.data(), c.bias ? db_r.data() : nullptr, dy.data(),
                                x.data(), w.data(), g);
    expect_close(std::string("conv1x1 blocks backward dx ") + tag, dx, dx_r, dot_tol(g.co), 1e-4);
    {  // a fresh dx (mask A leaves input channels no block reads: they must come out zero)
      Vec fx = garbage(nx), fx_r(nx, 0.0f);
      cpu::conv2d_backward(fx.data(), nullptr, nullptr, dy.data(), x.data(), w.data(), g, 1u);
      ref::conv2d_backward<float>(fx_r.data(), nullptr, nullptr, dy.data(), x.data(), w.data(), g);
      expect_close(std::string("conv1x1 blocks backward dx [fresh] ") + tag, fx, fx_r, dot_tol(g.co), 1e-4);
    }
    if (c.bias) expect_close(std::string("conv1x1 blocks backward db ") + tag, db, db_r, dot_tol(long(g.n) * g.h * g.w), 1e-4);
    // allowed entries against the reference; masked ones untouched
    Vec want(nw);
    size_t masked = 0;
    for (size_t i = 0; i < nw; ++i) {
      want[i] = mask[i] != 0.0f ? dw_r[i] : dw0[i];
      masked += mask[i] == 0.0f;
    }
    if (g.colors == 3) CHECK(masked > nw / 4);  // the case does exercise skipped blocks
    expect_close(std::string("conv1x1 blocks backward dw ") + tag, dw, want, dot_tol(long(g.n) * g.h * g.w), 1e-4);
  }
}

TEST_CASE("cpu parity: deconv2d forward and backward") {
  // {n, ci, h, w, co, k, stride, pad, out_pad}
  const DeconvGeom geoms[] = {
      {2, 5, 4, 3, 4, 3, 2, 1, 1},    // the model's: 3x3 s2 p1 op1 (h -> 2h)
      {1, 3, 5, 5, 2, 3, 2, 1, 1},    // odd size
      {2, 32, 8, 8, 32, 3, 2, 1, 1},  // conditioning 8 -> 16
      {2, 4, 5, 4, 3, 4, 2, 1, 0},    // k4 s2 p1 (pad_r = pad)
      {1, 3, 6, 5, 4, 3, 1, 1, 0},    // stride 1
  };
  using L = cpu::detail::ConvLayout;
  for (L layout : {L::Default, L::Plain}) {  // default = blocked; plain = oneDNN's reference
    cpu::detail::set_conv_layout(layout);
    std::printf("  -- deconv layout: %s\n", layout == L::Default ? "default rule" : "plain");
    for (const auto& g : geoms) {
      deconv_case(g, false, layout == L::Default);
      deconv_case(g, true, layout == L::Default);
    }
  }
  cpu::detail::set_conv_layout(L::Default);
}

TEST_CASE("cpu parity: elementwise") {
  for (size_t n : {size_t(1), size_t(7), size_t(1001), size_t(100003)}) {
    const std::string sz = " n=" + std::to_string(n);
    const Vec a = rnd(n), m = rnd(n), dy = rnd(n), g0 = rnd(n);
    Vec y = rnd(n), yr = y;
    cpu::fill(y.data(), 0.37f, n);
    ref::fill<float>(yr.data(), 0.37f, n);
    expect_close("fill" + sz, y, yr, 0, 0);
    y = g0, yr = g0;
    cpu::axpy(y.data(), -1.3f, a.data(), n);
    ref::axpy<float>(yr.data(), -1.3f, a.data(), n);
    expect_close("axpy" + sz, y, yr, 1e-6, 1e-6);
    y = garbage(n), yr = garbage(n);
    cpu::axpy(y.data(), -1.3f, a.data(), n, 1u);
    ref::axpy<float>(yr.data(), -1.3f, a.data(), n, 1u);
    expect_close("axpy [fresh]" + sz, y, yr, 1e-6, 1e-6);
    y = rnd(n), yr = Vec(n);
    cpu::add_forward(y.data(), a.data(), m.data(), n);
    ref::add_forward<float>(yr.data(), a.data(), m.data(), n);
    expect_close("add_forward" + sz, y, yr, 0, 0);
    cpu::mul_forward(y.data(), a.data(), m.data(), n);
    ref::mul_forward<float>(yr.data(), a.data(), m.data(), n);
    expect_close("mul_forward" + sz, y, yr, 0, 0);
    y = g0, yr = g0;
    cpu::mul_backward(y.data(), dy.data(), m.data(), n);
    ref::mul_backward<float>(yr.data(), dy.data(), m.data(), n);
    expect_close("mul_backward" + sz, y, yr, 1e-7, 1e-6);
    y = garbage(n), yr = garbage(n);
    cpu::mul_backward(y.data(), dy.data(), m.data(), n, 1u);
    ref::mul_backward<float>(yr.data(), dy.data(), m.data(), n, 1u);
    expect_close("mul_backward [fresh]" + sz, y, yr, 1e-7, 1e-6);

    // activations on a wide range (saturation included), forward then backward from the output
    Vec x = rnd(n, -12.0f, 12.0f);
    if (n > 8) {
      x[0] = 0.0f, x[1] = -100.0f, x[2] = 100.0f, x[3] = 1e-6f, x[4] = -0.6249f, x[5] = 0.6251f;
      x[6] = -88.0f, x[7] = 89.5f;
    }
    struct Act {
      const char* name;
      void (*cf)(float*, const float*, size_t);
      void (*rf)(float*, const float*, size_t);
      void (*cb)(float*, const float*, const float*, size_t, unsigned);
      void (*rb)(float*, const float*, const float*, size_t, unsigned);
    };
    const Act acts[] = {
        {"relu", cpu::relu_forward, ref::relu_forward<float>, cpu::relu_backward,
         ref::relu_backward<float>},
        {"tanh", cpu::tanh_forward, ref::tanh_forward<float>, cpu::tanh_backward,
         ref::tanh_backward<float>},
        {"sigmoid", cpu::sigmoid_forward, ref::sigmoid_forward<float>, cpu::sigmoid_backward,
         ref::sigmoid_backward<float>},
    };
    for (const Act& f : acts) {
      y = rnd(n), yr = Vec(n);
      f.cf(y.data(), x.data(), n);
      f.rf(yr.data(), x.data(), n);
      expect_close(std::string(f.name) + "_forward" + sz, y, yr, 1e-7, 4e-7);
      Vec dx = g0, dxr = g0;
      f.cb(dx.data(), dy.data(), yr.data(), n, 0u);
      f.rb(dxr.data(), dy.data(), yr.data(), n, 0u);
      expect_close(std::string(f.name) + "_backward" + sz, dx, dxr, 1e-7, 1e-6);
      dx = garbage(n), dxr = garbage(n);
      f.cb(dx.data(), dy.data(), yr.data(), n, 1u);
      f.rb(dxr.data(), dy.data(), yr.data(), n, 1u);
      expect_close(std::string(f.name) + "_backward [fresh]" + sz, dx, dxr, 1e-7, 1e-6);
    }
  }
}

TEST_CASE("cpu parity: gate and down_shift") {
  struct S { int n, c, hw; };
  for (const S s : {S{1, 1, 1}, S{2, 5, 63}, S{3, 32, 1024}}) {
    const size_t nz = size_t(s.n) * 2 * s.c * s.hw, ny = size_t(s.n) * s.c * s.hw;
    const std::string sz = " n" + std::to_string(s.n) + " c" + std::to_string(s.c) + " hw" +
                           std::to_string(s.hw);
    const Vec z = rnd(nz, -4, 4), dy = rnd(ny), dz0 = rnd(nz);
    Vec y = rnd(ny), yr(ny);
    cpu::gate_forward(y.data(), z.data(), s.n, s.c, s.hw);
    ref::gate_forward<float>(yr.data(), z.data(), s.n, s.c, s.hw);
    expect_close("gate_forward" + sz, y, yr, 1e-7, 1e-6);
    Vec dz = dz0, dzr = dz0;
    cpu::gate_backward(dz.data(), dy.data(), z.data(), s.n, s.c, s.hw);
    ref::gate_backward<float>(dzr.data(), dy.data(), z.data(), s.n, s.c, s.hw);
    // 1 - t^2 near saturation amplifies one ulp of t: ~2.4e-7 absolute per unit dy
    expect_close("gate_backward" + sz, dz, dzr, 5e-7, 1e-6);
    dz = garbage(nz), dzr = garbage(nz);
    cpu::gate_backward(dz.data(), dy.data(), z.data(), s.n, s.c, s.hw, 1u);
    ref::gate_backward<float>(dzr.data(), dy.data(), z.data(), s.n, s.c, s.hw, 1u);
    expect_close("gate_backward [fresh]" + sz, dz, dzr, 5e-7, 1e-6);
  }
  struct D { int planes, h, w; };
  for (const D d : {D{1, 1, 1}, D{10, 9, 7}, D{96, 32, 32}}) {
    const size_t n = size_t(d.planes) * d.h * d.w;
    const std::string sz = " planes" + std::to_string(d.planes) + " " + std::to_string(d.h) +
                           "x" + std::to_string(d.w);
    const Vec x = rnd(n), dy = rnd(n), dx0 = rnd(n);
    Vec y = rnd(n), yr(n);
    cpu::down_shift_forward(y.data(), x.data(), d.planes, d.h, d.w);
    ref::down_shift_forward<float>(yr.data(), x.data(), d.planes, d.h, d.w);
    expect_close("down_shift_forward" + sz, y, yr, 0, 0);
    Vec dx = dx0, dxr = dx0;
    cpu::down_shift_backward(dx.data(), dy.data(), d.planes, d.h, d.w);
    ref::down_shift_backward<float>(dxr.data(), dy.data(), d.planes, d.h, d.w);
    expect_close("down_shift_backward" + sz, dx, dxr, 0, 0);
    dx = garbage(n), dxr = garbage(n);
    cpu::down_shift_backward(dx.data(), dy.data(), d.planes, d.h, d.w, 1u);
    ref::down_shift_backward<float>(dxr.data(), dy.data(), d.planes, d.h, d.w, 1u);
    expect_close("down_shift_backward [fresh]" + sz, dx, dxr, 0, 0);
  }
}

TEST_CASE("cpu parity: batch norm train, eval and backward") {
  struct S { int n, c, hw; };
  for (const S s : {S{1, 1, 1}, S{2, 5, 63}, S{1, 3, 7}, S{4, 32, 256}}) {
    const size_t nx = size_t(s.n) * s.c * s.hw, c = size_t(s.c);
    const std::string sz = " n" + std::to_string(s.n) + " c" + std::to_string(s.c) + " hw" +
                           std::to_string(s.hw);
    const double m = double(s.n) * s.hw;
    // an offset mean and a non-unit scale, as after a conv
    Vec x = rnd(nx, -1, 1);
    for (size_t i = 0; i < nx; ++i) x[i] = 0.3f + 2.0f * x[i];
    const Vec gamma = rnd(c, 0.5f, 1.5f), beta = rnd(c), rm0 = rnd(c), rv0 = rnd(c, 0.5f, 2.0f);
    const float momentum = 0.1f, eps = 1e-5f;

    // training forward: y, mean, invstd, running stats, vs ref<float> and ref<double>
    Vec y = rnd(nx), mean = rnd(c), invstd = rnd(c), rm = rm0, rv = rv0;
    cpu::batchnorm_forward_train(y.data(), mean.data(), invstd.data(), rm.data(), rv.data(),
                                 x.data(), gamma.data(), beta.data(), s.n, s.c, s.hw, momentum, eps);
    Vec yr(nx), meanr(c), invr(c), rmr = rm0, rvr = rv0;
    ref::batchnorm_forward_train<float>(yr.data(), meanr.data(), invr.data(), rmr.data(),
                                        rvr.data(), x.data(), gamma.data(), beta.data(), s.n, s.c,
                                        s.hw, momentum, eps);
    DVec yd(nx), meand(c), invd(c), rmd = to_d(rm0), rvd = to_d(rv0);
    const DVec xd = to_d(x), gd = to_d(gamma), bd = to_d(beta);
    ref::batchnorm_forward_train<double>(yd.data(), meand.data(), invd.data(), rmd.data(),
                                         rvd.data(), xd.data(), gd.data(), bd.data(), s.n, s.c,
                                         s.hw, momentum, eps);
    expect_close("bn_train y" + sz, y, yr, 2e-6, 1e-5);
    expect_close("bn_train mean" + sz, mean, meanr, 1e-7, 1e-6);
    expect_close("bn_train mean vs double" + sz, mean, meand, 1e-7, 1e-6);
    // invstd can be 1/sqrt(eps) ~ 316 when the variance is 0 (one element): relative
    expect_close("bn_train invstd vs double" + sz, invstd, invd, 1e-6, 1e-5);
    expect_close("bn_train invstd" + sz, invstd, invr, 1e-6, 1e-5);
    expect_close("bn_train running_mean vs double" + sz, rm, rmd, 1e-7, 1e-6);
    expect_close("bn_train running_var vs double" + sz, rv, rvd, 1e-7, 1e-6);
    expect_close("bn_train running_var" + sz, rv, rvr, 1e-7, 1e-6);

    // evaluation forward
    Vec ye = rnd(nx), me = rnd(c), ie = rnd(c), yer(nx), mer(c), ier(c);
    cpu::batchnorm_forward_eval(ye.data(), me.data(), ie.data(), rm0.data(), rv0.data(), x.data(),
                                gamma.data(), beta.data(), s.n, s.c, s.hw, eps);
    ref::batchnorm_forward_eval<float>(yer.data(), mer.data(), ier.data(), rm0.data(), rv0.data(),
                                       x.data(), gamma.data(), beta.data(), s.n, s.c, s.hw, eps);
    expect_close("bn_eval y" + sz, ye, yer, 1e-6, 1e-6);
    expect_close("bn_eval mean" + sz, me, mer, 0, 0);
    expect_close("bn_eval invstd" + sz, ie, ier, 0, 1e-6);

    // backward, training and evaluation, with every gradient mask
    const Vec dy = rnd(nx), dx0 = rnd(nx), dg0 = rnd(c), db0 = rnd(c);
    const DVec dyd = to_d(dy);
    for (bool training : {true, false}) {
      const Vec& mu = training ? meanr : mer;
      const Vec& is = training ? invr : ier;
      const DVec mud = to_d(mu), isd = to_d(is);
      for (int mask = 1; mask < 8; ++mask) {
        const bool hx = mask & 1, hg = mask & 2, hb = mask & 4;
        Vec dx = dx0, dg = dg0, db = db0, dxr = dx0, dgr = dg0, dbr = db0;
        DVec dxd = to_d(dx0), dgd = to_d(dg0), dbd = to_d(db0);
        cpu::batchnorm_backward(hx ? dx.data() : nullptr, hg ? dg.data() : nullptr,
                                hb ? db.data() : nullptr, dy.data(), x.data(), gamma.data(),
                                mu.data(), is.data(), s.n, s.c, s.hw, training);
        ref::batchnorm_backward<float>(hx ? dxr.data() : nullptr, hg ? dgr.data() : nullptr,
                                       hb ? dbr.data() : nullptr, dy.data(), x.data(),
                                       gamma.data(), mu.data(), is.data(), s.n, s.c, s.hw,
                                       training);
        ref::batchnorm_backward<double>(hx ? dxd.data() : nullptr, hg ? dgd.data() : nullptr,
                                        hb ? dbd.data() : nullptr, dyd.data(), xd.data(),
                                        gd.data(), mud.data(), isd.data(), s.n, s.c, s.hw,
                                        training);
        const std::string t = std::string(training ? " train" : " eval") + " mask" +
                              std::to_string(mask) + sz;
        // the reference sums in float: its error grows with m; ours sums in double
        const double red = 2e-6 * m + 1e-5;
        if (hx) expect_close("bn_backward dx" + t, dx, dxr, red * 4, 1e-4);
        if (hx) expect_close("bn_backward dx vs double" + t, dx, dxd, 1e-5, 1e-5);
        if (hg) expect_close("bn_backward dgamma" + t, dg, dgr, red, 1e-5);
        if (hg) expect_close("bn_backward dgamma vs double" + t, dg, dgd, 1e-6, 1e-6);
        if (hb) expect_close("bn_backward dbeta" + t, db, dbr, red, 1e-5);
        if (hb) expect_close("bn_backward dbeta vs double" + t, db, dbd, 1e-6, 1e-6);
        // the same gradients fresh: overwritten, the reference's from zero
        Vec fx = garbage(nx), fg = garbage(c), fb = garbage(c), fxr = garbage(nx), fgr = garbage(c), fbr = garbage(c);
        cpu::batchnorm_backward(hx ? fx.data() : nullptr, hg ? fg.data() : nullptr, hb ? fb.data() : nullptr,
                                dy.data(), x.data(), gamma.data(), mu.data(), is.data(), s.n, s.c, s.hw,
                                training, unsigned(mask));
        ref::batchnorm_backward<float>(hx ? fxr.data() : nullptr, hg ? fgr.data() : nullptr,
                                       hb ? fbr.data() : nullptr, dy.data(), x.data(), gamma.data(),
                                       mu.data(), is.data(), s.n, s.c, s.hw, training, unsigned(mask));
        if (hx) expect_close("bn_backward dx [fresh]" + t, fx, fxr, red * 4, 1e-4);
        if (hg) expect_close("bn_backward dgamma [fresh]" + t, fg, fgr, red, 1e-5);
        if (hb) expect_close("bn_backward dbeta [fresh]" + t, fb, fbr, red, 1e-5);
      }
    }
  }
}

TEST_CASE("cpu parity: softmax cross-entropy, colours 1 and 3, with and without b") {
  struct S { int n, colors, hw; };
  for (const S s : {S{1, 1, 1}, S{2, 1, 63}, S{2, 3, 63}, S{1, 3, 130}, S{2, 3, 64}}) {
    const size_t nl = size_t(s.n) * s.colors * kLevels * s.hw;
    const size_t nt = size_t(s.n) * s.colors * s.hw;
    const Vec a = rnd(nl, -3, 3), b = rnd(nl, -3, 3);
    const auto target = rnd_u8(nt);
    const DVec ad = to_d(a), bd = to_d(b);
    for (bool with_b : {false, true}) {
      const std::string sz = std::string(with_b ? " a+b" : " a") + " n" + std::to_string(s.n) +
                             " colors" + std::to_string(s.colors) + " hw" + std::to_string(s.hw);
      const float* bp = with_b ? b.data() : nullptr;
      Vec loss = {123.0f}, lr = {0.0f};
      DVec ld = {0.0};
      cpu::softmax_ce_forward(loss.data(), a.data(), bp, target.data(), s.n, s.colors, s.hw);
      ref::softmax_ce_forward<float>(lr.data(), a.data(), bp, target.data(), s.n, s.colors, s.hw);
      ref::softmax_ce_forward<double>(ld.data(), ad.data(), with_b ? bd.data() : nullptr,
                                      target.data(), s.n, s.colors, s.hw);
      expect_close("softmax_ce_forward" + sz, loss, lr, 1e-6, 1e-6);
      expect_close("softmax_ce_forward vs double" + sz, loss, ld, 1e-6, 1e-6);

      const Vec dloss = {0.7f};
      const Vec da0 = rnd(nl, -1e-3f, 1e-3f), db0 = rnd(nl, -1e-3f, 1e-3f);
      for (int mask = 1; mask < 4; ++mask) {
        const bool ha = mask & 1, hb = mask & 2;
        Vec da = da0, db = db0, dar = da0, dbr = db0;
        cpu::softmax_ce_backward(ha ? da.data() : nullptr, hb ? db.data() : nullptr,
                                 dloss.data(), a.data(), bp, target.data(), s.n, s.colors, s.hw);
        ref::softmax_ce_backward<float>(ha ? dar.data() : nullptr, hb ? dbr.data() : nullptr,
                                        dloss.data(), a.data(), bp, target.data(), s.n, s.colors,
                                        s.hw);
        const std::string t = sz + (ha ? " [da" : " [--") + (hb ? " db]" : " --]");
        // gradients are ~ 1/(N * 256): absolute tolerance relative to that scale
        const double scale = 0.7 / double(nt);
        if (ha) expect_close("softmax_ce_backward da" + t, da, dar, 1e-5 * scale + 1e-9, 1e-5);
        if (hb) expect_close("softmax_ce_backward db" + t, db, dbr, 1e-5 * scale + 1e-9, 1e-5);
        if (!ha) CHECK(da == da0);
        if (!hb) CHECK(db == db0);
        // fresh: every combination of fresh and accumulating gradients
        for (unsigned fresh = 1; fresh < 4; ++fresh) {
          if ((fresh & 1u && !ha) || (fresh & 2u && !hb)) continue;
          Vec fa = fresh & 1u ? garbage(nl) : da0, fb = fresh & 2u ? garbage(nl) : db0;
          Vec far = fa, fbr = fb;
          cpu::softmax_ce_backward(ha ? fa.data() : nullptr, hb ? fb.data() : nullptr, dloss.data(),
                                   a.data(), bp, target.data(), s.n, s.colors, s.hw, fresh);
          ref::softmax_ce_backward<float>(ha ? far.data() : nullptr, hb ? fbr.data() : nullptr,
                                          dloss.data(), a.data(), bp, target.data(), s.n, s.colors,
                                          s.hw, fresh);
          const std::string f = t + " [fresh " + std::to_string(fresh) + "]";
          if (ha) expect_close("softmax_ce_backward da" + f, fa, far, 1e-5 * scale + 1e-9, 1e-5);
          if (hb) expect_close("softmax_ce_backward db" + f, fb, fbr, 1e-5 * scale + 1e-9, 1e-5);
        }
      }
    }
  }
}

TEST_CASE("cpu parity: mse and mean") {
  for (size_t n : {size_t(1), size_t(1001), size_t(300007)}) {
    const std::string sz = " n=" + std::to_string(n);
    const Vec a = rnd(n), t = rnd(n);
    const DVec ad = to_d(a), td = to_d(t);
    Vec l = {9.0f}, lr = {0.0f};
    DVec ld = {0.0};
    cpu::mse_forward(l.data(), a.data(), t.data(), n);
    ref::mse_forward<float>(lr.data(), a.data(), t.data(), n);
    ref::mse_forward<double>(ld.data(), ad.data(), td.data(), n);
    expect_close("mse_forward" + sz, l, lr, 1e-7, 1e-6);
    expect_close("mse_forward vs double" + sz, l, ld, 1e-7, 1e-6);
    const Vec dloss = {1.3f}, da0 = rnd(n);
    Vec da = da0, dar = da0;
    cpu::mse_backward(da.data(), dloss.data(), a.data(), t.data(), n);
    ref::mse_backward<float>(dar.data(), dloss.data(), a.data(), t.data(), n);
    expect_close("mse_backward" + sz, da, dar, 1e-7, 1e-6);
    da = garbage(n), dar = garbage(n);
    cpu::mse_backward(da.data(), dloss.data(), a.data(), t.data(), n, 1u);
    ref::mse_backward<float>(dar.data(), dloss.data(), a.data(), t.data(), n, 1u);
    expect_close("mse_backward [fresh]" + sz, da, dar, 1e-7, 1e-6);

    cpu::mean_forward(l.data(), a.data(), n);
    ref::mean_forward<float>(lr.data(), a.data(), n);
    ref::mean_forward<double>(ld.data(), ad.data(), n);
    expect_close("mean_forward" + sz, l, lr, 1e-7, 1e-6);
    expect_close("mean_forward vs double" + sz, l, ld, 1e-7, 1e-6);
    da = da0, dar = da0;
    cpu::mean_backward(da.data(), dloss.data(), n);
    ref::mean_backward<float>(dar.data(), dloss.data(), n);
    expect_close("mean_backward" + sz, da, dar, 1e-7, 1e-6);
    da = garbage(n), dar = garbage(n);
    cpu::mean_backward(da.data(), dloss.data(), n, 1u);
    ref::mean_backward<float>(dar.data(), dloss.data(), n, 1u);
    expect_close("mean_backward [fresh]" + sz, da, dar, 1e-7, 1e-6);
  }
}

TEST_CASE("cpu parity: rmsprop and adam, three steps") {
  for (size_t n : {size_t(1), size_t(1001), size_t(70001)}) {
    const std::string sz = " n=" + std::to_string(n);
    Vec w = rnd(n), ms = rnd(n, 0.1f, 1.0f), mom = rnd(n, -1e-3f, 1e-3f);
    Vec wr = w, msr = ms, momr = mom;
    for (int step = 0; step < 3; ++step) {
      const Vec g = rnd(n);
      cpu::rmsprop_step(w.data(), ms.data(), mom.data(), g.data(), n, 4e-4f, 0.95f, 0.9f, 1e-8f);
      ref::rmsprop_step<float>(wr.data(), msr.data(), momr.data(), g.data(), n, 4e-4f, 0.95f, 0.9f,
                               1e-8f);
    }
    expect_close("rmsprop w" + sz, w, wr, 1e-7, 1e-6);
    expect_close("rmsprop ms" + sz, ms, msr, 1e-7, 1e-6);
    expect_close("rmsprop mom" + sz, mom, momr, 1e-9, 1e-5);

    Vec m = rnd(n, -0.1f, 0.1f), v = rnd(n, 0.0f, 0.1f);
    Vec mr = m, vr = v;
    w = wr;
    for (long t = 1; t <= 3; ++t) {
      const Vec g = rnd(n);
      cpu::adam_step(w.data(), m.data(), v.data(), g.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f, t);
      ref::adam_step<float>(wr.data(), mr.data(), vr.data(), g.data(), n, 1e-3f, 0.9f, 0.999f,
                            1e-8f, t);
    }
    expect_close("adam w" + sz, w, wr, 1e-7, 1e-6);
    expect_close("adam m" + sz, m, mr, 1e-7, 1e-6);
    expect_close("adam v" + sz, v, vr, 1e-7, 1e-6);
  }
}
