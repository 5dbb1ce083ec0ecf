/* test_tokenizer: llama.cpp's tokenizer conformance vectors (GPT-2 BPE and
 * SPM), SmolLM2's real vocab against ids from HF tokenizers, round trips,
 * invalid UTF-8, chat formatting, and whole-file speed. */
#include "testutil.h"

#include "../formats/gguf.h"
#include "../runtime/tokenizer.h"

typedef struct {
    alrd_vocab vocab;
    alrd_tokenizer *tok;
} loaded;

static void load(loaded *l, const char *path) {
    alrd_error err = {{0}};
    alrd_gguf g;
    if (alrd_gguf_open(&g, path, &err) != 0) fail_msg("%s", err.msg);
    if (alrd_vocab_from_gguf(&l->vocab, &g, &err) != 0) fail_msg("%s", err.msg);
    alrd_gguf_close(&g);
    if (alrd_tokenizer_new(&l->tok, &l->vocab, &err) != 0) fail_msg("%s", err.msg);
}

static void unload(loaded *l) {
    alrd_tokenizer_free(l->tok);
    alrd_vocab_free(&l->vocab);
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
    print_message("  %s:", what);
    for (size_t i = 0; i < n; i++) print_message(" %d", (int)ids[i]);
    print_message("\n");
}

/* encodes s (no BOS), compares with want, and checks decode(encode(s)) == s */
static int check_ids(const alrd_tokenizer *t, const char *s, size_t len, int parse_special,
                     const int32_t *want, size_t n_want, int roundtrip) {
    alrd_error err = {{0}};
    int32_t *ids;
    size_t n;
    if (alrd_tokenizer_encode(t, s, len, 0, parse_special, &ids, &n, &err) != 0) {
        print_message("encode failed: %s\n", err.msg);
        return 1;
    }
    int bad = n != n_want || (n && memcmp(ids, want, n * sizeof *ids) != 0);
    if (bad) {
        print_message("mismatch for \"%.*s\"\n", (int)len, s);
        print_ids("want", want, n_want);
        print_ids("got ", ids, n);
    }
    if (roundtrip) {
        char *back;
        if (alrd_tokenizer_decode(t, ids, n, 1, &back, &err) != 0) {
            print_message("decode failed: %s\n", err.msg);
            bad = 1;
        } else {
            if (strlen(back) != len || memcmp(back, s, len) != 0) {
                print_message("round trip of \"%.*s\" gave \"%s\"\n", (int)len, s, back);
                bad = 1;
            }
            free(back);
        }
    }
    free(ids);
    return bad;
}

/* llama.cpp's test-tokenizer-0 format: inputs separated by
 * "\n__ggml_vocab_test__\n", line i of .out holds the ids of input i. */
static void run_vectors(const char *name) {
    char path[512], inp_path[640], out_path[640];
    snprintf(path, sizeof path, "tokenizer-vectors/%s", name);
    char full[600];
    ALRD_DATA_OR_SKIP(full, path);
    snprintf(inp_path, sizeof inp_path, "%s.inp", full);
    snprintf(out_path, sizeof out_path, "%s.out", full);
    loaded l;
    load(&l, full);
    alrd_error err = {{0}};
    char *inp, *outs;
    size_t inp_n, out_n;
    if (alrd_read_file(inp_path, 1 << 20, &inp, &inp_n, &err) != 0) fail_msg("%s", err.msg);
    if (alrd_read_file(out_path, 1 << 20, &outs, &out_n, &err) != 0) fail_msg("%s", err.msg);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    const size_t sep_n = sizeof sep - 1;
    char *p = inp, *line = outs;
    int n_cases = 0, n_bad = 0;
    for (;;) {
        char *e = memmem(p, inp_n - (size_t)(p - inp), sep, sep_n);
        if (!e) break;
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = 0;
        int32_t want[512];
        size_t n_want = 0;
        for (char *q = line; *q;) {
            char *end;
            long v = strtol(q, &end, 10);
            if (end == q) break;
            assert_true(n_want < 512);
            want[n_want++] = (int32_t)v;
            q = end;
        }
        n_bad += check_ids(l.tok, p, (size_t)(e - p), 0, want, n_want, 1);
        n_cases++;
        p = e + sep_n;
        line = nl + 1;
    }
    print_message("%s: %d cases, %d failed\n", name, n_cases, n_bad);
    assert_int_equal(n_cases, 46);
    assert_int_equal(n_bad, 0);
    free(inp);
    free(outs);
    unload(&l);
}

static void test_vectors_gpt2(void **state) {
    (void)state;
    run_vectors("ggml-vocab-gpt-2.gguf");
}

static void test_vectors_spm(void **state) {
    (void)state;
    run_vectors("ggml-vocab-llama-spm.gguf");
}

/* SPM specifics beyond the vectors: BOS, byte fallback, decode of BOS text */
static void test_spm_bos_and_bytes(void **state) {
    (void)state;
    char full[600];
    ALRD_DATA_OR_SKIP(full, "tokenizer-vectors/ggml-vocab-llama-spm.gguf");
    loaded l;
    load(&l, full);
    alrd_error err = {{0}};
    int32_t *ids;
    size_t n;
    assert_int_equal(alrd_tokenizer_add_bos(l.tok), 1);
    assert_int_equal(alrd_tokenizer_bos(l.tok), 1);
    assert_int_equal(alrd_tokenizer_encode(l.tok, "Hello world", 11, 1, 0, &ids, &n, &err), 0);
    /* BOS, then the vector's ids for "Hello world" */
    const int32_t want[] = {1, 15043, 3186};
    assert_int_equal(n, 3);
    assert_memory_equal(ids, want, sizeof want);
    char *s;
    assert_int_equal(alrd_tokenizer_decode(l.tok, ids, n, 0, &s, &err), 0);
    assert_string_equal(s, "Hello world");
    free(s);
    assert_int_equal(alrd_tokenizer_decode(l.tok, ids, n, 1, &s, &err), 0);
    assert_string_equal(s, "<s> Hello world");
    free(s);
    free(ids);
    /* U+10348 (Gothic hwair) has no token: four byte tokens <0xF0><0x90><0x8D><0x88> */
    const char *goth = "\xF0\x90\x8D\x88";
    assert_int_equal(alrd_tokenizer_encode(l.tok, goth, 4, 0, 0, &ids, &n, &err), 0);
    const int32_t want2[] = {29871, 0xF0 + 3, 0x90 + 3, 0x8D + 3, 0x88 + 3};
    assert_int_equal(n, 5);
    assert_memory_equal(ids, want2, sizeof want2);
    char buf[8];
    assert_int_equal(alrd_tokenizer_piece(l.tok, 0xF0 + 3, 0, buf, sizeof buf), 1);
    assert_int_equal((uint8_t)buf[0], 0xF0);
    assert_int_equal(alrd_tokenizer_decode(l.tok, ids, n, 0, &s, &err), 0);
    assert_string_equal(s, goth);
    free(s);
    free(ids);
    /* parse_special: "<s>" in the text becomes BOS, and the text after it
     * gets a fresh space prefix (llama.cpp) */
    assert_int_equal(alrd_tokenizer_encode(l.tok, "<s>Hi", 5, 0, 1, &ids, &n, &err), 0);
    assert_true(n >= 2);
    assert_int_equal(ids[0], 1);
    free(ids);
    assert_true(alrd_tokenizer_is_eog(l.tok, 2));
    assert_false(alrd_tokenizer_is_eog(l.tok, 1));
    unload(&l);
}

/* A whole text file through the tokenizer: its ids' FNV-1a hash, the time,
 * and decode(encode(text)) == text checked byte for byte. */
typedef struct {
    size_t len, n;
    uint64_t fnv;
    double seconds;
} file_encoding;

static file_encoding encode_file(const alrd_tokenizer *tok, const char *path, int add_bos,
                                 int render_special) {
    alrd_error err = {{0}};
    file_encoding r = {0};
    char *text;
    if (alrd_read_file(path, 1 << 24, &text, &r.len, &err) != 0) fail_msg("%s", err.msg);
    int32_t *ids;
    double t0 = alrd_now();
    assert_int_equal(alrd_tokenizer_encode(tok, text, r.len, add_bos, 0, &ids, &r.n, &err), 0);
    r.seconds = alrd_now() - t0;
    r.fnv = 1469598103934665603ull;
    for (size_t i = 0; i < r.n; i++) {
        r.fnv ^= (uint32_t)ids[i];
        r.fnv *= 1099511628211ull;
    }
    char *back;
    assert_int_equal(alrd_tokenizer_decode(tok, ids, r.n, render_special, &back, &err), 0);
    assert_int_equal(strlen(back), r.len);
    assert_memory_equal(back, text, r.len);
    free(back);
    free(ids);
    free(text);
    return r;
}

/* SPM over wiki.test.raw: encoding U+2581 run by run must give what one
 * pass over the whole text gives (llama.cpp's way). The count and checksum
 * were taken from this tokenizer with the run splitting switched off
 * (one heap over the whole 1.3 MB, 0.85 s), BOS included. */
static void test_spm_wiki(void **state) {
    (void)state;
    char vpath[600], path[600];
    ALRD_DATA_OR_SKIP(vpath, "tokenizer-vectors/ggml-vocab-llama-spm.gguf");
    ALRD_DATA_OR_SKIP(path, "wikitext-2-raw/wiki.test.raw");
    loaded l;
    load(&l, vpath);
    file_encoding e = encode_file(l.tok, path, 1, 0);
    print_message("spm wiki.test.raw: %zu tokens in %.3f s (fnv %016llx)\n", e.n, e.seconds,
                  (unsigned long long)e.fnv);
    assert_int_equal(e.n, 332755);
    assert_int_equal(e.fnv, 0x91c4929bd099fcc8ull);
    unload(&l);
}

/* Random valid UTF-8 (ASCII-heavy, with spaces, digits, newlines, Latin,
 * CJK, emoji, combining marks, unassigned and private-use code points):
 * no failure and decode(encode(s)) == s for both vocab families. (No
 * literal U+2581: SPM decodes it as a space by design, as sentencepiece.) */
static size_t random_text(uint64_t *st, char *buf, size_t cap) {
    static const uint32_t pool[] = {' ', ' ', ' ', '\n', '\t', '\r', '\'', '1', '9', 0xA0,
                                    0xE9, 0x301, 0x4E2D, 0x3000, 0x1F600, 0x200D, 0xFFFD,
                                    0x0378 /* unassigned */, 0xE000 /* private use */,
                                    0x10FFFD, 0x0100, 0x0120};
    size_t o = 0;
    while (o + 4 < cap) {
        *st = *st * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t r = (uint32_t)(*st >> 33);
        uint32_t cp;
        if (r % 4 != 0) cp = 0x21 + r / 4 % 94; /* printable ASCII */
        else cp = pool[r / 4 % (sizeof pool / sizeof pool[0])];
        if (cp < 0x80) buf[o++] = (char)cp;
        else if (cp < 0x800) { buf[o++] = (char)(0xC0 | cp >> 6); buf[o++] = (char)(0x80 | (cp & 63)); }
        else if (cp < 0x10000) {
            buf[o++] = (char)(0xE0 | cp >> 12);
            buf[o++] = (char)(0x80 | (cp >> 6 & 63));
            buf[o++] = (char)(0x80 | (cp & 63));
        } else {
            buf[o++] = (char)(0xF0 | cp >> 18);
            buf[o++] = (char)(0x80 | (cp >> 12 & 63));
            buf[o++] = (char)(0x80 | (cp >> 6 & 63));
            buf[o++] = (char)(0x80 | (cp & 63));
        }
    }
    return o;
}

static void roundtrip_random(const char *vocab_rel) {
    char full[600];
    ALRD_DATA_OR_SKIP(full, vocab_rel);
    loaded l;
    load(&l, full);
    uint64_t st = 12345;
    int bad = 0;
    for (int k = 0; k < 300; k++) {
        char buf[256];
        size_t n = random_text(&st, buf, 8 + (size_t)k % 240);
        alrd_error err = {{0}};
        int32_t *ids;
        size_t m;
        if (alrd_tokenizer_encode(l.tok, buf, n, 1, 0, &ids, &m, &err) != 0) fail_msg("%s", err.msg);
        char *back;
        if (alrd_tokenizer_decode(l.tok, ids, m, 0, &back, &err) != 0) fail_msg("%s", err.msg);
        if (strlen(back) != n || memcmp(back, buf, n) != 0) {
            if (!bad) print_message("round trip failed: \"%.*s\" -> \"%s\"\n", (int)n, buf, back);
            bad++;
        }
        free(back);
        free(ids);
    }
    assert_int_equal(bad, 0);
    unload(&l);
}

static void test_roundtrip_random(void **state) {
    (void)state;
    roundtrip_random("tokenizer-vectors/ggml-vocab-gpt-2.gguf");
    roundtrip_random("tokenizer-vectors/ggml-vocab-llama-spm.gguf");
}

/* ---- SmolLM2 ---------------------------------------------------------- */

/* Expected ids from HF tokenizers 0.23.3 on a tokenizer.json equivalent to
 * SmolLM2's, rebuilt from the GGUF by tests/crosscheck/tokenizer_ids.py
 * (pre_tokenizer Sequence[Digits(individual_digits), ByteLevel], control
 * tokens as special added tokens). Regenerate with:
 *   python3 tests/crosscheck/tokenizer_ids.py --c
 * and paste the table below. */
typedef struct {
    const char *text;
    int parse_special;
    int n;
    int32_t ids[64];
} smol_case;

/* BEGIN generated by tests/crosscheck/tokenizer_ids.py (and --wiki) */
/* chat template render (jinja2): "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n" */
static const smol_case smol_cases[] = {
    {"Hello world", 0, 2, {19556, 905}},
    {"The quick brown fox jumps over the lazy dog.", 0, 10, {504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30}},
    {"12345 3.14159", 0, 13, {33, 34, 35, 36, 37, 216, 35, 30, 33, 36, 33, 37, 41}},
    {"In 1999, 42% of 7,000 people paid $3.50 each.", 0, 27, {788, 216, 33, 41, 41, 41, 28, 216, 36, 34, 21, 282, 216, 39, 28, 32, 32, 32, 701, 5940, 1885, 35, 30, 37, 32, 971, 30}},
    {"I'm sure they'll say it's fine, don't you? WE'RE SURE'S", 0, 21, {57, 5248, 2090, 502, 3060, 1643, 357, 506, 4979, 28, 1326, 982, 346, 47, 26587, 23, 3256, 334, 15672, 23, 67}},
    {"Hello, world! (yes) [no] {maybe} <tag> a+b=c; x->y && z || w... ?!", 0, 33, {19556, 28, 905, 17, 365, 10407, 25, 933, 4607, 77, 1662, 27066, 109, 2067, 9204, 46, 253, 27, 82, 45, 83, 43, 1792, 22690, 105, 1456, 22, 1892, 14669, 267, 2026, 9148, 17}},
    {"a  b   c    d", 0, 7, {81, 216, 278, 256, 265, 333, 287}},
    {"   leading and trailing spaces   ", 0, 6, {256, 2899, 284, 35079, 5600, 333}},
    {"tab\tseparated\t\tvalues\nnew line\n\nblank line\r\nCRLF", 0, 19, {15999, 197, 19509, 483, 197, 197, 6347, 198, 2241, 1761, 198, 198, 18847, 1761, 201, 198, 9088, 60, 54}},
    {"\n\n\n", 0, 1, {16506}},
    {"\t", 0, 1, {197}},
    {" ", 0, 1, {216}},
    {"caf\303\251 na\303\257ve r\303\251sum\303\251 \303\274ber Stra\303\237e", 0, 15, {83, 1939, 2756, 15486, 46494, 412, 2756, 5422, 2756, 5549, 137, 593, 19144, 34878, 85}},
    {"\344\275\240\345\245\275\357\274\214\344\270\226\347\225\214\357\274\201\344\273\212\345\244\251\345\244\251\346\260\224\345\276\210\345\245\275\343\200\202", 0, 26, {18645, 250, 48392, 138, 12831, 7906, 240, 178, 239, 230, 8083, 219, 15076, 228, 18614, 119, 18614, 119, 177, 125, 238, 29157, 226, 48392, 138, 19076}},
    {"\343\201\223\343\202\223\343\201\253\343\201\241\343\201\257 \355\225\234\352\265\255\354\226\264 \320\237\321\200\320\270\320\262\320\265\321\202 \331\205\330\261\330\255\330\250\330\247", 0, 28, {7365, 237, 10391, 237, 41152, 7365, 111, 7365, 124, 216, 33085, 246, 181, 130, 251, 183, 240, 129, 5470, 249, 46879, 16464, 32547, 36395, 20602, 44626, 31462, 10805}},
    {"\360\237\230\200 emoji \360\237\221\215\360\237\217\275 and \360\237\221\250\342\200\215\360\237\221\251\342\200\215\360\237\221\247 family \342\234\205", 0, 29, {10813, 242, 218, 649, 33777, 15107, 235, 231, 10813, 233, 138, 284, 15107, 235, 118, 321, 231, 10813, 235, 119, 321, 231, 10813, 235, 117, 1564, 4636, 246, 223}},
    {"math: \342\210\221 x\302\262 \342\211\244 \342\210\236, \317\200 \342\211\210 3.14, \302\275 + \302\274", 0, 24, {8898, 42, 19995, 235, 1792, 19133, 38599, 19995, 248, 28, 25143, 21004, 226, 216, 35, 30, 33, 36, 28, 216, 16738, 1232, 216, 28151}},
    {"\331\241\331\242\331\243 \342\205\247 \302\262\302\263 digits of other scripts", 0, 17, {164, 111, 164, 112, 164, 113, 216, 173, 223, 117, 216, 19133, 39050, 18638, 282, 550, 18487}},
    {"\302\240non-breaking\343\200\200ideographic\342\200\203em space", 0, 12, {15442, 9033, 29, 11194, 12109, 218, 489, 4551, 321, 221, 391, 1898}},
    {"<|im_start|>user\nHi<|im_end|>", 1, 5, {1, 4093, 198, 26843, 2}},
    {"<|im_start|>user\nHi<|im_end|>", 0, 17, {44, 108, 306, 79, 3738, 108, 46, 4093, 198, 26843, 44, 108, 306, 79, 486, 108, 46}},
    {"<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n", 1, 37, {1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198}},
    {"<|endoftext|><|endoftext|>x<|im_end|>", 1, 4, {0, 0, 104, 2}},
    {"def f(x):\n    return x ** 2  # square\n\nprint(f(12))\n", 0, 24, {1604, 275, 24, 104, 727, 472, 1003, 1792, 1903, 216, 34, 216, 907, 5222, 198, 198, 3272, 24, 86, 24, 33, 34, 1292, 198}},
    {" = Robert Boulter = \n \n Robert Boulter is an English film , television and theatre actor . He had a guest @-@ starring role on the television series The Bill in 2000 .", 0, 44, {446, 6356, 389, 9226, 352, 446, 3717, 3717, 6356, 389, 9226, 352, 314, 354, 2321, 4771, 3297, 8552, 284, 16984, 17523, 1673, 909, 761, 253, 16204, 3394, 29, 48, 45608, 1791, 335, 260, 8552, 3086, 378, 8593, 281, 216, 34, 32, 32, 32, 1673}},
};
#define WIKI_TEST_N_TOKENS 304830
#define WIKI_TEST_FNV 0x416277b5a58221d1ull
/* END generated */

static void test_smollm_ids(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    loaded l;
    load(&l, ALRD_TEST_MODEL);
    assert_string_equal(l.vocab.pre, "smollm");
    int bad = 0;
    for (size_t i = 0; i < sizeof smol_cases / sizeof smol_cases[0]; i++) {
        const smol_case *c = &smol_cases[i];
        bad += check_ids(l.tok, c->text, strlen(c->text), c->parse_special, c->ids, (size_t)c->n,
                         1);
    }
    assert_int_equal(bad, 0);
    assert_int_equal(alrd_tokenizer_n_vocab(l.tok), 49152);
    assert_int_equal(alrd_tokenizer_find(l.tok, "<|im_start|>"), 1);
    assert_int_equal(alrd_tokenizer_find(l.tok, "<|im_end|>"), 2);
    assert_int_equal(alrd_tokenizer_find(l.tok, "no such token"), -1);
    assert_int_equal(alrd_tokenizer_add_bos(l.tok), 0);
    assert_true(alrd_tokenizer_is_eog(l.tok, 2));  /* <|im_end|> = eos */
    assert_true(alrd_tokenizer_is_eog(l.tok, 0));  /* <|endoftext|> */
    assert_false(alrd_tokenizer_is_eog(l.tok, 1)); /* <|im_start|> */
    /* pieces: control tokens render only on request */
    char buf[32];
    assert_int_equal(alrd_tokenizer_piece(l.tok, 1, 0, buf, sizeof buf), 0);
    assert_int_equal(alrd_tokenizer_piece(l.tok, 1, 1, buf, sizeof buf), 12);
    assert_memory_equal(buf, "<|im_start|>", 12);
    assert_int_equal(alrd_tokenizer_piece(l.tok, 49152, 1, buf, sizeof buf), -1);
    assert_int_equal(alrd_tokenizer_piece(l.tok, -1, 1, buf, sizeof buf), -1);
    unload(&l);
}

static void test_invalid_utf8(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    loaded l;
    load(&l, ALRD_TEST_MODEL);
    static const struct {
        const char *s;
        size_t off;
    } bad[] = {
        {"abc\xff", 3},             /* never valid */
        {"ab\xc3", 2},              /* truncated 2-byte */
        {"\xc0\xaf", 0},            /* overlong '/' */
        {"x\xed\xa0\x80y", 1},      /* surrogate U+D800 */
        {"hello \xf4\x90\x80\x80", 6}, /* above U+10FFFF */
        {"\xe2\x82", 0},            /* truncated 3-byte */
        {"ok\x80", 2},              /* stray continuation */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        alrd_error err = {{0}};
        int32_t *ids = (int32_t *)1;
        size_t n = 7;
        assert_int_equal(
            alrd_tokenizer_encode(l.tok, bad[i].s, strlen(bad[i].s), 0, 0, &ids, &n, &err), -1);
        assert_null(ids);
        char want[64];
        snprintf(want, sizeof want, "byte offset %zu", bad[i].off);
        if (!strstr(err.msg, want)) fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, want);
    }
    /* empty text: no ids, a freeable array */
    alrd_error err = {{0}};
    int32_t *ids;
    size_t n;
    assert_int_equal(alrd_tokenizer_encode(l.tok, "", 0, 1, 1, &ids, &n, &err), 0);
    assert_int_equal(n, 0);
    free(ids);
    int32_t oob[] = {5, 49152};
    char *s;
    assert_int_equal(alrd_tokenizer_decode(l.tok, oob, 2, 0, &s, &err), -1);
    assert_non_null(strstr(err.msg, "49152"));
    unload(&l);
}

/* wiki.test.raw whole: exact token count and checksum against HF tokenizers
 * (tests/crosscheck/tokenizer_ids.py --wiki), and the time it takes. */
static void test_smollm_wiki_speed(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    char path[600];
    ALRD_DATA_OR_SKIP(path, "wikitext-2-raw/wiki.test.raw");
    loaded l;
    load(&l, ALRD_TEST_MODEL);
    file_encoding e = encode_file(l.tok, path, 0, 1);
    print_message("wiki.test.raw: %zu bytes -> %zu tokens in %.3f s (fnv %016llx)\n", e.len, e.n,
                  e.seconds, (unsigned long long)e.fnv);
    assert_int_equal(e.n, WIKI_TEST_N_TOKENS);
    assert_int_equal(e.fnv, WIKI_TEST_FNV);
    assert_true(e.seconds < 2.0);
    unload(&l);
}

/* ---- Llama-3 / Qwen2 pre-tokenizers ----------------------------------- */

/* GPT-2's vocab with vocab.pre switched to llama3 / qwen2: ids from HF
 * tokenizers with those models' split regexes (llama3 with ignore_merges),
 * from `python3 tests/crosscheck/tokenizer_ids.py --variants`. */
typedef struct {
    const char *pre;
    const char *text;
    int n;
    int32_t ids[64];
} variant_case;

/* BEGIN generated by tests/crosscheck/tokenizer_ids.py --variants */
static const variant_case variant_cases[] = {
    {"llama3", "I'M SURE THEY'LL say IT'S fine, DON'T you? we'Re We'VE", 25, {40, 6, 44, 311, 11335, 33302, 6, 3069, 910, 7283, 6, 50, 3734, 11, 23917, 6, 51, 345, 30, 356, 6, 3041, 775, 6, 6089}},
    {"llama3", "12345 3.14159 1234567890", 12, {10163, 2231, 220, 18, 13, 23756, 3270, 220, 10163, 29228, 40401, 15}},
    {"llama3", "In 1999, 42% of 7,000 people paid $3.50 each.", 21, {818, 220, 19104, 24, 11, 220, 3682, 4, 286, 220, 22, 11, 830, 661, 3432, 720, 18, 13, 1120, 1123, 13}},
    {"llama3", "tab\tseparated\t\tvalues\nnew line\n\nblank line\r\nCRLF", 18, {8658, 197, 25512, 515, 197, 197, 27160, 198, 3605, 1627, 628, 27190, 1627, 201, 198, 34, 7836, 37}},
    {"llama3", "  \n  x \n\n y\t\n\tz  ", 14, {220, 220, 198, 220, 2124, 220, 628, 331, 197, 198, 197, 89, 220, 220}},
    {"llama3", "Hello, world! (yes) [no] {maybe} <tag> a+b=c;\n x->y && z || w... ?!\n\n", 34, {15496, 11, 995, 0, 357, 8505, 8, 685, 3919, 60, 1391, 25991, 92, 1279, 12985, 29, 257, 10, 65, 28, 66, 26, 198, 2124, 3784, 88, 11405, 1976, 8614, 266, 986, 5633, 0, 628}},
    {"llama3", "a  b   c    d   ", 13, {64, 220, 275, 220, 220, 269, 220, 220, 220, 288, 220, 220, 220}},
    {"llama3", "caf\303\251 \344\275\240\345\245\275\344\270\226\347\225\214 \360\237\230\200\360\237\221\215 \331\241\331\242\331\243\331\244 \302\275", 27, {66, 1878, 2634, 220, 19526, 254, 25001, 121, 10310, 244, 45911, 234, 30325, 222, 41840, 235, 220, 149, 94, 149, 95, 149, 96, 149, 97, 220, 23141}},
    {"llama3", "def f(x):\n    return x ** 2  # square\n\nprint(f(12))\n", 25, {4299, 277, 7, 87, 2599, 198, 220, 220, 220, 1441, 2124, 12429, 220, 17, 220, 1303, 6616, 628, 4798, 7, 69, 7, 1065, 4008, 198}},
    {"llama3", " = Robert Boulter = \n \n Robert Boulter is an English film , television actor .", 22, {796, 5199, 347, 2852, 353, 796, 220, 198, 220, 198, 5199, 347, 2852, 353, 318, 281, 3594, 2646, 837, 5581, 8674, 764}},
    {"qwen2", "I'M SURE THEY'LL say IT'S fine, DON'T you? we'Re We'VE", 25, {40, 6, 44, 311, 11335, 33302, 6, 3069, 910, 7283, 6, 50, 3734, 11, 23917, 6, 51, 345, 30, 356, 6, 3041, 775, 6, 6089}},
    {"qwen2", "12345 3.14159 1234567890", 24, {16, 17, 18, 19, 20, 220, 18, 13, 16, 19, 16, 20, 24, 220, 16, 17, 18, 19, 20, 21, 22, 23, 24, 15}},
    {"qwen2", "In 1999, 42% of 7,000 people paid $3.50 each.", 27, {818, 220, 16, 24, 24, 24, 11, 220, 19, 17, 4, 286, 220, 22, 11, 15, 15, 15, 661, 3432, 720, 18, 13, 20, 15, 1123, 13}},
    {"qwen2", "tab\tseparated\t\tvalues\nnew line\n\nblank line\r\nCRLF", 18, {8658, 197, 25512, 515, 197, 197, 27160, 198, 3605, 1627, 628, 27190, 1627, 201, 198, 34, 7836, 37}},
    {"qwen2", "  \n  x \n\n y\t\n\tz  ", 14, {220, 220, 198, 220, 2124, 220, 628, 331, 197, 198, 197, 89, 220, 220}},
    {"qwen2", "Hello, world! (yes) [no] {maybe} <tag> a+b=c;\n x->y && z || w... ?!\n\n", 34, {15496, 11, 995, 0, 357, 8505, 8, 685, 3919, 60, 1391, 25991, 92, 1279, 12985, 29, 257, 10, 65, 28, 66, 26, 198, 2124, 3784, 88, 11405, 1976, 8614, 266, 986, 5633, 0, 628}},
    {"qwen2", "a  b   c    d   ", 13, {64, 220, 275, 220, 220, 269, 220, 220, 220, 288, 220, 220, 220}},
    {"qwen2", "caf\303\251 \344\275\240\345\245\275\344\270\226\347\225\214 \360\237\230\200\360\237\221\215 \331\241\331\242\331\243\331\244 \302\275", 27, {66, 1878, 2634, 220, 19526, 254, 25001, 121, 10310, 244, 45911, 234, 30325, 222, 41840, 235, 220, 149, 94, 149, 95, 149, 96, 149, 97, 220, 23141}},
    {"qwen2", "def f(x):\n    return x ** 2  # square\n\nprint(f(12))\n", 26, {4299, 277, 7, 87, 2599, 198, 220, 220, 220, 1441, 2124, 12429, 220, 17, 220, 1303, 6616, 628, 4798, 7, 69, 7, 16, 17, 4008, 198}},
    {"qwen2", " = Robert Boulter = \n \n Robert Boulter is an English film , television actor .", 22, {796, 5199, 347, 2852, 353, 796, 220, 198, 220, 198, 5199, 347, 2852, 353, 318, 281, 3594, 2646, 837, 5581, 8674, 764}},
};
/* END generated */

static void test_pretokenizer_variants(void **state) {
    (void)state;
    char full[600];
    ALRD_DATA_OR_SKIP(full, "tokenizer-vectors/ggml-vocab-gpt-2.gguf");
    loaded l;
    load(&l, full);
    int bad = 0;
    for (int k = 0; k < 2; k++) {
        const char *pre = k == 0 ? "llama3" : "qwen2";
        alrd_error err = {{0}};
        alrd_tokenizer *t;
        snprintf(l.vocab.pre, sizeof l.vocab.pre, "%s", pre);
        if (alrd_tokenizer_new(&t, &l.vocab, &err) != 0) fail_msg("%s", err.msg);
        for (size_t i = 0; i < sizeof variant_cases / sizeof variant_cases[0]; i++) {
            const variant_case *c = &variant_cases[i];
            if (strcmp(c->pre, pre) != 0) continue;
            bad += check_ids(t, c->text, strlen(c->text), 0, c->ids, (size_t)c->n, 1);
        }
        alrd_tokenizer_free(t);
    }
    assert_int_equal(bad, 0);
    /* an unknown pre-tokenizer is refused by name */
    alrd_error err = {{0}};
    alrd_tokenizer *t = NULL;
    snprintf(l.vocab.pre, sizeof l.vocab.pre, "no-such-pre");
    assert_int_equal(alrd_tokenizer_new(&t, &l.vocab, &err), -1);
    assert_null(t);
    assert_non_null(strstr(err.msg, "no-such-pre"));
    unload(&l);
}

/* ---- chat ------------------------------------------------------------- */

static void test_chat_smollm(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    loaded l;
    load(&l, ALRD_TEST_MODEL);
    alrd_error err = {{0}};
    /* what HF apply_chat_template(add_generation_prompt=True) renders with
     * the template in the GGUF (checked with jinja2 by
     * tests/crosscheck/tokenizer_ids.py) */
    char *s = alrd_chat_format(&l.vocab, NULL, "What is the capital of France?", &err);
    assert_non_null(s);
    assert_string_equal(s,
                        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained "
                        "by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of "
                        "France?<|im_end|>\n<|im_start|>assistant\n");
    free(s);
    s = alrd_chat_format(&l.vocab, "Be brief.", "Hi", &err);
    assert_non_null(s);
    assert_string_equal(s, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                           "<|im_start|>assistant\n");
    free(s);
    unload(&l);
}

static void test_chat_llama2_and_unknown(void **state) {
    (void)state;
    alrd_vocab v;
    memset(&v, 0, sizeof v);
    alrd_error err = {{0}};
    /* Llama-2's template (abridged to the parts that identify it) */
    char tmpl[] = "{% if messages[0]['role'] == 'system' %}{% set system_message = '<<SYS>>\\n' + "
                  "messages[0]['content'] | trim + '\\n<</SYS>>\\n\\n' %}{% endif %}"
                  "{{ bos_token + '[INST] ' + content | trim + ' [/INST]' }}";
    v.chat_template = tmpl;
    char *s = alrd_chat_format(&v, NULL, "Hello", &err);
    assert_non_null(s);
    /* HF renders "<s>" in front; left to the tokenizer's add_bos here */
    assert_string_equal(s, "[INST] Hello [/INST]");
    free(s);
    s = alrd_chat_format(&v, "You are terse.", "Hello", &err);
    assert_non_null(s);
    assert_string_equal(s, "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHello [/INST]");
    free(s);
    s = alrd_chat_format(&v, NULL, "  padded user  \n", &err); /* content.strip() */
    assert_non_null(s);
    assert_string_equal(s, "[INST] padded user [/INST]");
    free(s);
    char other[] = "{{ messages }}";
    v.chat_template = other;
    assert_null(alrd_chat_format(&v, NULL, "Hello", &err));
    assert_non_null(strstr(err.msg, "chat_template"));
    v.chat_template = NULL;
    assert_null(alrd_chat_format(&v, NULL, "Hello", &err));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors_gpt2),
        cmocka_unit_test(test_vectors_spm),
        cmocka_unit_test(test_spm_bos_and_bytes),
        cmocka_unit_test(test_spm_wiki),
        cmocka_unit_test(test_roundtrip_random),
        cmocka_unit_test(test_smollm_ids),
        cmocka_unit_test(test_pretokenizer_variants),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_smollm_wiki_speed),
        cmocka_unit_test(test_chat_smollm),
        cmocka_unit_test(test_chat_llama2_and_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
