/* test_gpu_calib: calibration on the GPU against the CPU's.
 *   test_gpu_calib MODEL TEXT [--samples N] [--len L]
 * 1. Statistics: N samples of L tokens of TEXT (default 8 x 512) through the
 *    CPU forward (fp32, the attention-input hook, cblas_dsyrk) and through
 *    the GPU (calib/calib_gpu: fp16 forward, cublasDsyrk); every layer's
 *    Gram: rows counted, relative Frobenius difference (fails above 1e-2; the
 *    two forwards differ by fp16 weights and activations) and the trace.
 * 2. Probes: alrd_calib on the CPU and on the GPU (ALRD_CALIB_GPU, its
 *    statistics and SVDs on the GPU too), then each module's sensitivity probe (truncated at
 *    half rank alone) and the measure at ratio-0.5 ranks: the base
 *    cross-entropy within 0.2%, each module's probe KL within 10% of the
 *    fp32 CPU's (or of 1% of the mean, for modules that lose next to
 *    nothing), the sum within 3%, the measured KL within 5%. A probe
 *    that replaced the wrong rows, or did not put them back, is off by
 *    orders of magnitude. Prints both times. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../calib/calib_gpu.h"
#include "../../calib/compress.h"
#include "../../calib/gram.h"
#include "../../runtime/context.h"

typedef struct {
    alrd_gram *g;
    int failed;
} hook_state;

static void on_input(void *user, int layer, const float *xn, int T) {
    hook_state *h = user;
    alrd_error err;
    if (alrd_gram_add(&h->g[layer], xn, T, &err)) h->failed = 1;
}

/* Sensitivities and the measure through calib c (its own statistics and decomposition). */
static int run_probes(alrd_calib *c, double *kl, int *k_rank, int *v_rank, double *meas, double *secs) {
    alrd_error err;
    alrd_decomp *d = NULL;
    double ce;
    if (alrd_decomp_new(&d, c, 1, 0, &err)) {
        printf("FAIL decomposition: %s\n", err.msg);
        return -1;
    }
    const int n = 2 * alrd_calib_model(c)->cfg.n_layers, pr = alrd_decomp_full_rank(d) / 2;
    double t0 = alrd_now();
    int rc = alrd_decomp_sensitivities(d, pr, &err) || alrd_decomp_ranks(d, 0.5, 0, k_rank, v_rank, &err) ||
             alrd_decomp_measure(d, k_rank, v_rank, meas, &ce, &err);
    *secs = alrd_now() - t0;
    for (int i = 0; i < n && !rc; i++) kl[i] = alrd_decomp_probe_kl(d, i);
    if (rc) printf("FAIL probes: %s\n", err.msg);
    alrd_decomp_free(d);
    return rc ? -1 : 0;
}

static int probes(alrd_model *m, const int32_t *ids, int ns, int len) {
    const int L = m->cfg.n_layers, n = 2 * L;
    alrd_error err;
    alrd_calib *cc = NULL, *cg = NULL;
    double *kc = calloc(n, sizeof(double)), *kg = calloc(n, sizeof(double)), mc = 0, mg = 0, tc = 0, tg = 0;
    int *r = calloc(4 * (size_t)L, sizeof(int)), fail = 0;
    if (alrd_calib_new(&cc, m, ids, ns, len, 256, 1, 0, &err) || run_probes(cc, kc, r, r + L, &mc, &tc) ||
        alrd_calib_new(&cg, m, ids, ns, len, 256, 1, ALRD_CALIB_GPU, &err) ||
        run_probes(cg, kg, r + 2 * L, r + 3 * L, &mg, &tg)) {
        printf("FAIL probes: %s\n", err.msg);
        fail = 1;
    } else if (!alrd_calib_on_gpu(cg)) {
        printf("FAIL probes: the GPU calibration ran on the CPU\n");
        fail = 1;
    } else {
        double sc = 0, sg = 0, worst = 0;
        int worst_i = 0, diff = 0;
        for (int i = 0; i < n; i++) sc += kc[i], sg += kg[i];
        const double floor = 0.01 * sc / n; /* modules with next to no loss: compared at 1% of the mean */
        for (int i = 0; i < n; i++) {
            const double rel = fabs(kg[i] - kc[i]) / (kc[i] > floor ? kc[i] : floor);
            if (!(rel <= worst)) worst = rel, worst_i = i;
            if (!(rel <= 0.10)) fail = 1;
        }
        for (int l = 0; l < 2 * L; l++) diff += r[l] != r[2 * L + l];
        const double bc = alrd_calib_base_ce(cc), bg = alrd_calib_base_ce(cg);
        if (!(fabs(bg - bc) <= 2e-3 * bc) || !(fabs(sg - sc) <= 0.03 * sc) || !(fabs(mg - mc) <= 0.05 * mc)) fail = 1;
        printf("%s: probes: base CE cpu %.5f gpu %.5f; probe KL sum cpu %.5f gpu %.5f, worst module %d: %.5f vs "
               "%.5f (%.1f%%); measure KL cpu %.5f gpu %.5f; %d of %d ranks differ; CPU %.2f s, GPU %.2f s\n",
               fail ? "FAIL" : "ok", bc, bg, sc, sg, worst_i, kc[worst_i], kg[worst_i], 100 * worst, mc, mg, diff,
               2 * L, tc, tg);
    }
    alrd_calib_free(cc);
    alrd_calib_free(cg);
    free(kc), free(kg), free(r);
    return fail;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: test_gpu_calib MODEL TEXT [--samples N] [--len L]\n");
        return 2;
    }
    int ns = 8, len = 512;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--samples")) ns = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--len")) len = atoi(argv[i + 1]);
    }
    alrd_model m;
    alrd_error err;
    char *text = NULL;
    size_t tl = 0, n = 0;
    int32_t *ids = NULL;
    if (alrd_model_open(&m, argv[1], &err) || alrd_read_file(argv[2], (size_t)1 << 31, &text, &tl, &err) ||
        alrd_tokenizer_encode(m.tok, text, tl, 1, 0, &ids, &n, &err)) {
        printf("FAIL %s\n", err.msg);
        return 1;
    }
    free(text);
    if (n < (size_t)ns * len) {
        printf("FAIL %s: %zu tokens, need %d\n", argv[2], n, ns * len);
        return 1;
    }
    int L = m.cfg.n_layers, H = m.cfg.hidden, fail = 0;
    alrd_gram *gc = calloc(L, sizeof *gc), *gg = calloc(L, sizeof *gg);
    for (int l = 0; l < L; l++)
        if (alrd_gram_init(&gc[l], H, "cpu", &err) || alrd_gram_init(&gg[l], H, "gpu", &err)) {
            printf("FAIL %s\n", err.msg);
            return 1;
        }
    double t0 = alrd_now();
    alrd_cache_opts co;
    alrd_cache_opts_default(&m, &co);
    co.backend = ALRD_BACKEND_CPU;
    alrd_ctx *ctx;
    hook_state hs = {.g = gc};
    if (alrd_ctx_new(&ctx, &m, len, len, &co, &err)) {
        printf("FAIL %s\n", err.msg);
        return 1;
    }
    alrd_ctx_set_attn_hook(ctx, on_input, &hs);
    for (int s = 0; s < ns; s++) {
        alrd_ctx_reset(ctx);
        if (alrd_ctx_forward(ctx, ids + (size_t)s * len, len, NULL, 0, &err)) {
            printf("FAIL cpu forward: %s\n", err.msg);
            return 1;
        }
    }
    alrd_ctx_free(ctx);
    double t1 = alrd_now();
    alrd_gpu *cg = NULL;
    int rc = alrd_calib_gpu_open(&cg, &m, len, &err);
    if (!rc) rc = alrd_calib_gpu_grams(cg, ids, ns, len, gg, 0, &err);
    double t2 = alrd_now();
    alrd_calib_gpu_free(cg);
    if (rc) {
        printf("FAIL gpu statistics: %s\n", rc > 0 ? "no GPU" : err.msg);
        return 1;
    }
    double worst = 0;
    int worst_l = 0;
    for (int l = 0; l < L; l++) {
        alrd_gram_finish(&gc[l]);
        alrd_gram_finish(&gg[l]);
        double num = 0, den = 0, trc = 0, trg = 0;
        for (size_t i = 0; i < (size_t)H * H; i++) {
            double d = gg[l].c[i] - gc[l].c[i];
            num += d * d;
            den += gc[l].c[i] * gc[l].c[i];
        }
        for (int i = 0; i < H; i++) trc += gc[l].c[(size_t)i * H + i], trg += gg[l].c[(size_t)i * H + i];
        double r = sqrt(num / den);
        if (r > worst || r != r) worst = r, worst_l = l;
        if (l == 0 || l == L - 1 || r > 1e-2 || r != r)
            printf("layer %2d: rel Frobenius %.3e  trace cpu %.6e gpu %.6e\n", l, r, trc, trg);
        if (!(r <= 1e-2) || gc[l].n_rows != gg[l].n_rows) fail = 1;
    }
    printf("%s: %d x %d tokens: rows %lld / %lld, worst rel Frobenius %.3e (layer %d); CPU %.2f s, GPU %.2f s\n",
           fail ? "FAIL" : "ok", ns, len, (long long)gc[0].n_rows, (long long)gg[0].n_rows, worst, worst_l, t1 - t0,
           t2 - t1);
    for (int l = 0; l < L; l++) alrd_gram_free(&gc[l]), alrd_gram_free(&gg[l]);
    free(gc);
    free(gg);
    if (probes(&m, ids, ns, len)) fail = 1;
    free(ids);
    alrd_model_free(&m);
    return fail;
}
