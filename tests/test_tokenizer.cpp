// Tokenizer tests: toy tokenizer.json files built here with hand-computed ids, the
// pre-tokenizer regex splits on tricky strings, NFC, hostile files, and the golden ids of
// the Python `tokenizers` library (data/golden/tokenizers/*.jsonl) where present.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

using namespace obr;
using nlohmann::json;
using Ids = std::vector<int32_t>;

namespace {

const std::string kRoot = OBR_SOURCE_DIR;

bool file_exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The pieces a Split(regex, Isolated) pre-tokenizer makes of s.
std::vector<std::string> split(tok::SplitRegex re, const std::string& s) {
  std::vector<std::string> out;
  for (auto sp : tok::split_spans(tok::regex_spans(re, s), tok::SplitBehavior::Isolated, false))
    out.push_back(s.substr(sp.first, sp.second - sp.first));
  return out;
}
using V = std::vector<std::string>;

// A toy SentencePiece-style BPE (Llama 2 layout): <unk> <s> </s>, 256 byte tokens <0x00>..<0xFF>
// (ids 3..258), then pieces. Merges: "a b" (rank 0), "▁ ab" (1), "ab c" (2).
json toy_byte_fallback() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  const std::vector<std::string> pieces = {"\u2581", "a", "b", "c", "ab", "\u2581ab", "abc"};  // 259..265
  for (size_t k = 0; k < pieces.size(); ++k) vocab[pieces[k]] = 259 + int(k);
  json added = json::array();
  for (auto [id, s] : std::vector<std::pair<int, std::string>>{{0, "<unk>"}, {1, "<s>"}, {2, "</s>"}})
    added.push_back({{"id", id}, {"content", s}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                     {"normalized", false}, {"special", true}});
  return {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "\u2581"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair", json::array()},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", "<unk>"},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"vocab", vocab},
        {"merges", {"a b", "\u2581 ab", "ab c"}}}}};
}

// A toy byte-level BPE (GPT-2 layout): ids 0..255 are the 256 byte characters, in byte order
// (byte 0x20 ' ' is 'Ġ' U+0120, id 32), then merges Ġ+t -> 256, h+e -> 257, Ġt+he -> 258.
json toy_byte_level() {
  json vocab;
  int extra = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    std::string ch;
    unicode::append_utf8(ch, printable ? uint32_t(b) : uint32_t(extra++));
    vocab[ch] = b;
  }
  vocab["\u0120t"] = 256;
  vocab["he"] = 257;
  vocab["\u0120the"] = 258;
  vocab["<|end|>"] = 259;
  json added = {{{"id", 259}, {"content", "<|end|>"}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                 {"normalized", false}, {"special", true}}};
  return {{"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
          {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}}},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}}},
          {"model",
           {{"type", "BPE"},
            {"vocab", vocab},
            {"merges", json::array({json::array({"\u0120", "t"}), json::array({"h", "e"}), json::array({"\u0120t", "he"})})},
            {"ignore_merges", false}}}};
}

Tokenizer load(const json& j, const std::string& config = "") {
  return Tokenizer::from_json_text(j.dump(), config, "toy.json");
}

// The message of the obr::Error that f throws ("" if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("tokenizer: toy byte-fallback BPE (Llama 2 layout), hand-computed ids") {
  const Tokenizer t = load(toy_byte_fallback());
  CHECK(t.kind() == "bpe-byte-fallback");
  CHECK(t.vocab_size() == 266);
  CHECK(t.bos_id() == 1);  // from the template
  CHECK(t.eos_id() == 2);  // by name: </s>
  // "ab" -> "▁ab": ▁ a b -> (a b, rank 0) ▁ ab -> (▁ ab, rank 1) ▁ab
  CHECK(t.encode("ab") == Ids{264});
  // "abc ab" -> "▁abc▁ab": ▁ a b c ▁ a b -> ▁ ab c ▁ ab (rank 0 twice, leftmost first)
  //   -> ▁ab c ▁ab (rank 1) ; "ab c" (rank 2) no longer has an "ab" to join
  CHECK(t.encode("abc ab") == Ids{264, 262, 264});
  // Unseen characters fall back to their UTF-8 bytes: é = C3 A9 -> <0xC3> <0xA9> = 3 + byte.
  CHECK(t.encode("\xC3\xA9") == Ids{259, 3 + 0xC3, 3 + 0xA9});
  CHECK(t.encode("a\n") == Ids{259, 260, 3 + 0x0A});
  // Special tokens split first; each remaining piece gets its own "▁" (the library's
  // legacy behaviour), and the template adds BOS.
  CHECK(t.encode("ab</s>ab") == Ids{264, 2, 264});
  CHECK(t.encode("ab", true) == Ids{1, 264});
  CHECK(t.encode("", true) == Ids{1});
  CHECK(t.encode("").empty());
  // Decoding: ▁ -> space, byte runs -> UTF-8, the first space stripped.
  for (const char* s : {"ab", "abc ab", "  two spaces", "caf\xC3\xA9 \xF0\x9F\xA4\x96", "x\ny"})
    CHECK_MESSAGE(t.decode(t.encode(s)) == s, s);
  CHECK(t.decode({1, 264, 2}) == "<s> ab</s>");
  CHECK(t.decode({1, 264, 2}, true) == "ab");
  CHECK(t.decode({3 + 0xC3}) == "\xEF\xBF\xBD");  // a lone lead byte: one U+FFFD per byte
  CHECK(t.decode({3 + 0xC3, 3 + 0xC3}) == "\xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK(t.decode({264, 99999, -5}) == "ab");  // unknown ids are skipped, as the library does
  CHECK(t.token_str(264) == "\u2581ab");
  CHECK(t.token_id("<0x41>") == 3 + 0x41);
  CHECK_THROWS_AS(t.token_str(5000), Error);
}

TEST_CASE("tokenizer: unknown characters without byte fallback fuse into one <unk>") {
  json j = toy_byte_fallback();
  j["model"]["byte_fallback"] = false;
  CHECK(load(j).kind() == "bpe");
  CHECK(load(j).encode("ab\xC3\xA9\xC3\xA8" "ab") == Ids{264, 0, 263});  // ▁ab <unk> ab
  j["model"]["fuse_unk"] = false;
  CHECK(load(j).encode("ab\xC3\xA9\xC3\xA8") == Ids{264, 0, 0});
}

TEST_CASE("tokenizer: Metaspace pre-tokenizer form (prepend_scheme first / always / never)") {
  json j = toy_byte_fallback();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}, {"split", false}};
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}, {"split", false}};
  Tokenizer first = load(j);
  CHECK(first.encode("ab ab") == Ids{264, 264});
  // "first": only the piece at the start of the text gets "▁"; after a special token, none.
  CHECK(first.encode("ab</s>ab") == Ids{264, 2, 263});
  CHECK(first.decode({264, 264}) == "ab ab");
  j["pre_tokenizer"]["prepend_scheme"] = "always";
  CHECK(load(j).encode("ab</s>ab") == Ids{264, 2, 264});
  j["pre_tokenizer"]["prepend_scheme"] = "never";
  CHECK(load(j).encode("ab ab") == Ids{263, 264});
  // The older form: add_prefix_space instead of prepend_scheme; split defaults to true.
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"add_prefix_space", true}};
  CHECK(load(j).encode("ab ab") == Ids{264, 264});
  // split: each "▁" starts a piece that takes what follows up to the next "▁", so a run of
  // them splits: "▁ab▁▁ab" -> "▁ab" "▁" "▁ab" (not "▁▁ab").
  CHECK(load(j).encode("ab  ab") == Ids{264, 259, 264});
}

TEST_CASE("tokenizer: toy byte-level BPE (GPT-2 layout), hand-computed ids") {
  const Tokenizer t = load(toy_byte_level());
  CHECK(t.kind() == "bpe-byte-level");
  CHECK(t.vocab_size() == 260);
  // " the  there" -> pieces " the", " ", " there" -> Ġthe | Ġ | Ġthe r e
  CHECK(t.encode(" the  there") == Ids{258, 32, 258, 'r', 'e'});
  // Bytes of é (C3 A9) are the characters Ã (id 0xC3) and © (id 0xA9).
  CHECK(t.encode("\xC3\xA9") == Ids{0xC3, 0xA9});
  CHECK(t.encode("a<|end|> the") == Ids{'a', 259, 258});
  CHECK(t.encode("x", true) == Ids{'x'});  // a ByteLevel post-processor adds nothing
  CHECK(t.bos_id() == -1);
  for (const char* s : {" the  there", "caf\xC3\xA9\n\n\t\xF0\x9F\xA4\x96", "<|end|>", "  "})
    CHECK_MESSAGE(t.decode(t.encode(s)) == s, s);
  CHECK(t.decode({0xC3}) == "\xEF\xBF\xBD");  // half a character: U+FFFD, as from_utf8_lossy
  CHECK(t.decode({259, 'a'}, true) == "a");
  // ignore_merges: a pre-token that is itself a token is emitted whole (Llama 3).
  json j = toy_byte_level();
  j["model"]["vocab"]["\u0120thes"] = 300;  // reachable by no merge
  CHECK(load(j).encode(" thes") == Ids{258, 's'});
  j["model"]["ignore_merges"] = true;
  CHECK(load(j).encode(" thes") == Ids{300});
}

TEST_CASE("tokenizer: added tokens split first; lstrip, rstrip, normalized, config bos/eos") {
  json j = toy_byte_level();
  j["added_tokens"].push_back({{"id", 260}, {"content", "<mask>"}, {"single_word", false}, {"lstrip", true},
                               {"rstrip", false}, {"normalized", false}, {"special", true}});
  j["added_tokens"].push_back({{"id", 261}, {"content", "[NL]"}, {"single_word", false}, {"lstrip", false},
                               {"rstrip", true}, {"normalized", false}, {"special", false}});
  j["added_tokens"].push_back({{"id", 262}, {"content", "<|end|>x"}, {"single_word", false}, {"lstrip", false},
                               {"rstrip", false}, {"normalized", false}, {"special", true}});
  const Tokenizer t = load(j, R"({"bos_token": {"content": "<|end|>"}, "eos_token": "<mask>"})");
  CHECK(t.encode("a <mask>") == Ids{'a', 260});          // lstrip takes the space before
  CHECK(t.encode("[NL]  the") == Ids{261, 't', 257});    // rstrip takes the spaces after
  CHECK(t.encode("<|end|>x<|end|>") == Ids{262, 259});   // longest match first
  CHECK(t.decode({'a', 260, 261}) == "a<mask>[NL]");
  CHECK(t.decode({'a', 260, 261}, true) == "a[NL]");     // [NL] is not special
  CHECK(t.bos_id() == 259);
  CHECK(t.eos_id() == 260);
  CHECK(load(j, R"({"bos_token": null})").bos_id() == -1);

  // single_word: only between non-word characters (\w includes combining marks).
  j["added_tokens"].push_back({{"id", 263}, {"content", "cat"}, {"single_word", true}, {"lstrip", false},
                               {"rstrip", false}, {"normalized", false}, {"special", false}});
  const Tokenizer w = load(j);
  CHECK(w.encode("cat!") == Ids{263, '!'});
  CHECK(w.encode("concat") == Ids{'c', 'o', 'n', 'c', 'a', 't'});
  CHECK(w.encode("cat\xCC\x82") == Ids{'c', 'a', 't', 0xCC, 0x82});
}

TEST_CASE("tokenizer: normalized added tokens match and decode in normalized form; NFC normalizer") {
  json j = toy_byte_fallback();
  j["added_tokens"].push_back({{"id", 266}, {"content", "ab ab"}, {"single_word", false}, {"lstrip", false},
                               {"rstrip", false}, {"normalized", true}, {"special", false}});
  const Tokenizer t = load(j);
  // "c ab ab" -> "▁c▁ab▁ab"; the token, normalized to "▁ab▁ab", matches there.
  CHECK(t.encode("c ab ab") == Ids{259, 262, 266});
  CHECK(t.decode({259, 262, 266}) == "c ab ab");
  CHECK(t.vocab_size() == 267);

  json b = toy_byte_level();
  b["normalizer"] = {{"type", "NFC"}};
  CHECK(load(b).encode("e\xCC\x81") == Ids{0xC3, 0xA9});  // e + U+0301 -> é = C3 A9
}

TEST_CASE("tokenizer: GPT-2 regex splits") {
  using tok::SplitRegex;
  const auto g = [](const std::string& s) { return split(SplitRegex::Gpt2, s); };
  CHECK(g("I'm can't we'll") == V{"I", "'m", " can", "'t", " we", "'ll"});
  CHECK(g("DON'T") == V{"DON", "'", "T"});  // case-sensitive contractions
  CHECK(g("Hello  world") == V{"Hello", " ", " world"});
  CHECK(g("   x") == V{"  ", " x"});
  CHECK(g("x   ") == V{"x", "   "});
  CHECK(g("a\n\nb") == V{"a", "\n", "\n", "b"});
  CHECK(g("12345 3.14") == V{"12345", " 3", ".", "14"});
  CHECK(g("na\xC3\xAFve caf\xC3\xA9") == V{"na\xC3\xAFve", " caf\xC3\xA9"});
  CHECK(g("hi \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD!") == V{"hi", " \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD!"});  // emoji: [^\s\p{L}\p{N}]
  CHECK(g("a\xC2\xA0" "b") == V{"a", "\xC2\xA0", "b"});  // NBSP is \s but not the optional ' '
  CHECK(g(" 'sup") == V{" '", "sup"});
  CHECK(g("").empty());
}

TEST_CASE("tokenizer: Llama-3 and Qwen2 regex splits") {
  using tok::SplitRegex;
  const auto l = [](const std::string& s) { return split(SplitRegex::Llama3, s); };
  CHECK(l("I'M can't WE'LL") == V{"I", "'M", " can", "'t", " WE", "'LL"});  // (?i:...)
  CHECK(l("'\xC5\xBF") == V{"'\xC5\xBF"});  // 'ſ: long s case-folds to s
  CHECK(l("1234567 x") == V{"123", "456", "7", " x"});
  CHECK(split(SplitRegex::Qwen2, "1234") == V{"1", "2", "3", "4"});
  CHECK(l("\xD9\xA1\xD9\xA2\xD9\xA3\xD9\xA4") == V{"\xD9\xA1\xD9\xA2\xD9\xA3", "\xD9\xA4"});  // Arabic-Indic digits
  CHECK(l("\xE6\x9D\xB1\xE4\xBA\xAC" "123") == V{"\xE6\x9D\xB1\xE4\xBA\xAC", "123"});
  CHECK(l("Hello\n\nworld") == V{"Hello", "\n\n", "world"});
  CHECK(l(" \n x") == V{" \n", " x"});
  CHECK(l("a   b") == V{"a", "  ", " b"});
  CHECK(l("(hello \tworld") == V{"(hello", " ", "\tworld"});
  CHECK(l("a\xC2\xA0" "b") == V{"a", "\xC2\xA0" "b"});  // any non-letter before letters joins them
  CHECK(l("x = y;\r\n\r\nz") == V{"x", " =", " y", ";\r\n\r\n", "z"});
  CHECK(l("x  \n\n  y") == V{"x", "  \n\n", " ", " y"});
  CHECK(l("end  ") == V{"end", "  "});
}

TEST_CASE("tokenizer: Unicode classes and NFC") {
  CHECK(unicode::letter(U'é'));
  CHECK(unicode::letter(0x6771));   // 東
  CHECK(unicode::letter(0x1D400));  // mathematical bold A
  CHECK(unicode::letter(0x1C89));   // Cyrillic TJE, new in Unicode 16.0: the classes follow tokenizers 0.23's Oniguruma
  CHECK(unicode::number(0x0661));   // Arabic-Indic digit one
  CHECK(unicode::number(0x00BD));   // ½ (No)
  CHECK(unicode::number(0x216B));   // Ⅻ (Nl)
  CHECK(!unicode::letter(0x0301));  // combining acute (Mn)
  CHECK(!unicode::letter(0x1F600));
  CHECK(unicode::whitespace(0x3000));
  CHECK(!unicode::whitespace(0x200B));  // zero width space is not White_Space
  CHECK(unicode::nfc("e\xCC\x81") == "\xC3\xA9");                       // e + acute -> é
  CHECK(unicode::nfc("\xE2\x84\xAB") == "\xC3\x85");                    // Å (Angstrom sign) -> Å
  CHECK(unicode::nfc("a\xCC\x82\xCC\xA3") == "\xE1\xBA\xAD");           // a + ^ + dot below -> ậ (reordered)
  CHECK(unicode::nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8") == "\xEA\xB0\x81");  // Hangul jamo -> 각
  CHECK(unicode::nfc("plain ascii") == "plain ascii");
  CHECK(unicode::utf8_lossy("a\xE2\x82" "b\xFF") == "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
}

TEST_CASE("tokenizer: hostile files are errors that name the file and the problem") {
  const auto msg = [](const std::string& text) {
    return error_of([&] { Tokenizer::from_json_text(text, "", "bad/tokenizer.json"); });
  };
  CHECK(msg("{not json").find("bad/tokenizer.json: not valid JSON") != std::string::npos);
  CHECK(msg("[1, 2]").find("bad/tokenizer.json") != std::string::npos);
  CHECK(msg(R"({"normalizer": null})").find("no \"model\"") != std::string::npos);
  CHECK(msg(R"({"model": {"type": "Unigram", "vocab": []}})").find("model type \"Unigram\"") != std::string::npos);

  json j = toy_byte_level();
  j["model"]["merges"].push_back(json::array({"h", "zz"}));
  CHECK(msg(j.dump()).find("\"zz\", which is not in model.vocab") != std::string::npos);
  j = toy_byte_level();
  j["model"]["merges"] = {"a b c"};
  CHECK(msg(j.dump()).find("merge 1") != std::string::npos);
  j = toy_byte_level();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  CHECK(msg(j.dump()).find("pre_tokenizer type \"Whitespace\"") != std::string::npos);
  j = toy_byte_level();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Isolated"}, {"invert", false}};
  CHECK(msg(j.dump()).find("Split regex") != std::string::npos);
  j = toy_byte_level();
  j["normalizer"] = {{"type", "NFKC"}};
  CHECK(msg(j.dump()).find("normalizer type \"NFKC\"") != std::string::npos);
  j = toy_byte_level();
  j["decoder"] = {{"type", "WordPiece"}};
  CHECK(msg(j.dump()).find("decoder type \"WordPiece\"") != std::string::npos);
  j = toy_byte_level();
  j["model"]["vocab"] = json::array();
  CHECK(msg(j.dump()).find("model.vocab") != std::string::npos);
  j = toy_byte_level();
  j["model"]["dropout"] = 0.1;
  CHECK(msg(j.dump()).find("dropout") != std::string::npos);

  CHECK(error_of([] { Tokenizer::from_file("/nonexistent/tokenizer.json"); }).find("/nonexistent/tokenizer.json") !=
        std::string::npos);
  CHECK(error_of([] { Tokenizer::from_file(kRoot + "/src"); }).find("without tokenizer.json") != std::string::npos);
}

TEST_CASE("tokenizer: real Llama-2 and Llama-3 files") {
  const std::string l2 = kRoot + "/data/third_party/llama2/tokenizer.json";
  const std::string l3 = kRoot + "/data/third_party/llama3/tokenizer.json";
  if (!file_exists(l2)) {
    MESSAGE("skipped: data/third_party/llama2/tokenizer.json not present (run data/fetch_tokenizers.sh)");
  } else {
    const Tokenizer t = Tokenizer::from_file(kRoot + "/data/third_party/llama2");  // a directory works too
    CHECK(t.kind() == "bpe-byte-fallback");
    CHECK(t.vocab_size() == 32000);
    CHECK(t.bos_id() == 1);
    CHECK(t.eos_id() == 2);
    // This file's ids differ from Meta's release (there "▁Hello" is 15043).
    CHECK(t.encode("Hello world") == Ids{22557, 1526});
    CHECK(t.encode("Hello world", true) == Ids{1, 22557, 1526});
    CHECK(t.decode({1, 22557, 1526}, true) == "Hello world");
  }
  if (!file_exists(l3)) {
    MESSAGE("skipped: data/third_party/llama3/tokenizer.json not present (run data/fetch_tokenizers.sh)");
  } else {
    const Tokenizer t = Tokenizer::from_file(l3);
    CHECK(t.kind() == "bpe-byte-level");
    CHECK(t.vocab_size() == 128256);
    CHECK(t.bos_id() == 128000);
    CHECK(t.eos_id() == 128001);
    CHECK(t.encode("Hello world") == Ids{9906, 1917});
    CHECK(t.encode("<|begin_of_text|>Hello") == Ids{128000, 9906});
  }
}

// Every golden file: ids exactly as the Python `tokenizers` library gave them, and the
// decoded ids give the text back (or the library's decoded text, where the file has it).
TEST_CASE("tokenizer: golden ids from the Python tokenizers library") {
  const std::string dir = kRoot + "/data/golden/tokenizers/";
  const std::vector<std::pair<std::string, std::string>> sources = {
      {"obr-tiny", kRoot + "/data/models/tiny/tokenizer.json"},
      {"llama2", kRoot + "/data/third_party/llama2/tokenizer.json"},
      {"llama3", kRoot + "/data/third_party/llama3/tokenizer.json"},
  };
  int files = 0;
  for (const auto& [name, tok_path] : sources) {
    const std::string golden = dir + name + ".jsonl";
    if (!file_exists(golden)) {
      MESSAGE("skipped: data/golden/tokenizers/", name, ".jsonl not present (run data/make_golden.py)");
      continue;
    }
    if (!file_exists(tok_path)) {
      MESSAGE("skipped: ", tok_path.substr(kRoot.size() + 1), " not present",
              name == "obr-tiny" ? " (train it: data/train_models.py)" : " (run data/fetch_tokenizers.sh)");
      continue;
    }
    ++files;
    const Tokenizer t = Tokenizer::from_file(tok_path);
    std::istringstream lines(slurp(golden));
    std::string line;
    int n = 0;
    while (std::getline(lines, line)) {
      if (line.empty()) continue;
      const json row = json::parse(line);
      const std::string text = row.at("text").get<std::string>();
      const Ids want = row.at("ids").get<Ids>();
      INFO(name, " line ", n + 1, ": ", json(text).dump());
      CHECK(t.encode(text) == want);
      CHECK(t.decode(want) == (row.contains("decoded") ? row["decoded"].get<std::string>() : text));
      ++n;
    }
    CHECK_MESSAGE(n > 0, golden, " has no rows");
    MESSAGE("golden ", name, ": ", n, " texts checked");
  }
  if (files == 0) MESSAGE("skipped: no golden tokenizer file with its tokenizer.json present");
}
