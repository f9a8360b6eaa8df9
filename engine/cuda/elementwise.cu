// Element-wise ops of the CUDA backend: fill, axpy, add, mul, relu / tanh / sigmoid, gate,
// down_shift. Entry points: engine/kernels.def; semantics: engine/ref/kernels.h.
//
// Every kernel is a grid-stride loop, one thread per element, launched with common.cuh's
// kBlock / grid_for. Activation backwards use the forward's output y, as in ref.
#include "engine/cuda/common.cuh"

namespace prsr::cuda {

namespace {

// The sigmoid of sigmoid_forward and of the gate.
__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

#define GRID_STRIDE(i, n) \
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += size_t(gridDim.x) * blockDim.x)

__global__ void fill_kernel(float* y, float v, size_t n) { GRID_STRIDE(i, n) y[i] = v; }
__global__ void axpy_kernel(float* y, float a, const float* x, size_t n) { GRID_STRIDE(i, n) y[i] += a * x[i]; }
__global__ void add_kernel(float* y, const float* a, const float* b, size_t n) { GRID_STRIDE(i, n) y[i] = a[i] + b[i]; }
__global__ void mul_kernel(float* y, const float* a, const float* m, size_t n) { GRID_STRIDE(i, n) y[i] = a[i] * m[i]; }
// da += dy * m
__global__ void mul_backward_kernel(float* da, const float* dy, const float* m, size_t n) {
  GRID_STRIDE(i, n) da[i] += dy[i] * m[i];
}
__global__ void relu_kernel(float* y, const float* x, size_t n) { GRID_STRIDE(i, n) y[i] = x[i] > 0.0f ? x[i] : 0.0f; }
// y = relu(x): dx += dy where y > 0 (subgradient 0 at 0)
__global__ void relu_backward_kernel(float* dx, const float* dy, const float* y, size_t n) {
  GRID_STRIDE(i, n) if (y[i] > 0.0f) dx[i] += dy[i];
}
__global__ void tanh_kernel(float* y, const float* x, size_t n) { GRID_STRIDE(i, n) y[i] = tanhf(x[i]); }
// y = tanh(x): dx += dy * (1 - y^2)
__global__ void tanh_backward_kernel(float* dx, const float* dy, const float* y, size_t n) {
  GRID_STRIDE(i, n) dx[i] += dy[i] * (1.0f - y[i] * y[i]);
}
__global__ void sigmoid_kernel(float* y, const float* x, size_t n) { GRID_STRIDE(i, n) y[i] = sigmoidf_(x[i]); }
// y = sigmoid(x): dx += dy * y * (1 - y)
__global__ void sigmoid_backward_kernel(float* dx, const float* dy, const float* y, size_t n) {
  GRID_STRIDE(i, n) dx[i] += dy[i] * y[i] * (1.0f - y[i]);
}

// y[b, ch, p] = tanh(z[b, ch, p]) * sigmoid(z[b, c + ch, p]);  i runs over y = [n, c, hw].
__global__ void gate_kernel(float* y, const float* z, size_t total, size_t chw) {
  GRID_STRIDE(i, total) {
    const size_t b = i / chw, r = i % chw;
    const size_t it = b * 2 * chw + r, is = it + chw;
    y[i] = tanhf(z[it]) * sigmoidf_(z[is]);
  }
}
// d tanh part = dy * s * (1 - t^2); d sigmoid part = dy * t * s * (1 - s)
__global__ void gate_backward_kernel(float* dz, const float* dy, const float* z, size_t total, size_t chw) {
  GRID_STRIDE(i, total) {
    const size_t b = i / chw, r = i % chw;
    const size_t it = b * 2 * chw + r, is = it + chw;
    const float t = tanhf(z[it]), s = sigmoidf_(z[is]);
    const float d = dy[i];
    dz[it] += d * s * (1.0f - t * t);
    dz[is] += d * t * s * (1.0f - s);
  }
}

// y[p, i, :] = i == 0 ? 0 : x[p, i - 1, :];  e runs over planes * h * w.
__global__ void down_shift_kernel(float* y, const float* x, size_t total, int h, int w) {
  GRID_STRIDE(e, total) {
    const int i = int((e / size_t(w)) % size_t(h));
    y[e] = i == 0 ? 0.0f : x[e - size_t(w)];
  }
}
// dx[p, i, :] += dy[p, i + 1, :] for i + 1 < h
__global__ void down_shift_backward_kernel(float* dx, const float* dy, size_t total, int h, int w) {
  GRID_STRIDE(e, total) {
    const int i = int((e / size_t(w)) % size_t(h));
    if (i + 1 < h) dx[e] += dy[e + size_t(w)];
  }
}

#undef GRID_STRIDE

}  // namespace

}  // namespace prsr::cuda

namespace prsr {

void cuda::fill(float* y, float v, size_t n) {
  if (n == 0) return;
  fill_kernel<<<grid_for(n), kBlock, 0, stream()>>>(y, v, n);
  LAUNCH_CHECK();
}

// Fresh gradients (backend.h) are zeroed first, then accumulated into as usual.
void cuda::axpy(float* y, float a, const float* x, size_t n, unsigned fresh) {
  if (n == 0) return;
  if (fresh & 1u) fill(y, 0.0f, n);
  axpy_kernel<<<grid_for(n), kBlock, 0, stream()>>>(y, a, x, n);
  LAUNCH_CHECK();
}

void cuda::add_forward(float* y, const float* a, const float* b, size_t n) {
  if (n == 0) return;
  add_kernel<<<grid_for(n), kBlock, 0, stream()>>>(y, a, b, n);
  LAUNCH_CHECK();
}

void cuda::mul_forward(float* y, const float* a, const float* m, size_t n) {
  if (n == 0) return;
  mul_kernel<<<grid_for(n), kBlock, 0, stream()>>>(y, a, m, n);
  LAUNCH_CHECK();
}

void cuda::mul_backward(float* da, const float* dy, const float* m, size_t n, unsigned fresh) {
  if (n == 0 || !da) return;
  if (fresh & 1u) fill(da, 0.0f, n);
  mul_backward_kernel<<<grid_for(n), kBlock, 0, stream()>>>(da, dy, m, n);
  LAUNCH_CHECK();
}

void cuda::relu_forward(float* y, const float* x, size_t n) {
  if (n == 0) return;
  relu_kernel<<<grid_for(n), kBlock, 0, stream()>>>(y, x, n);
  LAUNCH_CHECK();
}

void cuda::relu_backward(float* dx, const float* dy, const float* y, size_t n, unsigned fresh) {
  if (n == 0 || !dx) return;
  if (fresh & 1u) fill(dx, 0.0f, n);
  relu_backward_kernel<<<grid_for(n), kBlock, 0, stream()>>>(dx, dy, y, n);
  LAUNCH_CHECK();
}

void cuda::tanh_forward(float* y, const float* x, size_t n) {
  if (n == 0) return;
  tanh_kernel<<<grid_for(n), kBlock, 0, stream()>>>(y, x, n);
  LAUNCH_CHECK();
}

void cuda::tanh_backward(float* dx, const float* dy, const float* y, size_t n, unsigned fresh) {
  if (n == 0 || !dx) return;
  if (fresh & 1u) fill(dx, 0.0f, n);
  tanh_backward_kernel<<<grid_for(n), kBlock, 0, stream()>>>(dx, dy, y, n);
  LAUNCH_CHECK();
}

void cuda::sigmoid_forward(float* y, const float* x, size_t n) {
  if (n == 0) return;
  sigmoid_kernel<<<grid_for(n), kBlock, 0, stream()>>>(y, x, n);
  LAUNCH_CHECK();
}

void cuda::sigmoid_backward(float* dx, const float* dy, const float* y, size_t n, unsigned fresh) {
  if (n == 0 || !dx) return;
  if (fresh & 1u) fill(dx, 0.0f, n);
  sigmoid_backward_kernel<<<grid_for(n), kBlock, 0, stream()>>>(dx, dy, y, n);
  LAUNCH_CHECK();
}

void cuda::gate_forward(float* y, const float* z, int n, int c, int hw) {
  const size_t chw = size_t(c) * hw, total = size_t(n) * chw;
  if (total == 0) return;
  gate_kernel<<<grid_for(total), kBlock, 0, stream()>>>(y, z, total, chw);
  LAUNCH_CHECK();
}

void cuda::gate_backward(float* dz, const float* dy, const float* z, int n, int c, int hw, unsigned fresh) {
  const size_t chw = size_t(c) * hw, total = size_t(n) * chw;
  if (total == 0 || !dz) return;
  if (fresh & 1u) fill(dz, 0.0f, 2 * total);
  gate_backward_kernel<<<grid_for(total), kBlock, 0, stream()>>>(dz, dy, z, total, chw);
  LAUNCH_CHECK();
}

void cuda::down_shift_forward(float* y, const float* x, int planes, int h, int w) {
  const size_t total = size_t(planes) * h * w;
  if (total == 0) return;
  down_shift_kernel<<<grid_for(total), kBlock, 0, stream()>>>(y, x, total, h, w);
  LAUNCH_CHECK();
}

void cuda::down_shift_backward(float* dx, const float* dy, int planes, int h, int w, unsigned fresh) {
  const size_t total = size_t(planes) * h * w;
  if (total == 0 || !dx) return;
  if (fresh & 1u) fill(dx, 0.0f, total);
  down_shift_backward_kernel<<<grid_for(total), kBlock, 0, stream()>>>(dx, dy, total, h, w);
  LAUNCH_CHECK();
}

}  // namespace prsr
