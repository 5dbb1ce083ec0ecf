/* alrd-compress: calibrate, factor K/V projections with a whitened SVD,
 * choose ranks under a budget and write a packed .alrd file. */
#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../alrd.h"
/* On purpose, as the compressor: */
#include "../calib/compress.h"   /* it drives the calibration pipeline (alrd_compress_run) */
#include "../calib/ranks.h"      /* ranks.json: --ranks reads one, OUT.ranks.json is written */
#include "../formats/alrd_pack.h" /* alrd_pack_write streams the compressed file from the source */
#include "../runtime/kv_cache.h" /* bytes per token from the cache's real layout, for ranks and bits no file has yet */

static void usage(void) {
    fprintf(stderr,
            "usage: alrd-compress MODEL -o OUT.alrd --calib TEXT [--calib TEXT2 ...] [options]\n"
            "  --calib TEXT          calibration text (UTF-8; control tokens such as <|im_start|> are parsed);\n"
            "                        given more than once, the sequences are shared evenly among the files\n"
            "                        (prose and chat transcripts, say: alrd-run --chat --transcript writes those)\n"
            "  --rank-ratio F        average kept fraction of K/V dims (default 0.5)\n"
            "  --ranks FILE          ranks.json ({\"model.layers.0.self_attn.k_proj\": 96, ...}); no search\n"
            "  --uniform             the same ratio in every module (ablation)\n"
            "  --no-whiten           plain SVD instead of activation-aware (ablation)\n"
            "  --group-heads G       KV heads sharing one latent (default: all of a layer)\n"
            "  --calib-samples N     calibration sequences (default 64)\n"
            "  --calib-len L         tokens per sequence (default 512)\n"
            "  --probe-tokens N      tokens for the sensitivity probe (default 256)\n"
            "  --damp F              Gram dampening: C += F * mean(diag C) * I (default 0); keeps\n"
            "                        directions the calibration text never excites, e.g. chat tokens\n"
            "  --hadamard            rotate each latent (folded into A and B) before quantization\n"
            "  --weights f16|f32|bf16  dtype of the stored weights (default f16)\n"
            "  --kv-bits B, --k-bits B, --v-bits B   cache defaults (default 16)\n"
            "  --group-size G, --residual R, --no-kivi   KIVI defaults (32, 128, on)\n"
            "  --report FILE         compression report as JSON\n"
            "  --kv-bits-per-token B joint rank + bits allocation under a KV cache budget of B bits per\n"
            "                        token (all layers, K + V: codes, scales, zeros and the residual\n"
            "                        window amortised over --amortize-ctx); writes per-layer bits\n"
            "  --kv-ratio X          the same allocation with the budget given as a compression ratio:\n"
            "                        the fp16 cache's bytes per token / X (e.g. 10 for a 10x smaller cache)\n"
            "  --amortize-ctx N      context for the byte budget and the report (default 4096)\n"
            "  --cpu                 calibration statistics and SVDs on the CPU even when a GPU is present\n"
            "  --rank-step S         rank grid of the joint allocation (default max(8, group size))\n"
            "  --measure N           closed loop: the joint allocation, its variants and the uniform\n"
            "                        configurations within the budget are ranked by predicted KL and the\n"
            "                        best N (default 6, at most 16) measured through the quantised cache\n"
            "                        on the probe tokens; the lowest measured KL is written. 0: write the\n"
            "                        allocation unmeasured (open loop)\n"
            "The chosen ranks are always written next to OUT as OUT.ranks.json.\n");
}

static void on_signal(int sig) {
    const char *tmp = alrd_outfile_active_tmp();
    if (tmp) unlink(tmp); /* never leave a partial file behind */
    signal(sig, SIG_DFL);
    raise(sig);
}

/* A NaN or Inf weight would only surface later, as a non-finite Gram or
 * SVD of some other module; name the tensor instead. */
static int check_finite(const alrd_model *m, alrd_error *err) {
    const alrd_config *c = &m->cfg;
    const size_t H = c->hidden, Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim,
                 F = c->ffn, V = c->vocab_size;
    for (int l = -1; l < c->n_layers; l++) {
        alrd_layer view;
        const alrd_layer *L = l >= 0 ? alrd_model_layer(m, l, &view, err) : NULL; /* lazy: one layer at a time */
        if (l >= 0 && !L) return -1;
        struct { const float *p; size_t rows, cols; const char *name; } t[13] = {
            {m->embed, V, H, "model.embed_tokens.weight"}, {m->final_norm, 1, H, "model.norm.weight"},
            {m->lm_head != m->embed ? m->lm_head : NULL, V, H, "lm_head.weight"}};
        if (L) {
            const struct { const float *p; size_t rows, cols; const char *name; } lt[13] = {
                {L->attn_norm, 1, H, "input_layernorm.weight"}, {L->ffn_norm, 1, H, "post_attention_layernorm.weight"},
                {L->wq, Q, H, "self_attn.q_proj.weight"}, {L->bq, 1, Q, "self_attn.q_proj.bias"},
                {L->wk, KV, H, "self_attn.k_proj.weight"}, {L->bk, 1, KV, "self_attn.k_proj.bias"},
                {L->wv, KV, H, "self_attn.v_proj.weight"}, {L->bv, 1, KV, "self_attn.v_proj.bias"},
                {L->wo, H, Q, "self_attn.o_proj.weight"}, {L->bo, 1, H, "self_attn.o_proj.bias"},
                {L->w_gate, F, H, "mlp.gate_proj.weight"}, {L->w_up, F, H, "mlp.up_proj.weight"},
                {L->w_down, H, F, "mlp.down_proj.weight"}};
            memcpy(t, lt, sizeof t);
        }
        for (int i = 0; i < 13; i++) {
            if (!t[i].p) continue;
            for (size_t k = 0, n = t[i].rows * t[i].cols; k < n; k++)
                if (!isfinite(t[i].p[k])) {
                    char nm[160];
                    if (l >= 0) snprintf(nm, sizeof nm, "model.layers.%d.%s", l, t[i].name);
                    else snprintf(nm, sizeof nm, "%s", t[i].name);
                    return alrd_errf(err, "%s: %s: weight is %s at [%zu, %zu]", m->path, nm,
                                     isnan(t[i].p[k]) ? "NaN" : "Inf", k / t[i].cols, k % t[i].cols);
                }
        }
    }
    return 0;
}

static int die(const char *msg) {
    fprintf(stderr, "alrd-compress: %s\n", msg);
    return 1;
}

/* kb/vb: per-layer bits, or NULL for kb1/vb1 in every layer */
static double kv_bytes_per_token(const alrd_model *m, const int *k_rank, const int *v_rank, int n_groups,
                                 const int *kb, const int *vb, int kb1, int vb1, int G, int R, int kivi, int ctx) {
    double b = 0;
    int full = m->cfg.n_kv_heads * m->cfg.head_dim;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        int dk = k_rank ? n_groups * k_rank[l] : full, dv = v_rank ? n_groups * v_rank[l] : full;
        b += alrd_kv_cache_bytes_per_token(dk, dv, kb ? kb[l] : kb1, vb ? vb[l] : vb1, G, R, kivi, ctx);
    }
    return b;
}

/* What the written file's probe adds to the joint allocation's report. */
typedef struct {
    double probe_kl, probe_kl_stderr, probe_top1; /* measured: the written file, decode path, probe tokens */
    size_t probe_scored;
    double t_probe;
} joint_report;

/* path opened as src and loaded lazily into m (one layer's matrices in fp32
 * at a time); on failure nothing stays open. */
static int open_lazy(const char *path, alrd_source *src, alrd_model *m, alrd_error *err) {
    if (alrd_source_open(src, path, err)) return -1;
    if (alrd_model_load_opts(m, src, ALRD_MODEL_LAZY, err)) {
        alrd_source_close(src);
        return -1;
    }
    return 0;
}

/* The written file, reloaded through the runtime (mc), scored against the
 * uncompressed model on the probe sequences (the second half of each):
 * with its own per-layer bits through the decode path (unquantised = 0), or
 * with an unquantised cache by prefill (unquantised = 1). */
static int probe_file(alrd_model *base, alrd_model *mc, const int32_t *ids, int n_seq, int seq_len, int unquantised,
                      alrd_ppl_result *pr, alrd_error *err) {
    alrd_ctx *c = NULL, *ref = NULL;
    alrd_cache_opts co, plain;
    alrd_cache_opts_default(mc, &co);
    alrd_cache_opts_default(base, &plain);
    plain.k_bits = plain.v_bits = 16;
    if (unquantised) co.k_bits = co.v_bits = 16;
    int rc = -1;
    if (!alrd_ctx_new(&c, mc, seq_len, seq_len, &co, err) && !alrd_ctx_new(&ref, base, seq_len, seq_len, &plain, err)) {
        alrd_ppl_opts po = {.ctx = seq_len, .force_decode = unquantised ? -1 : 1};
        rc = alrd_perplexity_tokens(c, ref, ids, (size_t)n_seq * seq_len, 0, 0, &po, pr, err);
    }
    alrd_ctx_free(c);
    alrd_ctx_free(ref);
    return rc;
}

/* KL of the written file (its per-layer bits, decode path) on the probe. */
static int measure_probe(alrd_model *base, alrd_model *mc, const alrd_compress_result *r, joint_report *jr,
                         alrd_error *err) {
    double t0 = alrd_now();
    alrd_ppl_result pr;
    int rc = probe_file(base, mc, r->probe_ids, r->probe_n_seq, r->probe_len, 0, &pr, err);
    if (!rc) {
        jr->probe_kl = pr.kl;
        jr->probe_kl_stderr = pr.kl_stderr;
        jr->probe_top1 = pr.top1;
        jr->probe_scored = pr.n_scored;
    }
    jr->t_probe = alrd_now() - t0;
    return rc;
}

/* The written file against what the compression measured in memory: its
 * KL on the probe with an unquantised cache (the truncation alone, as
 * r->measured_kl is) must not exceed the measured KL beyond noise (the
 * file's f16 weights, the scored positions). A file that scores far worse
 * than its report is an error, not a success. *kl gets the file's KL. */
static int check_written(alrd_model *base, alrd_model *mc, const char *path, const alrd_compress_result *r, double *kl,
                         alrd_error *err) {
    alrd_ppl_result pr;
    if (probe_file(base, mc, r->probe_ids, r->probe_n_seq, r->probe_len, 1, &pr, err)) return -1;
    *kl = pr.kl;
    if (!isfinite(pr.kl) || pr.kl > 2 * r->measured_kl + 0.05)
        return alrd_errf(err, "%s: the written file scores KL %.4f against the uncompressed model on the %zu probe "
                         "tokens, where the compression measured %.4f: the file is not what was computed",
                         path, pr.kl, pr.n_scored, r->measured_kl);
    return 0;
}

int main(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *calib = NULL, *ranks_path = NULL, *report = NULL;
    const char *calibs[8];
    int n_calibs = 0;
    const char *weights = "f16";
    alrd_compress_opts o;
    alrd_compress_opts_default(&o);
    o.progress = 1;
    int n_samples = 64, calib_len = 512, kb = 16, vb = 16, G = 32, R = 128, kivi = 1;
    int ctx_amort = 4096, rank_step = 0, n_measure = 6;
    double kv_ratio = 0;
    joint_report jr;
    memset(&jr, 0, sizeof jr);
    alrd_compress_joint jc;
    memset(&jc, 0, sizeof jc);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        else if (!strcmp(a, "--uniform")) { o.uniform = 1; takes = 0; }
        else if (!strcmp(a, "--no-whiten")) { o.whiten = 0; takes = 0; }
        else if (!strcmp(a, "--no-kivi")) { kivi = 0; takes = 0; }
        else if (!strcmp(a, "--hadamard")) { o.hadamard = 1; takes = 0; }
        else if (!strcmp(a, "--cpu")) { o.cpu_only = 1; takes = 0; }
        else if (a[0] == '-' && !v) { fprintf(stderr, "alrd-compress: %s needs a value\n", a); return 2; }
        else if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--calib")) {
            if (n_calibs == 8) return die("--calib: at most 8 files");
            calib = calibs[n_calibs++] = v;
        }
        else if (!strcmp(a, "--ranks")) ranks_path = v;
        else if (!strcmp(a, "--report")) report = v;
        else if (!strcmp(a, "--weights")) weights = v;
        else if (!strcmp(a, "--rank-ratio")) o.rank_ratio = atof(v);
        else if (!strcmp(a, "--group-heads")) o.group_heads = atoi(v);
        else if (!strcmp(a, "--calib-samples")) n_samples = atoi(v);
        else if (!strcmp(a, "--calib-len")) calib_len = atoi(v);
        else if (!strcmp(a, "--probe-tokens")) o.probe_tokens = atoi(v);
        else if (!strcmp(a, "--damp")) o.damp = atof(v);
        else if (!strcmp(a, "--kv-bits")) kb = vb = atoi(v);
        else if (!strcmp(a, "--k-bits")) kb = atoi(v);
        else if (!strcmp(a, "--v-bits")) vb = atoi(v);
        else if (!strcmp(a, "--group-size")) G = atoi(v);
        else if (!strcmp(a, "--residual")) R = atoi(v);
        else if (!strcmp(a, "--kv-bits-per-token")) jc.budget_bits = atof(v);
        else if (!strcmp(a, "--kv-ratio")) kv_ratio = atof(v);
        else if (!strcmp(a, "--amortize-ctx")) ctx_amort = atoi(v);
        else if (!strcmp(a, "--rank-step")) rank_step = atoi(v);
        else if (!strcmp(a, "--measure")) n_measure = atoi(v);
        else if (a[0] == '-') { fprintf(stderr, "alrd-compress: unknown option %s (see --help)\n", a); return 2; }
        else { model = a; takes = 0; }
        i += takes;
    }
    if (!model || !out || !calib) { usage(); return 2; }
    if (!(o.rank_ratio > 0 && o.rank_ratio <= 1)) return die("--rank-ratio: expected a number in (0, 1]");
    if (n_samples < 1 || calib_len < 16 || calib_len > 65536) return die("--calib-samples/--calib-len out of range");
    if (o.probe_tokens < 16) return die("--probe-tokens: expected at least 16");
    alrd_dtype wdt = !strcmp(weights, "f16") ? ALRD_F16 : !strcmp(weights, "f32") ? ALRD_F32
                   : !strcmp(weights, "bf16") ? ALRD_BF16 : ALRD_DTYPE_COUNT;
    if (wdt == ALRD_DTYPE_COUNT) return die("--weights: expected f16, f32 or bf16");
    for (int b = 0; b < 2; b++) {
        int x = b ? vb : kb;
        if (x != 2 && x != 3 && x != 4 && x != 8 && x != 16) return die("cache bits must be 2, 3, 4, 8 or 16");
    }
    if (kv_ratio != 0 && jc.budget_bits != 0) return die("--kv-ratio and --kv-bits-per-token: give one budget");
    if (kv_ratio != 0 && !(kv_ratio >= 1 && kv_ratio <= 1024)) return die("--kv-ratio: expected a ratio in [1, 1024]");
    const int joint = jc.budget_bits != 0 || kv_ratio != 0;
    if (jc.budget_bits != 0 && !(jc.budget_bits > 0)) return die("--kv-bits-per-token: expected a positive number of bits");
    if (joint && (ranks_path || o.uniform || !o.whiten))
        return die("--kv-bits-per-token allocates ranks itself: not with --ranks, --uniform or --no-whiten");
    if (ctx_amort < 1 || ctx_amort > (1 << 24)) return die("--amortize-ctx: expected 1..16777216");
    if (G < 1 || R < 0 || (G && R % G) || (kivi && R < G))
        return die("--group-size/--residual: expected G >= 1 and R a multiple of G (R >= G with KIVI)");
    if (!rank_step) rank_step = G > 8 ? G : 8;
    if (n_measure < 0 || n_measure > ALRD_JOINT_MAX_MEASURE) return die("--measure: expected 0..16");
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    { /* an unwritable output fails now, not after the calibration */
        alrd_outfile probe;
        alrd_error perr;
        if (alrd_outfile_open(&probe, out, &perr)) return die(perr.msg);
        alrd_outfile_abort(&probe);
    }

    alrd_error err;
    alrd_source src;
    alrd_model m;
    /* Lazy weights: one layer in fp32 at a time (a 7B model compresses in well
     * under 16 GB). calib/qerr reads every layer's K/V weights: joint keeps those. */
    if (open_lazy(model, &src, &m, &err)) return die(err.msg);
    if (check_finite(&m, &err)) return die(err.msg);
    const alrd_config *c = &m.cfg;
    int gheads = o.group_heads ? o.group_heads : c->n_kv_heads;
    if (gheads <= 0 || c->n_kv_heads % gheads) return die("--group-heads must divide the number of KV heads");
    int n_groups = c->n_kv_heads / gheads, gh = gheads * c->head_dim;
    if (kv_ratio != 0) { /* the budget in bits per token: the fp16 cache's bytes over the ratio */
        jc.budget_bits = 8 * kv_bytes_per_token(&m, NULL, NULL, n_groups, NULL, NULL, 16, 16, G, R, kivi, ctx_amort) /
                         kv_ratio;
        fprintf(stderr, "alrd-compress: --kv-ratio %g: a budget of %.0f bits per token\n", kv_ratio, jc.budget_bits);
    }

    /* calibration tokens: n_samples sequences of calib_len, shared evenly among the files */
    char calib_sha[65];
    int32_t *samples = NULL;
    int got = 0;
    if (n_calibs > 1) { /* the sequence length is fixed: every file must hold one */
        samples = malloc(sizeof(int32_t) * (size_t)n_samples * calib_len);
        if (!samples) return die("out of memory");
    }
    char *shas = calloc((size_t)n_calibs, 65);
    if (!shas) return die("out of memory");
    for (int f = 0; f < n_calibs; f++) {
        char *text = NULL;
        size_t len = 0, n_ids = 0;
        int32_t *ids = NULL;
        if (alrd_read_file(calibs[f], (size_t)1 << 30, &text, &len, &err)) return die(err.msg);
        alrd_sha256_hex(text, len, shas + 65 * f);
        if (alrd_tokenizer_encode(m.tok, text, len, 0, 1, &ids, &n_ids, &err)) {
            fprintf(stderr, "alrd-compress: %s: %s\n", calibs[f], err.msg);
            return 1;
        }
        free(text);
        if (n_calibs == 1) {
            if (n_ids < (size_t)calib_len) calib_len = (int)n_ids;
            if (calib_len < 16) { fprintf(stderr, "alrd-compress: %s: only %zu tokens of calibration text\n", calibs[f], n_ids); return 1; }
            samples = alrd_calib_pick_samples(ids, n_ids, &n_samples, calib_len);
            free(ids);
            if (!samples) return die("out of memory");
            got = n_samples;
            break;
        }
        if (n_ids < (size_t)calib_len) {
            fprintf(stderr, "alrd-compress: %s: only %zu tokens of calibration text, fewer than --calib-len %d\n",
                    calibs[f], n_ids, calib_len);
            return 1;
        }
        int want = n_samples / n_calibs + (f < n_samples % n_calibs);
        int32_t *part = want > 0 ? alrd_calib_pick_samples(ids, n_ids, &want, calib_len) : NULL;
        free(ids);
        if (want > 0 && !part) return die("out of memory");
        if (want > 0) memcpy(samples + (size_t)got * calib_len, part, sizeof(int32_t) * (size_t)want * calib_len);
        free(part);
        fprintf(stderr, "alrd-compress: %s: %d sequences of %d tokens\n", calibs[f], want, calib_len);
        got += want;
    }
    n_samples = got;
    if (n_samples < 1) return die("no calibration sequences");
    if (n_calibs == 1) memcpy(calib_sha, shas, 65);
    else alrd_sha256_hex(shas, (size_t)65 * n_calibs, calib_sha); /* of the files' digests, in order */
    free(shas);

    int *fk = NULL, *fv = NULL;
    if (ranks_path) {
        fk = calloc(c->n_layers, sizeof(int));
        fv = calloc(c->n_layers, sizeof(int));
        if (!fk || !fv) return die("out of memory");
        if (alrd_ranks_json_read(ranks_path, c->n_layers, gh, fk, fv, &err)) return die(err.msg);
        o.k_rank = fk;
        o.v_rank = fv;
    }
    fprintf(stderr, "alrd-compress: %s: %d layers, %d KV heads in %d group(s), calibration %d x %d tokens of %s\n",
            model, c->n_layers, c->n_kv_heads, n_groups, n_samples, calib_len, calib);
    alrd_compress_result r;
    int *kbits = malloc(sizeof(int) * c->n_layers), *vbits = malloc(sizeof(int) * c->n_layers);
    if (!kbits || !vbits) return die("out of memory");
    for (int l = 0; l < c->n_layers; l++) { kbits[l] = kb; vbits[l] = vb; }
    if (joint) {
        jc.ctx = ctx_amort, jc.group_size = G, jc.residual = R, jc.use_kivi = kivi, jc.step = rank_step;
        jc.k_bits = kbits, jc.v_bits = vbits;
        jc.measure = n_measure;
        o.joint = &jc;
    }
    if (alrd_compress_run(&m, samples, n_samples, calib_len, &o, &r, &err)) return die(err.msg);
    free(samples);

    alrd_lowrank lr = {.n_layers = c->n_layers, .group_heads = gheads, .k_rank = r.k_rank, .v_rank = r.v_rank,
                       .use_kivi = kivi, .group_size = G, .residual_length = R, .hadamard = o.hadamard, .whitened = o.whiten};
    lr.k_bits = kbits;
    lr.v_bits = vbits;

    /* provenance: only what determines the bytes, so the same inputs give the same file */
    cJSON *meta = cJSON_CreateObject();
    const char *base = strrchr(model, '/');
    cJSON_AddStringToObject(meta, "source", base ? base + 1 : model);
    cJSON_AddStringToObject(meta, "calib_sha256", calib_sha);
    cJSON_AddNumberToObject(meta, "calib_samples", n_samples);
    cJSON_AddNumberToObject(meta, "calib_len", calib_len);
    cJSON_AddBoolToObject(meta, "whitened", o.whiten);
    cJSON_AddNumberToObject(meta, "group_heads", gheads);
    cJSON_AddBoolToObject(meta, "hadamard", o.hadamard);
    if (o.damp > 0) cJSON_AddNumberToObject(meta, "damp", o.damp);

    if (joint) cJSON_AddNumberToObject(meta, "kv_bits_per_token", jc.budget_bits);
    char *meta_s = cJSON_PrintUnformatted(meta);
    cJSON_Delete(meta);
    if (!meta_s) return die("out of memory");

    /* everything of the source but the decomposed k/v weights, plus factors,
     * converted tensor by tensor as they are written */
    const alrd_factors fac = alrd_compress_factors(&r);
    const double t_write0 = alrd_now();
    if (alrd_pack_write(out, &src, wdt, &fac, &lr, meta_s, &err)) return die(err.msg);
    const double t_write = alrd_now() - t_write0;
    char ranks_out[1100];
    snprintf(ranks_out, sizeof ranks_out, "%s.ranks.json", out);
    if (alrd_ranks_json_write(ranks_out, c->n_layers, r.k_rank, r.v_rank, &err)) return die(err.msg);

    /* the written file, reloaded once, lazily as the source (one layer in fp32 at a time: a 7B compression
     * stays within its memory bound): checked against the in-memory measure, then (joint) its own bits */
    double file_kl = 0, t_check0 = alrd_now();
    alrd_source wsrc;
    alrd_model wm;
    if (open_lazy(out, &wsrc, &wm, &err)) return die(err.msg);
    int bad = check_written(&m, &wm, out, &r, &file_kl, &err);
    int prc = !bad && joint ? measure_probe(&m, &wm, &r, &jr, &err) : 0;
    alrd_model_free(&wm);
    alrd_source_close(&wsrc);
    if (bad) { /* the output path does not keep a wrong file */
        char rejected[1100];
        snprintf(rejected, sizeof rejected, "%s.rejected", out);
        if (rename(out, rejected) != 0) remove(out);
        remove(ranks_out);
        fprintf(stderr, "alrd-compress: %s (kept as %s for inspection)\n", err.msg, rejected);
        return 1;
    }
    if (prc) return die(err.msg);
    const double t_check = alrd_now() - t_check0;

    /* report: table on stderr, JSON on request */
    double before = kv_bytes_per_token(&m, NULL, NULL, n_groups, NULL, NULL, 16, 16, G, R, kivi, ctx_amort);
    for (int l = 0; l < c->n_layers; l++) { /* rank 0 = full width in the cache */
        if (!r.k_rank[l]) r.k_rank[l] = gheads * c->head_dim;
        if (!r.v_rank[l]) r.v_rank[l] = gheads * c->head_dim;
    }
    double after = kv_bytes_per_token(&m, r.k_rank, r.v_rank, n_groups, kbits, vbits, kb, vb, G, R, kivi, ctx_amort);
    fprintf(stderr, "%-34s %5s %5s %4s %8s %8s %10s %10s\n", "module", "rank", "full", "bits", "kept", "relerr", "sens",
            "pred");
    for (int i = 0; i < r.n_modules; i++) {
        const alrd_module_report *mr = &r.modules[i];
        fprintf(stderr, "%-34s %5d %5d %4d %8.5f %8.5f %10.3g %10.3g\n", mr->name, mr->rank, mr->full,
                (mr->is_v ? vbits : kbits)[mr->layer], mr->kept_energy, mr->rel_error, mr->sensitivity, mr->predicted);
    }
    if (joint)
        fprintf(stderr, "calibration loss on %d probe tokens, truncation only (prefill): predicted KL %.5f, measured KL "
                "%.5f; CE %.4f -> %.4f\n", o.probe_tokens, jc.pred_trunc, r.measured_kl, r.base_ce, r.compressed_ce);
    else
        fprintf(stderr, "calibration loss on %d probe tokens: predicted KL %.5f, measured KL %.5f; CE %.4f -> %.4f\n",
                o.probe_tokens, r.predicted_kl, r.measured_kl, r.base_ce, r.compressed_ce);
    if (joint) {
        fprintf(stderr, "joint allocation under %.0f bits = %.1f bytes per token: predicted KL %.5f (truncation %.5f + "
                "quantisation %.5f at a %d-token context)\n", jc.budget_bits, jc.budget_bits / 8, jc.pred_trunc +
                jc.pred_quant, jc.pred_trunc, jc.pred_quant, ctx_amort);
        fprintf(stderr, "probe, decode path over the written file (%zu scored tokens): predicted KL %.5f (%.5f + %.5f), "
                "measured KL %.5f +/- %.5f, top-1 %.4f\n", jr.probe_scored, jc.pred_trunc + jc.probe_pred_quant,
                jc.pred_trunc, jc.probe_pred_quant, jr.probe_kl, jr.probe_kl_stderr, jr.probe_top1);
    }
    if (joint && jc.chosen >= 0) {
        fprintf(stderr, "closed loop: %d of %d candidates within the budget measured through the quantised cache on "
                "the probe (%zu scored tokens), %.1f s:\n", jc.n_measured, jc.n_candidates,
                jc.cand[0].meas.n_scored, jc.t_select);
        fprintf(stderr, "  %-44s %10s %10s %10s %20s %7s\n", "candidate", "bytes/tok", "pred KL", "pred probe",
                "measured KL", "top-1");
        for (int i = 0; i < jc.n_measured; i++) {
            const alrd_joint_candidate *k = &jc.cand[i];
            fprintf(stderr, "%s %-44s %10.1f %10.5f %10.5f %11.5f +/- %.4f %7.4f\n", i == jc.chosen ? "*" : " ",
                    k->label, k->bytes, k->pred, k->pred_probe, k->meas.kl, k->meas.kl_stderr, k->meas.top1);
        }
        const alrd_joint_candidate *ch = &jc.cand[jc.chosen];
        if (jc.chosen == 0)
            fprintf(stderr, "chose the joint allocation: the lowest measured KL of the %d measured\n", jc.n_measured);
        else
            fprintf(stderr, "chose %s: the lowest measured KL of the %d measured (%.5f, against %.5f for the joint "
                    "allocation as predicted)\n", ch->label, jc.n_measured, ch->meas.kl, jc.cand[0].meas.kl);
    }
    fprintf(stderr, "the written file, reloaded: KL %.5f on the probe tokens (unquantised cache)\n", file_kl);
    fprintf(stderr, "KV bytes per token (all layers, %d-token context): %.1f -> %.1f (%.2fx)\n", ctx_amort, before,
            after, before / after);
    const char *calib_dev = r.stats_on_gpu ? "GPU" : "CPU"; /* the statistics and the probes share a device */
    fprintf(stderr, "time: statistics %.1f s (%s), svd %.1f s (%s), sensitivities %.1f s (%s), compression %.1f s; "
            "writing %.1f s, checking the written file %.1f s\n", r.t_stats, calib_dev, r.t_svd,
            r.svd_on_gpu ? "GPU" : "CPU", r.t_sens, calib_dev, r.t_total, t_write, t_check);
    fprintf(stderr, "wrote %s and %s\n", out, ranks_out);
    if (report) {
        cJSON *j = cJSON_CreateObject(), *mods = cJSON_AddArrayToObject(j, "modules");
        for (int i = 0; i < r.n_modules; i++) {
            const alrd_module_report *mr = &r.modules[i];
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", mr->name);
            cJSON_AddNumberToObject(e, "rank", mr->rank);
            cJSON_AddNumberToObject(e, "bits", (mr->is_v ? vbits : kbits)[mr->layer]);
            cJSON_AddNumberToObject(e, "full", mr->full);
            cJSON_AddNumberToObject(e, "kept_energy", mr->kept_energy);
            cJSON_AddNumberToObject(e, "rel_error", mr->rel_error);
            cJSON_AddNumberToObject(e, "sensitivity", mr->sensitivity);
            cJSON_AddNumberToObject(e, "probe_rank", mr->probe_rank);
            cJSON_AddNumberToObject(e, "probe_kl", mr->probe_kl);
            cJSON_AddNumberToObject(e, "predicted", mr->predicted);
            cJSON_AddItemToArray(mods, e);
        }
        cJSON_AddNumberToObject(j, "predicted_kl", r.predicted_kl);
        cJSON_AddNumberToObject(j, "measured_kl", r.measured_kl);
        cJSON_AddNumberToObject(j, "base_ce", r.base_ce);
        cJSON_AddNumberToObject(j, "compressed_ce", r.compressed_ce);
        cJSON_AddNumberToObject(j, "kv_bytes_per_token_before", before);
        cJSON_AddNumberToObject(j, "kv_bytes_per_token_after", after);
        cJSON_AddNumberToObject(j, "kv_amortized_context", ctx_amort);
        cJSON_AddNumberToObject(j, "calib_tokens", (double)r.calib_tokens);
        cJSON_AddNumberToObject(j, "seconds_total", r.t_total);
        cJSON_AddNumberToObject(j, "seconds_stats", r.t_stats);
        cJSON_AddNumberToObject(j, "seconds_svd", r.t_svd);
        cJSON_AddStringToObject(j, "stats_device", r.stats_on_gpu ? "gpu" : "cpu");
        cJSON_AddStringToObject(j, "svd_device", r.svd_on_gpu ? "gpu" : "cpu");
        if (joint) {
            cJSON *jj = cJSON_AddObjectToObject(j, "joint");
            cJSON_AddNumberToObject(jj, "kv_bits_per_token_budget", jc.budget_bits);
            cJSON_AddNumberToObject(jj, "kv_bits_per_token", after * 8);
            cJSON_AddNumberToObject(jj, "rank_step", rank_step);
            cJSON_AddNumberToObject(jj, "predicted_kl_truncation", jc.pred_trunc);
            cJSON_AddNumberToObject(jj, "predicted_kl_quantisation", jc.pred_quant);
            cJSON_AddNumberToObject(jj, "probe_predicted_kl", jc.pred_trunc + jc.probe_pred_quant);
            cJSON_AddNumberToObject(jj, "probe_measured_kl", jr.probe_kl);
            cJSON_AddNumberToObject(jj, "probe_measured_kl_stderr", jr.probe_kl_stderr);
            cJSON_AddNumberToObject(jj, "probe_top1", jr.probe_top1);
            cJSON_AddNumberToObject(jj, "probe_scored_tokens", (double)jr.probe_scored);
            cJSON_AddNumberToObject(jj, "seconds_qerr", jc.t_qerr);
            cJSON_AddNumberToObject(jj, "seconds_probe", jr.t_probe);
            cJSON_AddBoolToObject(jj, "closed_loop", jc.chosen >= 0);
            if (jc.chosen >= 0) {
                cJSON_AddNumberToObject(jj, "candidates_within_budget", jc.n_candidates);
                cJSON_AddNumberToObject(jj, "seconds_select", jc.t_select);
                cJSON *ca = cJSON_AddArrayToObject(jj, "candidates_measured");
                static const char *KIND[] = {"joint", "joint_variant", "uniform"};
                for (int i = 0; i < jc.n_measured; i++) {
                    const alrd_joint_candidate *k = &jc.cand[i];
                    cJSON *e = cJSON_CreateObject();
                    cJSON_AddStringToObject(e, "label", k->label);
                    cJSON_AddStringToObject(e, "kind", KIND[k->kind]);
                    if (k->kind == ALRD_CAND_UNIFORM) {
                        cJSON_AddNumberToObject(e, "rank", k->rank);
                        cJSON_AddNumberToObject(e, "k_bits", k->k_bits);
                        cJSON_AddNumberToObject(e, "v_bits", k->v_bits);
                    } else {
                        cJSON_AddNumberToObject(e, "quant_mult", k->quant_mult);
                    }
                    cJSON_AddNumberToObject(e, "kv_bytes_per_token", k->bytes);
                    cJSON_AddNumberToObject(e, "predicted_kl", k->pred);
                    cJSON_AddNumberToObject(e, "predicted_kl_truncation", k->pred_trunc);
                    cJSON_AddNumberToObject(e, "probe_predicted_kl", k->pred_probe);
                    cJSON_AddNumberToObject(e, "probe_measured_kl", k->meas.kl);
                    cJSON_AddNumberToObject(e, "probe_measured_kl_stderr", k->meas.kl_stderr);
                    cJSON_AddNumberToObject(e, "probe_top1", k->meas.top1);
                    cJSON_AddNumberToObject(e, "seconds", k->meas.seconds);
                    cJSON_AddBoolToObject(e, "chosen", i == jc.chosen);
                    cJSON_AddItemToArray(ca, e);
                }
                cJSON_AddStringToObject(jj, "chosen", jc.cand[jc.chosen].label);
                cJSON_AddStringToObject(jj, "chosen_why", jc.chosen == 0 ? "the joint allocation: lowest measured KL"
                                                                        : "lowest measured KL of the candidates measured");
            }
        }
        char *s = cJSON_Print(j);
        cJSON_Delete(j);
        alrd_outfile of;
        if (!s || alrd_outfile_open(&of, report, &err) || alrd_outfile_write(&of, s, strlen(s), &err) ||
            alrd_outfile_commit(&of, &err)) {
            free(s);
            return die(err.msg);
        }
        free(s);
    }
    free(kbits); free(vbits); free(fk); free(fv); free(meta_s);
    alrd_compress_result_free(&r);
    alrd_model_free(&m);
    alrd_source_close(&src);
    return 0;
}
