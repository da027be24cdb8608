// Randomly initialised Llama models of any shape, for tests and for speed/memory work at real
// shapes. Not a language model: its outputs mean nothing.
#pragma once

#include <cstdint>

#include "model/llama.h"

namespace obr {

// Weights ~ N(0, std^2) with std = 0.02 (transformers' initializer_range), per-input-channel
// scale spread (log-normal, sigma 0.5) and a few large-magnitude channels (x8) in the norm weights,
// so rotation and quantization see outliers as in trained models. Deterministic in `seed`.
LlamaModel random_llama(const ModelConfig& cfg, uint64_t seed);

}  // namespace obr
