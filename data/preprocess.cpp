#include "data/preprocess.h"

#include <algorithm>
#include <string>
#include <vector>

#include "engine/error.h"

namespace prsr::data {

Image crop(const Image& img, int x, int y, int w, int h) {
  if (x < 0 || y < 0 || w <= 0 || h <= 0 || x > img.w - w || y > img.h - h)
    throw Error("crop " + std::to_string(w) + "x" + std::to_string(h) + " at (" + std::to_string(x) + ", " +
                std::to_string(y) + ") does not fit in a " + std::to_string(img.w) + "x" + std::to_string(img.h) +
                " image");
  Image out;
  out.w = w;
  out.h = h;
  out.c = img.c;
  out.px.resize((size_t)w * h * img.c);
  for (int r = 0; r < h; ++r) {
    const uint8_t* src = img.at(x, y + r);
    std::copy(src, src + (size_t)w * img.c, out.px.begin() + (size_t)r * w * img.c);
  }
  return out;
}

Image center_square_crop(const Image& img) {
  const int s = img.w < img.h ? img.w : img.h;
  return crop(img, (img.w - s) / 2, (img.h - s) / 2, s, s);
}

namespace {

// 1-D area weights. Scale coordinates by `out`: input pixel i spans [i*out, (i+1)*out) and
// output pixel o spans [o*in, (o+1)*in); the overlap is an integer in [0, out] and the weights
// of one output pixel sum to `in`.
struct Tap {
  int src;
  int64_t weight;
};
std::vector<std::vector<Tap>> area_taps(int in, int out) {
  std::vector<std::vector<Tap>> taps((size_t)out);
  for (int o = 0; o < out; ++o) {
    const int64_t lo = (int64_t)o * in, hi = (int64_t)(o + 1) * in;
    for (int64_t i = lo / out; i < in && i * out < hi; ++i) {
      const int64_t a = std::max(lo, i * out), b = std::min(hi, (i + 1) * out);
      if (b > a) taps[(size_t)o].push_back({(int)i, b - a});
    }
  }
  return taps;
}

}  // namespace

Image area_resize(const Image& img, int out_w, int out_h) {
  check(out_w > 0 && out_h > 0, "area_resize: output size must be positive");
  check(img.w > 0 && img.h > 0 && img.c > 0 && img.px.size() == (size_t)img.w * img.h * img.c,
        "area_resize: empty or inconsistent input image");
  const int C = img.c;
  const auto tx = area_taps(img.w, out_w), ty = area_taps(img.h, out_h);
  // Horizontal pass: row sums weighted by the x overlaps (each row's weights sum to img.w).
  std::vector<int64_t> rows((size_t)img.h * out_w * C);
  for (int y = 0; y < img.h; ++y)
    for (int ox = 0; ox < out_w; ++ox)
      for (int ch = 0; ch < C; ++ch) {
        int64_t s = 0;
        for (const Tap& t : tx[(size_t)ox]) s += t.weight * img.at(t.src, y)[ch];
        rows[((size_t)y * out_w + ox) * C + ch] = s;
      }
  // Vertical pass; the total weight of one output pixel is D = img.w * img.h.
  const int64_t D = (int64_t)img.w * img.h;
  Image out;
  out.w = out_w;
  out.h = out_h;
  out.c = C;
  out.px.resize((size_t)out_w * out_h * C);
  for (int oy = 0; oy < out_h; ++oy)
    for (int ox = 0; ox < out_w; ++ox)
      for (int ch = 0; ch < C; ++ch) {
        int64_t s = 0;
        for (const Tap& t : ty[(size_t)oy]) s += t.weight * rows[((size_t)t.src * out_w + ox) * C + ch];
        // floor(s / D + 1/2) = floor((2s + D) / 2D), s >= 0.
        out.px[((size_t)oy * out_w + ox) * C + ch] = (uint8_t)((2 * s + D) / (2 * D));
      }
  return out;
}

void box_downsample4(const uint8_t* y, int size, int C, uint8_t* x) {
  const int s4 = size / 4;
  for (int oy = 0; oy < s4; ++oy)
    for (int ox = 0; ox < s4; ++ox)
      for (int c = 0; c < C; ++c) {
        int sum = 0;
        for (int dy = 0; dy < 4; ++dy)
          for (int dx = 0; dx < 4; ++dx) sum += y[((size_t)(4 * oy + dy) * size + 4 * ox + dx) * C + c];
        x[((size_t)oy * s4 + ox) * C + c] = (uint8_t)((sum + 8) / 16);
      }
}

Image zero_pad(const Image& img, int p) {
  check(p >= 0, "zero_pad: negative padding");
  Image out;
  out.w = img.w + 2 * p;
  out.h = img.h + 2 * p;
  out.c = img.c;
  out.px.assign((size_t)out.w * out.h * out.c, 0);
  for (int r = 0; r < img.h; ++r) {
    const uint8_t* src = img.at(0, r);
    std::copy(src, src + (size_t)img.w * img.c, out.at(p, r + p));
  }
  return out;
}

void pad28_to_32(const uint8_t* src28, uint8_t* dst32) {
  std::fill(dst32, dst32 + 32 * 32, (uint8_t)0);
  for (int r = 0; r < 28; ++r) std::copy(src28 + r * 28, src28 + (r + 1) * 28, dst32 + (r + 2) * 32 + 2);
}

Image celeba_preprocess(const Image& decoded) { return area_resize(crop(to_rgb(decoded), 20, 40, 138, 138), 32, 32); }

Image folder_preprocess(const Image& decoded) { return area_resize(center_square_crop(to_rgb(decoded)), 32, 32); }

}  // namespace prsr::data
