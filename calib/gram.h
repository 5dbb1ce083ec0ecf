/* gram: per-layer calibration statistics (docs/design.md 5.1).
 * Accumulates the Gram matrix C = sum_t x_t^T x_t (d x d, fp64) of the
 * activation rows x_t that feed k_proj/v_proj of one layer. Rows arrive as
 * float in chunks of any size; they are converted to double and folded in
 * with cblas_dsyrk (upper triangle). alrd_gram_finish() mirrors the upper
 * triangle into the lower one so c is a full symmetric matrix; more rows may
 * be added after a finish (finish again before reading c). */
#ifndef ALRD_GRAM_H
#define ALRD_GRAM_H

#include <stdint.h>
#include "../formats/io.h"

#define ALRD_GRAM_NAME_MAX 128

typedef struct {
    int d;                          /* row width (hidden size) */
    double *c;                      /* [d*d] row-major, owned */
    int64_t n_rows;                 /* rows accumulated so far */
    double *buf;                    /* [buf_rows*d] conversion scratch, owned */
    int buf_rows;
    char name[ALRD_GRAM_NAME_MAX];  /* module name for error messages */
} alrd_gram;

/* name identifies the module in errors, e.g. "model.layers.3 attn input". */
int alrd_gram_init(alrd_gram *g, int d, const char *name, alrd_error *err);
/* x: n_rows x d floats, row-major. Rejects NaN/Inf (error names the module,
 * row and column; the statistics are left unchanged by a rejected chunk). */
int alrd_gram_add(alrd_gram *g, const float *x, int64_t n_rows, alrd_error *err);
/* c += other->c (same d): merges per-thread partial Grams. */
int alrd_gram_merge(alrd_gram *g, const alrd_gram *other, alrd_error *err);
/* Symmetrizes c (copies the upper triangle over the lower). */
void alrd_gram_finish(alrd_gram *g);
void alrd_gram_free(alrd_gram *g);

#endif
