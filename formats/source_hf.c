/* source_hf: a Hugging Face checkpoint directory (config.json, safetensors
 * single or sharded, tokenizer.json + tokenizer_config.json) as an
 * alrd_source. Tensors keep their HF names and are already in HF row order. */
#include "hf.h"
#include "safetensors.h"
#include "source.h"

#include <stdlib.h>
#include <string.h>

static void hf_close(alrd_source *s) {
    alrd_safetensors_set *st = s->impl;
    if (st) alrd_safetensors_set_close(st);
    free(st);
    s->impl = NULL;
}

static const alrd_tensor *find(const alrd_source *s, const char *name) {
    for (int i = 0; i < s->n_tensors; i++)
        if (!strcmp(s->tensors[i].name, name)) return &s->tensors[i];
    return NULL;
}

/* name must exist (unless optional) with shape rows x cols (cols 0: 1-D). */
static int expect(const alrd_source *s, const char *dir, const char *name, int64_t rows,
                  int64_t cols, int optional, alrd_error *err) {
    const alrd_tensor *t = find(s, name);
    if (!t) return optional ? 0 : alrd_errf(err, "%s: tensor %s: missing", dir, name);
    int ok = cols ? t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols
                  : t->n_dims == 1 && t->shape[0] == rows;
    if (!ok) {
        if (cols)
            return alrd_errf(err, "%s: tensor %s: shape [%lld, %lld] expected, file has %d dims [%lld, ...]",
                             dir, name, (long long)rows, (long long)cols, t->n_dims,
                             t->n_dims ? (long long)t->shape[0] : 0LL);
        return alrd_errf(err, "%s: tensor %s: shape [%lld] expected, file has %d dims [%lld, ...]",
                         dir, name, (long long)rows, t->n_dims,
                         t->n_dims ? (long long)t->shape[0] : 0LL);
    }
    return 0;
}

static int check_shapes(const alrd_source *s, const char *dir, alrd_error *err) {
    const alrd_config *c = &s->config;
    int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    if (expect(s, dir, "model.embed_tokens.weight", c->vocab_size, c->hidden, 0, err) ||
        expect(s, dir, "model.norm.weight", c->hidden, 0, 0, err) ||
        expect(s, dir, "lm_head.weight", c->vocab_size, c->hidden, 1, err))
        return -1;
    for (int l = 0; l < c->n_layers; l++) {
        char n[20][ALRD_NAME_MAX];
        static const char *const suffix[] = {
            "input_layernorm.weight", "post_attention_layernorm.weight",
            "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
            "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
            "mlp.down_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.bias",
            "self_attn.v_proj.bias", "self_attn.o_proj.bias"};
        for (int k = 0; k < 13; k++)
            snprintf(n[k], sizeof n[k], "model.layers.%d.%s", l, suffix[k]);
        if (expect(s, dir, n[0], c->hidden, 0, 0, err) || expect(s, dir, n[1], c->hidden, 0, 0, err) ||
            expect(s, dir, n[2], q, c->hidden, 0, err) || expect(s, dir, n[3], kv, c->hidden, 0, err) ||
            expect(s, dir, n[4], kv, c->hidden, 0, err) || expect(s, dir, n[5], c->hidden, q, 0, err) ||
            expect(s, dir, n[6], c->ffn, c->hidden, 0, err) ||
            expect(s, dir, n[7], c->ffn, c->hidden, 0, err) ||
            expect(s, dir, n[8], c->hidden, c->ffn, 0, err) ||
            /* biases: checked when present; qwen2 has q/k/v but no o bias */
            expect(s, dir, n[9], q, 0, 1, err) || expect(s, dir, n[10], kv, 0, 1, err) ||
            expect(s, dir, n[11], kv, 0, 1, err) || expect(s, dir, n[12], c->hidden, 0, 1, err))
            return -1;
    }
    return 0;
}

/* Embedding rows past the tokenizer's last id get "[PADn]" tokens, as
 * llama.cpp's converter does. */
static int pad_vocab(alrd_vocab *v, int32_t n, const char *path, alrd_error *err) {
    if (v->n_tokens > n)
        return alrd_errf(err, "%s: tokenizer.json has %d tokens, more than config.json vocab_size %d",
                         path, (int)v->n_tokens, (int)n);
    if (v->n_tokens == n) return 0;
    char **t = realloc(v->tokens, (size_t)n * sizeof *t);
    if (!t) return alrd_errf(err, "%s: out of memory", path);
    v->tokens = t;
    int32_t *ty = realloc(v->types, (size_t)n * sizeof *ty);
    if (!ty) return alrd_errf(err, "%s: out of memory", path);
    v->types = ty;
    if (v->scores) {
        float *sc = realloc(v->scores, (size_t)n * sizeof *sc);
        if (!sc) return alrd_errf(err, "%s: out of memory", path);
        v->scores = sc;
    }
    for (int32_t i = v->n_tokens; i < n; i++) {
        char pad[32];
        snprintf(pad, sizeof pad, "[PAD%d]", (int)i);
        if (!(v->tokens[i] = strdup(pad))) return alrd_errf(err, "%s: out of memory", path);
        v->types[i] = ALRD_TOKEN_UNUSED;
        if (v->scores) v->scores[i] = -1e9f;
        v->n_tokens = i + 1;
    }
    return 0;
}

int alrd_source_open_hf(alrd_source *s, const char *dir, alrd_error *err) {
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", dir);
    s->format = ALRD_SRC_HF;
    char p[1200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (alrd_hf_config_read(&s->config, p, err) != 0) return -1;
    alrd_safetensors_set *st = calloc(1, sizeof *st);
    if (!st) return alrd_errf(err, "%s: out of memory", dir);
    if (alrd_safetensors_set_open_dir(st, dir, err) != 0) {
        free(st);
        return -1;
    }
    s->impl = st;
    s->close_impl = hf_close;
    s->tensors = malloc((st->n_tensors ? (size_t)st->n_tensors : 1) * sizeof *s->tensors);
    if (!s->tensors) { alrd_errf(err, "%s: out of memory", dir); goto fail; }
    /* A tied model has no lm_head downstream, even if the file carries one
     * (transformers ignores it then too). */
    int has_head = alrd_safetensors_set_find(st, "lm_head.weight") != NULL;
    if (!has_head) s->config.tie_embeddings = 1;
    for (int i = 0; i < st->n_tensors; i++) {
        if (s->config.tie_embeddings && !strcmp(st->tensors[i].name, "lm_head.weight")) continue;
        s->tensors[s->n_tensors] = st->tensors[i];
        s->tensors[s->n_tensors].unpermute_heads = 0;
        s->n_tensors++;
    }
    if (check_shapes(s, dir, err) != 0) goto fail;
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    if (alrd_hf_vocab_read(&s->vocab, p, err) != 0) goto fail;
    if (pad_vocab(&s->vocab, s->config.vocab_size, p, err) != 0) goto fail;
    return 0;
fail:
    free(s->tensors);
    alrd_vocab_free(&s->vocab);
    hf_close(s);
    memset(s, 0, sizeof *s);
    return -1;
}
