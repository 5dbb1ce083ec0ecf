/* alrd-run: generate text or measure perplexity with a model (GGUF, HF
 * directory or .alrd), on the GPU when one is present, else on the CPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../alrd.h"

static void usage(void) {
    fprintf(stderr,
            "usage: alrd-run MODEL [-p PROMPT] [options]\n"
            "  -p, --prompt TEXT     prompt to continue\n"
            "  -n N                  tokens to generate (default 128)\n"
            "  --chat                apply the model's chat template to the prompt\n"
            "  --system TEXT         system message for --chat\n"
            "  --transcript          with --chat: print the rendered turn and the end-of-turn token too\n"
            "                        (the whole conversation as text: chat calibration for alrd-compress)\n"
            "  --temp T              temperature (default 0 = greedy)\n"
            "  --top-k K, --top-p P  sampling filters (defaults 40, 0.95 when --temp > 0)\n"
            "  --seed S              sampler seed (default 42)\n"
            "  --ppl FILE            perplexity of FILE (llama.cpp convention)\n"
            "  --ctx N               context / perplexity chunk length (default 512)\n"
            "  --chunks K            score only the first K chunks\n"
            "  --first-chunk A       start at chunk A (shards of one run combine by their NLL lines)\n"
            "  --kl                  also KL divergence and top-1 agreement against the\n"
            "                        same model with an unquantized cache\n"
            "  --kv-bits B           cache bits for K and V (2,3,4,8,16), overrides the file\n"
            "  --k-bits B, --v-bits B\n"
            "  --group-size G        KIVI group size;  --residual R  full-precision window\n"
            "  --no-kivi             quantize both caches per token\n"
            "  --sink S              keep the first S tokens of each sequence unquantised\n"
            "                        (attention sinks; on the CPU)\n"
            "  --decode-path         force the decode path in --ppl (default: when quantized)\n"
            "  --cpu                 run on the CPU even when a GPU is present\n"
            "  --gpu-ref-attn        GPU decode attention by materialising K/V (reference path)\n"
            "  --gpu-stepwise        GPU perplexity through real decode steps (not one pass)\n"
            "  --no-graph            no CUDA graph for GPU decode steps\n"
            "  --logits-out FILE     write the last prompt position's logits (raw float32)\n"
            "  --tokens-out FILE     with --ppl: write the token ids of the text (raw int32)\n");
}

static int parse_int(const char *flag, const char *v, int lo, int hi, int *out) {
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || x < lo || x > hi) {
        fprintf(stderr, "alrd-run: %s: expected an integer in [%d, %d], got '%s'\n", flag, lo, hi, v ? v : "");
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int parse_float(const char *flag, const char *v, float *out) {
    char *end;
    float x = v ? strtof(v, &end) : 0;
    if (!v || *end || x != x) {
        fprintf(stderr, "alrd-run: %s: expected a number, got '%s'\n", flag, v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

/* Raw dump for cross-checks, written atomically. */
static int dump(const char *path, const void *data, size_t n) {
    alrd_outfile of;
    alrd_error err;
    if (alrd_outfile_open(&of, path, &err) || alrd_outfile_write(&of, data, n, &err) ||
        alrd_outfile_commit(&of, &err)) {
        fprintf(stderr, "alrd-run: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int run_ppl(alrd_model *m, const alrd_cache_opts *co, const char *file, int n_ctx, int first_chunk,
                   int chunks, int with_kl, int force_decode, const char *tokens_out) {
    alrd_error err;
    char *text = NULL;
    size_t len = 0;
    if (alrd_read_file(file, (size_t)1 << 31, &text, &len, &err)) {
        fprintf(stderr, "alrd-run: %s\n", err.msg);
        return 1;
    }
    char sha[65];
    alrd_sha256_hex(text, len, sha);
    int32_t *ids = NULL;
    size_t n = 0;
    double t0 = alrd_now();
    if (alrd_tokenizer_encode(m->tok, text, len, 1, 0, &ids, &n, &err)) {
        fprintf(stderr, "alrd-run: %s: %s\n", file, err.msg);
        free(text);
        return 1;
    }
    free(text);
    double t_tok = alrd_now() - t0;
    if (tokens_out && dump(tokens_out, ids, n * sizeof(int32_t))) { free(ids); return 1; }
    alrd_ctx *c = NULL, *ref = NULL;
    alrd_cache_opts plain;
    alrd_cache_opts_default(m, &plain);
    plain.k_bits = plain.v_bits = 16;
    plain.backend = co->backend;
    plain.gpu_flags = co->gpu_flags;
    if (alrd_ctx_new(&c, m, n_ctx, n_ctx, co, &err) ||
        (with_kl && alrd_ctx_new(&ref, m, n_ctx, n_ctx, &plain, &err))) {
        fprintf(stderr, "alrd-run: %s\n", err.msg);
        alrd_ctx_free(c);
        free(ids);
        return 1;
    }
    fprintf(stderr, "alrd-run: backend %s\n", alrd_ctx_backend(c) == ALRD_BACKEND_GPU ? "gpu" : "cpu");
    alrd_ppl_opts po = {.ctx = n_ctx, .max_chunks = chunks, .force_decode = force_decode, .progress = 1,
                        .first_chunk = first_chunk};
    alrd_ppl_result r;
    int rc = alrd_perplexity_tokens(c, ref, ids, n, alrd_tokenizer_add_bos(m->tok), alrd_tokenizer_bos(m->tok),
                                    &po, &r, &err);
    if (rc) {
        fprintf(stderr, "alrd-run: %s\n", err.msg);
    } else {
        printf("file: %s\nsha256: %s\n", file, sha);
        printf("tokens: %zu (tokenized in %.2f s), chunks: %d x %d, scored: %zu\n", r.n_tokens, t_tok,
               r.n_chunks, n_ctx, r.n_scored);
        printf("cache: k_bits %d, v_bits %d, group %d, residual %d, kivi %d%s\n", co->k_bits, co->v_bits,
               co->group_size, co->residual, co->use_kivi, co->k_bits == 0 ? " (per-layer bits from the file)" : "");
        if (with_kl) printf("KL = %.6f +/- %.6f, top-1 agreement = %.4f\n", r.kl, r.kl_stderr, r.top1);
        printf("PPL = %.4f +/- %.4f\n", r.ppl, r.ppl_stderr);
        printf("NLL = %.10f mean over %zu scored tokens (chunks %d..%d)\n", r.nll, r.n_scored, first_chunk,
               first_chunk + r.n_chunks - 1);
        fprintf(stderr, "alrd-run: %.1f s, %.1f tokens/s\n", r.seconds,
                r.n_chunks * (double)n_ctx / r.seconds);
    }
    alrd_ctx_free(c);
    alrd_ctx_free(ref);
    free(ids);
    return rc ? 1 : 0;
}

static int run_generate(alrd_model *m, const alrd_cache_opts *co, const char *prompt, int chat, int transcript,
                        const char *system, int n_gen, int n_ctx, float temp, int top_k, float top_p,
                        uint64_t seed, const char *logits_out) {
    alrd_error err;
    char *text = NULL;
    if (chat) {
        text = alrd_chat_format(&m->vocab, system, prompt, &err);
        if (!text) { fprintf(stderr, "alrd-run: %s\n", err.msg); return 1; }
    }
    const char *src = text ? text : prompt;
    int32_t *ids = NULL;
    size_t n = 0;
    if (alrd_tokenizer_encode(m->tok, src, strlen(src), 1, 1, &ids, &n, &err)) {
        fprintf(stderr, "alrd-run: prompt: %s\n", err.msg);
        free(text);
        return 1;
    }
    if (transcript && text) fputs(text, stdout); /* the rendered turn, control tokens as text */
    free(text);
    if (n == 0) { fprintf(stderr, "alrd-run: prompt: empty after tokenization\n"); free(ids); return 1; }
    if ((int)n + n_gen > n_ctx) n_ctx = (int)n + n_gen;
    alrd_ctx *c = NULL;
    alrd_sampler smp;
    if (alrd_ctx_new(&c, m, n_ctx, (int)n, co, &err)) {
        fprintf(stderr, "alrd-run: %s\n", err.msg);
        free(ids);
        return 1;
    }
    int nv = m->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * nv);
    if (!logits || alrd_sampler_init(&smp, nv, temp, top_k, top_p, seed)) {
        fprintf(stderr, "alrd-run: out of memory\n");
        free(logits); free(ids); alrd_ctx_free(c);
        return 1;
    }
    if (!chat) fwrite(src == prompt ? prompt : "", 1, strlen(prompt), stdout);
    double t0 = alrd_now(), t1 = 0;
    int rc = alrd_ctx_forward(c, ids, (int)n, logits, 0, &err), produced = 0;
    t1 = alrd_now();
    if (!rc && logits_out && dump(logits_out, logits, sizeof(float) * nv)) rc = -1, err.msg[0] = 0;
    char piece[256];
    for (int i = 0; i < n_gen && !rc; i++) {
        int32_t tok = alrd_sampler_sample(&smp, logits);
        if (alrd_tokenizer_is_eog(m->tok, tok)) {
            const int k = transcript ? alrd_tokenizer_piece(m->tok, tok, 1, piece, sizeof piece) : 0;
            if (k > 0) fwrite(piece, 1, (size_t)k, stdout);
            break;
        }
        int k = alrd_tokenizer_piece(m->tok, tok, 0, piece, sizeof piece);
        if (k > 0) fwrite(piece, 1, k, stdout);
        fflush(stdout);
        produced++;
        if (i + 1 < n_gen) rc = alrd_ctx_forward(c, &tok, 1, logits, 0, &err);
    }
    double t2 = alrd_now();
    putchar('\n');
    fflush(stdout); /* the answer's line ends before the timing line on stderr */
    if (rc && err.msg[0]) fprintf(stderr, "alrd-run: %s\n", err.msg);
    else if (!rc)
        fprintf(stderr, "alrd-run: %s: prompt %zu tokens in %.2f s (%.1f tok/s), generated %d tokens in %.2f s (%.1f tok/s), cache %zu bytes\n",
                alrd_ctx_backend(c) == ALRD_BACKEND_GPU ? "gpu" : "cpu", n, t1 - t0, n / (t1 - t0), produced, t2 - t1, produced / (t2 - t1 > 0 ? t2 - t1 : 1),
                alrd_ctx_cache_bytes(c));
    alrd_sampler_free(&smp);
    free(logits);
    free(ids);
    alrd_ctx_free(c);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *ppl = NULL, *system = NULL, *logits_out = NULL, *tokens_out = NULL;
    int n_gen = 128, n_ctx = 512, chunks = 0, first_chunk = 0, chat = 0, transcript = 0, with_kl = 0, force_decode = 0, top_k = 40;
    int kb = -1, vb = -1, gs = -1, res = -1, no_kivi = 0, seed = 42, cpu = 0, gpu_flags = 0, sink = 0;
    float temp = 0, top_p = 0.95f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { if (!v) bad = 1; prompt = v; i++; }
        else if (!strcmp(a, "--system")) { if (!v) bad = 1; system = v; i++; }
        else if (!strcmp(a, "--ppl")) { if (!v) bad = 1; ppl = v; i++; }
        else if (!strcmp(a, "--logits-out")) { if (!v) bad = 1; logits_out = v; i++; }
        else if (!strcmp(a, "--tokens-out")) { if (!v) bad = 1; tokens_out = v; i++; }
        else if (!strcmp(a, "-n")) { bad = parse_int(a, v, 0, 1 << 20, &n_gen); i++; }
        else if (!strcmp(a, "--ctx")) { bad = parse_int(a, v, 4, 1 << 20, &n_ctx); i++; }
        else if (!strcmp(a, "--chunks")) { bad = parse_int(a, v, 0, 1 << 30, &chunks); i++; }
        else if (!strcmp(a, "--first-chunk")) { bad = parse_int(a, v, 0, 1 << 30, &first_chunk); i++; }
        else if (!strcmp(a, "--seed")) { bad = parse_int(a, v, 0, 1 << 30, &seed); i++; }
        else if (!strcmp(a, "--top-k")) { bad = parse_int(a, v, 0, 1 << 30, &top_k); i++; }
        else if (!strcmp(a, "--top-p")) { bad = parse_float(a, v, &top_p); i++; }
        else if (!strcmp(a, "--temp")) { bad = parse_float(a, v, &temp); i++; }
        else if (!strcmp(a, "--kv-bits")) { bad = parse_int(a, v, 2, 16, &kb); vb = kb; i++; }
        else if (!strcmp(a, "--k-bits")) { bad = parse_int(a, v, 2, 16, &kb); i++; }
        else if (!strcmp(a, "--v-bits")) { bad = parse_int(a, v, 2, 16, &vb); i++; }
        else if (!strcmp(a, "--group-size")) { bad = parse_int(a, v, 1, 4096, &gs); i++; }
        else if (!strcmp(a, "--residual")) { bad = parse_int(a, v, 0, 1 << 20, &res); i++; }
        else if (!strcmp(a, "--sink")) { bad = parse_int(a, v, 0, 1 << 20, &sink); i++; }
        else if (!strcmp(a, "--no-kivi")) no_kivi = 1;
        else if (!strcmp(a, "--chat")) chat = 1;
        else if (!strcmp(a, "--transcript")) transcript = 1;
        else if (!strcmp(a, "--kl")) with_kl = 1;
        else if (!strcmp(a, "--decode-path")) force_decode = 1;
        else if (!strcmp(a, "--cpu")) cpu = 1;
        else if (!strcmp(a, "--gpu-ref-attn")) gpu_flags |= ALRD_GPU_REF_ATTN;
        else if (!strcmp(a, "--gpu-stepwise")) gpu_flags |= ALRD_GPU_STEPWISE;
        else if (!strcmp(a, "--no-graph")) gpu_flags |= ALRD_GPU_NO_GRAPH;
        else if (a[0] == '-') { fprintf(stderr, "alrd-run: unknown option %s (see --help)\n", a); return 2; }
        else if (!model) model = a;
        else { fprintf(stderr, "alrd-run: unexpected argument %s\n", a); return 2; }
        if (bad) {
            if (!v) fprintf(stderr, "alrd-run: %s needs a value\n", a);
            return 2;
        }
    }
    if (!model || (!prompt && !ppl)) { usage(); return 2; }
    for (int b = 0; b < 2; b++) {
        int x = b ? vb : kb;
        if (x != -1 && x != 2 && x != 3 && x != 4 && x != 8 && x != 16) {
            fprintf(stderr, "alrd-run: cache bits must be 2, 3, 4, 8 or 16, got %d\n", x);
            return 2;
        }
    }
    alrd_model m;
    alrd_error err;
    double t0 = alrd_now();
    if (alrd_model_open(&m, model, &err)) {
        fprintf(stderr, "alrd-run: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "alrd-run: loaded %s in %.2f s (%d layers, hidden %d, vocab %d)\n", model, alrd_now() - t0,
            m.cfg.n_layers, m.cfg.hidden, m.cfg.vocab_size);
    alrd_cache_opts co;
    alrd_cache_opts_default(&m, &co);
    if (kb != -1) co.k_bits = kb;
    if (vb != -1) co.v_bits = vb;
    if (gs != -1) co.group_size = gs;
    if (res != -1) co.residual = res;
    if (no_kivi) co.use_kivi = 0;
    co.sink = sink;
    co.backend = cpu ? ALRD_BACKEND_CPU : ALRD_BACKEND_AUTO;
    co.gpu_flags = gpu_flags;
    int rc = ppl ? run_ppl(&m, &co, ppl, n_ctx, first_chunk, chunks, with_kl, force_decode, tokens_out)
                 : run_generate(&m, &co, prompt, chat, transcript, system, n_gen, n_ctx, temp, top_k, temp > 0 ? top_p : 1.0f,
                                (uint64_t)seed, logits_out);
    alrd_model_free(&m);
    return rc;
}
