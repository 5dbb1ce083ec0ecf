/* sampler: greedy / temperature / top-k / top-p. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>

int alrd_sampler_init(alrd_sampler *s, int n_vocab, float temperature, int top_k, float top_p,
                      uint64_t seed) {
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
    s->n_vocab = n_vocab;
    s->probs = malloc(sizeof(float) * n_vocab);
    s->idx = malloc(sizeof(int32_t) * n_vocab);
    return s->probs && s->idx ? 0 : -1;
}

void alrd_sampler_free(alrd_sampler *s) {
    free(s->probs);
    free(s->idx);
    s->probs = NULL;
    s->idx = NULL;
}

int32_t alrd_argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static float rng_uniform(uint64_t *st) { /* xorshift64*, 24 random bits in [0,1) */
    *st ^= *st >> 12;
    *st ^= *st << 25;
    *st ^= *st >> 27;
    return (float)((*st * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

static int by_prob_desc(const void *a, const void *b, void *probs) {
    const float *p = probs;
    float pa = p[*(const int32_t *)a], pb = p[*(const int32_t *)b];
    return pa < pb ? 1 : pa > pb ? -1 : 0;
}

int32_t alrd_sampler_sample(alrd_sampler *s, const float *logits) {
    int n = s->n_vocab;
    if (s->temperature <= 0) return alrd_argmax(logits, n);
    float mx = logits[alrd_argmax(logits, n)];
    double sum = 0;
    for (int i = 0; i < n; i++) {
        s->probs[i] = expf((logits[i] - mx) / s->temperature);
        sum += s->probs[i];
    }
    for (int i = 0; i < n; i++) s->probs[i] /= (float)sum;
    int k = n;
    if (s->top_k > 0 || s->top_p < 1.0f) {
        /* candidates: sort only what top-k keeps, or everything above a floor for top-p */
        int m = 0;
        float floor = s->top_p < 1.0f ? (1.0f - s->top_p) / (n - 1) : 0; /* can't be in the nucleus below this */
        for (int i = 0; i < n; i++)
            if (s->probs[i] >= floor) s->idx[m++] = i;
        qsort_r(s->idx, m, sizeof(int32_t), by_prob_desc, s->probs);
        k = m;
        if (s->top_k > 0 && s->top_k < k) k = s->top_k;
        if (s->top_p < 1.0f) {
            double cum = 0;
            for (int i = 0; i < k; i++) {
                cum += s->probs[s->idx[i]];
                if (cum >= s->top_p) { k = i + 1; break; }
            }
        }
        double tot = 0;
        for (int i = 0; i < k; i++) tot += s->probs[s->idx[i]];
        float r = rng_uniform(&s->rng) * (float)tot;
        double cdf = 0;
        for (int i = 0; i < k; i++) {
            cdf += s->probs[s->idx[i]];
            if (r < cdf) return s->idx[i];
        }
        return s->idx[k - 1];
    }
    float r = rng_uniform(&s->rng);
    double cdf = 0;
    for (int i = 0; i < n; i++) {
        cdf += s->probs[i];
        if (r < cdf) return i;
    }
    return n - 1;
}
