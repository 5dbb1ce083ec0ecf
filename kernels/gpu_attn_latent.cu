/* gpu_attn_latent: decode attention over latent keys of 2, 4 or 16 bits
 * (K = RoPE(latent . A_k^T + b_k), a block per latent group or KV head) and
 * the A_k reorder it reads (gpu_attn.h). */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "gpu_attn_common.cuh"

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

static size_t latent_smem(const alrd_gpu_attn_layer *L) {
    plan4_t p;
    make_plan4(L, &p);
    return p.total;
}
static const void *latent_fn(const alrd_gpu_attn_layer *L) { return (const void *)pick4(L); }
static int latent_blocks(const alrd_gpu_attn_layer *L) { return L->n_kv / v4_block_heads(*L); }

static int latent_prepare(size_t bytes) {
    for (int hd = 64; hd <= 128; hd *= 2)
        for (int vr = 32; vr <= 256; vr += 32)
            for (int kb22 = 0; kb22 < 2; kb22++) {
                const cudaError_t e =
                    cudaFuncSetAttribute(pick4_at(hd, vr, kb22), cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
                if (e != cudaSuccess) return (int)e;
            }
    return 0;
}

static int latent_launch(const alrd_gpu_attn_layer *L, const uint16_t *q16, const int *pos_dev, int B, int nsplit,
                         int vw_max, float *work, cudaStream_t st) {
    plan4_t p;
    make_plan4(L, &p);
    return launch_pdl(pick4(L), dim3(nsplit, L->n_kv / v4_block_heads(*L), B), NW4 * 32, p.total, st, *L, p, q16,
                      pos_dev, nsplit, vw_max, work);
}

const attn_family attn_latent_family = {"latent",      v4_ok,    latent_smem,    latent_fn,
                                        latent_blocks, NW4 * 32, latent_prepare, latent_launch};
