#include "compress/checkpoint.h"

#include <cstdio>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "compress/compressed_model.h"
#include "compress/quantizer.h"
#include "core/log.h"
#include "io/atomic_file.h"
#include "io/json_util.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace obr {

namespace {

constexpr const char* kFormat = "obr-checkpoint-v1";
constexpr const char* kJsonName = "checkpoint.json";

// 64-bit FNV-1a: a fingerprint against honest mistakes (another model, text or option), not
// against an adversary.
struct Fnv1a {
  uint64_t h = 0xcbf29ce484222325ull;
  void add(const void* data, size_t n) {
    const unsigned char* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  }
  void add_u64(uint64_t v) {  // little-endian, whatever the host
    unsigned char b[8];
    for (int i = 0; i < 8; ++i) b[i] = (unsigned char)(v >> (8 * i));
    add(b, 8);
  }
  std::string hex() const {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
    return buf;
  }
};

std::string layer_file(int l) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "layer_%03d.safetensors", l);
  return buf;
}

std::string inputs_file(int l) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "inputs_layer_%03d.safetensors", l);
  return buf;
}

Proj proj_from_name(const std::string& name, const std::string& source) {
  for (int j = 0; j < kNumProj; ++j)
    if (name == proj_name(Proj(j))) return Proj(j);
  fail(source, ": unknown projection '", name, "'");
}

Tensor scalar_f64(double v) {
  Tensor t = Tensor::zeros({1}, DType::F64);
  t.data<double>()[0] = v;
  return t;
}

// W_hat = codes * scales[row], exactly as the solvers produce it (src/compress/quantizer.h).
Tensor dequantize_codes(const Tensor& codes, const Tensor& scales) {
  const int64_t rows = codes.dim(0), cols = codes.dim(1);
  Tensor W = Tensor::zeros({rows, cols});
  const int8_t* q = codes.data<int8_t>();
  const float* s = scales.data<float>();
  float* w = W.data<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) w[r * cols + k] = dequantize_weight(q[r * cols + k], s[r]);
  return W;
}

// True if W is bit for bit codes * scales[row].
bool equals_dequantized(const Tensor& W, const Tensor& codes, const Tensor& scales) {
  if (W.shape() != codes.shape() || scales.numel() != codes.dim(0)) return false;
  const int64_t rows = codes.dim(0), cols = codes.dim(1);
  const int8_t* q = codes.data<int8_t>();
  const float* s = scales.data<float>();
  const float* w = W.data<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) {
      const float d = dequantize_weight(q[r * cols + k], s[r]);
      if (std::memcmp(&d, &w[r * cols + k], sizeof d) != 0) return false;
    }
  return true;
}

// Reads `name` from st and checks its dtype and shape.
Tensor get_checked(const TensorStore& st, const std::string& name, DType dt, const Shape& shape) {
  OBR_CHECK(st.has(name), st.path(), ": missing tensor '", name, "'");
  Tensor t = st.get(name);
  OBR_CHECK(t.dtype() == dt && t.shape() == shape, st.path(), ": tensor '", name, "' is ", dtype_name(t.dtype()), " ",
            shape_str(t.shape()), ", expected ", dtype_name(dt), " ", shape_str(shape));
  return t;
}

// "options differ: method obr-gptq -> gptq, nsamples 32 -> 16"
std::string options_diff(const json& was, const json& now) {
  std::string out;
  auto show = [](const json& j, const std::string& k) { return j.contains(k) ? json_brief(j[k]) : std::string("(absent)"); };
  json keys = json::object();
  for (const auto& [k, v] : was.items()) keys[k] = true;
  for (const auto& [k, v] : now.items()) keys[k] = true;
  for (const auto& [k, v] : keys.items()) {
    if (was.contains(k) && now.contains(k) && was[k] == now[k]) continue;
    out += (out.empty() ? "" : ", ") + k + " " + show(was, k) + " -> " + show(now, k);
  }
  return out;
}

}  // namespace

CheckpointFingerprint CheckpointFingerprint::of(const std::string& config_json_text,
                                                const std::vector<std::vector<int32_t>>& calib,
                                                const CompressOptions& opt) {
  CheckpointFingerprint fp;
  Fnv1a c;
  c.add(config_json_text.data(), config_json_text.size());
  fp.config = c.hex();
  Fnv1a k;
  k.add_u64(calib.size());
  for (const auto& w : calib) {
    k.add_u64(w.size());
    for (int32_t id : w) k.add_u64(uint64_t(uint32_t(id)));
  }
  fp.calibration = k.hex();
  Fnv1a o;
  const std::string oj = options_to_json(opt).dump();
  o.add(oj.data(), oj.size());
  fp.options = o.hex();
  return fp;
}

Checkpoint Checkpoint::open(const std::string& dir, const CheckpointFingerprint& fp, const CompressOptions& opt,
                            bool resume) {
  Checkpoint c;
  c.dir_ = dir;
  c.fp_ = fp;
  c.options_json_ = options_to_json(opt).dump();
  const std::string json_path = (fs::path(dir) / kJsonName).string();
  if (!fs::exists(dir)) {  // created by the first save_layer
    if (resume) log_info("checkpoint: ", dir, " does not exist; starting at layer 1");
    return c;
  }
  OBR_CHECK(resume, dir,
            ": the checkpoint of an interrupted run is in the way; pass --resume to continue it, or remove the "
            "directory to start over");
  OBR_CHECK(fs::is_directory(dir), dir, ": exists and is not a checkpoint directory; remove it");
  if (!fs::exists(json_path)) {
    log_info("checkpoint: ", dir, " holds no checkpoint.json yet; starting at layer 1");
    c.remove_unreferenced();
    return c;
  }

  const json j = parse_json(read_file(json_path, 64 << 20), json_path);
  try {
    OBR_CHECK(j.at("format").get<std::string>() == kFormat, json_path, ": unknown format '",
              j.at("format").get<std::string>(), "' (this obr reads ", kFormat, ")");
    const json& f = j.at("fingerprint");
    std::string diff;
    auto part = [&](const char* what, const std::string& was, const std::string& now) {
      if (was != now) diff += detail::concat(diff.empty() ? "" : "; ", what, " (checkpoint ", was, ", now ", now, ")");
    };
    part("config.json differs", f.at("config").get<std::string>(), fp.config);
    part("the calibration token ids differ", f.at("calibration").get<std::string>(), fp.calibration);
    if (f.at("options").get<std::string>() != fp.options) {
      const std::string od = options_diff(j.at("options"), json::parse(c.options_json_));
      diff += (diff.empty() ? "" : "; ") + std::string("options differ: ") + (od.empty() ? "(encoding)" : od);
    }
    OBR_CHECK(diff.empty(), dir, ": the checkpoint is of a different run: ", diff,
              ". Resume with the original model, calibration text and options, or remove ", dir, " to start over");

    c.layers_done_ = j.at("layers_done").get<int>();
    const json& layers = j.at("layers");
    OBR_CHECK(c.layers_done_ >= 0 && layers.is_array() && layers.size() == size_t(c.layers_done_), json_path,
              ": layers_done ", c.layers_done_, " but ", layers.size(), " layer entries");
    for (int l = 0; l < c.layers_done_; ++l) {
      const json& e = layers[size_t(l)];
      OBR_CHECK(e.at("file").get<std::string>() == layer_file(l), json_path, ": layer ", l, " names file '",
                e.at("file").get<std::string>(), "', expected '", layer_file(l), "'");
      std::vector<std::string> projs;
      for (const auto& p : e.at("projs")) projs.push_back(p.get<std::string>());
      for (const auto& p : projs) proj_from_name(p, json_path);
      c.layer_projs_.push_back(std::move(projs));
    }
    c.inputs_file_ = j.at("inputs").get<std::string>();
    OBR_CHECK(c.inputs_file_.empty() || c.inputs_file_ == inputs_file(c.layers_done_), json_path, ": inputs file '",
              c.inputs_file_, "', expected '", inputs_file(c.layers_done_), "'");
    c.calib_seconds_ = j.at("calib_seconds").get<double>();
    c.solve_seconds_ = j.at("solve_seconds").get<double>();
  } catch (const json::exception& e) {
    fail(json_path, ": malformed checkpoint: ", e.what());
  }
  c.remove_unreferenced();
  log_info("checkpoint: resuming from ", dir, " (", c.layers_done_, " layers done)");
  return c;
}

void Checkpoint::write_json() const {
  json layers = json::array();
  for (size_t l = 0; l < layer_projs_.size(); ++l) layers.push_back({{"file", layer_file(int(l))}, {"projs", layer_projs_[l]}});
  const json j = {{"format", kFormat},
                  {"fingerprint", {{"config", fp_.config}, {"calibration", fp_.calibration}, {"options", fp_.options}}},
                  {"options", json::parse(options_json_)},
                  {"layers_done", layers_done_},
                  {"layers", layers},
                  {"inputs", inputs_file_},
                  {"calib_seconds", calib_seconds_},
                  {"solve_seconds", solve_seconds_}};
  const std::string text = j.dump(2) + "\n";
  write_file_atomic((fs::path(dir_) / kJsonName).string(), text.data(), text.size());
}

// Removes what a killed run left behind that checkpoint.json does not name: temporaries of
// atomic writes and files of the layer that was in progress. Files with other names are left alone.
void Checkpoint::remove_unreferenced() const {
  for (const auto& e : fs::directory_iterator(dir_)) {
    const std::string name = e.path().filename().string();
    if (name == kJsonName) continue;
    bool keep = name == inputs_file_ && !inputs_file_.empty();
    for (int l = 0; l < layers_done_ && !keep; ++l) keep = name == layer_file(l);
    const bool ours = name.rfind("layer_", 0) == 0 || name.rfind("inputs_layer_", 0) == 0 ||
                      name.rfind(std::string(kJsonName) + ".tmp.", 0) == 0;
    if (!keep && ours) fs::remove_all(e.path());
  }
}

int Checkpoint::restore(LlamaModel& m, CompressReport& rep, std::vector<std::vector<float>>& xs) const {
  const int k = layers_done_;
  const int64_t H = m.cfg.hidden_size;
  OBR_CHECK(k <= int(m.layers.size()), dir_, ": checkpoint has ", k, " layers, the model ", m.layers.size());
  for (int l = 0; l < k; ++l) {
    const TensorStore st = TensorStore::open((fs::path(dir_) / layer_file(l)).string());
    DecoderLayer& L = m.layers[size_t(l)];
    for (const std::string& name : layer_projs_[size_t(l)]) {
      const Proj p = proj_from_name(name, st.path());
      auto* d = dynamic_cast<DenseLinear*>(L.proj[size_t(p)].get());
      OBR_CHECK(d != nullptr, "restore: layer ", l, " ", name, " is not a full-precision linear");
      const Shape shape = d->weight().shape();
      LinearRecord rec;
      rec.layer = l;
      rec.proj = p;
      rec.codes = get_checked(st, name + ".codes", DType::I8, shape).clone();
      rec.scales = get_checked(st, name + ".scales", DType::F32, {shape[0]}).clone();
      rec.mask = get_checked(st, name + ".mask", DType::U8, shape).clone();
      const Tensor loss = get_checked(st, name + ".loss", DType::F64, {1});
      const Tensor seconds = get_checked(st, name + ".seconds", DType::F64, {1});
      rec.loss = loss.data<double>()[0];
      rec.seconds = seconds.data<double>()[0];
      Tensor bias = d->has_bias() ? d->bias() : Tensor();
      L.proj[size_t(p)] = std::make_unique<DenseLinear>(dequantize_codes(rec.codes, rec.scales), std::move(bias));
      rep.linears.push_back(std::move(rec));
    }
  }
  rep.calib_seconds += calib_seconds_;
  rep.solve_seconds += solve_seconds_;
  if (k < int(m.layers.size())) {
    OBR_CHECK(!inputs_file_.empty(), dir_, ": checkpoint of ", k, " layers names no inputs for layer ", k);
    const TensorStore st = TensorStore::open((fs::path(dir_) / inputs_file_).string());
    OBR_CHECK(st.size() == xs.size(), st.path(), ": ", st.size(), " calibration samples, this run has ", xs.size());
    for (size_t s = 0; s < xs.size(); ++s) {
      const int64_t T = int64_t(xs[s].size()) / H;
      Tensor t = get_checked(st, "x." + std::to_string(s), DType::F32, {T, H});
      std::memcpy(xs[s].data(), t.raw(), t.nbytes());
    }
  }
  return k;
}

void Checkpoint::save_layer(int layer, const LlamaModel& m, const CompressReport& rep,
                            const std::vector<std::vector<float>>& xs) {
  OBR_CHECK(layer == layers_done_, dir_, ": save_layer(", layer, ") after ", layers_done_, " layers");
  fs::create_directories(dir_);
  const DecoderLayer& L = m.layers[size_t(layer)];
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::vector<std::string> projs;
  for (const LinearRecord& r : rep.linears) {
    if (r.layer != layer) continue;
    const std::string name = proj_name(r.proj);
    auto* d = dynamic_cast<const DenseLinear*>(L.proj[size_t(r.proj)].get());
    OBR_CHECK(d && equals_dequantized(d->weight(), r.codes, r.scales), "checkpoint: layer ", layer, " ", name,
              ": the model's weight is not codes * scales, so a resumed run could not rebuild it");
    tensors.push_back({name + ".codes", r.codes});
    tensors.push_back({name + ".scales", r.scales});
    tensors.push_back({name + ".mask", r.mask});
    tensors.push_back({name + ".loss", scalar_f64(r.loss)});
    tensors.push_back({name + ".seconds", scalar_f64(r.seconds)});
    projs.push_back(name);
  }
  OBR_CHECK(projs.size() == size_t(kNumProj), "checkpoint: layer ", layer, " has ", projs.size(), " records, expected ",
            kNumProj);
  write_safetensors((fs::path(dir_) / layer_file(layer)).string(), tensors, {{"format", kFormat}});

  // The next layer's inputs (none after the last layer: nothing reads them).
  const std::string old_inputs = inputs_file_;
  std::string next_inputs;
  if (layer + 1 < int(m.layers.size())) {
    const int64_t H = m.cfg.hidden_size;
    std::vector<std::pair<std::string, Tensor>> xt;
    for (size_t s = 0; s < xs.size(); ++s)
      xt.push_back({"x." + std::to_string(s), Tensor::view(xs[s].data(), {int64_t(xs[s].size()) / H, H}, DType::F32, nullptr)});
    next_inputs = inputs_file(layer + 1);
    write_safetensors((fs::path(dir_) / next_inputs).string(), xt, {{"format", kFormat}});
  }

  layers_done_ = layer + 1;
  layer_projs_.push_back(projs);
  inputs_file_ = next_inputs;
  calib_seconds_ = rep.calib_seconds;
  solve_seconds_ = rep.solve_seconds;
  write_json();  // the commit point
  if (!old_inputs.empty()) fs::remove(fs::path(dir_) / old_inputs);
}

void Checkpoint::remove() { fs::remove_all(dir_); }

}  // namespace obr
