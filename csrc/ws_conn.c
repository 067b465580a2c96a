/* ws_conn.c — a connection in WebSocket mode: the upgrade, frames in (tf_ws_parse), frames out, close and drain.
 *
 * After tf_ws_conn_accept writes the 101, the HTTP parser is no longer called
 * for the connection: input goes to c->in as before and tf_ws_parse hands out
 * whole messages, which go to the embedder (cb->on_ws). Pings are answered
 * here. A close from either side ends with tf_conn_finish (our close frame
 * flushed, the write side shut, input discarded until the peer's EOF), so a
 * draining worker is never held longer than the linger time. No timers while
 * open: only a write stalled past request_timeout closes it (the sweep).
 */
#define _GNU_SOURCE
#include "worker_internal.h"
#include "websocket.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TF_WS_READ_ROOM 4096 /* grow c->in below this much free room */

struct tf_ws_conn {
    tf_ws_parser parser;
    void *handle;  /* the embedder's, until cb->on_ws(TF_WS_CLOSED) */
    int paused;    /* the embedder's queue is full: no parsing, no reading */
    int closing;   /* our close frame is queued: what arrives is dropped */
    double pinged; /* when our unanswered ping was sent (0: none) */
};

/* Reports the end once (code, reason) and forgets the handle. */
static void tf_ws_report_closed(tf_conn *c, int code, const char *reason, size_t len) {
    tf_ws_conn *ws = c->ws;
    if (!ws->handle)
        return;
    void *handle = ws->handle;
    ws->handle = NULL;
    const tf_worker_callbacks *cb = c->worker->cb;
    cb->on_ws(cb->ctx, c, handle, TF_WS_CLOSED, code, reason, len);
}

/* Queues a close frame, reports code to the embedder, and closes after it. */
static void tf_ws_shut(tf_conn *c, int code, const char *reason, size_t len) {
    uint8_t frame[TF_WS_MAX_CLOSE_FRAME];
    tf_ws_conn *ws = c->ws;
    if (!ws->closing) {
        ws->closing = 1;
        size_t n = tf_ws_close_frame(frame, code, reason, len);
        struct iovec iov = {frame, n};
        if (tf_conn_send(c, &iov, 1) < 0) {
            tf_ws_report_closed(c, TF_WS_CLOSE_ABNORMAL, NULL, 0);
            tf_conn_close(c);
            return;
        }
    }
    tf_ws_report_closed(c, code, reason, len);
    tf_conn_finish(c, 1);
}

int tf_ws_conn_accept(tf_conn *c, const tf_header *headers, size_t num_headers, void *handle) {
    char accept[TF_WS_ACCEPT_LEN + 1];
    if (c->fd < 0 || c->ws || !c->rq || tf_ws_handshake(&c->rq->req, accept, NULL) != 0) {
        errno = EINVAL;
        return -1;
    }
    size_t cap = 512;
    for (size_t i = 0; i < num_headers; i++)
        cap += headers[i].name_len + headers[i].value_len + 4;
    char *head = malloc(cap);
    tf_ws_conn *ws = calloc(1, sizeof(*ws));
    ssize_t n = head && ws ? tf_ws_write_accept(head, cap, accept, headers, num_headers) : -1;
    int sent = n > 0 && tf_conn_append_out(c, head, (size_t)n) == 0;
    free(head);
    if (!sent) {
        free(ws);
        errno = ENOMEM;
        return -1;
    }
    uint64_t max = c->worker->cfg->ws_max_message_size > 0
                       ? (uint64_t)c->worker->cfg->ws_max_message_size : UINT64_MAX;
    tf_ws_parser_init(&ws->parser, max);
    ws->handle = handle;
    c->ws = ws;
    c->responded = 1;
    tf_conn_observe(c, 101, 0); /* counted and access-logged while the head is in c->in */
    /* the head leaves c->in now; what follows it is already frames */
    size_t used = c->head_len + c->body_len;
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
    c->head_len = c->body_len = c->parsed_len = 0;
    c->deadline = 0;
    return 0;
}

/* One event from the parser. Returns 1 to go on parsing, 0 to stop (paused),
 * -1 when c is closed or closing (then it may be freed: not to be touched). */
static int tf_ws_event_in(tf_conn *c, const tf_ws_event *ev) {
    tf_ws_conn *ws = c->ws;
    const tf_worker_callbacks *cb = c->worker->cb;
    if (ev->opcode == TF_WS_OP_TEXT || ev->opcode == TF_WS_OP_BINARY) {
        if (ws->closing || !ws->handle)
            return 1;
        if (cb->on_ws(cb->ctx, c, ws->handle, TF_WS_MESSAGE, ev->opcode, ev->data, ev->len) > 0)
            ws->paused = 1;
        return !ws->paused;
    }
    if (ev->opcode == TF_WS_OP_PING && !ws->closing) {
        uint8_t hdr[TF_WS_MAX_HEADER];
        struct iovec iov[2] = {{hdr, tf_ws_frame_header(hdr, TF_WS_OP_PONG, 1, ev->len)},
                               {(void *)ev->data, ev->len}};
        if (tf_conn_send(c, iov, 2) < 0) {
            tf_ws_report_closed(c, TF_WS_CLOSE_ABNORMAL, NULL, 0);
            tf_conn_close(c);
            return -1;
        }
        return 1;
    }
    if (ev->opcode == TF_WS_OP_CLOSE) {
        if (ws->closing) { /* the answer to ours: done */
            tf_conn_finish(c, 0);
            return -1;
        }
        int code = ev->close_code == TF_WS_CLOSE_NO_STATUS ? TF_WS_CLOSE_NORMAL : ev->close_code;
        uint8_t frame[TF_WS_MAX_CLOSE_FRAME];
        ws->closing = 1;
        struct iovec iov = {frame, tf_ws_close_frame(frame, code, NULL, 0)};
        if (tf_conn_send(c, &iov, 1) < 0) {
            tf_ws_report_closed(c, ev->close_code, NULL, 0);
            tf_conn_close(c);
            return -1;
        }
        tf_ws_report_closed(c, ev->close_code, ev->reason, ev->reason_len);
        tf_conn_finish(c, 1);
        return -1;
    }
    if (ev->opcode == TF_WS_OP_PONG)
        ws->pinged = 0; /* any pong answers (RFC 6455 5.5.3 allows unsolicited ones) */
    return 1;
}

/* Parses what c->in holds until it is incomplete, paused or closed; then
 * chooses what to wait for. Returns -1 when c was closed. */
int tf_ws_process(tf_conn *c) {
    tf_ws_conn *ws = c->ws;
    tf_ws_event ev;
    if (c->lingering || c->close_after_write)
        return 0; /* closing: tf_conn_finish's own course */
    if (tf_worker_stopping(c->worker) && !ws->closing) {
        tf_ws_drain(c); /* accepted after the drain began (its request was in flight) */
        return -1;
    }
    while (!ws->paused && c->in) {
        int r = tf_ws_parse(&ws->parser, c->in, &c->in_len, &ev);
        if (r == TF_WS_INCOMPLETE)
            break;
        if (r == TF_WS_ERROR) {
            ws->closing = 0; /* our close frame carries the parser's code */
            tf_ws_shut(c, ws->parser.close_code, NULL, 0);
            return -1;
        }
        int go = tf_ws_event_in(c, &ev);
        if (go < 0)
            return -1;
        if (go == 0)
            break;
    }
    uint32_t events = (ws->paused ? 0 : EPOLLIN) | (tf_conn_pending(c) ? EPOLLOUT : 0);
    if (tf_conn_set_events(c, events) < 0) {
        tf_ws_report_closed(c, TF_WS_CLOSE_ABNORMAL, NULL, 0);
        tf_conn_close(c);
        return -1;
    }
    return 0;
}

/* Makes room in c->in for the next read (at least what the parser needs). */
static int tf_ws_room(tf_conn *c) {
    size_t need = c->ws->parser.need;
    size_t want = c->in_cap;
    while (want - c->in_len < TF_WS_READ_ROOM || want < need)
        want = want ? want * 2 : TF_IN_INITIAL;
    return want == c->in_cap ? 0 : tf_conn_resize_in(c, want);
}

void tf_ws_on_readable(tf_conn *c, uint32_t events) {
    (void)events;
    if (c->lingering) {
        tf_conn_discard_input(c);
        return;
    }
    if ((!c->in && tf_conn_take_in(c) < 0) || tf_ws_room(c) < 0) {
        tf_ws_shut(c, TF_WS_CLOSE_INTERNAL, NULL, 0); /* no memory */
        return;
    }
    ssize_t n;
    do
        n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (n <= 0) { /* EOF without a close frame, or a reset */
        tf_ws_report_closed(c, TF_WS_CLOSE_ABNORMAL, NULL, 0);
        tf_conn_close(c);
        return;
    }
    c->last_read = c->worker->now;
    c->in_len += (size_t)n;
    tf_ws_process(c);
}

void tf_ws_on_writable(tf_conn *c) {
    if (tf_conn_flush(c) < 0) {
        tf_ws_report_closed(c, TF_WS_CLOSE_ABNORMAL, NULL, 0);
        tf_conn_close(c);
        return;
    }
    if (c->close_after_write && !tf_conn_pending(c)) {
        tf_conn_finish(c, 1);
        return;
    }
    if (tf_conn_pending(c) < TF_PULL_LOW_WATER && c->ws->handle) {
        const tf_worker_callbacks *cb = c->worker->cb;
        cb->on_ws(cb->ctx, c, c->ws->handle, TF_WS_WRITABLE, 0, NULL, 0); /* only wakes */
    }
    tf_ws_process(c);
}

int tf_ws_conn_send(tf_conn *c, int opcode, const char *data, size_t len) {
    if (c->fd < 0 || !c->ws || c->ws->closing) {
        errno = EPIPE;
        return -1;
    }
    uint8_t hdr[TF_WS_MAX_HEADER];
    struct iovec iov[2] = {{hdr, tf_ws_frame_header(hdr, opcode, 1, len)}, {(void *)data, len}};
    if (tf_conn_send(c, iov, 2) < 0 ||
        (tf_conn_pending(c) && tf_conn_set_events(c, c->registered | EPOLLOUT) < 0)) {
        tf_ws_report_closed(c, TF_WS_CLOSE_ABNORMAL, NULL, 0);
        tf_conn_close(c);
        errno = EPIPE;
        return -1;
    }
    return 0;
}

int tf_ws_conn_close(tf_conn *c, int code, const char *reason, size_t len) {
    if (c->fd < 0 || !c->ws || c->ws->closing)
        return 0;
    tf_ws_shut(c, code, reason, len);
    return 0;
}

void tf_ws_conn_resume(tf_conn *c) {
    if (c->fd < 0 || !c->ws || !c->ws->paused || c->lingering)
        return;
    c->ws->paused = 0;
    tf_ws_process(c);
}

void tf_ws_drain(tf_conn *c) {
    if (!c->ws->closing)
        tf_ws_shut(c, TF_WS_CLOSE_GOING_AWAY, "server shutting down", 20);
}

void tf_ws_gone(tf_conn *c) {
    tf_ws_report_closed(c, TF_WS_CLOSE_ABNORMAL, NULL, 0);
    free(c->ws);
    c->ws = NULL;
}

void tf_ws_tick(tf_conn *c) {
    tf_ws_conn *ws = c->ws;
    tf_worker *w = c->worker;
    double every = w->cfg->ws_ping_interval;
    if (!(every > 0) || ws->closing || c->lingering)
        return;
    if (ws->pinged > 0) {
        if (w->now - ws->pinged >= every)
            tf_ws_shut(c, TF_WS_CLOSE_INTERNAL, "no pong", 7); /* c may be gone */
        return;
    }
    if (w->now - c->last_read < every)
        return;
    uint8_t frame[TF_WS_MAX_HEADER];
    struct iovec iov = {frame, tf_ws_frame_header(frame, TF_WS_OP_PING, 1, 0)};
    ws->pinged = w->now;
    if (tf_conn_send(c, &iov, 1) < 0 ||
        (tf_conn_pending(c) && tf_conn_set_events(c, c->registered | EPOLLOUT) < 0)) {
        tf_ws_report_closed(c, TF_WS_CLOSE_ABNORMAL, NULL, 0);
        tf_conn_close(c);
    }
}
