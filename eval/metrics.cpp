#include "eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "engine/error.h"

namespace prsr::eval {

namespace {

void check_image(const char* fn, const void* p, int w, int h, int C) {
  const std::string f(fn);
  check(p != nullptr, f + ": null image pointer");
  check(w > 0 && h > 0, f + ": image size must be positive, got " + std::to_string(w) + "x" + std::to_string(h));
  check(C == 1 || C == 3, f + ": channels must be 1 or 3, got " + std::to_string(C));
}

constexpr int kWin = 11;        // SSIM window side
constexpr double kSigma = 1.5;  // SSIM Gaussian sigma
constexpr double kL = 255.0;
constexpr double kC1 = (0.01 * kL) * (0.01 * kL);
constexpr double kC2 = (0.03 * kL) * (0.03 * kL);

}  // namespace

double psnr(const uint8_t* a, const uint8_t* b, int w, int h, int C) {
  check_image("psnr", a, w, h, C);
  check_image("psnr", b, w, h, C);
  const long n = static_cast<long>(w) * h * C;
  double sse = 0.0;
  for (long i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    sse += d * d;
  }
  if (sse == 0.0) return std::numeric_limits<double>::infinity();
  const double mse = sse / static_cast<double>(n);
  return 10.0 * std::log10(kL * kL / mse);
}

double psnr_capped(const uint8_t* a, const uint8_t* b, int w, int h, int C) {
  return std::min(psnr(a, b, w, h, C), kPsnrCap);
}

double ssim(const uint8_t* a, const uint8_t* b, int w, int h, int C) {
  check_image("ssim", a, w, h, C);
  check_image("ssim", b, w, h, C);
  check(w >= kWin && h >= kWin,
        "ssim: image must be at least 11x11, got " + std::to_string(w) + "x" + std::to_string(h));
  // Separable normalised Gaussian: g1 sums to 1, so the 2-D product g1[i]*g1[j] sums to 1.
  double g1[kWin];
  double gsum = 0.0;
  for (int i = 0; i < kWin; ++i) {
    const double d = i - (kWin - 1) / 2;
    g1[i] = std::exp(-(d * d) / (2.0 * kSigma * kSigma));
    gsum += g1[i];
  }
  for (double& g : g1) g /= gsum;
  double g2[kWin][kWin];
  for (int j = 0; j < kWin; ++j)
    for (int i = 0; i < kWin; ++i) g2[j][i] = g1[j] * g1[i];

  const int pw = w - kWin + 1, ph = h - kWin + 1;
  double total = 0.0;
  for (int c = 0; c < C; ++c) {
    double chan = 0.0;
    for (int py = 0; py < ph; ++py) {
      for (int px = 0; px < pw; ++px) {
        // Two-pass weighted moments: means first, then centred (co)variances.
        double mu1 = 0.0, mu2 = 0.0;
        for (int j = 0; j < kWin; ++j) {
          for (int i = 0; i < kWin; ++i) {
            const long idx = (static_cast<long>(py + j) * w + (px + i)) * C + c;
            mu1 += g2[j][i] * a[idx];
            mu2 += g2[j][i] * b[idx];
          }
        }
        double s11 = 0.0, s22 = 0.0, s12 = 0.0;
        for (int j = 0; j < kWin; ++j) {
          for (int i = 0; i < kWin; ++i) {
            const long idx = (static_cast<long>(py + j) * w + (px + i)) * C + c;
            const double d1 = a[idx] - mu1, d2 = b[idx] - mu2;
            s11 += g2[j][i] * d1 * d1;
            s22 += g2[j][i] * d2 * d2;
            s12 += g2[j][i] * d1 * d2;
          }
        }
        const double num = (2.0 * mu1 * mu2 + kC1) * (2.0 * s12 + kC2);
        const double den = (mu1 * mu1 + mu2 * mu2 + kC1) * (s11 + s22 + kC2);
        chan += num / den;
      }
    }
    total += chan / (static_cast<double>(pw) * ph);
  }
  return total / C;
}

double consistency(const uint8_t* x, int xw, int xh, const uint8_t* y, int C) {
  check_image("consistency", x, xw, xh, C);
  check(y != nullptr, "consistency: null image pointer");
  const int yw = 4 * xw;
  double sse = 0.0;
  for (int by = 0; by < xh; ++by) {
    for (int bx = 0; bx < xw; ++bx) {
      for (int c = 0; c < C; ++c) {
        int sum = 0;  // exact: at most 16*255
        for (int j = 0; j < 4; ++j)
          for (int i = 0; i < 4; ++i) sum += y[(static_cast<long>(4 * by + j) * yw + (4 * bx + i)) * C + c];
        const double mean = static_cast<double>(sum) / (16.0 * 255.0);
        const double xv = x[(static_cast<long>(by) * xw + bx) * C + c] / 255.0;
        const double d = xv - mean;
        sse += d * d;
      }
    }
  }
  return sse / (static_cast<double>(xw) * xh * C);
}

void MetricSums::add(double p, double s, double c) {
  psnr += std::min(p, kPsnrCap);
  ssim += s;
  consistency += c;
  ++count;
}

namespace {
double mean_of(double sum, long count) {
  return count > 0 ? sum / static_cast<double>(count) : std::numeric_limits<double>::quiet_NaN();
}
}  // namespace

double MetricSums::mean_psnr() const { return mean_of(psnr, count); }
double MetricSums::mean_ssim() const { return mean_of(ssim, count); }
double MetricSums::mean_consistency() const { return mean_of(consistency, count); }

}  // namespace prsr::eval
