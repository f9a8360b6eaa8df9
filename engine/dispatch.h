// PRSR_CALL(dev, fn, args...): run kernel `fn` of the backend `dev` (engine/backend.h).
// Used inside templates on the element type T: the reference runs any T; the CPU and CUDA
// backends are float32 only, and asking them for double is an error, never a silent conversion.
#pragma once
#include <type_traits>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/ref/kernels.h"

#define PRSR_CALL(dev, fn, ...)                                               \
  do {                                                                        \
    if ((dev) == ::prsr::Device::Ref) {                                       \
      ::prsr::ref::fn(__VA_ARGS__);                                           \
    } else {                                                                  \
      if constexpr (std::is_same_v<T, float>) {                               \
        if ((dev) == ::prsr::Device::Cpu) ::prsr::cpu::fn(__VA_ARGS__);       \
        else ::prsr::cuda::fn(__VA_ARGS__);                                   \
      } else {                                                                \
        throw ::prsr::Error("the cpu and cuda backends run in float32 only"); \
      }                                                                       \
    }                                                                         \
  } while (0)
