/* gpu_attn: fused flash-decoding attention over every cache alrd keeps
 * (gpu_attn.h): the dispatch over the kernel families (one file each, the
 * interface in gpu_attn_common.cuh) and the split combine they share. */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "gpu_attn_common.cuh"

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

/* the families in the order of preference: each layer takes the first that decodes its cache */
static const attn_family *const families[] = {&attn_fp16_family, &attn_kivi_family, &attn_latent_family,
                                              &attn_generic_family};

static const attn_family *family_of(const alrd_gpu_attn_layer *L) {
    for (const attn_family *f : families)
        if (f->ok(L)) return f;
    return &attn_generic_family; /* accepts every layer */
}

extern "C" int alrd_gpu_attn_prepare(size_t bytes) {
    for (const attn_family *f : families) {
        const int e = f->prepare(bytes);
        if (e) return e;
    }
    return 0;
}

extern "C" size_t alrd_gpu_attn_smem(const alrd_gpu_attn_layer *L, size_t limit) {
    if (L->hd != 64 && L->hd != 128) return 0;
    if (L->n_kv <= 0 || L->n_heads % L->n_kv || L->group_heads <= 0 || L->n_kv % L->group_heads) return 0;
    if (L->kmode == ALRD_GPU_K_LATENT && (L->kr <= 0 || !L->kA)) return 0;
    if (L->kmode == ALRD_GPU_K_ROPED && L->ks.bits != 16) return 0;
    const size_t total = family_of(L)->smem(L);
    return total <= limit ? total : 0;
}

extern "C" int alrd_gpu_attn_occupancy(const alrd_gpu_attn_layer *L, int *groups) {
    const attn_family *f = family_of(L);
    int n = 0;
    *groups = f->blocks(L);
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, f->fn(L), f->threads, f->smem(L)) == cudaSuccess ? n : 1;
}

extern "C" size_t alrd_gpu_attn_work_floats(int n_heads, int B, int nsplit, int vw_max) {
    return (size_t)B * n_heads * nsplit * (2 + (size_t)vw_max) + 4; /* the mixes start 16-byte aligned */
}

extern "C" int alrd_gpu_attn_decode(const alrd_gpu_attn_layer *L, const uint16_t *q16, const int *pos_dev, int B,
                                    int nsplit, int vw_max, float *work, uint16_t *out, void *stream) {
    cudaStream_t st = (cudaStream_t)stream;
    int e = family_of(L)->launch(L, q16, pos_dev, B, nsplit, vw_max, work, st);
    if (!e) e = (int)cudaGetLastError();
    if (e) return e;
    return launch_pdl(attn_combine_kernel, dim3(L->n_heads, B), CMB_THREADS, cmb_smem(nsplit), st, *L, nsplit, vw_max,
                      pos_dev, work, out);
}
