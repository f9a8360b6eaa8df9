// Sampling benchmark (not a test): naive vs cached sampling with the default model.
//   build/bench_sampler [--images 16] [--colors 3] [--naive-steps 6] [--threads 2]
// The naive sampler (a full prior pass per sub-pixel) is timed over --naive-steps sub-pixels
// and extrapolated to the 32*32*C of a whole image; the cached sampler runs whole images. Both
// draw the same numbers in the same order: the first sub-pixels are compared for identity.
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

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
      std::printf("usage: bench_sampler [--images 16] [--colors 3] [--naive-steps 6] [--threads 2]\n");
      return 0;
    }
  const int n = int_arg(argc, argv, "--images", 16), naive_steps = int_arg(argc, argv, "--naive-steps", 6);
  if (n < 1 || naive_steps < 1) {
    std::fprintf(stderr, "bench_sampler: --images and --naive-steps must be at least 1\n");
    return 2;
  }
  omp_set_num_threads(int_arg(argc, argv, "--threads", 2));
  ModelConfig cfg;
  cfg.colors = int_arg(argc, argv, "--colors", 3);
  Model<float> m(cfg, Device::Cpu);
  m.init(1);
  const int C = cfg.colors, S = cfg.size, L = cfg.low();
  const long subpixels = long(S) * S * C;
  std::mt19937 rng(5);
  std::vector<uint8_t> x(size_t(n) * L * L * C);
  for (auto& v : x) v = uint8_t(rng() % 256);
  std::printf("default model (%s), %d images, %d threads\n", cfg.to_string().c_str(), n, omp_get_max_threads());

  SampleOptions o;
  o.seed = 42;
  double t0 = now_seconds();
  const auto cached = sample_images(m, x.data(), n, o);
  const double cached_s = now_seconds() - t0;

  SampleOptions o1 = o;
  t0 = now_seconds();
  sample_images(m, x.data(), 1, o1);
  const double cached_1 = now_seconds() - t0;

  SampleOptions on = o;
  on.cached = false;
  on.stop_after = naive_steps;
  t0 = now_seconds();
  const auto naive = sample_images(m, x.data(), n, on);
  const double naive_part = now_seconds() - t0;
  const double naive_s = naive_part / naive_steps * subpixels;

  // The first naive_steps sub-pixels (raster, R<G<B) of every image must match.
  long compared = 0, differ = 0;
  for (int b = 0; b < n; ++b)
    for (long k = 0; k < naive_steps; ++k) {
      const size_t idx = (size_t(b) * S * S + size_t(k / C)) * C + size_t(k % C);
      ++compared;
      differ += cached[idx] != naive[idx];
    }
  std::printf("\n  cached sampler, batch %2d: %8.2f s  (%.3f s per image)\n", n, cached_s, cached_s / n);
  std::printf("  cached sampler, batch  1: %8.2f s  (%.3f s per image)\n", cached_1, cached_1);
  std::printf("  naive sampler,  batch %2d: %8.0f s  (extrapolated from %d of %ld sub-pixels: %.2f s)\n", n, naive_s,
              naive_steps, subpixels, naive_part);
  std::printf("  speed-up cached vs naive: %.0fx\n", naive_s / cached_s);
  std::printf("  identical draws on the compared sub-pixels: %ld of %ld\n", compared - differ, compared);
  return differ ? 1 : 0;
}
