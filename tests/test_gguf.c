/* test_gguf: the GGUF reader on files built here byte by byte (every
 * metadata type, nested arrays, alignment, and each kind of corruption),
 * the GGUF -> source mapping on tiny synthetic models, and the real model
 * and vocab-only files when present. */
#include "testutil.h"

#include <math.h>
#include <sys/wait.h>

#include "../formats/gguf.h"
#include "../formats/source.h"

/* ---- a tiny GGUF writer ------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void b_put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void b_u8(buf *b, uint8_t v) { b_put(b, &v, 1); }
static void b_u16(buf *b, uint16_t v) { b_put(b, &v, 2); }
static void b_u32(buf *b, uint32_t v) { b_put(b, &v, 4); }
static void b_u64(buf *b, uint64_t v) { b_put(b, &v, 8); }
static void b_f32(buf *b, float v) { b_put(b, &v, 4); }
static void b_f64(buf *b, double v) { b_put(b, &v, 8); }
static void b_str(buf *b, const char *s) { b_u64(b, strlen(s)); b_put(b, s, strlen(s)); }
static void b_pad(buf *b, size_t align) { while (b->n % align) b_u8(b, 0); }

static void b_header(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    b_put(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, n_tensors);
    b_u64(b, n_kv);
}
static void kv_hdr(buf *b, const char *key, uint32_t type) { b_str(b, key); b_u32(b, type); }
static void kv_u32(buf *b, const char *key, uint32_t v) { kv_hdr(b, key, GGUF_T_UINT32); b_u32(b, v); }
static void kv_f32(buf *b, const char *key, float v) { kv_hdr(b, key, GGUF_T_FLOAT32); b_f32(b, v); }
static void kv_str(buf *b, const char *key, const char *v) { kv_hdr(b, key, GGUF_T_STRING); b_str(b, v); }
static void kv_bool(buf *b, const char *key, int v) { kv_hdr(b, key, GGUF_T_BOOL); b_u8(b, (uint8_t)v); }
static void kv_strs(buf *b, const char *key, const char *const *v, int n) {
    kv_hdr(b, key, GGUF_T_ARRAY);
    b_u32(b, GGUF_T_STRING);
    b_u64(b, (uint64_t)n);
    for (int i = 0; i < n; i++) b_str(b, v[i]);
}
/* ne in GGUF order (ne[0] contiguous). */
static void tinfo(buf *b, const char *name, uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off) {
    b_str(b, name);
    b_u32(b, nd);
    for (uint32_t i = 0; i < nd; i++) b_u64(b, ne[i]);
    b_u32(b, type);
    b_u64(b, off);
}

static const char *write_tmp(const char *name, const buf *b) {
    static char path[8][512];
    static int slot;
    char *p = path[slot++ % 8];
    snprintf(p, 512, "%s/%s", alrd_test_tmpdir(), name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b->p, 1, b->n, f), b->n);
    fclose(f);
    return p;
}

/* b written to the temporary file name (b freed) and opened as g, which must succeed. */
static void open_tmp(alrd_gguf *g, const char *name, buf *b) {
    const char *path = write_tmp(name, b);
    free(b->p);
    alrd_error err;
    if (alrd_gguf_open(g, path, &err) != 0) {
        print_error("%s\n", err.msg);
        fail();
    }
}

/* Asserts opening path fails with a message naming the file and each of
 * the given substrings. */
static void expect_open_fails(const char *path, const char *want1, const char *want2) {
    alrd_gguf g;
    alrd_error err = {{0}};
    int rc = alrd_gguf_open(&g, path, &err);
    if (rc == 0) {
        alrd_gguf_close(&g);
        print_error("%s: opened, expected an error containing '%s'\n", path, want1);
        fail();
    }
    if (!strstr(err.msg, path) || (want1 && !strstr(err.msg, want1)) || (want2 && !strstr(err.msg, want2))) {
        print_error("error '%s' lacks path / '%s' / '%s'\n", err.msg, want1 ? want1 : "", want2 ? want2 : "");
        fail();
    }
}

/* ---- the all-types file ------------------------------------------------- */

typedef struct {
    size_t after_header, in_first_key, in_nested, in_tensor_info, before_data, in_data;
} marks;

/* Every metadata type, nested arrays, general.alignment = 64 and three
 * tensors (F32 [3,4], F16 [2], Q8_0 [2,32]). */
static buf all_types_file(uint32_t version, marks *m) {
    buf b = {0};
    b_header(&b, version, 3, 17);
    m->after_header = b.n;
    m->in_first_key = b.n + 10;
    kv_hdr(&b, "t.u8", GGUF_T_UINT8); b_u8(&b, 200);
    kv_hdr(&b, "t.i8", GGUF_T_INT8); b_u8(&b, (uint8_t)(int8_t)-100);
    kv_hdr(&b, "t.u16", GGUF_T_UINT16); b_u16(&b, 60000);
    kv_hdr(&b, "t.i16", GGUF_T_INT16); b_u16(&b, (uint16_t)(int16_t)-30000);
    kv_u32(&b, "t.u32", 4000000000u);
    kv_hdr(&b, "t.i32", GGUF_T_INT32); b_u32(&b, (uint32_t)(int32_t)-2000000000);
    kv_f32(&b, "t.f32", 1.5f);
    kv_bool(&b, "t.bool", 1);
    kv_str(&b, "t.str", "h\xc3\xa9llo");
    kv_hdr(&b, "t.u64", GGUF_T_UINT64); b_u64(&b, (1ull << 63) + 5);
    kv_hdr(&b, "t.i64", GGUF_T_INT64); b_u64(&b, (uint64_t)(int64_t)-(1ll << 40));
    kv_hdr(&b, "t.f64", GGUF_T_FLOAT64); b_f64(&b, 0.1);
    kv_hdr(&b, "t.arr_i32", GGUF_T_ARRAY); b_u32(&b, GGUF_T_INT32); b_u64(&b, 3);
    b_u32(&b, 1); b_u32(&b, (uint32_t)-2); b_u32(&b, 3);
    static const char *strs[] = {"a", "bc", ""};
    kv_strs(&b, "t.arr_str", strs, 3);
    /* [[1, 2], [], [3]] as array of arrays of u8 */
    kv_hdr(&b, "t.nested", GGUF_T_ARRAY); b_u32(&b, GGUF_T_ARRAY); b_u64(&b, 3);
    b_u32(&b, GGUF_T_UINT8); b_u64(&b, 2); b_u8(&b, 1); b_u8(&b, 2);
    m->in_nested = b.n - 1;
    b_u32(&b, GGUF_T_UINT8); b_u64(&b, 0);
    b_u32(&b, GGUF_T_UINT8); b_u64(&b, 1); b_u8(&b, 3);
    kv_hdr(&b, "t.empty", GGUF_T_ARRAY); b_u32(&b, GGUF_T_FLOAT32); b_u64(&b, 0);
    kv_u32(&b, "general.alignment", 64);
    m->in_tensor_info = b.n + 5;
    tinfo(&b, "w", 2, (const uint64_t[]){4, 3}, ALRD_F32, 0);
    tinfo(&b, "h", 1, (const uint64_t[]){2}, ALRD_F16, 64);
    tinfo(&b, "q", 2, (const uint64_t[]){32, 2}, ALRD_Q8_0, 128);
    m->before_data = b.n;
    b_pad(&b, 64);
    size_t base = b.n;
    for (int i = 0; i < 12; i++) b_f32(&b, (float)i);
    while (b.n < base + 64) b_u8(&b, 0xEE);
    b_u16(&b, 0x3C00); b_u16(&b, 0xC000);
    while (b.n < base + 128) b_u8(&b, 0xEE);
    m->in_data = b.n + 3;
    for (int blk = 0; blk < 2; blk++) {
        b_u16(&b, blk ? 0x4000 : 0x3800); /* d = 0.5, then 2 */
        for (int j = 0; j < 32; j++) b_u8(&b, (uint8_t)(int8_t)(j - 16));
    }
    return b;
}

static void test_all_types(void **state) {
    (void)state;
    for (uint32_t version = 2; version <= 3; version++) {
        marks m;
        buf b = all_types_file(version, &m);
        const char *path = write_tmp("all.gguf", &b);
        free(b.p);
        alrd_gguf g;
        alrd_error err;
        if (alrd_gguf_open(&g, path, &err) != 0) {
            print_error("%s\n", err.msg);
            fail();
        }
        assert_int_equal(g.version, version);
        assert_int_equal(g.n_kv, 17);
        assert_int_equal(g.n_tensors, 3);
        assert_int_equal(g.alignment, 64);
        assert_int_equal(g.data_offset % 64, 0);
        int64_t i;
        double f;
        char *s;
        assert_int_equal(alrd_gguf_get_int(&g, "t.u8", &i, NULL), 0); assert_int_equal(i, 200);
        assert_int_equal(alrd_gguf_get_int(&g, "t.i8", &i, NULL), 0); assert_int_equal(i, -100);
        assert_int_equal(alrd_gguf_get_int(&g, "t.u16", &i, NULL), 0); assert_int_equal(i, 60000);
        assert_int_equal(alrd_gguf_get_int(&g, "t.i16", &i, NULL), 0); assert_int_equal(i, -30000);
        assert_int_equal(alrd_gguf_get_int(&g, "t.u32", &i, NULL), 0); assert_int_equal(i, 4000000000ll);
        assert_int_equal(alrd_gguf_get_int(&g, "t.i32", &i, NULL), 0); assert_int_equal(i, -2000000000ll);
        assert_int_equal(alrd_gguf_get_int(&g, "t.i64", &i, NULL), 0); assert_true(i == -(1ll << 40));
        assert_int_equal(alrd_gguf_get_int(&g, "t.bool", &i, NULL), 0); assert_int_equal(i, 1);
        /* 2^63+5 does not fit int64: the getter refuses, the raw value is intact */
        assert_int_equal(alrd_gguf_get_int(&g, "t.u64", &i, &err), -1);
        assert_non_null(strstr(err.msg, "t.u64"));
        assert_true(alrd_gguf_find(&g, "t.u64")->value.v.u64 == (1ull << 63) + 5);
        assert_int_equal(alrd_gguf_get_float(&g, "t.f32", &f, NULL), 0); assert_true(f == 1.5);
        assert_int_equal(alrd_gguf_get_float(&g, "t.f64", &f, NULL), 0); assert_true(f == 0.1);
        assert_int_equal(alrd_gguf_get_float(&g, "t.i32", &f, NULL), 0); assert_true(f == -2e9);
        assert_int_equal(alrd_gguf_get_str(&g, "t.str", &s, NULL), 0);
        assert_string_equal(s, "h\xc3\xa9llo");
        free(s);
        /* wrong type / missing: errors name file and key */
        assert_int_equal(alrd_gguf_get_int(&g, "t.str", &i, &err), -1);
        assert_non_null(strstr(err.msg, path)); assert_non_null(strstr(err.msg, "t.str"));
        assert_int_equal(alrd_gguf_get_str(&g, "t.u8", &s, &err), -1);
        assert_non_null(strstr(err.msg, "t.u8"));
        assert_int_equal(alrd_gguf_get_float(&g, "nope", &f, &err), -1);
        assert_non_null(strstr(err.msg, "nope"));
        assert_null(alrd_gguf_find(&g, "nope"));

        const alrd_gguf_value *a = &alrd_gguf_find(&g, "t.arr_i32")->value;
        assert_int_equal(a->type, GGUF_T_ARRAY);
        assert_int_equal(a->v.arr.elem, GGUF_T_INT32);
        assert_int_equal(a->v.arr.n, 3);
        /* scalars stay in the mapping: no per-item values */
        assert_null(a->v.arr.items);
        assert_true(a->v.arr.raw > g.map.data && a->v.arr.raw < g.map.data + g.map.size);
        assert_true(alrd_gguf_item(a, 0).v.i64 == 1 && alrd_gguf_item(a, 1).v.i64 == -2 && alrd_gguf_item(a, 2).v.i64 == 3);
        assert_int_equal(alrd_gguf_item(a, 3).type, 0); /* past the end: a zero value */
        a = &alrd_gguf_find(&g, "t.arr_str")->value;
        assert_int_equal(a->v.arr.n, 3);
        assert_int_equal(a->v.arr.items[1].v.str.len, 2);
        assert_memory_equal(a->v.arr.items[1].v.str.ptr, "bc", 2);
        assert_int_equal(a->v.arr.items[2].v.str.len, 0);
        a = &alrd_gguf_find(&g, "t.nested")->value;
        assert_int_equal(a->v.arr.elem, GGUF_T_ARRAY);
        assert_int_equal(a->v.arr.n, 3);
        assert_int_equal(a->v.arr.items[0].v.arr.n, 2);
        assert_int_equal(alrd_gguf_item(&a->v.arr.items[0], 1).v.u64, 2);
        assert_int_equal(a->v.arr.items[1].v.arr.n, 0);
        assert_int_equal(alrd_gguf_item(&a->v.arr.items[2], 0).v.u64, 3);
        a = &alrd_gguf_find(&g, "t.empty")->value;
        assert_int_equal(a->v.arr.elem, GGUF_T_FLOAT32);
        assert_int_equal(a->v.arr.n, 0);

        const alrd_tensor *t = alrd_gguf_tensor(&g, "w");
        assert_non_null(t);
        assert_int_equal(t->n_dims, 2);
        assert_int_equal(t->shape[0], 3); /* reversed: row-major [3, 4] */
        assert_int_equal(t->shape[1], 4);
        assert_int_equal(t->nbytes, 48);
        assert_ptr_equal(t->data, g.map.data + g.data_offset);
        float out[64];
        assert_int_equal(alrd_tensor_rows_f32(t, 2, 1, out, &err), 0);
        assert_true(out[0] == 8 && out[3] == 11);
        t = alrd_gguf_tensor(&g, "h");
        assert_ptr_equal(t->data, g.map.data + g.data_offset + 64);
        assert_int_equal(alrd_tensor_to_f32(t, out, &err), 0);
        assert_true(out[0] == 1.0f && out[1] == -2.0f);
        t = alrd_gguf_tensor(&g, "q");
        assert_int_equal(t->shape[0], 2);
        assert_int_equal(t->nbytes, 68);
        assert_int_equal(alrd_tensor_to_f32(t, out, &err), 0);
        assert_true(out[0] == -8.0f && out[31] == 7.5f && out[32] == -32.0f && out[63] == 30.0f);
        assert_null(alrd_gguf_tensor(&g, "x"));
        alrd_gguf_close(&g);
    }
}

/* A 32 MiB array of u8 costs its 32 MiB in the mapping and nothing more: one value struct per item would be
 * a 1 GiB allocation, sized by a count the file states. */
static void test_big_scalar_array(void **state) {
    (void)state;
    const uint64_t n = 32ull << 20;
    buf b = {0};
    b_header(&b, 3, 0, 2);
    kv_hdr(&b, "big.u8", GGUF_T_ARRAY);
    b_u32(&b, GGUF_T_UINT8);
    b_u64(&b, n);
    size_t at = b.n;
    for (uint64_t i = 0; i < n; i += 4096) {
        uint8_t blk[4096];
        for (int k = 0; k < 4096; k++) blk[k] = (uint8_t)((i + k) * 7);
        b_put(&b, blk, sizeof blk);
    }
    kv_hdr(&b, "big.f32", GGUF_T_ARRAY);
    b_u32(&b, GGUF_T_FLOAT32);
    b_u64(&b, 3);
    b_f32(&b, 0.5f), b_f32(&b, -1.0f), b_f32(&b, 3e9f);
    assert_int_equal(b.p[at + 12345], (uint8_t)(12345 * 7));
    alrd_gguf g;
    open_tmp(&g, "big.gguf", &b);
    const alrd_gguf_value *a = &alrd_gguf_find(&g, "big.u8")->value;
    assert_true(a->v.arr.n == n);
    assert_null(a->v.arr.items);
    assert_ptr_equal(a->v.arr.raw, g.map.data + at);
    assert_int_equal(alrd_gguf_item(a, 12345).v.u64, (uint8_t)(12345 * 7));
    assert_int_equal(alrd_gguf_item(a, n - 1).v.u64, (uint8_t)((n - 1) * 7));
    a = &alrd_gguf_find(&g, "big.f32")->value;
    assert_true(alrd_gguf_item(a, 0).v.f64 == 0.5 && alrd_gguf_item(a, 1).v.f64 == -1.0 && alrd_gguf_item(a, 2).v.f64 == 3e9f);
    alrd_gguf_close(&g);

    /* a bool array with a byte that is not 0 or 1: refused, naming the item */
    buf c = {0};
    b_header(&c, 3, 0, 1);
    kv_hdr(&c, "bad.bools", GGUF_T_ARRAY);
    b_u32(&c, GGUF_T_BOOL);
    b_u64(&c, 3);
    b_u8(&c, 1), b_u8(&c, 0), b_u8(&c, 2);
    const char *path = write_tmp("bools.gguf", &c);
    free(c.p);
    expect_open_fails(path, "bad.bools", "bool byte 2 is 2");
}

static void test_zero_tensors(void **state) {
    (void)state;
    buf b = {0};
    b_header(&b, 3, 0, 1);
    kv_str(&b, "general.name", "empty"); /* no padding, no data: allowed */
    const char *path = write_tmp("zero.gguf", &b);
    free(b.p);
    alrd_gguf g;
    alrd_error err;
    assert_int_equal(alrd_gguf_open(&g, path, &err), 0);
    assert_int_equal(g.n_tensors, 0);
    assert_int_equal(g.n_kv, 1);
    alrd_gguf_close(&g);
    b = (buf){0};
    b_header(&b, 3, 0, 0); /* no kv either */
    path = write_tmp("zero2.gguf", &b);
    free(b.p);
    assert_int_equal(alrd_gguf_open(&g, path, &err), 0);
    alrd_gguf_close(&g);
}

static void test_truncated(void **state) {
    (void)state;
    marks m;
    buf b = all_types_file(3, &m);
    size_t cuts[] = {0, 3, 4, 6, 8, 20, m.after_header, m.in_first_key, m.in_nested,
                     m.in_tensor_info, m.before_data, m.in_data, b.n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        buf c = {b.p, cuts[i], cuts[i]};
        const char *path = write_tmp("trunc.gguf", &c);
        /* header/kv/info cuts report "truncated"; a cut in the data names the tensor */
        if (cuts[i] < 4) expect_open_fails(path, "magic", "truncated");
        else if (cuts[i] < m.before_data) expect_open_fails(path, "truncated", NULL);
        else if (cuts[i] == m.before_data) expect_open_fails(path, "tensor 'w'", "past the end");
        else expect_open_fails(path, "tensor 'q'", "past the end");
    }
    free(b.p);
}

static void test_bad_header(void **state) {
    (void)state;
    buf b = {0};
    b_put(&b, "GGUX", 4); b_u32(&b, 3); b_u64(&b, 0); b_u64(&b, 0);
    expect_open_fails(write_tmp("magic.gguf", &b), "magic", NULL);
    free(b.p);
    b = (buf){0}; b_header(&b, 1, 0, 0);
    expect_open_fails(write_tmp("v1.gguf", &b), "version", "v1");
    free(b.p);
    b = (buf){0}; b_header(&b, 99, 0, 0);
    expect_open_fails(write_tmp("v99.gguf", &b), "version", "99");
    free(b.p);
    /* big-endian files read as version 0x03000000 */
    b = (buf){0}; b_header(&b, 0x03000000, 0, 0);
    expect_open_fails(write_tmp("vbe.gguf", &b), "version", NULL);
    free(b.p);
    b = (buf){0}; b_header(&b, 3, 0, 1ull << 60);
    expect_open_fails(write_tmp("nkv.gguf", &b), "kv count", NULL);
    free(b.p);
    b = (buf){0}; b_header(&b, 3, 1ull << 60, 0);
    expect_open_fails(write_tmp("ntens.gguf", &b), "tensor count", NULL);
    free(b.p);
}

static void test_bad_kv(void **state) {
    (void)state;
    buf b = {0};
    b_header(&b, 3, 0, 1);
    kv_hdr(&b, "k.str", GGUF_T_STRING); b_u64(&b, 1ull << 62); b_put(&b, "abc", 3);
    expect_open_fails(write_tmp("strlen.gguf", &b), "k.str", "string length");
    free(b.p);
    b = (buf){0};
    b_header(&b, 3, 0, 1);
    b_u64(&b, ~0ull); b_put(&b, "key-and-some-more-bytes", 23); /* absurd key length */
    expect_open_fails(write_tmp("keylen.gguf", &b), "kv 0 key", "string length");
    free(b.p);
    b = (buf){0};
    b_header(&b, 3, 0, 1);
    kv_hdr(&b, "k.arr", GGUF_T_ARRAY); b_u32(&b, GGUF_T_UINT32); b_u64(&b, 1ull << 61); b_u32(&b, 7);
    expect_open_fails(write_tmp("arrlen.gguf", &b), "k.arr", "array length");
    free(b.p);
    b = (buf){0};
    b_header(&b, 3, 0, 1);
    kv_hdr(&b, "k.arr", GGUF_T_ARRAY); b_u32(&b, GGUF_T_STRING); b_u64(&b, 1000); b_str(&b, "x");
    expect_open_fails(write_tmp("arrlen2.gguf", &b), "k.arr", "array length");
    free(b.p);
    b = (buf){0};
    b_header(&b, 3, 0, 1);
    kv_hdr(&b, "k.bad", 13); b_u32(&b, 0);
    expect_open_fails(write_tmp("kvtype.gguf", &b), "k.bad", "type 13");
    free(b.p);
    b = (buf){0};
    b_header(&b, 3, 0, 1);
    kv_hdr(&b, "k.arr", GGUF_T_ARRAY); b_u32(&b, 42); b_u64(&b, 1); b_u32(&b, 0);
    expect_open_fails(write_tmp("elemtype.gguf", &b), "k.arr", "element type 42");
    free(b.p);
    b = (buf){0};
    b_header(&b, 3, 0, 1);
    kv_hdr(&b, "k.deep", GGUF_T_ARRAY);
    for (int d = 0; d < 20; d++) { b_u32(&b, GGUF_T_ARRAY); b_u64(&b, 1); }
    b_u32(&b, GGUF_T_UINT8); b_u64(&b, 0);
    expect_open_fails(write_tmp("deep.gguf", &b), "k.deep", "nested");
    free(b.p);
    b = (buf){0};
    b_header(&b, 3, 0, 2);
    kv_u32(&b, "k.dup", 1); kv_u32(&b, "k.dup", 2);
    expect_open_fails(write_tmp("dup.gguf", &b), "k.dup", "more than once");
    free(b.p);
    b = (buf){0};
    b_header(&b, 3, 0, 1);
    kv_u32(&b, "general.alignment", 48);
    expect_open_fails(write_tmp("align.gguf", &b), "general.alignment", NULL);
    free(b.p);
    b = (buf){0};
    b_header(&b, 3, 0, 1);
    kv_hdr(&b, "k.b", GGUF_T_BOOL); b_u8(&b, 7);
    expect_open_fails(write_tmp("bool.gguf", &b), "k.b", "bool");
    free(b.p);
}

/* One tensor "t" with the given dims/type/offset and 4 KiB of data. */
static const char *one_tensor(const char *file, uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off) {
    buf b = {0};
    b_header(&b, 3, 1, 0);
    tinfo(&b, "t", nd, ne, type, off);
    b_pad(&b, 32);
    for (int i = 0; i < 4096; i++) b_u8(&b, 0);
    const char *p = write_tmp(file, &b);
    free(b.p);
    return p;
}

static void test_bad_tensors(void **state) {
    (void)state;
    alrd_gguf g;
    alrd_error err;
    /* the baseline opens: 32 x 2 F32 = 256 bytes at offset 0 */
    assert_int_equal(alrd_gguf_open(&g, one_tensor("ok.gguf", 2, (const uint64_t[]){32, 2}, ALRD_F32, 0), &err), 0);
    alrd_gguf_close(&g);
    expect_open_fails(one_tensor("end.gguf", 2, (const uint64_t[]){32, 2}, ALRD_F32, 4096),
                      "tensor 't'", "past the end");
    expect_open_fails(one_tensor("end2.gguf", 1, (const uint64_t[]){2000}, ALRD_F32, 0),
                      "tensor 't'", "past the end");
    expect_open_fails(one_tensor("hugeoff.gguf", 1, (const uint64_t[]){32}, ALRD_F32, ~0ull - 31),
                      "tensor 't'", "past the end");
    expect_open_fails(one_tensor("misal.gguf", 1, (const uint64_t[]){32}, ALRD_F32, 16),
                      "tensor 't'", "alignment");
    expect_open_fails(one_tensor("absurd.gguf", 1, (const uint64_t[]){1ull << 62}, ALRD_F32, 0),
                      "tensor 't'", "overflows");
    expect_open_fails(one_tensor("absurd2.gguf", 1, (const uint64_t[]){1ull << 62}, ALRD_Q4_0, 0),
                      "tensor 't'", "past the end");
    expect_open_fails(one_tensor("neg.gguf", 1, (const uint64_t[]){1ull << 63}, ALRD_F32, 0),
                      "tensor 't'", "dimension 0");
    expect_open_fails(one_tensor("zero.gguf", 2, (const uint64_t[]){32, 0}, ALRD_F32, 0),
                      "tensor 't'", "dimension 1");
    expect_open_fails(one_tensor("prod.gguf", 4, (const uint64_t[]){1ull << 20, 1ull << 20, 1ull << 20, 1ull << 20},
                                 ALRD_F32, 0),
                      "tensor 't'", "overflows");
    expect_open_fails(one_tensor("dtype.gguf", 1, (const uint64_t[]){32}, 99, 0),
                      "tensor 't'", "unsupported tensor type 99");
    expect_open_fails(one_tensor("iq.gguf", 1, (const uint64_t[]){256}, 16, 0),
                      "tensor 't'", "IQ2_XXS");
    expect_open_fails(one_tensor("block.gguf", 1, (const uint64_t[]){48}, ALRD_Q4_0, 0),
                      "tensor 't'", "multiple of the Q4_0 block");
    /* n_dims 7: ne[] would be read past; the count itself is refused */
    buf b = {0};
    b_header(&b, 3, 1, 0);
    b_str(&b, "t7");
    b_u32(&b, 7);
    for (int i = 0; i < 7; i++) b_u64(&b, 1);
    b_u32(&b, 0); b_u64(&b, 0);
    b_pad(&b, 32);
    b_f32(&b, 0);
    expect_open_fails(write_tmp("ndims.gguf", &b), "tensor 't7'", "n_dims 7");
    free(b.p);
    /* duplicate tensor names */
    b = (buf){0};
    b_header(&b, 3, 2, 0);
    tinfo(&b, "d", 1, (const uint64_t[]){8}, ALRD_F32, 0);
    tinfo(&b, "d", 1, (const uint64_t[]){8}, ALRD_F32, 32);
    b_pad(&b, 32);
    for (int i = 0; i < 64; i++) b_u8(&b, 0);
    expect_open_fails(write_tmp("tdup.gguf", &b), "tensor 'd'", "more than once");
    free(b.p);
    /* a name longer than ALRD_NAME_MAX */
    char longname[300];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    b = (buf){0};
    b_header(&b, 3, 1, 0);
    tinfo(&b, longname, 1, (const uint64_t[]){8}, ALRD_F32, 0);
    b_pad(&b, 32);
    for (int i = 0; i < 32; i++) b_u8(&b, 0);
    expect_open_fails(write_tmp("tname.gguf", &b), "tensor 0 name", NULL);
    free(b.p);
}

/* ---- GGUF -> source on a tiny llama / qwen2 --------------------------- */

/* 1 layer, hidden 8, 2 heads, 1 KV head (head_dim 4), ffn 16, vocab 4,
 * all F32. Row r of every 2-D tensor holds r*100 + col. */
static const char *tiny_model(const char *file, const char *arch, int untied, int bias, int key_length) {
    struct { const char *name; uint64_t ne0, ne1; } t[] = {
        {"token_embd.weight", 8, 4},      {"output_norm.weight", 8, 0},
        {"blk.0.attn_norm.weight", 8, 0}, {"blk.0.ffn_norm.weight", 8, 0},
        {"blk.0.attn_q.weight", 8, 8},    {"blk.0.attn_k.weight", 8, 4},
        {"blk.0.attn_v.weight", 8, 4},    {"blk.0.attn_output.weight", 8, 8},
        {"blk.0.ffn_gate.weight", 8, 16}, {"blk.0.ffn_up.weight", 8, 16},
        {"blk.0.ffn_down.weight", 16, 8}, {"output.weight", 8, 4},
        {"blk.0.attn_q.bias", 8, 0},      {"blk.0.attn_k.bias", 4, 0},
        {"blk.0.attn_v.bias", 4, 0},      {"blk.0.something_new.weight", 4, 0},
    };
    int nt = 11 + (untied ? 1 : 0);
    int with_bias = bias ? 3 : 0;
    buf b = {0};
    char key[96];
    static const char *tokens[] = {"a", "b", "ab", "<s>"};
    static const char *merges[] = {"a b"};
    b_header(&b, 3, (uint64_t)(nt + with_bias + 1), key_length ? 14 : 13);
    kv_str(&b, "general.architecture", arch);
#define K(s) (snprintf(key, sizeof key, "%s.%s", arch, s), key)
    kv_u32(&b, K("block_count"), 1);
    kv_u32(&b, K("embedding_length"), 8);
    kv_u32(&b, K("feed_forward_length"), 16);
    kv_u32(&b, K("attention.head_count"), 2);
    kv_u32(&b, K("attention.head_count_kv"), 1);
    kv_u32(&b, K("context_length"), 128);
    kv_f32(&b, K("attention.layer_norm_rms_epsilon"), 1e-6f);
    if (key_length) kv_u32(&b, K("attention.key_length"), 4);
#undef K
    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    kv_strs(&b, "tokenizer.ggml.tokens", tokens, 4);
    kv_strs(&b, "tokenizer.ggml.merges", merges, 1);
    kv_u32(&b, "tokenizer.ggml.bos_token_id", 3);
    kv_u32(&b, "tokenizer.ggml.eos_token_id", 99); /* out of range: ignored, as llama.cpp does */
    size_t off = 0, offs[20];
    int idx[20], n = 0;
    for (int i = 0; i < nt; i++) idx[n++] = i;
    for (int i = 0; i < with_bias; i++) idx[n++] = 12 + i;
    idx[n++] = 15;
    for (int k = 0; k < n; k++) {
        int i = idx[k];
        uint64_t ne[2] = {t[i].ne0, t[i].ne1};
        offs[k] = off;
        tinfo(&b, t[i].name, t[i].ne1 ? 2 : 1, ne, ALRD_F32, off);
        off += (size_t)(t[i].ne0 * (t[i].ne1 ? t[i].ne1 : 1) * 4 + 31) / 32 * 32;
    }
    b_pad(&b, 32);
    size_t base = b.n;
    for (int k = 0; k < n; k++) {
        int i = idx[k];
        while (b.n < base + offs[k]) b_u8(&b, 0);
        for (uint64_t r = 0; r < (t[i].ne1 ? t[i].ne1 : 1); r++)
            for (uint64_t c = 0; c < t[i].ne0; c++) b_f32(&b, (float)(r * 100 + c));
    }
    const char *p = write_tmp(file, &b);
    free(b.p);
    return p;
}

static void test_source_tiny_llama(void **state) {
    (void)state;
    alrd_source s;
    alrd_error err;
    const char *path = tiny_model("tiny_llama.gguf", "llama", 0, 0, 0);
    if (alrd_source_open(&s, path, &err)) {
        print_error("%s\n", err.msg);
        fail();
    }
    const alrd_config *c = &s.config;
    assert_int_equal(s.format, ALRD_SRC_GGUF);
    assert_string_equal(c->arch, "llama");
    assert_int_equal(c->n_layers, 1);
    assert_int_equal(c->hidden, 8);
    assert_int_equal(c->n_heads, 2);
    assert_int_equal(c->n_kv_heads, 1);
    assert_int_equal(c->head_dim, 4);
    assert_int_equal(c->ffn, 16);
    assert_int_equal(c->vocab_size, 4); /* no ARCH.vocab_size: counted from tokens */
    assert_int_equal(c->max_ctx, 128);
    assert_true(c->rope_theta == 10000.0f); /* default when freq_base is absent */
    assert_true(c->rms_eps == 1e-6f);
    assert_int_equal(c->tie_embeddings, 1);
    assert_int_equal(c->attention_bias, 0);
    assert_int_equal(s.n_tensors, 12);
    const alrd_tensor *t;
    assert_int_equal(alrd_source_expect(&s, "model.embed_tokens.weight", 4, 8, &t, &err), 0);
    assert_int_equal(alrd_source_expect(&s, "model.norm.weight", 8, 0, &t, &err), 0);
    assert_int_equal(alrd_source_expect(&s, "model.layers.0.input_layernorm.weight", 8, 0, &t, &err), 0);
    assert_int_equal(alrd_source_expect(&s, "model.layers.0.post_attention_layernorm.weight", 8, 0, &t, &err), 0);
    assert_int_equal(alrd_source_expect(&s, "model.layers.0.self_attn.o_proj.weight", 8, 8, &t, &err), 0);
    assert_int_equal(alrd_source_expect(&s, "model.layers.0.self_attn.v_proj.weight", 4, 8, &t, &err), 0);
    assert_int_equal(t->unpermute_heads, 0);
    assert_int_equal(alrd_source_expect(&s, "model.layers.0.mlp.gate_proj.weight", 16, 8, &t, &err), 0);
    assert_int_equal(alrd_source_expect(&s, "model.layers.0.mlp.up_proj.weight", 16, 8, &t, &err), 0);
    assert_int_equal(alrd_source_expect(&s, "model.layers.0.mlp.down_proj.weight", 8, 16, &t, &err), 0);
    assert_non_null(alrd_source_tensor(&s, "blk.0.something_new.weight")); /* unknown: GGUF name kept */
    assert_null(alrd_source_tensor(&s, "lm_head.weight"));
    /* q: 2 heads of 4 rows; GGUF rows (0,1,2,3) hold HF rows (0,2,1,3) */
    assert_int_equal(alrd_source_expect(&s, "model.layers.0.self_attn.q_proj.weight", 8, 8, &t, &err), 0);
    assert_int_equal(t->unpermute_heads, 2);
    float out[64];
    assert_int_equal(alrd_tensor_to_f32(t, out, &err), 0);
    static const int q_src[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    for (int r = 0; r < 8; r++) assert_true(out[r * 8 + 1] == (float)(q_src[r] * 100 + 1));
    assert_int_equal(alrd_source_expect(&s, "model.layers.0.self_attn.k_proj.weight", 4, 8, &t, &err), 0);
    assert_int_equal(t->unpermute_heads, 1);
    assert_int_equal(alrd_tensor_to_f32(t, out, &err), 0);
    assert_true(out[0] == 0 && out[8] == 200 && out[16] == 100 && out[24] == 300);
    /* shape and presence errors name file and tensor */
    assert_int_equal(alrd_source_expect(&s, "model.layers.0.self_attn.k_proj.weight", 8, 8, &t, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "k_proj.weight: shape 4 x 8, expected 8 x 8"));
    assert_int_equal(alrd_source_expect(&s, "model.layers.1.mlp.up_proj.weight", 16, 8, &t, &err), -1);
    assert_non_null(strstr(err.msg, "model.layers.1.mlp.up_proj.weight"));
    assert_null(t);
    /* vocab */
    assert_int_equal(s.vocab.kind, ALRD_VOCAB_BPE_BYTES);
    assert_int_equal(s.vocab.n_tokens, 4);
    assert_string_equal(s.vocab.tokens[2], "ab");
    assert_int_equal(s.vocab.n_merges, 1);
    assert_string_equal(s.vocab.merges[0], "a b");
    assert_int_equal(s.vocab.bos_id, 3);
    assert_int_equal(s.vocab.eos_id, -1);
    assert_int_equal(s.vocab.add_bos, 0);
    assert_int_equal(s.vocab.add_space_prefix, 0);
    assert_string_equal(s.vocab.pre, "default");
    assert_null(s.vocab.scores);
    assert_null(s.vocab.chat_template);
    alrd_source_close(&s);
}

static void test_source_tiny_qwen2(void **state) {
    (void)state;
    alrd_source s;
    alrd_error err;
    const char *path = tiny_model("tiny_qwen.gguf", "qwen2", 1, 1, 1);
    if (alrd_source_open(&s, path, &err)) {
        print_error("%s\n", err.msg);
        fail();
    }
    assert_string_equal(s.config.arch, "qwen2");
    assert_int_equal(s.config.tie_embeddings, 0);
    assert_int_equal(s.config.attention_bias, 1);
    assert_int_equal(s.config.head_dim, 4);
    const alrd_tensor *t;
    assert_int_equal(alrd_source_expect(&s, "lm_head.weight", 4, 8, &t, &err), 0);
    assert_int_equal(alrd_source_expect(&s, "model.layers.0.self_attn.q_proj.bias", 8, 0, &t, &err), 0);
    assert_int_equal(alrd_source_expect(&s, "model.layers.0.self_attn.k_proj.bias", 4, 0, &t, &err), 0);
    assert_int_equal(alrd_source_expect(&s, "model.layers.0.self_attn.q_proj.weight", 8, 8, &t, &err), 0);
    assert_int_equal(t->unpermute_heads, 0); /* qwen2 is not permuted */
    float out[64];
    assert_int_equal(alrd_tensor_to_f32(t, out, &err), 0);
    for (int r = 0; r < 8; r++) assert_true(out[r * 8] == (float)(r * 100));
    alrd_source_close(&s);
}

static void test_source_errors(void **state) {
    (void)state;
    alrd_source s;
    alrd_error err;
    char path[512];
    assert_int_equal(alrd_source_open(&s, "/nonexistent/x.gguf", &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/x.gguf"));
    snprintf(path, sizeof path, "%s/junk.bin", alrd_test_tmpdir());
    FILE *f = fopen(path, "wb");
    fputs("JUNKJUNK", f);
    fclose(f);
    assert_int_equal(alrd_source_open(&s, path, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "magic"));
    /* an unsupported architecture is named */
    buf b = {0};
    b_header(&b, 3, 0, 1);
    kv_str(&b, "general.architecture", "mamba");
    const char *p = write_tmp("mamba.gguf", &b);
    free(b.p);
    assert_int_equal(alrd_source_open(&s, p, &err), -1);
    assert_non_null(strstr(err.msg, "general.architecture"));
    assert_non_null(strstr(err.msg, "mamba"));
    /* a missing required key is named */
    b = (buf){0};
    b_header(&b, 3, 0, 2);
    kv_str(&b, "general.architecture", "llama");
    kv_u32(&b, "llama.block_count", 2);
    p = write_tmp("nokeys.gguf", &b);
    free(b.p);
    assert_int_equal(alrd_source_open(&s, p, &err), -1);
    assert_non_null(strstr(err.msg, "llama.embedding_length"));
}

static alrd_config good_config(void) {
    alrd_config c = {.arch = "llama", .n_layers = 30, .hidden = 576, .n_heads = 9, .n_kv_heads = 3,
                     .head_dim = 64, .ffn = 1536, .vocab_size = 49152, .max_ctx = 8192,
                     .rms_eps = 1e-5f, .rope_theta = 1e5f};
    return c;
}

static void test_config_validate(void **state) {
    (void)state;
    alrd_error err;
    alrd_config c = good_config();
    assert_int_equal(alrd_config_validate(&c, "F", &err), 0);
#define BAD(field, value, want)                                              \
    do {                                                                     \
        c = good_config();                                                   \
        c.field = value;                                                     \
        assert_int_equal(alrd_config_validate(&c, "F", &err), -1);           \
        assert_non_null(strstr(err.msg, "F: config: "));                     \
        assert_non_null(strstr(err.msg, want));                              \
    } while (0)
    BAD(n_layers, 0, "n_layers");
    BAD(n_layers, 5000, "n_layers");
    BAD(hidden, -1, "hidden");
    BAD(n_kv_heads, 4, "n_kv_heads");  /* 9 % 4 != 0 */
    BAD(n_kv_heads, 18, "n_kv_heads"); /* more KV heads than heads */
    BAD(head_dim, 63, "head_dim");
    BAD(vocab_size, 5 << 20, "vocab_size");
    BAD(ffn, 0, "ffn");
    BAD(max_ctx, 0, "max_ctx");
    BAD(rms_eps, 0.0f, "rms_eps");
    BAD(rope_theta, NAN, "rope_theta");
#undef BAD
    c = good_config();
    c.rope_llama3 = 1;
    c.rope_factor = 32;
    c.rope_low_freq_factor = 1;
    c.rope_high_freq_factor = 4;
    c.rope_orig_ctx = 8192;
    assert_int_equal(alrd_config_validate(&c, "F", &err), 0);
    c.rope_high_freq_factor = 1;
    assert_int_equal(alrd_config_validate(&c, "F", &err), -1);
    assert_non_null(strstr(err.msg, "high_freq_factor"));
}

/* ---- the real model ----------------------------------------------------- */

typedef struct { const char *name; int64_t row, col; double want; } probe;

static void test_real_model(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    alrd_source s;
    alrd_error err;
    if (alrd_source_open(&s, ALRD_TEST_MODEL, &err)) {
        print_error("%s\n", err.msg);
        fail();
    }
    const alrd_config *c = &s.config;
    assert_string_equal(c->arch, "llama");
    assert_int_equal(c->n_layers, 30);
    assert_int_equal(c->hidden, 576);
    assert_int_equal(c->n_heads, 9);
    assert_int_equal(c->n_kv_heads, 3);
    assert_int_equal(c->head_dim, 64);
    assert_int_equal(c->ffn, 1536);
    assert_int_equal(c->vocab_size, 49152);
    assert_int_equal(c->max_ctx, 8192);
    assert_true(c->rope_theta == 100000.0f);
    assert_true(c->rms_eps == 9.999999747378752e-06f);
    assert_int_equal(c->tie_embeddings, 1);
    assert_int_equal(c->attention_bias, 0);
    assert_int_equal(c->rope_llama3, 0);
    assert_int_equal(s.n_tensors, 272);
    const alrd_tensor *t;
    assert_int_equal(alrd_source_expect(&s, "model.embed_tokens.weight", 49152, 576, &t, &err), 0);
    assert_int_equal(t->dtype, ALRD_Q8_0);
    assert_int_equal(alrd_source_expect(&s, "model.norm.weight", 576, 0, &t, &err), 0);
    assert_null(alrd_source_tensor(&s, "lm_head.weight"));
    int n_q41 = 0, n_f32 = 0;
    for (int i = 0; i < s.n_tensors; i++) {
        assert_int_equal(strncmp(s.tensors[i].name, "model.", 6), 0); /* every name mapped */
        n_q41 += s.tensors[i].dtype == ALRD_Q4_1;
        n_f32 += s.tensors[i].dtype == ALRD_F32;
    }
    assert_int_equal(n_q41, 210);
    assert_int_equal(n_f32, 61);
    char name[128];
    for (int l = 0; l < 30; l++) {
        struct { const char *suffix; int64_t rows, cols; int unperm; } want[] = {
            {"input_layernorm.weight", 576, 0, 0},     {"post_attention_layernorm.weight", 576, 0, 0},
            {"self_attn.q_proj.weight", 576, 576, 9},  {"self_attn.k_proj.weight", 192, 576, 3},
            {"self_attn.v_proj.weight", 192, 576, 0},  {"self_attn.o_proj.weight", 576, 576, 0},
            {"mlp.gate_proj.weight", 1536, 576, 0},    {"mlp.up_proj.weight", 1536, 576, 0},
            {"mlp.down_proj.weight", 576, 1536, 0},
        };
        for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", l, want[k].suffix);
            if (alrd_source_expect(&s, name, want[k].rows, want[k].cols, &t, &err)) {
                print_error("%s\n", err.msg);
                fail();
            }
            assert_int_equal(t->unpermute_heads, want[k].unperm);
        }
    }
    /* Expected values: gguf-py 0.19.0, gguf.quants.dequantize() of each
     * tensor reshaped to reversed ne, q/k then un-permuted with
     * w.reshape(nh, d//2, 2, in).swapaxes(1, 2).reshape(w.shape) (the
     * inverse of llama.cpp's convert permute), printed with repr(float). */
    static const probe probes[] = {
        {"model.embed_tokens.weight", 0, 0, -0.10654449462890625},
        {"model.embed_tokens.weight", 1000, 0, -0.1119384765625},
        {"model.embed_tokens.weight", 1000, 1, -0.0739593505859375},
        {"model.embed_tokens.weight", 1000, 575, 0.11810302734375},
        {"model.embed_tokens.weight", 49151, 575, -0.0417022705078125},
        {"model.norm.weight", 0, 0, 1.7578125},
        {"model.norm.weight", 0, 575, 1.984375},
        {"model.layers.0.self_attn.q_proj.weight", 0, 0, -0.0963134765625},
        {"model.layers.0.self_attn.q_proj.weight", 1, 0, -0.1591796875},
        {"model.layers.0.self_attn.q_proj.weight", 1, 7, 0.2586669921875},
        {"model.layers.0.self_attn.q_proj.weight", 31, 0, 0.18695068359375},
        {"model.layers.0.self_attn.q_proj.weight", 32, 0, -0.1173095703125},
        {"model.layers.0.self_attn.q_proj.weight", 33, 5, -0.06280517578125},
        {"model.layers.0.self_attn.q_proj.weight", 63, 575, -0.061248779296875},
        {"model.layers.0.self_attn.q_proj.weight", 64, 0, 0.1126708984375},
        {"model.layers.0.self_attn.q_proj.weight", 575, 575, -0.255859375},
        {"model.layers.5.self_attn.k_proj.weight", 0, 0, -0.03125},
        {"model.layers.5.self_attn.k_proj.weight", 1, 0, 0.0388031005859375},
        {"model.layers.5.self_attn.k_proj.weight", 32, 3, -0.0147705078125},
        {"model.layers.5.self_attn.k_proj.weight", 33, 3, 0.01715087890625},
        {"model.layers.5.self_attn.k_proj.weight", 63, 100, -0.17449951171875},
        {"model.layers.5.self_attn.k_proj.weight", 64, 0, -0.15350341796875},
        {"model.layers.5.self_attn.k_proj.weight", 191, 575, 0.431396484375},
        {"model.layers.29.mlp.down_proj.weight", 0, 0, -0.2733154296875},
        {"model.layers.29.mlp.down_proj.weight", 575, 1535, 0.056640625},
        {"model.layers.29.mlp.down_proj.weight", 100, 777, 0.0443115234375},
        {"model.layers.3.self_attn.v_proj.weight", 191, 575, -0.00921630859375},
        {"model.layers.3.self_attn.v_proj.weight", 7, 300, 0.1087646484375},
    };
    float *row = malloc(1536 * sizeof *row);
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        t = alrd_source_tensor(&s, probes[i].name);
        assert_non_null(t);
        assert_int_equal(alrd_tensor_rows_f32(t, probes[i].row, 1, row, &err), 0);
        if (row[probes[i].col] != (float)probes[i].want) {
            print_error("%s[%lld][%lld] = %.9g, gguf-py says %.9g\n", probes[i].name,
                        (long long)probes[i].row, (long long)probes[i].col, row[probes[i].col], probes[i].want);
            fail();
        }
    }
    free(row);

    /* The whole q/k unpermute against the converter's forward permute
     * P = W.reshape(nh, 2, d/2, in).swapaxes(1, 2): GGUF row h*d + 2i + j
     * (read raw from the GGUF) must equal HF row h*d + j*d/2 + i. */
    alrd_gguf g;
    assert_int_equal(alrd_gguf_open(&g, ALRD_TEST_MODEL, &err), 0);
    const struct { const char *gguf, *hf; int nh; } qk[] = {
        {"blk.7.attn_q.weight", "model.layers.7.self_attn.q_proj.weight", 9},
        {"blk.7.attn_k.weight", "model.layers.7.self_attn.k_proj.weight", 3},
    };
    for (int k = 0; k < 2; k++) {
        const alrd_tensor *raw = alrd_gguf_tensor(&g, qk[k].gguf), *hf = alrd_source_tensor(&s, qk[k].hf);
        assert_int_equal(raw->unpermute_heads, 0);
        int64_t rows = alrd_tensor_rows(raw), cols = 576, d = 64;
        float *a = malloc((size_t)(rows * cols) * 4), *h = malloc((size_t)(rows * cols) * 4);
        assert_int_equal(alrd_tensor_to_f32(raw, a, &err), 0);
        assert_int_equal(alrd_tensor_to_f32(hf, h, &err), 0);
        for (int hd = 0; hd < qk[k].nh; hd++)
            for (int i = 0; i < d / 2; i++)
                for (int j = 0; j < 2; j++)
                    assert_memory_equal(a + (hd * d + 2 * i + j) * cols, h + (hd * d + j * d / 2 + i) * cols,
                                        (size_t)cols * 4);
        free(a);
        free(h);
    }
    alrd_gguf_close(&g);

    /* vocab */
    const alrd_vocab *v = &s.vocab;
    assert_int_equal(v->kind, ALRD_VOCAB_BPE_BYTES);
    assert_string_equal(v->pre, "smollm");
    assert_int_equal(v->n_tokens, 49152);
    assert_int_equal(v->n_merges, 48900);
    assert_string_equal(v->tokens[0], "<|endoftext|>");
    assert_string_equal(v->tokens[1], "<|im_start|>");
    assert_string_equal(v->tokens[49151], "ectable");
    assert_string_equal(v->merges[0], "\xc4\xa0 t");
    assert_string_equal(v->merges[48899], "ect able");
    assert_int_equal(v->types[0], ALRD_TOKEN_CONTROL);
    assert_int_equal(v->types[1000], ALRD_TOKEN_NORMAL);
    assert_int_equal(v->bos_id, 1);
    assert_int_equal(v->eos_id, 2);
    assert_int_equal(v->unk_id, 0);
    assert_int_equal(v->pad_id, 2);
    assert_int_equal(v->add_bos, 0);
    assert_int_equal(v->add_eos, 0);
    assert_int_equal(v->add_space_prefix, 0);
    assert_non_null(v->chat_template);
    assert_int_equal(strlen(v->chat_template), 368);
    assert_int_equal(strncmp(v->chat_template, "{% for message in messages %}", 29), 0);
    /* copy is deep and equal */
    alrd_vocab cp;
    assert_int_equal(alrd_vocab_copy(&cp, v), 0);
    assert_ptr_not_equal(cp.tokens[5], v->tokens[5]);
    assert_string_equal(cp.tokens[49151], "ectable");
    assert_string_equal(cp.merges[48899], "ect able");
    assert_string_equal(cp.chat_template, v->chat_template);
    assert_int_equal(cp.types[0], ALRD_TOKEN_CONTROL);
    assert_int_equal(cp.pad_id, 2);
    alrd_vocab_free(&cp);
    assert_null(cp.tokens);
    alrd_source_close(&s);
}

/* ---- vocab-only files --------------------------------------------------- */

static void test_vocab_gpt2(void **state) {
    (void)state;
    char path[512];
    ALRD_DATA_OR_SKIP(path, "tokenizer-vectors/ggml-vocab-gpt-2.gguf");
    alrd_gguf g;
    alrd_error err;
    assert_int_equal(alrd_gguf_open(&g, path, &err), 0);
    assert_int_equal(g.n_tensors, 0);
    assert_int_equal(g.n_kv, 16);
    alrd_vocab v;
    assert_int_equal(alrd_vocab_from_gguf(&v, &g, &err), 0);
    assert_int_equal(v.kind, ALRD_VOCAB_BPE_BYTES);
    assert_string_equal(v.pre, "gpt-2");
    assert_int_equal(v.n_tokens, 50257);
    assert_int_equal(v.n_merges, 50000);
    assert_string_equal(v.tokens[0], "!");
    assert_string_equal(v.tokens[259], "in");
    assert_string_equal(v.tokens[50256], "<|endoftext|>");
    assert_string_equal(v.merges[0], "\xc4\xa0 t");
    assert_string_equal(v.merges[49999], "\xc4\xa0g azed");
    assert_null(v.scores);
    assert_int_equal(v.bos_id, 50256);
    assert_int_equal(v.eos_id, 50256);
    assert_int_equal(v.unk_id, -1);
    assert_int_equal(v.pad_id, -1);
    assert_int_equal(v.add_bos, 0);          /* gpt2 default */
    assert_int_equal(v.add_space_prefix, 0); /* gpt2 default */
    assert_null(v.chat_template);
    alrd_vocab_free(&v);
    alrd_gguf_close(&g);
    /* as a source it is refused by architecture, not crashed on */
    alrd_source s;
    assert_int_equal(alrd_source_open(&s, path, &err), -1);
    assert_non_null(strstr(err.msg, "gpt2"));
}

static void test_vocab_spm(void **state) {
    (void)state;
    char path[512];
    ALRD_DATA_OR_SKIP(path, "tokenizer-vectors/ggml-vocab-llama-spm.gguf");
    alrd_gguf g;
    alrd_error err;
    assert_int_equal(alrd_gguf_open(&g, path, &err), 0);
    assert_int_equal(g.n_tensors, 0);
    alrd_vocab v;
    assert_int_equal(alrd_vocab_from_gguf(&v, &g, &err), 0);
    assert_int_equal(v.kind, ALRD_VOCAB_SPM);
    assert_string_equal(v.pre, "default");
    assert_int_equal(v.n_tokens, 32000);
    assert_int_equal(v.n_merges, 0);
    assert_string_equal(v.tokens[0], "<unk>");
    assert_string_equal(v.tokens[3], "<0x00>");
    assert_string_equal(v.tokens[259], "\xe2\x96\x81\xe2\x96\x81");
    assert_string_equal(v.tokens[31999], "\xe7\xbb\x99");
    assert_int_equal(v.types[0], ALRD_TOKEN_UNKNOWN);
    assert_int_equal(v.types[1], ALRD_TOKEN_CONTROL);
    assert_int_equal(v.types[3], ALRD_TOKEN_BYTE);
    assert_non_null(v.scores);
    assert_true(v.scores[259] == -1e9f && v.scores[1000] == -741.0f && v.scores[31999] == -31740.0f);
    assert_int_equal(v.bos_id, 1);
    assert_int_equal(v.eos_id, 2);
    assert_int_equal(v.unk_id, 0);
    assert_int_equal(v.pad_id, -1);
    assert_int_equal(v.add_bos, 1);
    assert_int_equal(v.add_eos, 0);
    assert_int_equal(v.add_space_prefix, 1); /* SPM default, key absent */
    alrd_vocab_free(&v);
    alrd_gguf_close(&g);
    /* it is a llama-architecture file: it opens as a source with zero tensors */
    alrd_source s;
    if (alrd_source_open(&s, path, &err)) {
        print_error("%s\n", err.msg);
        fail();
    }
    assert_int_equal(s.n_tensors, 0);
    assert_int_equal(s.config.vocab_size, 32000);
    assert_int_equal(s.config.head_dim, 128);
    assert_int_equal(s.vocab.kind, ALRD_VOCAB_SPM);
    alrd_source_close(&s);
}

static void test_vocab_errors(void **state) {
    (void)state;
    alrd_gguf g;
    alrd_error err;
    alrd_vocab v;
    static const char *toks[] = {"a", "b"};
    buf b = {0};
    b_header(&b, 3, 0, 2);
    kv_str(&b, "tokenizer.ggml.model", "bert");
    kv_strs(&b, "tokenizer.ggml.tokens", toks, 2);
    const char *p = write_tmp("bert.gguf", &b);
    free(b.p);
    assert_int_equal(alrd_gguf_open(&g, p, &err), 0);
    assert_int_equal(alrd_vocab_from_gguf(&v, &g, &err), -1);
    assert_non_null(strstr(err.msg, "tokenizer.ggml.model"));
    assert_non_null(strstr(err.msg, "bert"));
    alrd_gguf_close(&g);
    /* gpt2 without merges */
    b = (buf){0};
    b_header(&b, 3, 0, 2);
    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    kv_strs(&b, "tokenizer.ggml.tokens", toks, 2);
    p = write_tmp("nomerges.gguf", &b);
    free(b.p);
    assert_int_equal(alrd_gguf_open(&g, p, &err), 0);
    assert_int_equal(alrd_vocab_from_gguf(&v, &g, &err), -1);
    assert_non_null(strstr(err.msg, "tokenizer.ggml.merges"));
    alrd_gguf_close(&g);
    /* scores of the wrong length */
    b = (buf){0};
    b_header(&b, 3, 0, 3);
    kv_str(&b, "tokenizer.ggml.model", "llama");
    kv_strs(&b, "tokenizer.ggml.tokens", toks, 2);
    kv_hdr(&b, "tokenizer.ggml.scores", GGUF_T_ARRAY); b_u32(&b, GGUF_T_FLOAT32); b_u64(&b, 1); b_f32(&b, 0);
    p = write_tmp("scores.gguf", &b);
    free(b.p);
    assert_int_equal(alrd_gguf_open(&g, p, &err), 0);
    assert_int_equal(alrd_vocab_from_gguf(&v, &g, &err), -1);
    assert_non_null(strstr(err.msg, "tokenizer.ggml.scores"));
    assert_null(v.tokens); /* freed on failure */
    alrd_gguf_close(&g);
}


/* ---- alrd-inspect ------------------------------------------------------- */

/* Runs the built tool (skips if it is not built) and returns its stdout
 * (malloc'd) and exit status; stderr goes to err_path. */
static char *run_inspect(const char *arg, int *status, const char *err_path) {
    const char *bdir = getenv("BUILD") ? getenv("BUILD") : "build";
    char tool[256], cmd[1024];
    snprintf(tool, sizeof tool, "%s/alrd-inspect", bdir);
    if (access(tool, X_OK) != 0) {
        print_message("skip: %s not built\n", tool);
        skip();
    }
    snprintf(cmd, sizeof cmd, "%s '%s' 2>'%s'", tool, arg, err_path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 20, n = 0;
    char *out = malloc(cap);
    size_t r;
    while ((r = fread(out + n, 1, cap - 1 - n, p)) > 0) {
        n += r;
        if (n == cap - 1) { cap *= 2; out = realloc(out, cap); }
    }
    out[n] = 0;
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

static void test_inspect_tool(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    char err_path[512];
    snprintf(err_path, sizeof err_path, "%s/inspect.err", alrd_test_tmpdir());
    int st;
    char *out = run_inspect(ALRD_TEST_MODEL, &st, err_path);
    assert_int_equal(st, 0);
    assert_non_null(strstr(out, "format: GGUF v3"));
    assert_non_null(strstr(out, "metadata: 33 keys"));
    assert_non_null(strstr(out, "llama.block_count                            u32              30\n"));
    assert_non_null(strstr(out, "arr[str,49152]"));
    assert_non_null(strstr(out, "(49144 more)"));
    assert_non_null(strstr(out, "layers 30, hidden 576, heads 9, kv heads 3, head dim 64, ffn 1536"));
    assert_non_null(strstr(out, "tensors: 272\n"));
    assert_non_null(strstr(out, "model.layers.0.self_attn.q_proj.weight               Q4_1  [576, 576]          207360  (rows unpermuted, 9 heads)"));
    assert_non_null(strstr(out, "model.embed_tokens.weight                            Q8_0  [49152, 576]      30081024"));
    free(out);
    /* a missing file: exit 1, one line on stderr naming it */
    out = run_inspect("/nonexistent/m.gguf", &st, err_path);
    assert_int_equal(st, 1);
    assert_string_equal(out, "");
    free(out);
    char *msg;
    size_t n;
    assert_int_equal(alrd_read_file(err_path, 4096, &msg, &n, NULL), 0);
    assert_non_null(strstr(msg, "/nonexistent/m.gguf"));
    int lines = 0;
    for (size_t i = 0; i < n; i++) lines += msg[i] == '\n';
    assert_int_equal(lines, 1);
    free(msg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_types),       cmocka_unit_test(test_big_scalar_array),
        cmocka_unit_test(test_zero_tensors),
        cmocka_unit_test(test_truncated),       cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_bad_kv),          cmocka_unit_test(test_bad_tensors),
        cmocka_unit_test(test_source_tiny_llama), cmocka_unit_test(test_source_tiny_qwen2),
        cmocka_unit_test(test_source_errors),   cmocka_unit_test(test_config_validate),
        cmocka_unit_test(test_real_model),      cmocka_unit_test(test_vocab_gpt2),
        cmocka_unit_test(test_vocab_spm),       cmocka_unit_test(test_vocab_errors),
        cmocka_unit_test(test_inspect_tool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
