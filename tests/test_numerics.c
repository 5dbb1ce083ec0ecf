/* numerics: non-finite numbers and degenerate calibration, end to end
 * through the real tools (BUILD/alrd-compress, BUILD/alrd-run).
 *
 * - A NaN or Inf weight in a model is refused by alrd-compress before any
 *   calibration, with the tensor's HF name and element in the message.
 * - Finite weights that overflow the forward pass (activations become
 *   Inf/NaN) are refused by the Gram accumulation (calib/gram.c), naming the
 *   layer whose input went non-finite.
 * - A weight finite in f32 that overflows f16 storage is refused.
 * - Degenerate calibration (one sample of one repeated word, "the the the
 *   ..."): the Gram matrices are rank one, yet the factors come out finite,
 *   the file loads, and alrd-run gives a finite perplexity and generates.
 * - Calibration text that is too short, empty or not UTF-8 is an error.
 * Models are the tiny synthetic one of tests/tinymodel.h (milliseconds), and
 * the real SmolLM2 model for the degenerate case when present (its sensitivity
 * search is skipped under ALRD_TEST_QUICK=1, e.g. for sanitizer builds). */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <math.h>

#include "../formats/alrd_file.h"
#include "../runtime/context.h"
#include "tinymodel.h"
#include "toolrun.h"

static char g_dir[512], g_calib[600], g_the[600], g_ranks[600];

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "%s/numerics", alrd_test_tmpdir());
    mkdir(g_dir, 0755);
    snprintf(g_calib, sizeof g_calib, "%s/calib.txt", g_dir);
    snprintf(g_the, sizeof g_the, "%s/the.txt", g_dir);
    snprintf(g_ranks, sizeof g_ranks, "%s/ranks.json", g_dir);
    write_calib(g_calib);
    FILE *f = fopen(g_the, "w");
    if (!f) return -1;
    for (int i = 0; i < 400; i++) fputs(i ? " the" : "the", f);
    fputc('\n', f);
    if (fclose(f)) return -1;
    /* fixed ranks for the real model (30 layers, 3 KV heads x 64) */
    if (!(f = fopen(g_ranks, "w"))) return -1;
    fprintf(f, "{");
    for (int l = 0; l < 30; l++)
        fprintf(f, "%s\"model.layers.%d.self_attn.k_proj\": 64, \"model.layers.%d.self_attn.v_proj\": 128",
                l ? ", " : "", l, l);
    fprintf(f, "}\n");
    return fclose(f) ? -1 : 0;
}

/* A tiny model with count elements of tensor (GGUF name) from index set to
 * value, written to DIR/name. */
static void poisoned(char *out, size_t cap, const char *name, const char *tensor, long index, long count,
                     float value) {
    snprintf(out, cap, "%s/%s", g_dir, name);
    tiny_opts o = tiny_defaults();
    o.poison_tensor = tensor;
    o.poison_index = index;
    o.poison_count = count;
    o.poison_value = value;
    assert_int_equal(tiny_model_write(out, &o), 0);
}

/* alrd-compress on model must fail naming a and b, writing nothing. */
static void compress_fails(const char *model, const char *calib, const char *a, const char *b) {
    char d[700], out[800], log[800];
    snprintf(d, sizeof d, "%s/out-fail", g_dir);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(mkdir(d, 0755), 0);
    snprintf(out, sizeof out, "%s/m.alrd", d);
    snprintf(log, sizeof log, "%s.log", d);
    const char *args[] = {model, "-o", out, "--calib", calib, "--calib-samples", "2", "--calib-len", "64",
                          "--probe-tokens", "64", NULL};
    expect_failure("alrd-compress", args, 0, log, a, b);
    expect_listing(d, "");
}

static void test_nonfinite_weights_named(void **state) {
    (void)state;
    char m[700];
    /* ffn_up is not row-permuted: element 70 of [128, 64] is row 1, col 6 */
    poisoned(m, sizeof m, "nan-up.gguf", "blk.1.ffn_up.weight", 70, 1, NAN);
    compress_fails(m, g_calib, "model.layers.1.mlp.up_proj.weight: weight is NaN at [1, 6]", NULL);
    poisoned(m, sizeof m, "inf-embed.gguf", "token_embd.weight", 3 * 64 + 5, 1, -INFINITY);
    compress_fails(m, g_calib, "model.embed_tokens.weight: weight is Inf at [3, 5]", NULL);
    /* attn_k rows are unpermuted on read: the column survives, the row moves */
    poisoned(m, sizeof m, "nan-k.gguf", "blk.0.attn_k.weight", 2 * 64 + 9, 1, NAN);
    compress_fails(m, g_calib, "model.layers.0.self_attn.k_proj.weight: weight is NaN at [", ", 9]");
    poisoned(m, sizeof m, "nan-norm.gguf", "output_norm.weight", 0, 1, NAN);
    compress_fails(m, g_calib, "model.norm.weight: weight is NaN at [0, 0]", NULL);
}

static void test_overflowing_activations_named(void **state) {
    (void)state;
    char m[700];
    /* a whole row of ffn_down at 3e38: finite weights, but layer 0's MLP
     * output overflows, so layer 1's attention input is non-finite */
    poisoned(m, sizeof m, "huge-down.gguf", "blk.0.ffn_down.weight", 0, 128, 3e38f);
    compress_fails(m, g_calib, "model.layers.1 attention input: calibration activation is", "at row");
}

static void test_f16_overflow_refused(void **state) {
    (void)state;
    char m[700];
    /* 1e5 is finite in f32 but past f16's 65504: storing it as f16 would
     * turn it into Inf */
    poisoned(m, sizeof m, "f16-overflow.gguf", "blk.0.ffn_up.weight", 3, 1, 1e5f);
    compress_fails(m, g_calib, "overflows F16", NULL);
}

static void test_bad_calibration_text(void **state) {
    (void)state;
    char m[700], p[700];
    snprintf(m, sizeof m, "%s/tiny.gguf", g_dir);
    tiny_opts o = tiny_defaults();
    assert_int_equal(tiny_model_write(m, &o), 0);
    snprintf(p, sizeof p, "%s/short.txt", g_dir);
    put_text(p, "the and the and\n"); /* 5 tokens */
    compress_fails(m, p, "only 5 tokens of calibration text", NULL);
    put_text(p, "");
    compress_fails(m, p, "only 0 tokens of calibration text", NULL);
    put_text(p, "the river \xff\xfe and the city");
    compress_fails(m, p, "invalid UTF-8 at byte offset 10", NULL);
    compress_fails(m, "/nonexistent/calib.txt", "/nonexistent/calib.txt", "cannot open");
}

/* Every tensor of the .alrd file converts to finite fp32. */
static void expect_finite_file(const char *path) {
    alrd_file f;
    alrd_error err = {{0}};
    if (alrd_file_open(&f, path, &err)) fail_msg("%s", err.msg);
    assert_non_null(f.lowrank);
    int factors = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const alrd_tensor *t = &f.tensors[i];
        size_t n = (size_t)alrd_tensor_numel(t);
        float *x = malloc(n * sizeof *x);
        assert_non_null(x);
        if (alrd_tensor_to_f32(t, x, &err)) fail_msg("%s", err.msg);
        for (size_t k = 0; k < n; k++)
            if (!isfinite(x[k])) fail_msg("%s: %s[%zu] = %g", path, t->name, k, (double)x[k]);
        free(x);
        size_t len = strlen(t->name);
        factors += len > 2 && (!strcmp(t->name + len - 2, ".A") || !strcmp(t->name + len - 2, ".B"));
    }
    alrd_file_close(&f);
    assert_true(factors > 0);
}

/* alrd-run MODEL --ppl TEXT: the perplexity it prints (NAN if none). */
static double run_ppl(const char *model, const char *text, const char *log) {
    const char *args[] = {model, "--ppl", text, "--ctx", "64", "--chunks", "2", NULL};
    int code = run_tool("alrd-run", args, 0, log);
    char *s = get_text(log);
    assert_non_null(s);
    if (code != 0) fail_msg("alrd-run exited %d:\n%s", code, s);
    const char *p = strstr(s, "PPL = ");
    double ppl = NAN;
    if (!p || sscanf(p + 6, "%lf", &ppl) != 1) fail_msg("no PPL line:\n%s", s);
    free(s);
    return ppl;
}

static void degenerate_case(const char *model, const char *tag, int vocab, const char *ranks) {
    char out[700], log[700];
    snprintf(out, sizeof out, "%s/%s-the.alrd", g_dir, tag);
    snprintf(log, sizeof log, "%s/%s-the.log", g_dir, tag);
    /* one sample, one repeated word: every Gram matrix has rank one */
    const char *args[] = {model, "-o", out, "--calib", g_the, "--calib-samples", "1", "--calib-len", "64",
                          "--probe-tokens", "64", ranks ? "--ranks" : NULL, ranks, NULL};
    int code = run_tool("alrd-compress", args, 0, log);
    if (code != 0) {
        char *s = get_text(log);
        fail_msg("alrd-compress on degenerate calibration exited %d:\n%s", code, s ? s : "");
    }
    expect_finite_file(out);
    double base = run_ppl(model, g_calib, log), ppl = run_ppl(out, g_calib, log);
    print_message("%s: PPL %.2f uncompressed, %.2f after degenerate calibration (vocab %d)\n", tag, base,
                  ppl, vocab);
    assert_true(isfinite(base) && isfinite(ppl));
    /* worse (rank-one statistics say little), but a model, not noise: broken
     * factors land at the vocabulary size or beyond */
    assert_true(ppl > 1 && ppl < 20 * base && ppl < vocab);
    /* and it generates */
    const char *gen[] = {out, "-p", "the river", "-n", "8", NULL};
    assert_int_equal(run_tool("alrd-run", gen, 0, log), 0);
}

static void test_degenerate_calibration_tiny(void **state) {
    (void)state;
    char m[700];
    snprintf(m, sizeof m, "%s/tiny.gguf", g_dir);
    tiny_opts o = tiny_defaults();
    assert_int_equal(tiny_model_write(m, &o), 0);
    degenerate_case(m, "tiny", 1 << 30, NULL); /* random weights: no better than uniform anyway */
}

static void test_degenerate_calibration_real(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    degenerate_case(ALRD_TEST_MODEL, "smollm2", 49152, quick() ? g_ranks : NULL);
}

/* The tiny model of o written to DIR/TAG.gguf (path in m); out and log get
 * DIR/TAG.alrd and DIR/TAG.log (each cap bytes). */
static void tiny_setup(const tiny_opts *o, const char *tag, char *m, char *out, char *log, size_t cap) {
    snprintf(m, cap, "%s/%s.gguf", g_dir, tag);
    snprintf(out, cap, "%s/%s.alrd", g_dir, tag);
    snprintf(log, cap, "%s/%s.log", g_dir, tag);
    assert_int_equal(tiny_model_write(m, o), 0);
}

/* That model compressed at rank ratio 1.0 to DIR/TAG.alrd, which must succeed. */
static void compress_tiny(const tiny_opts *o, const char *tag, char *m, char *out, size_t cap) {
    char log[700];
    tiny_setup(o, tag, m, out, log, cap < sizeof log ? cap : sizeof log);
    const char *args[] = {m, "-o", out, "--calib", g_calib, "--calib-samples", "2", "--calib-len", "64",
                          "--probe-tokens", "64", "--rank-ratio", "1.0", NULL};
    if (run_tool("alrd-compress", args, 0, log) != 0) {
        char *t = get_text(log);
        fail_msg("alrd-compress exited non-zero:\n%s", t ? t : "");
    }
}

/* Last-position logits of model on tokens (CPU, fp16-free cache), into out [vocab]; lazy: one layer's
 * matrices in fp32 at a time, as alrd-compress opens files. */
static void last_logits_as(const char *path, int lazy, const int32_t *tok, int n, float *out, int vocab) {
    alrd_source src;
    alrd_model m;
    alrd_error err;
    if (alrd_source_open(&src, path, &err)) fail_msg("%s", err.msg);
    if (alrd_model_load_opts(&m, &src, lazy ? ALRD_MODEL_LAZY : 0, &err)) fail_msg("%s", err.msg);
    assert_int_equal(m.cfg.vocab_size, vocab);
    alrd_cache_opts co;
    alrd_cache_opts_default(&m, &co);
    co.k_bits = co.v_bits = 16;
    alrd_ctx *c = NULL;
    if (alrd_ctx_new(&c, &m, 64, 64, &co, &err)) fail_msg("%s", err.msg);
    if (alrd_ctx_forward(c, tok, n, out, 0, &err)) fail_msg("%s", err.msg);
    alrd_ctx_free(c);
    alrd_model_free(&m);
    alrd_source_close(&src);
}
static void last_logits(const char *path, const int32_t *tok, int n, float *out, int vocab) {
    last_logits_as(path, 0, tok, n, out, vocab);
}

/* A model whose q/k/v projections have biases (Qwen2's case) keeps its k and
 * v biases through alrd-compress: they are not low rank, so they stay out of
 * the factorisation and come back exactly (K = A l + b_k; the value bias adds
 * after the lift). At rank ratio 1.0 the file reproduces the model's logits.
 * (The writer once took "k_proj.bias" for "k_proj.weight" and dropped both
 * biases: the logits then differed by tens of percent.) */
static void test_kv_biases_kept(void **state) {
    (void)state;
    char m[700], out[700];
    tiny_opts o = tiny_defaults();
    o.qkv_bias = 1;
    compress_tiny(&o, "tiny-bias", m, out, sizeof m);
    expect_finite_file(out);
    alrd_file f;
    alrd_error err;
    if (alrd_file_open(&f, out, &err)) fail_msg("%s", err.msg);
    int biases = 0;
    for (int i = 0; i < f.n_tensors; i++)
        for (int l = 0; l < o.n_layers; l++)
            for (const char *const *w = (const char *const[]){"q", "k", "v", NULL}; *w; w++) {
                char name[96];
                snprintf(name, sizeof name, "model.layers.%d.self_attn.%s_proj.bias", l, *w);
                biases += !strcmp(f.tensors[i].name, name);
            }
    alrd_file_close(&f);
    assert_int_equal(biases, 3 * o.n_layers);
    enum { N = 24, V = TINY_VOCAB };
    int32_t tok[N];
    for (int i = 0; i < N; i++) tok[i] = (int32_t)((i * 37 + 11) % (V - 1));
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    assert_non_null(a);
    assert_non_null(b);
    last_logits(m, tok, N, a, V);
    last_logits(out, tok, N, b, V);
    double num = 0, den = 0;
    for (int i = 0; i < V; i++) num += (double)(a[i] - b[i]) * (a[i] - b[i]), den += (double)a[i] * a[i];
    print_message("rank 1.0 with q/k/v biases: logits rel L2 %.2e against the model\n", sqrt(num / den));
    assert_true(sqrt(num / den) < 1e-2);
    free(a);
    free(b);
}

/* GGUF's llama3 RoPE scaling: rope_freqs.weight divides each frequency (as
 * llama.cpp applies it), survives alrd-compress into the .alrd file, and a
 * bad factor or length is refused naming the tensor. */
static void test_rope_freqs(void **state) {
    (void)state;
    static const float fac[8] = {1, 1, 1.5f, 2, 4, 8, 8, 8};
    char m[700], out[700];
    tiny_opts o = tiny_defaults(); /* head dim 16: 8 frequencies */
    o.rope_freqs = fac;
    o.n_rope_freqs = 8;
    compress_tiny(&o, "tiny-rope", m, out, sizeof m);
    for (int k = 0; k < 2; k++) {
        alrd_model md;
        alrd_error err;
        if (alrd_model_open(&md, k ? out : m, &err)) fail_msg("%s", err.msg);
        assert_int_equal(md.cfg.head_dim, 16);
        for (int i = 0; i < 8; i++) {
            const double want = pow(10000.0, -2.0 * i / 16) / fac[i];
            if (fabs(md.inv_freq[i] - want) > 1e-6 * want)
                fail_msg("%s: inv_freq[%d] = %.9g, expected %.9g", k ? out : m, i, (double)md.inv_freq[i], want);
        }
        alrd_model_free(&md);
    }
    static const float bad[8] = {1, 1, 1, 0, 1, 1, 1, 1};
    o.rope_freqs = bad;
    assert_int_equal(tiny_model_write(m, &o), 0);
    alrd_model md;
    alrd_error err = {{0}};
    assert_int_equal(alrd_model_open(&md, m, &err), -1);
    assert_non_null(strstr(err.msg, "rope_freqs.weight: factor 3 is 0"));
    o.rope_freqs = fac;
    o.n_rope_freqs = 6;
    assert_int_equal(tiny_model_write(m, &o), 0);
    assert_int_equal(alrd_model_open(&md, m, &err), -1);
    assert_non_null(strstr(err.msg, "rope_freqs.weight"));
}

/* --kv-ratio X: the joint allocation under the fp16 cache's bytes / X, as a
 * user asks for it ("10x smaller"); the file meets the ratio. */
static void test_kv_ratio(void **state) {
    (void)state;
    char m[700], out[700], log[700], rep[700];
    tiny_opts o = tiny_defaults();
    tiny_setup(&o, "tiny-ratio", m, out, log, sizeof m);
    snprintf(rep, sizeof rep, "%s/tiny-ratio.json", g_dir);
    const char *args[] = {m, "-o", out, "--calib", g_calib, "--calib-samples", "2", "--calib-len", "64",
                          "--probe-tokens", "64", "--kv-ratio", "6", "--rank-step", "8", "--group-size", "8",
                          "--residual", "16", "--report", rep, NULL}; /* the tiny K/V are 32 wide */
    char *t = NULL;
    if (run_tool("alrd-compress", args, 0, log) != 0) {
        t = get_text(log);
        fail_msg("alrd-compress --kv-ratio 6 exited non-zero:\n%s", t ? t : "");
    }
    t = get_text(rep);
    assert_non_null(t);
    double before = -1, after = -1;
    const char *p = strstr(t, "\"kv_bytes_per_token_before\"");
    assert_non_null(p);
    assert_int_equal(sscanf(strchr(p, ':') + 1, "%lf", &before), 1);
    p = strstr(t, "\"kv_bytes_per_token_after\"");
    assert_non_null(p);
    assert_int_equal(sscanf(strchr(p, ':') + 1, "%lf", &after), 1);
    free(t);
    print_message("--kv-ratio 6: %.1f -> %.1f bytes per token (%.2fx)\n", before, after, before / after);
    assert_true(before > 0 && after > 0 && before / after >= 6 * (1 - 1e-9));
    /* one budget at a time, and a ratio that means something */
    const char *both[] = {m, "-o", out, "--calib", g_calib, "--kv-ratio", "6", "--kv-bits-per-token", "9000", NULL};
    expect_failure("alrd-compress", both, 0, log, "give one budget", NULL);
    const char *bad[] = {m, "-o", out, "--calib", g_calib, "--kv-ratio", "0.5", NULL};
    expect_failure("alrd-compress", bad, 0, log, "--kv-ratio: expected a ratio", NULL);
}

/* --calib given twice: the sequences are shared between the files (control
 * tokens of a chat transcript parsed as such); a file shorter than one
 * sequence is refused by name. */
static void test_two_calibration_files(void **state) {
    (void)state;
    char m[700], out[700], log[700], chat[700];
    tiny_opts o = tiny_defaults();
    tiny_setup(&o, "tiny-2cal", m, out, log, sizeof m);
    snprintf(chat, sizeof chat, "%s/chat.txt", g_dir);
    FILE *f = fopen(chat, "w");
    assert_non_null(f);
    for (int i = 0; i < 40; i++) fprintf(f, "user: how is the river today?<|endoftext|>\nassistant: the river is calm.\n");
    fclose(f);
    const char *args[] = {m, "-o", out, "--calib", g_calib, "--calib", chat, "--calib-samples", "5", "--calib-len", "64",
                          "--probe-tokens", "64", "--rank-ratio", "1.0", NULL};
    int code = run_tool("alrd-compress", args, 0, log);
    char *t = get_text(log);
    if (code != 0) fail_msg("alrd-compress with two --calib exited %d:\n%s", code, t ? t : "");
    char want[800];
    snprintf(want, sizeof want, "%s: 3 sequences of 64 tokens", g_calib); /* 5 = 3 + 2, the first file first */
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof want, "%s: 2 sequences of 64 tokens", chat);
    assert_non_null(strstr(t, want));
    free(t);
    expect_finite_file(out);
    put_text(chat, "the river");
    const char *shrt[] = {m, "-o", out, "--calib", g_calib, "--calib", chat, "--calib-len", "64", NULL};
    expect_failure("alrd-compress", shrt, 0, log, chat, "fewer than --calib-len 64");
}

/* A .alrd file opened lazily (one layer's matrices in fp32 at a time, the
 * factors and biases with the model: how alrd-compress checks the file it
 * wrote within a 7B compression's memory) computes the same logits as the
 * file loaded whole, bit for bit. */
static void test_lazy_alrd_load(void **state) {
    (void)state;
    char m[700], out[700];
    tiny_opts o = tiny_defaults();
    o.qkv_bias = 1;
    compress_tiny(&o, "tiny-lazy", m, out, sizeof m);
    enum { N = 20, V = TINY_VOCAB };
    int32_t tok[N];
    for (int i = 0; i < N; i++) tok[i] = (int32_t)((i * 53 + 7) % (V - 1));
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    assert_non_null(a);
    assert_non_null(b);
    last_logits_as(out, 0, tok, N, a, V);
    last_logits_as(out, 1, tok, N, b, V);
    assert_memory_equal(a, b, sizeof(float) * V);
    free(a);
    free(b);
}

/* Runs the joint allocation on the tiny model of tag under budget bits (f32
 * weights, so the written file is what was measured in memory); the report,
 * parsed, is returned (caller deletes). measure: --measure's value. */
static cJSON *joint_report(const char *tag, const char *bits, const char *measure) {
    char m[700], out[700], log[700], rep[700];
    tiny_opts o = tiny_defaults();
    tiny_setup(&o, tag, m, out, log, sizeof m);
    snprintf(rep, sizeof rep, "%s/%s.json", g_dir, tag);
    const char *args[] = {m, "-o", out, "--calib", g_calib, "--calib-samples", "2", "--calib-len", "64",
                          "--probe-tokens", "64", "--kv-bits-per-token", bits, "--rank-step", "8", "--group-size", "8",
                          "--residual", "16", "--weights", "f32", "--measure", measure, "--report", rep, NULL};
    if (run_tool("alrd-compress", args, 0, log) != 0) {
        char *t = get_text(log);
        fail_msg("alrd-compress --kv-bits-per-token %s exited non-zero:\n%s", bits, t ? t : "");
    }
    char *t = get_text(rep);
    assert_non_null(t);
    cJSON *j = cJSON_Parse(t);
    free(t);
    assert_non_null(j);
    return j;
}

static double json_num(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(j, key);
    if (!cJSON_IsNumber(v)) fail_msg("report: no number %s", key);
    return v->valuedouble;
}

/* Issue 18: the joint allocation is chosen by measurement, not prediction.
 * At this budget the open-loop allocation (--measure 0, the old behaviour)
 * writes a file that a uniform configuration within the budget beats on the
 * probe; the closed loop's file (its KL measured through the runtime over
 * the written file, quantised cache at the file's bits) is no worse than any
 * uniform candidate measured with equal or fewer bytes, and is the
 * configuration its report says it chose. */
static void test_joint_closed_loop(void **state) {
    (void)state;
    cJSON *open = joint_report("tiny-open", "300", "0"), *closed = joint_report("tiny-closed", "300", "6");
    const cJSON *jo = cJSON_GetObjectItem(open, "joint"), *jc = cJSON_GetObjectItem(closed, "joint");
    assert_non_null(jo);
    assert_non_null(jc);
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(jo, "closed_loop")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(jc, "closed_loop")));
    const double open_kl = json_num(jo, "probe_measured_kl"), file_kl = json_num(jc, "probe_measured_kl");
    const double file_bytes = json_num(closed, "kv_bytes_per_token_after");
    const double budget = json_num(jc, "kv_bits_per_token_budget") / 8;
    assert_true(file_bytes <= budget * (1 + 1e-12));
    const cJSON *cands = cJSON_GetObjectItem(jc, "candidates_measured"), *e;
    assert_true(cJSON_GetArraySize(cands) >= 2);
    int n_uniform = 0, n_chosen = 0;
    double best_uniform = INFINITY;
    cJSON_ArrayForEach(e, cands) {
        const double kl = json_num(e, "probe_measured_kl"), bytes = json_num(e, "kv_bytes_per_token");
        const char *kind = cJSON_GetStringValue(cJSON_GetObjectItem(e, "kind"));
        assert_non_null(kind);
        assert_true(bytes <= budget * (1 + 1e-12));
        if (cJSON_IsTrue(cJSON_GetObjectItem(e, "chosen"))) { /* the file is the chosen configuration */
            n_chosen++;
            assert_true(fabs(bytes - file_bytes) < 1e-6);
            assert_true(fabs(kl - file_kl) <= 1e-4 * kl + 1e-7);
        }
        if (!strcmp(kind, "joint")) /* the open-loop allocation, measured in memory as its file measures */
            assert_true(fabs(kl - open_kl) <= 1e-4 * kl + 1e-7);
        if (!strcmp(kind, "uniform")) {
            n_uniform++;
            if (bytes <= file_bytes + 1e-9 && kl < best_uniform) best_uniform = kl;
            if (bytes <= file_bytes + 1e-9) assert_true(file_kl <= kl * (1 + 1e-4) + 1e-7);
        }
    }
    print_message("300 bits: open-loop file KL %.5f, closed-loop file KL %.5f, best uniform %.5f (%d measured)\n",
                  open_kl, file_kl, best_uniform, n_uniform);
    assert_int_equal(n_chosen, 1);
    assert_true(n_uniform >= 1);
    /* the case discriminates: the old behaviour's file loses to a uniform point */
    assert_true(open_kl > best_uniform);
    cJSON_Delete(open);
    cJSON_Delete(closed);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nonfinite_weights_named),
        cmocka_unit_test(test_overflowing_activations_named),
        cmocka_unit_test(test_f16_overflow_refused),
        cmocka_unit_test(test_bad_calibration_text),
        cmocka_unit_test(test_degenerate_calibration_tiny),
        cmocka_unit_test(test_kv_biases_kept),
        cmocka_unit_test(test_rope_freqs),
        cmocka_unit_test(test_kv_ratio),
        cmocka_unit_test(test_joint_closed_loop),
        cmocka_unit_test(test_two_calibration_files),
        cmocka_unit_test(test_lazy_alrd_load),
        cmocka_unit_test(test_degenerate_calibration_real),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
