// Shared by the study tests (test_study*.cpp): a temporary folder, a hand-made study (PNGs +
// manifest, no model needed), and ./build/study serve as a child process on an ephemeral port.
#pragma once
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "data/image.h"
#include "study/manifest.h"

namespace study_test {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() /
           ("prsr-" + tag + "-" + std::to_string(getpid()) + "-" + std::to_string(std::random_device{}()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& s) const { return (path / s).string(); }
};

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A 32x32 grey image of one value (real images bright, fakes dark: easy to tell apart).
inline prsr::data::Image flat_image(uint8_t v) {
  prsr::data::Image im;
  im.w = im.h = 32;
  im.c = 1;
  im.px.assign(32 * 32, v);
  return im;
}

// `inputs` inputs x the conditions (method, temperature) -> inputs * conditions.size() pairs.
inline std::vector<prsr::study::Pair> make_study(const std::string& dir, int inputs,
                                                 const std::vector<std::pair<std::string, std::string>>& conditions) {
  fs::create_directories(fs::path(dir) / "images");
  std::vector<prsr::study::Pair> pairs;
  for (int i = 0; i < inputs; ++i) {
    const std::string real = "images/real_" + std::to_string(i) + ".png";
    prsr::data::write_png((fs::path(dir) / real).string(), flat_image(uint8_t(200 + i % 50)));
    for (size_t c = 0; c < conditions.size(); ++c) {
      prsr::study::Pair p;
      p.id = int(pairs.size());
      p.input = i;
      p.method = conditions[c].first;
      p.temperature = conditions[c].second;
      p.real = real;
      p.fake = "images/fake_" + std::to_string(i) + "_" + std::to_string(c) + ".png";
      prsr::data::write_png((fs::path(dir) / p.fake).string(), flat_image(uint8_t(10 + c)));
      pairs.push_back(p);
    }
  }
  prsr::study::write_manifest(dir, pairs);
  return pairs;
}

// ./build/study serve DIR --port 0 as a child; stdout and stderr to files in `logdir`.
struct Server {
  pid_t pid = -1;
  int port = 0;
  std::string out_path, err_path;

  Server(const std::string& dir, const std::string& logdir, const std::vector<std::string>& extra = {}) {
    static int n = 0;
    ++n;
    out_path = logdir + "/serve" + std::to_string(n) + ".out";
    err_path = logdir + "/serve" + std::to_string(n) + ".err";
    std::vector<std::string> args = {PRSR_STUDY_BIN, "serve", dir, "--port", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid = fork();
    if (pid == 0) {
      FILE* o = std::freopen(out_path.c_str(), "w", stdout);
      FILE* e = std::freopen(err_path.c_str(), "w", stderr);
      (void)o;
      (void)e;
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    // Wait (at most 20 s) for "serving http://127.0.0.1:PORT/".
    for (int i = 0; i < 400 && port == 0; ++i) {
      const std::string out = slurp(out_path);
      const size_t at = out.find("serving http://127.0.0.1:");
      if (at != std::string::npos && out.find('/', at + 25) != std::string::npos)
        port = std::atoi(out.c_str() + at + 25);
      else if (waitpid(pid, nullptr, WNOHANG) == pid) {
        pid = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  // Sends `sig` and waits; returns the exit code (128 + signal when killed by one).
  int stop(int sig = SIGINT) {
    if (pid <= 0) return -1;
    kill(pid, sig);
    int st = 0;
    waitpid(pid, &st, 0);
    pid = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  bool alive() const { return pid > 0 && waitpid(pid, nullptr, WNOHANG) == 0; }
  ~Server() {
    if (pid > 0) stop(SIGKILL);
  }
};

// A rater id of 32 hex digits made from n (tests pick their raters).
inline std::string rater(int n) {
  char s[40];
  std::snprintf(s, sizeof s, "%032x", n + 0xabc000);
  return s;
}

}  // namespace study_test
