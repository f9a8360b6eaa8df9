// ./build/train across processes (docs/distributed.md): thin wrappers over MPI so that every
// #ifdef PRSR_HAVE_MPI of the trainer is in train/distributed.cpp. Without MPI (a build without
// libopenmpi-dev) there is one rank and every call is a no-op, except that init() refuses to run
// as one of several processes started by mpirun / srun.
#pragma once
#include <cstddef>

namespace prsr::train_cli::dist {

// MPI_Init when built with MPI and started by a launcher (mpirun, srun; otherwise one rank and
// MPI stays untouched); rank() and size() after it. Without MPI: throws Error when the
// environment says this is one of several ranks (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_SIZE,
// SLURM_STEP_NUM_TASKS under srun), since N copies would each train the whole model alone.
void init(int* argc, char*** argv);
// MPI_Finalize, on a normal return from train_main only.
void finalize();
// Ends every rank at once with `code` (MPI_Abort), after an error on any rank that the others
// cannot know about; without MPI or with one rank it returns and the caller exits normally.
void abort_all(int code);

int rank();
int size();
bool compiled_with_mpi();

// In-place sums over all ranks (MPI_Allreduce, MPI_SUM), identical on every rank.
void sum(double* v, int n);
void sum_floats(float* v, size_t n);  // in chunks of at most 2^30 elements (MPI's int counts)
// Every rank gets rank 0's values (MPI_Bcast).
void broadcast_floats(float* v, size_t n);
// Everyone waits for everyone (MPI_Barrier).
void barrier();

}  // namespace prsr::train_cli::dist
