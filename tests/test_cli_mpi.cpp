// ./build/train under mpirun (docs/distributed.md): N ranks on slices of every global batch,
// with averaged gradients and synchronised batch norm, train what one process trains on the
// global batch. Every case skips with a visible message when mpirun is missing or the build has
// no MPI (then it checks that train refuses to run as several ranks). Tiny model, a second a run.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "engine/backend.h"
#include "engine/ref/kernels.h"
#include "engine/sync_bn.h"
#include "model/checkpoint.h"
#include "tests/train_sandbox.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using prsr::test::kMpirun;
using prsr::test::slurp;
using prsr::test::TrainSandbox;
using prsr::test::write_idx_gz;

// Batch norm is on (the default) in the conditioning network; lr 0.01 so that the parameters move;
// held-out evaluation (split over the ranks) at the last step.
const std::string kTiny =
    " --channels 4 --layers 1 --head 16 --cond-channels 4 --cond-blocks 1 --threads 1 --lr 0.01"
    " --sample-every 0 --print-every 1 --valid-count 8";

// Every process below `root` (children, their children, ...), from /proc's parent fields.
std::vector<pid_t> descendants(pid_t root) {
  std::vector<std::pair<pid_t, pid_t>> parent_of;  // (pid, ppid)
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream st("/proc/" + name + "/stat");
    std::string line;
    std::getline(st, line);
    const size_t close = line.rfind(')');  // the command name may hold spaces: fields follow ')'
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 1));
    std::string state;
    long ppid = 0;
    if (rest >> state >> ppid) parent_of.push_back({pid_t(std::stol(name)), pid_t(ppid)});
  }
  std::vector<pid_t> out{root};
  for (size_t i = 0; i < out.size(); ++i)
    for (const auto& [p, pp] : parent_of)
      if (pp == out[i]) out.push_back(p);
  out.erase(out.begin());
  return out;
}

bool have_mpirun() { return std::system("command -v mpirun >/dev/null 2>&1") == 0; }

struct Sandbox : TrainSandbox {
  Sandbox() : TrainSandbox("prsr_cli_mpi") {}
  // train with `args` on `ranks` processes (1: no mpirun). Returns the exit code.
  int train(int ranks, const std::string& args, const std::string& tag) {
    const std::string launch = ranks > 1 ? kMpirun + " -np " + std::to_string(ranks) + " " : "";
    return run(launch + PRSR_TRAIN_BIN + data_flags() + kTiny + " " + args + " </dev/null", tag);
  }
};

// True when this build's train runs as several ranks; false (with a visible MESSAGE, after
// checking the single-process build's refusal) when it cannot be tested here.
bool mpi_usable(Sandbox& sb) {
#if defined(__SANITIZE_ADDRESS__)
  // Open MPI installs its own memory hooks and leaves MPI_Init's allocations behind; whether its
  // ranks run cleanly under AddressSanitizer has not been checked, so the sanitizer build tests
  // engine/sync_bn.h (the case below) but not the mpirun runs, which the release build covers.
  MESSAGE("skipped under AddressSanitizer: mpirun runs are tested by the release build");
  return false;
#endif
  if (!have_mpirun()) {
    MESSAGE("skipped: mpirun not found (apt-get install openmpi-bin libopenmpi-dev)");
    return false;
  }
  const int rc = sb.train(2, "--batch 4 --steps 1 --out " + sb.dir + "/probe", "probe");
  if (sb.err("probe").find("single-process build") != std::string::npos) {
    CHECK(rc != 0);
    CHECK_FALSE(fs::exists(sb.dir + "/probe"));
    MESSAGE("skipped: this train has no MPI (meson -Dmpi=enabled); checked that it refuses to run as 2 ranks");
    return false;
  }
  INFO(sb.out("probe") << sb.err("probe"));
  REQUIRE(rc == 0);
  return true;
}

// Column `col` of log.csv (1: loss, 4: valid_loss), one value per row (NaN for an empty cell).
std::vector<double> column(const std::string& log_csv, int col) {
  std::istringstream in(slurp(log_csv));
  std::vector<double> v;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream cells(line);
    std::string cell;
    for (int i = 0; i <= col; ++i) std::getline(cells, cell, ',');
    v.push_back(cell.empty() ? NAN : std::stod(cell));
  }
  return v;
}
std::vector<double> losses(const std::string& log_csv) { return column(log_csv, 1); }

struct Loaded {
  long step = -1;
  std::vector<float> params;  // trainable ones, then the buffers (batch-norm running statistics)
  size_t trainable = 0;
};

Loaded load(const std::string& path) {
  const prsr::CheckpointInfo info = prsr::read_checkpoint_info(path);
  prsr::Model<float> model(info.model, prsr::Device::Cpu);
  prsr::Optimizer<float> opt(info.optim, model.params);
  Loaded L;
  L.step = prsr::load_checkpoint(path, model, &opt).step;
  L.params = model.params.download();
  L.trainable = model.params.trainable_count();
  return L;
}

// Tolerance. The ranks sum their slices' gradients and batch-norm statistics in another order
// than one process does (per rank, then across ranks), so the results differ by float rounding:
// ~1e-7 relative per sum. RMSProp divides each gradient by its running RMS, so a step moves every
// parameter by ~lr = 0.01 whatever the gradient's size, and a rounding-level gradient difference
// becomes a parameter difference of ~lr x (relative difference of g / rms), larger where g is
// tiny. Measured here: max |diff| 3.5e-6 (parameters) and 1.2e-7 (running statistics) after 6
// steps; 1e-4 leaves a margin and is still 50x below what a wrong computation makes (checked by
// breaking it deliberately: batch norm with per-rank statistics 4.9e-3 / 4.2e-2 and losses off by
// 1e-2; every rank on the same slice 8e-3 / 4e-2). The log's loss has 6 decimals: 1e-5.
constexpr double kParamTol = 1e-4, kLossTol = 1e-5;

// The held-out loss of the last row (evaluated at the last step).
void check_same_valid(const std::string& log_a, const std::string& log_b) {
  const double a = column(log_a, 4).back(), b = column(log_b, 4).back();
  INFO("valid loss " << a << " vs " << b);
  CHECK(std::isfinite(a));
  CHECK(std::fabs(a - b) < kLossTol);
}

void check_same(const Loaded& a, const Loaded& b) {
  REQUIRE(a.params.size() == b.params.size());
  CHECK(a.step == b.step);
  double worst = 0, worst_buf = 0;
  for (size_t i = 0; i < a.params.size(); ++i) {
    const double d = std::fabs(double(a.params[i]) - double(b.params[i]));
    (i < a.trainable ? worst : worst_buf) = std::max(i < a.trainable ? worst : worst_buf, d);
  }
  INFO("max |diff| parameters " << worst << ", running statistics and masks " << worst_buf);
  CHECK(worst < kParamTol);
  CHECK(worst_buf < kParamTol);
}

void check_same_losses(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("step " << i + 1 << ": " << a[i] << " vs " << b[i]);
    CHECK(std::fabs(a[i] - b[i]) < kLossTol);
  }
}

}  // namespace

TEST_CASE("cli mpi: N ranks train what 1 process trains on the global batch (synchronised batch norm)") {
  Sandbox sb;
  if (!mpi_usable(sb)) return;
  // {ranks, global batch}: 2 x 2, and odd slices: 2 x 3 and 3 x 2.
  for (auto [ranks, batch] : std::vector<std::pair<int, int>>{{2, 4}, {2, 6}, {3, 6}}) {
    CAPTURE(ranks);
    CAPTURE(batch);
    const std::string tag = std::to_string(ranks) + "x" + std::to_string(batch);
    const std::string flags = "--batch " + std::to_string(batch) + " --steps 6 --out ";
    REQUIRE(sb.train(1, flags + sb.dir + "/one" + tag, "one" + tag) == 0);
    const int rc = sb.train(ranks, flags + sb.dir + "/many" + tag, "many" + tag);
    INFO(sb.out("many" + tag) << sb.err("many" + tag));
    REQUIRE(rc == 0);
    check_same_losses(losses(sb.dir + "/one" + tag + "/log.csv"), losses(sb.dir + "/many" + tag + "/log.csv"));
    check_same_valid(sb.dir + "/one" + tag + "/log.csv", sb.dir + "/many" + tag + "/log.csv");
    check_same(load(sb.dir + "/one" + tag + "/model.bin"), load(sb.dir + "/many" + tag + "/model.bin"));
  }
}

TEST_CASE("cli mpi: only rank 0 prints and writes the run folder; --batch not divisible is a usage error") {
  Sandbox sb;
  if (!mpi_usable(sb)) return;
  const std::string o = sb.dir + "/o";
  REQUIRE(sb.train(2, "--batch 4 --steps 3 --ckpt-every 2 --out " + o, "a") == 0);
  const std::string out = sb.out("a");
  INFO(out << sb.err("a"));
  // One banner, one last line, a single header and one row per step in log.csv.
  auto count = [](const std::string& s, const std::string& what) {
    int n = 0;
    for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
    return n;
  };
  CHECK(count(out, "prsr train\n") == 1);
  CHECK(count(out, "ranks      2 MPI processes") == 1);
  CHECK(count(out, "done ") == 1);
  CHECK(count(slurp(o + "/log.csv"), "step,loss") == 1);
  CHECK(losses(o + "/log.csv").size() == 3);
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(o)) files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  CHECK(files == std::vector<std::string>{"log.csv", "model.bin"});  // no temp files left by a second writer

  CHECK(sb.train(2, "--batch 5 --steps 1 --out " + sb.dir + "/b", "b") == 2);
  CHECK(sb.err("b").find("--batch 5 is the global batch and must be divisible by the 2 ranks") != std::string::npos);
  CHECK_FALSE(fs::exists(sb.dir + "/b"));
}

TEST_CASE("cli mpi: a run checkpointed on 2 ranks resumes on 1 rank as if it had run on 1 rank all along") {
  Sandbox sb;
  if (!mpi_usable(sb)) return;
  REQUIRE(sb.train(1, "--batch 4 --steps 6 --out " + sb.dir + "/one", "one") == 0);
  REQUIRE(sb.train(2, "--batch 4 --steps 3 --out " + sb.dir + "/two", "two") == 0);
  const int rc = sb.train(1, "--batch 4 --steps 6 --resume --out " + sb.dir + "/two", "resume");
  INFO(sb.out("resume") << sb.err("resume"));
  REQUIRE(rc == 0);
  check_same_losses(losses(sb.dir + "/one/log.csv"), losses(sb.dir + "/two/log.csv"));
  check_same_valid(sb.dir + "/one/log.csv", sb.dir + "/two/log.csv");
  check_same(load(sb.dir + "/one/model.bin"), load(sb.dir + "/two/model.bin"));
}

namespace {

// One mpirun job started in the background (stdout / stderr to <dir>/<tag>.out / .err), for the
// fault tests. On destruction (a failed REQUIRE included) nothing is left behind: mpirun's ranks
// (which a SIGKILLed mpirun cannot stop itself) and any process handed to also_kill() are killed
// first (SIGKILL ends stopped processes too), then mpirun, and it is reaped.
struct Job {
  Sandbox& sb;
  std::string tag;
  pid_t pid = 0;
  std::vector<pid_t> extra;
  Job(Sandbox& sb, int ranks, const std::string& args, const std::string& tag, const std::string& env = "")
      : sb(sb), tag(tag) {
    const std::string cmd = "exec env " + env + " " + kMpirun + " -np " + std::to_string(ranks) + " " + PRSR_TRAIN_BIN +
                            sb.data_flags() + kTiny + " " + args + " >" + sb.dir + "/" + tag + ".out 2>" + sb.dir +
                            "/" + tag + ".err </dev/null";
    const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
    REQUIRE(posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char* const*>(argv), environ) == 0);
  }
  ~Job() {
    std::vector<pid_t> victims = extra;
    if (pid > 0)
      for (pid_t child : descendants(pid)) victims.push_back(child);
    for (pid_t v : victims) kill(v, SIGKILL);
    if (pid > 0 && kill(pid, SIGKILL) == 0) waitpid(pid, nullptr, 0);
  }
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;
  void also_kill(pid_t p) { extra.push_back(p); }
  std::string log() const { return sb.out(tag) + sb.err(tag); }

  // Rank r: the child of mpirun whose environment says OMPI_COMM_WORLD_RANK=r.
  pid_t find_rank(int r) const {
    for (const auto& e : fs::directory_iterator("/proc")) {
      const std::string name = e.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::istringstream st(slurp("/proc/" + name + "/stat"));
      std::string f;
      for (int i = 0; i < 4 && st >> f; ++i) {}
      if (f != std::to_string(pid)) continue;  // the 4th field: the parent
      std::string env = slurp("/proc/" + name + "/environ");
      std::replace(env.begin(), env.end(), '\0', '\n');
      if (("\n" + env).find("\nOMPI_COMM_WORLD_RANK=" + std::to_string(r) + "\n") != std::string::npos)
        return pid_t(std::stoi(name));
    }
    return 0;
  }

  // Waits (at most `seconds`) until `out`/model.bin exists and log.csv has `rows` rows; returns
  // rank r's pid then, 0 when the time ran out or the job ended first.
  pid_t wait_running(const std::string& out, long rows, int r, int seconds) {
    return wait_for(out, rows, true, r, seconds);
  }
  // The same without waiting for a checkpoint.
  pid_t wait_rows(const std::string& out, long rows, int r, int seconds) {
    return wait_for(out, rows, false, r, seconds);
  }
  // wait_rows for rank 0, then ranks 0 and 1 (0 where not found), each handed to also_kill()
  // (reparented once mpirun is gone: killed by pid on a failed check).
  std::pair<pid_t, pid_t> both_ranks(const std::string& out, long rows, int seconds) {
    const pid_t r0 = wait_rows(out, rows, 0, seconds), r1 = find_rank(1);
    for (pid_t p : {r0, r1})
      if (p > 0) also_kill(p);
    return {r0, r1};
  }
  pid_t wait_for(const std::string& out, long rows, bool ckpt, int r, int seconds) {
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(seconds)) {
      const std::string log = slurp(out + "/log.csv");
      if ((!ckpt || fs::exists(out + "/model.bin")) && std::count(log.begin(), log.end(), '\n') >= rows + 1)
        if (pid_t p = find_rank(r)) return p;
      if (ended_now(nullptr)) return 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return 0;
  }

  // True (and the status in *st) when mpirun has ended within `seconds`.
  bool wait_end(int seconds, int* st) {
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(seconds)) {
      if (ended_now(st)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

 private:
  bool ended_now(int* st) {
    int s = 0;
    if (pid <= 0 || waitpid(pid, &s, WNOHANG) != pid) return false;
    pid = 0;
    if (st) *st = s;
    return true;
  }
};

// A process that is still there and not a zombie ('Z') or dead ('X'): its state letter, else 0.
char live_state(pid_t p) {
  const std::string stat = slurp("/proc/" + std::to_string(p) + "/stat");
  const size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return 0;
  const char state = stat[close + 2];
  return state == 'Z' || state == 'X' ? 0 : state;
}

// Waits up to `seconds` for p to be gone (or a zombie); its last state letter otherwise.
char wait_gone(pid_t p, int seconds) {
  const auto t0 = std::chrono::steady_clock::now();
  char st = live_state(p);
  while (st && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(seconds)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    st = live_state(p);
  }
  return st;
}

}  // namespace

TEST_CASE("cli mpi: a rank killed mid-run ends the job non-zero within seconds; the last checkpoint loads") {
  Sandbox sb;
  if (!mpi_usable(sb)) return;
  const std::string o = sb.dir + "/o";
  Job job(sb, 2, "--batch 4 --steps 1000000 --ckpt-every 2 --out " + o, "k");
  // Wait for a checkpoint and a few more steps (30 s at most), then kill rank 1.
  const pid_t victim = job.wait_running(o, 5, 1, 30);
  INFO(job.log());
  REQUIRE(victim > 0);
  REQUIRE(kill(victim, SIGKILL) == 0);
  // The job must end by itself, non-zero, within 30 s (mpirun tears down the other rank).
  int st = 0;
  REQUIRE(job.wait_end(30, &st));
  CHECK((WIFSIGNALED(st) || WEXITSTATUS(st) != 0));
  CHECK(sb.err("k").find("signal 9") != std::string::npos);  // mpirun names the killed rank and its signal
  const Loaded L = load(o + "/model.bin");
  CHECK(L.step >= 2);
  // A --ckpt-every checkpoint, or (when mpirun's SIGTERM to the surviving ranks reached rank 0
  // before its SIGKILL) rank 0's copy of the last completed step (train/step_snapshot.h), which it
  // announces.
  const std::string out = sb.out("k");
  if (L.step % 2 != 0)
    CHECK(out.find("signal     checkpoint of step " + std::to_string(L.step) + " ") != std::string::npos);
  CHECK(losses(o + "/log.csv").size() >= size_t(L.step));
}

TEST_CASE("cli mpi: a hung rank (SIGSTOP) ends the job within --rank-timeout with a message; resume loses nothing") {
  Sandbox sb;
  if (!mpi_usable(sb)) return;
  const std::string o = sb.dir + "/o";
  // --rank-timeout 3: far above a step of this model (~10 ms) even on a loaded machine.
  Job job(sb, 2, "--batch 4 --steps 1000000 --ckpt-every 2 --rank-timeout 3 --out " + o, "h");
  const pid_t victim = job.wait_running(o, 5, 1, 30);
  INFO(job.log());
  REQUIRE(victim > 0);
  job.also_kill(victim);  // reparented once mpirun is gone: killed by pid on a failed check
  // Rank 1 stops without dying: mpirun sees nothing wrong, rank 0 waits in its next all-reduce.
  REQUIRE(kill(victim, SIGSTOP) == 0);
  int st = 0;
  REQUIRE(job.wait_end(30, &st));  // 3 s of waiting, then MPI_Abort
  CHECK((WIFSIGNALED(st) || WEXITSTATUS(st) != 0));
  const std::string err = sb.err("h");
  CHECK(err.find("rank 0: error: no progress for ") != std::string::npos);
  CHECK(err.find("(--rank-timeout 3): another rank is hung, stopped or far slower") != std::string::npos);
  CHECK(err.find("all-reduce") != std::string::npos);  // what it waited in
  CHECK(err.find("last checkpoint: " + o + "/model.bin (step ") != std::string::npos);
  CHECK(wait_gone(victim, 10) == 0);  // the stopped rank was ended too (SIGKILL ends a stopped process)

  // The last checkpoint loads and a resumed run (1 rank) continues it as if nothing had happened:
  // equal to one process that trained the same number of steps without a stop.
  const Loaded L = load(o + "/model.bin");
  REQUIRE(L.step >= 2);
  CHECK(L.step % 2 == 0);
  const std::string steps = " --steps " + std::to_string(L.step + 2);
  const int rc = sb.train(1, "--batch 4 --resume" + steps + " --out " + o, "resume");
  INFO(sb.out("resume") << sb.err("resume"));
  REQUIRE(rc == 0);
  REQUIRE(sb.train(1, "--batch 4" + steps + " --out " + sb.dir + "/ref", "ref") == 0);
  check_same_losses(losses(sb.dir + "/ref/log.csv"), losses(o + "/log.csv"));
  check_same(load(sb.dir + "/ref/model.bin"), load(o + "/model.bin"));
}

TEST_CASE("cli mpi: SIGTERM to mpirun during long steps saves one checkpoint and stops every rank") {
  Sandbox sb;
  if (!mpi_usable(sb)) return;
  const std::string o = sb.dir + "/o";
  // Open MPI 4.1's mpirun, on SIGTERM, sends the ranks SIGCONT, then SIGTERM odls_base_sigkill_timeout
  // seconds later (default 1), then SIGKILL as long again after that (docs/distributed.md#faults): the
  // ranks have that long to finish their step and save. 4 s here; a step of this model takes ~0.5 s
  // (about 50 x the tiny one's), so the signal lands inside a step.
  const int grace = 4;
  Job job(sb, 2, "--batch 4 --steps 1000000 --ckpt-every 0 --channels 16 --layers 6 --cond-channels 16 --out " + o, "t",
          "OMPI_MCA_odls_base_sigkill_timeout=" + std::to_string(grace));
  const auto [rank0, rank1] = job.both_ranks(o, 2, 30);
  INFO(job.log());
  REQUIRE(rank0 > 0);
  REQUIRE(rank1 > 0);
  REQUIRE(kill(job.pid, SIGTERM) == 0);
  int st = 0;
  REQUIRE(job.wait_end(2 * grace + 20, &st));
  // Ranks end with 128 + 15 after saving; mpirun reports a non-zero status.
  CHECK((WIFSIGNALED(st) || WEXITSTATUS(st) != 0));
  const std::string out = sb.out("t");
  const size_t at = out.find("stopped (SIGTERM) at step ");
  REQUIRE(at != std::string::npos);
  const long stopped = std::stol(out.substr(at + 26));
  CHECK(out.find("checkpoint saved to " + o + "/model.bin") != std::string::npos);
  const Loaded L = load(o + "/model.bin");
  CHECK(L.step == stopped);
  CHECK(L.step >= 2);
  CHECK(losses(o + "/log.csv").size() == size_t(L.step));  // a row for every step, the last included
  CHECK(wait_gone(rank0, 10) == 0);
  CHECK(wait_gone(rank1, 10) == 0);
}

TEST_CASE("cli mpi: SIGTERM to mpirun with its default 1 s grace, steps far longer: the last completed step is saved") {
  Sandbox sb;
  if (!mpi_usable(sb)) return;
  const std::string o = sb.dir + "/o";
  // The default model at 16 images per rank on one thread: a step takes several seconds here, while
  // Open MPI's mpirun (default odls_base_sigkill_timeout 1) SIGKILLs the ranks about 2 s after its
  // SIGTERM: the step in progress cannot finish. Rank 0's copy of the last completed step
  // (train/step_snapshot.h) is written the moment the SIGTERM arrives. Without it, no checkpoint.
  Job job(sb, 2,
          "--batch 32 --steps 1000000 --ckpt-every 0 --channels 32 --layers 20 --head 1024 --cond-channels 32 "
          "--cond-blocks 6 --out " +
              o,
          "d");
  const auto [rank0, rank1] = job.both_ranks(o, 1, 120);
  INFO(job.log());
  REQUIRE(rank0 > 0);
  REQUIRE(rank1 > 0);
  REQUIRE(kill(job.pid, SIGTERM) == 0);
  int st = 0;
  REQUIRE(job.wait_end(30, &st));
  CHECK((WIFSIGNALED(st) || WEXITSTATUS(st) != 0));
  // The checkpoint is there (ckpt-every 0: only the signal could have written it) and loads.
  REQUIRE(fs::exists(o + "/model.bin"));
  const Loaded L = load(o + "/model.bin");
  CHECK(L.step >= 1);
  CHECK(losses(o + "/log.csv").size() >= size_t(L.step));
  // Rank 0 says so, when mpirun still forwarded its output while ending the job.
  const std::string out = sb.out("d");
  const size_t at = out.find("signal     checkpoint of step ");
  if (at != std::string::npos) CHECK(std::stol(out.substr(at + 30)) <= L.step);
  else MESSAGE("rank 0's line about the saved copy did not come through mpirun (the job was ending)");
  CHECK(wait_gone(rank0, 10) == 0);
  CHECK(wait_gone(rank1, 10) == 0);
}

TEST_CASE("cli mpi: SIGUSR1 to mpirun (forwarded, no SIGKILL) stops every rank after a long step and saves") {
  Sandbox sb;
  if (!mpi_usable(sb)) return;
  const std::string o = sb.dir + "/o";
  // Steps of ~1-2 s (about 150 x the tiny model's): longer than the 1 s Open MPI grants after a
  // SIGTERM, with its defaults. SIGUSR1 is forwarded to the ranks and nothing follows it.
  Job job(sb, 2, "--batch 4 --steps 1000000 --ckpt-every 0 --channels 32 --layers 8 --cond-channels 16 --out " + o,
          "u");
  const auto [rank0, rank1] = job.both_ranks(o, 1, 60);
  INFO(job.log());
  REQUIRE(rank0 > 0);
  REQUIRE(rank1 > 0);
  REQUIRE(kill(job.pid, SIGUSR1) == 0);
  int st = 0;
  REQUIRE(job.wait_end(60, &st));
  CHECK((WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGUSR1));  // mpirun passes the ranks' 138 on
  const std::string out = sb.out("u");
  const size_t at = out.find("stopped (SIGUSR1) at step ");
  REQUIRE(at != std::string::npos);
  const Loaded L = load(o + "/model.bin");
  CHECK(L.step == std::stol(out.substr(at + 26)));
  CHECK(L.step >= 2);
  CHECK(losses(o + "/log.csv").size() == size_t(L.step));
  CHECK(wait_gone(rank0, 10) == 0);
  CHECK(wait_gone(rank1, 10) == 0);
}

namespace {

// Two "ranks" as two threads: bn_sum for engine/sync_bn.h that adds the two threads' vectors
// (rank 0's + rank 1's on both, as an all-reduce gives the same result on every rank).
struct TwoRanks {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<double> slot[2];
  int arrived = 0, left = 0;
  long generation = 0;
};
TwoRanks g_two;
thread_local int tl_rank = 0;

void two_rank_sum(double* v, int n) {
  std::unique_lock<std::mutex> lk(g_two.mu);
  g_two.cv.wait(lk, [] { return g_two.left == 0; });  // the previous exchange is over
  g_two.slot[tl_rank].assign(v, v + n);
  const long gen = g_two.generation;
  if (++g_two.arrived == 2) {
    ++g_two.generation;
    g_two.cv.notify_all();
  } else {
    g_two.cv.wait(lk, [&] { return g_two.generation != gen; });
  }
  for (int i = 0; i < n; ++i) v[i] = g_two.slot[0][size_t(i)] + g_two.slot[1][size_t(i)];
  if (++g_two.left == 2) {
    g_two.arrived = g_two.left = 0;
    g_two.cv.notify_all();
  }
}

}  // namespace

TEST_CASE("sync batch norm: two ranks on halves of a batch == the reference on the whole batch") {
  // double, so that the comparison is exact up to summation order (1e-12).
  const int n = 4, c = 3, hw = 5, half = n / 2;
  const size_t sz = size_t(n) * c * hw, hs = sz / 2;
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(-2, 2);
  std::vector<double> x(sz), dy(sz), gamma(c), beta(c);
  for (auto* v : {&x, &dy, &gamma, &beta})
    for (double& e : *v) e = u(rng);
  for (size_t i = 0; i < sz; ++i) x[i] += 1.5 * double(i % 3);  // channel-dependent means
  // Reference: one process, the whole batch.
  std::vector<double> y(sz), mean(c), invstd(c), rm(c, 0.2), rv(c, 1.3), dx(sz), dg(c), db(c);
  prsr::ref::batchnorm_forward_train<double>(y.data(), mean.data(), invstd.data(), rm.data(), rv.data(), x.data(),
                                             gamma.data(), beta.data(), n, c, hw, 0.1, 1e-5);
  prsr::ref::batchnorm_backward<double>(dx.data(), dg.data(), db.data(), dy.data(), x.data(), gamma.data(), mean.data(),
                                        invstd.data(), n, c, hw, true, 7u);
  // Two ranks, images [0, 2) and [2, 4), each with its own running statistics.
  struct Rank {
    std::vector<double> y, mean, invstd, rm, rv, dx, dg, db;
  } r[2];
  auto run = [&](int k) {
    tl_rank = k;
    Rank& R = r[k];
    R.y.resize(hs), R.dx.resize(hs), R.mean.resize(c), R.invstd.resize(c), R.dg.resize(c), R.db.resize(c);
    R.rm.assign(c, 0.2), R.rv.assign(c, 1.3);
    prsr::sync_batchnorm_forward<double>(two_rank_sum, R.y.data(), R.mean.data(), R.invstd.data(), R.rm.data(),
                                         R.rv.data(), x.data() + k * hs, gamma.data(), beta.data(), half, c, hw, 0.1,
                                         1e-5);
    prsr::sync_batchnorm_backward<double>(two_rank_sum, R.dx.data(), R.dg.data(), R.db.data(), dy.data() + k * hs,
                                          x.data() + k * hs, gamma.data(), R.mean.data(), R.invstd.data(), half, c, hw,
                                          7u);
  };
  std::thread t1(run, 1);
  run(0);
  t1.join();
  const double tol = 1e-12;
  for (int k = 0; k < 2; ++k) {
    CAPTURE(k);
    for (size_t i = 0; i < hs; ++i) {
      CHECK(r[k].y[i] == doctest::Approx(y[k * hs + i]).epsilon(tol));
      CHECK(r[k].dx[i] == doctest::Approx(dx[k * hs + i]).epsilon(tol));
    }
    for (int ch = 0; ch < c; ++ch) {
      CHECK(r[k].mean[size_t(ch)] == doctest::Approx(mean[size_t(ch)]).epsilon(tol));
      CHECK(r[k].invstd[size_t(ch)] == doctest::Approx(invstd[size_t(ch)]).epsilon(tol));
      CHECK(r[k].rm[size_t(ch)] == doctest::Approx(rm[size_t(ch)]).epsilon(tol));
      CHECK(r[k].rv[size_t(ch)] == doctest::Approx(rv[size_t(ch)]).epsilon(tol));
    }
  }
  // Running statistics bit-identical on both ranks; dgamma / dbeta: the ranks' local sums add up
  // to the whole batch's (the trainer's gradient all-reduce adds them).
  CHECK(r[0].rm == r[1].rm);
  CHECK(r[0].rv == r[1].rv);
  for (int ch = 0; ch < c; ++ch) {
    CHECK(r[0].dg[size_t(ch)] + r[1].dg[size_t(ch)] == doctest::Approx(dg[size_t(ch)]).epsilon(tol));
    CHECK(r[0].db[size_t(ch)] + r[1].db[size_t(ch)] == doctest::Approx(db[size_t(ch)]).epsilon(tol));
  }
}
