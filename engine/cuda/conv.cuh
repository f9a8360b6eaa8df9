// Convolutions of the CUDA backend (engine/cuda/conv.cu): conv2d (stride 1, asymmetric padding,
// any kernel shape) and deconv2d (the transposed, strided conv), forward and backward.
//
// Every one of them is im2col / col2im (own kernels) around a cuBLAS sgemm, one image at a time
// or strided-batched over a chunk of images:
//
//   conv forward       Y[co][P]  = W[co][K] . cols(x)[K][P]                (+ bias kernel)
//   conv backward dx   dcols[K][P] = W^T . dY,  dx += col2im(dcols)
//   conv backward dw   dW[co][K] += dY[co][P] . cols(x)^T                  (beta = 1)
//   deconv forward     cols[M][P] = Wt^T . X[ci][P],  y = b + col2im(cols)  (stride s)
//   deconv backward dx dx[ci][P] += Wt[ci][M] . cols(dy)                   (beta = 1)
//   deconv backward dw dWt[ci][M] = sum_n X . cols(dy)^T, dw += permute(dWt)
//
// with K = ci*kh*kw, P = output (conv) or input (deconv) pixels, M = co*k*k, and Wt[c][o,ky,kx] =
// w[o][c][ky][kx] (a small permute kernel: w is oihw, the GEMM needs c as the row). A 1x1 conv
// without padding skips im2col: x is its own column matrix. Column buffers come from the
// Columns workspace slot, in chunks of images so a large batch never needs more than
// kColumnsCap floats.
#pragma once
#include "engine/cuda/common.cuh"

namespace prsr::cuda {

constexpr size_t kColumnsCap = size_t(1) << 26;  // floats (256 MiB) per column buffer

// Row-major GEMM on cuBLAS (which is column-major): C[M][N] = op(A)[M][K] . op(B)[K][N] + beta*C,
// where A is stored [M][K] (or [K][M] when trans_a) and B [K][N] (or [N][K] when trans_b), all
// densely packed. The batched form steps A, B and C by the given strides (0 = shared).
void gemm_rm(bool trans_a, bool trans_b, int M, int N, int K, const float* A, const float* B,
             float beta, float* C);
void gemm_rm_batched(bool trans_a, bool trans_b, int M, int N, int K, const float* A,
                     long long stride_a, const float* B, long long stride_b, float beta, float* C,
                     long long stride_c, int batch);

// Geometry of one im2col / col2im: images [C][H][W], kernel KH x KW, stride, top/left padding,
// column grid OH x OW.  cols[img][(c*KH + ky)*KW + kx][oi*OW + oj] =
//   x[img][c][oi*stride - pad_t + ky][oj*stride - pad_l + kx]   (0 outside the image)
struct ColGeom {
  int C, H, W, KH, KW, stride, pad_t, pad_l, OH, OW;
};
// cols = im2col(x) for nimg images (overwrites cols).
void im2col(float* cols, const float* x, const ColGeom& g, int nimg);
// The adjoint, as a gather (no atomics): x[img][c][yi][xj] gets the sum of every column entry
// that im2col would read from it. accumulate: x += sum; otherwise x = bias[c] (or 0) + sum.
void col2im(float* x, const float* cols, const float* bias, bool accumulate, const ColGeom& g,
            int nimg);

}  // namespace prsr::cuda
