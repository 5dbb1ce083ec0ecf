/* alrd_file: writer and validating reader of the .alrd packed format
 * (formats/ALRD_FORMAT.md). Explicit little-endian encoding byte by byte, so
 * the format does not depend on struct layout or host endianness. */
#include "alrd_file.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define HDR_FIXED 64
#define SEC_ENTRY 40
#define MAX_SECTIONS 16
#define ALIGN 64
#define MAX_RAW_SECTION ((uint64_t)1 << 30) /* decompressed section cap */
#define MAX_DIM ((uint64_t)1 << 40)

enum { SEC_CONFIG = 1, SEC_LOWRANK = 2, SEC_TOKENIZER = 3, SEC_TENSORS = 4, SEC_META = 5,
       SEC_KIND_MAX = 5 };
#define SEC_FLAG_ZLIB 1u

static const char *sec_name(uint32_t kind) {
    switch (kind) {
    case SEC_CONFIG: return "config";
    case SEC_LOWRANK: return "lowrank";
    case SEC_TOKENIZER: return "tokenizer";
    case SEC_TENSORS: return "tensor directory";
    case SEC_META: return "metadata";
    default: return "unknown";
    }
}

static uint64_t align_up(uint64_t x) { return (x + (ALIGN - 1)) & ~(uint64_t)(ALIGN - 1); }

static uint32_t crc_of(const void *p, size_t n) {
    /* zlib's crc32 takes uInt lengths: feed large buffers in pieces. */
    uLong c = crc32(0L, Z_NULL, 0);
    const uint8_t *b = p;
    while (n) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, b, k);
        b += k;
        n -= k;
    }
    return (uint32_t)c;
}

/* ------------------------------------------------------------ encoding */

static void le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }
static uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
} wbuf;

static void wb_put(wbuf *b, const void *d, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) { b->oom = 1; return; }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void wb_u32(wbuf *b, uint32_t v) { uint8_t t[4]; le32(t, v); wb_put(b, t, 4); }
static void wb_i32(wbuf *b, int32_t v) { wb_u32(b, (uint32_t)v); }
static void wb_u64(wbuf *b, uint64_t v) { uint8_t t[8]; le64(t, v); wb_put(b, t, 8); }
static void wb_f32(wbuf *b, float v) { wb_u32(b, f32_bits(v)); }
static void wb_str(wbuf *b, const char *s) {
    size_t n = s ? strlen(s) : 0;
    wb_u32(b, (uint32_t)n);
    wb_put(b, s ? s : "", n);
    wb_put(b, "", 1);
}

/* Bounded reader over one section's payload. Errors name file and section. */
typedef struct {
    const uint8_t *p;
    size_t n, pos;
    const char *path, *sec;
    alrd_error *err;
} rd;

static int rd_need(rd *r, size_t k, const char *what) {
    if (k > r->n - r->pos)
        return alrd_errf(r->err, "%s: section %s: truncated at %s (corrupt file)", r->path,
                         r->sec, what);
    return 0;
}
static int rd_u32(rd *r, uint32_t *v, const char *what) {
    if (rd_need(r, 4, what)) return -1;
    *v = get32(r->p + r->pos);
    r->pos += 4;
    return 0;
}
static int rd_i32(rd *r, int32_t *v, const char *what) {
    uint32_t u;
    if (rd_u32(r, &u, what)) return -1;
    *v = (int32_t)u;
    return 0;
}
static int rd_int(rd *r, int *v, const char *what) {
    int32_t x;
    if (rd_i32(r, &x, what)) return -1;
    *v = x;
    return 0;
}
static int rd_u64(rd *r, uint64_t *v, const char *what) {
    if (rd_need(r, 8, what)) return -1;
    *v = get64(r->p + r->pos);
    r->pos += 8;
    return 0;
}
static int rd_f32(rd *r, float *v, const char *what) {
    uint32_t u;
    if (rd_u32(r, &u, what)) return -1;
    *v = bits_f32(u);
    return 0;
}
/* A str: pointer into the payload, NUL-terminated there, no embedded NUL. */
static int rd_str(rd *r, const char **s, uint32_t *len, size_t maxlen, const char *what) {
    uint32_t n;
    if (rd_u32(r, &n, what)) return -1;
    if (n > maxlen)
        return alrd_errf(r->err, "%s: section %s: %s length %u exceeds %zu", r->path, r->sec,
                         what, n, maxlen);
    if (rd_need(r, (size_t)n + 1, what)) return -1;
    const char *q = (const char *)r->p + r->pos;
    if (q[n] != 0 || memchr(q, 0, n))
        return alrd_errf(r->err, "%s: section %s: %s is not a NUL-terminated string", r->path,
                         r->sec, what);
    *s = q;
    if (len) *len = n;
    r->pos += (size_t)n + 1;
    return 0;
}
static int rd_end(rd *r) {
    if (r->pos != r->n)
        return alrd_errf(r->err, "%s: section %s: %zu trailing bytes (corrupt file)", r->path,
                         r->sec, r->n - r->pos);
    return 0;
}

/* ------------------------------------------------------------ checks */

static int name_ok(const char *s, size_t n) {
    if (n == 0 || n >= ALRD_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e) return 0;
    return 1;
}

/* Shape, dtype and byte size of one tensor; shared by writer and reader. */
static int tensor_meta_ok(const char *path, const char *name, uint32_t dtype, uint32_t n_dims,
                          const uint64_t *shape, uint32_t unpermute, size_t *size,
                          alrd_error *err) {
    if (dtype >= ALRD_DTYPE_COUNT || !alrd_dtype_name((alrd_dtype)dtype) ||
        !alrd_dtype_supported((alrd_dtype)dtype))
        return alrd_errf(err, "%s: tensor %s: unknown or unsupported dtype %u", path, name, dtype);
    if (n_dims < 1 || n_dims > ALRD_MAX_DIMS)
        return alrd_errf(err, "%s: tensor %s: n_dims %u outside 1..%d", path, name, n_dims,
                         ALRD_MAX_DIMS);
    size_t rows = 1;
    for (uint32_t i = 0; i < n_dims; i++) {
        if (shape[i] < 1 || shape[i] > MAX_DIM)
            return alrd_errf(err, "%s: tensor %s: dim %u is %llu (expected 1..2^40)", path, name,
                             i, (unsigned long long)shape[i]);
        if (i + 1 < n_dims && alrd_mul_ok(rows, (size_t)shape[i], &rows))
            return alrd_errf(err, "%s: tensor %s: shape overflows", path, name);
    }
    uint64_t cols = shape[n_dims - 1];
    int blk = alrd_dtype_block((alrd_dtype)dtype);
    if (blk <= 0 || cols % (uint64_t)blk)
        return alrd_errf(err, "%s: tensor %s: last dim %llu is not a multiple of the %s block %d",
                         path, name, (unsigned long long)cols,
                         alrd_dtype_name((alrd_dtype)dtype), blk);
    size_t rb;
    if (alrd_row_bytes((alrd_dtype)dtype, (int64_t)cols, &rb) || alrd_mul_ok(rb, rows, size))
        return alrd_errf(err, "%s: tensor %s: byte size overflows", path, name);
    if (unpermute) {
        if (n_dims != 2 || unpermute > (1u << 20) || shape[0] % (2ull * unpermute))
            return alrd_errf(err, "%s: tensor %s: unpermute_heads %u does not fit shape", path,
                             name, unpermute);
    }
    return 0;
}

static int cmp_name_idx(const void *a, const void *b, void *ctx) {
    const alrd_tensor *t = ctx;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

/* Reports the first duplicate tensor name. */
static int names_unique(const alrd_tensor *t, int n, const char *path, alrd_error *err) {
    if (n < 2) return 0;
    int *idx = malloc(sizeof(int) * (size_t)n);
    if (!idx) return alrd_errf(err, "%s: out of memory", path);
    for (int i = 0; i < n; i++) idx[i] = i;
    qsort_r(idx, (size_t)n, sizeof(int), cmp_name_idx, (void *)t);
    for (int i = 1; i < n; i++)
        if (!strcmp(t[idx[i]].name, t[idx[i - 1]].name)) {
            alrd_errf(err, "%s: tensor %s: name appears twice", path, t[idx[i]].name);
            free(idx);
            return -1;
        }
    free(idx);
    return 0;
}

/* Structural checks of a config (the source layer adds alrd_config_validate). */
static int config_ok(const alrd_config *c, const char *path, alrd_error *err) {
    const int lim = 1 << 20;
    if (c->n_layers <= 0 || c->n_layers > 4096 || c->hidden <= 0 || c->hidden > lim ||
        c->n_heads <= 0 || c->n_heads > 4096 || c->n_kv_heads <= 0 ||
        c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads || c->head_dim <= 0 ||
        c->head_dim > 4096 || c->ffn <= 0 || c->ffn > lim || c->vocab_size <= 0 ||
        c->vocab_size > (1 << 24) || c->max_ctx < 0)
        return alrd_errf(err, "%s: config: dimensions out of range or inconsistent "
                         "(layers %d hidden %d heads %d kv %d head_dim %d ffn %d vocab %d)",
                         path, c->n_layers, c->hidden, c->n_heads, c->n_kv_heads, c->head_dim,
                         c->ffn, c->vocab_size);
    if (!(isfinite(c->rms_eps) && c->rms_eps > 0) || !(isfinite(c->rope_theta) && c->rope_theta > 0) ||
        !isfinite(c->rope_factor) || !isfinite(c->rope_low_freq_factor) ||
        !isfinite(c->rope_high_freq_factor))
        return alrd_errf(err, "%s: config: rms_eps/rope values not finite and positive", path);
    if ((c->rope_llama3 != 0 && c->rope_llama3 != 1) || (c->tie_embeddings != 0 && c->tie_embeddings != 1) ||
        (c->attention_bias != 0 && c->attention_bias != 1) || (c->mlp_bias != 0 && c->mlp_bias != 1))
        return alrd_errf(err, "%s: config: boolean fields must be 0 or 1", path);
    if (memchr(c->arch, 0, sizeof c->arch) == NULL || !c->arch[0])
        return alrd_errf(err, "%s: config: arch is empty or not terminated", path);
    return 0;
}

static int vocab_ok(const alrd_vocab *v, const char *path, alrd_error *err) {
    if (v->kind != ALRD_VOCAB_BPE_BYTES && v->kind != ALRD_VOCAB_SPM)
        return alrd_errf(err, "%s: tokenizer: kind %d (expected 1 or 2)", path, (int)v->kind);
    if (v->n_tokens <= 0 || !v->tokens)
        return alrd_errf(err, "%s: tokenizer: no tokens", path);
    if (v->n_merges < 0 || (v->n_merges && !v->merges))
        return alrd_errf(err, "%s: tokenizer: bad merges", path);
    const int32_t ids[4] = {v->bos_id, v->eos_id, v->unk_id, v->pad_id};
    static const char *idn[4] = {"bos_id", "eos_id", "unk_id", "pad_id"};
    for (int i = 0; i < 4; i++)
        if (ids[i] < -1 || ids[i] >= v->n_tokens)
            return alrd_errf(err, "%s: tokenizer: %s %d outside -1..%d", path, idn[i], ids[i],
                             v->n_tokens - 1);
    if (v->types)
        for (int32_t i = 0; i < v->n_tokens; i++)
            if (v->types[i] < 0 || v->types[i] > 6)
                return alrd_errf(err, "%s: tokenizer: token %d type %d outside 0..6", path, i,
                                 v->types[i]);
    if (memchr(v->pre, 0, sizeof v->pre) == NULL)
        return alrd_errf(err, "%s: tokenizer: pre not terminated", path);
    return 0;
}

/* ------------------------------------------------------------ writer */

int alrd_file_convert_f32(const float *src, size_t n, alrd_dtype to, void *dst,
                          alrd_error *err) {
    if (to == ALRD_F32) {
        memcpy(dst, src, n * sizeof(float));
        return 0;
    }
    if (to != ALRD_F16 && to != ALRD_BF16)
        return alrd_errf(err, "convert: target dtype %s is not F32, F16 or BF16",
                         alrd_dtype_name(to) ? alrd_dtype_name(to) : "?");
    uint16_t *o = dst;
    for (size_t i = 0; i < n; i++) {
        if (to == ALRD_F16) {
            o[i] = alrd_f32_to_f16(src[i]);
            if (isfinite(src[i]) && (o[i] & 0x7c00) == 0x7c00)
                return alrd_errf(err, "convert: element %zu (%g) overflows F16", i, src[i]);
        } else {
            o[i] = alrd_f32_to_bf16(src[i]);
        }
    }
    return 0;
}

static void enc_config(wbuf *b, const alrd_config *c) {
    wb_str(b, c->arch);
    const int iv[] = {c->n_layers, c->hidden, c->n_heads, c->n_kv_heads,
                      c->head_dim, c->ffn, c->vocab_size, c->max_ctx};
    for (size_t i = 0; i < sizeof iv / sizeof *iv; i++) wb_i32(b, iv[i]);
    wb_f32(b, c->rms_eps);
    wb_f32(b, c->rope_theta);
    wb_i32(b, c->rope_llama3);
    wb_f32(b, c->rope_factor);
    wb_f32(b, c->rope_low_freq_factor);
    wb_f32(b, c->rope_high_freq_factor);
    wb_i32(b, c->rope_orig_ctx);
    wb_i32(b, c->tie_embeddings);
    wb_i32(b, c->attention_bias);
    wb_i32(b, c->mlp_bias);
}

static void enc_lowrank(wbuf *b, const alrd_lowrank *l) {
    const int iv[] = {l->n_layers, l->group_heads, l->use_kivi, l->group_size,
                      l->residual_length, l->hadamard, l->whitened};
    for (size_t i = 0; i < sizeof iv / sizeof *iv; i++) wb_i32(b, iv[i]);
    const int *arr[4] = {l->k_rank, l->v_rank, l->k_bits, l->v_bits};
    for (int a = 0; a < 4; a++)
        for (int i = 0; i < l->n_layers; i++) wb_i32(b, arr[a][i]);
}

static void enc_vocab(wbuf *b, const alrd_vocab *v) {
    wb_i32(b, (int32_t)v->kind);
    wb_str(b, v->pre);
    wb_i32(b, v->n_tokens);
    for (int32_t i = 0; i < v->n_tokens; i++) wb_str(b, v->tokens[i]);
    wb_u32(b, v->scores != NULL);
    if (v->scores)
        for (int32_t i = 0; i < v->n_tokens; i++) wb_f32(b, v->scores[i]);
    wb_u32(b, v->types != NULL);
    if (v->types)
        for (int32_t i = 0; i < v->n_tokens; i++) wb_i32(b, v->types[i]);
    wb_i32(b, v->n_merges);
    for (int32_t i = 0; i < v->n_merges; i++) wb_str(b, v->merges[i]);
    const int32_t iv[] = {v->bos_id, v->eos_id, v->unk_id, v->pad_id,
                          v->add_bos, v->add_eos, v->add_space_prefix};
    for (size_t i = 0; i < sizeof iv / sizeof *iv; i++) wb_i32(b, iv[i]);
    wb_u32(b, v->chat_template != NULL);
    if (v->chat_template) wb_str(b, v->chat_template);
}

typedef struct {
    uint32_t kind, flags;
    uint64_t offset, raw_size;
    wbuf stored; /* bytes as written */
    uint32_t crc;
} wsec;

static const uint8_t k_zero[ALIGN];

static int write_pad(alrd_outfile *o, uint64_t *pos, uint64_t to, alrd_error *err) {
    while (*pos < to) {
        size_t k = to - *pos > ALIGN ? ALIGN : (size_t)(to - *pos);
        if (alrd_outfile_write(o, k_zero, k, err)) return -1;
        *pos += k;
    }
    return 0;
}

struct alrd_file_sink {
    alrd_outfile *o;
    const char *path, *name;
    uint64_t want, n;
    uLong crc;
};

int alrd_file_sink_put(alrd_file_sink *k, const void *data, size_t n, alrd_error *err) {
    if (n > k->want - k->n)
        return alrd_errf(err, "%s: tensor %s: producer gave more than its %llu bytes", k->path, k->name,
                         (unsigned long long)k->want);
    if (alrd_outfile_write(k->o, data, n, err)) return -1;
    const uint8_t *b = data;
    for (size_t left = n; left;) { /* zlib's crc32 takes uInt lengths */
        uInt c = left > (1u << 30) ? (1u << 30) : (uInt)left;
        k->crc = crc32(k->crc, b, c);
        b += c;
        left -= c;
    }
    k->n += n;
    return 0;
}

/* The fill of alrd_file_write: tensors[i].data as it is. */
static int fill_from_data(void *user, int i, alrd_file_sink *sink, alrd_error *err) {
    const alrd_tensor *t = &((const alrd_tensor *)user)[i];
    return alrd_file_sink_put(sink, t->data, t->nbytes, err);
}

static void enc_directory(wbuf *b, const alrd_tensor *tensors, int n_tensors, const uint64_t *toff,
                          const uint32_t *tcrc) {
    wb_u32(b, (uint32_t)n_tensors);
    for (int i = 0; i < n_tensors; i++) {
        const alrd_tensor *t = &tensors[i];
        wb_str(b, t->name);
        wb_u32(b, (uint32_t)t->dtype);
        wb_u32(b, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) wb_u64(b, (uint64_t)t->shape[d]);
        wb_u32(b, (uint32_t)t->unpermute_heads);
        wb_u64(b, toff[i]);
        wb_u64(b, t->nbytes);
        wb_u32(b, tcrc[i]);
    }
}

/* The fixed header and the section table for sections sec[0..ns). */
static void enc_header(uint8_t *hdr, uint64_t header_size, int ns, const wsec *sec, uint64_t file_size,
                       uint64_t data_offset, uint64_t data_size) {
    memset(hdr, 0, header_size);
    memcpy(hdr, "ALRD", 4);
    le32(hdr + 4, ALRD_FILE_VERSION);
    le32(hdr + 8, (uint32_t)header_size);
    le32(hdr + 12, (uint32_t)ns);
    le64(hdr + 16, file_size);
    le64(hdr + 24, data_offset);
    le64(hdr + 32, data_size);
    for (int i = 0; i < ns; i++) {
        uint8_t *e = hdr + HDR_FIXED + SEC_ENTRY * i;
        le32(e, sec[i].kind);
        le32(e + 4, sec[i].flags);
        le64(e + 8, sec[i].offset);
        le64(e + 16, sec[i].stored.n);
        le64(e + 24, sec[i].raw_size);
        le32(e + 32, sec[i].crc);
    }
    uLong hc = crc32(0L, Z_NULL, 0);
    hc = crc32(hc, hdr, 60);
    hc = crc32(hc, hdr + HDR_FIXED, (uInt)(header_size - HDR_FIXED));
    le32(hdr + 60, (uint32_t)hc);
}

int alrd_file_write(const char *path, const alrd_config *config, const alrd_lowrank *lowrank,
                    const alrd_vocab *vocab, const alrd_tensor *tensors, int n_tensors,
                    const char *meta_json, alrd_error *err) {
    return alrd_file_write_stream(path, config, lowrank, vocab, tensors, n_tensors, meta_json, NULL, NULL,
                                  err);
}

/* The tensor directory holds each tensor's CRC but precedes the data: the
 * file is written with a placeholder directory (same size: every field has a
 * fixed width), then the directory and the header are written again once the
 * data's CRCs are known. The bytes equal a write from memory. */
int alrd_file_write_stream(const char *path, const alrd_config *config, const alrd_lowrank *lowrank,
                           const alrd_vocab *vocab, const alrd_tensor *tensors, int n_tensors,
                           const char *meta_json, alrd_file_fill_fn fill, void *user,
                           alrd_error *err) {
    if (!config || !vocab || n_tensors < 0 || (n_tensors && !tensors))
        return alrd_errf(err, "%s: write: config, vocab and tensors are required", path);
    if (config_ok(config, path, err) || vocab_ok(vocab, path, err)) return -1;
    for (int32_t i = 0; i < vocab->n_tokens; i++)
        if (!vocab->tokens[i]) return alrd_errf(err, "%s: tokenizer: token %d is NULL", path, i);
    for (int32_t i = 0; i < vocab->n_merges; i++)
        if (!vocab->merges[i]) return alrd_errf(err, "%s: tokenizer: merge %d is NULL", path, i);
    if (lowrank && alrd_lowrank_validate(lowrank, config->n_layers, config->n_kv_heads,
                                         config->head_dim, path, err))
        return -1;
    if (meta_json) {
        cJSON *j = cJSON_Parse(meta_json);
        if (!j) return alrd_errf(err, "%s: metadata: not valid JSON", path);
        cJSON_Delete(j);
    }
    if (!fill) {
        fill = fill_from_data;
        user = (void *)tensors;
    }

    /* Tensor placement: 64-aligned offsets relative to data_offset. */
    uint64_t *toff = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof(uint64_t));
    uint32_t *tcrc = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof(uint32_t));
    if (!toff || !tcrc) { free(toff); free(tcrc); return alrd_errf(err, "%s: out of memory", path); }
    uint64_t data_size = 0;
    for (int i = 0; i < n_tensors; i++) {
        const alrd_tensor *t = &tensors[i];
        size_t nl = strnlen(t->name, ALRD_NAME_MAX);
        uint64_t shape[ALRD_MAX_DIMS] = {0};
        size_t need;
        int bad = 0;
        if (!name_ok(t->name, nl)) {
            bad = alrd_errf(err, "%s: tensor %d: bad name (1..127 printable characters)", path, i);
        } else {
            for (int d = 0; d < t->n_dims && d < ALRD_MAX_DIMS; d++)
                shape[d] = t->shape[d] < 0 ? 0 : (uint64_t)t->shape[d];
            if (t->unpermute_heads < 0)
                bad = alrd_errf(err, "%s: tensor %s: negative unpermute_heads", path, t->name);
            else if (tensor_meta_ok(path, t->name, (uint32_t)t->dtype, (uint32_t)t->n_dims, shape,
                                    (uint32_t)t->unpermute_heads, &need, err))
                bad = -1;
            else if (need != t->nbytes || (need && !t->data && fill == fill_from_data))
                bad = alrd_errf(err, "%s: tensor %s: has %zu bytes, its dtype and shape need %zu",
                                path, t->name, t->nbytes, need);
        }
        if (bad) { free(toff); free(tcrc); return -1; }
        toff[i] = align_up(data_size);
        data_size = toff[i] + need;
    }
    if (names_unique(tensors, n_tensors, path, err)) { free(toff); free(tcrc); return -1; }

    wsec sec[MAX_SECTIONS];
    int ns = 0, dir = -1;
    memset(sec, 0, sizeof sec);
    sec[ns].kind = SEC_CONFIG; enc_config(&sec[ns++].stored, config);
    if (lowrank) { sec[ns].kind = SEC_LOWRANK; enc_lowrank(&sec[ns++].stored, lowrank); }
    sec[ns].kind = SEC_TOKENIZER; enc_vocab(&sec[ns++].stored, vocab);
    dir = ns;
    sec[ns].kind = SEC_TENSORS;
    enc_directory(&sec[ns++].stored, tensors, n_tensors, toff, tcrc); /* CRCs still 0 */
    if (meta_json) { sec[ns].kind = SEC_META; wb_put(&sec[ns++].stored, meta_json, strlen(meta_json)); }

    int rc = -1;
    uint8_t *hdr = NULL;
    wbuf dirb = {0};
    for (int i = 0; i < ns; i++) {
        if (sec[i].stored.oom) { alrd_errf(err, "%s: out of memory", path); goto out; }
        sec[i].raw_size = sec[i].stored.n;
    }
    /* The tokenizer is mostly text: store it deflated when that is smaller. */
    for (int i = 0; i < ns; i++) {
        if (sec[i].kind != SEC_TOKENIZER) continue;
        uLongf cap = compressBound(sec[i].stored.n);
        uint8_t *z = malloc(cap);
        if (!z) { alrd_errf(err, "%s: out of memory", path); goto out; }
        if (compress2(z, &cap, sec[i].stored.p, sec[i].stored.n, Z_BEST_COMPRESSION) != Z_OK) {
            free(z);
            alrd_errf(err, "%s: tokenizer: zlib compression failed", path);
            goto out;
        }
        if (cap < sec[i].stored.n) {
            free(sec[i].stored.p);
            sec[i].stored.p = z;
            sec[i].stored.n = sec[i].stored.cap = cap;
            sec[i].flags = SEC_FLAG_ZLIB;
        } else {
            free(z);
        }
    }

    uint64_t header_size = HDR_FIXED + (uint64_t)SEC_ENTRY * ns, pos = align_up(header_size);
    for (int i = 0; i < ns; i++) {
        sec[i].offset = pos;
        sec[i].crc = crc_of(sec[i].stored.p, sec[i].stored.n);
        pos = align_up(pos + sec[i].stored.n);
    }
    uint64_t data_offset = pos, file_size = data_offset + data_size;

    hdr = calloc(1, header_size);
    if (!hdr) { alrd_errf(err, "%s: out of memory", path); goto out; }
    enc_header(hdr, header_size, ns, sec, file_size, data_offset, data_size); /* rewritten below */

    alrd_outfile o;
    if (alrd_outfile_open(&o, path, err)) goto out;
    uint64_t at = 0;
    int bad = alrd_outfile_write(&o, hdr, header_size, err);
    at = header_size;
    for (int i = 0; i < ns && !bad; i++) {
        bad = write_pad(&o, &at, sec[i].offset, err) ||
              alrd_outfile_write(&o, sec[i].stored.p, sec[i].stored.n, err);
        at += sec[i].stored.n;
    }
    if (!bad) bad = write_pad(&o, &at, data_offset, err);
    for (int i = 0; i < n_tensors && !bad; i++) {
        alrd_file_sink k = {.o = &o, .path = path, .name = tensors[i].name, .want = tensors[i].nbytes,
                            .crc = crc32(0L, Z_NULL, 0)};
        bad = write_pad(&o, &at, data_offset + toff[i], err) || fill(user, i, &k, err);
        if (!bad && k.n != k.want)
            bad = alrd_errf(err, "%s: tensor %s: producer gave %llu of its %llu bytes", path, tensors[i].name,
                            (unsigned long long)k.n, (unsigned long long)k.want);
        tcrc[i] = (uint32_t)k.crc;
        at += k.n;
    }
    if (!bad) { /* the directory with the CRCs, then the header over the placeholders */
        enc_directory(&dirb, tensors, n_tensors, toff, tcrc);
        if (dirb.oom || dirb.n != sec[dir].stored.n) {
            bad = alrd_errf(err, "%s: %s", path, dirb.oom ? "out of memory" : "tensor directory changed size");
        } else {
            sec[dir].crc = crc_of(dirb.p, dirb.n);
            enc_header(hdr, header_size, ns, sec, file_size, data_offset, data_size);
            if (fflush(o.fp) != 0 || fseeko(o.fp, (off_t)sec[dir].offset, SEEK_SET) != 0 ||
                alrd_outfile_write(&o, dirb.p, dirb.n, err) || fseeko(o.fp, 0, SEEK_SET) != 0 ||
                alrd_outfile_write(&o, hdr, header_size, err))
                bad = alrd_errf(err, "%s: write failed (rewriting the header)", path);
        }
    }
    if (bad) { alrd_outfile_abort(&o); goto out; }
    if (alrd_outfile_commit(&o, err)) goto out;
    rc = 0;
out:
    for (int i = 0; i < ns; i++) free(sec[i].stored.p);
    free(dirb.p);
    free(hdr);
    free(toff);
    free(tcrc);
    return rc;
}

/* ------------------------------------------------------------ reader */

static void vocab_release(alrd_vocab *v) {
    if (v->tokens)
        for (int32_t i = 0; i < v->n_tokens; i++) free(v->tokens[i]);
    if (v->merges)
        for (int32_t i = 0; i < v->n_merges; i++) free(v->merges[i]);
    free(v->tokens);
    free(v->merges);
    free(v->scores);
    free(v->types);
    free(v->chat_template);
    memset(v, 0, sizeof *v);
}

static int dec_config(rd *r, alrd_config *c) {
    const char *arch;
    uint32_t n;
    memset(c, 0, sizeof *c);
    if (rd_str(r, &arch, &n, sizeof c->arch - 1, "arch")) return -1;
    memcpy(c->arch, arch, n + 1);
    int *iv[] = {&c->n_layers, &c->hidden, &c->n_heads, &c->n_kv_heads,
                 &c->head_dim, &c->ffn, &c->vocab_size, &c->max_ctx};
    for (size_t i = 0; i < sizeof iv / sizeof *iv; i++)
        if (rd_int(r, iv[i], "dimensions")) return -1;
    if (rd_f32(r, &c->rms_eps, "rms_eps") || rd_f32(r, &c->rope_theta, "rope_theta") ||
        rd_int(r, &c->rope_llama3, "rope_llama3") || rd_f32(r, &c->rope_factor, "rope_factor") ||
        rd_f32(r, &c->rope_low_freq_factor, "rope_low_freq_factor") ||
        rd_f32(r, &c->rope_high_freq_factor, "rope_high_freq_factor") ||
        rd_int(r, &c->rope_orig_ctx, "rope_orig_ctx") ||
        rd_int(r, &c->tie_embeddings, "tie_embeddings") ||
        rd_int(r, &c->attention_bias, "attention_bias") || rd_int(r, &c->mlp_bias, "mlp_bias"))
        return -1;
    return rd_end(r);
}

static int dec_lowrank(rd *r, alrd_lowrank *l) {
    int n;
    memset(l, 0, sizeof *l);
    if (rd_int(r, &n, "n_layers")) return -1;
    if (n <= 0 || n > 4096)
        return alrd_errf(r->err, "%s: section lowrank: n_layers %d outside 1..4096", r->path, n);
    if (rd_need(r, 6 * 4 + (size_t)n * 16, "per-layer arrays")) return -1;
    if (alrd_lowrank_alloc(l, n)) return alrd_errf(r->err, "%s: out of memory", r->path);
    if (rd_int(r, &l->group_heads, "group_heads") || rd_int(r, &l->use_kivi, "use_kivi") ||
        rd_int(r, &l->group_size, "group_size") ||
        rd_int(r, &l->residual_length, "residual_length") || rd_int(r, &l->hadamard, "hadamard") ||
        rd_int(r, &l->whitened, "whitened"))
        return -1;
    int *arr[4] = {l->k_rank, l->v_rank, l->k_bits, l->v_bits};
    for (int a = 0; a < 4; a++)
        for (int i = 0; i < n; i++)
            if (rd_int(r, &arr[a][i], "per-layer arrays")) return -1;
    return rd_end(r);
}

static char *dup_n(const char *s, uint32_t n) {
    char *d = malloc((size_t)n + 1);
    if (d) memcpy(d, s, (size_t)n + 1);
    return d;
}

static int dec_vocab(rd *r, alrd_vocab *v) {
    int32_t kind, n;
    const char *s;
    uint32_t len, flag;
    memset(v, 0, sizeof *v);
    v->bos_id = v->eos_id = v->unk_id = v->pad_id = -1;
    if (rd_i32(r, &kind, "kind")) return -1;
    v->kind = (alrd_vocab_kind)kind;
    if (rd_str(r, &s, &len, sizeof v->pre - 1, "pre")) return -1;
    memcpy(v->pre, s, len + 1);
    if (rd_i32(r, &n, "n_tokens")) return -1;
    /* Each token takes at least 5 bytes: bounds the allocation by the data. */
    if (n <= 0 || (size_t)n > (r->n - r->pos) / 5)
        return alrd_errf(r->err, "%s: section tokenizer: n_tokens %d does not fit the section",
                         r->path, n);
    v->tokens = calloc((size_t)n, sizeof(char *));
    if (!v->tokens) return alrd_errf(r->err, "%s: out of memory", r->path);
    v->n_tokens = n;
    for (int32_t i = 0; i < n; i++) {
        if (rd_str(r, &s, &len, 1u << 20, "token")) return -1;
        if (!(v->tokens[i] = dup_n(s, len))) return alrd_errf(r->err, "%s: out of memory", r->path);
    }
    if (rd_u32(r, &flag, "has_scores")) return -1;
    if (flag > 1) return alrd_errf(r->err, "%s: section tokenizer: has_scores %u", r->path, flag);
    if (flag) {
        if (rd_need(r, (size_t)n * 4, "scores")) return -1;
        if (!(v->scores = malloc((size_t)n * sizeof(float))))
            return alrd_errf(r->err, "%s: out of memory", r->path);
        for (int32_t i = 0; i < n; i++) rd_f32(r, &v->scores[i], "scores");
    }
    if (rd_u32(r, &flag, "has_types")) return -1;
    if (flag > 1) return alrd_errf(r->err, "%s: section tokenizer: has_types %u", r->path, flag);
    if (flag) {
        if (rd_need(r, (size_t)n * 4, "types")) return -1;
        if (!(v->types = malloc((size_t)n * sizeof(int32_t))))
            return alrd_errf(r->err, "%s: out of memory", r->path);
        for (int32_t i = 0; i < n; i++) rd_i32(r, &v->types[i], "types");
    }
    int32_t nm;
    if (rd_i32(r, &nm, "n_merges")) return -1;
    if (nm < 0 || (size_t)nm > (r->n - r->pos) / 5)
        return alrd_errf(r->err, "%s: section tokenizer: n_merges %d does not fit the section",
                         r->path, nm);
    if (nm) {
        if (!(v->merges = calloc((size_t)nm, sizeof(char *))))
            return alrd_errf(r->err, "%s: out of memory", r->path);
        v->n_merges = nm;
        for (int32_t i = 0; i < nm; i++) {
            if (rd_str(r, &s, &len, 1u << 20, "merge")) return -1;
            if (!(v->merges[i] = dup_n(s, len)))
                return alrd_errf(r->err, "%s: out of memory", r->path);
        }
    }
    if (rd_i32(r, &v->bos_id, "bos_id") || rd_i32(r, &v->eos_id, "eos_id") ||
        rd_i32(r, &v->unk_id, "unk_id") || rd_i32(r, &v->pad_id, "pad_id") ||
        rd_int(r, &v->add_bos, "add_bos") || rd_int(r, &v->add_eos, "add_eos") ||
        rd_int(r, &v->add_space_prefix, "add_space_prefix") ||
        rd_u32(r, &flag, "has_chat_template"))
        return -1;
    if (flag > 1)
        return alrd_errf(r->err, "%s: section tokenizer: has_chat_template %u", r->path, flag);
    if (flag) {
        if (rd_str(r, &s, &len, 1u << 26, "chat_template")) return -1;
        if (!(v->chat_template = dup_n(s, len)))
            return alrd_errf(r->err, "%s: out of memory", r->path);
    }
    if (rd_end(r)) return -1;
    return vocab_ok(v, r->path, r->err);
}

/* One tensor directory entry as read; data checked after the layout is. */
typedef struct {
    uint64_t off, size;
    uint32_t crc;
} tinfo;

static int dec_tensors(rd *r, alrd_file *f, tinfo **out_info, uint64_t data_size) {
    uint32_t n;
    if (rd_u32(r, &n, "n_tensors")) return -1;
    if ((size_t)n > (r->n - r->pos) / 46) /* the smallest entry is 46 bytes */
        return alrd_errf(r->err, "%s: section tensor directory: n_tensors %u does not fit", r->path, n);
    f->tensors = calloc(n ? n : 1, sizeof(alrd_tensor));
    tinfo *info = calloc(n ? n : 1, sizeof(tinfo));
    *out_info = info;
    if (!f->tensors || !info) return alrd_errf(r->err, "%s: out of memory", r->path);
    f->n_tensors = (int)n;
    for (uint32_t i = 0; i < n; i++) {
        alrd_tensor *t = &f->tensors[i];
        const char *s;
        uint32_t len, dtype, nd, unperm;
        uint64_t shape[ALRD_MAX_DIMS] = {0};
        if (rd_str(r, &s, &len, ALRD_NAME_MAX - 1, "tensor name")) return -1;
        if (!name_ok(s, len))
            return alrd_errf(r->err, "%s: tensor %u: bad name (1..127 printable characters)",
                             r->path, i);
        memcpy(t->name, s, len + 1);
        if (rd_u32(r, &dtype, t->name) || rd_u32(r, &nd, t->name)) return -1;
        if (nd < 1 || nd > ALRD_MAX_DIMS)
            return alrd_errf(r->err, "%s: tensor %s: n_dims %u outside 1..%d", r->path, t->name,
                             nd, ALRD_MAX_DIMS);
        for (uint32_t d = 0; d < nd; d++)
            if (rd_u64(r, &shape[d], t->name)) return -1;
        size_t need;
        if (rd_u32(r, &unperm, t->name) || rd_u64(r, &info[i].off, t->name) ||
            rd_u64(r, &info[i].size, t->name) || rd_u32(r, &info[i].crc, t->name))
            return -1;
        if (tensor_meta_ok(r->path, t->name, dtype, nd, shape, unperm, &need, r->err)) return -1;
        if (info[i].size != need)
            return alrd_errf(r->err, "%s: tensor %s: size %llu but its dtype and shape need %zu",
                             r->path, t->name, (unsigned long long)info[i].size, need);
        if (info[i].off % ALIGN || info[i].off > data_size || info[i].size > data_size - info[i].off)
            return alrd_errf(r->err, "%s: tensor %s: data [%llu, +%llu) outside the data region "
                             "(%llu bytes) or misaligned", r->path, t->name,
                             (unsigned long long)info[i].off, (unsigned long long)info[i].size,
                             (unsigned long long)data_size);
        t->dtype = (alrd_dtype)dtype;
        t->n_dims = (int)nd;
        for (uint32_t d = 0; d < nd; d++) t->shape[d] = (int64_t)shape[d];
        t->nbytes = (size_t)info[i].size;
        t->unpermute_heads = (int)unperm;
    }
    if (rd_end(r)) return -1;
    return names_unique(f->tensors, f->n_tensors, r->path, r->err);
}

typedef struct {
    uint64_t off, end;
    const char *what;
} region;

static int cmp_region(const void *a, const void *b) {
    const region *x = a, *y = b;
    if (x->off != y->off) return x->off < y->off ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

void alrd_file_close(alrd_file *f) {
    alrd_mmap_close(&f->map);
    if (f->lowrank) {
        alrd_lowrank_free(f->lowrank);
        free(f->lowrank);
    }
    vocab_release(&f->vocab);
    free(f->tensors);
    free(f->meta_json);
    memset(f, 0, sizeof *f);
}

int alrd_file_open(alrd_file *f, const char *path, alrd_error *err) {
    memset(f, 0, sizeof *f);
    if (alrd_mmap_open(&f->map, path, err)) return -1;
    const uint8_t *p = f->map.data;
    const size_t fsz = f->map.size;
    tinfo *info = NULL;
    region *reg = NULL;
    uint8_t *raw[MAX_SECTIONS] = {0};
    int rc = -1;

    if (fsz < 8 || memcmp(p, "ALRD", 4)) {
        alrd_errf(err, "%s: not an .alrd file (bad magic)", path);
        goto out;
    }
    f->version = get32(p + 4);
    if (f->version != ALRD_FILE_VERSION) {
        alrd_errf(err, "%s: unsupported version %u (this build reads version %d)", path,
                  f->version, ALRD_FILE_VERSION);
        goto out;
    }
    if (fsz < HDR_FIXED) {
        alrd_errf(err, "%s: header: file is %zu bytes, shorter than the header (truncated)", path, fsz);
        goto out;
    }
    uint32_t header_size = get32(p + 8), ns = get32(p + 12);
    if (ns < 1 || ns > MAX_SECTIONS || header_size != HDR_FIXED + SEC_ENTRY * ns) {
        alrd_errf(err, "%s: header: %u sections / header_size %u inconsistent (corrupt file)",
                  path, ns, header_size);
        goto out;
    }
    if (header_size > fsz) {
        alrd_errf(err, "%s: header: section table runs past the end of the file (truncated)", path);
        goto out;
    }
    uLong hc = crc32(0L, Z_NULL, 0);
    hc = crc32(hc, p, 60);
    hc = crc32(hc, p + HDR_FIXED, header_size - HDR_FIXED);
    if ((uint32_t)hc != get32(p + 60)) {
        alrd_errf(err, "%s: header: CRC mismatch (corrupt file)", path);
        goto out;
    }
    uint64_t file_size = get64(p + 16), data_offset = get64(p + 24), data_size = get64(p + 32);
    if (file_size != fsz) {
        alrd_errf(err, "%s: file is %zu bytes but its header says %llu (truncated or extended)",
                  path, fsz, (unsigned long long)file_size);
        goto out;
    }
    if (data_offset % ALIGN || data_offset > fsz || data_size != fsz - data_offset) {
        alrd_errf(err, "%s: header: data region [%llu, +%llu) does not end the file", path,
                  (unsigned long long)data_offset, (unsigned long long)data_size);
        goto out;
    }
    for (int i = 40; i < 60; i++)
        if (p[i]) { alrd_errf(err, "%s: header: reserved bytes not zero", path); goto out; }

    /* Section table. */
    const uint8_t *sp[SEC_KIND_MAX + 1] = {0};
    size_t slen[SEC_KIND_MAX + 1] = {0};
    uint64_t soff[SEC_KIND_MAX + 1] = {0}, sstored[SEC_KIND_MAX + 1] = {0};
    for (uint32_t i = 0; i < ns; i++) {
        const uint8_t *e = p + HDR_FIXED + SEC_ENTRY * i;
        uint32_t kind = get32(e), flags = get32(e + 4), crc = get32(e + 32);
        uint64_t off = get64(e + 8), size = get64(e + 16), raw_size = get64(e + 24);
        const char *nm = sec_name(kind);
        if (kind < 1 || kind > SEC_KIND_MAX) {
            alrd_errf(err, "%s: section %u: unknown kind %u", path, i, kind);
            goto out;
        }
        if (sp[kind]) { alrd_errf(err, "%s: section %s: appears twice", path, nm); goto out; }
        if ((flags & ~SEC_FLAG_ZLIB) || get32(e + 36)) {
            alrd_errf(err, "%s: section %s: unknown flags 0x%x", path, nm, flags);
            goto out;
        }
        if (off % ALIGN || off < header_size || off > data_offset || size > data_offset - off) {
            alrd_errf(err, "%s: section %s: [%llu, +%llu) outside the section area", path, nm,
                      (unsigned long long)off, (unsigned long long)size);
            goto out;
        }
        if (crc_of(p + off, (size_t)size) != crc) {
            alrd_errf(err, "%s: section %s: CRC mismatch (corrupt file)", path, nm);
            goto out;
        }
        if (!(flags & SEC_FLAG_ZLIB)) {
            if (raw_size != size) {
                alrd_errf(err, "%s: section %s: raw_size %llu != size %llu", path, nm,
                          (unsigned long long)raw_size, (unsigned long long)size);
                goto out;
            }
            sp[kind] = p + off;
            slen[kind] = (size_t)size;
        } else {
            /* deflate expands at most ~1032:1; a larger claim is corrupt. */
            if (raw_size == 0 || raw_size > MAX_RAW_SECTION || raw_size > size * 1032 + 1024) {
                alrd_errf(err, "%s: section %s: raw_size %llu outside 1..%llu", path, nm,
                          (unsigned long long)raw_size, (unsigned long long)MAX_RAW_SECTION);
                goto out;
            }
            if (!(raw[i] = malloc((size_t)raw_size))) {
                alrd_errf(err, "%s: out of memory", path);
                goto out;
            }
            uLongf dl = (uLongf)raw_size;
            if (uncompress(raw[i], &dl, p + off, (uLong)size) != Z_OK || dl != raw_size) {
                alrd_errf(err, "%s: section %s: zlib data does not inflate to %llu bytes", path,
                          nm, (unsigned long long)raw_size);
                goto out;
            }
            sp[kind] = raw[i];
            slen[kind] = (size_t)raw_size;
        }
        soff[kind] = off;
        sstored[kind] = size;
    }
    static const int required[] = {SEC_CONFIG, SEC_TOKENIZER, SEC_TENSORS};
    for (size_t i = 0; i < sizeof required / sizeof *required; i++)
        if (!sp[required[i]]) {
            alrd_errf(err, "%s: section %s: missing", path, sec_name(required[i]));
            goto out;
        }

    rd r = {sp[SEC_CONFIG], slen[SEC_CONFIG], 0, path, "config", err};
    if (dec_config(&r, &f->config) || config_ok(&f->config, path, err)) goto out;
    if (sp[SEC_LOWRANK]) {
        if (!(f->lowrank = calloc(1, sizeof *f->lowrank))) {
            alrd_errf(err, "%s: out of memory", path);
            goto out;
        }
        r = (rd){sp[SEC_LOWRANK], slen[SEC_LOWRANK], 0, path, "lowrank", err};
        if (dec_lowrank(&r, f->lowrank) ||
            alrd_lowrank_validate(f->lowrank, f->config.n_layers, f->config.n_kv_heads,
                                  f->config.head_dim, path, err))
            goto out;
    }
    r = (rd){sp[SEC_TOKENIZER], slen[SEC_TOKENIZER], 0, path, "tokenizer", err};
    if (dec_vocab(&r, &f->vocab)) goto out;
    r = (rd){sp[SEC_TENSORS], slen[SEC_TENSORS], 0, path, "tensor directory", err};
    if (dec_tensors(&r, f, &info, data_size)) goto out;
    if (sp[SEC_META]) {
        size_t n = slen[SEC_META];
        if (memchr(sp[SEC_META], 0, n)) {
            alrd_errf(err, "%s: section metadata: contains a NUL byte", path);
            goto out;
        }
        cJSON *j = cJSON_ParseWithLength((const char *)sp[SEC_META], n);
        if (!j) { alrd_errf(err, "%s: section metadata: not valid JSON", path); goto out; }
        cJSON_Delete(j);
        if (!(f->meta_json = malloc(n + 1))) {
            alrd_errf(err, "%s: out of memory", path);
            goto out;
        }
        memcpy(f->meta_json, sp[SEC_META], n);
        f->meta_json[n] = 0;
    }

    /* Every byte belongs to the header, a section or a tensor, or is zero
     * padding; regions never overlap. */
    size_t nreg = 1 + ns + (size_t)f->n_tensors;
    if (!(reg = malloc(nreg * sizeof *reg))) { alrd_errf(err, "%s: out of memory", path); goto out; }
    size_t k = 0;
    reg[k++] = (region){0, header_size, "header"};
    for (int kind = 1; kind <= SEC_KIND_MAX; kind++)
        if (sp[kind]) reg[k++] = (region){soff[kind], soff[kind] + sstored[kind], sec_name(kind)};
    for (int i = 0; i < f->n_tensors; i++)
        reg[k++] = (region){data_offset + info[i].off, data_offset + info[i].off + info[i].size,
                            f->tensors[i].name};
    qsort(reg, k, sizeof *reg, cmp_region);
    uint64_t at = 0;
    for (size_t i = 0; i < k; i++) {
        if (reg[i].off < at) {
            alrd_errf(err, "%s: %s overlaps %s (corrupt file)", path, reg[i].what, reg[i - 1].what);
            goto out;
        }
        for (uint64_t b = at; b < reg[i].off; b++)
            if (p[b]) {
                alrd_errf(err, "%s: padding byte at offset %llu is not zero (corrupt file)", path,
                          (unsigned long long)b);
                goto out;
            }
        at = reg[i].end;
    }
    for (uint64_t b = at; b < fsz; b++)
        if (p[b]) {
            alrd_errf(err, "%s: padding byte at offset %llu is not zero (corrupt file)", path,
                      (unsigned long long)b);
            goto out;
        }

    for (int i = 0; i < f->n_tensors; i++) {
        const uint8_t *d = p + data_offset + info[i].off;
        if (crc_of(d, (size_t)info[i].size) != info[i].crc) {
            alrd_errf(err, "%s: tensor %s: CRC mismatch (corrupt file)", path, f->tensors[i].name);
            goto out;
        }
        alrd_release_pages(d, (size_t)info[i].size); /* checked once: a large file stays out of the resident set */
        f->tensors[i].data = d;
    }
    rc = 0;
out:
    for (int i = 0; i < MAX_SECTIONS; i++) free(raw[i]);
    free(info);
    free(reg);
    if (rc) alrd_file_close(f);
    return rc;
}
