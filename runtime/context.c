/* context: the CPU forward pass of one sequence over the latent KV cache. */
#include "context.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/cpu_ops.h"
#include "kv_cache.h"
#if ALRD_CUDA
#include "gpu.h"
#endif

struct alrd_ctx {
    const alrd_model *m;
    int max_ctx, max_batch;
    alrd_cache_opts opts;
    alrd_kv_cache *cache;
    int pos;
    alrd_attn_input_fn hook;
    void *hook_user;
    /* activations for up to max_batch tokens */
    float *x, *xn, *q, *lk, *lv, *att, *gate, *up;
    int *posv;            /* positions of the rows being processed */
    /* attention over up to max_ctx cached tokens */
    float *kf;            /* reconstructed, roped keys [max_ctx][n_kv*hd] */
    float *scores;        /* [max_batch][max_ctx] */
    float *u;             /* latent value mix [max_batch][max v rank] */
    float *cos_tab, *sin_tab; /* [max_ctx][hd/2] */
    int *kpos;            /* 0..max_ctx-1 */
    int backend;          /* ALRD_BACKEND_CPU or _GPU */
#if ALRD_CUDA
    alrd_gpu *gpu;        /* the GPU engine (owned) when backend is GPU */
#endif
};

int alrd_ctx_gpu_available(void) {
#if ALRD_CUDA
    return alrd_gpu_available();
#else
    return 0;
#endif
}

int alrd_ctx_backend(const alrd_ctx *c) { return c->backend; }

void alrd_cache_opts_default(const alrd_model *m, alrd_cache_opts *o) {
    memset(o, 0, sizeof *o);
    o->k_bits = o->v_bits = 16;
    o->group_size = 32;
    o->residual = 128;
    o->use_kivi = 1;
    if (m->has_lowrank) {
        o->k_bits = o->v_bits = 0; /* per-layer bits from the file */
        o->group_size = m->lowrank.group_size;
        o->residual = m->lowrank.residual_length;
        o->use_kivi = m->lowrank.use_kivi;
    }
}

int alrd_ctx_new(alrd_ctx **out, const alrd_model *m, int max_ctx, int max_batch,
                 const alrd_cache_opts *opts, alrd_error *err) {
    const alrd_config *c = &m->cfg;
    *out = NULL;
    if (max_ctx <= 0 || max_batch <= 0 || max_batch > max_ctx || max_ctx > (1 << 22))
        return alrd_errf(err, "%s: context of %d tokens (batch %d) is out of range", m->path, max_ctx,
                         max_batch);
    alrd_ctx *x = calloc(1, sizeof *x);
    if (!x) return alrd_errf(err, "out of memory");
    x->m = m;
    x->max_ctx = max_ctx;
    x->max_batch = max_batch;
    if (opts) x->opts = *opts;
    else alrd_cache_opts_default(m, &x->opts);

    int L = c->n_layers, hd = c->head_dim, kvd = c->n_kv_heads * hd, qd = c->n_heads * hd;
    int *dk = malloc(sizeof(int) * L), *dv = malloc(sizeof(int) * L);
    int *kb = malloc(sizeof(int) * L), *vb = malloc(sizeof(int) * L);
    int wmax = kvd, vrmax = 1;
    for (int l = 0; l < L && dk && dv && kb && vb; l++) {
        dk[l] = alrd_model_k_width(m, l);
        dv[l] = alrd_model_v_width(m, l);
        if (dk[l] > wmax) wmax = dk[l];
        if (dv[l] > wmax) wmax = dv[l];
        if (m->layers[l].v_rank > vrmax) vrmax = m->layers[l].v_rank;
        kb[l] = x->opts.k_bits ? x->opts.k_bits : m->lowrank.k_bits[l];
        vb[l] = x->opts.v_bits ? x->opts.v_bits : m->lowrank.v_bits[l];
    }
    int rc = -1;
    x->backend = ALRD_BACKEND_CPU;
    if (x->opts.backend == ALRD_BACKEND_GPU || (x->opts.backend == ALRD_BACKEND_AUTO && alrd_ctx_gpu_available()))
        x->backend = ALRD_BACKEND_GPU;
    /* what exists on the CPU path only: AUTO takes the CPU, GPU is refused (the sink count itself is checked by
     * the CPU cache's config check) */
    const char *cpu_only = m->slot || m->kv_override ? "a lazily loaded model (or one with K/V overrides set)"
                           : x->opts.sink != 0        ? "a cache with sink tokens"
                                                      : NULL;
    if (cpu_only) {
        if (x->opts.backend == ALRD_BACKEND_GPU) {
            free(dk); free(dv); free(kb); free(vb);
            alrd_ctx_free(x);
            return alrd_errf(err, "%s: %s runs on the CPU only", m->path, cpu_only);
        }
        x->backend = ALRD_BACKEND_CPU;
    }
#if ALRD_CUDA
    if (x->backend == ALRD_BACKEND_GPU && dk && dv && kb && vb) {
        alrd_gpu_opts go = {.max_ctx = max_ctx, .max_batch = max_batch, .n_seq = 1, .k_bits = kb, .v_bits = vb,
                            .group_size = x->opts.group_size, .residual = x->opts.residual,
                            .use_kivi = x->opts.use_kivi,
                            .attn = (x->opts.gpu_flags & ALRD_GPU_REF_ATTN) ? ALRD_GPU_ATTN_REF : ALRD_GPU_ATTN_FUSED,
                            .graph = !(x->opts.gpu_flags & ALRD_GPU_NO_GRAPH), .score = 1};
        rc = alrd_gpu_new(&x->gpu, m, &go, err);
        free(dk); free(dv); free(kb); free(vb);
        if (rc) { alrd_ctx_free(x); return -1; }
        size_t B = max_batch;
        x->x = malloc(sizeof(float) * B * c->hidden); /* host rows for alrd_ctx_embed / alrd_ctx_logits */
        x->xn = malloc(sizeof(float) * B * c->hidden);
        if (!x->x || !x->xn) {
            alrd_ctx_free(x);
            return alrd_errf(err, "%s: out of memory", m->path);
        }
        *out = x;
        return 0;
    }
#endif
    if (x->backend == ALRD_BACKEND_GPU) {
        free(dk); free(dv); free(kb); free(vb);
        alrd_ctx_free(x);
        return alrd_errf(err, "%s: no GPU backend (this build has no CUDA, or no device is present)", m->path);
    }
    if (dk && dv && kb && vb) {
        alrd_kv_cache_config kc = {.n_layers = L, .dk = dk, .dv = dv, .k_bits = kb, .v_bits = vb,
                                   .group_size = x->opts.group_size, .residual_length = x->opts.residual,
                                   .use_kivi = x->opts.use_kivi, .max_ctx = max_ctx, .sink_tokens = x->opts.sink};
        rc = alrd_kv_cache_create(&x->cache, &kc, err);
    }
    free(dk); free(dv); free(kb); free(vb);
    if (rc) { alrd_ctx_free(x); return -1; }

    size_t B = max_batch, N = max_ctx;
    x->x = malloc(sizeof(float) * B * c->hidden);
    x->xn = malloc(sizeof(float) * B * c->hidden);
    x->q = malloc(sizeof(float) * B * qd);
    x->lk = malloc(sizeof(float) * B * wmax);
    x->lv = malloc(sizeof(float) * B * wmax);
    x->att = malloc(sizeof(float) * B * (qd > c->hidden ? qd : c->hidden));
    x->gate = malloc(sizeof(float) * B * c->ffn);
    x->up = malloc(sizeof(float) * B * c->ffn);
    x->posv = malloc(sizeof(int) * B);
    x->kf = malloc(sizeof(float) * N * kvd);
    x->scores = malloc(sizeof(float) * B * N);
    x->u = malloc(sizeof(float) * B * vrmax);
    x->cos_tab = malloc(sizeof(float) * N * (hd / 2));
    x->sin_tab = malloc(sizeof(float) * N * (hd / 2));
    x->kpos = malloc(sizeof(int) * N);
    if (!x->x || !x->xn || !x->q || !x->lk || !x->lv || !x->att || !x->gate || !x->up || !x->posv ||
        !x->kf || !x->scores || !x->u || !x->cos_tab || !x->sin_tab || !x->kpos) {
        alrd_ctx_free(x);
        return alrd_errf(err, "%s: out of memory for a %d-token context", m->path, max_ctx);
    }
    for (int p = 0; p < max_ctx; p++) {
        x->kpos[p] = p;
        for (int i = 0; i < hd / 2; i++) {
            float a = (float)p * m->inv_freq[i]; /* fp32 angle, as transformers computes it */
            x->cos_tab[(size_t)p * (hd / 2) + i] = cosf(a);
            x->sin_tab[(size_t)p * (hd / 2) + i] = sinf(a);
        }
    }
    *out = x;
    return 0;
}

void alrd_ctx_free(alrd_ctx *x) {
    if (!x) return;
#if ALRD_CUDA
    if (x->gpu) alrd_gpu_free(x->gpu);
#endif
    if (x->cache) alrd_kv_cache_free(x->cache);
    float *p[] = {x->x, x->xn, x->q, x->lk, x->lv, x->att, x->gate, x->up,
                  x->kf, x->scores, x->u, x->cos_tab, x->sin_tab};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) free(p[i]);
    free(x->posv);
    free(x->kpos);
    free(x);
}

void alrd_ctx_reset(alrd_ctx *x) {
#if ALRD_CUDA
    if (x->gpu) alrd_gpu_reset(x->gpu, 0);
#endif
    if (x->cache) alrd_kv_cache_reset(x->cache);
    x->pos = 0;
}

int alrd_ctx_pos(const alrd_ctx *x) { return x->pos; }
const alrd_model *alrd_ctx_model(const alrd_ctx *x) { return x->m; }

int alrd_ctx_is_quantized(const alrd_ctx *x) {
    for (int l = 0; l < x->m->cfg.n_layers; l++) {
        int kb = x->opts.k_bits ? x->opts.k_bits : x->m->lowrank.k_bits[l];
        int vb = x->opts.v_bits ? x->opts.v_bits : x->m->lowrank.v_bits[l];
        if (kb < 16 || vb < 16) return 1;
    }
    return 0;
}
size_t alrd_ctx_cache_bytes(const alrd_ctx *x) {
#if ALRD_CUDA
    if (x->gpu) return alrd_gpu_cache_bytes(x->gpu, 0);
#endif
    return alrd_kv_cache_bytes(x->cache);
}

int alrd_ctx_can_score(const alrd_ctx *x) {
    return x->backend == ALRD_BACKEND_GPU && !(x->opts.gpu_flags & ALRD_GPU_STEPWISE);
}

int alrd_ctx_score(alrd_ctx *x, const int32_t *tokens, int T, int first, int decode, double *nll,
                   alrd_error *err) {
#if ALRD_CUDA
    if (x->gpu && alrd_ctx_can_score(x)) {
        x->pos = 0;
        return alrd_gpu_score(x->gpu, tokens, T, first, decode, nll, err);
    }
#endif
    (void)tokens; (void)T; (void)first; (void)decode; (void)nll;
    return alrd_errf(err, "%s: one-pass scoring needs the GPU backend", x->m->path);
}

void alrd_ctx_set_attn_hook(alrd_ctx *x, alrd_attn_input_fn fn, void *user) {
    x->hook = fn;
    x->hook_user = user;
}

static void add_bias(float *y, const float *b, int T, int n) {
    if (!b) return;
    for (int t = 0; t < T; t++) alrd_add(y + (size_t)t * n, b, n);
}

/* Attention of T query rows at positions pos0.. over n cached tokens.
 * ck [n][dk]: pre-RoPE keys (latent when the layer is low-rank), cv [n][dv]:
 * values (latent when low-rank). q is roped. Writes att [T][n_heads*hd]. */
static void attend(alrd_ctx *x, int l, const alrd_layer *L, int T, int pos0, const float *ck, const float *cv,
                   int n) {
    const alrd_model *m = x->m;
    const alrd_config *c = &m->cfg;
    int hd = c->head_dim, kvd = c->n_kv_heads * hd, qd = c->n_heads * hd;
    int gh = m->group_heads * hd, per_kv = c->n_heads / c->n_kv_heads;
    int dk = alrd_model_k_width(m, l), dv = alrd_model_v_width(m, l);

    /* keys: K = RoPE(A . latent + b_k), per head group (docs/design.md 5.5) */
    if (L->k_rank) {
        int r = L->k_rank;
        for (int g = 0; g < m->n_groups; g++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, gh, r, 1.0f, ck + (size_t)g * r, dk,
                        L->kA + (size_t)g * gh * r, r, 0.0f, x->kf + (size_t)g * gh, kvd);
        add_bias(x->kf, L->bk, n, kvd);
    } else {
        memcpy(x->kf, ck, sizeof(float) * (size_t)n * kvd);
    }
    alrd_rope(x->kf, n, c->n_kv_heads, hd, x->kpos, x->cos_tab, x->sin_tab);

    float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < c->n_heads; h++) {
        int kvh = h / per_kv;
        float *S = x->scores;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, n, hd, scale, x->q + (size_t)h * hd, qd,
                    x->kf + (size_t)kvh * hd, kvd, 0.0f, S, n);
        for (int t = 0; t < T; t++) {
            float *row = S + (size_t)t * n;
            int last = pos0 + t; /* causal: keys at positions <= last */
            for (int s = last + 1; s < n; s++) row[s] = -INFINITY;
            alrd_softmax(row, n);
        }
        float *o = x->att + (size_t)h * hd;
        if (L->v_rank) { /* attend in latent space, then lift by this head's rows of A_v */
            int r = L->v_rank, g = kvh / m->group_heads, j = kvh % m->group_heads;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, r, n, 1.0f, S, n, cv + (size_t)g * r, dv,
                        0.0f, x->u, r);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, hd, r, 1.0f, x->u, r,
                        L->vA + ((size_t)g * gh + (size_t)j * hd) * r, r, 0.0f, o, qd);
            if (L->bv)
                for (int t = 0; t < T; t++) alrd_add(o + (size_t)t * qd, L->bv + (size_t)kvh * hd, hd);
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, n, 1.0f, S, n, cv + (size_t)kvh * hd,
                        kvd, 0.0f, o, qd);
        }
    }
}

/* One layer over T rows of x (in place). prefill: positions 0..T-1 attend
 * to each other at full precision, and the cache is filled; otherwise T == 1
 * at position x->pos goes through the cache. */
enum { DECODE = 0, PREFILL = 1, PREFILL_NOCACHE = 2 };

static int layer_forward(alrd_ctx *x, int l, float *h, int T, int prefill, alrd_error *err) {
    const alrd_model *m = x->m;
    const alrd_config *c = &m->cfg;
    alrd_layer view;
    const alrd_layer *L = alrd_model_layer(m, l, &view, err); /* lazy models materialize it here */
    if (!L) return -1;
    int H = c->hidden, hd = c->head_dim, qd = c->n_heads * hd;
    int dk = alrd_model_k_width(m, l), dv = alrd_model_v_width(m, l);
    int pos0 = prefill ? 0 : x->pos;

    alrd_rmsnorm(x->xn, h, L->attn_norm, T, H, c->rms_eps);
    if (x->hook) x->hook(x->hook_user, l, x->xn, T);
    alrd_matmul_wt(x->q, x->xn, L->wq, T, qd, H, 0);
    add_bias(x->q, L->bq, T, qd);
    if (L->k_rank) alrd_matmul_wt(x->lk, x->xn, L->kB, T, dk, H, 0);
    else { alrd_matmul_wt(x->lk, x->xn, L->wk, T, dk, H, 0); add_bias(x->lk, L->bk, T, dk); }
    if (L->v_rank) alrd_matmul_wt(x->lv, x->xn, L->vB, T, dv, H, 0);
    else { alrd_matmul_wt(x->lv, x->xn, L->wv, T, dv, H, 0); add_bias(x->lv, L->bv, T, dv); }
    for (int t = 0; t < T; t++) x->posv[t] = pos0 + t;
    alrd_rope(x->q, T, c->n_heads, hd, x->posv, x->cos_tab, x->sin_tab);

    if (prefill) {
        if (prefill == PREFILL && alrd_kv_cache_prefill(x->cache, l, x->lk, x->lv, T, err)) return -1;
        attend(x, l, L, T, 0, x->lk, x->lv, T);
    } else {
        if (alrd_kv_cache_append(x->cache, l, x->lk, x->lv, err)) return -1;
        int n = alrd_kv_cache_n_tokens(x->cache, l);
        attend(x, l, L, T, pos0, alrd_kv_cache_keys_data(x->cache, l), alrd_kv_cache_values_data(x->cache, l), n);
    }
    alrd_matmul_wt(h, x->att, L->wo, T, H, qd, 1); /* residual add fused into the product */
    add_bias(h, L->bo, T, H);

    alrd_rmsnorm(x->xn, h, L->ffn_norm, T, H, c->rms_eps);
    alrd_matmul_wt(x->gate, x->xn, L->w_gate, T, c->ffn, H, 0);
    alrd_matmul_wt(x->up, x->xn, L->w_up, T, c->ffn, H, 0);
    alrd_silu_mul(x->gate, x->up, (long)T * c->ffn);
    alrd_matmul_wt(h, x->gate, L->w_down, T, H, c->ffn, 1);
    return 0;
}

void alrd_ctx_embed(alrd_ctx *x, const int32_t *tokens, int T, float *h) {
    int H = x->m->cfg.hidden;
    for (int t = 0; t < T; t++)
        memcpy(h + (size_t)t * H, x->m->embed + (size_t)tokens[t] * H, sizeof(float) * H);
}

int alrd_ctx_layer_prefill(alrd_ctx *x, int layer, float *h, int T, alrd_error *err) {
    if (x->backend != ALRD_BACKEND_CPU) return alrd_errf(err, "%s: layer access needs a CPU context", x->m->path);
    if (T > x->max_batch) return alrd_errf(err, "%s: %d tokens exceed the batch of %d", x->m->path, T, x->max_batch);
    return layer_forward(x, layer, h, T, PREFILL_NOCACHE, err);
}

int alrd_ctx_layer_generate(alrd_ctx *x, int layer, float *h, int T, int first, alrd_error *err) {
    if (x->backend != ALRD_BACKEND_CPU) return alrd_errf(err, "%s: layer access needs a CPU context", x->m->path);
    if (T > x->max_ctx || first < 1 || first > T || first > x->max_batch)
        return alrd_errf(err, "%s: %d tokens (prefill %d) do not fit a context of %d (batch %d)", x->m->path, T, first,
                         x->max_ctx, x->max_batch);
    const int H = x->m->cfg.hidden;
    int rc = 0, t = 0;
    alrd_kv_cache_reset(x->cache);
    x->pos = 0;
    if (first > 1) { /* a prefill, as alrd_ctx_forward runs one at position 0 */
        rc = layer_forward(x, layer, h, first, PREFILL, err);
        t = first;
    }
    for (; t < T && !rc; t++) {
        x->pos = t;
        rc = layer_forward(x, layer, h + (size_t)t * H, 1, DECODE, err);
    }
    alrd_kv_cache_reset(x->cache);
    x->pos = 0;
    return rc;
}

void alrd_ctx_logits(alrd_ctx *x, const float *h, int T, float *logits) {
    const alrd_config *c = &x->m->cfg;
    for (int t0 = 0; t0 < T; t0 += x->max_batch) { /* xn holds max_batch rows */
        int n = T - t0 < x->max_batch ? T - t0 : x->max_batch;
        alrd_rmsnorm(x->xn, h + (size_t)t0 * c->hidden, x->m->final_norm, n, c->hidden, c->rms_eps);
        alrd_matmul_wt(logits + (size_t)t0 * c->vocab_size, x->xn, x->m->lm_head, n, c->vocab_size, c->hidden, 0);
    }
}

int alrd_ctx_forward(alrd_ctx *x, const int32_t *tokens, int T, float *logits, int all_logits,
                     alrd_error *err) {
    const alrd_config *c = &x->m->cfg;
    if (T <= 0) return alrd_errf(err, "%s: empty token batch", x->m->path);
    if (x->pos + T > x->max_ctx)
        return alrd_errf(err, "%s: context full (%d + %d tokens > %d)", x->m->path, x->pos, T, x->max_ctx);
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab_size)
            return alrd_errf(err, "%s: token id %d out of range [0, %d)", x->m->path, tokens[t], c->vocab_size);
#if ALRD_CUDA
    if (x->gpu) { /* same contract: a prefill at position 0, else decode steps */
        if (x->pos == 0 && T > 1) {
            if (T > x->max_batch)
                return alrd_errf(err, "%s: prefill of %d tokens exceeds the batch of %d", x->m->path, T, x->max_batch);
            if (alrd_gpu_prefill(x->gpu, 0, tokens, T, logits, all_logits, err)) return -1;
            x->pos = T;
            return 0;
        }
        for (int t = 0; t < T; t++) {
            float *lg = logits && (all_logits || t == T - 1) ? logits + (all_logits ? (size_t)t * c->vocab_size : 0) : NULL;
            if (alrd_gpu_decode(x->gpu, tokens + t, lg, err)) return -1;
            x->pos++;
        }
        return 0;
    }
#endif
    if (x->pos == 0 && T > 1) {
        if (T > x->max_batch)
            return alrd_errf(err, "%s: prefill of %d tokens exceeds the batch of %d", x->m->path, T, x->max_batch);
        alrd_ctx_embed(x, tokens, T, x->x);
        for (int l = 0; l < c->n_layers; l++)
            if (layer_forward(x, l, x->x, T, PREFILL, err)) return -1;
        x->pos = T;
        if (logits) {
            if (all_logits) alrd_ctx_logits(x, x->x, T, logits);
            else alrd_ctx_logits(x, x->x + (size_t)(T - 1) * c->hidden, 1, logits);
        }
        return 0;
    }
    for (int t = 0; t < T; t++) {
        alrd_ctx_embed(x, tokens + t, 1, x->x);
        for (int l = 0; l < c->n_layers; l++)
            if (layer_forward(x, l, x->x, 1, DECODE, err)) return -1;
        x->pos++;
        if (logits && (all_logits || t == T - 1))
            alrd_ctx_logits(x, x->x, 1, logits + (all_logits ? (size_t)t * c->vocab_size : 0));
    }
    return 0;
}
