/* alrd-convert: export a model (GGUF, HF directory or .alrd) as a Hugging
 * Face checkpoint directory: config.json, generation_config.json,
 * model.safetensors, tokenizer.json, tokenizer_config.json.
 *
 *   alrd-convert MODEL --to-hf DIR [--dtype f32|f16|bf16] [--vocab-only]
 *
 * --vocab-only writes just tokenizer.json and tokenizer_config.json, from
 * any GGUF (vocab-only files included) or HF directory.
 *
 * Files are produced in a staging directory inside DIR and only moved into
 * place once all of them are complete, so a failure (or Ctrl-C) leaves DIR
 * as it was. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../alrd.h"
/* On purpose, as a converter between file formats: */
#include "../formats/gguf.h"        /* --vocab-only: the vocabulary of any GGUF, vocab-only files included */
#include "../formats/hf.h"          /* the HF config, generation config and tokenizer writers */
#include "../formats/safetensors.h" /* the safetensors writer */

static const char *const FILES[] = {"config.json", "generation_config.json", "tokenizer.json",
                                    "tokenizer_config.json", "model.safetensors"};
enum { N_FILES = sizeof FILES / sizeof FILES[0] };

/* What a signal handler must remove: the staging dir and its files. */
static char g_stage[1100];
static char g_staged[N_FILES][1200];

static void cleanup_stage(void) {
    const char *tmp = alrd_outfile_active_tmp();
    if (tmp) unlink(tmp);
    for (int i = 0; i < N_FILES; i++)
        if (g_staged[i][0]) unlink(g_staged[i]);
    if (g_stage[0]) rmdir(g_stage);
}

static void on_signal(int sig) {
    (void)sig;
    cleanup_stage();
    _exit(1);
}

static int fail(const char *msg) {
    cleanup_stage();
    fprintf(stderr, "alrd-convert: %s\n", msg);
    return 1;
}

static int usage(void) {
    fprintf(stderr, "usage: alrd-convert MODEL --to-hf DIR [--dtype f32|f16|bf16] [--vocab-only]\n"
                    "  --vocab-only  write only tokenizer.json and tokenizer_config.json\n"
                    "                (MODEL may then be a vocab-only GGUF)\n");
    return 1;
}

/* mkdir -p */
static int make_dirs(const char *dir, alrd_error *err) {
    char p[1024];
    snprintf(p, sizeof p, "%s", dir);
    for (char *s = p + 1;; s++) {
        if (*s == '/' || !*s) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                return alrd_errf(err, "%s: cannot create directory: %s", p, strerror(errno));
            *s = c;
            if (!c) break;
        }
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return alrd_errf(err, "%s: not a directory", dir);
    return 0;
}

/* Tensors with an HF counterpart; lm_head only when not tied. */
static int export_list(const alrd_source *s, alrd_tensor **out, int *n, alrd_error *err) {
    *out = malloc((s->n_tensors ? (size_t)s->n_tensors : 1) * sizeof **out);
    if (!*out) return alrd_errf(err, "out of memory");
    *n = 0;
    for (int i = 0; i < s->n_tensors; i++) {
        const char *nm = s->tensors[i].name;
        int head = !strcmp(nm, "lm_head.weight");
        if (head && s->config.tie_embeddings) continue;
        if (strncmp(nm, "model.", 6) && !head) {
            fprintf(stderr, "alrd-convert: note: tensor %s has no HF counterpart, skipped\n", nm);
            continue;
        }
        (*out)[(*n)++] = s->tensors[i];
    }
    return 0;
}

/* Creates the staging dir inside dir and names the files staged there. */
static int stage_open(const char *dir, alrd_error *err) {
    if (make_dirs(dir, err) != 0) return -1;
    snprintf(g_stage, sizeof g_stage, "%s/.alrd-convert-XXXXXX", dir);
    if (!mkdtemp(g_stage)) {
        g_stage[0] = 0;
        return alrd_errf(err, "%s: cannot create a staging directory: %s", dir, strerror(errno));
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    for (int i = 0; i < N_FILES; i++)
        snprintf(g_staged[i], sizeof g_staged[i], "%s/%s", g_stage, FILES[i]);
    return 0;
}

/* Moves the files marked in want[] from the staging dir into dir. */
static int stage_commit(const char *dir, const int *want, alrd_error *err) {
    /* rename() onto a directory fails: refuse before moving anything, so
     * DIR is never left half old, half new. */
    for (int i = 0; i < N_FILES; i++) {
        char dst[1200];
        struct stat st;
        snprintf(dst, sizeof dst, "%s/%s", dir, FILES[i]);
        if (want[i] && lstat(dst, &st) == 0 && S_ISDIR(st.st_mode))
            return alrd_errf(err, "%s: is a directory (nothing was replaced)", dst);
    }
    for (int i = 0; i < N_FILES; i++) {
        if (!want[i]) continue;
        char dst[1200];
        snprintf(dst, sizeof dst, "%s/%s", dir, FILES[i]);
        if (rename(g_staged[i], dst) != 0)
            return alrd_errf(err, "%s: cannot move into place: %s", dst, strerror(errno));
        g_staged[i][0] = 0;
    }
    cleanup_stage();
    g_stage[0] = 0;
    return 0;
}

/* The vocabulary alone: a GGUF file (vocab-only ones too) or an HF dir. */
static int read_vocab(const char *path, alrd_vocab *v, alrd_error *err) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        char p[1100];
        snprintf(p, sizeof p, "%s/tokenizer.json", path);
        return alrd_hf_vocab_read(v, p, err);
    }
    alrd_gguf g;
    if (alrd_gguf_open(&g, path, err) != 0) return -1;
    int rc = alrd_vocab_from_gguf(v, &g, err);
    alrd_gguf_close(&g);
    return rc;
}

static int convert_vocab(const char *model, const char *dir) {
    alrd_error err = {{0}};
    alrd_vocab v;
    if (read_vocab(model, &v, &err) != 0) return fail(err.msg);
    const int want[N_FILES] = {0, 0, 1, 1, 0};
    int rc = stage_open(dir, &err);
    if (rc == 0) rc = alrd_hf_tokenizer_write(&v, g_staged[2], &err);
    if (rc == 0) rc = alrd_hf_tokenizer_config_write(&v, 0, g_staged[3], &err);
    if (rc == 0) rc = stage_commit(dir, want, &err);
    int32_t n = v.n_tokens;
    alrd_vocab_free(&v);
    if (rc != 0) return fail(err.msg);
    printf("%s: tokenizer.json, tokenizer_config.json (%d tokens)\n", dir, (int)n);
    return 0;
}

int main(int argc, char **argv) {
    const char *model = NULL, *dir = NULL, *dt = "f32";
    int vocab_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--to-hf") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) dt = argv[++i];
        else if (!strcmp(argv[i], "--vocab-only")) vocab_only = 1;
        else if (argv[i][0] == '-') return usage();
        else if (!model) model = argv[i];
        else return usage();
    }
    if (!model || !dir) return usage();
    alrd_dtype out_dtype;
    const char *torch_dtype;
    if (!strcmp(dt, "f32")) { out_dtype = ALRD_F32; torch_dtype = "float32"; }
    else if (!strcmp(dt, "f16")) { out_dtype = ALRD_F16; torch_dtype = "float16"; }
    else if (!strcmp(dt, "bf16")) { out_dtype = ALRD_BF16; torch_dtype = "bfloat16"; }
    else {
        fprintf(stderr, "alrd-convert: --dtype: '%s' is not f32, f16 or bf16\n", dt);
        return 1;
    }
    if (vocab_only) return convert_vocab(model, dir);

    alrd_error err = {{0}};
    alrd_source s;
    if (alrd_source_open(&s, model, &err) != 0) return fail(err.msg);
    alrd_tensor *ts = NULL;
    int n = 0, rc = stage_open(dir, &err);
    if (rc == 0) rc = export_list(&s, &ts, &n, &err);
    alrd_config cfg = s.config;
    cfg.tie_embeddings = alrd_source_tensor(&s, "lm_head.weight") == NULL || s.config.tie_embeddings;
    if (rc == 0) rc = alrd_hf_config_write(&cfg, &s.vocab, torch_dtype, g_staged[0], &err);
    if (rc == 0) rc = alrd_hf_generation_config_write(&s.vocab, g_staged[1], &err);
    if (rc == 0) rc = alrd_hf_tokenizer_write(&s.vocab, g_staged[2], &err);
    if (rc == 0) rc = alrd_hf_tokenizer_config_write(&s.vocab, cfg.max_ctx, g_staged[3], &err);
    if (rc == 0) rc = alrd_safetensors_write(g_staged[4], ts, n, out_dtype, &err);
    const int want[N_FILES] = {1, 1, 1, 1, 1};
    if (rc == 0) rc = stage_commit(dir, want, &err);
    size_t bytes = 0;
    for (int i = 0; i < n; i++)
        bytes += (size_t)alrd_tensor_numel(&ts[i]) * (out_dtype == ALRD_F32 ? 4 : 2);
    free(ts);
    alrd_source_close(&s);
    if (rc != 0) return fail(err.msg);
    printf("%s: %d tensors (%s, %.1f MB), config.json, tokenizer.json, tokenizer_config.json, "
           "generation_config.json\n", dir, n, dt, bytes / 1e6);
    return 0;
}
