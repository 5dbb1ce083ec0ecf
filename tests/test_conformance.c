/* conformance: alrd's CPU forward pass against Hugging Face transformers on
 * tiny random models of each architecture alrd reads from HF checkpoints,
 * with no download and no Python at test time.
 *
 * tests/crosscheck/make_tiny_models.py (transformers) wrote, per model,
 * config.json (transformers 5: rope_parameters), config.legacy.json (the
 * transformers 4 spelling that Hub checkpoints carry), tensors.txt (the
 * weights' recipe) and logits.bin (transformers' logits, float64 forward
 * rounded to float32, at every position of 24 token ids):
 *   llama3   rope_scaling llama3 (factor 8, low/high_freq_factor 1/4,
 *            original_max_position_embeddings 64: at head_dim 16, one
 *            frequency is smoothed, six are divided by 8), tied embeddings;
 *   qwen2    q/k/v biases, rope_theta 1e6, rms_norm_eps 1e-6;
 *   mistral  GQA, sliding_window null.
 * The weights are regenerated here from the recipe (a 64-bit LCG seeded
 * with the FNV-1a hash of the tensor name; every value exact in fp32; see
 * the script) and written as model.safetensors next to the config and the
 * shared tokenizer.json, making an ordinary HF directory.
 *
 * Tolerance: at every position, both ||got - ref||_2 / ||ref||_2 and
 * max_i |got_i - ref_i| / max_i |ref_i| must be <= 1e-3 (TOL), through the
 * prefill (all positions in one call) and through the decode path (one
 * token per call, reading the cache). Negative controls show the check
 * has teeth: llama3 read without its rope scaling, and qwen2 without its
 * biases, must both miss it.
 *
 * The compressor: the qwen2 and llama3 models through alrd-compress at rank
 * ratio 1.0 (fp32 weights: the file must reproduce transformers' logits
 * within TOL; f16 weights: within F16_TOL) and 0.5 (the file keeps half the
 * K/V dims, its biases and rope scaling, and its logits stay a model of the
 * same text: bounded error and next-token loss).
 *
 * ALRD_CONFORMANCE_HF=DIR (the --hf-out of the script) also runs the check
 * on the directories transformers itself saved. */
#include "testutil.h"

#include <math.h>

#include "../formats/alrd_file.h"
#include "../formats/safetensors.h"
#include "../runtime/context.h"
#include "toolrun.h"

#define REF_DIR "tests/crosscheck/conformance"
#define TOL 1e-3
#define F16_TOL 1e-2

static char g_dir[512], g_calib[600];

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "%s/conformance", alrd_test_tmpdir());
    mkdir(g_dir, 0755);
    snprintf(g_calib, sizeof g_calib, "%s/calib.txt", g_dir);
    write_calib(g_calib);
    return 0;
}

/* ------------------------------------------------------------ reference */

typedef struct {
    int n, vocab;
    int32_t *tok;
    float *logits; /* [n][vocab] */
} reference;

static void ref_read(reference *r, const char *arch) {
    char p[600];
    snprintf(p, sizeof p, REF_DIR "/%s/logits.bin", arch);
    FILE *f = fopen(p, "rb");
    if (!f) fail_msg("%s: cannot open (run from the repository root)", p);
    char magic[8];
    uint32_t hdr[2];
    assert_int_equal(fread(magic, 1, 8, f), 8);
    assert_memory_equal(magic, "ALRDCF01", 8);
    assert_int_equal(fread(hdr, 4, 2, f), 2);
    r->n = (int)hdr[0];
    r->vocab = (int)hdr[1];
    assert_true(r->n > 0 && r->n <= 64 && r->vocab > 0 && r->vocab <= 4096);
    r->tok = malloc(sizeof(int32_t) * r->n);
    r->logits = malloc(sizeof(float) * r->n * r->vocab);
    assert_non_null(r->tok);
    assert_non_null(r->logits);
    assert_int_equal(fread(r->tok, 4, r->n, f), (size_t)r->n);
    assert_int_equal(fread(r->logits, 4, (size_t)r->n * r->vocab, f), (size_t)r->n * r->vocab);
    assert_int_equal(fgetc(f), EOF);
    fclose(f);
}

static void ref_free(reference *r) {
    free(r->tok);
    free(r->logits);
}

/* ------------------------------------------------------------ the model */

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xCBF29CE484222325ULL;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001B3ULL;
    return h;
}

/* The generator of make_tiny_models.py (gen_values). */
static void gen_values(const char *name, float *out, int64_t n, int norm, int shift) {
    uint64_t s = fnv1a(name);
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        int k = (int)((s >> 33) % 4097) - 2048;
        out[i] = ldexpf((float)k, -shift) + (norm ? 1.0f : 0.0f);
    }
}

/* What to change when building a model directory. */
typedef struct {
    const char *config;     /* file under REF_DIR/arch (default config.json) */
    const char *edit[3][2]; /* substrings of the config replaced: {from, to}, {NULL} ends */
    int drop_biases;        /* leave the .bias tensors out */
    const alrd_model *dense_of; /* k_proj/v_proj weights = this low-rank model's A B, or NULL */
} variant;

/* Layer l's k (is_v 0) or v projection of a low-rank model as one dense
 * [n_kv*hd][hidden] matrix: A B per latent group, in fp64. */
static void dense_proj(const alrd_model *m, int l, int is_v, float *w) {
    const alrd_layer *L = &m->layers[l];
    const int r = is_v ? L->v_rank : L->k_rank, H = m->cfg.hidden, gh = m->group_heads * m->cfg.head_dim;
    const float *A = is_v ? L->vA : L->kA, *B = is_v ? L->vB : L->kB;
    assert_true(r > 0 && A && B);
    for (int g = 0; g < m->n_groups; g++)
        for (int i = 0; i < gh; i++)
            for (int j = 0; j < H; j++) {
                double acc = 0;
                for (int k = 0; k < r; k++)
                    acc += (double)A[((size_t)g * gh + i) * r + k] * B[((size_t)g * r + k) * H + j];
                w[((size_t)g * gh + i) * H + j] = (float)acc;
            }
}

static void copy_file(const char *from, const char *to, const char *const (*edit)[2]) {
    char *s = get_text(from);
    if (!s) fail_msg("%s: cannot read", from);
    for (int e = 0; edit && e < 3 && edit[e][0]; e++) {
        const char *edit_from = edit[e][0], *edit_to = edit[e][1];
        char *at = strstr(s, edit_from);
        if (!at) fail_msg("%s: no '%s' to replace", from, edit_from);
        size_t lf = strlen(edit_from), lt = strlen(edit_to), n = strlen(s);
        char *t = malloc(n - lf + lt + 1);
        assert_non_null(t);
        memcpy(t, s, (size_t)(at - s));
        memcpy(t + (at - s), edit_to, lt);
        memcpy(t + (at - s) + lt, at + lf, n - (size_t)(at - s) - lf + 1);
        free(s);
        s = t;
    }
    put_text(to, s);
    free(s);
}

/* DIR/<tag>: config, tokenizer and model.safetensors from the recipe. */
static void build_dir(char *out, size_t cap, const char *arch, const char *tag, const variant *v) {
    snprintf(out, cap, "%s/%s", g_dir, tag);
    char cmd[700], from[700], to[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(mkdir(out, 0755), 0);
    snprintf(from, sizeof from, REF_DIR "/%s/%s", arch, v && v->config ? v->config : "config.json");
    snprintf(to, sizeof to, "%s/config.json", out);
    copy_file(from, to, v ? v->edit : NULL);
    for (const char *const *f = (const char *const[]){"tokenizer.json", "tokenizer_config.json", NULL}; *f; f++) {
        snprintf(from, sizeof from, REF_DIR "/%s", *f);
        snprintf(to, sizeof to, "%s/%s", out, *f);
        copy_file(from, to, NULL);
    }
    snprintf(from, sizeof from, REF_DIR "/%s/tensors.txt", arch);
    FILE *f = fopen(from, "r");
    if (!f) fail_msg("%s: cannot open", from);
    alrd_tensor t[64];
    memset(t, 0, sizeof t);
    int n = 0;
    char name[ALRD_NAME_MAX], kind[16];
    long rows, cols;
    int shift;
    while (fscanf(f, "%127s %ld %ld %15s %d", name, &rows, &cols, kind, &shift) == 5) {
        assert_true(n < 64 && rows > 0 && cols >= 0 && shift > 0 && shift < 30);
        if (v && v->drop_biases && strstr(name, ".bias")) continue;
        alrd_tensor *x = &t[n++];
        snprintf(x->name, sizeof x->name, "%s", name);
        x->dtype = ALRD_F32;
        x->n_dims = cols ? 2 : 1;
        x->shape[0] = rows;
        x->shape[1] = cols;
        int64_t numel = rows * (cols ? cols : 1);
        float *d = malloc(sizeof(float) * numel);
        assert_non_null(d);
        gen_values(name, d, numel, !strcmp(kind, "norm"), shift);
        int l = -1;
        char proj = 0;
        if (v && v->dense_of && sscanf(name, "model.layers.%d.self_attn.%c", &l, &proj) == 2 &&
            (proj == 'k' || proj == 'v')) {
            char want[ALRD_NAME_MAX];
            snprintf(want, sizeof want, "model.layers.%d.self_attn.%c_proj.weight", l, proj);
            if (!strcmp(want, name)) dense_proj(v->dense_of, l, proj == 'v', d);
        }
        x->data = d;
        x->nbytes = sizeof(float) * numel;
    }
    assert_true(feof(f));
    fclose(f);
    assert_true(n >= 10);
    snprintf(to, sizeof to, "%s/model.safetensors", out);
    alrd_error err = {{0}};
    int rc = alrd_safetensors_write(to, t, n, ALRD_F32, &err);
    for (int i = 0; i < n; i++) free((void *)t[i].data);
    if (rc) fail_msg("%s", err.msg);
}

/* ------------------------------------------------------------ comparison */

typedef struct {
    double rel_l2, rel_max; /* worst over positions */
    int at_l2, at_max;
} gap;

static gap compare(const float *got, const reference *r) {
    gap g = {0, 0, 0, 0};
    for (int p = 0; p < r->n; p++) {
        const float *a = got + (size_t)p * r->vocab, *b = r->logits + (size_t)p * r->vocab;
        double num = 0, den = 0, dmax = 0, rmax = 0;
        for (int i = 0; i < r->vocab; i++) {
            double d = (double)a[i] - b[i];
            if (!isfinite(a[i])) d = INFINITY;
            num += d * d;
            den += (double)b[i] * b[i];
            dmax = fmax(dmax, fabs(d));
            rmax = fmax(rmax, fabs((double)b[i]));
        }
        double l2 = sqrt(num / den), mx = dmax / rmax;
        if (!(l2 <= g.rel_l2)) g.rel_l2 = l2, g.at_l2 = p;
        if (!(mx <= g.rel_max)) g.rel_max = mx, g.at_max = p;
    }
    return g;
}

/* Logits at every position of r's tokens from the model at path (HF
 * directory or .alrd file), 16-bit cache: decode = 0 in one prefill call,
 * decode = 1 one token per call; lazy: layers materialised one at a time. */
static float *run_logits(const char *path, const reference *r, int decode, int lazy) {
    alrd_source src;
    alrd_model m;
    alrd_error err = {{0}};
    if (alrd_source_open(&src, path, &err)) fail_msg("%s", err.msg);
    if (alrd_model_load_opts(&m, &src, lazy ? ALRD_MODEL_LAZY : 0, &err)) fail_msg("%s", err.msg);
    assert_int_equal(m.cfg.vocab_size, r->vocab);
    alrd_cache_opts co;
    alrd_cache_opts_default(&m, &co);
    co.k_bits = co.v_bits = 16;
    co.backend = ALRD_BACKEND_CPU;
    alrd_ctx *c = NULL;
    if (alrd_ctx_new(&c, &m, 64, 64, &co, &err)) fail_msg("%s", err.msg);
    float *out = malloc(sizeof(float) * r->n * r->vocab);
    assert_non_null(out);
    if (!decode) {
        if (alrd_ctx_forward(c, r->tok, r->n, out, 1, &err)) fail_msg("%s", err.msg);
    } else {
        for (int p = 0; p < r->n; p++)
            if (alrd_ctx_forward(c, r->tok + p, 1, out + (size_t)p * r->vocab, 0, &err)) fail_msg("%s", err.msg);
    }
    alrd_ctx_free(c);
    alrd_model_free(&m);
    alrd_source_close(&src);
    return out;
}

static gap gap_of(const char *path, const reference *r, int decode, int lazy) {
    float *l = run_logits(path, r, decode, lazy);
    gap g = compare(l, r);
    free(l);
    return g;
}

static void report(const char *what, gap g) {
    print_message("%-34s rel L2 %.2e (pos %2d)  max-abs/max|ref| %.2e (pos %2d)\n", what, g.rel_l2, g.at_l2,
                  g.rel_max, g.at_max);
}

static void expect_within(const char *what, gap g, double tol) {
    report(what, g);
    if (!(g.rel_l2 <= tol && g.rel_max <= tol))
        fail_msg("%s: logits differ from transformers' by rel L2 %.3e / max-abs %.3e (tolerance %.0e)", what,
                 g.rel_l2, g.rel_max, tol);
}

/* Prefill and decode, eager and lazy, both config spellings. */
static void conform(const char *arch) {
    reference r;
    ref_read(&r, arch);
    for (int legacy = 0; legacy < 2; legacy++) {
        char d[700], tag[64], what[96];
        variant v = {legacy ? "config.legacy.json" : "config.json", {{NULL}}, 0, NULL};
        snprintf(tag, sizeof tag, "%s%s", arch, legacy ? "-legacy" : "");
        build_dir(d, sizeof d, arch, tag, &v);
        for (int mode = 0; mode < 3; mode++) {
            snprintf(what, sizeof what, "%s %s%s", arch, mode == 0 ? "prefill" : mode == 1 ? "decode" : "lazy prefill",
                     legacy ? " (legacy config)" : "");
            expect_within(what, gap_of(d, &r, mode == 1, mode == 2), TOL);
        }
    }
    ref_free(&r);
}

static void test_llama3(void **state) {
    (void)state;
    conform("llama3");
}
static void test_qwen2(void **state) {
    (void)state;
    conform("qwen2");
}
static void test_mistral(void **state) {
    (void)state;
    conform("mistral");
}

/* The check has teeth: what it is there to catch does not pass. */
static void test_negative_controls(void **state) {
    (void)state;
    char d[700];
    reference r;
    ref_read(&r, "llama3");
    variant nos = {"config.json", {{"\"rope_type\": \"llama3\"", "\"rope_type\": \"default\""}}, 0, NULL};
    build_dir(d, sizeof d, "llama3", "llama3-noscale", &nos);
    gap g = gap_of(d, &r, 0, 0);
    report("llama3 without rope scaling", g);
    assert_true(g.rel_l2 > 10 * TOL);
    ref_free(&r);
    ref_read(&r, "qwen2");
    variant nob = {"config.json", {{NULL}}, 1, NULL};
    build_dir(d, sizeof d, "qwen2", "qwen2-nobias", &nob);
    g = gap_of(d, &r, 0, 0);
    report("qwen2 without q/k/v biases", g);
    assert_true(g.rel_l2 > 10 * TOL);
    ref_free(&r);
}

/* ------------------------------------------------------------ windows */

/* The legacy config of arch with edits must be refused, naming want. */
static void expect_refused(const char *arch, const char *tag, const variant *v, const char *want) {
    char d[700];
    build_dir(d, sizeof d, arch, tag, v);
    alrd_source src;
    alrd_error err = {{0}};
    assert_int_equal(alrd_source_open(&src, d, &err), -1);
    print_message("%s: %s\n", tag, err.msg);
    if (!strstr(err.msg, want)) fail_msg("expected '%s' in: %s", want, err.msg);
}

/* The legacy config of arch with edits conforms (decode path). */
static void expect_conforms(const char *arch, const char *tag, const variant *v) {
    char d[700];
    reference r;
    ref_read(&r, arch);
    build_dir(d, sizeof d, arch, tag, v);
    expect_within(tag, gap_of(d, &r, 1, 0), TOL);
    ref_free(&r);
}

#define SW(n) "\"sliding_window\": " #n
#define USW(b) "\"use_sliding_window\": " #b
#define MWL(n) "\"max_window_layers\": " #n

/* Sliding-window attention is not implemented: a window shorter than the
 * model's context, on any layer that transformers would give it, is refused
 * by name. A window that covers the context, a Qwen2 window that is switched
 * off (use_sliding_window false, as Qwen2.5 checkpoints ship) or that starts
 * at a layer past the last (max_window_layers) is full attention, and
 * conforms. */
static void test_sliding_window(void **state) {
    (void)state;
    const variant msw = {"config.legacy.json", {{SW(null), SW(16)}}, 0, NULL};
    expect_refused("mistral", "mistral window 16", &msw,
                   "sliding_window: 16 < max_position_embeddings 512: sliding-window attention not supported");
    const variant qsw = {"config.legacy.json", {{SW(131072), SW(16)}, {USW(false), USW(true)}, {MWL(21), MWL(1)}}, 0, NULL};
    expect_refused("qwen2", "qwen2 window 16 from layer 1", &qsw,
                   "sliding_window: 16 < max_position_embeddings 512 (use_sliding_window, layers 1..1): "
                   "sliding-window attention not supported");
    /* transformers 5's spelling: layer_types names the sliding layers */
    const variant qlt = {"config.json", {{SW(null), SW(16)}, {USW(false), USW(true)},
                                         {"\"full_attention\",", "\"sliding_attention\","}}, 0, NULL};
    expect_refused("qwen2", "qwen2 window 16 on layer_types[0]", &qlt,
                   "sliding_window: 16 < max_position_embeddings 512 (use_sliding_window, layers 0..0): "
                   "sliding-window attention not supported");
    const variant qltf = {"config.json", {{SW(null), SW(16)}, {USW(false), USW(true)}}, 0, NULL};
    expect_conforms("qwen2", "qwen2 window 16, layer_types all full", &qltf);
    const variant m512 = {"config.legacy.json", {{SW(null), SW(512)}}, 0, NULL};
    expect_conforms("mistral", "mistral window 512", &m512);
    const variant qoff = {"config.legacy.json", {{SW(131072), SW(16)}, {MWL(21), MWL(0)}}, 0, NULL};
    expect_conforms("qwen2", "qwen2 window 16, switched off", &qoff);
    const variant qpast = {"config.legacy.json", {{SW(131072), SW(16)}, {USW(false), USW(true)}, {MWL(21), MWL(2)}}, 0, NULL};
    expect_conforms("qwen2", "qwen2 window 16 from layer 2 of 2", &qpast);
}

/* What the forward pass does not compute is refused by name, not ignored:
 * MLP biases (LlamaConfig mlp_bias) and activations other than SiLU. */
static void test_unsupported_refused(void **state) {
    (void)state;
    const variant mb = {"config.json", {{"\"mlp_bias\": false", "\"mlp_bias\": true"}}, 0, NULL};
    expect_refused("llama3", "llama3 mlp_bias", &mb, "config.json: mlp_bias: true: MLP biases not supported");
    const variant ge = {"config.json", {{"\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\""}}, 0, NULL};
    expect_refused("mistral", "mistral gelu", &ge, "config.json: hidden_act: 'gelu' not supported (silu)");
}

/* ------------------------------------------------------------ files saved by transformers */

static void test_transformers_files(void **state) {
    (void)state;
    const char *base = getenv("ALRD_CONFORMANCE_HF");
    if (!base || !*base) {
        print_message("skip: ALRD_CONFORMANCE_HF unset (make_tiny_models.py --hf-out DIR)\n");
        skip();
    }
    for (const char *const *a = (const char *const[]){"llama3", "qwen2", "mistral", NULL}; *a; a++) {
        char d[700], what[96];
        snprintf(d, sizeof d, "%s/%s", base, *a);
        reference r;
        ref_read(&r, *a);
        snprintf(what, sizeof what, "%s (saved by transformers)", *a);
        expect_within(what, gap_of(d, &r, 0, 0), TOL);
        ref_free(&r);
    }
}

/* ------------------------------------------------------------ compressor */

/* Mean -log p(next token) over the sequence, from logits [n][vocab]. */
static double nll(const float *l, const reference *r) {
    double s = 0;
    for (int p = 0; p + 1 < r->n; p++) {
        const float *x = l + (size_t)p * r->vocab;
        double mx = -INFINITY, z = 0;
        for (int i = 0; i < r->vocab; i++) mx = fmax(mx, x[i]);
        for (int i = 0; i < r->vocab; i++) z += exp(x[i] - mx);
        s += mx + log(z) - x[r->tok[p + 1]];
    }
    return s / (r->n - 1);
}

static void compress(const char *model, const char *out, const char *ratio, const char *weights) {
    char log[800];
    snprintf(log, sizeof log, "%s.log", out);
    const char *args[] = {model, "-o", out, "--calib", g_calib, "--calib-samples", "2", "--calib-len", "64",
                          "--probe-tokens", "64", "--rank-ratio", ratio, "--weights", weights, NULL};
    if (run_tool("alrd-compress", args, 0, log) != 0) {
        char *t = get_text(log);
        fail_msg("alrd-compress %s --rank-ratio %s exited non-zero:\n%s", model, ratio, t ? t : "");
    }
}

static void compressed(const char *arch) {
    char d[700], out[800], what[96];
    reference r;
    ref_read(&r, arch);
    build_dir(d, sizeof d, arch, arch, NULL);
    const double ref_nll = nll(r.logits, &r);
    /* rank 1.0 keeps the whole K/V space: transformers' logits again */
    snprintf(out, sizeof out, "%s/%s-r1-f32.alrd", g_dir, arch);
    compress(d, out, "1.0", "f32");
    snprintf(what, sizeof what, "%s rank 1.0, f32 weights", arch);
    expect_within(what, gap_of(out, &r, 0, 0), TOL);
    snprintf(what, sizeof what, "%s rank 1.0, f32, decode", arch);
    expect_within(what, gap_of(out, &r, 1, 0), TOL);
    snprintf(out, sizeof out, "%s/%s-r1-f16.alrd", g_dir, arch);
    compress(d, out, "1.0", "f16");
    snprintf(what, sizeof what, "%s rank 1.0, f16 weights", arch);
    expect_within(what, gap_of(out, &r, 0, 0), F16_TOL);
    /* rank 0.5: half the K/V dims, the biases and the rope scaling kept;
     * the runtime on the file (latent cache: K = A l + b_k, RoPE after the
     * lift, A_v folded into o_proj) computes what the dense model with
     * k_proj = A_k B_k and v_proj = A_v B_v computes, and the dense path
     * is the one that conforms to transformers above */
    snprintf(out, sizeof out, "%s/%s-r05.alrd", g_dir, arch);
    compress(d, out, "0.5", "f32");
    alrd_model m;
    alrd_error err = {{0}};
    if (alrd_model_open(&m, out, &err)) fail_msg("%s", err.msg);
    assert_true(m.has_lowrank);
    int kept = 0, full = 0;
    for (int l = 0; l < m.cfg.n_layers; l++) {
        kept += alrd_model_k_width(&m, l) + alrd_model_v_width(&m, l);
        full += 2 * m.cfg.n_kv_heads * m.cfg.head_dim;
        assert_true((m.layers[l].bq != NULL) == !strcmp(arch, "qwen2"));
        assert_true((m.layers[l].bk != NULL) == !strcmp(arch, "qwen2"));
        assert_true((m.layers[l].bv != NULL) == !strcmp(arch, "qwen2"));
    }
    assert_int_equal(kept * 2, full);
    assert_int_equal(m.cfg.rope_llama3, !strcmp(arch, "llama3"));
    char dense[700], tag[64];
    snprintf(tag, sizeof tag, "%s-r05-dense", arch);
    variant v = {"config.json", {{NULL}}, 0, &m};
    build_dir(dense, sizeof dense, arch, tag, &v);
    alrd_model_free(&m);
    reference rd = r; /* the dense reconstruction's logits as the reference */
    rd.logits = run_logits(dense, &r, 0, 0);
    snprintf(what, sizeof what, "%s rank 0.5 vs A B dense", arch);
    expect_within(what, gap_of(out, &rd, 0, 0), TOL);
    snprintf(what, sizeof what, "%s rank 0.5 vs A B dense, decode", arch);
    expect_within(what, gap_of(out, &rd, 1, 0), TOL);
    free(rd.logits);
    float *l = run_logits(out, &r, 0, 0);
    gap g = compare(l, &r);
    const double half_nll = nll(l, &r);
    free(l);
    print_message("%s rank 0.5: %d of %d K/V dims kept; next-token loss %.4f (transformers %.4f)\n", arch, kept,
                  full, half_nll, ref_nll);
    report("  rank 0.5 against transformers", g); /* random weights: no low-rank structure to keep */
    assert_true(isfinite(half_nll) && g.rel_l2 > 10 * TOL);
    ref_free(&r);
}

static void test_compress_qwen2(void **state) {
    (void)state;
    compressed("qwen2");
}
static void test_compress_llama3(void **state) {
    (void)state;
    compressed("llama3");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_qwen2),
        cmocka_unit_test(test_mistral),
        cmocka_unit_test(test_negative_controls),
        cmocka_unit_test(test_sliding_window),
        cmocka_unit_test(test_unsupported_refused),
        cmocka_unit_test(test_transformers_files),
        cmocka_unit_test(test_compress_qwen2),
        cmocka_unit_test(test_compress_llama3),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
