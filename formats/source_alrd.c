/* source_alrd: an alrd_source opened from a .alrd file. alrd_file_open does
 * the byte-level validation; here the config is validated as for any source
 * and the decomposed K/V tensors are checked against the lowrank section
 * (formats/lowrank.h), so the runtime never meets a factor of the wrong shape. */
#include "alrd_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const alrd_tensor *find(const alrd_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

static int expect3(const alrd_file *f, const char *path, const char *name, int64_t a, int64_t b,
                   int64_t c, alrd_error *err) {
    const alrd_tensor *t = find(f, name);
    if (!t) return alrd_errf(err, "%s: tensor %s: missing (the lowrank section needs it)", path, name);
    if (t->n_dims != 3 || t->shape[0] != a || t->shape[1] != b || t->shape[2] != c)
        return alrd_errf(err, "%s: tensor %s: shape does not match the lowrank section "
                         "(expected [%lld, %lld, %lld])", path, name, (long long)a, (long long)b,
                         (long long)c);
    return 0;
}

static int check_factors(const alrd_file *f, const char *path, alrd_error *err) {
    const alrd_lowrank *lr = f->lowrank;
    const alrd_config *c = &f->config;
    const int64_t n_groups = c->n_kv_heads / lr->group_heads;
    const int64_t gd = (int64_t)lr->group_heads * c->head_dim;
    char n[ALRD_NAME_MAX + 32];
    for (int l = 0; l < c->n_layers; l++) {
        const char *proj[2] = {"k_proj", "v_proj"};
        const int rank[2] = {lr->k_rank[l], lr->v_rank[l]};
        for (int p = 0; p < 2; p++) {
            if (rank[p] > 0) {
                snprintf(n, sizeof n, "model.layers.%d.self_attn.%s.A", l, proj[p]);
                if (expect3(f, path, n, n_groups, gd, rank[p], err)) return -1;
                snprintf(n, sizeof n, "model.layers.%d.self_attn.%s.B", l, proj[p]);
                if (expect3(f, path, n, n_groups, rank[p], c->hidden, err)) return -1;
            } else {
                snprintf(n, sizeof n, "model.layers.%d.self_attn.%s.weight", l, proj[p]);
                if (!find(f, n))
                    return alrd_errf(err, "%s: tensor %s: missing (layer %d keeps %s "
                                     "undecomposed: rank 0)", path, n, l, proj[p]);
            }
        }
    }
    return 0;
}

/* Frees what the source took over from the file, then the file (mapping +
 * metadata). Leaves the moved fields NULL so a generic close that frees
 * them afterwards finds nothing left to free. */
static void close_alrd(alrd_source *s) {
    alrd_file *f = s->impl;
    free(s->tensors);
    s->tensors = NULL;
    s->n_tensors = 0;
    if (s->lowrank) {
        alrd_lowrank_free(s->lowrank);
        free(s->lowrank);
        s->lowrank = NULL;
    }
    f->vocab = s->vocab; /* released by alrd_file_close */
    memset(&s->vocab, 0, sizeof s->vocab);
    alrd_file_close(f);
    free(f);
    s->impl = NULL;
    s->close_impl = NULL;
}

int alrd_source_open_alrd(alrd_source *s, const char *path, alrd_error *err) {
    memset(s, 0, sizeof *s);
    alrd_file *f = calloc(1, sizeof *f);
    if (!f) return alrd_errf(err, "%s: out of memory", path);
    if (alrd_file_open(f, path, err)) {
        free(f);
        return -1;
    }
    if (alrd_config_validate(&f->config, path, err) ||
        (f->lowrank && check_factors(f, path, err))) {
        alrd_file_close(f);
        free(f);
        return -1;
    }
    snprintf(s->path, sizeof s->path, "%s", path);
    s->format = ALRD_SRC_ALRD;
    s->config = f->config;
    s->n_tensors = f->n_tensors;
    s->tensors = f->tensors;
    s->vocab = f->vocab;
    s->lowrank = f->lowrank;
    f->tensors = NULL;
    f->n_tensors = 0;
    f->lowrank = NULL;
    memset(&f->vocab, 0, sizeof f->vocab);
    s->impl = f;
    s->close_impl = close_alrd;
    return 0;
}

const char *alrd_source_alrd_meta(const alrd_source *s) {
    if (!s || s->format != ALRD_SRC_ALRD || !s->impl) return NULL;
    return ((const alrd_file *)s->impl)->meta_json;
}
