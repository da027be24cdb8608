// Perplexity the way the reference code measures it (ALGORITHM.md section 7): the text is
// tokenized once, cut into non-overlapping windows of `seqlen` tokens (the last partial
// window is dropped), each window runs from an empty KV cache, and
// ppl = exp(mean over all windows of the mean next-token NLL of the window).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/llama.h"

namespace obr {

struct PerplexityResult {
  double nll = 0;         // mean next-token negative log-likelihood (nats)
  double perplexity = 0;  // exp(nll)
  int64_t windows = 0, seqlen = 0, tokens = 0;  // tokens = predicted tokens = windows * (seqlen - 1)
  double seconds = 0;
};

// Mean NLL of predicting ids[1..L-1] from the logits [L, V] of ids[0..L-1] (log-softmax in double).
double window_nll(const float* logits, const int32_t* ids, int64_t L, int64_t V);

// max_windows = 0: all windows. progress(done, total, running_ppl) after each window.
PerplexityResult perplexity(const LlamaModel& m, const std::vector<int32_t>& ids, int64_t seqlen, int64_t max_windows = 0,
                            const std::function<void(int64_t, int64_t, double)>& progress = {});

}  // namespace obr
