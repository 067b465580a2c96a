/* observe.c — what a load balancer and an operator see of a worker: the
 * health and readiness answers (in C, no Python), the route to the metrics
 * callback, and per-response bookkeeping (scoreboard counters, access log).
 *
 * worker.c calls tf_dispatch for each complete request and
 * tf_observe_response for each response it hands to the socket.
 */
#define _GNU_SOURCE
#include "tailfast.h"

#include <string.h>

/* Prometheus' default buckets: a latency histogram that means the same
 * thing on every tailfast host. */
const double tf_latency_bounds[TF_LATENCY_BUCKETS - 1] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};

double tf_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int tf_path_is(const tf_request *req, const char *path) {
    if (!path || !path[0])
        return 0;
    size_t len = strlen(path);
    return req->path_len == len && memcmp(req->path, path, len) == 0;
}

static int tf_is_get_or_head(const tf_request *req) {
    return (req->method_len == 3 && memcmp(req->method, "GET", 3) == 0) ||
           (req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0);
}

static int tf_answer_text(tf_conn *conn, int status, const char *text) {
    static const tf_header headers[] = {
        {"Content-Type", 12, "text/plain; charset=utf-8", 25},
        /* a probe must see the live answer, never a cached one */
        {"Cache-Control", 13, "no-store", 8},
    };
    if (tf_conn_respond(conn, status, headers, 2, text, strlen(text), 0) < 0)
        return -1;
    return 0;
}

int tf_dispatch(const tf_worker_config *cfg, const tf_worker_callbacks *cb, tf_conn *conn,
                const tf_request *req, const char *body, size_t body_len, int stopping) {
    /* one branch per request when every path is off */
    if (cfg->health_path || cfg->ready_path || cfg->metrics_path) {
        if (tf_is_get_or_head(req)) {
            if (tf_path_is(req, cfg->health_path))
                return tf_answer_text(conn, 200, "ok\n");
            if (tf_path_is(req, cfg->ready_path)) {
                /* the primary marks the scoreboard as soon as it starts to
                 * stop, before (or while) the workers drain */
                int primary_stopping =
                    tf_sb && __atomic_load_n(&tf_sb->stopping, __ATOMIC_RELAXED);
                if (stopping || primary_stopping)
                    return tf_answer_text(conn, 503, "stopping\n");
                return tf_answer_text(conn, 200, "ready\n");
            }
            if (cb->on_metrics && tf_path_is(req, cfg->metrics_path))
                return cb->on_metrics(cb->ctx, conn);
        }
    }
    return cb->on_request(cb->ctx, conn, req, body, body_len);
}

static int tf_latency_bucket(double seconds) {
    int i = 0;
    while (i < TF_LATENCY_BUCKETS - 1 && seconds > tf_latency_bounds[i])
        i++;
    return i;
}

void tf_observe_response(const tf_conn *conn, const tf_request *req, int status,
                         uint64_t body_bytes, double started) {
    double seconds = started > 0 ? tf_clock() - started : 0.0;
    if (seconds < 0)
        seconds = 0;
    tf_sb_proc *me = tf_sb_me;
    if (me) {
        /* plain stores: only this process writes its entry */
        int cls = status / 100 - 1;
        if (cls >= 0 && cls < 5)
            me->stats.status[cls]++;
        me->stats.latency[tf_latency_bucket(seconds)]++;
        me->stats.latency_sum += seconds;
    }
    tf_accesslog_line(conn, req, status, body_bytes, seconds);
}
