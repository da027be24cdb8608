#include "io/json_util.h"

#include <set>
#include <vector>

#include "core/check.h"

namespace obr {

nlohmann::json parse_json(const std::string& text, const std::string& source) {
  using json = nlohmann::json;
  // One set of keys per open object. `parsed` is the key itself on a key event.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        // Stop at once: the parser itself would go on to the end of the input.
        OBR_CHECK(depth < kMaxJsonDepth, source, ": JSON nested deeper than ", kMaxJsonDepth, " levels");
        if (event == json::parse_event_t::object_start) open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open_objects.empty() && parsed.is_string() &&
            !open_objects.back().insert(parsed.get_ref<const std::string&>()).second && duplicate.empty())
          duplicate = parsed.get_ref<const std::string&>();
        break;
      default:
        break;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text, callback, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    // The message quotes the last token read, which may be huge: keep the first 300 bytes.
    std::string what = e.what();
    if (what.size() > 300) what = what.substr(0, 300) + "...";
    fail(source, ": not valid JSON: ", what);
  }
  OBR_CHECK(duplicate.empty(), source, ": JSON object has the key '", duplicate.substr(0, 200), "' twice");
  return j;
}

std::string json_brief(const nlohmann::json& v) {
  using json = nlohmann::json;
  auto dump = [](const json& x) { return x.dump(-1, ' ', false, json::error_handler_t::replace); };
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    if (s.size() <= 60) return dump(v);
    return dump(json(s.substr(0, 60))) + "... (" + std::to_string(s.size()) + " characters)";
  }
  if (v.is_object()) return "an object with " + std::to_string(v.size()) + (v.size() == 1 ? " key" : " keys");
  if (v.is_array()) {
    bool flat = v.size() <= 8;
    for (const auto& e : v) flat = flat && (e.is_number() || e.is_boolean() || e.is_null());
    if (flat) return dump(v);
    return "an array of " + std::to_string(v.size()) + (v.size() == 1 ? " element" : " elements");
  }
  return dump(v);  // number, bool, null
}

}  // namespace obr
