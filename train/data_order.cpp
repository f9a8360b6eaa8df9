#include "train/data_order.h"

#include <cstdint>
#include <random>
#include <utility>

namespace prsr::train_cli {

void DataOrder::build(uint64_t epoch) {
  std::seed_seq sq{uint32_t(seed_), uint32_t(seed_ >> 32), uint32_t(epoch), uint32_t(epoch >> 32), 0x5eedu};
  std::mt19937_64 rng(sq);
  perm_.resize(size_t(n_));
  for (int i = 0; i < n_; ++i) perm_[size_t(i)] = i;
  for (int i = n_ - 1; i > 0; --i) {
    const uint64_t range = uint64_t(i) + 1, limit = UINT64_MAX - UINT64_MAX % range;
    uint64_t r;
    do r = rng();
    while (r >= limit);
    std::swap(perm_[size_t(i)], perm_[size_t(r % range)]);
  }
  epoch_ = epoch;
}

}  // namespace prsr::train_cli
