// Shared plumbing of the CUDA backend: error checks, the one stream and cuBLAS handle, launch
// geometry, and the scratch workspace. Every .cu of engine/cuda/ includes this header.
//
// Ordering: every kernel, cuBLAS call and copy of the backend runs on one stream (created lazily
// with cudaStreamCreate, so it also orders with the legacy default stream). Work is therefore
// serial on the device, which is what lets the scratch slots below be reused by every op.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>

#include "engine/backend.h"
#include "engine/error.h"

namespace prsr::cuda {
namespace detail {
// Throws prsr::Error("CUDA error: <what> (<call>) at <file>:<line>").
[[noreturn]] void fail(const char* what, const char* call, const char* file, int line);
}  // namespace detail

// CUDA_CHECK(cudaMemcpy(...)): throws prsr::Error naming the call, file, line and CUDA's message.
#define CUDA_CHECK(call)                                                                    \
  do {                                                                                      \
    const cudaError_t prsr_err_ = (call);                                                   \
    if (prsr_err_ != cudaSuccess)                                                           \
      ::prsr::cuda::detail::fail(cudaGetErrorString(prsr_err_), #call, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(call)                                                                    \
  do {                                                                                        \
    const cublasStatus_t prsr_st_ = (call);                                                   \
    if (prsr_st_ != CUBLAS_STATUS_SUCCESS)                                                    \
      ::prsr::cuda::detail::fail(cublasGetStatusString(prsr_st_), #call, __FILE__, __LINE__); \
  } while (0)

// After every kernel launch: reports a bad launch configuration at the launch site.
#define LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

// The backend's stream and cuBLAS handle (created on first use; the handle is bound to the stream
// and carries the math mode chosen by set_tf32).
cudaStream_t stream();
cublasHandle_t cublas();

// Element-wise launch geometry: kBlock threads, enough blocks to cover n (capped; kernels use
// grid-stride loops). Callers skip the launch when n == 0 (a zero grid is a launch error).
constexpr int kBlock = 256;
inline unsigned grid_for(size_t n) {
  const size_t blocks = (n + kBlock - 1) / kBlock;
  const size_t cap = size_t(1) << 20;
  return unsigned(blocks < cap ? blocks : cap);
}

// Scratch workspace: a few named slots, each one device buffer that grows to the largest request
// seen and is then reused. After the first call with the largest shape, no op allocates. Growing
// synchronises the stream before freeing the old buffer. Slots are distinct so one op can hold
// several at once; two ops never overlap because all work is on one stream.
enum class Slot { Columns, WeightsT, WeightGrad, Reduce, SyncBn, Count };
void* workspace(Slot slot, size_t bytes);
template <class T>
T* workspace_as(Slot slot, size_t count) {
  return static_cast<T*>(workspace(slot, count * sizeof(T)));
}

// Deterministic block reduction: every thread passes its value; every thread gets the block's
// total. BLOCK must equal blockDim.x and be a power of two; sh holds BLOCK doubles (shared).
// The tree has a fixed shape, so the result does not depend on scheduling.
template <int BLOCK>
__device__ double block_sum(double v, double* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = BLOCK / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  const double total = sh[0];
  __syncthreads();  // sh may be reused right after
  return total;
}

}  // namespace prsr::cuda
