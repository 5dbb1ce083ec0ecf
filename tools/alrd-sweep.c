/* alrd-sweep: a grid of KV-cache compressions (rank ratio x cache bits x
 * head grouping x Hadamard, joint byte budgets, and the fp16 / plain KIVI
 * baselines) from ONE calibration pass, each evaluated for perplexity, KL
 * and top-1 agreement against the uncompressed model, written as
 * PREFIX.csv, PREFIX.json and PREFIX.svg. Each finished configuration is
 * appended to PREFIX.jsonl and skipped on a rerun with the same settings. */
#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../alrd.h"
/* On purpose, as a compressor over a grid: */
#include "../calib/compress.h"       /* one calibration, every configuration built on its stages */
#include "../calib/qerr.h"           /* each configuration's predicted quantisation loss */
#include "../formats/alrd_pack.h"    /* each configuration's file from one packed base (alrd_file_write) */
#include "../formats/sweep_report.h" /* the CSV and SVG of its result rows */
#include "../runtime/kv_cache.h"     /* bytes per token from the cache's real layout, for ranks and bits no file has yet */

static void usage(void) {
    fprintf(stderr,
            "usage: alrd-sweep MODEL --calib TEXT --eval TEXT [options]\n"
            "  --rank-ratios LIST    kept fractions of K/V dims (default 1,0.75,0.5,0.25; 1 = not decomposed)\n"
            "  --kv-bits LIST        cache bits for K and V (default 16,8,4,3,2)\n"
            "  --k-bits LIST, --v-bits LIST   separate lists (every pair is a configuration)\n"
            "  --group-size G        KIVI group size (default 32);  --residual R  window (default 128)\n"
            "  --no-kivi             quantise keys per token too\n"
            "  --cpu                 calibrate and evaluate on the CPU even when a GPU is present\n"
            "  --hadamard LIST       off, on or off,on (default off)\n"
            "  --group-heads LIST    KV heads per latent, 0 = all of a layer (default 0)\n"
            "  --value-only          decompose V only (keys full width, quantised)\n"
            "  --kv-bits-per-token LIST   joint rank + bits allocations under these budgets (bits per\n"
            "                        token, all layers, K + V, residual amortised over --amortize-ctx)\n"
            "  --ctx N               evaluation chunk length (default 512)\n"
            "  --max-eval-tokens N   evaluate at most N tokens (whole chunks; default all)\n"
            "  --calib-samples N     calibration sequences (default 16);  --calib-len L (default 512)\n"
            "  --probe-tokens N      tokens for sensitivities and quantisation error (default 256)\n"
            "  --amortize-ctx N      context for bytes per token and budgets (default 4096)\n"
            "  --weights f32|f16     dtype of the temporary compressed models (default f32)\n"
            "  -o PREFIX             output prefix (default sweep): PREFIX.csv .json .svg .jsonl\n"
            "Every finished configuration is appended to PREFIX.jsonl; a rerun with the same settings\n"
            "skips it (delete PREFIX.jsonl to start over). Outputs list the current grid's rows.\n");
}

enum { K_FP16, K_KIVI, K_LOWRANK, K_JOINT };
static const char *KIND_NAME[] = {"fp16", "kivi", "lowrank", "joint"};

typedef struct {
    char id[64], label[48];
    int kind;
    double ratio;           /* K_LOWRANK */
    int kb, vb;             /* K_KIVI, K_LOWRANK */
    int gheads;             /* as given: 0 = all KV heads of a layer */
    int hadamard, value_only;
    double budget_bits;     /* K_JOINT */
    int done;
} config;

typedef struct {
    const char *model, *calib, *eval, *prefix, *weights;
    double ratios[16];
    int n_ratios;
    int kbits[8], vbits[8], n_kbits, n_vbits, kv_list;
    int hadamard[2], n_hadamard;
    int gheads[4], n_gheads;
    double budgets[16];
    int n_budgets;
    int value_only, G, R, kivi, ctx, max_eval, calib_samples, calib_len, probe_tokens, amortize;
    int cpu;              /* evaluate on the CPU even when a GPU is present */
} sweep_opts;

/* ---- small helpers ------------------------------------------------------ */

static void on_signal(int sig) {
    const char *tmp = alrd_outfile_active_tmp();
    if (tmp) unlink(tmp);
    signal(sig, SIG_DFL);
    raise(sig);
}

static int die(const char *msg) {
    fprintf(stderr, "alrd-sweep: %s\n", msg);
    return 1;
}

static void status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void status(const char *fmt, ...) {
    if (!isatty(2)) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("\r\033[K", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

static int parse_doubles(const char *flag, const char *v, double *out, int max, int *n) {
    *n = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", v);
    for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *end;
        double x = strtod(t, &end);
        if (*end || !(x > 0) || *n == max) {
            fprintf(stderr, "alrd-sweep: %s: expected up to %d positive numbers, got '%s'\n", flag, max, v);
            return -1;
        }
        out[(*n)++] = x;
    }
    if (!*n) fprintf(stderr, "alrd-sweep: %s: empty list\n", flag);
    return *n ? 0 : -1;
}

static int parse_ints(const char *flag, const char *v, int *out, int max, int *n, int is_bits) {
    double d[16];
    int nd;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", v);
    if (!is_bits) { /* group heads: 0 allowed */
        *n = 0;
        for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            char *end;
            long x = strtol(t, &end, 10);
            if (*end || x < 0 || x > 1024 || *n == max) {
                fprintf(stderr, "alrd-sweep: %s: expected up to %d integers >= 0, got '%s'\n", flag, max, v);
                return -1;
            }
            out[(*n)++] = (int)x;
        }
        return *n ? 0 : -1;
    }
    if (parse_doubles(flag, v, d, max, &nd)) return -1;
    for (int i = 0; i < nd; i++) {
        int b = (int)d[i];
        if (b != d[i] || (b != 2 && b != 3 && b != 4 && b != 8 && b != 16)) {
            fprintf(stderr, "alrd-sweep: %s: bits must be 2, 3, 4, 8 or 16, got '%s'\n", flag, v);
            return -1;
        }
        out[i] = b;
    }
    *n = nd;
    return 0;
}

static int read_text(const char *path, alrd_tokenizer *tok, int add_special, int32_t **ids, size_t *n, char sha[65],
                     alrd_error *err) {
    char *text;
    size_t len;
    if (alrd_read_file(path, (size_t)1 << 31, &text, &len, err)) return -1;
    alrd_sha256_hex(text, len, sha);
    int rc = alrd_tokenizer_encode(tok, text, len, add_special, 0, ids, n, err);
    free(text);
    if (rc) { /* name the file */
        alrd_error e = *err;
        alrd_errf(err, "%s: %s", path, e.msg);
    }
    return rc;
}

/* ---- the grid ----------------------------------------------------------- */

static int add_config(config **cs, int *n, int *cap, const config *c) {
    for (int i = 0; i < *n; i++)
        if (!strcmp((*cs)[i].id, c->id)) return 0; /* the same point twice (e.g. fp16 under each grouping) */
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 32;
        config *x = realloc(*cs, sizeof *x * *cap);
        if (!x) return -1;
        *cs = x;
    }
    (*cs)[(*n)++] = *c;
    return 0;
}

static void bits_label(char *out, size_t n, int kb, int vb) {
    if (kb == vb) snprintf(out, n, "%d", kb);
    else snprintf(out, n, "k%dv%d", kb, vb);
}

static int build_grid(const sweep_opts *o, config **out, int *n_out) {
    config *cs = NULL;
    int n = 0, cap = 0;
    int npairs = o->kv_list ? o->n_kbits : o->n_kbits * o->n_vbits;
    config c;
    memset(&c, 0, sizeof c);
    c.kind = K_FP16;
    c.kb = c.vb = 16;
    c.ratio = 1;
    snprintf(c.id, sizeof c.id, "fp16");
    snprintf(c.label, sizeof c.label, "fp16");
    if (add_config(&cs, &n, &cap, &c)) return -1;
    for (int ri = 0; ri < o->n_ratios; ri++)
        for (int p = 0; p < npairs; p++) {
            int kb = o->kbits[o->kv_list ? p : p / o->n_vbits], vb = o->kv_list ? o->vbits[p] : o->vbits[p % o->n_vbits];
            char bl[16];
            bits_label(bl, sizeof bl, kb, vb);
            double r = o->ratios[ri];
            if (r >= 1) { /* full rank: the baselines, no decomposition */
                memset(&c, 0, sizeof c);
                c.kind = kb == 16 && vb == 16 ? K_FP16 : K_KIVI;
                c.kb = kb; c.vb = vb; c.ratio = 1;
                if (c.kind == K_FP16) continue;
                snprintf(c.id, sizeof c.id, "kivi-k%dv%d", kb, vb);
                snprintf(c.label, sizeof c.label, "KIVI %s", bl);
                if (add_config(&cs, &n, &cap, &c)) return -1;
                continue;
            }
            for (int g = 0; g < o->n_gheads; g++)
                for (int h = 0; h < o->n_hadamard; h++) {
                    memset(&c, 0, sizeof c);
                    c.kind = K_LOWRANK;
                    c.ratio = r; c.kb = kb; c.vb = vb;
                    /* a rotation changes nothing without quantisation: one unrotated point */
                    c.gheads = o->gheads[g]; c.hadamard = kb == 16 && vb == 16 ? 0 : o->hadamard[h];
                    c.value_only = o->value_only;
                    snprintf(c.id, sizeof c.id, "%s%.4g-k%dv%d-g%d-h%d", c.value_only ? "vo" : "lr", r, kb, vb,
                             c.gheads, c.hadamard);
                    snprintf(c.label, sizeof c.label, "%s%.2g/%s%s%s", c.value_only ? "V" : "", r, bl,
                             c.hadamard ? " H" : "", c.gheads ? (c.gheads == 1 ? " g1" : " g") : "");
                    if (add_config(&cs, &n, &cap, &c)) return -1;
                }
        }
    for (int b = 0; b < o->n_budgets; b++)
        for (int g = 0; g < o->n_gheads; g++)
            for (int h = 0; h < o->n_hadamard; h++) {
                memset(&c, 0, sizeof c);
                c.kind = K_JOINT;
                c.budget_bits = o->budgets[b];
                c.gheads = o->gheads[g]; c.hadamard = o->hadamard[h];
                snprintf(c.id, sizeof c.id, "joint%.0f-g%d-h%d", c.budget_bits, c.gheads, c.hadamard);
                snprintf(c.label, sizeof c.label, "J%.3gk%s%s", c.budget_bits / 1000, c.hadamard ? " H" : "",
                         c.gheads ? (c.gheads == 1 ? " g1" : " g") : "");
                if (add_config(&cs, &n, &cap, &c)) return -1;
            }
    *out = cs;
    *n_out = n;
    return 0;
}

/* ---- the library's pipeline stages, built lazily ------------------------- */

typedef struct {
    alrd_model *m;
    const sweep_opts *o;
    int32_t *samples;
    int n_samples, sample_len;
    alrd_compress_opts base;  /* what every configuration shares: whitened, the seed, progress, --cpu */
    alrd_compress_stages *s;  /* the calibration, decompositions and error tables (calib/compress.h) */
} calib_state;

static alrd_compress_stages *need_stages(calib_state *s, alrd_error *err) {
    if (s->s) return s->s;
    status("calibration: %d x %d tokens\n", s->n_samples, s->sample_len);
    /* one sensitivity probe for every ratio (half rank), error tables on the 8-grid */
    const alrd_compress_stages_opts so = {.probe_ratio = 1, .qerr_step = 8, .group_size = s->o->G,
                                          .use_kivi = s->o->kivi, .several = 1};
    return alrd_compress_stages_new(&s->s, s->m, s->samples, s->n_samples, s->sample_len, &s->base, &so, err)
               ? NULL
               : s->s;
}

/* Seconds in the shared stages so far. */
static void stage_seconds(const calib_state *s, double *calib, double *svd, double *sens, double *qerr) {
    *calib = *svd = *sens = *qerr = 0;
    if (s->s) alrd_compress_stages_seconds(s->s, calib, svd, sens, qerr);
}

static double stage_total(const calib_state *s) {
    double a, b, c, d;
    stage_seconds(s, &a, &b, &c, &d);
    return a + b + c + d;
}

/* ---- one configuration -------------------------------------------------- */

typedef struct {
    int n_layers, n_groups, full;   /* full = group_heads * head_dim of the decomposition */
    int *k_rank, *v_rank, *k_bits, *v_bits;
    double pred_trunc, pred_quant;
    double bytes_ctx, bytes_amort, fp16_bytes;
    alrd_ppl_result pr;
    int decode, self_ref;
    double t_build, t_eval;
    char error[ALRD_ERR_MSG];
} result;

/* Fractions of the cache the scored positions see quantised (docs/design.md 6:
 * second half of each chunk, n = ctx/2 + 1 .. ctx - 1 cached tokens). */
static double eval_frac(const sweep_opts *o, int is_v) {
    return alrd_qerr_quantized_fraction(is_v, o->R, o->kivi, o->ctx / 2 + 1, o->ctx - 1);
}

static void layout_bytes(const sweep_opts *o, const alrd_model *m, result *r) {
    int kvd = m->cfg.n_kv_heads * m->cfg.head_dim;
    r->bytes_ctx = r->bytes_amort = 0;
    r->fp16_bytes = 4.0 * kvd * m->cfg.n_layers;
    for (int l = 0; l < r->n_layers; l++) {
        int dk = r->k_rank[l] ? r->n_groups * r->k_rank[l] : kvd, dv = r->v_rank[l] ? r->n_groups * r->v_rank[l] : kvd;
        r->bytes_ctx += alrd_kv_cache_bytes_per_token(dk, dv, r->k_bits[l], r->v_bits[l], o->G, o->R, o->kivi, o->ctx);
        r->bytes_amort +=
            alrd_kv_cache_bytes_per_token(dk, dv, r->k_bits[l], r->v_bits[l], o->G, o->R, o->kivi, o->amortize);
    }
}

/* Ranks and bits of a configuration (the library's alrd_compress_config:
 * factors in *cr for the decomposed kinds), and its prediction. */
static int plan(calib_state *s, const config *c, result *r, alrd_compress_result *cr, alrd_error *err) {
    const sweep_opts *o = s->o;
    const alrd_config *cf = &s->m->cfg;
    const int L = cf->n_layers;
    memset(cr, 0, sizeof *cr);
    for (int l = 0; l < L; l++) {
        r->k_rank[l] = r->v_rank[l] = 0;
        r->k_bits[l] = c->kb ? c->kb : 16;
        r->v_bits[l] = c->vb ? c->vb : 16;
    }
    r->n_groups = 1;
    r->full = cf->n_kv_heads * cf->head_dim;
    r->pred_trunc = r->pred_quant = 0;
    if (c->kind == K_FP16) return 0;
    alrd_compress_stages *st = need_stages(s, err);
    if (!st) return -1;
    const int gheads = c->kind == K_KIVI ? o->gheads[0] : c->gheads;
    if (c->kind != K_KIVI) {
        alrd_compress_opts co = s->base;
        alrd_compress_joint jt = {.budget_bits = c->budget_bits, .ctx = o->amortize, .group_size = o->G,
                                  .residual = o->R, .use_kivi = o->kivi, .step = o->G > 8 ? o->G : 8,
                                  .k_bits = r->k_bits, .v_bits = r->v_bits};
        co.group_heads = gheads;
        co.rank_ratio = c->ratio;
        co.value_only = c->value_only;
        co.hadamard = c->hadamard;
        co.joint = c->kind == K_JOINT ? &jt : NULL;
        if (alrd_compress_config(st, &co, cr, err)) return -1;
        memcpy(r->k_rank, cr->k_rank, sizeof(int) * L);
        memcpy(r->v_rank, cr->v_rank, sizeof(int) * L);
        r->n_groups = cr->n_groups;
        r->full = cr->group_heads * cr->head_dim;
    }
    const alrd_decomp *d = alrd_compress_stages_decomp(st, gheads, err);
    const alrd_qerr *q = d ? alrd_compress_stages_qerr(st, gheads, c->hadamard, err) : NULL;
    /* prediction at the evaluation's residual fractions */
    return q ? alrd_qerr_predict(q, d, r->k_rank, r->v_rank, r->k_bits, r->v_bits, eval_frac(o, 0), eval_frac(o, 1),
                                 &r->pred_trunc, &r->pred_quant, err)
             : -1;
}

typedef struct {
    alrd_model *m;               /* the uncompressed model */
    const alrd_source *src;
    alrd_packed base;            /* src in the sweep's weights dtype, packed once */
    int have_base;
    alrd_ctx *ref;
    const int32_t *eval_ids;
    size_t n_eval;
    int max_chunks;
    char tmp_model[1100];
    alrd_dtype wdt;
} eval_state;

static int build_and_eval(calib_state *s, eval_state *e, const config *c, result *r, alrd_error *err) {
    const sweep_opts *o = s->o;
    const alrd_config *cf = &e->m->cfg;
    const int L = cf->n_layers;
    alrd_compress_result cr;
    double t0 = alrd_now(), stages0 = stage_total(s);
    int prc = plan(s, c, r, &cr, err);
    t0 += stage_total(s) - stages0; /* shared stages are not this configuration's */
    if (prc) {
        alrd_compress_result_free(&cr);
        return -1;
    }
    layout_bytes(o, e->m, r);
    alrd_model mc, *em = e->m;
    int own = 0, rc = -1;
    alrd_cache_opts co;
    alrd_cache_opts_default(e->m, &co);
    co.k_bits = c->kind == K_KIVI ? c->kb : 16;
    co.v_bits = c->kind == K_KIVI ? c->vb : 16;
    co.group_size = o->G;
    co.residual = o->R;
    co.use_kivi = o->kivi;
    co.backend = o->cpu ? ALRD_BACKEND_CPU : ALRD_BACKEND_AUTO;
    if (c->kind == K_LOWRANK || c->kind == K_JOINT) {
        int brc = 0;
        if (!e->have_base) {
            status("packing the model weights\n");
            brc = alrd_pack_source(&e->base, e->src, e->wdt, err);
            e->have_base = !brc;
        }
        alrd_packed pk;
        memset(&pk, 0, sizeof pk);
        alrd_lowrank lr = {.n_layers = L, .group_heads = cr.group_heads, .k_rank = r->k_rank, .v_rank = r->v_rank,
                           .k_bits = r->k_bits, .v_bits = r->v_bits, .use_kivi = o->kivi, .group_size = o->G,
                           .residual_length = o->R, .hadamard = c->hadamard, .whitened = 1};
        const alrd_factors f = alrd_compress_factors(&cr);
        if (!brc) brc = alrd_pack_factors(&pk, &e->base, &f, e->wdt, err);
        alrd_compress_result_free(&cr);
        if (!brc) brc = alrd_file_write(e->tmp_model, cf, &lr, &e->m->vocab, pk.tensors, pk.n, NULL, err);
        alrd_packed_free(&pk);
        if (!brc) brc = alrd_model_open(&mc, e->tmp_model, err);
        unlink(e->tmp_model);
        if (brc) return -1;
        em = &mc;
        own = 1;
        alrd_cache_opts_default(&mc, &co); /* the file's per-layer bits, G, R */
        co.backend = o->cpu ? ALRD_BACKEND_CPU : ALRD_BACKEND_AUTO;
    }
    alrd_compress_result_free(&cr);
    r->t_build = alrd_now() - t0;
    double t1 = alrd_now();
    alrd_ctx *x = NULL;
    if (!alrd_ctx_new(&x, em, o->ctx, o->ctx, &co, err)) {
        r->decode = alrd_ctx_is_quantized(x);
        r->self_ref = c->kind == K_FP16; /* the reference itself: KL 0, agreement 1 by construction */
        alrd_ppl_opts po = {.ctx = o->ctx, .max_chunks = e->max_chunks, .progress = isatty(2)};
        rc = alrd_perplexity_tokens(x, r->self_ref ? NULL : e->ref, e->eval_ids, e->n_eval,
                                    alrd_tokenizer_add_bos(e->m->tok), alrd_tokenizer_bos(e->m->tok), &po, &r->pr, err);
        if (!rc && r->self_ref) r->pr.top1 = 1;
    }
    alrd_ctx_free(x);
    if (own) alrd_model_free(&mc);
    r->t_eval = alrd_now() - t1;
    return rc;
}

/* ---- rows --------------------------------------------------------------- */

static cJSON *int_array(const int *x, int n) { return cJSON_CreateIntArray(x, n); }

static cJSON *make_row(const char *settings_sha, const config *c, const result *r, const sweep_opts *o) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "settings_sha256", settings_sha);
    cJSON_AddStringToObject(j, "id", c->id);
    cJSON_AddStringToObject(j, "label", c->label);
    cJSON_AddStringToObject(j, "kind", KIND_NAME[c->kind]);
    if (r->error[0]) {
        cJSON_AddStringToObject(j, "error", r->error);
        return j;
    }
    cJSON_AddNumberToObject(j, "rank_ratio", c->kind == K_LOWRANK ? c->ratio : 1);
    cJSON_AddNumberToObject(j, "group_heads", c->gheads);
    cJSON_AddBoolToObject(j, "hadamard", c->hadamard);
    cJSON_AddBoolToObject(j, "value_only", c->value_only);
    cJSON_AddNumberToObject(j, "k_bits_config", c->kb);
    cJSON_AddNumberToObject(j, "v_bits_config", c->vb);
    if (c->kind == K_JOINT) cJSON_AddNumberToObject(j, "budget_bits_per_token", c->budget_bits);
    cJSON_AddNumberToObject(j, "n_groups", r->n_groups);
    cJSON_AddNumberToObject(j, "full_rank", r->full);
    cJSON_AddItemToObject(j, "k_rank", int_array(r->k_rank, r->n_layers));
    cJSON_AddItemToObject(j, "v_rank", int_array(r->v_rank, r->n_layers));
    cJSON_AddItemToObject(j, "k_bits", int_array(r->k_bits, r->n_layers));
    cJSON_AddItemToObject(j, "v_bits", int_array(r->v_bits, r->n_layers));
    double kept = 0;
    for (int l = 0; l < r->n_layers; l++)
        kept += (r->k_rank[l] ? r->k_rank[l] : r->full) + (r->v_rank[l] ? r->v_rank[l] : r->full);
    cJSON_AddNumberToObject(j, "kept_fraction", kept / (2.0 * r->n_layers * r->full));
    cJSON_AddNumberToObject(j, "predicted_kl", r->pred_trunc + r->pred_quant);
    cJSON_AddNumberToObject(j, "predicted_kl_truncation", r->pred_trunc);
    cJSON_AddNumberToObject(j, "predicted_kl_quantisation", r->pred_quant);
    cJSON_AddNumberToObject(j, "kv_bytes_per_token_ctx", r->bytes_ctx);
    cJSON_AddNumberToObject(j, "kv_bytes_per_token", r->bytes_amort);
    cJSON_AddNumberToObject(j, "kv_bits_per_token", 8 * r->bytes_amort);
    cJSON_AddNumberToObject(j, "fp16_bytes_per_token", r->fp16_bytes);
    cJSON_AddNumberToObject(j, "compression_ratio", r->fp16_bytes / r->bytes_amort);
    cJSON_AddNumberToObject(j, "ppl", r->pr.ppl);
    cJSON_AddNumberToObject(j, "ppl_stderr", r->pr.ppl_stderr);
    cJSON_AddNumberToObject(j, "nll", r->pr.nll);
    cJSON_AddNumberToObject(j, "kl", r->pr.kl);
    cJSON_AddNumberToObject(j, "kl_stderr", r->pr.kl_stderr);
    cJSON_AddNumberToObject(j, "top1", r->pr.top1);
    cJSON_AddNumberToObject(j, "n_scored", (double)r->pr.n_scored);
    cJSON_AddNumberToObject(j, "n_chunks", r->pr.n_chunks);
    cJSON_AddBoolToObject(j, "decode_path", r->decode);
    cJSON_AddStringToObject(j, "reference", r->self_ref ? "self" : "uncompressed model, 16-bit cache");
    cJSON_AddNumberToObject(j, "seconds_build", r->t_build);
    cJSON_AddNumberToObject(j, "seconds_eval", r->t_eval);
    (void)o;
    return j;
}

/* ---- outputs ------------------------------------------------------------ */

static int write_file(const char *path, const char *s, alrd_error *err) {
    alrd_outfile of;
    if (alrd_outfile_open(&of, path, err)) return -1;
    if (alrd_outfile_write(&of, s, strlen(s), err)) { alrd_outfile_abort(&of); return -1; }
    return alrd_outfile_commit(&of, err);
}

/* Rows of the current settings from PREFIX.jsonl, in grid order. */
static cJSON *collect_rows(cJSON *all, const config *cs, int n) {
    cJSON *rows = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        const cJSON *row, *found = NULL;
        cJSON_ArrayForEach(row, all) if (!strcmp(alrd_row_str(row, "id"), cs[i].id)) found = row; /* last wins */
        if (found) cJSON_AddItemToArray(rows, cJSON_Duplicate(found, 1));
    }
    return rows;
}

static int write_outputs(const sweep_opts *o, cJSON *settings, const char *sha, cJSON *all, const config *cs, int n,
                         cJSON *run, const char *model_name, alrd_error *err) {
    char path[1100];
    cJSON *rows = collect_rows(all, cs, n);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddItemToObject(doc, "settings", cJSON_Duplicate(settings, 1));
    cJSON_AddStringToObject(doc, "settings_sha256", sha);
    cJSON_AddItemToObject(doc, "run", cJSON_Duplicate(run, 1));
    cJSON_AddItemToObject(doc, "results", rows);
    char *js = cJSON_Print(doc), *csv = alrd_sweep_csv(rows);
    char title[256], sub[512];
    snprintf(title, sizeof title, "alrd-sweep: %s, perplexity vs KV cache size", model_name);
    const cJSON *fr = rows->child;
    snprintf(sub, sizeof sub, "eval %s: %d chunk(s) x %d tokens (%g scored); KIVI G=%d R=%d; bytes amortised at %d tokens",
             o->eval, fr ? (int)alrd_row_num(fr, "n_chunks") : 0, o->ctx, fr ? alrd_row_num(fr, "n_scored") : 0, o->G, o->R, o->amortize);
    char *svg = alrd_sweep_svg(rows, title, sub);
    int rc = 0;
    if (!js || !csv || !svg) rc = alrd_errf(err, "sweep: out of memory formatting the outputs");
    if (!rc) { snprintf(path, sizeof path, "%s.json", o->prefix); rc = write_file(path, js, err); }
    if (!rc) { snprintf(path, sizeof path, "%s.csv", o->prefix); rc = write_file(path, csv, err); }
    if (!rc) { snprintf(path, sizeof path, "%s.svg", o->prefix); rc = write_file(path, svg, err); }
    free(js); free(csv); free(svg);
    cJSON_Delete(doc);
    return rc;
}

/* Appends one line to PREFIX.jsonl and syncs it (a crash loses at most the
 * configuration in progress). */
static int append_jsonl(const char *path, cJSON *row, alrd_error *err) {
    char *s = cJSON_PrintUnformatted(row);
    if (!s) return alrd_errf(err, "%s: out of memory", path);
    FILE *f = fopen(path, "a");
    int rc = !f || fprintf(f, "%s\n", s) < 0 || fflush(f) || fsync(fileno(f)) ? -1 : 0;
    if (f && fclose(f)) rc = -1;
    free(s);
    return rc ? alrd_errf(err, "%s: cannot append", path) : 0;
}

/* Every row of PREFIX.jsonl with these settings (a torn last line is ignored). */
static cJSON *read_jsonl(const char *path, const char *sha) {
    cJSON *all = cJSON_CreateArray();
    FILE *f = fopen(path, "r");
    if (!f) return all;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        cJSON *row = cJSON_Parse(line);
        if (row && !strcmp(alrd_row_str(row, "settings_sha256"), sha) && alrd_row_str(row, "id")[0]) cJSON_AddItemToArray(all, row);
        else cJSON_Delete(row);
    }
    free(line);
    fclose(f);
    return all;
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv) {
    sweep_opts o = {.prefix = "sweep", .weights = "f32", .ratios = {1, 0.75, 0.5, 0.25}, .n_ratios = 4,
                    .kbits = {16, 8, 4, 3, 2}, .vbits = {16, 8, 4, 3, 2}, .n_kbits = 5, .n_vbits = 5, .kv_list = 1,
                    .hadamard = {0}, .n_hadamard = 1, .gheads = {0}, .n_gheads = 1, .G = 32, .R = 128, .kivi = 1,
                    .ctx = 512, .calib_samples = 16, .calib_len = 512, .probe_tokens = 256, .amortize = 4096};
    int kset = 0, vset = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1, bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        else if (!strcmp(a, "--value-only")) { o.value_only = 1; takes = 0; }
        else if (!strcmp(a, "--no-kivi")) { o.kivi = 0; takes = 0; }
        else if (!strcmp(a, "--cpu")) { o.cpu = 1; takes = 0; }
        else if (a[0] == '-' && !v) { fprintf(stderr, "alrd-sweep: %s needs a value\n", a); return 2; }
        else if (!strcmp(a, "-o")) o.prefix = v;
        else if (!strcmp(a, "--calib")) o.calib = v;
        else if (!strcmp(a, "--eval")) o.eval = v;
        else if (!strcmp(a, "--weights")) o.weights = v;
        else if (!strcmp(a, "--rank-ratios")) bad = parse_doubles(a, v, o.ratios, 16, &o.n_ratios);
        else if (!strcmp(a, "--kv-bits")) {
            bad = parse_ints(a, v, o.kbits, 8, &o.n_kbits, 1);
            memcpy(o.vbits, o.kbits, sizeof o.kbits);
            o.n_vbits = o.n_kbits;
            o.kv_list = 1;
        }
        else if (!strcmp(a, "--k-bits")) { bad = parse_ints(a, v, o.kbits, 8, &o.n_kbits, 1); kset = 1; }
        else if (!strcmp(a, "--v-bits")) { bad = parse_ints(a, v, o.vbits, 8, &o.n_vbits, 1); vset = 1; }
        else if (!strcmp(a, "--group-heads")) bad = parse_ints(a, v, o.gheads, 4, &o.n_gheads, 0);
        else if (!strcmp(a, "--kv-bits-per-token")) bad = parse_doubles(a, v, o.budgets, 16, &o.n_budgets);
        else if (!strcmp(a, "--hadamard")) {
            o.n_hadamard = 0;
            char buf[64];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *save, *t = strtok_r(buf, ",", &save); t && !bad; t = strtok_r(NULL, ",", &save)) {
                int h = !strcmp(t, "on") || !strcmp(t, "1") ? 1 : !strcmp(t, "off") || !strcmp(t, "0") ? 0 : -1;
                if (h < 0 || o.n_hadamard == 2) { fprintf(stderr, "alrd-sweep: --hadamard: expected off, on or off,on\n"); bad = 1; }
                else o.hadamard[o.n_hadamard++] = h;
            }
            if (!o.n_hadamard) bad = 1;
        }
        else if (!strcmp(a, "--group-size")) o.G = atoi(v);
        else if (!strcmp(a, "--residual")) o.R = atoi(v);
        else if (!strcmp(a, "--ctx")) o.ctx = atoi(v);
        else if (!strcmp(a, "--max-eval-tokens")) o.max_eval = atoi(v);
        else if (!strcmp(a, "--calib-samples")) o.calib_samples = atoi(v);
        else if (!strcmp(a, "--calib-len")) o.calib_len = atoi(v);
        else if (!strcmp(a, "--probe-tokens")) o.probe_tokens = atoi(v);
        else if (!strcmp(a, "--amortize-ctx")) o.amortize = atoi(v);
        else if (a[0] == '-') { fprintf(stderr, "alrd-sweep: unknown option %s (see --help)\n", a); return 2; }
        else if (!o.model) { o.model = a; takes = 0; }
        else { fprintf(stderr, "alrd-sweep: unexpected argument %s\n", a); return 2; }
        if (bad) return 2;
        i += takes;
    }
    if (!o.model || !o.calib || !o.eval) { usage(); return 2; }
    if (kset || vset) { /* --k-bits / --v-bits: every pair */
        if (!kset) { o.kbits[0] = 16; o.n_kbits = 1; }
        if (!vset) { o.vbits[0] = 16; o.n_vbits = 1; }
        o.kv_list = 0;
    }
    if (o.G < 1 || o.R < 0 || o.R % o.G || (o.kivi && o.R < o.G))
        return die("--group-size/--residual: expected G >= 1 and R a multiple of G (R >= G with KIVI)");
    if (o.ctx < 16 || o.ctx > (1 << 20)) return die("--ctx: expected 16..1048576");
    if (o.max_eval < 0) return die("--max-eval-tokens: expected a positive number");
    if (o.calib_samples < 1 || o.calib_len < 16 || o.calib_len > 65536) return die("--calib-samples/--calib-len out of range");
    if (o.probe_tokens < 16) return die("--probe-tokens: expected at least 16");
    if (o.amortize < 1) return die("--amortize-ctx: expected a positive number");
    for (int i = 0; i < o.n_ratios; i++)
        if (o.ratios[i] > 1) return die("--rank-ratios: expected numbers in (0, 1]");
    alrd_dtype wdt = !strcmp(o.weights, "f16") ? ALRD_F16 : !strcmp(o.weights, "f32") ? ALRD_F32 : ALRD_DTYPE_COUNT;
    if (wdt == ALRD_DTYPE_COUNT) return die("--weights: expected f32 or f16");
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    double t_start = alrd_now();

    alrd_error err;
    alrd_source src;
    alrd_model m;
    if (alrd_source_open(&src, o.model, &err)) return die(err.msg);
    if (alrd_model_load(&m, &src, &err)) return die(err.msg);
    if (m.has_lowrank) return die("MODEL must be uncompressed (a GGUF or HF checkpoint, not a .alrd file)");
    for (int g = 0; g < o.n_gheads; g++)
        if (o.gheads[g] && m.cfg.n_kv_heads % o.gheads[g]) return die("--group-heads must divide the number of KV heads");
    int32_t *cids = NULL, *eids = NULL;
    size_t n_cids = 0, n_eids = 0;
    char csha[65], esha[65];
    if (read_text(o.calib, m.tok, 0, &cids, &n_cids, csha, &err) || read_text(o.eval, m.tok, 1, &eids, &n_eids, esha, &err))
        return die(err.msg);
    if (n_eids < (size_t)o.ctx) return die("--eval: fewer tokens than one chunk of --ctx");
    int max_chunks = o.max_eval ? o.max_eval / o.ctx : 0;
    if (o.max_eval && max_chunks < 1) return die("--max-eval-tokens: less than one chunk of --ctx");
    int n_chunks = (int)(n_eids / o.ctx);
    if (max_chunks && max_chunks < n_chunks) n_chunks = max_chunks;

    /* settings: everything a result depends on besides its configuration */
    const char *mbase = strrchr(o.model, '/');
    mbase = mbase && mbase[1] ? mbase + 1 : o.model;
    struct stat st;
    cJSON *settings = cJSON_CreateObject();
    cJSON_AddStringToObject(settings, "tool", "alrd-sweep 1");
    cJSON_AddStringToObject(settings, "model", mbase);
    cJSON_AddNumberToObject(settings, "model_bytes", stat(o.model, &st) == 0 ? (double)st.st_size : 0);
    cJSON_AddStringToObject(settings, "calib_sha256", csha);
    cJSON_AddNumberToObject(settings, "calib_samples", o.calib_samples);
    cJSON_AddNumberToObject(settings, "calib_len", o.calib_len);
    cJSON_AddNumberToObject(settings, "probe_tokens", o.probe_tokens);
    cJSON_AddStringToObject(settings, "eval_sha256", esha);
    cJSON_AddNumberToObject(settings, "ctx", o.ctx);
    cJSON_AddNumberToObject(settings, "eval_chunks", n_chunks);
    cJSON_AddNumberToObject(settings, "group_size", o.G);
    cJSON_AddNumberToObject(settings, "residual", o.R);
    cJSON_AddBoolToObject(settings, "kivi", o.kivi);
    cJSON_AddNumberToObject(settings, "amortize_ctx", o.amortize);
    cJSON_AddStringToObject(settings, "weights", o.weights);
    cJSON_AddBoolToObject(settings, "whitened", 1);
    cJSON_AddNumberToObject(settings, "seed", 0x5eed);
    char *ss = cJSON_PrintUnformatted(settings), sha[65];
    if (!ss) return die("out of memory");
    alrd_sha256_hex(ss, strlen(ss), sha);
    free(ss);

    config *cs;
    int n_cfg;
    if (build_grid(&o, &cs, &n_cfg)) return die("out of memory");
    char jsonl[1100];
    snprintf(jsonl, sizeof jsonl, "%s.jsonl", o.prefix);
    cJSON *all = read_jsonl(jsonl, sha);
    int todo = 0;
    for (int i = 0; i < n_cfg; i++) {
        const cJSON *row;
        cJSON_ArrayForEach(row, all) if (!strcmp(alrd_row_str(row, "id"), cs[i].id)) cs[i].done = 1;
        todo += !cs[i].done;
    }

    calib_state cal;
    memset(&cal, 0, sizeof cal);
    cal.m = &m;
    cal.o = &o;
    cal.n_samples = o.calib_samples;
    cal.sample_len = n_cids < (size_t)o.calib_len ? (int)n_cids : o.calib_len;
    alrd_compress_opts_default(&cal.base); /* whitened, seed 0x5eed (the settings' "seed") */
    cal.base.probe_tokens = o.probe_tokens;
    cal.base.progress = isatty(2);
    cal.base.cpu_only = o.cpu;
    eval_state ev;
    memset(&ev, 0, sizeof ev);
    ev.m = &m;
    ev.src = &src;
    ev.eval_ids = eids;
    ev.n_eval = n_eids;
    ev.max_chunks = max_chunks;
    ev.wdt = wdt;
    snprintf(ev.tmp_model, sizeof ev.tmp_model, "%s.model-tmp.alrd", o.prefix);
    int evaluated = 0, failed = 0;
    if (todo) {
        if (cal.sample_len < 16) return die("--calib: fewer than 16 tokens");
        cal.samples = alrd_calib_pick_samples(cids, n_cids, &cal.n_samples, cal.sample_len);
        alrd_cache_opts plain;
        alrd_cache_opts_default(&m, &plain);
        plain.k_bits = plain.v_bits = 16;
        plain.backend = o.cpu ? ALRD_BACKEND_CPU : ALRD_BACKEND_AUTO;
        if (!cal.samples) return die("out of memory");
        if (alrd_ctx_new(&ev.ref, &m, o.ctx, o.ctx, &plain, &err)) return die(err.msg);
    }
    cJSON *run = cJSON_CreateObject();
    int L = m.cfg.n_layers;
    result r;
    memset(&r, 0, sizeof r);
    r.n_layers = L;
    r.k_rank = calloc(L, sizeof(int)); r.v_rank = calloc(L, sizeof(int));
    r.k_bits = calloc(L, sizeof(int)); r.v_bits = calloc(L, sizeof(int));
    if (!r.k_rank || !r.v_rank || !r.k_bits || !r.v_bits) return die("out of memory");
    int k = 0;
    for (int i = 0; i < n_cfg; i++) {
        if (cs[i].done) continue;
        k++;
        status("[%d/%d] %s\n", k, todo, cs[i].id);
        r.error[0] = 0;
        memset(&r.pr, 0, sizeof r.pr);
        if (build_and_eval(&cal, &ev, &cs[i], &r, &err)) {
            /* a configuration that cannot be built (e.g. a budget below the
             * minimum) is recorded and the sweep goes on; calibration
             * failures end it */
            if (!cal.s && cs[i].kind != K_FP16) return die(err.msg);
            snprintf(r.error, sizeof r.error, "%s", err.msg);
            failed++;
            if (isatty(2)) fprintf(stderr, "\nalrd-sweep: %s: %s\n", cs[i].id, err.msg);
        }
        cJSON *row = make_row(sha, &cs[i], &r, &o);
        if (append_jsonl(jsonl, row, &err)) return die(err.msg);
        cJSON_AddItemToArray(all, row);
        evaluated++;
        cJSON_DeleteItemFromObject(run, "evaluated");
        cJSON_AddNumberToObject(run, "evaluated", evaluated);
        if (write_outputs(&o, settings, sha, all, cs, n_cfg, run, mbase, &err)) return die(err.msg);
    }
    cJSON_Delete(run);
    run = cJSON_CreateObject();
    cJSON_AddNumberToObject(run, "configurations", n_cfg);
    cJSON_AddNumberToObject(run, "evaluated", evaluated);
    cJSON_AddNumberToObject(run, "skipped", n_cfg - todo);
    cJSON_AddNumberToObject(run, "failed", failed);
    cJSON_AddNumberToObject(run, "seconds_total", alrd_now() - t_start);
    double t_calib, t_svd, t_sens, t_qerr;
    stage_seconds(&cal, &t_calib, &t_svd, &t_sens, &t_qerr);
    cJSON_AddNumberToObject(run, "seconds_calibration", t_calib);
    cJSON_AddNumberToObject(run, "seconds_svd", t_svd);
    cJSON_AddNumberToObject(run, "seconds_sensitivities", t_sens);
    cJSON_AddNumberToObject(run, "seconds_qerr", t_qerr);
    if (write_outputs(&o, settings, sha, all, cs, n_cfg, run, mbase, &err)) return die(err.msg);
    status("done: %d evaluated, %d skipped, %.0f s\n", evaluated, n_cfg - todo, alrd_now() - t_start);
    cJSON_Delete(run);
    cJSON_Delete(all);
    cJSON_Delete(settings);
    alrd_compress_stages_free(cal.s);
    if (ev.have_base) alrd_packed_free(&ev.base);
    alrd_ctx_free(ev.ref);
    free(cal.samples); free(cids); free(eids); free(cs);
    free(r.k_rank); free(r.v_rank); free(r.k_bits); free(r.v_bits);
    alrd_model_free(&m);
    alrd_source_close(&src);
    return 0;
}
