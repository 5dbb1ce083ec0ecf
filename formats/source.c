/* source: format dispatch, lookup and config validation shared by the
 * GGUF, HF and .alrd openers. */
#include "source.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int alrd_source_open(alrd_source *s, const char *path, alrd_error *err) {
    memset(s, 0, sizeof *s);
    struct stat st;
    if (stat(path, &st) != 0) return alrd_errf(err, "%s: cannot open: %s", path, strerror(errno));
    int rc;
    if (S_ISDIR(st.st_mode)) {
        rc = alrd_source_open_hf(s, path, err);
    } else {
        unsigned char magic[4] = {0};
        FILE *f = fopen(path, "rb");
        if (!f) return alrd_errf(err, "%s: cannot open: %s", path, strerror(errno));
        size_t got = fread(magic, 1, 4, f);
        fclose(f);
        if (got == 4 && memcmp(magic, "GGUF", 4) == 0) rc = alrd_source_open_gguf(s, path, err);
        else if (got == 4 && memcmp(magic, "ALRD", 4) == 0) rc = alrd_source_open_alrd(s, path, err);
        else
            return alrd_errf(err, "%s: magic: not a GGUF, .alrd file or Hugging Face directory "
                             "(first bytes %02x %02x %02x %02x)", path, magic[0], magic[1], magic[2], magic[3]);
    }
    if (rc != 0) return -1;
    if (alrd_config_validate(&s->config, path, err) != 0) {
        alrd_source_close(s);
        return -1;
    }
    return 0;
}

void alrd_source_close(alrd_source *s) {
    if (!s) return;
    /* close_impl releases the mappings and anything format-specific
     * (including lowrank for .alrd sources). */
    if (s->close_impl) s->close_impl(s);
    free(s->tensors);
    alrd_vocab_free(&s->vocab);
    memset(s, 0, sizeof *s);
}

const alrd_tensor *alrd_source_tensor(const alrd_source *s, const char *name) {
    for (int i = 0; i < s->n_tensors; i++)
        if (strcmp(s->tensors[i].name, name) == 0) return &s->tensors[i];
    return NULL;
}

int alrd_source_expect(const alrd_source *s, const char *name, int64_t rows, int64_t cols,
                       const alrd_tensor **out, alrd_error *err) {
    const alrd_tensor *t = alrd_source_tensor(s, name);
    if (out) *out = t;
    if (!t) return alrd_errf(err, "%s: %s: tensor missing", s->path, name);
    int ok = cols == 0 ? (t->n_dims == 1 && t->shape[0] == rows)
                       : (t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols);
    if (!ok) {
        char got[96] = "";
        size_t n = 0;
        for (int i = 0; i < t->n_dims && n < sizeof got; i++)
            n += (size_t)snprintf(got + n, sizeof got - n, "%s%lld", i ? " x " : "", (long long)t->shape[i]);
        if (cols == 0)
            return alrd_errf(err, "%s: %s: shape %s, expected %lld", s->path, name, got, (long long)rows);
        return alrd_errf(err, "%s: %s: shape %s, expected %lld x %lld", s->path, name, got,
                         (long long)rows, (long long)cols);
    }
    return 0;
}

/* Upper bounds well beyond any real LLaMA-family model; they stop a
 * corrupt config from sizing huge allocations. */
#define MAX_LAYERS 1024
#define MAX_HIDDEN 65536
#define MAX_HEADS 1024
#define MAX_HEAD_DIM 1024
#define MAX_FFN (1 << 20)
#define MAX_VOCAB_SIZE (4 << 20)
#define MAX_CTX (1 << 24)

int alrd_config_validate(const alrd_config *c, const char *path, alrd_error *err) {
#define RANGE(field, lo, hi)                                                                 \
    if (c->field < (lo) || c->field > (hi))                                                  \
        return alrd_errf(err, "%s: config: " #field " is %d (must be %d..%d)", path, c->field, \
                         (int)(lo), (int)(hi))
    RANGE(n_layers, 1, MAX_LAYERS);
    RANGE(hidden, 1, MAX_HIDDEN);
    RANGE(n_heads, 1, MAX_HEADS);
    RANGE(n_kv_heads, 1, c->n_heads);
    RANGE(head_dim, 2, MAX_HEAD_DIM);
    RANGE(ffn, 1, MAX_FFN);
    RANGE(vocab_size, 1, MAX_VOCAB_SIZE);
    RANGE(max_ctx, 1, MAX_CTX);
#undef RANGE
    if (c->n_heads % c->n_kv_heads != 0)
        return alrd_errf(err, "%s: config: n_heads %d is not a multiple of n_kv_heads %d", path,
                         c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0)
        return alrd_errf(err, "%s: config: head_dim %d must be even (RoPE pairs)", path, c->head_dim);
    /* hidden == n_heads * head_dim unless the checkpoint gave head_dim
     * explicitly; openers enforce that (only they know); here the product
     * just has to stay sane. */
    if ((int64_t)c->n_heads * c->head_dim > 4 * MAX_HIDDEN)
        return alrd_errf(err, "%s: config: n_heads * head_dim = %lld is too large", path,
                         (long long)c->n_heads * c->head_dim);
    if (!(isfinite(c->rms_eps) && c->rms_eps > 0 && c->rms_eps < 1))
        return alrd_errf(err, "%s: config: rms_eps %g (must be in (0, 1))", path, (double)c->rms_eps);
    if (!(isfinite(c->rope_theta) && c->rope_theta > 0))
        return alrd_errf(err, "%s: config: rope_theta %g (must be positive)", path, (double)c->rope_theta);
    if (c->rope_llama3) {
        if (!(isfinite(c->rope_factor) && c->rope_factor >= 1))
            return alrd_errf(err, "%s: config: rope_scaling.factor %g (must be >= 1)", path, (double)c->rope_factor);
        if (!(isfinite(c->rope_low_freq_factor) && isfinite(c->rope_high_freq_factor) &&
              c->rope_low_freq_factor > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor))
            return alrd_errf(err, "%s: config: rope_scaling low_freq_factor %g / high_freq_factor %g "
                             "(need 0 < low < high)", path, (double)c->rope_low_freq_factor,
                             (double)c->rope_high_freq_factor);
        if (c->rope_orig_ctx < 1 || c->rope_orig_ctx > MAX_CTX)
            return alrd_errf(err, "%s: config: rope_scaling.original_max_position_embeddings %d", path,
                             c->rope_orig_ctx);
    }
    return 0;
}
