// The naive and the cached sampler (model/sampler.h).
#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "engine/ops.h"

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

// One level from 256 logits (A + B). One 53-bit uniform is drawn per call in every mode, so
// the random stream does not depend on the mode.
int draw(const float* logits, DecodeMode mode, float tau, std::mt19937_64& rng) {
  const double u = double(rng() >> 11) * 0x1.0p-53;
  int best = 0;
  for (int l = 1; l < kLevels; ++l)
    if (logits[l] > logits[best]) best = l;
  if (mode == DecodeMode::Argmax) return best;
  const double t = mode == DecodeMode::Mean ? 1.0 : double(tau);
  double p[kLevels], sum = 0;
  for (int l = 0; l < kLevels; ++l) sum += p[l] = std::exp((double(logits[l]) - logits[best]) / t);
  if (mode == DecodeMode::Mean) {
    double m = 0;
    for (int l = 0; l < kLevels; ++l) m += p[l] * l;
    return std::clamp(int(std::floor(m / sum + 0.5)), 0, 255);
  }
  const double target = u * sum;
  double cum = 0;
  for (int l = 0; l < kLevels; ++l) {
    cum += p[l];
    if (cum > target) return l;
  }
  return best;  // u * sum rounded up to the total: the last non-zero level is as good
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

// A(x) in evaluation mode, on the model's device, returned to the host: [n, C*256 or C, S, S].
std::vector<float> conditioning_logits(Model<float>& m, const std::vector<float>& xn, int n) {
  const ModelConfig& cfg = m.config();
  const int L = cfg.low();
  Graph<float> g(m.device());
  g.grad_enabled = false;
  Tensor<float>* x = g.tensor({n, cfg.colors, L, L}, false, "x");
  device_upload(m.device(), x->data, xn.data(), xn.size() * sizeof(float));
  Tensor<float>* a = m.conditioning(g, x, false);
  std::vector<float> out(a->numel());
  device_download(m.device(), out.data(), a->data, out.size() * sizeof(float));
  return out;
}

// ------------------------------------------------------------------------------- cached state

// A prior layer as the cached sampler applies it: its definition (shape, padding) and the
// weights it applies, on the host. w: [co][ci*kh*kw] (OIHW flattened), b: [co].
struct HostConv {
  const ConvLayer<float>* def = nullptr;
  std::vector<float> w, b;
  int co() const { return def->co(); }
  int k() const { return def->ci() * def->kh() * def->kw(); }
};

HostConv host_conv(const ConvLayer<float>& c, const HostValues<float>& P, const HostValues<float>& M) {
  return HostConv{&c, c.applied_weights(P, M), c.bias_values(P)};
}

// out[r][o] = b[o] + sum_k patch[r][k] * w[o][k]   (rows r = images or image x column)
// Only output channels [o0, o0 + co) are computed (the head's per-colour slice). These products
// are small (a few images x tens of channels) and there are ~60 of them per sub-pixel: a plain
// dot-product loop beats a BLAS call, whose per-call overhead dominates at this size.
void gemm_rows(float* out, const float* patch, int rows, const HostConv& c, int o0 = 0, int co = -1) {
  if (co < 0) co = c.co();
  const int K = c.k();
  const long work = long(rows) * co * K;
#pragma omp parallel for collapse(2) schedule(static) if (work > (1L << 18))
  for (int r = 0; r < rows; ++r)
    for (int o = 0; o < co; ++o) {
      const float* a = patch + size_t(r) * K;
      const float* w = c.w.data() + size_t(o0 + o) * K;
      float acc = 0.f;
#pragma omp simd reduction(+ : acc)
      for (int k = 0; k < K; ++k) acc += a[k] * w[k];
      out[size_t(r) * co + o] = c.b[o0 + o] + acc;
    }
}

float sigmoidf(float x) { return 1.f / (1.f + std::exp(-x)); }

// The cached evaluation of Model::prior (the same layers, in the same order): per row the
// vertical stack, per (pixel, colour) the horizontal stack and the head at that pixel only.
// Every shape and padding is the layer's own (check_cacheable has checked that they have the
// geometry this needs); p is the stacks' width, first_h.co().
class CachedSampler {
 public:
  CachedSampler(Model<float>& m, int n) : S_(m.config().size), C_(m.config().colors), n_(n) {
    check_cacheable(m);
    const HostValues<float> P(m.params), M(m.masks);
    first_v_ = host_conv(m.first_v, P, M);
    first_h_ = host_conv(m.first_h, P, M);
    for (const auto& G : m.gated) {
      v_.push_back(host_conv(G.v, P, M));
      h_.push_back(host_conv(G.h, P, M));
      link_.push_back(host_conv(G.link, P, M));
      res_.push_back(host_conv(G.res, P, M));
    }
    head1_ = host_conv(m.head1, P, M);
    head2_ = host_conv(m.head2, P, M);
    const int S = S_, p = first_h_.co(), L = int(v_.size());
    yn_.assign(size_t(n) * C_ * S * S, -1.f);
    vbuf_.assign(L, std::vector<float>(size_t(n) * p * S * S, 0.f));
    vpre_prev_.resize(L);
    for (int l = 0; l < L; ++l) vpre_prev_[l].assign(size_t(n) * v_[l].co() * S, 0.f);
    hrow_.assign(L + 1, std::vector<float>(size_t(n) * p * S, 0.f));
    int patch = std::max({first_v_.k(), first_h_.k(), head1_.k(), head2_.k()});
    int width = std::max({first_v_.co(), first_h_.co(), head1_.co()});  // widest output but head2's
    for (int l = 0; l < L; ++l) {
      patch = std::max({patch, v_[l].k(), h_[l].k(), link_[l].k(), res_[l].k()});
      width = std::max({width, v_[l].co(), h_[l].co(), link_[l].co(), res_[l].co()});
    }
    patch_.assign(size_t(n) * S * size_t(patch), 0.f);
    out_.assign(size_t(n) * S * width, 0.f);
    tmp_.assign(size_t(n) * width, 0.f);
    gate_.assign(size_t(n) * p, 0.f);
  }

  float* yn() { return yn_.data(); }

  // The prior's logits B for colour `c` at pixel (i, j), for every image: out[n][256]. Uses the
  // current y at (i, j) for colours < c (later colours are masked out) and the caches.
  void pixel_logits(int i, int j, int c, float* out) {
    const int S = S_, p = first_h_.co(), n = n_;
    // h_0 = first_h(y) at (i, j): taps j - pad_l + kx of row i, every colour.
    gather_row(first_h_, j, [&](int b, int ci) { return yn_.data() + ((size_t(b) * C_ + ci) * S + i) * S; });
    gemm_rows(tmp_.data(), patch_.data(), n, first_h_);
    scatter_col(hrow_[0], p, j, tmp_.data());
    for (size_t l = 0; l < h_.size(); ++l) {
      // h_pre = Hconv(h) + link(down_shift(v_pre)): the link reads v_pre of row i - 1.
      gather_row(h_[l], j, [&](int b, int ci) { return hrow_[l].data() + (size_t(b) * p + ci) * S; });
      gemm_rows(tmp_.data(), patch_.data(), n, h_[l]);
      const int q2 = v_[l].co();  // 2p: v_pre's channels, the link's input
      for (int b = 0; b < n; ++b)
        for (int ci = 0; ci < q2; ++ci) patch_[size_t(b) * q2 + ci] = vpre_prev_[l][(size_t(b) * q2 + ci) * S + j];
      const HostConv& lk = link_[l];
      gemm_rows(out_.data(), patch_.data(), n, lk);  // link(v_pre above), bias included
      for (size_t q = 0; q < size_t(n) * lk.co(); ++q) tmp_[q] += out_[q];
      // h' = h + res(gate(h_pre)): gate(z) = tanh(z[:half]) * sigmoid(z[half:]).
      const int half = h_[l].co() / 2;
      for (int b = 0; b < n; ++b)
        for (int ci = 0; ci < half; ++ci)
          gate_[size_t(b) * half + ci] =
              std::tanh(tmp_[size_t(b) * 2 * half + ci]) * sigmoidf(tmp_[size_t(b) * 2 * half + half + ci]);
      gemm_rows(out_.data(), gate_.data(), n, res_[l]);
      for (int b = 0; b < n; ++b)
        for (int ci = 0; ci < p; ++ci)
          hrow_[l + 1][(size_t(b) * p + ci) * S + j] =
              hrow_[l][(size_t(b) * p + ci) * S + j] + out_[size_t(b) * p + ci];
    }
    // Head: relu -> head1 -> relu -> head2 (only colour c's 256 rows).
    const auto& hl = hrow_.back();
    for (int b = 0; b < n; ++b)
      for (int ci = 0; ci < p; ++ci) gate_[size_t(b) * p + ci] = std::max(0.f, hl[(size_t(b) * p + ci) * S + j]);
    gemm_rows(tmp_.data(), gate_.data(), n, head1_);
    for (size_t q = 0; q < size_t(n) * head1_.co(); ++q) tmp_[q] = std::max(0.f, tmp_[q]);
    gemm_rows(out, tmp_.data(), n, head2_, c * kLevels, kLevels);
  }

  // After row i is complete: the vertical stack for row i (used by row i + 1 via the link).
  void finish_row(int i) {
    const int S = S_, p = first_h_.co(), n = n_;
    // v_0 = first_v(y) at row i: rows i - pad_t + ky.
    gather_full_row(first_v_, i,
                    [&](int b, int ci, int r) { return yn_.data() + ((size_t(b) * C_ + ci) * S + r) * S; });
    gemm_rows(out_.data(), patch_.data(), n * S, first_v_);
    if (!v_.empty()) scatter_row(vbuf_[0], p, i, out_.data());
    for (size_t l = 0; l < v_.size(); ++l) {
      gather_full_row(v_[l], i,
                      [&](int b, int ci, int r) { return vbuf_[l].data() + ((size_t(b) * p + ci) * S + r) * S; });
      gemm_rows(out_.data(), patch_.data(), n * S, v_[l]);  // v_pre: [n*S][2p]
      const int q2 = v_[l].co();
      for (int b = 0; b < n; ++b)
        for (int j = 0; j < S; ++j)
          for (int ci = 0; ci < q2; ++ci)
            vpre_prev_[l][(size_t(b) * q2 + ci) * S + j] = out_[(size_t(b) * S + j) * q2 + ci];
      if (l + 1 < v_.size())  // v = gate(v_pre): the next layer's input rows
        for (int b = 0; b < n; ++b)
          for (int j = 0; j < S; ++j)
            for (int ci = 0; ci < p; ++ci) {
              const float* z = out_.data() + (size_t(b) * S + j) * q2;
              vbuf_[l + 1][((size_t(b) * p + ci) * S + i) * S + j] = std::tanh(z[ci]) * sigmoidf(z[p + ci]);
            }
    }
  }

 private:
  // patch[b][ci][kx] = in(b, ci)[j - pad_l + kx] (zero outside), for a 1 x kw conv on one row.
  template <class RowFn>
  void gather_row(const HostConv& c, int j, RowFn row) {
    const int S = S_, CI = c.def->ci(), KW = c.def->kw(), pl = c.def->pad_l;
    for (int b = 0; b < n_; ++b)
      for (int ci = 0; ci < CI; ++ci) {
        const float* r = row(b, ci);
        float* d = patch_.data() + (size_t(b) * CI + ci) * KW;
        for (int kx = 0; kx < KW; ++kx) {
          const int x = j - pl + kx;
          d[kx] = x >= 0 && x < S ? r[x] : 0.f;
        }
      }
  }
  // patch[b*S + j][ci][ky][kx] for every column j of output row i of a kh x kw conv.
  template <class RowFn>
  void gather_full_row(const HostConv& c, int i, RowFn row) {
    const int S = S_, K = c.k(), CI = c.def->ci(), KH = c.def->kh(), KW = c.def->kw();
    const int pt = c.def->pad_t, pl = c.def->pad_l;
    for (int b = 0; b < n_; ++b)
      for (int ci = 0; ci < CI; ++ci)
        for (int ky = 0; ky < KH; ++ky) {
          const int r = i - pt + ky;
          const float* src = r >= 0 && r < S ? row(b, ci, r) : nullptr;
          for (int j = 0; j < S; ++j) {
            float* d = patch_.data() + (size_t(b) * S + j) * K + (size_t(ci) * KH + ky) * KW;
            for (int kx = 0; kx < KW; ++kx) {
              const int x = j - pl + kx;
              d[kx] = src && x >= 0 && x < S ? src[x] : 0.f;
            }
          }
        }
  }
  void scatter_col(std::vector<float>& rowbuf, int p, int j, const float* v) {
    for (int b = 0; b < n_; ++b)
      for (int ci = 0; ci < p; ++ci) rowbuf[(size_t(b) * p + ci) * S_ + j] = v[size_t(b) * p + ci];
  }
  void scatter_row(std::vector<float>& full, int p, int i, const float* v) {  // v: [n*S][p]
    const int S = S_;
    for (int b = 0; b < n_; ++b)
      for (int j = 0; j < S; ++j)
        for (int ci = 0; ci < p; ++ci) full[((size_t(b) * p + ci) * S + i) * S + j] = v[(size_t(b) * S + j) * p + ci];
  }

  int S_, C_, n_;  // image side, colours, images
  HostConv first_v_, first_h_, head1_, head2_;
  std::vector<HostConv> v_, h_, link_, res_;
  std::vector<float> yn_;
  std::vector<std::vector<float>> vbuf_, vpre_prev_, hrow_;
  std::vector<float> patch_, out_, tmp_, gate_;
};

}  // namespace

std::vector<uint8_t> sample_images(Model<float>& m, const uint8_t* x, int n, const SampleOptions& opt) {
  const ModelConfig& cfg = m.config();
  check(n >= 1, "sample: no inputs");
  check(opt.temperature > 0 && std::isfinite(opt.temperature), "sample: --temperature must be > 0");
  const int C = cfg.colors, S = cfg.size, HW = S * S;
  const std::vector<float> xn = normalise_low(x, n, C, cfg.low());
  const std::vector<float> A = conditioning_logits(m, xn, n);
  std::vector<uint8_t> out(size_t(n) * HW * C);
  if (!cfg.has_prior()) {  // ResNet-L2: the regression is the (mean) prediction
    for (int b = 0; b < n; ++b)
      for (int c = 0; c < C; ++c)
        for (int p = 0; p < HW; ++p) out[(size_t(b) * HW + p) * C + c] = to_byte(A[(size_t(b) * C + c) * HW + p]);
    if (opt.progress) opt.progress(S, S);
    return out;
  }
  std::mt19937_64 rng(opt.seed);
  if (opt.logits_out) opt.logits_out->assign(size_t(HW) * C * n * kLevels, 0.f);
  std::vector<float> logits(size_t(n) * kLevels);
  // Combine A + B for (pixel, colour), draw for every image, record.
  auto draw_all = [&](int p, int c, float* yn) {
    for (int b = 0; b < n; ++b) {
      float* l = logits.data() + size_t(b) * kLevels;
      for (int k = 0; k < kLevels; ++k) l[k] += A[((size_t(b) * C + c) * kLevels + k) * HW + p];
      if (opt.logits_out) std::copy(l, l + kLevels, opt.logits_out->begin() + ((size_t(p) * C + c) * n + b) * kLevels);
      const int v = draw(l, opt.mode, opt.temperature, rng);
      out[(size_t(b) * HW + p) * C + c] = uint8_t(v);
      yn[(size_t(b) * C + c) * HW + p] = float(v) / 127.5f - 1.f;
    }
  };

  const long limit = opt.stop_after < 0 ? long(HW) * C : opt.stop_after;
  long drawn = 0;
  if (opt.cached) {
    CachedSampler cs(m, n);
    for (int i = 0; i < S; ++i) {
      for (int j = 0; j < S; ++j)
        for (int c = 0; c < C; ++c) {
          if (drawn++ >= limit) return out;
          cs.pixel_logits(i, j, c, logits.data());
          draw_all(i * S + j, c, cs.yn());
        }
      cs.finish_row(i);
      if (opt.progress) opt.progress(i + 1, S);
    }
    return out;
  }

  // Naive: the whole prior for every sub-pixel.
  std::vector<float> yn(size_t(n) * C * HW, -1.f), B(size_t(n) * C * kLevels * HW);
  Graph<float> g(m.device());
  g.grad_enabled = false;
  for (int p = 0; p < HW; ++p) {
    for (int c = 0; c < C; ++c) {
      if (drawn++ >= limit) return out;
      g.reset();
      Tensor<float>* y = g.tensor({n, C, S, S}, false, "y");
      device_upload(m.device(), y->data, yn.data(), yn.size() * sizeof(float));
      Tensor<float>* b = m.prior(g, y);
      device_download(m.device(), B.data(), b->data, B.size() * sizeof(float));
      for (int img = 0; img < n; ++img)
        for (int k = 0; k < kLevels; ++k)
          logits[size_t(img) * kLevels + k] = B[((size_t(img) * C + c) * kLevels + k) * HW + p];
      draw_all(p, c, yn.data());
    }
    if (opt.progress && (p + 1) % S == 0) opt.progress((p + 1) / S, S);
  }
  return out;
}

}  // namespace prsr
