/* cpu_ops: fp32 reference kernels. */
#include "cpu_ops.h"

#include <cblas.h>
#include <math.h>

void alrd_matmul_wt(float *C, const float *A, const float *W, int M, int N, int K, int accumulate) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, W, K,
                accumulate ? 1.0f : 0.0f, C, N);
}

void alrd_matmul(float *C, const float *A, const float *B, int M, int N, int K) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
}

void alrd_rmsnorm(float *out, const float *x, const float *w, int T, int d, float eps) {
    for (int t = 0; t < T; t++) {
        const float *xr = x + (long)t * d;
        float *o = out + (long)t * d;
        double ss = 0;
        for (int i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
        float r = 1.0f / sqrtf((float)(ss / d) + eps);
        for (int i = 0; i < d; i++) o[i] = xr[i] * r * w[i];
    }
}

void alrd_rope(float *x, int T, int n_heads, int hd, const int *pos, const float *cos_tab,
               const float *sin_tab) {
    int half = hd / 2;
    for (int t = 0; t < T; t++) {
        const float *cs = cos_tab + (long)pos[t] * half, *sn = sin_tab + (long)pos[t] * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((long)t * n_heads + h) * hd;
            for (int i = 0; i < half; i++) {
                float x1 = v[i], x2 = v[i + half];
                v[i] = x1 * cs[i] - x2 * sn[i];
                v[i + half] = x2 * cs[i] + x1 * sn[i];
            }
        }
    }
}

void alrd_softmax(float *x, int n) {
    float m = -INFINITY;
    for (int i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void alrd_silu_mul(float *gate, const float *up, long n) {
    for (long i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void alrd_add(float *y, const float *x, long n) {
    for (long i = 0; i < n; i++) y[i] += x[i];
}
