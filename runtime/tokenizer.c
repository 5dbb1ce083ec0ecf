/* tokenizer: GPT-2 byte-level BPE and SentencePiece-style BPE, following
 * llama.cpp's llama-vocab.cpp / unicode.cpp (and so HF tokenizers).
 *
 * BPE: text -> special-token partition -> pre-tokenizer (hand-written
 * versions of the regexes, over code points with category flags) -> each
 * word's bytes become byte-level token ids directly (no intermediate
 * strings) -> merges by rank on a linked list with a binary heap, merge
 * pairs looked up by (left id, right id).
 * SPM: spaces -> U+2581, optional space prefix, symbols are UTF-8 chars,
 * merge the adjacent pair whose merged piece has the highest score, and
 * characters left without a token become <0xNN> byte tokens. */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "unicode.h"

enum { PRE_GPT2 = 1, PRE_SMOLLM, PRE_LLAMA3, PRE_QWEN2 };

#define MAX_EOG 8

struct alrd_tokenizer {
    alrd_vocab_kind kind;
    int pre;
    int32_t n_tokens;
    /* literal token text (as stored in the vocab) */
    char *text;
    uint32_t *text_off, *text_len;
    /* decoded bytes of NORMAL / BYTE tokens (byte-level chars mapped back,
     * U+2581 -> space, <0xNN> -> byte) */
    char *piece;
    uint32_t *piece_off, *piece_len;
    float *scores;
    uint8_t *types;
    /* token text -> id, open addressing, -1 empty */
    int32_t *tok_hash;
    size_t tok_mask;
    /* merge (left id, right id) -> rank and merged id */
    uint64_t *mkey;  /* 0 = empty */
    int32_t *mrank, *mres;
    size_t mmask;
    /* BPE: id of each byte's byte-level char; SPM: id of <0xNN> */
    int32_t byte_id[256];
    /* special tokens matched in raw text, grouped by first byte, longest
     * first within a group */
    int32_t *special;
    uint32_t special_start[257];
    int32_t bos, eos, unk;
    int add_bos, add_space_prefix;
    int spm_chunks; /* SPM: no token has U+2581 after another character */
    int32_t eog[MAX_EOG];
    int n_eog;
};

/* ---- small helpers ---------------------------------------------------- */

typedef struct {
    int32_t *v;
    size_t n, cap;
    int oom;
} idvec;

static void idvec_push(idvec *a, int32_t id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        int32_t *nv = realloc(a->v, cap * sizeof *nv);
        if (!nv) {
            a->oom = 1;
            return;
        }
        a->v = nv;
        a->cap = cap;
    }
    a->v[a->n++] = id;
}

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static int32_t lookup(const alrd_tokenizer *t, const char *s, size_t n) {
    size_t i = (size_t)hash_bytes(s, n) & t->tok_mask;
    for (;;) {
        int32_t id = t->tok_hash[i];
        if (id < 0) return -1;
        if (t->text_len[id] == n && memcmp(t->text + t->text_off[id], s, n) == 0) return id;
        i = (i + 1) & t->tok_mask;
    }
}

static void merge_find(const alrd_tokenizer *t, int32_t l, int32_t r, int32_t *rank,
                       int32_t *res) {
    uint64_t key = ((uint64_t)(uint32_t)(l + 1) << 32) | (uint32_t)(r + 1);
    size_t i = (size_t)hash_u64(key) & t->mmask;
    for (;;) {
        if (t->mkey[i] == 0) {
            *rank = -1;
            return;
        }
        if (t->mkey[i] == key) {
            *rank = t->mrank[i];
            *res = t->mres[i];
            return;
        }
        i = (i + 1) & t->mmask;
    }
}

/* GPT-2's byte <-> printable code point table. */
static uint32_t byte_to_cp(int b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
        return (uint32_t)b;
    int n = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF)))
            n++;
    return 256u + (uint32_t)n;
}

static int is_u2581(const char *p) {
    return (uint8_t)p[0] == 0xE2 && (uint8_t)p[1] == 0x96 && (uint8_t)p[2] == 0x81;
}

static int type_of(const alrd_tokenizer *t, int32_t id) { return t->types[id]; }

/* ---- construction ----------------------------------------------------- */

void alrd_tokenizer_free(alrd_tokenizer *t) {
    if (!t) return;
    free(t->text);
    free(t->text_off);
    free(t->text_len);
    free(t->piece);
    free(t->piece_off);
    free(t->piece_len);
    free(t->scores);
    free(t->types);
    free(t->tok_hash);
    free(t->mkey);
    free(t->mrank);
    free(t->mres);
    free(t->special);
    free(t);
}

static int pre_from_name(const char *name) {
    static const struct { const char *name; int pre; } map[] = {
        {"", PRE_GPT2},           {"default", PRE_GPT2},     {"gpt2", PRE_GPT2},
        {"gpt-2", PRE_GPT2},      {"mpt", PRE_GPT2},         {"olmo", PRE_GPT2},
        {"jais", PRE_GPT2},       {"smollm", PRE_SMOLLM},    {"starcoder", PRE_SMOLLM},
        {"refact", PRE_SMOLLM},   {"command-r", PRE_SMOLLM}, {"codeshell", PRE_SMOLLM},
        {"exaone", PRE_SMOLLM},   {"minerva-7b", PRE_SMOLLM}, {"llama3", PRE_LLAMA3},
        {"llama-v3", PRE_LLAMA3}, {"llama-bpe", PRE_LLAMA3}, {"falcon3", PRE_LLAMA3},
        {"pixtral", PRE_LLAMA3},  {"dbrx", PRE_LLAMA3},      {"smaug-bpe", PRE_LLAMA3},
        {"qwen2", PRE_QWEN2},     {"stablelm2", PRE_QWEN2},  {"deepseek-r1-qwen", PRE_QWEN2},
        {"megrez", PRE_QWEN2},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(name, map[i].name) == 0) return map[i].pre;
    return 0;
}

/* Decoded bytes of a token for piece(): written to out (room for len
 * bytes: decoding never grows a token). */
static size_t decode_token_text(const alrd_tokenizer *t, int32_t id, const int16_t *cp_to_byte,
                                char *out) {
    const char *s = t->text + t->text_off[id];
    size_t n = t->text_len[id], o = 0;
    int ty = type_of(t, id);
    if (ty == ALRD_TOKEN_BYTE) {
        /* "<0xNN>" */
        if (n == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>') {
            char hex[3] = {s[3], s[4], 0};
            char *end;
            long v = strtol(hex, &end, 16);
            if (*end == 0) {
                out[0] = (char)v;
                return 1;
            }
        }
        memcpy(out, s, n);
        return n;
    }
    if (t->kind == ALRD_VOCAB_SPM) {
        for (size_t i = 0; i < n;) {
            if (i + 3 <= n && (uint8_t)s[i] == 0xE2 && (uint8_t)s[i + 1] == 0x96 &&
                (uint8_t)s[i + 2] == 0x81) {
                out[o++] = ' ';
                i += 3;
            } else {
                out[o++] = s[i++];
            }
        }
        return o;
    }
    /* byte-level: each code point back to its byte; unmapped ones kept */
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = alrd_utf8_decode((const uint8_t *)s + i, n - i, &cp);
        if (k == 0) {
            out[o++] = s[i++];
            continue;
        }
        if (cp < 324 && cp_to_byte[cp] >= 0) {
            out[o++] = (char)cp_to_byte[cp];
        } else {
            memcpy(out + o, s + i, k);
            o += k;
        }
        i += k;
    }
    return o;
}

static int is_eog_name(const char *s) {
    static const char *names[] = {"<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>",
                                  "<|eom_id|>", "<end_of_turn>", "<|end_of_text|>", "</s>"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0) return 1;
    return 0;
}

int alrd_tokenizer_new(alrd_tokenizer **out, const alrd_vocab *v, alrd_error *err) {
    *out = NULL;
    if (v->kind != ALRD_VOCAB_BPE_BYTES && v->kind != ALRD_VOCAB_SPM)
        return alrd_errf(err, "tokenizer: vocab kind: %d is not gpt2 BPE or SPM", (int)v->kind);
    if (v->n_tokens <= 0 || v->n_tokens > (1 << 26) || !v->tokens)
        return alrd_errf(err, "tokenizer: n_tokens: %d out of range", (int)v->n_tokens);
    alrd_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return alrd_errf(err, "tokenizer: out of memory");
    t->kind = v->kind;
    t->n_tokens = v->n_tokens;
    if (t->kind == ALRD_VOCAB_BPE_BYTES) {
        t->pre = pre_from_name(v->pre);
        if (!t->pre) {
            alrd_tokenizer_free(t);
            return alrd_errf(err, "tokenizer: tokenizer.ggml.pre: unknown pre-tokenizer '%s'",
                             v->pre);
        }
    }
    size_t n = (size_t)v->n_tokens;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!v->tokens[i]) {
            alrd_tokenizer_free(t);
            return alrd_errf(err, "tokenizer: tokens[%zu]: missing", i);
        }
        total += strlen(v->tokens[i]);
        if (total > 0xFFFFFFF0u) {
            alrd_tokenizer_free(t);
            return alrd_errf(err, "tokenizer: tokens: total text too large");
        }
    }
    t->text = malloc(total + 1);
    t->piece = malloc(total + 1);
    t->text_off = malloc(n * sizeof *t->text_off);
    t->text_len = malloc(n * sizeof *t->text_len);
    t->piece_off = malloc(n * sizeof *t->piece_off);
    t->piece_len = malloc(n * sizeof *t->piece_len);
    t->scores = malloc(n * sizeof *t->scores);
    t->types = malloc(n);
    t->tok_mask = pow2_at_least(n * 2) - 1;
    t->tok_hash = malloc((t->tok_mask + 1) * sizeof *t->tok_hash);
    if (!t->text || !t->piece || !t->text_off || !t->text_len || !t->piece_off ||
        !t->piece_len || !t->scores || !t->types || !t->tok_hash) {
        alrd_tokenizer_free(t);
        return alrd_errf(err, "tokenizer: out of memory");
    }
    memset(t->tok_hash, 0xFF, (t->tok_mask + 1) * sizeof *t->tok_hash);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(v->tokens[i]);
        memcpy(t->text + off, v->tokens[i], len);
        t->text_off[i] = (uint32_t)off;
        t->text_len[i] = (uint32_t)len;
        off += len;
        t->scores[i] = v->scores ? v->scores[i] : 0.0f;
        int ty = v->types ? v->types[i] : ALRD_TOKEN_NORMAL;
        t->types[i] = (uint8_t)((ty >= ALRD_TOKEN_NORMAL && ty <= ALRD_TOKEN_BYTE) ? ty
                                                                               : ALRD_TOKEN_NORMAL);
        /* first id wins for duplicate strings, as llama.cpp's map keeps
         * the last -- duplicates do not occur in real vocabs */
        size_t h = (size_t)hash_bytes(v->tokens[i], len) & t->tok_mask;
        for (;;) {
            int32_t id = t->tok_hash[h];
            if (id < 0) {
                t->tok_hash[h] = (int32_t)i;
                break;
            }
            if (t->text_len[id] == len && memcmp(t->text + t->text_off[id], v->tokens[i], len) == 0)
                break;
            h = (h + 1) & t->tok_mask;
        }
    }
    t->text[off] = 0;

    /* decoded pieces */
    int16_t cp_to_byte[324];
    for (int i = 0; i < 324; i++) cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) cp_to_byte[byte_to_cp(b)] = (int16_t)b;
    off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = decode_token_text(t, (int32_t)i, cp_to_byte, t->piece + off);
        t->piece_off[i] = (uint32_t)off;
        t->piece_len[i] = (uint32_t)len;
        off += len;
    }

    /* byte ids */
    for (int b = 0; b < 256; b++) {
        char buf[8];
        size_t k;
        if (t->kind == ALRD_VOCAB_BPE_BYTES) {
            k = alrd_utf8_encode(byte_to_cp(b), buf);
            t->byte_id[b] = lookup(t, buf, k);
        } else {
            static const char hx[] = "0123456789ABCDEF";
            memcpy(buf, "<0x", 3);
            buf[3] = hx[b >> 4];
            buf[4] = hx[b & 15];
            buf[5] = '>';
            t->byte_id[b] = lookup(t, buf, 6);
            if (t->byte_id[b] < 0) {
                buf[0] = (char)b;
                t->byte_id[b] = lookup(t, buf, 1);
            }
        }
    }

    /* merges */
    if (t->kind == ALRD_VOCAB_BPE_BYTES) {
        if (v->n_merges < 0 || (v->n_merges > 0 && !v->merges)) {
            alrd_tokenizer_free(t);
            return alrd_errf(err, "tokenizer: merges: missing");
        }
        size_t nm = (size_t)v->n_merges;
        t->mmask = pow2_at_least(nm * 2 + 1) - 1;
        t->mkey = calloc(t->mmask + 1, sizeof *t->mkey);
        t->mrank = malloc((t->mmask + 1) * sizeof *t->mrank);
        t->mres = malloc((t->mmask + 1) * sizeof *t->mres);
        if (!t->mkey || !t->mrank || !t->mres) {
            alrd_tokenizer_free(t);
            return alrd_errf(err, "tokenizer: out of memory");
        }
        char *buf = NULL;
        size_t bufcap = 0;
        for (size_t r = 0; r < nm; r++) {
            const char *m = v->merges[r];
            if (!m) continue;
            size_t len = strlen(m);
            /* split at the first space after the first byte (llama.cpp) */
            const char *sp = len > 1 ? memchr(m + 1, ' ', len - 1) : NULL;
            if (!sp) {
                free(buf);
                alrd_tokenizer_free(t);
                return alrd_errf(err, "tokenizer: merges[%zu]: '%s' has no space", r, m);
            }
            size_t ll = (size_t)(sp - m), rl = len - ll - 1;
            int32_t li = lookup(t, m, ll), ri = lookup(t, sp + 1, rl);
            if (li < 0 || ri < 0) continue; /* can never apply */
            if (ll + rl > bufcap) {
                bufcap = (ll + rl) * 2;
                char *nb = realloc(buf, bufcap);
                if (!nb) {
                    free(buf);
                    alrd_tokenizer_free(t);
                    return alrd_errf(err, "tokenizer: out of memory");
                }
                buf = nb;
            }
            memcpy(buf, m, ll);
            memcpy(buf + ll, sp + 1, rl);
            int32_t res = lookup(t, buf, ll + rl);
            if (res < 0) continue;
            uint64_t key = ((uint64_t)(uint32_t)(li + 1) << 32) | (uint32_t)(ri + 1);
            size_t h = (size_t)hash_u64(key) & t->mmask;
            while (t->mkey[h] != 0 && t->mkey[h] != key) h = (h + 1) & t->mmask;
            if (t->mkey[h] == 0) { /* first (lowest) rank wins */
                t->mkey[h] = key;
                t->mrank[h] = (int32_t)r;
                t->mres[h] = res;
            }
        }
        free(buf);
    }

    /* special tokens: control, user-defined and unknown */
    size_t n_special = 0;
    for (size_t i = 0; i < n; i++) {
        int ty = t->types[i];
        if ((ty == ALRD_TOKEN_CONTROL || ty == ALRD_TOKEN_USER_DEFINED || ty == ALRD_TOKEN_UNKNOWN) &&
            t->text_len[i] > 0)
            n_special++;
    }
    t->special = malloc((n_special ? n_special : 1) * sizeof *t->special);
    if (!t->special) {
        alrd_tokenizer_free(t);
        return alrd_errf(err, "tokenizer: out of memory");
    }
    uint32_t count[257] = {0};
    for (size_t i = 0; i < n; i++) {
        int ty = t->types[i];
        if ((ty == ALRD_TOKEN_CONTROL || ty == ALRD_TOKEN_USER_DEFINED || ty == ALRD_TOKEN_UNKNOWN) &&
            t->text_len[i] > 0)
            count[(uint8_t)t->text[t->text_off[i]] + 1]++;
    }
    for (int b = 0; b < 256; b++) count[b + 1] += count[b];
    memcpy(t->special_start, count, sizeof count);
    for (size_t i = 0; i < n; i++) {
        int ty = t->types[i];
        if ((ty == ALRD_TOKEN_CONTROL || ty == ALRD_TOKEN_USER_DEFINED || ty == ALRD_TOKEN_UNKNOWN) &&
            t->text_len[i] > 0)
            t->special[count[(uint8_t)t->text[t->text_off[i]]]++] = (int32_t)i;
    }
    /* longest first within each first-byte group (insertion sort: groups are small) */
    for (int b = 0; b < 256; b++) {
        for (uint32_t i = t->special_start[b] + 1; i < t->special_start[b + 1]; i++) {
            int32_t id = t->special[i];
            uint32_t j = i;
            while (j > t->special_start[b] && t->text_len[t->special[j - 1]] < t->text_len[id]) {
                t->special[j] = t->special[j - 1];
                j--;
            }
            t->special[j] = id;
        }
    }

    t->bos = (v->bos_id >= 0 && v->bos_id < v->n_tokens) ? v->bos_id : -1;
    t->eos = (v->eos_id >= 0 && v->eos_id < v->n_tokens) ? v->eos_id : -1;
    t->unk = (v->unk_id >= 0 && v->unk_id < v->n_tokens) ? v->unk_id : -1;
    t->add_bos = v->add_bos && t->bos >= 0;
    t->add_space_prefix = t->kind == ALRD_VOCAB_SPM ? v->add_space_prefix : 0;
    if (t->kind == ALRD_VOCAB_SPM) {
        t->spm_chunks = 1;
        for (size_t i = 0; i < n && t->spm_chunks; i++) {
            const char *p = t->text + t->text_off[i];
            size_t len = t->text_len[i], j = 0;
            while (j + 3 <= len && is_u2581(p + j)) j += 3; /* leading run is fine */
            for (; j + 3 <= len; j++)
                if (is_u2581(p + j)) {
                    t->spm_chunks = 0;
                    break;
                }
        }
    }
    if (t->eos >= 0) t->eog[t->n_eog++] = t->eos;
    for (size_t i = 0; i < n && t->n_eog < MAX_EOG; i++) {
        if ((int32_t)i == t->eos) continue;
        if (t->types[i] != ALRD_TOKEN_CONTROL && t->types[i] != ALRD_TOKEN_USER_DEFINED) continue;
        if (is_eog_name(v->tokens[i])) t->eog[t->n_eog++] = (int32_t)i;
    }
    *out = t;
    return 0;
}

/* ---- BPE -------------------------------------------------------------- */

typedef struct {
    int32_t id, prev, next;
} bsym;

/* A binary min-heap of fixed-size items ordered by less(): BPE merges come
 * out by rank, SPM merges by score. Grows by doubling; oom is sticky. */
typedef struct {
    unsigned char *v;
    size_t n, cap, size;
    int (*less)(const void *, const void *);
    int oom;
} pqueue;

static void pq_push(pqueue *h, const void *item) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        unsigned char *nv = realloc(h->v, cap * h->size);
        if (!nv) {
            h->oom = 1;
            return;
        }
        h->v = nv;
        h->cap = cap;
    }
    size_t i = h->n++, sz = h->size;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!h->less(item, h->v + parent * sz)) break;
        memcpy(h->v + i * sz, h->v + parent * sz, sz);
        i = parent;
    }
    memcpy(h->v + i * sz, item, sz);
}

/* Removes the least item into out; h->n must be > 0. */
static void pq_pop(pqueue *h, void *out) {
    size_t sz = h->size, n = --h->n, i = 0;
    const unsigned char *last = h->v + n * sz; /* sifting only writes below index n */
    memcpy(out, h->v, sz);
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n) break;
        size_t m = (l + 1 < n && h->less(h->v + (l + 1) * sz, h->v + l * sz)) ? l + 1 : l;
        if (!h->less(h->v + m * sz, last)) break;
        memcpy(h->v + i * sz, h->v + m * sz, sz);
        i = m;
    }
    if (n > 0) memcpy(h->v + i * sz, last, sz);
}

typedef struct {
    int32_t rank, left, lid, rid, res;
} bpair;

/* scratch reused across words of one encode call */
typedef struct {
    const alrd_tokenizer *t;
    idvec *out;
    bsym *sym;
    size_t sym_cap;
    pqueue heap;           /* of bpair */
    char *enc; /* llama3 ignore_merges: the word as byte-level text */
    size_t enc_cap;
    int oom;
} bpe_ctx;

static int pair_less(const void *pa, const void *pb) {
    const bpair *a = pa, *b = pb;
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void try_pair(bpe_ctx *c, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    int32_t lid = c->sym[left].id, rid = c->sym[right].id;
    if (lid < 0 || rid < 0) return;
    int32_t rank, res = -1;
    merge_find(c->t, lid, rid, &rank, &res);
    if (rank < 0) return;
    bpair p = {rank, left, lid, rid, res};
    pq_push(&c->heap, &p);
}

/* Encodes one pre-token word (raw bytes) with byte-level BPE. */
static void bpe_word(bpe_ctx *c, const uint8_t *w, size_t n) {
    const alrd_tokenizer *t = c->t;
    if (n == 0) return;
    if (n == 1) {
        if (t->byte_id[w[0]] >= 0) idvec_push(c->out, t->byte_id[w[0]]);
        return;
    }
    if (t->pre == PRE_LLAMA3) { /* ignore_merges: a word that is a token stays whole */
        if (n * 2 > c->enc_cap) {
            char *ne = realloc(c->enc, n * 2);
            if (!ne) {
                c->oom = 1;
                return;
            }
            c->enc = ne;
            c->enc_cap = n * 2;
        }
        size_t k = 0;
        for (size_t i = 0; i < n; i++) k += alrd_utf8_encode(byte_to_cp(w[i]), c->enc + k);
        int32_t id = lookup(t, c->enc, k);
        if (id >= 0) {
            idvec_push(c->out, id);
            return;
        }
    }
    if (n > c->sym_cap) {
        bsym *ns = realloc(c->sym, n * sizeof *ns);
        if (!ns) {
            c->oom = 1;
            return;
        }
        c->sym = ns;
        c->sym_cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        c->sym[i].id = t->byte_id[w[i]];
        c->sym[i].prev = (int32_t)i - 1;
        c->sym[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    c->heap.n = 0;
    for (size_t i = 1; i < n; i++) try_pair(c, (int32_t)i - 1, (int32_t)i);
    while (c->heap.n > 0) {
        bpair p;
        pq_pop(&c->heap, &p);
        bsym *l = &c->sym[p.left];
        if (l->id != p.lid || l->next < 0) continue; /* stale */
        bsym *r = &c->sym[l->next];
        if (r->id != p.rid) continue;
        l->id = p.res;
        r->id = -2;
        l->next = r->next;
        if (r->next >= 0) c->sym[r->next].prev = p.left;
        try_pair(c, l->prev, p.left);
        try_pair(c, p.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = c->sym[i].next)
        if (c->sym[i].id >= 0) idvec_push(c->out, c->sym[i].id);
}

/* ---- pre-tokenizers --------------------------------------------------- */

/* A fragment decoded to code points: cp[i], fl[i] flags, bo[i] byte
 * offset of code point i in the fragment (bo[n] = byte length). */
typedef struct {
    const uint8_t *bytes;
    const uint32_t *cp;
    const uint16_t *fl;
    const size_t *bo;
} cpts;

static void emit(bpe_ctx *c, const cpts *x, size_t a, size_t b) {
    if (b > a) bpe_word(c, x->bytes + x->bo[a], x->bo[b] - x->bo[a]);
}

#define FL(p) ((p) < end ? x->fl[(p)] : 0)
#define CP(p) ((p) < end ? x->cp[(p)] : 0xFFFFFFFFu)
#define IS_L(f) ((f) & ALRD_UFLAG_LETTER)
#define IS_N(f) ((f) & ALRD_UFLAG_NUMBER)
#define IS_WS(f) ((f) & ALRD_UFLAG_WHITESPACE)

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * over code points [ini, end), as unicode_regex_split_custom_gpt2. */
/* The splitters' common tail at pos, after nws whitespace characters:
 * \s+(?!\S) leaves the last one for the next word, \s+ at the end takes
 * them all, anything else is one character. Returns the end of the piece. */
static size_t ws_tail(size_t pos, size_t nws, size_t end) {
    if (nws > 1 && pos + nws < end) return pos + nws - 1;
    return pos + (nws > 0 ? nws : 1);
}

static void split_gpt2(bpe_ctx *c, const cpts *x, size_t ini, size_t end) {
    size_t pos = ini;
    while (pos < end) {
        uint32_t cp = x->cp[pos];
        uint16_t f = x->fl[pos];
        if (cp == '\'' && pos + 1 < end) {
            uint32_t n1 = x->cp[pos + 1];
            if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') {
                emit(c, x, pos, pos + 2);
                pos += 2;
                continue;
            }
            if (pos + 2 < end) {
                uint32_t n2 = x->cp[pos + 2];
                if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')) {
                    emit(c, x, pos, pos + 3);
                    pos += 3;
                    continue;
                }
            }
        }
        uint16_t f2 = cp == ' ' ? FL(pos + 1) : f;
        size_t s = pos;
        if (IS_L(f2)) {
            pos += cp == ' ';
            while (pos < end && IS_L(x->fl[pos])) pos++;
            emit(c, x, s, pos);
            continue;
        }
        if (IS_N(f2)) {
            pos += cp == ' ';
            while (pos < end && IS_N(x->fl[pos])) pos++;
            emit(c, x, s, pos);
            continue;
        }
        if (f2 && !(f2 & (ALRD_UFLAG_WHITESPACE | ALRD_UFLAG_LETTER | ALRD_UFLAG_NUMBER))) {
            pos += cp == ' ';
            while (pos < end &&
                   !(x->fl[pos] & (ALRD_UFLAG_WHITESPACE | ALRD_UFLAG_LETTER | ALRD_UFLAG_NUMBER)))
                pos++;
            emit(c, x, s, pos);
            continue;
        }
        size_t nws = 0;
        while (pos + nws < end && IS_WS(x->fl[pos + nws])) nws++;
        emit(c, x, s, pos = ws_tail(pos, nws, end));
    }
}

static uint32_t ascii_lower(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * (Llama-3 with max_digits 3, Qwen2 with 1), as unicode_regex_split_custom_llama3. */
static void split_llama3(bpe_ctx *c, const cpts *x, size_t ini, size_t end, size_t max_digits) {
    size_t pos = ini;
    while (pos < end) {
        uint32_t cp = x->cp[pos];
        uint16_t f = x->fl[pos];
        size_t s = pos;
        if (cp == '\'' && pos + 1 < end) {
            uint32_t n1 = ascii_lower(x->cp[pos + 1]);
            if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') {
                emit(c, x, pos, pos + 2);
                pos += 2;
                continue;
            }
            if (pos + 2 < end) {
                uint32_t n2 = ascii_lower(x->cp[pos + 2]);
                if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')) {
                    emit(c, x, pos, pos + 3);
                    pos += 3;
                    continue;
                }
            }
        }
        if (!(cp == '\r' || cp == '\n' || IS_N(f))) {
            if (IS_L(f) || IS_L(FL(pos + 1))) {
                pos++;
                while (pos < end && IS_L(x->fl[pos])) pos++;
                emit(c, x, s, pos);
                continue;
            }
        }
        if (IS_N(f)) {
            size_t run = pos;
            while (pos < end && IS_N(x->fl[pos])) {
                if (++pos - run >= max_digits) {
                    emit(c, x, run, pos);
                    run = pos;
                }
            }
            emit(c, x, run, pos);
            continue;
        }
        uint16_t f2 = cp == ' ' ? FL(pos + 1) : f;
        if (f2 && !(f2 & (ALRD_UFLAG_WHITESPACE | ALRD_UFLAG_LETTER | ALRD_UFLAG_NUMBER))) {
            pos += cp == ' ';
            while (pos < end &&
                   !(x->fl[pos] & (ALRD_UFLAG_WHITESPACE | ALRD_UFLAG_LETTER | ALRD_UFLAG_NUMBER)))
                pos++;
            while (pos < end && (x->cp[pos] == '\r' || x->cp[pos] == '\n')) pos++;
            emit(c, x, s, pos);
            continue;
        }
        size_t nws = 0, last_rn = 0;
        while (pos + nws < end && IS_WS(x->fl[pos + nws])) {
            uint32_t c2 = x->cp[pos + nws];
            if (c2 == '\r' || c2 == '\n') last_rn = pos + nws + 1;
            nws++;
        }
        if (last_rn > 0) { /* \s*[\r\n]+ */
            pos = last_rn;
            emit(c, x, s, pos);
            continue;
        }
        emit(c, x, s, pos = ws_tail(pos, nws, end));
    }
}

#undef FL
#undef CP

/* Pre-tokenizes and encodes one raw-text fragment (valid UTF-8). */
static int bpe_fragment(bpe_ctx *c, const uint8_t *s, size_t n) {
    if (n == 0) return 0;
    uint32_t *cp = malloc(n * sizeof *cp);
    uint16_t *fl = malloc(n * sizeof *fl);
    size_t *bo = malloc((n + 1) * sizeof *bo);
    if (!cp || !fl || !bo) {
        free(cp);
        free(fl);
        free(bo);
        return -1;
    }
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        uint32_t u;
        size_t k;
        if (s[i] < 0x80) {
            u = s[i];
            k = 1;
        } else {
            k = alrd_utf8_decode(s + i, n - i, &u);
            if (k == 0) { /* validated by the caller; be safe anyway */
                u = 0xFFFD;
                k = 1;
            }
        }
        cp[m] = u;
        fl[m] = alrd_unicode_flags(u);
        bo[m] = i;
        m++;
        i += k;
    }
    bo[m] = n;
    cpts x = {s, cp, fl, bo};
    switch (c->t->pre) {
    case PRE_SMOLLM: {
        /* \p{N} first: each digit is its own fragment, GPT-2 regex between */
        size_t run = 0;
        for (size_t i = 0; i < m; i++) {
            if (fl[i] & ALRD_UFLAG_NUMBER) {
                split_gpt2(c, &x, run, i);
                emit(c, &x, i, i + 1);
                run = i + 1;
            }
        }
        split_gpt2(c, &x, run, m);
        break;
    }
    case PRE_LLAMA3: split_llama3(c, &x, 0, m, 3); break;
    case PRE_QWEN2: split_llama3(c, &x, 0, m, 1); break;
    default: split_gpt2(c, &x, 0, m); break;
    }
    free(cp);
    free(fl);
    free(bo);
    return c->oom || c->heap.oom || c->out->oom ? -1 : 0;
}

/* ---- SPM -------------------------------------------------------------- */

typedef struct {
    uint32_t off, n; /* bytes in the escaped text; n = 0 once merged away */
    int32_t prev, next;
} ssym;

typedef struct {
    float score;
    int32_t left, right;
    uint32_t size;
} spair;

static int spair_less(const void *pa, const void *pb) { /* "better" first */
    const spair *a = pa, *b = pb;
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void spm_try(const alrd_tokenizer *t, const char *text, ssym *sym, pqueue *h, int32_t l,
                    int32_t r) {
    if (l < 0 || r < 0) return;
    uint32_t size = sym[l].n + sym[r].n;
    int32_t id = lookup(t, text + sym[l].off, size);
    if (id < 0) return;
    spair p = {t->scores[id], l, r, size};
    pq_push(h, &p);
}

/* scratch reused across the chunks of one encode call */
typedef struct {
    ssym *sym;
    size_t cap;
    pqueue h;              /* of spair */
} spm_scratch;

/* Encodes one escaped chunk (spaces already U+2581). */
static int spm_chunk(const alrd_tokenizer *t, const char *text, size_t n, idvec *out,
                     spm_scratch *sc) {
    if (n == 0) return 0;
    if (n > sc->cap) {
        ssym *ns = realloc(sc->sym, n * sizeof *ns);
        if (!ns) return -1;
        sc->sym = ns;
        sc->cap = n;
    }
    ssym *sym = sc->sym;
    pqueue *h = &sc->h;
    h->n = 0;
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        size_t k = alrd_utf8_len((uint8_t)text[i]);
        if (k > n - i) k = n - i;
        sym[m].off = (uint32_t)i;
        sym[m].n = (uint32_t)k;
        sym[m].prev = (int32_t)m - 1;
        i += k;
        sym[m].next = i < n ? (int32_t)m + 1 : -1;
        m++;
    }
    for (size_t i = 1; i < m; i++) spm_try(t, text, sym, h, (int32_t)i - 1, (int32_t)i);
    while (h->n > 0 && !h->oom) {
        spair p;
        pq_pop(h, &p);
        ssym *l = &sym[p.left], *r = &sym[p.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = p.left;
        spm_try(t, text, sym, h, l->prev, p.left);
        spm_try(t, text, sym, h, p.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) {
        int32_t id = lookup(t, text + sym[i].off, sym[i].n);
        if (id >= 0) {
            idvec_push(out, id);
        } else {
            for (uint32_t j = 0; j < sym[i].n; j++) {
                int32_t b = t->byte_id[(uint8_t)text[sym[i].off + j]];
                if (b >= 0) idvec_push(out, b);
            }
        }
    }
    return h->oom || out->oom ? -1 : 0;
}

/* Escapes spaces to U+2581 (with an optional leading one) and encodes.
 * When no token has U+2581 after another character (checked at load),
 * no merge can cross the start of a U+2581 run, so the text is encoded
 * run by run -- the same result as one pass, without a heap over the
 * whole text. */
static int spm_text(const alrd_tokenizer *t, const char *s, size_t n, int prefix, idvec *out,
                    spm_scratch *sc) {
    size_t spaces = prefix ? 1 : 0;
    for (size_t i = 0; i < n; i++) spaces += s[i] == ' ';
    size_t cap;
    if (alrd_mul_ok(spaces, 2, &cap) || alrd_add_ok(cap, n + 1, &cap)) return -1;
    char *buf = malloc(cap);
    if (!buf) return -1;
    size_t o = 0;
    if (prefix) {
        memcpy(buf, "\xE2\x96\x81", 3);
        o = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(buf + o, "\xE2\x96\x81", 3);
            o += 3;
        } else {
            buf[o++] = s[i];
        }
    }
    int rc = 0;
    if (!t->spm_chunks) {
        rc = spm_chunk(t, buf, o, out, sc);
    } else {
        size_t a = 0;
        for (size_t i = 1; i + 3 <= o && rc == 0; i++) {
            /* a U+2581 right after a character that is not U+2581 */
            if (is_u2581(buf + i) && !(i >= 3 && is_u2581(buf + i - 3))) {
                rc = spm_chunk(t, buf + a, i - a, out, sc);
                a = i;
                i += 2;
            }
        }
        if (rc == 0) rc = spm_chunk(t, buf + a, o - a, out, sc);
    }
    free(buf);
    return rc;
}

/* ---- encode ----------------------------------------------------------- */

/* Longest special token starting at s[0..n), or -1. */
static int32_t match_special(const alrd_tokenizer *t, const char *s, size_t n, int parse_special) {
    uint8_t b = (uint8_t)s[0];
    for (uint32_t i = t->special_start[b]; i < t->special_start[b + 1]; i++) {
        int32_t id = t->special[i];
        /* as llama.cpp: control and unknown tokens only with parse_special,
         * user-defined ones always */
        if (!parse_special && t->types[id] != ALRD_TOKEN_USER_DEFINED) continue;
        uint32_t len = t->text_len[id];
        if (len <= n && memcmp(s, t->text + t->text_off[id], len) == 0) return id;
    }
    return -1;
}

int alrd_tokenizer_encode(const alrd_tokenizer *t, const char *text, size_t len, int add_bos,
                          int parse_special, int32_t **ids, size_t *n_ids, alrd_error *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len > 0) return alrd_errf(err, "tokenizer: text: NULL with length %zu", len);
    size_t bad = alrd_utf8_validate((const uint8_t *)text, len);
    if (bad != (size_t)-1)
        return alrd_errf(err, "tokenizer: text: invalid UTF-8 at byte offset %zu (byte 0x%02x)",
                         bad, (unsigned)(uint8_t)text[bad]);
    if (len > 0x7FFFFFFF)
        return alrd_errf(err, "tokenizer: text: %zu bytes, at most 2 GiB per call", len);
    idvec out = {0};
    bpe_ctx c = {.heap = {.size = sizeof(bpair), .less = pair_less}};
    spm_scratch sc = {.h = {.size = sizeof(spair), .less = spair_less}};
    c.t = t;
    c.out = &out;
    if (add_bos && t->add_bos) idvec_push(&out, t->bos);
    int rc = 0;
    int prev_special = 1; /* SPM: a fragment at the start or after a special gets the prefix */
    size_t frag = 0, i = 0;
    while (i <= len && rc == 0) {
        int32_t sp = -1;
        if (i < len && t->special_start[(uint8_t)text[i]] < t->special_start[(uint8_t)text[i] + 1])
            sp = match_special(t, text + i, len - i, parse_special);
        if (sp < 0 && i < len) {
            i++;
            continue;
        }
        /* raw text [frag, i) then the special token (or the end) */
        if (i > frag) {
            if (t->kind == ALRD_VOCAB_SPM)
                rc = spm_text(t, text + frag, i - frag, t->add_space_prefix && prev_special, &out,
                              &sc);
            else
                rc = bpe_fragment(&c, (const uint8_t *)text + frag, i - frag);
            prev_special = 0;
        }
        if (sp < 0) break;
        idvec_push(&out, sp);
        prev_special = 1;
        i += t->text_len[sp];
        frag = i;
    }
    free(c.sym);
    free(c.heap.v);
    free(c.enc);
    free(sc.sym);
    free(sc.h.v);
    if (rc != 0 || out.oom || c.oom || c.heap.oom || sc.h.oom) {
        free(out.v);
        return alrd_errf(err, "tokenizer: text: out of memory encoding %zu bytes", len);
    }
    if (!out.v) { /* empty result: still hand back a freeable pointer */
        out.v = malloc(sizeof *out.v);
        if (!out.v) return alrd_errf(err, "tokenizer: out of memory");
    }
    *ids = out.v;
    *n_ids = out.n;
    return 0;
}

/* ---- decode ----------------------------------------------------------- */

static int piece_ref(const alrd_tokenizer *t, int32_t id, int render_special, const char **p,
                     size_t *n) {
    if (id < 0 || id >= t->n_tokens) return -1;
    int ty = t->types[id];
    if (ty == ALRD_TOKEN_CONTROL || ty == ALRD_TOKEN_UNKNOWN) {
        *p = t->text + t->text_off[id];
        *n = render_special ? t->text_len[id] : 0;
    } else if (ty == ALRD_TOKEN_USER_DEFINED) {
        *p = t->text + t->text_off[id];
        *n = t->text_len[id];
    } else if (ty == ALRD_TOKEN_NORMAL || (ty == ALRD_TOKEN_BYTE && t->kind == ALRD_VOCAB_SPM)) {
        *p = t->piece + t->piece_off[id];
        *n = t->piece_len[id];
    } else {
        *p = "";
        *n = 0;
    }
    return 0;
}

int alrd_tokenizer_piece(const alrd_tokenizer *t, int32_t id, int render_special, char *buf,
                         size_t cap) {
    const char *p;
    size_t n;
    if (piece_ref(t, id, render_special, &p, &n) != 0) return -1;
    if (buf && cap > 0) memcpy(buf, p, n < cap ? n : cap);
    return (int)n;
}

int alrd_tokenizer_decode(const alrd_tokenizer *t, const int32_t *ids, size_t n,
                          int render_special, char **out, alrd_error *err) {
    *out = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p;
        size_t k;
        if (piece_ref(t, ids[i], render_special, &p, &k) != 0)
            return alrd_errf(err, "tokenizer: ids[%zu]: %d outside the vocab of %d", i,
                             (int)ids[i], (int)t->n_tokens);
        if (alrd_add_ok(total, k, &total)) return alrd_errf(err, "tokenizer: decode: too long");
    }
    char *s = malloc(total + 1);
    if (!s) return alrd_errf(err, "tokenizer: out of memory decoding %zu tokens", n);
    size_t o = 0;
    int strip = t->kind == ALRD_VOCAB_SPM && t->add_space_prefix;
    for (size_t i = 0; i < n; i++) {
        const char *p = "";
        size_t k = 0;
        piece_ref(t, ids[i], render_special, &p, &k); /* ids checked above */
        if (k == 0) continue;
        /* the space add_space_prefix put in front of the first text */
        if (strip && p[0] == ' ' && t->types[ids[i]] == ALRD_TOKEN_NORMAL) {
            p++;
            k--;
        }
        strip = 0;
        memcpy(s + o, p, k);
        o += k;
    }
    s[o] = 0;
    *out = s;
    return 0;
}

/* ---- accessors -------------------------------------------------------- */

int32_t alrd_tokenizer_bos(const alrd_tokenizer *t) { return t->bos; }
int32_t alrd_tokenizer_eos(const alrd_tokenizer *t) { return t->eos; }
int alrd_tokenizer_add_bos(const alrd_tokenizer *t) { return t->add_bos; }
int32_t alrd_tokenizer_n_vocab(const alrd_tokenizer *t) { return t->n_tokens; }

int32_t alrd_tokenizer_find(const alrd_tokenizer *t, const char *token) {
    return lookup(t, token, strlen(token));
}

int alrd_tokenizer_is_eog(const alrd_tokenizer *t, int32_t id) {
    if (id < 0) return 0;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return 1;
    return 0;
}
