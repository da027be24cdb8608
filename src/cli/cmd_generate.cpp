// obr generate MODEL --prompt "...": streams a continuation, then prompt / decode speed and memory.
#include <cmath>
#include <cstdio>

#include "cli/commands.h"
#include "compress/compressed_model.h"
#include "core/log.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "io/text.h"
#include "tokenizer/tokenizer.h"

namespace obr::cli {

// Samples a token from logits [V]: greedy at temp 0, else softmax(logits / temp) restricted to
// the smallest set of tokens whose probability reaches top_p.
static int32_t sample(const float* logits, int64_t V, double temp, double top_p, Rng& rng) {
  int32_t best = 0;
  for (int64_t v = 1; v < V; ++v)
    if (logits[v] > logits[best]) best = int32_t(v);
  if (temp <= 0) return best;
  std::vector<std::pair<double, int32_t>> p(static_cast<size_t>(V));
  double sum = 0;
  for (int64_t v = 0; v < V; ++v) {
    p[size_t(v)] = {std::exp((double(logits[v]) - logits[best]) / temp), int32_t(v)};
    sum += p[size_t(v)].first;
  }
  std::sort(p.begin(), p.end(), [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  double kept = 0;
  size_t n = 0;
  while (n < p.size() && (n == 0 || kept < top_p * sum)) kept += p[n++].first;
  double r = rng.uniform() * kept;
  for (size_t i = 0; i < n; ++i) {
    r -= p[i].first;
    if (r <= 0) return p[i].second;
  }
  return p[n - 1].second;
}

static int run_generate(int argc, char** argv) {
  Args a("generate", "MODEL --prompt TEXT [-n 64] [--temp 0]",
         "Generate a continuation of a prompt, streaming the text to stdout. Prints prompt and decode\n"
         "tokens/s, peak resident memory and KV cache size to stderr. MODEL is a Hugging Face model directory or\n"
         "the output of `obr compress`.");
  a.positional("MODEL", "model directory");
  a.option("prompt", "", "prompt text (this or --prompt-file)");
  a.option("prompt-file", "", "read the prompt from this UTF-8 text file");
  a.option("prompt-tokens", "0", "use only the first N tokens of the prompt (0: all); for timing a fixed prompt length");
  a.option("tokens", "64", "new tokens to generate");
  a.alias("-n", "--tokens");
  a.option("temp", "0", "sampling temperature (0: greedy)");
  a.option("top-p", "1.0", "nucleus sampling threshold");
  a.option("seed", "0", "sampling seed");
  a.option("threads", "0", "threads (0: OpenMP default)");
  a.option("engine", "simulated", "compressed models: simulated (f32 fake-quant, as the paper evaluates) or int4 (packed INT4 integer kernels)");
  a.flag("ids", false, "also print the generated token ids");
  if (!a.parse(argc, argv)) return 0;
  if (a.integer("threads") > 0) set_num_threads(int(a.integer("threads")));
  OBR_CHECK(a.str("prompt").empty() != a.str("prompt-file").empty(),
            "give the text to continue with exactly one of --prompt TEXT and --prompt-file FILE");
  std::string prompt = a.str("prompt-file").empty() ? a.str("prompt") : read_text_file(a.str("prompt-file"));
  OBR_CHECK(find_invalid_utf8(prompt) == std::string::npos, "--prompt is not valid UTF-8");
  const int64_t prompt_tokens = a.integer("prompt-tokens");
  OBR_CHECK(prompt_tokens >= 0, "option --prompt-tokens must be >= 0, got ", prompt_tokens);
  const int64_t n_new = a.integer("tokens");
  OBR_CHECK(n_new >= 0, "option --tokens must be >= 0, got ", n_new);

  Timer load_timer;
  LoadedModel lm = load_any_model(a.pos("MODEL"), false, parse_engine(a.str("engine")));
  log_info("loaded ", a.pos("MODEL"), " in ", load_timer.seconds(), " s (", lm.model->rt.describe(), ")");
  const LlamaModel& m = *lm.model;
  Tokenizer tok = Tokenizer::from_file(lm.tokenizer_dir);
  std::vector<int32_t> ids = tok.encode(prompt, true);
  OBR_CHECK(!ids.empty(), "the prompt encodes to no tokens");
  if (prompt_tokens > 0) {
    OBR_CHECK(int64_t(ids.size()) >= prompt_tokens, "--prompt-tokens ", prompt_tokens, ": the prompt has only ",
              ids.size(), " tokens");
    ids.resize(size_t(prompt_tokens));
    prompt = tok.decode(ids, /*skip_special_tokens=*/true);
  }
  const int64_t ctx = int64_t(ids.size()) + n_new;
  if (m.cfg.max_position_embeddings > 0 && ctx > m.cfg.max_position_embeddings)
    log_warn("prompt + new tokens = ", ctx, " exceeds the model's max_position_embeddings (", m.cfg.max_position_embeddings,
             "); quality may degrade");
  KVCache cache = KVCache::make(m.cfg, ctx);
  Rng rng(uint64_t(a.integer("seed")));
  const int64_t V = m.cfg.vocab_size;

  std::printf("%s", prompt.c_str());
  std::fflush(stdout);
  Timer tp;
  Tensor logits = forward(m, ids.data(), int64_t(ids.size()), cache);
  const double prompt_s = tp.seconds();
  std::vector<int32_t> out;
  std::string shown;  // decoded text of `out` already printed
  Timer td;
  int32_t next = sample(logits.data<float>() + (int64_t(ids.size()) - 1) * V, V, a.real("temp"), a.real("top-p"), rng);
  for (int64_t i = 0; i < n_new; ++i) {
    out.push_back(next);
    std::string text = tok.decode(out);
    // Print only whole UTF-8 characters: a byte-level token can end inside one.
    size_t cut = text.size();
    while (cut > shown.size() && find_invalid_utf8(text.substr(0, cut)) != std::string::npos) --cut;
    if (cut > shown.size() && text.compare(0, shown.size(), shown) == 0) {
      std::printf("%s", text.substr(shown.size(), cut - shown.size()).c_str());
      std::fflush(stdout);
      shown = text.substr(0, cut);
    }
    if (next == tok.eos_id() || i + 1 == n_new) break;
    logits = forward(m, &next, 1, cache);
    next = sample(logits.data<float>(), V, a.real("temp"), a.real("top-p"), rng);
  }
  const double decode_s = td.seconds();
  std::printf("\n");
  if (a.on("ids")) {
    std::printf("ids:");
    for (int32_t t : out) std::printf(" %d", t);
    std::printf("\n");
  }
  std::fprintf(stderr,
               "prompt %zu tokens %.1f tok/s | decode %zu tokens %.1f tok/s | peak_rss_mb %.1f | kv_cache_mb %.3f (f32: "
               "%.3f) | %s\n",
               ids.size(), double(ids.size()) / std::max(prompt_s, 1e-9), out.size(),
               out.size() > 1 ? double(out.size() - 1) / std::max(decode_s, 1e-9) : 0.0, peak_rss_bytes() / 1048576.0,
               double(cache.bytes()) / 1048576.0, double(cache.f32_bytes()) / 1048576.0, m.rt.describe().c_str());
  return 0;
}

OBR_COMMAND(generate, "generate text from a prompt (greedy or sampled), with speed and memory", run_generate);

}  // namespace obr::cli
