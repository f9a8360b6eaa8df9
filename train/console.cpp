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
void take_signals_in_one_thread() {
  cli::take_signals_in_one_thread(
      {SIGINT, SIGTERM, SIGUSR1, SIGCONT});  // mpirun forwards SIGUSR1 (docs/distributed.md#faults)
}

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
