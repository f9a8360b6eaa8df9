// study prepare: picks the inputs, samples every method, writes the PNGs and the manifest
// (study/manifest.h). The manifest is written last, so an interrupted prepare leaves a folder
// that serve and report refuse ("not a prepared study") and that prepare may fill again.
#pragma once
#include <cstdint>
#include <vector>

#include "study/options.h"

namespace prsr::study {

// `count` distinct indices of 0..n-1 drawn at random with `seed` (a seeded Fisher-Yates on
// splitmix64, the same on every platform), sorted.
std::vector<int> pick_inputs(int n, int count, uint64_t seed);

int run_prepare(const PrepareArgs& a);

}  // namespace prsr::study
