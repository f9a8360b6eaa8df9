#include "train/distributed.h"

#include <cstdlib>
#include <string>

#include "engine/error.h"

#ifdef PRSR_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only (the deprecated C++ bindings warn)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace prsr::train_cli::dist {

namespace {
int g_rank = 0, g_size = 1;
[[maybe_unused]] bool g_inited = false;  // MPI_Init was called

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
}  // namespace

bool compiled_with_mpi() {
#ifdef PRSR_HAVE_MPI
  return true;
#else
  return false;
#endif
}

#ifdef PRSR_HAVE_MPI

void init(int* argc, char*** argv) {
  // Not started by a launcher: one process that never initialises MPI, exactly as a build without
  // it (no singleton start-up, nothing of MPI's left for LeakSanitizer in the test suites).
  if (launcher_size() == 0) return;
  MPI_Init(argc, argv);
  g_inited = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
}

void finalize() {
  if (g_inited) MPI_Finalize();
  g_inited = false;
}

void abort_all(int code) {
  if (g_inited && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

void sum(double* v, int n) {
  if (g_size > 1) MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

void sum_floats(float* v, size_t n) {
  if (g_size <= 1) return;
  const size_t chunk = size_t(1) << 30;
  for (size_t o = 0; o < n; o += chunk)
    MPI_Allreduce(MPI_IN_PLACE, v + o, int(n - o < chunk ? n - o : chunk), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}

void broadcast_floats(float* v, size_t n) {
  if (g_size <= 1) return;
  const size_t chunk = size_t(1) << 30;
  for (size_t o = 0; o < n; o += chunk)
    MPI_Bcast(v + o, int(n - o < chunk ? n - o : chunk), MPI_FLOAT, 0, MPI_COMM_WORLD);
}

void barrier() {
  if (g_size > 1) MPI_Barrier(MPI_COMM_WORLD);
}

#else  // single-process build

void init(int*, char***) {
  const int n = launcher_size();
  if (n > 1)
    throw Error("this train is a single-process build (compiled without MPI) but was started as one of " +
                std::to_string(n) +
                " processes by mpirun / srun; each would train the whole model alone. Install Open MPI "
                "(apt-get install libopenmpi-dev openmpi-bin, or tools/setup) and rebuild (meson setup "
                "build --reconfigure -Dmpi=enabled), or run ./build/train without mpirun");
}
void finalize() {}
void abort_all(int) {}
void sum(double*, int) {}
void sum_floats(float*, size_t) {}
void broadcast_floats(float*, size_t) {}
void barrier() {}

#endif

int rank() { return g_rank; }
int size() { return g_size; }

}  // namespace prsr::train_cli::dist
