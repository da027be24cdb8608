// Replays the fuzzing corpus (tests/fuzz/corpus/<parser>/: seeds and every input that once
// crashed a reader) through the same entry points as the libFuzzer harnesses
// (tests/fuzz/fuzz_targets.h): each file must be accepted or rejected with an obr::Error,
// never crash. Runs in every build, so a fixed crash stays fixed without clang or libFuzzer.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>

#include "io/atomic_file.h"
#include "tests/fuzz/fuzz_targets.h"

namespace fs = std::filesystem;

namespace {

struct Replay {
  int accepted = 0, rejected = 0;
};

Replay replay(const std::string& parser, bool (*feed)(const uint8_t*, size_t)) {
  const fs::path dir = fs::path(OBR_SOURCE_DIR) / "tests/fuzz/corpus" / parser;
  REQUIRE_MESSAGE(fs::is_directory(dir), dir.string(), " is missing");
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  Replay r;
  for (const auto& f : files) {
    INFO(parser, ": ", f.filename().string());
    const std::string bytes = obr::read_file(f.string());
    bool ok = false;
    CHECK_NOTHROW(ok = feed(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    ++(ok ? r.accepted : r.rejected);
  }
  std::error_code ec;
  for (const char* ext : {".npy", ".safetensors"}) fs::remove(obr::fuzz::scratch_path(ext), ec);
  MESSAGE(parser, ": ", files.size(), " corpus files, ", r.accepted, " accepted, ", r.rejected, " rejected");
  return r;
}

}  // namespace

TEST_CASE("robust: fuzz corpus replays without crashes (npy)") {
  CHECK(replay("npy", obr::fuzz::feed_npy).accepted >= 1);
}
TEST_CASE("robust: fuzz corpus replays without crashes (safetensors)") {
  CHECK(replay("safetensors", obr::fuzz::feed_safetensors).accepted >= 1);
}
TEST_CASE("robust: fuzz corpus replays without crashes (config.json)") {
  CHECK(replay("config", obr::fuzz::feed_config).accepted >= 1);
}
TEST_CASE("robust: fuzz corpus replays without crashes (tokenizer.json)") {
  CHECK(replay("tokenizer_json", obr::fuzz::feed_tokenizer_json).accepted >= 1);
}
TEST_CASE("robust: fuzz corpus replays without crashes (tokenizer encode)") {
  CHECK(replay("tokenizer_encode", obr::fuzz::feed_tokenizer_encode).accepted >= 1);
}
