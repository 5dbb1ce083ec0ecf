#!/usr/bin/env python3
"""End-to-end check of alrd-convert's Hugging Face export with the Python
reference libraries (run from the repo root after `make`):

    pip install gguf numpy safetensors tokenizers
    python3 tests/crosscheck/tokenizer_json_check.py [--keep DIR]

1. Exports models/SmolLM2-135M-Instruct.Q4_1.gguf with
   `alrd-convert --to-hf` (f32 and f16) and loads the result with
   `safetensors`: every tensor must equal the GGUF tensor dequantized by the
   `gguf` package, with llama.cpp's Q/K row permutation undone (f32: bit for
   bit; f16: equal to the f32 export cast to float16), no lm_head (tied), and
   config.json must describe the model.
2. Loads the exported tokenizer.json with `tokenizers` and encodes test
   strings (and all of wiki.test.raw when ../shared/data is present) exactly
   as a tokenizer built independently here from the GGUF vocab and merges
   (SmolLM2's tokenizer.json shape).
3. Exports the tokenizer conformance vocabularies (GPT-2 byte-level BPE and
   Llama SPM, vocab-only GGUFs) with `alrd-convert --vocab-only` and checks
   that `tokenizers` reproduces llama.cpp's expected ids for every vector.
4. Round trip: the exported directory converted again (HF -> HF) gives the
   same tokenizer.json and the same tensors.

Prints one line per check and exits non-zero on any failure.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import load_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
MODEL = os.path.join(ROOT, 'models', 'SmolLM2-135M-Instruct.Q4_1.gguf')
CONVERT = os.path.join(ROOT, 'build', 'alrd-convert')
DATA = os.environ.get('ALRD_DATA', os.path.join(ROOT, '..', 'shared', 'data'))
VEC = os.path.join(DATA, 'tokenizer-vectors')

failures = 0


def check(ok, what):
    global failures
    print(('ok   ' if ok else 'FAIL ') + what)
    if not ok:
        failures += 1


def run_convert(*args):
    r = subprocess.run([CONVERT, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit('alrd-convert %s failed: %s' % (' '.join(args), r.stderr.strip()))


GGUF_TO_HF = {
    'token_embd.weight': 'model.embed_tokens.weight',
    'output_norm.weight': 'model.norm.weight',
    'output.weight': 'lm_head.weight',
}
BLK = {
    'attn_norm': 'input_layernorm', 'ffn_norm': 'post_attention_layernorm',
    'attn_q': 'self_attn.q_proj', 'attn_k': 'self_attn.k_proj', 'attn_v': 'self_attn.v_proj',
    'attn_output': 'self_attn.o_proj', 'ffn_gate': 'mlp.gate_proj', 'ffn_up': 'mlp.up_proj',
    'ffn_down': 'mlp.down_proj',
}


def hf_name(n):
    if n in GGUF_TO_HF:
        return GGUF_TO_HF[n]
    _, layer, base, suffix = n.split('.')
    return 'model.layers.%s.%s.%s' % (layer, BLK[base], suffix)


def unpermute(w, n_head):
    """Inverse of llama.cpp convert_hf_to_gguf.py's LlamaModel.permute."""
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def field(r, key):
    return r.fields[key].contents()


def check_tensors(out, out16):
    r = GGUFReader(MODEL)
    n_head = field(r, 'llama.attention.head_count')
    n_kv = field(r, 'llama.attention.head_count_kv')
    st = load_file(os.path.join(out, 'model.safetensors'))
    st16 = load_file(os.path.join(out16, 'model.safetensors'))
    names = set()
    worst = 0.0
    exact = True
    for t in r.tensors:
        hn = hf_name(t.name)
        names.add(hn)
        shape = tuple(int(x) for x in reversed(t.shape))
        ref = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        if t.name.endswith('attn_q.weight'):
            ref = unpermute(ref, n_head)
        elif t.name.endswith('attn_k.weight'):
            ref = unpermute(ref, n_kv)
        got = st.get(hn)
        if got is None or got.shape != shape or got.dtype != np.float32:
            check(False, 'tensor %s present as float32 %s' % (hn, shape))
            continue
        if not np.array_equal(got.view(np.uint32), ref.view(np.uint32)):
            exact = False
            worst = max(worst, float(np.max(np.abs(got - ref))))
        g16 = st16.get(hn)
        if g16 is None or g16.dtype != np.float16 or not np.array_equal(
                g16.view(np.uint16), got.astype(np.float16).view(np.uint16)):
            check(False, 'f16 export of %s equals the f32 export cast to float16' % hn)
    check(set(st) == names and set(st16) == names,
          'exported tensor names = GGUF tensors in HF naming (%d, no lm_head)' % len(names))
    check(exact, 'f32 export equals gguf-package dequantization with Q/K unpermuted, bit for bit'
          + ('' if exact else ' (max |diff| %g)' % worst))
    cfg = json.load(open(os.path.join(out, 'config.json')))
    want = {'model_type': 'llama', 'num_hidden_layers': 30, 'hidden_size': 576,
            'num_attention_heads': 9, 'num_key_value_heads': 3, 'head_dim': 64,
            'intermediate_size': 1536, 'vocab_size': 49152, 'max_position_embeddings': 8192,
            'rope_theta': 100000.0, 'tie_word_embeddings': True, 'rms_norm_eps': 1e-5,
            'torch_dtype': 'float32', 'bos_token_id': 1, 'eos_token_id': 2,
            'architectures': ['LlamaForCausalLM'], 'rope_scaling': None}
    bad = {k: cfg.get(k) for k, v in want.items() if cfg.get(k) != v}
    check(not bad, 'config.json fields %s' % ('as expected' if not bad else 'differ: %r' % bad))
    gen = json.load(open(os.path.join(out, 'generation_config.json')))
    check(gen.get('bos_token_id') == 1 and gen.get('eos_token_id') == 2,
          'generation_config.json bos/eos 1/2')


def reference_tokenizer():
    """SmolLM2's tokenizer.json shape, built from the GGUF with the
    tokenizers API (independent of alrd's writer)."""
    r = GGUFReader(MODEL)
    toks = field(r, 'tokenizer.ggml.tokens')
    types = field(r, 'tokenizer.ggml.token_type')
    merges = [tuple(m.split(' ', 1)) for m in field(r, 'tokenizer.ggml.merges')]
    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(toks)}, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                           for t, ty in zip(toks, types) if ty == 3])
    return tk


TEXTS = [
    "Hello world", " Hello World!", "12345 3.14159", "In 1999, 42% of 7,000 people paid $3.50.",
    "I'm sure they'll say it's fine, don't you?", "a  b   c    d", "   lead and trail   ",
    "tab\tsep\t\tvalues\nnew line\n\nblank\r\nCRLF", "\n\n\n", " ",
    "caf\u00e9 na\u00efve \u00fcber Stra\u00dfe", "\u4f60\u597d\uff0c\u4e16\u754c\uff01",
    "\U0001F600 emoji \U0001F44D\U0001F3FD", "<|im_start|>user\nHi there<|im_end|>\n",
    "def f(x):\n    return x ** 2  # square\n",
]


def check_tokenizer(out):
    mine = Tokenizer.from_file(os.path.join(out, 'tokenizer.json'))
    ref = reference_tokenizer()
    bad = [t for t in TEXTS if mine.encode(t).ids != ref.encode(t).ids]
    check(not bad, 'exported tokenizer.json encodes %d test strings as the reference%s'
          % (len(TEXTS), '' if not bad else ' (differs on %r)' % bad[:3]))
    check(mine.encode("Hello world").ids == [19556, 905],
          'exported tokenizer: "Hello world" -> [19556, 905]')
    wiki = os.path.join(DATA, 'wikitext-2-raw', 'wiki.test.raw')
    if os.path.exists(wiki):
        text = open(wiki, encoding='utf-8', newline='').read()
        a, b = mine.encode(text).ids, ref.encode(text).ids
        check(a == b, 'wiki.test.raw: %d tokens, identical to the reference' % len(b))
    else:
        print('skip wiki.test.raw (absent)')
    tc = json.load(open(os.path.join(out, 'tokenizer_config.json')))
    check(tc.get('bos_token') == '<|im_start|>' and tc.get('eos_token') == '<|im_end|>'
          and tc.get('add_bos_token') is False and 'im_start' in (tc.get('chat_template') or ''),
          'tokenizer_config.json: bos/eos/add_bos_token/chat_template')
    try:
        from transformers import AutoTokenizer  # optional
    except ImportError:
        print('skip transformers AutoTokenizer (not installed)')
        return
    at = AutoTokenizer.from_pretrained(out)
    check(at("Hello world")['input_ids'] == [19556, 905] and at.eos_token == '<|im_end|>',
          'transformers AutoTokenizer loads the export')


def check_vectors(tmp):
    for name in ('gpt-2', 'llama-spm'):
        g = os.path.join(VEC, 'ggml-vocab-%s.gguf' % name)
        if not os.path.exists(g):
            print('skip %s vectors (absent)' % name)
            continue
        d = os.path.join(tmp, 'vocab-' + name)
        run_convert(g, '--to-hf', d, '--vocab-only')
        tk = Tokenizer.from_file(os.path.join(d, 'tokenizer.json'))
        inp = open(g + '.inp', encoding='utf-8', newline='').read().split('\n__ggml_vocab_test__\n')
        out = open(g + '.out', encoding='utf-8').read().split('\n')
        bad = [i for i, (s, o) in enumerate(zip(inp, out))
               if tk.encode(s, add_special_tokens=False).ids != [int(x) for x in o.split()]]
        check(not bad and len(inp) >= 46,
              '%s: tokenizers on the exported tokenizer.json matches llama.cpp on %d vectors%s'
              % (name, len(inp), '' if not bad else ' (fails %r)' % bad[:5]))


def check_roundtrip(out, tmp):
    again = os.path.join(tmp, 'again')
    run_convert(out, '--to-hf', again)
    same_tok = open(os.path.join(out, 'tokenizer.json'), 'rb').read() == \
        open(os.path.join(again, 'tokenizer.json'), 'rb').read()
    check(same_tok, 'HF -> HF: tokenizer.json identical')
    a = load_file(os.path.join(out, 'model.safetensors'))
    b = load_file(os.path.join(again, 'model.safetensors'))
    check(set(a) == set(b) and all(np.array_equal(a[k].view(np.uint32), b[k].view(np.uint32)) for k in a),
          'HF -> HF: tensors identical')


def main():
    keep = sys.argv[sys.argv.index('--keep') + 1] if '--keep' in sys.argv else None
    if not os.path.exists(MODEL):
        sys.exit('model absent: run make model')
    if not os.path.exists(CONVERT):
        sys.exit('build/alrd-convert absent: run make')
    tmp = tempfile.mkdtemp(prefix='alrd-hf-check-')
    try:
        out, out16 = os.path.join(tmp, 'hf'), os.path.join(tmp, 'hf16')
        run_convert(MODEL, '--to-hf', out)
        run_convert(MODEL, '--to-hf', out16, '--dtype', 'f16')
        check_tensors(out, out16)
        check_tokenizer(out)
        check_vectors(tmp)
        check_roundtrip(out, tmp)
        if keep:
            shutil.copytree(out, keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('%d failure(s)' % failures)
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
