/* source_gguf: a llama / qwen2 GGUF file as an alrd_source: config from the
 * ARCH.* keys, tensors renamed to HF names (data stays in the mapping), and
 * the tokenizer from tokenizer.ggml.*. llama-architecture attn_q / attn_k
 * rows are marked for unpermuting (docs/design.md 4.1). */
#include "source.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

static void close_gguf(alrd_source *s) {
    if (s->impl) {
        alrd_gguf_close(s->impl);
        free(s->impl);
        s->impl = NULL;
    }
}

/* ARCH.suffix as an int in [0, INT_MAX]; dflt when absent and dflt >= 0. */
static int cfg_int(const alrd_gguf *g, const char *arch, const char *suffix, int dflt, int *out,
                   alrd_error *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!alrd_gguf_find(g, key)) {
        if (dflt >= 0) { *out = dflt; return 0; }
        return alrd_errf(err, "%s: %s: missing", g->map.path, key);
    }
    int64_t v;
    if (alrd_gguf_get_int(g, key, &v, err)) return -1;
    if (v < 0 || v > INT_MAX)
        return alrd_errf(err, "%s: %s: %lld out of range", g->map.path, key, (long long)v);
    *out = (int)v;
    return 0;
}

static int cfg_float(const alrd_gguf *g, const char *arch, const char *suffix, double dflt,
                     int required, float *out, alrd_error *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    double v = dflt;
    if (alrd_gguf_find(g, key) || required)
        if (alrd_gguf_get_float(g, key, &v, err)) return -1;
    *out = (float)v;
    return 0;
}

static int read_config(alrd_config *c, const alrd_gguf *g, alrd_error *err) {
    const char *path = g->map.path;
    char *arch = NULL;
    if (alrd_gguf_get_str(g, "general.architecture", &arch, err)) return -1;
    if (strcmp(arch, "llama") != 0 && strcmp(arch, "qwen2") != 0) {
        alrd_errf(err, "%s: general.architecture: '%.64s' is not supported (llama or qwen2)", path, arch);
        free(arch);
        return -1;
    }
    snprintf(c->arch, sizeof c->arch, "%s", arch);
    free(arch);
    const char *a = c->arch;
    if (cfg_int(g, a, "block_count", -1, &c->n_layers, err) ||
        cfg_int(g, a, "embedding_length", -1, &c->hidden, err) ||
        cfg_int(g, a, "feed_forward_length", -1, &c->ffn, err) ||
        cfg_int(g, a, "attention.head_count", -1, &c->n_heads, err) ||
        cfg_int(g, a, "attention.head_count_kv", c->n_heads, &c->n_kv_heads, err) ||
        cfg_int(g, a, "context_length", -1, &c->max_ctx, err) ||
        cfg_float(g, a, "rope.freq_base", 10000.0, 0, &c->rope_theta, err) ||
        cfg_float(g, a, "attention.layer_norm_rms_epsilon", 0, 1, &c->rms_eps, err))
        return -1;
    if (c->n_heads <= 0)
        return alrd_errf(err, "%s: %s.attention.head_count: must be positive", path, a);
    char key[128];
    snprintf(key, sizeof key, "%s.attention.key_length", a);
    if (alrd_gguf_find(g, key)) {
        if (cfg_int(g, a, "attention.key_length", -1, &c->head_dim, err)) return -1;
        int vlen;
        if (cfg_int(g, a, "attention.value_length", c->head_dim, &vlen, err)) return -1;
        if (vlen != c->head_dim)
            return alrd_errf(err, "%s: %s.attention.value_length: %d differs from key_length %d", path, a,
                             vlen, c->head_dim);
    } else {
        if (c->hidden % c->n_heads != 0)
            return alrd_errf(err, "%s: %s.embedding_length: %d is not a multiple of head_count %d", path,
                             a, c->hidden, c->n_heads);
        c->head_dim = c->hidden / c->n_heads;
    }
    int rope_dim;
    if (cfg_int(g, a, "rope.dimension_count", c->head_dim, &rope_dim, err)) return -1;
    if (rope_dim != c->head_dim)
        return alrd_errf(err, "%s: %s.rope.dimension_count: %d, expected the head dim %d (partial RoPE is not supported)",
                         path, a, rope_dim, c->head_dim);
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    if (alrd_gguf_find(g, key)) {
        char *type = NULL;
        if (alrd_gguf_get_str(g, key, &type, err)) return -1;
        int none = strcmp(type, "none") == 0;
        if (!none) alrd_errf(err, "%s: %s: rope scaling '%.32s' is not supported", path, key, type);
        free(type);
        if (!none) return -1;
    }
    /* rope_freqs.weight (llama3 scaling, per-frequency factors) is applied by the model loader */
    /* vocab size: the key, else the token list, else the embedding rows */
    snprintf(key, sizeof key, "%s.vocab_size", a);
    const alrd_gguf_kv *tok = alrd_gguf_find(g, "tokenizer.ggml.tokens");
    const alrd_tensor *emb = alrd_gguf_tensor(g, "token_embd.weight");
    if (alrd_gguf_find(g, key)) {
        if (cfg_int(g, a, "vocab_size", -1, &c->vocab_size, err)) return -1;
    } else if (tok && tok->value.type == GGUF_T_ARRAY && tok->value.v.arr.n <= INT_MAX) {
        c->vocab_size = (int)tok->value.v.arr.n;
    } else if (emb && emb->n_dims == 2 && emb->shape[0] <= INT_MAX) {
        c->vocab_size = (int)emb->shape[0];
    } else {
        return alrd_errf(err, "%s: %s: missing (and no token list to count)", path, key);
    }
    c->tie_embeddings = alrd_gguf_tensor(g, "output.weight") == NULL;
    c->attention_bias = alrd_gguf_tensor(g, "blk.0.attn_q.bias") != NULL;
    c->mlp_bias = alrd_gguf_tensor(g, "blk.0.ffn_up.bias") != NULL;
    return 0;
}

/* GGUF tensor name -> HF name; names we do not know keep their GGUF name. */
static void hf_name(const char *in, char *out, size_t cap) {
    static const struct { const char *gguf, *hf; } top[] = {
        {"token_embd.weight", "model.embed_tokens.weight"},
        {"output_norm.weight", "model.norm.weight"},
        {"output.weight", "lm_head.weight"},
    };
    static const struct { const char *gguf, *hf; } blk[] = {
        {"attn_norm", "input_layernorm"}, {"ffn_norm", "post_attention_layernorm"},
        {"attn_q", "self_attn.q_proj"},   {"attn_k", "self_attn.k_proj"},
        {"attn_v", "self_attn.v_proj"},   {"attn_output", "self_attn.o_proj"},
        {"ffn_gate", "mlp.gate_proj"},    {"ffn_up", "mlp.up_proj"},
        {"ffn_down", "mlp.down_proj"},
    };
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        if (strcmp(in, top[i].gguf) == 0) { snprintf(out, cap, "%s", top[i].hf); return; }
    unsigned layer;
    int n = 0;
    if (sscanf(in, "blk.%u.%n", &layer, &n) == 1 && n > 0) {
        const char *rest = in + n, *dot = strrchr(rest, '.');
        if (dot && (strcmp(dot, ".weight") == 0 || strcmp(dot, ".bias") == 0)) {
            size_t base = (size_t)(dot - rest);
            for (size_t i = 0; i < sizeof blk / sizeof blk[0]; i++)
                if (strlen(blk[i].gguf) == base && strncmp(rest, blk[i].gguf, base) == 0) {
                    snprintf(out, cap, "model.layers.%u.%s%s", layer, blk[i].hf, dot);
                    return;
                }
        }
    }
    snprintf(out, cap, "%s", in);
}

int alrd_source_open_gguf(alrd_source *s, const char *path, alrd_error *err) {
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", path);
    s->format = ALRD_SRC_GGUF;
    alrd_gguf *g = calloc(1, sizeof *g);
    if (!g) return alrd_errf(err, "%s: out of memory", path);
    if (alrd_gguf_open(g, path, err)) {
        free(g);
        return -1;
    }
    s->impl = g;
    s->close_impl = close_gguf;
    if (read_config(&s->config, g, err)) goto fail;
    if (g->n_tensors > INT_MAX) {
        alrd_errf(err, "%s: tensor count %llu too large", path, (unsigned long long)g->n_tensors);
        goto fail;
    }
    s->tensors = calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof *s->tensors);
    if (!s->tensors) { alrd_errf(err, "%s: out of memory", path); goto fail; }
    s->n_tensors = (int)g->n_tensors;
    int permuted = strcmp(s->config.arch, "llama") == 0;
    for (int i = 0; i < s->n_tensors; i++) {
        alrd_tensor *t = &s->tensors[i];
        *t = g->tensors[i];
        hf_name(g->tensors[i].name, t->name, sizeof t->name);
        if (!permuted || t->n_dims != 2) continue;
        size_t len = strlen(t->name);
        const char *q = "self_attn.q_proj.weight", *k = "self_attn.k_proj.weight";
        size_t ql = strlen(q);
        if (len >= ql && strcmp(t->name + len - ql, q) == 0) t->unpermute_heads = s->config.n_heads;
        else if (len >= ql && strcmp(t->name + len - ql, k) == 0) t->unpermute_heads = s->config.n_kv_heads;
    }
    if (alrd_vocab_from_gguf(&s->vocab, g, err)) goto fail;
    return 0;
fail:
    alrd_source_close(s);
    return -1;
}
