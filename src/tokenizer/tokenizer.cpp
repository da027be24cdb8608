#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <array>
#include <fstream>
#include <map>
#include <sstream>
#include <string_view>
#include <sys/stat.h>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/unicode.h"

namespace obr {

using nlohmann::json;
using tok::SplitBehavior;
using tok::SplitRegex;

namespace {

// ---- GPT-2's byte <-> character table (bytes_to_unicode in GPT-2's encoder.py) ----
// Printable bytes ! .. ~, ¡ .. ¬, ® .. ÿ stand for themselves; the other 68 bytes, in
// increasing order, become U+0100, U+0101, ... (so a space is U+0120 'Ġ', "\n" U+010A 'Ċ').
struct ByteChars {
  std::array<std::string, 256> to_char;  // byte -> UTF-8 of its character
  std::array<int16_t, 0x144> to_byte;    // character (all < U+0144) -> byte, or -1
  ByteChars() {
    to_byte.fill(-1);
    uint32_t extra = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? b : extra++;
      unicode::append_utf8(to_char[b], cp);
      to_byte[cp] = int16_t(b);
    }
  }
};
const ByteChars& byte_chars() {
  static const ByteChars t;
  return t;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(s);
  std::string out;
  out.reserve(s.size());
  size_t prev = 0;
  for (size_t p = s.find(from); p != std::string_view::npos; p = s.find(from, p + from.size())) {
    out.append(s.data() + prev, p - prev);
    out.append(to);
    prev = p + from.size();
  }
  out.append(s.data() + prev, s.size() - prev);
  return out;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// ---- pipeline steps, as read from the file ----

struct NormStep {
  enum Kind { Prepend, Replace, Nfc } kind;
  std::string a, b;  // Prepend: a = prefix; Replace: a -> b
};

enum class Prepend { Always, First, Never };

struct PreStep {
  enum Kind { SplitRe, SplitStr, ByteLevel, Metaspace } kind;
  SplitRegex re = SplitRegex::Gpt2;
  std::string pattern;  // SplitStr: the literal; Metaspace: the replacement character
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false, use_regex = true;  // ByteLevel
  Prepend prepend = Prepend::Always;                 // Metaspace
  bool split = true;                                 // Metaspace
};

struct DecStep {
  enum Kind { ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace } kind;
  std::string a, b;  // Replace: a -> b; Strip: a = the character; Metaspace: a = replacement
  size_t start = 0, stop = 0;
  Prepend prepend = Prepend::Always;
};

// One item of a TemplateProcessing "single" template: fixed ids, or the sequence ($A).
struct TemplateItem {
  bool sequence;
  std::vector<int32_t> ids;
};

struct AddedToken {
  std::string content;
  int32_t id;
  bool special, lstrip, rstrip, single_word, normalized;
};

// Byte trie of added-token contents for leftmost-longest matching.
class Trie {
 public:
  Trie() { root_.fill(-1); }
  void insert(std::string_view s, int32_t value) {
    if (s.empty()) return;
    int32_t node = root_[uint8_t(s[0])];
    if (node < 0) node = root_[uint8_t(s[0])] = new_node();
    for (size_t k = 1; k < s.size(); ++k) {
      auto it = nodes_[size_t(node)].next.find(uint8_t(s[k]));
      if (it != nodes_[size_t(node)].next.end()) {
        node = it->second;
      } else {
        const int32_t n = new_node();
        nodes_[size_t(node)].next[uint8_t(s[k])] = n;
        node = n;
      }
    }
    nodes_[size_t(node)].value = value;
  }
  bool empty() const { return nodes_.empty(); }
  // The longest content starting at s[i]: its length (0 if none) and value.
  size_t longest(std::string_view s, size_t i, int32_t& value) const {
    int32_t node = root_[uint8_t(s[i])];
    size_t best = 0;
    for (size_t k = i + 1; node >= 0; ++k) {
      const Node& n = nodes_[size_t(node)];
      if (n.value >= 0) best = k - i, value = n.value;
      if (k >= s.size()) break;
      auto it = n.next.find(uint8_t(s[k]));
      node = it == n.next.end() ? -1 : it->second;
    }
    return best;
  }

 private:
  struct Node {
    std::map<uint8_t, int32_t> next;
    int32_t value = -1;
  };
  int32_t new_node() {
    nodes_.emplace_back();
    return int32_t(nodes_.size() - 1);
  }
  std::array<int32_t, 256> root_;
  std::vector<Node> nodes_;
};

// A run of text, or an added token, from splitting on added tokens.
struct Segment {
  size_t begin, end;
  int32_t added;  // index into Impl::added, or -1 for text
};

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  OBR_CHECK(f.good(), path, ": cannot open for reading");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool is_dir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool is_file(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

struct Tokenizer::Impl {
  std::string file;
  tok::Bpe bpe;
  std::vector<AddedToken> added;
  std::vector<std::string> added_decoded;  // what decode() passes on: the normalized form for "normalized" tokens
  std::unordered_map<int32_t, int32_t> added_by_id;  // id -> index into added
  std::unordered_map<std::string, int32_t> added_by_content;
  Trie raw_trie, norm_trie;  // added tokens matched before / after normalization
  std::vector<NormStep> norm;
  std::vector<PreStep> pre;
  bool has_decoder = false;
  std::vector<DecStep> dec;
  std::vector<std::vector<TemplateItem>> post;  // templates applied in order
  int32_t bos = -1, eos = -1;
  bool byte_level = false;

  // ---- loading ----
  void parse(const json& j, const json* config);
  void parse_normalizer(const json& n);
  void parse_pre_tokenizer(const json& p);
  void parse_decoder(const json& d);
  void parse_post_processor(const json& p);
  void parse_added_tokens(const json& a);
  void pick_bos_eos(const json* config);
  int32_t lookup(const std::string& token) const {
    auto it = added_by_content.find(token);
    return it != added_by_content.end() ? added[size_t(it->second)].id : bpe.token_id(token);
  }

  // ---- encoding ----
  std::string normalize(std::string s) const;
  std::vector<Segment> split_added(std::string_view s, const Trie& trie) const;
  void encode_piece(const std::string& s, bool at_start, std::vector<int32_t>& out,
                    std::unordered_map<std::string, std::vector<int32_t>>& cache) const;
  std::vector<int32_t> encode(const std::string& text, bool add_special_tokens) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const;
};

// ---------------------------------------------------------------------------------------
// Loading

namespace {

const json& need(const json& o, const char* key, const std::string& file, const char* what) {
  auto it = o.find(key);
  OBR_CHECK(it != o.end(), file, ": ", what, " has no \"", key, "\"");
  return *it;
}

std::string type_of(const json& o, const std::string& file, const char* what) {
  OBR_CHECK(o.is_object(), file, ": ", what, " must be an object, got ", o.dump().substr(0, 80));
  const json& t = need(o, "type", file, what);
  OBR_CHECK(t.is_string(), file, ": ", what, ".type must be a string");
  return t.get<std::string>();
}

// A {"String": "..."} pattern; `what` names the step for the error on {"Regex": ...}.
std::string string_pattern(const json& p, const std::string& file, const std::string& what) {
  OBR_CHECK(p.is_object(), file, ": ", what, " pattern must be an object");
  if (p.contains("String") && p["String"].is_string()) return p["String"].get<std::string>();
  if (p.contains("Regex")) fail(file, ": ", what, " with a Regex pattern ", p["Regex"].dump(), " is not supported");
  fail(file, ": ", what, " pattern ", p.dump(), " is neither {\"String\": ...} nor {\"Regex\": ...}");
}

Prepend parse_prepend(const json& o, const std::string& file) {
  // prepend_scheme, or the older add_prefix_space (true: always, false: never).
  if (auto it = o.find("prepend_scheme"); it != o.end() && !it->is_null()) {
    const std::string s = it->get<std::string>();
    if (s == "always") return Prepend::Always;
    if (s == "first") return Prepend::First;
    if (s == "never") return Prepend::Never;
    fail(file, ": Metaspace prepend_scheme \"", s, "\" is not always, first or never");
  }
  if (auto it = o.find("add_prefix_space"); it != o.end() && it->is_boolean())
    return it->get<bool>() ? Prepend::Always : Prepend::Never;
  return Prepend::Always;
}

std::string one_char(const json& o, const char* key, const std::string& file, const char* what) {
  const json& v = need(o, key, file, what);
  OBR_CHECK(v.is_string(), file, ": ", what, ".", key, " must be a string");
  std::string s = v.get<std::string>();
  size_t i = 0;
  if (!s.empty()) unicode::next_cp(s, i);
  OBR_CHECK(!s.empty() && i == s.size(), file, ": ", what, ".", key, " must be one character, got \"", s, "\"");
  return s;
}

bool get_bool(const json& o, const char* key, bool def) {
  auto it = o.find(key);
  return it != o.end() && it->is_boolean() ? it->get<bool>() : def;
}

}  // namespace

void Tokenizer::Impl::parse_normalizer(const json& n) {
  if (n.is_null()) return;
  const std::string t = type_of(n, file, "normalizer");
  if (t == "Sequence") {
    const json& list = need(n, "normalizers", file, "normalizer Sequence");
    OBR_CHECK(list.is_array(), file, ": normalizer Sequence.normalizers must be an array");
    for (const json& x : list) parse_normalizer(x);
  } else if (t == "Prepend") {
    norm.push_back({NormStep::Prepend, need(n, "prepend", file, "normalizer Prepend").get<std::string>(), ""});
  } else if (t == "Replace") {
    norm.push_back({NormStep::Replace, string_pattern(need(n, "pattern", file, "normalizer Replace"), file,
                                                      "normalizer Replace"),
                    need(n, "content", file, "normalizer Replace").get<std::string>()});
  } else if (t == "NFC") {
    norm.push_back({NormStep::Nfc, "", ""});
  } else {
    fail(file, ": normalizer type \"", t, "\" is not supported (supported: Sequence, Prepend, Replace, NFC)");
  }
}

void Tokenizer::Impl::parse_pre_tokenizer(const json& p) {
  if (p.is_null()) return;
  const std::string t = type_of(p, file, "pre_tokenizer");
  PreStep s{};
  if (t == "Sequence") {
    const json& list = need(p, "pretokenizers", file, "pre_tokenizer Sequence");
    OBR_CHECK(list.is_array(), file, ": pre_tokenizer Sequence.pretokenizers must be an array");
    for (const json& x : list) parse_pre_tokenizer(x);
    return;
  } else if (t == "Split") {
    const json& pat = need(p, "pattern", file, "pre_tokenizer Split");
    OBR_CHECK(pat.is_object(), file, ": pre_tokenizer Split.pattern must be an object");
    if (pat.contains("Regex")) {
      const std::string re = pat["Regex"].get<std::string>();
      s.kind = PreStep::SplitRe;
      OBR_CHECK(tok::known_split_regex(re, s.re), file, ": pre_tokenizer Split regex ", json(re).dump(),
                " is not supported (supported: the GPT-2, Llama-3 and Qwen2 regexes)");
    } else {
      s.kind = PreStep::SplitStr;
      s.pattern = string_pattern(pat, file, "pre_tokenizer Split");
    }
    const std::string b = need(p, "behavior", file, "pre_tokenizer Split").get<std::string>();
    OBR_CHECK(tok::parse_split_behavior(b, s.behavior), file, ": pre_tokenizer Split behavior \"", b,
              "\" is unknown");
    s.invert = get_bool(p, "invert", false);
  } else if (t == "ByteLevel") {
    s.kind = PreStep::ByteLevel;
    s.add_prefix_space = get_bool(p, "add_prefix_space", true);
    s.use_regex = get_bool(p, "use_regex", true);
    byte_level = true;
  } else if (t == "Metaspace") {
    s.kind = PreStep::Metaspace;
    s.pattern = one_char(p, "replacement", file, "pre_tokenizer Metaspace");
    s.prepend = parse_prepend(p, file);
    s.split = get_bool(p, "split", true);
  } else {
    fail(file, ": pre_tokenizer type \"", t, "\" is not supported (supported: Sequence, Split, ByteLevel, Metaspace)");
  }
  pre.push_back(s);
}

void Tokenizer::Impl::parse_decoder(const json& d) {
  if (d.is_null()) return;
  has_decoder = true;
  const std::string t = type_of(d, file, "decoder");
  DecStep s{};
  if (t == "Sequence") {
    const json& list = need(d, "decoders", file, "decoder Sequence");
    OBR_CHECK(list.is_array(), file, ": decoder Sequence.decoders must be an array");
    for (const json& x : list) parse_decoder(x);
    return;
  } else if (t == "ByteLevel") {
    s.kind = DecStep::ByteLevel;
  } else if (t == "Replace") {
    s.kind = DecStep::Replace;
    s.a = string_pattern(need(d, "pattern", file, "decoder Replace"), file, "decoder Replace");
    s.b = need(d, "content", file, "decoder Replace").get<std::string>();
  } else if (t == "ByteFallback") {
    s.kind = DecStep::ByteFallback;
  } else if (t == "Fuse") {
    s.kind = DecStep::Fuse;
  } else if (t == "Strip") {
    s.kind = DecStep::Strip;
    s.a = one_char(d, "content", file, "decoder Strip");
    s.start = need(d, "start", file, "decoder Strip").get<size_t>();
    s.stop = need(d, "stop", file, "decoder Strip").get<size_t>();
  } else if (t == "Metaspace") {
    s.kind = DecStep::Metaspace;
    s.a = one_char(d, "replacement", file, "decoder Metaspace");
    s.prepend = parse_prepend(d, file);
  } else {
    fail(file, ": decoder type \"", t,
         "\" is not supported (supported: Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace)");
  }
  dec.push_back(s);
}

void Tokenizer::Impl::parse_post_processor(const json& p) {
  if (p.is_null()) return;
  const std::string t = type_of(p, file, "post_processor");
  if (t == "Sequence") {
    const json& list = need(p, "processors", file, "post_processor Sequence");
    OBR_CHECK(list.is_array(), file, ": post_processor Sequence.processors must be an array");
    for (const json& x : list) parse_post_processor(x);
  } else if (t == "ByteLevel") {
    // Only trims offsets: no ids change.
  } else if (t == "TemplateProcessing") {
    const json& single = need(p, "single", file, "post_processor TemplateProcessing");
    const json& specials = need(p, "special_tokens", file, "post_processor TemplateProcessing");
    OBR_CHECK(single.is_array() && specials.is_object(), file,
              ": TemplateProcessing needs a \"single\" array and a \"special_tokens\" object");
    std::vector<TemplateItem> items;
    for (const json& item : single) {
      if (item.contains("Sequence")) {
        items.push_back({true, {}});
      } else if (item.contains("SpecialToken")) {
        const std::string name = item["SpecialToken"].value("id", "");
        auto it = specials.find(name);
        OBR_CHECK(it != specials.end() && it->contains("ids") && (*it)["ids"].is_array(), file,
                  ": TemplateProcessing uses special token \"", name, "\", which special_tokens does not define");
        items.push_back({false, (*it)["ids"].get<std::vector<int32_t>>()});
      } else {
        fail(file, ": TemplateProcessing item ", item.dump(), " is neither SpecialToken nor Sequence");
      }
    }
    post.push_back(std::move(items));
  } else if (t == "RobertaProcessing" || t == "BertProcessing") {
    const json& cls = need(p, "cls", file, "post_processor");
    const json& sep = need(p, "sep", file, "post_processor");
    OBR_CHECK(cls.is_array() && cls.size() == 2 && sep.is_array() && sep.size() == 2, file, ": ", t,
              " cls and sep must be [token, id]");
    post.push_back({{false, {cls[1].get<int32_t>()}}, {true, {}}, {false, {sep[1].get<int32_t>()}}});
  } else {
    fail(file, ": post_processor type \"", t,
         "\" is not supported (supported: TemplateProcessing, ByteLevel, Sequence, RobertaProcessing, BertProcessing)");
  }
}

void Tokenizer::Impl::parse_added_tokens(const json& a) {
  if (a.is_null()) return;
  OBR_CHECK(a.is_array(), file, ": added_tokens must be an array");
  for (const json& t : a) {
    OBR_CHECK(t.is_object() && t.contains("id") && t["id"].is_number_integer() && t.contains("content") &&
                  t["content"].is_string(),
              file, ": added token ", t.dump(), " needs an integer \"id\" and a string \"content\"");
    AddedToken x{t["content"].get<std::string>(), t["id"].get<int32_t>(), get_bool(t, "special", false),
                 get_bool(t, "lstrip", false),       get_bool(t, "rstrip", false),
                 get_bool(t, "single_word", false),  get_bool(t, "normalized", !get_bool(t, "special", false))};
    OBR_CHECK(x.id >= 0, file, ": added token \"", x.content, "\" has a negative id");
    added.push_back(x);
  }
  for (size_t k = 0; k < added.size(); ++k) {
    added_by_id[added[k].id] = int32_t(k);
    added_by_content[added[k].content] = int32_t(k);
  }
}

void Tokenizer::Impl::pick_bos_eos(const json* config) {
  // 1. tokenizer_config.json: "bos_token": "<s>" | {"content": "<s>", ...} | null.
  bool bos_set = false, eos_set = false;
  const auto from_config = [&](const char* key, int32_t& id, bool& set) {
    if (!config || !config->contains(key)) return;
    const json& v = (*config)[key];
    set = true;
    if (v.is_string()) id = lookup(v.get<std::string>());
    else if (v.is_object() && v.contains("content") && v["content"].is_string()) id = lookup(v["content"].get<std::string>());
    else id = -1;
  };
  from_config("bos_token", bos, bos_set);
  from_config("eos_token", eos, eos_set);
  // 2. The post-processor's template: the special token before $A, and the one after it.
  for (const auto& items : post) {
    const auto seq = std::find_if(items.begin(), items.end(), [](const TemplateItem& i) { return i.sequence; });
    if (!bos_set && seq != items.begin() && !items.front().ids.empty()) bos = items.front().ids.front(), bos_set = true;
    if (!eos_set && seq != items.end() && seq + 1 != items.end() && !(seq + 1)->ids.empty())
      eos = (seq + 1)->ids.front(), eos_set = true;
  }
  // 3. Well-known names among the added tokens and the vocab.
  const auto by_name = [&](std::initializer_list<const char*> names, int32_t& id, bool set) {
    if (set) return;
    for (const char* n : names)
      if ((id = lookup(n)) >= 0) return;
  };
  by_name({"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"}, bos, bos_set);
  by_name({"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"}, eos, eos_set);
}

void Tokenizer::Impl::parse(const json& j, const json* config) {
  OBR_CHECK(j.is_object(), file, ": the top level must be a JSON object");
  auto mit = j.find("model");
  OBR_CHECK(mit != j.end() && mit->is_object(), file, ": no \"model\" object");
  std::string model_type = mit->value("type", "");
  if (model_type.empty() && mit->contains("merges")) model_type = "BPE";  // very old files omit it
  OBR_CHECK(model_type == "BPE", file, ": model type \"", model_type, "\" is not supported (only BPE)");
  bpe = tok::Bpe::from_json(*mit, file);
  if (j.contains("added_tokens")) parse_added_tokens(j["added_tokens"]);
  if (j.contains("normalizer")) parse_normalizer(j["normalizer"]);
  if (j.contains("pre_tokenizer")) parse_pre_tokenizer(j["pre_tokenizer"]);
  if (j.contains("decoder")) parse_decoder(j["decoder"]);
  if (j.contains("post_processor")) parse_post_processor(j["post_processor"]);
  for (const DecStep& d : dec) byte_level = byte_level || d.kind == DecStep::ByteLevel;
  // Tokens marked "normalized" are matched in normalized text, so by their normalized form,
  // and (as the library's normalized_cache does) decode from that form too.
  for (size_t k = 0; k < added.size(); ++k) {
    added_decoded.push_back(added[k].normalized ? normalize(added[k].content) : added[k].content);
    if (added[k].normalized) norm_trie.insert(added_decoded[k], int32_t(k));
    else raw_trie.insert(added[k].content, int32_t(k));
  }
  pick_bos_eos(config);
}

// ---------------------------------------------------------------------------------------
// Encoding

std::string Tokenizer::Impl::normalize(std::string s) const {
  for (const NormStep& n : norm) {
    switch (n.kind) {
      case NormStep::Prepend:
        if (!s.empty()) s.insert(0, n.a);
        break;
      case NormStep::Replace:
        s = replace_all(s, n.a, n.b);
        break;
      case NormStep::Nfc:
        s = unicode::nfc(s);
        break;
    }
  }
  return s;
}

namespace {

// \w of the Rust regex crate (Alphabetic, M, Nd, Pc, Join_Control), for single_word tokens.
// Approximated by L, M, N, the ten Pc characters and ZWNJ/ZWJ: a No such as '½' counts as a
// word character here and not there, and the few Alphabetic symbols (circled letters) do not.
bool word_char(uint32_t cp) {
  switch (cp) {
    case '_': case 0x203F: case 0x2040: case 0x2054: case 0xFE33: case 0xFE34: case 0xFE4D: case 0xFE4E:
    case 0xFE4F: case 0xFF3F: case 0x200C: case 0x200D:
      return true;
    default:
      return unicode::letter(cp) || unicode::number(cp) || unicode::mark(cp);
  }
}

uint32_t last_cp(std::string_view s) {
  size_t i = s.size();
  while (i > 0 && (uint8_t(s[i - 1]) & 0xC0) == 0x80) --i;
  if (i > 0) --i;
  return unicode::next_cp(s, i);
}

}  // namespace

// The library's AddedVocabulary::find_matches: leftmost-longest matches; single_word tokens
// only between non-word characters; lstrip / rstrip take the white space beside the token.
std::vector<Segment> Tokenizer::Impl::split_added(std::string_view s, const Trie& trie) const {
  std::vector<Segment> out;
  if (trie.empty()) {
    if (!s.empty()) out.push_back({0, s.size(), -1});
    return out;
  }
  size_t start_offset = 0;
  for (size_t i = 0; i < s.size();) {
    int32_t k = -1;
    const size_t len = trie.longest(s, i, k);
    if (len == 0) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + len;
    i = stop;
    const AddedToken& t = added[size_t(k)];
    if (t.single_word) {
      size_t j = stop;
      const bool space_before = start == 0 || !word_char(last_cp(s.substr(0, start)));
      const bool space_after = stop == s.size() || !word_char(unicode::next_cp(s, j));
      if (!space_before || !space_after) continue;
    }
    if (t.lstrip) {
      size_t b = start;
      while (b > 0) {
        size_t c = b - 1;
        while (c > 0 && (uint8_t(s[c]) & 0xC0) == 0x80) --c;
        size_t e = c;
        if (!unicode::whitespace(unicode::next_cp(s, e))) break;
        b = c;
      }
      start = std::max(b, start_offset);
    }
    if (t.rstrip) {
      while (stop < s.size()) {
        size_t e = stop;
        if (!unicode::whitespace(unicode::next_cp(s, e))) break;
        stop = e;
      }
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, k});
    start_offset = stop;
  }
  if (start_offset < s.size()) out.push_back({start_offset, s.size(), -1});
  return out;
}

void Tokenizer::Impl::encode_piece(const std::string& s, bool at_start, std::vector<int32_t>& out,
                                   std::unordered_map<std::string, std::vector<int32_t>>& cache) const {
  struct Piece {
    std::string text;
    bool at_start;  // begins at offset 0 of the original text (Metaspace "first")
  };
  std::vector<Piece> pieces{{s, at_start}}, next;
  const auto split_into = [&](const Piece& p, const std::vector<std::pair<size_t, size_t>>& spans) {
    for (const auto& sp : spans) next.push_back({p.text.substr(sp.first, sp.second - sp.first), p.at_start && sp.first == 0});
  };
  for (const PreStep& st : pre) {
    next.clear();
    for (Piece& p : pieces) {
      switch (st.kind) {
        case PreStep::SplitRe:
          split_into(p, tok::split_spans(tok::regex_spans(st.re, p.text), st.behavior, st.invert));
          break;
        case PreStep::SplitStr:
          split_into(p, tok::split_spans(tok::string_spans(st.pattern, p.text), st.behavior, st.invert));
          break;
        case PreStep::ByteLevel: {
          if (st.add_prefix_space && !starts_with(p.text, " ")) p.text.insert(0, " ");
          const size_t first = next.size();
          if (st.use_regex) {
            split_into(p, tok::split_spans(tok::regex_spans(SplitRegex::Gpt2, p.text), SplitBehavior::Isolated, false));
          } else {
            next.push_back(std::move(p));
          }
          const ByteChars& bc = byte_chars();
          for (size_t k = first; k < next.size(); ++k) {
            std::string mapped;
            mapped.reserve(next[k].text.size() * 2);
            for (char c : next[k].text) mapped += bc.to_char[uint8_t(c)];
            next[k].text = std::move(mapped);
          }
          break;
        }
        case PreStep::Metaspace: {
          p.text = replace_all(p.text, " ", st.pattern);
          const bool prepend = !p.text.empty() && !starts_with(p.text, st.pattern) &&
                               (st.prepend == Prepend::Always || (st.prepend == Prepend::First && p.at_start));
          if (prepend) p.text.insert(0, st.pattern);
          if (st.split) split_into(p, tok::split_spans(tok::string_spans(st.pattern, p.text), SplitBehavior::MergedWithNext, false));
          else next.push_back(std::move(p));
          break;
        }
      }
    }
    pieces.swap(next);
  }
  for (const Piece& p : pieces) {
    if (p.text.size() > 256) {  // long words (a whole text without a pre-tokenizer): no cache
      bpe.tokenize(p.text, out);
      continue;
    }
    auto it = cache.find(p.text);
    if (it == cache.end()) {
      std::vector<int32_t> ids;
      bpe.tokenize(p.text, ids);
      it = cache.emplace(p.text, std::move(ids)).first;
    }
    out.insert(out.end(), it->second.begin(), it->second.end());
  }
}

std::vector<int32_t> Tokenizer::Impl::encode(const std::string& text, bool add_special_tokens) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::unordered_map<std::string, std::vector<int32_t>> cache;
  for (const Segment& seg : split_added(text, raw_trie)) {
    if (seg.added >= 0) {
      ids.push_back(added[size_t(seg.added)].id);
      continue;
    }
    const std::string normalized = normalize(text.substr(seg.begin, seg.end - seg.begin));
    for (const Segment& sub : split_added(normalized, norm_trie)) {
      if (sub.added >= 0) ids.push_back(added[size_t(sub.added)].id);
      else encode_piece(normalized.substr(sub.begin, sub.end - sub.begin), seg.begin == 0 && sub.begin == 0, ids, cache);
    }
  }
  if (add_special_tokens) {
    for (const auto& items : post) {
      std::vector<int32_t> wrapped;
      wrapped.reserve(ids.size() + 4);
      for (const TemplateItem& item : items) {
        if (item.sequence) wrapped.insert(wrapped.end(), ids.begin(), ids.end());
        else wrapped.insert(wrapped.end(), item.ids.begin(), item.ids.end());
      }
      ids.swap(wrapped);
    }
  }
  return ids;
}

// ---------------------------------------------------------------------------------------
// Decoding

std::string Tokenizer::Impl::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> toks;
  toks.reserve(ids.size());
  for (int32_t id : ids) {
    auto a = added_by_id.find(id);
    if (a != added_by_id.end()) {
      const AddedToken& t = added[size_t(a->second)];
      if (!(skip_special_tokens && t.special)) toks.push_back(added_decoded[size_t(a->second)]);
    } else if (const std::string* s = bpe.token_str(id)) {
      if (!(skip_special_tokens && added_by_content.count(*s) && added[size_t(added_by_content.at(*s))].special)) {
        toks.push_back(*s);
      }
    }
  }
  if (!has_decoder) {
    std::string out;
    for (size_t k = 0; k < toks.size(); ++k) out += (k ? " " : "") + toks[k];
    return out;
  }
  for (const DecStep& d : dec) {
    switch (d.kind) {
      case DecStep::ByteLevel: {  // all tokens -> bytes -> one string, invalid UTF-8 as U+FFFD
        const ByteChars& bc = byte_chars();
        std::string bytes;
        for (const std::string& t : toks) {
          const size_t mark = bytes.size();
          bool all = true;
          for (size_t i = 0; i < t.size() && all;) {
            const uint32_t cp = unicode::next_cp(t, i);
            if (cp < bc.to_byte.size() && bc.to_byte[cp] >= 0) bytes += char(bc.to_byte[cp]);
            else all = false;
          }
          if (!all) bytes.replace(mark, std::string::npos, t);  // not byte-level: the token as it is
        }
        toks.assign(1, unicode::utf8_lossy(bytes));
        break;
      }
      case DecStep::Replace:
        for (std::string& t : toks) t = replace_all(t, d.a, d.b);
        break;
      case DecStep::ByteFallback: {  // runs of <0xNN> -> their bytes if valid UTF-8, else one U+FFFD each
        std::vector<std::string> res;
        std::string run;
        const auto flush = [&] {
          if (run.empty()) return;
          if (unicode::valid_utf8(run)) res.push_back(run);
          else
            for (size_t k = 0; k < run.size(); ++k) res.push_back("\xEF\xBF\xBD");
          run.clear();
        };
        for (std::string& t : toks) {
          int byte = -1;
          if (t.size() == 6 && starts_with(t, "<0x") && t[5] == '>' && std::isxdigit(uint8_t(t[3])) &&
              std::isxdigit(uint8_t(t[4])))
            byte = std::stoi(t.substr(3, 2), nullptr, 16);
          if (byte >= 0) {
            run += char(byte);
          } else {
            flush();
            res.push_back(std::move(t));
          }
        }
        flush();
        toks.swap(res);
        break;
      }
      case DecStep::Fuse: {
        std::string all;
        for (const std::string& t : toks) all += t;
        toks.assign(1, all);
        break;
      }
      case DecStep::Strip:  // up to `start` leading and `stop` trailing copies of one character
        for (std::string& t : toks) {
          size_t b = 0, e = t.size();
          for (size_t k = 0; k < d.start && starts_with(std::string_view(t).substr(b), d.a); ++k) b += d.a.size();
          for (size_t k = 0; k < d.stop && e >= b + d.a.size() && t.compare(e - d.a.size(), d.a.size(), d.a) == 0; ++k)
            e -= d.a.size();
          t = t.substr(b, e - b);
        }
        break;
      case DecStep::Metaspace:  // replacement -> ' ', dropped in the first token unless prepend_scheme is never
        for (size_t k = 0; k < toks.size(); ++k)
          toks[k] = replace_all(toks[k], d.a, k == 0 && d.prepend != Prepend::Never ? "" : " ");
        break;
    }
  }
  std::string out;
  for (const std::string& t : toks) out += t;
  return out;
}

// ---------------------------------------------------------------------------------------
// Public API

Tokenizer Tokenizer::from_json_text(const std::string& tokenizer_json, const std::string& config_json,
                                    const std::string& name) {
  auto impl = std::make_shared<Impl>();
  impl->file = name;
  json j, config;
  try {
    j = json::parse(tokenizer_json);
  } catch (const json::exception& e) {
    fail(name, ": not valid JSON (", e.what(), ")");
  }
  if (!config_json.empty()) {
    try {
      config = json::parse(config_json);
    } catch (const json::exception& e) {
      fail(name, ": the tokenizer_config.json beside it is not valid JSON (", e.what(), ")");
    }
  }
  try {
    impl->parse(j, config.is_object() ? &config : nullptr);
  } catch (const json::exception& e) {  // a field of the wrong JSON type
    fail(name, ": unexpected content (", e.what(), ")");
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::string file = path;
  if (is_dir(path)) {
    file = path + "/tokenizer.json";
    OBR_CHECK(is_file(file), path, ": a directory without tokenizer.json");
  }
  const size_t slash = file.find_last_of('/');
  const std::string config = (slash == std::string::npos ? std::string() : file.substr(0, slash + 1)) +
                             "tokenizer_config.json";
  return from_json_text(read_file(file), is_file(config) ? read_file(config) : std::string(), file);
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_special_tokens) const {
  return impl_->encode(text, add_special_tokens);
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens);
}

std::vector<std::string> Tokenizer::tokens(const std::vector<int32_t>& ids) const {
  std::vector<std::string> out;
  out.reserve(ids.size());
  for (int32_t id : ids) out.push_back(token_str(id));
  return out;
}

std::string Tokenizer::token_str(int32_t id) const {
  auto a = impl_->added_by_id.find(id);
  if (a != impl_->added_by_id.end()) return impl_->added[size_t(a->second)].content;
  const std::string* s = impl_->bpe.token_str(id);
  OBR_CHECK(s, impl_->file, ": no token has id ", id, " (vocab size ", vocab_size(), ")");
  return *s;
}

int32_t Tokenizer::token_id(const std::string& token) const { return impl_->lookup(token); }

int32_t Tokenizer::vocab_size() const {
  int32_t m = impl_->bpe.max_id();
  for (const AddedToken& t : impl_->added) m = std::max(m, t.id);
  return m + 1;
}

int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }

std::string Tokenizer::kind() const {
  if (impl_->byte_level) return "bpe-byte-level";
  if (impl_->bpe.byte_fallback()) return "bpe-byte-fallback";
  return "bpe";
}

const std::string& Tokenizer::path() const { return impl_->file; }

}  // namespace obr
