// ./build/sample's inputs: 8x8 low-res images with, where known, their 32x32 ground truth, from
// a PNG/JPEG file, a folder of them, or the first images of a data set split (docs/design.md 2).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "sample/options.h"

namespace prsr::sample_cli {

// One low-res input x (low x low x C) and, when known, its ground truth y (size x size x C).
struct Input {
  std::string name;  // used for the per-sample file names
  std::vector<uint8_t> x, y;
  bool has_y() const { return !y.empty(); }
};

// How many inputs were converted to the model's colours, or were smaller than its output.
struct ColourNotes {
  int to_grey = 0, to_rgb = 0, upscaled = 0;
};

// --input or --data (the two below), then the note lines on stdout (inputs converted to the
// model's colours, inputs smaller than its output) and "inputs: N (M with ground truth) from
// LABEL". `label` says where the inputs came from.
std::vector<Input> read_inputs(const Args& a, int C, int size, std::string& label);

// --input: one file, or every .png/.jpg/.jpeg in a folder and its subfolders (data::
// list_image_files, as --data folder:DIR; sorted by relative path; unreadable ones are skipped
// with a warning unless none can be read). A file's name is its path under the folder without
// the extension ("sub/a"): the per-sample PNGs mirror the subfolders.
std::vector<Input> inputs_from_path(const std::string& path, int C, int size, ColourNotes& notes);
// --data: the first a.count images of a.split (all of them with 0); `label` says which.
std::vector<Input> inputs_from_data(const Args& a, int C, int size, ColourNotes& notes, std::string& label);

}  // namespace prsr::sample_cli
