/* hf: the Hugging Face checkpoint side files -- config.json <-> alrd_config,
 * tokenizer.json (+ tokenizer_config.json) <-> alrd_vocab, and
 * generation_config.json. Errors name the file and the JSON field. */
#ifndef ALRD_HF_H
#define ALRD_HF_H

#include <stddef.h>
#include <stdint.h>
#include "io.h"
#include "source.h"
#include "vocab.h"

/* Largest JSON side file read (tokenizer.json of a 256k vocab is ~20 MB). */
#define ALRD_HF_MAX_JSON (256u << 20)
/* Largest token id accepted from tokenizer.json. */
#define ALRD_HF_MAX_TOKENS (1 << 22)

/* config.json -> c. Accepts model_type llama, mistral and qwen2;
 * rope_scaling of rope_type/type "llama3" (others are an error).
 * Defaults as transformers' LlamaConfig: num_key_value_heads = heads,
 * head_dim = hidden / heads, rope_theta 10000, rms_norm_eps 1e-6,
 * max_position_embeddings 2048, tie_word_embeddings / attention_bias /
 * mlp_bias false (qwen2: attention_bias true, q/k/v carry biases).
 * Refused, as the forward pass does not compute them: a sliding window
 * shorter than max_position_embeddings on any layer transformers gives one
 * (mistral: all; qwen2: with use_sliding_window, the "sliding_attention"
 * entries of layer_types, else layers >= max_window_layers), mlp_bias
 * true, hidden_act other than silu.
 * path names the file in errors. */
int alrd_hf_config_parse(alrd_config *c, const char *json, size_t len, const char *path,
                         alrd_error *err);
int alrd_hf_config_read(alrd_config *c, const char *path, alrd_error *err);

/* Writes a LlamaForCausalLM config.json (arch must be "llama").
 * torch_dtype: "float32", "float16" or "bfloat16". v (may be NULL) gives
 * bos_token_id / eos_token_id. */
int alrd_hf_config_write(const alrd_config *c, const alrd_vocab *v, const char *torch_dtype,
                         const char *path, alrd_error *err);

/* generation_config.json with bos/eos/pad ids from v. */
int alrd_hf_generation_config_write(const alrd_vocab *v, const char *path, alrd_error *err);

/* tokenizer.json -> v. Reads tokenizer_config.json (bos/eos/unk/pad tokens,
 * add_bos_token/add_eos_token, chat_template) and chat_template.jinja from
 * the same directory when present. Supported: model.type BPE with a
 * byte-level pre-tokenizer (kind BPE_BYTES; pre "gpt-2" for plain
 * ByteLevel, "smollm" for Digits(individual) + ByteLevel, "llama-bpe" and
 * "qwen2" for their Split regex + ByteLevel -- the names llama.cpp's GGUF
 * files use), and BPE with byte_fallback + the U+2581 space replacement
 * (kind SPM, pre "default"; scores = -(rank of the first merge producing
 * the token), -1e9 for tokens no merge produces). Ids missing from the
 * file become "[PADn]" tokens of type UNUSED. */
int alrd_hf_vocab_read(alrd_vocab *v, const char *tokenizer_json_path, alrd_error *err);

/* Writes tokenizer.json that Python `tokenizers` loads and that encodes as
 * v does. Accepts pre "smollm", "gpt-2"/"gpt2"/"default", "llama-bpe"/"llama3",
 * "qwen2" for BPE_BYTES. For SPM, merges are v's own when present, else
 * derived from the scores as transformers' SentencePieceExtractor does.
 * CONTROL/UNKNOWN tokens become special added tokens, USER_DEFINED ones
 * non-special added tokens; UNUSED "[PADn]" fillers are left out of
 * model.vocab (the reader recreates them for ids below the largest). */
int alrd_hf_tokenizer_write(const alrd_vocab *v, const char *path, alrd_error *err);

/* tokenizer_config.json (PreTrainedTokenizerFast, bos/eos/unk/pad tokens,
 * add_bos_token, add_eos_token, added_tokens_decoder, chat_template).
 * model_max_length 0 omits it. */
int alrd_hf_tokenizer_config_write(const alrd_vocab *v, int model_max_length, const char *path,
                                   alrd_error *err);

#endif
