// The cached sampler on the GPU (`--device cuda`): the CPU cached sampler's algorithm
// (model/sampler.cpp) as CUDA kernels (model/sampler_kernels.h, model/sampler_gpu.cu). The
// weights are packed and uploaded once per call, every buffer lives on the device, A(x) stays
// on the device, the uniforms are uploaded once, and only the finished images come back. Per
// image row: one launch of the row kernel (every pixel and colour of the row, one block per
// image: the horizontal stack, the head, A + B and the draw) and 1 + layers launches of the
// vertical kernel (one block per image and column).
//
// It draws the same uniforms in the same order as the CPU samplers, with the same
// double-precision draw, so with the same seed it gives the same images as the CPU cached and
// naive samplers (its logits agree with theirs to float32 rounding).
#pragma once
#include <cstdint>
#include <vector>

#include "model/sampler.h"

namespace prsr {

// The GPU cached sampler; sample_images calls it for a Device::Cuda model when opt.cached.
// opt.profile is not filled (the parts run as one kernel per row); opt.progress is called after
// each row (the stream is synchronised for it); opt.logits_out and opt.stop_after work as for
// the CPU sampler. Throws where sample_images would (check_cacheable, bad options), and
// "not compiled with CUDA support" in a build without CUDA.
std::vector<uint8_t> sample_images_gpu(Model<float>& model, const uint8_t* x, int n, const SampleOptions& opt);

// Tests: the GPU sampler's algorithm with every kernel run on the host instead (any model
// device: A(x) is computed on the model's device and brought to the host). Each block runs its
// body on `threads_per_block` host threads with a barrier (1: serially, in the calling thread).
std::vector<uint8_t> sample_images_gpu_emulated(Model<float>& model, const uint8_t* x, int n, const SampleOptions& opt,
                                                int threads_per_block = 1);

}  // namespace prsr
