/* worker.c — one worker's event loop: signals, the wait, timers (timeouts), graceful drain.
 *
 * Level-triggered epoll throughout. Connections are accepted in accept.c,
 * served in serve.c, answered through respond.c (see worker_internal.h for
 * the map). The worker's scoreboard entry (tf_sb_me) is updated with plain
 * stores: heartbeat here, state and counters where they change.
 */
#define _GNU_SOURCE
#include "worker_internal.h"
#include "accesslog.h"
#include "clock.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#define TF_DRAIN_IDLE_SECONDS 0.1 /* an idle keep-alive connection's last chance to send */
/* how long a draining worker keeps a sealed listener after the stop for the
 * handshakes in progress then (their last ACK is an RTT away) */
#define TF_DRAIN_HANDSHAKE_SECONDS 0.1
#define TF_MAX_EVENTS 256

/* Signal handlers only record; the loop does the work (self-pipe wakes it). */
volatile sig_atomic_t tf_worker_sig_drain, tf_worker_sig_quit;
static int tf_sig_pipe_write = -1;

static void tf_worker_on_signal(int sig) {
    int saved = errno;
    if (sig == SIGQUIT)
        tf_worker_sig_quit = 1;
    else if (sig != TF_ACCEPT_SIGNAL) /* that one only wakes the loop */
        tf_worker_sig_drain = 1;
    if (tf_sig_pipe_write >= 0) {
        char b = 1;
        ssize_t r = write(tf_sig_pipe_write, &b, 1);
        (void)r; /* a full pipe already wakes the loop */
    }
    errno = saved;
}

/* ------------------------------------------------------------------ timers */

/* Closes c, whose reader took nothing of the answer for request_timeout. */
static void tf_conn_drop_stalled(tf_conn *c) {
    const tf_worker *w = c->worker;
    if (c->job && c->rq) /* the request is still in c->in: name it */
        tf_log_at(TF_LOG_WARNING,
                  "worker %d (pid %d): %.*s %.*s: the client read nothing for "
                  "--request-timeout %g s; closing the connection",
                  w->cfg->worker_id, (int)getpid(), (int)c->rq->req.method_len,
                  c->rq->req.method, (int)c->rq->req.path_len, c->rq->req.path,
                  w->cfg->request_timeout);
    tf_conn_close(c);
}

/* Closes (or answers 408 to) every connection past its deadline. */
static void tf_worker_sweep(tf_worker *w) {
    double timeout = w->cfg->timeout;
    /* requests with a runner, oldest first: --timeout is their only limit */
    for (tf_conn *j = w->jobs; timeout > 0 && j && w->now - j->job_started >= timeout;
         j = j->job_next) {
        if (!j->job_overrun) {
            j->job_overrun = 1; /* once: the runner answers, or the primary kills */
            if (w->cb->on_overrun)
                w->cb->on_overrun(w->cb->ctx, j->job);
        }
    }
    tf_conn *c = w->conns;
    while (c) {
        tf_conn *next = c->next;
        if (c->job || (c->ws && !c->lingering)) {
            /* parked (its request is with a runner or a coroutine) or an open
             * WebSocket: no request timers, only a write stalled past
             * request_timeout closes it (the application then learns the
             * client is gone: on_pull(abort), TF_WS_CLOSED); and pings */
            if (tf_conn_write_stalled(c))
                tf_conn_drop_stalled(c);
            else if (c->ws)
                tf_ws_tick(c);
            c = next;
            continue;
        }
        if (c->deadline > 0 && w->now >= c->deadline) {
            if (c->in_len > 0 && !c->lingering && !tf_conn_pending(c) && !c->pull &&
                !c->close_after_write) {
                tf_conn_error(c, 408); /* a HEAD (parsed or not) gets no body */
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

/* Seconds between sweeps: often enough that a timeout fires within a quarter
 * of itself (at most 1 s late, at least 10 ms between sweeps). */
static double tf_sweep_interval(const tf_worker_config *cfg, int async) {
    double every = cfg->header_timeout;
    if (cfg->body_timeout < every)
        every = cfg->body_timeout;
    if (cfg->request_timeout < every)
        every = cfg->request_timeout;
    if (cfg->keepalive_timeout > 0 && cfg->keepalive_timeout < every)
        every = cfg->keepalive_timeout;
    if ((cfg->threads > 1 || async) && cfg->timeout > 0 && cfg->timeout < every)
        every = cfg->timeout; /* requests in flight are timed out here */
    if (async && cfg->ws_ping_interval > 0 && cfg->ws_ping_interval < every)
        every = cfg->ws_ping_interval; /* WebSocket pings (only with ASGI) */
    every /= 4;
    if (!(every <= 1.0))
        every = 1.0;
    if (every < 0.01)
        every = 0.01;
    return every;
}

/* ------------------------------------------------------------------- drain */

static void tf_worker_start_drain(tf_worker *w) {
    if (w->draining)
        return;
    w->draining = 1;
    w->drain_started = w->now;
    tf_log_at(TF_LOG_DEBUG, "worker %d (pid %d): draining %d connections", w->cfg->worker_id,
              (int)getpid(), w->conn_count);
    if (tf_sb_me)
        __atomic_store_n(&tf_sb_me->state, TF_W_DRAINING, __ATOMIC_RELEASE);
    tf_listener_arm(w, 0);
    /* Connections already in the listen queue were promised an answer. On a
     * stop the primary seals the queue (no new connection enters it), and
     * the workers accept until it is empty: after an EMFILE pause, or once
     * below --max-connections (tf_accept_resume), within the graceful
     * timeout. Replaced on a roll, a worker takes what is queued once and
     * lets go: the others go on accepting. Served like the rest, with
     * Connection: close. */
    w->drain_accepts = w->listen_fd >= 0 && tf_sb &&
                       __atomic_load_n(&tf_sb->stopping, __ATOMIC_ACQUIRE) == TF_STOPPING_SEALED;
    if (w->drain_accepts) {
        w->accept_resume = 0;
        tf_accept_resume(w);
    } else if (w->listen_fd >= 0) {
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
    for (tf_conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        if (c->ws && !c->lingering)
            tf_ws_drain(c); /* close 1001; its client answers within the linger time */
    }
    for (tf_conn *c = w->conns; c; c = c->next) {
        if (c->served > 0 && c->in_len == 0 && !tf_conn_pending(c) && !c->pull && !c->lingering &&
            !c->close_after_write && c->deadline > w->now + TF_DRAIN_IDLE_SECONDS)
            c->deadline = w->now + TF_DRAIN_IDLE_SECONDS;
    }
}

/* Whether a draining worker stays for the sealed listen queue: while it
 * holds connections, and for the handshakes in progress at the stop. */
static int tf_worker_drain_holds(const tf_worker *w) {
    return w->drain_accepts &&
           (tf_listener_queued(w) || w->now < w->drain_started + TF_DRAIN_HANDSHAKE_SECONDS);
}

/* ----------------------------------------------------------------- signals */

static int tf_worker_setup_signals(tf_worker *w) {
    if (pipe2(w->signal_pipe, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    tf_sig_pipe_write = w->signal_pipe[1];
    tf_worker_sig_drain = tf_worker_sig_quit = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = tf_worker_on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    const int handled[] = {SIGTERM, SIGINT, SIGQUIT, TF_ACCEPT_SIGNAL};
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

/* Requests in flight come back through an eventfd (runq.c). Edge-triggered
 * and never read: every write reports it once more, and the read a
 * level-triggered one needs would be a syscall per wake-up. */
static int tf_worker_setup_jobs(tf_worker *w) {
    w->jobs_fd = tf_jobs_open();
    if (w->jobs_fd < 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = TF_TAG_JOBS};
    return epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->jobs_fd, &ev);
}

/* Applies every completed job, oldest first, in this one pass with the lock held. */
static void tf_worker_complete_jobs(void) {
    tf_job *job = tf_jobs_take_done();
    while (job) {
        tf_job *next = job->next;
        tf_conn_complete(job->conn, job);
        job = next;
    }
}

/* ---------------------------------------------------------------- the loop */

/* The cap on what a worker's connections buffer beyond their first
 * TF_IN_INITIAL bytes each: TF_IN_CAP_REQUESTS requests of the largest size
 * the limits let one connection buffer. That is a head (about twice its
 * limits, see tf_conn_head_ready) and a body: a body above TF_BODY_WINDOW is
 * streamed through a window of that size (body.c), a smaller one is
 * buffered whole, never beyond max_body_size. With the defaults: 32 x (1.58
 * MiB + 256 KiB) = 58.5 MiB; room for about 230 streamed uploads at once,
 * whose windows count against it like any growth. */
static size_t tf_worker_in_cap(const tf_worker_config *cfg) {
    const tf_limits *l = &cfg->limits;
    uint64_t head = 2 * ((uint64_t)l->max_request_line + 2 +
                         (uint64_t)l->max_header_count * ((uint64_t)l->max_header_field + 2) + 2);
    uint64_t body = TF_BODY_WINDOW;
    if (cfg->max_body_size > 0 && (uint64_t)cfg->max_body_size < body)
        body = (uint64_t)cfg->max_body_size;
    uint64_t one = head + body;
    uint64_t cap = one > UINT64_MAX / TF_IN_CAP_REQUESTS ? UINT64_MAX : one * TF_IN_CAP_REQUESTS;
    return cap > SIZE_MAX ? SIZE_MAX : (size_t)cap;
}

/* Sets up w for cfg; returns 0, or an exit status (logged) when it cannot run. */
static int tf_worker_init(tf_worker *w, const tf_worker_config *cfg,
                          const tf_worker_callbacks *cb) {
    memset(w, 0, sizeof(*w));
    w->cfg = cfg;
    w->cb = cb;
    w->listen_fd = cfg->listen_fd;
    w->epfd = -1;
    w->signal_pipe[0] = w->signal_pipe[1] = -1;
    w->jobs_fd = -1;
    w->now = w->last_sweep = tf_clock_coarse();
    cpu_set_t cpus;
    w->cpus = sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
    w->sweep_every = tf_sweep_interval(cfg, 0);
    w->in_extra_max = tf_worker_in_cap(cfg);
    /* the accept loop must never block; the listener is shared, so this is
     * every worker's setting, which is what they all want */
    int fl = fcntl(w->listen_fd, F_GETFL);
    if (fl < 0 || fcntl(w->listen_fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        tf_log_at(TF_LOG_ERROR, "worker %d (pid %d): listening socket: %s", cfg->worker_id,
                  (int)getpid(), strerror(errno));
        w->listen_fd = -1; /* the embedder's: not ours to close on this path */
        return TF_EXIT_FATAL;
    }
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0 || tf_worker_setup_signals(w) < 0 || tf_worker_setup_jobs(w) < 0 ||
        tf_listener_arm(w, 1) < 0) {
        tf_log_at(TF_LOG_ERROR, "worker %d (pid %d): cannot start event loop: %s",
                  cfg->worker_id, (int)getpid(), strerror(errno));
        return TF_EXIT_FATAL;
    }
    return 0;
}

/* How long the next wait may last, in milliseconds. */
static int tf_worker_wait_ms(const tf_worker *w) {
    int timeout_ms = tf_clock_ms(w->sweep_every);
    if (!w->listening && !w->draining && w->accept_resume > 0 && timeout_ms > 100)
        timeout_ms = 100;
    if (w->balance_paused && !w->draining)
        timeout_ms = 20; /* the others' counts change without waking us */
    if (w->draining)
        timeout_ms = 20; /* idle connections' last chance ends soon */
    return timeout_ms;
}

/* Waits for events with the embedder's lock released. Returns epoll_wait's
 * result, with errno from it. */
static int tf_worker_wait(tf_worker *w, struct epoll_event *events) {
    const tf_worker_callbacks *cb = w->cb;
    int timeout_ms = tf_worker_wait_ms(w);
    cb->release(cb->ctx);
    tf_runq_wake(); /* the batch's jobs, now that runners can take the lock */
    /* With more workers than cores the scheduler, not the server, decides
     * who runs: a worker ahead of the others' mean lets them go first. */
    int oversubscribed = tf_sb && tf_sb->workers > w->cpus; /* TTIN/TTOU change it */
    if (w->cfg->balance && oversubscribed && tf_scoreboard_ahead_of_mean(0.05))
        sched_yield();
    int n = epoll_wait(w->epfd, events, TF_MAX_EVENTS, timeout_ms);
    int wait_errno = errno;
    cb->acquire(cb->ctx);
    w->now = tf_clock_coarse();
    if (tf_sb_me)
        tf_sb_me->heartbeat = w->now;
    errno = wait_errno;
    return n;
}

/* Handles one batch of events; returns the connections accepted. */
static int tf_worker_handle(tf_worker *w, const struct epoll_event *events, int n) {
    int accepted = 0;
    for (int i = 0; i < n; i++) {
        uint64_t tag = events[i].data.u64;
        if (tag == TF_TAG_LISTENER) {
            if (!w->draining || w->drain_accepts)
                accepted += tf_accept_some(w);
        } else if (tag == TF_TAG_SIGNAL) {
            tf_worker_drain_signal_pipe(w);
        } else if (tag == TF_TAG_JOBS) {
            tf_worker_complete_jobs();
        } else if (tag == TF_TAG_EXTERNAL) {
            continue; /* the embedder's other loop has work: it runs after this pass */
        } else if (tag == TF_TAG_BODY) {
            tf_body_on_wake(w); /* a runner reading a request body needs the loop */
        } else {
            tf_conn *c = events[i].data.ptr;
            /* only this event's own handling can close c, and epoll
             * reports each fd at most once per batch */
            uint32_t ev = events[i].events;
            if (ev & EPOLLOUT)
                tf_conn_on_writable(c);
            else if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
                tf_conn_on_readable(c, ev);
        }
    }
    return accepted;
}

static void tf_worker_cleanup(tf_worker *w) {
    while (w->conns)
        tf_conn_close(w->conns);
    if (w->listen_fd >= 0)
        close(w->listen_fd);
    if (w->epfd >= 0)
        close(w->epfd);
    tf_sig_pipe_write = -1;
    if (w->signal_pipe[0] >= 0)
        close(w->signal_pipe[0]);
    if (w->signal_pipe[1] >= 0)
        close(w->signal_pipe[1]);
    tf_jobs_close();
    tf_worker_pools_free(w);
}

/* The loop runs from here on: ready, and the primary may retire the worker
 * this one replaces. */
static void tf_worker_announce(tf_worker *w) {
    if (tf_sb_me) {
        tf_sb_me->heartbeat = w->now;
        tf_sb_me->threads = w->cfg->threads > 1 ? w->cfg->threads : 0;
        __atomic_store_n(&tf_sb_me->state, TF_W_IDLE, __ATOMIC_RELEASE);
        tf_scoreboard_notify();
    }
}

/* Whether the loop is over: an immediate stop, or a drain with nothing left
 * (requests in flight whose client left still finish: their effects count). */
static int tf_worker_done(tf_worker *w) {
    if (tf_worker_sig_quit)
        return 1;
    if (tf_worker_sig_drain)
        tf_worker_start_drain(w);
    return w->draining && w->conn_count == 0 && w->in_flight == 0 && !tf_worker_drain_holds(w);
}

/* After a batch of events: accepting, the access log's clock, timeouts. */
static void tf_worker_after_batch(tf_worker *w, int accepted) {
    if (accepted > 0 && w->cfg->balance && !w->draining)
        tf_listener_rotate(w);
    tf_accept_resume(w);
    tf_accesslog_tick(w->now);
    if (w->now - w->last_sweep >= w->sweep_every || w->draining) {
        w->last_sweep = w->now;
        tf_worker_sweep(w);
    }
}

int tf_worker_run(const tf_worker_config *cfg, const tf_worker_callbacks *cb) {
    tf_worker w;
    int status = tf_worker_init(&w, cfg, cb);
    if (status != 0) {
        tf_worker_cleanup(&w);
        return status;
    }
    tf_worker_announce(&w);
    struct epoll_event events[TF_MAX_EVENTS];
    while (!tf_worker_done(&w)) {
        int n = tf_worker_wait(&w, events);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            tf_log_at(TF_LOG_ERROR, "worker %d (pid %d): epoll_wait: %s", cfg->worker_id,
                      (int)getpid(), strerror(errno));
            status = 1;
            break;
        }
        tf_worker_after_batch(&w, tf_worker_handle(&w, events, n));
    }
    tf_worker_cleanup(&w);
    return status;
}

/* ------------------------------------------- driven by another event loop */

/* The one worker of this process driven from outside (tf_worker_open). */
static tf_worker tf_driven;
static int tf_driven_open, tf_driven_status;

int tf_worker_open(const tf_worker_config *cfg, const tf_worker_callbacks *cb, int *fd) {
    tf_worker *w = &tf_driven;
    int status = tf_worker_init(w, cfg, cb);
    if (status != 0) {
        tf_worker_cleanup(w);
        return status;
    }
    /* requests in flight are timed out by the sweep (--timeout) */
    w->sweep_every = tf_sweep_interval(cfg, 1);
    tf_driven_open = 1;
    tf_driven_status = 0;
    tf_worker_announce(w);
    *fd = w->epfd;
    return 0;
}

int tf_worker_tick(double *next) { return tf_worker_tick_wait(0.0, next); }

int tf_worker_watch(int fd) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TF_TAG_EXTERNAL};
    return tf_driven_open ? epoll_ctl(tf_driven.epfd, EPOLL_CTL_ADD, fd, &ev) : -1;
}

int tf_worker_tick_wait(double wait, double *next) {
    tf_worker *w = &tf_driven;
    if (!tf_driven_open)
        return 0;
    if (tf_worker_done(w))
        return 0;
    struct epoll_event events[TF_MAX_EVENTS];
    int n;
    if (wait > 0) {
        int ms = tf_clock_ms(wait), own = tf_worker_wait_ms(w);
        const tf_worker_callbacks *cb = w->cb;
        cb->release(cb->ctx);
        n = epoll_wait(w->epfd, events, TF_MAX_EVENTS, ms < own ? ms : own);
        int wait_errno = errno;
        cb->acquire(cb->ctx);
        errno = wait_errno;
    } else {
        n = epoll_wait(w->epfd, events, TF_MAX_EVENTS, 0);
    }
    w->now = tf_clock_coarse();
    if (tf_sb_me)
        tf_sb_me->heartbeat = w->now;
    if (n < 0 && errno != EINTR) {
        tf_log_at(TF_LOG_ERROR, "worker %d (pid %d): epoll_wait: %s", w->cfg->worker_id,
                  (int)getpid(), strerror(errno));
        tf_driven_status = 1;
        return 0;
    }
    tf_worker_after_batch(w, n > 0 ? tf_worker_handle(w, events, n) : 0);
    tf_runq_wake();
    *next = tf_worker_wait_ms(w) / 1000.0;
    return !tf_worker_done(w);
}

int tf_worker_close(void) {
    if (!tf_driven_open)
        return 0;
    tf_driven_open = 0;
    tf_worker_cleanup(&tf_driven);
    return tf_driven_status;
}

void tf_job_finish(tf_job *job) { tf_conn_complete(job->conn, job); }

size_t tf_conn_queued(const tf_conn *c) { return c->fd < 0 ? 0 : tf_conn_pending(c); }

int tf_conn_gone(const tf_conn *c) { return c->orphaned || c->fd < 0; }

int tf_conn_watch_output(tf_conn *c) {
    if (c->fd < 0 || !tf_conn_pending(c))
        return 0;
    if (tf_conn_set_events(c, c->registered | EPOLLOUT) < 0) {
        tf_conn_close(c);
        return -1;
    }
    return 0;
}
