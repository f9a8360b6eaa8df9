#include "sample/sampling.h"

#include <algorithm>
#include <cstdio>

#include "engine/error.h"
#include "sample/progress.h"

namespace prsr::sample_cli {

namespace {

uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Every (input, sample) pair at one temperature, in batches of `batch`; input-major order.
// Returns samples[i * S + k], each size x size x C.
std::vector<std::vector<uint8_t>> sample_all(Model<float>& model, const std::vector<Input>& inputs, int S,
                                             SampleOptions opt, int t_index, int batch, uint64_t seed,
                                             Progress& progress) {
  const ModelConfig& c = model.config();
  const size_t xb = size_t(c.low()) * c.low() * c.colors, yb = size_t(c.size) * c.size * c.colors;
  const int total = int(inputs.size()) * S;
  std::vector<std::vector<uint8_t>> out(total);
  std::vector<uint8_t> xs;
  for (int b0 = 0, b = 0; b0 < total; b0 += batch, ++b) {
    const int n = std::min(batch, total - b0);
    xs.resize(n * xb);
    for (int j = 0; j < n; ++j) {
      const Input& in = inputs[(b0 + j) / S];
      std::copy(in.x.begin(), in.x.end(), xs.begin() + j * xb);
    }
    opt.seed = splitmix64(seed ^ splitmix64((uint64_t(t_index) << 32) | uint64_t(b)));
    progress.begin_batch(n);
    opt.progress = [&progress](int done, int tot) { progress.update(done, tot); };
    const std::vector<uint8_t> ys = sample_images(model, xs.data(), n, opt);
    check(ys.size() == n * yb,
          "sampler returned " + std::to_string(ys.size()) + " bytes, expected " + std::to_string(n * yb));
    for (int j = 0; j < n; ++j) out[b0 + j].assign(ys.begin() + j * yb, ys.begin() + (j + 1) * yb);
  }
  return out;
}

}  // namespace

Plan plan_sampling(const Args& a, const ModelConfig& cfg, size_t n_inputs) {
  Plan p;
  p.opt.mode = parse_decode_mode(a.mode);
  p.opt.cached = !a.naive;
  const bool deterministic = !cfg.has_prior() || p.opt.mode != DecodeMode::Sample;
  p.S = a.samples;
  p.temps = a.temperatures;
  if (deterministic) {
    if (p.S > 1 || p.temps.size() > 1)
      std::printf("note: %s is deterministic: one output per input%s\n",
                  !cfg.has_prior() ? "an l2 model" : (std::string("--mode ") + a.mode).c_str(),
                  cfg.has_prior() ? "" : ", no temperature");
    p.S = 1;
    if (!cfg.has_prior() || p.temps.size() > 1) p.temps.resize(1);
  }
  std::printf("sampling: %zu input%s x %d sample%s x %zu temperature%s, mode %s, %s sampler, seed %llu, batch %d\n",
              n_inputs, n_inputs == 1 ? "" : "s", p.S, p.S == 1 ? "" : "s", p.temps.size(),
              p.temps.size() == 1 ? "" : "s", a.mode.c_str(), a.naive ? "naive" : "cached", (unsigned long long)a.seed,
              a.batch);
  return p;
}

Samples sample_everything(Models& models, const std::vector<Input>& inputs, const Plan& plan, int batch,
                          uint64_t seed) {
  long total = long(inputs.size()) * plan.S * long(plan.temps.size());
  if (models.baseline.model) total += long(inputs.size());
  Progress progress(total);
  Samples s;
  for (size_t t = 0; t < plan.temps.size(); ++t) {
    SampleOptions o = plan.opt;
    o.temperature = plan.temps[t];
    s.model.push_back(sample_all(*models.main.model, inputs, plan.S, o, int(t), batch, seed, progress));
  }
  if (models.baseline.model) {
    SampleOptions o;
    o.cached = true;
    s.l2 = sample_all(*models.baseline.model, inputs, 1, o, 0, batch, seed, progress);
  }
  const double secs = progress.seconds();
  std::printf("sampled %ld image%s in %.2f s (%.2f images/s)\n", total, total == 1 ? "" : "s", secs,
              secs > 0 ? total / secs : 0.0);
  return s;
}

std::string fmt_temperature(float t) {
  char s[32];
  std::snprintf(s, sizeof s, "%g", double(t));
  std::string r = s;
  if (r.find('.') == std::string::npos && r.find('e') == std::string::npos) r += ".0";
  return r;
}

}  // namespace prsr::sample_cli
