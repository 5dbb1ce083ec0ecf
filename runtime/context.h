/* context: one sequence's state over a loaded model -- activations, the
 * (latent, optionally KIVI-quantized) KV cache -- and the CPU forward pass.
 * Everything is allocated at creation; the forward pass allocates nothing. */
#ifndef ALRD_CONTEXT_H
#define ALRD_CONTEXT_H

#include "model.h"

/* Where a context runs. AUTO: the GPU when this build has CUDA and a device
 * is present, else the CPU (silently). */
enum { ALRD_BACKEND_CPU = 0, ALRD_BACKEND_GPU = 1, ALRD_BACKEND_AUTO = 2 };
/* GPU options (bits of gpu_flags) */
enum {
    ALRD_GPU_REF_ATTN = 1,  /* decode attention by materialising K/V (cuBLAS), not the fused kernels */
    ALRD_GPU_STEPWISE = 2,  /* perplexity through real decode steps, not the one-pass scoring */
    ALRD_GPU_NO_GRAPH = 4   /* no CUDA graph for decode steps */
};

/* Cache settings of a context (defaults come from the .alrd file). */
typedef struct {
    int k_bits, v_bits;   /* 16 = unquantized; 0 = take the file's per-layer bits */
    int group_size;       /* KIVI G */
    int residual;         /* KIVI R */
    int use_kivi;
    int backend;          /* ALRD_BACKEND_*; the default is the CPU */
    int gpu_flags;        /* ALRD_GPU_* */
    int sink;             /* the first `sink` tokens of a sequence stay unquantised (attention sinks), 0 to the
                             context; the CPU cache only so far: AUTO then takes the CPU, GPU is refused */
} alrd_cache_opts;

/* Fills opts with the model's defaults (the file's, or 16-bit for plain models). */
void alrd_cache_opts_default(const alrd_model *m, alrd_cache_opts *o);

typedef struct alrd_ctx alrd_ctx;

/* A context for one sequence of up to max_ctx tokens, processing up to
 * max_batch tokens per call. */
int alrd_ctx_new(alrd_ctx **out, const alrd_model *m, int max_ctx, int max_batch,
                 const alrd_cache_opts *opts, alrd_error *err);
void alrd_ctx_free(alrd_ctx *c);
void alrd_ctx_reset(alrd_ctx *c);      /* empty the cache, position 0 */
int alrd_ctx_pos(const alrd_ctx *c);   /* tokens in the cache */
const alrd_model *alrd_ctx_model(const alrd_ctx *c);
/* Does any layer's cache quantize (bits < 16)? */
int alrd_ctx_is_quantized(const alrd_ctx *c);
/* Bytes the cache holds now (codes + scales + zeros + residual). */
size_t alrd_ctx_cache_bytes(const alrd_ctx *c);

/* Runs T tokens at positions pos..pos+T-1. At position 0 with T > 1 this is
 * a prefill (attention over full-precision K/V, then the cache stores them
 * as docs/design.md 5.4 says); otherwise tokens go one by one through the decode
 * path. logits: if all_logits, [T][vocab]; else [vocab] for the last token;
 * may be NULL. */
int alrd_ctx_forward(alrd_ctx *c, const int32_t *tokens, int T, float *logits, int all_logits,
                     alrd_error *err);

/* The backend a context runs on (ALRD_BACKEND_CPU or _GPU). */
int alrd_ctx_backend(const alrd_ctx *c);
/* 1 when contexts can run on a GPU (CUDA build and a device present). */
int alrd_ctx_gpu_available(void);
/* One perplexity chunk in one call, where the backend has such a path (GPU
 * without ALRD_GPU_STEPWISE; see alrd_gpu_score in gpu.h): nll[j] =
 * -log p(tokens[j+1]) for j in [first, T-1), what alrd_perplexity_tokens
 * computes from the logits of a prefill of T tokens (decode = 0) or of a
 * prefill of `first` tokens and decode steps (decode = 1). The cache is
 * left empty. alrd_ctx_can_score says whether the path exists. */
int alrd_ctx_can_score(const alrd_ctx *c);
int alrd_ctx_score(alrd_ctx *c, const int32_t *tokens, int T, int first, int decode, double *nll,
                   alrd_error *err);

/* Calibration hook (CPU contexts only): called with the attention-normed input of every layer
 * (the shared input of k_proj and v_proj), [T][hidden]. */
typedef void (*alrd_attn_input_fn)(void *user, int layer, const float *xn, int T);
void alrd_ctx_set_attn_hook(alrd_ctx *c, alrd_attn_input_fn fn, void *user);

/* Layer-level access for calibration (CPU contexts only): x is [T][hidden] hidden states of one
 * sequence starting at position 0, run through one layer in place as a
 * prefill that leaves the cache untouched. */
void alrd_ctx_embed(alrd_ctx *c, const int32_t *tokens, int T, float *x);
int alrd_ctx_layer_prefill(alrd_ctx *c, int layer, float *x, int T, alrd_error *err);
/* One layer over one sequence as generation runs it (CPU contexts only):
 * x is [T][hidden] hidden states from position 0; rows 0..first-1 go
 * through the layer as a prefill (first >= 2; 1: as a decode step) that
 * fills the layer's cache, rows first..T-1 one at a time through the
 * (quantised) cache, in place. Every layer only sees its own cache, so
 * running the layers one after another over the same rows gives exactly
 * the hidden states of a prefill of `first` tokens followed by decode
 * steps (what alrd_perplexity_tokens scores), a layer at a time. The whole
 * cache is emptied before and after (position 0). */
int alrd_ctx_layer_generate(alrd_ctx *c, int layer, float *x, int T, int first, alrd_error *err);
/* Final norm + lm_head for T rows of x (any T): logits [T][vocab]. */
void alrd_ctx_logits(alrd_ctx *c, const float *x, int T, float *logits);

#endif
