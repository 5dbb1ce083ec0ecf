/* calib_gpu: the calibration statistics pass on the GPU (docs/design.md 5.1).
 * The samples run through the GPU forward (fp16 weights, the same engine
 * alrd-run decodes with); each layer's attention-normed input rows are
 * folded into its Gram sum on the device in fp64 (runtime/gpu.h,
 * alrd_gpu_gram_enable), and the sums come back into the caller's
 * alrd_gram structs. The probes that measure sensitivities stay on the CPU
 * (they rerun the fp32 forward with one projection replaced). */
#ifndef ALRD_CALIB_GPU_H
#define ALRD_CALIB_GPU_H

#include <stdint.h>

#include "../runtime/model.h"
#include "gram.h"

/* grams[n_layers], initialised (alrd_gram_init, width hidden) and empty.
 * Returns 1 (nothing done) when this build or machine has no GPU, 0 when
 * the sums were added (finish them with alrd_gram_finish), -1 on error. */
int alrd_calib_grams_gpu(const alrd_model *m, const int32_t *tokens, int n_samples, int sample_len,
                         alrd_gram *grams, int progress_on, alrd_error *err);

#endif
