/* gpu_attn_fp16: decode attention over the fp16 cache (RoPE'd keys, fp16
 * values; gpu_attn.h). */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "gpu_attn_common.cuh"

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

static int fp16_ok(const alrd_gpu_attn_layer *L) { return v3_ok(L); }
static size_t fp16_smem(const alrd_gpu_attn_layer *L) { return v3_smem(L->hd); }
static const void *fp16_fn(const alrd_gpu_attn_layer *L) {
    return (const void *)(L->hd == 64 ? attn_fp16_kernel<64> : attn_fp16_kernel<128>);
}
static int fp16_blocks(const alrd_gpu_attn_layer *L) { return L->n_kv; }

static int fp16_prepare(size_t bytes) {
    for (int hd = 64; hd <= 128; hd *= 2) {
        cudaError_t e = cudaFuncSetAttribute(hd == 64 ? attn_fp16_kernel<64> : attn_fp16_kernel<128>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
        if (e != cudaSuccess) return (int)e;
    }
    return 0;
}

static int fp16_launch(const alrd_gpu_attn_layer *L, const uint16_t *q16, const int *pos_dev, int B, int nsplit,
                       int vw_max, float *work, cudaStream_t st) {
    return launch_pdl(L->hd == 64 ? attn_fp16_kernel<64> : attn_fp16_kernel<128>, dim3(nsplit, L->n_kv, B), NW3 * 32,
                      v3_smem(L->hd), st, *L, q16, pos_dev, nsplit, vw_max, work);
}

const attn_family attn_fp16_family = {"fp16",      fp16_ok,  fp16_smem,    fp16_fn,
                                      fp16_blocks, NW3 * 32, fp16_prepare, fp16_launch};
