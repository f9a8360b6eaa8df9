// Synchronised batch norm of the CUDA backend (engine/sync_bn.h has the semantics and the host
// version; docs/distributed.md): a training graph split over ranks normalises with the statistics
// of the whole global batch. Each phase is a per-channel sum kernel -> bn_sum (an all-reduce of
// device doubles over the ranks: NCCL on the backend's stream, train/distributed.cpp) -> a kernel
// that finishes from the global sums.
//
//   forward:  s = [sum x (c), sum x^2 (c), count] -> bn_sum -> mean, biased var = E[x^2] - mean^2
//             (double); y = x * k + off with k = gamma * invstd, off = beta - mean * k; running
//             stats get the global mean and unbiased var (identical on every rank)
//   backward: local = [sum dy (c), sum dy * xhat (c), count], s = copy -> bn_sum -> dx with the
//             global means; dgamma / dbeta get the LOCAL sums (the trainer averages gradients)
//
// Deterministic as batchnorm.cu: one block per channel, fixed strided partial sums in double, a
// fixed tree (block_sum); no atomics. The [2c + 1] doubles live in the SyncBn workspace slot
// (local and global halves in backward), so a step allocates nothing after the first.
#include "engine/cuda/common.cuh"

namespace prsr::cuda {

namespace {

constexpr int B = 256;  // threads per channel block (power of two)

__device__ __forceinline__ size_t chan_index(size_t e, int ch, int c, int hw) {
  return ((e / hw) * c + ch) * size_t(hw) + e % hw;
}

// s[ch] = sum x, s[c + ch] = sum x^2 over this rank's images; s[2c] = n * hw.
__global__ void sync_bn_sums_kernel(double* s, const float* x, int n, int c, int hw) {
  __shared__ double sh[B];
  const int ch = blockIdx.x;
  const size_t count = size_t(n) * hw;
  double s1 = 0.0, s2 = 0.0;
  for (size_t e = threadIdx.x; e < count; e += B) {
    const double v = double(x[chan_index(e, ch, c, hw)]);
    s1 += v;
    s2 += v * v;
  }
  s1 = block_sum<B>(s1, sh);
  s2 = block_sum<B>(s2, sh);
  if (threadIdx.x == 0) {
    s[ch] = s1;
    s[c + ch] = s2;
    if (ch == 0) s[2 * c] = double(count);
  }
}

__global__ void sync_bn_forward_kernel(float* y, float* mean, float* invstd, float* running_mean, float* running_var,
                                       const double* s, const float* x, const float* gamma, const float* beta, int n,
                                       int c, int hw, float momentum, float eps) {
  const int ch = blockIdx.x;
  const double m = s[2 * c];
  const double mu = s[ch] / m;
  const double var = fmax(0.0, s[c + ch] / m - mu * mu);
  const double is = 1.0 / sqrt(var + double(eps));
  const float k = float(double(gamma[ch]) * is), off = float(double(beta[ch]) - mu * is * double(gamma[ch]));
  const size_t count = size_t(n) * hw;
  for (size_t e = threadIdx.x; e < count; e += B) {
    const size_t i = chan_index(e, ch, c, hw);
    y[i] = x[i] * k + off;
  }
  if (threadIdx.x == 0) {
    mean[ch] = float(mu);
    invstd[ch] = float(is);
    const double unbiased = m > 1 ? var * m / (m - 1) : var;
    const double mom = double(momentum);
    running_mean[ch] = float((1 - mom) * double(running_mean[ch]) + mom * mu);
    running_var[ch] = float((1 - mom) * double(running_var[ch]) + mom * unbiased);
  }
}

// local[ch] = sum dy, local[c + ch] = sum dy * xhat, local[2c] = n * hw; global = a copy (for bn_sum).
__global__ void sync_bn_grad_sums_kernel(double* local, double* global, const float* dy, const float* x,
                                         const float* mean, const float* invstd, int n, int c, int hw) {
  __shared__ double sh[B];
  const int ch = blockIdx.x;
  const size_t count = size_t(n) * hw;
  const double mu = double(mean[ch]), is = double(invstd[ch]);
  double s1 = 0.0, s2 = 0.0;
  for (size_t e = threadIdx.x; e < count; e += B) {
    const size_t i = chan_index(e, ch, c, hw);
    s1 += double(dy[i]);
    s2 += double(dy[i]) * (double(x[i]) - mu) * is;
  }
  s1 = block_sum<B>(s1, sh);
  s2 = block_sum<B>(s2, sh);
  if (threadIdx.x == 0) {
    local[ch] = global[ch] = s1;
    local[c + ch] = global[c + ch] = s2;
    if (ch == 0) local[2 * c] = global[2 * c] = double(count);
  }
}

__global__ void sync_bn_backward_kernel(float* dx, float* dgamma, float* dbeta, const double* local,
                                        const double* global, const float* dy, const float* x, const float* gamma,
                                        const float* mean, const float* invstd, int n, int c, int hw, unsigned fresh) {
  const int ch = blockIdx.x;
  if (threadIdx.x == 0) {
    if (dgamma) dgamma[ch] = float((fresh & 2u ? 0.0 : double(dgamma[ch])) + local[c + ch]);
    if (dbeta) dbeta[ch] = float((fresh & 4u ? 0.0 : double(dbeta[ch])) + local[ch]);
  }
  if (!dx) return;
  const double m = global[2 * c];
  const double mu = double(mean[ch]), is = double(invstd[ch]), k = double(gamma[ch]) * is;
  const double mdy = global[ch] / m, mdyx = global[c + ch] / m;
  const size_t count = size_t(n) * hw;
  for (size_t e = threadIdx.x; e < count; e += B) {
    const size_t i = chan_index(e, ch, c, hw);
    const double g = k * (double(dy[i]) - mdy - (double(x[i]) - mu) * is * mdyx);
    dx[i] = float((fresh & 1u ? 0.0 : double(dx[i])) + g);
  }
}

}  // namespace

}  // namespace prsr::cuda

namespace prsr {

void cuda::sync_batchnorm_forward(void (*bn_sum)(double*, int), float* y, float* mean, float* invstd,
                                  float* running_mean, float* running_var, const float* x, const float* gamma,
                                  const float* beta, int n, int c, int hw, float momentum, float eps) {
  if (c == 0) return;
  double* s = workspace_as<double>(Slot::SyncBn, size_t(2 * c + 1));
  sync_bn_sums_kernel<<<c, B, 0, stream()>>>(s, x, n, c, hw);
  LAUNCH_CHECK();
  bn_sum(s, 2 * c + 1);  // on the same stream: ordered after the sums, before the kernel below
  sync_bn_forward_kernel<<<c, B, 0, stream()>>>(y, mean, invstd, running_mean, running_var, s, x, gamma, beta, n, c, hw,
                                                momentum, eps);
  LAUNCH_CHECK();
}

void cuda::sync_batchnorm_backward(void (*bn_sum)(double*, int), float* dx, float* dgamma, float* dbeta,
                                   const float* dy, const float* x, const float* gamma, const float* mean,
                                   const float* invstd, int n, int c, int hw, unsigned fresh) {
  if (c == 0) return;
  const size_t len = size_t(2 * c + 1);
  double* local = workspace_as<double>(Slot::SyncBn, 2 * len);
  double* global = local + len;
  sync_bn_grad_sums_kernel<<<c, B, 0, stream()>>>(local, global, dy, x, mean, invstd, n, c, hw);
  LAUNCH_CHECK();
  bn_sum(global, 2 * c + 1);
  sync_bn_backward_kernel<<<c, B, 0, stream()>>>(dx, dgamma, dbeta, local, global, dy, x, gamma, mean, invstd, n, c, hw,
                                                 fresh);
  LAUNCH_CHECK();
}

}  // namespace prsr
