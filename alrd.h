/* alrd.h: the public interface of libalrd.
 *
 * Load a model (GGUF, Hugging Face directory or .alrd file), make a context
 * with cache options (KIVI bits, group, residual window; CPU or GPU), run a
 * prefill and decode steps, sample, and score perplexity. The example in
 * examples/generate.c is the whole loop:
 *
 *     alrd_model m;  alrd_error err;
 *     alrd_model_open(&m, "model.alrd", &err);          // weights mmapped
 *     alrd_cache_opts o;  alrd_cache_opts_default(&m, &o);
 *     o.k_bits = o.v_bits = 4;  o.backend = ALRD_BACKEND_AUTO;
 *     alrd_ctx *c;  alrd_ctx_new(&c, &m, 4096, 512, &o, &err);
 *     alrd_tokenizer_encode(m.tok, text, len, 1, 0, &ids, &n, &err);
 *     alrd_ctx_forward(c, ids, n, logits, 0, &err);      // prefill
 *     next = alrd_argmax(logits, m.cfg.vocab_size);      // then one token at a time
 *
 * Every call that can fail returns non-zero and fills alrd_error with a
 * one-line message naming the file and field. Installed by `make install`
 * as PREFIX/include/alrd/alrd.h next to the module headers it includes;
 * compile and link with `pkg-config --cflags --libs --static alrd`.
 *
 * The tools in tools/ are programs on this header too. A tool that needs an
 * internal module on purpose (the compressor's calibration pipeline, a file
 * format's own reader or writer, the GPU engine) includes it with a comment
 * saying why. */
#ifndef ALRD_H
#define ALRD_H

#define ALRD_VERSION "0.9.0"

#include "formats/io.h"         /* alrd_error; atomic output files (alrd_outfile_*) */
#include "formats/source.h"     /* alrd_source_*: a checkpoint's config, tensors and vocabulary, not loaded */
#include "runtime/model.h"      /* alrd_model_open / _load / _free, alrd_model_layer */
#include "runtime/context.h"    /* alrd_ctx_*, alrd_cache_opts */
#include "runtime/perplexity.h" /* alrd_perplexity_tokens */
#include "runtime/sampler.h"    /* alrd_sampler_*, alrd_argmax */
#include "runtime/tokenizer.h"  /* alrd_tokenizer_encode / decode / piece, alrd_chat_format */

#endif
