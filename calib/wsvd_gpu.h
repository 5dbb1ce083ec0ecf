/* wsvd_gpu: the whitened SVD of calib/wsvd.h on the GPU (cuSOLVER + cuBLAS,
 * fp64 throughout), for alrd_decomp_new when the statistics pass may use the
 * GPU (ALRD_CALIB_GPU; alrd-compress --cpu keeps everything on the CPU).
 * The CPU path (LAPACKE dsyevd + dgesdd, calib/wsvd.c) stays the reference
 * and the fallback; the results are the same decomposition within fp64
 * rounding (tests/gpu/test_gpu_wsvd), not the same bits.
 *
 * The two steps:
 *   whitening  C = Q Lambda Q^T with cusolverDnXsyevd on the d x d Gram, the
 *              same eigenvalue floor as alrd_whitening_compute. Q and
 *              Lambda^(+-1/2) stay on the device for the projections of that
 *              layer (one whitening resident at a time).
 *   projection M = W S = W Q Lambda^1/2 [rows x d] (cuBLAS dgemm + dgmm), then
 *              the SVD of M through the eigendecomposition of its small Gram
 *              (rows <= d: M M^T = U Sigma^2 U^T, [rows x rows], cuSOLVER
 *              Xsyevd):
 *                sigma_i = || M^T u_i ||   (not sqrt of the eigenvalue: the
 *                                           norm keeps small sigma_i accurate
 *                                           to eps * sigma_1 instead of
 *                                           sqrt(eps) * sigma_1)
 *                V^T S^-1 row i = u_i^T W / sigma_i   (M S^-1 = W, so no S^-1
 *                                           product is needed)
 *              and symmetrically for rows > d (M^T M = V Sigma^2 V^T,
 *              u_i = M v_i / sigma_i, V^T S^-1 = V^T Lambda^-1/2 Q^T).
 *              Components are ordered by the sigma_i so computed, descending.
 *   Why the small Gram and not gesvd/gesvdj on M: at 7B/8B sizes (M is 1024
 *   or 4096 x 4096) cuSOLVER's gesvd is bound by a bidiagonalisation that
 *   runs at memory speed (seconds per matrix, minutes per model), gesvdj by
 *   its sweeps; one dsyrk + one syevd of rows x rows + two dgemms is a
 *   fraction of that. The price is the squared condition number in U:
 *   subspace error ~ eps * sigma_1^2 / (sigma_r^2 - sigma_r+1^2) at a cut r.
 *   The truncation loss sum_{i>=r} sigma_i^2 and the rank-r output
 *   ||(W - A B) X|| are what compress uses, and those agree with dgesdd to
 *   ~1e-12 relative (the test's bounds are in tests/gpu/test_gpu_wsvd.c).
 *
 * Device memory: a few d x d and rows x d fp64 buffers (grow-only, about 1
 * GiB at d = rows = 4096). Host memory: the outputs (alrd_wsvd's u, vts,
 * sigma, as the CPU path) and one W in fp32 in flight; nothing per layer is
 * kept. Not thread safe. */
#ifndef ALRD_WSVD_GPU_H
#define ALRD_WSVD_GPU_H

#include "wsvd.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct alrd_wsvd_gpu alrd_wsvd_gpu;

/* Returns 1 (*out NULL, nothing done) when this build has no CUDA or the
 * machine no GPU, 0 with a context, -1 on error (cuSOLVER/cuBLAS setup). */
int alrd_wsvd_gpu_new(alrd_wsvd_gpu **out, alrd_error *err);
void alrd_wsvd_gpu_free(alrd_wsvd_gpu *g);

/* alrd_whitening_compute on the GPU: gram d x d symmetric (full, row-major),
 * same checks and error messages. The whitening becomes the context's
 * resident one (replacing any before). wh (may be NULL) gets a host copy in
 * alrd_whitening's layout (q row-major, column j = eigenvector j; lambda
 * ascending, floored), owned by the caller (alrd_whitening_free). */
int alrd_wsvd_gpu_whiten(alrd_wsvd_gpu *g, const double *gram, int d, alrd_whitening *wh, const char *name,
                         alrd_error *err);

/* alrd_wsvd_compute_with on the GPU: whiten != 0 uses the resident whitening
 * (its d must equal d), 0 the plain SVD. W: rows x d floats, row-major. w is
 * filled as the CPU path fills it (free with alrd_wsvd_free). */
int alrd_wsvd_gpu_compute(alrd_wsvd_gpu *g, alrd_wsvd *w, int whiten, const float *W, int rows, int d,
                          const char *name, alrd_error *err);

#ifdef __cplusplus
}
#endif

#endif
