// The plain-text narration of `obr explain`: one block per stage, read from the numbers that
// run_explain put in its JSON (so the text and `--json` can never disagree).
#include <cstdarg>
#include <cstdio>
#include <string>

#include "viz/explain.h"

namespace obr {

namespace {

using json = nlohmann::json;

std::string f(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

double d(const json& j, const char* k) { return j.contains(k) && j[k].is_number() ? j[k].get<double>() : 0.0; }

std::string header(const json& st, const char* title) {
  std::string where;
  for (const auto& s : st["sources"])
    where += (where.empty() ? "" : ", ") + s["file"].get<std::string>() + ": " + s["function"].get<std::string>();
  return f("\n== Stage %d/%d  %s\n   code: %s\n", st["stage"].get<int>(), kExplainStages, title, where.c_str());
}

std::string top_channels(const json& a) {
  std::string s;
  for (const auto& t : a["top_channels"])
    s += f("%s%lld (%.3g)", s.empty() ? "" : ", ", t["channel"].get<long long>(), t["max_abs"].get<double>());
  return s;
}

std::string stage1(const json& st) {
  std::string o = header(st, "QuaRot rotation: outliers before and after");
  const bool after = st.contains("activations_after");
  const json& b = st["activations_before"];
  o += f("   the layer's input X: %lld rows (tokens) x %lld channels\n", st["rows"].get<long long>(),
         st["channels"].get<long long>());
  o += f("   %-40s %14s %14s\n", "", "before", after ? "after" : "");
  auto row = [&](const char* name, const json& x, const json* y, const char* key, const char* fmt) {
    std::string l = f("   %-40s ", name) + f(fmt, d(x, key));
    if (y) l += " " + f(fmt, d(*y, key));
    return l + "\n";
  };
  const json* a = after ? &st["activations_after"] : nullptr;
  o += row("activation max |x|", b, a, "max_abs", "%14.4g");
  o += row("activation RMS", b, a, "rms", "%14.4g");
  o += row("max |x| / RMS", b, a, "max_over_rms", "%14.2f");
  o += row("largest channel max / median channel max", b, a, "max_over_median_channel_max", "%14.2f");
  o += row("kurtosis (a Gaussian has 3)", b, a, "kurtosis", "%14.2f");
  o += row("A4 per-token error ||x - Q(x)|| / ||x||", b, a, "a4_relative_error", "%14.4f");
  const json& wb = st["weight_before"];
  const json* wa = st.contains("weight_after") ? &st["weight_after"] : nullptr;
  o += row("weight max |W| / RMS", wb, wa, "max_over_rms", "%14.2f");
  o += row("weight kurtosis", wb, wa, "kurtosis", "%14.2f");
  o += row("W4 RTN error ||W - Q(W)|| / ||W||", wb, wa, "w4_rtn_relative_error", "%14.4f");
  o += "   largest channels before (index (max |x|)): " + top_channels(b) + "\n";
  if (a) o += "   largest channels after:                     " + top_channels(*a) + "\n";
  if (st.contains("note")) o += "   " + st["note"].get<std::string>() + "\n";
  return o;
}

std::string stage2(const json& st) {
  std::string o = header(st, "Hessian H = (2/N) sum_s X_s^T X_s");
  o += f("   H is %lld x %lld, from %lld samples (%lld tokens); mean diag(H) %.4g\n", st["size"].get<long long>(),
         st["size"].get<long long>(), st["samples"].get<long long>(), st["tokens"].get<long long>(), d(st, "mean_diag"));
  o += f("   off-diagonal / diagonal Frobenius ratio %.3f (the correlations OBR's compensation uses)\n",
         d(st, "offdiag_over_diag"));
  o += f("   dead columns (H_jj = 0): %lld\n", st["dead_columns"].get<long long>());
  o += f("   damping: percdamp %.3g -> H += %.4g * I\n", d(st, "percdamp"), d(st, "damp"));
  o += f("   eigenvalues of H: min %.4g, max %.4g; condition number %s\n", d(st, "eig_min"), d(st, "eig_max"),
         st["condition_undamped"].is_null() ? "infinite (singular)" : f("%.4g", d(st, "condition_undamped")).c_str());
  o += f("   after damping: min eigenvalue %.4g, condition number %.4g\n", d(st, "eig_min_damped"),
         d(st, "condition_damped"));
  for (const auto& w : st["warnings"]) o += "   warning: " + w.get<std::string>() + "\n";
  return o;
}

std::string stage3(const json& st) {
  std::string o = header(st, "Wanda mask: metric |W_ij| sqrt(scaler_j), prune the smallest per row");
  o += f("   %s: %lld pruned per row; %lld pruned in total (expected %lld); sparsity %.6f\n",
         st["kind"].get<std::string>().c_str(), st["pruned_per_row"].get<long long>(), st["pruned"].get<long long>(),
         st["expected_pruned"].get<long long>(), d(st, "sparsity"));
  if (!st["nm_ok"].is_null()) o += f("   every group satisfies N:M: %s\n", st["nm_ok"].get<bool>() ? "yes" : "NO");
  o += f("   agrees with a plain magnitude mask on %.2f%% of the weights\n",
         100 * d(st, "agreement_with_magnitude_mask"));
  o += f("   weight energy pruned ||W_Z||^2 / ||W||^2: %.4f\n", d(st, "weight_energy_pruned"));
  o += f("   layer loss of the zero layer tr(W H W^T): %.6g\n", d(st, "loss_zero_layer"));
  o += f("   layer loss of W * mask (no compensation): %.6g (relative %.4f)\n", d(st, "loss_masked"),
         d(st, "relative_loss_masked"));
  return o;
}

std::string stage4(const json& st) {
  std::string o = header(st, "pruning compensation: delta = H_II^-1 H_IZ W_Z, per row");
  o += f("   ||delta||_F %.4g (%.3f of ||W * mask||_F), max |delta| %.4g; pruned weights still 0: %s\n",
         d(st, "delta_norm"), d(st, "delta_over_kept_norm"), d(st, "delta_max_abs"),
         st["pruned_weights_nonzero"].get<long long>() == 0 ? "yes" : "NO");
  o += f("   layer loss: %.6g -> %.6g (relative %.4f -> %.4f), %.2fx lower\n", d(st, "loss_before"),
         d(st, "loss_after"), d(st, "relative_loss_before"), d(st, "relative_loss_after"), d(st, "reduction"));
  return o;
}

std::string stage5(const json& st) {
  std::string o = header(st, "quantization error of w': per-row W4 scales, e = w' - Q(w')");
  o += f("   %d levels; mean clip ratio chosen by the search %.3f; mean scale %.4g\n", st["levels"].get<int>(),
         d(st, "mean_clip_ratio"), d(st, "mean_scale"));
  o += f("   ||e||_F %.4g (%.4f of ||w'||_F)\n", d(st, "error_norm"), d(st, "error_over_weight_norm"));
  o += f("   layer loss of Q(w') (prune-compensated, then plain RTN): %.6g (relative %.4f)\n",
         d(st, "loss_rtn_of_w_prime"), d(st, "relative_loss_rtn_of_w_prime"));
  return o;
}

std::string stage6(const json& st) {
  std::string o = header(st, "partition A | B and quantization compensation: delta_B += H_BB^-1 H_BA e_A");
  o += f("   split at column %lld = floor(%.3g * C_in): per row %.1f kept weights in A (RTN), %.1f in B (GPTQ)\n",
         st["split_column"].get<long long>(), d(st, "alpha"), d(st, "kept_A_per_row"), d(st, "kept_B_per_row"));
  o += f("   ||delta_2||_F %.4g; largest change on A %.3g (A is not touched)\n", d(st, "delta2_norm"),
         d(st, "delta2_max_abs_on_A"));
  o += f("   layer loss with A quantized: B as w' %.6g -> B compensated %.6g (relative %.4f -> %.4f), %.2fx lower\n",
         d(st, "loss_A_quantized_B_before"), d(st, "loss_A_quantized_B_after"), d(st, "relative_loss_before"),
         d(st, "relative_loss_after"), d(st, "reduction"));
  return o;
}

std::string stage7(const json& st) {
  std::string o = header(st, "final quantization: RTN on columns < split, GPTQ from there");
  o += f("   %lld RTN columns, %lld GPTQ columns; pruned codes nonzero: %lld; zero weights %.2f%%\n",
         st["rtn_columns"].get<long long>(), st["gptq_columns"].get<long long>(),
         st["pruned_codes_nonzero"].get<long long>(), 100 * d(st, "zero_weights_fraction"));
  std::string h;
  int code = st["lowest_code"].get<int>();
  for (const auto& c : st["kept_code_histogram"]) h += f("%s%d:%lld", h.empty() ? "" : " ", code++, c.get<long long>());
  o += "   codes of the kept weights (code:count): " + h + "\n";
  o += f("   final layer loss OBR-GPTQ %.6g (relative %.4f); OBR-RTN %.6g (relative %.4f)\n", d(st, "loss_obr_gptq"),
         d(st, "relative_loss_obr_gptq"), d(st, "loss_obr_rtn"), d(st, "relative_loss_obr_rtn"));
  return o;
}

std::string stage8(const json& st) {
  std::string o = header(st, "every method on the same layer and H");
  o += f("   %-16s %-16s %14s %10s %9s\n", "method", "mask", "layer loss", "relative", "sparsity");
  for (const auto& r : st["methods"])
    o += f("   %-16s %-16s %14.6g %10.4f %9.4f\n", r["method"].get<std::string>().c_str(),
           r["mask"].get<std::string>().c_str(), d(r, "loss"), d(r, "relative_loss"), d(r, "sparsity"));
  o += f("   solve_linear's OBR-GPTQ equals stage 7 bit for bit: %s\n",
         st["obr_gptq_matches_stage7"].get<bool>() ? "yes" : "NO");
  return o;
}

}  // namespace

std::string narrate_explain(const ExplainResult& r) {
  const json& J = r.json;
  const json& in = J["input"];
  std::string o;
  if (in.contains("model"))
    o += f("obr explain: %s, layer %d %s, W %s, %lld calibration windows x %lld tokens\n",
           in["model"].get<std::string>().c_str(), in["layer"].get<int>(), in["linear"].get<std::string>().c_str(),
           in["shape"].dump().c_str(), in["nsamples"].get<long long>(), in["seqlen"].get<long long>());
  else
    o += f("obr explain: W %s from %s, inputs %s\n", in["shape"].dump().c_str(), in["weight"].get<std::string>().c_str(),
           in["inputs"].get<std::string>().c_str());
  const json& op = J["options"];
  o += f("   mask %s, alpha %.3g, percdamp %.3g, W%d (clip search %s); losses are tr((W - W_hat) H (W - W_hat)^T)\n",
         op["mask"].get<std::string>().c_str(), op["alpha"].get<double>(), op["percdamp"].get<double>(),
         op["wbits"].get<int>(), op["clip_search"].get<bool>() ? "on" : "off");
  o += "   with the undamped H; relative = divided by the loss of the all-zero layer, tr(W H W^T)\n";
  for (const auto& st : J["stages"]) {
    switch (st["stage"].get<int>()) {
      case 1: o += stage1(st); break;
      case 2: o += stage2(st); break;
      case 3: o += stage3(st); break;
      case 4: o += stage4(st); break;
      case 5: o += stage5(st); break;
      case 6: o += stage6(st); break;
      case 7: o += stage7(st); break;
      case 8: o += stage8(st); break;
    }
  }
  if (J.contains("all_layers")) {
    o += "\n== Every linear of the model, relative layer loss per method\n";
    std::string last;
    std::string line;
    for (const auto& e : J["all_layers"]) {
      const std::string key = f("layer %d %-9s", e["layer"].get<int>(), e["linear"].get<std::string>().c_str());
      if (key != last) {
        if (!line.empty()) o += line + "\n";
        line = "   " + key;
        last = key;
      }
      line += f("  %s %.4f", e["method"].get<std::string>().c_str(), e["relative_loss"].get<double>());
    }
    if (!line.empty()) o += line + "\n";
  }
  return o;
}

}  // namespace obr
