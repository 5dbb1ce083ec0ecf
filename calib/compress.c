/* compress: statistics -> whitened SVD -> sensitivities -> ranks -> factors. */
#include "compress.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../formats/alrd_file.h"
#include "../kernels/cpu_ops.h"
#include "../runtime/context.h"
#include "qerr.h"
#include "calib_gpu.h"
#include "gram.h"
#include "hadamard.h"
#include "ranks.h"
#include "wsvd.h"
#include "wsvd_gpu.h"

static void progress(int on, const char *what, int done, int total) {
    if (on) alrd_progress(what, (size_t)done, (size_t)total);
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

/* Hidden states kept per layer-major pass: samples (and probe runs) are
 * processed in blocks whose states fit this, so memory stays bounded for any
 * calibration size while each layer is materialized once per block. */
#define STATE_BYTES ((size_t)1 << 30)

struct alrd_calib {
    alrd_model *m;
    int progress;
    alrd_gram *grams;      /* [n_layers], NULL without statistics */
    size_t rows;           /* rows summed into each Gram */
    int keep_grams;        /* 0: alrd_decomp_new releases each Gram once used */
    size_t spill_over;     /* SVD bases larger than this in all go to a temporary file */
    /* probe: the uncompressed model's layer inputs and log-probs */
    alrd_ctx *ctx;
    int n_seq, seq_len;
    int32_t *tokens;       /* [n_seq*seq_len] */
    float *h_in;           /* [n_layers][n_seq*seq_len][hidden] */
    float *base_lp;        /* [n_seq*seq_len][vocab] */
    float *logits;         /* scratch [seq_len][vocab] */
    double base_ce, seconds;
    int want_gpu;          /* ALRD_CALIB_GPU: the statistics pass, the probes and the SVDs may use the GPU */
    alrd_gpu *gpu;         /* the engine of the statistics and the probes (calib_gpu.h); NULL: the CPU */
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

/* Layer-major: every sample of a block through layer l before layer l+1, so
 * a lazy model materializes each layer once per block. Each Gram still sees
 * the samples in order, as a sample-major pass would feed it. */
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
    if (c->gpu) {
        if (alrd_calib_gpu_grams(c->gpu, tokens, n_samples, sample_len, c->grams, c->progress, err)) return -1;
        for (int l = 0; l < L; l++) alrd_gram_finish(&c->grams[l]);
        c->rows = (size_t)c->grams[0].n_rows;
        return 0;
    }
    size_t per = (size_t)sample_len * H * sizeof(float);
    int block = STATE_BYTES / per > (size_t)n_samples ? n_samples : (int)(STATE_BYTES / per);
    if (block < 1) block = 1;
    float *h = malloc(per * block);
    if (!h) return alrd_errf(err, "calibration: out of memory for %d x %d hidden states", block, sample_len);
    stats_state st = {.grams = c->grams};
    alrd_ctx *ctx;
    if (alrd_ctx_new(&ctx, m, sample_len, sample_len, NULL, err)) { free(h); return -1; }
    alrd_ctx_set_attn_hook(ctx, on_attn_input, &st);
    int rc = 0, n_blocks = (n_samples + block - 1) / block;
    for (int s0 = 0; s0 < n_samples && !rc; s0 += block) {
        int nb = n_samples - s0 < block ? n_samples - s0 : block;
        for (int s = 0; s < nb; s++)
            alrd_ctx_embed(ctx, tokens + (size_t)(s0 + s) * sample_len, sample_len, h + (size_t)s * sample_len * H);
        for (int l = 0; l < L && !rc; l++) {
            for (int s = 0; s < nb && !rc; s++) {
                rc = alrd_ctx_layer_prefill(ctx, l, h + (size_t)s * sample_len * H, sample_len, err);
                if (!rc && st.failed) {
                    *err = st.err;
                    rc = -1;
                }
            }
            progress(c->progress, "calibration", (s0 / block) * L + l + 1, n_blocks * L);
        }
    }
    alrd_ctx_free(ctx);
    free(h);
    for (int l = 0; l < L && !rc; l++) alrd_gram_finish(&c->grams[l]);
    if (!rc) c->rows = (size_t)c->grams[0].n_rows;
    return rc;
}

static int probe_init(alrd_calib *c, const int32_t *tokens, int n_samples, int sample_len, int probe_tokens,
                      alrd_error *err) {
    alrd_model *m = c->m;
    const alrd_config *cf = &m->cfg;
    const int H = cf->hidden, V = cf->vocab_size;
    c->seq_len = sample_len < probe_tokens ? sample_len : probe_tokens;
    c->n_seq = probe_tokens / c->seq_len;
    if (c->n_seq > n_samples) c->n_seq = n_samples;
    if (c->n_seq < 1) c->n_seq = 1;
    size_t P = (size_t)c->n_seq * c->seq_len;
    c->tokens = malloc(sizeof(int32_t) * P);
    c->h_in = malloc(sizeof(float) * P * H * cf->n_layers);
    c->base_lp = malloc(sizeof(float) * P * V);
    c->logits = malloc(sizeof(float) * c->seq_len * V);
    if (!c->tokens || !c->h_in || !c->base_lp || !c->logits)
        return alrd_errf(err, "calibration: out of memory for the probe (%zu tokens)", P);
    for (int s = 0; s < c->n_seq; s++)
        memcpy(c->tokens + (size_t)s * c->seq_len, tokens + (size_t)s * sample_len, sizeof(int32_t) * c->seq_len);
    if (c->gpu) /* the base log-probs stay on the device too; the layer inputs come back for calib/qerr */
        return alrd_calib_gpu_probe(c->gpu, c->tokens, c->n_seq, c->seq_len, 1, c->base_lp, c->h_in, NULL, &c->base_ce,
                                    err);
    float *h = malloc(sizeof(float) * P * H);
    if (!h) return alrd_errf(err, "calibration: out of memory for the probe (%zu tokens)", P);
    if (alrd_ctx_new(&c->ctx, m, c->seq_len, c->seq_len, NULL, err)) { free(h); return -1; }
    alrd_ctx_embed(c->ctx, c->tokens, (int)P, h);
    for (int l = 0; l < cf->n_layers; l++) { /* layer-major, as collect_grams */
        memcpy(c->h_in + (size_t)l * P * H, h, sizeof(float) * P * H);
        for (int s = 0; s < c->n_seq; s++)
            if (alrd_ctx_layer_prefill(c->ctx, l, h + (size_t)s * c->seq_len * H, c->seq_len, err)) {
                free(h);
                return -1;
            }
    }
    double ce = 0;
    size_t n = 0;
    for (int s = 0; s < c->n_seq; s++) {
        size_t off = (size_t)s * c->seq_len;
        float *lp = c->base_lp + off * V;
        alrd_ctx_logits(c->ctx, h + off * H, c->seq_len, lp);
        for (int t = 0; t < c->seq_len; t++) {
            log_softmax_row(lp + (size_t)t * V, V);
            if (t + 1 < c->seq_len) { ce -= lp[(size_t)t * V + c->tokens[off + t + 1]]; n++; }
        }
    }
    free(h);
    c->base_ce = ce / n;
    return 0;
}

/* Before (on = 1) and after (on = 0) run `run` goes through layer l:
 * installs / removes that run's K/V overrides there. */
typedef int (*probe_setup_fn)(void *user, int run, int layer, int on, alrd_error *err);

/* n_runs probe runs, run j from the saved inputs of layer from[j] (ascending)
 * to the logits: mean KL(base || run) over all positions into kl[j] and the
 * next-token cross-entropy into ce[j] (ce may be NULL). Layer-major over the
 * runs of a block (a lazy model materializes each layer once per block);
 * every run sees exactly the operations a run of its own would. */
static int probe_pass_gpu(alrd_calib *c, int n_runs, const int *from, probe_setup_fn setup, void *user,
                          double *kl_out, double *ce_out, const char *what, alrd_error *err) {
    const int L = c->m->cfg.n_layers;
    int rc = 0;
    for (int j = 0; j < n_runs && !rc; j++) { /* each run from the embedding on: layers before from[j] as the base */
        int l = from[j];
        for (; l < L && !rc; l++) rc = setup(user, j, l, 1, err);
        double ce;
        if (!rc) rc = alrd_calib_gpu_probe(c->gpu, c->tokens, c->n_seq, c->seq_len, 0, NULL, NULL, &kl_out[j], &ce, err);
        if (!rc && ce_out) ce_out[j] = ce;
        for (int k = from[j]; k < l; k++) { /* always undone, also after a failure */
            alrd_error e2;
            if (setup(user, j, k, 0, rc ? &e2 : err)) rc = -1;
        }
        progress(c->progress && what, what, j + 1, n_runs);
    }
    return rc;
}

static int probe_pass(alrd_calib *c, int n_runs, const int *from, probe_setup_fn setup, void *user, double *kl_out,
                      double *ce_out, const char *what, alrd_error *err) {
    if (c->gpu) return probe_pass_gpu(c, n_runs, from, setup, user, kl_out, ce_out, what, err);
    const alrd_config *cf = &c->m->cfg;
    const int V = cf->vocab_size, H = cf->hidden, L = cf->n_layers, S = c->seq_len;
    size_t P = (size_t)c->n_seq * S, per = P * H * sizeof(float);
    int block = STATE_BYTES / per > (size_t)n_runs ? n_runs : (int)(STATE_BYTES / per);
    if (block < 1) block = 1;
    float *h = malloc(per * block);
    if (!h) return alrd_errf(err, "calibration: out of memory for %d probe runs", block);
    int rc = 0, done = 0, total = 0;
    for (int j = 0; j < n_runs; j++) total += L - from[j];
    for (int j0 = 0; j0 < n_runs && !rc; j0 += block) {
        int nb = n_runs - j0 < block ? n_runs - j0 : block;
        for (int l = from[j0]; l < L && !rc; l++) {
            for (int j = 0; j < nb && !rc; j++) {
                float *hj = h + (size_t)j * P * H;
                if (from[j0 + j] > l) continue;
                if (from[j0 + j] == l) memcpy(hj, c->h_in + (size_t)l * P * H, per);
                rc = setup ? setup(user, j0 + j, l, 1, err) : 0;
                for (int s = 0; s < c->n_seq && !rc; s++)
                    rc = alrd_ctx_layer_prefill(c->ctx, l, hj + (size_t)s * S * H, S, err);
                if (setup) { /* always undone, also after a failure */
                    alrd_error e2;
                    if (setup(user, j0 + j, l, 0, rc ? &e2 : err)) rc = -1;
                }
                progress(c->progress && what, what, ++done, total);
            }
        }
        for (int j = 0; j < nb && !rc; j++) {
            const float *hj = h + (size_t)j * P * H;
            double kl = 0, ce = 0;
            size_t n = 0, nce = 0;
            for (int s = 0; s < c->n_seq; s++) {
                size_t off = (size_t)s * S;
                alrd_ctx_logits(c->ctx, hj + off * H, S, c->logits);
                for (int t = 0; t < S; t++) {
                    float *lp = c->logits + (size_t)t * V;
                    const float *bp = c->base_lp + (off + t) * V;
                    log_softmax_row(lp, V);
                    double k = 0;
                    for (int i = 0; i < V; i++) k += exp((double)bp[i]) * ((double)bp[i] - lp[i]);
                    kl += k > 0 ? k : 0;
                    n++;
                    if (t + 1 < S) { ce -= lp[c->tokens[off + t + 1]]; nce++; }
                }
            }
            kl_out[j0 + j] = kl / n;
            if (ce_out) ce_out[j0 + j] = ce / nce;
        }
    }
    free(h);
    return rc;
}

int alrd_calib_measure_cache(alrd_calib *c, const alrd_model *mc, alrd_cache_measure *out, alrd_error *err) {
    const alrd_config *cf = &c->m->cfg;
    const int V = cf->vocab_size, H = cf->hidden, L = cf->n_layers, S = c->seq_len, first = S / 2;
    const size_t P = (size_t)c->n_seq * S;
    memset(out, 0, sizeof *out);
    if (S < 4) return alrd_errf(err, "calibration: probe sequences of %d tokens are too short to score", S);
    if (mc->cfg.n_layers != L || mc->cfg.hidden != H || mc->cfg.vocab_size != V)
        return alrd_errf(err, "calibration: %s is not a compression of the calibrated model", mc->path);
    double t0 = alrd_now();
    alrd_cache_opts co;
    alrd_cache_opts_default(mc, &co);
    co.backend = ALRD_BACKEND_CPU;
    alrd_ctx *x = NULL;
    float *h = malloc(sizeof(float) * P * H);
    if (!h) return alrd_errf(err, "calibration: out of memory for %zu probe rows", P);
    if (alrd_ctx_new(&x, mc, S, S, &co, err)) { free(h); return -1; }
    alrd_ctx_embed(x, c->tokens, (int)P, h);
    int rc = 0;
    for (int l = 0; l < L && !rc; l++) /* layer-major: a lazy model materializes each layer once */
        for (int s = 0; s < c->n_seq && !rc; s++)
            rc = alrd_ctx_layer_generate(x, l, h + (size_t)s * S * H, S, first, err);
    double kl = 0, kl2 = 0;
    size_t n = 0, agree = 0;
    for (int s = 0; s < c->n_seq && !rc; s++) {
        const size_t off = (size_t)s * S;
        const int rows = S - 1 - first; /* the distributions after tokens first..S-2, as perplexity scores */
        alrd_ctx_logits(x, h + (off + first) * H, rows, c->logits);
        for (int t = 0; t < rows; t++) {
            float *lp = c->logits + (size_t)t * V;
            const float *bp = c->base_lp + (off + first + t) * V;
            log_softmax_row(lp, V);
            double k = 0;
            int am = 0, bm = 0;
            for (int i = 0; i < V; i++) {
                k += exp((double)bp[i]) * ((double)bp[i] - lp[i]);
                if (lp[i] > lp[am]) am = i;
                if (bp[i] > bp[bm]) bm = i;
            }
            k = k > 0 ? k : 0;
            kl += k;
            kl2 += k * k;
            agree += am == bm;
            n++;
        }
    }
    alrd_ctx_free(x);
    free(h);
    if (rc) return -1;
    const double mean = kl / n, var = kl2 / n - mean * mean;
    out->kl = mean;
    out->kl_stderr = n > 1 && var > 0 ? sqrt(var / (n - 1)) : 0;
    out->top1 = (double)agree / n;
    out->n_scored = n;
    out->seconds = alrd_now() - t0;
    return 0;
}

int alrd_calib_new(alrd_calib **out, alrd_model *m, const int32_t *tokens, int n_samples, int sample_len,
                   int probe_tokens, int need_grams, int flags, alrd_error *err) {
    *out = NULL;
    if (m->has_lowrank) return alrd_errf(err, "%s: already compressed (a .alrd file)", m->path);
    if (n_samples < 1 || sample_len < 2) return alrd_errf(err, "calibration: no calibration samples");
    if (probe_tokens < 2) return alrd_errf(err, "calibration: --probe-tokens must be at least 2");
    for (size_t i = 0; i < (size_t)n_samples * sample_len; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return alrd_errf(err, "calibration: token id %d at %zu out of range [0, %d)", tokens[i], i,
                             m->cfg.vocab_size);
    alrd_calib *c = calloc(1, sizeof *c);
    if (!c) return alrd_errf(err, "calibration: out of memory");
    c->m = m;
    c->progress = (flags & ALRD_CALIB_PROGRESS) != 0;
    c->want_gpu = (flags & ALRD_CALIB_GPU) != 0;
    c->keep_grams = 1;
    c->spill_over = (size_t)1 << 30;
    double t0 = alrd_now();
    if (c->want_gpu && alrd_calib_gpu_open(&c->gpu, m, sample_len, err) < 0) { /* 1: no GPU here, the CPU */
        alrd_calib_free(c);
        return -1;
    }
    if ((need_grams && collect_grams(c, tokens, n_samples, sample_len, err)) ||
        probe_init(c, tokens, n_samples, sample_len, probe_tokens, err)) {
        alrd_calib_free(c);
        return -1;
    }
    c->seconds = alrd_now() - t0;
    *out = c;
    return 0;
}

static void release_gram(alrd_calib *c, int l) {
    alrd_gram_free(&c->grams[l]);
}

void alrd_calib_free(alrd_calib *c) {
    if (!c) return;
    if (c->grams)
        for (int l = 0; l < c->m->cfg.n_layers; l++) release_gram(c, l);
    free(c->grams);
    alrd_ctx_free(c->ctx);
    alrd_calib_gpu_free(c->gpu);
    free(c->tokens);
    free(c->h_in);
    free(c->base_lp);
    free(c->logits);
    free(c);
}

void alrd_calib_release_grams(alrd_calib *c) { c->keep_grams = 0; }
void alrd_calib_set_spill(alrd_calib *c, size_t bytes) { c->spill_over = bytes; }

void alrd_calib_dampen(alrd_calib *c, double damp) {
    if (!c->grams || damp <= 0) return;
    for (int l = 0; l < c->m->cfg.n_layers; l++) {
        alrd_gram *g = &c->grams[l];
        if (!g->c) continue;
        double tr = 0;
        for (int i = 0; i < g->d; i++) tr += g->c[(size_t)i * g->d + i];
        double add = damp * tr / g->d;
        for (int i = 0; i < g->d; i++) g->c[(size_t)i * g->d + i] += add;
    }
}

int alrd_calib_on_gpu(const alrd_calib *c) { return c->gpu != NULL; }
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

/* The SVD bases (u, V^T S^-1) of every module need not stay in memory: 64
 * modules of a 7B model hold 17 GB of them in fp64. Above the calib's spill
 * size (alrd_calib_set_spill) each group's bases go to an unlinked temporary
 * file right after its SVD (u transposed, so the first r columns are one
 * contiguous read) and are read back, r rows at a time, when factors of rank
 * r are cut; only sigma stays resident. Small models keep them in memory. */
typedef struct {
    alrd_wsvd *g;          /* [n_groups]; u and vts NULL when spilled */
    uint64_t *off;         /* [n_groups] byte offset of the group's u^T [k][rows], then vts [k][d] */
    double *tail;          /* [full+1]: sum over groups of tail(r) */
    double total;
    double sensitivity, probe_kl;
} module_svd;

struct alrd_decomp {
    alrd_calib *c;
    int whiten, group_heads, n_groups, gh;
    int on_gpu;            /* the SVDs ran on the GPU (calib/wsvd_gpu) */
    int probe_rank;        /* 0 until sensitivities are measured */
    module_svd *ms;        /* [2*n_layers] */
    float *Wk, *Wv, *A, *B; /* scratch: low-rank weights of a layer, factors of a group */
    int spill_fd;          /* -1: none */
    uint64_t spill_end;
    double *su, *svts;     /* scratch: one group's bases (scratch_bases) */
    int probe_rank_run;    /* setup state of a probe pass */
    const int *run_k, *run_v;
};

int alrd_decomp_full_rank(const alrd_decomp *d) { return d->gh; }
int alrd_decomp_n_groups(const alrd_decomp *d) { return d->n_groups; }
int alrd_decomp_group_heads(const alrd_decomp *d) { return d->group_heads; }
const double *alrd_decomp_tail(const alrd_decomp *d, int m) { return d->ms[m].tail; }
double alrd_decomp_total(const alrd_decomp *d, int m) { return d->ms[m].total; }
double alrd_decomp_sensitivity(const alrd_decomp *d, int m) { return d->ms[m].sensitivity; }
double alrd_decomp_probe_kl(const alrd_decomp *d, int m) { return d->ms[m].probe_kl; }
int alrd_decomp_probe_rank(const alrd_decomp *d) { return d->probe_rank; }
int alrd_decomp_on_gpu(const alrd_decomp *d) { return d->on_gpu; }

void alrd_decomp_free(alrd_decomp *d) {
    if (!d) return;
    if (d->ms) {
        for (int i = 0; i < 2 * d->c->m->cfg.n_layers; i++) {
            if (d->ms[i].g)
                for (int g = 0; g < d->n_groups; g++) alrd_wsvd_free(&d->ms[i].g[g]);
            free(d->ms[i].g);
            free(d->ms[i].off);
            free(d->ms[i].tail);
        }
    }
    if (d->spill_fd >= 0) close(d->spill_fd);
    free(d->ms);
    free(d->Wk); free(d->Wv); free(d->A); free(d->B); free(d->su); free(d->svts);
    free(d);
}

/* An unlinked file in $TMPDIR (or /tmp): gone when closed, even after a crash. */
static int spill_open(alrd_decomp *d, alrd_error *err) {
    const char *dir = getenv("TMPDIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/alrd-svd-XXXXXX", dir && *dir ? dir : "/tmp");
    d->spill_fd = mkstemp(path);
    if (d->spill_fd < 0) return alrd_errf(err, "%s: cannot create the SVD spill file: %s", path, strerror(errno));
    unlink(path);
    return 0;
}

static int spill_io(int fd, int wr, void *buf, size_t n, uint64_t off, alrd_error *err) {
    char *p = buf;
    while (n) {
        ssize_t k = wr ? pwrite(fd, p, n, (off_t)off) : pread(fd, p, n, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0)
            return alrd_errf(err, "SVD spill file: %s failed at offset %llu: %s", wr ? "write" : "read",
                             (unsigned long long)off, k < 0 ? strerror(errno) : "unexpected end");
        p += k; n -= (size_t)k; off += (uint64_t)k;
    }
    return 0;
}

/* Moves w's bases to the spill file (transposing u into d->su) and frees them. */
static int spill_put(alrd_decomp *d, alrd_wsvd *w, uint64_t *off, alrd_error *err) {
    const size_t rows = w->rows, k = w->k, dd = w->d;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < k; j++) d->su[j * rows + i] = w->u[i * k + j];
    *off = d->spill_end;
    int rc = spill_io(d->spill_fd, 1, d->su, sizeof(double) * rows * k, *off, err) ||
             spill_io(d->spill_fd, 1, w->vts, sizeof(double) * k * dd, *off + sizeof(double) * rows * k, err);
    d->spill_end += sizeof(double) * (rows * k + k * dd);
    free(w->u); free(w->vts);
    w->u = w->vts = NULL;
    return rc ? -1 : 0;
}

/* The rank-r factors of group g of module m, as alrd_wsvd_factors cuts them
 * from the full bases (the first r columns of u, rows of vts). su, svts:
 * scratch of gh * min(gh, hidden) and min(gh, hidden) * max(gh, hidden) doubles. */
static int group_factors(const alrd_decomp *d, int m, int g, int r, float *A, float *B, double *su, double *svts,
                         alrd_error *err) {
    const alrd_wsvd *w = &d->ms[m].g[g];
    if (d->spill_fd < 0) return alrd_wsvd_factors(w, r, A, B, err); /* bases in memory */
    if (r < 0 || r > w->k) return alrd_errf(err, "%s: wsvd: rank %d outside 0..%d", w->name, r, w->k);
    const size_t rows = w->rows, k = w->k, dd = w->d;
    uint64_t off = d->ms[m].off[g];
    if (spill_io(d->spill_fd, 0, svts, sizeof(double) * r * rows, off, err)) return -1; /* u^T rows = u columns */
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < (size_t)r; j++) su[i * r + j] = svts[j * rows + i];
    if (spill_io(d->spill_fd, 0, svts, sizeof(double) * r * dd, off + sizeof(double) * rows * k, err)) return -1;
    alrd_wsvd t = *w; /* a view with k = r: the same arithmetic on the kept part */
    t.k = r;
    t.u = su;
    t.vts = svts;
    return alrd_wsvd_factors(&t, r, A, B, err);
}

static int scratch_bases(const alrd_decomp *d, double **su, double **svts, alrd_error *err) {
    int H = d->c->m->cfg.hidden, kmax = d->gh < H ? d->gh : H;
    *su = malloc(sizeof(double) * d->gh * kmax);
    *svts = malloc(sizeof(double) * kmax * (d->gh > H ? d->gh : H));
    if (*su && *svts) return 0;
    free(*su); free(*svts);
    *su = *svts = NULL;
    return alrd_errf(err, "compress: out of memory");
}

int alrd_decomp_new(alrd_decomp **out, alrd_calib *c, int whiten, int group_heads, alrd_error *err) {
    *out = NULL;
    alrd_model *m = c->m;
    const alrd_config *cf = &m->cfg;
    int L = cf->n_layers, H = cf->hidden, kvd = cf->n_kv_heads * cf->head_dim;
    if (!group_heads) group_heads = cf->n_kv_heads;
    if (group_heads <= 0 || cf->n_kv_heads % group_heads)
        return alrd_errf(err, "compress: --group-heads %d does not divide the %d KV heads", group_heads, cf->n_kv_heads);
    if (whiten && !c->grams) return alrd_errf(err, "compress: whitening needs calibration statistics");
    if (whiten && !c->grams[0].c) return alrd_errf(err, "compress: the calibration statistics were released");
    alrd_decomp *d = calloc(1, sizeof *d);
    if (!d) return alrd_errf(err, "compress: out of memory");
    d->c = c;
    d->spill_fd = -1;
    d->whiten = whiten;
    d->group_heads = group_heads;
    d->n_groups = cf->n_kv_heads / group_heads;
    d->gh = group_heads * cf->head_dim;
    d->ms = calloc(2 * L, sizeof *d->ms);
    d->Wk = malloc(sizeof(float) * kvd * H);
    d->Wv = malloc(sizeof(float) * kvd * H);
    d->A = malloc(sizeof(float) * d->gh * d->gh);
    d->B = malloc(sizeof(float) * d->gh * H);
    if (!d->ms || !d->Wk || !d->Wv || !d->A || !d->B || scratch_bases(d, &d->su, &d->svts, err)) {
        alrd_decomp_free(d);
        return alrd_errf(err, "compress: out of memory");
    }
    int kmax = d->gh < H ? d->gh : H;
    double bases = 2.0 * L * d->n_groups * ((double)d->gh * kmax + (double)kmax * H) * sizeof(double);
    if (bases > (double)c->spill_over && spill_open(d, err)) { alrd_decomp_free(d); return -1; }
    /* The GPU when the calibration may use it (not --cpu) and this build and machine have one: the same
     * decomposition through cuSOLVER (calib/wsvd_gpu.h), one layer's whitening on the device at a time. */
    alrd_wsvd_gpu *gw = NULL;
    if (c->want_gpu && alrd_wsvd_gpu_new(&gw, err) < 0) { alrd_decomp_free(d); return -1; }
    d->on_gpu = gw != NULL;
    int rc = 0;
    for (int l = 0; l < L && !rc; l++) {
        alrd_whitening wh;
        memset(&wh, 0, sizeof wh);
        char name[96];
        snprintf(name, sizeof name, "model.layers.%d attention input", l);
        if (whiten) {
            rc = gw ? alrd_wsvd_gpu_whiten(gw, c->grams[l].c, H, NULL, name, err)
                    : alrd_whitening_compute(&wh, c->grams[l].c, H, name, err);
            if (rc) break;
            if (!c->keep_grams) release_gram(c, l);
        }
        alrd_layer view;
        const alrd_layer *ly = alrd_model_layer(m, l, &view, err);
        if (!ly) { alrd_whitening_free(&wh); rc = -1; break; }
        for (int v = 0; v < 2 && !rc; v++) {
            module_svd *md = &d->ms[2 * l + v];
            const float *Wf = v ? ly->wv : ly->wk;
            md->g = calloc(d->n_groups, sizeof *md->g);
            md->off = calloc(d->n_groups, sizeof *md->off);
            md->tail = calloc(d->gh + 1, sizeof(double));
            rc = !md->g || !md->off || !md->tail ? alrd_errf(err, "compress: out of memory") : 0;
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s_proj", l, v ? "v" : "k");
            for (int g = 0; g < d->n_groups && !rc; g++) {
                const float *Wg = Wf + (size_t)g * d->gh * H;
                rc = gw ? alrd_wsvd_gpu_compute(gw, &md->g[g], whiten, Wg, d->gh, H, name, err)
                        : alrd_wsvd_compute_with(&md->g[g], whiten ? &wh : NULL, Wg, d->gh, H, name, err);
                for (int k = 0; k <= d->gh && !rc; k++) md->tail[k] += alrd_wsvd_tail(&md->g[g], k);
                if (!rc) md->total += md->g[g].total;
                if (!rc && d->spill_fd >= 0) rc = spill_put(d, &md->g[g], &md->off[g], err);
            }
        }
        alrd_whitening_free(&wh);
        if (!rc) progress(c->progress, gw ? "svd (GPU)" : "svd", l + 1, L);
    }
    alrd_wsvd_gpu_free(gw);
    if (rc) { alrd_decomp_free(d); return -1; }
    *out = d;
    return 0;
}

/* W' = A_r B_r for every group of module m, as a full [n_kv*hd][hidden] weight in W. */
static int lowrank_weight(alrd_decomp *d, int m, int r, float *W, alrd_error *err) {
    int H = d->c->m->cfg.hidden;
    for (int g = 0; g < d->n_groups; g++) {
        if (group_factors(d, m, g, r, d->A, d->B, d->su, d->svts, err)) return -1;
        alrd_matmul(W + (size_t)g * d->gh * H, d->A, d->B, d->gh, H, r);
    }
    return 0;
}

/* Replaces (W) or restores (NULL) layer's k_proj / v_proj in what the probes run: the GPU engine, or the model. */
static int calib_override(alrd_calib *c, int layer, int is_v, const float *W, alrd_error *err) {
    return c->gpu ? alrd_calib_gpu_set_kv_weight(c->gpu, layer, is_v, W, err)
                  : alrd_model_set_override(c->m, layer, is_v, W, err);
}

/* Sensitivity runs: run i truncates module i alone, from its layer on. */
static int setup_sensitivity(void *user, int run, int layer, int on, alrd_error *err) {
    alrd_decomp *d = user;
    if (layer != run / 2) return 0;
    float *W = run % 2 ? d->Wv : d->Wk;
    if (on && lowrank_weight(d, run, d->probe_rank_run, W, err)) return -1;
    return calib_override(d->c, layer, run % 2, on ? W : NULL, err);
}

int alrd_decomp_sensitivities(alrd_decomp *d, int probe_rank, alrd_error *err) {
    const alrd_config *cf = &d->c->m->cfg;
    const int n = 2 * cf->n_layers;
    if (probe_rank < 1 || probe_rank >= d->gh)
        return alrd_errf(err, "compress: probe rank %d outside [1, %d)", probe_rank, d->gh);
    int *from = calloc(n, sizeof(int));
    double *kl = malloc(sizeof(double) * n);
    if (!from || !kl) { free(from); free(kl); return alrd_errf(err, "compress: out of memory"); }
    for (int i = 0; i < n; i++) from[i] = i / 2;
    d->probe_rank_run = probe_rank;
    int rc = probe_pass(d->c, n, from, setup_sensitivity, d, kl, NULL, "sensitivity", err);
    for (int i = 0; i < n && !rc; i++) {
        double tail = d->ms[i].tail[probe_rank];
        d->ms[i].probe_kl = kl[i];
        d->ms[i].sensitivity = tail > 0 ? kl[i] / tail : 0;
    }
    free(from);
    free(kl);
    if (rc) return -1;
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
    double *Hm = hadamard ? malloc(sizeof(double) * gh * gh) : NULL, *su, *svts;
    if (hadamard && !Hm) return alrd_errf(err, "compress: out of memory");
    if (scratch_bases(d, &su, &svts, err)) { free(Hm); return -1; }
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
            rc = group_factors(d, i, g, rk, A, B, su, svts, err);
            if (!rc && hadamard) rc = alrd_hadamard_fold(Hm, rk, A, gh, B, H, err);
        }
    }
    free(Hm);
    free(su);
    free(svts);
    return rc;
}

/* The measure run: every module truncated at its rank, layer by layer. */
static int setup_measure(void *user, int run, int layer, int on, alrd_error *err) {
    alrd_decomp *d = user;
    (void)run;
    for (int v = 0; v < 2; v++) {
        int rk = v ? d->run_v[layer] : d->run_k[layer];
        if (rk == 0) continue; /* not decomposed: the original weight */
        float *W = v ? d->Wv : d->Wk;
        if (on && lowrank_weight(d, 2 * layer + v, rk, W, err)) return -1;
        if (calib_override(d->c, layer, v, on ? W : NULL, err)) return -1;
    }
    return 0;
}

int alrd_decomp_measure(alrd_decomp *d, const int *k_rank, const int *v_rank, double *kl, double *ce,
                        alrd_error *err) {
    int from = 0;
    d->run_k = k_rank;
    d->run_v = v_rank;
    return probe_pass(d->c, 1, &from, setup_measure, d, kl, ce, NULL, err);
}

/* ---- one configuration ------------------------------------------------- */

void alrd_compress_opts_default(alrd_compress_opts *o) {
    memset(o, 0, sizeof *o);
    o->whiten = 1;
    o->rank_ratio = 0.5;
    o->probe_tokens = 256;
    o->seed = 0x5eed;
}

/* ---- the stages ---------------------------------------------------------- */

#define MAX_GROUPINGS 8

struct alrd_compress_stages {
    alrd_calib *c;
    alrd_compress_stages_opts so;
    int whiten, progress;
    uint64_t seed;
    size_t calib_tokens;
    struct {
        int group_heads;   /* as given */
        alrd_decomp *d;
        alrd_qerr *q[2];   /* by hadamard */
    } g[MAX_GROUPINGS];
    int n_g;
    double t_stats, t_svd, t_sens, t_qerr;
};

int alrd_compress_probe_rank(double ratio, int full) {
    int pr = ratio >= 1 ? full : ((int)(ratio * full + 4) / 8) * 8;
    if (pr < 8) pr = 8;
    if (pr >= full) pr = (full / 16) * 8 > 0 ? (full / 16) * 8 : 8; /* ratio 1: probe at half rank */
    return pr;
}

int alrd_compress_stages_new(alrd_compress_stages **out, alrd_model *m, const int32_t *tokens, int n_samples,
                             int sample_len, const alrd_compress_opts *o, const alrd_compress_stages_opts *so,
                             alrd_error *err) {
    *out = NULL;
    alrd_compress_stages *s = calloc(1, sizeof *s);
    if (!s) return alrd_errf(err, "compress: out of memory");
    s->so = *so;
    s->whiten = o->whiten;
    s->progress = o->progress;
    s->seed = o->seed;
    s->calib_tokens = (size_t)n_samples * sample_len;
    double t0 = alrd_now();
    if (alrd_calib_new(&s->c, m, tokens, n_samples, sample_len, o->probe_tokens, o->whiten,
                       (o->progress ? ALRD_CALIB_PROGRESS : 0) | (o->cpu_only ? 0 : ALRD_CALIB_GPU), err)) {
        free(s);
        return -1;
    }
    s->t_stats = alrd_now() - t0;
    if (!so->several) alrd_calib_release_grams(s->c); /* one decomposition: each Gram is freed once used */
    alrd_calib_dampen(s->c, o->damp);
    *out = s;
    return 0;
}

void alrd_compress_stages_free(alrd_compress_stages *s) {
    if (!s) return;
    for (int i = 0; i < s->n_g; i++) {
        alrd_qerr_free(s->g[i].q[0]);
        alrd_qerr_free(s->g[i].q[1]);
        alrd_decomp_free(s->g[i].d);
    }
    alrd_calib_free(s->c);
    free(s);
}

void alrd_compress_stages_seconds(const alrd_compress_stages *s, double *stats, double *svd, double *sens,
                                  double *qerr) {
    if (stats) *stats = s->t_stats;
    if (svd) *svd = s->t_svd;
    if (sens) *sens = s->t_sens;
    if (qerr) *qerr = s->t_qerr;
}

static int grouping(alrd_compress_stages *s, int group_heads, alrd_error *err) {
    for (int i = 0; i < s->n_g; i++)
        if (s->g[i].group_heads == group_heads) return i;
    if (s->n_g == MAX_GROUPINGS) return alrd_errf(err, "compress: more than %d head groupings", MAX_GROUPINGS);
    const int i = s->n_g;
    double t0 = alrd_now();
    alrd_decomp *d;
    if (alrd_decomp_new(&d, s->c, s->whiten, group_heads, err)) return -1;
    double t1 = alrd_now();
    s->t_svd += t1 - t0;
    if (s->so.probe_ratio > 0 &&
        alrd_decomp_sensitivities(d, alrd_compress_probe_rank(s->so.probe_ratio, alrd_decomp_full_rank(d)), err)) {
        alrd_decomp_free(d);
        return -1;
    }
    s->t_sens += alrd_now() - t1;
    s->g[i].group_heads = group_heads;
    s->g[i].d = d;
    s->n_g++;
    return i;
}

alrd_decomp *alrd_compress_stages_decomp(alrd_compress_stages *s, int group_heads, alrd_error *err) {
    const int i = grouping(s, group_heads, err);
    return i < 0 ? NULL : s->g[i].d;
}

static const int ALL_BITS[] = {2, 3, 4, 8, 16};

alrd_qerr *alrd_compress_stages_qerr(alrd_compress_stages *s, int group_heads, int hadamard, alrd_error *err) {
    const int i = grouping(s, group_heads, err);
    if (i < 0) return NULL;
    hadamard = hadamard != 0;
    if (!s->g[i].q[hadamard]) {
        double t0 = alrd_now();
        alrd_qerr_opts qo = {.group_size = s->so.group_size, .use_kivi = s->so.use_kivi, .hadamard = hadamard,
                             .seed = s->seed, .step = s->so.qerr_step, .bits = ALL_BITS, .n_bits = 5,
                             .progress = s->progress};
        if (alrd_qerr_new(&s->g[i].q[hadamard], s->c, s->g[i].d, &qo, err)) return NULL;
        s->t_qerr += alrd_now() - t0;
    }
    return s->g[i].q[hadamard];
}

/* ---- a configuration on the stages ----------------------------------------- */

/* rank_ratio's budget over the V modules alone (keys stay full width). */
static int value_only_ranks(const alrd_decomp *d, double ratio, int *v_rank, alrd_error *err) {
    const int L = d->c->m->cfg.n_layers;
    if (!d->probe_rank) return alrd_errf(err, "compress: rank search needs sensitivities");
    alrd_rank_module *rm = calloc(L, sizeof *rm);
    if (!rm) return alrd_errf(err, "compress: out of memory");
    for (int l = 0; l < L; l++) {
        rm[l].tail = d->ms[2 * l + 1].tail;
        rm[l].max_rank = d->gh;
        rm[l].weight = d->ms[2 * l + 1].sensitivity;
    }
    int rc = alrd_ranks_allocate(rm, L, ratio, 8, v_rank, err);
    free(rm);
    return rc;
}

/* A candidate with its per-layer configuration (the chosen one is made). */
typedef struct {
    alrd_joint_candidate c;
    int *k_rank, *v_rank, *k_bits, *v_bits; /* [n_layers] each, one block */
} cand_full;

static double config_bytes(const alrd_decomp *d, const alrd_joint_opts *jo, const int *k_rank, const int *v_rank,
                           const int *k_bits, const int *v_bits) {
    const int L = d->c->m->cfg.n_layers, ng = d->n_groups, full = d->c->m->cfg.n_kv_heads * d->c->m->cfg.head_dim;
    double b = 0;
    for (int l = 0; l < L; l++) {
        b += alrd_qerr_module_bytes(0, k_rank[l] ? ng * k_rank[l] : full, k_bits[l], jo->group_size, jo->residual,
                                    jo->use_kivi, jo->ctx);
        b += alrd_qerr_module_bytes(1, v_rank[l] ? ng * v_rank[l] : full, v_bits[l], jo->group_size, jo->residual,
                                    jo->use_kivi, jo->ctx);
    }
    return b;
}

/* Predictions of cf at the budget's context and at the probe's. */
static int cand_predict(const alrd_qerr *q, const alrd_decomp *d, const alrd_joint_opts *jo, double pf_k,
                        double pf_v, cand_full *cf, alrd_error *err) {
    double t, qq, tp, qp;
    if (alrd_qerr_predict(q, d, cf->k_rank, cf->v_rank, cf->k_bits, cf->v_bits, jo->frac_k, jo->frac_v, &t, &qq, err) ||
        alrd_qerr_predict(q, d, cf->k_rank, cf->v_rank, cf->k_bits, cf->v_bits, pf_k, pf_v, &tp, &qp, err))
        return -1;
    cf->c.pred = t + qq;
    cf->c.pred_trunc = t;
    cf->c.pred_probe = tp + qp;
    cf->c.bytes = config_bytes(d, jo, cf->k_rank, cf->v_rank, cf->k_bits, cf->v_bits);
    return 0;
}

static int same_config(const cand_full *a, const cand_full *b, int L) {
    return !memcmp(a->k_rank, b->k_rank, sizeof(int) * 4 * L);
}

/* Measures cf through the quantised cache on the probe. */
static int cand_measure(alrd_compress_stages *s, alrd_decomp *d, const alrd_compress_opts *o, cand_full *cf,
                        alrd_error *err) {
    const alrd_compress_joint *jt = o->joint;
    alrd_model *m = s->c->m;
    const int L = m->cfg.n_layers;
    float **fac = calloc(4 * (size_t)L, sizeof(float *));
    if (!fac) return alrd_errf(err, "compress: out of memory");
    int rc = alrd_decomp_factors(d, cf->k_rank, cf->v_rank, o->hadamard, o->seed, fac, fac + L, fac + 2 * L,
                                 fac + 3 * L, err);
    if (!rc) {
        alrd_lowrank lr = {.n_layers = L, .group_heads = d->group_heads, .k_rank = cf->k_rank, .v_rank = cf->v_rank,
                           .k_bits = cf->k_bits, .v_bits = cf->v_bits, .use_kivi = jt->use_kivi,
                           .group_size = jt->group_size, .residual_length = jt->residual, .hadamard = o->hadamard,
                           .whitened = d->whiten};
        alrd_model view;
        rc = alrd_model_lowrank_view(&view, m, &lr, fac, fac + L, fac + 2 * L, fac + 3 * L, err);
        if (!rc) {
            rc = alrd_calib_measure_cache(s->c, &view, &cf->c.meas, err);
            alrd_model_view_free(&view);
        }
    }
    for (int i = 0; i < 4 * L; i++) free(fac[i]);
    free(fac);
    return rc;
}

/* The measured losses against the predictions at the probe's context:
 * measured ~ a * truncation + b * quantisation, a, b >= 0 by least squares
 * over the candidates measured so far (the predictions are off by a
 * different factor for each part). Fewer than two points, or a degenerate
 * fit: one common factor. */
static void fit_correction(const cand_full *cs, const int *measured, int n, double *a, double *b) {
    double tt = 0, tq = 0, qq = 0, tm = 0, qm = 0, pp = 0, pm = 0;
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!measured[i]) continue;
        const double t = cs[i].c.pred_trunc, q = cs[i].c.pred_probe - cs[i].c.pred_trunc, m = cs[i].c.meas.kl;
        tt += t * t; tq += t * q; qq += q * q; tm += t * m; qm += q * m;
        pp += (t + q) * (t + q); pm += (t + q) * m;
        k++;
    }
    *a = *b = pp > 0 ? pm / pp : 1; /* one common factor */
    const double det = tt * qq - tq * tq;
    if (k < 2 || !(det > 1e-12 * tt * qq)) return;
    const double fa = (tm * qq - qm * tq) / det, fb = (qm * tt - tm * tq) / det;
    if (fa > 0 && fb > 0) { *a = fa; *b = fb; }
}

/* The closed loop (alrd_compress_joint, measure > 0): every candidate is
 * predicted; the allocation is measured first, then two allocations with the
 * quantisation loss scaled down (the predictions overstate it on SmolLM2 by
 * 3-5x), then, after each measurement, the unmeasured candidate with the
 * lowest prediction corrected by the fit of the measurements so far
 * (fit_correction; the allocation with the fitted trade-off joins the
 * candidates once there are two points). The measured best goes into r and jt. */
static int joint_select(alrd_compress_stages *s, alrd_decomp *d, const alrd_qerr *q, const alrd_compress_opts *o,
                        const alrd_joint_opts *jo, double pf_k, double pf_v, alrd_compress_result *r,
                        alrd_error *err) {
    alrd_compress_joint *jt = o->joint;
    const int L = d->c->m->cfg.n_layers, gh = d->gh;
    static const double MULT[] = {0.5, 0.25, 2}; /* the first two are measured up front */
    const int n_mult = sizeof MULT / sizeof *MULT, n_ranks = (gh - 1) / jo->step + 1; /* rank 0 and the grid below full */
    const int cap = 2 + n_mult + n_ranks * jo->n_bits * jo->n_bits;
    cand_full *cs = calloc((size_t)cap, sizeof *cs);
    int *store = malloc(sizeof(int) * 4 * (size_t)L * cap), *measured = calloc((size_t)cap, sizeof(int));
    int *ranks = malloc(sizeof(int) * 2 * (size_t)L);
    alrd_rank_module *rm = calloc(2 * (size_t)L, sizeof *rm);
    int n = 0, rc = 0;
    double t0 = alrd_now();
    if (!cs || !store || !measured || !ranks || !rm) {
        free(cs); free(store); free(measured); free(ranks); free(rm);
        return alrd_errf(err, "compress: out of memory");
    }
    for (int i = 0; i < cap; i++) {
        cs[i].k_rank = store + (size_t)4 * L * i;
        cs[i].v_rank = cs[i].k_rank + L;
        cs[i].k_bits = cs[i].k_rank + 2 * L;
        cs[i].v_bits = cs[i].k_rank + 3 * L;
    }
    for (int i = 0; i < 2 * L; i++) {
        rm[i].tail = d->ms[i].tail;
        rm[i].max_rank = gh;
        rm[i].weight = d->ms[i].sensitivity;
    }
    /* adds cs[n] (filled but for its prediction) unless an earlier candidate has its configuration */
#define ADD_CANDIDATE()                                                                   \
    do {                                                                                  \
        int dup_ = 0;                                                                     \
        for (int j_ = 0; j_ < n && !dup_; j_++) dup_ = same_config(&cs[j_], &cs[n], L);   \
        if (!dup_) {                                                                      \
            if (cand_predict(q, d, jo, pf_k, pf_v, &cs[n], err)) rc = -1;                 \
            else n++;                                                                     \
        }                                                                                 \
    } while (0)
    /* the allocation (already in r, jt) and its variants */
    for (int v = -1; v < n_mult && !rc; v++) {
        cand_full *cf = &cs[n];
        memset(&cf->c, 0, sizeof cf->c);
        cf->c.kind = v < 0 ? ALRD_CAND_JOINT : ALRD_CAND_VARIANT;
        cf->c.quant_mult = v < 0 ? 1 : MULT[v];
        if (v < 0) {
            memcpy(cf->k_rank, r->k_rank, sizeof(int) * L);
            memcpy(cf->v_rank, r->v_rank, sizeof(int) * L);
            memcpy(cf->k_bits, jt->k_bits, sizeof(int) * L);
            memcpy(cf->v_bits, jt->v_bits, sizeof(int) * L);
            snprintf(cf->c.label, sizeof cf->c.label, "joint");
        } else {
            alrd_joint_opts vo = *jo;
            vo.frac_k *= MULT[v];
            vo.frac_v *= MULT[v];
            if (alrd_qerr_allocate(q, d, &vo, cf->k_rank, cf->v_rank, cf->k_bits, cf->v_bits, NULL, NULL, err)) {
                rc = -1;
                break;
            }
            snprintf(cf->c.label, sizeof cf->c.label, "joint, quantisation loss x%g", MULT[v]);
        }
        ADD_CANDIDATE();
    }
    /* the uniform configurations: one rank ratio (ranks searched on the grid, as --rank-ratio
     * allocates them) or full width, one key and one value bit width in every layer */
    for (int ri = 0; ri < n_ranks && !rc; ri++) {
        const int k = ri * jo->step; /* 0: full width, not decomposed */
        if (k && alrd_ranks_allocate(rm, 2 * L, (double)k / gh, jo->step, ranks, err)) { rc = -1; break; }
        for (int kb = 0; kb < jo->n_bits && !rc; kb++)
            for (int vb = 0; vb < jo->n_bits && !rc; vb++) {
                cand_full *cf = &cs[n];
                memset(&cf->c, 0, sizeof cf->c);
                for (int l = 0; l < L; l++) {
                    cf->k_rank[l] = k ? ranks[2 * l] : 0;
                    cf->v_rank[l] = k ? ranks[2 * l + 1] : 0;
                    cf->k_bits[l] = jo->bits[kb];
                    cf->v_bits[l] = jo->bits[vb];
                }
                if (config_bytes(d, jo, cf->k_rank, cf->v_rank, cf->k_bits, cf->v_bits) > jo->budget_bytes * (1 + 1e-12))
                    continue;
                cf->c.kind = ALRD_CAND_UNIFORM;
                cf->c.rank = k;
                cf->c.k_bits = jo->bits[kb];
                cf->c.v_bits = jo->bits[vb];
                if (k) snprintf(cf->c.label, sizeof cf->c.label, "rank ratio %.3g, K %d-bit, V %d-bit", (double)k / gh,
                                cf->c.k_bits, cf->c.v_bits);
                else snprintf(cf->c.label, sizeof cf->c.label, "full width, K %d-bit, V %d-bit", cf->c.k_bits,
                              cf->c.v_bits);
                ADD_CANDIDATE();
            }
    }
    int want = jt->measure, best = -1, refit = 0;
    if (want > ALRD_JOINT_MAX_MEASURE) want = ALRD_JOINT_MAX_MEASURE;
    for (int step = 0; step < want && !rc; step++) {
        double a = 1, b = 1;
        fit_correction(cs, measured, n, &a, &b);
        if (!refit && step >= 3 && a > 0 && b > 0) { /* the allocation at the measured trade-off */
            refit = 1;
            cand_full *cf = &cs[n];
            memset(&cf->c, 0, sizeof cf->c);
            double lam = b / a < 1.0 / 64 ? 1.0 / 64 : b / a > 64 ? 64 : b / a;
            alrd_joint_opts vo = *jo;
            vo.frac_k *= lam;
            vo.frac_v *= lam;
            cf->c.kind = ALRD_CAND_VARIANT;
            cf->c.quant_mult = lam;
            snprintf(cf->c.label, sizeof cf->c.label, "joint, fitted quantisation loss x%.3g", lam);
            if (alrd_qerr_allocate(q, d, &vo, cf->k_rank, cf->v_rank, cf->k_bits, cf->v_bits, NULL, NULL, err)) rc = -1;
            else ADD_CANDIDATE();
            if (rc) break;
        }
        int pick = -1; /* up front: the allocation and the first variants; then the best corrected prediction */
        double pbest = INFINITY;
        for (int i = 0; i < n; i++) {
            if (measured[i]) continue;
            const int early = cs[i].c.kind == ALRD_CAND_JOINT ||
                              (cs[i].c.kind == ALRD_CAND_VARIANT && cs[i].c.quant_mult < 1 && step < 3 && !refit);
            const double p = cs[i].c.kind == ALRD_CAND_JOINT ? -10 : early ? -1 - cs[i].c.quant_mult
                           : a * cs[i].c.pred_trunc + b * (cs[i].c.pred_probe - cs[i].c.pred_trunc);
            if (p < pbest || (p == pbest && pick >= 0 && cs[i].c.bytes < cs[pick].c.bytes)) { pbest = p; pick = i; }
        }
        if (pick < 0) break;
        if (o->progress) fprintf(stderr, "alrd-compress: measuring %d/%d: %s\n", step + 1, want, cs[pick].c.label);
        if (cand_measure(s, d, o, &cs[pick], err)) { rc = -1; break; }
        measured[pick] = 1;
        jt->cand[jt->n_measured++] = cs[pick].c;
        const alrd_cache_measure *x = &cs[pick].c.meas;
        if (best < 0 || x->kl < cs[best].c.meas.kl || (x->kl == cs[best].c.meas.kl && cs[pick].c.bytes < cs[best].c.bytes)) {
            best = pick;
            jt->chosen = jt->n_measured - 1;
        }
    }
#undef ADD_CANDIDATE
    if (!rc && best >= 0) {
        jt->n_candidates = n;
        memcpy(r->k_rank, cs[best].k_rank, sizeof(int) * L);
        memcpy(r->v_rank, cs[best].v_rank, sizeof(int) * L);
        memcpy(jt->k_bits, cs[best].k_bits, sizeof(int) * L);
        memcpy(jt->v_bits, cs[best].v_bits, sizeof(int) * L);
    }
    jt->t_select = alrd_now() - t0;
    free(cs); free(store); free(measured); free(ranks); free(rm);
    return rc;
}

/* The joint rank + bits allocation of o into r and o->joint (closed loop
 * when o->joint->measure); qx gets each module's quantisation loss at the
 * budget's context (tail units). */
static int joint_ranks(alrd_compress_stages *s, alrd_decomp *d, const alrd_compress_opts *o,
                       alrd_compress_result *r, double *qx, alrd_error *err) {
    alrd_compress_joint *jt = o->joint;
    alrd_qerr *q = alrd_compress_stages_qerr(s, o->group_heads, o->hadamard, err);
    if (!q) return -1;
    alrd_compress_stages_seconds(s, NULL, NULL, NULL, &jt->t_qerr);
    const int R = jt->residual, kivi = jt->use_kivi;
    const alrd_joint_opts jo =
        alrd_joint_opts_for(jt->budget_bits, jt->ctx, jt->group_size, R, kivi, jt->step, ALL_BITS, 5);
    jt->chosen = -1;
    jt->n_candidates = jt->n_measured = 0;
    if (jt->measure < 0 || jt->measure > ALRD_JOINT_MAX_MEASURE)
        return alrd_errf(err, "compress: %d candidates to measure: expected 0..%d", jt->measure,
                         ALRD_JOINT_MAX_MEASURE);
    if (alrd_qerr_allocate(q, d, &jo, r->k_rank, r->v_rank, jt->k_bits, jt->v_bits, &jt->pred_trunc,
                           &jt->pred_quant, err))
        return -1;
    int n_seq, sl; /* the quantisation part at the probe's context */
    alrd_calib_probe_ids(s->c, &n_seq, &sl);
    const double pf_k = alrd_qerr_quantized_fraction(0, R, kivi, sl / 2 + 1, sl - 1),
                 pf_v = alrd_qerr_quantized_fraction(1, R, kivi, sl / 2 + 1, sl - 1);
    if (jt->measure && joint_select(s, d, q, o, &jo, pf_k, pf_v, r, err)) return -1;
    for (int i = 0; i < r->n_modules; i++) {
        const int l = i / 2, v = i % 2;
        const double qe = alrd_qerr_get(q, i, v ? r->v_rank[l] : r->k_rank[l], v ? jt->v_bits[l] : jt->k_bits[l]);
        qx[i] = (v ? jo.frac_v : jo.frac_k) * qe;
    }
    double probe_trunc;
    return alrd_qerr_predict(q, d, r->k_rank, r->v_rank, jt->k_bits, jt->v_bits, jo.frac_k, jo.frac_v,
                             &jt->pred_trunc, &jt->pred_quant, err) ||
                   alrd_qerr_predict(q, d, r->k_rank, r->v_rank, jt->k_bits, jt->v_bits, pf_k, pf_v, &probe_trunc,
                                     &jt->probe_pred_quant, err)
               ? -1
               : 0;
}

int alrd_compress_config(alrd_compress_stages *s, const alrd_compress_opts *o, alrd_compress_result *r,
                         alrd_error *err) {
    memset(r, 0, sizeof *r);
    if (o->joint && !s->whiten) return alrd_errf(err, "compress: the joint allocation needs whitening");
    if (o->value_only && (o->joint || o->k_rank))
        return alrd_errf(err, "compress: value-only ranks come from the rank ratio, not a budget or fixed ranks");
    alrd_compress_joint *jt = o->joint;
    double *qx = NULL; /* the joint allocation's quantisation loss per module at its ctx (tail units) */
    int rc = -1;
    alrd_decomp *d = alrd_compress_stages_decomp(s, o->group_heads, err);
    if (!d) goto done;
    const int L = d->c->m->cfg.n_layers, gh = d->gh;
    if (alrd_compress_result_alloc(r, d, s->calib_tokens, err)) goto done;
    r->stats_on_gpu = alrd_calib_on_gpu(s->c);
    r->svd_on_gpu = alrd_decomp_on_gpu(d);
    if (jt && (jt->step < 1 || jt->step > gh)) {
        alrd_errf(err, "compress: rank step %d: expected 1..%d", jt->step, gh);
        goto done;
    }
    if (jt) {
        if (!(qx = malloc(sizeof(double) * 2 * L))) {
            alrd_errf(err, "compress: out of memory");
            goto done;
        }
        if (joint_ranks(s, d, o, r, qx, err)) goto done;
    } else if (o->k_rank) {
        for (int l = 0; l < L; l++) {
            r->k_rank[l] = o->k_rank[l];
            r->v_rank[l] = o->v_rank[l];
            if (r->k_rank[l] < 0 || r->k_rank[l] > gh || r->v_rank[l] < 0 || r->v_rank[l] > gh) {
                alrd_errf(err, "compress: layer %d: rank outside [0, %d] (0: not decomposed)", l, gh);
                goto done;
            }
        }
    } else if (o->value_only) {
        if (value_only_ranks(d, o->rank_ratio, r->v_rank, err)) goto done;
    } else if (alrd_decomp_ranks(d, o->rank_ratio, o->uniform || !(o->rank_ratio < 1), r->k_rank, r->v_rank, err)) {
        goto done; /* ratio 1 keeps every rank full */
    }
    if (alrd_decomp_factors(d, r->k_rank, r->v_rank, o->hadamard, o->seed, r->kA, r->kB, r->vA, r->vB, err)) goto done;
    alrd_compress_report_modules(r, d, qx);
    rc = 0;
done:
    free(qx);
    if (rc) alrd_compress_result_free(r);
    return rc;
}

int alrd_compress_run(alrd_model *m, const int32_t *tokens, int n_samples, int sample_len,
                      const alrd_compress_opts *o, alrd_compress_result *r, alrd_error *err) {
    memset(r, 0, sizeof *r);
    if (o->joint && !o->whiten) return alrd_errf(err, "compress: the joint allocation needs whitening");
    const alrd_compress_joint *jt = o->joint;
    const int search = jt || o->value_only || (!o->k_rank && !o->uniform && o->rank_ratio < 1);
    /* probe at the rank the budget suggests (the joint allocation: half rank) */
    const alrd_compress_stages_opts so = {.probe_ratio = !search ? 0 : jt ? 1 : o->rank_ratio,
                                          .qerr_step = jt ? jt->step : 8,
                                          .group_size = jt ? jt->group_size : 0,
                                          .use_kivi = jt ? jt->use_kivi : 0};
    double t0 = alrd_now();
    alrd_compress_stages *s;
    if (alrd_compress_stages_new(&s, m, tokens, n_samples, sample_len, o, &so, err)) return -1;
    int rc = alrd_compress_config(s, o, r, err);
    if (!rc) {
        alrd_decomp *d = alrd_compress_stages_decomp(s, o->group_heads, err); /* made by the configuration */
        rc = !d || alrd_decomp_measure(d, r->k_rank, r->v_rank, &r->measured_kl, &r->compressed_ce, err) ? -1 : 0;
    }
    if (!rc) {
        r->base_ce = alrd_calib_base_ce(s->c);
        rc = alrd_compress_keep_probe(r, s->c, err);
    }
    if (!rc) {
        alrd_compress_stages_seconds(s, &r->t_stats, &r->t_svd, &r->t_sens, NULL);
        r->t_total = alrd_now() - t0;
    }
    alrd_compress_stages_free(s);
    if (rc) alrd_compress_result_free(r);
    return rc;
}

int alrd_compress_keep_probe(alrd_compress_result *r, const alrd_calib *c, alrd_error *err) {
    const int32_t *ids = alrd_calib_probe_ids(c, &r->probe_n_seq, &r->probe_len);
    const size_t n = (size_t)r->probe_n_seq * r->probe_len;
    free(r->probe_ids);
    r->probe_ids = malloc(sizeof(int32_t) * (n ? n : 1));
    if (!r->probe_ids) return alrd_errf(err, "compress: out of memory");
    if (n) memcpy(r->probe_ids, ids, sizeof(int32_t) * n);
    return 0;
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
    free(r->probe_ids);
    memset(r, 0, sizeof *r);
}

/* ---- added for calib/qerr and alrd-sweep ------------------------------- */

size_t alrd_calib_rows(const alrd_calib *c) { return c->rows; }

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

alrd_factors alrd_compress_factors(const alrd_compress_result *r) {
    alrd_factors f = {.n_layers = r->n_layers, .n_groups = r->n_groups, .gh = r->group_heads * r->head_dim,
                      .hidden = r->hidden, .k_rank = r->k_rank, .v_rank = r->v_rank, .kA = r->kA, .kB = r->kB,
                      .vA = r->vA, .vB = r->vB};
    return f;
}
