/* gpu_attn: fused flash-decoding attention over the latent KIVI cache
 * (see gpu_attn.h). */
#include "gpu_attn.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "gpu_attn_common.cuh"

#define NTHREADS 128

static inline int ceil16(int x) { return (x + 15) & ~15; }

/* Shared-memory plan of one block (bytes offsets). */
typedef struct {
    int nkh, QH, vw, VWt, kstr, vstr, rpad;
    size_t q, sc, corr, mrun, lrun, acc, as, kt, vt, total;
} plan_t;

static void make_plan(const alrd_gpu_attn_layer *L, plan_t *p) {
    int per_kv = L->n_heads / L->n_kv;
    p->nkh = L->kmode == ALRD_GPU_K_LATENT ? L->group_heads : 1;
    p->QH = p->nkh * per_kv;
    p->vw = L->vr > 0 ? L->vr : L->hd;
    p->VWt = L->vr > 0 ? L->vr : p->nkh * L->hd;
    p->rpad = L->kmode == ALRD_GPU_K_LATENT ? ceil16(L->kr) : L->hd;
    p->kstr = p->rpad + 8;               /* +8 halves: conflict-free mma fragment loads */
    p->vstr = p->VWt + 8;
    size_t o = 0;
    p->q = o;    o = al16(o + sizeof(float) * p->QH * L->hd);
    p->sc = o;   o = al16(o + sizeof(float) * p->QH * TILE);
    p->corr = o; o = al16(o + sizeof(float) * p->QH);
    p->mrun = o; o = al16(o + sizeof(float) * p->QH);
    p->lrun = o; o = al16(o + sizeof(float) * p->QH);
    p->acc = o;  o = al16(o + sizeof(float) * p->QH * p->vw);
    p->as = o;
    if (L->kmode == ALRD_GPU_K_LATENT) o = al16(o + 2 * (size_t)p->nkh * L->hd * p->kstr);
    p->kt = o;   o = al16(o + 2 * (size_t)TILE * p->kstr);
    p->vt = o;   o = al16(o + 2 * (size_t)TILE * p->vstr);
    p->total = o;
}

/* Keys of KV head j of a latent group for the tile rows r0, r1 in mma
 * accumulator layout (column d = nt*8 + 2*t4 + e): Z A_j^T on the tensor
 * cores from the latent tile Zt and the group's A_k (As), then the bias
 * and RoPE with the rows' cos/sin (cs0, sn0 for r0; cs1, sn1 for r1: the
 * CPU's table values, in global or shared memory); columns d and d + HD/2
 * are n-tiles nt and nt + NT/2 of this thread. */
template <int HD>
__device__ __forceinline__ void latent_keys(float (&c)[HD / 8][4], const alrd_gpu_attn_layer &L, const uint16_t *Zt,
                                            const uint16_t *As, int kstr, int rpad, int j, int kvh, int r0, int r1,
                                            const float *cs0, const float *sn0, const float *cs1, const float *sn1) {
    constexpr int NT = HD / 8;
    const int lane = threadIdx.x & 31, gid = lane >> 2, t4 = lane & 3;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) c[nt][0] = c[nt][1] = c[nt][2] = c[nt][3] = 0.0f;
    for (int k0 = 0; k0 < rpad; k0 += 16) {
        const uint16_t *ar = Zt + k0 + 2 * t4;
        uint32_t a0 = ld32(ar + r0 * kstr), a1 = ld32(ar + r1 * kstr);
        uint32_t a2 = ld32(ar + r0 * kstr + 8), a3 = ld32(ar + r1 * kstr + 8);
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const uint16_t *br = As + (j * HD + nt * 8 + gid) * kstr + k0 + 2 * t4;
            mma16816(c[nt], a0, a1, a2, a3, ld32(br), ld32(br + 8));
        }
    }
#pragma unroll
    for (int nt = 0; nt < NT / 2; nt++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            int d = nt * 8 + 2 * t4 + e;
            float b1 = 0.0f, b2 = 0.0f;
            if (L.bk) b1 = L.bk[kvh * HD + d], b2 = L.bk[kvh * HD + d + HD / 2];
            float x1 = c[nt][e] + b1, x2 = c[nt + NT / 2][e] + b2;
            c[nt][e] = x1 * cs0[d] - x2 * sn0[d];
            c[nt + NT / 2][e] = x2 * cs0[d] + x1 * sn0[d];
            x1 = c[nt][2 + e] + b1, x2 = c[nt + NT / 2][2 + e] + b2;
            c[nt][2 + e] = x1 * cs1[d] - x2 * sn1[d];
            c[nt + NT / 2][2 + e] = x2 * cs1[d] + x1 * sn1[d];
        }
    }
}

/* Online softmax over one tile (TILE scores per query head, rows of sc with
 * stride ss), a warp per head: the scores become p = exp(s - m_new); corr,
 * mrun and lrun are updated. The caller synchronises before and after. */
__device__ __forceinline__ void tile_softmax(float *sc, int ss, int QH, float *mrun, float *lrun, float *corr) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int qh = warp; qh < QH; qh += blockDim.x / 32) {
        float x0 = sc[qh * ss + lane], x1 = sc[qh * ss + lane + 32];
        float m = fmaxf(x0, x1);
        for (int o = 16; o; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        float mnew = fmaxf(mrun[qh], m);
        float p0 = expf(x0 - mnew), p1 = expf(x1 - mnew);
        sc[qh * ss + lane] = p0;
        sc[qh * ss + lane + 32] = p1;
        float s = p0 + p1;
        for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        __syncwarp();
        if (lane == 0) {
            float cr = expf(mrun[qh] - mnew);
            corr[qh] = cr;
            lrun[qh] = lrun[qh] * cr + s;
            mrun[qh] = mnew;
        }
    }
}

template <int HD, int KMODE>
__global__ void __launch_bounds__(NTHREADS) attn_decode_kernel(alrd_gpu_attn_layer L, plan_t P, const uint16_t *q16,
                                                               const int *pos, int nsplit, int vw_max, float *work) {
    extern __shared__ __align__(16) unsigned char smem[];
    float *qs = (float *)(smem + P.q), *sc = (float *)(smem + P.sc), *corr = (float *)(smem + P.corr);
    float *mrun = (float *)(smem + P.mrun), *lrun = (float *)(smem + P.lrun), *acc = (float *)(smem + P.acc);
    uint16_t *As = (uint16_t *)(smem + P.as), *Kt = (uint16_t *)(smem + P.kt), *Vt = (uint16_t *)(smem + P.vt);

    const int tid = threadIdx.x, sp = blockIdx.x, grp = blockIdx.y, b = blockIdx.z;
    const int per_kv = L.n_heads / L.n_kv, nkh = P.nkh, QH = P.QH, kh0 = grp * nkh, h0 = kh0 * per_kv;
    const int qd = L.n_heads * HD, vw = P.vw, kstr = P.kstr, vstr = P.vstr;
    const int n = pos[b] + 1;
    int t0, t1;
    float *wml, *wacc;
    if (!split_begin(n, nsplit, sp, L.n_heads, b, h0, vw_max, work, t0, t1, wml, wacc)) return;

    const int kq = side_quantized(L.ks, n), vq = side_quantized(L.vs, n);
    /* value columns of the block: the group's latent, or its heads' slices */
    const int vbase = L.vr > 0 ? (kh0 / L.group_heads) * L.vr : kh0 * HD;

    for (int i = tid; i < QH * HD; i += NTHREADS) qs[i] = h2f(q16[(size_t)b * qd + (size_t)h0 * HD + i]);
    for (int i = tid; i < QH * vw; i += NTHREADS) acc[i] = 0.0f;
    for (int i = tid; i < QH; i += NTHREADS) mrun[i] = -INFINITY, lrun[i] = 0.0f;
    if (KMODE == ALRD_GPU_K_LATENT) {
        const int kr = L.kr, rpad = P.rpad, gh = L.group_heads * HD;
        const uint16_t *A = L.kA + (size_t)grp * gh * kr;
        for (int i = tid; i < nkh * HD * rpad; i += NTHREADS) {
            int r = i / rpad, c = i % rpad;
            As[r * kstr + c] = c < kr ? A[(size_t)r * kr + c] : (uint16_t)0;
        }
        for (int i = tid; i < TILE * (rpad - kr); i += NTHREADS) /* padding columns of the latent tile */
            Kt[(i / (rpad - kr)) * kstr + kr + i % (rpad - kr)] = 0;
    }
    __syncthreads();

    const int warp = tid >> 5, lane = tid & 31, gid = lane >> 2, t4 = lane & 3;
    constexpr int NT = HD / 8;
    for (int ts = t0; ts < t1; ts += TILE) {
        const int nv = min(TILE, t1 - ts);
        /* ---- load the tile: keys (latent / pre-RoPE / RoPE'd) and values */
        if (KMODE == ALRD_GPU_K_LATENT) {
            const int kr = L.kr, c0 = grp * kr;
            if (L.ks.bits == 16) {
                for (int i = tid; i < TILE * kr; i += NTHREADS) {
                    int s = i / kr, c = i % kr;
                    Kt[s * kstr + c] = s < nv ? L.ks.rows[(size_t)b * L.ks.seq_rows + (size_t)(ts + s) * L.ks.d + c0 + c] : (uint16_t)0;
                }
            } else {
                for (int i = tid; i < TILE * kr; i += NTHREADS) { /* token-fastest: a warp reads one channel's run */
                    int s = i % TILE, c = i / TILE;
                    Kt[s * kstr + c] = s < nv ? side_load16(L.ks, b, kq, ts + s, c0 + c) : (uint16_t)0;
                }
            }
        } else if (KMODE == ALRD_GPU_K_FULL) {
            const float *cs0 = L.cos_tab, *sn0 = L.sin_tab;
            for (int i = tid; i < TILE * HD; i += NTHREADS) {
                int s = i % TILE, c = i / TILE;
                uint16_t v = 0;
                if (s < nv) {
                    long tk = ts + s;
                    int hh = HD / 2, j = c % hh;
                    float x = side_value(L.ks, b, kq, tk, kh0 * HD + c);
                    float y = side_value(L.ks, b, kq, tk, kh0 * HD + (c < hh ? c + hh : c - hh));
                    float cs = cs0[(size_t)tk * hh + j], sn = sn0[(size_t)tk * hh + j];
                    v = f2h(c < hh ? x * cs - y * sn : x * cs + y * sn);
                }
                Kt[s * kstr + c] = v;
            }
        } else {
            for (int i = tid; i < TILE * HD; i += NTHREADS) {
                int s = i / HD, c = i % HD;
                Kt[s * kstr + c] = s < nv ? L.ks.rows[(size_t)b * L.ks.seq_rows + (size_t)(ts + s) * L.ks.d + kh0 * HD + c] : (uint16_t)0;
            }
        }
        if (L.vs.bits == 16) {
            for (int i = tid; i < TILE * P.VWt; i += NTHREADS) {
                int s = i / P.VWt, c = i % P.VWt;
                Vt[s * vstr + c] = s < nv ? L.vs.rows[(size_t)b * L.vs.seq_rows + (size_t)(ts + s) * L.vs.d + vbase + c] : (uint16_t)0;
            }
        } else {
            for (int i = tid; i < TILE * P.VWt; i += NTHREADS) {
                int s = i / P.VWt, c = i % P.VWt;
                Vt[s * vstr + c] = s < nv ? side_load16(L.vs, b, vq, ts + s, vbase + c) : (uint16_t)0;
            }
        }
        __syncthreads();

        /* ---- scores */
        if (KMODE == ALRD_GPU_K_LATENT) {
            const int r0 = 16 * warp + gid, r1 = r0 + 8;
            const long p0 = ts + min(r0, nv - 1), p1 = ts + min(r1, nv - 1); /* clamped: table reads stay in range */
            for (int j = 0; j < nkh; j++) {
                float c[NT][4];
                latent_keys<HD>(c, L, Kt, As, kstr, 16 * warp < nv ? P.rpad : 0, j, kh0 + j, r0, r1,
                                L.cos_tab + p0 * (HD / 2), L.sin_tab + p0 * (HD / 2), L.cos_tab + p1 * (HD / 2),
                                L.sin_tab + p1 * (HD / 2));
                for (int qq = 0; qq < per_kv; qq++) {
                    const int qh = j * per_kv + qq;
                    const float *qv = qs + qh * HD;
                    float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
                    for (int nt = 0; nt < NT; nt++) {
                        int d = nt * 8 + 2 * t4;
                        s0 += c[nt][0] * qv[d] + c[nt][1] * qv[d + 1];
                        s1 += c[nt][2] * qv[d] + c[nt][3] * qv[d + 1];
                    }
                    s0 += __shfl_xor_sync(0xffffffffu, s0, 1);
                    s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
                    s1 += __shfl_xor_sync(0xffffffffu, s1, 1);
                    s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
                    if (t4 == 0) {
                        sc[qh * TILE + r0] = r0 < nv ? s0 * L.scale : -INFINITY;
                        sc[qh * TILE + r1] = r1 < nv ? s1 * L.scale : -INFINITY;
                    }
                }
            }
        } else {
            for (int i = tid; i < QH * TILE; i += NTHREADS) {
                int qh = i / TILE, s = i % TILE;
                float a = -INFINITY;
                if (s < nv) {
                    const float *qv = qs + qh * HD;
                    const __half2 *kr2 = reinterpret_cast<const __half2 *>(Kt + s * kstr);
                    a = 0.0f;
#pragma unroll 8
                    for (int d2 = 0; d2 < HD / 2; d2++) {
                        float2 kv = __half22float2(kr2[d2]);
                        a += kv.x * qv[2 * d2] + kv.y * qv[2 * d2 + 1];
                    }
                    a *= L.scale;
                }
                sc[qh * TILE + s] = a;
            }
        }
        __syncthreads();

        /* ---- online softmax */
        tile_softmax(sc, TILE, QH, mrun, lrun, corr);
        __syncthreads();

        /* ---- values: acc[qh] = acc[qh] * corr + p . V (latent or the head's slice) */
        for (int i = tid; i < QH * vw; i += NTHREADS) {
            int qh = i / vw, c = i % vw;
            int voff = L.vr > 0 ? 0 : (qh / per_kv) * HD;
            const float *pr = sc + qh * TILE;
            const uint16_t *vc = Vt + voff + c;
            float a = acc[i] * corr[qh];
#pragma unroll 8
            for (int s = 0; s < TILE; s++) a += pr[s] * h2f(vc[s * vstr]);
            acc[i] = a;
        }
        __syncthreads();
    }

    split_store_ml(wml, QH, nsplit, sp, mrun, lrun);
    for (int i = tid; i < QH * vw; i += NTHREADS) {
        int qh = i / vw, c = i % vw;
        wacc[((size_t)qh * nsplit + sp) * vw_max + c] = acc[i];
    }
}


/* ==== v2: QK^T and PV on the tensor cores, vectorised and division-free tile
 * loads. Used when
 * the group has <= 16 query heads (<= 8 per KV head) and a value width
 * <= 256 that is a multiple of 8; v1 above covers the rest. The value tile
 * is row-major; the PV product reads it with ldmatrix.trans. ========== */

#define QHP 16          /* query rows of the PV product */
#define SCS 72          /* score row stride (floats): conflict-free fragment reads */
#define MAXNT2 8        /* PV n-tiles per warp: value width <= 4 * 8 * 8 */

typedef struct {
    int nkh, QH, vw, kstr, vstr, rpad;
    size_t q, sc, corr, mrun, lrun, as, kt, vt, rope, total;
} plan2_t;

/* Row stride (floats) of the tile's cos / sin rows in shared memory. */
#define ROPE_RS(hd) ((hd) / 2 + 8)

static void make_plan2(const alrd_gpu_attn_layer *L, plan2_t *p) {
    int per_kv = L->n_heads / L->n_kv;
    p->nkh = L->kmode == ALRD_GPU_K_LATENT ? L->group_heads : 1;
    p->QH = p->nkh * per_kv;
    p->vw = L->vr > 0 ? L->vr : L->hd;
    p->rpad = L->kmode == ALRD_GPU_K_LATENT ? ceil16(L->kr) : L->hd;
    p->kstr = p->rpad + 8;
    p->vstr = ceil16(p->vw) + 8; /* (vstr/2) % 8 == 4: conflict-free ldmatrix rows */
    size_t o = 0;
    p->q = o;    o = al16(o + 2 * (size_t)QHP * (L->hd + 8));
    p->sc = o;   o = al16(o + 4 * (size_t)QHP * SCS);
    p->corr = o; o = al16(o + 4 * QHP);
    p->mrun = o; o = al16(o + 4 * QHP);
    p->lrun = o; o = al16(o + 4 * QHP);
    p->as = o;
    if (L->kmode == ALRD_GPU_K_LATENT) o = al16(o + 2 * (size_t)p->nkh * L->hd * p->kstr);
    p->kt = o;   o = al16(o + 2 * (size_t)TILE * p->kstr);
    p->vt = o;   o = al16(o + 2 * (size_t)TILE * p->vstr);
    p->rope = o;
    if (L->kmode == ALRD_GPU_K_LATENT) o = al16(o + 4 * (size_t)2 * TILE * ROPE_RS(L->hd));
    p->total = o;
}

static int v2_ok(const alrd_gpu_attn_layer *L) {
    plan2_t p;
    make_plan2(L, &p);
    int per_kv = L->n_heads / L->n_kv;
    return p.QH <= QHP && per_kv <= 8 && p.vw <= 4 * 8 * MAXNT2 && p.vw % 8 == 0 && !(p.nkh > 1 && L->vr == 0);
}


/* cos rows then sin rows (row stride RS floats) of the positions ts ..
 * ts + ROWS - 1 into dst by cp.async, rows past nv repeating the last
 * valid position (the tables end at max_ctx). The caller's NT threads
 * (t = 0 .. NT - 1) share the chunks: t takes 16-byte column t % CH of
 * rows t / CH + k * NT / CH, so its shared-memory offsets are constants;
 * the caller commits the group. */
template <int HD, int ROWS, int NT, int RS>
__device__ __forceinline__ void rope_rows_async(const alrd_gpu_attn_layer &L, int ts, int nv, float *dst, int t) {
    constexpr int CH = HD / 8, RPP = NT / CH; /* 16-byte chunks per row, rows per pass */
    static_assert(NT % CH == 0 && ROWS % RPP == 0, "whole rows per pass, whole passes per tile");
    const int last = nv - 1, ch = t % CH, r0 = t / CH;
    float *d = dst + r0 * RS + ch * 4;
#pragma unroll
    for (int k = 0; k < ROWS / RPP; k++) {
        const size_t o = (size_t)(ts + min(r0 + k * RPP, last)) * (HD / 2) + ch * 4;
        cp_async16(d + k * RPP * RS, L.cos_tab + o, 16);
        cp_async16(d + (ROWS + k * RPP) * RS, L.sin_tab + o, 16);
    }
}

/* Columns [c0, c0+W) of tokens [ts, ts+nv) of a side (holding q quantised
 * tokens) into shared memory as fp16, dst[tok*ds + c]; rows tok >= nv (up
 * to TILE) are zero. Global loads are issued LB tasks at a time before any
 * shared-memory store, so that each thread has several requests in flight
 * (the compiler cannot move a global load above a store through a generic
 * pointer itself). */
#define LB 4

__device__ void load_tile(const alrd_gpu_side &sd, int b, int q, long ts, int nv, int c0, int W, uint16_t *dst, int ds) {
    const int tid = threadIdx.x;
#define PUT(tok, c, v) (dst[(size_t)(tok) * ds + (c)] = (v))
    if (sd.bits == 16 || ts >= q) { /* fp16 rows or the residual ring only */
        const uint16_t *base = sd.bits == 16 ? sd.rows + (size_t)b * sd.seq_rows : sd.ring + (size_t)b * sd.seq_ring;
        if (W % 8 == 0 && c0 % 8 == 0 && sd.d % 8 == 0) { /* 16-byte loads, LB in flight per thread */
            const int nch = W / 8, total = TILE * nch;
            for (int i0 = tid; i0 < total; i0 += LB * NTHREADS) {
                uint4 v[LB];
#pragma unroll
                for (int u = 0; u < LB; u++) {
                    int i = i0 + u * NTHREADS, tok = i / nch, ch = i % nch;
                    v[u] = make_uint4(0, 0, 0, 0);
                    if (i < total && tok < nv) {
                        long s = ts + tok, row = sd.bits == 16 ? s : s % sd.R;
                        v[u] = *reinterpret_cast<const uint4 *>(base + (size_t)row * sd.d + c0 + ch * 8);
                    }
                }
#pragma unroll
                for (int u = 0; u < LB; u++) {
                    int i = i0 + u * NTHREADS;
                    if (i < total) *reinterpret_cast<uint4 *>(dst + (size_t)(i / nch) * ds + (i % nch) * 8) = v[u];
                }
            }
        } else {
            for (int i = tid; i < TILE * W; i += NTHREADS) {
                int tok = i / W, c = i % W;
                long s = ts + tok, row = sd.bits == 16 ? s : s % (sd.R > 0 ? sd.R : 1);
                PUT(tok, c, tok < nv ? base[(size_t)row * sd.d + c0 + c] : (uint16_t)0);
            }
        }
        return;
    }
    const int cpw = sd.cpw, bits = sd.bits;
    const uint32_t mask = (1u << bits) - 1;
    if (sd.per_channel && TILE % cpw == 0 && sd.R % TILE == 0 && sd.G % cpw == 0) {
        /* the whole tile sits in one chunk unit (q is a multiple of R) */
        const long unit = ts / sd.R;
        const int i0 = (int)(ts % sd.R), wpt = TILE / cpw, total = W * wpt;
        const uint32_t *cw = sd.codes + (size_t)b * sd.seq_words + (size_t)unit * sd.unit_words;
        const size_t g0 = (size_t)b * sd.seq_groups + (size_t)unit * sd.unit_groups;
        for (int j0 = tid; j0 < total; j0 += LB * NTHREADS) {
            uint32_t wd[LB];
            uint16_t hs[LB], hz[LB];
#pragma unroll
            for (int u = 0; u < LB; u++) {
                int i = j0 + u * NTHREADS, c = i % W, w = i / W, ii = i0 + w * cpw;
                wd[u] = 0, hs[u] = hz[u] = 0;
                if (i < total) {
                    size_t go = g0 + (size_t)(c0 + c) * sd.ng + ii / sd.G;
                    wd[u] = cw[(size_t)(c0 + c) * sd.wpr + ii / cpw];
                    hs[u] = sd.scales[go];
                    hz[u] = sd.zeros[go];
                }
            }
#pragma unroll
            for (int u = 0; u < LB; u++) {
                int i = j0 + u * NTHREADS, c = i % W, w = i / W;
                if (i >= total) break;
                float sc = h2f(hs[u]), z = h2f(hz[u]);
                for (int e = 0; e < cpw; e++) {
                    int tok = w * cpw + e;
                    PUT(tok, c, tok < nv ? f2h(dequant((wd[u] >> (e * bits)) & mask, sc, z)) : (uint16_t)0);
                }
            }
        }
        return;
    }
    if (!sd.per_channel && sd.G % cpw == 0) { /* per token: a task per (token, word) */
        const int w0 = c0 / cpw, nw = (c0 + W - 1) / cpw - w0 + 1, total = TILE * nw;
        for (int j0 = tid; j0 < total; j0 += LB * NTHREADS) {
            uint32_t wd[LB];
            uint16_t hs[LB], hz[LB];
#pragma unroll
            for (int u = 0; u < LB; u++) { /* quantised tokens: words, scales, zeros in flight together */
                int i = j0 + u * NTHREADS, tok = i / nw, w = w0 + i % nw;
                long s = ts + tok;
                wd[u] = 0, hs[u] = hz[u] = 0;
                if (i < total && tok < nv && s < q) {
                    size_t go = (size_t)b * sd.seq_groups + (size_t)s * sd.unit_groups + (size_t)(w * cpw) / sd.G;
                    wd[u] = sd.codes[(size_t)b * sd.seq_words + (size_t)s * sd.unit_words + w];
                    hs[u] = sd.scales[go];
                    hz[u] = sd.zeros[go];
                }
            }
#pragma unroll
            for (int u = 0; u < LB; u++) {
                int i = j0 + u * NTHREADS, tok = i / nw, w = w0 + i % nw;
                if (i >= total) break;
                int ca = w * cpw > c0 ? w * cpw : c0, cb = (w + 1) * cpw < c0 + W ? (w + 1) * cpw : c0 + W;
                long s = ts + tok;
                if (tok >= nv) {
                    for (int c = ca; c < cb; c++) PUT(tok, c - c0, (uint16_t)0);
                } else if (s < q) {
                    float sc = h2f(hs[u]), z = h2f(hz[u]);
                    for (int c = ca; c < cb; c++)
                        PUT(tok, c - c0, f2h(dequant((wd[u] >> ((c - w * cpw) * bits)) & mask, sc, z)));
                } else {
                    const uint16_t *rr = sd.ring + (size_t)b * sd.seq_ring + (size_t)(s % sd.R) * sd.d;
                    for (int c = ca; c < cb; c++) PUT(tok, c - c0, rr[c]);
                }
            }
        }
        return;
    }
    for (int i = tid; i < TILE * W; i += NTHREADS) { /* anything else: element by element */
        int tok = i % TILE, c = i / TILE;
        PUT(tok, c, tok < nv ? side_load16(sd, b, q, ts + tok, c0 + c) : (uint16_t)0);
    }
#undef PUT
}

template <int HD, int KMODE>
__global__ void __launch_bounds__(NTHREADS) attn_v2_kernel(alrd_gpu_attn_layer L, plan2_t P, const uint16_t *q16,
                                                           const int *pos, int nsplit, int vw_max, float *work) {
    extern __shared__ __align__(16) unsigned char smem[];
    uint16_t *qs = (uint16_t *)(smem + P.q);
    float *sc = (float *)(smem + P.sc), *corr = (float *)(smem + P.corr);
    float *mrun = (float *)(smem + P.mrun), *lrun = (float *)(smem + P.lrun);
    uint16_t *As = (uint16_t *)(smem + P.as), *Kt = (uint16_t *)(smem + P.kt), *Vt = (uint16_t *)(smem + P.vt);
    constexpr int QS = HD + 8, NT = HD / 8, RRS = ROPE_RS(HD);
    float *Rc = (float *)(smem + P.rope), *Rs = Rc + TILE * RRS; /* the tile's cos / sin rows (latent keys) */

    const int tid = threadIdx.x, sp = blockIdx.x, grp = blockIdx.y, b = blockIdx.z;
    const int per_kv = L.n_heads / L.n_kv, nkh = P.nkh, QH = P.QH, kh0 = grp * nkh, h0 = kh0 * per_kv;
    const int qd = L.n_heads * HD, vw = P.vw, kstr = P.kstr;
    const int n = pos[b] + 1;
    int t0, t1;
    float *wml, *wacc;
    if (!split_begin(n, nsplit, sp, L.n_heads, b, h0, vw_max, work, t0, t1, wml, wacc)) return;
    const int kq = side_quantized(L.ks, n), vq = side_quantized(L.vs, n);
    const int vbase = L.vr > 0 ? (kh0 / L.group_heads) * L.vr : kh0 * HD;

    for (int i = tid; i < QHP * HD; i += NTHREADS) {
        int qh = i / HD, d = i % HD;
        qs[qh * QS + d] = qh < QH ? q16[(size_t)b * qd + (size_t)(h0 + qh) * HD + d] : (uint16_t)0;
    }
    for (int i = tid; i < QHP * SCS; i += NTHREADS) sc[i] = 0.0f; /* rows >= QH stay 0: no weight in PV */
    for (int i = tid; i < QHP; i += NTHREADS) mrun[i] = -INFINITY, lrun[i] = 0.0f, corr[i] = 1.0f;
    if (KMODE == ALRD_GPU_K_LATENT) {
        const int kr = L.kr, rpad = P.rpad, gh = L.group_heads * HD;
        const uint16_t *A = L.kA + (size_t)grp * gh * kr;
        if (kr % 8 == 0) { /* all in flight at once, landing while the first tile loads */
            const int nch = kr / 8, total = nkh * HD * nch;
            for (int i = tid; i < total; i += NTHREADS)
                cp_async16(As + (i / nch) * kstr + (i % nch) * 8, A + (size_t)(i / nch) * kr + (i % nch) * 8, 16);
            cp_async_commit();
            for (int i = tid; i < nkh * HD * (rpad - kr); i += NTHREADS)
                As[(i / (rpad - kr)) * kstr + kr + i % (rpad - kr)] = 0;
        } else {
            for (int i = tid; i < nkh * HD * rpad; i += NTHREADS) {
                int r = i / rpad, c = i % rpad;
                As[r * kstr + c] = c < kr ? A[(size_t)r * kr + c] : (uint16_t)0;
            }
        }
        for (int i = tid; i < TILE * (rpad - kr); i += NTHREADS) /* padding columns of the latent tile */
            Kt[(i / (rpad - kr)) * kstr + kr + i % (rpad - kr)] = 0;
    }

    const int warp = tid >> 5, lane = tid & 31, gid = lane >> 2, t4 = lane & 3;
    const int nvt = vw / 8;
    float pv[MAXNT2][4];
#pragma unroll
    for (int i = 0; i < MAXNT2; i++) pv[i][0] = pv[i][1] = pv[i][2] = pv[i][3] = 0.0f;

    for (int ts = t0; ts < t1; ts += TILE) {
        const int nv = min(TILE, t1 - ts);
        if (KMODE == ALRD_GPU_K_LATENT) { /* the RoPE rows of the tile's positions, in flight with the tile */
            rope_rows_async<HD, TILE, NTHREADS, RRS>(L, ts, nv, Rc, tid);
            cp_async_commit();
        }
        if (KMODE == ALRD_GPU_K_LATENT) load_tile(L.ks, b, kq, ts, nv, grp * L.kr, L.kr, Kt, kstr);
        else load_tile(L.ks, b, kq, ts, nv, kh0 * HD, HD, Kt, kstr);
        load_tile(L.vs, b, vq, ts, nv, vbase, vw, Vt, P.vstr);
        cp_async_wait_all(); /* A_k (first tile), the RoPE rows */
        __syncthreads();
        if (KMODE == ALRD_GPU_K_FULL) { /* pre-RoPE keys: rotate in place */
            for (int i = tid; i < TILE * (HD / 2); i += NTHREADS) {
                int tok = i / (HD / 2), j = i % (HD / 2);
                if (tok < nv) {
                    const size_t cs = (size_t)(ts + tok) * (HD / 2) + j;
                    float x1 = h2f(Kt[tok * kstr + j]), x2 = h2f(Kt[tok * kstr + j + HD / 2]);
                    float c = L.cos_tab[cs], sn = L.sin_tab[cs];
                    Kt[tok * kstr + j] = f2h(x1 * c - x2 * sn);
                    Kt[tok * kstr + j + HD / 2] = f2h(x2 * c + x1 * sn);
                }
            }
            __syncthreads();
        }

        /* ---- scores: S = K . q^T on the tensor cores, 16 tokens per warp */
        const int r0 = 16 * warp + gid, r1 = r0 + 8;
        if (16 * warp < nv) {
            for (int j = 0; j < nkh; j++) {
                float s4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                const uint16_t *qrow = qs + (j * per_kv + (gid < per_kv ? gid : 0)) * QS + 2 * t4;
                if (KMODE == ALRD_GPU_K_LATENT) {
                    float c[NT][4];
                    latent_keys<HD>(c, L, Kt, As, kstr, P.rpad, j, kh0 + j, r0, r1, Rc + r0 * RRS, Rs + r0 * RRS,
                                    Rc + r1 * RRS, Rs + r1 * RRS);
                    /* the accumulators of n-tiles 2kk, 2kk+1 are the A fragment of k-tile kk */
#pragma unroll
                    for (int kk = 0; kk < HD / 16; kk++)
                        mma16816(s4, pack2(c[2 * kk][0], c[2 * kk][1]), pack2(c[2 * kk][2], c[2 * kk][3]),
                                 pack2(c[2 * kk + 1][0], c[2 * kk + 1][1]), pack2(c[2 * kk + 1][2], c[2 * kk + 1][3]),
                                 ld32(qrow + kk * 16), ld32(qrow + kk * 16 + 8));
                } else {
#pragma unroll
                    for (int kk = 0; kk < HD / 16; kk++) {
                        const uint16_t *ar = Kt + kk * 16 + 2 * t4;
                        mma16816(s4, ld32(ar + r0 * kstr), ld32(ar + r1 * kstr), ld32(ar + r0 * kstr + 8),
                                 ld32(ar + r1 * kstr + 8), ld32(qrow + kk * 16), ld32(qrow + kk * 16 + 8));
                    }
                }
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int qq = 2 * t4 + e;
                    if (qq < per_kv) {
                        int qh = j * per_kv + qq;
                        sc[qh * SCS + r0] = r0 < nv ? s4[e] * L.scale : -INFINITY;
                        sc[qh * SCS + r1] = r1 < nv ? s4[2 + e] * L.scale : -INFINITY;
                    }
                }
            }
        } else {
            for (int i = lane; i < QH * 16; i += 32) sc[(i / 16) * SCS + 16 * warp + i % 16] = -INFINITY;
        }
        __syncthreads();

        /* ---- online softmax */
        tile_softmax(sc, SCS, QH, mrun, lrun, corr);
        __syncthreads();

        /* ---- PV: acc[qh][c] = acc * corr + P[qh][:] . V[:][c] */
        {
            const float clo = corr[gid], chi = corr[gid + 8];
#pragma unroll
            for (int i = 0; i < MAXNT2; i++) {
                pv[i][0] *= clo;
                pv[i][1] *= clo;
                pv[i][2] *= chi;
                pv[i][3] *= chi;
            }
#pragma unroll
            for (int kk = 0; kk < TILE / 16; kk++) {
                const float *pr0 = sc + gid * SCS + kk * 16 + 2 * t4, *pr1 = pr0 + 8 * SCS;
                float2 x00 = *reinterpret_cast<const float2 *>(pr0), x10 = *reinterpret_cast<const float2 *>(pr1);
                float2 x01 = *reinterpret_cast<const float2 *>(pr0 + 8), x11 = *reinterpret_cast<const float2 *>(pr1 + 8);
                uint32_t a0 = pack2(x00.x, x00.y), a1 = pack2(x10.x, x10.y), a2 = pack2(x01.x, x01.y),
                         a3 = pack2(x11.x, x11.y);
#pragma unroll
                for (int i = 0; i < MAXNT2; i++) {
                    int nt = warp + 4 * i;
                    if (nt < nvt) { /* warp-uniform */
                        uint32_t b0, b1;
                        ldsm_x2_trans(b0, b1, Vt + (size_t)(kk * 16 + (lane & 15)) * P.vstr + nt * 8);
                        mma16816(pv[i], a0, a1, a2, a3, b0, b1);
                    }
                }
            }
        }
        __syncthreads();
    }

    split_store_ml(wml, QH, nsplit, sp, mrun, lrun);
#pragma unroll
    for (int i = 0; i < MAXNT2; i++) {
        int nt = warp + 4 * i;
        if (nt >= nvt) continue;
#pragma unroll
        for (int e = 0; e < 2; e++) {
            int c = nt * 8 + 2 * t4 + e;
            if (gid < QH) wacc[((size_t)gid * nsplit + sp) * vw_max + c] = pv[i][e];
            if (gid + 8 < QH) wacc[((size_t)(gid + 8) * nsplit + sp) * vw_max + c] = pv[i][2 + e];
        }
    }
}

/* ==== v3: the fp16 cache (RoPE'd keys, fp16 values), flash-decoding with
 * warps that never wait for each other. Each of the block's NW3 warps takes
 * every NW3-th 16-token tile of the split and keeps its own online softmax:
 * S^T = Q K^T (query heads as the 16 rows of the mma, tokens as columns)
 * then O += P V with P straight from the score registers (the accumulator
 * layout of m16n8k16 is its A layout). Keys and values stream through a
 * ST3-stage cp.async ring per warp, so each warp has ST3-1 tiles in flight
 * while it computes one. The warps' states merge once at the end. Used for
 * layers whose cache is fp16 with <= 16 query heads per KV head. ====== */

#ifndef ALRD_NW3
#define ALRD_NW3 4 /* warps per block */
#endif
#ifndef ALRD_ST3
#define ALRD_ST3 3 /* ring stages per warp */
#endif
#define NW3 ALRD_NW3
#define ST3 ALRD_ST3
#define T3 16

template <int HD> struct v3_shape {
    static constexpr int RS = HD + 8;                   /* row stride (halves): conflict-free fragment reads */
    static constexpr int STAGE = 2 * T3 * RS;           /* K then V of one tile, halves */
    static constexpr int WARP = ST3 * STAGE;            /* one warp's ring, halves */
    static constexpr size_t SMEM = (size_t)2 * NW3 * WARP;
};

static size_t v3_smem(int hd) { return hd == 64 ? v3_shape<64>::SMEM : v3_shape<128>::SMEM; }

static int v3_ok(const alrd_gpu_attn_layer *L) {
    return L->kmode == ALRD_GPU_K_ROPED && L->vr == 0 && L->ks.bits == 16 && L->vs.bits == 16 &&
           L->n_heads / L->n_kv <= 16 && L->ks.d % 8 == 0 && L->vs.d % 8 == 0;
}

template <int HD>
__global__ void __launch_bounds__(NW3 * 32) attn_fp16_kernel(alrd_gpu_attn_layer L, const uint16_t *q16, const int *pos,
                                                              int nsplit, int vw_max, float *work) {
    typedef v3_shape<HD> S;
    constexpr int NT = HD / 8, KS = HD / 16;
    extern __shared__ __align__(16) unsigned char smem[];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, t4 = lane & 3;
    const int sp = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
    const int per_kv = L.n_heads / L.n_kv, h0 = kvh * per_kv;
    pdl_trigger();
    pdl_wait();
    int t0, t1;
    float *wml, *wacc;
    if (!split_begin(pos[b] + 1, nsplit, sp, L.n_heads, b, h0, vw_max, work, t0, t1, wml, wacc)) return;
    uint16_t *ring = reinterpret_cast<uint16_t *>(smem) + warp * S::WARP;
    const uint16_t *kbase = L.ks.rows + (size_t)b * L.ks.seq_rows + (size_t)kvh * HD;
    const uint16_t *vbase = L.vs.rows + (size_t)b * L.vs.seq_rows + (size_t)kvh * HD;
    const int ntiles = (t1 - t0 + T3 - 1) / T3;

    /* tile i of this warp (split tile warp + NW3*i) into its ring slot: 2*T3*HD/8 chunks of 16 bytes */
    auto issue = [&](int i) {
        const int tile = warp + NW3 * i;
        if (tile < ntiles) {
            const int ts = t0 + tile * T3;
            uint16_t *st = ring + (i % ST3) * S::STAGE;
            constexpr int CH = HD / 8;
#pragma unroll
            for (int c = lane; c < 2 * T3 * CH; c += 32) {
                const int side = c / (T3 * CH), r = (c / CH) % T3, ch = c % CH;
                const bool ok = ts + r < t1;
                const uint16_t *src = (side ? vbase : kbase) + (size_t)(ok ? ts + r : t0) * (side ? L.vs.d : L.ks.d) + ch * 8;
                cp_async16_l2(st + side * T3 * S::RS + r * S::RS + ch * 8, src, ok ? 16 : 0);
            }
        }
        cp_async_commit(); /* an empty group keeps the wait count uniform */
    };

    /* Q as the A operand: rows = query heads (zero beyond per_kv), k = channels */
    uint32_t qa[KS][4];
    {
        const uint16_t *qb = q16 + (size_t)b * L.n_heads * HD + (size_t)h0 * HD;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            const int c = kk * 16 + 2 * t4;
            qa[kk][0] = gid < per_kv ? ld32(qb + gid * HD + c) : 0u;
            qa[kk][1] = gid + 8 < per_kv ? ld32(qb + (gid + 8) * HD + c) : 0u;
            qa[kk][2] = gid < per_kv ? ld32(qb + gid * HD + c + 8) : 0u;
            qa[kk][3] = gid + 8 < per_kv ? ld32(qb + (gid + 8) * HD + c + 8) : 0u;
        }
    }
    float o[NT][4];
#pragma unroll
    for (int i = 0; i < NT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f; /* rows gid, gid + 8; l partial over this lane */

#pragma unroll
    for (int i = 0; i < ST3 - 1; i++) issue(i);
    const int mine = ntiles > warp ? (ntiles - warp + NW3 - 1) / NW3 : 0;
    for (int i = 0; i < mine; i++) {
        issue(i + ST3 - 1);
        asm volatile("cp.async.wait_group %0;\n" ::"n"(ST3 - 1) : "memory");
        __syncwarp();
        const uint16_t *Kt = ring + (i % ST3) * S::STAGE, *Vt = Kt + T3 * S::RS;
        const int ts = t0 + (warp + NW3 * i) * T3;
        float s[2][4];
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
            const uint16_t *kr = Kt + (nt * 8 + gid) * S::RS + 2 * t4;
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
                mma16816(s[nt], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], ld32(kr + kk * 16), ld32(kr + kk * 16 + 8));
        }
        float c0, c1;
        uint32_t pa[4];
        mma_tile_softmax(s, t1 - ts, L.scale, m0, m1, l0, l1, c0, c1, pa);
        rescale_rows(o, c0, c1);
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            uint32_t b0, b1;
            ldsm_x2_trans(b0, b1, Vt + (lane & 15) * S::RS + nt * 8);
            mma16816(o[nt], pa[0], pa[1], pa[2], pa[3], b0, b1);
        }
        __syncwarp(); /* the slot is refilled by the next iteration's issue */
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory"); /* the rings are drained: shared memory is free */
    merge_warps<NW3, NT>(o, NT, m0, m1, l0, l1, smem, HD, per_kv, HD, wml, wacc, nsplit, sp, vw_max);
}

/* ==== v4: the latent cache, warps that never wait for each other. Each of
 * the block's NW4 warps takes every NW4-th 16-token tile of the split and
 * keeps its own online softmax over all query heads of the group (the 16
 * rows of the mma). Per tile a warp dequantises the latent keys straight
 * from the packed codes into shared memory (two codes per LOP3 into fp16
 * pairs), reconstructs each KV head's keys Z A_j^T on the tensor cores,
 * adds the bias and RoPE in the accumulators, and feeds them as the B
 * operand of S = Q_j K_j^T (Q_j: the rows of head j's queries, others
 * zero, so every row gets its own KV head's scores in one accumulator).
 * The scores' accumulators are the A operand of P V over the latent
 * values (dequantised into the same staging buffer). The warps merge once
 * at the end. Used for latent keys whose codes are 2 or 4 bits per
 * channel (or fp16) and values of 2 or 4 bits per token (or fp16), with
 * <= 16 query heads per group; v2 serves the rest. ==================== */

#define NW4 4
#define T4 16
/* Value tasks (16 tokens x one code word) per lane: 5 for up to 16 n-tiles of values (2-bit rank <= 128),
 * 6 for the 24-tile instances (2-bit rank <= 192). Real rank-0.5 files have layers of value rank 161-184,
 * which 5 left to the older kernel: 6 there took the real file's step at depth 32768 batch 16 from 11.61 to
 * 11.25 ms (H200, results/session5/vm6-real-h200.log); 6 everywhere cost the 12-tile instance 2% (vm6-synth). */
__host__ __device__ constexpr int v4_vm(int vt) { return vt >= 24 ? 6 : 5; }

typedef struct {
    int rpad, vpad, buf_h; /* buf_h: halves of a warp's key staging buffer */
    size_t as, ahead, warps, wbytes, wvals, wrope, total; /* ahead: halves of A_k per KV head; wvals, wrope: the
                                                              values, the RoPE rows within a warp's bytes */
    /* divisors: the sides' chunk (R) and group (G) sizes, value tasks per row, 16-byte chunks of a padded
     * latent key row (rpad/8) and of a latent value row (vr/8) */
    alrd_fdiv kR, kG, vR, vG, ntask, rpc, vrc, perkv; /* perkv: query heads per KV head */
} plan4_t;

template <int HD> struct v4_rope { static constexpr int RS = HD / 2 + 8; }; /* conflict-free float2 rows */
#define V4_ZSTR (T4 + 8) /* Z^T rows (a channel's 16 tokens), 48 bytes: conflict-free ldmatrix */
/* value rows of the VT-tile instance: (VT + 1) 16-byte units, odd: conflict-free ldmatrix */
__host__ __device__ constexpr int v4_vstr(int vt) { return vt * 8 + 8; }

/* KV heads of one latent-kernel block: its group's, or one of them (head_split) */
__host__ __device__ __forceinline__ int v4_block_heads(const alrd_gpu_attn_layer &L) {
    return L.head_split ? 1 : L.group_heads;
}

static int v4_vt(int vr) { return vr <= 64 ? 8 : vr <= 96 ? 12 : vr <= 128 ? 16 : vr <= 192 ? 24 : vr <= 256 ? 32 : 0; }

static void make_plan4(const alrd_gpu_attn_layer *L, plan4_t *p) {
    p->rpad = ceil16(L->kr);
    p->vpad = ceil16(L->vr);
    /* Z^T; full-precision key rows [16][rpad + 8] are staged in the same buffer (smaller for rpad >= 16) */
    p->buf_h = p->rpad * V4_ZSTR;
    p->ahead = (size_t)L->hd * p->rpad;
    size_t o = 0;
    p->as = o;    o = al16(o + 2 * (size_t)v4_block_heads(*L) * p->ahead);
    p->warps = o;
    p->wvals = al16(2 * (size_t)p->buf_h);
    p->wrope = p->wvals + al16(2 * (size_t)T4 * v4_vstr(v4_vt(L->vr)));
    p->wbytes = p->wrope + al16(4 * (size_t)2 * 2 * T4 * (L->hd / 2 + 8)); /* 2 stages of cos | sin rows */
    o += NW4 * p->wbytes;
    size_t merge = 4 * (size_t)NW4 * 16 * (2 + p->vpad); /* the end: (max, sum) and O of each warp */
    p->total = o > merge ? o : merge;
    const int vcw = L->vs.bits == 16 ? 8 : L->vs.cpw;
    p->kR = alrd_fdiv_make(L->ks.R);
    p->kG = alrd_fdiv_make(L->ks.G);
    p->vR = alrd_fdiv_make(L->vs.R);
    p->vG = alrd_fdiv_make(L->vs.G);
    p->ntask = alrd_fdiv_make((L->vr + vcw - 1) / vcw);
    p->rpc = alrd_fdiv_make(p->rpad / 8);
    p->vrc = alrd_fdiv_make(L->vr / 8);
    p->perkv = alrd_fdiv_make(L->n_heads / L->n_kv);
}

static int v4_side_ok(const alrd_gpu_side *s, int per_channel) {
    if (s->bits == 16) return s->d % 8 == 0;
    if (s->bits != 2 && s->bits != 4) return 0;
    if (s->per_channel != per_channel || s->R % T4 || s->G % T4 || s->d % 8) return 0;
    if (s->seq_words >= (1u << 31) || s->seq_groups >= (1u << 31)) return 0; /* 32-bit offsets in a sequence */
    return per_channel ? 1 : s->G % s->cpw == 0;
}

static int v4_ok(const alrd_gpu_attn_layer *L) {
    if (L->kmode != ALRD_GPU_K_LATENT || !L->kAf || L->vr <= 0 || L->kr % 8 || L->vr % 8 || !v4_vt(L->vr)) return 0;
    int per_kv = L->n_heads / L->n_kv;
    if (L->group_heads * per_kv > 16) return 0;
    if (L->vs.bits != 16 && L->n_kv / L->group_heads > 1 && L->vr % 16) return 0; /* a group starts mid-word */
    int vcw = L->vs.bits == 16 ? 8 : L->vs.cpw;
    if (ceil16(L->kr) > 32 * 5 || T4 * ((L->vr + vcw - 1) / vcw) > 32 * v4_vm(v4_vt(L->vr))) return 0; /* KM, VM */
    /* latent_v2 (ALRD_GPU_LATENT_V2=1): the previous kernel, for comparisons */
    return !L->latent_v2 && v4_side_ok(&L->ks, 1) && v4_side_ok(&L->vs, 0);
}

/* 16-byte chunk i of the packed A_k: lane i % 32 = (matrix m, row), q = i / 32 = (KV head j, k-step ks) * HD/16
 * + n-tile pair np; matrix m = (n-tile 2np + m / 2, k half m % 2), row = key column within the n-tile */
__global__ void pack_ak_kernel(const uint16_t *A, int n_chunks, int hd, int kr, int ksn, uint16_t *out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_chunks) return;
    const int m = (i >> 3) & 3, row = i & 7, q = i >> 5, np = q % (hd / 16), jk = q / (hd / 16);
    const int j = jk / ksn, ks = jk % ksn, n = j * hd + np * 16 + (m >> 1) * 8 + row, c0 = (ks * 2 + (m & 1)) * 8;
    for (int e = 0; e < 8; e++) out[(size_t)i * 8 + e] = c0 + e < kr ? A[(size_t)n * kr + c0 + e] : (uint16_t)0;
}

extern "C" size_t alrd_gpu_attn_ak_halves(int n_kv, int hd, int kr) { return (size_t)n_kv * hd * ceil16(kr); }

extern "C" int alrd_gpu_attn_pack_ak(const uint16_t *kA, int n_kv, int hd, int kr, uint16_t *kAf, void *stream) {
    if (hd % 16 || kr <= 0) return (int)cudaErrorInvalidValue;
    const int n = (int)(alrd_gpu_attn_ak_halves(n_kv, hd, kr) / 8);
    pack_ak_kernel<<<(n + 255) / 256, 256, 0, (cudaStream_t)stream>>>(kA, n, hd, kr, ceil16(kr) / 16, kAf);
    return (int)cudaGetLastError();
}

/* Sequence b's part of a side (codes, scales, zeros), opaque: the decode kernel indexes it with 32-bit offsets
 * (v4_side_ok) through the read-only path (the codes were written by earlier kernels) */
struct seq_side {
    const uint32_t *cw;
    const uint16_t *sc, *ze;
};
__device__ __forceinline__ seq_side seq_side_of(const alrd_gpu_side &s, int b) {
    return {opaque(s.codes + (size_t)b * s.seq_words), opaque(s.scales + (size_t)b * s.seq_groups),
            opaque(s.zeros + (size_t)b * s.seq_groups)};
}

/* The codes of one word (bits 2: 16 codes, 4: 8) as fp16 pairs
 * (code 2i, code 2i+1) * s + z, written to dst[0 .. 16/bits*... ) as
 * uint4s: 2-bit words give two, 4-bit words one. The pairs are gathered
 * with a byte permute and turned into fp16 by OR-ing in the exponent of
 * 1024 (exact), then 1024 is subtracted (exact) before one fused
 * multiply-add. */
__device__ __forceinline__ void dequant_word(uint32_t w, int bits, __half2 s, __half2 z, uint4 *dst) {
    const __half2 k1024 = __float2half2_rn(1024.0f);
    uint32_t h[8];
    if (bits == 2) {
        const uint32_t E = w & 0x33333333u, O = (w >> 2) & 0x33333333u; /* even / odd codes, a nibble each */
        const uint32_t E4 = E >> 4, O4 = O >> 4;
#pragma unroll
        for (int i = 0; i < 8; i++) { /* pair i: nibble i of E and O, i.e. byte i/2, low or high */
            const uint32_t sel = (uint32_t)(i / 2) * 0x0011u + (uint32_t)(4 + i / 2) * 0x1100u;
            const uint32_t v = __byte_perm(i & 1 ? E4 : E, i & 1 ? O4 : O, sel);
            h[i] = (v & 0x00030003u) | 0x64006400u;
        }
    } else {
        const uint32_t E = w & 0x0F0F0F0Fu, O = (w >> 4) & 0x0F0F0F0Fu;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint32_t sel = (uint32_t)i * 0x0011u + (uint32_t)(4 + i) * 0x1100u;
            h[i] = (__byte_perm(E, O, sel) & 0x000F000Fu) | 0x64006400u;
        }
    }
    const int np = bits == 2 ? 8 : 4;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        if (i >= np) break;
        __half2 x = __hsub2(*reinterpret_cast<__half2 *>(&h[i]), k1024);
        x = __hfma2(x, s, z);
        h[i] = *reinterpret_cast<uint32_t *>(&x);
    }
    dst[0] = make_uint4(h[0], h[1], h[2], h[3]);
    if (bits == 2) dst[1] = make_uint4(h[4], h[5], h[6], h[7]);
}

#ifdef ALRD_V4_TRACE /* a debugging aid: SM clock at points of block 0's warp 0, printed for a few launches */
__device__ unsigned long long v4_stamp[8];
__device__ unsigned v4_launches;
#define V4_STAMP(i) do { if (blockIdx.x == 0 && tid == 0) v4_stamp[i] = clock64(); } while (0)
#else
#define V4_STAMP(i) do { } while (0)
#endif

template <int HD, int VT, int KB, int VB> /* KB, VB: key / value bits fixed at compile time, 0: read from L */
__global__ void __launch_bounds__(NW4 * 32) attn_latent_kernel(alrd_gpu_attn_layer L, plan4_t P, const uint16_t *q16,
                                                               const int *pos, int nsplit, int vw_max, float *work) {
    constexpr int NT = HD / 8, KS = HD / 16, RS = v4_rope<HD>::RS, VSTR = v4_vstr(VT);
    extern __shared__ __align__(16) unsigned char smem[];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, t4 = lane & 3;
    const int sp = blockIdx.x, b = blockIdx.z;
    /* the block's KV heads kh0 .. kh0 + nkh - 1 (v4_block_heads) and their group */
    const int nkh = v4_block_heads(L), grp = L.head_split ? blockIdx.y / L.group_heads : blockIdx.y;
    const int kh0 = L.head_split ? blockIdx.y : grp * nkh;
    const int per_kv = (int)P.perkv.d, QH = nkh * per_kv, h0 = kh0 * per_kv;
    const int kr = L.kr, vr = L.vr, rpad = P.rpad;
    uint16_t *As = reinterpret_cast<uint16_t *>(smem + P.as);
    /* A_k of the block's heads, a straight copy of L.kAf (alrd_gpu_attn_pack_ak's order): a lane's B fragments
     * of head j, k-step ks and n-tile pair np are at As + j*ahead + (ks*HD/16 + np)*256 + lane*8 halves,
     * constant offsets in the unrolled loop, without bank conflicts. A weight, loaded once per block: split 0
     * (never empty) requests it before pdl_wait(), while the kernel before this one finishes. */
    auto load_ak = [&]() {
        const uint16_t *A = L.kAf + (size_t)kh0 * P.ahead;
        for (int i = tid; i < nkh * (int)P.ahead / 8; i += NW4 * 32) cp_async16(As + i * 8, A + i * 8, 16);
    };
    V4_STAMP(0);
    pdl_trigger();
    if (sp == 0) load_ak();
    pdl_wait();
    V4_STAMP(1);
    const int n = pos[b] + 1;
    int t0, t1;
    float *wml, *wacc;
    if (!split_begin(n, nsplit, sp, L.n_heads, b, h0, vw_max, work, t0, t1, wml, wacc)) return;
    const alrd_gpu_side &ks = L.ks, &vs = L.vs;
    const int kbits = KB ? KB : ks.bits, vbits = VB ? VB : vs.bits; /* one dequantisation path when fixed */
    const int vcpw = VB ? 32 / VB : vs.cpw;
    const int kq = side_quantized(ks, n), vq = side_quantized(vs, n);
    const int kc0 = grp * kr, vc0 = grp * vr; /* the group's latent columns */
    const int ntiles = (t1 - t0 + T4 - 1) / T4;
    uint16_t *buf = reinterpret_cast<uint16_t *>(smem + P.warps + warp * P.wbytes);
    uint16_t *vbuf = reinterpret_cast<uint16_t *>(smem + P.warps + warp * P.wbytes + P.wvals);
    float *rope = reinterpret_cast<float *>(smem + P.warps + warp * P.wbytes + P.wrope); /* 2 stages of cos | sin */

    /* RoPE rows of tile i's positions (clamped to valid ones) into a stage, as one cp.async group */
    auto rope_issue = [&](int i, int stage) {
        if (i < ntiles)
            rope_rows_async<HD, T4, 32, RS>(L, t0 + i * T4, min(T4, t1 - (t0 + i * T4)), rope + stage * 2 * T4 * RS, lane);
        cp_async_commit();
    };
    /* The packed codes of a tile, fetched a tile ahead into registers: key
     * channels lane + 32 i (one word per 16 tokens at 2 bits, two at 4)
     * with their scale and zero; value tasks (row, word) of this lane. */
    constexpr int KM = 5, VM = v4_vm(VT);
    constexpr int KU = HD == 64 ? KM * 2 : 1; /* k-steps of the reconstruction unrolled (HD 128: spills) */
    /* scales and zeros stay in registers of their own until the tile that uses them: packing the pair into one
     * register as they arrive made each warp wait for the loads right there (20% of the stall samples, ncu at
     * 8b62f23, depth 32768 batch 16) */
    uint32_t kw[KM][2], ksc[KM], kze[KM], vwd[VM], vsc[VM], vze[VM];
    int vrow[VM], vtask[VM];
    const int vcw = vbits == 16 ? 8 : vcpw, ntask = (int)P.ntask.d;
#pragma unroll
    for (int k = 0; k < VM; k++) {
        const int i = lane + 32 * k, q = fdiv_q(i, P.ntask);
        vrow[k] = i < T4 * ntask ? q : T4; /* T4: no task */
        vtask[k] = i - q * ntask;
    }
    auto fetch_k = [&](int i) {
        const int ts = t0 + i * T4;
        if (i >= ntiles || ts >= kq) return;
        const int unit = fdiv_q(ts, P.kR), i0 = ts - unit * (int)P.kR.d;
        const int w0 = unit * (int)ks.unit_words + kc0 * ks.wpr + (i0 >> (kbits == 2 ? 4 : 3)); /* 16 or 8 a word */
        const int g0 = unit * (int)ks.unit_groups + kc0 * ks.ng + fdiv_q(i0, P.kG);
        const seq_side q = seq_side_of(ks, b);
#pragma unroll
        for (int k = 0; k < KM; k++) {
            const int c = lane + 32 * k;
            if (c < kr) {
                const int w = w0 + c * ks.wpr, g = g0 + c * ks.ng;
                kw[k][0] = __ldg(q.cw + w);
                if (kbits == 4) kw[k][1] = __ldg(q.cw + w + 1);
                ksc[k] = __ldg(q.sc + g), kze[k] = __ldg(q.ze + g);
            }
        }
    };
    auto fetch_v = [&](int i) {
        const int ts = t0 + i * T4;
        if (i >= ntiles || vbits == 16 || ts >= vq) return;
        const int nv = min(T4, t1 - ts);
        const seq_side q = seq_side_of(vs, b);
#pragma unroll
        for (int k = 0; k < VM; k++) {
            const int sidx = ts + vrow[k];
            if (vrow[k] < nv && sidx < vq) {
                const int c = vc0 + vtask[k] * vcw, g = sidx * (int)vs.unit_groups + fdiv_q(c, P.vG);
                vwd[k] = __ldg(q.cw + sidx * (int)vs.unit_words + (c >> (vbits == 2 ? 4 : 3)));
                vsc[k] = __ldg(q.sc + g), vze[k] = __ldg(q.ze + g);
            }
        }
    };

    /* The rows of a tile held at full precision (the residual ring, or fp16 storage) by cp.async, straight
     * into shared memory: the latent keys as Z [16 tokens][channel] (zero beyond kr and the split) when
     * the tile's keys are not quantised (per-channel units end on tile boundaries), and the value rows
     * past the quantised ones (the rows quantised or past the split are written by the tile loop). */
    auto ring_issue = [&](int tile) {
        if (tile >= ntiles) return;
        const int ts = t0 + tile * T4, nv = min(T4, t1 - ts);
        if (ts >= kq) {
            const uint16_t *base = kbits == 16 ? ks.rows + (size_t)b * ks.seq_rows : ks.ring + (size_t)b * ks.seq_ring;
            for_each_chunk(lane, 32, P.rpc, T4, [&](int r, int ch) {
                const bool ok = r < nv && ch * 8 < kr;
                const int s = ts + (ok ? r : 0), row = kbits == 16 ? s : fdiv_r(s, P.kR);
                cp_async16(buf + r * (rpad + 8) + ch * 8, base + (size_t)row * ks.d + kc0 + (ok ? ch * 8 : 0), ok ? 16 : 0);
            });
        }
        if (vbits == 16 || ts + nv > vq) {
            const uint16_t *base = vbits == 16 ? vs.rows + (size_t)b * vs.seq_rows : vs.ring + (size_t)b * vs.seq_ring;
            for_each_chunk(lane, 32, P.vrc, nv, [&](int r, int ch) {
                const int s = ts + r;
                if (vbits == 16 || s >= vq)
                    cp_async16(vbuf + r * VSTR + ch * 8,
                               base + (size_t)(vbits == 16 ? s : fdiv_r(s, P.vR)) * vs.d + vc0 + ch * 8, 16);
            });
        }
    };

    /* Q as the A operand: row r = query head h0 + r of the group (zero beyond QH) */
    uint32_t qa[KS][4];
    const int jr0 = gid < QH ? fdiv_q(gid, P.perkv) : -1, jr1 = gid + 8 < QH ? fdiv_q(gid + 8, P.perkv) : -1;
    { /* the first tile's data (and A_k, unless requested above) and Q: one round trip */
        if (sp != 0) load_ak();
        ring_issue(warp);
        rope_issue(warp, 0);
        fetch_k(warp);
        fetch_v(warp);
        const uint16_t *qb = q16 + (size_t)b * L.n_heads * HD + (size_t)h0 * HD;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            const int c = kk * 16 + 2 * t4;
            qa[kk][0] = jr0 >= 0 ? ld32(qb + gid * HD + c) : 0u;
            qa[kk][1] = jr1 >= 0 ? ld32(qb + (gid + 8) * HD + c) : 0u;
            qa[kk][2] = jr0 >= 0 ? ld32(qb + gid * HD + c + 8) : 0u;
            qa[kk][3] = jr1 >= 0 ? ld32(qb + (gid + 8) * HD + c + 8) : 0u;
        }
        V4_STAMP(2);
        cp_async_wait_all();
        __syncthreads();
    }
    V4_STAMP(3);
    const int nvt = vr / 8;
    /* this lane's ldmatrix rows of the key staging buffer: Z^T (codes) or Z (fp16 rows) */
    const uint16_t *zt_lane = buf + ((lane & 7) + (lane >> 4) * 8) * V4_ZSTR + ((lane >> 3) & 1) * 8;
    const uint16_t *z_lane = buf + (lane & 15) * (rpad + 8) + (lane >> 4) * 8;
    float o[VT][4];
#pragma unroll
    for (int i = 0; i < VT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f; /* rows gid, gid + 8; l partial over this lane */

    for (int i = 0, tile = warp; tile < ntiles; i++, tile += NW4) {
        const int ts = t0 + tile * T4, nv = min(T4, t1 - ts);
        const float *Rc = rope + (i & 1) * 2 * T4 * RS, *Rs = Rc + T4 * RS;
        if (i > 0) ring_issue(tile); /* (the first tile's came with the prologue) */
        cp_async_commit();
        rope_issue(tile + NW4, (i + 1) & 1); /* the next tile's RoPE rows, into the other stage */

        /* ---- latent keys of the tile: Z^T [channel][16 tokens] (codes) or Z [16 tokens][channel] (fp16) */
        const bool kcodes = ts < kq;
        if (kcodes) {
#pragma unroll
            for (int k = 0; k < KM; k++) {
                const int c = lane + 32 * k;
                if (c >= rpad) break;
                uint4 *dst = reinterpret_cast<uint4 *>(buf + c * V4_ZSTR);
                if (c >= kr) {
                    dst[0] = dst[1] = make_uint4(0, 0, 0, 0);
                    continue;
                }
                const __half2 sc = __half2half2(__ushort_as_half((uint16_t)ksc[k]));
                const __half2 zr = __half2half2(__ushort_as_half((uint16_t)kze[k]));
                if (kbits == 2) {
                    dequant_word(kw[k][0], 2, sc, zr, dst);
                } else {
                    dequant_word(kw[k][0], 4, sc, zr, dst);
                    dequant_word(kw[k][1], 4, sc, zr, dst + 1);
                }
            }
            fetch_k(tile + NW4); /* in flight while this tile computes */
        }
        asm volatile("cp.async.wait_group 1;\n" ::: "memory"); /* this tile's rows (the next tile's RoPE may fly) */
        __syncwarp();

        /* ---- per KV head: keys on the tensor cores, bias + RoPE, then its query rows' scores */
        float s[2][4];
#pragma unroll
        for (int e = 0; e < 2; e++) s[e][0] = s[e][1] = s[e][2] = s[e][3] = 0.0f;
        /* the A operand's lane address: Z^T (transposed ldmatrix, 16 channels a k-step) or Z (plain, 16 columns) */
        const unsigned za = opaque((unsigned)__cvta_generic_to_shared(kcodes ? zt_lane : z_lane));
        for (int j = 0; j < nkh; j++) {
            float c[NT][4];
#pragma unroll
            for (int nt = 0; nt < NT; nt++) c[nt][0] = c[nt][1] = c[nt][2] = c[nt][3] = 0.0f;
            const uint16_t *Aj = As + j * (int)P.ahead + lane * 8;
#pragma unroll KU
            for (int ks16 = 0; ks16 < KM * 2; ks16++) { /* kr <= 32 KM; the first step always runs (rpad >= 16),
                                                          * so c's zeros fold into it */
                if (ks16 > 0 && ks16 * 16 >= rpad) break;
                uint32_t a0, a1, a2, a3;
                if (kcodes) /* Z^T rows are channels: matrices (tok 0-7 | 8-15) x (ch k0.. | k0+8..) */
                    ldsm_x4_trans(a0, a1, a2, a3, za + ks16 * 16 * V4_ZSTR * 2);
                else
                    ldsm_x4(a0, a1, a2, a3, za + ks16 * 32);
#pragma unroll
                for (int nt = 0; nt < NT; nt += 2) {
                    uint32_t b0, b1, b2, b3;
                    ldsm_x4(b0, b1, b2, b3, Aj + (ks16 * (HD / 16) + nt / 2) * 256);
                    mma16816(c[nt], a0, a1, a2, a3, b0, b1);
                    mma16816(c[nt + 1], a0, a1, a2, a3, b2, b3);
                }
            }
            if (L.bk) { /* warp-uniform: most models have no k_proj bias */
                const float *bk = L.bk + (size_t)(kh0 + j) * HD;
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    const float2 bb = *reinterpret_cast<const float2 *>(bk + nt * 8 + 2 * t4);
                    c[nt][0] += bb.x, c[nt][1] += bb.y, c[nt][2] += bb.x, c[nt][3] += bb.y;
                }
            }
#pragma unroll
            for (int nt = 0; nt < NT / 2; nt++) {
                const int d = nt * 8 + 2 * t4;
                const float2 cs0 = *reinterpret_cast<const float2 *>(Rc + gid * RS + d);
                const float2 sn0 = *reinterpret_cast<const float2 *>(Rs + gid * RS + d);
                const float2 cs1 = *reinterpret_cast<const float2 *>(Rc + (gid + 8) * RS + d);
                const float2 sn1 = *reinterpret_cast<const float2 *>(Rs + (gid + 8) * RS + d);
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float c0 = e ? cs0.y : cs0.x, s0 = e ? sn0.y : sn0.x;
                    const float c1 = e ? cs1.y : cs1.x, s1 = e ? sn1.y : sn1.x;
                    float x1 = c[nt][e], x2 = c[nt + NT / 2][e];
                    c[nt][e] = x1 * c0 - x2 * s0;
                    c[nt + NT / 2][e] = x2 * c0 + x1 * s0;
                    x1 = c[nt][2 + e], x2 = c[nt + NT / 2][2 + e];
                    c[nt][2 + e] = x1 * c1 - x2 * s1;
                    c[nt + NT / 2][2 + e] = x2 * c1 + x1 * s1;
                }
            }
            const bool on0 = jr0 == j, on1 = jr1 == j;
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                const uint32_t q0 = on0 ? qa[kk][0] : 0u, q1 = on1 ? qa[kk][1] : 0u;
                const uint32_t q2 = on0 ? qa[kk][2] : 0u, q3 = on1 ? qa[kk][3] : 0u;
                mma16816(s[0], q0, q1, q2, q3, pack2(c[2 * kk][0], c[2 * kk][1]), pack2(c[2 * kk + 1][0], c[2 * kk + 1][1]));
                mma16816(s[1], q0, q1, q2, q3, pack2(c[2 * kk][2], c[2 * kk][3]), pack2(c[2 * kk + 1][2], c[2 * kk + 1][3]));
            }
        }
        if (i == 0) V4_STAMP(4);

        /* ---- latent values of the tile: [16 tokens][vr] fp16 in vbuf; rows past the split are zero, the
         * quantised ones are dequantised here (the rest came by ring_issue) */
#pragma unroll
        for (int k = 0; k < VM; k++) {
            const int r = vrow[k];
            if (r >= T4) break;
            uint4 *dst = reinterpret_cast<uint4 *>(vbuf + r * VSTR + vtask[k] * vcw);
            const long sidx = ts + r;
            if (r >= nv) {
                dst[0] = make_uint4(0, 0, 0, 0);
                if (vcw == 16) dst[1] = make_uint4(0, 0, 0, 0);
            } else if (vbits != 16 && sidx < vq) {
                dequant_word(vwd[k], vbits, __half2half2(__ushort_as_half((uint16_t)vsc[k])),
                             __half2half2(__ushort_as_half((uint16_t)vze[k])), dst);
            }
        }
        fetch_v(tile + NW4);

        float c0, c1;
        uint32_t pa[4];
        mma_tile_softmax(s, nv, L.scale, m0, m1, l0, l1, c0, c1, pa);
        rescale_rows(o, c0, c1);
        __syncwarp(); /* the values are in vbuf */
#pragma unroll
        for (int nt = 0; nt < VT; nt++) {
            if (nt >= nvt) break;
            uint32_t b0, b1;
            ldsm_x2_trans(b0, b1, vbuf + (lane & 15) * VSTR + nt * 8);
            mma16816(o[nt], pa[0], pa[1], pa[2], pa[3], b0, b1);
        }
        __syncwarp(); /* buf, vbuf and this RoPE stage are refilled by later tiles */
        if (i == 0) V4_STAMP(5);
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory"); /* the RoPE stages are drained: shared memory is free */
    merge_warps<NW4, VT>(o, nvt, m0, m1, l0, l1, smem, P.vpad, QH, vr, wml, wacc, nsplit, sp, vw_max);
#ifdef ALRD_V4_TRACE
    V4_STAMP(6);
    if (blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0 && tid == 0) {
        const unsigned k = atomicAdd(&v4_launches, 1);
        if (k % 30 == 0 && k < 300)
            printf("v4 trace launch %u n %d ntiles %d: wait %llu pos+split+issue %llu prologue %llu keys %llu vals+pv %llu "
                   "merge %llu cycles\n", k, n, ntiles, v4_stamp[1] - v4_stamp[0], v4_stamp[2] - v4_stamp[1],
                   v4_stamp[3] - v4_stamp[2], v4_stamp[4] - v4_stamp[3], v4_stamp[5] - v4_stamp[4],
                   v4_stamp[6] - v4_stamp[5]);
    }
#endif
}

typedef void (*attn4_fn)(alrd_gpu_attn_layer, plan4_t, const uint16_t *, const int *, int, int, float *);

/* The instance for a head dim, value rank and bits: 2-bit keys and values
 * (the common case) have their own, with one dequantisation path and no
 * fp16-storage branches in its code; other bits share one that reads them
 * from the layer. kb22 = 2: that instance, 0: the shared one. */
#define PICK4_VT(HD, KB, VB)                                                                                          \
    switch (v4_vt(vr)) {                                                                                              \
    case 8: return attn_latent_kernel<HD, 8, KB, VB>;                                                                 \
    case 12: return attn_latent_kernel<HD, 12, KB, VB>;                                                               \
    case 16: return attn_latent_kernel<HD, 16, KB, VB>;                                                               \
    case 24: return attn_latent_kernel<HD, 24, KB, VB>;                                                               \
    case 32: return attn_latent_kernel<HD, 32, KB, VB>;                                                               \
    }
static attn4_fn pick4_at(int hd, int vr, int kb22) {
    if (hd == 64 && kb22) PICK4_VT(64, 2, 2)
    if (hd == 64 && !kb22) PICK4_VT(64, 0, 0)
    if (hd == 128 && kb22) PICK4_VT(128, 2, 2)
    if (hd == 128 && !kb22) PICK4_VT(128, 0, 0)
    return NULL;
}
#undef PICK4_VT

static attn4_fn pick4(const alrd_gpu_attn_layer *L) {
    /* latent_generic (ALRD_GPU_LATENT_GENERIC=1): always the shared instance, for comparisons */
    return pick4_at(L->hd, L->vr, !L->latent_generic && L->ks.bits == 2 && L->vs.bits == 2);
}

/* Reduces the splits of one (query head, sequence) into its output row (the
 * latent mix or the head's values). Every step is spread over the block:
 * the split weights in parallel, the columns as (column, part of the
 * splits) threads reading coalesced rows. */
#define CMB_THREADS 256
__device__ __forceinline__ float block_reduce(float x, float *red, bool is_max) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o; o >>= 1) {
        float y = __shfl_xor_sync(0xffffffffu, x, o);
        x = is_max ? fmaxf(x, y) : x + y;
    }
    __syncthreads(); /* red may still be read by a previous reduction */
    if (lane == 0) red[warp] = x;
    __syncthreads();
    x = red[0];
    for (int i = 1; i < CMB_THREADS / 32; i++) x = is_max ? fmaxf(x, red[i]) : x + red[i];
    return x;
}

/* The combine's shared floats: the splits' weights (rounded up to 4) |
 * 4 x CMB_THREADS partial sums | 32 for reductions. */
__host__ __device__ __forceinline__ int cmb_parts_at(int nsplit) { return (nsplit + 3) & ~3; }
static size_t cmb_smem(int nsplit) { return sizeof(float) * (cmb_parts_at(nsplit) + 4 * CMB_THREADS + 32); }

__global__ void __launch_bounds__(CMB_THREADS) attn_combine_kernel(alrd_gpu_attn_layer L, int nsplit, int vw_max,
                                                                   const int *pos, const float *work, uint16_t *out) {
    extern __shared__ float w[]; /* cmb_smem */
    const int h = blockIdx.x, b = blockIdx.y, tid = threadIdx.x;
    const int vw = L.vr > 0 ? L.vr : L.hd;
    pdl_trigger();
    pdl_wait();
    float *part = w + cmb_parts_at(nsplit), *red = part + 4 * CMB_THREADS;
    const float *ml = work + split_ml_off(L.n_heads, b, h, nsplit);
    const float *ac = work + split_acc_off(gridDim.y, L.n_heads, b, h, nsplit, vw_max);
    const int ns = splits_used(pos[b] + 1, nsplit);
    float M = -INFINITY;
    for (int i = tid; i < ns; i += CMB_THREADS) M = fmaxf(M, ml[2 * i]);
    M = block_reduce(M, red, true);
    float den = 0.0f;
    for (int i = tid; i < ns; i += CMB_THREADS) {
        float m = ml[2 * i], wi = m > -INFINITY ? expf(m - M) : 0.0f;
        w[i] = wi;
        den += wi * ml[2 * i + 1];
    }
    den = block_reduce(den, red, false); /* its barriers also publish w */
    if (vw % 4 == 0 && vw_max % 4 == 0 && vw <= 4 * CMB_THREADS) {
        /* (4-column chunk, part of the splits) threads, 16-byte loads, 8 splits in flight */
        const int c4n = vw / 4, nparts = CMB_THREADS / c4n, c4 = tid % c4n, p = tid / c4n;
        float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (p < nparts) {
#pragma unroll 8
            for (int i = p; i < ns; i += nparts) {
                const float wi = w[i];
                const float4 x = *reinterpret_cast<const float4 *>(ac + (size_t)i * vw_max + 4 * c4);
                if (wi != 0.0f) a.x += wi * x.x, a.y += wi * x.y, a.z += wi * x.z, a.w += wi * x.w;
            }
        }
        reinterpret_cast<float4 *>(part)[tid] = a;
        __syncthreads();
        if (p == 0) {
            for (int q = 1; q < nparts; q++) {
                const float4 y = reinterpret_cast<const float4 *>(part)[q * c4n + c4];
                a.x += y.x, a.y += y.y, a.z += y.z, a.w += y.w;
            }
            uint2 pk;
            pk.x = (uint32_t)f2h(a.x / den) | (uint32_t)f2h(a.y / den) << 16;
            pk.y = (uint32_t)f2h(a.z / den) | (uint32_t)f2h(a.w / den) << 16;
            *reinterpret_cast<uint2 *>(out + ((size_t)b * L.n_heads + h) * vw + 4 * c4) = pk;
        }
        return;
    }
    const int cols = min(vw, CMB_THREADS), nparts = CMB_THREADS / cols; /* (column, part of the splits) threads */
    for (int c0 = 0; c0 < vw; c0 += CMB_THREADS) {
        const int c = c0 + tid % cols, p = tid / cols;
        float a = 0.0f;
        if (p < nparts && c < vw) {
#pragma unroll 4
            for (int i = p; i < ns; i += nparts) {
                float wi = w[i], x = ac[(size_t)i * vw_max + c];
                a += wi != 0.0f ? wi * x : 0.0f;
            }
        }
        part[tid] = a;
        __syncthreads();
        if (p == 0 && c < vw) {
            for (int q = 1; q < nparts; q++) a += part[q * cols + tid];
            out[((size_t)b * L.n_heads + h) * vw + c] = f2h(a / den);
        }
        __syncthreads();
    }
}


typedef void (*attn_fn)(alrd_gpu_attn_layer, plan_t, const uint16_t *, const int *, int, int, float *);
typedef void (*attn2_fn)(alrd_gpu_attn_layer, plan2_t, const uint16_t *, const int *, int, int, float *);

static attn_fn pick(int hd, int kmode) {
    if (hd == 64) {
        if (kmode == ALRD_GPU_K_LATENT) return attn_decode_kernel<64, ALRD_GPU_K_LATENT>;
        if (kmode == ALRD_GPU_K_FULL) return attn_decode_kernel<64, ALRD_GPU_K_FULL>;
        return attn_decode_kernel<64, ALRD_GPU_K_ROPED>;
    }
    if (kmode == ALRD_GPU_K_LATENT) return attn_decode_kernel<128, ALRD_GPU_K_LATENT>;
    if (kmode == ALRD_GPU_K_FULL) return attn_decode_kernel<128, ALRD_GPU_K_FULL>;
    return attn_decode_kernel<128, ALRD_GPU_K_ROPED>;
}

static attn2_fn pick2(int hd, int kmode) {
    if (hd == 64) {
        if (kmode == ALRD_GPU_K_LATENT) return attn_v2_kernel<64, ALRD_GPU_K_LATENT>;
        if (kmode == ALRD_GPU_K_FULL) return attn_v2_kernel<64, ALRD_GPU_K_FULL>;
        return attn_v2_kernel<64, ALRD_GPU_K_ROPED>;
    }
    if (kmode == ALRD_GPU_K_LATENT) return attn_v2_kernel<128, ALRD_GPU_K_LATENT>;
    if (kmode == ALRD_GPU_K_FULL) return attn_v2_kernel<128, ALRD_GPU_K_FULL>;
    return attn_v2_kernel<128, ALRD_GPU_K_ROPED>;
}

extern "C" int alrd_gpu_attn_prepare(size_t bytes) {
    for (int hd = 64; hd <= 128; hd *= 2)
        for (int km = 0; km < 3; km++) {
            cudaError_t e = cudaFuncSetAttribute(pick(hd, km), cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
            if (e == cudaSuccess)
                e = cudaFuncSetAttribute(pick2(hd, km), cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
            if (e == cudaSuccess)
                e = cudaFuncSetAttribute(hd == 64 ? attn_fp16_kernel<64> : attn_fp16_kernel<128>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
            for (int vr = 32; vr <= 256 && e == cudaSuccess; vr += 32)
                for (int kb22 = 0; kb22 < 2 && e == cudaSuccess; kb22++)
                    e = cudaFuncSetAttribute(pick4_at(hd, vr, kb22), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)bytes);
            if (e != cudaSuccess) return (int)e;
        }
    return attn_kivi_prepare(bytes);
}

/* The fused decode kernel alrd_gpu_attn_decode launches for a layer: the
 * function, its threads per block, its blocks per sequence and split (KV
 * heads or groups) and its dynamic shared memory. */
typedef struct {
    const void *fn;
    int threads, groups;
    size_t smem;
} kshape;

static kshape shape_of(const alrd_gpu_attn_layer *L) {
    if (v3_ok(L))
        return {(const void *)(L->hd == 64 ? attn_fp16_kernel<64> : attn_fp16_kernel<128>), NW3 * 32, L->n_kv,
                v3_smem(L->hd)};
    if (attn_kivi_ok(L)) return {attn_kivi_fn(L), ATTN_KIVI_WARPS * 32, L->n_kv, attn_kivi_smem(L)};
    if (v4_ok(L)) {
        plan4_t p;
        make_plan4(L, &p);
        return {(const void *)pick4(L), NW4 * 32, L->n_kv / v4_block_heads(*L), p.total};
    }
    if (v2_ok(L)) {
        plan2_t p;
        make_plan2(L, &p);
        return {(const void *)pick2(L->hd, L->kmode), NTHREADS, L->n_kv / p.nkh, p.total};
    }
    plan_t p;
    make_plan(L, &p);
    return {(const void *)pick(L->hd, L->kmode), NTHREADS, L->n_kv / p.nkh, p.total};
}

extern "C" size_t alrd_gpu_attn_smem(const alrd_gpu_attn_layer *L, size_t limit) {
    if (L->hd != 64 && L->hd != 128) return 0;
    if (L->n_kv <= 0 || L->n_heads % L->n_kv || L->group_heads <= 0 || L->n_kv % L->group_heads) return 0;
    if (L->kmode == ALRD_GPU_K_LATENT && (L->kr <= 0 || !L->kA)) return 0;
    if (L->kmode == ALRD_GPU_K_ROPED && L->ks.bits != 16) return 0;
    const size_t total = shape_of(L).smem;
    return total <= limit ? total : 0;
}

extern "C" int alrd_gpu_attn_occupancy(const alrd_gpu_attn_layer *L, int *groups) {
    const kshape k = shape_of(L);
    int n = 0;
    *groups = k.groups;
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k.fn, k.threads, k.smem) == cudaSuccess ? n : 1;
}

extern "C" size_t alrd_gpu_attn_work_floats(int n_heads, int B, int nsplit, int vw_max) {
    return (size_t)B * n_heads * nsplit * (2 + (size_t)vw_max) + 4; /* the mixes start 16-byte aligned */
}

extern "C" int alrd_gpu_attn_decode(const alrd_gpu_attn_layer *L, const uint16_t *q16, const int *pos_dev, int B,
                                    int nsplit, int vw_max, float *work, uint16_t *out, void *stream) {
    cudaStream_t st = (cudaStream_t)stream;
    int e = 0;
    if (v3_ok(L)) {
        e = launch_pdl(L->hd == 64 ? attn_fp16_kernel<64> : attn_fp16_kernel<128>, dim3(nsplit, L->n_kv, B), NW3 * 32,
                       v3_smem(L->hd), st, *L, q16, pos_dev, nsplit, vw_max, work);
    } else if (attn_kivi_ok(L)) {
        e = attn_kivi_launch(L, q16, pos_dev, B, nsplit, vw_max, work, st);
    } else if (v4_ok(L)) {
        plan4_t p;
        make_plan4(L, &p);
        e = launch_pdl(pick4(L), dim3(nsplit, L->n_kv / v4_block_heads(*L), B), NW4 * 32, p.total, st, *L, p, q16,
                       pos_dev, nsplit, vw_max, work);
    } else if (v2_ok(L)) {
        plan2_t p;
        make_plan2(L, &p);
        pick2(L->hd, L->kmode)<<<dim3(nsplit, L->n_kv / p.nkh, B), NTHREADS, p.total, st>>>(*L, p, q16, pos_dev, nsplit,
                                                                                          vw_max, work);
    } else {
        plan_t p;
        make_plan(L, &p);
        pick(L->hd, L->kmode)<<<dim3(nsplit, L->n_kv / p.nkh, B), NTHREADS, p.total, st>>>(*L, p, q16, pos_dev, nsplit,
                                                                                         vw_max, work);
    }
    if (!e) e = (int)cudaGetLastError();
    if (e) return e;
    return launch_pdl(attn_combine_kernel, dim3(L->n_heads, B), CMB_THREADS, cmb_smem(nsplit), st, *L, nsplit, vw_max,
                      pos_dev, work, out);
}
