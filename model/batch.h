// Batches for the model: from uint8 HWC images (the data sets' layout) to
//   x      [n, C, s/4, s/4]  the 4x4 box average of y, normalised v / 127.5 - 1
//   y      [n, C, s, s]      normalised v / 127.5 - 1 (the prior's input)
//   target [n, C, s, s]      the same values as bytes (the cross-entropy targets)
// Written into caller-owned buffers: nothing is allocated per step.
#pragma once
#include <cstdint>
#include <vector>

#include "data/preprocess.h"

namespace prsr {

template <class T>
void make_batch(const uint8_t* const* images, int n, int C, int S, T* x, T* y, uint8_t* target) {
  const int L = S / 4;
  uint8_t low[64 * 64 * 3];  // L*L*C, L <= 64
  for (int b = 0; b < n; ++b) {
    const uint8_t* img = images[b];
    data::box_downsample4(img, S, C, low);
    for (int c = 0; c < C; ++c) {
      for (int p = 0; p < S * S; ++p) {
        const uint8_t v = img[size_t(p) * C + c];
        const size_t o = (size_t(b) * C + c) * S * S + p;
        target[o] = v;
        y[o] = T(v) / T(127.5) - T(1);
      }
      for (int p = 0; p < L * L; ++p) x[(size_t(b) * C + c) * L * L + p] = T(low[size_t(p) * C + c]) / T(127.5) - T(1);
    }
  }
}

// Convenience for tests and tools: n contiguous HWC images, vectors resized to fit.
template <class T>
void make_batch_vec(const uint8_t* hwc, int n, int C, int S, std::vector<T>& x, std::vector<T>& y,
                    std::vector<uint8_t>& target) {
  std::vector<const uint8_t*> ptrs(n);
  for (int b = 0; b < n; ++b) ptrs[b] = hwc + size_t(b) * S * S * C;
  x.resize(size_t(n) * C * (S / 4) * (S / 4));
  y.resize(size_t(n) * C * S * S);
  target.resize(size_t(n) * C * S * S);
  make_batch<T>(ptrs.data(), n, C, S, x.data(), y.data(), target.data());
}

}  // namespace prsr
