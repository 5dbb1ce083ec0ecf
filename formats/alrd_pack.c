/* alrd_pack: a compressed checkpoint's tensors, packed or streamed (see
 * alrd_pack.h). */
#include "alrd_pack.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t dtype_size(alrd_dtype t) { return t == ALRD_F32 ? 4 : 2; }

static int wdt_ok(alrd_dtype wdt, alrd_error *err) {
    if (wdt != ALRD_F16 && wdt != ALRD_BF16 && wdt != ALRD_F32)
        return alrd_errf(err, "pack: weights dtype must be f16, bf16 or f32");
    return 0;
}

static int packed_reserve(alrd_packed *p, int n, alrd_error *err) {
    p->tensors = calloc(n > 0 ? n : 1, sizeof *p->tensors);
    p->bufs = calloc(n > 0 ? n : 1, sizeof *p->bufs);
    if (!p->tensors || !p->bufs) return alrd_errf(err, "pack: out of memory");
    return 0;
}

void alrd_packed_free(alrd_packed *p) {
    if (!p) return;
    for (int i = 0; i < p->n_bufs; i++) free(p->bufs[i]);
    free(p->bufs);
    free(p->tensors);
    memset(p, 0, sizeof *p);
}

/* Is t one of the k_proj/v_proj weights f's factors replace? Its name must
 * be exactly "model.layers.N.self_attn.{k,v}_proj.weight". (A plain sscanf
 * pattern would accept "...k_proj.bias" too: its count stops at the last
 * conversion, so the literal tail after %c is never checked, and the k/v
 * biases of a model that has them -- Qwen2 -- were dropped from the file.) */
static int replaced(const alrd_factors *f, const alrd_tensor *t) {
    int layer, end = -1;
    char proj;
    if (sscanf(t->name, "model.layers.%d.self_attn.%c_proj.weight%n", &layer, &proj, &end) != 2 || end < 0 ||
        t->name[end] != '\0' || (proj != 'k' && proj != 'v') || layer < 0 || layer >= f->n_layers)
        return 0;
    return (proj == 'k' ? f->k_rank : f->v_rank)[layer] > 0;
}

/* Factor i (layer i / 4, K or V, A or B) of f as a wdt tensor without data
 * and its floats; 0 when the module is not decomposed, -1 without them. */
static int factor_tensor(const alrd_factors *f, int i, alrd_dtype wdt, alrd_tensor *t, const float **data,
                         alrd_error *err) {
    const int l = i / 4, v = (i / 2) % 2, ab = i % 2, rk = v ? f->v_rank[l] : f->k_rank[l];
    if (rk == 0) return 0;
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "model.layers.%d.self_attn.%s_proj.%s", l, v ? "v" : "k", ab ? "B" : "A");
    *data = ab ? (v ? f->vB[l] : f->kB[l]) : (v ? f->vA[l] : f->kA[l]);
    if (!*data) return alrd_errf(err, "pack: %s: missing factor", t->name);
    t->n_dims = 3;
    t->shape[0] = f->n_groups;
    t->shape[1] = ab ? rk : f->gh;
    t->shape[2] = ab ? f->hidden : rk;
    t->dtype = wdt;
    t->nbytes = (size_t)f->n_groups * t->shape[1] * t->shape[2] * dtype_size(wdt);
    return 1;
}

/* A source tensor as the file holds it: 1-D stays f32, else wdt, HF row order. */
static int source_tensor(const alrd_source *src, const alrd_tensor *t, alrd_dtype wdt, alrd_tensor *o,
                         alrd_error *err) {
    size_t n = (size_t)alrd_tensor_numel(t), nb;
    if (alrd_mul_ok(n, 4, &nb)) return alrd_errf(err, "%s: %s: size overflow", src->path, t->name);
    *o = *t;
    o->dtype = t->n_dims == 1 ? ALRD_F32 : wdt; /* norms and biases stay f32 */
    o->data = NULL;
    o->nbytes = n * dtype_size(o->dtype);
    o->unpermute_heads = 0;
    return 0;
}

int alrd_pack_source(alrd_packed *out, const alrd_source *src, alrd_dtype wdt, alrd_error *err) {
    memset(out, 0, sizeof *out);
    if (wdt_ok(wdt, err) || packed_reserve(out, src->n_tensors, err)) return -1;
    for (int i = 0; i < src->n_tensors; i++) {
        const alrd_tensor *t = &src->tensors[i];
        alrd_tensor *o = &out->tensors[out->n];
        if (source_tensor(src, t, wdt, o, err)) { alrd_packed_free(out); return -1; }
        const size_t n = (size_t)alrd_tensor_numel(t);
        float *f = malloc(n ? n * 4 : 1);
        void *b = malloc(o->nbytes + 1);
        int rc = !f || !b ? alrd_errf(err, "pack: %s: out of memory", t->name) : 0;
        if (!rc) rc = alrd_tensor_to_f32(t, f, err);
        if (!rc) rc = alrd_file_convert_f32(f, n, o->dtype, b, err);
        free(f);
        if (rc) { free(b); alrd_packed_free(out); return -1; }
        o->data = b;
        out->bufs[out->n_bufs++] = b;
        out->n++;
    }
    return 0;
}

int alrd_pack_factors(alrd_packed *out, const alrd_packed *base, const alrd_factors *f, alrd_dtype wdt,
                      alrd_error *err) {
    memset(out, 0, sizeof *out);
    if (wdt_ok(wdt, err) || packed_reserve(out, base->n + 4 * f->n_layers, err)) return -1;
    for (int i = 0; i < base->n; i++)
        if (!replaced(f, &base->tensors[i])) out->tensors[out->n++] = base->tensors[i];
    for (int i = 0; i < 4 * f->n_layers; i++) {
        alrd_tensor *t = &out->tensors[out->n];
        const float *x;
        const int k = factor_tensor(f, i, wdt, t, &x, err);
        if (k == 0) continue;
        void *b = k > 0 ? malloc(t->nbytes) : NULL;
        if (k < 0 || !b || alrd_file_convert_f32(x, t->nbytes / dtype_size(wdt), wdt, b, err)) {
            if (k > 0 && !b) alrd_errf(err, "pack: %s: out of memory", t->name);
            free(b);
            alrd_packed_free(out);
            return -1;
        }
        t->data = b;
        out->bufs[out->n_bufs++] = b;
        out->n++;
    }
    return 0;
}

/* ---- streaming write (alrd-compress) ------------------------------------ */

/* Elements converted per piece: the only buffers of the write. */
#define WRITE_CHUNK ((size_t)1 << 22)

typedef struct {
    const alrd_source *src;
    const alrd_tensor **from;  /* [n] the source tensor, or NULL for a factor */
    const float **f32;         /* [n] the factor's floats */
    const alrd_tensor *out;    /* [n] as written */
    float *f;                  /* [WRITE_CHUNK] */
    void *b;                   /* [WRITE_CHUNK] in the output dtype */
} write_state;

static int fill_tensor(void *user, int i, alrd_file_sink *sink, alrd_error *err) {
    write_state *w = user;
    const alrd_tensor *o = &w->out[i];
    size_t n = o->nbytes / dtype_size(o->dtype);
    if (!w->from[i]) { /* a factor: floats in memory */
        for (size_t k = 0; k < n; k += WRITE_CHUNK) {
            size_t m = n - k < WRITE_CHUNK ? n - k : WRITE_CHUNK;
            if (alrd_file_convert_f32(w->f32[i] + k, m, o->dtype, w->b, err) ||
                alrd_file_sink_put(sink, w->b, m * dtype_size(o->dtype), err))
                return -1;
        }
        return 0;
    }
    const alrd_tensor *t = w->from[i]; /* whole rows at a time, dequantized from the mapping */
    int64_t rows = alrd_tensor_rows(t), cols = alrd_tensor_cols(t);
    int64_t step = cols > 0 && (size_t)cols <= WRITE_CHUNK ? (int64_t)(WRITE_CHUNK / (size_t)cols) : 1;
    if (cols <= 0 || (size_t)cols > WRITE_CHUNK)
        return alrd_errf(err, "%s: %s: rows of %lld elements are too long to convert", w->src->path, t->name,
                         (long long)cols);
    for (int64_t r0 = 0; r0 < rows; r0 += step) {
        int64_t nr = rows - r0 < step ? rows - r0 : step;
        size_t m = (size_t)nr * (size_t)cols;
        if (alrd_tensor_rows_f32(t, r0, nr, w->f, err) || alrd_file_convert_f32(w->f, m, o->dtype, w->b, err) ||
            alrd_file_sink_put(sink, w->b, m * dtype_size(o->dtype), err))
            return -1;
    }
    alrd_release_pages(t->data, t->nbytes); /* read once: keep the mapping out of the resident set */
    return 0;
}

int alrd_pack_write(const char *path, const alrd_source *src, alrd_dtype wdt, const alrd_factors *f,
                    const alrd_lowrank *lr, const char *meta_json, alrd_error *err) {
    if (wdt_ok(wdt, err)) return -1;
    int cap = src->n_tensors + 4 * f->n_layers;
    alrd_tensor *out = calloc(cap, sizeof *out);
    write_state w = {.src = src, .from = calloc(cap, sizeof *w.from), .f32 = calloc(cap, sizeof *w.f32), .out = out,
                     .f = malloc(sizeof(float) * WRITE_CHUNK), .b = malloc(sizeof(float) * WRITE_CHUNK)};
    int n = 0, rc = -1;
    if (!out || !w.from || !w.f32 || !w.f || !w.b) { alrd_errf(err, "pack: out of memory"); goto done; }
    for (int i = 0; i < src->n_tensors; i++) { /* as alrd_pack_source + alrd_pack_factors list them */
        const alrd_tensor *t = &src->tensors[i];
        if (replaced(f, t)) continue;
        if (source_tensor(src, t, wdt, &out[n], err)) goto done;
        w.from[n++] = t;
    }
    for (int i = 0; i < 4 * f->n_layers; i++) {
        const int k = factor_tensor(f, i, wdt, &out[n], &w.f32[n], err);
        if (k < 0) goto done;
        if (k > 0) n++;
    }
    rc = alrd_file_write_stream(path, &src->config, lr, &src->vocab, out, n, meta_json, fill_tensor, &w, err);
done:
    free(out);
    free(w.from);
    free((void *)w.f32);
    free(w.f);
    free(w.b);
    return rc;
}
