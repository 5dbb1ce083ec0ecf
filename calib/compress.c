/* compress: statistics -> whitened SVD -> sensitivities -> ranks -> factors. */
#include "compress.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kernels/cpu_ops.h"
#include "../runtime/context.h"
#include "gram.h"
#include "ranks.h"
#include "wsvd.h"

void alrd_compress_opts_default(alrd_compress_opts *o) {
    memset(o, 0, sizeof *o);
    o->whiten = 1;
    o->rank_ratio = 0.5;
    o->probe_tokens = 512;
}

typedef struct {
    alrd_gram *grams;
    int failed;
    alrd_error err;
} stats_state;

static void on_attn_input(void *user, int layer, const float *xn, int T) {
    stats_state *st = user;
    if (!st->failed && alrd_gram_add(&st->grams[layer], xn, T, &st->err)) st->failed = 1;
}

static void progress(const alrd_compress_opts *o, const char *what, int done, int total) {
    if (o->progress && isatty(2)) {
        fprintf(stderr, "\r%s: %d/%d   ", what, done, total);
        if (done == total) fputc('\n', stderr);
    }
}

/* One module's decompositions (one per head group) and its summed tail. */
typedef struct {
    alrd_wsvd *g;          /* [n_groups] */
    double *tail;          /* [full+1]: sum over groups of tail(r) */
    double total;
} module_svd;

/* W' = A_r B_r for every group, as a full [n_kv*hd][hidden] weight. */
static int lowrank_weight(const module_svd *ms, int n_groups, int gh, int H, int r, float *W, float *A,
                          float *B, alrd_error *err) {
    for (int g = 0; g < n_groups; g++) {
        if (alrd_wsvd_factors(&ms->g[g], r, A, B, err)) return -1;
        float *Wg = W + (size_t)g * gh * H;
        if (r == 0) memset(Wg, 0, sizeof(float) * gh * H);
        else alrd_matmul(Wg, A, B, gh, H, r);
    }
    return 0;
}

/* Probe: runs layers [from, L) on the saved layer inputs of the probe
 * sequences and returns mean KL(base || model) and cross-entropy. */
typedef struct {
    alrd_ctx *ctx;
    int n_seq, seq_len, n_layers, hidden, vocab;
    float *h_in;           /* [n_layers][n_seq*seq_len][hidden] layer inputs of the base model */
    float *base_lp;        /* [n_seq*seq_len][vocab] base log-probs */
    float *h, *logits;     /* scratch [seq_len][hidden], [seq_len][vocab] */
    const int32_t *tokens; /* [n_seq*seq_len] */
} probe_state;

static void log_softmax_row(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    float lz = (float)(mx + log(s));
    for (int i = 0; i < n; i++) x[i] -= lz;
}

static int probe_run(probe_state *p, int from, double *kl_out, double *ce_out, alrd_error *err) {
    double kl = 0, ce = 0;
    size_t n = 0;
    for (int s = 0; s < p->n_seq; s++) {
        size_t off = (size_t)s * p->seq_len;
        memcpy(p->h, p->h_in + ((size_t)from * p->n_seq * p->seq_len + off) * p->hidden,
               sizeof(float) * p->seq_len * p->hidden);
        for (int l = from; l < p->n_layers; l++)
            if (alrd_ctx_layer_prefill(p->ctx, l, p->h, p->seq_len, err)) return -1;
        alrd_ctx_logits(p->ctx, p->h, p->seq_len, p->logits);
        for (int t = 0; t < p->seq_len; t++) {
            float *lp = p->logits + (size_t)t * p->vocab;
            const float *bp = p->base_lp + (off + t) * p->vocab;
            log_softmax_row(lp, p->vocab);
            double k = 0;
            for (int i = 0; i < p->vocab; i++) k += exp((double)bp[i]) * ((double)bp[i] - lp[i]);
            kl += k > 0 ? k : 0;
            if (t + 1 < p->seq_len) ce -= lp[p->tokens[off + t + 1]];
            n++;
        }
    }
    *kl_out = kl / n;
    if (ce_out) *ce_out = ce / (n - p->n_seq);
    return 0;
}

static int probe_init(probe_state *p, alrd_model *m, const int32_t *tokens, int n_samples, int sample_len,
                      int probe_tokens, alrd_error *err) {
    memset(p, 0, sizeof *p);
    const alrd_config *c = &m->cfg;
    p->seq_len = sample_len < probe_tokens ? sample_len : probe_tokens;
    p->n_seq = probe_tokens / p->seq_len;
    if (p->n_seq > n_samples) p->n_seq = n_samples;
    if (p->n_seq < 1) p->n_seq = 1;
    p->n_layers = c->n_layers;
    p->hidden = c->hidden;
    p->vocab = c->vocab_size;
    size_t P = (size_t)p->n_seq * p->seq_len;
    p->tokens = tokens; /* first n_seq sequences, sequence s at s*sample_len */
    int32_t *tk = malloc(sizeof(int32_t) * P);
    p->h_in = malloc(sizeof(float) * P * c->hidden * c->n_layers);
    p->base_lp = malloc(sizeof(float) * P * c->vocab_size);
    p->h = malloc(sizeof(float) * p->seq_len * c->hidden);
    p->logits = malloc(sizeof(float) * p->seq_len * c->vocab_size);
    if (!tk || !p->h_in || !p->base_lp || !p->h || !p->logits) {
        free(tk);
        return alrd_errf(err, "compress: out of memory for the sensitivity probe (%zu tokens)", P);
    }
    for (int s = 0; s < p->n_seq; s++)
        memcpy(tk + (size_t)s * p->seq_len, tokens + (size_t)s * sample_len, sizeof(int32_t) * p->seq_len);
    p->tokens = tk;
    if (alrd_ctx_new(&p->ctx, m, p->seq_len, p->seq_len, NULL, err)) return -1;
    for (int s = 0; s < p->n_seq; s++) {
        size_t off = (size_t)s * p->seq_len;
        alrd_ctx_embed(p->ctx, tk + off, p->seq_len, p->h);
        for (int l = 0; l < c->n_layers; l++) {
            memcpy(p->h_in + ((size_t)l * P + off) * c->hidden, p->h, sizeof(float) * p->seq_len * c->hidden);
            if (alrd_ctx_layer_prefill(p->ctx, l, p->h, p->seq_len, err)) return -1;
        }
        alrd_ctx_logits(p->ctx, p->h, p->seq_len, p->base_lp + off * c->vocab_size);
        for (int t = 0; t < p->seq_len; t++) log_softmax_row(p->base_lp + (off + t) * c->vocab_size, c->vocab_size);
    }
    return 0;
}

static void probe_free(probe_state *p) {
    alrd_ctx_free(p->ctx);
    free((void *)p->tokens);
    free(p->h_in);
    free(p->base_lp);
    free(p->h);
    free(p->logits);
}

int alrd_compress_run(alrd_model *m, const int32_t *tokens, int n_samples, int sample_len,
                      const alrd_compress_opts *o, alrd_compress_result *r, alrd_error *err) {
    memset(r, 0, sizeof *r);
    const alrd_config *c = &m->cfg;
    if (m->has_lowrank) return alrd_errf(err, "%s: already compressed (a .alrd file)", m->path);
    const int L = c->n_layers, H = c->hidden, hd = c->head_dim;
    int gheads = o->group_heads ? o->group_heads : c->n_kv_heads;
    if (gheads <= 0 || c->n_kv_heads % gheads)
        return alrd_errf(err, "compress: --group-heads %d does not divide the %d KV heads", gheads, c->n_kv_heads);
    const int n_groups = c->n_kv_heads / gheads, gh = gheads * hd, kvd = c->n_kv_heads * hd;
    if (n_samples < 1 || sample_len < 2) return alrd_errf(err, "compress: no calibration samples");
    double t0 = alrd_now();
    int rc = -1;
    r->n_layers = L; r->group_heads = gheads; r->n_groups = n_groups; r->head_dim = hd; r->hidden = H;
    r->calib_tokens = (size_t)n_samples * sample_len;

    /* 1. statistics: Gram of the k/v input of every layer (DESIGN 5.1) */
    alrd_gram *grams = calloc(L, sizeof *grams);
    module_svd *ms = calloc(2 * L, sizeof *ms);
    alrd_ctx *ctx = NULL;
    probe_state probe;
    memset(&probe, 0, sizeof probe);
    float *W = malloc(sizeof(float) * kvd * H), *A = malloc(sizeof(float) * gh * gh),
          *B = malloc(sizeof(float) * gh * H), *saved = malloc(sizeof(float) * kvd * H);
    if (!grams || !ms || !W || !A || !B || !saved) { alrd_errf(err, "compress: out of memory"); goto done; }
    if (o->whiten) {
        for (int l = 0; l < L; l++) {
            char name[96];
            snprintf(name, sizeof name, "model.layers.%d attention input", l);
            if (alrd_gram_init(&grams[l], H, name, err)) goto done;
        }
        stats_state st = {.grams = grams};
        if (alrd_ctx_new(&ctx, m, sample_len, sample_len, NULL, err)) goto done;
        alrd_ctx_set_attn_hook(ctx, on_attn_input, &st);
        for (int s = 0; s < n_samples; s++) {
            alrd_ctx_reset(ctx);
            if (alrd_ctx_forward(ctx, tokens + (size_t)s * sample_len, sample_len, NULL, 0, err)) goto done;
            if (st.failed) { *err = st.err; goto done; }
            progress(o, "calibration", s + 1, n_samples);
        }
        alrd_ctx_free(ctx);
        ctx = NULL;
        for (int l = 0; l < L; l++) alrd_gram_finish(&grams[l]);
    }
    r->t_stats = alrd_now() - t0;

    /* 2. whitened SVD of every module and head group (DESIGN 5.2) */
    double t1 = alrd_now();
    for (int l = 0; l < L; l++) {
        alrd_whitening wh;
        memset(&wh, 0, sizeof wh);
        char name[96];
        snprintf(name, sizeof name, "model.layers.%d attention input", l);
        if (o->whiten && alrd_whitening_compute(&wh, grams[l].c, H, name, err)) goto done;
        r->n_clamped += wh.n_clamped;
        for (int v = 0; v < 2; v++) {
            module_svd *md = &ms[2 * l + v];
            const float *Wf = v ? m->layers[l].wv : m->layers[l].wk;
            md->g = calloc(n_groups, sizeof *md->g);
            md->tail = calloc(gh + 1, sizeof(double));
            if (!md->g || !md->tail) { alrd_whitening_free(&wh); alrd_errf(err, "compress: out of memory"); goto done; }
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s_proj", l, v ? "v" : "k");
            for (int g = 0; g < n_groups; g++) {
                if (alrd_wsvd_compute_with(&md->g[g], o->whiten ? &wh : NULL, Wf + (size_t)g * gh * H, gh, H, name, err)) {
                    alrd_whitening_free(&wh);
                    goto done;
                }
                for (int k = 0; k <= gh; k++) md->tail[k] += alrd_wsvd_tail(&md->g[g], k);
                md->total += md->g[g].total;
            }
        }
        alrd_whitening_free(&wh);
        progress(o, "svd", l + 1, L);
    }
    r->t_svd = alrd_now() - t1;

    /* 3. sensitivities: KL on calibration tokens with one module truncated */
    double t2 = alrd_now();
    r->n_modules = 2 * L;
    r->modules = calloc(2 * L, sizeof *r->modules);
    if (!r->modules) { alrd_errf(err, "compress: out of memory"); goto done; }
    int search = !o->k_rank && !o->uniform;
    if (probe_init(&probe, m, tokens, n_samples, sample_len, o->probe_tokens, err)) goto done;
    int probe_rank = ((int)(o->rank_ratio * gh + 4) / 8) * 8;
    if (probe_rank < 8) probe_rank = 8;
    if (probe_rank >= gh) probe_rank = gh / 2 / 8 * 8 > 0 ? gh / 2 / 8 * 8 : 8;
    for (int i = 0; i < 2 * L; i++) {
        alrd_module_report *mr = &r->modules[i];
        mr->layer = i / 2;
        mr->is_v = i % 2;
        mr->full = gh;
        snprintf(mr->name, sizeof mr->name, "model.layers.%d.self_attn.%s_proj", mr->layer, mr->is_v ? "v" : "k");
        if (!search) continue;
        float *Wl = mr->is_v ? m->layers[mr->layer].wv : m->layers[mr->layer].wk;
        if (lowrank_weight(&ms[i], n_groups, gh, H, probe_rank, W, A, B, err)) goto done;
        memcpy(saved, Wl, sizeof(float) * kvd * H);
        memcpy(Wl, W, sizeof(float) * kvd * H);
        double kl;
        int prc = probe_run(&probe, mr->layer, &kl, NULL, err);
        memcpy(Wl, saved, sizeof(float) * kvd * H);
        if (prc) goto done;
        mr->probe_rank = probe_rank;
        mr->probe_kl = kl;
        double tail = ms[i].tail[probe_rank];
        mr->sensitivity = tail > 0 ? kl / tail : 0;
        progress(o, "sensitivity", i + 1, 2 * L);
    }
    r->t_sens = alrd_now() - t2;

    /* 4. ranks under the budget (DESIGN 5.3) */
    r->k_rank = calloc(L, sizeof(int));
    r->v_rank = calloc(L, sizeof(int));
    if (!r->k_rank || !r->v_rank) { alrd_errf(err, "compress: out of memory"); goto done; }
    if (o->k_rank) {
        for (int l = 0; l < L; l++) {
            r->k_rank[l] = o->k_rank[l];
            r->v_rank[l] = o->v_rank[l];
            if (r->k_rank[l] < 0 || r->k_rank[l] > gh || r->v_rank[l] < 0 || r->v_rank[l] > gh) {
                alrd_errf(err, "compress: layer %d: rank out of [0, %d] (0: not decomposed)", l, gh);
                goto done;
            }
        }
    } else {
        alrd_rank_module *rm = calloc(2 * L, sizeof *rm);
        int *ranks = calloc(2 * L, sizeof(int));
        if (!rm || !ranks) { free(rm); free(ranks); alrd_errf(err, "compress: out of memory"); goto done; }
        for (int i = 0; i < 2 * L; i++) {
            rm[i].tail = ms[i].tail;
            rm[i].max_rank = gh;
            rm[i].weight = o->uniform ? 1.0 : r->modules[i].sensitivity;
        }
        int arc = o->uniform ? alrd_ranks_uniform(rm, 2 * L, o->rank_ratio, 8, ranks, err)
                             : alrd_ranks_allocate(rm, 2 * L, o->rank_ratio, 8, ranks, err);
        for (int l = 0; l < L && !arc; l++) {
            r->k_rank[l] = ranks[2 * l];
            r->v_rank[l] = ranks[2 * l + 1];
        }
        free(rm);
        free(ranks);
        if (arc) goto done;
    }

    /* 5. factors at the chosen ranks; report; measured loss with all truncated */
    r->kA = calloc(L, sizeof(float *)); r->kB = calloc(L, sizeof(float *));
    r->vA = calloc(L, sizeof(float *)); r->vB = calloc(L, sizeof(float *));
    float **full_saved = calloc(2 * L, sizeof(float *));
    if (!r->kA || !r->kB || !r->vA || !r->vB || !full_saved) { free(full_saved); alrd_errf(err, "compress: out of memory"); goto done; }
    int frc = 0;
    for (int i = 0; i < 2 * L && !frc; i++) {
        int l = i / 2, v = i % 2, rk = v ? r->v_rank[l] : r->k_rank[l];
        float **pA = v ? &r->vA[l] : &r->kA[l], **pB = v ? &r->vB[l] : &r->kB[l];
        alrd_module_report *mr = &r->modules[i];
        mr->rank = rk;
        if (rk == 0) { /* not decomposed: the full projection stays */
            mr->kept_energy = 1;
            continue;
        }
        *pA = malloc(sizeof(float) * n_groups * gh * rk);
        *pB = malloc(sizeof(float) * n_groups * rk * H);
        if (!*pA || !*pB) { frc = alrd_errf(err, "compress: out of memory"); break; }
        for (int g = 0; g < n_groups && !frc; g++)
            frc = alrd_wsvd_factors(&ms[i].g[g], rk, *pA + (size_t)g * gh * rk, *pB + (size_t)g * rk * H, err);
        mr->kept_energy = ms[i].total > 0 ? 1 - ms[i].tail[rk] / ms[i].total : 1;
        mr->rel_error = ms[i].total > 0 ? sqrt(ms[i].tail[rk] / ms[i].total) : 0;
        mr->predicted = mr->sensitivity * ms[i].tail[rk];
        r->predicted_kl += mr->predicted;
        /* swap in the truncated weight for the measured-loss probe */
        float *Wl = v ? m->layers[l].wv : m->layers[l].wk;
        if (!frc) frc = lowrank_weight(&ms[i], n_groups, gh, H, rk, W, A, B, err);
        if (!frc && !(full_saved[i] = malloc(sizeof(float) * kvd * H))) frc = alrd_errf(err, "compress: out of memory");
        if (!frc) {
            memcpy(full_saved[i], Wl, sizeof(float) * kvd * H);
            memcpy(Wl, W, sizeof(float) * kvd * H);
        }
    }
    double base_kl;
    if (!frc) {
        frc = probe_run(&probe, 0, &r->measured_kl, &r->compressed_ce, err);
    }
    for (int i = 0; i < 2 * L; i++) { /* restore the model */
        if (!full_saved[i]) continue;
        memcpy(i % 2 ? m->layers[i / 2].wv : m->layers[i / 2].wk, full_saved[i], sizeof(float) * kvd * H);
        free(full_saved[i]);
    }
    free(full_saved);
    if (frc) goto done;
    if (probe_run(&probe, L, &base_kl, NULL, err)) goto done; /* no layers: base logits vs themselves */
    {
        /* base cross-entropy: from the stored base log-probs */
        double ce = 0;
        size_t n = 0;
        for (int s = 0; s < probe.n_seq; s++)
            for (int t = 0; t + 1 < probe.seq_len; t++, n++) {
                size_t row = (size_t)s * probe.seq_len + t;
                ce -= probe.base_lp[row * probe.vocab + probe.tokens[row + 1]];
            }
        r->base_ce = ce / n;
    }
    r->t_total = alrd_now() - t0;
    rc = 0;
done:
    if (ctx) alrd_ctx_free(ctx);
    probe_free(&probe);
    if (grams) for (int l = 0; l < L; l++) alrd_gram_free(&grams[l]);
    free(grams);
    if (ms) {
        for (int i = 0; i < 2 * L; i++) {
            if (ms[i].g) for (int g = 0; g < n_groups; g++) alrd_wsvd_free(&ms[i].g[g]);
            free(ms[i].g);
            free(ms[i].tail);
        }
    }
    free(ms);
    free(W); free(A); free(B); free(saved);
    if (rc) alrd_compress_result_free(r);
    return rc;
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
