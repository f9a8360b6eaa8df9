// One gated layer of the prior at the current pixel, for one image and one colour, fused: the
// cached sampler's chain at batch 1 (model/sampler.cpp: thread 0 of a team runs the 20 layers
// one after the other for every sub-pixel, each a few hundred multiply-adds, so their latency is
// the sampler's pace). Per layer and colour c, with q = colour c's gate channels [g0, g0 + q):
//
//   z    = hpre + sum_{k < g0 + q} h[k] wz[k]        the current tap (hpre: the left taps, the
//                                                    link and the bias, summed by thread 1)
//   g    = tanh(z[0, q)) sigmoid(z[q, 2q))          as (2 sigmoid(2 z) - 1) sigmoid(z')
//   gate[g0, g0 + q) = g
//   hout[g0, g0 + q) = h[g0, g0 + q) + br + sum_{k < g0 + q} gate[k] wr[k]   (res)
//
// The unfused form (a product into a scratch row, the gate from it into another, a copy into the
// gate's row, res reading that row back: three calls through pointers, and partial vectors
// stored and read back at other offsets, z's sigmoid half starting at lane q) took 390-480 TSC
// cycles a layer at colours 0-2 on the 2 vCPU EPYC in a microbenchmark of the 20 layers (hot
// in L2; 440-560 with L2 flushed between chains). Here z, the sigmoid and g stay in registers
// (the sigmoid half moved to lane 0 by a permutation and a blend, res broadcasting g's lanes):
// 205-330 (265-380 flushed). In the sampler, where the weights and thread 1's sums come from
// other caches, 290-420 per layer (docs/performance.md, "The chain fused").
//
// AVX2 + FMA only (intrinsics); where the build targets neither (-Dnative=false: x86-64-v2),
// kAvailable is false and the sampler runs the unfused products (model/sampler_gemm.h).
#pragma once
#include <algorithm>
#include <vector>

#include "engine/cpu/simd_math.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define PRSR_SAMPLER_CHAIN 1
#endif

namespace prsr::sampler_chain {

#ifdef PRSR_SAMPLER_CHAIN
constexpr bool kAvailable = true;
#else
constexpr bool kAvailable = false;
#endif
constexpr int kLanes = 8;  // floats per vector (AVX2)
constexpr int kMaxZ = 4;   // z's vectors at most: q <= 16
constexpr int kMaxQ = kMaxZ * kLanes / 2;

struct GatedStep {
  int q = 0, g0 = 0, nz = 0;  // nz: z's vectors, ceil(2q / 8)
  std::vector<float> wz;      // [g0 + q][nz * 8]: z's columns, zero padded
  std::vector<float> wr;      // [g0 + q][16]: res's columns (q of them), zero padded
  std::vector<float> br;      // [16]: res's bias, zero padded
  // The sigmoid half's vector v (lanes q + 8v ...): lanes of z's vector hi_from[v] (and the next
  // one where hi_mask is set), rotated by hi_index.
  int hi_from[kMaxZ / 2] = {};
  int hi_index[kMaxZ / 2][kLanes] = {}, hi_mask[kMaxZ / 2][kLanes] = {};
  int keep[kMaxZ / 2][kLanes] = {};  // store masks: lanes < q
  float scale[kMaxZ][kLanes] = {};   // 2 for z's tanh halves, 1 for the sigmoid halves

  explicit operator bool() const { return nz > 0; }
  static bool fits(int q) { return kAvailable && q >= 1 && q <= kMaxQ; }

  // wz(k, n): the current tap's weight of input k for z's column n < 2q (tanh halves first);
  // wr(k, n), br(n): res's weight of gate channel k and bias for output g0 + n, n < q.
  template <class Wz, class Wr, class Br>
  static GatedStep make(int q, int g0, Wz wz, Wr wr, Br br) {
    GatedStep s;
    if (!fits(q)) return s;
    s.q = q, s.g0 = g0, s.nz = (2 * q + kLanes - 1) / kLanes;
    const int K = g0 + q, W = s.nz * kLanes;
    s.wz.assign(size_t(K) * W, 0.f);
    s.wr.assign(size_t(K) * 2 * kLanes, 0.f);
    s.br.assign(2 * kLanes, 0.f);
    for (int k = 0; k < K; ++k) {
      for (int n = 0; n < 2 * q; ++n) s.wz[size_t(k) * W + n] = wz(k, n);
      for (int n = 0; n < q; ++n) s.wr[size_t(k) * 2 * kLanes + n] = wr(k, n);
    }
    for (int n = 0; n < q; ++n) s.br[size_t(n)] = br(n);
    for (int v = 0; v < kMaxZ / 2; ++v) {
      const int first = q + v * kLanes, r = first % kLanes;
      s.hi_from[v] = std::min(first / kLanes, s.nz - 1);
      for (int i = 0; i < kLanes; ++i) {
        s.hi_index[v][i] = (i + r) % kLanes;
        s.hi_mask[v][i] = i + r >= kLanes && s.hi_from[v] + 1 < s.nz ? -1 : 0;
        s.keep[v][i] = v * kLanes + i < q ? -1 : 0;
      }
    }
    for (int v = 0; v < kMaxZ; ++v)
      for (int i = 0; i < kLanes; ++i) s.scale[v][i] = v * kLanes + i < q ? 2.f : 1.f;
    return s;
  }

  // h: the current pixel's h (channels [0, g0 + q) read; [g0, g0 + 16) loaded whole), hpre: nz
  // vectors, gate: the pixel's gate row (channels [0, g0) read, [g0, g0 + q) written), hout:
  // the next layer's h at the pixel ([g0, g0 + q) written).
  void operator()(const float* h, const float* hpre, float* gate, float* hout) const {
#ifdef PRSR_SAMPLER_CHAIN
    switch (nz) {
      case 1: return run<1>(h, hpre, gate, hout);
      case 2: return run<2>(h, hpre, gate, hout);
      case 3: return run<3>(h, hpre, gate, hout);
      case 4: return run<4>(h, hpre, gate, hout);
    }
#endif
  }

#ifdef PRSR_SAMPLER_CHAIN
  // e^x as cpu::simd::exp (engine/cpu/simd_math.h: its constants), the same operations in 8 lanes.
  static __m256 exp8(__m256 x) {
    using namespace cpu::simd::exp_constants;
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(kLo)), _mm256_set1_ps(kHi));
    const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), _mm256_set1_ps(0.5f)));
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
    __m256 p = _mm256_set1_ps(kP[0]);
    for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP[i]));
    const __m256 e = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0f));
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(e, _mm256_castsi256_ps(bits));
  }

  template <int NZ>
  void run(const float* h, const float* hpre, float* gate, float* hout) const {
    constexpr int NR = (NZ + 1) / 2;         // g's and res's vectors
    constexpr int kSplit = NZ <= 3 ? 3 : 2;  // partial sums of z (registers: 3 x 3 or 2 x 4)
    constexpr int W = NZ * kLanes;
    const int K = g0 + q;
    // z: the current tap's products in kSplit partial sums (colour c's own inputs, the ones the
    // last layer just wrote, come last), then hpre.
    __m256 acc[kSplit][NZ];
    for (int u = 0; u < kSplit; ++u)
      for (int v = 0; v < NZ; ++v) acc[u][v] = _mm256_setzero_ps();
    const float* w = wz.data();
    int k = 0;
    for (; k + kSplit <= K; k += kSplit)
      for (int u = 0; u < kSplit; ++u) {
        const __m256 x = _mm256_broadcast_ss(h + k + u);
        for (int v = 0; v < NZ; ++v)
          acc[u][v] = _mm256_fmadd_ps(x, _mm256_loadu_ps(w + size_t(k + u) * W + v * kLanes), acc[u][v]);
      }
    for (; k < K; ++k) {
      const __m256 x = _mm256_broadcast_ss(h + k);
      for (int v = 0; v < NZ; ++v)
        acc[1][v] = _mm256_fmadd_ps(x, _mm256_loadu_ps(w + size_t(k) * W + v * kLanes), acc[1][v]);
    }
    // The sigmoid of every lane (the tanh halves' inputs doubled): s = 1 / (1 + e^-x).
    const __m256 one = _mm256_set1_ps(1.f);
    __m256 s[NZ];
    for (int v = 0; v < NZ; ++v) {
      __m256 z = _mm256_add_ps(acc[0][v], acc[1][v]);
      if (kSplit > 2) z = _mm256_add_ps(z, acc[kSplit - 1][v]);
      z = _mm256_mul_ps(_mm256_add_ps(z, _mm256_loadu_ps(hpre + v * kLanes)), _mm256_loadu_ps(scale[v]));
      s[v] = _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), z))));
    }
    // g = (2 s - 1) s' (s': the sigmoid half, lanes q.. moved to lane 0), stored to the gate row.
    __m256 g[NR];
    for (int v = 0; v < NR; ++v) {
      const __m256i idx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi_index[v]));
      const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi_mask[v]));
      const int a = hi_from[v], b = a + 1 < NZ ? a + 1 : a;
      const __m256 hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(s[a], idx), _mm256_permutevar8x32_ps(s[b], idx),
                                         _mm256_castsi256_ps(mask));
      g[v] = _mm256_mul_ps(_mm256_fmsub_ps(_mm256_set1_ps(2.f), s[v], one), hi);
      _mm256_maskstore_ps(gate + g0 + v * kLanes, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(keep[v])), g[v]);
    }
    // res: h's own channels (the last layer's output) + bias, the earlier colours' gate channels
    // from the row, colour c's from g's lanes (in two more partial sums). (Measured against
    // the earlier colours' part first, before g's store, and in two partial sums with h added
    // last: 10-25% slower at colours 1 and 2.)
    __m256 r[3][NR];
    for (int v = 0; v < NR; ++v) {
      r[0][v] = _mm256_add_ps(_mm256_loadu_ps(br.data() + v * kLanes), _mm256_loadu_ps(h + g0 + v * kLanes));
      r[1][v] = r[2][v] = _mm256_setzero_ps();
    }
    const float* wq = wr.data();
    for (k = 0; k < g0; ++k) {
      const __m256 x = _mm256_broadcast_ss(gate + k);
      for (int v = 0; v < NR; ++v)
        r[0][v] = _mm256_fmadd_ps(x, _mm256_loadu_ps(wq + size_t(k) * 2 * kLanes + v * kLanes), r[0][v]);
    }
    for (int i = 0; i < q; ++i) {
      const __m256 x = _mm256_permutevar8x32_ps(g[i / kLanes], _mm256_set1_epi32(i % kLanes));
      __m256* a = r[1 + (i & 1)];
      for (int v = 0; v < NR; ++v)
        a[v] = _mm256_fmadd_ps(x, _mm256_loadu_ps(wq + size_t(g0 + i) * 2 * kLanes + v * kLanes), a[v]);
    }
    for (int v = 0; v < NR; ++v)
      _mm256_maskstore_ps(hout + g0 + v * kLanes, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(keep[v])),
                          _mm256_add_ps(r[0][v], _mm256_add_ps(r[1][v], r[2][v])));
  }
#endif
};

}  // namespace prsr::sampler_chain
