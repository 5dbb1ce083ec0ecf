/* gpu: the CUDA backend (runtime/gpu.cu). An engine holds a model's weights
 * on one GPU (fp16, uploaded once), the latent KV caches of n_seq
 * independent sequences (kv_cache.h's semantics and packed layout, fp16
 * residual), and the activations of the forward pass: fp16 operands into
 * cuBLAS with fp32 accumulation, an fp32 residual stream.
 *
 *   prefill   T tokens of one sequence at its current position p0 (0 for the
 *             public API): attention over the cache (dequantised) and the
 *             new tokens at full precision, then the cache takes them as
 *             kv_cache_prefill does;
 *   decode    one token of every sequence through the cache (kv_cache's
 *             append, then attention over [dequant(quantised) ; residual]):
 *             fused kernels (kernels/gpu_attn.h), replayed as a CUDA graph,
 *             or the reference path (materialise K/V with cuBLAS);
 *   score     one perplexity chunk in one pass (see alrd_gpu_score).
 *
 * Built only when nvcc is found (ALRD_CUDA); without it, or without a GPU,
 * alrd_gpu_available() is 0 and callers use the CPU path. Not thread safe. */
#ifndef ALRD_GPU_H
#define ALRD_GPU_H

#include <stddef.h>
#include <stdint.h>
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { ALRD_GPU_ATTN_FUSED = 0, ALRD_GPU_ATTN_REF = 1 };

/* The GPU tuning knobs: switches for same-run comparisons on the device
 * (docs/gpu-kernels.md, "Switches"; tests/gpu/device.sh sweeps them). Each
 * is set by the environment variable named with it; alrd_gpu_knobs_from_env
 * is the one place that reads them. An engine takes its knobs once, when it
 * is made (alrd_gpu_opts.knobs, or the environment when that is NULL), and
 * reads them from there; kernels/ gets them as arguments (the launchers'
 * pdl, alrd_gpu_attn_layer's pdl / latent_v2 / latent_generic,
 * alrd_gpu_gemv_op.k_split) and reads no variable itself. */
typedef struct {
    /* ALRD_GPU_PDL, default 1: the step's kernels are launched with programmatic dependent launch
     * (griddepcontrol); 0: the ordinary way. Passed as the launchers' pdl and alrd_gpu_attn_layer.pdl. */
    int pdl;
    /* ALRD_GPU_NSPLIT, default 0: the split count of every layer's fused decode attention, clamped to
     * 1..256; 0 (or less): per layer, the fewest splits whose blocks fit in one wave (layer_nsplit). */
    int nsplit;
    /* ALRD_GPU_HEAD_SPLIT, default -1: latent layers' decode blocks per KV head (1) or per latent group (0);
     * -1: per head where the group blocks would leave the GPU idle (want_head_split). */
    int head_split;
    /* ALRD_GPU_LATENT_V2, default 0: 1 runs the latent layers on attn_v2_kernel instead of
     * attn_latent_kernel. Passed as alrd_gpu_attn_layer.latent_v2. */
    int latent_v2;
    /* ALRD_GPU_LATENT_GENERIC, default 0: 1 runs attn_latent_kernel's shared instance instead of the
     * 2-bit one. Passed as alrd_gpu_attn_layer.latent_generic. */
    int latent_generic;
    /* ALRD_GPU_FUSE_APPEND, default 1: the query RoPE and both cache appends of a decode step in one
     * launch (qkv_append_kernel); 0: two launches. */
    int fuse_append;
    /* ALRD_GPU_FUSE_NORM, default 1: decode products take the RMSNorm in (and the SwiGLU out): 1 for
     * hidden sizes up to 1024, 2 at any size, 0 never. */
    int fuse_norm;
    /* ALRD_GPU_GEMV_KS, default 0: warps per row of the decode GEMV, 1 or 2; 0: 2 for rows of up to
     * 2048 elements, else 1. Passed to the GEMV as alrd_gpu_gemv_op.k_split. */
    int gemv_ks;
} alrd_gpu_knobs;

/* Every knob from the environment: a variable unset or empty gives the
 * default above; a set one is read as an integer (atoi). */
void alrd_gpu_knobs_from_env(alrd_gpu_knobs *k);

typedef struct {
    int max_ctx;                /* tokens per sequence */
    int max_batch;              /* tokens per prefill / score call */
    int n_seq;                  /* sequences decoded together, >= 1 */
    const int *k_bits, *v_bits; /* [n_layers]: 2, 3, 4, 8 or 16 */
    int group_size, residual, use_kivi;
    int attn;                   /* ALRD_GPU_ATTN_FUSED or _REF (decode attention) */
    int graph;                  /* replay fused decode steps as a CUDA graph */
    int score;                  /* allocate the buffers of alrd_gpu_score */
    const alrd_gpu_knobs *knobs; /* copied at engine creation; NULL: alrd_gpu_knobs_from_env */
    int synth_kbias;            /* alrd_gpu_new_synthetic: a random k_proj bias on the latent layers */
} alrd_gpu_opts;

typedef struct alrd_gpu alrd_gpu;

/* 1 when this build has CUDA and a device is present (cudaGetDeviceCount). */
int alrd_gpu_available(void);

/* An engine for model m (weights converted to fp16 on the device). */
int alrd_gpu_new(alrd_gpu **out, const alrd_model *m, const alrd_gpu_opts *o, alrd_error *err);

/* An engine with random weights of the given shape, made on the device
 * (benchmarks): cfg as a model's; group_heads KV heads per latent; k_rank /
 * v_rank [n_layers] (NULL or 0 = full projection). */
int alrd_gpu_new_synthetic(alrd_gpu **out, const alrd_config *cfg, int group_heads, const int *k_rank,
                           const int *v_rank, const alrd_gpu_opts *o, uint64_t seed, alrd_error *err);
void alrd_gpu_free(alrd_gpu *g);

/* Empties sequence seq (-1: all). */
void alrd_gpu_reset(alrd_gpu *g, int seq);
int alrd_gpu_pos(const alrd_gpu *g, int seq);
/* Exact cache bytes of sequence seq now (kv_cache_layer_bytes summed). */
size_t alrd_gpu_cache_bytes(const alrd_gpu *g, int seq);

/* T tokens of sequence seq at its position p0 (p0 + T <= max_ctx, T <=
 * max_batch). logits (host, may be NULL): [T][vocab] if all_logits, else
 * the last row. */
int alrd_gpu_prefill(alrd_gpu *g, int seq, const int32_t *tokens, int T, float *logits, int all_logits,
                     alrd_error *err);

/* One decode step of all n_seq sequences: tokens[n_seq] (host); logits
 * (host, may be NULL) [n_seq][vocab]. */
int alrd_gpu_decode(alrd_gpu *g, const int32_t *tokens, float *logits, alrd_error *err);

/* One perplexity chunk on sequence 0 (left empty afterwards):
 * nll[j] = -log p(tokens[j+1] | tokens[0..j]) for j in [first, T-1), fp64.
 * decode = 0: the model over T tokens in one prefill. decode = 1: what
 * prefilling tokens [0, first) and then decoding tokens first..T-2 one at a
 * time through the quantised cache computes, in one pass ("teacher
 * forced"): row j >= first attends to key s through its dequantised value
 * exactly when the cache after appending token j holds s quantised (keys:
 * s < (j+1) - (j+1) % R per channel, or s < j+1-R per token; values:
 * s < j+1-R), else at full precision. Needs opts.score. */
int alrd_gpu_score(alrd_gpu *g, const int32_t *tokens, int T, int first, int decode, double *nll,
                   alrd_error *err);

/* Benchmarks: fills sequence seq's cache with n tokens of random content
 * (valid codes, scales, zeros and residual) and sets its position to n. */
int alrd_gpu_fill_random(alrd_gpu *g, int seq, int n, uint64_t seed, alrd_error *err);

/* Calibration statistics (alrd-compress on the GPU): from the call on,
 * every prefill adds each layer's attention-normed input rows (fp16, what
 * the k/v products read) to that layer's Gram sum x^T x, kept in fp64 on the
 * device (cublasDsyrk). alrd_gpu_gram_read copies layer's sum to out
 * ([H*H] row-major, upper triangle; the lower one is undefined) and the rows
 * summed so far to *n_rows. */
int alrd_gpu_gram_enable(alrd_gpu *g, alrd_error *err);
int alrd_gpu_gram_read(alrd_gpu *g, int layer, double *out, long long *n_rows, alrd_error *err);

/* Calibration probes (alrd-compress's sensitivities on the GPU). An
 * uncompressed engine with some k_proj / v_proj weights replaced, scored
 * against its own log-probs.
 *   set_kv_weight  replaces layer's k_proj (is_v 0) or v_proj (1) with w
 *                  (host fp32 [n_kv_heads*head_dim][hidden], as model.h's
 *                  weights); w = NULL puts the original back.
 *   probe          n_seq sequences of S tokens (tokens [n_seq*S]), each in
 *                  one pass from position 0 (the cache is left as it was).
 *                  set_base (once per engine): these log-probs become the
 *                  base (kept on the device; also copied to base_lp
 *                  [n_seq*S][vocab] and each layer's input rows to h_in
 *                  [n_layers][n_seq*S][hidden] where not NULL); *kl = 0.
 *                  Else the tokens must be the base's, and *kl = the mean
 *                  over all positions of KL(base || now). *ce: the mean
 *                  next-token cross-entropy. Needs max_batch and max_ctx >= S. */
int alrd_gpu_set_kv_weight(alrd_gpu *g, int layer, int is_v, const float *w, alrd_error *err);
int alrd_gpu_probe(alrd_gpu *g, const int32_t *tokens, int n_seq, int S, int set_base, float *base_lp, float *h_in,
                   double *kl, double *ce, alrd_error *err);

/* Switches the decode attention path (drops a captured graph). */
void alrd_gpu_set_attn(alrd_gpu *g, int attn);
/* 1 when the fused decode attention supports every layer of this engine. */
int alrd_gpu_fused_ok(const alrd_gpu *g);
/* Waits for the device; reports a pending error. */
int alrd_gpu_sync(alrd_gpu *g, alrd_error *err);

typedef struct {
    char name[128];
    double peak_bw;             /* bytes/s from the memory clock and bus width */
    size_t total_mem, free_mem; /* device memory now */
    size_t engine_bytes;        /* what this engine allocated */
    size_t weight_bytes;        /* of which weights */
    int sm_count;
} alrd_gpu_info;
int alrd_gpu_get_info(const alrd_gpu *g, alrd_gpu_info *out);

/* Bytes one decode step must read from device memory at the current
 * positions: weights (+ lm_head) once, plus every sequence's cache
 * (cache_bytes) -- the numerator of the HBM roofline. */
size_t alrd_gpu_step_bytes(const alrd_gpu *g);

const alrd_config *alrd_gpu_config(const alrd_gpu *g);

/* Brackets a region for a profiler started with profiling off (ncu
 * --profile-from-start off); a no-op without one. */
void alrd_gpu_profile(int on);

#ifdef __cplusplus
}
#endif

#endif
