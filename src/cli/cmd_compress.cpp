// obr compress MODEL -o OUT --method obr-gptq ...: the whole pipeline on a real model.
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "compress/checkpoint.h"
#include "compress/compressed_model.h"
#include "compress/memory_estimate.h"
#include "compress/pipeline.h"
#include "compress/stream_compress.h"
#include "core/log.h"
#include "core/parallel.h"
#include "io/atomic_file.h"
#include "io/text.h"
#include "model/perplexity.h"
#include "tokenizer/tokenizer.h"

namespace obr::cli {

static void parse_nm(const std::string& s, int& n, int& m) {
  size_t colon = s.find(':');
  OBR_CHECK(colon != std::string::npos, "option --nm expects N:M such as 2:4, got '", s, "'");
  try {
    n = std::stoi(s.substr(0, colon));
    m = std::stoi(s.substr(colon + 1));
  } catch (...) {
    fail("option --nm expects N:M such as 2:4, got '", s, "'");
  }
  OBR_CHECK(n > 0 && m > n, "option --nm: need 0 < N < M, got ", n, ":", m);
}

static int run_compress(int argc, char** argv) {
  Args a("compress", "MODEL -o OUT [--method obr-gptq] [--sparsity 0.5 | --nm 2:4] [options]",
         "Compress a Hugging Face Llama-family model: QuaRot rotation, layer-by-layer calibration,\n"
         "pruning masks, OBR / GPTQ / SparseGPT solves, W4 quantization; the output runs with\n"
         "W4A4KV4 activation and KV-cache quantization in `obr perplexity` / `obr generate`.");
  a.positional("MODEL", "model directory (config.json, *.safetensors, tokenizer.json)");
  a.option("out", "", "output directory (required)");
  a.alias("-o", "--out");
  a.option("method", "obr-gptq", "rtn | gptq | wanda-rtn | wanda-gptq | sparsegpt-gptq | obr-rtn | obr-gptq");
  a.option("sparsity", "0.5", "unstructured sparsity per row (ignored with --nm; 0 for rtn/gptq)");
  a.option("nm", "", "N:M semi-structured sparsity, e.g. 2:4 (N of every M weights pruned)");
  a.option("wbits", "4", "weight bits (symmetric, per output channel)");
  a.option("abits", "4", "activation bits at evaluation (per token; 16 = off)");
  a.option("kvbits", "4", "KV-cache bits at evaluation (asymmetric per head; 16 = off)");
  a.option("a-clip", "0.9", "activation clip ratio (QuaRot paper: 0.9; reference default: 1.0)");
  a.option("kv-clip", "0.95", "KV clip ratio (QuaRot paper: 0.95; reference default: 1.0)");
  a.flag("rotate", true, "QuaRot rotation (random Hadamard of the residual stream + online Hadamards)");
  a.option("seed", "0", "seed of the random Hadamard signs");
  a.option("calib", "data/text/calib.txt", "calibration text (must not overlap the evaluation text)");
  a.option("nsamples", "32", "calibration windows (reference: 128)");
  a.option("seqlen", "0", "tokens per calibration window (0: min(2048, max_position_embeddings); reference: 2048)");
  a.option("calib-seed", "0", "seed of the calibration window offsets");
  a.option("alpha", "0.5", "OBR: fraction of columns in the eviction (RTN) group");
  a.option("percdamp", "0.01", "Hessian damping as a fraction of mean(diag H)");
  a.flag("clip-search", true, "weight clip grid search (reference 'w_clip')");
  a.flag("reference-quirks", false, "reproduce the reference code's quirks (ALGORITHM.md; see README)");
  a.flag("center-embeddings", false, "reference quirk: mean-centre embedding rows before rotating");
  a.option("eval", "", "after compressing, report perplexity on this text");
  a.option("eval-windows", "0", "with --eval: only the first N windows (0: all)");
  a.option("threads", "0", "threads (0: OpenMP default)");
  a.flag("overwrite", false, "replace OUT if it is an earlier obr output");
  a.flag("resume", false, "continue an interrupted run from its checkpoint OUT.partial (same model, text, options)");
  a.flag("fast", false,
         "calibration-free streaming path for models of any size: RTN (with a magnitude mask for\n"
         "--sparsity / --nm), one layer at a time from the memory-mapped weights; no --calib needed");
  a.flag("memory-check", true, "refuse to start when the estimated peak memory exceeds MemAvailable");
  if (!a.parse(argc, argv)) return 0;
  if (a.integer("threads") > 0) set_num_threads(int(a.integer("threads")));
  const std::string out = a.str("out");
  OBR_CHECK(!out.empty(), "option -o/--out is required (the output directory)");

  const bool fast = a.on("fast");
  CompressOptions opt;
  opt.solve.method = parse_method(fast && !a.has("method") ? "rtn" : a.str("method"));
  OBR_CHECK(!fast || opt.solve.method == Method::RTN, "option --fast runs RTN only (no calibration); method ",
            a.str("method"), " needs calibration: drop --fast or use --method rtn");
  opt.solve.sparsity = a.real("sparsity");
  if (a.has("nm") && !a.str("nm").empty()) {
    parse_nm(a.str("nm"), opt.solve.prune_n, opt.solve.prune_m);
    opt.solve.sparsity = double(opt.solve.prune_n) / opt.solve.prune_m;
  }
  const bool sparse_method = opt.solve.method != Method::RTN && opt.solve.method != Method::GPTQ;
  if (fast) {  // RTN with a magnitude mask: only the sparsity asked for explicitly
    if (!a.has("sparsity") && opt.solve.prune_m == 0) opt.solve.sparsity = 0;
  } else if (!sparse_method) {
    OBR_CHECK(!(a.has("sparsity") && a.real("sparsity") > 0) && opt.solve.prune_m == 0, "method ", a.str("method"),
              " is quantization only; --sparsity/--nm need a sparse method (wanda-*, sparsegpt-gptq, obr-*)");
    opt.solve.sparsity = 0;
  }
  OBR_CHECK(opt.solve.sparsity >= 0 && opt.solve.sparsity < 1, "option --sparsity must be in [0, 1), got ",
            opt.solve.sparsity);
  opt.solve.wq.bits = int(a.integer("wbits"));
  OBR_CHECK(opt.solve.wq.bits >= 2 && opt.solve.wq.bits <= 8, "option --wbits must be in 2..8, got ", opt.solve.wq.bits);
  opt.solve.wq.clip_search = a.on("clip-search");
  opt.solve.alpha = a.real("alpha");
  OBR_CHECK(opt.solve.alpha >= 0 && opt.solve.alpha <= 1, "option --alpha must be in [0, 1], got ", opt.solve.alpha);
  opt.solve.percdamp = a.real("percdamp");
  OBR_CHECK(opt.solve.percdamp > 0, "option --percdamp must be positive, got ", opt.solve.percdamp);
  opt.solve.reference_quirks = a.on("reference-quirks");
  opt.wanda_quirk = a.on("reference-quirks");
  opt.rotate = a.on("rotate");
  opt.rotation.seed = uint64_t(a.integer("seed"));
  opt.rotation.center_embeddings = a.on("center-embeddings");
  opt.abits = int(a.integer("abits"));
  opt.kvbits = int(a.integer("kvbits"));
  OBR_CHECK(opt.abits >= 2 && opt.abits <= 16, "option --abits must be in 2..16, got ", opt.abits);
  OBR_CHECK(opt.kvbits >= 2 && opt.kvbits <= 16, "option --kvbits must be in 2..16, got ", opt.kvbits);
  opt.act.clip = float(a.real("a-clip"));
  opt.kv.clip = float(a.real("kv-clip"));
  opt.nsamples = a.integer("nsamples");
  opt.calib_seed = uint64_t(a.integer("calib-seed"));

  Timer total;
  const std::string src = a.pos("MODEL");
  OBR_CHECK(a.on("overwrite") || !std::filesystem::exists(out), out,
            ": output directory exists; choose another -o or pass --overwrite");
  const std::string config_path = (std::filesystem::path(src) / "config.json").string();
  const ModelConfig cfg = ModelConfig::from_file(config_path);
  opt.seqlen = a.integer("seqlen") > 0 ? a.integer("seqlen")
                                       : std::min<int64_t>(2048, cfg.max_position_embeddings > 0 ? cfg.max_position_embeddings : 2048);

  if (fast) {
    const uint64_t need = estimate_streaming_memory(cfg), avail = available_memory_bytes();
    log_info("  memory: estimated peak ", format_bytes(need), " (embeddings + lm_head + one layer); available ",
             avail ? format_bytes(avail) : "unknown");
    OBR_CHECK(!a.on("memory-check") || avail == 0 || need <= avail, "estimated peak memory ", format_bytes(need),
              " exceeds the available ", format_bytes(avail), " (MemAvailable), even one layer at a time; pass "
              "--no-memory-check to try anyway");
    const StreamCompressResult r = compress_streaming(src, out, opt, a.on("overwrite"), a.on("resume"));
    std::printf("compressed %s -> %s  method rtn (--fast)  seconds %.1f  bytes_per_weight %.3f  peak_rss_mb %.1f\n",
                src.c_str(), out.c_str(), total.seconds(), double(r.packed_bytes) / double(r.linear_weights),
                peak_rss_bytes() / 1048576.0);
    if (!a.str("eval").empty()) {
      LoadedModel cm = load_any_model(out);
      Tokenizer tok = Tokenizer::from_file(src);
      std::vector<int32_t> ids = tok.encode(read_text_file(a.str("eval")), false);
      log_info("evaluating ", out, " on ", a.str("eval"), " (", cm.model->rt.describe(), ")");
      PerplexityResult pr = perplexity(*cm.model, ids, opt.seqlen, a.integer("eval-windows"));
      std::printf("perplexity %.6f  nll %.8f  windows %lld  seqlen %lld\n", pr.perplexity, pr.nll, (long long)pr.windows,
                  (long long)pr.seqlen);
    }
    return 0;
  }

  // Fail in seconds, not after hours, when the run cannot fit.
  const MemoryEstimate mem = estimate_compress_memory(cfg, opt, num_threads());
  const uint64_t avail = available_memory_bytes();
  log_info("  memory: estimated peak ", mem.describe(), "; available ", avail ? format_bytes(avail) : "unknown");
  OBR_CHECK(!a.on("memory-check") || avail == 0 || mem.total() <= avail, "estimated peak memory ",
            format_bytes(mem.total()), " exceeds the available ", format_bytes(avail),
            " (MemAvailable); use fewer --nsamples (now ", opt.nsamples, ") or a smaller --seqlen (now ", opt.seqlen,
            "), pass --no-memory-check to try anyway, or use --fast (RTN, no calibration, one layer at a time)");

  Tokenizer tok = Tokenizer::from_file(src);
  const std::string calib_path = a.str("calib");
  std::vector<int32_t> calib_ids = tok.encode(read_text_file(calib_path), false);
  auto windows = calibration_windows(calib_ids, opt.nsamples, opt.seqlen, opt.calib_seed);

  // Each finished layer is checkpointed in OUT.partial; --resume continues from there.
  Checkpoint ckpt = Checkpoint::open(out + ".partial", CheckpointFingerprint::of(read_file(config_path, 64 << 20), windows, opt),
                                     opt, a.on("resume"));

  LoadedModel lm = load_any_model(src);
  OBR_CHECK(!lm.compressed, src, " is already compressed; compress the original model");
  LlamaModel& m = *lm.model;

  log_info("compress: ", src, " (", m.cfg.num_hidden_layers, " layers, hidden ", m.cfg.hidden_size, ") -> ", out);
  log_info("  method ", a.str("method"), ", ",
           opt.solve.prune_m ? detail::concat(opt.solve.prune_n, ":", opt.solve.prune_m, " sparsity")
                             : detail::concat(opt.solve.sparsity * 100, "% unstructured sparsity"),
           ", W", opt.solve.wq.bits, " (clip search ", opt.solve.wq.clip_search ? "on" : "off", ") A", opt.abits, " (clip ",
           opt.act.clip, ") KV", opt.kvbits, " (clip ", opt.kv.clip, "), alpha ", opt.solve.alpha, ", percdamp ",
           opt.solve.percdamp, ", rotation ", opt.rotate ? "on" : "off",
           opt.solve.reference_quirks ? ", reference quirks ON" : "");
  log_info("  calibration: ", calib_path, ": ", calib_ids.size(), " tokens, ", opt.nsamples, " windows x ", opt.seqlen,
           " tokens (seed ", opt.calib_seed, "); reference uses 128 x 2048; ", num_threads(), " threads");

  if (opt.rotate) rotate_model(m, opt.rotation);
  CompressReport rep = compress_model(m, windows, opt, {}, &ckpt);
  log_info("compress: done in ", total.seconds(), " s (calibration ", rep.calib_seconds, " s, solves ", rep.solve_seconds,
           " s)");
  nlohmann::json extra = {{"calibration_text", std::filesystem::path(calib_path).filename().string()},
                          {"calibration_tokens", calib_ids.size()},
                          {"wall_seconds", total.seconds()},
                          {"threads", num_threads()}};
  save_compressed(out, m, rep, opt, src, extra, a.on("overwrite"));
  ckpt.remove();
  lm.model.reset();  // the evaluation below loads the output; the f32 model and codes go first
  rep = CompressReport();
  std::printf("compressed %s -> %s  method %s  seconds %.1f  peak_rss_mb %.1f\n", src.c_str(), out.c_str(),
              a.str("method").c_str(), total.seconds(), peak_rss_bytes() / 1048576.0);

  if (!a.str("eval").empty()) {
    LoadedModel cm = load_any_model(out);
    std::vector<int32_t> ids = tok.encode(read_text_file(a.str("eval")), false);
    log_info("evaluating ", out, " on ", a.str("eval"), " (", cm.model->rt.describe(), ")");
    PerplexityResult r = perplexity(*cm.model, ids, opt.seqlen, a.integer("eval-windows"));
    std::printf("perplexity %.6f  nll %.8f  windows %lld  seqlen %lld\n", r.perplexity, r.nll, (long long)r.windows,
                (long long)r.seqlen);
  }
  return 0;
}

OBR_COMMAND(compress, "compress a model: rotate, calibrate, prune, OBR/GPTQ solve, quantize (W4A4KV4)", run_compress);

}  // namespace obr::cli
