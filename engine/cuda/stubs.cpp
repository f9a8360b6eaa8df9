// The CUDA entry points of a build without nvcc: every call but available() and
// unavailable_reason() throws Error("not compiled with CUDA support") (as candle does), so
// `--device cuda` fails with one clear line instead of a link error or a silent CPU fallback.
// The kernel stubs are generated from engine/kernels.def, so they always match backend.h; every
// definition is qualified (cuda::name), so one that no longer matches a declaration is a compile
// error here.
#include "engine/backend.h"
#include "engine/error.h"

namespace prsr {

namespace {
constexpr const char* kReason = "not compiled with CUDA support";
[[noreturn]] void unavailable() { throw Error(kReason); }
}  // namespace

bool cuda::available() { return false; }
const char* cuda::unavailable_reason() { return kReason; }
void* cuda::malloc_device(size_t) { unavailable(); }
void cuda::free_device(void*) { unavailable(); }
void cuda::copy_to_device(void*, const void*, size_t) { unavailable(); }
void cuda::copy_to_host(void*, const void*, size_t) { unavailable(); }
void cuda::copy_device(void*, const void*, size_t) { unavailable(); }
void cuda::synchronize() { unavailable(); }
void cuda::set_tf32(bool) { unavailable(); }
void* cuda::stream_handle() { unavailable(); }
void cuda::sync_batchnorm_forward(void (*)(double*, int), float*, float*, float*, float*, float*, const float*,
                                  const float*, const float*, int, int, int, float, float) {
  unavailable();
}
void cuda::sync_batchnorm_backward(void (*)(double*, int), float*, float*, float*, const float*, const float*,
                                   const float*, const float*, const float*, int, int, int, unsigned) {
  unavailable();
}

#define PRSR_KERNEL(name, params) \
  void cuda::name params { unavailable(); }
#define PRSR_GRAD_KERNEL(name, params) \
  void cuda::name PRSR_WITH_FRESH params { unavailable(); }
#include "engine/kernels.def"

}  // namespace prsr
