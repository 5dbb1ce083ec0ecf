/* test_qerr: quantisation-loss tables against a brute-force computation on
 * the tiny synthetic model; residual fraction, byte split and joint
 * allocation on exact cases. */
#include "testutil.h"
#include "tinymodel.h"

#include <math.h>

#include "../calib/compress.h"
#include "../calib/qerr.h"
#include "../formats/tensor.h"
#include "../kernels/kivi.h"
#include "../runtime/kv_cache.h"

typedef struct {
    alrd_model m;
    alrd_calib *c;
    alrd_decomp *d[2]; /* group_heads 1 (two groups of 16) and 0 (one group of 32) */
    int32_t tok[4 * 40];
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    char path[512];
    snprintf(path, sizeof path, "%s/qerr-tiny.gguf", alrd_test_tmpdir());
    tiny_opts o = tiny_defaults(); /* 2 layers, hidden 64, 4 heads, 2 KV heads of 16 */
    if (!f || tiny_model_write(path, &o)) return -1;
    alrd_error err;
    if (alrd_model_open(&f->m, path, &err)) { fprintf(stderr, "%s\n", err.msg); return -1; }
    uint64_t s = 7;
    for (int i = 0; i < 160; i++) f->tok[i] = (int32_t)(tiny_lcg(&s) % 256);
    /* 4 samples of 40 tokens (160 rows: a full-rank Gram of the 64 dims);
     * probe = the first 2 of them (2 sequences of 40) */
    if (alrd_calib_new(&f->c, &f->m, f->tok, 4, 40, 80, 1, 0, &err) ||
        alrd_decomp_new(&f->d[0], f->c, 1, 1, &err) || alrd_decomp_new(&f->d[1], f->c, 1, 0, &err) ||
        alrd_decomp_sensitivities(f->d[1], 8, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    alrd_decomp_free(f->d[0]);
    alrd_decomp_free(f->d[1]);
    alrd_calib_free(f->c);
    alrd_model_free(&f->m);
    free(f);
    return 0;
}

/* The KIVI quantiser written out from docs/design.md 5.4 / kernels/kivi.h. */
static float bf_quant(const float *x, int n, int stride, int bits, float *out) {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++) {
        float v = x[(size_t)i * stride];
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    uint16_t s16, z16;
    alrd_kivi_group_params(mn, mx, bits, &s16, &z16);
    float s = alrd_f16_to_f32(s16), z = alrd_f16_to_f32(z16);
    double nmax = (1 << bits) - 1;
    for (int i = 0; i < n; i++) {
        double q = s == 0 ? 0 : floor(((double)x[(size_t)i * stride] - z) / s + 0.5);
        q = q < 0 ? 0 : q > nmax ? nmax : q;
        out[(size_t)i * stride] = (float)q * s + z;
    }
    return 0;
}

/* sum over probe tokens of ||A (l - q(l))||^2 * rows / P, all in loops. */
static double brute(fixture *f, const alrd_decomp *d, int module, int r, int bits, int G, int hadamard,
                    double *core) {
    const alrd_config *cf = &f->m.cfg;
    int L = cf->n_layers, H = cf->hidden, l = module / 2, v = module % 2;
    int ng = r ? alrd_decomp_n_groups(d) : 1, gh = r ? alrd_decomp_full_rank(d) : cf->n_kv_heads * cf->head_dim;
    int w = r ? r : gh, D = ng * w;
    float *fac[4][8] = {{0}};
    int rk[8];
    for (int i = 0; i < L; i++) rk[i] = r;
    alrd_error err;
    if (r) assert_int_equal(alrd_decomp_factors(d, rk, rk, hadamard, 0x5eed, fac[0], fac[1], fac[2], fac[3], &err), 0);
    const float *A = r ? fac[v ? 2 : 0][l] : NULL, *B = r ? fac[v ? 3 : 1][l] : NULL;
    int np, n_seq, seq_len;
    const float *h = alrd_calib_probe_inputs(f->c, l, &np);
    alrd_calib_probe_ids(f->c, &n_seq, &seq_len);
    assert_int_equal(np, 80);
    assert_int_equal(seq_len, 40);
    float *lat = malloc(sizeof(float) * np * D), *lq = malloc(sizeof(float) * np * D);
    for (int t = 0; t < np; t++) {
        double ss = 0, x[64];
        for (int k = 0; k < H; k++) ss += (double)h[t * H + k] * h[t * H + k];
        double inv = 1.0 / sqrt(ss / H + cf->rms_eps);
        for (int k = 0; k < H; k++) x[k] = h[t * H + k] * inv * f->m.layers[l].attn_norm[k];
        for (int j = 0; j < D; j++) {
            double a = 0;
            const float *row = r ? B + (size_t)j * H : (v ? f->m.layers[l].wv : f->m.layers[l].wk) + (size_t)j * H;
            for (int k = 0; k < H; k++) a += row[k] * x[k];
            lat[t * D + j] = (float)a;
        }
    }
    if (bits == 16) memcpy(lq, lat, sizeof(float) * np * D);
    else if (!v) /* keys: per channel, G tokens within one probe sequence */
        for (int s = 0; s < n_seq; s++)
            for (int j = 0; j < D; j++)
                for (int t0 = 0; t0 < seq_len; t0 += G) {
                    int n = seq_len - t0 < G ? seq_len - t0 : G;
                    size_t o = (size_t)(s * seq_len + t0) * D + j;
                    bf_quant(lat + o, n, D, bits, lq + o);
                }
    else /* values: per token, G channels across the whole cached vector */
        for (int t = 0; t < np; t++)
            for (int j0 = 0; j0 < D; j0 += G) {
                int n = D - j0 < G ? D - j0 : G;
                bf_quant(lat + (size_t)t * D + j0, n, 1, bits, lq + (size_t)t * D + j0);
            }
    double loss = 0;
    for (int t = 0; t < np; t++)
        for (int g = 0; g < ng; g++)
            for (int i = 0; i < gh; i++) {
                double y = 0;
                for (int k = 0; k < w; k++) {
                    double e = (double)lat[t * D + g * w + k] - lq[t * D + g * w + k];
                    y += (r ? A[((size_t)g * gh + i) * r + k] : (i == k)) * e;
                }
                loss += y * y;
            }
    /* the core on exactly these latents (no float noise from computing them) */
    assert_int_equal(alrd_qerr_latent_loss(lat, n_seq, seq_len, ng, w, A, gh, G, bits, !v, core, &err), 0);
    *core *= (double)alrd_calib_rows(f->c) / np;
    for (int a = 0; a < 4; a++)
        for (int i = 0; i < L; i++) free(fac[a][i]);
    free(lat);
    free(lq);
    return loss * (double)alrd_calib_rows(f->c) / np;
}

static void check_tables(fixture *f, int di, int hadamard) {
    const int bits[] = {2, 3, 4, 8, 16}, G = 6; /* key groups 6,6,...,4 tokens; value groups straddle heads */
    alrd_qerr_opts o = {.group_size = G, .use_kivi = 1, .hadamard = hadamard, .seed = 0x5eed, .step = 8,
                        .bits = bits, .n_bits = 5};
    alrd_qerr *q;
    alrd_error err;
    assert_int_equal(alrd_qerr_new(&q, f->c, f->d[di], &o, &err), 0);
    assert_true(alrd_qerr_scale(q) == 2.0); /* 160 calibration rows, 80 probe rows */
    int gh = alrd_decomp_full_rank(f->d[di]);
    for (int m = 0; m < 4; m++)
        for (int r = 0; r <= gh; r += 8)
            for (int b = 0; b < 5; b++) {
                double core, got = alrd_qerr_get(q, m, r, bits[b]);
                double want = brute(f, f->d[di], m, r, bits[b], G, hadamard, &core);
                if (bits[b] == 16) { assert_true(got == 0 && want == 0 && core == 0); continue; }
                assert_true(want > 0);
                /* same latents: grouping, quantiser, lift and scale agree to rounding */
                if (fabs(core - want) > 1e-6 * want)
                    fail_msg("module %d rank %d bits %d hadamard %d: core %.12g, brute force %.12g", m, r, bits[b],
                             hadamard, core, want);
                /* latents computed in fp32 by the table vs fp64 here: a group whose
                 * min/max moves across an fp16 step shifts its grid (8 bits: ~1e-3) */
                double tol = bits[b] == 8 ? 3e-3 : 1e-4;
                if (fabs(got - want) > tol * want)
                    fail_msg("module %d rank %d bits %d hadamard %d: qerr %.9g, brute force %.9g", m, r, bits[b],
                             hadamard, got, want);
            }
    /* more bits, less loss; off-grid requests are NaN */
    assert_true(alrd_qerr_get(q, 1, 8, 2) > alrd_qerr_get(q, 1, 8, 3));
    assert_true(alrd_qerr_get(q, 1, 8, 4) > alrd_qerr_get(q, 1, 8, 8));
    assert_true(isnan(alrd_qerr_get(q, 1, 12, 4)));
    assert_true(isnan(alrd_qerr_get(q, 1, 8, 5)));
    assert_true(isnan(alrd_qerr_get(q, 4, 8, 4)));
    alrd_qerr_free(q);
}

static void test_tables_match_brute_force_groups(void **state) { check_tables(*state, 0, 0); }
static void test_tables_match_brute_force_layer(void **state) { check_tables(*state, 1, 0); }
static void test_tables_match_brute_force_hadamard(void **state) {
    check_tables(*state, 0, 1);
    check_tables(*state, 1, 1);
}

/* Hadamard changes the loss (the rotation spreads the latent), and the
 * rank-0 entries (no decomposition) do not depend on it. */
static void test_hadamard_changes_loss(void **state) {
    fixture *f = *state;
    const int bits[] = {2};
    alrd_qerr_opts o = {.group_size = 8, .use_kivi = 1, .seed = 0x5eed, .step = 8, .bits = bits, .n_bits = 1};
    alrd_qerr *q0, *q1;
    alrd_error err;
    assert_int_equal(alrd_qerr_new(&q0, f->c, f->d[1], &o, &err), 0);
    o.hadamard = 1;
    assert_int_equal(alrd_qerr_new(&q1, f->c, f->d[1], &o, &err), 0);
    assert_true(alrd_qerr_get(q0, 0, 0, 2) == alrd_qerr_get(q1, 0, 0, 2));
    assert_true(alrd_qerr_get(q0, 0, 16, 2) != alrd_qerr_get(q1, 0, 16, 2));
    alrd_qerr_free(q0);
    alrd_qerr_free(q1);
}

static void test_latent_loss_by_hand(void **state) {
    (void)state;
    /* one sequence of 2 tokens, 1 group of 2 dims, 2 bits, per token, G = 2:
     * token 0 = (0, 3): z = 0, s = 1, exact; token 1 = (0, 1.5): s = 0.5, exact */
    float lat[] = {0, 3, 0, 1.5f};
    double loss;
    alrd_error err;
    assert_int_equal(alrd_qerr_latent_loss(lat, 1, 2, 1, 2, NULL, 2, 2, 2, 0, &loss, &err), 0);
    assert_true(loss == 0);
    float lat2[] = {0, 1.0f, 0.2f, 0};
    assert_int_equal(alrd_qerr_latent_loss(lat2, 1, 1, 1, 4, NULL, 4, 4, 2, 0, &loss, &err), 0);
    /* z = 0, s = fp16 up(1/3) = 0.333496..., 0.2 -> code 1 -> 0.333496; 1.0 -> code 3 -> 1.000488 */
    double s = alrd_f16_to_f32(alrd_kivi_f16_round_up(1.0 / 3));
    double e1 = 1.0 - (float)(3 * s), e2 = 0.2f - (float)s;
    assert_true(fabs(loss - (e1 * e1 + e2 * e2)) < 1e-12);
    /* A = 2 I doubles the error, 4x the loss */
    float A[16] = {2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2};
    double l2;
    assert_int_equal(alrd_qerr_latent_loss(lat2, 1, 1, 1, 4, A, 4, 4, 2, 0, &l2, &err), 0);
    assert_true(fabs(l2 - 4 * loss) < 1e-12);
    assert_int_equal(alrd_qerr_latent_loss(lat2, 1, 1, 1, 4, NULL, 4, 4, 5, 0, &l2, &err), -1);
}

static void test_quantized_fraction(void **state) {
    (void)state;
    /* keys, R = 4, n = 1..8: 0, 0, 0, 1, 4/5, 4/6, 4/7, 1 */
    double k = (1 + 0.8 + 4.0 / 6 + 4.0 / 7 + 1) / 8;
    assert_true(fabs(alrd_qerr_quantized_fraction(0, 4, 1, 1, 8) - k) < 1e-15);
    /* values, R = 4: 0, 0, 0, 0, 1/5, 2/6, 3/7, 4/8 */
    double v = (0.2 + 2.0 / 6 + 3.0 / 7 + 0.5) / 8;
    assert_true(fabs(alrd_qerr_quantized_fraction(1, 4, 1, 1, 8) - v) < 1e-15);
    /* keys without KIVI follow the values' rule */
    assert_true(fabs(alrd_qerr_quantized_fraction(0, 4, 0, 1, 8) - v) < 1e-15);
    assert_true(alrd_qerr_quantized_fraction(1, 0, 1, 1, 8) == 1.0);
}

static void test_module_bytes_split_layer(void **state) {
    (void)state;
    const int ctxs[] = {1, 100, 512, 4096};
    for (int i = 0; i < 4; i++)
        for (int kivi = 0; kivi < 2; kivi++) {
            double k = alrd_qerr_module_bytes(0, 48, 4, 32, 128, kivi, ctxs[i]);
            double v = alrd_qerr_module_bytes(1, 40, 2, 32, 128, kivi, ctxs[i]);
            double layer = alrd_kv_cache_bytes_per_token(48, 40, 4, 2, 32, 128, kivi, ctxs[i]);
            assert_true(fabs(k + v - layer) < 1e-9 * layer);
        }
    /* 16 bits: 2 bytes per element */
    assert_true(alrd_qerr_module_bytes(0, 64, 16, 32, 128, 1, 4096) == 128.0);
    /* 4-bit keys at 4096: 4096 tokens, R = 128: 32 chunks of 64 channels x (128/8 words*4 B +
     * 4 groups * 4 B) = 64 * (64 + 16) per 128 tokens -> 40 B/token */
    assert_true(alrd_qerr_module_bytes(0, 64, 4, 32, 128, 1, 4096) == 40.0);
}

static void test_joint_allocation(void **state) {
    fixture *f = *state;
    const int bits[] = {2, 4, 16};
    alrd_qerr_opts o = {.group_size = 8, .use_kivi = 1, .seed = 0x5eed, .step = 8, .bits = bits, .n_bits = 3};
    alrd_qerr *q;
    alrd_error err;
    assert_int_equal(alrd_qerr_new(&q, f->c, f->d[1], &o, &err), 0);
    alrd_joint_opts jo = {.ctx = 64, .group_size = 8, .residual = 16, .use_kivi = 1, .step = 8, .bits = bits,
                          .n_bits = 3, .frac_k = 1, .frac_v = 1};
    int kr[2], vr[2], kb[2], vb[2];
    double pt, pq;
    /* the most any choice costs: everything at rank 32, 16 bits -> that choice, no loss */
    jo.budget_bytes = 2 * alrd_kv_cache_bytes_per_token(32, 32, 16, 16, 8, 16, 1, 64);
    assert_int_equal(alrd_qerr_allocate(q, f->d[1], &jo, kr, vr, kb, vb, &pt, &pq, &err), 0);
    for (int l = 0; l < 2; l++) {
        assert_int_equal(kr[l], 32); assert_int_equal(vr[l], 32);
        assert_int_equal(kb[l], 16); assert_int_equal(vb[l], 16);
    }
    assert_true(pq == 0);
    /* the least: rank 8, 2 bits everywhere -- except that 8 values of a token
     * take one 32-bit word at 2 and at 4 bits, so 4-bit values come free */
    assert_true(alrd_qerr_module_bytes(1, 8, 2, 8, 16, 1, 64) == alrd_qerr_module_bytes(1, 8, 4, 8, 16, 1, 64));
    assert_true(alrd_qerr_module_bytes(0, 8, 2, 8, 16, 1, 64) < alrd_qerr_module_bytes(0, 8, 4, 8, 16, 1, 64));
    jo.budget_bytes = 2 * alrd_kv_cache_bytes_per_token(8, 8, 2, 2, 8, 16, 1, 64);
    assert_int_equal(alrd_qerr_allocate(q, f->d[1], &jo, kr, vr, kb, vb, &pt, &pq, &err), 0);
    for (int l = 0; l < 2; l++) {
        assert_int_equal(kr[l], 8); assert_int_equal(vr[l], 8);
        assert_int_equal(kb[l], 2); assert_int_equal(vb[l], 4);
    }
    double pmin = 0;
    for (int m = 0; m < 4; m++)
        pmin += alrd_decomp_sensitivity(f->d[1], m) * alrd_qerr_get(q, m, 8, m % 2 ? 4 : 2);
    assert_true(fabs(pq - pmin) <= 1e-12 * pmin);
    /* in between: within the budget, and the prediction lower than at the minimum */
    double mid = 2 * alrd_kv_cache_bytes_per_token(16, 16, 4, 4, 8, 16, 1, 64);
    jo.budget_bytes = mid;
    double pt0 = pt, pq0 = pq;
    assert_int_equal(alrd_qerr_allocate(q, f->d[1], &jo, kr, vr, kb, vb, &pt, &pq, &err), 0);
    double used = 0;
    for (int l = 0; l < 2; l++) used += alrd_kv_cache_bytes_per_token(kr[l], vr[l], kb[l], vb[l], 8, 16, 1, 64);
    assert_true(used <= mid * (1 + 1e-12));
    assert_true(pt + pq < pt0 + pq0);
    /* below the minimum: an error */
    jo.budget_bytes = 10;
    assert_int_equal(alrd_qerr_allocate(q, f->d[1], &jo, kr, vr, kb, vb, &pt, &pq, &err), -1);
    /* ranks off the table's grid: an error naming the entry, not a silent NaN */
    jo.budget_bytes = mid;
    jo.step = 4;
    assert_int_equal(alrd_qerr_allocate(q, f->d[1], &jo, kr, vr, kb, vb, &pt, &pq, &err), -1);
    alrd_qerr_free(q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_latent_loss_by_hand),
        cmocka_unit_test(test_quantized_fraction),
        cmocka_unit_test(test_module_bytes_split_layer),
        cmocka_unit_test_setup_teardown(test_tables_match_brute_force_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tables_match_brute_force_layer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tables_match_brute_force_hadamard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hadamard_changes_loss, setup, teardown),
        cmocka_unit_test_setup_teardown(test_joint_allocation, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
