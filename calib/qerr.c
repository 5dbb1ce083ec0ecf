/* qerr: quantisation loss tables on the probe tokens, and joint allocation. */
#include "qerr.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kernels/cpu_ops.h"
#include "../kernels/kivi.h"
#include "../runtime/kv_cache.h"
#include "ranks.h"

struct alrd_qerr {
    int n_modules, n_ranks, n_bits;
    int *ranks;          /* [n_ranks]: 0, then the grid */
    int *bits;           /* [n_bits] */
    double *tab;         /* [n_modules][n_ranks][n_bits], scaled */
    double scale, seconds;
};

void alrd_qerr_free(alrd_qerr *q) {
    if (!q) return;
    free(q->ranks);
    free(q->bits);
    free(q->tab);
    free(q);
}

double alrd_qerr_scale(const alrd_qerr *q) { return q->scale; }
double alrd_qerr_seconds(const alrd_qerr *q) { return q->seconds; }

double alrd_qerr_get(const alrd_qerr *q, int module, int rank, int bits) {
    if (module < 0 || module >= q->n_modules) return NAN;
    for (int j = 0; j < q->n_ranks; j++) {
        if (q->ranks[j] != rank) continue;
        for (int b = 0; b < q->n_bits; b++)
            if (q->bits[b] == bits) return q->tab[((size_t)module * q->n_ranks + j) * q->n_bits + b];
    }
    return NAN;
}

int alrd_qerr_latent_loss(const float *lat, int n_seq, int seq_len, int n_groups, int r, const float *A,
                          int rows, int G, int bits, int per_channel, double *loss, alrd_error *err) {
    *loss = 0;
    if (n_seq < 1 || seq_len < 1 || n_groups < 1 || r < 1 || G < 1 || (A && rows < 1))
        return alrd_errf(err, "qerr: bad latent shape (%d x %d tokens, %d x %d dims, G %d)", n_seq, seq_len,
                         n_groups, r, G);
    if (!alrd_kivi_bits_ok(bits)) return alrd_errf(err, "qerr: bits %d: expected 2, 3, 4, 8 or 16", bits);
    if (bits == 16) return 0; /* the CPU cache keeps unquantised rows bit for bit */
    const int D = n_groups * r;
    const size_t T = (size_t)n_seq * seq_len;
    /* one sequence at a time per channel (groups never straddle sequences),
     * all tokens at once per token */
    size_t blk_T = per_channel ? (size_t)seq_len : T;
    size_t words = per_channel ? (size_t)D * alrd_kivi_run_words(blk_T, bits) : blk_T * alrd_kivi_run_words(D, bits);
    size_t groups = per_channel ? (size_t)D * alrd_kivi_n_groups(blk_T, G) : blk_T * alrd_kivi_n_groups(D, G);
    uint32_t *codes = malloc(sizeof(uint32_t) * words);
    uint16_t *sc = malloc(sizeof(uint16_t) * groups), *zr = malloc(sizeof(uint16_t) * groups);
    float *e = malloc(sizeof(float) * T * D);
    float *y = A ? malloc(sizeof(float) * T * rows) : NULL;
    int rc = 0;
    if (!codes || !sc || !zr || !e || (A && !y)) rc = alrd_errf(err, "qerr: out of memory (%zu x %d latents)", T, D);
    for (size_t t0 = 0; t0 < T && !rc; t0 += blk_T) {
        const float *x = lat + t0 * D;
        float *o = e + t0 * D;
        rc = per_channel
                 ? (alrd_kivi_quantize_per_channel(x, (int)blk_T, D, G, bits, codes, sc, zr, err) ||
                    alrd_kivi_dequantize_per_channel(codes, sc, zr, (int)blk_T, D, G, bits, o, err))
                 : (alrd_kivi_quantize_per_token(x, (int)blk_T, D, G, bits, codes, sc, zr, err) ||
                    alrd_kivi_dequantize_per_token(codes, sc, zr, (int)blk_T, D, G, bits, o, err));
    }
    if (!rc) {
        for (size_t i = 0; i < T * D; i++) e[i] = lat[i] - e[i];
        double s = 0;
        if (!A) {
            for (size_t i = 0; i < T * D; i++) s += (double)e[i] * e[i];
        } else {
            for (int g = 0; g < n_groups; g++) { /* y = e_g A_g^T: the error lifted to the group's heads */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, rows, r, 1.0f, e + (size_t)g * r, D,
                            A + (size_t)g * rows * r, r, 0.0f, y, rows);
                for (size_t i = 0; i < T * rows; i++) s += (double)y[i] * y[i];
            }
        }
        *loss = s;
    }
    free(codes); free(sc); free(zr); free(e); free(y);
    return rc ? -1 : 0;
}

/* One grid rank's modules, shared by the workers of grid_rank: module i = 2l + v
 * takes the latents lat = X_l B_g^T of its factors and their loss at every
 * bits option. Each worker has its own latent buffer; the table cells it
 * writes are its modules' own, so the tables do not depend on the schedule. */
typedef struct {
    alrd_qerr *q;
    const alrd_qerr_opts *o;
    const float *X;             /* [L][P][H] RMSNorm(h) */
    float **kA, **kB, **vA, **vB;
    int L, P, H, ng, gh, r, j, n_seq, seq_len;
    atomic_int next;            /* the next module to take */
    atomic_int failed;          /* the first worker to fail sets it and writes err (read after the joins) */
    alrd_error *err;
} grid_job;

static void *grid_worker(void *arg) {
    grid_job *g = arg;
    const alrd_qerr_opts *o = g->o;
    const int D = g->ng * g->r;
    float *lat = malloc(sizeof(float) * (size_t)g->P * D);
    alrd_error e = {0};
    int rc = lat ? 0 : alrd_errf(&e, "qerr: out of memory (%d x %d latents)", g->P, D);
    for (int i; !rc && !atomic_load(&g->failed) && (i = atomic_fetch_add(&g->next, 1)) < 2 * g->L;) {
        const int l = i / 2, v = i % 2;
        const float *A = v ? g->vA[l] : g->kA[l], *B = v ? g->vB[l] : g->kB[l];
        for (int k = 0; k < g->ng; k++) /* lat[:, k*r:(k+1)*r] = X B_k^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->P, g->r, g->H, 1.0f, g->X + (size_t)l * g->P * g->H,
                        g->H, B + (size_t)k * g->r * g->H, g->H, 0.0f, lat + (size_t)k * g->r, D);
        for (int b = 0; b < o->n_bits && !rc; b++) {
            double loss;
            rc = alrd_qerr_latent_loss(lat, g->n_seq, g->seq_len, g->ng, g->r, A, g->gh, o->group_size, o->bits[b],
                                       !v && o->use_kivi, &loss, &e);
            g->q->tab[((size_t)i * g->q->n_ranks + 1 + g->j) * g->q->n_bits + b] = loss * g->q->scale;
        }
    }
    if (rc && !atomic_exchange(&g->failed, 1)) *g->err = e;
    free(lat);
    return NULL;
}

/* The workers for one grid rank: one per CPU, at most one per module. OpenBLAS
 * runs single-threaded meanwhile (each worker's products are small; the
 * modules are the parallelism), and gets its thread count back after. */
static int grid_rank(grid_job *g) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = ncpu < 1 ? 1 : ncpu > 64 ? 64 : (int)ncpu;
    if (nt > 2 * g->L) nt = 2 * g->L;
    atomic_init(&g->next, 0);
    atomic_init(&g->failed, 0);
    pthread_t th[64];
    int started = 0, blas = openblas_get_num_threads();
    if (nt > 1) openblas_set_num_threads(1);
    for (; started < nt - 1; started++)
        if (pthread_create(&th[started], NULL, grid_worker, g)) break; /* fewer workers: the rest still runs */
    grid_worker(g);
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
    if (nt > 1) openblas_set_num_threads(blas);
    return atomic_load(&g->failed) ? -1 : 0;
}

static void progress(int on, int done, int total) {
    if (on) alrd_progress("quantisation error", (size_t)done, (size_t)total);
}

int alrd_qerr_new(alrd_qerr **out, alrd_calib *c, const alrd_decomp *d, const alrd_qerr_opts *o, alrd_error *err) {
    *out = NULL;
    const alrd_model *m = alrd_calib_model(c);
    const alrd_config *cf = &m->cfg;
    const int L = cf->n_layers, H = cf->hidden, kvd = cf->n_kv_heads * cf->head_dim;
    if (d && alrd_decomp_calib(d) != c) return alrd_errf(err, "qerr: the decomposition belongs to another calibration");
    if (o->group_size < 1 || o->step < 1 || o->n_bits < 1 || !o->bits)
        return alrd_errf(err, "qerr: group size, rank step and bits options are required");
    for (int b = 0; b < o->n_bits; b++)
        if (!alrd_kivi_bits_ok(o->bits[b])) return alrd_errf(err, "qerr: bits %d: expected 2, 3, 4, 8 or 16", o->bits[b]);
    double t0 = alrd_now();
    int n_seq, seq_len;
    alrd_calib_probe_ids(c, &n_seq, &seq_len);
    const int P = n_seq * seq_len;
    const int gh = d ? alrd_decomp_full_rank(d) : 0, ng = d ? alrd_decomp_n_groups(d) : 1;
    const int n_grid = d ? (gh + o->step - 1) / o->step : 0;

    alrd_qerr *q = calloc(1, sizeof *q);
    if (!q) return alrd_errf(err, "qerr: out of memory");
    q->n_modules = 2 * L;
    q->n_ranks = 1 + n_grid;
    q->n_bits = o->n_bits;
    q->ranks = malloc(sizeof(int) * q->n_ranks);
    q->bits = malloc(sizeof(int) * o->n_bits);
    q->tab = calloc((size_t)q->n_modules * q->n_ranks * o->n_bits, sizeof(double));
    size_t rows = alrd_calib_rows(c);
    q->scale = rows ? (double)rows / P : 1.0;
    float *X = malloc(sizeof(float) * (size_t)L * P * H);       /* RMSNorm(h) of every layer */
    float *lat = malloc(sizeof(float) * (size_t)P * (kvd > ng * gh ? kvd : ng * gh));
    float **fac = calloc(4 * (size_t)L, sizeof(float *));      /* kA, kB, vA, vB of one grid rank */
    int *rk = malloc(sizeof(int) * L);
    int rc = 0;
    if (!q->ranks || !q->bits || !q->tab || !X || !lat || !fac || !rk) rc = alrd_errf(err, "qerr: out of memory");
    if (!rc) {
        memcpy(q->bits, o->bits, sizeof(int) * o->n_bits);
        q->ranks[0] = 0;
        for (int j = 0; j < n_grid; j++) q->ranks[1 + j] = (j + 1) * o->step < gh ? (j + 1) * o->step : gh;
        for (int l = 0; l < L; l++) {
            int np;
            const float *h = alrd_calib_probe_inputs(c, l, &np);
            alrd_rmsnorm(X + (size_t)l * P * H, h, m->layers[l].attn_norm, P, H, cf->rms_eps);
        }
    }
    const int total = q->n_ranks;
    /* rank 0: the module not decomposed, l = W x + b */
    for (int i = 0; i < 2 * L && !rc; i++) { /* layer by layer: a lazy model materializes each once */
        alrd_layer view;
        const alrd_layer *ly = alrd_model_layer(m, i / 2, &view, err);
        if (!ly) { rc = -1; break; }
        const float *W = i % 2 ? ly->wv : ly->wk, *bias = i % 2 ? ly->bv : ly->bk;
        if (!W) { rc = alrd_errf(err, "qerr: layer %d: the model has no full %s projection", i / 2, i % 2 ? "v" : "k"); break; }
        alrd_matmul_wt(lat, X + (size_t)(i / 2) * P * H, W, P, kvd, H, 0);
        if (bias)
            for (int t = 0; t < P; t++) alrd_add(lat + (size_t)t * kvd, bias, kvd);
        for (int b = 0; b < o->n_bits && !rc; b++) {
            double s;
            rc = alrd_qerr_latent_loss(lat, n_seq, seq_len, 1, kvd, NULL, kvd, o->group_size, o->bits[b],
                                       i % 2 == 0 && o->use_kivi, &s, err);
            q->tab[((size_t)i * q->n_ranks) * q->n_bits + b] = s * q->scale;
        }
    }
    progress(o->progress, 1, total);
    /* the grid: factors exactly as a file at that rank would get them */
    for (int j = 0; j < n_grid && !rc; j++) {
        int r = q->ranks[1 + j];
        for (int l = 0; l < L; l++) rk[l] = r;
        grid_job g = {.q = q, .o = o, .X = X, .kA = fac, .kB = fac + L, .vA = fac + 2 * L, .vB = fac + 3 * L,
                      .L = L, .P = P, .H = H, .ng = ng, .gh = gh, .r = r, .j = j, .n_seq = n_seq, .seq_len = seq_len,
                      .err = err};
        rc = alrd_decomp_factors(d, rk, rk, o->hadamard, o->seed, g.kA, g.kB, g.vA, g.vB, err);
        if (!rc) rc = grid_rank(&g);
        for (int k = 0; k < 4 * L; k++) { free(fac[k]); fac[k] = NULL; }
        progress(o->progress, j + 2, total);
    }
    free(X); free(lat); free(fac); free(rk);
    if (rc) { alrd_qerr_free(q); return -1; }
    q->seconds = alrd_now() - t0;
    *out = q;
    return 0;
}

double alrd_qerr_quantized_fraction(int is_v, int R, int use_kivi, int n0, int n1) {
    if (n0 < 1) n0 = 1;
    if (n1 < n0) return 0;
    double s = 0;
    for (int n = n0; n <= n1; n++) {
        int qn = R <= 0 ? n : (!is_v && use_kivi) ? n - n % R : (n > R ? n - R : 0);
        s += (double)qn / n;
    }
    return s / (n1 - n0 + 1);
}

double alrd_qerr_module_bytes(int is_v, int width, int bits, int G, int R, int use_kivi, int ctx) {
    if (ctx < 1) return -1;
    /* the other side at width 1, 16 bits costs exactly 2 bytes per token */
    size_t b = is_v ? alrd_kv_cache_layer_bytes(1, width, 16, bits, G, R, use_kivi, ctx)
                    : alrd_kv_cache_layer_bytes(width, 1, bits, 16, G, R, use_kivi, ctx);
    if (b == 0) return -1;
    return (double)(b - 2 * (size_t)ctx) / ctx;
}

int alrd_qerr_predict(const alrd_qerr *q, const alrd_decomp *d, const int *k_rank, const int *v_rank,
                      const int *k_bits, const int *v_bits, double frac_k, double frac_v, double *trunc,
                      double *quant, alrd_error *err) {
    double pt = 0, pq = 0;
    for (int i = 0; i < q->n_modules; i++) {
        const int l = i / 2, v = i % 2, rk = v ? v_rank[l] : k_rank[l], b = v ? v_bits[l] : k_bits[l];
        const double w = alrd_decomp_sensitivity(d, i), qe = alrd_qerr_get(q, i, rk, b);
        if (isnan(qe)) return alrd_errf(err, "qerr: no quantisation error for module %d at rank %d, %d bits", i, rk, b);
        if (rk) pt += w * alrd_decomp_tail(d, i)[rk];
        pq += w * (v ? frac_v : frac_k) * qe;
    }
    *trunc = pt;
    *quant = pq;
    return 0;
}

/* ---- joint allocation -------------------------------------------------- */

typedef struct {
    const alrd_qerr *q;
    const alrd_joint_opts *o;
    int n_groups;
} joint_ctx;

static double joint_qerr(void *p, int m, int r, int b) {
    const joint_ctx *j = p;
    return (m % 2 ? j->o->frac_v : j->o->frac_k) * alrd_qerr_get(j->q, m, r, b);
}

static double joint_bytes(void *p, int m, int r, int b) {
    const joint_ctx *j = p;
    return alrd_qerr_module_bytes(m % 2, j->n_groups * r, b, j->o->group_size, j->o->residual, j->o->use_kivi,
                                  j->o->ctx);
}

alrd_joint_opts alrd_joint_opts_for(double budget_bits, int ctx, int G, int R, int use_kivi, int step,
                                    const int *bits, int n_bits) {
    alrd_joint_opts o = {.budget_bytes = budget_bits / 8, .ctx = ctx, .group_size = G, .residual = R,
                         .use_kivi = use_kivi, .step = step, .bits = bits, .n_bits = n_bits,
                         .frac_k = alrd_qerr_quantized_fraction(0, R, use_kivi, 1, ctx),
                         .frac_v = alrd_qerr_quantized_fraction(1, R, use_kivi, 1, ctx)};
    return o;
}

int alrd_qerr_allocate(const alrd_qerr *q, const alrd_decomp *d, const alrd_joint_opts *o, int *k_rank, int *v_rank,
                       int *k_bits, int *v_bits, double *pred_trunc, double *pred_quant, alrd_error *err) {
    const int n = q->n_modules, L = n / 2;
    if (!alrd_decomp_probe_rank(d)) return alrd_errf(err, "qerr: joint allocation needs measured sensitivities");
    alrd_rank_module *rm = calloc(n, sizeof *rm);
    int *ranks = malloc(sizeof(int) * n), *bits = malloc(sizeof(int) * n);
    int rc = 0;
    if (!rm || !ranks || !bits) rc = alrd_errf(err, "qerr: out of memory");
    for (int i = 0; i < n && !rc; i++) {
        rm[i].tail = alrd_decomp_tail(d, i);
        rm[i].max_rank = alrd_decomp_full_rank(d);
        rm[i].weight = alrd_decomp_sensitivity(d, i);
    }
    joint_ctx jc = {q, o, alrd_decomp_n_groups(d)};
    if (!rc)
        rc = alrd_ranks_allocate_bits(rm, n, o->step, o->bits, o->n_bits, o->budget_bytes, joint_qerr, joint_bytes, &jc,
                                      ranks, bits, err);
    double pt = 0, pq = 0;
    for (int i = 0; i < n && !rc; i++) {
        pt += rm[i].weight * rm[i].tail[ranks[i]];
        pq += rm[i].weight * joint_qerr(&jc, i, ranks[i], bits[i]);
    }
    for (int l = 0; l < L && !rc; l++) {
        k_rank[l] = ranks[2 * l];
        v_rank[l] = ranks[2 * l + 1];
        k_bits[l] = bits[2 * l];
        v_bits[l] = bits[2 * l + 1];
    }
    if (!rc && pred_trunc) *pred_trunc = pt;
    if (!rc && pred_quant) *pred_quant = pq;
    free(rm); free(ranks); free(bits);
    return rc ? -1 : 0;
}
