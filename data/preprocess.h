// The exact preprocessing of docs/design.md section 2: crops, area resize, the 4x4 box downsample
// that makes the 8x8 input x from its 32x32 target y, and the Fashion-MNIST padding.
#pragma once
#include <cstdint>

#include "data/image.h"

namespace prsr::data {

// Bumped whenever any function below (or a data set's recipe in dataset.cpp) changes the
// pixels it produces: it is part of every cache key, so old caches are rebuilt.
constexpr int kPreprocessVersion = 1;

// The w x h box with top-left corner (x, y). Throws prsr::Error if it is not inside the image.
Image crop(const Image& img, int x, int y, int w, int h);

// The largest centred square: side s = min(w, h), corner ((w - s) / 2, (h - s) / 2)
// (integer division: an odd margin leaves the extra pixel on the right / bottom).
Image center_square_crop(const Image& img);

// Area resize: each output pixel is the mean of the input area it covers, input pixels
// partially covered weighted by the covered fraction, rounded half up (floor(v + 0.5)).
// Computed exactly: in units of 1 / (out_w * out_h) of an input pixel every overlap is an
// integer, so the mean is an exact fraction and its rounding never depends on float error.
// Works for up- and downscaling and any ratio.
Image area_resize(const Image& img, int out_w, int out_h);

// y: size x size x C (HWC), x: (size/4) x (size/4) x C; every value is
// (sum of the 16 values of its 4x4 block + 8) / 16 in integers (the mean, rounded half up).
// size must be a multiple of 4. Used with size = 32 to make the 8x8 input.
void box_downsample4(const uint8_t* y, int size, int C, uint8_t* x);

// Zero border of p pixels on every side.
Image zero_pad(const Image& img, int p);

// Fashion-MNIST: 28x28 grey -> 32x32 grey, zero-padded by 2 on every side.
void pad28_to_32(const uint8_t* src28, uint8_t* dst32);

// The recipes of the data sets, from a decoded image to the 32x32 target:
//   CelebA: RGB, crop 138x138 at (20, 40), area resize to 32x32.
//   Folder: RGB, centre square crop, area resize to 32x32.
Image celeba_preprocess(const Image& decoded);
Image folder_preprocess(const Image& decoded);

}  // namespace prsr::data
