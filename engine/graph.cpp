#include <chrono>

#include "engine/graph.h"

namespace prsr {

const char* op_name(Op op) {
  static const char* names[kOpCount] = {"conv", "deconv", "add", "mul (mask)", "relu", "tanh",
                                        "sigmoid", "gate", "down_shift", "batch_norm",
                                        "softmax_ce", "mse", "mean"};
  return names[int(op)];
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace prsr
