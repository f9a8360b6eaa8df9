#include "study/stats.h"

#include <algorithm>
#include <cmath>

namespace prsr::study {

Interval wilson_interval(long k, long n, double z) {
  if (n <= 0) return {0.0, 1.0};
  const double p = double(k) / double(n), z2 = z * z, nn = double(n);
  const double denom = 1.0 + z2 / nn;
  const double centre = (p + z2 / (2.0 * nn)) / denom;
  const double half = z / denom * std::sqrt(p * (1.0 - p) / nn + z2 / (4.0 * nn * nn));
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

}  // namespace prsr::study
