// obr perplexity MODEL --text FILE [--seqlen N]: reference-convention perplexity.
#include <cstdio>

#include "cli/commands.h"
#include "compress/compressed_model.h"
#include "core/log.h"
#include "core/parallel.h"
#include "io/text.h"
#include "model/perplexity.h"
#include "tokenizer/tokenizer.h"

namespace obr::cli {

static int run_perplexity(int argc, char** argv) {
  Args a("perplexity", "MODEL [--text FILE] [--seqlen N]",
         "Perplexity of a model on a text, the reference way: the text is tokenized once, cut into\n"
         "non-overlapping windows of --seqlen tokens, ppl = exp(mean next-token NLL). MODEL is a\n"
         "Hugging Face model directory or the output of `obr compress` (evaluated with the\n"
         "activation / KV quantization it was compressed for).");
  a.positional("MODEL", "model directory");
  a.option("text", "data/text/eval.txt", "UTF-8 text file to evaluate on");
  a.option("seqlen", "0", "window length in tokens (0: min(2048, max_position_embeddings))");
  a.option("max-windows", "0", "evaluate only the first N windows (0: all)");
  a.option("bos", "no", "BOS handling: no (ids of the raw text, as the golden values), yes (prepend BOS once), auto (the tokenizer's post-processor)");
  a.option("threads", "0", "threads (0: OpenMP default)");
  a.option("engine", "simulated", "compressed models: simulated (f32 fake-quant, as the paper evaluates) or int4 (packed INT4 integer kernels)");
  a.flag("fp", false, "for a compressed model: ignore activation/KV quantization (weights only)");
  if (!a.parse(argc, argv)) return 0;
  if (a.integer("threads") > 0) set_num_threads(int(a.integer("threads")));

  LoadedModel lm = load_any_model(a.pos("MODEL"), a.on("fp"), parse_engine(a.str("engine")));
  const LlamaModel& m = *lm.model;
  std::string path = a.str("text");
  std::string text = read_text_file(path);
  Tokenizer tok = Tokenizer::from_file(lm.tokenizer_dir);
  std::string bos = a.str("bos");
  OBR_CHECK(bos == "auto" || bos == "yes" || bos == "no", "option --bos must be auto, yes or no, got '", bos, "'");
  std::vector<int32_t> ids = tok.encode(text, bos == "auto");
  if (bos == "yes" && (ids.empty() || ids[0] != tok.bos_id())) {
    OBR_CHECK(tok.bos_id() >= 0, "--bos yes: the tokenizer has no BOS token");
    ids.insert(ids.begin(), tok.bos_id());
  }
  int64_t seqlen = a.integer("seqlen");
  if (seqlen <= 0) seqlen = std::min<int64_t>(2048, m.cfg.max_position_embeddings > 0 ? m.cfg.max_position_embeddings : 2048);
  log_info("perplexity: ", path, ": ", text.size(), " bytes -> ", ids.size(), " tokens, seqlen ", seqlen, ", ",
           num_threads(), " threads; ", m.rt.describe());
  ProgressLine progress("perplexity");
  PerplexityResult r = perplexity(m, ids, seqlen, a.integer("max-windows"), [&](int64_t done, int64_t total, double ppl) {
    progress.update(done, total, detail::concat("ppl ", ppl));
  });
  std::printf("perplexity %.6f  nll %.8f  windows %lld  seqlen %lld  tokens %lld  seconds %.2f  peak_rss_mb %.1f\n",
              r.perplexity, r.nll, (long long)r.windows, (long long)r.seqlen, (long long)r.tokens, r.seconds,
              peak_rss_bytes() / 1048576.0);
  return 0;
}

OBR_COMMAND(perplexity, "perplexity on a text (reference convention: non-overlapping windows)", run_perplexity);

}  // namespace obr::cli
