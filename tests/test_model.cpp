// The model: causality of the prior (the property that makes or breaks it), a whole-model
// gradient check in double, CPU-vs-reference parity, and overfitting a few images.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "engine/optim.h"
#include "model/batch.h"
#include "model/model.h"
#include "model/trainer.h"

using namespace prsr;

namespace {

ModelConfig tiny_config(int colors, int kernel) {
  ModelConfig c;
  c.colors = colors;
  c.size = 8;
  c.cond_channels = 4;
  c.cond_blocks = 1;
  c.prior_channels = colors == 3 ? 12 : 4;
  c.prior_layers = 2;
  c.kernel = kernel;
  c.first_kernel = 7;
  c.head = 12;
  return c;
}

template <class T>
std::vector<T> random_values(size_t n, std::mt19937& rng, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = T(u(rng));
  return v;
}

// Perturb every parameter (biases included) so that no weight is special.
template <class T>
void randomise(Model<T>& m, std::mt19937& rng, double scale) {
  std::vector<T> h = m.params.download();
  std::vector<T> mk = m.masks.download();
  std::uniform_real_distribution<double> u(-scale, scale);
  for (auto& e : m.params.entries()) {
    const bool running = e.name.find("running") != std::string::npos;
    for (size_t i = 0; i < e.tensor->numel(); ++i)
      h[e.offset + i] =
          running ? T(e.name.find("var") != std::string::npos ? 1.0 + 0.5 * std::fabs(u(rng)) : u(rng)) : T(u(rng));
  }
  // Keep masked weights at zero, as training does.
  for (auto& e : m.masks.entries()) {
    const std::string wname = e.name.substr(0, e.name.size() - 5) + ".w";
    Tensor<T>* w = m.params.find(wname);
    REQUIRE(w);
    const size_t off = w->data - m.params.data();
    for (size_t i = 0; i < w->numel(); ++i) h[off + i] *= mk[e.offset + i];
  }
  m.params.upload(h);
}

template <class T>
void keep_relus_alive(Model<T>& m) {
  std::vector<T> h = m.params.download();
  for (Tensor<T>* b : {m.first_h.b, m.head1.b})
    for (size_t i = 0; i < b->numel(); ++i) h[(b->data - m.params.data()) + i] = T(b == m.head1.b ? 6.0 : 3.0);
  m.params.upload(h);
}

}  // namespace

// For every logit (pixel p, colour c) of B: d logit / d y[q, c'] == 0 exactly for every sub-pixel
// (q, c') at or after (p, c) in raster/R<G<B order; != 0 for nearby earlier ones, including the
// pixel above-right (no blind spot) and the earlier colours of the same pixel.
TEST_CASE("model: the prior is causal (exact zeros after, non-zeros before), C = 1 and 3, k = 3 and 5") {
  for (int colors : {1, 3})
    for (int kernel : {3, 5}) {
      ModelConfig cfg = tiny_config(colors, kernel);
      Model<double> m(cfg, Device::Ref);
      m.init(11);
      std::mt19937 rng(42 + colors * 10 + kernel);
      randomise(m, rng, 0.5);
      // Keep the relus before and inside the head active, so that "non-zero for earlier
      // sub-pixels" tests the wiring, not whether a tiny random net happens to have a dead unit.
      keep_relus_alive(m);
      const int S = cfg.size, C = colors;
      std::vector<double> y = random_values<double>(size_t(C) * S * S, rng);
      long zero_violations = 0, missing_deps = 0, positions = 0;
      for (int i = 0; i < S; ++i)
        for (int j = 0; j < S; ++j)
          for (int c = 0; c < C; ++c) {
            Graph<double> g(Device::Ref);
            Tensor<double>* yt = g.tensor({1, C, S, S}, true, "y");
            std::copy(y.begin(), y.end(), yt->data);
            Tensor<double>* b = m.prior(g, yt);
            // Random weights over the 256 levels of logit (i, j, c) only.
            std::vector<double> w(b->numel(), 0.0);
            for (int l = 0; l < kLevels; ++l)
              w[(size_t(c * kLevels + l) * S + i) * S + j] = std::uniform_real_distribution<double>(0.5, 1.5)(rng);
            Tensor<double> wt{b->shape, Device::Ref, w.data()};
            g.backward(mean(g, mul(g, b, &wt)));
            const double* gy = yt->grad;
            REQUIRE(gy);
            auto grad_at = [&](int qi, int qj, int qc) { return gy[(size_t(qc) * S + qi) * S + qj]; };
            for (int qi = 0; qi < S; ++qi)
              for (int qj = 0; qj < S; ++qj)
                for (int qc = 0; qc < C; ++qc) {
                  const bool after = qi > i || (qi == i && (qj > j || (qj == j && qc >= c)));
                  if (after && grad_at(qi, qj, qc) != 0.0) ++zero_violations;
                }
            // Nearby earlier sub-pixels must matter.
            auto expect_dep = [&](int qi, int qj, int qc) {
              if (qi < 0 || qj < 0 || qj >= S) return;
              if (grad_at(qi, qj, qc) == 0.0) ++missing_deps;
            };
            for (int qc = 0; qc < c; ++qc) expect_dep(i, j, qc);  // earlier colours, same pixel
            for (int qc = 0; qc < C; ++qc) {
              expect_dep(i, j - 1, qc);      // left
              expect_dep(i - 1, j, qc);      // above
              expect_dep(i - 1, j + 1, qc);  // above-right: no blind spot
              expect_dep(i - 1, j - 1, qc);  // above-left
            }
            ++positions;
          }
      INFO("C=" << colors << " k=" << kernel);
      CHECK(positions == S * S * C);
      CHECK(zero_violations == 0);
      CHECK(missing_deps == 0);
    }
}

// Causality must fail for a broken mask: with mask B on the first layer (instead of A), the
// logit of (p, c) sees y[p, c] itself; the same check has to notice it.
TEST_CASE("model: the causality check detects a leaking first-layer mask") {
  ModelConfig cfg = tiny_config(3, 3);
  Model<double> m(cfg, Device::Ref);
  m.init(3);
  std::mt19937 rng(8);
  randomise(m, rng, 0.5);
  // Turn first_h's mask A into mask B by hand, and give those weights values.
  std::vector<double> mk = m.masks.download(), h = m.params.download();
  const Shape s = m.first_h.w->shape;
  std::vector<double> maskB =
      colour_mask<double>(s.n, s.c, s.h, s.w, MaskSpec{MaskKind::B, 3, 3, cfg.prior_channels, 0, cfg.first_kernel / 2});
  std::copy(maskB.begin(), maskB.end(), mk.begin() + (m.first_h.mask->data - m.masks.data()));
  for (size_t i = 0; i < s.numel(); ++i) h[(m.first_h.w->data - m.params.data()) + i] = 0.3 + 0.01 * double(i % 7);
  m.masks.upload(mk);
  m.params.upload(h);
  const int S = cfg.size;
  std::vector<double> y = random_values<double>(size_t(3) * S * S, rng);
  Graph<double> g(Device::Ref);
  Tensor<double>* yt = g.tensor({1, 3, S, S}, true, "y");
  std::copy(y.begin(), y.end(), yt->data);
  Tensor<double>* b = m.prior(g, yt);
  const int i = 3, j = 4, c = 1;
  std::vector<double> w(b->numel(), 0.0);
  for (int l = 0; l < kLevels; ++l) w[(size_t(c * kLevels + l) * S + i) * S + j] = 1.0 + 0.001 * l;
  Tensor<double> wt{b->shape, Device::Ref, w.data()};
  g.backward(mean(g, mul(g, b, &wt)));
  CHECK(yt->grad[(size_t(c) * S + i) * S + j] != 0.0);  // the leak is visible
}

// Whole model (conditioning + prior + both CE terms + batch norm) against central differences,
// on a sample of parameters from every tensor.
TEST_CASE("model: whole-model gradient check in double (tiny config, every path)") {
  for (int colors : {1, 3}) {
    ModelConfig cfg = tiny_config(colors, 3);
    cfg.cond_channels = 3;
    cfg.head = 8;
    Model<double> m(cfg, Device::Ref);
    m.init(5);
    std::mt19937 rng(77 + colors);
    randomise(m, rng, 0.4);
    const int N = 2, S = cfg.size, L = cfg.low(), C = colors;
    std::vector<uint8_t> hr(size_t(N) * C * S * S);
    for (auto& v : hr) v = uint8_t(rng() % 256);
    std::vector<double> xs, ys;
    std::vector<uint8_t> tg;
    make_batch_vec<double>(hr.data(), N, C, S, xs, ys, tg);
    auto run = [&](bool with_grad) {
      Graph<double> g(Device::Ref);
      g.grad_enabled = with_grad;
      Tensor<double> xt{{N, C, L, L}, Device::Ref, xs.data()};
      Tensor<double> yt{{N, C, S, S}, Device::Ref, ys.data()};
      ByteTensor tt{{N, C, S, S}, Device::Ref, tg.data()};
      auto loss = m.loss(g, &xt, &yt, tt, true);
      const double v = loss.total->data[0];
      if (with_grad) g.backward(loss.total);
      return v;
    };
    m.params.zero_grad();
    run(true);
    std::vector<double> ana = m.params.download_grad();
    long checked = 0, failed = 0;
    double worst = 0;
    std::string worst_name;
    for (auto& e : m.params.entries()) {
      if (!e.trainable) continue;
      const size_t n = e.tensor->numel();
      const size_t step = std::max<size_t>(1, n / 6);  // ~6 values per tensor, all tensors
      for (size_t k = rng() % step; k < n; k += step) {
        double* p = m.params.data() + e.offset + k;
        // Masked weights have zero gradient by construction; check a few anyway.
        const double keep = *p, hstep = 1e-6;
        *p = keep + hstep;
        const double fp = run(false);
        *p = keep - hstep;
        const double fm = run(false);
        *p = keep;
        const double num = (fp - fm) / (2 * hstep), a = ana[e.offset + k];
        const double err = std::fabs(num - a);
        ++checked;
        if (err > 1e-7 + 1e-4 * std::fabs(num)) {
          ++failed;
          if (err > worst) {
            worst = err;
            worst_name = e.name + "[" + std::to_string(k) + "] analytic " + std::to_string(a) + " numeric " +
                         std::to_string(num);
          }
        }
      }
    }
    INFO("C=" << colors << " worst: " << worst_name);
    std::printf("  whole-model gradcheck C=%d: %ld parameters checked, %ld failed\n", colors, checked, failed);
    CHECK(checked > 100);
    CHECK(failed == 0);
  }
}

namespace {

// Four 8x8 grey images with the same 2x2 low-res input (every 4x4 block averages to 128):
// image k is 128 + s_k * checkerboard, s in {-24, -8, 8, 24}. Without a prior no model can do
// better than 2 bits per sub-pixel (4 equally likely values everywhere, the same x); with the
// prior, every pixel after the first is fixed by its neighbours.
std::vector<uint8_t> checker_images() {
  const int S = 8, s[4] = {-24, -8, 8, 24};
  std::vector<uint8_t> img(4 * S * S);
  for (int k = 0; k < 4; ++k)
    for (int i = 0; i < S; ++i)
      for (int j = 0; j < S; ++j) img[(k * S + i) * S + j] = uint8_t(128 + s[k] * (((i + j) & 1) ? 1 : -1));
  return img;
}

ModelConfig overfit_config() {
  ModelConfig c;
  c.colors = 1;
  c.size = 8;
  c.cond_channels = 8;
  c.cond_blocks = 1;
  c.prior_channels = 16;
  c.prior_layers = 2;
  c.kernel = 3;
  c.first_kernel = 3;
  c.head = 64;
  return c;
}

}  // namespace

TEST_CASE("model: overfitting 4 images drives the NLL below 0.5 bits/dim; without the prior it cannot") {
  const std::vector<uint8_t> img = checker_images();
  std::vector<const uint8_t*> ptrs;
  for (int k = 0; k < 4; ++k) ptrs.push_back(img.data() + k * 64);
  OptimConfig oc;
  oc.kind = "adam";
  oc.lr = 3e-3f;
  const int steps = 300;

  Model<float> m(overfit_config(), Device::Cpu);
  m.init(1);
  Trainer<float> t(m, oc, 4);
  StepResult r;
  for (int s = 0; s < steps; ++s) r = t.step(ptrs.data(), s);
  StepResult e = t.evaluate(ptrs.data(), 4);
  std::printf("  overfit with prior: train NLL %.3f bits/dim, eval NLL %.3f, CE(A) alone %.3f bits/dim\n", r.nll_bits,
              e.nll_bits, e.ce_a_bits);
  CHECK(e.nll_bits < 0.5);
  // The conditioning network alone (what the model is with its prior removed) stays near the
  // 2-bit floor: its CE(A) term was trained by the very same run.
  CHECK(e.ce_a_bits > 1.9);
}

// The CPU backend (oneDNN + OpenMP, float32) and the reference agree on the full model: logits
// A and B, the loss, every parameter gradient and the running statistics. The reference runs in
// double: in float its long sequential sums (e.g. 768 softmax gradients that cancel to ~0 in
// the conditioning output's backward) carry errors of 1e-3 relative, larger than the CPU
// backend's blocked sums; which is the better float32 answer is not what this test is about.
TEST_CASE("model: CPU backend == reference on the full model's logits, loss and gradients") {
  for (int colors : {1, 3}) {
    ModelConfig cfg;
    cfg.colors = colors;
    cfg.size = 16;
    cfg.cond_channels = 8;
    cfg.cond_blocks = 1;
    cfg.prior_channels = colors == 3 ? 12 : 8;
    cfg.prior_layers = 2;
    cfg.kernel = 5;
    cfg.first_kernel = 7;
    cfg.head = 300;  // >= 256: the head takes the GEMM path, with colour blocks for C = 3
    Model<float> mc(cfg, Device::Cpu);
    Model<double> md(cfg, Device::Ref);
    mc.init(8);
    md.init(8);
    {  // the same initial parameters (double draws rounded to float)
      const auto pf = mc.params.download();
      const auto pd = md.params.download();
      std::vector<double> pr(pd.size());
      for (size_t i = 0; i < pf.size(); ++i) pr[i] = double(pf[i]);
      md.params.upload(pr);
    }
    std::mt19937 rng(31 + colors);
    const int N = 3, S = cfg.size;
    std::vector<uint8_t> img(size_t(N) * S * S * colors);
    for (auto& v : img) v = uint8_t(rng() % 256);

    struct Out {
      std::vector<double> a, b, grad, params;
      double loss;
    };
    auto run = [&](auto& m, auto zero) {
      using T = decltype(zero);
      std::vector<T> xs, ys;
      std::vector<uint8_t> tg;
      make_batch_vec<T>(img.data(), N, colors, S, xs, ys, tg);
      Graph<T> g(m.device());
      Tensor<T> xt{{N, colors, cfg.low(), cfg.low()}, m.device(), xs.data()};
      Tensor<T> yt{{N, colors, S, S}, m.device(), ys.data()};
      m.params.zero_grad();
      auto L = m.loss(g, &xt, &yt, ByteTensor{{N, colors, S, S}, m.device(), tg.data()}, true);
      g.backward(L.total);
      Out o;
      o.a.assign(L.a->data, L.a->data + L.a->numel());
      o.b.assign(L.b->data, L.b->data + L.b->numel());
      for (auto v : m.params.download_grad()) o.grad.push_back(double(v));
      for (auto v : m.params.download()) o.params.push_back(double(v));
      o.loss = double(L.total->data[0]);
      return o;
    };
    const Out c = run(mc, 0.f), d = run(md, 0.0);
    auto compare = [&](const std::vector<double>& x, const std::vector<double>& y, double rtol, double atol,
                       const char* what) {
      REQUIRE(x.size() == y.size());
      double worst = 0;
      long bad = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        const double e = std::fabs(x[i] - y[i]);
        worst = std::max(worst, e);
        if (e > atol + rtol * std::fabs(y[i])) ++bad;
      }
      std::printf("  full model C=%d %-22s max abs diff %.2e over %zu values\n", colors, what, worst, x.size());
      INFO(std::string(what));
      CHECK(bad == 0);
    };
    compare(c.a, d.a, 1e-4, 1e-5, "A logits");
    compare(c.b, d.b, 1e-4, 1e-5, "B logits");
    compare(c.grad, d.grad, 1e-3, 2e-6, "parameter gradients");
    compare(c.params, d.params, 1e-5, 1e-6, "params + running stats");
    CHECK(c.loss == doctest::Approx(d.loss).epsilon(1e-5));
  }
}
