/* tinymodel: writes a small llama-architecture GGUF model (all F32) with a
 * complete GPT-2 byte-level vocabulary, for tests that run the real tools
 * end to end in a fraction of a second (test_faults, test_numerics).
 * Weights come from a fixed LCG, so the same options give the same bytes;
 * one element of one tensor can be replaced (NaN/Inf poisoning). */
#ifndef ALRD_TINYMODEL_H
#define ALRD_TINYMODEL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int n_layers, hidden, n_heads, n_kv_heads, ffn, ctx;
    const char *poison_tensor; /* GGUF tensor name, or NULL */
    long poison_index;         /* first element replaced in it */
    long poison_count;         /* how many consecutive elements (0: one) */
    float poison_value;
    int qkv_bias;              /* 1: q/k/v projections with biases (as Qwen2 has) */
    const float *rope_freqs;   /* n_rope_freqs values of a rope_freqs.weight tensor (llama3 scaling), or NULL */
    int n_rope_freqs;
} tiny_opts;

static inline tiny_opts tiny_defaults(void) {
    tiny_opts o = {2, 64, 4, 2, 128, 512, NULL, 0, 0, 0, 0, NULL, 0};
    return o;
}

typedef struct {
    uint8_t *p;
    size_t n, cap;
} tiny_buf;

static inline void tb_put(tiny_buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static inline void tb_u32(tiny_buf *b, uint32_t v) { tb_put(b, &v, 4); }
static inline void tb_u64(tiny_buf *b, uint64_t v) { tb_put(b, &v, 8); }
static inline void tb_str(tiny_buf *b, const char *s) {
    tb_u64(b, strlen(s));
    tb_put(b, s, strlen(s));
}
static inline void tb_kv_u32(tiny_buf *b, const char *k, uint32_t v) {
    tb_str(b, k); tb_u32(b, 4); tb_u32(b, v);
}
static inline void tb_kv_f32(tiny_buf *b, const char *k, float v) {
    tb_str(b, k); tb_u32(b, 6); tb_put(b, &v, 4);
}
static inline void tb_kv_str(tiny_buf *b, const char *k, const char *v) {
    tb_str(b, k); tb_u32(b, 8); tb_str(b, v);
}

/* GPT-2's printable stand-in for byte x, UTF-8 encoded into out. */
static inline void tiny_byte_char(int x, char out[4]) {
    int cp;
    if ((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF)) {
        cp = x;
    } else {
        int k = 0; /* rank of x among the bytes that get remapped */
        for (int y = 0; y < x; y++)
            if (!((y >= '!' && y <= '~') || (y >= 0xA1 && y <= 0xAC) || (y >= 0xAE && y <= 0xFF))) k++;
        cp = 256 + k;
    }
    if (cp < 0x80) { out[0] = (char)cp; out[1] = 0; }
    else { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); out[2] = 0; }
}

/* Merges producing "the", " the", "and", " and" so ordinary text gets
 * multi-byte tokens; eos "<|endoftext|>" (control). */
static const char *const TINY_MERGES[] = {"t h", "th e", "\xc4\xa0 the", "a n", "an d", "\xc4\xa0 and"};
#define TINY_N_MERGES 6
#define TINY_VOCAB (256 + TINY_N_MERGES + 1)

static inline uint32_t tiny_lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*s >> 33);
}

/* Writes the model; returns 0, or -1 if the file cannot be written. */
static inline int tiny_model_write(const char *path, const tiny_opts *o) {
    const int H = o->hidden, hd = o->hidden / o->n_heads, q = o->n_heads * hd, kv = o->n_kv_heads * hd;
    tiny_buf b = {0};
    char names[3 + 12 * 8][64];
    uint64_t shapes[3 + 12 * 8][2]; /* rows, cols (cols 0: 1-D) */
    int nt = 0;
#define TINY_T(nm, r, c) (snprintf(names[nt], 64, "%s", nm), shapes[nt][0] = (r), shapes[nt][1] = (c), nt++)
    TINY_T("token_embd.weight", TINY_VOCAB, H);
    TINY_T("output_norm.weight", H, 0);
    if (o->rope_freqs) TINY_T("rope_freqs.weight", o->n_rope_freqs, 0);
    int n_tensors = 2 + (o->rope_freqs ? 1 : 0) + (o->qkv_bias ? 12 : 9) * o->n_layers;
    tb_put(&b, "GGUF", 4);
    tb_u32(&b, 3);
    tb_u64(&b, (uint64_t)n_tensors);
    tb_u64(&b, 15);
    tb_kv_str(&b, "general.architecture", "llama");
    tb_kv_u32(&b, "llama.block_count", (uint32_t)o->n_layers);
    tb_kv_u32(&b, "llama.context_length", (uint32_t)o->ctx);
    tb_kv_u32(&b, "llama.embedding_length", (uint32_t)H);
    tb_kv_u32(&b, "llama.feed_forward_length", (uint32_t)o->ffn);
    tb_kv_u32(&b, "llama.attention.head_count", (uint32_t)o->n_heads);
    tb_kv_u32(&b, "llama.attention.head_count_kv", (uint32_t)o->n_kv_heads);
    tb_kv_f32(&b, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    tb_kv_f32(&b, "llama.rope.freq_base", 10000.0f);
    tb_kv_str(&b, "tokenizer.ggml.model", "gpt2");
    tb_kv_str(&b, "tokenizer.ggml.pre", "gpt2");
    /* tokens */
    tb_str(&b, "tokenizer.ggml.tokens");
    tb_u32(&b, 9); tb_u32(&b, 8); tb_u64(&b, TINY_VOCAB);
    for (int x = 0; x < 256; x++) {
        char c[4];
        tiny_byte_char(x, c);
        tb_str(&b, c);
    }
    for (int i = 0; i < TINY_N_MERGES; i++) {
        char m[32];
        const char *sp = strchr(TINY_MERGES[i], ' ');
        snprintf(m, sizeof m, "%.*s%s", (int)(sp - TINY_MERGES[i]), TINY_MERGES[i], sp + 1);
        tb_str(&b, m);
    }
    tb_str(&b, "<|endoftext|>");
    tb_str(&b, "tokenizer.ggml.token_type");
    tb_u32(&b, 9); tb_u32(&b, 5); tb_u64(&b, TINY_VOCAB);
    for (int i = 0; i < TINY_VOCAB; i++) tb_u32(&b, i == TINY_VOCAB - 1 ? 3 : 1);
    tb_str(&b, "tokenizer.ggml.merges");
    tb_u32(&b, 9); tb_u32(&b, 8); tb_u64(&b, TINY_N_MERGES);
    for (int i = 0; i < TINY_N_MERGES; i++) tb_str(&b, TINY_MERGES[i]);
    tb_kv_u32(&b, "tokenizer.ggml.eos_token_id", TINY_VOCAB - 1);

    /* tensor directory, then data (32-aligned) */
    uint64_t off = 0;
    uint64_t offs[3 + 12 * 8];
    if (o->n_layers < 1 || o->n_layers > 8) return -1;
    for (int l = 0; l < o->n_layers; l++) {
        char n[64];
#define TINY_L(s, r, c) (snprintf(n, sizeof n, "blk.%d." s, l), TINY_T(n, r, c))
        TINY_L("attn_norm.weight", H, 0);
        TINY_L("ffn_norm.weight", H, 0);
        TINY_L("attn_q.weight", q, H);
        TINY_L("attn_k.weight", kv, H);
        TINY_L("attn_v.weight", kv, H);
        if (o->qkv_bias) {
            TINY_L("attn_q.bias", q, 0);
            TINY_L("attn_k.bias", kv, 0);
            TINY_L("attn_v.bias", kv, 0);
        }
        TINY_L("attn_output.weight", H, q);
        TINY_L("ffn_gate.weight", o->ffn, H);
        TINY_L("ffn_up.weight", o->ffn, H);
        TINY_L("ffn_down.weight", H, o->ffn);
#undef TINY_L
    }
    for (int i = 0; i < nt; i++) {
        int nd = shapes[i][1] ? 2 : 1;
        tb_str(&b, names[i]);
        tb_u32(&b, (uint32_t)nd);
        if (nd == 2) { tb_u64(&b, shapes[i][1]); tb_u64(&b, shapes[i][0]); }
        else tb_u64(&b, shapes[i][0]);
        tb_u32(&b, 0); /* F32 */
        tb_u64(&b, off);
        offs[i] = off;
        uint64_t bytes = shapes[i][0] * (shapes[i][1] ? shapes[i][1] : 1) * 4;
        off += (bytes + 31) / 32 * 32;
    }
    while (b.n % 32) tb_put(&b, "", 1);
    size_t data0 = b.n;
    uint64_t seed = 12345;
    for (int i = 0; i < nt; i++) {
        while (b.n < data0 + offs[i]) tb_put(&b, "", 1);
        uint64_t numel = shapes[i][0] * (shapes[i][1] ? shapes[i][1] : 1);
        const int bias = strstr(names[i], ".bias") != NULL, norm = shapes[i][1] == 0 && !bias;
        /* scale ~ 1/sqrt(fan_in) keeps activations O(1) through the layers; biases of about a weight row's size */
        float scale = norm ? 0 : bias ? 0.8f : 1.7f / sqrtf((float)shapes[i][1]);
        for (uint64_t k = 0; k < numel; k++) {
            float v = norm ? 1.0f : ((float)(tiny_lcg(&seed) % 20001) / 10000.0f - 1.0f) * scale;
            if (!strcmp(names[i], "rope_freqs.weight")) v = o->rope_freqs[k];
            if (o->poison_tensor && !strcmp(o->poison_tensor, names[i]) && (long)k >= o->poison_index &&
                (long)k < o->poison_index + (o->poison_count > 0 ? o->poison_count : 1))
                v = o->poison_value;
            tb_put(&b, &v, 4);
        }
    }
#undef TINY_T
    FILE *f = fopen(path, "wb");
    int rc = -1;
    if (f) {
        rc = fwrite(b.p, 1, b.n, f) == b.n ? 0 : -1;
        if (fclose(f) != 0) rc = -1;
    }
    free(b.p);
    return rc;
}

#endif
