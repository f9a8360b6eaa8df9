// Losses of the CUDA backend (engine/cuda/loss.cu): fused softmax cross-entropy over 256 levels,
// mse, mean; forward and backward. Semantics: ref::softmax_ce_* / mse_* / mean_*.
//
// softmax_ce: one thread per (sample, colour, pixel) row. The row's 256 logits sit at
// base + level*hw, so neighbouring threads (neighbouring pixels) read neighbouring addresses at
// every level: coalesced without any transpose. The logit is a + b (or a alone when b is null).
//   forward : loss_row = log(sum_l exp(z_l - max)) + max - z_target
//   backward: da, db (nullable) += dloss/(n*colors*hw) * (softmax(z) - onehot(target)),
//             recomputing max and the sum of exponentials.
//
// Scalar results (mean loss, mse, mean) use a deterministic two-stage reduction: a fixed grid
// (depending only on the element count) of blocks each writes one double partial sum (fixed
// per-thread order + common.cuh's block_sum tree), then one block adds the partials in a fixed
// order and writes the float result. No atomics: every run gives the same bits.
#pragma once
#include "engine/cuda/common.cuh"

namespace prsr::cuda {

constexpr int kSumBlock = 256;      // threads per reduction block
constexpr int kMaxPartials = 1024;  // blocks of the first stage, at most

}  // namespace prsr::cuda
