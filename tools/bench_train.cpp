// Training-step benchmark (not a test): images/s, ms/step, achieved GFLOP/s and % of this
// machine's conv peak measured in the same run, a per-op breakdown of the step, heap
// allocations inside the step loop, and peak resident memory.
//
//   build/bench_train [--batch 32] [--steps 5] [--warmup 2] [--colors 3] [--threads 2]
//                     [--device cpu|cuda] [--layers 20] [--channels 32] [--head 1024] ...
//                     [--precision fp32|bf16]
// bf16 (convolutions in bf16, fp32 accumulation) needs AVX512_BF16 or AMX-BF16: elsewhere
// --precision bf16 prints "bf16: not supported on this CPU: ..." and exits 1, and an fp32 run
// ends with the same line, so that every report says whether bf16 could be measured.
#include <omp.h>
#include <sys/resource.h>
#include <time.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "engine/cpu/conv.h"
#include "model/trainer.h"
#include "tools/conv_peak.h"

// Count every heap allocation of the process at the malloc level (operator new, oneDNN's
// posix_memalign, libgomp...: glibc's own entry points underneath). prsr itself allocates
// nothing in the step loop; what is counted comes from inside oneDNN: small argument maps in
// every primitive execute() and dnnl_sgemm call, and one packing buffer of >= 64 KiB per
// dnnl_sgemm call with more than 256 rows (the prior head's and conditioning output's GEMMs;
// glibc serves them from its heap after the first step: no page faults, no system calls).
// Cutting those GEMMs into 256-row calls removes them but made head2's backward-data twice as
// slow (measured), so they stay. (Not in sanitizer builds, whose runtime owns malloc.)
static std::atomic<long> g_allocs{0}, g_large_allocs{0};
static bool g_trap = false;  // PRSR_TRAP_ALLOC=1: stop at the first large allocation in the loop
static long g_trap_at = -1;  // PRSR_TRAP_SMALL=k: stop at the k-th allocation in the loop
[[maybe_unused]] static void count_alloc(size_t n) {
  if (++g_allocs == g_trap_at) __builtin_trap();
  if (n >= 65536) {
    ++g_large_allocs;
    if (g_trap) __builtin_trap();
  }
}
#if !defined(__SANITIZE_ADDRESS__)
extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
void* malloc(size_t n) {
  count_alloc(n);
  return __libc_malloc(n);
}
void* calloc(size_t k, size_t n) {
  count_alloc(k * n);
  return __libc_calloc(k, n);
}
void* realloc(void* p, size_t n) {
  count_alloc(n);
  return __libc_realloc(p, n);
}
void* memalign(size_t a, size_t n) {
  count_alloc(n);
  return __libc_memalign(a, n);
}
void* aligned_alloc(size_t a, size_t n) {
  count_alloc(n);
  return __libc_memalign(a, n);
}
int posix_memalign(void** p, size_t a, size_t n) {
  count_alloc(n);
  *p = __libc_memalign(a, n);
  return *p ? 0 : 12;  // ENOMEM
}
}
#endif

using namespace prsr;

namespace {

// Process CPU time (all threads), seconds: on a loaded machine it still measures the work.
double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

long peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024;
}

int int_arg(int argc, char** argv, const char* name, int def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == name) return std::atoi(argv[i + 1]);
  return def;
}
std::string str_arg(int argc, char** argv, const char* name, const char* def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == name) return argv[i + 1];
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help") {
      std::printf(
          "usage: bench_train [--batch 32] [--steps 5] [--warmup 2] [--colors 3] [--threads 2]\n"
          "                   [--device cpu|cuda] [--layers 20] [--channels 32] [--head 1024]\n"
          "                   [--cond-channels 32] [--cond-blocks 6] [--optimizer rmsprop]\n"
          "                   [--conv-profile]   (per conv shape and direction: reorders vs primitive;\n"
          "                                       the 1x1 GEMM path by direction)\n"
          "                   [--precision fp32|bf16]  (bf16: CPUs with AVX512_BF16 or AMX-BF16 only)\n");
      return 0;
    }
  const int batch = int_arg(argc, argv, "--batch", 32), steps = int_arg(argc, argv, "--steps", 5);
  const int warmup = int_arg(argc, argv, "--warmup", 2), threads = int_arg(argc, argv, "--threads", 2);
  const std::string dev_name = str_arg(argc, argv, "--device", "cpu");
  omp_set_num_threads(threads);
  ModelConfig cfg;
  cfg.colors = int_arg(argc, argv, "--colors", 3);
  cfg.prior_layers = int_arg(argc, argv, "--layers", cfg.prior_layers);
  cfg.prior_channels = int_arg(argc, argv, "--channels", cfg.prior_channels);
  cfg.head = int_arg(argc, argv, "--head", cfg.head);
  cfg.cond_channels = int_arg(argc, argv, "--cond-channels", cfg.cond_channels);
  cfg.cond_blocks = int_arg(argc, argv, "--cond-blocks", cfg.cond_blocks);
  OptimConfig oc;
  oc.kind = str_arg(argc, argv, "--optimizer", "rmsprop");
  const Device dev = dev_name == "cuda" ? Device::Cuda : Device::Cpu;
  const std::string precision = str_arg(argc, argv, "--precision", "fp32");
  if (precision != "fp32" && precision != "bf16") {
    std::printf("--precision: expected fp32 or bf16, got '%s'\n", precision.c_str());
    return 2;
  }
  if (precision == "bf16") {
    if (dev != Device::Cpu) {
      std::printf("bf16: implemented on the CPU only\n");
      return 1;
    }
    if (!cpu::bf16_supported()) {
      std::printf("bf16: not supported on this CPU: %s\n", cpu::bf16_unsupported_reason());
      return 1;
    }
    cpu::set_bf16(true);
  }
  if (dev == Device::Cuda && !cuda::available()) {
    std::printf("cuda: %s\n", cuda::unavailable_reason());
    return 1;
  }

  double peak = 0;
  if (dev == Device::Cpu) {
    peak = bench::conv_peak_gflops();
    std::printf("conv peak (oneDNN 3x3, N=32, 64->64, 32x32, fwd, %d threads, best of 30 calls): %.1f GFLOP/s\n",
                threads, peak);
  }
  Model<float> model(cfg, dev);
  model.init(1);
  const double fwd = model.forward_flops_per_image();
  std::printf("model: %s\n  %zu parameters, %.3f GFLOP/image forward, %.3f GFLOP/image per training step (3x)\n",
              cfg.to_string().c_str(), model.parameter_count(), fwd / 1e9, 3 * fwd / 1e9);
  if (dev == Device::Cpu && cfg.has_prior()) {
    // The CPU backend runs the colour-masked prior head as block GEMMs (engine/cpu/conv.cpp):
    // the model FLOPs above count the masked blocks too (as a dense framework executes them).
    double skipped = 0;
    for (const ConvLayer<float>* c : {&model.head1, &model.head2}) {
      const Shape& w = c->w->shape;
      ConvGeom g{1, w.c, cfg.size, cfg.size, w.n, 1, 1, 0, 0, 0, 0};
      g.colors = cfg.colors;
      const ColourBlocks cb = colour_blocks(g);
      double kept = 0;
      for (int k = 0; k < cb.count; ++k) kept += double(cb.b[k].o1 - cb.b[k].o0) * cb.b[k].k1;
      skipped += 3 * 2.0 * (double(w.n) * w.c - kept) * cfg.size * cfg.size;
    }
    std::printf("  (the CPU backend skips the head's colour-masked blocks: %.3f GFLOP/image per step executed)\n",
                (3 * fwd - skipped) / 1e9);
  }
  std::mt19937 rng(3);
  std::vector<uint8_t> data(size_t(batch) * cfg.size * cfg.size * cfg.colors);
  for (auto& v : data) v = uint8_t(rng() % 256);
  std::vector<const uint8_t*> imgs(batch);
  for (int b = 0; b < batch; ++b) imgs[b] = data.data() + size_t(b) * cfg.size * cfg.size * cfg.colors;

  Trainer<float> trainer(model, oc, batch);
  for (int s = 0; s < warmup; ++s) trainer.step(imgs.data(), s);
  OpProfile prof;
  trainer.graph().profile = &prof;
  bool conv_prof = false;
  for (int i = 1; i < argc; ++i) conv_prof |= std::string(argv[i]) == "--conv-profile";
  if (conv_prof && dev == Device::Cpu) cpu::detail::set_conv_profile(true);
  Trainer<float>::StepTimes phase;
  const long allocs0 = g_allocs.load(), large0 = g_large_allocs.load();
  g_trap = std::getenv("PRSR_TRAP_ALLOC") != nullptr;
  if (const char* k = std::getenv("PRSR_TRAP_SMALL")) g_trap_at = allocs0 + std::atol(k);
  std::vector<double> times, cpu_times;
  double opt_s = 0;
  StepResult r;
  for (int s = 0; s < steps; ++s) {
    const double t0 = now_seconds(), c0 = cpu_seconds();
    r = trainer.step(imgs.data(), warmup + s);
    if (dev == Device::Cuda) cuda::synchronize();
    times.push_back(now_seconds() - t0);
    cpu_times.push_back(cpu_seconds() - c0);
    const auto& lt = trainer.last_times();
    phase.setup += lt.setup / steps;
    phase.forward += lt.forward / steps;
    phase.backward += lt.backward / steps;
    phase.optimizer += lt.optimizer / steps;
  }
  g_trap = false;
  const long allocs = g_allocs.load() - allocs0, large = g_large_allocs.load() - large0;
  {  // optimiser alone
    const double t0 = now_seconds();
    for (int s = 0; s < steps; ++s) trainer.optimizer().step(1000);
    if (dev == Device::Cuda) cuda::synchronize();
    opt_s = (now_seconds() - t0) / steps;
  }
  std::sort(times.begin(), times.end());
  std::sort(cpu_times.begin(), cpu_times.end());
  const double med = times[times.size() / 2];
  if (dev == Device::Cpu) {  // again after the steps: the machine may have changed pace meanwhile
    const double peak2 = bench::conv_peak_gflops();
    std::printf("conv peak after the steps: %.1f GFLOP/s\n", peak2);
    peak = std::max(peak, peak2);
  }
  const double gflops = 3 * fwd * batch / med / 1e9;
  std::printf("\nbatch %d, %d threads, device %s, %s, %d timed steps (median):\n", batch, threads, dev_name.c_str(),
              precision == "bf16" ? "bf16 convolutions (fp32 accumulation)" : "fp32", steps);
  std::printf("  %.1f images/s   %.0f ms/step   %.1f GFLOP/s achieved", batch / med, med * 1e3, gflops);
  if (peak > 0) std::printf("   %.0f%% of the conv peak (%.1f)", 100 * gflops / peak, peak);
  std::printf("\n  fastest step %.0f ms (%.1f images/s)", times.front() * 1e3, batch / times.front());
  std::printf("\n  CPU time %.0f ms/step (%.2f cores busy)", cpu_times[cpu_times.size() / 2] * 1e3,
              cpu_times[cpu_times.size() / 2] / med);
  std::printf("\n  phases (mean ms/step): setup %.1f, forward %.1f, backward %.1f, optimizer %.1f", phase.setup * 1e3,
              phase.forward * 1e3, phase.backward * 1e3, phase.optimizer * 1e3);
  std::printf(
      "\n  loss %.3f; heap allocations per step in the loop (malloc level): %ld >= 64 KiB (dnnl_sgemm's\n"
      "  packing buffers), %.0f small (oneDNN's execute and sgemm)\n"
      "  peak RSS %ld MiB, graph arena %.0f MiB (high-water %.0f MiB)\n",
      r.loss, large / steps, double(allocs - large) / steps, peak_rss_mib(),
      trainer.graph().arena().reserved_bytes() / 1048576.0, trainer.graph().arena().used_bytes() / 1048576.0);
  std::printf("\nper-op breakdown (ms per step, sum of kernel calls):\n  %-12s %9s %9s %7s\n", "op", "forward",
              "backward", "share");
  double total = 0;
  for (int o = 0; o < kOpCount; ++o) total += prof.fwd_s[o] + prof.bwd_s[o];
  for (int o = 0; o < kOpCount; ++o) {
    if (!prof.fwd_calls[o] && !prof.bwd_calls[o]) continue;
    std::printf("  %-12s %9.1f %9.1f %6.1f%%\n", op_name(Op(o)), prof.fwd_s[o] * 1e3 / steps,
                prof.bwd_s[o] * 1e3 / steps, 100 * (prof.fwd_s[o] + prof.bwd_s[o]) / total);
  }
  std::printf("  %-12s %9.1f\n", "optimizer", opt_s * 1e3);
  const double mean_step = phase.setup + phase.forward + phase.backward + phase.optimizer;
  std::printf("  %-12s %9.1f  (mean step time not in ops or optimizer: batch upload, graph, zeroing)\n", "other",
              mean_step * 1e3 - total * 1e3 / steps - opt_s * 1e3);
  if (conv_prof && dev == Device::Cpu) cpu::detail::print_conv_profile(steps);
  if (dev == Device::Cpu && precision == "fp32") {
    if (cpu::bf16_supported()) std::printf("\nbf16: supported on this CPU: measure it with --precision bf16\n");
    else std::printf("\nbf16: not supported on this CPU: %s\n", cpu::bf16_unsupported_reason());
  }
  return 0;
}
