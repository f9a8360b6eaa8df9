#include "sample/progress.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

namespace prsr::sample_cli {

namespace {
bool g_line_open = false;  // a progress line is on stderr without its newline yet
}  // namespace

void take_signals_in_one_thread() { cli::take_signals_in_one_thread({SIGINT, SIGTERM}); }

int stop_signal() { return cli::g_signal.load(); }

bool progress_line_open() { return g_line_open; }

Progress::Progress(long total_images, const char* what)
    : total_(total_images), what_(what), t0_(clock::now()), tty_(isatty(2)) {}

double Progress::seconds() const { return std::chrono::duration<double>(clock::now() - t0_).count(); }

void Progress::update(int done_rows, int total_rows) {
  const double done = done_images_ + double(batch_n_) * done_rows / std::max(total_rows, 1);
  if (done_rows >= total_rows) done_images_ += batch_n_;
  const double now = seconds();
  const bool last = done_images_ >= total_;
  const double every = tty_ ? 0.1 : 10.0;
  if (!last && now - last_print_ < every) return;
  last_print_ = now;
  const double rate = now > 0 ? done / now : 0;
  const int width = 24, fill = int(width * done / std::max<double>(total_, 1));
  std::string bar(width, '.');
  std::fill(bar.begin(), bar.begin() + std::min(fill, width), '#');
  const long eta = rate > 0 ? long((total_ - done) / rate + 0.5) : 0;
  std::fprintf(stderr, "%s%s: [%s] %.0f/%ld images  %.2f img/s  ETA %ld:%02ld%s", tty_ ? "\r" : "", what_, bar.c_str(),
               std::floor(done), total_, rate, eta / 60, eta % 60, (last || !tty_) ? "\n" : "");
  std::fflush(stderr);
  g_line_open = tty_ && !last;
}

}  // namespace prsr::sample_cli
