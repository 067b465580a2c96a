/* dispatch.c — routes a complete request: probes answered in C, metrics to its callback, the rest to the app.
 *
 * What a load balancer sees of a worker: the liveness path answers 200 while
 * the loop runs; the readiness path answers 503 once the worker or the
 * primary began to stop. Neither touches Python.
 */
#include "worker_internal.h"

#include <string.h>

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
