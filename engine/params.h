// All parameters of a model in one arena, with named views (llm.c style). Gradients share the
// layout in a second arena, optimiser state in further arenas of the same layout. Trainable
// tensors come first, then buffers (batch-norm running statistics, colour masks) that are saved
// with the model but never trained.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/arena.h"
#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace prsr {

template <class T>
class ParamSet {
 public:
  explicit ParamSet(Device dev) : dev_(dev) {}
  ~ParamSet() {
    device_free(dev_, data_);
    device_free(dev_, grad_);
  }
  ParamSet(const ParamSet&) = delete;
  ParamSet& operator=(const ParamSet&) = delete;

  // Declare a tensor; its memory exists after allocate(). Pointers stay valid for life.
  Tensor<T>* declare(const std::string& name, Shape s, bool trainable = true) {
    check(!data_, "ParamSet: declare() after allocate()");
    entries_.push_back({name, std::make_unique<Tensor<T>>(), trainable, 0});
    Tensor<T>* t = entries_.back().tensor.get();
    t->shape = s;
    t->dev = dev_;
    t->requires_grad = trainable;
    return t;
  }

  // One allocation for values, one for gradients (trainable part only, zeroed).
  void allocate() {
    size_t off = 0;
    for (int pass = 0; pass < 2; ++pass)
      for (auto& e : entries_)
        if (e.trainable == (pass == 0)) {
          e.offset = off;
          off += e.tensor->numel();
          if (pass == 0) n_trainable_ = off;
        }
    n_total_ = off;
    data_ = static_cast<T*>(device_alloc(dev_, (n_total_ ? n_total_ : 1) * sizeof(T)));
    grad_ = static_cast<T*>(device_alloc(dev_, (n_trainable_ ? n_trainable_ : 1) * sizeof(T)));
    PRSR_CALL(dev_, fill, data_, T(0), n_total_);
    for (auto& e : entries_) {
      e.tensor->data = data_ + e.offset;
      e.tensor->grad = e.trainable ? grad_ + e.offset : nullptr;
      e.tensor->name = e.name.c_str();
    }
    zero_grad();
  }

  void zero_grad() { PRSR_CALL(dev_, fill, grad_, T(0), n_trainable_); }

  Device device() const { return dev_; }
  T* data() { return data_; }
  const T* data() const { return data_; }
  T* grad() { return grad_; }
  size_t trainable_count() const { return n_trainable_; }  // the first elements of data()
  size_t total_count() const { return n_total_; }

  struct Entry {
    std::string name;
    std::unique_ptr<Tensor<T>> tensor;
    bool trainable;
    size_t offset;
  };
  const std::vector<Entry>& entries() const { return entries_; }
  Tensor<T>* find(const std::string& name) const {
    for (auto& e : entries_)
      if (e.name == name) return e.tensor.get();
    return nullptr;
  }

  // Host copies of the whole arena (for init and checkpoints).
  std::vector<T> download() const {
    std::vector<T> h(n_total_);
    device_download(dev_, h.data(), data_, n_total_ * sizeof(T));
    return h;
  }
  void upload(const std::vector<T>& h) {
    check(h.size() == n_total_, "ParamSet::upload: size mismatch");
    device_upload(dev_, data_, h.data(), n_total_ * sizeof(T));
  }
  std::vector<T> download_grad() const {
    std::vector<T> h(n_trainable_);
    device_download(dev_, h.data(), grad_, n_trainable_ * sizeof(T));
    return h;
  }

 private:
  Device dev_;
  std::vector<Entry> entries_;
  T* data_ = nullptr;
  T* grad_ = nullptr;
  size_t n_trainable_ = 0, n_total_ = 0;
};

}  // namespace prsr
