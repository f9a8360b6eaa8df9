// The ops of this model, as the model code calls them. Each checks shapes and devices at entry
// (kernels trust their callers), allocates its output from the graph, runs the forward kernel of
// the graph's backend and records a Node whose backward sits in engine/backward.h.
//
// Adding an op: the files, in order, with gate (y = tanh(z[:, :c]) * sigmoid(z[:, c:])) as the
// example. Each step is checked by the build or by a test, named in brackets.
//  1. engine/kernels.def: one line per kernel, forward and backward, float32 signature:
//       PRSR_KERNEL(gate_forward, (float* y, const float* z, int n, int c, int hw))
//       PRSR_GRAD_KERNEL(gate_backward, (float* dz, const float* dy, const float* z, int n, int c,
//                                        int hw))
//     A kernel that writes gradients is a PRSR_GRAD_KERNEL: it gets `unsigned fresh` last
//     (backend.h). This one line declares cpu:: and cuda:: and makes the CUDA stub.
//  2. engine/ref/kernels.h: the reference, templated on T, plain loops:
//       template <class T> void gate_forward(T* y, const T* z, int n, int c, int hw)
//       template <class T> void gate_backward(T* dz, ..., int hw, unsigned fresh = 0)
//     (zero_fresh the fresh buffers, then accumulate). [static_assert: ref::name<float> has the
//     signature of kernels.def]
//  3. engine/cpu/elementwise.cpp (the file of its family; a new family: a new file, listed in
//     engine/cpu/meson.build): void cpu::gate_forward(...) and void cpu::gate_backward(...),
//     defined with the qualified name. [compile error "should have been declared inside
//     'prsr::cpu'" when the signature differs from kernels.def]
//  4. engine/cuda/elementwise.cu (likewise engine/cuda/meson.build): __global__ kernels in the
//     anonymous namespace, launched from void cuda::gate_forward(...) / cuda::gate_backward(...).
//     [same compile error]
//  5. engine/graph.h: Op::Gate in the Op enum (before Count) and "gate" at the same place in
//     engine/graph.cpp's name table. [static_assert: one name per Op]
//  6. engine/ops.h (below): the op function gate(g, z): check shapes and devices, g.tensor() the
//     output, OpTimer, PRSR_CALL(g.device(), gate_forward, ...), g.record(Node{Op::Gate, y, {z}})
//     with whatever the backward needs (geometry, aux tensors, flag) in the Node.
//  7. engine/backward.h: case Op::Gate in backward_node: grad_out() for each input that takes a
//     gradient (fresh bit 1u, 2u, 4u in the kernel's argument order), then
//     PRSR_CALL(dev_, gate_backward, ..., fresh). [-Wswitch warns on an Op without its case]
//  8. tests/test_gradcheck.cpp: a Case ("gate c=1", "gate c=3") that checks the backward against
//     finite differences in double on the ref backend.
//  9. tests/test_parity.cpp: the cpu and cuda kernels element by element against ref: forward,
//     backward accumulating into pre-filled buffers, and with the fresh bits set.
#pragma once
#include "engine/dispatch.h"
#include "engine/graph.h"
#include "engine/sync_bn.h"

namespace prsr {

namespace detail {
// Non-deduced parameter type: lets callers pass nullptr for an optional tensor.
template <class X>
struct identity {
  using type = X;
};
template <class X>
using nd = typename identity<X>::type;
template <class T>
void same_device(const Graph<T>& g, const Tensor<T>* t, const char* op) {
  if (t && t->dev != g.device())
    throw Error(std::string(op) + ": tensor '" + t->name + "' lives on " + device_name(t->dev) +
                " but the graph runs on " + device_name(g.device()) +
                " (tensors are never copied between devices implicitly)");
}
template <class T>
bool any_grad(std::initializer_list<const Tensor<T>*> ts) {
  for (auto* t : ts)
    if (t && t->requires_grad) return true;
  return false;
}
}  // namespace detail

// Stride-1 convolution, any kernel shape, asymmetric zero padding. x [n,ci,h,w], w [co,ci,kh,kw],
// b [co] (shape {co,1,1,1}) or null. Colour masks are applied by the caller as mul(w, mask);
// for a 1x1 conv whose mask has contiguous colour groups the caller may also pass `colors`
// (and `strict` for mask A): the backend may then skip the masked blocks (ConvGeom, backend.h).
template <class T>
Tensor<T>* conv2d(Graph<T>& g, Tensor<T>* x, Tensor<T>* w, detail::nd<Tensor<T>*> b, int pad_t, int pad_b, int pad_l,
                  int pad_r, int colors = 0, bool strict = false) {
  detail::same_device(g, x, "conv2d");
  detail::same_device(g, w, "conv2d");
  detail::same_device(g, b, "conv2d");
  PRSR_CHECK(w->shape.c == x->shape.c, "conv2d: weight " + w->shape.str() + " does not match input " + x->shape.str());
  PRSR_CHECK(!b || b->numel() == size_t(w->shape.n), "conv2d: bias size does not match the output channels");
  ConvGeom cg{x->shape.n, x->shape.c, x->shape.h, x->shape.w, w->shape.n, w->shape.h, w->shape.w,
              pad_t,      pad_b,      pad_l,      pad_r,      colors,     strict};
  PRSR_CHECK(cg.ho() > 0 && cg.wo() > 0, "conv2d: empty output for input " + x->shape.str());
  PRSR_CHECK(colors == 0 || (colors <= 3 && cg.kh == 1 && cg.kw == 1),
             "conv2d: colour blocks need a 1x1 kernel and at most 3 colours");
  Tensor<T>* y = g.tensor({cg.n, cg.co, cg.ho(), cg.wo()}, detail::any_grad<T>({x, w, b}), "conv");
  OpTimer timer(g.profile, Op::Conv, true);
  PRSR_CALL(g.device(), conv2d_forward, y->data, x->data, w->data, b ? b->data : nullptr, cg);
  Node<T> nd{Op::Conv, y, {x, w, b}};
  nd.cg = cg;
  g.record(nd);
  return y;
}

// Transposed convolution (stride, pad, output padding; square kernel), w [co,ci,k,k].
template <class T>
Tensor<T>* deconv2d(Graph<T>& g, Tensor<T>* x, Tensor<T>* w, detail::nd<Tensor<T>*> b, int stride, int pad,
                    int out_pad) {
  detail::same_device(g, x, "deconv2d");
  detail::same_device(g, w, "deconv2d");
  detail::same_device(g, b, "deconv2d");
  PRSR_CHECK(w->shape.c == x->shape.c && w->shape.h == w->shape.w,
             "deconv2d: weight " + w->shape.str() + " does not match input " + x->shape.str());
  PRSR_CHECK(!b || b->numel() == size_t(w->shape.n), "deconv2d: bias size does not match the output channels");
  DeconvGeom dg{x->shape.n, x->shape.c, x->shape.h, x->shape.w, w->shape.n, w->shape.h, stride, pad, out_pad};
  Tensor<T>* y = g.tensor({dg.n, dg.co, dg.ho(), dg.wo()}, detail::any_grad<T>({x, w, b}), "deconv");
  OpTimer timer(g.profile, Op::Deconv, true);
  PRSR_CALL(g.device(), deconv2d_forward, y->data, x->data, w->data, b ? b->data : nullptr, dg);
  Node<T> nd{Op::Deconv, y, {x, w, b}};
  nd.dg = dg;
  g.record(nd);
  return y;
}

template <class T>
Tensor<T>* add(Graph<T>& g, Tensor<T>* a, Tensor<T>* b) {
  detail::same_device(g, a, "add");
  detail::same_device(g, b, "add");
  PRSR_CHECK(a->shape == b->shape, "add: shapes " + a->shape.str() + " and " + b->shape.str() + " differ");
  Tensor<T>* y = g.tensor(a->shape, detail::any_grad<T>({a, b}), "add");
  OpTimer timer(g.profile, Op::Add, true);
  PRSR_CALL(g.device(), add_forward, y->data, a->data, b->data, a->numel());
  g.record(Node<T>{Op::Add, y, {a, b}});
  return y;
}

// y = a * m with m a constant of the same shape (a colour mask): no gradient flows into m.
template <class T>
Tensor<T>* mul(Graph<T>& g, Tensor<T>* a, Tensor<T>* m) {
  detail::same_device(g, a, "mul");
  detail::same_device(g, m, "mul");
  PRSR_CHECK(a->shape == m->shape, "mul: shapes " + a->shape.str() + " and " + m->shape.str() + " differ");
  Tensor<T>* y = g.tensor(a->shape, a->requires_grad, "mul");
  OpTimer timer(g.profile, Op::Mul, true);
  PRSR_CALL(g.device(), mul_forward, y->data, a->data, m->data, a->numel());
  g.record(Node<T>{Op::Mul, y, {a, m}});
  return y;
}

#define PRSR_UNARY_OP(name, op_enum, kernel)                     \
  template <class T>                                             \
  Tensor<T>* name(Graph<T>& g, Tensor<T>* x) {                   \
    detail::same_device(g, x, #name);                            \
    Tensor<T>* y = g.tensor(x->shape, x->requires_grad, #name);  \
    OpTimer timer(g.profile, op_enum, true);                     \
    PRSR_CALL(g.device(), kernel, y->data, x->data, x->numel()); \
    g.record(Node<T>{op_enum, y, {x}});                          \
    return y;                                                    \
  }
PRSR_UNARY_OP(relu, Op::Relu, relu_forward)
PRSR_UNARY_OP(tanh_op, Op::Tanh, tanh_forward)
PRSR_UNARY_OP(sigmoid, Op::Sigmoid, sigmoid_forward)
#undef PRSR_UNARY_OP

// gate(z) = tanh(z[:, :c]) * sigmoid(z[:, c:]); z [n, 2c, h, w] -> [n, c, h, w]
template <class T>
Tensor<T>* gate(Graph<T>& g, Tensor<T>* z) {
  detail::same_device(g, z, "gate");
  PRSR_CHECK(z->shape.c % 2 == 0, "gate: needs an even channel count, got " + z->shape.str());
  Shape s = z->shape;
  s.c /= 2;
  Tensor<T>* y = g.tensor(s, z->requires_grad, "gate");
  OpTimer timer(g.profile, Op::Gate, true);
  PRSR_CALL(g.device(), gate_forward, y->data, z->data, s.n, s.c, s.hw());
  g.record(Node<T>{Op::Gate, y, {z}});
  return y;
}

// Shift down by one row, zero row on top: y[:, :, i] = x[:, :, i-1].
template <class T>
Tensor<T>* down_shift(Graph<T>& g, Tensor<T>* x) {
  detail::same_device(g, x, "down_shift");
  const Shape& s = x->shape;
  Tensor<T>* y = g.tensor(s, x->requires_grad, "down_shift");
  OpTimer timer(g.profile, Op::DownShift, true);
  PRSR_CALL(g.device(), down_shift_forward, y->data, x->data, s.n * s.c, s.h, s.w);
  g.record(Node<T>{Op::DownShift, y, {x}});
  return y;
}

// Batch norm per channel. training: batch statistics, running statistics updated in place;
// evaluation: running statistics. gamma, beta, running_* have c elements.
template <class T>
Tensor<T>* batch_norm(Graph<T>& g, Tensor<T>* x, Tensor<T>* gamma, Tensor<T>* beta, Tensor<T>* running_mean,
                      Tensor<T>* running_var, bool training, T momentum = T(0.1), T eps = T(1e-5)) {
  for (auto* t : {x, gamma, beta, running_mean, running_var}) detail::same_device(g, t, "batch_norm");
  const Shape& s = x->shape;
  for (auto* t : {gamma, beta, running_mean, running_var})
    PRSR_CHECK(t->numel() == size_t(s.c), "batch_norm: per-channel tensor size does not match " + s.str());
  Tensor<T>* y = g.tensor(s, detail::any_grad<T>({x, gamma, beta}), "batch_norm");
  Tensor<T>* mean = g.tensor({1, s.c, 1, 1}, false, "bn_mean");
  Tensor<T>* invstd = g.tensor({1, s.c, 1, 1}, false, "bn_invstd");
  OpTimer timer(g.profile, Op::BatchNorm, true);
  if (training && g.bn_sum) {  // training over several ranks: engine/sync_bn.h (host), engine/cuda/sync_bn.cu
    if constexpr (std::is_same_v<T, float>) {
      if (g.device() == Device::Cuda) {
        cuda::sync_batchnorm_forward(g.bn_sum, y->data, mean->data, invstd->data, running_mean->data, running_var->data,
                                     x->data, gamma->data, beta->data, s.n, s.c, s.hw(), momentum, eps);
      } else {
        sync_batchnorm_forward(g.bn_sum, y->data, mean->data, invstd->data, running_mean->data, running_var->data,
                               x->data, gamma->data, beta->data, s.n, s.c, s.hw(), momentum, eps);
      }
    } else {
      PRSR_CHECK(g.device() != Device::Cuda, "the cuda backend runs in float32 only");
      sync_batchnorm_forward(g.bn_sum, y->data, mean->data, invstd->data, running_mean->data, running_var->data,
                             x->data, gamma->data, beta->data, s.n, s.c, s.hw(), momentum, eps);
    }
  } else if (training)
    PRSR_CALL(g.device(), batchnorm_forward_train, y->data, mean->data, invstd->data, running_mean->data,
              running_var->data, x->data, gamma->data, beta->data, s.n, s.c, s.hw(), momentum, eps);
  else
    PRSR_CALL(g.device(), batchnorm_forward_eval, y->data, mean->data, invstd->data, running_mean->data,
              running_var->data, x->data, gamma->data, beta->data, s.n, s.c, s.hw(), eps);
  Node<T> nd{Op::BatchNorm, y, {x, gamma, beta}, {mean, invstd}};
  nd.flag = training;
  g.record(nd);
  return y;
}

// Mean over (n, colour, pixel) of -log softmax(a + b)[target] (b may be null: CE of a alone).
// a, b: [n, colors*256, h, w]; target [n, colors, h, w]. Returns a 1-element tensor (nats).
template <class T>
Tensor<T>* softmax_ce(Graph<T>& g, Tensor<T>* a, detail::nd<Tensor<T>*> b, const ByteTensor& target) {
  detail::same_device(g, a, "softmax_ce");
  detail::same_device(g, b, "softmax_ce");
  PRSR_CHECK(target.dev == g.device(), "softmax_ce: targets live on another device");
  const Shape& s = a->shape;
  PRSR_CHECK(!b || b->shape == s, "softmax_ce: logits shapes differ");
  PRSR_CHECK(target.shape.n == s.n && target.shape.h == s.h && target.shape.w == s.w && target.shape.c * kLevels == s.c,
             "softmax_ce: logits " + s.str() + " do not match targets " + target.shape.str());
  Tensor<T>* y = g.tensor({1, 1, 1, 1}, detail::any_grad<T>({a, b}), "softmax_ce");
  OpTimer timer(g.profile, Op::SoftmaxCE, true);
  PRSR_CALL(g.device(), softmax_ce_forward, y->data, a->data, b ? b->data : nullptr, target.data, s.n, target.shape.c,
            s.hw());
  Node<T> nd{Op::SoftmaxCE, y, {a, b}};
  nd.target = target;
  g.record(nd);
  return y;
}

// mean((a - t)^2); t is a constant (no gradient).
template <class T>
Tensor<T>* mse(Graph<T>& g, Tensor<T>* a, Tensor<T>* t) {
  detail::same_device(g, a, "mse");
  detail::same_device(g, t, "mse");
  PRSR_CHECK(a->shape == t->shape, "mse: shapes " + a->shape.str() + " and " + t->shape.str() + " differ");
  Tensor<T>* y = g.tensor({1, 1, 1, 1}, a->requires_grad, "mse");
  OpTimer timer(g.profile, Op::Mse, true);
  PRSR_CALL(g.device(), mse_forward, y->data, a->data, t->data, a->numel());
  g.record(Node<T>{Op::Mse, y, {a, t}});
  return y;
}

template <class T>
Tensor<T>* mean(Graph<T>& g, Tensor<T>* x) {
  detail::same_device(g, x, "mean");
  Tensor<T>* y = g.tensor({1, 1, 1, 1}, x->requires_grad, "mean");
  OpTimer timer(g.profile, Op::Mean, true);
  PRSR_CALL(g.device(), mean_forward, y->data, x->data, x->numel());
  g.record(Node<T>{Op::Mean, y, {x}});
  return y;
}

}  // namespace prsr
