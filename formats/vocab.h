/* vocab: the plain description of a tokenizer as files carry it (GGUF
 * tokenizer.ggml.* keys, tokenizer.json, the .alrd tokenizer section).
 * runtime/tokenizer builds the working tokenizer from it. */
#ifndef ALRD_VOCAB_H
#define ALRD_VOCAB_H

#include <stdint.h>

typedef enum {
    ALRD_VOCAB_BPE_BYTES = 1, /* GPT-2 byte-level BPE ("gpt2") */
    ALRD_VOCAB_SPM = 2        /* SentencePiece-style BPE with byte fallback ("llama") */
} alrd_vocab_kind;

/* Token types, GGUF's numbering. */
enum {
    ALRD_TOKEN_NORMAL = 1, ALRD_TOKEN_UNKNOWN = 2, ALRD_TOKEN_CONTROL = 3,
    ALRD_TOKEN_USER_DEFINED = 4, ALRD_TOKEN_UNUSED = 5, ALRD_TOKEN_BYTE = 6
};

typedef struct {
    alrd_vocab_kind kind;
    char pre[64];          /* pre-tokenizer name: "smollm", "gpt2", "llama3", "default", ... */
    int32_t n_tokens;
    char **tokens;         /* n_tokens NUL-terminated strings (as stored: GPT-2 byte chars / SPM U+2581) */
    float *scores;         /* n_tokens, may be NULL (BPE) */
    int32_t *types;        /* n_tokens, ALRD_TOKEN_* ; may be NULL (all NORMAL) */
    int32_t n_merges;
    char **merges;         /* "left right", rank = index; BPE only */
    int32_t bos_id, eos_id, unk_id, pad_id; /* -1 when absent */
    int add_bos, add_eos, add_space_prefix;
    char *chat_template;   /* Jinja source or NULL */
} alrd_vocab;

/* Frees every owned array and string; leaves v zeroed. */
void alrd_vocab_free(alrd_vocab *v);
/* Deep copy. Returns -1 on allocation failure. */
int alrd_vocab_copy(alrd_vocab *dst, const alrd_vocab *src);

#endif
