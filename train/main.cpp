// ./build/train: trains the super-resolution model of docs/design.md 1 on one data set (docs/design.md 3).
//
//   setup:  flags -> checks that need no data (device, run folder writable, nothing overwritten)
//           -> data (train + valid split) -> model (fresh, or from --resume) -> trainer
//   loop:   one Trainer::step per batch; a progress line; every --eval-every steps held-out
//           bits/dim, every --sample-every steps a PNG grid, every --ckpt-every steps a
//           checkpoint; a row of figures in OUT/log.csv every --print-every steps.
//   end:    a checkpoint at the last step, on Ctrl-C (SIGINT / SIGTERM / SIGUSR1), never after a NaN.
//
// The data order is a pure function of (seed, number of training images, batch, step): image
// k of step s is the ((s * batch + k) mod n)-th entry of the permutation of epoch
// (s * batch + k) / n, drawn by our own Fisher-Yates from mt19937_64(seed, epoch). Nothing else
// in the loop draws random numbers, so a checkpoint's step (plus the seed, batch and data set
// it records in its meta) is the whole training state and a resumed run is bit-identical to an
// uninterrupted one on the same backend and thread count. See docs/train.md.
//
// The flags are in train/options.h; the setup steps in train/run.h; what a checkpoint carries
// and --resume takes back in train/resume.h; the run folder and log.csv in train/run_folder.h;
// the data order in train/data_order.h; held-out figures and sample grids in train/periodic.h;
// output lines, the progress line and signals in train/console.h. Here: train_main and the
// step loop.
#include <omp.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "engine/error.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "model/trainer.h"
#include "train/console.h"
#include "train/data_order.h"
#include "train/distributed.h"
#include "train/options.h"
#include "train/periodic.h"
#include "train/resume.h"
#include "train/run.h"
#include "train/run_folder.h"
#include "train/step_snapshot.h"

using prsr::Error;
using namespace prsr::train_cli;

namespace {

using Clock = std::chrono::steady_clock;

bool g_in_loop = false;  // the step loop has started (fail() below)

// The model and its trainer (which owns the optimiser): loaded from the checkpoint on
// --resume, else initialised from --seed.
struct Session {
  explicit Session(const Run& R) : model(R.o.model, R.dev), trainer(model, R.o.optim, R.local_batch()) {
    if (R.o.resume) prsr::load_checkpoint(R.ckpt, model, &trainer.optimizer());
    else model.init(R.o.seed);
  }
  prsr::Model<float> model;
  prsr::Trainer<float> trainer;  // after model, which it refers to
};

// This session's wall time; elapsed() adds the time trained before it (from the checkpoint),
// as log.csv, the checkpoint and the last line report it.
struct SessionClock {
  explicit SessionClock(double before) : before(before) {}
  double wall() const { return std::chrono::duration<double>(Clock::now() - start).count(); }
  double elapsed() const { return before + wall(); }
  double before;
  Clock::time_point start = Clock::now();
};

// The figures of the steps since the last log.csv row (their means make the row), and the
// smoothed step time that the progress line's speed and GFLOP/s come from.
struct StepFigures {
  void add(const prsr::StepResult& r, double dt) {
    ++session_steps;
    sum_loss += r.loss;
    sum_nll += r.nll_bits;
    sum_cea += r.ce_a_bits;
    sum_step_s += dt;
    ++n;
    ema_step_s = session_steps == 1 ? dt : 0.9 * ema_step_s + 0.1 * dt;
  }
  void start_row() {
    sum_loss = sum_nll = sum_cea = sum_step_s = 0;
    n = 0;
  }
  double sum_loss = 0, sum_nll = 0, sum_cea = 0, sum_step_s = 0;
  long n = 0;             // steps since the last row
  double ema_step_s = 0;  // the first step's time, then an exponential moving average (0.9)
  long session_steps = 0;
};

// Hidden test hook (--debug-nan-at-step): poison the output bias of A, so the logits (and the
// loss) are NaN.
void poison_output_bias(prsr::Model<float>& model) {
  std::vector<float> p = model.params.download();
  p[size_t(model.cond_out.b->data - model.params.data())] = NAN;
  model.params.upload(p);
}

// What the watchdog (train/distributed.h) adds to its message on rank 0: the checkpoint that a
// job it ends leaves behind.
void note_checkpoint(const Run& R) {
  const long step = R.last_saved_step >= 0 ? R.last_saved_step : R.o.resume ? R.start_step : -1;
  dist::set_note(step < 0 ? "no checkpoint was written yet"
                          : "last checkpoint: " + R.ckpt + " (step " + std::to_string(step) +
                                "); continue with --resume --ckpt " + R.ckpt);
}

// The step loop and what it does after every step, in this order: held-out evaluation, the
// progress line, a log.csv row, a sample grid, a checkpoint. It ends at --steps, at the first
// SIGINT / SIGTERM / SIGUSR1 (after finishing the step) or at a failed step (a NaN loss).
class StepLoop {
 public:
  // `log` and `grids` are null on ranks other than 0.
  StepLoop(Run& R, Session& S, LogCsv* log, HeldOut* held_out, SampleGrids* grids, double train_flops)
      : R_(R),
        o_(R.o),
        S_(S),
        log_(log),
        held_out_(held_out),
        grids_(grids),
        train_flops_(train_flops),
        pixel_(o_.model.has_prior()),
        order_(o_.seed, R.train.n),
        batch_(size_t(R.local_batch())),
        clock_(R.elapsed_before),
        step_(R.start_step) {
    // Under mpirun, rank 0 saves the last completed step at once on a signal (train/step_snapshot.h).
    if (R.data_parallel && R.leader()) snapshot_ = std::make_unique<StepSnapshot>(R, S.model, S.trainer.optimizer());
  }

  // The exit status.
  int run() {
    while (step_ < o_.steps && !stop_signal_) {
      prsr::StepResult r;
      if (!train_step(r)) return kExitError;
      if (snapshot_) snapshot_->take(step_, clock_.elapsed());
      stop_signal_ = agreed_signal();
      const bool do_eval = o_.eval_every > 0 && (step_ % o_.eval_every == 0 || step_ == o_.steps);
      if (do_eval) evaluate();  // split over the ranks
      if (!R_.leader()) {       // the other ranks only train and evaluate
        // Rank 0 now samples alone, for as long as that takes: the other ranks' next wait (the next
        // step's first collective, or the one in finish()) is not timed.
        if (o_.sample_every > 0 && (step_ % o_.sample_every == 0 || step_ == o_.steps))
          dist::excuse_next_wait("rank 0 writing sample grids");
        continue;
      }
      const std::string line = progress_text(r);
      const bool row_due = step_ % o_.print_every == 0 || step_ == o_.steps || do_eval || stop_signal_;
      progress_.show(line, step_, o_.steps, o_.print_every);
      if (row_due) log_row(do_eval);
      if (o_.sample_every > 0 && (step_ % o_.sample_every == 0 || step_ == o_.steps)) grids_->write(S_.model, step_);
      if (o_.ckpt_every > 0 && step_ % o_.ckpt_every == 0 && step_ != o_.steps && !stop_signal_) {
        save_checkpoint_now();
        say("checkpoint step %ld: %s", step_, R_.ckpt.c_str());
        note_checkpoint(R_);
      }
    }
    if (log_) log_->close();
    return finish();
  }

 private:
  // One Trainer::step on the next batch of the data order. A failed step (an Error, such as a
  // NaN or infinite loss) stops the run without saving: the last good checkpoint stays as it is.
  bool train_step(prsr::StepResult& r) {
    if (step_ == o_.debug_nan_at_step) poison_output_bias(S_.model);
    dist::set_step(step_ + 1);
    // This rank's slice of the global batch: every rank walks the same order.
    const uint64_t first = uint64_t(step_) * uint64_t(o_.batch) + uint64_t(R_.rank) * batch_.size();
    for (size_t k = 0; k < batch_.size(); ++k) batch_[k] = R_.train.image(order_.at(first + k));
    const auto t0 = Clock::now();
    try {
      r = S_.trainer.step(batch_.data(), step_);
    } catch (const Error& e) {
      if (log_) log_->close();
      if (R_.leader()) report_failed_step(e);
      return false;
    }
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    allreduce_s_ += S_.trainer.last_times().allreduce;
    ++step_;
    figures_.add(r, dt);
    return true;
  }

  // The checkpoint of step_ (rank 0), unless it is the last one written (by the loop or, after a
  // signal, by the snapshot's thread: the two never write at once).
  void save_checkpoint_now() {
    std::unique_lock<std::mutex> lock;
    if (snapshot_) lock = std::unique_lock<std::mutex>(snapshot_->write_lock());
    if (R_.last_saved_step != step_) save_run_checkpoint(R_, S_.model, S_.trainer.optimizer(), step_, clock_.elapsed());
  }

  // "error: <why>; last good checkpoint: <which>" on stderr (after ending the progress line).
  void report_failed_step(const Error& e) {
    if (g_tty) std::fputs("\n", stdout);
    std::fflush(stdout);
    std::string kept = R_.last_saved_step >= 0 ? R_.ckpt + " (step " + std::to_string(R_.last_saved_step) + ")"
                       : o_.resume             ? R_.ckpt + " (step " + std::to_string(R_.start_step) + ", untouched)"
                                               : "none (no checkpoint was written yet)";
    std::fprintf(stderr, "error: %s; last good checkpoint: %s\n", e.what(), kept.c_str());
  }

  void evaluate() {
    std::tie(valid_loss_, valid_bits_) = held_out_->evaluate(S_.trainer);
    const int n_valid = held_out_->count();
    if (pixel_)
      say("eval       step %ld: valid %.4f bits/dim on %d images (loss %.4f)", step_, valid_bits_, n_valid,
          valid_loss_);
    else say("eval       step %ld: valid MSE %.5f on %d images", step_, valid_loss_, n_valid);
  }

  // The step's loss (and bits/dim with the prior), images/s, ms/step and GFLOP/s from the
  // smoothed step time, and the ETA from this session's mean step time.
  std::string progress_text(const prsr::StepResult& r) const {
    const double wall = clock_.wall();
    const double eta = wall / figures_.session_steps * double(o_.steps - step_);
    const double ema_step_s = figures_.ema_step_s;
    const double img_s = o_.batch / ema_step_s;
    const double gflops = train_flops_ * o_.batch / ema_step_s / 1e9;
    char line[320];
    if (pixel_)
      std::snprintf(line, sizeof line,
                    "step %ld/%ld  loss %.4f  bits/dim %.4f  %.1f img/s  %.1f ms/step  %.1f GFLOP/s  ETA %s", step_,
                    o_.steps, r.loss, r.nll_bits, img_s, ema_step_s * 1e3, gflops, hms(eta).c_str());
    else
      std::snprintf(line, sizeof line, "step %ld/%ld  mse %.5f  %.1f img/s  %.1f ms/step  %.1f GFLOP/s  ETA %s", step_,
                    o_.steps, r.loss, img_s, ema_step_s * 1e3, gflops, hms(eta).c_str());
    return line;
  }

  // Means since the last row; held-out figures only on a step that evaluated.
  void log_row(bool do_eval) {
    const StepFigures& f = figures_;
    const double m_loss = f.sum_loss / f.n, m_ms = f.sum_step_s / f.n * 1e3;
    auto cell = [](bool on, double v) { return on ? std::optional<double>(v) : std::nullopt; };
    log_->row(step_, m_loss, cell(pixel_, f.sum_nll / f.n), cell(pixel_, f.sum_cea / f.n), cell(do_eval, valid_loss_),
              cell(do_eval && pixel_, valid_bits_), o_.batch / (m_ms / 1e3), m_ms,
              double(S_.trainer.optimizer().lr_at(step_ - 1)), clock_.elapsed());
    figures_.start_row();
  }

  // A checkpoint at the step the loop stopped at (unless just written), then the last line:
  // done, or how to continue after a signal (exit status 128 + signal).
  int finish() {
    if (R_.leader()) save_checkpoint_now();
    snapshot_.reset();  // its thread ends (any write of its own is done)
    // The other ranks wait for that write: one that ended first with 128 + signal would make mpirun
    // end the job (rank 0 included) in the middle of it.
    dist::barrier("the wait for rank 0 to write the last checkpoint", true);
    if (!R_.leader()) return stop_signal_ ? 128 + stop_signal_ : kExitOk;
    if (g_tty) std::fputs("\n", stdout);
    if (stop_signal_) {
      say("%s at step %ld: checkpoint saved to %s; continue with --resume --ckpt %s",
          stop_signal_ == SIGINT    ? "interrupted (SIGINT)"
          : stop_signal_ == SIGTERM ? "stopped (SIGTERM)"
                                    : "stopped (SIGUSR1)",
          step_, R_.ckpt.c_str(), R_.ckpt.c_str());
      return 128 + stop_signal_;
    }
    if (R_.ranks > 1 && figures_.session_steps > 0)
      say("allreduce  %.2f MB of gradients per step: %.1f ms per step on rank 0 (%.1f%% of the step time)",
          double(S_.model.params.trainable_count() * sizeof(float)) / 1e6, allreduce_s_ / figures_.session_steps * 1e3,
          100.0 * allreduce_s_ / clock_.wall());
    say("done       %ld steps in %s: checkpoint %s", step_, hms(clock_.elapsed()).c_str(), R_.ckpt.c_str());
    return kExitOk;
  }

  // The first SIGINT / SIGTERM / SIGUSR1 on any rank, agreed by all after every step (one small
  // all-reduce when there are several ranks), so that every rank stops after the same step. When
  // ranks got different signals, the first of SIGINT, SIGTERM, SIGUSR1 is the one reported.
  int agreed_signal() const {
    const int sig = g_signal;
    if (R_.ranks == 1) return sig;
    const int kinds[3] = {SIGINT, SIGTERM, SIGUSR1};
    double v[3];
    for (int k = 0; k < 3; ++k) v[k] = sig == kinds[k] ? 1.0 : 0.0;
    dist::sum(v, 3);
    for (int k = 0; k < 3; ++k)
      if (v[k] > 0) return kinds[k];
    return 0;
  }

  Run& R_;
  const Options& o_;
  Session& S_;
  LogCsv* log_;
  HeldOut* held_out_;
  SampleGrids* grids_;
  const double train_flops_;
  const bool pixel_;
  DataOrder order_;
  std::vector<const uint8_t*> batch_;
  const SessionClock clock_;  // before progress_: the session starts, then the first draw is due
  ProgressLine progress_;
  StepFigures figures_;
  long step_;
  int stop_signal_ = 0;
  // This session's time in the gradient all-reduce (rank 0's view).
  double allreduce_s_ = 0;
  double valid_loss_ = NAN, valid_bits_ = NAN;  // the last evaluation
  std::unique_ptr<StepSnapshot> snapshot_;      // rank 0 under mpirun only
};

int train_main(int argc, char** argv) {
  Run R;
  Options& o = R.o;
  o = parse_args(argc, argv);
  if (o.help) return kExitOk;

  // A collective that waits longer than this ends the job (train/distributed.h).
  dist::start_watchdog(double(o.rank_timeout), kExitError);
  select_device(R);
  R.rank = dist::rank();
  R.ranks = dist::size();
  if (o.resume) read_resume_state(R);  // the model, optimiser, data set, seed and batch
  if (o.batch % R.ranks != 0)
    throw UsageError("--batch " + std::to_string(o.batch) + " is the global batch and must be divisible by the " +
                     std::to_string(R.ranks) + " ranks (mpirun -np " + std::to_string(R.ranks) + ")");
  R.data_parallel = R.ranks > 1 || (dist::launched() && R.dev == prsr::Device::Cuda);
  if (R.data_parallel && R.dev == prsr::Device::Cuda && !dist::compiled_with_nccl())
    throw UsageError(
        std::string("--device cuda under mpirun needs NCCL, and this train was built without ") +
        (dist::compiled_with_mpi() ? "it (no libnccl / nccl.h beside the CUDA toolkit at configure time)" : "MPI") +
        "; use --device cpu, or run one process without mpirun");
  resolve_run_folder(R);  // checked before any data is read
  // One GPU per rank and the NCCL communicator, before anything is allocated on the device.
  if (R.data_parallel) dist::use_device(R.dev);
  // Rank 0 first: a data set's first load decodes it and writes the cache (an LSUN build resumes
  // from a shared partial file), which the other ranks then read. Neither wait is timed: decoding
  // a large data set takes as long as it takes.
  if (R.leader()) load_data(R);
  dist::barrier("the wait for rank 0 to load the data set", false);
  if (!R.leader()) load_data(R);
  if (o.resume) check_resume_data(R);
  dist::barrier("the wait for every rank to load the data set", false);  // before rank 0 writes the run folder
  if (R.leader()) create_run_folder(R);

  Session S(R);
  if (R.data_parallel) {
    // Every rank starts from rank 0's parameters and averages gradients / sums batch-norm statistics.
    dist::broadcast_params(S.model.params.data(), S.model.params.total_count());
    S.trainer.set_data_parallel(R.ranks, dist::mean_grads, dist::sum, dist::sum_device);
  }
  const double fwd = S.model.forward_flops_per_image();
  const double train_flops = 3.0 * fwd;  // forward + backward (about 2x forward)
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  // Under mpirun stdout is a pseudo-terminal even when mpirun writes to a file (a batch job's
  // log): plain progress lines then, not a line redrawn with \r.
  g_tty = isatty(fileno(stdout)) && R.ranks == 1;
  print_banner(R, S.model, fwd, train_flops, threads);

  if (R.start_step >= o.steps) {
    std::printf("the checkpoint is at step %ld, --steps is %ld: nothing to do\n", R.start_step, o.steps);
    return kExitOk;
  }

  // The fixed validation subset (every rank evaluates its share); rank 0 only: log.csv and the
  // sample inputs.
  HeldOut held_out(R.valid, o.valid_count, R.local_batch(), R.rank, R.ranks, dist::sum);
  std::optional<LogCsv> log;
  std::optional<SampleGrids> grids;
  if (R.leader()) {
    prepare_log(R.log_path, o.resume, R.start_step);
    log.emplace(R.log_path);
    grids.emplace(R.valid, o.model, o.sample_rows, o.seed, R.out);
  }

  if (R.leader()) note_checkpoint(R);
  stop_gracefully_on_signals();
  g_in_loop = true;
  // The session's clock starts here.
  StepLoop loop(R, S, log ? &*log : nullptr, &held_out, grids ? &*grids : nullptr, train_flops);
  return loop.run();
}

// An error that ends this process. With several ranks: rank 0 says it; another rank says it only
// inside the step loop (setup errors come from the flags and files, the same on every rank).
// Usage errors are found by every rank alike, so they end normally; any other error may be
// this rank's alone while the others wait in an all-reduce, so it ends every rank (MPI_Abort).
int fail(int code, const char* what) {
  std::fflush(stdout);
  if (dist::rank() == 0 || g_in_loop) {
    if (g_tty && dist::rank() == 0) std::fputs("\n", stdout);
    if (dist::size() > 1 && dist::rank() != 0) std::fprintf(stderr, "rank %d: ", dist::rank());
    std::fprintf(stderr, "error: %s\n", what);
  }
  if (code == kExitUsage) dist::finalize();
  else dist::abort_all(code);
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  // Line-buffered stdout even into a pipe or file, so that it interleaves with the data
  // loader's progress bar on stderr in the order things happened.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    take_signals_in_one_thread();  // before MPI and OpenMP start threads: they inherit the mask
    dist::init(&argc, &argv);
    if (dist::rank() != 0 && !std::freopen("/dev/null", "w", stdout)) return kExitError;  // rank 0 prints
    const int rc = train_main(argc, argv);
    dist::finalize();
    return rc;
    // clang-format off
  } catch (const UsageError& e) {
    return fail(kExitUsage, e.what());
  } catch (const Error& e) {
    return fail(kExitError, e.what());
  } catch (const std::bad_alloc&) {
    return fail(kExitError, "out of memory");
  } catch (const std::exception& e) {
    return fail(kExitError, e.what());
  }
  // clang-format on
}
