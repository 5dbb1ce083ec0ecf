/* safetensors: writer/reader round trips with exact bit patterns, dtype
 * conversion on write, sharded checkpoints through an index, a file as the
 * Python library writes it, and hostile headers each rejected with an error
 * naming the file and the field. */
#include "testutil.h"

#include <sys/stat.h>

#include "../formats/safetensors.h"

static void tpath(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", alrd_test_tmpdir(), name);
}

static alrd_tensor mk(const char *name, alrd_dtype dt, const void *data, size_t nbytes, int nd,
                      int64_t d0, int64_t d1) {
    alrd_tensor t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "%s", name);
    t.dtype = dt;
    t.data = data;
    t.nbytes = nbytes;
    t.n_dims = nd;
    t.shape[0] = d0;
    t.shape[1] = d1;
    return t;
}

/* Raw file: 8-byte length (hlen_field), header text, data bytes. */
static void write_raw(const char *path, uint64_t hlen_field, const char *hdr, const void *data,
                      size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint8_t l[8];
    for (int i = 0; i < 8; i++) l[i] = (uint8_t)(hlen_field >> (8 * i));
    fwrite(l, 1, 8, f);
    fwrite(hdr, 1, strlen(hdr), f);
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static void write_hdr(const char *path, const char *hdr, size_t data_bytes) {
    static const uint8_t zeros[256];
    assert_true(data_bytes <= sizeof zeros);
    write_raw(path, strlen(hdr), hdr, zeros, data_bytes);
}

static uint32_t f32_bits(const void *p, size_t i) {
    uint32_t u;
    memcpy(&u, (const uint8_t *)p + 4 * i, 4);
    return u;
}
static uint16_t u16_at(const void *p, size_t i) {
    uint16_t u;
    memcpy(&u, (const uint8_t *)p + 2 * i, 2);
    return u;
}

/* Same-dtype tensors are stored byte for byte (NaN payloads, -0, subnormals
 * included); names come back sorted with their shapes and dtypes. */
static void test_roundtrip_same_dtype(void **state) {
    (void)state;
    const uint32_t f[6] = {0x3F800000u, 0x80000000u, 0x00000001u, 0x7FC00123u, 0xFF800000u, 0x40490FDBu};
    const uint16_t h[4] = {0x3C00, 0x7E01, 0x8001, 0xFBFF};
    const uint16_t b[3] = {0x3F80, 0xFFC1, 0x0001};
    for (int k = 0; k < 3; k++) {
        alrd_dtype dt = k == 0 ? ALRD_F32 : k == 1 ? ALRD_F16 : ALRD_BF16;
        alrd_tensor t[2];
        if (dt == ALRD_F32) {
            t[0] = mk("z.weight", dt, f, sizeof f, 2, 2, 3);
            t[1] = mk("a.bias", dt, f, 8, 1, 2, 0);
        } else {
            const uint16_t *src = dt == ALRD_F16 ? h : b;
            int n = dt == ALRD_F16 ? 4 : 3;
            t[0] = mk("z.weight", dt, src, (size_t)n * 2, 1, n, 0);
            t[1] = mk("a.bias", dt, src, 2, 1, 1, 0);
        }
        char p[512];
        tpath(p, sizeof p, "same.safetensors");
        alrd_error err = {{0}};
        assert_int_equal(alrd_safetensors_write(p, t, 2, dt, &err), 0);
        alrd_safetensors st;
        assert_int_equal(alrd_safetensors_open(&st, p, &err), 0);
        assert_int_equal(st.n_tensors, 2);
        /* sorted by name in the file */
        assert_string_equal(st.tensors[0].name, "a.bias");
        assert_string_equal(st.tensors[1].name, "z.weight");
        /* header length is a multiple of 8, data 8-byte aligned */
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = hl << 8 | st.map.data[i];
        assert_int_equal(hl % 8, 0);
        assert_int_equal(((const uint8_t *)st.tensors[0].data - st.map.data) % 8, 0);
        const alrd_tensor *z = alrd_safetensors_find(&st, "z.weight");
        assert_non_null(z);
        assert_int_equal(z->dtype, dt);
        assert_int_equal(z->unpermute_heads, 0);
        if (dt == ALRD_F32) {
            assert_int_equal(z->n_dims, 2);
            assert_int_equal(z->shape[0], 2);
            assert_int_equal(z->shape[1], 3);
            for (int i = 0; i < 6; i++) assert_int_equal(f32_bits(z->data, i), f[i]);
        } else {
            int n = dt == ALRD_F16 ? 4 : 3;
            const uint16_t *src = dt == ALRD_F16 ? h : b;
            assert_int_equal(z->n_dims, 1);
            assert_int_equal(z->shape[0], n);
            assert_int_equal(z->nbytes, (size_t)n * 2);
            for (int i = 0; i < n; i++) assert_int_equal(u16_at(z->data, i), src[i]);
        }
        assert_null(alrd_safetensors_find(&st, "missing"));
        alrd_safetensors_close(&st);
    }
}

/* Conversion on write: f32 -> f16/bf16 (round to nearest even), f16/bf16 ->
 * f32 (exact), checked against hand-computed bit patterns. */
static void test_convert_on_write(void **state) {
    (void)state;
    const float src[6] = {1.0f, 0.1f, -2.5f, 65504.0f, 3.14159274f, 1e-8f};
    const uint16_t want16[6] = {0x3C00, 0x2E66, 0xC100, 0x7BFF, 0x4248, 0x0000};
    const uint16_t wantbf[6] = {0x3F80, 0x3DCD, 0xC020, 0x4780, 0x4049, 0x322C};
    alrd_tensor t = mk("w", ALRD_F32, src, sizeof src, 2, 2, 3);
    char p[512];
    tpath(p, sizeof p, "conv.safetensors");
    alrd_error err = {{0}};
    alrd_safetensors st;
    assert_int_equal(alrd_safetensors_write(p, &t, 1, ALRD_F16, &err), 0);
    assert_int_equal(alrd_safetensors_open(&st, p, &err), 0);
    assert_int_equal(st.tensors[0].dtype, ALRD_F16);
    for (int i = 0; i < 6; i++) assert_int_equal(u16_at(st.tensors[0].data, i), want16[i]);
    alrd_safetensors_close(&st);
    assert_int_equal(alrd_safetensors_write(p, &t, 1, ALRD_BF16, &err), 0);
    assert_int_equal(alrd_safetensors_open(&st, p, &err), 0);
    assert_int_equal(st.tensors[0].dtype, ALRD_BF16);
    for (int i = 0; i < 6; i++) assert_int_equal(u16_at(st.tensors[0].data, i), wantbf[i]);
    alrd_safetensors_close(&st);

    /* f16 and bf16 -> f32 widen exactly */
    const uint16_t h[4] = {0x3C00, 0xC000, 0x0001, 0x7C00};
    const uint32_t hw[4] = {0x3F800000u, 0xC0000000u, 0x33800000u, 0x7F800000u};
    const uint16_t bf[4] = {0x3F80, 0xC049, 0x0080, 0xFF80};
    const uint32_t bw[4] = {0x3F800000u, 0xC0490000u, 0x00800000u, 0xFF800000u};
    alrd_tensor two[2] = {mk("h", ALRD_F16, h, 8, 2, 2, 2), mk("b", ALRD_BF16, bf, 8, 1, 4, 0)};
    assert_int_equal(alrd_safetensors_write(p, two, 2, ALRD_F32, &err), 0);
    assert_int_equal(alrd_safetensors_open(&st, p, &err), 0);
    const alrd_tensor *th = alrd_safetensors_find(&st, "h"), *tb = alrd_safetensors_find(&st, "b");
    assert_non_null(th);
    assert_non_null(tb);
    assert_int_equal(th->dtype, ALRD_F32);
    assert_int_equal(th->n_dims, 2);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(f32_bits(th->data, i), hw[i]);
        assert_int_equal(f32_bits(tb->data, i), bw[i]);
    }
    alrd_safetensors_close(&st);
}

/* Quantized sources and GGUF-permuted Q/K rows go through
 * alrd_tensor_rows_f32: Q8_0 dequantizes exactly; a permuted tensor comes
 * out in HF row order. */
static void test_write_from_gguf_layouts(void **state) {
    (void)state;
    uint8_t q8[34];
    q8[0] = 0x00; q8[1] = 0x38; /* fp16 0.5 */
    for (int i = 0; i < 32; i++) q8[2 + i] = (uint8_t)(int8_t)(i - 16);
    alrd_tensor tq = mk("q8", ALRD_Q8_0, q8, sizeof q8, 2, 1, 32);
    /* one head of 6 rows, llama.cpp order: gguf row 2i+j = hf row 3j+i */
    float perm[6 * 2];
    for (int r = 0; r < 6; r++) perm[2 * r] = perm[2 * r + 1] = (float)r;
    alrd_tensor tp = mk("model.layers.0.self_attn.k_proj.weight", ALRD_F32, perm, sizeof perm, 2,
                        6, 2);
    tp.unpermute_heads = 1;
    alrd_tensor ts[2] = {tq, tp};
    char p[512];
    tpath(p, sizeof p, "gguf.safetensors");
    alrd_error err = {{0}};
    assert_int_equal(alrd_safetensors_write(p, ts, 2, ALRD_F32, &err), 0);
    alrd_safetensors st;
    assert_int_equal(alrd_safetensors_open(&st, p, &err), 0);
    const alrd_tensor *a = alrd_safetensors_find(&st, "q8");
    assert_non_null(a);
    assert_int_equal(a->dtype, ALRD_F32);
    for (int i = 0; i < 32; i++) {
        float v;
        memcpy(&v, (const uint8_t *)a->data + 4 * i, 4);
        assert_true(v == 0.5f * (float)(i - 16));
    }
    const alrd_tensor *k = alrd_safetensors_find(&st, "model.layers.0.self_attn.k_proj.weight");
    assert_non_null(k);
    assert_int_equal(k->unpermute_heads, 0);
    const float want_rows[6] = {0, 2, 4, 1, 3, 5};
    for (int r = 0; r < 6; r++) {
        float v0, v1;
        memcpy(&v0, (const uint8_t *)k->data + 8 * r, 4);
        memcpy(&v1, (const uint8_t *)k->data + 8 * r + 4, 4);
        assert_true(v0 == want_rows[r] && v1 == want_rows[r]);
    }
    alrd_safetensors_close(&st);
}

/* A file exactly as Python's safetensors.numpy.save writes it. */
static void test_python_file(void **state) {
    (void)state;
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},\"x\":{\"dtype\":\"F32\",\"shape\":[2],"
                      "\"data_offsets\":[0,8]},\"h\":{\"dtype\":\"F16\",\"shape\":[2,2],"
                      "\"data_offsets\":[8,16]}}   ";
    const uint8_t data[16] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 0, 0x3c, 0, 0x40, 0, 0x42, 0, 0x44};
    assert_int_equal(strlen(hdr), 0x90);
    char p[512];
    tpath(p, sizeof p, "py.safetensors");
    write_raw(p, strlen(hdr), hdr, data, sizeof data);
    alrd_safetensors st;
    alrd_error err = {{0}};
    assert_int_equal(alrd_safetensors_open(&st, p, &err), 0);
    assert_int_equal(st.n_tensors, 2);
    assert_string_equal(st.tensors[0].name, "x"); /* file order */
    assert_int_equal(st.tensors[0].dtype, ALRD_F32);
    assert_int_equal(f32_bits(st.tensors[0].data, 1), 0xC0000000u);
    assert_string_equal(st.tensors[1].name, "h");
    assert_int_equal(st.tensors[1].dtype, ALRD_F16);
    assert_int_equal(st.tensors[1].shape[0], 2);
    assert_int_equal(st.tensors[1].shape[1], 2);
    assert_int_equal(u16_at(st.tensors[1].data, 3), 0x4400);
    alrd_safetensors_close(&st);
}

static void write_text(const char *path, const char *s) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

/* Sharded: two shards through model.safetensors.index.json, each tensor
 * found in the shard the weight_map names. */
static void test_sharded(void **state) {
    (void)state;
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "%s/sharded", alrd_test_tmpdir());
    mkdir(dir, 0755);
    const float a[2] = {1.5f, -3.0f}, b[3] = {7.0f, 8.0f, 9.0f}, c[1] = {42.0f};
    alrd_tensor s1[2] = {mk("model.a", ALRD_F32, a, 8, 1, 2, 0), mk("model.b", ALRD_F32, b, 12, 1, 3, 0)};
    alrd_tensor s2[1] = {mk("model.c", ALRD_F32, c, 4, 1, 1, 0)};
    alrd_error err = {{0}};
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    assert_int_equal(alrd_safetensors_write(p, s1, 2, ALRD_F32, &err), 0);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    assert_int_equal(alrd_safetensors_write(p, s2, 1, ALRD_F16, &err), 0);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_text(p, "{\"metadata\": {\"total_size\": 22}, \"weight_map\": {"
                  "\"model.a\": \"model-00001-of-00002.safetensors\","
                  "\"model.c\": \"model-00002-of-00002.safetensors\","
                  "\"model.b\": \"model-00001-of-00002.safetensors\"}}");
    alrd_safetensors_set set;
    assert_int_equal(alrd_safetensors_set_open_dir(&set, dir, &err), 0);
    assert_int_equal(set.n_files, 2);
    assert_int_equal(set.n_tensors, 3);
    const alrd_tensor *tc = alrd_safetensors_set_find(&set, "model.c");
    assert_non_null(tc);
    assert_int_equal(tc->dtype, ALRD_F16);
    assert_int_equal(u16_at(tc->data, 0), 0x5140); /* 42.0 in fp16 */
    const alrd_tensor *tb = alrd_safetensors_set_find(&set, "model.b");
    assert_non_null(tb);
    assert_int_equal(f32_bits(tb->data, 2), 0x41100000u); /* 9.0 */
    alrd_safetensors_set_close(&set);

    /* weight_map naming a tensor its shard lacks */
    write_text(p, "{\"weight_map\": {\"model.a\": \"model-00001-of-00002.safetensors\","
                  "\"model.zz\": \"model-00002-of-00002.safetensors\"}}");
    assert_int_equal(alrd_safetensors_set_open_dir(&set, dir, &err), -1);
    assert_non_null(strstr(err.msg, "model.safetensors.index.json"));
    assert_non_null(strstr(err.msg, "model.zz"));
    /* a shard path leaving the directory */
    write_text(p, "{\"weight_map\": {\"model.a\": \"../x.safetensors\"}}");
    assert_int_equal(alrd_safetensors_set_open_dir(&set, dir, &err), -1);
    assert_non_null(strstr(err.msg, "weight_map"));
    /* a missing shard */
    write_text(p, "{\"weight_map\": {\"model.a\": \"model-00009-of-00009.safetensors\"}}");
    assert_int_equal(alrd_safetensors_set_open_dir(&set, dir, &err), -1);
    assert_non_null(strstr(err.msg, "model-00009-of-00009.safetensors"));
    /* no weight_map */
    write_text(p, "{\"metadata\": {}}");
    assert_int_equal(alrd_safetensors_set_open_dir(&set, dir, &err), -1);
    assert_non_null(strstr(err.msg, "weight_map"));
    /* the same tensor in two shards */
    alrd_tensor both[2] = {s1[0], s2[0]};
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    assert_int_equal(alrd_safetensors_write(p, both, 2, ALRD_F32, &err), 0);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_text(p, "{\"weight_map\": {\"model.b\": \"model-00001-of-00002.safetensors\","
                  "\"model.c\": \"model-00002-of-00002.safetensors\"}}");
    assert_int_equal(alrd_safetensors_set_open_dir(&set, dir, &err), -1);
    assert_non_null(strstr(err.msg, "model.a"));
    assert_non_null(strstr(err.msg, "more than once"));
}

/* Opens p expecting failure with every needle in the message. */
static void expect_bad(const char *p, const char *n1, const char *n2) {
    alrd_safetensors st;
    alrd_error err = {{0}};
    assert_int_equal(alrd_safetensors_open(&st, p, &err), -1);
    if (!strstr(err.msg, p) || !strstr(err.msg, n1) || (n2 && !strstr(err.msg, n2)))
        fail_msg("error '%s' lacks '%s' / '%s' / the path", err.msg, n1, n2 ? n2 : "");
    assert_null(st.tensors);
}

static void test_bad_headers(void **state) {
    (void)state;
    char p[512];
    tpath(p, sizeof p, "bad.safetensors");
    /* truncated: fewer than 8 bytes */
    write_text(p, "\x10\x00\x00");
    expect_bad(p, "header length", "too short");
    /* header length past the end */
    write_raw(p, 1000, "{\"a\":1}", NULL, 0);
    expect_bad(p, "header length", "past the end");
    /* absurd header length */
    write_raw(p, (uint64_t)1 << 40, "{}", NULL, 0);
    expect_bad(p, "header length", "limit");
    /* malformed JSON */
    write_hdr(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]", 4);
    expect_bad(p, "header", "malformed JSON");
    /* not an object */
    write_hdr(p, "[1,2,3]", 0);
    expect_bad(p, "header", "object");
    /* data_offsets past the end of the data */
    write_hdr(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8);
    expect_bad(p, "tensor w: data_offsets", "past the end");
    /* reversed */
    write_hdr(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8);
    expect_bad(p, "tensor w: data_offsets", "begin 8 > end 4");
    /* size mismatch */
    write_hdr(p, "{\"w\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
    expect_bad(p, "tensor w: data_offsets", "need 6");
    /* offsets not integers / missing */
    write_hdr(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.5,4]}}", 8);
    expect_bad(p, "tensor w: data_offsets", NULL);
    write_hdr(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 8);
    expect_bad(p, "tensor w: data_offsets", NULL);
    /* unknown dtypes */
    write_hdr(p, "{\"fp8\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
    expect_bad(p, "tensor fp8: dtype F8_E4M3", "not supported");
    write_hdr(p, "{\"q\":{\"dtype\":\"Q9\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
    expect_bad(p, "tensor q: dtype Q9", "not supported");
    write_hdr(p, "{\"q\":{\"dtype\":7,\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
    expect_bad(p, "tensor q: dtype", NULL);
    /* shapes: too many dims, negative, fractional, overflowing */
    write_hdr(p, "{\"s\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4);
    expect_bad(p, "tensor s: shape", "5 dims");
    write_hdr(p, "{\"s\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4);
    expect_bad(p, "tensor s: shape[0]", NULL);
    write_hdr(p, "{\"s\":{\"dtype\":\"F32\",\"shape\":[2,1.5],\"data_offsets\":[0,4]}}", 4);
    expect_bad(p, "tensor s: shape[1]", NULL);
    write_hdr(p, "{\"s\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                 "\"data_offsets\":[0,4]}}", 4);
    expect_bad(p, "tensor s: shape", "overflows");
    write_hdr(p, "{\"s\":{\"dtype\":\"F32\",\"shape\":\"4\",\"data_offsets\":[0,4]}}", 4);
    expect_bad(p, "tensor s: shape", NULL);
    /* a tensor entry that is not an object; a duplicate name */
    write_hdr(p, "{\"s\":5}", 0);
    expect_bad(p, "tensor s", "object");
    write_hdr(p, "{\"d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    expect_bad(p, "tensor d", "more than once");
    /* name too long for alrd_tensor */
    char hdr[600];
    char longname[300];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
             longname);
    write_hdr(p, hdr, 4);
    expect_bad(p, "tensor name", "longer than");
    /* empty header object and metadata only: valid, zero tensors */
    write_hdr(p, "{\"__metadata__\":{\"format\":\"pt\"}}", 0);
    alrd_safetensors st;
    alrd_error err = {{0}};
    assert_int_equal(alrd_safetensors_open(&st, p, &err), 0);
    assert_int_equal(st.n_tensors, 0);
    alrd_safetensors_close(&st);
}

static void test_writer_errors(void **state) {
    (void)state;
    char p[512], tmp[600];
    tpath(p, sizeof p, "werr.safetensors");
    unlink(p);
    const float a[2] = {1, 2};
    alrd_tensor t[2] = {mk("same", ALRD_F32, a, 8, 1, 2, 0), mk("same", ALRD_F32, a, 8, 1, 2, 0)};
    alrd_error err = {{0}};
    assert_int_equal(alrd_safetensors_write(p, t, 2, ALRD_F32, &err), -1);
    assert_non_null(strstr(err.msg, "same"));
    assert_non_null(strstr(err.msg, "more than once"));
    assert_int_equal(alrd_safetensors_write(p, t, 1, ALRD_Q4_1, &err), -1);
    assert_non_null(strstr(err.msg, "output dtype"));
    /* a source whose byte count disagrees with its shape */
    alrd_tensor bad = mk("short", ALRD_F32, a, 4, 1, 2, 0);
    assert_int_equal(alrd_safetensors_write(p, &bad, 1, ALRD_F32, &err), -1);
    assert_non_null(strstr(err.msg, "short"));
    /* nothing left behind: neither the file nor its temp */
    assert_int_not_equal(access(p, F_OK), 0);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)getpid());
    assert_int_not_equal(access(tmp, F_OK), 0);
    /* unwritable destination */
    assert_int_equal(alrd_safetensors_write("/nonexistent-dir/x.safetensors", t, 1, ALRD_F32, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent-dir/x.safetensors"));
}

/* Every byte of a valid file's length field and header replaced by a few
 * hostile values: open either fails cleanly or yields views that lie
 * inside the mapping (ASan builds also catch any stray read). */
static void test_header_mutations(void **state) {
    (void)state;
    const float a[3] = {1, 2, 3};
    const uint16_t h[2] = {0x3C00, 0x4000};
    alrd_tensor t[2] = {mk("model.a", ALRD_F32, a, 12, 1, 3, 0), mk("b", ALRD_F16, h, 4, 2, 1, 2)};
    char p[512], q[512];
    tpath(p, sizeof p, "mut-src.safetensors");
    tpath(q, sizeof q, "mut.safetensors");
    alrd_error err = {{0}};
    assert_int_equal(alrd_safetensors_write(p, t, 2, ALRD_F32, &err), 0);
    char *orig = NULL;
    size_t n = 0;
    assert_int_equal(alrd_read_file(p, 1 << 20, &orig, &n, &err), 0);
    const char vals[] = {'0', '9', '-', '"', '}', '[', ' ', 'e', '.', (char)0xff, 0, 1};
    int opened = 0, rejected = 0;
    for (size_t i = 0; i < n - 16; i++) {
        for (size_t k = 0; k < sizeof vals; k++) {
            if (orig[i] == vals[k]) continue;
            FILE *f = fopen(q, "wb");
            assert_non_null(f);
            fwrite(orig, 1, i, f);
            fputc((uint8_t)vals[k], f);
            fwrite(orig + i + 1, 1, n - i - 1, f);
            fclose(f);
            alrd_safetensors st;
            if (alrd_safetensors_open(&st, q, &err) != 0) {
                rejected++;
                assert_true(strlen(err.msg) > 0);
                continue;
            }
            opened++;
            for (int j = 0; j < st.n_tensors; j++) {
                const uint8_t *d = st.tensors[j].data;
                assert_true(d >= st.map.data && d + st.tensors[j].nbytes <= st.map.data + st.map.size);
            }
            alrd_safetensors_close(&st);
        }
    }
    free(orig);
    assert_true(rejected > 0 && opened > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_same_dtype),
        cmocka_unit_test(test_convert_on_write),
        cmocka_unit_test(test_write_from_gguf_layouts),
        cmocka_unit_test(test_python_file),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_header_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
