/* faults: the real tools (BUILD/alrd-compress, BUILD/alrd-convert) run as
 * subprocesses against failing file systems and signals, and the .alrd /
 * safetensors readers against files crafted to make them allocate from
 * hostile sizes.
 *
 * Every failing run must exit non-zero with a message naming the path, leave
 * no partial output or temp file, and leave an existing file of the same
 * name intact. Faults: an unwritable output path (missing directory, a file
 * where a directory should be, a directory where the file should be), a
 * file-size limit (RLIMIT_FSIZE with SIGXFSZ ignored: writes fail with
 * EFBIG), a full disk (a 64 KiB tmpfs, when this process may mount one),
 * SIGINT / SIGTERM / SIGHUP during calibration and SIGINT / SIGTERM during
 * the write of the real model's .alrd file, and SIGTERM during alrd-convert's
 * write of model.safetensors. Most runs use a tiny synthetic model written here
 * (tests/tinymodel.h); the signal tests need the real one (skipped when
 * absent). ALRD_TEST_QUICK=1 runs one signal-during-write case instead of
 * two (for sanitizer builds). */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <zlib.h>

#include "../formats/alrd_file.h"
#include "../formats/safetensors.h"
#include "tinymodel.h"

#include "toolrun.h"

/* ---- fixtures: tiny model, calibration text, real model ranks --------- */

static char g_fix[512], g_tiny[600], g_calib[600], g_ranks[600];

static int fixtures(void **state) {
    (void)state;
    snprintf(g_fix, sizeof g_fix, "%s/faults-fixtures", alrd_test_tmpdir());
    mkdir(g_fix, 0755);
    snprintf(g_tiny, sizeof g_tiny, "%s/tiny.gguf", g_fix);
    snprintf(g_calib, sizeof g_calib, "%s/calib.txt", g_fix);
    snprintf(g_ranks, sizeof g_ranks, "%s/ranks.json", g_fix);
    tiny_opts o = tiny_defaults();
    if (tiny_model_write(g_tiny, &o) != 0) return -1;
    write_calib(g_calib);
    /* fixed ranks for the real model: skips the sensitivity search */
    FILE *f = fopen(g_ranks, "w");
    if (!f) return -1;
    fprintf(f, "{");
    for (int l = 0; l < 30; l++)
        fprintf(f, "%s\"model.layers.%d.self_attn.k_proj\": 96, \"model.layers.%d.self_attn.v_proj\": 96",
                l ? ", " : "", l, l);
    fprintf(f, "}\n");
    return fclose(f) == 0 ? 0 : -1;
}

#define COMPRESS_ARGS(model, out)                                                            \
    model, "-o", out, "--calib", g_calib, "--calib-samples", "2", "--calib-len", "64",       \
        "--probe-tokens", "64"

/* ---- unwritable output paths ------------------------------------------- */

static void test_compress_unwritable(void **state) {
    (void)state;
    char d[400], out[800], log[600], file[600], sub[600];
    fresh_dir(d, sizeof d, "faults-unwritable");
    snprintf(log, sizeof log, "%s.log", d);
    snprintf(file, sizeof file, "%s/plainfile", d);
    snprintf(sub, sizeof sub, "%s/adir", d);
    put_text(file, "not a directory\n");
    assert_int_equal(mkdir(sub, 0755), 0);

    /* a directory that does not exist: refused before the model is even
     * loaded (the model summary line never appears) */
    snprintf(out, sizeof out, "%s/missing/x.alrd", d);
    const char *a1[] = {COMPRESS_ARGS(g_tiny, out), NULL};
    expect_failure("alrd-compress", a1, 0, log, out, "cannot create");
    char *s = get_text(log);
    assert_non_null(s);
    if (strstr(s, "calibration")) fail_msg("the output path was only checked after loading:\n%s", s);
    free(s);
    /* a regular file where a directory should be */
    snprintf(out, sizeof out, "%s/x.alrd", file);
    const char *a2[] = {COMPRESS_ARGS(g_tiny, out), NULL};
    expect_failure("alrd-compress", a2, 0, log, out, "cannot create");
    /* a directory where the file should be: the rename fails, the temp goes */
    const char *a3[] = {COMPRESS_ARGS(g_tiny, sub), NULL};
    expect_failure("alrd-compress", a3, 0, log, sub, NULL);

    expect_listing(d, "adir,plainfile");
    expect_listing(sub, "");
    expect_text(file, "not a directory\n");
}

static void test_convert_unwritable(void **state) {
    (void)state;
    char d[400], out[800], log[600], file[600];
    fresh_dir(d, sizeof d, "faults-convert-unwritable");
    snprintf(log, sizeof log, "%s.log", d);
    snprintf(file, sizeof file, "%s/plainfile", d);
    put_text(file, "not a directory\n");
    snprintf(out, sizeof out, "%s/sub", file);
    const char *a1[] = {g_tiny, "--to-hf", out, NULL};
    expect_failure("alrd-convert", a1, 0, log, file, NULL);
    const char *a2[] = {g_tiny, "--to-hf", file, NULL};
    expect_failure("alrd-convert", a2, 0, log, file, "not a directory");
    expect_listing(d, "plainfile");
    expect_text(file, "not a directory\n");
    /* one of the five output names is a directory in DIR: refused before
     * any file is moved, so DIR keeps its old config.json (it once came out
     * half replaced) */
    char hf[600], cfg[800], st[800];
    snprintf(hf, sizeof hf, "%s/hf", d);
    snprintf(cfg, sizeof cfg, "%s/config.json", hf);
    snprintf(st, sizeof st, "%s/model.safetensors", hf);
    assert_int_equal(mkdir(hf, 0755), 0);
    assert_int_equal(mkdir(st, 0755), 0);
    put_text(cfg, "{\"old\": true}\n");
    const char *a3[] = {g_tiny, "--to-hf", hf, NULL};
    expect_failure("alrd-convert", a3, 0, log, st, "is a directory");
    expect_listing(hf, "config.json,model.safetensors");
    expect_text(cfg, "{\"old\": true}\n");
}

/* ---- a file-size limit: writes fail with EFBIG ------------------------- */

static void test_compress_file_size_limit(void **state) {
    (void)state;
    char d[400], out[600], log[600];
    fresh_dir(d, sizeof d, "faults-fsize");
    snprintf(log, sizeof log, "%s.log", d);
    snprintf(out, sizeof out, "%s/out.alrd", d);
    put_text(out, "the previous model\n");
    const char *a[] = {COMPRESS_ARGS(g_tiny, out), NULL};
    /* the tiny model's file is ~100 KB; 32 KB in the write fails */
    expect_failure("alrd-compress", a, 32 << 10, log, out, "File too large");
    expect_listing(d, "out.alrd");
    expect_text(out, "the previous model\n");
    /* without the limit the same command works and replaces the file */
    assert_int_equal(run_tool("alrd-compress", a, 0, log), 0);
    expect_listing(d, "out.alrd,out.alrd.ranks.json");
    alrd_file f;
    alrd_error err = {{0}};
    assert_int_equal(alrd_file_open(&f, out, &err), 0);
    assert_int_equal(f.config.n_layers, 2);
    alrd_file_close(&f);
}

static void test_convert_file_size_limit(void **state) {
    (void)state;
    char d[400], hf[600], log[600], cfg[800];
    fresh_dir(d, sizeof d, "faults-convert-fsize");
    snprintf(log, sizeof log, "%s.log", d);
    snprintf(hf, sizeof hf, "%s/hf", d);
    assert_int_equal(mkdir(hf, 0755), 0);
    snprintf(cfg, sizeof cfg, "%s/config.json", hf);
    put_text(cfg, "{\"old\": true}\n");
    /* the JSON files fit, model.safetensors (~380 KB in f32) does not */
    const char *a[] = {g_tiny, "--to-hf", hf, NULL};
    expect_failure("alrd-convert", a, 64 << 10, log, "model.safetensors", "File too large");
    expect_listing(hf, "config.json");
    expect_text(cfg, "{\"old\": true}\n");
}

/* ---- a full disk: a 64 KiB tmpfs ---------------------------------------- */

static char g_mnt[600];

static int mount_small_tmpfs(void **state) {
    (void)state;
    snprintf(g_mnt, sizeof g_mnt, "%s/faults-mnt", alrd_test_tmpdir());
    mkdir(g_mnt, 0755);
    if (mount("tmpfs", g_mnt, "tmpfs", 0, "size=64k,mode=0755") != 0) {
        g_mnt[0] = 0; /* not root / no CAP_SYS_ADMIN: the test skips */
    }
    return 0;
}

static int unmount_small_tmpfs(void **state) {
    (void)state;
    if (g_mnt[0]) umount2(g_mnt, MNT_DETACH);
    return 0;
}

static unsigned long used_blocks(const char *dir) {
    struct statvfs sv;
    assert_int_equal(statvfs(dir, &sv), 0);
    return (unsigned long)(sv.f_blocks - sv.f_bfree);
}

static void test_full_disk(void **state) {
    (void)state;
    if (!g_mnt[0]) {
        print_message("skip: cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE tests cover write failures\n");
        skip();
    }
    char out[800], log[800], hf[800], cfg[1000];
    snprintf(log, sizeof log, "%s/faults-disk.log", alrd_test_tmpdir());
    snprintf(out, sizeof out, "%s/out.alrd", g_mnt);
    snprintf(hf, sizeof hf, "%s/hf", g_mnt);
    put_text(out, "the previous model\n");
    assert_int_equal(mkdir(hf, 0755), 0);
    snprintf(cfg, sizeof cfg, "%s/config.json", hf);
    put_text(cfg, "{\"old\": true}\n");
    unsigned long before = used_blocks(g_mnt);

    const char *a[] = {COMPRESS_ARGS(g_tiny, out), NULL};
    expect_failure("alrd-compress", a, 0, log, out, "No space left on device");
    expect_listing(g_mnt, "hf,out.alrd");
    expect_text(out, "the previous model\n");

    const char *c[] = {g_tiny, "--to-hf", hf, NULL};
    expect_failure("alrd-convert", c, 0, log, "No space left on device", NULL);
    expect_listing(hf, "config.json");
    expect_text(cfg, "{\"old\": true}\n");
    /* the space the partial files took is back */
    assert_int_equal(used_blocks(g_mnt), before);
}

/* ---- signals --------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Is there an entry in dir whose name starts with prefix? */
static int has_prefix_entry(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d))) found = !strncmp(e->d_name, prefix, strlen(prefix));
    closedir(d);
    return found;
}

/* Starts alrd-compress on the real model into DIR/out.alrd (which holds an
 * old file) and sends sig: after delay seconds, or (delay < 0) as soon as
 * the temp file of the output appears. The process must die by that
 * signal and leave DIR as it was. */
static void signal_case(const char *name, int sig, double delay) {
    char d[400], out[600], log[600];
    fresh_dir(d, sizeof d, name);
    snprintf(log, sizeof log, "%s.log", d);
    snprintf(out, sizeof out, "%s/out.alrd", d);
    put_text(out, "the previous model\n");
    const char *args[] = {COMPRESS_ARGS(ALRD_TEST_MODEL, out), "--ranks", g_ranks, NULL};
    if (delay >= 0) args[11] = NULL; /* calibration case: the full search */
    pid_t pid = spawn("alrd-compress", args, 0, log);
    double t0 = now_s();
    int sent = 0;
    if (delay >= 0) {
        sleep_s(delay);
        sent = kill(pid, sig) == 0;
    } else {
        while (now_s() - t0 < 600) {
            if (has_prefix_entry(d, "out.alrd.tmp.")) {
                sent = kill(pid, sig) == 0;
                break;
            }
            if (waitpid(pid, NULL, WNOHANG) == pid) fail_msg("alrd-compress finished before its temp file was seen");
            sleep_s(0.002);
        }
    }
    int st = wait_for(pid);
    char *s = get_text(log);
    if (!sent || !WIFSIGNALED(st) || WTERMSIG(st) != sig)
        fail_msg("alrd-compress: expected death by signal %d after %.1f s (sent %d), got status 0x%x:\n%s",
                 sig, now_s() - t0, sent, st, s ? s : "");
    print_message("%s: signal %d after %.2f s\n", name, sig, now_s() - t0);
    free(s);
    expect_listing(d, "out.alrd");
    expect_text(out, "the previous model\n");
}

static void test_sigint_during_calibration(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    signal_case("faults-sigint-calib", SIGINT, 1.5);
}

static void test_sigterm_during_calibration(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    signal_case("faults-sigterm-calib", SIGTERM, 1.5);
}

static void test_sighup_during_calibration(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    signal_case("faults-sighup-calib", SIGHUP, 1.5);
}

static void test_signals_during_write(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    signal_case("faults-sigterm-write", SIGTERM, -1);
    if (!quick()) signal_case("faults-sigint-write", SIGINT, -1);
}

/* alrd-convert of the real model into DIR (holding an old config.json),
 * SIGTERM once model.safetensors is being written in its staging dir: the
 * handler removes the staging dir and exits 1; DIR is as it was. */
static void test_convert_sigterm_during_write(void **state) {
    (void)state;
    ALRD_MODEL_OR_SKIP();
    char d[400], hf[600], cfg[800], log[600], stage[900] = "";
    fresh_dir(d, sizeof d, "faults-convert-sigterm");
    snprintf(log, sizeof log, "%s.log", d);
    snprintf(hf, sizeof hf, "%s/hf", d);
    snprintf(cfg, sizeof cfg, "%s/config.json", hf);
    assert_int_equal(mkdir(hf, 0755), 0);
    put_text(cfg, "{\"old\": true}\n");
    const char *args[] = {ALRD_TEST_MODEL, "--to-hf", hf, "--dtype", "f16", NULL};
    pid_t pid = spawn("alrd-convert", args, 0, log);
    double t0 = now_s();
    int sent = 0;
    while (!sent && now_s() - t0 < 600) {
        if (!stage[0]) {
            DIR *dd = opendir(hf);
            struct dirent *e;
            while (dd && (e = readdir(dd)))
                if (!strncmp(e->d_name, ".alrd-convert-", 14)) snprintf(stage, sizeof stage, "%s/%s", hf, e->d_name);
            if (dd) closedir(dd);
        } else if (has_prefix_entry(stage, "model.safetensors.tmp.")) {
            sent = kill(pid, SIGTERM) == 0;
            break;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) fail_msg("alrd-convert finished before its temp file was seen");
        sleep_s(0.002);
    }
    int st = wait_for(pid);
    char *s = get_text(log);
    if (!sent || !WIFEXITED(st) || WEXITSTATUS(st) != 1)
        fail_msg("alrd-convert: expected exit 1 after SIGTERM (sent %d), status 0x%x:\n%s", sent, st, s ? s : "");
    free(s);
    print_message("alrd-convert: SIGTERM after %.2f s\n", now_s() - t0);
    expect_listing(hf, "config.json");
    expect_text(cfg, "{\"old\": true}\n");
}

/* ---- crafted .alrd files: sizes claimed by the file -------------------- */

/* A byte buffer with little-endian appenders (hosts are little-endian). */
typedef tiny_buf wb;
static void wb_put(wb *b, const void *d, size_t n) { tb_put(b, d, n); }
static void wb_u32(wb *b, uint32_t v) { wb_put(b, &v, 4); }
static void wb_u64(wb *b, uint64_t v) { wb_put(b, &v, 8); }
static void wb_f32(wb *b, float v) { wb_put(b, &v, 4); }
static void wb_str(wb *b, const char *s) { wb_u32(b, (uint32_t)strlen(s)); wb_put(b, s, strlen(s) + 1); }

typedef struct {
    uint32_t kind, flags;
    wb data;          /* stored bytes */
    uint64_t raw;     /* raw_size (0: the stored size) */
} section;

/* Lays out header, section table, sections and no tensor data (the format
 * of formats/ALRD_FORMAT.md), every CRC correct. */
static void craft_alrd(const char *path, section *s, int ns) {
    size_t hs = 64 + 40 * (size_t)ns, off = (hs + 63) / 64 * 64;
    uint64_t offs[8];
    for (int i = 0; i < ns; i++) {
        offs[i] = off;
        off = (off + s[i].data.n + 63) / 64 * 64;
    }
    uint8_t *f = calloc(1, off);
    assert_non_null(f);
    memcpy(f, "ALRD", 4);
    uint32_t v32 = 1;
    memcpy(f + 4, &v32, 4);
    v32 = (uint32_t)hs;
    memcpy(f + 8, &v32, 4);
    v32 = (uint32_t)ns;
    memcpy(f + 12, &v32, 4);
    uint64_t v64 = off;
    memcpy(f + 16, &v64, 8); /* file_size */
    memcpy(f + 24, &v64, 8); /* data_offset: no tensor data */
    for (int i = 0; i < ns; i++) {
        uint8_t *e = f + 64 + 40 * i;
        memcpy(f + offs[i], s[i].data.p, s[i].data.n);
        uint64_t size = s[i].data.n, raw = s[i].raw ? s[i].raw : size;
        uint32_t crc = (uint32_t)crc32(crc32(0, Z_NULL, 0), s[i].data.p, (uInt)size);
        memcpy(e, &s[i].kind, 4);
        memcpy(e + 4, &s[i].flags, 4);
        memcpy(e + 8, &offs[i], 8);
        memcpy(e + 16, &size, 8);
        memcpy(e + 24, &raw, 8);
        memcpy(e + 32, &crc, 4);
    }
    uLong hc = crc32(0L, Z_NULL, 0);
    hc = crc32(hc, f, 60);
    hc = crc32(hc, f + 64, (uInt)(hs - 64));
    v32 = (uint32_t)hc;
    memcpy(f + 60, &v32, 4);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(f, 1, off, fp), off);
    assert_int_equal(fclose(fp), 0);
    free(f);
}

static void enc_config(wb *b) {
    wb_str(b, "llama");
    const int32_t iv[8] = {1, 64, 4, 2, 16, 128, 8, 512};
    for (int i = 0; i < 8; i++) wb_u32(b, (uint32_t)iv[i]);
    wb_f32(b, 1e-5f);
    wb_f32(b, 10000.0f);
    wb_u32(b, 0);
    wb_f32(b, 1); wb_f32(b, 1); wb_f32(b, 4);
    wb_u32(b, 0); wb_u32(b, 1); wb_u32(b, 0); wb_u32(b, 0);
}

/* n_tokens tokens "t0".."tN" are written; claim is what the field says. */
static void enc_vocab(wb *b, int32_t claim, int n, int32_t merges_claim) {
    wb_u32(b, 1); /* BPE bytes */
    wb_str(b, "gpt2");
    wb_u32(b, (uint32_t)claim);
    for (int i = 0; i < n; i++) {
        char t[16];
        snprintf(t, sizeof t, "t%d", i);
        wb_str(b, t);
    }
    wb_u32(b, 0); /* has_scores */
    wb_u32(b, 0); /* has_types */
    wb_u32(b, (uint32_t)merges_claim);
    const int32_t ids[4] = {-1, 0, -1, -1};
    for (int i = 0; i < 4; i++) wb_u32(b, (uint32_t)ids[i]);
    wb_u32(b, 0); wb_u32(b, 0); wb_u32(b, 0);
    wb_u32(b, 0); /* no chat template */
}

static void enc_lowrank(wb *b, int32_t claim_layers, int n_layers) {
    wb_u32(b, (uint32_t)claim_layers);
    const int32_t fields[6] = {2, 1, 32, 128, 0, 1}; /* group_heads .. whitened */
    for (int i = 0; i < 6; i++) wb_u32(b, (uint32_t)fields[i]);
    for (int a = 0; a < 4; a++)
        for (int l = 0; l < n_layers; l++) wb_u32(b, a < 2 ? 16 : 16);
}

static void expect_alrd_error(const char *path, const char *what) {
    alrd_file f;
    alrd_error err = {{0}};
    if (alrd_file_open(&f, path, &err) == 0) {
        alrd_file_close(&f);
        fail_msg("%s: accepted, expected an error about '%s'", path, what);
    }
    /* the bounds check speaks, not the allocator */
    if (!strstr(err.msg, what) || strstr(err.msg, "out of memory"))
        fail_msg("%s: error '%s' lacks '%s'", path, err.msg, what);
}

static void free_sections(section *s, int n) {
    for (int i = 0; i < n; i++) free(s[i].data.p);
}

static void test_alrd_claimed_sizes(void **state) {
    (void)state;
    char p[600];
    snprintf(p, sizeof p, "%s/crafted.alrd", alrd_test_tmpdir());
    section s[4];

    /* the valid baseline: config, tokenizer, empty tensor directory */
#define RESET()                                                    \
    do {                                                           \
        memset(s, 0, sizeof s);                                    \
        s[0].kind = 1; enc_config(&s[0].data);                     \
        s[1].kind = 3;                                             \
        s[2].kind = 4; wb_u32(&s[2].data, 0);                      \
    } while (0)
    RESET();
    enc_vocab(&s[1].data, 3, 3, 0);
    craft_alrd(p, s, 3);
    alrd_file f;
    alrd_error err = {{0}};
    assert_int_equal(alrd_file_open(&f, p, &err), 0);
    assert_int_equal(f.vocab.n_tokens, 3);
    assert_string_equal(f.vocab.tokens[2], "t2");
    alrd_file_close(&f);
    free_sections(s, 3);

    /* 2^31-1 tokens claimed by a section of a few bytes */
    RESET();
    enc_vocab(&s[1].data, INT32_MAX, 3, 0);
    craft_alrd(p, s, 3);
    expect_alrd_error(p, "n_tokens 2147483647 does not fit");
    free_sections(s, 3);

    /* 2^31-1 merges claimed */
    RESET();
    enc_vocab(&s[1].data, 3, 3, INT32_MAX);
    craft_alrd(p, s, 3);
    expect_alrd_error(p, "n_merges 2147483647 does not fit");
    free_sections(s, 3);

    /* 2^32-1 tensors claimed by a 4-byte directory */
    RESET();
    enc_vocab(&s[1].data, 3, 3, 0);
    s[2].data.n = 0;
    wb_u32(&s[2].data, UINT32_MAX);
    craft_alrd(p, s, 3);
    expect_alrd_error(p, "n_tensors 4294967295 does not fit");
    free_sections(s, 3);

    /* a compressed section claiming to inflate to 1 GiB from 16 bytes, and
     * one claiming 1000x (allowed by the ratio bound) that does not inflate */
    RESET();
    enc_vocab(&s[1].data, 3, 3, 0);
    uint8_t z[64];
    uLongf zn = sizeof z;
    assert_int_equal(compress2(z, &zn, (const Bytef *)"0123456789abcdef", 16, 9), Z_OK);
    free(s[1].data.p);
    memset(&s[1].data, 0, sizeof s[1].data);
    wb_put(&s[1].data, z, zn);
    s[1].flags = 1;
    s[1].raw = (uint64_t)1 << 30;
    craft_alrd(p, s, 3);
    expect_alrd_error(p, "raw_size 1073741824 outside");
    s[1].raw = 1000 * (uint64_t)zn;
    craft_alrd(p, s, 3);
    expect_alrd_error(p, "does not inflate");
    free_sections(s, 3);

    /* a lowrank section claiming 2^31-1 layers, and 4096 layers in 40 bytes */
    RESET();
    enc_vocab(&s[1].data, 3, 3, 0);
    s[3].kind = 2;
    enc_lowrank(&s[3].data, INT32_MAX, 1);
    craft_alrd(p, s, 4);
    expect_alrd_error(p, "n_layers 2147483647 outside");
    s[3].data.n = 0;
    enc_lowrank(&s[3].data, 4096, 1);
    craft_alrd(p, s, 4);
    expect_alrd_error(p, "section lowrank: truncated at per-layer arrays");
    free_sections(s, 4);

    /* a tensor of [2^40, 2^40] F32 in the directory */
    RESET();
    enc_vocab(&s[1].data, 3, 3, 0);
    s[2].data.n = 0;
    wb_u32(&s[2].data, 1);
    wb_str(&s[2].data, "huge");
    wb_u32(&s[2].data, 0); /* F32 */
    wb_u32(&s[2].data, 2);
    wb_u64(&s[2].data, (uint64_t)1 << 40);
    wb_u64(&s[2].data, (uint64_t)1 << 40);
    wb_u32(&s[2].data, 0);
    wb_u64(&s[2].data, 0);
    wb_u64(&s[2].data, (uint64_t)1 << 62);
    wb_u32(&s[2].data, 0);
    craft_alrd(p, s, 3);
    expect_alrd_error(p, "tensor huge");
    free_sections(s, 3);
#undef RESET
}

/* ---- safetensors index: shard names and counts ----------------------- */

static void test_safetensors_index_bounds(void **state) {
    (void)state;
    char d[400], idx[600];
    fresh_dir(d, sizeof d, "faults-index");
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", d);
    alrd_safetensors_set set;
    alrd_error err = {{0}};
    /* an absolute path and a subdirectory: an index names files next to it */
    put_text(idx, "{\"weight_map\": {\"a\": \"/etc/passwd\"}}");
    assert_int_equal(alrd_safetensors_set_open_index(&set, idx, &err), -1);
    assert_non_null(strstr(err.msg, "weight_map: a"));
    put_text(idx, "{\"weight_map\": {\"a\": \"sub/x.safetensors\"}}");
    assert_int_equal(alrd_safetensors_set_open_index(&set, idx, &err), -1);
    assert_non_null(strstr(err.msg, "weight_map: a"));
    /* 5000 distinct shard files named: refused before any is opened */
    size_t cap = 5000 * 48 + 64, o = 0;
    char *j = malloc(cap);
    assert_non_null(j);
    o += (size_t)snprintf(j + o, cap - o, "{\"weight_map\": {");
    for (int i = 0; i < 5000; i++)
        o += (size_t)snprintf(j + o, cap - o, "%s\"t%d\": \"s%d.safetensors\"", i ? ", " : "", i, i);
    snprintf(j + o, cap - o, "}}");
    put_text(idx, j);
    free(j);
    assert_int_equal(alrd_safetensors_set_open_index(&set, idx, &err), -1);
    assert_non_null(strstr(err.msg, "5000 shard files, at most 4096"));
    /* a weight_map that is not an object */
    put_text(idx, "{\"weight_map\": [\"x\"]}");
    assert_int_equal(alrd_safetensors_set_open_index(&set, idx, &err), -1);
    assert_non_null(strstr(err.msg, "weight_map"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compress_unwritable),
        cmocka_unit_test(test_convert_unwritable),
        cmocka_unit_test(test_compress_file_size_limit),
        cmocka_unit_test(test_convert_file_size_limit),
        cmocka_unit_test_setup_teardown(test_full_disk, mount_small_tmpfs, unmount_small_tmpfs),
        cmocka_unit_test(test_alrd_claimed_sizes),
        cmocka_unit_test(test_safetensors_index_bounds),
        cmocka_unit_test(test_sigint_during_calibration),
        cmocka_unit_test(test_sigterm_during_calibration),
        cmocka_unit_test(test_sighup_during_calibration),
        cmocka_unit_test(test_signals_during_write),
        cmocka_unit_test(test_convert_sigterm_during_write),
    };
    return cmocka_run_group_tests(tests, fixtures, NULL);
}
