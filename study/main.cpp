// ./build/study: the human study of the paper (docs/study.md). Raters see a real 32x32 image
// and a model's output for the same 8x8 input and pick the real one; % fooled is how often
// they pick the model's.
//
//   study prepare   pick inputs, sample every method, write PNGs + manifest  (study/prepare.h)
//   study serve     the rating page, answers into SQLite                    (study/server.h)
//   study report    % fooled with 95% Wilson intervals                       (study/report.h)
//
// The pieces the tests use directly live in the prsr_study library: the manifest
// (study/manifest.h), the randomisation (study/pairing.h), the answer database
// (study/answers.h), the statistics (study/stats.h) and the report. Every error is one line
// "error: ..." and exit code 1.
#include <cstdio>
#include <exception>

#include "study/options.h"
#include "study/prepare.h"
#include "study/report.h"
#include "study/server.h"

using namespace prsr::study;

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    const Args a = parse_args(argc, argv);
    if (a.help) {
      print_help(a.command);
      return 0;
    }
    if (a.command == "prepare") return run_prepare(a.prepare);
    if (a.command == "serve") return run_serve(a.serve);
    return run_report(a.report_dir);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
