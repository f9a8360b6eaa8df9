// The GPU cached sampler's CUDA kernels: thin wrappers that run the bodies of
// model/sampler_kernels.h on every thread of a block (__syncthreads as the body's sync), on the
// CUDA backend's one stream (engine/cuda/common.cuh), so they order with the conditioning
// network's kernels and the copies.
#include "engine/cuda/common.cuh"
#include "model/sampler_kernels.h"

namespace prsr::gpu_sampler {

static_assert(sizeof(Plan) <= 4096, "a kernel's parameters must fit in 4 KB");

namespace {

struct DeviceBlock {
  int tid, nt;
  __device__ void sync() { __syncthreads(); }
};

// One block per image: row i, every pixel and colour (the horizontal stack, the head, the draw).
// Shared memory: the logits, their exponentials, and Plan::part_len partial sums (dynamic).
__global__ void __launch_bounds__(kRowThreads) row_kernel(const __grid_constant__ Plan P, int i) {
  __shared__ float logits[kLevelCount];
  __shared__ double p[kLevelCount];
  __shared__ int ints[2];
  extern __shared__ float part[];
  DeviceBlock blk{int(threadIdx.x), int(blockDim.x)};
  row_body(P, int(blockIdx.x), i, blk, Scratch{logits, p, ints, part});
}

// One block per (image, column): one vertical layer of row i.
__global__ void __launch_bounds__(kVerticalThreads) vertical_kernel(const __grid_constant__ Plan P, int i, int layer) {
  DeviceBlock blk{int(threadIdx.x), int(blockDim.x)};
  vertical_body(P, int(blockIdx.x) / P.S, int(blockIdx.x) % P.S, i, layer, blk);
}

}  // namespace

void launch_row(const Plan& P, int i) {
  row_kernel<<<unsigned(P.n), kRowThreads, size_t(P.part_len) * sizeof(float), cuda::stream()>>>(P, i);
  LAUNCH_CHECK();
}

void launch_vertical(const Plan& P, int i, int layer) {
  vertical_kernel<<<unsigned(P.n) * unsigned(P.S), kVerticalThreads, 0, cuda::stream()>>>(P, i, layer);
  LAUNCH_CHECK();
}

}  // namespace prsr::gpu_sampler
