/* gguf: GGUF v2/v3 reader. The header, metadata and tensor directory are
 * parsed from a read-only mapping through a bounds-checked cursor; tensor
 * data stays in the mapping. Layout (little-endian):
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv,
 *   n_kv x { string key, u32 type, value },
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset },
 *   padding to general.alignment, tensor data.
 * A string is u64 length + bytes; an array is u32 elem type + u64 count +
 * items. */
#include "gguf.h"

#include <stdlib.h>
#include <string.h>

/* Bounds on what we accept (a real file is far inside them). */
#define MAX_KEY_LEN (1u << 16)
#define MAX_ARRAY_DEPTH 8
#define MAX_TOTAL_ITEMS (1u << 25) /* array items across the file, bounds allocation */

typedef struct {
    const uint8_t *p;
    size_t size, pos;
    const char *path;
    const char *what; /* the field being read, for errors */
    uint64_t total_items;
    alrd_error *err;
} cursor;

static int trunc_err(cursor *c, size_t need) {
    return alrd_errf(c->err, "%s: %s: truncated file (need %zu bytes at offset %zu, file is %zu bytes)",
                     c->path, c->what, need, c->pos, c->size);
}

static int take(cursor *c, size_t n, const uint8_t **out) {
    if (n > c->size - c->pos) {
        *out = NULL;
        trunc_err(c, n);
        return -1;
    }
    *out = c->p + c->pos;
    c->pos += n;
    return 0;
}

static int rd_u32(cursor *c, uint32_t *v) {
    const uint8_t *b;
    if (take(c, 4, &b)) return -1;
    memcpy(v, b, 4);
    return 0;
}

static int rd_u64(cursor *c, uint64_t *v) {
    const uint8_t *b;
    if (take(c, 8, &b)) return -1;
    memcpy(v, b, 8);
    return 0;
}

static int rd_str(cursor *c, const char **ptr, uint64_t *len) {
    if (rd_u64(c, len)) return -1;
    if (*len > c->size - c->pos)
        return alrd_errf(c->err, "%s: %s: string length %llu runs past the end of the file (%zu bytes left)",
                         c->path, c->what, (unsigned long long)*len, c->size - c->pos);
    const uint8_t *b;
    if (take(c, (size_t)*len, &b)) return -1;
    *ptr = (const char *)b;
    return 0;
}

static size_t scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_T_UINT8: case GGUF_T_INT8: case GGUF_T_BOOL: return 1;
    case GGUF_T_UINT16: case GGUF_T_INT16: return 2;
    case GGUF_T_UINT32: case GGUF_T_INT32: case GGUF_T_FLOAT32: return 4;
    case GGUF_T_UINT64: case GGUF_T_INT64: case GGUF_T_FLOAT64: return 8;
    default: return 0;
    }
}

/* Smallest encoding of one value of type t, to bound counts before allocating. */
static size_t min_size(uint32_t t) {
    if (t == GGUF_T_STRING) return 8;
    if (t == GGUF_T_ARRAY) return 12;
    return scalar_size(t);
}

static int valid_type(uint32_t t) { return t <= GGUF_T_FLOAT64; }

const char *alrd_gguf_type_name(alrd_gguf_type t) {
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                  "str", "arr", "u64", "i64", "f64"};
    return (unsigned)t <= GGUF_T_FLOAT64 ? names[t] : "?";
}

static void value_free(alrd_gguf_value *v) {
    if (v->type != GGUF_T_ARRAY || !v->v.arr.items) return;
    if (v->v.arr.elem == GGUF_T_ARRAY)
        for (uint64_t i = 0; i < v->v.arr.n; i++) value_free(&v->v.arr.items[i]);
    free(v->v.arr.items);
    v->v.arr.items = NULL;
}

alrd_gguf_value alrd_gguf_item(const alrd_gguf_value *a, uint64_t i) {
    alrd_gguf_value x;
    memset(&x, 0, sizeof x);
    if (a->type != GGUF_T_ARRAY || i >= a->v.arr.n) return x;
    if (a->v.arr.items) return a->v.arr.items[i];
    const alrd_gguf_type t = a->v.arr.elem;
    const uint8_t *p = a->v.arr.raw + (size_t)i * scalar_size(t);
    x.type = t;
    switch (t) {
    case GGUF_T_UINT8: x.v.u64 = p[0]; break;
    case GGUF_T_INT8: x.v.i64 = (int8_t)p[0]; break;
    case GGUF_T_BOOL: x.v.b = p[0]; break;
    case GGUF_T_UINT16: { uint16_t y; memcpy(&y, p, 2); x.v.u64 = y; break; }
    case GGUF_T_INT16: { int16_t y; memcpy(&y, p, 2); x.v.i64 = y; break; }
    case GGUF_T_UINT32: { uint32_t y; memcpy(&y, p, 4); x.v.u64 = y; break; }
    case GGUF_T_INT32: { int32_t y; memcpy(&y, p, 4); x.v.i64 = y; break; }
    case GGUF_T_FLOAT32: { float y; memcpy(&y, p, 4); x.v.f64 = y; break; }
    case GGUF_T_UINT64: memcpy(&x.v.u64, p, 8); break;
    case GGUF_T_INT64: memcpy(&x.v.i64, p, 8); break;
    case GGUF_T_FLOAT64: memcpy(&x.v.f64, p, 8); break;
    default: break;
    }
    return x;
}

static int rd_value(cursor *c, uint32_t type, alrd_gguf_value *v, int depth) {
    memset(v, 0, sizeof *v);
    v->type = (alrd_gguf_type)type;
    const uint8_t *b;
    switch (type) {
    case GGUF_T_UINT8: if (take(c, 1, &b)) return -1; v->v.u64 = b[0]; return 0;
    case GGUF_T_INT8: if (take(c, 1, &b)) return -1; v->v.i64 = (int8_t)b[0]; return 0;
    case GGUF_T_BOOL:
        if (take(c, 1, &b)) return -1;
        if (b[0] > 1)
            return alrd_errf(c->err, "%s: %s: bool byte is %u, expected 0 or 1", c->path, c->what, b[0]);
        v->v.b = b[0];
        return 0;
    case GGUF_T_UINT16: { uint16_t x; if (take(c, 2, &b)) return -1; memcpy(&x, b, 2); v->v.u64 = x; return 0; }
    case GGUF_T_INT16: { int16_t x; if (take(c, 2, &b)) return -1; memcpy(&x, b, 2); v->v.i64 = x; return 0; }
    case GGUF_T_UINT32: { uint32_t x; if (rd_u32(c, &x)) return -1; v->v.u64 = x; return 0; }
    case GGUF_T_INT32: { int32_t x; if (take(c, 4, &b)) return -1; memcpy(&x, b, 4); v->v.i64 = x; return 0; }
    case GGUF_T_FLOAT32: { float x; if (take(c, 4, &b)) return -1; memcpy(&x, b, 4); v->v.f64 = x; return 0; }
    case GGUF_T_UINT64: return rd_u64(c, &v->v.u64);
    case GGUF_T_INT64: { uint64_t x; if (rd_u64(c, &x)) return -1; memcpy(&v->v.i64, &x, 8); return 0; }
    case GGUF_T_FLOAT64: { if (take(c, 8, &b)) return -1; memcpy(&v->v.f64, b, 8); return 0; }
    case GGUF_T_STRING: return rd_str(c, &v->v.str.ptr, &v->v.str.len);
    case GGUF_T_ARRAY: break;
    default:
        return alrd_errf(c->err, "%s: %s: unknown value type %u", c->path, c->what, type);
    }
    if (depth >= MAX_ARRAY_DEPTH)
        return alrd_errf(c->err, "%s: %s: arrays nested deeper than %d", c->path, c->what, MAX_ARRAY_DEPTH);
    uint32_t elem;
    uint64_t n;
    if (rd_u32(c, &elem) || rd_u64(c, &n)) return -1;
    if (!valid_type(elem))
        return alrd_errf(c->err, "%s: %s: unknown array element type %u", c->path, c->what, elem);
    v->v.arr.elem = (alrd_gguf_type)elem;
    if (n > (c->size - c->pos) / min_size(elem))
        return alrd_errf(c->err, "%s: %s: array length %llu of %s cannot fit in the %zu bytes left (truncated or corrupt)",
                         c->path, c->what, (unsigned long long)n, alrd_gguf_type_name(elem), c->size - c->pos);
    if (!scalar_size(elem) && n > MAX_TOTAL_ITEMS - c->total_items)
        return alrd_errf(c->err, "%s: %s: array length %llu exceeds the limit of %u items per file",
                         c->path, c->what, (unsigned long long)n, MAX_TOTAL_ITEMS);
    v->v.arr.n = n;
    if (n == 0) return 0;
    const size_t es = scalar_size(elem);
    if (es) { /* scalars stay in the mapping: no allocation at all (the length check above bounds n * es) */
        if (take(c, (size_t)n * es, &v->v.arr.raw)) return -1;
        if (elem == GGUF_T_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (v->v.arr.raw[i] > 1)
                    return alrd_errf(c->err, "%s: %s: bool byte %llu is %u, expected 0 or 1", c->path, c->what,
                                     (unsigned long long)i, v->v.arr.raw[i]);
        return 0;
    }
    c->total_items += n; /* strings and nested arrays: one value each, bounded across the file */
    v->v.arr.items = calloc((size_t)n, sizeof *v->v.arr.items);
    if (!v->v.arr.items) return alrd_errf(c->err, "%s: %s: out of memory", c->path, c->what);
    for (uint64_t i = 0; i < n; i++) {
        if (rd_value(c, elem, &v->v.arr.items[i], depth + 1)) {
            value_free(v);
            return -1;
        }
    }
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Finds a duplicate among n names (sorted copy of pointers); NULL if none. */
static const char *find_dup(const char **names, size_t n) {
    if (n < 2) return NULL;
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) return names[i];
    return NULL;
}

/* GGML type names for ids we do not convert, so errors can name them. */
static const char *ggml_type_name(uint32_t t) {
    static const char *names[] = {
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
        "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS",
        "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64",
        "IQ1_M", "BF16", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

void alrd_gguf_close(alrd_gguf *g) {
    if (g->kv) {
        for (uint64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].key);
            value_free(&g->kv[i].value);
        }
        free(g->kv);
    }
    free(g->tensors);
    alrd_mmap_close(&g->map);
    memset(g, 0, sizeof *g);
}

static int parse_kv(alrd_gguf *g, cursor *c) {
    const char *path = g->map.path;
    uint64_t n = g->n_kv;
    /* key (8) + type (4) + smallest value (1) */
    if (n > (c->size - c->pos) / 13)
        return alrd_errf(c->err, "%s: header: kv count %llu cannot fit in the %zu bytes left (truncated or corrupt)",
                         path, (unsigned long long)n, c->size - c->pos);
    g->kv = calloc(n ? (size_t)n : 1, sizeof *g->kv);
    if (!g->kv) return alrd_errf(c->err, "%s: out of memory", path);
    char what[256];
    for (uint64_t i = 0; i < n; i++) {
        snprintf(what, sizeof what, "kv %llu key", (unsigned long long)i);
        c->what = what;
        const char *k;
        uint64_t klen;
        if (rd_str(c, &k, &klen)) { g->n_kv = i; return -1; }
        if (klen == 0 || klen >= MAX_KEY_LEN || memchr(k, 0, (size_t)klen)) {
            g->n_kv = i;
            return alrd_errf(c->err, "%s: kv %llu key: length %llu or NUL byte not allowed", path,
                             (unsigned long long)i, (unsigned long long)klen);
        }
        g->kv[i].key = malloc((size_t)klen + 1);
        if (!g->kv[i].key) { g->n_kv = i; return alrd_errf(c->err, "%s: out of memory", path); }
        memcpy(g->kv[i].key, k, (size_t)klen);
        g->kv[i].key[klen] = 0;
        g->n_kv = i + 1; /* from here on close() frees this entry */
        snprintf(what, sizeof what, "key '%.200s'", g->kv[i].key);
        uint32_t type;
        if (rd_u32(c, &type)) return -1;
        if (!valid_type(type))
            return alrd_errf(c->err, "%s: %s: unknown value type %u", path, what, type);
        if (rd_value(c, type, &g->kv[i].value, 0)) return -1;
    }
    const char **names = malloc((n ? (size_t)n : 1) * sizeof *names);
    if (!names) return alrd_errf(c->err, "%s: out of memory", path);
    for (uint64_t i = 0; i < n; i++) names[i] = g->kv[i].key;
    const char *dup = find_dup(names, (size_t)n);
    int rc = dup ? alrd_errf(c->err, "%s: key '%.200s': appears more than once", path, dup) : 0;
    free(names);
    return rc;
}

static int parse_tensor_info(alrd_gguf *g, cursor *c, uint64_t i, uint64_t *rel_off) {
    const char *path = g->map.path;
    alrd_tensor *t = &g->tensors[i];
    char what[256];
    snprintf(what, sizeof what, "tensor %llu name", (unsigned long long)i);
    c->what = what;
    const char *name;
    uint64_t nlen;
    if (rd_str(c, &name, &nlen)) return -1;
    if (nlen == 0 || nlen >= ALRD_NAME_MAX || memchr(name, 0, (size_t)nlen))
        return alrd_errf(c->err, "%s: tensor %llu name: length %llu (must be 1..%d, no NUL)", path,
                         (unsigned long long)i, (unsigned long long)nlen, ALRD_NAME_MAX - 1);
    memcpy(t->name, name, (size_t)nlen);
    t->name[nlen] = 0;
    snprintf(what, sizeof what, "tensor '%s'", t->name);
    uint32_t nd;
    if (rd_u32(c, &nd)) return -1;
    if (nd < 1 || nd > ALRD_MAX_DIMS)
        return alrd_errf(c->err, "%s: tensor '%s': n_dims %u (must be 1..%d)", path, t->name, nd, ALRD_MAX_DIMS);
    uint64_t ne[ALRD_MAX_DIMS];
    for (uint32_t d = 0; d < nd; d++)
        if (rd_u64(c, &ne[d])) return -1;
    uint32_t type;
    uint64_t off;
    if (rd_u32(c, &type) || rd_u64(c, &off)) return -1;
    if (type >= ALRD_DTYPE_COUNT || !alrd_dtype_supported((alrd_dtype)type))
        return alrd_errf(c->err, "%s: tensor '%s': unsupported tensor type %u (%s)", path, t->name,
                         type, ggml_type_name(type));
    t->dtype = (alrd_dtype)type;
    t->n_dims = (int)nd;
    size_t numel = 1;
    for (uint32_t d = 0; d < nd; d++) {
        if (ne[d] == 0 || ne[d] > INT64_MAX)
            return alrd_errf(c->err, "%s: tensor '%s': dimension %u is %llu (must be 1..2^63-1)", path,
                             t->name, d, (unsigned long long)ne[d]);
        if (alrd_mul_ok(numel, (size_t)ne[d], &numel) != 0 || numel > INT64_MAX)
            return alrd_errf(c->err, "%s: tensor '%s': element count overflows", path, t->name);
        t->shape[nd - 1 - d] = (int64_t)ne[d]; /* GGUF ne[0] is contiguous: reverse */
    }
    size_t rb, nbytes;
    if (ne[0] % (uint64_t)alrd_dtype_block(t->dtype) != 0)
        return alrd_errf(c->err, "%s: tensor '%s': row length %llu is not a multiple of the %s block (%d)",
                         path, t->name, (unsigned long long)ne[0], alrd_dtype_name(t->dtype),
                         alrd_dtype_block(t->dtype));
    if (alrd_row_bytes(t->dtype, (int64_t)ne[0], &rb) != 0 || alrd_mul_ok(rb, numel / (size_t)ne[0], &nbytes) != 0)
        return alrd_errf(c->err, "%s: tensor '%s': byte size overflows", path, t->name);
    if (off % g->alignment != 0)
        return alrd_errf(c->err, "%s: tensor '%s': offset %llu is not a multiple of the alignment %llu",
                         path, t->name, (unsigned long long)off, (unsigned long long)g->alignment);
    t->nbytes = nbytes;
    rel_off[i] = off;
    return 0;
}

int alrd_gguf_open(alrd_gguf *g, const char *path, alrd_error *err) {
    memset(g, 0, sizeof *g);
    if (alrd_mmap_open(&g->map, path, err)) return -1;
    cursor c = {g->map.data, g->map.size, 0, path, "magic", 0, err};
    const uint8_t *magic;
    uint64_t *rel_off = NULL;
    if (take(&c, 4, &magic)) goto fail;
    if (memcmp(magic, "GGUF", 4) != 0) {
        alrd_errf(err, "%s: magic: expected \"GGUF\", found %02x %02x %02x %02x", path, magic[0],
                  magic[1], magic[2], magic[3]);
        goto fail;
    }
    c.what = "version";
    if (rd_u32(&c, &g->version)) goto fail;
    if (g->version == 1) {
        alrd_errf(err, "%s: version: GGUF v1 is not supported (only v2 and v3)", path);
        goto fail;
    }
    if (g->version != 2 && g->version != 3) {
        alrd_errf(err, "%s: version: unknown GGUF version %u (expected 2 or 3)", path, g->version);
        goto fail;
    }
    c.what = "tensor count";
    if (rd_u64(&c, &g->n_tensors)) goto fail;
    c.what = "kv count";
    if (rd_u64(&c, &g->n_kv)) goto fail;
    uint64_t n_tensors = g->n_tensors;
    g->n_tensors = 0; /* nothing allocated yet */
    if (parse_kv(g, &c)) goto fail;

    g->alignment = 32;
    const alrd_gguf_kv *al = alrd_gguf_find(g, "general.alignment");
    if (al) {
        if (al->value.type != GGUF_T_UINT32 || al->value.v.u64 == 0 ||
            (al->value.v.u64 & (al->value.v.u64 - 1)) != 0) {
            alrd_errf(err, "%s: general.alignment: must be a u32 power of two", path);
            goto fail;
        }
        g->alignment = al->value.v.u64;
    }

    /* name (8) + n_dims (4) + one dim (8) + type (4) + offset (8) */
    if (n_tensors > (c.size - c.pos) / 32) {
        alrd_errf(err, "%s: header: tensor count %llu cannot fit in the %zu bytes left (truncated or corrupt)", path,
                  (unsigned long long)n_tensors, c.size - c.pos);
        goto fail;
    }
    g->tensors = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensors);
    rel_off = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *rel_off);
    if (!g->tensors || !rel_off) {
        alrd_errf(err, "%s: out of memory", path);
        goto fail;
    }
    g->n_tensors = n_tensors;
    for (uint64_t i = 0; i < n_tensors; i++)
        if (parse_tensor_info(g, &c, i, rel_off)) goto fail;

    size_t data_off;
    if (alrd_add_ok(c.pos, (size_t)g->alignment - 1, &data_off)) {
        alrd_errf(err, "%s: header: data offset overflows", path);
        goto fail;
    }
    data_off -= data_off % g->alignment;
    g->data_offset = data_off;
    for (uint64_t i = 0; i < n_tensors; i++) {
        alrd_tensor *t = &g->tensors[i];
        size_t start, end;
        if (alrd_add_ok(data_off, (size_t)rel_off[i], &start) || alrd_add_ok(start, t->nbytes, &end) ||
            end > g->map.size) {
            alrd_errf(err, "%s: tensor '%s': data at offset %llu + %zu bytes runs past the end of the file (%zu bytes)",
                      path, t->name, (unsigned long long)rel_off[i], t->nbytes, g->map.size);
            goto fail;
        }
        t->data = g->map.data + start;
    }
    {
        const char **names = malloc((n_tensors ? (size_t)n_tensors : 1) * sizeof *names);
        if (!names) { alrd_errf(err, "%s: out of memory", path); goto fail; }
        for (uint64_t i = 0; i < n_tensors; i++) names[i] = g->tensors[i].name;
        const char *dup = find_dup(names, (size_t)n_tensors);
        if (dup) alrd_errf(err, "%s: tensor '%s': appears more than once", path, dup);
        free(names);
        if (dup) goto fail;
    }
    free(rel_off);
    return 0;
fail:
    free(rel_off);
    alrd_gguf_close(g);
    return -1;
}

const alrd_gguf_kv *alrd_gguf_find(const alrd_gguf *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

const alrd_tensor *alrd_gguf_tensor(const alrd_gguf *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
    return NULL;
}

static int is_int_type(alrd_gguf_type t) {
    return t == GGUF_T_UINT8 || t == GGUF_T_INT8 || t == GGUF_T_UINT16 || t == GGUF_T_INT16 ||
           t == GGUF_T_UINT32 || t == GGUF_T_INT32 || t == GGUF_T_UINT64 || t == GGUF_T_INT64 ||
           t == GGUF_T_BOOL;
}

static int is_unsigned(alrd_gguf_type t) {
    return t == GGUF_T_UINT8 || t == GGUF_T_UINT16 || t == GGUF_T_UINT32 || t == GGUF_T_UINT64;
}

/* Integer value of an int-typed value; -1 if a u64 does not fit int64. */
static int value_int(const alrd_gguf_value *v, int64_t *out) {
    if (v->type == GGUF_T_BOOL) { *out = v->v.b; return 0; }
    if (is_unsigned(v->type)) {
        if (v->v.u64 > INT64_MAX) return -1;
        *out = (int64_t)v->v.u64;
        return 0;
    }
    *out = v->v.i64;
    return 0;
}

int alrd_gguf_get_int(const alrd_gguf *g, const char *key, int64_t *out, alrd_error *err) {
    const alrd_gguf_kv *kv = alrd_gguf_find(g, key);
    if (!kv) return err ? alrd_errf(err, "%s: %s: missing", g->map.path, key) : -1;
    if (!is_int_type(kv->value.type) || value_int(&kv->value, out) != 0)
        return err ? alrd_errf(err, "%s: %s: expected an integer, found %s", g->map.path, key,
                               alrd_gguf_type_name(kv->value.type)) : -1;
    return 0;
}

int alrd_gguf_get_float(const alrd_gguf *g, const char *key, double *out, alrd_error *err) {
    const alrd_gguf_kv *kv = alrd_gguf_find(g, key);
    if (!kv) return err ? alrd_errf(err, "%s: %s: missing", g->map.path, key) : -1;
    alrd_gguf_type t = kv->value.type;
    if (t == GGUF_T_FLOAT32 || t == GGUF_T_FLOAT64) { *out = kv->value.v.f64; return 0; }
    if (t != GGUF_T_BOOL && is_int_type(t)) {
        *out = is_unsigned(t) ? (double)kv->value.v.u64 : (double)kv->value.v.i64;
        return 0;
    }
    return err ? alrd_errf(err, "%s: %s: expected a number, found %s", g->map.path, key,
                           alrd_gguf_type_name(t)) : -1;
}

int alrd_gguf_get_str(const alrd_gguf *g, const char *key, char **out, alrd_error *err) {
    *out = NULL;
    const alrd_gguf_kv *kv = alrd_gguf_find(g, key);
    if (!kv) return err ? alrd_errf(err, "%s: %s: missing", g->map.path, key) : -1;
    if (kv->value.type != GGUF_T_STRING)
        return err ? alrd_errf(err, "%s: %s: expected a string, found %s", g->map.path, key,
                               alrd_gguf_type_name(kv->value.type)) : -1;
    size_t n = (size_t)kv->value.v.str.len;
    char *s = malloc(n + 1);
    if (!s) return err ? alrd_errf(err, "%s: %s: out of memory", g->map.path, key) : -1;
    memcpy(s, kv->value.v.str.ptr, n);
    s[n] = 0;
    *out = s;
    return 0;
}

/* ---- tokenizer.ggml.* -> alrd_vocab ------------------------------------ */

#define MAX_VOCAB (4 << 20)

/* The array under key, checked to hold elem-typed items; NULL if absent. */
static int get_array(const alrd_gguf *g, const char *key, alrd_gguf_type elem, int required,
                     const alrd_gguf_value **out, alrd_error *err) {
    *out = NULL;
    const alrd_gguf_kv *kv = alrd_gguf_find(g, key);
    if (!kv) return required ? alrd_errf(err, "%s: %s: missing", g->map.path, key) : 0;
    if (kv->value.type != GGUF_T_ARRAY || kv->value.v.arr.elem != elem)
        return alrd_errf(err, "%s: %s: expected an array of %s", g->map.path, key, alrd_gguf_type_name(elem));
    *out = &kv->value;
    return 0;
}

static char *dup_str(const alrd_gguf_value *v) {
    if (memchr(v->v.str.ptr, 0, (size_t)v->v.str.len)) return NULL;
    char *s = malloc((size_t)v->v.str.len + 1);
    if (!s) return NULL;
    memcpy(s, v->v.str.ptr, (size_t)v->v.str.len);
    s[v->v.str.len] = 0;
    return s;
}

/* A token id key: stays at dflt when absent or out of range (llama.cpp
 * keeps its default and warns in that case). */
static int get_id(const alrd_gguf *g, const char *key, int32_t n_tokens, int32_t dflt, int32_t *out,
                  alrd_error *err) {
    *out = dflt;
    if (!alrd_gguf_find(g, key)) return 0;
    int64_t v;
    if (alrd_gguf_get_int(g, key, &v, err)) return -1;
    if (v >= 0 && v < n_tokens) *out = (int32_t)v;
    return 0;
}

static int get_flag(const alrd_gguf *g, const char *key, int dflt, int *out, alrd_error *err) {
    *out = dflt;
    const alrd_gguf_kv *kv = alrd_gguf_find(g, key);
    if (!kv) return 0;
    if (kv->value.type != GGUF_T_BOOL)
        return alrd_errf(err, "%s: %s: expected bool, found %s", g->map.path, key,
                         alrd_gguf_type_name(kv->value.type));
    *out = kv->value.v.b;
    return 0;
}

static int vocab_fill(alrd_vocab *v, const alrd_gguf *g, alrd_error *err) {
    const char *path = g->map.path;
    char *model = NULL;
    if (alrd_gguf_get_str(g, "tokenizer.ggml.model", &model, err)) return -1;
    if (strcmp(model, "gpt2") == 0) v->kind = ALRD_VOCAB_BPE_BYTES;
    else if (strcmp(model, "llama") == 0) v->kind = ALRD_VOCAB_SPM;
    else {
        alrd_errf(err, "%s: tokenizer.ggml.model: '%.64s' is not supported (expected gpt2 or llama)", path, model);
        free(model);
        return -1;
    }
    free(model);
    int spm = v->kind == ALRD_VOCAB_SPM;

    char *pre = NULL;
    if (alrd_gguf_find(g, "tokenizer.ggml.pre")) {
        if (alrd_gguf_get_str(g, "tokenizer.ggml.pre", &pre, err)) return -1;
        if (strlen(pre) >= sizeof v->pre) {
            alrd_errf(err, "%s: tokenizer.ggml.pre: '%.64s' longer than %zu bytes", path, pre, sizeof v->pre - 1);
            free(pre);
            return -1;
        }
        strcpy(v->pre, pre);
        free(pre);
    } else {
        strcpy(v->pre, "default");
    }

    const alrd_gguf_value *tok, *scores, *types, *merges;
    if (get_array(g, "tokenizer.ggml.tokens", GGUF_T_STRING, 1, &tok, err) ||
        get_array(g, "tokenizer.ggml.scores", GGUF_T_FLOAT32, 0, &scores, err) ||
        get_array(g, "tokenizer.ggml.token_type", GGUF_T_INT32, 0, &types, err) ||
        get_array(g, "tokenizer.ggml.merges", GGUF_T_STRING, !spm, &merges, err))
        return -1;
    uint64_t n = tok->v.arr.n;
    if (n == 0 || n > MAX_VOCAB)
        return alrd_errf(err, "%s: tokenizer.ggml.tokens: %llu tokens (must be 1..%d)", path,
                         (unsigned long long)n, MAX_VOCAB);
    if (scores && scores->v.arr.n != n)
        return alrd_errf(err, "%s: tokenizer.ggml.scores: %llu entries for %llu tokens", path,
                         (unsigned long long)scores->v.arr.n, (unsigned long long)n);
    if (types && types->v.arr.n != n)
        return alrd_errf(err, "%s: tokenizer.ggml.token_type: %llu entries for %llu tokens", path,
                         (unsigned long long)types->v.arr.n, (unsigned long long)n);
    if (merges && merges->v.arr.n > MAX_VOCAB)
        return alrd_errf(err, "%s: tokenizer.ggml.merges: %llu merges (at most %d)", path,
                         (unsigned long long)merges->v.arr.n, MAX_VOCAB);

    v->tokens = calloc((size_t)n, sizeof *v->tokens);
    if (!v->tokens) return alrd_errf(err, "%s: tokenizer.ggml.tokens: out of memory", path);
    v->n_tokens = (int32_t)n;
    for (uint64_t i = 0; i < n; i++)
        if (!(v->tokens[i] = dup_str(&tok->v.arr.items[i])))
            return alrd_errf(err, "%s: tokenizer.ggml.tokens: token %llu has a NUL byte or memory ran out",
                             path, (unsigned long long)i);
    if (scores) {
        v->scores = malloc((size_t)n * sizeof *v->scores);
        if (!v->scores) return alrd_errf(err, "%s: tokenizer.ggml.scores: out of memory", path);
        for (uint64_t i = 0; i < n; i++) v->scores[i] = (float)alrd_gguf_item(scores, i).v.f64;
    }
    if (types) {
        v->types = malloc((size_t)n * sizeof *v->types);
        if (!v->types) return alrd_errf(err, "%s: tokenizer.ggml.token_type: out of memory", path);
        for (uint64_t i = 0; i < n; i++) v->types[i] = (int32_t)alrd_gguf_item(types, i).v.i64;
    }
    if (merges && merges->v.arr.n) {
        uint64_t m = merges->v.arr.n;
        v->merges = calloc((size_t)m, sizeof *v->merges);
        if (!v->merges) return alrd_errf(err, "%s: tokenizer.ggml.merges: out of memory", path);
        v->n_merges = (int32_t)m;
        for (uint64_t i = 0; i < m; i++)
            if (!(v->merges[i] = dup_str(&merges->v.arr.items[i])))
                return alrd_errf(err, "%s: tokenizer.ggml.merges: merge %llu has a NUL byte or memory ran out",
                                 path, (unsigned long long)i);
    }

    /* llama.cpp's defaults: SPM vocabularies use 1/2/0 for bos/eos/unk. */
    int32_t nt = v->n_tokens;
    if (get_id(g, "tokenizer.ggml.bos_token_id", nt, spm ? 1 : -1, &v->bos_id, err) ||
        get_id(g, "tokenizer.ggml.eos_token_id", nt, spm ? 2 : -1, &v->eos_id, err) ||
        get_id(g, "tokenizer.ggml.unknown_token_id", nt, spm ? 0 : -1, &v->unk_id, err) ||
        get_id(g, "tokenizer.ggml.padding_token_id", nt, -1, &v->pad_id, err))
        return -1;
    if (get_flag(g, "tokenizer.ggml.add_bos_token", spm, &v->add_bos, err) ||
        get_flag(g, "tokenizer.ggml.add_eos_token", 0, &v->add_eos, err) ||
        get_flag(g, "tokenizer.ggml.add_space_prefix", spm, &v->add_space_prefix, err))
        return -1;
    if (alrd_gguf_find(g, "tokenizer.chat_template") &&
        alrd_gguf_get_str(g, "tokenizer.chat_template", &v->chat_template, err))
        return -1;
    return 0;
}

int alrd_vocab_from_gguf(alrd_vocab *v, const alrd_gguf *g, alrd_error *err) {
    memset(v, 0, sizeof *v);
    v->bos_id = v->eos_id = v->unk_id = v->pad_id = -1;
    if (vocab_fill(v, g, err) != 0) {
        alrd_vocab_free(v);
        return -1;
    }
    return 0;
}
