#include "train/options.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <type_traits>

namespace prsr::train_cli {

long parse_long(const std::string& flag, const std::string& v, long lo, long hi) {
  errno = 0;
  char* end = nullptr;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE) throw UsageError(flag + ": '" + v + "' is not an integer");
  if (x < lo || x > hi)
    throw UsageError(flag + ": " + v + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

uint64_t parse_u64(const std::string& flag, const std::string& v) {
  errno = 0;
  char* end = nullptr;
  if (v.empty() || v[0] == '-') throw UsageError(flag + ": '" + v + "' is not a non-negative integer");
  const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
  if (*end != '\0' || errno == ERANGE) throw UsageError(flag + ": '" + v + "' is not a non-negative integer");
  return x;
}

float parse_float(const std::string& flag, const std::string& v, double lo, double hi) {
  errno = 0;
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(x))
    throw UsageError(flag + ": '" + v + "' is not a number");
  if (x < lo || x > hi) {
    char b[160];
    std::snprintf(b, sizeof b, "%s: %s is out of range [%g, %g]", flag.c_str(), v.c_str(), lo, hi);
    throw UsageError(b);
  }
  return float(x);
}

std::string fmt_g(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

std::vector<Flag> make_flags(Options& o) {
  const long kMax = 1000000000000L;
  std::vector<Flag> f;
  auto I = [&](const char* name, const char* val, const char* help, auto* dst, long lo, long hi, const char* group) {
    f.push_back({name, val, help, std::to_string(*dst),
                 [dst, name, lo, hi](const std::string& v) {
                   *dst = static_cast<std::remove_pointer_t<decltype(dst)>>(parse_long(name, v, lo, hi));
                 },
                 false, group});
  };
  auto F = [&](const char* name, const char* help, float* dst, double lo, double hi, const char* group) {
    f.push_back({name, "X", help, fmt_g(*dst),
                 [dst, name, lo, hi](const std::string& v) { *dst = parse_float(name, v, lo, hi); }, false, group});
  };
  auto S = [&](const char* name, const char* val, const char* help, std::string* dst, const char* def,
               const char* group) {
    f.push_back({name, val, help, def,
                 [dst, name](const std::string& v) {
                   if (v.empty()) throw UsageError(std::string(name) + ": empty value");
                   *dst = v;
                 },
                 false, group});
  };
  auto B = [&](const char* name, const char* help, std::function<void()> on, const char* group) {
    f.push_back({name, "", help, "", [on](const std::string&) { on(); }, false, group});
  };
  const char* G = "run";
  S("--data", "NAME", "data set: fashion-mnist | celeba | lsun | folder:PATH", &o.data, "fashion-mnist", G);
  S("--data-dir", "PATH", "where the data set lives", &o.data_dir,
    "/usr/share/datasets/fashion-mnist, datasets/celeba, datasets/lsun", G);
  S("--lsun-category", "NAME", "lsun: the scene category (NAME_train_lmdb, NAME_val_lmdb)", &o.lsun_category, "bedroom",
    G);
  I("--limit", "N", "lsun: train on the first N train records only (0 = all)", &o.limit, 0, kMax, G);
  S("--cache-dir", "PATH", "preprocessed data cache", &o.cache_dir, "datasets/cache", G);
  f.push_back({"--device", "cpu|cuda", "backend to train on", "cpu",
               [&o](const std::string& v) {
                 if (v != "cpu" && v != "cuda") throw UsageError("--device: '" + v + "' is not cpu or cuda");
                 o.device = v;
               },
               false, G});
  f.push_back({"--precision", "fp32|bf16",
               "convolution inputs in bf16 with fp32 accumulation (CPUs with AVX512_BF16 or AMX-BF16)", "fp32",
               [&o](const std::string& v) {
                 if (v != "fp32" && v != "bf16") throw UsageError("--precision: '" + v + "' is not fp32 or bf16");
                 o.precision = v;
               },
               false, G});
  I("--steps", "N", "train until this many steps are done (in total, also with --resume)", &o.steps, 0, kMax, G);
  I("--batch", "N", "images per step", &o.batch, 1, 65536, G);
  S("--out", "DIR", "run folder: log.csv, sample grids, checkpoint", &o.out, "runs/<data>", G);
  S("--ckpt", "PATH", "checkpoint file", &o.ckpt, "OUT/model.bin", G);
  B(
      "--resume", "continue from --ckpt (model, optimiser, data order taken from it)", [&o] { o.resume = true; }, G);
  B(
      "--overwrite", "start afresh even if --ckpt or OUT/log.csv exist (they are replaced)",
      [&o] { o.overwrite = true; }, G);
  f.push_back({"--seed", "S", "initialisation, data order and sample seed", "1",
               [&o](const std::string& v) { o.seed = parse_u64("--seed", v); }, false, G});
  I("--threads", "N", "OpenMP threads (0 = all cores)", &o.threads, 0, 4096, G);
  I("--rank-timeout", "S",
    "under mpirun: end the job when a rank waits S seconds in one all-reduce (a rank hung or stopped; 0 = wait "
    "forever)",
    &o.rank_timeout, 0, kMax, G);

  G = "schedule";
  I("--eval-every", "N", "held-out bits/dim every N steps (0 = never)", &o.eval_every, 0, kMax, G);
  I("--sample-every", "N", "PNG grid of samples every N steps (0 = never)", &o.sample_every, 0, kMax, G);
  I("--ckpt-every", "N", "checkpoint every N steps (0 = only at the end and on Ctrl-C)", &o.ckpt_every, 0, kMax, G);
  I("--print-every", "N", "log.csv row (and a progress line when not a terminal) every N steps", &o.print_every, 1,
    kMax, G);
  I("--valid-count", "N", "validation images used for held-out bits/dim", &o.valid_count, 1, 100000000, G);
  I("--sample-rows", "N", "validation inputs in the sample grid", &o.sample_rows, 1, 64, G);

  G = "model";
  prsr::ModelConfig& m = o.model;
  I("--channels", "N", "prior (gated PixelCNN) channels", &m.prior_channels, 1, 65536, G);
  I("--layers", "N", "gated layers", &m.prior_layers, 0, 1000, G);
  I("--kernel", "K", "gated layer kernel (odd)", &m.kernel, 3, 99, G);
  I("--first-kernel", "K", "first prior layer kernel (odd)", &m.first_kernel, 3, 99, G);
  I("--head", "N", "prior head width", &m.head, 1, 1 << 20, G);
  I("--cond-channels", "N", "conditioning network channels", &m.cond_channels, 1, 65536, G);
  I("--cond-blocks", "N", "ResNet blocks at each of 8x8, 16x16, 32x32", &m.cond_blocks, 0, 1000, G);
  B(
      "--no-batch-norm", "no batch norm in the conditioning network", [&o] { o.model.batch_norm = false; }, G);
  f.back().def = "batch norm on";
  f.push_back({"--loss", "pixel|l2", "pixel: CE(A+B)+CE(A); l2: conditioning network alone, MSE (ResNet-L2)", "pixel",
               [&o](const std::string& v) {
                 if (v != "pixel" && v != "l2") throw UsageError("--loss: '" + v + "' is not pixel or l2");
                 o.model.loss = v;
               },
               false, G});

  G = "optimiser";
  prsr::OptimConfig& q = o.optim;
  f.push_back({"--optimizer", "rmsprop|adam", "optimiser (RMSProp is TensorFlow's: ms starts at 1)", "rmsprop",
               [&o](const std::string& v) {
                 if (v != "rmsprop" && v != "adam") throw UsageError("--optimizer: '" + v + "' is not rmsprop or adam");
                 o.optim.kind = v;
               },
               false, G});
  F("--lr", "learning rate", &q.lr, 0, 1e3, G);
  F("--decay", "RMSProp decay of the mean square", &q.decay, 0, 1, G);
  F("--momentum", "RMSProp momentum", &q.momentum, 0, 1, G);
  F("--eps", "RMSProp / Adam epsilon", &q.eps, 0, 1e3, G);
  F("--beta1", "Adam beta1", &q.beta1, 0, 1, G);
  F("--beta2", "Adam beta2", &q.beta2, 0, 1, G);
  I("--lr-halve-every", "N", "halve the learning rate every N steps (0 = never)", &q.halve_every, 0, kMax, G);

  I("--debug-nan-at-step", "N", "", &o.debug_nan_at_step, 0, kMax, "debug");
  f.back().hidden = true;
  return f;
}

void print_help(const std::vector<Flag>& flags) {
  std::printf(
      "usage: train --data NAME [flags]\n"
      "Trains Pixel Recursive Super Resolution (8x8 -> 32x32). Writes OUT/log.csv,\n"
      "OUT/samples_stepNNNNNNN.png (+ samples_latest.png) and the checkpoint; Ctrl-C saves and stops.\n");
  std::string group;
  for (const Flag& f : flags) {
    if (f.hidden) continue;
    if (f.group != group) {
      group = f.group;
      std::printf("\n%s:\n", group.c_str());
    }
    std::string lhs = "  " + f.name + (f.value.empty() ? "" : " " + f.value);
    std::string rhs = f.help + (f.def.empty() ? "" : " [default: " + f.def + "]");
    std::printf("%-32s %s\n", lhs.c_str(), rhs.c_str());
  }
  std::printf("%-32s %s\n", "  --help, -h", "this text");
  std::printf(
      "\nExit status: 0 done, 1 error (data, checkpoint, I/O, NaN loss), 2 usage error,\n"
      "130 / 143 / 138 stopped by SIGINT / SIGTERM / SIGUSR1 after saving the checkpoint. See docs/train.md.\n");
}

Options parse_args(int argc, char** argv) {
  Options o;
  std::vector<Flag> flags = make_flags(o);
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      o.help = true;
      continue;
    }
    std::string value;
    bool has_inline = false;
    if (a.rfind("--", 0) == 0) {
      const auto eq = a.find('=');
      if (eq != std::string::npos) {
        value = a.substr(eq + 1);
        a = a.substr(0, eq);
        has_inline = true;
      }
    } else {
      throw UsageError("unexpected argument '" + a + "' (flags start with --; see --help)");
    }
    auto it = std::find_if(flags.begin(), flags.end(), [&](const Flag& f) { return f.name == a; });
    if (it == flags.end()) throw UsageError("unknown flag '" + a + "' (see --help)");
    if (it->value.empty()) {
      if (has_inline) throw UsageError(a + " takes no value");
    } else if (!has_inline) {
      // "--steps --out x": a flag where a value should be is a missing value (a value that
      // really starts with "--" can be given as --flag=--value).
      if (i + 1 >= argc || std::string(argv[i + 1]).rfind("--", 0) == 0)
        throw UsageError(a + " needs a value (" + a + " " + it->value + ")");
      value = argv[++i];
    }
    it->set(value);
    o.given.insert(a);
  }
  if (o.help) {
    print_help(flags);
    return o;
  }
  return o;
}

}  // namespace prsr::train_cli
