/* safetensors: reader (on a read-only mapping) and writer for Hugging Face
 * .safetensors files, single or sharded through model.safetensors.index.json.
 *
 * File layout: u64 little-endian header length N, N bytes of JSON
 * {"__metadata__": {...}, "NAME": {"dtype": "F32", "shape": [..],
 * "data_offsets": [begin, end]}, ...}, then the data; offsets are relative
 * to the byte after the header. Every length, offset and shape product is
 * checked against the file before a view is made. Host must be
 * little-endian (as every target of this project is). */
#ifndef ALRD_SAFETENSORS_H
#define ALRD_SAFETENSORS_H

#include "io.h"
#include "tensor.h"

/* Largest JSON header accepted (the real ones are a few hundred KB). */
#define ALRD_ST_MAX_HEADER (100u << 20)
/* Most shard files an index may name. */
#define ALRD_ST_MAX_SHARDS 4096

/* One .safetensors file. tensors are views into map (valid until close),
 * in the order of their data offsets. */
typedef struct {
    alrd_mmap map;
    int n_tensors;
    alrd_tensor *tensors;  /* owned array */
} alrd_safetensors;

int alrd_safetensors_open(alrd_safetensors *f, const char *path, alrd_error *err);
void alrd_safetensors_close(alrd_safetensors *f);
/* NULL if absent. */
const alrd_tensor *alrd_safetensors_find(const alrd_safetensors *f, const char *name);

/* A checkpoint: one file, or the shards an index names (each opened once).
 * tensors is the union of every shard's tensors (names unique), views into
 * the shards' mappings. */
typedef struct {
    int n_files;
    alrd_safetensors *files;  /* owned */
    int n_tensors;
    alrd_tensor *tensors;     /* owned array */
} alrd_safetensors_set;

/* Opens DIR/model.safetensors.index.json when present, else
 * DIR/model.safetensors. */
int alrd_safetensors_set_open_dir(alrd_safetensors_set *s, const char *dir, alrd_error *err);
/* Opens the shards an index file's weight_map names (paths relative to the
 * index's directory; every weight_map entry must be found in its shard). */
int alrd_safetensors_set_open_index(alrd_safetensors_set *s, const char *index_path,
                                    alrd_error *err);
/* A single file as a set of one. */
int alrd_safetensors_set_open_file(alrd_safetensors_set *s, const char *path, alrd_error *err);
void alrd_safetensors_set_close(alrd_safetensors_set *s);
const alrd_tensor *alrd_safetensors_set_find(const alrd_safetensors_set *s, const char *name);

/* Writes tensors (any supported source dtype, converted row by row through
 * alrd_tensor_rows_f32, so GGUF q/k rows come out in HF order) as one
 * .safetensors file of out_dtype (ALRD_F32, ALRD_F16 or ALRD_BF16),
 * atomically. Tensors are stored sorted by name (offsets and header alike),
 * header padded with spaces to a multiple of 8 bytes, __metadata__
 * {"format": "pt"}. Names must be unique. A tensor already in out_dtype
 * and in HF row order is copied byte for byte. */
int alrd_safetensors_write(const char *path, const alrd_tensor *tensors, int n,
                           alrd_dtype out_dtype, alrd_error *err);

/* "F32" / "F16" / "BF16" for the dtypes safetensors can hold here, else NULL. */
const char *alrd_safetensors_dtype_name(alrd_dtype t);

#endif
