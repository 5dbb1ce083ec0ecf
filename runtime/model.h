/* model: a loaded model (config + fp32 weights + tokenizer) and the CPU
 * forward pass over a per-sequence context (activations + KV cache).
 * Eager (default): weights are dequantized to fp32 once at load; nothing is
 * allocated in the forward pass. Lazy (ALRD_MODEL_LAZY, the compressor): the
 * source stays open and one layer's matrices at a time are dequantized into
 * a slot on demand (alrd_model_layer), so a 7B checkpoint needs ~1 GB of
 * fp32 weights, not ~27 GB; embeddings, norms and biases stay eager.
 * K/V projections are either full (wk/wv) or low-rank factors (kA/kB,
 * vA/vB) from a .alrd file; see formats/lowrank.h for their shapes. */
#ifndef ALRD_MODEL_H
#define ALRD_MODEL_H

#include <stdint.h>
#include "../formats/io.h"
#include "../formats/source.h"
#include "tokenizer.h"

typedef struct {
    float *attn_norm, *ffn_norm;       /* [hidden] */
    float *wq, *bq;                    /* [n_heads*hd][hidden], [n_heads*hd] or NULL */
    float *wk, *bk, *wv, *bv;          /* full projections [n_kv*hd][hidden]; wk/wv NULL when low-rank */
    int k_rank, v_rank;                /* per-group latent rank; 0 = full projection */
    float *kA, *kB, *vA, *vB;          /* A [n_groups][g*hd][rank], B [n_groups*rank][hidden] */
    float *wo, *bo;                    /* [hidden][n_heads*hd] */
    float *w_gate, *w_up, *w_down;     /* [ffn][hidden], [ffn][hidden], [hidden][ffn] */
} alrd_layer;

typedef struct {
    alrd_config cfg;
    int group_heads;                   /* KV heads per latent group (lowrank) */
    int n_groups;                      /* n_kv_heads / group_heads */
    alrd_lowrank lowrank;              /* copy of the file's (all zero for plain models) */
    int has_lowrank;
    float *embed;                      /* [vocab][hidden] */
    float *final_norm;                 /* [hidden] */
    float *lm_head;                    /* [vocab][hidden]; == embed when tied */
    alrd_layer *layers;
    float *inv_freq;                   /* [hd/2], llama3 scaling applied */
    alrd_vocab vocab;                  /* owned copy */
    alrd_tokenizer *tok;               /* owned */
    char path[1024];
    int flags;                         /* ALRD_MODEL_* it was loaded with */
    const alrd_source *src;            /* lazy: borrowed, must outlive the model; NULL when eager */
    struct alrd_model_slot *slot;      /* lazy: the materialized layer (owned) */
    const float **kv_override;         /* [2*n_layers]: module 2l+v replaced by this weight (borrowed);
                                        * NULL while no override is set */
} alrd_model;

/* Load flags. LAZY: matrices of a layer materialize on demand (CPU; a .alrd
 * file's low-rank factors, being small, load with the model): readers go
 * through alrd_model_layer. */
enum { ALRD_MODEL_LAZY = 1 };

int alrd_model_load_opts(alrd_model *m, const alrd_source *s, int flags, alrd_error *err);

/* Layer l with its weights present (and K/V overrides applied): the one way
 * the CPU forward reads a layer. Eager without overrides: &m->layers[l];
 * otherwise view is filled and returned. Lazy: dequantizes layer l into the
 * slot unless it is there already (pointers into the slot stay valid until
 * another layer is requested). NULL on error. Not thread-safe in lazy mode. */
const alrd_layer *alrd_model_layer(const alrd_model *m, int l, alrd_layer *view, alrd_error *err);


/* Replaces the full K (is_v 0) or V (is_v 1) weight [n_kv*hd][hidden] of
 * layer l by w (borrowed until cleared with w = NULL) for every forward pass
 * through alrd_model_layer. Not for low-rank layers. */
int alrd_model_set_override(alrd_model *m, int l, int is_v, const float *w, alrd_error *err);

/* Loads every weight of s as fp32 (s may be closed afterwards). */
int alrd_model_load(alrd_model *m, const alrd_source *s, alrd_error *err);
/* Opens path with alrd_source_open and loads it. */
int alrd_model_open(alrd_model *m, const char *path, alrd_error *err);
void alrd_model_free(alrd_model *m);

/* A model over base's weights whose K/V projections are decomposed as lr
 * says (lr->k_rank[l] > 0: factors kA[l], kB[l] in formats/lowrank.h's
 * shapes; 0: base's projection) with lr's per-layer cache bits and KIVI
 * defaults: what a .alrd file of those factors would load as, without
 * writing one (alrd-compress measures candidate configurations on it).
 * Everything is borrowed (base, lr's arrays and the factors must outlive
 * the view) except a lazily loaded base's layer slot, which the view has
 * its own of. base must be plain (no low-rank layers, no overrides).
 * Free with alrd_model_view_free, never alrd_model_free. */
int alrd_model_lowrank_view(alrd_model *view, const alrd_model *base, const alrd_lowrank *lr, float *const *kA,
                            float *const *kB, float *const *vA, float *const *vB, alrd_error *err);
void alrd_model_view_free(alrd_model *view);

/* Width of the cached K (V) vector per token in layer l: n_groups*rank for
 * a low-rank layer, n_kv*hd otherwise. */
int alrd_model_k_width(const alrd_model *m, int l);
int alrd_model_v_width(const alrd_model *m, int l);

#endif
