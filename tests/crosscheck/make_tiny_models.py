#!/usr/bin/env python3
"""Writes tests/crosscheck/conformance/: tiny random models of each
architecture alrd reads from Hugging Face checkpoints, made with transformers,
and transformers' logits for them, so that tests/test_conformance.c checks
alrd's forward pass against transformers with no download and no Python.

    pip install torch transformers safetensors numpy
    python3 tests/crosscheck/make_tiny_models.py [--hf-out DIR]

The models (hidden 64, 2 layers, 4 heads / 2 KV heads, head_dim 16,
intermediate 128, vocab 263 = 256 byte tokens + 6 merges + <|endoftext|>):
  llama3   LlamaForCausalLM, rope_theta 500000, rope_scaling llama3 (factor 8,
           low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings
           64, so that at head_dim 16 one frequency is smoothed and six are
           divided by 8), tied embeddings;
  qwen2    Qwen2ForCausalLM (q/k/v biases, no o bias), rope_theta 1e6,
           rms_norm_eps 1e-6, untied lm_head;
  mistral  MistralForCausalLM, GQA, sliding_window null, untied lm_head.

The weights are not committed (fp32 safetensors of three models would be
about 1.2 MB). They come from a generator simple enough to write again in C
(tests/test_conformance.c does): each tensor of the state dict, in HF's
[out, in] row-major order, from a 64-bit LCG seeded with the FNV-1a hash of
its name; element = (u % 4097 - 2048) * 2^-shift, u = state >> 33, or
1 + that for norm weights. Every value is exact in fp32, so both sides hold
the very same model. The script loads these values into the transformers
model, saves it with save_pretrained (to --hf-out, for checking alrd on the
files transformers itself writes: ALRD_CONFORMANCE_HF=DIR make test), and
checks that the saved state dict is what the generator gives.

Per model directory: config.json as transformers 5 writes it
(rope_parameters), config.legacy.json as transformers 4 checkpoints on the
Hub have it (rope_theta + rope_scaling, sliding_window/use_sliding_window),
tensors.txt (name rows cols kind shift: the generator's recipe, in
state-dict order) and logits.bin. The tokenizer (tokenizer.json,
tokenizer_config.json: byte-level BPE) is shared, in the parent directory.

logits.bin (little-endian): "ALRDCF01", u32 n_tokens, u32 vocab,
n_tokens int32 token ids, then n_tokens x vocab float32: the logits at every
position of one forward pass over the ids, computed by transformers in
float64 (eager attention) and rounded to float32. The script prints how far
transformers' own float32 forward pass is from that, for scale."""
import argparse, json, os, shutil, struct, sys, tempfile

import numpy as np
import torch
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "conformance")

# ------------------------------------------------------------ tokenizer

def bytes_to_unicode():
    """GPT-2's printable stand-in for each byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))

MERGES = [("t", "h"), ("th", "e"), ("\u0120", "the"), ("a", "n"), ("an", "d"), ("\u0120", "and")]
EOS = "<|endoftext|>"
VOCAB = 256 + len(MERGES) + 1

def tokenizer_json():
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    for i, (a, b) in enumerate(MERGES):
        vocab[a + b] = 256 + i
    vocab[EOS] = VOCAB - 1
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": VOCAB - 1, "content": EOS, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": [[a, b] for a, b in MERGES]},
    }

TOKENIZER_CONFIG = {
    "add_bos_token": False,
    "add_eos_token": False,
    "bos_token": None,
    "eos_token": EOS,
    "model_max_length": 512,
    "tokenizer_class": "PreTrainedTokenizerFast",
}

# ------------------------------------------------------------ weights

M64 = (1 << 64) - 1

def fnv1a(name):
    h = 0xCBF29CE484222325
    for c in name.encode():
        h = ((h ^ c) * 0x100000001B3) & M64
    return h

def gen_values(name, numel, kind, shift):
    """The generator tests/test_conformance.c repeats: see the module doc."""
    s = fnv1a(name)
    k = np.empty(numel, dtype=np.int64)
    for i in range(numel):
        s = (s * 6364136223846793005 + 1442695040888963407) & M64
        k[i] = (s >> 33) % 4097 - 2048
    v = k.astype(np.float64) * 2.0 ** -shift
    if kind == "norm":
        v += 1.0
    out = v.astype(np.float32)
    assert np.array_equal(out.astype(np.float64), v), name  # exact in fp32
    return out

def recipe(name, shape):
    """(kind, shift) of a tensor: weights of amplitude about 1.7/sqrt(fan_in)
    (activations stay O(1) through the layers), embeddings of amplitude 1,
    norm weights 1 +- 1/8, biases +- 1/2."""
    if name.endswith("norm.weight"):
        return "norm", 14
    if name.endswith(".bias"):
        return "bias", 12
    if "embed_tokens" in name or name == "lm_head.weight":
        return "weight", 11
    fan_in = shape[1]
    return "weight", {64: 13, 128: 14}[fan_in]

# ------------------------------------------------------------ models

COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
              hidden_act="silu", eos_token_id=VOCAB - 1, bos_token_id=None)

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}

def make_llama3():
    cfg = LlamaConfig(**COMMON, rms_norm_eps=1e-5, tie_word_embeddings=True,
                      rope_parameters=dict(LLAMA3_ROPE, rope_theta=500000.0))
    legacy = dict(rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE))
    return LlamaForCausalLM, cfg, legacy

def make_qwen2():
    cfg = Qwen2Config(**COMMON, rms_norm_eps=1e-6, tie_word_embeddings=False,
                      rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                      use_sliding_window=False, sliding_window=None)
    # as Qwen2.5 checkpoints say it: a window that is switched off
    legacy = dict(rope_theta=1000000.0, rope_scaling=None, use_sliding_window=False, sliding_window=131072,
                  max_window_layers=21)
    return Qwen2ForCausalLM, cfg, legacy

def make_mistral():
    cfg = MistralConfig(**COMMON, rms_norm_eps=1e-5, tie_word_embeddings=False,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, sliding_window=None)
    legacy = dict(rope_theta=10000.0, sliding_window=None)
    return MistralForCausalLM, cfg, legacy

MODELS = [("llama3", make_llama3), ("qwen2", make_qwen2), ("mistral", make_mistral)]

# 24 token ids: every part of the vocabulary, the merges and eos included
TOKENS = [(i * 89 + 7) % VOCAB for i in range(22)] + [VOCAB - 2, VOCAB - 1]

def legacy_config(cfg_json, extra):
    """transformers 4's spelling of the same config (what the Hub's Llama-3,
    Qwen2 and Mistral checkpoints carry)."""
    c = {k: v for k, v in cfg_json.items() if k not in ("rope_parameters", "layer_types")}
    c.update(extra)
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    c["transformers_version"] = "4.46.0"
    return dict(sorted(c.items()))

def logits_of(model, dtype):
    m = model.to(dtype)
    with torch.no_grad():
        out = m(torch.tensor([TOKENS]), use_cache=False).logits[0]
    return out.to(torch.float64).numpy()

def build(tag, make, hf_out):
    cls, cfg, legacy_extra = make()
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = cls(cfg).eval()
    sd = model.state_dict()
    lines = []
    with torch.no_grad():
        for name, t in sd.items():
            if name == "lm_head.weight" and cfg.tie_word_embeddings:
                continue  # the same storage as embed_tokens; not saved
            kind, shift = recipe(name, tuple(t.shape))
            v = gen_values(name, t.numel(), kind, shift)
            t.copy_(torch.from_numpy(v).reshape(t.shape))
            rows, cols = (t.shape[0], t.shape[1]) if t.dim() == 2 else (t.shape[0], 0)
            lines.append(f"{name} {rows} {cols} {kind} {shift}")
    model.load_state_dict(sd)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    d = os.path.join(OUT, tag)
    os.makedirs(d, exist_ok=True)
    save = os.path.join(hf_out, tag) if hf_out else tempfile.mkdtemp()
    model.save_pretrained(save, safe_serialization=True)
    with open(os.path.join(save, "config.json")) as f:
        cfg_json = json.load(f)
    # the saved files hold exactly the generator's values
    from safetensors.numpy import load_file
    saved = load_file(os.path.join(save, "model.safetensors"))
    names = [l.split()[0] for l in lines]
    assert sorted(saved) == sorted(names), (tag, sorted(set(saved) ^ set(names)))
    for l in lines:
        name, r, c, kind, shift = l.split()
        assert saved[name].dtype == np.float32
        assert np.array_equal(saved[name].reshape(-1), gen_values(name, saved[name].size, kind, int(shift))), name
    shutil.copy(os.path.join(save, "config.json"), os.path.join(d, "config.json"))
    legacy = legacy_config(cfg_json, legacy_extra)
    with open(os.path.join(d, "config.legacy.json"), "w") as f:
        json.dump(legacy, f, indent=2)
        f.write("\n")
    with open(os.path.join(d, "tensors.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")

    # the legacy spelling means the same model to transformers too
    cfg2 = type(cfg).from_dict(legacy)
    cfg2._attn_implementation = "eager"
    m2 = cls(cfg2).eval()
    m2.load_state_dict(model.state_dict())

    ref = logits_of(model, torch.float64)
    f32 = logits_of(model, torch.float32)
    leg = logits_of(m2, torch.float64)
    assert np.allclose(ref, leg, rtol=0, atol=1e-12), tag
    rel_l2 = np.linalg.norm(f32 - ref, axis=1) / np.linalg.norm(ref, axis=1)
    rel_max = np.abs(f32 - ref).max(axis=1) / np.abs(ref).max(axis=1)
    print(f"{tag}: logits |max| {np.abs(ref).max():.2f}, std {ref.std():.2f}; transformers fp32 vs fp64: "
          f"rel L2 <= {rel_l2.max():.2e}, max-abs/max|ref| <= {rel_max.max():.2e}", file=sys.stderr)

    with open(os.path.join(d, "logits.bin"), "wb") as f:
        f.write(b"ALRDCF01" + struct.pack("<II", len(TOKENS), VOCAB))
        f.write(np.asarray(TOKENS, dtype="<i4").tobytes())
        f.write(ref.astype("<f4").tobytes())
    if hf_out:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(OUT, name), os.path.join(save, name))
    else:
        shutil.rmtree(save)
    return ref

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hf-out", help="also keep the HF directories transformers saved, under this directory")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}", file=sys.stderr)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(), f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(OUT, "tokenizer_config.json"), "w") as f:
        json.dump(TOKENIZER_CONFIG, f, indent=2)
        f.write("\n")
    # the tokenizer is one the tokenizers library reads and means
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(OUT, "tokenizer.json"))
    assert tok.get_vocab_size() == VOCAB
    assert tok.encode("the and", add_special_tokens=False).ids == [257, 261]
    if a.hf_out:
        os.makedirs(a.hf_out, exist_ok=True)
    for tag, make in MODELS:
        build(tag, make, a.hf_out)

if __name__ == "__main__":
    main()
