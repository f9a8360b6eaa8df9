// Saving at once when a signal arrives in the middle of a long step, for runs under mpirun.
//
// On Ctrl-C or SIGTERM, Open MPI's mpirun sends the ranks SIGTERM and, odls_base_sigkill_timeout
// seconds later (1 s by default), SIGKILL (docs/distributed.md, Faults): a rank whose step is
// longer than that is killed before it can finish the step and save. So rank 0 keeps a host copy
// of the state after the last completed step (parameters with the running statistics, the
// optimiser state; copied into buffers allocated once, after every step) and a thread that
// writes that copy as the checkpoint at the first stop signal or SIGCONT (mpirun sends SIGCONT a
// second before its SIGTERM). The step loop still finishes its step and saves it when it is
// allowed to; both writes go through one lock, and an older step never overwrites a newer one.
#pragma once
#include <atomic>
#include <mutex>
#include <thread>

#include "engine/optim.h"
#include "model/model.h"
#include "train/run.h"

namespace prsr::train_cli {

class StepSnapshot {
 public:
  StepSnapshot(Run& R, const prsr::Model<float>& model, const prsr::Optimizer<float>& opt);
  ~StepSnapshot();  // stops the thread
  StepSnapshot(const StepSnapshot&) = delete;
  StepSnapshot& operator=(const StepSnapshot&) = delete;

  // After every completed step, on the loop's thread: copies the live state (a few MB of memcpy,
  // or one device-to-host copy per buffer for a GPU model) with the step and the elapsed time.
  void take(long step, double elapsed);
  // Held by every checkpoint write of the step loop, so that it never writes with the thread.
  std::mutex& write_lock() { return mutex_; }

 private:
  void watch();

  Run& R_;
  const prsr::Model<float>& live_;
  const prsr::Optimizer<float>& live_opt_;
  prsr::Model<float> copy_;  // Device::Cpu
  prsr::Optimizer<float> copy_opt_;
  long step_ = -1;  // the step the copy holds; -1 before the first
  double elapsed_ = 0;
  std::mutex mutex_;
  std::atomic<bool> quit_{false};
  std::thread thread_;
};

}  // namespace prsr::train_cli
