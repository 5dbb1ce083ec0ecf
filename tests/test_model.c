/* End-to-end tests of the CPU runtime on the real model: logits, the
 * decode path against prefill, chat, perplexity, GGUF vs HF export. */
#include "testutil.h"

#include <math.h>

#include "../runtime/context.h"
#include "../runtime/perplexity.h"
#include "../runtime/sampler.h"

static alrd_model g_model;
static int g_loaded;

static alrd_model *model_or_skip(void) {
    ALRD_MODEL_OR_SKIP();
    if (!g_loaded) {
        alrd_error err;
        if (alrd_model_open(&g_model, ALRD_TEST_MODEL, &err)) fail_msg("%s", err.msg);
        g_loaded = 1;
    }
    return &g_model;
}

static float *prompt_logits(alrd_model *m, const char *text, const alrd_cache_opts *co, int one_by_one) {
    alrd_error err;
    int32_t *ids;
    size_t n;
    assert_int_equal(alrd_tokenizer_encode(m->tok, text, strlen(text), 1, 1, &ids, &n, &err), 0);
    alrd_ctx *c;
    assert_int_equal(alrd_ctx_new(&c, m, 256, 64, co, &err), 0);
    float *lg = malloc(sizeof(float) * m->cfg.vocab_size);
    if (one_by_one) {
        for (size_t i = 0; i < n; i++) assert_int_equal(alrd_ctx_forward(c, ids + i, 1, lg, 0, &err), 0);
    } else {
        assert_int_equal(alrd_ctx_forward(c, ids, (int)n, lg, 0, &err), 0);
    }
    alrd_ctx_free(c);
    free(ids);
    return lg;
}

/* Last-position logits of a fixed prompt against transformers'
 * LlamaForCausalLM (fp32) on the exported weights: argmax 7042 (" Paris"),
 * and the values below are transformers' (hf_logits_at in
 * tests/crosscheck/results/smollm2_gpu_vs_hf.json), to 1e-3. */
static void test_logits_pinned(void **state) {
    (void)state;
    alrd_model *m = model_or_skip();
    float *lg = prompt_logits(m, "The capital of France is", NULL, 0);
    assert_int_equal(alrd_argmax(lg, m->cfg.vocab_size), 7042);
    const int ids[4] = {7042, 253, 260, 1};
    const float want[4] = {17.37126f, 12.10141f, 14.88859f, -11.87189f};
    for (int i = 0; i < 4; i++) {
        print_message("logit[%d] = %.5f\n", ids[i], lg[ids[i]]);
        assert_true(fabsf(lg[ids[i]] - want[i]) < 1e-3f);
    }
    free(lg);
}

/* Tokens one at a time through the cache give the logits of one prefill. */
static void test_decode_matches_prefill(void **state) {
    (void)state;
    alrd_model *m = model_or_skip();
    const char *text = "In 1923, the physicist Arthur Compton showed that X-rays scatter from electrons";
    float *a = prompt_logits(m, text, NULL, 0), *b = prompt_logits(m, text, NULL, 1);
    float worst = 0;
    for (int i = 0; i < m->cfg.vocab_size; i++) worst = fmaxf(worst, fabsf(a[i] - b[i]));
    print_message("max |prefill - decode| = %g\n", worst);
    assert_true(worst < 1e-3f);
    free(a);
    free(b);
}

/* Greedy chat answer names Paris. */
static void test_chat_paris(void **state) {
    (void)state;
    alrd_model *m = model_or_skip();
    alrd_error err;
    char *text = alrd_chat_format(&m->vocab, NULL, "What is the capital of France?", &err);
    assert_non_null(text);
    int32_t *ids;
    size_t n;
    assert_int_equal(alrd_tokenizer_encode(m->tok, text, strlen(text), 1, 1, &ids, &n, &err), 0);
    alrd_ctx *c;
    assert_int_equal(alrd_ctx_new(&c, m, 256, (int)n, NULL, &err), 0);
    float *lg = malloc(sizeof(float) * m->cfg.vocab_size);
    assert_int_equal(alrd_ctx_forward(c, ids, (int)n, lg, 0, &err), 0);
    int32_t out[32];
    int k = 0;
    for (; k < 32; k++) {
        out[k] = alrd_argmax(lg, m->cfg.vocab_size);
        if (alrd_tokenizer_is_eog(m->tok, out[k])) break;
        assert_int_equal(alrd_ctx_forward(c, &out[k], 1, lg, 0, &err), 0);
    }
    char *answer;
    assert_int_equal(alrd_tokenizer_decode(m->tok, out, k, 0, &answer, &err), 0);
    print_message("answer: %s\n", answer);
    assert_non_null(strstr(answer, "Paris"));
    free(answer);
    free(lg);
    free(ids);
    free(text);
    alrd_ctx_free(c);
}

static int32_t *eval_tokens(alrd_model *m, size_t *n) {
    char path[512];
    snprintf(path, sizeof path, "%s/wikitext-2-raw/wiki.test.raw", alrd_test_data_dir());
    char *text;
    size_t len;
    alrd_error err;
    if (alrd_read_file(path, 1 << 24, &text, &len, &err)) return NULL;
    int32_t *ids;
    if (alrd_tokenizer_encode(m->tok, text, len, 1, 0, &ids, n, &err)) fail_msg("%s", err.msg);
    free(text);
    return ids;
}

/* Perplexity of the first two chunks at ctx 512 (llama.cpp convention):
 * transformers gives 21.279902 on the same tokens (hf_ppl_first_2_chunks in
 * tests/crosscheck/results/smollm2_gpu_vs_hf.json); the whole-file number,
 * 22.9007, matches it to 1e-6 (README). */
static void test_ppl_two_chunks(void **state) {
    (void)state;
    alrd_model *m = model_or_skip();
    char p[512];
    ALRD_DATA_OR_SKIP(p, "wikitext-2-raw/wiki.test.raw");
    size_t n;
    int32_t *ids = eval_tokens(m, &n);
    assert_int_equal(n, 304830);
    alrd_error err;
    alrd_ctx *c;
    assert_int_equal(alrd_ctx_new(&c, m, 512, 512, NULL, &err), 0);
    alrd_ppl_opts o = {.ctx = 512, .max_chunks = 2};
    alrd_ppl_result r;
    assert_int_equal(alrd_perplexity_tokens(c, NULL, ids, n, 0, 1, &o, &r, &err), 0);
    print_message("PPL = %.4f +/- %.4f over %zu tokens\n", r.ppl, r.ppl_stderr, r.n_scored);
    assert_int_equal(r.n_scored, 2 * 255);
    assert_true(fabs(r.ppl - 21.2799) < 0.002);
    /* shards: chunk 0 alone and chunk 1 alone combine, weighted by tokens, to the same mean */
    alrd_ppl_result s0, s1;
    o.max_chunks = 1;
    assert_int_equal(alrd_perplexity_tokens(c, NULL, ids, n, 0, 1, &o, &s0, &err), 0);
    o.first_chunk = 1;
    assert_int_equal(alrd_perplexity_tokens(c, NULL, ids, n, 0, 1, &o, &s1, &err), 0);
    assert_int_equal(s1.n_scored, 255);
    assert_true(fabs((s0.nll * s0.n_scored + s1.nll * s1.n_scored) / r.n_scored - r.nll) < 1e-9);
    assert_true(fabs(s1.nll - s0.nll) > 1e-3); /* a different chunk */
    o.first_chunk = (int)(n / 512); /* past the last chunk */
    assert_int_equal(alrd_perplexity_tokens(c, NULL, ids, n, 0, 1, &o, &s1, &err), -1);
    o.first_chunk = 0;
    o.max_chunks = 2;
    /* the decode path over a 16-bit cache scores the same tokens the same way */
    o.force_decode = 1;
    o.max_chunks = 1;
    alrd_ppl_result d, p1;
    assert_int_equal(alrd_perplexity_tokens(c, NULL, ids, n, 0, 1, &o, &d, &err), 0);
    o.force_decode = -1;
    assert_int_equal(alrd_perplexity_tokens(c, NULL, ids, n, 0, 1, &o, &p1, &err), 0);
    print_message("chunk 1: prefill %.5f, decode path %.5f\n", p1.ppl, d.ppl);
    assert_true(fabs(d.ppl - p1.ppl) / p1.ppl < 1e-4);
    alrd_ctx_free(c);
    free(ids);
}

/* A 4-bit KIVI cache costs a little perplexity, a 2-bit one more, and the
 * KL against the 16-bit cache orders the same way. */
static void test_kivi_cache_ppl(void **state) {
    (void)state;
    ALRD_SKIP_IF_QUICK();
    alrd_model *m = model_or_skip();
    char p[512];
    ALRD_DATA_OR_SKIP(p, "wikitext-2-raw/wiki.test.raw");
    size_t n;
    int32_t *ids = eval_tokens(m, &n);
    alrd_error err;
    alrd_cache_opts plain, q4, q2;
    alrd_cache_opts_default(m, &plain);
    q4 = plain;
    q4.k_bits = q4.v_bits = 4;
    q2 = plain;
    q2.k_bits = q2.v_bits = 2;
    alrd_cache_opts q2s = q2; /* KIVI-2 with the first token kept unquantised (an attention sink) */
    q2s.sink = 1;
    alrd_ctx *ref, *c4, *c2, *c2s;
    assert_int_equal(alrd_ctx_new(&ref, m, 512, 512, &plain, &err), 0);
    assert_int_equal(alrd_ctx_new(&c4, m, 512, 512, &q4, &err), 0);
    assert_int_equal(alrd_ctx_new(&c2, m, 512, 512, &q2, &err), 0);
    assert_int_equal(alrd_ctx_new(&c2s, m, 512, 512, &q2s, &err), 0);
    { /* sinks: the CPU cache only (the GPU refuses them by name), at most the context */
        alrd_cache_opts bad = q2s;
        alrd_ctx *none = NULL;
        bad.backend = ALRD_BACKEND_GPU;
        assert_int_equal(alrd_ctx_new(&none, m, 512, 512, &bad, &err), -1);
        assert_non_null(strstr(err.msg, "sink"));
        bad.backend = ALRD_BACKEND_CPU;
        bad.sink = 513;
        assert_int_equal(alrd_ctx_new(&none, m, 512, 512, &bad, &err), -1);
        assert_non_null(strstr(err.msg, "sink"));
        assert_null(none);
    }
    alrd_ppl_opts o = {.ctx = 512, .max_chunks = 1};
    alrd_ppl_result r4, r2, r2s;
    assert_int_equal(alrd_perplexity_tokens(c4, ref, ids, n, 0, 1, &o, &r4, &err), 0);
    assert_int_equal(alrd_perplexity_tokens(c2, ref, ids, n, 0, 1, &o, &r2, &err), 0);
    assert_int_equal(alrd_perplexity_tokens(c2s, ref, ids, n, 0, 1, &o, &r2s, &err), 0);
    print_message("KIVI-4: PPL %.4f KL %.5f top1 %.3f; KIVI-2: PPL %.4f KL %.5f top1 %.3f; with a sink: PPL %.4f KL %.5f\n",
                  r4.ppl, r4.kl, r4.top1, r2.ppl, r2.kl, r2.top1, r2s.ppl, r2s.kl);
    /* one sink token: KL 0.161 -> 0.096 on this chunk (CPU, SmolLM2 Q4_1) */
    assert_true(r2s.kl < 0.8 * r2.kl && r2s.ppl < r2.ppl);
    assert_true(r4.kl > 0 && r4.kl < r2.kl);
    assert_true(r4.top1 > r2.top1 && r4.top1 > 0.8);
    assert_true(r4.ppl < r2.ppl);
    /* the quantized cache holds fewer bytes than the 16-bit one */
    assert_true(alrd_ctx_cache_bytes(c2) < alrd_ctx_cache_bytes(c4));
    assert_true(alrd_ctx_cache_bytes(c4) < alrd_ctx_cache_bytes(ref));
    alrd_ctx_free(ref);
    alrd_ctx_free(c4);
    alrd_ctx_free(c2);
    alrd_ctx_free(c2s);
    free(ids);
}

/* The GGUF and its HF export give bit-identical logits. */
static void test_gguf_and_hf_export_identical(void **state) {
    (void)state;
    ALRD_SKIP_IF_QUICK(); /* test_hf's end-to-end export covers the sanitized path */
    alrd_model *m = model_or_skip();
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char dir[512], cmd[1400];
    snprintf(dir, sizeof dir, "%s/hf", alrd_test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s/alrd-convert %s --to-hf %s --dtype f32 >/dev/null", build, ALRD_TEST_MODEL, dir);
    assert_int_equal(system(cmd), 0);
    alrd_model h;
    alrd_error err;
    assert_int_equal(alrd_model_open(&h, dir, &err), 0);
    const char *text = "Zürich, Malmö and Kraków are cities; 東京 is";
    float *a = prompt_logits(m, text, NULL, 0), *b = prompt_logits(&h, text, NULL, 0);
    assert_memory_equal(a, b, sizeof(float) * m->cfg.vocab_size);
    free(a);
    free(b);
    alrd_model_free(&h);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static int teardown(void **state) {
    (void)state;
    if (g_loaded) alrd_model_free(&g_model);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_pinned),
        cmocka_unit_test(test_decode_matches_prefill),
        cmocka_unit_test(test_chat_paris),
        cmocka_unit_test(test_ppl_two_chunks),
        cmocka_unit_test(test_kivi_cache_ppl),
        cmocka_unit_test(test_gguf_and_hf_export_identical),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
