/* fuzz_gguf: GGUF reader, typed getters, tokenizer.ggml.* -> vocab ->
 * tokenizer, tensor rows to fp32 (plain and unpermuted), the GGUF source
 * (config, HF names) and the model loader, on arbitrary bytes. */
#include "fuzz_util.h"

#include "../../formats/gguf.h"
#include "../../formats/source.h"
#include "../../runtime/model.h"
#include "../../runtime/tokenizer.h"

/* Builds a tokenizer from v and runs a short text through it. */
static void gguf_try_tokenizer(const alrd_vocab *v) {
    static const char text[] = "Hello world <|im_start|> 12345 \xc3\xa9t\xc3\xa9 \xe2\x96\x81 <s>";
    fuzz_run_tokenizer(v, text, sizeof text - 1);
}

/* Converts the first and last row of up to 16 tensors. */
static void gguf_try_rows(const alrd_tensor *ts, uint64_t n) {
    for (uint64_t i = 0; i < n && i < 16; i++) {
        const alrd_tensor *t = &ts[i];
        int64_t rows = alrd_tensor_rows(t), cols = alrd_tensor_cols(t);
        if (rows <= 0 || cols <= 0 || cols > (1 << 16)) continue;
        float *f = malloc((size_t)cols * sizeof *f);
        if (!f) abort();
        alrd_error err = {{0}};
        int rc = alrd_tensor_rows_f32(t, 0, 1, f, &err);
        fuzz_check_error(rc, &err);
        if (rc == 0) fuzz_check_error(alrd_tensor_rows_f32(t, rows - 1, 1, f, &err), &err);
        free(f);
    }
}

int fuzz_gguf(const uint8_t *data, size_t size) {
    const char *path = fuzz_memfile(data, size);
    alrd_gguf g;
    alrd_error err = {{0}};
    int rc = alrd_gguf_open(&g, path, &err);
    fuzz_check_error(rc, &err);
    if (rc) return 0;
    for (uint64_t i = 0; i < g.n_kv; i++) { /* every getter on every key */
        int64_t iv;
        double dv;
        char *s = NULL;
        alrd_gguf_get_int(&g, g.kv[i].key, &iv, &err);
        alrd_gguf_get_float(&g, g.kv[i].key, &dv, &err);
        if (alrd_gguf_get_str(&g, g.kv[i].key, &s, NULL) == 0) free(s);
    }
    gguf_try_rows(g.tensors, g.n_tensors);
    alrd_vocab v;
    rc = alrd_vocab_from_gguf(&v, &g, &err);
    fuzz_check_error(rc, &err);
    if (rc == 0) {
        gguf_try_tokenizer(&v);
        char *chat = alrd_chat_format(&v, NULL, "hi", &err);
        if (!chat) fuzz_check_error(-1, &err);
        free(chat);
        alrd_vocab_free(&v);
    }
    alrd_gguf_close(&g);

    alrd_source s;
    rc = alrd_source_open(&s, path, &err);
    fuzz_check_error(rc, &err);
    if (rc) return 0;
    gguf_try_rows(s.tensors, (uint64_t)s.n_tensors);
    /* The loader allocates fp32 copies of tensors that must exist in the
     * file; keep the per-input work small. */
    const alrd_config *c = &s.config;
    if ((int64_t)c->vocab_size * c->hidden <= (1 << 16) && (int64_t)c->ffn * c->hidden <= (1 << 16) &&
        c->n_layers <= 4) {
        alrd_model m;
        rc = alrd_model_load(&m, &s, &err);
        fuzz_check_error(rc, &err);
        alrd_model_free(&m); /* frees a partial load too */
    }
    alrd_source_close(&s);
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_gguf(data, size); }
#endif
