/* wsvd_gpu: the whitened SVD on the GPU (see wsvd_gpu.h). Matrices on the
 * device are column-major, as cuBLAS and cuSOLVER see them: a host
 * row-major [r][c] array is the device's c x r matrix, its transpose. So W
 * (rows x d row-major) is Wt = W^T (d x rows), and M^T = Lambda^1/2 Q^T W^T
 * is built as Mt. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "wsvd_gpu.h"
#include "../runtime/gpu.h"
}

#define NAME(n) ((n) ? (n) : "wsvd")

struct alrd_wsvd_gpu {
    cudaStream_t st;
    cublasHandle_t cb;
    cusolverDnHandle_t cs;
    cusolverDnParams_t params;
    int *info;                  /* device */
    /* the resident whitening */
    int wd;                     /* its d, 0: none */
    double *q;                  /* [wd x wd] column j = eigenvector j */
    double *s, *sinv;           /* [wd] Lambda^1/2, Lambda^-1/2 (floored) */
    double *lam;                /* [wd] eigenvalues (syevd output) */
    int n_clamped;
    /* scratch, grow-only: each pointer with its capacity in bytes */
    struct buf { void *p; size_t n; } wf, wt, mt, gm, ev, y, z, t, u, vts, sig, inv, perm, work;
    void *hwork;                /* host workspace of Xsyevd */
    size_t hwork_n;
};

namespace {

int cuda_fail(alrd_error *err, const char *name, const char *what, cudaError_t e) {
    return alrd_errf(err, "%s: wsvd (GPU): %s: %s", NAME(name), what, cudaGetErrorString(e));
}
int blas_fail(alrd_error *err, const char *name, const char *what, int st) {
    return alrd_errf(err, "%s: wsvd (GPU): %s failed (status %d)", NAME(name), what, st);
}

#define CU(call, what) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) return cuda_fail(err, name, what, e_); } while (0)
#define CB(call, what) do { cublasStatus_t s_ = (call); if (s_ != CUBLAS_STATUS_SUCCESS) return blas_fail(err, name, what, (int)s_); } while (0)
#define CS(call, what) do { cusolverStatus_t s_ = (call); if (s_ != CUSOLVER_STATUS_SUCCESS) return blas_fail(err, name, what, (int)s_); } while (0)

int grow(alrd_wsvd_gpu::buf *b, size_t bytes, const char *name, alrd_error *err) {
    if (bytes <= b->n) return 0;
    if (b->p) cudaFree(b->p);
    b->p = NULL;
    b->n = 0;
    CU(cudaMalloc(&b->p, bytes), "out of device memory");
    b->n = bytes;
    return 0;
}

__global__ void to_double(double *out, const float *in, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = (double)in[i];
}

/* out[j] = || column j of Y (n rows, leading dimension n) ||, one block per column. */
__global__ void col_norms(double *out, const double *Y, int n) {
    __shared__ double part[256];
    const double *y = Y + (size_t)blockIdx.x * n;
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += y[i] * y[i];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = sqrt(part[0]);
}

/* out[i*osi + j*osj] = X[i + perm[j]*n] * (scale ? scale[perm[j]] : 1) for i < n, j < k: component j of the
 * output is column perm[j] of X (n x *, leading dimension n). */
__global__ void gather(double *out, const double *X, int n, int k, const int *perm, const double *scale, size_t osi,
                       size_t osj) {
    const size_t total = (size_t)n * k;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
        const size_t i = t % n, j = t / n;
        const int p = perm[j];
        out[i * osi + j * osj] = X[i + (size_t)p * n] * (scale ? scale[p] : 1.0);
    }
}

unsigned grid_for(size_t n) {
    size_t b = (n + 255) / 256;
    return (unsigned)(b < 4096 ? (b ? b : 1) : 4096);
}

/* Eigendecomposition in place: A (n x n, lower triangle read) -> eigenvectors, ev ascending. */
int syevd(alrd_wsvd_gpu *g, double *A, int n, double *ev, const char *name, alrd_error *err) {
    size_t dws = 0, hws = 0;
    CS(cusolverDnXsyevd_bufferSize(g->cs, g->params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, CUDA_R_64F,
                                   A, n, CUDA_R_64F, ev, CUDA_R_64F, &dws, &hws),
       "cusolverDnXsyevd_bufferSize");
    if (grow(&g->work, dws ? dws : 1, name, err)) return -1;
    if (hws > g->hwork_n) {
        free(g->hwork);
        g->hwork = malloc(hws);
        g->hwork_n = g->hwork ? hws : 0;
        if (!g->hwork) return alrd_errf(err, "%s: wsvd (GPU): out of host memory", NAME(name));
    }
    CS(cusolverDnXsyevd(g->cs, g->params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, CUDA_R_64F, A, n,
                        CUDA_R_64F, ev, CUDA_R_64F, g->work.p, g->work.n, g->hwork, g->hwork_n, g->info),
       "cusolverDnXsyevd");
    int info = 0;
    CU(cudaMemcpyAsync(&info, g->info, sizeof info, cudaMemcpyDeviceToHost, g->st), "copy of syevd's info");
    CU(cudaStreamSynchronize(g->st), "syevd");
    if (info != 0) return alrd_errf(err, "%s: wsvd (GPU): cusolverDnXsyevd failed (info %d, n %d)", NAME(name), info, n);
    return 0;
}

struct by_sigma { double s; int i; };

int by_sigma_desc(const void *a, const void *b) {
    const by_sigma *x = (const by_sigma *)a, *y = (const by_sigma *)b;
    if (x->s > y->s) return -1;
    if (x->s < y->s) return 1;
    return y->i - x->i; /* ties: the larger eigenvalue (later in syevd's ascending order) first */
}

} // namespace

extern "C" int alrd_wsvd_gpu_new(alrd_wsvd_gpu **out, alrd_error *err) {
    *out = NULL;
    if (!alrd_gpu_available()) return 1;
    alrd_wsvd_gpu *g = (alrd_wsvd_gpu *)calloc(1, sizeof *g);
    if (!g) return alrd_errf(err, "wsvd (GPU): out of host memory");
    const char *name = "wsvd (GPU) setup";
    int rc = -1;
    do {
        cudaError_t e = cudaStreamCreateWithFlags(&g->st, cudaStreamNonBlocking);
        if (e != cudaSuccess) { cuda_fail(err, name, "cudaStreamCreate", e); break; }
        if (cublasCreate(&g->cb) != CUBLAS_STATUS_SUCCESS) { alrd_errf(err, "wsvd (GPU): cublasCreate failed"); break; }
        if (cusolverDnCreate(&g->cs) != CUSOLVER_STATUS_SUCCESS) { alrd_errf(err, "wsvd (GPU): cusolverDnCreate failed"); break; }
        if (cusolverDnCreateParams(&g->params) != CUSOLVER_STATUS_SUCCESS) {
            alrd_errf(err, "wsvd (GPU): cusolverDnCreateParams failed");
            break;
        }
        cublasSetStream(g->cb, g->st);
        cusolverDnSetStream(g->cs, g->st);
        e = cudaMalloc((void **)&g->info, sizeof(int));
        if (e != cudaSuccess) { cuda_fail(err, name, "cudaMalloc", e); break; }
        rc = 0;
    } while (0);
    if (rc) {
        alrd_wsvd_gpu_free(g);
        return -1;
    }
    *out = g;
    return 0;
}

extern "C" void alrd_wsvd_gpu_free(alrd_wsvd_gpu *g) {
    if (!g) return;
    if (g->st) cudaStreamSynchronize(g->st);
    alrd_wsvd_gpu::buf *bs[] = {&g->wf, &g->wt, &g->mt, &g->gm, &g->ev, &g->y, &g->z, &g->t,
                                &g->u, &g->vts, &g->sig, &g->inv, &g->perm, &g->work};
    for (size_t i = 0; i < sizeof bs / sizeof *bs; i++)
        if (bs[i]->p) cudaFree(bs[i]->p);
    if (g->q) cudaFree(g->q);
    if (g->s) cudaFree(g->s);
    if (g->sinv) cudaFree(g->sinv);
    if (g->lam) cudaFree(g->lam);
    if (g->info) cudaFree(g->info);
    free(g->hwork);
    if (g->params) cusolverDnDestroyParams(g->params);
    if (g->cs) cusolverDnDestroy(g->cs);
    if (g->cb) cublasDestroy(g->cb);
    if (g->st) cudaStreamDestroy(g->st);
    free(g);
}

static int whiten_impl(alrd_wsvd_gpu *g, const double *gram, int d, alrd_whitening *wh, const char *name,
                       double *lam_h, alrd_error *err) {
    const size_t dd = (size_t)d * d;
    if (g->wd != d) { /* (re)allocate the resident whitening for this width */
        if (g->q) cudaFree(g->q);
        if (g->s) cudaFree(g->s);
        if (g->sinv) cudaFree(g->sinv);
        if (g->lam) cudaFree(g->lam);
        g->q = g->s = g->sinv = g->lam = NULL;
        CU(cudaMalloc((void **)&g->q, dd * sizeof(double)), "out of device memory for the whitening");
        CU(cudaMalloc((void **)&g->s, (size_t)d * sizeof(double)), "out of device memory for the whitening");
        CU(cudaMalloc((void **)&g->sinv, (size_t)d * sizeof(double)), "out of device memory for the whitening");
        CU(cudaMalloc((void **)&g->lam, (size_t)d * sizeof(double)), "out of device memory for the whitening");
    }
    g->wd = 0; /* not valid until the end */
    /* symmetric: the row-major host array is the same matrix column-major */
    CU(cudaMemcpyAsync(g->q, gram, dd * sizeof(double), cudaMemcpyHostToDevice, g->st), "upload of the Gram");
    if (syevd(g, g->q, d, g->lam, name, err)) return -1;
    CU(cudaMemcpyAsync(lam_h, g->lam, (size_t)d * sizeof(double), cudaMemcpyDeviceToHost, g->st),
       "download of the eigenvalues");
    CU(cudaStreamSynchronize(g->st), "download of the eigenvalues");
    const double mx = lam_h[d - 1]; /* ascending */
    if (!(mx > 0))
        return alrd_errf(err, "%s: whitening: Gram matrix is zero (no calibration rows?)", NAME(name));
    const double floor_ = mx * ALRD_WSVD_EIG_FLOOR; /* as alrd_whitening_compute */
    int n_clamped = 0;
    for (int i = 0; i < d; i++)
        if (!(lam_h[i] >= floor_)) {
            lam_h[i] = floor_;
            n_clamped++;
        }
    double *sc = (double *)malloc(2 * (size_t)d * sizeof(double));
    if (!sc) return alrd_errf(err, "%s: whitening: out of memory (d=%d)", NAME(name), d);
    for (int i = 0; i < d; i++) {
        sc[i] = sqrt(lam_h[i]);
        sc[d + i] = 1.0 / sc[i];
    }
    cudaError_t e = cudaMemcpyAsync(g->s, sc, (size_t)d * sizeof(double), cudaMemcpyHostToDevice, g->st);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(g->sinv, sc + d, (size_t)d * sizeof(double), cudaMemcpyHostToDevice, g->st);
    if (e == cudaSuccess) e = cudaStreamSynchronize(g->st);
    free(sc);
    if (e != cudaSuccess) return cuda_fail(err, name, "upload of the whitening scales", e);
    if (wh) {
        wh->q = (double *)malloc(dd * sizeof(double));
        double *qc = (double *)malloc(dd * sizeof(double));
        if (!wh->q || !qc) {
            free(qc);
            return alrd_errf(err, "%s: whitening: out of memory (d=%d)", NAME(name), d);
        }
        e = cudaMemcpyAsync(qc, g->q, dd * sizeof(double), cudaMemcpyDeviceToHost, g->st);
        if (e == cudaSuccess) e = cudaStreamSynchronize(g->st);
        if (e != cudaSuccess) {
            free(qc);
            return cuda_fail(err, name, "download of the eigenvectors", e);
        }
        for (size_t i = 0; i < (size_t)d; i++) /* column-major -> row-major, column j = eigenvector j */
            for (size_t j = 0; j < (size_t)d; j++) wh->q[i * d + j] = qc[j * d + i];
        free(qc);
        wh->lambda = lam_h;
        wh->d = d;
        wh->lambda_max = mx;
        wh->n_clamped = n_clamped;
    }
    g->n_clamped = n_clamped;
    g->wd = d;
    return 0;
}

extern "C" int alrd_wsvd_gpu_whiten(alrd_wsvd_gpu *g, const double *gram, int d, alrd_whitening *wh,
                                    const char *name, alrd_error *err) {
    if (wh) memset(wh, 0, sizeof *wh);
    if (d <= 0 || !gram) return alrd_errf(err, "%s: whitening: bad dimension %d", NAME(name), d);
    const size_t dd = (size_t)d * (size_t)d;
    for (size_t k = 0; k < dd; k++)
        if (!isfinite(gram[k]))
            return alrd_errf(err, "%s: whitening: Gram matrix has a non-finite entry at (%zu, %zu)", NAME(name),
                             k / (size_t)d, k % (size_t)d);
    double *lam_h = (double *)malloc((size_t)d * sizeof(double));
    if (!lam_h) return alrd_errf(err, "%s: whitening: out of memory (d=%d)", NAME(name), d);
    int rc = whiten_impl(g, gram, d, wh, name, lam_h, err);
    if (rc || !wh) free(lam_h); /* on success with wh, lam_h is wh->lambda */
    if (rc && wh) {
        free(wh->q);
        memset(wh, 0, sizeof *wh);
    }
    return rc;
}

static int compute_impl(alrd_wsvd_gpu *g, alrd_wsvd *w, int whiten, const float *W, int rows, int d,
                        const char *name, alrd_error *err) {
    const size_t nw = (size_t)rows * d;
    const int k = rows < d ? rows : d;
    const double one = 1.0, zero = 0.0;
    if (grow(&g->wf, nw * sizeof(float), name, err) || grow(&g->wt, nw * sizeof(double), name, err) ||
        grow(&g->gm, (size_t)k * k * sizeof(double), name, err) || grow(&g->ev, (size_t)k * sizeof(double), name, err) ||
        grow(&g->y, nw * sizeof(double), name, err) || grow(&g->sig, (size_t)k * sizeof(double), name, err) ||
        grow(&g->inv, (size_t)k * sizeof(double), name, err) || grow(&g->perm, (size_t)k * sizeof(int), name, err) ||
        grow(&g->u, (size_t)rows * k * sizeof(double), name, err) ||
        grow(&g->vts, (size_t)k * d * sizeof(double), name, err))
        return -1;
    double *Wt = (double *)g->wt.p, *G = (double *)g->gm.p, *Y = (double *)g->y.p, *sig = (double *)g->sig.p;
    double *inv = (double *)g->inv.p;
    int *perm = (int *)g->perm.p;

    /* Wt = W^T (d x rows), fp64 */
    CU(cudaMemcpyAsync(g->wf.p, W, nw * sizeof(float), cudaMemcpyHostToDevice, g->st), "upload of the weight");
    to_double<<<grid_for(nw), 256, 0, g->st>>>(Wt, (const float *)g->wf.p, nw);
    CU(cudaGetLastError(), "to_double");
    /* Mt = M^T = Lambda^1/2 Q^T W^T (d x rows); the plain SVD: Mt = Wt */
    double *Mt = Wt;
    if (whiten) {
        if (grow(&g->mt, nw * sizeof(double), name, err)) return -1;
        Mt = (double *)g->mt.p;
        /* Q^T W^T into Y's buffer (free until Y), then scaled into Mt (dgmm out of place) */
        CB(cublasDgemm(g->cb, CUBLAS_OP_T, CUBLAS_OP_N, d, rows, d, &one, g->q, d, Wt, d, &zero, Y, d), "dgemm Q^T W^T");
        CB(cublasDdgmm(g->cb, CUBLAS_SIDE_LEFT, d, rows, Y, d, g->s, 1, Mt, d), "dgmm Lambda^1/2");
    }
    const double *U = NULL, *Vts = NULL; /* the columns the outputs gather */
    const double *u_scale = NULL, *v_scale = NULL;
    if (rows <= d) {
        /* G = M M^T = Mt^T Mt (rows x rows) = U Sigma^2 U^T */
        CB(cublasDsyrk(g->cb, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, rows, d, &one, Mt, d, &zero, G, rows), "dsyrk M M^T");
        if (syevd(g, G, rows, (double *)g->ev.p, name, err)) return -1;
        /* Y = Mt U (d x rows): column i = M^T u_i, sigma_i its norm */
        CB(cublasDgemm(g->cb, CUBLAS_OP_N, CUBLAS_OP_N, d, rows, rows, &one, Mt, d, G, rows, &zero, Y, d), "dgemm M^T U");
        col_norms<<<k, 256, 0, g->st>>>(sig, Y, d);
        CU(cudaGetLastError(), "col_norms");
        /* Z = Wt U (d x rows): column i = W^T u_i; V^T S^-1 row i = (W^T u_i)^T / sigma_i */
        const double *Z = Y;
        if (whiten) {
            if (grow(&g->z, nw * sizeof(double), name, err)) return -1;
            CB(cublasDgemm(g->cb, CUBLAS_OP_N, CUBLAS_OP_N, d, rows, rows, &one, Wt, d, G, rows, &zero,
                           (double *)g->z.p, d),
               "dgemm W^T U");
            Z = (const double *)g->z.p;
        }
        U = G;
        Vts = Z;
        v_scale = inv;
    } else {
        /* G = M^T M = Mt Mt^T (d x d) = V Sigma^2 V^T */
        CB(cublasDsyrk(g->cb, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, d, rows, &one, Mt, d, &zero, G, d), "dsyrk M^T M");
        if (syevd(g, G, d, (double *)g->ev.p, name, err)) return -1;
        /* Y = M V = Mt^T V (rows x d): column i = M v_i = sigma_i u_i */
        CB(cublasDgemm(g->cb, CUBLAS_OP_T, CUBLAS_OP_N, rows, d, d, &one, Mt, d, G, d, &zero, Y, rows), "dgemm M V");
        col_norms<<<k, 256, 0, g->st>>>(sig, Y, rows);
        CU(cudaGetLastError(), "col_norms");
        U = Y;
        u_scale = inv;
        Vts = G; /* V^T (plain) */
        if (whiten) { /* V^T S^-1 = V^T Lambda^-1/2 Q^T: column i of Q Lambda^-1/2 V */
            if (grow(&g->t, (size_t)d * d * sizeof(double), name, err) ||
                grow(&g->z, (size_t)d * d * sizeof(double), name, err))
                return -1;
            CB(cublasDdgmm(g->cb, CUBLAS_SIDE_LEFT, d, d, G, d, g->sinv, 1, (double *)g->t.p, d), "dgmm Lambda^-1/2");
            CB(cublasDgemm(g->cb, CUBLAS_OP_N, CUBLAS_OP_N, d, d, d, &one, g->q, d, (const double *)g->t.p, d, &zero,
                           (double *)g->z.p, d),
               "dgemm Q Lambda^-1/2 V");
            Vts = (const double *)g->z.p;
        }
    }

    /* order by sigma, descending; 1/sigma (0 for an exact zero) */
    double *sig_h = (double *)malloc((size_t)k * 2 * sizeof(double));
    int *perm_h = (int *)malloc((size_t)k * sizeof(int));
    by_sigma *order = (by_sigma *)malloc((size_t)k * sizeof(by_sigma));
    if (!sig_h || !perm_h || !order) {
        free(sig_h);
        free(perm_h);
        free(order);
        return alrd_errf(err, "%s: wsvd: out of memory (%d x %d)", NAME(name), rows, d);
    }
    double *inv_h = sig_h + k;
    cudaError_t e = cudaMemcpyAsync(sig_h, sig, (size_t)k * sizeof(double), cudaMemcpyDeviceToHost, g->st);
    if (e == cudaSuccess) e = cudaStreamSynchronize(g->st);
    if (e == cudaSuccess) {
        for (int j = 0; j < k; j++) {
            order[j].s = sig_h[j];
            order[j].i = j;
            inv_h[j] = sig_h[j] > 0 ? 1.0 / sig_h[j] : 0.0;
        }
        qsort(order, (size_t)k, sizeof *order, by_sigma_desc);
        for (int j = 0; j < k; j++) {
            perm_h[j] = order[j].i;
            w->sigma[j] = order[j].s;
        }
        e = cudaMemcpyAsync(perm, perm_h, (size_t)k * sizeof(int), cudaMemcpyHostToDevice, g->st);
    }
    if (e == cudaSuccess) e = cudaMemcpyAsync(inv, inv_h, (size_t)k * sizeof(double), cudaMemcpyHostToDevice, g->st);
    if (e == cudaSuccess) e = cudaStreamSynchronize(g->st); /* before the host arrays are freed */
    free(sig_h);
    free(perm_h);
    free(order);
    if (e != cudaSuccess) return cuda_fail(err, name, "the order of the singular values", e);

    /* u: rows x k row-major, component j = column perm[j] of U (rows long); vts: k x d row-major, row j =
     * column perm[j] of Vts (d long) */
    double *du = (double *)g->u.p, *dv = (double *)g->vts.p;
    gather<<<grid_for((size_t)rows * k), 256, 0, g->st>>>(du, U, rows, k, perm, u_scale, (size_t)k, 1);
    CU(cudaGetLastError(), "gather u");
    gather<<<grid_for((size_t)k * d), 256, 0, g->st>>>(dv, Vts, d, k, perm, v_scale, 1, (size_t)d);
    CU(cudaGetLastError(), "gather vts");
    CU(cudaMemcpyAsync(w->u, du, (size_t)rows * k * sizeof(double), cudaMemcpyDeviceToHost, g->st), "download of u");
    CU(cudaMemcpyAsync(w->vts, dv, (size_t)k * d * sizeof(double), cudaMemcpyDeviceToHost, g->st),
       "download of V^T S^-1");
    CU(cudaStreamSynchronize(g->st), "wsvd");
    return 0;
}

extern "C" int alrd_wsvd_gpu_compute(alrd_wsvd_gpu *g, alrd_wsvd *w, int whiten, const float *W, int rows, int d,
                                     const char *name, alrd_error *err) {
    memset(w, 0, sizeof *w);
    if (rows <= 0 || d <= 0 || !W) return alrd_errf(err, "%s: wsvd: bad shape %d x %d", NAME(name), rows, d);
    if (whiten && g->wd != d)
        return g->wd ? alrd_errf(err, "%s: wsvd: weight has %d columns but the Gram is %d x %d", NAME(name), d, g->wd,
                                 g->wd)
                     : alrd_errf(err, "%s: wsvd (GPU): no whitening computed", NAME(name));
    const size_t nw = (size_t)rows * (size_t)d;
    for (size_t k = 0; k < nw; k++)
        if (!isfinite(W[k]))
            return alrd_errf(err, "%s: wsvd: weight has a non-finite entry at (%zu, %zu)", NAME(name),
                             k / (size_t)d, k % (size_t)d);
    const int k = rows < d ? rows : d;
    size_t nu, nv;
    if (alrd_mul_ok((size_t)rows, (size_t)k, &nu) || alrd_mul_ok(nu, sizeof(double), &nu) ||
        alrd_mul_ok((size_t)k, (size_t)d, &nv) || alrd_mul_ok(nv, sizeof(double), &nv))
        return alrd_errf(err, "%s: wsvd: out of memory (%d x %d)", NAME(name), rows, d);
    w->sigma = (double *)malloc((size_t)k * sizeof(double));
    w->u = (double *)malloc(nu);
    w->vts = (double *)malloc(nv);
    if (!w->sigma || !w->u || !w->vts) {
        alrd_wsvd_free(w);
        return alrd_errf(err, "%s: wsvd: out of memory (%d x %d)", NAME(name), rows, d);
    }
    if (compute_impl(g, w, whiten, W, rows, d, name, err)) {
        alrd_wsvd_free(w);
        return -1;
    }
    snprintf(w->name, sizeof w->name, "%s", NAME(name));
    w->rows = rows;
    w->d = d;
    w->k = k;
    w->whitened = whiten != 0;
    w->n_clamped = whiten ? g->n_clamped : 0;
    w->total = alrd_wsvd_tail(w, 0);
    return 0;
}
