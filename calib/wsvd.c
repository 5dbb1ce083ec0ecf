/* wsvd: whitened SVD (eigen-whitening + dgesdd), fp64 throughout. */
#include "wsvd.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME(n) ((n) ? (n) : "wsvd")

static double *dalloc(size_t a, size_t b) {
    size_t n;
    if (alrd_mul_ok(a, b, &n) || alrd_mul_ok(n, sizeof(double), &n)) return NULL;
    return malloc(n ? n : 1);
}

int alrd_whitening_compute(alrd_whitening *wh, const double *gram, int d, const char *name,
                           alrd_error *err) {
    memset(wh, 0, sizeof *wh);
    if (d <= 0 || !gram) return alrd_errf(err, "%s: whitening: bad dimension %d", NAME(name), d);
    const size_t dd = (size_t)d * (size_t)d;
    for (size_t k = 0; k < dd; k++)
        if (!isfinite(gram[k]))
            return alrd_errf(err, "%s: whitening: Gram matrix has a non-finite entry at (%zu, %zu)",
                             NAME(name), k / (size_t)d, k % (size_t)d);
    wh->q = dalloc(dd, 1);
    wh->lambda = dalloc((size_t)d, 1);
    if (!wh->q || !wh->lambda) {
        alrd_whitening_free(wh);
        return alrd_errf(err, "%s: whitening: out of memory (d=%d)", NAME(name), d);
    }
    memcpy(wh->q, gram, dd * sizeof(double));
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', d, wh->q, d, wh->lambda);
    if (info != 0) {
        alrd_whitening_free(wh);
        return alrd_errf(err, "%s: whitening: dsyevd failed (info %d)", NAME(name), (int)info);
    }
    double mx = wh->lambda[d - 1]; /* ascending */
    if (!(mx > 0)) {
        alrd_whitening_free(wh);
        return alrd_errf(err, "%s: whitening: Gram matrix is zero (no calibration rows?)",
                         NAME(name));
    }
    /* Raise tiny and (numerically) negative eigenvalues: directions the
     * calibration never excited get a small finite weight instead of 1/0. */
    double floor_ = mx * ALRD_WSVD_EIG_FLOOR;
    for (int i = 0; i < d; i++)
        if (!(wh->lambda[i] >= floor_)) {
            wh->lambda[i] = floor_;
            wh->n_clamped++;
        }
    wh->d = d;
    wh->lambda_max = mx;
    return 0;
}

void alrd_whitening_free(alrd_whitening *wh) {
    free(wh->q);
    free(wh->lambda);
    memset(wh, 0, sizeof *wh);
}

void alrd_wsvd_free(alrd_wsvd *w) {
    free(w->sigma);
    free(w->u);
    free(w->vts);
    memset(w, 0, sizeof *w);
}

int alrd_wsvd_compute_with(alrd_wsvd *w, const alrd_whitening *wh, const float *W, int rows,
                           int d, const char *name, alrd_error *err) {
    memset(w, 0, sizeof *w);
    if (rows <= 0 || d <= 0 || !W)
        return alrd_errf(err, "%s: wsvd: bad shape %d x %d", NAME(name), rows, d);
    if (wh && wh->d != d)
        return alrd_errf(err, "%s: wsvd: weight has %d columns but the Gram is %d x %d",
                         NAME(name), d, wh->d, wh->d);
    const size_t nw = (size_t)rows * (size_t)d;
    for (size_t k = 0; k < nw; k++)
        if (!isfinite(W[k]))
            return alrd_errf(err, "%s: wsvd: weight has a non-finite entry at (%zu, %zu)",
                             NAME(name), k / (size_t)d, k % (size_t)d);
    const int k = rows < d ? rows : d;
    double *m = dalloc(nw, 1), *tmp = NULL, *vt = dalloc((size_t)k, (size_t)d);
    w->sigma = dalloc((size_t)k, 1);
    w->u = dalloc((size_t)rows, (size_t)k);
    if (!m || !vt || !w->sigma || !w->u) goto oom;

    if (wh) {
        /* M = W S = (W Q) diag(sqrt lambda). */
        double *wd = dalloc(nw, 1);
        if (!wd) goto oom;
        for (size_t i = 0; i < nw; i++) wd[i] = W[i];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, d, d, 1.0, wd, d, wh->q, d,
                    0.0, m, d);
        free(wd);
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < d; j++) m[(size_t)i * d + j] *= sqrt(wh->lambda[j]);
    } else {
        for (size_t i = 0; i < nw; i++) m[i] = W[i];
    }

    lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', rows, d, m, d, w->sigma, w->u, k,
                                     vt, d);
    free(m);
    m = NULL;
    if (info != 0) {
        free(vt);
        alrd_wsvd_free(w);
        return alrd_errf(err, "%s: wsvd: dgesdd did not converge (info %d)", NAME(name),
                         (int)info);
    }

    if (wh) {
        /* V^T S^-1 = (V^T diag(lambda^-1/2)) Q^T. */
        tmp = vt;
        for (int i = 0; i < k; i++)
            for (int j = 0; j < d; j++) tmp[(size_t)i * d + j] /= sqrt(wh->lambda[j]);
        w->vts = dalloc((size_t)k, (size_t)d);
        if (!w->vts) goto oom;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k, d, d, 1.0, tmp, d, wh->q, d, 0.0,
                    w->vts, d);
        free(tmp);
        tmp = vt = NULL;
        w->n_clamped = wh->n_clamped;
    } else {
        w->vts = vt;
        vt = NULL;
    }
    snprintf(w->name, sizeof w->name, "%s", NAME(name));
    w->rows = rows;
    w->d = d;
    w->k = k;
    w->whitened = wh != NULL;
    w->total = alrd_wsvd_tail(w, 0);
    return 0;
oom:
    free(m);
    free(vt);
    alrd_wsvd_free(w);
    return alrd_errf(err, "%s: wsvd: out of memory (%d x %d)", NAME(name), rows, d);
}

int alrd_wsvd_compute(alrd_wsvd *w, const double *gram, const float *W, int rows, int d,
                      int whiten, const char *name, alrd_error *err) {
    if (!whiten) return alrd_wsvd_compute_with(w, NULL, W, rows, d, name, err);
    alrd_whitening wh;
    memset(w, 0, sizeof *w);
    if (alrd_whitening_compute(&wh, gram, d, name, err)) return -1;
    int rc = alrd_wsvd_compute_with(w, &wh, W, rows, d, name, err);
    alrd_whitening_free(&wh);
    return rc;
}

int alrd_wsvd_factors(const alrd_wsvd *w, int r, float *A, float *B, alrd_error *err) {
    if (r < 0 || r > w->k)
        return alrd_errf(err, "%s: wsvd: rank %d outside 0..%d", w->name, r, w->k);
    const int rows = w->rows, d = w->d, k = w->k;
    for (int j = 0; j < r; j++) {
        double s = sqrt(w->sigma[j]);
        for (int i = 0; i < rows; i++) {
            double a = w->u[(size_t)i * k + j] * s;
            A[(size_t)i * r + j] = (float)a;
            if (!isfinite(A[(size_t)i * r + j]))
                return alrd_errf(err, "%s: wsvd: factor A[%d][%d] is not finite in float",
                                 w->name, i, j);
        }
        for (int c = 0; c < d; c++) {
            double b = w->vts[(size_t)j * d + c] * s;
            B[(size_t)j * d + c] = (float)b;
            if (!isfinite(B[(size_t)j * d + c]))
                return alrd_errf(err, "%s: wsvd: factor B[%d][%d] is not finite in float",
                                 w->name, j, c);
        }
    }
    return 0;
}

double alrd_wsvd_tail(const alrd_wsvd *w, int r) {
    if (r < 0) r = 0;
    double s = 0;
    for (int i = w->k - 1; i >= r; i--) s += w->sigma[i] * w->sigma[i]; /* small first */
    return s;
}

double alrd_wsvd_rel_error(const alrd_wsvd *w, int r) {
    if (!(w->total > 0)) return 0;
    return sqrt(alrd_wsvd_tail(w, r) / w->total);
}

double alrd_wsvd_kept_energy(const alrd_wsvd *w, int r) {
    if (!(w->total > 0)) return 1;
    return 1.0 - alrd_wsvd_tail(w, r) / w->total;
}

#if !ALRD_CUDA
/* A build without CUDA has no GPU path (calib/wsvd_gpu.cu): callers get 1 and use the functions above. */
#include "wsvd_gpu.h"

int alrd_wsvd_gpu_new(alrd_wsvd_gpu **out, alrd_error *err) {
    (void)err;
    *out = NULL;
    return 1;
}

void alrd_wsvd_gpu_free(alrd_wsvd_gpu *g) { (void)g; }

int alrd_wsvd_gpu_whiten(alrd_wsvd_gpu *g, const double *gram, int d, alrd_whitening *wh, const char *name,
                         alrd_error *err) {
    (void)g, (void)gram, (void)d, (void)wh;
    return alrd_errf(err, "%s: whitening: this build has no GPU", NAME(name));
}

int alrd_wsvd_gpu_compute(alrd_wsvd_gpu *g, alrd_wsvd *w, int whiten, const float *W, int rows, int d,
                          const char *name, alrd_error *err) {
    (void)g, (void)whiten, (void)W, (void)rows, (void)d;
    memset(w, 0, sizeof *w);
    return alrd_errf(err, "%s: wsvd: this build has no GPU", NAME(name));
}
#endif
