/* tokenizer: GPT-2 byte-level BPE (SmolLM2, Llama-3, Qwen2 pre-tokenizers)
 * and SentencePiece-style BPE with byte fallback (Llama-2, TinyLlama),
 * built from an alrd_vocab. Encoding matches llama.cpp / HF tokenizers. */
#ifndef ALRD_TOKENIZER_H
#define ALRD_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include "../formats/io.h"
#include "../formats/vocab.h"

typedef struct alrd_tokenizer alrd_tokenizer;

/* Builds a tokenizer; copies what it needs from v (v may be freed after). */
int alrd_tokenizer_new(alrd_tokenizer **out, const alrd_vocab *v, alrd_error *err);
void alrd_tokenizer_free(alrd_tokenizer *t);

/* Encodes len bytes of UTF-8 text. add_bos: prepend BOS when the vocab says
 * so (add_bos flag) -- pass 1 to honour the vocab, 0 never. parse_special:
 * control/user-defined token strings in text (e.g. "<|im_start|>") become
 * their ids. Invalid UTF-8 is an error naming the byte offset.
 * *ids is malloc'd (caller frees), *n_ids its length. */
int alrd_tokenizer_encode(const alrd_tokenizer *t, const char *text, size_t len, int add_bos,
                          int parse_special, int32_t **ids, size_t *n_ids, alrd_error *err);

/* Bytes of one token as text (byte-level and byte-fallback tokens mapped
 * back to raw bytes; SPM U+2581 -> space). Writes up to cap bytes into
 * buf, returns the byte length, or -1 for an invalid id. Control tokens
 * decode to their literal text only when render_special != 0, else to "". */
int alrd_tokenizer_piece(const alrd_tokenizer *t, int32_t id, int render_special, char *buf,
                         size_t cap);

/* Decodes a sequence to a malloc'd NUL-terminated string (caller frees).
 * For SPM, the leading space added by add_space_prefix is removed. */
int alrd_tokenizer_decode(const alrd_tokenizer *t, const int32_t *ids, size_t n,
                          int render_special, char **out, alrd_error *err);

int32_t alrd_tokenizer_bos(const alrd_tokenizer *t);
int32_t alrd_tokenizer_eos(const alrd_tokenizer *t);
int alrd_tokenizer_add_bos(const alrd_tokenizer *t);
int32_t alrd_tokenizer_n_vocab(const alrd_tokenizer *t);
/* id of an exact token string, -1 if absent */
int32_t alrd_tokenizer_find(const alrd_tokenizer *t, const char *token);
/* Is id an end-of-generation token (eos, <|im_end|>, <|eot_id|>, </s>) */
int alrd_tokenizer_is_eog(const alrd_tokenizer *t, int32_t id);

/* Chat templates: formats one user message (and optional system message)
 * with the template family the vocab's chat_template belongs to (ChatML
 * "<|im_start|>" or Llama-2 "[INST]"), generation prompt appended.
 * Returns a malloc'd string, or NULL with err set if the template is not
 * one of the known families. */
char *alrd_chat_format(const alrd_vocab *v, const char *system, const char *user, alrd_error *err);

#endif
