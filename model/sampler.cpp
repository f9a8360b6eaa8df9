// The naive and the cached sampler (model/sampler.h).
// The gates use engine/cpu/simd_math.h's tanh and sigmoid (the CPU backend's own), whose
// selects vectorise only without trapping math: set before every include (see
// engine/cpu/elementwise.cpp).
#pragma GCC optimize("no-trapping-math")
#include "model/sampler.h"

#include <omp.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <random>
#include <thread>

#include "engine/cpu/simd_math.h"
#include "engine/graph.h"
#include "engine/ops.h"
#include "model/sampler_chain.h"
#include "model/sampler_gemm.h"
#include "model/sampler_gpu.h"
#include "model/sampler_kernels.h"

namespace prsr {

DecodeMode parse_decode_mode(const std::string& s) {
  if (s == "sample") return DecodeMode::Sample;
  if (s == "mean") return DecodeMode::Mean;
  if (s == "argmax") return DecodeMode::Argmax;
  throw Error("unknown decoding mode '" + s + "' (sample|mean|argmax)");
}

const char* decode_mode_name(DecodeMode m) {
  return m == DecodeMode::Sample ? "sample" : m == DecodeMode::Mean ? "mean" : "argmax";
}

namespace {

// "prior.layer0.h: 1x3 c4->8 pad t0 b0 l2 r0" for check_cacheable's messages.
std::string describe(const ConvLayer<float>& c) {
  return c.name + ": " + std::to_string(c.kh()) + "x" + std::to_string(c.kw()) + " " + std::to_string(c.ci()) + "->" +
         std::to_string(c.co()) + " channels, pad t" + std::to_string(c.pad_t) + " b" + std::to_string(c.pad_b) + " l" +
         std::to_string(c.pad_l) + " r" + std::to_string(c.pad_r) + (c.transposed ? ", transposed" : "");
}

void need(bool ok, const ConvLayer<float>& c, const std::string& what) {
  if (!ok) throw Error("cached sampler: " + describe(c) + ": " + what + " (use the naive sampler)");
}

}  // namespace

void check_cacheable(const Model<float>& m) {
  const ModelConfig& cfg = m.config();
  check(cfg.has_prior(), "cached sampler: the model has no prior network");
  // A vertical conv at row i reads rows i - pad_t .. i only and keeps the width.
  auto vertical = [](const ConvLayer<float>& c) {
    need(!c.transposed && c.pad_b == 0 && c.pad_t == c.kh() - 1, c, "a vertical layer must end at the current row");
    need(c.pad_l + c.pad_r == c.kw() - 1, c, "a vertical layer must keep the width");
  };
  // A horizontal conv at (i, j) reads (i, j - pad_l .. j) only.
  auto horizontal = [](const ConvLayer<float>& c) {
    need(!c.transposed && c.kh() == 1 && c.pad_t == 0 && c.pad_b == 0 && c.pad_r == 0 && c.pad_l == c.kw() - 1, c,
         "a horizontal layer must be 1 x k and end at the current pixel");
  };
  auto pointwise = [](const ConvLayer<float>& c) {
    need(!c.transposed && c.kh() == 1 && c.kw() == 1 && c.pad_t == 0 && c.pad_b == 0 && c.pad_l == 0 && c.pad_r == 0, c,
         "must be 1x1 without padding");
  };
  auto channels = [](const ConvLayer<float>& c, int ci, int co) {
    need(c.ci() == ci && c.co() == co, c, "expected " + std::to_string(ci) + "->" + std::to_string(co) + " channels");
  };
  const int C = cfg.colors, p = m.first_h.co();
  vertical(m.first_v);
  horizontal(m.first_h);
  channels(m.first_v, C, p);
  channels(m.first_h, C, p);
  for (const GatedLayer<float>& G : m.gated) {
    vertical(G.v);
    horizontal(G.h);
    pointwise(G.link);
    pointwise(G.res);
    channels(G.v, p, 2 * p);  // gate halves it back to p
    channels(G.h, p, 2 * p);
    channels(G.link, 2 * p, 2 * p);
    channels(G.res, p, p);
  }
  pointwise(m.head1);
  pointwise(m.head2);
  channels(m.head1, p, m.head1.co());
  channels(m.head2, m.head1.co(), C * kLevels);
}

namespace {

// The draw's exponentials, 4 at a time: gpu_sampler::draw_exp's operations in AVX2 + FMA (the
// same roundings in the same order: the same bits, tests/test_sampler.cpp checks it). Compiled
// for that target whatever the build's, and used where the CPU has it (draw_exponentials).
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define PRSR_DRAW_EXP_AVX2 1
__attribute__((target("avx2,fma"))) void draw_exponentials_avx2(const float* logits, int best, double t, double* p,
                                                                double* cum) {
  using namespace gpu_sampler::draw_exp_constants;
  const __m256d top = _mm256_set1_pd(double(logits[best])), vt = _mm256_set1_pd(t), zero = _mm256_setzero_pd();
  const __m256d cut = _mm256_set1_pd(kCut), log2e = _mm256_set1_pd(kLog2e);
  const __m256d ln2hi = _mm256_set1_pd(kLn2Hi), ln2lo = _mm256_set1_pd(kLn2Lo);
  static constexpr double kCoef[] = {0x1.1eed8eff8d898p-29,
                                     0x1.ae64567f544e4p-26,
                                     0x1.27e4fb7789f5cp-22,
                                     0x1.71de3a556c734p-19,
                                     0x1.a01a01a01a01ap-16,
                                     0x1.a01a01a01a01ap-13,
                                     0x1.6c16c16c16c17p-10,
                                     0x1.1111111111111p-7,
                                     0x1.5555555555555p-5,
                                     0x1.5555555555555p-3,
                                     0.5,
                                     1.0,
                                     1.0};
  const __m128i bias = _mm_set1_epi32(1023), zi = _mm_setzero_si128();
  auto pow2 = [&](__m128i k) {
    return _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_cvtepi32_epi64(_mm_add_epi32(k, bias)), 52));
  };
  // kU blocks of 4 levels at a time, each step of the blocks side by side: the polynomial is a
  // chain of 13 dependent multiply-adds, and one block at a time the loop ran at that chain's
  // latency (~9 TSC cycles a level), the core's FP scheduler too small to overlap the blocks
  // (2 EPYC vCPUs, 256 levels: 2370 -> 1640-1900 TSC cycles with 4 blocks; 2: 1960-2020; 8: 1780-1890).
  constexpr int kU = 4;
  double sum = 0;
  for (int l0 = 0; l0 < kLevels; l0 += 4 * kU) {
    __m256d z[kU], below[kU], nan[kU], n[kU], r[kU], q[kU];
    for (int u = 0; u < kU; ++u) {
      z[u] = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(logits + l0 + 4 * u)), top);
      if (t != 1.0) z[u] = _mm256_div_pd(z[u], vt);  // (z / 1 is z: the same bits)
      below[u] = _mm256_cmp_pd(z[u], cut, _CMP_LT_OQ), nan[u] = _mm256_cmp_pd(z[u], z[u], _CMP_UNORD_Q);
      // zc = z clamped to [-746, 0]; 0 where z < -746 (those lanes are replaced by +0 at the
      // end: exp(-746) would be computed as a subnormal, and a subnormal product costs the FPU
      // a slow assist: an untrained model's draw, most levels past the cut, took 2-3x as long).
      // NaN lanes: anything, replaced at the end.
      const __m256d zc = _mm256_blendv_pd(_mm256_min_pd(_mm256_max_pd(z[u], cut), zero), zero, below[u]);
      n[u] = _mm256_round_pd(_mm256_mul_pd(zc, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      r[u] = _mm256_fnmadd_pd(n[u], ln2lo, _mm256_fnmadd_pd(n[u], ln2hi, zc));
      q[u] = _mm256_set1_pd(0x1.6124613a86d09p-33);
    }
    for (double c : kCoef)
      for (int u = 0; u < kU; ++u) q[u] = _mm256_fmadd_pd(q[u], r[u], _mm256_set1_pd(c));
    for (int u = 0; u < kU; ++u) {
      // A subnormal result (q 2^n < 2^-1022) without a subnormal product (the slow assist again:
      // ~2x the draw's time where some levels land there): it is q 2^n rounded to the grid of
      // 2^-1074 (draw_exp's last multiply rounds once, to nearest even), i.e. m 2^-1074 with m
      // the integer nearest tq = q 2^(n + 1074) (exact: tq is normal), and tq + 2^52 rounds tq
      // to that integer (the doubles in [2^52, 2^53) are the integers), whose bits minus 2^52's
      // are m: the subnormal's bits (m = 2^52: the smallest normal's).
      const __m128i ni = _mm256_cvtpd_epi32(n[u]);
      const __m128i k = _mm_min_epi32(_mm_max_epi32(_mm_add_epi32(ni, _mm_set1_epi32(1074)), _mm_set1_epi32(-60)),
                                      _mm_set1_epi32(60));
      const __m256d tq = _mm256_mul_pd(q[u], pow2(k)), two52 = _mm256_set1_pd(0x1p52);
      const __m256d sub = _mm256_cmp_pd(tq, two52, _CMP_LT_OQ);
      const __m256d esub = _mm256_castsi256_pd(
          _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(tq, two52)), _mm256_castpd_si256(two52)));
      // Elsewhere 2^(ni - n1) and 2^n1, n1 = ni / 2 (towards zero; ni <= 0): -((-ni) >> 1); in
      // the subnormal lanes n = 0 (their value is esub).
      const __m128i nn = _mm256_cvtpd_epi32(_mm256_blendv_pd(n[u], zero, sub));
      const __m128i n1 = _mm_sub_epi32(zi, _mm_srli_epi32(_mm_sub_epi32(zi, nn), 1)), n2 = _mm_sub_epi32(nn, n1);
      __m256d e = _mm256_blendv_pd(_mm256_mul_pd(_mm256_mul_pd(q[u], pow2(n2)), pow2(n1)), esub, sub);
      e = _mm256_blendv_pd(e, zero, below[u]);
      e = _mm256_blendv_pd(e, z[u], nan[u]);
      _mm256_storeu_pd(p + l0 + 4 * u, e);
    }
    if (cum)  // the running sum's chain of dependent adds runs under the next levels' exponentials
      for (int i = l0; i < l0 + 4 * kU; ++i) cum[i] = sum += p[i];
  }
}
#endif

}  // namespace

// finish_draw's sample, with the same doubles: its running sums cum_l are the prefix sums of
// its total (the same adds in the same order), so they are summed once, and the first level
// with cum_l > u * sum is found by bisection (the prefix sums of p >= 0 never decrease): one
// chain of 256 dependent adds, not up to two (0.1-0.2 us per sub-pixel). A NaN makes the sum
// and the target NaN: no comparison holds, the best level (as finish_draw).
int sample_level_from_sums(const double* cum, int best, double u) {
  const double target = u * cum[kLevels - 1];
  if (!(cum[kLevels - 1] > target)) return best;
  int lo = 0, hi = kLevels - 1;  // cum[hi] > target
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (cum[mid] > target) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

int sample_level(const double* p, int best, double u) {
  double cum[kLevels], sum = 0;
  for (int l = 0; l < kLevels; ++l) cum[l] = sum += p[l];
  return sample_level_from_sums(cum, best, u);
}

void draw_exponentials(const float* logits, int best, double t, double* p, double* cum) {
#ifdef PRSR_DRAW_EXP_AVX2
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) return draw_exponentials_avx2(logits, best, t, p, cum);
#endif
  double sum = 0;
  for (int l = 0; l < kLevels; ++l) {
    p[l] = gpu_sampler::draw_exp((double(logits[l]) - logits[best]) / t);
    if (cum) cum[l] = sum += p[l];
  }
}

// The first level with the largest logit, as the scan "best = l where logits[l] > logits[best]"
// finds it (a NaN is never greater nor exceeded: a NaN at level 0 stays best, NaNs elsewhere are
// passed over; -0 and +0 tie), in whole vectors: the largest value by the same comparison lane
// by lane, then its first level. The scan was a chain of 256 dependent max operations (~0.25 us
// per sub-pixel, on thread 0's critical path at batch 1).
int best_level(const float* logits) {
  using sampler_gemm::kVec;
  using sampler_gemm::vfloat;
  if (!(logits[0] == logits[0])) return 0;
  vfloat top = vfloat{} + logits[0];
  for (int l = 0; l < kLevels; l += kVec) {
    const vfloat v = *reinterpret_cast<const vfloat*>(logits + l);
    top = v > top ? v : top;
  }
  float m = top[0];
  for (int e = 1; e < kVec; ++e) m = top[e] > m ? top[e] : m;
  int l = 0;
  while (!(logits[l] == m)) ++l;  // m is one of the logits
  return l;
}

namespace {

// One level from 256 logits (A + B) and u, a uniform in [0, 1). One 53-bit uniform is taken per
// sub-pixel in every mode, so the random stream does not depend on the mode. The same steps as
// the GPU sampler's draw (model/sampler_kernels.h: draw_exp, finish_draw), so every sampler
// draws the same level from the same logits.
int draw(const float* logits, DecodeMode mode, float tau, double u) {
  const int best = best_level(logits);
  if (mode == DecodeMode::Argmax) return best;
  double p[kLevels], cum[kLevels];
  if (mode == DecodeMode::Mean) {
    draw_exponentials(logits, best, 1.0, p);
    return gpu_sampler::finish_draw(p, best, gpu_sampler::kMean, u);
  }
  draw_exponentials(logits, best, double(tau), p, cum);
  return sample_level_from_sums(cum, best, u);
}

uint8_t to_byte(float v) {  // [-1, 1] -> 0..255, rounded half up
  return uint8_t(std::clamp(int(std::floor((double(v) + 1.0) * 127.5 + 0.5)), 0, 255));
}

// Host copies of the inputs: x as NCHW floats in [-1, 1].
std::vector<float> normalise_low(const uint8_t* x, int n, int C, int L) {
  std::vector<float> out(size_t(n) * C * L * L);
  for (int b = 0; b < n; ++b)
    for (int c = 0; c < C; ++c)
      for (int p = 0; p < L * L; ++p)
        out[(size_t(b) * C + c) * L * L + p] = float(x[(size_t(b) * L * L + p) * C + c]) / 127.5f - 1.f;
  return out;
}

// dst[b][p][k] = src[b][k][p] (b < n, k < K, p < HW) on every thread, jobs of 32 pixels of one
// image; with AVX in 8 x 8 blocks of vector shuffles (at batch 1 0.14 ms against 0.6-0.8 for
// the best scalar blocking and 0.1 for a plain copy, 2 vCPU EPYC), the edges element by element.
void pixel_major(const float* src, float* dst, long n, long K, long HW) {
  constexpr long kP = 32;
  const long pblocks = (HW + kP - 1) / kP;
#pragma omp parallel for schedule(static)
  for (long t = 0; t < n * pblocks; ++t) {
    const long b = t / pblocks, p0 = (t % pblocks) * kP, p1 = std::min(HW, p0 + kP);
    const float* s = src + b * K * HW;
    float* d = dst + b * HW * K;
    for (long k0 = 0; k0 < K; k0 += 8) {
      const long k1 = std::min(K, k0 + 8);
      long p = p0;
#if defined(__AVX__)
      if (k1 - k0 == 8)
        for (; p + 8 <= p1; p += 8) {
          __m256 r[8];
          for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(s + (k0 + i) * HW + p);
          const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
          const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
          const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
          const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
          const __m256 u[8] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
                               _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE),
                               _mm256_shuffle_ps(t4, t6, 0x44), _mm256_shuffle_ps(t4, t6, 0xEE),
                               _mm256_shuffle_ps(t5, t7, 0x44), _mm256_shuffle_ps(t5, t7, 0xEE)};
          for (int i = 0; i < 4; ++i) {  // rows i and i + 4: the low and high 128-bit halves
            _mm256_storeu_ps(d + (p + i) * K + k0, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
            _mm256_storeu_ps(d + (p + i + 4) * K + k0, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
          }
        }
#endif
      for (; p < p1; ++p)
        for (long k = k0; k < k1; ++k) d[p * K + k] = s[k * HW + p];
    }
  }
}

// A(x) in evaluation mode, on the model's device, returned to the host pixel-major: [n][S*S][K]
// (K = C*256 logits, or C for an l2 model), one sub-pixel's logits contiguous (the draw reads
// one at a time), valid until this thread's next call. The graph's [n][K][S*S] is transposed
// once (pixel_major; was: a plain copy, then a strided transpose of each row on thread 0 when
// the row started, ~40 us a row at batch 1). On the CPU the graph and the host copy are kept
// between calls (one of each per thread): a fresh graph paid the first-touch page faults of its
// memory on every call (about 130 MB at batch 16: 90-1200 ms per call on the 2 vCPU EPYC VM,
// whose host backs guest memory lazily, for about 30 ms of arithmetic; docs/performance.md). A
// GPU graph is made per call (device memory is not faulted in, and no CUDA buffer should outlive
// main()).
const std::vector<float>& conditioning_logits(Model<float>& m, const std::vector<float>& xn, int n) {
  thread_local std::vector<float> out, staged;
  thread_local std::unique_ptr<Graph<float>> cpu_graph;
  std::unique_ptr<Graph<float>> per_call;
  Graph<float>* g = nullptr;
  if (m.device() == Device::Cpu) {
    if (!cpu_graph) cpu_graph = std::make_unique<Graph<float>>(Device::Cpu);
    g = cpu_graph.get();
    g->reset();  // the same shapes as the last call get the same memory back
  } else {
    per_call = std::make_unique<Graph<float>>(m.device());
    g = per_call.get();
  }
  const ModelConfig& cfg = m.config();
  const int L = cfg.low();
  g->grad_enabled = false;
  Tensor<float>* x = g->tensor({n, cfg.colors, L, L}, false, "x");
  device_upload(m.device(), x->data, xn.data(), xn.size() * sizeof(float));
  Tensor<float>* a = m.conditioning(*g, x, false);
  const float* src = a->data;
  if (m.device() != Device::Cpu) {
    staged.resize(a->numel());
    device_download(m.device(), staged.data(), a->data, staged.size() * sizeof(float));
    src = staged.data();
  }
  out.resize(a->numel());  // zero-fills only when it grows
  pixel_major(src, out.data(), n, a->shape.c, long(a->shape.h) * a->shape.w);
  return out;
}

// ------------------------------------------------------------------------------- cached state
//
// Layout: every activation the cached sampler keeps is channel-last, per image, with the
// layer's zero padding stored around it, so that a conv's patch at one position is one
// contiguous run of floats: a 1 x kw patch at column j is kw * ci floats of a padded row, a
// kh x kw patch is kh such runs. The packed weights use the same input order, (ky, kx, ci).
//
// Per colour c only what colour c can change is computed (docs/design.md 1.2's masks): in every
// masked layer (first_h mask A; h, res, head1, head2 mask B) an output of colour group g reads
// the current pixel's inputs of groups < g (A) or <= g (B) only. So the outputs of group g at
// (i, j) depend on the colours < g there and are final once those are drawn: at colour c the
// sampler computes the group-c outputs of every layer (11 of 32 channels of the stacks, 341 of
// head1's 1024, head2's 256 logits of colour c, not 768), reading the groups < c that earlier
// colours left in the buffers. Their inputs are a prefix of the (ky, kx, ci) order (the
// current pixel's tap is last; groups are channel ranges in order), so each colour's product
// has K = that prefix. The link (unmasked, reading the row above) is done per row.

using sampler_gemm::gemm;
using sampler_gemm::gemm_panel;
using sampler_gemm::Packed;

// A prior layer's applied weights, read in the channel-last input order k = (ky*kw + kx)*ci + i.
struct LayerWeights {
  const ConvLayer<float>* def = nullptr;
  std::vector<float> w, b, mask;  // w, mask: [co][ci][kh][kw] (mask empty: unmasked)
  int CI = 0, KH = 0, KW = 0, K = 0;
  std::vector<int> kofs;  // [K]: input k's offset within an output's weights (no division per weight)
  LayerWeights(const ConvLayer<float>& c, const HostValues<float>& P, const HostValues<float>& M)
      : def(&c), w(c.applied_weights(P, M)), b(c.bias_values(P)), CI(c.ci()), KH(c.kh()), KW(c.kw()) {
    K = CI * KH * KW;
    if (c.mask) mask.assign(M.at(c.mask), M.at(c.mask) + c.mask->numel());
    kofs.resize(size_t(K));
    for (int k = 0; k < K; ++k) {
      const int ci = k % CI, t = k / CI, kx = t % KW, ky = t / KW;
      kofs[size_t(k)] = (ci * KH + ky) * KW + kx;
    }
  }
  size_t index(int o, int k) const { return size_t(o) * K + size_t(kofs[size_t(k)]); }
  float weight(int o, int k) const { return w[index(o, k)]; }
  bool allowed(int o, int k) const { return mask.empty() || mask[index(o, k)] != 0.f; }
};

Packed pack_all(const LayerWeights& L) {
  return sampler_gemm::pack(
      L.K, L.def->co(), [&](int k, int n) { return L.weight(n, k); }, [&](int n) { return L.b[size_t(n)]; });
}

// One masked layer at the current pixel, per colour: the outputs of colour group c (in channel
// order) and their product over the input prefix they may read.
struct ColourProduct {
  std::vector<int> outs;
  Packed B;
};

// weights = false: the outputs and the shape (B.K, B.N) only, nothing packed (a product that is
// run in parts packed separately).
std::vector<ColourProduct> pack_by_colour(const LayerWeights& L, int C, bool weights = true,
                                          int nv = sampler_gemm::kNV) {
  const ConvLayer<float>& d = *L.def;
  need(d.mask != nullptr, d, "a layer at the current pixel must be colour-masked");
  std::vector<ColourProduct> out(static_cast<size_t>(C));
  for (int c = 0; c < C; ++c) {
    ColourProduct& P = out[size_t(c)];
    int K = 0;
    for (int o = 0; o < d.co(); ++o) {
      if (colour_group(o, d.mask_spec.period_out, C) != c) continue;
      P.outs.push_back(o);
      for (int k = K; k < L.K; ++k)
        if (L.allowed(o, k)) K = k + 1;
    }
    if (!weights) {
      P.B.K = K, P.B.N = int(P.outs.size()), P.B.nv = nv;
      continue;
    }
    P.B = sampler_gemm::pack(
        K, int(P.outs.size()), [&](int k, int n) { return L.weight(P.outs[size_t(n)], k); },
        [&](int n) { return L.b[size_t(P.outs[size_t(n)])]; }, nv);
  }
  return out;
}

// A buffer of n images, each `rows` x `cols` x `ch` floats (channel-last), zero-initialised.
struct ImageBuf {
  int rows = 0, cols = 0, ch = 0;
  std::vector<float> v;
  // (One panel of slack past the end: gemm_init reads its init rows in whole panels.)
  void init(int n, int r, int c, int k, float fill = 0.f) {
    rows = r, cols = c, ch = k;
    v.assign(size_t(n) * r * c * k + size_t(sampler_gemm::kRowNV) * sampler_gemm::kVec, fill);
  }
  long image_stride() const { return long(rows) * cols * ch; }
  float* at(int b, int r, int c) { return v.data() + size_t(b) * image_stride() + (size_t(r) * cols + c) * ch; }
};

float sigmoid_f(float x) { return cpu::simd::sigmoid(x); }
float tanh_f(float x) { return cpu::simd::tanh(x); }

// y = sigmoid(s x) lane by lane, one vector (a loop of exactly kVec lanes: one vector body, no
// remainder; the gate's loops over a runtime range of lanes compiled into vector, half-vector and
// scalar paths with branches between them: ~200 TSC cycles per layer on the chain).
inline void sigmoid_vector(const float* x, const float* s, float* y) {
#pragma omp simd
  for (int k = 0; k < sampler_gemm::kVec; ++k) y[k] = sigmoid_f(s[k] * x[k]);
}

// The chain's gate at one position: g[k] = tanh(z[k]) sigmoid(z[q + k]) for k < q (z: colour c's
// pairs, the tanh halves first), as (2 sigmoid(2 z[k]) - 1) sigmoid(z[q + k]): one sigmoid over
// the 2q contiguous pre-activations (22 of 24 lanes at C = 3, p = 32), not a tanh and a sigmoid
// of q each in whole vectors (32 lanes, and tanh's polynomial for small a). Exact to float
// rounding (absolute). scale: 2 for k < q, 1 after, in whole vectors. In whole vectors: past 2q
// (sg) and q (g) the lanes are padding, not kept; sg holds ceil(2q / kVec) vectors, g
// ceil(q / kVec), and sg[q + k] is read up to k = ceil(q / kVec) kVec.
inline void chain_gate(const float* z, int q, const float* scale, float* sg, float* g) {
  constexpr int V = sampler_gemm::kVec;
  for (int k0 = 0; k0 < 2 * q; k0 += V) sigmoid_vector(z + k0, scale + k0, sg + k0);
  for (int k0 = 0; k0 < q; k0 += V) {
#pragma omp simd
    for (int k = 0; k < V; ++k) g[k0 + k] = (2.f * sg[k0 + k] - 1.f) * sg[q + k0 + k];
  }
}

// Runs independent jobs on the OpenMP threads (largest first: the caller orders them), then
// rethrows the first job's exception, if any (none may leave a parallel region).
void run_jobs(const std::vector<std::function<void()>>& jobs) {
  std::vector<std::exception_ptr> errors(jobs.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t k = 0; k < jobs.size(); ++k) {
    try {
      jobs[k]();
    } catch (...) { errors[k] = std::current_exception(); }
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

// The cached evaluation of Model::prior (the same layers, in the same order): per row the
// vertical stack (and the link for the next row), per (pixel, colour) the horizontal stack and
// the head at that pixel only, for that colour only. Every shape and padding is the layer's own
// (check_cacheable has checked the geometry); p is the stacks' width, first_h.co().
//
// Threads: with n >= threads, every thread owns a run of images and works alone (no barrier
// within a row). With fewer images than threads (batch 1), all threads work on all images (a
// team): thread 0 runs the chain of small products and the draw; thread 1 meanwhile runs the
// parts whose inputs are already final (head2's rows of the earlier colours' head1 outputs,
// the h layers' left taps and link), and after the chain half of head1; head2's panels are
// claimed one at a time by whichever thread is free (one barrier per sub-pixel), and the
// vertical stack is shared by positions (one barrier per layer).
class CachedSampler {
 public:
  CachedSampler(Model<float>& m, int n, int threads) : S_(m.config().size), C_(m.config().colors), n_(n) {
    check_cacheable(m);
    threads_ = std::max(1, threads);
    done_ = std::make_unique<DoneFlag[]>(size_t(threads_));  // (threads_ only shrinks below)
    split_ = n >= threads_;
    const HostValues<float> P(m.params), M(m.masks);
    // The packing runs as independent jobs on the sampler's threads (at batch 1 it is a sizeable
    // part of a call); each job writes its own slots.
    const int L = int(m.gated.size());
    const bool team = !split_ && threads_ > 1;
    // One image in a team: thread 0's chain (first_h, h, res, head1) and the left taps are
    // products of one row, packed in wider panels (sampler_gemm::kRowNV).
    const int row_nv = team && n == 1 ? sampler_gemm::kRowNV : sampler_gemm::kNV;
    v_.resize(size_t(L)), h_.resize(size_t(L)), link_.resize(size_t(L)), res_.resize(size_t(L));
    link_order_.resize(size_t(L));
    link_start_.assign(size_t(L), std::vector<int>(size_t(C_)));
    first_v_def_ = &m.first_v;
    first_h_def_ = &m.first_h;
    for (const auto& G : m.gated) v_def_.push_back(&G.v), h_def_.push_back(&G.h);
    std::unique_ptr<LayerWeights> h2;  // kept for the team's cut of head2 below
    std::vector<std::function<void()>> jobs;
    jobs.push_back([&] {
      h2 = std::make_unique<LayerWeights>(m.head2, P, M);
      head2_ = pack_by_colour(*h2, C_, !team);  // a team runs head2 as head2_low_ + head2_own_
    });
    jobs.push_back([&] {
      const LayerWeights fv(m.first_v, P, M), fh(m.first_h, P, M), h1(m.head1, P, M);
      first_v_ = pack_all(fv);
      first_h_ = pack_by_colour(fh, C_, true, row_nv);
      head1_ = pack_by_colour(h1, C_, true, row_nv);
    });
    for (int l = 0; l < L; ++l) {
      const GatedLayer<float>& G = m.gated[size_t(l)];
      jobs.push_back([&, l] {
        const LayerWeights v(G.v, P, M), lk(G.link, P, M);
        v_[size_t(l)] = pack_all(v);
        // The link's outputs in the order of the h layer's outputs per colour (each colour's
        // pairs one contiguous run of linkrow_: pixel_logits adds them with no gather).
        std::vector<int>& order = link_order_[size_t(l)];
        for (int c = 0; c < C_; ++c) {
          link_start_[size_t(l)][size_t(c)] = int(order.size());
          for (int o = 0; o < G.h.co(); ++o)
            if (colour_group(o, G.h.mask_spec.period_out, C_) == c) order.push_back(o);
        }
        need(int(order.size()) == G.link.co(), G.link, "the link must have the h layer's outputs");
        link_[size_t(l)] = sampler_gemm::pack(
            lk.K, lk.def->co(), [&](int k, int n) { return lk.weight(order[size_t(n)], k); },
            [&](int n) { return lk.b[size_t(order[size_t(n)])]; });
      });
      jobs.push_back([&, l] {
        const LayerWeights h(G.h, P, M), r(G.res, P, M);
        h_[size_t(l)] = pack_by_colour(h, C_, true, row_nv);
        res_[size_t(l)] = pack_by_colour(r, C_, true, row_nv);
      });
    }
    run_jobs(jobs);
    for (int l = 0; l < L; ++l) {
      // The gate pairs output f with f + p: the pair must be one colour (period p).
      const GatedLayer<float>& G = m.gated[size_t(l)];
      for (const ColourProduct& cp : h_[size_t(l)]) {
        const size_t q = cp.outs.size() / 2;
        bool paired = cp.outs.size() % 2 == 0;
        for (size_t k = 0; paired && k < q; ++k) paired = cp.outs[k + q] == cp.outs[k] + G.v.co() / 2;
        need(paired, G.h, "each tanh/sigmoid pair of the gate must be one colour");
      }
    }
    // The chain's gate (chain_gate): per layer and colour, the scale of its sigmoid's inputs, and
    // where its outputs (the tanh halves' channels) and res's start when each is one run of
    // channels (-1: not one run).
    gate_scale_.assign(size_t(L), std::vector<std::vector<float>>(size_t(C_)));
    gate_run_.assign(size_t(L), std::vector<int>(size_t(C_)));
    res_run_ = gate_run_;
    for (int l = 0; l < L; ++l)
      for (int c = 0; c < C_; ++c) {
        const std::vector<int>& outs = h_[size_t(l)][size_t(c)].outs;
        const int q = int(outs.size()) / 2, V = sampler_gemm::kVec;
        std::vector<float>& scale = gate_scale_[size_t(l)][size_t(c)];
        scale.assign(size_t((2 * q + V - 1) / V * V), 1.f);
        std::fill_n(scale.begin(), q, 2.f);
        gate_run_[size_t(l)][size_t(c)] = run_start(std::vector<int>(outs.begin(), outs.begin() + q));
        res_run_[size_t(l)][size_t(c)] = run_start(res_[size_t(l)][size_t(c)].outs);
      }
    p_ = m.first_h.co();
    H1_ = m.head1.co();
    jobs.clear();
    // A team (fewer images than threads): head2's product for colour c is cut at klo = colour
    // c - 1's input prefix. Its rows [0, klo) read head1's outputs of the colours < c, which are
    // final before colour c starts: the team's other threads run that part while thread 0 runs
    // the chain up to head1 (head2_low_). The rows [klo, K) read colour c's own head1 outputs:
    // shared by the whole team after head1 (head2_own_). Needs head1's outputs of the colours
    // >= c to lie past klo (groups are channel ranges in order); otherwise klo = 0: one product.
    // The own rows are cut again at kmid, between thread 0's and thread 1's halves of head1's
    // panels (head1_pa_: thread 0 runs panels [0, pa), thread 1 the rest, both once the chain
    // is done; rows [klo, kmid) are head2_own_, rows [kmid, K) head2_own_b_, into logits_b_).
    // Needs colour c's head1 outputs to be the rows [klo, K) in order; otherwise pa = 0: thread
    // 1 runs all of head1 and kmid = klo.
    head2_klo_.assign(size_t(C_), 0);
    head2_kmid_.assign(size_t(C_), 0);
    head1_pa_.assign(size_t(C_), 0);
    if (!split_ && threads_ > 1) {
      bool ranges = true;
      for (int c = 1; c < C_; ++c)
        for (int c2 = c; c2 < C_; ++c2)
          for (int o : head1_[size_t(c2)].outs) ranges &= o >= head2_[size_t(c) - 1].B.K;
      for (int c = 1; ranges && c < C_; ++c) head2_klo_[size_t(c)] = head2_[size_t(c) - 1].B.K;
      for (int c = 0; c < C_; ++c) {
        const ColourProduct& H1 = head1_[size_t(c)];
        const int klo = head2_klo_[size_t(c)];
        bool in_order = int(H1.outs.size()) == head2_[size_t(c)].B.K - klo;
        for (size_t k = 0; in_order && k < H1.outs.size(); ++k) in_order = H1.outs[k] == klo + int(k);
        // Thread 0's share: half at colour 0; two thirds at the later colours, where thread 1 also
        // runs head2's low part during the chain (with half, thread 0 waited 1400-2400 TSC
        // cycles a sub-pixel for thread 1's half there; with two thirds 200-300).
        head1_pa_[size_t(c)] = in_order ? (c == 0 ? H1.B.panels() / 2 : H1.B.panels() * 2 / 3) : 0;
        head2_kmid_[size_t(c)] = klo + std::min(int(H1.outs.size()), head1_pa_[size_t(c)] * H1.B.full());
      }
      head2_low_.resize(size_t(C_));
      head2_own_.resize(size_t(C_));
      head2_own_b_.resize(size_t(C_));
      for (int c = 0; c < C_; ++c)
        jobs.push_back([&, c] {
          const ColourProduct& P = head2_[size_t(c)];
          const int klo = head2_klo_[size_t(c)], kmid = head2_kmid_[size_t(c)], N = int(P.outs.size());
          auto w = [&](int k0) { return [&, k0](int k, int n) { return h2->weight(P.outs[size_t(n)], k0 + k); }; };
          auto none = [](int) { return 0.f; };
          const int h2nv = n == 1 ? sampler_gemm::kWideNV : row_nv;  // (one row: wide panels)
          head2_low_[size_t(c)] = sampler_gemm::pack(klo, N, w(0), none, h2nv);
          head2_own_[size_t(c)] = sampler_gemm::pack(
              kmid - klo, N, w(klo), [&](int n) { return h2->b[size_t(P.outs[size_t(n)])]; }, h2nv);
          head2_own_b_[size_t(c)] = sampler_gemm::pack(P.B.K - kmid, N, w(kmid), none, h2nv);
        });
    }
    const int S = S_, p = p_;
    // A team: each h layer's product is cut at the current pixel's tap. Its left taps (columns
    // j - pad_l .. j - 1, final when pixel j starts) and the link's row (final too) run on thread
    // 1 (h_left_, bias included, plus the link, into hpre_): colour 0's layer by layer ahead of
    // thread 0, which starts its chain after the last sub-pixel's draw; colour c + 1's while
    // thread 0 runs colour c. Thread 0 runs only the current tap's rows (h_cur_) and adds hpre_.
    if (!split_ && threads_ > 1) {
      h_left_.assign(size_t(L), std::vector<Packed>(size_t(C_)));
      h_cur_.assign(size_t(L), std::vector<Packed>(size_t(C_)));
      // hpre_[l][c]: each on cache lines of its own (thread 1 writes colour c + 1's while thread 0
      // reads colour c's: 96-byte vectors side by side in the heap shared lines).
      std::vector<size_t> at;
      size_t total = 0;
      for (int l = 0; l < L; ++l)
        for (int c = 0; c < C_; ++c) {
          at.push_back(total);
          total += (size_t(n) * wide(h_[size_t(l)][size_t(c)]) + 15) / 16 * 16;
        }
      hpre_buf_.assign(total + 16, 0.f);
      float* base = hpre_buf_.data() + (16 - reinterpret_cast<uintptr_t>(hpre_buf_.data()) / sizeof(float) % 16) % 16;
      hpre_.assign(size_t(L), std::vector<float*>(size_t(C_)));
      for (int l = 0; l < L; ++l)
        for (int c = 0; c < C_; ++c) hpre_[size_t(l)][size_t(c)] = base + at[size_t(l) * C_ + size_t(c)];
      for (int l = 0; l < L; ++l) {
        jobs.push_back([&, l] {
          const LayerWeights hw(*h_def_[size_t(l)], P, M);
          const int kcur = h_def_[size_t(l)]->pad_l * h_def_[size_t(l)]->ci();
          for (int c = 0; c < C_; ++c) {
            const ColourProduct& H = h_[size_t(l)][size_t(c)];
            auto w = [&](int k0) { return [&, k0](int k, int o) { return hw.weight(H.outs[size_t(o)], k0 + k); }; };
            const int N = int(H.outs.size());
            h_left_[size_t(l)][size_t(c)] = sampler_gemm::pack(
                std::min(kcur, H.B.K), N, w(0), [&](int o) { return hw.b[size_t(H.outs[size_t(o)])]; }, row_nv);
            h_cur_[size_t(l)][size_t(c)] = sampler_gemm::pack(
                std::max(0, H.B.K - kcur), N, w(kcur), [](int) { return 0.f; }, row_nv);
          }
        });
      }
    }
    run_jobs(jobs);
    // The chain's products of one row (one image per worker or team) as RowProducts where they
    // are one panel: the current tap and the left taps (a team), and res.
    h_cur_row_.assign(size_t(L), std::vector<sampler_gemm::RowProduct>(size_t(C_)));
    h_left_row_ = h_cur_row_;
    res_row_.assign(size_t(L), std::vector<sampler_gemm::RowProduct>(size_t(C_)));
    for (int l = 0; l < L; ++l)
      for (int c = 0; c < C_; ++c) {
        if (!h_cur_.empty()) {
          h_cur_row_[size_t(l)][size_t(c)] = sampler_gemm::row_product(h_cur_[size_t(l)][size_t(c)]);
          h_left_row_[size_t(l)][size_t(c)] = sampler_gemm::row_product(h_left_[size_t(l)][size_t(c)]);
        }
        res_row_[size_t(l)][size_t(c)] = sampler_gemm::row_product(res_[size_t(l)][size_t(c)].B);
      }
    // One image in a team: each layer of the chain as one fused step (sampler_chain::GatedStep,
    // AVX2) where its shapes fit: colour c's gate and res channels one run [g0, g0 + q), both
    // products reading the channels [0, g0 + q) of the current pixel.
    chain_.assign(size_t(L), std::vector<sampler_chain::GatedStep>(size_t(C_)));
    for (int l = 0; l < L && team && n == 1; ++l)
      for (int c = 0; c < C_; ++c) {
        const Packed& cur = h_cur_[size_t(l)][size_t(c)];
        const ColourProduct& R = res_[size_t(l)][size_t(c)];
        const int q = int(h_[size_t(l)][size_t(c)].outs.size()) / 2, g0 = gate_run_[size_t(l)][size_t(c)];
        if (g0 < 0 || res_run_[size_t(l)][size_t(c)] != g0 || cur.K != g0 + q || R.B.K != g0 + q ||
            int(R.outs.size()) != q || cur.N != 2 * q || !sampler_chain::GatedStep::fits(q))
          continue;
        chain_[size_t(l)][size_t(c)] = sampler_chain::GatedStep::make(
            q, g0, [&](int k, int o) { return cur.weight(k, o); }, [&](int k, int o) { return R.B.weight(k, o); },
            [&](int o) { return R.B.bias_of(o); });
      }
    // y (normalised) in a ring of first_v's rows, padded for first_v and first_h.
    ypl_ = std::max(m.first_v.pad_l, m.first_h.pad_l);
    yring_.init(n, m.first_v.kh(), ypl_ + S + m.first_v.pad_r, C_, 0.f);
    int vkh = 1, vpl = 0, vpr = 0, hpl = 0;
    for (const auto* d : v_def_)
      vkh = std::max(vkh, d->kh()), vpl = std::max(vpl, d->pad_l), vpr = std::max(vpr, d->pad_r);
    for (const auto* d : h_def_) hpl = std::max(hpl, d->pad_l);
    vpl_ = vpl;
    hpl_ = hpl;
    vring_.resize(size_t(L));
    for (auto& r : vring_) r.init(n, vkh, vpl + S + vpr, p);
    hrow_.resize(size_t(L) + 1);
    for (auto& h : hrow_) h.init(n, 1, hpl + S, p);
    linkrow_.resize(size_t(L));
    gate_.resize(size_t(L));
    for (int l = 0; l < L; ++l) {
      linkrow_[size_t(l)].init(n, 1, S, link_[size_t(l)].N);
      gate_[size_t(l)].init(n, 1, 1, p);
    }
    head1_cur_.init(n, 1, 1, H1_);
    logits_.assign(size_t(n) * kLevels, 0.f);
    logits_low_.assign(2 * size_t(n) * kLevels, 0.f);
    logits_b_.assign(size_t(n) * kLevels, 0.f);
    b_compact_.assign(size_t(n) * H1_, 0.f);
    b_kidx_.assign(size_t(H1_), 0);
    b_relu_.assign(size_t(n) * p_, 0.f);
    int h1cols = 0;
    for (const ColourProduct& H1 : head1_) h1cols = std::max(h1cols, H1.B.cols());
    b_tmp_.assign(size_t(n) * (size_t(h1cols) + sampler_gemm::kNR), 0.f);
    // Workers and their scratch (nothing is allocated per step).
    const int W = split_ ? std::min(threads_, n) : 1;
    if (split_) threads_ = W;
    int kmax = first_v_.K, nmax = first_v_.N;
    for (int l = 0; l < L; ++l) kmax = std::max(kmax, v_[size_t(l)].K), nmax = std::max(nmax, v_[size_t(l)].N);
    int wide = 2 * p;
    for (int c = 0; c < C_; ++c) wide = std::max(wide, head1_[size_t(c)].B.cols());
    for (int w = 0; w < W; ++w) {
      Worker wk;
      wk.b0 = split_ ? w * n / W : 0;
      wk.b1 = split_ ? (w + 1) * n / W : n;
      const int M = wk.b1 - wk.b0;
      wk.patch.assign(size_t(M) * S * kmax, 0.f);
      wk.vout.assign(size_t(M) * S * std::max(nmax, 2 * p) + sampler_gemm::kNR, 0.f);
      wk.tmp.assign(size_t(M) * (wide + sampler_gemm::kNR), 0.f);
      // (the horizontal gate: q + 2q floats in whole vectors, q <= p, and reads past them)
      wk.tmp2.assign(size_t(M) * (wide + sampler_gemm::kNR) + 3 * size_t(p) + 4 * sampler_gemm::kVec, 0.f);
      wk.relu.assign(size_t(M) * p, 0.f);
      wk.compact.assign(size_t(M) * H1_, 0.f);
      wk.kidx.assign(size_t(H1_), 0);
      wk.low_compact.assign(size_t(M) * H1_, 0.f);
      wk.low_kidx.assign(size_t(H1_), 0);
      workers_.push_back(std::move(wk));
    }
    reset(m);
  }

  // Every buffer back to a fresh sampler's state, the layers' shapes read from `m` again: the
  // next call on the same model (the same parameter and mask values), batch and threads reuses
  // the packed weights and the buffers (sample_images keeps the last sampler of each thread).
  void reset(Model<float>& m) {
    first_v_def_ = &m.first_v;
    first_h_def_ = &m.first_h;
    for (size_t l = 0; l < m.gated.size(); ++l) v_def_[l] = &m.gated[l].v, h_def_[l] = &m.gated[l].h;
    auto zero = [](std::vector<float>& v) { std::fill(v.begin(), v.end(), 0.f); };
    // y: -1 (level 0) inside the image, 0 in the padding, until drawn.
    zero(yring_.v);
    for (int b = 0; b < n_; ++b)
      for (int r = 0; r < yring_.rows; ++r) std::fill_n(yring_.at(b, r, ypl_), size_t(S_) * C_, -1.f);
    for (auto* bufs : {&vring_, &hrow_, &gate_})
      for (ImageBuf& buf : *bufs) zero(buf.v);
    // The link of row 0 reads the zero row above the image: its bias.
    for (size_t l = 0; l < linkrow_.size(); ++l)
      for (int b = 0; b < n_; ++b)
        for (int j = 0; j < S_; ++j)
          for (int o = 0; o < link_[l].N; ++o) linkrow_[l].at(b, 0, j)[o] = link_[l].bias_of(o);
    zero(head1_cur_.v);
    zero(logits_);
    zero(logits_low_);
    for (auto* v : {&logits_b_, &b_compact_, &b_relu_, &b_tmp_}) zero(*v);
    zero(hpre_buf_);
    for (Worker& wk : workers_) {
      for (auto* v : {&wk.patch, &wk.vout, &wk.tmp, &wk.tmp2, &wk.relu, &wk.compact, &wk.low_compact}) zero(*v);
      wk.nk = -1;
    }
    barrier_count_ = 0, barrier_gen_ = 0;
    own_open_ = 0, low_open_ = 0, hpre_open_ = 0, hpre0_open_ = 0;
    own_next_ = 0, low_next_ = 0, b_next_ = 0;
    b_open_ = 0, chain_open_ = 0, b_claim_ = 0;
    for (int t = 0; t < threads_; ++t) done_[size_t(t)].v = 0;
    low_nk_ = -1, b_nk_ = -1;
  }

  int threads() const { return threads_; }
  int first_image(int w) const { return workers_[size_t(w)].b0; }
  int end_image(int w) const { return workers_[size_t(w)].b1; }
  int workers() const { return int(workers_.size()); }
  bool shared() const { return !split_; }  // all threads on all images

  // The normalised value of a drawn sub-pixel goes into the y ring (first_v and first_h read it).
  void set_y(int b, int i, int j, int c, float v) { yring_.at(b, i % yring_.rows, ypl_ + j)[c] = v; }

  // Prior logits B for colour c at (i, j), images [b0, b1): logits(b) + logits_low(b) (the
  // latter: nullptr when there is no low part). Run by every thread of the worker's team (tid of
  // nt); in a team the logits are complete when it returns.
  void pixel_logits(int w, int i, int j, int c, int tid, int nt, SamplerProfile* prof) {
    Worker& wk = workers_[size_t(w)];
    const int b0 = wk.b0, M = wk.b1 - wk.b0, L = int(h_.size());
    const long px = long(i) * S_ + j;   // the pixel's number
    const long step = px * C_ + c + 1;  // this call's number (team flags start at 0)
    const int klo = head2_klo_[size_t(c)], khi = head2_[size_t(c)].B.K;
    const int kmid = nt > 1 ? head2_kmid_[size_t(c)] : khi;
    const Packed& own = head2_own_.empty() ? head2_[size_t(c)].B : head2_own_[size_t(c)];
    Clock clk(tid == 0 ? prof : nullptr);
    if (tid == 0) {
      // h_0 = first_h(y) at (i, j): the padded row i from column j - pad_l, every colour.
      {
        const ColourProduct& P = first_h_[size_t(c)];
        const float* A = yring_.at(b0, i % yring_.rows, ypl_ + j - first_h_def_->pad_l);
        gemm(A, yring_.image_stride(), M, P.B, wk.tmp.data(), wide(P));
        scatter(wk.tmp.data(), wide(P), P.outs, hrow_[0], b0, M, hpl_ + j);
      }
      const bool pre = !h_cur_.empty();  // the left taps' and the link's sums are in hpre_
      long ready = 0;  // colour 0: hpre0_open_ as last read (layers of pixel px ready: ready - px * L)
      if (pre && c > 0) {
        clk.lap(&SamplerProfile::horizontal);
        wait_until(hpre_open_, px * C_ + c + 1);
        clk.lap(&SamplerProfile::wait);
      }
      // hpre_'s rows were written by thread 1: each is a line or two in its cache, and a layer
      // needed its own ~250 core cycles after it started. Fetched here all at once (colour 0: as
      // its layers open).
      int fetched = 0;  // layers of hpre_ prefetched
      auto fetch_hpre = [&](int upto) {
        for (; fetched < upto; ++fetched) {
          const char* b = reinterpret_cast<const char*>(hpre_[size_t(fetched)][size_t(c)]);
          const size_t bytes = size_t(M) * wide(h_[size_t(fetched)][size_t(c)]) * sizeof(float);
          for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(b + o, 0, 3);
        }
      };
      if (pre && c > 0) fetch_hpre(L);
      for (int l = 0; l < L; ++l) {
        // h_pre = Hconv(h) + link(down_shift(v_pre)) for colour c's pairs, then the gate.
        const ColourProduct& H = h_[size_t(l)][size_t(c)];
        const int pad = h_def_[size_t(l)]->pad_l;
        if (pre && c == 0 && ready < px * L + l + 1) {
          ready = wait_until(hpre0_open_, px * L + l + 1);
          fetch_hpre(int(std::min<long>(L, ready - px * L)));
        }
        if (const sampler_chain::GatedStep& step1 = chain_[size_t(l)][size_t(c)]; pre && M == 1 && step1) {
          step1(hrow_[size_t(l)].at(b0, 0, hpl_ + j), hpre_[size_t(l)][size_t(c)], gate_[size_t(l)].at(b0, 0, 0),
                hrow_[size_t(l) + 1].at(b0, 0, hpl_ + j));
          clk.lap(&SamplerProfile::horizontal);
          continue;
        }
        // The products' sums get what the link (and in a team the left taps) added in the
        // product itself: no pass of its own over the pre-activations (linkrow_ holds colour c's
        // pairs as one run).
        if (pre && M == 1 && h_cur_row_[size_t(l)][size_t(c)])  // (tmp: a scratch row, its padding may be written)
          h_cur_row_[size_t(l)][size_t(c)](hrow_[size_t(l)].at(b0, 0, hpl_ + j), hpre_[size_t(l)][size_t(c)],
                                           wk.tmp.data(), true);
        else if (pre)  // the current tap only, from hpre_ (the left taps, the link, the bias)
          sampler_gemm::gemm_init(hpre_[size_t(l)][size_t(c)], wide(H), hrow_[size_t(l)].at(b0, 0, hpl_ + j),
                                  hrow_[size_t(l)].image_stride(), M, h_cur_[size_t(l)][size_t(c)], wk.tmp.data(),
                                  wide(H));
        else
          sampler_gemm::gemm_init(linkrow_[size_t(l)].at(b0, 0, j) + link_start_[size_t(l)][size_t(c)],
                                  linkrow_[size_t(l)].image_stride(), hrow_[size_t(l)].at(b0, 0, hpl_ + j - pad),
                                  hrow_[size_t(l)].image_stride(), M, H.B, wk.tmp.data(), wide(H));
        const int q = int(H.outs.size()) / 2;
        const int* outs = H.outs.data();
        for (int m = 0; m < M; ++m) {
          float* z = wk.tmp.data() + size_t(m) * wide(H);
          float* g = wk.tmp2.data();
          float* sg = g + (q + sampler_gemm::kVec - 1) / sampler_gemm::kVec * sampler_gemm::kVec;
          chain_gate(z, q, gate_scale_[size_t(l)][size_t(c)].data(), sg, g);
          float* gl = gate_[size_t(l)].at(b0 + m, 0, 0);
          if (const int g0 = gate_run_[size_t(l)][size_t(c)]; g0 >= 0)  // colour c's gate channels: one run
            for (int k = 0; k < q; ++k) gl[g0 + k] = g[k];
          else
            for (int k = 0; k < q; ++k) gl[outs[k]] = g[k];
        }
        clk.lap(&SamplerProfile::horizontal);
        // h' = h + res(gate): res reads the gate of groups <= c at this pixel.
        const ColourProduct& R = res_[size_t(l)][size_t(c)];
        const float* gin = gate_[size_t(l)].at(b0, 0, 0);
        if (const int r0 = res_run_[size_t(l)][size_t(c)]; r0 >= 0) {  // h' = (bias + sums) + h, in place
          const sampler_gemm::RowProduct& rp = res_row_[size_t(l)][size_t(c)];
          if (M == 1 && rp)
            rp(gin, hrow_[size_t(l)].at(b0, 0, hpl_ + j) + r0, hrow_[size_t(l) + 1].at(b0, 0, hpl_ + j) + r0);
          else
            sampler_gemm::gemm_init(hrow_[size_t(l)].at(b0, 0, hpl_ + j) + r0, hrow_[size_t(l)].image_stride(), gin,
                                    gate_[size_t(l)].image_stride(), M, R.B,
                                    hrow_[size_t(l) + 1].at(b0, 0, hpl_ + j) + r0, hrow_[size_t(l) + 1].image_stride());
        } else {
          gemm(gin, gate_[size_t(l)].image_stride(), M, R.B, wk.tmp.data(), wide(R));
          for (int m = 0; m < M; ++m) {
            const float* hin = hrow_[size_t(l)].at(b0 + m, 0, hpl_ + j);
            float* hout = hrow_[size_t(l) + 1].at(b0 + m, 0, hpl_ + j);
            const float* r = wk.tmp.data() + size_t(m) * wide(R);
            for (size_t k = 0; k < R.outs.size(); ++k) hout[R.outs[k]] = hin[R.outs[k]] + r[k];
          }
        }
        clk.lap(&SamplerProfile::link_res);
      }
      // Head: relu -> head1 (colour c's outputs) -> relu -> head2 (colour c's 256 logits).
      // A team: thread 1 runs head1's panels from pa on (it waits for the chain's end).
      if (nt > 1) chain_open_.store(step, std::memory_order_release);
      const int pa = nt > 1 ? head1_pa_[size_t(c)] : head1_[size_t(c)].B.panels();
      head1_part(c, b0, M, j, 0, pa, wk.relu.data(), wk.tmp.data());
      wk.nk = nonzero_inputs(b0, M, klo, kmid, wk.kidx.data(), wk.compact.data());
      clk.lap(&SamplerProfile::head);
    }
    float* out = logits_.data() + size_t(b0) * kLevels;
    auto own_panel = [&](int q) { head2_panel(q, own, out, b0, M, klo, wk.nk, wk.kidx.data(), wk.compact.data()); };
    if (nt == 1) {  // a worker alone
      for (int q = 0; q < own.panels(); ++q) own_panel(q);
      clk.lap(&SamplerProfile::head2);
      return;
    }
    // A team: head2's panels are claimed one at a time from three lists. The low part (rows of
    // the inputs final before colour c: head1's colours < c, which thread 0 does not write now) is
    // open from the start: thread 1 gathers its non-zero inputs and opens it while thread 0 runs
    // the chain. Colour c's own rows are two lists: thread 0's half of head1 (opened when thread 0
    // has run and gathered it) and thread 1's (the same, on thread 1, from the chain's end). Every
    // thread takes what is open first, so neither waits long for the other's share.
    float* low_out = logits_low_.data() + (size_t(step & 1) * n_ + size_t(b0)) * kLevels;
    const Packed& low = head2_low_.empty() ? own : head2_low_[size_t(c)];
    auto low_panel = [&](int q) {
      head2_panel(q, low, low_out, b0, M, 0, low_nk_, wk.low_kidx.data(), wk.low_compact.data());
    };
    const Packed& own_b = head2_own_b_[size_t(c)];
    float* b_out = logits_b_.data() + size_t(b0) * kLevels;
    auto b_panel = [&](int q) { head2_panel(q, own_b, b_out, b0, M, kmid, b_nk_, b_kidx_.data(), b_compact_.data()); };
    auto take = [](std::atomic<int>& next, int panels, auto&& run) {
      for (int q; (q = next.fetch_add(1, std::memory_order_relaxed)) < panels;) run(q);
    };
    // head1's panels from pa on, their non-zero outputs gathered (b_*), and head2_own_b_'s list
    // opened: run by whichever of threads 0 and 1 claims it first in this call (thread 1 once the
    // chain has ended and it is done with the low part; thread 0 once it is done with its own
    // half and the low part's open panels: at colour 2 it waited up to ~3 us a sub-pixel for
    // thread 1, busy with the 682 low rows). The same products either way: the same bits.
    auto head1_b = [&] {
      long claimed = b_claim_.load(std::memory_order_acquire);
      if (claimed >= step || !b_claim_.compare_exchange_strong(claimed, step)) return;
      head1_part(c, b0, M, j, head1_pa_[size_t(c)], head1_[size_t(c)].B.panels(), b_relu_.data(), b_tmp_.data());
      b_nk_ = nonzero_inputs(b0, M, kmid, khi, b_kidx_.data(), b_compact_.data());
      b_next_.store(0, std::memory_order_relaxed);
      b_open_.store(step, std::memory_order_release);
    };
    auto low_if_open = [&] {
      if (klo > 0 && low_open_.load(std::memory_order_acquire) == step) take(low_next_, low.panels(), low_panel);
    };
    if (tid == 0) {
      own_next_.store(0, std::memory_order_relaxed);
      own_open_.store(step, std::memory_order_release);
      take(own_next_, own.panels(), own_panel);
      low_if_open();
      if (b_open_.load(std::memory_order_acquire) != step) head1_b();
      wait_until(b_open_, step);
      take(b_next_, own_b.panels(), b_panel);
      low_if_open();
    } else {
      if (tid == 1 && !h_cur_.empty()) {
        // The left taps' and the link's sums of every h layer: colour 0's at colour 0, each
        // layer opened as it is done (thread 0 waits for them layer by layer); colour c + 1's at
        // colour c (thread 0 waits for them all when colour c + 1 starts).
        for (int c2 = c == 0 ? 0 : c + 1; c2 <= c + 1 && c2 < C_; ++c2) {
          for (int l = 0; l < L; ++l) {
            // hpre = (bias + the left taps' sums) + the link's row (added in the product).
            const int w = wide(h_[size_t(l)][size_t(c2)]);
            float* hp = hpre_[size_t(l)][size_t(c2)];
            const float* A = hrow_[size_t(l)].at(b0, 0, hpl_ + j - h_def_[size_t(l)]->pad_l);
            const float* lk = linkrow_[size_t(l)].at(b0, 0, j) + link_start_[size_t(l)][size_t(c2)];
            const sampler_gemm::RowProduct& lp = h_left_row_[size_t(l)][size_t(c2)];
            if (M == 1 && lp) lp(A, lk, hp, true);  // (hpre_'s rows are w floats: the padding may be written)
            else
              sampler_gemm::gemm_init(lk, linkrow_[size_t(l)].image_stride(), A, hrow_[size_t(l)].image_stride(), M,
                                      h_left_[size_t(l)][size_t(c2)], hp, w);
            if (c2 == 0) hpre0_open_.store(px * L + l + 1, std::memory_order_release);
          }
          hpre_open_.store(px * C_ + c2 + 1, std::memory_order_release);
        }
      }
      if (klo > 0) {
        if (tid == 1) {
          // The last call's panels all done (its low list and inputs are reused here).
          for (int t = 0; t < nt; ++t)
            if (t != 1) wait_until(done_[size_t(t)].v, step - 1);
          low_nk_ = nonzero_inputs(b0, M, 0, klo, wk.low_kidx.data(), wk.low_compact.data());
          low_next_.store(0, std::memory_order_relaxed);
          low_open_.store(step, std::memory_order_release);
        } else {
          wait_until(low_open_, step);
        }
        take(low_next_, low.panels(), low_panel);
      }
      if (tid == 1) {  // head1's other panels (unless thread 0 took them), and head2_own_b_'s
        wait_until(chain_open_, step);
        head1_b();
        wait_until(b_open_, step);
        take(b_next_, own_b.panels(), b_panel);
        wait_until(own_open_, step);
        take(own_next_, own.panels(), own_panel);
      } else {
        wait_until(own_open_, step);
        take(own_next_, own.panels(), own_panel);
        wait_until(b_open_, step);
        take(b_next_, own_b.panels(), b_panel);
      }
    }
    clk.lap(&SamplerProfile::head2);
    // Not a barrier: only thread 0 (the draw) needs every panel done. The others go on to the
    // next call's work (its left taps; none of it is read by this call's panels or draw), and
    // before they gather the next low part's inputs and reset its list, thread 1 waits for this
    // call's done_ of the others. A barrier here kept thread 1 waiting 600-1700 TSC
    // cycles a sub-pixel for thread 0's last panel, and its two-way handshake sat before the draw.
    done_[size_t(tid)].v.store(step, std::memory_order_release);
    if (tid == 0)
      for (int t = 1; t < nt; ++t) wait_until(done_[size_t(t)].v, step);
    clk.lap(&SamplerProfile::wait);
  }

  const float* logits(int b) const { return logits_.data() + size_t(b) * kLevels; }
  // head2's rows of thread 1's half of head1 (a team), or nullptr.
  const float* logits_b(int b) const { return head2_own_b_.empty() ? nullptr : logits_b_.data() + size_t(b) * kLevels; }
  // head2's low part of the last pixel_logits call (a team, colours > 0), or nullptr.
  // Two buffers, by the call's parity: thread 1 may start the next call's low part while thread
  // 0 still draws from this one (no barrier after the draw).
  const float* logits_low(int b, int i, int j, int c) const {
    const long step = (long(i) * S_ + j) * C_ + c + 1;
    return head2_klo_[size_t(c)] > 0 ? logits_low_.data() + (size_t(step & 1) * n_ + size_t(b)) * kLevels : nullptr;
  }

  // After row i is complete: the vertical stack for row i, and link(v_pre) of each layer for row
  // i + 1. A team shares the row's positions (image, column): each thread runs every product of
  // its own positions (weights read by each thread), so one barrier per layer is enough (the next
  // layer's patches read the neighbours' columns).
  void finish_row(int w, int i, int tid, int nt, SamplerProfile* prof) {
    Worker& wk = workers_[size_t(w)];
    const int b0 = wk.b0, M = wk.b1 - wk.b0, S = S_, p = p_, L = int(v_.size()), rows = M * S;
    Clock clk(tid == 0 ? prof : nullptr);
    sync(nt);  // thread 0 has drawn the row's last sub-pixel
    clk.lap(&SamplerProfile::wait);
    const int r0 = rows * tid / nt, r1 = rows * (tid + 1) / nt;  // this thread's share of rows
    const int mr = r1 - r0;
    // v_0 = first_v(y) at row i.
    im2col(yring_, *first_v_def_, ypl_, i, b0, r0, r1, first_v_.K, wk.patch.data());
    float* vout = wk.vout.data();
    gemm(wk.patch.data() + size_t(r0) * first_v_.K, first_v_.K, mr, first_v_, vout + size_t(r0) * first_v_.N,
         first_v_.N);
    if (L > 0)
      for (int r = r0; r < r1; ++r)
        std::copy_n(vout + size_t(r) * first_v_.N, p, vring_[0].at(b0 + r / S, i % vring_[0].rows, vpl_ + r % S));
    clk.lap(&SamplerProfile::vertical);
    sync(nt);
    clk.lap(&SamplerProfile::wait);
    for (int l = 0; l < L; ++l) {
      const Packed& V = v_[size_t(l)];
      im2col(vring_[size_t(l)], *v_def_[size_t(l)], vpl_, i, b0, r0, r1, V.K, wk.patch.data());
      gemm(wk.patch.data() + size_t(r0) * V.K, V.K, mr, V, vout + size_t(r0) * V.N, V.N);  // v_pre: [rows][2p]
      clk.lap(&SamplerProfile::vertical);
      // link(v_pre) for row i + 1: [rows][2p] into linkrow.
      const Packed& LK = link_[size_t(l)];
      ImageBuf& lr = linkrow_[size_t(l)];
      gemm(vout + size_t(r0) * V.N, V.N, mr, LK, lr.at(b0, 0, 0) + size_t(r0) * LK.N, LK.N);
      clk.lap(&SamplerProfile::link_res);
      if (l + 1 < L) {  // v = gate(v_pre): the next layer's input row
        for (int r = r0; r < r1; ++r) {
          const float* z = vout + size_t(r) * V.N;
          float* o = vring_[size_t(l) + 1].at(b0 + r / S, i % vring_[size_t(l) + 1].rows, vpl_ + r % S);
#pragma omp simd
          for (int k = 0; k < p; ++k) o[k] = tanh_f(z[k]) * sigmoid_f(z[p + k]);
        }
        clk.lap(&SamplerProfile::vertical);
        sync(nt);
        clk.lap(&SamplerProfile::wait);
      }
    }
    sync(nt);  // linkrow complete before the next row's pixels
    clk.lap(&SamplerProfile::wait);
  }

  // FLOPs per image of the products above (2 per multiply-add; K = the prefixes, N = the
  // outputs computed; padding to whole panels and head2's skipped zero inputs not counted).
  SamplerFlops flops() const {
    SamplerFlops f;
    const double px = double(S_) * S_;
    f.vertical = 2 * px * first_v_.K * first_v_.N;
    for (const Packed& v : v_) f.vertical += 2 * px * v.K * v.N;
    for (const Packed& lk : link_) f.link_res += 2 * px * lk.K * lk.N;
    for (int c = 0; c < C_; ++c) {
      auto kn = [&](const ColourProduct& P) { return 2 * px * P.B.K * P.B.N; };
      f.horizontal += kn(first_h_[size_t(c)]);
      for (size_t l = 0; l < h_.size(); ++l) f.horizontal += kn(h_[l][size_t(c)]), f.link_res += kn(res_[l][size_t(c)]);
      f.head += kn(head1_[size_t(c)]) + kn(head2_[size_t(c)]);
    }
    return f;
  }

 private:
  struct Worker {
    int b0 = 0, b1 = 0;  // images [b0, b1)
    std::vector<float> patch, vout, tmp, tmp2, relu, compact;
    std::vector<int> kidx;
    int nk = -1;                     // head2: columns kept (kidx), or -1: all
    std::vector<float> low_compact;  // the same for head2_low_ (the team's thread 1)
    std::vector<int> low_kidx;
  };
  // Adds the seconds since the last lap to one field of the profile (thread 0 only).
  struct Clock {
    SamplerProfile* prof;
    double t;
    explicit Clock(SamplerProfile* p) : prof(p), t(p ? now_seconds() : 0) {}
    void lap(double SamplerProfile::*field) {
      if (!prof) return;
      const double now = now_seconds();
      prof->*field += now - t;
      t = now;
    }
  };

  // The team's barrier (shared mode only; a worker of one thread never waits). Not OpenMP's:
  // libgomp's spins, and on a machine whose cores are also busy with other processes a thread
  // spinning for a descheduled partner keeps it off the core (measured: batch 1 at 0.3-1.6
  // s/image instead of 0.09). This one spins briefly, then yields the core.
  void sync(int nt) {
    if (nt <= 1) return;
    const int gen = barrier_gen_.load(std::memory_order_acquire);
    if (barrier_count_.fetch_add(1, std::memory_order_acq_rel) == nt - 1) {
      barrier_count_.store(0, std::memory_order_relaxed);
      barrier_gen_.store(gen + 1, std::memory_order_release);
      return;
    }
    for (int spin = 0; barrier_gen_.load(std::memory_order_acquire) == gen; ++spin) backoff(spin);
  }
  // One turn of a spin-wait: a pause (the core's other hardware thread, if a partner runs there,
  // keeps the execution units), and after 2000 turns a yield of the core.
  static void backoff(int spin) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
    if (spin > 2000) std::this_thread::yield();
  }
  // Each of the team's atomics on a cache line of its own: one thread polls what the other
  // writes, and two on one line made every write and every claim move the line between the
  // cores for the other's reads too (~40 ns a move when the VM's two vCPUs share a core complex,
  // ~250 ns when they do not: a round trip measured 77-530 ns).
  struct alignas(64) DoneFlag {
    std::atomic<long> v{0};
  };
  std::unique_ptr<DoneFlag[]> done_;  // per thread of a team: the last call it finished (pixel_logits)
  alignas(64) std::atomic<int> barrier_count_{0};
  alignas(64) std::atomic<int> barrier_gen_{0};
  // head2's panel lists in a team (pixel_logits): the call number that opened each, the next
  // panel to claim, the low part's non-zero input count (written by thread 1 before it opens).
  alignas(64) std::atomic<long> own_open_{0};
  alignas(64) std::atomic<long> low_open_{0};
  alignas(64) std::atomic<int> own_next_{0};
  alignas(64) std::atomic<int> low_next_{0};
  int low_nk_ = -1;
  // Spins briefly, then yields (as sync), until flag >= value (every flag only grows within a
  // call: a pixel's, a layer's or a call's number); returns the value it read.
  static long wait_until(const std::atomic<long>& flag, long value) {
    long v;
    for (int spin = 0; (v = flag.load(std::memory_order_acquire)) < value; ++spin) backoff(spin);
    return v;
  }

  // Panel q of a part of head2 (P: head2's rows from k0) into out [M][kLevels]: from the
  // gathered non-zero inputs (nk of them, nonzero_inputs) or, with nk < 0, from head1_cur_.
  void head2_panel(int q, const Packed& P, float* out, int b0, int M, int k0, int nk, const int* kidx,
                   const float* compact) {
    if (nk >= 0) gemm_panel(q, compact, H1_, M, P, out, kLevels, kidx, nk);
    else gemm_panel(q, head1_cur_.at(b0, 0, 0) + k0, head1_cur_.image_stride(), M, P, out, kLevels);
  }

  // Head1's panels [q0, q1) for colour c at column j of images [b0, b0 + M): relu(h)
  // into relu [M][p], the product into tmp, relu of it into head1_cur_ (colour c's outputs).
  void head1_part(int c, int b0, int M, int j, int q0, int q1, float* relu, float* tmp) {
    const ColourProduct& H1 = head1_[size_t(c)];
    if (q0 >= q1) return;
    const int L = int(h_.size()), p = p_, w = wide(H1);
    for (int m = 0; m < M; ++m) {
      const float* h = hrow_[size_t(L)].at(b0 + m, 0, hpl_ + j);
      for (int k = 0; k < H1.B.K; ++k) relu[size_t(m) * p + k] = std::max(0.f, h[k]);
    }
    for (int q = q0; q < q1; ++q) gemm_panel(q, relu, p, M, H1.B, tmp, w);
    const int k1 = std::min(int(H1.outs.size()), q1 * H1.B.full());
    for (int m = 0; m < M; ++m) {
      float* o = head1_cur_.at(b0 + m, 0, 0);
      const float* t = tmp + size_t(m) * w;
      for (int k = q0 * H1.B.full(); k < k1; ++k) o[H1.outs[size_t(k)]] = std::max(0.f, t[k]);
    }
  }

  // head2's inputs are ReLU outputs: with few images many are zero in every image, and those
  // rows of the product are left out (exactly: adding 0 * w changes no sum). Inputs [k0, k1) of
  // images [b0, b0 + M): when few enough are non-zero in some image, their positions less k0
  // go to kidx, their values to compact [M][H1_], and their count is returned; else -1 (all).
  int nonzero_inputs(int b0, int M, int k0, int k1, int* kidx, float* compact) {
    if (M > 4) return -1;
    if (M == 1) {  // one pass, without branches: every input is written, the count moves past the non-zero ones
      const float* x = head1_cur_.at(b0, 0, 0);
      int nk = 0;
      for (int k = k0; k < k1; ++k) {
        kidx[nk] = k - k0;
        compact[nk] = x[k];
        nk += x[k] != 0.f;
      }
      return nk >= (k1 - k0) * 3 / 4 ? -1 : nk;
    }
    int nk = 0;
    for (int k = k0; k < k1; ++k) {
      bool any = false;
      for (int m = 0; m < M; ++m) any |= head1_cur_.at(b0 + m, 0, 0)[k] != 0.f;
      if (any) kidx[nk++] = k - k0;
    }
    if (nk >= (k1 - k0) * 3 / 4) return -1;
    for (int m = 0; m < M; ++m)
      for (int q = 0; q < nk; ++q) compact[size_t(m) * H1_ + q] = head1_cur_.at(b0 + m, 0, 0)[k0 + kidx[q]];
    return nk;
  }
  static int wide(const ColourProduct& P) { return P.B.cols(); }  // a product's padded columns
  // outs[0] when outs[k] = outs[0] + k for every k (0 for none), else -1.
  static int run_start(const std::vector<int>& outs) {
    for (size_t k = 1; k < outs.size(); ++k)
      if (outs[k] != outs[0] + int(k)) return -1;
    return outs.empty() ? 0 : outs[0];
  }

  // out[o] at column `col` of row buffer `buf` = product column q, for q over `outs`.
  static void scatter(const float* t, int ld, const std::vector<int>& outs, ImageBuf& buf, int b0, int M, int col) {
    for (int m = 0; m < M; ++m) {
      float* o = buf.at(b0 + m, 0, col);
      for (size_t q = 0; q < outs.size(); ++q) o[outs[q]] = t[size_t(m) * ld + q];
    }
  }

  // Rows [r0, r1) of the patch matrix of output row i, row r = (image b0 + r / S, column r % S):
  // kh runs of kw * ci floats from the padded ring (rows above the image are zero).
  void im2col(ImageBuf& ring, const ConvLayer<float>& d, int pl_stored, int i, int b0, int r0, int r1, int K,
              float* patch) {
    const int S = S_, run = d.kw() * d.ci();
    for (int r = r0; r < r1; ++r) {
      const int b = b0 + r / S, j = r % S;
      float* dst = patch + size_t(r) * K;
      for (int ky = 0; ky < d.kh(); ++ky) {
        const int src_row = i - d.pad_t + ky;
        if (src_row < 0) std::fill_n(dst + size_t(ky) * run, run, 0.f);
        else std::copy_n(ring.at(b, src_row % ring.rows, pl_stored + j - d.pad_l), run, dst + size_t(ky) * run);
      }
    }
  }

  int S_, C_, n_, p_ = 0, H1_ = 0;   // image side, colours, images, stack width, head1 width
  int ypl_ = 0, vpl_ = 0, hpl_ = 0;  // left padding stored in the y ring, v rings, h rows
  int threads_ = 1;
  bool split_ = true;
  const ConvLayer<float>* first_v_def_ = nullptr;
  const ConvLayer<float>* first_h_def_ = nullptr;
  std::vector<const ConvLayer<float>*> v_def_, h_def_;
  Packed first_v_;
  std::vector<ColourProduct> first_h_, head1_, head2_;
  std::vector<Packed> v_, link_;
  // link_'s outputs: the h layer's, colour by colour ([layer]: output channels; [layer][colour]:
  // where that colour's run starts), as linkrow_ holds them.
  std::vector<std::vector<int>> link_order_, link_start_;
  std::vector<std::vector<std::vector<float>>> gate_scale_;  // [layer][colour]: see chain_gate
  std::vector<std::vector<int>> gate_run_, res_run_;         // [layer][colour]: run_start of outputs
  std::vector<std::vector<ColourProduct>> h_, res_;
  ImageBuf yring_, head1_cur_;
  std::vector<ImageBuf> vring_, hrow_, linkrow_, gate_;
  std::vector<float> logits_, logits_low_;  // head2's product (own rows), its low rows (team)
  std::vector<int> head2_klo_;              // per colour: head2's rows [0, klo) run as head2_low_
  std::vector<Packed> head2_low_, head2_own_;
  // A team: head1's panels of thread 0 per colour ([0, pa)), head2's rows of thread 1's half
  // (from kmid; packed as head2_own_b_, into logits_b_), thread 1's scratch and gathered inputs.
  std::vector<int> head1_pa_, head2_kmid_;
  std::vector<Packed> head2_own_b_;
  std::vector<float> logits_b_, b_compact_, b_relu_, b_tmp_;
  std::vector<int> b_kidx_;
  int b_nk_ = -1;
  alignas(64) std::atomic<long> b_open_{0};      // the call (step) whose head1_b is done
  alignas(64) std::atomic<long> chain_open_{0};  // the call whose chain is done
  alignas(64) std::atomic<long> b_claim_{0};     // the last call whose head1_b was claimed
  alignas(64) std::atomic<int> b_next_{0};
  // Team: h layers cut at the current tap ([layer][colour]); the left taps' sums
  // ([layer][colour]: [n][wide]), written by thread 1 (pixel_logits).
  std::vector<std::vector<Packed>> h_left_, h_cur_;
  std::vector<std::vector<sampler_gemm::RowProduct>> h_cur_row_, h_left_row_, res_row_;  // [layer][colour], M = 1
  std::vector<std::vector<sampler_chain::GatedStep>> chain_;  // [layer][colour]: fused (one image, a team), or empty
  std::vector<float> hpre_buf_;
  std::vector<std::vector<float*>> hpre_;        // [layer][colour]: into hpre_buf_, 64-byte aligned
  alignas(64) std::atomic<long> hpre_open_{0};   // (i * S + j) * C + c + 1: hpre_ of colours <= c complete
  alignas(64) std::atomic<long> hpre0_open_{0};  // (i * S + j) * L + l + 1: hpre_ of colour 0, layers <= l, ready
  std::vector<Worker> workers_;
};

}  // namespace

SamplerFlops cached_sampler_flops(Model<float>& m) { return CachedSampler(m, 1, 1).flops(); }

namespace {

// The cached sampler of this thread's last call, reset, when this call has the same model
// configuration, the same parameter and mask values (compared bit for bit: a model trained
// further, or another checkpoint, gets a new one), batch and threads; else a new one. Packing
// the weights was half of a batch-1 call's fixed cost (about 4 of 8 ms on the 2 vCPU EPYC).
CachedSampler& kept_sampler(Model<float>& m, int n, int threads) {
  struct Kept {
    std::unique_ptr<CachedSampler> sampler;
    std::string config;
    int n = 0, threads = 0;
    std::vector<float> params, masks;  // the values it was packed from
  };
  thread_local Kept kept;
  // Compared in 64 pieces on every thread (about 15 MB with the masks: 0.5-1 ms of a batch-1
  // call's ~5 ms fixed cost on one thread).
  auto same = [](const ParamSet<float>& s, const std::vector<float>& v) {
    if (s.total_count() != v.size()) return false;
    const size_t count = v.size();
    int differ = 0;
#pragma omp parallel for schedule(static) reduction(| : differ)
    for (int q = 0; q < 64; ++q) {
      const size_t k0 = count * size_t(q) / 64, k1 = count * size_t(q + 1) / 64;
      differ |= std::memcmp(s.data() + k0, v.data() + k0, (k1 - k0) * sizeof(float)) != 0;
    }
    return differ == 0;
  };
  check(m.device() == Device::Cpu, "cached sampler: a CPU model only (a GPU model has sample_images_gpu)");
  const std::string config = m.config().to_string();
  if (kept.sampler && kept.n == n && kept.threads == threads && kept.config == config && same(m.params, kept.params) &&
      same(m.masks, kept.masks)) {
    kept.sampler->reset(m);
    return *kept.sampler;
  }
  kept.sampler.reset();  // (its memory back before the new one takes its own)
  kept.sampler = std::make_unique<CachedSampler>(m, n, threads);
  kept.config = config;
  kept.n = n, kept.threads = threads;
  kept.params.assign(m.params.data(), m.params.data() + m.params.total_count());
  kept.masks.assign(m.masks.data(), m.masks.data() + m.masks.total_count());
  return *kept.sampler;
}

}  // namespace

std::vector<uint8_t> sample_images(Model<float>& m, const uint8_t* x, int n, const SampleOptions& opt) {
  const ModelConfig& cfg = m.config();
  check(n >= 1, "sample: no inputs");
  check(opt.temperature > 0 && std::isfinite(opt.temperature), "sample: --temperature must be > 0");
  // A GPU model: the cached sampler on the GPU's own kernels (model/sampler_gpu.h).
  if (opt.cached && m.device() == Device::Cuda && cfg.has_prior()) return sample_images_gpu(m, x, n, opt);
  const int C = cfg.colors, S = cfg.size, HW = S * S;
  const std::vector<float> xn = normalise_low(x, n, C, cfg.low());
  const std::vector<float>& A = conditioning_logits(m, xn, n);
  std::vector<uint8_t> out(size_t(n) * HW * C);
  if (!cfg.has_prior()) {  // ResNet-L2: the regression is the (mean) prediction
    for (size_t k = 0; k < out.size(); ++k) out[k] = to_byte(A[k]);  // both [n][S*S][C]
    if (opt.progress) opt.progress(S, S);
    return out;
  }
  const int CK = C * kLevels;
  // The uniforms in the order they are drawn: (pixel, colour, image), one per sub-pixel.
  std::mt19937_64 rng(opt.seed);
  std::vector<double> U(size_t(HW) * C * n);
  for (double& u : U) u = double(rng() >> 11) * 0x1.0p-53;
  if (opt.logits_out) opt.logits_out->assign(size_t(HW) * C * n * kLevels, 0.f);
  // The logits l = B (+ Bb) (+ Blow) + A of (pixel, colour) of image b.
  auto combine = [&](int b, int p, int c, const float* B, const float* Bb, const float* Blow, float* l) {
    const float* a = A.data() + (size_t(b) * HW + size_t(p)) * CK + size_t(c) * kLevels;
    if (Bb && Blow)
      for (int k = 0; k < kLevels; ++k) l[k] = ((B[k] + Bb[k]) + Blow[k]) + a[k];
    else if (Bb)
      for (int k = 0; k < kLevels; ++k) l[k] = (B[k] + Bb[k]) + a[k];
    else if (Blow)
      for (int k = 0; k < kLevels; ++k) l[k] = (B[k] + Blow[k]) + a[k];
    else
      for (int k = 0; k < kLevels; ++k) l[k] = B[k] + a[k];
  };
  // Record the logits l and the drawn level v.
  auto record = [&](int b, int p, int c, const float* l, int v) {
    if (opt.logits_out) std::copy(l, l + kLevels, opt.logits_out->begin() + ((size_t(p) * C + c) * n + b) * kLevels);
    out[(size_t(b) * HW + p) * C + c] = uint8_t(v);
  };
  auto uniform = [&](int b, int p, int c) { return U[(size_t(p) * C + c) * n + b]; };
  // Combine B + A for (pixel, colour) of image b, draw, record.
  auto draw_one = [&](int b, int p, int c, const float* B, const float* Bb, const float* Blow, float* l) -> int {
    combine(b, p, c, B, Bb, Blow, l);
    const int v = draw(l, opt.mode, opt.temperature, uniform(b, p, c));
    record(b, p, c, l, v);
    return v;
  };
  const long limit = opt.stop_after < 0 ? long(HW) * C : opt.stop_after;

  if (opt.cached) {
    CachedSampler& cs = kept_sampler(m, n, omp_get_max_threads());
    SamplerProfile* prof = opt.profile;
    bool stopped = false;
    for (int i = 0; i < S && !stopped; ++i) {
#pragma omp parallel num_threads(cs.threads())
      {
        const int t = omp_get_thread_num();
        const int w = cs.shared() ? 0 : t, tid = cs.shared() ? t : 0, nt = cs.shared() ? cs.threads() : 1;
        SamplerProfile* pr = t == 0 ? prof : nullptr;
        float l[kLevels];
        bool stop = false;
        for (int j = 0; j < S && !stop; ++j)
          for (int c = 0; c < C; ++c) {
            if (long(i * S + j) * C + c >= limit) {
              stop = true;
              break;
            }
            cs.pixel_logits(w, i, j, c, tid, nt, pr);
            const double t0 = pr ? now_seconds() : 0;
            const int px = i * S + j;
            if (tid == 0)  // the team's other threads go on to the next call's work meanwhile
              for (int b = cs.first_image(w); b < cs.end_image(w); ++b) {
                const int v = draw_one(b, px, c, cs.logits(b), cs.logits_b(b), cs.logits_low(b, i, j, c), l);
                cs.set_y(b, i, j, c, float(v) / 127.5f - 1.f);
              }
            if (pr) pr->draw += now_seconds() - t0;
          }
        if (!stop) cs.finish_row(w, i, tid, nt, pr);
#pragma omp master
        stopped = stop;
      }
      if (!stopped && opt.progress) opt.progress(i + 1, S);
    }
    return out;
  }

  // Naive: the whole prior for every sub-pixel.
  std::vector<float> yn(size_t(n) * C * HW, -1.f), B(size_t(n) * C * kLevels * HW), Bp(kLevels), l(kLevels);
  Graph<float> g(m.device());
  g.grad_enabled = false;
  long drawn = 0;
  for (int p = 0; p < HW; ++p) {
    for (int c = 0; c < C; ++c) {
      if (drawn++ >= limit) return out;
      g.reset();
      Tensor<float>* y = g.tensor({n, C, S, S}, false, "y");
      device_upload(m.device(), y->data, yn.data(), yn.size() * sizeof(float));
      Tensor<float>* b = m.prior(g, y);
      device_download(m.device(), B.data(), b->data, B.size() * sizeof(float));
      for (int img = 0; img < n; ++img) {
        for (int k = 0; k < kLevels; ++k) Bp[size_t(k)] = B[((size_t(img) * C + c) * kLevels + k) * HW + p];
        const int v = draw_one(img, p, c, Bp.data(), nullptr, nullptr, l.data());
        yn[(size_t(img) * C + c) * HW + p] = float(v) / 127.5f - 1.f;
      }
    }
    if (opt.progress && (p + 1) % S == 0) opt.progress((p + 1) / S, S);
  }
  return out;
}

}  // namespace prsr
