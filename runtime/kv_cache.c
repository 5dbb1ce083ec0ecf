/* kv_cache: the mixed latent KV cache (see kv_cache.h). */
#include "kv_cache.h"

#include <stdlib.h>
#include <string.h>

#include "../kernels/kivi.h"

typedef struct {
    int dk, dv, kb, vb;
    int n;      /* tokens cached */
    int kq, vq; /* the quantised tokens end here (keys, values); they start after the sinks */
    float *kf, *vf; /* mirrors [max_ctx][dk], [max_ctx][dv] */
    size_t k_unit_words, k_unit_groups, v_unit_words, v_unit_groups;
    uint32_t *k_codes, *v_codes;
    uint16_t *k_scales, *k_zeros, *v_scales, *v_zeros;
} kv_layer;

struct alrd_kv_cache {
    int n_layers, G, R, use_kivi, max_ctx, S;
    kv_layer *layers;
};

int alrd_kv_cache_config_check(const alrd_kv_cache_config *cfg, alrd_error *err) {
    if (!cfg) return alrd_errf(err, "kv_cache: config: NULL");
    if (cfg->n_layers < 1) return alrd_errf(err, "kv_cache: n_layers: %d (>= 1 expected)", cfg->n_layers);
    if (!cfg->dk || !cfg->dv || !cfg->k_bits || !cfg->v_bits)
        return alrd_errf(err, "kv_cache: dk/dv/k_bits/v_bits: NULL array");
    if (cfg->group_size < 1)
        return alrd_errf(err, "kv_cache: group_size: %d (>= 1 expected)", cfg->group_size);
    if (cfg->residual_length < 0 || cfg->residual_length % cfg->group_size != 0)
        return alrd_errf(err, "kv_cache: residual_length: %d (a multiple of group_size %d expected)",
                         cfg->residual_length, cfg->group_size);
    if (cfg->use_kivi && cfg->residual_length < cfg->group_size)
        return alrd_errf(err, "kv_cache: residual_length: %d (KIVI keys need R >= group_size %d)",
                         cfg->residual_length, cfg->group_size);
    if (cfg->max_ctx < 1) return alrd_errf(err, "kv_cache: max_ctx: %d (>= 1 expected)", cfg->max_ctx);
    if (cfg->sink_tokens < 0 || cfg->sink_tokens > cfg->max_ctx)
        return alrd_errf(err, "kv_cache: sink_tokens: %d (0 to max_ctx %d expected)", cfg->sink_tokens, cfg->max_ctx);
    for (int l = 0; l < cfg->n_layers; l++) {
        if (cfg->dk[l] < 1 || cfg->dv[l] < 1)
            return alrd_errf(err, "kv_cache: layer %d: dk=%d dv=%d (>= 1 expected)", l, cfg->dk[l],
                             cfg->dv[l]);
        if (!alrd_kivi_bits_ok(cfg->k_bits[l]) || !alrd_kivi_bits_ok(cfg->v_bits[l]))
            return alrd_errf(err, "kv_cache: layer %d: k_bits=%d v_bits=%d (2, 3, 4, 8 or 16 expected)",
                             l, cfg->k_bits[l], cfg->v_bits[l]);
    }
    return 0;
}

/* calloc of a*b*elem bytes, NULL on overflow or failure. */
static void *calloc3(size_t a, size_t b, size_t elem) {
    size_t n;
    if (alrd_mul_ok(a, b, &n) || alrd_mul_ok(n, elem, &n)) return NULL;
    return n ? calloc(1, n) : NULL;
}

void alrd_kv_cache_free(alrd_kv_cache *c) {
    if (!c) return;
    for (int l = 0; c->layers && l < c->n_layers; l++) {
        kv_layer *y = &c->layers[l];
        free(y->kf); free(y->vf);
        free(y->k_codes); free(y->k_scales); free(y->k_zeros);
        free(y->v_codes); free(y->v_scales); free(y->v_zeros);
    }
    free(c->layers);
    free(c);
}

int alrd_kv_cache_create(alrd_kv_cache **out, const alrd_kv_cache_config *cfg, alrd_error *err) {
    if (!out) return alrd_errf(err, "kv_cache: out: NULL");
    *out = NULL;
    if (alrd_kv_cache_config_check(cfg, err)) return -1;
    alrd_kv_cache *c = calloc(1, sizeof *c);
    if (!c) return alrd_errf(err, "kv_cache: out of memory");
    c->n_layers = cfg->n_layers;
    c->G = cfg->group_size;
    c->R = cfg->residual_length;
    c->use_kivi = cfg->use_kivi ? 1 : 0;
    c->max_ctx = cfg->max_ctx;
    c->S = cfg->sink_tokens;
    c->layers = calloc((size_t)c->n_layers, sizeof *c->layers);
    if (!c->layers) goto oom;
    size_t ctx = (size_t)c->max_ctx;
    for (int l = 0; l < c->n_layers; l++) {
        kv_layer *y = &c->layers[l];
        y->dk = cfg->dk[l];
        y->dv = cfg->dv[l];
        y->kb = cfg->k_bits[l];
        y->vb = cfg->v_bits[l];
        y->kf = calloc3(ctx, (size_t)y->dk, sizeof(float));
        y->vf = calloc3(ctx, (size_t)y->dv, sizeof(float));
        if (!y->kf || !y->vf) goto oom;
        if (y->kb != 16) {
            size_t units;
            if (c->use_kivi) { /* chunks of R tokens, per-channel layout */
                units = ctx / (size_t)c->R;
                y->k_unit_words = (size_t)y->dk * alrd_kivi_run_words((size_t)c->R, y->kb);
                y->k_unit_groups = (size_t)y->dk * alrd_kivi_n_groups((size_t)c->R, c->G);
            } else {
                units = ctx;
                y->k_unit_words = alrd_kivi_run_words((size_t)y->dk, y->kb);
                y->k_unit_groups = alrd_kivi_n_groups((size_t)y->dk, c->G);
            }
            if (units > 0) { /* max_ctx < R: keys never fill a chunk */
                y->k_codes = calloc3(units, y->k_unit_words, sizeof(uint32_t));
                y->k_scales = calloc3(units, y->k_unit_groups, sizeof(uint16_t));
                y->k_zeros = calloc3(units, y->k_unit_groups, sizeof(uint16_t));
                if (!y->k_codes || !y->k_scales || !y->k_zeros) goto oom;
            }
        }
        if (y->vb != 16) {
            y->v_unit_words = alrd_kivi_run_words((size_t)y->dv, y->vb);
            y->v_unit_groups = alrd_kivi_n_groups((size_t)y->dv, c->G);
            y->v_codes = calloc3(ctx, y->v_unit_words, sizeof(uint32_t));
            y->v_scales = calloc3(ctx, y->v_unit_groups, sizeof(uint16_t));
            y->v_zeros = calloc3(ctx, y->v_unit_groups, sizeof(uint16_t));
            if (!y->v_codes || !y->v_scales || !y->v_zeros) goto oom;
        }
    }
    *out = c;
    return 0;
oom:
    alrd_kv_cache_free(c);
    return alrd_errf(err, "kv_cache: out of memory for max_ctx %d", cfg->max_ctx);
}

void alrd_kv_cache_reset(alrd_kv_cache *c) {
    if (!c) return;
    for (int l = 0; l < c->n_layers; l++) c->layers[l].n = c->layers[l].kq = c->layers[l].vq = 0;
}

/* Quantises `count` tokens starting at token t0 of one side into units
 * starting at `unit`, then overwrites the mirror rows with their decoded
 * values, so the mirror is exactly what a reader of the packed data sees.
 * per_channel: one unit of `count` tokens in the per-channel layout; else
 * one unit per token. Arguments were validated at create. */
static void quantize_rows(float *mirror, int d, int bits, int G, int per_channel, int t0,
                          int count, size_t unit, uint32_t *codes, uint16_t *scales,
                          uint16_t *zeros, size_t unit_words, size_t unit_groups) {
    if (bits == 16) return; /* passthrough: the mirror is the cache */
    float *x = mirror + (size_t)t0 * (size_t)d;
    uint32_t *cw = codes + unit * unit_words;
    uint16_t *sc = scales + unit * unit_groups, *zr = zeros + unit * unit_groups;
    if (per_channel) {
        alrd_kivi_quantize_per_channel(x, count, d, G, bits, cw, sc, zr, NULL);
        alrd_kivi_dequantize_per_channel(cw, sc, zr, count, d, G, bits, x, NULL);
    } else {
        alrd_kivi_quantize_per_token(x, count, d, G, bits, cw, sc, zr, NULL);
        alrd_kivi_dequantize_per_token(cw, sc, zr, count, d, G, bits, x, NULL);
    }
}

/* The layer's sink tokens now: the first min(n, S). */
static int sinks(const alrd_kv_cache *c, const kv_layer *y) { return y->n < c->S ? y->n : c->S; }

/* Moves tokens from the residuals into the quantised parts per the rules,
 * which start after the sinks. */
static void settle(const alrd_kv_cache *c, kv_layer *y) {
    int R = c->R, S = c->S, s = sinks(c, y);
    if (y->kq < s) y->kq = s;
    if (y->vq < s) y->vq = s;
    if (c->use_kivi) {
        while (y->n - y->kq >= R) {
            quantize_rows(y->kf, y->dk, y->kb, c->G, 1, y->kq, R, (size_t)((y->kq - S) / R), y->k_codes,
                          y->k_scales, y->k_zeros, y->k_unit_words, y->k_unit_groups);
            y->kq += R;
        }
    } else if (y->n - y->kq > R) {
        int m = y->n - R - y->kq;
        quantize_rows(y->kf, y->dk, y->kb, c->G, 0, y->kq, m, (size_t)y->kq, y->k_codes,
                      y->k_scales, y->k_zeros, y->k_unit_words, y->k_unit_groups);
        y->kq += m;
    }
    if (y->n - y->vq > R) {
        int m = y->n - R - y->vq;
        quantize_rows(y->vf, y->dv, y->vb, c->G, 0, y->vq, m, (size_t)y->vq, y->v_codes,
                      y->v_scales, y->v_zeros, y->v_unit_words, y->v_unit_groups);
        y->vq += m;
    }
}

int alrd_kv_cache_prefill(alrd_kv_cache *c, int layer, const float *K, const float *V, int L,
                          alrd_error *err) {
    if (!c || layer < 0 || layer >= c->n_layers)
        return alrd_errf(err, "kv_cache: layer: %d out of range", layer);
    kv_layer *y = &c->layers[layer];
    if (L < 0 || (L > 0 && (!K || !V)))
        return alrd_errf(err, "kv_cache: layer %d: L=%d (L >= 0 and K, V non-NULL expected)",
                         layer, L);
    if (L > c->max_ctx - y->n)
        return alrd_errf(err, "kv_cache: layer %d: %d + %d tokens exceed max_ctx %d", layer, y->n,
                         L, c->max_ctx);
    if (L == 0) return 0;
    memcpy(y->kf + (size_t)y->n * (size_t)y->dk, K, (size_t)L * (size_t)y->dk * sizeof(float));
    memcpy(y->vf + (size_t)y->n * (size_t)y->dv, V, (size_t)L * (size_t)y->dv * sizeof(float));
    y->n += L;
    settle(c, y);
    return 0;
}

int alrd_kv_cache_append(alrd_kv_cache *c, int layer, const float *k, const float *v,
                         alrd_error *err) {
    return alrd_kv_cache_prefill(c, layer, k, v, 1, err);
}

static const kv_layer *get_layer(const alrd_kv_cache *c, int layer) {
    return c && layer >= 0 && layer < c->n_layers ? &c->layers[layer] : NULL;
}

int alrd_kv_cache_n_tokens(const alrd_kv_cache *c, int layer) {
    const kv_layer *y = get_layer(c, layer);
    return y ? y->n : -1;
}

const float *alrd_kv_cache_keys_data(const alrd_kv_cache *c, int layer) {
    const kv_layer *y = get_layer(c, layer);
    return y ? y->kf : NULL;
}

const float *alrd_kv_cache_values_data(const alrd_kv_cache *c, int layer) {
    const kv_layer *y = get_layer(c, layer);
    return y ? y->vf : NULL;
}

int alrd_kv_cache_keys(const alrd_kv_cache *c, int layer, float *out) {
    const kv_layer *y = get_layer(c, layer);
    if (!y) return -1;
    memcpy(out, y->kf, (size_t)y->n * (size_t)y->dk * sizeof(float));
    return y->n;
}

int alrd_kv_cache_values(const alrd_kv_cache *c, int layer, float *out) {
    const kv_layer *y = get_layer(c, layer);
    if (!y) return -1;
    memcpy(out, y->vf, (size_t)y->n * (size_t)y->dv * sizeof(float));
    return y->n;
}

int alrd_kv_cache_counts(const alrd_kv_cache *c, int layer, alrd_kv_counts *out) {
    const kv_layer *y = get_layer(c, layer);
    if (!y) return -1;
    const int s = sinks(c, y);
    out->n_tokens = y->n;
    out->sink = s;
    out->k_quantized = y->kq - s;
    out->k_residual = y->n - y->kq;
    out->v_quantized = y->vq - s;
    out->v_residual = y->n - y->vq;
    return 0;
}

int alrd_kv_cache_layer_view(const alrd_kv_cache *c, int layer, alrd_kv_layer_view *out) {
    const kv_layer *y = get_layer(c, layer);
    if (!y) return -1;
    memset(out, 0, sizeof *out);
    out->dk = y->dk;
    out->dv = y->dv;
    out->k_bits = y->kb;
    out->v_bits = y->vb;
    out->k_per_channel = c->use_kivi;
    out->k_unit_tokens = c->use_kivi ? c->R : 1;
    const int s = sinks(c, y);
    out->sink = s;
    out->k_units = c->use_kivi ? (y->kq - s) / c->R : y->kq;
    out->k_unit_words = y->k_unit_words;
    out->k_unit_groups = y->k_unit_groups;
    out->k_codes = y->k_codes;
    out->k_scales = y->k_scales;
    out->k_zeros = y->k_zeros;
    out->v_units = y->vq;
    out->v_unit_words = y->v_unit_words;
    out->v_unit_groups = y->v_unit_groups;
    out->v_codes = y->v_codes;
    out->v_scales = y->v_scales;
    out->v_zeros = y->v_zeros;
    return 0;
}

/* Bytes of one side holding nq quantised and nr residual tokens. */
static size_t side_bytes(int d, int bits, int G, int per_channel_chunk, int nq, int nr) {
    if (bits == 16) return 2 * (size_t)d * (size_t)(nq + nr);
    size_t q = per_channel_chunk
                   ? (size_t)(nq / per_channel_chunk) *
                         alrd_kivi_bytes_per_channel((size_t)per_channel_chunk, (size_t)d, G, bits)
                   : alrd_kivi_bytes_per_token((size_t)nq, (size_t)d, G, bits);
    return q + 2 * (size_t)d * (size_t)nr;
}

size_t alrd_kv_cache_layer_bytes(int dk, int dv, int k_bits, int v_bits, int G, int R,
                                 int use_kivi, int n) {
    if (dk < 1 || dv < 1 || G < 1 || R < 0 || R % G || n < 0 || (use_kivi && R < G) ||
        !alrd_kivi_bits_ok(k_bits) || !alrd_kivi_bits_ok(v_bits))
        return 0;
    int vq = n > R ? n - R : 0;
    int kq = use_kivi ? n - n % R : vq;
    return side_bytes(dk, k_bits, G, use_kivi ? R : 0, kq, n - kq) +
           side_bytes(dv, v_bits, G, 0, vq, n - vq);
}

double alrd_kv_cache_bytes_per_token(int dk, int dv, int k_bits, int v_bits, int G, int R,
                                     int use_kivi, int ctx) {
    if (ctx < 1) return 0.0;
    return (double)alrd_kv_cache_layer_bytes(dk, dv, k_bits, v_bits, G, R, use_kivi, ctx) /
           (double)ctx;
}

size_t alrd_kv_cache_bytes(const alrd_kv_cache *c) {
    if (!c) return 0;
    size_t total = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const kv_layer *y = &c->layers[l];
        const int s = sinks(c, y); /* the rules on the tokens after the sinks, which count as fp16 */
        total += alrd_kv_cache_layer_bytes(y->dk, y->dv, y->kb, y->vb, c->G, c->R, c->use_kivi, y->n - s) +
                 2 * (size_t)s * (size_t)(y->dk + y->dv);
    }
    return total;
}
