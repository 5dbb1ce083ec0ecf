/* alrd_pack: the tensor list of a compressed checkpoint -- every tensor of
 * the source converted to the weights dtype (norms and biases stay f32),
 * the k_proj/v_proj weights of decomposed modules replaced by their factors
 * .A [n_groups, gh, r] and .B [n_groups, r, hidden] -- packed in memory
 * (alrd-sweep evaluates many files from one packed base) or streamed
 * straight into an .alrd file (alrd-compress: the weights are never all in
 * memory). Both give the same bytes (tests/test_lowmem.c). */
#ifndef ALRD_PACK_H
#define ALRD_PACK_H

#include "alrd_file.h"

/* Per-layer ranks and factors (float, as calib's alrd_decomp_factors gives
 * them; NULL where the rank is 0; rank 0 = the module is not decomposed). */
typedef struct {
    int n_layers, n_groups, gh, hidden; /* gh = KV heads per group x head_dim */
    const int *k_rank, *v_rank;
    float *const *kA, *const *kB, *const *vA, *const *vB;
} alrd_factors;

/* A tensor list ready for alrd_file_write. tensors[i].data points into bufs
 * (owned, n_bufs of them) or, for a list made by alrd_pack_factors, into
 * the base list it borrows from (which must outlive it). */
typedef struct {
    int n;
    alrd_tensor *tensors;
    int n_bufs;
    void **bufs;
} alrd_packed;

/* Every tensor of src converted to wdt (ALRD_F16, ALRD_BF16 or ALRD_F32);
 * 1-D tensors (norms, biases) stay f32. Rows in HF order. */
int alrd_pack_source(alrd_packed *out, const alrd_source *src, alrd_dtype wdt, alrd_error *err);
/* base without the weights f replaces, in base order, then for each layer
 * and K, V its factors .A and .B converted to wdt. */
int alrd_pack_factors(alrd_packed *out, const alrd_packed *base, const alrd_factors *f, alrd_dtype wdt,
                      alrd_error *err);
void alrd_packed_free(alrd_packed *p);

/* The compressed file straight from src, streaming: the same bytes as
 * alrd_pack_source + alrd_pack_factors + alrd_file_write with src's config
 * and vocab, but each tensor is converted (in pieces) only as it is
 * written. lr and meta_json as alrd_file_write takes them. */
int alrd_pack_write(const char *path, const alrd_source *src, alrd_dtype wdt, const alrd_factors *f,
                    const alrd_lowrank *lr, const char *meta_json, alrd_error *err);

#endif
