// Golden test (as llm.c's test_gpt2): the whole model against an independent PyTorch model.
// tools/make_golden.py draws the parameters of a tiny configuration in PyTorch, runs one
// training-mode forward and backward in float64 (tools/prsr_torch.py) and stores inputs,
// parameters, the A and B logits (8 of the 256 levels), both loss terms, every parameter
// gradient and the updated running statistics in tests/data/golden_<name>.bin (format and
// regeneration: docs/golden.md). Here prsr loads the parameters by name, runs the same batch on
// the reference backend (double), the CPU backend (float) and CUDA where present, and compares
// every tensor. The comparison must be able to fail: a broken colour mask, padding or
// down-shift is run against the same file and has to be caught.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/batch.h"
#include "model/model.h"

using namespace prsr;

namespace {

const char* const kGoldenFiles[] = {"c1_k3", "c3_k5", "c3_k3"};

struct GoldenTensor {
  std::vector<int> dims;
  std::vector<float> v;
};

struct Golden {
  std::string name;  // "c1_k3"
  ModelConfig cfg;
  std::map<std::string, GoldenTensor> t;
  const GoldenTensor& at(const std::string& key) const {
    auto it = t.find(key);
    REQUIRE_MESSAGE(it != t.end(), "golden_" << name << ": no tensor '" << key << "'");
    return it->second;
  }
};

// The file of tools/make_golden.py: "PRSRGLD1", u32 + header (the model config), u32 count, then
// per tensor u32 + name, u32 ndim, ndim x u32 dims, float32 values; all little-endian.
Golden read_golden(const std::string& name) {
  const std::string path = std::string(PRSR_SOURCE_DIR) + "/tests/data/golden_" + name + ".bin";
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "cannot open " << path << " (regenerate it: docs/golden.md)");
  const std::vector<unsigned char> buf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t pos = 0;
  auto need = [&](size_t n) {
    if (pos + n > buf.size()) FAIL(path << ": truncated at byte " << pos);
  };
  auto u32 = [&]() {
    need(4);
    const uint32_t v =
        uint32_t(buf[pos]) | uint32_t(buf[pos + 1]) << 8 | uint32_t(buf[pos + 2]) << 16 | uint32_t(buf[pos + 3]) << 24;
    pos += 4;
    return v;
  };
  auto str = [&]() {
    const uint32_t n = u32();
    need(n);
    std::string s(buf.begin() + long(pos), buf.begin() + long(pos + n));
    pos += n;
    return s;
  };
  need(8);
  REQUIRE_MESSAGE(std::memcmp(buf.data(), "PRSRGLD1", 8) == 0, path << ": not a golden file");
  pos = 8;
  Golden g;
  g.name = name;
  g.cfg = ModelConfig::from_string(str());
  const uint32_t count = u32();
  for (uint32_t k = 0; k < count; ++k) {
    const std::string key = str();
    GoldenTensor t;
    size_t n = 1;
    for (uint32_t d = 0, nd = u32(); d < nd; ++d) {
      t.dims.push_back(int(u32()));
      n *= size_t(t.dims.back());
    }
    t.v.resize(n);
    for (float& x : t.v) {
      const uint32_t bits = u32();
      std::memcpy(&x, &bits, 4);
    }
    g.t[key] = std::move(t);
  }
  REQUIRE_MESSAGE(pos == buf.size(), path << ": " << buf.size() - pos << " bytes after the last tensor");
  return g;
}

// A model of the file's config with the file's parameters ("param.<prsr name>"): every prsr
// tensor must be in the file with its shape, and every "param." tensor of the file must be used.
template <class T>
std::unique_ptr<Model<T>> golden_model(const Golden& gf, Device dev) {
  auto m = std::make_unique<Model<T>>(gf.cfg, dev);
  std::vector<T> h = m->params.download();
  size_t used = 0;
  for (auto& e : m->params.entries()) {
    const GoldenTensor& gt = gf.at("param." + e.name);
    const Shape& s = e.tensor->shape;
    REQUIRE_MESSAGE(gt.dims == std::vector<int>({s.n, s.c, s.h, s.w}), e.name << ": shape differs from " << s.str());
    std::copy(gt.v.begin(), gt.v.end(), h.begin() + long(e.offset));
    ++used;
  }
  const size_t in_file =
      size_t(std::count_if(gf.t.begin(), gf.t.end(), [](const auto& kv) { return kv.first.rfind("param.", 0) == 0; }));
  CHECK_MESSAGE(used == in_file, "the golden file has parameters the model does not declare");
  m->params.upload(h);
  return m;
}

// Deliberate breaks, each a bug the golden comparison must catch.
enum class Break {
  None,
  Mask,       // first_h's colour mask B instead of A: the logit of (p, c) sees y[p, c]
  PadV,       // layer 0's vertical conv padded (k/2 - 1) top, 1 bottom: it sees the next row
  PadH,       // first_h padded (k0/2 - 1) left, 1 right: it sees the pixel to the right
  DownShift,  // the vertical-to-horizontal link without its down-shift
};
const char* break_name(Break b) {
  switch (b) {
    case Break::None: return "none";
    case Break::Mask: return "first_h mask B instead of A";
    case Break::PadV: return "layer0.v padding shifted down one row";
    case Break::PadH: return "first_h padding shifted right one pixel";
    case Break::DownShift: return "link without down_shift";
  }
  return "?";
}

// Model::prior written out again with the down-shift optional (the model has no switch for it).
// With shift = true it must give exactly Model::prior's results: checked below.
template <class T>
Tensor<T>* prior_mirror(const Model<T>& m, Graph<T>& g, Tensor<T>* y, bool shift) {
  Tensor<T>* v = m.first_v(g, y);
  Tensor<T>* h = m.first_h(g, y);
  for (const GatedLayer<T>& G : m.gated) {
    Tensor<T>* v_pre = G.v(g, v);
    Tensor<T>* h_pre = add(g, G.h(g, h), G.link(g, shift ? down_shift(g, v_pre) : v_pre));
    v = gate(g, v_pre);
    h = add(g, h, G.res(g, gate(g, h_pre)));
  }
  return m.head2(g, relu(g, m.head1(g, relu(g, h))));
}

using Tensors = std::map<std::string, std::vector<double>>;

template <class T>
std::vector<double> fetch(Device dev, const T* p, size_t n) {
  std::vector<T> h(n);
  device_download(dev, h.data(), p, n * sizeof(T));
  return std::vector<double>(h.begin(), h.end());
}

// One training-mode forward and backward of the file's batch; the tensors named as in the file.
template <class T>
Tensors run_golden(const Golden& gf, Device dev, Break brk = Break::None, bool mirror = false) {
  auto m = golden_model<T>(gf, dev);
  const ModelConfig& cfg = gf.cfg;
  const int C = cfg.colors, S = cfg.size;
  if (brk == Break::Mask) {
    std::vector<T> mk = m->masks.download();
    MaskSpec spec = m->first_h.mask_spec;
    spec.kind = MaskKind::B;
    const Shape& s = m->first_h.w->shape;
    const std::vector<T> b = colour_mask<T>(s.n, s.c, s.h, s.w, spec);
    std::copy(b.begin(), b.end(), mk.begin() + (m->first_h.mask->data - m->masks.data()));
    m->masks.upload(mk);
  }
  if (brk == Break::PadV) {
    m->gated.at(0).v.pad_t -= 1;
    m->gated.at(0).v.pad_b += 1;
  }
  if (brk == Break::PadH) {
    m->first_h.pad_l -= 1;
    m->first_h.pad_r += 1;
  }

  // input.images [n, C, S, S] (values 0..255) -> the HWC bytes make_batch takes.
  const GoldenTensor& im = gf.at("input.images");
  REQUIRE(im.dims == std::vector<int>({im.dims[0], C, S, S}));
  const int N = im.dims[0];
  std::vector<uint8_t> hwc(im.v.size());
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      for (int p = 0; p < S * S; ++p)
        hwc[(size_t(n) * S * S + p) * C + c] = uint8_t(im.v[(size_t(n) * C + c) * S * S + p]);
  std::vector<T> xs, ys;
  std::vector<uint8_t> tg;
  make_batch_vec<T>(hwc.data(), N, C, S, xs, ys, tg);

  Graph<T> g(dev);
  Tensor<T>* x = g.tensor({N, C, cfg.low(), cfg.low()}, false, "x");
  Tensor<T>* y = g.tensor({N, C, S, S}, false, "y");
  auto* t = static_cast<uint8_t*>(g.arena().alloc(tg.size()));
  device_upload(dev, x->data, xs.data(), xs.size() * sizeof(T));
  device_upload(dev, y->data, ys.data(), ys.size() * sizeof(T));
  device_upload(dev, t, tg.data(), tg.size());
  const ByteTensor target{{N, C, S, S}, dev, t};
  m->params.zero_grad();
  typename Model<T>::Loss L;
  if (mirror || brk == Break::DownShift) {  // Model::loss with the prior written out
    L.a = m->conditioning(g, x, true);
    L.b = prior_mirror(*m, g, y, brk != Break::DownShift);
    L.ce_ab = softmax_ce(g, L.a, L.b, target);
    L.ce_a = softmax_ce(g, L.a, nullptr, target);
    L.total = add(g, L.ce_ab, L.ce_a);
  } else {
    L = m->loss(g, x, y, target, true);
  }
  g.backward(L.total);

  Tensors out;
  out["input.x"].assign(xs.begin(), xs.end());
  // Logits [n, C*256, S, S] -> the kept levels [n, C*K, S, S], channel colour*K + k.
  const std::vector<float>& lv = gf.at("logits.levels").v;
  const int K = int(lv.size());
  for (const char* which : {"logits.a", "logits.b"}) {
    const Tensor<T>* z = which[7] == 'a' ? L.a : L.b;
    const std::vector<double> all = fetch(dev, z->data, z->numel());
    std::vector<double>& kept = out[which];
    for (int n = 0; n < N; ++n)
      for (int c = 0; c < C; ++c)
        for (int k = 0; k < K; ++k) {
          const size_t ch = size_t(n) * C * kLevels + size_t(c) * kLevels + size_t(lv[k]);
          kept.insert(kept.end(), all.begin() + long(ch * S * S), all.begin() + long((ch + 1) * S * S));
        }
  }
  out["loss.ce_ab"] = fetch(dev, L.ce_ab->data, 1);
  out["loss.ce_a"] = fetch(dev, L.ce_a->data, 1);
  const std::vector<T> grad = m->params.download_grad(), val = m->params.download();
  for (auto& e : m->params.entries()) {
    const std::vector<T>& src = e.trainable ? grad : val;
    out[(e.trainable ? "grad." : "after.") + e.name].assign(src.begin() + long(e.offset),
                                                            src.begin() + long(e.offset + e.tensor->numel()));
  }
  return out;
}

// Per-kind tolerances |got - want| <= atol + rtol * |want|. Measured (docs/golden.md): the
// reference in double is within float32 rounding of the stored values (~3e-8 relative) plus
// float64 noise; the float32 backends' largest differences are about 10x below their bounds.
struct Tol {
  double rtol, atol;
};
Tol tolerance(const std::string& key, bool dbl) {
  if (dbl) return {1e-6, 1e-9};
  if (key.rfind("grad.", 0) == 0) return {1e-3, 2e-6};
  if (key.rfind("logits.", 0) == 0) return {1e-4, 1e-5};
  return {1e-5, 1e-6};  // input.x, loss terms, running statistics
}

struct Verdict {
  int tensors = 0, failed = 0;
  double worst_ratio = 0;  // max over elements of |d| / (atol + rtol |want|): <= 1 passes
  std::string worst, first_failed;
  std::map<std::string, double> worst_of_kind;  // the same per kind: "grad", "logits", "loss", ...
};

// Compares every tensor of `got` with the file (and requires that every compared tensor of the
// file was produced). `print`: one line per tensor, max abs and max rel difference (rel over
// elements with |want| > atol, where it means something).
Verdict compare(const Golden& gf, const Tensors& got, bool dbl, bool print) {
  Verdict v;
  for (const auto& kv : got) REQUIRE_MESSAGE(gf.t.count(kv.first), "the golden file has no '" << kv.first << "'");
  for (const auto& [key, want] : gf.t) {
    if (key.rfind("param.", 0) == 0 || key == "input.images" || key == "logits.levels") continue;
    auto it = got.find(key);
    REQUIRE_MESSAGE(it != got.end(), "prsr produced no '" << key << "'");
    const std::vector<double>& x = it->second;
    REQUIRE_MESSAGE(x.size() == want.v.size(), key << ": " << x.size() << " values, the file has " << want.v.size());
    const Tol tol = tolerance(key, dbl);
    double max_abs = 0, max_rel = 0, ratio = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double w = want.v[i], d = std::fabs(x[i] - w);
      max_abs = std::max(max_abs, d);
      if (std::fabs(w) > tol.atol) max_rel = std::max(max_rel, d / std::fabs(w));
      ratio = std::max(ratio, d / (tol.atol + tol.rtol * std::fabs(w)));
    }
    const bool ok = ratio <= 1.0;
    ++v.tensors;
    if (!ok && v.failed++ == 0) v.first_failed = key;
    if (ratio > v.worst_ratio) {
      v.worst_ratio = ratio;
      v.worst = key;
    }
    double& kind = v.worst_of_kind[key.substr(0, key.find('.'))];
    kind = std::max(kind, ratio);
    if (print)
      std::printf("    %-34s %6zu  max abs %.2e  max rel %.2e  %s\n", key.c_str(), x.size(), max_abs, max_rel,
                  ok ? "ok" : "FAIL");
  }
  return v;
}

void verdict_line(const Golden& gf, const char* backend, const Verdict& v) {
  std::string kinds;
  for (const auto& [kind, r] : v.worst_of_kind) {
    char b[64];
    std::snprintf(b, sizeof b, " %s %.2g", kind.c_str(), r);
    kinds += b;
  }
  std::printf("golden_%s %-4s: %s: %d tensors, %d outside tolerance; worst %s at %.2f of its bound (per kind:%s)\n",
              gf.name.c_str(), backend, v.failed ? "FAIL" : "PASS", v.tensors, v.failed, v.worst.c_str(), v.worst_ratio,
              kinds.c_str());
}

}  // namespace

TEST_CASE("golden: the reference backend (double) matches PyTorch on every tensor, C = 1 and 3, k = 3 and 5") {
  for (const char* name : kGoldenFiles) {
    const Golden gf = read_golden(name);
    const std::string label = std::string("golden_") + name;
    INFO(label);
    const Verdict v = compare(gf, run_golden<double>(gf, Device::Ref), true, false);
    verdict_line(gf, "ref", v);
    CHECK_MESSAGE(v.failed == 0, "first failing tensor: " << v.first_failed);
  }
}

TEST_CASE("golden: the CPU backend matches PyTorch on every tensor (logits, losses, every gradient)") {
  for (const char* name : kGoldenFiles) {
    const Golden gf = read_golden(name);
    const std::string label = std::string("golden_") + name;
    INFO(label);
    std::printf("golden_%s on the CPU backend (%s):\n", name, gf.cfg.to_string().c_str());
    const Verdict v = compare(gf, run_golden<float>(gf, Device::Cpu), false, true);
    verdict_line(gf, "cpu", v);
    CHECK_MESSAGE(v.failed == 0, "first failing tensor: " << v.first_failed);
  }
}

TEST_CASE("golden: the CUDA backend matches PyTorch on every tensor (skipped without a device)") {
  if (!cuda::available()) {
    std::printf("golden: CUDA comparison skipped: %s\n", cuda::unavailable_reason());
    return;
  }
  for (const char* name : kGoldenFiles) {
    const Golden gf = read_golden(name);
    const std::string label = std::string("golden_") + name;
    INFO(label);
    std::printf("golden_%s on the CUDA backend:\n", name);
    const Verdict v = compare(gf, run_golden<float>(gf, Device::Cuda), false, true);
    verdict_line(gf, "cuda", v);
    CHECK_MESSAGE(v.failed == 0, "first failing tensor: " << v.first_failed);
  }
}

// The comparison can fail: each break, run against the same file on the reference (double
// tolerances) and on the CPU backend (float tolerances), must put tensors outside tolerance, by
// a wide margin. The down-shift break goes through prior_mirror, which without the break must
// reproduce Model::loss bit for bit (so the mirror is the model's own wiring).
TEST_CASE("golden: a broken mask, padding or down-shift fails the comparison") {
  for (const char* name : kGoldenFiles) {
    const Golden gf = read_golden(name);
    const std::string label = std::string("golden_") + name;
    INFO(label);
    const Tensors model = run_golden<double>(gf, Device::Ref);
    const Tensors mirror = run_golden<double>(gf, Device::Ref, Break::None, true);
    CHECK(mirror == model);
    for (Break b : {Break::Mask, Break::PadV, Break::PadH, Break::DownShift})
      for (Device dev : {Device::Ref, Device::Cpu}) {
        const bool dbl = dev == Device::Ref;
        const Verdict v = compare(gf, dbl ? run_golden<double>(gf, dev, b) : run_golden<float>(gf, dev, b), dbl, false);
        std::printf(
            "golden_%s %-3s broken (%s): %s: %d of %d tensors outside tolerance, worst %s at %.2g x its bound\n", name,
            device_name(dev), break_name(b), v.failed ? "FAIL, as required" : "PASS: NOT CAUGHT", v.failed, v.tensors,
            v.worst.c_str(), v.worst_ratio);
        INFO(break_name(b) << " on " << device_name(dev));
        CHECK(v.failed > 0);
        CHECK(v.worst_ratio > 100.0);  // caught by a wide margin, not by noise at the bound
      }
  }
}
