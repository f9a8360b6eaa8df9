#include "cli/args.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "engine/error.h"

namespace prsr::cli {

long parse_int(const std::string& flag, const std::string& v, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE) throw Error(flag + ": expected an integer, got '" + v + "'");
  if (x < lo || x > hi)
    throw Error(flag + ": " + v + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

std::vector<float> parse_temperatures(const std::string& v) {
  std::vector<float> out;
  size_t pos = 0;
  while (true) {
    const size_t comma = v.find(',', pos);
    const std::string tok = v.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    char* end = nullptr;
    const double t = std::strtod(tok.c_str(), &end);
    if (tok.empty() || *end != '\0' || !std::isfinite(t))
      throw Error("--temperature: expected numbers separated by commas, got '" + v + "'");
    if (t <= 0) throw Error("--temperature: must be > 0, got " + tok);
    for (float u : out)
      if (u == float(t)) throw Error("--temperature: " + tok + " given twice");
    out.push_back(float(t));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

std::string fmt_temperature(float t) {
  char s[32];
  std::snprintf(s, sizeof s, "%g", double(t));
  std::string r = s;
  if (r.find('.') == std::string::npos && r.find('e') == std::string::npos) r += ".0";
  return r;
}

}  // namespace prsr::cli
