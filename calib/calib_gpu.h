/* calib_gpu: calibration on the GPU (docs/design.md 5.1). One engine of the
 * uncompressed model (runtime/gpu.h: fp16 weights, the engine alrd-run
 * decodes with) serves both passes of alrd_calib:
 *   statistics  the samples run through the forward; each layer's
 *               attention-normed input rows are folded into its Gram sum on
 *               the device in fp64 (alrd_gpu_gram_enable) and the sums come
 *               back into the caller's alrd_gram structs;
 *   probes      the probe sequences in one pass each, with some k_proj /
 *               v_proj weights replaced, scored against the engine's own
 *               log-probs (alrd_gpu_probe): the sensitivities and the
 *               truncation measure, which on the CPU rerun the fp32 forward
 *               from the replaced layer on.
 * These wrappers of runtime/gpu.h link without CUDA in the build: then every
 * call but alrd_calib_gpu_open fails, and that one returns 1 (no GPU: the
 * caller uses the CPU). */
#ifndef ALRD_CALIB_GPU_H
#define ALRD_CALIB_GPU_H

#include <stdint.h>

#include "../runtime/gpu.h"
#include "../runtime/model.h"
#include "gram.h"

/* An engine for m with sequences of up to max_len tokens. Returns 1 (and
 * *out = NULL) when this build or machine has no GPU, 0 when made, -1 on
 * error. */
int alrd_calib_gpu_open(alrd_gpu **out, const alrd_model *m, int max_len, alrd_error *err);
void alrd_calib_gpu_free(alrd_gpu *g);

/* grams[n_layers], initialised (alrd_gram_init, width hidden) and empty:
 * the sums of n_samples samples of sample_len tokens are added (finish them
 * with alrd_gram_finish). Once per engine. */
int alrd_calib_gpu_grams(alrd_gpu *g, const int32_t *tokens, int n_samples, int sample_len, alrd_gram *grams,
                         int progress_on, alrd_error *err);

/* alrd_gpu_set_kv_weight and alrd_gpu_probe (runtime/gpu.h). */
int alrd_calib_gpu_set_kv_weight(alrd_gpu *g, int layer, int is_v, const float *w, alrd_error *err);
int alrd_calib_gpu_probe(alrd_gpu *g, const int32_t *tokens, int n_seq, int S, int set_base, float *base_lp,
                         float *h_in, double *kl, double *ce, alrd_error *err);

#endif
