#!/usr/bin/env python3
"""Train the project's tokenizer and its two reference Llama models (`tiny`, `small`).

Inputs : data/text/{train,calib,eval}.txt, made by data/fetch_text.sh.
Outputs: data/models/<name>/{config.json, generation_config.json, model.safetensors (bf16),
         tokenizer.json, tokenizer_config.json, training.json}.

Needs torch, transformers, tokenizers and numpy; no network. Meant for one CUDA GPU (it also
runs, slowly, on the CPU). Regenerate with (from the repository root):

    PYTHONUNBUFFERED=1 python3 data/train_models.py

Recipe, in short
  * tokenizer: byte-level BPE (Hugging Face `tokenizers`), GPT-2 pre-tokenizer regex,
    add_prefix_space=False, ByteLevel decoder, vocab 4096, special tokens <s>=0 </s>=1 <unk>=2,
    trained on train.txt split into lines (line ends kept).
  * data: train.txt tokenized once as a whole (no BOS). Each training row is 512 ids starting at
    a uniformly random offset; one row in four is instead <s> followed by 511 ids, so that the
    models also behave with a leading BOS.
  * optimizer: AdamW (betas 0.9/0.95, weight decay 0.1 on matrices only), fp32 master weights,
    bf16 autocast, gradient clipping 1.0, linear warmup then cosine decay to 10% of the peak.
  * model selection: held-out loss on calib.txt every `eval_every` steps. Each model is trained
    once for each of a few schedule lengths (RECIPE[...]["steps"]); the checkpoint with the
    lowest calib loss over all runs is kept and saved in bf16. eval.txt is never looked at
    during training or selection; it is only scored at the end.
  * perplexity (the reference way): a text is tokenized once without BOS; it is cut into
    non-overlapping windows of 512 ids (the last partial window is dropped); the mean NLL of
    the 511 next-token predictions of every window, over all windows, is exponentiated. The
    final numbers are the fp32 forward of the saved bf16 weights.
"""
import argparse
import copy
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

SEQLEN = 512
VOCAB = 4096
SPECIALS = ["<s>", "</s>", "<unk>"]  # ids 0, 1, 2
BOS_ID, EOS_ID, UNK_ID = 0, 1, 2
TOKENIZER_SEED = 0

# Architecture of the reference models. The sizes 192 = 12*2^4, 384 = 12*2^5 and
# 1280 = 20*2^6 are chosen on purpose: QuaRot needs non-power-of-two Hadamard matrices there.
ARCH = {
    "tiny": dict(hidden_size=192, num_attention_heads=3, num_key_value_heads=1,
                 intermediate_size=384, num_hidden_layers=4),
    "small": dict(hidden_size=384, num_attention_heads=6, num_key_value_heads=2,
                  intermediate_size=1280, num_hidden_layers=8),
}
# Size limits on disk (bytes, the whole model folder).
MAX_BYTES = {"tiny": 6_000_000, "small": 40_000_000}
# Training recipe of each model. train.txt has only ~2.6M tokens, so the models start to
# memorize it after a few epochs (small: ~6 epochs). Each model is therefore trained with every
# schedule length in `steps` (same seed, same data order; warmup then cosine over that length)
# and the run with the lowest calib.txt loss at any evaluation is kept.
RECIPE = {
    "tiny": dict(seed=1, steps=[1200, 2000, 2800], batch=32, lr=3e-3, warmup=150,
                 eval_every=100),
    "small": dict(seed=2, steps=[600, 900, 1200], batch=32, lr=1.5e-3, warmup=100,
                  eval_every=50),
}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_text(path):
    with open(path, "r", encoding="utf-8", newline="") as f:
        return f.read()


# ----------------------------------------------------------------------------------------------
# tokenizer
def train_tokenizer(train_text):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=2,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = train_text.splitlines(keepends=True)
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    # add_special_tokens=True (the transformers default) puts <s> in front, as Llama does.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", BOS_ID)])
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


def wrap_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        model_max_length=SEQLEN, clean_up_tokenization_spaces=False)


def encode(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


# ----------------------------------------------------------------------------------------------
# model
def make_config(name):
    from transformers import LlamaConfig

    a = ARCH[name]
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=a["hidden_size"],
        intermediate_size=a["intermediate_size"],
        num_hidden_layers=a["num_hidden_layers"],
        num_attention_heads=a["num_attention_heads"],
        num_key_value_heads=a["num_key_value_heads"],
        head_dim=64,
        hidden_act="silu",
        max_position_embeddings=SEQLEN,
        initializer_range=0.02,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=None,
        use_cache=True,
    )
    assert cfg.head_dim * cfg.num_attention_heads == cfg.hidden_size
    assert not cfg.tie_word_embeddings
    return cfg


@torch.no_grad()
def windows_nll(model, ids, device, batch=32, autocast=False):
    """Reference perplexity: mean next-token NLL over non-overlapping SEQLEN windows."""
    n = len(ids) // SEQLEN
    x = torch.as_tensor(np.asarray(ids[: n * SEQLEN], dtype=np.int64)).view(n, SEQLEN)
    total = 0.0
    for i in range(0, n, batch):
        b = x[i: i + batch].to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=b).logits
        loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                               b[:, 1:].reshape(-1), reduction="sum")
        total += loss.item()
    return total / (n * (SEQLEN - 1)), n


def param_count(model):
    return sum(p.numel() for p in model.parameters())


def dir_size(path):
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def train_run(name, recipe, data, device, time_budget):
    """One training run with recipe["steps"] an int; returns the best (calib) checkpoint."""
    from transformers import LlamaForCausalLM

    t0 = time.time()
    torch.manual_seed(recipe["seed"])
    np.random.seed(recipe["seed"])
    cfg = make_config(name)
    model = LlamaForCausalLM(cfg).to(device=device, dtype=torch.float32)
    model.train()
    n_params = param_count(model)
    tag = f"{name}/{recipe['steps']}"
    print(f"[{tag}] params {n_params:,}  recipe {recipe}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe["lr"], betas=(0.9, 0.95), eps=1e-8, fused=(device.type == "cuda"))
    steps, warmup = recipe["steps"], recipe["warmup"]

    def lr_at(step):  # step counts from 0
        if step < warmup:
            return recipe["lr"] * (step + 1) / warmup
        p = (step - warmup) / max(1, steps - warmup)
        return recipe["lr"] * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * p)))

    train_ids = torch.as_tensor(np.asarray(data["train"], dtype=np.int64))
    gen = torch.Generator().manual_seed(1000 + recipe["seed"])
    B = recipe["batch"]
    use_amp = device.type == "cuda"

    def batch_rows():
        offs = torch.randint(0, len(train_ids) - SEQLEN, (B,), generator=gen)
        rows = torch.stack([train_ids[o: o + SEQLEN] for o in offs.tolist()])
        with_bos = torch.rand(B, generator=gen) < 0.25
        if with_bos.any():
            rows[with_bos, 1:] = rows[with_bos, :-1].clone()
            rows[with_bos, 0] = BOS_ID
        return rows

    log = []
    best = {"calib_loss": float("inf"), "step": -1, "state": None}
    t_train = time.time()
    last_loss = float("nan")
    stopped_early = False
    step = 0
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x = batch_rows().to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done = step + 1
        if done % recipe["eval_every"] == 0 or done == steps:
            last_loss = loss.item()
            model.eval()
            cl, _ = windows_nll(model, data["calib"], device, autocast=use_amp)
            model.train()
            elapsed = time.time() - t0
            improved = cl < best["calib_loss"]
            if improved:
                best.update(calib_loss=cl, step=done,
                            state={k: v.detach().to("cpu", copy=True)
                                   for k, v in model.state_dict().items()})
            log.append({"step": done, "lr": lr_at(step), "train_loss": round(last_loss, 5),
                        "calib_loss": round(cl, 5), "elapsed_s": round(elapsed, 1)})
            print(f"[{tag}] step {done:5d}/{steps}  lr {lr_at(step):.2e}  train loss {last_loss:.4f}"
                  f"  calib ppl {math.exp(cl):8.3f}{' *' if improved else '  '}"
                  f"  elapsed {elapsed:6.1f}s", flush=True)
            if time_budget and time.time() - t0 > time_budget and done < steps:
                print(f"[{tag}] time budget {time_budget}s reached at step {done}; stopping",
                      flush=True)
                stopped_early = True
                break
    train_wall = time.time() - t_train
    print(f"[{tag}] best calib ppl {math.exp(best['calib_loss']):.3f} at step {best['step']}"
          f"  ({train_wall:.1f}s)", flush=True)
    return {"model": model, "recipe": recipe, "n_params": n_params, "best": best, "log": log,
            "steps_run": step + 1, "stopped_early": stopped_early, "train_wall": train_wall}


def finalize(name, run, candidates, hf_tok, data, device, out_dir, t0):
    """Round the kept checkpoint to bf16, save it, and score it (fp32 forward)."""
    model, recipe, best, log = run["model"], run["recipe"], run["best"], run["log"]
    n_params, stopped_early, train_wall = run["n_params"], run["stopped_early"], run["train_wall"]
    model.load_state_dict(best["state"])
    model = model.to(torch.bfloat16)
    model.config.use_cache = True
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    hf_tok.save_pretrained(out_dir)

    # Final numbers: the fp32 forward of the saved bf16 weights.
    model = model.float().eval()
    res = {}
    for split in ("train", "calib", "eval"):
        nll, n = windows_nll(model, data[split], device, autocast=False)
        res[split] = {"windows": n, "nll": round(nll, 6), "perplexity": round(math.exp(nll), 4)}
    total_wall = time.time() - t0
    info = {
        "model": name,
        "architecture": ARCH[name],
        "parameters": n_params,
        "recipe": recipe,
        "seqlen": SEQLEN,
        "tokens_per_step": recipe["batch"] * SEQLEN,
        "steps_run": run["steps_run"],
        "stopped_early": stopped_early,
        "candidates": candidates,
        "best_step": best["step"],
        "best_calib_loss": round(best["calib_loss"], 6),
        "perplexity_fp32_of_bf16": res,
        "train_wall_s_kept_run": round(train_wall, 1),
        "total_wall_s_all_runs": round(total_wall, 1),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "versions": versions(),
        "texts_sha256": data["sha256"],
        "log": log,
    }
    with open(os.path.join(out_dir, "training.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    print(f"[{name}] best step {best['step']}  ppl train {res['train']['perplexity']:.3f}"
          f"  calib {res['calib']['perplexity']:.3f}  eval {res['eval']['perplexity']:.3f}"
          f"  ({res['eval']['windows']} eval windows)  wall {total_wall:.1f}s"
          f"  size {dir_size(out_dir):,} bytes", flush=True)
    if dir_size(out_dir) > MAX_BYTES[name]:
        print(f"[{name}] WARNING: {dir_size(out_dir):,} bytes on disk, over the limit of "
              f"{MAX_BYTES[name]:,}", flush=True)
    return info


def versions():
    import tokenizers
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "numpy": np.__version__}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--text-dir", default=os.path.join(here, "text"))
    ap.add_argument("--out", default=os.path.join(here, "models"))
    ap.add_argument("--models", default="tiny,small")
    ap.add_argument("--steps", default="", help="override the schedule lengths, e.g. tiny=100,small=100:200")
    ap.add_argument("--eval-every", type=int, default=0, help="override eval interval")
    ap.add_argument("--time-budget", default="",
                    help="seconds per model after which training stops and the best is saved, "
                         "e.g. tiny=200,small=330")
    ap.add_argument("--check-tokenizer-determinism", action="store_true")
    args = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}  versions {versions()}", flush=True)

    t0 = time.time()
    texts, data = {}, {"sha256": {}}
    for split in ("train", "calib", "eval"):
        p = os.path.join(args.text_dir, f"{split}.txt")
        texts[split] = read_text(p)
        data["sha256"][f"{split}.txt"] = sha256_file(p)
    tok = train_tokenizer(texts["train"])
    print(f"tokenizer trained in {time.time() - t0:.1f}s", flush=True)
    if args.check_tokenizer_determinism:
        tok2 = train_tokenizer(texts["train"])
        same = tok.to_str() == tok2.to_str()
        print(f"tokenizer determinism: second training identical = {same}", flush=True)
        if not same:
            sys.exit("tokenizer training is not deterministic")
    hf_tok = wrap_tokenizer(tok)
    t1 = time.time()
    for split in ("train", "calib", "eval"):
        data[split] = encode(tok, texts[split])
        print(f"  {split}.txt: {len(texts[split].encode()):,} bytes -> {len(data[split]):,} tokens"
              f" ({len(data[split]) // SEQLEN} windows of {SEQLEN})", flush=True)
    print(f"tokenized in {time.time() - t1:.1f}s", flush=True)

    overrides = dict(kv.split("=") for kv in args.steps.split(",") if kv)
    budgets = dict(kv.split("=") for kv in args.time_budget.split(",") if kv)
    for name in args.models.split(","):
        t_model = time.time()
        base = dict(RECIPE[name])
        if name in overrides:
            base["steps"] = [int(v) for v in overrides[name].split(":")]
        if args.eval_every:
            base["eval_every"] = args.eval_every
        budget = float(budgets.get(name, 0))
        kept, candidates = None, []
        for steps in base["steps"]:
            recipe = dict(base, steps=steps, warmup=min(base["warmup"], max(1, steps // 10)))
            left = budget - (time.time() - t_model) if budget else 0
            if budget and left <= 0:
                print(f"[{name}] time budget spent; schedule {steps} skipped", flush=True)
                continue
            run = train_run(name, recipe, data, device, left)
            candidates.append({"steps": steps, "best_step": run["best"]["step"],
                               "best_calib_loss": round(run["best"]["calib_loss"], 6),
                               "best_calib_ppl": round(math.exp(run["best"]["calib_loss"]), 3),
                               "steps_run": run["steps_run"]})
            if kept is None or run["best"]["calib_loss"] < kept["best"]["calib_loss"]:
                kept = run
            else:
                del run
        print(f"[{name}] kept the schedule of {kept['recipe']['steps']} steps", flush=True)
        finalize(name, kept, candidates, hf_tok, data, device, os.path.join(args.out, name),
                 t_model)


if __name__ == "__main__":
    main()
