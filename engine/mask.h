// Colour masks (docs/design.md 1.2). Channel f of a layer with P channels per period is in colour group
// (f mod P) * C / P. At the current-pixel tap (tap_y, tap_x) output group g may read input group
// g' only if g' < g (mask A) or g' <= g (mask B); every other tap is unmasked. A masked conv is
// conv2d(x, mul(w, mask)): the same kernels, and no gradient reaches the masked weights.
#pragma once
#include <vector>

#include "engine/error.h"

namespace prsr {

enum class MaskKind { None, A, B };

struct MaskSpec {
  MaskKind kind = MaskKind::None;
  int colors = 1;
  int period_in = 1, period_out = 1;  // channels per colour period of input / output
  int tap_y = 0, tap_x = 0;           // the kernel tap that sees the current pixel
};

inline int colour_group(int f, int period, int colors) { return (f % period) * colors / period; }

// 1 where the weight [o, i, ky, kx] is allowed, 0 where it is masked; layout [co, ci, kh, kw].
template <class T>
std::vector<T> colour_mask(int co, int ci, int kh, int kw, const MaskSpec& m) {
  check(m.tap_y >= 0 && m.tap_y < kh && m.tap_x >= 0 && m.tap_x < kw, "colour_mask: tap outside the kernel");
  std::vector<T> mask(size_t(co) * ci * kh * kw, T(1));
  if (m.kind == MaskKind::None) return mask;
  for (int o = 0; o < co; ++o)
    for (int i = 0; i < ci; ++i) {
      const int go = colour_group(o, m.period_out, m.colors), gi = colour_group(i, m.period_in, m.colors);
      const bool allowed = m.kind == MaskKind::A ? gi < go : gi <= go;
      if (!allowed) mask[((size_t(o) * ci + i) * kh + m.tap_y) * kw + m.tap_x] = T(0);
    }
  return mask;
}

}  // namespace prsr
