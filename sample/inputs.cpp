#include "sample/inputs.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <system_error>

#include "data/dataset.h"
#include "data/image.h"
#include "data/preprocess.h"
#include "engine/error.h"
#include "eval/grid.h"

namespace fs = std::filesystem;

namespace prsr::sample_cli {

namespace {

data::Image to_colors(const data::Image& im, int C, ColourNotes& notes) {
  if (im.c == C) return im;
  if (C == 1) {
    ++notes.to_grey;
    return data::to_gray(im);
  }
  ++notes.to_rgb;
  return data::to_rgb(im);
}

// docs/design.md 2: y = area resize of the centre square to size x size; x = 4x4 box average of y.
Input input_from_image(const data::Image& decoded, const std::string& name, int C, int size, ColourNotes& notes) {
  const int low = size / 4;
  data::Image im = to_colors(decoded, C, notes);
  Input in;
  in.name = name;
  if (im.w == low && im.h == low) {
    in.x = im.px;
    return in;
  }
  if (std::min(im.w, im.h) < size) ++notes.upscaled;
  const data::Image y = data::area_resize(data::center_square_crop(im), size, size);
  in.y = y.px;
  in.x.resize(size_t(low) * low * C);
  data::box_downsample4(in.y.data(), size, C, in.x.data());
  return in;
}

}  // namespace

std::vector<Input> inputs_from_path(const std::string& path, int C, int size, ColourNotes& notes) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(path + ": no such file or directory");
  if (!fs::is_directory(path, ec)) {
    return {input_from_image(data::read_image(path), fs::path(path).stem().string(), C, size, notes)};
  }
  // The data set's lister (folder:DIR reads the same files): subfolders included, sorted.
  const std::vector<std::string> files = data::list_image_files(path);
  if (files.empty()) throw Error(path + ": no .png / .jpg / .jpeg files in the folder or its subfolders");
  // A sample's name is the file's path under DIR without its extension ("sub/a"), so the
  // outputs mirror DIR's subfolders; two files with the same stem in one folder (a.png, a.jpg)
  // keep their extension ("sub/a.png").
  auto without_ext = [](const std::string& rel) { return fs::path(rel).replace_extension().generic_string(); };
  std::map<std::string, int> stems;
  for (const std::string& rel : files) ++stems[without_ext(rel)];
  std::vector<Input> out;
  std::vector<std::string> errors;
  for (const std::string& rel : files) {
    const std::string stem = without_ext(rel), name = stems[stem] > 1 ? rel : stem;
    try {
      out.push_back(input_from_image(data::read_image((fs::path(path) / rel).string()), name, C, size, notes));
    } catch (const Error& e) { errors.push_back(e.what()); }
  }
  if (out.empty())  // one line: the count and the first reason
    throw Error(path + ": none of the " + std::to_string(files.size()) + " image files could be read (" + errors[0] +
                (errors.size() > 1 ? ", ..." : "") + ")");
  for (const std::string& e : errors) std::fprintf(stderr, "warning: skipping %s\n", e.c_str());
  if (!errors.empty())
    std::fprintf(stderr, "%s: skipped %zu unreadable file%s, kept %zu\n", path.c_str(), errors.size(),
                 errors.size() == 1 ? "" : "s", out.size());
  return out;
}

std::vector<Input> inputs_from_data(const Args& a, int C, int size, ColourNotes& notes, std::string& label) {
  data::DataOptions o;
  o.spec = a.data;
  o.data_dir = a.data_dir;
  o.cache_dir = a.cache_dir;
  o.lsun_category = a.lsun_category;
  o.limit = a.limit;
  const data::Split split = data::parse_split(a.split);
  const data::Dataset d = data::load_dataset(o, split);
  if (d.size != size)
    throw Error(a.data + ": images are " + std::to_string(d.size) + "x" + std::to_string(d.size) +
                " but the model makes " + std::to_string(size) + "x" + std::to_string(size));
  const int n = a.count == 0 ? d.n : std::min(a.count, d.n);
  if (a.count_given && a.count > d.n)
    std::fprintf(stderr, "note: the %s split of %s has %d images; using all of them\n", a.split.c_str(), a.data.c_str(),
                 d.n);
  label = d.name + " " + a.split + ", " + std::to_string(n) + " of " + std::to_string(d.n) + " images";
  std::vector<Input> out;
  out.reserve(n);
  const int low = size / 4;
  for (int i = 0; i < n; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "%s_%05d", a.split.c_str(), i);
    const data::Image im = to_colors(make_image(d.image(i), d.size, d.size, d.colors), C, notes);
    Input in;
    in.name = name;
    in.y = im.px;
    in.x.resize(size_t(low) * low * C);
    data::box_downsample4(in.y.data(), size, C, in.x.data());
    out.push_back(std::move(in));
  }
  return out;
}

std::vector<Input> read_inputs(const Args& a, int C, int size, std::string& label) {
  ColourNotes notes;
  std::vector<Input> inputs;
  if (!a.input.empty()) {
    inputs = inputs_from_path(a.input, C, size, notes);
    label = a.input;
  } else {
    inputs = inputs_from_data(a, C, size, notes, label);
  }
  if (notes.to_grey)
    std::printf("note: %d RGB input%s converted to grey (the model is C = 1): 0.299 R + 0.587 G + 0.114 B\n",
                notes.to_grey, notes.to_grey == 1 ? "" : "s");
  if (notes.to_rgb)
    std::printf("note: %d grey input%s replicated to RGB (the model is C = 3)\n", notes.to_rgb,
                notes.to_rgb == 1 ? "" : "s");
  if (notes.upscaled)
    std::printf("note: %d input%s smaller than %dx%d: the ground truth is an upscaled image\n", notes.upscaled,
                notes.upscaled == 1 ? "" : "s", size, size);
  int with_y = 0;
  for (const Input& in : inputs) with_y += in.has_y();
  std::printf("inputs: %zu (%d with ground truth) from %s\n", inputs.size(), with_y, label.c_str());
  return inputs;
}

}  // namespace prsr::sample_cli
