/* gram: streaming fp64 Gram matrix of calibration activations. */
#include "gram.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows converted per dsyrk call: large enough for BLAS efficiency, small
 * enough that the scratch stays a few MB even for d = 8192. */
#define GRAM_CHUNK 256

int alrd_gram_init(alrd_gram *g, int d, const char *name, alrd_error *err) {
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "%s", name ? name : "gram");
    if (d <= 0 || d > 65536) return alrd_errf(err, "%s: gram: bad dimension %d", g->name, d);
    size_t dd, bn;
    if (alrd_mul_ok((size_t)d, (size_t)d, &dd) || alrd_mul_ok(dd, sizeof(double), &dd) ||
        alrd_mul_ok((size_t)GRAM_CHUNK * sizeof(double), (size_t)d, &bn))
        return alrd_errf(err, "%s: gram: dimension %d too large", g->name, d);
    g->c = calloc(1, dd);
    g->buf = malloc(bn);
    if (!g->c || !g->buf) {
        alrd_gram_free(g);
        return alrd_errf(err, "%s: gram: out of memory for %dx%d", name ? name : "gram", d, d);
    }
    g->d = d;
    g->buf_rows = GRAM_CHUNK;
    return 0;
}

int alrd_gram_add(alrd_gram *g, const float *x, int64_t n_rows, alrd_error *err) {
    if (!g->c) return alrd_errf(err, "%s: gram: not initialized", g->name);
    if (n_rows < 0) return alrd_errf(err, "%s: gram: negative row count", g->name);
    const int d = g->d;
    /* Check the whole chunk first so a rejected chunk leaves C untouched. */
    for (int64_t i = 0; i < n_rows; i++) {
        const float *row = x + (size_t)i * (size_t)d;
        for (int j = 0; j < d; j++)
            if (!isfinite(row[j]))
                return alrd_errf(err,
                                 "%s: calibration activation is %s at row %lld column %d "
                                 "(after %lld rows)",
                                 g->name, isnan(row[j]) ? "NaN" : "Inf", (long long)i, j,
                                 (long long)g->n_rows);
    }
    for (int64_t i0 = 0; i0 < n_rows; i0 += g->buf_rows) {
        int nr = (int)(n_rows - i0 < g->buf_rows ? n_rows - i0 : g->buf_rows);
        const float *src = x + (size_t)i0 * (size_t)d;
        size_t n = (size_t)nr * (size_t)d;
        for (size_t k = 0; k < n; k++) g->buf[k] = src[k];
        /* C(upper) += X^T X with X = buf (nr x d, row-major). */
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, nr, 1.0, g->buf, d, 1.0, g->c, d);
    }
    g->n_rows += n_rows;
    return 0;
}

int alrd_gram_merge(alrd_gram *g, const alrd_gram *other, alrd_error *err) {
    if (!g->c || !other->c || g->d != other->d)
        return alrd_errf(err, "%s: gram: cannot merge %s (dimension %d vs %d)", g->name,
                         other->name, g->d, other->d);
    size_t n = (size_t)g->d * (size_t)g->d;
    for (size_t k = 0; k < n; k++) g->c[k] += other->c[k];
    g->n_rows += other->n_rows;
    return 0;
}

void alrd_gram_finish(alrd_gram *g) {
    if (!g->c) return;
    const size_t d = (size_t)g->d;
    for (size_t i = 0; i < d; i++)
        for (size_t j = i + 1; j < d; j++) g->c[j * d + i] = g->c[i * d + j];
}

void alrd_gram_free(alrd_gram *g) {
    free(g->c);
    free(g->buf);
    g->c = NULL;
    g->buf = NULL;
    g->d = 0;
    g->n_rows = 0;
}
