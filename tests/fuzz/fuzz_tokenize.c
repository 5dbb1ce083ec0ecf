/* fuzz_tokenize: alrd_tokenizer_encode of arbitrary bytes with real
 * vocabularies -- SmolLM2's (byte-level BPE, from the default model), the
 * Llama SPM and GPT-2 conformance vocabularies from the shared data -- and
 * decode of the ids. The first byte picks the vocabulary (bits 0-1) and the
 * flags add_bos (bit 2), parse_special (bit 3), render_special (bit 4).
 * Invariants: invalid UTF-8 is an error naming the offset, ids are in the
 * vocabulary, and without special parsing decode(encode(text)) == text
 * whenever every byte of the text has a byte token (SmolLM2's vocabulary
 * lacks 21 of them, e.g. 0x16; such bytes are dropped, as llama.cpp does)
 * and, for SPM, the text has no literal U+2581 (it is SentencePiece's space
 * and decodes to ' '). */
#include "fuzz_util.h"

#include "../../formats/gguf.h"
#include "../../runtime/tokenizer.h"

typedef struct {
    alrd_tokenizer *t;
    int tried;
    unsigned char has_byte[256]; /* the byte has a token of its own */
} tk_vocab;

static tk_vocab tk_vocabs[3];

/* GPT-2's printable stand-in for byte x, as UTF-8. */
static void tk_byte_char(int x, char out[4]) {
#define TK_KEEP(y) (((y) >= '!' && (y) <= '~') || ((y) >= 0xA1 && (y) <= 0xAC) || ((y) >= 0xAE && (y) <= 0xFF))
    int cp = x;
    if (!TK_KEEP(x)) {
        cp = 256;
        for (int y = 0; y < x; y++) cp += !TK_KEEP(y);
    }
#undef TK_KEEP
    if (cp < 0x80) { out[0] = (char)cp; out[1] = 0; }
    else { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); out[2] = 0; }
}

static alrd_tokenizer *tk_load(int which) {
    tk_vocab *v = tk_vocabs;
    if (v[which].tried) return v[which].t;
    v[which].tried = 1;
    char path[512];
    if (which == 0) {
        const char *m = getenv("ALRD_MODEL");
        snprintf(path, sizeof path, "%s", m ? m : "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    } else {
        snprintf(path, sizeof path, "%s/tokenizer-vectors/%s", fuzz_data_dir(),
                 which == 1 ? "ggml-vocab-llama-spm.gguf" : "ggml-vocab-gpt-2.gguf");
    }
    alrd_gguf g;
    alrd_vocab voc;
    alrd_error err;
    if (alrd_gguf_open(&g, path, &err)) {
        fprintf(stderr, "fuzz_tokenize: skipping vocab %d: %s\n", which, err.msg);
        return NULL;
    }
    if (alrd_vocab_from_gguf(&voc, &g, &err) || alrd_tokenizer_new(&v[which].t, &voc, &err)) {
        fprintf(stderr, "fuzz_tokenize: %s\n", err.msg);
        abort(); /* a real vocabulary must load */
    }
    for (int b = 0; b < 256; b++) {
        char s[8];
        if (voc.kind == ALRD_VOCAB_SPM) snprintf(s, sizeof s, "<0x%02X>", b);
        else tk_byte_char(b, s);
        v[which].has_byte[b] = alrd_tokenizer_find(v[which].t, s) >= 0;
    }
    alrd_vocab_free(&voc);
    alrd_gguf_close(&g);
    return v[which].t;
}

int fuzz_tokenize(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int sel = data[0] & 3, add_bos = (data[0] >> 2) & 1, parse_special = (data[0] >> 3) & 1,
        render = (data[0] >> 4) & 1;
    alrd_tokenizer *t = tk_load(sel == 3 ? 0 : sel);
    if (!t) return 0;
    const unsigned char *has_byte = tk_vocabs[sel == 3 ? 0 : sel].has_byte;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int32_t *ids = NULL;
    size_t n = 0;
    alrd_error err = {{0}};
    int rc = alrd_tokenizer_encode(t, text, len, add_bos, parse_special, &ids, &n, &err);
    fuzz_check_error(rc, &err);
    if (rc) {
        FUZZ_CHECK(strstr(err.msg, "UTF-8") != NULL); /* the only way real text fails */
        return 0;
    }
    int32_t nv = alrd_tokenizer_n_vocab(t);
    for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < nv);
    char *s = NULL;
    rc = alrd_tokenizer_decode(t, ids, n, render, &s, &err);
    FUZZ_CHECK(rc == 0);
    int all_bytes = 1;
    for (size_t i = 0; i < len && all_bytes; i++) all_bytes = has_byte[(uint8_t)text[i]];
    if (sel == 1 && memmem(text, len, "\xe2\x96\x81", 3)) all_bytes = 0;
    if (!parse_special && all_bytes && !memchr(text, 0, len)) {
        size_t skip = add_bos && alrd_tokenizer_add_bos(t) ? 1 : 0;
        char *plain = NULL;
        FUZZ_CHECK(alrd_tokenizer_decode(t, ids + skip, n - skip, 0, &plain, &err) == 0);
        if (strlen(plain) != len || memcmp(plain, text, len)) {
            fprintf(stderr, "round trip differs: %zu bytes in, %zu out\n", len, strlen(plain));
            FUZZ_CHECK(0);
        }
        free(plain);
    }
    free(s);
    free(ids);
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_tokenize(data, size); }
#endif
