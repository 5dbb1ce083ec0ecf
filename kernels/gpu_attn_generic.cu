/* gpu_attn_generic: the block-synchronous decode kernels (gpu_attn.h) for
 * the caches no faster family decodes: attn_v2_kernel (tensor cores) where
 * its shape limits allow, else attn_decode_kernel (v1). Both dequantise each
 * 64-token tile into shared memory and re-rotate latent keys per step. */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "gpu_attn_common.cuh"

#define NTHREADS 128


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

static int generic_ok(const alrd_gpu_attn_layer *) { return 1; }

/* the chosen kernel's shared memory and blocks per sequence and split (v2 where its limits allow, else v1) */
static size_t generic_plan(const alrd_gpu_attn_layer *L, int *blocks) {
    if (v2_ok(L)) {
        plan2_t p;
        make_plan2(L, &p);
        *blocks = L->n_kv / p.nkh;
        return p.total;
    }
    plan_t p;
    make_plan(L, &p);
    *blocks = L->n_kv / p.nkh;
    return p.total;
}
static size_t generic_smem(const alrd_gpu_attn_layer *L) {
    int blocks;
    return generic_plan(L, &blocks);
}
static int generic_blocks(const alrd_gpu_attn_layer *L) {
    int blocks;
    generic_plan(L, &blocks);
    return blocks;
}
static const void *generic_fn(const alrd_gpu_attn_layer *L) {
    return v2_ok(L) ? (const void *)pick2(L->hd, L->kmode) : (const void *)pick(L->hd, L->kmode);
}

static int generic_prepare(size_t bytes) {
    for (int hd = 64; hd <= 128; hd *= 2)
        for (int km = 0; km < 3; km++) {
            cudaError_t e = cudaFuncSetAttribute(pick(hd, km), cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
            if (e == cudaSuccess)
                e = cudaFuncSetAttribute(pick2(hd, km), cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
            if (e != cudaSuccess) return (int)e;
        }
    return 0;
}

static int generic_launch(const alrd_gpu_attn_layer *L, const uint16_t *q16, const int *pos_dev, int B, int nsplit,
                          int vw_max, float *work, cudaStream_t st) {
    if (v2_ok(L)) {
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
    return (int)cudaGetLastError();
}

const attn_family attn_generic_family = {"generic",      generic_ok,      generic_smem,   generic_fn,
                                         generic_blocks, NTHREADS,        generic_prepare, generic_launch};
