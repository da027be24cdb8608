// A Llama-family model's shape and hyper-parameters, read from Hugging Face config.json.
//
// Supported model_type: "llama" (Llama 1/2/3, TinyLlama, ...), "mistral", "qwen2" (Qwen2,
// Qwen2.5). If model_type is absent, architectures[0] decides ("LlamaForCausalLM", ...).
// Both config.json conventions are read:
//   transformers <= 4.x: top-level "rope_theta", "rope_scaling": {"rope_type" (or "type"):
//                        "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4,
//                        "original_max_position_embeddings": 8192}, "torch_dtype"
//   transformers 5.x:    "rope_parameters": {"rope_theta": 500000, "rope_type": "llama3", ...},
//                        "dtype"
// RoPE types: "default", "linear", "llama3"; others ("dynamic", "yarn", "longrope") are
// refused with the value named. Defaults follow transformers: num_key_value_heads = heads,
// head_dim = hidden / heads, rms_norm_eps 1e-6, rope_theta 10000; eos_token_id may be a
// list (the first is kept). Biases: llama's "attention_bias" gives q/k/v AND o_proj biases,
// "mlp_bias" gate/up/down biases; qwen2 always has q/k/v biases (no o_proj bias); mistral
// has none. Mistral's sliding_window (and qwen2's when use_sliding_window is true) is kept
// for summary() but not applied: obr uses full causal attention, which equals sliding-window
// attention for sequences no longer than the window.
//
// Checks (obr::Error naming the source file and the field): JSON syntax, supported
// architecture, required sizes present and positive, heads % kv_heads == 0, head_dim even,
// hidden == heads * head_dim when head_dim is not given, hidden_act "silu", finite positive
// eps/theta, complete llama3 RoPE parameters with high_freq_factor > low_freq_factor, no
// conflicting rope_theta between the two conventions, no quantization_config (obr needs an
// unquantized checkpoint).
#pragma once

#include <cstdint>
#include <string>

namespace obr {

struct RopeScaling {
  std::string type = "default";  // "default", "linear", "llama3"
  double factor = 1, low_freq_factor = 1, high_freq_factor = 4;
  int original_max_position_embeddings = 0;  // llama3 only
};

struct ModelConfig {
  std::string model_type;  // "llama", "mistral", "qwen2"
  int hidden_size = 0, intermediate_size = 0, num_hidden_layers = 0, num_attention_heads = 0, num_key_value_heads = 0,
      head_dim = 0, vocab_size = 0,
      max_position_embeddings = 0;  // 0: not given
  double rms_norm_eps = 1e-6, rope_theta = 10000;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // q_proj/k_proj/v_proj have biases (qwen2; llama attention_bias)
  bool o_bias = false;    // o_proj has a bias (llama attention_bias only)
  bool mlp_bias = false;  // gate/up/down have biases (llama mlp_bias)
  int bos_token_id = -1, eos_token_id = -1;
  int sliding_window = 0;  // 0: none; read and reported, not applied (see above)
  std::string dtype;       // "bfloat16", ... from "dtype" or "torch_dtype"; "" if absent

  // `path`: a config.json file or a model directory holding one.
  static ModelConfig from_file(const std::string& path);
  static ModelConfig from_json(const std::string& text, const std::string& source_name);
  // config.json text (transformers 4.x convention, which 5.x also reads) that from_json
  // reads back to an identical ModelConfig.
  std::string to_json() const;
  std::string summary() const;  // multi-line, for `obr inspect`

  // Parameters implied by the shapes (embeddings, projections, biases, norms, lm_head
  // unless tied). Llama-2-7B: 6,738,415,616.
  int64_t num_parameters() const;
};

}  // namespace obr
