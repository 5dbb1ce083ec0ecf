/* gpu_attn_kivi: decode attention over caches of full-width keys (no key
 * decomposition): KIVI-quantised pre-RoPE keys at 2, 3, 4 or 8 bits per
 * channel, or fp16 RoPE'd keys, with values at 2, 3, 4, 8 bits per token or
 * fp16, full width or a latent group's (vr <= head dim).
 *
 * Structure (the fp16 kernel's, on packed bytes): a block per (split, KV
 * head, sequence) of ATTN_KIVI_WARPS warps that never wait for each other.
 * Warp w takes every W-th piece of the split: a key chunk (R tokens, the
 * unit of KIVI's per-channel quantisation) or, for fp16 keys, a 16-token
 * tile. A piece's packed bytes stream into the warp's cp.async ring (two
 * chunks, or four tiles) while it computes the one before: the chunk's key
 * codes whole (channel-major rows of R codes: a 16-token slice of them
 * would touch one 32-byte sector per channel for 4 useful bytes), its
 * scales and zeros, the RoPE row of the piece's first position, and each
 * token's value codes with theirs. Per 16-token tile the warp dequantises
 * keys into K^T [channel][token] and values into V [token][channel] (fp16,
 * shared memory), then S = Q K^T and O += P V on the tensor cores
 * (mma.sync m16n8k16) with an online softmax; the warps merge at the end.
 *
 * RoPE without a table row per token: the score of token ts + j is
 *     q . R(ts + j) k = (R(ts)^T q) . (R(j) k),
 * so the query is rotated back by the piece's first position (one table
 * row, carried with the piece) and on by 16 positions per tile, and each
 * key by its offset j < 16 in the tile (rows 0..16 of the tables, in shared
 * memory for the launch). The angle of token ts + j is then ts*theta +
 * j*theta in fp32 where the CPU takes fp32(ts + j)*theta: they differ by
 * the rounding of the angle (2e-3 rad at position 32768 for theta = 1, the
 * error the fp32 angle itself carries against exact arithmetic). */
#include "gpu_attn_common.cuh"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdio.h>

#define KW ATTN_KIVI_WARPS
#define KT 16   /* tokens per tile */
#define ZSTR 24 /* K^T rows (halves): 16 tokens + 8, conflict-free ldmatrix */

__host__ __device__ constexpr int codes_per_word(int bits) { return bits == 3 ? 10 : 32 / bits; }
/* V rows (halves): an odd number of 16-byte units, conflict-free ldmatrix */
static int vrow_stride(int vw) { return (vw / 8) % 2 ? vw + 16 : vw + 8; }

typedef struct {
    int vw, vstr;              /* value width (hd or vr), V row stride in halves */
    int nvw, nvp, vi;          /* per quantised value token in a stage: code words, scale (zero) pair words, all */
    int kstr, kgch;            /* a key channel's codes in a stage (words, odd); 16-byte chunks of a chunk's scales */
    int stage;                 /* words of one ring stage */
    int ksc, kze, rope, vst;   /* word offsets in a stage: key scales, zeros, the RoPE row (cos | sin), the values */
    size_t delta, ring, warps, wbytes, total; /* bytes: RoPE tables, the block's ring, the warps' K^T / V buffers,
                                                 one warp's buffer */
    alrd_fdiv pl, wpr, kR, kG, vR, vG, vch, vi_div; /* divisors: piece length (R or 16), key words per channel, chunk
                                                       and group sizes, value chunks per row, vi */
} kplan;

/* 4 bytes global -> shared; src_bytes 0 writes zeros */
__device__ __forceinline__ void cp_async4(void *dst, const void *src, int src_bytes) {
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(src_bytes));
}

/* Codes first .. first + 7 of a packed run starting at w[0] (codes_per_word(B) a
 * word, code i at bits B*(i % cpw) of word i / cpw) as fp16 code * s + z, in
 * pairs (code 2i, 2i + 1). The codes become fp16 by OR-ing in the exponent of
 * 1024 (exact), 1024 is subtracted (exact), then one fused multiply-add, as
 * kivi's (q * s + z) rounded once. first % 8 == 0 for 2, 4 and 8 bits. */
template <int B>
__device__ __forceinline__ uint4 decode8(const uint32_t *w, int first, __half2 s, __half2 z) {
    uint32_t h[4];
    if constexpr (B == 2) {
        const uint32_t v = w[first >> 4] >> ((first & 15) * 2);
        const uint32_t T = (v & 0x3333u) | ((v >> 2) & 0x3333u) << 16; /* nibble i: code 2i | code 2i+1 */
#pragma unroll
        for (int i = 0; i < 4; i++) h[i] = ((T >> (4 * i)) & 0x00030003u) | 0x64006400u;
    } else if constexpr (B == 4) {
        const uint32_t v = w[first >> 3], E = v & 0x0F0F0F0Fu, O = (v >> 4) & 0x0F0F0F0Fu;
#pragma unroll
        for (int i = 0; i < 4; i++)
            h[i] = (__byte_perm(E, O, (uint32_t)i * 0x0011u + (uint32_t)(4 + i) * 0x1100u) & 0x000F000Fu) | 0x64006400u;
    } else if constexpr (B == 8) {
        const uint32_t v0 = w[first >> 2], v1 = w[(first >> 2) + 1];
        h[0] = __byte_perm(v0, 0, 0x4140) | 0x64006400u, h[1] = __byte_perm(v0, 0, 0x4342) | 0x64006400u;
        h[2] = __byte_perm(v1, 0, 0x4140) | 0x64006400u, h[3] = __byte_perm(v1, 0, 0x4342) | 0x64006400u;
    } else { /* 3 bits, 10 a word: the 8 codes span at most two words */
        const int q0 = first / 10, r0 = first - q0 * 10;
        const uint32_t wa = w[q0], wb = w[q0 + 1];
        uint32_t c[8];
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const int r = r0 + e;
            c[e] = ((r >= 10 ? wb : wa) >> (3 * (r >= 10 ? r - 10 : r))) & 7u;
        }
#pragma unroll
        for (int i = 0; i < 4; i++) h[i] = c[2 * i] | c[2 * i + 1] << 16 | 0x64006400u;
    }
    const __half2 k1024 = __float2half2_rn(1024.0f);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        __half2 x = __hfma2(__hsub2(*reinterpret_cast<__half2 *>(&h[i]), k1024), s, z);
        h[i] = *reinterpret_cast<uint32_t *>(&x);
    }
    return make_uint4(h[0], h[1], h[2], h[3]);
}

/* (y1, y2) = R(angle) (x1, x2) for two tokens in fp16 pairs, cs = (cos, cos) and (sin, sin) of their angles */
__device__ __forceinline__ void rot2(uint32_t x1h, uint32_t x2h, uint2 cs, uint32_t &y1, uint32_t &y2) {
    const __half2 a = *reinterpret_cast<__half2 *>(&x1h), c = *reinterpret_cast<__half2 *>(&x2h);
    const __half2 co = *reinterpret_cast<__half2 *>(&cs.x), si = *reinterpret_cast<__half2 *>(&cs.y);
    const __half2 u = __hfma2(__hneg2(c), si, __hmul2(a, co)), v = __hfma2(a, si, __hmul2(c, co));
    y1 = *reinterpret_cast<const uint32_t *>(&u);
    y2 = *reinterpret_cast<const uint32_t *>(&v);
}

/* A K^T row: 16 tokens' fp16 values (8 pairs) as two 16-byte stores */
__device__ __forceinline__ void store_kt_row(uint16_t *row, const uint32_t (&y)[8]) {
    uint4 *d = reinterpret_cast<uint4 *>(row);
    d[0] = make_uint4(y[0], y[1], y[2], y[3]), d[1] = make_uint4(y[4], y[5], y[6], y[7]);
}

template <int HD, int KB, int VB>
__global__ void __launch_bounds__(KW * 32, HD == 64 ? 4 : 1) attn_kivi_kernel(alrd_gpu_attn_layer L, kplan P, const uint16_t *q16,
                                                            const int *pos, int nsplit, int vw_max, float *work) {
    constexpr int KS = HD / 16, NT = HD / 8, NP = HD / 64; /* k-steps, value n-tiles at most, RoPE pairs a lane */
    constexpr bool KQ = KB < 16, VQ = VB < 16;
    constexpr int NST = KQ ? 2 : 3; /* ring stages: pieces are key chunks (R tokens) or 64-token runs */
    constexpr int NTH = KW * 32;
    constexpr int VCPW = codes_per_word(VB < 16 ? VB : 2), KRS = HD + 8;
    extern __shared__ __align__(16) unsigned char smem[];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, t4 = lane & 3;
    const int sp = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
    const int per_kv = L.n_heads / L.n_kv, h0 = kvh * per_kv;
    const int vw = P.vw, VSTR = P.vstr, vc0 = L.vr > 0 ? kvh / L.group_heads * L.vr : kvh * HD;
    const alrd_gpu_side &ks = L.ks, &vs = L.vs;
    pdl_trigger();
    pdl_wait();
    const int n = pos[b] + 1;
    int t0, t1;
    float *wml, *wacc;
    if (!split_begin(n, nsplit, sp, L.n_heads, b, h0, vw_max, work, t0, t1, wml, wacc)) return;
    const int kq = KQ ? n - fdiv_r(n, P.kR) : 0; /* keys: whole chunks of R quantised */
    const int vq = VQ ? max(0, n - vs.R) : 0;    /* values: all but the last R */
    const int PL = (int)P.pl.d, pc0 = fdiv_q(t0, P.pl), npieces = fdiv_q(t1 - 1, P.pl) - pc0 + 1;
    unsigned char *wb = smem + P.warps + warp * P.wbytes;
    uint32_t *ring = reinterpret_cast<uint32_t *>(smem + P.ring); /* the block's NST stages */
    /* one buffer a warp: K^T [HD][ZSTR] (quantised keys), then V [16][VSTR] (quantised values) -- a tile's keys
     * are read before its values are written */
    uint16_t *Kt = reinterpret_cast<uint16_t *>(wb), *Vt = Kt;
    /* RoPE by a key's offset j in its tile: [8][HD/2] fp16 pairs (cos, cos | sin, sin) of tokens 2t, 2t + 1;
     * then [HD/2] (cos, sin) of 16 theta in fp32, for the query's step from tile to tile */
    const uint2 *rot = reinterpret_cast<const uint2 *>(smem + P.delta);
    const float2 *step16 = reinterpret_cast<const float2 *>(smem + P.delta + 8 * (KT / 2) * (HD / 2));
    const float2 *step64 = step16 + HD / 2; /* and of 64 theta: from a warp's tile to its next (KW = 4) */

    /* the sequence's packed sides (32-bit offsets within them: attn_kivi_ok) */
    const uint32_t *kcw = KQ ? ks.codes + (size_t)b * ks.seq_words : nullptr;
    const uint16_t *ksc = KQ ? ks.scales + (size_t)b * ks.seq_groups : nullptr;
    const uint16_t *kze = KQ ? ks.zeros + (size_t)b * ks.seq_groups : nullptr;
    const uint32_t *vcw = VQ ? vs.codes + (size_t)b * vs.seq_words : nullptr;
    const uint16_t *vsc = VQ ? vs.scales + (size_t)b * vs.seq_groups : nullptr;
    const uint16_t *vze = VQ ? vs.zeros + (size_t)b * vs.seq_groups : nullptr;
    /* the block's value columns vc0 .. vc0 + vw - 1: their first / last code word and group in a token */
    const int wlo = vc0 / VCPW, whi = (vc0 + vw - 1) / VCPW;
    const int glo = VQ ? fdiv_q(vc0, P.vG) : 0, ghi = VQ ? fdiv_q(vc0 + vw - 1, P.vG) : 0;

    /* piece i of the split (its tokens [ps, pe)) into ring stage i % NST by all of the block's threads, as one
     * cp.async group. A quantised key chunk comes whole (its codes, channel-major, rows padded to an odd
     * number of words; its scales and zeros), so every byte of a sector it touches is used. */
    auto issue = [&](int i) {
        const int k = i;
        if (k < npieces) {
            const int cs = (pc0 + k) * PL, ps = max(t0, cs), pe = min(t1, cs + PL);
            uint32_t *st = ring + (i % NST) * P.stage;
            if constexpr (KQ) {
                if (cs < kq) {
                    const uint32_t *src = kcw + (pc0 + k) * (int)ks.unit_words + kvh * HD * ks.wpr;
                    for_each_chunk(tid, NTH, P.wpr, HD, [&](int c, int w) {
                        cp_async4(st + c * P.kstr + w, src + c * ks.wpr + w, 4);
                    });
                    const int g0 = (pc0 + k) * (int)ks.unit_groups + kvh * HD * ks.ng; /* HD*ng halves each */
                    for (int c = tid; c < P.kgch; c += NTH) {
                        cp_async16(st + P.ksc + c * 4, ksc + g0 + c * 8, 16);
                        cp_async16(st + P.kze + c * 4, kze + g0 + c * 8, 16);
                    }
                }
                if (tid < HD / 4) { /* the RoPE row of ps: cos then sin, HD/2 floats each */
                    const int half = tid / (HD / 8), ch = tid % (HD / 8);
                    cp_async16(st + P.rope + tid * 4, (half ? L.sin_tab : L.cos_tab) + (size_t)ps * (HD / 2) + ch * 4, 16);
                }
            } else { /* fp16 RoPE'd key rows [PL][KRS], zero past pe to the tile's end */
                const uint16_t *kr = ks.rows + (size_t)b * ks.seq_rows + (size_t)kvh * HD;
                uint16_t *d = reinterpret_cast<uint16_t *>(st);
                const int nv = pe - ps;
                const int rows = (nv + KT - 1) / KT * KT;
                for (int c = tid; c < rows * (HD / 8); c += NTH) {
                    const int r = c / (HD / 8), ch = c % (HD / 8);
                    const bool ok = r < nv;
                    cp_async16(d + r * KRS + ch * 8, kr + (size_t)(ps + (ok ? r : 0)) * ks.d + ch * 8, ok ? 16 : 0);
                }
            }
            if constexpr (VQ) { /* per token: its code words, scale pairs, zero pairs (stage rows 0..) */
                const int nq = min(pe, vq) - ps;
                for (int r = tid; r < nq; r += NTH) {
                    const int s = ps + r, p0 = (s * (int)vs.unit_groups + glo) >> 1;
                    const int np = ((s * (int)vs.unit_groups + ghi) >> 1) - p0;
                    uint32_t *d = st + P.vst + r * P.vi;
                    const uint32_t *src = vcw + s * (int)vs.unit_words + wlo;
                    for (int k2 = 0; k2 < P.nvw; k2++) {
                        const bool ok = wlo + k2 <= whi;
                        cp_async4(d + k2, src + (ok ? k2 : 0), ok ? 4 : 0);
                    }
                    for (int e = 0; e < P.nvp; e++) {
                        const bool ok = e <= np;
                        cp_async4(d + P.nvw + e, vsc + 2 * (p0 + (ok ? e : 0)), ok ? 4 : 0);
                        cp_async4(d + P.nvw + P.nvp + e, vze + 2 * (p0 + (ok ? e : 0)), ok ? 4 : 0);
                    }
                }
            } else { /* fp16 value rows [PL][VSTR] */
                const uint16_t *vr = vs.rows + (size_t)b * vs.seq_rows + vc0;
                uint16_t *d = reinterpret_cast<uint16_t *>(st + P.vst);
                const int nv = pe - ps; /* rows to the tile's end, zero past pe (p = 0 there, and 0 * NaN is NaN) */
                for_each_chunk(tid, NTH, P.vch, (nv + KT - 1) / KT * KT, [&](int r, int ch) {
                    const bool ok = r < nv;
                    cp_async16(d + r * VSTR + ch * 8, vr + (size_t)(ps + (ok ? r : 0)) * vs.d + ch * 8, ok ? 16 : 0);
                });
            }
        }
        cp_async_commit(); /* an empty group keeps the wait count uniform */
    };

    if constexpr (KQ) { /* rows j <= 16 of the tables (clamped to the n rows that exist) */
        uint2 *rt = reinterpret_cast<uint2 *>(smem + P.delta);
        for (int i = tid; i < (KT / 2) * HD / 2; i += KW * 32) {
            const int t = i / (HD / 2), p = i % (HD / 2), j0 = min(2 * t, n - 1), j1 = min(2 * t + 1, n - 1);
            rt[i] = make_uint2(pack2(L.cos_tab[(size_t)j0 * (HD / 2) + p], L.cos_tab[(size_t)j1 * (HD / 2) + p]),
                               pack2(L.sin_tab[(size_t)j0 * (HD / 2) + p], L.sin_tab[(size_t)j1 * (HD / 2) + p]));
        }
        float2 *s16 = reinterpret_cast<float2 *>(smem + P.delta + 8 * (KT / 2) * (HD / 2));
        for (int i = tid; i < HD; i += KW * 32) { /* rows 16 and 64 (used only when n exceeds them) */
            const int j = min(i < HD / 2 ? KT : KT * KW, n - 1), p = i % (HD / 2);
            s16[i] = make_float2(L.cos_tab[(size_t)j * (HD / 2) + p], L.sin_tab[(size_t)j * (HD / 2) + p]);
        }
    }
#pragma unroll
    for (int i = 0; i < NST - 1; i++) issue(i);

    /* Q: row gid = query head h0 + gid (rows >= per_kv and gid + 8 zero: per_kv <= 8); fp16 keys take qa as
     * it is, quantised keys rotate qf per tile */
    float qf[KS][4]; /* channels kk*16 + 2*t4 + {0, 1, 8, 9} */
    uint32_t qa[KS][4];
    {
        const uint16_t *qb = q16 + (size_t)b * L.n_heads * HD + (size_t)(h0 + gid) * HD;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            const int c = kk * 16 + 2 * t4;
            const uint32_t lo = gid < per_kv ? ld32(qb + c) : 0u, hi = gid < per_kv ? ld32(qb + c + 8) : 0u;
            const float2 a = __half22float2(*reinterpret_cast<const __half2 *>(&lo));
            const float2 bb = __half22float2(*reinterpret_cast<const __half2 *>(&hi));
            qf[kk][0] = a.x, qf[kk][1] = a.y, qf[kk][2] = bb.x, qf[kk][3] = bb.y;
            qa[kk][0] = lo, qa[kk][2] = hi, qa[kk][1] = qa[kk][3] = 0u;
        }
    }
    if constexpr (KQ) __syncthreads(); /* the offsets table */

    float o[NT][4];
#pragma unroll
    for (int i = 0; i < NT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f; /* rows gid, gid + 8; l partial over this lane */
    const int nvt = vw / 8;
    /* this lane's value tasks (token r, 8 columns h) = lane + 32 k: the first code of the columns in a token's
     * stage words, and their group's half in its scale words (less the token's own parity) */
    constexpr int VTASK = KT * NT / 32;
    int vfirst[VTASK], vg[VTASK];
#pragma unroll
    for (int k = 0; k < VTASK; k++) {
        const int c = vc0 + ((lane + 32 * k) % NT) * 8;
        vfirst[k] = c - wlo * VCPW;
        vg[k] = VQ ? fdiv_q(c, P.vG) - glo : 0;
    }

    /* the query's step from tile to tile: R(d)^T applied to the rotated query */
    auto qstep = [&](float (&qr)[KS][4], const float2 *stp) {
#pragma unroll
        for (int kk = 0; kk < KS / 2; kk++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float2 d = stp[kk * 16 + 2 * t4 + (e & 1) + (e >> 1) * 8];
                const float x1 = qr[kk][e], x2 = qr[kk + KS / 2][e];
                qr[kk][e] = x1 * d.x + x2 * d.y;
                qr[kk + KS / 2][e] = x2 * d.x - x1 * d.y;
            }
    };
    for (int i = 0; i < npieces; i++) {
        issue(i + NST - 1); /* into the stage every warp finished with in the last piece */
        asm volatile("cp.async.wait_group %0;\n" ::"n"(NST - 1) : "memory");
        __syncthreads(); /* piece i is in its stage, for every warp */
        const uint32_t *st = ring + (i % NST) * P.stage;
        const int cs = (pc0 + i) * PL, ps = max(t0, cs), pe = min(t1, cs + PL);
        float qr[KS][4]; /* KQ: the query rotated back by this warp's current tile's first position, R(ts)^T q */
        if constexpr (KQ) {
            const float *cr = reinterpret_cast<const float *>(st + P.rope), *sr = cr + HD / 2;
#pragma unroll
            for (int kk = 0; kk < KS / 2; kk++)
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    const int c = kk * 16 + 2 * t4 + 8 * hh;
                    const float2 cs2 = *reinterpret_cast<const float2 *>(cr + c), sn = *reinterpret_cast<const float2 *>(sr + c);
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const float x1 = qf[kk][2 * hh + e], x2 = qf[kk + KS / 2][2 * hh + e];
                        const float co = e ? cs2.y : cs2.x, si = e ? sn.y : sn.x;
                        qr[kk][2 * hh + e] = x1 * co + x2 * si;
                        qr[kk + KS / 2][2 * hh + e] = x2 * co - x1 * si;
                    }
                }
        }
        if constexpr (KQ)
            for (int w = 0; w < warp; w++) qstep(qr, step16); /* the warp's first tile: ps + 16 warp */
        for (int ts = ps + KT * warp; ts < pe; ts += KT * KW) {
            const int nv = min(KT, pe - ts);
            float s[2][4];
#pragma unroll
            for (int e = 0; e < 2; e++) s[e][0] = s[e][1] = s[e][2] = s[e][3] = 0.0f;

            if constexpr (KQ) {
                uint32_t qa[KS][2]; /* this tile's query fragments (rows gid + 8 zero) */
#pragma unroll
                for (int kk = 0; kk < KS; kk++)
                    qa[kk][0] = pack2(qr[kk][0], qr[kk][1]), qa[kk][1] = pack2(qr[kk][2], qr[kk][3]);
                /* keys: K^T rows c and c + HD/2 of this lane's RoPE pairs, each key rotated by its offset j */
                if (cs < kq) {
                    const int i0 = ts - cs;
                    const uint16_t *gsc = reinterpret_cast<const uint16_t *>(st + P.ksc);
                    const uint16_t *gze = reinterpret_cast<const uint16_t *>(st + P.kze);
                    const int ga = fdiv_q(i0, P.kG), gb = fdiv_q(i0 + 8, P.kG);
#pragma unroll
                    for (int m = 0; m < NP; m++) {
                        const int c1 = lane + 32 * m, c2 = c1 + HD / 2;
                        const uint32_t *w1 = st + c1 * P.kstr, *w2 = st + c2 * P.kstr;
                        uint4 x1[2], x2[2];
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            const int g = h ? gb : ga;
                            x1[h] = decode8<KB>(w1, i0 + 8 * h, __half2half2(__ushort_as_half(gsc[c1 * ks.ng + g])),
                                                __half2half2(__ushort_as_half(gze[c1 * ks.ng + g])));
                            x2[h] = decode8<KB>(w2, i0 + 8 * h, __half2half2(__ushort_as_half(gsc[c2 * ks.ng + g])),
                                                __half2half2(__ushort_as_half(gze[c2 * ks.ng + g])));
                        }
                        uint32_t y1[8], y2[8];
                        const uint32_t *a1 = reinterpret_cast<const uint32_t *>(x1), *a2 = reinterpret_cast<const uint32_t *>(x2);
#pragma unroll
                        for (int t = 0; t < 8; t++)
                            rot2(a1[t], a2[t], rot[t * (HD / 2) + c1], y1[t], y2[t]);
                        store_kt_row(Kt + c1 * ZSTR, y1), store_kt_row(Kt + c2 * ZSTR, y2);
                    }
                } else { /* the residual: pre-RoPE fp16 rows of the ring (fewer than R tokens of a sequence) */
                    const uint16_t *rg = ks.ring + (size_t)b * ks.seq_ring + (size_t)kvh * HD;
                    const int r0 = ts - cs; /* ring row of ts: tokens from kq (a multiple of R) on */
#pragma unroll
                    for (int m = 0; m < NP; m++) {
                        const int c1 = lane + 32 * m, c2 = c1 + HD / 2;
                        uint32_t y1[8], y2[8];
#pragma unroll
                        for (int t = 0; t < 8; t++) {
                            uint32_t a1 = 0, a2 = 0;
#pragma unroll
                            for (int e = 0; e < 2; e++) {
                                const int j = 2 * t + e, row = r0 + j;
                                if (j < nv) {
                                    a1 |= (uint32_t)rg[(size_t)row * ks.d + c1] << (16 * e);
                                    a2 |= (uint32_t)rg[(size_t)row * ks.d + c2] << (16 * e);
                                }
                            }
                            rot2(a1, a2, rot[t * (HD / 2) + c1], y1[t], y2[t]);
                        }
                        store_kt_row(Kt + c1 * ZSTR, y1), store_kt_row(Kt + c2 * ZSTR, y2);
                    }
                }
                qstep(qr, step64); /* the warp's next tile: R(ts + 64)^T q = R(64)^T R(ts)^T q */
                __syncwarp();
                /* S^T rows = query heads, columns = tokens: B fragments of K^T by transposed ldmatrix (matrices:
                 * channels lo / hi x tokens 0-7 / 8-15) */
                const unsigned kl =
                    (unsigned)__cvta_generic_to_shared(Kt + (((lane >> 3) & 1) * 8 + (lane & 7)) * ZSTR + (lane >> 4) * 8);
#pragma unroll
                for (int kk = 0; kk < KS; kk++) {
                    uint32_t b0, b1, b2, b3;
                    ldsm_x4_trans(b0, b1, b2, b3, kl + kk * 16 * ZSTR * 2);
                    mma16816(s[0], qa[kk][0], 0u, qa[kk][1], 0u, b0, b1);
                    mma16816(s[1], qa[kk][0], 0u, qa[kk][1], 0u, b2, b3);
                }
            } else {
                const uint16_t *Kr = reinterpret_cast<const uint16_t *>(st) + (ts - ps) * KRS;
#pragma unroll
                for (int nt = 0; nt < 2; nt++) {
                    const uint16_t *kr = Kr + (nt * 8 + gid) * KRS + 2 * t4;
#pragma unroll
                    for (int kk = 0; kk < KS; kk++)
                        mma16816(s[nt], qa[kk][0], 0u, qa[kk][2], 0u, ld32(kr + kk * 16), ld32(kr + kk * 16 + 8));
                }
            }

            if constexpr (KQ && VQ) __syncwarp(); /* K^T is read: V takes its buffer */
            /* values: V [16][VSTR] fp16, 8 columns a task; rows past the split zero */
            const uint16_t *V;
            const int r0 = ts - ps; /* stage row of ts */
            if constexpr (VQ) {
                const uint32_t *vst = st + P.vst;
#pragma unroll
                for (int k = 0; k < VTASK; k++) {
                    const int r = (lane + 32 * k) / NT, h = (lane + 32 * k) % NT;
                    if (h >= nvt) continue;
                    uint4 *d = reinterpret_cast<uint4 *>(Vt + r * VSTR + h * 8);
                    const int s_ = ts + r;
                    if (r >= nv) {
                        *d = make_uint4(0, 0, 0, 0);
                    } else if (s_ < vq) {
                        const uint32_t *w = vst + (r0 + r) * P.vi;
                        const uint16_t *sc = reinterpret_cast<const uint16_t *>(w + P.nvw), *ze = sc + 2 * P.nvp;
                        const int g = vg[k] + ((s_ * (int)vs.unit_groups + glo) & 1);
                        *d = decode8<VB>(w, vfirst[k], __half2half2(__ushort_as_half(sc[g])),
                                         __half2half2(__ushort_as_half(ze[g])));
                    } else {
                        *d = *reinterpret_cast<const uint4 *>(vs.ring + (size_t)b * vs.seq_ring +
                                                             (size_t)fdiv_r(s_, P.vR) * vs.d + vc0 + h * 8);
                    }
                }
                V = Vt;
            } else {
                V = reinterpret_cast<const uint16_t *>(st + P.vst) + r0 * VSTR;
            }

            float c0, c1;
            uint32_t pa[4];
            mma_tile_softmax(s, nv, L.scale, m0, m1, l0, l1, c0, c1, pa);
            rescale_rows(o, c0, c1);
            __syncwarp(); /* V is written */
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                if (nt >= nvt) break;
                uint32_t b0, b1;
                ldsm_x2_trans(b0, b1, V + (lane & 15) * VSTR + nt * 8);
                mma16816(o[nt], pa[0], pa[1], pa[2], pa[3], b0, b1);
            }
            __syncwarp(); /* K^T and V are refilled by the next tile */
        }
        __syncthreads(); /* every warp is done with the stage: the next piece's issue refills it */
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory"); /* the rings are drained: shared memory is free */
    merge_warps<KW, NT>(o, nvt, m0, m1, l0, l1, smem, vw, per_kv, vw, wml, wacc, nsplit, sp, vw_max);
}

/* ---- host side ---- */

static int side_bits_ok(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8 || bits == 16; }

int attn_kivi_ok(const alrd_gpu_attn_layer *L) {
    if (L->hd != 64 && L->hd != 128) return 0;
    if (L->n_kv <= 0 || L->n_heads % L->n_kv || L->n_heads / L->n_kv > 8) return 0;
    const alrd_gpu_side *k = &L->ks, *v = &L->vs;
    if (L->kmode == ALRD_GPU_K_FULL) {
        if (!side_bits_ok(k->bits) || k->bits == 16 || !k->per_channel || k->R % KT || (k->G % 16 && k->G != 8))
            return 0;
        if (k->d != L->n_kv * L->hd || k->seq_words >= (1u << 31) || k->seq_groups >= (1u << 31)) return 0;
    } else if (L->kmode == ALRD_GPU_K_ROPED) {
        if (k->bits != 16 || v->bits == 16) return 0; /* fp16 keys and values: the fp16 kernel */
    } else {
        return 0;
    }
    const int vw = L->vr > 0 ? L->vr : L->hd;
    if (vw > L->hd || vw % 8 || v->d % 8 || !side_bits_ok(v->bits)) return 0;
    if (L->vr > 0 && (L->group_heads <= 0 || L->n_kv % L->group_heads)) return 0;
    if (v->bits < 16 && (v->per_channel || v->G % 8 || v->seq_words >= (1u << 31) || v->seq_groups >= (1u << 31)))
        return 0;
    return attn_kivi_smem(L) <= 227 * 1024; /* Hopper's per-block limit (fp16 values in 256-token chunks exceed it) */
}

static void make_kplan(const alrd_gpu_attn_layer *L, kplan *p) {
    const alrd_gpu_side *k = &L->ks, *v = &L->vs;
    const int hd = L->hd, kb = k->bits, vb = v->bits;
    p->vw = L->vr > 0 ? L->vr : hd;
    p->vstr = vrow_stride(p->vw);
    p->nvw = p->nvp = p->vi = 0;
    if (vb < 16) { /* the most words and scale pairs any block's columns span in a token */
        const int cpw = codes_per_word(vb), nb = L->vr > 0 ? L->n_kv / L->group_heads : L->n_kv;
        for (int blk = 0; blk < nb; blk++) {
            const int c0 = blk * p->vw, c1 = c0 + p->vw - 1;
            const int nw = c1 / cpw - c0 / cpw + 1;
            if (nw > p->nvw) p->nvw = nw;
            for (int par = 0; par < 2; par++) { /* a token's first group at an even or odd half */
                const int base = par * (int)(v->unit_groups & 1);
                const int np = ((base + c1 / v->G) >> 1) - ((base + c0 / v->G) >> 1) + 1;
                if (np > p->nvp) p->nvp = np;
            }
        }
        p->vi = p->nvw + 2 * p->nvp;
    }
    const int pl = kb < 16 ? k->R : KT * KW; /* a piece: one key chunk, or 64 tokens of fp16 keys */
    size_t words = 0;
    p->kstr = p->kgch = p->ksc = p->kze = p->rope = 0;
    if (kb < 16) {
        p->kstr = k->wpr | 1;
        p->kgch = hd * k->ng / 8;
        words = ((size_t)hd * p->kstr + 3) & ~(size_t)3;
        p->ksc = (int)words;
        words += (size_t)hd * k->ng / 2;
        p->kze = (int)words;
        words += (size_t)hd * k->ng / 2;
        p->rope = (int)words;
        words += hd; /* cos | sin row, hd/2 floats each */
    } else {
        words = (size_t)pl * (hd + 8) / 2;
    }
    words = (words + 3) & ~(size_t)3; /* 16-byte aligned values */
    p->vst = (int)words;
    words += vb < 16 ? (size_t)pl * p->vi : (size_t)pl * p->vstr / 2;
    words = (words + 3) & ~(size_t)3;
    p->stage = (int)words;
    const int nst = kb < 16 ? 2 : 3; /* the kernel's NST */
    size_t o = 0;
    p->delta = o;
    if (kb < 16) o = al16(o + 8 * (size_t)(KT / 2 + 2) * (hd / 2));
    p->ring = o;
    o = al16(o + 4 * (size_t)nst * p->stage);
    p->warps = o;
    const size_t ktb = kb < 16 ? 2 * (size_t)hd * ZSTR : 0, vtb = vb < 16 ? 2 * (size_t)KT * p->vstr : 0;
    p->wbytes = al16(ktb > vtb ? ktb : vtb); /* K^T, then V, in one buffer */
    o += KW * p->wbytes;
    const size_t merge = 4 * (size_t)KW * 16 * (2 + p->vw) + 4 * KW * 16; /* merge_warps' (max, sum), O and weights */
    p->total = o > merge ? o : merge;
    p->pl = alrd_fdiv_make(pl);
    p->wpr = alrd_fdiv_make(kb < 16 ? k->wpr : 1);
    p->kR = alrd_fdiv_make(kb < 16 ? k->R : 1);
    p->kG = alrd_fdiv_make(kb < 16 ? k->G : 1);
    p->vR = alrd_fdiv_make(vb < 16 ? v->R : 1);
    p->vG = alrd_fdiv_make(vb < 16 ? v->G : 1);
    p->vch = alrd_fdiv_make(p->vw / 8);
    p->vi_div = alrd_fdiv_make(p->vi > 0 ? p->vi : 1);
}

typedef void (*kivi_fn)(alrd_gpu_attn_layer, kplan, const uint16_t *, const int *, int, int, float *);

template <int HD, int KB> static kivi_fn pick_vb(int vb) {
    switch (vb) {
    case 2: return attn_kivi_kernel<HD, KB, 2>;
    case 3: return attn_kivi_kernel<HD, KB, 3>;
    case 4: return attn_kivi_kernel<HD, KB, 4>;
    case 8: return attn_kivi_kernel<HD, KB, 8>;
    case 16:
        if constexpr (KB < 16) return attn_kivi_kernel<HD, KB, 16>; /* fp16 keys and values: the fp16 kernel */
    }
    return nullptr;
}
template <int HD> static kivi_fn pick_kb(int kb, int vb) {
    switch (kb) {
    case 2: return pick_vb<HD, 2>(vb);
    case 3: return pick_vb<HD, 3>(vb);
    case 4: return pick_vb<HD, 4>(vb);
    case 8: return pick_vb<HD, 8>(vb);
    case 16: return pick_vb<HD, 16>(vb);
    }
    return nullptr;
}
static kivi_fn pick_kivi(int hd, int kb, int vb) { return hd == 64 ? pick_kb<64>(kb, vb) : pick_kb<128>(kb, vb); }

size_t attn_kivi_smem(const alrd_gpu_attn_layer *L) {
    kplan p;
    make_kplan(L, &p);
    return p.total;
}

const void *attn_kivi_fn(const alrd_gpu_attn_layer *L) {
    return (const void *)pick_kivi(L->hd, L->ks.bits, L->vs.bits);
}

int attn_kivi_prepare(size_t bytes) {
    static const int bits[] = {2, 3, 4, 8, 16};
    for (int hd = 64; hd <= 128; hd *= 2)
        for (int kb : bits)
            for (int vb : bits) {
                kivi_fn f = pick_kivi(hd, kb, vb);
                if (!f) continue;
                cudaError_t e = cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
                if (e != cudaSuccess) return (int)e;
            }
    return 0;
}

int attn_kivi_launch(const alrd_gpu_attn_layer *L, const uint16_t *q16, const int *pos, int B, int nsplit, int vw_max,
                     float *work, cudaStream_t st) {
    kplan p;
    make_kplan(L, &p);
    return launch_pdl(pick_kivi(L->hd, L->ks.bits, L->vs.bits), dim3(nsplit, L->n_kv, B), KW * 32, p.total, st, *L, p,
                      q16, pos, nsplit, vw_max, work);
}
