#include "study/manifest.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>

#include "engine/error.h"

namespace fs = std::filesystem;

namespace prsr::study {

namespace {

const char* const kHeader = "pair\tinput\tmethod\ttemperature\treal\tfake";

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (true) {
    const size_t tab = line.find('\t', pos);
    out.push_back(line.substr(pos, tab == std::string::npos ? std::string::npos : tab - pos));
    if (tab == std::string::npos) return out;
    pos = tab + 1;
  }
}

bool parse_nonneg(const std::string& s, long& v) {
  if (s.empty() || s[0] == '-' || s[0] == '+') return false;
  char* end = nullptr;
  errno = 0;
  v = std::strtol(s.c_str(), &end, 10);
  return *end == '\0' && errno == 0 && v <= 1000000000;
}

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw Error(p.string() + ": cannot read");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

std::string condition_label(const std::string& method, const std::string& temperature) {
  return temperature.empty() ? method : method + " t=" + temperature;
}

void write_manifest(const std::string& dir, const std::vector<Pair>& pairs) {
  const fs::path final_path = fs::path(dir) / kManifestName, tmp = fs::path(dir) / "manifest.tsv.tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error(tmp.string() + ": cannot write");
    f << kHeader << '\n';
    for (const Pair& p : pairs)
      f << p.id << '\t' << p.input << '\t' << p.method << '\t' << (p.temperature.empty() ? "-" : p.temperature) << '\t'
        << p.real << '\t' << p.fake << '\n';
    f.flush();
    if (!f) throw Error(tmp.string() + ": write failed");
  }
  std::error_code ec;
  fs::rename(tmp, final_path, ec);
  if (ec) throw Error(final_path.string() + ": cannot rename the manifest into place: " + ec.message());
}

std::vector<Pair> read_manifest(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error(dir + ": no such folder (run study prepare ... --out " + dir + " first)");
  const fs::path path = fs::path(dir) / kManifestName;
  if (!fs::exists(path, ec))
    throw Error(dir + ": not a prepared study (no " + kManifestName + "; run study prepare ... --out " + dir + ")");
  std::istringstream in(read_all(path));
  std::string line;
  if (!std::getline(in, line) || line != kHeader)
    throw Error(path.string() + ": line 1 is not the header '" + std::string(kHeader) + "' (not a study manifest)");
  static const std::set<std::string> methods = {"prsr", "l2", "bicubic"};
  std::vector<Pair> pairs;
  for (int lineno = 2; std::getline(in, line); ++lineno) {
    if (line.empty()) continue;
    const std::string where = path.string() + ":" + std::to_string(lineno) + ": ";
    const std::vector<std::string> f = split_tabs(line);
    if (f.size() != 6) throw Error(where + "expected 6 tab-separated fields, got " + std::to_string(f.size()));
    long id = 0, input = 0;
    if (!parse_nonneg(f[0], id) || !parse_nonneg(f[1], input)) throw Error(where + "pair and input must be integers");
    if (id != long(pairs.size()))
      throw Error(where + "pair id " + f[0] + ", expected " + std::to_string(pairs.size()) +
                  " (ids are 0..P-1 in order)");
    if (!methods.count(f[2])) throw Error(where + "unknown method '" + f[2] + "' (prsr, l2 or bicubic)");
    if (f[3].empty() || (f[2] == "prsr") == (f[3] == "-"))
      throw Error(where + "temperature '" + f[3] + "': prsr rows need one, l2 and bicubic rows have '-'");
    for (int k : {4, 5})
      if (f[k].empty() || f[k][0] == '/' || f[k].find("..") != std::string::npos)
        throw Error(where + "image path '" + f[k] + "' must be relative to the study folder");
    Pair p;
    p.id = int(id);
    p.input = int(input);
    p.method = f[2];
    p.temperature = f[3] == "-" ? "" : f[3];
    p.real = f[4];
    p.fake = f[5];
    pairs.push_back(std::move(p));
  }
  if (pairs.empty()) throw Error(path.string() + ": no pairs");
  return pairs;
}

std::string manifest_id(const std::string& dir) {
  const std::string bytes = read_all(fs::path(dir) / kManifestName);
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char s[17];
  std::snprintf(s, sizeof s, "%016llx", (unsigned long long)h);
  return s;
}

}  // namespace prsr::study
