// A temp folder holding a small synthetic Fashion-MNIST for the tests that run ./build/train
// (tests/test_cli_train.cpp, test_cli_mpi.cpp, test_gpu_mpi.cpp): the data set, the flags that
// point train at it, and running a command with its output kept per tag.
#pragma once

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/cli_run.h"

namespace prsr::test {

// Open MPI refuses to run as root (CI) without these; set for the child only. --oversubscribe:
// more ranks than the 2 cores here.
inline const std::string kMpirun = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe";

// A Fashion-MNIST idx file (gzip) of n synthetic 28x28 images: soft blobs of varying size and
// brightness (`salt` moves them), so that a model has something to learn.
inline void write_idx_gz(const std::string& path, int n, unsigned salt) {
  gzFile gz = gzopen(path.c_str(), "wb");
  REQUIRE(gz != nullptr);
  const uint8_t head[16] = {0, 0, 8, 3, uint8_t(n >> 24), uint8_t(n >> 16), uint8_t(n >> 8), uint8_t(n), 0, 0, 0, 28,
                            0, 0, 0, 28};
  gzwrite(gz, head, 16);
  std::vector<uint8_t> px(size_t(n) * 784);
  for (int i = 0; i < n; ++i)
    for (int y = 0; y < 28; ++y)
      for (int x = 0; x < 28; ++x) {
        const double cx = 14 + (i * 7 + salt) % 9 - 4, cy = 14 + (i * 5) % 7 - 3, r = 5 + i % 6;
        const double d = std::sqrt((x - cx) * (x - cx) + (y - cy) * (y - cy));
        px[size_t(i) * 784 + y * 28 + x] = uint8_t(d < r ? 120 + (i * 37) % 130 : (x * y + i) % 23);
      }
  gzwrite(gz, px.data(), unsigned(px.size()));
  gzclose(gz);
}

// "<temp>/<prefix>_<pid>_<k>" with data/ holding 48 training and 8 test images; removed at the end.
struct TrainSandbox {
  std::string dir;
  explicit TrainSandbox(const std::string& prefix) {
    static int counter = 0;
    dir = (std::filesystem::temp_directory_path() /
           (prefix + "_" + std::to_string(getpid()) + "_" + std::to_string(counter++)))
              .string();
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir + "/data");
    write_idx_gz(dir + "/data/train-images-idx3-ubyte.gz", 48, 0);
    write_idx_gz(dir + "/data/t10k-images-idx3-ubyte.gz", 8, 3);
  }
  ~TrainSandbox() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  TrainSandbox(const TrainSandbox&) = delete;
  TrainSandbox& operator=(const TrainSandbox&) = delete;

  std::string data_flags() const {
    return " --data fashion-mnist --data-dir " + dir + "/data --cache-dir " + dir + "/cache";
  }
  // Runs the shell command `cmd`, stdout / stderr to `tag`.out / `tag`.err in dir. Returns the
  // exit code (128 + the signal when the shell itself was killed).
  int run(const std::string& cmd, const std::string& tag) const {
    const int st = std::system((cmd + " >" + dir + "/" + tag + ".out 2>" + dir + "/" + tag + ".err").c_str());
    REQUIRE(st != -1);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  std::string out(const std::string& tag) const { return slurp(dir + "/" + tag + ".out"); }
  std::string err(const std::string& tag) const { return slurp(dir + "/" + tag + ".err"); }
};

}  // namespace prsr::test
