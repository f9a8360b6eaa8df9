// Backend parity: every kernel of engine/backend.h on one float32 backend against the reference
// (engine/ref/kernels.h) run in double on the same inputs, element by element. Written once,
// compiled once per backend (tests/parity.h): into unit_tests for the CPU backend, into
// gpu_tests for CUDA, where the cases are skipped visibly without a device.
//
// Every input is random (uniform, seeded), never zeros. Forward outputs are pre-filled with
// garbage to check that they are overwritten; gradient buffers are pre-filled with random values
// to check that backward accumulates (+=). Null gradient pointers are swept; every backward also
// runs with its gradients marked fresh (pre-filled with NaN: they must be overwritten).
// Activations run on a wide range with their kinks and saturations included (0, +-100, the
// breakpoints of the CPU's polynomial approximations). Tolerances are per op, scaled by the
// reduction length; where CUDA was measured against a looser bound it has its own (tol()).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/mask.h"
#include "tests/parity.h"
#if !PRSR_PARITY_ON_CUDA
#include "engine/cpu/conv.h"
#endif

using namespace parity;

namespace {

// ---------------------------------------------------------------- convolution layouts
// The CPU backend's oneDNN convolutions run in several memory layouts (engine/cpu/conv.h): each
// geometry is checked with the default per-shape rule, then in every layout explicitly. Other
// backends have one pass. `deconv`: the deconvolutions have default and plain only.
struct Layout {
  const char* name;
  int id;
};
std::vector<Layout> layouts(bool deconv) {
#if PRSR_PARITY_ON_CUDA
  (void)deconv;
  return {{"default", 0}};
#else
  using L = cpu::detail::ConvLayout;
  if (deconv) return {{"default rule", int(L::Default)}, {"plain", int(L::Plain)}};
  return {{"default rule", int(L::Default)}, {"plain", int(L::Plain)}, {"blocked", int(L::Any)}};
#endif
}
void set_layout(int id) {
#if PRSR_PARITY_ON_CUDA
  (void)id;
#else
  cpu::detail::set_conv_layout(cpu::detail::ConvLayout(id));
#endif
}

void conv_case(const ConvGeom& g, bool bias) {
  const size_t nx = size_t(g.n) * g.ci * g.h * g.w, nw = size_t(g.co) * g.ci * g.kh * g.kw;
  const size_t ny = size_t(g.n) * g.co * g.ho() * g.wo();
  const Vec x = rnd(nx), w = rnd(nw), b = rnd(g.co), dy = rnd(ny);
  const DVec xd = to_d(x), wd = to_d(w), bd = to_d(b), dyd = to_d(dy);
  const FBuf X(x), W(w), B(b), DY(dy);
  const std::string tag = str(g) + (bias ? " +b" : "");
  const long k_fwd = long(g.ci) * g.kh * g.kw, k_w = long(g.n) * g.ho() * g.wo();

  FBuf y(rnd(ny, 5, 6));
  DVec y_ref(ny);
  be::conv2d_forward(y.p, X.p, W.p, bias ? B.p : nullptr, g);
  ref::conv2d_forward<double>(y_ref.data(), xd.data(), wd.data(), bias ? bd.data() : nullptr, g);
  expect_close("conv2d_forward " + tag, y.get(), y_ref, dot_tol(k_fwd), 1e-4);

  backward_parity(
      "conv2d_backward", tag, nx, nw, size_t(g.co), bias,
      {dot_tol(long(g.co) * g.kh * g.kw), dot_tol(k_w), dot_tol(k_w)},
      [&](float* dx, float* dw, float* db, unsigned fresh) {
        be::conv2d_backward(dx, dw, db, DY.p, X.p, W.p, g, fresh);
      },
      [&](double* dx, double* dw, double* db) {
        ref::conv2d_backward<double>(dx, dw, db, dyd.data(), xd.data(), wd.data(), g);
      });
}

void deconv_case(const DeconvGeom& g, bool bias) {
  const size_t nx = size_t(g.n) * g.ci * g.h * g.w, nw = size_t(g.co) * g.ci * g.k * g.k;
  const size_t ny = size_t(g.n) * g.co * g.ho() * g.wo();
  const Vec x = rnd(nx), w = rnd(nw), b = rnd(g.co), dy = rnd(ny);
  const DVec xd = to_d(x), wd = to_d(w), bd = to_d(b), dyd = to_d(dy);
  const FBuf X(x), W(w), B(b), DY(dy);
  const std::string tag = str(g) + (bias ? " +b" : "");
  const long k_fwd = long(g.ci) * g.k * g.k, k_w = long(g.n) * g.h * g.w;

  FBuf y(rnd(ny, 5, 6));
  DVec y_ref(ny);
  be::deconv2d_forward(y.p, X.p, W.p, bias ? B.p : nullptr, g);
  ref::deconv2d_forward<double>(y_ref.data(), xd.data(), wd.data(), bias ? bd.data() : nullptr, g);
  expect_close("deconv2d_forward " + tag, y.get(), y_ref, dot_tol(k_fwd), 1e-4);

  backward_parity(
      "deconv2d_backward", tag, nx, nw, size_t(g.co), bias,
      {dot_tol(long(g.co) * g.k * g.k), dot_tol(k_w), dot_tol(long(g.n) * g.ho() * g.wo())},
      [&](float* dx, float* dw, float* db, unsigned fresh) {
        be::deconv2d_backward(dx, dw, db, DY.p, X.p, W.p, g, fresh);
      },
      [&](double* dx, double* dw, double* db) {
        ref::deconv2d_backward<double>(dx, dw, db, dyd.data(), xd.data(), wd.data(), g);
      });
}

}  // namespace

TEST_CASE(PARITY("conv2d forward and backward, the model's kernel shapes") * doctest::skip(!backend_ok())) {
  // {n, ci, h, w, co, kh, kw, pad_t, pad_b, pad_l, pad_r}
  std::vector<ConvGeom> geoms = {
      {2, 5, 9, 7, 4, 3, 3, 1, 1, 1, 1},      // conditioning 3x3 pad 1
      {1, 3, 9, 7, 6, 1, 1, 0, 0, 0, 0},      // 1x1
      {2, 3, 9, 7, 5, 4, 7, 3, 0, 3, 3},      // first vertical (7 -> 4x7)
      {2, 5, 9, 7, 6, 3, 5, 2, 0, 2, 2},      // vertical (5 -> 3x5)
      {2, 3, 9, 7, 5, 1, 4, 0, 0, 3, 0},      // first horizontal 1x4
      {1, 5, 9, 7, 10, 1, 3, 0, 0, 2, 0},     // horizontal 1x3
      {3, 1, 5, 6, 2, 3, 3, 1, 1, 1, 1},      // C = 1 input, n = 3
      {2, 16, 16, 16, 32, 3, 5, 2, 0, 2, 2},  // model-sized channels (32 -> 2c halved)
      {2, 32, 8, 8, 32, 3, 3, 1, 1, 1, 1},    // conditioning 32 -> 32 at 8x8
      {2, 32, 8, 8, 64, 1, 1, 0, 0, 0, 0},    // 1x1 link/res sized
      {1, 24, 5, 3, 300, 1, 1, 0, 0, 0, 0},   // 1x1 with >= 256 channels (head-like)
      {2, 300, 3, 5, 7, 1, 1, 0, 0, 0, 0},    // 1x1 with >= 256 input channels
      {2, 3, 7, 5, 4, 3, 3, 1, 1, 1, 1},      // 3x3 pad 1, odd sizes
      {3, 5, 6, 7, 6, 1, 1, 0, 0, 0, 0},      // 1x1 (CUDA: direct GEMM, no im2col)
      {2, 4, 9, 8, 5, 4, 7, 3, 0, 3, 3},      // first vertical, even width
      {2, 3, 8, 9, 4, 3, 5, 2, 0, 2, 2},      // vertical, odd width
      {2, 5, 5, 7, 3, 1, 4, 0, 0, 3, 0},      // first horizontal, small
      {1, 4, 6, 5, 6, 1, 3, 0, 0, 2, 0},      // horizontal, small
      {3, 1, 1, 1, 2, 1, 1, 0, 0, 0, 0},      // 1x1 on one pixel (the cached sampler)
      {2, 3, 5, 5, 2, 1, 1, 1, 0, 0, 1},      // 1x1 with padding (not direct)
      {1, 2, 4, 3, 3, 3, 3, 0, 0, 0, 0},      // valid conv, no padding
      {2, 32, 32, 32, 64, 3, 3, 1, 1, 1, 1},  // conditioning-net size
      {2, 32, 32, 32, 64, 1, 1, 0, 0, 0, 0},  // 1x1 head size
  };
  // CUDA: K*P = 64*4*7 * 32*32 = 1.8M floats per image; the im2col columns are built 36 images
  // per chunk, so 37 images take two chunks.
  if (kCuda) geoms.push_back({37, 64, 32, 32, 2, 4, 7, 3, 0, 3, 3});
  for (const Layout& layout : layouts(false)) {
    set_layout(layout.id);
    INFO("conv layout: " << layout.name);
    for (const auto& g : geoms) {
      conv_case(g, false);
      conv_case(g, true);
    }
  }
  set_layout(0);
  // a second call with a cached geometry must give the same result (cache reuse), bit for bit
  const ConvGeom g = geoms[3];
  const Vec x = rnd(size_t(g.n) * g.ci * g.h * g.w), w = rnd(size_t(g.co) * g.ci * g.kh * g.kw);
  const size_t ny = size_t(g.n) * g.co * g.ho() * g.wo();
  const FBuf X(x), W(w);
  FBuf y1(rnd(ny)), y2(Vec(ny, 7.0f));
  DVec y_ref(ny);
  be::conv2d_forward(y1.p, X.p, W.p, nullptr, g);
  be::conv2d_forward(y2.p, X.p, W.p, nullptr, g);
  ref::conv2d_forward<double>(y_ref.data(), to_d(x).data(), to_d(w).data(), nullptr, g);
  CHECK(y1.get() == y2.get());
  expect_close("conv2d_forward cached rerun " + str(g), y2.get(), y_ref, dot_tol(g.ci * 15), 1e-4);
}

// A 1x1 conv whose weights carry a colour mask with contiguous groups (the prior head): with
// ConvGeom::colors set a backend may skip the masked blocks (the CPU backend does; CUDA runs
// densely). Compared with the reference run densely on the same masked weights: y and dx
// everywhere, dw on the allowed entries; the masked entries of dw must be left as they were by a
// skipping backend (the contract in backend.h), and equal the dense gradient otherwise.
TEST_CASE(PARITY("1x1 conv with colour blocks (masked prior head)") * doctest::skip(!backend_ok())) {
  constexpr bool skips_blocks = !kCuda;
  struct Case {
    ConvGeom g;
    bool bias;
  };
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
      {geom(3, 260, 3, 4, 96, 3, false), true},   // head2-like with rows of > 8 pixels (see shift)
  };
  // shift 0: every buffer starts on a 64-byte boundary, as the arena's tensors do, and the CPU
  // backend splits each product whose B operand is 32-byte aligned (rows of > 8 pixels) into
  // columns [1, n) and column 0 (conv.cpp, sgemm); shift 1: one float off, no split.
  for (const size_t shift : {size_t(0), size_t(1)})
    for (const Case& c : cases) {
      const ConvGeom& g = c.g;
      MaskSpec ms{c.g.strict ? MaskKind::A : MaskKind::B, g.colors, g.ci, g.co, 0, 0};
      const std::vector<float> mask = colour_mask<float>(g.co, g.ci, 1, 1, ms);
      const size_t nx = size_t(g.n) * g.ci * g.h * g.w, nw = size_t(g.co) * g.ci, ny = size_t(g.n) * g.co * g.h * g.w;
      Vec w = rnd(nw);
      for (size_t i = 0; i < nw; ++i) w[i] *= mask[i];
      const Vec x = rnd(nx), b = rnd(g.co), dy = rnd(ny);
      const DVec xd = to_d(x), wd = to_d(w), bd = to_d(b), dyd = to_d(dy);
      const FBuf X(x, shift), W(w, shift), B(b, shift), DY(dy, shift);
      char tag[112];
      std::snprintf(tag, sizeof tag, "n%d %d->%d %dx%d colours %d%s shift %zu", g.n, g.ci, g.co, g.h, g.w, g.colors,
                    g.strict ? " (A)" : " (B)", shift);
      FBuf y(rnd(ny, 5, 6), shift);
      DVec y_ref(ny);
      be::conv2d_forward(y.p, X.p, W.p, c.bias ? B.p : nullptr, g);
      ref::conv2d_forward<double>(y_ref.data(), xd.data(), wd.data(), c.bias ? bd.data() : nullptr, g);
      expect_close(std::string("conv1x1 blocks forward ") + tag, y.get(), y_ref, dot_tol(g.ci), 1e-4);

      const Vec dx0 = rnd(nx), dw0 = rnd(nw), db0 = rnd(g.co);
      FBuf dx(dx0, shift), dw(dw0, shift), db(db0, shift);
      DVec dx_r = to_d(dx0), dw_r = to_d(dw0), db_r = to_d(db0);
      be::conv2d_backward(dx.p, dw.p, c.bias ? db.p : nullptr, DY.p, X.p, W.p, g);
      ref::conv2d_backward<double>(dx_r.data(), dw_r.data(), c.bias ? db_r.data() : nullptr, dyd.data(), xd.data(),
                                   wd.data(), g);
      expect_close(std::string("conv1x1 blocks backward dx ") + tag, dx.get(), dx_r, dot_tol(g.co), 1e-4);
      {  // a fresh dx (mask A leaves input channels no block reads: they must come out zero)
        FBuf fx(garbage(nx), shift);
        DVec fx_r(nx, 0.0);
        be::conv2d_backward(fx.p, nullptr, nullptr, DY.p, X.p, W.p, g, 1u);
        ref::conv2d_backward<double>(fx_r.data(), nullptr, nullptr, dyd.data(), xd.data(), wd.data(), g);
        expect_close(std::string("conv1x1 blocks backward dx [fresh] ") + tag, fx.get(), fx_r, dot_tol(g.co), 1e-4);
      }
      if (c.bias)
        expect_close(std::string("conv1x1 blocks backward db ") + tag, db.get(), db_r, dot_tol(long(g.n) * g.h * g.w),
                     1e-4);
      // allowed entries against the reference; masked ones untouched (skipping backend)
      DVec want(nw);
      size_t masked = 0;
      for (size_t i = 0; i < nw; ++i) {
        want[i] = mask[i] != 0.0f || !skips_blocks ? dw_r[i] : double(dw0[i]);
        masked += mask[i] == 0.0f;
      }
      if (g.colors == 3) CHECK(masked > nw / 4);  // the case does exercise skipped blocks
      expect_close(std::string("conv1x1 blocks backward dw ") + tag, dw.get(), want, dot_tol(long(g.n) * g.h * g.w),
                   1e-4);
    }
}

TEST_CASE(PARITY("deconv2d forward and backward") * doctest::skip(!backend_ok())) {
  // {n, ci, h, w, co, k, stride, pad, out_pad}
  std::vector<DeconvGeom> geoms = {
      {2, 5, 4, 3, 4, 3, 2, 1, 1},    // the model's: 3x3 s2 p1 op1 (h -> 2h)
      {1, 3, 5, 5, 2, 3, 2, 1, 1},    // odd size
      {2, 32, 8, 8, 32, 3, 2, 1, 1},  // conditioning 8 -> 16
      {2, 4, 5, 4, 3, 4, 2, 1, 0},    // k4 s2 p1 (pad_r = pad)
      {1, 3, 6, 5, 4, 3, 1, 1, 0},    // stride 1
      {2, 3, 4, 5, 4, 3, 2, 1, 1},    // the model's, wider than high
      {1, 5, 3, 3, 2, 3, 2, 1, 1},     {3, 4, 7, 6, 3, 3, 2, 1, 1},
      {2, 32, 16, 16, 32, 3, 2, 1, 1},  // 16 -> 32 at the model's width
      {2, 3, 5, 4, 2, 4, 2, 1, 0},      // k 4, stride 2
      {2, 2, 3, 3, 3, 3, 1, 0, 0},      // stride 1, no padding (full correlation)
      {1, 2, 3, 4, 2, 2, 3, 0, 1},      // stride > k: output pixels nobody writes (bias only)
  };
  // CUDA: M*P = 64*9 * 64*64 = 2.4M floats per image; the columns are built 28 images per
  // chunk, so 29 images take two chunks.
  if (kCuda) geoms.push_back({29, 1, 64, 64, 64, 3, 2, 1, 1});
  for (const Layout& layout : layouts(true)) {
    set_layout(layout.id);
    INFO("deconv layout: " << layout.name);
    for (const auto& g : geoms) {
      deconv_case(g, false);
      deconv_case(g, true);
    }
  }
  set_layout(0);
}

TEST_CASE(PARITY("elementwise") * doctest::skip(!backend_ok())) {
  for (size_t n : {size_t(1), size_t(7), size_t(1000), size_t(1001), size_t(65537), size_t(100003)}) {
    const std::string sz = " n=" + std::to_string(n);
    const Vec a = rnd(n), m = rnd(n), dy = rnd(n), g0 = rnd(n);
    const DVec ad = to_d(a), md = to_d(m), dyd = to_d(dy), g0d = to_d(g0);
    const FBuf A(a), M(m), DY(dy);
    {
      FBuf y(rnd(n));
      be::fill(y.p, 0.37f, n);
      DVec yr(n);
      ref::fill<double>(yr.data(), double(0.37f), n);
      expect_close("fill" + sz, y.get(), yr, 0, 0);
    }
    for (unsigned fresh : {0u, 1u}) {  // y (+)= a * x: accumulating, then fresh
      const std::string f = fresh ? " [fresh]" : "";
      FBuf y(fresh ? garbage(n) : g0);
      DVec yr = fresh ? DVec(n, NAN) : g0d;
      be::axpy(y.p, -1.3f, A.p, n, fresh);
      ref::axpy<double>(yr.data(), double(-1.3f), ad.data(), n, fresh);
      expect_close("axpy" + f + sz, y.get(), yr, 1e-6, 1e-6);
    }
    {
      FBuf y(rnd(n));
      DVec yr(n);
      be::add_forward(y.p, A.p, M.p, n);
      ref::add_forward<double>(yr.data(), ad.data(), md.data(), n);
      expect_close("add_forward" + sz, y.get(), yr, 0, 0);
      be::mul_forward(y.p, A.p, M.p, n);
      ref::mul_forward<double>(yr.data(), ad.data(), md.data(), n);
      expect_close("mul_forward" + sz, y.get(), yr, 0, 0);
    }
    for (unsigned fresh : {0u, 1u}) {
      const std::string f = fresh ? " [fresh]" : "";
      FBuf da(fresh ? garbage(n) : g0);
      DVec dar = fresh ? DVec(n, NAN) : g0d;
      be::mul_backward(da.p, DY.p, M.p, n, fresh);
      ref::mul_backward<double>(dar.data(), dyd.data(), md.data(), n, fresh);
      expect_close("mul_backward" + f + sz, da.get(), dar, tol(1e-7, 1e-6), 1e-6);
    }

    // activations on a wide range (saturation and kinks included), forward, then backward from
    // the output (the reference's, rounded to float: the same y for both)
    Vec x = rnd(n, -12.0f, 12.0f);
    if (n > 8) {
      x[0] = 0.0f, x[1] = -100.0f, x[2] = 100.0f, x[3] = 1e-6f, x[4] = -0.6249f, x[5] = 0.6251f;
      x[6] = -88.0f, x[7] = 89.5f;
    }
    const DVec xd = to_d(x);
    const FBuf X(x);
    struct Act {
      const char* name;
      void (*bf)(float*, const float*, size_t);
      void (*rf)(double*, const double*, size_t);
      void (*bb)(float*, const float*, const float*, size_t, unsigned);
      void (*rb)(double*, const double*, const double*, size_t, unsigned);
    };
    const Act acts[] = {
        {"relu", be::relu_forward, ref::relu_forward<double>, be::relu_backward, ref::relu_backward<double>},
        {"tanh", be::tanh_forward, ref::tanh_forward<double>, be::tanh_backward, ref::tanh_backward<double>},
        {"sigmoid", be::sigmoid_forward, ref::sigmoid_forward<double>, be::sigmoid_backward,
         ref::sigmoid_backward<double>},
    };
    for (const Act& f : acts) {
      FBuf y(rnd(n));
      DVec yr(n);
      f.bf(y.p, X.p, n);
      f.rf(yr.data(), xd.data(), n);
      expect_close(std::string(f.name) + "_forward" + sz, y.get(), yr, tol(1e-7, 1e-6), tol(4e-7, 1e-6));
      const Vec yf = to_f(yr);
      const DVec yfd = to_d(yf);
      const FBuf Y(yf);
      for (unsigned fresh : {0u, 1u}) {
        const std::string fr = fresh ? " [fresh]" : "";
        FBuf dx(fresh ? garbage(n) : g0);
        DVec dxr = fresh ? DVec(n, NAN) : g0d;
        f.bb(dx.p, DY.p, Y.p, n, fresh);
        f.rb(dxr.data(), dyd.data(), yfd.data(), n, fresh);
        expect_close(std::string(f.name) + "_backward" + fr + sz, dx.get(), dxr, tol(1e-7, 1e-6), 1e-6);
      }
    }
  }
}

TEST_CASE(PARITY("gate and down_shift") * doctest::skip(!backend_ok())) {
  struct S {
    int n, c, hw;
  };
  for (const S s : {S{1, 1, 1}, S{2, 5, 63}, S{3, 32, 1024}, S{2, 3, 7}, S{3, 32, 64}, S{2, 5, 1023}}) {
    const size_t nz = size_t(s.n) * 2 * s.c * s.hw, ny = size_t(s.n) * s.c * s.hw;
    const std::string sz = " n" + std::to_string(s.n) + " c" + std::to_string(s.c) + " hw" + std::to_string(s.hw);
    const Vec z = rnd(nz, -4, 4), dy = rnd(ny), dz0 = rnd(nz);
    const DVec zd = to_d(z), dyd = to_d(dy);
    const FBuf Z(z), DY(dy);
    FBuf y(rnd(ny));
    DVec yr(ny);
    be::gate_forward(y.p, Z.p, s.n, s.c, s.hw);
    ref::gate_forward<double>(yr.data(), zd.data(), s.n, s.c, s.hw);
    expect_close("gate_forward" + sz, y.get(), yr, tol(1e-7, 1e-6), tol(1e-6, 1e-5));
    for (unsigned fresh : {0u, 1u}) {
      const std::string f = fresh ? " [fresh]" : "";
      FBuf dz(fresh ? garbage(nz) : dz0);
      DVec dzr = fresh ? DVec(nz, NAN) : to_d(dz0);
      be::gate_backward(dz.p, DY.p, Z.p, s.n, s.c, s.hw, fresh);
      ref::gate_backward<double>(dzr.data(), dyd.data(), zd.data(), s.n, s.c, s.hw, fresh);
      // 1 - t^2 near saturation amplifies one ulp of t: ~2.4e-7 absolute per unit dy
      expect_close("gate_backward" + f + sz, dz.get(), dzr, tol(5e-7, 1e-6), tol(1e-6, 1e-5));
    }
  }
  struct D {
    int planes, h, w;
  };
  for (const D d : {D{1, 1, 1}, D{10, 9, 7}, D{96, 32, 32}, D{3, 5, 7}, D{64, 32, 32}, D{2, 1, 9}}) {
    const size_t n = size_t(d.planes) * d.h * d.w;
    const std::string sz = " planes" + std::to_string(d.planes) + " " + std::to_string(d.h) + "x" + std::to_string(d.w);
    const Vec x = rnd(n), dy = rnd(n), dx0 = rnd(n);
    const DVec xd = to_d(x), dyd = to_d(dy);
    const FBuf X(x), DY(dy);
    FBuf y(rnd(n));
    DVec yr(n);
    be::down_shift_forward(y.p, X.p, d.planes, d.h, d.w);
    ref::down_shift_forward<double>(yr.data(), xd.data(), d.planes, d.h, d.w);
    expect_close("down_shift_forward" + sz, y.get(), yr, 0, 0);
    for (unsigned fresh : {0u, 1u}) {
      const std::string f = fresh ? " [fresh]" : "";
      FBuf dx(fresh ? garbage(n) : dx0);
      DVec dxr = fresh ? DVec(n, NAN) : to_d(dx0);
      be::down_shift_backward(dx.p, DY.p, d.planes, d.h, d.w, fresh);
      ref::down_shift_backward<double>(dxr.data(), dyd.data(), d.planes, d.h, d.w, fresh);
      expect_close("down_shift_backward" + f + sz, dx.get(), dxr, tol(0, 1e-6), tol(0, 1e-6));
    }
  }
}

TEST_CASE(PARITY("batch norm train, eval and backward") * doctest::skip(!backend_ok())) {
  struct S {
    int n, c, hw;
  };
  for (const S s : {S{1, 1, 1}, S{2, 5, 63}, S{1, 3, 7}, S{4, 32, 256}, S{2, 3, 7}, S{4, 5, 64}, S{1, 2, 1},
                    S{3, 32, 1024}, S{32, 4, 64}}) {
    const size_t nx = size_t(s.n) * s.c * s.hw, c = size_t(s.c);
    const std::string sz = " n" + std::to_string(s.n) + " c" + std::to_string(s.c) + " hw" + std::to_string(s.hw);
    const double m = double(s.n) * s.hw;
    // an offset mean and a non-unit scale, as after a conv
    Vec x = rnd(nx, -1, 1);
    for (size_t i = 0; i < nx; ++i) x[i] = 0.3f + 2.0f * x[i];
    const Vec gamma = rnd(c, 0.5f, 1.5f), beta = rnd(c), rm0 = rnd(c), rv0 = rnd(c, 0.5f, 2.0f);
    const DVec xd = to_d(x), gd = to_d(gamma), bd = to_d(beta);
    const FBuf X(x), G(gamma), Bt(beta), RM0(rm0), RV0(rv0);
    const float momentum = 0.1f, eps = 1e-5f;

    // training forward: y, mean, invstd, running stats
    FBuf y(rnd(nx)), mean(rnd(c)), invstd(rnd(c)), rm(rm0), rv(rv0);
    be::batchnorm_forward_train(y.p, mean.p, invstd.p, rm.p, rv.p, X.p, G.p, Bt.p, s.n, s.c, s.hw, momentum, eps);
    DVec yd(nx), meand(c), invd(c), rmd = to_d(rm0), rvd = to_d(rv0);
    ref::batchnorm_forward_train<double>(yd.data(), meand.data(), invd.data(), rmd.data(), rvd.data(), xd.data(),
                                         gd.data(), bd.data(), s.n, s.c, s.hw, momentum, eps);
    expect_close("bn_train y" + sz, y.get(), yd, tol(2e-6, 1e-5), tol(1e-5, 1e-4));
    expect_close("bn_train mean" + sz, mean.get(), meand, tol(1e-7, 1e-6), tol(1e-6, 1e-5));
    // invstd can be 1/sqrt(eps) ~ 316 when the variance is 0 (one element): relative
    expect_close("bn_train invstd" + sz, invstd.get(), invd, 1e-6, 1e-5);
    expect_close("bn_train running_mean" + sz, rm.get(), rmd, tol(1e-7, 1e-6), tol(1e-6, 1e-5));
    expect_close("bn_train running_var" + sz, rv.get(), rvd, tol(1e-7, 1e-6), tol(1e-6, 1e-5));

    // evaluation forward
    FBuf ye(rnd(nx)), me(rnd(c)), ie(rnd(c));
    be::batchnorm_forward_eval(ye.p, me.p, ie.p, RM0.p, RV0.p, X.p, G.p, Bt.p, s.n, s.c, s.hw, eps);
    DVec yer(nx), mer(c), ier(c);
    ref::batchnorm_forward_eval<double>(yer.data(), mer.data(), ier.data(), to_d(rm0).data(), to_d(rv0).data(),
                                        xd.data(), gd.data(), bd.data(), s.n, s.c, s.hw, eps);
    expect_close("bn_eval y" + sz, ye.get(), yer, tol(1e-6, 1e-5), tol(1e-6, 1e-5));
    expect_close("bn_eval mean" + sz, me.get(), mer, 0, 0);
    expect_close("bn_eval invstd" + sz, ie.get(), ier, tol(0, 1e-7), 1e-6);

    // backward, training and evaluation (from the reference's statistics rounded to float),
    // with every gradient mask, accumulating and fresh
    const Vec dy = rnd(nx), dx0 = rnd(nx), dg0 = rnd(c), db0 = rnd(c);
    const DVec dyd = to_d(dy);
    const FBuf DY(dy);
    for (bool training : {true, false}) {
      const Vec mu = to_f(training ? meand : mer), is = to_f(training ? invd : ier);
      const DVec mud = to_d(mu), isd = to_d(is);
      const FBuf MU(mu), IS(is);
      // the CPU sums in double, but its per-element products are float: 1e-6 up to m = 1024,
      // growing with m beyond; CUDA's float reductions grow with m
      const double tdx = 1e-5, tdg = tol(1e-6 * std::max(1.0, m / 1024), 2e-6 * m + 1e-6);
      const double rdx = tol(1e-5, 1e-4), rdg = tol(1e-6, 1e-4);
      for (int mask = 1; mask < 8; ++mask) {
        const bool hx = mask & 1, hg = mask & 2, hb = mask & 4;
        for (unsigned fresh : {0u, unsigned(mask)}) {  // accumulating, then all fresh
          const std::string t = std::string(training ? " train" : " eval") + " mask" + std::to_string(mask) +
                                (fresh ? " [fresh]" : "") + sz;
          FBuf dx(fresh ? garbage(nx) : dx0), dg(fresh ? garbage(c) : dg0), db(fresh ? garbage(c) : db0);
          DVec dxd = fresh ? DVec(nx, NAN) : to_d(dx0), dgd = fresh ? DVec(c, NAN) : to_d(dg0),
               dbd = fresh ? DVec(c, NAN) : to_d(db0);
          be::batchnorm_backward(hx ? dx.p : nullptr, hg ? dg.p : nullptr, hb ? db.p : nullptr, DY.p, X.p, G.p, MU.p,
                                 IS.p, s.n, s.c, s.hw, training, fresh);
          ref::batchnorm_backward<double>(hx ? dxd.data() : nullptr, hg ? dgd.data() : nullptr,
                                          hb ? dbd.data() : nullptr, dyd.data(), xd.data(), gd.data(), mud.data(),
                                          isd.data(), s.n, s.c, s.hw, training, fresh);
          if (hx) expect_close("bn_backward dx" + t, dx.get(), dxd, tdx, rdx);
          if (hg) expect_close("bn_backward dgamma" + t, dg.get(), dgd, tdg, rdg);
          if (hb) expect_close("bn_backward dbeta" + t, db.get(), dbd, tdg, rdg);
        }
      }
    }
  }
}

TEST_CASE(PARITY("softmax cross-entropy, colours 1 and 3, with and without b") * doctest::skip(!backend_ok())) {
  struct S {
    int n, colors, hw;
  };
  for (const S s : {S{1, 1, 1}, S{2, 1, 63}, S{2, 3, 63}, S{1, 3, 130}, S{2, 3, 64}, S{2, 1, 7}, S{2, 3, 7},
                    S{3, 3, 64}, S{2, 3, 1024}}) {
    const size_t nl = size_t(s.n) * s.colors * kLevels * s.hw;
    const size_t nt = size_t(s.n) * s.colors * s.hw;
    const Vec a = rnd(nl, -3, 3), b = rnd(nl, -3, 3);
    const auto target = rnd_u8(nt);
    const DVec ad = to_d(a), bd = to_d(b);
    const FBuf A(a), B(b);
    const DBuf<uint8_t> TG(target);
    for (bool with_b : {false, true}) {
      const std::string sz = std::string(with_b ? " a+b" : " a") + " n" + std::to_string(s.n) + " colors" +
                             std::to_string(s.colors) + " hw" + std::to_string(s.hw);
      FBuf loss(Vec{123.0f});
      DVec ld = {0.0};
      be::softmax_ce_forward(loss.p, A.p, with_b ? B.p : nullptr, TG.p, s.n, s.colors, s.hw);
      ref::softmax_ce_forward<double>(ld.data(), ad.data(), with_b ? bd.data() : nullptr, target.data(), s.n, s.colors,
                                      s.hw);
      expect_close("softmax_ce_forward" + sz, loss.get(), ld, 1e-6, tol(1e-6, 1e-5));

      const Vec dloss = {0.7f};
      const FBuf DL(dloss);
      const DVec dld = to_d(dloss);
      const Vec da0 = rnd(nl, -1e-3f, 1e-3f), db0 = rnd(nl, -1e-3f, 1e-3f);
      // gradients are ~ 1/(N * 256): absolute tolerance relative to that scale
      const double scale = 0.7 / double(nt), tg = tol(1e-5 * scale + 1e-9, 1e-7);
      for (int mask = 1; mask < 4; ++mask) {
        const bool ha = mask & 1, hb = mask & 2;
        const std::string t = sz + (ha ? " [da" : " [--") + (hb ? " db]" : " --]");
        // every combination of fresh and accumulating gradients (fresh = 0: both accumulate)
        for (unsigned fresh = 0; fresh < 4; ++fresh) {
          if ((fresh & 1u && !ha) || (fresh & 2u && !hb)) continue;
          FBuf da(fresh & 1u ? garbage(nl) : da0), db(fresh & 2u ? garbage(nl) : db0);
          DVec dar = fresh & 1u ? DVec(nl, NAN) : to_d(da0), dbr = fresh & 2u ? DVec(nl, NAN) : to_d(db0);
          be::softmax_ce_backward(ha ? da.p : nullptr, hb ? db.p : nullptr, DL.p, A.p, with_b ? B.p : nullptr, TG.p,
                                  s.n, s.colors, s.hw, fresh);
          ref::softmax_ce_backward<double>(ha ? dar.data() : nullptr, hb ? dbr.data() : nullptr, dld.data(), ad.data(),
                                           with_b ? bd.data() : nullptr, target.data(), s.n, s.colors, s.hw, fresh);
          const std::string f = t + (fresh ? " [fresh " + std::to_string(fresh) + "]" : "");
          if (ha) expect_close("softmax_ce_backward da" + f, da.get(), dar, tg, 1e-5);
          if (hb) expect_close("softmax_ce_backward db" + f, db.get(), dbr, tg, 1e-5);
          if (!ha) CHECK(da.get() == da0);  // a null gradient: the buffer is not touched
          if (!hb) CHECK(db.get() == db0);
        }
      }
    }
  }
}

TEST_CASE(PARITY("mse and mean") * doctest::skip(!backend_ok())) {
  for (size_t n : {size_t(1), size_t(1000), size_t(1001), size_t(300001), size_t(300007)}) {
    const std::string sz = " n=" + std::to_string(n);
    const Vec a = rnd(n), t = rnd(n), da0 = rnd(n), dloss = {1.3f};
    const DVec ad = to_d(a), td = to_d(t), dld = to_d(dloss);
    const FBuf A(a), Tg(t), DL(dloss);
    FBuf l(Vec{9.0f});
    DVec ld = {0.0};
    be::mse_forward(l.p, A.p, Tg.p, n);
    ref::mse_forward<double>(ld.data(), ad.data(), td.data(), n);
    expect_close("mse_forward" + sz, l.get(), ld, 1e-7, tol(1e-6, 1e-5));
    be::mean_forward(l.p, A.p, n);
    ref::mean_forward<double>(ld.data(), ad.data(), n);
    expect_close("mean_forward" + sz, l.get(), ld, 1e-7, tol(1e-6, 1e-5));
    for (unsigned fresh : {0u, 1u}) {
      const std::string f = fresh ? " [fresh]" : "";
      FBuf da(fresh ? garbage(n) : da0);
      DVec dar = fresh ? DVec(n, NAN) : to_d(da0);
      be::mse_backward(da.p, DL.p, A.p, Tg.p, n, fresh);
      ref::mse_backward<double>(dar.data(), dld.data(), ad.data(), td.data(), n, fresh);
      expect_close("mse_backward" + f + sz, da.get(), dar, 1e-7, 1e-6);
      FBuf dm(fresh ? garbage(n) : da0);
      DVec dmr = fresh ? DVec(n, NAN) : to_d(da0);
      be::mean_backward(dm.p, DL.p, n, fresh);
      ref::mean_backward<double>(dmr.data(), dld.data(), n, fresh);
      expect_close("mean_backward" + f + sz, dm.get(), dmr, 1e-7, 1e-6);
    }
  }
}

// Several steps from the same state: the backend keeps its state in float, the reference in
// double; the differences stay at rounding level.
TEST_CASE(PARITY("rmsprop and adam, several steps") * doctest::skip(!backend_ok())) {
  for (size_t n : {size_t(1), size_t(1001), size_t(10007), size_t(70001)}) {
    const std::string sz = " n=" + std::to_string(n);
    const Vec w0 = rnd(n), ms0 = rnd(n, 0.1f, 1.0f), mom0 = rnd(n, -1e-3f, 1e-3f);
    FBuf w(w0), ms(ms0), mom(mom0);
    DVec wr = to_d(w0), msr = to_d(ms0), momr = to_d(mom0);
    const float lr = 4e-4f, decay = 0.95f, momentum = 0.9f, eps = 1e-8f;
    for (int step = 0; step < 3; ++step) {
      const Vec g = rnd(n);
      const FBuf G(g);
      be::rmsprop_step(w.p, ms.p, mom.p, G.p, n, lr, decay, momentum, eps);
      ref::rmsprop_step<double>(wr.data(), msr.data(), momr.data(), to_d(g).data(), n, lr, decay, momentum, eps);
    }
    expect_close("rmsprop w" + sz, w.get(), wr, 1e-7, 1e-6);
    expect_close("rmsprop ms" + sz, ms.get(), msr, 1e-7, 1e-6);
    expect_close("rmsprop mom" + sz, mom.get(), momr, tol(1e-9, 1e-8), 1e-5);

    // Adam from the state rmsprop left (w), steps 1, 2, 3 and then 7 (bias correction of a
    // later step)
    const Vec m0 = rnd(n, -0.1f, 0.1f), v0 = rnd(n, 0.0f, 0.1f);
    FBuf m(m0), v(v0);
    DVec mr = to_d(m0), vr = to_d(v0);
    const float alr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f;
    for (long t : {1L, 2L, 3L, 7L}) {
      const Vec g = rnd(n);
      const FBuf G(g);
      be::adam_step(w.p, m.p, v.p, G.p, n, alr, beta1, beta2, eps, t);
      ref::adam_step<double>(wr.data(), mr.data(), vr.data(), to_d(g).data(), n, alr, beta1, beta2, eps, t);
    }
    expect_close("adam w" + sz, w.get(), wr, 1e-7, 1e-6);
    expect_close("adam m" + sz, m.get(), mr, 1e-7, 1e-6);
    expect_close("adam v" + sz, v.get(), vr, 1e-7, 1e-6);
  }
}

#if !PRSR_PARITY_ON_CUDA
// Opt-in bf16 convolutions (cpu::set_bf16): inputs rounded to bf16, fp32 accumulation. Every
// output is compared with the double reference within the rounding bound of bf16 inputs: each
// rounded input carries a relative error of at most u = 2^-8 (8 significant bits, round to
// nearest), so each product w*x is off by at most (2u + u^2) |w||x| < 2^-7 |w||x|, and the
// fp32 sum of K products adds at most K 2^-24 sum |w||x|. The bound per element is therefore
// (2^-7 + K 2^-23) * S, with S = sum |w||x| the same convolution run on absolute values (by the
// reference), plus 1e-6. Where the CPU has neither AVX512_BF16 nor AMX-BF16 the case says so
// and checks that bf16 is refused with that reason (no emulation).
namespace {

void expect_within(const std::string& what, const Vec& got, const DVec& ref, const DVec& abs_ref, long k) {
  const double rel = std::ldexp(1.0, -7) + double(k) * std::ldexp(1.0, -23);
  long bad = 0;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(double(got[i]) - ref[i]), bound = rel * abs_ref[i] + 1e-6;
    if (!(err <= bound)) ++bad;
    worst = std::max(worst, err / bound);
  }
  INFO(what << ": " << bad << " of " << got.size() << " elements outside the bf16 bound; worst err/bound " << worst);
  CHECK(bad == 0);
}

DVec absd(const Vec& v) {
  DVec r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = std::abs(double(v[i]));
  return r;
}

void bf16_conv_case(const ConvGeom& g) {
  const size_t nx = size_t(g.n) * g.ci * g.h * g.w, nw = size_t(g.co) * g.ci * g.kh * g.kw;
  const size_t ny = size_t(g.n) * g.co * g.ho() * g.wo();
  const Vec x = rnd(nx), w = rnd(nw), b = rnd(g.co), dy = rnd(ny);
  const DVec xd = to_d(x), wd = to_d(w), bd = to_d(b), dyd = to_d(dy), xa = absd(x), wa = absd(w), dya = absd(dy);
  const DVec ba = absd(b);
  const FBuf X(x), W(w), B(b), DY(dy);
  const std::string tag = str(g);
  FBuf y(rnd(ny, 5, 6)), dx(Vec(nx, NAN)), dw(Vec(nw, NAN)), db(Vec(size_t(g.co), NAN));
  be::conv2d_forward(y.p, X.p, W.p, B.p, g);
  be::conv2d_backward(dx.p, dw.p, db.p, DY.p, X.p, W.p, g, 7u);  // all three fresh
  DVec y_ref(ny), y_abs(ny), dx_ref(nx, 0.0), dw_ref(nw, 0.0), db_ref(size_t(g.co), 0.0), dx_abs(nx, 0.0),
      dw_abs(nw, 0.0), db_abs(size_t(g.co), 0.0);
  ref::conv2d_forward<double>(y_ref.data(), xd.data(), wd.data(), bd.data(), g);
  ref::conv2d_forward<double>(y_abs.data(), xa.data(), wa.data(), ba.data(), g);
  ref::conv2d_backward<double>(dx_ref.data(), dw_ref.data(), db_ref.data(), dyd.data(), xd.data(), wd.data(), g);
  ref::conv2d_backward<double>(dx_abs.data(), dw_abs.data(), db_abs.data(), dya.data(), xa.data(), wa.data(), g);
  expect_within("bf16 conv2d_forward " + tag, y.get(), y_ref, y_abs, long(g.ci) * g.kh * g.kw);
  expect_within("bf16 conv2d_backward dx " + tag, dx.get(), dx_ref, dx_abs, long(g.co) * g.kh * g.kw);
  expect_within("bf16 conv2d_backward dw " + tag, dw.get(), dw_ref, dw_abs, long(g.n) * g.ho() * g.wo());
  // the bias gradient sums dy, which is rounded to bf16 too: relative bound on sum |dy|
  expect_within("bf16 conv2d_backward db " + tag, db.get(), db_ref, db_abs, long(g.n) * g.ho() * g.wo());
}

void bf16_deconv_case(const DeconvGeom& g) {
  const size_t nx = size_t(g.n) * g.ci * g.h * g.w, nw = size_t(g.co) * g.ci * g.k * g.k;
  const size_t ny = size_t(g.n) * g.co * g.ho() * g.wo();
  const Vec x = rnd(nx), w = rnd(nw), b = rnd(g.co), dy = rnd(ny);
  const DVec xd = to_d(x), wd = to_d(w), bd = to_d(b), dyd = to_d(dy), xa = absd(x), wa = absd(w), dya = absd(dy),
             ba = absd(b);
  const FBuf X(x), W(w), B(b), DY(dy);
  const std::string tag = str(g);
  FBuf y(rnd(ny, 5, 6)), dx(Vec(nx, NAN)), dw(Vec(nw, NAN)), db(Vec(size_t(g.co), NAN));
  be::deconv2d_forward(y.p, X.p, W.p, B.p, g);
  be::deconv2d_backward(dx.p, dw.p, db.p, DY.p, X.p, W.p, g, 7u);
  DVec y_ref(ny), y_abs(ny), dx_ref(nx, 0.0), dw_ref(nw, 0.0), db_ref(size_t(g.co), 0.0), dx_abs(nx, 0.0),
      dw_abs(nw, 0.0), db_abs(size_t(g.co), 0.0);
  ref::deconv2d_forward<double>(y_ref.data(), xd.data(), wd.data(), bd.data(), g);
  ref::deconv2d_forward<double>(y_abs.data(), xa.data(), wa.data(), ba.data(), g);
  ref::deconv2d_backward<double>(dx_ref.data(), dw_ref.data(), db_ref.data(), dyd.data(), xd.data(), wd.data(), g);
  ref::deconv2d_backward<double>(dx_abs.data(), dw_abs.data(), db_abs.data(), dya.data(), xa.data(), wa.data(), g);
  const long kk = long(g.k) * g.k;
  expect_within("bf16 deconv2d_forward " + tag, y.get(), y_ref, y_abs, long(g.ci) * kk);
  expect_within("bf16 deconv2d_backward dx " + tag, dx.get(), dx_ref, dx_abs, long(g.co) * kk);
  expect_within("bf16 deconv2d_backward dw " + tag, dw.get(), dw_ref, dw_abs, long(g.n) * g.h * g.w);
  expect_within("bf16 deconv2d_backward db " + tag, db.get(), db_ref, db_abs, long(g.n) * g.ho() * g.wo());
}

}  // namespace

TEST_CASE(PARITY("bf16 convolutions within the bf16 rounding bound (CPUs with AVX512_BF16 or AMX-BF16)")) {
  if (!cpu::bf16_supported()) {
    MESSAGE(
        "skipped: bf16 convolutions are not supported on this CPU: " << std::string(cpu::bf16_unsupported_reason()));
    // refused with that reason, and fp32 left in force
    CHECK_THROWS_WITH_AS(cpu::set_bf16(true), doctest::Contains("AVX512_BF16"), Error);
    CHECK_FALSE(cpu::bf16_enabled());
    return;
  }
  struct Bf16On {  // back to fp32 however the case ends (the later cases run in fp32)
    Bf16On() { cpu::set_bf16(true); }
    ~Bf16On() { cpu::set_bf16(false); }
  };
  {
    const Bf16On on;
    CHECK(cpu::bf16_enabled());
    // {n, ci, h, w, co, kh, kw, pad_t, pad_b, pad_l, pad_r}: the model's kernel shapes
    const std::vector<ConvGeom> geoms = {
        {2, 5, 9, 7, 4, 3, 3, 1, 1, 1, 1},   {2, 3, 9, 7, 5, 4, 7, 3, 0, 3, 3},   {2, 16, 16, 16, 32, 3, 5, 2, 0, 2, 2},
        {1, 5, 9, 7, 10, 1, 3, 0, 0, 2, 0},  {2, 32, 8, 8, 64, 1, 1, 0, 0, 0, 0}, {1, 24, 5, 3, 300, 1, 1, 0, 0, 0, 0},
        {2, 300, 3, 5, 7, 1, 1, 0, 0, 0, 0},
    };
    for (const auto& g : geoms) bf16_conv_case(g);
    bf16_deconv_case(DeconvGeom{2, 5, 4, 3, 6, 3, 2, 1, 1});  // the conditioning net's upsampling
  }
  CHECK_FALSE(cpu::bf16_enabled());
}
#endif
