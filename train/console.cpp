#include "train/console.h"

#include <pthread.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <thread>

namespace prsr::train_cli {

bool g_tty = false;
std::atomic<int> g_signal{0};

namespace {

std::atomic<bool> g_graceful{false};  // the step loop has started: a first signal asks it to stop

// The only thread that receives SIGINT / SIGTERM / SIGUSR1 (every other thread blocks them).
void wait_for_signals(sigset_t set) {
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (g_signal.load()) _exit(128 + sig);  // a second Ctrl-C: stop now (checkpoints are atomic)
    if (!g_graceful.load()) {
      // Before the step loop there is nothing to save: the signal's default action, as if it
      // had never been blocked (the process dies by it).
      std::signal(sig, SIG_DFL);
      sigset_t one;
      sigemptyset(&one);
      sigaddset(&one, sig);
      pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
      raise(sig);
      _exit(128 + sig);
    }
    g_signal.store(sig);
  }
}

}  // namespace

void take_signals_in_one_thread() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);                   // mpirun forwards it to every rank at once (docs/distributed.md#faults)
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // inherited by every thread created from here on
  std::thread(wait_for_signals, set).detach();
}

void stop_gracefully_on_signals() { g_graceful.store(true); }

void say(const char* fmt, ...) {
  if (g_tty) std::fputs("\r\033[K", stdout);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stdout, fmt, ap);
  va_end(ap);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

std::string with_commas(uint64_t v) {
  std::string s = std::to_string(v), r;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) r += ',';
    r += s[i];
  }
  return r;
}

std::string hms(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long t = long(seconds + 0.5);
  char b[64];
  if (t >= 86400) std::snprintf(b, sizeof b, "%ldd%02ld:%02ld:%02ld", t / 86400, t / 3600 % 24, t / 60 % 60, t % 60);
  else if (t >= 3600) std::snprintf(b, sizeof b, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else std::snprintf(b, sizeof b, "%ld:%02ld", t / 60, t % 60);
  return b;
}

void ProgressLine::show(const std::string& line, long step, long steps, long print_every) {
  if (g_tty) {
    if (Clock::now() - last_draw_ > std::chrono::milliseconds(100) || step == steps) {
      std::printf("\r\033[K%s", line.c_str());
      std::fflush(stdout);
      last_draw_ = Clock::now();
    }
  } else if (step % print_every == 0 || step == steps) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
}

}  // namespace prsr::train_cli
