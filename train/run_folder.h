// ./build/train's run folder: its default name, proving a folder writable before anything is
// created, and OUT/log.csv (the header, then one row of figures every --print-every steps).
#pragma once
#include <cstdio>
#include <optional>
#include <string>

namespace prsr::train_cli {

// "runs/<name>": fashion-mnist, celeba, folder-<last path component>.
std::string data_run_name(const std::string& spec);

// Proves that `dir` can be created and written without leaving anything behind: its nearest
// existing ancestor must be a folder in which a probe file can be created (and is removed).
// `what` names it in the error ("output folder", "checkpoint folder").
void check_writable_dir(const std::string& dir, const char* what);

// Creates `dir` (and parents) and proves it writable.
void ensure_writable_dir(const std::string& dir, const char* what);

// The folder of a file path; "." for a bare file name.
std::string parent_dir(const std::string& path);

// On a fresh run: a new OUT/log.csv with the header. On --resume: rows after the checkpoint's
// step (written by the run that was interrupted after its last checkpoint) are dropped, so the
// log has every step once. Written atomically (temp file, rename).
void prepare_log(const std::string& path, bool resume, long resume_step);

// OUT/log.csv opened for appending (after prepare_log); every row is flushed as it is written.
// Columns: step,loss,nll_bits,ce_a_bits,valid_loss,valid_bits,images_per_s,ms_per_step,lr,time
// with empty cells where a figure does not apply (no prior, no evaluation at that step).
class LogCsv {
 public:
  explicit LogCsv(const std::string& path);  // Error when it cannot be opened
  ~LogCsv() { close(); }
  LogCsv(const LogCsv&) = delete;
  LogCsv& operator=(const LogCsv&) = delete;

  void row(long step, double loss, std::optional<double> nll_bits, std::optional<double> ce_a_bits,
           std::optional<double> valid_loss, std::optional<double> valid_bits, double images_per_s, double ms_per_step,
           double lr, double time);
  void close();

 private:
  std::FILE* f_ = nullptr;
};

}  // namespace prsr::train_cli
