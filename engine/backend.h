// The low-level kernels every backend implements: this file is the whole contract between the
// engine (tensors, tape, ops.h) and a backend.
//
// Three implementations exist, with identical signatures (the list: engine/kernels.def):
//   ref::   naive loops, templated on the element type (runs in double for gradient checks);
//           the ground truth. Defined inline in engine/ref/kernels.h.
//   cpu::   float32, oneDNN primitives for convolutions, OpenMP for the rest (engine/cpu/).
//   cuda::  float32, cuBLAS + custom kernels; every pointer is device memory (engine/cuda/).
//           In a build without nvcc, every cuda:: function throws Error("not compiled with CUDA
//           support").
//
// Conventions (as in llm.c): outputs first, inputs next, shapes last. Layout is NCHW everywhere.
// Forward kernels OVERWRITE their outputs. Backward kernels ACCUMULATE (+=) into every gradient
// pointer that is not null; a null gradient pointer means "not needed, skip it".
// Fresh gradients: every backward kernel (and axpy: the PRSR_GRAD_KERNELs of kernels.def) takes
// `fresh` last, a bit mask over its gradient pointers in argument order (bit 0: the first). A set
// bit says that buffer is new and holds garbage: the kernel OVERWRITES it (=) instead of
// accumulating. The graph sets it for the activation gradients it has just allocated, which
// saves zero-filling them and reading the zeros back (1.6 GB per training step of the default
// model).
// Scalars (losses) are 1-element tensors in the backend's memory.
#pragma once
#include <cstddef>
#include <cstdint>

namespace prsr {

enum class Device { Ref, Cpu, Cuda };
const char* device_name(Device d);

// Stride-1 convolution with asymmetric zero padding and any kernel shape.
//   x: [n, ci, h, w]   w: [co, ci, kh, kw]   b: [co] or null   y: [n, co, ho, wo]
//   y[n,o,i,j] = b[o] + sum_{c,ky,kx} w[o,c,ky,kx] * x[n, c, i + ky - pad_t, j + kx - pad_l]
//
// Colour blocks (optional, 1x1 kernels only): colors > 0 says that w[o, i] is zero unless input
// channel i's colour group may feed output channel o's, with groups contiguous ranges
// (group of channel f out of c = f * colors / c, as in engine/mask.h with period = c):
// group(i) <= group(o) (mask B) or group(i) < group(o) (strict, mask A). A backend may skip the
// products of those zero blocks (the colour-masked prior head skips a third of its work); the
// weight gradient of the skipped entries is then left as it was (callers only use it through
// the mask, which zeroes it). colors = 0: dense.
struct ConvGeom {
  int n, ci, h, w;
  int co, kh, kw;
  int pad_t, pad_b, pad_l, pad_r;
  int colors = 0;       // colour blocks (see above); 0: dense
  bool strict = false;  // mask A (group(i) < group(o)) instead of mask B (<=)
  int ho() const { return h + pad_t + pad_b - kh + 1; }
  int wo() const { return w + pad_l + pad_r - kw + 1; }
};

// The colour blocks of a 1x1 conv: output rows [o0, o1) read input channels [0, k1) only
// (one block {0, co, ci} when dense). At most 3 colours.
struct ColourBlock {
  int o0, o1, k1;
};
struct ColourBlocks {
  int count = 0;
  ColourBlock b[3];
};
inline ColourBlocks colour_blocks(const ConvGeom& g) {
  ColourBlocks r;
  if (g.colors <= 0) {
    r.count = 1;
    r.b[0] = {0, g.co, g.ci};
    return r;
  }
  for (int grp = 0; grp < g.colors && grp < 3; ++grp) {
    ColourBlock blk{g.co, 0, 0};
    for (int o = 0; o < g.co; ++o)
      if (o * g.colors / g.co == grp) {
        blk.o0 = o < blk.o0 ? o : blk.o0;
        blk.o1 = o + 1;
      }
    for (int i = 0; i < g.ci; ++i) {
      const int gi = i * g.colors / g.ci;
      if (g.strict ? gi < grp : gi <= grp) blk.k1 = i + 1;
    }
    if (blk.o1 > blk.o0) r.b[r.count++] = blk;
  }
  return r;
}

// Transposed convolution (the adjoint of a strided conv), square kernel k.
//   x: [n, ci, h, w]   w: [co, ci, k, k]   b: [co] or null   y: [n, co, ho, wo]
//   ho = (h - 1) * stride - 2 * pad + k + out_pad
//   y[n, o, i*stride - pad + ky, j*stride - pad + kx] += w[o, c, ky, kx] * x[n, c, i, j]   (+ b[o])
// (This is also oneDNN's deconvolution definition with weights in oihw.)
struct DeconvGeom {
  int n, ci, h, w;
  int co, k, stride, pad, out_pad;
  int ho() const { return (h - 1) * stride - 2 * pad + k + out_pad; }
  int wo() const { return (w - 1) * stride - 2 * pad + k + out_pad; }
};

// Number of levels per sub-pixel; logits are [n, colors * 256, h, w], channel = colour*256+level.
constexpr int kLevels = 256;

// The kernels themselves are listed once, in engine/kernels.def; the two blocks below declare
// that list in prsr::cpu and prsr::cuda (and engine/cuda/stubs.cpp, engine/ref/kernels.h use it
// too), so the backends' signatures cannot drift apart. Read kernels.def for each kernel's
// parameters and meaning.
//
// (a, b) -> (a, b, unsigned fresh [= 0]): the parameters of a PRSR_GRAD_KERNEL.
#define PRSR_WITH_FRESH(...) (__VA_ARGS__, unsigned fresh)
#define PRSR_WITH_FRESH_DEFAULT(...) (__VA_ARGS__, unsigned fresh = 0)

namespace cpu {
#define PRSR_KERNEL(name, params) void name params;
#define PRSR_GRAD_KERNEL(name, params) void name PRSR_WITH_FRESH_DEFAULT params;
#include "engine/kernels.def"

// Opt-in bf16 convolutions (--precision bf16; engine/cpu/isa.cpp, engine/cpu/conv.cpp): every
// convolution and transposed convolution reads its inputs (activations, weights, output
// gradients) rounded to bf16 and accumulates in fp32; outputs and gradients are fp32, and the
// master weights and optimiser state stay fp32. Only where the CPU has AVX512_BF16 or AMX-BF16
// (detected with cpuid at run time): elsewhere set_bf16(true) throws, it never emulates.
bool bf16_supported();
const char* bf16_unsupported_reason();  // why not, naming the missing instruction sets; "" if supported
void set_bf16(bool enabled);            // throws prsr::Error where !bf16_supported()
bool bf16_enabled();
}  // namespace cpu

// The CUDA backend has the same kernels (all pointers are device pointers) plus memory helpers.
namespace cuda {
bool available();                  // compiled in and a device present
const char* unavailable_reason();  // "not compiled with CUDA support" / "no CUDA device" / ...
void* malloc_device(size_t bytes);
void free_device(void* p);
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void copy_device(void* dst, const void* src, size_t bytes);
void synchronize();
void set_tf32(bool enabled);  // opt-in TF32 tensor-core math for the GEMMs; off by default
void* stream_handle();        // the backend's one stream (a cudaStream_t): NCCL calls join it

// Synchronised batch norm in training mode on device memory (engine/sync_bn.h has the semantics
// and the host version): per-channel sums in double on the device, `bn_sum` adds them over all
// ranks in place (device memory: NCCL, train/distributed.cpp), then the same block-per-channel
// kernels finish. Not in kernels.def: the host backends share engine/sync_bn.h instead.
void sync_batchnorm_forward(void (*bn_sum)(double*, int), float* y, float* mean, float* invstd, float* running_mean,
                            float* running_var, const float* x, const float* gamma, const float* beta, int n, int c,
                            int hw, float momentum, float eps);
void sync_batchnorm_backward(void (*bn_sum)(double*, int), float* dx, float* dgamma, float* dbeta, const float* dy,
                             const float* x, const float* gamma, const float* mean, const float* invstd, int n, int c,
                             int hw, unsigned fresh);

#define PRSR_KERNEL(name, params) void name params;
#define PRSR_GRAD_KERNEL(name, params) void name PRSR_WITH_FRESH_DEFAULT params;
#include "engine/kernels.def"
}  // namespace cuda

}  // namespace prsr
