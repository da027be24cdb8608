// The compression driver end to end on a small random model: every method runs, the saved
// output reloads to the same function, masks hold their pattern, threads do not change bits.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "compress/compressed_model.h"
#include "compress/pipeline.h"
#include "core/parallel.h"
#include "core/rng.h"

#include <unistd.h>
#include "model/synthetic.h"

using namespace obr;
namespace fs = std::filesystem;

static ModelConfig pipeline_config() {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 128;
  c.intermediate_size = 320;  // 40 * 8: a non-power-of-two Hadamard
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 32;
  c.vocab_size = 101;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  return c;
}

static std::vector<std::vector<int32_t>> random_calib(int n, int T, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> ids(2000);
  for (auto& t : ids) t = int32_t(r.below(101));
  return calibration_windows(ids, n, T, seed);
}

static Tensor logits_of(const LlamaModel& m, const std::vector<int32_t>& ids) {
  KVCache c = KVCache::make(m.cfg, int64_t(ids.size()));
  return forward(m, ids.data(), int64_t(ids.size()), c);
}

TEST_CASE("pipeline: every method compresses, masks hold their pattern, losses are finite") {
  for (const char* method : {"rtn", "gptq", "wanda-rtn", "wanda-gptq", "sparsegpt-gptq", "obr-rtn", "obr-gptq"}) {
    for (bool nm : {false, true}) {
      CompressOptions opt;
      opt.solve.method = parse_method(method);
      const bool sparse = std::string(method) != "rtn" && std::string(method) != "gptq";
      if (!sparse && nm) continue;
      opt.solve.sparsity = sparse ? 0.5 : 0.0;
      if (sparse && nm) opt.solve.prune_n = 2, opt.solve.prune_m = 4;
      LlamaModel m = random_llama(pipeline_config(), 11);
      rotate_model(m, opt.rotation);
      CompressReport rep = compress_model(m, random_calib(4, 32, 1), opt);
      const std::string what = std::string(method) + (nm ? " 2:4" : " unstructured");
      INFO(what);
      // SparseGPT thresholds a whole 128-column block at once, so only its total is exact.
      const bool per_row = std::string(method) != "sparsegpt-gptq";
      int64_t total_kept = 0, total = 0;
      REQUIRE(rep.linears.size() == 2 * kNumProj);
      for (const LinearRecord& r : rep.linears) {
        CHECK(std::isfinite(r.loss));
        const int64_t rows = r.mask.dim(0), cols = r.mask.dim(1);
        const uint8_t* mk = r.mask.data<uint8_t>();
        const int8_t* q = r.codes.data<int8_t>();
        for (int64_t i = 0; i < rows; ++i) {
          int64_t kept = 0;
          for (int64_t j = 0; j < cols; ++j) {
            kept += mk[i * cols + j];
            if (!mk[i * cols + j]) REQUIRE(q[i * cols + j] == 0);
            REQUIRE(q[i * cols + j] >= -8);
            REQUIRE(q[i * cols + j] <= 7);
          }
          total_kept += kept;
          total += cols;
          if (!sparse) REQUIRE(kept == cols);
          else if (!nm && per_row) REQUIRE(kept == cols - cols / 2);
        }
        if (sparse && !nm) CHECK(std::fabs(double(total_kept) / double(total) - 0.5) < 0.01);
        if (sparse && nm)
          for (int64_t i = 0; i < rows; ++i)
            for (int64_t g = 0; g < cols; g += 4) {
              int kept = 0;
              for (int k = 0; k < 4; ++k) kept += mk[i * cols + g + k];
              REQUIRE(kept == 2);
            }
      }
    }
  }
}

TEST_CASE("pipeline: saved output reloads to the same function; nothing half-written on failure") {
  const fs::path dir = fs::temp_directory_path() / ("obr_pipeline_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "src");
  // The source model directory only needs config.json for save_compressed to copy.
  ModelConfig cfg = pipeline_config();
  std::string cj = cfg.to_json();
  {
    FILE* f = std::fopen((dir / "src" / "config.json").c_str(), "wb");
    std::fwrite(cj.data(), 1, cj.size(), f);
    std::fclose(f);
  }
  // 50% unstructured, 2:4 and dense W4 are written packed (obr-packed-v1); W8 as int8 codes.
  struct Case {
    const char* name;
    double sparsity;
    int prune_n, prune_m, wbits;
    const char* format;
    const char* int4_format;
  };
  for (const Case& cs : {Case{"50%", 0.5, 0, 0, 4, "obr-packed-v1", "unstructured"},
                         Case{"2:4", 0, 2, 4, 4, "obr-packed-v1", "2:4"},
                         Case{"dense", 0, 0, 0, 4, "obr-packed-v1", "dense"},
                         Case{"W8", 0.5, 0, 0, 8, "obr-simulated-v1", ""}}) {
    CAPTURE(cs.name);
    CompressOptions opt;
    opt.solve.sparsity = cs.sparsity;
    opt.solve.prune_n = cs.prune_n;
    opt.solve.prune_m = cs.prune_m;
    opt.solve.wq.bits = cs.wbits;
    LlamaModel m = random_llama(cfg, 5);
    rotate_model(m, opt.rotation);
    CompressReport rep = compress_model(m, random_calib(4, 32, 2), opt);
    const std::string out = (dir / "out").string();
    fs::remove_all(out);
    save_compressed(out, m, rep, opt, (dir / "src").string(), {}, false);
    CHECK_THROWS_AS(save_compressed(out, m, rep, opt, (dir / "src").string(), {}, false), Error);  // exists
    // The simulated engine reads back exactly W_hat = code * scale: the same logits, bit for bit.
    LoadedModel lm = load_any_model(out, /*weights_only=*/true);
    REQUIRE(lm.compressed);
    CHECK(lm.meta["format"] == cs.format);
    std::vector<int32_t> ids = {1, 2, 3, 50, 60, 70, 100, 0};
    Tensor a = logits_of(m, ids), b = logits_of(*lm.model, ids);
    CHECK(std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
    if (cs.wbits > 4) {
      CHECK_THROWS_AS(load_any_model(out, false, Engine::Int4), Error);  // needs <= 4-bit weights
      continue;
    }
    CHECK(lm.meta["packing"]["int4_format"] == cs.int4_format);
    // The integer engine runs the same packed weights: the same function up to float rounding
    // of the activation-quantized products (tests/test_packed_linear.cpp bounds one linear).
    LoadedModel sim = load_any_model(out, false, Engine::Simulated);
    LoadedModel i4 = load_any_model(out, false, Engine::Int4);
    CHECK(i4.model->layers[0][Proj::Q].kind() == std::string("int4-") + cs.int4_format);
    Tensor ls = logits_of(*sim.model, ids), li = logits_of(*i4.model, ids);
    double num = 0, den = 0;
    for (int64_t i = 0; i < ls.numel(); ++i) {
      const double d = double(ls.data<float>()[i]) - double(li.data<float>()[i]);
      num += d * d;
      den += double(ls.data<float>()[i]) * double(ls.data<float>()[i]);
    }
    CHECK(std::sqrt(num / den) < 0.05);
    fs::remove_all(out);
  }
  // A failing save (inconsistent report) leaves neither the output nor a temporary directory.
  CompressOptions opt;
  LlamaModel m = random_llama(cfg, 5);
  rotate_model(m, opt.rotation);
  CompressReport rep = compress_model(m, random_calib(4, 32, 2), opt);
  CompressReport broken = rep;
  broken.linears.pop_back();
  const std::string out2 = (dir / "out2").string();
  CHECK_THROWS_AS(save_compressed(out2, m, broken, opt, (dir / "src").string(), {}, false), Error);
  for (const auto& e : fs::directory_iterator(dir)) CHECK(e.path().filename().string().find("out2") == std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("pipeline: compression is bit-identical with 1 and 2 threads") {
  std::vector<Tensor> codes[2];
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    CompressOptions opt;
    LlamaModel m = random_llama(pipeline_config(), 9);
    rotate_model(m, opt.rotation);
    CompressReport rep = compress_model(m, random_calib(3, 32, 3), opt);
    for (auto& r : rep.linears) codes[threads - 1].push_back(r.codes);
  }
  set_num_threads(2);
  REQUIRE(codes[0].size() == codes[1].size());
  for (size_t i = 0; i < codes[0].size(); ++i) CHECK(std::memcmp(codes[0][i].raw(), codes[1][i].raw(), codes[0][i].nbytes()) == 0);
}
