// Image I/O: decode PNG / JPEG (detected by magic bytes) into 8-bit HWC pixels, write PNG
// atomically, and the two colour conversions the data sets need.
//
// Every failure (missing file, corrupt or truncated data, unsupported format, unwritable
// folder) throws prsr::Error with a one-line message naming the path and the reason.
// libpng / libjpeg errors are caught in C-style functions that hold no C++ objects and are
// turned into exceptions there: nothing longjmps over a destructor, nothing calls exit().
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace prsr::data {

// Interleaved HWC pixels, row-major, c = 1 (grey) or 3 (RGB); px.size() == w * h * c.
struct Image {
  int w = 0, h = 0, c = 0;
  std::vector<uint8_t> px;
  uint8_t* at(int x, int y) { return px.data() + ((size_t)y * w + x) * c; }
  const uint8_t* at(int x, int y) const { return px.data() + ((size_t)y * w + x) * c; }
};

// Decodes a PNG or JPEG file (the format is taken from the first bytes, not the extension).
//   PNG : grey / RGB; 1, 2, 4, 8 and 16 bits (16 -> 8 rounded: round(v * 255 / 65535));
//         palette -> RGB; alpha (and tRNS) is dropped, not composited; interlaced is fine.
//         Grey and grey+alpha give c = 1, everything else c = 3.
//   JPEG: grey -> c = 1; YCbCr / RGB -> c = 3; CMYK / YCCK -> RGB (c = 3), Adobe inverted
//         CMYK when the file carries the Adobe marker, plain CMYK otherwise.
//         Any libjpeg warning (corrupt data, premature end of file) is treated as an error:
//         a data set wants no half-grey images.
Image read_image(const std::string& path);

// Same, from bytes already in memory; `name` is used in error messages.
Image decode_image(const uint8_t* data, size_t size, const std::string& name);

// Writes an 8-bit grey (c = 1) or RGB (c = 3) PNG. Atomic: written to a temporary file in the
// same folder, flushed and fsync'ed, then renamed over `path`.
void write_png(const std::string& path, const Image& img);

// c = 1 -> RGB by replication; c = 3 -> copy.
Image to_rgb(const Image& img);
// c = 3 -> grey = round(0.299 R + 0.587 G + 0.114 B), computed exactly in integers as
// (299 R + 587 G + 114 B + 500) / 1000; c = 1 -> copy.
Image to_gray(const Image& img);

}  // namespace prsr::data
