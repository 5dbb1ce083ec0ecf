/* gpu: the CUDA engine (see gpu.h). */
#include <cublas_v2.h>
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "gpu.h"
#include "kv_cache.h"
#include "../kernels/kivi.h"
#include "../kernels/gpu_ops.h"
#include "../kernels/gpu_attn.h"
}

namespace {

/* A layer's weights on the device, uploaded once at creation (fp16 matrices, row-major [out][in]; fp32
 * vectors). dk, dv, kr, vr, wo_k as in glayer; NULL where the model has no such tensor. */
struct glayer_weights {
    uint16_t *qkv;       /* [qd + dk + dv][H] fp16: q_proj, then k_proj (or B_k [n_groups*kr][H] when kr),
                            then v_proj (or B_v [n_groups*vr][H] when vr) */
    uint16_t *o;         /* [H][wo_k] fp16: o_proj, with A_v folded in when vr (fold_wo) */
    uint16_t *gu;        /* [2*ffn][H] fp16: gate_proj, then up_proj */
    uint16_t *down;      /* [H][ffn] fp16: down_proj */
    uint16_t *kA;        /* [n_groups][gh][kr] fp16: A_k, the key latents' up factor (kr > 0 only) */
    float *bq;           /* [qd] fp32 q bias */
    float *bk_full;      /* [kvd] fp32 k bias of full-width keys (kr == 0) */
    float *bv_full;      /* [kvd] fp32 v bias of full-width values (vr == 0) */
    float *bk_lat;       /* [kvd] fp32 k bias added after the A_k reconstruction (kr > 0) */
    float *bo;           /* [H] fp32 o bias (with W_o . b_v folded in when vr) */
    float *attn_norm;    /* [H] fp32 input RMSNorm gamma */
    float *ffn_norm;     /* [H] fp32 post-attention RMSNorm gamma */
};

struct glayer {
    /* shape, fixed at creation */
    int kr, vr;          /* latent ranks per group of K and V; 0 = full width (not decomposed) */
    int dk, dv;          /* cached widths: n_groups * kr (or kvd), n_groups * vr (or kvd) */
    int kb, vb;          /* cache bits of K and V: 2, 3, 4, 8 or 16 */
    int kmode;           /* ALRD_GPU_K_LATENT, _FULL (quantised pre-RoPE keys) or _ROPED (fp16 RoPE'd keys) */
    int nqkv;            /* qd + dk + dv: width of the fused q|k|v product */
    int wo_k;            /* input width of o_proj: n_heads * hd, or n_heads * vr when A_v is folded in */
    glayer_weights w;
    /* per-sequence state: the KV cache of this layer, n_seq sequences (device memory, layouts in
       kernels/gpu_ops.h: packed or tiled codes, fp16 scales and zeros, fp16 residual ring, or fp16 rows) */
    alrd_gpu_side ks, vs;
    /* the fused decode attention, fixed after creation (engine_finish) */
    alrd_gpu_attn_layer al; /* kernel descriptor: shapes, pointers into w and ks/vs, RoPE tables */
    int fused_ok;        /* the fused kernel serves this layer */
    int nsplit;          /* splits of the sequence in the fused decode kernel (layer_nsplit) */
};

} // namespace

/* The engine's parts by lifetime. Shapes: MR = max(max_batch, n_seq) rows, N = max_ctx tokens, TB =
 * max_batch; H hidden, qd = nh * hd, kvd = nkv * hd, nv vocabulary (struct alrd_gpu). All device memory
 * comes from dalloc (freed with the engine). */

/* Model constants on the device, uploaded once at creation (a layer's own are in glayer.w). */
struct gpu_weights {
    uint16_t *embed;     /* [nv][H] fp16 token embeddings */
    uint16_t *lm_head;   /* [nv][H] fp16; == embed when tied */
    float *final_norm;   /* [H] fp32 RMSNorm gamma before lm_head */
    float *cos_tab;      /* [N][hd/2] fp32 RoPE cos(p * inv_freq[i]) */
    float *sin_tab;      /* [N][hd/2] fp32 RoPE sin(p * inv_freq[i]) */
    uint32_t *rope_tile; /* the tiled attention kernel's RoPE tables (alrd_gpu_attn_rope_tiles), NULL at other hd */
    size_t bytes;        /* device bytes of the weights (alrd_gpu_info.weight_bytes) */
};

/* The sequences' state between calls (their KV caches are the layers' ks, vs). */
struct gpu_state {
    int *pos;            /* host [n_seq]: tokens each sequence holds */
    int *d_pos;          /* device [n_seq] int32: the same, read by the decode step (which advances it) */
    cudaGraphExec_t gexec; /* the captured decode step, NULL until captured */
    int graph_state;     /* 0: no decode yet, 1: ran once (warm), 2: captured */
};

/* Activations and work space: rewritten by every call, no state across calls. */
struct gpu_scratch {
    float *h;            /* [MR][H] fp32 residual stream */
    float *qkv;          /* [MR][nqkv_max] fp32 q|k|v product (per layer: [rows][y->nqkv]) */
    float *gu;           /* [MR][2*ffn] fp32 gate|up product (unfused MLP) */
    float *logits;       /* [MR][nv] fp32 */
    uint16_t *xn16;      /* [MR][H] fp16 RMSNormed rows, the products' input */
    uint16_t *act16;     /* [MR][ffn] fp16 SwiGLU output */
    uint16_t *q16;       /* [MR][qd] fp16 RoPE'd queries */
    uint16_t *att16;     /* [MR][qd] fp16 attention output of full-width values, per head */
    uint16_t *U16;       /* [MR][nh * vr_max] fp16 latent value mixes per head (o_proj has A_v folded in) */
    int *d_tok;          /* [MR] int32 input tokens */
    int *d_tgt;          /* [MR] int32 scored targets (alrd_gpu_score) */
    double *d_nll;       /* [MR] fp64 per-row NLL (alrd_gpu_score) */
    /* prefill and reference attention: the cache materialised, and score matrices */
    uint16_t *Lk16;      /* [N][dk_max] fp16 key latents or pre-RoPE keys as cached */
    uint16_t *Vm16;      /* [N][dv_max] fp16 values (latent or full) as cached */
    uint16_t *Km16;      /* [N][kvd] fp16 RoPE'd full keys */
    float *Kpre;         /* [N][kvd] fp32 keys reconstructed from latents before RoPE (latent keys only) */
    float *S;            /* [nh][TB][N] fp32 attention scores */
    uint16_t *P;         /* [nh][TB][N] fp16 attention probabilities */
    /* alrd_gpu_score's quantised alternatives (opts.score only; else NULL) */
    uint16_t *Lkq16;     /* [N][dk_max] fp16 */
    uint16_t *Vmq16;     /* [N][dv_max] fp16 */
    uint16_t *Kmq16;     /* [N][kvd] fp16 */
    float *Sq;           /* [nh][TB][N] fp32 */
    uint16_t *Pq;        /* [nh][TB][N] fp16 */
    /* fused decode attention: each split's partial output and softmax statistics, reduced by the combine,
       alrd_gpu_attn_work_floats(nh, n_seq, nsplit, vw_max) fp32 */
    float *attn_work;
};

/* Calibration statistics (alrd_gpu_gram_enable; all NULL / 0 until then). */
struct gpu_gram {
    double *sum;         /* [L][H][H] fp64 Gram sums x^T x of each layer's normed input (lower triangle,
                            column-major = row-major upper) */
    double *x64;         /* [max_batch][H] fp64: the normed rows converted for cublasDsyrk */
    long long rows;      /* rows summed so far */
};

/* Calibration probes (alrd_gpu_probe / alrd_gpu_set_kv_weight; all NULL / 0 until first used). */
struct gpu_probe {
    float *base;         /* [rows][nv] fp32 log-probs of the uncompressed model on the probe */
    size_t rows;         /* rows of base: n_seq * S of the alrd_gpu_probe call that set it */
    double *kl, *ce;     /* [rows] fp64 per-row KL and cross-entropy of the last alrd_gpu_probe */
    int32_t *tgt;        /* [rows] each probe row's next token, -1 at a sequence's last row */
    int32_t *tokens;     /* host [rows]: the base's tokens, which every later probe must score */
    uint16_t **orig;     /* host [2L]: device copies of each replaced k_proj / v_proj weight (fp16 [kvd][H]) */
    int *replaced;       /* host [2L]: 1 while that module's weight is replaced */
    float *staging;      /* [kvd][H] fp32 upload buffer */
};

struct alrd_gpu {
    /* shape and options, fixed at creation */
    alrd_config cfg;
    int L, H, hd, nh, nkv, per_kv; /* layers, hidden, head dim, query heads, KV heads, query heads per KV head */
    int qd, kvd, ffn, nv;          /* nh * hd, nkv * hd, MLP width, vocabulary */
    int group_heads, n_groups, gh; /* KV heads per latent, latents per layer, group_heads * hd */
    alrd_gpu_opts o;               /* as given (o.knobs cleared: see knobs) */
    alrd_gpu_knobs knobs;          /* taken once at creation (gpu.h) */
    int *k_bits, *v_bits;          /* host [L]: cache bits per layer */
    int MR;                        /* rows of the activations: max(max_batch, n_seq) */
    int dk_max, dv_max, vr_max, nqkv_max, vw_max; /* largest dk, dv, vr (>= 1), nqkv, value width over layers */
    int any_latent_k;              /* some layer has latent keys (Kpre is allocated) */
    int nsplit;                    /* largest split count over the layers (sizes attn_work) */
    int fused_all;                 /* the fused decode attention serves every layer */
    int attn;                      /* decode attention path: ALRD_GPU_ATTN_FUSED or _REF (alrd_gpu_set_attn) */

    glayer *ly;                    /* host [L]: per layer, weights, cache and kernel descriptor */
    gpu_weights w;
    gpu_state seq;
    gpu_scratch buf;
    gpu_gram gram;
    gpu_probe probe;

    /* the device and its bookkeeping */
    cudaStream_t st;               /* every launch and copy of the engine */
    cublasHandle_t cb;
    void *cb_ws;                   /* cuBLAS work space, 32 MiB (no allocation inside graph capture) */
    int sm_count;
    size_t smem_optin;             /* shared memory a block may opt in to */
    size_t dev_bytes;              /* device bytes allocated */
    void **allocs;                 /* host [n_allocs]: every device allocation, freed with the engine */
    int n_allocs, cap_allocs;
    int fail;                      /* first failing line (FAILS), reported by alrd_gpu_sync */
};

#define FAILS(g, x)                                                                                       \
    do {                                                                                                  \
        if ((x) != 0 && !(g)->fail) (g)->fail = __LINE__;                                                \
    } while (0)

static int cuerr(alrd_error *err, const char *what, cudaError_t e) {
    return alrd_errf(err, "gpu: %s: %s", what, cudaGetErrorString(e));
}

static int dalloc(alrd_gpu *g, void *pp, size_t bytes, alrd_error *err, const char *what) {
    void **p = (void **)pp;
    *p = NULL;
    if (!bytes) return 0;
    if (g->n_allocs == g->cap_allocs) {
        int cap = g->cap_allocs ? 2 * g->cap_allocs : 64;
        void **a = (void **)realloc(g->allocs, sizeof(void *) * cap);
        if (!a) return alrd_errf(err, "gpu: out of host memory");
        g->allocs = a;
        g->cap_allocs = cap;
    }
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return alrd_errf(err, "gpu: %s: cudaMalloc of %zu bytes failed (%s; engine holds %zu bytes)", what, bytes,
                         cudaGetErrorString(e), g->dev_bytes);
    }
    g->allocs[g->n_allocs++] = *p;
    g->dev_bytes += bytes;
    e = cudaMemsetAsync(*p, 0, bytes, g->st);
    if (e != cudaSuccess) return cuerr(err, what, e);
    return 0;
}

/* A decode GEMV of W [N][K] on M rows, shaped by the engine's knobs. */
static alrd_gpu_gemv_op gemv_op(const alrd_gpu *g, int M, int N, int K, const uint16_t *W) {
    alrd_gpu_gemv_op op = {};
    op.W = W;
    op.M = M;
    op.N = N;
    op.K = K;
    op.k_split = g->knobs.gemv_ks;
    return op;
}

/* C[M][N] (fp32, ldc) = A[M][K] (fp16, lda) . W[N][K]^T (fp16) + beta * C */
static int lin(alrd_gpu *g, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *W, float *C, int ldc,
               float beta) {
    if (M <= 4 && K % 8 == 0 && lda % 8 == 0) { /* decode: a bandwidth-bound product of our own */
        alrd_gpu_gemv_op op = gemv_op(g, M, N, K, W);
        op.X = A;
        op.ldx = lda;
        op.Y = C;
        op.ldy = ldc;
        op.beta = beta;
        return alrd_gpu_gemv_run(&op, g->knobs.pdl, g->st);
    }
    float alpha = 1.0f;
    return cublasGemmEx(g->cb, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, W, CUDA_R_16F, K, A, CUDA_R_16F, lda, &beta,
                        C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS;
}

/* Column-major strided-batched product with fp16 operands, fp32 accumulation. */
static int gsb(alrd_gpu *g, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
               const void *A, int lda, long long sa, const void *B, int ldb, long long sb, float beta, void *C,
               cudaDataType ct, int ldc, long long sc, int batch) {
    return cublasGemmStridedBatchedEx(g->cb, ta, tb, m, n, k, &alpha, A, CUDA_R_16F, lda, sa, B, CUDA_R_16F, ldb, sb,
                                      &beta, C, ct, ldc, sc, batch, CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS;
}

/* The integer setting name from the environment, dflt when unset or empty. */
static int env_int(const char *name, int dflt) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}

extern "C" void alrd_gpu_knobs_from_env(alrd_gpu_knobs *k) {
    k->pdl = env_int("ALRD_GPU_PDL", 1);
    k->nsplit = env_int("ALRD_GPU_NSPLIT", 0);
    k->head_split = env_int("ALRD_GPU_HEAD_SPLIT", -1);
    k->latent_v2 = env_int("ALRD_GPU_LATENT_V2", 0);
    k->latent_generic = env_int("ALRD_GPU_LATENT_GENERIC", 0);
    k->fuse_append = env_int("ALRD_GPU_FUSE_APPEND", 1);
    k->fuse_norm = env_int("ALRD_GPU_FUSE_NORM", 1);
    k->gemv_ks = env_int("ALRD_GPU_GEMV_KS", 0);
}

extern "C" int alrd_gpu_available(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n > 0;
}

/* ---- construction ------------------------------------------------------ */

static int side_alloc(alrd_gpu *g, alrd_gpu_side *s, alrd_error *err) {
    size_t B = (size_t)g->o.n_seq;
    if (s->bits == 16) return dalloc(g, &s->rows, 2 * B * s->seq_rows, err, "fp16 cache");
    if (dalloc(g, &s->codes, 4 * B * s->seq_words, err, "cache codes") ||
        dalloc(g, &s->scales, 2 * B * s->seq_groups, err, "cache scales") ||
        dalloc(g, &s->zeros, 2 * B * s->seq_groups, err, "cache zeros") ||
        dalloc(g, &s->ring, 2 * B * s->seq_ring, err, "cache residual"))
        return -1;
    return 0;
}

/* Everything but the weights' values. k_rank/v_rank may be NULL. */
static int engine_init(alrd_gpu *g, const alrd_config *cfg, int group_heads, const int *k_rank, const int *v_rank,
                       const float *inv_freq, const alrd_gpu_opts *o, alrd_error *err) {
    g->cfg = *cfg;
    g->o = *o;
    if (o->knobs) g->knobs = *o->knobs;
    else alrd_gpu_knobs_from_env(&g->knobs);
    g->o.knobs = NULL; /* the caller's copy need not outlive the call */
    g->L = cfg->n_layers;
    g->H = cfg->hidden;
    g->hd = cfg->head_dim;
    g->nh = cfg->n_heads;
    g->nkv = cfg->n_kv_heads;
    g->per_kv = g->nh / g->nkv;
    g->qd = g->nh * g->hd;
    g->kvd = g->nkv * g->hd;
    g->ffn = cfg->ffn;
    g->nv = cfg->vocab_size;
    g->group_heads = group_heads > 0 ? group_heads : g->nkv;
    g->n_groups = g->nkv / g->group_heads;
    g->gh = g->group_heads * g->hd;
    g->attn = o->attn;
    if (o->max_ctx < 1 || o->max_batch < 1 || o->n_seq < 1 || o->max_batch > o->max_ctx || o->max_ctx > (1 << 22) ||
        o->n_seq > 4096 || !o->k_bits || !o->v_bits)
        return alrd_errf(err, "gpu: options: max_ctx %d, max_batch %d, n_seq %d out of range", o->max_ctx,
                         o->max_batch, o->n_seq);
    if (g->hd % 2 || g->nh % g->nkv || g->nkv % g->group_heads)
        return alrd_errf(err, "gpu: config: heads %d / kv heads %d / group %d do not fit", g->nh, g->nkv,
                         g->group_heads);

    cudaError_t e = cudaStreamCreateWithFlags(&g->st, cudaStreamNonBlocking);
    if (e != cudaSuccess) return cuerr(err, "stream", e);
    if (cublasCreate(&g->cb) != CUBLAS_STATUS_SUCCESS) return alrd_errf(err, "gpu: cublasCreate failed");
    cublasSetStream(g->cb, g->st);
    int dev = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&g->sm_count, cudaDevAttrMultiProcessorCount, dev);
    int optin = 0;
    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    g->smem_optin = (size_t)optin;
    size_t ws = (size_t)32 << 20; /* fixed workspace: no allocation inside graph capture */
    if (dalloc(g, &g->cb_ws, ws, err, "cublas workspace")) return -1;
    cublasSetWorkspace(g->cb, g->cb_ws, ws);

    g->k_bits = (int *)calloc(g->L, sizeof(int));
    g->v_bits = (int *)calloc(g->L, sizeof(int));
    g->seq.pos = (int *)calloc(o->n_seq, sizeof(int));
    g->ly = (glayer *)calloc(g->L, sizeof(glayer));
    if (!g->k_bits || !g->v_bits || !g->seq.pos || !g->ly) return alrd_errf(err, "gpu: out of host memory");
    int *dk = (int *)calloc(g->L, sizeof(int)), *dv = (int *)calloc(g->L, sizeof(int));
    if (!dk || !dv) {
        free(dk);
        free(dv);
        return alrd_errf(err, "gpu: out of host memory");
    }
    g->dk_max = g->dv_max = g->kvd;
    g->vr_max = 1;
    g->vw_max = g->hd;
    for (int l = 0; l < g->L; l++) {
        glayer *y = &g->ly[l];
        y->kr = k_rank ? k_rank[l] : 0;
        y->vr = v_rank ? v_rank[l] : 0;
        y->dk = dk[l] = y->kr ? g->n_groups * y->kr : g->kvd;
        y->dv = dv[l] = y->vr ? g->n_groups * y->vr : g->kvd;
        y->kb = g->k_bits[l] = o->k_bits[l];
        y->vb = g->v_bits[l] = o->v_bits[l];
        y->kmode = y->kr ? ALRD_GPU_K_LATENT : (y->kb == 16 ? ALRD_GPU_K_ROPED : ALRD_GPU_K_FULL);
        y->nqkv = g->qd + y->dk + y->dv;
        y->wo_k = y->vr ? g->nh * y->vr : g->qd;
        if (y->dk > g->dk_max) g->dk_max = y->dk;
        if (y->dv > g->dv_max) g->dv_max = y->dv;
        if (y->vr > g->vr_max) g->vr_max = y->vr;
        if (y->vr > g->vw_max) g->vw_max = y->vr;
        if (y->kr) g->any_latent_k = 1;
        if (y->nqkv > g->nqkv_max) g->nqkv_max = y->nqkv;
    }
    alrd_kv_cache_config kc = {g->L, dk, dv, g->k_bits, g->v_bits, o->group_size, o->residual, o->use_kivi, o->max_ctx, 0};
    int rc = alrd_kv_cache_config_check(&kc, err);
    free(dk);
    free(dv);
    if (rc) return -1;

    /* caches */
    for (int l = 0; l < g->L; l++) {
        glayer *y = &g->ly[l];
        size_t units;
        alrd_gpu_side_init(&y->ks, y->dk, y->kb, o->use_kivi, o->group_size, o->residual, y->kmode == ALRD_GPU_K_ROPED,
                  o->max_ctx, &units);
        alrd_gpu_side_init(&y->vs, y->dv, y->vb, 0, o->group_size, o->residual, 0, o->max_ctx, &units);
        int kfw, vfw; /* the tiled kernel's layout for the sides it reads */
        if (alrd_gpu_attn_tiled(g->hd, g->nh, g->nkv, y->kmode, y->kb, y->vb, o->use_kivi, o->group_size, o->residual,
                                y->kr, y->vr, g->group_heads, &kfw, &vfw)) {
            alrd_gpu_side ks = y->ks, vs = y->vs; /* both sides or neither: the other kernels read the packed layout */
            size_t ku, vu;
            if ((!kfw || !alrd_gpu_side_tile(&ks, kfw, y->kmode == ALRD_GPU_K_LATENT, o->max_ctx, &ku)) &&
                (!vfw || !alrd_gpu_side_tile(&vs, vfw, 0, o->max_ctx, &vu)))
                y->ks = ks, y->vs = vs;
        }
        if (side_alloc(g, &y->ks, err) || side_alloc(g, &y->vs, err)) return -1;
    }

    /* RoPE tables, computed as the CPU path does (fp32 angle, cosf/sinf) */
    size_t half = (size_t)g->hd / 2, nt = (size_t)o->max_ctx * half;
    float *ct = (float *)malloc(sizeof(float) * nt), *stb = (float *)malloc(sizeof(float) * nt);
    if (!ct || !stb) {
        free(ct);
        free(stb);
        return alrd_errf(err, "gpu: out of host memory for RoPE tables");
    }
    for (int p = 0; p < o->max_ctx; p++)
        for (size_t i = 0; i < half; i++) {
            float a = (float)p * inv_freq[i];
            ct[p * half + i] = cosf(a);
            stb[p * half + i] = sinf(a);
        }
    rc = dalloc(g, &g->w.cos_tab, sizeof(float) * nt, err, "rope") ||
         dalloc(g, &g->w.sin_tab, sizeof(float) * nt, err, "rope");
    if (!rc) {
        cudaMemcpyAsync(g->w.cos_tab, ct, sizeof(float) * nt, cudaMemcpyHostToDevice, g->st);
        cudaMemcpyAsync(g->w.sin_tab, stb, sizeof(float) * nt, cudaMemcpyHostToDevice, g->st);
        cudaStreamSynchronize(g->st);
    }
    free(ct);
    free(stb);
    if (rc) return -1;
    if (dalloc(g, &g->w.rope_tile, 4 * alrd_gpu_attn_rope_tile_words(o->max_ctx, g->hd), err, "rope")) return -1;
    if (g->w.rope_tile) {
        const int e = alrd_gpu_attn_rope_tiles(g->w.cos_tab, g->w.sin_tab, o->max_ctx, g->hd, g->w.rope_tile, g->st);
        if (e) return cuerr(err, "RoPE tile rows", (cudaError_t)e);
    }

    /* activations */
    size_t MR = (size_t)(o->max_batch > o->n_seq ? o->max_batch : o->n_seq);
    g->MR = (int)MR;
    size_t N = (size_t)o->max_ctx, TB = (size_t)o->max_batch;
    if (dalloc(g, &g->buf.h, 4 * MR * g->H, err, "activations") ||
        dalloc(g, &g->buf.qkv, 4 * MR * g->nqkv_max, err, "activations") ||
        dalloc(g, &g->buf.gu, 4 * MR * 2 * g->ffn, err, "activations") ||
        dalloc(g, &g->buf.logits, 4 * MR * g->nv, err, "logits") ||
        dalloc(g, &g->buf.xn16, 2 * MR * g->H, err, "activations") ||
        dalloc(g, &g->buf.act16, 2 * MR * g->ffn, err, "activations") ||
        dalloc(g, &g->buf.q16, 2 * MR * g->qd, err, "activations") ||
        dalloc(g, &g->buf.att16, 2 * MR * g->qd, err, "activations") ||
        dalloc(g, &g->buf.d_tok, 4 * MR, err, "tokens") || dalloc(g, &g->buf.d_tgt, 4 * MR, err, "targets") ||
        dalloc(g, &g->buf.d_nll, 8 * MR, err, "nll") ||
        dalloc(g, &g->seq.d_pos, 4 * (size_t)o->n_seq, err, "positions"))
        return -1;
    /* prefill / reference attention: materialised K/V and score matrices */
    if (dalloc(g, &g->buf.Lk16, 2 * N * g->dk_max, err, "K materialisation") ||
        dalloc(g, &g->buf.Vm16, 2 * N * g->dv_max, err, "V materialisation") ||
        dalloc(g, &g->buf.Km16, 2 * N * g->kvd, err, "K materialisation") ||
        (g->any_latent_k && dalloc(g, &g->buf.Kpre, 4 * N * g->kvd, err, "K reconstruction")) ||
        dalloc(g, &g->buf.S, 4 * (size_t)g->nh * TB * N, err, "attention scores") ||
        dalloc(g, &g->buf.P, 2 * (size_t)g->nh * TB * N, err, "attention probabilities") ||
        dalloc(g, &g->buf.U16, 2 * MR * g->nh * g->vr_max, err, "latent mix"))
        return -1;
    if (o->score && (dalloc(g, &g->buf.Lkq16, 2 * N * g->dk_max, err, "score") ||
                     dalloc(g, &g->buf.Vmq16, 2 * N * g->dv_max, err, "score") ||
                     dalloc(g, &g->buf.Kmq16, 2 * N * g->kvd, err, "score") ||
                     dalloc(g, &g->buf.Sq, 4 * (size_t)g->nh * TB * N, err, "score") ||
                     dalloc(g, &g->buf.Pq, 2 * (size_t)g->nh * TB * N, err, "score")))
        return -1;
    return 0;
}

/* Splits of the sequence for a layer's fused decode kernel: a split of len
 * tokens (a multiple of 64, as split_range makes it) is one block per KV
 * group and sequence, and len is the shortest that keeps the blocks of a
 * max_ctx sequence within one wave of what the GPU holds at once (a
 * second, partly filled wave would double the kernel's time; shorter
 * contexts leave splits empty). Sweeps over ALRD_GPU_NSPLIT=n, which
 * fixes it instead: tests/gpu/device.sh T. */
#define SPLIT_TOKENS 64 /* a split's length is a multiple of this (split_range's tiles) */
#define MAX_SPLITS 256

/* Blocks of a layer's fused decode kernel one wave holds, per sequence and
 * KV group (or head): the GPU's SMs times the blocks one SM holds, shared
 * by the groups x sequences that each split launches. */
static long wave_splits(const alrd_gpu *g, const alrd_gpu_attn_layer *a) {
    int groups = 1, per_sm = alrd_gpu_attn_occupancy(a, &groups);
    long wave = (long)(per_sm > 0 ? per_sm : 1) * g->sm_count / ((long)groups * g->o.n_seq);
    return wave < 1 ? 1 : wave;
}

static int layer_nsplit(const alrd_gpu *g, const alrd_gpu_attn_layer *a) {
    long ctx = g->o.max_ctx, wave = wave_splits(g, a);
    long len = ((ctx + wave - 1) / wave + SPLIT_TOKENS - 1) / SPLIT_TOKENS * SPLIT_TOKENS;
    long n = g->knobs.nsplit;
    if (n <= 0) n = (ctx + len - 1) / len;
    return n < 1 ? 1 : n > MAX_SPLITS ? MAX_SPLITS : (int)n;
}

/* A latent layer's decode blocks split by KV head instead of by group when
 * the group blocks would leave the GPU idle: when even 64-token splits of a
 * max_ctx sequence (at most 256) give at most 3/4 of a wave of blocks. A
 * block of one head reconstructs a third of the keys (SmolLM2's groups of 3)
 * but reads and dequantises all of the group's latents, so where the group
 * blocks fill the GPU it costs (SmolLM2 shape, rank 0.5 2-bit, batch 1: depth
 * 0 0.888 -> 0.828 ms, 4096 1.152 -> 1.055, 32768 1.632 -> 1.760; batch 16
 * depth 4096 2.39 -> 3.10; results/session5/head-split.log).
 * ALRD_GPU_HEAD_SPLIT=0|1 fixes it. */
static int want_head_split(const alrd_gpu *g, const alrd_gpu_attn_layer *a) {
    if (a->kmode != ALRD_GPU_K_LATENT || g->group_heads < 2) return 0;
    if (g->knobs.head_split >= 0) return g->knobs.head_split != 0;
    long splits = ((long)g->o.max_ctx + SPLIT_TOKENS - 1) / SPLIT_TOKENS;
    if (splits > MAX_SPLITS) splits = MAX_SPLITS;
    return 4 * splits <= 3 * wave_splits(g, a);
}

/* After the weights: the fused attention descriptors. */
static int engine_finish(alrd_gpu *g, alrd_error *err) {
    size_t smax = 0;
    g->fused_all = 1;
    for (int l = 0; l < g->L; l++) {
        glayer *y = &g->ly[l];
        alrd_gpu_attn_layer *a = &y->al;
        memset(a, 0, sizeof *a);
        a->n_heads = g->nh;
        a->n_kv = g->nkv;
        a->hd = g->hd;
        a->group_heads = g->group_heads;
        a->kmode = y->kmode;
        a->kr = y->kr;
        a->vr = y->vr;
        a->kA = y->w.kA;
        if (y->kr) { /* a second, reordered copy of A_k (derived from kA: not counted as weights; freed with
                      * the engine's other allocations) */
            uint16_t *kAf;
            if (dalloc(g, &kAf, 2 * alrd_gpu_attn_ak_halves(g->nkv, g->hd, y->kr), err, "weights")) return -1;
            const int e = alrd_gpu_attn_pack_ak(y->w.kA, g->nkv, g->hd, y->kr, kAf, g->st);
            if (e) return cuerr(err, "A_k reorder", (cudaError_t)e);
            a->kAf = kAf;
        }
        a->bk = y->w.bk_lat;
        a->ks = y->ks;
        a->vs = y->vs;
        a->cos_tab = g->w.cos_tab;
        a->sin_tab = g->w.sin_tab;
        a->rope_tile = g->w.rope_tile;
        a->scale = 1.0f / sqrtf((float)g->hd);
        a->pdl = g->knobs.pdl != 0;
        a->latent_v2 = g->knobs.latent_v2 != 0;
        a->latent_generic = g->knobs.latent_generic != 0;
        size_t sm = alrd_gpu_attn_smem(a, g->smem_optin);
        if (sm && want_head_split(g, a)) {
            a->head_split = 1;
            sm = alrd_gpu_attn_smem(a, g->smem_optin);
        }
        y->fused_ok = sm > 0;
        if (!sm) g->fused_all = 0;
        if (sm > smax) smax = sm;
    }
    if (smax > 0) {
        int e = alrd_gpu_attn_prepare(smax);
        if (e) return cuerr(err, "fused attention shared memory", (cudaError_t)e);
    }
    g->nsplit = 1; /* the largest over the layers sizes the work space */
    for (int l = 0; l < g->L; l++) {
        glayer *y = &g->ly[l];
        y->nsplit = y->fused_ok ? layer_nsplit(g, &y->al) : 1;
        if (y->nsplit > g->nsplit) g->nsplit = y->nsplit;
    }
    if (dalloc(g, &g->buf.attn_work, 4 * alrd_gpu_attn_work_floats(g->nh, g->o.n_seq, g->nsplit, g->vw_max), err,
               "attention work"))
        return -1;
    cudaError_t e = cudaStreamSynchronize(g->st);
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess) return cuerr(err, "engine setup", e);
    return 0;
}

static int upload_f16(alrd_gpu *g, uint16_t *dst, const float *src, size_t n, float *staging) {
    if (cudaMemcpyAsync(staging, src, 4 * n, cudaMemcpyHostToDevice, g->st) != cudaSuccess) return -1;
    return alrd_gpu_f32_to_f16(staging, dst, n, g->st);
}

static int upload_f32(alrd_gpu *g, float **dst, const float *src, size_t n, alrd_error *err) {
    *dst = NULL;
    if (!src) return 0;
    if (dalloc(g, dst, 4 * n, err, "weights")) return -1;
    g->w.bytes += 4 * n;
    return cudaMemcpyAsync(*dst, src, 4 * n, cudaMemcpyHostToDevice, g->st) != cudaSuccess
               ? alrd_errf(err, "gpu: weight upload failed")
               : 0;
}

static int walloc16(alrd_gpu *g, uint16_t **p, size_t n, alrd_error *err) {
    if (dalloc(g, p, 2 * n, err, "weights")) return -1;
    g->w.bytes += 2 * n;
    return 0;
}

/* o_proj with A_v folded in, for a layer whose values stay latent: query
 * head h attends over the latent values of its group, so its slice of
 * o_proj becomes W_o[:, h] . A_v[kv head of h] (H x vr) and the block
 * [H][n_heads * vr] is applied to the latent mixes directly (no lift).
 * Computed in fp32 from the file's fp32 matrices in the fp32 staging
 * buffer (fold_floats of it), stored fp16. The value bias passes through
 * attention unchanged (the weights sum to 1), so it becomes W_o . b_v,
 * added to o_proj's bias (bo_out, [H], host). */
static size_t fold_floats(const alrd_gpu *g, const glayer *y) {
    return (size_t)g->H * g->qd + (size_t)g->n_groups * g->gh * y->vr + (size_t)g->H * y->wo_k;
}

static int fold_wo(alrd_gpu *g, glayer *y, const alrd_layer *S, float *staging, float *bo_out, alrd_error *err) {
    const size_t H = g->H, qd = g->qd, hd = g->hd, vr = y->vr, nA = (size_t)g->n_groups * g->gh * vr;
    float *wo = staging, *A = wo + H * qd, *out = A + nA;
    int rc = cudaMemcpyAsync(wo, S->wo, 4 * H * qd, cudaMemcpyHostToDevice, g->st) != cudaSuccess ||
             cudaMemcpyAsync(A, S->vA, 4 * nA, cudaMemcpyHostToDevice, g->st) != cudaSuccess;
    const float one = 1.0f, zero = 0.0f;
    for (int h = 0; h < g->nh && !rc; h++) { /* column-major: out[h*vr.., n] = A_kv (vr x hd) . W_o[n][h*hd..]^T */
        int kvh = h / g->per_kv, grp = kvh / g->group_heads, j = kvh % g->group_heads;
        rc = cublasSgemm(g->cb, CUBLAS_OP_N, CUBLAS_OP_N, (int)vr, (int)H, (int)hd, &one,
                         A + ((size_t)grp * g->gh + (size_t)j * hd) * vr, (int)vr, wo + (size_t)h * hd, (int)qd,
                         &zero, out + (size_t)h * vr, y->wo_k) != CUBLAS_STATUS_SUCCESS;
    }
    if (!rc) rc = alrd_gpu_f32_to_f16(out, y->w.o, H * y->wo_k, g->st);
    if (!rc) rc = cudaStreamSynchronize(g->st) != cudaSuccess; /* staging is reused */
    if (rc) return alrd_errf(err, "gpu: folding A_v into o_proj failed");
    for (size_t n = 0; n < H; n++) {
        double a = S->bo ? S->bo[n] : 0.0;
        for (int h = 0; S->bv && h < g->nh; h++) {
            const float *w = S->wo + n * qd + (size_t)h * hd, *v = S->bv + (size_t)(h / g->per_kv) * hd;
            for (size_t d = 0; d < hd; d++) a += (double)w[d] * v[d];
        }
        bo_out[n] = (float)a;
    }
    return 0;
}

extern "C" int alrd_gpu_new(alrd_gpu **out, const alrd_model *m, const alrd_gpu_opts *o, alrd_error *err) {
    *out = NULL;
    if (!alrd_gpu_available()) return alrd_errf(err, "gpu: no CUDA device");
    alrd_gpu *g = (alrd_gpu *)calloc(1, sizeof *g);
    if (!g) return alrd_errf(err, "gpu: out of host memory");
    const alrd_config *c = &m->cfg;
    int *kr = (int *)calloc(c->n_layers, sizeof(int)), *vr = (int *)calloc(c->n_layers, sizeof(int));
    if (!kr || !vr) {
        free(kr);
        free(vr);
        free(g);
        return alrd_errf(err, "gpu: out of host memory");
    }
    for (int l = 0; l < c->n_layers; l++) kr[l] = m->layers[l].k_rank, vr[l] = m->layers[l].v_rank;
    int rc = engine_init(g, c, m->group_heads, kr, vr, m->inv_freq, o, err);
    free(kr);
    free(vr);
    if (rc) {
        alrd_gpu_free(g);
        return -1;
    }
    /* weights, fp16; staged through one fp32 buffer */
    size_t H = g->H, qd = g->qd, ffn = g->ffn, gh = g->gh, stage = (size_t)g->nv * H;
    for (int l = 0; l < g->L; l++) {
        size_t a = (size_t)g->ly[l].nqkv * H;
        if (a > stage) stage = a;
        if (2 * ffn * H > stage) stage = 2 * ffn * H;
        size_t f = (size_t)g->n_groups * gh * g->ly[l].kr;
        if (f > stage) stage = f;
        if (g->ly[l].vr && fold_floats(g, &g->ly[l]) > stage) stage = fold_floats(g, &g->ly[l]);
    }
    if (H * qd > stage) stage = H * qd;
    float *staging = NULL, *bo_fold = (float *)malloc(sizeof(float) * H);
    if (!bo_fold) {
        alrd_gpu_free(g);
        return alrd_errf(err, "gpu: out of host memory");
    }
    if (dalloc(g, &staging, 4 * stage, err, "staging")) goto fail;
    if (walloc16(g, &g->w.embed, (size_t)g->nv * H, err) ||
        upload_f16(g, g->w.embed, m->embed, (size_t)g->nv * H, staging))
        goto upfail;
    if (m->lm_head == m->embed) g->w.lm_head = g->w.embed;
    else if (walloc16(g, &g->w.lm_head, (size_t)g->nv * H, err) ||
             upload_f16(g, g->w.lm_head, m->lm_head, (size_t)g->nv * H, staging))
        goto upfail;
    if (upload_f32(g, &g->w.final_norm, m->final_norm, H, err)) goto fail;
    for (int l = 0; l < g->L; l++) {
        glayer *y = &g->ly[l];
        alrd_layer view;
        const alrd_layer *S = alrd_model_layer(m, l, &view, err); /* a lazy model materializes it here */
        if (!S) goto fail;
        if (walloc16(g, &y->w.qkv, (size_t)y->nqkv * H, err) || walloc16(g, &y->w.o, H * y->wo_k, err) ||
            walloc16(g, &y->w.gu, 2 * ffn * H, err) || walloc16(g, &y->w.down, H * ffn, err))
            goto fail;
        if (upload_f16(g, y->w.qkv, S->wq, qd * H, staging) ||
            upload_f16(g, y->w.qkv + qd * H, y->kr ? S->kB : S->wk, (size_t)y->dk * H, staging) ||
            upload_f16(g, y->w.qkv + (qd + y->dk) * H, y->vr ? S->vB : S->wv, (size_t)y->dv * H, staging) ||
            (!y->vr && upload_f16(g, y->w.o, S->wo, H * qd, staging)) ||
            upload_f16(g, y->w.gu, S->w_gate, ffn * H, staging) ||
            upload_f16(g, y->w.gu + ffn * H, S->w_up, ffn * H, staging) ||
            upload_f16(g, y->w.down, S->w_down, H * ffn, staging))
            goto upfail;
        if (y->kr && (walloc16(g, &y->w.kA, (size_t)g->n_groups * gh * y->kr, err) ||
                      upload_f16(g, y->w.kA, S->kA, (size_t)g->n_groups * gh * y->kr, staging)))
            goto upfail;
        if (y->vr && fold_wo(g, y, S, staging, bo_fold, err)) goto fail;
        if (upload_f32(g, &y->w.attn_norm, S->attn_norm, H, err) ||
            upload_f32(g, &y->w.ffn_norm, S->ffn_norm, H, err) || upload_f32(g, &y->w.bq, S->bq, qd, err) ||
            upload_f32(g, &y->w.bo, y->vr && (S->bo || S->bv) ? bo_fold : S->bo, H, err))
            goto fail;
        if (upload_f32(g, y->kr ? &y->w.bk_lat : &y->w.bk_full, S->bk, g->kvd, err) ||
            (!y->vr && upload_f32(g, &y->w.bv_full, S->bv, g->kvd, err)))
            goto fail;
        cudaStreamSynchronize(g->st); /* staging is reused */
    }
    free(bo_fold);
    bo_fold = NULL;
    if (engine_finish(g, err)) goto fail;
    *out = g;
    return 0;
upfail:
    alrd_errf(err, "gpu: weight upload failed");
fail:
    free(bo_fold);
    alrd_gpu_free(g);
    return -1;
}

extern "C" int alrd_gpu_new_synthetic(alrd_gpu **out, const alrd_config *cfg, int group_heads, const int *k_rank,
                                      const int *v_rank, const alrd_gpu_opts *o, uint64_t seed, alrd_error *err) {
    *out = NULL;
    if (!alrd_gpu_available()) return alrd_errf(err, "gpu: no CUDA device");
    if (cfg->head_dim < 2 || cfg->head_dim > 1024) return alrd_errf(err, "gpu: synthetic: head_dim %d", cfg->head_dim);
    alrd_gpu *g = (alrd_gpu *)calloc(1, sizeof *g);
    if (!g) return alrd_errf(err, "gpu: out of host memory");
    float inv_freq[512];
    for (int i = 0; i < cfg->head_dim / 2; i++)
        inv_freq[i] = (float)(1.0 / pow((double)cfg->rope_theta, (2.0 * i) / cfg->head_dim));
    if (engine_init(g, cfg, group_heads, k_rank, v_rank, inv_freq, o, err)) {
        alrd_gpu_free(g);
        return -1;
    }
    size_t H = g->H, qd = g->qd, ffn = g->ffn, gh = g->gh;
    uint64_t sd = seed;
    float sH = sqrtf(3.0f / H), sQ = sqrtf(3.0f / qd), sF = sqrtf(3.0f / ffn);
#define RF16(p, n, sc) (walloc16(g, &(p), (n), err) || alrd_gpu_fill_f16((p), (n), (sc), 0.0f, ++sd, g->st))
#define ONES(p, n) (dalloc(g, &(p), 4 * (n), err, "weights") || alrd_gpu_fill_f32((p), (n), 0.0f, 1.0f, 0, g->st))
    if (RF16(g->w.embed, (size_t)g->nv * H, 1.0f) || ONES(g->w.final_norm, H)) goto fail;
    g->w.lm_head = g->w.embed;
    for (int l = 0; l < g->L; l++) {
        glayer *y = &g->ly[l];
        if (RF16(y->w.qkv, (size_t)y->nqkv * H, sH) || RF16(y->w.o, H * y->wo_k, sQ) ||
            RF16(y->w.gu, 2 * ffn * H, sH) || RF16(y->w.down, H * ffn, sF) || ONES(y->w.attn_norm, H) ||
            ONES(y->w.ffn_norm, H))
            goto fail;
        if (y->kr && RF16(y->w.kA, (size_t)g->n_groups * gh * y->kr, sqrtf(3.0f / y->kr))) goto fail;
        if (y->kr && o->synth_kbias &&
            (dalloc(g, &y->w.bk_lat, 4 * (size_t)g->kvd, err, "weights") ||
             alrd_gpu_fill_f32(y->w.bk_lat, g->kvd, 1.0f, 0.0f, ++sd, g->st)))
            goto fail;
    }
#undef RF16
#undef ONES
    if (engine_finish(g, err)) goto fail;
    *out = g;
    return 0;
fail:
    alrd_gpu_free(g);
    return -1;
}

extern "C" void alrd_gpu_free(alrd_gpu *g) {
    if (!g) return;
    if (g->st) cudaStreamSynchronize(g->st);
    if (g->seq.gexec) cudaGraphExecDestroy(g->seq.gexec);
    for (int i = 0; i < g->n_allocs; i++) cudaFree(g->allocs[i]);
    free(g->allocs);
    if (g->cb) cublasDestroy(g->cb);
    if (g->st) cudaStreamDestroy(g->st);
    free(g->k_bits);
    free(g->v_bits);
    free(g->seq.pos);
    free(g->probe.orig);
    free(g->probe.tokens);
    free(g->probe.replaced);
    free(g->ly);
    free(g);
}

/* ---- state ------------------------------------------------------------- */

static void upload_pos(alrd_gpu *g) {
    FAILS(g, cudaMemcpyAsync(g->seq.d_pos, g->seq.pos, sizeof(int) * g->o.n_seq, cudaMemcpyHostToDevice, g->st));
}

extern "C" void alrd_gpu_reset(alrd_gpu *g, int seq) {
    for (int b = 0; b < g->o.n_seq; b++)
        if (seq < 0 || b == seq) g->seq.pos[b] = 0;
    upload_pos(g);
    cudaStreamSynchronize(g->st);
}

extern "C" int alrd_gpu_pos(const alrd_gpu *g, int seq) { return seq >= 0 && seq < g->o.n_seq ? g->seq.pos[seq] : -1; }

extern "C" size_t alrd_gpu_cache_bytes(const alrd_gpu *g, int seq) {
    if (seq < 0 || seq >= g->o.n_seq) return 0;
    size_t t = 0;
    for (int l = 0; l < g->L; l++)
        t += alrd_kv_cache_layer_bytes(g->ly[l].dk, g->ly[l].dv, g->ly[l].kb, g->ly[l].vb, g->o.group_size,
                                       g->o.residual, g->o.use_kivi, g->seq.pos[seq]);
    return t;
}

extern "C" const alrd_config *alrd_gpu_config(const alrd_gpu *g) { return &g->cfg; }

extern "C" void alrd_gpu_profile(int on) { (void)(on ? cudaProfilerStart() : cudaProfilerStop()); }

extern "C" void alrd_gpu_set_attn(alrd_gpu *g, int attn) {
    g->attn = attn;
    if (g->seq.gexec) cudaGraphExecDestroy(g->seq.gexec);
    g->seq.gexec = NULL;
    g->seq.graph_state = 0;
}

extern "C" int alrd_gpu_fused_ok(const alrd_gpu *g) { return g->fused_all; }

extern "C" int alrd_gpu_sync(alrd_gpu *g, alrd_error *err) {
    cudaError_t e = cudaStreamSynchronize(g->st);
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess) return cuerr(err, "device", e);
    if (g->fail) {
        int line = g->fail;
        g->fail = 0;
        return alrd_errf(err, "gpu: a launch or cuBLAS call failed (runtime/gpu.cu:%d)", line);
    }
    return 0;
}

/* ---- forward pieces ----------------------------------------------------- */

/* Keys at full width for attention: rows [r0, nk) of dst (fp16, RoPE'd) from
 * latent / pre-RoPE rows of src. */
static void build_keys(alrd_gpu *g, glayer *y, const uint16_t *src, uint16_t *dst, int r0, int nk) {
    if (nk <= r0) return;
    if (y->kmode == ALRD_GPU_K_LATENT) {
        FAILS(g, gsb(g, CUBLAS_OP_T, CUBLAS_OP_N, g->gh, nk, y->kr, 1.0f, y->w.kA, y->kr, (long long)g->gh * y->kr, src,
                     y->dk, y->kr, 0.0f, g->buf.Kpre, CUDA_R_32F, g->kvd, g->gh, g->n_groups));
        FAILS(g, alrd_gpu_rope_rows(g->buf.Kpre, NULL, g->kvd, y->w.bk_lat, r0, nk, g->nkv, g->hd, g->w.cos_tab,
                                    g->w.sin_tab, dst, g->kvd, g->st));
    } else {
        FAILS(g, alrd_gpu_rope_rows(NULL, src, y->dk, NULL, r0, nk, g->nkv, g->hd, g->w.cos_tab, g->w.sin_tab, dst,
                                    g->kvd, g->st));
    }
}

/* Attention of T query rows (positions p0..) over nk keys of Km16 / Vm16
 * (and the quantised alternatives Kq/Vq on the scoring path). Latent values
 * leave each head's latent mix in U16 ([T][n_heads * vr]; o_proj has A_v
 * folded in), full values the heads' outputs in att16 ([T][n_heads * hd]). */
static void attn_core(alrd_gpu *g, glayer *y, int T, int nk, int p0, const uint16_t *q16, uint16_t *att16, int urow,
                      const uint16_t *Kq, const uint16_t *Vq, int first, int k_mode, int v_mode) {
    uint16_t *U = g->buf.U16 + (size_t)urow * g->nh * y->vr; /* latent mixes of row urow on */
    const int hd = g->hd, qd = g->qd, kvd = g->kvd, per = g->per_kv;
    const long long hs = (long long)T * nk;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int k = 0; k < g->nkv; k++) {
        int h0 = k * per;
        FAILS(g, gsb(g, CUBLAS_OP_T, CUBLAS_OP_N, nk, T, hd, scale, g->buf.Km16 + (size_t)k * hd, kvd, 0,
                     q16 + (size_t)h0 * hd, qd, hd, 0.0f, g->buf.S + h0 * hs, CUDA_R_32F, nk, hs, per));
        if (Kq)
            FAILS(g, gsb(g, CUBLAS_OP_T, CUBLAS_OP_N, nk, T, hd, scale, Kq + (size_t)k * hd, kvd, 0,
                         q16 + (size_t)h0 * hd, qd, hd, 0.0f, g->buf.Sq + h0 * hs, CUDA_R_32F, nk, hs, per));
    }
    FAILS(g, alrd_gpu_softmax(g->buf.S, Kq ? g->buf.Sq : NULL, g->buf.P, Vq ? g->buf.Pq : NULL, g->nh, (size_t)hs, T,
                              nk, p0, 1.0f, first, g->o.residual, k_mode, v_mode, g->st));
    for (int k = 0; k < g->nkv; k++) {
        int h0 = k * per;
        if (y->vr) {
            int gg = k / g->group_heads, vr = y->vr;
            FAILS(g, gsb(g, CUBLAS_OP_N, CUBLAS_OP_N, vr, T, nk, 1.0f, g->buf.Vm16 + (size_t)gg * vr, y->dv, 0,
                         g->buf.P + h0 * hs, nk, hs, 0.0f, U + (size_t)h0 * vr, CUDA_R_16F, g->nh * vr, vr, per));
            if (Vq)
                FAILS(g, gsb(g, CUBLAS_OP_N, CUBLAS_OP_N, vr, T, nk, 1.0f, Vq + (size_t)gg * vr, y->dv, 0,
                             g->buf.Pq + h0 * hs, nk, hs, 1.0f, U + (size_t)h0 * vr, CUDA_R_16F, g->nh * vr, vr, per));
        } else {
            FAILS(g, gsb(g, CUBLAS_OP_N, CUBLAS_OP_N, hd, T, nk, 1.0f, g->buf.Vm16 + (size_t)k * hd, y->dv, 0,
                         g->buf.P + h0 * hs, nk, hs, 0.0f, att16 + (size_t)h0 * hd, CUDA_R_16F, qd, hd, per));
            if (Vq)
                FAILS(g, gsb(g, CUBLAS_OP_N, CUBLAS_OP_N, hd, T, nk, 1.0f, Vq + (size_t)k * hd, y->dv, 0,
                             g->buf.Pq + h0 * hs, nk, hs, 1.0f, att16 + (size_t)h0 * hd, CUDA_R_16F, qd, hd, per));
        }
    }
}

/* The decode step's few rows take the RMSNorm into the product (and the
 * SwiGLU out of it): one launch where there were two or three. Each block
 * of the fused product normalises the rows itself, a round trip through L2
 * and two barriers before its first row: for SmolLM2 (hidden 576) that is
 * cheaper than a launch (depth 0 batch 1, 0.678 -> 0.651 ms a step), for
 * Llama-2-7B's 4096 it is not (6.349 -> 6.404 ms; H100, session 6's first G
 * run, results/session6/gvars-1-h100.log). */
#define FUSE_NORM_MAX_K 1024
static int fused_norm(const alrd_gpu *g, int T) {
    const int fuse = g->knobs.fuse_norm;
    return (fuse == 2 || (fuse == 1 && g->H <= FUSE_NORM_MAX_K)) && alrd_gpu_gemv_norm_fits(T, g->H);
}

static alrd_gpu_gemv_op norm_op(const alrd_gpu *g, int T, int N, const float *gamma, const uint16_t *W) {
    alrd_gpu_gemv_op op = gemv_op(g, T, N, g->H, W);
    op.h = g->buf.h;
    op.gamma = gamma;
    op.eps = g->cfg.rms_eps;
    op.ldh = g->H;
    return op;
}

/* Y[T][N] = fp16(RMSNorm(h) * gamma) . W^T (rows r0.. of h). */
static void norm_lin(alrd_gpu *g, int r0, int T, int N, const float *gamma, const uint16_t *W, float *Y) {
    if (fused_norm(g, T)) {
        alrd_gpu_gemv_op op = norm_op(g, T, N, gamma, W);
        op.h += (size_t)r0 * g->H;
        op.Y = Y;
        op.ldy = N;
        FAILS(g, alrd_gpu_gemv_run(&op, g->knobs.pdl, g->st));
        return;
    }
    FAILS(g, alrd_gpu_rmsnorm(g->buf.h + (size_t)r0 * g->H, gamma, T, g->H, g->cfg.rms_eps, g->buf.xn16, g->knobs.pdl,
                              g->st));
    FAILS(g, lin(g, T, N, g->H, g->buf.xn16, g->H, W, Y, N, 0.0f));
}

/* o_proj (+ residual), then the MLP (+ residual), for T rows. */
static void post_attn(alrd_gpu *g, glayer *y, int T) {
    const int H = g->H, ffn = g->ffn;
    FAILS(g, lin(g, T, H, y->wo_k, y->vr ? g->buf.U16 : g->buf.att16, y->wo_k, y->w.o, g->buf.h, H, 1.0f));
    if (y->w.bo) FAILS(g, alrd_gpu_add_bias_f32(g->buf.h, T, H, y->w.bo, g->knobs.pdl, g->st));
    if (fused_norm(g, T)) {
        alrd_gpu_gemv_op op = norm_op(g, T, ffn, y->w.ffn_norm, y->w.gu);
        op.act = g->buf.act16;
        op.ldact = ffn;
        FAILS(g, alrd_gpu_gemv_run(&op, g->knobs.pdl, g->st));
    } else {
        FAILS(g, alrd_gpu_rmsnorm(g->buf.h, y->w.ffn_norm, T, H, g->cfg.rms_eps, g->buf.xn16, g->knobs.pdl, g->st));
        FAILS(g, lin(g, T, 2 * ffn, H, g->buf.xn16, H, y->w.gu, g->buf.gu, 2 * ffn, 0.0f));
        FAILS(g, alrd_gpu_silu_mul(g->buf.gu, T, ffn, g->buf.act16, g->knobs.pdl, g->st));
    }
    FAILS(g, lin(g, T, H, ffn, g->buf.act16, ffn, y->w.down, g->buf.h, H, 1.0f));
}

enum { MODE_PREFILL = 0, MODE_SCORE = 1, MODE_SCORE_DECODE = 2 };

/* One layer over T rows of sequence b at positions p0..: attention over the
 * cache's first p0 tokens and the new ones at full precision. */
static void layer_prefill(alrd_gpu *g, int l, int b, int T, int p0, int mode, int first) {
    glayer *y = &g->ly[l];
    const int H = g->H, qd = g->qd, nk = p0 + T;
    FAILS(g, alrd_gpu_rmsnorm(g->buf.h, y->w.attn_norm, T, H, g->cfg.rms_eps, g->buf.xn16, g->knobs.pdl, g->st));
    if (g->gram.sum && mode == MODE_PREFILL) { /* calibration: Gram += xn^T xn in fp64 (lower = row-major upper) */
        const double one = 1.0;
        FAILS(g, alrd_gpu_f16_to_f64(g->buf.xn16, g->gram.x64, (size_t)T * H, g->st));
        FAILS(g, cublasDsyrk(g->cb, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, H, T, &one, g->gram.x64, H, &one,
                             g->gram.sum + (size_t)l * H * H, H) != CUBLAS_STATUS_SUCCESS);
    }
    FAILS(g, lin(g, T, y->nqkv, H, g->buf.xn16, H, y->w.qkv, g->buf.qkv, y->nqkv, 0.0f));
    FAILS(g, alrd_gpu_qkv_post(g->buf.qkv, T, y->nqkv, g->nh, g->hd, y->dk, y->dv, y->w.bq, y->w.bk_full, y->w.bv_full,
                               NULL, p0, g->w.cos_tab, g->w.sin_tab, g->buf.q16, g->buf.Lk16, g->buf.Vm16, y->dk, y->dv,
                               g->knobs.pdl, g->st));
    if (p0 > 0) {
        if (y->kmode == ALRD_GPU_K_ROPED) FAILS(g, alrd_gpu_materialize(&y->ks, b, p0, p0, g->buf.Km16, g->kvd, g->st));
        else FAILS(g, alrd_gpu_materialize(&y->ks, b, p0, p0, g->buf.Lk16, y->dk, g->st));
        FAILS(g, alrd_gpu_materialize(&y->vs, b, p0, p0, g->buf.Vm16, y->dv, g->st));
    }
    build_keys(g, y, g->buf.Lk16, g->buf.Km16, y->kmode == ALRD_GPU_K_ROPED ? p0 : 0, nk);
    const uint16_t *Kq = NULL, *Vq = NULL;
    int k_mode = 0, v_mode = 0;
    if (mode == MODE_SCORE_DECODE) {
        if (y->kb < 16) {
            FAILS(g, alrd_gpu_fake_quant(&y->ks, 0, g->buf.qkv, y->nqkv, qd, T, g->buf.Lkq16, y->dk, g->st));
            build_keys(g, y, g->buf.Lkq16, g->buf.Kmq16, 0, nk);
            Kq = g->buf.Kmq16;
            k_mode = g->o.use_kivi ? 1 : 2;
        }
        if (y->vb < 16) {
            FAILS(g, alrd_gpu_fake_quant(&y->vs, 0, g->buf.qkv, y->nqkv, qd + y->dk, T, g->buf.Vmq16, y->dv, g->st));
            Vq = g->buf.Vmq16;
            v_mode = 2;
        }
    }
    attn_core(g, y, T, nk, p0, g->buf.q16, g->buf.att16, 0, Kq, Vq, first, k_mode, v_mode);
    if (mode == MODE_PREFILL) {
        FAILS(g, alrd_gpu_append_prefill(&y->ks, b, g->buf.qkv, y->nqkv, qd, p0, T, g->hd, g->w.cos_tab, g->w.sin_tab,
                                         NULL, 0, g->st));
        FAILS(g, alrd_gpu_append_prefill(&y->vs, b, g->buf.qkv, y->nqkv, qd + y->dk, p0, T, g->hd, g->w.cos_tab,
                                         g->w.sin_tab, NULL, 0, g->st));
    }
    post_attn(g, y, T);
}

/* One decode layer for all n_seq rows (the cache append included). */
static void layer_decode(alrd_gpu *g, int l) {
    glayer *y = &g->ly[l];
    const int qd = g->qd, B = g->o.n_seq;
    norm_lin(g, 0, B, y->nqkv, y->w.attn_norm, y->w.qkv, g->buf.qkv);
    if (g->knobs.fuse_append) {
        FAILS(g, alrd_gpu_qkv_append_decode(g->buf.qkv, B, y->nqkv, g->nh, g->hd, y->dk, y->w.bq, y->w.bk_full,
                                            y->w.bv_full, g->seq.d_pos, g->w.cos_tab, g->w.sin_tab, g->buf.q16, &y->ks,
                                            &y->vs, g->knobs.pdl, g->st));
    } else {
        FAILS(g,
              alrd_gpu_qkv_post(g->buf.qkv, B, y->nqkv, g->nh, g->hd, y->dk, y->dv, y->w.bq, y->w.bk_full, y->w.bv_full,
                                g->seq.d_pos, 0, g->w.cos_tab, g->w.sin_tab, g->buf.q16, NULL, NULL, 0, 0, g->knobs.pdl,
                                g->st));
        FAILS(g, alrd_gpu_append_decode(&y->ks, &y->vs, g->buf.qkv, y->nqkv, qd, qd + y->dk, B, g->seq.d_pos, g->hd,
                                        g->w.cos_tab, g->w.sin_tab, g->knobs.pdl, g->st));
    }
    if (g->attn == ALRD_GPU_ATTN_FUSED && y->fused_ok) {
        FAILS(g, alrd_gpu_attn_decode(&y->al, g->buf.q16, g->seq.d_pos, B, y->nsplit, g->vw_max, g->buf.attn_work,
                                      y->vr ? g->buf.U16 : g->buf.att16, g->st));
    } else {
        for (int b = 0; b < B; b++) { /* reference path: materialise this sequence's cache */
            int n = g->seq.pos[b] + 1;
            if (y->kmode == ALRD_GPU_K_ROPED)
                FAILS(g, alrd_gpu_materialize(&y->ks, b, n, n, g->buf.Km16, g->kvd, g->st));
            else {
                FAILS(g, alrd_gpu_materialize(&y->ks, b, n, n, g->buf.Lk16, y->dk, g->st));
                build_keys(g, y, g->buf.Lk16, g->buf.Km16, 0, n);
            }
            FAILS(g, alrd_gpu_materialize(&y->vs, b, n, n, g->buf.Vm16, y->dv, g->st));
            attn_core(g, y, 1, n, n - 1, g->buf.q16 + (size_t)b * qd, g->buf.att16 + (size_t)b * qd, b, NULL, NULL, 0,
                      0, 0);
        }
    }
    post_attn(g, y, B);
}

/* Final norm + lm_head of `rows` rows of h starting at row r0 into logits. */
static void head(alrd_gpu *g, int r0, int rows) {
    norm_lin(g, r0, rows, g->nv, g->w.final_norm, g->w.lm_head, g->buf.logits);
}

static int check_tokens(const alrd_gpu *g, const int32_t *tokens, int n, alrd_error *err) {
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= g->nv)
            return alrd_errf(err, "gpu: token id %d out of range [0, %d)", tokens[i], g->nv);
    return 0;
}

extern "C" int alrd_gpu_prefill(alrd_gpu *g, int seq, const int32_t *tokens, int T, float *logits, int all_logits,
                                alrd_error *err) {
    if (seq < 0 || seq >= g->o.n_seq) return alrd_errf(err, "gpu: sequence %d out of range", seq);
    int p0 = g->seq.pos[seq];
    if (T <= 0 || T > g->o.max_batch || p0 + T > g->o.max_ctx)
        return alrd_errf(err, "gpu: prefill of %d tokens at %d exceeds batch %d / context %d", T, p0, g->o.max_batch,
                         g->o.max_ctx);
    if (check_tokens(g, tokens, T, err)) return -1;
    FAILS(g, cudaMemcpyAsync(g->buf.d_tok, tokens, sizeof(int32_t) * T, cudaMemcpyHostToDevice, g->st));
    FAILS(g, alrd_gpu_embed(g->w.embed, g->buf.d_tok, T, g->H, g->buf.h, g->st));
    for (int l = 0; l < g->L; l++) layer_prefill(g, l, seq, T, p0, MODE_PREFILL, 0);
    if (g->gram.sum) g->gram.rows += T;
    if (logits) {
        int rows = all_logits ? T : 1;
        head(g, all_logits ? 0 : T - 1, rows);
        FAILS(g, cudaMemcpyAsync(logits, g->buf.logits, sizeof(float) * rows * g->nv, cudaMemcpyDeviceToHost, g->st));
    }
    g->seq.pos[seq] = p0 + T;
    upload_pos(g);
    return alrd_gpu_sync(g, err);
}

extern "C" int alrd_gpu_gram_enable(alrd_gpu *g, alrd_error *err) {
    if (g->gram.sum) return 0;
    size_t HH = (size_t)g->H * g->H;
    if (dalloc(g, &g->gram.sum, sizeof(double) * HH * g->L, err, "calibration statistics") ||
        dalloc(g, &g->gram.x64, sizeof(double) * g->o.max_batch * g->H, err, "calibration statistics"))
        return -1;
    g->gram.rows = 0;
    return alrd_gpu_sync(g, err);
}

extern "C" int alrd_gpu_gram_read(alrd_gpu *g, int layer, double *out, long long *n_rows, alrd_error *err) {
    if (!g->gram.sum) return alrd_errf(err, "gpu: calibration statistics are not enabled");
    if (layer < 0 || layer >= g->L) return alrd_errf(err, "gpu: layer %d out of range", layer);
    size_t HH = (size_t)g->H * g->H;
    FAILS(g,
          cudaMemcpyAsync(out, g->gram.sum + (size_t)layer * HH, sizeof(double) * HH, cudaMemcpyDeviceToHost, g->st));
    if (n_rows) *n_rows = g->gram.rows;
    return alrd_gpu_sync(g, err);
}

static void decode_body(alrd_gpu *g) {
    const int B = g->o.n_seq;
    FAILS(g, alrd_gpu_embed(g->w.embed, g->buf.d_tok, B, g->H, g->buf.h, g->st));
    for (int l = 0; l < g->L; l++) layer_decode(g, l);
    head(g, 0, B);
    FAILS(g, alrd_gpu_pos_advance(g->seq.d_pos, B, g->knobs.pdl, g->st));
}

extern "C" int alrd_gpu_decode(alrd_gpu *g, const int32_t *tokens, float *logits, alrd_error *err) {
    const int B = g->o.n_seq;
    for (int b = 0; b < B; b++)
        if (g->seq.pos[b] + 1 > g->o.max_ctx)
            return alrd_errf(err, "gpu: sequence %d: context full (%d tokens)", b, g->o.max_ctx);
    if (check_tokens(g, tokens, B, err)) return -1;
    FAILS(g, cudaMemcpyAsync(g->buf.d_tok, tokens, sizeof(int32_t) * B, cudaMemcpyHostToDevice, g->st));
    int graphable = g->o.graph && g->attn == ALRD_GPU_ATTN_FUSED && g->fused_all;
    if (graphable && g->seq.graph_state == 1 && !g->fail) { /* capture the second step; the first warmed cuBLAS up */
        cudaGraph_t graph = NULL;
        cudaError_t e = cudaStreamBeginCapture(g->st, cudaStreamCaptureModeThreadLocal);
        if (e == cudaSuccess) {
            decode_body(g);
            e = cudaStreamEndCapture(g->st, &graph);
        }
        if (e == cudaSuccess && !g->fail) e = cudaGraphInstantiate(&g->seq.gexec, graph, 0);
        if (graph) cudaGraphDestroy(graph);
        if (e != cudaSuccess || g->fail)
            return cuerr(err, "decode graph capture", e != cudaSuccess ? e : cudaErrorUnknown);
        g->seq.graph_state = 2;
    }
    if (graphable && g->seq.graph_state == 2) {
        FAILS(g, cudaGraphLaunch(g->seq.gexec, g->st));
    } else {
        decode_body(g);
        if (graphable) g->seq.graph_state = 1;
    }
    if (logits)
        FAILS(g, cudaMemcpyAsync(logits, g->buf.logits, sizeof(float) * B * g->nv, cudaMemcpyDeviceToHost, g->st));
    for (int b = 0; b < B; b++) g->seq.pos[b]++;
    return alrd_gpu_sync(g, err);
}

/* T tokens (host) through every layer in one pass from position 0, nothing cached (the score modes), then the
 * head over rows [first, T-1) (rows = -1: all T). h_in (host, may be NULL) gets each layer's input rows,
 * layer l at h_in + l * ld_layer. */
static void one_pass(alrd_gpu *g, const int32_t *tokens, int T, int mode, int first, int rows, float *h_in,
                     size_t ld_layer) {
    FAILS(g, cudaMemcpyAsync(g->buf.d_tok, tokens, sizeof(int32_t) * T, cudaMemcpyHostToDevice, g->st));
    FAILS(g, alrd_gpu_embed(g->w.embed, g->buf.d_tok, T, g->H, g->buf.h, g->st));
    for (int l = 0; l < g->L; l++) {
        if (h_in)
            FAILS(g, cudaMemcpyAsync(h_in + (size_t)l * ld_layer, g->buf.h, sizeof(float) * T * g->H,
                                     cudaMemcpyDeviceToHost, g->st));
        layer_prefill(g, l, 0, T, 0, mode, first);
    }
    head(g, rows < 0 ? 0 : first, rows < 0 ? T : rows);
}

extern "C" int alrd_gpu_score(alrd_gpu *g, const int32_t *tokens, int T, int first, int decode, double *nll,
                              alrd_error *err) {
    if (!g->o.score) return alrd_errf(err, "gpu: engine made without score buffers");
    if (T < 2 || T > g->o.max_batch || first < 0 || first >= T - 1)
        return alrd_errf(err, "gpu: score: %d tokens (first %d) out of range (batch %d)", T, first, g->o.max_batch);
    if (check_tokens(g, tokens, T, err)) return -1;
    g->seq.pos[0] = 0;
    upload_pos(g);
    const int rows = T - 1 - first;
    one_pass(g, tokens, T, decode ? MODE_SCORE_DECODE : MODE_SCORE, first, rows, NULL, 0);
    FAILS(g, cudaMemcpyAsync(g->buf.d_tgt, tokens + first + 1, sizeof(int32_t) * rows, cudaMemcpyHostToDevice, g->st));
    FAILS(g, alrd_gpu_nll(g->buf.logits, g->buf.d_tgt, rows, g->nv, g->buf.d_nll, g->st));
    FAILS(g, cudaMemcpyAsync(nll + first, g->buf.d_nll, sizeof(double) * rows, cudaMemcpyDeviceToHost, g->st));
    return alrd_gpu_sync(g, err);
}

extern "C" int alrd_gpu_set_kv_weight(alrd_gpu *g, int layer, int is_v, const float *w, alrd_error *err) {
    if (layer < 0 || layer >= g->L) return alrd_errf(err, "gpu: override: layer %d out of range", layer);
    glayer *y = &g->ly[layer];
    if (y->kr || y->vr) return alrd_errf(err, "gpu: override: layer %d is low-rank", layer);
    const size_t n = (size_t)g->kvd * g->H, i = 2 * (size_t)layer + (is_v != 0);
    uint16_t *dst = y->w.qkv + (size_t)(g->qd + (is_v ? y->dk : 0)) * g->H;
    if (!g->probe.orig) {
        g->probe.orig = (uint16_t **)calloc(2 * (size_t)g->L, sizeof(uint16_t *));
        g->probe.replaced = (int *)calloc(2 * (size_t)g->L, sizeof(int));
        if (!g->probe.orig || !g->probe.replaced) return alrd_errf(err, "gpu: out of host memory");
    }
    if (!w) { /* back to the original */
        if (g->probe.replaced[i])
            FAILS(g, cudaMemcpyAsync(dst, g->probe.orig[i], 2 * n, cudaMemcpyDeviceToDevice, g->st));
        g->probe.replaced[i] = 0;
        return alrd_gpu_sync(g, err);
    }
    if ((!g->probe.staging && dalloc(g, &g->probe.staging, 4 * n, err, "probe")) ||
        (!g->probe.orig[i] && dalloc(g, &g->probe.orig[i], 2 * n, err, "probe")))
        return -1;
    if (!g->probe.replaced[i])
        FAILS(g, cudaMemcpyAsync(g->probe.orig[i], dst, 2 * n, cudaMemcpyDeviceToDevice, g->st));
    g->probe.replaced[i] = 1;
    FAILS(g, upload_f16(g, dst, w, n, g->probe.staging));
    return alrd_gpu_sync(g, err); /* w is the caller's again */
}

extern "C" int alrd_gpu_probe(alrd_gpu *g, const int32_t *tokens, int n_seq, int S, int set_base, float *base_lp,
                              float *h_in, double *kl, double *ce, alrd_error *err) {
    if (n_seq < 1 || S < 2 || S > g->o.max_batch || S > g->o.max_ctx)
        return alrd_errf(err, "gpu: probe of %d x %d tokens exceeds batch %d / context %d", n_seq, S, g->o.max_batch,
                         g->o.max_ctx);
    const size_t P = (size_t)n_seq * S, V = (size_t)g->nv, H = (size_t)g->H;
    if (set_base && g->probe.rows) return alrd_errf(err, "gpu: the probe's base is set (%zu rows)", g->probe.rows);
    if (!set_base && (g->probe.rows != P || memcmp(tokens, g->probe.tokens, sizeof(int32_t) * P)))
        return alrd_errf(err, "gpu: probe of %zu tokens that are not the base's (%zu)", P, g->probe.rows);
    if (check_tokens(g, tokens, (int)P, err)) return -1;
    if (set_base) {
        if (dalloc(g, &g->probe.base, 4 * P * V, err, "probe log-probs") ||
            dalloc(g, &g->probe.kl, 8 * P, err, "probe") || dalloc(g, &g->probe.ce, 8 * P, err, "probe") ||
            dalloc(g, &g->probe.tgt, 4 * P, err, "probe"))
            return -1;
        int32_t *tgt = (int32_t *)malloc(sizeof(int32_t) * P); /* each sequence's next tokens, -1 after its last */
        g->probe.tokens = (int32_t *)malloc(sizeof(int32_t) * P);
        if (!tgt || !g->probe.tokens) {
            free(tgt);
            return alrd_errf(err, "gpu: out of host memory");
        }
        for (size_t j = 0; j < P; j++) tgt[j] = (j + 1) % S ? tokens[j + 1] : -1;
        memcpy(g->probe.tokens, tokens, sizeof(int32_t) * P);
        FAILS(g, cudaMemcpyAsync(g->probe.tgt, tgt, sizeof(int32_t) * P, cudaMemcpyHostToDevice, g->st));
        int rc = alrd_gpu_sync(g, err);
        free(tgt);
        if (rc) return -1;
        g->probe.rows = P;
    }
    double *row = (double *)malloc(sizeof(double) * 2 * P); /* per-row KL, then per-row CE */
    if (!row) return alrd_errf(err, "gpu: out of host memory");
    for (int s = 0; s < n_seq; s++) {
        const size_t r0 = (size_t)s * S;
        one_pass(g, tokens + r0, S, MODE_SCORE, 0, -1, h_in ? h_in + r0 * H : NULL, P * H);
        FAILS(g, alrd_gpu_probe_rows(g->buf.logits, g->probe.tgt + r0, S, g->nv, g->probe.base + r0 * V, set_base,
                                     g->probe.kl + r0, g->probe.ce + r0, g->st));
    }
    if (set_base && base_lp)
        FAILS(g, cudaMemcpyAsync(base_lp, g->probe.base, 4 * P * V, cudaMemcpyDeviceToHost, g->st));
    FAILS(g, cudaMemcpyAsync(row, g->probe.kl, sizeof(double) * P, cudaMemcpyDeviceToHost, g->st));
    FAILS(g, cudaMemcpyAsync(row + P, g->probe.ce, sizeof(double) * P, cudaMemcpyDeviceToHost, g->st));
    const int rc = alrd_gpu_sync(g, err);
    double skl = 0, sce = 0;
    for (size_t j = 0; j < P; j++) skl += row[j], sce += row[P + j];
    free(row);
    if (rc) return -1;
    if (kl) *kl = skl / (double)P;
    if (ce) *ce = sce / (double)(P - n_seq);
    return 0;
}

extern "C" int alrd_gpu_fill_random(alrd_gpu *g, int seq, int n, uint64_t seed, alrd_error *err) {
    if (seq < 0 || seq >= g->o.n_seq || n < 0 || n > g->o.max_ctx)
        return alrd_errf(err, "gpu: fill: sequence %d / %d tokens out of range", seq, n);
    uint64_t sd = seed * 1000003u + (uint64_t)seq;
    for (int l = 0; l < g->L; l++) {
        alrd_gpu_side *ss[2] = {&g->ly[l].ks, &g->ly[l].vs};
        for (int i = 0; i < 2; i++) {
            alrd_gpu_side *s = ss[i];
            if (s->bits == 16) {
                FAILS(g, alrd_gpu_fill_f16(s->rows + (size_t)seq * s->seq_rows, s->seq_rows, 1.0f, 0.0f, ++sd, g->st));
                continue;
            }
            FAILS(g, alrd_gpu_fill_u32(s->codes + (size_t)seq * s->seq_words, s->seq_words, ++sd, g->st));
            FAILS(g,
                  alrd_gpu_fill_f16(s->scales + (size_t)seq * s->seq_groups, s->seq_groups, 0.01f, 0.02f, ++sd, g->st));
            FAILS(g,
                  alrd_gpu_fill_f16(s->zeros + (size_t)seq * s->seq_groups, s->seq_groups, 0.25f, -0.25f, ++sd, g->st));
            FAILS(g, alrd_gpu_fill_f16(s->ring + (size_t)seq * s->seq_ring, s->seq_ring, 1.0f, 0.0f, ++sd, g->st));
        }
    }
    g->seq.pos[seq] = n;
    upload_pos(g);
    return alrd_gpu_sync(g, err);
}

extern "C" int alrd_gpu_get_info(const alrd_gpu *g, alrd_gpu_info *out) {
    memset(out, 0, sizeof *out);
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return -1;
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, dev) != cudaSuccess) return -1;
    snprintf(out->name, sizeof out->name, "%.127s", p.name);
    int clk = 0, bus = 0;
    cudaDeviceGetAttribute(&clk, cudaDevAttrMemoryClockRate, dev);
    cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, dev);
    out->peak_bw = 2.0 * clk * 1000.0 * bus / 8.0;
    cudaMemGetInfo(&out->free_mem, &out->total_mem);
    out->sm_count = p.multiProcessorCount;
    if (g) {
        out->engine_bytes = g->dev_bytes;
        out->weight_bytes = g->w.bytes;
    }
    return 0;
}

extern "C" size_t alrd_gpu_step_bytes(const alrd_gpu *g) {
    size_t w = 0, H = g->H;
    for (int l = 0; l < g->L; l++) {
        const glayer *y = &g->ly[l];
        w += 2 * ((size_t)y->nqkv * H + H * y->wo_k + 3 * (size_t)g->ffn * H); /* o_proj: A_v folded in */
        if (y->kr) w += 2 * (size_t)g->n_groups * g->gh * y->kr;
    }
    w += 2 * (size_t)g->nv * H; /* lm_head */
    for (int b = 0; b < g->o.n_seq; b++) w += alrd_gpu_cache_bytes(g, b);
    return w;
}
