#include "sample/outputs.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
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

namespace {

// Creates `dir` (and its parents) and writes and removes a probe file in it.
void check_writable_dir(const fs::path& dir) {
  const std::string shown = dir.empty() ? std::string(".") : dir.string();
  std::error_code ec;
  if (!dir.empty()) fs::create_directories(dir, ec);
  if (ec) throw Error("cannot write to " + shown + ": " + ec.message());
  const fs::path probe = dir / (".prsr-write-test-" + std::to_string(::getpid()));
  std::FILE* f = std::fopen(probe.string().c_str(), "wb");
  if (!f) throw Error("cannot write to " + shown + ": " + std::strerror(errno));
  std::fclose(f);
  fs::remove(probe, ec);
}

}  // namespace

void check_outputs_writable(const Args& a) {
  check_writable_dir(fs::path(a.out).parent_path());
  if (!a.eval) check_writable_dir(fs::path(a.out_dir));
}

std::string sample_png_path(const Args& a, const std::vector<Input>& inputs, const Plan& plan, size_t t, int j) {
  std::string name = inputs[size_t(j / plan.S)].name;
  if (plan.temps.size() > 1) name += "_t" + fmt_temperature(plan.temps[t]);
  name += "_s" + std::to_string(j % plan.S) + ".png";
  return (fs::path(a.out_dir) / name).string();  // name may hold subfolders ("sub/a_s0.png")
}

Samples find_existing(const Args& a, const ModelConfig& cfg, const std::vector<Input>& inputs, const Plan& plan) {
  const int per_t = int(inputs.size()) * plan.S;
  Samples have;
  have.model.assign(plan.temps.size(), std::vector<std::vector<uint8_t>>(size_t(per_t)));
  long found = 0, inputs_done = 0;
  std::vector<int> per_input(inputs.size(), 0);
  for (size_t t = 0; t < plan.temps.size(); ++t)
    for (int j = 0; j < per_t; ++j) {
      const std::string path = sample_png_path(a, inputs, plan, t, j);
      std::error_code ec;
      if (!fs::is_regular_file(path, ec)) continue;
      try {
        data::Image im = data::read_image(path);
        if (im.w != cfg.size || im.h != cfg.size || im.c != cfg.colors) continue;  // not one of ours: redraw
        have.model[t][size_t(j)] = std::move(im.px);
        ++found;
        ++per_input[size_t(j / plan.S)];
      } catch (const Error&) {  // unreadable: redraw it
      }
    }
  const int want = plan.S * int(plan.temps.size());
  for (int c : per_input) inputs_done += c == want;
  std::printf("--skip-existing: %ld of %ld sample PNGs already in %s/ (%ld of %zu inputs done): not drawn again\n",
              found, long(per_t) * long(plan.temps.size()), a.out_dir.c_str(), inputs_done, inputs.size());
  return have;
}

long write_batch_pngs(const Args& a, const ModelConfig& cfg, const std::vector<Input>& inputs, const Plan& plan,
                      size_t t, int first, int n, const std::vector<std::vector<uint8_t>>& s, const Samples& existing) {
  const int C = cfg.colors, size = cfg.size;
  long written = 0;
  for (int j = first; j < first + n; ++j) {
    if (!existing.model.empty() && !existing.model[t][size_t(j)].empty()) continue;
    const fs::path file = sample_png_path(a, inputs, plan, t, j);
    if (file.parent_path() != fs::path(a.out_dir)) {
      std::error_code ec;
      fs::create_directories(file.parent_path(), ec);
      if (ec) throw Error("cannot create " + file.parent_path().string() + ": " + ec.message());
    }
    data::write_png(file.string(), make_image(s[size_t(j)].data(), size, size, C));
    ++written;
  }
  return written;
}

}  // namespace prsr::sample_cli
