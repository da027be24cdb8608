// The output of `obr compress`, and a loader that opens either a Hugging Face model directory
// or a compressed one.
//
// A compressed model is a directory:
//   config.json, tokenizer.json, tokenizer_config.json   copied from the source model
//   obr.json            what was done: format, method and options, rotation (seed, the online
//                       Hadamard sizes), the activation / KV quantizers to use at evaluation,
//                       the packing (format, bytes per weight), per-linear losses
//   model.safetensors   F32 embed_tokens / norms / lm_head (rotated; lm_head stays full
//                       precision), `<name>.bias` (F32, only if the model has one), and per
//                       projection either
//                         obr-packed-v1 (weights of <= 4 bits, the default): the packed INT4
//                         tensors `<name>.int4`, `.scales`, `.row_sum` (+ `.masks`,
//                         `.block_offset` when unstructured), layout in model/packed_io.h and
//                         simd/packed_format.h; the metadata key "int4_format" names the format
//                         (dense, 2:4 or unstructured, from the sparsity options);
//                         obr-simulated-v1 (5..8-bit weights): `<name>.qweight` (I8 [out, in],
//                         pruned = 0) and `<name>.scales` (F32 [out]).
//                       Either way W_hat = code * scales[row], exactly.
// The directory is written under a temporary name and renamed into place when complete.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "compress/pipeline.h"
#include "model/llama.h"
#include "simd/packed_format.h"

namespace obr {

struct LoadedModel {
  std::unique_ptr<LlamaModel> model;
  std::string tokenizer_dir;  // where tokenizer.json is
  bool compressed = false;
  nlohmann::json meta;        // obr.json of a compressed model
};

// How a compressed model's projections run:
//   Simulated: W_hat = codes * scale in f32, activations fake-quantized in f32 (the paper's
//              evaluation; bit-comparable with a PyTorch reference).
//   Int4:      packed INT4 weights (2:4, unstructured or dense, chosen from the compression
//              options) and int8-coded activations through the integer kernels (simd/).
enum class Engine { Simulated, Int4 };
Engine parse_engine(const std::string& name);  // "simulated" | "int4"

// A Hugging Face model directory, or the output of `obr compress` (then with its online
// Hadamards and activation / KV quantizers installed unless weights_only).
LoadedModel load_any_model(const std::string& path, bool weights_only = false, Engine engine = Engine::Simulated);

// The packed INT4 layout a compressed model uses: 2:4 for --nm 2:4, unstructured for any other
// sparsity, dense otherwise.
simd::Int4Format int4_format_for(const CompressOptions& o);

// obr.json's "online_hadamards": each online transform's place, size n and base order K
// (n = K * 2^m), and the residual stream's seed; null without rotation.
nlohmann::json online_hadamards_json(const ModelConfig& c, const CompressOptions& o);

nlohmann::json options_to_json(const CompressOptions& o);
CompressOptions options_from_json(const nlohmann::json& j);

// Writes `out_dir` (atomically, as a whole directory). `extra` is merged into obr.json.
void save_compressed(const std::string& out_dir, const LlamaModel& m, const CompressReport& rep, const CompressOptions& opt,
                     const std::string& source_dir, const nlohmann::json& extra, bool overwrite);

}  // namespace obr
