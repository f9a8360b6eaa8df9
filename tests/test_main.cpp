// doctest main with a listener that ends the run with the plain line CI reads:
//   "N passed, N failed"            (test cases)
// plus ", N skipped" when test cases were skipped (e.g. the GPU suite without a device).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

namespace {

struct SummaryListener : doctest::IReporter {
  int passed = 0, failed = 0, skipped = 0;
  const doctest::TestCaseData* current = nullptr;
  bool current_failed = false;

  explicit SummaryListener(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override;
  void test_case_start(const doctest::TestCaseData& tc) override {
    current = &tc;
    current_failed = false;
  }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats& st) override {
    if (st.failure_flags || st.numAssertsFailedCurrentTest > 0) current_failed = true;
  }
  void test_case_exception(const doctest::TestCaseException&) override { current_failed = true; }
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override { ++skipped; }
  // test_case_end may be called several times per test case (once per subcase pass); count on
  // the final one via the run-level hook below.
};

// doctest deletes its listeners inside run(): the counts are copied out at the end of the run.
int g_passed = 0, g_failed = 0, g_skipped = 0;
bool g_ran = false;
void SummaryListener::test_run_end(const doctest::TestRunStats&) {
  g_passed = passed;
  g_failed = failed;
  g_skipped = skipped;
  g_ran = true;
}

struct CountingListener : SummaryListener {
  explicit CountingListener(const doctest::ContextOptions& o) : SummaryListener(o) {}
  void test_case_end(const doctest::CurrentTestCaseStats& st) override {
    SummaryListener::test_case_end(st);
    if (!st.testCaseSuccess) current_failed = true;
    if (st.failure_flags || !st.testCaseSuccess || st.numAssertsFailedCurrentTest) current_failed = true;
    // doctest re-enters a test case once per leaf subcase; it calls test_case_end only once at the
    // very end (after all re-entries), so counting here is per test case.
    if (current_failed) ++failed;
    else ++passed;
  }
};

}  // namespace

DOCTEST_REGISTER_LISTENER("summary", 1, CountingListener);

int main(int argc, char** argv) {
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  const int rc = ctx.run();
  // Printed after doctest's own summary so that it is the last line of the output.
  if (g_ran) {
    std::fflush(stdout);
    if (g_skipped) std::printf("%d passed, %d failed, %d skipped\n", g_passed, g_failed, g_skipped);
    else std::printf("%d passed, %d failed\n", g_passed, g_failed);
  }
  return rc;
}
