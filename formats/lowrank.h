/* lowrank: what a .alrd file says about its decomposed K/V projections and
 * its latent-cache defaults. Tensors (in the source's tensor list):
 *   model.layers.N.self_attn.k_proj.A  [n_groups, g*head_dim, k_rank]  (up)
 *   model.layers.N.self_attn.k_proj.B  [n_groups, k_rank, hidden]      (down)
 *   ... v_proj.A / v_proj.B likewise with v_rank.
 * g = group_heads KV heads share one latent; n_groups = n_kv_heads / g.
 * A layer whose k_rank (v_rank) is 0 keeps k_proj.weight (v_proj.weight)
 * and caches full K (V). A latent is what B produces: n_groups*rank values
 * per token, cached before RoPE; K = RoPE(A . latent). */
#ifndef ALRD_LOWRANK_H
#define ALRD_LOWRANK_H

#include "io.h"

typedef struct {
    int n_layers;
    int group_heads;
    int *k_rank, *v_rank; /* [n_layers], owned */
    int *k_bits, *v_bits; /* [n_layers] cache bits per layer: 2,3,4,8 or 16 (unquantized) */
    int use_kivi;         /* 0: plain per-token quantization of both caches */
    int group_size;       /* KIVI G */
    int residual_length;  /* KIVI R, R % G == 0 */
    int hadamard;         /* latents rotated (folded into A, B) */
    int whitened;         /* activation-aware SVD (else plain) */
} alrd_lowrank;

void alrd_lowrank_free(alrd_lowrank *l);

/* Added by the calib/.alrd helper (implemented in formats/lowrank.c). */
/* Allocates the four per-layer arrays (zeroed) for n_layers; -1 on OOM. */
int alrd_lowrank_alloc(alrd_lowrank *l, int n_layers);
/* Checks l against the model: n_layers equal, group_heads divides n_kv_heads,
 * 0 <= rank <= group_heads*head_dim, bits in {2,3,4,8,16}, group_size > 0,
 * residual_length >= 0 and % group_size == 0, flags 0/1. path names the file
 * in the error. */
int alrd_lowrank_validate(const alrd_lowrank *l, int n_layers, int n_kv_heads, int head_dim,
                          const char *path, alrd_error *err);

#endif
