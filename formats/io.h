/* io: errors, mapped files, checked arithmetic and atomic output files.
 * Every module reports failure through an alrd_error filled by alrd_errf()
 * and a non-zero return; nothing in the library aborts or exits. */
#ifndef ALRD_IO_H
#define ALRD_IO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define ALRD_ERR_MSG 512

typedef struct {
    char msg[ALRD_ERR_MSG]; /* one line: "FILE: FIELD: what was expected" */
} alrd_error;

/* Formats msg into err (err may be NULL). Always returns -1 so callers can
 * write `return alrd_errf(err, "...")`. */
int alrd_errf(alrd_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Read-only whole-file mapping. data is owned by the mapping. */
typedef struct {
    const uint8_t *data;
    size_t size;
    char path[1024];
} alrd_mmap;

int alrd_mmap_open(alrd_mmap *m, const char *path, alrd_error *err);
void alrd_mmap_close(alrd_mmap *m);

/* Reads a whole (small) file into a malloc'd, NUL-terminated buffer the
 * caller frees. Refuses files larger than max_size. */
int alrd_read_file(const char *path, size_t max_size, char **out, size_t *out_size,
                   alrd_error *err);

/* Overflow-checked size arithmetic: return 0 on success, -1 on overflow. */
static inline int alrd_mul_ok(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}
static inline int alrd_add_ok(size_t a, size_t b, size_t *out) {
    return __builtin_add_overflow(a, b, out) ? -1 : 0;
}

/* Atomic output: writes go to "PATH.tmp.PID"; commit fsyncs and renames it
 * over PATH; abort (or a failed commit) unlinks the temp file, so PATH is
 * either the old file or the complete new one, never a partial file. */
typedef struct {
    FILE *fp;
    char path[1024];
    char tmp_path[1100];
    int failed;
} alrd_outfile;

int alrd_outfile_open(alrd_outfile *o, const char *path, alrd_error *err);
int alrd_outfile_write(alrd_outfile *o, const void *data, size_t n, alrd_error *err);
int alrd_outfile_commit(alrd_outfile *o, alrd_error *err);
void alrd_outfile_abort(alrd_outfile *o);

/* Names of all temp files currently open, for a signal handler that must
 * unlink them (tools install it; the library only records the name). */
const char *alrd_outfile_active_tmp(void);

/* Progress on stderr: a live line on a terminal; otherwise one line when a
 * stage ends (done == total), with its wall time since its first call. */
void alrd_progress(const char *what, size_t done, size_t total);

/* sha256 of a buffer as 64 lowercase hex chars + NUL. */
void alrd_sha256_hex(const void *data, size_t n, char out[65]);

/* Drops the whole pages inside [p, p+n) of a read-only file mapping
 * (alrd_mmap) from this process's resident set; they stay in the page cache
 * and fault back in when read again. Never for heap memory (it would read
 * back as zeros). */
void alrd_release_pages(const void *p, size_t n);

/* Wall clock in seconds. */
double alrd_now(void);

#endif
