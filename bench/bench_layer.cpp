// What share of one decoder layer's decode time goes to QuaRot's online work: the Hadamard
// transforms and the per-token activation quantization that the W4A4 integer engine adds.
//
//   bench_layer [--model llama7b|small] [--ctx C] [--ws-gb G] [--reps R] [--threads N] [--csv FILE]
//
// The layer is the library's own `layer_forward` (src/model/llama.h) with the integer engine's
// setup: every projection a PackedLinear (INT4 weights, codes random, pruned per format; it
// quantizes its own input to A4 codes, clip 0.9, simd::quantize_act_rows_i8), the online
// Hadamards on (enable_online_hadamards: q and k per head after RoPE, across heads before
// o_proj, H_I before down_proj), the KV cache fake-quantized to 4 bits (asymmetric, per head).
// One decode step: T = 1 at position --ctx (default 512) against a KV cache of --ctx tokens.
// Shapes: llama7b = Llama-2-7B (H 4096, I 11008, 32 heads of 128, no GQA); small = the model in
// data/models/small (H 384, I 1280, 6 heads of 64, 2 KV heads).
//
// Working set: like the kernel benchmark, each format cycles through as many copies of the
// layer as make >= --ws-gb (default 1 GB) of weight bytes (llama7b 2:4: 76 MB a layer, 14
// copies), each with its own KV cache, so the weights come from DRAM as in a real model;
// --model small uses the model's own 8 layers (6 MB at 2:4: it lives in the last-level cache).
// Time per layer = time of one pass over the copies / copies.
//
// The online pieces are timed on their own, with the layer's sizes, in the same interleaved
// loop (each repeated 200 times per repetition: they take microseconds):
//   Hadamard q,k      hadamard_transform_rows on q [nh, hd] and k [nkv, hd]
//   Hadamard o input  the across-heads transform of the attention output [1, nh * hd]
//   Hadamard down     hadamard_transform_rows on the down_proj input [1, I]
//   act quant         quantize_act_rows_i8 of the 7 projection inputs (5 x H, nh*hd, I)
//   KV quant          fake_quant_kv of the new k and v rows (W4A4KV4's KV quantizer; listed
//                     apart: it is not an activation quantizer)
// the seven projections alone ("7 linears": for INT4 they include their own act quant),
// and, as a cross-check, the whole layer with the Hadamards switched off (its difference to the
// layer is the Hadamards' cost seen from inside the layer), and the FP32 engine's layer
// (DenseLinear, OpenBLAS sgemv; f32 KV cache, no transforms) as the baseline of the INT4 layers. Share = median of the piece /
// median of the layer. All items run interleaved; median and min over --reps repetitions
// after one warm-up.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "compress/pipeline.h"
#include "compress/quantizer.h"
#include "compress/quarot.h"
#include "core/rng.h"
#include "model/linear.h"
#include "model/llama.h"
#include "model/packed_linear.h"
#include "simd/cpu_info.h"
#include "simd/kernels.h"

using namespace obr;
using obr::bench::median;
using obr::bench::min_of;
using obr::bench::now_s;

namespace {

struct Options {
  std::string model = "llama7b";
  int64_t ctx = 512;
  double ws_gb = 1.0;
  int reps = 9;
  int threads = 0;
  std::string csv;
};

ModelConfig model_config(const std::string& name) {
  ModelConfig c;
  c.model_type = "llama";
  if (name == "llama7b") {
    c.hidden_size = 4096, c.intermediate_size = 11008, c.num_attention_heads = 32, c.num_key_value_heads = 32;
    c.head_dim = 128, c.num_hidden_layers = 32, c.vocab_size = 32000;
  } else if (name == "small") {
    c.hidden_size = 384, c.intermediate_size = 1280, c.num_attention_heads = 6, c.num_key_value_heads = 2;
    c.head_dim = 64, c.num_hidden_layers = 8, c.vocab_size = 4096;
  } else {
    std::fprintf(stderr, "unknown --model %s (llama7b, small)\n", name.c_str());
    std::exit(2);
  }
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-5;
  return c;
}

// One PackedLinear [out, in] with random codes pruned for `format` (2:4: 2 random of every 4;
// unstructured: each weight kept with probability 1/2) and scales that keep outputs O(|x|).
std::unique_ptr<PackedLinear> random_packed(simd::Int4Format format, int64_t out, int64_t in, Rng& rng) {
  Tensor codes = Tensor::zeros({out, in}, DType::I8), scales = Tensor::zeros({out});
  int8_t* q = codes.data<int8_t>();
  for (int64_t i = 0; i < out * in; ++i) q[i] = int8_t(int(rng.below(15)) - 7);
  if (format == simd::Int4Format::kSparse24) {
    static const int kDrop[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
    for (int64_t g = 0; g < out * in / 4; ++g) {
      const int* d = kDrop[rng.below(6)];
      q[4 * g + d[0]] = q[4 * g + d[1]] = 0;
    }
  } else if (format == simd::Int4Format::kUnstructured) {
    for (int64_t i = 0; i < out * in; ++i)
      if (rng.below(2)) q[i] = 0;
  }
  for (int64_t n = 0; n < out; ++n) scales.data<float>()[n] = float(1.0 / (4.3 * std::sqrt(double(in))));
  return std::make_unique<PackedLinear>(format, codes, scales, Tensor(), 4, 0.9f);
}

// `copies` decoder layers of one format: built once, the rest deep copies (PackedLinear copies
// its packed buffers).
LlamaModel make_layers(const ModelConfig& c, simd::Int4Format format, double ws_bytes, size_t& layer_bytes) {
  LlamaModel m;
  m.cfg = c;
  Rng rng(1234 + uint64_t(format));
  DecoderLayer first;
  first.attn_norm = Tensor::zeros({c.hidden_size});
  first.mlp_norm = Tensor::zeros({c.hidden_size});
  for (int64_t i = 0; i < c.hidden_size; ++i) first.attn_norm.data<float>()[i] = first.mlp_norm.data<float>()[i] = 1;
  const auto shapes = proj_shapes(c);
  layer_bytes = 0;
  for (int p = 0; p < kNumProj; ++p) {
    first.proj[size_t(p)] = random_packed(format, shapes[size_t(p)][0], shapes[size_t(p)][1], rng);
    layer_bytes += first.proj[size_t(p)]->weight_bytes();
  }
  const int64_t copies = ws_bytes > 0 ? std::max<int64_t>(1, int64_t(std::ceil(ws_bytes / double(layer_bytes))))
                                      : c.num_hidden_layers;
  for (int64_t l = 1; l < copies; ++l) {
    DecoderLayer d;
    d.attn_norm = first.attn_norm;
    d.mlp_norm = first.mlp_norm;
    for (int p = 0; p < kNumProj; ++p)
      d.proj[size_t(p)] = std::make_unique<PackedLinear>(static_cast<const PackedLinear&>(*first.proj[size_t(p)]));
    m.layers.push_back(std::move(d));
  }
  m.layers.insert(m.layers.begin(), std::move(first));
  // The integer engine's runtime (src/compress/compressed_model.cpp): online Hadamards, KV4;
  // activation quantization happens inside each PackedLinear.
  enable_online_hadamards(m.rt);
  CompressOptions opt;
  enable_quantized_runtime(m.rt, opt);
  m.rt.quant_act = nullptr;
  m.rt.act_quant_in_linears = true;
  return m;
}

// The FP32 engine's layer (DenseLinear: OpenBLAS sgemv at T = 1; no Hadamards, no quantizers),
// the baseline. Each copy owns its weights.
LlamaModel make_fp32_layers(const ModelConfig& c, double ws_bytes, size_t& layer_bytes) {
  LlamaModel m;
  m.cfg = c;
  Rng rng(99);
  const auto shapes = proj_shapes(c);
  std::vector<Tensor> first(kNumProj);
  layer_bytes = 0;
  for (int p = 0; p < kNumProj; ++p) {
    const int64_t out = shapes[size_t(p)][0], in = shapes[size_t(p)][1];
    first[size_t(p)] = Tensor::zeros({out, in});
    const float a = float(std::sqrt(3.0 / double(in)));
    float* w = first[size_t(p)].data<float>();
    for (int64_t i = 0; i < out * in; ++i) w[i] = a * float(2 * rng.uniform() - 1);
    layer_bytes += first[size_t(p)].nbytes();
  }
  const int64_t copies = ws_bytes > 0 ? std::max<int64_t>(1, int64_t(std::ceil(ws_bytes / double(layer_bytes))))
                                      : c.num_hidden_layers;
  for (int64_t l = 0; l < copies; ++l) {
    DecoderLayer d;
    d.attn_norm = Tensor::zeros({c.hidden_size});
    d.mlp_norm = Tensor::zeros({c.hidden_size});
    for (int64_t i = 0; i < c.hidden_size; ++i) d.attn_norm.data<float>()[i] = d.mlp_norm.data<float>()[i] = 1;
    for (int p = 0; p < kNumProj; ++p) {
      Tensor w = Tensor::zeros(first[size_t(p)].shape());
      std::memcpy(w.data<float>(), first[size_t(p)].data<float>(), w.nbytes());
      d.proj[size_t(p)] = std::make_unique<DenseLinear>(std::move(w));
    }
    m.layers.push_back(std::move(d));
  }
  return m;
}

struct Item {
  std::string format, name;
  std::function<void()> rep;
  int64_t calls = 1;          // calls per repetition
  std::vector<double> times;  // seconds per call
  bool is_layer = false;
};

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--model") opt.model = next();
    else if (a == "--ctx") opt.ctx = std::stoll(next());
    else if (a == "--ws-gb") opt.ws_gb = std::stod(next());
    else if (a == "--reps") opt.reps = std::stoi(next());
    else if (a == "--threads") opt.threads = std::stoi(next());
    else if (a == "--csv") opt.csv = next();
    else {
      std::fprintf(stderr, "usage: %s [--model llama7b|small] [--ctx C] [--ws-gb G] [--reps R] [--threads N] "
                   "[--csv FILE]\n", argv[0]);
      return 2;
    }
  }
  if (opt.threads > 0) set_num_threads(opt.threads);
  const int threads = num_threads();
  const std::string target = simd::best_target_name();
  const ModelConfig c = model_config(opt.model);
  const int64_t H = c.hidden_size, I = c.intermediate_size, nh = c.num_attention_heads, nkv = c.num_key_value_heads,
                hd = c.head_dim;
  const double ws = opt.model == "small" ? 0.0 : opt.ws_gb * 1e9;
  std::printf("bench_layer: %s layer (H %lld, I %lld, %lld heads x %lld, %lld KV heads), decode T=1 at ctx %lld; "
              "threads %d (%s), SIMD target %s, OMP_PLACES=%s OMP_PROC_BIND=%s; %d reps, interleaved\n",
              opt.model.c_str(), (long long)H, (long long)I, (long long)nh, (long long)hd, (long long)nkv,
              (long long)opt.ctx, threads, obr::bench::thread_placement().c_str(), target.c_str(),
              obr::bench::env_or("OMP_PLACES", "unset"), obr::bench::env_or("OMP_PROC_BIND", "unset"), opt.reps);

  const simd::Int4Format formats[3] = {simd::Int4Format::kSparse24, simd::Int4Format::kDense,
                                       simd::Int4Format::kUnstructured};
  // models[0..2]: the INT4 formats above; models[3]: the FP32 engine's layer.
  std::vector<std::unique_ptr<LlamaModel>> models;
  std::vector<size_t> layer_bytes(4);
  size_t max_layers = 0;
  for (int f = 0; f < 4; ++f) {
    const double t0 = now_s();
    models.push_back(std::make_unique<LlamaModel>(f < 3 ? make_layers(c, formats[f], ws, layer_bytes[size_t(f)])
                                                        : make_fp32_layers(c, ws, layer_bytes[size_t(f)])));
    max_layers = std::max(max_layers, models.back()->layers.size());
    std::fprintf(stderr, "  %s: %zu layers of %.1f MB, built in %.1f s\n", f < 3 ? simd::format_name(formats[f]) : "fp32",
                 models.back()->layers.size(), double(layer_bytes[size_t(f)]) * 1e-6, now_s() - t0);
  }
  ModelConfig cache_cfg = c;
  cache_cfg.num_hidden_layers = int(max_layers);
  KVCache cache = KVCache::make(cache_cfg, opt.ctx + 1);  // shared by the formats (same shapes)
  {
    Rng rng(5);
    for (LayerCache& lc : cache.layers)
      for (Tensor* t : {&lc.K, &lc.V})
        if (t->defined())
          for (int64_t i = 0; i < t->numel(); ++i) t->data<float>()[i] = float(rng.normal());
  }
  std::vector<float> h0(static_cast<size_t>(H)), h(static_cast<size_t>(H));
  {
    Rng rng(6);
    for (float& v : h0) v = float(rng.normal());
  }

  std::vector<Item> items;
  for (int f = 0; f < 4; ++f) {
    LlamaModel* m = models[size_t(f)].get();
    const int64_t L = int64_t(m->layers.size());
    auto pass = [m, L, &h, &h0, &cache, &opt] {
      for (int64_t l = 0; l < L; ++l) {
        std::memcpy(h.data(), h0.data(), h.size() * sizeof(float));  // 16 KB: keeps values bounded
        layer_forward(*m, int(l), h.data(), 1, cache.layers[size_t(l)], opt.ctx);
      }
    };
    const std::string fname = f < 3 ? simd::format_name(formats[f]) : "fp32";
    items.push_back({fname, "layer", pass, L, {}, true});
    // The seven projections alone (INT4: each quantizes its input, as in the layer).
    auto x = std::make_shared<std::vector<float>>(size_t(std::max({H, I, nh * hd})), 0.5f);
    auto y = std::make_shared<std::vector<float>>(size_t(std::max({H, I, nh * hd})));
    items.push_back({fname, "7 linears", [m, L, x, y] {
                       for (int64_t l = 0; l < L; ++l)
                         for (int p = 0; p < kNumProj; ++p) m->layers[size_t(l)][Proj(p)].forward(x->data(), 1, y->data());
                     }, L, {}, false});
    if (f == 0) {
      items.push_back({fname, "layer, Hadamards off", [m, pass] {
                         m->rt.had_qk = m->rt.had_o_input = m->rt.had_down_input = false;
                         pass();
                         m->rt.had_qk = m->rt.had_o_input = m->rt.had_down_input = true;
                       }, L, {}, false});
    }
  }
  // The online pieces, on the sizes of one decode step.
  const Runtime& rt = models[0]->rt;
  constexpr int kRepeat = 200;
  auto x_h = std::make_shared<std::vector<float>>(size_t(std::max(nh * hd, I)));
  auto x_k = std::make_shared<std::vector<float>>(size_t(nkv * hd));
  auto codes = std::make_shared<std::vector<int8_t>>(size_t(std::max({H, nh * hd, I})));
  auto scale = std::make_shared<std::vector<float>>(1);
  {
    Rng rng(7);
    for (float& v : *x_h) v = float(rng.normal());
    for (float& v : *x_k) v = float(rng.normal());
  }
  items.push_back({"all", "Hadamard q,k (per head)", [=, &rt] {
                     for (int r = 0; r < kRepeat; ++r) {
                       rt.had_rows(x_h->data(), nh, hd);
                       rt.had_rows(x_k->data(), nkv, hd);
                     }
                   }, kRepeat, {}, false});
  items.push_back({"all", "Hadamard o input (across heads)", [=, &rt] {
                     for (int r = 0; r < kRepeat; ++r) rt.had_heads(x_h->data(), 1, nh, hd);
                   }, kRepeat, {}, false});
  items.push_back({"all", "Hadamard down input (H_I)", [=, &rt] {
                     for (int r = 0; r < kRepeat; ++r) rt.had_rows(x_h->data(), 1, I);
                   }, kRepeat, {}, false});
  items.push_back({"all", "act quant (7 inputs)", [=] {
                     for (int r = 0; r < kRepeat; ++r) {
                       for (int p = 0; p < 5; ++p)
                         simd::quantize_act_rows_i8(x_h->data(), 1, H, 4, 0.9f, codes->data(), scale->data());
                       simd::quantize_act_rows_i8(x_h->data(), 1, nh * hd, 4, 0.9f, codes->data(), scale->data());
                       simd::quantize_act_rows_i8(x_h->data(), 1, I, 4, 0.9f, codes->data(), scale->data());
                     }
                   }, kRepeat, {}, false});
  auto kv_new = std::make_shared<std::vector<float>>(size_t(nkv * hd));
  items.push_back({"all", "KV quant (k, v rows)", [=, &rt] {
                     for (int r = 0; r < kRepeat; ++r)
                       for (int j = 0; j < 2; ++j) {
                         std::memcpy(kv_new->data(), x_k->data(), kv_new->size() * sizeof(float));
                         rt.quant_kv(kv_new->data(), 1, nkv * hd, hd);
                       }
                   }, kRepeat, {}, false});

  for (Item& it : items) it.rep();  // warm-up
  for (int r = 0; r < opt.reps; ++r)
    for (Item& it : items) {
      const double t0 = now_s();
      it.rep();
      it.times.push_back((now_s() - t0) / double(it.calls));
    }

  // ---- report
  auto find = [&](const std::string& fmt, const std::string& name) -> const Item& {
    for (const Item& it : items)
      if (it.format == fmt && it.name == name) return it;
    std::fprintf(stderr, "missing item %s/%s\n", fmt.c_str(), name.c_str());
    std::exit(1);
  };
  const double had = median(find("all", "Hadamard q,k (per head)").times) +
                     median(find("all", "Hadamard o input (across heads)").times) +
                     median(find("all", "Hadamard down input (H_I)").times);
  const double aq = median(find("all", "act quant (7 inputs)").times);
  const double kvq = median(find("all", "KV quant (k, v rows)").times);
  FILE* csv = opt.csv.empty() ? nullptr : std::fopen(opt.csv.c_str(), "w");
  if (!opt.csv.empty() && !csv) std::fprintf(stderr, "cannot write %s\n", opt.csv.c_str());
  if (csv)
    std::fprintf(csv, "model,ctx,threads,simd_target,format,item,median_us,min_us,pct_of_2:4_layer,"
                      "pct_of_format_layer,layer_weight_gbps\n");
  const double layer24 = median(find("2:4", "layer").times);
  std::printf("\n%-12s %-34s %12s %12s %12s %12s\n", "format", "item", "median us", "min us", "% 2:4 layer",
              "weight GB/s");
  for (const Item& it : items) {
    const double med = median(it.times), mn = min_of(it.times);
    double gbps = 0;
    for (int f = 0; f < 4; ++f)
      if (it.is_layer && it.format == (f < 3 ? simd::format_name(formats[f]) : "fp32"))
        gbps = double(layer_bytes[size_t(f)]) / med * 1e-9;
    std::printf("%-12s %-34s %12.1f %12.1f %11.2f%% %12.1f\n", it.format.c_str(), it.name.c_str(), med * 1e6,
                mn * 1e6, 100 * med / layer24, gbps);
    if (csv)
      std::fprintf(csv, "%s,%lld,%d,%s,%s,%s,%.2f,%.2f,%.3f,%.3f,%.2f\n", opt.model.c_str(), (long long)opt.ctx,
                   threads, target.c_str(), it.format.c_str(), it.name.c_str(), med * 1e6, mn * 1e6,
                   100 * med / layer24, it.is_layer ? 100.0 : 0.0, gbps);
  }
  std::printf("\nonline Hadamards %.1f us + act quant %.1f us = %.1f us per layer (KV quant %.1f us more)\n",
              had * 1e6, aq * 1e6, (had + aq) * 1e6, kvq * 1e6);
  for (int f = 0; f < 3; ++f) {
    const std::string fname = simd::format_name(formats[f]);
    const double layer = median(find(fname, "layer").times);
    const double share = 100 * (had + aq) / layer;
    std::printf("  %-13s layer %8.1f us: Hadamards + act quant = %5.2f%% (target < 10%%: %s); with KV quant %5.2f%%\n",
                fname.c_str(), layer * 1e6, share, share < 10 ? "met" : "MISSED", 100 * (had + aq + kvq) / layer);
    if (csv)
      std::fprintf(csv, "%s,%lld,%d,%s,%s,%s,%.2f,%.2f,%.3f,%.3f,%.2f\n", opt.model.c_str(), (long long)opt.ctx,
                   threads, target.c_str(), fname.c_str(), "Hadamards + act quant", (had + aq) * 1e6, 0.0,
                   100 * (had + aq) / layer24, share, 0.0);
  }
  const double fp32 = median(find("fp32", "layer").times);
  std::printf("  layer speed over the FP32 engine's layer (medians): 2:4 %.2fx, dense %.2fx, unstructured %.2fx\n",
              fp32 / layer24, fp32 / median(find("dense", "layer").times),
              fp32 / median(find("unstructured", "layer").times));
  const double off = median(find("2:4", "layer, Hadamards off").times);
  std::printf("  cross-check (2:4): layer - layer with Hadamards off = %.1f us (%.2f%% of the layer); "
              "the pieces timed alone: %.1f us\n", (layer24 - off) * 1e6, 100 * (layer24 - off) / layer24, had * 1e6);
  if (csv) std::fclose(csv);
  return 0;
}
