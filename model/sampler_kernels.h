// The GPU cached sampler's kernels (model/sampler_gpu.h), written once for both compilers:
// every function here is __host__ __device__ under nvcc and plain C++ under g++. The CUDA
// kernels (model/sampler_gpu.cu) are thin wrappers that run these bodies on every thread of a
// block; the host launcher (model/sampler_gpu.cpp) runs the very same bodies for every block on
// the CPU, serially or on real threads with a barrier, which is how the GPU algorithm is tested
// on a machine without a GPU (tests/test_sampler_gpu.cpp).
//
// The algorithm is the CPU cached sampler's (model/sampler.cpp: the same buffers, the same
// per-colour outputs over the same input prefixes, the same draw), laid out for a GPU:
//
//   row kernel (one launch per image row, one block per image, kRowThreads threads): for every
//     pixel j and colour c of row i, in order: first_h, then per gated layer the horizontal
//     conv + link + gate and the res, then head1 and head2 (colour c's outputs only), A + B,
//     and the draw. Each product is cut into kSplit partial sums per output (partial_dots),
//     shared out among the block's threads, then added up per output (combine), with a barrier
//     between dependent steps.
//   vertical kernel (after row i, one launch per layer: first_v, then each gated layer; one
//     block per (image, column), kVerticalThreads threads): v_pre for row i, then link(v_pre)
//     for row i + 1 and gate(v_pre), the next layer's input row.
//
// A block's body is a function of (tid, nt, sync): every loop over work items is strided by nt
// and every step that reads another thread's results follows a sync(). Run with nt = 1 and a
// sync that does nothing, it is the sequential program; the results do not depend on nt (each
// work item, a partial sum or an output, is computed by one thread the same way whatever nt).
//
// Layout (as model/sampler.cpp's): every activation kept is channel-last per image, with the
// layer's zero padding stored around it, so a conv's patch at one position is kh contiguous
// runs of kw * ci floats. Weights are [K][N] (input k in (ky, kx, ci) order, output n
// contiguous: the threads of a block, one output each, read consecutive floats).
#pragma once
#include <math.h>

#include <cstdint>

#if defined(__CUDACC__)
#define PRSR_HD __host__ __device__
#else
#define PRSR_HD
#endif
#if defined(__CUDA_ARCH__)  // nvcc's device pass only (its host pass hands pragmas to g++)
#define PRSR_NO_UNROLL _Pragma("unroll 1")
#else
#define PRSR_NO_UNROLL
#endif

namespace prsr::gpu_sampler {

constexpr int kLevelCount = 256;  // levels per sub-pixel (engine/backend.h kLevels)
constexpr int kMaxColours = 3;
constexpr int kRowThreads = 512;                          // threads per block of the row kernel
constexpr int kSplit = 8;                                 // partial sums per output at the current pixel (partial_dots)
constexpr int kVerticalThreads = 64;                      // threads per block of the vertical kernels (2p outputs)
enum Mode : int { kSample = 0, kMean = 1, kArgmax = 2 };  // DecodeMode, in this order

// out[o] = bias[o] + sum_{k < K} w[k * N + o] * in[k]; w and bias are offsets into Plan::W.
struct Dense {
  long w = 0, bias = 0;
  int K = 0, N = 0;
};
// A colour-masked layer at the current pixel (1 x kw, ending there): for colour c, the outputs
// Plan::I[outs[c] + q], q < count[c], of colour group c, over the input prefix k < kc[c] (every
// input they may read comes before it in the (kx, ci) order).
struct Masked {
  Dense d;
  int outs[kMaxColours] = {}, count[kMaxColours] = {}, kc[kMaxColours] = {};
  int pad_l = 0;
};
// A vertical conv (kh x kw, ending at the current row, keeping the width).
struct Vertical {
  Dense d;
  int kh = 0, kw = 0, ci = 0, pad_t = 0, pad_l = 0;
};

// n images, each rows x cols x ch floats (channel-last), at offset off of Plan::s; pl columns
// of left padding. Rings keep `rows` image rows, row r in slot r % rows.
struct Buffer {
  long off = 0;
  int rows = 1, cols = 1, ch = 1, pl = 0;
  PRSR_HD long image() const { return long(rows) * cols * ch; }
  PRSR_HD float* at(float* s, int b, int r, int col) const {
    return s + off + b * image() + (long(r) * cols + col) * ch;
  }
};

struct Gated {
  Vertical v;
  Masked h, res;
  Dense link;
  Buffer vin;       // the v conv's input ring (layer 0: first_v's output)
  Buffer hin;       // this layer's h input row (layer 0: first_h's output); its output is hout
  Buffer hout;      // the next layer's hin, or the head's input
  Buffer link_row;  // link(v_pre of the row above) for the current row: 1 x S x 2p
  Buffer gate;      // gate(h_pre) at the current pixel: 1 x 1 x p
};

// Everything a kernel reads: sizes, layer descriptions, and pointers into one memory (the
// device's for the CUDA kernels, the host's for the host launcher).
struct Plan {
  int n = 0, S = 0, C = 0, p = 0, L = 0, H1 = 0;
  Vertical first_v;
  Masked first_h, head1, head2;
  Buffer y;        // the drawn image, normalised: a ring of first_v.kh rows, C channels
  Buffer h_first;  // first_h's output row (= layers[0].hin, or head_in without gated layers)
  Buffer head_in;  // the last h row: the head's input
  Buffer h1;       // head1's output at the current pixel: 1 x 1 x H1
  Buffer vpre;     // the vertical kernels' v_pre: 1 x S x max(first_v.N, 2p)
  int mode = kSample;
  float tau = 1.f;
  long limit = 0;    // sub-pixels to draw ((pixel * C + colour) < limit)
  int part_len = 0;  // kSplit * the most outputs of one colour in any layer at the current pixel

  const float* W = nullptr;       // every layer's weights and biases
  const int* I = nullptr;         // the colour groups' output lists
  const Gated* layers = nullptr;  // L
  float* s = nullptr;             // the state buffers above
  const float* A = nullptr;       // conditioning logits [n][C * 256][S * S]
  const double* U = nullptr;      // the uniforms, [(pixel * C + colour) * n + image]
  uint8_t* out = nullptr;         // the images [n][S * S][C]
  float* logits_out = nullptr;    // optional: A + B of every drawn sub-pixel, as SampleOptions
};

// What a block shares (shared memory on the device): the 256 logits, their exponentials, two
// ints (the best level), and the partial sums of the products at the current pixel.
struct Scratch {
  float* logits;
  double* p;
  int* ints;
  float* part;  // Plan::part_len floats: partial_dots's partial sums
};

PRSR_HD inline float sigmoid_hd(float x) { return 1.f / (1.f + expf(-x)); }

// One output of a Dense (or Masked) layer over the first K inputs.
PRSR_HD inline float dot(const float* W, const Dense& d, int o, int K, const float* in) {
  float acc = W[d.bias + o];
  const float* w = W + d.w + o;
  for (int k = 0; k < K; ++k) acc += w[long(k) * d.N] * in[k];
  return acc;
}

#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
// The products at the current pixel, split for the GPU's threads: colour c's outputs of M
// (count of them) over the input prefix k < kc, each cut into kSplit contiguous chunks of k.
// part[r * count + q] = the sum over chunk r of w[k][outs[q]] * in[k] (relu(in[k]) if relu),
// one work item per (r, q): neighbouring threads take neighbouring outputs, so their weight
// reads are contiguous. The chunks are fixed by K, not by the block size: the result does not
// depend on nt.
template <class Block>
PRSR_HD void partial_dots(const float* W, const int* I, const Masked& M, int c, const float* in, bool relu, float* part,
                          Block& blk) {
  const int count = M.count[c], K = M.kc[c], N = M.d.N;
  const int* outs = I + M.outs[c];
  for (int item = blk.tid; item < count * kSplit; item += blk.nt) {
    const int r = item / count, q = item % count;
    const int k1 = K * (r + 1) / kSplit;
    const float* w = W + M.d.w + outs[q];
    float acc = 0.f;
    for (int k = K * r / kSplit; k < k1; ++k) acc += w[long(k) * N] * (relu ? fmaxf(0.f, in[k]) : in[k]);
    part[item] = acc;
  }
}

// Output q of colour c: the bias, then the kSplit partial sums in order.
PRSR_HD inline float combine(const float* W, const int* I, const Masked& M, int c, int q, const float* part) {
  const int count = M.count[c];
  float acc = W[M.d.bias + I[M.outs[c] + q]];
  for (int r = 0; r < kSplit; ++r) acc += part[r * count + q];
  return acc;
}

// The draw's exponential: exp(z) for z <= 0, +0 for z < -746 (below half the smallest
// subnormal, where exp is +0 in double). One definition for every target, written so that each
// rounding is fixed: every multiply-add is an explicit fma (exactly rounded, never left to the
// compiler's contraction), the rest are single IEEE operations. So the host's scalar form (this),
// its 4-wide AVX2 form (model/sampler.cpp draw_exponentials) and the device give the same bits.
// Within 2 ulp of exp (tests/test_sampler.cpp compares it with std::exp); not libm's bits, which
// differ between libraries anyway (docs/decisions.md).
//   z = n ln2 + r, n = rint(z / ln2), |r| <= ln2 / 2 (ln2 in two parts: r has one rounding);
//   exp(r) by its Taylor series to r^13 (remainder < 2^-56 relative), Horner in fma;
//   2^n as (p * 2^(n - n/2)) * 2^(n/2): both factors normal, the first product exact, so the
//   only rounding into the subnormal range is the last one.
namespace draw_exp_constants {
constexpr double kLog2e = 0x1.71547652b82fep+0, kLn2Hi = 0x1.62e42fefa39efp-1, kLn2Lo = 0x1.abc9e3b39803fp-56;
constexpr double kCut = -746.0;
}  // namespace draw_exp_constants

// 2^k for -1022 <= k <= 1023, from its bits.
PRSR_HD inline double pow2_int(int k) {
  const int64_t bits = int64_t(k + 1023) << 52;
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(bits);
#else
  double d;
  __builtin_memcpy(&d, &bits, sizeof d);
  return d;
#endif
}

// exp(r) for |r| <= ln2 / 2 (the Taylor coefficients 1/k!, k = 13 .. 0).
PRSR_HD inline double draw_exp_poly(double r) {
  double p = 0x1.6124613a86d09p-33;
  p = fma(p, r, 0x1.1eed8eff8d898p-29);
  p = fma(p, r, 0x1.ae64567f544e4p-26);
  p = fma(p, r, 0x1.27e4fb7789f5cp-22);
  p = fma(p, r, 0x1.71de3a556c734p-19);
  p = fma(p, r, 0x1.a01a01a01a01ap-16);
  p = fma(p, r, 0x1.a01a01a01a01ap-13);
  p = fma(p, r, 0x1.6c16c16c16c17p-10);
  p = fma(p, r, 0x1.1111111111111p-7);
  p = fma(p, r, 0x1.5555555555555p-5);
  p = fma(p, r, 0x1.5555555555555p-3);
  p = fma(p, r, 0.5);
  p = fma(p, r, 1.0);
  return fma(p, r, 1.0);
}

PRSR_HD inline double draw_exp(double z) {
  using namespace draw_exp_constants;
  if (z != z) return z;                 // NaN (a NaN logit) stays NaN, as exp
  if (z < kCut) return 0.0;             // exp(z) is +0
  const double zc = z > 0.0 ? 0.0 : z;  // z <= 0 in the draw (logit - the largest)
  const double n = rint(zc * kLog2e);   // -1076 .. 0
  const double r = fma(-n, kLn2Lo, fma(-n, kLn2Hi, zc));
  const int ni = int(n), n1 = ni / 2;  // both halves >= -538: 2^n1, 2^(ni - n1) are normal
  return draw_exp_poly(r) * pow2_int(ni - n1) * pow2_int(n1);
}

// The last steps of model/sampler.cpp's draw (kept identical: same doubles, same order), given
// the best level and p[l] = draw_exp((logit[l] - logit[best]) / t).
// (Not unrolled on the device: nvcc would keep all 256 doubles in registers between the loops
// and spill them.)
PRSR_HD inline int finish_draw(const double* p, int best, int mode, double u) {
  double sum = 0;
  PRSR_NO_UNROLL
  for (int l = 0; l < kLevelCount; ++l) sum += p[l];
  if (mode == kMean) {
    double m = 0;
    PRSR_NO_UNROLL
    for (int l = 0; l < kLevelCount; ++l) m += p[l] * l;
    const int v = int(floor(m / sum + 0.5));
    return v < 0 ? 0 : v > 255 ? 255 : v;
  }
  const double target = u * sum;
  double cum = 0;
  PRSR_NO_UNROLL
  for (int l = 0; l < kLevelCount; ++l) {
    cum += p[l];
    if (cum > target) return l;
  }
  return best;
}

#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
// Row i of image b: every pixel and colour, in order, up to the plan's limit.
template <class Block>
PRSR_HD void row_body(const Plan& P, int b, int i, Block& blk, Scratch sh) {
  const int S = P.S, C = P.C, tid = blk.tid, nt = blk.nt;
  const float* W = P.W;
  float* s = P.s;
  for (int j = 0; j < S; ++j)
    for (int c = 0; c < C; ++c) {
      const long pos = (long(i) * S + j) * C + c;
      if (pos >= P.limit) return;  // the same for every thread of the block
      // h_0 = first_h(y) at (i, j): the y ring's row from column j - pad_l, every colour.
      const Masked& F = P.first_h;
      partial_dots(W, P.I, F, c, P.y.at(s, b, i % P.y.rows, P.y.pl + j - F.pad_l), false, sh.part, blk);
      blk.sync();
      {
        float* out = P.h_first.at(s, b, 0, P.h_first.pl + j);
        const int* outs = P.I + F.outs[c];
        for (int q = tid; q < F.count[c]; q += nt) out[outs[q]] = combine(W, P.I, F, c, q, sh.part);
      }
      blk.sync();
      for (int l = 0; l < P.L; ++l) {
        const Gated& G = P.layers[l];
        // gate(h conv + link) for colour c's (tanh, sigmoid) pairs
        partial_dots(W, P.I, G.h, c, G.hin.at(s, b, 0, G.hin.pl + j - G.h.pad_l), false, sh.part, blk);
        blk.sync();
        {
          const float* lk = G.link_row.at(s, b, 0, j);
          float* g = G.gate.at(s, b, 0, 0);
          const int* outs = P.I + G.h.outs[c];
          const int half = G.h.count[c] / 2;
          for (int q = tid; q < half; q += nt) {
            const int ot = outs[q], os = outs[q + half];
            const float zt = combine(W, P.I, G.h, c, q, sh.part) + lk[ot];
            const float zs = combine(W, P.I, G.h, c, q + half, sh.part) + lk[os];
            g[ot] = tanhf(zt) * sigmoid_hd(zs);
          }
        }
        blk.sync();
        // h' = h + res(gate): res reads the gate of groups <= c at this pixel
        partial_dots(W, P.I, G.res, c, G.gate.at(s, b, 0, 0), false, sh.part, blk);
        blk.sync();
        {
          const float* hin = G.hin.at(s, b, 0, G.hin.pl + j);
          float* hout = G.hout.at(s, b, 0, G.hout.pl + j);
          const int* outs = P.I + G.res.outs[c];
          for (int q = tid; q < G.res.count[c]; q += nt)
            hout[outs[q]] = hin[outs[q]] + combine(W, P.I, G.res, c, q, sh.part);
        }
        blk.sync();
      }
      // head1 (colour c's outputs) on relu(h), then relu
      partial_dots(W, P.I, P.head1, c, P.head_in.at(s, b, 0, P.head_in.pl + j), true, sh.part, blk);
      blk.sync();
      {
        float* out = P.h1.at(s, b, 0, 0);
        const int* outs = P.I + P.head1.outs[c];
        for (int q = tid; q < P.head1.count[c]; q += nt)
          out[outs[q]] = fmaxf(0.f, combine(W, P.I, P.head1, c, q, sh.part));
      }
      blk.sync();
      const int HW = S * S, pix = i * S + j;
      // head2: colour c's 256 logits, + A
      partial_dots(W, P.I, P.head2, c, P.h1.at(s, b, 0, 0), false, sh.part, blk);
      blk.sync();
      for (int q = tid; q < kLevelCount; q += nt) {
        const float l = combine(W, P.I, P.head2, c, q, sh.part) + P.A[((long(b) * C + c) * kLevelCount + q) * HW + pix];
        sh.logits[q] = l;
        if (P.logits_out) P.logits_out[((long(pix) * C + c) * P.n + b) * kLevelCount + q] = l;
      }
      blk.sync();
      // The draw (model/sampler.cpp's draw): the first best level, then the exponentials in
      // double (one per thread), then the sums in order (one thread).
      if (tid == 0) {
        int best = 0;
        for (int l = 1; l < kLevelCount; ++l)
          if (sh.logits[l] > sh.logits[best]) best = l;
        sh.ints[0] = best;
      }
      blk.sync();
      const int best = sh.ints[0];
      if (P.mode != kArgmax) {
        const double t = P.mode == kMean ? 1.0 : double(P.tau);
        for (int l = tid; l < kLevelCount; l += nt) {
          const double z = (double(sh.logits[l]) - double(sh.logits[best])) / t;
          sh.p[l] = draw_exp(z);
        }
      }
      blk.sync();
      if (tid == 0) {
        const int v = P.mode == kArgmax ? best : finish_draw(sh.p, best, P.mode, P.U[pos * P.n + b]);
        P.out[(long(b) * HW + pix) * C + c] = uint8_t(v);
        P.y.at(s, b, i % P.y.rows, P.y.pl + j)[c] = float(v) / 127.5f - 1.f;
      }
      blk.sync();
    }
}

#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
// After row i: vertical layer `layer` (-1: first_v) at column j of image b. first_v writes
// layer 0's input ring; gated layer l writes link(v_pre) for row i + 1 and, except the last,
// gate(v_pre) into layer l + 1's input ring.
template <class Block>
PRSR_HD void vertical_body(const Plan& P, int b, int j, int i, int layer, Block& blk) {
  const int tid = blk.tid, nt = blk.nt;
  const float* W = P.W;
  float* s = P.s;
  const Vertical& V = layer < 0 ? P.first_v : P.layers[layer].v;
  const Buffer& in = layer < 0 ? P.y : P.layers[layer].vin;
  float* vpre = P.vpre.at(s, b, 0, j);
  const int run = V.kw * V.ci;
  for (int o = tid; o < V.d.N; o += nt) {
    float acc = W[V.d.bias + o];
    const float* w = W + V.d.w + o;
    for (int ky = 0; ky < V.kh; ++ky) {
      const int src = i - V.pad_t + ky;
      if (src < 0) continue;  // the zero rows above the image
      const float* x = in.at(s, b, src % in.rows, in.pl + j - V.pad_l);
      const float* wk = w + long(ky) * run * V.d.N;
      for (int k = 0; k < run; ++k) acc += wk[long(k) * V.d.N] * x[k];
    }
    vpre[o] = acc;
  }
  blk.sync();
  const int p = P.p;
  if (layer < 0) {
    if (P.L > 0) {
      const Buffer& r = P.layers[0].vin;
      float* o = r.at(s, b, i % r.rows, r.pl + j);
      for (int k = tid; k < p; k += nt) o[k] = vpre[k];
    }
  } else {
    const Gated& G = P.layers[layer];
    float* lk = G.link_row.at(s, b, 0, j);
    for (int o = tid; o < G.link.N; o += nt) lk[o] = dot(W, G.link, o, G.link.K, vpre);
    if (layer + 1 < P.L) {
      const Buffer& r = P.layers[layer + 1].vin;
      float* o = r.at(s, b, i % r.rows, r.pl + j);
      for (int k = tid; k < p; k += nt) o[k] = tanhf(vpre[k]) * sigmoid_hd(vpre[p + k]);
    }
  }
  blk.sync();  // vpre is this block's again
}

// The CUDA launchers (model/sampler_gpu.cu; in a build without CUDA, model/sampler_gpu_stubs.cpp
// throws "not compiled with CUDA support"). All on the CUDA backend's stream (engine/cuda).
void launch_row(const Plan& P, int i);                  // n blocks
void launch_vertical(const Plan& P, int i, int layer);  // n * S blocks

}  // namespace prsr::gpu_sampler
