/* kivi: asymmetric min/max quantisation, CPU reference (see kivi.h). */
#include "kivi.h"

#include <math.h>
#include <string.h>

#include "../formats/tensor.h"

#define F16_MAX_BITS 0x7bffu /* 65504 */

int alrd_kivi_bits_ok(int bits) {
    return bits == 2 || bits == 3 || bits == 4 || bits == 8 || bits == 16;
}

int alrd_kivi_codes_per_word(int bits) { return alrd_kivi_bits_ok(bits) ? 32 / bits : 0; }

size_t alrd_kivi_run_words(size_t n, int bits) {
    size_t cpw = (size_t)alrd_kivi_codes_per_word(bits);
    return cpw ? (n + cpw - 1) / cpw : 0;
}

size_t alrd_kivi_n_groups(size_t n, int G) {
    return G > 0 ? (n + (size_t)G - 1) / (size_t)G : 0;
}

size_t alrd_kivi_bytes_per_channel(size_t T, size_t D, int G, int bits) {
    if (!alrd_kivi_bits_ok(bits) || G <= 0) return 0;
    size_t bytes = 4 * D * alrd_kivi_run_words(T, bits);
    if (bits != 16) bytes += 4 * D * alrd_kivi_n_groups(T, G);
    return bytes;
}

size_t alrd_kivi_bytes_per_token(size_t T, size_t D, int G, int bits) {
    if (!alrd_kivi_bits_ok(bits) || G <= 0) return 0;
    size_t bytes = 4 * T * alrd_kivi_run_words(D, bits);
    if (bits != 16) bytes += 4 * T * alrd_kivi_n_groups(D, G);
    return bytes;
}

void alrd_kivi_pack(const uint16_t *codes, size_t n, int bits, uint32_t *words) {
    int cpw = alrd_kivi_codes_per_word(bits);
    if (!cpw) return;
    size_t nw = alrd_kivi_run_words(n, bits);
    uint32_t mask = bits == 16 ? 0xffffu : (1u << bits) - 1;
    for (size_t w = 0; w < nw; w++) {
        uint32_t word = 0;
        size_t i0 = w * (size_t)cpw;
        for (int j = 0; j < cpw && i0 + (size_t)j < n; j++)
            word |= ((uint32_t)codes[i0 + (size_t)j] & mask) << (j * bits);
        words[w] = word;
    }
}

void alrd_kivi_unpack(const uint32_t *words, size_t n, int bits, uint16_t *codes) {
    int cpw = alrd_kivi_codes_per_word(bits);
    if (!cpw) return;
    uint32_t mask = bits == 16 ? 0xffffu : (1u << bits) - 1;
    for (size_t i = 0; i < n; i++)
        codes[i] = (uint16_t)((words[i / (size_t)cpw] >> ((i % (size_t)cpw) * (size_t)bits)) & mask);
}

/* Positive fp16 bit patterns 0..0x7bff are ordered like their values: start
 * from the nearest fp16 and step to the directed neighbour (at most a step or
 * two: the double -> float -> half double rounding is off by one at worst). */
static double f16_val(uint32_t h) { return (double)alrd_f16_to_f32((uint16_t)h); }

static uint16_t mag_down(double x) { /* largest h in [0, max] with val(h) <= x; x >= 0 */
    if (x >= 65504.0) return F16_MAX_BITS;
    uint32_t h = alrd_f32_to_f16((float)x);
    while (h > 0 && f16_val(h) > x) h--;
    while (h < F16_MAX_BITS && f16_val(h + 1) <= x) h++;
    return (uint16_t)h;
}

static uint16_t mag_up(double x) { /* smallest h in [0, max] with val(h) >= x; x >= 0 */
    if (x <= 0.0) return 0;
    if (x >= 65504.0) return F16_MAX_BITS; /* saturate */
    uint32_t h = alrd_f32_to_f16((float)x);
    while (h < F16_MAX_BITS && f16_val(h) < x) h++;
    while (h > 0 && f16_val(h - 1) >= x) h--;
    return (uint16_t)h;
}

uint16_t alrd_kivi_f16_round_down(double x) {
    if (isnan(x)) return 0;
    if (x >= 0.0) return mag_down(x);
    uint16_t m = mag_up(-x);
    return m ? (uint16_t)(0x8000u | m) : 0;
}

uint16_t alrd_kivi_f16_round_up(double x) {
    if (isnan(x)) return 0;
    if (x >= 0.0) return mag_up(x);
    uint16_t m = mag_down(-x);
    return m ? (uint16_t)(0x8000u | m) : 0;
}

/* Next fp16 towards +inf for a finite, non-negative pattern (scales only). */
static uint16_t f16_next_up_pos(uint16_t h) { return h < F16_MAX_BITS ? (uint16_t)(h + 1) : h; }

void alrd_kivi_group_params(float mn, float mx, int bits, uint16_t *scale, uint16_t *zero) {
    if (!(mn <= mx)) mn = mx = 0.0f; /* NaN or an empty group */
    uint16_t z = alrd_kivi_f16_round_down((double)mn);
    double zd = (double)alrd_f16_to_f32(z);
    double n = (double)((1u << bits) - 1);
    uint16_t s = alrd_kivi_f16_round_up(((double)mx - zd) / n);
    /* The division may round down in double; the grid must reach mx. */
    while (s < F16_MAX_BITS && zd + n * (double)alrd_f16_to_f32(s) < (double)mx)
        s = f16_next_up_pos(s);
    *scale = s;
    *zero = z;
}

/* Code of x on the grid (z, s): round((x - z)/s) clamped to [0, n]; NaN -> 0. */
static inline uint16_t code_of(float x, double z, double inv_s, double n) {
    double t = ((double)x - z) * inv_s + 0.5;
    if (!(t > 0.0)) return 0;
    if (t >= n) return (uint16_t)n;
    return (uint16_t)(int)t; /* t in (0, n): truncation is floor */
}

static int check_args(const char *fn, const void *x, const uint32_t *codes,
                      const uint16_t *scales, const uint16_t *zeros, int T, int D, int G,
                      int bits, alrd_error *err) {
    if (!alrd_kivi_bits_ok(bits))
        return alrd_errf(err, "kivi: %s: bits %d unsupported (2, 3, 4, 8 or 16)", fn, bits);
    if (T < 0 || D < 0 || G <= 0)
        return alrd_errf(err, "kivi: %s: T=%d D=%d G=%d (T, D >= 0 and G > 0 expected)", fn,
                         T, D, G);
    if ((T > 0 && D > 0) && (!x || !codes || (bits != 16 && (!scales || !zeros))))
        return alrd_errf(err, "kivi: %s: NULL buffer", fn);
    return 0;
}

/* Min and max of n elements spaced `stride` apart; NaNs are skipped and an
 * all-NaN group reads as [0, 0]. */
static void group_minmax(const float *x, size_t stride, int n, float *mn_out, float *mx_out) {
    float mn = INFINITY, mx = -INFINITY;
    for (int i = 0; i < n; i++) {
        float v = x[(size_t)i * stride];
        if (v < mn) mn = v;
        if (v > mx) mx = v;
    }
    if (!(mn <= mx)) mn = mx = 0.0f;
    *mn_out = mn;
    *mx_out = mx;
}

/* Quantises one run of n elements spaced `stride` apart, grouped by G, into
 * ceil(n/cpw) words (codes ORed in place, so the words are zeroed first) and,
 * for bits < 16, ceil(n/G) scales and zeros. */
static void quantize_run(const float *x, size_t stride, int n, int G, int bits,
                         uint32_t *words, uint16_t *scales, uint16_t *zeros) {
    int cpw = 32 / bits;
    memset(words, 0, alrd_kivi_run_words((size_t)n, bits) * sizeof *words);
    size_t w = 0;
    int slot = 0;
    if (bits == 16) {
        for (int i = 0; i < n; i++) {
            words[w] |= (uint32_t)alrd_f32_to_f16(x[(size_t)i * stride]) << (slot * 16);
            if (++slot == cpw) { slot = 0; w++; }
        }
        return;
    }
    double top = (double)((1u << bits) - 1);
    for (int g0 = 0, gi = 0; g0 < n; g0 += G, gi++) {
        int m = n - g0 < G ? n - g0 : G;
        const float *xg = x + (size_t)g0 * stride;
        float mn, mx;
        group_minmax(xg, stride, m, &mn, &mx);
        alrd_kivi_group_params(mn, mx, bits, &scales[gi], &zeros[gi]);
        double z = (double)alrd_f16_to_f32(zeros[gi]), s = (double)alrd_f16_to_f32(scales[gi]);
        double inv_s = s > 0.0 ? 1.0 / s : 0.0;
        for (int i = 0; i < m; i++) {
            words[w] |= (uint32_t)code_of(xg[(size_t)i * stride], z, inv_s, top) << (slot * bits);
            if (++slot == cpw) { slot = 0; w++; }
        }
    }
}

/* Decodes one run (the inverse of quantize_run) into out, elements spaced
 * `stride` apart: x^ = (float)q * s + z, in fp32. */
static void dequantize_run(const uint32_t *words, const uint16_t *scales, const uint16_t *zeros,
                           int n, int G, int bits, float *out, size_t stride) {
    int cpw = 32 / bits;
    size_t w = 0;
    int slot = 0;
    if (bits == 16) {
        for (int i = 0; i < n; i++) {
            out[(size_t)i * stride] = alrd_f16_to_f32((uint16_t)(words[w] >> (slot * 16)));
            if (++slot == cpw) { slot = 0; w++; }
        }
        return;
    }
    uint32_t mask = (1u << bits) - 1;
    for (int g0 = 0, gi = 0; g0 < n; g0 += G, gi++) {
        int m = n - g0 < G ? n - g0 : G;
        float s = alrd_f16_to_f32(scales[gi]), z = alrd_f16_to_f32(zeros[gi]);
        float *og = out + (size_t)g0 * stride;
        for (int i = 0; i < m; i++) {
            og[(size_t)i * stride] = (float)((words[w] >> (slot * bits)) & mask) * s + z;
            if (++slot == cpw) { slot = 0; w++; }
        }
    }
}

int alrd_kivi_quantize_per_channel(const float *x, int T, int D, int G, int bits,
                                   uint32_t *codes, uint16_t *scales, uint16_t *zeros,
                                   alrd_error *err) {
    if (check_args("quantize_per_channel", x, codes, scales, zeros, T, D, G, bits, err))
        return -1;
    size_t wpr = alrd_kivi_run_words((size_t)T, bits), ng = alrd_kivi_n_groups((size_t)T, G);
    for (int c = 0; c < D; c++)
        quantize_run(x + c, (size_t)D, T, G, bits, codes + (size_t)c * wpr,
                     bits == 16 ? NULL : scales + (size_t)c * ng,
                     bits == 16 ? NULL : zeros + (size_t)c * ng);
    return 0;
}

int alrd_kivi_quantize_per_token(const float *x, int T, int D, int G, int bits,
                                 uint32_t *codes, uint16_t *scales, uint16_t *zeros,
                                 alrd_error *err) {
    if (check_args("quantize_per_token", x, codes, scales, zeros, T, D, G, bits, err))
        return -1;
    size_t wpr = alrd_kivi_run_words((size_t)D, bits), ng = alrd_kivi_n_groups((size_t)D, G);
    for (int t = 0; t < T; t++)
        quantize_run(x + (size_t)t * (size_t)D, 1, D, G, bits, codes + (size_t)t * wpr,
                     bits == 16 ? NULL : scales + (size_t)t * ng,
                     bits == 16 ? NULL : zeros + (size_t)t * ng);
    return 0;
}

int alrd_kivi_dequantize_per_channel(const uint32_t *codes, const uint16_t *scales,
                                     const uint16_t *zeros, int T, int D, int G, int bits,
                                     float *out, alrd_error *err) {
    if (check_args("dequantize_per_channel", out, codes, scales, zeros, T, D, G, bits, err))
        return -1;
    size_t wpr = alrd_kivi_run_words((size_t)T, bits), ng = alrd_kivi_n_groups((size_t)T, G);
    for (int c = 0; c < D; c++)
        dequantize_run(codes + (size_t)c * wpr, bits == 16 ? NULL : scales + (size_t)c * ng,
                       bits == 16 ? NULL : zeros + (size_t)c * ng, T, G, bits, out + c,
                       (size_t)D);
    return 0;
}

int alrd_kivi_dequantize_per_token(const uint32_t *codes, const uint16_t *scales,
                                   const uint16_t *zeros, int T, int D, int G, int bits,
                                   float *out, alrd_error *err) {
    if (check_args("dequantize_per_token", out, codes, scales, zeros, T, D, G, bits, err))
        return -1;
    size_t wpr = alrd_kivi_run_words((size_t)D, bits), ng = alrd_kivi_n_groups((size_t)D, G);
    for (int t = 0; t < T; t++)
        dequantize_run(codes + (size_t)t * wpr, bits == 16 ? NULL : scales + (size_t)t * ng,
                       bits == 16 ? NULL : zeros + (size_t)t * ng, D, G, bits,
                       out + (size_t)t * (size_t)D, 1);
    return 0;
}
