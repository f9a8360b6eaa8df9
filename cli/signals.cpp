#include "cli/signals.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <csignal>
#include <thread>

namespace prsr::cli {

std::atomic<int> g_signal{0};
std::atomic<int> g_sigcont_count{0};

namespace {

std::atomic<bool> g_graceful{false};  // the main loop has started: a first signal asks it to stop

// The only thread that receives the signals of `set` (every other thread blocks them).
void wait_for_signals(sigset_t set) {
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGCONT) {  // counted only
      g_sigcont_count.fetch_add(1);
      continue;
    }
    if (g_signal.load()) _exit(128 + sig);  // a second Ctrl-C: stop now
    if (!g_graceful.load()) {
      // The signal's default action, as if it had never been blocked (the process dies by it).
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

void take_signals_in_one_thread(std::initializer_list<int> signals) {
  sigset_t set;
  sigemptyset(&set);
  for (int s : signals) sigaddset(&set, s);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // inherited by every thread created from here on
  std::thread(wait_for_signals, set).detach();
}

void stop_gracefully_on_signals() { g_graceful.store(true); }

}  // namespace prsr::cli
