// Calibration-free compression of a model of any size, one decoder layer at a time (the fast
// path of `obr compress --fast`): RTN quantization, with a magnitude mask when --sparsity or
// --nm asks for one; no Hessian, so no calibration text and no forward passes.
//
//   source: memory-mapped safetensors (any float dtype), never loaded whole
//   shard 0:     embeddings, final norm, lm_head -> f32, rotated (rotate_embeddings)
//   shard l + 1: layer l -> f32, norms fused and rotated (rotate_layer); per projection the
//                per-row scales (clip search), the mask, RTN codes (exactly what solve_linear
//                does for Method::RTN) -> packed INT4; written, then released
// The output is the obr-packed-v1 directory that `obr compress` writes (compressed_model.h),
// with model.safetensors split into one shard per layer and model.safetensors.index.json, so
// the largest thing in memory is one layer: peak ~ embeddings + lm_head (f32) + one layer's f32
// weights and codes. Each shard is written atomically into OUT.partial/ as soon as its layer is
// done; a run stopped at any point continues with `resume` (finished shards are kept when the
// options match), and OUT appears only when every shard is there.
#pragma once

#include <functional>
#include <string>

#include "compress/pipeline.h"

namespace obr {

struct StreamCompressResult {
  double seconds = 0;
  uint64_t linear_weights = 0, packed_bytes = 0;
  int layers_reused = 0;  // shards kept from an interrupted run
};

// opt.solve.method must be RTN (sparsity / N:M allowed: magnitude mask); weights of <= 4 bits.
StreamCompressResult compress_streaming(const std::string& src_dir, const std::string& out_dir, const CompressOptions& opt,
                                        bool overwrite, bool resume);

// Peak memory of compress_streaming for a config (bytes): the f32 embeddings and lm_head plus
// the largest layer's f32 weights, its largest projection's solve buffers and packed copy.
uint64_t estimate_streaming_memory(const ModelConfig& cfg);

}  // namespace obr
