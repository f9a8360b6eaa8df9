// Batch norm of the CUDA backend, per channel over (n, hw). Semantics: ref::batchnorm_*.
//
// Deterministic: one block per channel; each thread sums a fixed, strided subset of the
// channel's elements in double, then common.cuh's block_sum adds the partial sums in a fixed
// tree. No atomics, so a run is bit-reproducible. The same block then writes its channel's
// outputs, so statistics never leave the block.
//
//   train forward : mean, biased var (two passes, as ref) -> mean, invstd (float, as ref),
//                   y = (x - mean) * invstd * gamma + beta, running stats with momentum
//                   (running_var gets the unbiased variance).
//   eval forward  : mean = running_mean, invstd = 1/sqrt(running_var + eps); element-wise.
//   backward      : sdy = sum dy, sdyx = sum dy * xhat; dgamma += sdyx, dbeta += sdy;
//                   training: dx += gamma*invstd*(dy - sdy/m - xhat*sdyx/m)
//                   evaluation: dx += gamma*invstd*dy
#include "engine/cuda/common.cuh"

namespace prsr::cuda {

namespace {

constexpr int B = 256;  // threads per channel block (power of two)

// Index of the e-th element of channel ch (e < n*hw) in [n, c, hw].
__device__ __forceinline__ size_t chan_index(size_t e, int ch, int c, int hw) {
  return ((e / hw) * c + ch) * size_t(hw) + e % hw;
}

__global__ void bn_train_kernel(float* y, float* mean, float* invstd, float* running_mean, float* running_var,
                                const float* x, const float* gamma, const float* beta, int n, int c, int hw,
                                float momentum, float eps) {
  __shared__ double sh[B];
  const int ch = blockIdx.x;
  const size_t count = size_t(n) * hw;
  const double m = double(count);

  double s = 0.0;
  for (size_t e = threadIdx.x; e < count; e += B) s += double(x[chan_index(e, ch, c, hw)]);
  const double mu = block_sum<B>(s, sh) / m;

  double v = 0.0;
  for (size_t e = threadIdx.x; e < count; e += B) {
    const double d = double(x[chan_index(e, ch, c, hw)]) - mu;
    v += d * d;
  }
  v = block_sum<B>(v, sh);
  const double var = v / m;  // biased, used to normalise

  // As ref: the saved statistics are rounded to float first, and y uses the rounded ones.
  const float mean_f = float(mu);
  const float invstd_f = float(1.0 / sqrt(var + double(eps)));
  const float g = gamma[ch], bt = beta[ch];
  for (size_t e = threadIdx.x; e < count; e += B) {
    const size_t i = chan_index(e, ch, c, hw);
    y[i] = (x[i] - mean_f) * invstd_f * g + bt;
  }
  if (threadIdx.x == 0) {
    mean[ch] = mean_f;
    invstd[ch] = invstd_f;
    const double unbiased = m > 1 ? v / (m - 1) : var;
    const double mom = double(momentum);
    running_mean[ch] = float((1 - mom) * double(running_mean[ch]) + mom * mu);
    running_var[ch] = float((1 - mom) * double(running_var[ch]) + mom * unbiased);
  }
}

// Element-wise: y = (x - mean[ch]) * invstd[ch] * gamma[ch] + beta[ch] with the given stats.
__global__ void bn_eval_kernel(float* y, const float* running_mean, const float* running_var, const float* x,
                               const float* gamma, const float* beta, int c, int hw, float eps, size_t total) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    const int ch = int((i / hw) % c);
    const float inv = 1.0f / sqrtf(running_var[ch] + eps);
    y[i] = (x[i] - running_mean[ch]) * inv * gamma[ch] + beta[ch];
  }
}

__global__ void bn_eval_stats_kernel(float* mean, float* invstd, const float* running_mean, const float* running_var,
                                     int c, float eps) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  mean[ch] = running_mean[ch];
  invstd[ch] = 1.0f / sqrtf(running_var[ch] + eps);
}

__global__ void bn_backward_kernel(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                                   const float* gamma, const float* mean, const float* invstd, int n, int c, int hw,
                                   bool training) {
  __shared__ double sh[B];
  const int ch = blockIdx.x;
  const size_t count = size_t(n) * hw;
  const float mu = mean[ch], inv = invstd[ch];

  double sdy = 0.0, sdyx = 0.0;
  for (size_t e = threadIdx.x; e < count; e += B) {
    const size_t i = chan_index(e, ch, c, hw);
    const float xhat = (x[i] - mu) * inv;
    sdy += double(dy[i]);
    sdyx += double(dy[i]) * double(xhat);
  }
  sdy = block_sum<B>(sdy, sh);
  sdyx = block_sum<B>(sdyx, sh);
  if (threadIdx.x == 0) {
    if (dgamma) dgamma[ch] += float(sdyx);
    if (dbeta) dbeta[ch] += float(sdy);
  }
  if (!dx) return;
  const float m = float(double(count));
  const float k = gamma[ch] * inv;
  const float mdy = float(sdy) / m, mdyx = float(sdyx) / m;
  for (size_t e = threadIdx.x; e < count; e += B) {
    const size_t i = chan_index(e, ch, c, hw);
    if (training) {
      const float xhat = (x[i] - mu) * inv;
      dx[i] += k * (dy[i] - mdy - xhat * mdyx);
    } else {
      dx[i] += k * dy[i];
    }
  }
}

}  // namespace

}  // namespace prsr::cuda

namespace prsr {

void cuda::batchnorm_forward_train(float* y, float* mean, float* invstd, float* running_mean, float* running_var,
                                   const float* x, const float* gamma, const float* beta, int n, int c, int hw,
                                   float momentum, float eps) {
  if (c == 0 || size_t(n) * hw == 0) return;
  bn_train_kernel<<<c, B, 0, stream()>>>(y, mean, invstd, running_mean, running_var, x, gamma, beta, n, c, hw, momentum,
                                         eps);
  LAUNCH_CHECK();
}

void cuda::batchnorm_forward_eval(float* y, float* mean, float* invstd, const float* running_mean,
                                  const float* running_var, const float* x, const float* gamma, const float* beta,
                                  int n, int c, int hw, float eps) {
  if (c == 0) return;
  bn_eval_stats_kernel<<<(c + kBlock - 1) / kBlock, kBlock, 0, stream()>>>(mean, invstd, running_mean, running_var, c,
                                                                           eps);
  LAUNCH_CHECK();
  const size_t total = size_t(n) * c * hw;
  if (total == 0) return;
  bn_eval_kernel<<<grid_for(total), kBlock, 0, stream()>>>(y, running_mean, running_var, x, gamma, beta, c, hw, eps,
                                                           total);
  LAUNCH_CHECK();
}

void cuda::batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                              const float* gamma, const float* mean, const float* invstd, int n, int c, int hw,
                              bool training, unsigned fresh) {
  // fresh gradients (backend.h): zeroed first, then accumulated into as usual
  if (dx && (fresh & 1u)) fill(dx, 0.0f, size_t(n) * c * hw);
  if (dgamma && (fresh & 2u)) fill(dgamma, 0.0f, size_t(c));
  if (dbeta && (fresh & 4u)) fill(dbeta, 0.0f, size_t(c));
  if (c == 0 || size_t(n) * hw == 0) return;
  if (!dx && !dgamma && !dbeta) return;
  bn_backward_kernel<<<c, B, 0, stream()>>>(dx, dgamma, dbeta, dy, x, gamma, mean, invstd, n, c, hw, training);
  LAUNCH_CHECK();
}

}  // namespace prsr
