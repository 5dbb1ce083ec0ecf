/* alrd_file: the packed .alrd format (spec: formats/ALRD_FORMAT.md).
 * Writer: one call, atomic (temp + fsync + rename), deterministic bytes.
 * Reader: mmaps the file and validates every byte (magic, version, sizes,
 * offsets, overflow, CRC-32 of header, sections and each tensor, names,
 * dims, dtypes, padding) before exposing anything. */
#ifndef ALRD_FILE_H
#define ALRD_FILE_H

#include "io.h"
#include "lowrank.h"
#include "source.h"
#include "tensor.h"
#include "vocab.h"

#define ALRD_FILE_VERSION 1

/* Writes path. lowrank and meta_json may be NULL (no such section); meta_json,
 * when given, must be valid JSON. tensors[i].data / nbytes are written as they
 * are, in the dtype they have (convert first with alrd_file_convert_f32);
 * unpermute_heads is recorded. Names must be unique. */
int alrd_file_write(const char *path, const alrd_config *config, const alrd_lowrank *lowrank,
                    const alrd_vocab *vocab, const alrd_tensor *tensors, int n_tensors,
                    const char *meta_json, alrd_error *err);

/* Streaming write: the same file, but tensor i's bytes come from fill, which
 * puts exactly tensors[i].nbytes bytes into the sink (in pieces of any size,
 * in order), one tensor at a time, so the tensors never need to be in memory
 * together; tensors[i].data is not read. fill NULL: like alrd_file_write. */
typedef struct alrd_file_sink alrd_file_sink;
int alrd_file_sink_put(alrd_file_sink *sink, const void *data, size_t n, alrd_error *err);
typedef int (*alrd_file_fill_fn)(void *user, int i, alrd_file_sink *sink, alrd_error *err);
int alrd_file_write_stream(const char *path, const alrd_config *config, const alrd_lowrank *lowrank,
                           const alrd_vocab *vocab, const alrd_tensor *tensors, int n_tensors,
                           const char *meta_json, alrd_file_fill_fn fill, void *user,
                           alrd_error *err);

/* Converts n floats to dtype to (ALRD_F32, ALRD_F16 or ALRD_BF16) into dst
 * (n * 4 or n * 2 bytes). Errors on another dtype or a value that is finite
 * in f32 but overflows F16 (it would turn into Inf). */
int alrd_file_convert_f32(const float *src, size_t n, alrd_dtype to, void *dst,
                          alrd_error *err);

/* An opened, fully validated file. Everything is owned by the struct;
 * tensors[i].data points into the mapping. */
typedef struct {
    alrd_mmap map;
    uint32_t version;
    alrd_config config;
    alrd_lowrank *lowrank;   /* NULL when the file has no lowrank section */
    alrd_vocab vocab;
    int n_tensors;
    alrd_tensor *tensors;
    char *meta_json;         /* NUL-terminated, NULL when absent */
} alrd_file;

int alrd_file_open(alrd_file *f, const char *path, alrd_error *err);
void alrd_file_close(alrd_file *f);

/* The metadata JSON of a source opened from a .alrd file (NULL otherwise or
 * when the file has none). Owned by the source. */
const char *alrd_source_alrd_meta(const alrd_source *s);

/* Declared in formats/source.h; implemented in formats/source_alrd.c:
 * int alrd_source_open_alrd(alrd_source *s, const char *path, alrd_error *err); */

#endif
