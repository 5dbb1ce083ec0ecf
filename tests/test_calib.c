/* test_calib: Gram accumulation, whitened SVD, rank allocation, Hadamard. */
#include "testutil.h"

#include <math.h>

#include "../calib/gram.h"
#include "../calib/wsvd.h"
#include "../calib/wsvd_gpu.h"
#include "../calib/ranks.h"
#include "../calib/hadamard.h"

/* Deterministic test data: xorshift64* + Box-Muller. */
typedef struct { uint64_t s; } rng_t;
static uint64_t rng_u64(rng_t *r) {
    r->s ^= r->s >> 12; r->s ^= r->s << 25; r->s ^= r->s >> 27;
    return r->s * 2685821657736338717ULL;
}
static double rng_unif(rng_t *r) { return ((rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static double rng_gauss(rng_t *r) {
    return sqrt(-2 * log(rng_unif(r))) * cos(6.283185307179586 * rng_unif(r));
}
static float *rand_mat(rng_t *r, int rows, int cols, const double *col_scale) {
    float *m = malloc(sizeof(float) * rows * cols);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            m[i * cols + j] = (float)(rng_gauss(r) * (col_scale ? col_scale[j] : 1.0));
    return m;
}

/* ---------------------------------------------------------------- gram */

static void naive_gram(const float *x, int n, int d, double *c) {
    memset(c, 0, sizeof(double) * d * d);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) c[i * d + j] += (double)x[t * d + i] * x[t * d + j];
}

static void test_gram_matches_naive(void **state) {
    (void)state;
    rng_t r = {42};
    const int d = 17, n = 700; /* chunks cross the 256-row conversion block */
    float *x = rand_mat(&r, n, d, NULL);
    alrd_gram g;
    alrd_error err = {{0}};
    assert_int_equal(alrd_gram_init(&g, d, "layer0", &err), 0);
    assert_int_equal(alrd_gram_add(&g, x, 3, &err), 0);
    assert_int_equal(alrd_gram_add(&g, x + 3 * d, 0, &err), 0);
    assert_int_equal(alrd_gram_add(&g, x + 3 * d, 300, &err), 0);
    assert_int_equal(alrd_gram_add(&g, x + 303 * d, n - 303, &err), 0);
    alrd_gram_finish(&g);
    assert_int_equal(g.n_rows, n);
    double *c = malloc(sizeof(double) * d * d);
    naive_gram(x, n, d, c);
    for (int i = 0; i < d * d; i++) assert_true(fabs(g.c[i] - c[i]) <= 1e-9 * (1 + fabs(c[i])));
    /* Exactly symmetric after finish. */
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) assert_true(g.c[i * d + j] == g.c[j * d + i]);

    /* Merge of two halves equals the whole. */
    alrd_gram a, b;
    assert_int_equal(alrd_gram_init(&a, d, "a", &err), 0);
    assert_int_equal(alrd_gram_init(&b, d, "b", &err), 0);
    assert_int_equal(alrd_gram_add(&a, x, 350, &err), 0);
    assert_int_equal(alrd_gram_add(&b, x + 350 * d, n - 350, &err), 0);
    assert_int_equal(alrd_gram_merge(&a, &b, &err), 0);
    alrd_gram_finish(&a);
    assert_int_equal(a.n_rows, n);
    for (int i = 0; i < d * d; i++) assert_true(fabs(a.c[i] - c[i]) <= 1e-9 * (1 + fabs(c[i])));
    alrd_gram wrong;
    assert_int_equal(alrd_gram_init(&wrong, d + 1, "w", &err), 0);
    assert_int_equal(alrd_gram_merge(&a, &wrong, &err), -1);
    alrd_gram_free(&wrong);
    alrd_gram_free(&a);
    alrd_gram_free(&b);
    alrd_gram_free(&g);
    free(c);
    free(x);
}

static void test_gram_rejects_nonfinite(void **state) {
    (void)state;
    const int d = 4;
    float x[3 * 4] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    alrd_gram g;
    alrd_error err = {{0}};
    assert_int_equal(alrd_gram_init(&g, d, "model.layers.7 attn input", &err), 0);
    assert_int_equal(alrd_gram_add(&g, x, 1, &err), 0);
    x[2 * 4 + 1] = NAN;
    assert_int_equal(alrd_gram_add(&g, x, 3, &err), -1);
    assert_non_null(strstr(err.msg, "model.layers.7 attn input"));
    assert_non_null(strstr(err.msg, "NaN"));
    assert_non_null(strstr(err.msg, "row 2 column 1"));
    x[2 * 4 + 1] = INFINITY;
    assert_int_equal(alrd_gram_add(&g, x, 3, &err), -1);
    assert_non_null(strstr(err.msg, "Inf"));
    /* Rejected chunks leave the statistics as they were (row 0 only). */
    alrd_gram_finish(&g);
    assert_int_equal(g.n_rows, 1);
    assert_true(g.c[0] == 1.0 && g.c[1] == 2.0 && g.c[3 * 4 + 3] == 16.0 && g.c[2 * 4 + 1] == 6.0);
    alrd_gram_free(&g);
    assert_int_equal(alrd_gram_init(&g, 0, "z", &err), -1);
}

/* ---------------------------------------------------------------- wsvd */

/* ||(W - A B) X^T||_F^2 over calibration rows X (n x d), in double. */
static double output_loss(const float *W, const float *A, const float *B, int rows, int d, int r,
                          const float *X, int n) {
    double *E = calloc((size_t)rows * d, sizeof(double));
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < d; j++) {
            double ab = 0;
            for (int t = 0; t < r; t++) ab += (double)A[i * r + t] * B[t * d + j];
            E[i * d + j] = W[i * d + j] - ab;
        }
    double loss = 0;
    for (int s = 0; s < n; s++)
        for (int i = 0; i < rows; i++) {
            double y = 0;
            for (int j = 0; j < d; j++) y += E[i * d + j] * X[s * d + j];
            loss += y * y;
        }
    free(E);
    return loss;
}

static void make_gram(const float *X, int n, int d, alrd_gram *g) {
    alrd_error err = {{0}};
    assert_int_equal(alrd_gram_init(g, d, "test", &err), 0);
    assert_int_equal(alrd_gram_add(g, X, n, &err), 0);
    alrd_gram_finish(g);
}

static void check_full_rank(const alrd_wsvd *w, const float *W) {
    alrd_error err = {{0}};
    int rows = w->rows, d = w->d, k = w->k;
    float *A = malloc(sizeof(float) * rows * k), *B = malloc(sizeof(float) * k * d);
    assert_int_equal(alrd_wsvd_factors(w, k, A, B, &err), 0);
    double num = 0, den = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < d; j++) {
            double ab = 0;
            for (int t = 0; t < k; t++) ab += (double)A[i * k + t] * B[t * d + j];
            num += (ab - W[i * d + j]) * (ab - W[i * d + j]);
            den += (double)W[i * d + j] * W[i * d + j];
        }
    assert_true(sqrt(num / den) < 1e-5);
    free(A);
    free(B);
}

static void test_wsvd_full_rank_reconstructs(void **state) {
    (void)state;
    rng_t r = {7};
    alrd_error err = {{0}};
    const int shapes[][2] = {{24, 40}, {48, 32}, {40, 40}};
    for (int s = 0; s < 3; s++) {
        int rows = shapes[s][0], d = shapes[s][1], n = 3 * d;
        double *scale = malloc(sizeof(double) * d);
        for (int j = 0; j < d; j++) scale[j] = exp(-0.1 * j);
        float *W = rand_mat(&r, rows, d, NULL), *X = rand_mat(&r, n, d, scale);
        alrd_gram g;
        make_gram(X, n, d, &g);
        for (int whiten = 0; whiten <= 1; whiten++) {
            alrd_wsvd w;
            assert_int_equal(alrd_wsvd_compute(&w, g.c, W, rows, d, whiten, "t", &err), 0);
            assert_int_equal(w.k, rows < d ? rows : d);
            for (int i = 1; i < w.k; i++) assert_true(w.sigma[i] <= w.sigma[i - 1]);
            assert_true(alrd_wsvd_rel_error(&w, w.k) == 0.0);
            assert_true(fabs(alrd_wsvd_rel_error(&w, 0) - 1.0) < 1e-12);
            check_full_rank(&w, W);
            alrd_wsvd_free(&w);
        }
        alrd_gram_free(&g);
        free(W); free(X); free(scale);
    }
}

/* Known spectra: plain SVD of a diagonal W is its |diagonal|; whitened with
 * C = diag(c) it is |w_i| sqrt(c_i). */
static void test_wsvd_known_sigma(void **state) {
    (void)state;
    alrd_error err = {{0}};
    const int d = 4;
    float W[3 * 4] = {3, 0, 0, 0, 0, -1, 0, 0, 0, 0, 2, 0};
    double C[16] = {0};
    C[0] = 1; C[5] = 16; C[10] = 4; C[15] = 9;
    alrd_wsvd w;
    assert_int_equal(alrd_wsvd_compute(&w, NULL, W, 3, d, 0, "t", &err), 0);
    assert_true(fabs(w.sigma[0] - 3) < 1e-12 && fabs(w.sigma[1] - 2) < 1e-12 &&
                fabs(w.sigma[2] - 1) < 1e-12);
    assert_true(fabs(w.total - 14) < 1e-12);
    assert_true(fabs(alrd_wsvd_tail(&w, 1) - 5) < 1e-12);
    assert_true(fabs(alrd_wsvd_kept_energy(&w, 1) - 9.0 / 14) < 1e-12);
    assert_true(fabs(alrd_wsvd_rel_error(&w, 2) - sqrt(1.0 / 14)) < 1e-12);
    alrd_wsvd_free(&w);
    assert_int_equal(alrd_wsvd_compute(&w, C, W, 3, d, 1, "t", &err), 0);
    /* |3|*1, |-1|*4, |2|*2 -> 4, 4, 3 */
    assert_true(fabs(w.sigma[0] - 4) < 1e-10 && fabs(w.sigma[1] - 4) < 1e-10 &&
                fabs(w.sigma[2] - 3) < 1e-10);
    assert_int_equal(w.n_clamped, 0);
    float A[3], B[4];
    assert_int_equal(alrd_wsvd_factors(&w, 1, A, B, &err), 0);
    assert_int_equal(alrd_wsvd_factors(&w, 4, A, B, &err), -1);
    assert_non_null(strstr(err.msg, "t: wsvd: rank 4 outside 0..3"));
    alrd_wsvd_free(&w);
}

/* The defining property: output loss over the calibration rows of a rank-r
 * truncation is sum_{i>=r} sigma_i^2, for n > d and for n < d (rank-deficient
 * Gram, eigenvalues floored). */
static void check_loss_equals_tail(int rows, int d, int n, uint64_t seed) {
    rng_t r = {seed};
    alrd_error err = {{0}};
    double *scale = malloc(sizeof(double) * d);
    for (int j = 0; j < d; j++) scale[j] = 0.2 + 3.0 * (j % 5);
    float *W = rand_mat(&r, rows, d, NULL), *X = rand_mat(&r, n, d, scale);
    alrd_gram g;
    make_gram(X, n, d, &g);
    alrd_wsvd w, p;
    assert_int_equal(alrd_wsvd_compute(&w, g.c, W, rows, d, 1, "t", &err), 0);
    assert_int_equal(alrd_wsvd_compute(&p, NULL, W, rows, d, 0, "t", &err), 0);
    if (n < d) assert_true(w.n_clamped >= d - n);
    double total = output_loss(W, NULL, NULL, rows, d, 0, X, n);
    /* Whitened energy is the output energy ||W X||^2. */
    assert_true(fabs(w.total - total) <= 1e-6 * total);
    float *A = malloc(sizeof(float) * rows * w.k), *B = malloc(sizeof(float) * w.k * d);
    int strictly_better = 0;
    for (int rk = 0; rk <= w.k; rk += (rk < 4 ? 1 : 5)) {
        assert_int_equal(alrd_wsvd_factors(&w, rk, A, B, &err), 0);
        double lw = output_loss(W, A, B, rows, d, rk, X, n);
        assert_true(fabs(lw - alrd_wsvd_tail(&w, rk)) <= 1e-5 * total);
        assert_int_equal(alrd_wsvd_factors(&p, rk, A, B, &err), 0);
        double lp = output_loss(W, A, B, rows, d, rk, X, n);
        assert_true(lw <= lp + 1e-6 * total); /* whitened is optimal in output space */
        if (lw < 0.9 * lp) strictly_better = 1;
    }
    assert_true(strictly_better);
    alrd_wsvd_free(&w);
    alrd_wsvd_free(&p);
    alrd_gram_free(&g);
    free(A); free(B); free(W); free(X); free(scale);
}

static void test_wsvd_loss_is_tail_full_gram(void **state) {
    (void)state;
    check_loss_equals_tail(16, 24, 100, 11);
    check_loss_equals_tail(30, 20, 64, 12);
}

static void test_wsvd_loss_is_tail_rank_deficient(void **state) {
    (void)state;
    check_loss_equals_tail(16, 24, 10, 13);
    check_loss_equals_tail(24, 32, 20, 14);
}

/* One token repeated: C = n x x^T has rank 1. Factors stay finite at every
 * rank, full rank still reconstructs W, and rank 1 already captures all of
 * the output (W x lies in one direction). */
static void test_wsvd_rank1_gram(void **state) {
    (void)state;
    rng_t r = {99};
    alrd_error err = {{0}};
    const int rows = 12, d = 20, n = 50;
    float *W = rand_mat(&r, rows, d, NULL), *x = rand_mat(&r, 1, d, NULL);
    float *X = malloc(sizeof(float) * n * d);
    for (int t = 0; t < n; t++) memcpy(X + t * d, x, sizeof(float) * d);
    alrd_gram g;
    make_gram(X, n, d, &g);
    alrd_wsvd w;
    assert_int_equal(alrd_wsvd_compute(&w, g.c, W, rows, d, 1, "t", &err), 0);
    assert_true(w.n_clamped >= d - 1);
    float *A = malloc(sizeof(float) * rows * w.k), *B = malloc(sizeof(float) * w.k * d);
    for (int rk = 0; rk <= w.k; rk++) {
        assert_int_equal(alrd_wsvd_factors(&w, rk, A, B, &err), 0);
        for (int i = 0; i < rows * rk; i++) assert_true(isfinite(A[i]));
        for (int i = 0; i < rk * d; i++) assert_true(isfinite(B[i]));
    }
    check_full_rank(&w, W);
    double total = output_loss(W, NULL, NULL, rows, d, 0, X, n);
    assert_int_equal(alrd_wsvd_factors(&w, 1, A, B, &err), 0);
    assert_true(output_loss(W, A, B, rows, d, 1, X, n) <= 1e-6 * total);
    assert_true(alrd_wsvd_kept_energy(&w, 1) > 1 - 1e-6);
    alrd_wsvd_free(&w);
    alrd_gram_free(&g);
    free(A); free(B); free(W); free(X); free(x);
}

/* The GPU path (calib/wsvd_gpu.h): without a GPU (a build without CUDA, or a machine without a device) it
 * says so with 1 and alrd_decomp_new stays on the CPU; with one (make test on the device) it must be the CPU's
 * decomposition: the same sigma, and factors whose output loss is the tail (tests/gpu/test_gpu_wsvd has the
 * large sizes). Shapes: rows < d and rows > d, a rank-deficient Gram, whitened and plain. */
static void test_wsvd_gpu_when_present(void **state) {
    (void)state;
    alrd_error err = {{0}};
    alrd_wsvd_gpu *gw = NULL;
    const int rc = alrd_wsvd_gpu_new(&gw, &err);
    if (rc == 1) {
        assert_null(gw);
        return;
    }
    assert_int_equal(rc, 0);
    rng_t r = {2024};
    const int shapes[][3] = {{16, 24, 100}, {30, 20, 64}, {24, 32, 10}};
    for (int s = 0; s < 3; s++) {
        const int rows = shapes[s][0], d = shapes[s][1], n = shapes[s][2];
        double *scale = malloc(sizeof(double) * d);
        for (int j = 0; j < d; j++) scale[j] = exp(-0.15 * j);
        float *W = rand_mat(&r, rows, d, NULL), *X = rand_mat(&r, n, d, scale);
        alrd_gram g;
        make_gram(X, n, d, &g);
        assert_int_equal(alrd_wsvd_gpu_whiten(gw, g.c, d, NULL, "t", &err), 0);
        for (int whiten = 0; whiten <= 1; whiten++) {
            alrd_wsvd wc, wg;
            assert_int_equal(alrd_wsvd_compute(&wc, g.c, W, rows, d, whiten, "t", &err), 0);
            assert_int_equal(alrd_wsvd_gpu_compute(gw, &wg, whiten, W, rows, d, "t", &err), 0);
            assert_int_equal(wg.k, wc.k);
            assert_int_equal(wg.n_clamped, wc.n_clamped);
            for (int i = 0; i < wc.k; i++)
                assert_true(fabs(wg.sigma[i] * wg.sigma[i] - wc.sigma[i] * wc.sigma[i]) <= 1e-10 * wc.total);
            check_full_rank(&wg, W);
            float *A = malloc(sizeof(float) * rows * wg.k), *B = malloc(sizeof(float) * wg.k * d);
            for (int rk = 1; rk <= wg.k && whiten; rk += 3) {
                assert_int_equal(alrd_wsvd_factors(&wg, rk, A, B, &err), 0);
                double lw = output_loss(W, A, B, rows, d, rk, X, n);
                assert_true(fabs(lw - alrd_wsvd_tail(&wc, rk)) <= 1e-5 * wc.total);
            }
            free(A); free(B);
            alrd_wsvd_free(&wc);
            alrd_wsvd_free(&wg);
        }
        alrd_gram_free(&g);
        free(W); free(X); free(scale);
    }
    alrd_wsvd_gpu_free(gw);
}

static void test_wsvd_errors(void **state) {
    (void)state;
    alrd_error err = {{0}};
    const int d = 3;
    double C[9] = {0};
    float W[6] = {1, 2, 3, 4, 5, 6};
    alrd_wsvd w;
    assert_int_equal(alrd_wsvd_compute(&w, C, W, 2, d, 1, "model.layers.2.self_attn.k_proj", &err), -1);
    assert_non_null(strstr(err.msg, "model.layers.2.self_attn.k_proj"));
    assert_non_null(strstr(err.msg, "zero"));
    C[0] = C[4] = C[8] = 1;
    C[4] = NAN;
    assert_int_equal(alrd_wsvd_compute(&w, C, W, 2, d, 1, "m", &err), -1);
    assert_non_null(strstr(err.msg, "non-finite"));
    C[4] = 1;
    W[4] = INFINITY;
    assert_int_equal(alrd_wsvd_compute(&w, C, W, 2, d, 1, "m", &err), -1);
    assert_non_null(strstr(err.msg, "(1, 1)"));
    W[4] = 5;
    alrd_whitening wh;
    assert_int_equal(alrd_whitening_compute(&wh, C, d, "m", &err), 0);
    assert_int_equal(alrd_wsvd_compute_with(&w, &wh, W, 3, 2, "m", &err), -1);
    assert_int_equal(alrd_wsvd_compute_with(&w, &wh, W, 2, 3, "m", &err), 0);
    alrd_wsvd_free(&w);
    alrd_whitening_free(&wh);
}


/* ---------------------------------------------------------------- ranks */

/* Tail table from per-dim sigma^2 given per block of 8 dims. */
static void tail_from_blocks(const double *blk, int max_rank, double *tail) {
    tail[max_rank] = 0;
    for (int r = max_rank - 1; r >= 0; r--) tail[r] = tail[r + 1] + blk[r / 8];
}

static void test_ranks_greedy_exact(void **state) {
    (void)state;
    alrd_error err = {{0}};
    static const double b0[] = {10, 5, 1, 0.1}, b1[] = {8, 6, 0.5, 0.2}, b2[] = {20, 0.3, 0.2, 0.1},
                        b3[] = {3, 2, 1};
    double t0[33], t1[33], t2[33], t3[21];
    tail_from_blocks(b0, 32, t0);
    tail_from_blocks(b1, 32, t1);
    tail_from_blocks(b2, 32, t2);
    tail_from_blocks(b3, 20, t3);
    alrd_rank_module m[4] = {{t0, 32, 1}, {t1, 32, 1}, {t2, 32, 1}, {t3, 20, 1}};
    int r[4];
    /* budget 48 of 96: start 8,8,8, then m1 (6/dim), m0 (5), m0 (1). */
    assert_int_equal(alrd_ranks_allocate(m, 3, 0.5, 8, r, &err), 0);
    assert_int_equal(r[0], 24); assert_int_equal(r[1], 16); assert_int_equal(r[2], 8);
    assert_true(fabs(alrd_ranks_predicted(m, 3, r) - (t0[24] + t1[16] + t2[8])) < 1e-12);
    /* weight 30 on m2: m2 (9/dim), tie m1 vs m2 at 6 -> lower index m1, then m2. */
    m[2].weight = 30;
    assert_int_equal(alrd_ranks_allocate(m, 3, 0.5, 8, r, &err), 0);
    assert_int_equal(r[0], 8); assert_int_equal(r[1], 16); assert_int_equal(r[2], 24);
    m[2].weight = 1;
    /* budget floor(0.4 * 96) = 38: one step fits, the 6 left over stay unused. */
    assert_int_equal(alrd_ranks_allocate(m, 3, 0.4, 8, r, &err), 0);
    assert_int_equal(r[0] + r[1] + r[2], 32);
    assert_int_equal(r[1], 16);
    /* ratio 1 fills everything, including the off-grid max rank 20. */
    assert_int_equal(alrd_ranks_allocate(m, 4, 1.0, 8, r, &err), 0);
    assert_int_equal(r[0], 32); assert_int_equal(r[1], 32); assert_int_equal(r[2], 32);
    assert_int_equal(r[3], 20);
    /* 116 dims total; ratio 0.9 -> 104 = 8*4 + 72: next picks by score. */
    assert_int_equal(alrd_ranks_allocate(m, 4, 0.9, 8, r, &err), 0);
    assert_true(r[0] + r[1] + r[2] + r[3] <= 104);
    /* m3's last step is 4 dims (16 -> 20) at 1/dim; the others' last blocks are
     * 0.1, 0.2, 0.1 per dim: everything but those fits: 24+24+24+20 = 92, then
     * one more 8-block: m1 (0.2/dim) -> 32. */
    assert_int_equal(r[0], 24); assert_int_equal(r[1], 32); assert_int_equal(r[2], 24);
    assert_int_equal(r[3], 20);
    /* minimum ranks do not fit */
    assert_int_equal(alrd_ranks_allocate(m, 3, 0.1, 8, r, &err), -1);
    assert_non_null(strstr(err.msg, "minimum rank"));
    assert_int_equal(alrd_ranks_allocate(m, 3, 1.5, 8, r, &err), -1);
}

static void test_ranks_uniform(void **state) {
    (void)state;
    alrd_error err = {{0}};
    double t[33] = {0};
    alrd_rank_module m[2] = {{t, 32, 1}, {t, 20, 1}};
    int r[2];
    assert_int_equal(alrd_ranks_uniform(m, 2, 0.5, 8, r, &err), 0);
    assert_int_equal(r[0], 16); assert_int_equal(r[1], 8);   /* 10 -> 8 */
    assert_int_equal(alrd_ranks_uniform(m, 2, 0.9, 8, r, &err), 0);
    assert_int_equal(r[0], 32); assert_int_equal(r[1], 16);  /* 28.8 -> 32, 18 -> 16 */
    assert_int_equal(alrd_ranks_uniform(m, 2, 1.0, 8, r, &err), 0);
    assert_int_equal(r[0], 32); assert_int_equal(r[1], 20);  /* 24 clamped to 20 */
    assert_int_equal(alrd_ranks_uniform(m, 2, 0.05, 8, r, &err), 0);
    assert_int_equal(r[0], 8); assert_int_equal(r[1], 8);    /* never below one step */
}

/* qerr = rank * c(bits), bytes = rank * bits / 8 (see the worked example). */
static double q_lin(void *ctx, int m, int r, int b) {
    (void)ctx; (void)m;
    return r * (b == 2 ? 1.0 : b == 4 ? 0.1 : 0.0);
}
static double bytes_lin(void *ctx, int m, int r, int b) {
    (void)m;
    if (ctx) (*(int *)ctx)++;
    return r * b / 8.0;
}

static void test_ranks_joint_bits(void **state) {
    (void)state;
    alrd_error err = {{0}};
    /* tails: m0 tail[8] = 10, m1 tail[8] = 4, both 0 at 16. */
    double t0[17], t1[17];
    for (int r = 0; r <= 16; r++) {
        t0[r] = r <= 8 ? 10 + (8 - r) : 0;
        t1[r] = r <= 8 ? 4 + (8 - r) : 0;
    }
    alrd_rank_module m[2] = {{t0, 16, 1}, {t1, 16, 1}};
    const int opts[3] = {2, 4, 16};
    int r[2], b[2], calls = 0;
    /* Start (8,2),(8,2) = 4 bytes. Best per byte: m0 -> (8,4) 3.6 (tie with
     * m1, lower index), m1 -> (8,4) 3.6, m0 -> (16,4) 2.3 (fills 12 exactly). */
    assert_int_equal(alrd_ranks_allocate_bits(m, 2, 8, opts, 3, 12.0, q_lin, bytes_lin, &calls,
                                              r, b, &err), 0);
    assert_int_equal(r[0], 16); assert_int_equal(b[0], 4);
    assert_int_equal(r[1], 8); assert_int_equal(b[1], 4);
    assert_int_equal(calls, 2 * 2 * 3); /* tables evaluated once */
    double used = bytes_lin(NULL, 0, r[0], b[0]) + bytes_lin(NULL, 1, r[1], b[1]);
    assert_true(used <= 12.0);
    /* A budget of exactly the minimum keeps the minimum; less is an error. */
    assert_int_equal(alrd_ranks_allocate_bits(m, 2, 8, opts, 3, 4.0, q_lin, bytes_lin, NULL, r, b,
                                              &err), 0);
    assert_int_equal(r[0], 8); assert_int_equal(b[0], 2);
    assert_int_equal(r[1], 8); assert_int_equal(b[1], 2);
    assert_int_equal(alrd_ranks_allocate_bits(m, 2, 8, opts, 3, 3.9, q_lin, bytes_lin, NULL, r, b,
                                              &err), -1);
    /* Ample budget: everything to zero loss, cheapest way: (16,16) costs 32 each. */
    assert_int_equal(alrd_ranks_allocate_bits(m, 2, 8, opts, 3, 1000.0, q_lin, bytes_lin, NULL, r,
                                              b, &err), 0);
    assert_int_equal(r[0], 16); assert_int_equal(b[0], 16);
    assert_int_equal(r[1], 16); assert_int_equal(b[1], 16);
}

static void test_ranks_json(void **state) {
    (void)state;
    alrd_error err = {{0}};
    int k[2] = {96, 64}, v[2] = {0, 192};
    char *s = alrd_ranks_json_format(2, k, v);
    assert_string_equal(s, "{\n  \"model.layers.0.self_attn.k_proj\": 96,\n"
                           "  \"model.layers.1.self_attn.k_proj\": 64,\n"
                           "  \"model.layers.1.self_attn.v_proj\": 192\n}");
    int k2[2] = {-1, -1}, v2[2] = {-1, -1};
    assert_int_equal(alrd_ranks_json_parse(s, "r.json", 2, 192, k2, v2, &err), 0);
    assert_int_equal(k2[0], 96); assert_int_equal(k2[1], 64);
    assert_int_equal(v2[0], 0); assert_int_equal(v2[1], 192);
    free(s);

    char path[512], path2[512];
    snprintf(path, sizeof path, "%s/ranks.json", alrd_test_tmpdir());
    snprintf(path2, sizeof path2, "%s/ranks2.json", alrd_test_tmpdir());
    assert_int_equal(alrd_ranks_json_write(path, 2, k, v, &err), 0);
    assert_int_equal(alrd_ranks_json_write(path2, 2, k, v, &err), 0);
    char *a, *b;
    size_t na, nb;
    assert_int_equal(alrd_read_file(path, 1 << 20, &a, &na, &err), 0);
    assert_int_equal(alrd_read_file(path2, 1 << 20, &b, &nb, &err), 0);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    free(a); free(b);
    assert_int_equal(alrd_ranks_json_read(path, 2, 192, k2, v2, &err), 0);
    assert_int_equal(k2[0], 96); assert_int_equal(v2[1], 192);

    static const struct { const char *json, *want; } bad[] = {
        {"{\"model.layers.0.self_attn.q_proj\": 8}", "model.layers.0.self_attn.q_proj: unknown key"},
        {"{\"model.layers.2.self_attn.k_proj\": 8}", "layer 2 but the model has 2"},
        {"{\"model.layers.01.self_attn.k_proj\": 8}", "unknown key"},
        {"{\"model.layers.0.self_attn.k_proj\": 0}", "integer in 1..192"},
        {"{\"model.layers.0.self_attn.k_proj\": 200}", "integer in 1..192"},
        {"{\"model.layers.0.self_attn.k_proj\": 8.5}", "integer in 1..192"},
        {"{\"model.layers.0.self_attn.k_proj\": \"8\"}", "integer in 1..192"},
        {"{\"model.layers.0.self_attn.v_proj\": 100}", "v_proj: rank 100 is not a multiple of 8"},
        {"{\"model.layers.0.self_attn.k_proj\": 8, \"model.layers.0.self_attn.k_proj\": 16}", "twice"},
        {"[8]", "expected an object"},
        {"{", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err.msg[0] = 0;
        assert_int_equal(alrd_ranks_json_parse(bad[i].json, "r.json", 2, 192, k2, v2, &err), -1);
        if (!strstr(err.msg, bad[i].want) || strncmp(err.msg, "r.json: ", 8))
            fail_msg("case %zu: got '%s', want '%s'", i, err.msg, bad[i].want);
    }
}


/* ---------------------------------------------------------------- hadamard */

static void test_hadamard_orthonormal(void **state) {
    (void)state;
    alrd_error err = {{0}};
    static const struct { int r; alrd_rotation_kind k; } cases[] = {
        {1, ALRD_ROT_WALSH}, {2, ALRD_ROT_WALSH}, {8, ALRD_ROT_WALSH}, {64, ALRD_ROT_WALSH},
        {256, ALRD_ROT_WALSH}, {12, ALRD_ROT_HADAMARD}, {20, ALRD_ROT_HADAMARD},
        {24, ALRD_ROT_HADAMARD}, {28, ALRD_ROT_HADAMARD} /* Paley II, q = 13 */,
        {36, ALRD_ROT_HADAMARD} /* Paley II, q = 17 */, {40, ALRD_ROT_HADAMARD},
        {48, ALRD_ROT_HADAMARD}, {72, ALRD_ROT_HADAMARD}, {96, ALRD_ROT_HADAMARD},
        {160, ALRD_ROT_HADAMARD}, {192, ALRD_ROT_HADAMARD}, {6, ALRD_ROT_RANDOM},
        {50, ALRD_ROT_RANDOM}, {100, ALRD_ROT_RANDOM}, {3, ALRD_ROT_RANDOM},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int r = cases[c].r;
        double *H = malloc(sizeof(double) * r * r), *H2 = malloc(sizeof(double) * r * r);
        alrd_rotation_kind k;
        assert_int_equal(alrd_hadamard_matrix(r, 1234, H, &k, &err), 0);
        if (k != cases[c].k) fail_msg("r=%d: kind %d, want %d", r, k, cases[c].k);
        assert_int_equal(alrd_hadamard_kind(r), cases[c].k);
        for (int i = 0; i < r; i++)
            for (int j = 0; j < r; j++) {
                double dot = 0;
                for (int t = 0; t < r; t++) dot += H[i * r + t] * H[j * r + t];
                if (fabs(dot - (i == j)) > 1e-12) fail_msg("r=%d: (H H^T)[%d][%d] = %g", r, i, j, dot);
            }
        if (k != ALRD_ROT_RANDOM)
            for (int i = 0; i < r * r; i++)
                if (fabs(fabs(H[i]) - 1 / sqrt(r)) > 1e-15) fail_msg("r=%d: |h| = %g", r, H[i]);
        /* Seeded: same seed same matrix, another seed another one. */
        assert_int_equal(alrd_hadamard_matrix(r, 1234, H2, NULL, &err), 0);
        assert_memory_equal(H, H2, sizeof(double) * r * r);
        assert_int_equal(alrd_hadamard_matrix(r, 99, H2, NULL, &err), 0);
        if (r >= 8) assert_true(memcmp(H, H2, sizeof(double) * r * r) != 0);
        free(H);
        free(H2);
    }
    double h;
    assert_int_equal(alrd_hadamard_matrix(0, 1, &h, NULL, &err), -1);
}

/* Folding leaves A B unchanged, and a latent whose energy sits in channel 0
 * (what SVD produces) is spread evenly over all channels. */
static void test_hadamard_fold_and_spread(void **state) {
    (void)state;
    rng_t rg = {5};
    alrd_error err = {{0}};
    const int rows = 24, r = 96, d = 40;
    float *A = rand_mat(&rg, rows, r, NULL), *B = rand_mat(&rg, r, d, NULL);
    float *A0 = malloc(sizeof(float) * rows * r), *B0 = malloc(sizeof(float) * r * d);
    memcpy(A0, A, sizeof(float) * rows * r);
    memcpy(B0, B, sizeof(float) * r * d);
    double *H = malloc(sizeof(double) * r * r);
    assert_int_equal(alrd_hadamard_matrix(r, 7, H, NULL, &err), 0);
    assert_int_equal(alrd_hadamard_fold(H, r, A, rows, B, d, &err), 0);
    double num = 0, den = 0, moved = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < d; j++) {
            double p = 0, q = 0;
            for (int t = 0; t < r; t++) {
                p += (double)A[i * r + t] * B[t * d + j];
                q += (double)A0[i * r + t] * B0[t * d + j];
            }
            num += (p - q) * (p - q);
            den += q * q;
        }
    for (int i = 0; i < r * d; i++) moved += fabs(B[i] - B0[i]);
    assert_true(sqrt(num / den) < 1e-5);
    assert_true(moved > 1.0);
    /* latent l = 5 e_0: after rotation every channel holds 25/r of the energy */
    double mx = 0, tot = 0;
    for (int i = 0; i < r; i++) {
        double v = 5 * H[i * r + 0];
        mx = fmax(mx, v * v);
        tot += v * v;
    }
    assert_true(fabs(tot - 25) < 1e-12);
    assert_true(fabs(mx - 25.0 / r) < 1e-12);
    free(A); free(B); free(A0); free(B0); free(H);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gram_matches_naive),
        cmocka_unit_test(test_gram_rejects_nonfinite),
        cmocka_unit_test(test_wsvd_full_rank_reconstructs),
        cmocka_unit_test(test_wsvd_known_sigma),
        cmocka_unit_test(test_wsvd_loss_is_tail_full_gram),
        cmocka_unit_test(test_wsvd_loss_is_tail_rank_deficient),
        cmocka_unit_test(test_wsvd_rank1_gram),
        cmocka_unit_test(test_wsvd_errors),
        cmocka_unit_test(test_wsvd_gpu_when_present),
        cmocka_unit_test(test_ranks_greedy_exact),
        cmocka_unit_test(test_ranks_uniform),
        cmocka_unit_test(test_ranks_joint_bits),
        cmocka_unit_test(test_ranks_json),
        cmocka_unit_test(test_hadamard_orthonormal),
        cmocka_unit_test(test_hadamard_fold_and_spread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
