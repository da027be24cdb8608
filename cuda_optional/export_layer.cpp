// Writes the inputs of one real compressed decoder layer as .npy files for the CUDA oracle
// (obr_cuda_oracle --real DIR). CPU only; needs the full obr library.
//
//   obr_cuda_export_layer COMPRESSED_MODEL TEXT_FILE OUT_DIR [--layer L] [--tokens T]
//
// It loads an `obr compress` output with the integer engine, runs the first T tokens of the
// text through layers 0 .. L - 1, and records what each of layer L's seven projections
// receives (after the online Hadamards, before activation quantization, exactly as the
// PackedLinear sees it). For each projection P it writes, into OUT_DIR:
//   lL.P.qweight.npy  I8  [out, in]  the INT4 codes (unpacked from the model's packed weights)
//   lL.P.scales.npy   F32 [out]      per-row weight scales
//   lL.P.x.npy        F32 [T, in]    the projection's input rows
#include <cstdio>
#include <cstring>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "compress/compressed_model.h"
#include "core/check.h"
#include "io/npy.h"
#include "io/text.h"
#include "model/llama.h"
#include "model/packed_linear.h"
#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  using namespace obr;
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s COMPRESSED_MODEL TEXT_FILE OUT_DIR [--layer L] [--tokens T]\n", argv[0]);
    return 2;
  }
  const std::string model_dir = argv[1], text_file = argv[2], out_dir = argv[3];
  int layer = 0;
  int64_t T = 64;
  for (int i = 4; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--layer"))
      layer = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--tokens"))
      T = std::atoll(argv[i + 1]);
  }
  try {
    LoadedModel lm = load_any_model(model_dir, /*weights_only=*/false, Engine::Int4);
    OBR_CHECK(lm.compressed, model_dir, " is not an `obr compress` output");
    const LlamaModel& m = *lm.model;
    OBR_CHECK(layer >= 0 && layer < m.cfg.num_hidden_layers, "--layer ", layer, " is out of range");
    const Tokenizer tok = Tokenizer::from_file(lm.tokenizer_dir);
    std::vector<int32_t> ids = tok.encode(read_text_file(text_file).substr(0, size_t(T) * 64));
    OBR_CHECK(int64_t(ids.size()) >= T, text_file, " has only ", ids.size(), " tokens, want ", T);
    ids.resize(size_t(T));

    const int64_t H = m.cfg.hidden_size;
    std::vector<float> h(size_t(T * H));
    embed_tokens(m, ids.data(), T, h.data());
    KVCache cache = KVCache::make(m.cfg, T);
    for (int l = 0; l < layer; ++l) layer_forward(m, l, h.data(), T, cache.layers[size_t(l)], 0);
    std::vector<Tensor> inputs(kNumProj);
    const ProjHook hook = [&](int l, Proj p, const float* x, int64_t rows, int64_t in) {
      if (l != layer) return;
      Tensor t = Tensor::zeros({rows, in});
      std::memcpy(t.data<float>(), x, sizeof(float) * size_t(rows * in));
      inputs[size_t(p)] = t;
    };
    layer_forward(m, layer, h.data(), T, cache.layers[size_t(layer)], 0, &hook);

    ::mkdir(out_dir.c_str(), 0755);
    for (int j = 0; j < kNumProj; ++j) {
      const auto* pl = dynamic_cast<const PackedLinear*>(m.layers[size_t(layer)].proj[size_t(j)].get());
      OBR_CHECK(pl != nullptr, "projection ", proj_name(Proj(j)), " is not packed");
      OBR_CHECK(inputs[size_t(j)].defined() && inputs[size_t(j)].numel() > 0, "no input seen for ",
                proj_name(Proj(j)));
      const simd::PackedWeights& W = pl->packed();
      Tensor codes = Tensor::zeros({W.n_out, W.k_in}, DType::I8);
      simd::unpack_int4(W, codes.data<int8_t>());
      Tensor scales = Tensor::zeros({W.n_out});
      std::memcpy(scales.data<float>(), W.scale.data(), sizeof(float) * size_t(W.n_out));
      const std::string base = out_dir + "/l" + std::to_string(layer) + "." + proj_name(Proj(j));
      write_npy(base + ".qweight.npy", codes);
      write_npy(base + ".scales.npy", scales);
      write_npy(base + ".x.npy", inputs[size_t(j)]);
      std::printf("%s: W [%lld, %lld] %s, x [%lld, %lld]\n", base.c_str(), (long long)W.n_out,
                  (long long)W.k_in, simd::format_name(W.format), (long long)inputs[size_t(j)].dim(0),
                  (long long)inputs[size_t(j)].dim(1));
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
