// ./build/sample's terminal: the progress bar on stderr (images done / total over the whole run,
// every temperature and the L2 baseline, images/s and ETA; on a terminal it redraws one line,
// otherwise it prints a line every 10 s and a final one) and Ctrl-C (SIGINT / SIGTERM).
#pragma once
#include <chrono>

#include "cli/signals.h"

namespace prsr::sample_cli {

class Progress {
 public:
  // `what` starts the line ("sampling", "nll").
  explicit Progress(long total_images, const char* what = "sampling");
  // Before each sample_images call: the images it samples at once.
  void begin_batch(int n) { batch_n_ = n; }
  // sample_images' progress callback: rows done / total of the current batch.
  void update(int done_rows, int total_rows);
  double seconds() const;  // since construction

 private:
  using clock = std::chrono::steady_clock;
  long total_;
  const char* what_;
  long done_images_ = 0;
  int batch_n_ = 0;
  clock::time_point t0_;
  bool tty_;
  double last_print_ = -1e9;
};

// True while a progress line is on stderr without its newline (main ends it before an error).
bool progress_line_open();

// SIGINT / SIGTERM taken by one thread, as train takes them (cli/signals.h). Call first thing
// in main. Until stop_gracefully_on_signals a signal has its default action (nothing is written
// yet); after it the first is only recorded (stop_signal: the sampling loop finishes its batch,
// writes its files and stops) and a second exits at once with 128 + signal (every PNG is written
// atomically).
void take_signals_in_one_thread();
using cli::stop_gracefully_on_signals;
int stop_signal();  // 0, or the first SIGINT / SIGTERM received after stop_gracefully_on_signals

}  // namespace prsr::sample_cli
