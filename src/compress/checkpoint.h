// Checkpoints of a compression run, so that a long `obr compress` can be killed and resumed
// with a result bit-identical to an uninterrupted run.
//
// compress_model (src/compress/pipeline.h) calls save_layer() after each decoder layer and
// restore() once before the first. Everything else (files, fingerprint, cleanup) lives here.
//
// A checkpoint is a directory, by convention OUT.partial next to the output directory OUT:
//   checkpoint.json            format, fingerprint, options, layers_done = k, the files below,
//                              calibration / solve seconds so far
//   layer_000.safetensors ...  one per finished layer l < k, per projection <p> in the order
//                              compress_model solved them: <p>.codes (I8 [out, in]),
//                              <p>.scales (F32 [out]), <p>.mask (U8 [out, in]),
//                              <p>.loss, <p>.seconds (F64 [1])
//   inputs_layer_00k.safetensors  the inputs of layer k on every calibration sample:
//                              x.<s> (F32 [T, H]) for s = 0 .. N-1 (layer k's input = layer
//                              k-1's output, computed with the compressed layers 0..k-1)
// Every file is written atomically (src/io/atomic_file.h), the layer's files first and
// checkpoint.json last, and checkpoint.json names only complete files: a kill at any moment
// leaves the previous consistent checkpoint. Files it does not name (temporaries, the next
// layer's half-done work) are removed when the checkpoint is opened again.
//
// Disk: 2 bytes per compressed weight (codes + mask) plus, transiently, two inputs files of
// N * T * H * 4 bytes (the new one is written before the old one is removed): for Llama-2-7B
// with 128 x 2048 calibration, up to 13 GB + 2 x 4 GiB.
//
// State restored on resume: the rotation is deterministic in its seed, so the caller re-runs it;
// restore() then replaces the projections of layers 0..k-1 with W_hat = codes * scales[row]
// (save_layer checks that this is bit for bit the W_hat the solver produced) and returns the
// inputs of layer k. Layers k.. are then computed exactly as in one uninterrupted run.
//
// Fingerprint: 64-bit FNV-1a hashes of config.json's bytes, of the calibration token ids
// (the windows actually used) and of options_to_json(options). A checkpoint is only resumed
// when all three match; otherwise the error names what differs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compress/pipeline.h"

namespace obr {

struct CheckpointFingerprint {
  std::string config;       // 16 hex digits each
  std::string calibration;
  std::string options;

  static CheckpointFingerprint of(const std::string& config_json_text, const std::vector<std::vector<int32_t>>& calib,
                                  const CompressOptions& opt);
};

class Checkpoint {
 public:
  // resume = false: `dir` must not exist (Error: pass --resume or remove it). The first
  //   save_layer() creates it.
  // resume = true: `dir` is loaded if it holds a checkpoint; its fingerprint must equal `fp`
  //   (Error naming what differs: config.json, calibration tokens, options with each changed
  //   option). If `dir` does not exist or holds no checkpoint.json yet, the run starts at layer 0.
  static Checkpoint open(const std::string& dir, const CheckpointFingerprint& fp, const CompressOptions& opt,
                         bool resume);

  const std::string& dir() const { return dir_; }
  int layers_done() const { return layers_done_; }

  // Replaces the projections of layers 0 .. layers_done()-1 of `m` (rotated, not yet
  // compressed) with the checkpointed W_hat, appends their records to rep (and the timings so
  // far), and fills xs [N][T*H] with the inputs of layer layers_done(). Returns layers_done().
  int restore(LlamaModel& m, CompressReport& rep, std::vector<std::vector<float>>& xs) const;

  // After layer `layer` (== layers_done()) is compressed: writes its records (from rep) and
  // the next layer's inputs xs, then checkpoint.json naming them. Checks that the model's
  // projections equal codes * scales, which is what restore() will rebuild.
  void save_layer(int layer, const LlamaModel& m, const CompressReport& rep, const std::vector<std::vector<float>>& xs);

  // Deletes the directory (after the final output is in place).
  void remove();

 private:
  Checkpoint() = default;
  void write_json() const;
  void remove_unreferenced() const;

  std::string dir_;
  CheckpointFingerprint fp_;
  std::string options_json_;  // options_to_json(opt).dump()
  int layers_done_ = 0;
  std::vector<std::vector<std::string>> layer_projs_;  // per finished layer: projections in solve order
  std::string inputs_file_;                            // "" while layers_done_ == 0
  double calib_seconds_ = 0, solve_seconds_ = 0;
};

}  // namespace obr
