// libFuzzer harness: feed_config (tests/fuzz/fuzz_targets.h). Build and run: tests/fuzz/run_fuzz.sh
#include "tests/fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  obr::fuzz::feed_config(data, size);
  return 0;
}
