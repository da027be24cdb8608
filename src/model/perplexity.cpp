#include "model/perplexity.h"

#include <cmath>

#include "core/log.h"

namespace obr {

double window_nll(const float* logits, const int32_t* ids, int64_t L, int64_t V) {
  double total = 0;
  for (int64_t t = 0; t + 1 < L; ++t) {
    const float* z = logits + t * V;
    float mx = z[0];
    for (int64_t v = 1; v < V; ++v) mx = std::max(mx, z[v]);
    double s = 0;  // exp in float (relative error ~1e-7 per term), summed in double
    for (int64_t v = 0; v < V; ++v) s += double(std::exp(z[v] - mx));
    total += (double(mx) + std::log(s)) - double(z[ids[t + 1]]);
  }
  return total / double(L - 1);
}

PerplexityResult perplexity(const LlamaModel& m, const std::vector<int32_t>& ids, int64_t seqlen, int64_t max_windows,
                            const std::function<void(int64_t, int64_t, double)>& progress) {
  OBR_CHECK(seqlen >= 2, "perplexity: seqlen must be at least 2, got ", seqlen);
  int64_t n = int64_t(ids.size()) / seqlen;
  OBR_CHECK(n >= 1, "perplexity: the text has ", ids.size(), " tokens, fewer than one window of ", seqlen,
            " (use a longer text or a smaller --seqlen)");
  if (max_windows > 0 && max_windows < n) n = max_windows;
  Timer timer;
  PerplexityResult r;
  r.seqlen = seqlen;
  double sum = 0;
  KVCache cache = KVCache::make(m.cfg, seqlen);
  for (int64_t w = 0; w < n; ++w) {
    cache.len = 0;
    const int32_t* win = ids.data() + w * seqlen;
    Tensor logits = forward(m, win, seqlen, cache);
    sum += window_nll(logits.data<float>(), win, seqlen, m.cfg.vocab_size);
    if (progress) progress(w + 1, n, std::exp(sum / double(w + 1)));
  }
  r.windows = n;
  r.tokens = n * (seqlen - 1);
  r.nll = sum / double(n);
  r.perplexity = std::exp(r.nll);
  r.seconds = timer.seconds();
  return r;
}

}  // namespace obr
