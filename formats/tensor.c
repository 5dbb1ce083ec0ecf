/* tensor: dtype traits, shapes, fp16/bf16 scalars and conversion of tensor
 * rows to fp32 (undoing llama.cpp's per-head Q/K row permutation). */
#include "tensor.h"

#include <string.h>

#include "dequant.h"

typedef struct {
    const char *name;
    int block;          /* elements per block */
    size_t block_bytes;
    int supported;      /* alrd_dequant_row handles it */
} dtype_traits;

/* Indexed by GGML type id; ids absent here have block 0. */
static const dtype_traits k_traits[ALRD_DTYPE_COUNT] = {
    [ALRD_F32]  = {"F32", 1, 4, 1},
    [ALRD_F16]  = {"F16", 1, 2, 1},
    [ALRD_Q4_0] = {"Q4_0", 32, 18, 1},
    [ALRD_Q4_1] = {"Q4_1", 32, 20, 1},
    [ALRD_Q5_0] = {"Q5_0", 32, 22, 1},
    [ALRD_Q5_1] = {"Q5_1", 32, 24, 1},
    [ALRD_Q8_0] = {"Q8_0", 32, 34, 1},
    [ALRD_Q8_1] = {"Q8_1", 32, 36, 0}, /* ggml has no to-float for it either */
    [ALRD_Q2_K] = {"Q2_K", 256, 84, 1},
    [ALRD_Q3_K] = {"Q3_K", 256, 110, 1},
    [ALRD_Q4_K] = {"Q4_K", 256, 144, 1},
    [ALRD_Q5_K] = {"Q5_K", 256, 176, 1},
    [ALRD_Q6_K] = {"Q6_K", 256, 210, 1},
    [ALRD_Q8_K] = {"Q8_K", 256, 292, 1},
    [ALRD_BF16] = {"BF16", 1, 2, 1},
};

static const dtype_traits *traits(alrd_dtype t) {
    if ((unsigned)t >= ALRD_DTYPE_COUNT || !k_traits[t].name) return NULL;
    return &k_traits[t];
}

int alrd_dtype_block(alrd_dtype t) {
    const dtype_traits *d = traits(t);
    return d ? d->block : 0;
}

size_t alrd_dtype_block_bytes(alrd_dtype t) {
    const dtype_traits *d = traits(t);
    return d ? d->block_bytes : 0;
}

const char *alrd_dtype_name(alrd_dtype t) {
    const dtype_traits *d = traits(t);
    return d ? d->name : NULL;
}

int alrd_dtype_supported(alrd_dtype t) {
    const dtype_traits *d = traits(t);
    return d ? d->supported : 0;
}

int alrd_row_bytes(alrd_dtype t, int64_t n, size_t *out) {
    const dtype_traits *d = traits(t);
    if (!d || n < 0 || n % d->block != 0) return -1;
    return alrd_mul_ok((size_t)(n / d->block), d->block_bytes, out);
}

int64_t alrd_tensor_numel(const alrd_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= t->shape[i];
    return n;
}

int64_t alrd_tensor_rows(const alrd_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i + 1 < t->n_dims; i++) n *= t->shape[i];
    return n;
}

int64_t alrd_tensor_cols(const alrd_tensor *t) {
    return t->n_dims > 0 ? t->shape[t->n_dims - 1] : 1;
}

/* llama.cpp stores head h's rows as w.reshape(2, d/2, in).swapaxes(0,1):
 * GGUF row h*d + 2i + j holds HF row h*d + j*d/2 + i. So HF row r lives in
 * GGUF row h*d + 2*(l % half) + l / half, with l = r - h*d. */
static inline int64_t source_row(int64_t r, int64_t head_dim) {
    int64_t half = head_dim / 2, h = r / head_dim, l = r - h * head_dim;
    return h * head_dim + 2 * (l % half) + l / half;
}

int alrd_tensor_rows_f32(const alrd_tensor *t, int64_t row0, int64_t nrows, float *out,
                         alrd_error *err) {
    int64_t rows = alrd_tensor_rows(t), cols = alrd_tensor_cols(t);
    if (!alrd_dtype_supported(t->dtype))
        return alrd_errf(err, "%s: dtype %d (%s) cannot be converted to fp32", t->name,
                         (int)t->dtype, alrd_dtype_name(t->dtype) ? alrd_dtype_name(t->dtype) : "?");
    if (row0 < 0 || nrows < 0 || row0 > rows || nrows > rows - row0)
        return alrd_errf(err, "%s: rows [%lld, +%lld) outside the tensor's %lld rows", t->name,
                         (long long)row0, (long long)nrows, (long long)rows);
    size_t rb, total;
    if (alrd_row_bytes(t->dtype, cols, &rb) != 0 || alrd_mul_ok(rb, (size_t)rows, &total) != 0 ||
        total > t->nbytes)
        return alrd_errf(err, "%s: %lld x %lld %s does not fit its %zu bytes", t->name,
                         (long long)rows, (long long)cols, alrd_dtype_name(t->dtype), t->nbytes);
    const uint8_t *base = t->data;
    if (t->unpermute_heads <= 0) {
        /* Rows are contiguous and blocks never straddle rows: one call. */
        if (alrd_dequant_row(t->dtype, base + (size_t)row0 * rb, out, nrows * cols) != 0)
            return alrd_errf(err, "%s: dequantization failed", t->name);
        return 0;
    }
    int64_t nh = t->unpermute_heads;
    if (rows % nh != 0 || (rows / nh) % 2 != 0)
        return alrd_errf(err, "%s: %lld rows do not split into %lld heads of even size",
                         t->name, (long long)rows, (long long)nh);
    int64_t head_dim = rows / nh;
    for (int64_t i = 0; i < nrows; i++) {
        int64_t src = source_row(row0 + i, head_dim);
        if (alrd_dequant_row(t->dtype, base + (size_t)src * rb, out + i * cols, cols) != 0)
            return alrd_errf(err, "%s: dequantization failed", t->name);
    }
    return 0;
}

int alrd_tensor_to_f32(const alrd_tensor *t, float *out, alrd_error *err) {
    return alrd_tensor_rows_f32(t, 0, alrd_tensor_rows(t), out, err);
}

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float alrd_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0) { /* zero or subnormal: mant * 2^-24, exact in fp32 */
        float f = (float)mant * (1.0f / 16777216.0f);
        return bits_f32(f32_bits(f) | sign);
    }
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

/* Round to nearest even, as F16C and ggml's fallback do. */
uint16_t alrd_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) /* NaN: keep top payload bits, force quiet */
        return (uint16_t)(sign | 0x7e00 | ((x >> 13) & 0x3ff));
    if (x >= 0x477ff000u) return sign | 0x7c00; /* >= 65520 rounds to inf */
    if (x < 0x38800000u) {                      /* below 2^-14: subnormal or zero */
        if (x <= 0x33000000u) return sign;      /* <= 2^-25 rounds to (even) zero */
        uint32_t e = x >> 23, m = (x & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* value = m * 2^(e-150) = (m >> shift) units of 2^-24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t h = ((x >> 23) - 112) << 10 | ((x >> 13) & 0x3ff);
    uint32_t rem = x & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* carry may bump the exponent */
    return (uint16_t)(sign | h);
}

float alrd_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

/* ggml_compute_fp32_to_bf16: quiet NaNs, round to nearest even otherwise. */
uint16_t alrd_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}
