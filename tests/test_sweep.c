/* test_sweep: alrd-sweep end to end on the real model -- two configurations
 * (the fp16 baseline and rank 0.5 with a 4-bit cache), tiny calibration,
 * one chunk of 128 tokens: exact CSV columns, bytes per token equal to the
 * layout formula, the fp16 row's PPL equal to alrd-run's on the same chunk,
 * and a rerun that does no work. */
#include "testutil.h"
#include "tinymodel.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <sys/stat.h>

#include "../formats/alrd_file.h"
#include "../runtime/kv_cache.h"

#define CALIB "wikitext-2/wiki.valid.tokens"
#define EVAL "wikitext-2-raw/wiki.test.raw"

static const char *build_dir(void) { return getenv("BUILD") ? getenv("BUILD") : "build"; }

static char g_prefix[512];

static int run_sweep(void) {
    char cmd[2048];
    snprintf(g_prefix, sizeof g_prefix, "%s/sw", alrd_test_tmpdir());
    snprintf(cmd, sizeof cmd,
             "%s/alrd-sweep %s --calib %s/%s --eval %s/%s --rank-ratios 0.5 --kv-bits 4 --group-size 32 "
             "--residual 32 --calib-samples 2 --calib-len 128 --probe-tokens 64 --ctx 128 --max-eval-tokens 200 "
             "-o %s 2>/dev/null",
             build_dir(), ALRD_TEST_MODEL, alrd_test_data_dir(), CALIB, alrd_test_data_dir(), EVAL, g_prefix);
    return system(cmd);
}

static char *slurp(const char *suffix) {
    char path[600], *text = NULL;
    size_t n;
    alrd_error err;
    snprintf(path, sizeof path, "%s%s", g_prefix, suffix);
    if (alrd_read_file(path, 1 << 26, &text, &n, &err)) fail_msg("%s", err.msg);
    return text;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(x)) fail_msg("field %s: not a number", k);
    return x->valuedouble;
}

static int ints(const cJSON *o, const char *k, int *out, int max) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, k), *x;
    int n = 0;
    assert_true(cJSON_IsArray(a));
    cJSON_ArrayForEach(x, a) {
        assert_true(cJSON_IsNumber(x) && n < max);
        out[n++] = x->valueint;
    }
    return n;
}

/* alrd-run's PPL of the same chunk (it prints 4 decimals) */
static double alrd_run_ppl(void) {
    char cmd[1024], line[512];
    snprintf(cmd, sizeof cmd, "%s/alrd-run %s --ppl %s/%s --ctx 128 --chunks 1 2>/dev/null", build_dir(),
             ALRD_TEST_MODEL, alrd_test_data_dir(), EVAL);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    double ppl = NAN;
    while (fgets(line, sizeof line, p)) sscanf(line, "PPL = %lf", &ppl);
    pclose(p);
    return ppl;
}

static void test_sweep_end_to_end(void **state) {
    (void)state;
    char p[512];
    ALRD_MODEL_OR_SKIP();
    ALRD_DATA_OR_SKIP(p, CALIB);
    ALRD_DATA_OR_SKIP(p, EVAL);
    snprintf(p, sizeof p, "%s/alrd-sweep", build_dir());
    if (access(p, X_OK) != 0) { print_message("skip: %s absent (run make)\n", p); skip(); }

    double t0 = alrd_now();
    assert_int_equal(run_sweep(), 0);
    double t_first = alrd_now() - t0;

    /* CSV: the exact columns, one row per configuration in grid order */
    char *csv = slurp(".csv");
    const char *hdr = "id,label,kind,rank_ratio,group_heads,hadamard,value_only,k_bits_config,v_bits_config,"
                      "budget_bits_per_token,kept_fraction,predicted_kl,predicted_kl_truncation,"
                      "predicted_kl_quantisation,kv_bytes_per_token_ctx,kv_bytes_per_token,kv_bits_per_token,"
                      "compression_ratio,ppl,ppl_stderr,kl,kl_stderr,top1,n_scored,decode_path,seconds_build,"
                      "seconds_eval,error\n";
    assert_memory_equal(csv, hdr, strlen(hdr));
    const char *r1 = csv + strlen(hdr), *r2 = strchr(r1, '\n') + 1;
    const char *p1 = "\"fp16\",\"fp16\",\"fp16\",1,0,0,0,16,16,,1,0,0,0,23040,23040,184320,1,";
    const char *p2 = "\"lr0.5-k4v4-g0-h0\",\"0.5/4\",\"lowrank\",0.5,0,0,0,4,4,,";
    assert_memory_equal(r1, p1, strlen(p1));
    assert_memory_equal(r2, p2, strlen(p2));
    assert_true(strchr(r2, '\n') && strchr(r2, '\n')[1] == 0);

    char *js = slurp(".json");
    cJSON *doc = cJSON_Parse(js);
    assert_non_null(doc);
    cJSON *res = cJSON_GetObjectItem(doc, "results"), *run = cJSON_GetObjectItem(doc, "run");
    assert_int_equal(cJSON_GetArraySize(res), 2);
    assert_int_equal((int)num(run, "evaluated"), 2);
    cJSON *settings = cJSON_GetObjectItem(doc, "settings");
    assert_int_equal((int)num(settings, "eval_chunks"), 1); /* 200 tokens cap: whole chunks of 128 */
    const int L = 30, full = 192;
    for (int i = 0; i < 2; i++) {
        cJSON *row = cJSON_GetArrayItem(res, i);
        int kr[64], vr[64], kb[64], vb[64];
        assert_int_equal(ints(row, "k_rank", kr, 64), L);
        assert_int_equal(ints(row, "v_rank", vr, 64), L);
        assert_int_equal(ints(row, "k_bits", kb, 64), L);
        assert_int_equal(ints(row, "v_bits", vb, 64), L);
        int ng = (int)num(row, "n_groups");
        double b128 = 0, b4096 = 0, kept = 0;
        for (int l = 0; l < L; l++) {
            int dk = kr[l] ? ng * kr[l] : full, dv = vr[l] ? ng * vr[l] : full;
            b128 += alrd_kv_cache_bytes_per_token(dk, dv, kb[l], vb[l], 32, 32, 1, 128);
            b4096 += alrd_kv_cache_bytes_per_token(dk, dv, kb[l], vb[l], 32, 32, 1, 4096);
            kept += (kr[l] ? kr[l] : full) + (vr[l] ? vr[l] : full);
            if (i == 1) {
                assert_true(kr[l] >= 8 && kr[l] <= full && kr[l] % 8 == 0);
                assert_true(vr[l] >= 8 && vr[l] <= full && vr[l] % 8 == 0);
                assert_int_equal(kb[l], 4);
                assert_int_equal(vb[l], 4);
            }
        }
        /* bytes per token: exactly the layout formula, at ctx and amortised */
        assert_true(num(row, "kv_bytes_per_token_ctx") == b128);
        assert_true(num(row, "kv_bytes_per_token") == b4096);
        assert_true(num(row, "kv_bits_per_token") == 8 * b4096);
        assert_true(num(row, "fp16_bytes_per_token") == 23040);
        /* cJSON prints 15 significant digits: exact for the byte counts (multiples of 1/ctx), not for a ratio */
        assert_true(fabs(num(row, "compression_ratio") - 23040 / b4096) <= 1e-13 * (23040 / b4096));
        assert_true(fabs(num(row, "kept_fraction") - kept / (2.0 * L * full)) < 1e-14);
        assert_int_equal((int)num(row, "n_scored"), 63);
        assert_true(fabs(num(row, "predicted_kl") - num(row, "predicted_kl_truncation") -
                         num(row, "predicted_kl_quantisation")) < 1e-15);
    }
    cJSON *fp = cJSON_GetArrayItem(res, 0), *lr = cJSON_GetArrayItem(res, 1);
    /* the fp16 row is the original model: alrd-run's PPL on the same chunk */
    double ppl_run = alrd_run_ppl();
    print_message("fp16 row PPL %.6f, alrd-run %.4f; rank 0.5 / 4 bits PPL %.4f KL %.4f (predicted %.4f)\n",
                  num(fp, "ppl"), ppl_run, num(lr, "ppl"), num(lr, "kl"), num(lr, "predicted_kl"));
    assert_true(fabs(num(fp, "ppl") - ppl_run) <= 0.00005 + 1e-9);
    assert_true(num(fp, "kl") == 0 && num(fp, "top1") == 1 && num(fp, "predicted_kl") == 0);
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(fp, "decode_path")));
    /* the compressed row: decode path, worse than the original, prediction in both parts */
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(lr, "decode_path")));
    assert_true(num(lr, "kept_fraction") <= 0.5 && num(lr, "kept_fraction") > 0.45);
    assert_true(num(lr, "kl") > 0 && num(lr, "top1") > 0 && num(lr, "top1") < 1);
    assert_true(num(lr, "predicted_kl_truncation") > 0 && num(lr, "predicted_kl_quantisation") > 0);
    assert_true(num(lr, "kv_bytes_per_token") < 23040 / 4.0);

    /* the plot: self-contained SVG with both points labelled and the front */
    char *svg = slurp(".svg");
    assert_memory_equal(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\"", 39);
    assert_non_null(strstr(svg, ">fp16</text>"));
    assert_non_null(strstr(svg, ">0.5/4</text>"));
    assert_non_null(strstr(svg, "Pareto front"));
    assert_non_null(strstr(svg, "<polyline"));
    assert_non_null(strstr(svg + strlen(svg) - 8, "</svg>"));

    /* rerun: nothing evaluated, the journal unchanged, the CSV identical */
    char *jl = slurp(".jsonl");
    t0 = alrd_now();
    assert_int_equal(run_sweep(), 0);
    double t_second = alrd_now() - t0;
    char *jl2 = slurp(".jsonl"), *csv2 = slurp(".csv"), *js2 = slurp(".json");
    assert_string_equal(jl, jl2);
    assert_string_equal(csv, csv2);
    cJSON *doc2 = cJSON_Parse(js2);
    cJSON *run2 = cJSON_GetObjectItem(doc2, "run");
    assert_int_equal((int)num(run2, "evaluated"), 0);
    assert_int_equal((int)num(run2, "skipped"), 2);
    assert_true(num(run2, "seconds_calibration") == 0);
    print_message("first run %.1f s, rerun %.1f s\n", t_first, t_second);
    assert_true(t_second < t_first / 3);
    cJSON_Delete(doc);
    cJSON_Delete(doc2);
    free(csv); free(js); free(svg); free(jl); free(jl2); free(csv2); free(js2);
}

/* alrd-compress --kv-bits-per-token on the tiny model: the file's per-layer
 * ranks and bits fit the budget by the layout formula, and the report says
 * the same bits and bytes. */
static void test_compress_joint_budget(void **state) {
    (void)state;
    char model[512], text[512], out[512], rep[512], cmd[3000], p[512];
    snprintf(p, sizeof p, "%s/alrd-compress", build_dir());
    if (access(p, X_OK) != 0) { print_message("skip: %s absent (run make)\n", p); skip(); }
    tiny_opts to = tiny_defaults();
    snprintf(model, sizeof model, "%s/joint-tiny.gguf", alrd_test_tmpdir());
    snprintf(text, sizeof text, "%s/joint-calib.txt", alrd_test_tmpdir());
    snprintf(out, sizeof out, "%s/joint.alrd", alrd_test_tmpdir());
    snprintf(rep, sizeof rep, "%s/joint.json", alrd_test_tmpdir());
    assert_int_equal(tiny_model_write(model, &to), 0);
    FILE *f = fopen(text, "w");
    assert_non_null(f);
    for (int i = 0; i < 200; i++) fprintf(f, "the cat and the dog %d sat on the mat and then %d more. ", i, i * 7 % 13);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s %s -o %s --calib %s --calib-samples 4 --calib-len 64 --probe-tokens 64 "
             "--group-size 8 --residual 16 --hadamard --kv-bits-per-token 1000 --report %s 2>/dev/null",
             p, model, out, text, rep);
    assert_int_equal(system(cmd), 0);
    alrd_file af;
    alrd_error err;
    if (alrd_file_open(&af, out, &err)) fail_msg("%s", err.msg);
    const alrd_lowrank *lr = af.lowrank;
    assert_non_null(lr);
    assert_int_equal(lr->n_layers, 2);
    assert_int_equal(lr->group_size, 8);
    assert_int_equal(lr->residual_length, 16);
    assert_int_equal(lr->hadamard, 1);
    double bytes = 0;
    int quantised = 0;
    for (int l = 0; l < 2; l++) {
        int ng = 2 / lr->group_heads, dk = ng * lr->k_rank[l], dv = ng * lr->v_rank[l];
        assert_true(lr->k_rank[l] % 8 == 0 && lr->k_rank[l] >= 8 && lr->v_rank[l] % 8 == 0 && lr->v_rank[l] >= 8);
        bytes += alrd_kv_cache_bytes_per_token(dk, dv, lr->k_bits[l], lr->v_bits[l], 8, 16, 1, 4096);
        quantised += lr->k_bits[l] < 16 || lr->v_bits[l] < 16;
    }
    assert_true(bytes <= 1000 / 8.0);
    assert_true(quantised > 0); /* 125 bytes cannot hold 16-bit caches of the 256-byte layer pair */
    char *js;
    size_t n;
    assert_int_equal(alrd_read_file(rep, 1 << 20, &js, &n, &err), 0);
    cJSON *j = cJSON_Parse(js), *mods = cJSON_GetObjectItem(j, "modules"), *joint = cJSON_GetObjectItem(j, "joint");
    assert_non_null(joint);
    assert_true(fabs(num(joint, "kv_bits_per_token") - 8 * bytes) < 1e-9);
    assert_true(num(joint, "kv_bits_per_token_budget") == 1000);
    for (int i = 0; i < 4; i++) {
        cJSON *m = cJSON_GetArrayItem(mods, i);
        assert_int_equal((int)num(m, "bits"), i % 2 ? lr->v_bits[i / 2] : lr->k_bits[i / 2]);
        assert_int_equal((int)num(m, "rank"), i % 2 ? lr->v_rank[i / 2] : lr->k_rank[i / 2]);
    }
    assert_true(num(joint, "probe_measured_kl") >= 0 && num(joint, "probe_predicted_kl") > 0);
    cJSON_Delete(j);
    free(js);
    alrd_file_close(&af);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compress_joint_budget),
        cmocka_unit_test(test_sweep_end_to_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
