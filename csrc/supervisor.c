/* supervisor.c — the primary's loop: fork the workers, then wait for events until stopped.
 *
 * A worker id (1..N) is a slot; a slot has the process serving for it
 * (current) and, while it is being replaced, the process that will take over
 * (next). Every replacement, whatever the cause (SIGHUP rolling restart,
 * max-requests, max-rss), goes the same way: fork the new process, wait until
 * it marks itself ready in the scoreboard, then tell the old one to drain
 * (within the graceful timeout, as at a stop, or it is killed).
 * Replacements run one at a time. A slot whose workers keep dying early
 * (before answering a request) backs off exponentially; a failed fork backs
 * off the same way. A request running past the timeout gets the worker a
 * signal, then SIGKILL if it does not return. A stop keeps new connections out
 * of the shared queue and lets the workers drain what is queued.
 *
 * The primary's signals are blocked and read from a signalfd; workers wake it
 * through the scoreboard's pipe when they become ready or ask to retire. No
 * work happens in a signal handler, and every event is handled in the loop.
 * supervisor_internal.h lists the files that do each part.
 */
#define _GNU_SOURCE
#include "supervisor_internal.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

/* The primary's signals, all read from the signalfd. */
static const int tf_sv_signals[] = {SIGCHLD, SIGTERM, SIGINT,  SIGQUIT,
                                    SIGHUP,  SIGTTIN, SIGTTOU, SIGUSR1};

/* Blocks the primary's signals and opens the signalfd that reads them;
 * *previous gets the mask to restore. Returns 0, or -1 (logged). */
static int tf_sv_open_signals(tf_supervisor *s, sigset_t *previous) {
    sigset_t handled;
    sigemptyset(&handled);
    for (size_t i = 0; i < sizeof(tf_sv_signals) / sizeof(tf_sv_signals[0]); i++)
        sigaddset(&handled, tf_sv_signals[i]);
    if (sigprocmask(SIG_BLOCK, &handled, previous) < 0) {
        tf_log("primary: sigprocmask: %s", strerror(errno));
        return -1;
    }
    s->signal_fd = signalfd(-1, &handled, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->signal_fd < 0) {
        tf_log("primary: signalfd: %s", strerror(errno));
        sigprocmask(SIG_SETMASK, previous, NULL);
        return -1;
    }
    return 0;
}

static void tf_sv_drain_fd(int fd) {
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
}

/* Waits for the next event (the embedder's lock released meanwhile) and
 * handles the signals that came. Returns 0, or -1 when poll failed. */
static int tf_sv_wait(tf_supervisor *s) {
    struct pollfd pfd[2] = {{.fd = s->signal_fd, .events = POLLIN},
                            {.fd = s->wake_fd, .events = POLLIN}};
    int timeout = tf_sv_next_timeout(s);
    s->cb->release(s->cb->ctx);
    int n = poll(pfd, s->wake_fd >= 0 ? 2 : 1, timeout);
    int poll_errno = errno;
    s->cb->acquire(s->cb->ctx);
    if (n < 0 && poll_errno != EINTR) {
        tf_log("primary: poll: %s", strerror(poll_errno));
        return -1;
    }
    if (s->wake_fd >= 0 && n > 0 && (pfd[1].revents & POLLIN))
        tf_sv_drain_fd(s->wake_fd);
    struct signalfd_siginfo info;
    for (;;) {
        ssize_t r = read(s->signal_fd, &info, sizeof(info));
        if (r == (ssize_t)sizeof(info)) {
            tf_sv_on_signal(s, (int)info.ssi_signo);
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        return 0; /* EAGAIN: nothing more */
    }
}

/* Forks the workers, then runs until the stop is complete (or poll fails). */
static void tf_sv_run(tf_supervisor *s, int workers) {
    s->wanted = s->slots_hw = workers;
    for (int id = 1; id <= workers; id++) {
        s->slots[id].wanted = 1;
        tf_sv_slot_spawn(s, id);
    }
    s->next_tick = tf_clock_precise();
    tf_sv_publish_slots(s);
    while (!(s->stopping && s->live == 0)) {
        if (tf_sv_wait(s) < 0)
            break;
        /* SIGCHLDs coalesce; reap also when a wake-up came for another reason */
        tf_sv_reap(s);
        tf_sv_check_ready(s);
        tf_sv_on_timers(s);
        tf_sv_roll(s);
        if (s->cfg->timeout > 0 && !s->killed)
            s->next_timeout_check = tf_sv_check_timeouts(s, tf_clock_precise());
        tf_sv_check_notify(s);
        tf_sv_publish_slots(s);
    }
}

/* Only reached when poll failed: kills and reaps what is left, so that no
 * worker outlives the primary's loop. */
static void tf_sv_kill_leftovers(tf_supervisor *s) {
    tf_sv_signal_workers(s, SIGKILL);
    while (s->live > 0) {
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid < 0)
            break;
        for (int i = 0; i < TF_MAX_PROCS; i++)
            if (s->procs[i].state != TF_W_FREE && s->procs[i].pid == pid) {
                tf_sv_proc_free(s, i);
                s->live--;
            }
    }
    s->exit_status = 1;
}

/* Runs the primary, the scoreboard in place; returns its exit status. */
static int tf_sv_main(const tf_supervisor_config *cfg, const tf_supervisor_callbacks *cb,
                      int workers) {
    tf_supervisor *s = calloc(1, sizeof(*s));
    if (!s) {
        tf_log("primary: out of memory");
        return 1;
    }
    s->cfg_now = *cfg; /* a SIGHUP may change some of it (tf_sv_reconfigure) */
    s->cfg = &s->cfg_now;
    s->cb = cb;
    s->self = getpid();
    s->wake_fd = tf_scoreboard_wake_fd();
    tf_sb->primary_pid = (int32_t)s->self;
    tf_sb->workers = workers;
    for (int id = 0; id <= TF_MAX_WORKERS; id++)
        s->slots[id].current = s->slots[id].next = -1;
    sigset_t previous;
    if (tf_sv_open_signals(s, &previous) < 0) {
        free(s);
        return 1;
    }
    tf_sv_run(s, workers);
    if (s->live > 0)
        tf_sv_kill_leftovers(s);
    int status = s->exit_status;
    tf_log("primary %d stopped", (int)s->self);
    close(s->signal_fd);
    sigprocmask(SIG_SETMASK, &previous, NULL);
    free(s);
    return status;
}

int tf_supervise(const tf_supervisor_config *cfg, const tf_supervisor_callbacks *cb) {
    int workers = cfg->workers < 1 ? 1 : cfg->workers;
    if (workers > TF_MAX_WORKERS)
        workers = TF_MAX_WORKERS;
    int own_scoreboard = 0;
    if (!tf_sb) {
        /* the embedder made none: an anonymous one (no `tailfast status`) */
        if (tf_scoreboard_create(NULL, workers, NULL) < 0) {
            tf_log("primary: scoreboard: %s", strerror(errno));
            return 1;
        }
        own_scoreboard = 1;
    }
    int status = tf_sv_main(cfg, cb, workers);
    if (own_scoreboard)
        tf_scoreboard_destroy(NULL);
    return status;
}
