/* hadamard: Walsh / Paley-Kronecker Hadamard rotations, random orthogonal
 * fallback, and folding into low-rank factors. */
#include "hadamard.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ORDER 65536

/* splitmix64: small, seedable, no global state. */
static uint64_t mix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static double unif(uint64_t *s) { return ((mix(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static double gauss(uint64_t *s) {
    return sqrt(-2 * log(unif(s))) * cos(6.283185307179586 * unif(s));
}

static int is_prime(int q) {
    if (q < 2) return 0;
    for (int p = 2; (long)p * p <= q; p++)
        if (q % p == 0) return 0;
    return 1;
}
static int is_pow2(int n) { return n > 0 && (n & (n - 1)) == 0; }

/* Paley base order for b: 1 = Paley I (q = b-1), 2 = Paley II (q = b/2-1), 0 none. */
static int paley_type(int b) {
    if (b >= 4 && is_prime(b - 1) && (b - 1) % 4 == 3) return 1;
    if (b >= 12 && b % 2 == 0 && is_prime(b / 2 - 1) && (b / 2 - 1) % 4 == 1) return 2;
    return 0;
}

/* Largest Paley base b with r / b a power of two (0 if none). */
static int paley_base(int r) {
    for (int b = r; b >= 4; b /= 2) {
        if (paley_type(b)) return b;
        if (b % 2) break;
    }
    return 0;
}

alrd_rotation_kind alrd_hadamard_kind(int r) {
    if (r < 1) return (alrd_rotation_kind)0;
    if (is_pow2(r)) return ALRD_ROT_WALSH;
    if (r <= MAX_ORDER && paley_base(r)) return ALRD_ROT_HADAMARD;
    return ALRD_ROT_RANDOM;
}

/* Quadratic character of GF(q), q prime. */
static int chi(int a, int q, const signed char *sq) {
    a %= q;
    if (a < 0) a += q;
    return a == 0 ? 0 : sq[a] ? 1 : -1;
}

/* Paley Hadamard matrix of order b into h (b x b, entries +-1). */
static int paley(int b, double *h) {
    int type = paley_type(b);
    int q = type == 1 ? b - 1 : b / 2 - 1, n = q + 1;
    signed char *sq = calloc((size_t)q, 1);
    double *c = malloc(sizeof(double) * (size_t)n * n);
    if (!sq || !c) { free(sq); free(c); return -1; }
    for (long x = 1; x < q; x++) sq[(x * x) % q] = 1;
    /* c = [[0, 1^T], [s*1, Q]] with Q_ij = chi(j - i); s = -1 (Paley I, skew)
     * or +1 (Paley II, symmetric). */
    int s = type == 1 ? -1 : 1;
    c[0] = 0;
    for (int j = 1; j < n; j++) { c[j] = 1; c[(size_t)j * n] = s; }
    for (int i = 1; i < n; i++)
        for (int j = 1; j < n; j++) c[(size_t)i * n + j] = chi(j - i, q, sq);
    if (type == 1) {
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) h[(size_t)i * n + j] = c[(size_t)i * n + j] + (i == j);
    } else {
        /* H = C (x) [[1,-1],[-1,-1]] + I (x) [[1,1],[1,-1]] */
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double v = c[(size_t)i * n + j], e = i == j;
                size_t r0 = (size_t)(2 * i) * b + 2 * j, r1 = r0 + b;
                h[r0] = v + e;
                h[r0 + 1] = -v + e;
                h[r1] = -v + e;
                h[r1 + 1] = -v - e;
            }
    }
    free(sq);
    free(c);
    return 0;
}

static int random_orthogonal(int r, uint64_t *st, double *H, alrd_error *err) {
    double *tau = malloc(sizeof(double) * (size_t)r), *d = malloc(sizeof(double) * (size_t)r);
    if (!tau || !d) { free(tau); free(d); return alrd_errf(err, "hadamard: out of memory (r=%d)", r); }
    for (size_t i = 0; i < (size_t)r * r; i++) H[i] = gauss(st);
    lapack_int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, r, r, H, r, tau);
    /* Sign of diag(R): multiplying Q's columns by it makes Q Haar-distributed. */
    for (int i = 0; i < r && !info; i++) d[i] = H[(size_t)i * r + i] < 0 ? -1 : 1;
    if (!info) info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, r, r, r, H, r, tau);
    if (!info)
        for (int i = 0; i < r; i++)
            for (int j = 0; j < r; j++) H[(size_t)i * r + j] *= d[j];
    free(tau);
    free(d);
    if (info) return alrd_errf(err, "hadamard: QR of the random matrix failed (info %d)", (int)info);
    return 0;
}

int alrd_hadamard_matrix(int r, uint64_t seed, double *H, alrd_rotation_kind *kind,
                         alrd_error *err) {
    if (r < 1 || r > MAX_ORDER) return alrd_errf(err, "hadamard: order %d outside 1..%d", r, MAX_ORDER);
    alrd_rotation_kind k = alrd_hadamard_kind(r);
    if (kind) *kind = k;
    uint64_t st = seed;
    if (k == ALRD_ROT_RANDOM) return random_orthogonal(r, &st, H, err);

    int b = k == ALRD_ROT_WALSH ? 1 : paley_base(r);
    double *base = malloc(sizeof(double) * (size_t)b * b);
    if (!base) return alrd_errf(err, "hadamard: out of memory (r=%d)", r);
    if (b == 1) base[0] = 1;
    else if (paley(b, base)) { free(base); return alrd_errf(err, "hadamard: out of memory (r=%d)", r); }
    /* H = Sylvester(w) (x) base; Sylvester entry (i, j) = (-1)^popcount(i & j). */
    for (int i = 0; i < r; i++)
        for (int j = 0; j < r; j++) {
            int si = i / b, sj = j / b;
            double sgn = __builtin_popcount((unsigned)(si & sj)) & 1 ? -1 : 1;
            H[(size_t)i * r + j] = sgn * base[(size_t)(i % b) * b + (j % b)];
        }
    free(base);
    const double scale = 1.0 / sqrt((double)r);
    for (int j = 0; j < r; j++) {
        double f = (mix(&st) & 1 ? -1 : 1) * scale; /* random column sign flip */
        for (int i = 0; i < r; i++) H[(size_t)i * r + j] *= f;
    }
    return 0;
}

int alrd_hadamard_fold(const double *H, int r, float *A, int rows, float *B, int d,
                       alrd_error *err) {
    if (r < 1 || rows < 0 || d < 0) return alrd_errf(err, "hadamard: bad fold shapes");
    size_t na = (size_t)rows * r, nb = (size_t)r * d;
    double *x = malloc(sizeof(double) * (na > nb ? na : nb) + 1);
    double *y = malloc(sizeof(double) * (na > nb ? na : nb) + 1);
    if (!x || !y) { free(x); free(y); return alrd_errf(err, "hadamard: out of memory"); }
    /* B <- H B */
    for (size_t i = 0; i < nb; i++) x[i] = B[i];
    if (nb)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, d, r, 1.0, H, r, x, d, 0.0, y, d);
    for (size_t i = 0; i < nb; i++) B[i] = (float)y[i];
    /* A <- A H^T */
    for (size_t i = 0; i < na; i++) x[i] = A[i];
    if (na)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, r, r, 1.0, x, r, H, r, 0.0, y, r);
    for (size_t i = 0; i < na; i++) A[i] = (float)y[i];
    free(x);
    free(y);
    return 0;
}
