// A prepared study folder (docs/study.md): manifest.tsv lists the pairs, each a real 32x32
// image and one method's output for the same 8x8 input, as PNG paths relative to the folder.
//
//   pair  input  method  temperature  real                      fake
//   0     4127   prsr    1.0          images/real/test_04127.png images/prsr_t1.0/test_04127.png
//   1     4127   l2      -            images/real/test_04127.png images/l2/test_04127.png
//
// Tab-separated, the header line exactly as above; pair ids are 0..P-1 in file order; method is
// prsr (the PixelCNN model, one row per temperature), l2 (the ResNet-L2 baseline) or bicubic;
// temperature is the text written by prepare ("1.0", "0.9") or "-" for the deterministic ones.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cli/args.h"

namespace prsr::study {

struct Pair {
  int id = 0;
  int input = 0;            // index of the input image in the data set split
  std::string method;       // "prsr" | "l2" | "bicubic"
  std::string temperature;  // "1.0"... for prsr, "" for l2 and bicubic ("-" in the file)
  std::string real, fake;   // paths relative to the study folder
};

constexpr const char* kManifestName = "manifest.tsv";
constexpr const char* kDatabaseName = "answers.sqlite";

// A condition of the report: "prsr t=1.0", "l2", "bicubic".
std::string condition_label(const std::string& method, const std::string& temperature);

// Writes DIR/manifest.tsv atomically (temporary file, then rename): a folder that has one is a
// complete study.
void write_manifest(const std::string& dir, const std::vector<Pair>& pairs);

// Reads DIR/manifest.tsv. Every problem is a prsr::Error naming DIR and the line: no such
// folder, no manifest ("not a prepared study: run study prepare ... --out DIR"), a wrong
// header, a malformed line, pair ids not 0..P-1, an unknown method, no pairs.
std::vector<Pair> read_manifest(const std::string& dir);

// FNV-1a 64 of the manifest's bytes, 16 hex digits: stored in the answer database so answers
// are never mixed with another study's pairs.
std::string manifest_id(const std::string& dir);

using cli::fmt_temperature;  // cli/args.h: "1.0", "0.9", "1e-05"

}  // namespace prsr::study
