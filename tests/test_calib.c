/* test_calib: Gram accumulation, whitened SVD, rank allocation, Hadamard. */
#include "testutil.h"

#include <math.h>

#include "../calib/gram.h"
#include "../calib/wsvd.h"

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
    assert_int_equal(alrd_gram_init(&g, 0, "z", &err), -1);
    alrd_gram_free(&g);
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
    assert_non_null(strstr(err.msg, "rank 4"));
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
