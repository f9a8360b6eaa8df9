#include "study/prepare.h"

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <system_error>

#include "data/dataset.h"
#include "data/image.h"
#include "data/preprocess.h"
#include "engine/backend.h"
#include "engine/error.h"
#include "eval/bicubic.h"
#include "eval/grid.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "model/sampler.h"
#include "study/manifest.h"

namespace fs = std::filesystem;

namespace prsr::study {

namespace {

uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

struct Loaded {
  CheckpointInfo info;
  std::unique_ptr<Model<float>> model;
};

Loaded load(const std::string& path, Device dev) {
  Loaded l;
  l.info = read_checkpoint_info(path);
  l.model = std::make_unique<Model<float>>(l.info.model, dev);
  load_checkpoint(path, *l.model, nullptr);
  return l;
}

// One progress line on stderr: redrawn in place on a terminal, a line every 10 s otherwise.
struct Progress {
  long total, done = 0;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  bool tty = isatty(2);
  double last = -1e9;
  void show(long now_done, bool final) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!final && !tty && s - last < 10) return;
    if (!final && tty && s - last < 0.2) return;
    last = s;
    const double rate = s > 0 ? now_done / s : 0;
    std::fprintf(stderr, "%ssampling %ld/%ld images, %.2f images/s, ETA %.0f s%s", tty ? "\r" : "", now_done, total,
                 rate, rate > 0 ? (total - now_done) / rate : 0.0, tty && !final ? "" : "\n");
  }
};

// Samples every input once with `model` (a deterministic regression for an l2 model) in
// batches; batch b is seeded splitmix64(seed ^ splitmix64(t << 32 | b)). Returns [input], HWC.
std::vector<std::vector<uint8_t>> sample_inputs(Model<float>& model, const std::vector<std::vector<uint8_t>>& xs,
                                                float temperature, int t_index, int batch, uint64_t seed,
                                                Progress& progress) {
  const ModelConfig& c = model.config();
  const size_t yb = size_t(c.size) * c.size * c.colors;
  const int n = int(xs.size());
  std::vector<std::vector<uint8_t>> out(n);
  std::vector<uint8_t> xb;
  for (int b0 = 0, b = 0; b0 < n; b0 += batch, ++b) {
    const int m = std::min(batch, n - b0);
    xb.clear();
    for (int j = 0; j < m; ++j) xb.insert(xb.end(), xs[b0 + j].begin(), xs[b0 + j].end());
    SampleOptions o;
    o.temperature = temperature;
    o.seed = splitmix64(seed ^ splitmix64((uint64_t(t_index) << 32) | uint64_t(b)));
    const long before = progress.done;
    o.progress = [&progress, before, m](int done, int tot) { progress.show(before + long(m) * done / tot, false); };
    const std::vector<uint8_t> ys = sample_images(model, xb.data(), m, o);
    check(ys.size() == m * yb, "sampler returned " + std::to_string(ys.size()) + " bytes");
    for (int j = 0; j < m; ++j) out[b0 + j].assign(ys.begin() + j * yb, ys.begin() + (j + 1) * yb);
    progress.done += m;
  }
  return out;
}

void write(const fs::path& dir, const std::string& rel, const std::vector<uint8_t>& px, int size, int C) {
  data::write_png((dir / rel).string(), make_image(px.data(), size, size, C));
}

}  // namespace

std::vector<int> pick_inputs(int n, int count, uint64_t seed) {
  std::vector<int> idx(n);
  for (int i = 0; i < n; ++i) idx[i] = i;
  uint64_t s = seed;
  for (int i = 0; i < count && i < n; ++i) {  // partial Fisher-Yates: the first count are chosen
    s = splitmix64(s);
    const int j = i + int(s % uint64_t(n - i));
    std::swap(idx[i], idx[j]);
  }
  idx.resize(std::min(count, n));
  std::sort(idx.begin(), idx.end());
  return idx;
}

int run_prepare(const PrepareArgs& a) {
  std::error_code ec;
  const fs::path out(a.out);
  if (fs::exists(out / kManifestName, ec))
    throw Error(a.out + ": already holds a study (" + kManifestName +
                "); choose another --out (its answers belong to those images)");
  Device dev = Device::Cpu;
  if (a.device == "cuda") {
    if (!cuda::available()) throw Error(std::string("--device cuda: ") + cuda::unavailable_reason());
    dev = Device::Cuda;
  }

  // Models: the PixelCNN (--ckpt) and the optional ResNet-L2 baseline of the same shape.
  Loaded main = load(a.ckpt, dev);
  const ModelConfig& cfg = main.info.model;
  if (!cfg.has_prior())
    throw Error(a.ckpt + ": --ckpt wants the PixelCNN model (loss pixel); this one is " + cfg.loss +
                " (an L2 model goes in --baseline-ckpt)");
  const int C = cfg.colors, size = cfg.size, low = cfg.low();
  std::printf("model: %s (step %ld, C=%d, %dx%d -> %dx%d) on %s\n", a.ckpt.c_str(), main.info.step, C, low, low, size,
              size, device_name(dev));
  Loaded base;
  if (!a.baseline_ckpt.empty()) {
    base = load(a.baseline_ckpt, dev);
    const ModelConfig& b = base.info.model;
    if (b.has_prior())
      throw Error(a.baseline_ckpt + ": --baseline-ckpt wants a ResNet-L2 model (loss l2), this one has loss " + b.loss);
    if (b.colors != C || b.size != size)
      throw Error(a.baseline_ckpt + ": baseline is C=" + std::to_string(b.colors) + " " + std::to_string(b.size) + "x" +
                  std::to_string(b.size) + ", the model C=" + std::to_string(C) + " " + std::to_string(size) + "x" +
                  std::to_string(size));
    std::printf("baseline: %s (step %ld, ResNet-L2)\n", a.baseline_ckpt.c_str(), base.info.step);
  }

  // Inputs: --count images at random from the split; x is the 4x4 box average of the truth y.
  data::DataOptions o;
  o.spec = a.data;
  o.data_dir = a.data_dir;
  o.cache_dir = a.cache_dir;
  const data::Dataset d = data::load_dataset(o, data::parse_split(a.split));
  if (d.size != size || d.colors != C)
    throw Error(a.data + ": images are C=" + std::to_string(d.colors) + " " + std::to_string(d.size) + "x" +
                std::to_string(d.size) + " but the model makes C=" + std::to_string(C) + " " + std::to_string(size) +
                "x" + std::to_string(size));
  if (a.count > d.n)
    throw Error("--count " + std::to_string(a.count) + ": the " + a.split + " split of " + a.data + " has only " +
                std::to_string(d.n) + " images");
  const std::vector<int> picked = pick_inputs(d.n, a.count, a.seed);
  std::vector<std::vector<uint8_t>> xs(picked.size());
  for (size_t i = 0; i < picked.size(); ++i) {
    xs[i].resize(size_t(low) * low * C);
    data::box_downsample4(d.image(picked[i]), size, C, xs[i].data());
  }
  std::printf("inputs: %zu picked at random (seed %llu) from the %s split of %s (%d images)\n", picked.size(),
              (unsigned long long)a.seed, a.split.c_str(), d.name.c_str(), d.n);

  // Every method's outputs.
  Progress progress{long(picked.size()) * long(a.temperatures.size() + (base.model ? 1 : 0))};
  std::vector<std::vector<std::vector<uint8_t>>> samples;  // [temperature][input]
  for (size_t t = 0; t < a.temperatures.size(); ++t)
    samples.push_back(sample_inputs(*main.model, xs, a.temperatures[t], int(t), a.batch, a.seed, progress));
  std::vector<std::vector<uint8_t>> l2;
  if (base.model) l2 = sample_inputs(*base.model, xs, 1.0f, 0, a.batch, a.seed, progress);
  progress.show(progress.done, true);

  // PNGs, then the manifest: per input, prsr at each temperature, l2, bicubic.
  std::vector<std::string> folders = {"images/real"};
  for (float t : a.temperatures) folders.push_back("images/prsr_t" + fmt_temperature(t));
  if (base.model) folders.push_back("images/l2");
  if (a.bicubic) folders.push_back("images/bicubic");
  for (const std::string& f : folders) {
    fs::create_directories(out / f, ec);
    if (ec) throw Error((out / f).string() + ": cannot create: " + ec.message());
  }
  std::vector<Pair> pairs;
  std::vector<uint8_t> bic(size_t(size) * size * C);
  for (size_t i = 0; i < picked.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "%s_%05d.png", a.split.c_str(), picked[i]);
    const std::string real = "images/real/" + std::string(name);
    write(out, real, std::vector<uint8_t>(d.image(picked[i]), d.image(picked[i]) + d.image_bytes()), size, C);
    auto add = [&](const std::string& method, const std::string& temp, const std::string& fake) {
      Pair p;
      p.id = int(pairs.size());
      p.input = picked[i];
      p.method = method;
      p.temperature = temp;
      p.real = real;
      p.fake = fake;
      pairs.push_back(p);
    };
    for (size_t t = 0; t < a.temperatures.size(); ++t) {
      const std::string temp = fmt_temperature(a.temperatures[t]);
      const std::string fake = "images/prsr_t" + temp + "/" + name;
      write(out, fake, samples[t][i], size, C);
      add("prsr", temp, fake);
    }
    if (base.model) {
      write(out, "images/l2/" + std::string(name), l2[i], size, C);
      add("l2", "", "images/l2/" + std::string(name));
    }
    if (a.bicubic) {
      eval::bicubic_upsample(xs[i].data(), low, low, C, size / low, bic.data());
      write(out, "images/bicubic/" + std::string(name), bic, size, C);
      add("bicubic", "", "images/bicubic/" + std::string(name));
    }
  }
  write_manifest(a.out, pairs);
  std::printf("wrote %zu pairs (%zu inputs x %zu methods) to %s/%s; next: study serve %s\n", pairs.size(),
              picked.size(), pairs.size() / picked.size(), a.out.c_str(), kManifestName, a.out.c_str());
  return 0;
}

}  // namespace prsr::study
