/* loadgen.c — the HTTP/1.1 load generator behind `tailfast bench load`.
 *
 * cfg->threads pthreads, each with its own epoll set and its share of
 * cfg->connections connections. A connection sends a batch (the request,
 * cfg->pipeline times back to back), reads that many responses, and starts the
 * next batch at once (keep-alive), or closes and reconnects (close_each, or
 * when the server answered "Connection: close"). The clock of a batch starts
 * at its first write; each response's latency goes into a log-linear
 * histogram. Response heads are read by http.c's tf_parse_response_head and
 * chunked bodies by its tf_chunked_decode: one HTTP parser for both sides.
 * Nothing here knows about Python: tailfast/_bench.pyx calls tf_load_run with
 * the GIL released.
 */
#define _GNU_SOURCE
#include "tailfast.h"
#include "http.h" /* tf_chunked_decode */

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define TF_LOAD_BUF 16384 /* a response head must fit; bodies are skipped */
#define TF_LOAD_TICK_MS 20 /* how often timeouts and the deadline are checked */

/* ------------------------------------------------------------- histogram */

size_t tf_load_hist_index(uint64_t value)
{
    const unsigned sub = TF_LOAD_HIST_SUB_BITS;
    if (value < (1u << sub))
        return (size_t)value;
    unsigned exp = 63u - (unsigned)__builtin_clzll(value); /* >= sub */
    uint64_t mantissa = (value >> (exp - sub)) & ((1u << sub) - 1);
    return ((size_t)(exp - sub + 1) << sub) + (size_t)mantissa;
}

/* The midpoint of a bucket: error at most half a bucket, 1/64 of the value. */
uint64_t tf_load_hist_value(size_t index)
{
    const unsigned sub = TF_LOAD_HIST_SUB_BITS;
    if (index < (1u << sub))
        return index;
    unsigned exp = (unsigned)(index >> sub) + sub - 1;
    uint64_t mantissa = index & ((1u << sub) - 1);
    uint64_t low = ((1ull << sub) | mantissa) << (exp - sub);
    uint64_t width = 1ull << (exp - sub);
    return low + width / 2;
}

uint64_t tf_load_percentile(const tf_load_result *res, double q)
{
    uint64_t total = 0;
    for (size_t i = 0; i < TF_LOAD_HIST_BUCKETS; i++)
        total += res->hist[i];
    if (total == 0)
        return 0;
    if (q >= 100.0)
        return res->latency_max_ns;
    /* The smallest value with at least q% of the samples at or below it. */
    uint64_t rank = (uint64_t)(q / 100.0 * (double)total + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < TF_LOAD_HIST_BUCKETS; i++) {
        seen += res->hist[i];
        if (seen >= rank) {
            uint64_t v = tf_load_hist_value(i);
            /* A bucket midpoint never reports more than was measured. */
            return v > res->latency_max_ns ? res->latency_max_ns : v;
        }
    }
    return res->latency_max_ns;
}

/* ------------------------------------------------------------ connections */

enum { ST_CONNECTING, ST_WRITING, ST_READING };

/* Where the reader is within the current response. */
enum { RS_HEAD, RS_LENGTH, RS_CHUNKED, RS_UNTIL_CLOSE };

typedef struct {
    int fd;
    int state;
    uint32_t events; /* what epoll is watching */
    size_t written;  /* bytes of the batch sent */
    int pending;     /* responses still expected in this batch */
    int close_after; /* the server said Connection: close */
    uint64_t batch_start;
    uint64_t last_activity;
    /* response reader */
    int rstate;
    int status;
    uint64_t body_left;
    tf_chunked_decoder chunks;
    char buf[TF_LOAD_BUF];
    size_t buf_len;
} tf_load_conn;

typedef struct {
    const tf_load_config *cfg;
    const struct addrinfo *addr;
    const char *batch;
    size_t batch_len;
    int nconns;
    uint64_t deadline;
    tf_load_result res;
    int failed_errno; /* a setup failure (epoll, memory) */
} tf_load_thread;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void count_error(tf_load_thread *t, int kind)
{
    t->res.errors[kind]++;
}

static int watch(int ep, tf_load_conn *c, uint32_t events)
{
    if (c->events == events)
        return 0;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        return -1;
    c->events = events;
    return 0;
}

static void conn_close(tf_load_conn *c)
{
    if (c->fd >= 0) {
        /* Closing also removes it from the epoll set. */
        close(c->fd);
        c->fd = -1;
    }
}

/* Opens a fresh connection (non-blocking connect). Returns 0, or -1 when the
 * failure is the machine's (out of descriptors) rather than the server's. */
static int conn_open(tf_load_thread *t, int ep, tf_load_conn *c)
{
    const struct addrinfo *ai = t->addr;
    c->state = ST_CONNECTING;
    c->written = 0;
    c->pending = 0;
    c->close_after = 0;
    c->rstate = RS_HEAD;
    c->buf_len = 0;
    c->last_activity = now_ns();
    c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                   ai->ai_protocol);
    if (c->fd < 0)
        return -1; /* EMFILE/ENFILE/ENOBUFS: the caller gives up */
    int one = 1;
    if (ai->ai_family != AF_UNIX)
        (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc;
    do {
        rc = connect(c->fd, ai->ai_addr, ai->ai_addrlen);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0 && errno != EINPROGRESS) {
        int err = errno;
        close(c->fd);
        c->fd = -1;
        if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
            errno = err;
            return -1;
        }
        /* Refused at once (loopback does that): counted, and retried on the
         * next tick, so a dead server costs 50 attempts a second, not a spin. */
        count_error(t, TF_LOAD_ERR_CONNECT);
        return 0;
    }
    t->res.connects++;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        return -1;
    c->events = EPOLLOUT;
    return 0;
}

static int conn_reopen(tf_load_thread *t, int ep, tf_load_conn *c)
{
    conn_close(c);
    if (now_ns() >= t->deadline)
        return 0;
    return conn_open(t, ep, c);
}

/* Sends what is left of the batch. Returns 1 when all is sent, 0 when the
 * socket is full (EPOLLOUT armed), -1 on a write error. */
static int conn_write(tf_load_thread *t, int ep, tf_load_conn *c)
{
    while (c->written < t->batch_len) {
        ssize_t n = send(c->fd, t->batch + c->written, t->batch_len - c->written, MSG_NOSIGNAL);
        if (n > 0) {
            c->written += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (watch(ep, c, EPOLLOUT) < 0)
                return -1;
            return 0;
        }
        return -1; /* EPIPE, ECONNRESET, ... */
    }
    c->state = ST_READING;
    return watch(ep, c, EPOLLIN) < 0 ? -1 : 1;
}

static int start_batch(tf_load_thread *t, int ep, tf_load_conn *c)
{
    c->state = ST_WRITING;
    c->written = 0;
    c->pending = t->cfg->pipeline;
    c->batch_start = now_ns();
    c->last_activity = c->batch_start;
    return conn_write(t, ep, c);
}

/* A complete response head: how its body is read. */
static void on_head(tf_load_thread *t, tf_load_conn *c, const tf_response_head *head)
{
    c->status = head->status;
    if (!head->keep_alive)
        c->close_after = 1;
    int bodiless = t->cfg->head || c->status < 200 || c->status == 204 || c->status == 304;
    c->body_left = 0;
    if (bodiless) {
        c->rstate = RS_LENGTH;
    } else if (head->chunked) {
        memset(&c->chunks, 0, sizeof c->chunks);
        c->rstate = RS_CHUNKED;
    } else if (head->content_length >= 0) {
        c->body_left = (uint64_t)head->content_length;
        c->rstate = RS_LENGTH;
    } else {
        c->rstate = RS_UNTIL_CLOSE;
        c->close_after = 1;
    }
}

/* One response finished: record it. */
static void response_done(tf_load_thread *t, tf_load_conn *c, uint64_t now)
{
    if (c->status >= 100 && c->status < 200) {
        c->rstate = RS_HEAD; /* interim (100 Continue): the real one follows */
        return;
    }
    uint64_t lat = now - c->batch_start;
    tf_load_result *r = &t->res;
    r->requests++;
    r->hist[tf_load_hist_index(lat)]++;
    r->latency_sum_ns += lat;
    if (lat > r->latency_max_ns)
        r->latency_max_ns = lat;
    if (r->latency_min_ns == 0 || lat < r->latency_min_ns)
        r->latency_min_ns = lat;
    if (c->status >= 100 && c->status < 600)
        r->status_classes[c->status / 100]++;
    if (c->status < 200 || c->status > 299)
        count_error(t, TF_LOAD_ERR_STATUS);
    c->pending--;
    c->rstate = RS_HEAD;
}

/* Skips chunked body bytes at p (decoded in place, then dropped). Returns the
 * bytes of buf to drop from p, or -1 when the body is malformed. The body's
 * end leaves what follows it right after the dropped bytes. */
static ssize_t skip_chunks(tf_load_conn *c, char *p, size_t avail)
{
    size_t decoded = avail;
    ssize_t rest = tf_chunked_decode(&c->chunks, p, &decoded);
    if (rest == TF_PARSE_ERROR)
        return -1;
    if (rest == TF_PARSE_INCOMPLETE)
        return (ssize_t)avail; /* every raw byte is consumed: nothing is carried */
    c->buf_len = (size_t)(p - c->buf) + decoded + (size_t)rest;
    c->rstate = RS_LENGTH; /* body_left is 0: done on the next turn */
    return (ssize_t)decoded;
}

/* Consumes buf: completes as many responses as it holds. Returns 0, or -1
 * when the response is malformed. */
static int consume(tf_load_thread *t, tf_load_conn *c, uint64_t now)
{
    size_t pos = 0;
    while (pos < c->buf_len || c->rstate == RS_LENGTH) {
        char *p = c->buf + pos;
        size_t avail = c->buf_len - pos;
        ssize_t n;
        switch (c->rstate) {
        case RS_HEAD: {
            tf_response_head head;
            n = tf_parse_response_head(p, avail, &head);
            if (n == TF_PARSE_INCOMPLETE)
                goto out; /* parsed again from its start when more arrives */
            if (n < 0)
                return -1;
            on_head(t, c, &head);
            pos += (size_t)n;
            break;
        }
        case RS_LENGTH: {
            uint64_t take = c->body_left < avail ? c->body_left : avail;
            pos += take;
            c->body_left -= take;
            if (c->body_left > 0)
                goto out;
            response_done(t, c, now);
            if (c->pending == 0 || c->close_after)
                goto out; /* the batch (or the connection) is over */
            break;
        }
        case RS_CHUNKED:
            if ((n = skip_chunks(c, p, avail)) < 0)
                return -1;
            pos += (size_t)n;
            break;
        case RS_UNTIL_CLOSE:
            pos += avail; /* the body ends when the server closes */
            break;
        }
    }
out:
    if (pos > 0) {
        memmove(c->buf, c->buf + pos, c->buf_len - pos);
        c->buf_len -= pos;
    }
    return 0;
}

/* What to do after an event: keep going, or reconnect. */
enum { KEEP = 0, REOPEN = 1 };

static int on_readable(tf_load_thread *t, int ep, tf_load_conn *c)
{
    for (;;) {
        if (c->buf_len == sizeof c->buf) {
            count_error(t, TF_LOAD_ERR_READ); /* a head larger than the buffer */
            return REOPEN;
        }
        ssize_t n = recv(c->fd, c->buf + c->buf_len, sizeof c->buf - c->buf_len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return KEEP;
        uint64_t now = now_ns();
        if (n == 0) {
            if (c->rstate == RS_UNTIL_CLOSE) {
                c->buf_len = 0;
                response_done(t, c, now);
                return REOPEN;
            }
            /* Closed between batches is not an error; mid-response is. */
            if (c->pending > 0 || c->buf_len > 0)
                count_error(t, TF_LOAD_ERR_READ);
            return REOPEN;
        }
        if (n < 0) {
            count_error(t, TF_LOAD_ERR_READ); /* ECONNRESET and the like */
            return REOPEN;
        }
        t->res.bytes_read += (uint64_t)n;
        c->buf_len += (size_t)n;
        c->last_activity = now;
        if (consume(t, c, now) < 0) {
            count_error(t, TF_LOAD_ERR_READ);
            return REOPEN;
        }
        if (c->pending == 0 || (c->close_after && c->rstate == RS_HEAD)) {
            if (c->close_after || t->cfg->close_each || now >= t->deadline)
                return REOPEN;
            if (c->buf_len > 0) { /* bytes beyond what was asked for */
                count_error(t, TF_LOAD_ERR_READ);
                return REOPEN;
            }
            int rc = start_batch(t, ep, c);
            if (rc < 0) {
                count_error(t, TF_LOAD_ERR_WRITE);
                return REOPEN;
            }
            if (rc == 0)
                return KEEP; /* waiting for EPOLLOUT */
        }
    }
}

static int on_event(tf_load_thread *t, int ep, tf_load_conn *c, uint32_t events)
{
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err != 0) {
            /* Retried on the next tick, not at once: a refusing server must
             * not turn the generator into a busy loop. */
            count_error(t, TF_LOAD_ERR_CONNECT);
            conn_close(c);
            return KEEP;
        }
        if (!(events & EPOLLOUT))
            return KEEP;
        int rc = start_batch(t, ep, c);
        if (rc < 0) {
            count_error(t, TF_LOAD_ERR_WRITE);
            return REOPEN;
        }
        return KEEP;
    }
    if (c->state == ST_WRITING) {
        int rc = conn_write(t, ep, c);
        if (rc < 0) {
            count_error(t, TF_LOAD_ERR_WRITE);
            return REOPEN;
        }
        return KEEP;
    }
    return on_readable(t, ep, c);
}

static void check_timeouts(tf_load_thread *t, int ep, tf_load_conn *conns, uint64_t now)
{
    uint64_t limit = (uint64_t)(t->cfg->timeout * 1e9);
    for (int i = 0; i < t->nconns; i++) {
        tf_load_conn *c = &conns[i];
        if (c->fd < 0) {
            if (conn_open(t, ep, c) < 0)
                return;
            continue;
        }
        if (now - c->last_activity > limit) {
            count_error(t, TF_LOAD_ERR_TIMEOUT);
            if (conn_reopen(t, ep, c) < 0)
                return;
        }
    }
}

/* A thread's event loop, until the deadline or a failure of the machine's
 * (recorded in t->failed_errno). */
static void run_loop(tf_load_thread *t, int ep, tf_load_conn *conns, struct epoll_event *events)
{
    uint64_t next_tick = now_ns() + TF_LOAD_TICK_MS * 1000000ull;
    for (;;) {
        uint64_t now = now_ns();
        if (now >= t->deadline)
            return;
        uint64_t wait_ns = (next_tick > now ? next_tick : now) - now;
        if (t->deadline - now < wait_ns)
            wait_ns = t->deadline - now;
        int n = epoll_wait(ep, events, t->nconns, (int)(wait_ns / 1000000) + 1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            t->failed_errno = errno;
            return;
        }
        for (int i = 0; i < n; i++) {
            tf_load_conn *c = events[i].data.ptr;
            if (c->fd < 0)
                continue;
            if (on_event(t, ep, c, events[i].events) == REOPEN && conn_reopen(t, ep, c) < 0) {
                t->failed_errno = errno;
                return;
            }
        }
        now = now_ns();
        /* Past the deadline nothing reopens: connections closed by it stay closed. */
        if (now >= next_tick && now < t->deadline) {
            check_timeouts(t, ep, conns, now);
            next_tick = now + TF_LOAD_TICK_MS * 1000000ull;
        }
    }
}

static void *thread_main(void *arg)
{
    tf_load_thread *t = arg;
    tf_load_conn *conns = calloc((size_t)t->nconns, sizeof *conns);
    struct epoll_event *events = calloc((size_t)t->nconns, sizeof *events);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || !events || ep < 0) {
        t->failed_errno = errno ? errno : ENOMEM;
        goto done;
    }
    for (int i = 0; i < t->nconns; i++)
        conns[i].fd = -1;
    for (int i = 0; i < t->nconns; i++) {
        if (conn_open(t, ep, &conns[i]) < 0) {
            t->failed_errno = errno;
            goto done;
        }
    }
    run_loop(t, ep, conns, events);
done:
    if (conns) {
        for (int i = 0; i < t->nconns; i++)
            conn_close(&conns[i]);
    }
    if (ep >= 0)
        close(ep);
    free(conns);
    free(events);
    return NULL;
}

/* Adds one thread's figures to the total. */
static void merge_result(tf_load_result *out, const tf_load_result *r)
{
    out->requests += r->requests;
    out->bytes_read += r->bytes_read;
    out->connects += r->connects;
    out->latency_sum_ns += r->latency_sum_ns;
    if (r->latency_max_ns > out->latency_max_ns)
        out->latency_max_ns = r->latency_max_ns;
    if (r->latency_min_ns && (!out->latency_min_ns || r->latency_min_ns < out->latency_min_ns))
        out->latency_min_ns = r->latency_min_ns;
    for (int k = 0; k < TF_LOAD_NUM_ERRORS; k++)
        out->errors[k] += r->errors[k];
    for (size_t k = 0; k < sizeof out->status_classes / sizeof out->status_classes[0]; k++)
        out->status_classes[k] += r->status_classes[k];
    for (size_t k = 0; k < TF_LOAD_HIST_BUCKETS; k++)
        out->hist[k] += r->hist[k];
}

/* Runs the threads of ts, waits for them and adds up their figures. start:
 * the clock the deadline was set from. Returns 0 or an errno value. */
static int run_threads(tf_load_thread *ts, int threads, uint64_t start, tf_load_result *out)
{
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    if (!tids)
        return ENOMEM;
    int started = 0;
    int failed = 0;
    for (; started < threads; started++) {
        int err = pthread_create(&tids[started], NULL, thread_main, &ts[started]);
        if (err != 0) {
            failed = err;
            break;
        }
    }
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    out->elapsed = (double)(now_ns() - start) / 1e9;
    for (int i = 0; i < started; i++) {
        merge_result(out, &ts[i].res);
        if (!failed && ts[i].failed_errno)
            failed = ts[i].failed_errno;
    }
    free(tids);
    return failed;
}

int tf_load_run(const tf_load_config *cfg, tf_load_result *out)
{
    memset(out, 0, sizeof *out);
    if (cfg->connections < 1 || cfg->threads < 1 || cfg->pipeline < 1 || cfg->duration <= 0 ||
        cfg->request_len == 0 || cfg->timeout <= 0) {
        errno = EINVAL;
        return -1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
    struct addrinfo *addr = NULL;
    if (getaddrinfo(cfg->host, cfg->port, &hints, &addr) != 0) {
        errno = EADDRNOTAVAIL;
        return -1;
    }
    int threads = cfg->threads < cfg->connections ? cfg->threads : cfg->connections;
    size_t batch_len = cfg->request_len * (size_t)cfg->pipeline;
    char *batch = malloc(batch_len);
    tf_load_thread *ts = calloc((size_t)threads, sizeof *ts);
    int failed = ENOMEM;
    if (batch && ts) {
        for (int i = 0; i < cfg->pipeline; i++)
            memcpy(batch + (size_t)i * cfg->request_len, cfg->request, cfg->request_len);
        uint64_t start = now_ns();
        for (int i = 0; i < threads; i++) {
            ts[i].cfg = cfg;
            ts[i].addr = addr;
            ts[i].batch = batch;
            ts[i].batch_len = batch_len;
            ts[i].nconns = cfg->connections / threads + (i < cfg->connections % threads);
            ts[i].deadline = start + (uint64_t)(cfg->duration * 1e9);
        }
        failed = run_threads(ts, threads, start, out);
    }
    freeaddrinfo(addr);
    free(batch);
    free(ts);
    if (failed) {
        errno = failed;
        return -1;
    }
    return 0;
}
