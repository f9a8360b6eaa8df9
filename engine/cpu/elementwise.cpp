// Elementwise kernels of prsr::cpu: OpenMP over the flat index, one simd-friendly loop each.
// Small tensors (< kParallelMin elements) stay on the calling thread: a parallel region costs a
// few microseconds, more than the loop itself.
// Vectorising the selects in engine/cpu/simd_math.h (clamps, blends) needs -fno-trapping-math;
// nothing here enables floating-point traps. Before every include so that all inline functions of
// this file share the same options (a mismatch would block inlining).
#pragma GCC optimize("no-trapping-math")
#include <cstring>

#include "engine/backend.h"
#include "engine/cpu/simd_math.h"
#include "engine/cpu/store.h"

namespace prsr {

void cpu::fill(float* y, float v, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) y[i] = v;
}

void cpu::axpy(float* y, float a, const float* x, size_t n, unsigned fresh) { PRSR_STORE(y, n, fresh & 1u, a * x[i]); }

void cpu::add_forward(float* y, const float* a, const float* b, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void cpu::mul_forward(float* y, const float* a, const float* m, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) y[i] = a[i] * m[i];
}

// y = a * m  ->  da += dy * m
void cpu::mul_backward(float* da, const float* dy, const float* m, size_t n, unsigned fresh) {
  PRSR_STORE(da, n, fresh & 1u, dy[i] * m[i]);
}

void cpu::relu_forward(float* y, const float* x, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

// y = relu(x): dx += dy where y > 0 (subgradient 0 at 0, as the reference).
void cpu::relu_backward(float* dx, const float* dy, const float* y, size_t n, unsigned fresh) {
  PRSR_STORE(dx, n, fresh & 1u, y[i] > 0.0f ? dy[i] : 0.0f);
}

void cpu::tanh_forward(float* y, const float* x, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) y[i] = simd::tanh(x[i]);
}

// y = tanh(x): dx += dy * (1 - y^2)
void cpu::tanh_backward(float* dx, const float* dy, const float* y, size_t n, unsigned fresh) {
  PRSR_STORE(dx, n, fresh & 1u, dy[i] * (1.0f - y[i] * y[i]));
}

void cpu::sigmoid_forward(float* y, const float* x, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) y[i] = simd::sigmoid(x[i]);
}

// y = sigmoid(x): dx += dy * y * (1 - y)
void cpu::sigmoid_backward(float* dx, const float* dy, const float* y, size_t n, unsigned fresh) {
  PRSR_STORE(dx, n, fresh & 1u, dy[i] * y[i] * (1.0f - y[i]));
}

// y[b, ch, p] = tanh(z[b, ch, p]) * sigmoid(z[b, c + ch, p]); one (b, ch) plane per iteration.
void cpu::gate_forward(float* y, const float* z, int n, int c, int hw) {
  const long planes = long(n) * c;
#pragma omp parallel for schedule(static) if (planes * hw >= long(kParallelMin))
  for (long q = 0; q < planes; ++q) {
    const long b = q / c, ch = q % c;
    const float* zt = z + (size_t(b) * 2 * c + ch) * hw;
    const float* zs = zt + size_t(c) * hw;
    float* yq = y + size_t(q) * hw;
    // two simple passes over one L1-resident plane vectorise better than one fused loop
#pragma omp simd
    for (int p = 0; p < hw; ++p) yq[p] = simd::tanh(zt[p]);
#pragma omp simd
    for (int p = 0; p < hw; ++p) yq[p] *= simd::sigmoid(zs[p]);
  }
}

// y = t * s, t = tanh(z_t), s = sigmoid(z_s):
//   dz_t += dy * s * (1 - t^2);  dz_s += dy * t * s * (1 - s)
void cpu::gate_backward(float* dz, const float* dy, const float* z, int n, int c, int hw, unsigned fresh) {
  const long planes = long(n) * c;
  const bool fr = fresh & 1u;  // both halves of every plane are written: overwrite when fresh
#pragma omp parallel for schedule(static) if (planes * hw >= long(kParallelMin))
  for (long q = 0; q < planes; ++q) {
    const long b = q / c, ch = q % c;
    const size_t ot = (size_t(b) * 2 * c + ch) * hw, os = ot + size_t(c) * hw;
    const float* dyq = dy + size_t(q) * hw;
    if (fr) {
#pragma omp simd
      for (int p = 0; p < hw; ++p) {
        const float t = simd::tanh(z[ot + p]), s = simd::sigmoid(z[os + p]), d = dyq[p];
        dz[ot + p] = d * s * (1.0f - t * t);
        dz[os + p] = d * t * s * (1.0f - s);
      }
    } else {
#pragma omp simd
      for (int p = 0; p < hw; ++p) {
        const float t = simd::tanh(z[ot + p]), s = simd::sigmoid(z[os + p]), d = dyq[p];
        dz[ot + p] += d * s * (1.0f - t * t);
        dz[os + p] += d * t * s * (1.0f - s);
      }
    }
  }
}

// y[q, 0, :] = 0; y[q, i, :] = x[q, i - 1, :]
void cpu::down_shift_forward(float* y, const float* x, int planes, int h, int w) {
  if (h <= 0) return;
  const size_t plane = size_t(h) * w;
#pragma omp parallel for schedule(static) if (planes * plane >= kParallelMin)
  for (int q = 0; q < planes; ++q) {
    float* yq = y + q * plane;
    std::memset(yq, 0, sizeof(float) * size_t(w));
    if (h > 1) std::memcpy(yq + w, x + q * plane, sizeof(float) * (plane - w));
  }
}

// dx[q, i, :] += dy[q, i + 1, :] for i < h - 1 (fresh: dx[q, i, :] = that, last row 0)
void cpu::down_shift_backward(float* dx, const float* dy, int planes, int h, int w, unsigned fresh) {
  const bool fr = fresh & 1u;
  if (h <= 0) return;
  const size_t plane = size_t(h) * w;
#pragma omp parallel for schedule(static) if (planes * plane >= kParallelMin)
  for (int q = 0; q < planes; ++q) {
    float* dxq = dx + q * plane;
    const float* dyq = dy + q * plane + w;
    const size_t m = plane - size_t(w);
    if (fr) {
      std::memcpy(dxq, dyq, sizeof(float) * m);
      std::memset(dxq + m, 0, sizeof(float) * size_t(w));
    } else {
#pragma omp simd
      for (size_t i = 0; i < m; ++i) dxq[i] += dyq[i];
    }
  }
}

}  // namespace prsr
