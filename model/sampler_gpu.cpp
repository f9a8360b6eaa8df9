// The GPU cached sampler's host side (model/sampler_gpu.h): the plan (weights packed as
// [K][N], the colour groups' output lists, the state buffers), the row loop, and the two
// runners of the kernels: the CUDA launchers (model/sampler_gpu.cu) and the host launcher,
// which runs the same kernel bodies (model/sampler_kernels.h) block by block on the CPU.
#include "model/sampler_gpu.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "engine/arena.h"
#include "engine/graph.h"
#include "model/sampler_kernels.h"

namespace prsr {

namespace {

using namespace gpu_sampler;
static_assert(kLevelCount == kLevels, "the kernels' level count");
constexpr size_t kMaxPartBytes = 44 * 1024;  // the row kernel's partial sums (shared memory)

[[noreturn]] void refuse(const ConvLayer<float>& c, const std::string& what) {
  throw Error("GPU cached sampler: " + c.name + ": " + what + " (use the naive sampler)");
}

// Packs the layers into one weight array W and one int array I (the colour groups' outputs).
struct Packer {
  const HostValues<float>& P;
  const HostValues<float>& M;
  int C;
  std::vector<float> W;
  std::vector<int> I;

  // w[k][o], k = (ky * kw + kx) * ci + i: the channel-last order of the state buffers.
  Dense dense(const ConvLayer<float>& c) {
    const std::vector<float> w = c.applied_weights(P, M), bias = c.bias_values(P);
    const int CI = c.ci(), KH = c.kh(), KW = c.kw(), N = c.co();
    Dense d;
    d.K = CI * KH * KW;
    d.N = N;
    d.w = long(W.size());
    W.resize(W.size() + size_t(d.K) * N);
    for (int o = 0; o < N; ++o)
      for (int ci = 0; ci < CI; ++ci)
        for (int ky = 0; ky < KH; ++ky)
          for (int kx = 0; kx < KW; ++kx) {
            const size_t k = (size_t(ky) * KW + kx) * CI + ci;
            W[size_t(d.w) + k * N + o] = w[((size_t(o) * CI + ci) * KH + ky) * KW + kx];
          }
    d.bias = long(W.size());
    W.insert(W.end(), bias.begin(), bias.end());
    return d;
  }
  // Per colour: the outputs of its group, in channel order, and the input prefix they read
  // (as model/sampler.cpp's pack_by_colour).
  Masked masked(const ConvLayer<float>& c) {
    if (!c.mask) refuse(c, "a layer at the current pixel must be colour-masked");
    if (C > kMaxColours) refuse(c, "more colours than the kernels hold");
    Masked m;
    m.d = dense(c);
    m.pad_l = c.pad_l;
    const float* mk = M.at(c.mask);
    const int CI = c.ci(), KH = c.kh(), KW = c.kw();
    auto allowed = [&](int o, int k) {
      const int ci = k % CI, t = k / CI, kx = t % KW, ky = t / KW;
      return mk[((size_t(o) * CI + ci) * KH + ky) * KW + kx] != 0.f;
    };
    for (int g = 0; g < C; ++g) {
      m.outs[g] = int(I.size());
      int kc = 0;
      for (int o = 0; o < c.co(); ++o) {
        if (colour_group(o, c.mask_spec.period_out, C) != g) continue;
        I.push_back(o);
        for (int k = kc; k < m.d.K; ++k)
          if (allowed(o, k)) kc = k + 1;
      }
      m.count[g] = int(I.size()) - m.outs[g];
      m.kc[g] = kc;
    }
    return m;
  }
  Vertical vertical(const ConvLayer<float>& c) {
    Vertical v;
    v.d = dense(c);
    v.kh = c.kh();
    v.kw = c.kw();
    v.ci = c.ci();
    v.pad_t = c.pad_t;
    v.pad_l = c.pad_l;
    return v;
  }
};

// The state buffers, one after another in one float array.
struct Layout {
  long size = 0;
  Buffer add(int n, int rows, int cols, int ch, int pl) {
    Buffer b;
    b.off = size;
    b.rows = rows;
    b.cols = cols;
    b.ch = ch;
    b.pl = pl;
    size += n * b.image();
    return b;
  }
};

// A plan with offsets only, and the host arrays its pointers will point into.
struct Built {
  Plan P;
  std::vector<float> W, state;
  std::vector<int> I;
  std::vector<Gated> layers;
};

Built build(const Model<float>& m, int n) {
  check_cacheable(m);
  const ModelConfig& cfg = m.config();
  const HostValues<float> Pv(m.params), Mv(m.masks);
  Packer pk{Pv, Mv, cfg.colors, {}, {}};
  Built B;
  Plan& P = B.P;
  P.n = n;
  P.S = cfg.size;
  P.C = cfg.colors;
  P.p = m.first_h.co();
  P.L = int(m.gated.size());
  P.H1 = m.head1.co();
  const int S = P.S, C = P.C, p = P.p, L = P.L;
  P.first_v = pk.vertical(m.first_v);
  P.first_h = pk.masked(m.first_h);
  B.layers.resize(size_t(L));
  for (int l = 0; l < L; ++l) {
    const GatedLayer<float>& G = m.gated[size_t(l)];
    Gated& g = B.layers[size_t(l)];
    g.v = pk.vertical(G.v);
    g.h = pk.masked(G.h);
    g.link = pk.dense(G.link);
    g.res = pk.masked(G.res);
    // The gate pairs output f with f + p: each pair must be one colour.
    for (int c = 0; c < C; ++c) {
      const int* outs = pk.I.data() + g.h.outs[c];
      const int q = g.h.count[c] / 2;
      bool paired = g.h.count[c] % 2 == 0;
      for (int k = 0; paired && k < q; ++k) paired = outs[k] < p && outs[k + q] == outs[k] + p;
      if (!paired) refuse(G.h, "each tanh/sigmoid pair of the gate must be one colour");
    }
  }
  P.head1 = pk.masked(m.head1);
  P.head2 = pk.masked(m.head2);
  for (int c = 0; c < C; ++c)
    if (P.head2.count[c] != kLevels) refuse(m.head2, "each colour needs its 256 logits");
  // The partial sums of the widest product at the current pixel, in the row kernel's shared
  // memory (with the logits and their exponentials, 3 KB) within the 48 KB a block may have.
  int widest = 0;
  const ConvLayer<float>* wide_layer = &m.first_h;
  auto widen = [&](const Masked& M, const ConvLayer<float>& def) {
    for (int c = 0; c < C; ++c)
      if (M.count[c] > widest) widest = M.count[c], wide_layer = &def;
  };
  widen(P.first_h, m.first_h), widen(P.head1, m.head1), widen(P.head2, m.head2);
  for (int l = 0; l < L; ++l)
    widen(B.layers[size_t(l)].h, m.gated[size_t(l)].h), widen(B.layers[size_t(l)].res, m.gated[size_t(l)].res);
  P.part_len = kSplit * widest;
  if (P.part_len * sizeof(float) > kMaxPartBytes)
    refuse(*wide_layer, "too wide for the GPU sampler's shared memory (" + std::to_string(widest) +
                            " outputs of one colour; at most " +
                            std::to_string(kMaxPartBytes / sizeof(float) / kSplit) + ")");
  // Buffers (model/sampler.cpp's, with the same padding).
  Layout lay;
  const int ypl = std::max(m.first_v.pad_l, m.first_h.pad_l);
  P.y = lay.add(n, m.first_v.kh(), ypl + S + m.first_v.pad_r, C, ypl);
  int vkh = 1, vpl = 0, vpr = 0, hpl = 0;
  for (const GatedLayer<float>& G : m.gated) {
    vkh = std::max(vkh, G.v.kh()), vpl = std::max(vpl, G.v.pad_l), vpr = std::max(vpr, G.v.pad_r);
    hpl = std::max(hpl, G.h.pad_l);
  }
  std::vector<Buffer> hrow;
  for (int l = 0; l <= L; ++l) hrow.push_back(lay.add(n, 1, hpl + S, p, hpl));
  for (int l = 0; l < L; ++l) {
    Gated& g = B.layers[size_t(l)];
    g.vin = lay.add(n, vkh, vpl + S + vpr, p, vpl);
    g.hin = hrow[size_t(l)];
    g.hout = hrow[size_t(l) + 1];
    g.link_row = lay.add(n, 1, S, g.link.N, 0);
    g.gate = lay.add(n, 1, 1, p, 0);
  }
  P.h_first = hrow[0];
  P.head_in = hrow[size_t(L)];
  P.h1 = lay.add(n, 1, 1, P.H1, 0);
  P.vpre = lay.add(n, 1, S, std::max(P.first_v.d.N, 2 * p), 0);
  // Initial state: zeros, the undrawn image -1 (as the naive sampler's input), and the link of
  // row 0, which reads the zero row above the image: its bias.
  B.state.assign(size_t(lay.size), 0.f);
  for (int b = 0; b < n; ++b)
    for (int r = 0; r < P.y.rows; ++r) std::fill_n(P.y.at(B.state.data(), b, r, ypl), size_t(S) * C, -1.f);
  for (const Gated& g : B.layers)
    for (int b = 0; b < n; ++b)
      for (int j = 0; j < S; ++j)
        std::copy_n(pk.W.data() + g.link.bias, g.link.N, g.link_row.at(B.state.data(), b, 0, j));
  B.W = std::move(pk.W);
  B.I = std::move(pk.I);
  return B;
}

// Memory of one device, freed on scope exit.
class Mem {
 public:
  Mem(Device dev, const void* src, size_t bytes) : dev_(dev), p_(device_alloc(dev, std::max<size_t>(bytes, 1))) {
    if (bytes) device_upload(dev, p_, src, bytes);
  }
  Mem(const Mem&) = delete;
  Mem& operator=(const Mem&) = delete;
  ~Mem() {
    try {
      device_free(dev_, p_);
    } catch (...) {}
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  Device dev_;
  void* p_;
};

// Where the kernels run: memory() is the device whose memory the plan points into.
class Runner {
 public:
  virtual ~Runner() = default;
  virtual Device memory() const = 0;
  virtual void row(const Plan& P, int i) = 0;
  virtual void vertical(const Plan& P, int i, int layer) = 0;
  virtual void wait() {}
};

class CudaRunner : public Runner {
 public:
  Device memory() const override { return Device::Cuda; }
  void row(const Plan& P, int i) override { launch_row(P, i); }
  void vertical(const Plan& P, int i, int layer) override { launch_vertical(P, i, layer); }
  void wait() override { cuda::synchronize(); }
};

// The host launcher: every block of a launch in turn, its body on nt threads (a barrier for
// __syncthreads) or, with nt = 1, serially.
class HostRunner : public Runner {
 public:
  explicit HostRunner(int threads_per_block) : nt_(std::max(1, threads_per_block)) {}
  Device memory() const override { return Device::Cpu; }
  void row(const Plan& P, int i) override {
    part_.resize(size_t(P.part_len));
    for (int b = 0; b < P.n; ++b)
      block([&](auto& blk) { row_body(P, b, i, blk, Scratch{logits_, p_, ints_, part_.data()}); });
  }
  void vertical(const Plan& P, int i, int layer) override {
    for (int b = 0; b < P.n; ++b)
      for (int j = 0; j < P.S; ++j) block([&](auto& blk) { vertical_body(P, b, j, i, layer, blk); });
  }

 private:
  struct Barrier {
    std::mutex mu;
    std::condition_variable cv;
    int count = 0, gen = 0, nt = 1;
    void wait() {
      std::unique_lock<std::mutex> lk(mu);
      const int g = gen;
      if (++count == nt) {
        count = 0;
        ++gen;
        cv.notify_all();
      } else {
        cv.wait(lk, [&] { return gen != g; });
      }
    }
  };
  struct SerialBlock {
    int tid = 0, nt = 1;
    void sync() {}
  };
  struct ThreadBlock {
    int tid, nt;
    Barrier* bar;
    void sync() { bar->wait(); }
  };
  template <class Body>
  void block(const Body& body) {
    if (nt_ == 1) {
      SerialBlock blk;
      body(blk);
      return;
    }
    Barrier bar;
    bar.nt = nt_;
    std::vector<std::thread> threads;
    for (int t = 0; t < nt_; ++t)
      threads.emplace_back([&, t] {
        ThreadBlock blk{t, nt_, &bar};
        body(blk);
      });
    for (std::thread& th : threads) th.join();
  }
  int nt_;
  float logits_[kLevelCount] = {};
  double p_[kLevelCount] = {};
  int ints_[2] = {};
  std::vector<float> part_;
};

std::vector<uint8_t> run(Model<float>& m, const uint8_t* x, int n, const SampleOptions& opt, Runner& R) {
  const ModelConfig& cfg = m.config();
  check(n >= 1, "sample: no inputs");
  check(opt.temperature > 0 && std::isfinite(opt.temperature), "sample: --temperature must be > 0");
  Built B = build(m, n);
  Plan& P = B.P;
  const int C = cfg.colors, S = cfg.size, HW = S * S, Lo = cfg.low();
  const Device dev = R.memory();
  // A(x) on the model's device; used in place when the kernels run there.
  std::vector<float> xn(size_t(n) * C * Lo * Lo);
  for (int b = 0; b < n; ++b)
    for (int c = 0; c < C; ++c)
      for (int q = 0; q < Lo * Lo; ++q)
        xn[(size_t(b) * C + c) * Lo * Lo + q] = float(x[(size_t(b) * Lo * Lo + q) * C + c]) / 127.5f - 1.f;
  Graph<float> g(m.device());
  g.grad_enabled = false;
  Tensor<float>* xt = g.tensor({n, C, Lo, Lo}, false, "x");
  device_upload(m.device(), xt->data, xn.data(), xn.size() * sizeof(float));
  Tensor<float>* a = m.conditioning(g, xt, false);
  std::unique_ptr<Mem> a_copy;
  P.A = a->data;
  if (m.device() != dev) {
    std::vector<float> h(a->numel());
    device_download(m.device(), h.data(), a->data, h.size() * sizeof(float));
    a_copy = std::make_unique<Mem>(dev, h.data(), h.size() * sizeof(float));
    P.A = a_copy->as<float>();
  }
  // The uniforms in the order the CPU samplers draw them: (pixel, colour, image).
  std::mt19937_64 rng(opt.seed);
  std::vector<double> U(size_t(HW) * C * n);
  for (double& u : U) u = double(rng() >> 11) * 0x1.0p-53;
  std::vector<uint8_t> out(size_t(n) * HW * C, 0);
  std::vector<float> logits;
  if (opt.logits_out) logits.assign(size_t(HW) * C * n * kLevels, 0.f);
  const Mem w(dev, B.W.data(), B.W.size() * sizeof(float)), ints(dev, B.I.data(), B.I.size() * sizeof(int));
  const Mem layers(dev, B.layers.data(), B.layers.size() * sizeof(Gated));
  const Mem state(dev, B.state.data(), B.state.size() * sizeof(float)), u(dev, U.data(), U.size() * sizeof(double));
  const Mem images(dev, out.data(), out.size()), lg(dev, logits.data(), logits.size() * sizeof(float));
  P.W = w.as<float>();
  P.I = ints.as<int>();
  P.layers = layers.as<Gated>();
  P.s = state.as<float>();
  P.U = u.as<double>();
  P.out = images.as<uint8_t>();
  P.logits_out = opt.logits_out ? lg.as<float>() : nullptr;
  P.mode = opt.mode == DecodeMode::Mean ? kMean : opt.mode == DecodeMode::Argmax ? kArgmax : kSample;
  P.tau = opt.temperature;
  P.limit = opt.stop_after < 0 ? long(HW) * C : opt.stop_after;
  for (int i = 0; i < S; ++i) {
    if (long(i) * S * C >= P.limit) break;
    R.row(P, i);
    if (long(i + 1) * S * C > P.limit) break;  // row i unfinished: no vertical stack, no progress
    if (i + 1 < S && P.L > 0) {                // the rows below read it (after the last row nothing does)
      R.vertical(P, i, -1);
      for (int l = 0; l < P.L; ++l) R.vertical(P, i, l);
    }
    if (opt.progress) {
      R.wait();
      opt.progress(i + 1, S);
    }
  }
  R.wait();
  device_download(dev, out.data(), P.out, out.size());
  if (opt.logits_out) {
    device_download(dev, logits.data(), P.logits_out, logits.size() * sizeof(float));
    *opt.logits_out = std::move(logits);
  }
  return out;
}

}  // namespace

std::vector<uint8_t> sample_images_gpu(Model<float>& m, const uint8_t* x, int n, const SampleOptions& opt) {
  check(m.device() == Device::Cuda, "GPU cached sampler: the model is not on the GPU");
  CudaRunner r;
  return run(m, x, n, opt, r);
}

std::vector<uint8_t> sample_images_gpu_emulated(Model<float>& m, const uint8_t* x, int n, const SampleOptions& opt,
                                                int threads_per_block) {
  HostRunner r(threads_per_block);
  return run(m, x, n, opt, r);
}

}  // namespace prsr
