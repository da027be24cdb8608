#include "compress/memory_estimate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "io/atomic_file.h"

namespace obr {

std::string format_bytes(uint64_t bytes) {
  char buf[32];
  const double b = double(bytes);
  if (b >= double(1ull << 30))
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / double(1ull << 30));
  else if (b >= double(1ull << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / double(1ull << 20));
  else
    std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  return buf;
}

std::string MemoryEstimate::describe() const {
  return format_bytes(total()) + " (weights " + format_bytes(weights) + ", calibration activations " +
         format_bytes(activations) + ", codes + masks " + format_bytes(records) + ", Hessian " + format_bytes(hessian) +
         ", solver buffers " + format_bytes(solve) + ")";
}

MemoryEstimate estimate_compress_memory(const ModelConfig& c, const CompressOptions& opt, int threads) {
  const uint64_t H = uint64_t(c.hidden_size), I = uint64_t(c.intermediate_size), L = uint64_t(c.num_hidden_layers);
  const uint64_t qdim = uint64_t(c.num_attention_heads) * uint64_t(c.head_dim);
  const uint64_t kvdim = uint64_t(c.num_key_value_heads) * uint64_t(c.head_dim);
  const uint64_t N = uint64_t(std::max<int64_t>(opt.nsamples, 0)), T = uint64_t(std::max<int64_t>(opt.seqlen, 0));
  // Linears of one layer as [out, in]: q, k, v, o, gate, up, down.
  const uint64_t shapes[kNumProj][2] = {{qdim, H}, {kvdim, H}, {kvdim, H}, {H, qdim}, {I, H}, {I, H}, {H, I}};
  uint64_t per_layer = 0, C = 0, R = 0;
  for (const auto& s : shapes) {
    per_layer += s[0] * s[1];
    if (s[1] > C || (s[1] == C && s[0] > R)) C = s[1], R = s[0];
  }
  const double kept = opt.solve.prune_m > 0 ? 1.0 - double(opt.solve.prune_n) / opt.solve.prune_m : 1.0 - opt.solve.sparsity;
  const uint64_t n = uint64_t(std::ceil(std::clamp(kept, 0.0, 1.0) * double(C)));

  MemoryEstimate e;
  e.weights = uint64_t(std::max<int64_t>(c.num_parameters(), 0)) * 4;
  e.activations = N * T * H * 4 * 2 + L * T * kvdim * 2 * 4;
  e.records = L * per_layer * 2;
  e.hessian = C * C * (4 + 8 + 8 + 4);
  e.solve = uint64_t(std::max(threads, 1)) * n * n * 8 + R * C * 14;
  return e;
}

uint64_t parse_mem_available(const std::string& meminfo) {
  std::istringstream in(meminfo);
  std::string key, unit;
  uint64_t value = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    if (!(ls >> key >> value)) continue;
    if (key != "MemAvailable:") continue;
    ls >> unit;
    return unit == "kB" ? value * 1024 : value;
  }
  return 0;
}

uint64_t available_memory_bytes() {
  try {
    return parse_mem_available(read_file("/proc/meminfo", 1 << 20));
  } catch (const Error&) {
    return 0;
  }
}

}  // namespace obr
