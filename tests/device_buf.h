// Memory of a backend under test.
//   gpu_ok():    whether CUDA kernels can run here; the first call prints the visible skip line.
//   Buf<T, D>:   n elements of T in backend D's memory (host memory for Device::Cpu, device
//                memory for Device::Cuda), uploaded from a host vector; get() downloads them.
//                The data start on a 64-byte boundary, as the arena's tensors do, plus `shift`
//                elements (to exercise kernels whose path depends on alignment).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
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

  explicit Buf(const std::vector<T>& h, size_t shift = 0) : n(h.size()) {
    if constexpr (D == prsr::Device::Cpu) {
      host_.resize(n + shift + 64 / sizeof(T));
      const size_t misalign = reinterpret_cast<uintptr_t>(host_.data()) % 64;
      p = host_.data() + (misalign ? (64 - misalign) / sizeof(T) : 0) + shift;
      std::copy(h.begin(), h.end(), p);
    } else {
      base_ = static_cast<T*>(prsr::cuda::malloc_device((n + shift) * sizeof(T)));
      p = base_ + shift;
      prsr::cuda::copy_to_device(p, h.data(), n * sizeof(T));
    }
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() {
    if constexpr (D == prsr::Device::Cuda) {
      try {
        prsr::cuda::free_device(base_);
      } catch (...) {}
    }
  }
  std::vector<T> get() const {
    if constexpr (D == prsr::Device::Cpu) {
      return std::vector<T>(p, p + n);
    } else {
      std::vector<T> h(n);
      prsr::cuda::copy_to_host(h.data(), p, n * sizeof(T));
      return h;
    }
  }

 private:
  std::vector<T> host_;  // Device::Cpu: the storage p points into
  T* base_ = nullptr;    // Device::Cuda: the allocation p points into
};
