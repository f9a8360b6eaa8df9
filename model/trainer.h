// One training step and held-out evaluation, on any backend. Buffers are sized once for the
// batch; after the first step nothing is allocated (the graph's arena is rewound and reused).
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "engine/optim.h"
#include "model/batch.h"
#include "model/model.h"

namespace prsr {

struct StepResult {
  double loss = 0;       // the minimised loss (nats; MSE for l2)
  double nll_bits = 0;   // CE(A + B) / ln 2: bits per sub-pixel ("bits/dim"); 0 for l2
  double ce_a_bits = 0;  // CE(A) / ln 2
};

template <class T>
class Trainer {
 public:
  Trainer(Model<T>& model, const OptimConfig& oc, int batch)
      : m_(model), opt_(oc, model.params), g_(model.device()), eval_g_(model.device()), batch_(batch) {
    const ModelConfig& c = model.config();
    const size_t S = size_t(c.size), L = size_t(c.low()), C = size_t(c.colors);
    hx_.resize(batch * C * L * L);
    hy_.resize(batch * C * S * S);
    ht_.resize(batch * C * S * S);
    dx_ = static_cast<T*>(device_alloc(model.device(), hx_.size() * sizeof(T)));
    dy_ = static_cast<T*>(device_alloc(model.device(), hy_.size() * sizeof(T)));
    dt_ = static_cast<uint8_t*>(device_alloc(model.device(), ht_.size()));
  }
  ~Trainer() {
    device_free(m_.device(), dx_);
    device_free(m_.device(), dy_);
    device_free(m_.device(), dt_);
  }
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  Optimizer<T>& optimizer() { return opt_; }
  int batch() const { return batch_; }
  Graph<T>& graph() { return g_; }

  // Data parallel over `ranks` processes (train/distributed.h), each stepping on its own slice of
  // every global batch: `mean_grad` replaces the parameter arena's gradient buffer by its mean
  // over all ranks, in place, in the model's device memory (one call per step); `sum` sums small
  // host vectors of doubles (the step's loss figures); `sum_device` sums vectors of doubles in the
  // device's memory (the synchronised batch norm's per-channel statistics, Graph::bn_sum). Each
  // rank's loss is the mean over its slice, so with equal slices the mean of the ranks' gradients
  // is the gradient of the global batch's mean loss. `ranks` may be 1 (one GPU rank under
  // mpirun -np 1 runs the NCCL path).
  void set_data_parallel(int ranks, void (*mean_grad)(T*, size_t), void (*sum)(double*, int),
                         void (*sum_device)(double*, int)) {
    ranks_ = ranks;
    mean_grad_ = mean_grad;
    sum_ = sum;
    g_.bn_sum = sum_device;
  }

  // Forward, backward and one optimiser update on `batch` images (uint8 HWC). Throws Error
  // naming the step when the loss is not finite; the parameters are then left un-updated.
  StepResult step(const uint8_t* const* images, long step) {
    const double t0 = now_seconds();
    upload(images, batch_);
    g_.reset();
    g_.grad_enabled = true;
    m_.params.zero_grad();
    const double t1 = now_seconds();
    auto L = forward(g_, batch_, true);
    StepResult r = read(L);
    if (mean_grad_) {  // the global batch's figures, the same on every rank (so is the check below)
      double v[3] = {r.loss, r.nll_bits, r.ce_a_bits};
      sum_(v, 3);
      r = {v[0] / ranks_, v[1] / ranks_, v[2] / ranks_};
    }
    if (!std::isfinite(r.loss))
      throw Error("the loss is " + std::string(std::isnan(r.loss) ? "NaN" : "infinite") + " at step " +
                  std::to_string(step) + "; stopping (parameters of the last good step are kept)");
    const double t2 = now_seconds();
    g_.backward(L.total);
    const double t_ar = now_seconds();
    if (mean_grad_) mean_grad_(m_.params.grad(), m_.params.trainable_count());
    const double t3 = now_seconds();
    opt_.step(step);
    const double t4 = now_seconds();
    times_ = {t1 - t0, t2 - t1, t3 - t2, t4 - t3, t3 - t_ar};
    return r;
  }

  // Wall time of the phases of the last step() (benchmarks).
  struct StepTimes {
    double setup = 0, forward = 0, backward = 0, optimizer = 0;
    double allreduce = 0;  // of backward: the gradient all-reduce (0 on one rank)
  };
  const StepTimes& last_times() const { return times_; }

  // Loss on n <= batch images with evaluation-mode batch norm and no gradients.
  StepResult evaluate(const uint8_t* const* images, int n) {
    check(n >= 1 && n <= batch_, "evaluate: 1..batch images at a time");
    upload(images, n);
    eval_g_.reset();
    eval_g_.grad_enabled = false;
    return read(forward(eval_g_, n, false));
  }

 private:
  void upload(const uint8_t* const* images, int n) {
    const ModelConfig& c = m_.config();
    make_batch<T>(images, n, c.colors, c.size, hx_.data(), hy_.data(), ht_.data());
    const size_t S = size_t(c.size), L = size_t(c.low()), C = size_t(c.colors);
    device_upload(m_.device(), dx_, hx_.data(), n * C * L * L * sizeof(T));
    device_upload(m_.device(), dy_, hy_.data(), n * C * S * S * sizeof(T));
    device_upload(m_.device(), dt_, ht_.data(), n * C * S * S);
  }

  typename Model<T>::Loss forward(Graph<T>& g, int n, bool training) {
    const ModelConfig& c = m_.config();
    const int C = c.colors, S = c.size, L = c.low();
    xt_ = Tensor<T>{{n, C, L, L}, m_.device(), dx_};
    yt_ = Tensor<T>{{n, C, S, S}, m_.device(), dy_};
    xt_.name = "x";
    yt_.name = "y";
    const ByteTensor tt{{n, C, S, S}, m_.device(), dt_};
    return m_.loss(g, &xt_, &yt_, tt, training);
  }

  StepResult read(const typename Model<T>::Loss& L) {
    auto scalar = [&](Tensor<T>* t) {
      T v;
      device_download(m_.device(), &v, t->data, sizeof(T));
      return double(v);
    };
    StepResult r;
    r.loss = scalar(L.total);
    if (L.ce_ab) {
      r.nll_bits = scalar(L.ce_ab) / std::log(2.0);
      r.ce_a_bits = scalar(L.ce_a) / std::log(2.0);
    }
    return r;
  }

  Model<T>& m_;
  Optimizer<T> opt_;
  Graph<T> g_, eval_g_;
  int batch_;
  int ranks_ = 1;
  void (*mean_grad_)(T*, size_t) = nullptr;  // set: data parallel (set_data_parallel)
  void (*sum_)(double*, int) = nullptr;
  std::vector<T> hx_, hy_;
  std::vector<uint8_t> ht_;
  T* dx_ = nullptr;
  T* dy_ = nullptr;
  uint8_t* dt_ = nullptr;
  Tensor<T> xt_, yt_;
  StepTimes times_;
};

}  // namespace prsr
