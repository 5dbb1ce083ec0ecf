/* gpu_common: device helpers shared by the CUDA kernels (C++ only; each
 * .cu includes it, as device code is not linked across files). */
#ifndef ALRD_GPU_COMMON_CUH
#define ALRD_GPU_COMMON_CUH

#include <cuda_fp16.h>
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

/* Value of token s, channel c of sequence b of a side whose first q tokens
 * are quantised: decoded from its unit, or read from the ring / fp16 rows. */
__device__ __forceinline__ float side_value(const alrd_gpu_side &sd, int b, int q, long s, int c) {
    if (sd.bits == 16) return h2f(sd.rows[(size_t)b * sd.seq_rows + (size_t)s * sd.d + c]);
    if (s >= q) return h2f(sd.ring[(size_t)b * sd.seq_ring + (size_t)(s % sd.R) * sd.d + c]);
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

/* The same as an fp16 bit pattern (fp16 storage is passed through). */
__device__ __forceinline__ uint16_t side_load16(const alrd_gpu_side &sd, int b, int q, long s, int c) {
    if (sd.bits == 16) return sd.rows[(size_t)b * sd.seq_rows + (size_t)s * sd.d + c];
    if (s >= q) return sd.ring[(size_t)b * sd.seq_ring + (size_t)(s % sd.R) * sd.d + c];
    return f2h(side_value(sd, b, q, s, c));
}

#endif
