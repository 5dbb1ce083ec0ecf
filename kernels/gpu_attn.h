/* gpu_attn: fused flash-decoding attention over every cache alrd keeps
 * (docs/design.md 5.5, docs/gpu-kernels.md). One kernel per layer, chosen by
 * the layer's cache:
 *   fp16 RoPE'd keys and fp16 values: attn_fp16_kernel (gpu_attn_fp16.cu);
 *   full-width keys quantised per channel (2/3/4/8 bits, pre-RoPE) or fp16
 *     keys with quantised values, and per-head latent keys quantised per
 *     channel: attn_kivi_kernel (gpu_attn_kivi.cu);
 *   latent keys K = RoPE(latent . A_k^T + b_k) of groups of KV heads,
 *     reconstructed on the tensor cores: attn_latent_kernel (gpu_attn_latent.cu),
 *     2/4/16-bit latents;
 *   what none of these covers: the older block-synchronous kernels
 *     (gpu_attn_generic.cu).
 * Every kernel splits the sequence (flash-decoding) and writes per-split
 * (max, sum, unnormalised mix); a second kernel reduces the splits. Values of
 * a latent layer stay in latent space: a head's latent mix is its output
 * (the engine folds A_v and b_v into o_proj).
 * Plain-C interface; pointers are device memory. */
#ifndef ALRD_GPU_ATTN_H
#define ALRD_GPU_ATTN_H

#include "gpu_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { ALRD_GPU_K_LATENT = 0, ALRD_GPU_K_FULL = 1, ALRD_GPU_K_ROPED = 2 };

typedef struct {
    int n_heads, n_kv, hd;
    int group_heads;        /* KV heads per latent group */
    int kmode;              /* ALRD_GPU_K_* */
    int kr, vr;             /* latent ranks; vr 0 = full values */
    const uint16_t *kA;     /* [n_groups][group_heads*hd][kr] fp16 (LATENT) */
    const uint16_t *kAf;    /* kA in the fused latent kernel's order (alrd_gpu_attn_pack_ak), or NULL */
    const float *bk;        /* [n_kv*hd] bias of a decomposed k_proj, or NULL */
    alrd_gpu_side ks, vs;   /* the layer's cache */
    const float *cos_tab, *sin_tab; /* [max_ctx][hd/2] */
    const uint32_t *rope_tile;      /* the tiled kernel's RoPE tables (alrd_gpu_attn_rope_tiles), NULL where hd is
                                       not 64 or 128 */
    float scale;            /* 1/sqrt(hd) */
    int head_split;         /* latent kernel: a block per KV head instead of per group (more, shorter blocks:
                               each reconstructs one head's keys, all of them read the group's latents) */
    /* the engine's knobs that reach the kernels (alrd_gpu_knobs, runtime/gpu.h; 0 or 1): */
    int pdl;                /* launch with programmatic dependent launch (ALRD_GPU_PDL) */
    int latent_v2;          /* latent keys on attn_v2_kernel, not attn_latent_kernel (ALRD_GPU_LATENT_V2) */
    int latent_generic;     /* attn_latent_kernel's shared instance, not the 2-bit one (ALRD_GPU_LATENT_GENERIC) */
} alrd_gpu_attn_layer;

/* Halves of A_k (n_kv*hd rows of kr) in the fused latent kernel's order, and
 * that copy of kA made on the device: per KV head, per k-step of 16 latent
 * columns (zero beyond kr) and pair of 8-row n-tiles, the four 8x8 matrices
 * of one ldmatrix.x4 as 512 contiguous bytes. */
size_t alrd_gpu_attn_ak_halves(int n_kv, int hd, int kr);
int alrd_gpu_attn_pack_ak(const uint16_t *kA, int n_kv, int hd, int kr, uint16_t *kAf, void *stream);

/* Does a layer of this shape decode on the tiled kernel (gpu_attn_kivi.cu:
 * full-width keys, KIVI-quantised per channel or fp16, or per-head latent
 * keys of rank kr (a multiple of 16) KIVI-quantised per channel; values of
 * any width up to hd)? Then *kfw / *vfw are the block widths its quantised
 * sides take in alrd_gpu_side_tile, latent keys in the latent order (0: a
 * side that stays as it is). */
int alrd_gpu_attn_tiled(int hd, int n_heads, int n_kv, int kmode, int kb, int vb, int kivi, int G, int R, int kr,
                        int vr, int group_heads, int *kfw, int *vfw);

/* The tiled kernel's RoPE tables, made on the device from the fp32 ones ([max_ctx][hd/2]): the keys'
 * rotations by their offset in a 16-token tile, then one row per tile (position 16 r) of the query's, both
 * as fp16 (cos, sin) pairs in the lanes' order (gpu_attn_kivi.cu). alrd_gpu_attn_rope_tile_words(max_ctx,
 * hd) 32-bit words, 0 where hd has no tiled kernel (then alrd_gpu_attn_rope_tiles does nothing). */
size_t alrd_gpu_attn_rope_tile_words(int max_ctx, int hd);
int alrd_gpu_attn_rope_tiles(const float *cos_tab, const float *sin_tab, int max_ctx, int hd, uint32_t *out,
                             void *stream);

/* Dynamic shared memory of the fused kernel for this layer, or 0 when the
 * layer is outside what it supports (hd 64 or 128, shared memory <= limit). */
size_t alrd_gpu_attn_smem(const alrd_gpu_attn_layer *L, size_t limit);
/* Raises the kernels' dynamic shared-memory limit to bytes (once). */
int alrd_gpu_attn_prepare(size_t bytes);
/* Blocks of the layer's fused decode kernel that one SM holds at once;
 * *groups = its blocks per sequence and split (KV heads or groups). */
int alrd_gpu_attn_occupancy(const alrd_gpu_attn_layer *L, int *groups);
/* Floats of work space for B sequences and nsplit splits (vw_max = the
 * largest value width over the layers: vr or hd). */
size_t alrd_gpu_attn_work_floats(int n_heads, int B, int nsplit, int vw_max);

/* Attention of each sequence's query q16[b] (RoPE'd, [B][n_heads*hd] fp16)
 * over its cache holding pos_dev[b] + 1 tokens; writes out [B][n_heads*vw]
 * fp16, vw = vr (each head's latent value mix) or hd. */
int alrd_gpu_attn_decode(const alrd_gpu_attn_layer *L, const uint16_t *q16, const int *pos_dev, int B,
                         int nsplit, int vw_max, float *work, uint16_t *out, void *stream);

#ifdef __cplusplus
}
#endif

#endif
