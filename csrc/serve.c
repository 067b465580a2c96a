/* serve.c — turns a connection's input into answered requests: read, parse, body, dispatch, keep-alive.
 *
 * Requests on one connection are answered in order (pipelining); reading
 * stops while TF_OUT_HIGH_WATER bytes wait for the peer. Each dispatched
 * request marks this worker busy in the scoreboard, with its method and path.
 */
#define _GNU_SOURCE
#include "worker_internal.h"
#include "clock.h"
#include "log.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------- request assembly */

#define TF_REQ_STREAM 2 /* tf_conn_request_ready: dispatch now, the body streams */

/* Parses the head at the start of c->in. Returns 1 when parsed (c->head_len
 * set), 0 when more input is needed, -1 when the connection must close (an
 * error response has been queued). */
static int tf_conn_head_ready(tf_conn *c) {
    const tf_worker_config *cfg = c->worker->cfg;
    /* A head trickled in small pieces must not be re-parsed from its start
     * on every read (quadratic work). It can only complete with an LF, so
     * parse again when one arrived, or when the input has doubled since the
     * last parse: an over-long line is still refused with at most twice
     * the limit buffered, and the verdict is the one the whole input gets. */
    if (c->parsed_len && c->in_len < 2 * c->parsed_len &&
        !memchr(c->in + c->parsed_len, '\n', c->in_len - c->parsed_len))
        return 0;
    int status = 400;
    ssize_t r = tf_parse_request(c->in, c->in_len, &cfg->limits, &c->rq->req, &status);
    if (r == TF_PARSE_INCOMPLETE) {
        c->parsed_len = c->in_len;
        return 0;
    }
    c->parsed_len = 0;
    if (r < 0) {
        tf_conn_error(c, status); /* c->head_len is 0: answered as to no parsed head */
        return -1;
    }
    c->head_len = (size_t)r;
    c->body_len = 0;
    int64_t limit = cfg->max_body_size;
    if (limit > 0 && c->rq->req.content_length > limit) {
        tf_conn_error(c, 413);
        return -1;
    }
    if (c->rq->req.expect_continue < 0) {
        tf_conn_error(c, 417);
        return -1;
    }
    if (c->rq->req.chunked)
        memset(&c->rq->chunked, 0, sizeof(c->rq->chunked));
    /* a "100 Continue" waits for the application's first read (body.c) */
    return 1;
}

/* Decodes the chunked body that arrived so far, in place. Same returns as
 * tf_conn_request_ready. */
static int tf_conn_chunked_ready(tf_conn *c) {
    size_t start = c->head_len + c->body_len;
    size_t raw = c->in_len - start;
    ssize_t r = tf_chunked_decode(&c->rq->chunked, c->in + start, &raw);
    c->body_len += raw;
    if (r == TF_PARSE_ERROR) {
        tf_conn_error(c, 400);
        return -1;
    }
    int64_t limit = c->worker->cfg->max_body_size;
    if (limit > 0 && (int64_t)c->body_len > limit) {
        tf_conn_error(c, 413);
        return -1;
    }
    if (r == TF_PARSE_INCOMPLETE) {
        c->in_len = c->head_len + c->body_len;
        return 0;
    }
    /* r bytes after the body (a pipelined request) follow it directly */
    c->in_len = c->head_len + c->body_len + (size_t)r;
    return 1;
}

/* The bytes of c->in the current request takes, head and Content-Length
 * body, into *need. Returns -1 when that is more than a size_t holds (a
 * 32-bit build with a body limit of 0 or >= 4 GiB): never cast unchecked. */
static int tf_conn_need(const tf_conn *c, size_t *need) {
    uint64_t body = c->rq->req.content_length > 0 ? (uint64_t)c->rq->req.content_length : 0;
    if (body > (uint64_t)(SIZE_MAX - c->head_len))
        return -1;
    *need = c->head_len + (size_t)body;
    return 0;
}

/* Whether a request whose body is not all here goes to the application now,
 * its body streamed (body.c), given the body bytes here: a client waiting
 * for "100 Continue", or a body larger than the window. A smaller one is
 * awaited whole: the common case costs no reader. */
static int tf_conn_should_stream(const tf_conn *c, size_t have) {
    const tf_request *req = &c->rq->req;
    if (req->expect_continue > 0 && req->version_minor == 1 && c->in_len == c->head_len)
        return 1;
    if (req->chunked)
        return have >= TF_BODY_WINDOW / 2;
    return req->content_length > TF_BODY_WINDOW;
}

/* Returns 1 when the request at the head of c->in is complete (body included),
 * 2 when it is to be dispatched with its body streamed (TF_REQ_STREAM), 0
 * when more input is needed, -1 when the connection must close (an error
 * response has been queued). The buffer grows as a small body arrives
 * (tf_conn_grow_in), never past the window. */
static int tf_conn_request_ready(tf_conn *c) {
    if (!c->head_len) {
        int r = tf_conn_head_ready(c);
        if (r <= 0)
            return r;
    }
    if (c->rq->req.chunked) {
        int r = tf_conn_chunked_ready(c);
        if (r != 0)
            return r;
        return tf_conn_should_stream(c, c->body_len) ? TF_REQ_STREAM : 0;
    }
    size_t need;
    if (tf_conn_need(c, &need) < 0) {
        tf_conn_error(c, 413);
        return -1;
    }
    if (c->in_len < need)
        return tf_conn_should_stream(c, c->in_len - c->head_len) ? TF_REQ_STREAM : 0;
    c->body_len = need - c->head_len;
    return 1;
}

/* Whether c's input buffer may grow to want bytes under the worker's cap
 * on input buffers (one connection alone may always grow, so that a request
 * within the limits is never refused for want of others' room). A refusal
 * is logged, at most once a second. */
static int tf_conn_in_room(tf_conn *c, size_t want) {
    tf_worker *w = c->worker;
    size_t had = tf_in_extra(c->in_cap), will = tf_in_extra(want);
    int alone = w->in_extra == had; /* no other connection has grown its buffer */
    if (will <= had || w->in_extra - had + will <= w->in_extra_max || alone)
        return 1;
    if (w->now >= w->in_cap_logged + 1.0) {
        w->in_cap_logged = w->now;
        tf_log_at(TF_LOG_WARNING,
                  "worker %d (pid %d): input buffers at the cap (%zu bytes); 503 to new growth",
                  w->cfg->worker_id, (int)getpid(), w->in_extra_max);
    }
    return 0;
}

/* Makes room in c->in for the next read: doubling, bounded by what a
 * Content-Length request still needs, and by the worker's cap on input
 * buffers (tf_conn_in_room). Returns 1 to read, 0 to wait without reading
 * (EPOLLIN dropped until the loop re-arms it), -1 when c was closed or
 * answered 503 and is closing: beyond the cap, or without memory. */
static int tf_conn_grow_in(tf_conn *c) {
    if (c->file_left > 0) {
        /* requests wait behind a file being sent: no more input until then
         * (tf_conn_settle re-arms EPOLLIN once it is out) */
        if (tf_conn_set_events(c, c->registered & ~(uint32_t)EPOLLIN) == 0)
            return 0;
        tf_conn_close(c);
        return -1;
    }
    size_t want = c->in_cap ? c->in_cap * 2 : TF_IN_INITIAL;
    size_t need;
    /* the last step goes straight to the request's size when that is near
     * (not one more small step that the cap might refuse) */
    if (c->head_len && !c->rq->req.chunked && tf_conn_need(c, &need) == 0 && need < want + want / 2)
        want = need > c->in_cap ? need : c->in_cap + TF_IN_INITIAL; /* + pipelined bytes */
    if (!tf_conn_in_room(c, want) || tf_conn_resize_in(c, want) < 0) {
        tf_conn_error(c, 503); /* busy: the client may retry */
        tf_conn_finish(c, 1);
        return -1;
    }
    return 1;
}

/* Whether the window a streamed body takes (tf_body_start: c->in becomes
 * head + TF_BODY_WINDOW) fits under the worker's cap. */
static int tf_conn_window_room(tf_conn *c) {
    size_t want = c->head_len + TF_BODY_WINDOW;
    return tf_conn_in_room(c, want > c->in_len ? want : c->in_len);
}

/* ---------------------------------------------------------------- timers */

/* Sets c->deadline from what the connection is waiting for. The head and the
 * whole request have absolute deadlines counted from the request's start, so
 * that trickling bytes (slowloris) does not extend them; a body only has to
 * keep moving (body_timeout between reads). A response write may stall
 * request_timeout, counted from when its output last moved (c->write_since),
 * not from now: settling again without progress (a request in flight that
 * ended) must not extend it. */
static void tf_conn_arm_timer(tf_conn *c) {
    const tf_worker_config *cfg = c->worker->cfg;
    double now = c->worker->now;
    if (tf_conn_pending(c)) {
        c->deadline = c->write_since + cfg->request_timeout;
        return;
    }
    if (c->pull) {
        c->deadline = now + cfg->request_timeout; /* its source owes the next chunk */
        return;
    }
    if (c->idle) {
        c->deadline = now + cfg->keepalive_timeout;
        return;
    }
    double whole = c->req_start + cfg->request_timeout;
    double part = c->head_len ? c->last_read + cfg->body_timeout
                              : c->req_start + cfg->header_timeout;
    c->deadline = part < whole ? part : whole;
}

/* -------------------------------------------------------------- dispatch */

/* Copies at most cap - 1 bytes of src and a NUL into a scoreboard string. */
static void tf_sb_copy(char *dst, size_t cap, const char *src, size_t len) {
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* Scoreboard: this worker runs c's request now. */
static void tf_mark_busy(tf_sb_proc *me, const tf_conn *c) {
    /* the strings first: the state publishes them */
    tf_sb_copy(me->method, sizeof(me->method), c->rq->req.method, c->rq->req.method_len);
    tf_sb_copy(me->path, sizeof(me->path), c->rq->req.path, c->rq->req.path_len);
    /* its own clock read: w->now is the wake-up's, and a batch of requests
     * must not count the earlier ones' time (--timeout) */
    me->request_started = tf_clock_coarse();
    __atomic_store_n(&me->state, TF_W_BUSY, __ATOMIC_RELEASE);
}

/* Scoreboard: the request is answered; asks to be replaced at max_requests. */
static void tf_mark_done(tf_sb_proc *me, tf_worker *w) {
    me->requests++;
    __atomic_store_n(&me->state, w->draining ? TF_W_DRAINING : TF_W_IDLE, __ATOMIC_RELEASE);
    if (w->cfg->max_requests && me->requests >= w->cfg->max_requests && !me->retire) {
        me->retire = 1;
        tf_scoreboard_notify();
    }
}

/* Scoreboard: requests in flight and the oldest one's start (the primary's
 * --timeout + --timeout-grace kill looks at it). */
static void tf_publish_in_flight(const tf_worker *w) {
    tf_sb_proc *me = tf_sb_me;
    if (!me)
        return;
    __atomic_store_n(&me->in_flight, w->in_flight, __ATOMIC_RELAXED);
    me->in_flight_started = w->jobs ? w->jobs->job_started : 0;
}

void tf_conn_pull(tf_conn *c, void *source) { c->pull = source; }

/* Asks the pulled body's source for more while the output is below the
 * low-water mark, at most TF_PULL_ROUNDS times (EPOLLOUT brings it back). */
static void tf_conn_pump(tf_conn *c) {
    const tf_worker_callbacks *cb = c->worker->cb;
    for (int i = 0; i < TF_PULL_ROUNDS && c->pull && c->file_left == 0 &&
                    tf_conn_pending(c) < TF_PULL_LOW_WATER;
         i++) {
        if (cb->on_pull(cb->ctx, c, c->pull, 0) <= 0)
            c->pull = NULL; /* ended: the embedder released it */
    }
}

void tf_conn_defer(tf_conn *c, tf_job *job) {
    tf_worker *w = c->worker;
    job->conn = c;
    c->job = job;
    c->job_started = tf_clock_coarse();
    c->job_overrun = 0;
    /* deferred in time order, so the list's head is always the oldest */
    c->job_next = NULL;
    c->job_prev = w->jobs_tail;
    if (w->jobs_tail)
        w->jobs_tail->job_next = c;
    else
        w->jobs = c;
    w->jobs_tail = c;
    w->in_flight++;
    tf_publish_in_flight(w);
    if (c->body && tf_body_defer(c) < 0)
        tf_body_gone(c); /* no wake-up channel: its reads fail, the connection closes */
}

static void tf_jobs_unlink(tf_worker *w, tf_conn *c) {
    if (c->job_prev)
        c->job_prev->job_next = c->job_next;
    else
        w->jobs = c->job_next;
    if (c->job_next)
        c->job_next->job_prev = c->job_prev;
    else
        w->jobs_tail = c->job_prev;
    c->job_prev = c->job_next = NULL;
}

/* The request was answered (inline, or its job completed): counts it and
 * drops it from c->in. r: what the dispatch returned (-1: close). */
static int tf_conn_served(tf_conn *c, int r) {
    tf_worker *w = c->worker;
    if (c->streaming != TF_STREAM_NONE && !c->pull)
        tf_conn_respond_end(c, 0); /* the embedder left it unfinished */
    if (!c->responded)
        tf_conn_error(c, 500);
    c->served++;
    if (tf_sb_me)
        tf_mark_done(tf_sb_me, w);
    if (c->body) {
        /* the head stays until the body is drained (tf_body_finish) */
        tf_body_served(c);
    } else {
        size_t used = c->head_len + c->body_len;
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        c->head_len = c->body_len = 0;
        c->parsed_len = 0;
    }
    /* a pipelined request's clock starts when it becomes the current one */
    c->idle = c->in_len == 0;
    c->req_start = w->now;
    return r;
}

/* Hands the complete request to the embedder and, unless it is deferred
 * (TF_DEFERRED: c is parked until its job completes), drops it from c->in.
 * Returns what the dispatch returned (-1: close the connection). */
static int tf_conn_serve_one(tf_conn *c) {
    tf_worker *w = c->worker;
    c->responded = 0;
    tf_sb_proc *me = tf_sb_me;
    if (me)
        tf_mark_busy(me, c);
    c->dispatched = tf_clock_precise();
    const char *body = c->body ? NULL : c->in + c->head_len; /* NULL: tf_conn_body */
    int r = tf_dispatch(w->cfg, w->cb, c, &c->rq->req, body, c->body_len,
                        tf_worker_stopping(w));
    if (r == TF_DEFERRED && c->job) {
        if (me) /* the loop goes on: busy means it cannot accept */
            __atomic_store_n(&me->state, w->draining ? TF_W_DRAINING : TF_W_IDLE,
                             __ATOMIC_RELEASE);
        return TF_DEFERRED;
    }
    return tf_conn_served(c, r);
}

/* After the requests: flush, then choose what to wait for (or close).
 * Returns -1 when c was closed. */
static int tf_conn_settle(tf_conn *c) {
    if (c->job) {
        /* parked: no reading (the request and its body point into c->in),
         * no timer (--timeout is the limit); a 100 Continue may be pending.
         * EPOLLIN stays as it is: dropped only if input arrives meanwhile
         * (tf_conn_on_readable), so a request without pipelined input costs
         * no epoll_ctl to park and none to resume. */
        c->deadline = 0;
        uint32_t in = c->body ? (tf_body_wants_input(c) ? EPOLLIN : 0) : (c->registered & EPOLLIN);
        uint32_t events = in | (tf_conn_pending(c) ? EPOLLOUT : 0);
        if (tf_conn_flush(c) < 0 || tf_conn_set_events(c, events) < 0) {
            tf_conn_close(c);
            return -1;
        }
        return 0;
    }
    if (tf_conn_flush(c) < 0) {
        tf_conn_close(c);
        return -1;
    }
    size_t pending = tf_conn_pending(c);
    int writing = pending > 0 || c->pull != NULL; /* a pulled body is still owed */
    if (c->close_after_write && !writing) {
        /* unprocessed input means the client sent more: linger so it reads the answer */
        tf_conn_finish(c, c->in_len > 0);
        return -1;
    }
    if (c->peer_closed && !writing) {
        tf_conn_close(c);
        return -1;
    }
    uint32_t events = 0;
    if (writing)
        events |= EPOLLOUT;
    if (pending < TF_OUT_HIGH_WATER && !c->peer_closed && !c->close_after_write &&
        (!c->body || tf_body_wants_input(c)))
        events |= EPOLLIN;
    if (tf_conn_set_events(c, events) < 0) {
        tf_conn_close(c);
        return -1;
    }
    if (c->in_len == 0 && !writing && c->worker->draining) {
        tf_conn_close(c); /* idle during a drain: nothing in flight */
        return -1;
    }
    tf_conn_arm_timer(c);
    return 0;
}

/* Answers every complete request in c->in, in order. Returns -1 when c was closed. */
static int tf_conn_process(tf_conn *c) {
    if (c->ws)
        return tf_ws_process(c); /* upgraded: frames, not requests */
    if (c->pull)
        tf_conn_pump(c);
    /* parked (a job in flight) or a pulled body still owed: the next request waits */
    while (!c->job && !c->pull && !c->close_after_write && !c->lingering && c->in_len > 0 &&
           c->file_left == 0 && tf_conn_pending(c) < TF_OUT_HIGH_WATER) {
        if (c->body && c->streaming == TF_STREAM_NONE) {
            /* the last request's body: drained before the next request is read */
            int d = tf_body_finish(c);
            if (d < 0)
                c->close_after_write = 1;
            if (d <= 0 || c->in_len == 0)
                break;
        } else if (c->body) {
            break; /* its response is still being written */
        }
        int ready = tf_conn_request_ready(c);
        if (ready < 0) {
            tf_conn_finish(c, 1);
            return -1;
        }
        if (ready == 0)
            break;
        if (ready == TF_REQ_STREAM && (!tf_conn_window_room(c) || tf_body_start(c) < 0)) {
            tf_conn_error(c, 503); /* beyond the cap, or no memory for the window */
            tf_conn_finish(c, 1);
            return -1;
        }
        int r = tf_conn_serve_one(c);
        if (r < 0) {
            tf_conn_close(c);
            return -1;
        }
        if (r == TF_DEFERRED)
            return tf_conn_settle(c);
        if (c->pull)
            tf_conn_pump(c);
    }
    /* no input left and nothing in flight or pulled: the buffer and the
     * request state go back to the worker's pools while c is idle */
    if (c->in_len == 0 && c->in && !c->job && !c->pull && c->streaming == TF_STREAM_NONE &&
        !c->body)
        tf_conn_release_idle(c);
    return tf_conn_settle(c);
}

void tf_conn_process_input(tf_conn *c) { (void)tf_conn_process(c); }

/* ------------------------------------------------------------ I/O events */

/* A lingering connection: discard what arrives until EOF (or an error). */
void tf_conn_discard_input(tf_conn *c) {
    char scratch[4096];
    ssize_t n;
    do
        n = read(c->fd, scratch, sizeof(scratch));
    while (n < 0 && errno == EINTR);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
        tf_conn_close(c);
}

/* Whether the peer closed its side (EOF), looked at without consuming input. */
static int tf_conn_peer_left(tf_conn *c) {
    char b;
    ssize_t n;
    do
        n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

void tf_conn_on_readable(tf_conn *c, uint32_t events) {
    if (c->ws) {
        tf_ws_on_readable(c, events);
        return;
    }
    if (c->body && !c->lingering) {
        tf_body_on_readable(c, events); /* the window, for the application or the drain */
        return;
    }
    if (c->job) {
        /* parked: a hang-up or an error closes it (and so does the peer's
         * EOF when the embedder watches with a pull source: an ASGI app
         * learns of a client that left); input waits in the socket, unread,
         * with EPOLLIN dropped until the job completes */
        if ((events & (EPOLLHUP | EPOLLERR)) || (c->pull && tf_conn_peer_left(c)) ||
            tf_conn_set_events(c, c->registered & ~(uint32_t)EPOLLIN) < 0)
            tf_conn_close(c);
        return;
    }
    if (c->lingering) {
        tf_conn_discard_input(c);
        return;
    }
    if (!c->in && tf_conn_take_in(c) < 0) {
        tf_conn_close(c); /* no memory */
        return;
    }
    size_t space = c->in_cap - c->in_len;
    if ((space == 0 || (space < 1024 && !c->head_len)) && tf_conn_grow_in(c) <= 0)
        return;
    ssize_t n;
    do
        n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        tf_conn_close(c); /* ECONNRESET and friends */
        return;
    }
    if (n == 0) {
        c->peer_closed = 1;
    } else {
        c->last_read = c->worker->now;
        if (c->idle) {
            c->idle = 0; /* a new request begins: its head timer starts now */
            c->req_start = c->worker->now;
        }
    }
    c->in_len += (size_t)n;
    tf_conn_process(c);
}

void tf_conn_complete(tf_conn *c, tf_job *job) {
    tf_worker *w = c->worker;
    int alive = !c->orphaned;
    w->in_flight--;
    int r = w->cb->on_complete(w->cb->ctx, job, alive);
    c->job = NULL;
    if (c->body)
        tf_body_set_deferred(c, 0); /* its readers are done: the loop drains the rest */
    tf_jobs_unlink(w, c);
    tf_publish_in_flight(w);
    if (!alive) {
        tf_conn_free(c);
        return;
    }
    if (tf_conn_served(c, r) < 0) {
        tf_conn_close(c);
        return;
    }
    tf_conn_process(c);
}

void tf_conn_on_writable(tf_conn *c) {
    if (c->ws) {
        tf_ws_on_writable(c);
        return;
    }
    if (tf_conn_flush(c) < 0) {
        tf_conn_close(c);
        return;
    }
    if (c->pull && tf_conn_pending(c) < TF_PULL_LOW_WATER) {
        tf_conn_process(c); /* more of the pulled body, then what follows it */
        return;
    }
    if (tf_conn_pending(c))
        return;
    if (c->close_after_write) {
        tf_conn_finish(c, c->in_len > 0);
        return;
    }
    tf_conn_process(c);
}
