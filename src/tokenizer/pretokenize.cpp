#include "tokenizer/pretokenize.h"

#include <algorithm>
#include <cstdint>

#include "tokenizer/unicode.h"

namespace obr::tok {

namespace {

const char* const kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Character class of a code point as the regexes see it: \p{L}, \p{N}, \s, or anything
// else ([^\s\p{L}\p{N}]).
enum Cls : uint8_t { kL, kN, kS, kO };

Cls classify(uint32_t cp) {
  if (cp < 0x80) {  // ASCII fast path
    if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return kL;
    if (cp >= '0' && cp <= '9') return kN;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return kS;
    return kO;
  }
  if (unicode::letter(cp)) return kL;
  if (unicode::number(cp)) return kN;
  if (unicode::whitespace(cp)) return kS;
  return kO;
}

// Lower-cases the letters of the contractions for (?i:...): Oniguruma folds by Unicode
// simple case folding, under which U+017F LATIN SMALL LETTER LONG S folds to 's'.
uint32_t fold(uint32_t cp) {
  if (cp >= 'A' && cp <= 'Z') return cp | 0x20;
  if (cp == 0x17F) return 's';
  return cp;
}

// A piece decoded into code points, with classes and byte offsets (off[n] = size).
struct Cps {
  std::vector<uint32_t> cp;
  std::vector<Cls> cls;
  std::vector<size_t> off;
  size_t n = 0;
  explicit Cps(std::string_view s) {
    cp.reserve(s.size());
    cls.reserve(s.size());
    off.reserve(s.size() + 1);
    for (size_t i = 0; i < s.size();) {
      off.push_back(i);
      uint32_t c = unicode::next_cp(s, i);
      cp.push_back(c);
      cls.push_back(classify(c));
    }
    off.push_back(s.size());
    n = cp.size();
  }
  bool is(size_t k, Cls c) const { return k < n && cls[k] == c; }
  size_t run(size_t k, Cls c) const {  // end of the run of class c starting at k
    while (k < n && cls[k] == c) ++k;
    return k;
  }
};

// 's 't 're 've 'm 'll 'd at k: the end of the contraction, or k.
size_t contraction(const Cps& t, size_t k, bool ignore_case) {
  if (t.cp[k] != '\'' || k + 1 >= t.n) return k;
  auto ch = [&](size_t j) { return ignore_case ? fold(t.cp[j]) : t.cp[j]; };
  const uint32_t a = ch(k + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return k + 2;
  if (k + 2 < t.n) {
    const uint32_t b = ch(k + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return k + 3;
  }
  return k;
}

// \s+(?!\S)|\s+ at a white space k: the run, less its last character when a non-space
// follows and the run is longer than one.
size_t trailing_space(const Cps& t, size_t k) {
  const size_t j = t.run(k, kS);
  if (j < t.n && j - 1 > k) return j - 1;
  return j;
}

// One match of the GPT-2 regex at k (every character starts one): its end.
size_t match_gpt2(const Cps& t, size_t k) {
  size_t e = contraction(t, k, false);
  if (e != k) return e;
  // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': an optional ASCII space, then a run.
  const size_t s = t.cp[k] == ' ' && k + 1 < t.n && t.cls[k + 1] != kS ? k + 1 : k;
  if (t.cls[s] != kS) return t.run(s, t.cls[s]);
  return trailing_space(t, k);
}

// One match of the Llama-3 / Qwen2 regex at k; max_digits is 3 or 1.
size_t match_llama3(const Cps& t, size_t k, size_t max_digits) {
  size_t e = contraction(t, k, true);
  if (e != k) return e;
  const Cls c = t.cls[k];
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (c == kL) return t.run(k, kL);
  if (c != kN && t.cp[k] != '\r' && t.cp[k] != '\n' && t.is(k + 1, kL)) return t.run(k + 1, kL);
  // \p{N}{1,3}
  if (c == kN) {
    const size_t j = t.run(k, kN);
    return j - k > max_digits ? k + max_digits : j;
  }
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  const size_t s = t.cp[k] == ' ' && t.is(k + 1, kO) ? k + 1 : k;
  if (t.cls[s] == kO) {
    size_t j = t.run(s, kO);
    while (j < t.n && (t.cp[j] == '\r' || t.cp[j] == '\n')) ++j;
    return j;
  }
  // \s*[\r\n]+ : greedy \s* backs off to the last CR or LF of the white-space run.
  const size_t j = t.run(k, kS);
  for (size_t m = j; m > k; --m)
    if (t.cp[m - 1] == '\r' || t.cp[m - 1] == '\n') return m;
  return trailing_space(t, k);
}

}  // namespace

bool known_split_regex(const std::string& pattern, SplitRegex& out) {
  if (pattern == kGpt2Regex) out = SplitRegex::Gpt2;
  else if (pattern == kLlama3Regex) out = SplitRegex::Llama3;
  else if (pattern == kQwen2Regex) out = SplitRegex::Qwen2;
  else return false;
  return true;
}

std::vector<Span> regex_spans(SplitRegex re, std::string_view s) {
  if (s.empty()) return {{0, 0, false}};
  const Cps t(s);
  std::vector<Span> spans;
  for (size_t k = 0; k < t.n;) {
    const size_t e = re == SplitRegex::Gpt2 ? match_gpt2(t, k) : match_llama3(t, k, re == SplitRegex::Llama3 ? 3 : 1);
    spans.push_back({t.off[k], t.off[e], true});
    k = e;
  }
  return spans;
}

std::vector<Span> string_spans(std::string_view pattern, std::string_view s) {
  if (s.empty()) return {{0, 0, false}};
  std::vector<Span> spans;
  size_t prev = 0;
  if (!pattern.empty()) {
    for (size_t p = s.find(pattern); p != std::string_view::npos; p = s.find(pattern, p + pattern.size())) {
      if (p > prev) spans.push_back({prev, p, false});
      spans.push_back({p, p + pattern.size(), true});
      prev = p + pattern.size();
    }
  }
  if (prev < s.size()) spans.push_back({prev, s.size(), false});
  return spans;
}

bool parse_split_behavior(const std::string& name, SplitBehavior& out) {
  if (name == "Removed") out = SplitBehavior::Removed;
  else if (name == "Isolated") out = SplitBehavior::Isolated;
  else if (name == "MergedWithPrevious") out = SplitBehavior::MergedWithPrevious;
  else if (name == "MergedWithNext") out = SplitBehavior::MergedWithNext;
  else if (name == "Contiguous") out = SplitBehavior::Contiguous;
  else return false;
  return true;
}

std::vector<std::pair<size_t, size_t>> split_spans(std::vector<Span> spans, SplitBehavior behavior, bool invert) {
  if (invert)
    for (Span& sp : spans) sp.match = !sp.match;
  std::vector<std::pair<size_t, size_t>> out;
  bool previous_match = false;
  for (const Span& sp : spans) {
    switch (behavior) {
      case SplitBehavior::Removed:
        if (!sp.match) out.push_back({sp.begin, sp.end});
        break;
      case SplitBehavior::Isolated:
        out.push_back({sp.begin, sp.end});
        break;
      case SplitBehavior::MergedWithPrevious:  // a match joins the piece before it
        if (sp.match && !previous_match && !out.empty()) out.back().second = sp.end;
        else out.push_back({sp.begin, sp.end});
        break;
      case SplitBehavior::MergedWithNext:  // done below, right to left
        break;
      case SplitBehavior::Contiguous:  // runs of matches (or of gaps) join
        if (sp.match == previous_match && !out.empty()) out.back().second = sp.end;
        else out.push_back({sp.begin, sp.end});
        break;
    }
    previous_match = sp.match;
  }
  if (behavior == SplitBehavior::MergedWithNext) {
    // The library folds from the right: a match joins the piece after it, unless that
    // piece is a match too ("▁▁a" -> "▁", "▁a").
    bool next_match = false;
    for (size_t k = spans.size(); k-- > 0;) {
      const Span& sp = spans[k];
      if (sp.match && !next_match && !out.empty()) out.back().first = sp.begin;
      else out.push_back({sp.begin, sp.end});
      next_match = sp.match;
    }
    std::reverse(out.begin(), out.end());
  }
  std::vector<std::pair<size_t, size_t>> nonempty;
  nonempty.reserve(out.size());
  for (const auto& p : out)
    if (p.second > p.first) nonempty.push_back(p);
  return nonempty;
}

}  // namespace obr::tok
