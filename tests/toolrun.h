/* toolrun: running the built tools (BUILD/alrd-*) as subprocesses from a
 * cmocka test, and looking at the files they leave. Shared by test_faults
 * and test_numerics. */
#ifndef ALRD_TOOLRUN_H
#define ALRD_TOOLRUN_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "../formats/io.h"
#include "tinymodel.h"

static inline const char *bin_dir(void) {
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

static inline int quick(void) {
    const char *q = getenv("ALRD_TEST_QUICK");
    return q && *q && strcmp(q, "0");
}

static inline void put_text(const char *path, const char *s) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(s, f);
    assert_int_equal(fclose(f), 0);
}

/* Whole file as a string (NULL if absent). */
static inline char *get_text(const char *path) {
    char *s = NULL;
    size_t n;
    alrd_error err;
    if (alrd_read_file(path, 1 << 24, &s, &n, &err) != 0) return NULL;
    return s;
}

static inline void expect_text(const char *path, const char *want) {
    char *s = get_text(path);
    if (!s) fail_msg("%s: missing (it must survive the failed run)", path);
    if (strcmp(s, want)) fail_msg("%s: content changed to '%.60s'", path, s);
    free(s);
}

static inline int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted names in dir joined by ',' ("" if empty or absent). */
static inline void listing(const char *dir, char *out, size_t cap) {
    char *names[64];
    int n = 0;
    out[0] = 0;
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) && n < 64)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        o += (size_t)snprintf(out + o, o < cap ? cap - o : 0, "%s%s", i ? "," : "", names[i]);
        free(names[i]);
    }
}

static inline void expect_listing(const char *dir, const char *want) {
    char got[2048];
    listing(dir, got, sizeof got);
    if (strcmp(got, want)) fail_msg("%s holds [%s], expected [%s]", dir, got, want);
}

/* Starts BUILD/tool with args (NULL-terminated); stdout and stderr go to
 * log. fsize > 0 caps the size of files the child writes (SIGXFSZ ignored,
 * so a write past it fails with EFBIG instead of killing the process). */
static inline pid_t spawn(const char *tool, const char *const *args, rlim_t fsize, const char *log) {
    char exe[512];
    snprintf(exe, sizeof exe, "%s/%s", bin_dir(), tool);
    if (access(exe, X_OK) != 0) fail_msg("%s: not built (run make first)", exe);
    const char *argv[40] = {exe};
    int n = 1;
    while (args[n - 1] && n < 39) {
        argv[n] = args[n - 1];
        n++;
    }
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) _exit(126);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        if (fsize) {
            signal(SIGXFSZ, SIG_IGN);
            struct rlimit rl = {fsize, fsize};
            if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(126);
        }
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static inline int wait_for(pid_t pid) {
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) fail_msg("waitpid: %s", strerror(errno));
    return st;
}

/* Runs to completion; returns the exit code (fails on death by signal). */
static inline int run_tool(const char *tool, const char *const *args, rlim_t fsize, const char *log) {
    int st = wait_for(spawn(tool, args, fsize, log));
    if (WIFSIGNALED(st)) {
        char *s = get_text(log);
        fail_msg("%s died by signal %d; output:\n%s", tool, WTERMSIG(st), s ? s : "");
    }
    return WEXITSTATUS(st);
}

/* The tool failed (exit 1) with a message containing each of a, b. */
static inline void expect_failure(const char *tool, const char *const *args, rlim_t fsize, const char *log,
                           const char *a, const char *b) {
    int code = run_tool(tool, args, fsize, log);
    char *s = get_text(log);
    if (code != 1) fail_msg("%s exited %d, expected 1; output:\n%s", tool, code, s ? s : "");
    if (!s || !strstr(s, a) || (b && !strstr(s, b)))
        fail_msg("%s: message lacks '%s' / '%s':\n%s", tool, a, b ? b : "", s ? s : "");
    free(s);
}

/* A fresh, empty directory under the test tmpdir. */
static inline void fresh_dir(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", alrd_test_tmpdir(), name);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(mkdir(out, 0755), 0);
}

/* A few KB of word salad: deterministic, ordinary ASCII text. */
static inline void write_calib(const char *path) {
    static const char *const words[] = {
        "the", "and", "of", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with",
        "be", "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which",
        "river", "city", "music", "season", "game", "album", "history", "war", "road", "team"};
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    uint64_t s = 99;
    for (int i = 0; i < 900; i++) {
        const char *w = words[tiny_lcg(&s) % (sizeof words / sizeof *words)];
        fprintf(f, "%s%s", w, i % 13 == 12 ? " .\n" : " ");
    }
    assert_int_equal(fclose(f), 0);
}

#endif
