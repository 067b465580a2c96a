/* check.h — the C unit tests' one assertion macro and their pass/fail tally. */
#ifndef TF_TEST_CHECK_H
#define TF_TEST_CHECK_H

#include <stdio.h>

static int passed, failed;

/* Counts cond; on failure prints where, the condition and a printf-style note. */
#define CHECK(cond, ...)                                                                 \
    do {                                                                                 \
        if (cond) {                                                                      \
            passed++;                                                                    \
        } else {                                                                         \
            failed++;                                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);             \
            fprintf(stderr, __VA_ARGS__);                                                \
            fputc('\n', stderr);                                                         \
        }                                                                                \
    } while (0)

/* main's last line: prints the tally, returns the exit status. */
static inline int check_summary(const char *program) {
    printf("%s: %d passed, %d failed\n", program, passed, failed);
    return failed ? 1 : 0;
}

#endif
