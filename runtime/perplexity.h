/* perplexity: llama.cpp's llama-perplexity convention (docs/design.md 6). The text
 * is tokenized whole, cut into chunks of ctx tokens (BOS replaces the first
 * token of each chunk when the vocab adds BOS), each chunk starts from an
 * empty cache, and only the second half of each chunk is scored. With a
 * quantized cache the first half is prefilled and the second half goes
 * through the decode path token by token. Optionally compares every scored
 * distribution with a reference context's (KL divergence, top-1 agreement). */
#ifndef ALRD_PERPLEXITY_H
#define ALRD_PERPLEXITY_H

#include <stddef.h>
#include <stdint.h>
#include "context.h"

typedef struct {
    int ctx;              /* chunk length */
    int max_chunks;       /* 0 = all */
    int force_decode;     /* 1: decode path even for an unquantized cache; -1: never; 0: auto */
    int progress;         /* progress on stderr (when a TTY) */
    int first_chunk;      /* chunks skipped before scoring: one shard of a long run */
} alrd_ppl_opts;

typedef struct {
    double ppl, ppl_stderr;
    double nll;           /* mean negative log-likelihood (shards combine by n_scored) */
    size_t n_scored;
    int n_chunks;
    size_t n_tokens;      /* tokens in the whole text */
    double kl, kl_stderr; /* mean KL(reference || model), when a reference ran */
    double top1;          /* fraction of positions where argmax agrees */
    double seconds;
} alrd_ppl_result;

/* Scores tokens with c (and ref, may be NULL). c and ref must hold ctx tokens. */
int alrd_perplexity_tokens(alrd_ctx *c, alrd_ctx *ref, const int32_t *tokens, size_t n_tokens,
                           int add_bos, int32_t bos, const alrd_ppl_opts *o, alrd_ppl_result *r,
                           alrd_error *err);

#endif
