// Which SIMD target Highway picked at run time, for benchmark and test output.
#include "simd/cpu_info.h"

#ifdef OBR_WITH_HWY
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

}  // namespace obr::simd
