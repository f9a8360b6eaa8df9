// Element-wise ops of the CUDA backend (engine/cuda/elementwise.cu): fill, axpy, add, mul,
// relu / tanh / sigmoid, gate, down_shift. Public entry points are declared in engine/backend.h;
// semantics are those of engine/ref/kernels.h.
//
// Every kernel is a grid-stride loop, one thread per element, launched with common.cuh's
// kBlock / grid_for. Activation backwards use the forward's output y, as in ref.
#pragma once
#include "engine/cuda/common.cuh"

namespace prsr::cuda {

// Device helpers shared with other op families (loss / gate use the same sigmoid).
__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

}  // namespace prsr::cuda
