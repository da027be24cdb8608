// Stand-in for the few run-time functions of libhwy that a NEON-only build calls. Debian has no
// arm64 libhwy package for a cross build, while Highway's headers are architecture-neutral; so
// the aarch64 check compiles the kernels against the headers and links these instead. NEON is
// the only dynamic target (hwy_config.h leaves SVE out); SetSupportedTargetsForTest lets the
// tests pin a target as they do on x86.
#include <cstdarg>
#include <cstdio>
#include <cstdlib>

#include <hwy/targets.h>

namespace hwy {

static int64_t g_mock_targets = 0;

ChosenTarget& GetChosenTarget() {
  static ChosenTarget chosen;
  return chosen;
}
int64_t SupportedTargets() { return g_mock_targets ? g_mock_targets : (HWY_NEON | HWY_STATIC_TARGET); }
void DisableTargets(int64_t) {}
void SetSupportedTargetsForTest(int64_t targets) {
  g_mock_targets = targets;
  GetChosenTarget().DeInit();
}
void Abort(const char* file, int line, const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::fprintf(stderr, "%s:%d: ", file, line);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::abort();
}

}  // namespace hwy
