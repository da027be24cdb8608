// The calibration-free streaming path (`obr compress --fast`, compress/stream_compress.h):
// the same bytes as the in-memory pipeline's RTN, sparse patterns as asked, shards that
// survive an interrupted run, and a peak memory of about one layer.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>

#include "compress/compressed_model.h"
#include "compress/masks.h"
#include "compress/pipeline.h"
#include "compress/quarot.h"
#include "compress/stream_compress.h"
#include "io/safetensors.h"
#include "model/packed_linear.h"
#include "test_model_dir.h"
#include "test_util.h"

using namespace obr;
using obr::testing::check_error;
using obr::testing::TempDir;
using obr::testing::write_model_dir;
namespace fs = std::filesystem;

namespace {

ModelConfig stream_config() {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 128;
  c.intermediate_size = 320;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 32;
  c.vocab_size = 4096;  // the tiny tokenizer's
  c.max_position_embeddings = 256;
  c.rms_norm_eps = 1e-5;
  return c;
}

CompressOptions rtn_options(double sparsity, int n, int m) {
  CompressOptions o;
  o.solve.method = Method::RTN;
  o.solve.sparsity = sparsity;
  o.solve.prune_n = n;
  o.solve.prune_m = m;
  return o;
}

// Every tensor of `a` is in `b` with the same dtype, shape and bytes.
void check_same_tensors(const std::string& a, const std::string& b) {
  const TensorStore sa = TensorStore::open(a), sb = TensorStore::open(b);
  CHECK(sa.names() == sb.names());
  for (const auto& n : sa.names()) {
    if (!sb.has(n)) continue;
    const Tensor x = sa.get(n), y = sb.get(n);
    CAPTURE(n);
    REQUIRE(x.nbytes() == y.nbytes());
    CHECK(x.dtype() == y.dtype());
    CHECK(x.shape() == y.shape());
    CHECK(std::memcmp(x.raw(), y.raw(), x.nbytes()) == 0);
  }
}

}  // namespace

TEST_CASE("stream compress: --fast equals the pipeline's RTN byte for byte, one shard per layer") {
  TempDir tmp("obr_stream");
  const ModelConfig cfg = stream_config();
  write_model_dir(tmp.path / "src", cfg, 11);
  const CompressOptions opt = rtn_options(0, 0, 0);
  const std::string fast = (tmp.path / "fast").string(), pipe = (tmp.path / "pipe").string();
  const StreamCompressResult r = compress_streaming((tmp.path / "src").string(), fast, opt, false, false);
  CHECK(r.layers_reused == 0);
  CHECK(fs::exists(fast + "/model.safetensors.index.json"));
  CHECK(fs::exists(fast + "/model-00004-of-00004.safetensors"));
  CHECK(!fs::exists(fast + ".partial"));

  LoadedModel src = load_any_model((tmp.path / "src").string());
  rotate_model(*src.model, opt.rotation);
  std::vector<std::vector<int32_t>> calib = {{1, 2, 3, 4, 5, 6, 7, 8}};
  CompressReport rep = compress_model(*src.model, calib, opt);
  save_compressed(pipe, *src.model, rep, opt, (tmp.path / "src").string(), {}, false);
  check_same_tensors(fast, pipe);

  // Both engines read the sharded output.
  LoadedModel sim = load_any_model(fast), i4 = load_any_model(fast, false, Engine::Int4);
  CHECK(i4.model->layers[2][Proj::Down].kind() == "int4-dense");
  CHECK(sim.meta["path"] == "streaming RTN (--fast): no calibration");
  check_error([&] { compress_streaming((tmp.path / "src").string(), fast, opt, false, false); }, {"exists"});
  CompressOptions gptq = opt;
  gptq.solve.method = Method::GPTQ;
  check_error([&] { compress_streaming((tmp.path / "src").string(), fast + "2", gptq, false, false); }, {"RTN only"});
}

TEST_CASE("stream compress: magnitude masks hold 2:4 and 50% exactly in the packed output") {
  TempDir tmp("obr_stream_sparse");
  const ModelConfig cfg = stream_config();
  write_model_dir(tmp.path / "src", cfg, 12);
  for (auto [sp, n, m, fmt] : {std::tuple<double, int, int, const char*>{0.5, 2, 4, "int4-2:4"},
                               {0.5, 0, 0, "int4-unstructured"}}) {
    CAPTURE(fmt);
    const std::string out = (tmp.path / (std::string("o") + std::to_string(n))).string();
    compress_streaming((tmp.path / "src").string(), out, rtn_options(sp, n, m), false, false);
    LoadedModel lm = load_any_model(out, false, Engine::Int4);
    for (const DecoderLayer& L : lm.model->layers)
      for (int j = 0; j < kNumProj; ++j) {
        const auto& pl = dynamic_cast<const PackedLinear&>(*L.proj[size_t(j)]);
        CHECK(pl.kind() == fmt);
        const auto& w = pl.packed();
        Tensor keep = Tensor::zeros({w.n_out, w.k_in}, DType::U8);
        std::vector<int8_t> q(size_t(w.n_out * w.k_in));
        simd::unpack_int4(w, q.data(), keep.data<uint8_t>());
        if (n) {
          CHECK(mask_is_nm(keep, 2, 4));
        } else {
          CHECK(mask_sparsity(keep) == doctest::Approx(0.5).epsilon(1e-9));
        }
      }
  }
}

TEST_CASE("stream compress: an interrupted run resumes from its finished shards to the same bytes") {
  TempDir tmp("obr_stream_resume");
  const ModelConfig cfg = stream_config();
  const CompressOptions opt = rtn_options(0.5, 2, 4);
  write_model_dir(tmp.path / "src", cfg, 13);
  const std::string ref = (tmp.path / "ref").string(), out = (tmp.path / "out").string();
  compress_streaming((tmp.path / "src").string(), ref, opt, false, false);

  // A source with layer 2's down_proj missing fails at layer 2, after shards 0, 1 and 2.
  write_model_dir(tmp.path / "broken", cfg, 13, {"model.layers.2.mlp.down_proj.weight"});
  check_error([&] { compress_streaming((tmp.path / "broken").string(), out, opt, false, false); },
              {"missing tensor 'model.layers.2.mlp.down_proj.weight'"});
  CHECK(!fs::exists(out));
  CHECK(fs::exists(out + ".partial/model-00003-of-00004.safetensors"));
  CHECK(!fs::exists(out + ".partial/model-00004-of-00004.safetensors"));

  // Without resume the checkpoint is refused; with other options too; then resumed.
  check_error([&] { compress_streaming((tmp.path / "src").string(), out, opt, false, false); }, {"--resume"});
  check_error([&] { compress_streaming((tmp.path / "src").string(), out, rtn_options(0.5, 0, 0), false, true); },
              {"other options"});
  const StreamCompressResult r = compress_streaming((tmp.path / "src").string(), out, opt, false, true);
  CHECK(r.layers_reused == 3);
  check_same_tensors(out, ref);
  CHECK(!fs::exists(out + ".partial"));
}
