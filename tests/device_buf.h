// Memory of a backend under test.
//   gpu_ok():    whether CUDA kernels can run here; the first call prints the visible skip line.
//   Buf<T, D>:   n elements of T in backend D's memory (host memory for Device::Cpu, device
//                memory for Device::Cuda), uploaded from a host vector; get() downloads them.
#pragma once
#include <cstddef>
#include <cstdio>
#include <vector>

#include "engine/backend.h"

// Asked once, at static-initialisation time (the skip decorators call it while the cases
// register), so that the reason line is printed before doctest's own output.
inline bool gpu_ok() {
  static const bool ok = [] {
    const bool a = prsr::cuda::available();
    if (!a) {
      std::printf("skipped: no CUDA device (%s)\n", prsr::cuda::unavailable_reason());
      std::fflush(stdout);
    }
    return a;
  }();
  return ok;
}

template <class T, prsr::Device D>
class Buf {
  static_assert(D == prsr::Device::Cpu || D == prsr::Device::Cuda, "a float32 backend");

 public:
  T* p = nullptr;
  size_t n = 0;

  explicit Buf(const std::vector<T>& h) : n(h.size()) {
    if constexpr (D == prsr::Device::Cpu) {
      host_ = h;
      p = host_.data();
    } else {
      p = static_cast<T*>(prsr::cuda::malloc_device(n * sizeof(T)));
      prsr::cuda::copy_to_device(p, h.data(), n * sizeof(T));
    }
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() {
    if constexpr (D == prsr::Device::Cuda) {
      try {
        prsr::cuda::free_device(p);
      } catch (...) {}
    }
  }
  std::vector<T> get() const {
    if constexpr (D == prsr::Device::Cpu) {
      return host_;
    } else {
      std::vector<T> h(n);
      prsr::cuda::copy_to_host(h.data(), p, n * sizeof(T));
      return h;
    }
  }

 private:
  std::vector<T> host_;  // Device::Cpu only
};
