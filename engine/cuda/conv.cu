// Convolutions of the CUDA backend: conv2d (stride 1, asymmetric padding, any kernel shape) and
// deconv2d (the transposed, strided conv), forward and backward.
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
//
// Semantics: ref::conv2d_* / ref::deconv2d_* (engine/ref/kernels.h).
#include <algorithm>

#include "engine/cuda/common.cuh"

namespace prsr::cuda {

namespace {

constexpr size_t kColumnsCap = size_t(1) << 26;  // floats (256 MiB) per column buffer

// Geometry of one im2col / col2im: images [C][H][W], kernel KH x KW, stride, top/left padding,
// column grid OH x OW.  cols[img][(c*KH + ky)*KW + kx][oi*OW + oj] =
//   x[img][c][oi*stride - pad_t + ky][oj*stride - pad_l + kx]   (0 outside the image)
struct ColGeom {
  int C, H, W, KH, KW, stride, pad_t, pad_l, OH, OW;
};

#define GRID_STRIDE(i, n) \
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += size_t(gridDim.x) * blockDim.x)

// e runs over cols = [nimg][C][KH][KW][OH][OW] (the layout of ColGeom's comment).
__global__ void im2col_kernel(float* cols, const float* x, ColGeom g, size_t total) {
  GRID_STRIDE(e, total) {
    size_t t = e;
    const int oj = int(t % g.OW);
    t /= g.OW;
    const int oi = int(t % g.OH);
    t /= g.OH;
    const int kx = int(t % g.KW);
    t /= g.KW;
    const int ky = int(t % g.KH);
    t /= g.KH;
    const int c = int(t % g.C);
    const size_t img = t / g.C;
    const int yi = oi * g.stride - g.pad_t + ky;
    const int xj = oj * g.stride - g.pad_l + kx;
    cols[e] = (yi >= 0 && yi < g.H && xj >= 0 && xj < g.W) ? x[((img * g.C + c) * g.H + yi) * g.W + xj] : 0.0f;
  }
}

// e runs over x = [nimg][C][H][W]. The column entries that im2col reads from x[img][c][yi][xj]
// are those with yi = oi*stride - pad_t + ky, i.e. oi = (yi + pad_t - ky) / stride when that
// divides exactly and lands in [0, OH) (same for columns).
__global__ void col2im_kernel(float* x, const float* cols, const float* bias, bool accumulate, ColGeom g,
                              size_t total) {
  const size_t plane = size_t(g.OH) * g.OW;
  GRID_STRIDE(e, total) {
    size_t t = e;
    const int xj = int(t % g.W);
    t /= g.W;
    const int yi = int(t % g.H);
    t /= g.H;
    const int c = int(t % g.C);
    const size_t img = t / g.C;
    float acc = 0.0f;
    for (int ky = 0; ky < g.KH; ++ky) {
      const int oy = yi + g.pad_t - ky;
      if (oy < 0 || oy % g.stride != 0) continue;
      const int oi = oy / g.stride;
      if (oi >= g.OH) continue;
      for (int kx = 0; kx < g.KW; ++kx) {
        const int ox = xj + g.pad_l - kx;
        if (ox < 0 || ox % g.stride != 0) continue;
        const int oj = ox / g.stride;
        if (oj >= g.OW) continue;
        acc += cols[(((img * g.C + c) * g.KH + ky) * g.KW + kx) * plane + size_t(oi) * g.OW + oj];
      }
    }
    if (accumulate) x[e] += acc;
    else x[e] = (bias ? bias[c] : 0.0f) + acc;
  }
}

// y[img][o][p] += b[o];  e runs over [n][co][P].
__global__ void bias_add_kernel(float* y, const float* b, int co, size_t plane, size_t total) {
  GRID_STRIDE(e, total) y[e] += b[(e / plane) % size_t(co)];
}

// db[o] += sum_{img, p} dy[img][o][p]: one block per channel, fixed-order double reduction.
constexpr int kReduceBlock = 256;
__global__ void bias_grad_kernel(float* db, const float* dy, int n, int co, size_t plane) {
  __shared__ double sh[kReduceBlock];
  const int o = blockIdx.x;
  const size_t count = size_t(n) * plane;
  double s = 0.0;
  for (size_t e = threadIdx.x; e < count; e += kReduceBlock) {
    const size_t img = e / plane, p = e % plane;
    s += double(dy[(img * co + o) * plane + p]);
  }
  s = block_sum<kReduceBlock>(s, sh);
  if (threadIdx.x == 0) db[o] += float(s);
}

// wt[c][o][t] = w[o][c][t], t < kk;  e runs over wt.
__global__ void permute_oi_kernel(float* wt, const float* w, int co, int ci, int kk, size_t total) {
  GRID_STRIDE(e, total) {
    const int t = int(e % kk);
    const size_t r = e / kk;
    const int o = int(r % co), c = int(r / co);
    wt[e] = w[(size_t(o) * ci + c) * kk + t];
  }
}

// dw[o][c][t] += dwt[c][o][t];  e runs over dw.
__global__ void permute_io_add_kernel(float* dw, const float* dwt, int co, int ci, int kk, size_t total) {
  GRID_STRIDE(e, total) {
    const int t = int(e % kk);
    const size_t r = e / kk;
    const int c = int(r % ci), o = int(r / ci);
    dw[e] += dwt[(size_t(c) * co + o) * kk + t];
  }
}

#undef GRID_STRIDE

void bias_add(float* y, const float* b, int n, int co, size_t plane) {
  const size_t total = size_t(n) * co * plane;
  if (total == 0) return;
  bias_add_kernel<<<grid_for(total), kBlock, 0, stream()>>>(y, b, co, plane, total);
  LAUNCH_CHECK();
}

void bias_grad(float* db, const float* dy, int n, int co, size_t plane) {
  if (co == 0) return;
  bias_grad_kernel<<<co, kReduceBlock, 0, stream()>>>(db, dy, n, co, plane);
  LAUNCH_CHECK();
}

// Images per chunk so that one column buffer of per_image floats each stays under the cap.
int chunk_images(int n, size_t per_image) {
  const size_t fit = per_image ? kColumnsCap / per_image : size_t(n);
  return int(std::max<size_t>(1, std::min<size_t>(size_t(n), fit)));
}

// Weights oihw -> wt [ci][co*kk] in the WeightsT slot.
float* transposed_weights(const float* w, int co, int ci, int kk) {
  const size_t total = size_t(co) * ci * kk;
  float* wt = workspace_as<float>(Slot::WeightsT, total);
  permute_oi_kernel<<<grid_for(total), kBlock, 0, stream()>>>(wt, w, co, ci, kk, total);
  LAUNCH_CHECK();
  return wt;
}

// The deconv's column geometry: the "image" is the deconv output [co][ho][wo], the column grid
// is the deconv input h x w, so that y[o][i*s - p + ky][j*s - p + kx] <-> cols[o,ky,kx][i, j].
ColGeom deconv_cols(const DeconvGeom& g) {
  return ColGeom{g.co, g.ho(), g.wo(), g.k, g.k, g.stride, g.pad, g.pad, g.h, g.w};
}

// Row-major GEMM on cuBLAS (which is column-major): C[M][N] = op(A)[M][K] . op(B)[K][N] + beta*C,
// where A is stored [M][K] (or [K][M] when trans_a) and B [K][N] (or [N][K] when trans_b), all
// densely packed. The batched form steps A, B and C by the given strides (0 = shared).
// cuBLAS sees a row-major [R][C] matrix as its column-major transpose [C][R] (ld = C). So the
// row-major C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T: swap the operands, keep
// each one's transpose flag, and use the row lengths as leading dimensions.
void gemm_rm(bool trans_a, bool trans_b, int M, int N, int K, const float* A, const float* B, float beta, float* C) {
  if (M == 0 || N == 0) return;
  const float alpha = 1.0f;
  CUBLAS_CHECK(cublasSgemm(cublas(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
                           &alpha, B, trans_b ? K : N, A, trans_a ? M : K, &beta, C, N));
}

void gemm_rm_batched(bool trans_a, bool trans_b, int M, int N, int K, const float* A, long long stride_a,
                     const float* B, long long stride_b, float beta, float* C, long long stride_c, int batch) {
  if (M == 0 || N == 0 || batch == 0) return;
  const float alpha = 1.0f;
  CUBLAS_CHECK(cublasSgemmStridedBatched(cublas(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                         trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, trans_b ? K : N,
                                         stride_b, A, trans_a ? M : K, stride_a, &beta, C, N, stride_c, batch));
}

// cols = im2col(x) for nimg images (overwrites cols).
void im2col(float* cols, const float* x, const ColGeom& g, int nimg) {
  const size_t total = size_t(nimg) * g.C * g.KH * g.KW * g.OH * g.OW;
  if (total == 0) return;
  im2col_kernel<<<grid_for(total), kBlock, 0, stream()>>>(cols, x, g, total);
  LAUNCH_CHECK();
}

// The adjoint, as a gather (no atomics): x[img][c][yi][xj] gets the sum of every column entry
// that im2col would read from it. accumulate: x += sum; otherwise x = bias[c] (or 0) + sum.
void col2im(float* x, const float* cols, const float* bias, bool accumulate, const ColGeom& g, int nimg) {
  const size_t total = size_t(nimg) * g.C * g.H * g.W;
  if (total == 0) return;
  col2im_kernel<<<grid_for(total), kBlock, 0, stream()>>>(x, cols, bias, accumulate, g, total);
  LAUNCH_CHECK();
}

}  // namespace

}  // namespace prsr::cuda

namespace prsr {

// ---------------------------------------------------------------- conv2d (stride 1)

void cuda::conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g) {
  const int ho = g.ho(), wo = g.wo();
  const int P = ho * wo, K = g.ci * g.kh * g.kw;
  const size_t xs = size_t(g.ci) * g.h * g.w, ys = size_t(g.co) * P;
  if (g.n == 0 || g.co == 0 || P <= 0) return;
  const bool direct = g.kh == 1 && g.kw == 1 && g.pad_t == 0 && g.pad_b == 0 && g.pad_l == 0 && g.pad_r == 0;
  if (direct) {
    // x[img] is already cols [ci][h*w]: Y = W . X for every image at once.
    gemm_rm_batched(false, false, g.co, P, K, w, 0, x, (long long)xs, 0.0f, y, (long long)ys, g.n);
  } else {
    const ColGeom cg{g.ci, g.h, g.w, g.kh, g.kw, 1, g.pad_t, g.pad_l, ho, wo};
    const size_t per_image = size_t(K) * P;
    const int chunk = chunk_images(g.n, per_image);
    float* cols = workspace_as<float>(Slot::Columns, per_image * chunk);
    for (int i0 = 0; i0 < g.n; i0 += chunk) {
      const int m = std::min(chunk, g.n - i0);
      im2col(cols, x + i0 * xs, cg, m);
      gemm_rm_batched(false, false, g.co, P, K, w, 0, cols, (long long)per_image, 0.0f, y + i0 * ys, (long long)ys, m);
    }
  }
  if (b) bias_add(y, b, g.n, g.co, size_t(P));
}

// Backward of y = W . cols(x) + b:  dx += col2im(W^T . dy),  dW += dy . cols(x)^T,  db += sum dy.
// Fresh gradients (backend.h) are zeroed first, then accumulated into as usual.
void cuda::conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                           const ConvGeom& g, unsigned fresh) {
  const int ho = g.ho(), wo = g.wo();
  const int P = ho * wo, K = g.ci * g.kh * g.kw;
  const size_t xs = size_t(g.ci) * g.h * g.w, ys = size_t(g.co) * P;
  if (dx && (fresh & 1u)) fill(dx, 0.0f, size_t(g.n) * xs);
  if (dw && (fresh & 2u)) fill(dw, 0.0f, size_t(g.co) * K);
  if (db && (fresh & 4u)) fill(db, 0.0f, size_t(g.co));
  if (g.n == 0 || P <= 0) return;
  if (db) bias_grad(db, dy, g.n, g.co, size_t(P));
  if (!dx && !dw) return;
  const bool direct = g.kh == 1 && g.kw == 1 && g.pad_t == 0 && g.pad_b == 0 && g.pad_l == 0 && g.pad_r == 0;
  if (direct) {
    // dx[img] [ci][P] += W^T . dy[img]: accumulate straight into dx (beta = 1).
    if (dx) gemm_rm_batched(true, false, K, P, g.co, w, 0, dy, (long long)ys, 1.0f, dx, (long long)xs, g.n);
    if (dw)
      for (int i = 0; i < g.n; ++i) gemm_rm(false, true, g.co, K, P, dy + i * ys, x + i * xs, 1.0f, dw);
    return;
  }
  const ColGeom cg{g.ci, g.h, g.w, g.kh, g.kw, 1, g.pad_t, g.pad_l, ho, wo};
  const size_t per_image = size_t(K) * P;
  const int chunk = chunk_images(g.n, per_image);
  float* cols = workspace_as<float>(Slot::Columns, per_image * chunk);
  for (int i0 = 0; i0 < g.n; i0 += chunk) {
    const int m = std::min(chunk, g.n - i0);
    if (dx) {
      gemm_rm_batched(true, false, K, P, g.co, w, 0, dy + i0 * ys, (long long)ys, 0.0f, cols, (long long)per_image, m);
      col2im(dx + i0 * xs, cols, nullptr, true, cg, m);
    }
    if (dw) {
      // cols is reused: the stream runs the col2im above before this im2col.
      im2col(cols, x + i0 * xs, cg, m);
      for (int i = 0; i < m; ++i) gemm_rm(false, true, g.co, K, P, dy + (i0 + i) * ys, cols + i * per_image, 1.0f, dw);
    }
  }
}

// ---------------------------------------------------------------- deconv2d (transposed conv)

// y = b + col2im(Wt^T . x):  cols[o,ky,kx][i,j] = sum_c w[o,c,ky,kx] x[c,i,j].
void cuda::deconv2d_forward(float* y, const float* x, const float* w, const float* b, const DeconvGeom& g) {
  const int P = g.h * g.w, kk = g.k * g.k, M = g.co * kk;
  const size_t xs = size_t(g.ci) * P, ys = size_t(g.co) * g.ho() * g.wo();
  if (g.n == 0 || ys == 0) return;
  const ColGeom cg = deconv_cols(g);
  const float* wt = transposed_weights(w, g.co, g.ci, kk);
  const size_t per_image = size_t(M) * P;
  const int chunk = chunk_images(g.n, per_image);
  float* cols = workspace_as<float>(Slot::Columns, per_image * chunk);
  for (int i0 = 0; i0 < g.n; i0 += chunk) {
    const int m = std::min(chunk, g.n - i0);
    gemm_rm_batched(true, false, M, P, g.ci, wt, 0, x + i0 * xs, (long long)xs, 0.0f, cols, (long long)per_image, m);
    col2im(y + i0 * ys, cols, b, false, cg, m);
  }
}

// With cols(dy)[o,ky,kx][i,j] = dy[o][i*s - p + ky][j*s - p + kx]:
//   dx[c][i,j] += sum_{o,ky,kx} w[o,c,ky,kx] cols(dy)   = (Wt . cols(dy))[c][i,j]
//   dw[o,c,ky,kx] += sum_{n,i,j} x[c][i,j] cols(dy)     = (X . cols(dy)^T)[c][o,ky,kx]
void cuda::deconv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                             const DeconvGeom& g, unsigned fresh) {
  const int P = g.h * g.w, kk = g.k * g.k, M = g.co * kk;
  const size_t hwo = size_t(g.ho()) * g.wo();
  const size_t xs = size_t(g.ci) * P, ys = size_t(g.co) * hwo;
  if (dx && (fresh & 1u)) fill(dx, 0.0f, size_t(g.n) * xs);
  if (dw && (fresh & 2u)) fill(dw, 0.0f, size_t(g.ci) * M);
  if (db && (fresh & 4u)) fill(db, 0.0f, size_t(g.co));
  if (g.n == 0) return;
  if (db) bias_grad(db, dy, g.n, g.co, hwo);
  if (!dx && !dw) return;
  if (P == 0 || M == 0 || g.ci == 0) return;
  const ColGeom cg = deconv_cols(g);
  const float* wt = dx ? transposed_weights(w, g.co, g.ci, kk) : nullptr;
  float* dwt = dw ? workspace_as<float>(Slot::WeightGrad, size_t(g.ci) * M) : nullptr;
  const size_t per_image = size_t(M) * P;
  const int chunk = chunk_images(g.n, per_image);
  float* cols = workspace_as<float>(Slot::Columns, per_image * chunk);
  for (int i0 = 0; i0 < g.n; i0 += chunk) {
    const int m = std::min(chunk, g.n - i0);
    im2col(cols, dy + i0 * ys, cg, m);
    if (dx)
      gemm_rm_batched(false, false, g.ci, P, M, wt, 0, cols, (long long)per_image, 1.0f, dx + i0 * xs, (long long)xs,
                      m);
    if (dw)
      for (int i = 0; i < m; ++i)
        gemm_rm(false, true, g.ci, M, P, x + (i0 + i) * xs, cols + i * per_image, i0 + i == 0 ? 0.0f : 1.0f, dwt);
  }
  if (dw) {
    const size_t total = size_t(g.co) * g.ci * kk;
    permute_io_add_kernel<<<grid_for(total), kBlock, 0, stream()>>>(dw, dwt, g.co, g.ci, kk, total);
    LAUNCH_CHECK();
  }
}

}  // namespace prsr
