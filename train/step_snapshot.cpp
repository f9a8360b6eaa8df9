#include "train/step_snapshot.h"

#include <chrono>
#include <cstdio>

#include "engine/arena.h"
#include "engine/error.h"
#include "train/console.h"
#include "train/resume.h"

namespace prsr::train_cli {

StepSnapshot::StepSnapshot(Run& R, const prsr::Model<float>& model, const prsr::Optimizer<float>& opt)
    : R_(R),
      live_(model),
      live_opt_(opt),
      copy_(model.config(), prsr::Device::Cpu),
      copy_opt_(opt.config(), copy_.params),
      thread_([this] { watch(); }) {}

StepSnapshot::~StepSnapshot() {
  quit_.store(true);
  thread_.join();
}

void StepSnapshot::take(long step, double elapsed) {
  std::lock_guard<std::mutex> lock(mutex_);
  const prsr::Device dev = live_.device();
  prsr::device_download(dev, copy_.params.data(), live_.params.data(), live_.params.total_count() * sizeof(float));
  for (int k = 0; k < 2; ++k)
    prsr::device_download(dev, copy_opt_.state(k), live_opt_.state(k), live_opt_.size() * sizeof(float));
  step_ = step;
  elapsed_ = elapsed;
}

// Polls (every 20 ms: the signal thread of cli/signals.h only sets flags) for the first stop
// signal, and for SIGCONT, which mpirun sends every rank the moment it is asked to end the job, a
// second before its SIGTERM and two before its SIGKILL: the copy is written at the first of them
// when it is newer than the last checkpoint. SIGCONT does not stop training (job control sends it
// too: an extra checkpoint then, nothing else).
void StepSnapshot::watch() {
  int seen_sigcont = cli::g_sigcont_count.load();
  while (!quit_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const bool stop = g_signal.load() != 0;
    const int sigcont = cli::g_sigcont_count.load();
    if (!stop && sigcont == seen_sigcont) continue;
    seen_sigcont = sigcont;
    std::lock_guard<std::mutex> lock(mutex_);
    if (step_ >= 0 && step_ > R_.last_saved_step) {
      try {
        // No fsync: SIGKILL may follow within a second (and does not lose the page cache); the
        // loop's own save, if it gets to it, is fsynced.
        save_run_checkpoint(R_, copy_, copy_opt_, step_, elapsed_, false);
        say("signal     checkpoint of step %ld (the last completed step) saved to %s at once; the step in "
            "progress is saved too if mpirun lets it finish",
            step_, R_.ckpt.c_str());
      } catch (const std::exception& e) {
        std::fprintf(stderr, "error: saving the checkpoint of step %ld after the signal: %s\n", step_, e.what());
      }
    }
    if (stop) return;
  }
}

}  // namespace prsr::train_cli
