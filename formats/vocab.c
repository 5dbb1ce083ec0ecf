/* vocab: freeing and copying the tokenizer description. Ownership: every
 * array is its own malloc block, and every string in tokens[] and merges[]
 * (and chat_template) is its own malloc'd NUL-terminated block; whoever
 * fills an alrd_vocab must follow that so alrd_vocab_free can release it. */
#include "vocab.h"

#include <stdlib.h>
#include <string.h>

static void free_strs(char **s, int32_t n) {
    if (!s) return;
    for (int32_t i = 0; i < n; i++) free(s[i]);
    free(s);
}

void alrd_vocab_free(alrd_vocab *v) {
    if (!v) return;
    free_strs(v->tokens, v->n_tokens);
    free_strs(v->merges, v->n_merges);
    free(v->scores);
    free(v->types);
    free(v->chat_template);
    memset(v, 0, sizeof *v);
}

static int copy_strs(char ***dst, char *const *src, int32_t n) {
    *dst = NULL;
    if (!src || n <= 0) return 0;
    char **d = calloc((size_t)n, sizeof *d);
    if (!d) return -1;
    *dst = d;
    for (int32_t i = 0; i < n; i++)
        if (src[i] && !(d[i] = strdup(src[i]))) return -1;
    return 0;
}

static int copy_arr(void **dst, const void *src, size_t n, size_t elem) {
    *dst = NULL;
    if (!src || n == 0) return 0;
    if (!(*dst = malloc(n * elem))) return -1;
    memcpy(*dst, src, n * elem);
    return 0;
}

int alrd_vocab_copy(alrd_vocab *dst, const alrd_vocab *src) {
    *dst = *src; /* scalars and pre[]; every pointer is replaced below */
    dst->tokens = dst->merges = NULL;
    dst->scores = NULL;
    dst->types = NULL;
    dst->chat_template = NULL;
    /* partial copies stay freeable: counts match the pointer arrays */
    int bad = copy_strs(&dst->tokens, src->tokens, src->n_tokens);
    if (!dst->tokens) dst->n_tokens = 0;
    bad |= copy_strs(&dst->merges, src->merges, src->n_merges);
    if (!dst->merges) dst->n_merges = 0;
    size_t n = src->n_tokens > 0 ? (size_t)src->n_tokens : 0;
    void *p;
    bad |= copy_arr(&p, src->scores, n, sizeof *src->scores);
    dst->scores = p;
    bad |= copy_arr(&p, src->types, n, sizeof *src->types);
    dst->types = p;
    if (src->chat_template && !(dst->chat_template = strdup(src->chat_template))) bad = -1;
    if (bad) {
        alrd_vocab_free(dst);
        return -1;
    }
    return 0;
}
