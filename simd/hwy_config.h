// Highway target selection shared by every simd/*.cc that includes Highway: include this first.
//   * AVX3_DL (AVX-512 VNNI/VBMI/VBMI2) is compiled only on request in Highway 1.0.3.
//   * Scalable-vector targets (SVE*, RVV) are left out: their vector types are sizeless and
//     cannot live in the accumulator arrays of the kernels; on Arm the NEON target runs instead.
// cpu_info.cc and kernels.cc must see the same settings so that the target list the tests
// iterate over is the list the kernels were compiled for.
#pragma once

#ifndef HWY_WANT_AVX3_DL
#define HWY_WANT_AVX3_DL
#endif
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SVE | HWY_SVE2 | HWY_SVE_256 | HWY_SVE2_128 | HWY_RVV)
#endif
