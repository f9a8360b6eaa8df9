#include "study/report.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "engine/error.h"
#include "study/stats.h"

namespace fs = std::filesystem;

namespace prsr::study {

namespace {

std::string fmt(const char* f, double v) {
  char s[64];
  std::snprintf(s, sizeof s, f, v);
  return s;
}

void write_text(const fs::path& p, const std::string& text) {
  const fs::path tmp = p.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << text;
    f.flush();
    if (!f) throw Error(tmp.string() + ": cannot write");
  }
  std::error_code ec;
  fs::rename(tmp, p, ec);
  if (ec) throw Error(p.string() + ": " + ec.message());
}

}  // namespace

Report make_report(const std::vector<Pair>& pairs, const std::vector<Answer>& answers) {
  Report r;
  std::map<std::pair<std::string, std::string>, size_t> row_of;  // condition -> row
  std::vector<size_t> pair_row(pairs.size());
  for (const Pair& p : pairs) {
    const auto key = std::make_pair(p.method, p.temperature);
    auto it = row_of.find(key);
    if (it == row_of.end()) {
      it = row_of.emplace(key, r.rows.size()).first;
      ReportRow row;
      row.method = p.method;
      row.temperature = p.temperature;
      r.rows.push_back(row);
    }
    pair_row[p.id] = it->second;
  }
  std::vector<std::set<std::string>> raters(r.rows.size());
  std::set<std::string> all_raters;
  for (const Answer& a : answers) {
    if (a.pair < 0 || size_t(a.pair) >= pairs.size()) {
      ++r.unmatched;
      continue;
    }
    const size_t k = pair_row[a.pair];
    ++r.rows[k].answers;
    r.rows[k].fooled += a.fooled;
    raters[k].insert(a.rater);
    all_raters.insert(a.rater);
    ++r.answers;
  }
  for (size_t k = 0; k < r.rows.size(); ++k) {
    ReportRow& row = r.rows[k];
    row.raters = long(raters[k].size());
    row.fooled_frac = row.answers ? double(row.fooled) / double(row.answers) : 0.0;
    row.ci = wilson_interval(row.fooled, row.answers);
  }
  r.raters = long(all_raters.size());
  return r;
}

std::string report_table(const Report& r) {
  std::string s;
  char line[256];
  std::snprintf(line, sizeof line, "%-14s %8s %7s %8s %17s %7s\n", "condition", "answers", "fooled", "% fooled",
                "95% Wilson CI", "raters");
  s += line;
  for (const ReportRow& row : r.rows) {
    const std::string pct = row.answers ? fmt("%.1f", 100 * row.fooled_frac) : "-";
    const std::string ci =
        row.answers ? "[" + fmt("%.1f", 100 * row.ci.lo) + ", " + fmt("%.1f", 100 * row.ci.hi) + "]" : "-";
    std::snprintf(line, sizeof line, "%-14s %8ld %7ld %8s %17s %7ld\n",
                  condition_label(row.method, row.temperature).c_str(), row.answers, row.fooled, pct.c_str(),
                  ci.c_str(), row.raters);
    s += line;
  }
  std::snprintf(line, sizeof line, "%ld answer%s from %ld rater%s\n", r.answers, r.answers == 1 ? "" : "s", r.raters,
                r.raters == 1 ? "" : "s");
  s += line;
  return s;
}

std::string report_csv(const Report& r) {
  std::string s = "method,temperature,answers,fooled,fooled_frac,ci_lo,ci_hi,raters\n";
  for (const ReportRow& row : r.rows)
    s += row.method + "," + row.temperature + "," + std::to_string(row.answers) + "," + std::to_string(row.fooled) +
         "," + fmt("%.6f", row.fooled_frac) + "," + fmt("%.6f", row.ci.lo) + "," + fmt("%.6f", row.ci.hi) + "," +
         std::to_string(row.raters) + "\n";
  return s;
}

std::string report_json(const Report& r) {
  // Method and temperature come from a validated manifest: no characters that need escaping.
  std::string s = "{\n  \"answers\": " + std::to_string(r.answers) + ",\n  \"raters\": " + std::to_string(r.raters) +
                  ",\n  \"confidence\": 0.95,\n  \"interval\": \"wilson\",\n  \"rows\": [";
  for (size_t k = 0; k < r.rows.size(); ++k) {
    const ReportRow& row = r.rows[k];
    s += std::string(k ? "," : "") + "\n    {\"method\": \"" + row.method +
         "\", \"temperature\": " + (row.temperature.empty() ? "null" : row.temperature) +
         ", \"answers\": " + std::to_string(row.answers) + ", \"fooled\": " + std::to_string(row.fooled) +
         ", \"fooled_frac\": " + fmt("%.6f", row.fooled_frac) + ", \"ci_lo\": " + fmt("%.6f", row.ci.lo) +
         ", \"ci_hi\": " + fmt("%.6f", row.ci.hi) + ", \"raters\": " + std::to_string(row.raters) + "}";
  }
  s += "\n  ]\n}\n";
  return s;
}

int run_report(const std::string& dir) {
  const std::vector<Pair> pairs = read_manifest(dir);
  AnswerDb db((fs::path(dir) / kDatabaseName).string(), manifest_id(dir), false);
  const Report r = make_report(pairs, db.all());
  std::printf("%s", report_table(r).c_str());
  if (r.unmatched)
    std::fprintf(stderr, "warning: %ld answer%s name pair ids not in the manifest; left out\n", r.unmatched,
                 r.unmatched == 1 ? "" : "s");
  const fs::path csv = fs::path(dir) / "report.csv", json = fs::path(dir) / "report.json";
  write_text(csv, report_csv(r));
  write_text(json, report_json(r));
  std::printf("wrote %s and %s\n", csv.string().c_str(), json.string().c_str());
  return 0;
}

}  // namespace prsr::study
