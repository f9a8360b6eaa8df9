// ./build/sample: super-resolve 8x8 images with a trained checkpoint (DESIGN 3, 4).
//
//   inputs  --input FILE|DIR, or --data NAME --split S --count N
//   output  a PNG grid, one row per input: nearest | bicubic | samples | ground truth,
//           and every sample as its own PNG in --out-dir
//   --eval  held-out bits/dim, PSNR, SSIM and consistency for the model at each temperature,
//           bicubic and (with --baseline-ckpt) the ResNet-L2 model; a table on stdout, the
//           same as CSV and JSON beside --out.
// docs/sample.md is the user's page; every error is one line "error: ..." and exit code 1.
// The flags are in sample/options.h, the inputs in sample/inputs.h, the --eval rows and files
// in sample/report.h; here: sampling in batches, the checkpoints, the grid and the PNGs.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "data/image.h"
#include "engine/backend.h"
#include "engine/error.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "eval/bicubic.h"
#include "eval/grid.h"
#include "sample/inputs.h"
#include "sample/options.h"
#include "sample/report.h"
#include "model/sampler.h"

namespace fs = std::filesystem;
using namespace prsr;
using namespace prsr::sample_cli;

namespace {

bool g_line_open = false;  // a progress line is on stderr without its newline yet

// ----------------------------------------------------------------------------- sampling

// Rows done / total over every sample_images call of the run, with images/s and ETA. On a
// terminal it redraws one line; otherwise it prints a line every 10 s and at the end.
class Progress {
 public:
  explicit Progress(long total_images) : total_(total_images), t0_(clock::now()), tty_(isatty(2)) {}
  void begin_batch(int n) { batch_n_ = n; }
  void update(int done_rows, int total_rows) {
    const double done = done_images_ + double(batch_n_) * done_rows / std::max(total_rows, 1);
    if (done_rows >= total_rows) done_images_ += batch_n_;
    const double now = seconds();
    const bool last = done_images_ >= total_;
    const double every = tty_ ? 0.1 : 10.0;
    if (!last && now - last_print_ < every) return;
    last_print_ = now;
    const double rate = now > 0 ? done / now : 0;
    const int width = 24, fill = int(width * done / std::max<double>(total_, 1));
    std::string bar(width, '.');
    std::fill(bar.begin(), bar.begin() + std::min(fill, width), '#');
    const long eta = rate > 0 ? long((total_ - done) / rate + 0.5) : 0;
    std::fprintf(stderr, "%ssampling: [%s] %.0f/%ld images  %.2f img/s  ETA %ld:%02ld%s", tty_ ? "\r" : "",
                 bar.c_str(), std::floor(done), total_, rate, eta / 60, eta % 60, (last || !tty_) ? "\n" : "");
    std::fflush(stderr);
    g_line_open = tty_ && !last;
  }
  double seconds() const { return std::chrono::duration<double>(clock::now() - t0_).count(); }

 private:
  using clock = std::chrono::steady_clock;
  long total_;
  long done_images_ = 0;
  int batch_n_ = 0;
  clock::time_point t0_;
  bool tty_;
  double last_print_ = -1e9;
};

uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Every (input, sample) pair at one temperature, in batches of `batch`; input-major order.
// Batch b of temperature index t is drawn with seed splitmix64(seed ^ splitmix64(t << 32 | b)).
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
    check(ys.size() == n * yb, "sampler returned " + std::to_string(ys.size()) + " bytes, expected " +
                                   std::to_string(n * yb));
    for (int j = 0; j < n; ++j) out[b0 + j].assign(ys.begin() + j * yb, ys.begin() + (j + 1) * yb);
  }
  return out;
}

std::string fmt_temperature(float t) {
  char s[32];
  std::snprintf(s, sizeof s, "%g", double(t));
  std::string r = s;
  if (r.find('.') == std::string::npos && r.find('e') == std::string::npos) r += ".0";
  return r;
}

// ----------------------------------------------------------------------------- checkpoints

struct Loaded {
  CheckpointInfo info;
  std::unique_ptr<Model<float>> model;
};

Loaded load_model(const std::string& path, Device dev) {
  Loaded l;
  l.info = read_checkpoint_info(path);
  l.model = std::make_unique<Model<float>>(l.info.model, dev);
  load_checkpoint(path, *l.model, nullptr);
  return l;
}

// ----------------------------------------------------------------------------- main

int run(const Args& a) {
  Device dev = Device::Cpu;
  if (a.device == "cuda") {
    if (!cuda::available()) throw Error(std::string("--device cuda: ") + cuda::unavailable_reason());
    dev = Device::Cuda;
  }
  Loaded main_model = load_model(a.ckpt, dev);
  const ModelConfig& cfg = main_model.info.model;
  const int C = cfg.colors, size = cfg.size, low = cfg.low();
  std::printf("model: %s (step %ld, %s, C=%d, %dx%d -> %dx%d, %zu parameters) on %s\n", a.ckpt.c_str(),
              main_model.info.step, cfg.loss.c_str(), C, low, low, size, size,
              main_model.model->parameter_count(), device_name(dev));

  Loaded baseline;
  if (!a.baseline_ckpt.empty()) {
    baseline = load_model(a.baseline_ckpt, dev);
    const ModelConfig& b = baseline.info.model;
    if (b.has_prior())
      throw Error(a.baseline_ckpt + ": --baseline-ckpt wants a ResNet-L2 model (trained with --loss l2), this one has loss " + b.loss);
    if (b.colors != C || b.size != size)
      throw Error(a.baseline_ckpt + ": baseline is C=" + std::to_string(b.colors) + " " + std::to_string(b.size) +
                  "x" + std::to_string(b.size) + ", the model C=" + std::to_string(C) + " " + std::to_string(size) +
                  "x" + std::to_string(size));
    std::printf("baseline: %s (step %ld, ResNet-L2)\n", a.baseline_ckpt.c_str(), baseline.info.step);
  }

  // Inputs.
  ColourNotes notes;
  std::string label;
  std::vector<Input> inputs;
  if (!a.input.empty()) {
    inputs = inputs_from_path(a.input, C, size, notes);
    label = a.input;
  } else {
    inputs = inputs_from_data(a, C, size, notes, label);
  }
  if (notes.to_grey)
    std::printf("note: %d RGB input%s converted to grey (the model is C = 1): 0.299 R + 0.587 G + 0.114 B\n",
                notes.to_grey, notes.to_grey == 1 ? "" : "s");
  if (notes.to_rgb)
    std::printf("note: %d grey input%s replicated to RGB (the model is C = 3)\n", notes.to_rgb,
                notes.to_rgb == 1 ? "" : "s");
  if (notes.upscaled)
    std::printf("note: %d input%s smaller than %dx%d: the ground truth is an upscaled image\n", notes.upscaled,
                notes.upscaled == 1 ? "" : "s", size, size);
  int with_y = 0;
  for (const Input& in : inputs) with_y += in.has_y();
  std::printf("inputs: %zu (%d with ground truth) from %s\n", inputs.size(), with_y, label.c_str());

  // Sampling plan.
  SampleOptions opt;
  opt.mode = parse_decode_mode(a.mode);
  opt.cached = !a.naive;
  const bool deterministic = !cfg.has_prior() || opt.mode != DecodeMode::Sample;
  int S = a.samples;
  std::vector<float> temps = a.temperatures;
  if (deterministic) {
    if (S > 1 || temps.size() > 1)
      std::printf("note: %s is deterministic: one output per input%s\n",
                  !cfg.has_prior() ? "an l2 model" : (std::string("--mode ") + a.mode).c_str(),
                  cfg.has_prior() ? "" : ", no temperature");
    S = 1;
    if (!cfg.has_prior() || temps.size() > 1) temps.resize(1);
  }
  std::printf("sampling: %zu input%s x %d sample%s x %zu temperature%s, mode %s, %s sampler, seed %llu, batch %d\n",
              inputs.size(), inputs.size() == 1 ? "" : "s", S, S == 1 ? "" : "s", temps.size(),
              temps.size() == 1 ? "" : "s", a.mode.c_str(), a.naive ? "naive" : "cached",
              (unsigned long long)a.seed, a.batch);

  long total = long(inputs.size()) * S * long(temps.size());
  if (baseline.model) total += long(inputs.size());
  Progress progress(total);
  std::vector<std::vector<std::vector<uint8_t>>> samples;  // [temperature][input * S + k]
  for (size_t t = 0; t < temps.size(); ++t) {
    SampleOptions o = opt;
    o.temperature = temps[t];
    samples.push_back(sample_all(*main_model.model, inputs, S, o, int(t), a.batch, a.seed, progress));
  }
  std::vector<std::vector<uint8_t>> l2_out;
  if (baseline.model) {
    SampleOptions o;
    o.cached = true;
    l2_out = sample_all(*baseline.model, inputs, 1, o, 0, a.batch, a.seed, progress);
  }
  const double secs = progress.seconds();
  std::printf("sampled %ld image%s in %.2f s (%.2f images/s)\n", total, total == 1 ? "" : "s", secs,
              secs > 0 ? total / secs : 0.0);

  // The grid: nearest | bicubic | samples (temperature by temperature) | ground truth.
  // With --eval only the first 16 inputs get a row (a test split can have thousands).
  const size_t grid_rows = a.eval ? std::min<size_t>(inputs.size(), 16) : inputs.size();
  Grid grid;
  grid.tile = a.tile;
  std::vector<uint8_t> up(size_t(size) * size * C);
  for (size_t i = 0; i < grid_rows; ++i) {
    const Input& in = inputs[i];
    std::vector<data::Image> row;
    eval::nearest_upsample(in.x.data(), low, low, C, 4, up.data());
    row.push_back(make_image(up.data(), size, size, C));
    eval::bicubic_upsample(in.x.data(), low, low, C, 4, up.data());
    row.push_back(make_image(up.data(), size, size, C));
    for (size_t t = 0; t < temps.size(); ++t)
      for (int k = 0; k < S; ++k) row.push_back(make_image(samples[t][i * S + k].data(), size, size, C));
    if (a.eval && baseline.model) row.push_back(make_image(l2_out[i].data(), size, size, C));
    if (in.has_y()) row.push_back(make_image(in.y.data(), size, size, C));
    grid.add_row(std::move(row));
  }
  const fs::path out_parent = fs::path(a.out).parent_path();
  if (!out_parent.empty()) {
    std::error_code ec;
    fs::create_directories(out_parent, ec);
    if (ec) throw Error("cannot create " + out_parent.string() + ": " + ec.message());
  }
  grid.write(a.out);
  const size_t cols = 2 + temps.size() * S + (a.eval && baseline.model ? 1 : 0) + (with_y ? 1 : 0);
  std::printf("wrote %s (%zu row%s x up to %zu tiles of %d px: nearest | bicubic | %zu sample%s%s%s)\n",
              a.out.c_str(), grid_rows, grid_rows == 1 ? "" : "s", cols, a.tile, temps.size() * S,
              temps.size() * S == 1 ? "" : "s",
              a.eval && baseline.model ? " | resnet-l2" : "", with_y ? " | ground truth" : "");

  if (!a.eval) {
    std::error_code ec;
    fs::create_directories(a.out_dir, ec);
    if (ec) throw Error("cannot create " + a.out_dir + ": " + ec.message());
    long written = 0;
    for (size_t t = 0; t < temps.size(); ++t)
      for (size_t i = 0; i < inputs.size(); ++i)
        for (int k = 0; k < S; ++k) {
          std::string name = inputs[i].name;
          if (temps.size() > 1) name += "_t" + fmt_temperature(temps[t]);
          name += "_s" + std::to_string(k) + ".png";
          data::write_png((fs::path(a.out_dir) / name).string(),
                          make_image(samples[t][i * S + k].data(), size, size, C));
          ++written;
        }
    std::printf("wrote %ld sample PNG%s (%dx%d) in %s/\n", written, written == 1 ? "" : "s", size, size,
                a.out_dir.c_str());
    return 0;
  }

  // --eval: every input has a ground truth (it comes from --data).
  std::vector<EvalRow> rows;
  double bits = NAN;
  if (cfg.has_prior()) bits = heldout_bits(*main_model.model, main_model.info, inputs, a.batch);
  for (size_t t = 0; t < temps.size(); ++t) {
    EvalRow r;
    r.method = "model";
    if (cfg.has_prior() && opt.mode == DecodeMode::Sample) r.temperature = fmt_temperature(temps[t]);
    if (opt.mode != DecodeMode::Sample) r.method += "-" + a.mode;
    if (!cfg.has_prior()) r.method = "model-l2";
    r.bits = bits;
    for (size_t i = 0; i < inputs.size(); ++i)
      for (int k = 0; k < S; ++k) add_metrics(r, inputs[i], samples[t][i * S + k].data(), size, C);
    rows.push_back(r);
  }
  {
    EvalRow r;
    r.method = "bicubic";
    for (const Input& in : inputs) {
      eval::bicubic_upsample(in.x.data(), low, low, C, 4, up.data());
      add_metrics(r, in, up.data(), size, C);
    }
    rows.push_back(r);
  }
  if (baseline.model) {
    EvalRow r;
    r.method = "resnet-l2";
    for (size_t i = 0; i < inputs.size(); ++i) add_metrics(r, inputs[i], l2_out[i].data(), size, C);
    rows.push_back(r);
  }
  std::printf("eval: %s, %d sample%s per input, seed %llu\n", label.c_str(), S, S == 1 ? "" : "s",
              (unsigned long long)a.seed);
  report_eval(rows, label, S, a.seed, a.ckpt, a.out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Line-buffered stdout even into a pipe or file, so that it interleaves with the progress
  // bar on stderr in the order things happened.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    const Args a = parse_args(argc, argv);
    if (a.help) {
      print_help();
      return 0;
    }
    return run(a);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    if (g_line_open) std::fputc('\n', stderr);  // a progress bar was mid-line
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
