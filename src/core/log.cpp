#include "core/log.h"

#include <cstdlib>
#include <fstream>

namespace obr {

static int g_quiet = -1;

bool log_quiet() {
  if (g_quiet < 0) {
    const char* e = std::getenv("OBR_QUIET");
    g_quiet = (e && *e && *e != '0') ? 1 : 0;
  }
  return g_quiet == 1;
}

void set_log_quiet(bool q) { g_quiet = q ? 1 : 0; }

size_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return size_t(std::strtoull(line.c_str() + 6, nullptr, 10)) * 1024;
  }
  return 0;
}

}  // namespace obr
