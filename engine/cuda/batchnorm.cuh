// Batch norm of the CUDA backend (engine/cuda/batchnorm.cu), per channel over (n, hw).
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
#pragma once
#include "engine/cuda/common.cuh"

namespace prsr::cuda {

constexpr int kBatchNormBlock = 256;  // threads per channel block (power of two)

}  // namespace prsr::cuda
