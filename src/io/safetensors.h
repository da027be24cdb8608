// safetensors model weights: one file, or a directory of shards with an index.
//
// File layout (https://github.com/huggingface/safetensors):
//   bytes 0-7       N, little-endian uint64: header length
//   bytes 8..8+N    JSON object, UTF-8, may be padded with trailing spaces:
//                     {"__metadata__": {"format": "pt"},            (optional, string -> string)
//                      "model.norm.weight": {"dtype": "BF16", "shape": [4096],
//                                            "data_offsets": [0, 8192]}, ...}
//   bytes 8+N..     data section; data_offsets [begin, end) are relative to its start
//
// A sharded checkpoint is a directory with model.safetensors.index.json:
//   {"metadata": {"total_size": ...}, "weight_map": {"<tensor>": "model-00001-of-00004.safetensors", ...}}
//
// dtypes: F32, F16, BF16, F64, I8, U8, I32, I64 (others, e.g. BOOL or F8_E4M3, are refused
// with a message naming them).
//
// TensorStore::open checks, and reports with the file, the tensor and the numbers:
//   the header length (beyond the file, or over 100 MB), the header (valid JSON, an object,
//   no duplicate keys), every entry (an object with a known "dtype", a "shape" of
//   non-negative integers, "data_offsets" = [begin, end] with begin <= end <= data section
//   size, end - begin == numel * dtype size, no byte overflow), no two tensors overlapping
//   (sorted by begin; gaps are allowed), "__metadata__" values being strings; for shards:
//   the index is valid, every shard it names exists (relative, no ".."), holds the tensors
//   the index assigns to it, and no tensor name appears in two shards.
//
// Memory: each file is mmap'ed read-only (MAP_PRIVATE) once; get() returns views whose
// `owner` keeps the mapping alive, so a Tensor may outlive its TensorStore. Alignment:
// safetensors does not align tensor data. get() returns a zero-copy view when the data
// address is a multiple of the element size (always so for files from write_safetensors
// and usually so for files from the Python library, which pads the header to 8 bytes and
// orders tensors by decreasing element size); otherwise it returns an owned copy, so
// consumers may rely on natural alignment of the element type, but never on 64-byte (SIMD)
// alignment of a view. Views are read-only: clone() before writing. Do not modify a file
// while a store has it open (the kernel would raise SIGBUS for pages cut off by a truncate).
//
// write_safetensors writes a file that the Python library reads: tensors sorted by
// decreasing element size then name, packed without gaps, the header padded with spaces
// to a multiple of 8 so every tensor is naturally aligned; "__metadata__" gets
// "format": "pt" unless the caller sets "format" (transformers refuses archives without it).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace obr {

class TensorStore {
 public:
  struct Info {
    DType dtype;
    Shape shape;
    uint64_t nbytes;
    std::string file;  // the file that holds it
  };

  // `path`: a .safetensors file, a model.safetensors.index.json file, or a directory with
  // model.safetensors.index.json (preferred) or model.safetensors.
  static TensorStore open(const std::string& path);

  bool has(const std::string& name) const;
  // Zero-copy read-only view into the mapping (owned copy when misaligned, see above).
  // Error names the tensor and the path if it is missing.
  Tensor get(const std::string& name) const;
  // dtype, shape, byte size and file of a tensor without touching its data.
  const Info& info(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  // "__metadata__" of every shard merged (for a key in several shards the first shard in
  // file-name order wins).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Advice that a tensor's bytes will not be read again: its whole pages are dropped from this
  // process's resident memory (Linux madvise), so a layer-by-layer pass over a model larger than
  // RAM does not keep every layer it has read resident. Views of it stay valid (pages are read
  // again from the file if touched).
  void drop_pages(const std::string& name) const;
  std::string file_of(const std::string& name) const;
  std::vector<std::string> files() const;  // the .safetensors files, sorted
  size_t total_bytes() const;              // sum of tensor data bytes
  size_t size() const { return entries_.size(); }
  const std::string& path() const { return path_; }  // as given to open()

 private:
  struct Mapping;  // one mmap'ed file; munmaps when the last view of it goes
  struct Entry {
    Info info;
    const unsigned char* data;          // begin of the tensor's bytes in the mapping
    std::shared_ptr<const void> owner;  // the mapping
  };
  const Entry& entry(const std::string& name) const;
  void add_file(const std::string& file);

  std::string path_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::string> files_;
};

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace obr
