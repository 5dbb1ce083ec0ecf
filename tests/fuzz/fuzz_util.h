/* fuzz_util: what the libFuzzer targets share. Each target defines
 * fuzz_<name>(data, size) and, unless FUZZ_NO_MAIN is defined, the libFuzzer
 * entry point calling it; tests/test_fuzz_regress.c includes every target
 * with FUZZ_NO_MAIN and replays tests/fuzz/{corpus,regress}/<name>/ through
 * the same functions in the plain build.
 *
 * Parsers take paths, so inputs go to a memfd (a regular file in memory,
 * opened again through /proc/self/fd/N) or, where a directory is needed,
 * to a private directory on tmpfs. */
#ifndef ALRD_FUZZ_UTIL_H
#define ALRD_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../formats/io.h"
#include "../../runtime/tokenizer.h"

/* An invariant of the code under test: a broken one is a finding, in the
 * fuzzer and in the regress test alike. */
#define FUZZ_CHECK(cond)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                           \
            abort();                                                                  \
        }                                                                             \
    } while (0)

/* A failed call must leave a one-line message naming something. */
static inline void fuzz_check_error(int rc, const alrd_error *err) {
    if (rc == 0) return;
    FUZZ_CHECK(err->msg[0] != 0);
    FUZZ_CHECK(strchr(err->msg, '\n') == NULL);
}

/* Writes data to this process's memfd and returns its path (valid until
 * the next call). The fd is reused across inputs. */
static inline const char *fuzz_memfile(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("alrd-fuzz", 0);
        if (fd < 0) { perror("memfd_create"); abort(); }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0) abort();
    size_t done = 0;
    while (done < size) {
        ssize_t w = pwrite(fd, data + done, size - done, (off_t)done);
        if (w <= 0) abort();
        done += (size_t)w;
    }
    return path;
}

/* A private directory on tmpfs (falls back to /tmp), created once. */
static inline const char *fuzz_dir(void) {
    static char dir[128];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/dev/shm/alrd-fuzz-XXXXXX");
        if (!mkdtemp(dir)) {
            snprintf(dir, sizeof dir, "/tmp/alrd-fuzz-XXXXXX");
            if (!mkdtemp(dir)) abort();
        }
    }
    return dir;
}

/* Writes data to DIR/name (or removes it when data is NULL). */
static inline void fuzz_put_file(const char *path, const uint8_t *data, size_t size) {
    if (!data) { unlink(path); return; }
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
}

/* A NUL-terminated copy of the input (parsers of text take C strings). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}

/* Data directory of the shared test data, as tests/testutil.h finds it. */
static inline const char *fuzz_data_dir(void) {
    const char *d = getenv("ALRD_DATA");
    return d ? d : "../shared/data";
}

/* Builds a tokenizer from v and runs text through encode, decode and
 * piece: every id stays in the vocabulary, every failure is one message. */
static inline void fuzz_run_tokenizer(const alrd_vocab *v, const char *text, size_t len) {
    alrd_tokenizer *t = NULL;
    alrd_error err = {{0}};
    int rc = alrd_tokenizer_new(&t, v, &err);
    fuzz_check_error(rc, &err);
    if (rc) return;
    int32_t *ids = NULL;
    size_t n = 0;
    rc = alrd_tokenizer_encode(t, text, len, 1, 1, &ids, &n, &err);
    fuzz_check_error(rc, &err);
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < v->n_tokens);
        char *s = NULL;
        FUZZ_CHECK(alrd_tokenizer_decode(t, ids, n, 1, &s, &err) == 0);
        free(s);
        char buf[64];
        for (size_t i = 0; i < n; i++) alrd_tokenizer_piece(t, ids[i], 1, buf, sizeof buf);
    }
    free(ids);
    alrd_tokenizer_free(t);
}

#endif
