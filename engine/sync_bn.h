// Synchronised batch norm (docs/distributed.md): when a training graph is split over ranks
// (each rank holds n of the N = n * ranks images of a global batch), batch norm in training mode
// must normalise with the statistics of the whole global batch, so that R ranks compute what one
// process computes on the global batch. Graph::bn_sum (set by the trainer under MPI, null
// otherwise) sums a vector of doubles over all ranks in place; these two helpers are the only
// users. They run on host memory (Ref and Cpu backends) as plain loops in double; the batch-norm
// kernels in engine/kernels.def are untouched and still do all single-process work.
//
//   forward:  per channel [sum x, sum x^2, count] -> bn_sum -> mean, biased var over the global
//             batch; y = (x - mean) * invstd * gamma + beta; running stats updated with the global
//             mean and unbiased var (identical on every rank, as bn_sum's result is)
//   backward: per channel [sum dy, sum dy * xhat] -> bn_sum -> global means for dx;
//             dgamma / dbeta get the LOCAL sums, because the trainer averages parameter gradients
//             over ranks afterwards (each rank's dy is ranks x the global-loss gradient: its loss is
//             the mean over its own slice, so the average of the ranks' dgamma is the global one)
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "engine/error.h"

namespace prsr {

// x, y: [n, c, hw]; mean, invstd: [c] (saved for backward); running_*: [c], updated.
template <class T>
void sync_batchnorm_forward(void (*bn_sum)(double*, int), T* y, T* mean, T* invstd, T* running_mean, T* running_var,
                            const T* x, const T* gamma, const T* beta, int n, int c, int hw, T momentum, T eps) {
  // [sum x (c), sum x^2 (c), count]; kept between calls, so that a step allocates nothing. (A
  // plain reference: inside the OpenMP region a thread_local name would be each thread's own.)
  static thread_local std::vector<double> buf;
  std::vector<double>& s = buf;
  s.assign(size_t(2 * c + 1), 0.0);
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < c; ++ch) {
    double s1 = 0, s2 = 0;
    for (int b = 0; b < n; ++b) {
      const T* p = x + (size_t(b) * c + ch) * hw;
      for (int i = 0; i < hw; ++i) {
        const double v = double(p[i]);
        s1 += v;
        s2 += v * v;
      }
    }
    s[size_t(ch)] = s1;
    s[size_t(c + ch)] = s2;
  }
  s[size_t(2 * c)] = double(n) * hw;
  bn_sum(s.data(), 2 * c + 1);
  const double m = s[size_t(2 * c)];
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < c; ++ch) {
    const double mu = s[size_t(ch)] / m;
    // E[x^2] - mean^2 in double: float inputs of moderate mean/std lose nothing that matters.
    const double var = std::max(0.0, s[size_t(c + ch)] / m - mu * mu);
    const double is = 1.0 / std::sqrt(var + double(eps));
    mean[ch] = T(mu);
    invstd[ch] = T(is);
    const double unbiased = m > 1 ? var * m / (m - 1) : var;
    running_mean[ch] = T((1 - double(momentum)) * double(running_mean[ch]) + double(momentum) * mu);
    running_var[ch] = T((1 - double(momentum)) * double(running_var[ch]) + double(momentum) * unbiased);
    const T k = T(double(gamma[ch]) * is), off = T(double(beta[ch]) - mu * is * double(gamma[ch]));
    for (int b = 0; b < n; ++b) {
      const size_t o = (size_t(b) * c + ch) * hw;
      for (int i = 0; i < hw; ++i) y[o + i] = x[o + i] * k + off;
    }
  }
}

// Gradients as batchnorm_backward in training mode, with the means of dy and dy * xhat taken over
// the global batch. dx / dgamma / dbeta may be null; `fresh` as in engine/backend.h.
template <class T>
void sync_batchnorm_backward(void (*bn_sum)(double*, int), T* dx, T* dgamma, T* dbeta, const T* dy, const T* x,
                             const T* gamma, const T* mean, const T* invstd, int n, int c, int hw, unsigned fresh) {
  // [sum dy (c), sum dy * xhat (c), count], this rank's and all ranks'; kept between calls
  // (references, as in the forward).
  static thread_local std::vector<double> buf_local, buf_all;
  std::vector<double>& local = buf_local;
  std::vector<double>& s = buf_all;
  local.assign(size_t(2 * c + 1), 0.0);
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < c; ++ch) {
    const double mu = double(mean[ch]), is = double(invstd[ch]);
    double s1 = 0, s2 = 0;
    for (int b = 0; b < n; ++b) {
      const size_t o = (size_t(b) * c + ch) * hw;
      for (int i = 0; i < hw; ++i) {
        s1 += double(dy[o + i]);
        s2 += double(dy[o + i]) * (double(x[o + i]) - mu) * is;
      }
    }
    local[size_t(ch)] = s1;
    local[size_t(c + ch)] = s2;
  }
  local[size_t(2 * c)] = double(n) * hw;
  s = local;
  bn_sum(s.data(), 2 * c + 1);
  const double m = s[size_t(2 * c)];
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < c; ++ch) {
    if (dgamma) dgamma[ch] = T((fresh & 2u ? 0.0 : double(dgamma[ch])) + local[size_t(c + ch)]);
    if (dbeta) dbeta[ch] = T((fresh & 4u ? 0.0 : double(dbeta[ch])) + local[size_t(ch)]);
    if (!dx) continue;
    const double mu = double(mean[ch]), is = double(invstd[ch]), k = double(gamma[ch]) * is;
    const double mdy = s[size_t(ch)] / m, mdyx = s[size_t(c + ch)] / m;
    for (int b = 0; b < n; ++b) {
      const size_t o = (size_t(b) * c + ch) * hw;
      for (int i = 0; i < hw; ++i) {
        const double g = k * (double(dy[o + i]) - mdy - (double(x[o + i]) - mu) * is * mdyx);
        dx[o + i] = T((fresh & 1u ? 0.0 : double(dx[o + i])) + g);
      }
    }
  }
}

}  // namespace prsr
