/* clock.h — the process's clocks in seconds, named by what they cost and mean. */
#ifndef TF_CLOCK_H
#define TF_CLOCK_H

#include <limits.h>
#include <time.h>

/* Header-only: each is one vDSO call, and the per-request path reads a clock
 * twice; an out-of-line wrapper would only add a call. clock_gettime cannot
 * fail for these clock ids on Linux (EINVAL/EFAULT only), so no error path. */

static inline double tf_clock_read_(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Monotonic, nanosecond resolution: request latencies. */
static inline double tf_clock_precise(void) { return tf_clock_read_(CLOCK_MONOTONIC); }

/* Monotonic, one scheduler tick of resolution (1-4 ms) but cheaper: timers,
 * deadlines, heartbeats. Comparable with tf_clock_precise only to a tick. */
static inline double tf_clock_coarse(void) { return tf_clock_read_(CLOCK_MONOTONIC_COARSE); }

/* Wall clock (CLOCK_REALTIME): timestamps shown to people. */
static inline double tf_clock_wall(void) { return tf_clock_read_(CLOCK_REALTIME); }

/* seconds as the int milliseconds poll/epoll_wait take: rounded up (a wait
 * never ends before its deadline), at least 0, at most INT_MAX (about 24.8
 * days: a longer duration would overflow the int and wrap to a tiny or
 * negative wait). Settings are bounded well below that; this is the backstop. */
static inline int tf_clock_ms(double seconds) {
    double ms = seconds * 1000.0;
    if (!(ms > 0))
        return 0; /* also NaN */
    if (ms >= (double)INT_MAX)
        return INT_MAX;
    int whole = (int)ms;
    return whole < ms ? whole + 1 : whole;
}

#endif
