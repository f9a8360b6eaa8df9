// bench_ops: the machine's conv peak (oneDNN at its best) and the speed of every prsr::cpu op at
// the model's real shapes, batch 32 (docs/design.md section 1). A benchmark, not a test.
//
//   ./build-cpu/bench_ops            all ops, the default conv layout
//   ./build-cpu/bench_ops --layouts  convs in both layouts (plain NCHW vs oneDNN's blocked ones)
//   ./build-cpu/bench_ops --quick    fewer repetitions
//
// Every op is warmed up (pages touched, primitives created), then timed several times; the
// table gives the median wall time and the median process CPU time per call. Compute-bound ops report GFLOP/s and % of
// the conv peak; memory-bound ops report GB/s (bytes read + written, counted once).
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <string>
#include <vector>

#include "engine/arena.h"
#include "engine/backend.h"
#include "engine/cpu/conv.h"

using namespace prsr;

namespace {

int g_min_reps = 5;
double g_min_seconds = 0.3;

using Clock = std::chrono::steady_clock;

// Process CPU time in ms (all threads). On a shared, loaded machine wall time is noise, while
// CPU time (with OMP_WAIT_POLICY=passive, so idle threads sleep instead of spinning) still
// measures the work; the table shows both.
double cpu_now_ms() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}
double g_last_cpu_ms = 0;  // median CPU time of the last time_ms() call

// Median wall time of f in ms: 2 warm-up calls, then at least g_min_reps calls and
// g_min_seconds. Also sets g_last_cpu_ms.
double time_ms(const std::function<void()>& f) {
  f();
  f();
  std::vector<double> t, c;
  const auto start = Clock::now();
  while (int(t.size()) < g_min_reps ||
         (std::chrono::duration<double>(Clock::now() - start).count() < g_min_seconds && t.size() < 200)) {
    const double c0 = cpu_now_ms();
    const auto a = Clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - a).count());
    c.push_back(cpu_now_ms() - c0);
  }
  std::sort(t.begin(), t.end());
  std::sort(c.begin(), c.end());
  g_last_cpu_ms = c[c.size() / 2];
  return t[t.size() / 2];
}

// A buffer from the arena's allocator (device_alloc: 2 MiB-aligned huge pages from 2 MiB, else
// 256-byte aligned), like the training step's tensors: oneDNN's sgemm takes a different path
// for 32-byte aligned operands (engine/cpu/conv.cpp), so std::vector's memory would not measure
// what the step runs.
struct Buf {
  float* ptr;
  size_t n;
  explicit Buf(size_t n_, float lo = -1, float hi = 1)
      : ptr(static_cast<float*>(device_alloc(Device::Cpu, n_ * sizeof(float)))), n(n_) {
    std::mt19937 g(unsigned(n * 2654435761u));
    std::uniform_real_distribution<float> u(lo, hi);
    for (size_t i = 0; i < n; ++i) ptr[i] = u(g);
  }
  ~Buf() { device_free(Device::Cpu, ptr); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  float* p() { return ptr; }
};

double g_peak = 0;      // GFLOP/s (wall)
double g_peak_cpu = 0;  // GFLOP per CPU-second: the peak conv's work per unit of CPU time

void row(const std::string& op, const std::string& shape, double ms, double gflop, double gbytes) {
  if (gflop > 0) {
    const double gfs = gflop / (ms * 1e-3);
    const double cpu_eff = gflop / (g_last_cpu_ms * 1e-3) / g_peak_cpu;
    std::printf("| %-34s | %-30s | %9.3f | %9.3f | %6.1f GFLOP/s | %5.1f%% | %5.1f%% |\n", op.c_str(), shape.c_str(),
                ms, g_last_cpu_ms, gfs, 100.0 * gfs / g_peak, 100.0 * cpu_eff);
  } else {
    std::printf("| %-34s | %-30s | %9.3f | %9.3f | %6.1f GB/s    |        |        |\n", op.c_str(), shape.c_str(), ms,
                g_last_cpu_ms, gbytes / (ms * 1e-3));
  }
  std::fflush(stdout);
}

// ---------------------------------------------------------------- (1) the conv peak
double conv_peak() {
  using namespace dnnl;
  using tag = memory::format_tag;
  const memory::dim N = 32, C = 64, H = 32, W = 32;
  engine eng(engine::kind::cpu, 0);
  stream strm(eng);
  auto any = [](memory::dims d) { return memory::desc(d, memory::data_type::f32, tag::any); };
  convolution_forward::desc desc(prop_kind::forward_training, algorithm::convolution_direct, any({N, C, H, W}),
                                 any({C, C, 3, 3}), any({C}), any({N, C, H, W}), {1, 1}, {1, 1}, {1, 1});
  convolution_forward::primitive_desc pd(desc, eng);
  memory src(pd.src_desc(), eng), wei(pd.weights_desc(), eng), bias(pd.bias_desc(), eng), dst(pd.dst_desc(), eng);
  for (memory* m : {&src, &wei, &bias, &dst}) {
    float* p = static_cast<float*>(m->get_data_handle());
    const size_t n = m->get_desc().get_size() / sizeof(float);
    for (size_t i = 0; i < n; ++i) p[i] = float((i * 7919) % 1000) * 1e-3f - 0.5f;
  }
  convolution_forward conv(pd);
  const double ms = time_ms([&] {
    conv.execute(strm, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}});
    strm.wait();
  });
  const double gflop = 2.0 * N * C * C * 9 * H * W * 1e-9;
  const double peak = gflop / (ms * 1e-3);
  g_peak_cpu = gflop / (g_last_cpu_ms * 1e-3);
  std::printf("conv peak: oneDNN 3x3 conv forward N=32 64->64 32x32 pad 1, format any (%s):\n", pd.impl_info_str());
  std::printf("           %.3f ms (cpu %.3f ms), %.1f GFLOP/s on %d threads\n\n", ms, g_last_cpu_ms, peak,
              omp_get_max_threads());
  return peak;
}

// ---------------------------------------------------------------- (2) prsr::cpu ops
std::string layout_name(cpu::detail::ConvLayout l) {
  return l == cpu::detail::ConvLayout::Plain ? " [plain]" : l == cpu::detail::ConvLayout::Any ? " [any]" : "";
}

void bench_conv(const std::string& name, const ConvGeom& g, bool bias, cpu::detail::ConvLayout layout) {
  cpu::detail::set_conv_layout(layout);
  const size_t nx = size_t(g.n) * g.ci * g.h * g.w, nw = size_t(g.co) * g.ci * g.kh * g.kw;
  const size_t ny = size_t(g.n) * g.co * g.ho() * g.wo();
  Buf x(nx), w(nw), b(g.co), y(ny), dy(ny), dx(nx, 0, 0), dw(nw, 0, 0), db(g.co, 0, 0);
  char shape[96];
  std::snprintf(shape, sizeof shape, "%d->%d %dx%d k%dx%d%s", g.ci, g.co, g.h, g.w, g.kh, g.kw, bias ? " +b" : "");
  const double gflop = 2.0 * g.n * g.co * g.ho() * g.wo() * g.ci * g.kh * g.kw * 1e-9;
  const std::string l = layout_name(layout);
  float* bp = bias ? b.p() : nullptr;
  row(name + " fwd" + l, shape, time_ms([&] { cpu::conv2d_forward(y.p(), x.p(), w.p(), bp, g); }), gflop, 0);
  row(name + " bwd dx" + l, shape,
      time_ms([&] { cpu::conv2d_backward(dx.p(), nullptr, nullptr, dy.p(), x.p(), w.p(), g); }), gflop, 0);
  row(name + " bwd dw" + (bias ? "+db" : "") + l, shape,
      time_ms([&] { cpu::conv2d_backward(nullptr, dw.p(), bias ? db.p() : nullptr, dy.p(), x.p(), w.p(), g); }), gflop,
      0);
}

void bench_deconv(const std::string& name, const DeconvGeom& g, bool bias, cpu::detail::ConvLayout layout) {
  cpu::detail::set_conv_layout(layout);
  const size_t nx = size_t(g.n) * g.ci * g.h * g.w, nw = size_t(g.co) * g.ci * g.k * g.k;
  const size_t ny = size_t(g.n) * g.co * g.ho() * g.wo();
  Buf x(nx), w(nw), b(g.co), y(ny), dy(ny), dx(nx, 0, 0), dw(nw, 0, 0), db(g.co, 0, 0);
  char shape[96];
  std::snprintf(shape, sizeof shape, "%d->%d %dx%d->%dx%d k%d s%d%s", g.ci, g.co, g.h, g.w, g.ho(), g.wo(), g.k,
                g.stride, bias ? " +b" : "");
  // useful MACs: every input pixel meets every k x k tap (minus the few clipped at the border)
  const double gflop = 2.0 * g.n * g.ci * g.h * g.w * g.co * g.k * g.k * 1e-9;
  const std::string l = layout_name(layout);
  float* bp = bias ? b.p() : nullptr;
  row(name + " fwd" + l, shape, time_ms([&] { cpu::deconv2d_forward(y.p(), x.p(), w.p(), bp, g); }), gflop, 0);
  row(name + " bwd dx" + l, shape,
      time_ms([&] { cpu::deconv2d_backward(dx.p(), nullptr, nullptr, dy.p(), x.p(), w.p(), g); }), gflop, 0);
  row(name + " bwd dw" + (bias ? "+db" : "") + l, shape,
      time_ms([&] { cpu::deconv2d_backward(nullptr, dw.p(), bias ? db.p() : nullptr, dy.p(), x.p(), w.p(), g); }),
      gflop, 0);
}

void bench_memory_ops() {
  const int N = 32, c = 32, hw = 1024;
  const size_t act = size_t(N) * c * hw;  // [32, 32, 32, 32]
  const double gb = 4e-9;                 // bytes per float, in GB
  Buf a(act), b(act), y(act), dy(act), dx(act, 0, 0);
  Buf z(2 * act, -3, 3), dz(2 * act, 0, 0);
  const std::string s = "[32, 32, 32x32]";
  row("fill", s, time_ms([&] { cpu::fill(y.p(), 0.5f, act); }), 0, gb * act);
  row("axpy", s, time_ms([&] { cpu::axpy(y.p(), 0.5f, a.p(), act); }), 0, gb * 3 * act);
  row("add fwd", s, time_ms([&] { cpu::add_forward(y.p(), a.p(), b.p(), act); }), 0, gb * 3 * act);
  row("mul fwd", s, time_ms([&] { cpu::mul_forward(y.p(), a.p(), b.p(), act); }), 0, gb * 3 * act);
  row("mul bwd", s, time_ms([&] { cpu::mul_backward(dx.p(), dy.p(), b.p(), act); }), 0, gb * 4 * act);
  row("relu fwd", s, time_ms([&] { cpu::relu_forward(y.p(), a.p(), act); }), 0, gb * 2 * act);
  row("relu bwd", s, time_ms([&] { cpu::relu_backward(dx.p(), dy.p(), y.p(), act); }), 0, gb * 4 * act);
  row("tanh fwd", s, time_ms([&] { cpu::tanh_forward(y.p(), a.p(), act); }), 0, gb * 2 * act);
  row("tanh bwd", s, time_ms([&] { cpu::tanh_backward(dx.p(), dy.p(), y.p(), act); }), 0, gb * 4 * act);
  row("sigmoid fwd", s, time_ms([&] { cpu::sigmoid_forward(y.p(), a.p(), act); }), 0, gb * 2 * act);
  row("sigmoid bwd", s, time_ms([&] { cpu::sigmoid_backward(dx.p(), dy.p(), y.p(), act); }), 0, gb * 4 * act);
  row("gate fwd", "[32, 64, 32x32] -> 32 ch", time_ms([&] { cpu::gate_forward(y.p(), z.p(), N, c, hw); }), 0,
      gb * 3 * act);
  row("gate bwd", "[32, 64, 32x32] -> 32 ch", time_ms([&] { cpu::gate_backward(dz.p(), dy.p(), z.p(), N, c, hw); }), 0,
      gb * 5 * act);
  row("down_shift fwd", s, time_ms([&] { cpu::down_shift_forward(y.p(), a.p(), N * c, 32, 32); }), 0, gb * 2 * act);
  row("down_shift bwd", s, time_ms([&] { cpu::down_shift_backward(dx.p(), dy.p(), N * c, 32, 32); }), 0, gb * 3 * act);

  Buf mean(c), invstd(c), rm(c, 0, 0), rv(c, 1, 1), gamma(c, 0.5, 1.5), beta(c), dg(c), dbt(c);
  row("batchnorm fwd train", s, time_ms([&] {
        cpu::batchnorm_forward_train(y.p(), mean.p(), invstd.p(), rm.p(), rv.p(), a.p(), gamma.p(), beta.p(), N, c, hw,
                                     0.1f, 1e-5f);
      }),
      0, gb * 2 * act);
  row("batchnorm fwd eval", s, time_ms([&] {
        cpu::batchnorm_forward_eval(y.p(), mean.p(), invstd.p(), rm.p(), rv.p(), a.p(), gamma.p(), beta.p(), N, c, hw,
                                    1e-5f);
      }),
      0, gb * 2 * act);
  row("batchnorm bwd train", s, time_ms([&] {
        cpu::batchnorm_backward(dx.p(), dg.p(), dbt.p(), dy.p(), a.p(), gamma.p(), mean.p(), invstd.p(), N, c, hw,
                                true);
      }),
      0, gb * 4 * act);
  row("mse fwd", s, time_ms([&] { cpu::mse_forward(y.p(), a.p(), b.p(), act); }), 0, gb * 2 * act);
  row("mean fwd", s, time_ms([&] { cpu::mean_forward(y.p(), a.p(), act); }), 0, gb * act);
}

void bench_softmax_ce() {
  const int N = 32, colors = 3, hw = 1024;
  const size_t nl = size_t(N) * colors * kLevels * hw;  // [32, 768, 1024]
  Buf a(nl, -3, 3), b(nl, -3, 3), da(nl, 0, 0), db(nl, 0, 0), loss(1), dloss(1, 1, 1);
  std::vector<uint8_t> target(size_t(N) * colors * hw);
  for (size_t i = 0; i < target.size(); ++i) target[i] = uint8_t((i * 37) % 256);
  const double gb = 4e-9 * double(nl);
  const std::string s = "[32, 768, 32x32]";
  row("softmax_ce fwd (a)", s,
      time_ms([&] { cpu::softmax_ce_forward(loss.p(), a.p(), nullptr, target.data(), N, colors, hw); }), 0, gb);
  row("softmax_ce fwd (a+b)", s,
      time_ms([&] { cpu::softmax_ce_forward(loss.p(), a.p(), b.p(), target.data(), N, colors, hw); }), 0, 2 * gb);
  row("softmax_ce bwd (a) da", s, time_ms([&] {
        cpu::softmax_ce_backward(da.p(), nullptr, dloss.p(), a.p(), nullptr, target.data(), N, colors, hw);
      }),
      0, 3 * gb);
  row("softmax_ce bwd (a+b) da,db", s,
      time_ms([&] { cpu::softmax_ce_backward(da.p(), db.p(), dloss.p(), a.p(), b.p(), target.data(), N, colors, hw); }),
      0, 6 * gb);
}

void bench_optim() {
  const size_t n = 1500000;
  Buf w(n), g(n), ms(n, 1, 1), mom(n, 0, 0), m(n, 0, 0), v(n, 0, 0);
  const std::string s = "1.5M params";
  row("rmsprop_step", s,
      time_ms([&] { cpu::rmsprop_step(w.p(), ms.p(), mom.p(), g.p(), n, 4e-4f, 0.95f, 0.9f, 1e-8f); }), 0,
      4e-9 * 7 * n);
  long t = 1;
  row("adam_step", s, time_ms([&] { cpu::adam_step(w.p(), m.p(), v.p(), g.p(), n, 1e-3f, 0.9f, 0.999f, 1e-8f, t++); }),
      0, 4e-9 * 7 * n);
}

}  // namespace

int main(int argc, char** argv) {
  bool both_layouts = false;
  std::string filter;  // --only NAME: only the convs whose name contains NAME, no other ops
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--only") && i + 1 < argc) {
      filter = argv[++i];
    } else if (!std::strcmp(argv[i], "--layouts")) {
      both_layouts = true;
    } else if (!std::strcmp(argv[i], "--quick")) {
      g_min_reps = 3;
      g_min_seconds = 0.05;
    } else {
      std::fprintf(stderr, "usage: bench_ops [--layouts] [--quick] [--only NAME]\n");
      return 2;
    }
  }
  g_peak = conv_peak();

  // "% peak": wall GFLOP/s over the peak's. "% cpu": GFLOP per CPU-second over the peak's, the
  // figure that survives a machine shared with other jobs (run with OMP_WAIT_POLICY=passive).
  std::printf("| %-34s | %-30s | %9s | %9s | %-14s | %6s | %6s |\n", "op (batch 32)", "shape", "ms", "cpu ms",
              "throughput", "% peak", "% cpu");
  std::printf("|%s|%s|%s|%s|%s|%s|%s|\n", std::string(36, '-').c_str(), std::string(32, '-').c_str(),
              std::string(11, '-').c_str(), std::string(11, '-').c_str(), std::string(16, '-').c_str(),
              std::string(8, '-').c_str(), std::string(8, '-').c_str());
  using L = cpu::detail::ConvLayout;
  std::vector<L> layouts = both_layouts ? std::vector<L>{L::Plain, L::Any} : std::vector<L>{L::Default};
  const int N = 32;
  struct C {
    const char* name;
    ConvGeom g;
    bool bias;
  };
  auto colour_blocks = [](ConvGeom g) {
    g.colors = 3;
    return g;
  };  // the masked head (mask B)
  const C convs[] = {
      // prior network (gated PixelCNN), 32x32, c = 32
      {"prior v first 4x7", {N, 3, 32, 32, 32, 4, 7, 3, 0, 3, 3}, true},
      {"prior h first 1x4", {N, 3, 32, 32, 32, 1, 4, 0, 0, 3, 0}, true},
      {"prior v 3x5", {N, 32, 32, 32, 64, 3, 5, 2, 0, 2, 2}, true},
      {"prior h 1x3", {N, 32, 32, 32, 64, 1, 3, 0, 0, 2, 0}, true},
      {"prior link 1x1", {N, 64, 32, 32, 64, 1, 1, 0, 0, 0, 0}, true},
      {"prior res 1x1", {N, 32, 32, 32, 32, 1, 1, 0, 0, 0, 0}, true},
      {"prior head1 1x1", {N, 32, 32, 32, 1024, 1, 1, 0, 0, 0, 0}, true},
      {"prior head2 1x1", {N, 1024, 32, 32, 768, 1, 1, 0, 0, 0, 0}, true},
      {"prior head1 1x1 colour blocks", colour_blocks({N, 32, 32, 32, 1024, 1, 1, 0, 0, 0, 0}), true},
      {"prior head2 1x1 colour blocks", colour_blocks({N, 1024, 32, 32, 768, 1, 1, 0, 0, 0, 0}), true},
      // conditioning network
      {"cond first 3x3", {N, 3, 8, 8, 32, 3, 3, 1, 1, 1, 1}, true},
      {"cond 3x3 8x8", {N, 32, 8, 8, 32, 3, 3, 1, 1, 1, 1}, false},
      {"cond 3x3 16x16", {N, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1}, false},
      {"cond 3x3 32x32", {N, 32, 32, 32, 32, 3, 3, 1, 1, 1, 1}, false},
      {"cond out 1x1", {N, 32, 32, 32, 768, 1, 1, 0, 0, 0, 0}, true},
  };
  for (const C& c : convs)
    if (filter.empty() || std::string(c.name).find(filter) != std::string::npos)
      for (L l : layouts) bench_conv(c.name, c.g, c.bias, l);
  if (!filter.empty()) return 0;
  // (plain layouts would run oneDNN's reference deconvolution, seconds per call: not timed)
  for (L l : both_layouts ? std::vector<L>{L::Any} : layouts) {
    bench_deconv("cond deconv 8->16", {N, 32, 8, 8, 32, 3, 2, 1, 1}, true, l);
    bench_deconv("cond deconv 16->32", {N, 32, 16, 16, 32, 3, 2, 1, 1}, true, l);
  }
  cpu::detail::set_conv_layout(L::Default);
  bench_memory_ops();
  bench_softmax_ce();
  bench_optim();
  std::printf("\n%d cached conv primitives\n", cpu::detail::conv_cache_size());
  return 0;
}
