// ./build/train end to end: the real binary on a tiny model and a tiny Fashion-MNIST-format
// data set written here (48 images: 44 train, 4 valid), every run in its own temp folder.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "data/image.h"
#include "engine/backend.h"
#include "model/checkpoint.h"
#include "tests/train_sandbox.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using prsr::test::slurp;
using prsr::test::TrainSandbox;
using prsr::test::write_idx_gz;

// A small model and a fast schedule: every run takes about a second.
const std::string kTiny =
    " --channels 4 --layers 1 --head 16 --cond-channels 4 --cond-blocks 1 --batch 4 --threads 1"
    " --eval-every 0 --sample-every 0 --print-every 1 --valid-count 4";

int count_lines(const std::string& s) {
  int n = 0;
  for (char ch : s) n += ch == '\n';
  return n;
}

// The threads of process `pid` that do not block `sig` (from /proc/<pid>/task/*/status, SigBlk).
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

// A temp folder with a data set (tests/train_sandbox.h); train runs in it.
struct Sandbox : TrainSandbox {
  Sandbox() : TrainSandbox("prsr_cli_train") {}
  // Runs train with `args`; stdout / stderr to files `tag`.out / `tag`.err. Returns the exit code.
  int train(const std::string& args, const std::string& tag = "run") {
    return run(std::string(PRSR_TRAIN_BIN) + " " + args, tag);
  }
  std::string out(const std::string& tag = "run") const { return TrainSandbox::out(tag); }
  std::string err(const std::string& tag = "run") const { return TrainSandbox::err(tag); }
};

// One line, "error: ...".
void check_one_error_line(const std::string& err) {
  INFO("stderr: " << err);
  CHECK(err.rfind("error: ", 0) == 0);
  CHECK(count_lines(err) == 1);
}

struct Loaded {
  long step = -1;
  std::vector<float> params, s1, s2;
};

Loaded load(const std::string& path) {
  const prsr::CheckpointInfo info = prsr::read_checkpoint_info(path);
  prsr::Model<float> model(info.model, prsr::Device::Cpu);
  prsr::Optimizer<float> opt(info.optim, model.params);
  Loaded L;
  L.step = prsr::load_checkpoint(path, model, &opt).step;
  L.params = model.params.download();
  L.s1 = opt.download_state(0);
  L.s2 = opt.download_state(1);
  return L;
}

}  // namespace

TEST_CASE("cli train: --help lists every flag; bad flags, values and numbers are one error line") {
  Sandbox sb;
  CHECK(sb.train("--help") == 0);
  const std::string help = sb.out();
  for (const char* flag : {"--data",
                           "--data-dir",
                           "--cache-dir",
                           "--device",
                           "--steps",
                           "--batch",
                           "--out",
                           "--ckpt",
                           "--resume",
                           "--overwrite",
                           "--seed",
                           "--threads",
                           "--eval-every",
                           "--sample-every",
                           "--ckpt-every",
                           "--print-every",
                           "--valid-count",
                           "--sample-rows",
                           "--channels",
                           "--layers",
                           "--kernel",
                           "--first-kernel",
                           "--head",
                           "--cond-channels",
                           "--cond-blocks",
                           "--no-batch-norm",
                           "--loss",
                           "--optimizer",
                           "--lr",
                           "--decay",
                           "--momentum",
                           "--eps",
                           "--beta1",
                           "--beta2",
                           "--lr-halve-every",
                           "--help"}) {
    INFO(std::string(flag));
    const size_t at = help.find(std::string("\n  ") + flag);
    REQUIRE(at != std::string::npos);
    const char next = help[at + 3 + std::strlen(flag)];
    CHECK((next == ' ' || next == ','));
  }
  CHECK(help.find("\n  --precision fp32|bf16") != std::string::npos);
  CHECK(help.find("[default: 32]") != std::string::npos);
  CHECK(help.find("[default: 0.0004]") != std::string::npos);

  const std::string out = " --out " + sb.dir + "/o";
  struct Bad {
    std::string args, says;
  };
  for (const Bad& b : std::vector<Bad>{{"--frobnicate", "unknown flag '--frobnicate'"},
                                       {"--steps", "--steps needs a value"},
                                       {"--steps ten", "'ten' is not an integer"},
                                       {"--lr 1e-3x", "'1e-3x' is not a number"},
                                       {"--batch 0", "out of range"},
                                       {"--device tpu", "'tpu' is not cpu or cuda"},
                                       {"--precision fp16", "'fp16' is not fp32 or bf16"},
                                       {"--loss l1", "'l1' is not pixel or l2"},
                                       {"--kernel 4", "--kernel must be odd"},
                                       {"--data mnist", "unknown data set 'mnist'"},
                                       {"--resume=yes", "--resume takes no value"},
                                       {"stray", "unexpected argument 'stray'"}}) {
    INFO(b.args);
    CHECK(sb.train(b.args + out) == 2);
    check_one_error_line(sb.err());
    CHECK(sb.err().find(b.says) != std::string::npos);
  }
  CHECK(!fs::exists(sb.dir + "/o"));
  if (!prsr::cuda::available()) {
    CHECK(sb.train("--device cuda" + sb.data_flags() + out) == 2);
    check_one_error_line(sb.err());
    CHECK(sb.err().find("CUDA") != std::string::npos);
  }
  // bf16 where the CPU lacks the instructions: one line naming them, nothing created
  if (!prsr::cpu::bf16_supported()) {
    CHECK(sb.train("--precision bf16" + sb.data_flags() + out) == 2);
    check_one_error_line(sb.err());
    CHECK(sb.err().find("AVX512_BF16") != std::string::npos);
    CHECK(sb.err().find("AMX-BF16") != std::string::npos);
    CHECK(!fs::exists(sb.dir + "/o"));
  } else {
    MESSAGE("this CPU has bf16 instructions: the refusal of --precision bf16 is not tested here");
  }
}

TEST_CASE("cli train: a missing data set says where to get it; nothing is created") {
  Sandbox sb;
  CHECK(sb.train("--data celeba --data-dir /nonexistent/celeba --out " + sb.dir + "/o") == 1);
  check_one_error_line(sb.err());
  CHECK(sb.err().find("/nonexistent/celeba") != std::string::npos);
  CHECK(sb.err().find("download") != std::string::npos);
  CHECK(!fs::exists(sb.dir + "/o"));
  CHECK(sb.train("--data fashion-mnist --data-dir /nonexistent/fm --out " + sb.dir + "/o") == 1);
  check_one_error_line(sb.err());
  CHECK(sb.err().find("apt-get install dataset-fashion-mnist") != std::string::npos);
}

TEST_CASE("cli train: an unwritable output folder is an error before training; nothing is created") {
  Sandbox sb;
  const std::string file = sb.dir + "/a_file";
  std::ofstream(file) << "keep me";
  CHECK(sb.train(sb.data_flags() + kTiny + " --steps 2 --out " + file + "/run") == 1);
  check_one_error_line(sb.err());
  CHECK(sb.err().find("not a folder") != std::string::npos);
  CHECK(sb.out().find("step 1") == std::string::npos);
  CHECK(slurp(file) == "keep me");
  CHECK(!fs::exists(sb.dir + "/cache"));  // refused before any data was read
  // The checkpoint's folder too.
  CHECK(sb.train(sb.data_flags() + kTiny + " --steps 2 --out " + sb.dir + "/o --ckpt " + file + "/m.bin") == 1);
  check_one_error_line(sb.err());
  CHECK(!fs::exists(sb.dir + "/o"));
  // A folder where no file can be created (even by root): the reason is the system's.
  CHECK(sb.train(sb.data_flags() + kTiny + " --steps 2 --out /proc/prsr-no-such-run") == 1);
  check_one_error_line(sb.err());
  CHECK(sb.err().find("cannot create a file in /proc (") != std::string::npos);
}

TEST_CASE("cli train: a run writes log.csv, sample grids and a checkpoint; nothing is overwritten") {
  Sandbox sb;
  const std::string o = sb.dir + "/o";
  const std::string args = sb.data_flags() + kTiny + " --steps 4 --sample-every 2 --eval-every 2 --out " + o;
  REQUIRE(sb.train(args) == 0);
  const std::string out = sb.out();
  INFO(out << sb.err());
  for (const char* s :
       {"fashion-mnist (C=1): 44 train / 4 valid", "parameters", "GFLOP forward / image", "GFLOP training / image",
        "run folder", "step 4/4", "bits/dim", "img/s", "ms/step", "GFLOP/s", "ETA", "valid", "done"})
    CHECK(out.find(s) != std::string::npos);
  for (const char* f :
       {"/model.bin", "/log.csv", "/samples_step0000002.png", "/samples_step0000004.png", "/samples_latest.png"})
    CHECK(fs::exists(o + f));
  const prsr::data::Image grid = prsr::data::read_image(o + "/samples_latest.png");
  CHECK(grid.h >= 4 * 32);  // 4 validation rows
  CHECK(grid.w >= 6 * 32);  // input | 2 x tau 1.0 | 2 x tau 0.8 | truth

  std::istringstream log(slurp(o + "/log.csv"));
  std::string line;
  std::getline(log, line);
  CHECK(line == "step,loss,nll_bits,ce_a_bits,valid_loss,valid_bits,images_per_s,ms_per_step,lr,time");
  std::vector<std::string> rows;
  while (std::getline(log, line)) rows.push_back(line);
  REQUIRE(rows.size() == 4);
  CHECK(rows[1].rfind("2,", 0) == 0);
  CHECK(rows[1].find(",,") == std::string::npos);   // step 2 has held-out figures
  CHECK(rows[0].find(",,,") != std::string::npos);  // step 1 has none
  CHECK(load(o + "/model.bin").step == 4);

  // A second run into the same folder is refused; the checkpoint is untouched.
  const std::string before = slurp(o + "/model.bin");
  CHECK(sb.train(args, "again") == 1);
  check_one_error_line(sb.err("again"));
  CHECK(sb.err("again").find("already exists") != std::string::npos);
  CHECK(sb.err("again").find("--overwrite") != std::string::npos);
  CHECK(slurp(o + "/model.bin") == before);
  CHECK(sb.train(args + " --overwrite --steps 1", "over") == 0);
  CHECK(load(o + "/model.bin").step == 1);
}

TEST_CASE("cli train: --resume is bit-identical to an uninterrupted run") {
  Sandbox sb;
  // 44 images, batch 4: 11 steps per epoch, so 14 steps cross an epoch boundary. Evaluation and
  // sampling must not disturb training: the first half of B evaluates and samples at step 7,
  // A does not.
  const std::string common =
      sb.data_flags() + kTiny + " --ckpt-every 5 --eval-every 4 --sample-every 5 --sample-rows 2";
  REQUIRE(sb.train(common + " --steps 14 --out " + sb.dir + "/a", "a") == 0);
  REQUIRE(sb.train(common + " --steps 7 --out " + sb.dir + "/b", "b1") == 0);
  REQUIRE(sb.train(common + " --steps 14 --resume --out " + sb.dir + "/b", "b2") == 0);
  INFO(sb.out("b2") << sb.err("b2"));
  CHECK(sb.out("b2").find("steps      7 -> 14") != std::string::npos);
  const Loaded a = load(sb.dir + "/a/model.bin"), b = load(sb.dir + "/b/model.bin");
  CHECK(a.step == 14);
  CHECK(b.step == 14);
  CHECK(a.params == b.params);
  CHECK(a.s1 == b.s1);
  CHECK(a.s2 == b.s2);
  // log.csv holds every step once.
  const std::string log = slurp(sb.dir + "/b/log.csv");
  CHECK(count_lines(log) == 15);

  // Flags that contradict the checkpoint are refused; so is another data set.
  CHECK(sb.train(common + " --steps 20 --resume --channels 8 --out " + sb.dir + "/b", "c") == 2);
  check_one_error_line(sb.err("c"));
  CHECK(sb.err("c").find("--channels 8 contradicts") != std::string::npos);
  CHECK(sb.train(common + " --steps 20 --resume --batch 8 --out " + sb.dir + "/b", "d") == 2);
  check_one_error_line(sb.err("d"));
  CHECK(sb.train(kTiny + " --data celeba --steps 20 --resume --out " + sb.dir + "/b --ckpt " + sb.dir + "/b/model.bin",
                 "e") == 2);
  check_one_error_line(sb.err("e"));
  CHECK(sb.err("e").find("trained on fashion-mnist") != std::string::npos);
  CHECK(load(sb.dir + "/b/model.bin").params == b.params);

  // Without --out, a resumed run keeps writing beside its checkpoint.
  REQUIRE(sb.train(common + " --steps 16 --resume --ckpt " + sb.dir + "/b/model.bin", "f") == 0);
  CHECK(load(sb.dir + "/b/model.bin").step == 16);
  CHECK(count_lines(slurp(sb.dir + "/b/log.csv")) == 17);
}

TEST_CASE("cli train: a truncated checkpoint on --resume is one error line and is left as it is") {
  Sandbox sb;
  const std::string o = sb.dir + "/o";
  REQUIRE(sb.train(sb.data_flags() + kTiny + " --steps 2 --out " + o) == 0);
  const std::string full = slurp(o + "/model.bin");
  const std::string cut = full.substr(0, full.size() / 2);
  std::ofstream(o + "/model.bin", std::ios::binary | std::ios::trunc) << cut;
  CHECK(sb.train(sb.data_flags() + kTiny + " --steps 4 --resume --out " + o) == 1);
  check_one_error_line(sb.err());
  CHECK(sb.err().find("truncated") != std::string::npos);
  CHECK(slurp(o + "/model.bin") == cut);
  // No checkpoint at all.
  CHECK(sb.train(sb.data_flags() + kTiny + " --steps 4 --resume --out " + sb.dir + "/none") == 1);
  check_one_error_line(sb.err());
  CHECK(sb.err().find("no checkpoint") != std::string::npos);
}

TEST_CASE("cli train: a NaN loss stops the run, names the step and keeps the last good checkpoint") {
  Sandbox sb;
  const std::string o = sb.dir + "/o";
  CHECK(sb.train(sb.data_flags() + kTiny + " --steps 10 --ckpt-every 1 --debug-nan-at-step 3 --out " + o) == 1);
  const std::string err = sb.err();
  check_one_error_line(err);
  CHECK(err.find("NaN at step 3") != std::string::npos);
  CHECK(err.find("last good checkpoint") != std::string::npos);
  const Loaded L = load(o + "/model.bin");
  CHECK(L.step == 3);
  bool finite = true;
  for (float v : L.params) finite = finite && std::isfinite(v);
  CHECK(finite);
}

TEST_CASE("cli train: SIGINT finishes the step, saves a checkpoint and exits cleanly") {
  Sandbox sb;
  const std::string o = sb.dir + "/o";
  // 2 threads: OpenMP's worker must block the signals too.
  const std::string args = sb.data_flags() + kTiny + " --threads 2 --steps 1000000 --ckpt-every 0 --out " + o;
  std::vector<std::string> argv_s{PRSR_TRAIN_BIN};
  std::istringstream in(args);
  for (std::string a; in >> a;) argv_s.push_back(a);
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, (sb.dir + "/run.out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, (sb.dir + "/run.err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ) == 0);
  posix_spawn_file_actions_destroy(&fa);
  // A failed REQUIRE below must not leave a 1,000,000-step run behind.
  struct KillOnExit {
    pid_t& pid;
    ~KillOnExit() {
      if (pid > 0 && kill(pid, SIGKILL) == 0) waitpid(pid, nullptr, 0);
    }
  } kill_on_exit{pid};

  // Wait until the log shows at least two steps (30 s at most), then interrupt.
  bool progressed = false;
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30)) {
    if (count_lines(slurp(o + "/log.csv")) >= 3) {
      progressed = true;
      break;
    }
    int st = 0;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      pid = 0;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  INFO(sb.out() << sb.err());
  REQUIRE(pid != 0);
  CHECK(progressed);
  // No computing thread may take the signal (oneDNN 2.6's JIT GEMMs point rsp into the heap,
  // where a handler's frame then lands: docs/train.md): all threads block SIGINT and SIGTERM but one, which waits for
  // them in sigwait (the kernel unblocks them while it waits), and which is not the main thread.
  for (int sig : {SIGINT, SIGTERM}) {
    const std::vector<std::string> open = threads_not_blocking(pid, sig);
    INFO("signal " << sig << ": " << open.size() << " threads do not block it");
    REQUIRE(open.size() == 1);
    CHECK(open[0] != std::to_string(pid));
  }
  kill(pid, SIGINT);
  int st = 0;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  pid = 0;  // reaped
  INFO("wait status " << st << (WIFSIGNALED(st) ? " (killed by signal " + std::to_string(WTERMSIG(st)) + ")" : ""));
  REQUIRE(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 130);
  CHECK(sb.out().find("interrupted (SIGINT) at step") != std::string::npos);
  CHECK(sb.err().empty());
  const Loaded L = load(o + "/model.bin");
  CHECK(L.step >= 2);
  // It can be resumed from there.
  CHECK(sb.train(sb.data_flags() + kTiny + " --steps " + std::to_string(L.step + 1) + " --resume --out " + o,
                 "resume") == 0);
  CHECK(load(o + "/model.bin").step == L.step + 1);
}

TEST_CASE("cli train: --loss l2 trains the conditioning network alone") {
  Sandbox sb;
  const std::string o = sb.dir + "/o";
  REQUIRE(sb.train(sb.data_flags() + kTiny + " --loss l2 --steps 3 --eval-every 3 --sample-every 3 --out " + o) == 0);
  const std::string out = sb.out();
  INFO(out << sb.err());
  CHECK(out.find("loss=l2") != std::string::npos);
  CHECK(out.find("mse") != std::string::npos);
  CHECK(out.find("valid MSE") != std::string::npos);
  CHECK(out.find("bits/dim") == std::string::npos);
  CHECK(fs::exists(o + "/samples_latest.png"));
  const Loaded L = load(o + "/model.bin");
  CHECK(L.step == 3);
}

TEST_CASE("cli train: a folder of 1, 2, 24 or 100 images trains (small folders: docs/data.md)") {
  Sandbox sb;
  for (int n : {1, 2, 24, 100}) {
    CAPTURE(n);
    const std::string dir = sb.dir + "/imgs" + std::to_string(n);
    fs::create_directories(dir + "/sub");
    // Half in a subfolder (the folder is read recursively). Named photo<i>.jpg (PNG content: the
    // content decides the format) because with these 24 names the path hash puts every image
    // in train, the case that stopped train before; the split rule's repair fills valid and test.
    for (int i = 0; i < n; ++i) {
      prsr::data::Image im;
      im.w = 32 + i % 5;
      im.h = 32;
      im.c = 3;
      im.px.resize(size_t(im.w) * im.h * 3);
      for (size_t k = 0; k < im.px.size(); ++k) im.px[k] = uint8_t((k * 31 + i * 17) % 251);
      prsr::data::write_png(dir + (i % 2 ? "/sub" : "") + "/photo" + std::to_string(i) + ".jpg", im);
    }
    const std::string tag = "f" + std::to_string(n);
    const int rc = sb.train(" --data folder:" + dir + " --cache-dir " + sb.dir + "/cache" + kTiny +
                                " --steps 2 --eval-every 2 --out " + sb.dir + "/run" + std::to_string(n),
                            tag);
    const std::string out = sb.out(tag);
    INFO(out << sb.err(tag));
    REQUIRE(rc == 0);
    CHECK(out.find("step 2/2") != std::string::npos);
    CHECK(out.find("eval       step 2: valid") != std::string::npos);
    // Under 20 images every image is in every split, and the banner says valid is not held out;
    // from 20 on each image is in one split and every split has at least one.
    const bool shared = n < 20;
    CHECK((out.find("not held out") != std::string::npos) == shared);
    if (shared) {
      CHECK(out.find(std::to_string(n) + " train / " + std::to_string(n) + " valid") != std::string::npos);
    } else {
      const size_t at = out.find(" train / ");
      REQUIRE(at != std::string::npos);
      const int train_n = std::stoi(out.substr(out.rfind(' ', at - 1) + 1));
      const int valid_n = std::stoi(out.substr(at + 9));
      CHECK(train_n >= 1);
      CHECK(valid_n >= 1);
      CHECK(train_n + valid_n < n);  // the test split holds the rest, at least one
      if (n == 24) CHECK(out.find("22 train / 1 valid") != std::string::npos);
    }
  }
}
