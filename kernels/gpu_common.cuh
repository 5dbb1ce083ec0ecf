/* gpu_common: device helpers shared by the CUDA kernels (C++ only; each
 * .cu includes it, as device code is not linked across files). */
#ifndef ALRD_GPU_COMMON_CUH
#define ALRD_GPU_COMMON_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "gpu_ops.h"

__device__ __forceinline__ float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ uint16_t f2h(float f) { return __half_as_ushort(__float2half_rn(f)); }

__device__ __forceinline__ float dequant(uint32_t q, float s, float z) {
    return __fadd_rn(__fmul_rn((float)q, s), z);
}

__device__ __forceinline__ int side_quantized(const alrd_gpu_side &s, int n) {
    if (s.bits == 16) return 0;
    if (s.per_channel) return n - n % s.R;
    return n > s.R ? n - s.R : 0;
}

/* Tokens of a value unit of a tiled side: a decode step's (gpu_attn_kivi.cu), two 16-token mma sub-tiles */
#define TILED_VUNIT 32

/* A lane's words of codes in a tile of the latent order (low two bits for 3 bits: b2 = 2), of its plane of
 * third bits: fw / 16 k-steps of 4 slots each */
__host__ __device__ constexpr int lat_words(int fw, int b2) { return (fw / 16 * b2 + 3) / 4; }
__host__ __device__ constexpr int lat_plane_words(int fw) { return (fw / 16 + 3) / 4; }

/* Where code (token s, channel c) of a tiled side lives (gpu_ops.h), within
 * its sequence: the word and bit of its low bits (all of them below 3
 * bits), the word and bit of its third bit (3 bits), and the index of its
 * scale and zero. The attention kernel reads the same places fragment by
 * fragment, the writers in gpu_ops.cu fill them a lane's half-words at once. */
struct tile_loc {
    size_t w, w1, gi;
    int sh, sh1;
};
__host__ __device__ __forceinline__ tile_loc tile_where(const alrd_gpu_side &sd, long s, int c) {
    tile_loc L;
    const int fw = sd.fw, b2 = sd.bits == 3 ? 2 : sd.bits;
    if (sd.per_channel) { /* keys: lane t's channel pair i = 2k + h holds 16k + 2t + 8h (+1 in the high half) */
        const long u = s / sd.R;
        const int i = (int)(s % sd.R), jt = i & 15;
        const int hd = c / fw, cc = c % fw, r = cc & 15, t = (r & 7) >> 1, half = r & 1, pi = (cc >> 4) * 2 + (r >> 3);
        const int np = fw / 8, nw = np * b2 / 16;
        const size_t base = (size_t)u * sd.unit_words + (size_t)(hd * (sd.R / 16) + (i >> 4)) * sd.bw;
        if (sd.lat) { /* latent order: lane (jt % 8, t)'s slot 4k + 2(jt / 8) + h, words [word][32 lanes] */
            const int lane = (jt & 7) * 4 + t, slot = 4 * (pi >> 1) + 2 * (jt >> 3) + (pi & 1);
            L.w = base + (size_t)(slot * b2 / 16) * 32 + lane;
            L.sh = slot * b2 % 16 + 16 * half;
            L.w1 = base + (size_t)(lat_words(fw, b2) + slot / 16) * 32 + lane, L.sh1 = slot % 16 + 16 * half;
        } else {
            L.w = base + (size_t)(jt * 4 + t) * nw + pi * b2 / 16;
            L.sh = pi * b2 % 16 + 16 * half;
            if (np <= 8) L.w1 = base + 64 * nw + (jt & 7) * 4 + t, L.sh1 = (jt >> 3) * 8 + pi + 16 * half;
            else L.w1 = base + 64 * nw + jt * 4 + t, L.sh1 = pi + 16 * half;
        }
        L.gi = (size_t)u * sd.unit_groups + ((size_t)(hd * sd.ng + i / sd.G) * 4 + t) * np * 2 + pi * 2 + half;
    } else { /* values: lane (g, t) holds channels g + 8j of token pairs t and t + 4 of a 16-token sub-tile */
        const long u = s / TILED_VUNIT;
        const int jt = (int)(s & 15), p = jt >> 1, par = jt & 1, t = p & 3, kh = p >> 2, sub = (int)(s % TILED_VUNIT) >> 4;
        const int blk = c / fw, cc = c % fw, g = cc & 7, j = cc >> 3, nnt = fw / 8, nh = (nnt * b2 + 15) / 16;
        const size_t base = (size_t)u * sd.unit_words + (size_t)(blk * (TILED_VUNIT / 16) + sub) * sd.bw;
        L.w = base + (size_t)((g * 4 + t) * 2 + kh) * nh + j * b2 / 16;
        L.sh = j * b2 % 16 + 16 * par;
        if (nnt <= 8) L.w1 = base + 64 * nh + g * 4 + t, L.sh1 = 8 * kh + j + 16 * par;
        else L.w1 = base + 64 * nh + (g * 4 + t) * 2 + kh, L.sh1 = j + 16 * par;
        L.gi = (size_t)u * sd.unit_groups + (size_t)(c / sd.G) * TILED_VUNIT + (size_t)(s % TILED_VUNIT);
    }
    return L;
}

/* Value of token s, channel c of sequence b of a side whose first q tokens
 * are quantised: decoded from its unit, or read from the ring / fp16 rows. */
__device__ __forceinline__ float side_value(const alrd_gpu_side &sd, int b, int q, long s, int c) {
    if (sd.bits == 16) return h2f(sd.rows[(size_t)b * sd.seq_rows + (size_t)s * sd.d + c]);
    if (s >= q) return h2f(sd.ring[(size_t)b * sd.seq_ring + (size_t)(s % sd.R) * sd.d + c]);
    if (sd.fw) {
        const tile_loc L = tile_where(sd, s, c);
        const uint32_t *w = sd.codes + (size_t)b * sd.seq_words;
        uint32_t q = (w[L.w] >> L.sh) & (sd.bits == 3 ? 3u : (1u << sd.bits) - 1);
        if (sd.bits == 3) q |= ((w[L.w1] >> L.sh1) & 1u) << 2;
        const size_t go = (size_t)b * sd.seq_groups + L.gi;
        return dequant(q, h2f(sd.scales[go]), h2f(sd.zeros[go]));
    }
    const uint32_t mask = (1u << sd.bits) - 1;
    size_t wi, gi;
    int slot;
    if (sd.per_channel) {
        long u = s / sd.R;
        int i = (int)(s % sd.R);
        wi = (size_t)u * sd.unit_words + (size_t)c * sd.wpr + i / sd.cpw;
        slot = i % sd.cpw;
        gi = (size_t)u * sd.unit_groups + (size_t)c * sd.ng + i / sd.G;
    } else {
        wi = (size_t)s * sd.unit_words + c / sd.cpw;
        slot = c % sd.cpw;
        gi = (size_t)s * sd.unit_groups + c / sd.G;
    }
    uint32_t w = sd.codes[(size_t)b * sd.seq_words + wi];
    size_t go = (size_t)b * sd.seq_groups + gi;
    return dequant((w >> (slot * sd.bits)) & mask, h2f(sd.scales[go]), h2f(sd.zeros[go]));
}

/* Division by a divisor fixed at launch (a cache's chunk or group size, a
 * rank's chunk count) as a multiply-high and a shift instead of the ~20
 * instructions of a run-time integer division: exact for 0 <= x < 2^31
 * (m = ceil(2^p / d), p = 31 + ceil(log2 d), so the error of x m / 2^p is
 * below 1/d). Made on the host, passed in a kernel's parameters. */
typedef struct {
    uint32_t d, m, s;
} alrd_fdiv;

static inline alrd_fdiv alrd_fdiv_make(int d) {
    alrd_fdiv f = {d > 1 ? (uint32_t)d : 1u, 0u, 0u};
    if (f.d == 1) return f;
    const uint32_t l = 32 - (uint32_t)__builtin_clz(f.d - 1); /* ceil(log2 d) */
    f.m = (uint32_t)(((1ull << (31 + l)) + f.d - 1) / f.d);
    f.s = l - 1; /* p - 32 */
    return f;
}
__device__ __forceinline__ int fdiv_q(int x, const alrd_fdiv &f) {
    return f.d == 1 ? x : (int)(__umulhi((uint32_t)x, f.m) >> f.s);
}
__device__ __forceinline__ int fdiv_r(int x, const alrd_fdiv &f) { return x - fdiv_q(x, f) * (int)f.d; }

/* ---- programmatic dependent launch (sm_90) ------------------------------
 * A kernel started by launch_pdl may begin while the kernel before it in
 * the stream is still running, so that its launch, its blocks' set-up and
 * its reads of constant data (weights) overlap that kernel's tail. Such a
 * kernel calls pdl_trigger() first (its own dependents may then launch) and
 * pdl_wait() before it reads anything an earlier kernel wrote and before it
 * writes anything: pdl_wait() returns once the previous grid has completed
 * and its writes are visible, and as every kernel of the chain waits before
 * it completes, once all earlier ones have. launch_pdl's pdl = 0 launches
 * them the ordinary way (alrd_gpu_knobs.pdl, ALRD_GPU_PDL=0: same-run
 * comparisons); the kernels compute the same either way. */
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }

template <typename... P, typename... A>
static inline int launch_pdl(int pdl, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                             A... args) {
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = pdl != 0;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    return (int)cudaLaunchKernelEx(&cfg, kernel, args...);
}

/* The same as an fp16 bit pattern (fp16 storage is passed through). */
__device__ __forceinline__ uint16_t side_load16(const alrd_gpu_side &sd, int b, int q, long s, int c) {
    if (sd.bits == 16) return sd.rows[(size_t)b * sd.seq_rows + (size_t)s * sd.d + c];
    if (s >= q) return sd.ring[(size_t)b * sd.seq_ring + (size_t)(s % sd.R) * sd.d + c];
    return f2h(side_value(sd, b, q, s, c));
}

#endif
