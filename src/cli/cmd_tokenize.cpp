// obr tokenize MODEL_OR_TOKENIZER_JSON [--text "..." | --file F] [--decode] [--special]
//
// Prints the token ids of a text (stdin when neither --text nor --file is given) on one
// line; --tokens prints the token strings too, --decode the decoded round trip. A summary
// (tokenizer kind, sizes, speed) goes to stderr.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/check.h"
#include "core/log.h"
#include "tokenizer/tokenizer.h"

namespace {

using namespace obr;

std::string read_all(std::istream& in) {
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int run_tokenize(int argc, char** argv) {
  cli::Args args("tokenize", "MODEL_OR_TOKENIZER_JSON [--text T | --file F] [--decode] [--special]",
                 "Encode text with a Hugging Face tokenizer.json (byte-fallback or byte-level BPE) and print\n"
                 "the token ids, one line, space-separated. Reads stdin when neither --text nor --file is given.");
  args.positional("MODEL_OR_TOKENIZER_JSON", "a tokenizer.json, or a model directory holding one");
  args.option("text", "", "the text to encode");
  args.option("file", "", "encode the contents of this file");
  args.flag("decode", false, "also decode the ids and print the text (and whether it round-trips)");
  args.flag("special", false, "add the special tokens of the post-processor template (e.g. BOS)");
  args.flag("tokens", false, "also print the token strings, one line, space-separated");
  if (!args.parse(argc, argv)) return 0;
  OBR_CHECK(!(args.has("text") && args.has("file")), "give --text or --file, not both");

  Timer load;
  const Tokenizer tok = Tokenizer::from_file(args.pos("MODEL_OR_TOKENIZER_JSON"));
  const double load_s = load.seconds();

  std::string text;
  if (args.has("text")) {
    text = args.str("text");
  } else if (args.has("file")) {
    std::ifstream f(args.str("file"), std::ios::binary);
    OBR_CHECK(f.good(), args.str("file"), ": cannot open for reading");
    text = read_all(f);
  } else {
    text = read_all(std::cin);
  }

  Timer enc;
  const std::vector<int32_t> ids = tok.encode(text, args.on("special"));
  const double enc_s = enc.seconds();
  log_info(tok.path(), ": ", tok.kind(), ", vocab ", tok.vocab_size(), ", bos ", tok.bos_id(), ", eos ", tok.eos_id(),
           ", loaded in ", load_s, " s");
  log_info(text.size(), " bytes -> ", ids.size(), " tokens in ", enc_s, " s (", enc_s > 0 ? text.size() / enc_s / 1e6 : 0,
           " MB/s)");

  std::string line;
  for (size_t k = 0; k < ids.size(); ++k) line += (k ? " " : "") + std::to_string(ids[k]);
  std::printf("%s\n", line.c_str());
  if (args.on("tokens")) {
    std::string t;
    for (const std::string& s : tok.tokens(ids)) t += (t.empty() ? "" : " ") + s;
    std::printf("%s\n", t.c_str());
  }
  if (args.on("decode")) {
    const std::string back = tok.decode(ids, args.on("special"));
    std::printf("%s\n", back.c_str());
    log_info("round trip: ", back == text ? "identical" : "differs", args.on("special") ? " (special tokens skipped)" : "");
  }
  return 0;
}

}  // namespace

OBR_COMMAND(tokenize, "encode text with a tokenizer.json and print the ids (--decode: round trip)", run_tokenize);
