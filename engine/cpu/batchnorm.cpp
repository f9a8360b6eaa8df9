// Batch norm over (n, hw) per channel. One channel per OpenMP iteration: every statistic is
// reduced by one thread in a fixed order (an `omp simd` reduction over each hw row, rows in
// batch order), so results do not depend on the thread count. Statistics accumulate in double;
// a channel's n*hw values (128 KiB at the model's shapes) stay in L2 across the passes.
#include <cmath>

#include "engine/backend.h"

namespace prsr::cpu {

namespace {

// sum_p x[p] in double
inline double row_sum(const float* x, int hw) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int p = 0; p < hw; ++p) s += double(x[p]);
  return s;
}

// sum_p (x[p] - mu)^2 in double
inline double row_sq_dev(const float* x, double mu, int hw) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int p = 0; p < hw; ++p) {
    const double d = double(x[p]) - mu;
    s += d * d;
  }
  return s;
}

// y = (x - mean) * invstd * gamma + beta, in float as the reference
void normalise(float* y, const float* x, float mean, float invstd, float gamma, float beta, int n, int c, int hw,
               int ch) {
  for (int b = 0; b < n; ++b) {
    const size_t o = (size_t(b) * c + ch) * hw;
#pragma omp simd
    for (int p = 0; p < hw; ++p) y[o + p] = (x[o + p] - mean) * invstd * gamma + beta;
  }
}

}  // namespace

}  // namespace prsr::cpu

namespace prsr {

void cpu::batchnorm_forward_train(float* y, float* mean, float* invstd, float* running_mean, float* running_var,
                                  const float* x, const float* gamma, const float* beta, int n, int c, int hw,
                                  float momentum, float eps) {
  const double m = double(n) * hw;
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < c; ++ch) {
    double s = 0;
    for (int b = 0; b < n; ++b) s += row_sum(x + (size_t(b) * c + ch) * hw, hw);
    const double mu = s / m;
    double v = 0;
    for (int b = 0; b < n; ++b) v += row_sq_dev(x + (size_t(b) * c + ch) * hw, mu, hw);
    const double var = v / m;  // biased: used to normalise
    mean[ch] = float(mu);
    invstd[ch] = float(1.0 / std::sqrt(var + double(eps)));
    normalise(y, x, mean[ch], invstd[ch], gamma[ch], beta[ch], n, c, hw, ch);
    const double unbiased = m > 1 ? v / (m - 1) : var;  // running_var gets the unbiased one
    running_mean[ch] = float((1 - double(momentum)) * double(running_mean[ch]) + double(momentum) * mu);
    running_var[ch] = float((1 - double(momentum)) * double(running_var[ch]) + double(momentum) * unbiased);
  }
}

void cpu::batchnorm_forward_eval(float* y, float* mean, float* invstd, const float* running_mean,
                                 const float* running_var, const float* x, const float* gamma, const float* beta, int n,
                                 int c, int hw, float eps) {
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < c; ++ch) {
    mean[ch] = running_mean[ch];
    invstd[ch] = 1.0f / std::sqrt(running_var[ch] + eps);
    normalise(y, x, mean[ch], invstd[ch], gamma[ch], beta[ch], n, c, hw, ch);
  }
}

// xhat = (x - mean) * invstd; y = gamma * xhat + beta.
//   dgamma += sum dy * xhat;  dbeta += sum dy
//   training:   dx += gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
//   evaluation: dx += gamma * invstd * dy
void cpu::batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                             const float* gamma, const float* mean, const float* invstd, int n, int c, int hw,
                             bool training, unsigned fresh) {
  const double m = double(n) * hw;
  const bool fx = fresh & 1u;  // a fresh dx is overwritten; fresh dgamma / dbeta likewise
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < c; ++ch) {
    const float mu = mean[ch], is = invstd[ch];
    double sdy = 0, sdyx = 0;
    if (dgamma || dbeta || (dx && training)) {
      for (int b = 0; b < n; ++b) {
        const size_t o = (size_t(b) * c + ch) * hw;
        double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
        for (int p = 0; p < hw; ++p) {
          const double d = double(dy[o + p]);
          s1 += d;
          s2 += d * double((x[o + p] - mu) * is);
        }
        sdy += s1;
        sdyx += s2;
      }
    }
    if (dgamma) dgamma[ch] = (fresh & 2u ? 0.0f : dgamma[ch]) + float(sdyx);
    if (dbeta) dbeta[ch] = (fresh & 4u ? 0.0f : dbeta[ch]) + float(sdy);
    if (!dx) continue;
    const float k = gamma[ch] * is;
    const float mdy = training ? float(sdy / m) : 0.0f;
    const float mdyx = training ? float(sdyx / m) : 0.0f;
    for (int b = 0; b < n; ++b) {
      const size_t o = (size_t(b) * c + ch) * hw;
      if (fx) {
#pragma omp simd
        for (int p = 0; p < hw; ++p) dx[o + p] = k * (dy[o + p] - mdy - (x[o + p] - mu) * is * mdyx);
      } else {
#pragma omp simd
        for (int p = 0; p < hw; ++p) dx[o + p] += k * (dy[o + p] - mdy - (x[o + p] - mu) * is * mdyx);
      }
    }
  }
}

}  // namespace prsr
