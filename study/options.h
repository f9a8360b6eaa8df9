// ./build/study's command line: one of three commands, each with its own flags (docs/study.md).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace prsr::study {

struct PrepareArgs {
  std::string ckpt, baseline_ckpt;  // the PixelCNN model; the optional ResNet-L2 baseline
  std::string data, data_dir, cache_dir;
  std::string split = "test";
  int count = 50;  // inputs picked at random from the split
  std::vector<float> temperatures{1.0f};
  bool bicubic = false;
  std::string out;
  uint64_t seed = 0;  // picks the inputs and seeds the samples
  int batch = 16;
  std::string device = "cpu";
};

struct ServeArgs {
  std::string dir;
  int port = 8080;  // 0: any free port (printed)
  std::string bind = "127.0.0.1";
  int show_ms = 1000;  // how long the two images are shown; 0: until the choice
};

struct Args {
  std::string command;  // "prepare" | "serve" | "report" | "" (help)
  bool help = false;
  PrepareArgs prepare;
  ServeArgs serve;
  std::string report_dir;
};

// Throws prsr::Error with one line for an unknown command or flag, a missing or bad value.
Args parse_args(int argc, char** argv);
void print_help(const std::string& command);  // "" for the overview

}  // namespace prsr::study
