/* gpu_attn_common: device helpers shared by the decode attention kernel
 * families (gpu_attn_fp16.cu, gpu_attn_kivi.cu, gpu_attn_latent.cu,
 * gpu_attn_generic.cu; gpu_attn.cu: the dispatch and the split combine),
 * and the interface each family gives the dispatch. C++ only: device code is
 * not linked across files, so each .cu includes these inline. */
#ifndef ALRD_GPU_ATTN_COMMON_CUH
#define ALRD_GPU_ATTN_COMMON_CUH

#include <math.h>

#include "gpu_attn.h"
#include "gpu_common.cuh"

/* An attention kernel's launch, its layer's descriptor the first argument:
 * with programmatic dependent launch as the descriptor says (L.pdl). */
template <typename... P, typename... A>
static inline int launch_pdl(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                             const alrd_gpu_attn_layer &L, A... args) {
    return launch_pdl(L.pdl, kernel, grid, block, smem, st, L, args...);
}

/* x rounded up to 16 (shared-memory plans: 16-byte aligned regions) */
static inline size_t al16(size_t x) { return (x + 15) & ~(size_t)15; }
static inline int ceil16(int x) { return (x + 15) & ~15; }

/* Splits are runs of whole TILEs of tokens (split_len), in every kernel. */
#define TILE 64

__device__ __forceinline__ void mma16816(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t ld32(const uint16_t *p) { return *reinterpret_cast<const uint32_t *>(p); }

/* The tokens [t0, t1) of a sequence of n that split sp of nsplit covers:
 * equal TILE-aligned runs of split_len tokens, the same in every decode
 * kernel; the first splits_used(n) of them hold tokens. */
__device__ __forceinline__ int split_len(int n, int nsplit) { return ((n + nsplit - 1) / nsplit + TILE - 1) / TILE * TILE; }
__device__ __forceinline__ int splits_used(int n, int nsplit) { return (n + split_len(n, nsplit) - 1) / split_len(n, nsplit); }
__device__ __forceinline__ void split_range(int n, int nsplit, int sp, int &t0, int &t1) {
    t0 = sp * split_len(n, nsplit);
    t1 = min(n, t0 + split_len(n, nsplit));
}

/* Where the splits of query heads h0.. of sequence b leave their results
 * for the combine (B sequences): (max, sum) pairs, then the
 * unnormalised value mixes (vw_max wide). */
__device__ __forceinline__ size_t split_ml_off(int n_heads, int b, int h0, int nsplit) {
    return ((size_t)b * n_heads + h0) * nsplit * 2;
}
__device__ __forceinline__ size_t split_acc_off(int B, int n_heads, int b, int h0, int nsplit, int vw_max) {
    return (((size_t)B * n_heads * nsplit * 2 + 3) & ~(size_t)3) + ((size_t)b * n_heads + h0) * nsplit * vw_max;
}

/* Split sp of sequence b (n tokens) for query heads h0..: its tokens
 * [t0, t1) and where its results go; false when it holds none (the
 * combine reads only the splits_used ones, so an empty split writes
 * nothing). */
__device__ __forceinline__ bool split_begin(int n, int nsplit, int sp, int n_heads, int b, int h0, int vw_max, float *work,
                                            int &t0, int &t1, float *&wml, float *&wacc) {
    split_range(n, nsplit, sp, t0, t1);
    wml = work + split_ml_off(n_heads, b, h0, nsplit);
    wacc = work + split_acc_off(gridDim.z, n_heads, b, h0, nsplit, vw_max);
    return t0 < t1;
}

/* (max, sum) of the QH query heads of split sp, read by the combine. */
__device__ __forceinline__ void split_store_ml(float *wml, int QH, int nsplit, int sp, const float *m, const float *l) {
    for (int qh = threadIdx.x; qh < QH; qh += blockDim.x) {
        wml[((size_t)qh * nsplit + sp) * 2] = m[qh];
        wml[((size_t)qh * nsplit + sp) * 2 + 1] = l[qh];
    }
}

/* f(r, c) for the chunks (row r, column c) of rows x nch numbered first,
 * first + step, ... (row-major), stepped without a division per chunk. */
template <typename F>
__device__ __forceinline__ void for_each_chunk(int first, int step, int nch, int rows, F f) {
    const int dr = step / nch, dc = step % nch;
    for (int r = first / nch, c = first % nch; r < rows;) {
        f(r, c);
        r += dr, c += dc;
        if (c >= nch) c -= nch, r++;
    }
}

/* The same with the chunk count as a launch-time divisor (two loops: one
 * shared stepping helper changed the latent kernels' generated code). */
template <typename F>
__device__ __forceinline__ void for_each_chunk(int first, int step, const alrd_fdiv &nch, int rows, F f) {
    const int n = (int)nch.d, dr = fdiv_q(step, nch), dc = step - dr * n;
    for (int r = fdiv_q(first, nch), c = first - r * n; r < rows;) {
        f(r, c);
        r += dr, c += dc;
        if (c >= n) c -= n, r++;
    }
}

/* B fragments of m16n8k16 (k = 16 tokens, n = 8 channels) from a row-major
 * [token][channel] tile: two transposed 8x8 matrices, rows given by lanes 0-15. */
__device__ __forceinline__ void ldsm_x2_trans(uint32_t &b0, uint32_t &b1, const uint16_t *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n" : "=r"(b0), "=r"(b1) : "r"(a));
}

__device__ __forceinline__ uint32_t pack2(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&h);
}

/* 16 bytes global -> shared without registers; src_bytes 0 writes zeros. */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int src_bytes) {
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(src_bytes));
}
/* The same with the L2::128B prefetch hint, for the fp16 kernel's cache rows (128 contiguous bytes per row
 * and head at head dim 64): depth 32768 batch 16 115.5 -> 113.8 us per layer by ncu; 256B fetched the next
 * head's row too and took longer, an evict_first policy gained less (results/session5/sweep-v3-l2-hint.log) */
__device__ __forceinline__ void cp_async16_l2(void *dst, const void *src, int src_bytes) {
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

/* ---- shared by the kernels whose warps work alone (v3, v4): a warp's
 * 16-token tile of scores is an mma accumulator (rows gid and gid + 8 =
 * query rows, columns nt*8 + 2*t4 + e = tokens); each warp keeps its own
 * online softmax and O, and the block merges the warps once at the end. */

/* Online softmax over one tile: tokens nv and beyond are masked; the scores
 * become p = exp(s * scale - m_new), (m, l) of both rows advance (l partial
 * over the lane), c0 / c1 are the rows' correction factors and pa the P
 * fragments as the A operand of P V. */
__device__ __forceinline__ void mma_tile_softmax(float (&s)[2][4], int nv, float scale, float &m0, float &m1,
                                                 float &l0, float &l1, float &c0, float &c1, uint32_t (&pa)[4]) {
    const int t4 = threadIdx.x & 3;
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const bool ok = nt * 8 + 2 * t4 + e < nv;
            s[nt][e] = ok ? s[nt][e] * scale : -INFINITY;
            s[nt][2 + e] = ok ? s[nt][2 + e] * scale : -INFINITY;
            mx0 = fmaxf(mx0, s[nt][e]);
            mx1 = fmaxf(mx1, s[nt][2 + e]);
        }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1); /* finite: every tile has a valid token */
    /* __expf (ex2.approx of x log2 e; arguments <= 0, relative error ~1e-6, far below the fp16 rounding
     * of p): two instructions where expf takes about eight */
    c0 = __expf(m0 - mn0), c1 = __expf(m1 - mn1);
    m0 = mn0, m1 = mn1;
    l0 *= c0, l1 *= c1;
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            s[nt][e] = __expf(s[nt][e] - mn0);
            s[nt][2 + e] = __expf(s[nt][2 + e] - mn1);
            l0 += s[nt][e], l1 += s[nt][2 + e];
        }
    pa[0] = pack2(s[0][0], s[0][1]), pa[1] = pack2(s[0][2], s[0][3]);
    pa[2] = pack2(s[1][0], s[1][1]), pa[3] = pack2(s[1][2], s[1][3]);
}

/* O's rows times their correction factors; skipped (bit-identical) when no
 * row of the warp moved its maximum, as in most tiles of a long context. */
template <int VT>
__device__ __forceinline__ void rescale_rows(float (&o)[VT][4], float c0, float c1) {
    if (!__any_sync(0xffffffffu, c0 != 1.0f || c1 != 1.0f)) return;
#pragma unroll
    for (int i = 0; i < VT; i++) o[i][0] *= c0, o[i][1] *= c0, o[i][2] *= c1, o[i][3] *= c1;
}

/* The block's NW warps merge their (m, l, O) for the first `rows` query
 * rows (O: nvt <= VT n-tiles, `width` columns) through shared memory
 * (rows of ostr floats; the caller is done with it and its cp.async groups
 * are drained) into the split's (max, sum) and unnormalised value mix. */
template <int NW, int VT>
__device__ __forceinline__ void merge_warps(const float (&o)[VT][4], int nvt, float m0, float m1, float l0, float l1,
                                            unsigned char *smem, int ostr, int rows, int width, float *wml,
                                            float *wacc, int nsplit, int sp, int vw_max) {
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, t4 = lane & 3;
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    __syncthreads(); /* every warp is done with shared memory */
    float *mw = reinterpret_cast<float *>(smem); /* [NW][16] max */
    float *lw = mw + NW * 16;                    /* [NW][16] sum */
    float *ow = lw + NW * 16;                    /* [NW][16][ostr] */
    if (t4 == 0) {
        mw[warp * 16 + gid] = m0, mw[warp * 16 + gid + 8] = m1;
        lw[warp * 16 + gid] = l0, lw[warp * 16 + gid + 8] = l1;
    }
#pragma unroll
    for (int nt = 0; nt < VT; nt++) {
        if (nt >= nvt) break;
#pragma unroll
        for (int e = 0; e < 2; e++) {
            ow[(warp * 16 + gid) * ostr + nt * 8 + 2 * t4 + e] = o[nt][e];
            ow[(warp * 16 + gid + 8) * ostr + nt * 8 + 2 * t4 + e] = o[nt][2 + e];
        }
    }
    __syncthreads();
    /* each row's warp weights exp(m_w - M) once (they were made per element), then the elements; the same
     * bits, rank 0.5 2-bit steps 0.3-2.7% shorter (H200, results/session6/merge-weights-h200.log) */
    __shared__ float fw[NW][16];
    if (tid < rows) {
        float M = -INFINITY, den = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; w++) M = fmaxf(M, mw[w * 16 + tid]);
#pragma unroll
        for (int w = 0; w < NW; w++) {
            const float mwq = mw[w * 16 + tid], f = mwq > -INFINITY ? expf(mwq - M) : 0.0f;
            fw[w][tid] = f;
            den += f * lw[w * 16 + tid];
        }
        wml[((size_t)tid * nsplit + sp) * 2] = M;
        wml[((size_t)tid * nsplit + sp) * 2 + 1] = den;
    }
    __syncthreads();
    for_each_chunk(tid, NW * 32, width, rows, [&](int qh, int d) { /* element (qh, d) of rows x width */
        float a = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; w++) a += fw[w][qh] * ow[(w * 16 + qh) * ostr + d];
        wacc[((size_t)qh * nsplit + sp) * vw_max + d] = a;
    });
}

/* ldmatrix.x4 at a shared-memory address (a), plain or transposed, or at a pointer (p), plain */
__device__ __forceinline__ void ldsm_x4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, unsigned a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, unsigned a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(a));
}
__device__ __forceinline__ void ldsm_x4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, const uint16_t *p) {
    ldsm_x4(r0, r1, r2, r3, (unsigned)__cvta_generic_to_shared(p));
}
/* x itself, made opaque: the compiler keeps the value in a register instead of recomputing it from its
 * inputs at each use (which it does under register pressure) or folding it into 64-bit address arithmetic */
template <typename T> __device__ __forceinline__ T opaque(T x) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "one register or a pair");
    if constexpr (sizeof(T) == 8)
        asm volatile("" : "+l"(x));
    else
        asm volatile("" : "+r"(x));
    return x;
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

/* ---- the kernel families, for gpu_attn.cu's dispatch (alrd_gpu_attn_decode takes the first, in the order of
 * gpu_attn.cu's table, whose ok() accepts the layer); each lives in its own file ---- */
typedef struct {
    const char *name;
    int (*ok)(const alrd_gpu_attn_layer *L);      /* the layer's cache is one this family decodes */
    size_t (*smem)(const alrd_gpu_attn_layer *L); /* its dynamic shared memory */
    const void *(*fn)(const alrd_gpu_attn_layer *L); /* the instance it launches */
    int (*blocks)(const alrd_gpu_attn_layer *L);  /* blocks per sequence and split (KV heads or groups) */
    int threads;                                  /* threads per block */
    int (*prepare)(size_t bytes);                 /* raises every instance's shared-memory limit */
    int (*launch)(const alrd_gpu_attn_layer *L, const uint16_t *q16, const int *pos, int B, int nsplit, int vw_max,
                  float *work, cudaStream_t st);  /* the splits' (max, sum, mix) into work */
} attn_family;
extern const attn_family attn_fp16_family;    /* gpu_attn_fp16.cu: fp16 keys and values */
extern const attn_family attn_kivi_family;    /* gpu_attn_kivi.cu: quantised full-width or per-head latent keys */
extern const attn_family attn_latent_family;  /* gpu_attn_latent.cu: latent keys of 2/4/16 bits */
extern const attn_family attn_generic_family; /* gpu_attn_generic.cu: everything else (block-synchronous) */

#endif
