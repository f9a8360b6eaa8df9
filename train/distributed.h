// ./build/train across processes (docs/distributed.md): thin wrappers over MPI (host memory) and
// NCCL (GPU memory) so that every #ifdef PRSR_HAVE_MPI / PRSR_HAVE_NCCL of the trainer is in
// train/distributed.cpp. Without MPI (a build without libopenmpi-dev) there is one rank and every
// call is a no-op, except that init() refuses to run as one of several processes started by
// mpirun / srun.
//
// Every collective below is watched (start_watchdog): a wait that makes no progress for longer
// than --rank-timeout seconds (another rank hung, stopped, or far slower) ends the job with a
// message naming what was waited on, instead of every rank waiting forever.
#pragma once
#include <cstddef>
#include <string>

#include "engine/backend.h"

namespace prsr::train_cli::dist {

// MPI_Init_thread when built with MPI and started by a launcher (mpirun, srun; otherwise one rank
// and MPI stays untouched); rank() and size() after it. Without MPI: throws Error when the
// environment says this is one of several ranks (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_SIZE,
// SLURM_STEP_NUM_TASKS under srun), since N copies would each train the whole model alone.
void init(int* argc, char*** argv);
// Stops the watchdog, frees the NCCL communicator, MPI_Finalize; on a normal return from
// train_main only.
void finalize();
// Ends every rank at once with `code` (MPI_Abort), after an error on any rank that the others
// cannot know about; without MPI or with one rank it returns and the caller exits normally.
void abort_all(int code);

int rank();
int size();
bool launched();  // started by a launcher (MPI initialised), even as a single rank
bool compiled_with_mpi();
bool compiled_with_nccl();

// The watchdog (a thread on every rank, started when size() > 1 and seconds > 0): when one
// collective has waited more than `seconds`, it prints "rank R: error: no progress for S s in
// <what> at step N ..." plus `note()` on stderr and ends the job with MPI_Abort(code).
void start_watchdog(double seconds, int code);
// The step the loop is at (named in the watchdog's message).
void set_step(long step);
// A line the watchdog's message ends with (rank 0: the last checkpoint and how to resume).
void set_note(const std::string& note);
// The next collective on this rank is not timed: it waits for work of rank 0 alone whose length
// is not bounded by the step time (writing sample grids); `why` is kept for the message.
void excuse_next_wait(const char* why);

// In-place sums over all ranks (MPI_Allreduce, MPI_SUM) of host memory, identical on every rank.
void sum(double* v, int n);
// Everyone waits for everyone (MPI_Barrier). `what` names it in the watchdog's message; `timed`
// false: a wait for one rank's work of unbounded length (decoding a data set at start-up).
void barrier(const char* what, bool timed);

// Memory on the training device: host memory for --device cpu (MPI), GPU memory for --device
// cuda (NCCL, one GPU per rank). use_device() picks it before any of the three calls below; for
// Cuda it selects this rank's GPU (its local rank on the node) and creates the NCCL communicator
// (the ncclUniqueId broadcast over MPI). Throws Error when NCCL is not compiled in or the node has
// fewer GPUs than ranks.
void use_device(Device dev);
// Every rank gets rank 0's values (MPI_Bcast / ncclBroadcast).
void broadcast_params(float* v, size_t n);
// In place: the mean over ranks (sum, then x 1/ranks on the CPU; ncclAvg on the GPU). One call
// per step over the parameter arena's gradient buffer.
void mean_grads(float* v, size_t n);
// In-place sums of doubles in the device's memory (the synchronised batch norm's Graph::bn_sum).
void sum_device(double* v, int n);

}  // namespace prsr::train_cli::dist
