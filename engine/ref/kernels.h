// The naive reference backend: plain loops, templated on the element type so that gradient
// checks run in double. Never optimised; the CPU and CUDA backends are tested against it.
// Signatures and semantics are those of engine/backend.h (forward overwrites, backward
// accumulates into non-null gradients, or overwrites the fresh ones); at T = float every kernel
// has exactly the signature of engine/kernels.def (checked at the end of this file).
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "engine/backend.h"

namespace prsr::ref {

// Fresh gradients (backend.h): the reference zeroes them first, then accumulates as usual.
template <class T>
void zero_fresh(unsigned fresh, unsigned bit, T* p, size_t n) {
  if (p && (fresh >> bit & 1u))
    for (size_t i = 0; i < n; ++i) p[i] = T(0);
}

// ---------------------------------------------------------------- convolution
// y[n,o,i,j] = b[o] + sum_{c,ky,kx} w[o,c,ky,kx] * x[n, c, i + ky - pad_t, j + kx - pad_l]
template <class T>
void conv2d_forward(T* y, const T* x, const T* w, const T* b, const ConvGeom& g) {
  const int ho = g.ho(), wo = g.wo();
  for (int n = 0; n < g.n; ++n)
    for (int o = 0; o < g.co; ++o)
      for (int i = 0; i < ho; ++i)
        for (int j = 0; j < wo; ++j) {
          T acc = b ? b[o] : T(0);
          for (int c = 0; c < g.ci; ++c)
            for (int ky = 0; ky < g.kh; ++ky) {
              const int yi = i + ky - g.pad_t;
              if (yi < 0 || yi >= g.h) continue;
              for (int kx = 0; kx < g.kw; ++kx) {
                const int xj = j + kx - g.pad_l;
                if (xj < 0 || xj >= g.w) continue;
                acc += w[((size_t(o) * g.ci + c) * g.kh + ky) * g.kw + kx] *
                       x[((size_t(n) * g.ci + c) * g.h + yi) * g.w + xj];
              }
            }
          y[((size_t(n) * g.co + o) * ho + i) * wo + j] = acc;
        }
}

// Backward of the line above: dx[n,c,yi,xj] += w * dy; dw[o,c,ky,kx] += x * dy; db[o] += dy.
template <class T>
void conv2d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const ConvGeom& g, unsigned fresh = 0) {
  zero_fresh(fresh, 0, dx, size_t(g.n) * g.ci * g.h * g.w);
  zero_fresh(fresh, 1, dw, size_t(g.co) * g.ci * g.kh * g.kw);
  zero_fresh(fresh, 2, db, size_t(g.co));
  const int ho = g.ho(), wo = g.wo();
  for (int n = 0; n < g.n; ++n)
    for (int o = 0; o < g.co; ++o)
      for (int i = 0; i < ho; ++i)
        for (int j = 0; j < wo; ++j) {
          const T d = dy[((size_t(n) * g.co + o) * ho + i) * wo + j];
          if (db) db[o] += d;
          for (int c = 0; c < g.ci; ++c)
            for (int ky = 0; ky < g.kh; ++ky) {
              const int yi = i + ky - g.pad_t;
              if (yi < 0 || yi >= g.h) continue;
              for (int kx = 0; kx < g.kw; ++kx) {
                const int xj = j + kx - g.pad_l;
                if (xj < 0 || xj >= g.w) continue;
                const size_t wi = ((size_t(o) * g.ci + c) * g.kh + ky) * g.kw + kx;
                const size_t xi = ((size_t(n) * g.ci + c) * g.h + yi) * g.w + xj;
                if (dx) dx[xi] += w[wi] * d;
                if (dw) dw[wi] += x[xi] * d;
              }
            }
        }
}

// y[n, o, i*s - p + ky, j*s - p + kx] += w[o, c, ky, kx] * x[n, c, i, j]   (+ b[o])
template <class T>
void deconv2d_forward(T* y, const T* x, const T* w, const T* b, const DeconvGeom& g) {
  const int ho = g.ho(), wo = g.wo();
  for (int n = 0; n < g.n; ++n)
    for (int o = 0; o < g.co; ++o)
      for (int p = 0; p < ho * wo; ++p) y[(size_t(n) * g.co + o) * ho * wo + p] = b ? b[o] : T(0);
  for (int n = 0; n < g.n; ++n)
    for (int c = 0; c < g.ci; ++c)
      for (int i = 0; i < g.h; ++i)
        for (int j = 0; j < g.w; ++j) {
          const T v = x[((size_t(n) * g.ci + c) * g.h + i) * g.w + j];
          for (int o = 0; o < g.co; ++o)
            for (int ky = 0; ky < g.k; ++ky) {
              const int oi = i * g.stride - g.pad + ky;
              if (oi < 0 || oi >= ho) continue;
              for (int kx = 0; kx < g.k; ++kx) {
                const int oj = j * g.stride - g.pad + kx;
                if (oj < 0 || oj >= wo) continue;
                y[((size_t(n) * g.co + o) * ho + oi) * wo + oj] +=
                    w[((size_t(o) * g.ci + c) * g.k + ky) * g.k + kx] * v;
              }
            }
        }
}

template <class T>
void deconv2d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const DeconvGeom& g,
                       unsigned fresh = 0) {
  zero_fresh(fresh, 0, dx, size_t(g.n) * g.ci * g.h * g.w);
  zero_fresh(fresh, 1, dw, size_t(g.co) * g.ci * g.k * g.k);
  zero_fresh(fresh, 2, db, size_t(g.co));
  const int ho = g.ho(), wo = g.wo();
  if (db)
    for (int n = 0; n < g.n; ++n)
      for (int o = 0; o < g.co; ++o)
        for (int p = 0; p < ho * wo; ++p) db[o] += dy[(size_t(n) * g.co + o) * ho * wo + p];
  for (int n = 0; n < g.n; ++n)
    for (int c = 0; c < g.ci; ++c)
      for (int i = 0; i < g.h; ++i)
        for (int j = 0; j < g.w; ++j) {
          const size_t xi = ((size_t(n) * g.ci + c) * g.h + i) * g.w + j;
          for (int o = 0; o < g.co; ++o)
            for (int ky = 0; ky < g.k; ++ky) {
              const int oi = i * g.stride - g.pad + ky;
              if (oi < 0 || oi >= ho) continue;
              for (int kx = 0; kx < g.k; ++kx) {
                const int oj = j * g.stride - g.pad + kx;
                if (oj < 0 || oj >= wo) continue;
                const size_t wi = ((size_t(o) * g.ci + c) * g.k + ky) * g.k + kx;
                const T d = dy[((size_t(n) * g.co + o) * ho + oi) * wo + oj];
                if (dx) dx[xi] += w[wi] * d;
                if (dw) dw[wi] += x[xi] * d;
              }
            }
        }
}

// ---------------------------------------------------------------- elementwise
template <class T>
void fill(T* y, T v, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = v;
}
template <class T>
void axpy(T* y, T a, const T* x, size_t n, unsigned fresh = 0) {
  zero_fresh(fresh, 0, y, n);
  for (size_t i = 0; i < n; ++i) y[i] += a * x[i];
}
template <class T>
void add_forward(T* y, const T* a, const T* b, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}
template <class T>
void mul_forward(T* y, const T* a, const T* m, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = a[i] * m[i];
}
template <class T>
void mul_backward(T* da, const T* dy, const T* m, size_t n, unsigned fresh = 0) {
  zero_fresh(fresh, 0, da, n);
  for (size_t i = 0; i < n; ++i) da[i] += dy[i] * m[i];
}
template <class T>
void relu_forward(T* y, const T* x, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : T(0);
}
// y = relu(x): dx += dy where y > 0 (the subgradient at 0 is 0).
template <class T>
void relu_backward(T* dx, const T* dy, const T* y, size_t n, unsigned fresh = 0) {
  zero_fresh(fresh, 0, dx, n);
  for (size_t i = 0; i < n; ++i)
    if (y[i] > T(0)) dx[i] += dy[i];
}
template <class T>
void tanh_forward(T* y, const T* x, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
}
template <class T>
void tanh_backward(T* dx, const T* dy, const T* y, size_t n, unsigned fresh = 0) {
  zero_fresh(fresh, 0, dx, n);
  for (size_t i = 0; i < n; ++i) dx[i] += dy[i] * (T(1) - y[i] * y[i]);
}
template <class T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}
template <class T>
void sigmoid_forward(T* y, const T* x, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = sigmoid(x[i]);
}
template <class T>
void sigmoid_backward(T* dx, const T* dy, const T* y, size_t n, unsigned fresh = 0) {
  zero_fresh(fresh, 0, dx, n);
  for (size_t i = 0; i < n; ++i) dx[i] += dy[i] * y[i] * (T(1) - y[i]);
}

// y[n, ch, p] = tanh(z[n, ch, p]) * sigmoid(z[n, c + ch, p])
template <class T>
void gate_forward(T* y, const T* z, int n, int c, int hw) {
  for (int b = 0; b < n; ++b)
    for (int ch = 0; ch < c; ++ch)
      for (int p = 0; p < hw; ++p) {
        const T t = std::tanh(z[(size_t(b) * 2 * c + ch) * hw + p]);
        const T s = sigmoid(z[(size_t(b) * 2 * c + c + ch) * hw + p]);
        y[(size_t(b) * c + ch) * hw + p] = t * s;
      }
}
// d tanh part = dy * s * (1 - t^2); d sigmoid part = dy * t * s * (1 - s)
template <class T>
void gate_backward(T* dz, const T* dy, const T* z, int n, int c, int hw, unsigned fresh = 0) {
  zero_fresh(fresh, 0, dz, size_t(n) * 2 * c * hw);
  for (int b = 0; b < n; ++b)
    for (int ch = 0; ch < c; ++ch)
      for (int p = 0; p < hw; ++p) {
        const size_t it = (size_t(b) * 2 * c + ch) * hw + p, is = it + size_t(c) * hw;
        const T t = std::tanh(z[it]), s = sigmoid(z[is]);
        const T d = dy[(size_t(b) * c + ch) * hw + p];
        dz[it] += d * s * (T(1) - t * t);
        dz[is] += d * t * s * (T(1) - s);
      }
}

template <class T>
void down_shift_forward(T* y, const T* x, int planes, int h, int w) {
  for (int p = 0; p < planes; ++p)
    for (int i = 0; i < h; ++i)
      for (int j = 0; j < w; ++j) y[(size_t(p) * h + i) * w + j] = i == 0 ? T(0) : x[(size_t(p) * h + i - 1) * w + j];
}
template <class T>
void down_shift_backward(T* dx, const T* dy, int planes, int h, int w, unsigned fresh = 0) {
  zero_fresh(fresh, 0, dx, size_t(planes) * h * w);
  for (int p = 0; p < planes; ++p)
    for (int i = 0; i + 1 < h; ++i)
      for (int j = 0; j < w; ++j) dx[(size_t(p) * h + i) * w + j] += dy[(size_t(p) * h + i + 1) * w + j];
}

// ---------------------------------------------------------------- batch norm
template <class T>
void batchnorm_forward_train(T* y, T* mean, T* invstd, T* running_mean, T* running_var, const T* x, const T* gamma,
                             const T* beta, int n, int c, int hw, T momentum, T eps) {
  const double m = double(n) * hw;
  for (int ch = 0; ch < c; ++ch) {
    double s = 0;
    for (int b = 0; b < n; ++b)
      for (int p = 0; p < hw; ++p) s += double(x[(size_t(b) * c + ch) * hw + p]);
    const double mu = s / m;
    double v = 0;
    for (int b = 0; b < n; ++b)
      for (int p = 0; p < hw; ++p) {
        const double d = double(x[(size_t(b) * c + ch) * hw + p]) - mu;
        v += d * d;
      }
    const double var = v / m;  // biased, used to normalise
    mean[ch] = T(mu);
    invstd[ch] = T(1.0 / std::sqrt(var + double(eps)));
    for (int b = 0; b < n; ++b)
      for (int p = 0; p < hw; ++p) {
        const size_t i = (size_t(b) * c + ch) * hw + p;
        y[i] = (x[i] - mean[ch]) * invstd[ch] * gamma[ch] + beta[ch];
      }
    const double unbiased = m > 1 ? v / (m - 1) : var;
    running_mean[ch] = T((1 - double(momentum)) * double(running_mean[ch]) + double(momentum) * mu);
    running_var[ch] = T((1 - double(momentum)) * double(running_var[ch]) + double(momentum) * unbiased);
  }
}

template <class T>
void batchnorm_forward_eval(T* y, T* mean, T* invstd, const T* running_mean, const T* running_var, const T* x,
                            const T* gamma, const T* beta, int n, int c, int hw, T eps) {
  for (int ch = 0; ch < c; ++ch) {
    mean[ch] = running_mean[ch];
    invstd[ch] = T(1) / std::sqrt(running_var[ch] + eps);
    for (int b = 0; b < n; ++b)
      for (int p = 0; p < hw; ++p) {
        const size_t i = (size_t(b) * c + ch) * hw + p;
        y[i] = (x[i] - mean[ch]) * invstd[ch] * gamma[ch] + beta[ch];
      }
  }
}

// xhat = (x - mean) * invstd; y = gamma * xhat + beta.
// training: dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
// evaluation (mean, invstd constant): dx = gamma * invstd * dy
template <class T>
void batchnorm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma, const T* mean,
                        const T* invstd, int n, int c, int hw, bool training, unsigned fresh = 0) {
  zero_fresh(fresh, 0, dx, size_t(n) * c * hw);
  zero_fresh(fresh, 1, dgamma, size_t(c));
  zero_fresh(fresh, 2, dbeta, size_t(c));
  const T m = T(double(n) * hw);
  for (int ch = 0; ch < c; ++ch) {
    T sdy = 0, sdyx = 0;
    for (int b = 0; b < n; ++b)
      for (int p = 0; p < hw; ++p) {
        const size_t i = (size_t(b) * c + ch) * hw + p;
        const T xhat = (x[i] - mean[ch]) * invstd[ch];
        sdy += dy[i];
        sdyx += dy[i] * xhat;
      }
    if (dgamma) dgamma[ch] += sdyx;
    if (dbeta) dbeta[ch] += sdy;
    if (!dx) continue;
    for (int b = 0; b < n; ++b)
      for (int p = 0; p < hw; ++p) {
        const size_t i = (size_t(b) * c + ch) * hw + p;
        const T xhat = (x[i] - mean[ch]) * invstd[ch];
        if (training) dx[i] += gamma[ch] * invstd[ch] * (dy[i] - sdy / m - xhat * sdyx / m);
        else dx[i] += gamma[ch] * invstd[ch] * dy[i];
      }
  }
}

// ---------------------------------------------------------------- losses
// loss = mean over (n, colour, pixel) of -log softmax(a + b)[target]; logits [n, colors*256, hw]
template <class T>
void softmax_ce_forward(T* loss, const T* a, const T* b, const uint8_t* target, int n, int colors, int hw) {
  double total = 0;
  for (int s = 0; s < n; ++s)
    for (int col = 0; col < colors; ++col)
      for (int p = 0; p < hw; ++p) {
        const size_t base = (size_t(s) * colors * kLevels + size_t(col) * kLevels) * hw + p;
        auto logit = [&](int l) { return a[base + size_t(l) * hw] + (b ? b[base + size_t(l) * hw] : T(0)); };
        T mx = logit(0);
        for (int l = 1; l < kLevels; ++l) mx = logit(l) > mx ? logit(l) : mx;
        T se = 0;
        for (int l = 0; l < kLevels; ++l) se += std::exp(logit(l) - mx);
        const int t = target[(size_t(s) * colors + col) * hw + p];
        total += double(std::log(se) + mx - logit(t));
      }
  loss[0] = T(total / (double(n) * colors * hw));
}

template <class T>
void softmax_ce_backward(T* da, T* db, const T* dloss, const T* a, const T* b, const uint8_t* target, int n, int colors,
                         int hw, unsigned fresh = 0) {
  zero_fresh(fresh, 0, da, size_t(n) * colors * kLevels * hw);
  zero_fresh(fresh, 1, db, size_t(n) * colors * kLevels * hw);
  const T scale = dloss[0] / T(double(n) * colors * hw);
  for (int s = 0; s < n; ++s)
    for (int col = 0; col < colors; ++col)
      for (int p = 0; p < hw; ++p) {
        const size_t base = (size_t(s) * colors * kLevels + size_t(col) * kLevels) * hw + p;
        auto logit = [&](int l) { return a[base + size_t(l) * hw] + (b ? b[base + size_t(l) * hw] : T(0)); };
        T mx = logit(0);
        for (int l = 1; l < kLevels; ++l) mx = logit(l) > mx ? logit(l) : mx;
        T se = 0;
        for (int l = 0; l < kLevels; ++l) se += std::exp(logit(l) - mx);
        const int t = target[(size_t(s) * colors + col) * hw + p];
        for (int l = 0; l < kLevels; ++l) {
          const T g = scale * (std::exp(logit(l) - mx) / se - (l == t ? T(1) : T(0)));
          if (da) da[base + size_t(l) * hw] += g;
          if (db) db[base + size_t(l) * hw] += g;
        }
      }
}

template <class T>
void mse_forward(T* loss, const T* a, const T* t, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += double(a[i] - t[i]) * double(a[i] - t[i]);
  loss[0] = T(s / double(n));
}
template <class T>
void mse_backward(T* da, const T* dloss, const T* a, const T* t, size_t n, unsigned fresh = 0) {
  zero_fresh(fresh, 0, da, n);
  for (size_t i = 0; i < n; ++i) da[i] += dloss[0] * T(2) * (a[i] - t[i]) / T(double(n));
}
template <class T>
void mean_forward(T* y, const T* x, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += double(x[i]);
  y[0] = T(s / double(n));
}
template <class T>
void mean_backward(T* dx, const T* dy, size_t n, unsigned fresh = 0) {
  zero_fresh(fresh, 0, dx, n);
  for (size_t i = 0; i < n; ++i) dx[i] += dy[0] / T(double(n));
}

// ---------------------------------------------------------------- optimisers
template <class T>
void rmsprop_step(T* w, T* ms, T* mom, const T* g, size_t n, T lr, T decay, T momentum, T eps) {
  for (size_t i = 0; i < n; ++i) {
    ms[i] = decay * ms[i] + (T(1) - decay) * g[i] * g[i];
    mom[i] = momentum * mom[i] + lr * g[i] / std::sqrt(ms[i] + eps);
    w[i] -= mom[i];
  }
}
template <class T>
void adam_step(T* w, T* m, T* v, const T* g, size_t n, T lr, T beta1, T beta2, T eps, long t) {
  const T c1 = T(1) - std::pow(beta1, T(t)), c2 = T(1) - std::pow(beta2, T(t));
  for (size_t i = 0; i < n; ++i) {
    m[i] = beta1 * m[i] + (T(1) - beta1) * g[i];
    v[i] = beta2 * v[i] + (T(1) - beta2) * g[i] * g[i];
    w[i] -= lr * (m[i] / c1) / (std::sqrt(v[i] / c2) + eps);
  }
}

}  // namespace prsr::ref

// Drift check: ref::name<float> has the parameters that kernels.def lists for the cpu and cuda
// backends (a renamed or missing kernel fails here too, as an unknown name).
namespace prsr::ref::signature_check {
#define PRSR_KERNEL(name, params)                                            \
  static_assert(std::is_same_v<decltype(&ref::name<float>), void(*) params>, \
                "ref::" #name "<float> does not have the signature of engine/kernels.def");
#define PRSR_GRAD_KERNEL(name, params)                                                       \
  static_assert(std::is_same_v<decltype(&ref::name<float>), void(*) PRSR_WITH_FRESH params>, \
                "ref::" #name                                                                \
                "<float> does not have the signature of engine/kernels.def "                 \
                "(with unsigned fresh last)");
#include "engine/kernels.def"
}  // namespace prsr::ref::signature_check
