/* io: errors, mapped files, atomic output, sha256, progress. */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int alrd_errf(alrd_error *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        for (char *p = err->msg; *p; p++) /* keep it one line */
            if (*p == '\n' || *p == '\r') *p = ' ';
    }
    return -1;
}

int alrd_mmap_open(alrd_mmap *m, const char *path, alrd_error *err) {
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "%s", path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return alrd_errf(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return alrd_errf(err, "%s: not a regular file", path);
    }
    m->size = (size_t)st.st_size;
    if (m->size == 0) { /* mmap of 0 bytes fails; an empty file is just empty */
        close(fd);
        m->data = (const uint8_t *)"";
        return 0;
    }
    void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return alrd_errf(err, "%s: mmap failed: %s", path, strerror(errno));
    m->data = p;
    return 0;
}

void alrd_mmap_close(alrd_mmap *m) {
    if (m->data && m->size) munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

int alrd_read_file(const char *path, size_t max_size, char **out, size_t *out_size,
                   alrd_error *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return alrd_errf(err, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) { fclose(f); return alrd_errf(err, "%s: out of memory", path); }
    for (;;) {
        if (n == cap) {
            if (cap >= max_size) {
                free(buf); fclose(f);
                return alrd_errf(err, "%s: larger than the %zu-byte limit", path, max_size);
            }
            cap = cap * 2 > max_size ? max_size : cap * 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) { free(buf); fclose(f); return alrd_errf(err, "%s: out of memory", path); }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return alrd_errf(err, "%s: read error", path); }
    buf[n] = 0;
    *out = buf;
    if (out_size) *out_size = n;
    return 0;
}

/* The temp file being written, so a tool's signal handler can unlink it.
 * The one piece of process-global state, and only a name. */
static char g_active_tmp[1100];

const char *alrd_outfile_active_tmp(void) { return g_active_tmp[0] ? g_active_tmp : NULL; }

int alrd_outfile_open(alrd_outfile *o, const char *path, alrd_error *err) {
    memset(o, 0, sizeof *o);
    snprintf(o->path, sizeof o->path, "%s", path);
    snprintf(o->tmp_path, sizeof o->tmp_path, "%s.tmp.%ld", path, (long)getpid());
    /* Named before it exists, so a signal right after the create still
     * finds it (unlinking a name not yet created is harmless). */
    snprintf(g_active_tmp, sizeof g_active_tmp, "%s", o->tmp_path);
    int fd = open(o->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_TRUNC, 0644);
    if (fd < 0) {
        int e = errno;
        g_active_tmp[0] = 0;
        return alrd_errf(err, "%s: cannot create: %s", o->tmp_path, strerror(e));
    }
    o->fp = fdopen(fd, "wb");
    if (!o->fp) {
        close(fd); unlink(o->tmp_path);
        g_active_tmp[0] = 0;
        return alrd_errf(err, "%s: cannot open stream", o->tmp_path);
    }
    return 0;
}

int alrd_outfile_write(alrd_outfile *o, const void *data, size_t n, alrd_error *err) {
    if (o->failed) return -1;
    if (n && fwrite(data, 1, n, o->fp) != n) {
        o->failed = 1;
        return alrd_errf(err, "%s: write failed: %s", o->path, strerror(errno));
    }
    return 0;
}

int alrd_outfile_commit(alrd_outfile *o, alrd_error *err) {
    if (o->failed) { alrd_outfile_abort(o); return -1; }
    int bad = fflush(o->fp) != 0 || fsync(fileno(o->fp)) != 0;
    int e = errno;
    if (fclose(o->fp) != 0 && !bad) { bad = 1; e = errno; }
    o->fp = NULL;
    if (bad) {
        alrd_outfile_abort(o);
        return alrd_errf(err, "%s: write failed: %s", o->path, strerror(e));
    }
    if (rename(o->tmp_path, o->path) != 0) {
        e = errno;
        alrd_outfile_abort(o);
        return alrd_errf(err, "%s: cannot rename into place: %s", o->path, strerror(e));
    }
    g_active_tmp[0] = 0;
    return 0;
}

void alrd_outfile_abort(alrd_outfile *o) {
    if (o->fp) fclose(o->fp);
    o->fp = NULL;
    if (o->tmp_path[0]) unlink(o->tmp_path);
    o->tmp_path[0] = 0;
    g_active_tmp[0] = 0;
}

void alrd_progress(const char *what, size_t done, size_t total) {
    static const char *stage; /* the stage being timed (a non-terminal gets one line when it ends) */
    static double t0;
    if (!isatty(2)) {
        if (what != stage) { stage = what; t0 = alrd_now(); }
        if (total && done == total) {
            fprintf(stderr, "%s: %zu/%zu done in %.1f s\n", what, done, total, alrd_now() - t0);
            stage = NULL;
        }
        return;
    }
    if (total) fprintf(stderr, "\r%s: %zu/%zu (%.0f%%)   ", what, done, total, 100.0 * done / total);
    else fprintf(stderr, "\r%s: %zu   ", what, done);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

void alrd_release_pages(const void *p, size_t n) {
#ifdef MADV_DONTNEED
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0 || !n) return;
    uintptr_t a = (uintptr_t)p, b = a + n;
    a = (a + (uintptr_t)pg - 1) & ~(uintptr_t)(pg - 1); /* whole pages inside the range only */
    b &= ~(uintptr_t)(pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
#else
    (void)p, (void)n;
#endif
}

double alrd_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* sha256 (FIPS 180-4), used to identify evaluation files in reports. */
static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

void alrd_sha256_hex(const void *data, size_t n, char out[65]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const uint8_t *p = data;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) sha256_block(h, p + i);
    uint8_t tail[128] = {0};
    size_t rem = n - i;
    memcpy(tail, p + i, rem);
    tail[rem] = 0x80;
    size_t tl = rem + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;
    for (int k = 0; k < 8; k++) tail[tl - 1 - k] = (uint8_t)(bits >> (8 * k));
    sha256_block(h, tail);
    if (tl == 128) sha256_block(h, tail + 64);
    for (int k = 0; k < 8; k++) snprintf(out + 8 * k, 9, "%08x", h[k]);
}
