// ./build/sample's image files: the PNG grid (--out) and one PNG per sample (--out-dir).
#pragma once
#include <vector>

#include "model/config.h"
#include "sample/inputs.h"
#include "sample/options.h"
#include "sample/sampling.h"

namespace prsr::sample_cli {

// One row per input (with --eval only the first 16: a test split can have thousands):
// nearest | bicubic | samples, temperature by temperature | [resnet-l2 with --eval] | [ground
// truth where known]. Creates --out's folder; prints the "wrote ..." line.
void write_grid(const Args& a, const ModelConfig& cfg, const std::vector<Input>& inputs, const Plan& plan,
                const Samples& s);

// Before sampling: creates --out's folder and (without --eval) --out-dir, and checks that a
// file can be written in each (a probe file, removed again), so that an unusable output folder
// fails before any time is spent. Error: "cannot write to DIR: reason".
void check_outputs_writable(const Args& a);

// Sample j (= input * S + k) at temperature index t goes to
// <out-dir>/<input name>[_t<T>]_s<k>.png (the temperature only when there are several); an
// input name with subfolders ("sub/a", from --input DIR) gets them under --out-dir.
std::string sample_png_path(const Args& a, const std::vector<Input>& inputs, const Plan& plan, size_t t, int j);

// --skip-existing: the samples whose PNG is already in --out-dir, read back (an unreadable file
// or one of another size counts as missing and is redrawn), laid out as Samples::model with
// empty entries for the missing ones. Prints the one "--skip-existing: ..." line.
Samples find_existing(const Args& a, const ModelConfig& cfg, const std::vector<Input>& inputs, const Plan& plan);

// The PNGs of samples [first, first + n) at temperature index t, except those in `existing`
// (written atomically by data::write_png: a temp file, fsync, rename). Returns how many it wrote.
long write_batch_pngs(const Args& a, const ModelConfig& cfg, const std::vector<Input>& inputs, const Plan& plan,
                      size_t t, int first, int n, const std::vector<std::vector<uint8_t>>& s, const Samples& existing);

}  // namespace prsr::sample_cli
