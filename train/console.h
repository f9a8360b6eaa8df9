// ./build/train's terminal: lines of output that clear the live progress line, the progress
// line itself, number formats, and the SIGINT / SIGTERM flag that the step loop polls.
#pragma once
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace prsr::train_cli {

extern bool g_tty;                 // stdout is a terminal: progress line redrawn with \r
extern std::atomic<int> g_signal;  // the first SIGINT / SIGTERM / SIGUSR1 received in the step loop

// SIGINT / SIGTERM / SIGUSR1 are taken by one thread that only waits for them, never by a handler that
// interrupts a computing thread: oneDNN 2.6's JIT GEMM kernels point rsp into the heap while
// they run, so a handler's frame corrupts the heap (a crash after Ctrl-C in ~1 run in 40; oneDNN
// issue 4845; see docs/train.md). Call first thing in main, before OpenMP starts its threads:
// they inherit the blocked mask.
void take_signals_in_one_thread();
// From here on the first SIGINT / SIGTERM / SIGUSR1 sets g_signal (the loop finishes its step, saves and
// stops) and a second one exits at once with 128 + signal (checkpoints are atomic, so nothing
// is torn). Before it, a signal has its default action (the process dies by it).
void stop_gracefully_on_signals();

// A line of output that first clears the live progress line on a terminal.
void say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

std::string with_commas(uint64_t v);  // 1234567 -> "1,234,567"
std::string hms(double seconds);      // "m:ss", "h:mm:ss" or "Ndhh:mm:ss"; "?" if not finite or < 0

// The progress line. On a terminal it is redrawn in place, at most every 100 ms and at the
// last step; otherwise it is a plain line every --print-every steps (and at the last step).
class ProgressLine {
 public:
  using Clock = std::chrono::steady_clock;
  ProgressLine() : last_draw_(Clock::now() - std::chrono::seconds(1)) {}  // the first step draws
  void show(const std::string& line, long step, long steps, long print_every);

 private:
  Clock::time_point last_draw_;
};

}  // namespace prsr::train_cli
