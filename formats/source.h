/* source: a model as a checkpoint describes it, independent of the file
 * format: the config, named tensors in HF naming and layout (mapped, typed),
 * and the tokenizer description. Opened from a GGUF file, a Hugging Face
 * directory (config.json + safetensors + tokenizer.json) or a .alrd file. */
#ifndef ALRD_SOURCE_H
#define ALRD_SOURCE_H

#include "io.h"
#include "tensor.h"
#include "vocab.h"
#include "lowrank.h"

typedef struct {
    char arch[32];        /* "llama", "qwen2", ... */
    int n_layers;
    int hidden;           /* hidden_size */
    int n_heads;
    int n_kv_heads;
    int head_dim;         /* hidden / n_heads unless the config says otherwise */
    int ffn;              /* intermediate_size */
    int vocab_size;
    int max_ctx;          /* max_position_embeddings */
    float rms_eps;
    float rope_theta;
    /* rope_scaling, type llama3 (rope_llama3 = 1) */
    int rope_llama3;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_ctx;
    int tie_embeddings;   /* lm_head shares model.embed_tokens.weight */
    int attention_bias;   /* q/k/v/o have biases */
    int mlp_bias;
} alrd_config;

/* HF tensor names used everywhere downstream:
 *   model.embed_tokens.weight, model.norm.weight, lm_head.weight (absent when tied),
 *   model.layers.N.input_layernorm.weight, model.layers.N.post_attention_layernorm.weight,
 *   model.layers.N.self_attn.{q,k,v,o}_proj.{weight,bias},
 *   model.layers.N.mlp.{gate,up,down}_proj.weight */
typedef struct alrd_source alrd_source;
struct alrd_source {
    char path[1024];
    int format;               /* ALRD_SRC_GGUF / ALRD_SRC_HF / ALRD_SRC_ALRD */
    alrd_config config;
    int n_tensors;
    alrd_tensor *tensors;     /* owned array; data points into mappings owned by impl */
    alrd_vocab vocab;         /* owned */
    alrd_lowrank *lowrank;    /* .alrd only: decomposition + cache defaults, owned; NULL otherwise */
    void *impl;               /* format-specific state (mappings), owned */
    void (*close_impl)(alrd_source *);
};

enum { ALRD_SRC_GGUF = 1, ALRD_SRC_HF = 2, ALRD_SRC_ALRD = 3 };

/* Detects the format from the path (directory -> HF, magic "GGUF" -> GGUF,
 * magic "ALRD" -> .alrd) and opens it. */
int alrd_source_open(alrd_source *s, const char *path, alrd_error *err);
void alrd_source_close(alrd_source *s);
/* NULL if absent. */
const alrd_tensor *alrd_source_tensor(const alrd_source *s, const char *name);
/* Like alrd_source_tensor but errors (naming the file and tensor) if absent
 * or if its shape differs from the expected rows x cols (cols = 0 for 1-D). */
int alrd_source_expect(const alrd_source *s, const char *name, int64_t rows, int64_t cols,
                       const alrd_tensor **out, alrd_error *err);

/* Format-specific openers, used by alrd_source_open. */
int alrd_source_open_gguf(alrd_source *s, const char *path, alrd_error *err);
int alrd_source_open_hf(alrd_source *s, const char *dir, alrd_error *err);
int alrd_source_open_alrd(alrd_source *s, const char *path, alrd_error *err);

/* Validates a filled config: positive dims, head math consistent, sane
 * upper bounds (rejects absurd sizes before anything is allocated). */
int alrd_config_validate(const alrd_config *c, const char *path, alrd_error *err);

#endif
