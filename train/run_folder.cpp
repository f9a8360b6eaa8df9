#include "train/run_folder.h"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "engine/error.h"

namespace fs = std::filesystem;

namespace prsr::train_cli {

namespace {

const char* kLogHeader = "step,loss,nll_bits,ce_a_bits,valid_loss,valid_bits,images_per_s,ms_per_step,lr,time";

}  // namespace

std::string data_run_name(const std::string& spec) {
  if (spec.rfind("folder:", 0) != 0) return spec;
  std::string p = spec.substr(7);
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  std::string base = fs::path(p).filename().string();
  for (char& ch : base)
    if (!std::isalnum((unsigned char)ch) && ch != '-' && ch != '_' && ch != '.') ch = '_';
  return "folder-" + (base.empty() ? std::string("root") : base);
}

void check_writable_dir(const std::string& dir, const char* what) {
  std::error_code ec;
  fs::path p = fs::absolute(dir, ec);
  while (!p.empty() && !fs::exists(p, ec) && p.has_parent_path() && p.parent_path() != p) p = p.parent_path();
  if (!fs::is_directory(p, ec))
    throw Error(std::string("cannot create ") + what + " " + dir + ": " + p.string() + " is not a folder");
  const std::string probe = (p / (".prsr-write-test-" + std::to_string(getpid()))).string();
  FILE* f = std::fopen(probe.c_str(), "wb");
  if (!f)  // the reason is fopen's own (/proc, say, answers "No such file or directory")
    throw Error(std::string("cannot create ") + what + " " + dir + ": cannot create a file in " + p.string() + " (" +
                std::strerror(errno) + ")");
  std::fclose(f);
  std::remove(probe.c_str());
}

void ensure_writable_dir(const std::string& dir, const char* what) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(std::string("cannot create ") + what + " " + dir + ": " + ec.message());
  check_writable_dir(dir, what);
}

std::string parent_dir(const std::string& path) {
  const std::string p = fs::path(path).parent_path().string();
  return p.empty() ? "." : p;
}

void prepare_log(const std::string& path, bool resume, long resume_step) {
  std::vector<std::string> keep{kLogHeader};
  if (resume) {
    std::ifstream in(path);
    std::string line;
    bool first = true;
    while (std::getline(in, line)) {
      if (first) {
        first = false;
        if (line == kLogHeader) continue;
      }
      if (line.empty()) continue;
      char* end = nullptr;
      const long s = std::strtol(line.c_str(), &end, 10);
      if (end != line.c_str() && *end == ',' && s <= resume_step) keep.push_back(line);
    }
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const std::string& l : keep) out << l << '\n';
    out.flush();
    if (!out) throw Error("cannot write " + tmp + ": " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error("cannot write " + path + ": " + std::strerror(errno));
}

LogCsv::LogCsv(const std::string& path) : f_(std::fopen(path.c_str(), "a")) {
  if (!f_) throw Error("cannot append to " + path + ": " + std::strerror(errno));
}

void LogCsv::row(long step, double loss, std::optional<double> nll_bits, std::optional<double> ce_a_bits,
                 std::optional<double> valid_loss, std::optional<double> valid_bits, double images_per_s,
                 double ms_per_step, double lr, double time) {
  auto cell = [](std::optional<double> v) {
    if (!v) return std::string();
    char b[64];
    std::snprintf(b, sizeof b, "%.6f", *v);
    return std::string(b);
  };
  std::fprintf(f_, "%ld,%.6f,%s,%s,%s,%s,%.2f,%.2f,%g,%.1f\n", step, loss, cell(nll_bits).c_str(),
               cell(ce_a_bits).c_str(), cell(valid_loss).c_str(), cell(valid_bits).c_str(), images_per_s, ms_per_step,
               lr, time);
  std::fflush(f_);
}

void LogCsv::close() {
  if (f_) std::fclose(f_);
  f_ = nullptr;
}

}  // namespace prsr::train_cli
