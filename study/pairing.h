// The randomisation of a study (docs/study.md): each rater sees every pair once, in a random
// order, with the real image on the left in half of them. Both are drawn from the rater's id,
// so the server keeps no per-rater state beyond the answers: a reloaded page resumes at the
// first pair of the rater's order that has no answer yet.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace prsr::study {

struct RaterPlan {
  std::vector<int> order;          // a permutation of the pair ids 0..P-1: the showing order
  std::vector<uint8_t> real_left;  // [pair id]: 1 when the real image is shown on the left
};

// P pairs: order is a uniform random permutation; real_left holds floor(P/2) or ceil(P/2) ones
// (a random half, the odd one out decided by a coin), placed by a second random permutation.
// Deterministic in (rater, P): splitmix64 seeded with FNV-1a 64 of the rater id, Fisher-Yates.
RaterPlan plan_for_rater(const std::string& rater, int P);

// A fresh rater id: 32 lowercase hex digits from std::random_device.
std::string new_rater_id();
// True for exactly 32 characters of [0-9a-f] (what new_rater_id makes; cookies are checked).
bool valid_rater_id(const std::string& s);

}  // namespace prsr::study
