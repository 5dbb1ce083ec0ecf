/* gpu_attn_kivi: decode attention over caches of full-width keys -- KIVI-
 * quantised pre-RoPE keys at 2, 3, 4 or 8 bits per channel, or fp16 RoPE'd
 * keys -- or of per-head latent keys (K = L A_k^T + b_k, the latents L
 * KIVI-quantised at 2, 3, 4 or 8 bits), with values at 2, 3, 4, 8 bits per
 * token or fp16, full width or a latent group's (vr <= head dim).
 *
 * Latent keys (KL): the latent side is tiled in the latent order (gpu_ops.h),
 * so a lane's words decode into the A operand of K = L A_k^T (tokens as
 * rows); each 16-token tile's keys are reconstructed on the tensor cores, in
 * a run-time loop over the rank's k-steps (registers do not grow with rank),
 * against the head's A_k held in shared memory (one bulk copy a block), and
 * leave the accumulators as the same fp16 pairs the quantised full-width keys
 * decode to: RoPE and S = Q K^T below are shared.
 *
 * The quantised sides are kept in the tiled layout (gpu_ops.h): the codes of
 * a 16-token tile sit in the order of this kernel's mma fragments, so a lane
 * decodes its own words straight into the B operands of S = Q K^T and
 * O += P V (m16n8k16, query heads as the rows), with no fp16 tile in shared
 * memory and no ldmatrix between the bytes and the tensor cores:
 *   keys: lane (g, t) takes token g (and g + 8) and channel pairs
 *     (16k + 2t + 8h, +1): one word holds the pair's two codes in its two
 *     halves, OR-ed into a power of two (code_pair, exact) and that taken
 *     off, one hfma2 with the pair's (scale, zero) -- kivi's q*s + z rounded
 *     once;
 *   values: lane (g, t) takes channel g + 8j of tokens (2t, 2t + 1) and
 *     (2t + 8, 2t + 9): a word holds those two tokens' codes in its halves,
 *     with their two scales and zeros as half2s. Where the value groups
 *     align with the n-tiles (full width, G a power of two), a tile whose
 *     values are all quantised folds them (vals_fold): each group's scales
 *     into P, the zeros into one more mma, the codes into B as they are.
 * A block is one (split, KV head, sequence); its 4 warps work alone, warp w on
 * the 32-token steps w, w + 4, ... of the split (a step is two mma tiles),
 * each streaming its steps' bytes through its own ring of NST stages, and
 * merge once at the end. Each segment of a step is contiguous in the tiled
 * layout (the values' codes, scales and zeros: one 32-token unit; the keys'
 * codes, scales and zeros: one chunk's; two RoPE tile rows), so a step is a
 * handful of bulk copies (cp.async.bulk, one lane) completing on the stage's
 * mbarrier. The code is written once for both tiles of a step (a loop, not
 * unrolled): a launch fetches the kernel's code, and a version that unrolled
 * them (96 KB an instance) was 0.2 ms a decode step slower at every depth.
 * Codes become fp16 by OR-ing them into a power of two whose ulp is the
 * code's bit (code_pair), so no code needs a shift of its own.
 *
 * RoPE without a table row per token: the score of token ts + j is
 *     q . R(ts + j) k = (R(ts)^T q) . (R(j) k),
 * so the query is rotated back by each tile's first position (a RoPE tile row
 * of fp16 pairs in the lane's order, two of them in the step's stage) and
 * each key by its offset j < 16 in the tile (fp16 cos/sin pairs of a table
 * copied into the warp's shared memory once). The angle of token ts + j is
 * then ts*theta + j*theta in fp32 where the CPU takes fp32(ts + j)*theta:
 * they differ by the rounding of the angle (2e-3 rad at position 32768 for
 * theta = 1, the error the fp32 angle itself carries against exact
 * arithmetic).
 *
 * The residual tokens (a key chunk not yet complete, the last R values) are
 * fp16 in the side's ring; a tile that holds some is read from there by the
 * lanes (at most R tokens of a sequence). */
#include "gpu_attn_common.cuh"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#define KW 4           /* warps per block */
#define KT 16          /* tokens of an mma tile: a half of a step */
#define ST TILED_VUNIT /* tokens of a step: what a warp takes from its ring at a time (two tiles) */

/* V rows (halves): an odd number of 16-byte units, conflict-free ldmatrix */
static int vrow_stride(int vw) { return (vw / 8) % 2 ? vw + 16 : vw + 8; }

typedef struct {
    int vw, vstr, kstr;   /* value width; fp16 value / key row strides in a stage (halves) */
    int kfw;              /* key block width: the head dim, or a latent group's rank (latent keys) */
    int kslots;           /* key groups (scale and zero rows of kfw halves) a stage holds */
    int ksl_h, ksl_nt;    /* the row of half h's n-tile nt: h * ksl_h + nt * ksl_nt */
    int kmerge;           /* a step's keys are one chunk's contiguous tiles and groups: 3 copies, not 6 */
    int vng;              /* value groups one block's columns span, at most */
    int stage;            /* words of one stage */
    int kc, ksz, rope;    /* stage words: key codes (or fp16 rows), key scales then zeros, 2 RoPE tile rows */
    int vc, vsz;          /* value codes (or fp16 rows), value scales then zeros */
    int bars;             /* byte offset of the warps' stage mbarriers ([KW][NST], 8 bytes each) */
    int abuf, abias, abar; /* latent keys: byte offsets of the head's A_k (alrd_gpu_attn_pack_ak's order), of
                              its k_proj bias (fp32, hd; -1: none) and of their mbarrier */
    int npg_log2;         /* the folded value path (vals_fold): log2 of its n-tiles per value group; -1: not taken */
    size_t wbytes, total; /* one warp's ring; the block's dynamic shared memory */
    alrd_fdiv kR, kG, vR, vG;
} kplan;

/* stages of a warp's ring: fp16 rows (a side not quantised) take four times a quantised side's bytes */
__host__ __device__ constexpr int kivi_stages(int hd, bool rows) { return (hd == 64 ? 4 : 3) - (rows ? 1 : 0); }

/* words of the keys' in-tile RoPE table at the head of the RoPE tile buffer (rope_tile_kernel) */
__host__ __device__ constexpr int rope_rot_words(int hd) { return 8 * hd; }

/* The stage's mbarrier (a shared-space address): one lane's arrival with the step's byte count, the bulk copies'
 * bytes (and, for fp16 rows, each lane's cp.async arrival) complete a phase */
__device__ __forceinline__ void mbar_init(unsigned bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive_tx(unsigned bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(unsigned bar, unsigned parity) {
    unsigned done;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(bar), "r"(parity)
                     : "memory");
    } while (!done);
}
/* true in one lane of the (converged) warp: elect.sync, which the compiler knows leaves one thread */
__device__ __forceinline__ bool elect_one() {
    unsigned pred;
    asm volatile("{\n.reg .pred p;\nelect.sync _|p, 0xffffffff;\nselp.u32 %0, 1, 0, p;\n}\n" : "=r"(pred));
    return pred != 0;
}
/* n bytes global -> shared by the bulk-copy engine, completing on mbarrier bar (all 16-byte aligned) */
__device__ __forceinline__ void bulk_copy(unsigned dst, const void *src, unsigned n, unsigned bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
                 "l"(src), "r"(n), "r"(bar)
                 : "memory");
}

/* (a & m) | c in one instruction (the compiler makes two of it) */
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t m, uint32_t c) {
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(d) : "r"(a), "r"(m), "r"(c));
    return d;
}

__device__ __forceinline__ uint32_t hsub2u(uint32_t a, uint32_t b) {
    const __half2 r = __hsub2(*reinterpret_cast<__half2 *>(&a), *reinterpret_cast<__half2 *>(&b));
    return *reinterpret_cast<const uint32_t *>(&r);
}
__device__ __forceinline__ uint32_t hmul2u(uint32_t a, uint32_t b) {
    const __half2 r = __hmul2(*reinterpret_cast<__half2 *>(&a), *reinterpret_cast<__half2 *>(&b));
    return *reinterpret_cast<const uint32_t *>(&r);
}
__device__ __forceinline__ uint32_t hfma2u(uint32_t a, uint32_t b, uint32_t c) {
    const __half2 r = __hfma2(*reinterpret_cast<__half2 *>(&a), *reinterpret_cast<__half2 *>(&b),
                              *reinterpret_cast<__half2 *>(&c));
    return *reinterpret_cast<const uint32_t *>(&r);
}

/* Code slot k of a B-bit field (B2 = 2 for 3 bits: their low two bits) sits at bit code_bit(k) of word
 * k * B2 / 16, in both 16-bit halves. code_shift(k) brings it into the mantissa: none while it ends at bit 9
 * or below, 8 for 2/4/8-bit codes beyond, its whole offset for 3 bits (the third bit joins at bit 2).
 * Its bits at p = code_bit - code_shift then OR into code_magic(k) = 2^(10 - p) (an fp16 pair), whose ulp is
 * 2^-p: the pair is exactly magic + code, and magic taken off leaves the code (one lop3, no shift per slot). */
template <int B> __host__ __device__ constexpr int code_bit(int k) { return k * (B == 3 ? 2 : B) % 16; }
template <int B> __host__ __device__ constexpr int code_shift(int k) {
    return B == 3 ? code_bit<B>(k) : (code_bit<B>(k) + B <= 10 ? 0 : 8);
}
template <int B> __host__ __device__ constexpr uint32_t code_magic(int k) {
    return ((uint32_t)(25 - (code_bit<B>(k) - code_shift<B>(k))) << 10) * 0x00010001u;
}
/* magic + code of slot k of word w, as an fp16 pair (3 bits: the low two; OR the third in at bit 2) */
template <int B> __device__ __forceinline__ uint32_t code_pair(uint32_t w, int k) {
    constexpr int B2 = B == 3 ? 2 : B;
    constexpr uint32_t M = B2 == 2 ? 0x00030003u : B2 == 4 ? 0x000F000Fu : 0x00FF00FFu;
    return and_or(w >> code_shift<B>(k), M << (code_bit<B>(k) - code_shift<B>(k)), code_magic<B>(k));
}

/* y1, y2 = R(angle) (x1, x2) on fp16 pairs, (co, si) the pairs' cos and sin */
__device__ __forceinline__ void rot2(uint32_t &x1, uint32_t &x2, uint32_t co, uint32_t si) {
    const __half2 a = *reinterpret_cast<__half2 *>(&x1), c = *reinterpret_cast<__half2 *>(&x2);
    const __half2 hc = *reinterpret_cast<__half2 *>(&co), hs = *reinterpret_cast<__half2 *>(&si);
    const __half2 u = __hfma2(__hneg2(c), hs, __hmul2(a, hc)), v = __hfma2(a, hs, __hmul2(c, hc));
    x1 = *reinterpret_cast<const uint32_t *>(&u);
    x2 = *reinterpret_cast<const uint32_t *>(&v);
}

/* mma16816 for the rows gid only: rows gid + 8 of the A operand are zero (at most 8 query heads a KV head),
 * so their accumulators stay zero and need no registers */
__device__ __forceinline__ void mma16816_lo(float (&c)[2], uint32_t a0, uint32_t a2, uint32_t b0, uint32_t b1) {
    float d2, d3; /* rows gid + 8: discarded */
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%10,%10};\n"
        : "+f"(c[0]), "+f"(c[1]), "=f"(d2), "=f"(d3)
        : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1), "f"(0.0f));
    asm volatile("" ::"f"(d2), "f"(d3)); /* used: no warning, no instruction */
}

/* The online softmax of a step (4 n-tiles of 8 tokens) for the rows gid only (query heads; rows gid + 8 are
 * zero): tokens nv and beyond masked, p = exp(s * scale - m_new), (m, l) advanced (l partial over the lane),
 * c0 the row's correction and p[2h], p[2h + 1] half h's P fragments (tokens 2 t4, +1 and 2 t4 + 8, +9) */
__device__ __forceinline__ void softmax_step(float (&s)[4][2], int nv, float scale, float &m0, float &l0, float &c0,
                                             uint32_t (&p)[4]) {
    const int t4 = threadIdx.x & 3;
    float mx = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            s[nt][e] = nt * 8 + 2 * t4 + e < nv ? s[nt][e] * scale : -INFINITY;
            mx = fmaxf(mx, s[nt][e]);
        }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float mn = fmaxf(m0, mx); /* finite: every step has a valid token */
    c0 = __expf(m0 - mn);
    m0 = mn;
    l0 *= c0;
#pragma unroll
    for (int nt = 0; nt < 4; nt++) {
#pragma unroll
        for (int e = 0; e < 2; e++) s[nt][e] = __expf(s[nt][e] - mn), l0 += s[nt][e];
        p[nt] = pack2(s[nt][0], s[nt][1]);
    }
}

/* n 32-bit words from shared memory, in 16- or 8-byte loads where n allows */
template <int N> __device__ __forceinline__ void lds_words(uint32_t (&w)[N], const uint32_t *p) {
    if constexpr (N % 4 == 0) {
#pragma unroll
        for (int i = 0; i < N; i += 4) {
            const uint4 v = *reinterpret_cast<const uint4 *>(p + i);
            w[i] = v.x, w[i + 1] = v.y, w[i + 2] = v.z, w[i + 3] = v.w;
        }
    } else if constexpr (N % 2 == 0) {
#pragma unroll
        for (int i = 0; i < N; i += 2) {
            const uint2 v = *reinterpret_cast<const uint2 *>(p + i);
            w[i] = v.x, w[i + 1] = v.y;
        }
    } else {
#pragma unroll
        for (int i = 0; i < N; i++) w[i] = p[i];
    }
}

/* Token jt's keys for lane t4 from a tile's codes: the HD/8 channel pairs as fp16 pairs, before RoPE, with
 * the token's group's scales sc and zeros zc (the lane's half2s of one group row) */
template <int HD, int KB>
__device__ __forceinline__ void key_pairs(const uint32_t *kc, const uint32_t (&s)[HD / 8], const uint32_t (&z)[HD / 8],
                                          int jt, int t4, uint32_t (&kp)[HD / 8]) {
    constexpr int NP = HD / 8, B2 = KB == 3 ? 2 : KB, NW = NP * B2 / 16;
    uint32_t w[NW];
    lds_words<NW>(w, kc + (jt * 4 + t4) * NW);
    uint32_t w1 = 0;
    int b1 = 0;
    if constexpr (KB == 3) {
        if constexpr (NP <= 8) w1 = kc[64 * NW + (jt & 7) * 4 + t4], b1 = (jt >> 3) * 8;
        else w1 = kc[64 * NW + jt * 4 + t4];
    }
#pragma unroll
    for (int pi = 0; pi < NP; pi++) {
        uint32_t x = code_pair<KB>(w[pi * B2 / 16], pi);
        if constexpr (KB == 3) x |= ((w1 >> (b1 + pi)) & 0x00010001u) << 2;
        kp[pi] = hfma2u(hsub2u(x, code_magic<KB>(pi)), s[pi], z[pi]);
    }
}

/* O += P V for a tile whose values are all quantised, with the scales folded into P and the zeros into one
 * more mma: sum_t p_t (s_t x_t + z_t) = sum_t (p_t s_t) x_t + sum_t p_t z_t, per value group (NPG n-tiles of
 * 8 columns each). The codes go into the B operand as they are (code_pair, the magic taken off: exact), so a
 * lane's value pair costs a lop3 and a hsub2 where the hfma2 decode took the group's scales and zeros too.
 * vsz: the lane's scale words of the tile (group g at 16 g, zeros 16 vng words on); zacc (C fragment of P Z,
 * Z's column g the zeros of group g) holds the zero terms, added to O after the loop. */
template <int HD, int VB, int NPG>
__device__ __forceinline__ void vals_fold(float (&o)[HD / 8][2], float (&zacc)[2], uint32_t pa0, uint32_t pa2,
                                          const uint32_t *vc, const uint32_t *vsz, const uint32_t *plane, int vng,
                                          int gid, int t4) {
    constexpr int NT = HD / 8, VB2 = VB == 3 ? 2 : VB, NHV = (NT * VB2 + 15) / 16, NG = NT / NPG;
    static_assert(NG <= 8, "one mma's columns hold the zeros of at most 8 groups");
    uint32_t wf[2 * NHV];
    lds_words<2 * NHV>(wf, vc);
    uint32_t w1a = 0u, w1b = 0u;
    if constexpr (VB == 3) {
        if constexpr (NT <= 8) w1a = plane[gid * 4 + t4], w1b = w1a >> 8;
        else w1a = plane[(gid * 4 + t4) * 2], w1b = plane[(gid * 4 + t4) * 2 + 1];
    }
    { /* the zeros: column gid of Z is group gid's (tokens 2 t4, +1 and 2 t4 + 8, +9) */
        const bool has = gid < NG;
        const uint32_t z0 = has ? vsz[16 * vng + 16 * gid] : 0u, z1 = has ? vsz[16 * vng + 16 * gid + 4] : 0u;
        mma16816_lo(zacc, pa0, pa2, z0, z1);
    }
#pragma unroll
    for (int g = 0; g < NG; g++) {
        const uint32_t q0 = hmul2u(pa0, vsz[16 * g]), q2 = hmul2u(pa2, vsz[16 * g + 4]); /* P' = P s */
#pragma unroll
        for (int j = 0; j < NPG; j++) {
            const int nt = g * NPG + j, w = nt * VB2 / 16;
            uint32_t xa = code_pair<VB>(wf[w], nt), xb = code_pair<VB>(wf[NHV + w], nt);
            if constexpr (VB == 3) xa |= ((w1a >> nt) & 0x00010001u) << 2, xb |= ((w1b >> nt) & 0x00010001u) << 2;
            mma16816_lo(o[nt], q0, q2, hsub2u(xa, code_magic<VB>(nt)), hsub2u(xb, code_magic<VB>(nt)));
        }
    }
}

/* Latent keys: one k-step (16 latent channels) of K = L A_k^T for a 16-token tile, the A operand (tokens as
 * rows) decoded from the lane's words of the latent order (gpu_ops.h: slot 4k + 2(token >= 8) + h) with the
 * pairs' scales and zeros of token g's group (sg, zg: pairs 2k, 2k + 1) and of token g + 8's (s8, z8); kw: the
 * lane's first word of the tile ([word][32 lanes]), nwl: its words before the plane of third bits */
template <int KB>
__device__ __forceinline__ void lat_operand(const uint32_t *kw, int k, int nwl, uint2 sg, uint2 zg, uint2 s8, uint2 z8,
                                            uint32_t (&a)[4]) {
    uint32_t x[4];
    if constexpr (KB == 8) {
        const uint32_t w0 = kw[64 * k], w1 = kw[64 * k + 32];
#pragma unroll
        for (int j = 0; j < 4; j++) x[j] = code_pair<8>(j < 2 ? w0 : w1, j);
    } else {
        const uint32_t w = KB == 4 ? kw[32 * k] : kw[32 * (k >> 1)] >> (8 * (k & 1));
#pragma unroll
        for (int j = 0; j < 4; j++) x[j] = code_pair<KB>(w, j);
        if constexpr (KB == 3) {
            const uint32_t pw = kw[32 * (nwl + (k >> 2))] >> (4 * (k & 3));
#pragma unroll
            for (int j = 0; j < 4; j++) x[j] |= ((pw >> j) & 0x00010001u) << 2;
        }
    }
    /* slots j = 2 (token >= 8) + h: a0 (g, h 0), a1 (g + 8, h 0), a2 (g, h 1), a3 (g + 8, h 1) */
    a[0] = hfma2u(hsub2u(x[0], code_magic<KB>(0)), sg.x, zg.x);
    a[2] = hfma2u(hsub2u(x[1], code_magic<KB>(1)), sg.y, zg.y);
    a[1] = hfma2u(hsub2u(x[2], code_magic<KB>(2)), s8.x, z8.x);
    a[3] = hfma2u(hsub2u(x[3], code_magic<KB>(3)), s8.y, z8.y);
}
/* acc (tokens x the head's channels, fp32) += A (a k-step of latents) A_k^T's k-step k, from the head's packed A_k
 * in shared memory (as: its shared-space address) by ldmatrix.x4 per pair of n-tiles */
template <int HD>
__device__ __forceinline__ void lat_mma(float (&acc)[HD / 8][4], const uint32_t (&a)[4], unsigned as, int k, int lane) {
#pragma unroll
    for (int np = 0; np < HD / 16; np++) {
        uint32_t b0, b1, b2, b3;
        ldsm_x4(b0, b1, b2, b3, as + 2u * (unsigned)(((k * (HD / 16) + np) * 32 + lane) * 8));
        mma16816(acc[2 * np], a[0], a[1], a[2], a[3], b0, b1);
        mma16816(acc[2 * np + 1], a[0], a[1], a[2], a[3], b2, b3);
    }
}

template <int HD, int KB, int VB, bool KL>
__global__ void __launch_bounds__(KW * 32, HD == 64 ? 4 : 2)
    attn_kivi_kernel(alrd_gpu_attn_layer L, kplan P, const uint16_t *q16, const int *pos, int nsplit, int vw_max,
                     float *work) {
    constexpr int KS = HD / 16, NT = HD / 8, NP = HD / 8, NPH = NP / 2;
    constexpr bool KQ = KB < 16, VQ = VB < 16, ROWS = !KQ || !VQ;
    constexpr int NST = kivi_stages(HD, ROWS);
    constexpr int VB2 = VB == 3 ? 2 : VB, NHV = VQ ? (NT * VB2 + 15) / 16 : 1; /* a lane's value words per half */
    extern __shared__ __align__(16) unsigned char smem[];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, t4 = lane & 3;
    const int sp = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
    const int per_kv = L.n_heads / L.n_kv, h0 = kvh * per_kv;
    const int vw = P.vw, nvt = vw / 8, vblk = L.vr > 0 ? kvh / L.group_heads : kvh, vc0 = vblk * vw;
    const int kfw = KL ? P.kfw : HD, kblk = KL ? kvh / L.group_heads : kvh; /* the key block (head or group) */
    const alrd_gpu_side &ks = L.ks, &vs = L.vs;
    const unsigned ring_s0 = (unsigned)__cvta_generic_to_shared(smem);
    /* latent keys: the head's A_k (and k_proj bias) into the block's shared memory once, on a barrier of their own,
     * requested before pdl_wait (a weight: the kernel before this one is still finishing) */
    const unsigned abar = ring_s0 + (unsigned)P.abar, as = ring_s0 + (unsigned)P.abuf;
    if constexpr (KL) {
        if (tid == 0) mbar_init(abar, 1u);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        __syncthreads();
        if (warp == 0 && elect_one()) {
            const unsigned an = 2u * HD * (unsigned)L.kr, bn = P.abias >= 0 ? 4u * HD : 0u;
            mbar_arrive_tx(abar, an + bn);
            bulk_copy(as, L.kAf + (size_t)kvh * HD * L.kr, an, abar);
            if (bn) bulk_copy(ring_s0 + (unsigned)P.abias, L.bk + (size_t)kvh * HD, bn, abar);
        }
    }
    pdl_trigger();
    pdl_wait();
    const int n = pos[b] + 1;
    int t0, t1;
    float *wml, *wacc;
    if (!split_begin(n, nsplit, sp, L.n_heads, b, h0, vw_max, work, t0, t1, wml, wacc)) {
        if constexpr (KL) mbar_wait(abar, 0u); /* no copy outlives the block */
        return;
    }
    const int kq = KQ ? n - fdiv_r(n, P.kR) : 0; /* keys: whole chunks of R quantised */
    const int vq = VQ ? max(0, n - vs.R) : 0;    /* values: all but the last R */
    uint32_t *ring = reinterpret_cast<uint32_t *>(smem + warp * P.wbytes);

    const uint32_t *kcw = KQ ? ks.codes + (size_t)b * ks.seq_words : nullptr;
    const uint16_t *ksc = KQ ? ks.scales + (size_t)b * ks.seq_groups : nullptr;
    const uint16_t *kze = KQ ? ks.zeros + (size_t)b * ks.seq_groups : nullptr;
    const uint32_t *vcw = VQ ? vs.codes + (size_t)b * vs.seq_words : nullptr;
    const uint16_t *vsc = VQ ? vs.scales + (size_t)b * vs.seq_groups : nullptr;
    const uint16_t *vze = VQ ? vs.zeros + (size_t)b * vs.seq_groups : nullptr;
    const int glo = VQ ? fdiv_q(vc0, P.vG) : 0, ngb = VQ ? fdiv_q(vc0 + vw - 1, P.vG) - glo + 1 : 0;
    const int vnh = VQ ? (nvt * VB2 + 15) / 16 : 0; /* the block's value words per lane and half */

    /* the warp's step i (tokens [ts, ts + ST) of its split, two mma tiles) into its ring stage i % NST. Each
     * quantised segment of a step is contiguous in the tiled layout: the values' codes, scales and zeros (one
     * unit), the keys' codes, scales and zeros (one chunk's, when P.kmerge: else per half) and the two RoPE tile
     * rows. One elected lane issues one bulk copy per segment and arrives on the stage's mbarrier with their
     * bytes. fp16 rows (a side kept in fp16) go as 16-byte cp.async pieces from every lane, zero past the
     * split's end, each lane's completion an arrival (noinc) on the same mbarrier. Offsets in 32-bit words
     * within the sequence's sides (attn_kivi_ok bounds them). */
    const unsigned ring_s = (unsigned)__cvta_generic_to_shared(ring);
    const unsigned bar0 = ring_s0 + (unsigned)P.bars + 8u * (unsigned)(warp * NST);
    if (lane == 0)
        for (int s = 0; s < NST; s++) mbar_init(bar0 + 8u * s, ROWS ? 33u : 1u);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    __syncwarp();
    auto issue = [&](int i) {
        const int ts = t0 + ST * (warp + KW * i);
        if (ts >= t1) return;
        const unsigned st = ring_s + 4u * (unsigned)((i % NST) * P.stage), bar = bar0 + 8u * (unsigned)(i % NST);
        if constexpr (ROWS) {
            const int nv = min(ST, t1 - ts);
            uint16_t *sh = reinterpret_cast<uint16_t *>(smem) + (st - ring_s0) / 2;
            if constexpr (!KQ) { /* fp16 RoPE'd key rows [ST][kstr] */
                const uint16_t *kr = ks.rows + (size_t)b * ks.seq_rows + (size_t)kvh * HD;
                for (int c = lane; c < ST * (HD / 8); c += 32) {
                    const int r = c / (HD / 8), c8 = c % (HD / 8);
                    const bool ok = r < nv;
                    cp_async16(sh + 2 * P.kc + r * P.kstr + c8 * 8, kr + (size_t)(ts + (ok ? r : 0)) * ks.d + c8 * 8,
                               ok ? 16 : 0);
                }
            } else { /* fp16 value rows [ST][vstr] (p = 0 there, and 0 * NaN is NaN) */
                const uint16_t *vr = vs.rows + (size_t)b * vs.seq_rows + vc0;
                for (int c = lane; c < ST * nvt; c += 32) {
                    const int r = c / nvt, c8 = c - r * nvt;
                    const bool ok = r < nv;
                    cp_async16(sh + 2 * P.vc + r * P.vstr + c8 * 8, vr + (size_t)(ts + (ok ? r : 0)) * vs.d + c8 * 8,
                               ok ? 16 : 0);
                }
            }
            asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
        }
        if (elect_one()) {
            unsigned total = 0;
            if constexpr (KQ) {
                const unsigned kn = kfw * 2u; /* bytes of one key group's scales (or zeros) */
                const unsigned zo = 4u * P.ksz + P.kslots * kn;
                for (int h = 0; h < 2; h++) { /* P.kmerge: both halves in one chunk, copied as one */
                    const int th = ts + KT * h;
                    if (th >= kq || th >= t1 || (h && P.kmerge)) break;
                    const int ch = fdiv_q(th, P.kR), tin = th - ch * (int)P.kR.d;
                    const int go = ch * (int)ks.unit_groups + (kblk * ks.ng + fdiv_q(tin, P.kG)) * kfw;
                    const unsigned cn = (P.kmerge ? 8u : 4u) * ks.bw, gn = (P.kmerge ? P.kslots : P.ksl_h) * kn;
                    bulk_copy(st + 4u * (P.kc + h * ks.bw),
                              kcw + ch * (int)ks.unit_words + (kblk * ((int)P.kR.d / KT) + (tin >> 4)) * ks.bw, cn, bar);
                    bulk_copy(st + 4u * P.ksz + h * gn, ksc + go, gn, bar);
                    bulk_copy(st + zo + h * gn, kze + go, gn, bar);
                    total += cn + 2 * gn;
                }
                bulk_copy(st + 4u * P.rope, L.rope_tile + rope_rot_words(HD) + (size_t)(ts >> 4) * (HD / 2), HD * 4, bar); /* rows ts/16, +1 */
                total += HD * 4;
            }
            if constexpr (VQ) {
                if (ts < vq) {
                    const int u = ts / ST, go = u * (int)vs.unit_groups + glo * ST;
                    bulk_copy(st + 4u * P.vc, vcw + u * (int)vs.unit_words + vblk * 2 * vs.bw, 8 * vs.bw, bar);
                    bulk_copy(st + 4u * P.vsz, vsc + go, 64 * ngb, bar);
                    bulk_copy(st + 4u * (P.vsz + 16 * P.vng), vze + go, 64 * ngb, bar);
                    total += 8 * vs.bw + 128 * ngb;
                }
            }
            mbar_arrive_tx(bar, total); /* after the copies: their bytes may land first (tx-count goes below 0) */
        }
    };
    /* RoPE by a key's offset j in its tile: lane (gid, t4)'s tokens j = gid, gid + 8 (n-tile nt) and pairs
     * q < NP/2 (channels 16(q/2) + 2 t4 + 8(q%2), +1) as fp16 (cos, cos) and (sin, sin) pairs: the first ROTW words
     * of L.rope_tile, [nt][16-byte chunk c][lane][4 words] (word 4c + i of a lane's cos | sin run), copied into the
     * warp's shared memory with its first stage (an expect_tx on its barrier before that stage's arrival) and read
     * back per n-tile: 16 registers fewer than keeping them, no block barrier before the loop */
    constexpr int ROTW = rope_rot_words(HD);
    const uint32_t *rot = ring + NST * P.stage;
    if constexpr (KQ)
        if (t0 + ST * warp < t1 && elect_one()) {
            asm volatile("mbarrier.expect_tx.shared::cta.b64 [%0], %1;\n" ::"r"(bar0), "r"(4u * ROTW) : "memory");
            bulk_copy(ring_s + 4u * NST * P.stage, L.rope_tile, 4u * ROTW, bar0);
        }
#pragma unroll 1
    for (int i = 0; i < NST - 1; i++) issue(i);
    if constexpr (KL) mbar_wait(abar, 0u);

    /* Q: row gid = query head h0 + gid (rows >= per_kv and gid + 8 zero: per_kv <= 8), channels
     * kk*16 + 2*t4 + {0, 1, 8, 9}; fp16 keys take qa as it is, quantised keys rotate it per tile */
    uint32_t qa[KS][2];
    {
        const uint16_t *qb = q16 + (size_t)b * L.n_heads * HD + (size_t)(h0 + gid) * HD;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            const int c = kk * 16 + 2 * t4;
            qa[kk][0] = gid < per_kv ? ld32(qb + c) : 0u, qa[kk][1] = gid < per_kv ? ld32(qb + c + 8) : 0u;
        }
    }
    /* the folded value path (vals_fold) for the block's whole tiles (make_kplan says when), npg n-tiles a group */
    const bool fold = VQ && P.npg_log2 >= 0;
    float zacc[2] = {0.0f, 0.0f}; /* P Z: column g the zero terms of the block's value group g (rows gid) */
    /* bit nt: value n-tile nt (columns vc0 + 8 nt ..) starts a group (G % 8 == 0: the next one) */
    unsigned vnew = 0;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
        if (VQ && (nt == 0 || fdiv_q(vc0 + 8 * nt, P.vG) != fdiv_q(vc0 + 8 * nt - 8, P.vG))) vnew |= 1u << nt;

    float o[NT][2]; /* O's rows gid (rows gid + 8 are zero) */
#pragma unroll
    for (int i = 0; i < NT; i++) o[i][0] = o[i][1] = 0.0f;
    float m0 = -INFINITY, l0 = 0.0f; /* row gid; l partial over this lane */

    for (int i = 0;; i++) {
        const int ts = t0 + ST * (warp + KW * i);
        if (ts >= t1) break;
        issue(i + NST - 1); /* into the stage this warp finished with in step i - 1 */
        mbar_wait(bar0 + 8u * (unsigned)(i % NST), (unsigned)(i / NST) & 1u);
        const uint32_t *st = ring + (i % NST) * P.stage;
        const int nv = min(ST, t1 - ts), nh = nv > KT ? 2 : 1;
        float s[4][2];
#pragma unroll
        for (int e = 0; e < 4; e++) s[e][0] = s[e][1] = 0.0f;

#pragma unroll 1 /* one copy of the code for both halves (the kernel's size is what a launch fetches) */
        for (int h = 0; h < nh; h++) {
            const int th = ts + KT * h;
            float sh[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}}; /* the half's scores */
            if constexpr (KQ) {
                uint32_t qr[KS][2]; /* R(th)^T q, on fp16 pairs (channels c, c + 1 with c + HD/2, +1) */
                {
                    uint32_t cs[2 * KS]; /* the lane's (cos, sin) pairs of the RoPE tile row of th */
                    lds_words<2 * KS>(cs, st + P.rope + h * (HD / 2) + t4 * 2 * KS);
#pragma unroll
                    for (int kk = 0; kk < KS / 2; kk++)
#pragma unroll
                        for (int hh = 0; hh < 2; hh++) {
                            const uint32_t co = cs[2 * kk + hh], si = cs[KS + 2 * kk + hh];
                            const uint32_t x1 = qa[kk][hh], x2 = qa[kk + KS / 2][hh];
                            qr[kk][hh] = hfma2u(x2, si, hmul2u(x1, co));
                            qr[kk + KS / 2][hh] = hsub2u(hmul2u(x2, co), hmul2u(x1, si));
                        }
                }
                const bool quant = th < kq;
                float acc[KL ? NT : 1][4]; /* latent keys: the half's K (tokens g, g + 8; the head's channels) */
                if constexpr (KL) {
                    const float *bias = P.abias >= 0 ? reinterpret_cast<const float *>(smem + P.abias) : nullptr;
#pragma unroll
                    for (int nt = 0; nt < NT; nt++) {
                        const float2 bb = bias ? *reinterpret_cast<const float2 *>(bias + 8 * nt + 2 * t4)
                                               : make_float2(0.0f, 0.0f);
                        acc[nt][0] = acc[nt][2] = bb.x, acc[nt][1] = acc[nt][3] = bb.y;
                    }
                    const int nks = kfw >> 4;
                    if (quant) {
                        const uint32_t *kw = st + P.kc + h * ks.bw + lane;
                        const uint32_t *sg = st + P.ksz + h * P.ksl_h * (kfw / 2) + t4 * (kfw / 8);
                        const uint32_t *s8 = sg + P.ksl_nt * (kfw / 2), zo = P.kslots * (kfw / 2);
                        const int nwl = lat_words(kfw, KB == 3 ? 2 : KB);
#pragma unroll 1
                        for (int k = 0; k < nks; k++) {
                            uint32_t a[4];
                            lat_operand<KB>(kw, k, nwl, *reinterpret_cast<const uint2 *>(sg + 2 * k),
                                            *reinterpret_cast<const uint2 *>(sg + zo + 2 * k),
                                            *reinterpret_cast<const uint2 *>(s8 + 2 * k),
                                            *reinterpret_cast<const uint2 *>(s8 + zo + 2 * k), a);
                            lat_mma<HD>(acc, a, as, k, lane);
                        }
                    } else { /* the residual chunk: fp16 latent rows of the ring, token th + j in row th - kq + j */
                        const uint16_t *rg = ks.ring + (size_t)b * ks.seq_ring + (size_t)kblk * kfw + 2 * t4;
                        const bool ok0 = KT * h + gid < nv, ok8 = KT * h + gid + 8 < nv;
                        const uint16_t *r0 = rg + (size_t)(th - kq + (ok0 ? gid : 0)) * ks.d;
                        const uint16_t *r8 = rg + (size_t)(th - kq + (ok8 ? gid + 8 : 0)) * ks.d;
#pragma unroll 1
                        for (int k = 0; k < nks; k++) {
                            const uint32_t a[4] = {ok0 ? ld32(r0 + 16 * k) : 0u, ok8 ? ld32(r8 + 16 * k) : 0u,
                                                   ok0 ? ld32(r0 + 16 * k + 8) : 0u, ok8 ? ld32(r8 + 16 * k + 8) : 0u};
                            lat_mma<HD>(acc, a, as, k, lane);
                        }
                    }
                }
                const uint16_t *rg = ks.ring + (size_t)b * ks.seq_ring + (size_t)kvh * HD;
                uint32_t ksc[NP], kze[NP]; /* the lane's scales and zeros of the n-tile's key group */
                if (!KL && quant) {
                    const uint32_t *g = st + P.ksz + h * P.ksl_h * (HD / 2) + t4 * NP;
                    lds_words<NP>(ksc, g), lds_words<NP>(kze, g + P.kslots * (HD / 2));
                }
#pragma unroll
                for (int nt = 0; nt < 2; nt++) {
                    const int jt = nt * 8 + gid;
                    uint32_t kp[NP];
                    if constexpr (KL) {
#pragma unroll
                        for (int pi = 0; pi < NP; pi++) kp[pi] = pack2(acc[pi][2 * nt], acc[pi][2 * nt + 1]);
                    } else if (quant) {
                        if (nt == 1 && P.ksl_nt) { /* G = 8: a group a n-tile */
                            const uint32_t *g = st + P.ksz + (h * P.ksl_h + 1) * (HD / 2) + t4 * NP;
                            lds_words<NP>(ksc, g), lds_words<NP>(kze, g + P.kslots * (HD / 2));
                        }
                        key_pairs<HD, KB>(st + P.kc + h * ks.bw, ksc, kze, jt, t4, kp);
                    } else { /* the residual chunk: pre-RoPE fp16 rows of the ring, token th + jt in row th - kq + jt */
                        const bool ok = KT * h + jt < nv;
                        const uint16_t *row = rg + (size_t)(th - kq + (ok ? jt : 0)) * ks.d + 2 * t4;
#pragma unroll
                        for (int pi = 0; pi < NP; pi++) kp[pi] = ok ? ld32(row + (pi >> 1) * 16 + (pi & 1) * 8) : 0u;
                    }
                    uint32_t rcs[2 * NPH]; /* the lane's cos | sin pairs of n-tile nt */
#pragma unroll
                    for (int c = 0; c < NPH / 2; c++) {
                        const uint4 v = *reinterpret_cast<const uint4 *>(rot + ((nt * (NPH / 2) + c) * 32 + lane) * 4);
                        rcs[4 * c] = v.x, rcs[4 * c + 1] = v.y, rcs[4 * c + 2] = v.z, rcs[4 * c + 3] = v.w;
                    }
#pragma unroll
                    for (int q = 0; q < NPH; q++) rot2(kp[q], kp[q + NPH], rcs[q], rcs[NPH + q]);
#pragma unroll
                    for (int kk = 0; kk < KS; kk++) mma16816_lo(sh[nt], qr[kk][0], qr[kk][1], kp[2 * kk], kp[2 * kk + 1]);
                }
            } else {
                const uint16_t *Kr = reinterpret_cast<const uint16_t *>(st + P.kc);
#pragma unroll
                for (int nt = 0; nt < 2; nt++) {
                    const uint16_t *kr = Kr + (KT * h + nt * 8 + gid) * P.kstr + 2 * t4;
#pragma unroll
                    for (int kk = 0; kk < KS; kk++)
                        mma16816_lo(sh[nt], qa[kk][0], qa[kk][1], ld32(kr + kk * 16), ld32(kr + kk * 16 + 8));
                }
            }
#pragma unroll
            for (int e = 0; e < 4; e++) /* n-tile e of the step is n-tile e % 2 of half e / 2 */
                if (h == e >> 1) s[e][0] = sh[e & 1][0], s[e][1] = sh[e & 1][1];
        }

        float c0;
        uint32_t p[4]; /* P as the A operand of P V: half h's k-step in p[2h], p[2h + 1] (rows gid) */
        softmax_step(s, nv, L.scale, m0, l0, c0, p);
        if (__any_sync(0xffffffffu, c0 != 1.0f)) { /* rescale_rows for the rows gid */
#pragma unroll
            for (int k = 0; k < NT; k++) o[k][0] *= c0, o[k][1] *= c0;
            zacc[0] *= c0, zacc[1] *= c0;
        }

        if constexpr (VQ) {
            if (ts < vq && ts + ST > vq) { /* scales and zeros of the tokens from vq on to 0: their codes decode to 0 */
                uint16_t *hz = reinterpret_cast<uint16_t *>(const_cast<uint32_t *>(st) + P.vsz);
                for (int k = lane; k < ngb * ST; k += 32)
                    if (ts + (k & (ST - 1)) >= vq) hz[k] = 0, hz[ST * P.vng + k] = 0; /* zeros: 16 vng words on */
                asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); /* before a bulk copy refills it */
                __syncwarp();
            }
#pragma unroll 1
            for (int h = 0; h < nh; h++) {
                const int th = ts + KT * h;
                const uint32_t pa0 = h ? p[2] : p[0], pa2 = h ? p[3] : p[1];
                const uint32_t *vt = st + P.vc + h * vs.bw; /* the half's tile of codes */
                const uint32_t *vc = vt + (gid * 4 + t4) * 2 * vnh, *vsz = st + P.vsz + 8 * h + t4;
                /* the lane's fp16 value pairs of n-tile nt, tokens (2 t4, +1) and (2 t4 + 8, +9), from the tile's
                 * codes (wd: the lane's words, w1a/w1b: its third-bit planes; sa..zb: nt's group's scales, zeros) */
                auto vpair = [&](int nt, const uint32_t (&wd)[2][NHV], uint32_t w1a, uint32_t w1b, uint32_t sa,
                                 uint32_t sb, uint32_t za, uint32_t zb, uint32_t &b0, uint32_t &b1) {
                    uint32_t xa = code_pair<VB>(wd[0][nt * VB2 / 16], nt), xb = code_pair<VB>(wd[1][nt * VB2 / 16], nt);
                    if constexpr (VB == 3) xa |= ((w1a >> nt) & 0x00010001u) << 2, xb |= ((w1b >> nt) & 0x00010001u) << 2;
                    b0 = hfma2u(hsub2u(xa, code_magic<VB>(nt)), sa, za);
                    b1 = hfma2u(hsub2u(xb, code_magic<VB>(nt)), sb, zb);
                };
                auto vload = [&](uint32_t (&wd)[2][NHV], uint32_t &w1a, uint32_t &w1b) {
#pragma unroll
                    for (int k = 0; k < NHV; k++) wd[0][k] = k < vnh ? vc[k] : 0u, wd[1][k] = k < vnh ? vc[vnh + k] : 0u;
                    w1a = w1b = 0u;
                    if constexpr (VB == 3) {
                        const uint32_t *p1 = vt + 64 * vnh;
                        if (nvt <= 8) w1a = p1[gid * 4 + t4], w1b = w1a >> 8;
                        else w1a = p1[(gid * 4 + t4) * 2], w1b = p1[(gid * 4 + t4) * 2 + 1];
                    }
                };
                if (fold && th + KT <= vq) { /* every token quantised, groups on n-tile boundaries */
                    const uint32_t *pl = vt + 64 * NHV;
                    switch (1 << P.npg_log2) {
                    case 1:
                        if constexpr (NT <= 8) vals_fold<HD, VB, 1>(o, zacc, pa0, pa2, vc, vsz, pl, P.vng, gid, t4);
                        break;
                    case 2: vals_fold<HD, VB, 2>(o, zacc, pa0, pa2, vc, vsz, pl, P.vng, gid, t4); break;
                    case 4: vals_fold<HD, VB, 4>(o, zacc, pa0, pa2, vc, vsz, pl, P.vng, gid, t4); break;
                    case 8: vals_fold<HD, VB, 8>(o, zacc, pa0, pa2, vc, vsz, pl, P.vng, gid, t4); break;
                    default:
                        if constexpr (NT == 16) vals_fold<HD, VB, 16>(o, zacc, pa0, pa2, vc, vsz, pl, P.vng, gid, t4);
                    }
                } else if (th + KT <= vq) { /* every token of the tile quantised */
                    uint32_t wd[2][NHV], w1a, w1b, sa = 0, sb = 0, za = 0, zb = 0;
                    vload(wd, w1a, w1b);
                    const uint32_t *g = vsz - 16; /* the lane's scale words of group -1 */
#pragma unroll
                    for (int nt = 0; nt < NT; nt++) {
                        if (nt >= nvt) break;
                        if (vnew >> nt & 1) g += 16, sa = g[0], sb = g[4], za = g[16 * P.vng], zb = g[16 * P.vng + 4];
                        uint32_t b0, b1;
                        vpair(nt, wd, w1a, w1b, sa, sb, za, zb, b0, b1);
                        mma16816_lo(o[nt], pa0, pa2, b0, b1);
                    }
                } else { /* the tile reaches the ring (its last R tokens or fewer): tokens from vq on come from there */
                    const bool vquant = th < vq;
                    uint32_t wd[2][NHV], w1a = 0, w1b = 0, sa = 0, sb = 0, za = 0, zb = 0;
                    if (vquant) vload(wd, w1a, w1b);
                    /* the lane's 4 tokens' ring rows (row s % R), or nullptr: tokens before vq or from n on */
                    const uint16_t *vr = vs.ring + (size_t)b * vs.seq_ring + vc0 + gid, *rr[4];
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int tok = th + 2 * t4 + (e >> 1) * 8 + (e & 1);
                        rr[e] = tok >= vq && tok < n ? vr + (size_t)fdiv_r(tok, P.vR) * vs.d : nullptr;
                    }
                    const uint32_t *g = vsz - 16;
#pragma unroll
                    for (int nt = 0; nt < NT; nt++) {
                        if (nt >= nvt) break;
                        uint32_t b0 = 0u, b1 = 0u;
                        if (vquant) {
                            if (vnew >> nt & 1) g += 16, sa = g[0], sb = g[4], za = g[16 * P.vng], zb = g[16 * P.vng + 4];
                            vpair(nt, wd, w1a, w1b, sa, sb, za, zb, b0, b1);
                        }
                        uint32_t r[2] = {0u, 0u}; /* the ring's values of the lane's tokens, 0 elsewhere */
#pragma unroll
                        for (int e = 0; e < 4; e++)
                            if (rr[e]) r[e >> 1] |= (uint32_t)rr[e][nt * 8] << (16 * (e & 1));
                        const __half2 x0 = __hadd2(*reinterpret_cast<__half2 *>(&b0), *reinterpret_cast<__half2 *>(&r[0]));
                        const __half2 x1 = __hadd2(*reinterpret_cast<__half2 *>(&b1), *reinterpret_cast<__half2 *>(&r[1]));
                        mma16816_lo(o[nt], pa0, pa2, *reinterpret_cast<const uint32_t *>(&x0),
                                    *reinterpret_cast<const uint32_t *>(&x1));
                    }
                }
            }
        } else {
            const uint16_t *V = reinterpret_cast<const uint16_t *>(st + P.vc);
#pragma unroll 1
            for (int h = 0; h < nh; h++) {
                const uint32_t pa0 = h ? p[2] : p[0], pa2 = h ? p[3] : p[1];
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    if (nt >= nvt) break;
                    uint32_t b0, b1;
                    ldsm_x2_trans(b0, b1, V + (KT * h + (lane & 15)) * P.vstr + nt * 8);
                    mma16816_lo(o[nt], pa0, pa2, b0, b1);
                }
            }
        }
        __syncwarp(); /* the stage is read: a later issue refills it */
    }
    if (fold) /* the zero terms of nt's group (lane (gid, g / 2) holds group g's) */
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const int g = nt >> P.npg_log2, src = gid * 4 + (g >> 1);
            const float z0 = __shfl_sync(0xffffffffu, zacc[0], src), z1 = __shfl_sync(0xffffffffu, zacc[1], src);
            const float z = g & 1 ? z1 : z0;
            o[nt][0] += z, o[nt][1] += z;
        }
    /* every step issued was waited for: the rings are drained and merge_warps may reuse them */
    float o4[NT][4];
#pragma unroll
    for (int k = 0; k < NT; k++) o4[k][0] = o[k][0], o4[k][1] = o[k][1], o4[k][2] = o4[k][3] = 0.0f;
    merge_warps<KW, NT>(o4, nvt, m0, -INFINITY, l0, 0.0f, smem, vw, per_kv, vw, wml, wacc, nsplit, sp, vw_max);
}

/* The tiled kernel's RoPE table (alrd_gpu_attn_rope_tiles): first the keys' in-tile rotations, 8 hd words
 * [n-tile nt][16-byte chunk c][lane][4]: word 4c + i of lane (g, t4)'s run of hd/8 = (cos q | sin q), q < hd/16,
 * the fp16 pair of offset j = 8 nt + g at channels 16(q/2) + 2 t4 + 8(q%2), +1; then one row a 16-token tile
 * (position 16 r): each lane t4's fp16 (cos, sin) pairs of its query channels (kk*16 + 2 t4 + 8 hh, +1),
 * kk < hd/32, [t4][hd/16 cos words][hd/16 sin words] */
__global__ void rope_tile_kernel(const float *cos_tab, const float *sin_tab, int max_ctx, int hd, int rows,
                                 uint32_t *out) {
    const int words = hd / 2, ks = hd / 16, rotw = rope_rot_words(hd);
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < rotw + rows * words; idx += gridDim.x * blockDim.x) {
        int c, p, sn;
        if (idx < rotw) { /* (nt, chunk, lane, i) */
            const int i = idx & 3, lane = (idx >> 2) & 31, ch = (idx >> 7) % (ks / 2), nt = (idx >> 7) / (ks / 2);
            const int w = 4 * ch + i, q = w % ks;
            sn = w >= ks, p = 8 * nt + (lane >> 2), c = (q >> 1) * 16 + 2 * (lane & 3) + 8 * (q & 1);
        } else {
            const int k = idx - rotw, r = k / words, w = k % words, t4 = w / (2 * ks), j = w % (2 * ks), q = j % ks;
            sn = j >= ks, p = 16 * r, c = (q >> 1) * 16 + 2 * t4 + 8 * (q & 1);
        }
        uint32_t v = 0u;
        if (p < max_ctx) {
            const float *t = (sn ? sin_tab : cos_tab) + (size_t)p * (hd / 2) + c;
            v = pack2(t[0], t[1]);
        }
        out[idx] = v;
    }
}

/* ---- host side ---- */

static int side_bits_ok(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8 || bits == 16; }

/* latent keys: the largest A_k of a head (hd x kr fp16) the block keeps in shared memory. Only per-head latents
 * (group_heads 1) take this kernel: with a block per KV head, a group of 3 decoded the whole group's latents in
 * each of its blocks and was slower than attn_latent_kernel at every depth and batch
 * (docs/results/latent-kivi-h100/oldnew-grouped-first-cut-table.txt) */
#define LAT_A_BYTES (64 * 1024)

extern "C" int alrd_gpu_attn_tiled(int hd, int n_heads, int n_kv, int kmode, int kb, int vb, int kivi, int G, int R,
                                   int kr, int vr, int group_heads, int *kfw, int *vfw) {
    *kfw = *vfw = 0;
    if ((hd != 64 && hd != 128) || n_kv <= 0 || n_heads % n_kv || n_heads / n_kv > 8) return 0;
    if (!side_bits_ok(kb) || !side_bits_ok(vb)) return 0;
    if (kmode == ALRD_GPU_K_FULL || kmode == ALRD_GPU_K_LATENT) {
        if (kb == 16 || !kivi || R <= 0 || R % KT || (G % 16 && G != 8) || G > R) return 0;
        if (kmode == ALRD_GPU_K_LATENT && (kr <= 0 || kr % 16 || 2 * hd * kr > LAT_A_BYTES || group_heads != 1))
            return 0;
    } else if (kmode == ALRD_GPU_K_ROPED) {
        if (kb != 16 || vb == 16) return 0; /* fp16 keys and values: the fp16 kernel */
    } else {
        return 0;
    }
    const int vw = vr > 0 ? vr : hd;
    if (vw > hd || vw % 8 || (vr > 0 && (group_heads <= 0 || n_kv % group_heads))) return 0;
    if (vb < 16 && (G <= 0 || G % 8)) return 0;
    /* latent keys: only where the tiled values fill their words (a lane's n-tiles' codes, whole 16-bit halves):
     * 2-bit value latents of width 32 would take twice their bytes (per-head SmolLM2 rank 0.5 ran 33% over the
     * KV budget's count and out of memory at --kv-budget 64GiB), so those stay on attn_latent_kernel's packed
     * layout */
    if (kmode == ALRD_GPU_K_LATENT && vb < 16 && vw / 8 * (vb == 3 ? 2 : vb) % 16) return 0;
    *kfw = kmode == ALRD_GPU_K_FULL ? hd : kmode == ALRD_GPU_K_LATENT ? kr : 0;
    *vfw = vb < 16 ? vw : 0;
    return 1;
}

static int make_kplan(const alrd_gpu_attn_layer *L, kplan *p) {
    const alrd_gpu_side *k = &L->ks, *v = &L->vs;
    const int hd = L->hd, kb = k->bits, vb = v->bits;
    memset(p, 0, sizeof *p);
    p->kfw = L->kmode == ALRD_GPU_K_LATENT ? L->kr : hd;
    p->vw = L->vr > 0 ? L->vr : hd;
    p->vstr = vrow_stride(p->vw);
    p->kstr = hd + 8;
    int words = 0;
    p->kc = 0;
    if (kb < 16) {
        const int G = k->G, ngt = G == 8 ? 2 : 1; /* key groups a 16-token tile spans */
        p->kmerge = k->R % ST == 0 && (G % ST == 0 || ST % G == 0);
        if (p->kmerge) /* a step's groups, contiguous: one for G >= ST, else ST / G of them */
            p->kslots = G >= ST ? 1 : ST / G, p->ksl_h = G >= ST ? 0 : KT / G, p->ksl_nt = G == 8;
        else /* each half's ngt groups */
            p->kslots = 2 * ngt, p->ksl_h = ngt, p->ksl_nt = ngt == 2;
        words += 2 * k->bw;
        p->ksz = words;
        words += p->kslots * p->kfw; /* scales then zeros, kslots * kfw/2 words each */
        p->rope = words;
        words += hd; /* two RoPE tile rows of hd/2 words */
    } else {
        words += ST / 2 * p->kstr;
    }
    words = (words + 3) & ~3;
    p->vc = words;
    if (vb < 16) {
        words += 2 * v->bw;
        const int nb = L->vr > 0 ? L->n_kv / L->group_heads : L->n_kv;
        for (int blk = 0; blk < nb; blk++) {
            const int ng = (blk * p->vw + p->vw - 1) / v->G - blk * p->vw / v->G + 1;
            if (ng > p->vng) p->vng = ng;
        }
        p->vsz = words;
        words += 32 * p->vng; /* [group][16 token pairs] half2 scales, then zeros */
    } else {
        words += ST / 2 * p->vstr;
    }
    p->stage = (words + 3) & ~3;
    const int nst = kivi_stages(hd, kb == 16 || vb == 16);
    p->wbytes = 4 * (size_t)p->stage * nst;
    const size_t merge = 4 * (size_t)KW * 16 * (2 + p->vw) + 4 * KW * 16; /* merge_warps' (max, sum), O and weights */
    if (kb < 16) p->wbytes += 4 * 8 * (size_t)hd; /* the keys' in-tile RoPE table after the stages */
    size_t top = KW * p->wbytes; /* latent keys: the head's A_k and bias after the rings (merge_warps syncs first) */
    p->abias = -1;
    if (L->kmode == ALRD_GPU_K_LATENT) {
        p->abuf = (int)top;
        top += 2 * (size_t)hd * L->kr;
        if (L->bk) p->abias = (int)top, top += 4 * (size_t)hd;
    }
    p->total = top > merge ? top : merge;
    p->bars = (int)((p->total + 15) & ~(size_t)15);
    p->abar = p->bars + 8 * KW * nst;
    p->total = p->abar + 8;
    p->kR = alrd_fdiv_make(kb < 16 ? k->R : 1);
    p->kG = alrd_fdiv_make(kb < 16 ? k->G : 1);
    p->vR = alrd_fdiv_make(vb < 16 && v->R > 0 ? v->R : 1);
    p->vG = alrd_fdiv_make(vb < 16 ? v->G : 1);
    /* values fold when their groups align with the n-tiles: full width, G a power of two dividing the head dim
     * (at least 8, and at most 8 groups: one mma's columns hold their zeros) or a multiple of it */
    const int G = v->G, nt = hd / 8;
    p->npg_log2 = -1;
    if (vb < 16 && p->vw == hd && G >= 8 && (hd % G == 0 || G % hd == 0)) {
        const int npg = G >= hd ? nt : G / 8;
        if (nt <= 8 * npg) p->npg_log2 = __builtin_ctz((unsigned)npg);
    }
    return 0;
}

static size_t kivi_smem(const alrd_gpu_attn_layer *L);

static int kivi_ok(const alrd_gpu_attn_layer *L) {
    int kfw, vfw;
    if (!alrd_gpu_attn_tiled(L->hd, L->n_heads, L->n_kv, L->kmode, L->ks.bits, L->vs.bits, L->ks.per_channel, L->ks.G,
                             L->ks.R, L->kr, L->vr, L->group_heads, &kfw, &vfw))
        return 0;
    const int lat = L->kmode == ALRD_GPU_K_LATENT;
    if (L->ks.fw != kfw || L->vs.fw != vfw || (vfw && L->vs.per_channel)) return 0; /* the sides are tiled for it */
    if (kfw && L->ks.lat != lat) return 0;
    if (lat && !L->kAf) return 0;
    if (kfw && !L->rope_tile) return 0;
    if (kfw && (L->ks.seq_words >= (1u << 31) || L->ks.seq_groups >= (1u << 31))) return 0;
    if (vfw && (L->vs.seq_words >= (1u << 31) || L->vs.seq_groups >= (1u << 31))) return 0;
    return kivi_smem(L) <= 227 * 1024; /* Hopper's per-block limit */
}

typedef void (*kivi_fn)(alrd_gpu_attn_layer, kplan, const uint16_t *, const int *, int, int, float *);

template <int HD, int KB, bool KL> static kivi_fn pick_vb(int vb) {
    switch (vb) {
    case 2: return attn_kivi_kernel<HD, KB, 2, KL>;
    case 3: return attn_kivi_kernel<HD, KB, 3, KL>;
    case 4: return attn_kivi_kernel<HD, KB, 4, KL>;
    case 8: return attn_kivi_kernel<HD, KB, 8, KL>;
    case 16:
        if constexpr (KB < 16) return attn_kivi_kernel<HD, KB, 16, KL>; /* fp16 keys and values: the fp16 kernel */
    }
    return nullptr;
}
template <int HD, bool KL> static kivi_fn pick_kb(int kb, int vb) {
    switch (kb) {
    case 2: return pick_vb<HD, 2, KL>(vb);
    case 3: return pick_vb<HD, 3, KL>(vb);
    case 4: return pick_vb<HD, 4, KL>(vb);
    case 8: return pick_vb<HD, 8, KL>(vb);
    case 16:
        if constexpr (!KL) return pick_vb<HD, 16, KL>(vb); /* latent keys are quantised here */
    }
    return nullptr;
}
/* the instance for head dim hd, key and value bits kb, vb; latent keys (lat) or full-width ones */
static kivi_fn pick_kivi(int hd, int kb, int vb, int lat) {
    if (lat) return hd == 64 ? pick_kb<64, true>(kb, vb) : pick_kb<128, true>(kb, vb);
    return hd == 64 ? pick_kb<64, false>(kb, vb) : pick_kb<128, false>(kb, vb);
}
static kivi_fn pick_layer(const alrd_gpu_attn_layer *L) {
    return pick_kivi(L->hd, L->ks.bits, L->vs.bits, L->kmode == ALRD_GPU_K_LATENT);
}

static size_t kivi_smem(const alrd_gpu_attn_layer *L) {
    kplan p;
    make_kplan(L, &p);
    return p.total;
}

static const void *kivi_fn_of(const alrd_gpu_attn_layer *L) {
    return (const void *)pick_layer(L);
}

static int kivi_prepare(size_t bytes) {
    static const int bits[] = {2, 3, 4, 8, 16};
    for (int hd = 64; hd <= 128; hd *= 2)
        for (int kb : bits)
            for (int vb : bits)
                for (int lat = 0; lat < 2; lat++) {
                    kivi_fn f = pick_kivi(hd, kb, vb, lat);
                    if (!f) continue;
                    cudaError_t e = cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
                    if (e != cudaSuccess) return (int)e;
                }
    return 0;
}

static int kivi_launch(const alrd_gpu_attn_layer *L, const uint16_t *q16, const int *pos, int B, int nsplit, int vw_max,
                       float *work, cudaStream_t st) {
    kplan p;
    make_kplan(L, &p);
    return launch_pdl(pick_layer(L), dim3(nsplit, L->n_kv, B), KW * 32, p.total, st, *L, p,
                      q16, pos, nsplit, vw_max, work);
}

static int kivi_blocks(const alrd_gpu_attn_layer *L) { return L->n_kv; }

const attn_family attn_kivi_family = {"kivi",      kivi_ok, kivi_smem,    kivi_fn_of,
                                      kivi_blocks, KW * 32, kivi_prepare, kivi_launch};

extern "C" size_t alrd_gpu_attn_rope_tile_words(int max_ctx, int hd) {
    if (hd != 64 && hd != 128) return 0; /* no tiled kernel at this head dim (alrd_gpu_attn_tiled) */
    return (size_t)rope_rot_words(hd) + ((size_t)(max_ctx + 15) / 16 + 1) * (size_t)(hd / 2);
}

extern "C" int alrd_gpu_attn_rope_tiles(const float *cos_tab, const float *sin_tab, int max_ctx, int hd, uint32_t *out,
                                        void *stream) {
    const size_t words = alrd_gpu_attn_rope_tile_words(max_ctx, hd);
    if (!words) return 0;
    const int rows = (int)((words - rope_rot_words(hd)) / (hd / 2));
    const int blocks = (int)((words + 255) / 256 < 1024 ? (words + 255) / 256 : 1024);
    rope_tile_kernel<<<blocks, 256, 0, (cudaStream_t)stream>>>(cos_tab, sin_tab, max_ctx, hd, rows, out);
    return (int)cudaGetLastError();
}
