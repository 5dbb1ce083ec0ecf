/* qerr: the predicted output loss of KIVI-quantising a module's cache
 * (docs/design.md 5.3, 5.4), measured on the calibration probe tokens, and the joint
 * rank + bits allocation under a KV byte budget built on it.
 *
 * Module m = 2*layer + (0 K, 1 V). For rank r > 0 (decomposed; factors
 * exactly as alrd_decomp_factors gives them, Hadamard-rotated on request)
 * the cached latent of a probe token is l = B_r x with x = RMSNorm(h) of the
 * layer input h (alrd_calib_probe_inputs, the layer's input_layernorm and
 * rms_eps); the quantised latent l^ is what kernels/kivi.h's quantise +
 * dequantise gives with the KIVI grouping the cache uses:
 *   keys (use_kivi)  per channel, groups of G consecutive tokens of one probe
 *                    sequence (the cache's chunks of R are made of such groups);
 *   values (and keys without use_kivi)  per token, groups of G consecutive
 *                    channels of the whole cached vector [n_groups * r] (the
 *                    last group shorter when G does not divide it).
 * Every probe token is quantised (the residual window is ignored here; see
 * alrd_qerr_quantized_fraction to account for it). The loss is
 *     qerr(m, r, b) = (calib_rows / probe_rows) * sum_t ||A_r (l_t - l^_t)||^2
 * with A_r block-diagonal over the head groups: the same units as the tail
 * tables of alrd_decomp (sums over the calibration Gram rows). With a
 * whitened decomposition the quantisation error lies in the span of A_r and
 * the truncation error outside it, so the two losses add exactly per token.
 * Rank 0 is the module not decomposed: l = W x (+ bias), A = I.
 * bits 16 gives 0. Accumulation in fp64. */
#ifndef ALRD_QERR_H
#define ALRD_QERR_H

#include <stddef.h>
#include <stdint.h>
#include "../formats/io.h"
#include "compress.h"

typedef struct {
    int group_size;      /* KIVI G >= 1 */
    int use_kivi;        /* 1: keys per channel; 0: keys per token as values */
    int hadamard;        /* latents rotated as alrd_decomp_factors(hadamard = 1, seed) */
    uint64_t seed;
    int step;            /* rank grid: step, 2*step, ..., and the full rank (>= 1) */
    const int *bits;     /* bits options, each 2, 3, 4, 8 or 16 */
    int n_bits;
    int progress;        /* progress on stderr when a TTY */
} alrd_qerr_opts;

typedef struct alrd_qerr alrd_qerr;

/* Tables over every module, rank 0 and every rank of the grid (when d is
 * given; d NULL: rank 0 only), and every bits option. c is the calibration
 * (for d given, alrd_decomp_calib(d) must be c). The model's K/V weights are
 * read, never changed. */
int alrd_qerr_new(alrd_qerr **out, alrd_calib *c, const alrd_decomp *d, const alrd_qerr_opts *o,
                  alrd_error *err);
void alrd_qerr_free(alrd_qerr *q);

/* The table value; NaN when (rank, bits) is not in the tables. */
double alrd_qerr_get(const alrd_qerr *q, int module, int rank, int bits);
/* calib_rows / probe_rows, the factor applied to the probe sums. */
double alrd_qerr_scale(const alrd_qerr *q);
double alrd_qerr_seconds(const alrd_qerr *q);

/* The loss sum_t ||A (l_t - l^_t)||^2 (unscaled) for given latents, the core
 * of the tables: lat [n_seq*seq_len][n_groups*r] in token order, A
 * [n_groups][rows][r] (NULL: identity, rows = r), per_channel selects the
 * key layout (groups of G tokens within each sequence) over the per-token
 * one. Scratch is allocated here. */
int alrd_qerr_latent_loss(const float *lat, int n_seq, int seq_len, int n_groups, int r,
                          const float *A, int rows, int G, int bits, int per_channel, double *loss,
                          alrd_error *err);

/* Mean over cache sizes n in [n0, n1] of (tokens of n that the cache holds
 * quantised) / n, with the rules of runtime/kv_cache.h (keys with use_kivi:
 * n - n % R; values, and keys without use_kivi: max(0, n - R)). Multiplying
 * qerr by it accounts for the full-precision residual window: scoring the
 * second half of ctx-token chunks sees n = ctx/2 + 1 .. ctx - 1. */
double alrd_qerr_quantized_fraction(int is_v, int R, int use_kivi, int n0, int n1);

/* KV bytes per token of one module at (rank, bits) from the real layout
 * (runtime/kv_cache.h) amortised at ctx: rank 0 = full width n_kv*head_dim,
 * else n_groups*rank. The two modules of a layer add up to
 * alrd_kv_cache_bytes_per_token of the layer. */
double alrd_qerr_module_bytes(int is_v, int width, int bits, int G, int R, int use_kivi, int ctx);

/* The prediction for per-layer ranks (0: not decomposed) and bits, with
 * d's sensitivities w_m, for a cache whose scored positions see the
 * fractions frac_k, frac_v of it quantised (alrd_qerr_quantized_fraction):
 *   *trunc = sum over decomposed modules of w_m tail_m[r_m],
 *   *quant = sum over modules of w_m frac qerr_m(r_m, b_m).
 * Fails when a (rank, bits) is not in q's tables. */
int alrd_qerr_predict(const alrd_qerr *q, const alrd_decomp *d, const int *k_rank, const int *v_rank,
                      const int *k_bits, const int *v_bits, double frac_k, double frac_v, double *trunc,
                      double *quant, alrd_error *err);

/* ---- joint rank + bits allocation (alrd_ranks_allocate_bits) ----------- */

typedef struct {
    double budget_bytes; /* KV bytes per token, all layers, K + V */
    int ctx;             /* context the residual window is amortised over (bytes) */
    int group_size, residual, use_kivi;
    int step;            /* rank grid (must be on q's grid) */
    const int *bits;     /* ascending bits options, each in q's tables */
    int n_bits;
    double frac_k, frac_v; /* factors on qerr (alrd_qerr_quantized_fraction; 1 = ignore the residual) */
} alrd_joint_opts;

/* The options for a budget of budget_bits KV bits per token and a cache of
 * (G, R, use_kivi) with its residual window amortised over ctx tokens: the
 * quantised fractions at that context, ranks on the step grid, bits from
 * bits[n_bits] (alrd-compress and alrd-sweep allocate with these). */
alrd_joint_opts alrd_joint_opts_for(double budget_bits, int ctx, int G, int R, int use_kivi, int step,
                                    const int *bits, int n_bits);

/* Ranks and bits per layer for K and V minimising sum_m w_m * (tail_m[r] +
 * frac * qerr_m(r, b)) with sensitivities w_m from d (measured) under the
 * budget. pred_trunc / pred_quant (may be NULL) get the two sums of the
 * prediction at the choice. */
int alrd_qerr_allocate(const alrd_qerr *q, const alrd_decomp *d, const alrd_joint_opts *o,
                       int *k_rank, int *v_rank, int *k_bits, int *v_bits, double *pred_trunc,
                       double *pred_quant, alrd_error *err);

#endif
