// Optimiser steps of the CUDA backend over one flat parameter arena, one thread per parameter.
// Semantics: ref::rmsprop_step (TensorFlow's RMSProp) and ref::adam_step (bias-corrected Adam).
// Adam's bias corrections 1 - beta^t are computed once on the host in float, exactly as ref
// does, and passed to the kernel.
#include <cmath>

#include "engine/cuda/common.cuh"

namespace prsr::cuda {

namespace {

// ms = decay*ms + (1-decay)*g^2;  mom = momentum*mom + lr*g/sqrt(ms + eps);  w -= mom
__global__ void rmsprop_kernel(float* w, float* ms, float* mom, const float* g, size_t n, float lr, float decay,
                               float momentum, float eps) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    const float s = decay * ms[i] + (1.0f - decay) * gi * gi;
    const float m = momentum * mom[i] + lr * gi / sqrtf(s + eps);
    ms[i] = s;
    mom[i] = m;
    w[i] -= m;
  }
}

// m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;  w -= lr * (m/c1) / (sqrt(v/c2) + eps)
__global__ void adam_kernel(float* w, float* m, float* v, const float* g, size_t n, float lr, float beta1, float beta2,
                            float eps, float c1, float c2) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    w[i] -= lr * (mi / c1) / (sqrtf(vi / c2) + eps);
  }
}

}  // namespace

}  // namespace prsr::cuda

namespace prsr {

void cuda::rmsprop_step(float* w, float* ms, float* mom, const float* g, size_t n, float lr, float decay,
                        float momentum, float eps) {
  if (n == 0) return;
  rmsprop_kernel<<<grid_for(n), kBlock, 0, stream()>>>(w, ms, mom, g, n, lr, decay, momentum, eps);
  LAUNCH_CHECK();
}

void cuda::adam_step(float* w, float* m, float* v, const float* g, size_t n, float lr, float beta1, float beta2,
                     float eps, long t) {
  if (n == 0) return;
  const float c1 = 1.0f - std::pow(beta1, float(t)), c2 = 1.0f - std::pow(beta2, float(t));
  adam_kernel<<<grid_for(n), kBlock, 0, stream()>>>(w, m, v, g, n, lr, beta1, beta2, eps, c1, c2);
  LAUNCH_CHECK();
}

}  // namespace prsr
