/* End-to-end tests of alrd-compress on the real model: rank 1.0 reproduces
 * the model, a searched ranks.json fed back gives a byte-identical file,
 * whitening and the search lower the measured calibration loss. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <math.h>

#include "../runtime/context.h"
#include "../runtime/perplexity.h"

#define CALIB "wikitext-2/wiki.valid.tokens"
#define QUICK "--calib-samples 4 --calib-len 256 --probe-tokens 128"

static const char *build_dir(void) { return getenv("BUILD") ? getenv("BUILD") : "build"; }

/* Runs alrd-compress with args, output OUT under the temp dir; returns exit status. */
static int compress(const char *out, const char *args) {
    char calib[512], cmd[2048];
    snprintf(calib, sizeof calib, "%s/%s", alrd_test_data_dir(), CALIB);
    snprintf(cmd, sizeof cmd, "%s/alrd-compress %s -o %s/%s --calib %s %s --report %s/%s.json 2>/dev/null",
             build_dir(), ALRD_TEST_MODEL, alrd_test_tmpdir(), out, calib, args, alrd_test_tmpdir(), out);
    return system(cmd);
}

static double report_number(const char *out, const char *key) {
    char path[512], *text;
    size_t n;
    alrd_error err;
    snprintf(path, sizeof path, "%s/%s.json", alrd_test_tmpdir(), out);
    if (alrd_read_file(path, 1 << 24, &text, &n, &err)) fail_msg("%s", err.msg);
    cJSON *j = cJSON_Parse(text);
    free(text);
    assert_non_null(j);
    cJSON *v = cJSON_GetObjectItem(j, key);
    assert_true(cJSON_IsNumber(v));
    double x = v->valuedouble;
    cJSON_Delete(j);
    return x;
}

static double ppl_first_chunk(const char *model_path) {
    alrd_model m;
    alrd_error err;
    char path[512], *text;
    size_t len, n;
    int32_t *ids;
    if (alrd_model_open(&m, model_path, &err)) fail_msg("%s", err.msg);
    snprintf(path, sizeof path, "%s/wikitext-2-raw/wiki.test.raw", alrd_test_data_dir());
    assert_int_equal(alrd_read_file(path, 1 << 24, &text, &len, &err), 0);
    assert_int_equal(alrd_tokenizer_encode(m.tok, text, len, 1, 0, &ids, &n, &err), 0);
    free(text);
    alrd_ctx *c;
    assert_int_equal(alrd_ctx_new(&c, &m, 512, 512, NULL, &err), 0);
    alrd_ppl_opts o = {.ctx = 512, .max_chunks = 2};
    alrd_ppl_result r;
    assert_int_equal(alrd_perplexity_tokens(c, NULL, ids, n, 0, 1, &o, &r, &err), 0);
    alrd_ctx_free(c);
    alrd_model_free(&m);
    free(ids);
    return r.ppl;
}

static void setup_or_skip(void) {
    char p[512];
    ALRD_MODEL_OR_SKIP();
    ALRD_DATA_OR_SKIP(p, CALIB);
    ALRD_DATA_OR_SKIP(p, "wikitext-2-raw/wiki.test.raw");
}

/* Rank ratio 1.0 keeps every rank full: the file reproduces the model's
 * perplexity within 0.1% (f16 weights included). */
static void test_full_rank_reproduces(void **state) {
    (void)state;
    ALRD_SKIP_IF_QUICK();
    setup_or_skip();
    assert_int_equal(compress("full.alrd", "--rank-ratio 1.0 " QUICK), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/full.alrd", alrd_test_tmpdir());
    double base = ppl_first_chunk(ALRD_TEST_MODEL), full = ppl_first_chunk(path);
    print_message("PPL uncompressed %.5f, rank 1.0 %.5f\n", base, full);
    assert_true(fabs(full - base) / base < 1e-3);
    assert_true(report_number("full.alrd", "kv_bytes_per_token_after") ==
                report_number("full.alrd", "kv_bytes_per_token_before"));
}

/* The ranks a search writes, fed back with --ranks, give the same bytes. */
static void test_ranks_json_roundtrip(void **state) {
    (void)state;
    setup_or_skip();
    assert_int_equal(compress("s.alrd", "--rank-ratio 0.5 " QUICK), 0);
    char args[1024], a[512], b[512], cmd[1200];
    snprintf(args, sizeof args, "--ranks %s/s.alrd.ranks.json " QUICK, alrd_test_tmpdir());
    assert_int_equal(compress("r.alrd", args), 0);
    snprintf(a, sizeof a, "%s/s.alrd", alrd_test_tmpdir());
    snprintf(b, sizeof b, "%s/r.alrd", alrd_test_tmpdir());
    snprintf(cmd, sizeof cmd, "cmp -s %s %s", a, b);
    assert_int_equal(system(cmd), 0);
    /* the budget holds: half of the K/V dims kept, a 2x smaller cache */
    double before = report_number("s.alrd", "kv_bytes_per_token_before");
    double after = report_number("s.alrd", "kv_bytes_per_token_after");
    print_message("KV bytes/token %.1f -> %.1f\n", before, after);
    assert_true(after <= before * 0.5 + 1e-9);
}

/* Measured calibration loss: whitened < plain, searched < uniform. */
static void test_whitening_and_search_help(void **state) {
    (void)state;
    ALRD_SKIP_IF_QUICK();
    setup_or_skip();
    assert_int_equal(compress("u.alrd", "--rank-ratio 0.5 --uniform " QUICK), 0);
    assert_int_equal(compress("p.alrd", "--rank-ratio 0.5 --uniform --no-whiten " QUICK), 0);
    double s = report_number("s.alrd", "measured_kl"), u = report_number("u.alrd", "measured_kl"),
           p = report_number("p.alrd", "measured_kl");
    print_message("measured KL: searched %.4f, uniform %.4f, plain %.4f\n", s, u, p);
    assert_true(s < u);
    assert_true(u < p);
    /* the prediction tracks the measurement for the searched ranks */
    double pred = report_number("s.alrd", "predicted_kl");
    assert_true(pred > 0.5 * s && pred < 2 * s);
}

/* Bad arguments and bad ranks files fail cleanly, leaving no output. */
static void test_bad_input(void **state) {
    (void)state;
    setup_or_skip();
    char path[512], args[1024];
    snprintf(path, sizeof path, "%s/bad.ranks.json", alrd_test_tmpdir());
    FILE *f = fopen(path, "w");
    fputs("{\"model.layers.0.self_attn.k_proj\": 100}", f); /* not a multiple of 8 */
    fclose(f);
    snprintf(args, sizeof args, "--ranks %s " QUICK, path);
    assert_int_not_equal(compress("bad.alrd", args), 0);
    assert_int_not_equal(compress("bad.alrd", "--rank-ratio 1.5"), 0);
    assert_int_not_equal(compress("bad.alrd", "--group-heads 2"), 0); /* 3 KV heads */
    snprintf(path, sizeof path, "%s/bad.alrd", alrd_test_tmpdir());
    assert_int_not_equal(access(path, F_OK), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_rank_reproduces),
        cmocka_unit_test(test_ranks_json_roundtrip),
        cmocka_unit_test(test_whitening_and_search_help),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
