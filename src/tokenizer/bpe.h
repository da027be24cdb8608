// The BPE model of a Hugging Face tokenizer.json ("model": {"type": "BPE", ...}), as the
// `tokenizers` library runs it on one pre-token:
//
//   1. each character becomes a symbol: its vocab id, else its UTF-8 bytes as <0xNN> tokens
//      (byte_fallback), else the unk token (consecutive unknowns fused when fuse_unk);
//   2. adjacent pairs merge by rank (the order of "merges", lowest first; among equal ranks
//      the leftmost), with a priority queue over a linked list of symbols: O(n log n).
//
// With ignore_merges (Llama 3) a pre-token that is itself in the vocab is emitted whole.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace obr::tok {

class Bpe {
 public:
  // Reads the "model" object; `file` names the tokenizer.json in error messages.
  static Bpe from_json(const nlohmann::json& model, const std::string& file);

  // Appends the ids of one pre-token (an empty one gives none).
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;
  // Fills the bigram table that lets tokenize() cut long pre-tokens (called by from_json).
  void index_bigrams();

  int32_t token_id(std::string_view token) const;  // -1 if not in the vocab
  const std::string* token_str(int32_t id) const;   // nullptr if no token has this id
  int32_t max_id() const { return int32_t(id_to_token_.size()) - 1; }
  bool byte_fallback() const { return byte_fallback_; }

 private:
  struct MergeValue {
    int32_t rank, new_id;
  };
  static uint64_t pair_key(uint32_t a, uint32_t b) { return uint64_t(a) << 32 | b; }
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  std::vector<std::string> id_to_token_;                   // id -> token ("" for unused ids)
  std::unordered_map<std::string_view, int32_t> vocab_;    // views into id_to_token_
  std::unordered_map<uint64_t, MergeValue> merges_;        // (left id, right id) -> rank, merged id
  // Code-point pairs (a << 32 | b) adjacent inside some vocab token. No merge can join two
  // characters that are not such a pair, so a long pre-token is cut there and each part
  // merged alone, with the same result and much smaller queues (Llama 2 has no
  // pre-tokenizer: a whole text is one pre-token).
  std::unordered_set<uint64_t> bigrams_;
  int32_t byte_ids_[256];                                  // <0xNN> -> id, or -1
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  bool has_prefix_ = false, has_suffix_ = false;
  std::string prefix_, suffix_;  // continuing_subword_prefix, end_of_word_suffix
};

}  // namespace obr::tok
