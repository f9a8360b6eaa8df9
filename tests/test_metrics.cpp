// Tests for eval/metrics.{h,cpp} and eval/bicubic.{h,cpp} (docs/metrics.md).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "engine/error.h"
#include "eval/bicubic.h"
#include "eval/metrics.h"

using namespace prsr::eval;

namespace {

std::vector<uint8_t> random_image(int w, int h, int C, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(0, 255);
  std::vector<uint8_t> v(static_cast<size_t>(w) * h * C);
  for (auto& x : v) x = static_cast<uint8_t>(d(rng));
  return v;
}

// Independent SSIM for the tests: direct 2-D Gaussian exp(-(dx^2+dy^2)/(2*1.5^2)) normalised
// over the 11x11 window, one-pass moments E[xy] - mu_x mu_y, loop over all valid positions.
double ref_ssim(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, int w, int h, int C) {
  double g[11][11], gs = 0;
  for (int j = 0; j < 11; ++j)
    for (int i = 0; i < 11; ++i) {
      g[j][i] = std::exp(-((j - 5.0) * (j - 5.0) + (i - 5.0) * (i - 5.0)) / 4.5);
      gs += g[j][i];
    }
  const double C1 = 2.55 * 2.55, C2 = 7.65 * 7.65;
  double total = 0;
  for (int c = 0; c < C; ++c) {
    double sum = 0;
    int n = 0;
    for (int py = 0; py + 11 <= h; ++py)
      for (int px = 0; px + 11 <= w; ++px) {
        double ex = 0, ey = 0, exx = 0, eyy = 0, exy = 0;
        for (int j = 0; j < 11; ++j)
          for (int i = 0; i < 11; ++i) {
            const double wt = g[j][i] / gs;
            const double x = a[((py + j) * w + px + i) * C + c];
            const double y = b[((py + j) * w + px + i) * C + c];
            ex += wt * x;
            ey += wt * y;
            exx += wt * x * x;
            eyy += wt * y * y;
            exy += wt * x * y;
          }
        const double vx = exx - ex * ex, vy = eyy - ey * ey, cxy = exy - ex * ey;
        sum += (2 * ex * ey + C1) * (2 * cxy + C2) / ((ex * ex + ey * ey + C1) * (vx + vy + C2));
        ++n;
      }
    total += sum / n;
  }
  return total / C;
}

}  // namespace

// ---------------------------------------------------------------- PSNR

TEST_CASE("metrics: psnr of identical images is +infinity, capped at kPsnrCap") {
  auto a = random_image(32, 32, 3, 1);
  const double p = psnr(a.data(), a.data(), 32, 32, 3);
  CHECK(std::isinf(p));
  CHECK(p > 0);
  CHECK(psnr_capped(a.data(), a.data(), 32, 32, 3) == kPsnrCap);
  CHECK(kPsnrCap == 100.0);
}

TEST_CASE("metrics: psnr of a constant shift d is 10*log10(255^2/d^2)") {
  for (int d : {1, 3, 17, 100}) {
    std::vector<uint8_t> a(32 * 32 * 3), b(a.size());
    for (size_t i = 0; i < a.size(); ++i) {
      a[i] = static_cast<uint8_t>(i % 120);
      b[i] = static_cast<uint8_t>(a[i] + d);
    }
    const double expect = 10.0 * std::log10(255.0 * 255.0 / (double(d) * d));
    CHECK(psnr(a.data(), b.data(), 32, 32, 3) == doctest::Approx(expect).epsilon(1e-14));
    CHECK(psnr(b.data(), a.data(), 32, 32, 3) == doctest::Approx(expect).epsilon(1e-14));
  }
  // d = 255 on every value: MSE = 255^2 -> exactly 0 dB.
  std::vector<uint8_t> z(16, 0), f(16, 255);
  CHECK(psnr(z.data(), f.data(), 4, 4, 1) == doctest::Approx(0.0));
}

TEST_CASE("metrics: psnr hand-computed 2x2 pair") {
  // Errors 1, 2, 0, 3 -> squared 1, 4, 0, 9 -> MSE = 14/4 = 3.5.
  const uint8_t a[4] = {0, 10, 20, 30};
  const uint8_t b[4] = {1, 12, 20, 27};
  const double expect = 10.0 * std::log10(65025.0 / 3.5);  // 42.6901...
  CHECK(psnr(a, b, 2, 2, 1) == doctest::Approx(expect).epsilon(1e-14));
  CHECK(expect == doctest::Approx(42.69010).epsilon(1e-6));
  // 2x2x3 with the pair repeated three times has the same MSE.
  uint8_t a3[12], b3[12];
  for (int i = 0; i < 12; ++i) {
    a3[i] = a[i % 4];
    b3[i] = b[i % 4];
  }
  CHECK(psnr(a3, b3, 2, 2, 3) == doctest::Approx(expect).epsilon(1e-14));
}

TEST_CASE("metrics: psnr and ssim reject bad arguments") {
  std::vector<uint8_t> a(32 * 32 * 3, 0);
  CHECK_THROWS_AS(psnr(a.data(), a.data(), 32, 32, 2), prsr::Error);
  CHECK_THROWS_AS(psnr(a.data(), a.data(), 0, 32, 1), prsr::Error);
  CHECK_THROWS_AS(psnr(nullptr, a.data(), 32, 32, 1), prsr::Error);
  CHECK_THROWS_AS(ssim(a.data(), a.data(), 10, 32, 1), prsr::Error);
  CHECK_THROWS_AS(ssim(a.data(), a.data(), 32, 32, 4), prsr::Error);
  CHECK_NOTHROW(ssim(a.data(), a.data(), 11, 11, 3));
  CHECK_THROWS_AS(consistency(a.data(), 8, 8, a.data(), 0), prsr::Error);
}

// ---------------------------------------------------------------- SSIM

TEST_CASE("metrics: ssim of identical images is 1") {
  for (int C : {1, 3}) {
    auto a = random_image(32, 32, C, 7 + C);
    CHECK(std::fabs(ssim(a.data(), a.data(), 32, 32, C) - 1.0) < 1e-12);
  }
}

TEST_CASE("metrics: ssim of two constant images is the luminance term only") {
  // Both variances and the covariance are 0, so the contrast-structure term is C2/C2 = 1 and
  // SSIM = (2*mu1*mu2 + C1) / (mu1^2 + mu2^2 + C1) with C1 = (0.01*255)^2 = 6.5025.
  const double C1 = 6.5025;
  struct P {
    int m1, m2;
  };
  for (P p : {P{100, 120}, P{0, 255}, P{30, 31}}) {
    std::vector<uint8_t> a(32 * 32 * 3, uint8_t(p.m1)), b(a.size(), uint8_t(p.m2));
    const double expect = (2.0 * p.m1 * p.m2 + C1) / (double(p.m1) * p.m1 + double(p.m2) * p.m2 + C1);
    CHECK(ssim(a.data(), b.data(), 32, 32, 3) == doctest::Approx(expect).epsilon(1e-12));
  }
  // Pinned: 100 vs 120 -> 24006.5025 / 24406.5025 = 0.98361...
  std::vector<uint8_t> a(32 * 32, 100), b(32 * 32, 120);
  CHECK(ssim(a.data(), b.data(), 32, 32, 1) == doctest::Approx(0.9836109).epsilon(1e-6));
}

TEST_CASE("metrics: ssim matches an independent double-loop implementation") {
  SUBCASE("11x11, single window position, grey and colour") {
    for (int C : {1, 3}) {
      auto a = random_image(11, 11, C, 21 + C);
      auto b = a;
      std::mt19937 rng(5);
      for (auto& v : b) v = static_cast<uint8_t>(std::min(255, std::max(0, int(v) + int(rng() % 61) - 30)));
      const double r = ref_ssim(a, b, 11, 11, C);
      CHECK(r < 0.99);  // the pair is genuinely different
      CHECK(ssim(a.data(), b.data(), 11, 11, C) == doctest::Approx(r).epsilon(1e-10));
    }
  }
  SUBCASE("32x32x3, 22x22 valid positions") {
    auto a = random_image(32, 32, 3, 77);
    auto b = random_image(32, 32, 3, 78);
    const double r = ref_ssim(a, b, 32, 32, 3);
    CHECK(ssim(a.data(), b.data(), 32, 32, 3) == doctest::Approx(r).epsilon(1e-10));
  }
  SUBCASE("non-square 13x17 smooth pair (not just noise)") {
    std::vector<uint8_t> a(13 * 17), b(13 * 17);
    for (int y = 0; y < 17; ++y)
      for (int x = 0; x < 13; ++x) {
        a[y * 13 + x] = static_cast<uint8_t>(10 * x + 5 * y);
        b[y * 13 + x] = static_cast<uint8_t>(std::min(255, 12 * x + 4 * y + (x * y) % 7));
      }
    const double r = ref_ssim(a, b, 13, 17, 1);
    CHECK(ssim(a.data(), b.data(), 13, 17, 1) == doctest::Approx(r).epsilon(1e-10));
  }
}

TEST_CASE("metrics: ssim lies in [-1,1], is symmetric, and is negative for an inverted image") {
  auto a = random_image(32, 32, 3, 3);
  auto b = random_image(32, 32, 3, 4);
  std::vector<uint8_t> inv(a.size());
  for (size_t i = 0; i < a.size(); ++i) inv[i] = static_cast<uint8_t>(255 - a[i]);
  const double ab = ssim(a.data(), b.data(), 32, 32, 3);
  const double ba = ssim(b.data(), a.data(), 32, 32, 3);
  const double ai = ssim(a.data(), inv.data(), 32, 32, 3);
  CHECK(ab >= -1.0);
  CHECK(ab <= 1.0);
  CHECK(ab < 0.2);  // independent noise images are nearly unrelated
  CHECK(std::fabs(ab - ba) < 1e-14);
  CHECK(ai < -0.5);
  CHECK(ai >= -1.0);
}

// ---------------------------------------------------------------- consistency

TEST_CASE("metrics: consistency is zero for a nearest-upsampled input") {
  auto x = random_image(8, 8, 3, 11);
  std::vector<uint8_t> y(32 * 32 * 3);
  nearest_upsample(x.data(), 8, 8, 3, 4, y.data());
  CHECK(consistency(x.data(), 8, 8, y.data(), 3) == 0.0);
  // Moving one value by one level breaks it.
  y[(5 * 32 + 9) * 3 + 2] = static_cast<uint8_t>(y[(5 * 32 + 9) * 3 + 2] ^ 1);
  CHECK(consistency(x.data(), 8, 8, y.data(), 3) > 0.0);
}

TEST_CASE("metrics: consistency is zero for varying blocks that average exactly to x") {
  auto x = random_image(8, 8, 3, 12);
  for (auto& v : x) v = static_cast<uint8_t>(8 + v % 240);  // keep +-8 in range
  std::vector<uint8_t> y(32 * 32 * 3);
  // Offsets within each 4x4 block sum to zero: +8,-8 alternate, with a twist per channel.
  const int off[4][4] = {{8, -8, 3, -3}, {-8, 8, -3, 3}, {5, -5, 7, -7}, {-5, 5, -7, 7}};
  for (int Y = 0; Y < 32; ++Y)
    for (int X = 0; X < 32; ++X)
      for (int c = 0; c < 3; ++c) {
        const int o = off[(Y + c) % 4][X % 4];
        y[(Y * 32 + X) * 3 + c] = static_cast<uint8_t>(x[((Y / 4) * 8 + X / 4) * 3 + c] + o);
      }
  CHECK(consistency(x.data(), 8, 8, y.data(), 3) == 0.0);
  CHECK(psnr(y.data(), y.data(), 32, 32, 3) > 0);  // y is not degenerate
}

TEST_CASE("metrics: consistency hand-computed non-zero cases") {
  // 1x1 grey: x = 100, y = 4x4 of 100 with one value 116 -> block mean 101 -> diff 1/255.
  {
    const uint8_t x[1] = {100};
    uint8_t y[16];
    for (auto& v : y) v = 100;
    y[5] = 116;
    CHECK(consistency(x, 1, 1, y, 1) == doctest::Approx(1.0 / 65025.0).epsilon(1e-14));
  }
  // 2x1 colour: only block (1,0), channel 1 (x = 50), is off: 8 of its 16 values are 56
  // (+6) -> block mean 53, off by 3 levels. MSE = (3/255)^2 / (2*1*3 values).
  {
    const uint8_t x[6] = {10, 20, 30, 40, 50, 60};
    std::vector<uint8_t> y(8 * 4 * 3);
    nearest_upsample(x, 2, 1, 3, 4, y.data());
    for (int Y = 0; Y < 4; ++Y)
      for (int X = 4; X < 6; ++X) y[(Y * 8 + X) * 3 + 1] = static_cast<uint8_t>(50 + 6);
    const double expect = (3.0 / 255.0) * (3.0 / 255.0) / 6.0;
    CHECK(consistency(x, 2, 1, y.data(), 3) == doctest::Approx(expect).epsilon(1e-14));
  }
  // Extremes: x all 0, y all 255 -> exactly 1 (the top of the [0,1] range).
  {
    std::vector<uint8_t> x(4, 0), y(64, 255);
    CHECK(consistency(x.data(), 2, 2, y.data(), 1) == doctest::Approx(1.0));
  }
}

// ---------------------------------------------------------------- aggregation

TEST_CASE("metrics: MetricSums averages and caps infinite psnr") {
  MetricSums m;
  CHECK(std::isnan(m.mean_psnr()));
  m.add(30.0, 0.5, 0.01);
  m.add(std::numeric_limits<double>::infinity(), 1.0, 0.0);
  m.add(20.0, 0.6, 0.02);
  CHECK(m.count == 3);
  CHECK(m.mean_psnr() == doctest::Approx((30.0 + 100.0 + 20.0) / 3));
  CHECK(m.mean_ssim() == doctest::Approx(2.1 / 3));
  CHECK(m.mean_consistency() == doctest::Approx(0.01));
}

// ---------------------------------------------------------------- upsamplers

TEST_CASE("metrics: bicubic keeps a constant image constant") {
  for (int v : {0, 1, 77, 128, 254, 255})
    for (int scale : {1, 2, 3, 4}) {
      std::vector<uint8_t> x(5 * 4 * 3, uint8_t(v)), out(5 * 4 * 3 * scale * scale, 0);
      bicubic_upsample(x.data(), 5, 4, 3, scale, out.data());
      for (uint8_t o : out) REQUIRE(int(o) == v);
    }
}

// Keys kernel, a = -0.5:  W(t) = 1.5|t|^3 - 2.5|t|^2 + 1 (|t|<=1),
//                         W(t) = -0.5|t|^3 + 2.5|t|^2 - 4|t| + 2 (1<|t|<2).
// Scale 4: src = (dst + 0.5)/4 - 0.5 = dst/4 - 0.375, so the fractional offset t cycles through
// 0.625 (dst%4 == 0, i0 = dst/4 - 1), 0.875, 0.125, 0.375 (dst%4 == 1..3, i0 = dst/4).
// Taps i0-1, i0, i0+1, i0+2 get W(t+1), W(t), W(1-t), W(2-t); in units of 1/1024:
//   t = 0.125: W(1.125) = -49, W(0.125) = 987, W(0.875) =  93, W(1.875) =  -7
//     (1.5/512 - 2.5/64 + 1 = 0.9638671875 = 987/1024, etc.; each row sums to 1024)
//   t = 0.875: W(1.875) =  -7, W(0.875) =  93, W(0.125) = 987, W(1.125) = -49
//   t = 0.625: W(1.625) = -45, W(0.625) = 399, W(0.375) = 745, W(1.375) = -75
// All weights are exact dyadic fractions, so the double arithmetic is exact here.

TEST_CASE("metrics: bicubic hand-computed pixels (scale 4)") {
  SUBCASE("1-D row, interior: dst x = 2 -> src 0.125, taps -1(clamped to 0),0,1,2") {
    // Rows identical, so the vertical pass is the identity.
    const uint8_t row[4] = {10, 50, 200, 30};
    std::vector<uint8_t> x(4 * 4), out(16 * 16);
    for (int y = 0; y < 4; ++y)
      for (int i = 0; i < 4; ++i) x[y * 4 + i] = row[i];
    bicubic_upsample(x.data(), 4, 4, 1, 4, out.data());
    // (-49*10 + 987*10 + 93*50 - 7*200)/1024 = 12630/1024 = 12.33 -> 12
    for (int y = 0; y < 16; ++y) CHECK(int(out[y * 16 + 2]) == 12);
  }
  SUBCASE("border replication: dst x = 0 -> src -0.375, taps -2,-1,0 all clamp to 0") {
    const uint8_t row[4] = {100, 20, 0, 0};
    std::vector<uint8_t> x(4 * 2), out(16 * 8);
    for (int y = 0; y < 2; ++y)
      for (int i = 0; i < 4; ++i) x[y * 4 + i] = row[i];
    bicubic_upsample(x.data(), 4, 2, 1, 4, out.data());
    // ((-45+399+745)*100 - 75*20)/1024 = 108400/1024 = 105.86 -> 106 (overshoot above 100)
    CHECK(int(out[0]) == 106);
    CHECK(int(out[7 * 16]) == 106);
  }
  SUBCASE("2-D pixel (dst x=6, dst y=9) of a 4x4 image") {
    // x: src 1.125 -> i0 = 1, t = 0.125 -> cols 0..3 weights {-49, 987, 93, -7}
    // y: src 1.875 -> i0 = 1, t = 0.875 -> rows 0..3 weights {-7, 93, 987, -49}
    const uint8_t img[16] = {12, 200, 45, 90, 7, 130, 255, 60, 88, 33, 170, 240, 150, 20, 99, 5};
    const long wx[4] = {-49, 987, 93, -7}, wy[4] = {-7, 93, 987, -49};
    long s = 0;
    for (int j = 0; j < 4; ++j)
      for (int i = 0; i < 4; ++i) s += wy[j] * wx[i] * img[j * 4 + i];
    CHECK(s == 53446202);  // / 1024^2 = 50.970... -> 51
    std::vector<uint8_t> out(16 * 16);
    bicubic_upsample(img, 4, 4, 1, 4, out.data());
    CHECK(int(out[9 * 16 + 6]) == 51);
    // (0,0): weights {1099, -75} on rows/cols 0,1 -> -1837113/1024^2 = -1.75 -> clamped to 0.
    CHECK(int(out[0]) == 0);
  }
  SUBCASE("exact half rounds up") {
    // Row {0, 11, 73, 0}, dst x = 2: (938*0 + 93*11 - 7*73)/1024 = 512/1024 = 0.5 -> 1.
    const uint8_t row[4] = {0, 11, 73, 0};
    std::vector<uint8_t> x(4 * 4), out(16 * 16);
    for (int y = 0; y < 4; ++y)
      for (int i = 0; i < 4; ++i) x[y * 4 + i] = row[i];
    bicubic_upsample(x.data(), 4, 4, 1, 4, out.data());
    CHECK(int(out[5 * 16 + 2]) == 1);
  }
  SUBCASE("channels are independent (C = 3)") {
    const uint8_t row[4] = {10, 50, 200, 30};
    std::vector<uint8_t> x(4 * 4 * 3), out(16 * 16 * 3);
    for (int y = 0; y < 4; ++y)
      for (int i = 0; i < 4; ++i) {
        x[(y * 4 + i) * 3 + 0] = row[i];
        x[(y * 4 + i) * 3 + 1] = 9;
        x[(y * 4 + i) * 3 + 2] = row[3 - i];
      }
    bicubic_upsample(x.data(), 4, 4, 3, 4, out.data());
    CHECK(int(out[2 * 3 + 0]) == 12);
    CHECK(int(out[2 * 3 + 1]) == 9);
    // mirrored row: out x = 13 is the mirror of x = 2 -> also 12
    CHECK(int(out[13 * 3 + 2]) == 12);
  }
}

TEST_CASE("metrics: bicubic reproduces a linear ramp away from the borders") {
  // f(i, j) = 10 + 3 i + 5 j on an 8x8 image; output pixels whose 4 taps are all inside the
  // image (src in [1, 6)) must equal f(src_x, src_y) rounded half up. With scale 4 every value
  // is an exact multiple of 1/8 so the comparison is exact.
  const int w = 8, h = 8, s = 4;
  std::vector<uint8_t> x(w * h), out(w * s * h * s);
  for (int j = 0; j < h; ++j)
    for (int i = 0; i < w; ++i) x[j * w + i] = static_cast<uint8_t>(10 + 3 * i + 5 * j);
  bicubic_upsample(x.data(), w, h, 1, s, out.data());
  int checked = 0;
  for (int oy = 0; oy < h * s; ++oy)
    for (int ox = 0; ox < w * s; ++ox) {
      const double sx = (ox + 0.5) / s - 0.5, sy = (oy + 0.5) / s - 0.5;
      if (sx < 1.0 || sx >= w - 2 || sy < 1.0 || sy >= h - 2) continue;
      const double f = 10 + 3 * sx + 5 * sy;
      REQUIRE(int(out[oy * w * s + ox]) == int(std::floor(f + 0.5)));
      ++checked;
    }
  CHECK(checked == 20 * 20);
}

TEST_CASE("metrics: nearest_upsample repeats pixels and bicubic scale 1 is the identity") {
  auto x = random_image(3, 2, 3, 40);
  std::vector<uint8_t> out(9 * 6 * 3), id(x.size());
  nearest_upsample(x.data(), 3, 2, 3, 3, out.data());
  for (int Y = 0; Y < 6; ++Y)
    for (int X = 0; X < 9; ++X)
      for (int c = 0; c < 3; ++c) REQUIRE(out[(Y * 9 + X) * 3 + c] == x[((Y / 3) * 3 + X / 3) * 3 + c]);
  bicubic_upsample(x.data(), 3, 2, 3, 1, id.data());
  CHECK(id == x);
  CHECK_THROWS_AS(bicubic_upsample(x.data(), 3, 2, 3, 0, id.data()), prsr::Error);
  CHECK_THROWS_AS(nearest_upsample(x.data(), 3, 2, 2, 2, out.data()), prsr::Error);
}
