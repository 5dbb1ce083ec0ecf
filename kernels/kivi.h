/* kivi: asymmetric min/max quantisation of KV-cache blocks (docs/design.md 5.4),
 * the CPU reference. Same semantics as the seed's kivi_quantize_per_channel /
 * kivi_quantize_per_token; a GPU kernel reading this layout must decode to
 * the same floats.
 *
 * Group parameters (bits b in {2,3,4,8}, n = 2^b - 1):
 *   zero  z = fp16 rounded DOWN from min(group)          (z <= min)
 *   scale s = smallest fp16 with z + n*s >= max(group)    (rounded UP)
 *   q     = clamp(round((x - z) / s), 0, n)               (q = 0 when s == 0)
 *   x^    = (float)q * s + z   in fp32 (q*s is exact, one rounding in the add)
 * Rounding z down and s up before quantising (instead of to nearest) keeps
 * every element inside [z, z + n*s], so |x^ - x| <= s/2 + ulp(x^)/2 for every
 * element, with s the scale actually stored. A constant group whose value is
 * representable in fp16 gets s = 0 and decodes exactly; any other constant
 * group gets a tiny s (a fraction of one fp16 ulp). Nothing produces NaN:
 * non-finite or out-of-fp16-range inputs saturate z and s at +-65504 (the
 * error bound then no longer holds; latents are far inside that range).
 * bits = 16 is the unquantised passthrough: the "code" is the element's fp16
 * bit pattern (alrd_f32_to_f16, nearest even), there are no scales or zeros.
 *
 * Packing: a run of codes is packed LSB-first into 32-bit words,
 * cpw = 32/b codes per word (16, 10, 8, 4, 2 for b = 2, 3, 4, 8, 16): code i
 * of the run sits in word i/cpw at bit (i%cpw)*b. 3-bit codes do not straddle
 * words; the top 2 bits of each word are 0 (as KIVI's own packing). Every run
 * starts on a word boundary, so a run of n codes takes ceil(n/cpw) words and
 * unused trailing slots are 0.
 *
 * Layouts (x is a row-major block [T][D]: T tokens, D channels):
 *   per channel (keys):  a group is G consecutive tokens of one channel. A run
 *     is one channel's T codes: codes[c * wpr + w], wpr = ceil(T/cpw).
 *     scales/zeros [D][ng], ng = ceil(T/G), entry c*ng + g; if G does not
 *     divide T the last group of each channel is shorter (T - (ng-1)*G).
 *   per token (values):  a group is G consecutive channels of one token. A run
 *     is one token's D codes: codes[t * wpr + w], wpr = ceil(D/cpw).
 *     scales/zeros [T][ng], ng = ceil(D/G); if G does not divide D the last
 *     group of each token is shorter (D - (ng-1)*G channels).
 * Both put a GPU warp's reads on consecutive words: keys channel-major within
 * a block (a thread per channel walks its tokens), values token-major.
 *
 * Buffers are owned by the caller; nothing here allocates. */
#ifndef ALRD_KIVI_H
#define ALRD_KIVI_H

#include <stddef.h>
#include <stdint.h>
#include "../formats/io.h"

/* 1 for 2, 3, 4, 8, 16; 0 otherwise. */
int alrd_kivi_bits_ok(int bits);
/* Codes per 32-bit word: 32/bits (0 for unsupported bits). */
int alrd_kivi_codes_per_word(int bits);
/* Words holding a run of n codes: ceil(n / (32/bits)). */
size_t alrd_kivi_run_words(size_t n, int bits);
/* Groups covering n elements: ceil(n / G). */
size_t alrd_kivi_n_groups(size_t n, int G);

/* Exact byte counts of codes + scales + zeros (2+2 bytes per group, none
 * for bits 16) of a [T][D] block in each layout. 0 for bad arguments. */
size_t alrd_kivi_bytes_per_channel(size_t T, size_t D, int G, int bits);
size_t alrd_kivi_bytes_per_token(size_t T, size_t D, int G, int bits);

/* Packs n codes (each < 2^bits) into ceil(n/cpw) words, padding with 0. */
void alrd_kivi_pack(const uint16_t *codes, size_t n, int bits, uint32_t *words);
/* Inverse of alrd_kivi_pack. */
void alrd_kivi_unpack(const uint32_t *words, size_t n, int bits, uint16_t *codes);

/* Scale and zero (fp16 bit patterns) of a group with the given min and max,
 * as described above (bits 2..8). */
void alrd_kivi_group_params(float mn, float mx, int bits, uint16_t *scale, uint16_t *zero);

/* Directed rounding to fp16 (bit pattern): the largest fp16 <= x, the
 * smallest fp16 >= x; saturating at +-65504, NaN gives 0. fp16 -> fp32 is
 * alrd_f16_to_f32 (formats/tensor.h). */
uint16_t alrd_kivi_f16_round_down(double x);
uint16_t alrd_kivi_f16_round_up(double x);

/* Quantise x [T][D] (row-major, rows D floats apart). codes holds
 * D*ceil(T/cpw) (per channel) or T*ceil(D/cpw) (per token) words; scales and
 * zeros hold D*ceil(T/G) or T*ceil(D/G) entries and may be NULL for bits 16.
 * Returns 0, or -1 with err filled for bad arguments. */
int alrd_kivi_quantize_per_channel(const float *x, int T, int D, int G, int bits,
                                   uint32_t *codes, uint16_t *scales, uint16_t *zeros,
                                   alrd_error *err);
int alrd_kivi_quantize_per_token(const float *x, int T, int D, int G, int bits,
                                 uint32_t *codes, uint16_t *scales, uint16_t *zeros,
                                 alrd_error *err);

/* Decode into out [T][D]. Same arguments as the matching quantise. */
int alrd_kivi_dequantize_per_channel(const uint32_t *codes, const uint16_t *scales,
                                     const uint16_t *zeros, int T, int D, int G, int bits,
                                     float *out, alrd_error *err);
int alrd_kivi_dequantize_per_token(const uint32_t *codes, const uint16_t *scales,
                                   const uint16_t *zeros, int T, int D, int G, int bits,
                                   float *out, alrd_error *err);

#endif
