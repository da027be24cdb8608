#include "model/config.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <sstream>

#include "core/check.h"
#include "io/atomic_file.h"
#include "io/json_util.h"

namespace obr {

using json = nlohmann::json;

namespace {

constexpr size_t kMaxConfigBytes = 16u << 20;  // real config.json files are a few KB

const char* architecture_of(const std::string& model_type) {
  if (model_type == "llama") return "LlamaForCausalLM";
  if (model_type == "mistral") return "MistralForCausalLM";
  if (model_type == "qwen2") return "Qwen2ForCausalLM";
  return nullptr;
}

// Field readers: `obj` is the JSON object, `where` names it in messages ("config.json" or
// "config.json: rope_scaling"). Absent and null both mean "not given".
class Fields {
 public:
  Fields(const json& obj, std::string where) : j_(obj), where_(std::move(where)) {}

  bool given(const char* key) const {
    auto it = j_.find(key);
    return it != j_.end() && !it->is_null();
  }
  const json& at(const char* key) const { return *j_.find(key); }

  // An integer in [lo, INT_MAX]; a float with an integral value (4096.0) is accepted.
  int integer(const char* key, int def, bool required, int lo = 1) const {
    if (!given(key)) {
      OBR_CHECK(!required, where_, ": required field '", key, "' is missing");
      return def;
    }
    const json& v = at(key);
    double x = 0;
    if (v.is_number_integer()) {
      x = v.is_number_unsigned() ? double(v.get<uint64_t>()) : double(v.get<int64_t>());
    } else if (v.is_number_float()) {
      x = v.get<double>();
      OBR_CHECK(std::isfinite(x) && x == std::floor(x), where_, ": field '", key, "' is ", json_brief(v),
                ", expected an integer");
    } else {
      fail(where_, ": field '", key, "' is ", json_brief(v), ", expected an integer");
    }
    OBR_CHECK(x >= lo && x <= double(std::numeric_limits<int>::max()), where_, ": field '", key, "' is ", json_brief(v),
              ", expected ", lo == 1 ? "a positive integer" : "an integer >= " + std::to_string(lo),
              " that fits in 32 bits");
    return int(x);
  }

  double number(const char* key, double def, bool required) const {
    if (!given(key)) {
      OBR_CHECK(!required, where_, ": required field '", key, "' is missing");
      return def;
    }
    const json& v = at(key);
    OBR_CHECK(v.is_number(), where_, ": field '", key, "' is ", json_brief(v), ", expected a number");
    double x = v.get<double>();
    OBR_CHECK(std::isfinite(x), where_, ": field '", key, "' is not finite");
    return x;
  }

  double positive(const char* key, double def, bool required) const {
    double x = number(key, def, required);
    OBR_CHECK(x > 0, where_, ": field '", key, "' is ", x, ", expected a positive number");
    return x;
  }

  bool boolean(const char* key, bool def) const {
    if (!given(key)) return def;
    const json& v = at(key);
    OBR_CHECK(v.is_boolean(), where_, ": field '", key, "' is ", json_brief(v), ", expected true or false");
    return v.get<bool>();
  }

  std::string string(const char* key, const std::string& def) const {
    if (!given(key)) return def;
    const json& v = at(key);
    OBR_CHECK(v.is_string(), where_, ": field '", key, "' is ", json_brief(v), ", expected a string");
    return v.get<std::string>();
  }

  // Token ids: an integer, a list of integers (the first is kept), or null / absent (-1).
  int token_id(const char* key) const {
    if (!given(key)) return -1;
    const json& v = at(key);
    const json* first = &v;
    if (v.is_array()) {
      if (v.empty()) return -1;
      first = &v[0];
    }
    OBR_CHECK(first->is_number_integer() && first->get<int64_t>() >= 0 &&
                  first->get<int64_t>() <= std::numeric_limits<int>::max(),
              where_, ": field '", key, "' is ", json_brief(v), ", expected a token id or a list of them");
    return int(first->get<int64_t>());
  }

 private:
  const json& j_;
  std::string where_;
};

// rope_scaling (4.x) or rope_parameters (5.x) -> RopeScaling; `where` names the object.
RopeScaling read_rope(const json& r, const std::string& where) {
  OBR_CHECK(r.is_object(), where, " is ", json_brief(r), ", expected an object");
  Fields f(r, where);
  RopeScaling rs;
  std::string type = f.string("rope_type", "");
  std::string legacy = f.string("type", "");
  OBR_CHECK(type.empty() || legacy.empty() || type == legacy, where, ": 'rope_type' is '", type, "' but 'type' is '",
            legacy, "'");
  rs.type = !type.empty() ? type : !legacy.empty() ? legacy : "default";
  if (rs.type == "default") return rs;
  if (rs.type == "linear") {
    rs.factor = f.positive("factor", 1, true);
    return rs;
  }
  if (rs.type == "llama3") {
    rs.factor = f.positive("factor", 1, true);
    rs.low_freq_factor = f.positive("low_freq_factor", 1, true);
    rs.high_freq_factor = f.positive("high_freq_factor", 4, true);
    rs.original_max_position_embeddings = f.integer("original_max_position_embeddings", 0, true);
    OBR_CHECK(rs.high_freq_factor > rs.low_freq_factor, where, ": high_freq_factor (", rs.high_freq_factor,
              ") must be greater than low_freq_factor (", rs.low_freq_factor, ")");
    return rs;
  }
  fail(where, ": RoPE type '", rs.type, "' is not supported (obr implements default, linear, llama3)");
}

std::string fmt_g(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

}  // namespace

ModelConfig ModelConfig::from_file(const std::string& path) {
  std::error_code ec;
  const bool dir = std::filesystem::is_directory(path, ec);
  // read_file reports a missing config.json with its full path.
  const std::string file = dir ? (std::filesystem::path(path) / "config.json").string() : path;
  return from_json(read_file(file, kMaxConfigBytes), file);
}

ModelConfig ModelConfig::from_json(const std::string& text, const std::string& source_name) {
  const std::string& src = source_name;
  const json j = parse_json(text, src);
  OBR_CHECK(j.is_object(), src, ": expected a JSON object, got ", json_brief(j));
  Fields f(j, src);
  ModelConfig c;

  // ---- architecture ----
  std::string arch;
  if (f.given("architectures")) {
    const json& a = f.at("architectures");
    OBR_CHECK(a.is_array() && (a.empty() || a[0].is_string()), src, ": field 'architectures' is ", json_brief(a),
              ", expected a list of class names");
    if (!a.empty()) arch = a[0].get<std::string>();
  }
  c.model_type = f.string("model_type", "");
  if (c.model_type.empty()) {
    OBR_CHECK(!arch.empty(), src, ": neither 'model_type' nor 'architectures' is given");
    for (const char* t : {"llama", "mistral", "qwen2"})
      if (arch == architecture_of(t)) c.model_type = t;
    OBR_CHECK(!c.model_type.empty(), src, ": architecture '", arch,
              "' is not supported (obr handles LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
  }
  OBR_CHECK(c.model_type != "qwen3", src,
            ": model_type 'qwen3' is not supported yet (its per-head q/k RMSNorm "
            "is not implemented; obr handles llama, mistral, qwen2)");
  OBR_CHECK(architecture_of(c.model_type) != nullptr, src, ": model_type '", c.model_type,
            "' is not supported (obr handles llama, mistral, qwen2)");
  if (f.given("quantization_config")) {
    const json& q = f.at("quantization_config");
    std::string method = q.is_object() && q.contains("quant_method") && q["quant_method"].is_string()
                             ? q["quant_method"].get<std::string>()
                             : std::string("?");
    fail(src, ": the checkpoint is already quantized (quantization_config, method '", method,
         "'); obr needs the unquantized (bf16/fp16/fp32) model");
  }
  std::string act = f.string("hidden_act", "silu");
  OBR_CHECK(act == "silu", src, ": hidden_act '", act, "' is not supported (Llama-family MLPs use silu)");

  // ---- sizes ----
  c.hidden_size = f.integer("hidden_size", 0, true);
  c.intermediate_size = f.integer("intermediate_size", 0, true);
  c.num_hidden_layers = f.integer("num_hidden_layers", 0, true);
  c.num_attention_heads = f.integer("num_attention_heads", 0, true);
  c.num_key_value_heads = f.integer("num_key_value_heads", c.num_attention_heads, false);
  c.vocab_size = f.integer("vocab_size", 0, true);
  c.max_position_embeddings = f.integer("max_position_embeddings", 0, false);
  OBR_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, src, ": num_attention_heads (", c.num_attention_heads,
            ") is not a multiple of num_key_value_heads (", c.num_key_value_heads, ")");
  if (f.given("head_dim")) {
    c.head_dim = f.integer("head_dim", 0, true);
  } else {
    OBR_CHECK(c.hidden_size % c.num_attention_heads == 0, src, ": hidden_size (", c.hidden_size,
              ") is not a multiple of num_attention_heads (", c.num_attention_heads, ") and head_dim is not given");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  OBR_CHECK(c.head_dim % 2 == 0, src, ": head_dim ", c.head_dim, " is odd (RoPE rotates pairs of dimensions)");

  // ---- norms, RoPE ----
  c.rms_norm_eps = f.positive("rms_norm_eps", 1e-6, false);
  const bool top_theta = f.given("rope_theta");
  c.rope_theta = f.positive("rope_theta", 10000, false);
  if (f.given("rope_parameters")) {
    const json& rp = f.at("rope_parameters");
    const std::string where = src + ": rope_parameters";
    OBR_CHECK(rp.is_object(), where, " is ", json_brief(rp), ", expected an object");
    OBR_CHECK(rp.empty() || rp.contains("rope_type") || rp.contains("type") || rp.contains("rope_theta"), where,
              ": per-layer-type RoPE parameters (", json_brief(rp), ") are not supported for this architecture");
    Fields rf(rp, where);
    if (rf.given("rope_theta")) {
      double t = rf.positive("rope_theta", 10000, true);
      OBR_CHECK(!top_theta || t == c.rope_theta, src, ": rope_theta ", c.rope_theta,
                " conflicts with rope_parameters.rope_theta ", t);
      c.rope_theta = t;
    }
    c.rope_scaling = read_rope(rp, where);
    OBR_CHECK(
        !f.given("rope_scaling") || read_rope(f.at("rope_scaling"), src + ": rope_scaling").type == c.rope_scaling.type,
        src, ": rope_scaling and rope_parameters disagree on the RoPE type");
  } else if (f.given("rope_scaling")) {
    c.rope_scaling = read_rope(f.at("rope_scaling"), src + ": rope_scaling");
  }

  // ---- biases, embeddings, tokens, dtype ----
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  if (c.model_type == "llama") {
    c.qkv_bias = c.o_bias = f.boolean("attention_bias", false);
    c.mlp_bias = f.boolean("mlp_bias", false);
  } else if (c.model_type == "qwen2") {
    c.qkv_bias = true;
  }
  if (c.model_type == "mistral") {
    c.sliding_window = f.integer("sliding_window", 0, false, 0);
  } else if (c.model_type == "qwen2" && f.boolean("use_sliding_window", false)) {
    c.sliding_window = f.integer("sliding_window", 0, false, 0);
  }
  c.bos_token_id = f.token_id("bos_token_id");
  c.eos_token_id = f.token_id("eos_token_id");
  c.dtype = f.string("dtype", f.string("torch_dtype", ""));
  return c;
}

std::string ModelConfig::to_json() const {
  const char* arch = architecture_of(model_type);
  OBR_CHECK(arch != nullptr, "to_json: model_type '", model_type, "' is not supported");
  json j = json::object();
  j["architectures"] = json::array({arch});
  j["model_type"] = model_type;
  j["hidden_act"] = "silu";
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["vocab_size"] = vocab_size;
  if (max_position_embeddings > 0) j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  // The 4.x spelling: transformers 5.x converts it to rope_parameters on load, while 4.x
  // would silently ignore a rope_parameters object.
  if (rope_scaling.type == "default") {
    j["rope_scaling"] = nullptr;
  } else if (rope_scaling.type == "linear") {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", rope_scaling.factor}};
  } else {
    j["rope_scaling"] = {{"rope_type", rope_scaling.type},
                         {"factor", rope_scaling.factor},
                         {"low_freq_factor", rope_scaling.low_freq_factor},
                         {"high_freq_factor", rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", rope_scaling.original_max_position_embeddings}};
  }
  j["tie_word_embeddings"] = tie_word_embeddings;
  if (model_type == "llama") {
    OBR_CHECK(qkv_bias == o_bias, "to_json: llama's attention_bias covers q/k/v and o_proj together; got qkv_bias ",
              qkv_bias, ", o_bias ", o_bias);
    j["attention_bias"] = qkv_bias;
    j["mlp_bias"] = mlp_bias;
  } else {
    bool expect_qkv = model_type == "qwen2";
    OBR_CHECK(qkv_bias == expect_qkv && !o_bias && !mlp_bias, "to_json: ", model_type,
              " has fixed biases (q/k/v: ", expect_qkv ? "yes" : "no", ", o_proj and MLP: no)");
  }
  if (model_type == "mistral") {
    j["sliding_window"] = sliding_window > 0 ? json(sliding_window) : json(nullptr);
  } else if (model_type == "qwen2") {
    j["use_sliding_window"] = sliding_window > 0;
    j["sliding_window"] = sliding_window > 0 ? json(sliding_window) : json(nullptr);
  }
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_id >= 0) j["eos_token_id"] = eos_token_id;
  if (!dtype.empty()) j["torch_dtype"] = dtype;
  return j.dump(2) + "\n";
}

int64_t ModelConfig::num_parameters() const {
  const int64_t h = hidden_size, q = int64_t(num_attention_heads) * head_dim,
                kv = int64_t(num_key_value_heads) * head_dim;
  int64_t layer = h * q + 2 * h * kv + q * h            // q, k, v, o
                  + 3 * h * int64_t(intermediate_size)  // gate, up, down
                  + 2 * h;                              // input and post-attention RMSNorm
  if (qkv_bias) layer += q + 2 * kv;
  if (o_bias) layer += h;
  if (mlp_bias) layer += 2 * int64_t(intermediate_size) + h;
  const int64_t embed = int64_t(vocab_size) * h;
  return embed + num_hidden_layers * layer + h + (tie_word_embeddings ? 0 : embed);
}

std::string ModelConfig::summary() const {
  std::ostringstream os;
  const char* arch = architecture_of(model_type);
  const int64_t np = num_parameters();
  os << "model: " << model_type << " (" << (arch ? arch : "?") << "), " << np << " parameters";
  if (np >= 1000000)
    os << " (" << fmt_g(double(np) / (np >= 1000000000 ? 1e9 : 1e6)) << (np >= 1000000000 ? " B" : " M") << ")";
  os << " implied by the config\n";
  os << "  layers " << num_hidden_layers << ", hidden " << hidden_size << ", intermediate " << intermediate_size
     << ", vocab " << vocab_size << "\n";
  os << "  attention: " << num_attention_heads << " heads, " << num_key_value_heads << " kv heads";
  if (num_key_value_heads != num_attention_heads)
    os << " (GQA, " << num_attention_heads / num_key_value_heads << " per group)";
  os << ", head_dim " << head_dim << "\n";
  os << "  rope: theta " << fmt_g(rope_theta);
  if (rope_scaling.type == "linear") os << ", linear scaling x" << fmt_g(rope_scaling.factor);
  if (rope_scaling.type == "llama3")
    os << ", llama3 scaling (factor " << fmt_g(rope_scaling.factor) << ", low_freq_factor "
       << fmt_g(rope_scaling.low_freq_factor) << ", high_freq_factor " << fmt_g(rope_scaling.high_freq_factor)
       << ", original context " << rope_scaling.original_max_position_embeddings << ")";
  os << "; context " << (max_position_embeddings > 0 ? std::to_string(max_position_embeddings) : "not given") << "\n";
  os << "  rms_norm_eps " << fmt_g(rms_norm_eps) << ", tied embeddings " << (tie_word_embeddings ? "yes" : "no")
     << ", biases: q/k/v " << (qkv_bias ? "yes" : "no") << ", o_proj " << (o_bias ? "yes" : "no") << ", mlp "
     << (mlp_bias ? "yes" : "no") << "\n";
  os << "  tokens: bos " << bos_token_id << ", eos " << eos_token_id << "; dtype "
     << (dtype.empty() ? "not given" : dtype) << "\n";
  if (sliding_window > 0)
    os << "  note: sliding_window " << sliding_window
       << " is ignored (obr uses full causal attention: identical for sequences up to " << sliding_window
       << " tokens)\n";
  return os.str();
}

}  // namespace obr
