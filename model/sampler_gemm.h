// Small dense products for the cached sampler (model/sampler.cpp): C = bias + A x B with B packed
// once per model. The products are small (a few images x tens to hundreds of channels, tens to
// a thousand inputs) and there are ~60 of them per sub-pixel, so a library call's overhead would
// dominate; this is one register-blocked micro-kernel (kMR rows x kNR columns of accumulators).
//
// Portable vectorisation: the kernel is written with GCC/Clang vector extensions, and the width
// is picked from the target the build compiles for (__AVX512F__: 16 floats, __AVX__: 8, else 4).
// The compiler emits AVX-512, AVX2/FMA or SSE for the same source; a target without any of them
// still compiles (generic vectors are lowered to what it has). Nothing here is hard-coded to
// one instruction set.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

namespace prsr::sampler_gemm {

#if defined(__AVX512F__)
constexpr int kVec = 16;
#elif defined(__AVX__)
constexpr int kVec = 8;
#else
constexpr int kVec = 4;
#endif
// Unaligned loads and stores (aligned(4)); may alias float.
typedef float vfloat __attribute__((vector_size(kVec * sizeof(float)), aligned(4), may_alias));
constexpr int kNR = 2 * kVec;            // columns per panel: two vectors
constexpr int kMR = kVec == 16 ? 8 : 6;  // rows per tile: 16 accumulators (AVX-512) or 12 (AVX2/SSE)

// B [K][N] packed in panels of kNR columns: panel q holds its bias (columns [q*kNR, (q+1)*kNR),
// zero padded past N) and then those columns of B as [K][kNR], zero padded: one contiguous run
// per panel, and the panels one after another, so a product streams one run of memory (at batch
// 1 the products are latency-bound; the bias in a separate vector was one more cache miss per
// tile: batch 1 1-5% slower, docs/performance.md).
struct Packed {
  int K = 0, N = 0;
  std::vector<float> data;  // [panels][kNR + K * kNR]
  int panels() const { return (N + kNR - 1) / kNR; }
  size_t panel_floats() const { return size_t(kNR) * (size_t(K) + 1); }
  const float* bias(int q) const { return data.data() + size_t(q) * panel_floats(); }
  const float* panel(int q) const { return bias(q) + kNR; }
  float bias_of(int n) const { return bias(n / kNR)[n % kNR]; }
};

// w(k, n) = B[k][n], bias(n).
template <class W, class Bias>
Packed pack(int K, int N, W w, Bias bias) {
  Packed p;
  p.K = K;
  p.N = N;
  p.data.assign(size_t(p.panels()) * p.panel_floats(), 0.f);
  for (int n = 0; n < N; ++n) {
    const int q = n / kNR, r = n % kNR;
    float* panel = p.data.data() + size_t(q) * p.panel_floats();
    panel[r] = bias(n);
    for (int k = 0; k < K; ++k) panel[size_t(kNR) + size_t(k) * kNR + r] = w(k, n);
  }
  return p;
}

// One tile: MR rows of A (row stride lda) x one panel B [K][kNR] -> C (row stride ldc), ncols
// columns kept. Sparse: A's column j pairs with B's row kidx[j] (the inputs that are zero in
// every row were left out: adding 0 * w leaves a float sum exactly as it is).
// One tile: MR rows of A (row stride lda) x one panel B [K][kNR] -> C (row stride ldc), ncols
// columns kept. Sparse: A's column j pairs with B's row kidx[j] (the inputs that are zero in
// every row were left out: adding 0 * w leaves a float sum exactly as it is). With one or two
// rows there are too few accumulators to hide the FMA latency: the k range is then split over
// kSplit independent partial sums, added at the end.
template <int MR, bool Sparse>
inline void tile(int K, const float* A, long lda, const float* B, const float* bias, float* C, long ldc, int ncols,
                 const int* kidx) {
  constexpr int kSplit = MR <= 2 ? 4 : 1;
  vfloat acc[kSplit][MR][2];
  const vfloat b0 = *reinterpret_cast<const vfloat*>(bias), b1 = *reinterpret_cast<const vfloat*>(bias + kVec);
  for (int u = 0; u < kSplit; ++u)
    for (int m = 0; m < MR; ++m) {
      acc[u][m][0] = u == 0 ? b0 : vfloat{};
      acc[u][m][1] = u == 0 ? b1 : vfloat{};
    }
  auto step = [&](int u, int k) {
    const float* b = B + size_t(Sparse ? kidx[k] : k) * kNR;
    const vfloat v0 = *reinterpret_cast<const vfloat*>(b), v1 = *reinterpret_cast<const vfloat*>(b + kVec);
    for (int m = 0; m < MR; ++m) {
      const float a = A[m * lda + k];
      acc[u][m][0] += a * v0;
      acc[u][m][1] += a * v1;
    }
  };
  int k = 0;
  if constexpr (kSplit > 1)
    for (; k + kSplit <= K; k += kSplit)
      for (int u = 0; u < kSplit; ++u) step(u, k + u);
  for (; k < K; ++k) step(0, k);
  for (int u = 1; u < kSplit; ++u)
    for (int m = 0; m < MR; ++m) {
      acc[0][m][0] += acc[u][m][0];
      acc[0][m][1] += acc[u][m][1];
    }
  for (int m = 0; m < MR; ++m) {
    float* c = C + m * ldc;
    if (ncols == kNR) {
      *reinterpret_cast<vfloat*>(c) = acc[0][m][0];
      *reinterpret_cast<vfloat*>(c + kVec) = acc[0][m][1];
    } else {
      float t[kNR];
      std::memcpy(t, &acc[0][m][0], sizeof(vfloat));
      std::memcpy(t + kVec, &acc[0][m][1], sizeof(vfloat));
      std::copy(t, t + ncols, c);
    }
  }
}

template <bool Sparse>
inline void tile_rows(int rows, int K, const float* A, long lda, const float* B, const float* bias, float* C, long ldc,
                      int ncols, const int* kidx) {
  switch (rows) {
#define PRSR_TILE(R) \
  case R: return tile<(R <= kMR ? R : 1), Sparse>(K, A, lda, B, bias, C, ldc, ncols, kidx);
    PRSR_TILE(1) PRSR_TILE(2) PRSR_TILE(3) PRSR_TILE(4) PRSR_TILE(5) PRSR_TILE(6) PRSR_TILE(7) PRSR_TILE(8)
#undef PRSR_TILE
  }
}

// Tile t of C = bias + A x B: row block t % mblocks (kMR rows) of panel t / mblocks. With kidx
// (nk entries), A holds only the columns kidx[0..nk) (see tile).
inline void gemm_tile(int t, int mblocks, const float* A, long lda, int M, const Packed& B, float* C, long ldc,
                      const int* kidx, int nk) {
  const int q = t / mblocks, m0 = (t % mblocks) * kMR, rows = std::min(kMR, M - m0);
  const int ncols = std::min(kNR, B.N - q * kNR);
  const float* Bq = B.panel(q);
  const float* bias = B.bias(q);
  if (kidx) tile_rows<true>(rows, nk, A + m0 * lda, lda, Bq, bias, C + m0 * ldc + q * kNR, ldc, ncols, kidx);
  else tile_rows<false>(rows, B.K, A + m0 * lda, lda, Bq, bias, C + m0 * ldc + q * kNR, ldc, ncols, nullptr);
}

// C[m][n] = bias[n] + sum_k A[m][k] * B[k][n] for m < M, n < B.N (lda, ldc in floats). The
// tiles (kMR rows x one panel, panel-major so a panel stays in cache across its row blocks) are
// shared out among `nthr` workers in contiguous runs: worker `tid` computes its own run only.
// With kidx (nk entries), A holds only the columns kidx[0..nk) (see tile).
inline void gemm(const float* A, long lda, int M, const Packed& B, float* C, long ldc, int tid = 0, int nthr = 1,
                 const int* kidx = nullptr, int nk = 0) {
  const int mblocks = (M + kMR - 1) / kMR, tiles = mblocks * B.panels();
  const int t0 = int(long(tiles) * tid / nthr), t1 = int(long(tiles) * (tid + 1) / nthr);
  for (int t = t0; t < t1; ++t) gemm_tile(t, mblocks, A, lda, M, B, C, ldc, kidx, nk);
}

// The same product, columns of panel q only (all M rows): for workers that claim panels one at
// a time.
inline void gemm_panel(int q, const float* A, long lda, int M, const Packed& B, float* C, long ldc,
                       const int* kidx = nullptr, int nk = 0) {
  const int mblocks = (M + kMR - 1) / kMR;
  for (int t = q * mblocks; t < (q + 1) * mblocks; ++t) gemm_tile(t, mblocks, A, lda, M, B, C, ldc, kidx, nk);
}

}  // namespace prsr::sampler_gemm
