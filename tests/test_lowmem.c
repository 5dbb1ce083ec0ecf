/* test_lowmem: the memory-bounded compressor (issue #3) computes exactly what
 * the in-memory one did. A lazy model (one layer materialized at a time)
 * gives bit-identical logits, overrides, calibration statistics,
 * decompositions, sensitivities and measures to an eager one; the streaming
 * writer gives byte-identical files to packing everything in memory. */
#include "testutil.h"

#include <dirent.h>
#include <sys/stat.h>

#include "../calib/compress.h"
#include "../formats/alrd_file.h"
#include "../runtime/context.h"
#include "../runtime/model.h"

typedef struct {
    alrd_source src;
    alrd_model eager, lazy;
} models;

static void open_models(models *M) {
    alrd_error err;
    assert_int_equal(alrd_source_open(&M->src, ALRD_TEST_MODEL, &err), 0);
    assert_int_equal(alrd_model_load(&M->eager, &M->src, &err), 0);
    assert_int_equal(alrd_model_load_opts(&M->lazy, &M->src, ALRD_MODEL_LAZY, &err), 0);
}

static void close_models(models *M) {
    alrd_model_free(&M->lazy);
    alrd_model_free(&M->eager);
    alrd_source_close(&M->src);
}

/* Prefill of 24 tokens then 3 decode steps: every logit. */
static float *run_logits(const alrd_model *m, const int32_t *tok) {
    const int V = m->cfg.vocab_size;
    float *lg = malloc(sizeof(float) * 27 * V);
    assert_non_null(lg);
    alrd_ctx *c;
    alrd_error err;
    assert_int_equal(alrd_ctx_new(&c, m, 32, 32, NULL, &err), 0);
    assert_int_equal(alrd_ctx_forward(c, tok, 24, lg, 1, &err), 0);
    for (int t = 24; t < 27; t++) assert_int_equal(alrd_ctx_forward(c, tok + t, 1, lg + (size_t)t * V, 0, &err), 0);
    alrd_ctx_free(c);
    return lg;
}

static void test_lazy_forward(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    models M;
    open_models(&M);
    const alrd_config *c = &M.lazy.cfg;
    const size_t V = c->vocab_size, wn = (size_t)c->n_kv_heads * c->head_dim * c->hidden;
    /* one layer at a time: no matrix is resident per layer, layers share one slot */
    alrd_error err;
    alrd_layer v0, v1;
    for (int l = 0; l < c->n_layers; l++) {
        assert_null(M.lazy.layers[l].wq);
        assert_null(M.lazy.layers[l].wk);
        assert_null(M.lazy.layers[l].w_down);
    }
    const alrd_layer *L0 = alrd_model_layer(&M.lazy, 0, &v0, &err);
    assert_non_null(L0);
    const float *wq0 = L0->wq;
    assert_memory_equal(wq0, M.eager.layers[0].wq, sizeof(float) * 16);
    const alrd_layer *L1 = alrd_model_layer(&M.lazy, 1, &v1, &err);
    assert_non_null(L1);
    assert_ptr_equal(L1->wq, wq0);
    assert_memory_equal(L1->w_down, M.eager.layers[1].w_down, sizeof(float) * c->hidden * c->ffn);
    assert_null(alrd_model_layer(&M.lazy, c->n_layers, &v0, &err));

    int32_t tok[27];
    for (int i = 0; i < 27; i++) tok[i] = (int32_t)((i * 7919 + 13) % 49152);
    float *a = run_logits(&M.eager, tok), *b = run_logits(&M.lazy, tok);
    assert_memory_equal(a, b, sizeof(float) * 27 * V);

    /* an override (layer 3's K at half scale) acts the same on both */
    float *w = malloc(sizeof(float) * wn);
    assert_non_null(w);
    for (size_t i = 0; i < wn; i++) w[i] = 0.5f * M.eager.layers[3].wk[i];
    assert_int_equal(alrd_model_set_override(&M.eager, 3, 0, w, &err), 0);
    assert_int_equal(alrd_model_set_override(&M.lazy, 3, 0, w, &err), 0);
    float *ae = run_logits(&M.eager, tok), *al = run_logits(&M.lazy, tok);
    assert_memory_equal(ae, al, sizeof(float) * 27 * V);
    assert_memory_not_equal(ae, a, sizeof(float) * 27 * V);
    assert_int_equal(alrd_model_set_override(&M.lazy, 3, 0, NULL, &err), 0);
    assert_non_null(M.eager.kv_override);
    assert_int_equal(alrd_model_set_override(&M.eager, 3, 0, NULL, &err), 0);
    assert_null(M.eager.kv_override); /* cleared: the eager model may run on a GPU again */
    float *back = run_logits(&M.lazy, tok);
    assert_memory_equal(back, a, sizeof(float) * 27 * V);
    /* lazy and overridden models stay on the CPU */
    alrd_cache_opts o;
    alrd_cache_opts_default(&M.lazy, &o);
    o.backend = ALRD_BACKEND_GPU;
    alrd_ctx *x;
    assert_int_equal(alrd_ctx_new(&x, &M.lazy, 8, 8, &o, &err), -1);
    free(w); free(a); free(b); free(ae); free(al); free(back);
    close_models(&M);
}

typedef struct {
    alrd_calib *c;
    alrd_decomp *d;
    int k_rank[64], v_rank[64];
    float *kA[64], *kB[64], *vA[64], *vB[64];
    double kl, ce;
} pipeline;

static void run_pipeline(alrd_model *m, const int32_t *tok, int release, pipeline *p) {
    alrd_error err;
    memset(p, 0, sizeof *p);
    int L = m->cfg.n_layers;
    assert_true(L <= 64);
    assert_int_equal(alrd_calib_new(&p->c, m, tok, 3, 48, 32, 1, 0, &err), 0);
    if (release) { /* Grams freed as used, SVD bases in a file */
        alrd_calib_release_grams(p->c);
        alrd_calib_set_spill(p->c, 0);
    }
    alrd_calib_dampen(p->c, 0.01);
    assert_int_equal(alrd_decomp_new(&p->d, p->c, 1, 0, &err), 0);
    if (release) assert_int_equal(alrd_decomp_new(&(alrd_decomp *){NULL}, p->c, 1, 0, &err), -1);
    assert_int_equal(alrd_decomp_sensitivities(p->d, 32, &err), 0);
    assert_int_equal(alrd_decomp_ranks(p->d, 0.5, 0, p->k_rank, p->v_rank, &err), 0);
    p->k_rank[1] = 0; /* one module kept full */
    assert_int_equal(alrd_decomp_factors(p->d, p->k_rank, p->v_rank, 1, 0x5eed, p->kA, p->kB, p->vA, p->vB, &err), 0);
    assert_int_equal(alrd_decomp_measure(p->d, p->k_rank, p->v_rank, &p->kl, &p->ce, &err), 0);
}

static void free_pipeline(pipeline *p, int L) {
    for (int l = 0; l < L; l++) { free(p->kA[l]); free(p->kB[l]); free(p->vA[l]); free(p->vB[l]); }
    alrd_decomp_free(p->d);
    alrd_calib_free(p->c);
}

static int file_equal(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int eq = fa && fb;
    char x[65536], y[65536];
    while (eq) {
        size_t na = fread(x, 1, sizeof x, fa), nb = fread(y, 1, sizeof y, fb);
        if (na != nb || memcmp(x, y, na)) eq = 0;
        if (na == 0) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return eq;
}

/* The staged pipeline on a lazy model (Grams released as used, SVD bases
 * spilled to a file) equals the
 * eager one bit for bit; the streaming write equals the in-memory packing. */
static void test_lazy_pipeline_and_stream_write(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    models M;
    open_models(&M);
    const int L = M.lazy.cfg.n_layers;
    int32_t tok[3 * 48];
    for (int i = 0; i < 3 * 48; i++) tok[i] = (int32_t)((i * 104729 + 7) % 49152);
    pipeline e, z;
    run_pipeline(&M.eager, tok, 0, &e);
    run_pipeline(&M.lazy, tok, 1, &z);
    assert_int_equal(alrd_calib_rows(e.c), 3 * 48);
    assert_int_equal(alrd_calib_rows(z.c), 3 * 48);
    assert_true(alrd_calib_base_ce(e.c) == alrd_calib_base_ce(z.c));
    int ne, nz;
    assert_memory_equal(alrd_calib_probe_inputs(e.c, L - 1, &ne), alrd_calib_probe_inputs(z.c, L - 1, &nz),
                        sizeof(float) * 32 * M.lazy.cfg.hidden);
    assert_int_equal(ne, nz);
    int gh = alrd_decomp_full_rank(e.d);
    for (int i = 0; i < 2 * L; i++) {
        assert_memory_equal(alrd_decomp_tail(e.d, i), alrd_decomp_tail(z.d, i), sizeof(double) * (gh + 1));
        assert_true(alrd_decomp_sensitivity(e.d, i) == alrd_decomp_sensitivity(z.d, i));
        assert_true(alrd_decomp_sensitivity(e.d, i) > 0);
    }
    assert_memory_equal(e.k_rank, z.k_rank, sizeof(int) * L);
    assert_memory_equal(e.v_rank, z.v_rank, sizeof(int) * L);
    for (int l = 0; l < L; l++) {
        size_t na = (size_t)gh * e.v_rank[l], nb = (size_t)e.v_rank[l] * M.lazy.cfg.hidden;
        assert_memory_equal(e.vA[l], z.vA[l], sizeof(float) * na);
        assert_memory_equal(e.vB[l], z.vB[l], sizeof(float) * nb);
    }
    assert_true(e.kl == z.kl && e.ce == z.ce);
    assert_true(e.kl > 0);

    /* streaming write == pack in memory + alrd_file_write */
    alrd_error err;
    alrd_compress_result r;
    memset(&r, 0, sizeof r);
    assert_int_equal(alrd_compress_result_alloc(&r, z.d, 3 * 48, &err), 0);
    memcpy(r.k_rank, z.k_rank, sizeof(int) * L);
    memcpy(r.v_rank, z.v_rank, sizeof(int) * L);
    memcpy(r.kA, z.kA, sizeof(float *) * L); memcpy(r.kB, z.kB, sizeof(float *) * L);
    memcpy(r.vA, z.vA, sizeof(float *) * L); memcpy(r.vB, z.vB, sizeof(float *) * L);
    int bits[64];
    for (int l = 0; l < L; l++) bits[l] = 4;
    alrd_lowrank lr = {.n_layers = L, .group_heads = r.group_heads, .k_rank = r.k_rank, .v_rank = r.v_rank,
                       .k_bits = bits, .v_bits = bits, .use_kivi = 1, .group_size = 32, .residual_length = 128,
                       .hadamard = 1, .whitened = 1};
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/packed.alrd", alrd_test_tmpdir());
    snprintf(pb, sizeof pb, "%s/stream.alrd", alrd_test_tmpdir());
    alrd_packed base, pk;
    alrd_factors fac = alrd_compress_factors(&r);
    assert_int_equal(fac.gh, gh);
    assert_int_equal(alrd_pack_source(&base, &M.src, ALRD_F16, &err), 0);
    assert_int_equal(alrd_pack_factors(&pk, &base, &fac, ALRD_F16, &err), 0);
    assert_int_equal(alrd_file_write(pa, &M.src.config, &lr, &M.src.vocab, pk.tensors, pk.n, "{\"x\":1}", &err), 0);
    alrd_packed_free(&pk);
    alrd_packed_free(&base);
    assert_int_equal(alrd_pack_write(pb, &M.src, ALRD_F16, &fac, &lr, "{\"x\":1}", &err), 0);
    assert_true(file_equal(pa, pb));
    alrd_file f;
    assert_int_equal(alrd_file_open(&f, pb, &err), 0); /* and it validates */
    alrd_file_close(&f);
    /* a missing factor fails cleanly: no output, no temp file */
    float *keep = r.vB[0];
    r.vB[0] = NULL;
    unlink(pb);
    assert_int_equal(alrd_pack_write(pb, &M.src, ALRD_F16, &fac, &lr, NULL, &err), -1);
    assert_int_equal(access(pb, F_OK), -1);
    r.vB[0] = keep;
    unlink(pa);
    free(r.modules); free(r.k_rank); free(r.v_rank); free(r.kA); free(r.kB); free(r.vA); free(r.vB);
    free_pipeline(&e, L);
    free_pipeline(&z, L);
    close_models(&M);
}

typedef struct {
    const alrd_tensor *t;
    size_t piece;
    int short_by;   /* bytes left out of the last tensor */
} piece_fill;

static int fill_pieces(void *user, int i, alrd_file_sink *sink, alrd_error *err) {
    piece_fill *p = user;
    const alrd_tensor *t = &p->t[i];
    size_t n = t->nbytes - (p->short_by && i == 2 ? (size_t)p->short_by : 0);
    for (size_t k = 0; k < n; k += p->piece)
        if (alrd_file_sink_put(sink, (const char *)t->data + k, n - k < p->piece ? n - k : p->piece, err)) return -1;
    return 0;
}

static int count_tmp(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

/* Odd-sized pieces give the file alrd_file_write gives; a producer that
 * gives too few or too many bytes fails and leaves nothing behind. */
static void test_stream_pieces(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    alrd_source s;
    alrd_error err;
    assert_int_equal(alrd_source_open(&s, ALRD_TEST_MODEL, &err), 0);
    static float a[3 * 40], b[77];
    static uint16_t h[5 * 64];
    for (int i = 0; i < 3 * 40; i++) a[i] = (float)i * 0.25f - 3;
    for (int i = 0; i < 77; i++) b[i] = 1.0f / (i + 1);
    for (int i = 0; i < 5 * 64; i++) h[i] = (uint16_t)(0x3c00 + i);
    alrd_tensor t[3];
    memset(t, 0, sizeof t);
    snprintf(t[0].name, sizeof t[0].name, "a"); t[0].dtype = ALRD_F32; t[0].n_dims = 2;
    t[0].shape[0] = 3; t[0].shape[1] = 40; t[0].data = a; t[0].nbytes = sizeof a;
    snprintf(t[1].name, sizeof t[1].name, "b"); t[1].dtype = ALRD_F32; t[1].n_dims = 1;
    t[1].shape[0] = 77; t[1].data = b; t[1].nbytes = sizeof b;
    snprintf(t[2].name, sizeof t[2].name, "c"); t[2].dtype = ALRD_F16; t[2].n_dims = 2;
    t[2].shape[0] = 5; t[2].shape[1] = 64; t[2].data = h; t[2].nbytes = sizeof h;
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/mem.alrd", alrd_test_tmpdir());
    snprintf(pb, sizeof pb, "%s/pieces.alrd", alrd_test_tmpdir());
    assert_int_equal(alrd_file_write(pa, &s.config, NULL, &s.vocab, t, 3, NULL, &err), 0);
    piece_fill p = {t, 7, 0};
    alrd_tensor meta[3];
    memcpy(meta, t, sizeof t);
    for (int i = 0; i < 3; i++) meta[i].data = NULL; /* the streaming writer does not read data */
    assert_int_equal(alrd_file_write_stream(pb, &s.config, NULL, &s.vocab, meta, 3, NULL, fill_pieces, &p, &err), 0);
    assert_true(file_equal(pa, pb));
    unlink(pb);
    p.short_by = 3;
    assert_int_equal(alrd_file_write_stream(pb, &s.config, NULL, &s.vocab, meta, 3, NULL, fill_pieces, &p, &err), -1);
    assert_non_null(strstr(err.msg, "tensor c"));
    assert_int_equal(access(pb, F_OK), -1);
    p.short_by = 0;
    meta[2].nbytes = 4; /* the shape needs more than this: rejected before writing */
    assert_int_equal(alrd_file_write_stream(pb, &s.config, NULL, &s.vocab, meta, 3, NULL, fill_pieces, &p, &err), -1);
    assert_int_equal(access(pb, F_OK), -1);
    assert_int_equal(count_tmp(alrd_test_tmpdir()), 0);
    unlink(pa);
    alrd_source_close(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lazy_forward),
        cmocka_unit_test(test_lazy_pipeline_and_stream_write),
        cmocka_unit_test(test_stream_pieces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
