/* generate: the smallest program on libalrd's public header. Loads MODEL,
 * greedy-decodes N tokens after PROMPT with a KV cache of KV_BITS bits (16:
 * unquantised; 0: the file's own), prints the text and the cache's bytes.
 *
 *   generate MODEL PROMPT [N=32] [KV_BITS=0]
 *
 * Built by `make` (build/examples/generate); against an installed library:
 *   cc examples/generate.c $(pkg-config --cflags --libs --static alrd) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alrd.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: generate MODEL PROMPT [N=32] [KV_BITS=0]\n");
        return 2;
    }
    const int n_gen = argc > 3 ? atoi(argv[3]) : 32, bits = argc > 4 ? atoi(argv[4]) : 0;
    alrd_error err;
    alrd_model m;
    if (alrd_model_open(&m, argv[1], &err)) {
        fprintf(stderr, "generate: %s\n", err.msg);
        return 1;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    alrd_cache_opts o;
    alrd_cache_opts_default(&m, &o);
    if (bits) o.k_bits = o.v_bits = bits;
    alrd_ctx *c = NULL;
    float *logits = malloc(sizeof(float) * m.cfg.vocab_size);
    int rc = !logits || alrd_tokenizer_encode(m.tok, argv[2], strlen(argv[2]), alrd_tokenizer_add_bos(m.tok), 0,
                                              &ids, &n, &err) ||
             alrd_ctx_new(&c, &m, (int)n + n_gen + 1, (int)n, &o, &err) ||
             alrd_ctx_forward(c, ids, (int)n, logits, 0, &err);
    fputs(argv[2], stdout);
    for (int i = 0; i < n_gen && !rc; i++) {
        int32_t t = alrd_argmax(logits, m.cfg.vocab_size);
        if (alrd_tokenizer_is_eog(m.tok, t)) break;
        char piece[256];
        int len = alrd_tokenizer_piece(m.tok, t, 0, piece, sizeof piece);
        if (len > 0) fwrite(piece, 1, (size_t)len, stdout);
        fflush(stdout);
        rc = alrd_ctx_forward(c, &t, 1, logits, 0, &err);
    }
    putchar('\n');
    if (rc) fprintf(stderr, "generate: %s\n", logits ? err.msg : "out of memory");
    else fprintf(stderr, "generate: KV cache %zu bytes for %d tokens\n", alrd_ctx_cache_bytes(c), alrd_ctx_pos(c));
    alrd_ctx_free(c);
    free(ids);
    free(logits);
    alrd_model_free(&m);
    return rc ? 1 : 0;
}
