// The GPU cached sampler's launchers in a build without nvcc (model/sampler_gpu.cu otherwise):
// they throw, as engine/cuda/stubs.cpp's entry points do. (A Device::Cuda model cannot be made
// in such a build, so sample_images never gets here; the emulated sampler never calls them.)
#include "engine/error.h"
#include "model/sampler_kernels.h"

namespace prsr::gpu_sampler {

void launch_row(const Plan&, int) { throw Error("not compiled with CUDA support"); }
void launch_vertical(const Plan&, int, int) { throw Error("not compiled with CUDA support"); }

}  // namespace prsr::gpu_sampler
