/* compress: statistics -> whitened SVD -> sensitivities -> ranks -> factors. */
#include "compress.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../formats/alrd_file.h"
#include "../kernels/cpu_ops.h"
#include "../runtime/context.h"
#include "gram.h"
#include "hadamard.h"
#include "ranks.h"
#include "wsvd.h"

static void progress(int on, const char *what, int done, int total) {
    if (on && isatty(2)) {
        fprintf(stderr, "\r%s: %d/%d   ", what, done, total);
        if (done == total) fputc('\n', stderr);
    }
}

static void log_softmax_row(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    float lz = (float)(mx + log(s));
    for (int i = 0; i < n; i++) x[i] -= lz;
}

/* ---- stage 1 ----------------------------------------------------------- */

struct alrd_calib {
    alrd_model *m;
    int progress;
    alrd_gram *grams;      /* [n_layers], NULL without statistics */
    /* probe: the uncompressed model's layer inputs and log-probs */
    alrd_ctx *ctx;
    int n_seq, seq_len;
    int32_t *tokens;       /* [n_seq*seq_len] */
    float *h_in;           /* [n_layers][n_seq*seq_len][hidden] */
    float *base_lp;        /* [n_seq*seq_len][vocab] */
    float *h, *logits;     /* scratch [seq_len][hidden], [seq_len][vocab] */
    double base_ce, seconds;
};

typedef struct {
    alrd_gram *grams;
    int failed;
    alrd_error err;
} stats_state;

static void on_attn_input(void *user, int layer, const float *xn, int T) {
    stats_state *st = user;
    if (!st->failed && alrd_gram_add(&st->grams[layer], xn, T, &st->err)) st->failed = 1;
}

static int collect_grams(alrd_calib *c, const int32_t *tokens, int n_samples, int sample_len, alrd_error *err) {
    alrd_model *m = c->m;
    int L = m->cfg.n_layers, H = m->cfg.hidden;
    c->grams = calloc(L, sizeof *c->grams);
    if (!c->grams) return alrd_errf(err, "calibration: out of memory");
    for (int l = 0; l < L; l++) {
        char name[96];
        snprintf(name, sizeof name, "model.layers.%d attention input", l);
        if (alrd_gram_init(&c->grams[l], H, name, err)) return -1;
    }
    stats_state st = {.grams = c->grams};
    alrd_ctx *ctx;
    if (alrd_ctx_new(&ctx, m, sample_len, sample_len, NULL, err)) return -1;
    alrd_ctx_set_attn_hook(ctx, on_attn_input, &st);
    int rc = 0;
    for (int s = 0; s < n_samples && !rc; s++) {
        alrd_ctx_reset(ctx);
        rc = alrd_ctx_forward(ctx, tokens + (size_t)s * sample_len, sample_len, NULL, 0, err);
        if (!rc && st.failed) {
            *err = st.err;
            rc = -1;
        }
        progress(c->progress, "calibration", s + 1, n_samples);
    }
    alrd_ctx_free(ctx);
    for (int l = 0; l < L && !rc; l++) alrd_gram_finish(&c->grams[l]);
    return rc;
}

static int probe_init(alrd_calib *c, const int32_t *tokens, int n_samples, int sample_len, int probe_tokens,
                      alrd_error *err) {
    alrd_model *m = c->m;
    const alrd_config *cf = &m->cfg;
    c->seq_len = sample_len < probe_tokens ? sample_len : probe_tokens;
    c->n_seq = probe_tokens / c->seq_len;
    if (c->n_seq > n_samples) c->n_seq = n_samples;
    if (c->n_seq < 1) c->n_seq = 1;
    size_t P = (size_t)c->n_seq * c->seq_len;
    c->tokens = malloc(sizeof(int32_t) * P);
    c->h_in = malloc(sizeof(float) * P * cf->hidden * cf->n_layers);
    c->base_lp = malloc(sizeof(float) * P * cf->vocab_size);
    c->h = malloc(sizeof(float) * c->seq_len * cf->hidden);
    c->logits = malloc(sizeof(float) * c->seq_len * cf->vocab_size);
    if (!c->tokens || !c->h_in || !c->base_lp || !c->h || !c->logits)
        return alrd_errf(err, "calibration: out of memory for the probe (%zu tokens)", P);
    for (int s = 0; s < c->n_seq; s++)
        memcpy(c->tokens + (size_t)s * c->seq_len, tokens + (size_t)s * sample_len, sizeof(int32_t) * c->seq_len);
    if (alrd_ctx_new(&c->ctx, m, c->seq_len, c->seq_len, NULL, err)) return -1;
    double ce = 0;
    size_t n = 0;
    for (int s = 0; s < c->n_seq; s++) {
        size_t off = (size_t)s * c->seq_len;
        alrd_ctx_embed(c->ctx, c->tokens + off, c->seq_len, c->h);
        for (int l = 0; l < cf->n_layers; l++) {
            memcpy(c->h_in + ((size_t)l * P + off) * cf->hidden, c->h, sizeof(float) * c->seq_len * cf->hidden);
            if (alrd_ctx_layer_prefill(c->ctx, l, c->h, c->seq_len, err)) return -1;
        }
        float *lp = c->base_lp + off * cf->vocab_size;
        alrd_ctx_logits(c->ctx, c->h, c->seq_len, lp);
        for (int t = 0; t < c->seq_len; t++) {
            log_softmax_row(lp + (size_t)t * cf->vocab_size, cf->vocab_size);
            if (t + 1 < c->seq_len) { ce -= lp[(size_t)t * cf->vocab_size + c->tokens[off + t + 1]]; n++; }
        }
    }
    c->base_ce = ce / n;
    return 0;
}

/* Runs layers [from, L) of the probe sequences from the saved inputs;
 * mean KL(base || model) over all positions and next-token cross-entropy. */
static int probe_run(alrd_calib *c, int from, double *kl_out, double *ce_out, alrd_error *err) {
    const alrd_config *cf = &c->m->cfg;
    int V = cf->vocab_size;
    size_t P = (size_t)c->n_seq * c->seq_len;
    double kl = 0, ce = 0;
    size_t n = 0, nce = 0;
    for (int s = 0; s < c->n_seq; s++) {
        size_t off = (size_t)s * c->seq_len;
        memcpy(c->h, c->h_in + ((size_t)from * P + off) * cf->hidden, sizeof(float) * c->seq_len * cf->hidden);
        for (int l = from; l < cf->n_layers; l++)
            if (alrd_ctx_layer_prefill(c->ctx, l, c->h, c->seq_len, err)) return -1;
        alrd_ctx_logits(c->ctx, c->h, c->seq_len, c->logits);
        for (int t = 0; t < c->seq_len; t++) {
            float *lp = c->logits + (size_t)t * V;
            const float *bp = c->base_lp + (off + t) * V;
            log_softmax_row(lp, V);
            double k = 0;
            for (int i = 0; i < V; i++) k += exp((double)bp[i]) * ((double)bp[i] - lp[i]);
            kl += k > 0 ? k : 0;
            n++;
            if (t + 1 < c->seq_len) { ce -= lp[c->tokens[off + t + 1]]; nce++; }
        }
    }
    *kl_out = kl / n;
    if (ce_out) *ce_out = ce / nce;
    return 0;
}

int alrd_calib_new(alrd_calib **out, alrd_model *m, const int32_t *tokens, int n_samples, int sample_len,
                   int probe_tokens, int need_grams, int progress_on, alrd_error *err) {
    *out = NULL;
    if (m->has_lowrank) return alrd_errf(err, "%s: already compressed (a .alrd file)", m->path);
    if (n_samples < 1 || sample_len < 2) return alrd_errf(err, "calibration: no calibration samples");
    if (probe_tokens < 2) return alrd_errf(err, "calibration: --probe-tokens must be at least 2");
    alrd_calib *c = calloc(1, sizeof *c);
    if (!c) return alrd_errf(err, "calibration: out of memory");
    c->m = m;
    c->progress = progress_on;
    double t0 = alrd_now();
    if ((need_grams && collect_grams(c, tokens, n_samples, sample_len, err)) ||
        probe_init(c, tokens, n_samples, sample_len, probe_tokens, err)) {
        alrd_calib_free(c);
        return -1;
    }
    c->seconds = alrd_now() - t0;
    *out = c;
    return 0;
}

void alrd_calib_free(alrd_calib *c) {
    if (!c) return;
    if (c->grams)
        for (int l = 0; l < c->m->cfg.n_layers; l++) alrd_gram_free(&c->grams[l]);
    free(c->grams);
    alrd_ctx_free(c->ctx);
    free(c->tokens);
    free(c->h_in);
    free(c->base_lp);
    free(c->h);
    free(c->logits);
    free(c);
}

void alrd_calib_dampen(alrd_calib *c, double damp) {
    if (!c->grams || damp <= 0) return;
    for (int l = 0; l < c->m->cfg.n_layers; l++) {
        alrd_gram *g = &c->grams[l];
        double tr = 0;
        for (int i = 0; i < g->d; i++) tr += g->c[(size_t)i * g->d + i];
        double add = damp * tr / g->d;
        for (int i = 0; i < g->d; i++) g->c[(size_t)i * g->d + i] += add;
    }
}

double alrd_calib_seconds(const alrd_calib *c) { return c->seconds; }
double alrd_calib_base_ce(const alrd_calib *c) { return c->base_ce; }
int alrd_calib_probe_tokens(const alrd_calib *c) { return c->n_seq * c->seq_len; }
alrd_model *alrd_calib_model(const alrd_calib *c) { return c->m; }

const float *alrd_calib_probe_inputs(const alrd_calib *c, int layer, int *n_rows) {
    size_t P = (size_t)c->n_seq * c->seq_len;
    *n_rows = (int)P;
    return c->h_in + (size_t)layer * P * c->m->cfg.hidden;
}

/* ---- stage 2 ----------------------------------------------------------- */

typedef struct {
    alrd_wsvd *g;          /* [n_groups] */
    double *tail;          /* [full+1]: sum over groups of tail(r) */
    double total;
    double sensitivity, probe_kl;
} module_svd;

struct alrd_decomp {
    alrd_calib *c;
    int whiten, group_heads, n_groups, gh;
    int probe_rank;        /* 0 until sensitivities are measured */
    module_svd *ms;        /* [2*n_layers] */
    float *W, *A, *B, *saved; /* scratch */
};

int alrd_decomp_full_rank(const alrd_decomp *d) { return d->gh; }
int alrd_decomp_n_groups(const alrd_decomp *d) { return d->n_groups; }
int alrd_decomp_group_heads(const alrd_decomp *d) { return d->group_heads; }
const double *alrd_decomp_tail(const alrd_decomp *d, int m) { return d->ms[m].tail; }
double alrd_decomp_total(const alrd_decomp *d, int m) { return d->ms[m].total; }
double alrd_decomp_sensitivity(const alrd_decomp *d, int m) { return d->ms[m].sensitivity; }
double alrd_decomp_probe_kl(const alrd_decomp *d, int m) { return d->ms[m].probe_kl; }
int alrd_decomp_probe_rank(const alrd_decomp *d) { return d->probe_rank; }

void alrd_decomp_free(alrd_decomp *d) {
    if (!d) return;
    if (d->ms) {
        for (int i = 0; i < 2 * d->c->m->cfg.n_layers; i++) {
            if (d->ms[i].g)
                for (int g = 0; g < d->n_groups; g++) alrd_wsvd_free(&d->ms[i].g[g]);
            free(d->ms[i].g);
            free(d->ms[i].tail);
        }
    }
    free(d->ms);
    free(d->W); free(d->A); free(d->B); free(d->saved);
    free(d);
}

int alrd_decomp_new(alrd_decomp **out, alrd_calib *c, int whiten, int group_heads, alrd_error *err) {
    *out = NULL;
    const alrd_model *m = c->m;
    const alrd_config *cf = &m->cfg;
    int L = cf->n_layers, H = cf->hidden, kvd = cf->n_kv_heads * cf->head_dim;
    if (!group_heads) group_heads = cf->n_kv_heads;
    if (group_heads <= 0 || cf->n_kv_heads % group_heads)
        return alrd_errf(err, "compress: --group-heads %d does not divide the %d KV heads", group_heads, cf->n_kv_heads);
    if (whiten && !c->grams) return alrd_errf(err, "compress: whitening needs calibration statistics");
    alrd_decomp *d = calloc(1, sizeof *d);
    if (!d) return alrd_errf(err, "compress: out of memory");
    d->c = c;
    d->whiten = whiten;
    d->group_heads = group_heads;
    d->n_groups = cf->n_kv_heads / group_heads;
    d->gh = group_heads * cf->head_dim;
    d->ms = calloc(2 * L, sizeof *d->ms);
    d->W = malloc(sizeof(float) * kvd * H);
    d->saved = malloc(sizeof(float) * kvd * H);
    d->A = malloc(sizeof(float) * d->gh * d->gh);
    d->B = malloc(sizeof(float) * d->gh * H);
    if (!d->ms || !d->W || !d->saved || !d->A || !d->B) {
        alrd_decomp_free(d);
        return alrd_errf(err, "compress: out of memory");
    }
    for (int l = 0; l < L; l++) {
        alrd_whitening wh;
        memset(&wh, 0, sizeof wh);
        char name[96];
        snprintf(name, sizeof name, "model.layers.%d attention input", l);
        if (whiten && alrd_whitening_compute(&wh, c->grams[l].c, H, name, err)) { alrd_decomp_free(d); return -1; }
        for (int v = 0; v < 2; v++) {
            module_svd *md = &d->ms[2 * l + v];
            const float *Wf = v ? m->layers[l].wv : m->layers[l].wk;
            md->g = calloc(d->n_groups, sizeof *md->g);
            md->tail = calloc(d->gh + 1, sizeof(double));
            int rc = !md->g || !md->tail ? alrd_errf(err, "compress: out of memory") : 0;
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s_proj", l, v ? "v" : "k");
            for (int g = 0; g < d->n_groups && !rc; g++) {
                rc = alrd_wsvd_compute_with(&md->g[g], whiten ? &wh : NULL, Wf + (size_t)g * d->gh * H, d->gh, H,
                                            name, err);
                for (int k = 0; k <= d->gh && !rc; k++) md->tail[k] += alrd_wsvd_tail(&md->g[g], k);
                if (!rc) md->total += md->g[g].total;
            }
            if (rc) { alrd_whitening_free(&wh); alrd_decomp_free(d); return -1; }
        }
        alrd_whitening_free(&wh);
        progress(c->progress, "svd", l + 1, L);
    }
    *out = d;
    return 0;
}

/* W' = A_r B_r for every group of module m, as a full [n_kv*hd][hidden] weight in d->W. */
static int lowrank_weight(alrd_decomp *d, int m, int r, alrd_error *err) {
    int H = d->c->m->cfg.hidden;
    for (int g = 0; g < d->n_groups; g++) {
        float *Wg = d->W + (size_t)g * d->gh * H;
        if (r == 0) { /* not decomposed: the original rows */
            const alrd_layer *L = &d->c->m->layers[m / 2];
            memcpy(Wg, (m % 2 ? L->wv : L->wk) + (size_t)g * d->gh * H, sizeof(float) * d->gh * H);
            continue;
        }
        if (alrd_wsvd_factors(&d->ms[m].g[g], r, d->A, d->B, err)) return -1;
        alrd_matmul(Wg, d->A, d->B, d->gh, H, r);
    }
    return 0;
}

static float *module_weight(alrd_decomp *d, int m) {
    alrd_layer *L = &d->c->m->layers[m / 2];
    return m % 2 ? L->wv : L->wk;
}

int alrd_decomp_sensitivities(alrd_decomp *d, int probe_rank, alrd_error *err) {
    const alrd_config *cf = &d->c->m->cfg;
    size_t wn = (size_t)cf->n_kv_heads * cf->head_dim * cf->hidden;
    if (probe_rank < 1 || probe_rank >= d->gh)
        return alrd_errf(err, "compress: probe rank %d outside [1, %d)", probe_rank, d->gh);
    for (int i = 0; i < 2 * cf->n_layers; i++) {
        float *Wl = module_weight(d, i);
        if (lowrank_weight(d, i, probe_rank, err)) return -1;
        memcpy(d->saved, Wl, sizeof(float) * wn);
        memcpy(Wl, d->W, sizeof(float) * wn);
        double kl;
        int rc = probe_run(d->c, i / 2, &kl, NULL, err);
        memcpy(Wl, d->saved, sizeof(float) * wn);
        if (rc) return -1;
        double tail = d->ms[i].tail[probe_rank];
        d->ms[i].probe_kl = kl;
        d->ms[i].sensitivity = tail > 0 ? kl / tail : 0;
        progress(d->c->progress, "sensitivity", i + 1, 2 * cf->n_layers);
    }
    d->probe_rank = probe_rank;
    return 0;
}

int alrd_decomp_ranks(alrd_decomp *d, double ratio, int uniform, int *k_rank, int *v_rank, alrd_error *err) {
    int L = d->c->m->cfg.n_layers;
    if (!uniform && !d->probe_rank) return alrd_errf(err, "compress: rank search needs sensitivities");
    alrd_rank_module *rm = calloc(2 * L, sizeof *rm);
    int *ranks = calloc(2 * L, sizeof(int));
    if (!rm || !ranks) { free(rm); free(ranks); return alrd_errf(err, "compress: out of memory"); }
    for (int i = 0; i < 2 * L; i++) {
        rm[i].tail = d->ms[i].tail;
        rm[i].max_rank = d->gh;
        rm[i].weight = uniform ? 1.0 : d->ms[i].sensitivity;
    }
    int rc = uniform ? alrd_ranks_uniform(rm, 2 * L, ratio, 8, ranks, err)
                     : alrd_ranks_allocate(rm, 2 * L, ratio, 8, ranks, err);
    for (int l = 0; l < L && !rc; l++) {
        k_rank[l] = ranks[2 * l];
        v_rank[l] = ranks[2 * l + 1];
    }
    free(rm);
    free(ranks);
    return rc;
}

int alrd_decomp_factors(const alrd_decomp *d, const int *k_rank, const int *v_rank, int hadamard, uint64_t seed,
                        float **kA, float **kB, float **vA, float **vB, alrd_error *err) {
    const alrd_config *cf = &d->c->m->cfg;
    int H = cf->hidden, gh = d->gh;
    double *Hm = hadamard ? malloc(sizeof(double) * gh * gh) : NULL;
    if (hadamard && !Hm) return alrd_errf(err, "compress: out of memory");
    int rc = 0;
    for (int i = 0; i < 2 * cf->n_layers && !rc; i++) {
        int l = i / 2, v = i % 2, rk = v ? v_rank[l] : k_rank[l];
        float **pA = v ? &vA[l] : &kA[l], **pB = v ? &vB[l] : &kB[l];
        *pA = *pB = NULL;
        if (rk == 0) continue;
        if (rk < 0 || rk > gh) { rc = alrd_errf(err, "compress: layer %d: rank %d outside [0, %d]", l, rk, gh); break; }
        *pA = malloc(sizeof(float) * d->n_groups * gh * rk);
        *pB = malloc(sizeof(float) * d->n_groups * rk * H);
        if (!*pA || !*pB) { rc = alrd_errf(err, "compress: out of memory"); break; }
        if (hadamard) /* one rotation per module; seeded per layer and side so files are reproducible */
            rc = alrd_hadamard_matrix(rk, seed + 2 * (uint64_t)l + v, Hm, NULL, err);
        for (int g = 0; g < d->n_groups && !rc; g++) {
            float *A = *pA + (size_t)g * gh * rk, *B = *pB + (size_t)g * rk * H;
            rc = alrd_wsvd_factors(&d->ms[i].g[g], rk, A, B, err);
            if (!rc && hadamard) rc = alrd_hadamard_fold(Hm, rk, A, gh, B, H, err);
        }
    }
    free(Hm);
    return rc;
}

int alrd_decomp_measure(alrd_decomp *d, const int *k_rank, const int *v_rank, double *kl, double *ce,
                        alrd_error *err) {
    const alrd_config *cf = &d->c->m->cfg;
    int L = cf->n_layers;
    size_t wn = (size_t)cf->n_kv_heads * cf->head_dim * cf->hidden;
    float **full = calloc(2 * L, sizeof(float *));
    if (!full) return alrd_errf(err, "compress: out of memory");
    int rc = 0;
    for (int i = 0; i < 2 * L && !rc; i++) {
        int rk = i % 2 ? v_rank[i / 2] : k_rank[i / 2];
        if (rk == 0) continue;
        if (lowrank_weight(d, i, rk, err)) { rc = -1; break; }
        if (!(full[i] = malloc(sizeof(float) * wn))) { rc = alrd_errf(err, "compress: out of memory"); break; }
        memcpy(full[i], module_weight(d, i), sizeof(float) * wn);
        memcpy(module_weight(d, i), d->W, sizeof(float) * wn);
    }
    if (!rc) rc = probe_run(d->c, 0, kl, ce, err);
    for (int i = 0; i < 2 * L; i++) { /* restore the model */
        if (!full[i]) continue;
        memcpy(module_weight(d, i), full[i], sizeof(float) * wn);
        free(full[i]);
    }
    free(full);
    return rc;
}

/* ---- one configuration ------------------------------------------------- */

void alrd_compress_opts_default(alrd_compress_opts *o) {
    memset(o, 0, sizeof *o);
    o->whiten = 1;
    o->rank_ratio = 0.5;
    o->probe_tokens = 256;
    o->seed = 0x5eed;
}

int alrd_compress_run(alrd_model *m, const int32_t *tokens, int n_samples, int sample_len,
                      const alrd_compress_opts *o, alrd_compress_result *r, alrd_error *err) {
    memset(r, 0, sizeof *r);
    const alrd_config *cf = &m->cfg;
    const int L = cf->n_layers;
    double t0 = alrd_now();
    alrd_calib *c = NULL;
    alrd_decomp *d = NULL;
    int rc = -1, search = !o->k_rank && !o->uniform && o->rank_ratio < 1; /* ratio 1 keeps every rank full */
    if (alrd_calib_new(&c, m, tokens, n_samples, sample_len, o->probe_tokens, o->whiten, o->progress, err)) goto done;
    r->t_stats = alrd_now() - t0;
    alrd_calib_dampen(c, o->damp);
    double t1 = alrd_now();
    if (alrd_decomp_new(&d, c, o->whiten, o->group_heads, err)) goto done;
    r->t_svd = alrd_now() - t1;
    int gh = alrd_decomp_full_rank(d);
    if (alrd_compress_result_alloc(r, d, (size_t)n_samples * sample_len, err)) goto done;
    double t2 = alrd_now();
    if (search) { /* probe at the rank the budget suggests, on the 8-grid */
        int pr = ((int)(o->rank_ratio * gh + 4) / 8) * 8;
        if (pr < 8) pr = 8;
        if (pr >= gh) pr = (gh / 16) * 8 > 0 ? (gh / 16) * 8 : 8; /* ratio 1: probe at half rank */
        if (alrd_decomp_sensitivities(d, pr, err)) goto done;
    }
    r->t_sens = alrd_now() - t2;
    if (o->k_rank) {
        for (int l = 0; l < L; l++) {
            r->k_rank[l] = o->k_rank[l];
            r->v_rank[l] = o->v_rank[l];
            if (r->k_rank[l] < 0 || r->k_rank[l] > gh || r->v_rank[l] < 0 || r->v_rank[l] > gh) {
                alrd_errf(err, "compress: layer %d: rank outside [0, %d] (0: not decomposed)", l, gh);
                goto done;
            }
        }
    } else if (alrd_decomp_ranks(d, o->rank_ratio, o->uniform || !search, r->k_rank, r->v_rank, err)) {
        goto done;
    }
    if (alrd_decomp_factors(d, r->k_rank, r->v_rank, o->hadamard, o->seed, r->kA, r->kB, r->vA, r->vB, err)) goto done;
    alrd_compress_report_modules(r, d, NULL);
    if (alrd_decomp_measure(d, r->k_rank, r->v_rank, &r->measured_kl, &r->compressed_ce, err)) goto done;
    r->base_ce = alrd_calib_base_ce(c);
    r->t_total = alrd_now() - t0;
    rc = 0;
done:
    alrd_decomp_free(d);
    alrd_calib_free(c);
    if (rc) alrd_compress_result_free(r);
    return rc;
}

int alrd_compress_result_alloc(alrd_compress_result *r, const alrd_decomp *d, size_t calib_tokens,
                               alrd_error *err) {
    const alrd_config *cf = &d->c->m->cfg;
    const int L = cf->n_layers;
    r->n_layers = L;
    r->group_heads = d->group_heads;
    r->n_groups = d->n_groups;
    r->head_dim = cf->head_dim;
    r->hidden = cf->hidden;
    r->calib_tokens = calib_tokens;
    r->n_modules = 2 * L;
    r->modules = calloc(2 * L, sizeof *r->modules);
    r->k_rank = calloc(L, sizeof(int));
    r->v_rank = calloc(L, sizeof(int));
    r->kA = calloc(L, sizeof(float *)); r->kB = calloc(L, sizeof(float *));
    r->vA = calloc(L, sizeof(float *)); r->vB = calloc(L, sizeof(float *));
    if (!r->modules || !r->k_rank || !r->v_rank || !r->kA || !r->kB || !r->vA || !r->vB)
        return alrd_errf(err, "compress: out of memory");
    return 0;
}

void alrd_compress_report_modules(alrd_compress_result *r, const alrd_decomp *d, const double *extra) {
    r->predicted_kl = 0;
    for (int i = 0; i < r->n_modules; i++) {
        alrd_module_report *mr = &r->modules[i];
        const double *tail = d->ms[i].tail;
        double total = d->ms[i].total;
        mr->layer = i / 2;
        mr->is_v = i % 2;
        mr->full = d->gh;
        snprintf(mr->name, sizeof mr->name, "model.layers.%d.self_attn.%s_proj", mr->layer, mr->is_v ? "v" : "k");
        mr->rank = mr->is_v ? r->v_rank[mr->layer] : r->k_rank[mr->layer];
        int kept = mr->rank ? mr->rank : d->gh;
        mr->kept_energy = total > 0 ? 1 - tail[kept] / total : 1;
        mr->rel_error = total > 0 ? sqrt(tail[kept] / total) : 0;
        mr->sensitivity = d->ms[i].sensitivity;
        mr->probe_kl = d->ms[i].probe_kl;
        mr->probe_rank = d->probe_rank;
        mr->predicted = mr->sensitivity * (tail[kept] + (extra ? extra[i] : 0));
        r->predicted_kl += mr->predicted;
    }
}

void alrd_compress_result_free(alrd_compress_result *r) {
    for (int l = 0; l < r->n_layers; l++) {
        if (r->kA) free(r->kA[l]);
        if (r->kB) free(r->kB[l]);
        if (r->vA) free(r->vA[l]);
        if (r->vB) free(r->vB[l]);
    }
    free(r->kA); free(r->kB); free(r->vA); free(r->vB);
    free(r->k_rank); free(r->v_rank);
    free(r->modules);
    memset(r, 0, sizeof *r);
}

/* ---- added for calib/qerr and alrd-sweep ------------------------------- */

size_t alrd_calib_rows(const alrd_calib *c) { return c->grams ? (size_t)c->grams[0].n_rows : 0; }

const int32_t *alrd_calib_probe_ids(const alrd_calib *c, int *n_seq, int *seq_len) {
    *n_seq = c->n_seq;
    *seq_len = c->seq_len;
    return c->tokens;
}

alrd_calib *alrd_decomp_calib(const alrd_decomp *d) { return d->c; }

int32_t *alrd_calib_pick_samples(const int32_t *ids, size_t n, int *n_samples, int len) {
    if (len < 1 || (size_t)len > n || *n_samples < 1) return NULL;
    size_t fit = n / len;
    if ((size_t)*n_samples > fit) *n_samples = (int)fit;
    int32_t *out = malloc(sizeof(int32_t) * (size_t)*n_samples * len);
    if (!out) return NULL;
    size_t stride = *n_samples > 1 ? (n - len) / (*n_samples - 1) : 0;
    for (int s = 0; s < *n_samples; s++) memcpy(out + (size_t)s * len, ids + s * stride, sizeof(int32_t) * len);
    return out;
}
int alrd_decomp_whitened(const alrd_decomp *d) { return d->whiten; }

/* ---- packing ----------------------------------------------------------- */

static size_t dtype_size(alrd_dtype t) { return t == ALRD_F32 ? 4 : 2; }

static int packed_reserve(alrd_packed *p, int n, alrd_error *err) {
    p->tensors = calloc(n > 0 ? n : 1, sizeof *p->tensors);
    p->bufs = calloc(n > 0 ? n : 1, sizeof *p->bufs);
    if (!p->tensors || !p->bufs) return alrd_errf(err, "pack: out of memory");
    return 0;
}

void alrd_compress_packed_free(alrd_packed *p) {
    if (!p) return;
    for (int i = 0; i < p->n_bufs; i++) free(p->bufs[i]);
    free(p->bufs);
    free(p->tensors);
    memset(p, 0, sizeof *p);
}

int alrd_compress_pack_source(alrd_packed *out, const alrd_source *src, alrd_dtype wdt, alrd_error *err) {
    memset(out, 0, sizeof *out);
    if (wdt != ALRD_F16 && wdt != ALRD_BF16 && wdt != ALRD_F32)
        return alrd_errf(err, "pack: weights dtype must be f16, bf16 or f32");
    if (packed_reserve(out, src->n_tensors, err)) return -1;
    for (int i = 0; i < src->n_tensors; i++) {
        const alrd_tensor *t = &src->tensors[i];
        size_t n = (size_t)alrd_tensor_numel(t), nb;
        alrd_dtype dt = t->n_dims == 1 ? ALRD_F32 : wdt; /* norms and biases stay f32 */
        if (alrd_mul_ok(n, 4, &nb)) { alrd_compress_packed_free(out); return alrd_errf(err, "%s: %s: size overflow", src->path, t->name); }
        float *f = malloc(nb ? nb : 1);
        void *b = malloc(n * dtype_size(dt) + 1);
        int rc = !f || !b ? alrd_errf(err, "pack: %s: out of memory", t->name) : 0;
        if (!rc) rc = alrd_tensor_to_f32(t, f, err);
        if (!rc) rc = alrd_file_convert_f32(f, n, dt, b, err);
        free(f);
        if (rc) { free(b); alrd_compress_packed_free(out); return -1; }
        out->tensors[out->n] = *t;
        out->tensors[out->n].dtype = dt;
        out->tensors[out->n].data = b;
        out->tensors[out->n].nbytes = n * dtype_size(dt);
        out->tensors[out->n].unpermute_heads = 0;
        out->bufs[out->n_bufs++] = b;
        out->n++;
    }
    return 0;
}

int alrd_compress_pack_factors(alrd_packed *out, const alrd_packed *base, int n_layers, int n_groups, int gh,
                               int hidden, const int *k_rank, const int *v_rank, float *const *kA,
                               float *const *kB, float *const *vA, float *const *vB, alrd_dtype wdt,
                               alrd_error *err) {
    memset(out, 0, sizeof *out);
    if (wdt != ALRD_F16 && wdt != ALRD_BF16 && wdt != ALRD_F32)
        return alrd_errf(err, "pack: weights dtype must be f16, bf16 or f32");
    if (packed_reserve(out, base->n + 4 * n_layers, err)) return -1;
    for (int i = 0; i < base->n; i++) {
        const alrd_tensor *t = &base->tensors[i];
        int layer;
        char proj;
        if (sscanf(t->name, "model.layers.%d.self_attn.%c_proj.weight", &layer, &proj) == 2 && layer >= 0 &&
            layer < n_layers && (proj == 'k' || proj == 'v') && (proj == 'k' ? k_rank : v_rank)[layer] > 0)
            continue; /* replaced by its factors */
        out->tensors[out->n++] = *t;
    }
    for (int l = 0; l < n_layers; l++)
        for (int v = 0; v < 2; v++)
            for (int ab = 0; ab < 2; ab++) {
                int rk = v ? v_rank[l] : k_rank[l];
                if (rk == 0) continue;
                const float *f = ab ? (v ? vB[l] : kB[l]) : (v ? vA[l] : kA[l]);
                alrd_tensor *t = &out->tensors[out->n];
                memset(t, 0, sizeof *t);
                snprintf(t->name, sizeof t->name, "model.layers.%d.self_attn.%s_proj.%s", l, v ? "v" : "k",
                         ab ? "B" : "A");
                t->n_dims = 3;
                t->shape[0] = n_groups;
                t->shape[1] = ab ? rk : gh;
                t->shape[2] = ab ? hidden : rk;
                size_t n = (size_t)n_groups * t->shape[1] * t->shape[2];
                void *b = malloc(n * dtype_size(wdt));
                if (!f || !b || alrd_file_convert_f32(f, n, wdt, b, err)) {
                    if (!f || !b) alrd_errf(err, "pack: %s: %s", t->name, f ? "out of memory" : "missing factor");
                    free(b);
                    alrd_compress_packed_free(out);
                    return -1;
                }
                t->dtype = wdt;
                t->data = b;
                t->nbytes = n * dtype_size(wdt);
                out->bufs[out->n_bufs++] = b;
                out->n++;
            }
    return 0;
}
