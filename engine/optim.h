// Optimisers over a ParamSet's trainable arena (docs/design.md 1.3).
//   RMSProp, TensorFlow's definition (the paper's framework):
//     ms = decay*ms + (1-decay)*g^2   (ms starts at 1)
//     mom = momentum*mom + lr*g/sqrt(ms + eps);  w -= mom
//   PyTorch's RMSprop differs: square_avg starts at 0 and eps is added outside the root
//   (g / (sqrt(v) + eps)); the first steps are therefore much larger there.
//   Adam: Kingma & Ba with bias correction.
// The learning rate is halved every `halve_every` steps.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "engine/dispatch.h"
#include "engine/params.h"

namespace prsr {

struct OptimConfig {
  std::string kind = "rmsprop";  // rmsprop | adam
  float lr = 4e-4f;
  float decay = 0.95f;    // rmsprop
  float momentum = 0.9f;  // rmsprop
  float eps = 1e-8f;
  float beta1 = 0.9f, beta2 = 0.999f;  // adam
  long halve_every = 500000;
};

template <class T>
class Optimizer {
 public:
  Optimizer(const OptimConfig& cfg, ParamSet<T>& params) : cfg_(cfg), params_(params) {
    check(cfg.kind == "rmsprop" || cfg.kind == "adam", "unknown optimizer '" + cfg.kind + "' (rmsprop|adam)");
    n_ = params.trainable_count();
    const Device dev = params.device();
    s1_ = static_cast<T*>(device_alloc(dev, (n_ ? n_ : 1) * sizeof(T)));
    s2_ = static_cast<T*>(device_alloc(dev, (n_ ? n_ : 1) * sizeof(T)));
    // TF RMSProp starts the mean square at 1; momentum and Adam moments start at 0.
    PRSR_CALL(dev, fill, s1_, T(cfg.kind == "rmsprop" ? 1 : 0), n_);
    PRSR_CALL(dev, fill, s2_, T(0), n_);
  }
  ~Optimizer() {
    device_free(params_.device(), s1_);
    device_free(params_.device(), s2_);
  }
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  float lr_at(long step) const {
    return cfg_.halve_every > 0 ? cfg_.lr * std::pow(0.5f, float(step / cfg_.halve_every)) : cfg_.lr;
  }

  // One update with the gradients in params.grad(); `step` counts from 0.
  void step(long step) {
    const Device dev = params_.device();
    const T lr = T(lr_at(step));
    if (cfg_.kind == "rmsprop")
      PRSR_CALL(dev, rmsprop_step, params_.data(), s1_, s2_, params_.grad(), n_, lr, T(cfg_.decay), T(cfg_.momentum),
                T(cfg_.eps));
    else
      PRSR_CALL(dev, adam_step, params_.data(), s1_, s2_, params_.grad(), n_, lr, T(cfg_.beta1), T(cfg_.beta2),
                T(cfg_.eps), step + 1);
  }

  const OptimConfig& config() const { return cfg_; }
  size_t size() const { return n_; }
  // The two state buffers (s1, s2: what rmsprop_step / adam_step keep per parameter), size()
  // values each in the parameters' device memory; for copies without a download vector.
  const T* state(int which) const { return which == 0 ? s1_ : s2_; }
  T* state(int which) { return which == 0 ? s1_ : s2_; }
  // State for checkpoints: s1 (rmsprop ms / adam m), s2 (rmsprop mom / adam v).
  std::vector<T> download_state(int which) const {
    std::vector<T> h(n_);
    device_download(params_.device(), h.data(), which == 0 ? s1_ : s2_, n_ * sizeof(T));
    return h;
  }
  void upload_state(int which, const std::vector<T>& h) {
    check(h.size() == n_, "optimizer state size mismatch");
    device_upload(params_.device(), which == 0 ? s1_ : s2_, h.data(), n_ * sizeof(T));
  }

 private:
  OptimConfig cfg_;
  ParamSet<T>& params_;
  size_t n_ = 0;
  T* s1_ = nullptr;
  T* s2_ = nullptr;
};

}  // namespace prsr
