// ./build/train: trains the super-resolution model of DESIGN 1 on one data set (DESIGN 3).
//
//   setup:  flags -> checks that need no data (device, run folder writable, nothing overwritten)
//           -> data (train + valid split) -> model (fresh, or from --resume) -> trainer
//   loop:   one Trainer::step per batch; a progress line; every --eval-every steps held-out
//           bits/dim, every --sample-every steps a PNG grid, every --ckpt-every steps a
//           checkpoint; a row of figures in OUT/log.csv every --print-every steps.
//   end:    a checkpoint at the last step, on Ctrl-C (SIGINT / SIGTERM), never after a NaN.
//
// The data order is a pure function of (seed, number of training images, batch, step): image
// k of step s is the ((s * batch + k) mod n)-th entry of the permutation of epoch
// (s * batch + k) / n, drawn by our own Fisher-Yates from mt19937_64(seed, epoch). Nothing else
// in the loop draws random numbers, so a checkpoint's step (plus the seed, batch and data set
// it records in its meta) is the whole training state and a resumed run is bit-identical to an
// uninterrupted one on the same backend and thread count. See docs/train.md.
#include <omp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdarg>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/preprocess.h"
#include "engine/backend.h"
#include "engine/error.h"
#include "model/checkpoint.h"
#include "model/trainer.h"
#include "sample/grid.h"
#include "sample/sampler.h"
#include "train/options.h"

namespace fs = std::filesystem;
using prsr::Error;
using namespace prsr::train_cli;

namespace {

struct SamplingInterrupted {};

// ----------------------------------------------------------------------------- small helpers

bool g_tty = false;                 // stdout is a terminal: progress line redrawn with \r
volatile sig_atomic_t g_signal = 0;  // the first SIGINT / SIGTERM received

extern "C" void on_signal(int sig) {
  if (g_signal) _exit(128 + sig);  // a second Ctrl-C: stop now (checkpoints are atomic)
  g_signal = sig;
}

void install_signal_handlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// A line of output that first clears the live progress line on a terminal.
void say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void say(const char* fmt, ...) {
  if (g_tty) std::fputs("\r\033[K", stdout);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stdout, fmt, ap);
  va_end(ap);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

std::string with_commas(uint64_t v) {
  std::string s = std::to_string(v), r;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) r += ',';
    r += s[i];
  }
  return r;
}

std::string hms(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long t = long(seconds + 0.5);
  char b[64];
  if (t >= 86400) std::snprintf(b, sizeof b, "%ldd%02ld:%02ld:%02ld", t / 86400, t / 3600 % 24, t / 60 % 60, t % 60);
  else if (t >= 3600) std::snprintf(b, sizeof b, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else std::snprintf(b, sizeof b, "%ld:%02ld", t / 60, t % 60);
  return b;
}

// "runs/<name>": fashion-mnist, celeba, folder-<last path component>.
std::string data_run_name(const std::string& spec) {
  if (spec.rfind("folder:", 0) != 0) return spec;
  std::string p = spec.substr(7);
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  std::string base = fs::path(p).filename().string();
  for (char& ch : base)
    if (!std::isalnum((unsigned char)ch) && ch != '-' && ch != '_' && ch != '.') ch = '_';
  return "folder-" + (base.empty() ? std::string("root") : base);
}

// Proves that `dir` can be created and written without leaving anything behind: its nearest
// existing ancestor must be a folder in which a probe file can be created (and is removed).
void check_writable_dir(const std::string& dir, const char* what) {
  std::error_code ec;
  fs::path p = fs::absolute(dir, ec);
  while (!p.empty() && !fs::exists(p, ec) && p.has_parent_path() && p.parent_path() != p) p = p.parent_path();
  if (!fs::is_directory(p, ec))
    throw Error(std::string("cannot create ") + what + " " + dir + ": " + p.string() + " is not a folder");
  const std::string probe = (p / (".prsr-write-test-" + std::to_string(getpid()))).string();
  FILE* f = std::fopen(probe.c_str(), "wb");
  if (!f) throw Error(std::string("cannot create ") + what + " " + dir + ": " + p.string() + " is not writable (" +
                      std::strerror(errno) + ")");
  std::fclose(f);
  std::remove(probe.c_str());
}

// Creates `dir` (and parents) and proves it writable.
void ensure_writable_dir(const std::string& dir, const char* what) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(std::string("cannot create ") + what + " " + dir + ": " + ec.message());
  check_writable_dir(dir, what);
}

std::string parent_dir(const std::string& path) {
  const std::string p = fs::path(path).parent_path().string();
  return p.empty() ? "." : p;
}

// ----------------------------------------------------------------------------- data order

// The permutation of epoch `e`: Fisher-Yates with our own bounded draw (rejection sampling),
// so it does not depend on the standard library's distributions.
class DataOrder {
 public:
  DataOrder(uint64_t seed, int n) : seed_(seed), n_(n) {}
  // Index (into the training set) of the g-th image drawn since step 0.
  int at(uint64_t g) {
    const uint64_t epoch = g / uint64_t(n_);
    if (epoch != epoch_ || perm_.empty()) build(epoch);
    return perm_[size_t(g % uint64_t(n_))];
  }

 private:
  void build(uint64_t epoch) {
    std::seed_seq sq{uint32_t(seed_), uint32_t(seed_ >> 32), uint32_t(epoch), uint32_t(epoch >> 32), 0x5eedu};
    std::mt19937_64 rng(sq);
    perm_.resize(size_t(n_));
    for (int i = 0; i < n_; ++i) perm_[size_t(i)] = i;
    for (int i = n_ - 1; i > 0; --i) {
      const uint64_t range = uint64_t(i) + 1, limit = UINT64_MAX - UINT64_MAX % range;
      uint64_t r;
      do r = rng(); while (r >= limit);
      std::swap(perm_[size_t(i)], perm_[size_t(r % range)]);
    }
    epoch_ = epoch;
  }
  uint64_t seed_;
  int n_;
  uint64_t epoch_ = 0;
  std::vector<int> perm_;
};

// ----------------------------------------------------------------------------- log.csv

const char* kLogHeader = "step,loss,nll_bits,ce_a_bits,valid_loss,valid_bits,images_per_s,ms_per_step,lr,time";

// On a fresh run: a new file with the header. On --resume: rows after the checkpoint's step
// (written by the run that was interrupted after its last checkpoint) are dropped, so the log
// has every step once.
void prepare_log(const std::string& path, bool resume, long resume_step) {
  std::vector<std::string> keep{kLogHeader};
  if (resume) {
    std::ifstream in(path);
    std::string line;
    bool first = true;
    while (std::getline(in, line)) {
      if (first) { first = false; if (line == kLogHeader) continue; }
      if (line.empty()) continue;
      char* end = nullptr;
      const long s = std::strtol(line.c_str(), &end, 10);
      if (end != line.c_str() && *end == ',' && s <= resume_step) keep.push_back(line);
    }
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const std::string& l : keep) out << l << '\n';
    out.flush();
    if (!out) throw Error("cannot write " + tmp + ": " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw Error("cannot write " + path + ": " + std::strerror(errno));
}

// ----------------------------------------------------------------------------- the run

struct Run {
  Options o;
  std::string data_name, out, ckpt, log_path;
  prsr::Device dev = prsr::Device::Cpu;
  prsr::data::Dataset train, valid;
  long start_step = 0;
  double elapsed_before = 0;  // seconds trained before this session (from the checkpoint)
  long last_saved_step = -1;
};

// Flags that fix the model or optimiser must agree with the checkpoint on --resume.
void check_resume_flags(const Options& o, const prsr::CheckpointInfo& info, const std::string& path) {
  using M = prsr::ModelConfig;
  using Q = prsr::OptimConfig;
  struct Field { const char* flag; std::function<std::string(const M&, const Q&)> get; };
  const Field fields[] = {
      {"--channels", [](const M& m, const Q&) { return std::to_string(m.prior_channels); }},
      {"--layers", [](const M& m, const Q&) { return std::to_string(m.prior_layers); }},
      {"--kernel", [](const M& m, const Q&) { return std::to_string(m.kernel); }},
      {"--first-kernel", [](const M& m, const Q&) { return std::to_string(m.first_kernel); }},
      {"--head", [](const M& m, const Q&) { return std::to_string(m.head); }},
      {"--cond-channels", [](const M& m, const Q&) { return std::to_string(m.cond_channels); }},
      {"--cond-blocks", [](const M& m, const Q&) { return std::to_string(m.cond_blocks); }},
      {"--no-batch-norm", [](const M& m, const Q&) { return std::string(m.batch_norm ? "batch norm" : "no batch norm"); }},
      {"--loss", [](const M& m, const Q&) { return m.loss; }},
      {"--optimizer", [](const M&, const Q& q) { return q.kind; }},
      {"--lr", [](const M&, const Q& q) { return fmt_g(q.lr); }},
      {"--decay", [](const M&, const Q& q) { return fmt_g(q.decay); }},
      {"--momentum", [](const M&, const Q& q) { return fmt_g(q.momentum); }},
      {"--eps", [](const M&, const Q& q) { return fmt_g(q.eps); }},
      {"--beta1", [](const M&, const Q& q) { return fmt_g(q.beta1); }},
      {"--beta2", [](const M&, const Q& q) { return fmt_g(q.beta2); }},
      {"--lr-halve-every", [](const M&, const Q& q) { return std::to_string(q.halve_every); }},
  };
  for (const Field& f : fields) {
    if (!o.given.count(f.flag)) continue;
    const std::string mine = f.get(o.model, o.optim), theirs = f.get(info.model, info.optim);
    if (mine != theirs) {
      if (std::string(f.flag) == "--no-batch-norm")
        throw UsageError("--no-batch-norm contradicts " + path + " (trained with batch norm); "
                         "--resume takes the model from the checkpoint: drop the flag");
      throw UsageError(std::string(f.flag) + " " + mine + " contradicts " + path + " (" + f.flag + " " + theirs +
                       "); --resume takes the model and optimiser from the checkpoint: drop the flag "
                       "or start a new run");
    }
  }
}

std::string meta_get(const prsr::CheckpointInfo& info, const std::string& key, const std::string& path) {
  auto it = info.meta.find(key);
  if (it == info.meta.end())
    throw Error(path + ": the checkpoint has no '" + key + "' entry (not written by ./build/train?); cannot resume");
  return it->second;
}

int train_main(int argc, char** argv) {
  Run R;
  Options& o = R.o;
  o = parse_args(argc, argv);
  if (o.help) return kExitOk;

  // ---- device
  if (o.device == "cuda") {
    if (!prsr::cuda::available())
      throw UsageError(std::string("--device cuda: CUDA is not available (") + prsr::cuda::unavailable_reason() + ")");
    R.dev = prsr::Device::Cuda;
  }
  if (o.threads > 0) omp_set_num_threads(o.threads);

  // ---- resume: the model, optimiser, data set, seed and batch come from the checkpoint
  prsr::CheckpointInfo resume_info;
  if (o.resume) {
    if (o.ckpt.empty()) {  // OUT/model.bin, OUT from --out or --data (default runs/fashion-mnist)
      R.out = o.out.empty() ? "runs/" + data_run_name(o.data) : o.out;
      o.ckpt = R.out + "/model.bin";
    }
    std::error_code ec;
    if (!fs::exists(o.ckpt, ec)) throw Error("--resume: no checkpoint at " + o.ckpt);
    resume_info = prsr::read_checkpoint_info(o.ckpt);  // verifies length and checksum
    if (!resume_info.has_optimizer_state)
      throw Error(o.ckpt + " has no optimiser state; cannot resume training from it");
    check_resume_flags(o, resume_info, o.ckpt);
    const std::string data = meta_get(resume_info, "data", o.ckpt);
    if (o.given.count("--data") && o.data != data)
      throw UsageError("--data " + o.data + " contradicts " + o.ckpt + ", which was trained on " + data +
                       "; resume with --data " + data + " or start a new run");
    o.data = data;
    if (!o.given.count("--data-dir")) {
      auto it = resume_info.meta.find("data_dir");
      if (it != resume_info.meta.end()) o.data_dir = it->second;
    }
    const uint64_t seed = parse_u64("checkpoint seed", meta_get(resume_info, "seed", o.ckpt));
    if (o.given.count("--seed") && o.seed != seed)
      throw UsageError("--seed " + std::to_string(o.seed) + " contradicts " + o.ckpt + " (seed " +
                       std::to_string(seed) + "); the data order depends on it: drop the flag");
    o.seed = seed;
    const int batch = int(parse_long("checkpoint batch", meta_get(resume_info, "batch", o.ckpt), 1, 65536));
    if (o.given.count("--batch") && o.batch != batch)
      throw UsageError("--batch " + std::to_string(o.batch) + " contradicts " + o.ckpt + " (batch " +
                       std::to_string(batch) + "); the data order depends on it: drop the flag");
    o.batch = batch;
    o.model = resume_info.model;
    o.optim = resume_info.optim;
    R.start_step = resume_info.step;
    auto it = resume_info.meta.find("elapsed_s");
    if (it != resume_info.meta.end()) R.elapsed_before = std::atof(it->second.c_str());
  }

  // ---- run folder, checkpoint path: checked before any data is read
  try {
    o.model.colors = prsr::data::dataset_colors(o.data);
  } catch (const Error& e) {
    throw UsageError(std::string("--data: ") + e.what());
  }
  if (o.resume && o.model.colors != resume_info.model.colors)
    throw Error(o.ckpt + ": the checkpoint's model has " + std::to_string(resume_info.model.colors) +
                " colours, the data set " + o.data + " " + std::to_string(o.model.colors));
  try {
    o.model.validate();
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  R.data_name = data_run_name(o.data);
  // A resumed run keeps writing beside its checkpoint unless --out says otherwise.
  if (o.out.empty() && o.resume) {
    const std::string dir = fs::path(o.ckpt).parent_path().string();
    R.out = dir.empty() ? "." : dir;
  } else {
    R.out = o.out.empty() ? "runs/" + R.data_name : o.out;
  }
  R.ckpt = o.ckpt.empty() ? R.out + "/model.bin" : o.ckpt;
  R.log_path = R.out + "/log.csv";
  {
    std::error_code ec;
    if (!o.resume && !o.overwrite) {
      if (fs::exists(R.ckpt, ec))
        throw Error("checkpoint " + R.ckpt + " already exists; continue it with --resume, or replace it with "
                    "--overwrite, or choose another --ckpt / --out");
      if (fs::exists(R.log_path, ec))
        throw Error(R.log_path + " already exists (an earlier run); continue it with --resume, or replace it "
                    "with --overwrite, or choose another --out");
    }
  }
  // Checked (without creating anything) before the data is read, created after.
  check_writable_dir(R.out, "output folder");
  check_writable_dir(parent_dir(R.ckpt), "checkpoint folder");

  // ---- data
  prsr::data::DataOptions dopt;
  dopt.spec = o.data;
  dopt.data_dir = o.data_dir;
  dopt.cache_dir = o.cache_dir;
  dopt.progress = isatty(fileno(stderr));
  R.train = prsr::data::load_dataset(dopt, prsr::data::Split::Train);
  R.valid = prsr::data::load_dataset(dopt, prsr::data::Split::Valid);
  if (o.resume) {
    const long n = parse_long("checkpoint train_images", meta_get(resume_info, "train_images", o.ckpt), 1, 1L << 40);
    if (n != R.train.n)
      throw Error(o.ckpt + " was trained on " + std::to_string(n) + " " + o.data + " training images, now there are " +
                  std::to_string(R.train.n) + ": the data set changed, so the data order cannot be resumed");
  }

  ensure_writable_dir(R.out, "output folder");
  ensure_writable_dir(parent_dir(R.ckpt), "checkpoint folder");

  // ---- model, optimiser
  prsr::Model<float> model(o.model, R.dev);
  prsr::Trainer<float> trainer(model, o.optim, o.batch);
  if (o.resume) prsr::load_checkpoint(R.ckpt, model, &trainer.optimizer());
  else model.init(o.seed);
  const bool pixel = o.model.has_prior();

  const double fwd = model.forward_flops_per_image();
  const double train_flops = 3.0 * fwd;  // forward + backward (about 2x forward)
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  g_tty = isatty(fileno(stdout));

  std::printf("prsr train\n");
  std::printf("  data       %s (C=%d): %s train / %s valid images%s\n", o.data.c_str(), R.train.colors,
              with_commas(R.train.n).c_str(), with_commas(R.valid.n).c_str(),
              R.train.skipped + R.valid.skipped ? (" (" + std::to_string(R.train.skipped + R.valid.skipped) +
                                                   " unreadable files skipped)").c_str() : "");
  std::printf("  device     %s, %d OpenMP thread%s\n", o.device.c_str(), threads, threads == 1 ? "" : "s");
  std::printf("  model      %s\n", o.model.to_string().c_str());
  std::printf("  parameters %s\n", with_commas(model.parameter_count()).c_str());
  std::printf("  compute    %.3f GFLOP forward / image, %.3f GFLOP training / image (3x), %.1f GFLOP / step\n",
              fwd / 1e9, train_flops / 1e9, train_flops * o.batch / 1e9);
  if (o.optim.kind == "rmsprop")
    std::printf("  optimiser  rmsprop lr %g decay %g momentum %g eps %g, lr halved every %ld steps\n", o.optim.lr,
                o.optim.decay, o.optim.momentum, o.optim.eps, o.optim.halve_every);
  else
    std::printf("  optimiser  adam lr %g beta1 %g beta2 %g eps %g, lr halved every %ld steps\n", o.optim.lr,
                o.optim.beta1, o.optim.beta2, o.optim.eps, o.optim.halve_every);
  std::printf("  steps      %ld -> %ld, batch %d, seed %" PRIu64 "%s\n", R.start_step, o.steps, o.batch, o.seed,
              o.resume ? " (resumed)" : "");
  std::printf("  run folder %s  (checkpoint %s, log %s)\n", R.out.c_str(), R.ckpt.c_str(), R.log_path.c_str());
  std::fflush(stdout);

  if (R.start_step >= o.steps) {
    std::printf("the checkpoint is at step %ld, --steps is %ld: nothing to do\n", R.start_step, o.steps);
    return kExitOk;
  }

  prepare_log(R.log_path, o.resume, R.start_step);
  std::FILE* log = std::fopen(R.log_path.c_str(), "a");
  if (!log) throw Error("cannot append to " + R.log_path + ": " + std::strerror(errno));

  // ---- fixed validation subset and sample inputs
  const int n_valid = std::min(o.valid_count, R.valid.n);
  const int rows = std::min(o.sample_rows, R.valid.n);
  const int C = o.model.colors, S = o.model.size, Lo = o.model.low();
  const size_t hr_bytes = size_t(S) * S * C, lr_bytes = size_t(Lo) * Lo * C;
  std::vector<uint8_t> sample_x(size_t(rows) * 2 * lr_bytes);  // each input twice
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < 2; ++k)
      prsr::data::box_downsample4(R.valid.image(r), S, C, sample_x.data() + (size_t(r) * 2 + k) * lr_bytes);

  DataOrder order(o.seed, R.train.n);
  std::vector<const uint8_t*> batch_ptrs(size_t(o.batch));
  std::vector<const uint8_t*> eval_ptrs(size_t(o.batch));

  auto save = [&](long step, double elapsed) {
    // Never write non-finite parameters over a good checkpoint.
    const std::vector<float> p = model.params.download();
    for (float v : p)
      if (!std::isfinite(v))
        throw Error("parameters are not finite after step " + std::to_string(step) + "; not saving (the last good "
                    "checkpoint " + R.ckpt + " is kept)");
    prsr::CheckpointInfo info;
    info.model = o.model;
    info.optim = o.optim;
    info.step = step;
    const uint64_t g = uint64_t(step) * uint64_t(o.batch);
    info.meta = {{"data", o.data},
                 {"data_dir", o.data_dir},
                 {"seed", std::to_string(o.seed)},
                 {"batch", std::to_string(o.batch)},
                 {"train_images", std::to_string(R.train.n)},
                 {"epoch", std::to_string(g / uint64_t(R.train.n))},
                 {"position", std::to_string(g % uint64_t(R.train.n))},
                 {"elapsed_s", fmt_g(elapsed)}};
    prsr::save_checkpoint(R.ckpt, model, &trainer.optimizer(), info);
    R.last_saved_step = step;
  };

  auto evaluate = [&]() {
    double loss = 0, bits = 0;
    for (int i = 0; i < n_valid; i += o.batch) {
      const int n = std::min(o.batch, n_valid - i);
      for (int k = 0; k < n; ++k) eval_ptrs[size_t(k)] = R.valid.image(i + k);
      const prsr::StepResult r = trainer.evaluate(eval_ptrs.data(), n);
      loss += r.loss * n;
      bits += r.nll_bits * n;
    }
    return std::make_pair(loss / n_valid, bits / n_valid);
  };

  bool sampler_warned = false;
  auto write_samples = [&](long step) {
    try {
      prsr::Grid grid;
      std::vector<std::vector<uint8_t>> outs;
      const float temps[2] = {1.0f, 0.8f};
      const int n_temps = pixel ? 2 : 1;
      for (int t = 0; t < n_temps; ++t) {
        prsr::SampleOptions so;
        so.temperature = temps[t];
        so.seed = o.seed;
        // Ctrl-C while sampling: abandon the grid (the training state is not touched by it).
        so.progress = [](int, int) {
          if (g_signal) throw SamplingInterrupted();
        };
        outs.push_back(prsr::sample_images(model, sample_x.data(), rows * 2, so));
      }
      for (int r = 0; r < rows; ++r) {
        std::vector<prsr::data::Image> row;
        row.push_back(prsr::make_image(sample_x.data() + size_t(r) * 2 * lr_bytes, Lo, Lo, C));
        for (int t = 0; t < n_temps; ++t)
          for (int k = 0; k < (pixel ? 2 : 1); ++k)
            row.push_back(prsr::make_image(outs[size_t(t)].data() + (size_t(r) * 2 + k) * hr_bytes, S, S, C));
        row.push_back(prsr::make_image(R.valid.image(r), S, S, C));
        grid.add_row(std::move(row));
      }
      char name[64];
      std::snprintf(name, sizeof name, "/samples_step%07ld.png", step);
      grid.write(R.out + name);
      grid.write(R.out + "/samples_latest.png");
      say("samples    step %ld: %s%s", step, (R.out + name).c_str(),
          pixel ? "  (input | tau 1.0 x2 | tau 0.8 x2 | truth)" : "  (input | L2 prediction | truth)");
    } catch (const SamplingInterrupted&) {
      say("samples    step %ld: abandoned (interrupted)", step);
    } catch (const Error& e) {
      // A grid is a by-product: a failure is reported, never fatal to training.
      if (!sampler_warned) say("warning: no sample grid at step %ld: %s", step, e.what());
      sampler_warned = true;
    }
  };

  install_signal_handlers();
  using clock = std::chrono::steady_clock;
  const auto t_session = clock::now();
  auto elapsed = [&]() { return R.elapsed_before + std::chrono::duration<double>(clock::now() - t_session).count(); };

  double sum_loss = 0, sum_nll = 0, sum_cea = 0, sum_step_s = 0;
  long n_acc = 0;
  double ema_step_s = 0;
  long step = R.start_step;
  long session_steps = 0;
  double valid_loss = NAN, valid_bits = NAN;
  auto last_draw = clock::now() - std::chrono::seconds(1);

  while (step < o.steps && !g_signal) {
    if (step == o.debug_nan_at_step) {  // hidden test hook: poison the output bias of A, so
      std::vector<float> p = model.params.download();  // the logits (and the loss) are NaN
      p[size_t(model.cond_out.b->data - model.params.data())] = NAN;
      model.params.upload(p);
    }
    for (int k = 0; k < o.batch; ++k)
      batch_ptrs[size_t(k)] = R.train.image(order.at(uint64_t(step) * uint64_t(o.batch) + uint64_t(k)));
    const auto t0 = clock::now();
    prsr::StepResult r;
    try {
      r = trainer.step(batch_ptrs.data(), step);
    } catch (const Error& e) {
      std::fclose(log);
      if (g_tty) std::fputs("\n", stdout);
      std::fflush(stdout);
      std::string kept = R.last_saved_step >= 0 ? R.ckpt + " (step " + std::to_string(R.last_saved_step) + ")"
                         : o.resume ? R.ckpt + " (step " + std::to_string(R.start_step) + ", untouched)"
                                    : "none (no checkpoint was written yet)";
      std::fprintf(stderr, "error: %s; last good checkpoint: %s\n", e.what(), kept.c_str());
      return kExitError;
    }
    const double dt = std::chrono::duration<double>(clock::now() - t0).count();
    ++step;
    ++session_steps;
    sum_loss += r.loss;
    sum_nll += r.nll_bits;
    sum_cea += r.ce_a_bits;
    sum_step_s += dt;
    ++n_acc;
    ema_step_s = session_steps == 1 ? dt : 0.9 * ema_step_s + 0.1 * dt;

    const bool do_eval = o.eval_every > 0 && (step % o.eval_every == 0 || step == o.steps);
    if (do_eval) {
      std::tie(valid_loss, valid_bits) = evaluate();
      if (pixel) say("eval       step %ld: valid %.4f bits/dim on %d images (loss %.4f)", step, valid_bits, n_valid, valid_loss);
      else say("eval       step %ld: valid MSE %.5f on %d images", step, valid_loss, n_valid);
    }

    // Progress: live line on a terminal, a plain line every --print-every steps otherwise.
    const double wall = std::chrono::duration<double>(clock::now() - t_session).count();
    const double eta = wall / session_steps * double(o.steps - step);
    const double img_s = o.batch / ema_step_s;
    const double gflops = train_flops * o.batch / ema_step_s / 1e9;
    char line[320];
    if (pixel)
      std::snprintf(line, sizeof line,
                    "step %ld/%ld  loss %.4f  bits/dim %.4f  %.1f img/s  %.1f ms/step  %.1f GFLOP/s  ETA %s", step,
                    o.steps, r.loss, r.nll_bits, img_s, ema_step_s * 1e3, gflops, hms(eta).c_str());
    else
      std::snprintf(line, sizeof line, "step %ld/%ld  mse %.5f  %.1f img/s  %.1f ms/step  %.1f GFLOP/s  ETA %s", step,
                    o.steps, r.loss, img_s, ema_step_s * 1e3, gflops, hms(eta).c_str());
    const bool row_due = step % o.print_every == 0 || step == o.steps || do_eval || g_signal;
    if (g_tty) {
      if (clock::now() - last_draw > std::chrono::milliseconds(100) || step == o.steps) {
        std::printf("\r\033[K%s", line);
        std::fflush(stdout);
        last_draw = clock::now();
      }
    } else if (step % o.print_every == 0 || step == o.steps) {
      std::printf("%s\n", line);
      std::fflush(stdout);
    }

    if (row_due) {
      const double m_loss = sum_loss / n_acc, m_ms = sum_step_s / n_acc * 1e3;
      auto opt_num = [](bool on, double v, const char* f) {
        if (!on) return std::string();
        char b[64];
        std::snprintf(b, sizeof b, f, v);
        return std::string(b);
      };
      std::fprintf(log, "%ld,%.6f,%s,%s,%s,%s,%.2f,%.2f,%g,%.1f\n", step, m_loss,
                   opt_num(pixel, sum_nll / n_acc, "%.6f").c_str(), opt_num(pixel, sum_cea / n_acc, "%.6f").c_str(),
                   opt_num(do_eval, valid_loss, "%.6f").c_str(), opt_num(do_eval && pixel, valid_bits, "%.6f").c_str(),
                   o.batch / (m_ms / 1e3), m_ms, double(trainer.optimizer().lr_at(step - 1)), elapsed());
      std::fflush(log);
      sum_loss = sum_nll = sum_cea = sum_step_s = 0;
      n_acc = 0;
    }

    if (o.sample_every > 0 && (step % o.sample_every == 0 || step == o.steps)) write_samples(step);
    if (o.ckpt_every > 0 && step % o.ckpt_every == 0 && step != o.steps && !g_signal) {
      save(step, elapsed());
      say("checkpoint step %ld: %s", step, R.ckpt.c_str());
    }
  }
  std::fclose(log);

  if (R.last_saved_step != step) save(step, elapsed());
  if (g_tty) std::fputs("\n", stdout);
  if (g_signal) {
    say("%s at step %ld: checkpoint saved to %s; continue with --resume --ckpt %s",
        g_signal == SIGINT ? "interrupted (SIGINT)" : "stopped (SIGTERM)", step, R.ckpt.c_str(), R.ckpt.c_str());
    return 128 + g_signal;
  }
  say("done       %ld steps in %s: checkpoint %s", step, hms(elapsed()).c_str(), R.ckpt.c_str());
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  // Line-buffered stdout even into a pipe or file, so that it interleaves with the progress
  // bar on stderr in the order things happened.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    return train_main(argc, argv);
  } catch (const UsageError& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitUsage;
  } catch (const Error& e) {
    std::fflush(stdout);
    if (g_tty) std::fputs("\n", stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitError;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return kExitError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitError;
  }
}
