#include "compress/solve_linear.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "compress/gptq.h"
#include "compress/hessian.h"
#include "compress/masks.h"
#include "compress/obr_solver.h"
#include "compress/sparsegpt.h"
#include "core/log.h"
#include "core/parallel.h"

namespace obr {

namespace {

struct MethodName {
  Method m;
  const char* name;
};
constexpr MethodName kMethods[] = {
    {Method::RTN, "rtn"},           {Method::GPTQ, "gptq"},
    {Method::WandaRTN, "wanda-rtn"}, {Method::WandaGPTQ, "wanda-gptq"},
    {Method::SparseGPTGPTQ, "sparsegpt-gptq"}, {Method::OBR_RTN, "obr-rtn"},
    {Method::OBR_GPTQ, "obr-gptq"},
};

void check_inputs(const Tensor& W, const Tensor& H, const Tensor& scaler, const SolveOptions& opt) {
  OBR_CHECK(W.defined() && W.ndim() == 2 && W.dtype() == DType::F32 && W.is_contiguous(),
            "solve_linear: W must be a contiguous 2-D F32 tensor [C_out, C_in], got ",
            W.defined() ? shape_str(W.shape()) : "nothing", " ", dtype_name(W.dtype()));
  const int64_t C = W.dim(1);
  OBR_CHECK(W.dim(0) > 0 && C > 0, "solve_linear: W is empty, shape ", shape_str(W.shape()));
  OBR_CHECK(H.defined() && H.ndim() == 2 && H.dtype() == DType::F32 && H.dim(0) == C && H.dim(1) == C,
            "solve_linear: H must be F32 [", C, ", ", C, "] to match W ", shape_str(W.shape()), ", got ",
            H.defined() ? shape_str(H.shape()) : "nothing", " ", dtype_name(H.dtype()));
  OBR_CHECK(!scaler.defined() || (scaler.dtype() == DType::F32 && scaler.numel() == C),
            "solve_linear: scaler must be F32 [", C, "], got ", shape_str(scaler.shape()));
  const float* w = W.data<float>();
  for (int64_t i = 0; i < W.numel(); ++i)
    OBR_CHECK(std::isfinite(w[i]), "solve_linear: W[", i / C, ", ", i % C, "] = ", w[i], " is not finite");
  const float* h = H.data<float>();
  for (int64_t i = 0; i < H.numel(); ++i)
    OBR_CHECK(std::isfinite(h[i]), "solve_linear: H[", i / C, ", ", i % C, "] = ", h[i], " is not finite");
  OBR_CHECK(opt.alpha >= 0.0 && opt.alpha <= 1.0, "solve_linear: alpha must be in [0, 1], got ", opt.alpha);
  OBR_CHECK(opt.blocksize > 0, "solve_linear: blocksize must be positive, got ", opt.blocksize);
  OBR_CHECK(opt.percdamp >= 0.0, "solve_linear: percdamp must be >= 0, got ", opt.percdamp);
  OBR_CHECK(opt.wq.bits >= 2 && opt.wq.bits <= 8, "solve_linear: weight bits must be in 2..8, got ", opt.wq.bits);
  check_mask_spec(MaskSpec{opt.sparsity, opt.prune_n, opt.prune_m}, C);
}

// diag(H) / 2 = (1/N) sum_s ||X_s[:, j]||^2 when the scaler was not given.
Tensor scaler_or_diag(const Tensor& scaler, const Tensor& H) {
  if (scaler.defined()) return scaler;
  const int64_t C = H.dim(0);
  Tensor s = Tensor::zeros({C});
  for (int64_t j = 0; j < C; ++j) s.data<float>()[j] = std::max(0.0f, H.data<float>()[j * C + j] * 0.5f);
  log_info("solve_linear: no Wanda scaler given; using diag(H) / 2");
  return s;
}

}  // namespace

Method parse_method(const std::string& name) {
  std::string valid;
  for (const auto& m : kMethods) {
    if (name == m.name) return m.m;
    valid += valid.empty() ? "" : ", ";
    valid += m.name;
  }
  fail("unknown method '", name, "' (valid: ", valid, ")");
}

const char* method_name(Method m) {
  for (const auto& k : kMethods)
    if (k.m == m) return k.name;
  return "?";
}

double layer_loss(const Tensor& W, const Tensor& W_hat, const Tensor& H) {
  OBR_CHECK(W.defined() && W_hat.defined() && W.dtype() == DType::F32 && W_hat.dtype() == DType::F32 &&
                W.ndim() == 2 && W.shape() == W_hat.shape(),
            "layer_loss: W and W_hat must be F32 of one 2-D shape, got ", shape_str(W.shape()), " and ",
            shape_str(W_hat.shape()));
  const int64_t rows = W.dim(0), C = W.dim(1);
  OBR_CHECK(H.defined() && H.dtype() == DType::F32 && H.shape() == Shape({C, C}), "layer_loss: H must be F32 [", C,
            ", ", C, "], got ", H.defined() ? shape_str(H.shape()) : "nothing");
  std::vector<double> Hd(size_t(C * C));
  for (int64_t i = 0; i < C * C; ++i) Hd[size_t(i)] = H.data<float>()[i];
  const float* w = W.data<float>();
  const float* q = W_hat.data<float>();
  std::vector<double> per_row(size_t(rows), 0.0);
  constexpr int64_t kPanel = 64;
  const int64_t panels = (rows + kPanel - 1) / kPanel;
  SingleThreadedBlas st;
  parallel_for_dynamic(panels, [&](int64_t p) {
    const int64_t r0 = p * kPanel, r1 = std::min(rows, r0 + kPanel), nr = r1 - r0;
    std::vector<double> D(size_t(nr * C)), DH(size_t(nr * C));
    for (int64_t i = 0; i < nr * C; ++i) D[size_t(i)] = double(w[r0 * C + i]) - double(q[r0 * C + i]);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(nr), int(C), int(C), 1.0, D.data(), int(C), Hd.data(),
                int(C), 0.0, DH.data(), int(C));
    for (int64_t r = 0; r < nr; ++r) {
      double acc = 0.0;
      for (int64_t j = 0; j < C; ++j) acc += D[size_t(r * C + j)] * DH[size_t(r * C + j)];
      per_row[size_t(r0 + r)] = acc;
    }
  });
  double loss = 0.0;
  for (double v : per_row) loss += v;
  return loss;
}

SolveResult solve_linear(const Tensor& W, const Tensor& H, const Tensor& scaler, const SolveOptions& opt) {
  check_inputs(W, H, scaler, opt);
  Timer timer;
  const int64_t rows = W.dim(0), C = W.dim(1);
  const int bits = opt.wq.bits;
  const MaskSpec ms{opt.sparsity, opt.prune_n, opt.prune_m};
  const bool sparse = ms.nm() || opt.sparsity > 0.0;
  SolveResult res;
  res.scales = weight_scales(W, opt.wq);  // from the dense W, before the dead-column step

  switch (opt.method) {
    case Method::RTN:
    case Method::WandaRTN: {
      res.mask = opt.method == Method::WandaRTN ? wanda_mask(W, scaler_or_diag(scaler, H), ms)
                                                : (sparse ? magnitude_mask(W, ms) : dense_mask(rows, C));
      res.W_hat = quantize_rtn(apply_mask(W, res.mask), res.scales, bits, &res.codes);
      break;
    }
    case Method::GPTQ:
    case Method::WandaGPTQ: {
      Tensor Wd = W.clone();
      PreparedHessian ph = prepare_hessian(H, &Wd, opt.percdamp, 0.0, &res.warnings);
      res.percdamp = ph.percdamp;
      res.mask = opt.method == Method::WandaGPTQ ? wanda_mask(Wd, scaler_or_diag(scaler, H), ms)
                                                 : (sparse ? magnitude_mask(Wd, ms) : dense_mask(rows, C));
      const Tensor U = gptq_inverse_factor(ph.H);
      res.W_hat = Tensor::zeros({rows, C});
      res.codes = Tensor::zeros({rows, C}, DType::I8);
      gptq_sweep(apply_mask(Wd, res.mask), U, res.scales, bits, res.mask, opt.blocksize, 0, res.W_hat, res.codes);
      break;
    }
    case Method::SparseGPTGPTQ: {
      SparseGptOptions so;
      so.mask = ms;
      so.bits = bits;
      so.blocksize = opt.blocksize;
      so.percdamp = opt.percdamp;
      SparseGptOutput out = sparsegpt_gptq(W, H, res.scales, so);
      res.W_hat = out.W_hat;
      res.codes = out.codes;
      res.mask = out.mask;
      res.percdamp = out.percdamp;
      res.warnings = out.warnings;
      break;
    }
    case Method::OBR_RTN:
    case Method::OBR_GPTQ: {
      Tensor Wd = W.clone();
      PreparedHessian ph = prepare_hessian(H, &Wd, opt.percdamp, 0.0, &res.warnings);
      res.percdamp = ph.percdamp;
      res.mask = wanda_mask(Wd, scaler_or_diag(scaler, H), ms);
      const double t_prep = timer.seconds();
      const Tensor Wp =
          obr_restore(Wd, res.mask, ph.H, res.scales, bits, opt.alpha, ph.damp, true, &res.warnings);
      const double t_restore = timer.seconds();
      ObrOptions oo;
      oo.alpha = opt.alpha;
      oo.blocksize = opt.blocksize;
      oo.bits = bits;
      oo.gptq_final = opt.method == Method::OBR_GPTQ;
      oo.reference_quirks = opt.reference_quirks;
      obr_quantize(Wp, res.mask, ph.H, res.scales, oo, res.W_hat, res.codes);
      log_debug("solve_linear ", method_name(opt.method), " ", shape_str(W.shape()), ": scales, H and mask ", t_prep,
               " s, restoration ", t_restore - t_prep, " s, final quantization ", timer.seconds() - t_restore, " s");
      break;
    }
  }
  res.seconds = timer.seconds();
  res.loss = layer_loss(W, res.W_hat, H);
  return res;
}

}  // namespace obr
