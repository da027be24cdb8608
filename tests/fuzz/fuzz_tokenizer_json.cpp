// libFuzzer harness: feed_tokenizer_json (tests/fuzz/fuzz_targets.h). Build and run: tests/fuzz/run_fuzz.sh
#include "tests/fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  obr::fuzz::feed_tokenizer_json(data, size);
  return 0;
}
