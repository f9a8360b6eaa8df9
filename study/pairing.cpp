#include "study/pairing.h"

#include <random>
#include <utility>

namespace prsr::study {

namespace {

struct SplitMix64 {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) by rejection (no modulo bias).
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = next();
    while (x >= limit);
    return x % n;
  }
};

template <class T>
void fisher_yates(std::vector<T>& v, SplitMix64& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

}  // namespace

RaterPlan plan_for_rater(const std::string& rater, int P) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : rater) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  SplitMix64 rng{h};
  RaterPlan plan;
  plan.order.resize(P);
  for (int i = 0; i < P; ++i) plan.order[i] = i;
  fisher_yates(plan.order, rng);
  const int left = P / 2 + ((P % 2 == 1 && (rng.next() & 1)) ? 1 : 0);
  plan.real_left.assign(P, 0);
  for (int i = 0; i < left; ++i) plan.real_left[i] = 1;
  fisher_yates(plan.real_left, rng);
  return plan;
}

std::string new_rater_id() {
  std::random_device rd;
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 4; ++i) {
    uint32_t w = rd();
    for (int k = 0; k < 8; ++k, w >>= 4) s += hex[w & 15];
  }
  return s;
}

bool valid_rater_id(const std::string& s) {
  if (s.size() != 32) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace prsr::study
