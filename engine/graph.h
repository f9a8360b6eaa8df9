// The tape. Ops (engine/ops.h) create their outputs through the Graph and record one Node each;
// backward() walks the nodes in reverse and calls each op's backward kernel (every op's backward
// is in engine/backward.h).
//
// Memory: activations and their gradients come from the graph's Arena. reset() rewinds it, so a
// training loop that builds the same graph every step reuses the same memory: after the first
// step nothing is allocated (Tensor and Node records are pooled too).
#pragma once
#include <memory>
#include <vector>

#include "engine/arena.h"
#include "engine/error.h"
#include "engine/tensor.h"

namespace prsr {

// Every recorded op; Count is not an op but their number (graph.cpp's name table is
// static_asserted to have exactly Count entries). Adding one: engine/ops.h, top.
enum class Op { Conv, Deconv, Add, Mul, Relu, Tanh, Sigmoid, Gate, DownShift, BatchNorm, SoftmaxCE, Mse, Mean, Count };
constexpr int kOpCount = int(Op::Count);
const char* op_name(Op op);  // "conv", "deconv", ...

// Optional per-op timing (benchmarks): wall time of every forward and backward kernel call.
// Accurate on the synchronous backends (ref, cpu); on cuda it measures launch time only.
struct OpProfile {
  double fwd_s[kOpCount] = {}, bwd_s[kOpCount] = {};
  long fwd_calls[kOpCount] = {}, bwd_calls[kOpCount] = {};
  void clear() { *this = OpProfile{}; }
};

double now_seconds();

// Adds the time of its scope to profile->fwd_s/bwd_s[op] (no-op when profile is null).
class OpTimer {
 public:
  OpTimer(OpProfile* p, Op op, bool forward) : p_(p), op_(op), fwd_(forward), t0_(p ? now_seconds() : 0) {}
  ~OpTimer() {
    if (!p_) return;
    const double dt = now_seconds() - t0_;
    if (fwd_) {
      p_->fwd_s[int(op_)] += dt;
      ++p_->fwd_calls[int(op_)];
    } else {
      p_->bwd_s[int(op_)] += dt;
      ++p_->bwd_calls[int(op_)];
    }
  }
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  OpProfile* p_;
  Op op_;
  bool fwd_;
  double t0_;
};

// One recorded op: enough to run its backward. in[] are inputs, aux[] saved tensors.
template <class T>
struct Node {
  Op op;
  Tensor<T>* out = nullptr;
  Tensor<T>* in[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
  Tensor<T>* aux[2] = {nullptr, nullptr};
  ByteTensor target{};
  ConvGeom cg{};
  DeconvGeom dg{};
  bool flag = false;  // batch norm: training
};

template <class T>
class Graph {
 public:
  explicit Graph(Device dev) : dev_(dev), arena_(dev) {}
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  Device device() const { return dev_; }
  Arena& arena() { return arena_; }

  // Record nodes (and allocate gradients in backward) only when true; false for evaluation.
  bool grad_enabled = true;
  // When set, every op's forward and backward kernel time is added here.
  OpProfile* profile = nullptr;
  // Synchronised batch norm (engine/sync_bn.h): when set, training-mode batch norm sums its
  // per-channel statistics over all ranks with it (in place; v is in the graph's device memory:
  // host for ref / cpu, GPU for cuda, engine/cuda/sync_bn.cu). Null: single-process kernels.
  void (*bn_sum)(double* v, int n) = nullptr;

  // A fresh activation tensor with uninitialised data from the arena.
  Tensor<T>* tensor(Shape s, bool requires_grad, const char* name = "") {
    Tensor<T>* t;
    if (n_tensors_ < tensors_.size()) {
      t = tensors_[n_tensors_].get();
    } else {
      tensors_.push_back(std::make_unique<Tensor<T>>());
      t = tensors_.back().get();
    }
    ++n_tensors_;
    *t = Tensor<T>{};
    t->shape = s;
    t->dev = dev_;
    t->data = static_cast<T*>(arena_.alloc(s.numel() * sizeof(T)));
    t->requires_grad = requires_grad && grad_enabled;
    t->name = name;
    return t;
  }

  void record(const Node<T>& n) {
    if (grad_enabled && n.out->requires_grad) nodes_.push_back(n);
  }

  // Seeds d(loss) = 1 and runs every recorded backward in reverse order. The first kernel to
  // write an activation's gradient overwrites it (fresh, backend.h); parameter gradients
  // ACCUMULATE (zero them once per step).
  void backward(Tensor<T>* loss);

  // Forget every tensor and node; the next pass reuses the same memory.
  void reset() {
    nodes_.clear();
    n_tensors_ = 0;
    arena_.reset();
  }

  size_t node_count() const { return nodes_.size(); }

 private:
  T* grad_out(Tensor<T>* t, unsigned& fresh, unsigned bit);
  void backward_node(const Node<T>& n);

  Device dev_;
  Arena arena_;
  std::vector<std::unique_ptr<Tensor<T>>> tensors_;
  size_t n_tensors_ = 0;
  std::vector<Node<T>> nodes_;
};

}  // namespace prsr

#include "engine/backward.h"
