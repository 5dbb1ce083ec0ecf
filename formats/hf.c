/* hf: config.json, tokenizer.json, tokenizer_config.json and
 * generation_config.json, read into / written from alrd_config and
 * alrd_vocab. Everything a file says is type- and range-checked; errors
 * name the file and the field. */
#include "hf.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- JSON */

static cJSON *parse_json_text(const char *text, const char *path, alrd_error *err) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        alrd_errf(err, "%s: malformed JSON near byte %zu", path, at);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        alrd_errf(err, "%s: top level: expected a JSON object", path);
        return NULL;
    }
    return root;
}

static cJSON *read_json(const char *path, alrd_error *err) {
    char *text = NULL;
    if (alrd_read_file(path, ALRD_HF_MAX_JSON, &text, NULL, err) != 0) return NULL;
    cJSON *root = parse_json_text(text, path, err);
    free(text);
    return root;
}

/* Prints root and writes it atomically, with a trailing newline. */
static int write_json(const char *path, const cJSON *root, int formatted, alrd_error *err) {
    char *s = formatted ? cJSON_Print(root) : cJSON_PrintUnformatted(root);
    if (!s) return alrd_errf(err, "%s: out of memory printing JSON", path);
    alrd_outfile o;
    if (alrd_outfile_open(&o, path, err) != 0) { free(s); return -1; }
    int rc = alrd_outfile_write(&o, s, strlen(s), err);
    if (rc == 0) rc = alrd_outfile_write(&o, "\n", 1, err);
    free(s);
    if (rc != 0) { alrd_outfile_abort(&o); return -1; }
    return alrd_outfile_commit(&o, err);
}

static int write_text(const char *path, const char *s, alrd_error *err) {
    alrd_outfile o;
    if (alrd_outfile_open(&o, path, err) != 0) return -1;
    if (alrd_outfile_write(&o, s, strlen(s), err) != 0) { alrd_outfile_abort(&o); return -1; }
    return alrd_outfile_commit(&o, err);
}

static const cJSON *jget(const cJSON *o, const char *k) {
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}
static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *j = jget(o, k);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}
static int jtype(const cJSON *o, const char *t) {
    const char *s = jstr(o, "type");
    return s && !strcmp(s, t);
}
static int jbool(const cJSON *o, const char *k, int def) {
    const cJSON *j = jget(o, k);
    return cJSON_IsBool(j) ? cJSON_IsTrue(j) : def;
}
static int jisnull(const cJSON *j) { return !j || cJSON_IsNull(j); }

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* The directory part of path with a trailing '/', or "" when there is none. */
static void dir_of(const char *path, char *out, size_t cap) {
    snprintf(out, cap, "%s", path);
    char *s = strrchr(out, '/');
    if (s) s[1] = 0;
    else out[0] = 0;
}

/* ------------------------------------------------------------ config */

/* An integer field in [lo, hi]; absent or null gives def unless required.
 * name is how the field is spelled in errors (e.g. "rope_scaling.factor"). */
static int cfg_int(const cJSON *o, const char *key, const char *name, int required, int64_t def,
                   int64_t lo, int64_t hi, int *out, const char *path, alrd_error *err) {
    const cJSON *j = jget(o, key);
    if (jisnull(j)) {
        if (required) return alrd_errf(err, "%s: %s: missing (required)", path, name);
        *out = (int)def;
        return 0;
    }
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble))
        return alrd_errf(err, "%s: %s: expected an integer", path, name);
    double d = j->valuedouble;
    if (d < (double)lo || d > (double)hi)
        return alrd_errf(err, "%s: %s: %.17g out of range [%lld, %lld]", path, name, d,
                         (long long)lo, (long long)hi);
    if (d != (double)(int64_t)d)
        return alrd_errf(err, "%s: %s: %.17g is not an integer", path, name, d);
    *out = (int)d;
    return 0;
}

/* A number field in (lo, hi]. */
static int cfg_float(const cJSON *o, const char *key, const char *name, int required, double def,
                     double lo, double hi, float *out, const char *path, alrd_error *err) {
    const cJSON *j = jget(o, key);
    if (jisnull(j)) {
        if (required) return alrd_errf(err, "%s: %s: missing (required)", path, name);
        *out = (float)def;
        return 0;
    }
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble))
        return alrd_errf(err, "%s: %s: expected a number", path, name);
    double d = j->valuedouble;
    if (!(d > lo && d <= hi))
        return alrd_errf(err, "%s: %s: %.17g out of range (%g, %g]", path, name, d, lo, hi);
    *out = (float)d;
    return 0;
}

static int cfg_bool(const cJSON *o, const char *key, int def, int *out, const char *path,
                    alrd_error *err) {
    const cJSON *j = jget(o, key);
    if (jisnull(j)) { *out = def; return 0; }
    if (!cJSON_IsBool(j)) return alrd_errf(err, "%s: %s: expected true or false", path, key);
    *out = cJSON_IsTrue(j) ? 1 : 0;
    return 0;
}

/* rope_scaling (or transformers 5's rope_parameters): only llama3 is a
 * scaling we implement; "default" means none. */
static int cfg_rope(alrd_config *c, const cJSON *rs, const char *field, const char *path,
                    alrd_error *err) {
    if (jisnull(rs)) return 0;
    if (!cJSON_IsObject(rs)) return alrd_errf(err, "%s: %s: expected an object or null", path, field);
    const char *ty = jstr(rs, "rope_type");
    if (!ty) ty = jstr(rs, "type");
    if (!ty) return alrd_errf(err, "%s: %s.rope_type: missing or not a string", path, field);
    if (!strcmp(ty, "default")) return 0;
    if (strcmp(ty, "llama3"))
        return alrd_errf(err, "%s: %s.rope_type: '%.40s' not supported (llama3 or default)", path,
                         field, ty);
    char n1[96], n2[96], n3[96], n4[96];
    snprintf(n1, sizeof n1, "%s.factor", field);
    snprintf(n2, sizeof n2, "%s.low_freq_factor", field);
    snprintf(n3, sizeof n3, "%s.high_freq_factor", field);
    snprintf(n4, sizeof n4, "%s.original_max_position_embeddings", field);
    c->rope_llama3 = 1;
    if (cfg_float(rs, "factor", n1, 1, 0, 0, 1e6, &c->rope_factor, path, err) ||
        cfg_float(rs, "low_freq_factor", n2, 0, 1, 0, 1e6, &c->rope_low_freq_factor, path, err) ||
        cfg_float(rs, "high_freq_factor", n3, 0, 4, 0, 1e6, &c->rope_high_freq_factor, path, err) ||
        cfg_int(rs, "original_max_position_embeddings", n4, 1, 0, 1, 1 << 24, &c->rope_orig_ctx,
                path, err))
        return -1;
    if (c->rope_high_freq_factor <= c->rope_low_freq_factor)
        return alrd_errf(err, "%s: %s: high_freq_factor must exceed low_freq_factor", path, field);
    return 0;
}

int alrd_hf_config_parse(alrd_config *c, const char *json, size_t len, const char *path,
                         alrd_error *err) {
    memset(c, 0, sizeof *c);
    (void)len; /* json is NUL-terminated; len documents the buffer */
    cJSON *root = parse_json_text(json, path, err);
    if (!root) return -1;
    int rc = -1;
    const char *mt = jstr(root, "model_type");
    if (!mt) {
        alrd_errf(err, "%s: model_type: %s", path,
                  jget(root, "model_type") ? "expected a string" : "missing (required)");
        goto done;
    }
    if (strcmp(mt, "llama") && strcmp(mt, "mistral") && strcmp(mt, "qwen2")) {
        alrd_errf(err, "%s: model_type: '%.40s' not supported (llama, mistral, qwen2)", path, mt);
        goto done;
    }
    snprintf(c->arch, sizeof c->arch, "%s", mt);
    if (cfg_int(root, "num_hidden_layers", "num_hidden_layers", 1, 0, 1, 1024, &c->n_layers, path, err) ||
        cfg_int(root, "hidden_size", "hidden_size", 1, 0, 1, 1 << 17, &c->hidden, path, err) ||
        cfg_int(root, "num_attention_heads", "num_attention_heads", 1, 0, 1, 1024, &c->n_heads, path, err) ||
        cfg_int(root, "num_key_value_heads", "num_key_value_heads", 0, c->n_heads, 1, c->n_heads,
                &c->n_kv_heads, path, err) ||
        cfg_int(root, "intermediate_size", "intermediate_size", 1, 0, 1, 1 << 20, &c->ffn, path, err) ||
        cfg_int(root, "vocab_size", "vocab_size", 1, 0, 1, ALRD_HF_MAX_TOKENS, &c->vocab_size, path, err) ||
        cfg_int(root, "max_position_embeddings", "max_position_embeddings", 0, 2048, 1, 1 << 24,
                &c->max_ctx, path, err) ||
        cfg_float(root, "rms_norm_eps", "rms_norm_eps", 0, 1e-6, 0, 1, &c->rms_eps, path, err))
        goto done;
    if (c->n_heads % c->n_kv_heads) {
        alrd_errf(err, "%s: num_key_value_heads: %d does not divide num_attention_heads %d", path,
                  c->n_kv_heads, c->n_heads);
        goto done;
    }
    if (jisnull(jget(root, "head_dim")) && c->hidden % c->n_heads) {
        alrd_errf(err, "%s: hidden_size: %d not a multiple of num_attention_heads %d (and no head_dim)",
                  path, c->hidden, c->n_heads);
        goto done;
    }
    if (cfg_int(root, "head_dim", "head_dim", 0, c->hidden / c->n_heads, 1, 1024, &c->head_dim,
                path, err))
        goto done;
    /* transformers 5 moves rope_theta and the scaling into rope_parameters. */
    const cJSON *rp = jget(root, "rope_parameters");
    if (cJSON_IsObject(rp) && jisnull(jget(root, "rope_theta"))) {
        if (cfg_float(rp, "rope_theta", "rope_parameters.rope_theta", 0, 10000, 0, 1e12,
                      &c->rope_theta, path, err) ||
            cfg_rope(c, rp, "rope_parameters", path, err))
            goto done;
    } else {
        if (cfg_float(root, "rope_theta", "rope_theta", 0, 10000, 0, 1e12, &c->rope_theta, path, err) ||
            cfg_rope(c, jget(root, "rope_scaling"), "rope_scaling", path, err))
            goto done;
    }
    int qwen = !strcmp(mt, "qwen2");
    if (cfg_bool(root, "tie_word_embeddings", 0, &c->tie_embeddings, path, err) ||
        cfg_bool(root, "attention_bias", qwen, &c->attention_bias, path, err) ||
        cfg_bool(root, "mlp_bias", 0, &c->mlp_bias, path, err))
        goto done;
    /* what the forward pass does not compute is refused, not ignored */
    if (c->mlp_bias) {
        alrd_errf(err, "%s: mlp_bias: true: MLP biases not supported", path);
        goto done;
    }
    const cJSON *act = jget(root, "hidden_act");
    if (!jisnull(act) && (!cJSON_IsString(act) || (strcmp(act->valuestring, "silu") && strcmp(act->valuestring, "swish")))) {
        alrd_errf(err, "%s: hidden_act: %s%.40s%s not supported (silu)", path, cJSON_IsString(act) ? "'" : "",
                  cJSON_IsString(act) ? act->valuestring : "not a string", cJSON_IsString(act) ? "'" : "");
        goto done;
    }
    /* Sliding-window attention is not implemented: a window shorter than the
     * context on any layer that transformers gives one is refused. Mistral:
     * every layer. Qwen2: only with use_sliding_window, on the layers that
     * layer_types calls "sliding_attention", or without layer_types on layers
     * >= max_window_layers (default 28); Qwen2.5 checkpoints ship
     * sliding_window 131072 with use_sliding_window false. */
    if (!strcmp(mt, "mistral") || qwen) {
        int sw = 0, use = 1, first = 0, last = c->n_layers - 1;
        if (cfg_int(root, "sliding_window", "sliding_window", 0, 0, 0, INT32_MAX, &sw, path, err))
            goto done;
        if (qwen) {
            int mwl = 0;
            const cJSON *lt = jget(root, "layer_types");
            if (cfg_bool(root, "use_sliding_window", 0, &use, path, err) ||
                cfg_int(root, "max_window_layers", "max_window_layers", 0, 28, 0, INT32_MAX, &mwl, path, err))
                goto done;
            if (!jisnull(lt) && !cJSON_IsArray(lt)) {
                alrd_errf(err, "%s: layer_types: expected an array of strings", path);
                goto done;
            }
            if (cJSON_IsArray(lt)) {
                first = -1;
                int i = 0;
                for (const cJSON *e = lt->child; e; e = e->next, i++) {
                    if (!cJSON_IsString(e)) {
                        alrd_errf(err, "%s: layer_types[%d]: expected a string", path, i);
                        goto done;
                    }
                    if (!strcmp(e->valuestring, "sliding_attention")) {
                        if (first < 0) first = i;
                        last = i;
                    }
                }
                if (first < 0) use = 0;
            } else if (mwl >= c->n_layers) {
                use = 0;
            } else {
                first = mwl;
            }
        }
        if (use && sw > 0 && sw < c->max_ctx) {
            if (qwen)
                alrd_errf(err, "%s: sliding_window: %d < max_position_embeddings %d (use_sliding_window, layers %d..%d): "
                          "sliding-window attention not supported", path, sw, c->max_ctx, first, last);
            else
                alrd_errf(err, "%s: sliding_window: %d < max_position_embeddings %d: sliding-window attention not supported",
                          path, sw, c->max_ctx);
            goto done;
        }
    }
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

int alrd_hf_config_read(alrd_config *c, const char *path, alrd_error *err) {
    char *text = NULL;
    size_t n = 0;
    memset(c, 0, sizeof *c);
    if (alrd_read_file(path, 16u << 20, &text, &n, err) != 0) return -1;
    int rc = alrd_hf_config_parse(c, text, n, path, err);
    free(text);
    return rc;
}

/* Shortest decimal that reads back as the same float, valid JSON. */
static void fmt_float(float f, char *buf, size_t cap) {
    /* whole numbers as transformers prints them ("100000.0") */
    if (fabsf(f) < 1e15f && f == floorf(f)) {
        snprintf(buf, cap, "%.1f", (double)f);
        return;
    }
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, cap, "%.*g", p, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
}

int alrd_hf_config_write(const alrd_config *c, const alrd_vocab *v, const char *torch_dtype,
                         const char *path, alrd_error *err) {
    if (strcmp(c->arch, "llama"))
        return alrd_errf(err, "%s: model_type: '%s' has no config.json writer (llama only)", path,
                         c->arch);
    if (strcmp(torch_dtype, "float32") && strcmp(torch_dtype, "float16") &&
        strcmp(torch_dtype, "bfloat16"))
        return alrd_errf(err, "%s: torch_dtype: '%s' not one of float32, float16, bfloat16", path,
                         torch_dtype);
    if (!isfinite(c->rms_eps) || !isfinite(c->rope_theta) || c->rms_eps <= 0 || c->rope_theta <= 0)
        return alrd_errf(err, "%s: rms_norm_eps/rope_theta: not positive finite numbers", path);
    char eps[32], theta[32], ids[96] = "", rope[512];
    fmt_float(c->rms_eps, eps, sizeof eps);
    fmt_float(c->rope_theta, theta, sizeof theta);
    if (v && v->bos_id >= 0) snprintf(ids, sizeof ids, "  \"bos_token_id\": %d,\n", (int)v->bos_id);
    if (v && v->eos_id >= 0)
        snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "  \"eos_token_id\": %d,\n",
                 (int)v->eos_id);
    if (c->rope_llama3) {
        char f[32], lo[32], hi[32];
        fmt_float(c->rope_factor, f, sizeof f);
        fmt_float(c->rope_low_freq_factor, lo, sizeof lo);
        fmt_float(c->rope_high_freq_factor, hi, sizeof hi);
        snprintf(rope, sizeof rope,
                 "{\n    \"factor\": %s,\n    \"high_freq_factor\": %s,\n    \"low_freq_factor\": %s,\n"
                 "    \"original_max_position_embeddings\": %d,\n    \"rope_type\": \"llama3\"\n  }",
                 f, hi, lo, c->rope_orig_ctx);
    } else {
        snprintf(rope, sizeof rope, "null");
    }
    char buf[4096];
    snprintf(buf, sizeof buf,
             "{\n"
             "  \"architectures\": [\n    \"LlamaForCausalLM\"\n  ],\n"
             "  \"attention_bias\": %s,\n"
             "  \"attention_dropout\": 0.0,\n"
             "%s"
             "  \"head_dim\": %d,\n"
             "  \"hidden_act\": \"silu\",\n"
             "  \"hidden_size\": %d,\n"
             "  \"initializer_range\": 0.02,\n"
             "  \"intermediate_size\": %d,\n"
             "  \"max_position_embeddings\": %d,\n"
             "  \"mlp_bias\": %s,\n"
             "  \"model_type\": \"llama\",\n"
             "  \"num_attention_heads\": %d,\n"
             "  \"num_hidden_layers\": %d,\n"
             "  \"num_key_value_heads\": %d,\n"
             "  \"pretraining_tp\": 1,\n"
             "  \"rms_norm_eps\": %s,\n"
             "  \"rope_scaling\": %s,\n"
             "  \"rope_theta\": %s,\n"
             "  \"tie_word_embeddings\": %s,\n"
             "  \"torch_dtype\": \"%s\",\n"
             "  \"use_cache\": true,\n"
             "  \"vocab_size\": %d\n"
             "}\n",
             c->attention_bias ? "true" : "false", ids, c->head_dim, c->hidden, c->ffn, c->max_ctx,
             c->mlp_bias ? "true" : "false", c->n_heads, c->n_layers, c->n_kv_heads, eps, rope,
             theta, c->tie_embeddings ? "true" : "false", torch_dtype, c->vocab_size);
    return write_text(path, buf, err);
}

int alrd_hf_generation_config_write(const alrd_vocab *v, const char *path, alrd_error *err) {
    cJSON *r = cJSON_CreateObject();
    if (!r) return alrd_errf(err, "%s: out of memory", path);
    cJSON_AddTrueToObject(r, "_from_model_config");
    if (v->bos_id >= 0) cJSON_AddNumberToObject(r, "bos_token_id", v->bos_id);
    if (v->eos_id >= 0) cJSON_AddNumberToObject(r, "eos_token_id", v->eos_id);
    if (v->pad_id >= 0) cJSON_AddNumberToObject(r, "pad_token_id", v->pad_id);
    int rc = write_json(path, r, 1, err);
    cJSON_Delete(r);
    return rc;
}

/* ------------------------------------------------- string -> id map */

typedef struct {
    uint32_t cap;   /* power of two */
    int32_t *slot;  /* token id or -1 */
    char *const *keys;
} strmap;

static uint32_t hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static int map_init(strmap *m, char *const *keys, int32_t n) {
    m->cap = 16;
    while (m->cap < (uint32_t)n * 2u) m->cap <<= 1;
    m->keys = keys;
    m->slot = malloc(m->cap * sizeof *m->slot);
    if (!m->slot) return -1;
    for (uint32_t i = 0; i < m->cap; i++) m->slot[i] = -1;
    return 0;
}

static void map_free(strmap *m) { free(m->slot); m->slot = NULL; }

static int32_t map_get(const strmap *m, const char *s, size_t n) {
    for (uint32_t i = hash_bytes(s, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        int32_t id = m->slot[i];
        if (id < 0) return -1;
        const char *k = m->keys[id];
        if (strlen(k) == n && !memcmp(k, s, n)) return id;
    }
}

/* Inserts id; returns the id already holding the same string, or -1. */
static int32_t map_put(strmap *m, int32_t id) {
    const char *s = m->keys[id];
    size_t n = strlen(s);
    for (uint32_t i = hash_bytes(s, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        int32_t o = m->slot[i];
        if (o < 0) { m->slot[i] = id; return -1; }
        if (!strcmp(m->keys[o], s)) return o;
    }
}

/* Maps every token; a duplicate string keeps the lower id. */
static int map_vocab(strmap *m, const alrd_vocab *v) {
    if (map_init(m, v->tokens, v->n_tokens) != 0) return -1;
    for (int32_t i = 0; i < v->n_tokens; i++) map_put(m, i);
    return 0;
}

/* -------------------------------------------------- tokenizer.json read */

static const char LLAMA3_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char SPACE_MARK[] = "\xe2\x96\x81"; /* U+2581, SentencePiece's space */

static int is_bytelevel(const cJSON *p, int use_regex) {
    return jtype(p, "ByteLevel") && !jbool(p, "add_prefix_space", 1) &&
           jbool(p, "use_regex", 1) == use_regex;
}

static int is_split_regex(const cJSON *p, const char *re) {
    const char *pat = jstr(jget(p, "pattern"), "Regex");
    const char *beh = jstr(p, "behavior");
    return jtype(p, "Split") && pat && !strcmp(pat, re) && beh && !strcmp(beh, "Isolated") &&
           !jbool(p, "invert", 0);
}

/* The byte-level pre-tokenizer flavours llama.cpp knows, by its names. */
static const char *bytes_pre(const cJSON *pt, const cJSON *norm) {
    const char *pre = NULL;
    if (is_bytelevel(pt, 1)) {
        pre = "gpt-2";
    } else if (jtype(pt, "Sequence")) {
        const cJSON *a = jget(pt, "pretokenizers");
        if (cJSON_GetArraySize(a) == 2) {
            const cJSON *p0 = a->child, *p1 = a->child->next;
            if (jtype(p0, "Digits") && jbool(p0, "individual_digits", 0) && is_bytelevel(p1, 1))
                pre = "smollm";
            else if (is_split_regex(p0, LLAMA3_REGEX) && is_bytelevel(p1, 0))
                pre = "llama-bpe";
            else if (is_split_regex(p0, QWEN2_REGEX) && is_bytelevel(p1, 0))
                pre = "qwen2";
        }
    }
    if (!pre) return NULL;
    int nfc = jtype(norm, "NFC");
    if (!jisnull(norm) && !(nfc && !strcmp(pre, "qwen2"))) return NULL;
    return pre;
}

static int is_replace_space(const cJSON *n) {
    const char *pat = jstr(jget(n, "pattern"), "String");
    const char *c = jstr(n, "content");
    return jtype(n, "Replace") && pat && !strcmp(pat, " ") && c && !strcmp(c, SPACE_MARK);
}

/* SentencePiece-style space handling: 1 with a space prefix, 0 without,
 * -1 when the file does something else. */
static int spm_space_prefix(const cJSON *norm, const cJSON *pt) {
    if (jtype(norm, "Sequence") && jisnull(pt)) {
        const cJSON *a = jget(norm, "normalizers");
        int n = cJSON_GetArraySize(a), prefix = 0, replace = 0;
        for (const cJSON *x = a ? a->child : NULL; x; x = x->next) {
            const char *pp = jstr(x, "prepend");
            if (jtype(x, "Prepend") && pp && !strcmp(pp, SPACE_MARK)) prefix++;
            else if (is_replace_space(x)) replace++;
            else return -1;
        }
        return replace == 1 && prefix + replace == n ? prefix > 0 : -1;
    }
    if (is_replace_space(norm) && jisnull(pt)) return 0;
    if (jisnull(norm) && jtype(pt, "Metaspace")) {
        const char *rep = jstr(pt, "replacement");
        if (!rep || strcmp(rep, SPACE_MARK) || jbool(pt, "split", 1)) return -1;
        const char *ps = jstr(pt, "prepend_scheme");
        if (ps) return strcmp(ps, "never") != 0;
        return jbool(pt, "add_prefix_space", 1);
    }
    return -1;
}

/* A special token as tokenizer_config.json spells it: "tok" or
 * {"content": "tok", ...}. NULL when absent or null. */
static const char *special_str(const cJSON *j) {
    if (cJSON_IsString(j)) return j->valuestring;
    if (cJSON_IsObject(j)) return jstr(j, "content");
    return NULL;
}

/* TemplateProcessing (alone or in a Sequence) of the post-processor: the
 * special tokens it puts before / after a single sequence. */
static void template_specials(const cJSON *pp, const char **first, const char **last) {
    *first = *last = NULL;
    if (jtype(pp, "Sequence")) {
        for (const cJSON *x = jget(pp, "processors") ? jget(pp, "processors")->child : NULL; x;
             x = x->next)
            if (jtype(x, "TemplateProcessing")) { pp = x; break; }
    }
    if (!jtype(pp, "TemplateProcessing")) return;
    const cJSON *single = jget(pp, "single");
    if (!cJSON_IsArray(single) || !single->child) return;
    *first = jstr(jget(single->child, "SpecialToken"), "id");
    const cJSON *l = single->child;
    while (l->next) l = l->next;
    if (l != single->child) *last = jstr(jget(l, "SpecialToken"), "id");
}

static int set_tok(alrd_vocab *v, int32_t id, const char *s, const char *path, const char *field,
                   alrd_error *err) {
    if (v->tokens[id]) {
        if (!strcmp(v->tokens[id], s)) return 0;
        return alrd_errf(err, "%s: %s: id %d is both '%.60s' and '%.60s'", path, field, (int)id,
                         v->tokens[id], s);
    }
    v->tokens[id] = strdup(s);
    return v->tokens[id] ? 0 : alrd_errf(err, "%s: out of memory", path);
}

/* A token id from a JSON number. */
static int tok_id(const cJSON *j, int32_t *out) {
    if (!cJSON_IsNumber(j)) return -1;
    double d = j->valuedouble;
    if (!(d >= 0 && d < ALRD_HF_MAX_TOKENS) || d != (double)(int32_t)d) return -1;
    *out = (int32_t)d;
    return 0;
}

static int is_byte_token(const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    return strlen(s) == 6 && !memcmp(s, "<0x", 3) && strchr(hex, s[3]) && s[3] &&
           strchr(hex, s[4]) && s[4] && s[5] == '>';
}

/* Resolves a token string from tokenizer_config.json to an id. */
static int config_token(const cJSON *tc, const char *key, const strmap *m, int32_t *id,
                        const char *tc_path, alrd_error *err) {
    const cJSON *j = jget(tc, key);
    if (jisnull(j)) return 0;
    const char *s = special_str(j);
    if (!s) return alrd_errf(err, "%s: %s: expected a string or {\"content\": ...}", tc_path, key);
    int32_t t = map_get(m, s, strlen(s));
    if (t < 0) return alrd_errf(err, "%s: %s: '%.60s' is not in the vocabulary", tc_path, key, s);
    *id = t;
    return 0;
}

static int32_t first_present(const strmap *m, const char *const *names) {
    for (; *names; names++) {
        int32_t id = map_get(m, *names, strlen(*names));
        if (id >= 0) return id;
    }
    return -1;
}

/* tokenizer_config.json / chat_template.jinja / fallbacks: bos, eos, unk,
 * pad, add_bos/add_eos and the chat template. */
static int read_specials(alrd_vocab *v, const cJSON *root, const strmap *m, const char *path,
                         alrd_error *err) {
    char dir[1024], tc_path[1100], jinja[1100];
    dir_of(path, dir, sizeof dir);
    snprintf(tc_path, sizeof tc_path, "%stokenizer_config.json", dir);
    snprintf(jinja, sizeof jinja, "%schat_template.jinja", dir);
    cJSON *tc = NULL;
    if (is_file(tc_path) && !(tc = read_json(tc_path, err))) return -1;
    int rc = -1;
    const char *pre_first, *pre_last;
    template_specials(jget(root, "post_processor"), &pre_first, &pre_last);
    /* model.unk_token names the unknown token of SPM files */
    const char *unk = jstr(jget(root, "model"), "unk_token");
    if (unk) v->unk_id = map_get(m, unk, strlen(unk));
    if (tc) {
        if (config_token(tc, "bos_token", m, &v->bos_id, tc_path, err) ||
            config_token(tc, "eos_token", m, &v->eos_id, tc_path, err) ||
            config_token(tc, "unk_token", m, &v->unk_id, tc_path, err) ||
            config_token(tc, "pad_token", m, &v->pad_id, tc_path, err))
            goto done;
        const cJSON *ct = jget(tc, "chat_template");
        const char *tmpl = NULL;
        if (cJSON_IsString(ct)) {
            tmpl = ct->valuestring;
        } else if (cJSON_IsArray(ct)) { /* [{"name": ..., "template": ...}]: take "default" */
            for (const cJSON *x = ct->child; x; x = x->next) {
                const char *nm = jstr(x, "name");
                if (!tmpl || (nm && !strcmp(nm, "default"))) tmpl = jstr(x, "template");
            }
        } else if (!jisnull(ct)) {
            alrd_errf(err, "%s: chat_template: expected a string or a list of templates", tc_path);
            goto done;
        }
        if (tmpl && !(v->chat_template = strdup(tmpl))) {
            alrd_errf(err, "%s: out of memory", tc_path);
            goto done;
        }
    } else {
        static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<|endoftext|>",
                                                "<|im_start|>", NULL};
        static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>",
                                                "<|im_end|>", NULL};
        /* the token the post-processor prepends is the best evidence */
        if (pre_first) v->bos_id = map_get(m, pre_first, strlen(pre_first));
        if (pre_last) v->eos_id = map_get(m, pre_last, strlen(pre_last));
        if (v->bos_id < 0) v->bos_id = first_present(m, bos_names);
        if (v->eos_id < 0) v->eos_id = first_present(m, eos_names);
    }
    if (pre_first && v->bos_id < 0) v->bos_id = map_get(m, pre_first, strlen(pre_first));
    /* add_bos_token in the config wins; else the post-processor decides */
    const cJSON *ab = jget(tc, "add_bos_token"), *ae = jget(tc, "add_eos_token");
    if (!jisnull(ab) && !cJSON_IsBool(ab)) {
        alrd_errf(err, "%s: add_bos_token: expected true or false", tc_path);
        goto done;
    }
    if (!jisnull(ae) && !cJSON_IsBool(ae)) {
        alrd_errf(err, "%s: add_eos_token: expected true or false", tc_path);
        goto done;
    }
    v->add_bos = cJSON_IsBool(ab) ? cJSON_IsTrue(ab)
                 : pre_first && v->bos_id >= 0 && !strcmp(pre_first, v->tokens[v->bos_id]);
    v->add_eos = cJSON_IsBool(ae) ? cJSON_IsTrue(ae)
                 : pre_last && v->eos_id >= 0 && !strcmp(pre_last, v->tokens[v->eos_id]);
    if (!v->chat_template && is_file(jinja)) {
        size_t n;
        if (alrd_read_file(jinja, 1u << 20, &v->chat_template, &n, err) != 0) goto done;
    }
    rc = 0;
done:
    cJSON_Delete(tc);
    return rc;
}

/* SPM scores from the merge order: a token made by merge r scores -r, so
 * the highest score is the earliest merge, as in SentencePiece. */
static int spm_scores(alrd_vocab *v, const strmap *m, const char *path, alrd_error *err) {
    v->scores = malloc((size_t)v->n_tokens * sizeof *v->scores);
    if (!v->scores) return alrd_errf(err, "%s: out of memory", path);
    for (int32_t i = 0; i < v->n_tokens; i++) v->scores[i] = -1e9f;
    char *buf = NULL;
    size_t cap = 0;
    for (int32_t r = 0; r < v->n_merges; r++) {
        const char *s = v->merges[r], *sp = strchr(s, ' ');
        size_t n = strlen(s);
        if (n + 1 > cap) {
            cap = n + 64;
            char *nb = realloc(buf, cap);
            if (!nb) { free(buf); return alrd_errf(err, "%s: out of memory", path); }
            buf = nb;
        }
        size_t l = (size_t)(sp - s);
        memcpy(buf, s, l);
        memcpy(buf + l, sp + 1, n - l - 1);
        int32_t id = map_get(m, buf, n - 1);
        if (id < 0) {
            free(buf);
            return alrd_errf(err, "%s: model.merges[%d]: '%.60s' makes a token not in the vocabulary",
                             path, (int)r, s);
        }
        if (v->scores[id] == -1e9f) v->scores[id] = -(float)r;
    }
    free(buf);
    return 0;
}

int alrd_hf_vocab_read(alrd_vocab *v, const char *path, alrd_error *err) {
    memset(v, 0, sizeof *v);
    v->bos_id = v->eos_id = v->unk_id = v->pad_id = -1;
    cJSON *root = read_json(path, err);
    if (!root) return -1;
    strmap m = {0};
    int rc = -1;
    const cJSON *model = jget(root, "model");
    const cJSON *vocab = jget(model, "vocab");
    const cJSON *merges = jget(model, "merges");
    const cJSON *added = jget(root, "added_tokens");
    const char *mtype = jstr(model, "type");
    if (!cJSON_IsObject(model)) { alrd_errf(err, "%s: model: missing or not an object", path); goto fail; }
    if (mtype ? strcmp(mtype, "BPE") != 0 : !merges) {
        alrd_errf(err, "%s: model.type: '%.40s' not supported (BPE)", path, mtype ? mtype : "?");
        goto fail;
    }
    if (!cJSON_IsObject(vocab) || !vocab->child) {
        alrd_errf(err, "%s: model.vocab: missing, empty or not an object", path);
        goto fail;
    }
    if (!jisnull(merges) && !cJSON_IsArray(merges)) {
        alrd_errf(err, "%s: model.merges: expected an array", path);
        goto fail;
    }
    if (!jisnull(added) && !cJSON_IsArray(added)) {
        alrd_errf(err, "%s: added_tokens: expected an array", path);
        goto fail;
    }
    /* ids: the vocabulary spans 0..max id over model.vocab and added_tokens */
    int32_t max_id = -1, id = 0;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        if (tok_id(e, &id) != 0) {
            alrd_errf(err, "%s: model.vocab: '%.60s': id not an integer in [0, %d)", path,
                      e->string, ALRD_HF_MAX_TOKENS);
            goto fail;
        }
        if (id > max_id) max_id = id;
    }
    int ai = 0;
    for (const cJSON *e = added ? added->child : NULL; e; e = e->next, ai++) {
        if (tok_id(jget(e, "id"), &id) != 0 || !jstr(e, "content")) {
            alrd_errf(err, "%s: added_tokens[%d]: expected {\"id\": integer in [0, %d), \"content\": string}",
                      path, ai, ALRD_HF_MAX_TOKENS);
            goto fail;
        }
        if (id > max_id) max_id = id;
    }
    v->n_tokens = max_id + 1;
    v->tokens = calloc((size_t)v->n_tokens, sizeof *v->tokens);
    v->types = malloc((size_t)v->n_tokens * sizeof *v->types);
    if (!v->tokens || !v->types) { alrd_errf(err, "%s: out of memory", path); goto fail; }
    for (int32_t i = 0; i < v->n_tokens; i++) v->types[i] = ALRD_TOKEN_NORMAL;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        tok_id(e, &id);
        if (set_tok(v, id, e->string, path, "model.vocab", err)) goto fail;
    }
    ai = 0;
    for (const cJSON *e = added ? added->child : NULL; e; e = e->next, ai++) {
        tok_id(jget(e, "id"), &id);
        char field[48];
        snprintf(field, sizeof field, "added_tokens[%d]", ai);
        if (set_tok(v, id, jstr(e, "content"), path, field, err)) goto fail;
        v->types[id] = jbool(e, "special", 0) ? ALRD_TOKEN_CONTROL : ALRD_TOKEN_USER_DEFINED;
    }
    for (int32_t i = 0; i < v->n_tokens; i++)
        if (!v->tokens[i]) { /* a hole: llama.cpp fills these the same way */
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%d]", (int)i);
            if (!(v->tokens[i] = strdup(pad))) { alrd_errf(err, "%s: out of memory", path); goto fail; }
            v->types[i] = ALRD_TOKEN_UNUSED;
        }
    /* merges: "a b" strings or ["a", "b"] pairs, stored as "a b" */
    int nm = merges ? cJSON_GetArraySize(merges) : 0;
    v->merges = calloc(nm ? (size_t)nm : 1, sizeof *v->merges);
    if (!v->merges) { alrd_errf(err, "%s: out of memory", path); goto fail; }
    int mi = 0;
    for (const cJSON *e = merges ? merges->child : NULL; e; e = e->next, mi++) {
        if (cJSON_IsString(e) && strchr(e->valuestring, ' ')) {
            v->merges[mi] = strdup(e->valuestring);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            const char *a = e->child->valuestring, *b = e->child->next->valuestring;
            size_t la = strlen(a), lb = strlen(b);
            if ((v->merges[mi] = malloc(la + lb + 2))) {
                memcpy(v->merges[mi], a, la);
                v->merges[mi][la] = ' ';
                memcpy(v->merges[mi] + la + 1, b, lb + 1);
            }
        } else {
            v->n_merges = mi;
            alrd_errf(err, "%s: model.merges[%d]: expected \"a b\" or [\"a\", \"b\"]", path, mi);
            goto fail;
        }
        if (!v->merges[mi]) { v->n_merges = mi; alrd_errf(err, "%s: out of memory", path); goto fail; }
    }
    v->n_merges = nm;
    if (map_vocab(&m, v) != 0) { alrd_errf(err, "%s: out of memory", path); goto fail; }
    const cJSON *norm = jget(root, "normalizer"), *pt = jget(root, "pre_tokenizer");
    if (jbool(model, "byte_fallback", 0)) {
        int sp = spm_space_prefix(norm, pt);
        if (sp < 0) {
            alrd_errf(err, "%s: normalizer/pre_tokenizer: byte_fallback BPE without the SentencePiece "
                      "U+2581 space handling (Replace or Metaspace) is not supported", path);
            goto fail;
        }
        v->kind = ALRD_VOCAB_SPM;
        snprintf(v->pre, sizeof v->pre, "default");
        v->add_space_prefix = sp;
        for (int32_t i = 0; i < v->n_tokens; i++)
            if (v->types[i] == ALRD_TOKEN_NORMAL && is_byte_token(v->tokens[i]))
                v->types[i] = ALRD_TOKEN_BYTE;
        if (spm_scores(v, &m, path, err) != 0) goto fail;
    } else {
        const char *pre = bytes_pre(pt, norm);
        if (!pre) {
            alrd_errf(err, "%s: pre_tokenizer: unsupported (expected ByteLevel, Digits+ByteLevel or "
                      "a llama3/qwen2 Split+ByteLevel, with no normalizer)", path);
            goto fail;
        }
        v->kind = ALRD_VOCAB_BPE_BYTES;
        snprintf(v->pre, sizeof v->pre, "%s", pre);
    }
    if (read_specials(v, root, &m, path, err) != 0) goto fail;
    if (v->kind == ALRD_VOCAB_SPM && v->unk_id >= 0 && v->types[v->unk_id] != ALRD_TOKEN_BYTE)
        v->types[v->unk_id] = ALRD_TOKEN_UNKNOWN;
    rc = 0;
fail:
    map_free(&m);
    cJSON_Delete(root);
    if (rc != 0) alrd_vocab_free(v);
    return rc;
}

/* ------------------------------------------------- tokenizer.json write */

static int utf8_valid(const char *s) {
    const uint8_t *p = (const uint8_t *)s;
    while (*p) {
        int n = *p < 0x80 ? 0 : (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2
                : (*p & 0xF8) == 0xF0 ? 3 : -1;
        if (n < 0 || (n == 1 && *p < 0xC2)) return 0;
        uint32_t cp = n == 0 ? *p : n == 1 ? (*p & 0x1Fu) : n == 2 ? (*p & 0x0Fu) : (*p & 0x07u);
        p++;
        for (int k = 0; k < n; k++, p++) {
            if ((*p & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (*p & 0x3Fu);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
    }
    return 1;
}

enum { PRE_GPT2, PRE_SMOLLM, PRE_LLAMA3, PRE_QWEN2 };

static int pre_kind(const char *pre) {
    if (!strcmp(pre, "smollm")) return PRE_SMOLLM;
    if (!strcmp(pre, "gpt-2") || !strcmp(pre, "gpt2") || !strcmp(pre, "default") || !pre[0])
        return PRE_GPT2;
    if (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3")) return PRE_LLAMA3;
    if (!strcmp(pre, "qwen2")) return PRE_QWEN2;
    return -1;
}

static cJSON *bytelevel(int add_prefix_space, int trim_offsets, int use_regex) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "ByteLevel");
    cJSON_AddBoolToObject(o, "add_prefix_space", add_prefix_space);
    cJSON_AddBoolToObject(o, "trim_offsets", trim_offsets);
    cJSON_AddBoolToObject(o, "use_regex", use_regex);
    return o;
}

static cJSON *split_regex(const char *re) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "Split");
    cJSON *p = cJSON_AddObjectToObject(o, "pattern");
    cJSON_AddStringToObject(p, "Regex", re);
    cJSON_AddStringToObject(o, "behavior", "Isolated");
    cJSON_AddFalseToObject(o, "invert");
    return o;
}

static cJSON *replace_norm(const char *from, const char *to) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "Replace");
    cJSON *p = cJSON_AddObjectToObject(o, "pattern");
    cJSON_AddStringToObject(p, "String", from);
    cJSON_AddStringToObject(o, "content", to);
    return o;
}

static cJSON *typed(const char *type) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    return o;
}

static void add_template_piece(cJSON *arr, const char *kind, const char *id, int type_id) {
    cJSON *o = cJSON_CreateObject(), *in = cJSON_AddObjectToObject(o, kind);
    cJSON_AddStringToObject(in, "id", id);
    cJSON_AddNumberToObject(in, "type_id", type_id);
    cJSON_AddItemToArray(arr, o);
}

/* TemplateProcessing that adds bos (and/or eos) around each sequence. */
static cJSON *template_post(const alrd_vocab *v, int bos, int eos) {
    cJSON *o = typed("TemplateProcessing");
    cJSON *single = cJSON_AddArrayToObject(o, "single"), *pair = cJSON_AddArrayToObject(o, "pair");
    const char *b = bos ? v->tokens[v->bos_id] : NULL, *e = eos ? v->tokens[v->eos_id] : NULL;
    if (b) add_template_piece(single, "SpecialToken", b, 0);
    add_template_piece(single, "Sequence", "A", 0);
    if (e) add_template_piece(single, "SpecialToken", e, 0);
    if (b) add_template_piece(pair, "SpecialToken", b, 0);
    add_template_piece(pair, "Sequence", "A", 0);
    if (e) add_template_piece(pair, "SpecialToken", e, 0);
    if (b) add_template_piece(pair, "SpecialToken", b, 1);
    add_template_piece(pair, "Sequence", "B", 1);
    if (e) add_template_piece(pair, "SpecialToken", e, 1);
    cJSON *st = cJSON_AddObjectToObject(o, "special_tokens");
    for (int k = 0; k < 2; k++) {
        int32_t id = k == 0 ? (b ? v->bos_id : -1) : (e ? v->eos_id : -1);
        if (id < 0 || cJSON_GetObjectItemCaseSensitive(st, v->tokens[id])) continue;
        cJSON *x = cJSON_AddObjectToObject(st, v->tokens[id]);
        cJSON_AddStringToObject(x, "id", v->tokens[id]);
        int one = (int)id;
        cJSON_AddItemToObject(x, "ids", cJSON_CreateIntArray(&one, 1));
        cJSON *toks = cJSON_AddArrayToObject(x, "tokens");
        cJSON_AddItemToArray(toks, cJSON_CreateString(v->tokens[id]));
    }
    return o;
}

typedef struct { int32_t l, r, res; float score; } spm_merge;

static int cmp_spm_merge(const void *a, const void *b) {
    const spm_merge *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->res != y->res) return x->res < y->res ? -1 : 1;
    if (x->l != y->l) return x->l < y->l ? -1 : 1;
    return (x->r > y->r) - (x->r < y->r);
}

static int32_t vtype(const alrd_vocab *v, int32_t i) { return v->types ? v->types[i] : ALRD_TOKEN_NORMAL; }

/* Merges for an SPM vocab that has only scores, as transformers'
 * SentencePieceExtractor builds them: every split of a piece into two
 * pieces, ordered by the piece's score (highest first), then by ids. */
static int spm_merges_from_scores(const alrd_vocab *v, const strmap *m, cJSON *out,
                                  const char *path, alrd_error *err) {
    if (!v->scores) return alrd_errf(err, "%s: vocab: SPM vocabulary has neither merges nor scores", path);
    size_t n = 0, cap = 1024;
    spm_merge *ms = malloc(cap * sizeof *ms);
    if (!ms) return alrd_errf(err, "%s: out of memory", path);
    for (int32_t t = 0; t < v->n_tokens; t++) {
        if (vtype(v, t) != ALRD_TOKEN_NORMAL) continue;
        const char *s = v->tokens[t];
        size_t len = strlen(s);
        for (size_t k = 1; k < len; k++) {
            if (((uint8_t)s[k] & 0xC0) == 0x80) continue; /* split on characters */
            int32_t l = map_get(m, s, k), r = map_get(m, s + k, len - k);
            if (l < 0 || r < 0 || vtype(v, l) != ALRD_TOKEN_NORMAL || vtype(v, r) != ALRD_TOKEN_NORMAL)
                continue;
            if (n == cap) {
                cap *= 2;
                spm_merge *nm = realloc(ms, cap * sizeof *ms);
                if (!nm) { free(ms); return alrd_errf(err, "%s: out of memory", path); }
                ms = nm;
            }
            ms[n++] = (spm_merge){l, r, t, v->scores[t]};
        }
    }
    qsort(ms, n, sizeof *ms, cmp_spm_merge);
    int rc = 0;
    char *buf = NULL;
    size_t bcap = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *a = v->tokens[ms[i].l], *b = v->tokens[ms[i].r];
        size_t need = strlen(a) + strlen(b) + 2;
        if (need > bcap) {
            bcap = need + 64;
            char *nb = realloc(buf, bcap);
            if (!nb) { rc = alrd_errf(err, "%s: out of memory", path); break; }
            buf = nb;
        }
        snprintf(buf, bcap, "%s %s", a, b);
        if (!cJSON_AddItemToArray(out, cJSON_CreateString(buf))) rc = alrd_errf(err, "%s: out of memory", path);
    }
    free(buf);
    free(ms);
    return rc;
}

/* An UNUSED "[PADn]" filler at id n, as llama.cpp and the reader make for
 * ids the tokenizer does not define. */
static int is_pad_filler(const alrd_vocab *v, int32_t i) {
    char pad[32];
    snprintf(pad, sizeof pad, "[PAD%d]", (int)i);
    return vtype(v, i) == ALRD_TOKEN_UNUSED && !strcmp(v->tokens[i], pad);
}

static int is_added_type(int32_t t) {
    return t == ALRD_TOKEN_CONTROL || t == ALRD_TOKEN_USER_DEFINED || t == ALRD_TOKEN_UNKNOWN;
}

static cJSON *added_token_json(const alrd_vocab *v, int32_t i, int with_id) {
    cJSON *o = cJSON_CreateObject();
    if (with_id) cJSON_AddNumberToObject(o, "id", i);
    cJSON_AddStringToObject(o, "content", v->tokens[i]);
    cJSON_AddFalseToObject(o, "single_word");
    cJSON_AddFalseToObject(o, "lstrip");
    cJSON_AddFalseToObject(o, "rstrip");
    cJSON_AddFalseToObject(o, "normalized");
    cJSON_AddBoolToObject(o, "special", vtype(v, i) != ALRD_TOKEN_USER_DEFINED);
    return o;
}

/* Checks the ids and strings a writer relies on. */
static int check_vocab(const alrd_vocab *v, const char *path, alrd_error *err) {
    if (v->n_tokens <= 0 || !v->tokens) return alrd_errf(err, "%s: vocab: no tokens", path);
    const int32_t sp[4] = {v->bos_id, v->eos_id, v->unk_id, v->pad_id};
    for (int k = 0; k < 4; k++)
        if (sp[k] < -1 || sp[k] >= v->n_tokens)
            return alrd_errf(err, "%s: vocab: special token id %d out of range", path, (int)sp[k]);
    for (int32_t i = 0; i < v->n_tokens; i++)
        if (!v->tokens[i] || !utf8_valid(v->tokens[i]))
            return alrd_errf(err, "%s: vocab: token %d: missing or not valid UTF-8", path, (int)i);
    for (int32_t i = 0; i < v->n_merges; i++)
        if (!v->merges[i] || !utf8_valid(v->merges[i]) || !strchr(v->merges[i], ' '))
            return alrd_errf(err, "%s: vocab: merge %d: not a valid \"a b\" string", path, (int)i);
    return 0;
}

int alrd_hf_tokenizer_write(const alrd_vocab *v, const char *path, alrd_error *err) {
    if (check_vocab(v, path, err) != 0) return -1;
    int pk = -1;
    if (v->kind == ALRD_VOCAB_BPE_BYTES) {
        if ((pk = pre_kind(v->pre)) < 0)
            return alrd_errf(err, "%s: vocab: pre-tokenizer '%s' has no tokenizer.json form "
                             "(smollm, gpt-2, llama-bpe, qwen2)", path, v->pre);
        if (v->n_merges <= 0) return alrd_errf(err, "%s: vocab: byte-level BPE without merges", path);
    } else if (v->kind != ALRD_VOCAB_SPM) {
        return alrd_errf(err, "%s: vocab: kind %d not supported", path, (int)v->kind);
    }
    strmap m = {0};
    if (map_init(&m, v->tokens, v->n_tokens) != 0) return alrd_errf(err, "%s: out of memory", path);
    for (int32_t i = 0; i < v->n_tokens; i++) {
        int32_t o = map_put(&m, i);
        if (o >= 0) {
            map_free(&m);
            return alrd_errf(err, "%s: vocab: tokens %d and %d are both '%.60s' (tokenizer.json "
                             "needs unique tokens)", path, (int)o, (int)i, v->tokens[i]);
        }
    }
    int rc = -1;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int32_t i = 0; i < v->n_tokens; i++)
        if (is_added_type(vtype(v, i))) cJSON_AddItemToArray(added, added_token_json(v, i, 1));
    int bos = v->add_bos && v->bos_id >= 0, eos = v->add_eos && v->eos_id >= 0;
    if (v->kind == ALRD_VOCAB_BPE_BYTES) {
        if (pk == PRE_QWEN2) cJSON_AddItemToObject(root, "normalizer", typed("NFC"));
        else cJSON_AddNullToObject(root, "normalizer");
        cJSON *pt;
        if (pk == PRE_GPT2) {
            pt = bytelevel(0, 1, 1);
        } else {
            pt = typed("Sequence");
            cJSON *a = cJSON_AddArrayToObject(pt, "pretokenizers");
            if (pk == PRE_SMOLLM) {
                cJSON *d = typed("Digits");
                cJSON_AddTrueToObject(d, "individual_digits");
                cJSON_AddItemToArray(a, d);
                cJSON_AddItemToArray(a, bytelevel(0, 1, 1));
            } else {
                cJSON_AddItemToArray(a, split_regex(pk == PRE_LLAMA3 ? LLAMA3_REGEX : QWEN2_REGEX));
                cJSON_AddItemToArray(a, bytelevel(0, 1, 0));
            }
        }
        cJSON_AddItemToObject(root, "pre_tokenizer", pt);
        cJSON_AddItemToObject(root, "post_processor",
                              bos || eos ? template_post(v, bos, eos) : bytelevel(1, 0, 1));
        cJSON_AddItemToObject(root, "decoder", bytelevel(1, 1, 1));
    } else {
        cJSON *n = typed("Sequence"), *a = cJSON_AddArrayToObject(n, "normalizers");
        if (v->add_space_prefix) {
            cJSON *p = typed("Prepend");
            cJSON_AddStringToObject(p, "prepend", SPACE_MARK);
            cJSON_AddItemToArray(a, p);
        }
        cJSON_AddItemToArray(a, replace_norm(" ", SPACE_MARK));
        cJSON_AddItemToObject(root, "normalizer", n);
        cJSON_AddNullToObject(root, "pre_tokenizer");
        if (bos || eos) cJSON_AddItemToObject(root, "post_processor", template_post(v, bos, eos));
        else cJSON_AddNullToObject(root, "post_processor");
        cJSON *d = typed("Sequence"), *da = cJSON_AddArrayToObject(d, "decoders");
        cJSON_AddItemToArray(da, replace_norm(SPACE_MARK, " "));
        cJSON_AddItemToArray(da, typed("ByteFallback"));
        cJSON_AddItemToArray(da, typed("Fuse"));
        if (v->add_space_prefix) {
            cJSON *s = typed("Strip");
            cJSON_AddStringToObject(s, "content", " ");
            cJSON_AddNumberToObject(s, "start", 1);
            cJSON_AddNumberToObject(s, "stop", 0);
            cJSON_AddItemToArray(da, s);
        }
        cJSON_AddItemToObject(root, "decoder", d);
    }
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    if (v->kind == ALRD_VOCAB_SPM && v->unk_id >= 0)
        cJSON_AddStringToObject(model, "unk_token", v->tokens[v->unk_id]);
    else
        cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", v->kind == ALRD_VOCAB_SPM);
    cJSON_AddBoolToObject(model, "byte_fallback", v->kind == ALRD_VOCAB_SPM);
    /* llama.cpp's llama-bpe tokenizer takes whole-word vocab hits first,
     * as Llama-3's tokenizer.json says with ignore_merges */
    cJSON_AddBoolToObject(model, "ignore_merges", pk == PRE_LLAMA3);
    cJSON *vo = cJSON_AddObjectToObject(model, "vocab");
    for (int32_t i = 0; i < v->n_tokens; i++) {
        if (is_pad_filler(v, i)) continue; /* left as a hole, read back as the same filler */
        if (!cJSON_AddItemToObject(vo, v->tokens[i], cJSON_CreateNumber(i))) {
            alrd_errf(err, "%s: out of memory", path);
            goto done;
        }
    }
    cJSON *mg = cJSON_AddArrayToObject(model, "merges");
    if (v->n_merges > 0) {
        for (int32_t i = 0; i < v->n_merges; i++)
            if (!cJSON_AddItemToArray(mg, cJSON_CreateString(v->merges[i]))) {
                alrd_errf(err, "%s: out of memory", path);
                goto done;
            }
    } else if (spm_merges_from_scores(v, &m, mg, path, err) != 0) {
        goto done;
    }
    rc = write_json(path, root, 0, err);
done:
    cJSON_Delete(root);
    map_free(&m);
    return rc;
}

int alrd_hf_tokenizer_config_write(const alrd_vocab *v, int model_max_length, const char *path,
                                   alrd_error *err) {
    if (check_vocab(v, path, err) != 0) return -1;
    cJSON *r = cJSON_CreateObject();
    if (!r) return alrd_errf(err, "%s: out of memory", path);
    cJSON_AddBoolToObject(r, "add_bos_token", v->add_bos && v->bos_id >= 0);
    cJSON_AddBoolToObject(r, "add_eos_token", v->add_eos && v->eos_id >= 0);
    cJSON *dec = cJSON_AddObjectToObject(r, "added_tokens_decoder");
    for (int32_t i = 0; i < v->n_tokens; i++)
        if (is_added_type(vtype(v, i))) {
            char key[16];
            snprintf(key, sizeof key, "%d", (int)i);
            cJSON_AddItemToObject(dec, key, added_token_json(v, i, 0));
        }
    const char *const names[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    const int32_t ids[4] = {v->bos_id, v->eos_id, v->unk_id, v->pad_id};
    for (int k = 0; k < 4; k++)
        if (ids[k] >= 0) cJSON_AddStringToObject(r, names[k], v->tokens[ids[k]]);
    if (v->chat_template) cJSON_AddStringToObject(r, "chat_template", v->chat_template);
    cJSON_AddFalseToObject(r, "clean_up_tokenization_spaces");
    if (model_max_length > 0) cJSON_AddNumberToObject(r, "model_max_length", model_max_length);
    cJSON_AddStringToObject(r, "tokenizer_class", "PreTrainedTokenizerFast");
    int rc = write_json(path, r, 1, err);
    cJSON_Delete(r);
    return rc;
}
