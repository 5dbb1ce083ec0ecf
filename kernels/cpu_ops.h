/* cpu_ops: the CPU reference kernels of the forward pass, fp32, on plain
 * arrays. Matrix products go to OpenBLAS (which uses every core). */
#ifndef ALRD_CPU_OPS_H
#define ALRD_CPU_OPS_H

/* C[M][N] (+)= A[M][K] . W[N][K]^T  -- the layout of x . weight^T for
 * row-major [out, in] weights. accumulate: add to C instead of overwrite. */
void alrd_matmul_wt(float *C, const float *A, const float *W, int M, int N, int K, int accumulate);
/* C[M][N] = A[M][K] . B[K][N] */
void alrd_matmul(float *C, const float *A, const float *B, int M, int N, int K);

/* out[T][d] = x / rms(x) * w, per row. out may equal x. */
void alrd_rmsnorm(float *out, const float *x, const float *w, int T, int d, float eps);

/* Rotary embedding, HF rotate_half convention: pairs (x[i], x[i + hd/2])
 * rotated by angle pos * inv_freq[i], read from tables cos_tab/sin_tab
 * [pos][hd/2]. x is [T][n_heads][hd]; row t has position pos[t]. */
void alrd_rope(float *x, int T, int n_heads, int hd, const int *pos, const float *cos_tab,
               const float *sin_tab);

/* In-place softmax of n values; returns nothing, handles -inf masks. */
void alrd_softmax(float *x, int n);

/* gate[i] = silu(gate[i]) * up[i] */
void alrd_silu_mul(float *gate, const float *up, long n);

/* y[i] += x[i] */
void alrd_add(float *y, const float *x, long n);

#endif
