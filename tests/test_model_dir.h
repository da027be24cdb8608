// A random Llama model written as a Hugging Face directory, for tests that run whole commands.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/synthetic.h"

namespace obr::testing {

// config.json, model.safetensors (f32) and the tiny model's tokenizer files. Tensors whose name
// is in `leave_out` are not written (to test a damaged source).
inline void write_model_dir(const std::filesystem::path& dir, const ModelConfig& cfg, uint64_t seed,
                            const std::vector<std::string>& leave_out = {}) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  const LlamaModel m = random_llama(cfg, seed);
  std::vector<std::pair<std::string, Tensor>> t;
  t.push_back({"model.embed_tokens.weight", m.embed});
  t.push_back({"model.norm.weight", m.final_norm});
  t.push_back({"lm_head.weight", dynamic_cast<const DenseLinear&>(*m.lm_head).weight()});
  for (size_t l = 0; l < m.layers.size(); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", m.layers[l].attn_norm});
    t.push_back({p + "post_attention_layernorm.weight", m.layers[l].mlp_norm});
    for (int j = 0; j < kNumProj; ++j)
      t.push_back({p + proj_module(Proj(j)) + "." + proj_name(Proj(j)) + ".weight",
                   dynamic_cast<const DenseLinear&>(*m.layers[l].proj[size_t(j)]).weight()});
  }
  for (const std::string& name : leave_out)
    for (size_t i = 0; i < t.size(); ++i)
      if (t[i].first == name) t.erase(t.begin() + long(i));
  write_safetensors((dir / "model.safetensors").string(), t);
  const std::string cj = cfg.to_json();
  write_file_atomic((dir / "config.json").string(), cj.data(), cj.size());
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(fs::path(OBR_SOURCE_DIR) / "data/models/tiny" / f, dir / f, fs::copy_options::overwrite_existing);
}

}  // namespace obr::testing
