/* compress: the calibration pipeline of alrd-compress and alrd-sweep
 * (docs/design.md 5.1-5.3) on a loaded model, in stages so a sweep reuses the
 * expensive ones:
 *   alrd_calib     one pass over the calibration tokens: each layer's Gram
 *                  matrix of the k/v input, and the uncompressed model's
 *                  outputs on the probe tokens (for sensitivities/measures);
 *   alrd_decomp    whitened (or plain) SVD of every K/V projection per head
 *                  group, and each module's measured sensitivity;
 *   ranks          allocated under the budget from the decomposition;
 *   factors        A, B at those ranks (Hadamard-rotated on request).
 * alrd_compress_stages keeps the shared ones and alrd_compress_config makes
 * one configuration on them: alrd_compress_run for alrd-compress, the same
 * stages over a grid for alrd-sweep. No file I/O: tools read and write
 * files. */
#ifndef ALRD_COMPRESS_H
#define ALRD_COMPRESS_H

#include <stddef.h>
#include <stdint.h>
#include "../formats/alrd_pack.h"
#include "../formats/io.h"
#include "../runtime/model.h"

/* ---- stage 1: calibration statistics ---------------------------------- */

typedef struct alrd_calib alrd_calib;

/* tokens: n_samples sequences of sample_len tokens (row-major). The model is
 * borrowed for the calib's lifetime (CPU probes replace its K/V weights through
 * alrd_model_set_override and always clear them; GPU probes replace them on
 * the device). need_grams = 0 skips the
 * statistics pass (plain SVD needs none).
 * Memory (issue #3): every pass is layer-major (all samples, or blocks of
 * them, through layer l before layer l+1), so a lazily loaded model
 * (ALRD_MODEL_LAZY) materializes each layer once per pass; large SVD bases
 * of alrd_decomp live in an unlinked temporary file ($TMPDIR or /tmp), not
 * in memory (alrd_calib_set_spill).
 * flags: ALRD_CALIB_PROGRESS (progress lines on stderr), ALRD_CALIB_GPU (the
 * statistics pass and the probes -- sensitivities, the truncation measure --
 * run on the GPU when this build and machine have one: calib/calib_gpu, an
 * fp16 engine whose K/V weights the probes replace instead of the model's;
 * so do the whitenings and SVDs of alrd_decomp_new on this calib:
 * calib/wsvd_gpu. The quantised-cache measure, alrd_calib_measure_cache,
 * stays on the CPU). */
enum { ALRD_CALIB_PROGRESS = 1, ALRD_CALIB_GPU = 2 };
int alrd_calib_new(alrd_calib **out, alrd_model *m, const int32_t *tokens, int n_samples,
                   int sample_len, int probe_tokens, int need_grams, int flags, alrd_error *err);
/* 1 when c's statistics pass and probes run on the GPU (calib_gpu.h). */
int alrd_calib_on_gpu(const alrd_calib *c);
void alrd_calib_free(alrd_calib *c);
double alrd_calib_seconds(const alrd_calib *c);
/* Dampens every Gram matrix: C += damp * mean(diag C) * I, so directions the
 * calibration text never excites (e.g. chat control tokens when calibrating
 * on prose) keep some weight in the whitened SVD. Call before decompositions. */
void alrd_calib_dampen(alrd_calib *c, double damp);
/* Lets alrd_decomp_new free each layer's Gram as soon as it is whitened (a
 * later alrd_decomp_new on c then fails): for a single decomposition, so a
 * 7B model does not hold every layer's Gram and the bases at once. */
void alrd_calib_release_grams(alrd_calib *c);
/* SVD bases of a decomposition larger than bytes in all (default 1 GiB; 0:
 * always) are kept in an unlinked temporary file instead of memory. */
void alrd_calib_set_spill(alrd_calib *c, size_t bytes);
/* Next-token cross-entropy of the uncompressed model on the probe tokens. */
double alrd_calib_base_ce(const alrd_calib *c);
int alrd_calib_probe_tokens(const alrd_calib *c);
/* The uncompressed model's hidden states entering layer l on the probe
 * tokens, [*n_rows][hidden] (before the layer's input RMSNorm). */
const float *alrd_calib_probe_inputs(const alrd_calib *c, int layer, int *n_rows);
/* The model the calibration borrows. */
alrd_model *alrd_calib_model(const alrd_calib *c);

/* ---- stage 2: decompositions ------------------------------------------ */

typedef struct alrd_decomp alrd_decomp;
typedef struct alrd_qerr alrd_qerr; /* calib/qerr.h */

/* group_heads 0 = all KV heads of a layer share one latent. */
int alrd_decomp_new(alrd_decomp **out, alrd_calib *c, int whiten, int group_heads, alrd_error *err);
void alrd_decomp_free(alrd_decomp *d);
int alrd_decomp_full_rank(const alrd_decomp *d);  /* g * head_dim */
int alrd_decomp_n_groups(const alrd_decomp *d);
int alrd_decomp_group_heads(const alrd_decomp *d);
/* Module m = 2*layer + (0 for K, 1 for V): summed tail table [full+1]. */
const double *alrd_decomp_tail(const alrd_decomp *d, int m);
double alrd_decomp_total(const alrd_decomp *d, int m);
/* Measures w_m for every module: KL on the probe tokens with that module
 * alone truncated at probe_rank, divided by its dropped sigma^2. */
int alrd_decomp_sensitivities(alrd_decomp *d, int probe_rank, alrd_error *err);
double alrd_decomp_sensitivity(const alrd_decomp *d, int m);
double alrd_decomp_probe_kl(const alrd_decomp *d, int m);
int alrd_decomp_probe_rank(const alrd_decomp *d);
/* 1 when d's whitenings and SVDs ran on the GPU: the calib was made with
 * ALRD_CALIB_GPU and this build and machine have one (calib/wsvd_gpu.h; the
 * CPU path, calib/wsvd.h, otherwise). */
int alrd_decomp_on_gpu(const alrd_decomp *d);

/* Ranks for a kept fraction: greedy on sensitivity-weighted loss (needs
 * alrd_decomp_sensitivities) or uniform. */
int alrd_decomp_ranks(alrd_decomp *d, double ratio, int uniform, int *k_rank, int *v_rank,
                      alrd_error *err);

/* Factors of every layer at the ranks (rank 0: NULL, not decomposed):
 * A [n_groups][g*hd][r], B [n_groups][r][hidden], malloc'd, caller frees.
 * hadamard != 0 folds a seeded rotation of each latent (docs/design.md 5.4). */
int alrd_decomp_factors(const alrd_decomp *d, const int *k_rank, const int *v_rank, int hadamard,
                        uint64_t seed, float **kA, float **kB, float **vA, float **vB,
                        alrd_error *err);

/* KL(uncompressed || truncated) and cross-entropy on the probe tokens with
 * every module truncated at its rank (K/V weights temporarily replaced). */
int alrd_decomp_measure(alrd_decomp *d, const int *k_rank, const int *v_rank, double *kl,
                        double *ce, alrd_error *err);

/* A compressed model's loss on the probe tokens as generation sees it:
 * each probe sequence's first half prefilled, the rest through decode steps
 * over mc's own cache (its per-layer bits, KIVI group and residual; CPU),
 * KL(uncompressed || mc) and top-1 agreement at the positions
 * alrd_perplexity_tokens scores (ctx = the probe's sequence length). The
 * same measure as scoring a written file with alrd_perplexity_tokens
 * against the uncompressed model, run layer-major (alrd_ctx_layer_generate)
 * so a lazy model materializes each layer once. */
typedef struct {
    double kl, kl_stderr, top1;
    size_t n_scored;
    double seconds;
} alrd_cache_measure;
int alrd_calib_measure_cache(alrd_calib *c, const alrd_model *mc, alrd_cache_measure *out, alrd_error *err);

/* ---- one configuration ------------------------------------------------ */

/* A configuration the closed-loop joint allocation considered. */
enum { ALRD_CAND_JOINT = 0, ALRD_CAND_VARIANT = 1, ALRD_CAND_UNIFORM = 2 };
typedef struct {
    char label[64];
    int kind;                /* ALRD_CAND_* */
    double quant_mult;       /* joint and variants: the multiplier on the predicted quantisation loss the
                                allocation ran with (1: the allocation itself) */
    int rank;                /* uniform: every K and V module's per-group rank (0: full width, KIVI alone) */
    int k_bits, v_bits;      /* uniform: every layer's bits */
    double bytes;            /* KV bytes per token, all layers, at the budget's context */
    double pred, pred_trunc; /* predicted KL at the budget's context (total, truncation part) */
    double pred_probe;       /* predicted KL at the probe's context */
    alrd_cache_measure meas; /* measured through the quantised cache on the probe (alrd_calib_measure_cache) */
} alrd_joint_candidate;

#define ALRD_JOINT_MAX_MEASURE 16

/* The joint rank + bits allocation (calib/qerr.h, alrd_qerr_allocate) in
 * place of a rank ratio: per-layer ranks and key/value bits under a KV
 * cache budget. The caller sets the budget and the cache's layout; the run
 * fills in the bits and the predictions.
 * Closed loop (measure > 0): the candidates are the allocation, allocations
 * with the predicted quantisation loss scaled by 1/4, 1/2 and 2 (the
 * predictions are off by several times on real models), and every uniform
 * configuration that fits the budget (one rank of the grid in every module,
 * or full width, times key and value bits 2, 3, 4, 8, 16). The allocation is
 * always measured, then the others in order of predicted KL until `measure`
 * are; the one with the lowest measured KL (ties: fewer bytes) is chosen. */
typedef struct {
    double budget_bits;      /* KV cache bits per token: codes, scales, zeros, residual amortised at ctx */
    int ctx;                 /* context the residual window is amortised over */
    int group_size, residual, use_kivi;
    int step;                /* rank grid step (1 .. g * head_dim) */
    int *k_bits, *v_bits;    /* [n_layers], filled */
    double pred_trunc, pred_quant; /* predicted KL of the allocation at ctx: truncation, quantisation */
    double probe_pred_quant; /* the quantisation part at the probe's context (its residual fraction) */
    double t_qerr;           /* seconds measuring the quantisation losses */
    int measure;             /* closed loop: candidates measured (1..ALRD_JOINT_MAX_MEASURE); 0: open loop */
    int n_candidates;        /* filled: candidates that fit the budget (measured or not) */
    int n_measured;          /* filled: entries of cand, in the order measured */
    alrd_joint_candidate cand[ALRD_JOINT_MAX_MEASURE];
    int chosen;              /* filled: the index in cand of the configuration made; -1: open loop */
    double t_select;         /* seconds measuring candidates */
} alrd_compress_joint;

typedef struct {
    int whiten;            /* 1: activation-aware SVD; 0: plain SVD (ablation) */
    int group_heads;       /* KV heads sharing one latent; 0 = all KV heads of a layer */
    double rank_ratio;     /* average kept fraction of all K and V dims */
    int uniform;           /* 1: the same ratio in every module (ablation) */
    const int *k_rank;     /* fixed ranks per layer (ranks.json; 0 = keep full), or NULL */
    const int *v_rank;
    int probe_tokens;      /* tokens used to measure sensitivities (default 256) */
    double damp;           /* Gram dampening (alrd_calib_dampen), 0 = none */
    int hadamard;          /* fold a rotation into the latents */
    uint64_t seed;
    int progress;          /* progress lines on stderr */
    int cpu_only;          /* statistics and SVDs on the CPU even when a GPU is present */
    alrd_compress_joint *joint; /* non-NULL: ranks and bits by the joint allocation (rank_ratio, uniform and
                                   k_rank unused; needs whiten) */
    int value_only;        /* decompose V only: rank_ratio's budget over the V modules alone, keys keep their
                              full width (needs sensitivities; not with joint or k_rank) */
} alrd_compress_opts;

void alrd_compress_opts_default(alrd_compress_opts *o);

typedef struct {
    char name[96];         /* "model.layers.N.self_attn.k_proj" */
    int layer, is_v;
    int rank, full;        /* per-group rank (0: not decomposed), full rank g*head_dim */
    double kept_energy;    /* 1 - tail/total (whitened when whitening) */
    double rel_error;      /* sqrt(tail/total) */
    double sensitivity;    /* w_m: measured KL per unit of dropped sigma^2 */
    double probe_kl;       /* KL with this module alone truncated at the probe rank */
    int probe_rank;
    double predicted;      /* w_m * tail(rank) */
} alrd_module_report;

typedef struct {
    int n_layers, group_heads, n_groups, head_dim, hidden;
    int *k_rank, *v_rank;  /* [n_layers] chosen per-group ranks */
    float **kA, **kB, **vA, **vB; /* [n_layers]; NULL where the rank is 0 */
    int n_modules;
    alrd_module_report *modules;
    size_t calib_tokens;
    double predicted_kl;   /* sum of module predictions */
    double measured_kl;    /* KL(uncompressed || compressed) on the probe tokens */
    double base_ce, compressed_ce;
    double t_stats, t_svd, t_sens, t_total;
    int stats_on_gpu;      /* the statistics pass ran on the GPU */
    int svd_on_gpu;        /* the whitened SVDs ran on the GPU (calib/wsvd_gpu.h) */
    int32_t *probe_ids;    /* the probe's tokens, probe_n_seq sequences of probe_len (owned): for checking
                              the written file against measured_kl */
    int probe_n_seq, probe_len;
} alrd_compress_result;

/* Sizes r for d's model and allocates its arrays (zeroed). */
int alrd_compress_result_alloc(alrd_compress_result *r, const alrd_decomp *d, size_t calib_tokens,
                               alrd_error *err);
/* Copies c's probe token ids into r (probe_ids, probe_n_seq, probe_len). */
int alrd_compress_keep_probe(alrd_compress_result *r, const alrd_calib *c, alrd_error *err);
/* Fills r->modules from d at r's ranks and sums r->predicted_kl. extra
 * (may be NULL) adds a per-module loss in tail units, e.g. quantisation. */
void alrd_compress_report_modules(alrd_compress_result *r, const alrd_decomp *d, const double *extra);

/* One configuration start to end: alrd_compress_stages_new for o,
 * alrd_compress_config, then the measure on the probe (measured_kl,
 * compressed_ce, base_ce, probe_ids) and the timings. */
int alrd_compress_run(alrd_model *m, const int32_t *tokens, int n_samples, int sample_len,
                      const alrd_compress_opts *o, alrd_compress_result *r, alrd_error *err);
void alrd_compress_result_free(alrd_compress_result *r);

/* ---- the pipeline in stages, for one configuration or a grid ---------- */

/* The stages that alrd_compress_run strings together for one configuration
 * and alrd-sweep shares across a grid: one calibration; per head grouping a
 * decomposition with its sensitivities, and per rotation the quantisation
 * error tables (calib/qerr.h), each made on first use and kept. */
typedef struct alrd_compress_stages alrd_compress_stages;

typedef struct {
    double probe_ratio;       /* the decompositions' sensitivities are measured at
                                 alrd_compress_probe_rank(probe_ratio, full rank); 0: none */
    int qerr_step;            /* rank grid of the error tables (every bits option {2, 3, 4, 8, 16}) */
    int group_size, use_kivi; /* the cache's KIVI layout the error tables quantise with */
    int several;              /* more than one decomposition: keep the Grams (0: each Gram is freed
                                 once its decomposition used it, alrd_calib_release_grams) */
} alrd_compress_stages_opts;

/* The calibration, with o's whiten (statistics), probe_tokens, damp,
 * progress, cpu_only and seed (of the Hadamard rotations). */
int alrd_compress_stages_new(alrd_compress_stages **out, alrd_model *m, const int32_t *tokens, int n_samples,
                             int sample_len, const alrd_compress_opts *o, const alrd_compress_stages_opts *so,
                             alrd_error *err);
void alrd_compress_stages_free(alrd_compress_stages *s);
/* The decomposition of a grouping (group_heads as alrd_decomp_new takes it)
 * and its error tables for hadamard 0/1, made on first use (owned by s). */
alrd_decomp *alrd_compress_stages_decomp(alrd_compress_stages *s, int group_heads, alrd_error *err);
alrd_qerr *alrd_compress_stages_qerr(alrd_compress_stages *s, int group_heads, int hadamard, alrd_error *err);
/* Seconds spent so far in each stage (any pointer may be NULL). */
void alrd_compress_stages_seconds(const alrd_compress_stages *s, double *stats, double *svd, double *sens,
                                  double *qerr);

/* The sensitivities' probe rank for a kept fraction: ratio * full on the
 * 8-grid, at least 8; half the full rank where that reaches full (ratio 1,
 * the joint allocation). */
int alrd_compress_probe_rank(double ratio, int full);

/* One configuration o (its group_heads, hadamard, seed, and ranks: joint,
 * k_rank, value_only, rank_ratio or uniform; whiten and the seed as the
 * stages were made with) on the stages: fills r with
 * its ranks, factors and module reports (and o->joint's bits and
 * predictions); not the probe measure (measured_kl, base_ce, probe_ids stay
 * 0). r is freed on failure. */
int alrd_compress_config(alrd_compress_stages *s, const alrd_compress_opts *o, alrd_compress_result *r,
                         alrd_error *err);

/* ---- added for calib/qerr and alrd-sweep ------------------------------- */

/* Rows (tokens) summed into each layer's Gram matrix: the units of the tail
 * tables (0 when the calibration collected no statistics). */
size_t alrd_calib_rows(const alrd_calib *c);
/* The probe token ids: *n_seq sequences of *seq_len tokens, row-major (the
 * rows of alrd_calib_probe_inputs are these tokens in this order). */
const int32_t *alrd_calib_probe_ids(const alrd_calib *c, int *n_seq, int *seq_len);
alrd_calib *alrd_decomp_calib(const alrd_decomp *d);
/* Evenly spaced, non-overlapping samples of len tokens from ids (*n_samples
 * is lowered to what fits); malloc'd [*n_samples * len], NULL if len > n or
 * out of memory. */
int32_t *alrd_calib_pick_samples(const int32_t *ids, size_t n, int *n_samples, int len);
int alrd_decomp_whitened(const alrd_decomp *d);

/* r's ranks and factors as the packer takes them (formats/alrd_pack.h). */
alrd_factors alrd_compress_factors(const alrd_compress_result *r);

#endif
