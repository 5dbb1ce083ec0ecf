/* test_gpu_units: GPU kernels against their references, no model file needed.
 *   1. the GPU latent cache (prefill, chunked prefill, decode appends) holds
 *      bit for bit the packed codes/scales/zeros of runtime/kv_cache.c fed the
 *      same (fp16-exact) inputs, and materialises its mirror;
 *   2. on small random-weight models of several shapes and cache settings,
 *      the fused decode attention gives the logits of the reference path
 *      (materialised K/V through cuBLAS), B sequences at different positions;
 *      the CUDA graph replay is bit-identical to direct launches;
 *   3. the one-pass scoring equals prefill + decode steps;
 *   4. the decode products: plain against a double-precision host product,
 *      the RMSNorm and SwiGLU fused forms bit for bit against the separate
 *      kernels.
 * Plain C (the device has no cmocka): prints one line per check, exits 1 on
 * any failure. --small: fewer configurations (for compute-sanitizer). */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/tensor.h"
#include "../../kernels/gpu_ops.h"
#include "../../kernels/kivi.h"
#include "../../runtime/gpu.h"
#include "../../runtime/kv_cache.h"

static int n_fail, n_pass;

#define CHECK(cond, ...)                                                                                      \
    do {                                                                                                      \
        if (cond) n_pass++;                                                                                   \
        else {                                                                                                \
            n_fail++;                                                                                         \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                       \
            printf(__VA_ARGS__);                                                                              \
            printf("\n");                                                                                     \
        }                                                                                                     \
    } while (0)

#define CU(x)                                                                                                 \
    do {                                                                                                      \
        cudaError_t e_ = (x);                                                                                 \
        if (e_ != cudaSuccess) {                                                                              \
            printf("FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));                   \
            exit(1);                                                                                          \
        }                                                                                                     \
    } while (0)

static uint64_t rng = 88172645463325252ull;
static double urand(void) { /* [0, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
/* random value exactly representable in fp16, so that the GPU's fp16 residual
 * ring is lossless and the quantiser sees the CPU's inputs */
static float rnd16(float scale) { return alrd_f16_to_f32(alrd_f32_to_f16((float)(urand() * 2 - 1) * scale)); }

static void *dmalloc(size_t n) {
    void *p = NULL;
    CU(cudaMalloc(&p, n ? n : 4));
    CU(cudaMemset(p, 0, n ? n : 4));
    return p;
}

static void *dcopy(const void *h, size_t n) {
    void *d = dmalloc(n);
    CU(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
    return d;
}

static void *hcopy(const void *d, size_t n) {
    void *h = malloc(n);
    CU(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost));
    return h;
}

/* The launchers' pdl as an engine takes it (ALRD_GPU_PDL, default on). */
static int pdl(void) {
    alrd_gpu_knobs k;
    alrd_gpu_knobs_from_env(&k);
    return k.pdl;
}

/* Device copy of n random bytes (the same bytes each call with the same seed). */
static void *drandom(size_t n, unsigned seed) {
    unsigned char *h = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) h[i] = (unsigned char)((seed = seed * 1103515245u + 12345u) >> 16);
    void *d = dcopy(h, n);
    free(h);
    return d;
}

static void *dbuf(size_t n, unsigned seed) { return seed ? drandom(n, seed) : dmalloc(n); }

/* A side's buffers for B sequences: zeros (seed 0), or bytes from seed, so
 * that two calls with one seed give two identical caches. */
static void side_alloc(alrd_gpu_side *s, int B, unsigned seed) {
    if (s->bits == 16) {
        s->rows = dbuf(2 * s->seq_rows * B, seed);
        return;
    }
    s->codes = dbuf(4 * s->seq_words * B, seed);
    s->scales = dbuf(2 * s->seq_groups * B, seed);
    s->zeros = dbuf(2 * s->seq_groups * B, seed);
    s->ring = dbuf(2 * s->seq_ring * B, seed);
}

static void side_free(alrd_gpu_side *s) {
    cudaFree(s->rows);
    cudaFree(s->codes);
    cudaFree(s->scales);
    cudaFree(s->zeros);
    cudaFree(s->ring);
}

/* Compares the GPU side's quantised part with the CPU cache's (bitwise) and
 * the materialised rows with fp16(mirror). */
static int compare_side(const alrd_gpu_side *s, const alrd_kv_cache *c, int key, int n, const char *what) {
    alrd_kv_layer_view v;
    alrd_kv_cache_layer_view(c, 0, &v);
    int bad = 0;
    if (s->bits != 16 && !s->fw) { /* the tiled layout holds the same codes elsewhere: the materialised check below */
        int units = key ? v.k_units : v.v_units;
        size_t uw = key ? v.k_unit_words : v.v_unit_words, ug = key ? v.k_unit_groups : v.v_unit_groups;
        const uint32_t *cc = key ? v.k_codes : v.v_codes;
        const uint16_t *cs = key ? v.k_scales : v.v_scales, *cz = key ? v.k_zeros : v.v_zeros;
        size_t nw = (size_t)units * uw, ng = (size_t)units * ug;
        uint32_t *gw = malloc(4 * (nw + 1));
        uint16_t *gs = malloc(2 * (ng + 1)), *gz = malloc(2 * (ng + 1));
        CU(cudaMemcpy(gw, s->codes, 4 * nw, cudaMemcpyDeviceToHost));
        CU(cudaMemcpy(gs, s->scales, 2 * ng, cudaMemcpyDeviceToHost));
        CU(cudaMemcpy(gz, s->zeros, 2 * ng, cudaMemcpyDeviceToHost));
        CHECK(uw == s->unit_words && ug == s->unit_groups, "%s: unit sizes %zu/%zu vs %zu/%zu", what, uw, ug,
              s->unit_words, s->unit_groups);
        size_t dw = 0, dg = 0;
        for (size_t i = 0; i < nw; i++) dw += gw[i] != cc[i];
        for (size_t i = 0; i < ng; i++) dg += gs[i] != cs[i] || gz[i] != cz[i];
        CHECK(dw == 0 && dg == 0, "%s: %zu of %zu code words, %zu of %zu scale/zero pairs differ (%d units)", what, dw,
              nw, dg, ng, units);
        bad += dw != 0 || dg != 0;
        free(gw);
        free(gs);
        free(gz);
    }
    int d = s->d;
    uint16_t *dm = dmalloc(2 * (size_t)n * d), *hm = malloc(2 * (size_t)n * d);
    float *mir = malloc(4 * (size_t)n * d);
    CU((cudaError_t)alrd_gpu_materialize(s, 0, n, n, dm, d, NULL));
    CU(cudaMemcpy(hm, dm, 2 * (size_t)n * d, cudaMemcpyDeviceToHost));
    if (key) alrd_kv_cache_keys(c, 0, mir);
    else alrd_kv_cache_values(c, 0, mir);
    size_t dd = 0;
    for (size_t i = 0; i < (size_t)n * d; i++) dd += hm[i] != alrd_f32_to_f16(mir[i]);
    CHECK(dd == 0, "%s: %zu of %zu materialised values differ from fp16(CPU mirror)", what, dd, (size_t)n * d);
    cudaFree(dm);
    free(hm);
    free(mir);
    return bad;
}

/* One cache configuration: prefill L0, chunked prefill L1, then `steps`
 * decode appends; GPU and CPU compared after each phase. */
static void test_cache(int d, int kb, int vb, int G, int R, int use_kivi, int L0, int L1, int steps, int kfw, int klat,
                       int vfw) {
    char what[200];
    int max_ctx = L0 + L1 + steps + 3;
    int dk = d, dv = vfw ? d : d + 8;
    alrd_kv_cache_config cfg = {1, &dk, &dv, &kb, &vb, G, R, use_kivi, max_ctx, 0};
    alrd_kv_cache *c = NULL;
    alrd_error err;
    if (alrd_kv_cache_create(&c, &cfg, &err)) {
        printf("FAIL cache config: %s\n", err.msg);
        n_fail++;
        return;
    }
    alrd_gpu_side ks, vs;
    size_t units;
    alrd_gpu_side_init(&ks, dk, kb, use_kivi, G, R, 0, max_ctx, &units);
    alrd_gpu_side_init(&vs, dv, vb, 0, G, R, 0, max_ctx, &units);
    if (kfw) CHECK(alrd_gpu_side_tile(&ks, kfw, klat, max_ctx, &units) == 0, "keys d=%d tiled by %d", dk, kfw);
    if (vfw) CHECK(alrd_gpu_side_tile(&vs, vfw, 0, max_ctx, &units) == 0, "values d=%d tiled by %d", dv, vfw);
    side_alloc(&ks, 1, 0);
    side_alloc(&vs, 1, 0);
    int W = dk + dv, total = L0 + L1 + steps;
    float *x = malloc(sizeof(float) * (size_t)total * W);
    for (int t = 0; t < total; t++)
        for (int i = 0; i < W; i++) /* channels of different ranges, some constant groups */
            x[(size_t)t * W + i] = (i % 7 == 3) ? 0.5f : rnd16(0.5f + (float)(i % 5));
    float *dx = dmalloc(sizeof(float) * (size_t)total * W);
    int *dpos = dmalloc(sizeof(int));
    CU(cudaMemcpy(dx, x, sizeof(float) * (size_t)total * W, cudaMemcpyHostToDevice));
    float *kk = malloc(sizeof(float) * (size_t)total * dk), *vv = malloc(sizeof(float) * (size_t)total * dv);
    for (int t = 0; t < total; t++) {
        memcpy(kk + (size_t)t * dk, x + (size_t)t * W, sizeof(float) * dk);
        memcpy(vv + (size_t)t * dv, x + (size_t)t * W + dk, sizeof(float) * dv);
    }
    /* prefill L0 at 0, then L1 at L0 */
    int p = 0;
    for (int ph = 0; ph < 2; ph++) {
        int T = ph ? L1 : L0;
        if (!T) continue;
        alrd_kv_cache_prefill(c, 0, kk + (size_t)p * dk, vv + (size_t)p * dv, T, &err);
        CU((cudaError_t)alrd_gpu_append_prefill(&ks, 0, dx + (size_t)p * W, W, 0, p, T, 64, NULL, NULL, NULL, 0, NULL));
        CU((cudaError_t)alrd_gpu_append_prefill(&vs, 0, dx + (size_t)p * W, W, dk, p, T, 64, NULL, NULL, NULL, 0, NULL));
        p += T;
    }
    CU(cudaDeviceSynchronize());
    snprintf(what, sizeof what, "cache d=%d kb=%d vb=%d G=%d R=%d kivi=%d tiled %d%s/%d after prefill %d+%d", d, kb, vb,
             G, R, use_kivi, kfw, klat ? " latent" : "", vfw, L0, L1);
    compare_side(&ks, c, 1, p, what);
    compare_side(&vs, c, 0, p, what);
    for (int s = 0; s < steps; s++, p++) {
        alrd_kv_cache_append(c, 0, kk + (size_t)p * dk, vv + (size_t)p * dv, &err);
        CU(cudaMemcpy(dpos, &p, sizeof(int), cudaMemcpyHostToDevice));
        CU((cudaError_t)alrd_gpu_append_decode(&ks, &vs, dx + (size_t)p * W, W, 0, dk, 1, dpos, 64, NULL, NULL, pdl(),
                                               NULL));
    }
    CU(cudaDeviceSynchronize());
    snprintf(what, sizeof what, "cache d=%d kb=%d vb=%d G=%d R=%d kivi=%d tiled %d%s/%d after %d decode steps", d, kb, vb,
             G, R, use_kivi, kfw, klat ? " latent" : "", vfw, steps);
    compare_side(&ks, c, 1, p, what);
    compare_side(&vs, c, 0, p, what);
    side_free(&ks);
    side_free(&vs);
    cudaFree(dx);
    cudaFree(dpos);
    free(x);
    free(kk);
    free(vv);
    alrd_kv_cache_free(c);
}

/* ---- engines with random weights ---------------------------------------- */

typedef struct {
    const char *name;
    int layers, hidden, heads, kv, hd, ffn, vocab;
    int group_heads, kr, vr;
    int kb, vb, G, R, kivi;
    int kbias; /* a random k_proj bias on the latent layers */
} engine_case;

static alrd_gpu *make_engine(const engine_case *e, int n_seq, int max_ctx, int max_batch, int attn, int graph,
                             int score) {
    alrd_config c;
    memset(&c, 0, sizeof c);
    c.n_layers = e->layers;
    c.hidden = e->hidden;
    c.n_heads = e->heads;
    c.n_kv_heads = e->kv;
    c.head_dim = e->hd;
    c.ffn = e->ffn;
    c.vocab_size = e->vocab;
    c.rms_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    int kr[64], vr[64], kb[64], vb[64];
    for (int l = 0; l < e->layers; l++) {
        /* alternate: every third layer keeps a full projection, as files may */
        kr[l] = (l % 3 == 2) ? 0 : e->kr;
        vr[l] = (l % 3 == 2) ? 0 : e->vr;
        kb[l] = e->kb;
        vb[l] = e->vb;
    }
    alrd_gpu_opts o = {.max_ctx = max_ctx, .max_batch = max_batch, .n_seq = n_seq, .k_bits = kb, .v_bits = vb,
                       .group_size = e->G, .residual = e->R, .use_kivi = e->kivi, .attn = attn, .graph = graph,
                       .score = score, .synth_kbias = e->kbias};
    alrd_gpu *g = NULL;
    alrd_error err;
    if (alrd_gpu_new_synthetic(&g, &c, e->group_heads, kr, vr, &o, 1234, &err)) {
        printf("FAIL %s: engine: %s\n", e->name, err.msg);
        n_fail++;
        return NULL;
    }
    return g;
}

static double rel_l2(const float *a, const float *b, size_t n, double *maxabs) {
    double num = 0, den = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
        if (fabs(d) > m || d != d) m = d != d ? INFINITY : fabs(d);
    }
    if (maxabs) *maxabs = m;
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void test_engine(const engine_case *e, int steps) {
    const int B = 3, max_ctx = 400, nv = e->vocab;
    const int plen[3] = {150, 60, 1};
    alrd_gpu *gf = make_engine(e, B, max_ctx, 160, ALRD_GPU_ATTN_FUSED, 0, 0);
    alrd_gpu *gr = make_engine(e, B, max_ctx, 160, ALRD_GPU_ATTN_REF, 0, 0);
    alrd_gpu *gg = make_engine(e, B, max_ctx, 160, ALRD_GPU_ATTN_FUSED, 1, 0);
    if (!gf || !gr || !gg) {
        alrd_gpu_free(gf);
        alrd_gpu_free(gr);
        alrd_gpu_free(gg);
        return;
    }
    CHECK(alrd_gpu_fused_ok(gf), "%s: fused attention does not cover every layer", e->name);
    alrd_error err;
    int32_t *tok = malloc(sizeof(int32_t) * 200);
    float *lf = malloc(sizeof(float) * B * nv), *lr = malloc(sizeof(float) * B * nv), *lg = malloc(sizeof(float) * B * nv);
    int ok = 1;
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < plen[b]; i++) tok[i] = (int32_t)(urand() * nv);
        if (plen[b] > 0) {
            ok &= !alrd_gpu_prefill(gf, b, tok, plen[b], lf, 0, &err);
            ok &= !alrd_gpu_prefill(gr, b, tok, plen[b], lr, 0, &err);
            ok &= !alrd_gpu_prefill(gg, b, tok, plen[b], lg, 0, &err);
        }
    }
    CHECK(ok, "%s: prefill failed: %s", e->name, err.msg);
    /* The first step sees bit-identical caches (prefill does not depend on the
     * attention path): it measures the fused kernel's rounding alone. Later
     * steps add divergence that quantisation amplifies (a code flips when two
     * paths' keys differ by an ulp), so they get a looser bound. */
    double first = -1, worst = 0, worst_abs = 0;
    int graph_same = 1, argmax_same = 0, argmax_n = 0;
    double graph_worst = 0;
    for (int s = 0; s < steps && ok; s++) {
        int32_t t3[3];
        for (int b = 0; b < B; b++) t3[b] = (int32_t)(urand() * nv);
        ok &= !alrd_gpu_decode(gf, t3, lf, &err);
        ok &= !alrd_gpu_decode(gr, t3, lr, &err);
        ok &= !alrd_gpu_decode(gg, t3, lg, &err);
        if (!ok) break;
        double ma, r = rel_l2(lf, lr, (size_t)B * nv, &ma);
        if (first < 0) first = r;
        if (r > worst || r != r) worst = r;
        if (ma > worst_abs) worst_abs = ma;
        if (memcmp(lf, lg, sizeof(float) * B * nv)) {
            graph_same = 0;
            double gr = rel_l2(lg, lf, (size_t)B * nv, NULL);
            if (gr > graph_worst || gr != gr) graph_worst = gr;
        }
        for (int b = 0; b < B; b++) {
            int af = 0, ar = 0;
            for (int i = 1; i < nv; i++) {
                if (lf[b * nv + i] > lf[b * nv + af]) af = i;
                if (lr[b * nv + i] > lr[b * nv + ar]) ar = i;
            }
            argmax_same += af == ar;
            argmax_n++;
        }
    }
    CHECK(ok, "%s: decode failed: %s", e->name, err.msg);
    printf("  %-34s fused vs reference: first step rel L2 %.2e, all steps %.2e (max |d| %.2e), argmax %d/%d; "
           "graph replay %s (rel L2 %.1e)\n",
           e->name, first, worst, worst_abs, argmax_same, argmax_n, graph_same ? "bit-identical" : "differs", graph_worst);
    CHECK(first >= 0 && first < 3e-3, "%s: fused vs reference logits at the first step: rel L2 %.3e", e->name, first);
    CHECK(worst < 5e-2, "%s: fused vs reference logits rel L2 %.3e", e->name, worst);
    CHECK(argmax_same >= argmax_n * 95 / 100, "%s: argmax agrees %d/%d", e->name, argmax_same, argmax_n);
    CHECK(graph_worst < 1e-4, "%s: graph replay differs from direct launches (rel L2 %.3e)", e->name, graph_worst);
    free(tok);
    free(lf);
    free(lr);
    free(lg);
    alrd_gpu_free(gf);
    alrd_gpu_free(gr);
    alrd_gpu_free(gg);
}

static int dsame(const void *a, const void *b, size_t n) {
    if (!n) return 1;
    unsigned char *x = hcopy(a, n), *y = hcopy(b, n);
    int same = !memcmp(x, y, n);
    free(x), free(y);
    return same;
}

static int side_same(const alrd_gpu_side *a, const alrd_gpu_side *b, int B) {
    if (a->bits == 16) return dsame(a->rows, b->rows, 2 * a->seq_rows * B);
    return dsame(a->codes, b->codes, 4 * a->seq_words * B) && dsame(a->scales, b->scales, 2 * a->seq_groups * B) &&
           dsame(a->zeros, b->zeros, 2 * a->seq_groups * B) && dsame(a->ring, b->ring, 2 * a->seq_ring * B);
}

/* The decode step's fused query RoPE + cache append equals qkv_post then
 * append_decode bit for bit (queries, the biased k/v rows, every cache
 * buffer), with biases, at positions that quantise a key chunk and a token. */
static void test_qkv_append(int kb, int vb) {
    /* 8 query heads and, at 16 bits, 5 RoPE'd key heads: slices of the launch (QKV_SLICE 256 columns, B <= 4) */
    const int B = 3, nh = 8, hd = 64, dk = kb == 16 ? 320 : 64, dv = 96, R = 64, G = 32, max_ctx = 256, qd = nh * hd,
              ld = qd + dk + dv;
    const int pos[3] = {63, 64 + 70, 200};
    alrd_gpu_side k1, v1, k2, v2;
    size_t units;
    alrd_gpu_side_init(&k1, dk, kb, kb < 16, G, R, kb == 16, max_ctx, &units);
    alrd_gpu_side_init(&v1, dv, vb, 0, G, R, 0, max_ctx, &units);
    k2 = k1, v2 = v1;
    side_alloc(&k1, B, 11), side_alloc(&k2, B, 11), side_alloc(&v1, B, 21), side_alloc(&v2, B, 21);
    float *qkv1 = malloc(sizeof(float) * B * ld), *tab = malloc(sizeof(float) * max_ctx * hd / 2);
    for (int i = 0; i < B * ld; i++) qkv1[i] = (float)(urand() * 2 - 1);
    float *bias = malloc(sizeof(float) * ld);
    for (int i = 0; i < ld; i++) bias[i] = (float)(urand() * 2 - 1) * 0.5f;
    float *dq1 = dcopy(qkv1, 4 * (size_t)B * ld), *dq2 = dcopy(qkv1, 4 * (size_t)B * ld);
    float *db = dcopy(bias, 4 * (size_t)ld);
    for (int i = 0; i < max_ctx * hd / 2; i++) tab[i] = (float)cos(i * 0.37);
    float *cs = dcopy(tab, 4 * (size_t)max_ctx * hd / 2);
    for (int i = 0; i < max_ctx * hd / 2; i++) tab[i] = (float)sin(i * 0.37);
    float *sn = dcopy(tab, 4 * (size_t)max_ctx * hd / 2);
    int *dpos = dcopy(pos, sizeof pos);
    uint16_t *q1 = dmalloc(2 * (size_t)B * qd), *q2 = dmalloc(2 * (size_t)B * qd);
    int rc = alrd_gpu_qkv_post(dq1, B, ld, nh, hd, dk, dv, db, db + qd, db + qd + dk, dpos, 0, cs, sn, q1, NULL, NULL, 0,
                               0, pdl(), NULL) ||
             alrd_gpu_append_decode(&k1, &v1, dq1, ld, qd, qd + dk, B, dpos, hd, cs, sn, pdl(), NULL) ||
             alrd_gpu_qkv_append_decode(dq2, B, ld, nh, hd, dk, db, db + qd, db + qd + dk, dpos, cs, sn, q2, &k2, &v2,
                                        pdl(), NULL);
    CU(cudaDeviceSynchronize());
    int sq = dsame(q1, q2, 2 * (size_t)B * qd), sr = dsame(dq1, dq2, 4 * (size_t)B * ld);
    int sk = side_same(&k1, &k2, B), sv = side_same(&v1, &v2, B);
    printf("  qkv_post + append_decode vs one launch, k%d v%d: queries %s, rows %s, keys %s, values %s\n", kb, vb,
           sq ? "same" : "DIFFER", sr ? "same" : "DIFFER", sk ? "same" : "DIFFER", sv ? "same" : "DIFFER");
    CHECK(!rc && sq && sr && sk && sv, "fused qkv + append differs (k%d v%d): q %d rows %d k %d v %d", kb, vb, sq, sr,
          sk, sv);
    side_free(&k1), side_free(&k2), side_free(&v1), side_free(&v2);
    cudaFree(dq1), cudaFree(dq2), cudaFree(db), cudaFree(cs), cudaFree(sn), cudaFree(dpos), cudaFree(q1), cudaFree(q2);
    free(qkv1), free(tab), free(bias);
}

/* One-pass scoring vs prefill(first) + decode steps (reference attention). */
static void test_score(const engine_case *e) {
    const int T = 192, first = 96, nv = e->vocab;
    alrd_gpu *gs = make_engine(e, 1, T, T, ALRD_GPU_ATTN_FUSED, 0, 1);
    alrd_gpu *gd = make_engine(e, 1, T, T, ALRD_GPU_ATTN_REF, 0, 0);
    if (!gs || !gd) {
        alrd_gpu_free(gs);
        alrd_gpu_free(gd);
        return;
    }
    alrd_error err;
    int32_t tok[192];
    for (int i = 0; i < T; i++) tok[i] = (int32_t)(urand() * nv);
    double nll[192], ref[192], sum = 0, sumr = 0, worst = 0;
    int ok = !alrd_gpu_score(gs, tok, T, first, 1, nll, &err);
    float *lg = malloc(sizeof(float) * nv);
    ok = ok && !alrd_gpu_prefill(gd, 0, tok, first, NULL, 0, &err);
    for (int j = first; j < T - 1 && ok; j++) {
        ok = !alrd_gpu_decode(gd, tok + j, lg, &err);
        float mx = lg[0];
        for (int i = 1; i < nv; i++) mx = lg[i] > mx ? lg[i] : mx;
        double se = 0;
        for (int i = 0; i < nv; i++) se += exp((double)lg[i] - mx);
        ref[j] = mx + log(se) - lg[tok[j + 1]];
    }
    CHECK(ok, "%s: score failed: %s", e->name, err.msg);
    for (int j = first; j < T - 1 && ok; j++) {
        sum += nll[j];
        sumr += ref[j];
        double d = fabs(nll[j] - ref[j]);
        if (d > worst || d != d) worst = d;
    }
    printf("  %-34s one-pass score vs decode steps: mean nll %.5f vs %.5f, max |d| %.2e\n", e->name,
           sum / (T - 1 - first), sumr / (T - 1 - first), worst);
    /* relative: random weights give nll ~ 70 per token */
    CHECK(ok && fabs(sum - sumr) / fabs(sumr) < 1e-3 && worst < 2e-2 * fabs(sumr) / (T - 1 - first),
          "%s: score vs decode: mean %.5f vs %.5f, max |d| %.3e", e->name, sum / (T - 1 - first),
          sumr / (T - 1 - first), worst);
    free(lg);
    alrd_gpu_free(gs);
    alrd_gpu_free(gd);
}


/* M rows of K through W (2N x K): the plain product (beta 1 onto a random Y)
 * against the host in double; the RMSNorm-fused product equals rmsnorm +
 * plain, and the SwiGLU-fused one rmsnorm + plain + silu_mul, bit for bit.
 * The plain call takes the launch's rule for warps per row, the fused ones
 * and their references ks (0: the rule); N % 8 != 0 leaves idle warps. */
static void test_gemv(int M, int N, int K, int ks) {
    const float eps = 1e-5f;
    size_t nw = (size_t)2 * N * K;
    uint16_t *w = malloc(2 * nw), *x = malloc((size_t)2 * M * K);
    float *h = malloc(sizeof(float) * M * K), *gm = malloc(sizeof(float) * K), *y0 = malloc(sizeof(float) * M * N);
    for (size_t i = 0; i < nw; i++) w[i] = alrd_f32_to_f16(rnd16(0.05f));
    for (int i = 0; i < M * K; i++) h[i] = (float)(urand() * 2 - 1) * 3.0f, x[i] = alrd_f32_to_f16(rnd16(1.0f));
    for (int i = 0; i < K; i++) gm[i] = (float)(0.5 + urand());
    for (int i = 0; i < M * N; i++) y0[i] = (float)(urand() * 2 - 1);
    uint16_t *dw = dcopy(w, 2 * nw), *dx = dcopy(x, (size_t)2 * M * K), *dxn = dmalloc((size_t)2 * M * K);
    float *dh = dcopy(h, sizeof(float) * M * K), *dg = dcopy(gm, sizeof(float) * K);
    float *dy = dcopy(y0, sizeof(float) * M * N), *dgu = dmalloc(sizeof(float) * M * 2 * N);
    float *dy2 = dmalloc(sizeof(float) * M * N), *dy3 = dmalloc(sizeof(float) * M * N);
    uint16_t *da = dmalloc((size_t)2 * M * N), *da2 = dmalloc((size_t)2 * M * N);
    int rc = alrd_gpu_gemv(dw, dx, K, dy, N, M, N, K, 1.0f, pdl(), NULL);
    CU(cudaDeviceSynchronize());
    float *y = hcopy(dy, sizeof(float) * M * N);
    double num = 0, den = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double ref = y0[(size_t)m * N + n];
            for (int k = 0; k < K; k++)
                ref += (double)alrd_f16_to_f32(w[(size_t)n * K + k]) * alrd_f16_to_f32(x[(size_t)m * K + k]);
            double d = y[(size_t)m * N + n] - ref;
            num += d * d, den += ref * ref;
        }
    CHECK(!rc && sqrt(num / den) < 1e-5, "gemv M%d N%d K%d: rel L2 %.2e against the host (rc %d)", M, N, K,
          sqrt(num / den), rc);
    alrd_gpu_gemv_op op = {.W = dw, .M = M, .N = N, .K = K, .h = dh, .gamma = dg, .eps = eps, .ldh = K, .Y = dy3,
                           .ldy = N, .k_split = ks};
    alrd_gpu_gemv_op pl = {.W = dw, .M = M, .N = N, .K = K, .X = dxn, .ldx = K, .Y = dy2, .ldy = N, .k_split = ks};
    rc = alrd_gpu_rmsnorm(dh, dg, M, K, eps, dxn, pdl(), NULL) || alrd_gpu_gemv_run(&pl, pdl(), NULL) ||
         alrd_gpu_gemv_run(&op, pdl(), NULL);
    pl.N = 2 * N, pl.Y = dgu, pl.ldy = 2 * N;
    rc = rc || alrd_gpu_gemv_run(&pl, pdl(), NULL) || alrd_gpu_silu_mul(dgu, M, N, da, pdl(), NULL);
    op.Y = NULL, op.act = da2, op.ldact = N;
    rc = rc || alrd_gpu_gemv_run(&op, pdl(), NULL);
    CU(cudaDeviceSynchronize());
    CHECK(!rc && dsame(dy2, dy3, sizeof(float) * M * N), "gemv M%d N%d K%d: RMSNorm-fused differs (rc %d)", M, N, K,
          rc);
    CHECK(!rc && dsame(da, da2, (size_t)2 * M * N), "gemv M%d N%d K%d: SwiGLU-fused differs (rc %d)", M, N, K, rc);
    printf("  gemv M%d N%d K%d (%d warps/row): rel L2 %.2e against the host; RMSNorm-fused %s, SwiGLU-fused %s\n",
           M, N, K, ks, sqrt(num / den), dsame(dy2, dy3, sizeof(float) * M * N) ? "same" : "DIFFERS",
           dsame(da, da2, (size_t)2 * M * N) ? "same" : "DIFFERS");
    free(w), free(x), free(h), free(gm), free(y0), free(y);
    void *dev[] = {dw, dx, dxn, dh, dg, dy, dgu, dy2, dy3, da, da2};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) CU(cudaFree(dev[i]));
}

int main(int argc, char **argv) {
    /* --small: for memcheck; --race: smaller still, for racecheck (which
     * instruments every shared-memory access) */
    int race = argc > 1 && !strcmp(argv[1], "--race");
    int small = race || (argc > 1 && !strcmp(argv[1], "--small"));
    if (!alrd_gpu_available()) {
        printf("test_gpu_units: no CUDA device, nothing run\n");
        return 1;
    }
    printf("== latent cache: GPU vs runtime/kv_cache.c (bit for bit)\n");
    int before = n_fail;
    if (!race) {
        test_cache(40, 2, 2, 32, 64, 1, 150, 37, 140, 0, 0, 0);
        test_cache(40, 3, 4, 8, 32, 1, 5, 100, 70, 0, 0, 0);
        /* the tiled layout (the KIVI kernel's): head dims 64 and 128, 3-bit planes, G = 8, latent value widths */
        test_cache(128, 2, 2, 32, 64, 1, 150, 37, 140, 64, 0, 64);
        test_cache(128, 3, 3, 8, 32, 1, 5, 100, 70, 64, 0, 64);
        test_cache(256, 3, 3, 16, 32, 1, 40, 50, 60, 128, 0, 128);
        test_cache(256, 8, 4, 32, 128, 1, 300, 1, 200, 128, 0, 128);
        test_cache(120, 16, 2, 8, 64, 1, 65, 0, 70, 0, 0, 40);
        test_cache(80, 16, 4, 8, 32, 1, 33, 17, 50, 0, 0, 40);
        /* the latent order (latent keys): ranks of 2 to 6 k-steps, 2/3/4/8 bits, G = 8 */
        test_cache(96, 2, 2, 32, 64, 1, 150, 37, 140, 32, 1, 0);
        test_cache(48, 2, 4, 16, 32, 1, 40, 50, 60, 48, 1, 0);
        test_cache(192, 3, 2, 8, 32, 1, 5, 100, 70, 96, 1, 0);
        test_cache(160, 8, 2, 16, 32, 1, 40, 50, 60, 80, 1, 0);
        test_cache(128, 4, 3, 32, 128, 1, 300, 1, 200, 64, 1, 0);
    }
    if (!small) {
        test_cache(96, 4, 8, 32, 128, 1, 300, 1, 200, 0, 0, 0);
        test_cache(50, 2, 3, 16, 32, 0, 77, 20, 60, 0, 0, 0);
        test_cache(33, 8, 2, 32, 0, 0, 10, 10, 20, 0, 0, 0);
        test_cache(64, 16, 2, 32, 64, 1, 65, 0, 70, 0, 0, 0);
    }
    printf("  %s\n", n_fail == before ? "ok" : "FAILED");

    printf("== fused decode attention vs reference path (3 sequences)\n");
    engine_case cases[] = {
        {"fp16 cache (RoPE'd K), GQA 8/2", 3, 256, 8, 2, 64, 512, 1000, 2, 0, 0, 16, 16, 32, 128, 1, 0},
        {"full K/V quantised k4 v2", 3, 256, 8, 2, 64, 512, 1000, 2, 0, 0, 4, 2, 32, 64, 1, 0},
        {"latent 1 group kr40 vr48 k2 v2", 3, 256, 8, 2, 64, 512, 1000, 2, 40, 48, 2, 2, 32, 64, 1, 0},
        {"latent per head kr32 vr64 k4 v4 tok", 3, 256, 8, 2, 64, 512, 1000, 1, 32, 64, 4, 4, 16, 32, 0, 0},
        {"latent rank only (16 bit)", 3, 256, 8, 2, 64, 512, 1000, 2, 56, 72, 16, 16, 32, 128, 1, 0},
        {"hd128 latent kr64 vr64 k3 v8", 3, 512, 8, 4, 128, 512, 1000, 2, 64, 64, 3, 8, 32, 64, 1, 0},
        {"MHA hd128 fp16", 2, 512, 4, 4, 128, 512, 1000, 4, 0, 0, 16, 16, 32, 128, 1, 0},
        {"latent 1 group kr48 vr40 k4 v4", 3, 256, 8, 2, 64, 512, 1000, 2, 48, 40, 4, 4, 32, 64, 1, 0},
        {"latent 3 heads kr72 vr136 k2 v2", 3, 256, 9, 3, 64, 512, 1000, 3, 72, 136, 2, 2, 32, 128, 1, 0},
        {"latent 3 heads kr72 vr184 k2 v2", 3, 256, 9, 3, 64, 512, 1000, 3, 72, 184, 2, 2, 32, 128, 1, 0},
        {"latent 3 heads kr96 vr96 k2 v2 (SmolLM2 r0.5)", 3, 256, 9, 3, 64, 512, 1000, 3, 96, 96, 2, 2, 32, 128, 1, 0},
        {"hd128 latent per head kr64 vr64 k2 v2", 3, 512, 8, 4, 128, 512, 1000, 1, 64, 64, 2, 2, 32, 64, 1, 0},
        /* full-width keys at every bit width (gpu_attn_kivi.cu) */
        {"full K/V k2 v2 GQA 9/3 (SmolLM2 KIVI-2)", 3, 256, 9, 3, 64, 512, 1000, 3, 0, 0, 2, 2, 32, 128, 1, 0},
        {"full K/V k3 v3 G16", 3, 256, 8, 2, 64, 512, 1000, 2, 0, 0, 3, 3, 16, 64, 1, 0},
        {"hd128 full K/V k8 v4", 3, 512, 8, 4, 128, 512, 1000, 4, 0, 0, 8, 4, 32, 64, 1, 0},
        {"full K k2 G8, fp16 V", 3, 256, 8, 2, 64, 512, 1000, 2, 0, 0, 2, 16, 8, 32, 1, 0},
        {"fp16 K, V v3", 3, 256, 8, 2, 64, 512, 1000, 2, 0, 0, 16, 3, 32, 64, 1, 0},
        {"hd128 full K/V k4 v8 GQA 8/2", 3, 512, 8, 2, 128, 512, 1000, 2, 0, 0, 4, 8, 32, 128, 1, 0},
        {"hd128 full K/V k3 v3 G16", 3, 512, 8, 4, 128, 512, 1000, 4, 0, 0, 3, 3, 16, 64, 1, 0},
        {"full K k2, latent V vr40 v4", 3, 256, 8, 2, 64, 512, 1000, 2, 0, 40, 2, 4, 32, 64, 1, 0},
        /* per-head latent keys (gpu_attn_kivi.cu's latent path): bits, G = 8, ranks of 2 to 5 k-steps, a k bias */
        {"latent per head kr48 vr32 k3 v4 G8 k-bias", 3, 256, 8, 2, 64, 512, 1000, 1, 48, 32, 3, 4, 8, 32, 1, 1},
        {"latent per head kr32 vr64 k2 v2 GQA 9/3", 3, 256, 9, 3, 64, 512, 1000, 1, 32, 64, 2, 2, 32, 128, 1, 0},
        /* (2-bit value latents of width 32 do not fill the tiled words: attn_latent_kernel) */
        {"latent per head kr32 vr32 k2 v2 GQA 9/3", 3, 256, 9, 3, 64, 512, 1000, 1, 32, 32, 2, 2, 32, 128, 1, 0},
        {"hd128 latent per head kr80 vr64 k8 v3 G16", 3, 512, 8, 4, 128, 512, 1000, 1, 80, 64, 8, 3, 16, 64, 1, 0},
        {"latent per head kr64 vr64 k4 v16 k-bias", 3, 256, 8, 2, 64, 512, 1000, 1, 64, 64, 4, 16, 32, 64, 1, 1},
    };
    int nc = (int)(sizeof cases / sizeof cases[0]);
    const int steps = race ? 3 : small ? 24 : 140;
    for (int i = 0; i < nc; i++)
        if (!small || i == 2 || i == 0 || i == 8 || i == 12 || i == 14 || i == nc - 5) test_engine(&cases[i], steps);
    /* these small engines split latent decode blocks by KV head (want_head_split in runtime/gpu.cu);
     * the group blocks of larger batches and contexts, forced */
    printf("== latent decode blocks per group (ALRD_GPU_HEAD_SPLIT=0)\n");
    setenv("ALRD_GPU_HEAD_SPLIT", "0", 1);
    const int grouped[3] = {2, 7, 10};
    for (int i = 0; i < 3; i++)
        if (!small || i == 0) test_engine(&cases[grouped[i]], steps);
    unsetenv("ALRD_GPU_HEAD_SPLIT");
    printf("== decode query RoPE + cache append in one launch\n");
    test_qkv_append(2, 2);
    test_qkv_append(16, 16);
    if (!small) test_qkv_append(4, 3);

    printf("== decode products (plain, RMSNorm-fused, SwiGLU-fused)\n");
    test_gemv(1, 576, 576, 0);
    test_gemv(4, 1003, 4096, 2);
    if (!small) {
        test_gemv(1, 5003, 4096, 2);
        test_gemv(2, 4500, 64, 1);
        test_gemv(3, 1536, 1024, 2);
        test_gemv(1, 1000, 4000, 0);
    }

    printf("== one-pass scoring vs decode steps\n");
    if (!race) test_score(&cases[2]);
    if (!small) {
        test_score(&cases[3]);
        test_score(&cases[1]);
    }
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
