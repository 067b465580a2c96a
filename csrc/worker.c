/* worker.c — one worker's epoll loop: accept on the shared listening socket,
 * read and parse requests, hand complete ones to the embedder, write responses,
 * keep-alive, timeouts, graceful drain.
 *
 * Level-triggered epoll throughout. The listener is registered with
 * EPOLLEXCLUSIVE so one connection wakes one worker; a worker accepts at most
 * cfg->accepts_per_wakeup connections per wake-up so that it does not drain
 * the whole queue while the others sleep.
 *
 * Fairness (cfg->balance): the kernel wakes the first idle exclusive waiter
 * in registration order, so left alone one worker takes most connections.
 * Two counters: a worker steps out of accepting (listener removed from its
 * epoll set) while its open connections are above the ready workers' mean,
 * read from the scoreboard (a slack of one connection left 5 to 9 of 64
 * keep-alive connections per worker with 8 workers; none gives 8 each); and after a wake-up in which it
 * accepted, it re-registers the listener, which puts it at the back of the
 * wait queue so the next connection wakes another idle worker. A re-armed
 * exclusive waiter is not woken for connections already queued, so re-arming
 * is always followed by an accept attempt.
 *
 * The worker's scoreboard entry (tf_sb_me) is updated with plain stores.
 */
#define _GNU_SOURCE
#include "tailfast.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define TF_IN_INITIAL 8192
#define TF_IN_SHRINK_ABOVE (256 * 1024)
#define TF_OUT_HIGH_WATER (256 * 1024) /* stop reading while this much waits */
#define TF_LINGER_SECONDS 2.0
#define TF_DRAIN_IDLE_SECONDS 0.1 /* an idle keep-alive connection's last chance to send */
#define TF_MAX_EVENTS 256
#define TF_HEAD_STACK 4096
#define TF_STREAM_BUFFER (64 * 1024) /* a streaming body waits while more is queued */
#define TF_SENDFILE_MAX (1 << 30)

/* How the body of a streamed response is framed (tf_conn.streaming). */
enum { TF_STREAM_NONE, TF_STREAM_DISCARD, TF_STREAM_LENGTH, TF_STREAM_CHUNKED, TF_STREAM_CLOSE };

enum { TF_TAG_LISTENER = 1, TF_TAG_SIGNAL = 2 };

typedef struct tf_worker tf_worker;

struct tf_conn {
    tf_worker *worker;
    int fd;
    uint32_t registered; /* events currently registered with epoll */

    char *in;
    size_t in_len, in_cap;
    size_t head_len; /* > 0 once the current request's head is parsed */
    size_t parsed_len; /* in_len at the last incomplete parse of the head */
    size_t body_len; /* decoded body bytes after the head (chunked) */
    tf_request req;
    tf_chunked_decoder chunked;
    int responded;

    char *out;
    size_t out_off, out_len, out_cap;

    int streaming;       /* TF_STREAM_*: a response whose body is still being written */
    int stream_failed;   /* the peer went away or stalled while streaming */
    int64_t stream_left; /* TF_STREAM_LENGTH: body bytes still owed */
    int file_fd;         /* sendfile source (our own dup), valid while file_left > 0 */
    off_t file_off;
    int64_t file_left; /* file bytes still to send, after what is in out */

    int close_after_write; /* close once out is flushed */
    int peer_closed;       /* read returned 0 */
    int lingering;         /* write side shut; discarding input until EOF */
    int served;            /* requests answered on this connection */
    double dispatched;     /* tf_clock() when the current request was dispatched */
    double deadline;       /* monotonic seconds; 0 = none */
    double req_start;      /* when the current request began (accept or first byte) */
    double last_read;      /* when bytes last arrived */
    int idle;              /* between requests: the keep-alive timer runs */

    struct sockaddr_storage peer;
    socklen_t peer_len;
    tf_conn *prev, *next;
};

struct tf_worker {
    const tf_worker_config *cfg;
    const tf_worker_callbacks *cb;
    int epfd;
    int listen_fd;
    int listening;     /* listener registered with epoll */
    double accept_resume; /* when paused after EMFILE: resume at this time */
    int signal_pipe[2];
    int draining;
    int stop_now;
    int balance_paused; /* stepped out of accepting: above the fair share */
    int cpus;           /* CPUs this process may use */
    int retire_asked;   /* max_requests reached, the primary was told */
    int conn_count;
    tf_conn *conns; /* all connections, most recently accepted first */
    double now;
    double last_sweep;
    double sweep_every; /* seconds between timeout sweeps */
};

/* Signal handlers only record; the loop does the work (self-pipe wakes it). */
static volatile sig_atomic_t tf_sig_drain, tf_sig_quit;
static int tf_sig_pipe_write = -1;

static void tf_worker_on_signal(int sig) {
    int saved = errno;
    if (sig == SIGQUIT)
        tf_sig_quit = 1;
    else
        tf_sig_drain = 1;
    if (tf_sig_pipe_write >= 0) {
        char b = 1;
        ssize_t r = write(tf_sig_pipe_write, &b, 1);
        (void)r; /* a full pipe already wakes the loop */
    }
    errno = saved;
}

static double tf_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void tf_worker_config_default(tf_worker_config *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->listen_fd = -1;
    cfg->max_connections = 10000;
    cfg->accepts_per_wakeup = 4;
    cfg->keepalive_timeout = 5.0;
    cfg->header_timeout = 10.0;
    cfg->body_timeout = 30.0;
    cfg->request_timeout = 60.0;
    cfg->max_body_size = 16 * 1024 * 1024;
    tf_limits_default(&cfg->limits);
}

/* Copies at most cap - 1 bytes of src and a NUL into a scoreboard string. */
static void tf_sb_copy(char *dst, size_t cap, const char *src, size_t len) {
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* ------------------------------------------------------------ connections */

static int tf_conn_set_events(tf_conn *c, uint32_t events) {
    if (c->registered == events)
        return 0;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(c->worker->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        return -1;
    c->registered = events;
    return 0;
}

static void tf_conn_close(tf_conn *c) {
    tf_worker *w = c->worker;
    /* close() alone leaves the registration in place while a child forked by
     * a handler still holds the socket: epoll would then report events for
     * this freed connection. ENOENT/EBADF cannot happen; nothing to handle. */
    (void)epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->file_left > 0)
        close(c->file_fd);
    free(c->in);
    free(c->out);
    free(c);
    w->conn_count--;
    if (tf_sb_me)
        tf_sb_me->open = w->conn_count;
}

/* Moves the parsed request's pointers from buffer old to buffer new. */
static void tf_request_rebase(tf_request *r, const char *old, char *new) {
#define TF_REBASE(p) ((p) = new + ((p) - old))
    TF_REBASE(r->method);
    TF_REBASE(r->target);
    TF_REBASE(r->path);
    TF_REBASE(r->query);
    for (size_t i = 0; i < r->num_headers; i++) {
        TF_REBASE(r->headers[i].name);
        TF_REBASE(r->headers[i].value);
    }
#undef TF_REBASE
}

/* Gives c->in a capacity of at least want bytes (or exactly want when shrinking). */
static int tf_conn_resize_in(tf_conn *c, size_t want) {
    char *fresh = malloc(want);
    if (!fresh)
        return -1;
    if (c->in_len)
        memcpy(fresh, c->in, c->in_len);
    if (c->head_len)
        tf_request_rebase(&c->req, c->in, fresh);
    free(c->in);
    c->in = fresh;
    c->in_cap = want;
    return 0;
}

static int tf_conn_append_out(tf_conn *c, const char *data, size_t len) {
    if (len == 0)
        return 0;
    if (c->out_off > 0 && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_cap - c->out_len < len) {
        /* compact first, then grow */
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

static size_t tf_conn_out_pending(const tf_conn *c) { return c->out_len - c->out_off; }

/* Everything still owed to the peer: buffered bytes and the file behind them. */
static size_t tf_conn_pending(const tf_conn *c) {
    return tf_conn_out_pending(c) + (size_t)c->file_left;
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
        c->deadline = c->worker->now + c->worker->cfg->request_timeout;
    }
    close(c->file_fd);
    if (c->file_left == 0)
        return 0;
    c->file_left = 0;
    return -1;
}

/* Writes what is pending. Returns 0 (all or some written), -1 on a dead peer. */
static int tf_conn_flush(tf_conn *c) {
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
        c->deadline = c->worker->now + c->worker->cfg->request_timeout;
    }
    c->out_off = c->out_len = 0;
    if (c->file_left > 0)
        return tf_conn_flush_file(c);
    return 0;
}

/* Sends what is buffered and then iov, together in one writev; what the
 * socket does not take is buffered. Behind a queued file everything waits. */
static int tf_conn_send(tf_conn *c, struct iovec *iov, int iovcnt) {
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
    if (written < pending) {
        c->out_off += written;
        written = 0;
    } else {
        c->out_off = c->out_len = 0;
        written -= pending;
    }
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
                                       c->req.version_minor);
    if (n < 0 && *head != stack) {
        free(*head);
        *head = stack;
    }
    return n;
}

/* Whether the connection may stay open after this response. */
static int tf_conn_may_keep(const tf_conn *c, int close_after) {
    /* tf_sig_drain: a stop that arrived while the handler ran already counts */
    return c->req.keep_alive && !close_after && !c->worker->draining && !tf_sig_drain &&
           !c->peer_closed;
}

static int tf_status_has_body(int status) {
    return !((status >= 100 && status < 200) || status == 204 || status == 304);
}

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
    int send_body = !no_body && !c->req.is_head && body_len > 0;
    /* counted before it is sent: whoever sees the answer sees it counted */
    tf_observe_response(c, c->head_len ? &c->req : NULL, status, send_body ? body_len : 0,
                        c->dispatched);
    c->dispatched = 0;
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

int tf_conn_respond_start(tf_conn *c, int status, const tf_header *headers,
                          size_t num_headers, int64_t content_length, int close_after) {
    int keep = tf_conn_may_keep(c, close_after);
    int mode, flags = 0;
    int64_t length = -1;
    if (!tf_status_has_body(status)) {
        mode = TF_STREAM_DISCARD;
    } else if (content_length >= 0) {
        mode = c->req.is_head ? TF_STREAM_DISCARD : TF_STREAM_LENGTH;
        length = content_length;
    } else if (c->req.is_head) {
        mode = TF_STREAM_DISCARD; /* a HEAD answer has no body to delimit */
    } else if (c->req.version_minor == 1) {
        mode = TF_STREAM_CHUNKED;
        flags |= TF_HEAD_CHUNKED;
    } else {
        mode = TF_STREAM_CLOSE; /* HTTP/1.0: the body ends where the connection does */
        keep = 0;
    }
    if (keep)
        flags |= TF_HEAD_KEEP_ALIVE;
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
    tf_observe_response(c, c->head_len ? &c->req : NULL, status,
                        mode == TF_STREAM_LENGTH ? (uint64_t)length : 0, c->dispatched);
    c->dispatched = 0;
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
    int timeout_ms = (int)(w->cfg->request_timeout * 1000.0);
    int n;
    w->cb->release(w->cb->ctx);
    do
        n = poll(&p, 1, timeout_ms > 0 ? timeout_ms : 1);
    while (n < 0 && errno == EINTR && !tf_sig_quit);
    w->cb->acquire(w->cb->ctx);
    w->now = tf_monotonic();
    return n > 0 ? 0 : -1;
}

/* Writes iov behind what is queued and waits until at most TF_STREAM_BUFFER
 * bytes remain queued, so that a long body is never held whole in memory. */
static int tf_conn_stream_out(tf_conn *c, struct iovec *iov, int iovcnt) {
    if (tf_conn_send(c, iov, iovcnt) < 0)
        return -1;
    while (tf_conn_pending(c) > TF_STREAM_BUFFER) {
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

static void tf_conn_error(tf_conn *c, int status) {
    static const tf_header text = {"Content-Type", 12, "text/plain; charset=utf-8", 25};
    char body[96];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, tf_status_reason(status));
    if (n < 0)
        n = 0;
    /* The rest of the input cannot be trusted: answer, then close. */
    tf_conn_respond(c, status, &text, 1, body, (size_t)n, 1);
}

/* Starts closing: flush, then close, lingering when input may still arrive so
 * that the response is not destroyed by a reset. */
static void tf_conn_finish(tf_conn *c, int linger) {
    if (tf_conn_flush(c) < 0) {
        tf_conn_close(c);
        return;
    }
    if (tf_conn_pending(c)) {
        c->close_after_write = 1;
        tf_conn_set_events(c, EPOLLOUT);
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
    c->lingering = 1;
    c->deadline = c->worker->now + TF_LINGER_SECONDS;
}

/* ---------------------------------------------------------------- requests */

/* Returns 1 when the request at the head of c->in is complete (body included),
 * 0 when more input is needed, -1 when the connection must close (an error
 * response has been queued). */
static int tf_conn_request_ready(tf_conn *c) {
    const tf_worker_config *cfg = c->worker->cfg;
    if (!c->head_len) {
        /* A head trickled in small pieces must not be re-parsed from its start
         * on every read (quadratic work). It can only complete with an LF, so
         * parse again when one arrived, or when the input has doubled since the
         * last parse: an over-long line is still refused with at most twice
         * the limit buffered, and the verdict is the one the whole input gets. */
        if (c->parsed_len && c->in_len < 2 * c->parsed_len &&
            !memchr(c->in + c->parsed_len, '\n', c->in_len - c->parsed_len))
            return 0;
        int status = 400;
        ssize_t r = tf_parse_request(c->in, c->in_len, &cfg->limits, &c->req, &status);
        if (r == TF_PARSE_INCOMPLETE) {
            c->parsed_len = c->in_len;
            return 0;
        }
        c->parsed_len = 0;
        if (r < 0) {
            c->req.keep_alive = 0;
            c->req.is_head = 0;
            c->req.version_minor = 1;
            tf_conn_error(c, status);
            return -1;
        }
        c->head_len = (size_t)r;
        c->body_len = 0;
        int64_t limit = cfg->max_body_size;
        if (limit > 0 && c->req.content_length > limit) {
            tf_conn_error(c, 413);
            return -1;
        }
        if (c->req.expect_continue < 0) {
            tf_conn_error(c, 417);
            return -1;
        }
        if (c->req.chunked)
            memset(&c->chunked, 0, sizeof(c->chunked));
        int has_body = c->req.chunked || c->req.content_length > 0;
        if (c->req.expect_continue > 0 && has_body && c->req.version_minor == 1 &&
            c->in_len == c->head_len) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            struct iovec iov = {(void *)cont, sizeof(cont) - 1};
            if (tf_conn_send(c, &iov, 1) < 0)
                return -1;
        }
    }
    if (c->req.chunked) {
        size_t start = c->head_len + c->body_len;
        size_t raw = c->in_len - start;
        ssize_t r = tf_chunked_decode(&c->chunked, c->in + start, &raw);
        c->body_len += raw;
        if (r == TF_PARSE_ERROR) {
            tf_conn_error(c, 400);
            return -1;
        }
        int64_t limit = cfg->max_body_size;
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
    size_t need = c->head_len + (size_t)(c->req.content_length > 0 ? c->req.content_length : 0);
    if (c->in_len < need) {
        if (c->in_cap < need && tf_conn_resize_in(c, need) < 0) {
            tf_conn_error(c, 413);
            return -1;
        }
        return 0;
    }
    c->body_len = need - c->head_len;
    return 1;
}

/* Sets c->deadline from what the connection is waiting for. The head and the
 * whole request have absolute deadlines counted from the request's start, so
 * that trickling bytes (slowloris) does not extend them; a body only has to
 * keep moving (body_timeout between reads). */
static void tf_conn_arm_timer(tf_conn *c) {
    const tf_worker_config *cfg = c->worker->cfg;
    double now = c->worker->now;
    if (tf_conn_pending(c)) {
        c->deadline = now + cfg->request_timeout; /* a response write may stall this long */
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

/* Answers every complete request in c->in, in order. Returns -1 when c was closed. */
static int tf_conn_process(tf_conn *c) {
    tf_worker *w = c->worker;
    while (!c->close_after_write && !c->lingering && c->in_len > 0 && c->file_left == 0 &&
           tf_conn_pending(c) < TF_OUT_HIGH_WATER) {
        int ready = tf_conn_request_ready(c);
        if (ready < 0) {
            tf_conn_finish(c, 1);
            return -1;
        }
        if (ready == 0)
            break;
        c->responded = 0;
        tf_sb_proc *me = tf_sb_me;
        if (me) {
            /* the strings first: the state publishes them */
            tf_sb_copy(me->method, sizeof(me->method), c->req.method, c->req.method_len);
            tf_sb_copy(me->path, sizeof(me->path), c->req.path, c->req.path_len);
            /* its own clock read: w->now is the wake-up's, and a batch of
             * requests must not count the earlier ones' time (--timeout) */
            me->request_started = tf_monotonic();
            __atomic_store_n(&me->state, TF_W_BUSY, __ATOMIC_RELEASE);
        }
        c->dispatched = tf_clock();
        int r = tf_dispatch(w->cfg, w->cb, c, &c->req, c->in + c->head_len, c->body_len,
                            w->draining || tf_sig_drain);
        if (c->streaming != TF_STREAM_NONE)
            tf_conn_respond_end(c, 0); /* the embedder left it unfinished */
        if (!c->responded)
            tf_conn_error(c, 500);
        c->served++;
        if (me) {
            me->requests++;
            __atomic_store_n(&me->state, w->draining ? TF_W_DRAINING : TF_W_IDLE,
                             __ATOMIC_RELEASE);
            if (w->cfg->max_requests && me->requests >= w->cfg->max_requests &&
                !w->retire_asked) {
                w->retire_asked = 1;
                me->retire = 1;
                tf_scoreboard_notify();
            }
        }
        size_t used = c->head_len + c->body_len;
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        c->head_len = c->body_len = 0;
        c->parsed_len = 0;
        /* a pipelined request's clock starts when it becomes the current one */
        c->idle = c->in_len == 0;
        c->req_start = w->now;
        if (r < 0) {
            tf_conn_close(c);
            return -1;
        }
    }
    if (c->in_len == 0 && c->in_cap > TF_IN_SHRINK_ABOVE && tf_conn_resize_in(c, TF_IN_INITIAL) < 0) {
        tf_conn_close(c);
        return -1;
    }
    if (tf_conn_flush(c) < 0) {
        tf_conn_close(c);
        return -1;
    }
    if (c->close_after_write && !tf_conn_pending(c)) {
        /* unprocessed input means the client sent more: linger so it reads the answer */
        tf_conn_finish(c, c->in_len > 0);
        return -1;
    }
    if (c->peer_closed && !tf_conn_pending(c)) {
        tf_conn_close(c);
        return -1;
    }
    uint32_t events = 0;
    if (tf_conn_pending(c))
        events |= EPOLLOUT;
    if (tf_conn_pending(c) < TF_OUT_HIGH_WATER && !c->peer_closed && !c->close_after_write)
        events |= EPOLLIN;
    if (tf_conn_set_events(c, events) < 0) {
        tf_conn_close(c);
        return -1;
    }
    if (c->in_len == 0 && !tf_conn_pending(c) && w->draining) {
        tf_conn_close(c); /* idle during a drain: nothing in flight */
        return -1;
    }
    tf_conn_arm_timer(c);
    return 0;
}

static void tf_conn_on_readable(tf_conn *c) {
    if (c->lingering) {
        char scratch[4096];
        ssize_t n;
        do
            n = read(c->fd, scratch, sizeof(scratch));
        while (n < 0 && errno == EINTR);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            tf_conn_close(c);
        return;
    }
    size_t space = c->in_cap - c->in_len;
    if (space == 0 || (space < 1024 && !c->head_len)) {
        size_t cap = c->in_cap ? c->in_cap * 2 : TF_IN_INITIAL;
        if (tf_conn_resize_in(c, cap) < 0) {
            tf_conn_close(c);
            return;
        }
    }
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

static void tf_conn_on_writable(tf_conn *c) {
    if (tf_conn_flush(c) < 0) {
        tf_conn_close(c);
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

/* ------------------------------------------------------------------ accept */

static int tf_listener_arm(tf_worker *w, int on) {
    if (on == w->listening || w->listen_fd < 0)
        return 0;
    if (on) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.u64 = TF_TAG_LISTENER};
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->listen_fd, &ev) < 0)
            return -1;
    } else if (epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->listen_fd, NULL) < 0) {
        return -1;
    }
    w->listening = on;
    return 0;
}

/* Accepts up to cfg->accepts_per_wakeup queued connections; returns how many. */
static int tf_accept_some(tf_worker *w) {
    int accepted = 0;
    for (int i = 0; i < w->cfg->accepts_per_wakeup; i++) {
        if (w->conn_count >= w->cfg->max_connections) {
            tf_listener_arm(w, 0); /* resumes when a connection closes */
            return accepted;
        }
        if (w->cfg->balance && !w->draining && tf_scoreboard_over_share()) {
            tf_listener_arm(w, 0); /* resumes once back at the fair share */
            w->balance_paused = 1;
            return accepted;
        }
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof(peer);
        int fd = accept4(w->listen_fd, (struct sockaddr *)&peer, &peer_len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return accepted;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* out of descriptors or memory: stop accepting for a moment
                 * instead of spinning on a ready listener */
                tf_log("worker %d (pid %d): accept: %s; pausing accepts for 100 ms",
                       w->cfg->worker_id, (int)getpid(), strerror(errno));
                tf_listener_arm(w, 0);
                w->accept_resume = w->now + 0.1;
                return accepted;
            }
            tf_log("worker %d (pid %d): accept: %s", w->cfg->worker_id, (int)getpid(),
                   strerror(errno));
            return accepted;
        }
        if (peer.ss_family == AF_INET || peer.ss_family == AF_INET6) {
            int one = 1;
            /* best effort: a failure costs latency, not correctness */
            (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        tf_conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            return accepted;
        }
        c->worker = w;
        c->fd = fd;
        c->peer = peer;
        c->peer_len = peer_len;
        c->req_start = c->last_read = w->now;
        c->deadline = w->now + w->cfg->header_timeout;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
            continue;
        }
        c->registered = EPOLLIN;
        c->next = w->conns;
        if (w->conns)
            w->conns->prev = c;
        w->conns = c;
        w->conn_count++;
        accepted++;
        if (tf_sb_me) {
            tf_sb_me->accepted++;
            tf_sb_me->open = w->conn_count;
        }
    }
    return accepted;
}

/* After a wake-up that accepted: to the back of the listener's wait queue, so
 * that the next connection wakes another idle worker (round robin). */
static void tf_listener_rotate(tf_worker *w) {
    if (!w->listening || !tf_sb || tf_sb->workers < 2)
        return;
    if (tf_listener_arm(w, 0) == 0 && tf_listener_arm(w, 1) == 0)
        tf_accept_some(w); /* re-armed: look at what is already queued */
}

/* ----------------------------------------------------------------- the loop */

static void tf_worker_sweep(tf_worker *w) {
    tf_conn *c = w->conns;
    while (c) {
        tf_conn *next = c->next;
        if (c->deadline > 0 && w->now >= c->deadline) {
            if (c->in_len > 0 && !c->lingering && !tf_conn_pending(c) && !c->close_after_write) {
                c->req.keep_alive = 0;
                c->req.is_head = 0;
                c->req.version_minor = 1;
                tf_conn_error(c, 408);
                /* linger: the client may still be sending, and a reset would
                 * destroy the 408 before it is read */
                tf_conn_finish(c, 1);
            } else {
                tf_conn_close(c);
            }
        }
        c = next;
    }
}

static void tf_worker_start_drain(tf_worker *w) {
    if (w->draining)
        return;
    w->draining = 1;
    if (tf_sb_me)
        __atomic_store_n(&tf_sb_me->state, TF_W_DRAINING, __ATOMIC_RELEASE);
    tf_listener_arm(w, 0);
    if (w->listen_fd >= 0) {
        /* Connections already in the listen queue were promised an answer:
         * take them before letting go of the listener (on a full stop the
         * primary first keeps new ones out of the queue). Served like the
         * rest, with Connection: close. */
        while (w->conn_count < w->cfg->max_connections && tf_accept_some(w) > 0) {
        }
        close(w->listen_fd);
        w->listen_fd = -1;
    }
    /* Idle keep-alive connections have nothing in flight, but closing one at
     * once races with its client's next request, which then fails without
     * the client knowing whether it was processed. So each gets a short last
     * chance: a request arriving within TF_DRAIN_IDLE_SECONDS is answered with
     * Connection: close; the sweep closes the rest. A connection that has
     * not sent its first request yet was accepted for a client that is
     * sending one: it is served (with Connection: close) like any other. */
    for (tf_conn *c = w->conns; c; c = c->next) {
        if (c->served > 0 && c->in_len == 0 && !tf_conn_pending(c) && !c->lingering &&
            !c->close_after_write && c->deadline > w->now + TF_DRAIN_IDLE_SECONDS)
            c->deadline = w->now + TF_DRAIN_IDLE_SECONDS;
    }
}

static int tf_worker_setup_signals(tf_worker *w) {
    if (pipe2(w->signal_pipe, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    tf_sig_pipe_write = w->signal_pipe[1];
    tf_sig_drain = tf_sig_quit = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = tf_worker_on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    const int handled[] = {SIGTERM, SIGINT, SIGQUIT};
    for (size_t i = 0; i < sizeof(handled) / sizeof(handled[0]); i++)
        if (sigaction(handled[i], &sa, NULL) < 0)
            return -1;
    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGPIPE, &sa, NULL) < 0 || sigaction(SIGHUP, &sa, NULL) < 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TF_TAG_SIGNAL};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->signal_pipe[0], &ev) < 0)
        return -1;
    /* workers start from an empty mask: the primary's blocked set is its own */
    sigset_t none;
    sigemptyset(&none);
    return sigprocmask(SIG_SETMASK, &none, NULL);
}

static void tf_worker_drain_signal_pipe(tf_worker *w) {
    char buf[64];
    while (read(w->signal_pipe[0], buf, sizeof(buf)) > 0) {
    }
}

int tf_worker_run(const tf_worker_config *cfg, const tf_worker_callbacks *cb) {
    tf_worker w;
    memset(&w, 0, sizeof(w));
    w.cfg = cfg;
    w.cb = cb;
    w.listen_fd = cfg->listen_fd;
    w.signal_pipe[0] = w.signal_pipe[1] = -1;
    w.now = w.last_sweep = tf_monotonic();
    cpu_set_t cpus;
    w.cpus = sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
    /* sweep often enough that a timeout fires within a quarter of itself
     * (at most 1 s late, at least 10 ms between sweeps) */
    w.sweep_every = cfg->header_timeout;
    if (cfg->body_timeout < w.sweep_every)
        w.sweep_every = cfg->body_timeout;
    if (cfg->request_timeout < w.sweep_every)
        w.sweep_every = cfg->request_timeout;
    if (cfg->keepalive_timeout > 0 && cfg->keepalive_timeout < w.sweep_every)
        w.sweep_every = cfg->keepalive_timeout;
    w.sweep_every /= 4;
    if (!(w.sweep_every <= 1.0))
        w.sweep_every = 1.0;
    if (w.sweep_every < 0.01)
        w.sweep_every = 0.01;
    int status = 0;

    /* the accept loop must never block; the listener is shared, so this is
     * every worker's setting, which is what they all want */
    int fl = fcntl(w.listen_fd, F_GETFL);
    if (fl < 0 || fcntl(w.listen_fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        tf_log("worker %d (pid %d): listening socket: %s", cfg->worker_id, (int)getpid(),
               strerror(errno));
        return TF_EXIT_FATAL;
    }
    w.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w.epfd < 0 || tf_worker_setup_signals(&w) < 0 || tf_listener_arm(&w, 1) < 0) {
        tf_log("worker %d (pid %d): cannot start event loop: %s", cfg->worker_id, (int)getpid(),
               strerror(errno));
        status = TF_EXIT_FATAL;
        goto out;
    }

    if (tf_sb_me) {
        /* the loop runs from here on: ready, and the primary may retire the
         * worker this one replaces */
        tf_sb_me->heartbeat = w.now;
        __atomic_store_n(&tf_sb_me->state, TF_W_IDLE, __ATOMIC_RELEASE);
        tf_scoreboard_notify();
    }

    struct epoll_event events[TF_MAX_EVENTS];
    for (;;) {
        if (tf_sig_quit)
            break;
        if (tf_sig_drain)
            tf_worker_start_drain(&w);
        if (w.draining && w.conn_count == 0)
            break;
        int timeout_ms = (int)(w.sweep_every * 1000);
        if (!w.listening && !w.draining && w.accept_resume > 0 && timeout_ms > 100)
            timeout_ms = 100;
        if (w.balance_paused && !w.draining)
            timeout_ms = 20; /* the others' counts change without waking us */
        if (w.draining)
            timeout_ms = 20; /* idle connections' last chance ends soon */
        cb->release(cb->ctx);
        /* With more workers than cores the scheduler, not the server, decides
         * who runs: a worker ahead of the others' mean lets them go first. */
        int oversubscribed = tf_sb && tf_sb->workers > w.cpus; /* TTIN/TTOU change it */
        if (cfg->balance && oversubscribed && tf_scoreboard_ahead_of_mean(0.05))
            sched_yield();
        int n = epoll_wait(w.epfd, events, TF_MAX_EVENTS, timeout_ms);
        int wait_errno = errno;
        cb->acquire(cb->ctx);
        w.now = tf_monotonic();
        if (tf_sb_me)
            tf_sb_me->heartbeat = w.now;
        if (n < 0) {
            if (wait_errno == EINTR)
                continue;
            tf_log("worker %d (pid %d): epoll_wait: %s", cfg->worker_id, (int)getpid(),
                   strerror(wait_errno));
            status = 1;
            break;
        }
        int accepted = 0;
        for (int i = 0; i < n; i++) {
            uint64_t tag = events[i].data.u64;
            if (tag == TF_TAG_LISTENER) {
                if (!w.draining)
                    accepted += tf_accept_some(&w);
            } else if (tag == TF_TAG_SIGNAL) {
                tf_worker_drain_signal_pipe(&w);
            } else {
                tf_conn *c = events[i].data.ptr;
                /* only this event's own handling can close c, and epoll
                 * reports each fd at most once per batch */
                uint32_t ev = events[i].events;
                if (ev & EPOLLOUT)
                    tf_conn_on_writable(c);
                else if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
                    tf_conn_on_readable(c);
            }
        }
        if (accepted > 0 && cfg->balance && !w.draining)
            tf_listener_rotate(&w);
        if (!w.listening && !w.draining && w.conn_count < cfg->max_connections &&
            w.now >= w.accept_resume &&
            !(w.balance_paused && tf_scoreboard_over_share())) {
            w.accept_resume = 0;
            w.balance_paused = 0;
            if (tf_listener_arm(&w, 1) == 0)
                tf_accept_some(&w); /* a re-armed exclusive waiter misses what is queued */
        }
        tf_accesslog_tick(w.now);
        if (w.now - w.last_sweep >= w.sweep_every || w.draining) {
            w.last_sweep = w.now;
            tf_worker_sweep(&w);
        }
    }

out:
    while (w.conns)
        tf_conn_close(w.conns);
    if (w.listen_fd >= 0)
        close(w.listen_fd);
    if (w.epfd >= 0)
        close(w.epfd);
    tf_sig_pipe_write = -1;
    if (w.signal_pipe[0] >= 0)
        close(w.signal_pipe[0]);
    if (w.signal_pipe[1] >= 0)
        close(w.signal_pipe[1]);
    return status;
}
