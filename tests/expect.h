// expect_close(what, got, want, atol, rtol): the one element-by-element comparison of the test
// suites. got is a backend's float result, want the reference's (double, or float).
//
// An element passes when |got - want| <= atol + rtol * |want|, or when got is the float nearest
// to want (so atol = rtol = 0 means "exactly the correctly rounded value": an exact op in float,
// such as a copy or one addition, matches the double reference bit for bit). NaN never passes.
// On failure one line gives the count of bad elements, the first one, and the max abs and max
// relative differences over the whole buffer.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

template <class W>
void expect_close(const std::string& what, const float* got, const W* want, size_t n, double atol, double rtol) {
  size_t bad = 0, first_bad = 0;
  double max_abs = 0, max_rel = 0;
  for (size_t i = 0; i < n; ++i) {
    const double g = got[i], w = double(want[i]);
    const double d = std::fabs(g - w);
    const bool nearest = got[i] == float(want[i]);        // false for NaN
    if (!(nearest || d <= atol + rtol * std::fabs(w))) {  // the negation also catches NaN
      if (bad++ == 0) first_bad = i;
    }
    if (d > max_abs || std::isnan(d)) max_abs = d;
    const double rel = w != 0 ? d / std::fabs(w) : (d != 0 ? INFINITY : 0.0);
    if (rel > max_rel || std::isnan(rel)) max_rel = rel;
  }
  if (bad) {
    char line[256];
    std::snprintf(line, sizeof line,
                  "%zu of %zu elements differ (atol %.3g, rtol %.3g), first at %zu: got %.9g, "
                  "want %.17g; max |diff| %.3g, max rel diff %.3g",
                  bad, n, atol, rtol, first_bad, double(got[first_bad]), double(want[first_bad]), max_abs, max_rel);
    INFO(what << ": " << line);
    CHECK(bad == 0);
  } else {
    CHECK(true);
  }
}

template <class W>
void expect_close(const std::string& what, const std::vector<float>& got, const std::vector<W>& want, double atol,
                  double rtol) {
  INFO(what);
  REQUIRE(got.size() == want.size());
  expect_close(what, got.data(), want.data(), got.size(), atol, rtol);
}
