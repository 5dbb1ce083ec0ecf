/* alrd-compress: calibrate, factor K/V projections with a whitened SVD,
 * choose ranks under a budget and write a packed .alrd file. */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../calib/compress.h"
#include "../calib/ranks.h"
#include "../formats/alrd_file.h"
#include "../runtime/kv_cache.h"
#include "../runtime/model.h"

static void usage(void) {
    fprintf(stderr,
            "usage: alrd-compress MODEL -o OUT.alrd --calib TEXT [options]\n"
            "  --rank-ratio F        average kept fraction of K/V dims (default 0.5)\n"
            "  --ranks FILE          ranks.json ({\"model.layers.0.self_attn.k_proj\": 96, ...}); no search\n"
            "  --uniform             the same ratio in every module (ablation)\n"
            "  --no-whiten           plain SVD instead of activation-aware (ablation)\n"
            "  --group-heads G       KV heads sharing one latent (default: all of a layer)\n"
            "  --calib-samples N     calibration sequences (default 64)\n"
            "  --calib-len L         tokens per sequence (default 512)\n"
            "  --probe-tokens N      tokens for the sensitivity probe (default 256)\n"
            "  --hadamard            rotate each latent (folded into A and B) before quantization\n"
            "  --weights f16|f32|bf16  dtype of the stored weights (default f16)\n"
            "  --kv-bits B, --k-bits B, --v-bits B   cache defaults (default 16)\n"
            "  --group-size G, --residual R, --no-kivi   KIVI defaults (32, 128, on)\n"
            "  --report FILE         compression report as JSON\n"
            "The chosen ranks are always written next to OUT as OUT.ranks.json.\n");
}

static void on_signal(int sig) {
    const char *tmp = alrd_outfile_active_tmp();
    if (tmp) unlink(tmp); /* never leave a partial file behind */
    signal(sig, SIG_DFL);
    raise(sig);
}

static int die(const char *msg) {
    fprintf(stderr, "alrd-compress: %s\n", msg);
    return 1;
}

/* Evenly spaced, non-overlapping samples of len tokens from ids. */
static int32_t *pick_samples(const int32_t *ids, size_t n, int *n_samples, int len) {
    if ((size_t)len > n) return NULL;
    size_t fit = n / len;
    if ((size_t)*n_samples > fit) *n_samples = (int)fit;
    int32_t *out = malloc(sizeof(int32_t) * (size_t)*n_samples * len);
    if (!out) return NULL;
    size_t stride = *n_samples > 1 ? (n - len) / (*n_samples - 1) : 0;
    for (int s = 0; s < *n_samples; s++) memcpy(out + (size_t)s * len, ids + s * stride, sizeof(int32_t) * len);
    return out;
}

static double kv_bytes_per_token(const alrd_model *m, const int *k_rank, const int *v_rank, int n_groups,
                                 int kb, int vb, int G, int R, int kivi, int ctx) {
    double b = 0;
    int full = m->cfg.n_kv_heads * m->cfg.head_dim;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        int dk = k_rank ? n_groups * k_rank[l] : full, dv = v_rank ? n_groups * v_rank[l] : full;
        b += alrd_kv_cache_bytes_per_token(dk, dv, kb, vb, G, R, kivi, ctx);
    }
    return b;
}

int main(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *calib = NULL, *ranks_path = NULL, *report = NULL;
    const char *weights = "f16";
    alrd_compress_opts o;
    alrd_compress_opts_default(&o);
    o.progress = 1;
    int n_samples = 64, calib_len = 512, kb = 16, vb = 16, G = 32, R = 128, kivi = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        else if (!strcmp(a, "--uniform")) { o.uniform = 1; takes = 0; }
        else if (!strcmp(a, "--no-whiten")) { o.whiten = 0; takes = 0; }
        else if (!strcmp(a, "--no-kivi")) { kivi = 0; takes = 0; }
        else if (!strcmp(a, "--hadamard")) { o.hadamard = 1; takes = 0; }
        else if (a[0] == '-' && !v) { fprintf(stderr, "alrd-compress: %s needs a value\n", a); return 2; }
        else if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--calib")) calib = v;
        else if (!strcmp(a, "--ranks")) ranks_path = v;
        else if (!strcmp(a, "--report")) report = v;
        else if (!strcmp(a, "--weights")) weights = v;
        else if (!strcmp(a, "--rank-ratio")) o.rank_ratio = atof(v);
        else if (!strcmp(a, "--group-heads")) o.group_heads = atoi(v);
        else if (!strcmp(a, "--calib-samples")) n_samples = atoi(v);
        else if (!strcmp(a, "--calib-len")) calib_len = atoi(v);
        else if (!strcmp(a, "--probe-tokens")) o.probe_tokens = atoi(v);
        else if (!strcmp(a, "--kv-bits")) kb = vb = atoi(v);
        else if (!strcmp(a, "--k-bits")) kb = atoi(v);
        else if (!strcmp(a, "--v-bits")) vb = atoi(v);
        else if (!strcmp(a, "--group-size")) G = atoi(v);
        else if (!strcmp(a, "--residual")) R = atoi(v);
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
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    alrd_error err;
    alrd_source src;
    alrd_model m;
    if (alrd_source_open(&src, model, &err)) return die(err.msg);
    if (alrd_model_load(&m, &src, &err)) { alrd_source_close(&src); return die(err.msg); }
    const alrd_config *c = &m.cfg;
    int gheads = o.group_heads ? o.group_heads : c->n_kv_heads;
    if (gheads <= 0 || c->n_kv_heads % gheads) return die("--group-heads must divide the number of KV heads");
    int n_groups = c->n_kv_heads / gheads, gh = gheads * c->head_dim;

    /* calibration tokens */
    char *text = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (alrd_read_file(calib, (size_t)1 << 30, &text, &len, &err)) return die(err.msg);
    char calib_sha[65];
    alrd_sha256_hex(text, len, calib_sha);
    if (alrd_tokenizer_encode(m.tok, text, len, 0, 0, &ids, &n_ids, &err)) {
        fprintf(stderr, "alrd-compress: %s: %s\n", calib, err.msg);
        return 1;
    }
    free(text);
    if (n_ids < (size_t)calib_len) calib_len = (int)n_ids;
    if (calib_len < 16) { fprintf(stderr, "alrd-compress: %s: only %zu tokens of calibration text\n", calib, n_ids); return 1; }
    int32_t *samples = pick_samples(ids, n_ids, &n_samples, calib_len);
    free(ids);
    if (!samples) return die("out of memory");

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
    if (alrd_compress_run(&m, samples, n_samples, calib_len, &o, &r, &err)) return die(err.msg);
    free(samples);

    /* tensors: everything of the source but the decomposed k/v weights, plus factors */
    int n_out = 0, cap = src.n_tensors + 4 * c->n_layers;
    alrd_tensor *tens = calloc(cap, sizeof *tens);
    void **bufs = calloc(cap, sizeof(void *));
    if (!tens || !bufs) return die("out of memory");
    for (int i = 0; i < src.n_tensors; i++) {
        const alrd_tensor *t = &src.tensors[i];
        int layer, decomposed = 0;
        char proj;
        if (sscanf(t->name, "model.layers.%d.self_attn.%c_proj.weight", &layer, &proj) == 2 && layer >= 0 &&
            layer < c->n_layers && (proj == 'k' || proj == 'v'))
            decomposed = (proj == 'k' ? r.k_rank : r.v_rank)[layer] > 0;
        if (decomposed) continue;
        size_t n = (size_t)alrd_tensor_numel(t);
        float *f = malloc(sizeof(float) * n);
        alrd_dtype dt = t->n_dims == 1 ? ALRD_F32 : wdt; /* norms and biases stay f32 */
        void *b = malloc(n * (dt == ALRD_F32 ? 4 : 2));
        if (!f || !b) return die("out of memory");
        if (alrd_tensor_to_f32(t, f, &err) || alrd_file_convert_f32(f, n, dt, b, &err)) return die(err.msg);
        free(f);
        tens[n_out] = *t;
        tens[n_out].dtype = dt;
        tens[n_out].data = b;
        tens[n_out].nbytes = n * (dt == ALRD_F32 ? 4 : 2);
        tens[n_out].unpermute_heads = 0;
        bufs[n_out++] = b;
    }
    for (int l = 0; l < c->n_layers; l++)
        for (int v = 0; v < 2; v++)
            for (int ab = 0; ab < 2; ab++) {
                int rk = v ? r.v_rank[l] : r.k_rank[l];
                if (rk == 0) continue;
                const float *f = ab ? (v ? r.vB[l] : r.kB[l]) : (v ? r.vA[l] : r.kA[l]);
                alrd_tensor *t = &tens[n_out];
                snprintf(t->name, sizeof t->name, "model.layers.%d.self_attn.%s_proj.%s", l, v ? "v" : "k", ab ? "B" : "A");
                t->n_dims = 3;
                t->shape[0] = n_groups;
                t->shape[1] = ab ? rk : gh;
                t->shape[2] = ab ? c->hidden : rk;
                size_t n = (size_t)n_groups * t->shape[1] * t->shape[2];
                t->dtype = wdt;
                void *b = malloc(n * (wdt == ALRD_F32 ? 4 : 2));
                if (!b) return die("out of memory");
                if (alrd_file_convert_f32(f, n, wdt, b, &err)) return die(err.msg);
                t->data = b;
                t->nbytes = n * (wdt == ALRD_F32 ? 4 : 2);
                bufs[n_out++] = b;
            }
    alrd_lowrank lr = {.n_layers = c->n_layers, .group_heads = gheads, .k_rank = r.k_rank, .v_rank = r.v_rank,
                       .use_kivi = kivi, .group_size = G, .residual_length = R, .hadamard = o.hadamard, .whitened = o.whiten};
    int *kbits = malloc(sizeof(int) * c->n_layers), *vbits = malloc(sizeof(int) * c->n_layers);
    if (!kbits || !vbits) return die("out of memory");
    for (int l = 0; l < c->n_layers; l++) { kbits[l] = kb; vbits[l] = vb; }
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
    char *meta_s = cJSON_PrintUnformatted(meta);
    cJSON_Delete(meta);
    if (!meta_s) return die("out of memory");

    if (alrd_file_write(out, c, &lr, &m.vocab, tens, n_out, meta_s, &err)) return die(err.msg);
    char ranks_out[1100];
    snprintf(ranks_out, sizeof ranks_out, "%s.ranks.json", out);
    if (alrd_ranks_json_write(ranks_out, c->n_layers, r.k_rank, r.v_rank, &err)) return die(err.msg);

    /* report: table on stderr, JSON on request */
    int ctx_amort = 4096;
    double before = kv_bytes_per_token(&m, NULL, NULL, n_groups, 16, 16, G, R, kivi, ctx_amort);
    for (int l = 0; l < c->n_layers; l++) { /* rank 0 = full width in the cache */
        if (!r.k_rank[l]) r.k_rank[l] = gheads * c->head_dim;
        if (!r.v_rank[l]) r.v_rank[l] = gheads * c->head_dim;
    }
    double after = kv_bytes_per_token(&m, r.k_rank, r.v_rank, n_groups, kb, vb, G, R, kivi, ctx_amort);
    fprintf(stderr, "%-34s %5s %5s %8s %8s %10s %10s\n", "module", "rank", "full", "kept", "relerr", "sens", "pred");
    for (int i = 0; i < r.n_modules; i++) {
        const alrd_module_report *mr = &r.modules[i];
        fprintf(stderr, "%-34s %5d %5d %8.5f %8.5f %10.3g %10.3g\n", mr->name, mr->rank, mr->full, mr->kept_energy,
                mr->rel_error, mr->sensitivity, mr->predicted);
    }
    fprintf(stderr, "calibration loss on %d probe tokens: predicted KL %.5f, measured KL %.5f; CE %.4f -> %.4f\n",
            o.probe_tokens, r.predicted_kl, r.measured_kl, r.base_ce, r.compressed_ce);
    fprintf(stderr, "KV bytes per token (all layers, %d-token context): %.1f -> %.1f (%.2fx)\n", ctx_amort, before,
            after, before / after);
    fprintf(stderr, "time: statistics %.1f s, svd %.1f s, sensitivities %.1f s, total %.1f s\n", r.t_stats, r.t_svd,
            r.t_sens, r.t_total);
    fprintf(stderr, "wrote %s and %s\n", out, ranks_out);
    if (report) {
        cJSON *j = cJSON_CreateObject(), *mods = cJSON_AddArrayToObject(j, "modules");
        for (int i = 0; i < r.n_modules; i++) {
            const alrd_module_report *mr = &r.modules[i];
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", mr->name);
            cJSON_AddNumberToObject(e, "rank", mr->rank);
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
    for (int i = 0; i < n_out; i++) free(bufs[i]);
    free(bufs); free(tens); free(kbits); free(vbits); free(fk); free(fv); free(meta_s);
    alrd_compress_result_free(&r);
    alrd_model_free(&m);
    alrd_source_close(&src);
    return 0;
}
