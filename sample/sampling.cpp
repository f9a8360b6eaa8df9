#include "sample/sampling.h"

#include <omp.h>

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

// The batches of `total` samples, `batch` at a time: [b0, b0 + n) is batch b0 / batch.
int batch_count(int total, int batch) { return (total + batch - 1) / batch; }

// Batch b of `total` samples at temperature index t is drawn unless every sample in it is done.
bool batch_needed(const BatchHooks& h, size_t t, int b, int total, int batch) {
  if (!h.done) return true;
  for (int j = b * batch; j < std::min(total, (b + 1) * batch); ++j)
    if (!h.done(t, j)) return true;
  return false;
}

// Every (input, sample) pair at one temperature, in batches of `batch`; input-major order.
// Returns samples[i * S + k], each size x size x C (empty where a batch was skipped or not
// reached). Returns false when hooks.stop stopped it.
bool sample_all(Model<float>& model, const std::vector<Input>& inputs, int S, SampleOptions opt, int t_index, int batch,
                uint64_t seed, Progress& progress, const BatchHooks& hooks, std::vector<std::vector<uint8_t>>& out) {
  const ModelConfig& c = model.config();
  const size_t xb = size_t(c.low()) * c.low() * c.colors, yb = size_t(c.size) * c.size * c.colors;
  const int total = int(inputs.size()) * S;
  out.assign(total, {});
  std::vector<uint8_t> xs;
  for (int b0 = 0, b = 0; b0 < total; b0 += batch, ++b) {
    if (!batch_needed(hooks, size_t(t_index), b, total, batch)) continue;
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
    if (hooks.batch_done) hooks.batch_done(size_t(t_index), b0, n, out);
    if (hooks.stop && hooks.stop()) return false;
  }
  return true;
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
  const int threads = omp_get_max_threads();
  std::printf(
      "sampling: %zu input%s x %d sample%s x %zu temperature%s, mode %s, %s sampler, seed %llu, batch %d, %d "
      "thread%s\n",
      n_inputs, n_inputs == 1 ? "" : "s", p.S, p.S == 1 ? "" : "s", p.temps.size(), p.temps.size() == 1 ? "" : "s",
      a.mode.c_str(), a.naive ? "naive" : "cached", (unsigned long long)a.seed, a.batch, threads,
      threads == 1 ? "" : "s");
  return p;
}

Samples sample_everything(Models& models, const std::vector<Input>& inputs, const Plan& plan, int batch, uint64_t seed,
                          const BatchHooks& hooks) {
  // The progress bar counts only the batches that are drawn.
  const int per_t = int(inputs.size()) * plan.S;
  long total = 0;
  for (size_t t = 0; t < plan.temps.size(); ++t)
    for (int b = 0; b < batch_count(per_t, batch); ++b)
      if (batch_needed(hooks, t, b, per_t, batch)) total += std::min(batch, per_t - b * batch);
  if (models.baseline.model) total += long(inputs.size());
  Progress progress(total);
  Samples s;
  s.model.resize(plan.temps.size());
  for (size_t t = 0; t < plan.temps.size() && !s.interrupted; ++t) {
    SampleOptions o = plan.opt;
    o.temperature = plan.temps[t];
    s.interrupted =
        !sample_all(*models.main.model, inputs, plan.S, o, int(t), batch, seed, progress, hooks, s.model[t]);
  }
  if (models.baseline.model && !s.interrupted) {
    SampleOptions o;
    o.cached = true;
    BatchHooks stop_only;
    stop_only.stop = hooks.stop;
    s.interrupted = !sample_all(*models.baseline.model, inputs, 1, o, 0, batch, seed, progress, stop_only, s.l2);
  }
  if (s.interrupted) return s;
  const double secs = progress.seconds();
  std::printf("sampled %ld image%s in %.2f s (%.2f images/s)\n", total, total == 1 ? "" : "s", secs,
              secs > 0 ? total / secs : 0.0);
  return s;
}

}  // namespace prsr::sample_cli
