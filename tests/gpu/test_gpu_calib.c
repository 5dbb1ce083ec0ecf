/* test_gpu_calib: calibration statistics on the GPU against the CPU's.
 *   test_gpu_calib MODEL TEXT [--samples N] [--len L]
 * Runs N samples of L tokens of TEXT (default 8 x 512) through the CPU
 * forward (fp32, the attention-input hook, cblas_dsyrk) and through the GPU
 * (calib/calib_gpu: fp16 forward, cublasDsyrk), and compares every layer's
 * Gram: rows counted, relative Frobenius difference (fails above 1e-2; the
 * two forwards differ by fp16 weights and activations) and the trace.
 * Prints both times. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../calib/calib_gpu.h"
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
    int rc = alrd_calib_grams_gpu(&m, ids, ns, len, gg, 0, &err);
    double t2 = alrd_now();
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
    free(ids);
    alrd_model_free(&m);
    return fail;
}
