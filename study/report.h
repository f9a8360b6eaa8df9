// study report: % fooled per condition (method and temperature) with 95% Wilson intervals
// (study/stats.h), the number of answers and of raters; a table on stdout, report.csv and
// report.json in the study folder (docs/study.md).
#pragma once
#include <string>
#include <vector>

#include "study/answers.h"
#include "study/manifest.h"
#include "study/stats.h"

namespace prsr::study {

struct ReportRow {
  std::string method, temperature;  // temperature "" for l2 and bicubic
  long answers = 0, fooled = 0;     // fooled: the model's output was picked as real
  long raters = 0;                  // distinct raters who answered this condition
  double fooled_frac = 0;           // fooled / answers (0 without answers)
  Interval ci;                      // 95% Wilson interval of fooled_frac
};

struct Report {
  std::vector<ReportRow> rows;  // one per condition of the manifest, in manifest order
  long answers = 0, raters = 0;
  long unmatched = 0;  // answers whose pair id is not in the manifest (left out of the rows)
};

// Conditions come from the manifest (so one without answers still gets a row, with 0 answers);
// each answer counts for its pair's condition.
Report make_report(const std::vector<Pair>& pairs, const std::vector<Answer>& answers);

std::string report_table(const Report& r);  // the stdout table
std::string report_csv(const Report& r);    // header + one line per row
std::string report_json(const Report& r);

// The whole command: reads DIR's manifest and database, prints the table, writes
// DIR/report.csv and DIR/report.json. Returns the exit code.
int run_report(const std::string& dir);

}  // namespace prsr::study
