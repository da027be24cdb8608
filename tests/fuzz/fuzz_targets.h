// One function per parser that feeds it an arbitrary input, shared by the libFuzzer harnesses
// (tests/fuzz/fuzz_*.cpp) and the corpus replay test (tests/test_robust_fuzz_corpus.cpp).
//
// Contract: each returns true if the input was accepted and false if it was rejected with an
// obr::Error. Anything else is a bug: a crash or a sanitizer report, another exception type
// escaping (e.g. nlohmann::json's or std::out_of_range), or a broken round-trip invariant
// (abort()). The readers that only take a path get the bytes through a scratch file.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/tensor.h"
#include "io/npy.h"
#include "io/text.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

namespace obr::fuzz {

// A per-process scratch file, on /dev/shm when there is one (no disk I/O per input).
inline std::string scratch_path(const char* ext) {
  const char* dir = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp");
  return std::string(dir) + "/obr_fuzz_" + std::to_string(::getpid()) + ext;
}

inline std::string scratch_file(const uint8_t* data, size_t n, const char* ext) {
  struct Cleanup {  // at exit
    ~Cleanup() {
      for (const char* e : {".npy", ".rewritten.npy", ".safetensors", ".rewritten.safetensors"})
        std::remove(scratch_path(e).c_str());
    }
  };
  static const Cleanup cleanup;
  const std::string path = scratch_path(ext);
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (n && std::fwrite(data, 1, n, f) != n) std::abort();
  std::fclose(f);
  return path;
}

// Reads every byte of t (so a view past its mapping would be caught by ASan or SIGSEGV) and
// converts float tensors to f32.
inline uint64_t touch(const Tensor& t) {
  uint64_t sum = 0;
  const unsigned char* p = static_cast<const unsigned char*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) sum += p[i];
  const DType dt = t.dtype();
  if (dt == DType::F32 || dt == DType::F64 || dt == DType::F16 || dt == DType::BF16) sum += uint64_t(t.to_f32().numel());
  return sum;
}

inline bool same_tensor(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

// An accepted array must survive write_npy -> read_npy unchanged.
inline bool feed_npy(const uint8_t* data, size_t n) {
  const std::string path = scratch_file(data, n, ".npy");
  Tensor t;
  try {
    t = read_npy(path);
  } catch (const Error&) {
    return false;
  }
  touch(t);
  const std::string again = scratch_path(".rewritten.npy");
  write_npy(again, t);  // must not throw
  if (!same_tensor(read_npy(again), t)) std::abort();
  return true;
}

// An accepted file must survive write_safetensors -> open unchanged (tensors and metadata;
// the writer adds "format": "pt" when there is no "format").
inline bool feed_safetensors(const uint8_t* data, size_t n) {
  const std::string path = scratch_file(data, n, ".safetensors");
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::map<std::string, std::string> meta;
  try {
    TensorStore st = TensorStore::open(path);
    for (const std::string& name : st.names()) {
      const TensorStore::Info& info = st.info(name);
      Tensor t = st.get(name);
      if (t.nbytes() != info.nbytes) std::abort();
      touch(t);
      tensors.push_back({name, t.clone()});
    }
    meta = st.metadata();
  } catch (const Error&) {
    return false;
  }
  const std::string again = scratch_path(".rewritten.safetensors");
  write_safetensors(again, tensors, meta);  // must not throw
  const TensorStore back = TensorStore::open(again);
  if (back.size() != tensors.size()) std::abort();
  for (const auto& [name, t] : tensors)
    if (!back.has(name) || !same_tensor(back.get(name), t)) std::abort();
  if (!meta.count("format")) meta["format"] = "pt";
  if (back.metadata() != meta) std::abort();
  return true;
}

// config.json text; an accepted config must survive to_json -> from_json unchanged.
inline bool feed_config(const uint8_t* data, size_t n) {
  const std::string text(reinterpret_cast<const char*>(data), n);
  ModelConfig c;
  try {
    c = ModelConfig::from_json(text, "fuzz/config.json");
  } catch (const Error&) {
    return false;
  }
  (void)c.summary();
  (void)c.num_parameters();
  std::string once;
  try {
    once = c.to_json();
  } catch (const Error&) {
    return true;  // some accepted configs have no to_json spelling (documented refusals)
  }
  const ModelConfig back = ModelConfig::from_json(once, "fuzz/config.json (rewritten)");  // must not throw
  if (back.to_json() != once) std::abort();
  return true;
}

// tokenizer.json text, optionally followed by a NUL byte and a text to encode; an accepted
// tokenizer must encode and decode that text and a few fixed strings.
inline bool feed_tokenizer_json(const uint8_t* data, size_t n) {
  const std::string input(reinterpret_cast<const char*>(data), n);
  const size_t nul = input.find('\0');
  const std::string json = input.substr(0, nul);
  const std::string extra = nul == std::string::npos ? std::string("ab abc") : input.substr(nul + 1);
  try {
    Tokenizer t = Tokenizer::from_json_text(json, "", "fuzz/tokenizer.json");
    for (const std::string& s : {extra, std::string("Hello world"), std::string(" a  b\n\tc"),
                                std::string("caf\xc3\xa9 \xe2\x96\x81x <s></s>"), std::string("0123456789!?")}) {
      const std::vector<int32_t> ids = t.encode(s, true);
      (void)t.decode(ids, false);
      (void)t.decode(ids, true);
      (void)t.tokens(ids);
    }
    (void)t.vocab_size();
    (void)t.decode({-1, 0, 1, 2, 1 << 30});
    return true;
  } catch (const Error&) {
    return false;
  }
}

// The tiny model's tokenizer (data/models/tiny, byte-level BPE, no normalizer) on arbitrary
// bytes: valid UTF-8 must decode back to itself (invalid UTF-8 may be rejected, or decoded
// with replacement characters as the Python library does).
inline bool feed_tokenizer_encode(const uint8_t* data, size_t n) {
  static const Tokenizer tok = Tokenizer::from_file(std::string(OBR_SOURCE_DIR) + "/data/models/tiny/tokenizer.json");
  const std::string text(reinterpret_cast<const char*>(data), n);
  std::vector<int32_t> ids;
  try {
    ids = tok.encode(text, false);
  } catch (const Error&) {
    return false;
  }
  const std::string back = tok.decode(ids, false);
  (void)tok.tokens(ids);
  if (find_invalid_utf8(text) == std::string::npos && back != text) {
    std::fprintf(stderr, "tokenizer round trip: %zu bytes in, %zu bytes back\n", text.size(), back.size());
    std::abort();
  }
  return true;
}

}  // namespace obr::fuzz
