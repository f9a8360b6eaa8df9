// The cached sampler draws exactly the images of the naive one (same seed), and its logits
// match the full forward pass's to float32 rounding.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "engine/graph.h"
#include "model/sampler.h"
#include "model/sampler_kernels.h"
#include "tests/sampler_fixture.h"

using namespace prsr;
using namespace prsr::test;

TEST_CASE("sampler: cached == naive (same seed, same images), C = 1 and 3, several temperatures, batch > 1") {
  struct Setup {
    int colors, size, kernel, n;
  };
  for (Setup su : {Setup{1, 8, 3, 3}, Setup{3, 8, 5, 2}, Setup{3, 12, 3, 1}}) {
    ModelConfig cfg = sampler_config(su.colors, su.size, su.kernel);
    Model<float> m(cfg, Device::Cpu);
    m.init(21);
    scale_params(m, 0.85f);
    const auto x = random_low(su.n, cfg.low(), su.colors, 5);
    for (float tau : {1.0f, 0.7f}) {
      SampleOptions o;
      o.temperature = tau;
      o.seed = 777;
      std::vector<float> lc, ln;
      o.logits_out = &lc;
      o.cached = true;
      const auto cached = sample_images(m, x.data(), su.n, o);
      o.logits_out = &ln;
      o.cached = false;
      const auto naive = sample_images(m, x.data(), su.n, o);
      INFO("C=" << su.colors << " size=" << su.size << " k=" << su.kernel << " tau=" << tau);
      CHECK(cached == naive);
      REQUIRE(lc.size() == ln.size());
      double max_err = 0, max_abs = 0;
      for (size_t i = 0; i < lc.size(); ++i) {
        max_err = std::max(max_err, double(std::fabs(lc[i] - ln[i])));
        max_abs = std::max(max_abs, double(std::fabs(ln[i])));
      }
      std::printf("  cached vs naive C=%d size=%d k=%d tau=%.1f: max logit diff %.2e (max |logit| %.1f)\n", su.colors,
                  su.size, su.kernel, tau, max_err, max_abs);
      CHECK(max_err <= 2e-5 * std::max(1.0, max_abs));
      // The samples are not all the same value (the check above would be weak otherwise).
      int distinct = 0;
      std::vector<bool> seen(256, false);
      for (uint8_t v : cached)
        if (!seen[v]) {
          seen[v] = true;
          ++distinct;
        }
      CHECK(distinct > 5);
    }
    // A different seed gives different images.
    SampleOptions o1, o2;
    o1.seed = 1;
    o2.seed = 2;
    CHECK(sample_images(m, x.data(), su.n, o1) != sample_images(m, x.data(), su.n, o2));
  }
}

TEST_CASE("sampler: cached == naive with no gated layers, and with a stack width that is not a multiple of C") {
  struct Setup {
    int colors, channels, layers;
  };
  for (Setup su : {Setup{3, 4, 0}, Setup{1, 4, 0}, Setup{3, 4, 2}, Setup{3, 5, 1}}) {
    const NaiveComparison r = against_naive(su.colors, su.channels, su.layers, sample_images);  // cached
    INFO("C=" << su.colors << " p=" << su.channels << " layers=" << su.layers);
    CHECK(r.images == r.naive);
    REQUIRE(r.logits.size() == r.naive_logits.size());
    CHECK(logit_error(r.logits, r.naive_logits) <= 2e-5);  // relative to max(1, max |logit|)
  }
}

TEST_CASE("sampler: cached == naive on 1, 2 and 3 threads: images shared out, or every thread on each image") {
  // Threads <= images: each thread owns a run of images (runs of 1..6: head2's zero-skipping
  // path for <= 4 images, the dense one above). Threads > images: all threads on every image,
  // the large products shared by output panels, with barriers.
  ModelConfig cfg = sampler_config(3, 8, 3);
  cfg.head = 40;  // several head1 panels per colour
  Model<float> m(cfg, Device::Cpu);
  m.init(12);
  scale_params(m, 0.85f);
  const int saved = omp_get_max_threads();
  for (int n : {1, 2, 6}) {
    const auto x = random_low(n, cfg.low(), 3, 40 + n);
    SampleOptions o;
    o.seed = 5;
    o.temperature = 0.9f;
    o.cached = false;
    omp_set_num_threads(1);
    const auto naive = sample_images(m, x.data(), n, o);
    o.cached = true;
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      INFO("images " << n << ", threads " << threads);
      CHECK(sample_images(m, x.data(), n, o) == naive);
    }
  }
  omp_set_num_threads(saved);
}

TEST_CASE("sampler: a call reuses the last call's packed sampler only for the same weights, batch and threads") {
  // sample_images keeps its cached sampler between calls on one thread (the packing is half of a
  // batch-1 call's fixed cost). Every call must still draw what a fresh sampler draws: after a
  // call stopped part-way (dirty buffers), after a change of the prior's weights in place (a new
  // packing, or stale weights), of the batch and of the threads.
  ModelConfig cfg = sampler_config(3, 8, 3);
  Model<float> m(cfg, Device::Cpu);
  m.init(21);
  scale_params(m, 0.85f);
  const int saved = omp_get_max_threads();
  const auto x1 = random_low(2, cfg.low(), 3, 61), x2 = random_low(2, cfg.low(), 3, 62);
  auto run = [&](const std::vector<uint8_t>& x, int n, uint64_t seed, bool cached, std::vector<float>* logits) {
    SampleOptions o;
    o.seed = seed;
    o.cached = cached;
    o.logits_out = logits;
    return sample_images(m, x.data(), n, o);
  };
  std::vector<float> lc, ln;
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    INFO("threads " << threads);
    const auto naive1 = run(x1, 2, 31, false, &ln);
    SampleOptions part;
    part.stop_after = 40;
    sample_images(m, x2.data(), 2, part);  // leaves its rows half drawn
    CHECK(run(x1, 2, 31, true, &lc) == naive1);
    CHECK(logit_error(lc, ln) < 2e-5);
    CHECK(run(x2, 1, 5, true, &lc) == run(x2, 1, 5, false, &ln));  // batch 1: a team on 2 threads
    CHECK(logit_error(lc, ln) < 2e-5);
    const auto naive2 = run(x2, 2, 5, false, &ln);
    CHECK(run(x2, 2, 5, true, &lc) == naive2);
    CHECK(run(x2, 2, 5, true, &lc) == naive2);
    CHECK(logit_error(lc, ln) < 2e-5);
    // The prior's head2 weights changed in place (A(x) is computed afresh by every call anyway).
    float* w = m.head2.w->data;
    for (size_t i = 0; i < size_t(m.head2.w->numel()); ++i) w[i] = w[i] * 1.5f + 0.01f;
    const auto naive3 = run(x2, 2, 5, false, &ln);
    CHECK(naive3 != naive2);
    CHECK(run(x2, 2, 5, true, &lc) == naive3);
    CHECK(logit_error(lc, ln) < 2e-5);
  }
  omp_set_num_threads(saved);
}

TEST_CASE("sampler: a team (fewer images than threads) == naive in every decoding mode") {
  // A team splits head2 into the rows of the earlier colours' head1 outputs (thread 1, while
  // thread 0 runs the chain) and colour c's own rows, claims both by panels, shares the vertical
  // stack by positions, runs each h layer's left taps and link on thread 1 (colour 0's layer by
  // layer ahead of thread 0, colour c + 1's during colour c) and only the current tap on thread
  // 0, and draws on thread 0 while thread 1 goes on.
  // 1 image on 2 and 3 threads (head2's inputs gathered: the zero-skipping path), 5 images on 6
  // threads (all inputs: the dense path). A head of 200 (66-67 outputs per colour: 3 or 5 panels)
  // so that head1's panels are cut between threads 0 and 1 (head2's own rows in two halves).
  ModelConfig cfg = sampler_config(3, 8, 3);
  cfg.head = 200;
  Model<float> m(cfg, Device::Cpu);
  m.init(17);
  scale_params(m, 0.85f);
  const int saved = omp_get_max_threads();
  // C = 1 (no low part; the left taps' sums of colour 0 only) and no gated layers, 1 image on 2 threads.
  for (int layers : {2, 0}) {
    ModelConfig c1 = sampler_config(layers == 2 ? 1 : 3, 8, 3);
    c1.prior_layers = layers;
    Model<float> m1(c1, Device::Cpu);
    m1.init(19);
    scale_params(m1, 0.85f);
    const auto x = random_low(1, c1.low(), c1.colors, 70);
    SampleOptions o;
    o.seed = 13;
    o.cached = false;
    omp_set_num_threads(1);
    const auto naive = sample_images(m1, x.data(), 1, o);
    o.cached = true;
    omp_set_num_threads(2);
    INFO("C=" << c1.colors << " layers " << layers);
    CHECK(sample_images(m1, x.data(), 1, o) == naive);
  }
  struct Run {
    int n;
    std::vector<int> threads;
  };
  for (const Run& run : {Run{1, {2, 3}}, Run{5, {6}}}) {
    const auto x = random_low(run.n, cfg.low(), 3, 60 + run.n);
    for (DecodeMode mode : {DecodeMode::Sample, DecodeMode::Mean, DecodeMode::Argmax}) {
      SampleOptions o;
      o.seed = 11;
      o.temperature = 0.8f;
      o.mode = mode;
      o.cached = false;
      std::vector<float> ln, lc;
      o.logits_out = &ln;
      omp_set_num_threads(1);
      const auto naive = sample_images(m, x.data(), run.n, o);
      o.cached = true;
      o.logits_out = &lc;
      for (int threads : run.threads) {
        omp_set_num_threads(threads);
        INFO("images " << run.n << ", threads " << threads << ", mode " << decode_mode_name(mode));
        CHECK(sample_images(m, x.data(), run.n, o) == naive);
        REQUIRE(lc.size() == ln.size());
        CHECK(logit_error(lc, ln) <= 2e-5);  // relative to max(1, max |logit|)
      }
    }
  }
  omp_set_num_threads(saved);
}

TEST_CASE("sampler: check_cacheable refuses a layer geometry the cached sampler cannot run") {
  ModelConfig cfg = sampler_config(3, 8, 3);
  const auto x = random_low(1, cfg.low(), 3, 1);
  {
    Model<float> m(cfg, Device::Cpu);
    CHECK_NOTHROW(check_cacheable(m));
  }
  // Each edit breaks one assumption; the error names the layer.
  struct Edit {
    const char* layer;
    void (*apply)(Model<float>&);
  };
  const Edit edits[] = {
      {"prior.first_h", [](Model<float>& m) { m.first_h.pad_r = 1; }},       // sees j + 1
      {"prior.first_v", [](Model<float>& m) { m.first_v.pad_b = 1; }},       // sees row i + 1
      {"prior.layer1.v", [](Model<float>& m) { m.gated[1].v.pad_l += 1; }},  // changes the width
      {"prior.layer0.h", [](Model<float>& m) { m.gated[0].h.pad_l -= 1; }},  // misses its last tap
      {"prior.layer0.link", [](Model<float>& m) { m.gated[0].link.pad_t = 1; }},
      {"prior.head1", [](Model<float>& m) { m.head1.transposed = true; }},
  };
  for (const Edit& e : edits) {
    Model<float> m(cfg, Device::Cpu);
    e.apply(m);
    INFO(e.layer);
    try {
      check_cacheable(m);
      FAIL("accepted");
    } catch (const Error& err) {
      CHECK(std::string(err.what()).find(e.layer) != std::string::npos);
      CHECK(std::string(err.what()).find("cached sampler") != std::string::npos);
    }
    SampleOptions o;  // cached
    CHECK_THROWS_AS(sample_images(m, x.data(), 1, o), Error);
  }
  // Refused while the weights are packed (jobs on the sampler's threads: the error is carried
  // out of the parallel region): an unmasked layer at the current pixel, on 1 and 2 threads.
  {
    Model<float> m(cfg, Device::Cpu);
    m.gated[1].h.mask = nullptr;
    const int saved = omp_get_max_threads();
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      INFO("threads " << threads);
      SampleOptions o;  // cached
      CHECK_THROWS_WITH_AS(sample_images(m, x.data(), 1, o), doctest::Contains("prior.layer1.h"), Error);
      CHECK_THROWS_WITH_AS(sample_images(m, x.data(), 1, o), doctest::Contains("colour-masked"), Error);
    }
    omp_set_num_threads(saved);
  }
  cfg.loss = "l2";
  Model<float> l2(cfg, Device::Cpu);
  CHECK_THROWS_AS(check_cacheable(l2), Error);
}

TEST_CASE("sampler: argmax and mean decoding agree between cached and naive and are deterministic") {
  ModelConfig cfg = sampler_config(3, 8, 3);
  Model<float> m(cfg, Device::Cpu);
  m.init(4);
  const auto x = random_low(2, cfg.low(), 3, 9);
  for (DecodeMode mode : {DecodeMode::Argmax, DecodeMode::Mean}) {
    SampleOptions o;
    o.mode = mode;
    o.seed = 1;
    const auto a = sample_images(m, x.data(), 2, o);
    o.seed = 2;  // the seed does not matter for these modes
    const auto b = sample_images(m, x.data(), 2, o);
    o.cached = false;
    const auto c = sample_images(m, x.data(), 2, o);
    CHECK(a == b);
    CHECK(a == c);
  }
  CHECK(parse_decode_mode("argmax") == DecodeMode::Argmax);
  CHECK_THROWS_AS(parse_decode_mode("median"), Error);
}

// n images of side s, uint8 HWC, into a graph input [n][C][s][s] in [-1, 1], as the samplers see them.
static Tensor<float>* image_input(Graph<float>& g, const std::vector<uint8_t>& x, int n, int C, int s) {
  Tensor<float>* t = g.tensor({n, C, s, s}, false, "x");
  const int HW = s * s;
  for (int b = 0; b < n; ++b)
    for (int c = 0; c < C; ++c)
      for (int q = 0; q < HW; ++q)
        t->data[(size_t(b) * C + c) * HW + q] = float(x[(size_t(b) * HW + q) * C + c]) / 127.5f - 1.f;
  return t;
}

// The model's own forward pass on the normalised low-res x: A(x) as [n][K][S][S] (host).
static std::vector<float> forward_conditioning(Model<float>& m, const std::vector<uint8_t>& x, int n) {
  const ModelConfig& cfg = m.config();
  Graph<float> g(Device::Cpu);
  g.grad_enabled = false;
  Tensor<float>* a = m.conditioning(g, image_input(g, x, n, cfg.colors, cfg.low()), false);
  return std::vector<float>(a->data, a->data + a->numel());
}

TEST_CASE("sampler: the l2 baseline returns its regression, rounded to bytes, for every pixel and colour") {
  for (int C : {1, 3}) {
    ModelConfig cfg = sampler_config(C, 8, 3);
    cfg.loss = "l2";
    Model<float> m(cfg, Device::Cpu);
    m.init(3);
    const int n = 2, HW = 64;
    const auto x = random_low(n, cfg.low(), C, 2);
    SampleOptions o;
    const auto y = sample_images(m, x.data(), n, o);
    REQUIRE(y.size() == size_t(n * HW * C));
    const auto a = forward_conditioning(m, x, n);
    long wrong = 0;
    for (int b = 0; b < n; ++b)
      for (int c = 0; c < C; ++c)
        for (int q = 0; q < HW; ++q) {
          const double v = a[(size_t(b) * C + c) * HW + q];
          const int want = std::clamp(int(std::floor((v + 1.0) * 127.5 + 0.5)), 0, 255);
          wrong += y[(size_t(b) * HW + q) * C + c] != want;
        }
    CHECK(wrong == 0);
    o.seed = 99;
    CHECK(sample_images(m, x.data(), n, o) == y);
  }
}

// Every drawn sub-pixel's logits are A(x) + B(y) of the model's own forward pass on the finished
// image (the prior is causal: B at a sub-pixel reads only the sub-pixels drawn before it), for
// both samplers: checks what the sampler takes from A(x) (its layout included), which cached ==
// naive cannot (both read the same A).
TEST_CASE("sampler: the drawn logits are A(x) + B(y) of the full forward pass on the sampled image") {
  ModelConfig cfg = sampler_config(3, 8, 3);
  Model<float> m(cfg, Device::Cpu);
  m.init(8);
  scale_params(m, 0.85f);
  const int n = 2, C = 3, S = cfg.size, HW = S * S;
  const auto x = random_low(n, cfg.low(), C, 11);
  const auto a = forward_conditioning(m, x, n);
  for (bool cached : {true, false}) {
    INFO("cached " << cached);
    SampleOptions o;
    o.seed = 5;
    o.cached = cached;
    std::vector<float> logits;
    o.logits_out = &logits;
    const auto y = sample_images(m, x.data(), n, o);
    REQUIRE(logits.size() == size_t(HW) * C * n * kLevels);
    Graph<float> g(Device::Cpu);
    g.grad_enabled = false;
    const Tensor<float>* B = m.prior(g, image_input(g, y, n, C, S));
    double worst = 0, top = 1;
    for (int q = 0; q < HW; ++q)
      for (int c = 0; c < C; ++c)
        for (int b = 0; b < n; ++b)
          for (int k = 0; k < kLevels; ++k) {
            const size_t ch = (size_t(b) * C + c) * kLevels + k;
            const double want = double(a[ch * HW + q]) + B->data[ch * HW + q];
            const double got = logits[((size_t(q) * C + c) * n + b) * kLevels + k];
            worst = std::max(worst, std::fabs(got - want));
            top = std::max(top, std::fabs(want));
          }
    CHECK(worst <= 2e-5 * top);
  }
}

// The draw's exponentials (model/sampler_kernels.h draw_exp; 4 at a time in draw_exponentials
// where the CPU has AVX2 + FMA) against libm's exp over exponents from 0 down past the -746 cut,
// at several temperatures: within 2 ulp where exp is normal, within 2 of the smallest subnormal
// below, +0 below -746, exactly 1 at z = 0; and the vector form gives the scalar form's bits (the
// GPU sampler uses the scalar one).
TEST_CASE("sampler: the draw's exponentials are exp within 2 ulp, +0 below -746, the same bits in every form") {
  std::mt19937_64 rng(12);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<float> logits(kLevels);
  std::vector<double> p(kLevels);
  long checked = 0, bad_bits = 0, bad_value = 0, subnormal = 0, cut = 0, bad_sums = 0;
  double worst = 0;
  for (int trial = 0; trial < 600; ++trial) {
    const double t = trial % 3 == 0 ? 1.0 : std::exp(6 * unit(rng) - 3);  // 0.05 .. 20
    const double span = std::exp(std::log(760.0 * t) * unit(rng) * 1.2);  // tiny to past the cut
    const int best = int(rng() % kLevels);
    const float top = float(200 * unit(rng) - 100);
    for (int l = 0; l < kLevels; ++l) logits[size_t(l)] = l == best ? top : float(top - span * unit(rng));
    if (trial % 5 == 0) logits[size_t((best + 1) % kLevels)] = top;  // z = 0 off the best level
    if (trial % 7 == 0)                                              // around the cut
      for (int l = 0; l < 8; ++l) logits[size_t((best + 2 + l) % kLevels)] = float(top - 746.0 * t + (l - 4) * 0.01);
    draw_exponentials(logits.data(), best, t, p.data());
    // With the running sums: the same exponentials, and sums added one by one in level order.
    std::vector<double> p2(kLevels), cum(kLevels);
    draw_exponentials(logits.data(), best, t, p2.data(), cum.data());
    double run = 0;
    for (int l = 0; l < kLevels; ++l) {
      run += p[size_t(l)];
      bad_sums += std::memcmp(&p2[size_t(l)], &p[size_t(l)], sizeof run) != 0 ||
                  std::memcmp(&cum[size_t(l)], &run, sizeof run) != 0;
    }
    for (int l = 0; l < kLevels; ++l) {
      const double z = (double(logits[size_t(l)]) - logits[size_t(best)]) / t, v = p[size_t(l)];
      const double s = gpu_sampler::draw_exp(z);
      bad_bits += std::memcmp(&v, &s, sizeof v) != 0;
      ++checked;
      if (z < -746.0) {
        ++cut;
        bad_value += !(v == 0.0 && !std::signbit(v));
        continue;
      }
      const double e = std::exp(z);
      if (z == 0.0) bad_value += v != 1.0;
      if (e < DBL_MIN) {
        ++subnormal;
        bad_value += !(std::fabs(v - e) <= 2 * std::numeric_limits<double>::denorm_min());
      } else {
        const double rel = std::fabs(v - e) / e;
        worst = std::max(worst, rel);
        bad_value += !(rel <= 2 * DBL_EPSILON);  // 2 ulp of a double in [1, 2): 4.4e-16
      }
    }
  }
  INFO("checked " << checked << " (" << subnormal << " subnormal, " << cut << " cut); worst relative error " << worst);
  CHECK(bad_bits == 0);
  CHECK(bad_value == 0);
  CHECK(bad_sums == 0);
  CHECK(subnormal > 0);
  CHECK(cut > 0);
  CHECK(worst > 0);  // not libm itself
}

TEST_CASE("sampler: sample_level draws finish_draw's level from the same exponentials and uniform") {
  // Random exponentials (runs of +0, ties, tiny and large values, a NaN), uniforms from 0 to just
  // below 1, and uniforms that put the target exactly on a prefix sum (the first level past it).
  std::mt19937_64 rng(29);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<double> p(kLevels);
  long checked = 0, mismatched = 0, on_sum = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const int best = int(rng() % kLevels), kind = trial % 5;
    for (int l = 0; l < kLevels; ++l) {
      const double r = unit(rng);
      p[size_t(l)] = kind == 0   ? r
                     : kind == 1 ? (r < 0.9 ? 0.0 : r)        // mostly +0
                     : kind == 2 ? std::exp(-700 * r)         // tiny to 1
                     : kind == 3 ? double(int(r * 4)) / 4     // ties and zero runs
                                 : (l % 3 == 0 ? 1.0 : 0.0);  // equal steps
    }
    p[size_t(best)] = 1.0;
    if (trial % 97 == 0) p[size_t(rng() % kLevels)] = std::nan("");
    double u = unit(rng);
    if (trial % 4 == 1) u = std::nextafter(1.0, 0.0);
    if (trial % 4 == 2) u = 0.0;
    if (trial % 4 == 3) {  // u * sum == a prefix sum, where the division lets it
      double sum = 0, cum = 0;
      for (double v : p) sum += v;
      const int k = int(rng() % kLevels);
      for (int l = 0; l <= k; ++l) cum += p[size_t(l)];
      u = cum / sum;
      on_sum += u < 1 && u * sum == cum;
    }
    if (!(u < 1)) continue;
    const int a = sample_level(p.data(), best, u),
              b = gpu_sampler::finish_draw(p.data(), best, gpu_sampler::kSample, u);
    std::vector<double> cum(kLevels);
    double run = 0;
    for (int l = 0; l < kLevels; ++l) cum[size_t(l)] = run += p[size_t(l)];
    mismatched += a != b || sample_level_from_sums(cum.data(), best, u) != b;
    ++checked;
  }
  CHECK(mismatched == 0);
  CHECK(checked > 2900);
  CHECK(on_sum > 200);  // the exact-boundary case was exercised
}

TEST_CASE("sampler: best_level is the scan's first largest logit, NaNs, ties, signed zeros and infinities included") {
  auto scan = [](const std::vector<float>& x) {
    int best = 0;
    for (int l = 1; l < kLevels; ++l)
      if (x[size_t(l)] > x[size_t(best)]) best = l;
    return best;
  };
  std::mt19937_64 rng(41);
  std::uniform_real_distribution<float> unit(-1.f, 1.f);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> x(kLevels);
  long mismatched = 0, nan_first = 0, not_zero = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    const int kind = trial % 6;
    for (int l = 0; l < kLevels; ++l) {
      const float r = unit(rng);
      x[size_t(l)] = kind == 0   ? r * 1000
                     : kind == 1 ? float(int(r * 3))            // many ties
                     : kind == 2 ? (r < 0 ? -0.f : 0.f)         // only signed zeros
                     : kind == 3 ? (r < 0.9f ? -inf : r)        // mostly -inf
                     : kind == 4 ? (r < -0.98f ? inf : r * 10)  // a few +inf
                                 : r;
    }
    if (trial % 7 == 0) x[size_t(rng() % kLevels)] = nan;
    if (trial % 11 == 0) x[size_t(rng() % kLevels)] = nan, x[size_t(rng() % kLevels)] = nan;
    if (trial % 13 == 0) x[0] = nan;
    if (trial % 17 == 0) x[size_t(kLevels - 1)] = 1e30f;  // the largest in the last lane
    const int want = scan(x), got = best_level(x.data());
    mismatched += got != want;
    nan_first += x[0] != x[0];
    not_zero += want != 0;
  }
  CHECK(mismatched == 0);
  CHECK(nan_first > 100);
  CHECK(not_zero > 2500);
}
