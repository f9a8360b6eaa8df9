// Writing a gradient on the CPU backend: overwrite a fresh one, accumulate into the others
// (backend.h), in one OpenMP + simd loop each. Shared by elementwise.cpp and loss.cpp; the
// parallel threshold also by optim.cpp.
#pragma once
#include <cstddef>

namespace prsr::cpu {

// Tensors smaller than this stay on the calling thread: a parallel region costs a few
// microseconds, more than the loop itself.
constexpr size_t kParallelMin = size_t(1) << 15;

}  // namespace prsr::cpu

// d[i] = EXPR for a fresh gradient (backend.h: its buffer holds garbage), d[i] += EXPR otherwise,
// for i in [0, n). (A macro, not a template taking a lambda: with the lambda GCC did not
// vectorise the loops, and relu's backward ran at half speed.)
#define PRSR_STORE(d, n, fresh, EXPR)                                                                                 \
  do {                                                                                                                \
    if (fresh) {                                                                                                      \
      _Pragma("omp parallel for simd schedule(static) if (n >= ::prsr::cpu::kParallelMin)") for (size_t i = 0; i < n; \
                                                                                                 ++i) d[i] = (EXPR);  \
    } else {                                                                                                          \
      _Pragma("omp parallel for simd schedule(static) if (n >= ::prsr::cpu::kParallelMin)") for (size_t i = 0; i < n; \
                                                                                                 ++i) d[i] += (EXPR); \
    }                                                                                                                 \
  } while (0)
