// Peak memory of `obr compress`, estimated before anything is loaded, so that a run that
// cannot fit fails in seconds rather than being killed by the OOM killer hours later.
//
// With H = hidden, I = intermediate, C = the widest linear input (max(H, I, heads * head_dim)),
// R = the most output rows of a linear of width C, N = nsamples, T = seqlen, P = the
// parameters of the linears, t = threads, n = kept columns per row = ceil((1 - sparsity) * C):
//   weights      num_parameters * 4          the model in f32
//   activations  N * T * H * 4 * 2           layer inputs of every sample + working copies
//                + layers * T * kvdim * 2 * 4  the calibration KV scratch
//   records      P * 2                       I8 codes + U8 mask of every compressed linear, kept for the output
//   hessian      C^2 * (4 + 8 + 8 + 4)       H (f32), its f64 copy in the solver, the f64
//                                            factor, the f32 inverse factor (GPTQ)
//   solve        t * n^2 * 8 + R * C * 14    per-row H_PP factors (OBR) + W', W_hat (f32),
//                                            codes, mask of one linear
// It leaves out the page cache of the memory-mapped safetensors (reclaimable) and small buffers.
#pragma once

#include <cstdint>
#include <string>

#include "compress/pipeline.h"
#include "model/config.h"

namespace obr {

struct MemoryEstimate {
  uint64_t weights = 0, activations = 0, records = 0, hessian = 0, solve = 0;
  uint64_t total() const { return weights + activations + records + hessian + solve; }
  // "3.2 GiB (weights 2.5 GiB, activations 0.5 GiB, ...)"
  std::string describe() const;
};

MemoryEstimate estimate_compress_memory(const ModelConfig& cfg, const CompressOptions& opt, int threads);

// MemAvailable of /proc/meminfo in bytes; 0 if unknown.
uint64_t available_memory_bytes();
// The same from the text of /proc/meminfo ("MemAvailable:   123456 kB"); 0 if absent.
uint64_t parse_mem_available(const std::string& meminfo);

// "1.50 GiB", "12.0 MiB"
std::string format_bytes(uint64_t bytes);

}  // namespace obr
