#!/usr/bin/env python3
"""Writes a GGUF v3 llama-arch checkpoint with Llama-2-7B (default) or
Llama-3-8B shapes and random weights, for measuring alrd-compress's time and
memory on a 7B/8B model.

llama2-7b: 32 layers, hidden 4096, 32 heads / 32 KV heads (head_dim 128),
ffn 11008, rope theta 10000. llama3-8b: 32 layers, hidden 4096, 32 heads /
8 KV heads (GQA), ffn 14336, rope theta 500000. Both rms eps 1e-5, untied
output. The tokenizer (vocab 49152) is copied from SmolLM2's GGUF so text
calibration works (--tokenizer: that GGUF, or one written by --tokenizer-only).

Matrices are Q4_0 (~3.8 GB in all), generated directly as Q4_0 blocks:
each block of 32 values is d * (q - 8) with q uniform in 0..15 and d drawn
so the weights have std ~0.02 (scaled ~1/sqrt(fan_in) for down/o). Norms
are F32 around 1. Values are random: only shapes and scale are realistic.

usage: make_synthetic_7b.py OUT.gguf [--shape llama2-7b|llama3-8b]
       [--tokenizer models/SmolLM2-135M-Instruct.Q4_1.gguf] [--layers N] (fewer layers for a quick check)
       make_synthetic_7b.py OUT.gguf --tokenizer-only (a GGUF of the tokenizer keys alone, ~1 MB, to carry
       to a machine without the model)
"""
import argparse
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

SHAPES = {  # hidden, heads, KV heads, ffn, rope theta
    "llama2-7b": (4096, 32, 32, 11008, 10000.0),
    "llama3-8b": (4096, 32, 8, 14336, 500000.0),
}
LAYERS = 32
QK = 32  # Q4_0 block: f16 scale + 16 bytes of nibbles


def q4_0(rng, rows, cols, std):
    """Random Q4_0 bytes [rows, cols/32*18] with values of about this std."""
    nb = cols // QK
    # uniform nibbles have std sqrt((16^2-1)/12) ~ 4.61 in units of d
    d = (std / 4.61) * rng.uniform(0.8, 1.2, size=(rows, nb)).astype(np.float32)
    out = np.empty((rows, nb, 18), dtype=np.uint8)
    out[:, :, 0:2] = d.astype(np.float16).view(np.uint8).reshape(rows, nb, 2)
    out[:, :, 2:] = rng.integers(0, 256, size=(rows, nb, 16), dtype=np.uint8)
    return out.reshape(rows, nb * 18)


def copy_tokenizer(w, path):
    r = GGUFReader(path)
    n = 0
    for key, f in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        t = f.types[0]
        if t == GGUFValueType.ARRAY:
            sub = f.types[1]
            if sub == GGUFValueType.STRING:
                val = [bytes(f.parts[i]).decode("utf-8", errors="surrogateescape") for i in f.data]
            else:
                val = [f.parts[i][0].item() for i in f.data]
            w.add_key_value(key, val, t, sub_type=sub)
        elif t == GGUFValueType.STRING:
            w.add_key_value(key, bytes(f.parts[f.data[0]]).decode("utf-8"), t)
        else:
            w.add_key_value(key, f.parts[f.data[0]][0].item(), t)
        n += 1
    tokens = r.fields["tokenizer.ggml.tokens"]
    return len(tokens.data), n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--tokenizer", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--layers", type=int, default=LAYERS)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama2-7b")
    ap.add_argument("--tokenizer-only", action="store_true")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    HIDDEN, HEADS, KV_HEADS, FFN, THETA = SHAPES[a.shape]
    HEAD_DIM = HIDDEN // HEADS
    KV = KV_HEADS * HEAD_DIM

    w = GGUFWriter(a.out, "llama")
    if a.tokenizer_only:
        vocab, nkeys = copy_tokenizer(w, a.tokenizer)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        w.close()
        print(f"wrote {a.out}: tokenizer only, vocab {vocab} ({nkeys} keys)", file=sys.stderr)
        return
    w.add_block_count(a.layers)
    w.add_context_length(4096)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(THETA)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HEAD_DIM)
    vocab, nkeys = copy_tokenizer(w, a.tokenizer)
    w.add_vocab_size(vocab)

    # (name, rows, cols, std); None rows = 1-D norm
    tensors = [("token_embd.weight", vocab, HIDDEN, 0.02)]
    for l in range(a.layers):
        b = f"blk.{l}."
        tensors += [
            (b + "attn_norm.weight", None, HIDDEN, 0),
            (b + "attn_q.weight", HIDDEN, HIDDEN, 0.02),
            (b + "attn_k.weight", KV, HIDDEN, 0.02),
            (b + "attn_v.weight", KV, HIDDEN, 0.02),
            (b + "attn_output.weight", HIDDEN, HIDDEN, 0.02 / np.sqrt(2 * a.layers)),
            (b + "ffn_norm.weight", None, HIDDEN, 0),
            (b + "ffn_gate.weight", FFN, HIDDEN, 0.02),
            (b + "ffn_up.weight", FFN, HIDDEN, 0.02),
            (b + "ffn_down.weight", HIDDEN, FFN, 0.02 / np.sqrt(2 * a.layers)),
        ]
    tensors += [("output_norm.weight", None, HIDDEN, 0), ("output.weight", vocab, HIDDEN, 0.02)]

    for name, rows, cols, _ in tensors:
        if rows is None:
            w.add_tensor_info(name, [cols], np.dtype(np.float32), cols * 4)
        else:
            nbytes = rows * (cols // QK) * 18
            w.add_tensor_info(name, [rows, (cols // QK) * 18], np.dtype(np.uint8), nbytes,
                              raw_dtype=GGMLQuantizationType.Q4_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for i, (name, rows, cols, std) in enumerate(tensors):
        if rows is None:
            data = (1.0 + 0.05 * rng.standard_normal(cols)).astype(np.float32)
        else:
            data = q4_0(rng, rows, cols, std)
        w.write_tensor_data(data)
        if sys.stderr.isatty():
            print(f"\r{i + 1}/{len(tensors)} {name}      ", end="", file=sys.stderr)
    w.close()
    print(f"\nwrote {a.out}: {a.shape}, {a.layers} layers, vocab {vocab} ({nkeys} tokenizer keys copied)", file=sys.stderr)


if __name__ == "__main__":
    main()
