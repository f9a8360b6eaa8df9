// Running ./build/sample (or any binary) from a test: a temp folder per test, the command's
// exit code and output, and the "one error line" check every CLI test makes.
#pragma once

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace prsr::test {

// A fresh folder under the system temp dir ("<prefix>-<pid>-<random>"), removed at the end.
struct CliDir {
  std::filesystem::path path;
  explicit CliDir(const std::string& prefix) {
    path = std::filesystem::temp_directory_path() /
           (prefix + "-" + std::to_string(getpid()) + "-" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(path);
  }
  ~CliDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  CliDir(const CliDir&) = delete;
  CliDir& operator=(const CliDir&) = delete;
  std::string operator/(const std::string& s) const { return (path / s).string(); }
};

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The non-empty lines of `text`.
inline std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) out.push_back(l);
  return out;
}

struct RunResult {
  int rc = -1;
  std::string out, err;
};

// Runs `bin args` (args already quoted as needed) in dir, stdout and stderr to files there.
inline RunResult run_in(const CliDir& dir, const std::string& bin, const std::string& args) {
  const std::string out = dir / "stdout.txt", err = dir / "stderr.txt";
  const std::string cmd = "cd '" + dir.path.string() + "' && '" + bin + "' " + args + " >'" + out + "' 2>'" + err + "'";
  const int st = std::system(cmd.c_str());
  RunResult r;
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

// A failed run: non-zero exit and exactly one stderr line, "error: ...", containing `what`.
inline void check_one_error_line(const RunResult& r, const std::string& what) {
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.rc != 0);
  const std::vector<std::string> l = lines(r.err);
  REQUIRE(l.size() == 1);
  CHECK(l[0].rfind("error: ", 0) == 0);
  CHECK(l[0].find(what) != std::string::npos);
}

}  // namespace prsr::test
