/* ranks: rank (and bit) allocation under a budget (docs/design.md 5.3), and the
 * ranks.json file of the seed's interface.
 *
 * A module m is one layer's K or V projection. Its tail table gives the
 * predicted output loss of keeping r latent dims, tail[r] = sum_{i>=r}
 * sigma_{m,i}^2 (summed over the head groups when each group has its own
 * latent of rank r), for r = 0..max_rank; it is non-increasing. Modules are
 * conventionally ordered layer 0 K, layer 0 V, layer 1 K, ... */
#ifndef ALRD_RANKS_H
#define ALRD_RANKS_H

#include "../formats/io.h"

typedef struct {
    const double *tail; /* [max_rank + 1], not owned */
    int max_rank;       /* full rank, g * head_dim */
    double weight;      /* w_m: sensitivity (loss per unit of dropped sigma^2), >= 0 */
} alrd_rank_module;

/* Greedy allocation of kept dims under the budget floor(ratio * sum max_rank):
 * every module starts at min(step, max_rank) (rank 0 would mean "not
 * decomposed"), then step dims at a time (or up to max_rank) go to the module
 * with the largest weight * (tail[r] - tail[r']) per added dim, ties to the
 * lower index, while they fit. The total never exceeds the budget. Ranks are
 * multiples of step or equal to max_rank. Errors if even the minimum ranks
 * exceed the budget. */
int alrd_ranks_allocate(const alrd_rank_module *m, int n, double ratio, int step, int *ranks,
                        alrd_error *err);

/* The ablation: every module keeps ratio * max_rank rounded to the nearest
 * multiple of step, clamped to [min(step, max_rank), max_rank]. */
int alrd_ranks_uniform(const alrd_rank_module *m, int n, double ratio, int step, int *ranks,
                       alrd_error *err);

/* Sum of weight * tail[rank] over the modules: the predicted loss. */
double alrd_ranks_predicted(const alrd_rank_module *m, int n, const int *ranks);

/* Joint rank + bits allocation under a byte budget per token.
 * qerr(ctx, m, r, b): predicted quantisation loss of module m's cache at rank
 * r and b bits (same units as tail; 0 for 16 bits). bytes(ctx, m, r, b): the
 * module's KV bytes per token at (r, b) from the real layout (codes, scales,
 * zeros, amortised residual). Predicted loss of a choice: weight *
 * (tail[r] + qerr). Start: every module at rank min(step, max_rank) and the
 * smallest bits option; then repeatedly take the upgrade (any higher rank on
 * the step grid and/or any higher bits option) with the largest predicted-loss
 * reduction per added byte that fits in the remaining budget (ties: lower
 * module, then smaller rank, then fewer bits) until none reduces the loss.
 * bits_opts: ascending list, e.g. {2, 3, 4, 8, 16}. */
typedef double (*alrd_qerr_fn)(void *ctx, int module, int rank, int bits);
typedef double (*alrd_bytes_fn)(void *ctx, int module, int rank, int bits);
int alrd_ranks_allocate_bits(const alrd_rank_module *m, int n, int step, const int *bits_opts,
                             int n_bits_opts, double budget_bytes, alrd_qerr_fn qerr,
                             alrd_bytes_fn bytes, void *ctx, int *ranks, int *bits,
                             alrd_error *err);

/* ranks.json: {"model.layers.0.self_attn.k_proj": 96, "model.layers.0.self_attn.v_proj": 64, ...}
 * Formats ranks of n_layers layers (K then V per layer, layer order; a 0 rank
 * is left out) as a malloc'd string; the same ranks give the same bytes. */
char *alrd_ranks_json_format(int n_layers, const int *k_rank, const int *v_rank);
/* Writes that string (plus a newline) atomically to path. */
int alrd_ranks_json_write(const char *path, int n_layers, const int *k_rank, const int *v_rank,
                          alrd_error *err);
/* Reads path: every key must be model.layers.N.self_attn.{k,v}_proj with
 * 0 <= N < n_layers, once; every value an integer 1..full_dim that is a
 * multiple of 8 or equal to full_dim. Modules the file leaves out get 0 (not
 * decomposed). Errors name the file and the key. */
int alrd_ranks_json_read(const char *path, int n_layers, int full_dim, int *k_rank, int *v_rank,
                         alrd_error *err);
/* The same on a JSON string; path is only used in messages. */
int alrd_ranks_json_parse(const char *json, const char *path, int n_layers, int full_dim,
                          int *k_rank, int *v_rank, alrd_error *err);

#endif
