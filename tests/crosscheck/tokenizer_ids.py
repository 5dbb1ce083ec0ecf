#!/usr/bin/env python3
"""Expected token ids for tests/test_tokenizer.c, from HF `tokenizers`.

SmolLM2's tokenizer.json cannot be downloaded here, so an equivalent one is
rebuilt from the GGUF's vocab and merges: BPE (no dropout, no unk, no byte
fallback), pre_tokenizer Sequence[Digits(individual_digits=True),
ByteLevel(add_prefix_space=False, use_regex=True)], decoder ByteLevel, and
the control tokens (token_type 3) as special added tokens -- which is what
SmolLM2's own tokenizer.json says.

    pip install gguf tokenizers jinja2
    python3 tests/crosscheck/tokenizer_ids.py          # C table for test_tokenizer.c
    python3 tests/crosscheck/tokenizer_ids.py --wiki   # wiki.test.raw count + FNV
    python3 tests/crosscheck/tokenizer_ids.py --vectors  # the GPT-2 vectors through HF too
    python3 tests/crosscheck/tokenizer_ids.py --variants # llama3 / qwen2 splitting, GPT-2 vocab

Texts containing special-token strings are encoded twice: with the added
tokens (parse_special=1) and with a tokenizer that has none (parse_special=0).
"""
import os
import sys

from gguf import GGUFReader
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
MODEL = os.path.join(ROOT, 'models', 'SmolLM2-135M-Instruct.Q4_1.gguf')
DATA = os.environ.get('ALRD_DATA', os.path.join(ROOT, '..', 'shared', 'data'))

CASES = [
    # (text, parse_special)
    ("Hello world", 0),
    ("The quick brown fox jumps over the lazy dog.", 0),
    ("12345 3.14159", 0),
    ("In 1999, 42% of 7,000 people paid $3.50 each.", 0),
    ("I'm sure they'll say it's fine, don't you? WE'RE SURE'S", 0),
    ("Hello, world! (yes) [no] {maybe} <tag> a+b=c; x->y && z || w... ?!", 0),
    ("a  b   c    d", 0),
    ("   leading and trailing spaces   ", 0),
    ("tab\tseparated\t\tvalues\nnew line\n\nblank line\r\nCRLF", 0),
    ("\n\n\n", 0),
    ("\t", 0),
    (" ", 0),
    ("caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe", 0),
    ("\u4f60\u597d\uff0c\u4e16\u754c\uff01\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002", 0),
    ("\u3053\u3093\u306b\u3061\u306f \ud55c\uad6d\uc5b4 \u041f\u0440\u0438\u0432\u0435\u0442 \u0645\u0631\u062d\u0628\u0627", 0),
    ("\U0001F600 emoji \U0001F44D\U0001F3FD and \U0001F468\u200D\U0001F469\u200D\U0001F467 family \u2705", 0),
    ("math: \u2211 x\u00b2 \u2264 \u221e, \u03c0 \u2248 3.14, \u00bd + \u00bc", 0),
    ("\u0661\u0662\u0663 \u2167 \u00b2\u00b3 digits of other scripts", 0),
    ("\u00a0non-breaking\u3000ideographic\u2003em space", 0),
    ("<|im_start|>user\nHi<|im_end|>", 1),
    ("<|im_start|>user\nHi<|im_end|>", 0),
    ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
     "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
     "<|im_start|>assistant\n", 1),
    ("<|endoftext|><|endoftext|>x<|im_end|>", 1),
    ("def f(x):\n    return x ** 2  # square\n\nprint(f(12))\n", 0),
    (" = Robert Boulter = \n \n Robert Boulter is an English film , television and theatre "
     "actor . He had a guest @-@ starring role on the television series The Bill in 2000 .", 0),
]


def read_vocab(path):
    r = GGUFReader(path)
    f = r.fields
    tokens = f['tokenizer.ggml.tokens'].contents()
    types = f['tokenizer.ggml.token_type'].contents()
    merges = f['tokenizer.ggml.merges'].contents()
    tmpl = f['tokenizer.chat_template'].contents() if 'tokenizer.chat_template' in f else None
    return tokens, types, merges, tmpl


def build(tokens, types, merges, digits, specials):
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(' ', 1)) for m in merges],
                     dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False)
    tok = Tokenizer(bpe)
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), bl])
                         if digits else bl)
    tok.decoder = decoders.ByteLevel()
    if specials:
        tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                                for i in range(len(tokens)) if types[i] == 3])
    return tok


# The Llama-3 and Qwen2 pre-tokenizer regexes (their tokenizer.json), run
# with GPT-2's vocab: what is checked is the splitting, not the vocab.
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = LLAMA3_RE.replace(r"\p{N}{1,3}", r"\p{N}")


def build_split(tokens, merges, pattern, ignore_merges):
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(' ', 1)) for m in merges],
                               ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior='isolated', invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


VARIANT_CASES = [
    "I'M SURE THEY'LL say IT'S fine, DON'T you? we'Re We'VE",
    "12345 3.14159 1234567890",
    "In 1999, 42% of 7,000 people paid $3.50 each.",
    "tab\tseparated\t\tvalues\nnew line\n\nblank line\r\nCRLF",
    "  \n  x \n\n y\t\n\tz  ",
    "Hello, world! (yes) [no] {maybe} <tag> a+b=c;\n x->y && z || w... ?!\n\n",
    "a  b   c    d   ",
    "caf\u00e9 \u4f60\u597d\u4e16\u754c \U0001F600\U0001F44D \u0661\u0662\u0663\u0664 \u00bd",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(12))\n",
    " = Robert Boulter = \n \n Robert Boulter is an English film , television actor .",
]


def c_string(s):
    out = []
    for b in s.encode('utf-8'):
        c = chr(b)
        if c == '\\': out.append('\\\\')
        elif c == '"': out.append('\\"')
        elif c == '\n': out.append('\\n')
        elif c == '\t': out.append('\\t')
        elif c == '\r': out.append('\\r')
        elif 0x20 <= b < 0x7f: out.append(c)
        else: out.append('\\%03o' % b)  # octal: never swallows the next char
    return '"' + ''.join(out) + '"'


def fnv(ids):
    h = 1469598103934665603
    for i in ids:
        h ^= i & 0xffffffff
        h = (h * 1099511628211) & 0xffffffffffffffff
    return h


def main():
    tokens, types, merges, tmpl = read_vocab(MODEL)
    with_sp = build(tokens, types, merges, True, True)
    no_sp = build(tokens, types, merges, True, False)
    if '--wiki' in sys.argv:
        text = open(os.path.join(DATA, 'wikitext-2-raw', 'wiki.test.raw'), 'rb').read().decode('utf-8')
        ids = no_sp.encode(text, add_special_tokens=False).ids
        print('#define WIKI_TEST_N_TOKENS %d' % len(ids))
        print('#define WIKI_TEST_FNV 0x%016xull' % fnv(ids))
        return
    if '--variants' in sys.argv:
        vd = os.path.join(DATA, 'tokenizer-vectors')
        t2, ty2, m2, _ = read_vocab(os.path.join(vd, 'ggml-vocab-gpt-2.gguf'))
        print('static const variant_case variant_cases[] = {')
        for pre, pat, ign in (('llama3', LLAMA3_RE, True), ('qwen2', QWEN2_RE, False)):
            hf = build_split(t2, m2, pat, ign)
            for text in VARIANT_CASES:
                ids = hf.encode(text, add_special_tokens=False).ids
                assert len(ids) <= 64 and hf.decode(ids) == text
                print('    {"%s", %s, %d, {%s}},' % (pre, c_string(text), len(ids),
                                                   ', '.join(map(str, ids))))
        print('};')
        return
    if '--vectors' in sys.argv:
        vd = os.path.join(DATA, 'tokenizer-vectors')
        t2, ty2, m2, _ = read_vocab(os.path.join(vd, 'ggml-vocab-gpt-2.gguf'))
        hf = build(t2, ty2, m2, False, False)
        inp = open(os.path.join(vd, 'ggml-vocab-gpt-2.gguf.inp'), encoding='utf-8').read()
        outs = open(os.path.join(vd, 'ggml-vocab-gpt-2.gguf.out'), encoding='utf-8').read().split('\n')
        texts = inp.split('\n__ggml_vocab_test__\n')[:-1]
        bad = 0
        for i, t in enumerate(texts):
            got = hf.encode(t, add_special_tokens=False).ids
            want = [int(x) for x in outs[i].split()]
            if got != want:
                bad += 1
                print('differs', repr(t), want, got)
        print('%d texts, %d differ from llama.cpp' % (len(texts), bad))
        return
    # chat template rendered by jinja2, as HF apply_chat_template does
    import jinja2
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    chat = env.from_string(tmpl).render(
        messages=[{'role': 'user', 'content': 'What is the capital of France?'}],
        add_generation_prompt=True)
    print('/* chat template render (jinja2): %s */' % c_string(chat))
    print('static const smol_case smol_cases[] = {')
    for text, ps in CASES:
        enc = (with_sp if ps else no_sp).encode(text, add_special_tokens=False)
        assert (with_sp if ps else no_sp).decode(enc.ids, skip_special_tokens=False) == text
        ids = enc.ids
        assert len(ids) <= 64
        print('    {%s, %d, %d, {%s}},' % (c_string(text), ps, len(ids), ', '.join(map(str, ids))))
    print('};')


if __name__ == '__main__':
    main()
