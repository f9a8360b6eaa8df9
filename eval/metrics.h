// Evaluation metrics (docs/design.md section 4; docs/metrics.md has the exact definitions).
// Images are uint8, HWC interleaved (index (y*w + x)*C + c), C = 1 or 3.
#pragma once
#include <cstdint>

namespace prsr::eval {

// PSNR is +infinity for identical images; per-image values are capped at kPsnrCap before they
// are averaged over a data set (psnr_capped, MetricSums::add).
constexpr double kPsnrCap = 100.0;

// 10*log10(255^2 / MSE), MSE over all w*h*C values on the 0..255 scale; +inf if a == b.
double psnr(const uint8_t* a, const uint8_t* b, int w, int h, int C);
// min(psnr(...), kPsnrCap): the value used for averaging.
double psnr_capped(const uint8_t* a, const uint8_t* b, int w, int h, int C);

// SSIM (Wang et al. 2004): 11x11 Gaussian window (sigma 1.5, normalised), K1 = 0.01,
// K2 = 0.03, L = 255, "valid" window positions only ((w-10)x(h-10)), mean over positions,
// then mean over colour channels. Needs w >= 11 and h >= 11.
double ssim(const uint8_t* a, const uint8_t* b, int w, int h, int C);

// x is xw x xh x C, y is (4*xw) x (4*xh) x C. MSE over the xw*xh*C values between x/255 and
// the exact (unrounded) mean of the 4x4 block of y/255 above each value. In [0,1].
double consistency(const uint8_t* x, int xw, int xh, const uint8_t* y, int C);

// Data-set aggregation: plain means of per-image values; PSNR capped at kPsnrCap on add().
// Means are NaN when count == 0.
struct MetricSums {
  double psnr = 0, ssim = 0, consistency = 0;
  long count = 0;
  void add(double p, double s, double c);
  double mean_psnr() const;
  double mean_ssim() const;
  double mean_consistency() const;
};

}  // namespace prsr::eval
