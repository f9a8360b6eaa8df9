// ./build/sample's command line: the options with their defaults, the --help text, parsing with
// one error per mistake (an Error: "error: ..." and exit code 1, like every other error here).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cli/args.h"

namespace prsr::sample_cli {

struct Args {
  std::string ckpt;
  std::string input;  // FILE or DIR
  std::string data;   // data set spec
  std::string data_dir, cache_dir;
  std::string lsun_category = "bedroom";  // --data lsun
  long limit = 0;                         // --data lsun: train split = first N train records
  std::string split = "test";
  int count = -1;  // -1: default (8, 100 with --eval, 0 with --nll); 0: the whole split
  bool count_given = false;
  std::vector<float> temperatures;  // empty: default (1.0, or 1.0,0.9,0.8 with --eval)
  std::string temperature_text;
  int samples = -1;  // -1: default (3, or 1 with --eval)
  std::string mode = "sample";
  std::string out;  // default samples.png (eval.png with --eval)
  std::string out_dir = "samples";
  std::string device = "cpu";
  std::string precision = "fp32";  // fp32 | bf16 (CPU convolutions, AVX512_BF16 / AMX-BF16 only)
  uint64_t seed = 0;
  int batch = 16;
  int tile = 64;
  bool naive = false;
  bool skip_existing = false;  // --skip-existing: samples whose PNG is already in --out-dir are not redone
  int threads = 0;             // OpenMP threads (0 = all cores)
  bool eval = false;
  bool nll = false;  // --nll: bits/dim of A + B and of A alone on the split, no sampling
  std::string baseline_ckpt;
  bool help = false;
};

void print_help();
using cli::parse_int;           // cli/args.h
using cli::parse_temperatures;  // distinct numbers > 0
// Parses argv and fills in the defaults that depend on --eval. With --help it returns (help =
// true) once every flag is read, before the checks that tie flags together.
Args parse_args(int argc, char** argv);

}  // namespace prsr::sample_cli
