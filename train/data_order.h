// ./build/train's data order: image k of step s is the ((s * batch + k) mod n)-th entry of the
// permutation of epoch (s * batch + k) / n, drawn by our own Fisher-Yates from
// mt19937_64(seed, epoch). It is a pure function of (seed, n, batch, step), so a checkpoint's
// step is enough to resume it exactly (docs/train.md).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace prsr::train_cli {

// The permutation of epoch `e`: Fisher-Yates with our own bounded draw (rejection sampling),
// so it does not depend on the standard library's distributions.
class DataOrder {
 public:
  DataOrder(uint64_t seed, int n) : seed_(seed), n_(n) {}
  // Index (into the training set) of the g-th image drawn since step 0.
  int at(uint64_t g) {
    const uint64_t epoch = g / uint64_t(n_);
    if (epoch != epoch_ || perm_.empty()) build(epoch);
    return perm_[size_t(g % uint64_t(n_))];
  }

 private:
  void build(uint64_t epoch);
  uint64_t seed_;
  int n_;
  uint64_t epoch_ = 0;
  std::vector<int> perm_;
};

}  // namespace prsr::train_cli
