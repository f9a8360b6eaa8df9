// GPU sampling benchmark (not a test): the cached sampler on the GPU's own kernels
// (model/sampler_gpu.h) with the default model on --device cuda.
//   build/tools/bench_sampler_gpu [--images 16] [--colors 3] [--repeat 3] [--naive-steps 3]
// Prints images/s for batch --images and batch 1 (the fastest of --repeat runs, after one
// untimed row for the first-call set-up), the kernel launches per batch, and the GPU naive
// sampler (the whole prior per sub-pixel, through the CUDA backend) timed over --naive-steps
// sub-pixels and extrapolated; the first sub-pixels of both are compared for identity.
// Without a GPU it prints one line saying so and exits 0.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/graph.h"
#include "model/sampler.h"

using namespace prsr;

namespace {
int int_arg(int argc, char** argv, const char* name, int def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == name) return std::atoi(argv[i + 1]);
  return def;
}
}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help") {
      std::printf("usage: bench_sampler_gpu [--images 16] [--colors 3] [--repeat 3] [--naive-steps 3]\n");
      return 0;
    }
  const int n = int_arg(argc, argv, "--images", 16), repeat = int_arg(argc, argv, "--repeat", 3);
  const int naive_steps = int_arg(argc, argv, "--naive-steps", 3);
  if (n < 1 || repeat < 1 || naive_steps < 0) {
    std::fprintf(stderr, "bench_sampler_gpu: --images and --repeat must be at least 1, --naive-steps at least 0\n");
    return 2;
  }
  if (!cuda::available()) {
    std::printf("bench_sampler_gpu: no GPU present (%s): the GPU sampler was not benchmarked\n",
                cuda::unavailable_reason());
    return 0;
  }
  ModelConfig cfg;
  cfg.colors = int_arg(argc, argv, "--colors", 3);
  Model<float> m(cfg, Device::Cuda);
  m.init(1);
  const int C = cfg.colors, S = cfg.size, L = cfg.low();
  const long subpixels = long(S) * S * C;
  std::mt19937 rng(5);
  std::vector<uint8_t> x(size_t(n) * L * L * C);
  for (auto& v : x) v = uint8_t(rng() % 256);
  std::printf("default model (%s) on the GPU, %d images\n", cfg.to_string().c_str(), n);
  std::printf("kernel launches per batch (any batch size): %d row kernels + %d vertical kernels\n", S,
              (S - 1) * (1 + cfg.prior_layers));

  SampleOptions o;
  o.seed = 42;
  SampleOptions warm = o;
  warm.stop_after = long(S) * C;  // one row: the first-call set-up (context, module load)
  sample_images(m, x.data(), n, warm);
  std::vector<uint8_t> cached;
  auto best_of = [&](int images) {
    double best = 1e30;
    for (int r = 0; r < repeat; ++r) {
      const double t0 = now_seconds();
      auto y = sample_images(m, x.data(), images, o);  // returns when the images are on the host
      best = std::min(best, now_seconds() - t0);
      if (images == n) cached = std::move(y);
    }
    return best;
  };
  const double t_n = best_of(n), t_1 = best_of(1);
  std::printf("  GPU cached sampler, batch %3d: %8.3f s  (%.1f images/s)\n", n, t_n, n / t_n);
  std::printf("  GPU cached sampler, batch   1: %8.3f s  (%.1f images/s)\n", t_1, 1 / t_1);

  if (naive_steps > 0) {
    SampleOptions on = o;
    on.cached = false;
    on.stop_after = 1;
    sample_images(m, x.data(), n, on);
    on.stop_after = naive_steps;
    const double t0 = now_seconds();
    const auto naive = sample_images(m, x.data(), n, on);
    const double part = now_seconds() - t0, naive_s = part / naive_steps * subpixels;
    long differ = 0;
    for (int b = 0; b < n; ++b)
      for (long k = 0; k < naive_steps; ++k) {
        const size_t idx = (size_t(b) * S * S + size_t(k / C)) * C + size_t(k % C);
        differ += cached[idx] != naive[idx];
      }
    std::printf("  GPU naive sampler, batch %3d: %8.0f s  (extrapolated from %d of %ld sub-pixels: %.2f s)\n", n,
                naive_s, naive_steps, subpixels, part);
    std::printf("  speed-up cached vs naive on the GPU: %.0fx\n", naive_s / t_n);
    std::printf("  identical draws on the compared sub-pixels: %ld of %ld\n", long(n) * naive_steps - differ,
                long(n) * naive_steps);
    return differ ? 1 : 0;
  }
  return 0;
}
