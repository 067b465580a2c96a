/* observe.c — what an operator sees of each response: status and latency counts in the scoreboard.
 *
 * A leaf: the worker's response writer calls it; it reads nothing but the
 * scoreboard entry it writes (plain stores: only this process writes it).
 */
#include "observe.h"

/* Prometheus' default buckets: a latency histogram that means the same
 * thing on every tailfast host. */
const double tf_latency_bounds[TF_LATENCY_BUCKETS - 1] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};

static int tf_latency_bucket(double seconds) {
    int i = 0;
    while (i < TF_LATENCY_BUCKETS - 1 && seconds > tf_latency_bounds[i])
        i++;
    return i;
}

void tf_observe_response(int status, double seconds) {
    tf_sb_proc *me = tf_sb_me;
    if (!me)
        return;
    int cls = status / 100 - 1;
    if (cls >= 0 && cls < 5)
        me->stats.status[cls]++;
    me->stats.latency[tf_latency_bucket(seconds)]++;
    me->stats.latency_sum += seconds;
}
