#include "compress/stream_compress.h"

#include <unistd.h>

#include <array>
#include <cmath>
#include <deque>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "compress/compressed_model.h"
#include "compress/masks.h"
#include "compress/memory_estimate.h"
#include "compress/quantizer.h"
#include "compress/quarot.h"
#include "core/log.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/packed_io.h"

namespace fs = std::filesystem;

namespace obr {

namespace {

// A tensor of the source as f32, checked for shape and finiteness; its pages are dropped from
// memory after the conversion (the f32 copy is what is used).
Tensor read_f32(const TensorStore& st, const std::string& name, const Shape& want, const std::string& where) {
  OBR_CHECK(st.has(name), where, ": missing tensor '", name, "'");
  Tensor f = st.get(name).to_f32();
  OBR_CHECK(f.shape() == want, where, ": tensor '", name, "' has shape ", shape_str(f.shape()), ", expected ",
            shape_str(want), " from config.json");
  const float* p = f.data<float>();
  for (int64_t i = 0; i < f.numel(); ++i)
    OBR_CHECK(std::isfinite(p[i]), where, ": tensor '", name, "' holds a non-finite value (", p[i], ") at flat index ", i);
  st.drop_pages(name);
  return f;
}

std::string shard_name(int i, int n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", i + 1, n);
  return buf;
}

// The options that decide the bytes of the output; a shard from an earlier run is reused only
// when these are equal.
nlohmann::json run_key(const CompressOptions& opt, const std::string& config_text) {
  return {{"options", options_to_json(opt)}, {"config", config_text}, {"format", "obr-packed-v1"}};
}

}  // namespace

uint64_t estimate_streaming_memory(const ModelConfig& c) {
  const uint64_t V = uint64_t(c.vocab_size), H = uint64_t(c.hidden_size);
  uint64_t layer = 0, largest = 0;
  for (const Shape& s : proj_shapes(c)) {
    const uint64_t n = uint64_t(s[0] * s[1]);
    layer += n;
    largest = std::max(largest, n);
  }
  // embed + lm_head f32; the layer's f32 weights; per projection W*mask, W_hat (f32), the metric
  // (f32), codes and mask (1 byte each); the packed copies of the layer (~0.55 byte/weight).
  return 2 * V * H * 4 + layer * 4 + largest * (4 + 4 + 4 + 1 + 1) + layer * 6 / 10;
}

StreamCompressResult compress_streaming(const std::string& src_dir, const std::string& out_dir, const CompressOptions& opt,
                                        bool overwrite, bool resume) {
  OBR_CHECK(opt.solve.method == Method::RTN, "the streaming (--fast) path runs RTN only (with a magnitude mask for "
            "--sparsity / --nm), not ", method_name(opt.solve.method), "; methods that need a Hessian need calibration");
  OBR_CHECK(opt.solve.wq.bits <= 4, "the streaming (--fast) path writes packed INT4: --wbits must be <= 4, got ",
            opt.solve.wq.bits);
  if (fs::exists(out_dir)) {
    OBR_CHECK(overwrite, out_dir, ": output directory exists; choose another -o or pass --overwrite");
    OBR_CHECK(fs::exists(fs::path(out_dir) / "obr.json"), out_dir, ": exists and is not an obr output; refusing to overwrite it");
  }
  Timer timer;
  StreamCompressResult res;
  const std::string config_path = (fs::path(src_dir) / "config.json").string();
  const std::string config_text = read_file(config_path, 64 << 20);
  LlamaModel m;  // holds the embeddings / head, and one layer at a time
  m.cfg = ModelConfig::from_file(config_path);
  m.source = src_dir;
  const ModelConfig& c = m.cfg;
  const TensorStore st = TensorStore::open(src_dir);
  const int n_layers = c.num_hidden_layers, n_shards = n_layers + 1;
  const int64_t H = c.hidden_size, V = c.vocab_size;
  const auto shapes = proj_shapes(c);
  const simd::Int4Format format = int4_format_for(opt);
  const MaskSpec ms{opt.solve.sparsity, opt.solve.prune_n, opt.solve.prune_m};
  const bool sparse = ms.nm() || opt.solve.sparsity > 0.0;
  if (sparse)
    for (const Shape& s : shapes) check_mask_spec(ms, s[1]);

  // OUT.partial holds the shards as they are finished, and run.json (what they were made with).
  const std::string partial = out_dir + ".partial";
  const nlohmann::json key = run_key(opt, config_text);
  const std::string key_path = (fs::path(partial) / "run.json").string();
  if (fs::exists(partial)) {
    OBR_CHECK(resume, partial, ": a checkpoint of an interrupted run is here; pass --resume to continue it, or remove it");
    nlohmann::json old;
    try {
      old = nlohmann::json::parse(read_file(key_path, 64 << 20));
    } catch (const std::exception& e) {
      fail(key_path, ": unreadable (", e.what(), "); remove ", partial, " and start again");
    }
    OBR_CHECK(old == key, partial, ": was made with other options or another config.json; remove it to start again");
  } else {
    fs::create_directories(partial);
    const std::string k = key.dump(2) + "\n";
    write_file_atomic(key_path, k.data(), k.size());
  }
  auto shard_done = [&](int i) {
    const fs::path p = fs::path(partial) / shard_name(i, n_shards);
    if (!fs::exists(p)) return false;
    TensorStore::open(p.string());  // a damaged shard is an error here, not at load time
    return true;
  };
  std::map<std::string, std::string> st_meta{{"format", "obr-packed-v1"}, {"int4_format", simd::format_name(format)}};
  nlohmann::json weight_map = nlohmann::json::object();
  auto write_shard = [&](int i, const std::vector<std::pair<std::string, Tensor>>& tensors) {
    write_safetensors((fs::path(partial) / shard_name(i, n_shards)).string(), tensors, st_meta);
  };

  log_info("compress --fast: ", src_dir, " (", n_layers, " layers, hidden ", H, ", ", st.files().size(),
           " source file(s)) -> ", out_dir, ": RTN W", opt.solve.wq.bits,
           sparse ? (ms.nm() ? detail::concat(" + magnitude ", ms.prune_n, ":", ms.prune_m)
                             : detail::concat(" + magnitude ", opt.solve.sparsity * 100, "% unstructured"))
                  : std::string(" dense"),
           ", packed ", simd::format_name(format), ", rotation ", opt.rotate ? "on" : "off", "; no calibration");

  // Shard 0: embeddings, final norm, lm_head (rotated; lm_head stays f32 as in the pipeline).
  {
    const std::vector<std::string> names = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"};
    for (const auto& n : names) weight_map[n] = shard_name(0, n_shards);
    if (shard_done(0)) {
      ++res.layers_reused;
    } else {
      m.embed = read_f32(st, "model.embed_tokens.weight", {V, H}, src_dir);
      m.final_norm = read_f32(st, "model.norm.weight", {H}, src_dir);
      if (st.has("lm_head.weight")) {
        m.lm_head = std::make_unique<DenseLinear>(read_f32(st, "lm_head.weight", {V, H}, src_dir));
      } else {
        OBR_CHECK(c.tie_word_embeddings, src_dir, ": missing tensor 'lm_head.weight' and tie_word_embeddings is false");
        m.lm_head = std::make_unique<DenseLinear>(m.embed.clone());
      }
      if (opt.rotate) rotate_embeddings(m, opt.rotation);
      auto* head = dynamic_cast<DenseLinear*>(m.lm_head.get());
      write_shard(0, {{names[0], m.embed}, {names[1], m.final_norm}, {names[2], head->weight()}});
      m.embed = Tensor();
      m.lm_head.reset();
    }
  }

  nlohmann::json linears = nlohmann::json::array();
  for (int l = 0; l < n_layers; ++l) {
    Timer lt;
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::vector<std::string> names = {p + "input_layernorm.weight", p + "post_attention_layernorm.weight"};
    for (int j = 0; j < kNumProj; ++j) {
      const std::string base = p + proj_module(Proj(j)) + "." + proj_name(Proj(j));
      for (const char* suffix : {".int4", ".scales", ".row_sum"}) names.push_back(base + suffix);
      if (format == simd::Int4Format::kUnstructured)
        for (const char* suffix : {".masks", ".block_offset"}) names.push_back(base + suffix);
      if (st.has(base + ".bias")) names.push_back(base + ".bias");
    }
    for (const auto& n : names) weight_map[n] = shard_name(l + 1, n_shards);
    for (int j = 0; j < kNumProj; ++j) {
      res.linear_weights += uint64_t(shapes[j][0] * shapes[j][1]);
    }
    if (shard_done(l + 1)) {
      // Reused: its sizes are re-read from the shard for the totals.
      const TensorStore done = TensorStore::open((fs::path(partial) / shard_name(l + 1, n_shards)).string());
      for (const auto& n : done.names())
        if (n.find("_layernorm") == std::string::npos && n.find(".bias") == std::string::npos)
          res.packed_bytes += done.info(n).nbytes;
      ++res.layers_reused;
      log_info("layer ", l + 1, "/", n_layers, "  kept from the interrupted run");
      continue;
    }
    DecoderLayer L;
    L.attn_norm = read_f32(st, names[0], {H}, src_dir);
    L.mlp_norm = read_f32(st, names[1], {H}, src_dir);
    std::array<Tensor, kNumProj> bias;
    for (int j = 0; j < kNumProj; ++j) {
      const std::string base = p + proj_module(Proj(j)) + "." + proj_name(Proj(j));
      if (st.has(base + ".bias")) bias[size_t(j)] = read_f32(st, base + ".bias", {shapes[j][0]}, src_dir);
      L.proj[size_t(j)] = std::make_unique<DenseLinear>(read_f32(st, base + ".weight", shapes[j], src_dir), bias[size_t(j)]);
    }
    if (opt.rotate) rotate_layer(L, c, opt.rotation);
    std::deque<simd::PackedWeights> packs;  // the shard's tensors are views of these
    std::vector<std::pair<std::string, Tensor>> tensors = {{names[0], L.attn_norm}, {names[1], L.mlp_norm}};
    for (int j = 0; j < kNumProj; ++j) {
      const std::string base = p + proj_module(Proj(j)) + "." + proj_name(Proj(j));
      auto& lin = dynamic_cast<DenseLinear&>(*L.proj[size_t(j)]);
      const Tensor& W = lin.weight();
      // Exactly solve_linear's Method::RTN: scales from the dense W, then Q(W * mask).
      const Tensor scales = weight_scales(W, opt.solve.wq);
      const Tensor mask = sparse ? magnitude_mask(W, ms) : dense_mask(W.dim(0), W.dim(1));
      Tensor codes;
      const Tensor W_hat = quantize_rtn(apply_mask(W, mask), scales, opt.solve.wq.bits, &codes);
      double err = 0, norm = 0;
      for (int64_t i = 0; i < W.numel(); ++i) {
        const double d = double(W.data<float>()[i]) - double(W_hat.data<float>()[i]);
        err += d * d;
        norm += double(W.data<float>()[i]) * double(W.data<float>()[i]);
      }
      packs.push_back(simd::pack_int4(format, codes.data<int8_t>(), scales.data<float>(), W.dim(0), W.dim(1),
                                      format == simd::Int4Format::kDense ? nullptr : mask.data<uint8_t>()));
      res.packed_bytes += packs.back().bytes();
      append_packed_tensors(base, packs.back(), tensors);
      if (lin.has_bias()) tensors.push_back({base + ".bias", lin.bias()});
      linears.push_back({{"layer", l},
                         {"proj", proj_name(Proj(j))},
                         {"relative_weight_error", norm > 0 ? err / norm : 0.0},
                         {"sparsity", mask_sparsity(mask)}});
      L.proj[size_t(j)].reset();  // the f32 weight goes as soon as it is packed
    }
    write_shard(l + 1, tensors);
    log_info("layer ", l + 1, "/", n_layers, "  ", lt.seconds(), " s  peak rss ", format_bytes(peak_rss_bytes()));
  }

  // Finish: config and tokenizer copies, the index, obr.json, then OUT.partial -> OUT.
  const std::string tmp = out_dir + ".tmp." + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"}) {
      const fs::path from = fs::path(src_dir) / f;
      if (fs::exists(from)) {
        const std::string bytes = read_file(from.string());
        write_file_atomic((fs::path(tmp) / f).string(), bytes.data(), bytes.size());
      }
    }
    for (int i = 0; i < n_shards; ++i) fs::rename(fs::path(partial) / shard_name(i, n_shards), fs::path(tmp) / shard_name(i, n_shards));
    const nlohmann::json index = {{"metadata", {{"format", "obr-packed-v1"}}}, {"weight_map", weight_map}};
    const std::string ix = index.dump(1) + "\n";
    write_file_atomic((fs::path(tmp) / "model.safetensors.index.json").string(), ix.data(), ix.size());
    res.seconds = timer.seconds();
    nlohmann::json meta = {{"format", "obr-packed-v1"},
                           {"source_model", fs::path(src_dir).filename().string()},
                           {"options", options_to_json(opt)},
                           {"online_hadamards", online_hadamards_json(c, opt)},
                           {"path", "streaming RTN (--fast): no calibration"},
                           {"seconds", res.seconds},
                           {"packing", {{"int4_format", simd::format_name(format)},
                                        {"linear_weights", res.linear_weights},
                                        {"linear_bytes", res.packed_bytes},
                                        {"bytes_per_weight", double(res.packed_bytes) / double(res.linear_weights)},
                                        {"layout", "simd/packed_format.h, model/packed_io.h"}}},
                           {"linears", linears}};
    const std::string js = meta.dump(2) + "\n";
    write_file_atomic((fs::path(tmp) / "obr.json").string(), js.data(), js.size());
    if (fs::exists(out_dir)) fs::remove_all(out_dir);
    fs::rename(tmp, out_dir);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::remove_all(partial);
  return res;
}

}  // namespace obr
