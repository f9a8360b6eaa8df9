// The progress bar of long decoding work, on stderr with '\r', at most 10 times a second:
//   "decoding celeba train: [#####...............] 12345/162770  3.2k img/s  ETA 0:42"
// Used by the data sets (dataset.cpp, lsun.cpp); header-only, it is small.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace prsr::data {

struct Progress {
  using clock = std::chrono::steady_clock;
  bool on = false;
  std::string label;
  int total = 0;
  int first = 0;  // already done when the bar started (a resumed build): not counted in the rate
  clock::time_point start = clock::now(), last{};

  void update(int done, bool final = false) {
    if (!on) return;
    const auto now = clock::now();
    if (!final && now - last < std::chrono::milliseconds(100)) return;
    last = now;
    const double secs = std::chrono::duration<double>(now - start).count();
    const double rate = secs > 0 ? (done - first) / secs : 0.0;
    const int width = 20, fill = total > 0 ? (int)((int64_t)done * width / total) : width;
    std::string bar(width, '.');
    std::fill(bar.begin(), bar.begin() + fill, '#');
    char rate_s[32];
    if (rate >= 1000) std::snprintf(rate_s, sizeof rate_s, "%.1fk", rate / 1000);
    else std::snprintf(rate_s, sizeof rate_s, "%.0f", rate);
    const int eta = rate > 0 ? (int)((total - done) / rate + 0.5) : 0;
    char eta_s[32];
    if (eta >= 3600) std::snprintf(eta_s, sizeof eta_s, "%d:%02d:%02d", eta / 3600, eta / 60 % 60, eta % 60);
    else std::snprintf(eta_s, sizeof eta_s, "%d:%02d", eta / 60, eta % 60);
    std::fprintf(stderr, "\r%s: [%s] %d/%d  %s img/s  ETA %s%s", label.c_str(), bar.c_str(), done, total, rate_s, eta_s,
                 final ? "\n" : "");
    std::fflush(stderr);
  }
};

}  // namespace prsr::data
