/* test_clock.c — unit tests of csrc/clock.h's seconds-to-milliseconds conversion, plain C.
 *
 * Build (tests/test_c_units.py does this):
 *   cc -std=c11 -O1 -g -Wall -Wextra -Werror -fsanitize=address,undefined \
 *      -fno-sanitize-recover=all -Icsrc tests/c/test_clock.c
 *
 * Every wait in poll/epoll_wait takes its timeout through tf_clock_ms: a
 * duration past INT_MAX ms (about 24.8 days) must not wrap (UBSan aborts on
 * the overflowing conversion, the checks on a wrong value).
 */
#define _GNU_SOURCE /* clock.h: clockid_t, CLOCK_MONOTONIC_COARSE */

#include "clock.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>

#include "check.h"

#define CHECK_MS(seconds, expected)                                                      \
    do {                                                                                 \
        int got_ = tf_clock_ms(seconds);                                                 \
        if (got_ == (expected)) {                                                        \
            passed++;                                                                    \
        } else {                                                                         \
            failed++;                                                                    \
            fprintf(stderr, "FAIL %s:%d: tf_clock_ms(%s) = %d, expected %d\n", __FILE__, \
                    __LINE__, #seconds, got_, (int)(expected));                          \
        }                                                                                \
    } while (0)

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    CHECK_MS(0.0, 0);
    CHECK_MS(-1.0, 0);
    CHECK_MS(NAN, 0);
    CHECK_MS(0.0001, 1); /* rounded up: a wait never ends before its deadline */
    CHECK_MS(0.01, 10);
    CHECK_MS(1.5, 1500);
    CHECK_MS(86400.0, 86400000);            /* the settings' bound, one day */
    CHECK_MS(25.0 * 86400.0, INT_MAX);      /* 25 days: clamped, not wrapped */
    CHECK_MS(1e300, INT_MAX);
    CHECK_MS(INFINITY, INT_MAX);
    return check_summary("test_clock");
}
