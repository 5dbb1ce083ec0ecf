/* compress: the calibration pipeline of alrd-compress (DESIGN 5.1-5.3) on a
 * loaded model. Collects each layer's Gram matrix of the k/v input over the
 * calibration tokens, factors every K and V projection per head group with
 * a whitened (or plain) SVD, measures each module's sensitivity on
 * calibration tokens, allocates ranks under the budget, and returns the
 * factors with a report. No file I/O: the tool reads and writes files. */
#ifndef ALRD_COMPRESS_H
#define ALRD_COMPRESS_H

#include <stddef.h>
#include <stdint.h>
#include "../formats/io.h"
#include "../runtime/model.h"

typedef struct {
    int whiten;            /* 1: activation-aware SVD; 0: plain SVD (ablation) */
    int group_heads;       /* KV heads sharing one latent; 0 = all KV heads of a layer */
    double rank_ratio;     /* average kept fraction of all K and V dims */
    int uniform;           /* 1: the same ratio in every module (ablation) */
    const int *k_rank;     /* fixed ranks per layer (ranks.json), or NULL to search */
    const int *v_rank;
    int probe_tokens;      /* tokens used to measure sensitivities (default 512) */
    int progress;          /* progress lines on stderr */
} alrd_compress_opts;

void alrd_compress_opts_default(alrd_compress_opts *o);

typedef struct {
    char name[96];         /* "model.layers.N.self_attn.k_proj" */
    int layer, is_v;
    int rank, full;        /* per-group rank, full rank g*head_dim */
    double kept_energy;    /* 1 - tail/total (whitened when whitening) */
    double rel_error;      /* sqrt(tail/total) */
    double sensitivity;    /* w_m: measured KL per unit of dropped sigma^2 */
    double probe_kl;       /* KL measured with this module alone truncated at the probe rank */
    int probe_rank;
    double predicted;      /* w_m * tail(rank) */
} alrd_module_report;

typedef struct {
    int n_layers, group_heads, n_groups, head_dim, hidden;
    int *k_rank, *v_rank;  /* [n_layers] chosen per-group ranks */
    float **kA, **kB, **vA, **vB; /* [n_layers]: A [n_groups][g*hd][r], B [n_groups][r][hidden] */
    int n_modules;
    alrd_module_report *modules;
    size_t calib_tokens;
    double predicted_kl;   /* sum of module predictions */
    double measured_kl;    /* KL(uncompressed || compressed) on the probe tokens */
    double base_ce, compressed_ce; /* next-token cross-entropy on the probe tokens */
    double t_stats, t_svd, t_sens, t_total;
    int n_clamped;         /* eigenvalues raised to the floor, all layers */
} alrd_compress_result;

/* tokens: n_samples sequences of sample_len tokens each (row-major). The
 * model's K/V weights are swapped temporarily during probing and restored. */
int alrd_compress_run(alrd_model *m, const int32_t *tokens, int n_samples, int sample_len,
                      const alrd_compress_opts *o, alrd_compress_result *r, alrd_error *err);
void alrd_compress_result_free(alrd_compress_result *r);

#endif
