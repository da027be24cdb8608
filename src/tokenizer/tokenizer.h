// A Hugging Face tokenizer.json tokenizer (encode + decode), id for id the same as the
// Python `tokenizers` library for the BPE tokenizers of the Llama family:
//
//   bpe-byte-fallback  SentencePiece-style BPE (Llama 2, Mistral, TinyLlama): "▁" for spaces
//                      (Prepend + Replace normalizers, or a Metaspace pre-tokenizer), <0xNN>
//                      tokens for characters outside the vocab.
//   bpe-byte-level     GPT-2-style byte-level BPE (GPT-2, Llama 3, Qwen2, the project's own):
//                      a regex pre-tokenizer, then each byte as one of 256 printable characters.
//
// encode(text) runs the library's pipeline:
//   1. split the text on added tokens (longest match first; lstrip / rstrip / single_word);
//   2. normalize each remaining piece (NFC, Prepend, Replace, Sequence);
//   3. split it on added tokens marked "normalized";
//   4. pre-tokenize (Split with the GPT-2 / Llama-3 / Qwen2 regex, ByteLevel, Metaspace);
//   5. run BPE on each pre-token (tokenizer/bpe.h);
//   6. with add_special_tokens, wrap the ids as the post_processor says (TemplateProcessing).
// decode(ids) runs the decoder chain (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace).
//
// Anything else in the file (another model type, normalizer, pre-tokenizer or decoder, a regex
// other than the three above) is an obr::Error naming the file and the type.
//
// A Tokenizer is immutable after loading: copies share the tables, and encode/decode may be
// called from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace obr {

class Tokenizer {
 public:
  // `path` is a tokenizer.json or a model directory holding one. tokenizer_config.json beside
  // it, when present, names the BOS and EOS tokens.
  static Tokenizer from_file(const std::string& path);
  // The same from the file's text; `config_json` is tokenizer_config.json's text or empty.
  // `name` stands for the file in error messages.
  static Tokenizer from_json_text(const std::string& tokenizer_json, const std::string& config_json = "",
                                  const std::string& name = "tokenizer.json");

  // Token ids of `text` (UTF-8). add_special_tokens: apply the post_processor's template
  // (e.g. BOS for Llama 2), as the library's encode(text, add_special_tokens=True) does.
  std::vector<int32_t> encode(const std::string& text, bool add_special_tokens = false) const;
  // Text of `ids`; ids that no token has are skipped, as the library does.
  // skip_special_tokens: leave out added tokens marked "special".
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;
  // The token strings encode(text) chose, as stored in the vocab (for display).
  std::vector<std::string> tokens(const std::vector<int32_t>& ids) const;

  std::string token_str(int32_t id) const;  // raw vocab (or added token) string; Error if unknown
  int32_t token_id(const std::string& token) const;  // -1 if not a token
  // 1 + the largest id of the vocab and the added tokens: the embedding rows a model needs.
  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 if none
  int32_t eos_id() const;  // -1 if none
  std::string kind() const;  // "bpe-byte-fallback" | "bpe-byte-level" (| "bpe" for plain BPE)
  const std::string& path() const;  // the file it was read from

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace obr
