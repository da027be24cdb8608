// Strict JSON for obr's file readers (safetensors headers, index files, config.json).
//
// parse_json() turns every nlohmann::json exception into an obr::Error naming the source
// and the byte position, and also rejects duplicate keys in any object (standard JSON
// parsers silently keep the last one, which would let a hostile safetensors header
// describe one tensor twice), and nesting deeper than kMaxJsonDepth (a 100 MB header of
// '[' would otherwise take minutes and ~8 GB to reject). json_brief() describes a value for
// an error message without printing megabytes or recursing into deeply nested input.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace obr {

// The Python safetensors library (serde_json) refuses nesting deeper than 128 as well; obr's
// formats need at most 4 levels.
constexpr int kMaxJsonDepth = 128;

nlohmann::json parse_json(const std::string& text, const std::string& source);

// `42`, `"F32"`, `[1, 2]` for small flat values; `an object with 3 keys`, `an array of
// 1000 elements` otherwise. Strings are cut at 60 characters.
std::string json_brief(const nlohmann::json& v);

}  // namespace obr
