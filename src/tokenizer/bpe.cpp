#include "tokenizer/bpe.h"

#include <cstdio>
#include <queue>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "tokenizer/unicode.h"

namespace obr::tok {

using nlohmann::json;

Bpe Bpe::from_json(const json& model, const std::string& file) {
  Bpe m;
  const auto opt_string = [&](const char* key, std::string& out) {
    auto it = model.find(key);
    if (it == model.end() || it->is_null()) return false;
    OBR_CHECK(it->is_string(), file, ": model.", key, " must be a string or null");
    out = it->get<std::string>();
    return true;
  };
  const auto opt_bool = [&](const char* key, bool def) {
    auto it = model.find(key);
    if (it == model.end() || it->is_null()) return def;
    OBR_CHECK(it->is_boolean(), file, ": model.", key, " must be true or false");
    return it->get<bool>();
  };
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null())
    OBR_CHECK(it->is_number() && it->get<double>() == 0.0, file, ": BPE dropout ", it->dump(),
              " is not supported (encoding would be random)");
  m.byte_fallback_ = opt_bool("byte_fallback", false);
  m.fuse_unk_ = opt_bool("fuse_unk", false);
  m.ignore_merges_ = opt_bool("ignore_merges", false);
  m.has_prefix_ = opt_string("continuing_subword_prefix", m.prefix_);
  m.has_suffix_ = opt_string("end_of_word_suffix", m.suffix_);

  // vocab: {"token": id, ...}. Ids need not be dense; holes stay "".
  auto vit = model.find("vocab");
  OBR_CHECK(vit != model.end() && vit->is_object(), file, ": model.vocab is missing or not an object");
  int64_t max_id = -1;
  for (auto it = vit->begin(); it != vit->end(); ++it) {
    OBR_CHECK(it->is_number_integer() && it->get<int64_t>() >= 0 && it->get<int64_t>() < (int64_t(1) << 31), file,
              ": model.vocab[\"", it.key(), "\"] must be a non-negative integer id, got ", it->dump());
    max_id = std::max(max_id, it->get<int64_t>());
  }
  OBR_CHECK(max_id < (int64_t(1) << 26), file, ": model.vocab id ", max_id, " is implausibly large");
  m.id_to_token_.assign(size_t(max_id + 1), std::string());
  for (auto it = vit->begin(); it != vit->end(); ++it) m.id_to_token_[size_t(it->get<int64_t>())] = it.key();
  m.vocab_.reserve(vit->size());
  for (auto it = vit->begin(); it != vit->end(); ++it) {
    const int32_t id = it->get<int32_t>();
    m.vocab_[std::string_view(m.id_to_token_[size_t(id)])] = id;
  }

  std::string unk;
  if (opt_string("unk_token", unk)) {
    m.unk_id_ = m.token_id(unk);
    OBR_CHECK(m.unk_id_ >= 0, file, ": model.unk_token \"", unk, "\" is not in model.vocab");
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    m.byte_ids_[b] = m.token_id(name);
  }

  // merges: ["a b", ...] (older files) or [["a", "b"], ...]. Rank = position; a pair listed
  // twice keeps its last rank, as the library's hash map does.
  auto mit = model.find("merges");
  OBR_CHECK(mit != model.end() && mit->is_array(), file, ": model.merges is missing or not an array");
  m.merges_.reserve(mit->size());
  const size_t prefix_len = m.has_prefix_ ? m.prefix_.size() : 0;
  for (size_t rank = 0; rank < mit->size(); ++rank) {
    const json& e = (*mit)[rank];
    std::string a, b;
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      OBR_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos, file, ": merge ", rank + 1,
                " \"", s, "\" is not two tokens separated by one space");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else {
      OBR_CHECK(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string(), file, ": merge ", rank + 1,
                " must be \"a b\" or [\"a\", \"b\"], got ", e.dump());
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    }
    const int32_t ia = m.token_id(a), ib = m.token_id(b);
    OBR_CHECK(ia >= 0, file, ": merge ", rank + 1, " uses token \"", a, "\", which is not in model.vocab");
    OBR_CHECK(ib >= 0, file, ": merge ", rank + 1, " uses token \"", b, "\", which is not in model.vocab");
    OBR_CHECK(b.size() >= prefix_len, file, ": merge ", rank + 1, " right token \"", b,
              "\" is shorter than continuing_subword_prefix");
    const std::string merged = a + b.substr(prefix_len);
    const int32_t im = m.token_id(merged);
    OBR_CHECK(im >= 0, file, ": merge ", rank + 1, " makes \"", merged, "\", which is not in model.vocab");
    m.merges_[pair_key(uint32_t(ia), uint32_t(ib))] = {int32_t(rank), im};
  }
  m.index_bigrams();
  return m;
}

void Bpe::index_bigrams() {
  bigrams_.clear();
  for (const std::string& t : id_to_token_) {
    uint32_t prev = 0;
    for (size_t i = 0; i < t.size();) {
      const uint32_t cp = unicode::next_cp(t, i);
      if (i > 0 && prev) bigrams_.insert(pair_key(prev, cp));
      prev = cp;
    }
  }
}

int32_t Bpe::token_id(std::string_view token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

const std::string* Bpe::token_str(int32_t id) const {
  if (id < 0 || size_t(id) >= id_to_token_.size()) return nullptr;
  const std::string& s = id_to_token_[size_t(id)];
  if (s.empty() && token_id(s) != id) return nullptr;  // a hole in the ids
  return &s;
}

void Bpe::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (int32_t id = token_id(word); id >= 0) {
      out.push_back(id);
      return;
    }
  }
  // Cut long words between two characters that are both tokens (so neither becomes bytes
  // or a fused unk) and that no token holds side by side. Prefixes and suffixes depend on
  // the position in the word, so words are not cut when the model has them.
  if (word.size() <= 64 || has_prefix_ || has_suffix_) {
    merge_word(word, out);
    return;
  }
  size_t begin = 0;
  uint32_t prev = 0;
  bool prev_is_token = false;
  for (size_t i = 0; i < word.size();) {
    const size_t at = i;
    const uint32_t cp = unicode::next_cp(word, i);
    const bool is_token = token_id(word.substr(at, i - at)) >= 0;
    if (at > 0 && prev_is_token && is_token && !bigrams_.count(pair_key(prev, cp))) {
      merge_word(word.substr(begin, at - begin), out);
      begin = at;
    }
    prev = cp, prev_is_token = is_token;
  }
  merge_word(word.substr(begin), out);
}

void Bpe::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  // 1. Initial symbols, one per character (or per byte with byte fallback).
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // linked list over positions; -1 at the ends
    bool alive;
  };
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  const auto add = [&](int32_t id) {
    const int32_t pos = int32_t(sym.size());
    sym.push_back({id, pos - 1, pos + 1, true});
  };
  int32_t pending_unk = -1;  // a fused run of unknown characters not yet added
  std::string piece;
  for (size_t i = 0; i < word.size();) {
    const size_t begin = i;
    unicode::next_cp(word, i);
    std::string_view ch = word.substr(begin, i - begin);
    std::string_view key = ch;
    if ((has_prefix_ && begin > 0) || (has_suffix_ && i == word.size())) {
      piece.assign(has_prefix_ && begin > 0 ? prefix_ : std::string());
      piece.append(ch);
      if (has_suffix_ && i == word.size()) piece.append(suffix_);
      key = piece;
    }
    if (int32_t id = token_id(key); id >= 0) {
      if (pending_unk >= 0) add(pending_unk), pending_unk = -1;
      add(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : key) all = all && byte_ids_[uint8_t(c)] >= 0;
      if (all) {
        for (char c : key) add(byte_ids_[uint8_t(c)]);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (pending_unk >= 0 && !fuse_unk_) add(pending_unk);
      pending_unk = unk_id_;
    }
  }
  if (pending_unk >= 0) add(pending_unk);
  if (sym.empty()) return;
  sym.back().next = -1;

  // 2. Merge by rank. Queue entries can go stale when a neighbour merged first: an entry is
  // used only if its pair still merges into the same id (the library's exact rule).
  struct Merge {
    int32_t rank, pos, new_id;
  };
  const auto later = [](const Merge& x, const Merge& y) { return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos; };
  std::priority_queue<Merge, std::vector<Merge>, decltype(later)> queue(later);
  const auto push_pair = [&](int32_t pos) {
    const int32_t nx = sym[size_t(pos)].next;
    if (nx < 0) return;
    auto it = merges_.find(pair_key(uint32_t(sym[size_t(pos)].id), uint32_t(sym[size_t(nx)].id)));
    if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.new_id});
  };
  for (int32_t p = 0; p + 1 < int32_t(sym.size()); ++p) push_pair(p);
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& left = sym[size_t(top.pos)];
    if (!left.alive || left.next < 0) continue;
    const int32_t right_pos = left.next;
    Symbol& right = sym[size_t(right_pos)];
    auto it = merges_.find(pair_key(uint32_t(left.id), uint32_t(right.id)));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    left.next = right.next;
    right.alive = false;
    if (right.next >= 0) sym[size_t(right.next)].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (const Symbol& s : sym)
    if (s.alive) out.push_back(s.id);
}

}  // namespace obr::tok
