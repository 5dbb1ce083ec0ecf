/* lowrank: ownership and validation of the .alrd decomposition description. */
#include "lowrank.h"

#include <stdlib.h>
#include <string.h>

void alrd_lowrank_free(alrd_lowrank *l) {
    if (!l) return;
    free(l->k_rank);
    free(l->v_rank);
    free(l->k_bits);
    free(l->v_bits);
    memset(l, 0, sizeof *l);
}

int alrd_lowrank_alloc(alrd_lowrank *l, int n_layers) {
    memset(l, 0, sizeof *l);
    if (n_layers < 0) return -1;
    size_t n = n_layers ? (size_t)n_layers : 1;
    l->k_rank = calloc(n, sizeof(int));
    l->v_rank = calloc(n, sizeof(int));
    l->k_bits = calloc(n, sizeof(int));
    l->v_bits = calloc(n, sizeof(int));
    if (!l->k_rank || !l->v_rank || !l->k_bits || !l->v_bits) {
        alrd_lowrank_free(l);
        return -1;
    }
    l->n_layers = n_layers;
    return 0;
}

static int bits_ok(int b) { return b == 2 || b == 3 || b == 4 || b == 8 || b == 16; }

int alrd_lowrank_validate(const alrd_lowrank *l, int n_layers, int n_kv_heads, int head_dim,
                          const char *path, alrd_error *err) {
    if (l->n_layers != n_layers)
        return alrd_errf(err, "%s: lowrank: n_layers %d but the model has %d layers", path,
                         l->n_layers, n_layers);
    if (l->group_heads <= 0 || n_kv_heads <= 0 || n_kv_heads % l->group_heads)
        return alrd_errf(err, "%s: lowrank: group_heads %d does not divide n_kv_heads %d", path,
                         l->group_heads, n_kv_heads);
    if (!l->k_rank || !l->v_rank || !l->k_bits || !l->v_bits)
        return alrd_errf(err, "%s: lowrank: per-layer arrays missing", path);
    const long full = (long)l->group_heads * head_dim;
    for (int i = 0; i < n_layers; i++) {
        if (l->k_rank[i] < 0 || l->k_rank[i] > full)
            return alrd_errf(err, "%s: lowrank: layer %d k_rank %d outside 0..%ld", path, i,
                             l->k_rank[i], full);
        if (l->v_rank[i] < 0 || l->v_rank[i] > full)
            return alrd_errf(err, "%s: lowrank: layer %d v_rank %d outside 0..%ld", path, i,
                             l->v_rank[i], full);
        if (!bits_ok(l->k_bits[i]))
            return alrd_errf(err, "%s: lowrank: layer %d k_bits %d (expected 2, 3, 4, 8 or 16)",
                             path, i, l->k_bits[i]);
        if (!bits_ok(l->v_bits[i]))
            return alrd_errf(err, "%s: lowrank: layer %d v_bits %d (expected 2, 3, 4, 8 or 16)",
                             path, i, l->v_bits[i]);
    }
    if (l->group_size <= 0 || l->group_size > 65536)
        return alrd_errf(err, "%s: lowrank: group_size %d outside 1..65536", path, l->group_size);
    if (l->residual_length < 0 || l->residual_length > (1 << 24) ||
        l->residual_length % l->group_size)
        return alrd_errf(err, "%s: lowrank: residual_length %d is not a multiple of group_size %d",
                         path, l->residual_length, l->group_size);
    if ((l->use_kivi != 0 && l->use_kivi != 1) || (l->hadamard != 0 && l->hadamard != 1) ||
        (l->whitened != 0 && l->whitened != 1))
        return alrd_errf(err, "%s: lowrank: use_kivi/hadamard/whitened must be 0 or 1", path);
    return 0;
}
