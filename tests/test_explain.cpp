// `obr explain` (src/viz/explain.h), its SVG writer (src/viz/svg.h) and docs/walkthrough.md:
// the stage numbers on a real layer of the tiny model are sane and consistent with each other
// and with solve_linear; the JSON is well-formed; the figures are written; every `obr ...`
// command in the walkthrough still parses, and every code link in it names a function that
// is in the linked file.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "core/rng.h"
#include "io/npy.h"
#include "test_util.h"
#include "viz/explain.h"
#include "viz/svg.h"

namespace {

namespace fs = std::filesystem;
using namespace obr;
using json = nlohmann::json;
using obr::testing::check_error;
using obr::testing::TempDir;

const std::string kRoot = OBR_SOURCE_DIR;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const json& stage(const ExplainResult& r, int n) { return r.json["stages"][size_t(n - 1)]; }

double num(const json& j, const char* k) { return j.at(k).get<double>(); }

double method_loss(const ExplainResult& r, const std::string& m) {
  for (const auto& e : stage(r, 8)["methods"])
    if (e["method"] == m) return e["loss"].get<double>();
  FAIL("method ", m, " not in stage 8");
  return 0;
}

// Every source named by a stage exists and defines (mentions) the function.
void check_sources(const ExplainResult& r) {
  for (const auto& st : r.json["stages"])
    for (const auto& s : st["sources"]) {
      const std::string file = kRoot + "/" + s["file"].get<std::string>();
      std::string fn = s["function"].get<std::string>();
      const size_t colons = fn.rfind("::");
      if (colons != std::string::npos) fn = fn.substr(colons + 2);
      INFO("stage ", st["stage"].get<int>(), ": ", s["file"].get<std::string>(), " ", fn);
      REQUIRE(fs::exists(file));
      CHECK(slurp(file).find(fn + "(") != std::string::npos);
    }
}

bool have_tiny() {
  if (fs::exists(kRoot + "/data/models/tiny/config.json") && fs::exists(kRoot + "/data/text/calib.txt")) return true;
  MESSAGE("skipped: data/models/tiny or data/text/calib.txt not present (run data/fetch_text.sh)");
  return false;
}

ExplainOptions tiny_options() {
  ExplainOptions o;
  o.model = kRoot + "/data/models/tiny";
  o.calib = kRoot + "/data/text/calib.txt";
  o.calib_chars = 20000;  // a few thousand tokens: tokenizing the whole text is not the point here
  o.nsamples = 4;
  o.seqlen = 64;
  o.layer = 1;
  o.proj = Proj::Down;
  return o;
}

}  // namespace

TEST_CASE("explain: every stage on tiny layer 1 down_proj is sane and consistent") {
  if (!have_tiny()) return;
  const ExplainResult r = run_explain(tiny_options());
  const json& J = r.json;
  REQUIRE(J["stages"].size() == size_t(kExplainStages));
  const int64_t C_out = r.data.C_out, C_in = r.data.C_in;
  CHECK(J["input"]["shape"] == json({C_out, C_in}));

  // 1: the rotation spreads the outliers: the input is more Gaussian after it.
  const json& s1 = stage(r, 1);
  CHECK(s1["applied"].get<bool>());
  CHECK(s1["rows"].get<int64_t>() == 4 * 64);
  CHECK(num(s1["activations_after"], "kurtosis") < num(s1["activations_before"], "kurtosis"));
  CHECK(num(s1["activations_after"], "a4_relative_error") < num(s1["activations_before"], "a4_relative_error"));
  CHECK(r.data.chan_max_before.size() == size_t(C_in));

  // 2: H is C_in x C_in; damping makes it positive definite.
  const json& s2 = stage(r, 2);
  CHECK(s2["size"].get<int64_t>() == C_in);
  CHECK(s2["tokens"].get<int64_t>() == 4 * 64);
  CHECK(num(s2, "damp") > 0);
  CHECK(num(s2, "eig_min_damped") > 0);
  CHECK(num(s2, "condition_damped") >= 1);
  CHECK(std::isfinite(num(s2, "condition_damped")));

  // 3: the mask prunes exactly floor(C_in / 2) per row.
  const json& s3 = stage(r, 3);
  CHECK(s3["pruned_per_row"].get<int64_t>() == C_in / 2);
  CHECK(s3["pruned"].get<int64_t>() == s3["expected_pruned"].get<int64_t>());
  CHECK(num(s3, "sparsity") == 0.5);
  CHECK(num(s3, "loss_masked") < num(s3, "loss_zero_layer"));

  // 4: the pruning compensation lowers the loss and leaves the pruned weights at 0.
  const json& s4 = stage(r, 4);
  CHECK(s4["pruned_weights_nonzero"].get<int64_t>() == 0);
  CHECK(num(s4, "loss_after") < num(s4, "loss_before"));
  CHECK(num(s4, "loss_before") == num(s3, "loss_masked"));
  CHECK(num(s4, "delta_norm") > 0);

  // 5-6: quantizing w' costs loss; the second compensation recovers part of it, leaving A alone.
  const json& s5 = stage(r, 5);
  const json& s6 = stage(r, 6);
  CHECK(num(s5, "loss_rtn_of_w_prime") > num(s4, "loss_after"));
  CHECK(s6["split_column"].get<int64_t>() == C_in / 2);
  CHECK(num(s6, "delta2_max_abs_on_A") == 0);
  CHECK(num(s6, "loss_A_quantized_B_after") < num(s6, "loss_A_quantized_B_before"));
  CHECK(num(s6, "kept_A_per_row") + num(s6, "kept_B_per_row") == doctest::Approx(double(C_in - C_in / 2)));

  // 7-8: the final losses; OBR beats RTN with the same (Wanda) mask; stage 7 equals solve_linear.
  const json& s7 = stage(r, 7);
  const json& s8 = stage(r, 8);
  CHECK(s7["pruned_codes_nonzero"].get<int64_t>() == 0);
  CHECK(s8["obr_gptq_matches_stage7"].get<bool>());
  CHECK(num(s7, "loss_obr_gptq") == method_loss(r, "obr-gptq"));
  CHECK(num(s7, "loss_obr_rtn") == method_loss(r, "obr-rtn"));
  CHECK(num(s7, "loss_obr_gptq") <= method_loss(r, "wanda-rtn"));
  CHECK(num(s7, "loss_obr_rtn") <= method_loss(r, "wanda-rtn"));
  CHECK(method_loss(r, "wanda-gptq") <= method_loss(r, "wanda-rtn"));
  for (const auto& m : s8["methods"]) {
    INFO(m.dump());
    CHECK(std::isfinite(m["loss"].get<double>()));
    CHECK(m["loss"].get<double>() > 0);
    // Per-row masks are exact; SparseGPT's threshold is per 128-column block over all rows.
    const double want = m["mask"] == "dense" ? 0.0 : 0.5;
    if (m["method"] == "sparsegpt-gptq")
      CHECK(m["sparsity"].get<double>() == doctest::Approx(want).epsilon(1e-3));
    else
      CHECK(m["sparsity"].get<double>() == want);
  }
  check_sources(r);

  // JSON round trip, and the narration names every stage and its code.
  CHECK(json::parse(J.dump()) == J);
  const std::string text = narrate_explain(r);
  for (int s = 1; s <= kExplainStages; ++s)
    CHECK(text.find("Stage " + std::to_string(s) + "/" + std::to_string(kExplainStages)) != std::string::npos);
  CHECK(text.find("src/compress/obr_solver.cpp: obr_restore") != std::string::npos);

  // The figures.
  TempDir tmp("explain");
  const auto files = write_explain_plots(r, tmp.path.string());
  CHECK(files.size() == 5);
  for (const auto& f : files) {
    const std::string svg = slurp(f);
    INFO(f);
    CHECK(svg.rfind("<svg xmlns=", 0) == 0);
    CHECK(svg.size() > 500);
    CHECK(svg.substr(svg.size() - 7) == "</svg>\n");
  }
}

TEST_CASE("explain: --stage stops early, and 2:4 masks are exact") {
  if (!have_tiny()) return;
  ExplainOptions o = tiny_options();
  o.layer = 0;
  o.proj = Proj::Q;
  o.solve.prune_n = 2;
  o.solve.prune_m = 4;
  o.stop_after = 3;
  const ExplainResult r = run_explain(o);
  REQUIRE(r.json["stages"].size() == 3);
  const json& s3 = stage(r, 3);
  CHECK(s3["nm_ok"].get<bool>());
  CHECK(s3["kind"] == "N:M");
  CHECK(num(s3, "sparsity") == 0.5);
  CHECK(r.json["options"]["mask"] == "2:4");
  const std::string text = narrate_explain(r);
  CHECK(text.find("Stage 3/") != std::string::npos);
  CHECK(text.find("Stage 4/") == std::string::npos);
}

TEST_CASE("explain: .npy inputs (no model) with a shown random Hadamard rotation") {
  TempDir tmp("explain_npy");
  const int64_t C_out = 24, C_in = 64, S = 3, T = 40;
  Rng rng(7);
  Tensor W = Tensor::zeros({C_out, C_in}), X = Tensor::zeros({S, T, C_in});
  for (int64_t i = 0; i < W.numel(); ++i) W.data<float>()[i] = float(rng.uniform() - 0.5);
  for (int64_t i = 0; i < X.numel(); ++i) {
    // channel 5 is an outlier channel, as in real LLM activations
    const double scale = (i % C_in) == 5 ? 20.0 : 1.0;
    X.data<float>()[i] = float(scale * (rng.uniform() - 0.5));
  }
  write_npy(tmp.file("W.npy"), W);
  write_npy(tmp.file("X.npy"), X);
  ExplainOptions o;
  o.weight_npy = tmp.file("W.npy");
  o.inputs_npy = tmp.file("X.npy");
  const ExplainResult r = run_explain(o);
  REQUIRE(r.json["stages"].size() == size_t(kExplainStages));
  const json& s1 = stage(r, 1);
  CHECK(s1["activations_before"]["top_channels"][0]["channel"] == 5);
  CHECK(num(s1["activations_after"], "max_over_rms") < num(s1["activations_before"], "max_over_rms"));
  CHECK(stage(r, 2)["samples"].get<int64_t>() == S);
  CHECK(stage(r, 8)["obr_gptq_matches_stage7"].get<bool>());
  CHECK(num(stage(r, 7), "loss_obr_gptq") <= method_loss(r, "wanda-rtn"));
  check_sources(r);
  check_error([&] {
    ExplainOptions bad = o;
    bad.inputs_npy.clear();
    run_explain(bad);
  }, {"--inputs"});
}

TEST_CASE("explain: SVG writer basics") {
  viz::Svg svg(200, 100);
  viz::Plot p(svg, viz::Box{30, 10, 160, 70}, viz::Axis{0, 10}, viz::Axis{1e-3, 10, true}, "a <b> & \"c\"");
  CHECK(p.px(0) == 30);
  CHECK(p.px(10) == 190);
  CHECK(p.py(10) == doctest::Approx(10));
  CHECK(p.py(1e-3) == doctest::Approx(80));
  p.frame("x", "y");
  p.line({0, 5, 10}, {1e-3, 1, 10}, viz::Style{viz::palette(0)}, "s");
  p.legend();
  const std::string s = svg.str();
  CHECK(s.find("a &lt;b&gt; &amp; &quot;c&quot;") != std::string::npos);
  CHECK(s.find("<polyline points=\"30,80 110,27.5 190,10\"") != std::string::npos);
  CHECK(viz::axis_ticks(viz::Axis{0, 1}) == std::vector<double>({0, 0.2, 0.4, 0.6, 0.8, 1.0}));
  CHECK(viz::axis_ticks(viz::Axis{1e-3, 10, true}).size() == 5);
  CHECK(viz::fmt_label(1e-5) == "1e-5");
  CHECK(viz::fmt_label(0.25) == "0.25");
  const auto h = viz::histogram({-1.0f, 0.0f, 0.0f, 0.5f, 2.0f}, -1, 1, 2, true);
  CHECK(h.second == std::vector<double>({1, 1}));  // zeros skipped, 2.0 outside
}

TEST_CASE("explain: docs/walkthrough.md commands parse, code links and figures exist") {
  const std::string doc_path = kRoot + "/docs/walkthrough.md";
  REQUIRE(fs::exists(doc_path));
  const std::string doc = slurp(doc_path);

  // Code links: [`name`](../src/file#...) -- the file exists and mentions `name`.
  const std::regex link(R"(\[`([A-Za-z_:0-9]+)`\]\(\.\./([^)#]+)(#[^)]*)?\))");
  int links = 0;
  for (auto it = std::sregex_iterator(doc.begin(), doc.end(), link); it != std::sregex_iterator(); ++it) {
    const std::string name = (*it)[1], file = (*it)[2];
    std::string fn = name;
    if (fn.rfind("::") != std::string::npos) fn = fn.substr(fn.rfind("::") + 2);
    INFO(name, " -> ", file);
    REQUIRE(fs::exists(kRoot + "/" + file));
    CHECK(slurp(kRoot + "/" + file).find(fn) != std::string::npos);
    ++links;
  }
  CHECK(links >= 10);

  // Figures: ![...](img/x.svg) exist.
  const std::regex img(R"(!\[[^\]]*\]\((img/[^)]+)\))");
  int imgs = 0;
  for (auto it = std::sregex_iterator(doc.begin(), doc.end(), img); it != std::sregex_iterator(); ++it, ++imgs) {
    INFO((*it)[1].str());
    CHECK(fs::exists(kRoot + "/docs/" + (*it)[1].str()));
  }
  CHECK(imgs >= 5);

  // Commands: every line of a fenced block that starts with "obr " (with "\" continuations)
  // parses: `--help` appended makes the command check its options and stop.
  std::vector<std::string> cmds;
  {
    std::istringstream in(doc);
    std::string line, cur;
    bool fenced = false;
    while (std::getline(in, line)) {
      if (line.rfind("```", 0) == 0) {
        fenced = !fenced;
        continue;
      }
      if (!fenced) continue;
      if (cur.empty() && line.rfind("obr ", 0) != 0) continue;
      const bool cont = !line.empty() && line.back() == '\\';
      cur += (cur.empty() ? "" : " ") + (cont ? line.substr(0, line.size() - 1) : line);
      if (!cont) {
        cmds.push_back(cur);
        cur.clear();
      }
    }
  }
  CHECK(cmds.size() >= 3);
  std::error_code ec;
  const fs::path obr = fs::read_symlink("/proc/self/exe", ec).parent_path() / "obr";
  if (ec || !fs::exists(obr)) {
    MESSAGE("skipped the command check: no obr binary next to the test binary (build the `obr` target)");
    return;
  }
  for (const auto& c : cmds) {
    // Drop shell comments and redirections; the options up to there are what must parse.
    std::string args = c.substr(4);
    for (const char* stop : {" #", " >", " |"}) {
      const size_t p = args.find(stop);
      if (p != std::string::npos) args = args.substr(0, p);
    }
    const std::string sh = "cd '" + kRoot + "' && '" + obr.string() + "' " + args + " --help > /dev/null 2>&1";
    INFO(c);
    CHECK(std::system(sh.c_str()) == 0);
  }
}
