/* body.c — a request body streamed to the application through a bounded window: read, decode, hand over, drain.
 *
 * While a body streams, c->in holds the head, then the window:
 *
 *   [0, head_len)   the head (the parsed request points into it)
 *   [rd, wr)        decoded body bytes the application has not taken yet
 *   [wr, in_len)    Content-Length: bytes past the body (pipelined); chunked:
 *                   nothing until the body ends, then the bytes past it
 *   [in_len, cap)   room for the next read
 *
 * c->in is never reallocated meanwhile (cap = head + TF_BODY_WINDOW), so a
 * runner thread may copy from it. One mutex guards rd, wr and the flags
 * against runners; the loop's read(2) happens outside it, into bytes no
 * runner looks at (the decoding of what it read, in place, inside).
 * Consumed bytes are reclaimed by moving the rest down (under the mutex)
 * when room runs short. A runner that needs the loop (a 100
 * Continue to send, reading to resume after a full window) queues the body
 * and writes an eventfd the loop waits on (TF_TAG_BODY).
 */
#define _GNU_SOURCE
#include "worker_internal.h"
#include "clock.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

struct tf_body {
    tf_conn *conn;
    char *buf;           /* c->in, fixed while the body streams */
    size_t rd, wr;       /* unread decoded bytes: buf[rd, wr) */
    uint64_t left;       /* Content-Length: body bytes not received yet */
    uint64_t total;      /* decoded bytes received (chunked: the limit) */
    uint64_t drained;    /* bytes dropped after the request was answered */
    double last_arrival; /* tf_clock_precise() when bytes last arrived */
    int chunked;
    int done;            /* the body's last byte arrived */
    int err;             /* errno for readers, 0 while healthy */
    int continue_owed;   /* "100 Continue" to send at the first read */
    int deferred;        /* the request is with a runner or an event loop */
    int paused;          /* the window is full: the loop stopped reading */
    int async_armed;     /* cb->on_body is owed (tf_body_take said TF_BODY_AGAIN) */
    int served;          /* the request was answered: the rest is drained */
    int wake_queued;
    tf_body *wake_next;
    pthread_cond_t cond; /* a runner waits here for bytes */
};

static pthread_mutex_t tf_body_lock = PTHREAD_MUTEX_INITIALIZER;
static tf_body *tf_body_wakes;  /* bodies a runner needs the loop for */
static int tf_body_wake_fd = -1; /* eventfd: tf_body_wakes is not empty */
static int tf_body_wake_epfd = -1;

/* ------------------------------------------------------------ the window */

/* Moves the unread bytes (and what follows) down to the head's end. Lock held. */
static void tf_body_compact(tf_conn *c) {
    tf_body *b = c->body;
    size_t base = c->head_len;
    if (b->rd == base)
        return;
    size_t keep = c->in_len - b->rd;
    memmove(c->in + base, c->in + b->rd, keep);
    b->wr -= b->rd - base;
    c->in_len = base + keep;
    b->rd = base;
}

/* Room to read into, reclaiming consumed bytes when it runs short. Lock held. */
static size_t tf_body_room(tf_conn *c) {
    tf_body *b = c->body;
    if (b->rd > c->head_len && (b->rd == b->wr || c->in_cap - c->in_len < c->in_cap / 4))
        tf_body_compact(c);
    return c->in_cap - c->in_len;
}

/* Accounts for the bytes at c->in[wr, in_len) after a read: Content-Length
 * bytes are taken as they are, chunked ones decoded in place. Lock held. */
static void tf_body_absorb(tf_conn *c) {
    tf_body *b = c->body;
    size_t raw = c->in_len - b->wr;
    if (b->done || raw == 0)
        return;
    if (!b->chunked) {
        size_t take = raw < b->left ? raw : (size_t)b->left;
        b->wr += take;
        b->left -= take;
        b->total += take;
        b->done = b->left == 0;
        return;
    }
    ssize_t r = tf_chunked_decode(&c->rq->chunked, c->in + b->wr, &raw);
    if (r == TF_PARSE_ERROR) {
        b->err = EBADMSG;
        return;
    }
    size_t after = r >= 0 ? (size_t)r : 0; /* bytes past the body's end, right after it */
    b->wr += raw;
    b->total += raw;
    c->in_len = b->wr + after;
    b->done = r >= 0;
    int64_t limit = c->worker->cfg->max_body_size;
    if (limit > 0 && b->total > (uint64_t)limit)
        b->err = EMSGSIZE;
}

/* One read(2) into the window (loop thread). Returns what read returned
 * (-1 with errno EAGAIN: nothing now); a failure or an early EOF is recorded
 * in b->err for the readers. */
static ssize_t tf_body_fill(tf_conn *c) {
    tf_body *b = c->body;
    pthread_mutex_lock(&tf_body_lock);
    size_t room = b->done || b->err ? 0 : tf_body_room(c);
    pthread_mutex_unlock(&tf_body_lock);
    if (room == 0) {
        errno = EAGAIN;
        return -1;
    }
    ssize_t n;
    do
        n = read(c->fd, c->in + c->in_len, room);
    while (n < 0 && errno == EINTR);
    int saved = errno;
    pthread_mutex_lock(&tf_body_lock);
    if (n > 0) {
        c->in_len += (size_t)n;
        tf_body_absorb(c);
        b->last_arrival = tf_clock_precise();
        c->last_read = c->worker->now;
    } else if (n == 0) {
        c->peer_closed = 1;
        if (!b->done)
            b->err = ECONNRESET; /* the client closed mid-body */
    } else if (saved != EAGAIN && saved != EWOULDBLOCK) {
        b->err = ECONNRESET; /* ECONNRESET and friends */
    }
    if (b->err || b->wr > b->rd || b->done)
        pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&tf_body_lock);
    errno = saved;
    return n;
}

/* ---------------------------------------------------- the loop's side */

/* Sends the 100 Continue the client waits for before sending the body. */
static void tf_body_send_continue(tf_conn *c) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    struct iovec iov = {(void *)cont, sizeof(cont) - 1};
    int failed = tf_conn_send(c, &iov, 1) < 0;
    pthread_mutex_lock(&tf_body_lock); /* a runner may be looking */
    c->body->continue_owed = 0;
    if (failed && !c->body->err)
        c->body->err = ECONNRESET;
    pthread_mutex_unlock(&tf_body_lock);
}

int tf_body_start(tf_conn *c) {
    const tf_request *req = &c->rq->req;
    size_t want = c->head_len + TF_BODY_WINDOW;
    if (want < c->in_len)
        want = c->in_len;
    tf_body *b = calloc(1, sizeof(*b));
    if (!b)
        return -1;
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0) {
        free(b);
        return -1;
    }
    int cond_ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
                  pthread_cond_init(&b->cond, &attr) == 0;
    pthread_condattr_destroy(&attr);
    if (!cond_ok) {
        free(b);
        return -1;
    }
    if (want != c->in_cap && tf_conn_resize_in(c, want) < 0) {
        pthread_cond_destroy(&b->cond);
        free(b);
        return -1;
    }
    b->conn = c;
    b->buf = c->in;
    b->chunked = req->chunked;
    b->rd = c->head_len;
    /* chunked: what arrived is decoded already (serve.c), nothing raw follows */
    b->wr = req->chunked ? c->head_len + c->body_len : c->head_len;
    b->total = b->wr - b->rd;
    b->left = req->chunked ? 0 : (uint64_t)req->content_length;
    b->continue_owed = req->expect_continue > 0 && req->version_minor == 1 &&
                       c->in_len == c->head_len;
    b->last_arrival = tf_clock_precise();
    c->body = b;
    tf_body_absorb(c); /* Content-Length bytes already there */
    c->body_len = 0;
    return 0;
}

int tf_body_wants_input(tf_conn *c) {
    tf_body *b = c->body;
    pthread_mutex_lock(&tf_body_lock);
    int want = !b->done && !b->err && !c->peer_closed && tf_body_room(c) > 0;
    b->paused = !want && !b->done && !b->err;
    pthread_mutex_unlock(&tf_body_lock);
    return want;
}

/* Turns reading on or off as the window and the body's state ask. Returns -1
 * when epoll refused (the caller closes). */
static int tf_body_arm(tf_conn *c) {
    uint32_t events = c->registered & ~(uint32_t)EPOLLIN;
    if (tf_body_wants_input(c))
        events |= EPOLLIN;
    if (tf_conn_pending(c))
        events |= EPOLLOUT;
    return tf_conn_set_events(c, events);
}

/* Calls cb->on_body when an asynchronous reader waits and has news. */
static void tf_body_notify_async(tf_conn *c) {
    tf_body *b = c->body;
    const tf_worker_callbacks *cb = c->worker->cb;
    if (!b->async_armed || !(b->wr > b->rd || b->done || b->err))
        return;
    b->async_armed = 0;
    if (cb->on_body && c->job)
        cb->on_body(cb->ctx, c->job);
}

void tf_body_on_readable(tf_conn *c, uint32_t events) {
    tf_body *b = c->body;
    ssize_t n = tf_body_fill(c);
    if (n <= 0 && (events & (EPOLLHUP | EPOLLERR))) {
        pthread_mutex_lock(&tf_body_lock);
        if (!b->done && !b->err)
            b->err = ECONNRESET;
        pthread_mutex_unlock(&tf_body_lock);
        tf_conn_close(c); /* gone both ways: nothing more to read or write */
        return;
    }
    if (!c->job) { /* answered: draining, or a pulled response goes on */
        if (b->err) {
            tf_conn_close(c);
            return;
        }
        tf_conn_process_input(c);
        return;
    }
    tf_body_notify_async(c);
    if (tf_body_arm(c) < 0)
        tf_conn_close(c);
}

void tf_body_set_deferred(tf_conn *c, int deferred) {
    pthread_mutex_lock(&tf_body_lock);
    c->body->deferred = deferred;
    pthread_mutex_unlock(&tf_body_lock);
}

void tf_body_served(tf_conn *c) {
    c->body->served = 1;
    c->body->async_armed = 0;
}

int tf_body_may_keep(const tf_conn *c) {
    const tf_body *b = c->body;
    if (b->err || b->continue_owed)
        return 0; /* a client still waiting for the 100 may never send the body */
    if (b->done)
        return 1;
    return !b->chunked && b->left <= TF_BODY_DRAIN_MAX;
}

int tf_body_finish(tf_conn *c) {
    tf_body *b = c->body;
    if (b->err || b->continue_owed)
        return -1;
    b->drained += b->wr - b->rd;
    b->rd = b->wr; /* what the application left unread */
    if (!b->done) {
        if (b->chunked ? b->drained > TF_BODY_DRAIN_MAX : b->left > TF_BODY_DRAIN_MAX)
            return -1;
        return 0; /* the rest arrives through tf_body_on_readable */
    }
    size_t rest = c->in_len - b->wr; /* the next request's bytes */
    memmove(c->in, c->in + b->wr, rest);
    c->in_len = rest;
    tf_body_free(c);
    c->head_len = c->body_len = c->parsed_len = 0;
    c->idle = rest == 0; /* the keep-alive timer, or the next request's clock */
    c->req_start = c->worker->now;
    if (rest <= TF_IN_INITIAL)
        (void)tf_conn_resize_in(c, TF_IN_INITIAL); /* a failed shrink keeps the big one */
    return 1;
}

void tf_body_gone(tf_conn *c) {
    tf_body *b = c->body;
    pthread_mutex_lock(&tf_body_lock);
    if (!b->err && !(b->done && b->wr == b->rd))
        b->err = ECONNRESET;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&tf_body_lock);
    if (b->async_armed) {
        b->async_armed = 0;
        const tf_worker_callbacks *cb = c->worker->cb;
        if (cb->on_body && c->job)
            cb->on_body(cb->ctx, c->job);
    }
}

void tf_body_free(tf_conn *c) {
    tf_body *b = c->body;
    if (!b)
        return;
    pthread_mutex_lock(&tf_body_lock);
    if (b->wake_queued) {
        tf_body **p = &tf_body_wakes;
        while (*p && *p != b)
            p = &(*p)->wake_next;
        if (*p)
            *p = b->wake_next;
    }
    pthread_mutex_unlock(&tf_body_lock);
    pthread_cond_destroy(&b->cond);
    free(b);
    c->body = NULL;
}

/* ------------------------------------------------- runner -> loop wake-ups */

/* The eventfd runners wake the loop with, registered on w's epoll set. */
static int tf_body_wake_setup(tf_worker *w) {
    if (tf_body_wake_fd >= 0 && tf_body_wake_epfd == w->epfd)
        return 0;
    if (tf_body_wake_fd < 0) {
        int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (fd < 0)
            return -1;
        pthread_mutex_lock(&tf_body_lock);
        tf_body_wake_fd = fd;
        pthread_mutex_unlock(&tf_body_lock);
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TF_TAG_BODY};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, tf_body_wake_fd, &ev) < 0)
        return -1;
    tf_body_wake_epfd = w->epfd;
    return 0;
}

/* Queues b for the loop and wakes it. Lock held. */
static void tf_body_queue_wake(tf_body *b) {
    if (b->wake_queued)
        return;
    b->wake_queued = 1;
    b->wake_next = tf_body_wakes;
    tf_body_wakes = b;
    if (tf_body_wake_fd >= 0) {
        uint64_t one = 1;
        ssize_t r;
        do
            r = write(tf_body_wake_fd, &one, sizeof(one));
        while (r < 0 && errno == EINTR);
        (void)r; /* EAGAIN: the counter is saturated, the loop wakes anyway */
    }
}

void tf_body_on_wake(tf_worker *w) {
    (void)w;
    uint64_t count;
    ssize_t r;
    do
        r = read(tf_body_wake_fd, &count, sizeof(count));
    while (r < 0 && errno == EINTR);
    (void)r; /* EAGAIN: an earlier wake-up took these */
    for (;;) {
        /* one at a time: handling one may free another (tf_body_free unlinks it) */
        pthread_mutex_lock(&tf_body_lock);
        tf_body *b = tf_body_wakes;
        if (b) {
            tf_body_wakes = b->wake_next;
            b->wake_queued = 0;
        }
        int act = b && b->deferred && !b->conn->orphaned;
        pthread_mutex_unlock(&tf_body_lock);
        if (!b)
            break;
        if (!act)
            continue; /* answered meanwhile: the loop reads what is left itself */
        tf_conn *c = b->conn;
        if (b->continue_owed)
            tf_body_send_continue(c);
        if (tf_body_arm(c) < 0)
            tf_conn_close(c); /* deferred: the body stays for its runner */
    }
}

void tf_body_worker_end(void) {
    pthread_mutex_lock(&tf_body_lock);
    if (tf_body_wake_fd >= 0)
        close(tf_body_wake_fd);
    tf_body_wake_fd = tf_body_wake_epfd = -1;
    tf_body_wakes = NULL;
    pthread_mutex_unlock(&tf_body_lock);
}

/* --------------------------------------------------------- the readers */

tf_body *tf_conn_body(tf_conn *c) { return c->body; }

/* What tf_body_take answers from the state alone; TF_BODY_AGAIN when it must wait. Lock held. */
static ssize_t tf_body_state(const tf_body *b) {
    if (b->wr > b->rd)
        return (ssize_t)(b->wr - b->rd);
    if (b->err) {
        errno = b->err;
        return -1;
    }
    return b->done ? 0 : TF_BODY_AGAIN;
}

ssize_t tf_body_take(tf_body *b, const char **data) {
    tf_conn *c = b->conn;
    if (b->continue_owed && !c->orphaned)
        tf_body_send_continue(c);
    ssize_t n = tf_body_state(b);
    *data = b->buf + b->rd;
    if (n == TF_BODY_AGAIN && !c->orphaned) {
        b->async_armed = 1;
        if (tf_body_arm(c) < 0) {
            b->err = ECONNRESET;
            errno = ECONNRESET;
            return -1; /* the connection closes when the request ends */
        }
    }
    return n;
}

void tf_body_consume(tf_body *b, size_t n) {
    tf_conn *c = b->conn;
    pthread_mutex_lock(&tf_body_lock);
    if (n > b->wr - b->rd)
        n = b->wr - b->rd;
    b->rd += n;
    int was_paused = b->paused;
    pthread_mutex_unlock(&tf_body_lock);
    /* inline, the loop re-arms after the handler; deferred, reading resumes now */
    if (was_paused && b->deferred && !c->orphaned && tf_body_arm(c) < 0)
        b->err = ECONNRESET;
}

/* Milliseconds left of body_timeout since the last arrival (0: past it). */
static int tf_body_ms_left(const tf_body *b) {
    double left = b->last_arrival + b->conn->worker->cfg->body_timeout - tf_clock_precise();
    if (left <= 0)
        return 0;
    int ms = tf_clock_ms(left);
    return ms > 0 ? ms : 1;
}

int tf_body_wait(tf_body *b) {
    tf_conn *c = b->conn;
    const tf_worker_callbacks *cb = c->worker->cb;
    if (b->continue_owed)
        tf_body_send_continue(c);
    while (tf_body_state(b) == TF_BODY_AGAIN) {
        int ms = tf_body_ms_left(b);
        if (ms == 0) {
            b->err = ETIMEDOUT;
            break;
        }
        /* a 100 Continue the socket did not take yet must reach the client */
        struct pollfd p = {.fd = c->fd, .events = POLLIN | (tf_conn_pending(c) ? POLLOUT : 0)};
        cb->release(cb->ctx);
        int n = poll(&p, 1, ms);
        int saved = errno;
        cb->acquire(cb->ctx);
        c->worker->now = tf_clock_coarse();
        if (n < 0) {
            if (saved == EINTR && !tf_worker_sig_quit) {
                errno = EINTR; /* the embedder checks its signals, then calls again */
                return -1;
            }
            /* SIGQUIT (an immediate stop) ends the wait like a failure */
            b->err = ECONNRESET;
            break;
        }
        if (n > 0 && (p.revents & POLLOUT) && tf_conn_flush(c) < 0)
            b->err = ECONNRESET;
        if (n > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)))
            (void)tf_body_fill(c); /* a failure is in b->err */
    }
    if (b->err && b->wr == b->rd) {
        errno = b->err;
        return -1;
    }
    return 0;
}

/* A runner's wait (2): for bytes, the end or an error, at most body_timeout. */
static ssize_t tf_body_read_deferred(tf_body *b, char *buf, size_t cap) {
    struct timespec deadline;
    if (clock_gettime(CLOCK_MONOTONIC, &deadline) < 0)
        return -1; /* errno set; cannot happen with CLOCK_MONOTONIC */
    double timeout = b->conn->worker->cfg->body_timeout;
    deadline.tv_sec += (time_t)timeout;
    deadline.tv_nsec += (long)((timeout - (double)(time_t)timeout) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&tf_body_lock);
    ssize_t n;
    while ((n = tf_body_state(b)) == TF_BODY_AGAIN) {
        if (b->continue_owed || b->paused)
            tf_body_queue_wake(b); /* the loop sends the 100 / resumes reading */
        int rc = pthread_cond_timedwait(&b->cond, &tf_body_lock, &deadline);
        /* another error (EINVAL) cannot wait either: it counts as the timeout */
        if (rc != 0 && tf_body_state(b) == TF_BODY_AGAIN) {
            b->err = ETIMEDOUT;
            /* the loop stops reading at its next look; the connection
             * closes after the response */
        }
    }
    int saved = errno;
    if (n > 0) {
        if ((size_t)n > cap)
            n = (ssize_t)cap;
        memcpy(buf, b->buf + b->rd, (size_t)n);
        b->rd += (size_t)n;
        if (b->paused)
            tf_body_queue_wake(b); /* room again: the loop resumes reading */
    }
    pthread_mutex_unlock(&tf_body_lock);
    errno = saved;
    return n;
}

ssize_t tf_body_read(tf_body *b, char *buf, size_t cap) {
    if (b->deferred)
        return tf_body_read_deferred(b, buf, cap);
    if (tf_body_wait(b) < 0)
        return -1;
    const char *data;
    ssize_t n = tf_body_take(b, &data);
    if (n <= 0)
        return n;
    if ((size_t)n > cap)
        n = (ssize_t)cap;
    memcpy(buf, data, (size_t)n);
    tf_body_consume(b, (size_t)n);
    return n;
}

/* Called by tf_conn_defer for a streamed body: from now on runners may read.
 * Returns -1 when the wake-up channel cannot be set up. */
int tf_body_defer(tf_conn *c) {
    if (tf_body_wake_setup(c->worker) < 0)
        return -1;
    tf_body_set_deferred(c, 1);
    return 0;
}
