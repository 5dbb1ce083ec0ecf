/* kv_cache: the mixed latent KV cache of one sequence (docs/design.md 5.4): per
 * layer, a quantised part (packed KIVI codes, kernels/kivi.h) and a
 * full-precision residual window of the most recent tokens.
 *
 * Each layer caches key vectors of width dk[l] and value vectors of width
 * dv[l] (latent widths n_groups*rank, or n_kv*head_dim for a layer that is
 * not decomposed), with its own bits for K and V (16 = not quantised).
 * G = group size, R = residual length, R % G == 0.
 *
 * Which tokens are quantised (n = tokens cached in the layer):
 *   use_kivi = 1  keys per channel, in chunks of R tokens: tokens
 *                 [0, n - n%R) are quantised (chunk j = tokens [jR, jR+R)),
 *                 the last n%R are full precision;
 *                 values per token: tokens [0, max(0, n-R)) are quantised,
 *                 the last min(n, R) are full precision.
 *   use_kivi = 0  keys follow the values' rule (per token, last R full).
 * Attention sinks (sink_tokens = S > 0): the first S tokens of a sequence are
 * never quantised; the rules above then apply to the tokens after them, as
 * if the sequence started at token S (key chunks are [S + jR, S + (j+1)R)).
 * Appending tokens (prefill or decode) moves tokens from the residual into the
 * quantised part exactly when these rules say so. On an empty layer,
 * prefill(L) and then one append per decode step are exactly docs/design.md 5.4:
 *   prefill:  keys quantise the first L - L%R tokens in chunks of R, values
 *             all but the last R;
 *   decode:   when the key residual reaches R it is quantised as one chunk
 *             and emptied; when the value residual exceeds R its oldest token
 *             is quantised.
 * (During prefill the attention itself uses the full-precision K/V it has in
 * hand; the cache is what later decode steps see.)
 *
 * Storage per layer, allocated once at create for max_ctx tokens:
 *   a float mirror [max_ctx][d]: rows of quantised tokens hold their exactly
 *     dequantised values (updated once, when a token is quantised), residual
 *     rows hold the inputs bit for bit. Attention reads this (keys_data /
 *     values_data), so a decode step costs no dequantisation;
 *   the packed layout (what a GPU kernel reads, and what bytes() counts):
 *     keys, use_kivi = 1: one unit per chunk of R tokens, in kivi's per-channel
 *       layout for a [R][dk] block: words [dk][ceil(R/cpw)] (channel-major:
 *       run c holds channel c's R codes, token order), scales and zeros
 *       [dk][R/G]; unit j at codes + j*dk*ceil(R/cpw), scales + j*dk*(R/G).
 *     keys, use_kivi = 0, and values: one unit per token, kivi's per-token
 *       layout: words [ceil(d/cpw)], scales/zeros [ceil(d/G)] (the last group
 *       shorter when G does not divide d); token t at codes + t*ceil(d/cpw).
 *   bits 16: no packed data; the mirror is the cache (an fp16 cache in
 *     bytes()).
 * Bytes: codes + 2-byte scales + 2-byte zeros of the quantised part, plus 2
 * bytes per element of the residual and of the sinks (counted as fp16, docs/design.md 6) -- every
 * element 2 bytes when bits are 16.
 *
 * Nothing is allocated after create. Not thread safe per cache; a batch of
 * independent sequences is an array of caches. */
#ifndef ALRD_KV_CACHE_H
#define ALRD_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>
#include "../formats/io.h"

typedef struct {
    int n_layers;
    const int *dk, *dv;         /* [n_layers] cached widths, >= 1 (copied) */
    const int *k_bits, *v_bits; /* [n_layers] 2, 3, 4, 8 or 16 (copied) */
    int group_size;             /* G >= 1 */
    int residual_length;        /* R, R % G == 0; R >= G when use_kivi (R = 0 allowed otherwise) */
    int use_kivi;               /* 0: plain per-token quantisation of both caches */
    int max_ctx;                /* capacity in tokens, >= 1 */
    int sink_tokens;            /* S, 0 <= S <= max_ctx: tokens kept unquantised at the start (0: none) */
} alrd_kv_cache_config;

typedef struct alrd_kv_cache alrd_kv_cache;

/* Checks cfg (each problem named: "kv_cache: FIELD: ..."). */
int alrd_kv_cache_config_check(const alrd_kv_cache_config *cfg, alrd_error *err);

/* Allocates a cache for max_ctx tokens per layer. *out is owned by the
 * caller and released with alrd_kv_cache_free. */
int alrd_kv_cache_create(alrd_kv_cache **out, const alrd_kv_cache_config *cfg, alrd_error *err);
void alrd_kv_cache_free(alrd_kv_cache *c);
/* Empties every layer (a new sequence); keeps the allocation. */
void alrd_kv_cache_reset(alrd_kv_cache *c);

/* Appends L tokens to a layer: K [L][dk], V [L][dv]; then quantises as the
 * rules above say. Fails, changing nothing, when the layer would exceed
 * max_ctx or the arguments are bad. */
int alrd_kv_cache_prefill(alrd_kv_cache *c, int layer, const float *K, const float *V, int L,
                          alrd_error *err);
/* One decode step: the same as prefill with L = 1. */
int alrd_kv_cache_append(alrd_kv_cache *c, int layer, const float *k, const float *v,
                         alrd_error *err);

/* Tokens cached in a layer (-1 for a bad layer). */
int alrd_kv_cache_n_tokens(const alrd_kv_cache *c, int layer);

/* The layer's keys [n][dk] / values [n][dv]: the dequantised quantised part
 * followed by the full-precision residual, in token order. The pointer stays
 * valid until free; its contents change with append/prefill/reset. NULL for
 * a bad layer. */
const float *alrd_kv_cache_keys_data(const alrd_kv_cache *c, int layer);
const float *alrd_kv_cache_values_data(const alrd_kv_cache *c, int layer);
/* The same copied into out; return n (or -1 for a bad layer). */
int alrd_kv_cache_keys(const alrd_kv_cache *c, int layer, float *out);
int alrd_kv_cache_values(const alrd_kv_cache *c, int layer, float *out);

/* Introspection (tests, reports). */
typedef struct {
    int n_tokens;
    int sink;                    /* unquantised sink tokens at the start */
    int k_quantized, k_residual; /* sink + k_quantized + k_residual == n_tokens */
    int v_quantized, v_residual;
} alrd_kv_counts;
int alrd_kv_cache_counts(const alrd_kv_cache *c, int layer, alrd_kv_counts *out);

/* The packed quantised part of a layer (see the layout above); pointers are
 * NULL when that side's bits are 16. Codes of unit u start at
 * codes + u*unit_words, its scales and zeros at + u*unit_groups. */
typedef struct {
    int dk, dv, k_bits, v_bits;
    int k_per_channel;          /* 1: key units are chunks of R tokens */
    int k_unit_tokens;          /* R when k_per_channel, else 1 */
    int sink;                   /* sink tokens; per-token units below it are unused */
    int k_units;                /* units holding quantised keys (per token: the end, sinks included) */
    size_t k_unit_words, k_unit_groups;
    const uint32_t *k_codes;
    const uint16_t *k_scales, *k_zeros;
    int v_units;                /* quantised value tokens, unit u = token u (the end, sinks included) */
    size_t v_unit_words, v_unit_groups;
    const uint32_t *v_codes;
    const uint16_t *v_scales, *v_zeros;
} alrd_kv_layer_view;
int alrd_kv_cache_layer_view(const alrd_kv_cache *c, int layer, alrd_kv_layer_view *out);

/* Exact bytes of the cache now: sum over layers of codes + scales + zeros of
 * the quantised part + fp16 residual and sinks. */
size_t alrd_kv_cache_bytes(const alrd_kv_cache *c);

/* Exact bytes of one layer holding n tokens (the same layout and rules);
 * alrd_kv_cache_bytes is the sum over layers of this at n - s tokens plus the
 * s sinks' fp16 rows, 2 * s * (dk + dv). 0 for bad arguments. */
size_t alrd_kv_cache_layer_bytes(int dk, int dv, int k_bits, int v_bits, int G, int R,
                                 int use_kivi, int n);
/* Bytes per token of one layer at context ctx: layer_bytes(.., ctx) / ctx,
 * i.e. the residual window amortised over ctx tokens. Compare with
 * 2*(dk+dv) for an fp16 cache of the same widths. */
double alrd_kv_cache_bytes_per_token(int dk, int dv, int k_bits, int v_bits, int G, int R,
                                     int use_kivi, int ctx);

#endif
