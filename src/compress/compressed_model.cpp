#include "compress/compressed_model.h"

#include <deque>
#include <filesystem>
#include <map>
#include <unistd.h>

#include "core/log.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "compress/hadamard.h"
#include "compress/quarot.h"
#include "model/packed_io.h"
#include "model/packed_linear.h"

namespace fs = std::filesystem;

namespace obr {

// Two on-disk forms (the header comment of compressed_model.h has the tensor names):
//   obr-packed-v1     weights of at most 4 bits: packed INT4 (model/packed_io.h), what the
//                     integer kernels read; the simulated engine unpacks it
//   obr-simulated-v1  wider weights (--wbits 5..8): one int8 code per weight
static const char* kFormatPacked = "obr-packed-v1";
static const char* kFormatCodes = "obr-simulated-v1";

simd::Int4Format int4_format_for(const CompressOptions& o) {
  if (o.solve.prune_m == 4 && o.solve.prune_n == 2) return simd::Int4Format::kSparse24;
  if (o.solve.prune_m > 0 || o.solve.sparsity > 0) return simd::Int4Format::kUnstructured;
  return simd::Int4Format::kDense;
}

// The rotation a loader must reproduce online, written to obr.json for people and other tools:
// which transform runs where, its size n and the Hadamard base order K (n = K * 2^m).
nlohmann::json online_hadamards_json(const ModelConfig& c, const CompressOptions& o) {
  if (!o.rotate) return nullptr;
  const int64_t nh = c.num_attention_heads, hd = c.head_dim;
  auto had = [](int64_t n) { return nlohmann::json{{"n", n}, {"K", hadamard_base_order(n)}}; };
  nlohmann::json o_input = hadamard_supported(nh) ? had(nh) : had(nh * hd);
  o_input["kind"] = hadamard_supported(nh) ? "across heads" : "full width (no Hadamard of the head count)";
  return {{"residual_stream", {{"n", c.hidden_size}, {"K", hadamard_base_order(c.hidden_size)},
                               {"random_signs_seed", o.rotation.seed}, {"online", false}}},
          {"down_proj_input", had(c.intermediate_size)},
          {"o_proj_input", o_input},
          {"q_k_after_rope", had(hd)}};
}

static std::string proj_tensor_base(int layer, Proj p) {
  return "model.layers." + std::to_string(layer) + "." + proj_module(p) + "." + proj_name(p);
}

nlohmann::json options_to_json(const CompressOptions& o) {
  nlohmann::json j;
  j["method"] = method_name(o.solve.method);
  j["sparsity"] = o.solve.sparsity;
  j["prune_n"] = o.solve.prune_n;
  j["prune_m"] = o.solve.prune_m;
  j["alpha"] = o.solve.alpha;
  j["blocksize"] = o.solve.blocksize;
  j["percdamp"] = o.solve.percdamp;
  j["wbits"] = o.solve.wq.bits;
  j["w_clip_search"] = o.solve.wq.clip_search;
  j["reference_quirks"] = o.solve.reference_quirks;
  j["rotate"] = o.rotate;
  j["rotation_seed"] = o.rotation.seed;
  j["center_embeddings"] = o.rotation.center_embeddings;
  j["nsamples"] = o.nsamples;
  j["seqlen"] = o.seqlen;
  j["calib_seed"] = o.calib_seed;
  j["wanda_quirk"] = o.wanda_quirk;
  j["abits"] = o.abits;
  j["a_clip"] = o.act.clip;
  j["a_sym"] = o.act.sym;
  j["kvbits"] = o.kvbits;
  j["kv_clip"] = o.kv.clip;
  j["kv_sym"] = o.kv.sym;
  j["kv_group"] = o.kv.group;
  return j;
}

CompressOptions options_from_json(const nlohmann::json& j) {
  CompressOptions o;
  o.solve.method = parse_method(j.at("method").get<std::string>());
  o.solve.sparsity = j.at("sparsity").get<double>();
  o.solve.prune_n = j.at("prune_n").get<int>();
  o.solve.prune_m = j.at("prune_m").get<int>();
  o.solve.alpha = j.at("alpha").get<double>();
  o.solve.blocksize = j.at("blocksize").get<int>();
  o.solve.percdamp = j.at("percdamp").get<double>();
  o.solve.wq.bits = j.at("wbits").get<int>();
  o.solve.wq.clip_search = j.at("w_clip_search").get<bool>();
  o.solve.reference_quirks = j.at("reference_quirks").get<bool>();
  o.rotate = j.at("rotate").get<bool>();
  o.rotation.seed = j.at("rotation_seed").get<uint64_t>();
  o.rotation.center_embeddings = j.at("center_embeddings").get<bool>();
  o.nsamples = j.at("nsamples").get<int64_t>();
  o.seqlen = j.at("seqlen").get<int64_t>();
  o.calib_seed = j.at("calib_seed").get<uint64_t>();
  o.wanda_quirk = j.at("wanda_quirk").get<bool>();
  o.abits = j.at("abits").get<int>();
  o.act.clip = j.at("a_clip").get<float>();
  o.act.sym = j.at("a_sym").get<bool>();
  o.kvbits = j.at("kvbits").get<int>();
  o.kv.clip = j.at("kv_clip").get<float>();
  o.kv.sym = j.at("kv_sym").get<bool>();
  o.kv.group = j.at("kv_group").get<int>();
  return o;
}

void save_compressed(const std::string& out_dir, const LlamaModel& m, const CompressReport& rep, const CompressOptions& opt,
                     const std::string& source_dir, const nlohmann::json& extra, bool overwrite) {
  if (fs::exists(out_dir)) {
    OBR_CHECK(overwrite, out_dir, ": output directory exists; choose another -o or pass --overwrite");
    OBR_CHECK(fs::exists(fs::path(out_dir) / "obr.json") || fs::is_empty(out_dir), out_dir,
              ": exists and is not an obr output; refusing to overwrite it");
  }
  const std::string tmp = out_dir + ".tmp." + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"}) {
      fs::path src = fs::path(source_dir) / f;
      if (fs::exists(src)) {
        std::string bytes = read_file(src.string());
        write_file_atomic((fs::path(tmp) / f).string(), bytes.data(), bytes.size());
      }
    }
    std::vector<std::pair<std::string, Tensor>> tensors;
    tensors.push_back({"model.embed_tokens.weight", m.embed});
    tensors.push_back({"model.norm.weight", m.final_norm});
    auto* head = dynamic_cast<const DenseLinear*>(m.lm_head.get());
    OBR_CHECK(head, "save_compressed: lm_head must be a full-precision linear");
    tensors.push_back({"lm_head.weight", head->weight()});
    for (size_t l = 0; l < m.layers.size(); ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      tensors.push_back({p + "input_layernorm.weight", m.layers[l].attn_norm});
      tensors.push_back({p + "post_attention_layernorm.weight", m.layers[l].mlp_norm});
      for (int j = 0; j < kNumProj; ++j) {
        auto* d = dynamic_cast<const DenseLinear*>(m.layers[l].proj[size_t(j)].get());
        if (d && d->has_bias()) tensors.push_back({proj_tensor_base(int(l), Proj(j)) + ".bias", d->bias()});
      }
    }
    const bool packed = opt.solve.wq.bits <= 4;
    const simd::Int4Format format = int4_format_for(opt);
    std::deque<simd::PackedWeights> packs;  // stable addresses: the tensors below are views of them
    size_t packed_bytes = 0;
    int64_t n_weights = 0;
    nlohmann::json layers = nlohmann::json::array();
    for (const LinearRecord& r : rep.linears) {
      const std::string base = proj_tensor_base(r.layer, r.proj);
      n_weights += r.codes.numel();
      if (packed) {
        packs.push_back(simd::pack_int4(format, r.codes.data<int8_t>(), r.scales.data<float>(), r.codes.dim(0),
                                        r.codes.dim(1), format == simd::Int4Format::kDense ? nullptr : r.mask.data<uint8_t>()));
        packed_bytes += packs.back().bytes();
        append_packed_tensors(base, packs.back(), tensors);
      } else {
        tensors.push_back({base + ".qweight", r.codes});
        tensors.push_back({base + ".scales", r.scales});
      }
      int64_t kept = 0;
      const uint8_t* mk = r.mask.data<uint8_t>();
      for (int64_t i = 0; i < r.mask.numel(); ++i) kept += mk[i] != 0;
      layers.push_back({{"layer", r.layer},
                        {"proj", proj_name(r.proj)},
                        {"loss", r.loss},
                        {"seconds", r.seconds},
                        {"sparsity", 1.0 - double(kept) / double(r.mask.numel())}});
    }
    OBR_CHECK(rep.linears.size() == m.layers.size() * kNumProj, "save_compressed: ", rep.linears.size(),
              " compressed linears, expected ", m.layers.size() * kNumProj);
    const char* kFormat = packed ? kFormatPacked : kFormatCodes;
    std::map<std::string, std::string> st_meta{{"format", kFormat}};
    if (packed) st_meta["int4_format"] = simd::format_name(format);
    write_safetensors((fs::path(tmp) / "model.safetensors").string(), tensors, st_meta);
    nlohmann::json meta = {{"format", kFormat},
                           {"source_model", fs::path(source_dir).filename().string()},
                           {"options", options_to_json(opt)},
                           {"online_hadamards", online_hadamards_json(m.cfg, opt)},
                           {"seconds", rep.seconds},
                           {"linears", layers}};
    if (packed)
      meta["packing"] = {{"int4_format", simd::format_name(format)},
                         {"linear_weights", n_weights},
                         {"linear_bytes", packed_bytes},
                         {"bytes_per_weight", double(packed_bytes) / double(n_weights)},
                         {"layout", "simd/packed_format.h, model/packed_io.h"}};
    if (extra.is_object()) meta.update(extra);
    std::string js = meta.dump(2) + "\n";
    write_file_atomic((fs::path(tmp) / "obr.json").string(), js.data(), js.size());
    if (fs::exists(out_dir)) fs::remove_all(out_dir);
    fs::rename(tmp, out_dir);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

Engine parse_engine(const std::string& name) {
  if (name == "simulated") return Engine::Simulated;
  if (name == "int4") return Engine::Int4;
  fail("unknown engine '", name, "' (valid: simulated, int4)");
}

LoadedModel load_any_model(const std::string& path, bool weights_only, Engine engine) {
  OBR_CHECK(fs::is_directory(path), path, ": not a model directory (expected config.json + *.safetensors)");
  LoadedModel out;
  out.tokenizer_dir = path;
  fs::path meta_path = fs::path(path) / "obr.json";
  if (!fs::exists(meta_path)) {
    out.model = std::make_unique<LlamaModel>(load_llama(path));
    return out;
  }
  out.compressed = true;
  try {
    out.meta = nlohmann::json::parse(read_file(meta_path.string(), 64 << 20));
  } catch (const nlohmann::json::exception& e) {
    fail(meta_path.string(), ": not valid JSON: ", e.what());
  }
  const std::string disk_format = out.meta.value("format", "");
  OBR_CHECK(disk_format == kFormatPacked || disk_format == kFormatCodes, meta_path.string(), ": unknown format '",
            disk_format, "' (this obr reads ", kFormatPacked, " and ", kFormatCodes, ")");
  const bool packed = disk_format == kFormatPacked;
  CompressOptions opt;
  try {
    opt = options_from_json(out.meta.at("options"));
  } catch (const nlohmann::json::exception& e) {
    fail(meta_path.string(), ": bad or missing options: ", e.what());
  }
  auto m = std::make_unique<LlamaModel>();
  m->cfg = ModelConfig::from_file(path);
  m->source = path;
  const ModelConfig& c = m->cfg;
  TensorStore st = TensorStore::open(path);
  auto get_f32 = [&](const std::string& name, const Shape& shape) {
    OBR_CHECK(st.has(name), path, ": missing tensor '", name, "'");
    Tensor t = st.get(name);
    OBR_CHECK(t.shape() == shape, path, ": tensor '", name, "' has shape ", shape_str(t.shape()), ", expected ",
              shape_str(shape));
    Tensor f = t.to_f32();  // an owned copy: the file's pages can go
    st.drop_pages(name);
    return f;
  };
  const int64_t H = c.hidden_size, V = c.vocab_size;
  m->embed = get_f32("model.embed_tokens.weight", {V, H});
  m->final_norm = get_f32("model.norm.weight", {H});
  m->lm_head = std::make_unique<DenseLinear>(get_f32("lm_head.weight", {V, H}));
  const auto shapes = proj_shapes(c);
  const bool int4 = engine == Engine::Int4 && !weights_only;
  const simd::Int4Format format = int4_format_for(opt);
  if (packed) {
    const auto it = st.metadata().find("int4_format");
    OBR_CHECK(it != st.metadata().end() && it->second == simd::format_name(format), path,
              ": model.safetensors says int4_format '", it == st.metadata().end() ? "" : it->second,
              "', obr.json's options imply '", simd::format_name(format), "'");
  }
  if (int4) {
    OBR_CHECK(opt.solve.wq.bits <= 4, path, ": the int4 engine needs weights of at most 4 bits, this model has ",
              opt.solve.wq.bits);
    OBR_CHECK(opt.abits <= 8 && opt.act.sym, path, ": the int4 engine needs symmetric activations of at most 8 bits (A",
              opt.abits, opt.act.sym ? "" : " asymmetric", "); use --engine simulated");
  }
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    DecoderLayer L;
    const std::string p = "model.layers." + std::to_string(l) + ".";
    L.attn_norm = get_f32(p + "input_layernorm.weight", {H});
    L.mlp_norm = get_f32(p + "post_attention_layernorm.weight", {H});
    for (int j = 0; j < kNumProj; ++j) {
      const std::string base = proj_tensor_base(l, Proj(j));
      Tensor b = st.has(base + ".bias") ? get_f32(base + ".bias", {shapes[j][0]}) : Tensor();
      if (packed) {
        simd::PackedWeights w = read_packed_tensors(st, path, base, format, shapes[j][0], shapes[j][1]);
        if (int4) {
          L.proj[size_t(j)] = std::make_unique<PackedLinear>(std::move(w), std::move(b), opt.abits, opt.act.clip);
        } else {  // simulated: W_hat = code * scale, exactly as written
          Tensor codes = Tensor::zeros(shapes[j], DType::I8);
          simd::unpack_int4(w, codes.data<int8_t>());
          Tensor W = codes.to_f32();
          float* pw = W.data<float>();
          for (int64_t r = 0; r < w.n_out; ++r)
            for (int64_t k = 0; k < w.k_in; ++k) pw[r * w.k_in + k] *= w.scale[size_t(r)];
          L.proj[size_t(j)] = std::make_unique<DenseLinear>(std::move(W), std::move(b));
        }
        continue;
      }
      if (int4) {
        OBR_CHECK(st.has(base + ".qweight"), path, ": missing tensor '", base, ".qweight'");
        const Tensor codes = st.get(base + ".qweight");
        OBR_CHECK(codes.dtype() == DType::I8 && codes.shape() == shapes[j], path, ": tensor '", base,
                  ".qweight' must be I8 ", shape_str(shapes[j]), ", got ", dtype_name(codes.dtype()), " ",
                  shape_str(codes.shape()));
        Tensor scales = get_f32(base + ".scales", {shapes[j][0]});
        L.proj[size_t(j)] = std::make_unique<PackedLinear>(format, codes, scales, std::move(b), opt.abits, opt.act.clip);
        continue;
      }
      Tensor codes = get_f32(base + ".qweight", shapes[j]);
      Tensor scales = get_f32(base + ".scales", {shapes[j][0]});
      float* w = codes.data<float>();
      const float* s = scales.data<float>();
      const int64_t cols = shapes[j][1];
      for (int64_t r = 0; r < shapes[j][0]; ++r)
        for (int64_t k = 0; k < cols; ++k) w[r * cols + k] *= s[r];
      L.proj[size_t(j)] = std::make_unique<DenseLinear>(std::move(codes), std::move(b));
    }
    m->layers.push_back(std::move(L));
  }
  if (opt.rotate) enable_online_hadamards(m->rt);
  if (!weights_only) enable_quantized_runtime(m->rt, opt);
  if (int4) {
    m->rt.quant_act = nullptr;  // PackedLinear quantizes its own input
    m->rt.act_quant_in_linears = true;
    // Asymmetric KV of at most 4 bits: a real packed 4-bit cache (bitwise the simulated
    // values); other KV settings, or shapes the packed layout cannot hold, stay simulated.
    if (opt.kvbits <= 4 && !opt.kv.sym)
      enable_packed_kv(m->rt, c, simd::Kv4Quant{opt.kvbits, opt.kv.clip, opt.kv.include_zero, opt.kv.group});
  }
  out.model = std::move(m);
  return out;
}

}  // namespace obr
