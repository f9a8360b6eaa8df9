// Tensors: a shape, a device and two pointers (value, gradient) into memory someone else owns
// (a Graph's arena for activations, a ParamSet's arena for parameters). NCHW, contiguous.
// float32 on the backends; the reference also runs in double.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/backend.h"

namespace prsr {

struct Shape {
  int n = 1, c = 1, h = 1, w = 1;
  size_t numel() const { return size_t(n) * c * h * w; }
  int hw() const { return h * w; }
  bool operator==(const Shape& o) const { return n == o.n && c == o.c && h == o.h && w == o.w; }
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const {
    return "[" + std::to_string(n) + ", " + std::to_string(c) + ", " + std::to_string(h) + ", " + std::to_string(w) +
           "]";
  }
};

template <class T>
struct Tensor {
  Shape shape;
  Device dev = Device::Ref;
  T* data = nullptr;
  T* grad = nullptr;           // null until backward() gives it one (activations)
  bool requires_grad = false;  // parameters, and anything computed from one
  const char* name = "";
  size_t numel() const { return shape.numel(); }
};

// uint8 targets for the softmax cross-entropy: [n, colors, h, w] sub-pixel values 0..255.
struct ByteTensor {
  Shape shape;
  Device dev = Device::Ref;
  const uint8_t* data = nullptr;
};

}  // namespace prsr
