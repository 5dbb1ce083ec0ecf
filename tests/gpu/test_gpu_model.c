/* test_gpu_model: the GPU backend against the CPU path on a real model.
 *   test_gpu_model MODEL TEXT [--kv-bits B] [--chunks K] [--full]
 * For the model's own cache settings (and --kv-bits B if given):
 *   1. logits of a 200-token prefill and of 56 decode steps (crossing a
 *      residual-window boundary) from a CPU and a GPU context: relative L2
 *      error, max |diff|, argmax agreement;
 *   2. perplexity on K chunks of TEXT (--ctx 512): CPU, GPU one-pass scoring,
 *      GPU decode steps (fused attention, CUDA graph) and GPU decode steps
 *      with the reference attention path;
 *   3. --full: GPU perplexity of the whole file (one-pass), with its time.
 * Exits 1 when a tolerance is missed: prefill logits rel L2 > 2e-3; decode
 * logits > 2e-2 (fp16 cache) or 5e-2 (quantised); argmax agreement < 90%;
 * perplexity more than 0.5% apart (>= 4 bits) or 1.5% (2-3 bits). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/context.h"
#include "../../runtime/perplexity.h"

static int n_fail;

static double rel_l2(const float *a, const float *b, int n, double *maxabs) {
    double num = 0, den = 0, m = 0;
    for (int i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
        if (fabs(d) > m || d != d) m = d != d ? INFINITY : fabs(d);
    }
    *maxabs = m;
    return sqrt(num / (den > 0 ? den : 1));
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) b = x[i] > x[b] ? i : b;
    return b;
}

/* Lowest cache bits of any layer under co. */
static int min_bits(const alrd_model *m, const alrd_cache_opts *co) {
    int mb = 16;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        int kb = co->k_bits ? co->k_bits : m->lowrank.k_bits[l], vb = co->v_bits ? co->v_bits : m->lowrank.v_bits[l];
        if (kb < mb) mb = kb;
        if (vb < mb) mb = vb;
    }
    return mb;
}

/* Tolerances. A quantised cache amplifies the GPU's fp16 rounding: a group's
 * min/max or a code at a rounding boundary moves by an ulp and a code flips,
 * so decode-step logits and perplexity drift further at fewer bits (on the
 * CPU alone, rounding the cached latents to fp16 moved a 2-bit cache's PPL
 * on 2 chunks by 0.55%). The prefill logits and an fp16 cache stay tight. */
/* The worst decode step of a 2-bit cache is one flipped code away from the
 * CPU's: on a rank-0.5 2-bit file it measured 0.059 (commit 0016740) and
 * 0.105 (A_v folded into o_proj, fused latent kernel v4) while the same
 * builds' 4-chunk PPL differed from the CPU's by +0.42% and -0.05%. A wrong
 * scale or layout moves it towards 1, and the PPL bound below as well. */
static double tol_decode(int bits) { return bits >= 16 ? 2e-2 : bits >= 4 ? 5e-2 : 0.15; }
static double tol_ppl(int bits) { return bits >= 4 ? 5e-3 : 1.5e-2; }

static void logits_check(alrd_model *m, const alrd_cache_opts *co, const int32_t *ids, const char *label) {
    const int P = 200, steps = 56, nv = m->cfg.vocab_size;
    alrd_error err;
    alrd_cache_opts cc = *co, gc = *co;
    cc.backend = ALRD_BACKEND_CPU;
    gc.backend = ALRD_BACKEND_GPU;
    alrd_ctx *c = NULL, *g = NULL;
    if (alrd_ctx_new(&c, m, 512, 512, &cc, &err) || alrd_ctx_new(&g, m, 512, 512, &gc, &err)) {
        printf("FAIL %s: %s\n", label, err.msg);
        n_fail++;
        alrd_ctx_free(c);
        return;
    }
    float *lc = malloc(sizeof(float) * nv), *lg = malloc(sizeof(float) * nv);
    double worst = 0, worst_abs = 0, first_r = 0, first_a = 0;
    int agree = 0, n = 0, ok = 1;
    for (int s = -1; s < steps && ok; s++) {
        if (s < 0) ok = !alrd_ctx_forward(c, ids, P, lc, 0, &err) && !alrd_ctx_forward(g, ids, P, lg, 0, &err);
        else ok = !alrd_ctx_forward(c, ids + P + s, 1, lc, 0, &err) && !alrd_ctx_forward(g, ids + P + s, 1, lg, 0, &err);
        if (!ok) break;
        double ma, r = rel_l2(lg, lc, nv, &ma);
        if (s < 0) first_r = r, first_a = ma;
        if (r > worst || r != r) worst = r;
        if (ma > worst_abs) worst_abs = ma;
        agree += argmax(lg, nv) == argmax(lc, nv);
        n++;
    }
    if (!ok) {
        printf("FAIL %s: forward: %s\n", label, err.msg);
        n_fail++;
    }
    printf("%s: logits GPU vs CPU: prefill(%d) rel L2 %.2e max |d| %.3f; %d decode steps worst rel L2 %.2e max |d| %.3f; "
           "argmax agrees %d/%d\n",
           label, P, first_r, first_a, steps, worst, worst_abs, agree, n);
    double tol = tol_decode(min_bits(m, co));
    if (first_r > 2e-3 || worst > tol || agree < n * 9 / 10) {
        printf("FAIL %s: logits rel L2 prefill %.3e (limit 2e-3), decode %.3e (limit %.0e), argmax %d/%d\n", label,
               first_r, worst, tol, agree, n);
        n_fail++;
    }
    free(lc);
    free(lg);
    alrd_ctx_free(c);
    alrd_ctx_free(g);
}

static int ppl(alrd_model *m, const alrd_cache_opts *co, int backend, int flags, const int32_t *ids, size_t n,
               int chunks, alrd_ppl_result *r) {
    alrd_error err;
    alrd_cache_opts o = *co;
    o.backend = backend;
    o.gpu_flags = flags;
    alrd_ctx *c = NULL;
    if (alrd_ctx_new(&c, m, 512, 512, &o, &err)) {
        printf("FAIL ppl ctx: %s\n", err.msg);
        n_fail++;
        return -1;
    }
    alrd_ppl_opts po = {.ctx = 512, .max_chunks = chunks, .force_decode = 0, .progress = 0};
    int rc = alrd_perplexity_tokens(c, NULL, ids, n, alrd_tokenizer_add_bos(m->tok), alrd_tokenizer_bos(m->tok), &po, r,
                                    &err);
    if (rc) {
        printf("FAIL ppl: %s\n", err.msg);
        n_fail++;
    }
    alrd_ctx_free(c);
    return rc;
}

static void run_config(alrd_model *m, const alrd_cache_opts *co, const int32_t *ids, size_t n, int chunks, int full,
                       const char *label) {
    logits_check(m, co, ids, label);
    alrd_ppl_result rc, rs, rd, rr;
    if (ppl(m, co, ALRD_BACKEND_CPU, 0, ids, n, chunks, &rc) ||
        ppl(m, co, ALRD_BACKEND_GPU, 0, ids, n, chunks, &rs) ||
        ppl(m, co, ALRD_BACKEND_GPU, ALRD_GPU_STEPWISE, ids, n, chunks, &rd) ||
        ppl(m, co, ALRD_BACKEND_GPU, ALRD_GPU_STEPWISE | ALRD_GPU_REF_ATTN | ALRD_GPU_NO_GRAPH, ids, n, 1, &rr))
        return;
    printf("%s: ppl %d chunks: CPU %.4f (%.1f s) | GPU one-pass %.4f (%.2f s) | GPU decode steps %.4f (%.2f s) | "
           "GPU reference attention, 1 chunk %.4f (%.2f s)\n",
           label, chunks, rc.ppl, rc.seconds, rs.ppl, rs.seconds, rd.ppl, rd.seconds, rr.ppl, rr.seconds);
    double d1 = fabs(rs.ppl / rc.ppl - 1), d2 = fabs(rd.ppl / rc.ppl - 1);
    printf("%s: GPU/CPU - 1: one-pass %+.3f%%, decode steps %+.3f%%\n", label, 100 * (rs.ppl / rc.ppl - 1),
           100 * (rd.ppl / rc.ppl - 1));
    double tol = tol_ppl(min_bits(m, co));
    if (d1 > tol || d2 > tol) {
        printf("FAIL %s: GPU ppl more than %.1f%% from the CPU's\n", label, 100 * tol);
        n_fail++;
    }
    if (full) {
        alrd_ppl_result rf;
        if (!ppl(m, co, ALRD_BACKEND_GPU, 0, ids, n, 0, &rf))
            printf("%s: whole file on the GPU (one-pass): PPL = %.4f +/- %.4f, %d chunks, %zu scored, %.2f s\n", label,
                   rf.ppl, rf.ppl_stderr, rf.n_chunks, rf.n_scored, rf.seconds);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: test_gpu_model MODEL TEXT [--kv-bits B] [--chunks K] [--full]\n");
        return 2;
    }
    int kvb = 0, chunks = 4, full = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--kv-bits") && i + 1 < argc) kvb = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--chunks") && i + 1 < argc) chunks = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--full")) full = 1;
    }
    if (!alrd_ctx_gpu_available()) {
        printf("test_gpu_model: no GPU\n");
        return 1;
    }
    alrd_model m;
    alrd_error err;
    if (alrd_model_open(&m, argv[1], &err)) {
        printf("FAIL %s\n", err.msg);
        return 1;
    }
    char *text = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    size_t n = 0;
    if (alrd_read_file(argv[2], (size_t)1 << 31, &text, &len, &err) ||
        alrd_tokenizer_encode(m.tok, text, len, 1, 0, &ids, &n, &err)) {
        printf("FAIL %s\n", err.msg);
        return 1;
    }
    free(text);
    alrd_cache_opts co;
    alrd_cache_opts_default(&m, &co);
    char label[256];
    snprintf(label, sizeof label, "%s [%s cache]", argv[1], m.has_lowrank ? "file's" : "fp16");
    run_config(&m, &co, ids, n, chunks, full, label);
    if (kvb) {
        co.k_bits = co.v_bits = kvb;
        snprintf(label, sizeof label, "%s [kv-bits %d]", argv[1], kvb);
        run_config(&m, &co, ids, n, chunks, full, label);
    }
    free(ids);
    alrd_model_free(&m);
    printf("test_gpu_model: %s\n", n_fail ? "FAILED" : "ok");
    return n_fail ? 1 : 0;
}
