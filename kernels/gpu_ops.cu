/* gpu_ops: CUDA kernels of the forward pass and the latent KV cache (see
 * gpu_ops.h). Quantisation mirrors kernels/kivi.c operation by operation,
 * with explicit _rn intrinsics so that nvcc does not contract a*b+c into an
 * FMA that the CPU reference does not do. */
#include "gpu_ops.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_common.cuh"

#define LAUNCHED() ((int)cudaGetLastError())
#define ST(s) ((cudaStream_t)(s))

static inline int cdiv(long a, long b) { return (int)((a + b - 1) / b); }

/* ---- KIVI arithmetic (kernels/kivi.c) -------------------------------- */

extern "C" void alrd_gpu_side_init(alrd_gpu_side *s, int d, int bits, int per_channel, int G, int R, int roped,
                                   int max_ctx, size_t *units) {
    memset(s, 0, sizeof *s);
    s->d = d;
    s->bits = bits;
    s->per_channel = per_channel;
    s->G = G;
    s->R = R;
    s->roped = roped;
    *units = 0;
    if (bits == 16) {
        s->seq_rows = (size_t)max_ctx * d;
        return;
    }
    s->cpw = 32 / bits;
    if (per_channel) {
        s->wpr = (R + s->cpw - 1) / s->cpw;
        s->ng = (R + G - 1) / G;
        s->unit_words = (size_t)d * s->wpr;
        s->unit_groups = (size_t)d * s->ng;
        *units = (size_t)(max_ctx / R);
    } else {
        s->wpr = (d + s->cpw - 1) / s->cpw;
        s->ng = (d + G - 1) / G;
        s->unit_words = s->wpr;
        s->unit_groups = s->ng;
        *units = (size_t)max_ctx;
    }
    s->seq_words = *units * s->unit_words;
    s->seq_groups = *units * s->unit_groups;
    s->seq_ring = (size_t)R * d;
}

#define TILED_TOKEN_MAX 8192 /* channels of a tiled per-token side (quant_token_tiled's shared memory) */
extern "C" int alrd_gpu_side_tile(alrd_gpu_side *s, int fw, int lat, int max_ctx, size_t *units) {
    if (s->bits == 16 || fw <= 0 || s->d % fw || (!s->per_channel && s->d > TILED_TOKEN_MAX)) return -1;
    if (lat && !s->per_channel) return -1;
    const int b2 = s->bits == 3 ? 2 : s->bits;
    if (s->per_channel) {
        if (s->R % 16 || (lat ? fw % 16 : fw != 64 && fw != 128)) return -1;
        if (lat) s->bw = 32 * (lat_words(fw, b2) + (s->bits == 3 ? lat_plane_words(fw) : 0));
        else s->bw = 64 * (fw / 8 * b2 / 16) + (s->bits == 3 ? (fw <= 64 ? 32 : 64) : 0);
        s->unit_words = (size_t)(s->d / fw) * (s->R / 16) * s->bw;
        *units = (size_t)(max_ctx / s->R);
    } else {
        if (fw % 8 || fw > 128) return -1;
        const int nnt = fw / 8;
        s->bw = 64 * ((nnt * b2 + 15) / 16) + (s->bits == 3 ? (nnt <= 8 ? 32 : 64) : 0);
        s->unit_words = (size_t)(s->d / fw) * (TILED_VUNIT / 16) * s->bw;
        s->unit_groups = (size_t)s->ng * TILED_VUNIT;
        *units = (size_t)((max_ctx + TILED_VUNIT - 1) / TILED_VUNIT);
    }
    s->fw = fw;
    s->lat = lat;
    s->seq_words = *units * s->unit_words;
    s->seq_groups = *units * s->unit_groups;
    return 0;
}

__device__ __forceinline__ uint16_t h_round_down(float x) {
    if (!(x == x)) return 0;
    if (x >= 65504.0f) return 0x7bffu;
    if (x <= -65504.0f) return 0xfbffu;
    uint16_t h = __half_as_ushort(__float2half_rd(x));
    return h == 0x8000u ? 0 : h;
}

__device__ __forceinline__ uint16_t h_round_up(double d) {
    if (!(d == d)) return 0;
    float f = __double2float_ru(d); /* ru(ru_float(d)) == ru(d) on the coarser fp16 grid */
    if (f >= 65504.0f) return 0x7bffu;
    if (f <= -65504.0f) return 0xfbffu;
    uint16_t h = __half_as_ushort(__float2half_ru(f));
    return h == 0x8000u ? 0 : h;
}

__device__ void group_params(float mn, float mx, int bits, uint16_t *scale, uint16_t *zero) {
    if (!(mn <= mx)) mn = mx = 0.0f;
    uint16_t z = h_round_down(mn);
    double zd = (double)h2f(z);
    double n = (double)((1u << bits) - 1);
    uint16_t s = h_round_up(__ddiv_rn(__dsub_rn((double)mx, zd), n));
    while (s < 0x7bffu && __dadd_rn(zd, __dmul_rn(n, (double)h2f(s))) < (double)mx) s = (uint16_t)(s + 1);
    *scale = s;
    *zero = z;
}

__device__ __forceinline__ uint32_t code_of(float x, double z, double inv_s, double n) {
    double t = __dadd_rn(__dmul_rn(__dsub_rn((double)x, z), inv_s), 0.5);
    if (!(t > 0.0)) return 0;
    if (t >= n) return (uint32_t)n;
    return (uint32_t)(int)t;
}

__device__ __forceinline__ void minmax_upd(float v, float &mn, float &mx) {
    if (v < mn) mn = v; /* NaN compares false: skipped, as kivi.c */
    if (v > mx) mx = v;
}

extern "C" int alrd_gpu_side_quantized(const alrd_gpu_side *s, int n) {
    if (s->bits == 16) return 0;
    if (s->per_channel) return n - n % s->R;
    return n > s->R ? n - s->R : 0;
}

/* Token s, channel c: fp32 rows for s >= p0 (row s - p0), else the ring. */
struct SrcMix {
    const float *f32;
    long ld;
    long p0;
    const uint16_t *ring;
    int R, d;
    __device__ __forceinline__ float get(long s, int c) const {
        return s >= p0 ? f32[(s - p0) * ld + c] : h2f(ring[(size_t)(s % R) * d + c]);
    }
};

/* Per-channel quantisation of channel c of chunk j (tokens jR..jR+R-1) of
 * sequence b: kivi.c's quantize_run over the chunk's column. */
__device__ void quant_chunk_channel(const alrd_gpu_side &sd, int b, int j, int c, const SrcMix &src,
                                    uint16_t *deq, long ld_deq) {
    const int R = sd.R, G = sd.G, bits = sd.bits, cpw = sd.cpw;
    uint32_t *codes = sd.codes + (size_t)b * sd.seq_words + (size_t)j * sd.unit_words + (size_t)c * sd.wpr;
    size_t goff = (size_t)b * sd.seq_groups + (size_t)j * sd.unit_groups + (size_t)c * sd.ng;
    uint16_t *sc = sd.scales + goff, *zr = sd.zeros + goff;
    const double top = (double)((1u << bits) - 1);
    const long s0 = (long)j * R;
    uint32_t word = 0;
    int slot = 0, w = 0;
    for (int g0 = 0, gi = 0; g0 < R; g0 += G, gi++) {
        int m = R - g0 < G ? R - g0 : G;
        float mn = INFINITY, mx = -INFINITY;
        for (int i = 0; i < m; i++) minmax_upd(src.get(s0 + g0 + i, c), mn, mx);
        uint16_t hs, hz;
        group_params(mn, mx, bits, &hs, &hz);
        sc[gi] = hs;
        zr[gi] = hz;
        float sf = h2f(hs), zf = h2f(hz);
        double z = (double)zf, s = (double)sf, inv_s = s > 0.0 ? __drcp_rn(s) : 0.0;
        for (int i = 0; i < m; i++) {
            uint32_t q = code_of(src.get(s0 + g0 + i, c), z, inv_s, top);
            word |= q << (slot * bits);
            if (deq) deq[(s0 + g0 + i) * ld_deq + c] = f2h(dequant(q, sf, zf));
            if (++slot == cpw) {
                codes[w++] = word;
                word = 0;
                slot = 0;
            }
        }
    }
    if (slot) codes[w] = word;
}

/* The code of (token s, channel c) in chunk j of a tiled per-channel side, from its group's scale and zero
 * (sc, zr: the chunk's), and its dequantised fp16 into deq when given */
__device__ __forceinline__ uint32_t chunk_code(const alrd_gpu_side &sd, int j, const uint16_t *sc, const uint16_t *zr,
                                               const SrcMix &src, long s, int c, double top, uint16_t *deq,
                                               long ld_deq) {
    const size_t k = tile_where(sd, s, c).gi - (size_t)j * sd.unit_groups;
    const float sf = h2f(sc[k]), zf = h2f(zr[k]);
    const double inv_s = sf > 0.0f ? __drcp_rn((double)sf) : 0.0;
    const uint32_t q = code_of(src.get(s, c), (double)zf, inv_s, top);
    if (deq) deq[s * ld_deq + c] = f2h(dequant(q, sf, zf));
    return q;
}

/* quant_chunk_channel for every channel of chunk j of a tiled side (the
 * whole block): each (channel, group)'s scale and zero first, then each
 * lane's half-words of codes (gpu_ops.h), computed from those. */
__device__ void quant_chunk_tiled(const alrd_gpu_side &sd, int b, int j, const SrcMix &src, uint16_t *deq,
                                  long ld_deq) {
    const int R = sd.R, G = sd.G, bits = sd.bits, fw = sd.fw, np = fw / 8, ng = sd.ng, nheads = sd.d / fw;
    const int b2 = bits == 3 ? 2 : bits, m2 = (1 << b2) - 1;
    uint32_t *codes = sd.codes + (size_t)b * sd.seq_words;
    const size_t gbase = (size_t)b * sd.seq_groups + (size_t)j * sd.unit_groups;
    uint16_t *sc = sd.scales + gbase, *zr = sd.zeros + gbase;
    const double top = (double)((1u << bits) - 1);
    const long s0 = (long)j * R;
    for (int idx = threadIdx.x; idx < sd.d * ng; idx += blockDim.x) {
        const int c = idx / ng, gi = idx % ng, g0 = gi * G, m = R - g0 < G ? R - g0 : G;
        float mn = INFINITY, mx = -INFINITY;
        for (int i = 0; i < m; i++) minmax_upd(src.get(s0 + g0 + i, c), mn, mx);
        const size_t k = tile_where(sd, s0 + g0, c).gi - (size_t)j * sd.unit_groups;
        group_params(mn, mx, bits, &sc[k], &zr[k]);
    }
    __syncthreads();
    if (sd.lat) { /* the latent order: a thread per (tile, group, lane, half), its slots in order */
        for (int idx = threadIdx.x; idx < (R / 16) * nheads * 64; idx += blockDim.x) {
            const int half = idx & 1, lane = (idx >> 1) & 31, rest = idx >> 6, hd = rest % nheads, tile = rest / nheads;
            const int g = lane >> 2, t = lane & 3;
            const tile_loc L0 = tile_where(sd, s0 + tile * 16 + g, hd * fw + 2 * t + half); /* slot 0 */
            uint32_t w = 0, p1 = 0;
            for (int slot = 0; slot < fw / 4; slot++) {
                const int pi = 2 * (slot >> 2) + (slot & 1), jt = g + 8 * (slot >> 1 & 1);
                const int c = hd * fw + (pi >> 1) * 16 + 2 * t + (pi & 1) * 8 + half;
                const uint32_t q = chunk_code(sd, j, sc, zr, src, s0 + tile * 16 + jt, c, top, deq, ld_deq);
                w |= (q & m2) << (slot * b2 % 16);
                p1 |= (q >> 2 & 1u) << (slot % 16);
                if ((slot + 1) * b2 % 16 == 0 || slot + 1 == fw / 4) {
                    reinterpret_cast<uint16_t *>(codes + L0.w + 32 * (slot * b2 / 16))[half] = (uint16_t)w;
                    w = 0;
                }
                if (bits == 3 && ((slot + 1) % 16 == 0 || slot + 1 == fw / 4)) {
                    reinterpret_cast<uint16_t *>(codes + L0.w1 + 32 * (slot / 16))[half] = (uint16_t)p1;
                    p1 = 0;
                }
            }
        }
        return;
    }
    for (int idx = threadIdx.x; idx < (R / 16) * nheads * 128; idx += blockDim.x) { /* (tile, head, token, lane, half) */
        const int half = idx & 1, t = (idx >> 1) & 3, jt = (idx >> 3) & 15, rest = idx >> 7;
        const int hd = rest % nheads, i = (rest / nheads) * 16 + jt;
        const long s = s0 + i;
        uint32_t hw[8] = {0, 0, 0, 0, 0, 0, 0, 0}, p1 = 0;
        for (int pi = 0; pi < np; pi++) {
            const int c = hd * fw + (pi >> 1) * 16 + 2 * t + (pi & 1) * 8 + half;
            const uint32_t q = chunk_code(sd, j, sc, zr, src, s, c, top, deq, ld_deq);
            hw[pi * b2 / 16] |= (q & m2) << (pi * b2 % 16);
            p1 |= (q >> 2 & 1u) << pi;
        }
        const tile_loc L = tile_where(sd, s, hd * fw + 2 * t + half); /* pair 0: the lane's first half-word */
        for (int w = 0; w < np * b2 / 16; w++) reinterpret_cast<uint16_t *>(codes + L.w + w)[half] = (uint16_t)hw[w];
        if (bits == 3) {
            if (np <= 8) reinterpret_cast<uint8_t *>(codes + L.w1)[(jt >> 3) + 2 * half] = (uint8_t)p1;
            else reinterpret_cast<uint16_t *>(codes + L.w1)[half] = (uint16_t)p1;
        }
    }
}

/* Per-token quantisation of token s of a tiled side (the whole block): each
 * group's scale and zero by a warp (quant_token_warps' reduction), every
 * code by a thread of its own into shared memory, then each lane g's
 * half-words of its blocks' codes packed from there (gpu_ops.h). */
__device__ void quant_token_tiled(const alrd_gpu_side &sd, int b, long s, const SrcMix &src, uint16_t *deq,
                                  long ld_deq) {
    __shared__ uint8_t qs[TILED_TOKEN_MAX];
    const int lane = threadIdx.x & 31, d = sd.d, G = sd.G, bits = sd.bits, fw = sd.fw, nnt = fw / 8;
    const int b2 = bits == 3 ? 2 : bits, m2 = (1 << b2) - 1, par = (int)(s & 1), kh = (int)(s & 15) >> 3;
    uint32_t *codes = sd.codes + (size_t)b * sd.seq_words;
    const size_t gbase = (size_t)b * sd.seq_groups + (size_t)(s / TILED_VUNIT) * sd.unit_groups + (s % TILED_VUNIT);
    uint16_t *sc = sd.scales + gbase, *zr = sd.zeros + gbase; /* group gi at [gi * TILED_VUNIT] */
    const double top = (double)((1u << bits) - 1);
    for (int gi = threadIdx.x >> 5; gi < sd.ng; gi += blockDim.x >> 5) {
        const int g0 = gi * G, g1 = g0 + G < d ? g0 + G : d;
        float mn = INFINITY, mx = -INFINITY;
        for (int c = g0 + lane; c < g1; c += 32) minmax_upd(src.get(s, c), mn, mx);
        for (int o = 16; o; o >>= 1) {
            mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, o)); /* fminf drops a NaN, as minmax_upd */
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        }
        if (lane == 0) group_params(mn, mx, bits, &sc[gi * TILED_VUNIT], &zr[gi * TILED_VUNIT]);
    }
    __syncthreads();
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        const float sf = h2f(sc[c / G * TILED_VUNIT]), zf = h2f(zr[c / G * TILED_VUNIT]);
        const double inv_s = sf > 0.0f ? __drcp_rn((double)sf) : 0.0;
        const uint32_t q = code_of(src.get(s, c), (double)zf, inv_s, top);
        if (deq) deq[s * ld_deq + c] = f2h(dequant(q, sf, zf));
        qs[c] = (uint8_t)q;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < d / fw * 8; idx += blockDim.x) { /* (block, lane g) */
        const int c0 = (idx >> 3) * fw + (idx & 7);
        uint32_t hw[8] = {0, 0, 0, 0, 0, 0, 0, 0}, p1 = 0;
        for (int jj = 0; jj < nnt; jj++) {
            const uint32_t q = qs[c0 + 8 * jj];
            hw[jj * b2 / 16] |= (q & m2) << (jj * b2 % 16);
            p1 |= (q >> 2 & 1u) << jj;
        }
        const tile_loc L = tile_where(sd, s, c0);
        for (int w = 0; w < (nnt * b2 + 15) / 16; w++) reinterpret_cast<uint16_t *>(codes + L.w + w)[par] = (uint16_t)hw[w];
        if (bits == 3) {
            if (nnt <= 8) reinterpret_cast<uint8_t *>(codes + L.w1)[kh + 2 * par] = (uint8_t)p1;
            else reinterpret_cast<uint16_t *>(codes + L.w1)[par] = (uint16_t)p1;
        }
    }
    __syncthreads(); /* qs is free for the block's next token */
}

/* Per-token quantisation of word w of token s (unit s) of sequence b. The
 * thread whose word holds a group's first element writes its scale/zero. */
__device__ void quant_token_word(const alrd_gpu_side &sd, int b, long s, int w, const SrcMix &src,
                                 uint16_t *deq, long ld_deq) {
    const int d = sd.d, G = sd.G, bits = sd.bits, cpw = sd.cpw;
    const int i0 = w * cpw, i1 = i0 + cpw < d ? i0 + cpw : d;
    size_t goff = (size_t)b * sd.seq_groups + (size_t)s * sd.unit_groups;
    const double top = (double)((1u << bits) - 1);
    uint32_t word = 0;
    int cur = -1;
    float sf = 0, zf = 0;
    double z = 0, inv_s = 0;
    for (int i = i0; i < i1; i++) {
        int gi = i / G;
        if (gi != cur) {
            int g0 = gi * G, g1 = g0 + G < d ? g0 + G : d;
            float mn = INFINITY, mx = -INFINITY;
            for (int k = g0; k < g1; k++) minmax_upd(src.get(s, k), mn, mx);
            uint16_t hs, hz;
            group_params(mn, mx, bits, &hs, &hz);
            if (g0 >= i0 && g0 < i1) {
                sd.scales[goff + gi] = hs;
                sd.zeros[goff + gi] = hz;
            }
            sf = h2f(hs);
            zf = h2f(hz);
            z = (double)zf;
            inv_s = sf > 0.0f ? __drcp_rn((double)sf) : 0.0;
            cur = gi;
        }
        uint32_t q = code_of(src.get(s, i), z, inv_s, top);
        word |= q << ((i - i0) * bits);
        if (deq) deq[s * ld_deq + i] = f2h(dequant(q, sf, zf));
    }
    sd.codes[(size_t)b * sd.seq_words + (size_t)s * sd.unit_words + w] = word;
}

/* Can quant_token_warps quantise this side's tokens: whole groups of a
 * multiple of 32 channels, each word inside one group? */
__device__ __forceinline__ bool token_warps_ok(const alrd_gpu_side &sd) {
    return sd.G % 32 == 0 && 32 % sd.cpw == 0 && sd.d % sd.G == 0;
}

/* quant_token_word for all words of token s at once, a warp per group: the
 * lanes read the group's channels together, reduce min / max by shuffles
 * and OR their codes into words, instead of one thread walking a group per
 * word (the same values, bit for bit). The block's warps share the groups. */
__device__ void quant_token_warps(const alrd_gpu_side &sd, int b, long s, const SrcMix &src, uint16_t *deq,
                                  long ld_deq) {
    const int lane = threadIdx.x & 31, G = sd.G, bits = sd.bits, cpw = sd.cpw, per = G / 32;
    const size_t goff = (size_t)b * sd.seq_groups + (size_t)s * sd.unit_groups;
    uint32_t *words = sd.codes + (size_t)b * sd.seq_words + (size_t)s * sd.unit_words;
    const double top = (double)((1u << bits) - 1);
    for (int gi = threadIdx.x >> 5; gi < sd.d / G; gi += blockDim.x >> 5) {
        const int g0 = gi * G;
        float mn = INFINITY, mx = -INFINITY;
        for (int r = 0; r < per; r++) minmax_upd(src.get(s, g0 + 32 * r + lane), mn, mx);
        for (int o = 16; o; o >>= 1) {
            mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, o)); /* fminf drops a NaN, as minmax_upd */
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        }
        uint16_t hs, hz;
        group_params(mn, mx, bits, &hs, &hz);
        if (lane == 0) sd.scales[goff + gi] = hs, sd.zeros[goff + gi] = hz;
        const float sf = h2f(hs), zf = h2f(hz);
        const double inv_s = sf > 0.0f ? __drcp_rn((double)sf) : 0.0;
        for (int r = 0; r < per; r++) {
            const int c = g0 + 32 * r + lane;
            const uint32_t q = code_of(src.get(s, c), (double)zf, inv_s, top);
            if (deq) deq[s * ld_deq + c] = f2h(dequant(q, sf, zf));
            const uint32_t mine = q << ((lane % cpw) * bits);
            for (int k = 0; k < 32 / cpw; k++) {
                const uint32_t wd = __reduce_or_sync(0xffffffffu, lane / cpw == k ? mine : 0u);
                if (lane == 0) words[(g0 + 32 * r) / cpw + k] = wd;
            }
        }
    }
}

/* All words of token s: a warp per group where the layout allows it, else
 * a thread per word. */
__device__ __forceinline__ void quant_token(const alrd_gpu_side &sd, int b, long s, const SrcMix &src, uint16_t *deq,
                                           long ld_deq) {
    if (sd.fw) quant_token_tiled(sd, b, s, src, deq, ld_deq);
    else if (token_warps_ok(sd)) quant_token_warps(sd, b, s, src, deq, ld_deq);
    else for (int w = threadIdx.x; w < sd.wpr; w += blockDim.x) quant_token_word(sd, b, s, w, src, deq, ld_deq);
}

__device__ __forceinline__ float rope_elem(const float *x, int c, int hd, const float *cs, const float *sn) {
    int i = c % hd, half = hd / 2;
    if (i < half) return x[c] * cs[i] - x[c + half] * sn[i];
    return x[c] * cs[i - half] + x[c - half] * sn[i - half];
}

/* ---- elementwise ------------------------------------------------------ */

__global__ void embed_kernel(const uint16_t *emb, const int32_t *tok, int H, float *h) {
    int t = blockIdx.x;
    const uint16_t *e = emb + (size_t)tok[t] * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x) h[(size_t)t * H + i] = h2f(e[i]);
}

extern "C" int alrd_gpu_embed(const uint16_t *emb, const int32_t *tok, int T, int H, float *h, void *stream) {
    embed_kernel<<<T, 256, 0, ST(stream)>>>(emb, tok, H, h);
    return LAUNCHED();
}

__device__ double block_sum_d(double v, double *red) {
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[w] = v;
    __syncthreads();
    double s = 0;
    for (int i = 0; i < nw; i++) s += red[i];
    return s;
}

__device__ float block_max_f(float v, float *red) {
    for (int o = 16; o; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[w] = v;
    __syncthreads();
    float m = -INFINITY;
    for (int i = 0; i < nw; i++) m = fmaxf(m, red[i]);
    return m;
}

__device__ float block_sum_f(float v, float *red) {
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[w] = v;
    __syncthreads();
    float s = 0;
    for (int i = 0; i < nw; i++) s += red[i];
    return s;
}

/* One row per block. Rows of H <= 4 * RMS_V4 * blockDim floats (H % 4 == 0)
 * are held in registers: every load is issued before the reduction, so a
 * row costs one memory round trip (a decode step runs 2L + 1 of these). */
#define RMS_THREADS 256
#define RMS_V4 8
__global__ void __launch_bounds__(RMS_THREADS) rmsnorm_kernel(const float *x, const float *w, int H, float eps,
                                                              uint16_t *out) {
    __shared__ double red[32];
    pdl_trigger();
    pdl_wait();
    const float *xr = x + (size_t)blockIdx.x * H;
    uint16_t *o = out + (size_t)blockIdx.x * H;
    double ss = 0;
    if (H % 4 == 0 && H <= 4 * RMS_V4 * RMS_THREADS) {
        const int n4 = H / 4;
        float4 v[RMS_V4];
#pragma unroll
        for (int k = 0; k < RMS_V4; k++) {
            const int i = threadIdx.x + k * RMS_THREADS;
            v[k] = i < n4 ? reinterpret_cast<const float4 *>(xr)[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            ss += (double)v[k].x * v[k].x + (double)v[k].y * v[k].y + (double)v[k].z * v[k].z + (double)v[k].w * v[k].w;
        }
        ss = block_sum_d(ss, red);
        const float r = 1.0f / sqrtf((float)(ss / H) + eps);
#pragma unroll
        for (int k = 0; k < RMS_V4; k++) {
            const int i = threadIdx.x + k * RMS_THREADS;
            if (i < n4) {
                const float4 g = reinterpret_cast<const float4 *>(w)[i];
                uint2 pk;
                pk.x = (uint32_t)f2h(v[k].x * r * g.x) | (uint32_t)f2h(v[k].y * r * g.y) << 16;
                pk.y = (uint32_t)f2h(v[k].z * r * g.z) | (uint32_t)f2h(v[k].w * r * g.w) << 16;
                reinterpret_cast<uint2 *>(o)[i] = pk;
            }
        }
        return;
    }
    for (int i = threadIdx.x; i < H; i += blockDim.x) ss += (double)xr[i] * xr[i];
    ss = block_sum_d(ss, red);
    float r = 1.0f / sqrtf((float)(ss / H) + eps);
    for (int i = threadIdx.x; i < H; i += blockDim.x) o[i] = f2h(xr[i] * r * w[i]);
}

extern "C" int alrd_gpu_rmsnorm(const float *x, const float *w, int T, int H, float eps, uint16_t *out,
                                int pdl, void *stream) {
    return launch_pdl(pdl, rmsnorm_kernel, T, RMS_THREADS, 0, ST(stream), x, w, H, eps, out);
}

/* fp16(silu(g) * u): the SwiGLU of silu_mul_kernel and of the gate/up product's epilogue (the same bits) */
__device__ __forceinline__ uint16_t swiglu_h(float g, float u) { return f2h(g / (1.0f + expf(-g)) * u); }

/* An element per thread over all rows: a decode step has one row of ffn
 * elements, which a block per row would walk serially. */
__global__ void silu_mul_kernel(const float *gu, int ffn, long total, uint16_t *out) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    pdl_trigger();
    pdl_wait();
    if (i >= total) return;
    const long t = i / ffn, c = i % ffn;
    const float *g = gu + t * 2 * ffn;
    out[i] = swiglu_h(g[c], g[ffn + c]);
}

extern "C" int alrd_gpu_silu_mul(const float *gu, int T, int ffn, uint16_t *out, int pdl, void *stream) {
    const long total = (long)T * ffn;
    return launch_pdl(pdl, silu_mul_kernel, (unsigned)((total + 255) / 256), 256, 0, ST(stream), gu, ffn, total, out);
}

/* The query part of a q|k|v row: (+ bias), RoPE at position p, fp16. */
__device__ void rope_q_row(const float *row, int n_heads, int hd, const float *bq, int p, const float *cos_tab,
                           const float *sin_tab, uint16_t *q16) {
    const int half = hd / 2;
    const float *cs = cos_tab + (size_t)p * half, *sn = sin_tab + (size_t)p * half;
    for (int i = threadIdx.x; i < n_heads * half; i += blockDim.x) {
        int h = i / half, j = i % half, c = h * hd + j;
        float x1 = row[c], x2 = row[c + half];
        if (bq) x1 += bq[c], x2 += bq[c + half];
        q16[c] = f2h(x1 * cs[j] - x2 * sn[j]);
        q16[c + half] = f2h(x2 * cs[j] + x1 * sn[j]);
    }
}

__global__ void qkv_post_kernel(float *qkv, int ld, int n_heads, int hd, int dk, int dv, const float *bq,
                                const float *bk, const float *bv, const int *pos_dev, int pos0,
                                const float *cos_tab, const float *sin_tab, uint16_t *q16, uint16_t *k16,
                                uint16_t *v16, int ld16k, int ld16v) {
    int t = blockIdx.x, qd = n_heads * hd;
    pdl_trigger();
    pdl_wait();
    int p = pos_dev ? pos_dev[t] : pos0 + t;
    float *row = qkv + (size_t)t * ld;
    rope_q_row(row, n_heads, hd, bq, p, cos_tab, sin_tab, q16 + (size_t)t * qd);
    float *k = row + qd, *v = k + dk;
    for (int c = threadIdx.x; c < dk; c += blockDim.x) {
        float x = k[c];
        if (bk) k[c] = x = x + bk[c];
        if (k16) k16[(size_t)(pos0 + t) * ld16k + c] = f2h(x);
    }
    for (int c = threadIdx.x; c < dv; c += blockDim.x) {
        float x = v[c];
        if (bv) v[c] = x = x + bv[c];
        if (v16) v16[(size_t)(pos0 + t) * ld16v + c] = f2h(x);
    }
}

extern "C" int alrd_gpu_qkv_post(float *qkv, int T, int ld, int n_heads, int hd, int dk, int dv,
                                 const float *bq, const float *bk, const float *bv, const int *pos_dev,
                                 int pos0, const float *cos_tab, const float *sin_tab, uint16_t *q16,
                                 uint16_t *k16, uint16_t *v16, int ld16k, int ld16v, int pdl, void *stream) {
    return launch_pdl(pdl, qkv_post_kernel, T, 256, 0, ST(stream), qkv, ld, n_heads, hd, dk, dv, bq, bk, bv, pos_dev,
                      pos0, cos_tab, sin_tab, q16, k16, v16, ld16k, ld16v);
}

template <typename Tin>
__device__ __forceinline__ float load_as_f32(const Tin *p);
template <> __device__ __forceinline__ float load_as_f32<float>(const float *p) { return *p; }
template <> __device__ __forceinline__ float load_as_f32<uint16_t>(const uint16_t *p) { return h2f(*p); }

template <typename Tin>
__global__ void rope_rows_kernel(const Tin *in, int ld_in, const float *bias, int r0, int n_heads, int hd,
                                 const float *cos_tab, const float *sin_tab, uint16_t *out, int ld_out) {
    int r = r0 + blockIdx.x, half = hd / 2;
    const Tin *x = in + (size_t)r * ld_in;
    const float *cs = cos_tab + (size_t)r * half, *sn = sin_tab + (size_t)r * half;
    for (int i = threadIdx.x; i < n_heads * half; i += blockDim.x) {
        int h = i / half, j = i % half, c = h * hd + j;
        float x1 = load_as_f32(x + c), x2 = load_as_f32(x + c + half);
        if (bias) x1 += bias[c], x2 += bias[c + half];
        out[(size_t)r * ld_out + c] = f2h(x1 * cs[j] - x2 * sn[j]);
        out[(size_t)r * ld_out + c + half] = f2h(x2 * cs[j] + x1 * sn[j]);
    }
}

extern "C" int alrd_gpu_rope_rows(const float *in32, const uint16_t *in16, int ld_in, const float *bias,
                                  int r0, int r1, int n_heads, int hd, const float *cos_tab,
                                  const float *sin_tab, uint16_t *out16, int ld_out, void *stream) {
    if (r1 <= r0) return 0;
    if (in32)
        rope_rows_kernel<float><<<r1 - r0, 256, 0, ST(stream)>>>(in32, ld_in, bias, r0, n_heads, hd, cos_tab,
                                                                 sin_tab, out16, ld_out);
    else
        rope_rows_kernel<uint16_t><<<r1 - r0, 256, 0, ST(stream)>>>(in16, ld_in, bias, r0, n_heads, hd,
                                                                    cos_tab, sin_tab, out16, ld_out);
    return LAUNCHED();
}

/* ---- cache appends ---------------------------------------------------- */

/* Columns c0 .. c1 - 1 of token s (RoPE'd fp16 rows: whole heads). */
__device__ void write_row(const alrd_gpu_side &sd, int b, long s, const float *x, int hd, const float *cos_tab,
                          const float *sin_tab, int c0 = 0, int c1 = -1) {
    if (c1 < 0) c1 = sd.d;
    if (sd.bits == 16) {
        uint16_t *dst = sd.rows + (size_t)b * sd.seq_rows + (size_t)s * sd.d;
        const float *cs = cos_tab + (size_t)s * (hd / 2), *sn = sin_tab + (size_t)s * (hd / 2);
        for (int c = c0 + threadIdx.x; c < c1; c += blockDim.x)
            dst[c] = f2h(sd.roped ? rope_elem(x, c, hd, cs, sn) : x[c]);
    } else {
        uint16_t *dst = sd.ring + (size_t)b * sd.seq_ring + (size_t)(s % sd.R) * sd.d;
        for (int c = c0 + threadIdx.x; c < c1; c += blockDim.x) dst[c] = f2h(x[c]);
    }
}

/* Sequence b's new token x (fp32, position p) into one side of its cache
 * (the whole block). */
__device__ void append_row(const alrd_gpu_side &sd, int b, const float *x, int p, int hd, const float *cos_tab,
                           const float *sin_tab) {
    const int n = p + 1;
    if (sd.bits == 16) {
        write_row(sd, b, p, x, hd, cos_tab, sin_tab);
        return;
    }
    SrcMix m = {x, 0, p, sd.ring + (size_t)b * sd.seq_ring, sd.R, sd.d};
    if (sd.per_channel) {
        if (n % sd.R == 0 && sd.fw)
            quant_chunk_tiled(sd, b, n / sd.R - 1, m, 0, 0);
        else if (n % sd.R == 0)
            for (int c = threadIdx.x; c < sd.d; c += blockDim.x) quant_chunk_channel(sd, b, n / sd.R - 1, c, m, 0, 0);
        else
            write_row(sd, b, p, x, hd, cos_tab, sin_tab);
    } else if (sd.R == 0) {
        quant_token(sd, b, p, m, 0, 0);
    } else {
        if (p >= sd.R) quant_token(sd, b, p - sd.R, m, 0, 0); /* the oldest residual token leaves the window;
                                                                 it shares the new token's ring row */
        __syncthreads();
        write_row(sd, b, p, x, hd, cos_tab, sin_tab);
    }
}

__global__ void append_decode_kernel(alrd_gpu_side k, alrd_gpu_side v, const float *src, int ld, int kcol,
                                     int vcol, const int *pos, int hd, const float *cos_tab,
                                     const float *sin_tab) {
    const int b = blockIdx.x;
    pdl_trigger();
    pdl_wait();
    append_row(blockIdx.y ? v : k, b, src + (size_t)b * ld + (blockIdx.y ? vcol : kcol), pos[b], hd, cos_tab, sin_tab);
}

/* qkv_post and append_decode of a decode step in one launch: blocks (b, 0,
 * z) RoPE slice z of sequence b's query heads, (b, 1, z) and (b, 2, z) add
 * the key / value bias in place and append the token to that side of the
 * cache (an fp16 side in slices of whole heads, a quantised one by block
 * z = 0). A slice is QKV_SLICE columns or fewer, so a large model's row
 * (Llama-2-7B: 4096 per part) is spread over more blocks than three. */
#define QKV_SLICE 256
__global__ void qkv_append_kernel(float *qkv, int ld, int n_heads, int hd, int dk, const float *bq, const float *bk,
                                  const float *bv, const int *pos, const float *cos_tab, const float *sin_tab,
                                  uint16_t *q16, alrd_gpu_side k, alrd_gpu_side v) {
    const int b = blockIdx.x, part = blockIdx.y, z = blockIdx.z, nz = gridDim.z, qd = n_heads * hd;
    pdl_trigger();
    pdl_wait();
    const int p = pos[b];
    float *row = qkv + (size_t)b * ld;
    if (part == 0) {
        const int hps = (n_heads + nz - 1) / nz, h0 = z * hps, nh = min(n_heads - h0, hps);
        if (nh > 0)
            rope_q_row(row + (size_t)h0 * hd, nh, hd, bq ? bq + (size_t)h0 * hd : NULL, p, cos_tab, sin_tab,
                       q16 + (size_t)b * qd + (size_t)h0 * hd);
        return;
    }
    const alrd_gpu_side &sd = part == 1 ? k : v;
    float *x = row + qd + (part == 1 ? 0 : dk);
    const float *bias = part == 1 ? bk : bv;
    int c0 = 0, c1 = sd.d;
    if (sd.bits == 16) {
        const int len = ((sd.d + nz - 1) / nz + hd - 1) / hd * hd;
        c0 = min(sd.d, z * len), c1 = min(sd.d, c0 + len);
    } else if (z > 0) {
        return;
    }
    if (c0 >= c1) return;
    if (bias) { /* uniform per block */
        for (int c = c0 + threadIdx.x; c < c1; c += blockDim.x) x[c] += bias[c];
        __syncthreads();
    }
    if (sd.bits == 16) write_row(sd, b, p, x, hd, cos_tab, sin_tab, c0, c1);
    else append_row(sd, b, x, p, hd, cos_tab, sin_tab);
}

extern "C" int alrd_gpu_qkv_append_decode(float *qkv, int B, int ld, int n_heads, int hd, int dk, const float *bq,
                                          const float *bk, const float *bv, const int *pos_dev, const float *cos_tab,
                                          const float *sin_tab, uint16_t *q16, const alrd_gpu_side *k,
                                          const alrd_gpu_side *v, int pdl, void *stream) {
    /* slices for up to 4 sequences (3B blocks leave the GPU idle): Llama-2-7B batch 1 4.956 / 4.969 -> 4.904 /
     * 4.885 ms a step; at batch 16 SmolLM2's 144 blocks were enough and slices cost 3-4% (H200, session 6,
     * results/session6/qkv-slices-h200.log) */
    const int widest = max(n_heads * hd, max(k->d, v->d)), nz = B <= 4 ? max(1, cdiv(widest, QKV_SLICE)) : 1;
    return launch_pdl(pdl, qkv_append_kernel, dim3(B, 3, nz), 256, 0, ST(stream), qkv, ld, n_heads, hd, dk, bq, bk, bv,
                      pos_dev, cos_tab, sin_tab, q16, *k, *v);
}

extern "C" int alrd_gpu_append_decode(const alrd_gpu_side *k, const alrd_gpu_side *v, const float *src,
                                      int ld, int kcol, int vcol, int B, const int *pos_dev, int hd,
                                      const float *cos_tab, const float *sin_tab, int pdl, void *stream) {
    return launch_pdl(pdl, append_decode_kernel, dim3(B, 2), 256, 0, ST(stream), *k, *v, src, ld, kcol, vcol, pos_dev,
                      hd, cos_tab, sin_tab);
}

__global__ void chunks_kernel(alrd_gpu_side sd, int b, int j0, SrcMix m, uint16_t *deq, long ld_deq) {
    int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (sd.fw) quant_chunk_tiled(sd, b, j0 + blockIdx.x, m, deq, ld_deq); /* a block per chunk (chunks_grid) */
    else if (c < sd.d) quant_chunk_channel(sd, b, j0 + blockIdx.x, c, m, deq, ld_deq);
}

/* chunks_kernel's grid for n chunks: a block per (chunk, 128 channels), or per chunk when tiled */
static dim3 chunks_grid(const alrd_gpu_side &s, int n) { return dim3(n, s.fw ? 1 : cdiv(s.d, 128)); }

__global__ void tokens_kernel(alrd_gpu_side sd, int b, long s0, SrcMix m, uint16_t *deq, long ld_deq) {
    quant_token(sd, b, s0 + blockIdx.x, m, deq, ld_deq);
}

/* rows [s0, s1) of fp32 src (row s - p0) into the ring / fp16 rows */
__global__ void rows_kernel(alrd_gpu_side sd, int b, long s0, const float *src, long ld, long p0, int hd,
                            const float *cos_tab, const float *sin_tab) {
    long s = s0 + blockIdx.x;
    write_row(sd, b, s, src + (s - p0) * ld, hd, cos_tab, sin_tab);
}

extern "C" int alrd_gpu_append_prefill(const alrd_gpu_side *sd, int b, const float *src, int ld, int col,
                                       int p0, int T, int hd, const float *cos_tab, const float *sin_tab,
                                       uint16_t *deq16, int ld_deq, void *stream) {
    const alrd_gpu_side s = *sd;
    const int n1 = p0 + T;
    cudaStream_t st = ST(stream);
    if (s.bits == 16) {
        rows_kernel<<<T, 256, 0, st>>>(s, b, p0, src + col, ld, p0, hd, cos_tab, sin_tab);
        return LAUNCHED();
    }
    int q0 = alrd_gpu_side_quantized(sd, p0), q1 = alrd_gpu_side_quantized(sd, n1);
    SrcMix m = {src + col, ld, p0, s.ring + (size_t)b * s.seq_ring, s.R, s.d};
    if (q1 > q0) {
        if (s.per_channel)
            chunks_kernel<<<chunks_grid(s, (q1 - q0) / s.R), s.fw ? 256 : 128, 0, st>>>(s, b, q0 / s.R, m, deq16, ld_deq);
        else
            tokens_kernel<<<q1 - q0, 128, 0, st>>>(s, b, q0, m, deq16, ld_deq);
    }
    int r0 = q1 > p0 ? q1 : p0;
    if (n1 > r0) rows_kernel<<<n1 - r0, 256, 0, st>>>(s, b, r0, src + col, ld, p0, hd, cos_tab, sin_tab);
    return LAUNCHED();
}

extern "C" int alrd_gpu_fake_quant(const alrd_gpu_side *sd, int b, const float *src, int ld, int col, int T,
                                   uint16_t *out, int ld_out, void *stream) {
    const alrd_gpu_side s = *sd;
    if (s.bits == 16) return 0;
    SrcMix m = {src + col, ld, 0, s.ring, s.R > 0 ? s.R : 1, s.d};
    cudaStream_t st = ST(stream);
    if (s.per_channel) {
        if (T / s.R > 0) chunks_kernel<<<chunks_grid(s, T / s.R), s.fw ? 256 : 128, 0, st>>>(s, b, 0, m, out, ld_out);
    } else {
        tokens_kernel<<<T, 128, 0, st>>>(s, b, 0, m, out, ld_out);
    }
    return LAUNCHED();
}

/* ---- materialisation -------------------------------------------------- */

__global__ void materialize_kernel(alrd_gpu_side sd, int b, int q, int n_rows, uint16_t *out, int ld_out) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)n_rows * sd.d) return;
    long s = (long)(idx / sd.d);
    int c = (int)(idx % sd.d);
    uint16_t v;
    if (sd.bits == 16) v = sd.rows[(size_t)b * sd.seq_rows + (size_t)s * sd.d + c];
    else v = s >= q ? sd.ring[(size_t)b * sd.seq_ring + (size_t)(s % sd.R) * sd.d + c] : f2h(side_value(sd, b, q, s, c));
    out[(size_t)s * ld_out + c] = v;
}

extern "C" int alrd_gpu_materialize(const alrd_gpu_side *sd, int b, int n, int n_rows, uint16_t *out,
                                    int ld_out, void *stream) {
    if (n_rows <= 0) return 0;
    size_t total = (size_t)n_rows * sd->d;
    materialize_kernel<<<(unsigned)((total + 255) / 256), 256, 0, ST(stream)>>>(
        *sd, b, alrd_gpu_side_quantized(sd, n), n_rows, out, ld_out);
    return LAUNCHED();
}

/* ---- attention softmax ------------------------------------------------ */

__device__ __forceinline__ long quantized_at(int mode, long n, int R) {
    if (mode == 1) return n - n % R;
    if (mode == 2) return n > R ? n - R : 0;
    return 0;
}

__global__ void softmax_kernel(const float *S, const float *Sq, uint16_t *P, uint16_t *Pq, size_t hs, int nk,
                               int p0, float scale, int first, int R, int k_mode, int v_mode) {
    __shared__ float red[32];
    const int t = blockIdx.x, h = blockIdx.y;
    const size_t off = (size_t)h * hs + (size_t)t * nk;
    const float *sr = S + off;
    const float *sq = Sq ? Sq + off : 0;
    uint16_t *pr = P + off, *pq = Pq ? Pq + off : 0;
    long last = (long)p0 + t; /* causal: keys s <= last */
    int sel = sq && t >= first;
    long kq = sel ? quantized_at(k_mode, last + 1, R) : 0;
    long vq = (Pq && t >= first) ? quantized_at(v_mode, last + 1, R) : 0;
    float mx = -INFINITY;
    for (int s = threadIdx.x; s < nk && s <= last; s += blockDim.x) mx = fmaxf(mx, (s < kq ? sq[s] : sr[s]) * scale);
    mx = block_max_f(mx, red);
    float sum = 0;
    for (int s = threadIdx.x; s < nk && s <= last; s += blockDim.x) sum += expf((s < kq ? sq[s] : sr[s]) * scale - mx);
    sum = block_sum_f(sum, red);
    float inv = 1.0f / sum;
    for (int s = threadIdx.x; s < nk; s += blockDim.x) {
        float p = s <= last ? expf((s < kq ? sq[s] : sr[s]) * scale - mx) * inv : 0.0f;
        uint16_t hp = f2h(p);
        if (pq) {
            pq[s] = s < vq ? hp : 0;
            pr[s] = s < vq ? 0 : hp;
        } else {
            pr[s] = hp;
        }
    }
}

extern "C" int alrd_gpu_softmax(const float *S, const float *Sq, uint16_t *P, uint16_t *Pq, int n_heads,
                                size_t hs, int T, int nk, int p0, float scale, int first, int R, int k_mode,
                                int v_mode, void *stream) {
    softmax_kernel<<<dim3(T, n_heads), 256, 0, ST(stream)>>>(S, Sq, P, Pq, hs, nk, p0, scale, first, R,
                                                             k_mode, v_mode);
    return LAUNCHED();
}

/* ---- decode products ------------------------------------------------- */

/* The decode step's products, Y[m] = W . X[m] for M <= 4 rows: memory-bound,
 * every weight read once per step. A block of 8 warps takes 8 / KS rows, KS
 * warps per row: warp slice s of a row reads its 512-byte pieces s, s + KS,
 * ..., each lane 16 bytes of a piece, U pieces in flight while the previous
 * U are used; the slices' sums meet in shared memory. Two warps per short
 * row (a few pieces) give a small model's products twice the blocks. The
 * first pieces are requested before pdl_wait(), so the weight stream starts
 * while the kernel before this one finishes.
 * Fused forms: GEMV_NORM, X = fp16(RMSNorm(h[m]) * gamma), made by each block
 * into shared memory from the fp32 residual stream (the arithmetic of
 * rmsnorm_kernel, so the same bits); GEMV_GLU, a warp takes row j of the gate
 * half (W rows 0..N-1) and row j of the up half (rows N..2N-1) and writes
 * fp16(silu(gate) * up). */
#define GEMV_WARPS 8
enum { GEMV_NORM = 1, GEMV_GLU = 2 };

template <int MB, int MODE, int KS>
__global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_kernel(alrd_gpu_gemv_op a) {
    constexpr bool NORM = MODE & GEMV_NORM, GLU = MODE & GEMV_GLU;
    constexpr int NR = GLU ? 2 : 1; /* weight rows per warp */
    constexpr int U = 4 / NR;       /* pieces of each row per stage */
    extern __shared__ uint4 gemv_xs[];
    __shared__ float part[GEMV_WARPS][NR * MB];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, N = a.N, K8 = a.K / 8;
    const int rpb = GEMV_WARPS / KS, sl = warp / rpb, n = blockIdx.x * rpb + warp % rpb;
    const int npc = (K8 + 31) / 32; /* 512-byte pieces of a row */
    pdl_trigger();
    const uint4 *W = reinterpret_cast<const uint4 *>(a.W);
    const uint4 *wr[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) wr[r] = W + ((size_t)(n < N ? n : 0) + (size_t)r * N) * K8;
    uint4 nx[NR][U];
    auto fetch = [&](int c0) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int k = (c0 + KS * u) * 32 + lane;
#pragma unroll
            for (int r = 0; r < NR; r++) nx[r][u] = k < K8 ? __ldg(wr[r] + k) : make_uint4(0, 0, 0, 0);
        }
    };
    if (n < N) fetch(sl);
    pdl_wait();
    const uint16_t *X = a.X;
    size_t ldx = a.ldx;
    if (NORM) { /* every warp of the block takes part, also those without a row */
        __shared__ double red[32];
        uint16_t *xs = reinterpret_cast<uint16_t *>(gemv_xs);
        const int K = a.K, n4 = K / 4;
        for (int m = 0; m < MB; m++) {
            const float4 *hr = reinterpret_cast<const float4 *>(a.h + (size_t)m * a.ldh);
            double ss = 0;
            for (int i = threadIdx.x; i < n4; i += blockDim.x) {
                const float4 v = hr[i];
                ss += (double)v.x * v.x + (double)v.y * v.y + (double)v.z * v.z + (double)v.w * v.w;
            }
            ss = block_sum_d(ss, red);
            const float rs = 1.0f / sqrtf((float)(ss / K) + a.eps);
            for (int i = threadIdx.x; i < n4; i += blockDim.x) {
                const float4 v = hr[i], g = reinterpret_cast<const float4 *>(a.gamma)[i];
                uint2 pk;
                pk.x = (uint32_t)f2h(v.x * rs * g.x) | (uint32_t)f2h(v.y * rs * g.y) << 16;
                pk.y = (uint32_t)f2h(v.z * rs * g.z) | (uint32_t)f2h(v.w * rs * g.w) << 16;
                reinterpret_cast<uint2 *>(xs + (size_t)m * K)[i] = pk;
            }
        }
        __syncthreads();
        X = xs;
        ldx = K;
    }
    float acc[NR][MB];
#pragma unroll
    for (int r = 0; r < NR; r++)
#pragma unroll
        for (int m = 0; m < MB; m++) acc[r][m] = 0.0f;
    if (n < N)
        for (int c0 = sl; c0 < npc; c0 += KS * U) {
            uint4 wv[NR][U];
#pragma unroll
            for (int r = 0; r < NR; r++)
#pragma unroll
                for (int u = 0; u < U; u++) wv[r][u] = nx[r][u];
            if (c0 + KS * U < npc) fetch(c0 + KS * U);
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int k = (c0 + KS * u) * 32 + lane;
                if (k >= K8) break;
#pragma unroll
                for (int m = 0; m < MB; m++) {
                    const uint4 xv = *reinterpret_cast<const uint4 *>(X + (size_t)m * ldx + (size_t)k * 8);
                    const __half2 *xh = reinterpret_cast<const __half2 *>(&xv);
#pragma unroll
                    for (int r = 0; r < NR; r++) {
                        const __half2 *wh = reinterpret_cast<const __half2 *>(&wv[r][u]);
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            float2 w2 = __half22float2(wh[e]), x2 = __half22float2(xh[e]);
                            acc[r][m] += w2.x * x2.x + w2.y * x2.y;
                        }
                    }
                }
            }
        }
#pragma unroll
    for (int r = 0; r < NR; r++)
#pragma unroll
        for (int m = 0; m < MB; m++) {
            for (int o = 16; o; o >>= 1) acc[r][m] += __shfl_xor_sync(0xffffffffu, acc[r][m], o);
            if (KS > 1 && lane == 0) part[warp][r * MB + m] = acc[r][m];
        }
    if (KS > 1) {
        __syncthreads();
        if (sl == 0)
#pragma unroll
            for (int r = 0; r < NR; r++)
#pragma unroll
                for (int m = 0; m < MB; m++)
                    for (int j = 1; j < KS; j++) acc[r][m] += part[warp + j * rpb][r * MB + m];
    }
    if (n >= N || sl != 0 || lane != 0) return;
#pragma unroll
    for (int m = 0; m < MB; m++) {
        if (GLU) {
            a.act[(size_t)m * a.ldact + n] = swiglu_h(acc[0][m], acc[NR - 1][m]);
        } else {
            float *y = a.Y + (size_t)m * a.ldy + n;
            *y = a.beta != 0.0f ? acc[0][m] + a.beta * *y : acc[0][m];
        }
    }
}

extern "C" int alrd_gpu_gemv_norm_fits(int M, int K) {
    return M >= 1 && M <= 4 && K % 8 == 0 && (size_t)M * K * 2 <= 48 * 1024;
}

template <int MODE, int KS> static void *gemv_pick(int M) {
    switch (M) {
    case 1: return (void *)gemv_kernel<1, MODE, KS>;
    case 2: return (void *)gemv_kernel<2, MODE, KS>;
    case 3: return (void *)gemv_kernel<3, MODE, KS>;
    case 4: return (void *)gemv_kernel<4, MODE, KS>;
    default: return NULL;
    }
}

template <int KS> static void *gemv_pick_ks(int M, int norm, int glu) {
    return norm ? (glu ? gemv_pick<GEMV_NORM | GEMV_GLU, KS>(M) : gemv_pick<GEMV_NORM, KS>(M)) : gemv_pick<0, KS>(M);
}

extern "C" int alrd_gpu_gemv_run(const alrd_gpu_gemv_op *a, int pdl, void *stream) {
    const int norm = a->h != NULL, glu = a->act != NULL;
    if (a->M < 1 || a->M > 4 || a->K % 8 || a->N < 1 ||
        (norm ? !alrd_gpu_gemv_norm_fits(a->M, a->K) || !a->gamma : !a->X) || (glu ? !norm : !a->Y))
        return (int)cudaErrorInvalidValue;
    /* warps per row: 2 for rows of up to 4 KB (SmolLM2's products: depth 0 batch 1 steps 0.627 -> 0.592 ms
     * with the fp16 cache, 0.750 -> 0.741 with rank 0.5 latents), else 1 (Llama-2-7B's 8-22 KB rows: 6.40 ms
     * with 1, 6.56 with 2, 6.70 with 4, 6.46 splitting only the single-wave grids; H100, session 6,
     * results/session6/gvars-ks-h100.log) */
    int ks = a->k_split > 0 ? a->k_split : a->K <= 2048 ? 2 : 1;
    void *k = ks == 1 ? gemv_pick_ks<1>(a->M, norm, glu) : ks == 2 ? gemv_pick_ks<2>(a->M, norm, glu) : NULL;
    if (!k) return (int)cudaErrorInvalidValue;
    const unsigned grid = (unsigned)cdiv(a->N, GEMV_WARPS / ks);
    const size_t smem = norm ? (size_t)a->M * a->K * 2 : 0;
    alrd_gpu_gemv_op op = *a;
    return launch_pdl(pdl, (void (*)(alrd_gpu_gemv_op))k, grid, GEMV_WARPS * 32, smem, ST(stream), op);
}

extern "C" int alrd_gpu_gemv(const uint16_t *W, const uint16_t *X, int ldx, float *Y, int ldy, int M, int N, int K,
                             float beta, int pdl, void *stream) {
    alrd_gpu_gemv_op op = {};
    op.W = W;
    op.M = M;
    op.N = N;
    op.K = K;
    op.X = X;
    op.ldx = ldx;
    op.Y = Y;
    op.ldy = ldy;
    op.beta = beta;
    return alrd_gpu_gemv_run(&op, pdl, stream);
}

__global__ void bias_f32_kernel(float *y, int n, const float *b) {
    float *row = y + (size_t)blockIdx.x * n;
    pdl_trigger();
    pdl_wait();
    for (int i = threadIdx.x; i < n; i += blockDim.x) row[i] += b[i];
}

extern "C" int alrd_gpu_add_bias_f32(float *y, int T, int n, const float *b, int pdl, void *stream) {
    return launch_pdl(pdl, bias_f32_kernel, T, 256, 0, ST(stream), y, n, b);
}

/* ---- scoring ----------------------------------------------------------- */

/* log sum_i exp(x[i]) of one row, by the whole block (every thread gets it). */
__device__ double row_log_z(const float *x, int nv, float *redf, double *redd) {
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < nv; i += blockDim.x) mx = fmaxf(mx, x[i]);
    mx = block_max_f(mx, redf);
    double s = 0;
    for (int i = threadIdx.x; i < nv; i += blockDim.x) s += (double)expf(x[i] - mx);
    s = block_sum_d(s, redd);
    return (double)mx + log(s);
}

__global__ void nll_kernel(const float *logits, const int32_t *target, int nv, double *nll) {
    __shared__ double redd[32];
    __shared__ float redf[32];
    const int r = blockIdx.x;
    const int tg = target[r];
    if (tg < 0) return; /* uniform per block */
    const float *x = logits + (size_t)r * nv;
    const double lz = row_log_z(x, nv, redf, redd);
    if (threadIdx.x == 0) nll[r] = lz - (double)x[tg];
}

extern "C" int alrd_gpu_nll(const float *logits, const int32_t *target, int rows, int nv, double *nll,
                            void *stream) {
    if (rows <= 0) return 0;
    nll_kernel<<<rows, 512, 0, ST(stream)>>>(logits, target, nv, nll);
    return LAUNCHED();
}

/* One block per row: the row's log-softmax lp. set_base: base[r] = lp, kl[r] = 0;
 * else kl[r] = KL(base[r] || lp) = sum exp(b) (b - lp). ce[r] = -lp[target[r]]
 * (0 where target[r] < 0). */
__global__ void probe_rows_kernel(const float *logits, const int32_t *target, int nv, float *base, int set_base,
                                  double *kl, double *ce) {
    __shared__ double redd[32];
    __shared__ float redf[32];
    const int r = blockIdx.x;
    const float *x = logits + (size_t)r * nv;
    float *b = base + (size_t)r * nv;
    const float lz = (float)row_log_z(x, nv, redf, redd);
    double k = 0;
    if (set_base) {
        for (int i = threadIdx.x; i < nv; i += blockDim.x) b[i] = x[i] - lz;
    } else {
        for (int i = threadIdx.x; i < nv; i += blockDim.x) {
            const double bi = b[i];
            k += exp(bi) * (bi - (double)(x[i] - lz));
        }
        k = block_sum_d(k, redd);
    }
    if (threadIdx.x == 0) {
        kl[r] = k > 0 ? k : 0;
        ce[r] = target[r] >= 0 ? (double)lz - (double)x[target[r]] : 0;
    }
}

extern "C" int alrd_gpu_probe_rows(const float *logits, const int32_t *target, int rows, int nv, float *base,
                                   int set_base, double *kl, double *ce, void *stream) {
    if (rows <= 0) return 0;
    probe_rows_kernel<<<rows, 512, 0, ST(stream)>>>(logits, target, nv, base, set_base, kl, ce);
    return LAUNCHED();
}

__global__ void pos_advance_kernel(int *pos, int B) {
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    pdl_trigger();
    pdl_wait();
    if (b < B) pos[b] += 1;
}

extern "C" int alrd_gpu_pos_advance(int *pos, int B, int pdl, void *stream) {
    return launch_pdl(pdl, pos_advance_kernel, cdiv(B, 128), 128, 0, ST(stream), pos, B);
}

/* ---- fills ------------------------------------------------------------- */

__device__ __forceinline__ uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

__device__ __forceinline__ float unif(uint64_t seed, size_t i) { /* [-1, 1) */
    return (float)(mix64(seed * 0x9e3779b97f4a7c15ULL + i) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

__global__ void fill_f16_kernel(uint16_t *p, size_t n, float scale, float offset, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = f2h(unif(seed, i) * scale + offset);
}
__global__ void fill_f32_kernel(float *p, size_t n, float scale, float offset, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = unif(seed, i) * scale + offset;
}
__global__ void fill_u32_kernel(uint32_t *p, size_t n, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = (uint32_t)mix64(seed * 0x9e3779b97f4a7c15ULL + i);
}
__global__ void f32_to_f16_kernel(const float *in, uint16_t *out, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = f2h(in[i]);
}

__global__ void f16_to_f64_kernel(const uint16_t *in, double *out, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = (double)h2f(in[i]);
}

static unsigned fill_blocks(size_t n) {
    size_t b = (n + 255) / 256;
    return (unsigned)(b > 65536 ? 65536 : (b ? b : 1));
}

extern "C" int alrd_gpu_fill_f16(uint16_t *p, size_t n, float scale, float offset, uint64_t seed, void *stream) {
    fill_f16_kernel<<<fill_blocks(n), 256, 0, ST(stream)>>>(p, n, scale, offset, seed);
    return LAUNCHED();
}
extern "C" int alrd_gpu_fill_f32(float *p, size_t n, float scale, float offset, uint64_t seed, void *stream) {
    fill_f32_kernel<<<fill_blocks(n), 256, 0, ST(stream)>>>(p, n, scale, offset, seed);
    return LAUNCHED();
}
extern "C" int alrd_gpu_fill_u32(uint32_t *p, size_t n, uint64_t seed, void *stream) {
    fill_u32_kernel<<<fill_blocks(n), 256, 0, ST(stream)>>>(p, n, seed);
    return LAUNCHED();
}
extern "C" int alrd_gpu_f16_to_f64(const uint16_t *in, double *out, size_t n, void *stream) {
    f16_to_f64_kernel<<<fill_blocks(n), 256, 0, ST(stream)>>>(in, out, n);
    return LAUNCHED();
}
extern "C" int alrd_gpu_f32_to_f16(const float *in, uint16_t *out, size_t n, void *stream) {
    f32_to_f16_kernel<<<fill_blocks(n), 256, 0, ST(stream)>>>(in, out, n);
    return LAUNCHED();
}
