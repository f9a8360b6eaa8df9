// Every op's backward, in one place: Graph::backward walks the tape in reverse and
// backward_node's switch over the Op enum gives each op its gradient buffers (grad_out, with the
// fresh bits of engine/backend.h) and calls its backward kernel (engine/kernels.def) on the
// graph's backend. The forwards are in engine/ops.h. Included from graph.h.
//
// The switch has no default: a new Op without its case here is a -Wswitch warning.
#pragma once
#include "engine/dispatch.h"
#include "engine/sync_bn.h"

namespace prsr {

// The gradient buffer of t for a backward kernel: an existing one (accumulated into), or a new
// one from the arena, not zeroed, with `bit` set in `fresh` so that the kernel overwrites it
// (backend.h). Null when t needs no gradient.
template <class T>
T* Graph<T>::grad_out(Tensor<T>* t, unsigned& fresh, unsigned bit) {
  if (!t || !t->requires_grad) return nullptr;
  if (!t->grad) {
    t->grad = static_cast<T*>(arena_.alloc(t->numel() * sizeof(T)));
    fresh |= bit;
  }
  return t->grad;
}

template <class T>
void Graph<T>::backward(Tensor<T>* loss) {
  PRSR_CHECK(loss->numel() == 1, "backward() needs a scalar loss, got " + loss->shape.str());
  PRSR_CHECK(loss->requires_grad, "backward(): the loss does not depend on anything that needs a gradient");
  unsigned fresh = 0;  // (the seed is written whether or not the buffer is new)
  T* g = grad_out(loss, fresh, 1u);
  PRSR_CALL(dev_, fill, g, T(1), size_t(1));
  for (size_t i = nodes_.size(); i-- > 0;) {
    if (!nodes_[i].out->grad) continue;  // nothing flowed back into this op
    backward_node(nodes_[i]);
  }
}

template <class T>
void Graph<T>::backward_node(const Node<T>& nd) {
  const T* dy = nd.out->grad;
  const size_t n = nd.out->numel();
  OpTimer timer(profile, nd.op, false);
  Tensor<T>* const* in = nd.in;
  unsigned fresh = 0;  // which gradient buffers grad_out() has just allocated (backend.h)
  switch (nd.op) {
    case Op::Conv: {
      T* dx = grad_out(in[0], fresh, 1u);
      T* dw = grad_out(in[1], fresh, 2u);
      T* db = grad_out(in[2], fresh, 4u);
      PRSR_CALL(dev_, conv2d_backward, dx, dw, db, dy, in[0]->data, in[1]->data, nd.cg, fresh);
      break;
    }
    case Op::Deconv: {
      T* dx = grad_out(in[0], fresh, 1u);
      T* dw = grad_out(in[1], fresh, 2u);
      T* db = grad_out(in[2], fresh, 4u);
      PRSR_CALL(dev_, deconv2d_backward, dx, dw, db, dy, in[0]->data, in[1]->data, nd.dg, fresh);
      break;
    }
    case Op::Add: {
      // y = a + b passes dy through unchanged. An input that has no gradient buffer yet takes
      // over dy's buffer instead of a zeroed copy: dy is final here (every consumer of y comes
      // later on the tape and has run) and nothing reads it after this node, so the input's
      // later accumulations may go into it. Only one input can take it over; the other (or
      // one that already has a gradient, e.g. a parameter) accumulates as usual. When both
      // inputs are the same tensor, it takes the buffer and the axpy below doubles it in place.
      // Consequence: after backward() the gradient of an add's output is not kept.
      Tensor<T>* a = in[0];
      Tensor<T>* b = in[1];
      bool aliased = false;
      for (Tensor<T>* t : {a, b})
        if (!aliased && t && t->requires_grad && !t->grad) {
          t->grad = const_cast<T*>(dy);
          aliased = true;
          if (t == a) a = nullptr;
          else b = nullptr;
        }
      for (Tensor<T>* t : {a, b}) {  // one axpy each: bit 0 is its own output's
        fresh = 0;
        if (T* g = grad_out(t, fresh, 1u)) PRSR_CALL(dev_, axpy, g, T(1), dy, n, fresh);
      }
      break;
    }
    case Op::Mul:  // in[1] is a constant (a mask): no gradient flows into it
      if (T* da = grad_out(in[0], fresh, 1u)) PRSR_CALL(dev_, mul_backward, da, dy, in[1]->data, n, fresh);
      break;
    case Op::Relu:
      if (T* dx = grad_out(in[0], fresh, 1u)) PRSR_CALL(dev_, relu_backward, dx, dy, nd.out->data, n, fresh);
      break;
    case Op::Tanh:
      if (T* dx = grad_out(in[0], fresh, 1u)) PRSR_CALL(dev_, tanh_backward, dx, dy, nd.out->data, n, fresh);
      break;
    case Op::Sigmoid:
      if (T* dx = grad_out(in[0], fresh, 1u)) PRSR_CALL(dev_, sigmoid_backward, dx, dy, nd.out->data, n, fresh);
      break;
    case Op::Gate: {
      const Shape& s = nd.out->shape;
      if (T* dz = grad_out(in[0], fresh, 1u))
        PRSR_CALL(dev_, gate_backward, dz, dy, in[0]->data, s.n, s.c, s.hw(), fresh);
      break;
    }
    case Op::DownShift: {
      const Shape& s = nd.out->shape;
      if (T* dx = grad_out(in[0], fresh, 1u)) PRSR_CALL(dev_, down_shift_backward, dx, dy, s.n * s.c, s.h, s.w, fresh);
      break;
    }
    case Op::BatchNorm: {
      const Shape& s = nd.out->shape;
      T* dx = grad_out(in[0], fresh, 1u);
      T* dgamma = grad_out(in[1], fresh, 2u);
      T* dbeta = grad_out(in[2], fresh, 4u);
      if (nd.flag && bn_sum) {  // training over several ranks: global-batch means (engine/sync_bn.h)
        bool on_device = false;
        if constexpr (std::is_same_v<T, float>) {
          if (dev_ == Device::Cuda) {
            cuda::sync_batchnorm_backward(bn_sum, dx, dgamma, dbeta, dy, in[0]->data, in[1]->data, nd.aux[0]->data,
                                          nd.aux[1]->data, s.n, s.c, s.hw(), fresh);
            on_device = true;
          }
        }
        if (!on_device)
          sync_batchnorm_backward(bn_sum, dx, dgamma, dbeta, dy, in[0]->data, in[1]->data, nd.aux[0]->data,
                                  nd.aux[1]->data, s.n, s.c, s.hw(), fresh);
      } else
        PRSR_CALL(dev_, batchnorm_backward, dx, dgamma, dbeta, dy, in[0]->data, in[1]->data, nd.aux[0]->data,
                  nd.aux[1]->data, s.n, s.c, s.hw(), nd.flag, fresh);
      break;
    }
    case Op::SoftmaxCE: {
      const Shape& s = in[0]->shape;
      T* da = grad_out(in[0], fresh, 1u);
      T* db = grad_out(in[1], fresh, 2u);  // (in[1] == in[0]: db is da's buffer, not fresh)
      PRSR_CALL(dev_, softmax_ce_backward, da, db, dy, in[0]->data, in[1] ? in[1]->data : nullptr, nd.target.data, s.n,
                nd.target.shape.c, s.hw(), fresh);
      break;
    }
    case Op::Mse:
      if (T* da = grad_out(in[0], fresh, 1u))
        PRSR_CALL(dev_, mse_backward, da, dy, in[0]->data, in[1]->data, in[0]->numel(), fresh);
      break;
    case Op::Mean:
      if (T* dx = grad_out(in[0], fresh, 1u)) PRSR_CALL(dev_, mean_backward, dx, dy, in[0]->numel(), fresh);
      break;
    case Op::Count:  // not an op
      break;
  }
}

}  // namespace prsr
