/* dequant: GGML block formats to fp32, bit for bit as ggml's
 * dequantize_row_* (ggml-quants.c) computes them. Blocks are read byte-wise
 * (little-endian) so no packed-struct alignment is assumed. */
#include "dequant.h"

#include <string.h>

#define QK 32
#define QK_K 256

static inline float f16(const uint8_t *p) { return alrd_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static void deq_f32(const uint8_t *x, float *y, int64_t n) { memcpy(y, x, (size_t)n * 4); }

static void deq_f16(const uint8_t *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = f16(x + 2 * i);
}

static void deq_bf16(const uint8_t *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = alrd_bf16_to_f32((uint16_t)(x[2 * i] | x[2 * i + 1] << 8));
}

/* block_q4_0 { half d; u8 qs[16]; }: low nibbles are 0..15, high 16..31. */
static void deq_q4_0(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += 18, y += QK) {
        float d = f16(x);
        const uint8_t *qs = x + 2;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((qs[j] & 0x0f) - 8) * d;
            y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

/* block_q4_1 { half d; half m; u8 qs[16]; } */
static void deq_q4_1(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += 20, y += QK) {
        float d = f16(x), m = f16(x + 2);
        const uint8_t *qs = x + 4;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(qs[j] & 0x0f) * d + m;
            y[j + 16] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

static inline uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* block_q5_0 { half d; u8 qh[4]; u8 qs[16]; }: bit j of qh is the 5th bit
 * of element j, bit j+16 that of element j+16. */
static void deq_q5_0(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += 22, y += QK) {
        float d = f16(x);
        uint32_t qh = le32(x + 2);
        const uint8_t *qs = x + 6;
        for (int j = 0; j < 16; j++) {
            int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
            y[j] = (float)(((qs[j] & 0x0f) | h0) - 16) * d;
            y[j + 16] = (float)(((qs[j] >> 4) | h1) - 16) * d;
        }
    }
}

/* block_q5_1 { half d; half m; u8 qh[4]; u8 qs[16]; } */
static void deq_q5_1(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += 24, y += QK) {
        float d = f16(x), m = f16(x + 2);
        uint32_t qh = le32(x + 4);
        const uint8_t *qs = x + 8;
        for (int j = 0; j < 16; j++) {
            int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
            y[j] = (float)((qs[j] & 0x0f) | h0) * d + m;
            y[j + 16] = (float)((qs[j] >> 4) | h1) * d + m;
        }
    }
}

/* block_q8_0 { half d; i8 qs[32]; } */
static void deq_q8_0(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += 34, y += QK) {
        float d = f16(x);
        const int8_t *qs = (const int8_t *)(x + 2);
        for (int j = 0; j < QK; j++) y[j] = (float)qs[j] * d;
    }
}

/* block_q2_K { u8 scales[16]; u8 qs[64]; half d; half dmin; }: 16 groups
 * of 16, each with a 4-bit scale (low nibble) and 4-bit min (high). */
static void deq_q2_k(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, x += 84) {
        const uint8_t *sc = x, *q = x + 16;
        float d = f16(x + 80), dmin = f16(x + 82);
        int is = 0;
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int k = 0; k < 2; k++) {
                    uint8_t s = sc[is++];
                    float dl = d * (float)(s & 0x0f), ml = dmin * (float)(s >> 4);
                    for (int l = 0; l < 16; l++) *y++ = dl * (float)((q[l + 16 * k] >> shift) & 3) - ml;
                }
            }
        }
    }
}

/* The 12 scale bytes of Q3_K hold sixteen 6-bit scales: low 4 bits in
 * bytes 0..7 (nibbles), high 2 bits in bytes 8..11. */
static void q3k_scales(const uint8_t *s, int8_t out[16]) {
    for (int i = 0; i < 16; i++) {
        int lo = i < 8 ? (s[i] & 0x0f) : (s[i - 8] >> 4);
        int hi = (s[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
        out[i] = (int8_t)((lo | hi << 4) - 32);
    }
}

/* block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d; }: a clear
 * hmask bit subtracts 4 from the 2-bit quant. */
static void deq_q3_k(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, x += 110) {
        const uint8_t *hm = x, *q = x + 32;
        float d = f16(x + 108);
        int8_t sc[16];
        q3k_scales(x + 96, sc);
        int is = 0;
        uint8_t m = 1;
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int k = 0; k < 2; k++) {
                    float dl = d * (float)sc[is++];
                    for (int l = 0; l < 16; l++) {
                        int v = ((q[l + 16 * k] >> shift) & 3) - ((hm[l + 16 * k] & m) ? 0 : 4);
                        *y++ = dl * (float)v;
                    }
                }
            }
        }
    }
}

/* get_scale_min_k4: eight 6-bit scales and eight 6-bit mins in 12 bytes. */
static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* block_q4_K { half d; half dmin; u8 scales[12]; u8 qs[128]; }: 8 groups
 * of 32; each 32 bytes of qs holds two groups (low, then high nibbles). */
static void deq_q4_k(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, x += 144) {
        float d = f16(x), dmin = f16(x + 2);
        const uint8_t *scales = x + 4, *q = x + 16;
        for (int is = 0; is < 8; is += 2, q += 32) {
            uint8_t sc, mn;
            scale_min_k4(is, scales, &sc, &mn);
            float d1 = d * sc, m1 = dmin * mn;
            scale_min_k4(is + 1, scales, &sc, &mn);
            float d2 = d * sc, m2 = dmin * mn;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0x0f) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

/* block_q5_K { half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }:
 * group g's 5th bit is bit g of qh[l]. */
static void deq_q5_k(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, x += 176) {
        float d = f16(x), dmin = f16(x + 2);
        const uint8_t *scales = x + 4, *qh = x + 16, *ql = x + 48;
        uint8_t u1 = 1, u2 = 2;
        for (int is = 0; is < 8; is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
            uint8_t sc, mn;
            scale_min_k4(is, scales, &sc, &mn);
            float d1 = d * sc, m1 = dmin * mn;
            scale_min_k4(is + 1, scales, &sc, &mn);
            float d2 = d * sc, m2 = dmin * mn;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)((ql[l] & 0x0f) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

/* block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; half d; } */
static void deq_q6_k(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, x += 210) {
        const uint8_t *ql = x, *qh = x + 128;
        const int8_t *sc = (const int8_t *)(x + 192);
        float d = f16(x + 208);
        for (int half = 0; half < 2; half++, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0x0f) | ((qh[l] >> 0) & 3) << 4) - 32;
                int q2 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4) - 32;
                int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                y[l] = d * (float)sc[is] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

/* block_q8_K { float d; i8 qs[256]; i16 bsums[16]; } */
static void deq_q8_k(const uint8_t *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, x += 292, y += QK_K) {
        float d;
        memcpy(&d, x, 4);
        const int8_t *qs = (const int8_t *)(x + 4);
        for (int j = 0; j < QK_K; j++) y[j] = d * (float)qs[j];
    }
}

int alrd_dequant_row(alrd_dtype t, const void *src, float *dst, int64_t n) {
    const uint8_t *x = src;
    int blk = alrd_dtype_block(t);
    if (n < 0 || blk == 0 || n % blk != 0) return -1;
    switch (t) {
    case ALRD_F32: deq_f32(x, dst, n); return 0;
    case ALRD_F16: deq_f16(x, dst, n); return 0;
    case ALRD_BF16: deq_bf16(x, dst, n); return 0;
    case ALRD_Q4_0: deq_q4_0(x, dst, n); return 0;
    case ALRD_Q4_1: deq_q4_1(x, dst, n); return 0;
    case ALRD_Q5_0: deq_q5_0(x, dst, n); return 0;
    case ALRD_Q5_1: deq_q5_1(x, dst, n); return 0;
    case ALRD_Q8_0: deq_q8_0(x, dst, n); return 0;
    case ALRD_Q2_K: deq_q2_k(x, dst, n); return 0;
    case ALRD_Q3_K: deq_q3_k(x, dst, n); return 0;
    case ALRD_Q4_K: deq_q4_k(x, dst, n); return 0;
    case ALRD_Q5_K: deq_q5_k(x, dst, n); return 0;
    case ALRD_Q6_K: deq_q6_k(x, dst, n); return 0;
    case ALRD_Q8_K: deq_q8_k(x, dst, n); return 0;
    default: return -1;
    }
}
