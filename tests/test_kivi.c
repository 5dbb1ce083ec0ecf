/* test_kivi: KIVI quantisation (kernels/kivi.h): packing bit patterns,
 * fp16 rounding of scale and zero, the s/2 error bound, constant and
 * non-finite groups, and per-channel vs per-token grouping. */
#include "testutil.h"

#include <math.h>

#include "../formats/tensor.h"
#include "../kernels/kivi.h"

static const int all_bits[] = {2, 3, 4, 8, 16};

/* xorshift64*: deterministic test data */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd_u32(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}
static float rnd_uniform(void) { return (float)(rnd_u32() >> 8) / 16777216.0f; } /* [0,1) */
static float rnd_normal(void) {
    float u = rnd_uniform() + 1e-7f, v = rnd_uniform();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

static void test_pack_bit_patterns(void **state) {
    (void)state;
    uint32_t w[4];
    uint16_t c2[] = {0, 1, 2, 3};
    alrd_kivi_pack(c2, 4, 2, w);
    assert_int_equal(w[0], 0xE4u); /* 0b11100100 */

    /* 3-bit: 10 codes per word, no straddling, top 2 bits zero */
    uint16_t c3[] = {1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 7};
    memset(w, 0xff, sizeof w);
    alrd_kivi_pack(c3, 11, 3, w);
    assert_int_equal(w[0], 0x111f58d1u);
    assert_int_equal(w[1], 7u); /* code 10 alone at bit 0, rest zero padded */

    uint16_t c4[] = {0xf, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0xa};
    alrd_kivi_pack(c4, 9, 4, w);
    assert_int_equal(w[0], 0x7654321fu);
    assert_int_equal(w[1], 0xau);

    uint16_t c8[] = {1, 2, 3, 4, 5};
    alrd_kivi_pack(c8, 5, 8, w);
    assert_int_equal(w[0], 0x04030201u);
    assert_int_equal(w[1], 0x00000005u);

    uint16_t c16[] = {0x1234, 0xabcd, 0x0042};
    alrd_kivi_pack(c16, 3, 16, w);
    assert_int_equal(w[0], 0xabcd1234u);
    assert_int_equal(w[1], 0x00000042u);

    assert_int_equal(alrd_kivi_codes_per_word(3), 10);
    assert_int_equal(alrd_kivi_run_words(10, 3), 1);
    assert_int_equal(alrd_kivi_run_words(11, 3), 2);
    assert_int_equal(alrd_kivi_run_words(17, 2), 2);
    assert_int_equal(alrd_kivi_run_words(0, 4), 0);
    assert_int_equal(alrd_kivi_codes_per_word(5), 0);
    assert_int_equal(alrd_kivi_bits_ok(5), 0);
    assert_int_equal(alrd_kivi_bits_ok(1), 0);
}

static void test_pack_round_trip(void **state) {
    (void)state;
    uint16_t codes[200], back[200];
    uint32_t words[110];
    for (size_t b = 0; b < sizeof all_bits / sizeof *all_bits; b++) {
        int bits = all_bits[b], cpw = 32 / bits;
        uint32_t mask = bits == 16 ? 0xffffu : (1u << bits) - 1;
        for (size_t n = 1; n <= 67; n += (n < 20 ? 1 : 7)) {
            for (size_t i = 0; i < n; i++) codes[i] = (uint16_t)(rnd_u32() & mask);
            size_t nw = alrd_kivi_run_words(n, bits);
            assert_int_equal(nw, (n + (size_t)cpw - 1) / (size_t)cpw);
            words[nw] = 0xdeadbeefu; /* must not be written */
            alrd_kivi_pack(codes, n, bits, words);
            assert_int_equal(words[nw], 0xdeadbeefu);
            alrd_kivi_unpack(words, n, bits, back);
            assert_memory_equal(codes, back, n * sizeof *codes);
            /* every bit outside the n codes is zero */
            for (size_t w = 0; w < nw; w++) {
                uint32_t used = 0;
                for (int j = 0; j < cpw; j++)
                    if (w * (size_t)cpw + (size_t)j < n) used |= mask << (j * bits);
                assert_int_equal(words[w] & ~used, 0u);
            }
        }
    }
}

static void test_f16_rounding(void **state) {
    (void)state;
    /* values from numpy float16 + nextafter */
    assert_int_equal(alrd_kivi_f16_round_down(0.3), 0x34cc);
    assert_int_equal(alrd_kivi_f16_round_up(0.3), 0x34cd);
    assert_int_equal(alrd_kivi_f16_round_down(-0.3), 0xb4cd);
    assert_int_equal(alrd_kivi_f16_round_up(-0.3), 0xb4cc);
    assert_int_equal(alrd_kivi_f16_round_down(0.1), 0x2e66);
    assert_int_equal(alrd_kivi_f16_round_up(0.1), 0x2e67);
    assert_int_equal(alrd_kivi_f16_round_down(1e-6), 0x0010); /* subnormal */
    assert_int_equal(alrd_kivi_f16_round_up(1e-6), 0x0011);
    assert_int_equal(alrd_kivi_f16_round_down(-1e-6), 0x8011);
    assert_int_equal(alrd_kivi_f16_round_up(-1e-6), 0x8010);
    assert_int_equal(alrd_kivi_f16_round_down(1.0), 0x3c00);
    assert_int_equal(alrd_kivi_f16_round_up(1.0), 0x3c00);
    assert_int_equal(alrd_kivi_f16_round_down(3.14159), 0x4248);
    assert_int_equal(alrd_kivi_f16_round_up(3.14159), 0x4249);
    assert_int_equal(alrd_kivi_f16_round_up(0.0), 0x0000);
    assert_int_equal(alrd_kivi_f16_round_up(1e-30), 0x0001); /* smallest subnormal */
    assert_int_equal(alrd_kivi_f16_round_down(1e-30), 0x0000);
    assert_int_equal(alrd_kivi_f16_round_up(1e9), 0x7bff); /* saturates, never inf */
    assert_int_equal(alrd_kivi_f16_round_down(-1e9), 0xfbff);
    assert_int_equal(alrd_kivi_f16_round_down(NAN), 0x0000);
    /* against the definition, over magnitudes from subnormal to near max */
    for (int i = 0; i < 20000; i++) {
        double x = ldexp(0.5 + rnd_uniform(), (int)(rnd_u32() % 40) - 26);
        if (x >= 65504.0) continue;
        if (i & 1) x = -x;
        uint16_t d = alrd_kivi_f16_round_down(x), u = alrd_kivi_f16_round_up(x);
        double vd = alrd_f16_to_f32(d), vu = alrd_f16_to_f32(u);
        assert_true(vd <= x && vu >= x);
        /* nothing representable strictly between: they are neighbours or equal */
        if (vd == vu) assert_true(vd == x);
        else assert_true(alrd_f16_to_f32(alrd_f32_to_f16((float)((vd + vu) / 2))) == vd ||
                         alrd_f16_to_f32(alrd_f32_to_f16((float)((vd + vu) / 2))) == vu);
        if (vd != vu && fabs(vd) > 0 && fabs(vu) > 0) {
            /* one ulp apart: patterns differ by one */
            assert_int_equal(abs((int)(d & 0x7fff) - (int)(u & 0x7fff)), 1);
        }
    }

    /* group [0.3, 1.0], 2 bits: zero rounds DOWN (nearest would be 0x34cd),
     * scale = (1.0 - 0.2998046875)/3 = 0.2333984375 exactly = 0x3378 */
    uint16_t s, z;
    alrd_kivi_group_params(0.3f, 1.0f, 2, &s, &z);
    assert_int_equal(z, 0x34cc);
    assert_int_equal(s, 0x3378);
    /* [0, 1], 3 bits: 1/7 rounds UP to 0x3092 (0.142944...), nearest is 0x3092 too;
     * [0, 1], 8 bits: 1/255 -> the smallest fp16 >= 1/255 */
    alrd_kivi_group_params(0.0f, 1.0f, 3, &s, &z);
    assert_int_equal(z, 0x0000);
    assert_true(alrd_f16_to_f32(s) * 7.0 >= 1.0);
    assert_true(alrd_f16_to_f32((uint16_t)(s - 1)) * 7.0 < 1.0);
    alrd_kivi_group_params(0.0f, 1.0f, 8, &s, &z);
    assert_true((double)alrd_f16_to_f32(s) * 255.0 >= 1.0);
    assert_true((double)alrd_f16_to_f32((uint16_t)(s - 1)) * 255.0 < 1.0);
}

/* Checks out against x for a per-token [T][D] block: the documented layout
 * decoded by hand equals out bit for bit, the grid covers each group, and
 * |out - x| <= s/2 + ulp(out). */
static void check_block(const float *x, const float *out, const uint32_t *codes,
                        const uint16_t *sc, const uint16_t *zr, int T, int D, int G, int bits,
                        int per_channel) {
    int cpw = 32 / bits;
    uint32_t mask = (1u << bits) - 1;
    int run = per_channel ? T : D; /* codes per run */
    size_t wpr = alrd_kivi_run_words((size_t)run, bits), ng = alrd_kivi_n_groups((size_t)run, G);
    for (int t = 0; t < T; t++)
        for (int c = 0; c < D; c++) {
            int r = per_channel ? c : t, i = per_channel ? t : c; /* run, index in run */
            uint32_t q = (codes[(size_t)r * wpr + (size_t)(i / cpw)] >> ((i % cpw) * bits)) & mask;
            float s = alrd_f16_to_f32(sc[(size_t)r * ng + (size_t)(i / G)]);
            float z = alrd_f16_to_f32(zr[(size_t)r * ng + (size_t)(i / G)]);
            float o = out[(size_t)t * D + c], v = x[(size_t)t * D + c];
            assert_true(isfinite(o));
            assert_true(s >= 0.0f && isfinite(s));
            assert_true(z <= v);
            assert_true((double)z + (double)mask * (double)s >= (double)v);
            assert_true(o == (float)q * s + z);
            float ulp = nextafterf(fabsf(o), INFINITY) - fabsf(o);
            if (!(fabsf(o - v) <= 0.5f * s + ulp)) {
                print_message("bits %d T %d D %d G %d (t %d c %d): x %.9g x^ %.9g s %.9g\n", bits,
                              T, D, G, t, c, v, o, s);
                fail();
            }
        }
}

static void test_error_bound_random(void **state) {
    (void)state;
    static float x[64 * 50], out[64 * 50];
    static uint32_t codes[64 * 50];
    static uint16_t sc[64 * 50], zr[64 * 50];
    const int shapes[][3] = {{64, 50, 32}, {37, 19, 8}, {33, 7, 32}, {5, 64, 7}, {1, 1, 1}};
    const float mags[] = {1.0f, 1e-3f, 40.0f};
    const float offs[] = {0.0f, 3.0f, -100.0f};
    for (size_t b = 0; b < 4; b++) {
        int bits = all_bits[b];
        double worst = 0.0; /* largest |err|/s seen: the bound must be tight, not vacuous */
        for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++)
            for (size_t m = 0; m < 3; m++) {
                int T = shapes[sh][0], D = shapes[sh][1], G = shapes[sh][2];
                for (int i = 0; i < T * D; i++) x[i] = rnd_normal() * mags[m] + offs[m];
                for (int pc = 0; pc < 2; pc++) {
                    memset(out, 0, sizeof out);
                    if (pc) {
                        assert_int_equal(alrd_kivi_quantize_per_channel(x, T, D, G, bits, codes, sc, zr, NULL), 0);
                        assert_int_equal(alrd_kivi_dequantize_per_channel(codes, sc, zr, T, D, G, bits, out, NULL), 0);
                    } else {
                        assert_int_equal(alrd_kivi_quantize_per_token(x, T, D, G, bits, codes, sc, zr, NULL), 0);
                        assert_int_equal(alrd_kivi_dequantize_per_token(codes, sc, zr, T, D, G, bits, out, NULL), 0);
                    }
                    check_block(x, out, codes, sc, zr, T, D, G, bits, pc);
                    int run = pc ? T : D;
                    size_t ng = alrd_kivi_n_groups((size_t)run, G);
                    for (int t = 0; t < T; t++)
                        for (int c = 0; c < D; c++) {
                            int r = pc ? c : t, i = pc ? t : c;
                            double s = alrd_f16_to_f32(sc[(size_t)r * ng + (size_t)(i / G)]);
                            double e = fabs((double)out[t * D + c] - (double)x[t * D + c]);
                            if (s > 0 && e / s > worst) worst = e / s;
                        }
                }
            }
        /* random data comes close to half a step: the bound is not vacuous */
        assert_true(worst > 0.45); /* check_block enforced <= s/2 + ulp */
    }
}

static void test_bits16_passthrough(void **state) {
    (void)state;
    float x[3 * 5] = {1.0f, -2.5f, 0.1f, 65504.0f, 1e-5f, 3.0f, 7.0f, -0.0f, 100.25f, 0.3f,
                      1.5f, 2.5f, 3.5f, 4.5f, 5.5f};
    float out[15];
    uint32_t codes[16];
    assert_int_equal(alrd_kivi_bytes_per_token(3, 5, 4, 16), 3 * 3 * 4); /* no scales */
    assert_int_equal(alrd_kivi_quantize_per_token(x, 3, 5, 4, 16, codes, NULL, NULL, NULL), 0);
    assert_int_equal(codes[0], (uint32_t)alrd_f32_to_f16(-2.5f) << 16 | 0x3c00u);
    assert_int_equal(alrd_kivi_dequantize_per_token(codes, NULL, NULL, 3, 5, 4, 16, out, NULL), 0);
    for (int i = 0; i < 15; i++) assert_true(out[i] == alrd_f16_to_f32(alrd_f32_to_f16(x[i])));
    assert_true(out[2] != 0.1f); /* fp16, not fp32 */
    assert_int_equal(alrd_kivi_quantize_per_channel(x, 3, 5, 4, 16, codes, NULL, NULL, NULL), 0);
    assert_int_equal(alrd_kivi_dequantize_per_channel(codes, NULL, NULL, 3, 5, 4, 16, out, NULL), 0);
    for (int i = 0; i < 15; i++) assert_true(out[i] == alrd_f16_to_f32(alrd_f32_to_f16(x[i])));
    /* channel 1 run: tokens -2.5, 7.0, 2.5 -> words [7.0|-2.5], [2.5] */
    assert_int_equal(codes[2], (uint32_t)alrd_f32_to_f16(7.0f) << 16 | alrd_f32_to_f16(-2.5f));
    assert_int_equal(codes[3], (uint32_t)alrd_f32_to_f16(2.5f));
}

static void test_constant_and_nonfinite_groups(void **state) {
    (void)state;
    const float consts[] = {1.5f, -3.25f, 0.0f, 1024.0f, 0.1f, -7.3f};
    float x[40], out[40];
    uint32_t codes[40];
    uint16_t sc[8], zr[8];
    for (size_t b = 0; b < 4; b++) {
        int bits = all_bits[b];
        for (size_t k = 0; k < sizeof consts / sizeof *consts; k++) {
            for (int i = 0; i < 40; i++) x[i] = consts[k];
            assert_int_equal(alrd_kivi_quantize_per_token(x, 1, 40, 8, bits, codes, sc, zr, NULL), 0);
            assert_int_equal(alrd_kivi_dequantize_per_token(codes, sc, zr, 1, 40, 8, bits, out, NULL), 0);
            int exact16 = alrd_f16_to_f32(alrd_f32_to_f16(consts[k])) == consts[k];
            for (int i = 0; i < 40; i++) {
                assert_true(isfinite(out[i]));
                if (exact16) assert_true(out[i] == consts[k]);
                else assert_true(fabsf(out[i] - consts[k]) <= 0.5f * alrd_f16_to_f32(sc[0]) +
                                 nextafterf(fabsf(out[i]), INFINITY) - fabsf(out[i]));
            }
            if (exact16) assert_int_equal(sc[0], 0); /* s = 0 */
            else assert_true(sc[0] != 0 && alrd_f16_to_f32(sc[0]) < 1e-3f * fabsf(consts[k]));
        }
        /* NaN and inf inputs never turn into NaN or inf */
        float y[8] = {NAN, 1.0f, 2.0f, 3.0f, INFINITY, -INFINITY, NAN, 0.5f};
        memset(sc, 0xff, sizeof sc);
        assert_int_equal(alrd_kivi_quantize_per_token(y, 2, 4, 4, bits, codes, sc, zr, NULL), 0);
        assert_int_equal(alrd_kivi_dequantize_per_token(codes, sc, zr, 2, 4, 4, bits, out, NULL), 0);
        for (int i = 0; i < 8; i++) assert_true(isfinite(out[i]));
        /* NaN is skipped for min/max ([1, 3]) and codes as 0 (the min) */
        assert_true(out[0] == 1.0f && out[1] == 1.0f && fabsf(out[3] - 3.0f) < 4e-3f);
        float nan4[4] = {NAN, NAN, NAN, NAN};
        assert_int_equal(alrd_kivi_quantize_per_channel(nan4, 4, 1, 4, bits, codes, sc, zr, NULL), 0);
        assert_int_equal(alrd_kivi_dequantize_per_channel(codes, sc, zr, 4, 1, 4, bits, out, NULL), 0);
        for (int i = 0; i < 4; i++) assert_true(out[i] == 0.0f);
    }
}

/* The hand-built matrix: per channel groups its columns, per token its rows.
 *   t0: 0 0 0 0
 *   t1: 2 4 0 6
 *   t2: 2 6 0 4
 *   t3: 3 9 0 0          (T = D = G = 4, 2 bits) */
static void test_grouping_hand_built(void **state) {
    (void)state;
    const float x[16] = {0, 0, 0, 0, 2, 4, 0, 6, 2, 6, 0, 4, 3, 9, 0, 0};
    uint32_t codes[4];
    uint16_t sc[4], zr[4];
    float out[16];
    /* per channel: scales = column range / 3 = 1, 3, 0, 2; zeros 0 */
    assert_int_equal(alrd_kivi_quantize_per_channel(x, 4, 4, 4, 2, codes, sc, zr, NULL), 0);
    const uint16_t sc_ch[4] = {0x3c00, 0x4200, 0x0000, 0x4000};
    assert_memory_equal(sc, sc_ch, sizeof sc);
    for (int i = 0; i < 4; i++) assert_int_equal(zr[i], 0);
    /* channel runs: c0 {0,2,2,3} c1 {0,1,2,3} c2 {0,0,0,0} c3 {0,3,2,0} */
    assert_int_equal(codes[0], 0xe8u);
    assert_int_equal(codes[1], 0xe4u);
    assert_int_equal(codes[2], 0x00u);
    assert_int_equal(codes[3], 0x2cu);
    assert_int_equal(alrd_kivi_dequantize_per_channel(codes, sc, zr, 4, 4, 4, 2, out, NULL), 0);
    const float exp_ch[16] = {0, 0, 0, 0, 2, 3, 0, 6, 2, 6, 0, 4, 3, 9, 0, 0};
    assert_memory_equal(out, exp_ch, sizeof out);

    /* per token: scales = row range / 3 = 0, 2, 2, 3 */
    assert_int_equal(alrd_kivi_quantize_per_token(x, 4, 4, 4, 2, codes, sc, zr, NULL), 0);
    const uint16_t sc_tok[4] = {0x0000, 0x4000, 0x4000, 0x4200};
    assert_memory_equal(sc, sc_tok, sizeof sc);
    /* token runs: t0 {0,0,0,0} t1 {1,2,0,3} t2 {1,3,0,2} t3 {1,3,0,0} */
    assert_int_equal(codes[0], 0x00u);
    assert_int_equal(codes[1], 0xc9u);
    assert_int_equal(codes[2], 0x8du);
    assert_int_equal(codes[3], 0x0du);
    assert_int_equal(alrd_kivi_dequantize_per_token(codes, sc, zr, 4, 4, 4, 2, out, NULL), 0);
    const float exp_tok[16] = {0, 0, 0, 0, 2, 4, 0, 6, 2, 6, 0, 4, 3, 9, 0, 0};
    assert_memory_equal(out, exp_tok, sizeof out);

    /* G not dividing the run: D = 5, G = 2 -> groups {0,1} {2,3} {4}; the
     * last, one-channel group is constant and decodes exactly. */
    const float y[5] = {0.0f, 3.0f, 10.0f, 16.0f, 0.75f};
    uint16_t s5[3], z5[3];
    assert_int_equal(alrd_kivi_quantize_per_token(y, 1, 5, 2, 2, codes, s5, z5, NULL), 0);
    assert_int_equal(s5[0], 0x3c00); /* 3/3 */
    assert_int_equal(s5[1], 0x4000); /* 6/3 */
    assert_int_equal(z5[1], 0x4900); /* 10.0 */
    assert_int_equal(s5[2], 0x0000);
    assert_int_equal(z5[2], 0x3a00); /* 0.75 */
    assert_int_equal(codes[0], 0x3u << 2 | 0x3u << 6); /* {0,3} {0,3} {0} */
    assert_int_equal(alrd_kivi_dequantize_per_token(codes, s5, z5, 1, 5, 2, 2, out, NULL), 0);
    assert_memory_equal(out, y, sizeof y);
    assert_int_equal(alrd_kivi_bytes_per_token(1, 5, 2, 2), 4 + 3 * 4);
    assert_int_equal(alrd_kivi_bytes_per_channel(5, 1, 2, 2), 4 + 3 * 4);
}

static void test_byte_formulas(void **state) {
    (void)state;
    /* per channel, T=128 D=64 G=32: codes D*ceil(T/cpw) words, 4 bytes per group */
    assert_int_equal(alrd_kivi_bytes_per_channel(128, 64, 32, 2), 64 * 8 * 4 + 64 * 4 * 4);
    assert_int_equal(alrd_kivi_bytes_per_channel(128, 64, 32, 3), 64 * 13 * 4 + 64 * 4 * 4);
    assert_int_equal(alrd_kivi_bytes_per_channel(128, 64, 32, 4), 64 * 16 * 4 + 64 * 4 * 4);
    assert_int_equal(alrd_kivi_bytes_per_channel(128, 64, 32, 8), 64 * 32 * 4 + 64 * 4 * 4);
    assert_int_equal(alrd_kivi_bytes_per_channel(128, 64, 32, 16), 64 * 64 * 4);
    /* per token, T=3 D=100 G=32: 4 groups (32,32,32,4) per token */
    assert_int_equal(alrd_kivi_bytes_per_token(3, 100, 32, 3), 3 * (10 * 4 + 4 * 4));
    assert_int_equal(alrd_kivi_bytes_per_token(3, 100, 32, 2), 3 * (7 * 4 + 4 * 4));
    assert_int_equal(alrd_kivi_bytes_per_token(3, 100, 32, 5), 0);
    assert_int_equal(alrd_kivi_bytes_per_token(3, 100, 0, 2), 0);
}

static void test_bad_args(void **state) {
    (void)state;
    float x[4] = {0};
    uint32_t codes[4];
    uint16_t sc[4], zr[4];
    alrd_error err = {{0}};
    assert_int_equal(alrd_kivi_quantize_per_token(x, 1, 4, 4, 5, codes, sc, zr, &err), -1);
    assert_non_null(strstr(err.msg, "bits 5"));
    assert_int_equal(alrd_kivi_quantize_per_channel(x, 4, 1, 0, 2, codes, sc, zr, &err), -1);
    assert_non_null(strstr(err.msg, "G=0"));
    assert_int_equal(alrd_kivi_quantize_per_token(x, 1, 4, 4, 2, codes, NULL, zr, &err), -1);
    assert_int_equal(alrd_kivi_dequantize_per_token(codes, sc, zr, -1, 4, 4, 2, x, &err), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_bit_patterns),
        cmocka_unit_test(test_pack_round_trip),
        cmocka_unit_test(test_f16_rounding),
        cmocka_unit_test(test_error_bound_random),
        cmocka_unit_test(test_bits16_passthrough),
        cmocka_unit_test(test_constant_and_nonfinite_groups),
        cmocka_unit_test(test_grouping_hand_built),
        cmocka_unit_test(test_byte_formulas),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
