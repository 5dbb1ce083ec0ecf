/* wsvd: activation-aware (whitened) SVD of one projection (docs/design.md 5.2).
 *
 * For W [rows, d] (rows = g*head_dim for a group of g KV heads) and the
 * layer's calibration Gram C = X^T X [d, d]:
 *   C = Q Lambda Q^T (dsyevd); eigenvalues below ALRD_WSVD_EIG_FLOOR*max are
 *   raised to that floor, so a rank-deficient C (short or repetitive
 *   calibration, even one repeated token) still gives finite factors;
 *   S = Q Lambda^1/2, S^-1 = Lambda^-1/2 Q^T;
 *   W S = U Sigma V^T (dgesdd);
 *   A = U_r Sigma_r^1/2 (up, [rows, r]), B = Sigma_r^1/2 V_r^T S^-1 (down, [r, d]).
 * Dropping component i costs exactly sigma_i^2 of output loss ||W X - A B X||_F^2
 * (up to the floor), which is what rank allocation (calib/ranks) works on.
 * Plain SVD (no whitening: S = I) is the ablation. All math in fp64. */
#ifndef ALRD_WSVD_H
#define ALRD_WSVD_H

#include "../formats/io.h"

/* Relative eigenvalue floor of the whitening (see above). */
#define ALRD_WSVD_EIG_FLOOR 1e-8

/* The whitening of one layer's Gram, shared by its K and V projections and
 * all head groups (the eigendecomposition is the expensive d^3 part). */
typedef struct {
    int d;
    double *q;       /* [d*d] row-major, column j = eigenvector j, owned */
    double *lambda;  /* [d] eigenvalues after the floor (ascending), owned */
    double lambda_max;
    int n_clamped;   /* eigenvalues that were raised to the floor */
} alrd_whitening;

/* gram: d x d symmetric (full, as alrd_gram_finish leaves it). name is the
 * module for error messages. Errors on a non-finite or all-zero Gram. */
int alrd_whitening_compute(alrd_whitening *wh, const double *gram, int d, const char *name,
                           alrd_error *err);
void alrd_whitening_free(alrd_whitening *wh);

/* The decomposition of one projection, from which factors of any rank are cut. */
typedef struct {
    int rows, d;
    int k;           /* min(rows, d): number of singular values */
    int whitened;
    double *sigma;   /* [k] descending, owned */
    double *u;       /* [rows*k] row-major, owned */
    double *vts;     /* [k*d] row-major: V^T S^-1 (V^T when plain), owned */
    double total;    /* sum sigma_i^2 */
    int n_clamped;   /* from the whitening (0 when plain) */
    char name[128];  /* module name for error messages */
} alrd_wsvd;

/* W: rows x d floats (row-major, [out, in]). wh NULL = plain SVD. */
int alrd_wsvd_compute_with(alrd_wsvd *w, const alrd_whitening *wh, const float *W, int rows,
                           int d, const char *name, alrd_error *err);
/* Convenience: whitening computed here from gram when whiten != 0 (gram may
 * be NULL when whiten == 0). */
int alrd_wsvd_compute(alrd_wsvd *w, const double *gram, const float *W, int rows, int d,
                      int whiten, const char *name, alrd_error *err);
void alrd_wsvd_free(alrd_wsvd *w);

/* Rank-r factors as float: A [rows*r] (up), B [r*d] (down), row-major.
 * 0 <= r <= k. Errors if a factor would not be finite. */
int alrd_wsvd_factors(const alrd_wsvd *w, int r, float *A, float *B, alrd_error *err);

/* sum_{i>=r} sigma_i^2: the (whitened) output loss of keeping r components. */
double alrd_wsvd_tail(const alrd_wsvd *w, int r);
/* sqrt(tail(r) / total): relative error of a rank-r truncation (0 if total is 0). */
double alrd_wsvd_rel_error(const alrd_wsvd *w, int r);
/* 1 - tail(r)/total: fraction of energy kept (1 if total is 0). */
double alrd_wsvd_kept_energy(const alrd_wsvd *w, int r);

#endif
