/* test_alrd_file: the .alrd packed format -- exact round trip, determinism,
 * and that corruption (bit flips everywhere, truncation, a future version)
 * is always reported, never accepted. */
#include "testutil.h"

#include <math.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <zlib.h>

#include "../formats/alrd_file.h"

/* ------------------------------------------------------------ fixture */

#define NT 11

typedef struct {
    alrd_config cfg;
    alrd_lowrank lr;
    int kr[2], vr[2], kb[2], vb[2];
    alrd_vocab voc;
    char *tokens[8], *merges[2];
    int32_t types[8];
    float scores[8];
    alrd_tensor t[NT];
    void *data[NT];
} fixture;

static void add_tensor(fixture *fx, int i, const char *name, alrd_dtype dt, int nd, int64_t a,
                       int64_t b, int64_t c, uint32_t seed) {
    alrd_tensor *t = &fx->t[i];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dt;
    t->n_dims = nd;
    int64_t sh[3] = {a, b, c}, n = 1;
    for (int d = 0; d < nd; d++) { t->shape[d] = sh[d]; n *= sh[d]; }
    float *f = malloc(sizeof(float) * (size_t)n);
    for (int64_t k = 0; k < n; k++) {
        seed = seed * 1664525u + 1013904223u;
        f[k] = ((int32_t)(seed >> 8) % 2000) / 1000.0f;
    }
    if (dt == ALRD_Q8_0) { /* any bytes are a valid Q8_0 payload for the format */
        size_t nb = (size_t)n / 32 * 34;
        uint8_t *q = malloc(nb);
        for (size_t k = 0; k < nb; k++) q[k] = (uint8_t)(k * 37 + seed);
        fx->data[i] = q;
        t->nbytes = nb;
        free(f);
    } else {
        size_t es = dt == ALRD_F32 ? 4 : 2;
        fx->data[i] = malloc(es * (size_t)n);
        assert_int_equal(alrd_file_convert_f32(f, (size_t)n, dt, fx->data[i], NULL), 0);
        t->nbytes = es * (size_t)n;
        free(f);
    }
    t->data = fx->data[i];
}

static void fixture_init(fixture *fx) {
    memset(fx, 0, sizeof *fx);
    alrd_config *c = &fx->cfg;
    snprintf(c->arch, sizeof c->arch, "llama");
    c->n_layers = 2; c->hidden = 16; c->n_heads = 4; c->n_kv_heads = 2; c->head_dim = 4;
    c->ffn = 32; c->vocab_size = 8; c->max_ctx = 64; c->rms_eps = 1e-5f; c->rope_theta = 10000;
    c->rope_llama3 = 1; c->rope_factor = 8; c->rope_low_freq_factor = 1;
    c->rope_high_freq_factor = 4; c->rope_orig_ctx = 32; c->tie_embeddings = 1;

    fx->kr[0] = 4; fx->kr[1] = 0; fx->vr[0] = 8; fx->vr[1] = 4;
    fx->kb[0] = 2; fx->kb[1] = 16; fx->vb[0] = 4; fx->vb[1] = 8;
    alrd_lowrank *l = &fx->lr;
    l->n_layers = 2; l->group_heads = 2; l->k_rank = fx->kr; l->v_rank = fx->vr;
    l->k_bits = fx->kb; l->v_bits = fx->vb; l->use_kivi = 1; l->group_size = 4;
    l->residual_length = 8; l->hadamard = 1; l->whitened = 1;

    static const char *tok[8] = {"a", "b", "ab", "\xc4\xa0the", "<|endoftext|>", "c", "abc", "x"};
    for (int i = 0; i < 8; i++) {
        fx->tokens[i] = (char *)tok[i];
        fx->types[i] = i == 4 ? ALRD_TOKEN_CONTROL : ALRD_TOKEN_NORMAL;
        fx->scores[i] = -(float)i * 0.5f;
    }
    fx->merges[0] = "a b";
    fx->merges[1] = "ab c";
    alrd_vocab *v = &fx->voc;
    v->kind = ALRD_VOCAB_BPE_BYTES;
    snprintf(v->pre, sizeof v->pre, "smollm");
    v->n_tokens = 8; v->tokens = fx->tokens; v->scores = fx->scores; v->types = fx->types;
    v->n_merges = 2; v->merges = fx->merges;
    v->bos_id = 4; v->eos_id = 4; v->unk_id = -1; v->pad_id = -1;
    v->add_bos = 0; v->add_eos = 0; v->add_space_prefix = 0;
    v->chat_template = "{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}";

    int i = 0;
    add_tensor(fx, i++, "model.embed_tokens.weight", ALRD_F16, 2, 8, 16, 0, 1);
    add_tensor(fx, i++, "model.norm.weight", ALRD_F32, 1, 16, 0, 0, 2);
    add_tensor(fx, i++, "model.layers.0.self_attn.k_proj.A", ALRD_F32, 3, 1, 8, 4, 3);
    add_tensor(fx, i++, "model.layers.0.self_attn.k_proj.B", ALRD_F16, 3, 1, 4, 16, 4);
    add_tensor(fx, i++, "model.layers.0.self_attn.v_proj.A", ALRD_F32, 3, 1, 8, 8, 5);
    add_tensor(fx, i++, "model.layers.0.self_attn.v_proj.B", ALRD_BF16, 3, 1, 8, 16, 6);
    add_tensor(fx, i++, "model.layers.1.self_attn.k_proj.weight", ALRD_F32, 2, 8, 16, 0, 7);
    fx->t[i - 1].unpermute_heads = 2;
    add_tensor(fx, i++, "model.layers.1.self_attn.v_proj.A", ALRD_F32, 3, 1, 8, 4, 8);
    add_tensor(fx, i++, "model.layers.1.self_attn.v_proj.B", ALRD_F32, 3, 1, 4, 16, 9);
    add_tensor(fx, i++, "model.layers.0.mlp.down_proj.weight", ALRD_Q8_0, 2, 16, 32, 0, 10);
    add_tensor(fx, i++, "model.layers.0.input_layernorm.weight", ALRD_F32, 1, 16, 0, 0, 11);
    assert_int_equal(i, NT);
}

static void fixture_free(fixture *fx) {
    for (int i = 0; i < NT; i++) free(fx->data[i]);
}

static const char *k_meta = "{\"tool\":\"test\",\"ratio\":0.5,\"modules\":[1,2,3]}";

static void path_in_tmp(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", alrd_test_tmpdir(), name);
}

static int write_fx(const fixture *fx, const char *path, alrd_error *err) {
    return alrd_file_write(path, &fx->cfg, &fx->lr, &fx->voc, fx->t, NT, k_meta, err);
}

static uint8_t *slurp(const char *path, size_t *n) {
    char *s;
    alrd_error err;
    assert_int_equal(alrd_read_file(path, 1 << 26, &s, n, &err), 0);
    return (uint8_t *)s;
}

static void spit(const char *path, const uint8_t *d, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(d, 1, n, f), n);
    fclose(f);
}

/* ------------------------------------------------------------ tests */

static void check_same(const fixture *fx, const alrd_file *f) {
    assert_int_equal(f->version, 1);
    assert_memory_equal(&f->config, &fx->cfg, sizeof fx->cfg);
    assert_non_null(f->lowrank);
    const alrd_lowrank *l = f->lowrank;
    assert_int_equal(l->n_layers, 2);
    assert_int_equal(l->group_heads, 2);
    assert_int_equal(l->use_kivi, 1);
    assert_int_equal(l->group_size, 4);
    assert_int_equal(l->residual_length, 8);
    assert_int_equal(l->hadamard, 1);
    assert_int_equal(l->whitened, 1);
    assert_memory_equal(l->k_rank, fx->kr, sizeof fx->kr);
    assert_memory_equal(l->v_rank, fx->vr, sizeof fx->vr);
    assert_memory_equal(l->k_bits, fx->kb, sizeof fx->kb);
    assert_memory_equal(l->v_bits, fx->vb, sizeof fx->vb);
    const alrd_vocab *v = &f->vocab;
    assert_int_equal(v->kind, ALRD_VOCAB_BPE_BYTES);
    assert_string_equal(v->pre, "smollm");
    assert_int_equal(v->n_tokens, 8);
    for (int i = 0; i < 8; i++) {
        assert_string_equal(v->tokens[i], fx->tokens[i]);
        assert_int_equal(v->types[i], fx->types[i]);
        assert_true(v->scores[i] == fx->scores[i]);
    }
    assert_int_equal(v->n_merges, 2);
    assert_string_equal(v->merges[1], "ab c");
    assert_int_equal(v->bos_id, 4);
    assert_int_equal(v->unk_id, -1);
    assert_string_equal(v->chat_template, fx->voc.chat_template);
    assert_int_equal(f->n_tensors, NT);
    for (int i = 0; i < NT; i++) {
        const alrd_tensor *a = &f->tensors[i], *b = &fx->t[i];
        assert_string_equal(a->name, b->name);
        assert_int_equal(a->dtype, b->dtype);
        assert_int_equal(a->n_dims, b->n_dims);
        for (int d = 0; d < b->n_dims; d++) assert_int_equal(a->shape[d], b->shape[d]);
        assert_int_equal(a->nbytes, b->nbytes);
        assert_int_equal(a->unpermute_heads, b->unpermute_heads);
        assert_memory_equal(a->data, b->data, b->nbytes);
        assert_int_equal((uintptr_t)a->data % 64, 0); /* mmap-aligned */
    }
    assert_string_equal(f->meta_json, k_meta);
}

static void test_roundtrip_and_determinism(void **state) {
    (void)state;
    fixture fx;
    fixture_init(&fx);
    alrd_error err = {{0}};
    char p1[512], p2[512], p3[512];
    path_in_tmp(p1, sizeof p1, "a.alrd");
    path_in_tmp(p2, sizeof p2, "b.alrd");
    path_in_tmp(p3, sizeof p3, "c.alrd");
    assert_int_equal(write_fx(&fx, p1, &err), 0);
    assert_int_equal(write_fx(&fx, p2, &err), 0);
    alrd_file f;
    if (alrd_file_open(&f, p1, &err)) fail_msg("%s", err.msg);
    check_same(&fx, &f);
    /* Rewriting what was read gives the same bytes again. */
    assert_int_equal(alrd_file_write(p3, &f.config, f.lowrank, &f.vocab, f.tensors, f.n_tensors,
                                     f.meta_json, &err), 0);
    alrd_file_close(&f);
    size_t n1, n2, n3;
    uint8_t *a = slurp(p1, &n1), *b = slurp(p2, &n2), *c = slurp(p3, &n3);
    assert_int_equal(n1, n2);
    assert_int_equal(n1, n3);
    assert_memory_equal(a, b, n1);
    assert_memory_equal(a, c, n1);
    assert_memory_equal(a, "ALRD\x01\0\0\0", 8);
    free(a); free(b); free(c);

    /* Through the source interface. */
    alrd_source s;
    if (alrd_source_open_alrd(&s, p1, &err)) fail_msg("%s", err.msg);
    assert_int_equal(s.format, ALRD_SRC_ALRD);
    assert_int_equal(s.n_tensors, NT);
    assert_non_null(s.lowrank);
    assert_int_equal(s.lowrank->v_rank[1], 4);
    assert_int_equal(s.vocab.n_tokens, 8);
    const alrd_tensor *t = alrd_source_tensor(&s, "model.layers.0.self_attn.v_proj.B");
    assert_non_null(t);
    assert_int_equal(t->dtype, ALRD_BF16);
    assert_memory_equal(t->data, fx.data[5], t->nbytes);
    assert_string_equal(alrd_source_alrd_meta(&s), k_meta);
    alrd_source_close(&s);
    /* and through the format dispatch */
    if (alrd_source_open(&s, p1, &err)) fail_msg("%s", err.msg);
    assert_int_equal(s.format, ALRD_SRC_ALRD);
    alrd_source_close(&s);

    /* No lowrank, no metadata: a plain model. */
    assert_int_equal(alrd_file_write(p2, &fx.cfg, NULL, &fx.voc, fx.t, NT, NULL, &err), 0);
    assert_int_equal(alrd_file_open(&f, p2, &err), 0);
    assert_null(f.lowrank);
    assert_null(f.meta_json);
    assert_int_equal(f.n_tensors, NT);
    alrd_file_close(&f);
    fixture_free(&fx);
}

static void expect_rejected(const char *path, const char *what, size_t off) {
    alrd_error err = {{0}};
    alrd_file f;
    if (alrd_file_open(&f, path, &err) == 0) {
        alrd_file_close(&f);
        fail_msg("%s at offset %zu was accepted", what, off);
    }
    if (!err.msg[0] || strncmp(err.msg, path, strlen(path)))
        fail_msg("%s at %zu: error does not name the file: '%s'", what, off, err.msg);
    alrd_source s;
    err.msg[0] = 0;
    if (alrd_source_open_alrd(&s, path, &err) == 0) {
        alrd_source_close(&s);
        fail_msg("%s at offset %zu was accepted by the source", what, off);
    }
}

static void expect_accepted(const char *path) {
    alrd_error err = {{0}};
    alrd_file f;
    if (alrd_file_open(&f, path, &err)) fail_msg("restored file rejected: %s", err.msg);
    alrd_file_close(&f);
}

/* Every bit of every byte before the tensor data, and one bit at a stride
 * over the tensor data: each flip is reported. */
static void test_bit_flips(void **state) {
    (void)state;
    fixture fx;
    fixture_init(&fx);
    alrd_error err = {{0}};
    char p[512], q[512];
    path_in_tmp(p, sizeof p, "flip.alrd");
    path_in_tmp(q, sizeof q, "flipped.alrd");
    assert_int_equal(write_fx(&fx, p, &err), 0);
    size_t n;
    uint8_t *d = slurp(p, &n);
    uint64_t data_offset = 0;
    for (int i = 0; i < 8; i++) data_offset |= (uint64_t)d[24 + i] << (8 * i);
    assert_true(data_offset > 64 && data_offset < n && data_offset % 64 == 0);
    size_t flips = 0;
    /* Flip in place with pwrite: rewriting whole files makes the filesystem
     * flush on every replace and the test crawl. */
    spit(q, d, n);
    int fd = open(q, O_WRONLY);
    assert_true(fd >= 0);
    for (size_t off = 0; off < n; off += off < data_offset ? 1 : 7) {
        for (int bit = 0; bit < 8; bit += off < data_offset ? 1 : 8) {
            int b = off < data_offset ? bit : (int)(off % 8);
            uint8_t x = d[off] ^ (uint8_t)(1u << b);
            assert_int_equal(pwrite(fd, &x, 1, (off_t)off), 1);
            expect_rejected(q, "bit flip", off);
            assert_int_equal(pwrite(fd, &d[off], 1, (off_t)off), 1);
            flips++;
        }
    }
    close(fd);
    expect_accepted(q);
    assert_true(flips > 8 * data_offset);
    /* Specific messages. */
    size_t t_off = n - 1; /* last byte: tensor data of the last tensor */
    d[t_off] ^= 1;
    spit(q, d, n);
    alrd_file f;
    assert_int_equal(alrd_file_open(&f, q, &err), -1);
    assert_non_null(strstr(err.msg, "tensor model.layers.0.input_layernorm.weight: CRC mismatch (corrupt file)"));
    d[t_off] ^= 1;
    d[61] ^= 4;
    spit(q, d, n);
    assert_int_equal(alrd_file_open(&f, q, &err), -1);
    assert_non_null(strstr(err.msg, "header: CRC mismatch"));
    d[61] ^= 4;
    free(d);
    fixture_free(&fx);
}

static void test_truncation_and_version(void **state) {
    (void)state;
    fixture fx;
    fixture_init(&fx);
    alrd_error err = {{0}};
    char p[512], q[512];
    path_in_tmp(p, sizeof p, "trunc.alrd");
    path_in_tmp(q, sizeof q, "truncated.alrd");
    assert_int_equal(write_fx(&fx, p, &err), 0);
    size_t n;
    uint8_t *d = slurp(p, &n);
    spit(q, d, n);
    for (size_t len = n - 1; len > 0; len -= len > n - 512 ? 1 : 13) {
        assert_int_equal(truncate(q, (off_t)len), 0); /* shrinking only: cheap */
        expect_rejected(q, "truncation", len);
        if (len < 13) break;
    }
    for (size_t len = 0; len < 80; len++) {
        spit(q, d, len);
        expect_rejected(q, "truncation", len);
    }
    spit(q, d, n - 1);
    alrd_file f;
    assert_int_equal(alrd_file_open(&f, q, &err), -1);
    assert_non_null(strstr(err.msg, "truncated"));
    /* Appended bytes are rejected too. */
    uint8_t *e = calloc(1, n + 64);
    memcpy(e, d, n);
    spit(q, e, n + 64);
    expect_rejected(q, "extension", n);
    free(e);
    /* A future version is refused by number, before anything else. */
    d[4] = 2;
    spit(q, d, n);
    assert_int_equal(alrd_file_open(&f, q, &err), -1);
    assert_non_null(strstr(err.msg, "unsupported version 2"));
    d[4] = 1;
    memcpy(d, "GGUF", 4);
    spit(q, d, n);
    assert_int_equal(alrd_file_open(&f, q, &err), -1);
    assert_non_null(strstr(err.msg, "not an .alrd file"));
    free(d);
    fixture_free(&fx);
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void test_writer_rejects(void **state) {
    (void)state;
    fixture fx;
    fixture_init(&fx);
    alrd_error err = {{0}};
    char p[512];
    path_in_tmp(p, sizeof p, "never.alrd");

    char saved[ALRD_NAME_MAX];
    memcpy(saved, fx.t[1].name, sizeof saved);
    memcpy(fx.t[1].name, fx.t[0].name, sizeof saved);
    assert_int_equal(write_fx(&fx, p, &err), -1);
    assert_non_null(strstr(err.msg, "tensor model.embed_tokens.weight: name appears twice"));
    memcpy(fx.t[1].name, saved, sizeof saved);

    fx.t[2].nbytes -= 4;
    assert_int_equal(write_fx(&fx, p, &err), -1);
    assert_non_null(strstr(err.msg, "model.layers.0.self_attn.k_proj.A: has 124 bytes"));
    fx.t[2].nbytes += 4;

    fx.t[9].shape[1] = 30; /* not a multiple of the Q8_0 block */
    assert_int_equal(write_fx(&fx, p, &err), -1);
    assert_non_null(strstr(err.msg, "block"));
    fx.t[9].shape[1] = 32;

    fx.kb[1] = 5;
    assert_int_equal(write_fx(&fx, p, &err), -1);
    assert_non_null(strstr(err.msg, "lowrank: layer 1 k_bits 5"));
    fx.kb[1] = 16;

    fx.vr[0] = 9; /* > group_heads * head_dim = 8 */
    assert_int_equal(write_fx(&fx, p, &err), -1);
    assert_non_null(strstr(err.msg, "v_rank 9"));
    fx.vr[0] = 8;

    assert_int_equal(alrd_file_write(p, &fx.cfg, &fx.lr, &fx.voc, fx.t, NT, "{bad", &err), -1);
    assert_non_null(strstr(err.msg, "metadata: not valid JSON"));
    assert_false(file_exists(p));

    /* Lowrank section and tensors must agree (checked by the source opener). */
    fx.t[3].shape[1] = 2; /* k_proj.B [1, 2, 16] but k_rank 4 ... */
    fx.t[3].shape[2] = 32;
    assert_int_equal(write_fx(&fx, p, &err), 0);
    alrd_source s;
    assert_int_equal(alrd_source_open_alrd(&s, p, &err), -1);
    assert_non_null(strstr(err.msg, "tensor model.layers.0.self_attn.k_proj.B: shape does not match"));
    fx.t[3].shape[1] = 4;
    fx.t[3].shape[2] = 16;
    snprintf(fx.t[6].name, sizeof fx.t[6].name, "model.layers.1.self_attn.k_proj.W");
    assert_int_equal(write_fx(&fx, p, &err), 0);
    assert_int_equal(alrd_source_open_alrd(&s, p, &err), -1);
    assert_non_null(strstr(err.msg, "model.layers.1.self_attn.k_proj.weight: missing"));
    fixture_free(&fx);
}

static void test_convert(void **state) {
    (void)state;
    alrd_error err = {{0}};
    const float src[4] = {1.0f, -2.5f, 65504.0f, 0.0f};
    uint16_t h[4];
    assert_int_equal(alrd_file_convert_f32(src, 4, ALRD_F16, h, &err), 0);
    assert_int_equal(h[0], 0x3c00);
    assert_int_equal(h[1], 0xc100);
    assert_int_equal(h[2], 0x7bff);
    assert_int_equal(h[3], 0);
    assert_int_equal(alrd_file_convert_f32(src, 4, ALRD_BF16, h, &err), 0);
    assert_int_equal(h[0], 0x3f80);
    assert_int_equal(h[1], 0xc020);
    const float big[1] = {70000.0f};
    assert_int_equal(alrd_file_convert_f32(big, 1, ALRD_F16, h, &err), -1);
    assert_non_null(strstr(err.msg, "overflows F16"));
    assert_int_equal(alrd_file_convert_f32(big, 1, ALRD_Q4_0, h, &err), -1);
}


/* The real model through the format: GGUF source -> .alrd -> source; every
 * tensor byte, the config and the whole vocabulary come back unchanged. */
static void test_real_model_roundtrip(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    alrd_error err = {{0}};
    alrd_source g, a;
    if (alrd_source_open(&g, ALRD_TEST_MODEL, &err)) fail_msg("%s", err.msg);
    char p[512];
    path_in_tmp(p, sizeof p, "model.alrd");
    if (alrd_file_write(p, &g.config, NULL, &g.vocab, g.tensors, g.n_tensors, "{}", &err))
        fail_msg("%s", err.msg);
    if (alrd_source_open(&a, p, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(&a.config, &g.config, sizeof g.config);
    assert_null(a.lowrank);
    assert_int_equal(a.n_tensors, g.n_tensors);
    for (int i = 0; i < g.n_tensors; i++) {
        const alrd_tensor *x = &g.tensors[i], *y = &a.tensors[i];
        assert_string_equal(x->name, y->name);
        assert_int_equal(x->dtype, y->dtype);
        assert_int_equal(x->n_dims, y->n_dims);
        assert_memory_equal(x->shape, y->shape, sizeof x->shape);
        assert_int_equal(x->unpermute_heads, y->unpermute_heads);
        assert_int_equal(x->nbytes, y->nbytes);
        assert_memory_equal(x->data, y->data, x->nbytes);
    }
    const alrd_vocab *u = &g.vocab, *v = &a.vocab;
    assert_int_equal(u->kind, v->kind);
    assert_string_equal(u->pre, v->pre);
    assert_int_equal(u->n_tokens, v->n_tokens);
    for (int i = 0; i < u->n_tokens; i++) assert_string_equal(u->tokens[i], v->tokens[i]);
    assert_int_equal(u->n_merges, v->n_merges);
    for (int i = 0; i < u->n_merges; i++) assert_string_equal(u->merges[i], v->merges[i]);
    assert_int_equal(!u->scores, !v->scores);
    assert_int_equal(!u->types, !v->types);
    if (u->types) assert_memory_equal(u->types, v->types, sizeof(int32_t) * u->n_tokens);
    if (u->scores) assert_memory_equal(u->scores, v->scores, sizeof(float) * u->n_tokens);
    assert_int_equal(u->bos_id, v->bos_id);
    assert_int_equal(u->eos_id, v->eos_id);
    assert_int_equal(u->add_bos, v->add_bos);
    if (u->chat_template) assert_string_equal(u->chat_template, v->chat_template);
    else assert_null(v->chat_template);
    alrd_source_close(&a);
    alrd_source_close(&g);
    unlink(p);
}


/* ---------------------------------------------------------------- crafted */

static uint32_t rd32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i); }
static void wr64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> 8 * i); }

/* Recomputes every section CRC and the header CRC, so a mutation reaches the
 * structural checks instead of stopping at a CRC. */
static void fix_crcs(uint8_t *d, size_t n) {
    uint32_t hs = rd32(d + 8), ns = rd32(d + 12);
    if (ns > 16 || hs != 64 + 40 * ns) return; /* table itself mutated: leave it */
    for (uint32_t i = 0; i < ns; i++) {
        uint8_t *e = d + 64 + 40 * i;
        uint64_t off = rd64(e + 8), sz = rd64(e + 16);
        if (off <= n && sz <= n - off) wr32(e + 32, (uint32_t)crc32(0, d + off, (uInt)sz));
    }
    uLong c = crc32(0, d, 60);
    c = crc32(c, d + 64, hs - 64);
    wr32(d + 60, (uint32_t)c);
}

/* Offset of the directory entry field "off" of tensor idx (walks the section). */
static size_t dir_field(const uint8_t *d, int idx, int want_shape0) {
    uint32_t ns = rd32(d + 12);
    size_t at = 0;
    for (uint32_t i = 0; i < ns; i++)
        if (rd32(d + 64 + 40 * i) == 4) at = (size_t)rd64(d + 64 + 40 * i + 8);
    assert_true(at > 0);
    at += 4;
    for (int t = 0;; t++) {
        at += 4 + rd32(d + at) + 1;           /* name */
        at += 4;                              /* dtype */
        uint32_t nd = rd32(d + at);
        at += 4;
        if (t == idx && want_shape0) return at;
        at += 8 * nd + 4;                     /* shape, unpermute */
        if (t == idx) return at;              /* offset field */
        at += 8 + 8 + 4;
    }
}

static void expect_msg(const char *path, const uint8_t *d, size_t n, const char *want) {
    spit(path, d, n);
    alrd_error err = {{0}};
    alrd_file f;
    if (alrd_file_open(&f, path, &err) == 0) {
        alrd_file_close(&f);
        fail_msg("accepted, wanted '%s'", want);
    }
    if (!strstr(err.msg, want)) fail_msg("got '%s', want '%s'", err.msg, want);
}

static void test_crafted_with_valid_crcs(void **state) {
    (void)state;
    fixture fx;
    fixture_init(&fx);
    alrd_error err = {{0}};
    char p[512], q[512];
    path_in_tmp(p, sizeof p, "craft.alrd");
    path_in_tmp(q, sizeof q, "crafted.alrd");
    assert_int_equal(write_fx(&fx, p, &err), 0);
    size_t n;
    uint8_t *d = slurp(p, &n), *m = malloc(n);

    size_t o1 = dir_field(d, 1, 0), o0 = dir_field(d, 0, 0);
    memcpy(m, d, n);
    memcpy(m + o1, m + o0, 8); /* tensor 1 at tensor 0's offset */
    fix_crcs(m, n);
    expect_msg(q, m, n, "overlaps");
    memcpy(m, d, n);
    wr64(m + o1, rd64(m + o1) + 4);
    fix_crcs(m, n);
    expect_msg(q, m, n, "misaligned");
    memcpy(m, d, n);
    wr64(m + o1, (uint64_t)-64); /* offset + size wraps around */
    fix_crcs(m, n);
    expect_msg(q, m, n, "outside the data region");
    memcpy(m, d, n);
    wr64(m + dir_field(d, 2, 1), (uint64_t)1 << 62);
    fix_crcs(m, n);
    expect_msg(q, m, n, "model.layers.0.self_attn.k_proj.A: dim 0");
    memcpy(m, d, n);
    wr64(m + dir_field(d, 2, 1), 2); /* shape changes, size does not */
    fix_crcs(m, n);
    expect_msg(q, m, n, "model.layers.0.self_attn.k_proj.A: size 128 but");
    memcpy(m, d, n);
    wr32(m + dir_field(d, 3, 1) - 8, 99); /* dtype of tensor 3 */
    fix_crcs(m, n);
    expect_msg(q, m, n, "unknown or unsupported dtype 99");
    memcpy(m, d, n);
    wr32(m + 64 + 4, 2); /* section 0 claims zlib */
    fix_crcs(m, n);
    expect_msg(q, m, n, "section config");

    /* Random byte changes in the sections with CRCs fixed up: whatever the
     * decoders make of them, they never crash (the suite runs under ASan). */
    uint64_t data_offset = rd64(d + 24);
    uint64_t st = 88172645463325252ULL;
    int accepted = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(m, d, n);
        for (int k = 0; k < 1 + it % 3; k++) {
            st ^= st << 13; st ^= st >> 7; st ^= st << 17;
            size_t off = 64 + (size_t)(st % (data_offset - 64));
            m[off] = (uint8_t)(st >> 32);
        }
        fix_crcs(m, n);
        spit(q, m, n);
        alrd_file f;
        if (alrd_file_open(&f, q, &err) == 0) {
            accepted++;
            alrd_file_close(&f);
        } else {
            assert_true(err.msg[0] != 0);
        }
    }
    print_message("crafted mutations accepted (benign): %d / 3000\n", accepted);
    free(m);
    free(d);
    fixture_free(&fx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_and_determinism),
        cmocka_unit_test(test_bit_flips),
        cmocka_unit_test(test_truncation_and_version),
        cmocka_unit_test(test_writer_rejects),
        cmocka_unit_test(test_convert),
        cmocka_unit_test(test_crafted_with_valid_crcs),
        cmocka_unit_test(test_real_model_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
