/* respond.c — response framing: whole, streamed (length, chunked, close-delimited) and sendfile answers.
 *
 * The public tf_conn_respond* functions. A head is built in C, counted in the
 * scoreboard and the access log (observe.c, accesslog.c: leaves), then sent
 * with the body in one writev where the socket takes it (conn.c).
 */
#define _GNU_SOURCE
#include "worker_internal.h"
#include "accesslog.h"
#include "clock.h"
#include "observe.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TF_HEAD_STACK 4096
#define TF_STREAM_BUFFER (64 * 1024) /* a streaming body waits while more is queued */

/* ----------------------------------------------------------- observation */

static const tf_header *tf_find_header(const tf_request *req, const char *name, size_t len) {
    for (size_t i = 0; i < req->num_headers; i++)
        if (req->headers[i].name_len == len && strncasecmp(req->headers[i].name, name, len) == 0)
            return &req->headers[i];
    return NULL;
}

/* Hands the response to the access log as plain data; only called with a log
 * open, so that the peer's text costs nothing without one. */
static void tf_conn_log_access(const tf_conn *c, int status, uint64_t body_bytes,
                               double seconds) {
    char peer[64];
    int port = 0;
    if (tf_conn_peer(c, peer, sizeof(peer), &port) < 0)
        peer[0] = '\0';
    tf_access_entry e = {.peer = peer, .status = status, .body_bytes = body_bytes,
                         .seconds = seconds};
    if (c->head_len) { /* else the head could not be parsed: no request to show */
        const tf_request *req = &c->rq->req;
        e.method = req->method;
        e.method_len = req->method_len;
        e.target = req->target;
        e.target_len = req->target_len;
        e.version_minor = req->version_minor;
        if (tf_accesslog_format() == TF_LOG_COMBINED) {
            const tf_header *h = tf_find_header(req, "Referer", 7);
            if (h) {
                e.referer = h->value;
                e.referer_len = h->value_len;
            }
            h = tf_find_header(req, "User-Agent", 10);
            if (h) {
                e.user_agent = h->value;
                e.user_agent_len = h->value_len;
            }
        }
    }
    tf_accesslog_write(&e);
}

/* Counts a response about to be sent (whoever sees the answer sees it
 * counted) and logs it. body_bytes: what the body will carry. */
void tf_conn_observe(tf_conn *c, int status, uint64_t body_bytes) {
    double seconds = c->dispatched > 0 ? tf_clock_precise() - c->dispatched : 0.0;
    if (seconds < 0)
        seconds = 0;
    c->dispatched = 0;
    tf_observe_response(status, seconds);
    if (tf_accesslog_format() >= 0)
        tf_conn_log_access(c, status, body_bytes, seconds);
}

/* ------------------------------------------------------------------ heads */

/* Builds the response head into *head (the stack buffer, or malloc'ed when
 * the headers need more; the caller frees it when it is not stack). */
static ssize_t tf_conn_build_head(tf_conn *c, char *stack, size_t stack_cap, char **head,
                                  int status, const tf_header *headers, size_t num_headers,
                                  int64_t length, int flags) {
    size_t need = 512;
    for (size_t i = 0; i < num_headers; i++)
        need += headers[i].name_len + headers[i].value_len + 4;
    *head = stack;
    size_t cap = stack_cap;
    if (need > cap) {
        *head = malloc(need);
        if (!*head)
            return -1;
        cap = need;
    }
    ssize_t n = tf_write_response_head(*head, cap, status, headers, num_headers, length, flags,
                                       c->rq->req.version_minor);
    if (n < 0 && *head != stack) {
        free(*head);
        *head = stack;
    }
    return n;
}

/* Whether the connection may stay open after this response. */
static inline int tf_conn_may_keep(const tf_conn *c, int close_after) {
    return c->rq->req.keep_alive && !close_after && !tf_worker_stopping(c->worker) &&
           !c->peer_closed && (!c->body || tf_body_may_keep(c));
}

static inline int tf_status_has_body(int status) {
    return !((status >= 100 && status < 200) || status == 204 || status == 304);
}

/* ------------------------------------------------------------ whole body */

int tf_conn_respond(tf_conn *c, int status, const tf_header *headers,
                    size_t num_headers, const char *body, size_t body_len,
                    int close_after) {
    int keep = tf_conn_may_keep(c, close_after);
    int no_body = !tf_status_has_body(status);
    int64_t length = no_body ? -1 : (int64_t)body_len;

    char stack[TF_HEAD_STACK];
    char *head;
    ssize_t head_len = tf_conn_build_head(c, stack, sizeof(stack), &head, status, headers,
                                          num_headers, length, keep ? TF_HEAD_KEEP_ALIVE : 0);
    if (head_len < 0)
        return -1;
    struct iovec iov[2] = {{head, (size_t)head_len}, {(void *)body, body_len}};
    int send_body = !no_body && !c->rq->req.is_head && body_len > 0;
    tf_conn_observe(c, status, send_body ? body_len : 0);
    int r = tf_conn_send(c, iov, send_body ? 2 : 1);
    if (head != stack)
        free(head);
    c->responded = 1;
    if (!keep)
        c->close_after_write = 1;
    if (r < 0)
        c->peer_closed = c->close_after_write = 1;
    return 0;
}

/* Whether the input starts with a HEAD request line (after the empty lines
 * the parser skips): an error answered before the head was parsed must not
 * carry a body to a HEAD either. Only the method is looked at. */
static int tf_input_is_head(const tf_conn *c) {
    if (!c->in)
        return 0;
    const char *p = c->in, *end = c->in + c->in_len;
    while (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
        p += 2;
    return end - p >= 5 && memcmp(p, "HEAD ", 5) == 0;
}

void tf_conn_error(tf_conn *c, int status) {
    static const tf_header text = {"Content-Type", 12, "text/plain; charset=utf-8", 25};
    if (c->body && c->responded) {
        /* answered already, its body still arriving (a drain timed out): only close */
        c->close_after_write = 1;
        return;
    }
    if (!c->head_len) {
        /* no parsed head (or a finished request's stale one): answer as
         * HTTP/1.1, closing, and without a body if the request is a HEAD */
        if (tf_conn_take_state(c) < 0) {
            c->close_after_write = 1; /* no memory for an answer: just close */
            return;
        }
        c->rq->req.keep_alive = 0;
        c->rq->req.version_minor = 1;
        c->rq->req.is_head = tf_input_is_head(c);
    }
    char body[96];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, tf_status_reason(status));
    if (n < 0)
        n = 0;
    /* The rest of the input cannot be trusted: answer, then close. */
    tf_conn_respond(c, status, &text, 1, body, (size_t)n, 1);
}

/* --------------------------------------------------------- streamed body */

/* How a streamed body of content_length (-1: unknown) is framed; may clear *keep. */
static int tf_stream_mode(const tf_conn *c, int status, int64_t content_length, int *keep) {
    if (!tf_status_has_body(status))
        return TF_STREAM_DISCARD;
    if (content_length >= 0)
        return c->rq->req.is_head ? TF_STREAM_DISCARD : TF_STREAM_LENGTH;
    if (c->rq->req.is_head)
        return TF_STREAM_DISCARD; /* a HEAD answer has no body to delimit */
    if (c->rq->req.version_minor == 1)
        return TF_STREAM_CHUNKED;
    *keep = 0; /* HTTP/1.0: the body ends where the connection does */
    return TF_STREAM_CLOSE;
}

int tf_conn_respond_start(tf_conn *c, int status, const tf_header *headers,
                          size_t num_headers, int64_t content_length, int close_after) {
    int keep = tf_conn_may_keep(c, close_after);
    int mode = tf_stream_mode(c, status, content_length, &keep);
    int64_t length = content_length >= 0 && tf_status_has_body(status) ? content_length : -1;
    int flags = (mode == TF_STREAM_CHUNKED ? TF_HEAD_CHUNKED : 0) |
                (keep ? TF_HEAD_KEEP_ALIVE : 0);
    char stack[TF_HEAD_STACK];
    char *head;
    ssize_t head_len = tf_conn_build_head(c, stack, sizeof(stack), &head, status, headers,
                                          num_headers, length, flags);
    if (head_len < 0)
        return -1;
    /* queued, not written: it leaves with the first body bytes in one writev */
    int r = tf_conn_append_out(c, head, (size_t)head_len);
    if (head != stack)
        free(head);
    if (r < 0)
        return -1;
    /* a streamed body's size is known only when announced: counted at the head */
    tf_conn_observe(c, status, mode == TF_STREAM_LENGTH ? (uint64_t)length : 0);
    c->responded = 1;
    c->streaming = mode;
    c->stream_failed = 0;
    c->stream_left = length;
    if (!keep)
        c->close_after_write = 1;
    return 0;
}

/* Blocks (the embedder's lock released) until c can take more bytes, at most
 * the request timeout. Returns 0, or -1 on a timeout or a quick stop. */
static int tf_conn_wait_writable(tf_conn *c) {
    tf_worker *w = c->worker;
    struct pollfd p = {.fd = c->fd, .events = POLLOUT};
    int timeout_ms = tf_clock_ms(w->cfg->request_timeout);
    int n;
    w->cb->release(w->cb->ctx);
    do
        n = poll(&p, 1, timeout_ms > 0 ? timeout_ms : 1);
    while (n < 0 && errno == EINTR && !tf_worker_sig_quit);
    w->cb->acquire(w->cb->ctx);
    w->now = tf_clock_coarse();
    return n > 0 ? 0 : -1;
}

/* Writes iov behind what is queued and waits until at most TF_STREAM_BUFFER
 * bytes remain queued, so that a long body is never held whole in memory. */
static int tf_conn_stream_out(tf_conn *c, struct iovec *iov, int iovcnt) {
    if (tf_conn_send(c, iov, iovcnt) < 0)
        return -1;
    /* a pulled body is asked for more only below the low-water mark: never wait */
    while (!c->pull && tf_conn_pending(c) > TF_STREAM_BUFFER) {
        if (tf_conn_wait_writable(c) < 0 || tf_conn_flush(c) < 0)
            return -1;
    }
    return 0;
}

static int tf_conn_stream_fail(tf_conn *c) {
    c->stream_failed = 1;
    c->peer_closed = c->close_after_write = 1;
    return -1;
}

int tf_conn_write_body(tf_conn *c, const char *data, size_t len) {
    if (c->streaming == TF_STREAM_NONE || c->stream_failed)
        return -1;
    if (c->streaming == TF_STREAM_DISCARD || len == 0)
        return 0; /* an empty chunk would end a chunked body */
    /* bytes written after a queued file must leave after it */
    while (c->file_left > 0)
        if (tf_conn_wait_writable(c) < 0 || tf_conn_flush(c) < 0)
            return tf_conn_stream_fail(c);
    struct iovec iov[3];
    int n = 0;
    char size_line[24];
    if (c->streaming == TF_STREAM_LENGTH) {
        if ((int64_t)len > c->stream_left)
            len = (size_t)c->stream_left; /* never more than the announced length */
        if (len == 0)
            return 0;
        c->stream_left -= (int64_t)len;
        iov[n++] = (struct iovec){(void *)data, len};
    } else if (c->streaming == TF_STREAM_CHUNKED) {
        int k = snprintf(size_line, sizeof(size_line), "%zx\r\n", len);
        iov[n++] = (struct iovec){size_line, (size_t)k};
        iov[n++] = (struct iovec){(void *)data, len};
        iov[n++] = (struct iovec){(void *)"\r\n", 2};
    } else {
        iov[n++] = (struct iovec){(void *)data, len};
    }
    if (tf_conn_stream_out(c, iov, n) < 0)
        return tf_conn_stream_fail(c);
    return 0;
}

int tf_conn_sendfile(tf_conn *c, int fd, int64_t offset, int64_t count) {
    if (c->streaming == TF_STREAM_NONE || c->stream_failed || offset < 0 || count < 0)
        return -1;
    if (c->streaming == TF_STREAM_DISCARD || count == 0)
        return 0;
    if (c->streaming != TF_STREAM_LENGTH || count > c->stream_left || c->file_left > 0)
        return -1; /* only a body of announced length, one file at a time */
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0)
        return tf_conn_stream_fail(c);
    if (tf_conn_pending(c) == 0)
        tf_conn_out_moved(c); /* output begins to wait: its stall clock starts */
    c->file_fd = own;
    c->file_off = (off_t)offset;
    c->file_left = count;
    c->stream_left -= count;
    /* the rest goes out from the event loop on EPOLLOUT */
    if (tf_conn_flush(c) < 0)
        return tf_conn_stream_fail(c);
    return 0;
}

int tf_conn_respond_end(tf_conn *c, int complete) {
    if (c->streaming == TF_STREAM_NONE)
        return -1;
    int mode = c->streaming;
    c->streaming = TF_STREAM_NONE;
    if (c->stream_failed)
        return -1;
    if (!complete || (mode == TF_STREAM_LENGTH && c->stream_left > 0)) {
        /* the body is cut short: closing is the only honest end */
        c->close_after_write = 1;
        return complete ? -1 : 0;
    }
    if (mode == TF_STREAM_CHUNKED) {
        struct iovec last = {(void *)"0\r\n\r\n", 5};
        if (tf_conn_send(c, &last, 1) < 0) {
            c->peer_closed = c->close_after_write = 1;
            return -1;
        }
    }
    return 0;
}
