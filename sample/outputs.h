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

// <out-dir>/<input name>[_t<T>]_s<k>.png for every sample (the temperature only when there are
// several); an input name with subfolders ("sub/a", from --input DIR) gets them under --out-dir.
// Prints the "wrote N sample PNGs" line.
void write_sample_pngs(const Args& a, const ModelConfig& cfg, const std::vector<Input>& inputs, const Plan& plan,
                       const Samples& s);

}  // namespace prsr::sample_cli
