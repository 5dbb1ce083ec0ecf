/* hf: config.json parsing (llama3 rope_scaling, head_dim, biases, defaults)
 * and writing, tokenizer.json <-> alrd_vocab round trips (byte-level BPE and
 * SPM, synthetic and the real vocabularies), hand-written HF files, bad
 * input naming file + field, the HF directory source, and alrd-convert on
 * the real model. */
#include "testutil.h"

#include <sys/stat.h>
#include <sys/wait.h>

#include "../formats/gguf.h"
#include "../formats/hf.h"
#include "../formats/safetensors.h"
#include "../formats/source.h"
#include "../runtime/tokenizer.h"

static void write_text(const char *path, const char *s) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

/* A fresh directory under the test tmpdir. */
static void mkdir_in(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", alrd_test_tmpdir(), name);
    mkdir(buf, 0755);
}

static void expect_msg(const alrd_error *err, const char *a, const char *b) {
    if (!strstr(err->msg, a) || (b && !strstr(err->msg, b)))
        fail_msg("error '%s' lacks '%s' / '%s'", err->msg, a, b ? b : "");
}

/* ------------------------------------------------------------ config */

static const char LLAMA3_CONFIG[] =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": true, \"bos_token_id\": 128000,"
    " \"eos_token_id\": [128001, 128008], \"head_dim\": 96, \"hidden_act\": \"silu\","
    " \"hidden_size\": 3072, \"intermediate_size\": 8192, \"max_position_embeddings\": 131072,"
    " \"mlp_bias\": false, \"model_type\": \"llama\", \"num_attention_heads\": 24,"
    " \"num_hidden_layers\": 28, \"num_key_value_heads\": 8, \"rms_norm_eps\": 1e-05,"
    " \"rope_scaling\": {\"factor\": 32.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0,"
    " \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"},"
    " \"rope_theta\": 500000.0, \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\","
    " \"vocab_size\": 128256}";

static void test_config_llama3(void **state) {
    (void)state;
    alrd_config c;
    alrd_error err = {{0}};
    assert_int_equal(alrd_hf_config_parse(&c, LLAMA3_CONFIG, sizeof LLAMA3_CONFIG - 1, "x/config.json", &err), 0);
    assert_string_equal(c.arch, "llama");
    assert_int_equal(c.n_layers, 28);
    assert_int_equal(c.hidden, 3072);
    assert_int_equal(c.n_heads, 24);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.head_dim, 96); /* given, though hidden/heads = 128 */
    assert_int_equal(c.ffn, 8192);
    assert_int_equal(c.vocab_size, 128256);
    assert_int_equal(c.max_ctx, 131072);
    assert_true(c.rms_eps == 1e-5f);
    assert_true(c.rope_theta == 500000.0f);
    assert_int_equal(c.rope_llama3, 1);
    assert_true(c.rope_factor == 32.0f);
    assert_true(c.rope_low_freq_factor == 1.0f);
    assert_true(c.rope_high_freq_factor == 4.0f);
    assert_int_equal(c.rope_orig_ctx, 8192);
    assert_int_equal(c.tie_embeddings, 1);
    assert_int_equal(c.attention_bias, 1);
    assert_int_equal(c.mlp_bias, 0);
}

static void test_config_defaults(void **state) {
    (void)state;
    const char *j = "{\"model_type\": \"llama\", \"hidden_size\": 576, \"num_hidden_layers\": 30,"
                    " \"num_attention_heads\": 9, \"intermediate_size\": 1536, \"vocab_size\": 49152,"
                    " \"head_dim\": null, \"rope_scaling\": null}";
    alrd_config c;
    alrd_error err = {{0}};
    assert_int_equal(alrd_hf_config_parse(&c, j, strlen(j), "config.json", &err), 0);
    assert_int_equal(c.n_kv_heads, 9);
    assert_int_equal(c.head_dim, 64);
    assert_true(c.rope_theta == 10000.0f);
    assert_true(c.rms_eps == 1e-6f);
    assert_int_equal(c.max_ctx, 2048);
    assert_int_equal(c.rope_llama3, 0);
    assert_int_equal(c.tie_embeddings, 0);
    assert_int_equal(c.attention_bias, 0);
    /* rope_type "default" is no scaling; qwen2 has q/k/v biases */
    const char *q = "{\"model_type\": \"qwen2\", \"hidden_size\": 896, \"num_hidden_layers\": 24,"
                    " \"num_attention_heads\": 14, \"num_key_value_heads\": 2, \"intermediate_size\": 4864,"
                    " \"vocab_size\": 151936, \"rope_scaling\": {\"rope_type\": \"default\"}}";
    assert_int_equal(alrd_hf_config_parse(&c, q, strlen(q), "config.json", &err), 0);
    assert_string_equal(c.arch, "qwen2");
    assert_int_equal(c.attention_bias, 1);
    assert_int_equal(c.rope_llama3, 0);
    assert_int_equal(c.head_dim, 64);
    /* transformers 5 keeps theta and scaling in rope_parameters */
    const char *t5 = "{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_hidden_layers\": 2,"
                     " \"num_attention_heads\": 4, \"intermediate_size\": 8, \"vocab_size\": 8,"
                     " \"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, \"factor\": 8.0,"
                     " \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}";
    assert_int_equal(alrd_hf_config_parse(&c, t5, strlen(t5), "config.json", &err), 0);
    assert_true(c.rope_theta == 500000.0f);
    assert_int_equal(c.rope_llama3, 1);
    assert_true(c.rope_factor == 8.0f);
    assert_int_equal(c.rope_orig_ctx, 8192);
}

/* Replaces the first occurrence of `from` in the llama3 config. */
static int parse_edit(const char *from, const char *to, alrd_error *err) {
    char buf[2048];
    const char *at = strstr(LLAMA3_CONFIG, from);
    assert_non_null(at);
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - LLAMA3_CONFIG), LLAMA3_CONFIG, to, at + strlen(from));
    alrd_config c;
    return alrd_hf_config_parse(&c, buf, strlen(buf), "m/config.json", err);
}

static void test_config_errors(void **state) {
    (void)state;
    alrd_error err = {{0}};
    const struct { const char *from, *to, *need1, *need2; } cases[] = {
        {"\"hidden_size\": 3072,", "", "hidden_size", "missing"},
        {"\"model_type\": \"llama\",", "", "model_type", "missing"},
        {"\"model_type\": \"llama\"", "\"model_type\": \"gemma\"", "model_type", "gemma"},
        {"\"num_hidden_layers\": 28", "\"num_hidden_layers\": \"28\"", "num_hidden_layers", "integer"},
        {"\"num_hidden_layers\": 28", "\"num_hidden_layers\": 28.5", "num_hidden_layers", "not an integer"},
        {"\"hidden_size\": 3072", "\"hidden_size\": 1e12", "hidden_size", "out of range"},
        {"\"vocab_size\": 128256", "\"vocab_size\": -5", "vocab_size", "out of range"},
        {"\"num_hidden_layers\": 28", "\"num_hidden_layers\": 0", "num_hidden_layers", "out of range"},
        {"\"intermediate_size\": 8192", "\"intermediate_size\": 99999999999", "intermediate_size", "out of range"},
        {"\"num_key_value_heads\": 8", "\"num_key_value_heads\": 7", "num_key_value_heads", "divide"},
        {"\"num_key_value_heads\": 8", "\"num_key_value_heads\": 48", "num_key_value_heads", "out of range"},
        {"\"tie_word_embeddings\": true", "\"tie_word_embeddings\": \"yes\"", "tie_word_embeddings", NULL},
        {"\"attention_bias\": true", "\"attention_bias\": 1", "attention_bias", NULL},
        {"\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": \"small\"", "rms_norm_eps", "number"},
        {"\"rope_theta\": 500000.0", "\"rope_theta\": -1", "rope_theta", "out of range"},
        {"\"rope_type\": \"llama3\"", "\"rope_type\": \"yarn\"", "rope_scaling.rope_type", "yarn"},
        {"\"factor\": 32.0,", "", "rope_scaling.factor", "missing"},
        {"\"original_max_position_embeddings\": 8192", "\"original_max_position_embeddings\": []",
         "rope_scaling.original_max_position_embeddings", "integer"},
        {"\"low_freq_factor\": 1.0", "\"low_freq_factor\": 8.0", "rope_scaling", "high_freq_factor"},
        {"\"rope_scaling\": {", "\"rope_scaling\": 5, \"x\": {", "rope_scaling", "object"},
        {"\"head_dim\": 96", "\"head_dim\": 100000", "head_dim", "out of range"},
        {"\"vocab_size\": 128256}", "\"vocab_size\": 128256", "config.json", "malformed JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err.msg[0] = 0;
        if (parse_edit(cases[i].from, cases[i].to, &err) != -1)
            fail_msg("case %zu (%s) was accepted", i, cases[i].to);
        expect_msg(&err, "m/config.json", cases[i].need1);
        if (cases[i].need2) expect_msg(&err, cases[i].need2, NULL);
    }
    /* hidden not divisible by heads and no head_dim */
    const char *j = "{\"model_type\": \"llama\", \"hidden_size\": 100, \"num_hidden_layers\": 2,"
                    " \"num_attention_heads\": 3, \"intermediate_size\": 8, \"vocab_size\": 8}";
    alrd_config c;
    assert_int_equal(alrd_hf_config_parse(&c, j, strlen(j), "config.json", &err), -1);
    expect_msg(&err, "hidden_size", "head_dim");
    /* mistral with a real sliding window */
    const char *m = "{\"model_type\": \"mistral\", \"hidden_size\": 64, \"num_hidden_layers\": 2,"
                    " \"num_attention_heads\": 4, \"intermediate_size\": 8, \"vocab_size\": 8,"
                    " \"max_position_embeddings\": 32768, \"sliding_window\": 4096}";
    assert_int_equal(alrd_hf_config_parse(&c, m, strlen(m), "config.json", &err), -1);
    expect_msg(&err, "sliding_window", NULL);
    /* top level not an object; missing file */
    assert_int_equal(alrd_hf_config_parse(&c, "[1]", 3, "config.json", &err), -1);
    expect_msg(&err, "config.json", "object");
    assert_int_equal(alrd_hf_config_read(&c, "/nonexistent/config.json", &err), -1);
    expect_msg(&err, "/nonexistent/config.json", NULL);
}

static void test_config_write_roundtrip(void **state) {
    (void)state;
    alrd_config a;
    alrd_error err = {{0}};
    assert_int_equal(alrd_hf_config_parse(&a, LLAMA3_CONFIG, sizeof LLAMA3_CONFIG - 1, "c", &err), 0);
    a.rms_eps = 9.999999747378752e-06f; /* as GGUF stores 1e-5 */
    a.rope_theta = 100000.0f;
    char dir[512], p[600];
    mkdir_in(dir, sizeof dir, "cfg");
    snprintf(p, sizeof p, "%s/config.json", dir);
    alrd_vocab v = {0};
    v.bos_id = 1;
    v.eos_id = 2;
    assert_int_equal(alrd_hf_config_write(&a, &v, "bfloat16", p, &err), 0);
    alrd_config b;
    assert_int_equal(alrd_hf_config_read(&b, p, &err), 0);
    assert_int_equal(memcmp(&a, &b, sizeof a), 0);
    char *text = NULL;
    assert_int_equal(alrd_read_file(p, 1 << 20, &text, NULL, &err), 0);
    assert_non_null(strstr(text, "\"rms_norm_eps\": 1e-05,"));
    assert_non_null(strstr(text, "\"rope_theta\": 100000.0,"));
    assert_non_null(strstr(text, "\"torch_dtype\": \"bfloat16\""));
    assert_non_null(strstr(text, "\"bos_token_id\": 1,"));
    assert_non_null(strstr(text, "\"rope_type\": \"llama3\""));
    assert_non_null(strstr(text, "\"LlamaForCausalLM\""));
    free(text);
    /* only llama has a writer; bad dtype */
    alrd_config q = a;
    snprintf(q.arch, sizeof q.arch, "qwen2");
    assert_int_equal(alrd_hf_config_write(&q, NULL, "float32", p, &err), -1);
    expect_msg(&err, "model_type", "qwen2");
    assert_int_equal(alrd_hf_config_write(&a, NULL, "int8", p, &err), -1);
    expect_msg(&err, "torch_dtype", NULL);
}

/* ------------------------------------------------------------ vocab */

static void vocab_new(alrd_vocab *v, alrd_vocab_kind kind, const char *pre, const char *const *toks,
                      const int32_t *types, int n, const char *const *merges, int nm) {
    memset(v, 0, sizeof *v);
    v->kind = kind;
    snprintf(v->pre, sizeof v->pre, "%s", pre);
    v->n_tokens = n;
    v->tokens = calloc((size_t)n, sizeof *v->tokens);
    v->types = malloc((size_t)n * sizeof *v->types);
    for (int i = 0; i < n; i++) {
        v->tokens[i] = strdup(toks[i]);
        v->types[i] = types ? types[i] : ALRD_TOKEN_NORMAL;
    }
    v->n_merges = nm;
    v->merges = nm ? calloc((size_t)nm, sizeof *v->merges) : NULL;
    for (int i = 0; i < nm; i++) v->merges[i] = strdup(merges[i]);
    v->bos_id = v->eos_id = v->unk_id = v->pad_id = -1;
}

static void write_vocab(const alrd_vocab *v, const char *dir) {
    char p[600];
    alrd_error err = {{0}};
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    if (alrd_hf_tokenizer_write(v, p, &err) != 0) fail_msg("%s", err.msg);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    if (alrd_hf_tokenizer_config_write(v, 2048, p, &err) != 0) fail_msg("%s", err.msg);
}

static void read_vocab(alrd_vocab *v, const char *dir) {
    char p[600];
    alrd_error err = {{0}};
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    if (alrd_hf_vocab_read(v, p, &err) != 0) fail_msg("%s", err.msg);
}

static void assert_same_tokens(const alrd_vocab *a, const alrd_vocab *b, int merges) {
    assert_int_equal(a->kind, b->kind);
    assert_string_equal(a->pre, b->pre);
    assert_int_equal(a->n_tokens, b->n_tokens);
    for (int32_t i = 0; i < a->n_tokens; i++) {
        if (strcmp(a->tokens[i], b->tokens[i])) fail_msg("token %d: '%s' vs '%s'", i, a->tokens[i], b->tokens[i]);
        int32_t ta = a->types ? a->types[i] : 1, tb = b->types ? b->types[i] : 1;
        if (ta != tb) fail_msg("token %d '%s': type %d vs %d", i, a->tokens[i], ta, tb);
    }
    if (merges) {
        assert_int_equal(a->n_merges, b->n_merges);
        for (int32_t i = 0; i < a->n_merges; i++) assert_string_equal(a->merges[i], b->merges[i]);
    }
    assert_int_equal(a->bos_id, b->bos_id);
    assert_int_equal(a->eos_id, b->eos_id);
    assert_int_equal(a->add_bos, b->add_bos);
    assert_int_equal(a->add_eos, b->add_eos);
}

/* GPT-2 byte-level chars: "Ġ" is U+0120 (space), "Ã©" is the bytes of "é". */
static const char *const BYTES_TOKS[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "h", "i",
                                         "hi", "\xc4\xa0", "\xc4\xa0hi", "<tool>", "\xc3\x83\xc2\xa9"};
static const int32_t BYTES_TYPES[] = {3, 3, 3, 1, 1, 1, 1, 1, 4, 1};
static const char *const BYTES_MERGES[] = {"h i", "\xc4\xa0 hi"};

static void test_vocab_bytes_roundtrip(void **state) {
    (void)state;
    alrd_vocab a, b;
    vocab_new(&a, ALRD_VOCAB_BPE_BYTES, "smollm", BYTES_TOKS, BYTES_TYPES, 10, BYTES_MERGES, 2);
    a.bos_id = 1; a.eos_id = 2; a.unk_id = 0; a.pad_id = 2;
    a.chat_template = strdup("{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}");
    char dir[512], p[600];
    mkdir_in(dir, sizeof dir, "vbytes");
    write_vocab(&a, dir);
    read_vocab(&b, dir);
    assert_same_tokens(&a, &b, 1);
    assert_int_equal(b.unk_id, 0);
    assert_int_equal(b.pad_id, 2);
    assert_null(b.scores);
    assert_string_equal(b.chat_template, a.chat_template);
    alrd_vocab_free(&b);
    /* every pre-tokenizer flavour survives; the GGUF spellings come back */
    const char *const pres[][2] = {{"gpt2", "gpt-2"}, {"gpt-2", "gpt-2"}, {"llama-bpe", "llama-bpe"},
                                   {"llama3", "llama-bpe"}, {"qwen2", "qwen2"}, {"default", "gpt-2"}};
    for (size_t k = 0; k < sizeof pres / sizeof pres[0]; k++) {
        snprintf(a.pre, sizeof a.pre, "%s", pres[k][0]);
        write_vocab(&a, dir);
        read_vocab(&b, dir);
        assert_string_equal(b.pre, pres[k][1]);
        alrd_vocab_free(&b);
    }
    /* add_bos without tokenizer_config.json: the post-processor says so */
    snprintf(a.pre, sizeof a.pre, "smollm");
    a.add_bos = 1;
    write_vocab(&a, dir);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    unlink(p);
    read_vocab(&b, dir);
    assert_int_equal(b.add_bos, 1);
    assert_int_equal(b.bos_id, 1);
    assert_int_equal(b.eos_id, 0); /* fallback: <|endoftext|> */
    assert_null(b.chat_template);
    alrd_vocab_free(&b);
    /* an UNUSED "[PADn]" filler survives as a hole */
    a.add_bos = 0;
    free(a.tokens[8]);
    a.tokens[8] = strdup("[PAD8]");
    a.types[8] = ALRD_TOKEN_UNUSED;
    write_vocab(&a, dir);
    read_vocab(&b, dir);
    assert_int_equal(b.n_tokens, 10);
    assert_string_equal(b.tokens[8], "[PAD8]");
    assert_int_equal(b.types[8], ALRD_TOKEN_UNUSED);
    assert_string_equal(b.tokens[9], a.tokens[9]);
    alrd_vocab_free(&b);
    /* unsupported pre / duplicate tokens / invalid UTF-8 are writer errors */
    alrd_error err = {{0}};
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    snprintf(a.pre, sizeof a.pre, "falcon");
    assert_int_equal(alrd_hf_tokenizer_write(&a, p, &err), -1);
    expect_msg(&err, "falcon", NULL);
    snprintf(a.pre, sizeof a.pre, "smollm");
    free(a.tokens[4]);
    a.tokens[4] = strdup("h");
    assert_int_equal(alrd_hf_tokenizer_write(&a, p, &err), -1);
    expect_msg(&err, "tokens 3 and 4", NULL);
    free(a.tokens[4]);
    a.tokens[4] = strdup("\xff");
    assert_int_equal(alrd_hf_tokenizer_write(&a, p, &err), -1);
    expect_msg(&err, "token 4", "UTF-8");
    alrd_vocab_free(&a);
}

/* SPM: merges derived from the scores as transformers' extractor does,
 * then read back: types, add_space_prefix, -rank scores. */
static void test_vocab_spm_roundtrip(void **state) {
    (void)state;
    const char *const toks[] = {"<unk>", "<s>", "</s>", "<0x0A>", "<0x41>", "<0xE2>",
                                "\xe2\x96\x81", "a", "b", "\xe2\x96\x81" "a", "ab",
                                "\xe2\x96\x81" "ab", "\xe2\x96\x81\xe2\x96\x81"};
    const int32_t types[] = {2, 3, 3, 6, 6, 6, 1, 1, 1, 1, 1, 1, 1};
    const float scores[] = {0, 0, 0, 0, 0, 0, -100, -100, -100, -1, -2, -3, -1e9f};
    alrd_vocab a, b;
    vocab_new(&a, ALRD_VOCAB_SPM, "default", toks, types, 13, NULL, 0);
    a.scores = malloc(sizeof scores);
    memcpy(a.scores, scores, sizeof scores);
    a.bos_id = 1; a.eos_id = 2; a.unk_id = 0; a.add_bos = 1; a.add_space_prefix = 1;
    char dir[512];
    mkdir_in(dir, sizeof dir, "vspm");
    write_vocab(&a, dir);
    read_vocab(&b, dir);
    assert_same_tokens(&a, &b, 0);
    assert_int_equal(b.unk_id, 0);
    assert_int_equal(b.add_space_prefix, 1);
    const char *const want[] = {"\xe2\x96\x81 a", "a b", "\xe2\x96\x81 ab", "\xe2\x96\x81" "a b",
                                "\xe2\x96\x81 \xe2\x96\x81"};
    assert_int_equal(b.n_merges, 5);
    for (int i = 0; i < 5; i++) assert_string_equal(b.merges[i], want[i]);
    assert_non_null(b.scores);
    assert_true(b.scores[9] == 0.0f && b.scores[10] == -1.0f && b.scores[11] == -2.0f);
    assert_true(b.scores[12] == -4.0f && b.scores[7] == -1e9f && b.scores[3] == -1e9f);
    /* written again from the read vocab (its own merges): same file */
    char d2[512], p1[600], p2[600];
    mkdir_in(d2, sizeof d2, "vspm2");
    write_vocab(&b, d2);
    snprintf(p1, sizeof p1, "%s/tokenizer.json", dir);
    snprintf(p2, sizeof p2, "%s/tokenizer.json", d2);
    char *t1, *t2;
    alrd_error err = {{0}};
    assert_int_equal(alrd_read_file(p1, 1 << 20, &t1, NULL, &err), 0);
    assert_int_equal(alrd_read_file(p2, 1 << 20, &t2, NULL, &err), 0);
    assert_string_equal(t1, t2);
    free(t1); free(t2);
    alrd_vocab_free(&b);
    /* no space prefix: Replace only, read back as 0 */
    a.add_space_prefix = 0;
    write_vocab(&a, dir);
    read_vocab(&b, dir);
    assert_int_equal(b.add_space_prefix, 0);
    alrd_vocab_free(&b);
    alrd_vocab_free(&a);
}

/* A Llama-2/TinyLlama style file as HF writes it: Metaspace, merges as
 * pairs, added tokens, a hole in the ids, no tokenizer_config.json. */
static void test_vocab_hf_file(void **state) {
    (void)state;
    char dir[512], p[600];
    mkdir_in(dir, sizeof dir, "vhf");
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    write_text(p,
        "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null, \"added_tokens\": ["
        "{\"id\": 0, \"content\": \"<unk>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true},"
        "{\"id\": 1, \"content\": \"<s>\", \"special\": true},"
        "{\"id\": 2, \"content\": \"</s>\", \"special\": true},"
        "{\"id\": 9, \"content\": \"<extra>\", \"special\": false}],"
        "\"normalizer\": null,"
        "\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": \"first\", \"split\": false},"
        "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}},"
        " {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"pair\": [], \"special_tokens\": {}},"
        "\"decoder\": null,"
        "\"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": \"<unk>\", \"fuse_unk\": true, \"byte_fallback\": true,"
        " \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"<0x00>\": 3, \"\\u2581\": 4, \"x\": 5, \"\\u2581x\": 6, \"y\": 8},"
        " \"merges\": [[\"\\u2581\", \"x\"]]}}");
    /* transformers >= 4.47 may keep the template in its own file */
    snprintf(p, sizeof p, "%s/chat_template.jinja", dir);
    write_text(p, "[INST] {{ messages[0]['content'] }} [/INST]");
    alrd_vocab v;
    read_vocab(&v, dir);
    assert_string_equal(v.chat_template, "[INST] {{ messages[0]['content'] }} [/INST]");
    assert_int_equal(v.kind, ALRD_VOCAB_SPM);
    assert_string_equal(v.pre, "default");
    assert_int_equal(v.n_tokens, 10);
    assert_int_equal(v.add_space_prefix, 1);
    assert_int_equal(v.add_bos, 1);
    assert_int_equal(v.bos_id, 1);
    assert_int_equal(v.eos_id, 2);
    assert_int_equal(v.unk_id, 0);
    assert_int_equal(v.types[0], ALRD_TOKEN_UNKNOWN);
    assert_int_equal(v.types[1], ALRD_TOKEN_CONTROL);
    assert_int_equal(v.types[3], ALRD_TOKEN_BYTE);
    assert_int_equal(v.types[5], ALRD_TOKEN_NORMAL);
    assert_string_equal(v.tokens[7], "[PAD7]");
    assert_int_equal(v.types[7], ALRD_TOKEN_UNUSED);
    assert_string_equal(v.tokens[9], "<extra>");
    assert_int_equal(v.types[9], ALRD_TOKEN_USER_DEFINED);
    assert_int_equal(v.n_merges, 1);
    assert_string_equal(v.merges[0], "\xe2\x96\x81 x");
    assert_true(v.scores[6] == 0.0f && v.scores[5] == -1e9f);
    alrd_vocab_free(&v);
}

/* Writes tokenizer.json = prefix + model + suffix and expects failure. */
static void bad_tok(const char *dir, const char *json, const char *need1, const char *need2) {
    char p[600];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    write_text(p, json);
    alrd_vocab v;
    alrd_error err = {{0}};
    if (alrd_hf_vocab_read(&v, p, &err) != -1) fail_msg("accepted: %s", json);
    expect_msg(&err, need1, need2);
    assert_null(v.tokens);
}

#define BL "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}, "

static void test_vocab_errors(void **state) {
    (void)state;
    char dir[512], p[600];
    mkdir_in(dir, sizeof dir, "verr");
    bad_tok(dir, "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}", "tokenizer.json", "model.type");
    bad_tok(dir, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"0\"}, \"merges\": []}}",
            "tokenizer.json: model.vocab", "'a'");
    bad_tok(dir, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1e9}, \"merges\": []}}",
            "tokenizer.json: model.vocab", NULL);
    bad_tok(dir, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}",
            "model.vocab: id 0", NULL);
    bad_tok(dir, "{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\", 5]}}",
            "tokenizer.json: model.merges[1]", NULL);
    bad_tok(dir, "{\"added_tokens\": [{\"id\": 1, \"content\": \"<x>\", \"special\": true}], " BL
            "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []}}",
            "tokenizer.json: added_tokens[0]", "id 1");
    bad_tok(dir, "{\"added_tokens\": [{\"content\": \"<x>\"}], " BL
            "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
            "added_tokens[0]", NULL);
    bad_tok(dir, "{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, "
            "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
            "tokenizer.json: pre_tokenizer", NULL);
    bad_tok(dir, "{\"normalizer\": {\"type\": \"Lowercase\"}, " BL
            "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
            "tokenizer.json: pre_tokenizer", NULL);
    bad_tok(dir, "{\"normalizer\": null, \"pre_tokenizer\": null, "
            "\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": {\"a\": 0}, \"merges\": []}}",
            "tokenizer.json: normalizer/pre_tokenizer", NULL);
    bad_tok(dir, "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}", "model.vocab", NULL);
    bad_tok(dir, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}", "tokenizer.json", "malformed JSON");
    /* tokenizer_config.json naming a token the vocab lacks */
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    write_text(p, "{\"bos_token\": \"<nope>\"}");
    bad_tok(dir, "{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
            "tokenizer_config.json: bos_token", "<nope>");
    write_text(p, "{\"add_bos_token\": \"yes\"}");
    bad_tok(dir, "{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
            "tokenizer_config.json: add_bos_token", NULL);
    write_text(p, "{\"chat_template\": 7}");
    bad_tok(dir, "{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
            "tokenizer_config.json: chat_template", NULL);
    /* bos as an AddedToken object is fine */
    write_text(p, "{\"bos_token\": {\"__type\": \"AddedToken\", \"content\": \"a\"}, \"chat_template\": "
                  "[{\"name\": \"tool_use\", \"template\": \"T\"}, {\"name\": \"default\", \"template\": \"D\"}]}");
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    write_text(p, "{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}");
    alrd_vocab v;
    alrd_error err = {{0}};
    assert_int_equal(alrd_hf_vocab_read(&v, p, &err), 0);
    assert_int_equal(v.bos_id, 0);
    assert_string_equal(v.chat_template, "D");
    assert_string_equal(v.pre, "gpt-2");
    alrd_vocab_free(&v);
}

/* A GGUF vocabulary written as tokenizer.json and read back is the same
 * vocabulary (tokens, types, merges, specials). */
static void gguf_vocab_roundtrip(const char *gguf_path, const char *dirname, int merges) {
    alrd_gguf g;
    alrd_error err = {{0}};
    if (alrd_gguf_open(&g, gguf_path, &err) != 0) fail_msg("%s", err.msg);
    alrd_vocab a, b;
    if (alrd_vocab_from_gguf(&a, &g, &err) != 0) fail_msg("%s", err.msg);
    alrd_gguf_close(&g);
    char dir[512];
    mkdir_in(dir, sizeof dir, dirname);
    write_vocab(&a, dir);
    read_vocab(&b, dir);
    assert_same_tokens(&a, &b, merges);
    assert_int_equal(a.unk_id, b.unk_id);
    assert_int_equal(a.pad_id, b.pad_id);
    if (a.chat_template) assert_string_equal(a.chat_template, b.chat_template);
    if (a.kind == ALRD_VOCAB_SPM) assert_int_equal(a.add_space_prefix, b.add_space_prefix);
    alrd_vocab_free(&a);
    alrd_vocab_free(&b);
}

static void test_vocab_gguf_vectors(void **state) {
    (void)state;
    char p[512];
    ALRD_DATA_OR_SKIP(p, "tokenizer-vectors/ggml-vocab-gpt-2.gguf");
    gguf_vocab_roundtrip(p, "vgpt2", 1);
    ALRD_DATA_OR_SKIP(p, "tokenizer-vectors/ggml-vocab-llama-spm.gguf");
    gguf_vocab_roundtrip(p, "vllama", 0);
}

static void test_vocab_gguf_model(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    gguf_vocab_roundtrip(ALRD_TEST_MODEL, "vsmol", 1);
}

/* The vocabulary as read back from tokenizer.json drives the runtime
 * tokenizer to llama.cpp's ids on the conformance vectors: for SPM this
 * checks that scores derived from the merge order rank merges as the
 * SentencePiece scores did. */
static void vectors_via_json(const char *name, const char *dirname) {
    char rel[256], full[600], dir[512];
    snprintf(rel, sizeof rel, "tokenizer-vectors/%s", name);
    ALRD_DATA_OR_SKIP(full, rel);
    alrd_gguf g;
    alrd_error err = {{0}};
    alrd_vocab a, b;
    if (alrd_gguf_open(&g, full, &err) != 0) fail_msg("%s", err.msg);
    if (alrd_vocab_from_gguf(&a, &g, &err) != 0) fail_msg("%s", err.msg);
    alrd_gguf_close(&g);
    mkdir_in(dir, sizeof dir, dirname);
    write_vocab(&a, dir);
    alrd_vocab_free(&a);
    read_vocab(&b, dir);
    alrd_tokenizer *tok;
    if (alrd_tokenizer_new(&tok, &b, &err) != 0) fail_msg("%s", err.msg);
    alrd_vocab_free(&b);
    char ip[640], op[640], *inp, *outs;
    size_t inp_n, out_n;
    snprintf(ip, sizeof ip, "%s.inp", full);
    snprintf(op, sizeof op, "%s.out", full);
    if (alrd_read_file(ip, 1 << 20, &inp, &inp_n, &err) != 0) fail_msg("%s", err.msg);
    if (alrd_read_file(op, 1 << 20, &outs, &out_n, &err) != 0) fail_msg("%s", err.msg);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    char *p = inp, *line = outs;
    int cases = 0, bad = 0;
    for (char *e; (e = memmem(p, inp_n - (size_t)(p - inp), sep, sizeof sep - 1)); cases++) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = 0;
        int32_t want[512];
        size_t nw = 0;
        for (char *q = line, *end; nw < 512; q = end) {
            long v = strtol(q, &end, 10);
            if (end == q) break;
            want[nw++] = (int32_t)v;
        }
        int32_t *ids;
        size_t n;
        if (alrd_tokenizer_encode(tok, p, (size_t)(e - p), 0, 0, &ids, &n, &err) != 0) fail_msg("%s", err.msg);
        if (n != nw || memcmp(ids, want, n * sizeof *ids)) {
            bad++;
            print_message("%s: case %d differs\n", name, cases);
        }
        free(ids);
        p = e + sizeof sep - 1;
        line = nl + 1;
    }
    free(inp);
    free(outs);
    alrd_tokenizer_free(tok);
    assert_int_equal(cases, 46);
    assert_int_equal(bad, 0);
}

static void test_vocab_json_drives_tokenizer(void **state) {
    (void)state;
    vectors_via_json("ggml-vocab-gpt-2.gguf", "tgpt2");
    vectors_via_json("ggml-vocab-llama-spm.gguf", "tspm");
}

/* ------------------------------------------------------- HF directory */

/* A one-layer model: hidden 8, 2 heads of 4, 1 kv head, ffn 4, vocab 16. */
static void tiny_model(const char *dir, int with_head, int tie, int q_rows) {
    static float buf[256];
    for (int i = 0; i < 256; i++) buf[i] = (float)i * 0.25f;
    struct { const char *n; int64_t r, c; } sh[] = {
        {"model.embed_tokens.weight", 16, 8}, {"model.norm.weight", 8, 0},
        {"model.layers.0.input_layernorm.weight", 8, 0},
        {"model.layers.0.post_attention_layernorm.weight", 8, 0},
        {"model.layers.0.self_attn.q_proj.weight", q_rows, 8},
        {"model.layers.0.self_attn.k_proj.weight", 4, 8},
        {"model.layers.0.self_attn.v_proj.weight", 4, 8},
        {"model.layers.0.self_attn.o_proj.weight", 8, 8},
        {"model.layers.0.mlp.gate_proj.weight", 4, 8}, {"model.layers.0.mlp.up_proj.weight", 4, 8},
        {"model.layers.0.mlp.down_proj.weight", 8, 4}, {"lm_head.weight", 16, 8},
    };
    alrd_tensor ts[12];
    int n = with_head ? 12 : 11;
    for (int i = 0; i < n; i++) {
        memset(&ts[i], 0, sizeof ts[i]);
        snprintf(ts[i].name, sizeof ts[i].name, "%s", sh[i].n);
        ts[i].dtype = ALRD_F32;
        ts[i].data = buf;
        ts[i].n_dims = sh[i].c ? 2 : 1;
        ts[i].shape[0] = sh[i].r;
        ts[i].shape[1] = sh[i].c;
        ts[i].nbytes = (size_t)(sh[i].r * (sh[i].c ? sh[i].c : 1)) * 4;
    }
    char p[600];
    alrd_error err = {{0}};
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (alrd_safetensors_write(p, ts, n, ALRD_F32, &err) != 0) fail_msg("%s", err.msg);
    snprintf(p, sizeof p, "%s/config.json", dir);
    char cfg[512];
    snprintf(cfg, sizeof cfg,
             "{\"model_type\": \"llama\", \"hidden_size\": 8, \"num_hidden_layers\": 1,"
             " \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"intermediate_size\": 4,"
             " \"vocab_size\": 16, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-5,"
             " \"rope_theta\": 100000.0, \"tie_word_embeddings\": %s}", tie ? "true" : "false");
    write_text(p, cfg);
    alrd_vocab v;
    vocab_new(&v, ALRD_VOCAB_BPE_BYTES, "smollm", BYTES_TOKS, BYTES_TYPES, 10, BYTES_MERGES, 2);
    v.bos_id = 1; v.eos_id = 2;
    write_vocab(&v, dir);
    alrd_vocab_free(&v);
}

static void test_source_hf(void **state) {
    (void)state;
    char dir[512];
    mkdir_in(dir, sizeof dir, "hfsrc");
    tiny_model(dir, 0, 0, 8);
    alrd_source s;
    alrd_error err = {{0}};
    if (alrd_source_open(&s, dir, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(s.format, ALRD_SRC_HF);
    assert_int_equal(s.config.n_layers, 1);
    assert_int_equal(s.config.head_dim, 4);
    assert_int_equal(s.config.tie_embeddings, 1); /* no lm_head in the file */
    assert_int_equal(s.n_tensors, 11);
    assert_null(alrd_source_tensor(&s, "lm_head.weight"));
    const alrd_tensor *q = alrd_source_tensor(&s, "model.layers.0.self_attn.q_proj.weight");
    assert_non_null(q);
    assert_int_equal(q->unpermute_heads, 0);
    float row[8];
    assert_int_equal(alrd_tensor_rows_f32(q, 3, 1, row, &err), 0);
    assert_true(row[0] == 24 * 0.25f && row[7] == 31 * 0.25f);
    /* vocabulary padded to vocab_size like llama.cpp */
    assert_int_equal(s.vocab.n_tokens, 16);
    assert_string_equal(s.vocab.tokens[15], "[PAD15]");
    assert_int_equal(s.vocab.types[15], ALRD_TOKEN_UNUSED);
    assert_string_equal(s.vocab.pre, "smollm");
    assert_int_equal(s.vocab.bos_id, 1);
    alrd_source_close(&s);

    /* lm_head present and untied: kept; tie_word_embeddings true: dropped */
    tiny_model(dir, 1, 0, 8);
    if (alrd_source_open(&s, dir, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(s.config.tie_embeddings, 0);
    assert_non_null(alrd_source_tensor(&s, "lm_head.weight"));
    alrd_source_close(&s);
    tiny_model(dir, 1, 1, 8);
    if (alrd_source_open(&s, dir, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(s.config.tie_embeddings, 1);
    assert_null(alrd_source_tensor(&s, "lm_head.weight"));
    alrd_source_close(&s);

    /* a q_proj of the wrong shape is named */
    tiny_model(dir, 0, 0, 4);
    assert_int_equal(alrd_source_open(&s, dir, &err), -1);
    expect_msg(&err, "model.layers.0.self_attn.q_proj.weight", "shape");
    /* missing files */
    char p[600];
    tiny_model(dir, 0, 0, 8);
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    unlink(p);
    assert_int_equal(alrd_source_open(&s, dir, &err), -1);
    expect_msg(&err, "tokenizer.json", NULL);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    assert_int_equal(alrd_source_open(&s, dir, &err), -1);
    expect_msg(&err, "model.safetensors", NULL);
}

/* ----------------------------------------------------- alrd-convert */

static int run_cmd(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *convert_bin(char *buf, size_t cap) {
    const char *b = getenv("BUILD");
    snprintf(buf, cap, "%s/alrd-convert", b ? b : "build");
    if (access(buf, X_OK) != 0) {
        print_message("skip: %s absent (run make)\n", buf);
        skip();
    }
    return buf;
}

static int dir_entries(const char *dir) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A %s)\"", dir);
    return run_cmd(cmd) == 0 ? 0 : 1;
}

static void test_convert_failures(void **state) {
    (void)state;
    char bin[256], dir[512], cmd[1500];
    convert_bin(bin, sizeof bin);
    mkdir_in(dir, sizeof dir, "convfail");
    snprintf(cmd, sizeof cmd, "%s /nonexistent.gguf --to-hf %s 2>/dev/null", bin, dir);
    assert_int_equal(run_cmd(cmd), 1);
    assert_int_equal(dir_entries(dir), 0);
    snprintf(cmd, sizeof cmd, "%s x.gguf --to-hf %s --dtype q4 2>/dev/null", bin, dir);
    assert_int_equal(run_cmd(cmd), 1);
    snprintf(cmd, sizeof cmd, "%s --to-hf %s 2>/dev/null", bin, dir);
    assert_int_equal(run_cmd(cmd), 1);
    /* a vocab-only GGUF has no model to export, only a vocabulary */
    char voc[512];
    ALRD_DATA_OR_SKIP(voc, "tokenizer-vectors/ggml-vocab-gpt-2.gguf");
    snprintf(cmd, sizeof cmd, "%s %s --to-hf %s 2>/dev/null", bin, voc, dir);
    assert_int_equal(run_cmd(cmd), 1);
    assert_int_equal(dir_entries(dir), 0);
    snprintf(cmd, sizeof cmd, "%s %s --to-hf %s --vocab-only >/dev/null", bin, voc, dir);
    assert_int_equal(run_cmd(cmd), 0);
    char p[600];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    alrd_vocab v;
    alrd_error err = {{0}};
    assert_int_equal(alrd_hf_vocab_read(&v, p, &err), 0);
    assert_int_equal(v.n_tokens, 50257);
    assert_int_equal(v.n_merges, 50000);
    assert_int_equal(v.bos_id, 50256);
    alrd_vocab_free(&v);
}

/* GGUF -> HF directory -> alrd_source: same config, same vocabulary and,
 * for f32, the same values bit for bit (q/k rows included, which the GGUF
 * side unpermutes on read and the HF side stores unpermuted). */
static void test_convert_model(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    char bin[256], dir[512], cmd[1500];
    convert_bin(bin, sizeof bin);
    mkdir_in(dir, sizeof dir, "conv");
    snprintf(cmd, sizeof cmd, "%s %s --to-hf %s/out >/dev/null", bin, ALRD_TEST_MODEL, dir);
    assert_int_equal(run_cmd(cmd), 0);
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A %s/out | grep -v -x -e config.json -e "
             "generation_config.json -e model.safetensors -e tokenizer.json -e tokenizer_config.json)\"",
             dir);
    assert_int_equal(run_cmd(cmd), 0); /* no staging dir or temp file left */
    alrd_source g, h;
    alrd_error err = {{0}};
    char out[600];
    snprintf(out, sizeof out, "%s/out", dir);
    if (alrd_source_open(&g, ALRD_TEST_MODEL, &err) != 0) fail_msg("%s", err.msg);
    if (alrd_source_open(&h, out, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(h.format, ALRD_SRC_HF);
    alrd_config gc = g.config, hc = h.config;
    assert_int_equal(memcmp(&gc, &hc, sizeof gc), 0);
    assert_int_equal(hc.tie_embeddings, 1);
    assert_int_equal(h.n_tensors, g.n_tensors);
    assert_same_tokens(&g.vocab, &h.vocab, 1);
    assert_string_equal(g.vocab.chat_template, h.vocab.chat_template);
    const char *names[] = {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                           "model.layers.0.self_attn.k_proj.weight", "model.layers.29.self_attn.k_proj.weight",
                           "model.layers.17.mlp.down_proj.weight", "model.norm.weight"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        const alrd_tensor *a = alrd_source_tensor(&g, names[k]), *b = alrd_source_tensor(&h, names[k]);
        assert_non_null(a);
        assert_non_null(b);
        assert_int_equal(b->dtype, ALRD_F32);
        int64_t n = alrd_tensor_numel(a);
        assert_int_equal(n, alrd_tensor_numel(b));
        float *fa = malloc((size_t)n * 4), *fb = malloc((size_t)n * 4);
        assert_int_equal(alrd_tensor_to_f32(a, fa, &err), 0);
        assert_int_equal(alrd_tensor_to_f32(b, fb, &err), 0);
        if (memcmp(fa, fb, (size_t)n * 4)) fail_msg("%s differs after export", names[k]);
        free(fa);
        free(fb);
    }
    alrd_source_close(&g);
    alrd_source_close(&h);
    snprintf(cmd, sizeof cmd, "rm -rf %s/out", dir); /* 0.5 GB; tmp dirs are kept otherwise */
    assert_int_equal(run_cmd(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_llama3),
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_config_write_roundtrip),
        cmocka_unit_test(test_vocab_bytes_roundtrip),
        cmocka_unit_test(test_vocab_spm_roundtrip),
        cmocka_unit_test(test_vocab_hf_file),
        cmocka_unit_test(test_vocab_errors),
        cmocka_unit_test(test_vocab_gguf_vectors),
        cmocka_unit_test(test_vocab_gguf_model),
        cmocka_unit_test(test_vocab_json_drives_tokenizer),
        cmocka_unit_test(test_source_hf),
        cmocka_unit_test(test_convert_failures),
        cmocka_unit_test(test_convert_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
