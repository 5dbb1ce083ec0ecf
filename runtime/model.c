/* model: loading weights as fp32 and the CPU forward pass. */
#include "model.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../kernels/cpu_ops.h"

/* ---- loading ---------------------------------------------------------- */

/* Loads tensor name (expected rows x cols; cols 0 = 1-D of rows) as fp32. */
static int load_f32(const alrd_source *s, const char *name, int64_t rows, int64_t cols, float **out,
                    alrd_error *err) {
    const alrd_tensor *t;
    if (alrd_source_expect(s, name, rows, cols, &t, err)) return -1;
    size_t n;
    if (alrd_mul_ok((size_t)rows, (size_t)(cols ? cols : 1), &n) || alrd_mul_ok(n, sizeof(float), &n))
        return alrd_errf(err, "%s: %s: size overflow", s->path, name);
    *out = malloc(n);
    if (!*out) return alrd_errf(err, "%s: %s: out of memory (%zu bytes)", s->path, name, n);
    return alrd_tensor_to_f32(t, *out, err);
}

/* Optional tensor (bias): NULL when absent. */
static int load_opt(const alrd_source *s, const char *name, int64_t rows, float **out, alrd_error *err) {
    *out = NULL;
    if (!alrd_source_tensor(s, name)) return 0;
    return load_f32(s, name, rows, 0, out, err);
}

/* Low-rank factors: A [n_groups][g*hd][r] and B [n_groups][r][hidden],
 * B kept stacked as one [n_groups*r][hidden] matrix (one product per token). */
static int load_factors(const alrd_source *s, const alrd_model *m, int l, const char *proj, int rank,
                        float **A, float **B, alrd_error *err) {
    const alrd_config *c = &m->cfg;
    char name[160];
    const alrd_tensor *t;
    int64_t gh = (int64_t)m->group_heads * c->head_dim;
    snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.A", l, proj);
    if (!(t = alrd_source_tensor(s, name)))
        return alrd_errf(err, "%s: tensor %s: missing", s->path, name);
    if (t->n_dims != 3 || t->shape[0] != m->n_groups || t->shape[1] != gh || t->shape[2] != rank)
        return alrd_errf(err, "%s: tensor %s: shape does not match [%d, %lld, %d]", s->path, name,
                         m->n_groups, (long long)gh, rank);
    size_t na = (size_t)m->n_groups * gh * rank, nb = (size_t)m->n_groups * rank * c->hidden;
    *A = malloc(na * sizeof(float));
    *B = malloc(nb * sizeof(float));
    if (!*A || !*B) return alrd_errf(err, "%s: %s: out of memory", s->path, name);
    if (alrd_tensor_to_f32(t, *A, err)) return -1;
    snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.B", l, proj);
    if (!(t = alrd_source_tensor(s, name)))
        return alrd_errf(err, "%s: tensor %s: missing", s->path, name);
    if (t->n_dims != 3 || t->shape[0] != m->n_groups || t->shape[1] != rank || t->shape[2] != c->hidden)
        return alrd_errf(err, "%s: tensor %s: shape does not match [%d, %d, %d]", s->path, name,
                         m->n_groups, rank, c->hidden);
    return alrd_tensor_to_f32(t, *B, err);
}

/* GGUF's llama3 RoPE scaling: a rope_freqs.weight tensor of head_dim/2
 * factors that divide the frequencies (llama.cpp: theta_i = pos * base^(-2i/d)
 * / factor_i). Carried into .alrd files as a tensor of the same name. */
static int apply_rope_freqs(const alrd_source *s, alrd_model *m, alrd_error *err) {
    static const char *name = "rope_freqs.weight";
    if (!alrd_source_tensor(s, name)) return 0;
    const int half = m->cfg.head_dim / 2;
    if (m->cfg.rope_llama3)
        return alrd_errf(err, "%s: %s: per-frequency RoPE factors and llama3 rope_scaling both given", s->path, name);
    float *f;
    if (load_f32(s, name, half, 0, &f, err)) return -1;
    for (int i = 0; i < half; i++)
        if (!(f[i] > 0) || !isfinite(f[i])) {
            alrd_errf(err, "%s: %s: factor %d is %g, expected a finite number > 0", s->path, name, i, (double)f[i]);
            free(f);
            return -1;
        }
    for (int i = 0; i < half; i++) m->inv_freq[i] = (float)((double)m->inv_freq[i] / f[i]);
    free(f);
    return 0;
}

static void init_inv_freq(alrd_model *m) {
    const alrd_config *c = &m->cfg;
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double f = 1.0 / pow((double)c->rope_theta, (2.0 * i) / c->head_dim);
        if (c->rope_llama3) { /* Llama-3.1 frequency-dependent scaling */
            double lo_wl = c->rope_orig_ctx / c->rope_low_freq_factor;
            double hi_wl = c->rope_orig_ctx / c->rope_high_freq_factor;
            double wl = 2 * M_PI / f;
            if (wl > lo_wl) f /= c->rope_factor;
            else if (wl >= hi_wl) {
                double sm = (c->rope_orig_ctx / wl - c->rope_low_freq_factor) /
                            (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1 - sm) * f / c->rope_factor + sm * f;
            }
        }
        m->inv_freq[i] = (float)f;
    }
}

/* ---- lazy layers ------------------------------------------------------ */

/* The one layer of a lazy model whose matrices are materialized. */
struct alrd_model_slot {
    int layer;                         /* -1: none */
    float *wq, *wk, *wv, *wo, *w_gate, *w_up, *w_down;
};

/* The matrices of a layer: name suffix, shape, where the slot keeps it. */
typedef struct { const char *name; int64_t rows, cols; size_t slot_off; } layer_mat;

static int layer_mats(const alrd_config *c, layer_mat *t) {
    int64_t H = c->hidden, qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    const layer_mat v[7] = {
        {"self_attn.q_proj.weight", qd, H, offsetof(struct alrd_model_slot, wq)},
        {"self_attn.k_proj.weight", kvd, H, offsetof(struct alrd_model_slot, wk)},
        {"self_attn.v_proj.weight", kvd, H, offsetof(struct alrd_model_slot, wv)},
        {"self_attn.o_proj.weight", H, qd, offsetof(struct alrd_model_slot, wo)},
        {"mlp.gate_proj.weight", c->ffn, H, offsetof(struct alrd_model_slot, w_gate)},
        {"mlp.up_proj.weight", c->ffn, H, offsetof(struct alrd_model_slot, w_up)},
        {"mlp.down_proj.weight", H, c->ffn, offsetof(struct alrd_model_slot, w_down)}};
    memcpy(t, v, sizeof v);
    return 7;
}

static float **slot_ptr(struct alrd_model_slot *sl, const layer_mat *t) {
    return (float **)((char *)sl + t->slot_off);
}

/* The source's pages of a tensor just converted are dropped from this
 * process (they stay in the page cache): otherwise every layer's quantized
 * bytes would accumulate in the resident set. Only for mmap-backed sources. */
static int slot_new(alrd_model *m, alrd_error *err) {
    struct alrd_model_slot *sl = calloc(1, sizeof *sl);
    if (!sl) return alrd_errf(err, "%s: out of memory", m->path);
    sl->layer = -1;
    m->slot = sl;
    layer_mat t[7];
    int n = layer_mats(&m->cfg, t);
    for (int i = 0; i < n; i++) {
        size_t nb;
        if (alrd_mul_ok((size_t)t[i].rows, (size_t)t[i].cols, &nb) || alrd_mul_ok(nb, sizeof(float), &nb))
            return alrd_errf(err, "%s: %s: size overflow", m->path, t[i].name);
        if (!(*slot_ptr(sl, &t[i]) = malloc(nb)))
            return alrd_errf(err, "%s: out of memory for one layer (%s, %zu bytes)", m->path, t[i].name, nb);
    }
    return 0;
}

static void slot_free(struct alrd_model_slot *sl) {
    if (!sl) return;
    float *p[] = {sl->wq, sl->wk, sl->wv, sl->wo, sl->w_gate, sl->w_up, sl->w_down};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) free(p[i]);
    free(sl);
}

/* Dequantizes layer l's matrices into the slot. */
static int slot_fill(const alrd_model *m, int l, alrd_error *err) {
    struct alrd_model_slot *sl = m->slot;
    layer_mat t[7];
    int n = layer_mats(&m->cfg, t);
    sl->layer = -1; /* a failed fill leaves no layer claimed */
    for (int i = 0; i < n; i++) {
        float *dst = *slot_ptr(sl, &t[i]);
        if (!dst) continue; /* K/V kept eager */
        if ((dst == sl->wk && m->layers[l].k_rank) || (dst == sl->wv && m->layers[l].v_rank))
            continue; /* a decomposed projection: its factors are loaded with the model */
        char name[160];
        const alrd_tensor *ts;
        snprintf(name, sizeof name, "model.layers.%d.%s", l, t[i].name);
        if (alrd_source_expect(m->src, name, t[i].rows, t[i].cols, &ts, err) || alrd_tensor_to_f32(ts, dst, err))
            return -1;
        alrd_release_pages(ts->data, ts->nbytes); /* read once: out of the resident set */
    }
    sl->layer = l;
    return 0;
}

const alrd_layer *alrd_model_layer(const alrd_model *m, int l, alrd_layer *view, alrd_error *err) {
    if (l < 0 || l >= m->cfg.n_layers) {
        alrd_errf(err, "%s: layer %d out of range", m->path, l);
        return NULL;
    }
    const alrd_layer *L = &m->layers[l];
    const float *ok = m->kv_override ? m->kv_override[2 * l] : NULL;
    const float *ov = m->kv_override ? m->kv_override[2 * l + 1] : NULL;
    if (!m->slot && !ok && !ov) return L;
    *view = *L;
    if (m->slot) {
        struct alrd_model_slot *sl = m->slot;
        if (sl->layer != l && slot_fill(m, l, err)) return NULL;
        view->wq = sl->wq; view->wo = sl->wo;
        view->w_gate = sl->w_gate; view->w_up = sl->w_up; view->w_down = sl->w_down;
        if (sl->wk && !L->k_rank) view->wk = sl->wk;
        if (sl->wv && !L->v_rank) view->wv = sl->wv;
    }
    if (ok) view->wk = (float *)ok;
    if (ov) view->wv = (float *)ov;
    return view;
}

int alrd_model_set_override(alrd_model *m, int l, int is_v, const float *w, alrd_error *err) {
    if (l < 0 || l >= m->cfg.n_layers)
        return alrd_errf(err, "%s: override: layer %d out of range", m->path, l);
    if (is_v ? m->layers[l].v_rank : m->layers[l].k_rank)
        return alrd_errf(err, "%s: override: layer %d %s is low-rank", m->path, l, is_v ? "v_proj" : "k_proj");
    if (!m->kv_override) {
        if (!w) return 0;
        if (!(m->kv_override = calloc(2 * (size_t)m->cfg.n_layers, sizeof *m->kv_override)))
            return alrd_errf(err, "%s: out of memory", m->path);
    }
    m->kv_override[2 * l + (is_v ? 1 : 0)] = w;
    for (int i = 0; i < 2 * m->cfg.n_layers; i++)
        if (m->kv_override[i]) return 0;
    free(m->kv_override); /* none left: the model is plain again (GPU contexts allowed) */
    m->kv_override = NULL;
    return 0;
}

/* ---- loading (continued) ---------------------------------------------- */

static int model_load(alrd_model *m, const alrd_source *s, int flags, alrd_error *err) {
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "%s", s->path);
    m->cfg = s->config;
    m->flags = flags;
    const alrd_config *c = &m->cfg;
    if (alrd_config_validate(c, s->path, err)) return -1;
    const int lazy = flags & ALRD_MODEL_LAZY, keep_kv = !lazy;
    int H = c->hidden, hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    m->group_heads = c->n_kv_heads;
    if (s->lowrank) {
        const alrd_lowrank *lr = s->lowrank;
        if (lr->n_layers != c->n_layers || lr->group_heads <= 0 || c->n_kv_heads % lr->group_heads)
            return alrd_errf(err, "%s: lowrank: group_heads %d / n_layers %d do not fit the config",
                             s->path, lr->group_heads, lr->n_layers);
        m->has_lowrank = 1;
        m->group_heads = lr->group_heads;
        m->lowrank = *lr;
        size_t nl = (size_t)c->n_layers * sizeof(int);
        m->lowrank.k_rank = malloc(nl); m->lowrank.v_rank = malloc(nl);
        m->lowrank.k_bits = malloc(nl); m->lowrank.v_bits = malloc(nl);
        if (!m->lowrank.k_rank || !m->lowrank.v_rank || !m->lowrank.k_bits || !m->lowrank.v_bits)
            return alrd_errf(err, "%s: out of memory", s->path);
        memcpy(m->lowrank.k_rank, lr->k_rank, nl); memcpy(m->lowrank.v_rank, lr->v_rank, nl);
        memcpy(m->lowrank.k_bits, lr->k_bits, nl); memcpy(m->lowrank.v_bits, lr->v_bits, nl);
    }
    m->n_groups = c->n_kv_heads / m->group_heads;
    m->layers = calloc(c->n_layers, sizeof *m->layers);
    m->inv_freq = malloc(sizeof(float) * (hd / 2));
    if (!m->layers || !m->inv_freq) return alrd_errf(err, "%s: out of memory", s->path);
    init_inv_freq(m);
    if (apply_rope_freqs(s, m, err)) return -1;

    if (load_f32(s, "model.embed_tokens.weight", c->vocab_size, H, &m->embed, err)) return -1;
    if (load_f32(s, "model.norm.weight", H, 0, &m->final_norm, err)) return -1;
    if (c->tie_embeddings || !alrd_source_tensor(s, "lm_head.weight")) m->lm_head = m->embed;
    else if (load_f32(s, "lm_head.weight", c->vocab_size, H, &m->lm_head, err)) return -1;

    for (int l = 0; l < c->n_layers; l++) {
        alrd_layer *L = &m->layers[l];
        char n[160];
        const alrd_tensor *t;
#define NAME(fmt) (snprintf(n, sizeof n, "model.layers.%d." fmt, l), n)
        /* lazy: matrices are only checked here, and materialized by alrd_model_layer */
#define MAT(fmt, rows, cols, dst) \
        (lazy ? alrd_source_expect(s, NAME(fmt), rows, cols, &t, err) : load_f32(s, NAME(fmt), rows, cols, dst, err))
        if (load_f32(s, NAME("input_layernorm.weight"), H, 0, &L->attn_norm, err) ||
            load_f32(s, NAME("post_attention_layernorm.weight"), H, 0, &L->ffn_norm, err) ||
            MAT("self_attn.q_proj.weight", qd, H, &L->wq) ||
            load_opt(s, NAME("self_attn.q_proj.bias"), qd, &L->bq, err) ||
            load_opt(s, NAME("self_attn.k_proj.bias"), kvd, &L->bk, err) ||
            load_opt(s, NAME("self_attn.v_proj.bias"), kvd, &L->bv, err) ||
            MAT("self_attn.o_proj.weight", H, qd, &L->wo) ||
            load_opt(s, NAME("self_attn.o_proj.bias"), H, &L->bo, err) ||
            MAT("mlp.gate_proj.weight", c->ffn, H, &L->w_gate) ||
            MAT("mlp.up_proj.weight", c->ffn, H, &L->w_up) ||
            MAT("mlp.down_proj.weight", H, c->ffn, &L->w_down))
            return -1;
        L->k_rank = m->has_lowrank ? m->lowrank.k_rank[l] : 0;
        L->v_rank = m->has_lowrank ? m->lowrank.v_rank[l] : 0;
        if (L->k_rank) {
            if (load_factors(s, m, l, "k_proj", L->k_rank, &L->kA, &L->kB, err)) return -1;
        } else if (keep_kv ? load_f32(s, NAME("self_attn.k_proj.weight"), kvd, H, &L->wk, err)
                           : alrd_source_expect(s, NAME("self_attn.k_proj.weight"), kvd, H, &t, err)) return -1;
        if (L->v_rank) {
            if (load_factors(s, m, l, "v_proj", L->v_rank, &L->vA, &L->vB, err)) return -1;
        } else if (keep_kv ? load_f32(s, NAME("self_attn.v_proj.weight"), kvd, H, &L->wv, err)
                           : alrd_source_expect(s, NAME("self_attn.v_proj.weight"), kvd, H, &t, err)) return -1;
#undef MAT
#undef NAME
    }
    if (lazy) {
        m->src = s;
        if (slot_new(m, err)) return -1;
    }
    if (alrd_vocab_copy(&m->vocab, &s->vocab)) return alrd_errf(err, "%s: out of memory", s->path);
    if (alrd_tokenizer_new(&m->tok, &m->vocab, err)) return -1;
    return 0;
}

/* A failed load frees what it had loaded, so callers only free on success. */
int alrd_model_load_opts(alrd_model *m, const alrd_source *s, int flags, alrd_error *err) {
    int rc = model_load(m, s, flags, err);
    if (rc) alrd_model_free(m);
    return rc;
}

int alrd_model_load(alrd_model *m, const alrd_source *s, alrd_error *err) {
    return alrd_model_load_opts(m, s, 0, err);
}

int alrd_model_open(alrd_model *m, const char *path, alrd_error *err) {
    alrd_source s;
    memset(m, 0, sizeof *m);
    if (alrd_source_open(&s, path, err)) return -1;
    int rc = alrd_model_load(m, &s, err);
    alrd_source_close(&s);
    if (rc) alrd_model_free(m);
    return rc;
}

void alrd_model_free(alrd_model *m) {
    if (m->layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            alrd_layer *L = &m->layers[l];
            float *p[] = {L->attn_norm, L->ffn_norm, L->wq, L->bq, L->wk, L->bk, L->wv, L->bv,
                          L->kA, L->kB, L->vA, L->vB, L->wo, L->bo, L->w_gate, L->w_up, L->w_down};
            for (size_t i = 0; i < sizeof p / sizeof *p; i++) free(p[i]);
        }
    }
    free(m->layers);
    slot_free(m->slot);
    free(m->kv_override);
    if (m->lm_head != m->embed) free(m->lm_head);
    free(m->embed);
    free(m->final_norm);
    free(m->inv_freq);
    free(m->lowrank.k_rank); free(m->lowrank.v_rank);
    free(m->lowrank.k_bits); free(m->lowrank.v_bits);
    if (m->tok) alrd_tokenizer_free(m->tok);
    alrd_vocab_free(&m->vocab);
    memset(m, 0, sizeof *m);
}

int alrd_model_lowrank_view(alrd_model *view, const alrd_model *base, const alrd_lowrank *lr, float *const *kA,
                            float *const *kB, float *const *vA, float *const *vB, alrd_error *err) {
    const alrd_config *c = &base->cfg;
    memset(view, 0, sizeof *view);
    if (base->has_lowrank || base->kv_override)
        return alrd_errf(err, "%s: a view needs a plain model (no low-rank layers or overrides)", base->path);
    if (alrd_lowrank_validate(lr, c->n_layers, c->n_kv_heads, c->head_dim, base->path, err)) return -1;
    *view = *base;
    view->slot = NULL;
    view->kv_override = NULL;
    view->lowrank = *lr; /* borrowed arrays */
    view->has_lowrank = 1;
    view->group_heads = lr->group_heads;
    view->n_groups = c->n_kv_heads / lr->group_heads;
    view->layers = calloc(c->n_layers, sizeof *view->layers);
    if (!view->layers) {
        memset(view, 0, sizeof *view);
        return alrd_errf(err, "%s: out of memory", base->path);
    }
    for (int l = 0; l < c->n_layers; l++) {
        alrd_layer *L = &view->layers[l];
        *L = base->layers[l];
        L->k_rank = lr->k_rank[l];
        L->v_rank = lr->v_rank[l];
        if (L->k_rank) {
            if (!kA[l] || !kB[l]) { alrd_model_view_free(view); return alrd_errf(err, "view: layer %d: no K factors", l); }
            L->kA = kA[l], L->kB = kB[l], L->wk = NULL;
        }
        if (L->v_rank) {
            if (!vA[l] || !vB[l]) { alrd_model_view_free(view); return alrd_errf(err, "view: layer %d: no V factors", l); }
            L->vA = vA[l], L->vB = vB[l], L->wv = NULL;
        }
    }
    if (base->slot && slot_new(view, err)) {
        alrd_model_view_free(view);
        return -1;
    }
    return 0;
}

void alrd_model_view_free(alrd_model *view) {
    slot_free(view->slot);
    free(view->kv_override);
    free(view->layers);
    memset(view, 0, sizeof *view);
}

int alrd_model_k_width(const alrd_model *m, int l) {
    int r = m->layers[l].k_rank;
    return r ? m->n_groups * r : m->cfg.n_kv_heads * m->cfg.head_dim;
}

int alrd_model_v_width(const alrd_model *m, int l) {
    int r = m->layers[l].v_rank;
    return r ? m->n_groups * r : m->cfg.n_kv_heads * m->cfg.head_dim;
}
