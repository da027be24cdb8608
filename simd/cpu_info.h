#pragma once
#include <string>

namespace obr::simd {
// Name of the best SIMD target this binary carries and this CPU supports, e.g. "AVX3_DL".
std::string best_target_name();
}  // namespace obr::simd
