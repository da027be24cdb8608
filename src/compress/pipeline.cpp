#include "compress/pipeline.h"

#include <algorithm>
#include <cmath>

#include "compress/checkpoint.h"
#include "compress/hessian.h"
#include "core/log.h"
#include "core/rng.h"

namespace obr {

std::vector<std::vector<int32_t>> calibration_windows(const std::vector<int32_t>& ids, int64_t nsamples, int64_t seqlen,
                                                      uint64_t seed) {
  OBR_CHECK(nsamples >= 1 && seqlen >= 2, "calibration needs nsamples >= 1 and seqlen >= 2, got ", nsamples, " and ", seqlen);
  OBR_CHECK(int64_t(ids.size()) > seqlen, "calibration text has ", ids.size(), " tokens, fewer than one window of ", seqlen,
            " + 1; use a longer --calib text or a smaller --seqlen");
  Rng rng(seed);
  std::vector<std::vector<int32_t>> out;
  for (int64_t s = 0; s < nsamples; ++s) {
    const int64_t i = int64_t(rng.below(uint64_t(int64_t(ids.size()) - seqlen)));
    out.emplace_back(ids.begin() + i, ids.begin() + i + seqlen);
  }
  return out;
}

void enable_quantized_runtime(Runtime& rt, const CompressOptions& opt) {
  if (opt.abits < 16) {
    ActQuantSpec a = opt.act;
    a.bits = opt.abits;
    rt.quant_act = [a](float* x, int64_t rows, int64_t cols) { fake_quant_act_rows(x, rows, cols, a); };
  } else {
    rt.quant_act = nullptr;
  }
  if (opt.kvbits < 16) {
    KVQuantSpec k = opt.kv;
    k.bits = opt.kvbits;
    rt.quant_kv = [k](float* x, int64_t rows, int64_t cols, int64_t head_dim) {
      fake_quant_kv(x, rows, cols, k.group > 0 ? k.group : head_dim, k);
    };
  } else {
    rt.quant_kv = nullptr;
  }
}

// The linears compressed together: they share one input, hence one H (ALGORITHM.md section 3).
static const std::vector<std::vector<Proj>> kGroups = {
    {Proj::K, Proj::V, Proj::Q}, {Proj::O}, {Proj::Up, Proj::Gate}, {Proj::Down}};

CompressReport compress_model(LlamaModel& m, const std::vector<std::vector<int32_t>>& calib, const CompressOptions& opt,
                              const std::function<void(int, double)>& on_layer, Checkpoint* checkpoint) {
  const ModelConfig& c = m.cfg;
  const int64_t H = c.hidden_size, N = int64_t(calib.size());
  OBR_CHECK(N > 0, "compress: no calibration samples");
  const int64_t T = int64_t(calib[0].size());
  Timer total;
  CompressReport rep;

  // Calibration runs the FP activations: quantizers off, online Hadamards as the rotation set them.
  Runtime saved = m.rt;
  m.rt.quant_act = nullptr;
  m.rt.quant_kv = nullptr;

  // Layer inputs of every sample, [N][T, H]: the embeddings, or where a checkpoint left off.
  std::vector<std::vector<float>> xs(size_t(N), std::vector<float>(size_t(T * H)));
  int first = 0;
  if (checkpoint && checkpoint->layers_done() > 0) {
    first = checkpoint->restore(m, rep, xs);
    log_info("resumed after layer ", first, "/", c.num_hidden_layers, " from ", checkpoint->dir());
  } else {
    for (int64_t s = 0; s < N; ++s) embed_tokens(m, calib[size_t(s)].data(), T, xs[size_t(s)].data());
  }
  KVCache scratch = KVCache::make(c, T);

  for (int l = first; l < c.num_hidden_layers; ++l) {
    Timer lt;
    DecoderLayer& L = m.layers[size_t(l)];
    for (const auto& group : kGroups) {
      // 1. capture the group's input on every sample and accumulate H and the Wanda statistic
      Timer ct;
      // The group's linears share one input: capture it at the first of them the forward pass
      // reaches (Proj is in execution order) and stop the pass there.
      const Proj first = *std::min_element(group.begin(), group.end());
      HessianAccumulator acc(L[first].in_features(), opt.wanda_quirk);
      ProjHook hook = [&](int, Proj p, const float* x, int64_t rows, int64_t) {
        if (p == first) acc.add(x, rows);
      };
      std::vector<float> h(size_t(T * H));
      for (int64_t s = 0; s < N; ++s) {
        h = xs[size_t(s)];
        layer_forward(m, l, h.data(), T, scratch.layers[size_t(l)], 0, &hook, int(first));
      }
      Tensor Hm = acc.H(), scaler = acc.scaler();
      rep.calib_seconds += ct.seconds();

      // 2. solve each linear of the group and put its compressed weights in place
      for (Proj p : group) {
        auto* d = dynamic_cast<DenseLinear*>(L.proj[size_t(p)].get());
        OBR_CHECK(d != nullptr, "layer ", l, " ", proj_name(p), " is not a full-precision linear");
        SolveResult r = solve_linear(d->weight(), Hm, scaler, opt.solve);
        rep.solve_seconds += r.seconds;
        // Relative loss: ||X (W - W_hat)^T||^2 / ||X W^T||^2 (> 1 means worse than a zero layer).
        const double rel = r.loss / std::max(layer_loss(d->weight(), Tensor::zeros(d->weight().shape()), Hm), 1e-30);
        if (!std::isfinite(r.loss) || rel > 1.0)
          log_warn("layer ", l, " ", proj_name(p), ": layer loss ", r.loss, " (relative ", rel,
                   ") is exploding; check the calibration text and --percdamp");
        LinearRecord rec;
        rec.layer = l;
        rec.proj = p;
        rec.codes = r.codes;
        rec.scales = r.scales;
        rec.mask = r.mask;
        rec.loss = r.loss;
        rec.seconds = r.seconds;
        rep.linears.push_back(std::move(rec));
        Tensor bias = d->has_bias() ? d->bias() : Tensor();
        L.proj[size_t(p)] = std::make_unique<DenseLinear>(std::move(r.W_hat), std::move(bias));
      }
    }
    // 3. the compressed layer produces the next layer's inputs
    for (int64_t s = 0; s < N; ++s) layer_forward(m, l, xs[size_t(s)].data(), T, scratch.layers[size_t(l)], 0);

    double layer_loss = 0;
    std::string parts;
    for (const auto& r : rep.linears)
      if (r.layer == l) {
        layer_loss += r.loss;
        parts += std::string(" ") + proj_name(r.proj) + "=" + detail::concat(r.loss);
      }
    log_info("layer ", l + 1, "/", c.num_hidden_layers, "  ", lt.seconds(), " s  loss ", layer_loss, "  (", parts.substr(1),
             ")");
    if (checkpoint) checkpoint->save_layer(l, m, rep, xs);
    if (on_layer) on_layer(l, lt.seconds());
  }
  m.rt = saved;
  rep.seconds = total.seconds();
  return rep;
}

}  // namespace obr
