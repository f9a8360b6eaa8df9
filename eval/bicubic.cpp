#include "eval/bicubic.h"

#include <cmath>
#include <string>
#include <vector>

#include "engine/error.h"

namespace prsr::eval {

namespace {

void check_args(const char* fn, const uint8_t* x, int w, int h, int C, int scale, const uint8_t* out) {
  const std::string f(fn);
  check(x != nullptr && out != nullptr, f + ": null image pointer");
  check(w > 0 && h > 0, f + ": image size must be positive, got " + std::to_string(w) + "x" + std::to_string(h));
  check(C == 1 || C == 3, f + ": channels must be 1 or 3, got " + std::to_string(C));
  check(scale >= 1, f + ": scale must be >= 1, got " + std::to_string(scale));
}

constexpr double kA = -0.5;

// Keys (1981) cubic convolution kernel.
double keys(double t) {
  t = std::fabs(t);
  if (t <= 1.0) return ((kA + 2.0) * t - (kA + 3.0)) * t * t + 1.0;
  if (t < 2.0) return ((kA * t - 5.0 * kA) * t + 8.0 * kA) * t - 4.0 * kA;
  return 0.0;
}

// For each output coordinate: 4 clamped source indices and their weights.
struct Taps {
  int idx[4];
  double wt[4];
};

std::vector<Taps> make_taps(int n_in, int scale) {
  std::vector<Taps> taps(static_cast<size_t>(n_in) * scale);
  for (int d = 0; d < n_in * scale; ++d) {
    const double src = (d + 0.5) / scale - 0.5;
    const double f = std::floor(src);
    const double t = src - f;
    const int i0 = static_cast<int>(f);
    Taps& tp = taps[d];
    for (int k = 0; k < 4; ++k) {
      int i = i0 - 1 + k;
      i = i < 0 ? 0 : (i >= n_in ? n_in - 1 : i);
      tp.idx[k] = i;
      tp.wt[k] = keys(t - (k - 1));  // distances t+1, t, 1-t, 2-t
    }
  }
  return taps;
}

}  // namespace

void bicubic_upsample(const uint8_t* x, int w, int h, int C, int scale, uint8_t* out) {
  check_args("bicubic_upsample", x, w, h, C, scale, out);
  const int ow = w * scale, oh = h * scale;
  const std::vector<Taps> tx = make_taps(w, scale), ty = make_taps(h, scale);
  // Horizontal pass into a double buffer (ow x h x C), then vertical pass.
  std::vector<double> mid(static_cast<size_t>(ow) * h * C);
  for (int y = 0; y < h; ++y)
    for (int ox = 0; ox < ow; ++ox)
      for (int c = 0; c < C; ++c) {
        double v = 0.0;
        for (int k = 0; k < 4; ++k) v += tx[ox].wt[k] * x[(static_cast<size_t>(y) * w + tx[ox].idx[k]) * C + c];
        mid[(static_cast<size_t>(y) * ow + ox) * C + c] = v;
      }
  for (int oy = 0; oy < oh; ++oy)
    for (int ox = 0; ox < ow; ++ox)
      for (int c = 0; c < C; ++c) {
        double v = 0.0;
        for (int k = 0; k < 4; ++k) v += ty[oy].wt[k] * mid[(static_cast<size_t>(ty[oy].idx[k]) * ow + ox) * C + c];
        double r = std::floor(v + 0.5);  // round half up
        r = r < 0.0 ? 0.0 : (r > 255.0 ? 255.0 : r);
        out[(static_cast<size_t>(oy) * ow + ox) * C + c] = static_cast<uint8_t>(r);
      }
}

void nearest_upsample(const uint8_t* x, int w, int h, int C, int scale, uint8_t* out) {
  check_args("nearest_upsample", x, w, h, C, scale, out);
  const int ow = w * scale, oh = h * scale;
  for (int oy = 0; oy < oh; ++oy)
    for (int ox = 0; ox < ow; ++ox)
      for (int c = 0; c < C; ++c)
        out[(static_cast<size_t>(oy) * ow + ox) * C + c] =
            x[(static_cast<size_t>(oy / scale) * w + ox / scale) * C + c];
}

}  // namespace prsr::eval
