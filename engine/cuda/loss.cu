// Losses of the CUDA backend: fused softmax cross-entropy over 256 levels,
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
#include "engine/cuda/common.cuh"

namespace prsr::cuda {

namespace {

constexpr int kSumBlock = 256;      // threads per reduction block
constexpr int kMaxPartials = 1024;  // blocks of the first stage, at most

// ---------------------------------------------------------------- two-stage sum

// Stage 1: partials[block] = sum of f(i) over the block's grid-stride share of [0, n).
template <class F>
__global__ void partial_sum_kernel(double* partials, F f, size_t n) {
  __shared__ double sh[kSumBlock];
  double s = 0.0;
  for (size_t i = size_t(blockIdx.x) * kSumBlock + threadIdx.x; i < n; i += size_t(gridDim.x) * kSumBlock) s += f(i);
  s = block_sum<kSumBlock>(s, sh);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// Stage 2 (one block): out[0] = float(sum(partials) / divisor).
__global__ void final_sum_kernel(float* out, const double* partials, int count, double divisor) {
  __shared__ double sh[kSumBlock];
  double s = 0.0;
  for (int i = threadIdx.x; i < count; i += kSumBlock) s += partials[i];
  s = block_sum<kSumBlock>(s, sh);
  if (threadIdx.x == 0) out[0] = float(s / divisor);
}

// out[0] = float(sum_{i < n} f(i) / divisor), deterministically.
template <class F>
void sum_reduce(float* out, F f, size_t n, double divisor) {
  size_t blocks = (n + kSumBlock - 1) / kSumBlock;
  if (blocks > size_t(kMaxPartials)) blocks = kMaxPartials;
  if (blocks == 0) blocks = 1;  // n == 0: the sum is 0 (and the result 0/0, as in ref)
  double* partials = workspace_as<double>(Slot::Reduce, kMaxPartials);
  partial_sum_kernel<<<unsigned(blocks), kSumBlock, 0, stream()>>>(partials, f, n);
  LAUNCH_CHECK();
  final_sum_kernel<<<1, kSumBlock, 0, stream()>>>(out, partials, int(blocks), divisor);
  LAUNCH_CHECK();
}

// ---------------------------------------------------------------- softmax cross-entropy

struct Rows {
  const float* a;
  const float* b;  // nullable
  const uint8_t* target;
  int colors, hw;

  // Offset of level 0 of row r (r runs over [n][colors][hw]); level l is at + l*hw.
  __device__ size_t base(size_t r) const {
    const size_t chw = size_t(colors) * hw;
    const size_t s = r / chw, rem = r % chw;
    const size_t col = rem / hw, p = rem % hw;
    return (s * colors * kLevels + col * kLevels) * hw + p;
  }
  __device__ float logit(size_t base, int l) const {
    const size_t i = base + size_t(l) * hw;
    return b ? a[i] + b[i] : a[i];
  }
  __device__ float max_logit(size_t base) const {
    float mx = logit(base, 0);
    for (int l = 1; l < kLevels; ++l) mx = fmaxf(mx, logit(base, l));
    return mx;
  }
  __device__ float sum_exp(size_t base, float mx) const {
    float se = 0.0f;
    for (int l = 0; l < kLevels; ++l) se += expf(logit(base, l) - mx);
    return se;
  }
};

// -log softmax(z)[target] of row r; the target index r is [n][colors][hw] too.
struct RowLoss {
  Rows rows;
  __device__ double operator()(size_t r) const {
    const size_t base = rows.base(r);
    const float mx = rows.max_logit(base);
    const float se = rows.sum_exp(base, mx);
    const int t = rows.target[r];
    return double(logf(se) + mx - rows.logit(base, t));
  }
};

__global__ void softmax_ce_backward_kernel(float* da, float* db, const float* dloss, Rows rows, size_t nrows,
                                           float count) {
  const float scale = dloss[0] / count;
  for (size_t r = size_t(blockIdx.x) * blockDim.x + threadIdx.x; r < nrows; r += size_t(gridDim.x) * blockDim.x) {
    const size_t base = rows.base(r);
    const float mx = rows.max_logit(base);
    const float se = rows.sum_exp(base, mx);
    const int t = rows.target[r];
    for (int l = 0; l < kLevels; ++l) {
      const float g = scale * (expf(rows.logit(base, l) - mx) / se - (l == t ? 1.0f : 0.0f));
      const size_t i = base + size_t(l) * rows.hw;
      if (da) da[i] += g;
      if (db) db[i] += g;
    }
  }
}

// ---------------------------------------------------------------- mse, mean

struct SquaredDiff {
  const float* a;
  const float* t;
  __device__ double operator()(size_t i) const {
    const float d = a[i] - t[i];
    return double(d) * double(d);
  }
};

struct Value {
  const float* x;
  __device__ double operator()(size_t i) const { return double(x[i]); }
};

// da += dloss * 2 * (a - t) / n
__global__ void mse_backward_kernel(float* da, const float* dloss, const float* a, const float* t, size_t n,
                                    float count) {
  const float dl = dloss[0];
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    da[i] += dl * 2.0f * (a[i] - t[i]) / count;
}

// dx += dy / n
__global__ void mean_backward_kernel(float* dx, const float* dy, size_t n, float count) {
  const float g = dy[0] / count;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) dx[i] += g;
}

}  // namespace

}  // namespace prsr::cuda

namespace prsr {

void cuda::softmax_ce_forward(float* loss, const float* a, const float* b, const uint8_t* target, int n, int colors,
                              int hw) {
  const size_t nrows = size_t(n) * colors * hw;
  sum_reduce(loss, RowLoss{Rows{a, b, target, colors, hw}}, nrows, double(nrows));
}

void cuda::softmax_ce_backward(float* da, float* db, const float* dloss, const float* a, const float* b,
                               const uint8_t* target, int n, int colors, int hw, unsigned fresh) {
  const size_t nrows = size_t(n) * colors * hw;
  if (nrows == 0 || (!da && !db)) return;
  // fresh gradients (backend.h): zeroed first, then accumulated into as usual
  if (da && (fresh & 1u)) fill(da, 0.0f, nrows * kLevels);
  if (db && (fresh & 2u)) fill(db, 0.0f, nrows * kLevels);
  softmax_ce_backward_kernel<<<grid_for(nrows), kBlock, 0, stream()>>>(da, db, dloss, Rows{a, b, target, colors, hw},
                                                                       nrows, float(double(nrows)));
  LAUNCH_CHECK();
}

void cuda::mse_forward(float* loss, const float* a, const float* t, size_t n) {
  sum_reduce(loss, SquaredDiff{a, t}, n, double(n));
}

void cuda::mse_backward(float* da, const float* dloss, const float* a, const float* t, size_t n, unsigned fresh) {
  if (n == 0 || !da) return;
  if (fresh & 1u) fill(da, 0.0f, n);
  mse_backward_kernel<<<grid_for(n), kBlock, 0, stream()>>>(da, dloss, a, t, n, float(double(n)));
  LAUNCH_CHECK();
}

void cuda::mean_forward(float* y, const float* x, size_t n) { sum_reduce(y, Value{x}, n, double(n)); }

void cuda::mean_backward(float* dx, const float* dy, size_t n, unsigned fresh) {
  if (n == 0 || !dx) return;
  if (fresh & 1u) fill(dx, 0.0f, n);
  mean_backward_kernel<<<grid_for(n), kBlock, 0, stream()>>>(dx, dy, n, float(double(n)));
  LAUNCH_CHECK();
}

}  // namespace prsr
