/* test_dequant: every GGML block format on hand-built blocks, fp16/bf16
 * conversion edge values, dtype traits and the Q/K row unpermute.
 *
 * Each block is assembled byte by byte from chosen scales, mins and quants
 * (packing written from the format definition in ggml-common.h), and the
 * expected floats come from an element-indexed reading of that definition
 * ("element i uses scale i/16, byte ..., bits ...") plus literal spot values
 * worked out by hand. All scales are small powers of two and quants small
 * integers, so every expected value is exact. */
#include "testutil.h"

#include <math.h>

#include "../formats/dequant.h"
#include "../formats/tensor.h"

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void putf32(uint8_t *p, float f) { memcpy(p, &f, 4); }

/* fp16 bit patterns used below */
#define H_1      0x3C00 /* 1.0 */
#define H_HALF   0x3800 /* 0.5 */
#define H_QUART  0x3400 /* 0.25 */
#define H_EIGHTH 0x3000 /* 0.125 */
#define H_2      0x4000 /* 2.0 */
#define H_M1     0xBC00 /* -1.0 */

static void check_all(const float *got, const float *want, int n, const char *what) {
    for (int i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            print_error("%s: element %d: got %.9g want %.9g\n", what, i, got[i], want[i]);
            fail();
        }
    }
}

static void test_f32_f16_bf16(void **state) {
    (void)state;
    uint8_t b[8];
    putf32(b, 1.5f);
    putf32(b + 4, -2.25f);
    float y[4];
    assert_int_equal(alrd_dequant_row(ALRD_F32, b, y, 2), 0);
    assert_true(y[0] == 1.5f && y[1] == -2.25f);
    put16(b, H_1); put16(b + 2, 0xC000); put16(b + 4, 0x0001); put16(b + 6, 0x7BFF);
    assert_int_equal(alrd_dequant_row(ALRD_F16, b, y, 4), 0);
    assert_true(y[0] == 1.0f && y[1] == -2.0f && y[2] == 0x1p-24f && y[3] == 65504.0f);
    put16(b, 0x3F80); put16(b + 2, 0x4049); put16(b + 4, 0xC000); put16(b + 6, 0x0001);
    assert_int_equal(alrd_dequant_row(ALRD_BF16, b, y, 4), 0);
    assert_true(y[0] == 1.0f && y[1] == 3.140625f && y[2] == -2.0f && y[3] == 0x1p-133f);
}

/* Q4_0: d=0.5, qs[j] = j | (15-j)<<4. Element j<16 is the low nibble of
 * qs[j], element 16+j the high nibble; value (nibble-8)*d. */
static void test_q4_0(void **state) {
    (void)state;
    uint8_t b[18];
    put16(b, H_HALF);
    for (int j = 0; j < 16; j++) b[2 + j] = (uint8_t)(j | (15 - j) << 4);
    float y[32], want[32];
    for (int i = 0; i < 32; i++) {
        int nib = i < 16 ? (b[2 + i] & 15) : (b[2 + i - 16] >> 4);
        want[i] = (float)(nib - 8) * 0.5f;
    }
    assert_int_equal(alrd_dequant_row(ALRD_Q4_0, b, y, 32), 0);
    check_all(y, want, 32, "Q4_0");
    assert_true(y[0] == -4.0f && y[15] == 3.5f && y[16] == 3.5f && y[31] == -4.0f && y[8] == 0.0f);
}

/* Q4_1: d=0.25, m=-1, same nibbles; value nibble*d + m. */
static void test_q4_1(void **state) {
    (void)state;
    uint8_t b[40];
    put16(b, H_QUART);
    put16(b + 2, H_M1);
    for (int j = 0; j < 16; j++) b[4 + j] = (uint8_t)(j | (15 - j) << 4);
    /* second block: d=2, m=0.5, all nibbles 15 low / 1 high */
    put16(b + 20, H_2);
    put16(b + 22, 0x3800);
    memset(b + 24, 0x1F, 16);
    float y[64], want[64];
    for (int i = 0; i < 32; i++) {
        int nib = i < 16 ? (b[4 + i] & 15) : (b[4 + i - 16] >> 4);
        want[i] = (float)nib * 0.25f - 1.0f;
        want[32 + i] = i < 16 ? 15 * 2.0f + 0.5f : 1 * 2.0f + 0.5f;
    }
    assert_int_equal(alrd_dequant_row(ALRD_Q4_1, b, y, 64), 0);
    check_all(y, want, 64, "Q4_1");
    assert_true(y[0] == -1.0f && y[5] == 0.25f && y[16] == 2.75f && y[31] == -1.0f);
    assert_true(y[32] == 30.5f && y[63] == 2.5f);
}

/* Q5_0 / Q5_1: qh (u32 LE) bit i is the 5th bit of element i. Bits 0, 4,
 * 17 and 31 are set. */
static void test_q5(void **state) {
    (void)state;
    uint32_t qh = 0x80020011u;
    uint8_t b0[22], b1[24];
    put16(b0, H_1);
    memcpy(b0 + 2, &qh, 4);
    for (int j = 0; j < 16; j++) b0[6 + j] = (uint8_t)(j | (15 - j) << 4);
    put16(b1, H_HALF);
    put16(b1 + 2, H_2);
    memcpy(b1 + 4, &qh, 4);
    memcpy(b1 + 8, b0 + 6, 16);
    float y[32], want0[32], want1[32];
    for (int i = 0; i < 32; i++) {
        int nib = i < 16 ? (b0[6 + i] & 15) : (b0[6 + i - 16] >> 4);
        int q = nib | (int)((qh >> i) & 1) << 4;
        want0[i] = (float)(q - 16) * 1.0f;
        want1[i] = (float)q * 0.5f + 2.0f;
    }
    assert_int_equal(alrd_dequant_row(ALRD_Q5_0, b0, y, 32), 0);
    check_all(y, want0, 32, "Q5_0");
    /* by hand: e0 = (0|16)-16, e1 = 1-16, e4 = (4|16)-16, e16 = 15-16,
     * e17 = (14|16)-16, e31 = (0|16)-16 */
    assert_true(y[0] == 0.0f && y[1] == -15.0f && y[4] == 4.0f && y[16] == -1.0f &&
                y[17] == 14.0f && y[31] == 0.0f);
    assert_int_equal(alrd_dequant_row(ALRD_Q5_1, b1, y, 32), 0);
    check_all(y, want1, 32, "Q5_1");
    assert_true(y[0] == 10.0f && y[1] == 2.5f && y[16] == 9.5f && y[17] == 17.0f && y[31] == 10.0f);
}

/* Q8_0: d=0.125, qs[j] = j-16, except qs[31] = -128. */
static void test_q8_0(void **state) {
    (void)state;
    uint8_t b[34];
    put16(b, H_EIGHTH);
    for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)(j - 16);
    b[2 + 31] = 0x80;
    float y[32];
    assert_int_equal(alrd_dequant_row(ALRD_Q8_0, b, y, 32), 0);
    for (int j = 0; j < 31; j++) assert_true(y[j] == (float)(j - 16) * 0.125f);
    assert_true(y[0] == -2.0f && y[16] == 0.0f && y[31] == -16.0f);
}

static uint8_t pattern(int k) { return (uint8_t)(k * 37 + 11); }

/* Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin.
 * Element i: scale/min byte i/16; its 2 bits are at shift 2*((i%128)/32)
 * of qs[32*(i/128) + i%32]; value d*scale*q - dmin*min. */
static void test_q2_k(void **state) {
    (void)state;
    uint8_t b[84];
    for (int s = 0; s < 16; s++) b[s] = (uint8_t)(((s % 4) + 1) | (s / 4) << 4);
    for (int k = 0; k < 64; k++) b[16 + k] = pattern(k);
    put16(b + 80, H_1);
    put16(b + 82, H_HALF);
    float y[256], want[256];
    for (int i = 0; i < 256; i++) {
        uint8_t sc = b[i / 16];
        int q = (b[16 + 32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
        want[i] = 1.0f * (float)(sc & 15) * (float)q - 0.5f * (float)(sc >> 4);
    }
    assert_int_equal(alrd_dequant_row(ALRD_Q2_K, b, y, 256), 0);
    check_all(y, want, 256, "Q2_K");
    /* by hand: e0: qs[0]=11=0b1011 -> q=3, scale byte 0 = 0x01 -> 3*1-0 = 3.
     * e200: block half 1, r=72 -> shift 4, byte 32+8=40, qs[40]=(1491)&255=211
     * =0b11010011 -> (211>>4)&3 = 1; scale byte 12 = 0x31 -> 1*1 - 0.5*3 = -0.5 */
    assert_true(y[0] == 3.0f);
    assert_true(y[200] == -0.5f);
}

/* Q3_K: hmask[32], qs[64], scales[12], d. Sixteen 6-bit scales sc6[s]:
 * low 4 bits are nibbles of bytes 0..7 (s<8 low nibble of byte s, else high
 * nibble of byte s-8), high 2 bits at shift 2*(s/4) of byte 8+s%4. Element
 * i: 2 bits as in Q2_K, high bit = bit i/32 of hmask[i%32] (clear means
 * subtract 4); value d*(sc6[i/16]-32)*q. */
static void test_q3_k(void **state) {
    (void)state;
    int sc6[16];
    for (int s = 0; s < 16; s++) sc6[s] = s * 4 + 1; /* 1..61: exercises the high bits */
    uint8_t b[110];
    memset(b, 0, sizeof b);
    for (int k = 0; k < 32; k++) b[k] = pattern(k + 100);    /* hmask */
    for (int k = 0; k < 64; k++) b[32 + k] = pattern(k);     /* qs */
    uint8_t *sc = b + 96;
    for (int s = 0; s < 16; s++) {
        if (s < 8) sc[s] |= (uint8_t)(sc6[s] & 15);
        else sc[s - 8] |= (uint8_t)((sc6[s] & 15) << 4);
        sc[8 + s % 4] |= (uint8_t)(((sc6[s] >> 4) & 3) << (2 * (s / 4)));
    }
    put16(b + 108, H_HALF);
    float y[256], want[256];
    for (int i = 0; i < 256; i++) {
        int q = (b[32 + 32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
        int hb = (b[i % 32] >> (i / 32)) & 1;
        want[i] = 0.5f * (float)(sc6[i / 16] - 32) * (float)(q - (hb ? 0 : 4));
    }
    assert_int_equal(alrd_dequant_row(ALRD_Q3_K, b, y, 256), 0);
    check_all(y, want, 256, "Q3_K");
    /* by hand: e0: q = 11&3 = 3; hmask[0] = (3711)&255 = 127, bit 0 set -> 3;
     * scale 1-32 = -31 -> 0.5*-31*3 = -46.5.
     * e255: q = (qs[63]=2342&255=38 >> 6)&3 = 0; hmask[31] = 4858&255 = 250,
     * bit 7 set -> 0; -> 0 (-0.0 or 0 compare equal). e224: q = (qs[32]=
     * 1195&255=171>>6)&3 = 2; hmask[0] bit 7 clear -> 2-4 = -2; scale
     * sc6[14] = 57, 57-32 = 25 -> 0.5*25*-2 = -25 */
    assert_true(y[0] == -46.5f);
    assert_true(y[255] == 0.0f);
    assert_true(y[224] == -25.0f);
}

/* Q4_K / Q5_K 12-byte scale packing of 6-bit sc[8], mn[8]:
 * g<4: byte g = sc[g] | (sc[g+4]>>4)<<6, byte g+4 = mn[g] | (mn[g+4]>>4)<<6,
 * byte g+8 = (sc[g+4]&15) | (mn[g+4]&15)<<4. */
static void pack_k4(uint8_t *p, const int sc[8], const int mn[8]) {
    for (int g = 0; g < 4; g++) {
        p[g] = (uint8_t)(sc[g] | (sc[g + 4] >> 4) << 6);
        p[g + 4] = (uint8_t)(mn[g] | (mn[g + 4] >> 4) << 6);
        p[g + 8] = (uint8_t)((sc[g + 4] & 15) | (mn[g + 4] & 15) << 4);
    }
}

static const int k_sc[8] = {1, 2, 63, 17, 33, 48, 5, 60};
static const int k_mn[8] = {0, 63, 9, 16, 47, 2, 31, 50};

/* Q4_K: d, dmin, scales[12], qs[128]. Element i: sub-block g=i/32, byte
 * qs[32*(g/2) + i%32], low nibble for even g, high for odd. value
 * d*sc[g]*q - dmin*mn[g]. */
static void test_q4_k(void **state) {
    (void)state;
    uint8_t b[144];
    put16(b, H_HALF);
    put16(b + 2, H_QUART);
    pack_k4(b + 4, k_sc, k_mn);
    for (int k = 0; k < 128; k++) b[16 + k] = pattern(k);
    float y[256], want[256];
    for (int i = 0; i < 256; i++) {
        int g = i / 32;
        uint8_t byte = b[16 + 32 * (g / 2) + i % 32];
        int q = g % 2 ? byte >> 4 : byte & 15;
        want[i] = 0.5f * (float)k_sc[g] * (float)q - 0.25f * (float)k_mn[g];
    }
    assert_int_equal(alrd_dequant_row(ALRD_Q4_K, b, y, 256), 0);
    check_all(y, want, 256, "Q4_K");
    /* by hand: e0: q = 11&15 = 11, 0.5*1*11 - 0 = 5.5.
     * e255: g=7, qs[127] = 4710&255 = 102 -> high nibble 6; 0.5*60*6 - 0.25*50 = 167.5 */
    assert_true(y[0] == 5.5f);
    assert_true(y[255] == 167.5f);
}

/* Q5_K: as Q4_K plus qh[32]: element i's 5th bit is bit g of qh[i%32]. */
static void test_q5_k(void **state) {
    (void)state;
    uint8_t b[176];
    put16(b, H_HALF);
    put16(b + 2, H_QUART);
    pack_k4(b + 4, k_sc, k_mn);
    for (int k = 0; k < 32; k++) b[16 + k] = pattern(k + 200);
    for (int k = 0; k < 128; k++) b[48 + k] = pattern(k);
    float y[256], want[256];
    for (int i = 0; i < 256; i++) {
        int g = i / 32;
        uint8_t byte = b[48 + 32 * (g / 2) + i % 32];
        int q = (g % 2 ? byte >> 4 : byte & 15) | ((b[16 + i % 32] >> g) & 1) << 4;
        want[i] = 0.5f * (float)k_sc[g] * (float)q - 0.25f * (float)k_mn[g];
    }
    assert_int_equal(alrd_dequant_row(ALRD_Q5_K, b, y, 256), 0);
    check_all(y, want, 256, "Q5_K");
    /* by hand: e0: q = 11 | (qh[0] = 7411&255 = 243, bit 0 set) 16 = 27 -> 13.5.
     * e255: nibble 6, qh[31] = 8558&255 = 110 = 0b01101110, bit 7 clear -> 6 -> 167.5 */
    assert_true(y[0] == 13.5f);
    assert_true(y[255] == 167.5f);
}

/* Q6_K: ql[128], qh[64], scales[16] (int8), d. Element i: h=i/128, k =
 * (i%128)/32, l = i%32; low 4 bits from ql[64h + 32*(k&1) + l] (high
 * nibble when k>=2), high 2 bits at shift 2k of qh[32h + l]; value
 * d*scales[i/16]*(q-32). */
static void test_q6_k(void **state) {
    (void)state;
    uint8_t b[210];
    for (int k = 0; k < 128; k++) b[k] = pattern(k);
    for (int k = 0; k < 64; k++) b[128 + k] = pattern(k + 300);
    static const int8_t scales[16] = {1, -1, 2, -2, 4, -4, 8, -8, 16, -16, 32, -32, 64, -64, 127, -128};
    memcpy(b + 192, scales, 16);
    put16(b + 208, H_EIGHTH);
    float y[256], want[256];
    for (int i = 0; i < 256; i++) {
        int h = i / 128, k = (i % 128) / 32, l = i % 32;
        uint8_t lo = b[64 * h + 32 * (k & 1) + l];
        int q = (k >= 2 ? lo >> 4 : lo & 15) | ((b[128 + 32 * h + l] >> (2 * k)) & 3) << 4;
        want[i] = 0.125f * (float)scales[i / 16] * (float)(q - 32);
    }
    assert_int_equal(alrd_dequant_row(ALRD_Q6_K, b, y, 256), 0);
    check_all(y, want, 256, "Q6_K");
    /* by hand: e0: ql[0] = 11 -> 11; qh[0] = 11111&255 = 103, bits 0-1 = 3 -> 59;
     * 0.125*1*(59-32) = 3.375. e255: h1 k3 l31: ql[127] = 102 -> high nibble 6;
     * qh[63] = (363*37+11)&255 = 13442&255 = 130, (130>>6)&3 = 2 -> 38;
     * 0.125*-128*6 = -96 */
    assert_true(y[0] == 3.375f);
    assert_true(y[255] == -96.0f);
}

/* Q8_K: float d, int8 qs[256], int16 bsums[16] (ignored). */
static void test_q8_k(void **state) {
    (void)state;
    uint8_t b[292];
    memset(b, 0, sizeof b);
    putf32(b, 0.75f);
    for (int k = 0; k < 256; k++) b[4 + k] = (uint8_t)(int8_t)(k - 128);
    float y[256];
    assert_int_equal(alrd_dequant_row(ALRD_Q8_K, b, y, 256), 0);
    for (int i = 0; i < 256; i++) assert_true(y[i] == 0.75f * (float)(i - 128));
    assert_true(y[0] == -96.0f && y[255] == 95.25f);
}

static void test_bad_args(void **state) {
    (void)state;
    uint8_t b[64] = {0};
    float y[64];
    assert_int_equal(alrd_dequant_row(ALRD_Q4_0, b, y, 31), -1); /* not a block multiple */
    assert_int_equal(alrd_dequant_row(ALRD_Q8_1, b, y, 32), -1); /* known, not supported */
    assert_int_equal(alrd_dequant_row((alrd_dtype)16, b, y, 32), -1);
    assert_int_equal(alrd_dequant_row((alrd_dtype)99, b, y, 32), -1);
}

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bitsf(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static void test_f16_edges(void **state) {
    (void)state;
    assert_true(fbits(alrd_f16_to_f32(0x0000)) == 0x00000000u);
    assert_true(fbits(alrd_f16_to_f32(0x8000)) == 0x80000000u); /* -0 keeps its sign */
    assert_true(alrd_f16_to_f32(0x0001) == 0x1p-24f);            /* smallest subnormal */
    assert_true(alrd_f16_to_f32(0x8001) == -0x1p-24f);
    assert_true(alrd_f16_to_f32(0x03FF) == 1023 * 0x1p-24f);     /* largest subnormal */
    assert_true(alrd_f16_to_f32(0x0400) == 0x1p-14f);            /* smallest normal */
    assert_true(alrd_f16_to_f32(0x3555) == 0.333251953125f);
    assert_true(alrd_f16_to_f32(0x7BFF) == 65504.0f);
    assert_true(isinf(alrd_f16_to_f32(0x7C00)) && alrd_f16_to_f32(0x7C00) > 0);
    assert_true(isinf(alrd_f16_to_f32(0xFC00)) && alrd_f16_to_f32(0xFC00) < 0);
    assert_true(isnan(alrd_f16_to_f32(0x7E00)) && isnan(alrd_f16_to_f32(0x7C01)));

    assert_int_equal(alrd_f32_to_f16(1.0f), 0x3C00);
    assert_int_equal(alrd_f32_to_f16(-2.0f), 0xC000);
    assert_int_equal(alrd_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(alrd_f32_to_f16(65504.0f), 0x7BFF);
    assert_int_equal(alrd_f32_to_f16(65519.996f), 0x7BFF); /* just under the midpoint */
    assert_int_equal(alrd_f32_to_f16(65520.0f), 0x7C00);   /* midpoint ties to even = inf */
    assert_int_equal(alrd_f32_to_f16(1e10f), 0x7C00);
    assert_int_equal(alrd_f32_to_f16(-INFINITY), 0xFC00);
    assert_int_equal(alrd_f32_to_f16(1.0f + 0x1p-11f), 0x3C00);     /* tie -> even */
    assert_int_equal(alrd_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3C02); /* tie -> even (up) */
    assert_int_equal(alrd_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3C01);
    assert_int_equal(alrd_f32_to_f16(0x1p-25f), 0x0000);            /* tie with 0 -> 0 */
    assert_int_equal(alrd_f32_to_f16(bitsf(fbits(0x1p-25f) + 1)), 0x0001);
    assert_int_equal(alrd_f32_to_f16(1e-9f), 0x0000);
    assert_int_equal(alrd_f32_to_f16(1.5f * 0x1p-24f), 0x0002);     /* tie -> even */
    assert_int_equal(alrd_f32_to_f16(2.5f * 0x1p-24f), 0x0002);
    assert_int_equal(alrd_f32_to_f16(0x1p-14f - 0x1p-25f), 0x0400); /* rounds up into normal */
    assert_int_equal(alrd_f32_to_f16(-0x1p-24f), 0x8001);
    uint16_t n = alrd_f32_to_f16(NAN);
    assert_true((n & 0x7C00) == 0x7C00 && (n & 0x3FF) != 0);
    /* every non-NaN half survives f16 -> f32 -> f16 */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF)) continue;
        if (alrd_f32_to_f16(alrd_f16_to_f32((uint16_t)h)) != h) {
            print_error("f16 round trip failed for 0x%04x\n", h);
            fail();
        }
    }
}

static void test_bf16_edges(void **state) {
    (void)state;
    assert_true(alrd_bf16_to_f32(0x3F80) == 1.0f);
    assert_true(alrd_bf16_to_f32(0x4049) == 3.140625f);
    assert_true(fbits(alrd_bf16_to_f32(0x8000)) == 0x80000000u);
    assert_int_equal(alrd_f32_to_bf16(1.0f), 0x3F80);
    assert_int_equal(alrd_f32_to_bf16(1.0f + 0x1p-8f), 0x3F80);      /* tie -> even */
    assert_int_equal(alrd_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3F82);  /* tie -> even (up) */
    assert_int_equal(alrd_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3F81);
    assert_int_equal(alrd_f32_to_bf16(INFINITY), 0x7F80);
    assert_int_equal(alrd_f32_to_bf16(3.4028235e38f), 0x7F80); /* FLT_MAX rounds to inf */
    assert_int_equal(alrd_f32_to_bf16(bitsf(0xFF800001u)), 0xFFC0); /* signalling NaN -> quiet, sign kept */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7F80) == 0x7F80 && (h & 0x7F)) continue;
        if (alrd_f32_to_bf16(alrd_bf16_to_f32((uint16_t)h)) != h) {
            print_error("bf16 round trip failed for 0x%04x\n", h);
            fail();
        }
    }
}

static void test_dtype_traits(void **state) {
    (void)state;
    size_t rb;
    assert_int_equal(alrd_row_bytes(ALRD_Q4_1, 576, &rb), 0);
    assert_int_equal(rb, 18 * 20);
    assert_int_equal(alrd_row_bytes(ALRD_Q6_K, 512, &rb), 0);
    assert_int_equal(rb, 2 * 210);
    assert_int_equal(alrd_row_bytes(ALRD_F16, 3, &rb), 0);
    assert_int_equal(rb, 6);
    assert_int_equal(alrd_row_bytes(ALRD_Q4_0, 33, &rb), -1);
    assert_int_equal(alrd_row_bytes((alrd_dtype)99, 32, &rb), -1);
    assert_int_equal(alrd_row_bytes(ALRD_F32, INT64_MAX, &rb), -1); /* overflows size_t */
    assert_string_equal(alrd_dtype_name(ALRD_Q5_K), "Q5_K");
    assert_string_equal(alrd_dtype_name(ALRD_BF16), "BF16");
    assert_null(alrd_dtype_name((alrd_dtype)16));
    assert_int_equal(alrd_dtype_block(ALRD_Q3_K), 256);
    assert_int_equal(alrd_dtype_block_bytes(ALRD_Q3_K), 110);
    assert_int_equal(alrd_dtype_block_bytes(ALRD_Q5_1), 24);
    assert_true(alrd_dtype_supported(ALRD_Q2_K));
    assert_false(alrd_dtype_supported(ALRD_Q8_1));
    assert_false(alrd_dtype_supported((alrd_dtype)-1));
}

/* 8 rows of an F32 tensor, row r filled with r. With 2 heads of 4 rows,
 * llama.cpp's permute put HF rows (0,2) and (1,3) of each head as GGUF
 * rows (0,1) and (2,3), i.e. GGUF = [0,2,1,3, 4,6,5,7] in HF numbering;
 * reading must give HF order back. */
static void test_unpermute(void **state) {
    (void)state;
    const float hf_in_gguf[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    float data[8][3];
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 3; c++) data[r][c] = hf_in_gguf[r] * 10 + c;
    alrd_tensor t = {.name = "q", .dtype = ALRD_F32, .n_dims = 2, .shape = {8, 3},
                     .data = data, .nbytes = sizeof data, .unpermute_heads = 2};
    assert_int_equal(alrd_tensor_numel(&t), 24);
    assert_int_equal(alrd_tensor_rows(&t), 8);
    assert_int_equal(alrd_tensor_cols(&t), 3);
    float out[24];
    alrd_error err;
    assert_int_equal(alrd_tensor_to_f32(&t, out, &err), 0);
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 3; c++) assert_true(out[r * 3 + c] == (float)(r * 10 + c));
    assert_int_equal(alrd_tensor_rows_f32(&t, 5, 2, out, &err), 0);
    assert_true(out[0] == 50 && out[3] == 60 && out[5] == 62);
    t.unpermute_heads = 0; /* raw order */
    assert_int_equal(alrd_tensor_rows_f32(&t, 1, 1, out, &err), 0);
    assert_true(out[0] == 20);
    /* out of range and bad head splits are errors naming the tensor */
    assert_int_equal(alrd_tensor_rows_f32(&t, 7, 2, out, &err), -1);
    assert_non_null(strstr(err.msg, "q:"));
    t.unpermute_heads = 3;
    assert_int_equal(alrd_tensor_to_f32(&t, out, &err), -1);
    assert_non_null(strstr(err.msg, "heads"));
    t.unpermute_heads = 0;
    t.nbytes = sizeof data - 4; /* view shorter than its shape */
    assert_int_equal(alrd_tensor_to_f32(&t, out, &err), -1);
}

/* Random blocks of every type against llama.cpp's own reference, the gguf
 * Python package (tests/crosscheck/make_dequant_ref.py wrote the blocks and
 * gguf.quants.dequantize's values): the same floats, bit for bit. (Q8_K,
 * which gguf cannot dequantize, is covered by test_q8_k.) */
static void test_against_gguf_reference(void **state) {
    (void)state;
    const char *path = "tests/crosscheck/dequant_ref.bin";
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s: cannot open (run from the repository root)", path);
    char magic[8];
    uint32_t n_entries = 0;
    assert_int_equal(fread(magic, 1, 8, f), 8);
    assert_memory_equal(magic, "ALRDDQ01", 8);
    assert_int_equal(fread(&n_entries, 4, 1, f), 1);
    assert_true(n_entries >= 12);
    int seen = 0;
    for (uint32_t e = 0; e < n_entries; e++) {
        uint32_t hdr[3];
        assert_int_equal(fread(hdr, 4, 3, f), 3);
        const alrd_dtype t = (alrd_dtype)hdr[0];
        const uint32_t n = hdr[1], nb = hdr[2];
        assert_true(n > 0 && n <= (1u << 16) && nb > 0 && nb <= (1u << 20));
        uint8_t *raw = malloc(nb);
        float *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
        assert_non_null(raw), assert_non_null(want), assert_non_null(got);
        assert_int_equal(fread(raw, 1, nb, f), nb);
        assert_int_equal(fread(want, sizeof(float), n, f), n);
        assert_int_equal(alrd_dequant_row(t, raw, got, n), 0);
        for (uint32_t i = 0; i < n; i++)
            if (memcmp(&got[i], &want[i], 4))
                fail_msg("%s type %d element %u: alrd %.9g, gguf %.9g", path, (int)t, i, (double)got[i],
                         (double)want[i]);
        seen++;
        free(raw), free(want), free(got);
    }
    fclose(f);
    assert_int_equal(seen, (int)n_entries);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f32_f16_bf16), cmocka_unit_test(test_q4_0),
        cmocka_unit_test(test_q4_1),         cmocka_unit_test(test_q5),
        cmocka_unit_test(test_q8_0),         cmocka_unit_test(test_q2_k),
        cmocka_unit_test(test_q3_k),         cmocka_unit_test(test_q4_k),
        cmocka_unit_test(test_q5_k),         cmocka_unit_test(test_q6_k),
        cmocka_unit_test(test_q8_k),         cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_f16_edges),    cmocka_unit_test(test_bf16_edges),
        cmocka_unit_test(test_dtype_traits), cmocka_unit_test(test_unpermute),
        cmocka_unit_test(test_against_gguf_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
