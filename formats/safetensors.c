/* safetensors: reader on a mapping (single file or index + shards) and an
 * atomic writer. Every number taken from a header is checked before use. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Largest integer a JSON number (a double) carries exactly. */
#define JSON_MAX_INT 9007199254740992.0

const char *alrd_safetensors_dtype_name(alrd_dtype t) {
    switch (t) {
    case ALRD_F32: return "F32";
    case ALRD_F16: return "F16";
    case ALRD_BF16: return "BF16";
    default: return NULL;
    }
}

static size_t st_elem_size(alrd_dtype t) { return t == ALRD_F32 ? 4 : 2; }

/* A JSON number that is a whole number in [0, 2^53]. */
static int json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return -1;
    double d = j->valuedouble;
    if (!(d >= 0 && d <= JSON_MAX_INT) || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_tensor(const char *path, const cJSON *e, size_t data_size,
                        const uint8_t *data, alrd_tensor *t, uint64_t *begin_out,
                        alrd_error *err) {
    const char *name = e->string;
    if (strlen(name) >= ALRD_NAME_MAX)
        return alrd_errf(err, "%s: tensor name '%.60s...': longer than %d bytes", path, name,
                         ALRD_NAME_MAX - 1);
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    if (!cJSON_IsObject(e))
        return alrd_errf(err, "%s: tensor %s: expected an object with dtype/shape/data_offsets",
                         path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return alrd_errf(err, "%s: tensor %s: dtype: missing or not a string", path, name);
    if (!strcmp(dt->valuestring, "F32")) t->dtype = ALRD_F32;
    else if (!strcmp(dt->valuestring, "F16")) t->dtype = ALRD_F16;
    else if (!strcmp(dt->valuestring, "BF16")) t->dtype = ALRD_BF16;
    else
        return alrd_errf(err, "%s: tensor %s: dtype %.32s not supported (F32, F16, BF16)", path,
                         name, dt->valuestring);
    if (!cJSON_IsArray(sh))
        return alrd_errf(err, "%s: tensor %s: shape: missing or not an array", path, name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > ALRD_MAX_DIMS)
        return alrd_errf(err, "%s: tensor %s: shape: %d dims, at most %d supported", path, name,
                         nd, ALRD_MAX_DIMS);
    t->n_dims = nd;
    size_t numel = 1;
    int i = 0;
    for (const cJSON *d = sh->child; d; d = d->next, i++) {
        uint64_t v;
        if (json_uint(d, &v) != 0)
            return alrd_errf(err, "%s: tensor %s: shape[%d]: not a non-negative integer", path,
                             name, i);
        t->shape[i] = (int64_t)v;
        if (alrd_mul_ok(numel, (size_t)v, &numel) != 0)
            return alrd_errf(err, "%s: tensor %s: shape: element count overflows", path, name);
    }
    size_t nbytes;
    if (alrd_mul_ok(numel, st_elem_size(t->dtype), &nbytes) != 0)
        return alrd_errf(err, "%s: tensor %s: shape: byte size overflows", path, name);
    uint64_t b, en;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || json_uint(off->child, &b) != 0 ||
        json_uint(off->child->next, &en) != 0)
        return alrd_errf(err, "%s: tensor %s: data_offsets: expected [begin, end] integers", path,
                         name);
    if (b > en)
        return alrd_errf(err, "%s: tensor %s: data_offsets: begin %" PRIu64 " > end %" PRIu64,
                         path, name, b, en);
    if (en > data_size)
        return alrd_errf(err,
                         "%s: tensor %s: data_offsets: end %" PRIu64
                         " past the end of the data (%zu bytes)",
                         path, name, en, data_size);
    if (en - b != nbytes)
        return alrd_errf(err,
                         "%s: tensor %s: data_offsets: %" PRIu64
                         " bytes, shape and dtype need %zu",
                         path, name, en - b, nbytes);
    t->data = data + b;
    t->nbytes = nbytes;
    *begin_out = b;
    return 0;
}

typedef struct { uint64_t begin; int idx; } st_order;

static int cmp_order(const void *a, const void *b) {
    const st_order *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->idx - y->idx;
}

static int cmp_tensor_ptr_name(const void *a, const void *b) {
    const alrd_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* Names must be unique; reports the first duplicate. */
static int check_unique(const char *path, const alrd_tensor *ts, int n, alrd_error *err) {
    if (n < 2) return 0;
    const alrd_tensor **p = malloc((size_t)n * sizeof *p);
    if (!p) return alrd_errf(err, "%s: out of memory", path);
    for (int i = 0; i < n; i++) p[i] = &ts[i];
    qsort(p, (size_t)n, sizeof *p, cmp_tensor_ptr_name);
    for (int i = 1; i < n; i++)
        if (!strcmp(p[i]->name, p[i - 1]->name)) {
            alrd_errf(err, "%s: tensor %s: appears more than once", path, p[i]->name);
            free(p);
            return -1;
        }
    free(p);
    return 0;
}

static int parse_header(alrd_safetensors *f, alrd_error *err) {
    const char *path = f->map.path;
    const uint8_t *d = f->map.data;
    size_t size = f->map.size;
    if (size < 8)
        return alrd_errf(err, "%s: header length: file is %zu bytes, too short for the 8-byte length",
                         path, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | d[i];
    if (n > ALRD_ST_MAX_HEADER)
        return alrd_errf(err, "%s: header length: %" PRIu64 " bytes exceeds the %u-byte limit",
                         path, n, ALRD_ST_MAX_HEADER);
    if (n > size - 8)
        return alrd_errf(err,
                         "%s: header length: %" PRIu64
                         " bytes runs past the end of the file (%zu bytes)",
                         path, n, size);
    if (n < 2 || d[8] != '{')
        return alrd_errf(err, "%s: header: not a JSON object", path);
    char *buf = malloc((size_t)n + 1);
    if (!buf) return alrd_errf(err, "%s: out of memory", path);
    memcpy(buf, d + 8, (size_t)n);
    buf[n] = 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(buf, &end, 1);
    if (!root) {
        size_t at = end && end >= buf ? (size_t)(end - buf) : 0;
        free(buf);
        return alrd_errf(err, "%s: header: malformed JSON near byte %zu", path, at);
    }
    free(buf);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return alrd_errf(err, "%s: header: not a JSON object", path);
    }
    int count = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            if (!cJSON_IsObject(e) && !cJSON_IsNull(e)) {
                cJSON_Delete(root);
                return alrd_errf(err, "%s: __metadata__: expected an object", path);
            }
            continue;
        }
        count++;
    }
    alrd_tensor *ts = calloc(count ? (size_t)count : 1, sizeof *ts);
    st_order *ord = calloc(count ? (size_t)count : 1, sizeof *ord);
    if (!ts || !ord) {
        free(ts); free(ord); cJSON_Delete(root);
        return alrd_errf(err, "%s: out of memory", path);
    }
    const uint8_t *data = d + 8 + n;
    size_t data_size = size - 8 - (size_t)n;
    int i = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) continue;
        if (parse_tensor(path, e, data_size, data, &ts[i], &ord[i].begin, err) != 0) {
            free(ts); free(ord); cJSON_Delete(root);
            return -1;
        }
        ord[i].idx = i;
        i++;
    }
    cJSON_Delete(root);
    if (check_unique(path, ts, count, err) != 0) {
        free(ts); free(ord);
        return -1;
    }
    /* Present tensors in file order, which is also what a writer produced. */
    qsort(ord, (size_t)count, sizeof *ord, cmp_order);
    f->tensors = malloc(count ? (size_t)count * sizeof *ts : 1);
    if (!f->tensors) {
        free(ts); free(ord);
        return alrd_errf(err, "%s: out of memory", path);
    }
    for (int k = 0; k < count; k++) f->tensors[k] = ts[ord[k].idx];
    f->n_tensors = count;
    free(ts); free(ord);
    return 0;
}

int alrd_safetensors_open(alrd_safetensors *f, const char *path, alrd_error *err) {
    memset(f, 0, sizeof *f);
    if (alrd_mmap_open(&f->map, path, err) != 0) return -1;
    if (parse_header(f, err) != 0) {
        alrd_safetensors_close(f);
        return -1;
    }
    return 0;
}

void alrd_safetensors_close(alrd_safetensors *f) {
    alrd_mmap_close(&f->map);
    free(f->tensors);
    memset(f, 0, sizeof *f);
}

const alrd_tensor *alrd_safetensors_find(const alrd_safetensors *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

/* ---- sets: one file or an index with shards ---- */

void alrd_safetensors_set_close(alrd_safetensors_set *s) {
    for (int i = 0; i < s->n_files; i++) alrd_safetensors_close(&s->files[i]);
    free(s->files);
    free(s->tensors);
    memset(s, 0, sizeof *s);
}

const alrd_tensor *alrd_safetensors_set_find(const alrd_safetensors_set *s, const char *name) {
    for (int i = 0; i < s->n_tensors; i++)
        if (!strcmp(s->tensors[i].name, name)) return &s->tensors[i];
    return NULL;
}

/* Gathers every file's tensors into s->tensors; names must be unique
 * across files. what names the set in errors. */
static int set_gather(alrd_safetensors_set *s, const char *what, alrd_error *err) {
    size_t total = 0;
    for (int i = 0; i < s->n_files; i++) total += (size_t)s->files[i].n_tensors;
    if (total > INT32_MAX) return alrd_errf(err, "%s: too many tensors", what);
    s->tensors = malloc(total ? total * sizeof *s->tensors : 1);
    if (!s->tensors) return alrd_errf(err, "%s: out of memory", what);
    int k = 0;
    for (int i = 0; i < s->n_files; i++)
        for (int j = 0; j < s->files[i].n_tensors; j++) s->tensors[k++] = s->files[i].tensors[j];
    s->n_tensors = k;
    return check_unique(what, s->tensors, k, err);
}

int alrd_safetensors_set_open_file(alrd_safetensors_set *s, const char *path, alrd_error *err) {
    memset(s, 0, sizeof *s);
    s->files = calloc(1, sizeof *s->files);
    if (!s->files) return alrd_errf(err, "%s: out of memory", path);
    if (alrd_safetensors_open(&s->files[0], path, err) != 0) {
        alrd_safetensors_set_close(s);
        return -1;
    }
    s->n_files = 1;
    if (set_gather(s, path, err) != 0) {
        alrd_safetensors_set_close(s);
        return -1;
    }
    return 0;
}

typedef struct { const char *tensor, *shard; int file; } wm_entry;

static int cmp_wm_shard(const void *a, const void *b) {
    const wm_entry *x = a, *y = b;
    int c = strcmp(x->shard, y->shard);
    return c ? c : strcmp(x->tensor, y->tensor);
}

/* A shard name is a plain file name next to the index: no directories, so
 * an index cannot point outside its checkpoint. */
static int shard_name_ok(const char *s) {
    size_t n = strlen(s);
    return n > 0 && n < 512 && !strchr(s, '/') && !strchr(s, '\\') && strcmp(s, ".") &&
           strcmp(s, "..");
}

int alrd_safetensors_set_open_index(alrd_safetensors_set *s, const char *index_path,
                                    alrd_error *err) {
    memset(s, 0, sizeof *s);
    char *text = NULL;
    size_t len = 0;
    if (alrd_read_file(index_path, ALRD_ST_MAX_HEADER, &text, &len, err) != 0) return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        free(text);
        return alrd_errf(err, "%s: malformed JSON near byte %zu", index_path, at);
    }
    free(text);
    int rc = -1;
    wm_entry *ents = NULL;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(wm)) {
        alrd_errf(err, "%s: weight_map: missing or not an object", index_path);
        goto done;
    }
    int n = cJSON_GetArraySize(wm);
    if (n <= 0) {
        alrd_errf(err, "%s: weight_map: empty", index_path);
        goto done;
    }
    ents = calloc((size_t)n, sizeof *ents);
    if (!ents) { alrd_errf(err, "%s: out of memory", index_path); goto done; }
    int i = 0;
    for (const cJSON *e = wm->child; e; e = e->next, i++) {
        if (!cJSON_IsString(e) || !shard_name_ok(e->valuestring)) {
            alrd_errf(err, "%s: weight_map: %s: expected a file name next to the index",
                      index_path, e->string);
            goto done;
        }
        ents[i].tensor = e->string;
        ents[i].shard = e->valuestring;
    }
    qsort(ents, (size_t)n, sizeof *ents, cmp_wm_shard);
    int n_shards = 0;
    for (i = 0; i < n; i++) {
        if (i > 0 && !strcmp(ents[i].tensor, ents[i - 1].tensor) &&
            !strcmp(ents[i].shard, ents[i - 1].shard)) {
            alrd_errf(err, "%s: weight_map: %s: listed twice", index_path, ents[i].tensor);
            goto done;
        }
        if (i == 0 || strcmp(ents[i].shard, ents[i - 1].shard)) n_shards++;
        ents[i].file = n_shards - 1;
    }
    if (n_shards > ALRD_ST_MAX_SHARDS) {
        alrd_errf(err, "%s: weight_map: %d shard files, at most %d", index_path, n_shards,
                  ALRD_ST_MAX_SHARDS);
        goto done;
    }
    s->files = calloc((size_t)n_shards, sizeof *s->files);
    if (!s->files) { alrd_errf(err, "%s: out of memory", index_path); goto done; }
    /* Shards live next to the index. */
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", index_path);
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = 0;
    else dir[0] = 0;
    for (i = 0; i < n; i++) {
        if (i > 0 && ents[i].file == ents[i - 1].file) continue;
        char p[1600];
        snprintf(p, sizeof p, "%s%s", dir, ents[i].shard);
        if (alrd_safetensors_open(&s->files[s->n_files], p, err) != 0) goto done;
        s->n_files++;
    }
    for (i = 0; i < n; i++)
        if (!alrd_safetensors_find(&s->files[ents[i].file], ents[i].tensor)) {
            alrd_errf(err, "%s: weight_map: tensor %s: not found in %s", index_path,
                      ents[i].tensor, ents[i].shard);
            goto done;
        }
    if (set_gather(s, index_path, err) != 0) goto done;
    rc = 0;
done:
    free(ents);
    cJSON_Delete(root);
    if (rc != 0) alrd_safetensors_set_close(s);
    return rc;
}

int alrd_safetensors_set_open_dir(alrd_safetensors_set *s, const char *dir, alrd_error *err) {
    char p[1100];
    struct stat st;
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    if (stat(p, &st) == 0) return alrd_safetensors_set_open_index(s, p, err);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (stat(p, &st) != 0) {
        memset(s, 0, sizeof *s);
        return alrd_errf(err, "%s: no model.safetensors or model.safetensors.index.json", dir);
    }
    return alrd_safetensors_set_open_file(s, p, err);
}

/* ---- writer ---- */

typedef struct {
    const alrd_tensor *t;
    size_t numel, rows, cols, out_bytes, begin;
} wr_item;

static int cmp_wr_name(const void *a, const void *b) {
    const wr_item *x = a, *y = b;
    return strcmp(x->t->name, y->t->name);
}

static cJSON *raw_u64(uint64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%" PRIu64, v);
    return cJSON_CreateRaw(b);
}

/* Converts and writes one tensor, a chunk of rows at a time. */
static int write_tensor(alrd_outfile *o, const wr_item *it, alrd_dtype out, alrd_error *err) {
    const alrd_tensor *t = it->t;
    if (t->dtype == out && t->unpermute_heads == 0) {
        if (t->nbytes != it->out_bytes)
            return alrd_errf(err, "%s: tensor %s: holds %zu bytes, shape needs %zu", o->path,
                             t->name, t->nbytes, it->out_bytes);
        return alrd_outfile_write(o, t->data, t->nbytes, err);
    }
    if (it->numel == 0) return 0;
    size_t chunk = ((size_t)1 << 22) / it->cols;  /* ~16 MB of floats per chunk */
    if (chunk == 0) chunk = 1;
    if (chunk > it->rows) chunk = it->rows;
    size_t esz = st_elem_size(out);
    float *f = malloc(chunk * it->cols * sizeof *f);
    uint16_t *h = out == ALRD_F32 ? NULL : malloc(chunk * it->cols * sizeof *h);
    if (!f || (out != ALRD_F32 && !h)) {
        free(f); free(h);
        return alrd_errf(err, "%s: tensor %s: out of memory", o->path, t->name);
    }
    int rc = 0;
    for (size_t r = 0; r < it->rows && rc == 0; r += chunk) {
        size_t nr = it->rows - r < chunk ? it->rows - r : chunk;
        size_t ne = nr * it->cols;
        if (t->n_dims == 0) rc = alrd_tensor_to_f32(t, f, err);
        else rc = alrd_tensor_rows_f32(t, (int64_t)r, (int64_t)nr, f, err);
        if (rc != 0) break;
        if (out == ALRD_F32) {
            rc = alrd_outfile_write(o, f, ne * esz, err);
        } else {
            for (size_t k = 0; k < ne; k++)
                h[k] = out == ALRD_F16 ? alrd_f32_to_f16(f[k]) : alrd_f32_to_bf16(f[k]);
            rc = alrd_outfile_write(o, h, ne * esz, err);
        }
    }
    free(f); free(h);
    return rc;
}

int alrd_safetensors_write(const char *path, const alrd_tensor *tensors, int n,
                           alrd_dtype out, alrd_error *err) {
    const char *dname = alrd_safetensors_dtype_name(out);
    if (!dname)
        return alrd_errf(err, "%s: output dtype %s: expected F32, F16 or BF16", path,
                         alrd_dtype_name(out) ? alrd_dtype_name(out) : "unknown");
    if (n < 0) return alrd_errf(err, "%s: negative tensor count", path);
    if (check_unique(path, tensors, n, err) != 0) return -1;
    wr_item *it = calloc(n ? (size_t)n : 1, sizeof *it);
    if (!it) return alrd_errf(err, "%s: out of memory", path);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const alrd_tensor *t = &tensors[i];
        it[i].t = t;
        if (!t->name[0] || t->n_dims < 0 || t->n_dims > ALRD_MAX_DIMS) {
            free(it);
            return alrd_errf(err, "%s: tensor '%s': bad name or %d dims", path, t->name,
                             t->n_dims);
        }
        size_t numel = 1;
        for (int d = 0; d < t->n_dims; d++)
            if (t->shape[d] < 0 || alrd_mul_ok(numel, (size_t)t->shape[d], &numel) != 0) {
                free(it);
                return alrd_errf(err, "%s: tensor %s: shape[%d]: negative or overflowing", path,
                                 t->name, d);
            }
        it[i].numel = numel;
        it[i].cols = t->n_dims ? (size_t)t->shape[t->n_dims - 1] : 1;
        it[i].rows = it[i].cols ? numel / it[i].cols : 0;
        if (alrd_mul_ok(numel, st_elem_size(out), &it[i].out_bytes) != 0) {
            free(it);
            return alrd_errf(err, "%s: tensor %s: byte size overflows", path, t->name);
        }
    }
    qsort(it, (size_t)n, sizeof *it, cmp_wr_name);
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_CreateObject();
    int ok = root && meta && cJSON_AddItemToObject(root, "__metadata__", meta);
    if (ok) ok = cJSON_AddStringToObject(meta, "format", "pt") != NULL;
    for (int i = 0; i < n && ok; i++) {
        it[i].begin = off;
        if (alrd_add_ok(off, it[i].out_bytes, &off) != 0) {
            free(it); cJSON_Delete(root);
            return alrd_errf(err, "%s: total size overflows", path);
        }
        cJSON *e = cJSON_CreateObject();
        cJSON *sh = cJSON_CreateArray(), *of = cJSON_CreateArray();
        ok = e && sh && of && cJSON_AddItemToObject(root, it[i].t->name, e);
        if (!ok) { cJSON_Delete(e); cJSON_Delete(sh); cJSON_Delete(of); break; }
        ok = cJSON_AddStringToObject(e, "dtype", dname) != NULL &&
             cJSON_AddItemToObject(e, "shape", sh);
        if (!ok) { cJSON_Delete(sh); cJSON_Delete(of); break; }
        for (int d = 0; d < it[i].t->n_dims && ok; d++)
            ok = cJSON_AddItemToArray(sh, raw_u64((uint64_t)it[i].t->shape[d]));
        ok = ok && cJSON_AddItemToObject(e, "data_offsets", of);
        if (!ok) { cJSON_Delete(of); break; }
        ok = cJSON_AddItemToArray(of, raw_u64(it[i].begin)) &&
             cJSON_AddItemToArray(of, raw_u64(off));
    }
    char *hdr = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!hdr) {
        free(it);
        return alrd_errf(err, "%s: out of memory building the header", path);
    }
    /* HF pads the header with spaces so the data starts 8-byte aligned. */
    size_t hlen = strlen(hdr), padded = (hlen + 7) / 8 * 8;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    alrd_outfile o;
    if (alrd_outfile_open(&o, path, err) != 0) {
        free(hdr); free(it);
        return -1;
    }
    int rc = alrd_outfile_write(&o, len8, 8, err);
    if (rc == 0) rc = alrd_outfile_write(&o, hdr, hlen, err);
    if (rc == 0) rc = alrd_outfile_write(&o, "        ", padded - hlen, err);
    free(hdr);
    for (int i = 0; i < n && rc == 0; i++) {
        rc = write_tensor(&o, &it[i], out, err);
        alrd_progress("safetensors", (size_t)i + 1, (size_t)n);
    }
    free(it);
    if (rc != 0) {
        alrd_outfile_abort(&o);
        return -1;
    }
    return alrd_outfile_commit(&o, err);
}
