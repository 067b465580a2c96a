/* clock.h — the process's clocks in seconds, named by what they cost and mean. */
#ifndef TF_CLOCK_H
#define TF_CLOCK_H

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

#endif
