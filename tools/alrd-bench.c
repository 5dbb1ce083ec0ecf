/* alrd-bench: llama-bench style speed of prompt processing (pp) and token
 * generation (tg) at cache depths d and batches of b independent sequences,
 * on the GPU (CUDA build with a device), with the KV bytes, the GPU memory
 * and the fraction of the HBM roofline (bytes one decode step must read /
 * step time / peak bandwidth). JSON with -o.
 *
 *   alrd-bench MODEL|--synthetic llama2-7b|llama3-8b|smollm2-135m [-d 0,4096] [-b 1,16]
 *              [-p 512] [-n 128] [-v SPEC]... [-r REPS] [-o out.json] [--max-fit MAXCTX]
 *
 * --max-fit: instead of speed, the largest context (a multiple of 1024, at
 * most MAXCTX and the engine's 4M) that each batch size fits in GPU memory
 * with a -p token prefill batch, found by creating engines (weights,
 * caches, work space) and running a decode step.
 *
 * --kv-budget SIZE (e.g. 64GiB, 512MiB, bytes): throughput at a fixed
 * memory budget, the number a serving user compares. For each variant and
 * depth d the batch is as many sequences as fit in SIZE bytes of KV cache
 * at context d + n (one sequence's exact bytes, from an engine), instead of
 * -b; tg then reports tokens/s of that batch.
 *
 * A variant SPEC is a comma list: r=RATIO (synthetic: latent rank as a
 * fraction of the group's width; 1 = full projections), gh=N (synthetic: KV
 * heads per latent group), k=BITS, v=BITS, G=GROUP, R=RESIDUAL, kivi=0|1,
 * attn=fused|ref, graph=0|1, name=LABEL. The default is one variant with the
 * model's own cache settings. The cache at depth d is filled with random
 * content (valid codes and scales): speed does not depend on its values.
 * pp at depth d: p tokens of each sequence after d cached ones; tg: n decode
 * steps of all b sequences from depth d (one CUDA graph replay per step).
 * Without a GPU (or with --cpu) a CPU fallback measures pp at depth 0 and
 * tg after a real prefill of d tokens, through the context API. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../alrd.h"
#if ALRD_CUDA
/* on purpose: it drives the GPU engine itself (b sequences per step, caches filled to depth d, synthetic weights) */
#include "../runtime/gpu.h"
#endif

#define MAXL 16
#define MAXV 8

typedef struct {
    char name[64];
    double r;        /* rank ratio (synthetic), 1 = full */
    int gh;          /* group heads (synthetic), 0 = default 1 */
    int k, v, G, R, kivi;
    int attn, graph;
} variant;

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    while (s && *s && n < max) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x < 0 || x > (1 << 24)) return -1;
        out[n++] = (int)x;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

static int parse_variant(const char *s, variant *v) {
    memset(v, 0, sizeof *v);
    v->r = 1.0;
    v->k = v->v = v->G = v->R = v->kivi = -1;
    v->graph = 1;
    snprintf(v->name, sizeof v->name, "%s", s);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        char *eq = strchr(tok, '=');
        if (!eq) return -1;
        *eq = 0;
        const char *val = eq + 1;
        if (!strcmp(tok, "r")) v->r = atof(val);
        else if (!strcmp(tok, "gh")) v->gh = atoi(val);
        else if (!strcmp(tok, "k")) v->k = atoi(val);
        else if (!strcmp(tok, "v")) v->v = atoi(val);
        else if (!strcmp(tok, "G")) v->G = atoi(val);
        else if (!strcmp(tok, "R")) v->R = atoi(val);
        else if (!strcmp(tok, "kivi")) v->kivi = atoi(val);
        else if (!strcmp(tok, "attn")) v->attn = !strcmp(val, "ref");
        else if (!strcmp(tok, "graph")) v->graph = atoi(val);
        else if (!strcmp(tok, "name")) snprintf(v->name, sizeof v->name, "%s", val);
        else return -1;
    }
    if (!(v->r > 0 && v->r <= 1)) return -1;
    return 0;
}

static int synthetic_config(const char *name, alrd_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->arch, sizeof c->arch, "llama");
    c->n_layers = 32;
    c->hidden = 4096;
    c->n_heads = 32;
    c->head_dim = 128;
    c->rms_eps = 1e-5f;
    c->max_ctx = 1 << 20;
    if (!strcmp(name, "llama2-7b")) {
        c->n_kv_heads = 32;
        c->ffn = 11008;
        c->vocab_size = 32000;
        c->rope_theta = 10000.0f;
    } else if (!strcmp(name, "smollm2-135m")) { /* SmolLM2-135M's shape */
        c->n_layers = 30;
        c->hidden = 576;
        c->n_heads = 9;
        c->n_kv_heads = 3;
        c->head_dim = 64;
        c->ffn = 1536;
        c->vocab_size = 49152;
        c->rope_theta = 100000.0f;
        c->tie_embeddings = 1;
    } else if (!strcmp(name, "llama3-8b")) {
        c->n_kv_heads = 8;
        c->ffn = 14336;
        c->vocab_size = 128256;
        c->rope_theta = 500000.0f;
    } else {
        return -1;
    }
    return 0;
}

#if ALRD_CUDA
static double median(double *x, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && x[j] < x[j - 1]; j--) {
            double t = x[j];
            x[j] = x[j - 1];
            x[j - 1] = t;
        }
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}
#endif

static uint64_t lcg = 12345;
static int32_t rtok(int nv) {
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (int32_t)((lcg >> 33) % (uint64_t)nv);
}

static cJSON *result(const variant *v, int d, int b, const char *test) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "variant", v->name);
    cJSON_AddStringToObject(o, "test", test);
    cJSON_AddNumberToObject(o, "depth", d);
    cJSON_AddNumberToObject(o, "batch", b);
    return o;
}

#if ALRD_CUDA
/* An engine for variant v: b sequences of max_ctx tokens, prefill batch p. */
static int new_engine(const alrd_model *m, const alrd_config *syn, const variant *v, int max_ctx, int b, int p,
                      alrd_gpu **g, alrd_error *err) {
    const alrd_config *cfg = m ? &m->cfg : syn;
    int L = cfg->n_layers;
    int *kb = malloc(sizeof(int) * L), *vb = malloc(sizeof(int) * L), *kr = NULL, *vr = NULL;
    if (!kb || !vb) {
        free(kb);
        free(vb);
        return alrd_errf(err, "out of memory");
    }
    alrd_cache_opts co;
    if (m) alrd_cache_opts_default(m, &co);
    else memset(&co, 0, sizeof co), co.k_bits = co.v_bits = 16, co.group_size = 32, co.residual = 128, co.use_kivi = 1;
    for (int l = 0; l < L; l++) {
        kb[l] = v->k > 0 ? v->k : (co.k_bits ? co.k_bits : m->lowrank.k_bits[l]);
        vb[l] = v->v > 0 ? v->v : (co.v_bits ? co.v_bits : m->lowrank.v_bits[l]);
    }
    int gh = v->gh > 0 ? v->gh : 1;
    if (!m && v->r < 1) {
        kr = malloc(sizeof(int) * L);
        vr = malloc(sizeof(int) * L);
        int r = (int)lround(v->r * gh * cfg->head_dim / 8.0) * 8;
        if (r < 8) r = 8;
        for (int l = 0; l < L && kr && vr; l++) kr[l] = vr[l] = r;
    }
    alrd_gpu_opts o = {.max_ctx = max_ctx, .max_batch = p, .n_seq = b, .k_bits = kb, .v_bits = vb,
                       .group_size = v->G > 0 ? v->G : co.group_size, .residual = v->R >= 0 ? v->R : co.residual,
                       .use_kivi = v->kivi >= 0 ? v->kivi : co.use_kivi,
                       .attn = v->attn ? ALRD_GPU_ATTN_REF : ALRD_GPU_ATTN_FUSED, .graph = v->graph, .score = 0};
    int rc = !m && v->r < 1 && (!kr || !vr) ? alrd_errf(err, "out of memory")
             : m                            ? alrd_gpu_new(g, m, &o, err)
                                            : alrd_gpu_new_synthetic(g, syn, gh, kr, vr, &o, 7, err);
    free(kb);
    free(vb);
    free(kr);
    free(vr);
    return rc;
}

/* The largest context (a multiple of 1024) whose engine for b sequences
 * fits in GPU memory with a p-token prefill batch (the prefill's score
 * scratch grows with p x context) and a decode step that runs; 0 when not
 * even 1024 fits. Bisection over real allocations. */
static int max_fit(const alrd_model *m, const alrd_config *syn, const variant *v, int b, int p, int limit) {
    int lo = 0, hi = limit / 1024;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        alrd_gpu *g = NULL;
        alrd_error err;
        int ok = !new_engine(m, syn, v, mid * 1024, b, p, &g, &err);
        if (ok) {
            int32_t *tok = calloc(b, sizeof(int32_t));
            for (int s = 0; s < b && ok; s++) ok = !alrd_gpu_fill_random(g, s, mid * 1024 - 1, 5, &err);
            ok = ok && tok && !alrd_gpu_decode(g, tok, NULL, &err);
            free(tok);
        }
        alrd_gpu_free(g);
        if (ok) lo = mid;
        else hi = mid - 1;
    }
    return lo * 1024;
}

/* The sequences of context ctx whose KV caches fit in budget bytes (0: not
 * one), from one sequence's exact bytes in an engine of this variant. */
static long budget_batch(const alrd_model *m, const alrd_config *syn, const variant *v, int ctx, int p, double budget,
                         double *seq_bytes, alrd_error *err) {
    alrd_gpu *g = NULL;
    if (new_engine(m, syn, v, ctx, 1, p, &g, err)) return -1;
    int rc = alrd_gpu_fill_random(g, 0, ctx, 3, err);
    *seq_bytes = (double)alrd_gpu_cache_bytes(g, 0);
    alrd_gpu_free(g);
    if (rc) return -1;
    return *seq_bytes > 0 ? (long)floor(budget / *seq_bytes) : 0;
}

/* One (variant, depth, batch) on the GPU: pp and tg rows appended to arr. */
static void bench_gpu(const alrd_model *m, const alrd_config *syn, const variant *v, int d, int b, int p, int n, int reps,
                      cJSON *arr) {
    const alrd_config *cfg = m ? &m->cfg : syn;
    int nv = cfg->vocab_size;
    int maxn = p > n ? p : n;
    alrd_gpu *g = NULL;
    alrd_error err;
    int rc = new_engine(m, syn, v, d + maxn, b, p, &g, &err);
    if (rc) {
        cJSON *r = result(v, d, b, "pp+tg");
        cJSON_AddStringToObject(r, "error", err.msg);
        cJSON_AddItemToArray(arr, r);
        fprintf(stderr, "alrd-bench: %s d=%d b=%d: %s\n", v->name, d, b, err.msg);
        return;
    }
    alrd_gpu_info info;
    alrd_gpu_get_info(g, &info);
    int32_t *tok = malloc(sizeof(int32_t) * (p > b ? p : b));
    double t[16], bytes0 = 0, bytes1 = 0;
    if (reps > 16) reps = 16;
    /* pp: p tokens of every sequence at depth d */
    rc = 0;
    for (int rep = -1; rep < reps && !rc; rep++) {
        for (int s = 0; s < b && !rc; s++) rc = alrd_gpu_fill_random(g, s, d, 11 + rep, &err);
        double t0 = alrd_now();
        for (int s = 0; s < b && !rc; s++) {
            for (int i = 0; i < p; i++) tok[i] = rtok(nv);
            rc = alrd_gpu_prefill(g, s, tok, p, NULL, 0, &err);
        }
        if (rep >= 0) t[rep] = alrd_now() - t0;
    }
    cJSON *r = result(v, d, b, "pp");
    if (rc) cJSON_AddStringToObject(r, "error", err.msg);
    else {
        double sec = median(t, reps);
        cJSON_AddNumberToObject(r, "tokens", (double)b * p);
        cJSON_AddNumberToObject(r, "seconds", sec);
        cJSON_AddNumberToObject(r, "tokens_per_s", b * p / sec);
        printf("%-28s pp%-5d d=%-6d b=%-3d %10.1f tok/s\n", v->name, p, d, b, b * p / sec);
    }
    cJSON_AddItemToArray(arr, r);
    /* tg: n steps of all sequences from depth d; the first two steps (outside
     * the timing) warm up and capture the graph */
    size_t kv_d = 0;
    for (int rep = -1; rep < reps && !rc; rep++) {
        for (int s = 0; s < b && !rc; s++) rc = alrd_gpu_fill_random(g, s, rep < 0 ? d : d, 21 + rep, &err);
        if (rep < 0) {
            for (int i = 0; i < 2 && !rc; i++) {
                for (int s = 0; s < b; s++) tok[s] = rtok(nv);
                rc = alrd_gpu_decode(g, tok, NULL, &err);
            }
            continue;
        }
        kv_d = 0;
        for (int s = 0; s < b; s++) kv_d += alrd_gpu_cache_bytes(g, s);
        bytes0 = (double)alrd_gpu_step_bytes(g);
        if (rep == 0) alrd_gpu_profile(1); /* the first timed run, for ncu --profile-from-start off */
        double t0 = alrd_now();
        for (int i = 0; i < n && !rc; i++) {
            for (int s = 0; s < b; s++) tok[s] = rtok(nv);
            rc = alrd_gpu_decode(g, tok, NULL, &err);
        }
        t[rep] = alrd_now() - t0;
        if (rep == 0) alrd_gpu_profile(0);
        bytes1 = (double)alrd_gpu_step_bytes(g);
    }
    r = result(v, d, b, "tg");
    if (rc) cJSON_AddStringToObject(r, "error", err.msg);
    else {
        double sec = median(t, reps), step = sec / n, bytes = 0.5 * (bytes0 + bytes1);
        alrd_gpu_get_info(g, &info);
        double frac = bytes / step / info.peak_bw;
        cJSON_AddNumberToObject(r, "tokens", (double)b * n);
        cJSON_AddNumberToObject(r, "seconds", sec);
        cJSON_AddNumberToObject(r, "tokens_per_s", b * n / sec);
        cJSON_AddNumberToObject(r, "step_ms", 1e3 * step);
        cJSON_AddNumberToObject(r, "bytes_per_step", bytes);
        cJSON_AddNumberToObject(r, "roofline_fraction", frac);
        cJSON_AddNumberToObject(r, "kv_bytes_at_depth", (double)kv_d);
        cJSON_AddNumberToObject(r, "kv_bytes_per_token", d > 0 ? (double)kv_d / ((double)d * b) : 0);
        cJSON_AddNumberToObject(r, "engine_bytes", (double)info.engine_bytes);
        cJSON_AddNumberToObject(r, "weight_bytes", (double)info.weight_bytes);
        cJSON_AddNumberToObject(r, "gpu_used_bytes", (double)(info.total_mem - info.free_mem));
        cJSON_AddBoolToObject(r, "fused_attention", alrd_gpu_fused_ok(g) && !v->attn);
        printf("%-28s tg%-5d d=%-6d b=%-3d %10.1f tok/s  step %7.3f ms  KV %8.1f MiB  GPU %6.2f GiB  roofline %5.1f%%\n",
               v->name, n, d, b, b * n / sec, 1e3 * step, kv_d / 1048576.0,
               (info.total_mem - info.free_mem) / 1073741824.0, 100 * frac);
    }
    cJSON_AddItemToArray(arr, r);
    free(tok);
    alrd_gpu_free(g);
}
#endif

/* CPU fallback through the context API. */
static void bench_cpu(alrd_model *m, const variant *v, int d, int b, int p, int n, cJSON *arr) {
    alrd_cache_opts co;
    alrd_cache_opts_default(m, &co);
    if (v->k > 0) co.k_bits = v->k;
    if (v->v > 0) co.v_bits = v->v;
    if (v->G > 0) co.group_size = v->G;
    if (v->R >= 0) co.residual = v->R;
    if (v->kivi >= 0) co.use_kivi = v->kivi;
    co.backend = ALRD_BACKEND_CPU;
    int nv = m->cfg.vocab_size, maxt = d > p ? d : p;
    alrd_error err;
    alrd_ctx *c = NULL;
    if (alrd_ctx_new(&c, m, d + (p > n ? p : n), maxt > 0 ? maxt : 1, &co, &err)) {
        cJSON *r = result(v, d, b, "pp+tg");
        cJSON_AddStringToObject(r, "error", err.msg);
        cJSON_AddItemToArray(arr, r);
        return;
    }
    int32_t *tok = malloc(sizeof(int32_t) * (maxt + 1));
    for (int i = 0; i <= maxt; i++) tok[i] = rtok(nv);
    int rc = 0;
    double tpp = 0, ttg = 0;
    for (int s = 0; s < b && !rc; s++) {
        alrd_ctx_reset(c);
        double t0 = alrd_now();
        if (d == 0) rc = alrd_ctx_forward(c, tok, p, NULL, 0, &err);
        tpp += alrd_now() - t0;
        alrd_ctx_reset(c);
        if (d > 0 && !rc) rc = alrd_ctx_forward(c, tok, d, NULL, 0, &err);
        t0 = alrd_now();
        for (int i = 0; i < n && !rc; i++) rc = alrd_ctx_forward(c, tok + (i % maxt), 1, NULL, 0, &err);
        ttg += alrd_now() - t0;
    }
    if (d == 0) {
        cJSON *r = result(v, d, b, "pp");
        cJSON_AddNumberToObject(r, "tokens_per_s", b * p / tpp);
        cJSON_AddStringToObject(r, "backend", "cpu");
        cJSON_AddItemToArray(arr, r);
        printf("%-28s pp%-5d d=%-6d b=%-3d %10.1f tok/s (cpu)\n", v->name, p, d, b, b * p / tpp);
    }
    cJSON *r = result(v, d, b, "tg");
    if (rc) cJSON_AddStringToObject(r, "error", err.msg);
    else {
        cJSON_AddNumberToObject(r, "tokens_per_s", b * n / ttg);
        cJSON_AddNumberToObject(r, "kv_bytes_at_end", (double)alrd_ctx_cache_bytes(c));
        cJSON_AddStringToObject(r, "backend", "cpu");
        printf("%-28s tg%-5d d=%-6d b=%-3d %10.1f tok/s (cpu)\n", v->name, n, d, b, b * n / ttg);
    }
    cJSON_AddItemToArray(arr, r);
    free(tok);
    alrd_ctx_free(c);
}

/* "64GiB", "512MiB", "1.5GB", "1000000": bytes, > 0; -1 when malformed */
static double parse_size(const char *s) {
    char *end;
    double x = strtod(s, &end);
    if (end == s || !(x > 0)) return -1;
    static const struct { const char *suf; double mul; } u[] = {
        {"", 1}, {"B", 1}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0},
        {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"K", 1024.0}, {"M", 1048576.0}, {"G", 1073741824.0},
    };
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++)
        if (!strcmp(end, u[i].suf)) return x * u[i].mul;
    return -1;
}

static void usage(void) {
    fprintf(stderr, "usage: alrd-bench MODEL|--synthetic llama2-7b|llama3-8b|smollm2-135m [-d 0,4096,32768] [-b 1,16] [-p 512]\n"
                    "                  [-n 128] [-v SPEC]... [-r REPS] [-o out.json] [--cpu] [--max-fit MAXCTX] [--kv-budget SIZE]\n"
                    "  --max-fit: instead of speed, the largest context (<= MAXCTX) each batch size fits in GPU memory\n"
                    "  --kv-budget: instead of -b, as many sequences as fit in SIZE (64GiB, 512MiB, bytes) of KV cache\n"
                    "  SPEC: comma list of r=RATIO gh=N k=BITS v=BITS G=N R=N kivi=0|1 attn=fused|ref graph=0|1 name=X\n");
}

int main(int argc, char **argv) {
    const char *model = NULL, *synth = NULL, *out = NULL;
    int depths[MAXL] = {0}, nd = 1, batches[MAXL] = {1}, nb = 1, p = 512, n = 128, reps = 3, cpu = 0, nvar = 0, fit = 0;
    double budget = 0;
    variant vars[MAXV];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        else if (!strcmp(a, "--synthetic") && val) synth = val, i++;
        else if (!strcmp(a, "-d") && val) { if ((nd = parse_list(val, depths, MAXL)) < 1) goto bad; i++; }
        else if (!strcmp(a, "-b") && val) { if ((nb = parse_list(val, batches, MAXL)) < 1) goto bad; i++; }
        else if (!strcmp(a, "-p") && val) p = atoi(val), i++;
        else if (!strcmp(a, "-n") && val) n = atoi(val), i++;
        else if (!strcmp(a, "-r") && val) reps = atoi(val), i++;
        else if (!strcmp(a, "-o") && val) out = val, i++;
        else if (!strcmp(a, "-v") && val) {
            if (nvar >= MAXV || parse_variant(val, &vars[nvar])) goto bad;
            nvar++, i++;
        } else if (!strcmp(a, "--cpu")) cpu = 1;
        else if (!strcmp(a, "--max-fit") && val) { if ((fit = atoi(val)) < 1024) goto bad; i++; }
        else if (!strcmp(a, "--kv-budget") && val) { if ((budget = parse_size(val)) <= 0) goto bad; i++; }
        else if (a[0] == '-') goto bad;
        else if (!model) model = a;
        else goto bad;
        continue;
    bad:
        fprintf(stderr, "alrd-bench: bad argument %s%s%s\n", a, val ? " " : "", val ? val : "");
        usage();
        return 2;
    }
    if ((!model && !synth) || (model && synth) || p < 1 || n < 1 || reps < 1) {
        usage();
        return 2;
    }
    for (int i = 0; i < nb; i++)
        if (batches[i] < 1) {
            fprintf(stderr, "alrd-bench: batch sizes must be >= 1\n");
            return 2;
        }
    if (!nvar) {
        parse_variant("name=default", &vars[0]);
        nvar = 1;
    }
    alrd_model m;
    alrd_config syn;
    alrd_error err;
    int have_model = 0;
    if (synth) {
        if (synthetic_config(synth, &syn)) {
            fprintf(stderr, "alrd-bench: --synthetic: unknown shape %s (llama2-7b, llama3-8b or smollm2-135m)\n", synth);
            return 2;
        }
    } else {
        if (alrd_model_open(&m, model, &err)) {
            fprintf(stderr, "alrd-bench: %s\n", err.msg);
            return 1;
        }
        have_model = 1;
    }
    int gpu = !cpu && alrd_ctx_gpu_available();
    if (budget > 0 && !gpu) {
        fprintf(stderr, "alrd-bench: --kv-budget needs a GPU\n");
        if (have_model) alrd_model_free(&m);
        return 1;
    }
    if (budget > 0 && fit) {
        fprintf(stderr, "alrd-bench: --kv-budget and --max-fit are separate runs\n");
        if (have_model) alrd_model_free(&m);
        return 2;
    }
    if (!gpu && synth) {
        fprintf(stderr, "alrd-bench: --synthetic needs a GPU\n");
        return 1;
    }
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    cJSON_AddStringToObject(root, "model", synth ? synth : model);
    cJSON_AddStringToObject(root, "backend", gpu ? "gpu" : "cpu");
#if ALRD_CUDA
    if (gpu) {
        alrd_gpu_info info;
        if (!alrd_gpu_get_info(NULL, &info)) {
            cJSON_AddStringToObject(root, "device", info.name);
            cJSON_AddNumberToObject(root, "peak_bandwidth", info.peak_bw);
            cJSON_AddNumberToObject(root, "device_memory", (double)info.total_mem);
            printf("device: %s, %d SMs, %.0f GiB, peak %.2f TB/s (memory clock x bus width)\n", info.name, info.sm_count,
                   info.total_mem / 1073741824.0, info.peak_bw / 1e12);
        }
    }
#endif
    cJSON_AddNumberToObject(root, "pp_tokens", p);
    cJSON_AddNumberToObject(root, "tg_tokens", n);
#if ALRD_CUDA
    if (gpu && fit) { /* capacity instead of speed: the largest context per (variant, batch) */
        for (int vi = 0; vi < nvar; vi++)
            for (int bi = 0; bi < nb; bi++) {
                int c = max_fit(have_model ? &m : NULL, &syn, &vars[vi], batches[bi], p, fit);
                cJSON *r = result(&vars[vi], c, batches[bi], "max-fit");
                cJSON_AddNumberToObject(r, "max_context", c);
                cJSON_AddItemToArray(arr, r);
                printf("%-28s b=%-4d largest context that fits: %d tokens (%.2f M tokens in all)\n", vars[vi].name,
                       batches[bi], c, (double)c * batches[bi] / 1e6);
                fflush(stdout);
            }
        nd = 0; /* no speed runs */
    }
#endif
#if ALRD_CUDA
    if (gpu && budget > 0) { /* throughput at a fixed KV budget: the batch that fits, per (variant, depth) */
        cJSON_AddNumberToObject(root, "kv_budget_bytes", budget);
        for (int vi = 0; vi < nvar; vi++)
            for (int di = 0; di < nd; di++) {
                double sb = 0;
                long B = budget_batch(have_model ? &m : NULL, &syn, &vars[vi], depths[di] + n, p, budget, &sb, &err);
                if (B < 1 || B > INT_MAX / 2) {
                    cJSON *r = result(&vars[vi], depths[di], 0, "kv-budget");
                    cJSON_AddStringToObject(r, "error", B < 0 ? err.msg : B < 1 ? "not one sequence fits" : "too many");
                    cJSON_AddItemToArray(arr, r);
                    fprintf(stderr, "alrd-bench: %s d=%d: %s\n", vars[vi].name, depths[di],
                            B < 0 ? err.msg : B < 1 ? "not one sequence fits the budget" : "batch too large");
                    continue;
                }
                printf("%-28s kv-budget %.2f GiB at context %d: %.1f MiB a sequence, batch %ld\n", vars[vi].name,
                       budget / 1073741824.0, depths[di] + n, sb / 1048576.0, B);
                fflush(stdout);
                bench_gpu(have_model ? &m : NULL, &syn, &vars[vi], depths[di], (int)B, p, n, reps, arr);
                fflush(stdout);
            }
        nd = 0; /* no -b runs */
    }
#endif
    for (int vi = 0; vi < nvar; vi++)
        for (int di = 0; di < nd; di++)
            for (int bi = 0; bi < nb; bi++) {
#if ALRD_CUDA
                if (gpu) {
                    bench_gpu(have_model ? &m : NULL, &syn, &vars[vi], depths[di], batches[bi], p, n, reps, arr);
                    fflush(stdout);
                    continue;
                }
#endif
                bench_cpu(&m, &vars[vi], depths[di], batches[bi], p, n, arr);
                fflush(stdout);
            }
    cJSON_AddItemToObject(root, "results", arr);
    int rc = 0;
    if (out) {
        char *js = cJSON_Print(root);
        alrd_outfile of;
        if (!js || alrd_outfile_open(&of, out, &err) || alrd_outfile_write(&of, js, strlen(js), &err) ||
            alrd_outfile_commit(&of, &err)) {
            fprintf(stderr, "alrd-bench: %s\n", js ? err.msg : "out of memory");
            rc = 1;
        }
        free(js);
    }
    cJSON_Delete(root);
    if (have_model) alrd_model_free(&m);
    return rc;
}
