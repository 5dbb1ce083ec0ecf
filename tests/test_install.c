/* test_install: `make install` into a temporary prefix puts the tools, the
 * static library, the public header with the module headers it includes,
 * and alrd.pc there; examples/generate.c, compiled against that prefix
 * through pkg-config alone, prints the same text as the in-tree build of
 * it, and on the real model completes "The capital of France is" with
 * Paris. Skipped in sanitizer builds (the instrumented library needs the
 * sanitizer runtime, which pkg-config does not name).
 * Also: the tools include the public header, and any internal module only
 * with a comment saying why (on the include's line or the line above). */
#include "testutil.h"

#include <dirent.h>
#include <sys/stat.h>

#include "tinymodel.h"

static const char *build_dir(void) { return getenv("BUILD") ? getenv("BUILD") : "build"; }

static void must_exist(const char *pfx, const char *rel) {
    char p[800];
    snprintf(p, sizeof p, "%s/%s", pfx, rel);
    if (access(p, R_OK) != 0) fail_msg("make install did not write %s", p);
}

/* Runs cmd (sh), stdout into out (NUL-terminated, cap bytes); returns the exit status. */
static int run(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_install_and_link(void **state) {
    (void)state;
    if (strstr(build_dir(), "san")) {
        print_message("skip: sanitizer build\n");
        skip();
    }
    char pfx[600], cmd[4096], log[700], gen[700], tiny[700];
    snprintf(pfx, sizeof pfx, "%s/prefix", alrd_test_tmpdir());
    snprintf(log, sizeof log, "%s/install.log", alrd_test_tmpdir());
    snprintf(gen, sizeof gen, "%s/generate", alrd_test_tmpdir());
    /* a clean sub-make: not the jobserver of the make running the tests */
    snprintf(cmd, sizeof cmd, "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s install BUILD=%s PREFIX=%s > %s 2>&1",
             build_dir(), pfx, log);
    if (system(cmd) != 0) fail_msg("make install failed (%s)", log);
    must_exist(pfx, "include/alrd/alrd.h");
    must_exist(pfx, "include/alrd/runtime/context.h");
    must_exist(pfx, "include/alrd/formats/io.h");
    must_exist(pfx, "lib/libalrd.a");
    must_exist(pfx, "lib/pkgconfig/alrd.pc");
    must_exist(pfx, "bin/alrd-compress");
    char out[8192], want[8192];
    snprintf(cmd, sizeof cmd,
             "export PKG_CONFIG_PATH=%s/lib/pkgconfig; cc examples/generate.c $(pkg-config --cflags --libs --static alrd)"
             " -o %s 2>&1", pfx, gen);
    if (run(cmd, out, sizeof out) != 0) fail_msg("the example does not build against the installed library:\n%s", out);

    snprintf(tiny, sizeof tiny, "%s/install-tiny.gguf", alrd_test_tmpdir());
    tiny_opts o = tiny_defaults();
    assert_int_equal(tiny_model_write(tiny, &o), 0);
    snprintf(cmd, sizeof cmd, "%s '%s' 'the river' 12 4 2>/dev/null", gen, tiny);
    assert_int_equal(run(cmd, out, sizeof out), 0);
    snprintf(cmd, sizeof cmd, "%s/examples/generate '%s' 'the river' 12 4 2>/dev/null", build_dir(), tiny);
    assert_int_equal(run(cmd, want, sizeof want), 0);
    assert_true(strlen(out) > strlen("the river"));
    assert_string_equal(out, want);

    if (access(ALRD_TEST_MODEL, R_OK) == 0) {
        snprintf(cmd, sizeof cmd, "%s %s 'The capital of France is' 8 2>/dev/null", gen, ALRD_TEST_MODEL);
        assert_int_equal(run(cmd, out, sizeof out), 0);
        print_message("installed example: %s", out);
        assert_non_null(strstr(out, "The capital of France is Paris"));
    }
}

/* Each tool includes alrd.h, and every other `#include "../` in tools/
 * carries its reason on its line or the line above. */
static void test_tools_include_public_header(void **state) {
    (void)state;
    DIR *d = opendir("tools");
    assert_non_null(d);
    int n_tools = 0, bad = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        int is_c = len > 2 && !strcmp(e->d_name + len - 2, ".c");
        if (!is_c && !(len > 2 && !strcmp(e->d_name + len - 2, ".h"))) continue;
        char path[600], line[1024], prev[1024] = "";
        snprintf(path, sizeof path, "tools/%s", e->d_name);
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        int has_public = 0;
        for (int ln = 1; fgets(line, sizeof line, f); ln++, memcpy(prev, line, sizeof prev)) {
            if (strncmp(line, "#include \"../", 13)) continue;
            if (!strncmp(line, "#include \"../alrd.h\"", 20)) {
                has_public = 1;
                continue;
            }
            if (!strstr(line, "/*") && !(!strncmp(prev, "/*", 2) && strstr(prev, "*/"))) {
                print_message("%s:%d: internal include without a comment saying why: %s", path, ln, line);
                bad++;
            }
        }
        fclose(f);
        if (is_c) {
            n_tools++;
            if (!has_public) print_message("%s: does not include ../alrd.h\n", path);
            bad += !has_public;
        }
    }
    closedir(d);
    assert_true(n_tools >= 6);
    assert_int_equal(bad, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_tools_include_public_header),
                                       cmocka_unit_test(test_install_and_link)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
