// obr synth: published shapes, exact tensor shapes, determinism, outlier channels, sharding,
// and the refusals (src/model/synth.h).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/parallel.h"
#include "io/atomic_file.h"
#include "io/json_util.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "model/synth.h"
#include "test_util.h"

using namespace obr;
using obr::testing::check_error;
using obr::testing::TempDir;
namespace fs = std::filesystem;

namespace {

// A small llama with GQA (8 heads, 2 kv heads). Hidden 1024 has two outlier channels (one per 512).
std::string small_llama_json(int layers = 2, int vocab = 512, int hidden = 256) {
  return R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": )" +
         std::to_string(hidden) + R"(, "intermediate_size": 256, "num_hidden_layers": )" +
         std::to_string(layers) + R"(, "num_attention_heads": 8, "num_key_value_heads": 2,
    "vocab_size": )" + std::to_string(vocab) + R"(, "max_position_embeddings": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16"})";
}

std::string small_qwen_json() {
  return R"({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64,
    "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "vocab_size": 300, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": true})";
}

SynthOptions options(uint64_t seed) {
  SynthOptions o;
  o.seed = seed;
  return o;
}

std::string bytes_of(const TensorStore& st, const std::string& name) {
  Tensor t = st.get(name);
  return std::string(static_cast<const char*>(t.raw()), t.nbytes());
}

}  // namespace

TEST_CASE("synth: published shapes have the published sizes") {
  struct Want {
    const char* name;
    int64_t params;
    int layers, hidden, inter, heads, kv, vocab;
    bool tied, qkv_bias;
    double theta, eps;
  };
  const Want wants[] = {
      {"llama-3.2-1b", 1235814400, 16, 2048, 8192, 32, 8, 128256, true, false, 500000, 1e-5},
      {"llama-2-7b", 6738415616, 32, 4096, 11008, 32, 32, 32000, false, false, 10000, 1e-5},
      {"qwen2.5-7b", 7615616512, 28, 3584, 18944, 28, 4, 152064, false, true, 1e6, 1e-6},
  };
  CHECK(synth_shape_names().size() == 3);
  for (const auto& w : wants) {
    INFO(w.name);
    ModelConfig c = ModelConfig::from_json(synth_shape_config(w.name), w.name);
    CHECK(c.num_parameters() == w.params);
    CHECK(c.num_hidden_layers == w.layers);
    CHECK(c.hidden_size == w.hidden);
    CHECK(c.intermediate_size == w.inter);
    CHECK(c.num_attention_heads == w.heads);
    CHECK(c.num_key_value_heads == w.kv);
    CHECK(c.vocab_size == w.vocab);
    CHECK(c.tie_word_embeddings == w.tied);
    CHECK(c.qkv_bias == w.qkv_bias);
    CHECK(c.rope_theta == w.theta);
    CHECK(c.rms_norm_eps == w.eps);
  }
  ModelConfig l3 = ModelConfig::from_json(synth_shape_config("llama-3.2-1b"), "llama-3.2-1b");
  CHECK(l3.rope_scaling.type == "llama3");
  CHECK(l3.rope_scaling.factor == 32);
  CHECK(l3.rope_scaling.original_max_position_embeddings == 8192);
  check_error([] { synth_shape_config("llama-9b"); }, {"llama-9b", "llama-3.2-1b", "llama-2-7b", "qwen2.5-7b"});
}

TEST_CASE("synth: synth_normal is a standard normal") {
  // Known quantiles: the uniform (u + 0.5) / 2^53 at u = p * 2^53.
  auto at = [](double p) { return synth_normal(uint64_t(p * 0x1.0p53) << 11); };
  CHECK(at(0.5) == doctest::Approx(0.0).epsilon(1e-9));
  CHECK(at(0.975) == doctest::Approx(1.959963985).epsilon(1e-8));
  CHECK(at(0.01) == doctest::Approx(-2.326347874).epsilon(1e-8));  // tail branch
  CHECK(at(1 - 1e-6) == doctest::Approx(4.753424309).epsilon(1e-7));
  uint64_t x = 12345;
  double s1 = 0, s2 = 0, s4 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    x += 0x9e3779b97f4a7c15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    const double v = synth_normal(z ^ (z >> 31));
    s1 += v;
    s2 += v * v;
    s4 += v * v * v * v;
  }
  CHECK(std::fabs(s1 / n) < 0.01);
  CHECK(s2 / n == doctest::Approx(1.0).epsilon(0.01));
  CHECK(s4 / n == doctest::Approx(3.0).epsilon(0.05));  // kurtosis of a normal
}

TEST_CASE("synth: a small model loads with the exact shapes and runs") {
  TempDir tmp("obr_synth");
  const std::string dir = tmp.file("m");
  SynthOptions o = options(3);
  o.tokenizer_dir = std::string(OBR_SOURCE_DIR) + "/data/models/tiny";
  SynthResult r = write_synthetic_model(small_llama_json(2, 4096, 128), "small.json", dir, o);
  CHECK(r.files == std::vector<std::string>{"SYNTHETIC.md", "config.json", "model.safetensors", "tokenizer.json",
                                            "tokenizer_config.json"});
  CHECK(tmp.entries() == 1);  // no temporary directory left next to it

  const ModelConfig c = ModelConfig::from_file(dir);
  CHECK(c.num_hidden_layers == 2);
  CHECK(c.dtype == "bfloat16");
  const auto j = parse_json(read_file(dir + "/config.json"), "config.json");
  CHECK(j.at("obr_synthetic") == true);
  CHECK(j.at("obr_synthetic_info").at("seed") == 3);
  CHECK(j.at("obr_synthetic_info").at("statement").get<std::string>().find("Not a language model") != std::string::npos);

  // Every tensor: BF16, the shape the config implies; total = num_parameters().
  TensorStore st = TensorStore::open(dir);
  const auto shapes = proj_shapes(c);
  int64_t params = 0;
  for (const auto& n : st.names()) {
    CHECK(st.info(n).dtype == DType::BF16);
    params += int64_t(st.info(n).nbytes / 2);
  }
  CHECK(params == c.num_parameters());
  CHECK(r.parameters == c.num_parameters());
  CHECK(st.size() == size_t(3 + 9 * c.num_hidden_layers));  // embed, norm, lm_head; 7 proj + 2 norms
  CHECK(st.info("model.layers.1.self_attn.k_proj.weight").shape == shapes[int(Proj::K)]);
  CHECK(st.info("model.layers.1.mlp.down_proj.weight").shape == Shape{128, 256});
  CHECK(st.info("lm_head.weight").shape == Shape{4096, 128});

  LlamaModel m = load_llama(dir);
  REQUIRE(m.layers.size() == 2);
  CHECK(m.embed.shape() == Shape{4096, 128});
  for (int p = 0; p < kNumProj; ++p) {
    auto& dl = dynamic_cast<const DenseLinear&>(m.layers[1][Proj(p)]);
    CHECK(dl.weight().shape() == shapes[size_t(p)]);
  }

  // Linear weights: std ~ 1/sqrt(fan_in) (row and column scales have E[x^2] = 1).
  const Tensor& W = dynamic_cast<const DenseLinear&>(m.layers[0][Proj::Gate]).weight();
  double ss = 0;
  for (int64_t i = 0; i < W.numel(); ++i) ss += double(W.data<float>()[i]) * W.data<float>()[i];
  CHECK(std::sqrt(ss / double(W.numel())) * std::sqrt(128.0) == doctest::Approx(1.0).epsilon(0.1));

  // One token forward: finite logits.
  KVCache cache = KVCache::make(m.cfg, 4);
  const int32_t tok = 17;
  Tensor logits = forward(m, &tok, 1, cache);
  REQUIRE(logits.numel() == 4096);
  for (int64_t v = 0; v < 4096; ++v) REQUIRE(std::isfinite(logits.data<float>()[v]));
}

TEST_CASE("synth: outlier channels in the norm weights and in the activations") {
  TempDir tmp("obr_synth");
  const std::string dir = tmp.file("m");
  write_synthetic_model(small_llama_json(1, 512, 1024), "small.json", dir, options(5));
  LlamaModel m = load_llama(dir);
  const std::vector<int> outliers = synth_outlier_channels(m.cfg, 5);
  REQUIRE(outliers.size() == 2);  // hidden 1024 / 512

  // Norm weights: the largest entries are the outlier channels, far above the RMS.
  for (const Tensor* w : {&m.layers[0].attn_norm, &m.layers[0].mlp_norm}) {
    const float* p = w->data<float>();
    const int64_t H = w->numel();
    double ss = 0;
    for (int64_t i = 0; i < H; ++i) ss += double(p[i]) * p[i];
    std::vector<int> order(static_cast<size_t>(H));
    for (int i = 0; i < H; ++i) order[size_t(i)] = i;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
    std::vector<int> top(order.begin(), order.begin() + 2);
    std::sort(top.begin(), top.end());
    CHECK(top == outliers);
    CHECK(p[order[0]] / std::sqrt(ss / double(H)) > 4.0);
    CHECK(p[order[2]] < 3.0);  // the rest stay around 1
  }

  // Activations entering q_proj over 32 tokens: per-channel RMS, max over median.
  const int64_t T = 32, H = m.cfg.hidden_size;
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) ids[size_t(t)] = int32_t((t * 97 + 5) % 512);
  std::vector<float> h(size_t(T * H));
  embed_tokens(m, ids.data(), T, h.data());
  std::vector<double> ch(static_cast<size_t>(H), 0.0);
  ProjHook hook = [&](int, Proj p, const float* x, int64_t rows, int64_t in) {
    if (p != Proj::Q) return;
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t i = 0; i < in; ++i) ch[size_t(i)] += double(x[t * in + i]) * x[t * in + i];
  };
  KVCache cache = KVCache::make(m.cfg, T);
  layer_forward(m, 0, h.data(), T, cache.layers[0], 0, &hook, int(Proj::Q));
  std::vector<double> sorted = ch;
  std::sort(sorted.begin(), sorted.end());
  const double ratio = std::sqrt(sorted.back() / sorted[size_t(H / 2)]);
  INFO("max / median channel RMS ", ratio);
  CHECK(ratio > 5.0);
  const int hottest = int(std::max_element(ch.begin(), ch.end()) - ch.begin());
  CHECK(std::count(outliers.begin(), outliers.end(), hottest) == 1);
}

TEST_CASE("synth: same seed same bytes, whatever the threads, shards and --layers") {
  TempDir tmp("obr_synth");
  const std::string a = tmp.file("a"), b = tmp.file("b"), c = tmp.file("c"), sh = tmp.file("sharded"),
                    one = tmp.file("one");
  write_synthetic_model(small_llama_json(), "small.json", a, options(7));
  const int threads = num_threads();
  set_num_threads(1);
  write_synthetic_model(small_llama_json(), "small.json", b, options(7));
  set_num_threads(threads);
  write_synthetic_model(small_llama_json(), "small.json", c, options(8));
  const std::string fa = read_file(a + "/model.safetensors"), fb = read_file(b + "/model.safetensors"),
                    fc = read_file(c + "/model.safetensors");
  CHECK(fa == fb);
  CHECK(fa.size() == fc.size());
  CHECK(fa != fc);
  CHECK(read_file(a + "/config.json") == read_file(b + "/config.json"));

  // Sharded at 400 kB (2 MB of tensors of 131 kB each): the same tensors.
  SynthOptions o = options(7);
  o.max_shard_bytes = 400'000;
  SynthResult rs = write_synthetic_model(small_llama_json(), "small.json", sh, o);
  TensorStore sa = TensorStore::open(a), ss = TensorStore::open(sh);
  const size_t nshards = ss.files().size();
  CHECK(nshards >= 3);
  char first[64];
  std::snprintf(first, sizeof first, "model-00001-of-%05zu.safetensors", nshards);
  CHECK(std::find(rs.files.begin(), rs.files.end(), first) != rs.files.end());
  CHECK(std::find(rs.files.begin(), rs.files.end(), "model.safetensors.index.json") != rs.files.end());
  CHECK(std::find(rs.files.begin(), rs.files.end(), "model.safetensors") == rs.files.end());
  for (const auto& f : ss.files()) CHECK(fs::file_size(f) <= 400'000 + 4096);  // + header
  CHECK(ss.names() == sa.names());
  for (const auto& n : sa.names()) CHECK_MESSAGE(bytes_of(sa, n) == bytes_of(ss, n), n);
  CHECK(ss.file_of("model.embed_tokens.weight") != ss.file_of("lm_head.weight"));
  const auto idx = parse_json(read_file(sh + "/model.safetensors.index.json"), "index");
  CHECK(idx.at("metadata").at("total_size") == rs.tensor_bytes);
  CHECK(load_llama(sh).layers.size() == 2);

  // --layers 1: config says 1 layer; its tensors are layer 0 of the full model.
  SynthOptions o1 = options(7);
  o1.layers = 1;
  write_synthetic_model(small_llama_json(), "small.json", one, o1);
  TensorStore s1 = TensorStore::open(one);
  CHECK(ModelConfig::from_file(one).num_hidden_layers == 1);
  CHECK(!s1.has("model.layers.1.mlp.up_proj.weight"));
  for (const auto& n : s1.names()) CHECK_MESSAGE(bytes_of(s1, n) == bytes_of(sa, n), n);
  const auto j = parse_json(read_file(one + "/config.json"), "config.json");
  CHECK(j.at("obr_synthetic_info").at("published_num_hidden_layers") == 2);
}

TEST_CASE("synth: qwen2 biases, tied embeddings, f16 and f32") {
  TempDir tmp("obr_synth");
  for (DType dt : {DType::F16, DType::F32}) {
    const std::string dir = tmp.file(dtype_name(dt));
    SynthOptions o = options(1);
    o.dtype = dt;
    write_synthetic_model(small_qwen_json(), "qwen.json", dir, o);
    TensorStore st = TensorStore::open(dir);
    CHECK(st.info("model.layers.0.self_attn.q_proj.bias").shape == Shape{64});
    CHECK(st.info("model.layers.1.self_attn.v_proj.bias").shape == Shape{32});
    CHECK(!st.has("model.layers.0.self_attn.o_proj.bias"));
    CHECK(!st.has("lm_head.weight"));  // tied
    CHECK(st.info("model.norm.weight").dtype == dt);
    const ModelConfig c = ModelConfig::from_file(dir);
    CHECK(c.dtype == (dt == DType::F16 ? "float16" : "float32"));
    int64_t params = 0;
    for (const auto& n : st.names()) params += int64_t(st.info(n).nbytes / dtype_size(dt));
    CHECK(params == c.num_parameters());
    LlamaModel m = load_llama(dir);
    KVCache cache = KVCache::make(m.cfg, 1);
    const int32_t tok = 3;
    Tensor logits = forward(m, &tok, 1, cache);
    for (int64_t v = 0; v < logits.numel(); ++v) REQUIRE(std::isfinite(logits.data<float>()[v]));
  }
}

TEST_CASE("synth: refusals") {
  TempDir tmp("obr_synth");
  const std::string dir = tmp.file("m");
  write_synthetic_model(small_qwen_json(), "qwen.json", dir, options(1));
  const std::string before = read_file(dir + "/model.safetensors");

  // An existing directory needs --overwrite; with it, the model is replaced.
  check_error([&] { write_synthetic_model(small_qwen_json(), "qwen.json", dir, options(2)); },
              {dir, "already exists", "--overwrite"});
  CHECK(read_file(dir + "/model.safetensors") == before);
  SynthOptions ow = options(2);
  ow.overwrite = true;
  write_synthetic_model(small_qwen_json(), "qwen.json", dir, ow);
  CHECK(read_file(dir + "/model.safetensors") != before);
  CHECK(tmp.entries() == 1);

  // --overwrite never removes a directory that is not a model.
  fs::create_directories(tmp.file("notes"));
  obr::testing::write_bytes(tmp.file("notes/a.txt"), "keep me");
  check_error([&] { write_synthetic_model(small_qwen_json(), "qwen.json", tmp.file("notes"), ow); },
              {"not a model directory", "refusing"});
  CHECK(read_file(tmp.file("notes/a.txt")) == "keep me");

  SynthOptions bad = options(1);
  bad.layers = 3;
  check_error([&] { write_synthetic_model(small_qwen_json(), "qwen.json", tmp.file("x"), bad); },
              {"--layers 3", "2 layers"});
  check_error([&] { write_synthetic_model(R"({"model_type": "gpt2", "hidden_size": 8})", "gpt2.json", tmp.file("x"),
                                          options(1)); },
              {"gpt2.json", "gpt2", "not supported"});
  CHECK(!fs::exists(tmp.file("x")));
}
