/* worker_internal.h — what the worker's files share: types, cross-file calls, hot-path inlines.
 *
 * The worker is split by concern, each file readable alone:
 *   accept.c   accepting on the shared socket, fair balancing across workers
 *   conn.c     a connection's buffers and I/O: open, write, flush, close, linger
 *   serve.c    turning input into answered requests: read, parse, body, dispatch
 *   body.c     a large request body streamed to the application through a window
 *   dispatch.c routing a request: health and readiness in C, metrics, the app
 *   respond.c  response framing (whole, streamed, chunked, sendfile): tf_conn_respond*
 *   worker.c   the loop: signals, timers, drain
 *   runq.c     requests in flight: the run queue to runner threads, completions back
 *   ws_conn.c  a connection in WebSocket mode after its upgrade (frames in and out)
 * Data flows one way: worker.c -> accept.c / serve.c -> dispatch.c -> the
 * embedder -> respond.c -> conn.c, and respond.c -> observe.c, accesslog.c (leaves).
 */
#ifndef TF_WORKER_INTERNAL_H
#define TF_WORKER_INTERNAL_H

#include "tailfast.h"
#include "http.h"
#include "scoreboard.h"

#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#define TF_IN_INITIAL 8192
#define TF_IN_CAP_REQUESTS 32 /* a worker buffers this many of the largest requests at once */
#define TF_OUT_HIGH_WATER (256 * 1024) /* stop reading while this much waits */
#define TF_LINGER_SECONDS 2.0
#define TF_PULL_LOW_WATER (64 * 1024) /* a pulled body is asked for more below this */
#define TF_PULL_ROUNDS 16 /* chunks per connection per wake-up: the others' turn next */
#define TF_ACCEPT_RETRY_SECONDS 1.0 /* after an accept errno outside the handled set */
#define TF_POOL_MAX 64 /* free input buffers and request states a worker keeps for reuse */

/* How the body of a streamed response is framed (tf_conn.streaming). */
enum { TF_STREAM_NONE, TF_STREAM_DISCARD, TF_STREAM_LENGTH, TF_STREAM_CHUNKED, TF_STREAM_CLOSE };

/* Tells a worker waiting for its share of connections to take the queue
 * (accept.c); it only wakes the loop. Ignored by default, so one sent to a
 * process that has not installed the handler yet does nothing. */
#define TF_ACCEPT_SIGNAL SIGURG

/* epoll data of the descriptors that are not connections (those carry a tf_conn *);
 * EXTERNAL: another event loop's descriptor (tf_worker_watch), only wakes the wait. */
enum { TF_TAG_LISTENER = 1, TF_TAG_SIGNAL = 2, TF_TAG_JOBS = 3, TF_TAG_EXTERNAL = 4 };

typedef struct tf_worker tf_worker;

/* The state of the request being read and answered: taken when input
 * arrives, given back when the connection goes idle (an idle connection
 * holds neither it nor an input buffer). */
typedef struct {
    tf_request req;
    tf_chunked_decoder chunked;
} tf_req_state;

struct tf_conn {
    tf_worker *worker;
    int fd;
    uint32_t registered; /* events currently registered with epoll */

    char *in;          /* NULL while idle: given back between requests */
    size_t in_len, in_cap;
    size_t head_len; /* > 0 once the current request's head is parsed */
    size_t parsed_len; /* in_len at the last incomplete parse of the head */
    size_t body_len; /* decoded body bytes after the head (chunked) */
    tf_req_state *rq; /* non-NULL whenever in is (and until freed) */
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
    double dispatched;     /* tf_clock_precise() when the current request was dispatched */
    double deadline;       /* monotonic seconds; 0 = none */
    double write_since;    /* when pending output last moved or began to wait (tf_conn_out_moved) */
    double req_start;      /* when the current request began (accept or first byte) */
    double last_read;      /* when bytes last arrived */
    int idle;              /* between requests: the keep-alive timer runs */
    tf_job *job;           /* the request in flight (tf_conn_defer), else NULL */
    double job_started;    /* coarse clock when it was deferred */
    int job_overrun;       /* cb->on_overrun was called for it */
    int orphaned;          /* closed while in flight: freed when the job completes */
    tf_conn *job_prev, *job_next; /* tf_worker.jobs: in flight, oldest first */
    void *pull;            /* a streamed body's source (tf_conn_pull), else NULL */
    tf_body *body;         /* the request body being streamed (body.c), else NULL */
    tf_ws_conn *ws;        /* WebSocket mode after the upgrade (ws_conn.c), else NULL */

    struct sockaddr_storage peer;
    tf_conn *prev, *next;
};

struct tf_worker {
    const tf_worker_config *cfg;
    const tf_worker_callbacks *cb;
    int epfd;
    int listen_fd;
    int listening;     /* listener registered with epoll */
    double accept_resume; /* when paused after EMFILE or an accept error: resume at this time */
    int accept_errno;     /* the last unexpected accept errno, logged once (0: none) */
    int signal_pipe[2];
    int draining;
    int drain_accepts; /* draining a sealed listen queue: accept until it is empty */
    double drain_started;
    int balance_paused; /* stepped out of accepting: above the fair share */
    int cpus;           /* CPUs this process may use */
    int conn_count;
    size_t in_extra;     /* input buffer bytes beyond each connection's first TF_IN_INITIAL */
    size_t in_extra_max; /* the cap on in_extra (see tf_worker_in_cap) */
    double in_cap_logged; /* when the cap was last logged */
    tf_conn *conns; /* all connections, most recently accepted first */
    double now;         /* tf_clock_coarse() at the last wake-up */
    double last_sweep;
    double sweep_every; /* seconds between timeout sweeps */
    int jobs_fd;        /* eventfd: completed jobs wait (runq.c) */
    int in_flight;      /* connections whose request is deferred */
    tf_conn *jobs, *jobs_tail; /* those connections (orphans too), oldest first */
    /* idle connections' buffers, kept for the next request: reuse is a pop */
    char *in_pool[TF_POOL_MAX]; /* each TF_IN_INITIAL bytes */
    int in_pooled;
    tf_req_state *rq_pool[TF_POOL_MAX];
    int rq_pooled;
};

#pragma GCC visibility push(hidden) /* direct calls inside the extension, no PLT */

/* Set by the signal handlers (worker.c); the loop acts on them. A stop that
 * arrives while a handler runs already counts for that response. */
extern volatile sig_atomic_t tf_worker_sig_drain, tf_worker_sig_quit;

/* accept.c. tf_listener_arm: in or out of accepting (out: not waiting for a
 * share either), published in the scoreboard. tf_accept_resume, after each
 * wake-up: takes the listener back once below the cap, past an EMFILE pause,
 * and back at the fair share (or with no one else to take the queue). */
int tf_listener_arm(tf_worker *w, int on);
int tf_accept_some(tf_worker *w);
void tf_listener_rotate(tf_worker *w);
void tf_accept_resume(tf_worker *w);
/* Connections waiting in the listen queue (0 when unknown: not TCP). */
int tf_listener_queued(const tf_worker *w);

/* conn.c */
tf_conn *tf_conn_open(tf_worker *w, int fd, const struct sockaddr_storage *peer);
void tf_conn_close(tf_conn *c); /* in flight: unlinked and shut now, freed on completion */
void tf_conn_free(tf_conn *c);
int tf_conn_resize_in(tf_conn *c, size_t want);
int tf_conn_take_state(tf_conn *c);
int tf_conn_take_in(tf_conn *c);
void tf_conn_release_in(tf_conn *c);
void tf_conn_release_idle(tf_conn *c);
void tf_worker_pools_free(tf_worker *w);
int tf_conn_append_out(tf_conn *c, const char *data, size_t len);
int tf_conn_flush_out(tf_conn *c);
int tf_conn_send(tf_conn *c, struct iovec *iov, int iovcnt);
void tf_conn_finish(tf_conn *c, int linger);
void tf_conn_out_moved(tf_conn *c); /* output moved or began to wait: its stall clock restarts */

/* serve.c */
void tf_conn_on_readable(tf_conn *c, uint32_t events);
void tf_conn_on_writable(tf_conn *c);
void tf_conn_complete(tf_conn *c, tf_job *job); /* applies a deferred request's answer */
void tf_conn_process_input(tf_conn *c); /* answers what c->in holds (body.c, after input) */
void tf_conn_discard_input(tf_conn *c); /* a lingering connection: drop input until EOF */

/* runq.c: the loop's side. tf_jobs_open returns the eventfd that becomes
 * readable when jobs completed (-1 with errno); tf_jobs_take_done takes them all, oldest first. */
int tf_jobs_open(void);
void tf_jobs_close(void);
tf_job *tf_jobs_take_done(void);

/* body.c: a request body streamed to the application (see tailfast.h).
 * tf_body_start: the head in c->in is dispatched before its body is whole
 * (0, or -1 without memory). tf_body_on_readable: input for it. The rest is
 * asked by serve.c/conn.c/respond.c at the request's turns. */
enum { TF_TAG_BODY = 5 }; /* epoll data of body.c's eventfd (runners wake the loop) */
int tf_body_start(tf_conn *c);
void tf_body_on_readable(tf_conn *c, uint32_t events);
int tf_body_wants_input(tf_conn *c);
int tf_body_may_keep(const tf_conn *c);
int tf_body_defer(tf_conn *c);
void tf_body_set_deferred(tf_conn *c, int deferred);
void tf_body_served(tf_conn *c);
int tf_body_finish(tf_conn *c);
void tf_body_gone(tf_conn *c);
void tf_body_free(tf_conn *c);
void tf_body_on_wake(tf_worker *w);
void tf_body_worker_end(void);

/* ws_conn.c: a connection in WebSocket mode (c->ws). tf_ws_process parses
 * what c->in holds (-1: c was closed); tf_ws_drain sends close 1001;
 * tf_ws_gone (from tf_conn_close) reports the end if not yet and frees c->ws. */
void tf_ws_on_readable(tf_conn *c, uint32_t events);
void tf_ws_on_writable(tf_conn *c);
int tf_ws_process(tf_conn *c);
void tf_ws_drain(tf_conn *c);
void tf_ws_gone(tf_conn *c);
void tf_ws_tick(tf_conn *c); /* the sweep: a ping after silence, 1011 without a pong */

/* dispatch.c: routes a complete request: the health, readiness and metrics
 * paths of cfg, else cb->on_request. stopping: the worker is draining.
 * Returns what the callback returns (0, or -1 to close). */
int tf_dispatch(const tf_worker_config *cfg, const tf_worker_callbacks *cb, tf_conn *conn,
                const tf_request *req, const char *body, size_t body_len, int stopping);

/* respond.c: tf_conn_error answers status with a short text body, then
 * closes. tf_conn_observe counts a response about to be sent (whoever sees
 * the answer sees it counted) and logs it (body_bytes: what its body will
 * carry); the response functions call it, and ws_conn.c for the 101. */
void tf_conn_error(tf_conn *c, int status);
void tf_conn_observe(tf_conn *c, int status, uint64_t body_bytes);

#pragma GCC visibility pop

/* ------------------------------------------------------ hot-path inlines */

/* Input buffer bytes beyond a connection's first TF_IN_INITIAL: what the
 * worker-wide cap (w->in_extra_max) counts. */
static inline size_t tf_in_extra(size_t cap) {
    return cap > TF_IN_INITIAL ? cap - TF_IN_INITIAL : 0;
}

static inline size_t tf_conn_out_pending(const tf_conn *c) { return c->out_len - c->out_off; }

/* Everything still owed to the peer: buffered bytes and the file behind them. */
static inline size_t tf_conn_pending(const tf_conn *c) {
    return tf_conn_out_pending(c) + (size_t)c->file_left;
}

/* Whether c's pending output has not moved for request_timeout (a reader
 * that stalled the answer). */
static inline int tf_conn_write_stalled(const tf_conn *c) {
    const tf_worker *w = c->worker;
    return tf_conn_pending(c) > 0 && w->now >= c->write_since + w->cfg->request_timeout;
}

/* Writes what is pending. Returns 0 (all or some written), -1 on a dead peer.
 * Inline for the common case, nothing pending after a response. */
static inline int tf_conn_flush(tf_conn *c) {
    if (tf_conn_out_pending(c) == 0 && c->file_left == 0) {
        c->out_off = c->out_len = 0;
        return 0;
    }
    return tf_conn_flush_out(c);
}

static inline int tf_conn_set_events(tf_conn *c, uint32_t events) {
    if (c->registered == events)
        return 0;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(c->worker->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        return -1;
    c->registered = events;
    return 0;
}

/* The worker is stopping: draining, or told to while a handler ran. */
static inline int tf_worker_stopping(const tf_worker *w) {
    return w->draining || tf_worker_sig_drain;
}

#endif
