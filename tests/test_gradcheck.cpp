// One table-driven gradient check over every op of the engine: double precision on the
// reference backend, central differences, random-weighted reduction, per-op tolerances,
// relu kinks avoided by drawing inputs away from 0.
#include <doctest/doctest.h>

#include <memory>

#include "engine/mask.h"
#include "tests/gradcheck.h"

using namespace prsr;
using namespace prsr::test;

namespace {

struct Case {
  std::string name;
  std::vector<std::unique_ptr<Leaf>> leaves;
  std::vector<uint8_t> target;  // softmax cases
  ByteTensor target_t;
  Builder build;
  double atol = 1e-8, rtol = 1e-5, h = 1e-5;
  Leaf* add(Shape s, std::mt19937& rng, double lo = -1, double hi = 1, bool grad = true) {
    leaves.push_back(std::make_unique<Leaf>(s, rng, lo, hi, grad));
    return leaves.back().get();
  }
};

// Values in +-[0.2, 1]: relu never sits at its kink, and h = 1e-5 never crosses it.
void away_from_zero(Leaf* l) {
  for (auto& v : l->value) v = v >= 0 ? 0.2 + 0.8 * v : -0.2 + 0.8 * v;
}

std::vector<std::unique_ptr<Case>> make_cases(std::mt19937& rng) {
  std::vector<std::unique_ptr<Case>> cases;
  auto new_case = [&](const std::string& name) {
    cases.push_back(std::make_unique<Case>());
    cases.back()->name = name;
    return cases.back().get();
  };

  // conv2d: the model's kernel shapes, odd sizes, with/without bias, C = 1 and 3 inputs.
  struct ConvShape {
    int n, ci, h, w, co, kh, kw, pt, pb, pl, pr;
    bool bias;
  };
  const ConvShape convs[] = {
      {2, 3, 5, 4, 4, 3, 3, 1, 1, 1, 1, true},   // 3x3 pad 1
      {1, 1, 6, 5, 3, 4, 7, 3, 0, 3, 3, false},  // first vertical 4x7
      {2, 3, 5, 5, 2, 3, 5, 2, 0, 2, 2, true},   // vertical 3x5
      {1, 3, 3, 6, 4, 1, 4, 0, 0, 3, 0, false},  // first horizontal 1x4
      {2, 2, 4, 5, 3, 1, 3, 0, 0, 2, 0, true},   // horizontal 1x3
      {2, 5, 3, 3, 4, 1, 1, 0, 0, 0, 0, true},   // 1x1
  };
  for (const auto& s : convs) {
    Case* c = new_case("conv2d " + std::to_string(s.kh) + "x" + std::to_string(s.kw) + " ci=" + std::to_string(s.ci) +
                       (s.bias ? " bias" : ""));
    Leaf* x = c->add({s.n, s.ci, s.h, s.w}, rng);
    Leaf* w = c->add({s.co, s.ci, s.kh, s.kw}, rng);
    Leaf* b = s.bias ? c->add({s.co, 1, 1, 1}, rng) : nullptr;
    c->build = [=](Graph<double>& g) { return conv2d(g, &x->t, &w->t, b ? &b->t : nullptr, s.pt, s.pb, s.pl, s.pr); };
  }
  // Masked convs (mask A and B on the current-pixel tap), C = 3 and C = 1 groups.
  for (MaskKind kind : {MaskKind::A, MaskKind::B})
    for (int colors : {1, 3}) {
      Case* c = new_case(std::string("conv2d 1x3 mask ") + (kind == MaskKind::A ? "A" : "B") +
                         " C=" + std::to_string(colors));
      const int ci = 6, co = 6;
      Leaf* x = c->add({2, ci, 3, 4}, rng);
      Leaf* w = c->add({co, ci, 1, 3}, rng);
      MaskSpec ms{kind, colors, ci, co, 0, 2};
      auto mvals = std::make_shared<std::vector<double>>(colour_mask<double>(co, ci, 1, 3, ms));
      auto mt = std::make_shared<Tensor<double>>();
      mt->shape = w->t.shape;
      mt->data = mvals->data();
      c->build = [=](Graph<double>& g) {
        (void)mvals;
        return conv2d(g, &x->t, mul(g, &w->t, mt.get()), nullptr, 0, 0, 2, 0);
      };
    }
  // deconv2d: stride 2, pad 1, output padding 1.
  for (bool bias : {true, false}) {
    Case* c = new_case(std::string("deconv2d 3x3 s2") + (bias ? " bias" : ""));
    Leaf* x = c->add({2, 3, 3, 4}, rng);
    Leaf* w = c->add({2, 3, 3, 3}, rng);
    Leaf* b = bias ? c->add({2, 1, 1, 1}, rng) : nullptr;
    c->build = [=](Graph<double>& g) { return deconv2d(g, &x->t, &w->t, b ? &b->t : nullptr, 2, 1, 1); };
  }
  {
    Case* c = new_case("add");
    Leaf* a = c->add({2, 3, 3, 5}, rng);
    Leaf* b = c->add({2, 3, 3, 5}, rng);
    c->build = [=](Graph<double>& g) { return add(g, &a->t, &b->t); };
  }
  {
    Case* c = new_case("relu");
    Leaf* x = c->add({2, 3, 4, 5}, rng);
    away_from_zero(x);
    c->build = [=](Graph<double>& g) { return relu(g, &x->t); };
  }
  {
    Case* c = new_case("tanh");
    Leaf* x = c->add({2, 3, 4, 5}, rng, -2, 2);
    c->build = [=](Graph<double>& g) { return tanh_op(g, &x->t); };
  }
  {
    Case* c = new_case("sigmoid");
    Leaf* x = c->add({2, 3, 4, 5}, rng, -3, 3);
    c->build = [=](Graph<double>& g) { return sigmoid(g, &x->t); };
  }
  for (int ch : {1, 3}) {
    Case* c = new_case("gate c=" + std::to_string(ch));
    Leaf* z = c->add({2, 2 * ch, 3, 5}, rng, -2, 2);
    c->build = [=](Graph<double>& g) { return gate(g, &z->t); };
  }
  {
    Case* c = new_case("down_shift");
    Leaf* x = c->add({2, 3, 4, 3}, rng);
    c->build = [=](Graph<double>& g) { return down_shift(g, &x->t); };
  }
  for (bool training : {true, false}) {
    Case* c = new_case(std::string("batch_norm ") + (training ? "training" : "evaluation"));
    Leaf* x = c->add({3, 2, 3, 3}, rng, -2, 2);
    Leaf* gamma = c->add({1, 2, 1, 1}, rng, 0.5, 1.5);
    Leaf* beta = c->add({1, 2, 1, 1}, rng);
    Leaf* rm = c->add({1, 2, 1, 1}, rng, -0.5, 0.5, false);
    Leaf* rv = c->add({1, 2, 1, 1}, rng, 0.5, 2.0, false);
    c->build = [=](Graph<double>& g) { return batch_norm(g, &x->t, &gamma->t, &beta->t, &rm->t, &rv->t, training); };
    c->rtol = 1e-5;
  }
  for (int colors : {1, 3})
    for (bool with_b : {true, false}) {
      Case* c = new_case("softmax_ce C=" + std::to_string(colors) + (with_b ? " A+B" : " A"));
      const Shape s{colors == 1 ? 2 : 1, colors * kLevels, 1, 2};
      Leaf* a = c->add(s, rng, -3, 3);
      Leaf* b = with_b ? c->add(s, rng, -3, 3) : nullptr;
      c->target.resize(size_t(s.n) * colors * s.hw());
      for (auto& t : c->target) t = uint8_t(rng() % 256);
      c->target_t = ByteTensor{{s.n, colors, s.h, s.w}, Device::Ref, c->target.data()};
      ByteTensor tt = c->target_t;
      c->build = [=](Graph<double>& g) { return softmax_ce(g, &a->t, b ? &b->t : nullptr, tt); };
    }
  {
    Case* c = new_case("mse");
    Leaf* a = c->add({2, 3, 2, 3}, rng);
    Leaf* t = c->add({2, 3, 2, 3}, rng, -1, 1, false);
    c->build = [=](Graph<double>& g) { return mse(g, &a->t, &t->t); };
  }
  {
    Case* c = new_case("mean");
    Leaf* x = c->add({2, 3, 2, 3}, rng);
    c->build = [=](Graph<double>& g) { return mean(g, &x->t); };
  }
  return cases;
}

}  // namespace

TEST_CASE("gradcheck: every op, double, central differences, random-weighted reduction") {
  std::mt19937 rng(1234);
  auto cases = make_cases(rng);
  CHECK(cases.size() >= 25);
  for (auto& c : cases) {
    std::vector<Leaf*> leaves;
    for (auto& l : c->leaves) leaves.push_back(l.get());
    GradResult r = gradcheck(c->build, leaves, rng, c->h, c->atol, c->rtol);
    INFO(c->name << ": " << r.worst);
    std::printf("  gradcheck %-28s %5ld values  max abs err %.2e\n", c->name.c_str(), r.checked, r.max_abs_err);
    CHECK(r.checked > 0);
    CHECK(r.failed == 0);
  }
}

// The checker must be able to fail: feed it deliberately wrong analytic gradients and expect a
// failure. Two classic bugs: tanh' written as (1 - y) instead of (1 - y^2), and a softmax
// gradient missing its "- onehot" term (only visible with a random-weighted reduction of a
// vector output; here the CE is scalar so the bug shows directly).
TEST_CASE("gradcheck: the checker catches broken backwards") {
  std::mt19937 rng(99);
  Leaf x({2, 3, 2, 2}, rng, -2, 2);
  Builder build = [&](Graph<double>& g) { return tanh_op(g, &x.t); };
  std::vector<double> weights;
  eval_weighted(build, weights, rng, true);
  // Recompute a broken analytic gradient by hand: d/dx mean(R * tanh(x)) with tanh' = 1 - y.
  for (size_t i = 0; i < x.value.size(); ++i)
    x.grad[i] = weights[i] * (1 - std::tanh(x.value[i])) / double(x.value.size());
  GradResult broken = compare_numeric(build, weights, rng, {&x}, 1e-5, 1e-8, 1e-5);
  CHECK(broken.failed > 0);
  // And the real backward passes on the very same weights.
  std::fill(x.grad.begin(), x.grad.end(), 0.0);
  {
    Graph<double> g(Device::Ref);
    Tensor<double> r{{2, 3, 2, 2}, Device::Ref, weights.data()};
    g.backward(mean(g, mul(g, tanh_op(g, &x.t), &r)));
  }
  CHECK(compare_numeric(build, weights, rng, {&x}, 1e-5, 1e-8, 1e-5).failed == 0);

  // Softmax CE without the onehot term.
  Leaf a({1, kLevels, 1, 1}, rng, -2, 2);
  std::vector<uint8_t> tgt{17};
  ByteTensor tt{{1, 1, 1, 1}, Device::Ref, tgt.data()};
  Builder ce = [&](Graph<double>& g) { return softmax_ce(g, &a.t, nullptr, tt); };
  std::vector<double> w1;
  eval_weighted(ce, w1, rng, true);
  a.grad[17] += w1[0];  // drop "- onehot": the analytic gradient of level 17 is now too big
  CHECK(compare_numeric(ce, w1, rng, {&a}, 1e-5, 1e-8, 1e-5).failed == 1);
}

TEST_CASE("graph: device mixing is an error, never a silent copy") {
  std::mt19937 rng(5);
  Leaf a({1, 1, 2, 2}, rng);
  Graph<float> g(Device::Cpu);
  std::vector<float> v(4, 1.f);
  Tensor<float> ref_t{{1, 1, 2, 2}, Device::Ref, v.data()};
  CHECK_THROWS_AS(relu(g, &ref_t), Error);
  Graph<double> gd(Device::Cpu);
  Tensor<double> cpu_d{{1, 1, 2, 2}, Device::Cpu, a.value.data()};
  CHECK_THROWS_WITH_AS(relu(gd, &cpu_d), "the cpu and cuda backends run in float32 only", Error);
}

TEST_CASE("graph: the second pass reuses the arena without new allocations") {
  std::mt19937 rng(7);
  Leaf x({2, 3, 8, 8}, rng);
  Leaf w({4, 3, 3, 3}, rng);
  Graph<double> g(Device::Ref);
  long first = 0;
  for (int pass = 0; pass < 3; ++pass) {
    g.reset();
    Tensor<double>* y = mean(g, relu(g, conv2d(g, &x.t, &w.t, nullptr, 1, 1, 1, 1)));
    g.backward(y);
    if (pass == 0) first = g.arena().system_allocations();
    CHECK(g.arena().system_allocations() == first);
  }
  CHECK(first >= 1);
}
