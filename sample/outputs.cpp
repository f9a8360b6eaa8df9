#include "sample/outputs.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <system_error>

#include "data/image.h"
#include "engine/error.h"
#include "eval/bicubic.h"
#include "eval/grid.h"

namespace fs = std::filesystem;

namespace prsr::sample_cli {

void write_grid(const Args& a, const ModelConfig& cfg, const std::vector<Input>& inputs, const Plan& plan,
                const Samples& s) {
  const int C = cfg.colors, size = cfg.size, low = cfg.low(), S = plan.S;
  const bool l2_column = a.eval && !s.l2.empty();
  int with_y = 0;
  for (const Input& in : inputs) with_y += in.has_y();
  const size_t grid_rows = a.eval ? std::min<size_t>(inputs.size(), 16) : inputs.size();
  Grid grid;
  grid.tile = a.tile;
  std::vector<uint8_t> up(size_t(size) * size * C);
  for (size_t i = 0; i < grid_rows; ++i) {
    const Input& in = inputs[i];
    std::vector<data::Image> row;
    eval::nearest_upsample(in.x.data(), low, low, C, 4, up.data());
    row.push_back(make_image(up.data(), size, size, C));
    eval::bicubic_upsample(in.x.data(), low, low, C, 4, up.data());
    row.push_back(make_image(up.data(), size, size, C));
    for (size_t t = 0; t < plan.temps.size(); ++t)
      for (int k = 0; k < S; ++k) row.push_back(make_image(s.model[t][i * S + k].data(), size, size, C));
    if (l2_column) row.push_back(make_image(s.l2[i].data(), size, size, C));
    if (in.has_y()) row.push_back(make_image(in.y.data(), size, size, C));
    grid.add_row(std::move(row));
  }
  const fs::path out_parent = fs::path(a.out).parent_path();
  if (!out_parent.empty()) {
    std::error_code ec;
    fs::create_directories(out_parent, ec);
    if (ec) throw Error("cannot create " + out_parent.string() + ": " + ec.message());
  }
  grid.write(a.out);
  const size_t n_samples = plan.temps.size() * S;
  const size_t cols = 2 + n_samples + (l2_column ? 1 : 0) + (with_y ? 1 : 0);
  std::printf("wrote %s (%zu row%s x up to %zu tiles of %d px: nearest | bicubic | %zu sample%s%s%s)\n", a.out.c_str(),
              grid_rows, grid_rows == 1 ? "" : "s", cols, a.tile, n_samples, n_samples == 1 ? "" : "s",
              l2_column ? " | resnet-l2" : "", with_y ? " | ground truth" : "");
}

void write_sample_pngs(const Args& a, const ModelConfig& cfg, const std::vector<Input>& inputs, const Plan& plan,
                       const Samples& s) {
  const int C = cfg.colors, size = cfg.size, S = plan.S;
  std::error_code ec;
  fs::create_directories(a.out_dir, ec);
  if (ec) throw Error("cannot create " + a.out_dir + ": " + ec.message());
  long written = 0;
  for (size_t t = 0; t < plan.temps.size(); ++t)
    for (size_t i = 0; i < inputs.size(); ++i)
      for (int k = 0; k < S; ++k) {
        std::string name = inputs[i].name;
        if (plan.temps.size() > 1) name += "_t" + fmt_temperature(plan.temps[t]);
        name += "_s" + std::to_string(k) + ".png";
        const fs::path file = fs::path(a.out_dir) / name;  // name may hold subfolders ("sub/a_s0.png")
        if (file.parent_path() != fs::path(a.out_dir)) {
          fs::create_directories(file.parent_path(), ec);
          if (ec) throw Error("cannot create " + file.parent_path().string() + ": " + ec.message());
        }
        data::write_png(file.string(), make_image(s.model[t][i * S + k].data(), size, size, C));
        ++written;
      }
  std::printf("wrote %ld sample PNG%s (%dx%d) in %s/\n", written, written == 1 ? "" : "s", size, size,
              a.out_dir.c_str());
}

}  // namespace prsr::sample_cli
