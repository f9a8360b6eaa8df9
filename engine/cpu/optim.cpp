// Optimiser steps of prsr::cpu over one flat parameter arena: OpenMP + simd, elementwise,
// the same operation order as the reference (engine/ref/kernels.h).
#include <cmath>

#include "engine/backend.h"
#include "engine/cpu/store.h"

namespace prsr {

// TensorFlow RMSProp: ms = decay*ms + (1-decay)*g^2; mom = momentum*mom + lr*g/sqrt(ms+eps);
// w -= mom
void cpu::rmsprop_step(float* w, float* ms, float* mom, const float* g, size_t n, float lr, float decay, float momentum,
                       float eps) {
  const float rd = 1.0f - decay;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float s = decay * ms[i] + rd * gi * gi;
    const float mo = momentum * mom[i] + lr * gi / std::sqrt(s + eps);
    ms[i] = s;
    mom[i] = mo;
    w[i] -= mo;
  }
}

// Adam (Kingma & Ba), bias-corrected, t = 1-based step:
// m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; w -= lr * (m/c1) / (sqrt(v/c2) + eps)
void cpu::adam_step(float* w, float* m, float* v, const float* g, size_t n, float lr, float beta1, float beta2,
                    float eps, long t) {
  const float c1 = 1.0f - std::pow(beta1, float(t)), c2 = 1.0f - std::pow(beta2, float(t));
  const float r1 = 1.0f - beta1, r2 = 1.0f - beta2;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = beta1 * m[i] + r1 * gi;
    const float vi = beta2 * v[i] + r2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    w[i] -= lr * (mi / c1) / (std::sqrt(vi / c2) + eps);
  }
}

}  // namespace prsr
