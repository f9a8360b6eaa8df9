// The human study's library (study/): the randomisation, the Wilson interval, the manifest,
// the answer database and the report on a hand-made database. The binary's end-to-end tests
// are in test_study_cli.cpp (prepare, serve, report) and test_study_browser.cpp (Chromium).
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>

#include "engine/error.h"
#include "study/answers.h"
#include "study/manifest.h"
#include "study/pairing.h"
#include "study/prepare.h"
#include "study/report.h"
#include "study/stats.h"
#include "test_study_fixture.h"

using namespace prsr;
using namespace prsr::study;
using namespace study_test;

TEST_CASE("study: every rater sees every pair once, real on the left in half of them") {
  for (int P : {1, 2, 3, 7, 24, 25, 100}) {
    std::set<int> left_counts;
    for (int r = 0; r < 40; ++r) {
      const RaterPlan plan = plan_for_rater(rater(r), P);
      // order: a permutation of 0..P-1 (every pair used, none twice).
      std::vector<int> sorted = plan.order;
      std::sort(sorted.begin(), sorted.end());
      for (int i = 0; i < P; ++i) REQUIRE(sorted[i] == i);
      // sides: floor(P/2) or ceil(P/2) pairs with the real image on the left.
      REQUIRE(plan.real_left.size() == size_t(P));
      const int left = int(std::count(plan.real_left.begin(), plan.real_left.end(), 1));
      CHECK((left == P / 2 || left == (P + 1) / 2));
      left_counts.insert(left);
      // Deterministic in the rater id: a reloaded page resumes the same sequence.
      const RaterPlan again = plan_for_rater(rater(r), P);
      CHECK(again.order == plan.order);
      CHECK(again.real_left == plan.real_left);
    }
    if (P % 2 == 1 && P > 1) CHECK(left_counts.size() == 2);  // the odd pair goes either way
  }
}

TEST_CASE("study: orders and sides differ between raters and are spread evenly") {
  const int P = 8, R = 4000;
  std::vector<int> real_left(P, 0);
  std::vector<std::vector<int>> position(P, std::vector<int>(P, 0));  // [pair][position]
  std::set<std::vector<int>> orders;
  for (int r = 0; r < R; ++r) {
    const RaterPlan plan = plan_for_rater(rater(r), P);
    orders.insert(plan.order);
    for (int i = 0; i < P; ++i) {
      real_left[i] += plan.real_left[i];
      position[plan.order[i]][i] += 1;
    }
  }
  CHECK(orders.size() > size_t(R * 9 / 10));  // 8! = 40320 orders: few repeats among 4000
  // Each pair: real on the left in ~half of the raters (expected 2000, sd ~32), and at each
  // position in ~1/8 of them (expected 500, sd ~21); 6 sd bounds.
  for (int i = 0; i < P; ++i) {
    CHECK(std::abs(real_left[i] - R / 2) < 200);
    for (int k = 0; k < P; ++k) CHECK(std::abs(position[i][k] - R / P) < 130);
  }
}

TEST_CASE("study: rater ids are 32 hex digits, fresh each time") {
  const std::string a = new_rater_id(), b = new_rater_id();
  CHECK(valid_rater_id(a));
  CHECK(a != b);
  CHECK(valid_rater_id(rater(3)));
  CHECK_FALSE(valid_rater_id(""));
  CHECK_FALSE(valid_rater_id(a.substr(1)));
  CHECK_FALSE(valid_rater_id(a + "0"));
  CHECK_FALSE(valid_rater_id("0123456789ABCDEF0123456789abcdef"));  // upper case
  CHECK_FALSE(valid_rater_id("0123456789abcdef0123456789abcde;"));
}

TEST_CASE("study: Wilson intervals against hand-computed values") {
  // z = 1.959963984540054, z^2 = 3.841459.
  // 8 of 10: p = 0.8, z^2/n = 0.3841459, denominator 1.3841459;
  //   centre = (0.8 + 0.1920730) / 1.3841459 = 0.716740;
  //   half = 1.959964 / 1.3841459 * sqrt(0.8 * 0.2 / 10 + 3.841459 / 400)
  //        = 1.416010 * sqrt(0.016 + 0.0096036) = 1.416010 * 0.1600113 = 0.226578;
  //   [0.490162, 0.943318].
  Interval w = wilson_interval(8, 10);
  CHECK(w.lo == doctest::Approx(0.490162).epsilon(1e-5));
  CHECK(w.hi == doctest::Approx(0.943318).epsilon(1e-5));
  // 5 of 10: centre 0.5 exactly; half = 1.416010 * sqrt(0.025 + 0.0096036) = 0.263407.
  w = wilson_interval(5, 10);
  CHECK(w.lo == doctest::Approx(0.236593).epsilon(1e-5));
  CHECK(w.hi == doctest::Approx(0.763407).epsilon(1e-5));
  // 0 of 4: p = 0, z^2/n = 0.9603648, centre = 0.4801824 / 1.9603648 = 0.244945 = half:
  //   [0, 0.489891] (not the empty [0, 0] of the normal approximation).
  w = wilson_interval(0, 4);
  CHECK(w.lo == doctest::Approx(0.0).epsilon(1e-9));
  CHECK(w.hi == doctest::Approx(0.489891).epsilon(1e-5));
  // 1 of 1: centre = (1 + 1.9207298) / 4.841459 = 0.603273, half 0.396727: [0.206549, 1].
  w = wilson_interval(1, 1);
  CHECK(w.lo == doctest::Approx(0.206549).epsilon(1e-5));
  CHECK(w.hi == doctest::Approx(1.0).epsilon(1e-9));
  // Symmetry: k of n and n - k of n mirror each other.
  const Interval a = wilson_interval(37, 100), b = wilson_interval(63, 100);
  CHECK(a.lo == doctest::Approx(1 - b.hi));
  CHECK(a.hi == doctest::Approx(1 - b.lo));
  w = wilson_interval(0, 0);
  CHECK(w.lo == 0.0);
  CHECK(w.hi == 1.0);
}

TEST_CASE("study: pick_inputs draws distinct sorted indices, reproducibly") {
  const std::vector<int> a = pick_inputs(10000, 50, 7), b = pick_inputs(10000, 50, 7), c = pick_inputs(10000, 50, 8);
  CHECK(a == b);
  CHECK(a != c);
  REQUIRE(a.size() == 50);
  CHECK(std::is_sorted(a.begin(), a.end()));
  CHECK(std::adjacent_find(a.begin(), a.end()) == a.end());
  CHECK(a.front() >= 0);
  CHECK(a.back() < 10000);
  CHECK(a.back() > 5000);  // not simply the first 50
  const std::vector<int> all = pick_inputs(5, 5, 3);
  CHECK(all == std::vector<int>{0, 1, 2, 3, 4});
}

TEST_CASE("study: manifest round trip and clear errors for a folder that is not a study") {
  TempDir d("study-manifest");
  const std::vector<Pair> pairs = make_study(d / "s", 2, {{"prsr", "1.0"}, {"prsr", "0.8"}, {"l2", ""}});
  const std::vector<Pair> back = read_manifest(d / "s");
  REQUIRE(back.size() == 6);
  for (size_t i = 0; i < back.size(); ++i) {
    CHECK(back[i].id == pairs[i].id);
    CHECK(back[i].input == pairs[i].input);
    CHECK(back[i].method == pairs[i].method);
    CHECK(back[i].temperature == pairs[i].temperature);
    CHECK(back[i].real == pairs[i].real);
    CHECK(back[i].fake == pairs[i].fake);
  }
  CHECK(condition_label("prsr", "0.8") == "prsr t=0.8");
  CHECK(condition_label("l2", "") == "l2");
  CHECK(manifest_id(d / "s").size() == 16);

  auto error_of = [&](const std::string& text) -> std::string {
    fs::create_directories(d.path / "bad");
    std::ofstream(d / "bad/manifest.tsv", std::ios::trunc) << text;
    try {
      read_manifest(d / "bad");
    } catch (const Error& e) { return e.what(); }
    return "";
  };
  const std::string h = "pair\tinput\tmethod\ttemperature\treal\tfake\n";
  CHECK(error_of("id,method\n").find("not a study manifest") != std::string::npos);
  CHECK(error_of(h).find("no pairs") != std::string::npos);
  CHECK(error_of(h + "0\t1\tprsr\t1.0\ta.png\n").find("expected 6") != std::string::npos);
  CHECK(error_of(h + "1\t1\tprsr\t1.0\ta.png\tb.png\n").find("expected 0") != std::string::npos);
  CHECK(error_of(h + "0\tx\tprsr\t1.0\ta.png\tb.png\n").find("integers") != std::string::npos);
  CHECK(error_of(h + "0\t1\tgan\t1.0\ta.png\tb.png\n").find("unknown method 'gan'") != std::string::npos);
  CHECK(error_of(h + "0\t1\tprsr\t-\ta.png\tb.png\n").find("prsr rows need one") != std::string::npos);
  CHECK(error_of(h + "0\t1\tl2\t1.0\ta.png\tb.png\n").find("have '-'") != std::string::npos);
  CHECK(error_of(h + "0\t1\tl2\t-\t/etc/a.png\tb.png\n").find("relative") != std::string::npos);
  CHECK(error_of(h + "0\t1\tl2\t-\ta.png\t../b.png\n").find("relative") != std::string::npos);
  fs::create_directories(d.path / "empty");
  CHECK_THROWS_WITH_AS(read_manifest(d / "empty"), doctest::Contains("not a prepared study"), Error);
  CHECK_THROWS_WITH_AS(read_manifest(d / "missing"), doctest::Contains("no such folder"), Error);
}

TEST_CASE("study: the answer database stores, rejects repeats, and belongs to one manifest") {
  TempDir d("study-db");
  make_study(d / "s", 1, {{"prsr", "1.0"}, {"bicubic", ""}});
  const std::string path = d / "s/answers.sqlite", id = manifest_id(d / "s");
  CHECK_THROWS_WITH_AS(AnswerDb(path, id, false), doctest::Contains("no answers yet"), Error);
  {
    AnswerDb db(path, id, true);
    Answer a;
    a.rater = rater(1);
    a.pair = 1;
    a.method = "bicubic";
    a.real_side = "left";
    a.choice = "right";
    a.fooled = true;
    a.response_ms = 812;
    CHECK(db.insert(a));
    a.choice = "left";  // a second answer to the same pair by the same rater: rejected
    CHECK_FALSE(db.insert(a));
    a.rater = rater(2);
    CHECK(db.insert(a));
    CHECK(db.count() == 2);
    CHECK(db.answered(rater(1)) == std::set<int>{1});
    const std::vector<Answer> all = db.all();
    REQUIRE(all.size() == 2);
    CHECK(all[0].choice == "right");  // the first answer stands
    CHECK(all[0].fooled);
    CHECK(all[0].temperature.empty());
    CHECK(all[0].response_ms == 812);
    CHECK(all[0].created.size() >= 20);
  }
  // Reopened: the answers are there; another manifest's id is refused.
  CHECK(AnswerDb(path, id, false).count() == 2);
  CHECK_THROWS_WITH_AS(AnswerDb(path, "0000000000000000", true), doctest::Contains("another manifest"), Error);
  std::ofstream(d / "junk.sqlite") << "this is not a database, just text that is long enough to have a header";
  CHECK_THROWS_AS(AnswerDb(d / "junk.sqlite", id, false), Error);
}

TEST_CASE("study: report on a hand-made database") {
  TempDir d("study-report");
  // 2 inputs x 3 conditions: pairs 0 prsr 1.0, 1 l2, 2 bicubic (input 0); 3, 4, 5 (input 1).
  make_study(d / "s", 2, {{"prsr", "1.0"}, {"l2", ""}, {"bicubic", ""}});
  const std::vector<Pair> pairs = read_manifest(d / "s");
  {
    AnswerDb db(d / "s/answers.sqlite", manifest_id(d / "s"), true);
    auto put = [&](int r, int pair, bool fooled) {
      Answer a;
      a.rater = rater(r);
      a.pair = pair;
      a.method = pairs[pair].method;
      a.temperature = pairs[pair].temperature;
      a.real_side = "left";
      a.choice = fooled ? "right" : "left";
      a.fooled = fooled;
      a.response_ms = 500;
      REQUIRE(db.insert(a));
    };
    // prsr t=1.0: 5 raters x pairs 0 and 3 = 10 answers, 8 fooled (raters 0..3 both, rater 4 none).
    for (int r = 0; r < 5; ++r) {
      put(r, 0, r < 4);
      put(r, 3, r < 4);
    }
    // l2: raters 0 and 1, pairs 1 and 4: 4 answers, none fooled. bicubic: no answers.
    for (int r = 0; r < 2; ++r) {
      put(r, 1, false);
      put(r, 4, false);
    }
  }
  REQUIRE(run_report(d / "s") == 0);
  // The rows in manifest order; the intervals are the hand-computed ones above (8/10, 0/4).
  CHECK(slurp(d / "s/report.csv") ==
        "method,temperature,answers,fooled,fooled_frac,ci_lo,ci_hi,raters\n"
        "prsr,1.0,10,8,0.800000,0.490162,0.943318,5\n"
        "l2,,4,0,0.000000,0.000000,0.489891,2\n"
        "bicubic,,0,0,0.000000,0.000000,1.000000,0\n");
  const std::string json = slurp(d / "s/report.json");
  CHECK(json.find("\"answers\": 14") != std::string::npos);
  CHECK(json.find("\"raters\": 5") != std::string::npos);
  CHECK(json.find("{\"method\": \"prsr\", \"temperature\": 1.0, \"answers\": 10, \"fooled\": 8") != std::string::npos);
  CHECK(json.find("{\"method\": \"bicubic\", \"temperature\": null, \"answers\": 0") != std::string::npos);
  const Report r = make_report(pairs, AnswerDb(d / "s/answers.sqlite", manifest_id(d / "s"), false).all());
  const std::string table = report_table(r);
  CHECK(table.find("prsr t=1.0") != std::string::npos);
  CHECK(table.find("80.0") != std::string::npos);
  CHECK(table.find("[49.0, 94.3]") != std::string::npos);
  CHECK(table.find("14 answers from 5 raters") != std::string::npos);
}
