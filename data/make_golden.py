#!/usr/bin/env python3
"""Write the golden values that the C++ tests compare against.

For each reference model in data/models/<name>/ (made by data/train_models.py):
  data/golden/<name>_tokens.npy       int32 [3, 64]: row 0 = eval.txt ids [0, 64), row 1 =
                                      eval.txt ids [EVAL_OFFSET, EVAL_OFFSET + 64), row 2 =
                                      random ids in [0, 4096) from numpy default_rng(RANDOM_SEED)
  data/golden/<name>_logits.npy       float32 [3, 64, 4096]: logits of every position, one
                                      forward pass per row, no BOS added, positions 0..63
  data/golden/<name>_perplexity.json  reference perplexity of eval.txt (see train_models.py)
All are the fp32 forward (on the CPU, attention "eager") of the bf16 weights on disk, i.e. the
weights are loaded as bf16 and converted with model.float().

Tokenizer golden ids, for every text in data/golden/tokenizers/texts.json (written here too):
  data/golden/tokenizers/obr-tiny.jsonl  the project's tokenizer (data/models/tiny/tokenizer.json)
  data/golden/tokenizers/llama2.jsonl    Llama-2 tokenizer  (data/third_party/llama2/tokenizer.json)
  data/golden/tokenizers/llama3.jsonl    Llama-3 tokenizer  (data/third_party/llama3/tokenizer.json)
Each line is {"text": ..., "ids": [...]} with ids from the Hugging Face `tokenizers` library,
Tokenizer.encode(text, add_special_tokens=False).ids.

Run from the repository root after data/fetch_text.sh, data/fetch_tokenizers.sh and
data/train_models.py:

    python3 data/make_golden.py
"""
import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

SEQLEN = 512
GOLDEN_LEN = 64
EVAL_OFFSET = 20000
RANDOM_SEED = 20250914

# Fixed, varied texts for the tokenizer golden ids (written to tokenizers/texts.json).
TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Fellow-Citizens of the Senate and House of Representatives:",
    "Call me Ishmael. Some years ago\u2014never mind how long precisely\u2014having little or no money in my purse,",
    "12345 3.14159 and 1,000,000 dollars in 1790; 2021-01-01 at 09:30.",
    "a  b   c\n\n\td",
    "na\u00efve caf\u00e9 \u2014 \u6771\u4eac \U0001F916",
    "Emoji: \U0001F600\U0001F44D\U0001F3FD \U0001F1FA\U0001F1F8 \u2764\uFE0F!",
    "Line one\nLine two\r\nLine three\n\n",
    "   three leading spaces, two trailing  ",
    "Pneumonoultramicroscopicsilicovolcanoconiosis and antidisestablishmentarianism",
    "don't can't I'm we'll they've she'd it's DON'T WE'LL",
    "x = f(y) + 2*z; // {braces} [brackets] (parens) #tag @user 100%",
    "\u00c0 la fa\u00e7on de \u00ab Stra\u00dfe \u00bb, \u0416\u0438\u0437\u043d\u044c, \u03b1\u03b2\u03b3 \u2260 \u221e",
]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def tokenizer_golden(here, golden_dir, models):
    from tokenizers import Tokenizer

    tdir = os.path.join(golden_dir, "tokenizers")
    os.makedirs(tdir, exist_ok=True)
    with open(os.path.join(tdir, "texts.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(TEXTS, f, ensure_ascii=False, indent=1)
        f.write("\n")
    sources = {
        "obr-tiny": os.path.join(models, "tiny", "tokenizer.json"),
        "llama2": os.path.join(here, "third_party", "llama2", "tokenizer.json"),
        "llama3": os.path.join(here, "third_party", "llama3", "tokenizer.json"),
    }
    for name, path in sources.items():
        if not os.path.exists(path):
            print(f"tokenizer {name}: {path} missing, skipped", flush=True)
            continue
        tok = Tokenizer.from_file(path)
        rows = []
        for t in TEXTS:
            ids = tok.encode(t, add_special_tokens=False).ids
            rows.append({"text": t, "ids": ids})
        write_jsonl(os.path.join(tdir, f"{name}.jsonl"), rows)
        print(f"tokenizer {name}: {sum(len(r['ids']) for r in rows)} ids over {len(rows)} texts"
              f"  (tokenizer.json sha256 {sha256_file(path)})", flush=True)


@torch.no_grad()
def model_golden(name, model_dir, text_dir, golden_dir):
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16,
                                             attn_implementation="eager")
    for p in model.parameters():
        assert p.dtype == torch.bfloat16
    model = model.float().eval()
    V = model.config.vocab_size

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    eval_path = os.path.join(text_dir, "eval.txt")
    with open(eval_path, "r", encoding="utf-8", newline="") as f:
        ids = tok.encode(f.read(), add_special_tokens=False).ids

    rng = np.random.default_rng(RANDOM_SEED)
    tokens = np.stack([
        np.asarray(ids[0:GOLDEN_LEN]),
        np.asarray(ids[EVAL_OFFSET:EVAL_OFFSET + GOLDEN_LEN]),
        rng.integers(0, V, size=GOLDEN_LEN),
    ]).astype(np.int32)
    logits = model(input_ids=torch.from_numpy(tokens.astype(np.int64))).logits
    logits = logits.float().numpy().astype(np.float32)
    assert logits.shape == (3, GOLDEN_LEN, V)
    np.save(os.path.join(golden_dir, f"{name}_tokens.npy"), tokens)
    np.save(os.path.join(golden_dir, f"{name}_logits.npy"), logits)

    n = len(ids) // SEQLEN
    x = torch.as_tensor(np.asarray(ids[: n * SEQLEN], dtype=np.int64)).view(n, SEQLEN)
    total = 0.0
    for i in range(0, n, 16):
        b = x[i: i + 16]
        lg = model(input_ids=b).logits
        total += F.cross_entropy(lg[:, :-1].reshape(-1, V), b[:, 1:].reshape(-1),
                                 reduction="sum").item()
    nll = total / (n * (SEQLEN - 1))
    ppl = {
        "text": "eval.txt",
        "sha256": sha256_file(eval_path),
        "seqlen": SEQLEN,
        "windows": n,
        "tokens": n * SEQLEN,
        "predicted_tokens": n * (SEQLEN - 1),
        "bos": False,
        "nll": round(nll, 6),
        "perplexity": round(math.exp(nll), 4),
        "compute": "fp32 forward of the bf16 weights, CPU, eager attention",
    }
    with open(os.path.join(golden_dir, f"{name}_perplexity.json"), "w") as f:
        json.dump(ppl, f, indent=1)
        f.write("\n")
    print(f"{name}: tokens {tokens.shape} logits {logits.shape}  eval ppl {ppl['perplexity']}"
          f" over {n} windows", flush=True)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models-dir", default=os.path.join(here, "models"))
    ap.add_argument("--text-dir", default=os.path.join(here, "text"))
    ap.add_argument("--golden-dir", default=os.path.join(here, "golden"))
    ap.add_argument("--models", default="tiny,small")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.golden_dir, exist_ok=True)
    tokenizer_golden(here, args.golden_dir, args.models_dir)
    for name in args.models.split(","):
        d = os.path.join(args.models_dir, name)
        if not os.path.exists(os.path.join(d, "model.safetensors")):
            sys.exit(f"{d}/model.safetensors missing: run data/train_models.py first")
        model_golden(name, d, args.text_dir, args.golden_dir)


if __name__ == "__main__":
    main()
