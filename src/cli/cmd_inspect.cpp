// obr inspect PATH: what is in a model directory, a .safetensors file or a .npy file.
//
//   model directory  config summary (if config.json is there), tensor table, totals
//   .safetensors     tensor table and totals (also a model.safetensors.index.json)
//   config.json      config summary
//   .npy             dtype, shape, min / max / mean
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/check.h"
#include "io/atomic_file.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/llama.h"

namespace {

namespace fs = std::filesystem;
using namespace obr;

// 6738415616 -> "6,738,415,616"
std::string thousands(uint64_t v) {
  std::string s = std::to_string(v), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double x = double(b);
  int u = 0;
  while (x >= 1024 && u < 4) {
    x /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", x, units[u]);
  return buf;
}

struct Stats {
  double min = std::numeric_limits<double>::infinity(), max = -std::numeric_limits<double>::infinity(), mean = 0;
  int64_t nan = 0, inf = 0;
};

// Over the finite values; NaN and +-inf are counted apart.
Stats stats_of(const Tensor& t) {
  Stats s;
  Tensor f = t.to_f32();
  const float* p = f.data<float>();
  double sum = 0;
  int64_t finite = 0;
  for (int64_t i = 0, n = f.numel(); i < n; ++i) {
    float x = p[i];
    if (std::isnan(x)) {
      ++s.nan;
    } else if (std::isinf(x)) {
      ++s.inf;
    } else {
      s.min = std::min(s.min, double(x));
      s.max = std::max(s.max, double(x));
      sum += x;
      ++finite;
    }
  }
  s.mean = finite ? sum / double(finite) : std::nan("");
  return s;
}

std::string stats_str(const Stats& s) {
  char buf[160];
  if (s.min > s.max)
    std::snprintf(buf, sizeof buf, "no finite values");
  else
    std::snprintf(buf, sizeof buf, "min %.6g  max %.6g  mean %.6g", s.min, s.max, s.mean);
  std::string out = buf;
  if (s.nan || s.inf) out += "  (NaN " + std::to_string(s.nan) + ", inf " + std::to_string(s.inf) + ")";
  return out;
}

// ---- .npy ----
int inspect_npy(const std::string& path) {
  Tensor t = read_npy(path);
  std::printf("%s: .npy array, dtype %s, shape %s, %s element%s, %s bytes\n", path.c_str(), dtype_name(t.dtype()),
              shape_str(t.shape()).c_str(), thousands(uint64_t(t.numel())).c_str(), t.numel() == 1 ? "" : "s",
              thousands(t.nbytes()).c_str());
  if (t.numel()) std::printf("  %s\n", stats_str(stats_of(t)).c_str());
  return 0;
}

// ---- safetensors (single file, index, or model directory) ----
void print_tensors(const TensorStore& store, const std::string& filter, bool with_stats) {
  const bool sharded = store.files().size() > 1;
  std::vector<std::string> names;
  for (const auto& n : store.names())
    if (filter.empty() || n.find(filter) != std::string::npos) names.push_back(n);
  size_t wname = 4, wshape = 5;
  for (const auto& n : names) {
    wname = std::max(wname, n.size());
    wshape = std::max(wshape, shape_str(store.info(n).shape).size());
  }
  std::printf("%-*s  %-5s  %-*s  %14s%s%s\n", int(wname), "name", "dtype", int(wshape), "shape", "bytes",
              sharded ? "  file" : "", with_stats ? "  stats" : "");
  uint64_t params = 0, bytes = 0;
  for (const auto& n : names) {
    const auto& info = store.info(n);
    std::string extra;
    if (sharded) extra += "  " + fs::path(info.file).filename().string();
    if (with_stats) extra += "  " + stats_str(stats_of(store.get(n)));
    std::printf("%-*s  %-5s  %-*s  %14s%s\n", int(wname), n.c_str(), dtype_name(info.dtype), int(wshape),
                shape_str(info.shape).c_str(), thousands(info.nbytes).c_str(), extra.c_str());
    params += info.nbytes / dtype_size(info.dtype);
    bytes += info.nbytes;
  }
  std::printf("%zu tensor%s%s, %s parameters, %s bytes (%s) in %zu file%s\n", names.size(),
              names.size() == 1 ? "" : "s", filter.empty() ? "" : (" matching '" + filter + "'").c_str(),
              thousands(params).c_str(), thousands(bytes).c_str(), human_bytes(bytes).c_str(), store.files().size(),
              store.files().size() == 1 ? "" : "s");
  if (!store.metadata().empty()) {
    std::printf("metadata:");
    for (const auto& m : store.metadata()) std::printf(" %s=%s", m.first.c_str(), m.second.c_str());
    std::printf("\n");
  }
}

// A compressed model (obr.json beside the weights): how it was made and what it weighs against
// the FP16 original, for the linear layers (what the method compresses) and the whole file.
void print_compression(const std::string& meta_path, const ModelConfig& cfg, const TensorStore& store) {
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(read_file(meta_path, 64 << 20));
  } catch (const nlohmann::json::exception& e) {
    fail(meta_path, ": not valid JSON: ", e.what());
  }
  const nlohmann::json opt = meta.value("options", nlohmann::json::object());
  std::printf("\ncompressed by obr: format %s, method %s, W%dA%dKV%d, rotation %s\n",
              meta.value("format", "?").c_str(), opt.value("method", "?").c_str(), opt.value("wbits", 0),
              opt.value("abits", 0), opt.value("kvbits", 0),
              opt.value("rotate", false) ? ("QuaRot (seed " + std::to_string(opt.value("rotation_seed", 0ull)) + ")").c_str()
                                         : "none");
  uint64_t file_bytes = 0;
  for (const auto& n : store.names()) file_bytes += store.info(n).nbytes;
  const uint64_t fp16_model = uint64_t(cfg.num_parameters()) * 2;
  if (meta.contains("packing")) {
    const nlohmann::json& p = meta["packing"];
    const uint64_t weights = p.value("linear_weights", 0ull), bytes = p.value("linear_bytes", 0ull);
    std::printf("linear layers: %s weights packed as INT4 %s in %s bytes = %.3f bytes/weight (FP16: 2) -> %.2fx smaller\n",
                thousands(weights).c_str(), p.value("int4_format", "?").c_str(), thousands(bytes).c_str(),
                double(bytes) / double(weights), 2.0 * double(weights) / double(bytes));
  }
  uint64_t linear_params = 0;
  for (const Shape& sh : proj_shapes(cfg)) linear_params += uint64_t(sh[0] * sh[1]);
  linear_params *= uint64_t(cfg.num_hidden_layers);
  const double other_share = 1.0 - double(linear_params) / double(cfg.num_parameters());
  std::printf("whole model: %s bytes of tensors vs %s bytes for all %s parameters in FP16: ratio %.2f\n"
              "  (embeddings, norms and lm_head, %.0f%% of this model's parameters, stay F32 as evaluated)\n",
              thousands(file_bytes).c_str(), thousands(fp16_model).c_str(),
              thousands(uint64_t(cfg.num_parameters())).c_str(), double(fp16_model) / double(file_bytes),
              100.0 * other_share);
}

int inspect_model_dir(const std::string& dir, const std::string& filter, bool with_stats) {
  const bool has_config = fs::exists(fs::path(dir) / "config.json");
  const bool has_weights =
      fs::exists(fs::path(dir) / "model.safetensors") || fs::exists(fs::path(dir) / "model.safetensors.index.json");
  OBR_CHECK(has_config || has_weights, dir,
            ": not a model directory (no config.json, model.safetensors or "
            "model.safetensors.index.json)");
  ModelConfig cfg;
  if (has_config) {
    cfg = ModelConfig::from_file(dir);
    std::printf("%s", cfg.summary().c_str());
  } else {
    std::printf("(no config.json in %s)\n", dir.c_str());
  }
  if (!has_weights) {
    std::printf("(no model.safetensors or model.safetensors.index.json in %s)\n", dir.c_str());
    return 0;
  }
  std::printf("\n");
  TensorStore store = TensorStore::open(dir);
  print_tensors(store, filter, with_stats);
  const fs::path meta_path = fs::path(dir) / "obr.json";
  if (has_config && fs::exists(meta_path)) return print_compression(meta_path.string(), cfg, store), 0;
  if (has_config) {
    uint64_t params = 0;
    for (const auto& n : store.names()) params += store.info(n).nbytes / dtype_size(store.info(n).dtype);
    if (int64_t(params) != cfg.num_parameters())
      std::printf("note: the files hold %s parameters, the config implies %s\n", thousands(params).c_str(),
                  thousands(uint64_t(cfg.num_parameters())).c_str());
  }
  return 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

int run_inspect(int argc, char** argv) {
  cli::Args args("inspect", "PATH [options]",
                 "Print what a model directory, a .safetensors file (or its .index.json) or a .npy file holds:\n"
                 "the config summary, a table of tensors (name, dtype, shape, bytes), parameter and byte totals;\n"
                 "for .npy the dtype, shape and min / max / mean.");
  args.positional("PATH", "model directory, .safetensors, model.safetensors.index.json, config.json or .npy file");
  args.option("filter", "", "only list tensors whose name contains this text");
  args.flag("stats", false, "also print min / max / mean of every listed tensor (reads all the data)");
  if (!args.parse(argc, argv)) return 0;
  const std::string path = args.pos("PATH");
  std::error_code ec;
  OBR_CHECK(fs::exists(path, ec), path, ": no such file or directory");

  // Input kinds; a compressed model is a model directory with an obr.json.
  if (fs::is_directory(path, ec)) return inspect_model_dir(path, args.str("filter"), args.on("stats"));
  if (ends_with(path, ".npy")) return inspect_npy(path);
  if (ends_with(path, "config.json")) {
    std::printf("%s", ModelConfig::from_file(path).summary().c_str());
    return 0;
  }
  if (ends_with(path, ".safetensors") || ends_with(path, ".index.json")) {
    print_tensors(TensorStore::open(path), args.str("filter"), args.on("stats"));
    return 0;
  }
  fail(path, ": unknown file kind (expected a model directory, .safetensors, .index.json, config.json or .npy)");
}

}  // namespace

OBR_COMMAND(inspect, "print a model's config, tensors and sizes (or a .safetensors / .npy file)", run_inspect);
