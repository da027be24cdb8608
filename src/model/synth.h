// Synthetic Hugging Face checkpoints at real shapes (`obr synth`), for speed and memory work.
//
// The weights are random: NOT a language model, its perplexity and outputs mean nothing. What is
// real is the shape (config.json as published for Llama-3.2-1B, Llama-2-7B, Qwen2.5-7B, or any
// supported config.json), the file layout (safetensors, sharded with an index like
// transformers' save_pretrained) and a few first-order statistics of trained weights, so that
// rotation, quantization and the kernels see realistic value ranges (docs/synth.md):
//
//   linear W [out, in]   W[i][j] = z_ij * r_i * c_j / sqrt(in), z ~ N(0, 1);
//                        row scales r_i and column scales c_j log-normal (sigma kRowSigma,
//                        kColSigma), normalised to E[r^2] = E[c^2] = 1
//   input_layernorm,     level_l * exp(kNormSigma * z_j), around 1; on a few fixed residual
//   post_attention_      channels (the same in every layer and both norms, kOutlierEvery
//   layernorm            hidden channels per outlier) times a gain in [kOutlierMin, kOutlierMax]:
//                        the normalised activations entering q/k/v/gate/up then have outlier
//                        channels, the structure QuaRot's rotation is there to remove
//   model.norm           exp(kNormSigma * z_j), no outliers
//   embed_tokens         kEmbedStd * z * r_v (row scales as above)
//   lm_head (untied)     like a linear [V, H]
//   biases               kBiasStd * z
//
// Determinism: every tensor draws from its own xoshiro256** streams (core/rng.h), seeded by
// (seed, FNV-1a hash of the tensor name, row), so the bytes depend on --seed only: not on the
// thread count, the shard size, or --layers (the first N layers of a full model are the same
// bytes as a --layers N model).
//
// Streaming: tensors are generated in blocks of rows (32 MiB) straight into the output
// dtype and written while the next block is generated; memory stays ~2 blocks whatever the
// model size. The directory is written under DIR.tmp.<pid> and renamed to DIR at the end.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"

namespace obr {

// Statistics of the synthetic weights (see above and docs/synth.md for the reasons).
struct SynthStats {
  static constexpr double kRowSigma = 0.3;     // log-normal spread of per-output-channel scales
  static constexpr double kColSigma = 0.2;     // log-normal spread of per-input-channel scales
  static constexpr double kNormSigma = 0.15;   // spread of RMSNorm weights around their level
  static constexpr double kLevelSigma = 0.1;   // spread of each norm's level around 1
  static constexpr double kEmbedStd = 0.02;    // transformers' initializer_range
  static constexpr double kBiasStd = 0.02;
  static constexpr int kOutlierEvery = 512;    // one outlier channel per 512 hidden channels (>= 1)
  static constexpr double kOutlierMin = 8, kOutlierMax = 32;  // outlier gains, log-uniform
};

// The published shapes: "llama-3.2-1b", "llama-2-7b", "qwen2.5-7b".
std::vector<std::string> synth_shape_names();
// config.json text of a published shape, as its Hugging Face repository has it (the dtype
// entry is set by write_synthetic_model to the dtype written). Error for any other name,
// listing the valid ones.
std::string synth_shape_config(const std::string& name);

// The hidden channels that carry outliers in the RMSNorm weights for this seed (sorted).
std::vector<int> synth_outlier_channels(const ModelConfig& cfg, uint64_t seed);

// One standard normal from 64 random bits: the inverse normal CDF (Acklam's rational
// approximation, relative error < 1.2e-9) at the 53-bit uniform (u + 0.5) / 2^53.
double synth_normal(uint64_t bits);

struct SynthOptions {
  uint64_t seed = 0;
  DType dtype = DType::BF16;                   // BF16, F16 or F32
  int layers = 0;                              // 0: all; N: the first N layers only
  uint64_t max_shard_bytes = 5'000'000'000;    // transformers' default max_shard_size "5GB"
  std::string tokenizer_dir;                   // tokenizer.json + tokenizer_config.json from here; "": none
  bool overwrite = false;                      // replace an existing model directory
  std::string shape_name;                      // recorded in config.json ("llama-2-7b", a file name)
};

struct SynthResult {
  ModelConfig cfg;        // as written (num_hidden_layers = layers written)
  int64_t parameters = 0;
  uint64_t tensor_bytes = 0;
  std::vector<std::string> files;  // file names in the directory, sorted
  double seconds = 0;
};

// Writes a Hugging Face model directory `out_dir` from `config_json` (the text of a supported
// config.json; `source` names it in messages): config.json (the input with num_hidden_layers
// set to the layers written, the dtype set, and "obr_synthetic": true plus "obr_synthetic_info"
// with the seed and a statement that the weights are random), model.safetensors or
// model-0000K-of-0000N.safetensors + model.safetensors.index.json when the tensors exceed
// max_shard_bytes, the tokenizer files, and SYNTHETIC.md. Errors (obr::Error): unsupported
// config, out_dir existing without overwrite (or, with it, not a model directory), too little
// free disk space, and I/O errors; nothing is left under out_dir then.
SynthResult write_synthetic_model(const std::string& config_json, const std::string& source,
                                  const std::string& out_dir, const SynthOptions& opt);

}  // namespace obr
