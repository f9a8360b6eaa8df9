// The study's statistics (docs/study.md): the Wilson score interval of a binomial proportion.
#pragma once

namespace prsr::study {

struct Interval {
  double lo = 0, hi = 0;
};

// k successes in n trials, z the normal quantile (1.959963984540054 for 95%):
//   p = k/n,  centre = (p + z^2/2n) / (1 + z^2/n),
//   half = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2),  [centre - half, centre + half].
// Unlike p +- z sqrt(p(1-p)/n) it stays inside [0, 1] and is not empty at k = 0 or k = n.
// n = 0: [0, 1] (nothing known).
Interval wilson_interval(long k, long n, double z = 1.959963984540054);

}  // namespace prsr::study
