// obr synth --shape NAME|CONFIG.json -o DIR: a random-weight Hugging Face checkpoint at a real
// shape, for speed and memory work (src/model/synth.h, docs/synth.md).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "cli/commands.h"
#include "core/check.h"
#include "core/log.h"
#include "core/parallel.h"
#include "io/atomic_file.h"
#include "model/synth.h"

namespace obr::cli {

namespace fs = std::filesystem;

// "5GB" -> 5e9, "500MB", "2GiB", "123456" (bytes). Decimal units as transformers' max_shard_size.
static uint64_t parse_size(const std::string& s) {
  char* end = nullptr;
  const double x = std::strtod(s.c_str(), &end);
  const std::string unit = end ? std::string(end) : std::string();
  double mult = 0;
  if (unit.empty() || unit == "B") mult = 1;
  if (unit == "KB") mult = 1e3;
  if (unit == "MB") mult = 1e6;
  if (unit == "GB") mult = 1e9;
  if (unit == "KiB") mult = 1024.0;
  if (unit == "MiB") mult = 1048576.0;
  if (unit == "GiB") mult = 1073741824.0;
  OBR_CHECK(end != s.c_str() && mult > 0 && std::isfinite(x) && x * mult >= 1 && x * mult < 1e15,
            "option --max-shard-size expects a size such as 5GB, 500MB or a byte count, got '", s, "'");
  return uint64_t(x * mult);
}

static DType parse_dtype(const std::string& s) {
  if (s == "bf16" || s == "bfloat16") return DType::BF16;
  if (s == "f16" || s == "fp16" || s == "float16") return DType::F16;
  if (s == "f32" || s == "fp32" || s == "float32") return DType::F32;
  fail("option --dtype must be bf16, f16 or f32, got '", s, "'");
}

static int run_synth(int argc, char** argv) {
  std::string names;
  for (const auto& n : synth_shape_names()) names += (names.empty() ? "" : ", ") + n;
  Args a("synth", "--shape NAME|CONFIG.json -o DIR [--seed S] [--dtype bf16|f16|f32] [--layers N]",
         "Write a Hugging Face model directory with RANDOM weights of a real model's exact shapes, for\n"
         "speed and memory measurements only (not a language model: perplexity and outputs mean nothing).\n"
         "config.json as published (plus \"obr_synthetic\": true), model.safetensors (sharded with an index\n"
         "above --max-shard-size), the tokenizer files of the shipped 4096-token reference tokenizer.\n"
         "The weights have log-normal per-row/column scales and a few outlier channels in the RMSNorm\n"
         "weights (docs/synth.md). Deterministic in --seed; streamed, so memory stays small.\n"
         "Shapes: " + names + ".");
  a.option("shape", "", "a published shape (" + names + ") or a config.json of a supported family");
  a.option("out", "", "output directory (written as DIR.tmp.<pid>, renamed when complete)");
  a.alias("-o", "--out");
  a.option("seed", "0", "random seed");
  a.option("dtype", "bf16", "weight dtype: bf16, f16 or f32");
  a.option("layers", "0", "write only the first N decoder layers (0: all); config.json says N");
  a.option("max-shard-size", "5GB", "largest .safetensors file before sharding (5GB, 500MB, bytes)");
  a.option("tokenizer", std::string(OBR_SOURCE_DIR) + "/data/models/tiny",
           "directory whose tokenizer.json and tokenizer_config.json are copied ('none': no tokenizer)");
  a.flag("overwrite", false, "replace DIR if it exists (only a model directory, with config.json)");
  a.option("threads", "0", "threads (0: OpenMP default)");
  if (!a.parse(argc, argv)) return 0;
  if (a.integer("threads") > 0) set_num_threads(int(a.integer("threads")));

  const std::string shape = a.str("shape");
  OBR_CHECK(!shape.empty(), "option --shape is required (", names, ", or a config.json file)");
  OBR_CHECK(!a.str("out").empty(), "option -o/--out is required (the model directory to write)");

  // A published name, else a config.json file (or a model directory holding one).
  std::string config_text, source = shape;
  std::error_code ec;
  bool known = false;
  for (const auto& n : synth_shape_names()) known = known || n == shape;
  if (known) {
    config_text = synth_shape_config(shape);
  } else if (fs::exists(shape, ec)) {
    source = fs::is_directory(shape, ec) ? (fs::path(shape) / "config.json").string() : shape;
    config_text = read_file(source, 16u << 20);
  } else {
    OBR_CHECK(shape.find('/') == std::string::npos && shape.find(".json") == std::string::npos, shape,
              ": no such file (--shape takes ", names, ", or a config.json file)");
    synth_shape_config(shape);  // throws: unknown shape, naming the valid ones
  }

  SynthOptions opt;
  const long long seed = a.integer("seed");
  OBR_CHECK(seed >= 0, "option --seed must be >= 0, got ", seed);
  opt.seed = uint64_t(seed);
  opt.dtype = parse_dtype(a.str("dtype"));
  const long long layers = a.integer("layers");
  OBR_CHECK(layers >= 0 && layers < (1 << 20), "option --layers must be >= 0, got ", layers);
  opt.layers = int(layers);
  opt.max_shard_bytes = parse_size(a.str("max-shard-size"));
  opt.tokenizer_dir = a.str("tokenizer") == "none" ? "" : a.str("tokenizer");
  if (!opt.tokenizer_dir.empty())
    OBR_CHECK(fs::exists(fs::path(opt.tokenizer_dir) / "tokenizer.json", ec), opt.tokenizer_dir,
              ": no tokenizer.json there (pass --tokenizer DIR, or --tokenizer none)");
  opt.overwrite = a.on("overwrite");
  opt.shape_name = shape;

  const std::string out = a.str("out");
  SynthResult r = write_synthetic_model(config_text, source, out, opt);

  const int shards = int(std::count_if(r.files.begin(), r.files.end(), [](const std::string& f) {
    return f.size() > 12 && f.compare(f.size() - 12, 12, ".safetensors") == 0;
  }));
  std::printf("synthetic model written to %s\n", out.c_str());
  std::printf("  shape %s (%s): %d layer%s, hidden %d, intermediate %d, vocab %d; %lld parameters, %s\n",
              opt.shape_name.c_str(), r.cfg.model_type.c_str(), r.cfg.num_hidden_layers,
              r.cfg.num_hidden_layers == 1 ? "" : "s", r.cfg.hidden_size,
              r.cfg.intermediate_size, r.cfg.vocab_size, (long long)r.parameters, dtype_name(opt.dtype));
  std::printf("  %.3f GB of weights in %d .safetensors file%s%s; files:", double(r.tensor_bytes) / 1e9, shards,
              shards == 1 ? "" : "s", shards > 1 ? " + index" : "");
  for (const auto& f : r.files) std::printf(" %s", f.c_str());
  std::printf("\n  seed %llu  seconds %.1f  (%.0f MB/s)  threads %d  peak_rss_mb %.1f\n", (unsigned long long)opt.seed,
              r.seconds, double(r.tensor_bytes) / 1e6 / std::max(r.seconds, 1e-9), num_threads(),
              peak_rss_bytes() / 1048576.0);
  std::printf("  RANDOM WEIGHTS, for speed and memory measurements only: not a language model; perplexity and\n"
              "  outputs mean nothing (config.json has \"obr_synthetic\": true)%s\n",
              opt.tokenizer_dir.empty() ? "" : "; the tokenizer covers ids < 4096 only");
  return 0;
}

OBR_COMMAND(synth, "write a random-weight model of a real shape (speed/memory work only)", run_synth);

}  // namespace obr::cli
