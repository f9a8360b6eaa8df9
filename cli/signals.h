// SIGINT / SIGTERM (and for train SIGUSR1) as ./build/train and ./build/sample take them: not by a
// handler that interrupts a computing thread (oneDNN 2.6's JIT GEMM kernels point rsp into the
// heap while they run, so a handler's frame corrupts the heap: a crash after Ctrl-C in ~1 run in
// 40; oneDNN issue 4845; docs/train.md) but by one thread that only waits for them in sigwait.
#pragma once
#include <atomic>
#include <initializer_list>

namespace prsr::cli {

// 0, or the first of the signals received after stop_gracefully_on_signals.
extern std::atomic<int> g_signal;
// How many SIGCONT were received, when SIGCONT is in take_signals_in_one_thread's set: it never
// stops anything (it continues a stopped process by itself), it is only counted. mpirun sends it
// to every rank the moment it is asked to end a job, a second before its SIGTERM.
extern std::atomic<int> g_sigcont_count;

// Blocks `signals` in this thread and so in every thread created after it (call first thing in
// main, before OpenMP or MPI start theirs), and starts the one thread that waits for them. Until
// stop_gracefully_on_signals a signal has its default action (the process dies by it: there is
// nothing to save yet).
void take_signals_in_one_thread(std::initializer_list<int> signals);
// From here on the first signal only sets g_signal (the program finishes its step or batch,
// writes what it has and exits with 128 + signal) and a second exits at once with 128 + signal
// (files are written atomically, so nothing is torn).
void stop_gracefully_on_signals();

}  // namespace prsr::cli
