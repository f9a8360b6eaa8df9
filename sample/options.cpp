#include "sample/options.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "data/dataset.h"
#include "engine/error.h"
#include "model/sampler.h"

namespace prsr::sample_cli {

void print_help() {
  std::printf(
      "usage: sample --ckpt model.bin (--input FILE|DIR | --data NAME [--split test] [--count N]) [options]\n"
      "\n"
      "Super-resolves 8x8 inputs to 32x32 with a trained prsr checkpoint (docs/sample.md).\n"
      "\n"
      "inputs\n"
      "  --ckpt PATH              checkpoint to sample from (required)\n"
      "  --input FILE|DIR         a PNG/JPEG, or every .png/.jpg/.jpeg in DIR and its subfolders\n"
      "                           (sorted; --out-dir mirrors the subfolders). An 8x8 image\n"
      "                           is the low-res input itself; any other size is a ground truth:\n"
      "                           centre square crop, area resize to 32x32, 4x4 box average -> 8x8\n"
      "  --data NAME              celeba | fashion-mnist | lsun | folder:PATH: the first --count\n"
      "                           images of --split (ground truth known)\n"
      "  --data-dir PATH          where the data set lives (default: the data set's own default)\n"
      "  --lsun-category NAME     lsun: the scene category (default: bedroom)\n"
      "  --limit N                lsun: the train split is the first N train records (default: 0 = all)\n"
      "  --cache-dir PATH         decoded data set cache (default: datasets/cache)\n"
      "  --split NAME             train | valid | test (default: test)\n"
      "  --count N                images from the split (default: 8; 100 with --eval; 0 = all,\n"
      "                           the default with --nll)\n"
      "sampling\n"
      "  --temperature T[,T2..]   softmax temperature(s) (default: 1.0; 1.0,0.9,0.8 with --eval)\n"
      "  --samples-per-input S    samples per input and temperature (default: 3; 1 with --eval)\n"
      "  --mode MODE              sample | mean | argmax (default: sample; mean and argmax are\n"
      "                           deterministic point estimates, so S is set to 1)\n"
      "  --seed S                 random seed (default: 0); same seed, --batch and device -> same images\n"
      "  --batch B                images sampled at once (default: 16)\n"
      "  --naive                  use the naive sampler (whole prior per sub-pixel; slow, same images)\n"
      "  --device cpu|cuda        where the model runs (default: cpu)\n"
      "  --precision fp32|bf16    convolutions of the graph (conditioning network, --naive, --nll) in bf16 with\n"
      "                           fp32 accumulation; CPUs with AVX512_BF16 or AMX-BF16 only (default: fp32)\n"
      "  --threads N              OpenMP threads (default: 0 = all cores)\n"
      "output\n"
      "  --out PATH               the PNG grid (default: samples.png; eval.png with --eval)\n"
      "  --out-dir DIR            one 32x32 PNG per sample, <input>_s<k>.png (default: samples)\n"
      "  --tile N                 tile side in the grid, pixels (default: 64)\n"
      "  --skip-existing          continue an interrupted run: batches whose PNGs are all in --out-dir\n"
      "                           are not sampled again (same images as one uninterrupted run)\n"
      "evaluation\n"
      "  --eval                   needs --data: bits/dim, PSNR, SSIM, consistency for the model at\n"
      "                           each temperature, bicubic and the L2 baseline; a table on stdout,\n"
      "                           also written as <out>.csv and <out>.json (default eval.csv/.json)\n"
      "  --baseline-ckpt PATH     a ResNet-L2 checkpoint (trained with --loss l2) to add to --eval\n"
      "  --nll                    needs --data: bits/dim of A + B and of A alone on the whole split\n"
      "                           (or --count images), batched, no sampling; a table on stdout and\n"
      "                           <out>.csv and <out>.json (default nll.csv/.json)\n"
      "  --help                   this text\n"
      "\n"
      "Ctrl-C finishes the current batch, writes its PNGs (every file is written atomically) and\n"
      "exits with 130; --skip-existing continues from there.\n");
}

Args parse_args(int argc, char** argv) {
  Args a;
  std::set<std::string> seen;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "--help" || f == "-h") {
      a.help = true;
      continue;
    }
    if (f.rfind("--", 0) != 0) throw Error("unexpected argument '" + f + "' (see --help)");
    // Flags without a value.
    if (f == "--naive") {
      a.naive = true;
      continue;
    }
    if (f == "--eval") {
      a.eval = true;
      continue;
    }
    if (f == "--nll") {
      a.nll = true;
      continue;
    }
    if (f == "--skip-existing") {
      a.skip_existing = true;
      continue;
    }
    static const std::set<std::string> valued = {"--ckpt",     "--input",         "--data",
                                                 "--data-dir", "--cache-dir",     "--split",
                                                 "--count",    "--temperature",   "--samples-per-input",
                                                 "--mode",     "--out",           "--out-dir",
                                                 "--device",   "--seed",          "--batch",
                                                 "--tile",     "--baseline-ckpt", "--threads",
                                                 "--precision"};
    if (!valued.count(f) && f != "--lsun-category" && f != "--limit")
      throw Error("unknown flag '" + f + "' (see --help)");
    if (i + 1 >= argc) throw Error(f + ": missing value");
    const std::string v = argv[++i];
    if (!seen.insert(f).second) throw Error(f + " given twice");
    if (f == "--ckpt") a.ckpt = v;
    else if (f == "--input") a.input = v;
    else if (f == "--data") a.data = v;
    else if (f == "--data-dir") a.data_dir = v;
    else if (f == "--cache-dir") a.cache_dir = v;
    else if (f == "--split") {
      data::parse_split(v);
      a.split = v;
    } else if (f == "--count") {
      a.count = int(parse_int(f, v, 0, 100000000));
      a.count_given = true;
    } else if (f == "--temperature") {
      a.temperatures = parse_temperatures(v);
      a.temperature_text = v;
    } else if (f == "--samples-per-input") a.samples = int(parse_int(f, v, 1, 10000));
    else if (f == "--mode") {
      parse_decode_mode(v);
      a.mode = v;
    } else if (f == "--out") a.out = v;
    else if (f == "--out-dir") a.out_dir = v;
    else if (f == "--device") {
      if (v != "cpu" && v != "cuda") throw Error("--device: expected cpu or cuda, got '" + v + "'");
      a.device = v;
    } else if (f == "--seed") {
      char* end = nullptr;
      errno = 0;
      const unsigned long long s = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || v[0] == '-' || *end != '\0' || errno == ERANGE)
        throw Error("--seed: expected a non-negative integer, got '" + v + "'");
      a.seed = s;
    } else if (f == "--batch") a.batch = int(parse_int(f, v, 1, 65536));
    else if (f == "--tile") a.tile = int(parse_int(f, v, 8, 1024));
    else if (f == "--baseline-ckpt") a.baseline_ckpt = v;
    else if (f == "--lsun-category") a.lsun_category = v;
    else if (f == "--limit") a.limit = parse_int(f, v, 0, 1000000000000L);
    else if (f == "--threads") a.threads = int(parse_int(f, v, 0, 4096));
    else if (f == "--precision") {
      if (v != "fp32" && v != "bf16") throw Error("--precision: expected fp32 or bf16, got '" + v + "'");
      a.precision = v;
    }
  }
  if (a.help) return a;
  if (a.ckpt.empty()) throw Error("--ckpt is required (see --help)");
  if (!a.input.empty() && !a.data.empty()) throw Error("give either --input or --data, not both");
  if (a.eval && a.data.empty()) throw Error("--eval needs --data NAME (a split with known ground truth)");
  if (a.input.empty() && a.data.empty()) throw Error("no input: give --input FILE|DIR or --data NAME");
  if (!a.baseline_ckpt.empty() && !a.eval) throw Error("--baseline-ckpt is only used with --eval");
  if (a.skip_existing && a.eval) throw Error("--skip-existing goes with the per-sample PNGs, not with --eval");
  if (!a.input.empty() && (seen.count("--split") || seen.count("--count")))
    throw Error("--split and --count go with --data, not --input");
  if (a.nll) {
    if (a.eval) throw Error("--nll and --eval are separate runs: give one of them");
    if (a.data.empty())
      throw Error("--nll needs --data NAME: bits/dim needs the ground truth of every image, which --input lacks");
    for (const char* f : {"--temperature", "--samples-per-input", "--mode", "--seed", "--out-dir", "--tile"})
      if (seen.count(f)) throw Error(std::string(f) + " does not apply to --nll (it does not sample)");
    if (a.naive) throw Error("--naive does not apply to --nll (it does not sample)");
    if (a.skip_existing) throw Error("--skip-existing does not apply to --nll (it writes no sample PNGs)");
  }
  if (a.count < 0) a.count = a.eval ? 100 : a.nll ? 0 : 8;
  if (a.temperatures.empty()) {
    a.temperatures = a.eval ? std::vector<float>{1.0f, 0.9f, 0.8f} : std::vector<float>{1.0f};
  }
  if (a.samples < 0) a.samples = a.eval ? 1 : 3;
  if (a.out.empty()) a.out = a.eval ? "eval.png" : a.nll ? "nll.csv" : "samples.png";
  return a;
}

}  // namespace prsr::sample_cli
