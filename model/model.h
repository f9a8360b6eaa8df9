// The model of docs/design.md 1 on the engine: conditioning ResNet A(x), gated PixelCNN prior B(y),
// and the loss CE(A + B) + CE(A). Templated on the element type so that causality and the
// whole-model gradient check run in double on the reference backend.
#pragma once
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "engine/mask.h"
#include "engine/ops.h"
#include "engine/params.h"
#include "model/config.h"

namespace prsr {

// A host copy of a ParamSet's values (one download), to read single tensors from.
template <class T>
struct HostValues {
  const ParamSet<T>* set;
  std::vector<T> v;
  explicit HostValues(const ParamSet<T>& s) : set(&s), v(s.download()) {}
  const T* at(const Tensor<T>* t) const { return v.data() + (t->data - set->data()); }
};

// A convolution with its weights, optional bias, optional colour mask and padding. The one
// definition of the layer's shape, mask and padding: the graph path (operator()) and the cached
// sampler (model/sampler.cpp) both read them from here.
template <class T>
struct ConvLayer {
  std::string name;           // "prior.layer0.v": its tensors are name + ".w", ".b", ".mask"
  Tensor<T>* w = nullptr;     // [co, ci, kh, kw]
  Tensor<T>* b = nullptr;     // [co] or null
  Tensor<T>* mask = nullptr;  // same shape as w, or null (unmasked)
  MaskSpec mask_spec;         // how `mask` is derived from the config (kind None: unmasked)
  int pad_t = 0, pad_b = 0, pad_l = 0, pad_r = 0;
  bool transposed = false;  // 3x3 stride-2 transposed conv (pad 1, output padding 1)

  int co() const { return w->shape.n; }
  int ci() const { return w->shape.c; }
  int kh() const { return w->shape.h; }
  int kw() const { return w->shape.w; }

  // The weights the layer applies, w * mask (w without a mask): [co][ci][kh][kw] from host
  // copies of the model's params and masks. The same float products as the graph's mul.
  std::vector<T> applied_weights(const HostValues<T>& params, const HostValues<T>& masks) const {
    const T* src = params.at(w);
    std::vector<T> out(src, src + w->numel());
    if (mask) {
      const T* m = masks.at(mask);
      for (size_t i = 0; i < out.size(); ++i) out[i] *= m[i];
    }
    return out;
  }
  // The bias, [co]; zeros when the layer has none.
  std::vector<T> bias_values(const HostValues<T>& params) const {
    if (!b) return std::vector<T>(size_t(co()), T(0));
    const T* src = params.at(b);
    return std::vector<T>(src, src + co());
  }

  Tensor<T>* operator()(Graph<T>& g, Tensor<T>* x) const {
    Tensor<T>* wm = mask ? mul(g, w, mask) : w;
    if (transposed) return deconv2d(g, x, wm, b, 2, 1, 1);
    // A 1x1 colour mask whose groups are contiguous channel ranges (period = channel count: the
    // prior head, res) is block-triangular: the backend may skip its zero blocks.
    const bool blocks = mask && w->shape.h == 1 && w->shape.w == 1 && mask_spec.colors > 1 &&
                        mask_spec.period_in == w->shape.c && mask_spec.period_out == w->shape.n;
    return conv2d(g, x, wm, b, pad_t, pad_b, pad_l, pad_r, blocks ? mask_spec.colors : 0,
                  mask_spec.kind == MaskKind::A);
  }
};

template <class T>
struct BatchNormLayer {
  Tensor<T>* gamma = nullptr;
  Tensor<T>* beta = nullptr;
  Tensor<T>* running_mean = nullptr;
  Tensor<T>* running_var = nullptr;
  Tensor<T>* operator()(Graph<T>& g, Tensor<T>* x, bool training) const {
    return batch_norm(g, x, gamma, beta, running_mean, running_var, training, T(0.1), T(1e-5));
  }
};

template <class T>
struct ResBlock {
  ConvLayer<T> conv1, conv2;
  BatchNormLayer<T> bn1, bn2;  // unused (null) when batch norm is off
};

template <class T>
struct GatedLayer {
  ConvLayer<T> v;     // (k/2+1) x k, c -> 2c
  ConvLayer<T> h;     // 1 x (k/2+1), mask B, c -> 2c
  ConvLayer<T> link;  // 1x1, 2c -> 2c, unmasked (sees rows above only, via the down-shift)
  ConvLayer<T> res;   // 1x1, mask B, c -> c
};

template <class T>
class Model {
 public:
  Model(const ModelConfig& cfg, Device dev) : cfg_(cfg), params(dev), masks(dev) {
    cfg.validate();
    build();
  }
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return cfg_; }
  Device device() const { return params.device(); }

  // He-normal weights (std sqrt(2 / fan_in)), zero biases, unit batch-norm scales; masked
  // weights are zero. The same seed gives the same model on every backend.
  void init(uint64_t seed);

  // A(x): x [n, C, s/4, s/4] in [-1, 1] -> logits [n, C*256, s, s] ("pixel") or the regression
  // [n, C, s, s] ("l2").
  Tensor<T>* conditioning(Graph<T>& g, Tensor<T>* x, bool training) const;
  // B(y): y [n, C, s, s] in [-1, 1] -> logits [n, C*256, s, s]; B_i depends on y_<i only.
  Tensor<T>* prior(Graph<T>& g, Tensor<T>* y) const;

  struct Loss {
    Tensor<T>* total = nullptr;  // what is minimised
    Tensor<T>* ce_ab = nullptr;  // CE(A + B) in nats per sub-pixel ("pixel" loss)
    Tensor<T>* ce_a = nullptr;   // CE(A)
    Tensor<T>* a = nullptr;      // the conditioning logits (or the l2 regression)
    Tensor<T>* b = nullptr;      // the prior logits
  };
  // y is the normalised high-res image (the prior's input), target the same image as bytes.
  Loss loss(Graph<T>& g, Tensor<T>* x, Tensor<T>* y, const ByteTensor& target, bool training) const;

  size_t parameter_count() const { return params.trainable_count(); }
  double forward_flops_per_image() const;  // 2 * multiply-adds of every conv

  ModelConfig cfg_;    // (declared first: the constructor initialises it before the params)
  ParamSet<T> params;  // trainable weights, then batch-norm running statistics
  ParamSet<T> masks;   // colour masks: derived from the config, never saved

  // The layers, for the cached sampler and the tests.
  ConvLayer<T> stem, up[2], cond_out;
  std::vector<ResBlock<T>> blocks[3];  // at s/4, s/2, s
  ConvLayer<T> first_v, first_h;
  std::vector<GatedLayer<T>> gated;
  ConvLayer<T> head1, head2;

 private:
  void build();
  // A colour mask (mk != None) sits on the tap that sees the current pixel, (pt, pl); the
  // periods give the channel-to-colour grouping of the input and the output (docs/design.md 1.2).
  ConvLayer<T> make_conv(const std::string& name, int co, int ci, int kh, int kw, bool bias, int pt, int pb, int pl,
                         int pr, MaskKind mk = MaskKind::None, int period_in = 1, int period_out = 1);
  BatchNormLayer<T> make_bn(const std::string& name, int c);
  std::vector<ConvLayer<T>*> all_convs();
};

// ----------------------------------------------------------------------------- implementation

template <class T>
ConvLayer<T> Model<T>::make_conv(const std::string& name, int co, int ci, int kh, int kw, bool bias, int pt, int pb,
                                 int pl, int pr, MaskKind mk, int period_in, int period_out) {
  ConvLayer<T> c;
  c.name = name;
  c.w = params.declare(name + ".w", {co, ci, kh, kw});
  c.b = bias ? params.declare(name + ".b", {co, 1, 1, 1}) : nullptr;
  if (mk != MaskKind::None) {
    c.mask = masks.declare(name + ".mask", {co, ci, kh, kw}, false);
    c.mask_spec = MaskSpec{mk, cfg_.colors, period_in, period_out, pt, pl};
  }
  c.pad_t = pt;
  c.pad_b = pb;
  c.pad_l = pl;
  c.pad_r = pr;
  return c;
}

template <class T>
BatchNormLayer<T> Model<T>::make_bn(const std::string& name, int c) {
  BatchNormLayer<T> bn;
  bn.gamma = params.declare(name + ".gamma", {c, 1, 1, 1});
  bn.beta = params.declare(name + ".beta", {c, 1, 1, 1});
  bn.running_mean = params.declare(name + ".running_mean", {c, 1, 1, 1}, false);
  bn.running_var = params.declare(name + ".running_var", {c, 1, 1, 1}, false);
  return bn;
}

template <class T>
void Model<T>::build() {
  const int C = cfg_.colors, c = cfg_.cond_channels;
  const bool bn = cfg_.batch_norm;
  // ---- conditioning network (docs/design.md 1.1)
  stem = make_conv("cond.stem", c, C, 3, 3, true, 1, 1, 1, 1);
  const char* stage_names[3] = {"cond.low", "cond.mid", "cond.high"};
  for (int s = 0; s < 3; ++s) {
    if (s > 0) {
      up[s - 1] = make_conv("cond.up" + std::to_string(s), c, c, 3, 3, true, 0, 0, 0, 0);
      up[s - 1].transposed = true;
    }
    for (int i = 0; i < cfg_.cond_blocks; ++i) {
      const std::string p = std::string(stage_names[s]) + "." + std::to_string(i);
      ResBlock<T> rb;
      rb.conv1 = make_conv(p + ".conv1", c, c, 3, 3, !bn, 1, 1, 1, 1);
      if (bn) rb.bn1 = make_bn(p + ".bn1", c);
      rb.conv2 = make_conv(p + ".conv2", c, c, 3, 3, !bn, 1, 1, 1, 1);
      if (bn) rb.bn2 = make_bn(p + ".bn2", c);
      blocks[s].push_back(rb);
    }
  }
  cond_out = make_conv("cond.out", cfg_.has_prior() ? C * kLevels : C, c, 1, 1, true, 0, 0, 0, 0);
  // ---- prior network (docs/design.md 1.2)
  if (cfg_.has_prior()) {
    const int p = cfg_.prior_channels, k0 = cfg_.first_kernel, k = cfg_.kernel;
    // Vertical: (k/2+1) x k, padded k/2 top/left/right: row i sees rows i-k/2..i.
    first_v = make_conv("prior.first_v", p, C, k0 / 2 + 1, k0, true, k0 / 2, 0, k0 / 2, k0 / 2);
    // Horizontal: 1 x (k/2+1), padded k/2 left; the last tap is the current pixel (mask A).
    first_h = make_conv("prior.first_h", p, C, 1, k0 / 2 + 1, true, 0, 0, k0 / 2, 0, MaskKind::A, C, p);
    gated.resize(cfg_.prior_layers);
    for (int l = 0; l < cfg_.prior_layers; ++l) {
      const std::string n = "prior.layer" + std::to_string(l);
      GatedLayer<T>& G = gated[l];
      G.v = make_conv(n + ".v", 2 * p, p, k / 2 + 1, k, true, k / 2, 0, k / 2, k / 2);
      // 2p outputs with period p: each tanh/sigmoid pair of the gate stays in one colour.
      G.h = make_conv(n + ".h", 2 * p, p, 1, k / 2 + 1, true, 0, 0, k / 2, 0, MaskKind::B, p, p);
      G.link = make_conv(n + ".link", 2 * p, 2 * p, 1, 1, true, 0, 0, 0, 0);
      G.res = make_conv(n + ".res", p, p, 1, 1, true, 0, 0, 0, 0, MaskKind::B, p, p);
    }
    head1 = make_conv("prior.head1", cfg_.head, p, 1, 1, true, 0, 0, 0, 0, MaskKind::B, p, cfg_.head);
    head2 =
        make_conv("prior.head2", C * kLevels, cfg_.head, 1, 1, true, 0, 0, 0, 0, MaskKind::B, cfg_.head, C * kLevels);
  }
  params.allocate();
  masks.allocate();
  // Masks are fixed by the config.
  std::vector<T> m = masks.download();
  for (ConvLayer<T>* layer : all_convs()) {
    if (!layer->mask) continue;
    const Shape& s = layer->w->shape;
    const std::vector<T> v = colour_mask<T>(s.n, s.c, s.h, s.w, layer->mask_spec);
    std::copy(v.begin(), v.end(), m.begin() + (layer->mask->data - masks.data()));
  }
  masks.upload(m);
}

template <class T>
std::vector<ConvLayer<T>*> Model<T>::all_convs() {
  std::vector<ConvLayer<T>*> v{&stem};
  for (int s = 0; s < 3; ++s) {
    if (s > 0) v.push_back(&up[s - 1]);
    for (auto& b : blocks[s]) {
      v.push_back(&b.conv1);
      v.push_back(&b.conv2);
    }
  }
  v.push_back(&cond_out);
  if (cfg_.has_prior()) {
    v.push_back(&first_v);
    v.push_back(&first_h);
    for (auto& G : gated) {
      v.push_back(&G.v);
      v.push_back(&G.h);
      v.push_back(&G.link);
      v.push_back(&G.res);
    }
    v.push_back(&head1);
    v.push_back(&head2);
  }
  return v;
}

template <class T>
void Model<T>::init(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<T> h = params.download();
  std::vector<T> m = masks.download();
  auto at = [&](Tensor<T>* t) { return h.begin() + (t->data - params.data()); };
  std::fill(h.begin(), h.end(), T(0));
  for (ConvLayer<T>* c : all_convs()) {
    const Shape& s = c->w->shape;
    const double fan_in = double(s.c) * s.h * s.w;
    std::normal_distribution<double> normal(0.0, std::sqrt(2.0 / fan_in));
    auto w = at(c->w);
    for (size_t i = 0; i < s.numel(); ++i) {
      const double v = normal(rng);
      w[i] = c->mask ? T(v) * m[(c->mask->data - masks.data()) + i] : T(v);
    }
  }
  for (auto& e : params.entries()) {
    const std::string& n = e.name;
    auto ends = [&](const char* suf) {
      const std::string s(suf);
      return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0;
    };
    if (ends(".gamma") || ends(".running_var"))
      std::fill(at(e.tensor.get()), at(e.tensor.get()) + e.tensor->numel(), T(1));
  }
  params.upload(h);
}

template <class T>
Tensor<T>* Model<T>::conditioning(Graph<T>& g, Tensor<T>* x, bool training) const {
  PRSR_CHECK(x->shape.c == cfg_.colors && x->shape.h == cfg_.low() && x->shape.w == cfg_.low(),
             "model: low-res input " + x->shape.str() + " does not match the model (C=" + std::to_string(cfg_.colors) +
                 ", " + std::to_string(cfg_.low()) + "x" + std::to_string(cfg_.low()) + ")");
  Tensor<T>* h = stem(g, x);
  for (int s = 0; s < 3; ++s) {
    if (s > 0) h = relu(g, up[s - 1](g, h));
    for (const ResBlock<T>& b : blocks[s]) {
      // r = relu(bn(conv(h))); h = relu(h + bn(conv(r)))
      Tensor<T>* r = b.conv1(g, h);
      if (cfg_.batch_norm) r = b.bn1(g, r, training);
      r = relu(g, r);
      Tensor<T>* r2 = b.conv2(g, r);
      if (cfg_.batch_norm) r2 = b.bn2(g, r2, training);
      h = relu(g, add(g, h, r2));
    }
  }
  return cond_out(g, h);
}

template <class T>
Tensor<T>* Model<T>::prior(Graph<T>& g, Tensor<T>* y) const {
  PRSR_CHECK(cfg_.has_prior(), "model: this model (loss l2) has no prior network");
  PRSR_CHECK(y->shape.c == cfg_.colors && y->shape.h == cfg_.size && y->shape.w == cfg_.size,
             "model: high-res input " + y->shape.str() + " does not match the model");
  Tensor<T>* v = first_v(g, y);
  Tensor<T>* h = first_h(g, y);
  for (const GatedLayer<T>& G : gated) {
    Tensor<T>* v_pre = G.v(g, v);                                           // c -> 2c
    Tensor<T>* h_pre = add(g, G.h(g, h), G.link(g, down_shift(g, v_pre)));  // rows < i only
    v = gate(g, v_pre);
    h = add(g, h, G.res(g, gate(g, h_pre)));
  }
  return head2(g, relu(g, head1(g, relu(g, h))));
}

template <class T>
typename Model<T>::Loss Model<T>::loss(Graph<T>& g, Tensor<T>* x, Tensor<T>* y, const ByteTensor& target,
                                       bool training) const {
  Loss L;
  L.a = conditioning(g, x, training);
  if (!cfg_.has_prior()) {
    L.total = mse(g, L.a, y);
    return L;
  }
  L.b = prior(g, y);
  L.ce_ab = softmax_ce(g, L.a, L.b, target);
  L.ce_a = softmax_ce(g, L.a, nullptr, target);
  L.total = add(g, L.ce_ab, L.ce_a);
  return L;
}

template <class T>
double Model<T>::forward_flops_per_image() const {
  const int lo = cfg_.low(), s = cfg_.size;
  auto conv = [](const ConvLayer<T>& c, int hw) {
    const Shape& w = c.w->shape;
    return 2.0 * w.n * w.c * w.h * w.w * hw;  // every output position (== input for deconv)
  };
  double f = conv(stem, lo * lo);
  const int side[3] = {lo, lo * 2, lo * 4};
  for (int st = 0; st < 3; ++st) {
    if (st > 0) f += conv(up[st - 1], side[st - 1] * side[st - 1]);
    for (const auto& b : blocks[st]) f += conv(b.conv1, side[st] * side[st]) + conv(b.conv2, side[st] * side[st]);
  }
  f += conv(cond_out, s * s);
  if (cfg_.has_prior()) {
    f += conv(first_v, s * s) + conv(first_h, s * s);
    for (const auto& G : gated) f += conv(G.v, s * s) + conv(G.h, s * s) + conv(G.link, s * s) + conv(G.res, s * s);
    f += conv(head1, s * s) + conv(head2, s * s);
  }
  return f;
}

}  // namespace prsr
