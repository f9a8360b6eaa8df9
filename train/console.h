// ./build/train's terminal: lines of output that clear the live progress line, the progress
// line itself, number formats, and the SIGINT / SIGTERM flag that the step loop polls.
#pragma once
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "cli/signals.h"

namespace prsr::train_cli {

extern bool g_tty;    // stdout is a terminal: progress line redrawn with \r
using cli::g_signal;  // the first SIGINT / SIGTERM / SIGUSR1 received in the step loop (cli/signals.h)

// SIGINT / SIGTERM / SIGUSR1 taken by one thread (cli/signals.h). Call first thing in main.
void take_signals_in_one_thread();
// From here on the first signal sets g_signal (the loop finishes its step, saves and stops) and a
// second one exits at once with 128 + signal (checkpoints are atomic, so nothing is torn).
using cli::stop_gracefully_on_signals;

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
