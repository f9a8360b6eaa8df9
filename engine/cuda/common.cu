// Device discovery, the stream and cuBLAS handle, memory helpers, TF32 switch and the scratch
// workspace (see common.cuh).
#include <string>

#include "engine/cuda/common.cuh"

namespace prsr::cuda {

namespace detail {
void fail(const char* what, const char* call, const char* file, int line) {
  throw Error(std::string("CUDA error: ") + what + " (" + call + ") at " + file + ":" + std::to_string(line));
}
}  // namespace detail

namespace {

struct Probe {
  bool ok;
  std::string reason;
};

// Asked once: is there a usable device? Errors (no driver, driver too old, ...) are kept as the
// reason instead of being thrown.
const Probe& probe() {
  static const Probe p = [] {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e == cudaErrorNoDevice) {
      cudaGetLastError();  // clear it so that no later check reports it
      return Probe{false, "no CUDA device"};
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      return Probe{false, std::string(cudaGetErrorString(e))};
    }
    if (count <= 0) return Probe{false, "no CUDA device"};
    return Probe{true, ""};
  }();
  return p;
}

bool g_tf32 = false;

cublasMath_t math_mode() { return g_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH; }

// The stream and handle live for the whole process and are deliberately never destroyed:
// destroying them from a static destructor may run after the CUDA runtime has shut down.
struct Context {
  cudaStream_t stream = nullptr;
  cublasHandle_t handle = nullptr;
  Context() {
    CUDA_CHECK(cudaStreamCreate(&stream));
    CUBLAS_CHECK(cublasCreate(&handle));
    CUBLAS_CHECK(cublasSetStream(handle, stream));
    // alpha/beta are host scalars in every call of this backend.
    CUBLAS_CHECK(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST));
    CUBLAS_CHECK(cublasSetMathMode(handle, math_mode()));
  }
};

Context& context() {
  static Context ctx;
  return ctx;
}

struct Buffer {
  void* ptr = nullptr;
  size_t bytes = 0;
};

Buffer* slots() {
  static Buffer b[int(Slot::Count)];
  return b;
}

}  // namespace

}  // namespace prsr::cuda

namespace prsr {

bool cuda::available() { return probe().ok; }
const char* cuda::unavailable_reason() { return probe().reason.c_str(); }

cudaStream_t cuda::stream() { return context().stream; }
cublasHandle_t cuda::cublas() { return context().handle; }
void* cuda::stream_handle() { return stream(); }

void cuda::set_tf32(bool enabled) {
  g_tf32 = enabled;
  CUBLAS_CHECK(cublasSetMathMode(cublas(), math_mode()));
}

void* cuda::workspace(Slot slot, size_t bytes) {
  Buffer& b = slots()[int(slot)];
  if (bytes > b.bytes) {
    if (b.ptr) {
      CUDA_CHECK(cudaStreamSynchronize(stream()));  // earlier ops may still read the old buffer
      CUDA_CHECK(cudaFree(b.ptr));
      b.ptr = nullptr;
      b.bytes = 0;
    }
    CUDA_CHECK(cudaMalloc(&b.ptr, bytes));
    b.bytes = bytes;
  }
  return b.ptr;
}

void* cuda::malloc_device(size_t bytes) {
  void* p = nullptr;
  if (bytes == 0) return nullptr;
  CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}

void cuda::free_device(void* p) {
  if (!p) return;
  CUDA_CHECK(cudaStreamSynchronize(stream()));  // pending work may still use p
  CUDA_CHECK(cudaFree(p));
}

// Host copies are synchronous (copy, then wait): the caller may reuse or read its host buffer as
// soon as the call returns.
void cuda::copy_to_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()));
  CUDA_CHECK(cudaStreamSynchronize(stream()));
}

void cuda::copy_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()));
  CUDA_CHECK(cudaStreamSynchronize(stream()));
}

void cuda::copy_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()));
}

void cuda::synchronize() { CUDA_CHECK(cudaStreamSynchronize(stream())); }

}  // namespace prsr
