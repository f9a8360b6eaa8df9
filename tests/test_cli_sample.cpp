// ./build/sample end to end: grid and per-sample PNGs, colour handling, --eval tables, seeds,
// and one clear error line for every bad flag or file. Tiny checkpoints are made here.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "data/image.h"
#include "engine/backend.h"
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

struct SampleCliDir : test::CliDir {
  SampleCliDir() : CliDir("prsr-cli-sample") {}
};

ModelConfig tiny_config(int colors, const std::string& loss = "pixel") {
  ModelConfig c;
  c.colors = colors;
  c.size = 32;
  c.cond_channels = 4;
  c.cond_blocks = 1;
  c.prior_channels = 4;
  c.prior_layers = 1;
  c.kernel = 3;
  c.first_kernel = 3;
  c.head = 16;
  c.loss = loss;
  return c;
}

void make_checkpoint(const std::string& path, int colors, const std::string& loss = "pixel") {
  const ModelConfig cfg = tiny_config(colors, loss);
  Model<float> m(cfg, Device::Cpu);
  m.init(7);
  CheckpointInfo info;
  info.model = cfg;
  info.step = 3;
  save_checkpoint(path, m, nullptr, info);
}

data::Image random_image(int w, int h, int c, unsigned seed) {
  std::mt19937 rng(seed);
  data::Image im;
  im.w = w;
  im.h = h;
  im.c = c;
  im.px.resize(size_t(w) * h * c);
  // Smooth-ish content (a gradient plus noise) so the metrics are not degenerate.
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k)
        im.px[(size_t(y) * w + x) * c + k] = uint8_t((x * 255 / w + y * 97 / h + k * 40 + rng() % 32) % 256);
  return im;
}

// Runs ./build/sample with `args` in dir (tests/cli_run.h).
RunResult run_sample(const SampleCliDir& dir, const std::string& args) {
  return test::run_in(dir, PRSR_SAMPLE_BIN, args);
}

// The threads of process `pid` that do not block signal `sig` (/proc/PID/task/*/status SigBlk).
std::vector<std::string> threads_not_blocking(pid_t pid, int sig) {
  std::vector<std::string> open;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::istringstream status(slurp(task.path().string() + "/status"));
    for (std::string line; std::getline(status, line);)
      if (line.rfind("SigBlk:", 0) == 0) {
        const unsigned long long mask = std::stoull(line.substr(7), nullptr, 16);
        if (!(mask >> (sig - 1) & 1)) open.push_back(task.path().filename().string());
      }
  }
  return open;
}

// Every file under `dir` (relative path -> bytes).
std::map<std::string, std::string> files_under(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = slurp(e.path().string());
  return out;
}

// Grid size for `rows` rows of at most `cols` tiles (eval/grid.h: gap 2 around every tile).
int grid_extent(int tiles, int tile) { return tiles * tile + (tiles + 1) * 2; }

}  // namespace

TEST_CASE("cli sample: grid and per-sample PNGs from a folder of inputs") {
  SampleCliDir d;
  make_checkpoint(d / "model.bin", 3);
  fs::create_directories(d.path / "in");
  data::write_png(d / "in/a_low.png", random_image(8, 8, 3, 1));     // used as is: no ground truth
  data::write_png(d / "in/b_wide.png", random_image(40, 30, 3, 2));  // ground truth: crop 30x30, resize
  data::write_png(d / "in/c_grey.png", random_image(36, 36, 1, 3));  // grey -> RGB for a C = 3 model
  const RunResult r = run_sample(d,
                                 "--ckpt model.bin --input in --samples-per-input 2 --out grid.png "
                                 "--out-dir samp --tile 48 --batch 4");
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("inputs: 3 (2 with ground truth)") != std::string::npos);
  CHECK(r.out.find("replicated to RGB") != std::string::npos);
  CHECK(r.err.find("sampling: [") != std::string::npos);  // the progress bar
  // 3 rows; nearest | bicubic | 2 samples | ground truth = 5 tiles at most.
  const data::Image grid = data::read_image(d / "grid.png");
  CHECK(grid.w == grid_extent(5, 48));
  CHECK(grid.h == grid_extent(3, 48));
  CHECK(grid.c == 3);
  for (const char* stem : {"a_low", "b_wide", "c_grey"})
    for (int k = 0; k < 2; ++k) {
      const std::string p = d / ("samp/" + std::string(stem) + "_s" + std::to_string(k) + ".png");
      REQUIRE(fs::exists(p));
      const data::Image s = data::read_image(p);
      CHECK(s.w == 32);
      CHECK(s.h == 32);
      CHECK(s.c == 3);
    }
}

TEST_CASE("cli sample: --input DIR reads subfolders like --data folder:DIR, outputs mirror them") {
  SampleCliDir d;
  make_checkpoint(d / "model.bin", 3);
  fs::create_directories(d.path / "in/sub/deeper");
  data::write_png(d / "in/top.png", random_image(40, 40, 3, 11));
  data::write_png(d / "in/sub/a.png", random_image(36, 48, 3, 12));
  data::write_png(d / "in/sub/a.jpg", random_image(32, 32, 3, 13));  // PNG bytes; same stem as a.png
  data::write_png(d / "in/sub/deeper/b.png", random_image(64, 40, 3, 14));
  const RunResult r = run_sample(d,
                                 "--ckpt model.bin --input in --samples-per-input 2 --batch 3 --out in.png "
                                 "--out-dir samp");
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("inputs: 4 (4 with ground truth)") != std::string::npos);
  for (const char* name : {"top", "sub/a.png", "sub/a.jpg", "sub/deeper/b"})
    for (int k = 0; k < 2; ++k) {
      const std::string p = d / ("samp/" + std::string(name) + "_s" + std::to_string(k) + ".png");
      CHECK_MESSAGE(fs::exists(p), p);
    }
  // The same files in the same order as the folder data set (< 20 images: every split has all
  // of them), prepared the same way: with the same seed and batch the grids are identical.
  const RunResult f = run_sample(d,
                                 "--ckpt model.bin --data folder:in --split test --count 0 --samples-per-input 2 "
                                 "--batch 3 --cache-dir cache --out data.png --out-dir dsamp");
  INFO("stdout: " << f.out << "\nstderr: " << f.err);
  REQUIRE(f.rc == 0);
  CHECK(f.out.find("inputs: 4 (4 with ground truth)") != std::string::npos);
  CHECK(slurp(d / "in.png") == slurp(d / "data.png"));
  // Images only in subfolders are found too.
  fs::create_directories(d.path / "nested/x/y");
  data::write_png(d / "nested/x/y/only.png", random_image(8, 8, 3, 15));
  const RunResult n = run_sample(d, "--ckpt model.bin --input nested --samples-per-input 1 --out n.png --out-dir ns");
  INFO("stdout: " << n.out << "\nstderr: " << n.err);
  CHECK(n.rc == 0);
  CHECK(fs::exists(d / "ns/x/y/only_s0.png"));
}

TEST_CASE("cli sample: same seed gives the same samples, another seed others") {
  SampleCliDir d;
  make_checkpoint(d / "model.bin", 3);
  data::write_png(d / "x.png", random_image(8, 8, 3, 4));
  const char* common = "--ckpt model.bin --input x.png --samples-per-input 2 --batch 2 ";
  REQUIRE(run_sample(d, std::string(common) + "--seed 5 --out-dir s1 --out g1.png").rc == 0);
  REQUIRE(run_sample(d, std::string(common) + "--seed 5 --out-dir s2 --out g2.png").rc == 0);
  REQUIRE(run_sample(d, std::string(common) + "--seed 6 --out-dir s3 --out g3.png").rc == 0);
  for (int k = 0; k < 2; ++k) {
    const std::string name = "/x_s" + std::to_string(k) + ".png";
    const data::Image a = data::read_image(d / ("s1" + name)), b = data::read_image(d / ("s2" + name)),
                      c = data::read_image(d / ("s3" + name));
    CHECK(a.px == b.px);
    CHECK(a.px != c.px);
  }
  CHECK(slurp(d / "g1.png") == slurp(d / "g2.png"));
  // The two samples of one input differ (they are different draws).
  CHECK(data::read_image(d / "s1/x_s0.png").px != data::read_image(d / "s1/x_s1.png").px);
}

TEST_CASE("cli sample: a grey model converts RGB input to grey; several temperatures") {
  SampleCliDir d;
  make_checkpoint(d / "grey.bin", 1);
  data::write_png(d / "rgb.png", random_image(32, 32, 3, 5));
  const RunResult r = run_sample(d,
                                 "--ckpt grey.bin --input rgb.png --samples-per-input 1 "
                                 "--temperature 1.0,0.5 --out g.png --out-dir s --tile 32");
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("converted to grey") != std::string::npos);
  const data::Image grid = data::read_image(d / "g.png");
  CHECK(grid.c == 1);
  CHECK(grid.w == grid_extent(5, 32));  // nearest | bicubic | T=1.0 | T=0.5 | ground truth
  CHECK(grid.h == grid_extent(1, 32));
  for (const char* name : {"s/rgb_t1.0_s0.png", "s/rgb_t0.5_s0.png"}) {
    REQUIRE(fs::exists(d / name));
    const data::Image s = data::read_image(d / name);
    CHECK(s.w == 32);
    CHECK(s.c == 1);
  }
}

TEST_CASE("cli sample: --eval prints the table and writes CSV and JSON") {
  SampleCliDir d;
  make_checkpoint(d / "model.bin", 3);
  make_checkpoint(d / "l2.bin", 3, "l2");
  // Fewer than 20 images: a folder data set puts every image in every split (data/dataset.h).
  fs::create_directories(d.path / "faces");
  for (int i = 0; i < 12; ++i)
    data::write_png(d / ("faces/img" + std::to_string(10 + i) + ".png"), random_image(32, 32, 3, 100 + i));
  const RunResult r = run_sample(d,
                                 "--ckpt model.bin --data folder:faces --cache-dir cache --split test "
                                 "--count 5 --eval --temperature 1.0,0.8 --baseline-ckpt l2.bin "
                                 "--out res/eval.png --batch 4");
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("bits/dim") != std::string::npos);
  CHECK(r.out.find("consistency") != std::string::npos);
  // Table rows: model at each temperature, bicubic, resnet-l2.
  int table_rows = 0;
  for (const std::string& l : lines(r.out))
    for (const char* m : {"model ", "model-A ", "bicubic ", "resnet-l2 "})
      if (l.rfind(m, 0) == 0) ++table_rows;
  CHECK(table_rows == 5);
  const std::vector<std::string> csv = lines(slurp(d / "res/eval.csv"));
  REQUIRE(csv.size() == 6);
  CHECK(csv[0] == "method,temperature,bits_per_dim,psnr,ssim,consistency,outputs");
  CHECK(csv[1].rfind("model,1.0,", 0) == 0);
  CHECK(csv[2].rfind("model,0.8,", 0) == 0);
  CHECK(csv[3].rfind("model-A,,", 0) == 0);   // A alone: bits/dim only (tests/test_cli_nll.cpp)
  CHECK(csv[4].rfind("bicubic,,,", 0) == 0);  // no temperature, no bits/dim
  CHECK(csv[5].rfind("resnet-l2,,,", 0) == 0);
  // bits/dim of an untrained model: finite and positive (about 8 for uniform logits).
  const std::string model_row = csv[1].substr(std::string("model,1.0,").size());
  const double bits = std::stod(model_row.substr(0, model_row.find(',')));
  CHECK(bits > 1.0);
  CHECK(bits < 20.0);
  for (const std::string& row : csv)
    CHECK(row.substr(row.rfind(',') + 1) == (row == csv[0] ? "outputs" : row == csv[3] ? "0" : "5"));
  const std::string js = slurp(d / "res/eval.json");
  CHECK(js.find("\"rows\"") != std::string::npos);
  CHECK(js.find("\"method\": \"resnet-l2\"") != std::string::npos);
  CHECK(js.find("\"temperature\": 0.8") != std::string::npos);
  CHECK(js.find("\"bits_per_dim\": null") != std::string::npos);
  CHECK(fs::exists(d / "res/eval.png"));
}

TEST_CASE("cli sample: every bad flag or file is one error line and a non-zero exit") {
  SampleCliDir d;
  make_checkpoint(d / "model.bin", 3);
  data::write_png(d / "x.png", random_image(8, 8, 3, 6));
  {  // truncated checkpoint
    const std::string full = slurp(d / "model.bin");
    std::ofstream(d / "cut.bin", std::ios::binary) << full.substr(0, full.size() / 2);
  }
  std::ofstream(d / "junk.png") << "this is not an image\n";
  fs::create_directories(d.path / "empty");
  std::ofstream(d / "empty/junk.jpg") << "nor this\n";

  check_one_error_line(run_sample(d, "--ckpt missing.bin --input x.png"), "missing.bin");
  check_one_error_line(run_sample(d, "--ckpt cut.bin --input x.png"), "truncated");
  check_one_error_line(run_sample(d, "--ckpt model.bin --input junk.png"), "junk.png");
  check_one_error_line(run_sample(d, "--ckpt model.bin --input nowhere.png"), "nowhere.png");
  check_one_error_line(run_sample(d, "--ckpt model.bin --input x.png --frobnicate 3"), "--frobnicate");
  check_one_error_line(run_sample(d, "--ckpt model.bin --input x.png --eval"), "--eval");
  check_one_error_line(run_sample(d, "--ckpt model.bin --input x.png --temperature"), "missing value");
  check_one_error_line(run_sample(d, "--ckpt model.bin --input x.png --temperature 0"), "--temperature");
  check_one_error_line(run_sample(d, "--ckpt model.bin --input x.png --temperature 1.0,0.8,1"), "1 given twice");
  check_one_error_line(run_sample(d, "--ckpt model.bin --input x.png --temperature 1.0,,0.8"), "separated by commas");
  check_one_error_line(run_sample(d, "--ckpt model.bin --input x.png --batch two"), "--batch");
  check_one_error_line(run_sample(d, "--ckpt model.bin --input x.png --mode best"), "best");
  check_one_error_line(run_sample(d, "--input x.png"), "--ckpt");
  check_one_error_line(run_sample(d, "--ckpt model.bin"), "--input");
  check_one_error_line(run_sample(d, "--ckpt model.bin --input empty"), "empty");
  if (!cuda::available())
    check_one_error_line(run_sample(d, "--ckpt model.bin --input x.png --device cuda"), cuda::unavailable_reason());

  // A folder with one unreadable file: reported and skipped, the run goes on.
  fs::create_directories(d.path / "mixed");
  data::write_png(d / "mixed/ok.png", random_image(8, 8, 3, 7));
  std::ofstream(d / "mixed/bad.png") << "garbage";
  const RunResult r = run_sample(d, "--ckpt model.bin --input mixed --samples-per-input 1 --out m.png --out-dir ms");
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.rc == 0);
  CHECK(r.err.find("skipped 1 unreadable file") != std::string::npos);
  CHECK(fs::exists(d / "ms/ok_s0.png"));
  CHECK(!fs::exists(d / "ms/bad_s0.png"));

  const RunResult h = run_sample(d, "--help");
  CHECK(h.rc == 0);
  for (const char* flag : {"--ckpt",          "--input",       "--data",
                           "--data-dir",      "--cache-dir",   "--split",
                           "--count",         "--temperature", "--samples-per-input",
                           "--mode",          "--seed",        "--batch",
                           "--naive",         "--device",      "--out",
                           "--out-dir",       "--tile",        "--eval",
                           "--baseline-ckpt", "--threads",     "--skip-existing"})
    CHECK_MESSAGE(h.out.find(flag) != std::string::npos, flag);
}

TEST_CASE("cli sample: --skip-existing draws only the missing batches, and the same images as one run") {
  SampleCliDir d;
  make_checkpoint(d / "model.bin", 3);
  fs::create_directories(d.path / "in/sub");
  for (int i = 0; i < 5; ++i) data::write_png(d / ("in/f" + std::to_string(i) + ".png"), random_image(8, 8, 3, 20 + i));
  data::write_png(d / "in/sub/g.png", random_image(16, 16, 3, 30));
  // 6 inputs x 2 samples = 12 samples in batches of 4: f0 f1 | f2 f3 | f4 sub/g.
  const std::string common = "--ckpt model.bin --input in --samples-per-input 2 --batch 4 --seed 3 ";
  const RunResult full = run_sample(d, common + "--out full.png --out-dir full");
  INFO("stdout: " << full.out << "\nstderr: " << full.err);
  REQUIRE(full.rc == 0);
  const auto want = files_under(d.path / "full");
  REQUIRE(want.size() == 12);
  // Nothing there yet: everything is drawn.
  const RunResult none = run_sample(d, common + "--skip-existing --out none.png --out-dir part");
  REQUIRE(none.rc == 0);
  CHECK(none.out.find("--skip-existing: 0 of 12 sample PNGs already in part/ (0 of 6 inputs done)") !=
        std::string::npos);
  CHECK(files_under(d.path / "part") == want);
  // As if interrupted: the last batch missing, and one file of the second batch.
  fs::remove(d.path / "part/f4_s0.png");
  fs::remove(d.path / "part/f4_s1.png");
  fs::remove(d.path / "part/sub/g_s0.png");
  fs::remove(d.path / "part/sub/g_s1.png");
  fs::remove(d.path / "part/f3_s1.png");
  std::ofstream(d / "part/f2_s0.png") << "not a png";  // unreadable: redrawn
  const auto kept_time = fs::last_write_time(d.path / "part/f0_s0.png");
  const RunResult r = run_sample(d, common + "--skip-existing --out part.png --out-dir part");
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("--skip-existing: 6 of 12 sample PNGs already in part/ (2 of 6 inputs done)") != std::string::npos);
  CHECK(r.out.find("sampled 8 images") != std::string::npos);  // batch 1 skipped, batches 2 and 3 drawn
  CHECK(r.out.find("wrote 6 sample PNGs") != std::string::npos);
  CHECK(files_under(d.path / "part") == want);
  CHECK(fs::last_write_time(d.path / "part/f0_s0.png") == kept_time);  // not rewritten
  // The grid shows the skipped samples too (read back): the same grid as the full run.
  CHECK(slurp(d / "part.png") == slurp(d / "full.png"));
  // Everything there: nothing drawn.
  const RunResult all = run_sample(d, common + "--skip-existing --out all.png --out-dir part");
  CHECK(all.rc == 0);
  CHECK(all.out.find("(6 of 6 inputs done)") != std::string::npos);
  CHECK(all.out.find("sampled 0 images") != std::string::npos);
  CHECK(slurp(d / "all.png") == slurp(d / "full.png"));
}

TEST_CASE("cli sample: SIGINT finishes the batch, its PNGs are whole, exit 130; --skip-existing completes it") {
  SampleCliDir d;
  make_checkpoint(d / "model.bin", 3);
  fs::create_directories(d.path / "in");
  for (int i = 0; i < 40; ++i)
    data::write_png(d / ("in/f" + std::to_string(100 + i) + ".png"), random_image(8, 8, 3, 200 + i));
  // 40 inputs x 5 samples in batches of 2: 100 batches, long enough to interrupt.
  const std::string flags = "--ckpt model.bin --input in --samples-per-input 5 --batch 2 --seed 9 --threads 2";
  std::vector<std::string> argv_s{PRSR_SAMPLE_BIN};
  std::istringstream in(flags + " --out part.png --out-dir part");
  for (std::string w; in >> w;) argv_s.push_back(w);
  std::vector<char*> argv;
  for (auto& w : argv_s) argv.push_back(w.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addchdir_np(&fa, d.path.c_str());
  posix_spawn_file_actions_addopen(&fa, 1, (d / "run.out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, (d / "run.err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ) == 0);
  posix_spawn_file_actions_destroy(&fa);
  struct KillOnExit {  // a failed REQUIRE below must not leave the run behind
    pid_t& pid;
    ~KillOnExit() {
      if (pid > 0 && kill(pid, SIGKILL) == 0) waitpid(pid, nullptr, 0);
    }
  } kill_on_exit{pid};
  // Wait for the first PNGs (30 s at most), then interrupt.
  bool started = false;
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30)) {
    std::error_code ec;
    if (fs::exists(d.path / "part/f100_s1.png", ec)) {
      started = true;
      break;
    }
    int st = 0;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      pid = 0;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  INFO("stdout: " << slurp(d / "run.out") << "\nstderr: " << slurp(d / "run.err"));
  REQUIRE(pid != 0);
  CHECK(started);
  // Signals go to one waiting thread only, not the main thread nor OpenMP's (docs/train.md).
  for (int sig : {SIGINT, SIGTERM}) {
    const std::vector<std::string> open = threads_not_blocking(pid, sig);
    REQUIRE(open.size() == 1);
    CHECK(open[0] != std::to_string(pid));
  }
  kill(pid, SIGINT);
  int st = 0;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  pid = 0;
  REQUIRE(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 130);
  const std::string out = slurp(d / "run.out");
  CHECK(out.find("interrupted (SIGINT): stopped after the batch in progress; wrote ") != std::string::npos);
  CHECK(out.find("--skip-existing to continue") != std::string::npos);
  CHECK(!fs::exists(d / "part.png"));  // no grid from part of the run
  // Whole batches only, every file a whole PNG, no temp file left.
  const auto part = files_under(d.path / "part");
  CHECK(part.size() % 2 == 0);
  CHECK(part.size() < 200);
  for (const auto& [name, bytes] : part) {
    INFO(name);
    CHECK(name.size() > 4);
    CHECK(name.substr(name.size() - 4) == ".png");
    CHECK(data::read_image((d.path / "part" / name).string()).w == 32);
  }
  // Continue: the same files as one uninterrupted run.
  const RunResult r = run_sample(d, flags + " --skip-existing --out part.png --out-dir part");
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.rc == 0);
  const RunResult full = run_sample(d, flags + " --out full.png --out-dir full");
  REQUIRE(full.rc == 0);
  CHECK(files_under(d.path / "part") == files_under(d.path / "full"));
  CHECK(slurp(d / "part.png") == slurp(d / "full.png"));
}

TEST_CASE("cli sample: unusable output folder, wrong checkpoint kind, bad --threads: one error line, nothing drawn") {
  SampleCliDir d;
  make_checkpoint(d / "model.bin", 3);
  make_checkpoint(d / "l2.bin", 3, "l2");
  data::write_png(d / "x.png", random_image(8, 8, 3, 6));
  std::ofstream(d / "afile") << "a file, not a folder\n";
  // An output folder that cannot be created or written: the error comes before sampling.
  for (const char* flags : {"--out-dir afile/samples", "--out afile/grid.png"}) {
    const RunResult r = run_sample(d, std::string("--ckpt model.bin --input x.png ") + flags);
    check_one_error_line(r, "cannot write to afile");
    CHECK(r.out.find("sampled") == std::string::npos);
  }
  // Checkpoints of the wrong kind.
  check_one_error_line(run_sample(d, "--ckpt x.png --input x.png"), "not a prsr checkpoint");
  fs::create_directories(d.path / "faces");
  for (int i = 0; i < 3; ++i) data::write_png(d / ("faces/i" + std::to_string(i) + ".png"), random_image(32, 32, 3, i));
  check_one_error_line(
      run_sample(d, "--ckpt model.bin --data folder:faces --cache-dir c --eval --baseline-ckpt model.bin"),
      "--baseline-ckpt wants a ResNet-L2 model");
  // Flags.
  check_one_error_line(run_sample(d, "--ckpt model.bin --input x.png --threads -1"), "--threads");
  check_one_error_line(run_sample(d, "--ckpt model.bin --input x.png --threads many"), "--threads");
  check_one_error_line(run_sample(d, "--ckpt model.bin --data folder:faces --cache-dir c --eval --skip-existing"),
                       "--skip-existing");
  // --threads 1 works and says so.
  const RunResult one = run_sample(d, "--ckpt model.bin --input x.png --samples-per-input 1 --threads 1");
  CHECK(one.rc == 0);
  CHECK(one.out.find("batch 16, 1 thread\n") != std::string::npos);
}
