// ./build/sample --nll end to end: bits/dim of A + B and of A alone against an independent
// double computation on the reference backend, the batch size, the --eval table's model-A row,
// and one clear error line for each misuse. Tiny checkpoints and a small folder data set are
// made here.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/image.h"
#include "engine/backend.h"
#include "eval/grid.h"
#include "model/batch.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "tests/cli_run.h"

using namespace prsr;
using test::check_one_error_line;
using test::lines;
using test::RunResult;
using test::slurp;
namespace fs = std::filesystem;

namespace {

struct NllDir : test::CliDir {
  NllDir() : CliDir("prsr-cli-nll") {}
};

ModelConfig nll_config(int colors, const std::string& loss = "pixel") {
  ModelConfig c;
  c.colors = colors;
  c.size = 32;
  c.cond_channels = 4;
  c.cond_blocks = 1;
  c.prior_channels = colors == 3 ? 6 : 4;
  c.prior_layers = 1;
  c.kernel = 3;
  c.first_kernel = 3;
  c.head = 16;
  c.loss = loss;
  return c;
}

// A model whose batch-norm running statistics are far from (0, 1), so that evaluation-mode
// batch norm (running statistics) and training-mode batch norm (batch statistics) differ.
void make_checkpoint(const std::string& path, int colors, const std::string& loss = "pixel") {
  const ModelConfig cfg = nll_config(colors, loss);
  Model<float> m(cfg, Device::Cpu);
  m.init(11);
  std::vector<float> p = m.params.download();
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  for (const auto& e : m.params.entries()) {
    const bool mean = e.name.find("running_mean") != std::string::npos;
    const bool var = e.name.find("running_var") != std::string::npos;
    for (size_t i = 0; i < e.tensor->numel(); ++i) {
      if (mean) p[e.offset + i] = u(rng) - 0.5f;
      if (var) p[e.offset + i] = 0.3f + 2 * u(rng);
    }
  }
  m.params.upload(p);
  CheckpointInfo info;
  info.model = cfg;
  info.step = 9;
  save_checkpoint(path, m, nullptr, info);
}

// A gradient plus noise, 32x32 RGB.
data::Image random_image(unsigned seed) {
  std::mt19937 rng(seed);
  data::Image im;
  im.w = im.h = 32;
  im.c = 3;
  im.px.resize(32 * 32 * 3);
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x)
      for (int k = 0; k < 3; ++k)
        im.px[(size_t(y) * 32 + x) * 3 + k] = uint8_t((x * 8 + y * 3 + k * 40 + rng() % 48) % 256);
  return im;
}

// Fewer than 20 images: every split of the folder data set holds all of them (data/dataset.h).
void make_folder(const NllDir& d, int n) {
  fs::create_directories(d.path / "imgs");
  for (int i = 0; i < n; ++i) data::write_png(d / ("imgs/im" + std::to_string(10 + i) + ".png"), random_image(50 + i));
}

std::vector<std::string> fields(const std::string& row) {
  std::vector<std::string> out;
  std::istringstream in(row);
  for (std::string f; std::getline(in, f, ',');) out.push_back(f);
  if (!row.empty() && row.back() == ',') out.push_back("");
  return out;
}

RunResult run_sample(const NllDir& dir, const std::string& args) { return test::run_in(dir, PRSR_SAMPLE_BIN, args); }

struct CsvNll {
  std::string split;
  long images = 0;
  double ab = NAN, a = NAN;
};

// --nll on the folder data set with `extra` flags; the CSV's one row.
CsvNll run_nll(const NllDir& d, const std::string& ckpt, const std::string& extra) {
  const RunResult r =
      run_sample(d, "--ckpt " + ckpt + " --data folder:imgs --cache-dir cache --nll --out res/nll " + extra);
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.rc == 0);
  const std::vector<std::string> csv = lines(slurp(d / "res/nll.csv"));
  REQUIRE(csv.size() == 2);
  CHECK(csv[0] == "split,images,bits_per_dim_ab,bits_per_dim_a,seconds,images_per_s");
  const std::vector<std::string> f = fields(csv[1]);
  REQUIRE(f.size() == 6);
  CsvNll c;
  c.split = f[0];
  c.images = std::stol(f[1]);
  c.ab = std::stod(f[2]);
  c.a = std::stod(f[3]);
  return c;
}

// The independent computation: the checkpoint's parameters in double on the reference backend,
// A = conditioning(x) (batch norm in evaluation mode unless `training`) and B = prior(y) for all
// images at once, and the cross-entropies -log2 softmax(A + B)[y] and -log2 softmax(A)[y] summed
// here in double over every sub-pixel, divided by their number.
struct RefNll {
  double ab = 0, a = 0;
};
RefNll reference_nll(const std::string& ckpt, const std::vector<uint8_t>& images, int n, bool training) {
  const CheckpointInfo info = read_checkpoint_info(ckpt);
  const ModelConfig& cfg = info.model;
  Model<float> mf(cfg, Device::Cpu);
  load_checkpoint(ckpt, mf, nullptr);
  Model<double> md(cfg, Device::Ref);
  const std::vector<float> pf = mf.params.download();
  md.params.upload(std::vector<double>(pf.begin(), pf.end()));
  const int C = cfg.colors, S = cfg.size, L = cfg.low(), HW = S * S;
  std::vector<double> xs, ys;
  std::vector<uint8_t> tg;
  make_batch_vec<double>(images.data(), n, C, S, xs, ys, tg);
  Graph<double> g(Device::Ref);
  g.grad_enabled = false;
  Tensor<double> xt{{n, C, L, L}, Device::Ref, xs.data()};
  Tensor<double> yt{{n, C, S, S}, Device::Ref, ys.data()};
  const Tensor<double>* A = md.conditioning(g, &xt, training);
  const Tensor<double>* B = md.prior(g, &yt);
  RefNll r;
  for (int s = 0; s < n; ++s)
    for (int c = 0; c < C; ++c)
      for (int p = 0; p < HW; ++p) {
        const int t = images[(size_t(s) * HW + p) * C + c];  // HWC ground truth
        auto logit = [&](const Tensor<double>* T, int l) { return T->data[((size_t(s) * C + c) * 256 + l) * HW + p]; };
        double sab = 0, sa = 0;
        for (int l = 0; l < 256; ++l) {
          sab += std::exp(logit(A, l) + logit(B, l));
          sa += std::exp(logit(A, l));
        }
        r.ab += std::log(sab) - (logit(A, t) + logit(B, t));
        r.a += std::log(sa) - logit(A, t);
      }
  const double count = double(n) * C * HW * std::log(2.0);
  r.ab /= count;
  r.a /= count;
  return r;
}

// The folder data set's test split as the CLI sees it, in the model's colours: n HWC images.
std::vector<uint8_t> folder_images(const NllDir& d, int C, int& n) {
  data::DataOptions o;
  o.spec = "folder:" + (d / "imgs");
  o.cache_dir = d / "cache-test";
  const data::Dataset ds = data::load_dataset(o, data::Split::Test);
  n = ds.n;
  std::vector<uint8_t> out;
  for (int i = 0; i < ds.n; ++i) {
    data::Image im = make_image(ds.image(i), ds.size, ds.size, ds.colors);
    if (C == 1) im = data::to_gray(im);
    out.insert(out.end(), im.px.begin(), im.px.end());
  }
  return out;
}

}  // namespace

TEST_CASE("cli sample --nll: bits/dim of A + B and of A alone == a double computation; any batch") {
  for (int C : {3, 1}) {
    CAPTURE(C);
    NllDir d;
    make_checkpoint(d / "model.bin", C);
    make_folder(d, 7);
    int n = 0;
    const std::vector<uint8_t> images = folder_images(d, C, n);
    REQUIRE(n == 7);
    const RefNll ref = reference_nll(d / "model.bin", images, n, false);
    const CsvNll b3 = run_nll(d, "model.bin", "--batch 3");  // batches 3 + 3 + 1
    CHECK(b3.split == "test");
    CHECK(b3.images == 7);
    // float forward vs double: measured within 1e-7 of each other (8 bits).
    CHECK(b3.ab == doctest::Approx(ref.ab).epsilon(1e-6));
    CHECK(b3.a == doctest::Approx(ref.a).epsilon(1e-6));
    // The two figures are different numbers (a swap would fail above), and batch norm in
    // training mode would give another A (so evaluation mode is what is checked).
    CHECK(std::abs(ref.ab - ref.a) > 0.01);
    const RefNll train_bn = reference_nll(d / "model.bin", images, n, true);
    CHECK(std::abs(train_bn.a - ref.a) > 1e-3);
    // The batch size only regroups float sums.
    for (const char* batch : {"--batch 1", "--batch 7", "--batch 64"}) {
      CAPTURE(batch);
      const CsvNll o = run_nll(d, "model.bin", batch);
      CHECK(o.images == 7);
      CHECK(o.ab == doctest::Approx(b3.ab).epsilon(1e-6));
      CHECK(o.a == doctest::Approx(b3.a).epsilon(1e-6));
    }
    // --count takes the first images of the split.
    const CsvNll first2 = run_nll(d, "model.bin", "--count 2");
    CHECK(first2.images == 2);
    const RefNll ref2 = reference_nll(d / "model.bin",
                                      std::vector<uint8_t>(images.begin(), images.begin() + 2 * 32 * 32 * C), 2, false);
    CHECK(first2.ab == doctest::Approx(ref2.ab).epsilon(1e-6));
    CHECK(first2.a == doctest::Approx(ref2.a).epsilon(1e-6));
  }
}

TEST_CASE("cli sample --nll: the table, the progress bar, CSV and JSON; --eval's model-A row agrees") {
  NllDir d;
  make_checkpoint(d / "model.bin", 3);
  make_folder(d, 5);
  const RunResult r = run_sample(d, "--ckpt model.bin --data folder:imgs --cache-dir cache --nll --batch 2");
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("bits/dim A+B") != std::string::npos);
  CHECK(r.out.find("bits/dim A ") != std::string::npos);
  CHECK(r.out.find("images/s") != std::string::npos);
  CHECK(r.out.find("wrote nll.csv and nll.json") != std::string::npos);  // the default --out
  CHECK(r.err.find("nll: [") != std::string::npos);                      // the progress bar
  CHECK(r.err.find("5/5 images") != std::string::npos);
  const std::string js = slurp(d / "nll.json");
  for (const char* key : {"\"checkpoint\": \"model.bin\"", "\"rows\"", "\"split\": \"test\"", "\"images\": 5",
                          "\"bits_per_dim_ab\": ", "\"bits_per_dim_a\": ", "\"seconds\": ", "\"images_per_s\": "})
    CHECK_MESSAGE(js.find(key) != std::string::npos, key);
  const std::vector<std::string> csv = lines(slurp(d / "nll.csv"));
  REQUIRE(csv.size() == 2);
  const std::vector<std::string> nll = fields(csv[1]);
  REQUIRE(nll.size() == 6);

  // --eval on the same images: the model rows carry bits/dim A + B, the model-A row bits/dim A
  // (the same figures), with no images of its own.
  const RunResult e = run_sample(d,
                                 "--ckpt model.bin --data folder:imgs --cache-dir cache --eval --count 0 "
                                 "--temperature 1.0 --batch 2 --out ev.png");
  INFO("stdout: " << e.out << "\nstderr: " << e.err);
  REQUIRE(e.rc == 0);
  bool table_row = false;
  for (const std::string& l : lines(e.out))
    if (l.rfind("model-A ", 0) == 0) table_row = true;
  CHECK(table_row);
  const std::vector<std::string> ev = lines(slurp(d / "ev.csv"));
  REQUIRE(ev.size() == 4);  // header, model 1.0, model-A, bicubic
  const std::vector<std::string> model = fields(ev[1]), model_a = fields(ev[2]);
  REQUIRE(model.size() == 7);
  REQUIRE(model_a.size() == 7);
  CHECK(model[0] == "model");
  CHECK(model_a[0] == "model-A");
  CHECK(model_a[1] == "");  // no temperature
  CHECK(std::stod(model[2]) == doctest::Approx(std::stod(nll[2])).epsilon(1e-7));
  CHECK(std::stod(model_a[2]) == doctest::Approx(std::stod(nll[3])).epsilon(1e-7));
  CHECK(model_a[3] == "");   // no PSNR: it makes no images
  CHECK(model_a[6] == "0");  // outputs
  CHECK(slurp(d / "ev.json").find("{\"method\": \"model-A\", \"temperature\": null, \"bits_per_dim\": ") !=
        std::string::npos);
}

TEST_CASE("cli sample --nll: misuse is one error line and a non-zero exit") {
  NllDir d;
  make_checkpoint(d / "model.bin", 3);
  make_checkpoint(d / "l2.bin", 3, "l2");
  make_folder(d, 3);
  data::write_png(d / "x.png", random_image(9));
  const std::string data = "--data folder:imgs --cache-dir cache --nll ";
  check_one_error_line(run_sample(d, "--ckpt model.bin --input x.png --nll"), "--nll needs --data");
  check_one_error_line(run_sample(d, "--ckpt l2.bin " + data), "l2 model");
  check_one_error_line(run_sample(d, "--ckpt model.bin " + data + "--eval"), "--nll and --eval");
  check_one_error_line(run_sample(d, "--ckpt model.bin " + data + "--temperature 0.9"), "--temperature");
  check_one_error_line(run_sample(d, "--ckpt model.bin " + data + "--naive"), "--naive");
  check_one_error_line(run_sample(d, "--ckpt model.bin " + data + "--baseline-ckpt l2.bin"), "--baseline-ckpt");
  {  // an --out that cannot be written: the figures are on stdout, then one error line
    std::ofstream(d / "blocker") << "a file, not a folder\n";
    const RunResult r = run_sample(d, "--ckpt model.bin " + data + "--out blocker/x.csv");
    INFO("stdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.rc == 1);
    CHECK(r.out.find("bits/dim A+B") != std::string::npos);
    const std::vector<std::string> l = lines(r.err);
    REQUIRE(!l.empty());
    CHECK(l.back().rfind("error: cannot write blocker/x.csv", 0) == 0);
  }
  // --out folders are made as needed.
  CHECK(run_sample(d, "--ckpt model.bin " + data + "--out new/sub/x.csv").rc == 0);
  CHECK(fs::exists(d / "new/sub/x.json"));
  const RunResult h = run_sample(d, "--help");
  CHECK(h.rc == 0);
  CHECK(h.out.find("--nll") != std::string::npos);
}
