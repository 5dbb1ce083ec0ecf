/* testutil: cmocka plus the paths tests share. Tests that need the model or
 * ../shared/data skip with a message when it is absent. */
#ifndef ALRD_TESTUTIL_H
#define ALRD_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#define ALRD_TEST_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"

static inline const char *alrd_test_data_dir(void) {
    const char *d = getenv("ALRD_DATA");
    return d ? d : "../shared/data";
}

/* Path of a file under the shared data dir, or skip the test if missing. */
#define ALRD_DATA_OR_SKIP(buf, rel)                                              \
    do {                                                                         \
        snprintf((buf), sizeof(buf), "%s/%s", alrd_test_data_dir(), (rel));      \
        if (access((buf), R_OK) != 0) {                                          \
            print_message("skip: %s absent\n", (buf));                           \
            skip();                                                              \
        }                                                                        \
    } while (0)

#define ALRD_MODEL_OR_SKIP()                                                     \
    do {                                                                         \
        if (access(ALRD_TEST_MODEL, R_OK) != 0) {                                \
            print_message("skip: %s absent (run make model)\n", ALRD_TEST_MODEL);\
            skip();                                                              \
        }                                                                        \
    } while (0)

/* ALRD_TEST_QUICK=1 (set by make test SANITIZE=1): slow end-to-end cases
 * skip or shrink their work, the fast checks still run. */
static inline int alrd_test_quick(void) {
    const char *q = getenv("ALRD_TEST_QUICK");
    return q && *q && *q != '0';
}

#define ALRD_SKIP_IF_QUICK()                                                     \
    do {                                                                         \
        if (alrd_test_quick()) {                                                 \
            print_message("skip: ALRD_TEST_QUICK set\n");                       \
            skip();                                                              \
        }                                                                        \
    } while (0)

/* Scratch dir for files a test writes (created once per process). */
static inline const char *alrd_test_tmpdir(void) {
    static char dir[256];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/alrd-test-XXXXXX");
        if (!mkdtemp(dir)) snprintf(dir, sizeof dir, "/tmp");
    }
    return dir;
}

#endif
