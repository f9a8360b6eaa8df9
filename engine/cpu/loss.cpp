// Losses of prsr::cpu: softmax cross-entropy fused over the 256 levels, mse, mean.
// Every reduction is deterministic: work is cut into pieces that depend only on the shapes,
// each piece is summed by one thread in a fixed order, and the partial sums are added in piece
// order, so the result does not depend on the number of threads.
// Vectorising the selects in engine/cpu/simd_math.h (clamps, blends) needs -fno-trapping-math;
// nothing here enables floating-point traps. Before every include so that all inline functions of
// this file share the same options (a mismatch would block inlining).
#pragma GCC optimize("no-trapping-math")
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu/simd_math.h"
#include "engine/cpu/store.h"

namespace prsr::cpu {

namespace {

// ---------------------------------------------------------------- softmax cross-entropy
// Logits [n, colors*256, hw]: the 256 levels of one (sample, colour) are hw floats apart. A task
// is a block of kBlock consecutive pixels of one (sample, colour): every level row of the block
// is contiguous (kBlock floats), the vector lanes run over pixels, and the block's 256 x kBlock
// logits (64 KiB per tensor) stay in L2 between the passes (max, sum of exp, gradient).
constexpr int kBlock = 64;

struct CeShape {
  int n, colors, hw;
  int blocks() const { return (hw + kBlock - 1) / kBlock; }
  long tasks() const { return long(n) * colors * blocks(); }
};

// logit(l, p) = a[l*hw + p] (+ b[l*hw + p]) for the block starting at `a`/`b`
struct Block {
  const float* a;
  const float* b;  // or null
  int hw, len;
};

// mx[p] = max_l logit(l, p)
inline void block_max(float* mx, const Block& k) {
  if (k.b) {
#pragma omp simd
    for (int p = 0; p < k.len; ++p) mx[p] = k.a[p] + k.b[p];
    for (int l = 1; l < kLevels; ++l) {
      const float* al = k.a + size_t(l) * k.hw;
      const float* bl = k.b + size_t(l) * k.hw;
#pragma omp simd
      for (int p = 0; p < k.len; ++p) mx[p] = std::max(mx[p], al[p] + bl[p]);
    }
  } else {
#pragma omp simd
    for (int p = 0; p < k.len; ++p) mx[p] = k.a[p];
    for (int l = 1; l < kLevels; ++l) {
      const float* al = k.a + size_t(l) * k.hw;
#pragma omp simd
      for (int p = 0; p < k.len; ++p) mx[p] = std::max(mx[p], al[p]);
    }
  }
}

// se[p] = sum_l exp(logit(l, p) - mx[p]); when e is not null, also e[l*kBlock + p] = that exp.
inline void block_sum_exp(float* se, float* e, const float* mx, const Block& k) {
  for (int p = 0; p < k.len; ++p) se[p] = 0.0f;
  for (int l = 0; l < kLevels; ++l) {
    const float* al = k.a + size_t(l) * k.hw;
    const float* bl = k.b ? k.b + size_t(l) * k.hw : nullptr;
    float* el = e ? e + l * kBlock : nullptr;
    if (bl) {
#pragma omp simd
      for (int p = 0; p < k.len; ++p) {
        const float v = simd::exp(al[p] + bl[p] - mx[p]);
        se[p] += v;
        if (el) el[p] = v;
      }
    } else {
#pragma omp simd
      for (int p = 0; p < k.len; ++p) {
        const float v = simd::exp(al[p] - mx[p]);
        se[p] += v;
        if (el) el[p] = v;
      }
    }
  }
}

Block make_block(const float* a, const float* b, const CeShape& s, long task) {
  const int nb = s.blocks();
  const long row = task / nb;  // (sample, colour)
  const int p0 = int(task % nb) * kBlock;
  const size_t base = size_t(row) * kLevels * s.hw + p0;
  return Block{a + base, b ? b + base : nullptr, s.hw, std::min(kBlock, s.hw - p0)};
}

const uint8_t* block_target(const uint8_t* target, const CeShape& s, long task) {
  const int nb = s.blocks();
  return target + size_t(task / nb) * s.hw + size_t(task % nb) * kBlock;
}

// ---------------------------------------------------------------- flat deterministic sums
// Piece boundaries depend on n only: at most kMaxPieces pieces of at least kMinPiece elements.
constexpr size_t kMaxPieces = 256, kMinPiece = 8192;

template <class F>
double flat_sum(size_t n, F term) {
  const size_t piece = std::max(kMinPiece, (n + kMaxPieces - 1) / kMaxPieces);
  const long pieces = long((n + piece - 1) / piece);
  double part[kMaxPieces];
#pragma omp parallel for schedule(static) if (pieces > 1)
  for (long q = 0; q < pieces; ++q) {
    const size_t lo = size_t(q) * piece, hi = std::min(n, lo + piece);
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (size_t i = lo; i < hi; ++i) s += term(i);
    part[q] = s;
  }
  double total = 0;
  for (long q = 0; q < pieces; ++q) total += part[q];
  return total;
}

}  // namespace

}  // namespace prsr::cpu

namespace prsr {

// loss = mean over (n, colour, pixel) of log(sum_l exp(logit_l - mx)) + mx - logit_target
void cpu::softmax_ce_forward(float* loss, const float* a, const float* b, const uint8_t* target, int n, int colors,
                             int hw) {
  const CeShape s{n, colors, hw};
  const long tasks = s.tasks();
  // One partial per task, kept between calls (grows only): no allocation once a shape is seen.
  thread_local std::vector<double> part;
  if (part.size() < size_t(tasks)) part.resize(size_t(tasks));
  double* pp = part.data();
#pragma omp parallel for schedule(static)
  for (long t = 0; t < tasks; ++t) {
    const Block k = make_block(a, b, s, t);
    const uint8_t* tg = block_target(target, s, t);
    alignas(64) float mx[kBlock], se[kBlock];
    block_max(mx, k);
    block_sum_exp(se, nullptr, mx, k);
    double acc = 0;
    for (int p = 0; p < k.len; ++p) {
      const size_t at = size_t(tg[p]) * hw + p;
      const float lt = k.a[at] + (k.b ? k.b[at] : 0.0f);
      acc += double(std::log(se[p]) + mx[p] - lt);
    }
    pp[t] = acc;
  }
  double total = 0;
  for (long t = 0; t < tasks; ++t) total += pp[t];
  loss[0] = float(total / (double(n) * colors * hw));
}

// da, db += dloss / N * (softmax(a + b) - onehot(target)), N = n * colors * hw.
// Per block: max, exp (kept in a 64 KiB per-thread buffer) and its sum, then one pass that
// writes both gradients.
void cpu::softmax_ce_backward(float* da, float* db, const float* dloss, const float* a, const float* b,
                              const uint8_t* target, int n, int colors, int hw, unsigned fresh) {
  // A fresh gradient (backend.h) is written (=), the others accumulated; every element of a
  // block is written by the level loop before the one-hot term is subtracted.
  const bool fa = fresh & 1u, fb = fresh & 2u;
  if (!da && !db) return;
  const CeShape s{n, colors, hw};
  const long tasks = s.tasks();
  const float scale = dloss[0] / float(double(n) * colors * hw);
#pragma omp parallel
  {
    thread_local std::vector<float> ebuf;
    if (ebuf.size() < size_t(kLevels) * kBlock) ebuf.resize(size_t(kLevels) * kBlock);
    float* e = ebuf.data();
#pragma omp for schedule(static)
    for (long t = 0; t < tasks; ++t) {
      const Block k = make_block(a, b, s, t);
      const uint8_t* tg = block_target(target, s, t);
      const size_t off = size_t(k.a - a);
      float* ga = da ? da + off : nullptr;
      float* gb = db ? db + off : nullptr;
      alignas(64) float mx[kBlock], se[kBlock], inv[kBlock];
      block_max(mx, k);
      block_sum_exp(se, e, mx, k);
      for (int p = 0; p < k.len; ++p) inv[p] = scale / se[p];
      for (int l = 0; l < kLevels; ++l) {
        const float* el = e + l * kBlock;
        const size_t o = size_t(l) * hw;
        if (ga && gb && !fa && !fb) {
#pragma omp simd
          for (int p = 0; p < k.len; ++p) {
            const float g = el[p] * inv[p];
            ga[o + p] += g;
            gb[o + p] += g;
          }
        } else {
          for (int which = 0; which < 2; ++which) {  // (ga and gb may be the same buffer)
            float* g1 = which ? gb : ga;
            if (!g1) continue;
            if (which ? fb : fa) {
#pragma omp simd
              for (int p = 0; p < k.len; ++p) g1[o + p] = el[p] * inv[p];
            } else {
#pragma omp simd
              for (int p = 0; p < k.len; ++p) g1[o + p] += el[p] * inv[p];
            }
          }
        }
      }
      for (int p = 0; p < k.len; ++p) {  // the one-hot term
        const size_t at = size_t(tg[p]) * hw + p;
        if (ga) ga[at] -= scale;
        if (gb) gb[at] -= scale;
      }
    }
  }
}

void cpu::mse_forward(float* loss, const float* a, const float* t, size_t n) {
  const double s = flat_sum(n, [=](size_t i) {
    const double d = double(a[i] - t[i]);
    return d * d;
  });
  loss[0] = float(s / double(n));
}

// loss = mean((a - t)^2)  ->  da += dloss * 2 (a - t) / n
void cpu::mse_backward(float* da, const float* dloss, const float* a, const float* t, size_t n, unsigned fresh) {
  const float k = dloss[0] * 2.0f / float(double(n));
  PRSR_STORE(da, n, fresh & 1u, k * (a[i] - t[i]));
}

void cpu::mean_forward(float* y, const float* x, size_t n) {
  y[0] = float(flat_sum(n, [=](size_t i) { return double(x[i]); }) / double(n));
}

// y = mean(x)  ->  dx += dy / n
void cpu::mean_backward(float* dx, const float* dy, size_t n, unsigned fresh) {
  const float k = dy[0] / float(double(n));
  PRSR_STORE(dx, n, fresh & 1u, k);
}

}  // namespace prsr
