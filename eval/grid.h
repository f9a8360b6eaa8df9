// PNG grids of results: rows of equally sized tiles (uint8 HWC, C = 1 or 3) with a 2-pixel
// gap, written atomically. Grey tiles in an RGB grid are replicated.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace prsr {

struct Grid {
  int tile = 32;  // tile side in pixels (every tile is scaled to it by nearest neighbour)
  int gap = 2;
  std::vector<std::vector<data::Image>> rows;
  void add_row(std::vector<data::Image> row) { rows.push_back(std::move(row)); }
  data::Image render() const;  // RGB unless every tile is grey
  void write(const std::string& path) const { data::write_png(path, render()); }
};

// Wraps raw HWC pixels as an Image.
data::Image make_image(const uint8_t* px, int w, int h, int c);

}  // namespace prsr
