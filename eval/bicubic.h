// Baseline upsamplers (docs/design.md section 4; docs/metrics.md has the exact definitions).
// Images are uint8, HWC interleaved, C = 1 or 3; out is (w*scale) x (h*scale) x C.
#pragma once
#include <cstdint>

namespace prsr::eval {

// Keys cubic convolution, a = -0.5 (as PIL and Matlab), pixel-centre alignment
// src = (dst + 0.5)/scale - 0.5, borders replicated (index clamp), separable (x then y) in
// double, result rounded half up and clamped to 0..255.
void bicubic_upsample(const uint8_t* x, int w, int h, int C, int scale, uint8_t* out);

// Each input pixel repeated scale x scale times.
void nearest_upsample(const uint8_t* x, int w, int h, int C, int scale, uint8_t* out);

}  // namespace prsr::eval
