// obr layer: compress one linear layer from .npy files with any method (docs/layer.md).
//
//   obr layer --weight W.npy (--inputs X.npy | --hessian H.npy [--scaler S.npy]) -o OUTDIR
//             [--method obr-gptq] [--sparsity 0.5 | --nm 2:4] [--alpha 0.5] [--percdamp 0.01]
//             [--wbits 4] [--no-clip-search] [--reference-quirks] [--threads N]
//
// Writes OUTDIR/{codes,scales,mask,w_hat}.npy and OUTDIR/result.json; prints the loss.
#include <cstdio>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "compress/hessian.h"
#include "compress/masks.h"
#include "compress/solve_linear.h"
#include "core/check.h"
#include "core/log.h"
#include "core/parallel.h"
#include "io/atomic_file.h"
#include "io/npy.h"

namespace {

namespace fs = std::filesystem;
using namespace obr;

// "2:4" -> {2, 4}.
std::pair<int, int> parse_nm(const std::string& s) {
  const size_t colon = s.find(':');
  OBR_CHECK(colon != std::string::npos && colon > 0 && colon + 1 < s.size(), "--nm expects N:M such as 2:4, got '", s,
            "'");
  auto to_int = [&](const std::string& part) {
    size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    OBR_CHECK(used == part.size() && v > 0, "--nm expects N:M with positive integers, got '", s, "'");
    return v;
  };
  return {to_int(s.substr(0, colon)), to_int(s.substr(colon + 1))};
}

Tensor read_f32(const std::string& path, const char* what) {
  Tensor t = read_npy(path);
  OBR_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F64 || t.dtype() == DType::F16, what, " ", path,
            " must hold floats (f4, f8 or f2), got ", dtype_name(t.dtype()));
  return t.dtype() == DType::F32 ? t : t.to_f32();
}

int run_layer(int argc, char** argv) {
  cli::Args args("layer",
                 "--weight W.npy (--inputs X.npy | --hessian H.npy [--scaler S.npy]) -o OUTDIR [options]",
                 "Compress one linear layer (W [C_out, C_in]) with RTN, GPTQ, Wanda, SparseGPT or OBR and write\n"
                 "codes.npy (int8), scales.npy (f32 per row), mask.npy (u8, 1 = keep), w_hat.npy (f32 = codes *\n"
                 "scale) and result.json to OUTDIR. The loss printed is tr((W - W_hat) H (W - W_hat)^T) with the\n"
                 "undamped H. See docs/layer.md.");
  args.option("weight", "", "W.npy: the layer's weight [C_out, C_in] (f32, f64 or f16)");
  args.option("inputs", "", "X.npy: calibration inputs [T, C_in] (one sample) or [S, T, C_in] (S samples)");
  args.option("hessian", "", "H.npy: H = (2/N) sum X^T X [C_in, C_in], instead of --inputs");
  args.option("scaler", "", "S.npy: Wanda statistic [C_in] with --hessian (default: diag(H) / 2)");
  args.option("out", "", "output directory (created if missing)");
  args.alias("-o", "--out");
  args.option("method", "obr-gptq", "rtn, gptq, wanda-rtn, wanda-gptq, sparsegpt-gptq, obr-rtn or obr-gptq");
  args.option("sparsity", "0.5", "unstructured sparsity per row (rtn and gptq: 0 unless given)");
  args.option("nm", "", "N:M sparsity instead, e.g. 2:4 (2 of every 4 consecutive weights are zero)");
  args.option("alpha", "0.5", "OBR: kept columns < floor(alpha*C_in) are RTN-quantized, the rest GPTQ");
  args.option("percdamp", "0.01", "damping: H += percdamp * mean(diag H) * I");
  args.option("blocksize", "128", "GPTQ block size");
  args.option("wbits", "4", "weight bits (symmetric, per output channel)");
  args.flag("clip-search", true, "search the weight clip ratio (the reference's w_clip)");
  args.flag("reference-quirks", false,
            "reproduce the reference's quirks: OBR-GPTQ column layout, Wanda scaler without rescale (--inputs)");
  args.option("threads", "0", "OpenMP threads (0: the default)");
  if (!args.parse(argc, argv)) return 0;

  OBR_CHECK(args.has("weight"), "--weight is required");
  OBR_CHECK(args.has("out"), "-o/--out is required");
  OBR_CHECK(args.has("inputs") != args.has("hessian"), "give exactly one of --inputs and --hessian");
  OBR_CHECK(!(args.has("inputs") && args.has("scaler")), "--scaler goes with --hessian (--inputs computes it)");
  OBR_CHECK(!(args.has("nm") && args.has("sparsity")), "give --sparsity or --nm, not both");
  const long long threads = args.integer("threads");
  OBR_CHECK(threads >= 0, "--threads must be >= 0, got ", threads);
  if (threads > 0) set_num_threads(int(threads));

  SolveOptions opt;
  opt.method = parse_method(args.str("method"));
  const bool quant_only = opt.method == Method::RTN || opt.method == Method::GPTQ;
  opt.sparsity = (quant_only && !args.has("sparsity")) ? 0.0 : args.real("sparsity");
  if (args.has("nm")) {
    const auto nm = parse_nm(args.str("nm"));
    opt.prune_n = nm.first;
    opt.prune_m = nm.second;
    opt.sparsity = 0.0;
  }
  opt.alpha = args.real("alpha");
  opt.percdamp = args.real("percdamp");
  const long long bs = args.integer("blocksize"), wbits = args.integer("wbits");
  OBR_CHECK(bs > 0 && bs <= (1 << 20), "--blocksize must be positive, got ", bs);
  OBR_CHECK(wbits >= 2 && wbits <= 8, "--wbits must be in 2..8, got ", wbits);
  opt.blocksize = int(bs);
  opt.wq.bits = int(wbits);
  opt.wq.clip_search = args.on("clip-search");
  opt.reference_quirks = args.on("reference-quirks");

  const Tensor W = read_f32(args.str("weight"), "--weight");
  OBR_CHECK(W.ndim() == 2, "--weight ", args.str("weight"), " must be 2-D [C_out, C_in], got ", shape_str(W.shape()));
  const int64_t C_in = W.dim(1);
  Tensor H, scaler;
  int64_t nsamples = 0;
  if (args.has("inputs")) {
    const Tensor X = read_f32(args.str("inputs"), "--inputs");
    OBR_CHECK((X.ndim() == 2 || X.ndim() == 3) && X.dim(-1) == C_in, "--inputs ", args.str("inputs"),
              " must be [T, ", C_in, "] or [S, T, ", C_in, "] to match W ", shape_str(W.shape()), ", got ",
              shape_str(X.shape()));
    HessianAccumulator acc(C_in, opt.reference_quirks);
    acc.add(X);
    H = acc.H();
    scaler = acc.scaler();
    nsamples = acc.nsamples();
  } else {
    H = read_f32(args.str("hessian"), "--hessian");
    if (args.has("scaler")) scaler = read_f32(args.str("scaler"), "--scaler");
  }

  log_info("obr layer: ", method_name(opt.method), " on W ", shape_str(W.shape()), ", ", num_threads(), " threads");
  const SolveResult res = solve_linear(W, H, scaler, opt);

  const fs::path out = args.str("out");
  std::error_code ec;
  fs::create_directories(out, ec);
  OBR_CHECK(!ec && fs::is_directory(out), "cannot create output directory ", out.string(), ": ", ec.message());
  write_npy((out / "codes.npy").string(), res.codes);
  write_npy((out / "scales.npy").string(), res.scales);
  write_npy((out / "mask.npy").string(), res.mask);
  write_npy((out / "w_hat.npy").string(), res.W_hat);

  const bool obr_gptq_layout = opt.reference_quirks && opt.method == Method::OBR_GPTQ;
  const bool scaler_quirk = opt.reference_quirks && args.has("inputs");
  nlohmann::json j;
  j["method"] = method_name(opt.method);
  j["shape"] = {W.dim(0), C_in};
  j["options"] = {{"sparsity", opt.prune_m > 0 ? 0.0 : opt.sparsity},
                  {"nm", opt.prune_m > 0 ? std::to_string(opt.prune_n) + ":" + std::to_string(opt.prune_m) : ""},
                  {"alpha", opt.alpha},
                  {"percdamp", opt.percdamp},
                  {"blocksize", opt.blocksize},
                  {"wbits", opt.wq.bits},
                  {"clip_search", opt.wq.clip_search},
                  {"reference_quirks", opt.reference_quirks},
                  {"threads", num_threads()}};
  j["input"] = args.has("inputs") ? nlohmann::json{{"inputs", args.str("inputs")}, {"nsamples", nsamples}}
                                  : nlohmann::json{{"hessian", args.str("hessian")},
                                                   {"scaler", args.has("scaler") ? args.str("scaler") : "diag(H)/2"}};
  j["quirks"] = {{"obr_gptq_reference_column_layout", obr_gptq_layout},
                 {"wanda_scaler_without_rescale", scaler_quirk},
                 {"always", {"clip-search error summed in double with std::pow (reference: float32)",
                             "N:M and unstructured ties pruned at the lower column index"}}};
  j["loss"] = res.loss;
  j["loss_definition"] = "tr((W - W_hat) H (W - W_hat)^T), undamped H, double";
  j["seconds"] = res.seconds;
  j["percdamp_used"] = res.percdamp;
  j["sparsity_achieved"] = mask_sparsity(res.mask);
  j["warnings"] = res.warnings;
  const std::string text = j.dump(2) + "\n";
  write_file_atomic((out / "result.json").string(), text.data(), text.size());

  std::printf("loss %.9g\n", res.loss);
  log_info("obr layer: ", method_name(opt.method), " ", res.seconds, " s, sparsity ", mask_sparsity(res.mask),
           ", wrote ", out.string());
  return 0;
}

}  // namespace

OBR_COMMAND(layer, "compress one linear layer from .npy files (rtn/gptq/wanda/sparsegpt/obr)", run_layer);
