// Which SIMD target Highway picked at run time, for benchmark and test output.
#include "simd/cpu_info.h"

#ifdef OBR_WITH_HWY
#include "simd/hwy_config.h"  // the same target set as simd/kernels.cc
#include <hwy/highway.h>
#include <hwy/targets.h>
#endif

namespace obr::simd {

std::string best_target_name() {
#ifdef OBR_WITH_HWY
  return hwy::TargetName(hwy::SupportedAndGeneratedTargets()[0]);
#else
  return "scalar (built without Highway)";
#endif
}

std::vector<SimdTarget> runnable_targets() {
  std::vector<SimdTarget> out;
#ifdef OBR_WITH_HWY
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) out.push_back({t, hwy::TargetName(t)});
#else
  out.push_back({0, best_target_name()});
#endif
  return out;
}

ScopedTarget::ScopedTarget(const SimdTarget& target) {
#ifdef OBR_WITH_HWY
  hwy::SetSupportedTargetsForTest(target.id);
#else
  (void)target;
#endif
}

ScopedTarget::~ScopedTarget() {
#ifdef OBR_WITH_HWY
  hwy::SetSupportedTargetsForTest(0);  // back to the CPU's own list
#endif
}

}  // namespace obr::simd
