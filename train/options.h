// ./build/train's command line: the options with their defaults, the flag table that --help
// prints, parsing with one clear error per mistake (UsageError, exit status 2).
#pragma once
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/optim.h"
#include "model/config.h"

namespace prsr::train_cli {

constexpr int kExitOk = 0;
constexpr int kExitError = 1;  // runtime error: data, checkpoint, I/O, NaN loss
constexpr int kExitUsage = 2;  // bad command line, device not available
// Interrupted by a signal: 128 + signal number (130 for SIGINT, 143 for SIGTERM), after the
// checkpoint has been written.

struct UsageError : Error {
  explicit UsageError(const std::string& m) : Error(m) {}
};

struct Options {
  std::string data = "fashion-mnist";
  std::string data_dir;  // "" = the data set's default place
  std::string cache_dir = "datasets/cache";
  std::string lsun_category = "bedroom";  // --data lsun: <category>_{train,val}_lmdb
  long limit = 0;                         // --data lsun: only the first N train records (0 = all)
  std::string device = "cpu";
  std::string precision = "fp32";  // fp32 | bf16 (CPU convolutions, AVX512_BF16 / AMX-BF16 only)
  long steps = 200000;
  int batch = 32;
  std::string out;   // "" = runs/<data name>
  std::string ckpt;  // "" = OUT/model.bin
  bool resume = false;
  bool overwrite = false;
  uint64_t seed = 1;
  int threads = 0;          // 0 = all cores
  prsr::ModelConfig model;  // colors is set from the data set
  prsr::OptimConfig optim;
  long eval_every = 500;
  long sample_every = 1000;
  long ckpt_every = 1000;
  long print_every = 10;
  int valid_count = 256;
  int sample_rows = 8;
  long rank_timeout = 600;      // seconds a collective may wait under mpirun (0 = forever)
  long debug_nan_at_step = -1;  // hidden: poison a parameter before this step
  bool help = false;
  std::set<std::string> given;  // flags given on the command line
};

// One flag: its name, the value it takes ("" = a switch), the help line, the default as shown,
// and what it does with its value.
struct Flag {
  std::string name, value, help, def;
  std::function<void(const std::string&)> set;
  bool hidden = false;
  std::string group;
};

long parse_long(const std::string& flag, const std::string& v, long lo, long hi);
uint64_t parse_u64(const std::string& flag, const std::string& v);
std::string fmt_g(double v);  // shortest round-trip form of a number, as --help shows defaults
// Parses argv; with --help prints the flag table and returns with help = true.
Options parse_args(int argc, char** argv);

}  // namespace prsr::train_cli
