/* tailfast.h — the one header of tailfast's C core.
 *
 * Three parts, none of which knows about Python:
 *   - the HTTP/1.1 parser and response-head writer (http.c): no allocation,
 *     caller-owned buffers, returns consumed / TF_PARSE_ERROR / TF_PARSE_INCOMPLETE;
 *   - a worker's epoll loop (worker.c), which calls back into the embedder for
 *     each complete request;
 *   - the primary's supervisor (supervisor.c): fork loop, signalfd, respawn.
 * _core.pyx is the only place where these meet Python.
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

/* Limits the parser enforces; every field must be set (see tf_limits_default). */
typedef struct {
    size_t max_request_line; /* > this: 414 */
    size_t max_header_count; /* > this (and <= TF_MAX_HEADERS): 431 */
    size_t max_header_field; /* one "name: value" line longer than this: 431 */
} tf_limits;

void tf_limits_default(tf_limits *limits);

/* Parses one request head from buf[0..len).
 * Returns the head's length in bytes (through the blank line) when complete,
 * TF_PARSE_INCOMPLETE when more bytes are needed, or TF_PARSE_ERROR with
 * *error_status set to the status to answer (400, 414, 431, 501, 505).
 * Pointers in *req point into buf. Never reads past buf + len. */
ssize_t tf_parse_request(const char *buf, size_t len, const tf_limits *limits,
                         tf_request *req, int *error_status);

/* Incremental in-place decoder of a chunked body. Zero it before the first call. */
typedef struct {
    int state;
    uint64_t chunk_remaining;
    size_t aux_bytes; /* bytes spent on chunk extensions / trailers so far */
    int hex_digits;
} tf_chunked_decoder;

/* Decodes buf[0..*len) in place: on return the decoded bytes are at
 * buf[0..*len) (the new *len). Returns TF_PARSE_INCOMPLETE when the body needs
 * more data (call again with the next bytes), TF_PARSE_ERROR on a malformed
 * body, or, when the body is complete, the number n >= 0 of bytes that follow
 * it (left at buf[*len .. *len + n), e.g. a pipelined request). */
ssize_t tf_chunked_decode(tf_chunked_decoder *dec, char *buf, size_t *len);

/* Reason phrase of a status code ("Unknown" for codes it does not know). */
const char *tf_status_reason(int status);

/* Response head flags. */
#define TF_HEAD_KEEP_ALIVE 1 /* else "Connection: close" is written */
#define TF_HEAD_CHUNKED 2    /* "Transfer-Encoding: chunked" instead of a length */

/* Writes "HTTP/1.1 <status> <reason>", Server, Date, the given headers,
 * Content-Length (when content_length >= 0), Connection (when the keep-alive
 * choice differs from the version's default) and the blank line into out.
 * Returns the head's length, or -1 when it does not fit in cap bytes.
 * Header names and values must already be validated (no CR/LF). */
ssize_t tf_write_response_head(char *out, size_t cap, int status,
                               const tf_header *headers, size_t num_headers,
                               int64_t content_length, int flags,
                               int version_minor);

/* IMF-fixdate of now ("Sun, 06 Nov 1994 08:49:37 GMT", 29 bytes), cached per second. */
const char *tf_http_date(time_t now);

/* ----------------------------------------------------------------- logging */

/* Writes "tailfast: <message>\n" to stderr in one write(2). */
void tf_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ------------------------------------------------------------------ worker */

typedef struct tf_conn tf_conn;

typedef struct {
    /* Around every blocking wait: lets the embedder release its lock (the GIL). */
    void (*release)(void *ctx);
    void (*acquire)(void *ctx);
    /* A complete request (head and whole body). The callback answers it with
     * tf_conn_respond (exactly once) and returns 0; -1 closes the connection. */
    int (*on_request)(void *ctx, tf_conn *conn, const tf_request *req,
                      const char *body, size_t body_len);
    void *ctx;
} tf_worker_callbacks;

typedef struct {
    int listen_fd;
    int worker_id;
    int max_connections;       /* per worker; accepting pauses at the cap */
    int accepts_per_wakeup;    /* accept at most this many per wake-up (fairness) */
    double keepalive_timeout;  /* seconds an idle connection is kept */
    double request_timeout;    /* seconds to receive a whole request */
    int64_t max_body_size;     /* 0: unlimited */
    tf_limits limits;
    uint64_t max_requests;     /* ask to be replaced after this many (0: never) */
    int balance;               /* 1: cap accepts by the fair share in the scoreboard */
} tf_worker_config;

void tf_worker_config_default(tf_worker_config *cfg);

/* Runs the accept/serve loop until SIGTERM/SIGINT (graceful: stop accepting,
 * finish what is in flight) or SIGQUIT (immediate). Returns the exit status. */
int tf_worker_run(const tf_worker_config *cfg, const tf_worker_callbacks *cb);

/* Answers the connection's current request: head built in C, then head and
 * body written with one writev where the socket takes it; the rest waits for
 * EPOLLOUT. close_after forces "Connection: close". Returns 0, or -1 when the
 * head does not fit (the caller may answer 500 instead). */
int tf_conn_respond(tf_conn *conn, int status, const tf_header *headers,
                    size_t num_headers, const char *body, size_t body_len,
                    int close_after);

/* The peer's address as text ("127.0.0.1", "::1", "" for a unix socket) and port. */
int tf_conn_peer(const tf_conn *conn, char *host, size_t host_cap, int *port);

/* -------------------------------------------------------------- supervisor */

typedef struct {
    void (*release)(void *ctx);
    void (*acquire)(void *ctx);
    /* Around fork(): called with the embedder's lock held. */
    void (*before_fork)(void *ctx);
    void (*after_fork_parent)(void *ctx);
    /* In the child, after fork: runs the worker and returns its exit status. */
    int (*child_main)(void *ctx, int worker_id);
    void *ctx;
} tf_supervisor_callbacks;

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
#define TF_SB_VERSION 1
#define TF_SB_MAX_WORKERS 1024
#define TF_SB_MAX_PROCS 2048 /* workers plus replacements and draining ones */

/* State of a worker process. Ready means idle or busy. */
enum {
    TF_W_FREE = 0,     /* entry unused */
    TF_W_STARTING = 1, /* forked, not yet serving */
    TF_W_IDLE = 2,     /* its loop runs, no handler running */
    TF_W_BUSY = 3,     /* a handler runs */
    TF_W_DRAINING = 4  /* told to stop: finishing what it accepted */
};

/* State of a worker id (a slot that should have a worker). */
enum { TF_SLOT_UNUSED = 0, TF_SLOT_RUNNING = 1, TF_SLOT_BACKOFF = 2 };

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
    char method[16];        /* of the request in progress, NUL-terminated */
    char path[112];
} tf_sb_proc;

typedef struct {
    int32_t state;       /* TF_SLOT_* */
    int32_t pid;         /* the worker serving for this id, 0 when none */
    uint32_t restarts;   /* processes started for this id after the first */
    uint32_t crashes;    /* consecutive early deaths */
    double next_attempt; /* wall clock of the next fork while in back-off */
} tf_sb_slot;

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
/* In a new worker, right after fork: makes procs[index] its own entry. */
void tf_scoreboard_attach(int index);
/* Primary: the read end of the wake-up pipe (-1 when none). */
int tf_scoreboard_wake_fd(void);
/* Worker: wakes the primary (after marking itself ready, or asking to retire). */
void tf_scoreboard_notify(void);
/* Any process: maps an existing scoreboard read-only; NULL with errno. */
const tf_scoreboard *tf_scoreboard_open(const char *path);
void tf_scoreboard_close(const tf_scoreboard *sb);
/* Worker: 1 while its open connections are above the fair share (the mean of
 * the ready workers' open connections plus slack), so it should not accept. */
int tf_scoreboard_over_share(int slack);

#endif
