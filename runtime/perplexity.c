/* perplexity: chunked scoring, fp64 accumulation. */
#include "perplexity.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sampler.h"

/* log p(target) from one row of logits, in fp64. */
static double log_prob(const float *logits, int n, int32_t target) {
    float mx = logits[0];
    for (int i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    double se = 0;
    for (int i = 0; i < n; i++) se += exp((double)logits[i] - mx);
    return (double)logits[target] - mx - log(se);
}

/* KL(p_ref || p) for one position, fp64. */
static double kl_div(const float *ref, const float *lg, int n) {
    float mr = ref[0], ml = lg[0];
    for (int i = 1; i < n; i++) {
        mr = ref[i] > mr ? ref[i] : mr;
        ml = lg[i] > ml ? lg[i] : ml;
    }
    double sr = 0, sl = 0;
    for (int i = 0; i < n; i++) {
        sr += exp((double)ref[i] - mr);
        sl += exp((double)lg[i] - ml);
    }
    double lzr = mr + log(sr), lzl = ml + log(sl), kl = 0;
    for (int i = 0; i < n; i++) {
        double lpr = ref[i] - lzr;
        kl += exp(lpr) * (lpr - (lg[i] - lzl));
    }
    return kl > 0 ? kl : 0;
}

int alrd_perplexity_tokens(alrd_ctx *c, alrd_ctx *ref, const int32_t *tokens, size_t n_tokens,
                           int add_bos, int32_t bos, const alrd_ppl_opts *o, alrd_ppl_result *r,
                           alrd_error *err) {
    memset(r, 0, sizeof *r);
    const int n_ctx = o->ctx, first = n_ctx / 2;
    if (n_ctx < 4) return alrd_errf(err, "perplexity: --ctx %d is too small", n_ctx);
    int n_chunks = (int)(n_tokens / (size_t)n_ctx);
    if (n_chunks == 0)
        return alrd_errf(err, "perplexity: %zu tokens are fewer than one chunk of %d", n_tokens, n_ctx);
    if (o->first_chunk < 0 || o->first_chunk >= n_chunks)
        return alrd_errf(err, "perplexity: first chunk %d is outside the text's %d chunks", o->first_chunk, n_chunks);
    n_chunks -= o->first_chunk;
    if (o->max_chunks > 0 && o->max_chunks < n_chunks) n_chunks = o->max_chunks;
    tokens += (size_t)o->first_chunk * n_ctx;
    const int nv = alrd_ctx_model(c)->cfg.vocab_size;
    int decode = o->force_decode > 0 || (o->force_decode == 0 && alrd_ctx_is_quantized(c));

    float *lg = malloc(sizeof(float) * (size_t)n_ctx * nv);
    float *lr = ref ? malloc(sizeof(float) * (size_t)n_ctx * nv) : NULL;
    int32_t *chunk = malloc(sizeof(int32_t) * n_ctx);
    /* a backend with one-pass scoring (the GPU) returns the nll itself */
    const int fast = !ref && alrd_ctx_can_score(c);
    double *nllv = fast ? malloc(sizeof(double) * n_ctx) : NULL;
    if (!lg || !chunk || (ref && !lr) || (fast && !nllv)) {
        free(lg); free(lr); free(chunk); free(nllv);
        return alrd_errf(err, "perplexity: out of memory for %d x %d logits", n_ctx, nv);
    }
    double t0 = alrd_now(), nll = 0, nll2 = 0, kl = 0, kl2 = 0;
    size_t count = 0, agree = 0;
    int rc = 0;
    for (int ch = 0; ch < n_chunks && !rc; ch++) {
        memcpy(chunk, tokens + (size_t)ch * n_ctx, sizeof(int32_t) * n_ctx);
        if (add_bos) chunk[0] = bos;
        alrd_ctx_reset(c);
        if (fast) {
            rc = alrd_ctx_score(c, chunk, n_ctx, first, decode, nllv, err);
        } else if (decode) {
            /* prefill the first half, then one token at a time: logits row j
             * is the distribution after token j, j = first .. n_ctx-2 */
            rc = alrd_ctx_forward(c, chunk, first, NULL, 0, err);
            for (int j = first; j < n_ctx - 1 && !rc; j++)
                rc = alrd_ctx_forward(c, chunk + j, 1, lg + (size_t)j * nv, 0, err);
        } else {
            rc = alrd_ctx_forward(c, chunk, n_ctx, lg, 1, err);
        }
        if (!rc && ref) {
            alrd_ctx_reset(ref);
            rc = alrd_ctx_forward(ref, chunk, n_ctx, lr, 1, err);
        }
        if (rc) break;
        for (int j = first; j < n_ctx - 1; j++) {
            const float *row = lg + (size_t)j * nv;
            double v = fast ? nllv[j] : -log_prob(row, nv, chunk[j + 1]);
            nll += v;
            nll2 += v * v;
            if (ref) {
                const float *rrow = lr + (size_t)j * nv;
                double k = kl_div(rrow, row, nv);
                kl += k;
                kl2 += k * k;
                agree += alrd_argmax(rrow, nv) == alrd_argmax(row, nv);
            }
            count++;
        }
        if (o->progress && isatty(2)) {
            fprintf(stderr, "\rperplexity: chunk %d/%d, ppl %.4f   ", ch + 1, n_chunks, exp(nll / count));
            if (ch + 1 == n_chunks) fputc('\n', stderr);
        }
    }
    free(lg); free(lr); free(chunk); free(nllv);
    if (rc) return -1;
    double mean = nll / count, var = nll2 / count - mean * mean;
    r->nll = mean;
    r->ppl = exp(mean);
    r->ppl_stderr = count > 1 && var > 0 ? sqrt(var / (count - 1)) * r->ppl : 0;
    r->n_scored = count;
    r->n_chunks = n_chunks;
    r->n_tokens = n_tokens;
    if (ref) {
        double km = kl / count, kv = kl2 / count - km * km;
        r->kl = km;
        r->kl_stderr = count > 1 && kv > 0 ? sqrt(kv / (count - 1)) : 0;
        r->top1 = (double)agree / count;
    }
    r->seconds = alrd_now() - t0;
    return 0;
}
