/* calib_gpu: calibration on the GPU (see calib_gpu.h). */
#include "calib_gpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if ALRD_CUDA

int alrd_calib_gpu_open(alrd_gpu **out, const alrd_model *m, int max_len, alrd_error *err) {
    *out = NULL;
    if (!alrd_gpu_available()) return 1;
    const int L = m->cfg.n_layers;
    int *bits = malloc(sizeof(int) * L);
    if (!bits) return alrd_errf(err, "calibration: out of memory");
    for (int l = 0; l < L; l++) bits[l] = 16;
    alrd_gpu_opts o = {.max_ctx = max_len, .max_batch = max_len, .n_seq = 1, .k_bits = bits, .v_bits = bits,
                       .group_size = 32, .residual = 128, .use_kivi = 1, .attn = ALRD_GPU_ATTN_FUSED, .graph = 0,
                       .score = 0};
    int rc = alrd_gpu_new(out, m, &o, err);
    free(bits);
    return rc ? -1 : 0;
}

void alrd_calib_gpu_free(alrd_gpu *g) { alrd_gpu_free(g); }

int alrd_calib_gpu_grams(alrd_gpu *g, const int32_t *tokens, int n_samples, int sample_len, alrd_gram *grams,
                         int progress_on, alrd_error *err) {
    const alrd_config *cf = alrd_gpu_config(g);
    const int L = cf->n_layers, H = cf->hidden;
    int rc = alrd_gpu_gram_enable(g, err);
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
    return rc;
}

int alrd_calib_gpu_set_kv_weight(alrd_gpu *g, int layer, int is_v, const float *w, alrd_error *err) {
    return alrd_gpu_set_kv_weight(g, layer, is_v, w, err);
}

int alrd_calib_gpu_probe(alrd_gpu *g, const int32_t *tokens, int n_seq, int S, int set_base, float *base_lp,
                         float *h_in, double *kl, double *ce, alrd_error *err) {
    return alrd_gpu_probe(g, tokens, n_seq, S, set_base, base_lp, h_in, kl, ce, err);
}

#else

int alrd_calib_gpu_open(alrd_gpu **out, const alrd_model *m, int max_len, alrd_error *err) {
    (void)m, (void)max_len, (void)err;
    *out = NULL;
    return 1;
}

void alrd_calib_gpu_free(alrd_gpu *g) { (void)g; }

static int no_gpu(alrd_error *err) { return alrd_errf(err, "calibration: this build has no GPU support"); }

int alrd_calib_gpu_grams(alrd_gpu *g, const int32_t *tokens, int n_samples, int sample_len, alrd_gram *grams,
                         int progress_on, alrd_error *err) {
    (void)g, (void)tokens, (void)n_samples, (void)sample_len, (void)grams, (void)progress_on;
    return no_gpu(err);
}

int alrd_calib_gpu_set_kv_weight(alrd_gpu *g, int layer, int is_v, const float *w, alrd_error *err) {
    (void)g, (void)layer, (void)is_v, (void)w;
    return no_gpu(err);
}

int alrd_calib_gpu_probe(alrd_gpu *g, const int32_t *tokens, int n_seq, int S, int set_base, float *base_lp,
                         float *h_in, double *kl, double *ce, alrd_error *err) {
    (void)g, (void)tokens, (void)n_seq, (void)S, (void)set_base, (void)base_lp, (void)h_in, (void)kl, (void)ce;
    return no_gpu(err);
}

#endif
