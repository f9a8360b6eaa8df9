#include "train/distributed.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "engine/error.h"

#ifdef PRSR_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only (the deprecated C++ bindings warn)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif
#ifdef PRSR_HAVE_NCCL  // (only with MPI and CUDA: meson.build)
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace prsr::train_cli::dist {

namespace {
int g_rank = 0, g_size = 1;
[[maybe_unused]] bool g_inited = false;           // MPI_Init_thread was called
[[maybe_unused]] bool g_thread_multiple = false;  // the watchdog thread may call MPI_Abort
[[maybe_unused]] Device g_dev = Device::Cpu;      // use_device()

// The number of ranks the launcher started, from its environment: Open MPI's mpirun, a PMI
// launcher (MPICH's, srun --mpi=pmi2), srun; 1 under a PMIx launcher that does not say (srun
// --mpi=pmix sets the SLURM one too); 0: not under a launcher.
int launcher_size() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"}) {
    const char* s = std::getenv(v);
    if (s && std::atoi(s) > 0) return std::atoi(s);
  }
  return std::getenv("PMIX_RANK") ? 1 : 0;
}

// ---- The watchdog ----------------------------------------------------------------------------
// The main thread marks the start and end of every collective (Waiting); a second thread wakes
// every min(timeout / 10, 1 s) and ends the job when the current wait is older than the timeout.
// A wait that makes no progress is what every other rank sees of a rank that hangs or is stopped
// (it never joins the collective), and what the hung rank itself sees of the others' absence.
using Clock = std::chrono::steady_clock;

struct Watch {
  std::atomic<int64_t> since{0};  // Clock ticks at the start of the current timed wait; 0: none
  std::atomic<const char*> what{""};
  std::atomic<long> step{-1};
  std::atomic<const char*> excuse{nullptr};
  double timeout = 0;  // seconds; 0: not watching
  int code = 1;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::string note;
  std::thread thread;
};
Watch g_watch;

int64_t now_ticks() { return int64_t(Clock::now().time_since_epoch().count()); }

// Around one collective on the main thread.
class Waiting {
 public:
  explicit Waiting(const char* what, bool timed = true) {
    const char* excused = g_watch.excuse.exchange(nullptr);
    if (!timed || excused || g_watch.timeout <= 0) return;
    g_watch.what.store(what);
    g_watch.since.store(now_ticks());
  }
  ~Waiting() { g_watch.since.store(0); }
  Waiting(const Waiting&) = delete;
  Waiting& operator=(const Waiting&) = delete;
};

[[noreturn]] void end_job(int code);

void watchdog_loop() {
  const auto interval = std::chrono::duration<double>(std::min(1.0, std::max(0.01, g_watch.timeout / 10)));
  std::unique_lock<std::mutex> lk(g_watch.mu);
  while (!g_watch.stop) {
    g_watch.cv.wait_for(lk, interval);
    if (g_watch.stop) break;
    const int64_t since = g_watch.since.load();
    if (since == 0) continue;
    const double waited = std::chrono::duration<double>(Clock::duration(now_ticks() - since)).count();
    if (waited <= g_watch.timeout) continue;
    const long step = g_watch.step.load();
    const std::string at = step < 0 ? "during start-up" : "at step " + std::to_string(step);
    std::fflush(stdout);
    std::fprintf(stderr,
                 "rank %d: error: no progress for %.0f s in %s %s (--rank-timeout %g): another rank is hung, "
                 "stopped or far slower; ending every rank%s\n",
                 g_rank, waited, g_watch.what.load(), at.c_str(), g_watch.timeout,
                 g_thread_multiple ? " (MPI_Abort)" : "");
    if (!g_watch.note.empty()) std::fprintf(stderr, "%s\n", g_watch.note.c_str());
    std::fflush(stderr);
    end_job(g_watch.code);
  }
}

void stop_watchdog() {
  if (!g_watch.thread.joinable()) return;
  {
    std::lock_guard<std::mutex> lk(g_watch.mu);
    g_watch.stop = true;
  }
  g_watch.cv.notify_all();
  g_watch.thread.join();
}

#ifdef PRSR_HAVE_NCCL
ncclComm_t g_nccl = nullptr;

#define NCCL_CHECK(call)                                                                       \
  do {                                                                                         \
    const ncclResult_t prsr_r_ = (call);                                                       \
    if (prsr_r_ != ncclSuccess)                                                                \
      throw Error(std::string("NCCL error: ") + ncclGetErrorString(prsr_r_) + " (" #call ")"); \
  } while (0)
#define CUDA_RT_CHECK(call)                                                                    \
  do {                                                                                         \
    const cudaError_t prsr_e_ = (call);                                                        \
    if (prsr_e_ != cudaSuccess)                                                                \
      throw Error(std::string("CUDA error: ") + cudaGetErrorString(prsr_e_) + " (" #call ")"); \
  } while (0)

// NCCL calls join the CUDA backend's one stream (engine/cuda/common.cuh), so they are ordered
// with the kernels that produce and consume their buffers; the wait for their end is what the
// watchdog times.
cudaStream_t nccl_stream() { return static_cast<cudaStream_t>(prsr::cuda::stream_handle()); }
void nccl_wait(const char* what) {
  Waiting w(what);
  CUDA_RT_CHECK(cudaStreamSynchronize(nccl_stream()));
}
#endif

}  // namespace

bool compiled_with_mpi() {
#ifdef PRSR_HAVE_MPI
  return true;
#else
  return false;
#endif
}

bool compiled_with_nccl() {
#ifdef PRSR_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

void start_watchdog(double seconds, int code) {
  if (g_size <= 1 || seconds <= 0 || g_watch.thread.joinable()) return;
  g_watch.timeout = seconds;
  g_watch.code = code;
  g_watch.thread = std::thread(watchdog_loop);
}

void set_step(long step) { g_watch.step.store(step); }

void set_note(const std::string& note) {
  std::lock_guard<std::mutex> lk(g_watch.mu);
  g_watch.note = note;
}

void excuse_next_wait(const char* why) { g_watch.excuse.store(why); }

#ifdef PRSR_HAVE_MPI

namespace {
[[noreturn]] void end_job(int code) {
  // MPI_Abort from this (second) thread while the main thread is inside a collective is allowed
  // at MPI_THREAD_MULTIPLE; without it, leaving at once makes mpirun end the others (a rank that
  // exits without MPI_Finalize ends the job).
  if (g_thread_multiple) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}
}  // namespace

void init(int* argc, char*** argv) {
  // Not started by a launcher: one process that never initialises MPI, exactly as a build without
  // it (no singleton start-up, nothing of MPI's left for LeakSanitizer in the test suites).
  if (launcher_size() == 0) return;
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
  g_thread_multiple = provided >= MPI_THREAD_MULTIPLE;
  g_inited = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
}

void finalize() {
  stop_watchdog();
#ifdef PRSR_HAVE_NCCL
  if (g_nccl) ncclCommDestroy(g_nccl);
  g_nccl = nullptr;
#endif
  if (g_inited) MPI_Finalize();
  g_inited = false;
}

void abort_all(int code) {
  if (g_inited && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

bool launched() { return g_inited; }

void sum(double* v, int n) {
  if (g_size <= 1) return;
  Waiting w("an all-reduce of figures (loss, held-out totals, stop signal)");
  MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

void barrier(const char* what, bool timed) {
  if (g_size <= 1) return;
  Waiting w(what, timed);
  MPI_Barrier(MPI_COMM_WORLD);
}

void use_device(Device dev) {
  g_dev = dev;
  if (dev != Device::Cuda || !g_inited) return;
#ifdef PRSR_HAVE_NCCL
  // One GPU per rank: the rank's index among the ranks of its node picks the device.
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node);
  int local_rank = 0, local_size = 1;
  MPI_Comm_rank(node, &local_rank);
  MPI_Comm_size(node, &local_size);
  MPI_Comm_free(&node);
  int gpus = 0;
  CUDA_RT_CHECK(cudaGetDeviceCount(&gpus));
  if (gpus < local_size)
    throw Error("--device cuda under mpirun takes one GPU per rank, but this node runs " + std::to_string(local_size) +
                " ranks and has " + std::to_string(gpus) + " GPU" + (gpus == 1 ? "" : "s") +
                " (start one rank per GPU, e.g. mpirun -np N --map-by ppr:" + std::to_string(gpus) + ":node)");
  CUDA_RT_CHECK(cudaSetDevice(local_rank));
  ncclUniqueId id;
  if (g_rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  {
    Waiting w("the broadcast of the NCCL id");
    MPI_Bcast(&id, int(sizeof id), MPI_BYTE, 0, MPI_COMM_WORLD);
  }
  Waiting w("the creation of the NCCL communicator");
  NCCL_CHECK(ncclCommInitRank(&g_nccl, g_size, id, g_rank));
#else
  throw Error(std::string("--device cuda under mpirun needs NCCL, and this train was built without ") +
              (prsr::cuda::available() ? "it (libnccl and nccl.h were not found beside the CUDA toolkit: install "
                                         "NCCL and run meson setup build --reconfigure)"
                                       : "CUDA support") +
              "; use --device cpu, or run one process without mpirun");
#endif
}

void broadcast_params(float* v, size_t n) {
#ifdef PRSR_HAVE_NCCL
  if (g_dev == Device::Cuda && g_nccl) {
    NCCL_CHECK(ncclBroadcast(v, v, n, ncclFloat, 0, g_nccl, nccl_stream()));
    nccl_wait("the broadcast of rank 0's parameters (NCCL)");
    return;
  }
#endif
  if (g_size <= 1) return;
  Waiting w("the broadcast of rank 0's parameters");
  const size_t chunk = size_t(1) << 30;  // MPI's counts are int
  for (size_t o = 0; o < n; o += chunk)
    MPI_Bcast(v + o, int(n - o < chunk ? n - o : chunk), MPI_FLOAT, 0, MPI_COMM_WORLD);
}

void mean_grads(float* v, size_t n) {
#ifdef PRSR_HAVE_NCCL
  if (g_dev == Device::Cuda && g_nccl) {
    NCCL_CHECK(ncclAllReduce(v, v, n, ncclFloat, ncclAvg, g_nccl, nccl_stream()));
    nccl_wait("the all-reduce of the gradients (NCCL)");
    return;
  }
#endif
  if (g_size <= 1) return;
  {
    Waiting w("the all-reduce of the gradients");
    const size_t chunk = size_t(1) << 30;
    for (size_t o = 0; o < n; o += chunk)
      MPI_Allreduce(MPI_IN_PLACE, v + o, int(n - o < chunk ? n - o : chunk), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  }
  const float k = 1.0f / float(g_size);
  for (size_t i = 0; i < n; ++i) v[i] *= k;
}

void sum_device(double* v, int n) {
#ifdef PRSR_HAVE_NCCL
  if (g_dev == Device::Cuda && g_nccl) {
    NCCL_CHECK(ncclAllReduce(v, v, size_t(n), ncclDouble, ncclSum, g_nccl, nccl_stream()));
    nccl_wait("the all-reduce of batch-norm statistics (NCCL)");
    return;
  }
#endif
  if (g_size <= 1) return;
  Waiting w("the all-reduce of batch-norm statistics");
  MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

#else  // single-process build

namespace {
[[noreturn]] void end_job(int code) { std::_Exit(code); }
}  // namespace

void init(int*, char***) {
  const int n = launcher_size();
  if (n > 1)
    throw Error("this train is a single-process build (compiled without MPI) but was started as one of " +
                std::to_string(n) +
                " processes by mpirun / srun; each would train the whole model alone. Install Open MPI "
                "(apt-get install libopenmpi-dev openmpi-bin, or tools/setup) and rebuild (meson setup "
                "build --reconfigure -Dmpi=enabled), or run ./build/train without mpirun");
}
void finalize() { stop_watchdog(); }
void abort_all(int) {}
bool launched() { return false; }
void sum(double*, int) {}
void barrier(const char*, bool) {}
void use_device(Device dev) { g_dev = dev; }
void broadcast_params(float*, size_t) {}
void mean_grads(float*, size_t) {}
void sum_device(double*, int) {}

#endif

int rank() { return g_rank; }
int size() { return g_size; }

}  // namespace prsr::train_cli::dist
