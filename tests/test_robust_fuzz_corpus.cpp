// Replays the fuzzing corpus (tests/fuzz/corpus/<parser>/: seeds and every input that once
// crashed a reader) through the same entry points as the libFuzzer harnesses
// (tests/fuzz/fuzz_targets.h): each file must be accepted or rejected with an obr::Error,
// never crash. Runs in every build, so a fixed crash stays fixed without clang or libFuzzer.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "io/atomic_file.h"
#include "io/json_util.h"
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

// Found while fuzzing (tests/fuzz/README.md): nesting is bounded, so a 100 MB safetensors
// header of '[' is refused at once instead of after minutes and ~8 GB.
TEST_CASE("robust: deeply nested JSON is refused at once") {
  auto nested = [](int depth) { return std::string(size_t(depth), '[') + std::string(size_t(depth), ']'); };
  CHECK_NOTHROW(obr::parse_json(nested(obr::kMaxJsonDepth), "ok.json"));
  CHECK_THROWS_WITH_AS(obr::parse_json(nested(obr::kMaxJsonDepth + 1), "deep.json"),
                       "deep.json: JSON nested deeper than 128 levels", obr::Error);
  // 20 MB of '{"a":' (the old parser read all of it before failing).
  std::string objects;
  for (int i = 0; i < 4'000'000; ++i) objects += "{\"a\":";
  CHECK_THROWS_WITH_AS(obr::parse_json(objects, "deep.json"), doctest::Contains("nested deeper"), obr::Error);
}
