/* fuzz_regress: replays every seed (tests/fuzz/corpus/<target>/) and every
 * input that once crashed a fuzz target (tests/fuzz/regress/<target>/)
 * through the same entry points the libFuzzer targets use, in the plain
 * (or SANITIZE=1) build. An entry point aborts on a broken invariant (a
 * failed call without a one-line message, an id outside the vocabulary, a
 * view outside its mapping, a round trip that differs...), which fails the
 * test; a crash fails it too. */
#include "testutil.h"

#include <dirent.h>

#define FUZZ_NO_MAIN
#include "fuzz/fuzz_alrd.c"
#include "fuzz/fuzz_config_json.c"
#include "fuzz/fuzz_gguf.c"
#include "fuzz/fuzz_ranks_json.c"
#include "fuzz/fuzz_safetensors.c"
#include "fuzz/fuzz_tokenize.c"
#include "fuzz/fuzz_tokenizer_json.c"

typedef int (*fuzz_fn)(const uint8_t *, size_t);

/* Runs fn on every regular file in dir; returns how many (0 if no dir). */
static int replay_dir(const char *dir, fuzz_fn fn) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        char *buf = NULL;
        size_t len = 0;
        alrd_error err;
        if (alrd_read_file(p, 1u << 24, &buf, &len, &err) != 0) fail_msg("%s", err.msg);
        fn((const uint8_t *)buf, len);
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

static void replay(const char *target, fuzz_fn fn) {
    char c[256], r[256];
    snprintf(c, sizeof c, "tests/fuzz/corpus/%s", target);
    snprintf(r, sizeof r, "tests/fuzz/regress/%s", target);
    int seeds = replay_dir(c, fn), regress = replay_dir(r, fn);
    print_message("%s: %d seeds, %d regress inputs\n", target, seeds, regress);
    assert_true(seeds > 0); /* the seeds are committed: their absence is a broken checkout */
}

static void test_regress_gguf(void **s) { (void)s; replay("gguf", fuzz_gguf); }
static void test_regress_safetensors(void **s) { (void)s; replay("safetensors", fuzz_safetensors); }
static void test_regress_config_json(void **s) { (void)s; replay("config_json", fuzz_config_json); }
static void test_regress_tokenizer_json(void **s) { (void)s; replay("tokenizer_json", fuzz_tokenizer_json); }
static void test_regress_alrd(void **s) { (void)s; replay("alrd", fuzz_alrd); }
static void test_regress_ranks_json(void **s) { (void)s; replay("ranks_json", fuzz_ranks_json); }
static void test_regress_tokenize(void **s) { (void)s; replay("tokenize", fuzz_tokenize); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_regress_gguf),        cmocka_unit_test(test_regress_safetensors),
        cmocka_unit_test(test_regress_config_json), cmocka_unit_test(test_regress_tokenizer_json),
        cmocka_unit_test(test_regress_alrd),        cmocka_unit_test(test_regress_ranks_json),
        cmocka_unit_test(test_regress_tokenize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
