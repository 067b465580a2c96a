/* tailfast.h — the public API of tailfast's C core: what tailfast/_tf.pxd declares.
 *
 * Parts, none of which knows about Python:
 *   - the HTTP/1.1 request parser (http.c): no allocation, caller-owned
 *     buffers, returns consumed / TF_PARSE_ERROR / TF_PARSE_INCOMPLETE;
 *   - a worker's epoll loop (worker.c and its parts), which calls back into
 *     the embedder for each complete request;
 *   - the primary's supervisor (supervisor.c): fork loop, signalfd, respawn;
 *   - the scoreboard layout, the access log, the load generator.
 * _core.pyx is the only place where these meet Python. What only C uses is
 * in the internal headers (http.h, log.h, clock.h, outbuf.h, observe.h,
 * accesslog.h, worker_internal.h).
 */
#ifndef TAILFAST_H
#define TAILFAST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <signal.h>
#include <time.h>

/* ---------------------------------------------------------------- parser */

#define TF_MAX_HEADERS 100

#define TF_PARSE_ERROR (-1)
#define TF_PARSE_INCOMPLETE (-2)

typedef struct {
    const char *name;
    size_t name_len;
    const char *value; /* OWS trimmed */
    size_t value_len;
} tf_header;

typedef struct {
    const char *method;
    size_t method_len;
    const char *target; /* request-target as sent */
    size_t target_len;
    const char *path; /* target up to '?' (or '#') */
    size_t path_len;
    const char *query; /* after '?', without it; empty when absent */
    size_t query_len;
    int version_minor; /* HTTP/1.<version_minor>: 0 or 1 */
    size_t num_headers;
    tf_header headers[TF_MAX_HEADERS];
    int64_t content_length; /* -1 when there is no Content-Length */
    int chunked;            /* Transfer-Encoding: chunked */
    int keep_alive;         /* what the request asks for (version + Connection) */
    int expect_continue;    /* Expect: 100-continue */
    int is_head;            /* method is HEAD: the response carries no body */
} tf_request;

/* A response head as a client needs it (the load generator). */
typedef struct {
    int version_minor;      /* HTTP/1.<version_minor>: 0 or 1 */
    int status;             /* 100..599 */
    int64_t content_length; /* -1 when there is no Content-Length */
    int chunked;            /* the final transfer coding is chunked (it overrides a length) */
    int keep_alive;         /* the connection stays open (version + Connection) */
} tf_response_head;

/* Parses one response head (status line, fields, blank line) from buf[0..len),
 * with the request parser's grammar for fields (CRLF only, no obs-fold) and
 * its return values: the head's length, TF_PARSE_INCOMPLETE or
 * TF_PARSE_ERROR. No limits: the caller's buffer bounds the head. Whether a
 * body follows (1xx, 204, 304, HEAD) is the caller's to decide. */
ssize_t tf_parse_response_head(const char *buf, size_t len, tf_response_head *res);

/* Limits the parser enforces; the embedder sets every field (their defaults
 * live in tailfast/config.py, the one table of settings). */
typedef struct {
    size_t max_request_line; /* > this: 414 */
    size_t max_header_count; /* > this (and <= TF_MAX_HEADERS): 431 */
    size_t max_header_field; /* one "name: value" line longer than this: 431 */
} tf_limits;

/* Parses one request head from buf[0..len).
 * Returns the head's length in bytes (through the blank line) when complete,
 * TF_PARSE_INCOMPLETE when more bytes are needed, or TF_PARSE_ERROR with
 * *error_status set to the status to answer (400, 414, 431, 501, 505).
 * Pointers in *req point into buf. Never reads past buf + len. */
ssize_t tf_parse_request(const char *buf, size_t len, const tf_limits *limits,
                         tf_request *req, int *error_status);

/* ----------------------------------------------------------------- logging */

/* Python logging's numbers, so that --log-level maps one to one. */
enum { TF_LOG_DEBUG = 10, TF_LOG_INFO = 20, TF_LOG_WARNING = 30, TF_LOG_ERROR = 40 };

/* Messages below level are dropped from now on (default TF_LOG_INFO). Set it
 * in the primary before forking: the workers inherit it. */
void tf_log_set_level(int level);

/* Writes "tailfast: <message>\n" to stderr in one write(2), at TF_LOG_INFO. */
void tf_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ------------------------------------------------------------------ worker */

typedef struct tf_conn tf_conn;
typedef struct tf_ws_conn tf_ws_conn; /* a connection's WebSocket state (ws_conn.c) */

/* on_request's answer "later": the request is in flight (see tf_conn_defer). */
#define TF_DEFERRED 1

/* A request in flight. The embedder owns the memory (it may live inside its
 * own request object) and keeps it alive until on_complete has run. Threads
 * other than the loop only ever touch a job, never its connection. */
typedef struct tf_job {
    struct tf_job *next; /* queue link: the queues' own */
    int on_runner;       /* taken by a runner thread: the queues' own */
    tf_conn *conn;       /* set by tf_conn_defer; read by the loop only */
    void *data;          /* the embedder's */
} tf_job;

typedef struct {
    /* Around every blocking wait: lets the embedder release its lock (the GIL). */
    void (*release)(void *ctx);
    void (*acquire)(void *ctx);
    /* A request: its head, and its whole body (body, body_len) when that
     * arrived with it; body NULL when the body streams (tf_conn_body, see
     * "Request bodies"). The callback answers it with tf_conn_respond
     * (exactly once) and returns 0; -1 closes the connection. */
    int (*on_request)(void *ctx, tf_conn *conn, const tf_request *req,
                      const char *body, size_t body_len);
    void *ctx;
    /* A request for cfg->metrics_path: answered like on_request (NULL: the
     * path goes to on_request like any other). */
    int (*on_metrics)(void *ctx, tf_conn *conn);
    /* A deferred request's answer is ready (tf_job_done), on the loop with the
     * lock held. alive: answer it on job->conn like on_request would, and
     * return 0 (-1 closes); 0: the connection is gone, only release the job. */
    int (*on_complete)(void *ctx, tf_job *job, int alive);
    /* A deferred request ran past cfg->timeout (once per request, lock held):
     * the embedder interrupts whoever runs it. NULL: nothing to do. */
    void (*on_overrun)(void *ctx, tf_job *job);
    /* A streamed body's source (tf_conn_pull), called on the loop with the lock
     * held whenever the connection can take more. abort=0: write the next
     * chunk(s) with tf_conn_write_body (which then never waits) and return 1
     * for more, or end the answer with tf_conn_respond_end, release source
     * and return 0. abort=1: the connection is gone or stalled past the
     * request timeout: release source, write nothing. */
    int (*on_pull)(void *ctx, tf_conn *conn, void *source, int abort);
    /* A streamed request body that tf_body_take found empty (TF_BODY_AGAIN)
     * has news: bytes, its end, or an error (the connection may be gone).
     * Called once per TF_BODY_AGAIN, on the loop with the lock held, for a
     * deferred request only (NULL: never asked for). See "Request bodies". */
    void (*on_body)(void *ctx, tf_job *job);
    /* A WebSocket connection (tf_ws_conn_accept's handle), on the loop with
     * the lock held. TF_WS_MESSAGE: a whole message (code: its opcode, 1 text,
     * 2 binary; data valid during the call); return 1 when the embedder's
     * queue is full (no more reading until tf_ws_conn_resume), else 0.
     * TF_WS_WRITABLE: the output went below the low-water mark.
     * TF_WS_CLOSED (once, last): the connection ends, code the close code
     * (1006: no close frame), data the reason; handle is released. */
    int (*on_ws)(void *ctx, tf_conn *conn, void *handle, int kind, int code, const char *data,
                 size_t len);
} tf_worker_callbacks;

enum { TF_WS_MESSAGE = 1, TF_WS_WRITABLE = 2, TF_WS_CLOSED = 3 };

typedef struct {
    int listen_fd;
    int worker_id;
    int max_connections;       /* per worker; accepting pauses at the cap */
    int accepts_per_wakeup;    /* accept at most this many per wake-up (fairness) */
    double keepalive_timeout;  /* seconds an idle connection is kept */
    double header_timeout;     /* seconds to receive a head, from its first byte: 408 */
    double body_timeout;       /* longest pause between two reads of a body: 408 */
    double request_timeout;    /* seconds to receive a whole request: 408; also the
                                  longest a response write may stall */
    int64_t max_body_size;     /* 0: unlimited */
    int64_t ws_max_message_size; /* largest WebSocket message, all fragments (0: unlimited):
                                    tf_ws_parser_init's max_message (websocket.h) */
    double ws_ping_interval;   /* seconds of WebSocket silence before a ping; no pong
                                  within as long again: close 1011 (0: never) */
    tf_limits limits;
    uint64_t max_requests;     /* ask to be replaced after this many (0: never) */
    int balance;               /* 1: cap accepts by the fair share in the scoreboard */
    /* Paths answered without the application (NULL or "": off); see dispatch.c. */
    const char *health_path;  /* liveness: 200 while the loop runs */
    const char *ready_path;   /* readiness: 200, or 503 once the server is stopping */
    const char *metrics_path; /* handed to cb->on_metrics */
    int threads;              /* runner threads of the embedder (1: requests run inline) */
    double timeout;           /* seconds a deferred request may run: cb->on_overrun (0: none) */
} tf_worker_config;

/* Runs the accept/serve loop until SIGTERM/SIGINT (graceful: stop accepting,
 * finish what is in flight) or SIGQUIT (immediate). Returns the exit status. */
int tf_worker_run(const tf_worker_config *cfg, const tf_worker_callbacks *cb);

/* The same loop driven by another event loop (the ASGI runner's asyncio
 * loop), one per process. tf_worker_open sets it up as tf_worker_run would
 * and gives the epoll descriptor to watch for reading (returns 0, or an exit
 * status, logged). tf_worker_tick handles what is ready without waiting
 * (signals, accepts, requests, timeouts) and sets *next to the seconds
 * within which it wants to tick again without an event; it returns
 * 0 once the loop is over (stopped, or drained). tf_worker_close releases
 * everything and returns the exit status. The lock is held throughout. */
int tf_worker_open(const tf_worker_config *cfg, const tf_worker_callbacks *cb, int *fd);
int tf_worker_tick(double *next);
int tf_worker_close(void);
/* The reverse arrangement (bench/asgi.py compares both): the C loop waits, up
 * to wait seconds (its own deadlines permitting, the lock released), with fd
 * (the other loop's descriptor, registered by tf_worker_watch) in its epoll
 * set; the embedder runs its other loop after each pass. */
int tf_worker_tick_wait(double wait, double *next);
int tf_worker_watch(int fd);
/* On the loop thread, with the lock held: completes job now (cb->on_complete,
 * then the connection goes on) instead of through tf_job_done's queue. */
void tf_job_finish(tf_job *job);
/* For an answer written from outside a dispatch (a deferred request's, on
 * the loop thread): bytes still queued for the peer; whether the peer is gone
 * (the connection was closed while in flight); tf_conn_watch_output asks for
 * EPOLLOUT while bytes are queued (-1: the connection was closed). A
 * deferred request whose connection has a pull source (tf_conn_pull) is
 * told when its peer goes away: cb->on_pull(abort=1); below the low-water
 * mark it gets cb->on_pull(abort=0), and must then write nothing. */
size_t tf_conn_queued(const tf_conn *conn);
/* WebSocket mode (ws_conn.c), on the loop thread. tf_ws_conn_accept, while
 * the upgrade request is deferred (before tf_job_finish): writes the 101
 * (Sec-WebSocket-Accept and headers, e.g. the chosen subprotocol) and turns
 * the connection to WebSocket mode; handle is given to cb->on_ws. 0, or -1.
 * tf_ws_conn_send: one whole text (1) or binary (2) frame, queued when the
 * socket does not take it (see tf_conn_queued); -1 when closed.
 * tf_ws_conn_close: a close frame (code, reason), then the connection ends
 * (cb->on_ws TF_WS_CLOSED with that code). tf_ws_conn_resume: reading again
 * after on_ws returned 1. */
int tf_ws_conn_accept(tf_conn *c, const tf_header *headers, size_t num_headers, void *handle);
int tf_ws_conn_send(tf_conn *c, int opcode, const char *data, size_t len);
int tf_ws_conn_close(tf_conn *c, int code, const char *reason, size_t len);
void tf_ws_conn_resume(tf_conn *c);
int tf_conn_gone(const tf_conn *conn);
int tf_conn_watch_output(tf_conn *conn);

/* Requests in flight (runq.c). From on_request: tf_conn_defer ties job to
 * the connection, which is parked (input kept in place, no further request
 * read or processed) until the job completes; on_request then returns
 * TF_DEFERRED. The answer comes back from any thread with tf_job_done: the
 * loop wakes and calls cb->on_complete. A run queue hands jobs to runner
 * threads: tf_runq_push (loop), tf_runq_take (a runner, without the lock;
 * blocks, NULL once tf_runq_stop ran). Counts are kept in the scoreboard. */
void tf_conn_defer(tf_conn *conn, tf_job *job);
void tf_conn_pull(tf_conn *conn, void *source);
void tf_runq_push(tf_job *job);
tf_job *tf_runq_take(void);
void tf_job_done(tf_job *job);
void tf_runq_stop(void);
/* A runner's one call between two requests (one lock release, not two):
 * tf_job_done(done) when done is not NULL, then tf_runq_take(). */
tf_job *tf_runq_next(tf_job *done);
/* The same without blocking, for a runner that holds the embedder's lock (no
 * thread waits for that lock while holding the queue's): the next job, with
 * done handed back; or NULL when no job is queued, done NOT handed back: the
 * runner then releases its lock and calls tf_runq_next(done), so the loop it
 * wakes does not wait for that lock. */
tf_job *tf_runq_poll(tf_job *done);
/* The loop, once per batch with the embedder's lock released: wakes sleeping
 * runners for the jobs pushed since (tf_runq_push itself wakes none). */
void tf_runq_wake(void);

/* Answers the connection's current request: head built in C, then head and
 * body written with one writev where the socket takes it; the rest waits for
 * EPOLLOUT. close_after forces "Connection: close". Returns 0, or -1 when the
 * head does not fit (the caller may answer 500 instead). */
int tf_conn_respond(tf_conn *conn, int status, const tf_header *headers,
                    size_t num_headers, const char *body, size_t body_len,
                    int close_after);

/* Streaming answers. After tf_conn_respond_start, a body is either written
 * at once (tf_conn_write_body: while more than a small buffer is queued the
 * call waits for this one connection with poll(2), at most request_timeout,
 * the lock released), or pulled by the loop: tf_conn_pull hands it a source,
 * and the loop calls cb->on_pull whenever the connection's output is below
 * a low-water mark, serving every other connection meanwhile. A pulled body
 * never blocks the loop; a reader stalled past request_timeout is dropped
 * (cb->on_pull with abort=1).
 *
 * tf_conn_respond_start queues the head. The body is framed by
 * content_length when >= 0 (never more bytes than announced), else chunked on
 * HTTP/1.1, else delimited by closing the connection (HTTP/1.0). HEAD and
 * 1xx/204/304 answers discard the body. Returns 0, or -1 when the head does
 * not fit. */
int tf_conn_respond_start(tf_conn *conn, int status, const tf_header *headers,
                          size_t num_headers, int64_t content_length, int close_after);

/* Writes body bytes (chunk framing done here), blocking while more than a
 * small buffer is queued, except from cb->on_pull (a pulled body never waits). Returns 0, or -1 when the peer went away or stalled
 * past the request timeout: stop producing, then call tf_conn_respond_end. */
int tf_conn_write_body(tf_conn *conn, const char *data, size_t len);

/* Sends count bytes of fd from offset with sendfile(2), after what was
 * written so far; fd is duplicated, so the caller may close its own. Only for
 * a body of announced length. The rest is sent from the event loop on
 * EPOLLOUT after the handler returns. Returns 0 or -1. */
int tf_conn_sendfile(tf_conn *conn, int fd, int64_t offset, int64_t count);

/* Ends a streamed answer: complete=1 writes the last chunk (a body shorter
 * than its Content-Length closes the connection and returns -1); complete=0
 * aborts it (the connection closes, the client sees a truncated body). */
int tf_conn_respond_end(tf_conn *conn, int complete);

/* ---------------------------------------------------------- request bodies
 *
 * A request whose body is in the input buffer with its head (no body, or a
 * body of at most TF_BODY_WINDOW bytes that arrived with it, the common case)
 * reaches on_request whole: body points at it. Otherwise on_request is called
 * as soon as the head is complete, with body NULL, and the body is read from
 * the connection through its tf_body (tf_conn_body). The worker then holds
 * at most TF_BODY_WINDOW bytes of unread body per connection: while the
 * window is full it stops reading that socket (TCP flow control) until the
 * application takes more. Chunked bodies arrive decoded. "100 Continue" is
 * sent when the application first asks for body bytes, never before.
 *
 * Three ways to read it, one per kind of caller:
 *   1. inline, on the loop thread (the request is not deferred):
 *      tf_body_wait blocks for this connection alone with poll(2), the
 *      embedder's lock released through cb->release/acquire, at most
 *      body_timeout between two arrivals; then tf_body_take/tf_body_consume
 *      (no copy until the embedder's own). tf_body_read does all three.
 *   2. a runner thread (the request deferred with tf_conn_defer): tf_body_read
 *      without the embedder's lock; it waits on a condition variable while the
 *      loop fills the window, and copies what is there into buf. It never
 *      touches the connection: the loop sends the 100 and resumes reading.
 *   3. the loop itself, asynchronously (an event-loop runner, the request
 *      deferred): tf_body_take never blocks; when it answers TF_BODY_AGAIN,
 *      cb->on_body(ctx, job) is called once on the loop when bytes, the end
 *      or an error arrive (also when the connection closes). A deferred
 *      request has no timer in the loop: this reader bounds its own wait
 *      (body_timeout, e.g. with its event loop's timers).
 * Errors (-1 with errno): ETIMEDOUT (nothing for body_timeout), ECONNRESET
 * (the client went away or closed mid-body), EMSGSIZE (a chunked body past
 * max_body_size: answer 413), EBADMSG (bad chunk framing: answer 400), EINTR
 * (inline: a signal interrupted the wait; check it and call again). Once a
 * read failed, the connection closes after the response.
 *
 * The tf_body is valid until the request is answered (inline: on_request
 * returned; deferred: on_complete ran). What the application left unread is
 * then drained, up to TF_BODY_DRAIN_MAX bytes still to receive, to keep the
 * connection; beyond that (or a chunked body not read to its end, or a 100
 * Continue never sent) the response says "Connection: close". */
typedef struct tf_body tf_body;

#define TF_BODY_WINDOW (256 * 1024)      /* unread body bytes held per connection */
#define TF_BODY_DRAIN_MAX (1024 * 1024)  /* unread body read and dropped for keep-alive */
#define TF_BODY_AGAIN (-2)               /* tf_body_take: nothing buffered now */

/* The current request's streamed body; NULL when on_request got it whole. */
tf_body *tf_conn_body(tf_conn *conn);
/* Loop thread (1): blocks until tf_body_take has something to say. 0 or -1. */
int tf_body_wait(tf_body *body);
/* Loop thread (1, 3): the unread bytes at *data (> 0), 0 at the end of the
 * body, TF_BODY_AGAIN (cb->on_body will follow), or -1 with errno. */
ssize_t tf_body_take(tf_body *body, const char **data);
/* Loop thread: n of the bytes tf_body_take showed are consumed. */
void tf_body_consume(tf_body *body, size_t n);
/* Any caller (1, 2): at most cap bytes into buf, blocking; 0 at the end, -1 with errno. */
ssize_t tf_body_read(tf_body *body, char *buf, size_t cap);

/* The peer's address as text ("127.0.0.1", "::1", "" for a unix socket) and port. */
int tf_conn_peer(const tf_conn *conn, char *host, size_t host_cap, int *port);

/* -------------------------------------------------------------- supervisor */

typedef struct {
    int workers;
    double graceful_timeout; /* seconds before SIGKILL on a graceful stop */
    int http;                /* 1: workers drain on SIGTERM (HTTP loop) and report
                                readiness in the scoreboard; 0: ready once forked */
    int listen_fd;           /* sampled for the listen queue depth (-1: none) */
    uint64_t max_rss;        /* bytes: replace a worker above this (0: never) */
    double boot_timeout;     /* seconds a new worker may take to become ready */
    double timeout;          /* seconds a request may run before the worker gets
                                SIGUSR2 (the embedder raises in the handler); 0: none */
    double timeout_grace;    /* seconds after that before the worker is killed */
    double shutdown_delay;   /* seconds to keep serving after SIGTERM before draining */
    int stop_filter;         /* 1: on a stop, a drop-all socket filter on listen_fd keeps
                                new connections out of the queue, queued ones stay */
    const char *notify_socket; /* systemd NOTIFY_SOCKET (NULL: none) */
} tf_supervisor_config;

typedef struct {
    void (*release)(void *ctx);
    void (*acquire)(void *ctx);
    /* Around fork(): called with the embedder's lock held. */
    void (*before_fork)(void *ctx);
    void (*after_fork_parent)(void *ctx);
    /* In the child, after fork: runs the worker and returns its exit status. */
    int (*child_main)(void *ctx, int worker_id);
    /* On SIGHUP, before the new generation is started (lock held); NULL: none.
     * cfg is a copy of the configuration in force: the embedder re-reads its
     * settings and writes the new values there. Returns 0 to roll with them,
     * or -1 to keep the current workers and configuration (the embedder has
     * said why). Of cfg, the supervisor takes only what can change without a
     * new socket or scoreboard: workers, graceful_timeout, max_rss,
     * boot_timeout, timeout, timeout_grace, shutdown_delay. */
    int (*before_roll)(void *ctx, tf_supervisor_config *cfg);
    void *ctx;
} tf_supervisor_callbacks;

/* The signal the primary sends to a worker whose request ran past the timeout. */
#define TF_TIMEOUT_SIGNAL SIGUSR2

/* Forks cfg->workers workers and supervises them until SIGTERM/SIGINT
 * (graceful) or SIGQUIT (immediate). Returns the primary's exit status. */
int tf_supervise(const tf_supervisor_config *cfg, const tf_supervisor_callbacks *cb);

/* In a forked child: empties the signal mask the primary's blocked set left. */
int tf_signals_unblock_all(void);

/* Worker exit status meaning "fatal, do not respawn" (nginx/gunicorn use 2/3). */
#define TF_EXIT_FATAL 3

/* -------------------------------------------------------------- scoreboard */

/* Memory shared by the primary and its workers (mapped before the first
 * fork), one entry per worker process. Workers write their own entry with
 * plain stores: no syscall per request. `tailfast status` maps the same file
 * read-only. The layout is versioned by TF_SB_VERSION. */

#define TF_SB_MAGIC 0x3142534654ULL /* "TFSB1" */
#define TF_SB_VERSION 5
#define TF_SB_MAX_WORKERS 1024
#define TF_SB_MAX_PROCS 2048 /* workers plus replacements and draining ones */

/* State of a worker process. Ready means idle or busy. The primary writes
 * starting and free (and idle for a process without an HTTP loop); a
 * worker's loop writes its own idle, busy and draining. */
enum {
    TF_W_FREE = 0,     /* entry unused */
    TF_W_STARTING = 1, /* forked, not yet serving */
    TF_W_IDLE = 2,     /* its loop runs, no handler running */
    TF_W_BUSY = 3,     /* a handler runs */
    TF_W_DRAINING = 4  /* told to stop: finishing what it accepted */
};

/* State of a worker id (a slot that should have a worker), written by the
 * primary alone. */
enum { TF_SLOT_UNUSED = 0, TF_SLOT_RUNNING = 1, TF_SLOT_BACKOFF = 2 };

/* Request latency histogram: upper bounds in seconds (tf_latency_bounds),
 * the last bucket is +Inf. Counts per bucket, not cumulative. */
#define TF_LATENCY_BUCKETS 14
extern const double tf_latency_bounds[TF_LATENCY_BUCKETS - 1];

/* Responses of one process (or, in a slot, of its retired processes). */
typedef struct {
    uint64_t status[5];                   /* by class: 1xx .. 5xx */
    uint64_t latency[TF_LATENCY_BUCKETS]; /* dispatch to response, per bucket */
    double latency_sum;                   /* seconds */
} tf_sb_stats;

/* Why a worker process was replaced (scoreboard restarts_by_cause). */
enum {
    TF_CAUSE_CRASH = 0, /* died without being asked to */
    TF_CAUSE_ROLLING = 1,
    TF_CAUSE_MAX_REQUESTS = 2,
    TF_CAUSE_MAX_RSS = 3,
    TF_CAUSE_COUNT = 4
};

/* Whether a worker's loop takes new connections (tf_sb_proc.accepting). */
enum {
    TF_ACCEPT_OFF = 0,     /* not now: starting, draining, at --max-connections, out of fds */
    TF_ACCEPT_ARMED = 1,   /* the listener is in its epoll set */
    TF_ACCEPT_WAITING = 2  /* stepped out while above the fair share; takes more when told */
};

/* Why a worker paused accepting (tf_sb_proc.pauses). */
enum {
    TF_PAUSE_FAIR_SHARE = 0,      /* above the accepting workers' mean */
    TF_PAUSE_EMFILE = 1,          /* accept failed: out of descriptors (or memory) */
    TF_PAUSE_MAX_CONNECTIONS = 2, /* at --max-connections */
    TF_PAUSE_COUNT = 3
};

typedef struct {
    int32_t pid;
    int32_t worker_id;
    uint32_t generation;    /* the code generation it was forked for (SIGHUP bumps it) */
    int32_t state;          /* TF_W_* */
    uint64_t requests;      /* requests answered */
    uint64_t accepted;      /* connections accepted */
    int32_t open;           /* connections open now */
    int32_t retire;         /* 1: asks to be replaced (max-requests reached) */
    double started;         /* wall clock (CLOCK_REALTIME seconds) */
    double heartbeat;       /* CLOCK_MONOTONIC seconds of its loop's last pass */
    double request_started; /* CLOCK_MONOTONIC seconds, while busy */
    uint64_t rss;           /* bytes, sampled by the primary */
    /* requests in flight (tf_conn_defer): deferred, on a runner thread, waiting for one */
    int32_t in_flight;
    int32_t threads_busy;
    int32_t threads_waiting;
    int32_t threads;          /* runner threads (0: inline) */
    double in_flight_started; /* CLOCK_MONOTONIC: the oldest in flight (0: none) */
    char method[16];        /* of the request in progress, NUL-terminated */
    char path[112];
    tf_sb_stats stats;
    /* accepting (accept.c): TF_ACCEPT_*, read by the other workers' balancing;
     * times it paused accepting, by TF_PAUSE_* */
    int32_t accepting;
    int32_t accept_pad_;
    uint64_t pauses[TF_PAUSE_COUNT];
    uint64_t loop_stalls; /* its event loop held past --loop-stall-warning (tf_scoreboard_count_stall) */
} __attribute__((aligned(64))) tf_sb_proc; /* own cache lines: workers never write a shared one */

typedef struct {
    int32_t state;       /* TF_SLOT_* */
    int32_t pid;         /* the worker serving for this id, 0 when none */
    uint32_t restarts;   /* processes started for this id after the first */
    uint32_t crashes;    /* consecutive early deaths */
    double next_attempt; /* wall clock of the next fork while in back-off */
    /* counters of this id's processes that have exited, so totals never go back */
    uint64_t retired_requests;
    tf_sb_stats retired;
    uint64_t retired_pauses[TF_PAUSE_COUNT];
    uint64_t retired_loop_stalls;
} tf_sb_slot;

/* tf_sb_header.stopping: the server is stopping, and with SEALED the shared
 * listen queue takes no new connection (the primary's stop filter), so the
 * workers empty it before they leave. */
enum { TF_STOPPING_OPEN = 1, TF_STOPPING_SEALED = 2 };

typedef struct {
    uint64_t magic;
    uint32_t version;
    uint32_t max_procs;
    int32_t primary_pid;
    int32_t workers;     /* worker count wanted now */
    uint32_t generation; /* code generation: bumped by each SIGHUP */
    int32_t procs_hw;    /* entries [0, procs_hw) may be in use */
    int32_t queue_depth; /* listen queue: connections waiting to be accepted */
    int32_t queue_max;   /* its capacity (the backlog) */
    double started;      /* wall clock */
    char listen[128];    /* the URL listened on */
    int32_t stopping;    /* TF_STOPPING_* once the primary began to stop (readiness: 503) */
    int32_t pad_;
    uint64_t restarts_by_cause[TF_CAUSE_COUNT];
    tf_sb_slot slots[TF_SB_MAX_WORKERS + 1]; /* index = worker id, from 1 */
    tf_sb_proc procs[TF_SB_MAX_PROCS];
} tf_scoreboard;

/* The scoreboard of this process tree (NULL when none) and, in a worker, its
 * own entry (NULL in the primary). Set before fork, inherited by the workers. */
extern tf_scoreboard *tf_sb;
extern tf_sb_proc *tf_sb_me;

/* Primary: creates the scoreboard in a new file at path (mode 0600, replaced
 * if it exists) or, when path is NULL, in anonymous shared memory. Also opens
 * the pipe workers use to wake the primary. Returns 0 or -1 with errno. */
int tf_scoreboard_create(const char *path, int workers, const char *listen);
/* Primary: unmaps it and removes the file (path may be NULL). */
void tf_scoreboard_destroy(const char *path);
/* Any process: maps an existing scoreboard read-only; NULL with errno. */
const tf_scoreboard *tf_scoreboard_open(const char *path);
void tf_scoreboard_close(const tf_scoreboard *sb);
/* Worker, any thread (the loop-stall watchdog's): counts one event-loop stall
 * in its own entry. Nothing without a scoreboard. */
void tf_scoreboard_count_stall(void);

/* -------------------------------------------------------------- access log */

/* One access log per worker process (accesslog.c). */
enum { TF_LOG_COMMON = 0, TF_LOG_COMBINED = 1 };
/* Opens path for appending ("-": standard output; NULL or "": no log) and
 * installs the SIGUSR1 handler that asks for a reopen. Returns 0 or -1. */
int tf_accesslog_open(const char *path, int format);
/* Writes what is buffered and closes the file. */
void tf_accesslog_close(void);

/* ---------------------------------------------------------- load generator */

/* Errors by kind (tf_load_result.errors). */
#define TF_LOAD_ERR_CONNECT 0 /* refused, unreachable */
#define TF_LOAD_ERR_READ 1    /* reset, closed mid-response, malformed response */
#define TF_LOAD_ERR_WRITE 2   /* reset or broken pipe while sending */
#define TF_LOAD_ERR_TIMEOUT 3 /* no progress for cfg.timeout seconds */
#define TF_LOAD_ERR_STATUS 4  /* a complete response whose status is not 2xx */
#define TF_LOAD_NUM_ERRORS 5

/* Log-linear latency histogram in nanoseconds: 2^SUB_BITS buckets per power
 * of two, so a bucket's midpoint is within 1/64 of any value in it. */
#define TF_LOAD_HIST_SUB_BITS 5
#define TF_LOAD_HIST_BUCKETS ((64 - TF_LOAD_HIST_SUB_BITS + 1) << TF_LOAD_HIST_SUB_BITS)

typedef struct {
    const char *host;    /* name or address, resolved with getaddrinfo */
    const char *port;
    const char *request; /* one complete request, sent as is */
    size_t request_len;
    int connections;     /* spread over the threads */
    int threads;
    int pipeline;        /* requests sent back to back before reading (>= 1) */
    double duration;     /* seconds */
    double timeout;      /* seconds without progress before a connection is dropped */
    int close_each;      /* a new connection per request batch */
    int head;            /* responses have no body (HEAD requests) */
} tf_load_config;

typedef struct {
    uint64_t requests;          /* complete responses, whatever their status */
    uint64_t status_classes[6]; /* [2] = 2xx, ..., [5] = 5xx */
    uint64_t bytes_read;
    uint64_t connects;          /* connections opened */
    uint64_t errors[TF_LOAD_NUM_ERRORS];
    uint64_t latency_min_ns;
    uint64_t latency_max_ns;
    uint64_t latency_sum_ns;
    double elapsed;             /* seconds, first connect to last thread's end */
    uint64_t hist[TF_LOAD_HIST_BUCKETS];
} tf_load_result;

/* Runs the load for cfg->duration seconds on cfg->threads threads (blocking;
 * call it without any embedder lock held). Returns 0, or -1 with errno when
 * the load could not run (bad address, no descriptors, threads). Errors of
 * the server are counted in out->errors, not returned. */
int tf_load_run(const tf_load_config *cfg, tf_load_result *out);

size_t tf_load_hist_index(uint64_t value);
uint64_t tf_load_hist_value(size_t index);
/* The latency (ns) at percentile q (0..100) of the histogram in res. */
uint64_t tf_load_percentile(const tf_load_result *res, double q);

#endif
