/* gpu_ops: CUDA kernels of the forward pass and of the latent KV cache
 * (kernels/gpu_ops.cu), behind plain-C launchers. Every pointer is device
 * memory unless said otherwise; fp16 data travels as uint16_t bit patterns.
 * `stream` is a cudaStream_t. Launchers return 0 or the CUDA error code of
 * the launch. Those that take `pdl` launch their kernel with programmatic
 * dependent launch when it is non-zero, the ordinary way when it is 0
 * (alrd_gpu_knobs.pdl, runtime/gpu.h); the kernel computes the same either way.
 *
 * The cache side layout is runtime/kv_cache.h's packed layout, per sequence:
 *   bits < 16: quantised units (per channel: chunks of R tokens, words
 *     [d][ceil(R/cpw)], scales/zeros [d][R/G]; per token: words
 *     [ceil(d/cpw)], scales/zeros [ceil(d/G)]) plus an fp16 residual ring of
 *     R rows, token s in row s % R;
 *   bits 16: fp16 rows [max_ctx][d], token s in row s (RoPE'd already when
 *     `roped`: the plain fp16 K cache of an undecomposed layer).
 * A side the tiled attention kernel reads (alrd_gpu_side_tile, fw > 0) keeps
 * the same codes, scales and zeros in the order of that kernel's mma
 * fragments instead, so that a lane loads whole words of its own codes and
 * decodes them straight into registers (docs/gpu-kernels.md):
 *   per channel (keys, fw = head dim): a chunk's words [head][R/16 tiles]
 *     [16 tokens][4 lanes t][fw*bits/64]; lane t holds channel pairs
 *     (16k + 2t + 8h, +1), pair i = 2k + h, the pair's first channel in the
 *     low 16 bits of a word and its second in the high 16; scales/zeros
 *     [head][group][4 lanes t][pair i][2];
 *   per channel, latent order (latent keys, `lat`, fw = a group's rank, a
 *     multiple of 16): the A operand of the key reconstruction, lane (g, t)
 *     takes tokens g and g + 8 and latent channel pairs (16k + 2t + 8h, +1):
 *     a tile's words [word][32 lanes], the lane's slots 4k + 2(token >= 8) + h
 *     packed bits apiece from bit 0 of word 0 on (each half as above);
 *     scales/zeros as above;
 *   per token (values, fw = value width of one head or latent group): units
 *     of 32 tokens (TILED_VUNIT), words [block][2 sub-tiles of 16 tokens]
 *     [8 lanes g][4 lanes t][2 halves h][ceil(fw*bits/128)]; word (g, t, h)
 *     holds channels g + 8j of the sub-tile's tokens 2(t + 4h) (low 16 bits)
 *     and 2(t + 4h) + 1 (high 16 bits), code j at bit j*bits of its half;
 *     scales/zeros [ceil(d/G)][32 tokens];
 *   3 bits: the low two bits of each code as the 2-bit layout, then the
 *     third bits in a plane of one bit per code (layout in gpu_ops.cu).
 * Which tokens are quantised follows kv_cache.h exactly (n = tokens held):
 *   per channel: s < n - n % R;  per token: s < max(0, n - R).
 * Quantisation is kernels/kivi.h's, bit for bit on the same fp32 inputs
 * (min/max, fp16 zero rounded down, scale rounded up, codes in fp64). */
#ifndef ALRD_GPU_OPS_H
#define ALRD_GPU_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One side (K or V) of one layer's cache, for n_seq sequences. */
typedef struct {
    int d;                  /* cached width */
    int bits;               /* 2, 3, 4, 8 or 16 */
    int per_channel;        /* units are chunks of R tokens (KIVI keys) */
    int G, R;
    int roped;              /* bits 16 rows hold RoPE'd keys */
    int cpw, wpr, ng;       /* codes per word; words and groups per run */
    int fw, bw;             /* tiled layout: block width (head dim or value width), a block's words per
                               tile (keys: one head's 16 tokens; values: one block's 16 tokens); 0 = packed */
    int lat;                /* tiled per channel in the latent order (a latent group's 16 tokens a tile) */
    size_t unit_words, unit_groups;
    uint32_t *codes;        /* sequence b, unit u: codes + b*seq_words + u*unit_words */
    uint16_t *scales, *zeros;
    uint16_t *ring;         /* [R][d] per sequence (bits < 16) */
    uint16_t *rows;         /* [max_ctx][d] per sequence (bits 16) */
    size_t seq_words, seq_groups, seq_ring, seq_rows;
} alrd_gpu_side;

/* Fills the layout fields of a side for one sequence of max_ctx tokens
 * (pointers NULL, strides per sequence); *units = quantised units it holds.
 * Arguments as kv_cache_config_check accepts them. */
void alrd_gpu_side_init(alrd_gpu_side *s, int d, int bits, int per_channel, int G, int R, int roped,
                        int max_ctx, size_t *units);

/* Switches an initialised quantised side to the tiled layout of the tiled
 * attention kernel, blocks of fw channels (d % fw == 0; keys: R % 16 == 0,
 * fw 64 or 128, or with lat a multiple of 16; values: fw % 8 == 0,
 * fw <= 128). Returns 0, or -1 (side unchanged) when the side cannot be
 * tiled. */
int alrd_gpu_side_tile(alrd_gpu_side *s, int fw, int lat, int max_ctx, size_t *units);

/* Tokens of n that sit in the quantised part of a side (0 for bits 16). */
int alrd_gpu_side_quantized(const alrd_gpu_side *s, int n);

/* h[t] = fp32(emb[tok[t]]), rows of width H. */
int alrd_gpu_embed(const uint16_t *emb, const int32_t *tok, int T, int H, float *h, void *stream);
/* out[t] = fp16(x[t] / rms(x[t]) * w) (rms in fp32 of an fp32 sum). */
int alrd_gpu_rmsnorm(const float *x, const float *w, int T, int H, float eps, uint16_t *out,
                     int pdl, void *stream);
/* gu rows [gate(ffn) | up(ffn)] -> out[t][i] = fp16(silu(gate) * up). */
int alrd_gpu_silu_mul(const float *gu, int T, int ffn, uint16_t *out, int pdl, void *stream);

/* After the fused QKV product: qkv rows [q(qd) | k(dk) | v(dv)] (ld = row
 * width). Adds bq to q, bk to k and bv to v (each may be NULL; bk/bv only
 * for undecomposed projections), in place; writes q RoPE'd as fp16 to q16
 * [T][qd]. Row t has position pos_dev[t] when pos_dev is given (decode:
 * row b = sequence b), else pos0 + t. When k16/v16 are given, row t also
 * goes as fp16 to k16/v16 row (pos0 + t) (prefill materialisation). */
int alrd_gpu_qkv_post(float *qkv, int T, int ld, int n_heads, int hd, int dk, int dv,
                      const float *bq, const float *bk, const float *bv, const int *pos_dev,
                      int pos0, const float *cos_tab, const float *sin_tab, uint16_t *q16,
                      uint16_t *k16, uint16_t *v16, int ld16k, int ld16v, int pdl, void *stream);

/* out16 rows [r0, r1) (ld_out) = fp16(RoPE(in rows + bias)) for in32 (fp32,
 * ld_in) or in16 (fp16) -- exactly one given. n_heads*hd columns; row r
 * has position r. */
int alrd_gpu_rope_rows(const float *in32, const uint16_t *in16, int ld_in, const float *bias,
                       int r0, int r1, int n_heads, int hd, const float *cos_tab,
                       const float *sin_tab, uint16_t *out16, int ld_out, void *stream);

/* Both of the next two in one launch, for a decode step of B sequences
 * (positions pos_dev): the queries RoPE'd into q16, the keys and values
 * (+ bias, in place in qkv) appended to their sides k, v. */
int alrd_gpu_qkv_append_decode(float *qkv, int B, int ld, int n_heads, int hd, int dk, const float *bq,
                               const float *bk, const float *bv, const int *pos_dev, const float *cos_tab,
                               const float *sin_tab, uint16_t *q16, const alrd_gpu_side *k, const alrd_gpu_side *v,
                               int pdl, void *stream);

/* Decode step: appends each sequence's new token (fp32 row b of src, at
 * column offset col; position pos_dev[b]) to both sides of one layer's
 * cache, quantising what kv_cache.h's rules quantise at this step. B
 * sequences. K rows are RoPE'd when k->roped. */
int alrd_gpu_append_decode(const alrd_gpu_side *k, const alrd_gpu_side *v, const float *src,
                           int ld, int kcol, int vcol, int B, const int *pos_dev, int hd,
                           const float *cos_tab, const float *sin_tab, int pdl, void *stream);

/* Prefill of sequence b: tokens [p0, p0+T) (fp32 rows of src, row t = token
 * p0+t, column offset col) join one side that held p0 tokens. Quantises
 * what the rules quantise (reading older residual tokens from the ring)
 * and stores the new residual / fp16 rows. If deq16 is given, every
 * quantised token's dequantised row also goes there (row s, ld_deq). */
int alrd_gpu_append_prefill(const alrd_gpu_side *sd, int b, const float *src, int ld, int col,
                            int p0, int T, int hd, const float *cos_tab, const float *sin_tab,
                            uint16_t *deq16, int ld_deq, void *stream);

/* Fake quantisation for the teacher-forced scoring path: the dequantised
 * values that the cache would hold for tokens [0, T) of fp32 src (row t,
 * column offset col) once quantised -- per-channel chunks of R for the
 * complete chunks, per token for every token -- as fp16 rows of out (ld).
 * Rows of incomplete chunks are left untouched. Scratch: unit storage for
 * ceil(T/R)+1 chunk units or T token units (sd's codes/scales/zeros of
 * sequence b are overwritten). */
int alrd_gpu_fake_quant(const alrd_gpu_side *sd, int b, const float *src, int ld, int col, int T,
                        uint16_t *out, int ld_out, void *stream);

/* Materialises tokens [0, n_rows) of sequence b of a side holding n tokens
 * as fp16 rows of out (ld): dequantised units, ring rows or fp16 rows. */
int alrd_gpu_materialize(const alrd_gpu_side *sd, int b, int n, int n_rows, uint16_t *out,
                         int ld_out, void *stream);

/* Masked softmax over scores of n_heads heads, T query rows at positions
 * p0.., nk keys: S rows at S + h*hs + t*nk (fp32), P likewise (fp16),
 * keys s > p0 + t masked. With Sq/Pq (the teacher-forced scoring path):
 * rows t >= first use, for key s, Sq's score when key s is quantised at
 * time t (s < kq(t+1)) and write P to Pq instead of P when value s is
 * quantised (s < vq(t+1)); kq/vq from k_mode/v_mode: 0 never, 1 per
 * channel chunks of R, 2 per token (s < n - R). */
int alrd_gpu_softmax(const float *S, const float *Sq, uint16_t *P, uint16_t *Pq, int n_heads,
                     size_t hs, int T, int nk, int p0, float scale, int first, int R, int k_mode,
                     int v_mode, void *stream);

/* Y[m][n] (fp32, ldy) = X[m][:] . W[n][:] + beta * Y[m][n] for m < M <= 4:
 * the decode-step product (memory-bound; 16-byte loads, a warp per row).
 * K % 8 == 0, X rows (ldx) and W 16-byte aligned. */
int alrd_gpu_gemv(const uint16_t *W, const uint16_t *X, int ldx, float *Y, int ldy, int M, int N, int K,
                  float beta, int pdl, void *stream);

/* The same product in its fused forms, for M <= 4 rows of K (K % 8 == 0):
 * input X (fp16 rows, ldx) or, with h, X = fp16(RMSNorm(h[m]) * gamma)
 * (fp32 rows of K, ldh; M * K * 2 bytes <= 48 KB, alrd_gpu_gemv_norm_fits);
 * output Y = X W^T + beta Y (fp32 rows, ldy) or, with act (and h), act[m][j]
 * = fp16(silu(X . W[j]) * (X . W[N + j])) for j < N (W holds 2N rows: the
 * gate rows, then the up rows). */
typedef struct {
    const uint16_t *W;
    int M, N, K;
    const uint16_t *X;
    int ldx;
    const float *h, *gamma;
    float eps;
    int ldh;
    float *Y;
    int ldy;
    float beta;
    uint16_t *act;
    int ldact;
    int k_split; /* warps per row, 1 or 2 (alrd_gpu_knobs.gemv_ks); 0: by the row's length */
} alrd_gpu_gemv_op;
int alrd_gpu_gemv_run(const alrd_gpu_gemv_op *op, int pdl, void *stream);
int alrd_gpu_gemv_norm_fits(int M, int K);

/* y[t][i] += b[i] for fp32 rows of width n. */
int alrd_gpu_add_bias_f32(float *y, int T, int n, const float *b, int pdl, void *stream);

/* nll[r] = logsumexp(logits[r]) - logits[r][target[r]] (fp32 exp, fp64
 * sums) for rows with target >= 0; rows of width nv. */
int alrd_gpu_nll(const float *logits, const int32_t *target, int rows, int nv, double *nll,
                 void *stream);

/* Calibration probes: per row r of logits [rows][nv], its log-softmax lp;
 * set_base stores lp into base [rows][nv] (kl[r] = 0), else kl[r] =
 * KL(base[r] || lp); ce[r] = -lp[target[r]], 0 where target[r] < 0. fp64 out. */
int alrd_gpu_probe_rows(const float *logits, const int32_t *target, int rows, int nv, float *base, int set_base,
                        double *kl, double *ce, void *stream);

/* pos[b] += 1 for b < B. */
int alrd_gpu_pos_advance(int *pos, int B, int pdl, void *stream);

/* Deterministic pseudo-random fills (benchmarks with synthetic weights). */
int alrd_gpu_fill_f16(uint16_t *p, size_t n, float scale, float offset, uint64_t seed, void *stream);
int alrd_gpu_fill_f32(float *p, size_t n, float scale, float offset, uint64_t seed, void *stream);
int alrd_gpu_fill_u32(uint32_t *p, size_t n, uint64_t seed, void *stream);
int alrd_gpu_f32_to_f16(const float *in, uint16_t *out, size_t n, void *stream);
int alrd_gpu_f16_to_f64(const uint16_t *in, double *out, size_t n, void *stream);

#ifdef __cplusplus
}
#endif

#endif
