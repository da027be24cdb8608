// How one packed INT4 weight (simd::PackedWeights, layouts in simd/packed_format.h) is stored
// as safetensors tensors under a name prefix `base` (e.g. "model.layers.0.self_attn.q_proj"):
//
//   base.int4          U8  [n_pad / 16, B]     dense (B = 8 * k_pad) and 2:4 (B = 6 * k_pad):
//                                              row block b is row b, byte for byte as in memory
//                      U8  [bytes]             unstructured: the compacted values, 64-byte tail
//   base.scales        F32 [n_out]             per-row scale s_w
//   base.row_sum       I32 [n_pad]             sum of each row's codes (the x86 kernels' offset)
//   base.masks         I64 [n_pad / 16, k_pad / 8, 2]   unstructured only: the uint64 kept bits,
//                                              stored bit for bit (safetensors readers without
//                                              U64 see the same bytes as I64)
//   base.block_offset  I64 [n_pad / 16 + 1]   unstructured only
//
// The format and the logical shape [n_out, k_in] are not repeated in the tensors: the reader
// takes them from the model's obr.json and config.json and checks every size against them
// (simd::validate_packed), so a truncated or inconsistent file is an error, never a wild read.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"
#include "simd/packed_format.h"

namespace obr {

// "dense", "2:4", "unstructured" (simd::format_name's spellings); anything else is an error.
simd::Int4Format parse_int4_format(const std::string& name);

// Appends w's tensors under `base`. The tensors are views of w's memory: keep w alive and
// unchanged until they are written.
void append_packed_tensors(const std::string& base, const simd::PackedWeights& w,
                           std::vector<std::pair<std::string, Tensor>>& out);

// Reads the tensors under `base` into a PackedWeights of the given format and logical shape
// (copied into 64-byte aligned memory) and validates it. `file` names the model in errors.
simd::PackedWeights read_packed_tensors(const TensorStore& st, const std::string& file, const std::string& base,
                                        simd::Int4Format format, int64_t n_out, int64_t k_in);

}  // namespace obr
