/* alrd-inspect FILE: what a checkpoint holds. Prints the format, (for GGUF)
 * every metadata key with its type and value, the config, the tokenizer
 * summary and the tensor list (HF name, dtype, shape, bytes). Exits 1 with
 * one line on stderr when the file cannot be read. */
#include <stdio.h>
#include <string.h>

#include "../alrd.h"
#include "../formats/gguf.h" /* on purpose: it prints a GGUF file's raw metadata, every key with its type */

#define MAX_ITEMS 8   /* array items shown before "..." */
#define MAX_STR 120   /* string bytes shown before "..." */

static void print_str(const char *p, uint64_t len) {
    putchar('"');
    uint64_t n = len < MAX_STR ? len : MAX_STR;
    for (uint64_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch == '\n') fputs("\\n", stdout);
        else if (ch == '\t') fputs("\\t", stdout);
        else if (ch < 0x20 || ch == 0x7f) printf("\\x%02x", ch);
        else putchar(ch);
    }
    putchar('"');
    if (len > n) printf("... (%llu bytes)", (unsigned long long)len);
}

static void print_value(const alrd_gguf_value *v) {
    switch (v->type) {
    case GGUF_T_UINT8: case GGUF_T_UINT16: case GGUF_T_UINT32: case GGUF_T_UINT64:
        printf("%llu", (unsigned long long)v->v.u64);
        break;
    case GGUF_T_INT8: case GGUF_T_INT16: case GGUF_T_INT32: case GGUF_T_INT64:
        printf("%lld", (long long)v->v.i64);
        break;
    case GGUF_T_FLOAT32: printf("%.9g", v->v.f64); break;
    case GGUF_T_FLOAT64: printf("%.17g", v->v.f64); break;
    case GGUF_T_BOOL: fputs(v->v.b ? "true" : "false", stdout); break;
    case GGUF_T_STRING: print_str(v->v.str.ptr, v->v.str.len); break;
    case GGUF_T_ARRAY: {
        uint64_t n = v->v.arr.n, shown = n < MAX_ITEMS ? n : MAX_ITEMS;
        putchar('[');
        for (uint64_t i = 0; i < shown; i++) {
            if (i) fputs(", ", stdout);
            const alrd_gguf_value x = alrd_gguf_item(v, i);
            print_value(&x);
        }
        if (n > shown) printf(", ... (%llu more)", (unsigned long long)(n - shown));
        putchar(']');
        break;
    }
    }
}

static void type_str(const alrd_gguf_value *v, char *out, size_t cap) {
    if (v->type == GGUF_T_ARRAY)
        snprintf(out, cap, "arr[%s,%llu]", alrd_gguf_type_name(v->v.arr.elem), (unsigned long long)v->v.arr.n);
    else
        snprintf(out, cap, "%s", alrd_gguf_type_name(v->type));
}

static void print_shape(const alrd_tensor *t, char *out, size_t cap) {
    size_t n = (size_t)snprintf(out, cap, "[");
    for (int i = 0; i < t->n_dims && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (n < cap) snprintf(out + n, cap - n, "]");
}

static void print_tensors(const alrd_tensor *ts, size_t n) {
    size_t total = 0;
    char shape[96];
    printf("\ntensors: %zu\n", n);
    for (size_t i = 0; i < n; i++) {
        const alrd_tensor *t = &ts[i];
        print_shape(t, shape, sizeof shape);
        printf("  %-52s %-5s %-14s %11zu", t->name, alrd_dtype_name(t->dtype), shape, t->nbytes);
        if (t->unpermute_heads) printf("  (rows unpermuted, %d heads)", t->unpermute_heads);
        putchar('\n');
        total += t->nbytes;
    }
    printf("  total %zu bytes (%.1f MiB)\n", total, total / 1048576.0);
}

static void print_gguf_meta(const alrd_gguf *g) {
    printf("format: GGUF v%u, alignment %llu, data at offset %llu\n", g->version,
           (unsigned long long)g->alignment, (unsigned long long)g->data_offset);
    printf("\nmetadata: %llu keys\n", (unsigned long long)g->n_kv);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        printf("  %-44s ", g->kv[i].key);
        char type[48];
        type_str(&g->kv[i].value, type, sizeof type);
        printf("%-16s ", type);
        print_value(&g->kv[i].value);
        putchar('\n');
    }
}

static void print_config(const alrd_config *c) {
    printf("\nconfig:\n");
    printf("  arch %s, layers %d, hidden %d, heads %d, kv heads %d, head dim %d, ffn %d\n", c->arch,
           c->n_layers, c->hidden, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn);
    printf("  vocab %d, max ctx %d, rms eps %g, rope theta %g, tied embeddings %s\n", c->vocab_size,
           c->max_ctx, (double)c->rms_eps, (double)c->rope_theta, c->tie_embeddings ? "yes" : "no");
    printf("  attention bias %s, mlp bias %s\n", c->attention_bias ? "yes" : "no", c->mlp_bias ? "yes" : "no");
    if (c->rope_llama3)
        printf("  rope scaling llama3: factor %g, low %g, high %g, original ctx %d\n", (double)c->rope_factor,
               (double)c->rope_low_freq_factor, (double)c->rope_high_freq_factor, c->rope_orig_ctx);
}

static void print_vocab(const alrd_vocab *v) {
    if (v->n_tokens == 0) return;
    printf("\ntokenizer: %s, pre \"%s\", %d tokens, %d merges\n",
           v->kind == ALRD_VOCAB_SPM ? "SentencePiece BPE (llama)" : "byte-level BPE (gpt2)", v->pre,
           v->n_tokens, v->n_merges);
    printf("  bos %d, eos %d, unk %d, pad %d; add bos %d, add eos %d, add space prefix %d; chat template %s\n",
           v->bos_id, v->eos_id, v->unk_id, v->pad_id, v->add_bos, v->add_eos, v->add_space_prefix,
           v->chat_template ? "yes" : "no");
}

/* The decomposition and cache defaults of a .alrd file. */
static void print_lowrank(const alrd_lowrank *l, const alrd_config *c) {
    if (!l) return;
    printf("\nlow-rank K/V: %s SVD%s, %d KV head(s) per latent\n", l->whitened ? "whitened" : "plain",
           l->hadamard ? " + Hadamard rotation" : "", l->group_heads);
    printf("cache defaults: kivi %s, group size %d, residual %d\n", l->use_kivi ? "on" : "off", l->group_size,
           l->residual_length);
    printf("  layer  k_rank  v_rank  k_bits  v_bits   (full rank %d)\n", l->group_heads * c->head_dim);
    for (int i = 0; i < l->n_layers; i++)
        printf("  %5d  %6d  %6d  %6d  %6d\n", i, l->k_rank[i], l->v_rank[i], l->k_bits[i], l->v_bits[i]);
}

int main(int argc, char **argv) {
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: alrd-inspect FILE (a .gguf, .alrd or Hugging Face model directory)\n");
        return 1;
    }
    const char *path = argv[1];
    alrd_error err;
    char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    int is_gguf = f && fread(magic, 1, 4, f) == 4 && memcmp(magic, "GGUF", 4) == 0;
    if (f) fclose(f);

    alrd_gguf g;
    if (is_gguf) {
        if (alrd_gguf_open(&g, path, &err) != 0) {
            fprintf(stderr, "alrd-inspect: %s\n", err.msg);
            return 1;
        }
    }
    alrd_source s;
    if (alrd_source_open(&s, path, &err) != 0) {
        if (!is_gguf) {
            fprintf(stderr, "alrd-inspect: %s\n", err.msg);
            return 1;
        }
        /* A valid GGUF that is not a model we load (a vocab-only file, an
         * unsupported architecture): show what it holds, then the reason. */
        print_gguf_meta(&g);
        print_tensors(g.tensors, (size_t)g.n_tensors);
        alrd_gguf_close(&g);
        fflush(stdout);
        fprintf(stderr, "alrd-inspect: %s\n", err.msg);
        return 1;
    }
    if (is_gguf) {
        print_gguf_meta(&g);
        alrd_gguf_close(&g);
    } else {
        printf("format: %s\n", s.format == ALRD_SRC_HF ? "Hugging Face directory" : ".alrd");
    }
    print_config(&s.config);
    print_vocab(&s.vocab);
    print_lowrank(s.lowrank, &s.config);
    print_tensors(s.tensors, (size_t)s.n_tensors);
    alrd_source_close(&s);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "alrd-inspect: write error on stdout\n");
        return 1;
    }
    return 0;
}
