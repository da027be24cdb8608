// Pre-tokenizer splits as the Hugging Face `tokenizers` library does them, without a regex
// engine: the three regexes that Llama-family tokenizers use are matched by hand over code
// points, with the same leftmost-first alternation and backtracking as Oniguruma.
//
//   Gpt2    'p|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//           (GPT-2; also what ByteLevel(use_regex=true) splits with)
//   Llama3  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
//           | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   Qwen2   as Llama3 with \p{N} (single digits) in place of \p{N}{1,3}
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace obr::tok {

enum class SplitRegex { Gpt2, Llama3, Qwen2 };

// The regex a Split pre-tokenizer's pattern names, or false if it is none of the three.
bool known_split_regex(const std::string& pattern, SplitRegex& out);

// A span of bytes [begin, end) of a piece, and whether the pattern matched it.
struct Span {
  size_t begin, end;
  bool match;
};

// Every match of the regex in s, left to right, with the unmatched gaps between them, as
// the library's Pattern::find_matches returns them (an empty s gives one empty gap).
std::vector<Span> regex_spans(SplitRegex re, std::string_view s);
// The same for a literal string pattern (non-overlapping, leftmost first).
std::vector<Span> string_spans(std::string_view pattern, std::string_view s);

// SplitDelimiterBehavior: how matches and gaps become pieces.
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
bool parse_split_behavior(const std::string& name, SplitBehavior& out);

// Applies the behavior (after `invert` flipped which spans count as matches) and returns
// the non-empty pieces as byte spans of the input.
std::vector<std::pair<size_t, size_t>> split_spans(std::vector<Span> spans, SplitBehavior behavior, bool invert);

}  // namespace obr::tok
