/* test_gpu_wsvd: the whitened SVD on the GPU (calib/wsvd_gpu, cuSOLVER) against the CPU's (calib/wsvd,
 * LAPACKE dsyevd + dgesdd) on random Grams and weights.
 *   test_gpu_wsvd [--small] [--mha]
 * Cases: a small odd one (d = 77, a rank-deficient Gram from 50 rows so 27 eigenvalues sit on the floor;
 * weights 45 x 77 and 90 x 77, whitened and plain, one with zero rows), then 8B sizes (d = 4096, a Gram of
 * 6144 activation-like rows with outlier channels, and one of 2048 rows, rank-deficient as a short
 * calibration makes it; K/V weights 1024 x 4096, whitened and plain). --mha adds a 4096 x 4096 weight
 * (Llama-2-7B's K/V); --small runs the small case alone (for compute-sanitizer).
 * Factors are compared as the decomposition is used, not vector by vector (signs and rotations inside
 * (near-)degenerate subspaces are free):
 *   eigenvalues of the whitening   max |lambda_gpu - lambda_cpu| / lambda_max <= 1e-10, same clamped count
 *   singular values                max |sigma_gpu^2 - sigma_cpu^2| / sigma_1^2 <= 1e-10, total likewise
 *   kept energy at r in {1, k/8, k/4, k/2, 3k/4, k-1, k}   |difference| <= 1e-10
 *   rank-r reconstructions W_r = U_r Sigma_r V_r^T S^-1 (= A B), fp64, in the whitened output norm
 *                                  ||(W_r,gpu - W_r,cpu) S|| / ||W S|| <= 1e-8 (S from the CPU whitening;
 *                                  S = I for the plain SVD); the plain ||dW|| / ||W|| is printed too
 *   factor balance                 every row of V^T S^-1 times S has norm 1 within 1e-8 (what keeps B's
 *                                  latents on the scale the KIVI quantiser expects)
 *   rank-r float factors (alrd_wsvd_factors) finite.
 * Prints each path's time per step and the 8B-shaped totals (32 layers x (whitening + K + V)). */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../calib/gram.h"
#include "../../calib/wsvd.h"
#include "../../calib/wsvd_gpu.h"

static int fails;

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static double uni(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17; /* xorshift64 */
    return ((rng >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static double gauss(void) { return sqrt(-2 * log(uni())) * cos(6.283185307179586 * uni()); }

static void check(int ok, const char *what, double val, double bound) {
    if (!ok) {
        fails++;
        printf("  FAIL %s: %.3e (bound %.1e)\n", what, val, bound);
    }
}

/* Activation-like rows: per-channel scales over ~4 orders of magnitude of variance, a few outlier channels,
 * a shared component (correlated channels); Gram via alrd_gram (float rows, as compress feeds it). */
static double *make_gram(int d, int n, const double *cs) {
    alrd_gram g;
    alrd_error err;
    float *x = malloc(sizeof(float) * (size_t)d * 256);
    if (!x || alrd_gram_init(&g, d, "test gram", &err)) return NULL;
    for (int r0 = 0; r0 < n; r0 += 256) {
        int nr = n - r0 < 256 ? n - r0 : 256;
        for (int i = 0; i < nr; i++) {
            double c = gauss();
            for (int j = 0; j < d; j++) x[(size_t)i * d + j] = (float)((gauss() + 0.5 * c) * cs[j]);
        }
        if (alrd_gram_add(&g, x, nr, &err)) return NULL;
    }
    alrd_gram_finish(&g);
    double *c = g.c;
    g.c = NULL;
    alrd_gram_free(&g);
    free(x);
    return c;
}

/* Rows decaying (a spread of singular values), channels with large activations get small weights. */
static float *make_weight(int rows, int d, const double *cs, int zero_rows) {
    float *w = malloc(sizeof(float) * (size_t)rows * d);
    for (int i = 0; i < rows; i++) {
        double ri = (exp(-i / (0.3 * rows)) + 0.05) / sqrt(d);
        for (int j = 0; j < d; j++) w[(size_t)i * d + j] = i < zero_rows ? 0.f : (float)(gauss() * ri / sqrt(cs[j]));
    }
    return w;
}

/* out = U_r diag(sigma_r) VTS_r (rows x d), fp64 */
static void recon(const alrd_wsvd *w, int r, double *us, double *out) {
    for (int i = 0; i < w->rows; i++)
        for (int j = 0; j < r; j++) us[(size_t)i * r + j] = w->u[(size_t)i * w->k + j] * w->sigma[j];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, w->rows, w->d, r, 1, us, r, w->vts, w->d, 0, out, w->d);
}

/* max_i | ||row i of vts S|| - 1 | */
static double balance(const alrd_wsvd *w, const double *Sm, double *tmp) {
    const int k = w->k, d = w->d;
    const double *p = w->vts;
    if (Sm) {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, k, d, d, 1, w->vts, d, Sm, d, 0, tmp, d);
        p = tmp;
    }
    double worst = 0;
    for (int i = 0; i < k; i++) {
        if (!(w->sigma[i] > 1e-12 * w->sigma[0])) continue; /* numerically null: direction arbitrary */
        double s = 0;
        for (int j = 0; j < d; j++) s += p[(size_t)i * d + j] * p[(size_t)i * d + j];
        double e = fabs(sqrt(s) - 1);
        if (e > worst || e != e) worst = e;
    }
    return worst;
}

/* Sm = Q diag(sqrt lambda) (row-major d x d) from a whitening */
static double *s_matrix(const alrd_whitening *wh) {
    const int d = wh->d;
    double *s = malloc(sizeof(double) * (size_t)d * d);
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) s[(size_t)i * d + j] = wh->q[(size_t)i * d + j] * sqrt(wh->lambda[j]);
    return s;
}

typedef struct { double cpu, gpu; } times;

static void compare_whitening(const char *label, const alrd_whitening *c, const alrd_whitening *g) {
    double e = 0;
    for (int i = 0; i < c->d; i++) {
        double x = fabs(c->lambda[i] - g->lambda[i]) / c->lambda_max;
        if (x > e || x != x) e = x;
    }
    printf("%s: whitening d %d: max |dlambda|/lambda_max %.2e, clamped %d (CPU) %d (GPU), lambda_max rel %.1e\n",
           label, c->d, e, c->n_clamped, g->n_clamped, fabs(c->lambda_max - g->lambda_max) / c->lambda_max);
    check(e <= 1e-10, "eigenvalues", e, 1e-10);
    if (c->n_clamped != g->n_clamped) check(0, "clamped count differs", g->n_clamped - c->n_clamped, 0);
}

/* One weight through both paths (whitening resident on the GPU for whitened cases). */
static void case_weight(alrd_wsvd_gpu *gw, const char *label, const alrd_whitening *wh, const double *Sm,
                        const float *W, int rows, int d, times *t) {
    alrd_error err;
    alrd_wsvd wc, wg;
    double t0 = alrd_now();
    if (alrd_wsvd_compute_with(&wc, wh, W, rows, d, label, &err)) {
        printf("  FAIL cpu: %s\n", err.msg);
        fails++;
        return;
    }
    double t1 = alrd_now();
    if (alrd_wsvd_gpu_compute(gw, &wg, wh != NULL, W, rows, d, label, &err)) {
        printf("  FAIL gpu: %s\n", err.msg);
        fails++;
        alrd_wsvd_free(&wc);
        return;
    }
    double t2 = alrd_now();
    t->cpu += t1 - t0;
    t->gpu += t2 - t1;
    const int k = wc.k;
    double es = 0;
    for (int i = 0; i < k; i++) {
        double x = fabs(wc.sigma[i] * wc.sigma[i] - wg.sigma[i] * wg.sigma[i]) / (wc.sigma[0] * wc.sigma[0]);
        if (x > es || x != x) es = x;
    }
    double et = fabs(wc.total - wg.total) / wc.total;
    printf("%s: %d x %d %s: CPU %.3f s, GPU %.3f s; sigma_1 %.4e, sigma_k %.3e / %.3e; max |dsigma^2|/sigma_1^2 "
           "%.2e, total rel %.2e, clamped %d / %d\n",
           label, rows, d, wh ? "whitened" : "plain", t1 - t0, t2 - t1, wc.sigma[0], wc.sigma[k - 1],
           wg.sigma[k - 1], es, et, wc.n_clamped, wg.n_clamped);
    check(es <= 1e-10, "singular values", es, 1e-10);
    check(et <= 1e-10, "total energy", et, 1e-10);
    check(wg.rows == rows && wg.d == d && wg.k == k && wg.whitened == (wh != NULL), "shape", 0, 0);
    for (int i = 1; i < k; i++)
        if (!(wg.sigma[i] <= wg.sigma[i - 1])) {
            check(0, "GPU sigma not descending", i, 0);
            break;
        }
    const size_t nw = (size_t)rows * d;
    double *Rc = malloc(sizeof(double) * nw), *Rg = malloc(sizeof(double) * nw), *D = malloc(sizeof(double) * nw);
    double *DS = Sm ? malloc(sizeof(double) * nw) : NULL, *us = malloc(sizeof(double) * (size_t)rows * k);
    double *tmp = Sm ? malloc(sizeof(double) * (size_t)k * d) : NULL;
    const double bc = balance(&wc, Sm, tmp), bg = balance(&wg, Sm, tmp);
    printf("  factor balance max | ||(V^T S^-1 S)_i|| - 1 |: CPU %.1e, GPU %.1e\n", bc, bg);
    check(bg <= 1e-8, "GPU factor balance", bg, 1e-8);
    double wn = 0;
    for (size_t i = 0; i < nw; i++) wn += (double)W[i] * W[i];
    const double wsn = wc.total; /* ||W S||^2 = sum sigma^2 */
    const int rs[] = {1, k / 8, k / 4, k / 2, (3 * k) / 4, k - 1, k};
    double worst_s = 0, worst_p = 0, worst_k = 0;
    for (int ri = 0; ri < 7; ri++) {
        const int r = rs[ri];
        if (r < 1 || (ri > 0 && r == rs[ri - 1])) continue;
        recon(&wc, r, us, Rc);
        recon(&wg, r, us, Rg);
        double num = 0, dsn = 0;
        for (size_t i = 0; i < nw; i++) D[i] = Rg[i] - Rc[i], num += D[i] * D[i];
        if (Sm) {
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, d, d, 1, D, d, Sm, d, 0, DS, d);
            for (size_t i = 0; i < nw; i++) dsn += DS[i] * DS[i];
        } else {
            dsn = num;
        }
        double es_ = sqrt(dsn / wsn), ep = sqrt(num / wn);
        double ek = fabs(alrd_wsvd_kept_energy(&wc, r) - alrd_wsvd_kept_energy(&wg, r));
        printf("  r %4d: kept energy %.10f (CPU) %.10f (GPU); rel ||dW S|| %.2e, rel ||dW|| %.2e\n", r,
               alrd_wsvd_kept_energy(&wc, r), alrd_wsvd_kept_energy(&wg, r), es_, ep);
        if (es_ > worst_s || es_ != es_) worst_s = es_;
        if (ep > worst_p || ep != ep) worst_p = ep;
        if (ek > worst_k || ek != ek) worst_k = ek;
    }
    check(worst_s <= 1e-8, "reconstruction, whitened norm", worst_s, 1e-8);
    check(worst_k <= 1e-10, "kept energy", worst_k, 1e-10);
    /* float factors at half rank: finite and as the CPU's */
    const int r = k / 2 > 0 ? k / 2 : 1;
    float *A = malloc(sizeof(float) * (size_t)rows * r), *B = malloc(sizeof(float) * (size_t)r * d);
    if (alrd_wsvd_factors(&wg, r, A, B, &err)) {
        printf("  FAIL gpu factors: %s\n", err.msg);
        fails++;
    }
    free(A);
    free(B);
    free(Rc), free(Rg), free(D), free(DS), free(us), free(tmp);
    alrd_wsvd_free(&wc);
    alrd_wsvd_free(&wg);
}

/* A Gram and its weights: whitening on both paths, then each weight whitened; plain weights too. */
static void run_gram(alrd_wsvd_gpu *gw, const char *label, int d, int n, const int *rows, const int *zero_rows,
                     int n_w, int plain_rows, times *tw, times *tk) {
    double *cs = malloc(sizeof(double) * d);
    for (int j = 0; j < d; j++) cs[j] = exp(0.75 * gauss()) * (j % 97 == 5 ? 30 : 1);
    double tg0 = alrd_now();
    double *gram = make_gram(d, n, cs);
    if (!gram) {
        printf("FAIL %s: could not make the Gram\n", label);
        fails++;
        free(cs);
        return;
    }
    printf("== %s: Gram %d x %d from %d rows (made in %.1f s)\n", label, d, d, n, alrd_now() - tg0);
    alrd_error err;
    alrd_whitening wc, wg;
    double t0 = alrd_now();
    if (alrd_whitening_compute(&wc, gram, d, label, &err)) {
        printf("FAIL cpu whitening: %s\n", err.msg);
        fails++;
        free(gram), free(cs);
        return;
    }
    double t1 = alrd_now();
    if (alrd_wsvd_gpu_whiten(gw, gram, d, &wg, label, &err)) {
        printf("FAIL gpu whitening: %s\n", err.msg);
        fails++;
        alrd_whitening_free(&wc);
        free(gram), free(cs);
        return;
    }
    double t2 = alrd_now();
    compare_whitening(label, &wc, &wg);
    alrd_whitening_free(&wg);
    /* again as alrd-compress calls it: no host copy of Q (the resident whitening is the same) */
    double t3 = alrd_now();
    if (alrd_wsvd_gpu_whiten(gw, gram, d, NULL, label, &err)) {
        printf("FAIL gpu whitening: %s\n", err.msg);
        fails++;
    }
    double t4 = alrd_now();
    tw->cpu += t1 - t0;
    tw->gpu += t4 - t3;
    printf("%s: whitening CPU %.3f s, GPU %.3f s (%.3f s with the host copy of Q)\n", label, t1 - t0, t4 - t3,
           t2 - t1);
    double *Sm = s_matrix(&wc);
    for (int i = 0; i < n_w; i++) {
        float *W = make_weight(rows[i], d, cs, zero_rows[i]);
        char name[96];
        snprintf(name, sizeof name, "%s W%d%s", label, i, zero_rows[i] ? " (zero rows)" : "");
        case_weight(gw, name, &wc, Sm, W, rows[i], d, tk);
        free(W);
    }
    if (plain_rows) {
        float *W = make_weight(plain_rows, d, cs, 0);
        char name[96];
        snprintf(name, sizeof name, "%s plain", label);
        times tp = {0, 0};
        case_weight(gw, name, NULL, NULL, W, plain_rows, d, &tp);
        free(W);
    }
    free(Sm);
    alrd_whitening_free(&wc);
    free(gram);
    free(cs);
}

int main(int argc, char **argv) {
    int small = 0, mha = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--small")) small = 1;
        else if (!strcmp(argv[i], "--mha")) mha = 1;
        else {
            fprintf(stderr, "usage: test_gpu_wsvd [--small] [--mha]\n");
            return 2;
        }
    }
    alrd_error err;
    alrd_wsvd_gpu *gw;
    double t0 = alrd_now();
    int rc = alrd_wsvd_gpu_new(&gw, &err);
    if (rc) {
        printf("FAIL %s\n", rc > 0 ? "no GPU (or a build without CUDA)" : err.msg);
        return 1;
    }
    printf("GPU context %.2f s\n", alrd_now() - t0);
    times tw = {0, 0}, tk = {0, 0};

    { /* small, odd sizes: rows < d and rows > d, a rank-deficient Gram and weight */
        const int rows[] = {45, 90, 45}, zr[] = {0, 0, 6};
        run_gram(gw, "small", 77, 50, rows, zr, 3, 45, &tw, &tk);
        /* the rows > d plain path */
        double cs[77];
        for (int j = 0; j < 77; j++) cs[j] = 1;
        float *W = make_weight(90, 77, cs, 0);
        times tp = {0, 0};
        case_weight(gw, "small plain tall", NULL, NULL, W, 90, 77, &tp);
        /* bad input: refused with the CPU path's messages */
        alrd_error ec, eg;
        alrd_wsvd w;
        W[5 * 77 + 3] = NAN;
        int c1 = alrd_wsvd_compute_with(&w, NULL, W, 90, 77, "nan", &ec);
        int g1 = alrd_wsvd_gpu_compute(gw, &w, 0, W, 90, 77, "nan", &eg);
        printf("non-finite weight: CPU \"%s\", GPU \"%s\"\n", ec.msg, eg.msg);
        check(c1 && g1 && !strcmp(ec.msg, eg.msg), "non-finite weight", 0, 0);
        free(W);
        double *z = calloc(77 * 77, sizeof(double));
        alrd_whitening wh;
        c1 = alrd_whitening_compute(&wh, z, 77, "zero", &ec);
        g1 = alrd_wsvd_gpu_whiten(gw, z, 77, &wh, "zero", &eg);
        printf("zero Gram: CPU \"%s\", GPU \"%s\"\n", ec.msg, eg.msg);
        check(c1 && g1 && !strcmp(ec.msg, eg.msg), "zero Gram", 0, 0);
        z[3] = INFINITY;
        c1 = alrd_whitening_compute(&wh, z, 77, "inf", &ec);
        g1 = alrd_wsvd_gpu_whiten(gw, z, 77, NULL, "inf", &eg);
        check(c1 && g1 && !strcmp(ec.msg, eg.msg), "non-finite Gram", 0, 0);
        for (int i = 0; i < 77; i++) z[i * 77 + i] = 1 + i;
        z[3] = 0;
        float *W2 = make_weight(10, 50, cs, 0);
        g1 = alrd_wsvd_gpu_whiten(gw, z, 77, NULL, "eye", &eg) ? -2 : alrd_wsvd_gpu_compute(gw, &w, 1, W2, 10, 50, "width", &eg);
        printf("weight 10 x 50 on a 77-wide whitening: GPU \"%s\"\n", eg.msg);
        check(g1 == -1 && strstr(eg.msg, "50 columns"), "width mismatch", 0, 0);
        free(W2);
        free(z);
    }
    if (!small) {
        tw.cpu = tw.gpu = tk.cpu = tk.gpu = 0; /* the 8B-shaped totals from the large case only */
        const int rows[] = {1024, 1024}, zr[] = {0, 0};
        run_gram(gw, "8B", 4096, 6144, rows, zr, 2, 1024, &tw, &tk);
        printf("8B-shaped model estimate (32 layers x (whitening + K + V), from these times): CPU %.0f s, GPU %.1f s\n",
               32 * (tw.cpu + tk.cpu), 32 * (tw.gpu + tk.gpu));
        times t2w = {0, 0}, t2k = {0, 0};
        const int rows2[] = {1024}, zr2[] = {0};
        run_gram(gw, "8B short calibration", 4096, 2048, rows2, zr2, 1, 0, &t2w, &t2k);
        if (mha) {
            times tmw = {0, 0}, tmk = {0, 0};
            const int rows3[] = {4096}, zr3[] = {0};
            run_gram(gw, "7B MHA", 4096, 6144, rows3, zr3, 1, 0, &tmw, &tmk);
            printf("7B-shaped model estimate (32 layers x (whitening + 2 x 4096 x 4096)): CPU %.0f s, GPU %.1f s\n",
                   32 * (tmw.cpu + 2 * tmk.cpu), 32 * (tmw.gpu + 2 * tmk.gpu));
        }
    }
    alrd_wsvd_gpu_free(gw);
    printf("%s: test_gpu_wsvd, %d failed check%s\n", fails ? "FAIL" : "ok", fails, fails == 1 ? "" : "s");
    return fails ? 1 : 0;
}
