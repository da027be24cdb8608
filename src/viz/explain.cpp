#include "viz/explain.h"

#include <lapacke.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>

#include "compress/compressed_model.h"
#include "compress/gptq.h"
#include "compress/hadamard.h"
#include "compress/hessian.h"
#include "compress/masks.h"
#include "compress/obr_solver.h"
#include "compress/pipeline.h"
#include "compress/quantizer.h"
#include "compress/quarot.h"
#include "core/log.h"
#include "io/npy.h"
#include "io/text.h"
#include "tokenizer/tokenizer.h"

namespace obr {

namespace {

using json = nlohmann::json;

// ---- small numerics -----------------------------------------------------------------------

double frob(const Tensor& A) {
  double s = 0;
  const float* a = A.data<float>();
  for (int64_t i = 0; i < A.numel(); ++i) s += double(a[i]) * a[i];
  return std::sqrt(s);
}

double frob_diff(const Tensor& A, const Tensor& B) {
  double s = 0;
  const float* a = A.data<float>();
  const float* b = B.data<float>();
  for (int64_t i = 0; i < A.numel(); ++i) {
    const double d = double(a[i]) - b[i];
    s += d * d;
  }
  return std::sqrt(s);
}

double max_abs(const Tensor& A) {
  double m = 0;
  const float* a = A.data<float>();
  for (int64_t i = 0; i < A.numel(); ++i) m = std::max(m, std::fabs(double(a[i])));
  return m;
}

// Per-channel max |x| and RMS of X [rows, C], and whole-matrix summaries.
struct ChannelStats {
  std::vector<float> chan_max, chan_rms;
  double max_abs = 0, rms = 0, kurtosis = 0, max_over_median = 0;
  std::vector<std::pair<int64_t, double>> top;  // the 5 channels with the largest max |x|
};

ChannelStats channel_stats(const float* X, int64_t rows, int64_t C) {
  ChannelStats s;
  std::vector<double> mx(size_t(C), 0.0), sq(size_t(C), 0.0);
  double s2 = 0, s4 = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < C; ++j) {
      const double v = X[r * C + j], v2 = v * v;
      mx[size_t(j)] = std::max(mx[size_t(j)], std::fabs(v));
      sq[size_t(j)] += v2;
      s2 += v2;
      s4 += v2 * v2;
    }
  const double n = double(rows) * double(C);
  for (int64_t j = 0; j < C; ++j) {
    s.chan_max.push_back(float(mx[size_t(j)]));
    s.chan_rms.push_back(float(std::sqrt(sq[size_t(j)] / double(rows))));
    s.max_abs = std::max(s.max_abs, mx[size_t(j)]);
  }
  s.rms = std::sqrt(s2 / n);
  s.kurtosis = s2 > 0 ? (s4 / n) / ((s2 / n) * (s2 / n)) : 0;
  std::vector<double> sorted = mx;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  s.max_over_median = median > 0 ? s.max_abs / median : 0;
  std::vector<int64_t> idx(static_cast<size_t>(C));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return mx[size_t(a)] > mx[size_t(b)]; });
  for (size_t k = 0; k < std::min<size_t>(5, idx.size()); ++k) s.top.push_back({idx[k], mx[size_t(idx[k])]});
  return s;
}

// ||X - Q_A4(X)|| / ||X|| with the QuaRot activation quantizer (4-bit per token, clip 0.9).
double a4_relative_error(const float* X, int64_t rows, int64_t C) {
  std::vector<float> q(X, X + rows * C);
  fake_quant_act_rows(q.data(), rows, C, ActQuantSpec{});
  double num = 0, den = 0;
  for (int64_t i = 0; i < rows * C; ++i) {
    num += (double(X[i]) - q[size_t(i)]) * (double(X[i]) - q[size_t(i)]);
    den += double(X[i]) * X[i];
  }
  return den > 0 ? std::sqrt(num / den) : 0;
}

// ||W - Q_W4(W)|| / ||W|| with per-row scales (clip search as configured).
double w4_relative_error(const Tensor& W, const WeightQuantSpec& wq) {
  const Tensor Q = quantize_rtn(W, weight_scales(W, wq), wq.bits);
  const double n = frob(W);
  return n > 0 ? frob_diff(W, Q) / n : 0;
}

json stats_json(const ChannelStats& s, double a4) {
  json top = json::array();
  for (const auto& t : s.top) top.push_back({{"channel", t.first}, {"max_abs", t.second}});
  return {{"max_abs", s.max_abs}, {"rms", s.rms}, {"max_over_rms", s.rms > 0 ? s.max_abs / s.rms : 0},
          {"max_over_median_channel_max", s.max_over_median}, {"kurtosis", s.kurtosis},
          {"a4_relative_error", a4}, {"top_channels", top}};
}

json weight_json(const Tensor& W, const WeightQuantSpec& wq) {
  const double m = max_abs(W), rms = frob(W) / std::sqrt(double(W.numel()));
  double s4 = 0;
  const float* w = W.data<float>();
  for (int64_t i = 0; i < W.numel(); ++i) s4 += std::pow(double(w[i]), 4);
  const double k = rms > 0 ? (s4 / double(W.numel())) / std::pow(rms, 4) : 0;
  return {{"max_abs", m}, {"rms", rms}, {"max_over_rms", rms > 0 ? m / rms : 0}, {"kurtosis", k},
          {"w4_rtn_relative_error", w4_relative_error(W, wq)}};
}

// Eigenvalues of a symmetric f32 matrix (ascending), in double through LAPACK dsyevd.
std::vector<double> eigenvalues(const Tensor& H) {
  const int64_t n = H.dim(0);
  std::vector<double> a(static_cast<size_t>(n * n)), w(static_cast<size_t>(n));
  for (int64_t i = 0; i < n * n; ++i) a[size_t(i)] = H.data<float>()[i];
  const lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'N', 'U', lapack_int(n), a.data(), lapack_int(n), w.data());
  OBR_CHECK(info == 0, "explain: eigenvalues of H failed (LAPACK dsyevd info ", info, ")");
  return w;
}

// Every ~stride-th value, for histograms that need not hold millions of points.
std::vector<float> sample_values(const float* x, int64_t n, int64_t max_count) {
  const int64_t stride = std::max<int64_t>(1, n / std::max<int64_t>(1, max_count));
  std::vector<float> out;
  for (int64_t i = 0; i < n; i += stride) out.push_back(x[i]);
  return out;
}

std::vector<float> values(const Tensor& t) { return std::vector<float>(t.data<float>(), t.data<float>() + t.numel()); }

json source(const char* file, const char* function) { return {{"file", file}, {"function", function}}; }

// ---- calibration capture ---------------------------------------------------------------------

// Inputs of each projection of one layer: x[p][s] = sample s's input of projection p, [T, in].
using LayerInputs = std::array<std::vector<std::vector<float>>, kNumProj>;

// Runs layer l on every sample's hidden state xs[s] ([T, H], advanced in place) and records the
// input of every projection (after the online Hadamards, before any activation quantizer).
LayerInputs run_layer_capture(const LlamaModel& m, int l, std::vector<std::vector<float>>& xs, int64_t T,
                              KVCache& scratch) {
  LayerInputs in;
  for (auto& v : in) v.resize(xs.size());
  size_t s_now = 0;
  ProjHook hook = [&](int, Proj p, const float* x, int64_t rows, int64_t cols) {
    in[size_t(p)][s_now].assign(x, x + rows * cols);
  };
  for (size_t s = 0; s < xs.size(); ++s) {
    s_now = s;
    layer_forward(m, l, xs[s].data(), T, scratch.layers[size_t(l)], 0, &hook);
  }
  return in;
}

// The embeddings of the windows, pushed through layers [0, l) in full precision; returns the
// inputs of layer l's projections.
LayerInputs capture_layer(const LlamaModel& m, const std::vector<std::vector<int32_t>>& windows, int l) {
  const int64_t T = int64_t(windows[0].size()), H = m.cfg.hidden_size;
  KVCache scratch = KVCache::make(m.cfg, T);
  std::vector<std::vector<float>> xs(windows.size(), std::vector<float>(size_t(T * H)));
  for (size_t s = 0; s < windows.size(); ++s) embed_tokens(m, windows[s].data(), T, xs[s].data());
  for (int k = 0; k < l; ++k) run_layer_capture(m, k, xs, T, scratch);
  return run_layer_capture(m, l, xs, T, scratch);
}

std::vector<float> concat_rows(const std::vector<std::vector<float>>& xs) {
  std::vector<float> out;
  for (const auto& x : xs) out.insert(out.end(), x.begin(), x.end());
  return out;
}

Tensor dense_weight(const LlamaModel& m, int l, Proj p) {
  auto* d = dynamic_cast<const DenseLinear*>(m.layers[size_t(l)].proj[size_t(p)].get());
  OBR_CHECK(d != nullptr, "explain: layer ", l, " ", proj_name(p), " is not a full-precision linear (compressed model?)");
  return d->weight().clone();
}

// The linear whose input is shared with p and captured first (ALGORITHM.md section 3 groups).
Proj group_first(Proj p) {
  switch (p) {
    case Proj::K:
    case Proj::V: return Proj::Q;
    case Proj::Up: return Proj::Gate;
    default: return p;
  }
}

std::vector<std::vector<int32_t>> calibration(const ExplainOptions& opt, const std::string& tok_dir, json& input) {
  OBR_CHECK(std::filesystem::exists(opt.calib), "explain: calibration text ", opt.calib,
            " not found (run data/fetch_text.sh, or pass --calib FILE)");
  std::string text = read_text_file(opt.calib);
  if (opt.calib_chars > 0 && int64_t(text.size()) > opt.calib_chars) {
    size_t cut = size_t(opt.calib_chars);
    while (cut > 0 && text[cut] != ' ' && text[cut] != '\n') --cut;  // at a word boundary
    text.resize(cut);
  }
  const Tokenizer tok = Tokenizer::from_file(tok_dir);
  const std::vector<int32_t> ids = tok.encode(text, false);
  input["calibration_text"] = opt.calib;
  input["calibration_chars"] = text.size();
  input["calibration_tokens"] = ids.size();
  return calibration_windows(ids, opt.nsamples, opt.seqlen, opt.calib_seed);
}

// "2:4" or "50% unstructured".
std::string mask_desc(const SolveOptions& s) {
  return s.prune_m > 0 ? std::to_string(s.prune_n) + ":" + std::to_string(s.prune_m)
                       : detail::concat(s.sparsity * 100, "% unstructured");
}

}  // namespace

Proj parse_proj(const std::string& name) {
  std::string n = name;
  if (n.size() > 5 && n.substr(n.size() - 5) == "_proj") n = n.substr(0, n.size() - 5);
  for (int i = 0; i < kNumProj; ++i) {
    std::string pn = proj_name(Proj(i));
    if (pn.substr(0, pn.size() - 5) == n) return Proj(i);
  }
  fail("unknown projection '", name, "' (valid: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
}

ExplainResult run_explain(const ExplainOptions& opt) {
  OBR_CHECK(opt.stop_after >= 1 && opt.stop_after <= kExplainStages, "explain: --stage must be in 1..", kExplainStages,
            ", got ", opt.stop_after);
  const bool from_npy = opt.model.empty();
  OBR_CHECK(from_npy != opt.weight_npy.empty(), "explain: give a model directory, or --weight W.npy with --inputs X.npy");
  OBR_CHECK(!from_npy || !opt.inputs_npy.empty(), "explain: --weight needs --inputs X.npy");
  OBR_CHECK(!(from_npy && opt.all_layers), "explain: --all-layers needs a model directory");
  ExplainResult res;
  ExplainData& D = res.data;
  json& J = res.json;
  json input, stages = json::array();
  const SolveOptions& so = opt.solve;
  const MaskSpec ms{so.sparsity, so.prune_n, so.prune_m};

  // ---- inputs: W (rotated when a model is rotated) and the calibration inputs X_s -------------
  Tensor W;                                   // f32 [C_out, C_in], the layer as the solvers see it
  std::vector<std::vector<float>> X;          // [N][T * C_in]
  int64_t T = 0;
  std::unique_ptr<LlamaModel> model;
  std::vector<std::vector<int32_t>> windows;
  json st1;
  if (!from_npy) {
    LoadedModel lm = load_any_model(opt.model);
    OBR_CHECK(!lm.compressed, opt.model, " is a compressed model; explain needs the full-precision one");
    model = std::move(lm.model);
    LlamaModel& m = *model;
    OBR_CHECK(opt.layer >= 0 && opt.layer < m.cfg.num_hidden_layers, "explain: --layer must be in 0..",
              m.cfg.num_hidden_layers - 1, ", got ", opt.layer);
    windows = calibration(opt, lm.tokenizer_dir, input);
    T = opt.seqlen;
    input["model"] = opt.model;
    input["layer"] = opt.layer;
    input["linear"] = proj_name(opt.proj);
    input["nsamples"] = opt.nsamples;
    input["seqlen"] = opt.seqlen;
    input["calib_seed"] = opt.calib_seed;
    input["rotate"] = opt.rotate;
    log_info("explain: ", opt.model, " layer ", opt.layer, " ", proj_name(opt.proj), ", ", opt.nsamples, " x ",
             opt.seqlen, " calibration tokens");
    const Proj src = group_first(opt.proj);
    const Tensor W_orig = dense_weight(m, opt.layer, opt.proj);
    const std::vector<float> X_orig = concat_rows(capture_layer(m, windows, opt.layer)[size_t(src)]);
    if (opt.rotate) rotate_model(m, RotateOptions{opt.rotation_seed, false});
    W = dense_weight(m, opt.layer, opt.proj);
    X = capture_layer(m, windows, opt.layer)[size_t(src)];
    const std::vector<float> X_rot = concat_rows(X);
    const int64_t C = W.dim(1), rows = int64_t(X_orig.size()) / C;
    const ChannelStats b = channel_stats(X_orig.data(), rows, C), a = channel_stats(X_rot.data(), rows, C);
    st1 = {{"applied", opt.rotate},
           {"rows", rows},
           {"channels", C},
           {"activations_before", stats_json(b, a4_relative_error(X_orig.data(), rows, C))},
           {"activations_after", stats_json(a, a4_relative_error(X_rot.data(), rows, C))},
           {"weight_before", weight_json(W_orig, so.wq)},
           {"weight_after", weight_json(W, so.wq)},
           {"note", "before = the checkpoint's layer and its input; after = the rotated model (RMSNorm weights "
                    "fused, random Hadamard Q on the residual stream, online Hadamards)"}};
    D.chan_max_before = b.chan_max;
    D.chan_rms_before = b.chan_rms;
    D.chan_max_after = a.chan_max;
    D.chan_rms_after = a.chan_rms;
    D.x_before = sample_values(X_orig.data(), int64_t(X_orig.size()), 200000);
    D.x_after = sample_values(X_rot.data(), int64_t(X_rot.size()), 200000);
    D.w_before = values(W_orig);
    D.w_after = values(W);
    D.have_rotation = opt.rotate;
  } else {
    W = read_npy(opt.weight_npy).to_f32();
    OBR_CHECK(W.ndim() == 2, "explain: --weight ", opt.weight_npy, " must be 2-D [C_out, C_in], got ",
              shape_str(W.shape()));
    const Tensor Xt = read_npy(opt.inputs_npy).to_f32();
    const int64_t C = W.dim(1);
    OBR_CHECK((Xt.ndim() == 2 || Xt.ndim() == 3) && Xt.dim(-1) == C, "explain: --inputs ", opt.inputs_npy,
              " must be [T, ", C, "] or [S, T, ", C, "], got ", shape_str(Xt.shape()));
    const int64_t S = Xt.ndim() == 3 ? Xt.dim(0) : 1;
    T = Xt.dim(-2);
    for (int64_t s = 0; s < S; ++s)
      X.emplace_back(Xt.data<float>() + s * T * C, Xt.data<float>() + (s + 1) * T * C);
    input = {{"weight", opt.weight_npy}, {"inputs", opt.inputs_npy}, {"nsamples", S}, {"seqlen", T}};
    // No model to rotate: show what a random Hadamard on the input dimension would do
    // (x -> x Q, W -> W Q leaves x W^T unchanged); the later stages use the inputs as given.
    const std::vector<float> X0 = concat_rows(X);
    const int64_t rows = S * T;
    const ChannelStats b = channel_stats(X0.data(), rows, C);
    st1 = {{"applied", false}, {"rows", rows}, {"channels", C},
           {"activations_before", stats_json(b, a4_relative_error(X0.data(), rows, C))},
           {"weight_before", weight_json(W, so.wq)}};
    D.chan_max_before = b.chan_max;
    D.chan_rms_before = b.chan_rms;
    D.x_before = sample_values(X0.data(), int64_t(X0.size()), 200000);
    D.w_before = values(W);
    if (hadamard_supported(C)) {
      std::vector<float> Xr = X0;
      random_hadamard_transform_rows(Xr.data(), rows, C, opt.rotation_seed);
      Tensor Wr = W.clone();
      random_hadamard_transform_rows(Wr.data<float>(), Wr.dim(0), C, opt.rotation_seed);
      const ChannelStats a = channel_stats(Xr.data(), rows, C);
      st1["activations_after"] = stats_json(a, a4_relative_error(Xr.data(), rows, C));
      st1["weight_after"] = weight_json(Wr, so.wq);
      st1["note"] = "after = x Q and W Q with a random Hadamard Q (what QuaRot would do); stages 2-8 use the "
                    "inputs as given";
      D.chan_max_after = a.chan_max;
      D.chan_rms_after = a.chan_rms;
      D.x_after = sample_values(Xr.data(), int64_t(Xr.size()), 200000);
      D.w_after = values(Wr);
      D.have_rotation = true;
    } else {
      st1["note"] = detail::concat("C_in = ", C, " has no Hadamard transform; stages 2-8 use the inputs as given");
    }
  }
  const int64_t C_out = W.dim(0), C = W.dim(1);
  D.C_out = C_out;
  D.C_in = C;
  D.W = W;
  input["shape"] = {C_out, C};
  J["input"] = input;
  J["options"] = {{"mask", mask_desc(so)}, {"sparsity", so.prune_m > 0 ? 0.0 : so.sparsity},
                  {"nm", so.prune_m > 0 ? detail::concat(so.prune_n, ":", so.prune_m) : ""},
                  {"alpha", so.alpha}, {"percdamp", so.percdamp}, {"blocksize", so.blocksize},
                  {"wbits", so.wq.bits}, {"clip_search", so.wq.clip_search}};
  st1["stage"] = 1;
  st1["name"] = "rotation";
  st1["sources"] = {from_npy ? source("src/compress/hadamard.cpp", "random_hadamard_transform_rows")
                             : source("src/compress/quarot.cpp", "rotate_model"),
                    from_npy ? source("src/io/npy.cpp", "read_npy") : source("src/model/llama.cpp", "layer_forward"),
                    source("src/compress/quantizer.cpp", "fake_quant_act_rows")};
  stages.push_back(st1);
  auto done = [&](int stage) {
    if (opt.stop_after > stage) return false;
    J["stages"] = stages;
    return true;
  };
  if (done(1)) return res;

  // ---- stage 2: H --------------------------------------------------------------------------
  HessianAccumulator acc(C);
  for (const auto& x : X) acc.add(x.data(), int64_t(x.size()) / C);
  const Tensor H = acc.H(), scaler = acc.scaler();
  Tensor Wd = W.clone();
  std::vector<std::string> warnings;
  const PreparedHessian ph = prepare_hessian(H, &Wd, so.percdamp, 0.0, &warnings);
  {
    const std::vector<double> ev = eigenvalues(H), evd = eigenvalues(ph.H);
    double tr = 0, off = 0, diag2 = 0;
    for (int64_t i = 0; i < C; ++i)
      for (int64_t j = 0; j < C; ++j) {
        const double h = H.data<float>()[i * C + j];
        if (i == j) {
          tr += h;
          diag2 += h * h;
        } else {
          off += h * h;
        }
      }
    stages.push_back({{"stage", 2},
                      {"name", "hessian"},
                      {"size", C},
                      {"samples", acc.nsamples()},
                      {"tokens", acc.nsamples() * T},
                      {"mean_diag", tr / double(C)},
                      {"offdiag_over_diag", diag2 > 0 ? std::sqrt(off / diag2) : 0},
                      {"dead_columns", ph.dead.size()},
                      {"percdamp", ph.percdamp},
                      {"damp", ph.damp},
                      {"eig_min", ev.front()},
                      {"eig_max", ev.back()},
                      {"condition_undamped", ev.front() > 0 ? ev.back() / ev.front() : HUGE_VAL},
                      {"eig_min_damped", evd.front()},
                      {"condition_damped", evd.back() / evd.front()},
                      {"warnings", warnings},
                      {"sources", {source("src/compress/hessian.cpp", "HessianAccumulator::add"),
                                   source("src/compress/hessian.cpp", "prepare_hessian")}}});
    if (!std::isfinite(stages.back()["condition_undamped"].get<double>())) stages.back()["condition_undamped"] = nullptr;
  }
  if (done(2)) return res;

  // Reference loss: tr(W H W^T), the loss of the all-zero layer (relative losses divide by it).
  const double loss_zero = layer_loss(W, Tensor::zeros(W.shape()), H);
  auto rel = [&](double l) { return loss_zero > 0 ? l / loss_zero : 0.0; };

  // ---- stage 3: the Wanda mask ----------------------------------------------------------------
  const Tensor metric = wanda_metric(Wd, scaler);
  const Tensor mask = mask_from_metric(metric, ms);
  const Tensor W_bar = apply_mask(Wd, mask);
  D.mask = mask;
  D.W_bar = W_bar;
  {
    const Tensor mag = magnitude_mask(Wd, ms);
    int64_t agree = 0, pruned = 0;
    const uint8_t* a = mask.data<uint8_t>();
    const uint8_t* b = mag.data<uint8_t>();
    for (int64_t i = 0; i < mask.numel(); ++i) {
      agree += a[i] == b[i];
      pruned += a[i] == 0;
    }
    const int64_t per_row = ms.nm() ? C / ms.prune_m * ms.prune_n : int64_t(double(C) * ms.sparsity);
    const double fw = frob(Wd), fwb = frob(W_bar);
    const double loss_bar = layer_loss(W, W_bar, H);
    stages.push_back({{"stage", 3},
                      {"name", "mask"},
                      {"kind", ms.nm() ? "N:M" : "unstructured"},
                      {"pruned_per_row", per_row},
                      {"pruned", pruned},
                      {"expected_pruned", per_row * C_out},
                      {"sparsity", mask_sparsity(mask)},
                      {"nm_ok", ms.nm() ? json(mask_is_nm(mask, ms.prune_n, ms.prune_m)) : json(nullptr)},
                      {"agreement_with_magnitude_mask", double(agree) / double(mask.numel())},
                      {"weight_energy_pruned", fw > 0 ? 1.0 - (fwb * fwb) / (fw * fw) : 0},
                      {"loss_zero_layer", loss_zero},
                      {"loss_masked", loss_bar},
                      {"relative_loss_masked", rel(loss_bar)},
                      {"sources", {source("src/compress/masks.cpp", "wanda_metric"),
                                   source("src/compress/masks.cpp", "mask_from_metric")}}});
  }
  if (done(3)) return res;

  // ---- stage 4: pruning compensation --------------------------------------------------------------
  const Tensor scales = weight_scales(W, so.wq);  // from the dense W, as solve_linear does
  const Tensor W_prime =
      obr_restore(Wd, mask, ph.H, scales, so.wq.bits, so.alpha, ph.damp, false, &warnings);
  D.W_prime = W_prime;
  {
    const double loss_bar = layer_loss(W, W_bar, H), loss_p = layer_loss(W, W_prime, H);
    int64_t pruned_nonzero = 0;
    for (int64_t i = 0; i < mask.numel(); ++i)
      pruned_nonzero += mask.data<uint8_t>()[i] == 0 && W_prime.data<float>()[i] != 0.0f;
    stages.push_back({{"stage", 4},
                      {"name", "prune-compensation"},
                      {"delta_norm", frob_diff(W_prime, W_bar)},
                      {"delta_over_kept_norm", frob(W_bar) > 0 ? frob_diff(W_prime, W_bar) / frob(W_bar) : 0},
                      {"delta_max_abs", [&] {
                         double m = 0;
                         for (int64_t i = 0; i < W_bar.numel(); ++i)
                           m = std::max(m, std::fabs(double(W_prime.data<float>()[i]) - W_bar.data<float>()[i]));
                         return m;
                       }()},
                      {"pruned_weights_nonzero", pruned_nonzero},
                      {"loss_before", loss_bar},
                      {"loss_after", loss_p},
                      {"relative_loss_before", rel(loss_bar)},
                      {"relative_loss_after", rel(loss_p)},
                      {"reduction", loss_p > 0 ? loss_bar / loss_p : 0},
                      {"sources", {source("src/compress/obr_solver.cpp", "obr_restore"),
                                   source("src/compress/solve_linear.cpp", "layer_loss")}}});
  }
  if (done(4)) return res;

  // ---- stage 5: quantization error of w' ------------------------------------------------------
  const Tensor Q_prime = quantize_rtn(W_prime, scales, so.wq.bits);
  {
    double clip_sum = 0;
    const float maxq = float(weight_maxq(so.wq.bits));
    for (int64_t r = 0; r < C_out; ++r) {
      float xmax = 0;
      for (int64_t j = 0; j < C; ++j) xmax = std::max(xmax, std::fabs(W.data<float>()[r * C + j]));
      clip_sum += xmax > 0 ? scales.data<float>()[r] * maxq / std::max(xmax, 1e-5f) : 1.0;
    }
    const double loss_q = layer_loss(W, Q_prime, H);
    stages.push_back({{"stage", 5},
                      {"name", "quantize"},
                      {"levels", 1 << so.wq.bits},
                      {"mean_clip_ratio", clip_sum / double(C_out)},
                      {"mean_scale", [&] {
                         double s = 0;
                         for (int64_t r = 0; r < C_out; ++r) s += scales.data<float>()[r];
                         return s / double(C_out);
                       }()},
                      {"error_norm", frob_diff(W_prime, Q_prime)},
                      {"error_over_weight_norm", frob(W_prime) > 0 ? frob_diff(W_prime, Q_prime) / frob(W_prime) : 0},
                      {"loss_rtn_of_w_prime", loss_q},
                      {"relative_loss_rtn_of_w_prime", rel(loss_q)},
                      {"sources", {source("src/compress/quantizer.cpp", "weight_scales"),
                                   source("src/compress/quantizer.cpp", "quantize_rtn")}}});
  }
  if (done(5)) return res;

  // ---- stage 6: partition A | B and the second compensation -------------------------------------
  const int64_t s_col = int64_t(std::floor(so.alpha * double(C)));
  const Tensor W_2 = obr_restore(Wd, mask, ph.H, scales, so.wq.bits, so.alpha, ph.damp, true, &warnings);
  D.W_2 = W_2;
  {
    int64_t nA = 0, nB = 0;
    for (int64_t r = 0; r < C_out; ++r)
      for (int64_t j = 0; j < C; ++j)
        if (mask.data<uint8_t>()[r * C + j]) (j < s_col ? nA : nB)++;
    // A quantized, B as it was (w'_B) and after the second compensation (w''_B).
    Tensor before = W_prime.clone(), after = W_2.clone();
    double moved_A = 0;
    for (int64_t r = 0; r < C_out; ++r)
      for (int64_t j = 0; j < s_col; ++j) {
        const int64_t i = r * C + j;
        before.data<float>()[i] = Q_prime.data<float>()[i];
        after.data<float>()[i] = Q_prime.data<float>()[i];
        moved_A = std::max(moved_A, std::fabs(double(W_2.data<float>()[i]) - W_prime.data<float>()[i]));
      }
    const double lb = layer_loss(W, before, H), la = layer_loss(W, after, H);
    stages.push_back({{"stage", 6},
                      {"name", "partition"},
                      {"split_column", s_col},
                      {"alpha", so.alpha},
                      {"kept_A_per_row", double(nA) / double(C_out)},
                      {"kept_B_per_row", double(nB) / double(C_out)},
                      {"delta2_norm", frob_diff(W_2, W_prime)},
                      {"delta2_max_abs_on_A", moved_A},
                      {"loss_A_quantized_B_before", lb},
                      {"loss_A_quantized_B_after", la},
                      {"relative_loss_before", rel(lb)},
                      {"relative_loss_after", rel(la)},
                      {"reduction", la > 0 ? lb / la : 0},
                      {"sources", {source("src/compress/obr_solver.cpp", "obr_restore")}}});
  }
  if (done(6)) return res;

  // ---- stage 7: final quantization ------------------------------------------------------------
  ObrOptions oo;
  oo.alpha = so.alpha;
  oo.blocksize = so.blocksize;
  oo.bits = so.wq.bits;
  oo.reference_quirks = so.reference_quirks;
  Tensor W_hat, codes, W_hat_rtn, codes_rtn;
  oo.gptq_final = true;
  obr_quantize(W_2, mask, ph.H, scales, oo, W_hat, codes);
  oo.gptq_final = false;
  obr_quantize(W_2, mask, ph.H, scales, oo, W_hat_rtn, codes_rtn);
  D.W_hat = W_hat;
  const double loss_final = layer_loss(W, W_hat, H), loss_final_rtn = layer_loss(W, W_hat_rtn, H);
  {
    std::vector<int64_t> hist(size_t(1) << so.wq.bits, 0);
    int64_t pruned_code_nonzero = 0, zero_weights = 0;
    const int lo = -(weight_maxq(so.wq.bits) + 1);
    for (int64_t i = 0; i < codes.numel(); ++i) {
      const int c = codes.data<int8_t>()[i];
      if (mask.data<uint8_t>()[i]) hist[size_t(c - lo)]++;
      else pruned_code_nonzero += c != 0;
      zero_weights += W_hat.data<float>()[i] == 0.0f;
    }
    stages.push_back({{"stage", 7},
                      {"name", "final"},
                      {"loss_obr_gptq", loss_final},
                      {"loss_obr_rtn", loss_final_rtn},
                      {"relative_loss_obr_gptq", rel(loss_final)},
                      {"relative_loss_obr_rtn", rel(loss_final_rtn)},
                      {"rtn_columns", s_col},
                      {"gptq_columns", C - s_col},
                      {"kept_code_histogram", hist},
                      {"lowest_code", lo},
                      {"pruned_codes_nonzero", pruned_code_nonzero},
                      {"zero_weights_fraction", double(zero_weights) / double(W_hat.numel())},
                      {"sources", {source("src/compress/obr_solver.cpp", "obr_quantize"),
                                   source("src/compress/gptq.cpp", "gptq_sweep")}}});
  }
  if (done(7)) return res;

  // ---- stage 8: every method on the same H ----------------------------------------------------
  {
    json rows = json::array();
    double obr_loss = -1;
    for (Method meth : {Method::RTN, Method::GPTQ, Method::WandaRTN, Method::WandaGPTQ, Method::SparseGPTGPTQ,
                        Method::OBR_RTN, Method::OBR_GPTQ}) {
      SolveOptions o = so;
      o.method = meth;
      const bool quant_only = meth == Method::RTN || meth == Method::GPTQ;
      if (quant_only) {
        o.sparsity = 0;
        o.prune_n = o.prune_m = 0;
      }
      const SolveResult r = solve_linear(W, H, scaler, o);
      if (meth == Method::OBR_GPTQ) obr_loss = r.loss;
      rows.push_back({{"method", method_name(meth)},
                      {"mask", quant_only ? std::string("dense") : mask_desc(so)},
                      {"loss", r.loss},
                      {"relative_loss", rel(r.loss)},
                      {"sparsity", mask_sparsity(r.mask)},
                      {"seconds", r.seconds}});
    }
    stages.push_back({{"stage", 8},
                      {"name", "compare"},
                      {"methods", rows},
                      {"obr_gptq_matches_stage7", obr_loss == loss_final},
                      {"sources", {source("src/compress/solve_linear.cpp", "solve_linear")}}});
  }
  J["stages"] = stages;

  // ---- optional: every method on every linear of the model ------------------------------------
  if (opt.all_layers) {
    LlamaModel& m = *model;
    const int64_t Hd = m.cfg.hidden_size;
    KVCache scratch = KVCache::make(m.cfg, T);
    std::vector<std::vector<float>> xs(windows.size(), std::vector<float>(size_t(T * Hd)));
    for (size_t s = 0; s < windows.size(); ++s) embed_tokens(m, windows[s].data(), T, xs[s].data());
    json all = json::array();
    const Method methods[] = {Method::RTN, Method::GPTQ, Method::WandaGPTQ, Method::SparseGPTGPTQ, Method::OBR_RTN,
                              Method::OBR_GPTQ};
    for (int l = 0; l < m.cfg.num_hidden_layers; ++l) {
      const LayerInputs in = run_layer_capture(m, l, xs, T, scratch);
      log_info("explain: all layers: layer ", l + 1, "/", m.cfg.num_hidden_layers);
      for (int p = 0; p < kNumProj; ++p) {
        const auto& xp = in[size_t(group_first(Proj(p)))];
        const Tensor Wl = dense_weight(m, l, Proj(p));
        HessianAccumulator a(Wl.dim(1));
        for (const auto& x : xp) a.add(x.data(), T);
        const Tensor Hl = a.H(), sl = a.scaler();
        const double z = layer_loss(Wl, Tensor::zeros(Wl.shape()), Hl);
        for (Method meth : methods) {
          SolveOptions o = so;
          o.method = meth;
          if (meth == Method::RTN || meth == Method::GPTQ) {
            o.sparsity = 0;
            o.prune_n = o.prune_m = 0;
          }
          const SolveResult r = solve_linear(Wl, Hl, sl, o);
          const double rl = z > 0 ? r.loss / z : 0;
          all.push_back({{"layer", l}, {"linear", proj_name(Proj(p))}, {"method", method_name(meth)},
                         {"loss", r.loss}, {"relative_loss", rl}});
          D.layer_losses.push_back({l, proj_name(Proj(p)), method_name(meth), r.loss, rl});
        }
      }
    }
    J["all_layers"] = all;
  }
  return res;
}

}  // namespace obr
