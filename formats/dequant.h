/* dequant: GGML block formats to fp32. Each function converts n elements
 * (n a multiple of the type's block size) from src to dst. Layouts follow
 * ggml-common.h (block_q4_0 ... block_q6_K). */
#ifndef ALRD_DEQUANT_H
#define ALRD_DEQUANT_H

#include <stdint.h>
#include "tensor.h"

/* Returns -1 for an unsupported type. */
int alrd_dequant_row(alrd_dtype t, const void *src, float *dst, int64_t n);

#endif
