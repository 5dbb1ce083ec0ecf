/* test_kv_cache: the mixed latent cache (runtime/kv_cache.h). After every
 * prefill and decode step the split into quantised and full-precision tokens
 * follows docs/design.md 5.4 exactly, residual tokens come back bit for bit,
 * quantised ones are exactly kivi's decode of their own chunk/token, within
 * s/2, and the byte count matches the layout. */
#include "testutil.h"

#include <math.h>

#include "../formats/tensor.h"
#include "../kernels/kivi.h"
#include "../runtime/kv_cache.h"

/* assert_memory_equal that accepts an empty range */
#define MEM_EQ(a, b, n)                                  \
    do {                                                 \
        size_t n_ = (n);                                 \
        if (n_) assert_memory_equal((a), (b), n_);       \
    } while (0)

#define G 4
#define R 16
#define NL 4
#define CTX (5 * R + 1 + 70)

/* layer 0: 2-bit K, 3-bit V (dv % G != 0: last value group shorter);
 * layer 1: 4/8 bits; layer 2: unquantised; layer 3: mixed 16-bit K, 2-bit V */
static const int DK[NL] = {24, 16, 12, 8}, DV[NL] = {22, 16, 12, 8};
static const int KB[NL] = {2, 4, 16, 16}, VB[NL] = {3, 8, 16, 2};

/* Inputs: token t of layer l is a deterministic function, so the test can
 * regenerate any token's exact input. */
static float input(int l, int t, int c, int is_v) {
    uint32_t h = (uint32_t)(l * 1000003 + t * 7919 + c * 104729 + is_v * 15485863);
    h ^= h >> 15; h *= 0x2c1b3c6du; h ^= h >> 12; h *= 0x297a2d39u; h ^= h >> 15;
    float u = (float)(h >> 8) / 16777216.0f - 0.5f;
    return u * (1.0f + (float)(c % 5)) + 0.25f * (float)(c % 3); /* channels differ in scale */
}

static void fill(float *out, int l, int t0, int n, int d, int is_v) {
    for (int t = 0; t < n; t++)
        for (int c = 0; c < d; c++) out[(size_t)t * d + c] = input(l, t0 + t, c, is_v);
}

/* Sink tokens of the caches make_cache builds (the first SINK tokens stay
 * unquantised; the rules apply to the tokens after them). */
static int SINK = 0;

static alrd_kv_cache *make_cache(int use_kivi, int rlen) {
    alrd_kv_cache_config cfg = {NL, DK, DV, KB, VB, G, rlen, use_kivi, CTX, SINK};
    alrd_kv_cache *c = NULL;
    alrd_error err = {{0}};
    if (alrd_kv_cache_create(&c, &cfg, &err)) print_message("%s\n", err.msg);
    assert_non_null(c);
    return c;
}

/* Expected quantised counts for n tokens (docs/design.md 5.4). */
static int exp_kq(int n, int use_kivi, int rlen) {
    if (use_kivi) return n - n % rlen;
    return n > rlen ? n - rlen : 0;
}
static int exp_vq(int n, int rlen) { return n > rlen ? n - rlen : 0; }

/* Checks every layer of the cache holding tokens [0, n). */
static void check_cache(const alrd_kv_cache *c, int n, int use_kivi, int rlen) {
    static float in[CTX * 32], want[CTX * 32], got[CTX * 32];
    static uint32_t codes[CTX * 32];
    static uint16_t sc[CTX * 32], zr[CTX * 32];
    size_t bytes = 0;
    for (int l = 0; l < NL; l++) {
        alrd_kv_counts k;
        assert_int_equal(alrd_kv_cache_counts(c, l, &k), 0);
        assert_int_equal(k.n_tokens, n);
        assert_int_equal(alrd_kv_cache_n_tokens(c, l), n);
        const int sk = n < SINK ? n : SINK; /* sinks, then the rules on the n - sk tokens after them */
        int kq = exp_kq(n - sk, use_kivi, rlen), vq = exp_vq(n - sk, rlen);
        assert_int_equal(k.sink, sk);
        assert_int_equal(k.k_quantized, kq);
        assert_int_equal(k.k_residual, n - sk - kq);
        assert_int_equal(k.v_quantized, vq);
        assert_int_equal(k.v_residual, n - sk - vq);
        alrd_kv_layer_view v;
        assert_int_equal(alrd_kv_cache_layer_view(c, l, &v), 0);
        for (int side = 0; side < 2; side++) {
            int d = side ? DV[l] : DK[l], bits = side ? VB[l] : KB[l], nq = side ? vq : kq;
            int per_channel = !side && use_kivi;
            fill(in, l, 0, n, d, side);
            const float *data = side ? alrd_kv_cache_values_data(c, l) : alrd_kv_cache_keys_data(c, l);
            assert_int_equal(side ? alrd_kv_cache_values(c, l, got) : alrd_kv_cache_keys(c, l, got), n);
            MEM_EQ(got, data, (size_t)n * d * sizeof(float));
            /* sinks and residual: the inputs, bit for bit */
            MEM_EQ(data, in, (size_t)sk * d * sizeof(float));
            MEM_EQ(data + (size_t)(sk + nq) * d, in + (size_t)(sk + nq) * d, (size_t)(n - sk - nq) * d * sizeof(float));
            if (bits == 16) { /* passthrough: everything exact, nothing packed */
                MEM_EQ(data, in, (size_t)n * d * sizeof(float));
                assert_null(side ? (const void *)v.v_codes : (const void *)v.k_codes);
                continue;
            }
            /* quantised part: exactly what kivi makes of the original inputs,
             * chunk by chunk (keys, KIVI) or token by token */
            int unit = per_channel ? rlen : 1;
            assert_int_equal(nq % unit, 0);
            assert_int_equal(v.sink, sk);
            /* per-channel units count the chunks after the sinks; per-token units are indexed by token */
            assert_int_equal(side ? v.v_units : v.k_units, per_channel ? nq / unit : sk + nq);
            const int u0 = per_channel ? 0 : sk;
            size_t uw = side ? v.v_unit_words : v.k_unit_words;
            size_t ug = side ? v.v_unit_groups : v.k_unit_groups;
            const uint32_t *vc = side ? v.v_codes : v.k_codes;
            const uint16_t *vs = side ? v.v_scales : v.k_scales, *vz = side ? v.v_zeros : v.k_zeros;
            for (int u = u0; u < u0 + nq / unit; u++) {
                const int t0 = per_channel ? sk + u * unit : u; /* the unit's first token */
                const float *x = in + (size_t)t0 * d;
                if (per_channel) {
                    assert_int_equal(alrd_kivi_quantize_per_channel(x, unit, d, G, bits, codes, sc, zr, NULL), 0);
                    assert_int_equal(alrd_kivi_dequantize_per_channel(codes, sc, zr, unit, d, G, bits, want, NULL), 0);
                } else {
                    assert_int_equal(alrd_kivi_quantize_per_token(x, 1, d, G, bits, codes, sc, zr, NULL), 0);
                    assert_int_equal(alrd_kivi_dequantize_per_token(codes, sc, zr, 1, d, G, bits, want, NULL), 0);
                }
                assert_memory_equal(data + (size_t)t0 * d, want, (size_t)unit * d * sizeof(float));
                assert_memory_equal(vc + u * uw, codes, uw * sizeof(uint32_t));
                assert_memory_equal(vs + u * ug, sc, ug * sizeof(uint16_t));
                assert_memory_equal(vz + u * ug, zr, ug * sizeof(uint16_t));
                /* and within s/2 of the input */
                size_t ng = per_channel ? (size_t)(unit / G) : alrd_kivi_n_groups((size_t)d, G);
                for (int t = 0; t < unit; t++)
                    for (int ch = 0; ch < d; ch++) {
                        size_t gi = per_channel ? (size_t)ch * ng + (size_t)(t / G) : (size_t)(ch / G);
                        float s = alrd_f16_to_f32(sc[gi]), o = want[(size_t)t * d + ch];
                        float e = fabsf(o - x[(size_t)t * d + ch]);
                        assert_true(e <= 0.5f * s + (nextafterf(fabsf(o), INFINITY) - fabsf(o)));
                        assert_true(s > 0.0f);
                    }
            }
            /* a quantised token is never the input (with 2..8 bits on this data) */
            if (nq > 0) assert_memory_not_equal(data + (size_t)sk * d, in + (size_t)sk * d, (size_t)nq * d * sizeof(float));
        }
        /* the sinks count as fp16 rows */
        bytes += alrd_kv_cache_layer_bytes(DK[l], DV[l], KB[l], VB[l], G, rlen, use_kivi, n - sk) +
                 2 * (size_t)sk * (size_t)(DK[l] + DV[l]);
    }
    assert_int_equal(alrd_kv_cache_bytes(c), bytes);
}

/* prefill(L) for several L, then decode one token at a time to CTX. */
static void run_scenarios(int use_kivi, int rlen) {
    static float K[CTX * 32], V[CTX * 32];
    const int Ls[] = {0, 1, 3, rlen - 1, rlen, rlen + 1, rlen + 3, 2 * rlen, 5 * rlen + 1};
    alrd_kv_cache *c = make_cache(use_kivi, rlen);
    for (size_t i = 0; i < sizeof Ls / sizeof *Ls; i++) {
        int L = Ls[i];
        if (L < 0) continue;
        alrd_kv_cache_reset(c);
        check_cache(c, 0, use_kivi, rlen);
        for (int l = 0; l < NL; l++) {
            fill(K, l, 0, L, DK[l], 0);
            fill(V, l, 0, L, DV[l], 1);
            assert_int_equal(alrd_kv_cache_prefill(c, l, K, V, L, NULL), 0);
        }
        check_cache(c, L, use_kivi, rlen);
        int last = L < 2 * rlen ? CTX : L + 2 * rlen + 3; /* long decode runs for a few L */
        for (int n = L; n < last; n++) {
            for (int l = 0; l < NL; l++) {
                fill(K, l, n, 1, DK[l], 0);
                fill(V, l, n, 1, DV[l], 1);
                assert_int_equal(alrd_kv_cache_append(c, l, K, V, NULL), 0);
            }
            check_cache(c, n + 1, use_kivi, rlen);
        }
    }
    alrd_kv_cache_free(c);
}

/* Five sink tokens: KIVI chunks start after them, per-token units keep their
 * token index, the sinks come back bit for bit and count as fp16. */
static void test_sink_tokens(void **state) {
    (void)state;
    SINK = 5;
    run_scenarios(1, R);
    run_scenarios(0, R);
    SINK = 0;
}

static void test_sink_errors(void **state) {
    (void)state;
    alrd_kv_cache *c = NULL;
    alrd_error err = {{0}};
    alrd_kv_cache_config cfg = {NL, DK, DV, KB, VB, G, R, 1, CTX, -1};
    assert_int_equal(alrd_kv_cache_create(&c, &cfg, &err), -1);
    assert_null(c);
    assert_non_null(strstr(err.msg, "sink_tokens"));
    cfg.sink_tokens = CTX + 1;
    assert_int_equal(alrd_kv_cache_create(&c, &cfg, &err), -1);
    assert_non_null(strstr(err.msg, "sink_tokens"));
    cfg.sink_tokens = CTX; /* every token a sink: nothing is ever quantised */
    assert_int_equal(alrd_kv_cache_create(&c, &cfg, &err), 0);
    alrd_kv_cache_free(c);
}

static void test_kivi_prefill_and_decode(void **state) {
    (void)state;
    run_scenarios(1, R);
}

static void test_kivi_residual_equals_group(void **state) {
    (void)state;
    run_scenarios(1, G); /* R = G: one group per chunk */
}

static void test_per_token_both(void **state) {
    (void)state;
    run_scenarios(0, R);
    run_scenarios(0, 0); /* no residual: every token quantised at once */
}

/* Hand-computed sizes for layer 0 (dk 24 @2 bits, dv 22 @3 bits, G 4, R 16) at n = 33:
 *   keys:   2 chunks x (24 ch x 1 word x 4 B + 24 x 4 groups x 4 B) = 2 x 480 = 960,
 *           residual 1 token x 24 x 2 B = 48
 *   values: 17 tokens x (ceil(22/10) = 3 words x 4 B + 6 groups x 4 B) = 17 x 36 = 612,
 *           residual 16 x 22 x 2 B = 704                          total 2324 */
static void test_bytes_hand_computed(void **state) {
    (void)state;
    assert_int_equal(alrd_kv_cache_layer_bytes(24, 22, 2, 3, 4, 16, 1, 33), 960 + 48 + 612 + 704);
    /* per token (use_kivi 0): keys 17 x (2 words x 4 + 6 groups x 4) = 17 x 32 = 544, +16x24x2 */
    assert_int_equal(alrd_kv_cache_layer_bytes(24, 22, 2, 3, 4, 16, 0, 33), 544 + 768 + 612 + 704);
    /* 16 bits: 2 bytes per element whatever the split */
    assert_int_equal(alrd_kv_cache_layer_bytes(24, 22, 16, 16, 4, 16, 1, 33), 33 * 46 * 2);
    /* fewer tokens than R: all residual */
    assert_int_equal(alrd_kv_cache_layer_bytes(24, 22, 2, 3, 4, 16, 1, 5), 5 * 46 * 2);
    /* SmolLM2-like: dk = dv = 192 (3 kv heads x 64), 4 bits, G 32, R 128, ctx 4096:
     * keys 32 chunks x (192 x 16 words x 4 + 192 x 4 x 4) = 32 x 15360; values 3968 x
     * (24 x 4 + 6 x 4) = 3968 x 120; residual values 128 x 192 x 2 */
    double bpt = alrd_kv_cache_bytes_per_token(192, 192, 4, 4, 32, 128, 1, 4096);
    assert_true(bpt == (32.0 * 15360 + 3968.0 * 120 + 128.0 * 384) / 4096.0);
    assert_true(bpt < 2.0 * 384 / 3.0); /* better than 3x smaller than fp16 */
    assert_int_equal(alrd_kv_cache_layer_bytes(24, 22, 5, 3, 4, 16, 1, 33), 0);
    assert_int_equal(alrd_kv_cache_layer_bytes(24, 22, 2, 3, 4, 6, 1, 33), 0); /* R % G */

    /* the live cache agrees: layer 0 alone after 33 tokens */
    alrd_kv_cache *c = make_cache(1, R);
    static float K[64 * 32], V[64 * 32];
    fill(K, 0, 0, 33, DK[0], 0);
    fill(V, 0, 0, 33, DV[0], 1);
    assert_int_equal(alrd_kv_cache_prefill(c, 0, K, V, 33, NULL), 0);
    assert_int_equal(alrd_kv_cache_bytes(c), 2324);
    alrd_kv_cache_free(c);
}

/* The state depends on the token sequence only: prefill in pieces equals
 * prefill in one go equals token-by-token appends. */
static void test_prefill_pieces_equal(void **state) {
    (void)state;
    static float K[CTX * 32], V[CTX * 32];
    static float ref_k[NL][CTX * 32], ref_v[NL][CTX * 32];
    alrd_kv_cache *c = make_cache(1, R);
    const int n = 3 * R + 5;
    for (int l = 0; l < NL; l++) {
        fill(K, l, 0, n, DK[l], 0);
        fill(V, l, 0, n, DV[l], 1);
        assert_int_equal(alrd_kv_cache_prefill(c, l, K, V, n, NULL), 0);
        alrd_kv_cache_keys(c, l, ref_k[l]);
        alrd_kv_cache_values(c, l, ref_v[l]);
    }
    const int cuts[][3] = {{7, R + 2, 3 * R + 5}, {R, 2 * R, 3 * R + 5}, {1, 2, 3 * R + 5}};
    for (int k = 0; k < 3; k++) {
        alrd_kv_cache_reset(c);
        for (int l = 0; l < NL; l++) {
            int t0 = 0;
            for (int p = 0; p < 3; p++) {
                int m = cuts[k][p] - t0;
                fill(K, l, t0, m, DK[l], 0);
                fill(V, l, t0, m, DV[l], 1);
                assert_int_equal(alrd_kv_cache_prefill(c, l, K, V, m, NULL), 0);
                t0 += m;
            }
            assert_memory_equal(alrd_kv_cache_keys_data(c, l), ref_k[l], (size_t)n * DK[l] * sizeof(float));
            assert_memory_equal(alrd_kv_cache_values_data(c, l), ref_v[l], (size_t)n * DV[l] * sizeof(float));
        }
    }
    alrd_kv_cache_free(c);
}

static void test_errors(void **state) {
    (void)state;
    alrd_error err = {{0}};
    alrd_kv_cache *c = NULL;
    int bad_bits[NL] = {2, 5, 4, 4};
    alrd_kv_cache_config cfg = {NL, DK, DV, KB, VB, G, 6, 1, CTX, 0}; /* R % G != 0 */
    assert_int_equal(alrd_kv_cache_create(&c, &cfg, &err), -1);
    assert_null(c);
    assert_non_null(strstr(err.msg, "residual_length"));
    cfg.residual_length = 0; /* KIVI keys need R >= G */
    assert_int_equal(alrd_kv_cache_create(&c, &cfg, &err), -1);
    cfg.residual_length = R;
    cfg.v_bits = bad_bits;
    assert_int_equal(alrd_kv_cache_create(&c, &cfg, &err), -1);
    assert_non_null(strstr(err.msg, "layer 1"));
    cfg.v_bits = VB;
    cfg.max_ctx = 0;
    assert_int_equal(alrd_kv_cache_create(&c, &cfg, &err), -1);

    /* capacity: a prefill past max_ctx fails and changes nothing */
    cfg.max_ctx = 2 * R + 3;
    assert_int_equal(alrd_kv_cache_create(&c, &cfg, &err), 0);
    static float K[64 * 32], V[64 * 32];
    fill(K, 0, 0, 2 * R + 3, DK[0], 0);
    fill(V, 0, 0, 2 * R + 3, DV[0], 1);
    assert_int_equal(alrd_kv_cache_prefill(c, 0, K, V, 2 * R, NULL), 0);
    size_t bytes = alrd_kv_cache_bytes(c);
    assert_int_equal(alrd_kv_cache_prefill(c, 0, K, V, 4, &err), -1);
    assert_non_null(strstr(err.msg, "max_ctx"));
    assert_int_equal(alrd_kv_cache_n_tokens(c, 0), 2 * R);
    assert_int_equal(alrd_kv_cache_bytes(c), bytes);
    assert_int_equal(alrd_kv_cache_prefill(c, 0, K + 2 * R * DK[0], V + 2 * R * DV[0], 3, NULL), 0);
    assert_int_equal(alrd_kv_cache_append(c, 0, K, V, &err), -1);
    assert_int_equal(alrd_kv_cache_prefill(c, NL, K, V, 1, &err), -1);
    assert_non_null(strstr(err.msg, "layer"));
    assert_int_equal(alrd_kv_cache_n_tokens(c, -1), -1);
    assert_null(alrd_kv_cache_keys_data(c, NL));
    alrd_kv_cache_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kivi_prefill_and_decode),
        cmocka_unit_test(test_kivi_residual_equals_group),
        cmocka_unit_test(test_per_token_both),
        cmocka_unit_test(test_bytes_hand_computed),
        cmocka_unit_test(test_prefill_pieces_equal),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_sink_tokens),
        cmocka_unit_test(test_sink_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
