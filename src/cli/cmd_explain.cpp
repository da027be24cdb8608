// obr explain: run OBR on one real layer and narrate every stage with its numbers
// (src/viz/explain.h does the work; docs/walkthrough.md explains the math).
//
//   obr explain MODEL [--layer 1] [--proj down_proj] [--nsamples 16 --seqlen 256]
//               [--sparsity 0.5 | --nm 2:4] [--stage N] [--json] [--plots DIR] [--all-layers]
//   obr explain --weight W.npy --inputs X.npy [...]
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>

#include "cli/commands.h"
#include "core/log.h"
#include "core/parallel.h"
#include "viz/explain.h"

namespace obr::cli {

namespace {

void parse_nm(const std::string& s, int& n, int& m) {
  const size_t colon = s.find(':');
  OBR_CHECK(colon != std::string::npos, "option --nm expects N:M such as 2:4, got '", s, "'");
  try {
    n = std::stoi(s.substr(0, colon));
    m = std::stoi(s.substr(colon + 1));
  } catch (...) {
    fail("option --nm expects N:M such as 2:4, got '", s, "'");
  }
  OBR_CHECK(n > 0 && m > n, "option --nm: need 0 < N < M, got ", n, ":", m);
}

// bench/results/quality-*.csv, sorted, when the directory exists.
std::vector<std::string> result_tables(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return files;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("quality-", 0) == 0 && e.path().extension() == ".csv") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

int run_explain_cmd(int argc, char** argv) {
  Args a("explain", "MODEL | --weight W.npy --inputs X.npy  [options]",
         "Run OBR on one linear layer of a full-precision model (or on .npy inputs) and narrate each\n"
         "stage with its numbers: rotation, Hessian, Wanda mask, pruning compensation, quantization error,\n"
         "A|B partition and second compensation, final quantization, and every method's layer loss side\n"
         "by side. Each stage names the source file and function that did it. See docs/walkthrough.md.");
  a.positional("MODEL", "full-precision model directory (config.json, *.safetensors, tokenizer.json)", false);
  a.option("weight", "", "instead of MODEL: W.npy [C_out, C_in]");
  a.option("inputs", "", "with --weight: X.npy [T, C_in] or [S, T, C_in]");
  a.option("layer", "1", "decoder layer");
  a.option("proj", "down_proj", "linear: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj");
  a.option("calib", "data/text/calib.txt", "calibration text");
  a.option("calib-chars", "0", "use only the first N characters of the text (0: all)");
  a.option("nsamples", "16", "calibration windows");
  a.option("seqlen", "256", "tokens per window");
  a.option("calib-seed", "0", "seed of the window offsets");
  a.flag("rotate", true, "QuaRot rotation of the model first");
  a.option("seed", "0", "seed of the random Hadamard signs");
  a.option("sparsity", "0.5", "unstructured sparsity per row");
  a.option("nm", "", "N:M sparsity instead, e.g. 2:4");
  a.option("alpha", "0.5", "OBR: kept columns < floor(alpha*C_in) form the RTN group A");
  a.option("percdamp", "0.01", "Hessian damping as a fraction of mean(diag H)");
  a.option("wbits", "4", "weight bits");
  a.flag("clip-search", true, "weight clip grid search");
  a.option("stage", "8", "stop after this stage (1..8)");
  a.flag("json", false, "print the numbers as JSON instead of the narration");
  a.option("plots", "", "write the figures (SVG) into this directory");
  a.option("results", "bench/results", "with --plots: directory of quality-*.csv tables for quality.svg");
  a.flag("all-layers", false, "also run every method on every linear of the model (per-linear losses)");
  a.option("threads", "0", "threads (0: OpenMP default)");
  if (!a.parse(argc, argv)) return 0;
  if (a.integer("threads") > 0) set_num_threads(int(a.integer("threads")));

  ExplainOptions opt;
  opt.model = a.pos("MODEL");
  opt.weight_npy = a.str("weight");
  opt.inputs_npy = a.str("inputs");
  OBR_CHECK(opt.model.empty() != opt.weight_npy.empty(), "give MODEL or --weight W.npy --inputs X.npy (one of them)");
  opt.layer = int(a.integer("layer"));
  opt.proj = parse_proj(a.str("proj"));
  opt.calib = a.str("calib");
  opt.calib_chars = a.integer("calib-chars");
  opt.nsamples = a.integer("nsamples");
  opt.seqlen = a.integer("seqlen");
  opt.calib_seed = uint64_t(a.integer("calib-seed"));
  opt.rotate = a.on("rotate");
  opt.rotation_seed = uint64_t(a.integer("seed"));
  OBR_CHECK(!(a.has("nm") && a.has("sparsity")), "give --sparsity or --nm, not both");
  opt.solve.sparsity = a.real("sparsity");
  if (!a.str("nm").empty()) {
    parse_nm(a.str("nm"), opt.solve.prune_n, opt.solve.prune_m);
    opt.solve.sparsity = 0;
  }
  OBR_CHECK(opt.solve.prune_m > 0 || (opt.solve.sparsity > 0 && opt.solve.sparsity < 1),
            "option --sparsity must be in (0, 1), got ", opt.solve.sparsity);
  opt.solve.alpha = a.real("alpha");
  OBR_CHECK(opt.solve.alpha >= 0 && opt.solve.alpha <= 1, "option --alpha must be in [0, 1], got ", opt.solve.alpha);
  opt.solve.percdamp = a.real("percdamp");
  OBR_CHECK(opt.solve.percdamp > 0, "option --percdamp must be positive, got ", opt.solve.percdamp);
  opt.solve.wq.bits = int(a.integer("wbits"));
  OBR_CHECK(opt.solve.wq.bits >= 2 && opt.solve.wq.bits <= 8, "option --wbits must be in 2..8, got ", opt.solve.wq.bits);
  opt.solve.wq.clip_search = a.on("clip-search");
  opt.stop_after = int(a.integer("stage"));
  opt.all_layers = a.on("all-layers");
  OBR_CHECK(!opt.all_layers || opt.stop_after == kExplainStages, "--all-layers runs after stage ", kExplainStages,
            "; drop --stage");

  const ExplainResult r = run_explain(opt);
  if (a.on("json"))
    std::printf("%s\n", r.json.dump(2).c_str());
  else
    std::fputs(narrate_explain(r).c_str(), stdout);

  if (!a.str("plots").empty()) {
    std::vector<std::string> files = write_explain_plots(r, a.str("plots"));
    const std::string q = (std::filesystem::path(a.str("plots")) / "quality.svg").string();
    if (write_quality_chart(result_tables(a.str("results")), q))
      files.push_back(q);
    else
      log_info("explain: no quality-*.csv under ", a.str("results"), "; quality.svg not written");
    for (const auto& f : files) log_info("wrote ", f);
  }
  return 0;
}

}  // namespace

OBR_COMMAND(explain, "run OBR on one layer and narrate each stage with its numbers (docs/walkthrough.md)",
            run_explain_cmd);

}  // namespace obr::cli
