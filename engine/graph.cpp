#include <chrono>

#include "engine/graph.h"

namespace prsr {

namespace {
// One name per Op, in enum order.
constexpr const char* kOpNames[] = {"conv", "deconv",     "add",        "mul (mask)", "relu", "tanh", "sigmoid",
                                    "gate", "down_shift", "batch_norm", "softmax_ce", "mse",  "mean"};
static_assert(sizeof(kOpNames) / sizeof(kOpNames[0]) == size_t(Op::Count),
              "op_name: one name per Op (engine/graph.h), in the same order");
}  // namespace

const char* op_name(Op op) { return kOpNames[int(op)]; }

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace prsr
