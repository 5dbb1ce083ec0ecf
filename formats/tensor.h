/* tensor: dtypes (GGML type ids), named typed views into mapped files, and
 * conversion of any supported dtype to fp32 rows. */
#ifndef ALRD_TENSOR_H
#define ALRD_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include "io.h"

/* Values are GGML's type ids so GGUF files map directly. */
typedef enum {
    ALRD_F32 = 0, ALRD_F16 = 1, ALRD_Q4_0 = 2, ALRD_Q4_1 = 3,
    ALRD_Q5_0 = 6, ALRD_Q5_1 = 7, ALRD_Q8_0 = 8, ALRD_Q8_1 = 9,
    ALRD_Q2_K = 10, ALRD_Q3_K = 11, ALRD_Q4_K = 12, ALRD_Q5_K = 13,
    ALRD_Q6_K = 14, ALRD_Q8_K = 15, ALRD_BF16 = 30,
    ALRD_DTYPE_COUNT = 31
} alrd_dtype;

/* Elements per block and bytes per block; 0 for ids we do not support. */
int alrd_dtype_block(alrd_dtype t);
size_t alrd_dtype_block_bytes(alrd_dtype t);
const char *alrd_dtype_name(alrd_dtype t); /* "Q4_1", or NULL if unknown */
int alrd_dtype_supported(alrd_dtype t);   /* can be converted to fp32 */

/* Bytes for a row of n elements (n must be a multiple of the block). */
int alrd_row_bytes(alrd_dtype t, int64_t n, size_t *out);

#define ALRD_MAX_DIMS 4
#define ALRD_NAME_MAX 128

/* A view of one tensor. shape is row-major, outermost first, as in HF and
 * numpy: a weight [out, in] has shape {out, in}; the last dim is contiguous.
 * data points into memory owned by whoever produced the view (a mapping). */
typedef struct {
    char name[ALRD_NAME_MAX];
    alrd_dtype dtype;
    int n_dims;
    int64_t shape[ALRD_MAX_DIMS];
    const void *data;
    size_t nbytes;
    /* Rows of a llama-architecture GGUF attn_q/attn_k are permuted per head
     * by llama.cpp's converter; when unpermute_heads > 0 reading rows undoes
     * it for that many heads (docs/design.md 4.1). 0: rows are in HF order. */
    int unpermute_heads;
} alrd_tensor;

int64_t alrd_tensor_numel(const alrd_tensor *t);
int64_t alrd_tensor_rows(const alrd_tensor *t);  /* product of all dims but last */
int64_t alrd_tensor_cols(const alrd_tensor *t);  /* last dim */

/* Converts rows [row0, row0+nrows) to fp32, HF row order (unpermuting if
 * needed). out holds nrows*cols floats. */
int alrd_tensor_rows_f32(const alrd_tensor *t, int64_t row0, int64_t nrows, float *out,
                         alrd_error *err);
/* Whole tensor to fp32 (numel floats). */
int alrd_tensor_to_f32(const alrd_tensor *t, float *out, alrd_error *err);

/* fp16 / bf16 scalar conversion. */
float alrd_f16_to_f32(uint16_t h);
uint16_t alrd_f32_to_f16(float f);
float alrd_bf16_to_f32(uint16_t h);
uint16_t alrd_f32_to_bf16(float f);

#endif
