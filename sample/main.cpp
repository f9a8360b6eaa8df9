// ./build/sample: super-resolve 8x8 images with a trained checkpoint (DESIGN 3, 4).
//
//   inputs  --input FILE|DIR, or --data NAME --split S --count N
//   output  a PNG grid, one row per input: nearest | bicubic | samples | ground truth,
//           and every sample as its own PNG in --out-dir
//   --eval  held-out bits/dim, PSNR, SSIM and consistency for the model at each temperature,
//           bicubic and (with --baseline-ckpt) the ResNet-L2 model; a table on stdout, the
//           same as CSV and JSON beside --out.
// docs/sample.md is the user's page; every error is one line "error: ..." and exit code 1.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/image.h"
#include "data/preprocess.h"
#include "engine/backend.h"
#include "engine/error.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "model/trainer.h"
#include "sample/bicubic.h"
#include "sample/grid.h"
#include "sample/metrics.h"
#include "sample/sampler.h"

namespace fs = std::filesystem;
using namespace prsr;

namespace {

bool g_line_open = false;  // a progress line is on stderr without its newline yet

// ----------------------------------------------------------------------------- flags

struct Args {
  std::string ckpt;
  std::string input;                 // FILE or DIR
  std::string data;                  // data set spec
  std::string data_dir, cache_dir;
  std::string split = "test";
  int count = -1;                    // -1: default (8, or 100 with --eval); 0: the whole split
  bool count_given = false;
  std::vector<float> temperatures;   // empty: default (1.0, or 1.0,0.9,0.8 with --eval)
  std::string temperature_text;
  int samples = -1;                  // -1: default (3, or 1 with --eval)
  std::string mode = "sample";
  std::string out;                   // default samples.png (eval.png with --eval)
  std::string out_dir = "samples";
  std::string device = "cpu";
  uint64_t seed = 0;
  int batch = 16;
  int tile = 64;
  bool naive = false;
  bool eval = false;
  std::string baseline_ckpt;
  bool help = false;
};

void print_help() {
  std::printf(
      "usage: sample --ckpt model.bin (--input FILE|DIR | --data NAME [--split test] [--count N]) [options]\n"
      "\n"
      "Super-resolves 8x8 inputs to 32x32 with a trained prsr checkpoint (docs/sample.md).\n"
      "\n"
      "inputs\n"
      "  --ckpt PATH              checkpoint to sample from (required)\n"
      "  --input FILE|DIR         a PNG/JPEG, or every .png/.jpg/.jpeg in DIR (sorted). An 8x8 image\n"
      "                           is the low-res input itself; any other size is a ground truth:\n"
      "                           centre square crop, area resize to 32x32, 4x4 box average -> 8x8\n"
      "  --data NAME              celeba | fashion-mnist | folder:PATH: the first --count images of\n"
      "                           --split (ground truth known)\n"
      "  --data-dir PATH          where the data set lives (default: the data set's own default)\n"
      "  --cache-dir PATH         decoded data set cache (default: datasets/cache)\n"
      "  --split NAME             train | valid | test (default: test)\n"
      "  --count N                images from the split (default: 8; 100 with --eval; 0 = all)\n"
      "sampling\n"
      "  --temperature T[,T2..]   softmax temperature(s) (default: 1.0; 1.0,0.9,0.8 with --eval)\n"
      "  --samples-per-input S    samples per input and temperature (default: 3; 1 with --eval)\n"
      "  --mode MODE              sample | mean | argmax (default: sample; mean and argmax are\n"
      "                           deterministic point estimates, so S is set to 1)\n"
      "  --seed S                 random seed (default: 0); same seed, --batch and device -> same images\n"
      "  --batch B                images sampled at once (default: 16)\n"
      "  --naive                  use the naive sampler (whole prior per sub-pixel; slow, same images)\n"
      "  --device cpu|cuda        where the model runs (default: cpu)\n"
      "output\n"
      "  --out PATH               the PNG grid (default: samples.png; eval.png with --eval)\n"
      "  --out-dir DIR            one 32x32 PNG per sample, <input>_s<k>.png (default: samples)\n"
      "  --tile N                 tile side in the grid, pixels (default: 64)\n"
      "evaluation\n"
      "  --eval                   needs --data: bits/dim, PSNR, SSIM, consistency for the model at\n"
      "                           each temperature, bicubic and the L2 baseline; a table on stdout,\n"
      "                           also written as <out>.csv and <out>.json (default eval.csv/.json)\n"
      "  --baseline-ckpt PATH     a ResNet-L2 checkpoint (trained with --loss l2) to add to --eval\n"
      "  --help                   this text\n");
}

long parse_int(const std::string& flag, const std::string& v, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE)
    throw Error(flag + ": expected an integer, got '" + v + "'");
  if (x < lo || x > hi)
    throw Error(flag + ": " + v + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

std::vector<float> parse_temperatures(const std::string& v) {
  std::vector<float> out;
  size_t pos = 0;
  while (true) {
    const size_t comma = v.find(',', pos);
    const std::string tok = v.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    char* end = nullptr;
    const double t = std::strtod(tok.c_str(), &end);
    if (tok.empty() || *end != '\0' || !std::isfinite(t))
      throw Error("--temperature: expected numbers separated by commas, got '" + v + "'");
    if (t <= 0) throw Error("--temperature: must be > 0, got " + tok);
    out.push_back(float(t));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

Args parse_args(int argc, char** argv) {
  Args a;
  std::set<std::string> seen;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "--help" || f == "-h") { a.help = true; continue; }
    if (f.rfind("--", 0) != 0) throw Error("unexpected argument '" + f + "' (see --help)");
    // Flags without a value.
    if (f == "--naive") { a.naive = true; continue; }
    if (f == "--eval") { a.eval = true; continue; }
    static const std::set<std::string> valued = {
        "--ckpt", "--input", "--data", "--data-dir", "--cache-dir", "--split", "--count",
        "--temperature", "--samples-per-input", "--mode", "--out", "--out-dir", "--device",
        "--seed", "--batch", "--tile", "--baseline-ckpt"};
    if (!valued.count(f)) throw Error("unknown flag '" + f + "' (see --help)");
    if (i + 1 >= argc) throw Error(f + ": missing value");
    const std::string v = argv[++i];
    if (!seen.insert(f).second) throw Error(f + " given twice");
    if (f == "--ckpt") a.ckpt = v;
    else if (f == "--input") a.input = v;
    else if (f == "--data") a.data = v;
    else if (f == "--data-dir") a.data_dir = v;
    else if (f == "--cache-dir") a.cache_dir = v;
    else if (f == "--split") { data::parse_split(v); a.split = v; }
    else if (f == "--count") { a.count = int(parse_int(f, v, 0, 100000000)); a.count_given = true; }
    else if (f == "--temperature") { a.temperatures = parse_temperatures(v); a.temperature_text = v; }
    else if (f == "--samples-per-input") a.samples = int(parse_int(f, v, 1, 10000));
    else if (f == "--mode") { parse_decode_mode(v); a.mode = v; }
    else if (f == "--out") a.out = v;
    else if (f == "--out-dir") a.out_dir = v;
    else if (f == "--device") {
      if (v != "cpu" && v != "cuda") throw Error("--device: expected cpu or cuda, got '" + v + "'");
      a.device = v;
    }
    else if (f == "--seed") {
      char* end = nullptr;
      errno = 0;
      const unsigned long long s = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || v[0] == '-' || *end != '\0' || errno == ERANGE)
        throw Error("--seed: expected a non-negative integer, got '" + v + "'");
      a.seed = s;
    }
    else if (f == "--batch") a.batch = int(parse_int(f, v, 1, 65536));
    else if (f == "--tile") a.tile = int(parse_int(f, v, 8, 1024));
    else if (f == "--baseline-ckpt") a.baseline_ckpt = v;
  }
  if (a.help) return a;
  if (a.ckpt.empty()) throw Error("--ckpt is required (see --help)");
  if (!a.input.empty() && !a.data.empty()) throw Error("give either --input or --data, not both");
  if (a.eval && a.data.empty()) throw Error("--eval needs --data NAME (a split with known ground truth)");
  if (a.input.empty() && a.data.empty()) throw Error("no input: give --input FILE|DIR or --data NAME");
  if (!a.baseline_ckpt.empty() && !a.eval) throw Error("--baseline-ckpt is only used with --eval");
  if (!a.input.empty() && (seen.count("--split") || seen.count("--count")))
    throw Error("--split and --count go with --data, not --input");
  if (a.count < 0) a.count = a.eval ? 100 : 8;
  if (a.temperatures.empty()) {
    a.temperatures = a.eval ? std::vector<float>{1.0f, 0.9f, 0.8f} : std::vector<float>{1.0f};
  }
  if (a.samples < 0) a.samples = a.eval ? 1 : 3;
  if (a.out.empty()) a.out = a.eval ? "eval.png" : "samples.png";
  return a;
}

// ----------------------------------------------------------------------------- inputs

// One low-res input x (low x low x C) and, when known, its ground truth y (size x size x C).
struct Input {
  std::string name;  // used for the per-sample file names
  std::vector<uint8_t> x, y;
  bool has_y() const { return !y.empty(); }
};

struct ColourNotes {
  int to_grey = 0, to_rgb = 0, upscaled = 0;
};

data::Image to_colors(const data::Image& im, int C, ColourNotes& notes) {
  if (im.c == C) return im;
  if (C == 1) { ++notes.to_grey; return data::to_gray(im); }
  ++notes.to_rgb;
  return data::to_rgb(im);
}

// DESIGN 2: y = area resize of the centre square to size x size; x = 4x4 box average of y.
Input input_from_image(const data::Image& decoded, const std::string& name, int C, int size,
                       ColourNotes& notes) {
  const int low = size / 4;
  data::Image im = to_colors(decoded, C, notes);
  Input in;
  in.name = name;
  if (im.w == low && im.h == low) {
    in.x = im.px;
    return in;
  }
  if (std::min(im.w, im.h) < size) ++notes.upscaled;
  const data::Image y = data::area_resize(data::center_square_crop(im), size, size);
  in.y = y.px;
  in.x.resize(size_t(low) * low * C);
  data::box_downsample4(in.y.data(), size, C, in.x.data());
  return in;
}

bool is_image_name(const fs::path& p) {
  std::string e = p.extension().string();
  for (char& ch : e) ch = char(std::tolower((unsigned char)ch));
  return e == ".png" || e == ".jpg" || e == ".jpeg";
}

std::vector<Input> inputs_from_path(const std::string& path, int C, int size, ColourNotes& notes) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(path + ": no such file or directory");
  if (!fs::is_directory(path, ec)) {
    return {input_from_image(data::read_image(path), fs::path(path).stem().string(), C, size, notes)};
  }
  std::vector<fs::path> files;
  try {
    for (const auto& e : fs::directory_iterator(path)) {
      std::error_code e2;
      if (e.is_regular_file(e2) && is_image_name(e.path())) files.push_back(e.path());
    }
  } catch (const fs::filesystem_error& e) {
    throw Error(path + ": cannot list the folder: " + e.code().message());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error(path + ": no .png / .jpg / .jpeg files in the folder");
  // Two files with the same stem (a.png, a.jpg) keep their extension in the sample names.
  std::map<std::string, int> stems;
  for (const auto& f : files) ++stems[f.stem().string()];
  std::vector<Input> out;
  std::vector<std::string> errors;
  for (const auto& f : files) {
    const std::string name = stems[f.stem().string()] > 1 ? f.filename().string() : f.stem().string();
    try {
      out.push_back(input_from_image(data::read_image(f.string()), name, C, size, notes));
    } catch (const Error& e) {
      errors.push_back(e.what());
    }
  }
  if (out.empty())  // one line: the count and the first reason
    throw Error(path + ": none of the " + std::to_string(files.size()) + " image files could be read (" +
                errors[0] + (errors.size() > 1 ? ", ..." : "") + ")");
  for (const std::string& e : errors) std::fprintf(stderr, "warning: skipping %s\n", e.c_str());
  if (!errors.empty())
    std::fprintf(stderr, "%s: skipped %zu unreadable file%s, kept %zu\n", path.c_str(), errors.size(),
                 errors.size() == 1 ? "" : "s", out.size());
  return out;
}

std::vector<Input> inputs_from_data(const Args& a, int C, int size, ColourNotes& notes, std::string& label) {
  data::DataOptions o;
  o.spec = a.data;
  o.data_dir = a.data_dir;
  o.cache_dir = a.cache_dir;
  const data::Split split = data::parse_split(a.split);
  const data::Dataset d = data::load_dataset(o, split);
  if (d.size != size)
    throw Error(a.data + ": images are " + std::to_string(d.size) + "x" + std::to_string(d.size) +
                " but the model makes " + std::to_string(size) + "x" + std::to_string(size));
  const int n = a.count == 0 ? d.n : std::min(a.count, d.n);
  if (a.count_given && a.count > d.n)
    std::fprintf(stderr, "note: the %s split of %s has %d images; using all of them\n", a.split.c_str(),
                 a.data.c_str(), d.n);
  label = d.name + " " + a.split + ", " + std::to_string(n) + " of " + std::to_string(d.n) + " images";
  std::vector<Input> out;
  out.reserve(n);
  const int low = size / 4;
  for (int i = 0; i < n; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "%s_%05d", a.split.c_str(), i);
    const data::Image im = to_colors(make_image(d.image(i), d.size, d.size, d.colors), C, notes);
    Input in;
    in.name = name;
    in.y = im.px;
    in.x.resize(size_t(low) * low * C);
    data::box_downsample4(in.y.data(), size, C, in.x.data());
    out.push_back(std::move(in));
  }
  return out;
}

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

// ----------------------------------------------------------------------------- evaluation

struct EvalRow {
  std::string method;   // "model", "bicubic", "resnet-l2"
  std::string temperature;  // "" when it does not apply
  double bits = NAN;    // NaN when it does not apply
  eval::MetricSums m;
  long outputs = 0;
};

void add_metrics(EvalRow& row, const Input& in, const uint8_t* y_hat, int size, int C) {
  const int low = size / 4;
  row.m.add(eval::psnr_capped(y_hat, in.y.data(), size, size, C), eval::ssim(y_hat, in.y.data(), size, size, C),
            eval::consistency(in.x.data(), low, low, y_hat, C));
  ++row.outputs;
}

// Held-out bits/dim: CE(A + B) / ln 2 per sub-pixel, evaluation-mode batch norm, averaged over
// every image (batches weighted by their size).
double heldout_bits(Model<float>& model, const CheckpointInfo& info, const std::vector<Input>& inputs, int batch) {
  Trainer<float> trainer(model, info.optim, batch);
  double sum = 0;
  std::vector<const uint8_t*> ptrs;
  for (size_t b0 = 0; b0 < inputs.size(); b0 += batch) {
    const int n = int(std::min<size_t>(batch, inputs.size() - b0));
    ptrs.clear();
    for (int j = 0; j < n; ++j) ptrs.push_back(inputs[b0 + j].y.data());
    sum += trainer.evaluate(ptrs.data(), n).nll_bits * n;
  }
  return sum / double(inputs.size());
}

std::string csv_num(double v) {
  if (!std::isfinite(v)) return "";
  char s[64];
  std::snprintf(s, sizeof s, "%.9g", v);
  return s;
}

std::string json_num(double v) {
  if (!std::isfinite(v)) return "null";
  return csv_num(v);
}

std::string json_str(const std::string& s) {
  std::string r = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') r += '\\';
    if ((unsigned char)ch < 0x20) {
      char e[8];
      std::snprintf(e, sizeof e, "\\u%04x", ch);
      r += e;
      continue;
    }
    r += ch;
  }
  return r + "\"";
}

// Writes text atomically (temp file + rename), like the PNGs and checkpoints.
void write_text(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error("cannot write " + path + ": " + std::strerror(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) {
    std::remove(tmp.c_str());
    throw Error("cannot write " + path + ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error("cannot write " + path + ": " + std::strerror(errno));
  }
}

void report_eval(const std::vector<EvalRow>& rows, const std::string& label, int S, uint64_t seed,
                 const std::string& ckpt, const std::string& out) {
  std::printf("\n%-10s %6s %9s %8s %7s %12s %8s\n", "method", "T", "bits/dim", "PSNR", "SSIM", "consistency", "outputs");
  for (const EvalRow& r : rows) {
    char bits[32] = "-";
    if (std::isfinite(r.bits)) std::snprintf(bits, sizeof bits, "%.4f", r.bits);
    std::printf("%-10s %6s %9s %8.3f %7.4f %12.4e %8ld\n", r.method.c_str(),
                r.temperature.empty() ? "-" : r.temperature.c_str(), bits, r.m.mean_psnr(), r.m.mean_ssim(),
                r.m.mean_consistency(), r.outputs);
  }
  const fs::path base(out);
  const std::string csv_path = fs::path(base).replace_extension(".csv").string();
  const std::string json_path = fs::path(base).replace_extension(".json").string();
  std::string csv = "method,temperature,bits_per_dim,psnr,ssim,consistency,outputs\n";
  for (const EvalRow& r : rows)
    csv += r.method + "," + r.temperature + "," + csv_num(r.bits) + "," + csv_num(r.m.mean_psnr()) + "," +
           csv_num(r.m.mean_ssim()) + "," + csv_num(r.m.mean_consistency()) + "," + std::to_string(r.outputs) + "\n";
  std::string js = "{\n  \"checkpoint\": " + json_str(ckpt) + ",\n  \"data\": " + json_str(label) +
                   ",\n  \"samples_per_input\": " + std::to_string(S) + ",\n  \"seed\": " + std::to_string(seed) +
                   ",\n  \"rows\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const EvalRow& r = rows[i];
    js += "    {\"method\": " + json_str(r.method) + ", \"temperature\": " +
          (r.temperature.empty() ? std::string("null") : r.temperature) + ", \"bits_per_dim\": " + json_num(r.bits) +
          ", \"psnr\": " + json_num(r.m.mean_psnr()) + ", \"ssim\": " + json_num(r.m.mean_ssim()) +
          ", \"consistency\": " + json_num(r.m.mean_consistency()) + ", \"outputs\": " + std::to_string(r.outputs) +
          "}" + (i + 1 < rows.size() ? "," : "") + "\n";
  }
  js += "  ]\n}\n";
  write_text(csv_path, csv);
  write_text(json_path, js);
  std::printf("wrote %s and %s\n", csv_path.c_str(), json_path.c_str());
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
