// Progress and diagnostics go to stderr, results to stdout, so `obr ... > out.txt` keeps
// only results. OBR_QUIET=1 (or --quiet) silences progress.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "core/check.h"

namespace obr {

bool log_quiet();
void set_log_quiet(bool q);

template <class... Args>
void log_info(const Args&... args) {
  if (log_quiet()) return;
  std::string s = detail::concat(args...);
  std::fprintf(stderr, "%s\n", s.c_str());
}

// Detail for people tuning or debugging (per-linear timings ...): only with OBR_VERBOSE=1.
bool log_verbose();
template <class... Args>
void log_debug(const Args&... args) {
  if (!log_verbose()) return;
  std::string s = detail::concat(args...);
  std::fprintf(stderr, "%s\n", s.c_str());
}

template <class... Args>
void log_warn(const Args&... args) {
  std::string s = detail::concat(args...);
  std::fprintf(stderr, "warning: %s\n", s.c_str());
}

// Wall-clock seconds since construction.
class Timer {
 public:
  Timer() : t0_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  std::chrono::steady_clock::time_point t0_;
};

// One progress line for a loop of `total` steps: redrawn in place on a terminal, otherwise
// printed at about every 10% so logs stay short. Silent when log_quiet().
class ProgressLine {
 public:
  explicit ProgressLine(std::string what);
  void update(int64_t done, int64_t total, const std::string& detail = "");

 private:
  std::string what_;
  Timer timer_;
  bool tty_;
  int64_t last_decile_ = -1;
};

// Peak resident set size of this process in bytes (VmHWM), 0 where unknown.
size_t peak_rss_bytes();

}  // namespace obr
