#include "study/options.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "cli/args.h"
#include "data/dataset.h"
#include "engine/error.h"

namespace prsr::study {

using cli::parse_int;
using cli::parse_temperatures;

namespace {

// Splits argv[first..] into flags: `switches` take no value, `valued` take one; positional
// arguments go to `pos`. Each flag at most once.
struct Flags {
  std::vector<std::pair<std::string, std::string>> kv;
  std::set<std::string> seen;
  std::vector<std::string> pos;
  bool help = false;
};

Flags split_flags(int argc, char** argv, int first, const std::set<std::string>& switches,
                  const std::set<std::string>& valued, const std::string& command) {
  Flags f;
  for (int i = first; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      f.help = true;
      continue;
    }
    if (a.rfind("--", 0) != 0) {
      f.pos.push_back(a);
      continue;
    }
    if (!switches.count(a) && !valued.count(a))
      throw Error("study " + command + ": unknown flag '" + a + "' (see study " + command + " --help)");
    if (!f.seen.insert(a).second) throw Error(a + " given twice");
    if (switches.count(a)) {
      f.kv.push_back({a, ""});
      continue;
    }
    if (i + 1 >= argc) throw Error(a + ": missing value");
    f.kv.push_back({a, argv[++i]});
  }
  return f;
}

}  // namespace

void print_help(const std::string& command) {
  if (command == "prepare") {
    std::printf(
        "usage: study prepare --ckpt model.bin --data NAME --out DIR [options]\n"
        "\n"
        "Picks --count inputs at random from a data set split and writes, for each, the real 32x32\n"
        "image and every method's output as PNGs, plus DIR/manifest.tsv listing the pairs\n"
        "(real vs one method's output for the same 8x8 input). docs/study.md.\n"
        "\n"
        "  --ckpt PATH            the PixelCNN model (trained with --loss pixel; required)\n"
        "  --baseline-ckpt PATH   a ResNet-L2 model (--loss l2): adds the method l2\n"
        "  --bicubic              adds the method bicubic (the 8x8 input upsampled 4x)\n"
        "  --temperature T[,T2..] one sample per input and temperature (default: 1.0)\n"
        "  --data NAME            celeba | fashion-mnist | folder:PATH (required)\n"
        "  --data-dir PATH        where the data set lives (default: the data set's own default)\n"
        "  --cache-dir PATH       decoded data set cache (default: datasets/cache)\n"
        "  --split NAME           train | valid | test (default: test)\n"
        "  --count N              inputs (default: 50; at most the split's size)\n"
        "  --seed S               picks the inputs and seeds the samples (default: 0)\n"
        "  --batch B              images sampled at once (default: 16)\n"
        "  --device cpu|cuda      where the models run (default: cpu)\n"
        "  --out DIR              the study folder (required; must not hold a study already)\n");
  } else if (command == "serve") {
    std::printf(
        "usage: study serve DIR [--port P] [--bind ADDR] [--show-ms MS]\n"
        "\n"
        "Serves the rating page of a prepared study: each rater (a random id in a cookie) sees every\n"
        "pair once, real and model output side by side at random, for --show-ms, then picks the\n"
        "real one. Every answer is committed to DIR/answers.sqlite before the page moves on.\n"
        "Ctrl-C stops the server. docs/study.md.\n"
        "\n"
        "  --port P        TCP port (default: 8080; 0 = any free port, printed)\n"
        "  --bind ADDR     address to listen on (default: 127.0.0.1, this machine only;\n"
        "                  0.0.0.0 lets other machines on the network rate)\n"
        "  --show-ms MS    how long the images are shown before the choice (default: 1000;\n"
        "                  0 = until the rater chooses)\n");
  } else if (command == "report") {
    std::printf(
        "usage: study report DIR\n"
        "\n"
        "%% fooled (the model's output picked as real) per method and temperature with 95%% Wilson\n"
        "intervals, answers and raters: a table on stdout, DIR/report.csv and DIR/report.json.\n");
  } else {
    std::printf(
        "usage: study prepare|serve|report ...   (study COMMAND --help for each)\n"
        "\n"
        "The human study of the paper (docs/study.md): raters see a real 32x32 image and a model's\n"
        "output for the same 8x8 input and pick the real one; %% fooled is how often they pick the\n"
        "model's.\n"
        "\n"
        "  study prepare --ckpt M [--baseline-ckpt L2] [--bicubic] --data NAME --count N\n"
        "                --temperature 1.0,0.9,0.8 --out DIR      pick inputs, write PNGs + manifest\n"
        "  study serve DIR [--port 8080]                           the rating page on 127.0.0.1\n"
        "  study report DIR                                        %% fooled with 95%% Wilson intervals\n");
  }
}

Args parse_args(int argc, char** argv) {
  Args a;
  if (argc < 2) throw Error("no command: give prepare, serve or report (see study --help)");
  a.command = argv[1];
  if (a.command == "--help" || a.command == "-h" || a.command == "help") {
    a.command = "";
    a.help = true;
    return a;
  }
  if (a.command == "prepare") {
    const Flags f = split_flags(argc, argv, 2, {"--bicubic"},
                                {"--ckpt", "--baseline-ckpt", "--data", "--data-dir", "--cache-dir", "--split",
                                 "--count", "--temperature", "--out", "--seed", "--batch", "--device"},
                                a.command);
    a.help = f.help;
    if (a.help) return a;
    if (!f.pos.empty()) throw Error("study prepare: unexpected argument '" + f.pos[0] + "' (see --help)");
    PrepareArgs& p = a.prepare;
    for (const auto& [k, v] : f.kv) {
      if (k == "--bicubic") p.bicubic = true;
      else if (k == "--ckpt") p.ckpt = v;
      else if (k == "--baseline-ckpt") p.baseline_ckpt = v;
      else if (k == "--data") p.data = v;
      else if (k == "--data-dir") p.data_dir = v;
      else if (k == "--cache-dir") p.cache_dir = v;
      else if (k == "--split") {
        data::parse_split(v);
        p.split = v;
      } else if (k == "--count") p.count = int(parse_int(k, v, 1, 1000000));
      else if (k == "--temperature") p.temperatures = parse_temperatures(v);
      else if (k == "--out") p.out = v;
      else if (k == "--batch") p.batch = int(parse_int(k, v, 1, 65536));
      else if (k == "--device") {
        if (v != "cpu" && v != "cuda") throw Error("--device: expected cpu or cuda, got '" + v + "'");
        p.device = v;
      } else if (k == "--seed") {
        char* end = nullptr;
        errno = 0;
        const unsigned long long s = std::strtoull(v.c_str(), &end, 10);
        if (v.empty() || v[0] == '-' || *end != '\0' || errno == ERANGE)
          throw Error("--seed: expected a non-negative integer, got '" + v + "'");
        p.seed = s;
      }
    }
    if (p.ckpt.empty()) throw Error("study prepare: --ckpt is required (see study prepare --help)");
    if (p.data.empty()) throw Error("study prepare: --data is required (the real images come from a data set)");
    if (p.out.empty()) throw Error("study prepare: --out DIR is required");
    return a;
  }
  if (a.command == "serve") {
    const Flags f = split_flags(argc, argv, 2, {}, {"--port", "--bind", "--show-ms"}, a.command);
    a.help = f.help;
    if (a.help) return a;
    if (f.pos.size() != 1)
      throw Error(f.pos.empty() ? "study serve: give the study folder (study serve DIR)"
                                : "study serve: unexpected argument '" + f.pos[1] + "'");
    ServeArgs& s = a.serve;
    s.dir = f.pos[0];
    for (const auto& [k, v] : f.kv) {
      if (k == "--port") s.port = int(parse_int(k, v, 0, 65535));
      else if (k == "--bind") {
        if (v.empty()) throw Error("--bind: empty address");
        s.bind = v;
      } else if (k == "--show-ms") s.show_ms = int(parse_int(k, v, 0, 600000));
    }
    return a;
  }
  if (a.command == "report") {
    const Flags f = split_flags(argc, argv, 2, {}, {}, a.command);
    a.help = f.help;
    if (a.help) return a;
    if (f.pos.size() != 1)
      throw Error(f.pos.empty() ? "study report: give the study folder (study report DIR)"
                                : "study report: unexpected argument '" + f.pos[1] + "'");
    a.report_dir = f.pos[0];
    return a;
  }
  throw Error("unknown command '" + a.command + "': give prepare, serve or report (see study --help)");
}

}  // namespace prsr::study
