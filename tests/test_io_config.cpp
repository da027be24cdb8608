// config.json for the Llama family: both transformers conventions, real-model shapes
// (checked through the parameter counts the models are known by), to_json round trips,
// and hostile configs, each of which must give an obr::Error naming the source.
// The configs below are written for these tests in the shape of the public ones.
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <vector>

#include "core/check.h"
#include "io/atomic_file.h"
#include "model/config.h"
#include "test_util.h"

using namespace obr;
using namespace obr::testing;
namespace fs = std::filesystem;

namespace {

const char* kLlama2_7B = R"({
  "architectures": ["LlamaForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 11008,
  "max_position_embeddings": 4096,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.31.0",
  "use_cache": true,
  "vocab_size": 32000
})";

// transformers 4.x spelling of Llama-3.1-8B's RoPE.
const char* kLlama3_8B = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "vocab_size": 128256
})";

// The same model as transformers 5.x writes it.
const char* kLlama3_8B_v5 = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "bos_token_id": 128000,
  "dtype": "bfloat16",
  "eos_token_id": [128001, 128008, 128009],
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_parameters": {
    "factor": 8.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rope_type": "llama3"
  },
  "tie_word_embeddings": false,
  "transformers_version": "5.0.0",
  "vocab_size": 128256
})";

const char* kQwen25_05B = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 32768,
  "max_window_layers": 24,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
})";

const char* kMistral_7B = R"({
  "architectures": ["MistralForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "sliding_window": 4096,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "vocab_size": 32000
})";

const char* kTinyLlama = R"({
  "architectures": ["LlamaForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "intermediate_size": 5632,
  "max_position_embeddings": 2048,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 22,
  "num_key_value_heads": 4,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "rope_theta": 10000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "float32",
  "vocab_size": 32000
})";


void check_same(const ModelConfig& a, const ModelConfig& b) {
  CHECK(a.model_type == b.model_type);
  CHECK(a.hidden_size == b.hidden_size);
  CHECK(a.intermediate_size == b.intermediate_size);
  CHECK(a.num_hidden_layers == b.num_hidden_layers);
  CHECK(a.num_attention_heads == b.num_attention_heads);
  CHECK(a.num_key_value_heads == b.num_key_value_heads);
  CHECK(a.head_dim == b.head_dim);
  CHECK(a.vocab_size == b.vocab_size);
  CHECK(a.max_position_embeddings == b.max_position_embeddings);
  CHECK(a.rms_norm_eps == b.rms_norm_eps);
  CHECK(a.rope_theta == b.rope_theta);
  CHECK(a.rope_scaling.type == b.rope_scaling.type);
  CHECK(a.rope_scaling.factor == b.rope_scaling.factor);
  CHECK(a.rope_scaling.low_freq_factor == b.rope_scaling.low_freq_factor);
  CHECK(a.rope_scaling.high_freq_factor == b.rope_scaling.high_freq_factor);
  CHECK(a.rope_scaling.original_max_position_embeddings == b.rope_scaling.original_max_position_embeddings);
  CHECK(a.tie_word_embeddings == b.tie_word_embeddings);
  CHECK(a.qkv_bias == b.qkv_bias);
  CHECK(a.o_bias == b.o_bias);
  CHECK(a.mlp_bias == b.mlp_bias);
  CHECK(a.bos_token_id == b.bos_token_id);
  CHECK(a.eos_token_id == b.eos_token_id);
  CHECK(a.sliding_window == b.sliding_window);
  CHECK(a.dtype == b.dtype);
}

// Replaces the first `from` in `text` (which must be there) by `to`.
std::string edit(const std::string& text, const std::string& from, const std::string& to) {
  size_t at = text.find(from);
  REQUIRE_MESSAGE(at != std::string::npos, "test config lacks ", from);
  return text.substr(0, at) + to + text.substr(at + from.size());
}

}  // namespace

TEST_CASE("io: config Llama-2-7B-like, defaults for kv heads and head_dim") {
  ModelConfig c = ModelConfig::from_json(kLlama2_7B, "llama2/config.json");
  CHECK(c.model_type == "llama");
  CHECK(c.num_key_value_heads == 32);
  CHECK(c.head_dim == 128);
  CHECK(c.rope_theta == 10000);
  CHECK(c.rope_scaling.type == "default");
  CHECK(c.rms_norm_eps == 1e-5);
  CHECK(c.bos_token_id == 1);
  CHECK(c.eos_token_id == 2);
  CHECK(c.dtype == "float16");
  CHECK(!c.qkv_bias);
  CHECK(!c.tie_word_embeddings);
  CHECK(c.num_parameters() == 6738415616);
  std::string s = c.summary();
  CHECK(s.find("layers 32") != std::string::npos);
  CHECK(s.find("6738415616 parameters (6.73842 B)") != std::string::npos);
}

TEST_CASE("io: config Llama-3-8B-like with llama3 RoPE, both transformers conventions") {
  ModelConfig old = ModelConfig::from_json(kLlama3_8B, "llama3/config.json");
  CHECK(old.num_key_value_heads == 8);
  CHECK(old.rope_theta == 500000);
  CHECK(old.rope_scaling.type == "llama3");
  CHECK(old.rope_scaling.factor == 8);
  CHECK(old.rope_scaling.low_freq_factor == 1);
  CHECK(old.rope_scaling.high_freq_factor == 4);
  CHECK(old.rope_scaling.original_max_position_embeddings == 8192);
  CHECK(old.eos_token_id == 128001);  // first of the list
  CHECK(old.dtype == "bfloat16");
  CHECK(old.num_parameters() == 8030261248);
  CHECK(old.summary().find("llama3 scaling") != std::string::npos);

  ModelConfig v5 = ModelConfig::from_json(kLlama3_8B_v5, "llama3-v5/config.json");
  check_same(old, v5);
  CHECK(old.to_json() == v5.to_json());

  // The legacy "type" key of rope_scaling works too.
  ModelConfig legacy =
      ModelConfig::from_json(edit(kLlama3_8B, "\"rope_type\": \"llama3\"", "\"type\": \"llama3\""), "x");
  check_same(old, legacy);
}

TEST_CASE("io: config Qwen2.5-, Mistral- and TinyLlama-like") {
  ModelConfig q = ModelConfig::from_json(kQwen25_05B, "qwen/config.json");
  CHECK(q.model_type == "qwen2");
  CHECK(q.tie_word_embeddings);
  CHECK(q.qkv_bias);
  CHECK(!q.o_bias);
  CHECK(q.head_dim == 64);
  CHECK(q.sliding_window == 0);  // use_sliding_window false
  CHECK(q.rope_theta == 1e6);
  CHECK(q.num_parameters() == 494032768);

  ModelConfig m = ModelConfig::from_json(kMistral_7B, "mistral/config.json");
  CHECK(m.model_type == "mistral");
  CHECK(m.sliding_window == 4096);
  CHECK(!m.qkv_bias);
  CHECK(m.num_parameters() == 7241732096);
  std::string s = m.summary();
  CHECK(s.find("sliding_window 4096 is ignored") != std::string::npos);

  ModelConfig t = ModelConfig::from_json(kTinyLlama, "tinyllama/config.json");
  CHECK(t.num_key_value_heads == 4);
  CHECK(t.head_dim == 64);
  CHECK(t.num_parameters() == 1100048384);

  // model_type may be missing: architectures decides.
  ModelConfig a = ModelConfig::from_json(edit(kMistral_7B, "\"model_type\": \"mistral\",", ""), "x");
  CHECK(a.model_type == "mistral");
  // Llama with attention_bias: q/k/v and o_proj biases; mlp_bias.
  ModelConfig b = ModelConfig::from_json(edit(edit(kLlama3_8B, "\"attention_bias\": false", "\"attention_bias\": true"),
                                              "\"mlp_bias\": false", "\"mlp_bias\": true"),
                                         "x");
  CHECK(b.qkv_bias);
  CHECK(b.o_bias);
  CHECK(b.mlp_bias);
  CHECK(b.num_parameters() == 8030261248 + 32 * (4096 + 2 * 1024 + 4096 + 2 * 14336 + 4096));
  // An explicit head_dim need not be hidden / heads (Mistral-Nemo-like).
  ModelConfig n = ModelConfig::from_json(
      edit(kMistral_7B, "\"hidden_size\": 4096", "\"hidden_size\": 5120, \"head_dim\": 128"), "x");
  CHECK(n.head_dim == 128);
  // Qwen2 with the sliding window switched on.
  ModelConfig w =
      ModelConfig::from_json(edit(kQwen25_05B, "\"use_sliding_window\": false", "\"use_sliding_window\": true"), "x");
  CHECK(w.sliding_window == 32768);
}

TEST_CASE("io: config to_json reads back identically") {
  for (const char* text : {kLlama2_7B, kLlama3_8B, kLlama3_8B_v5, kQwen25_05B, kMistral_7B, kTinyLlama}) {
    ModelConfig c = ModelConfig::from_json(text, "orig.json");
    CAPTURE(c.summary());
    const std::string j = c.to_json();
    ModelConfig r = ModelConfig::from_json(j, "written.json");
    check_same(c, r);
    CHECK(r.to_json() == j);
  }
  ModelConfig lin = ModelConfig::from_json(
      edit(kLlama2_7B, "\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}"), "x");
  CHECK(lin.rope_scaling.type == "linear");
  CHECK(lin.rope_scaling.factor == 2);
  check_same(lin, ModelConfig::from_json(lin.to_json(), "y"));
}

TEST_CASE("io: config rejects hostile or unsupported configs, naming the file and field") {
  const std::string src = "model/config.json";
  struct Case {
    std::string text;
    std::vector<std::string> words;
  };
  const std::string l2 = kLlama2_7B, l3 = kLlama3_8B, v5 = kLlama3_8B_v5;
  const Case cases[] = {
      {"{ not json", {"not valid JSON"}},
      {"[1, 2]", {"expected a JSON object"}},
      {"{}", {"neither 'model_type' nor 'architectures'"}},
      {edit(l2, "\"model_type\": \"llama\"", "\"model_type\": \"gpt2\""), {"model_type 'gpt2' is not supported"}},
      {edit(l2, "\"model_type\": \"llama\"", "\"model_type\": \"qwen3\""), {"qwen3", "not supported"}},
      {edit(edit(l2, "\"model_type\": \"llama\",", ""), "LlamaForCausalLM", "GPT2LMHeadModel"),
       {"architecture 'GPT2LMHeadModel' is not supported"}},
      {edit(l2, "\"hidden_size\": 4096,", ""), {"required field 'hidden_size' is missing"}},
      {edit(l2, "\"num_attention_heads\": 32", "\"num_attention_heads\": -32"), {"'num_attention_heads'", "positive"}},
      {edit(l2, "\"num_attention_heads\": 32", "\"num_attention_heads\": 0"), {"'num_attention_heads'", "positive"}},
      {edit(l2, "\"vocab_size\": 32000", "\"vocab_size\": \"32000\""), {"'vocab_size'", "expected an integer"}},
      {edit(l2, "\"vocab_size\": 32000", "\"vocab_size\": 320.5"), {"'vocab_size'", "expected an integer"}},
      {edit(l2, "\"vocab_size\": 32000", "\"vocab_size\": 99999999999"), {"'vocab_size'", "32 bits"}},
      {edit(l2, "\"num_hidden_layers\": 32", "\"num_hidden_layers\": 32, \"num_key_value_heads\": 5"),
       {"not a multiple of num_key_value_heads (5)"}},
      {edit(l2, "\"hidden_size\": 4096", "\"hidden_size\": 4100"), {"hidden_size (4100)", "num_attention_heads (32)"}},
      {edit(l2, "\"hidden_size\": 4096", "\"hidden_size\": 4096, \"head_dim\": 127"), {"head_dim 127 is odd"}},
      {edit(l2, "\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\""), {"hidden_act 'gelu'"}},
      {edit(l2, "\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": 0"), {"'rms_norm_eps'", "positive"}},
      {edit(l2, "\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 2.0}"),
       {"RoPE type 'dynamic' is not supported"}},
      {edit(l2, "\"rope_scaling\": null", "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}"),
       {"rope_scaling", "'yarn'"}},
      {edit(l2, "\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"linear\"}"), {"rope_scaling", "'factor'"}},
      {edit(l2, "\"rope_scaling\": null", "\"rope_scaling\": 2"), {"rope_scaling", "expected an object"}},
      {edit(l3, "\"original_max_position_embeddings\": 8192,", ""),
       {"rope_scaling", "'original_max_position_embeddings' is missing"}},
      {edit(l3, "\"high_freq_factor\": 4.0", "\"high_freq_factor\": 1.0"), {"high_freq_factor", "greater than"}},
      {edit(l3, "\"rope_type\": \"llama3\"", "\"rope_type\": \"llama3\", \"type\": \"linear\""),
       {"'type' is 'linear'"}},
      {edit(v5, "\"rope_type\": \"llama3\"", "\"rope_type\": \"dynamic\""), {"rope_parameters", "'dynamic'"}},
      {edit(v5, "\"mlp_bias\": false", "\"mlp_bias\": false, \"rope_theta\": 10000"), {"conflicts", "500000"}},
      {edit(v5, "\"rope_parameters\": {",
            "\"rope_parameters\": {\"full_attention\": {\"rope_type\": \"default\"}}, \"unused\": {"),
       {"rope_parameters", "per-layer-type"}},
      {edit(l2, "\"use_cache\": true", "\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4}"),
       {"already quantized", "'gptq'"}},
      {edit(l2, "\"tie_word_embeddings\": false", "\"tie_word_embeddings\": \"no\""), {"'tie_word_embeddings'"}},
      {edit(l2, "\"eos_token_id\": 2", "\"eos_token_id\": \"</s>\""), {"'eos_token_id'", "token id"}},
      {edit(l2, "\"eos_token_id\": 2", "\"eos_token_id\": 2, \"eos_token_id\": 3"), {"'eos_token_id' twice"}},
      {edit(l2, "\"architectures\": [\"LlamaForCausalLM\"]", "\"architectures\": \"LlamaForCausalLM\""),
       {"'architectures'"}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    std::vector<std::string> words = c.words;
    words.push_back(src);
    check_error([&] { ModelConfig::from_json(c.text, src); }, words);
  }
  // Accepted oddities: eos as an empty list or null, null head_dim / kv heads.
  ModelConfig c =
      ModelConfig::from_json(edit(edit(l2, "\"eos_token_id\": 2", "\"eos_token_id\": []"), "\"bos_token_id\": 1",
                                  "\"bos_token_id\": null, \"head_dim\": null, \"num_key_value_heads\": null"),
                             src);
  CHECK(c.eos_token_id == -1);
  CHECK(c.bos_token_id == -1);
  CHECK(c.head_dim == 128);
  CHECK(c.num_key_value_heads == 32);
}

TEST_CASE("io: config from_file reads a directory or a file, errors name the path") {
  static std::atomic<int> counter{0};
  const fs::path dir = fs::temp_directory_path() /
                       ("obr_test_io_config_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string file = (dir / "config.json").string();
  check_error([&] { ModelConfig::from_file(dir.string()); }, {file, "No such file"});
  write_file_atomic(file, kTinyLlama, std::string(kTinyLlama).size());
  CHECK(ModelConfig::from_file(dir.string()).num_hidden_layers == 22);
  CHECK(ModelConfig::from_file(file).num_hidden_layers == 22);
  const std::string broken = std::string(kTinyLlama).substr(0, 100);
  write_file_atomic(file, broken.data(), broken.size());
  check_error([&] { ModelConfig::from_file(dir.string()); }, {file, "not valid JSON"});
  fs::remove_all(dir);
}
