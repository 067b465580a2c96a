/* conn.c — a connection's buffers and I/O: open, queue, write, sendfile, close, linger.
 *
 * Input accumulates in c->in (the parsed request points into it); between
 * requests a connection gives it and its request state back to small
 * per-worker pools, so that an idle connection costs only its tf_conn. Output
 * that the socket did not take waits in c->out, then a sendfile(2) source
 * may follow it. Every write moves the connection's deadline: a peer that
 * keeps reading keeps its connection. A peer that reads nothing keeps it for
 * request_timeout from when the output last moved or began to wait
 * (c->write_since), however often the connection is looked at meanwhile.
 */
#define _GNU_SOURCE
#include "worker_internal.h"
#include "clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <unistd.h>

#define TF_SENDFILE_MAX (1 << 30)

/* Registers a freshly accepted socket. Returns the connection, or NULL with
 * errno (fd closed) when there is no memory or epoll refuses it. */
tf_conn *tf_conn_open(tf_worker *w, int fd, const struct sockaddr_storage *peer) {
    if (peer->ss_family == AF_INET || peer->ss_family == AF_INET6) {
        int one = 1;
        /* best effort: a failure costs latency, not correctness */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    tf_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    c->worker = w;
    c->fd = fd;
    c->peer = *peer;
    c->req_start = c->last_read = w->now;
    c->deadline = w->now + w->cfg->header_timeout;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int err = errno;
        close(fd);
        free(c);
        errno = err;
        return NULL;
    }
    c->registered = EPOLLIN;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->conn_count++;
    if (tf_sb_me) {
        tf_sb_me->accepted++;
        tf_sb_me->open = w->conn_count;
    }
    return c;
}

void tf_conn_close(tf_conn *c) {
    tf_worker *w = c->worker;
    if (c->orphaned)
        return; /* closed already; its job has not completed yet */
    /* close() alone leaves the registration in place while a child forked by
     * a handler still holds the socket: epoll would then report events for
     * this freed connection. ENOENT/EBADF cannot happen; nothing to handle. */
    (void)epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    if (c->file_left > 0)
        close(c->file_fd);
    c->file_left = 0;
    if (c->pull) {
        /* the body will not be finished: its source is released (closed) */
        void *source = c->pull;
        c->pull = NULL;
        w->cb->on_pull(w->cb->ctx, c, source, 1);
    }
    w->conn_count--;
    if (tf_sb_me)
        tf_sb_me->open = w->conn_count;
    if (c->body)
        tf_body_gone(c); /* its readers fail from now on */
    if (c->ws)
        tf_ws_gone(c); /* the embedder hears of the end (1006 unless said) */
    if (c->job) {
        /* its request is with a runner, which holds pointers into c->in */
        c->orphaned = 1;
        return;
    }
    tf_conn_free(c);
}

void tf_conn_free(tf_conn *c) {
    tf_conn_release_in(c);
    if (c->rq)
        free(c->rq);
    free(c->out);
    free(c);
}

/* ------------------------------------------------------ buffers while idle */

/* Gives c a request state, from the worker's pool when it holds one.
 * Returns 0, or -1 without memory. Its contents are the parser's to set. */
int tf_conn_take_state(tf_conn *c) {
    tf_worker *w = c->worker;
    if (c->rq)
        return 0;
    c->rq = w->rq_pooled ? w->rq_pool[--w->rq_pooled] : malloc(sizeof(*c->rq));
    return c->rq ? 0 : -1;
}

/* Gives an idle connection (c->in NULL) an input buffer of TF_IN_INITIAL
 * bytes and a request state, from the pools when they hold some. Returns 0,
 * or -1 without memory. */
int tf_conn_take_in(tf_conn *c) {
    tf_worker *w = c->worker;
    if (tf_conn_take_state(c) < 0)
        return -1;
    c->in = w->in_pooled ? w->in_pool[--w->in_pooled] : malloc(TF_IN_INITIAL);
    if (!c->in)
        return -1;
    c->in_cap = TF_IN_INITIAL;
    return 0;
}

/* Gives back c's input buffer, whatever it holds: to the pool when it has
 * the initial size and the pool has room, else to the allocator. */
void tf_conn_release_in(tf_conn *c) {
    tf_worker *w = c->worker;
    if (!c->in)
        return;
    tf_body_free(c); /* a streamed body lives in c->in */
    w->in_extra -= tf_in_extra(c->in_cap);
    if (c->in_cap == TF_IN_INITIAL && w->in_pooled < TF_POOL_MAX)
        w->in_pool[w->in_pooled++] = c->in;
    else
        free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = c->head_len = c->parsed_len = 0;
}

/* c has no request and no input left (nothing in flight, nothing pulled):
 * it holds no buffer while it waits, as nginx's idle connections do. */
void tf_conn_release_idle(tf_conn *c) {
    tf_worker *w = c->worker;
    tf_conn_release_in(c);
    if (c->rq && w->rq_pooled < TF_POOL_MAX)
        w->rq_pool[w->rq_pooled++] = c->rq;
    else
        free(c->rq);
    c->rq = NULL;
}

/* The worker is done: frees what its pools keep. */
void tf_worker_pools_free(tf_worker *w) {
    while (w->in_pooled)
        free(w->in_pool[--w->in_pooled]);
    while (w->rq_pooled)
        free(w->rq_pool[--w->rq_pooled]);
    tf_body_worker_end();
}

/* The parsed request's pointers into c->in as offsets, and back: realloc may
 * move the buffer, and a pointer into a freed block must not be used. */
typedef struct {
    size_t method, target, path, query;
    size_t name[TF_MAX_HEADERS], value[TF_MAX_HEADERS];
} tf_request_offsets;

static void tf_request_save(const tf_request *r, const char *base, tf_request_offsets *o) {
    o->method = (size_t)(r->method - base);
    o->target = (size_t)(r->target - base);
    o->path = (size_t)(r->path - base);
    o->query = (size_t)(r->query - base);
    for (size_t i = 0; i < r->num_headers; i++) {
        o->name[i] = (size_t)(r->headers[i].name - base);
        o->value[i] = (size_t)(r->headers[i].value - base);
    }
}

static void tf_request_restore(tf_request *r, const char *base, const tf_request_offsets *o) {
    r->method = base + o->method;
    r->target = base + o->target;
    r->path = base + o->path;
    r->query = base + o->query;
    for (size_t i = 0; i < r->num_headers; i++) {
        r->headers[i].name = base + o->name[i];
        r->headers[i].value = base + o->value[i];
    }
}

/* Gives c->in a capacity of exactly want bytes (want >= c->in_len), keeping
 * its contents and the parsed request's pointers, and counts the change in
 * the worker's total. realloc: a big buffer grows by remapping, not copying. */
int tf_conn_resize_in(tf_conn *c, size_t want) {
    tf_worker *w = c->worker;
    tf_request_offsets saved;
    int parsed = c->head_len > 0; /* c->rq->req points into c->in */
    if (parsed)
        tf_request_save(&c->rq->req, c->in, &saved);
    char *fresh = realloc(c->in, want);
    if (!fresh)
        return -1; /* c->in is untouched */
    c->in = fresh;
    if (parsed)
        tf_request_restore(&c->rq->req, fresh, &saved);
    w->in_extra = w->in_extra - tf_in_extra(c->in_cap) + tf_in_extra(want);
    c->in_cap = want;
    return 0;
}

void tf_conn_out_moved(tf_conn *c) {
    /* its own clock read: called from the embedder between the loop's
     * wake-ups too, when w->now may be a sweep interval old */
    c->write_since = tf_clock_coarse();
    c->deadline = c->write_since + c->worker->cfg->request_timeout;
}

/* Queues data behind what waits in c->out (compacting, then growing it). */
int tf_conn_append_out(tf_conn *c, const char *data, size_t len) {
    if (len == 0)
        return 0;
    if (tf_conn_pending(c) == 0)
        tf_conn_out_moved(c); /* output begins to wait: its stall clock starts */
    if (c->out_off > 0 && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_cap - c->out_len < len) {
        if (c->out_off) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        if (c->out_cap - c->out_len < len) {
            size_t cap = c->out_cap ? c->out_cap : 4096;
            while (cap - c->out_len < len)
                cap *= 2;
            char *grown = realloc(c->out, cap);
            if (!grown)
                return -1;
            c->out = grown;
            c->out_cap = cap;
        }
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    return 0;
}

/* Sends the queued file with sendfile(2). Returns 0, or -1 when the peer is
 * gone or the file ended early (the response cannot be completed). */
static int tf_conn_flush_file(tf_conn *c) {
    while (c->file_left > 0) {
        size_t want = c->file_left > TF_SENDFILE_MAX ? TF_SENDFILE_MAX : (size_t)c->file_left;
        ssize_t n = sendfile(c->fd, c->file_fd, &c->file_off, want);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            break; /* EPIPE, ECONNRESET, EIO, ... */
        }
        if (n == 0)
            break; /* the file is shorter than promised */
        c->file_left -= n;
        tf_conn_out_moved(c);
    }
    close(c->file_fd);
    if (c->file_left == 0)
        return 0;
    c->file_left = 0;
    return -1;
}

/* tf_conn_flush's slow half: writes c->out, then the file behind it. */
int tf_conn_flush_out(tf_conn *c) {
    while (tf_conn_out_pending(c)) {
        ssize_t n = write(c->fd, c->out + c->out_off, tf_conn_out_pending(c));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1; /* EPIPE, ECONNRESET, ... */
        }
        c->out_off += (size_t)n;
        tf_conn_out_moved(c);
    }
    c->out_off = c->out_len = 0;
    if (c->file_left > 0)
        return tf_conn_flush_file(c);
    return 0;
}

/* Queues what of iov a writev of `written` bytes (after the pending ones) left. */
static int tf_conn_keep_rest(tf_conn *c, const struct iovec *iov, int iovcnt, size_t written) {
    for (int i = 0; i < iovcnt; i++) {
        size_t len = iov[i].iov_len;
        if (written >= len) {
            written -= len;
            continue;
        }
        if (tf_conn_append_out(c, (const char *)iov[i].iov_base + written, len - written) < 0)
            return -1;
        written = 0;
    }
    return 0;
}

/* Sends what is buffered and then iov (at most 7 pieces), together in one
 * writev; what the socket does not take is buffered. Behind a queued file
 * everything waits. Returns 0, or -1 on a dead peer or no memory. */
int tf_conn_send(tf_conn *c, struct iovec *iov, int iovcnt) {
    struct iovec all[8];
    size_t pending = tf_conn_out_pending(c);
    size_t total = pending;
    int n_all = 0;
    if (iovcnt > 7)
        return -1;
    if (pending)
        all[n_all++] = (struct iovec){c->out + c->out_off, pending};
    for (int i = 0; i < iovcnt; i++) {
        total += iov[i].iov_len;
        all[n_all++] = iov[i];
    }
    size_t written = 0;
    while (c->file_left == 0 && total > 0) {
        ssize_t n = writev(c->fd, all, n_all);
        if (n >= 0) {
            written = (size_t)n;
            c->deadline = c->worker->now + c->worker->cfg->request_timeout;
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        return -1;
    }
    if (written == total) {
        c->out_off = c->out_len = 0;
        return 0;
    }
    if (written > 0)
        tf_conn_out_moved(c); /* the rest waits from now (from nothing: tf_conn_append_out) */
    if (written < pending) {
        c->out_off += written;
        written = 0;
    } else {
        c->out_off = c->out_len = 0;
        written -= pending;
    }
    return tf_conn_keep_rest(c, iov, iovcnt, written);
}

/* Starts closing: flush, then close, lingering when input may still arrive so
 * that the response is not destroyed by a reset. */
void tf_conn_finish(tf_conn *c, int linger) {
    tf_worker *w = c->worker;
    if (tf_conn_flush(c) < 0) {
        tf_conn_close(c);
        return;
    }
    if (tf_conn_pending(c)) {
        c->close_after_write = 1;
        if (tf_conn_set_events(c, EPOLLOUT) < 0)
            tf_conn_close(c);
        return;
    }
    if (!linger || c->peer_closed) {
        tf_conn_close(c);
        return;
    }
    if (shutdown(c->fd, SHUT_WR) < 0 || tf_conn_set_events(c, EPOLLIN) < 0) {
        tf_conn_close(c);
        return;
    }
    /* lingering discards what arrives: the input buffer is not needed, and
     * must not hold the worker's buffer room (w->in_extra) meanwhile */
    tf_conn_release_in(c);
    c->lingering = 1;
    c->deadline = w->now + TF_LINGER_SECONDS;
}

/* Dotted-quad text of a (network order) IPv4 address: inet_ntop goes through
 * sprintf, which costs more than the rest of a WSGI environ's REMOTE_ADDR. */
static int tf_format_ipv4(const struct in_addr *addr, char *out, size_t cap) {
    if (cap < 16)
        return -1;
    const unsigned char *b = (const unsigned char *)&addr->s_addr;
    char *p = out;
    for (int i = 0; i < 4; i++) {
        unsigned v = b[i];
        if (v >= 100)
            *p++ = (char)('0' + v / 100);
        if (v >= 10)
            *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
        *p++ = i < 3 ? '.' : '\0';
    }
    return 0;
}

int tf_conn_peer(const tf_conn *c, char *host, size_t host_cap, int *port) {
    if (host_cap)
        host[0] = '\0';
    *port = 0;
    if (c->peer.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&c->peer;
        if (tf_format_ipv4(&a->sin_addr, host, host_cap) < 0)
            return -1;
        *port = ntohs(a->sin_port);
    } else if (c->peer.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&c->peer;
        if (!inet_ntop(AF_INET6, &a->sin6_addr, host, (socklen_t)host_cap))
            return -1;
        *port = ntohs(a->sin6_port);
    }
    return 0;
}
