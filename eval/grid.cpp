#include "eval/grid.h"

#include <algorithm>

#include "engine/error.h"

namespace prsr {

data::Image make_image(const uint8_t* px, int w, int h, int c) {
  data::Image im;
  im.w = w;
  im.h = h;
  im.c = c;
  im.px.assign(px, px + size_t(w) * h * c);
  return im;
}

data::Image Grid::render() const {
  check(!rows.empty(), "grid: nothing to draw");
  size_t cols = 0;
  bool all_grey = true;
  for (auto& r : rows) {
    cols = std::max(cols, r.size());
    for (auto& t : r) all_grey = all_grey && t.c == 1;
  }
  data::Image out;
  out.c = all_grey ? 1 : 3;
  out.w = int(cols) * tile + (int(cols) + 1) * gap;
  out.h = int(rows.size()) * tile + (int(rows.size()) + 1) * gap;
  out.px.assign(size_t(out.w) * out.h * out.c, 255);  // white background and gaps
  for (size_t r = 0; r < rows.size(); ++r)
    for (size_t k = 0; k < rows[r].size(); ++k) {
      const data::Image& t = rows[r][k];
      check(t.w > 0 && t.h > 0 && (t.c == 1 || t.c == 3), "grid: bad tile");
      const int x0 = gap + int(k) * (tile + gap), y0 = gap + int(r) * (tile + gap);
      for (int y = 0; y < tile; ++y)
        for (int x = 0; x < tile; ++x) {
          const uint8_t* s = t.at(x * t.w / tile, y * t.h / tile);
          uint8_t* d = out.at(x0 + x, y0 + y);
          for (int c = 0; c < out.c; ++c) d[c] = s[t.c == 1 ? 0 : c];
        }
    }
  return out;
}

}  // namespace prsr
