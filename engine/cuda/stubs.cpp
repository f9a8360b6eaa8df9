// The CUDA entry points of a build without nvcc: every call but available() and
// unavailable_reason() throws Error("not compiled with CUDA support") (as candle does), so
// `--device cuda` fails with one clear line instead of a link error or a silent CPU fallback.
#include "engine/backend.h"
#include "engine/error.h"

namespace prsr::cuda {

namespace {
constexpr const char* kReason = "not compiled with CUDA support";
[[noreturn]] void unavailable() { throw Error(kReason); }
}  // namespace

bool available() { return false; }
const char* unavailable_reason() { return kReason; }
void* malloc_device(size_t) { unavailable(); }
void free_device(void*) { unavailable(); }
void copy_to_device(void*, const void*, size_t) { unavailable(); }
void copy_to_host(void*, const void*, size_t) { unavailable(); }
void copy_device(void*, const void*, size_t) { unavailable(); }
void synchronize() { unavailable(); }
void set_tf32(bool) { unavailable(); }

void conv2d_forward(float*, const float*, const float*, const float*, const ConvGeom&) {
  unavailable();
}
void conv2d_backward(float*, float*, float*, const float*, const float*, const float*,
                     const ConvGeom&, unsigned) {
  unavailable();
}
void deconv2d_forward(float*, const float*, const float*, const float*, const DeconvGeom&) {
  unavailable();
}
void deconv2d_backward(float*, float*, float*, const float*, const float*, const float*,
                       const DeconvGeom&, unsigned) {
  unavailable();
}
void fill(float*, float, size_t) { unavailable(); }
void axpy(float*, float, const float*, size_t, unsigned) { unavailable(); }
void add_forward(float*, const float*, const float*, size_t) { unavailable(); }
void mul_forward(float*, const float*, const float*, size_t) { unavailable(); }
void mul_backward(float*, const float*, const float*, size_t, unsigned) { unavailable(); }
void relu_forward(float*, const float*, size_t) { unavailable(); }
void relu_backward(float*, const float*, const float*, size_t, unsigned) { unavailable(); }
void tanh_forward(float*, const float*, size_t) { unavailable(); }
void tanh_backward(float*, const float*, const float*, size_t, unsigned) { unavailable(); }
void sigmoid_forward(float*, const float*, size_t) { unavailable(); }
void sigmoid_backward(float*, const float*, const float*, size_t, unsigned) { unavailable(); }
void gate_forward(float*, const float*, int, int, int) { unavailable(); }
void gate_backward(float*, const float*, const float*, int, int, int, unsigned) { unavailable(); }
void down_shift_forward(float*, const float*, int, int, int) { unavailable(); }
void down_shift_backward(float*, const float*, int, int, int, unsigned) { unavailable(); }
void batchnorm_forward_train(float*, float*, float*, float*, float*, const float*, const float*,
                             const float*, int, int, int, float, float) {
  unavailable();
}
void batchnorm_forward_eval(float*, float*, float*, const float*, const float*, const float*,
                            const float*, const float*, int, int, int, float) {
  unavailable();
}
void batchnorm_backward(float*, float*, float*, const float*, const float*, const float*,
                        const float*, const float*, int, int, int, bool, unsigned) {
  unavailable();
}
void softmax_ce_forward(float*, const float*, const float*, const uint8_t*, int, int, int) {
  unavailable();
}
void softmax_ce_backward(float*, float*, const float*, const float*, const float*, const uint8_t*,
                         int, int, int, unsigned) {
  unavailable();
}
void mse_forward(float*, const float*, const float*, size_t) { unavailable(); }
void mse_backward(float*, const float*, const float*, const float*, size_t, unsigned) { unavailable(); }
void mean_forward(float*, const float*, size_t) { unavailable(); }
void mean_backward(float*, const float*, size_t, unsigned) { unavailable(); }
void rmsprop_step(float*, float*, float*, const float*, size_t, float, float, float, float) {
  unavailable();
}
void adam_step(float*, float*, float*, const float*, size_t, float, float, float, float, long) {
  unavailable();
}

}  // namespace prsr::cuda
