/* gguf: reader for GGUF v2/v3 on a read-only mapping. Every count, length
 * and offset is checked against the file before it is used. */
#ifndef ALRD_GGUF_H
#define ALRD_GGUF_H

#include <stdint.h>
#include "io.h"
#include "tensor.h"
#include "vocab.h"

typedef enum {
    GGUF_T_UINT8 = 0, GGUF_T_INT8 = 1, GGUF_T_UINT16 = 2, GGUF_T_INT16 = 3,
    GGUF_T_UINT32 = 4, GGUF_T_INT32 = 5, GGUF_T_FLOAT32 = 6, GGUF_T_BOOL = 7,
    GGUF_T_STRING = 8, GGUF_T_ARRAY = 9, GGUF_T_UINT64 = 10, GGUF_T_INT64 = 11,
    GGUF_T_FLOAT64 = 12
} alrd_gguf_type;

typedef struct alrd_gguf_value alrd_gguf_value;
struct alrd_gguf_value {
    alrd_gguf_type type;
    union {
        uint64_t u64; int64_t i64; double f64; int b;
        struct { const char *ptr; uint64_t len; } str;  /* points into the mapping, NOT NUL-terminated */
        /* an array: of strings or arrays, items (owned by alrd_gguf, one value each); of scalars, raw points
         * at the n little-endian elements in the mapping and items is NULL, so an array never costs more
         * memory than its bytes in the file justify (read them with alrd_gguf_item) */
        struct { alrd_gguf_type elem; uint64_t n; alrd_gguf_value *items; const uint8_t *raw; } arr;
    } v;
};

typedef struct {
    char *key;             /* NUL-terminated copy, owned */
    alrd_gguf_value value;
} alrd_gguf_kv;

typedef struct {
    alrd_mmap map;
    uint32_t version;
    uint64_t n_kv;
    alrd_gguf_kv *kv;
    uint64_t n_tensors;
    alrd_tensor *tensors;  /* GGUF names ("blk.0.attn_q.weight"), shapes reversed to row-major */
    uint64_t alignment;
    uint64_t data_offset;
} alrd_gguf;

int alrd_gguf_open(alrd_gguf *g, const char *path, alrd_error *err);
void alrd_gguf_close(alrd_gguf *g);

const alrd_gguf_kv *alrd_gguf_find(const alrd_gguf *g, const char *key);
/* Item i < a->v.arr.n of an array value, decoded (a scalar from the raw
 * bytes, or a copy of the string / nested array value). */
alrd_gguf_value alrd_gguf_item(const alrd_gguf_value *a, uint64_t i);
/* Typed getters: return 0 and set *out if key exists with a compatible
 * type (any integer type for int, any int/float for float), -1 otherwise
 * (with err naming file and key when err != NULL). */
int alrd_gguf_get_int(const alrd_gguf *g, const char *key, int64_t *out, alrd_error *err);
int alrd_gguf_get_float(const alrd_gguf *g, const char *key, double *out, alrd_error *err);
/* Copies the string into a malloc'd NUL-terminated buffer. */
int alrd_gguf_get_str(const alrd_gguf *g, const char *key, char **out, alrd_error *err);
const alrd_tensor *alrd_gguf_tensor(const alrd_gguf *g, const char *name);
const char *alrd_gguf_type_name(alrd_gguf_type t);

/* Fills v from the tokenizer.ggml.* keys (works on vocab-only files with
 * zero tensors). v is owned by the caller (alrd_vocab_free). */
int alrd_vocab_from_gguf(alrd_vocab *v, const alrd_gguf *g, alrd_error *err);

#endif
