/* calib_gpu: the calibration statistics pass on the GPU (see calib_gpu.h). */
#include "calib_gpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if ALRD_CUDA
#include "../runtime/gpu.h"

int alrd_calib_grams_gpu(const alrd_model *m, const int32_t *tokens, int n_samples, int sample_len,
                         alrd_gram *grams, int progress_on, alrd_error *err) {
    if (!alrd_gpu_available()) return 1;
    const alrd_config *c = &m->cfg;
    int L = c->n_layers, H = c->hidden;
    int *bits = malloc(sizeof(int) * L);
    if (!bits) return alrd_errf(err, "calibration: out of memory");
    for (int l = 0; l < L; l++) bits[l] = 16;
    alrd_gpu_opts o = {.max_ctx = sample_len, .max_batch = sample_len, .n_seq = 1, .k_bits = bits, .v_bits = bits,
                       .group_size = 32, .residual = 128, .use_kivi = 1, .attn = ALRD_GPU_ATTN_FUSED, .graph = 0,
                       .score = 0};
    alrd_gpu *g = NULL;
    int rc = alrd_gpu_new(&g, m, &o, err) || alrd_gpu_gram_enable(g, err) ? -1 : 0;
    free(bits);
    for (int s = 0; s < n_samples && !rc; s++) {
        alrd_gpu_reset(g, 0);
        rc = alrd_gpu_prefill(g, 0, tokens + (size_t)s * sample_len, sample_len, NULL, 0, err);
        if (progress_on) alrd_progress("calibration (GPU)", (size_t)s + 1, (size_t)n_samples);
    }
    for (int l = 0; l < L && !rc; l++) {
        long long rows = 0;
        if (grams[l].d != H) { rc = alrd_errf(err, "calibration: Gram %d has width %d, not %d", l, grams[l].d, H); break; }
        rc = alrd_gpu_gram_read(g, l, grams[l].c, &rows, err);
        for (size_t i = 0; i < (size_t)H * H && !rc; i++) /* the forward's fp16 overflowed: name the layer */
            if (!isfinite(grams[l].c[i])) rc = alrd_errf(err, "%s: calibration statistics are not finite", grams[l].name);
        if (!rc) grams[l].n_rows = rows;
    }
    alrd_gpu_free(g);
    return rc;
}

#else

int alrd_calib_grams_gpu(const alrd_model *m, const int32_t *tokens, int n_samples, int sample_len,
                         alrd_gram *grams, int progress_on, alrd_error *err) {
    (void)m, (void)tokens, (void)n_samples, (void)sample_len, (void)grams, (void)progress_on, (void)err;
    return 1;
}

#endif
