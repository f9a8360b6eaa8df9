// Gradient checking in double on the reference backend: central differences of a scalar
// f = mean(out * R) with R a fixed random tensor (a random-weighted reduction: a plain sum makes
// a softmax row's gradient identically zero and hides bugs there).
#pragma once
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/ops.h"

namespace prsr::test {

// A leaf input owned by the test: value and gradient buffers in host memory.
struct Leaf {
  std::vector<double> value, grad;
  Tensor<double> t;
  Leaf(Shape s, std::mt19937& rng, double lo = -1, double hi = 1, bool requires_grad = true) {
    std::uniform_real_distribution<double> u(lo, hi);
    value.resize(s.numel());
    for (auto& v : value) v = u(rng);
    grad.assign(s.numel(), 0.0);
    t.shape = s;
    t.dev = Device::Ref;
    t.data = value.data();
    t.grad = requires_grad ? grad.data() : nullptr;
    t.requires_grad = requires_grad;
    t.name = "leaf";
  }
};

using Builder = std::function<Tensor<double>*(Graph<double>&)>;

struct GradResult {
  double max_abs_err = 0, max_rel_err = 0;
  long checked = 0, failed = 0;
  std::string worst;
};

// f(leaves) = mean(out * R). Returns f; when `with_grad`, runs backward into the leaves' grads.
inline double eval_weighted(const Builder& build, std::vector<double>& weights, std::mt19937& rng, bool with_grad) {
  Graph<double> g(Device::Ref);
  g.grad_enabled = with_grad;
  Tensor<double>* out = build(g);
  if (weights.empty()) {
    std::uniform_real_distribution<double> u(0.5, 1.5);
    weights.resize(out->numel());
    for (auto& w : weights) w = (rng() & 1 ? 1 : -1) * u(rng);
  }
  Tensor<double> r;
  r.shape = out->shape;
  r.dev = Device::Ref;
  r.data = weights.data();
  r.name = "weights";
  Tensor<double>* f = mean(g, mul(g, out, &r));
  const double value = f->data[0];
  if (with_grad) g.backward(f);
  return value;
}

// Compares analytic gradients (already in each leaf's grad) with central differences.
inline GradResult compare_numeric(const Builder& build, std::vector<double>& weights, std::mt19937& rng,
                                  std::vector<Leaf*> leaves, double h, double atol, double rtol) {
  GradResult res;
  for (size_t li = 0; li < leaves.size(); ++li) {
    Leaf* l = leaves[li];
    if (!l->t.requires_grad) continue;
    for (size_t i = 0; i < l->value.size(); ++i) {
      const double keep = l->value[i];
      l->value[i] = keep + h;
      const double fp = eval_weighted(build, weights, rng, false);
      l->value[i] = keep - h;
      const double fm = eval_weighted(build, weights, rng, false);
      l->value[i] = keep;
      const double num = (fp - fm) / (2 * h), ana = l->grad[i];
      const double err = std::fabs(num - ana);
      ++res.checked;
      if (err > res.max_abs_err) res.max_abs_err = err;
      const double rel = err / std::max(1e-12, std::fabs(num));
      if (err > atol && rel > res.max_rel_err) res.max_rel_err = rel;
      if (err > atol + rtol * std::fabs(num)) {
        if (res.failed == 0)
          res.worst = "leaf " + std::to_string(li) + " [" + std::to_string(i) + "]: analytic " + std::to_string(ana) +
                      " numeric " + std::to_string(num);
        ++res.failed;
      }
    }
  }
  return res;
}

// The whole check: analytic by backward(), then numeric.
inline GradResult gradcheck(const Builder& build, std::vector<Leaf*> leaves, std::mt19937& rng, double h = 1e-5,
                            double atol = 1e-7, double rtol = 1e-5) {
  for (Leaf* l : leaves) std::fill(l->grad.begin(), l->grad.end(), 0.0);
  std::vector<double> weights;
  eval_weighted(build, weights, rng, true);
  return compare_numeric(build, weights, rng, leaves, h, atol, rtol);
}

}  // namespace prsr::test
