#!/usr/bin/env python3
"""Cross-check alrd's CPU runtime against Hugging Face transformers.

Runs on the device machine (PyTorch + transformers there), on the HF
directory that `alrd-convert MODEL.gguf --to-hf DIR` exported, so both sides
use the very same weights:
  1. token ids: the `tokenizers` library on DIR/tokenizer.json against the ids
     alrd-run dumped (--tokens-out) for the whole evaluation file;
  2. last-position logits of fixed prompts (alrd-run --logits-out), max abs diff;
  3. perplexity of the whole file, llama.cpp convention (chunks of ctx tokens,
     second half scored), on alrd's token ids, against alrd-run's PPL line.

usage: hf_crosscheck.py --hf DIR --alrd-run BIN --model MODEL --text FILE
                        [--ctx 512] [--alrd-ppl-log LOG] [--out result.json]
"""
import argparse, json, math, os, re, subprocess, sys, tempfile

import numpy as np
import torch

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "In 1923, the physicist",
    "<|im_start|>user\nWhat is 12 * 7?<|im_end|>\n<|im_start|>assistant\n",
    "Zürich, Malmö and Kraków are cities; 東京 is",
]


def hf_ppl(model, ids, ctx, dev):
    n_chunks = len(ids) // ctx
    first = ctx // 2
    nll, nll2, count = 0.0, 0.0, 0
    with torch.no_grad():
        for c in range(n_chunks):
            chunk = torch.tensor(ids[c * ctx:(c + 1) * ctx], device=dev)[None]
            logits = model(chunk).logits[0].double()
            lp = torch.log_softmax(logits[first:ctx - 1], dim=-1)
            tgt = chunk[0, first + 1:ctx]
            v = -lp.gather(1, tgt[:, None])[:, 0]
            nll += v.sum().item()
            nll2 += (v * v).sum().item()
            count += v.numel()
    mean = nll / count
    var = nll2 / count - mean * mean
    ppl = math.exp(mean)
    return ppl, math.sqrt(var / (count - 1)) * ppl, count, n_chunks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf", required=True)
    ap.add_argument("--alrd-run", required=True)
    ap.add_argument("--model", required=True, help="what alrd-run loads (the GGUF)")
    ap.add_argument("--text", required=True)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--alrd-ppl-log", help="output of alrd-run --ppl on the whole file")
    ap.add_argument("--out", default="crosscheck.json")
    a = ap.parse_args()
    from transformers import LlamaForCausalLM
    from tokenizers import Tokenizer

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = LlamaForCausalLM.from_pretrained(a.hf, torch_dtype=torch.float32).to(dev).eval()
    res = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu"}
    tmp = tempfile.mkdtemp()

    # 1. tokens
    tok_path = os.path.join(tmp, "ids.bin")
    log = subprocess.run([a.alrd_run, a.model, "--ppl", a.text, "--ctx", str(a.ctx), "--chunks", "1",
                          "--tokens-out", tok_path], capture_output=True, text=True)
    if log.returncode:
        sys.exit("alrd-run failed: " + log.stderr)
    ours = np.fromfile(tok_path, dtype=np.int32).tolist()
    text = open(a.text, encoding="utf-8", newline="").read()
    theirs = Tokenizer.from_file(os.path.join(a.hf, "tokenizer.json")).encode(text, add_special_tokens=False).ids
    mism = next((i for i, (x, y) in enumerate(zip(ours, theirs)) if x != y), None)
    res["tokens"] = {"alrd": len(ours), "tokenizers": len(theirs), "identical": ours == theirs,
                     "first_mismatch": mism}

    # 2. logits of fixed prompts
    worst = 0.0
    res["logits"] = []
    for p in PROMPTS:
        lp = os.path.join(tmp, "logits.bin")
        r = subprocess.run([a.alrd_run, a.model, "-p", p, "-n", "0", "--logits-out", lp],
                           capture_output=True, text=True)
        if r.returncode:
            sys.exit("alrd-run failed: " + r.stderr)
        ours_l = np.fromfile(lp, dtype=np.float32)
        # the same ids on both sides: alrd's own tokenization of the prompt
        ids = Tokenizer.from_file(os.path.join(a.hf, "tokenizer.json")).encode(p, add_special_tokens=False).ids
        with torch.no_grad():
            ref = model(torch.tensor([ids], device=dev)).logits[0, -1].float().cpu().numpy()
        d = float(np.abs(ref - ours_l).max())
        worst = max(worst, d)
        res["logits"].append({"prompt": p, "n_tokens": len(ids), "max_abs_diff": d,
                              "hf_logits_at": {str(i): float(ref[i]) for i in (7042, 253, 260, 1)},
                              "argmax_alrd": int(ours_l.argmax()), "argmax_hf": int(ref.argmax())})
    res["logits_max_abs_diff"] = worst

    # 3. perplexity on the whole file, same tokens, same chunks
    ppl2, err2, count2, _ = hf_ppl(model, ours[:2 * a.ctx], a.ctx, dev)
    res["hf_ppl_first_2_chunks"] = {"ppl": ppl2, "stderr": err2, "scored": count2}
    ppl, err, count, n_chunks = hf_ppl(model, ours, a.ctx, dev)
    res["hf_ppl"] = {"ppl": ppl, "stderr": err, "scored": count, "chunks": n_chunks, "ctx": a.ctx}
    if a.alrd_ppl_log:
        m = re.search(r"PPL = ([0-9.]+) \+/- ([0-9.]+)", open(a.alrd_ppl_log).read())
        if m:
            ours_ppl = float(m.group(1))
            res["alrd_ppl"] = ours_ppl
            res["ppl_rel_diff"] = abs(ours_ppl - ppl) / ppl
    print(json.dumps(res, indent=2))
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
