#include "core/log.h"

#include <cstdlib>
#include <fstream>
#include <unistd.h>

namespace obr {

static int g_quiet = -1;

bool log_quiet() {
  if (g_quiet < 0) {
    const char* e = std::getenv("OBR_QUIET");
    g_quiet = (e && *e && *e != '0') ? 1 : 0;
  }
  return g_quiet == 1;
}

bool log_verbose() {
  static const bool v = [] {
    const char* e = std::getenv("OBR_VERBOSE");
    return e && *e && *e != '0';
  }();
  return v;
}

void set_log_quiet(bool q) { g_quiet = q ? 1 : 0; }

ProgressLine::ProgressLine(std::string what) : what_(std::move(what)), tty_(::isatty(2) != 0) {}

void ProgressLine::update(int64_t done, int64_t total, const std::string& detail) {
  if (log_quiet()) return;
  const int64_t decile = total > 0 ? done * 10 / total : 0;
  if (tty_) {
    std::fprintf(stderr, "\r  %s %lld/%lld  %s  %.1f s   ", what_.c_str(), (long long)done, (long long)total, detail.c_str(),
                 timer_.seconds());
    if (done == total) std::fprintf(stderr, "\n");
  } else if (decile != last_decile_ || done == total) {
    std::fprintf(stderr, "  %s %lld/%lld  %s  %.1f s\n", what_.c_str(), (long long)done, (long long)total, detail.c_str(),
                 timer_.seconds());
  }
  last_decile_ = decile;
}

size_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return size_t(std::strtoull(line.c_str() + 6, nullptr, 10)) * 1024;
  }
  return 0;
}

}  // namespace obr
