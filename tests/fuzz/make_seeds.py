#!/usr/bin/env python3
"""Writes the small seed inputs under tests/fuzz/corpus/<target>/ (run from
the repo root; needs numpy and gguf). The .alrd seeds are made afterwards
from corpus/gguf/micro-llama-f32.gguf by tests/fuzz/make_alrd_seeds.sh."""
import json, os, struct, sys
import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

OUT = "tests/fuzz/corpus"
rng = np.random.default_rng(7)


def put(target, name, data):
    os.makedirs(f"{OUT}/{target}", exist_ok=True)
    with open(f"{OUT}/{target}/{name}", "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def byte_chars():  # GPT-2 bytes_to_unicode
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def tiny_bpe_vocab():
    bc = byte_chars()
    toks = list(bc)
    merges = [("t", "h"), ("th", "e"), ("Ġ", "the"), ("a", "n"), ("an", "d"), ("Ġ", "and"), ("i", "n"), ("Ġ", "a")]
    for a, b in merges:
        toks.append(a + b)
    toks += ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    return toks, [f"{a} {b}" for a, b in merges]


def tiny_model(path, qk_type=Q.Q4_1):
    toks, merges = tiny_bpe_vocab()
    V, H, NH, NKV, HD, FF = len(toks), 32, 2, 1, 16, 64
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1); w.add_context_length(128); w.add_embedding_length(H)
    w.add_feed_forward_length(FF); w.add_head_count(NH); w.add_head_count_kv(NKV)
    w.add_layer_norm_rms_eps(1e-5); w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("smollm")
    w.add_token_list(toks)
    w.add_token_types([1] * (V - 3) + [3, 3, 3])
    w.add_token_merges(merges)
    w.add_bos_token_id(V - 2); w.add_eos_token_id(V - 1)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}")

    def t(name, shape, qt=Q.F32, scale=0.2):
        a = (rng.standard_normal(shape) * scale).astype(np.float32)
        if name.endswith("norm.weight"):
            a = np.ones(shape, np.float32)
        if qt == Q.F32:
            w.add_tensor(name, a)
        elif qt == Q.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(a, qt), raw_dtype=qt)
    t("token_embd.weight", (V, H), Q.Q8_0)
    t("output_norm.weight", (H,))
    t("blk.0.attn_norm.weight", (H,)); t("blk.0.ffn_norm.weight", (H,))
    t("blk.0.attn_q.weight", (NH * HD, H), qk_type)
    t("blk.0.attn_k.weight", (NKV * HD, H), qk_type)
    t("blk.0.attn_v.weight", (NKV * HD, H), Q.F16)
    t("blk.0.attn_output.weight", (H, NH * HD), Q.Q4_0)
    t("blk.0.ffn_gate.weight", (FF, H), Q.Q5_0)
    t("blk.0.ffn_up.weight", (FF, H), Q.Q5_1)
    t("blk.0.ffn_down.weight", (H, FF), Q.Q8_0)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def micro_model(path):
    """1 layer, hidden 16 (one head of 16), all F32, a 9-token byte-level vocab: a tiny
    model alrd-compress runs on (the .alrd seeds are made from it)."""
    toks = ["a", "b", "Ġ", "ab", "Ġab", "Ċ", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    V, H, NH, NKV, HD, FF = len(toks), 16, 1, 1, 16, 16
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1); w.add_context_length(64); w.add_embedding_length(H)
    w.add_feed_forward_length(FF); w.add_head_count(NH); w.add_head_count_kv(NKV)
    w.add_layer_norm_rms_eps(1e-5); w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("gpt2")
    w.add_token_list(toks); w.add_token_types([1] * 6 + [3, 3, 3])
    w.add_token_merges(["a b", "Ġ ab"]); w.add_eos_token_id(6)
    for name, shape in [("token_embd.weight", (V, H)), ("output_norm.weight", (H,)),
                        ("blk.0.attn_norm.weight", (H,)), ("blk.0.ffn_norm.weight", (H,)),
                        ("blk.0.attn_q.weight", (NH * HD, H)), ("blk.0.attn_k.weight", (NKV * HD, H)),
                        ("blk.0.attn_v.weight", (NKV * HD, H)), ("blk.0.attn_output.weight", (H, NH * HD)),
                        ("blk.0.ffn_gate.weight", (FF, H)), ("blk.0.ffn_up.weight", (FF, H)),
                        ("blk.0.ffn_down.weight", (H, FF))]:
        a = np.ones(shape, np.float32) if name.endswith("norm.weight") else \
            (rng.standard_normal(shape) * 0.3).astype(np.float32)
        w.add_tensor(name, a)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def spm_vocab(path):
    w = gguf.GGUFWriter(path, "llama")
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces = ["▁", "▁t", "he", "▁the", "▁a", "nd", "▁and", "e", "t", "h", "a", "n", "d", "▁▁"]
    toks += pieces
    w.add_tokenizer_model("llama"); w.add_token_list(toks)
    w.add_token_scores([0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(len(pieces))])
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * len(pieces))
    w.add_bos_token_id(1); w.add_eos_token_id(2); w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def st_bytes(tensors):
    hdr, data = {"__metadata__": {"format": "pt"}}, b""
    for name, (dt, arr) in tensors.items():
        raw = arr.astype({"F32": np.float32, "F16": np.float16}[dt]).tobytes() if dt != "BF16" else \
            (arr.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
        hdr[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def main():
    os.makedirs(f"{OUT}/gguf", exist_ok=True)
    tiny_model(f"{OUT}/gguf/tiny-llama.gguf")
    spm_vocab(f"{OUT}/gguf/tiny-spm-vocab.gguf")
    micro_model(f"{OUT}/gguf/micro-llama-f32.gguf")

    # safetensors: the tiny model fuzz_safetensors' fixed config.json describes
    H, NH, NKV, FF, V = 8, 2, 1, 16, 8
    HD = H // NH
    r = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.3
    ts = {"model.embed_tokens.weight": ("F32", r(V, H)), "model.norm.weight": ("F32", np.ones(H)),
          "model.layers.0.input_layernorm.weight": ("F32", np.ones(H)),
          "model.layers.0.post_attention_layernorm.weight": ("BF16", np.ones(H)),
          "model.layers.0.self_attn.q_proj.weight": ("F16", r(NH * HD, H)),
          "model.layers.0.self_attn.k_proj.weight": ("F16", r(NKV * HD, H)),
          "model.layers.0.self_attn.v_proj.weight": ("BF16", r(NKV * HD, H)),
          "model.layers.0.self_attn.o_proj.weight": ("F32", r(H, NH * HD)),
          "model.layers.0.mlp.gate_proj.weight": ("F16", r(FF, H)),
          "model.layers.0.mlp.up_proj.weight": ("F16", r(FF, H)),
          "model.layers.0.mlp.down_proj.weight": ("F32", r(H, FF))}
    put("safetensors", "tiny-model.safetensors", st_bytes(ts))
    put("safetensors", "small.safetensors", st_bytes({"a": ("F32", r(2, 3)), "b": ("BF16", r(4)), "c": ("F16", r(1, 1, 2))}))
    put("safetensors", "index.json", json.dumps({"metadata": {"total_size": 16},
                                                 "weight_map": {"x": "a.safetensors", "y": "b.safetensors"}}))

    # config.json
    smol = {"architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
            "hidden_size": 576, "intermediate_size": 1536, "max_position_embeddings": 8192, "model_type": "llama",
            "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3, "rms_norm_eps": 1e-05,
            "rope_theta": 100000, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "vocab_size": 49152}
    put("config_json", "smollm2.json", json.dumps(smol, indent=2))
    l3 = dict(smol, head_dim=96, rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                               "original_max_position_embeddings": 8192, "rope_type": "llama3"})
    put("config_json", "llama3.json", json.dumps(l3))
    put("config_json", "qwen2.json", json.dumps(dict(smol, model_type="qwen2", attention_bias=True)))
    put("config_json", "mistral.json", json.dumps(dict(smol, model_type="mistral", sliding_window=None)))
    put("config_json", "rope-params.json", json.dumps(dict({k: v for k, v in smol.items() if k != "rope_theta"},
                                                         rope_parameters={"rope_theta": 5e5, "rope_type": "default"})))

    # tokenizer.json: byte-level BPE (Digits + ByteLevel = smollm), SPM-style, llama3 split
    toks, merges = tiny_bpe_vocab()
    vocab = {t: i for i, t in enumerate(toks[:-3])}
    added = [{"id": len(toks) - 3 + i, "content": c, "special": True} for i, c in
             enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])]
    bpe = {"version": "1.0", "added_tokens": added, "normalizer": None,
           "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
               {"type": "Digits", "individual_digits": True},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
           "model": {"type": "BPE", "vocab": vocab, "merges": merges}}
    put("tokenizer_json", "smollm-bpe.json", json.dumps(bpe))
    cfg = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": False,
           "chat_template": "{{ messages }}"}
    put("tokenizer_json", "smollm-bpe-config.json", json.dumps(bpe) + "\n#config\n" + json.dumps(cfg))
    bpe_pairs = dict(bpe, model=dict(bpe["model"], merges=[m.split(" ") for m in merges]))
    bpe_pairs["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    put("tokenizer_json", "gpt2-pairs.json", json.dumps(bpe_pairs))
    spm_toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁", "▁t", "he", "▁the", "e", "t", "h", "▁▁"]
    spm = {"version": "1.0",
           "added_tokens": [{"id": 0, "content": "<unk>", "special": True}, {"id": 1, "content": "<s>", "special": True},
                            {"id": 2, "content": "</s>", "special": True}],
           "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                              {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
           "pre_tokenizer": None,
           "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                       {"Sequence": {"id": "A", "type_id": 0}}]},
           "model": {"type": "BPE", "byte_fallback": True, "unk_token": "<unk>", "fuse_unk": True,
                     "vocab": {t: i for i, t in enumerate(spm_toks)},
                     "merges": ["▁ t", "h e", "▁t he", "▁ ▁"]}}
    put("tokenizer_json", "spm.json", json.dumps(spm, ensure_ascii=False))
    put("tokenizer_json", "spm-config.json", json.dumps(spm, ensure_ascii=False) + "\n#config\n" +
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True}))

    # ranks.json (first byte: layers-1 % 64, second: full rank - 1)
    for name, nl, full, obj in [("two-layers", 2, 64, {"model.layers.0.self_attn.k_proj": 32,
                                                       "model.layers.1.self_attn.v_proj": 64}),
                                ("thirty", 30, 192, {f"model.layers.{l}.self_attn.{p}_proj": 96
                                                     for l in range(30) for p in "kv"})]:
        put("ranks_json", name + ".json", bytes([nl - 1, full - 1]) + json.dumps(obj, indent=1).encode())

    # tokenize: selector byte + text
    texts = ["Hello world! 12345 <|im_start|>user\nhi<|im_end|>", " the  and\tthe\n\n",
             "caf\u00e9 \u4f60\u597d \U0001F600 <s></s>", "  leading spaces", "'s 're 've 'm 'll 'd"]
    for i, tx in enumerate(texts):
        for sel in (0x00, 0x01, 0x02, 0x0d, 0x1e):
            put("tokenize", f"t{i}-{sel:02x}", bytes([sel]) + tx.encode())


if __name__ == "__main__":
    main()
