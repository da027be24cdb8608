#include "model/synth.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <map>

#include "core/half.h"
#include "core/log.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "io/atomic_file.h"
#include "io/json_util.h"
#include "model/llama.h"

namespace obr {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// ---------------------------------------------------------------- published shapes
//
// config.json of each Hugging Face repository (meta-llama/Llama-3.2-1B, meta-llama/Llama-2-7b-hf,
// Qwen/Qwen2.5-7B), keys sorted as transformers writes them.

constexpr const char* kLlama32_1B = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 8192,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

constexpr const char* kLlama2_7B = R"({
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
  "num_key_value_heads": 32,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.32.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})";

constexpr const char* kQwen25_7B = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 3584,
  "initializer_range": 0.02,
  "intermediate_size": 18944,
  "max_position_embeddings": 131072,
  "max_window_layers": 28,
  "model_type": "qwen2",
  "num_attention_heads": 28,
  "num_hidden_layers": 28,
  "num_key_value_heads": 4,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 131072,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.1",
  "use_cache": true,
  "use_mrope": false,
  "use_sliding_window": false,
  "vocab_size": 152064
})";

struct NamedShape {
  const char* name;
  const char* config;
};
constexpr NamedShape kShapes[] = {
    {"llama-3.2-1b", kLlama32_1B},
    {"llama-2-7b", kLlama2_7B},
    {"qwen2.5-7b", kQwen25_7B},
};

// ---------------------------------------------------------------- random streams

uint64_t mix64(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

// Stream k of tensor `name_hash`: rows use k = row; the per-tensor draws use the ids below.
Rng stream(uint64_t seed, uint64_t name_hash, uint64_t k) {
  return Rng(mix64(mix64(mix64(seed + 0x9e3779b97f4a7c15ull) ^ name_hash) ^ (k + 0x632be59bd9b4e019ull)));
}
constexpr uint64_t kRowScaleStream = ~uint64_t(0), kColScaleStream = ~uint64_t(1), kVectorStream = ~uint64_t(2);

double normal(Rng& r) { return synth_normal(r.next_u64()); }

// Log-normal factors with E[x^2] = 1: exp(sigma * z - sigma^2).
std::vector<float> lognormal_scales(int64_t n, double sigma, Rng& r) {
  std::vector<float> s(static_cast<size_t>(n));
  for (auto& x : s) x = float(std::exp(sigma * normal(r) - sigma * sigma));
  return s;
}

// ---------------------------------------------------------------- tensors

enum class Kind { Embed, Linear, LmHead, Bias, LayerNorm, FinalNorm };

struct Spec {
  std::string name;
  Shape shape;  // [out, in] or [n]
  Kind kind = Kind::Linear;
  uint64_t hash = 0;
  uint64_t nbytes = 0;
  std::string file;      // shard file name
  uint64_t offset = 0;   // in the shard's data section
};

// transformers' state_dict order (which decides the shard of each tensor).
std::vector<Spec> plan_tensors(const ModelConfig& c) {
  std::vector<Spec> out;
  auto add = [&](const std::string& n, Shape s, Kind k) {
    Spec sp;
    sp.name = n;
    sp.shape = std::move(s);
    sp.kind = k;
    sp.hash = fnv1a(n);
    out.push_back(std::move(sp));
  };
  const int64_t H = c.hidden_size, V = c.vocab_size;
  add("model.embed_tokens.weight", {V, H}, Kind::Embed);
  const auto shapes = proj_shapes(c);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (int j = 0; j < kNumProj; ++j) {
      const Proj pj = Proj(j);
      const std::string base = p + proj_module(pj) + "." + proj_name(pj);
      add(base + ".weight", shapes[size_t(j)], Kind::Linear);
      const bool bias = (pj <= Proj::V && c.qkv_bias) || (pj == Proj::O && c.o_bias) || (pj >= Proj::Gate && c.mlp_bias);
      if (bias) add(base + ".bias", {shapes[size_t(j)][0]}, Kind::Bias);
    }
    add(p + "input_layernorm.weight", {H}, Kind::LayerNorm);
    add(p + "post_attention_layernorm.weight", {H}, Kind::LayerNorm);
  }
  add("model.norm.weight", {H}, Kind::FinalNorm);
  if (!c.tie_word_embeddings) add("lm_head.weight", {V, H}, Kind::LmHead);
  return out;
}

void store_row(const float* x, int64_t n, DType dt, void* out) {
  if (dt == DType::F32) {
    std::memcpy(out, x, size_t(n) * 4);
  } else if (dt == DType::BF16) {
    uint16_t* o = static_cast<uint16_t*>(out);
    for (int64_t i = 0; i < n; ++i) o[i] = f32_to_bf16(x[i]);
  } else {
    uint16_t* o = static_cast<uint16_t*>(out);
    for (int64_t i = 0; i < n; ++i) o[i] = f32_to_f16(x[i]);
  }
}

// The values of one tensor, generated row block by row block.
class Generator {
 public:
  Generator(const Spec& s, uint64_t seed, const std::vector<int>& outliers, const std::vector<float>& outlier_gain)
      : s_(s), seed_(seed) {
    if (s.shape.size() == 1) {  // norms and biases: small, made whole here
      const int64_t n = s.shape[0];
      vec_.resize(size_t(n));
      Rng r = stream(seed, s.hash, kVectorStream);
      if (s.kind == Kind::Bias) {
        for (auto& x : vec_) x = float(SynthStats::kBiasStd * normal(r));
      } else {
        const double level = std::exp(SynthStats::kLevelSigma * normal(r));
        for (auto& x : vec_) x = float(level * std::exp(SynthStats::kNormSigma * normal(r)));
        if (s.kind == Kind::LayerNorm)
          for (size_t k = 0; k < outliers.size(); ++k)
            vec_[size_t(outliers[k])] *= float(outlier_gain[k] * std::exp(0.1 * normal(r)));
      }
      return;
    }
    const int64_t rows = s.shape[0], cols = s.shape[1];
    Rng rr = stream(seed, s.hash, kRowScaleStream);
    row_scale_ = lognormal_scales(rows, SynthStats::kRowSigma, rr);
    if (s.kind == Kind::Embed) {
      col_scale_.assign(size_t(cols), float(SynthStats::kEmbedStd));
    } else {
      Rng rc = stream(seed, s.hash, kColScaleStream);
      col_scale_ = lognormal_scales(cols, SynthStats::kColSigma, rc);
      const float base = float(1.0 / std::sqrt(double(cols)));
      for (auto& x : col_scale_) x *= base;
    }
  }

  int64_t rows() const { return s_.shape.size() == 1 ? 1 : s_.shape[0]; }
  int64_t cols() const { return s_.shape.back(); }

  // Rows [r0, r0 + n) in dtype `dt` into out (n * cols elements).
  void fill(int64_t r0, int64_t n, DType dt, void* out) const {
    const size_t esize = dtype_size(dt);
    const int64_t C = cols();
    if (!vec_.empty()) {
      store_row(vec_.data(), C, dt, out);
      return;
    }
    parallel_for(n, [&](int64_t k) {
      const int64_t i = r0 + k;
      std::vector<float> row(static_cast<size_t>(C));
      Rng r = stream(seed_, s_.hash, uint64_t(i));
      const float ri = row_scale_[size_t(i)];
      for (int64_t j = 0; j < C; ++j) row[size_t(j)] = float(synth_normal(r.next_u64())) * (ri * col_scale_[size_t(j)]);
      store_row(row.data(), C, dt, static_cast<char*>(out) + size_t(k) * size_t(C) * esize);
    });
  }

 private:
  const Spec& s_;
  uint64_t seed_;
  std::vector<float> vec_, row_scale_, col_scale_;
};

const char* hf_dtype(DType dt) {
  switch (dt) {
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    case DType::F32: return "float32";
    default: fail("obr synth writes bf16, f16 or f32, not ", dtype_name(dt));
  }
}

std::string human_gb(uint64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GB", double(b) / 1e9);
  return buf;
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}

// Removes the temporary directory unless released.
struct DirGuard {
  std::string path;
  ~DirGuard() {
    if (path.empty()) return;
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

constexpr uint64_t kBlockBytes = 32ull << 20;  // rows generated per write call: ~32 MiB

// One .safetensors file holding `specs` (in file order, offsets set), streamed block by block:
// block k+1 is generated while block k is written.
void write_shard(const std::string& path, const std::vector<Spec*>& specs, uint64_t seed,
                 DType dt, const std::vector<int>& outliers, const std::vector<float>& gains,
                 const std::function<void(uint64_t)>& on_bytes) {
  json h = json::object();
  h["__metadata__"] = {{"format", "pt"}};
  for (const Spec* s : specs)
    h[s->name] = {{"dtype", dtype_name(dt)}, {"shape", s->shape}, {"data_offsets", {s->offset, s->offset + s->nbytes}}};
  std::string text = h.dump();
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');  // every tensor naturally aligned
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((uint64_t(text.size()) >> (8 * i)) & 0xff);

  AtomicFile f(path);
  f.write(len, 8);
  f.write(text.data(), text.size());
  std::vector<char> buf[2];
  std::future<void> pending;  // the write of the previous block; declared after f, so joined first
  int cur = 0;
  const size_t esize = dtype_size(dt);
  for (const Spec* s : specs) {
    Generator g(*s, seed, outliers, gains);
    const uint64_t row_bytes = uint64_t(g.cols()) * esize;
    const int64_t block_rows = std::max<int64_t>(1, int64_t(kBlockBytes / std::max<uint64_t>(row_bytes, 1)));
    for (int64_t r0 = 0; r0 < g.rows(); r0 += block_rows) {
      const int64_t n = std::min(block_rows, g.rows() - r0);
      const size_t bytes = size_t(n) * size_t(row_bytes);
      buf[cur].resize(std::max(buf[cur].size(), bytes));
      g.fill(r0, n, dt, buf[cur].data());
      if (pending.valid()) pending.get();  // rethrows a write error
      const char* p = buf[cur].data();
      pending = std::async(std::launch::async, [&f, p, bytes] { f.write(p, bytes); });
      on_bytes(bytes);
      cur ^= 1;
    }
  }
  if (pending.valid()) pending.get();
  f.commit();
}

}  // namespace

// ---------------------------------------------------------------- public

std::vector<std::string> synth_shape_names() {
  std::vector<std::string> v;
  for (const auto& s : kShapes) v.push_back(s.name);
  return v;
}

std::string synth_shape_config(const std::string& name) {
  std::string valid;
  for (const auto& s : kShapes) {
    if (name == s.name) return s.config;
    valid += std::string(valid.empty() ? "" : ", ") + s.name;
  }
  fail("unknown shape '", name, "' (valid: ", valid, ", or a config.json file)");
}

double synth_normal(uint64_t bits) {
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771810e+01,  -1.328068155305330e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  const double p = (double(bits >> 11) + 0.5) * 0x1.0p-53;  // in (0, 1), never 0 or 1
  constexpr double kLow = 0.02425;
  if (p < kLow || p > 1 - kLow) {  // tails (4.85% of draws)
    const double q = std::sqrt(-2 * std::log(p < kLow ? p : 1 - p));
    const double x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
                     ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    return p < kLow ? x : -x;
  }
  const double q = p - 0.5, r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
         (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

std::vector<int> synth_outlier_channels(const ModelConfig& cfg, uint64_t seed) {
  const int H = cfg.hidden_size;
  const int n = std::min(H, std::max(1, H / SynthStats::kOutlierEvery));
  Rng r = stream(seed, fnv1a("obr.synth.outlier_channels"), 0);
  std::vector<int> idx(static_cast<size_t>(H));
  for (int i = 0; i < H; ++i) idx[size_t(i)] = i;
  for (int i = 0; i < n; ++i) std::swap(idx[size_t(i)], idx[size_t(i) + size_t(r.below(uint64_t(H - i)))]);
  idx.resize(size_t(n));
  std::sort(idx.begin(), idx.end());
  return idx;
}

SynthResult write_synthetic_model(const std::string& config_json, const std::string& source,
                                  const std::string& out_dir_in, const SynthOptions& opt) {
  Timer timer;
  OBR_CHECK(opt.dtype == DType::BF16 || opt.dtype == DType::F16 || opt.dtype == DType::F32,
            "synthetic weights are bf16, f16 or f32, not ", dtype_name(opt.dtype));
  OBR_CHECK(opt.max_shard_bytes > 0, "the maximum shard size must be positive");
  OBR_CHECK(!out_dir_in.empty(), "no output directory given");
  std::string out_dir = out_dir_in;
  while (out_dir.size() > 1 && out_dir.back() == '/') out_dir.pop_back();

  // ---- config ----
  ModelConfig published = ModelConfig::from_json(config_json, source);  // validates the family
  json j = parse_json(config_json, source);
  OBR_CHECK(opt.layers >= 0 && opt.layers <= published.num_hidden_layers, "--layers ", opt.layers,
            " is out of range: ", source, " has ", published.num_hidden_layers, " layers (0 writes all)");
  const int layers = opt.layers > 0 ? opt.layers : published.num_hidden_layers;
  j["num_hidden_layers"] = layers;
  j[j.contains("dtype") ? "dtype" : "torch_dtype"] = hf_dtype(opt.dtype);
  const std::string statement =
      "Random weights with the published shapes, written by obr synth for speed and memory measurements only. "
      "Not a language model: its perplexity and outputs mean nothing. The tokenizer files are obr's 4096-token "
      "reference tokenizer (data/models/tiny), which covers only ids < 4096 of vocab_size.";
  j["obr_synthetic"] = true;
  j["obr_synthetic_info"] = {{"seed", opt.seed},
                             {"shape", opt.shape_name.empty() ? source : opt.shape_name},
                             {"layers_written", layers},
                             {"published_num_hidden_layers", published.num_hidden_layers},
                             {"generator", "obr synth (src/model/synth.h, docs/synth.md)"},
                             {"statement", statement}};
  const std::string config_text = j.dump(2) + "\n";
  SynthResult res;
  res.cfg = ModelConfig::from_json(config_text, out_dir + "/config.json");
  const ModelConfig& c = res.cfg;
  if (c.vocab_size < 4096 && !opt.tokenizer_dir.empty())
    log_warn("vocab_size ", c.vocab_size, " is smaller than the tokenizer's 4096 tokens: text encodes to ids the model "
             "does not have");

  // ---- tensors and shards (transformers' rule: fill a shard in state_dict order until the next
  //      tensor would pass the maximum; a tensor larger than the maximum gets a shard of its own) ----
  std::vector<Spec> specs = plan_tensors(c);
  const size_t esize = dtype_size(opt.dtype);
  std::vector<std::vector<size_t>> shards(1);
  uint64_t in_shard = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    uint64_t n = 1;
    for (int64_t d : specs[i].shape) n *= uint64_t(d);
    specs[i].nbytes = n * esize;
    res.parameters += int64_t(n);
    res.tensor_bytes += specs[i].nbytes;
    if (in_shard > 0 && in_shard + specs[i].nbytes > opt.max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(i);
    in_shard += specs[i].nbytes;
  }
  OBR_CHECK(res.parameters == c.num_parameters(), "internal: ", res.parameters, " parameters planned, the config implies ",
            c.num_parameters());
  const size_t nshards = shards.size();
  std::vector<std::vector<Spec*>> file_order(nshards);
  for (size_t k = 0; k < nshards; ++k) {
    char name[64];
    if (nshards == 1)
      std::snprintf(name, sizeof name, "model.safetensors");
    else
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", k + 1, nshards);
    for (size_t i : shards[k]) {
      specs[i].file = name;
      file_order[k].push_back(&specs[i]);
    }
    // In the file: sorted by name (all one dtype), as the safetensors library writes them.
    std::sort(file_order[k].begin(), file_order[k].end(), [](const Spec* a, const Spec* b) { return a->name < b->name; });
    uint64_t off = 0;
    for (Spec* s : file_order[k]) {
      s->offset = off;
      off += s->nbytes;
    }
  }

  // ---- output directory ----
  std::error_code ec;
  const bool exists = fs::exists(out_dir, ec);
  if (exists) {
    OBR_CHECK(opt.overwrite, out_dir, " already exists (pass --overwrite to replace it)");
    OBR_CHECK(fs::is_directory(out_dir, ec), out_dir, " exists and is not a directory: refusing to replace it");
    OBR_CHECK(fs::is_empty(out_dir, ec) || fs::exists(fs::path(out_dir) / "config.json", ec), out_dir,
              " is not a model directory (no config.json): refusing to replace it");
  }
  const fs::path parent = fs::absolute(fs::path(out_dir)).parent_path();
  fs::create_directories(parent, ec);
  OBR_CHECK(!ec, parent.string(), ": cannot create directory: ", ec.message());
  const fs::space_info space = fs::space(parent, ec);
  const uint64_t needed = res.tensor_bytes + (64ull << 20);
  OBR_CHECK(ec || space.available >= needed, "not enough disk space for ", out_dir, ": ", human_gb(res.tensor_bytes),
            " of weights, ", human_gb(space.available), " free on that file system");

  const std::string tmp = out_dir + ".tmp." + std::to_string(long(::getpid()));
  fs::remove_all(tmp, ec);
  fs::create_directory(tmp, ec);
  OBR_CHECK(!ec, tmp, ": cannot create directory: ", ec.message());
  DirGuard guard{tmp};

  log_info("synth: ", c.model_type, ", ", layers, " of ", published.num_hidden_layers, " layers, ", res.parameters,
           " parameters, ", dtype_name(opt.dtype), ", ", human_gb(res.tensor_bytes), " in ", nshards, " file",
           nshards == 1 ? "" : "s", ", seed ", opt.seed, ", ", num_threads(), " threads -> ", out_dir);

  const std::vector<int> outliers = synth_outlier_channels(c, opt.seed);
  std::vector<float> gains;
  {
    Rng r = stream(opt.seed, fnv1a("obr.synth.outlier_gains"), 0);
    const double lo = std::log(SynthStats::kOutlierMin), hi = std::log(SynthStats::kOutlierMax);
    for (size_t k = 0; k < outliers.size(); ++k) gains.push_back(float(std::exp(lo + (hi - lo) * r.uniform())));
  }

  ProgressLine progress("synth");
  uint64_t done = 0;
  auto on_bytes = [&](uint64_t b) {
    done += b;
    if (res.tensor_bytes >= (256u << 20)) progress.update(int64_t(done >> 20), int64_t(res.tensor_bytes >> 20), "MiB");
  };
  for (size_t k = 0; k < nshards; ++k)
    write_shard(tmp + "/" + file_order[k][0]->file, file_order[k], opt.seed, opt.dtype, outliers, gains, on_bytes);
  if (nshards > 1) {
    json wm = json::object();
    for (const auto& s : specs) wm[s.name] = s.file;
    json idx = {{"metadata", {{"total_size", res.tensor_bytes}}}, {"weight_map", wm}};
    const std::string t = idx.dump(2) + "\n";
    write_file_atomic(tmp + "/model.safetensors.index.json", t.data(), t.size());
  }
  write_file_atomic(tmp + "/config.json", config_text.data(), config_text.size());
  if (!opt.tokenizer_dir.empty())
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
      const std::string t = read_file((fs::path(opt.tokenizer_dir) / f).string(), 64u << 20);
      write_file_atomic(tmp + "/" + f, t.data(), t.size());
    }
  const std::string md = "# Synthetic model: random weights\n\n" + statement +
                         "\n\nShape: " + (opt.shape_name.empty() ? source : opt.shape_name) + ", " +
                         std::to_string(layers) + " of " + std::to_string(published.num_hidden_layers) +
                         " layers, seed " + std::to_string(opt.seed) + ". How the values are drawn: docs/synth.md in obr.\n";
  write_file_atomic(tmp + "/SYNTHETIC.md", md.data(), md.size());

  // ---- publish: rename the finished directory into place ----
  std::string old;
  if (fs::exists(out_dir, ec)) {
    OBR_CHECK(opt.overwrite, out_dir, " appeared while writing (pass --overwrite to replace it)");
    old = out_dir + ".old." + std::to_string(long(::getpid()));
    fs::rename(out_dir, old, ec);
    OBR_CHECK(!ec, out_dir, ": cannot move the old directory aside: ", ec.message());
  }
  fs::rename(tmp, out_dir, ec);
  OBR_CHECK(!ec, tmp, ": cannot rename to ", out_dir, ": ", ec.message());
  guard.path.clear();
  fsync_dir(parent.string());
  if (!old.empty()) fs::remove_all(old, ec);

  for (const auto& e : fs::directory_iterator(out_dir)) res.files.push_back(e.path().filename().string());
  std::sort(res.files.begin(), res.files.end());
  res.seconds = timer.seconds();
  return res;
}

}  // namespace obr
