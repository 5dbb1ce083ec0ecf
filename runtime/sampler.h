/* sampler: picks the next token from logits -- greedy, or temperature with
 * top-k and top-p (nucleus) filtering, from a seeded xorshift generator. */
#ifndef ALRD_SAMPLER_H
#define ALRD_SAMPLER_H

#include <stdint.h>

typedef struct {
    float temperature;   /* 0 = greedy */
    int top_k;           /* 0 = off */
    float top_p;         /* 1 = off */
    uint64_t rng;        /* state; seed with alrd_sampler_init */
    int n_vocab;
    float *probs;        /* [n_vocab] scratch, owned */
    int32_t *idx;        /* [n_vocab] scratch, owned */
} alrd_sampler;

int alrd_sampler_init(alrd_sampler *s, int n_vocab, float temperature, int top_k, float top_p,
                      uint64_t seed);
void alrd_sampler_free(alrd_sampler *s);
int32_t alrd_sampler_sample(alrd_sampler *s, const float *logits);
int32_t alrd_argmax(const float *x, int n);

#endif
