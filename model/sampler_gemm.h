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
#include <stdexcept>
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
constexpr int kNV = 2;                   // vectors per panel of a product of several rows
constexpr int kNR = kNV * kVec;          // its columns
constexpr int kMR = kVec == 16 ? 8 : 6;  // rows per tile: 16 accumulators (AVX-512) or 12 (AVX2/SSE)
constexpr int kRowNV = 4;                // vectors per panel of a product of one row (pack(..., kRowNV))
constexpr int kWideNV = 8;               // ... of head2 at batch 1 (see below)

// B [K][N] packed in panels of nv vectors (nv * kVec columns; the last panel only as many
// vectors as its columns need): panel q holds its bias (zero padded past N) and then its columns
// of B as [K][width], zero padded: one contiguous run per panel, the panels one after another,
// so a product streams one run of memory (at batch 1 the products are latency-bound; the bias in
// a separate vector was one more cache miss per tile: batch 1 1-5% slower, docs/performance.md).
// nv = kNV for products of several rows (kMR x kNR tiles); a product of one row has too few
// accumulators for the FMA latency anyway, and packs kRowNV vectors: fewer, wider panels, less
// padding (22 columns: 24, not 32). head2 at batch 1 (a matrix-vector product streaming ~1 MB of
// weights per pixel from L3, its zero inputs' rows skipped) packs kWideNV: each kept row is one
// run of 256 bytes (AVX2), not 128, and a list has half as many panels to claim (batch 1 1-3%
// faster in 11 of 12 alternating rounds); one accumulator per vector is enough there.
struct Packed {
  int K = 0, N = 0, nv = kNV;
  int np = 0;                             // panels (set by pack: no division per product)
  std::vector<float> data;                // the panels: [bias: width][K][width]
  int full() const { return nv * kVec; }  // a full panel's width
  int panels() const { return np; }
  int width(int q) const { return std::min(full(), (N - q * full() + kVec - 1) / kVec * kVec); }
  int cols() const { return N == 0 ? 0 : (panels() - 1) * full() + width(panels() - 1); }  // padded
  const float* bias(int q) const { return data.data() + size_t(q) * full() * (size_t(K) + 1); }
  const float* panel(int q) const { return bias(q) + width(q); }
  float bias_of(int n) const { return bias(n / full())[n % full()]; }
  float weight(int k, int n) const { return panel(n / full())[size_t(k) * width(n / full()) + n % full()]; }  // B[k][n]
};

// w(k, n) = B[k][n], bias(n); nv vectors per panel.
template <class W, class Bias>
Packed pack(int K, int N, W w, Bias bias, int nv = kNV) {
  Packed p;
  p.K = K;
  p.N = N;
  p.nv = nv;
  p.np = (N + p.full() - 1) / p.full();
  p.data.assign(size_t(p.cols()) * (size_t(K) + 1), 0.f);
  for (int n = 0; n < N; ++n) {
    const int q = n / p.full(), r = n % p.full(), wq = p.width(q);
    float* b = const_cast<float*>(p.bias(q));
    b[r] = bias(n);
    for (int k = 0; k < K; ++k) b[size_t(wq) + size_t(k) * wq + r] = w(k, n);
  }
  return p;
}

// One tile: MR rows of A (row stride lda) x one panel B [K][NV * kVec] -> C (row stride ldc),
// ncols columns kept. Sparse: A's column j pairs with B's row kidx[j] (the inputs that are zero
// in every row were left out: adding 0 * w leaves a float sum exactly as it is). With one or two
// rows there are too few accumulators to hide the FMA latency: the k range is then split over
// kSplit independent partial sums, added at the end. With init (row stride ldi), row m's sums
// get init[m * ldi ...] added (whole vectors: NV * kVec floats of each row are read): a sum the
// caller would otherwise add to C in a pass of its own (at batch 1 that pass is on the chain's
// critical path).
template <int MR, int NV, bool Sparse>
inline void tile(int K, const float* A, long lda, const float* B, const float* bias, float* C, long ldc, int ncols,
                 const int* kidx, const float* init, long ldi) {
  constexpr int kSplit = MR > 2 || NV >= kWideNV ? 1 : MR == 2 || NV <= 2 ? 4 : NV == 3 ? 3 : 2;
  constexpr int kW = NV * kVec;
  vfloat acc[kSplit][MR][NV];
  for (int u = 0; u < kSplit; ++u)
    for (int m = 0; m < MR; ++m)
      for (int v = 0; v < NV; ++v) acc[u][m][v] = u == 0 ? *reinterpret_cast<const vfloat*>(bias + v * kVec) : vfloat{};
  auto step = [&](int u, int k) {
    const float* b = B + size_t(Sparse ? kidx[k] : k) * kW;
    vfloat w[NV];
    for (int v = 0; v < NV; ++v) w[v] = *reinterpret_cast<const vfloat*>(b + v * kVec);
    for (int m = 0; m < MR; ++m) {
      const float a = A[m * lda + k];
      for (int v = 0; v < NV; ++v) acc[u][m][v] += a * w[v];
    }
  };
  int k = 0;
  if constexpr (kSplit > 1) {  // the partial sums added before the last k % kSplit terms (in registers)
    for (; k + kSplit <= K; k += kSplit)
      for (int u = 0; u < kSplit; ++u) step(u, k + u);
    for (int u = 1; u < kSplit; ++u)
      for (int m = 0; m < MR; ++m)
        for (int v = 0; v < NV; ++v) acc[0][m][v] += acc[u][m][v];
  }
  for (; k < K; ++k) step(0, k);
  if (init)  // added last: its load (at batch 1 often a line another core wrote) overlaps the products
    for (int m = 0; m < MR; ++m)
      for (int v = 0; v < NV; ++v) acc[0][m][v] += *reinterpret_cast<const vfloat*>(init + m * ldi + v * kVec);
  // A partial panel: its whole vectors, then the last one's lanes one by one (not a copy through
  // an array: taking acc's address kept the accumulators in memory, and the copy was a memcpy
  // call; ~5-10 TSC cycles per product of one row on the chain at batch 1).
  const int whole = ncols / kVec;
  for (int m = 0; m < MR; ++m) {
    float* c = C + m * ldc;
    for (int v = 0; v < NV; ++v)
      if (v < whole) {
        *reinterpret_cast<vfloat*>(c + v * kVec) = acc[0][m][v];
      } else if (v == whole) {
        const vfloat last = acc[0][m][v];
        for (int e = 0; e < ncols - whole * kVec; ++e) c[v * kVec + e] = last[e];
      }
  }
}

// The tile of `rows` rows (1 to kMR) and a panel of nv vectors (1 to kNV; one row: 1 to
// kWideNV, the last panel of a kRowNV or kWideNV packing may be narrower than the others), or
// null for any other shape.
using TileFn = void (*)(int, const float*, long, const float*, const float*, float*, long, int, const int*,
                        const float*, long);
template <int NV, bool Sparse>
inline TileFn rows_tile(int rows) {
  static_assert(kMR <= 8, "rows_tile: one case per row count up to kMR");
  switch (rows) {
#define PRSR_TILE(R) \
  case R: return R <= kMR ? &tile<(R <= kMR ? R : 1), NV, Sparse> : nullptr;
    PRSR_TILE(1) PRSR_TILE(2) PRSR_TILE(3) PRSR_TILE(4) PRSR_TILE(5) PRSR_TILE(6) PRSR_TILE(7) PRSR_TILE(8)
#undef PRSR_TILE
  }
  return nullptr;
}
template <bool Sparse>
inline TileFn tile_fn(int rows, int nv) {
  static_assert(kNV == 2 && kWideNV == 8, "tile_fn: one case per panel width");
  if (rows == 1) switch (nv) {
#define PRSR_TILE(V) \
  case V: return &tile<1, V, Sparse>;
      PRSR_TILE(1) PRSR_TILE(2) PRSR_TILE(3) PRSR_TILE(4) PRSR_TILE(5) PRSR_TILE(6) PRSR_TILE(7) PRSR_TILE(8)
#undef PRSR_TILE
    }
  if (nv == 1) return rows_tile<1, Sparse>(rows);
  if (nv == 2) return rows_tile<2, Sparse>(rows);
  return nullptr;
}

// rows x one panel of nv vectors (see tile_fn).
template <bool Sparse>
inline void tile_rows(int rows, int nv, int K, const float* A, long lda, const float* B, const float* bias, float* C,
                      long ldc, int ncols, const int* kidx, const float* init, long ldi) {
  const TileFn f = tile_fn<Sparse>(rows, nv);
  if (!f)
    throw std::logic_error(
        "sampler_gemm: a tile of 1 to kMR rows and 1 to kNV vectors, or of one row and 1 to "
        "kWideNV vectors");
  f(K, A, lda, B, bias, C, ldc, ncols, kidx, init, ldi);
}

// Tile t of C = bias + A x B: row block t % mblocks (kMR rows, or 1 with wider panels) of panel
// t / mblocks. With kidx (nk entries), A holds only the columns kidx[0..nk) (see tile).
inline int row_block(const Packed& B) { return B.nv > kNV ? 1 : kMR; }
// Rows [m0, m0 + rows) of C, panel q's columns.
// With init: added to the rows' sums (see tile), init[m * ldi + n] to column n.
inline void panel_rows(int q, int m0, int rows, const float* A, long lda, const Packed& B, float* C, long ldc,
                       const int* kidx, int nk, const float* init = nullptr, long ldi = 0) {
  const int ncols = std::min(B.full(), B.N - q * B.full()), nv = B.width(q) / kVec;
  const float* Bq = B.panel(q);
  const float* bias = B.bias(q);
  float* Cq = C + m0 * ldc + q * B.full();
  const float* iq = init ? init + m0 * ldi + q * B.full() : nullptr;
  if (kidx) tile_rows<true>(rows, nv, nk, A + m0 * lda, lda, Bq, bias, Cq, ldc, ncols, kidx, iq, ldi);
  else tile_rows<false>(rows, nv, B.K, A + m0 * lda, lda, Bq, bias, Cq, ldc, ncols, nullptr, iq, ldi);
}
inline void gemm_tile(int t, int mblocks, const float* A, long lda, int M, const Packed& B, float* C, long ldc,
                      const int* kidx, int nk) {
  const int mr = row_block(B), q = t / mblocks, m0 = (t % mblocks) * mr;
  panel_rows(q, m0, std::min(mr, M - m0), A, lda, B, C, ldc, kidx, nk);
}

// C[m][n] = bias[n] + sum_k A[m][k] * B[k][n] for m < M, n < B.N (lda, ldc in floats). The
// tiles (kMR rows x one panel, panel-major so a panel stays in cache across its row blocks) are
// shared out among `nthr` workers in contiguous runs: worker `tid` computes its own run only.
// With kidx (nk entries), A holds only the columns kidx[0..nk) (see tile).
inline void gemm(const float* A, long lda, int M, const Packed& B, float* C, long ldc, int tid = 0, int nthr = 1,
                 const int* kidx = nullptr, int nk = 0) {
  if (nthr == 1 && M >= 1 && M <= row_block(B)) {  // one row block (the chain at batch 1): no tile arithmetic
    for (int q = 0; q < B.panels(); ++q) panel_rows(q, 0, M, A, lda, B, C, ldc, kidx, nk);
    return;
  }
  const int mblocks = (M + row_block(B) - 1) / row_block(B), tiles = mblocks * B.panels();
  const int t0 = int(long(tiles) * tid / nthr), t1 = int(long(tiles) * (tid + 1) / nthr);
  for (int t = t0; t < t1; ++t) gemm_tile(t, mblocks, A, lda, M, B, C, ldc, kidx, nk);
}

// C = init + bias + A x B on one thread (init: M rows, row stride ldi, each read up to B.cols()
// floats: whole vectors, so a row's padding past B.N must be readable; its values only reach
// C's padding, which is not written). init is added to the accumulators before they are stored,
// instead of in a pass over C afterwards.
inline void gemm_init(const float* init, long ldi, const float* A, long lda, int M, const Packed& B, float* C,
                      long ldc) {
  const int mr = row_block(B);
  for (int q = 0; q < B.panels(); ++q)
    for (int m0 = 0; m0 < M; m0 += mr)
      panel_rows(q, m0, std::min(mr, M - m0), A, lda, B, C, ldc, nullptr, 0, init, ldi);
}

// One row times a product of one panel, its tile chosen once: the chain at batch 1 runs two of
// these per layer and sub-pixel, and going through gemm_init / panel_rows / tile_rows (the
// panel's shape read again, a switch, two calls) was ~30-40 TSC cycles of each product's
// ~150-250. Points into B's panel: valid while B is neither moved nor repacked.
struct RowProduct {
  TileFn fn = nullptr;
  const float* panel = nullptr;
  const float* bias = nullptr;
  int K = 0, N = 0, width = 0;
  explicit operator bool() const { return fn != nullptr; }
  // C[n] = init[n] + bias[n] + sum_k A[k] B[k][n] for n < N (init may be null; read up to width);
  // whole_vectors: C has room for the panel's width, and its padding lanes are written too (a
  // scratch row: the next whole-vector loads then forward from one store each).
  void operator()(const float* A, const float* init, float* C, bool whole_vectors = false) const {
    fn(K, A, 0, panel, bias, C, 0, whole_vectors ? width : N, nullptr, init, 0);
  }
};
inline RowProduct row_product(const Packed& B) {
  RowProduct r;
  if (B.panels() != 1) return r;
  r.fn = tile_fn<false>(1, B.width(0) / kVec);
  if (r.fn) r.panel = B.panel(0), r.bias = B.bias(0), r.K = B.K, r.N = B.N, r.width = B.width(0);
  return r;
}

// The same product, columns of panel q only (all M rows): for workers that claim panels one at
// a time.
inline void gemm_panel(int q, const float* A, long lda, int M, const Packed& B, float* C, long ldc,
                       const int* kidx = nullptr, int nk = 0) {
  if (M >= 1 && M <= row_block(B)) return panel_rows(q, 0, M, A, lda, B, C, ldc, kidx, nk);
  const int mblocks = (M + row_block(B) - 1) / row_block(B);
  for (int t = q * mblocks; t < (q + 1) * mblocks; ++t) gemm_tile(t, mblocks, A, lda, M, B, C, ldc, kidx, nk);
}

}  // namespace prsr::sampler_gemm
