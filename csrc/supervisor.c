/* supervisor.c — the primary: forks the workers, reaps them on SIGCHLD and
 * forks replacements into the same slot (the slot index is the worker id),
 * backs off when a slot crash-loops, and stops gracefully or at once.
 *
 * The primary's signals are blocked and read from a signalfd: no work happens
 * in a signal handler, and every event is handled in the loop below.
 */
#define _GNU_SOURCE
#include "tailfast.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#define TF_MAX_WORKERS 1024
#define TF_QUICK_DEATH_SECONDS 1.0 /* a worker that dies sooner counts as a crash loop */
#define TF_BACKOFF_FIRST 0.1
#define TF_BACKOFF_MAX 10.0

typedef struct {
    pid_t pid;           /* 0: no process in this slot */
    int wanted;          /* the slot should have a worker */
    double started;      /* monotonic time of the fork */
    double respawn_at;   /* > 0: fork a replacement at this time */
    int quick_deaths;    /* consecutive deaths within TF_QUICK_DEATH_SECONDS */
} tf_slot;

typedef struct {
    const tf_supervisor_config *cfg;
    const tf_supervisor_callbacks *cb;
    tf_slot slots[TF_MAX_WORKERS + 1]; /* index = worker id, from 1 */
    int wanted;       /* worker count asked for (TTIN/TTOU change it) */
    int live;         /* processes not yet reaped */
    int signal_fd;
    pid_t self;
    int stopping;     /* 0, or the signal that started the stop */
    double stop_deadline;
    int killed;       /* SIGKILL already sent to what is left */
    int exit_status;
} tf_supervisor;

static double tf_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int tf_signals_unblock_all(void) {
    sigset_t none;
    sigemptyset(&none);
    return sigprocmask(SIG_SETMASK, &none, NULL);
}

static void tf_spawn(tf_supervisor *s, int id) {
    tf_slot *slot = &s->slots[id];
    slot->respawn_at = 0;
    s->cb->before_fork(s->cb->ctx);
    pid_t pid = fork();
    if (pid == 0) {
        /* the child: die with the primary, forget the primary's signalfd */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != s->self)
            _exit(0);
        close(s->signal_fd);
        _exit(s->cb->child_main(s->cb->ctx, id));
    }
    int fork_errno = errno;
    s->cb->after_fork_parent(s->cb->ctx);
    if (pid < 0) {
        tf_log("worker %d: fork failed: %s; retrying in 1 s", id, strerror(fork_errno));
        slot->respawn_at = tf_now() + 1.0;
        return;
    }
    slot->pid = pid;
    slot->started = tf_now();
    s->live++;
    tf_log("worker %d (pid %d) started", id, (int)pid);
}

static void tf_signal_workers(tf_supervisor *s, int sig) {
    for (int id = 1; id <= TF_MAX_WORKERS; id++)
        if (s->slots[id].pid > 0 && kill(s->slots[id].pid, sig) < 0 && errno != ESRCH)
            tf_log("cannot signal worker %d (pid %d): %s", id, (int)s->slots[id].pid,
                   strerror(errno));
}

static void tf_describe_exit(int status, char *out, size_t cap) {
    if (WIFSIGNALED(status))
        snprintf(out, cap, "killed by signal %d%s", WTERMSIG(status),
                 WCOREDUMP(status) ? " (core dumped)" : "");
    else
        snprintf(out, cap, "exited with status %d", WEXITSTATUS(status));
}

static void tf_on_worker_exit(tf_supervisor *s, int id, pid_t pid, int status) {
    tf_slot *slot = &s->slots[id];
    char why[64];
    tf_describe_exit(status, why, sizeof(why));
    slot->pid = 0;
    s->live--;
    if (s->stopping || !slot->wanted) {
        tf_log("worker %d (pid %d) %s", id, (int)pid, why);
        return;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == TF_EXIT_FATAL) {
        tf_log("worker %d (pid %d) %s: cannot start; stopping", id, (int)pid, why);
        s->exit_status = 1;
        s->stopping = SIGTERM;
        s->stop_deadline = tf_now() + s->cfg->graceful_timeout;
        tf_signal_workers(s, SIGTERM);
        return;
    }
    double now = tf_now();
    if (now - slot->started < TF_QUICK_DEATH_SECONDS)
        slot->quick_deaths++;
    else
        slot->quick_deaths = 1;
    if (slot->quick_deaths <= 1) {
        tf_log("worker %d (pid %d) %s; restarting", id, (int)pid, why);
        tf_spawn(s, id);
        return;
    }
    double delay = TF_BACKOFF_FIRST;
    for (int i = 2; i < slot->quick_deaths && delay < TF_BACKOFF_MAX; i++)
        delay *= 2;
    if (delay > TF_BACKOFF_MAX)
        delay = TF_BACKOFF_MAX;
    tf_log("worker %d (pid %d) %s; crashed %d times in a row, restarting in %.1f s", id,
           (int)pid, why, slot->quick_deaths, delay);
    slot->respawn_at = now + delay;
}

static void tf_reap(tf_supervisor *s) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid <= 0)
            return; /* 0: none left to reap now; ECHILD: no children */
        int found = 0;
        for (int id = 1; id <= TF_MAX_WORKERS && !found; id++) {
            if (s->slots[id].pid == pid) {
                found = 1;
                tf_on_worker_exit(s, id, pid, status);
            }
        }
        /* a child the embedder started itself is reaped and left alone */
    }
}

static void tf_begin_stop(tf_supervisor *s, int sig) {
    if (sig == SIGQUIT) {
        tf_log("primary %d: SIGQUIT, stopping now", (int)s->self);
        s->stopping = SIGQUIT;
        s->killed = 1;
        tf_signal_workers(s, SIGKILL);
        return;
    }
    if (s->stopping)
        return;
    s->stopping = sig;
    s->stop_deadline = tf_now() + s->cfg->graceful_timeout;
    tf_log("primary %d: %s, stopping gracefully (%d workers, timeout %.0f s)", (int)s->self,
           sig == SIGINT ? "SIGINT" : "SIGTERM", s->live, s->cfg->graceful_timeout);
    tf_signal_workers(s, SIGTERM);
}

static void tf_add_worker(tf_supervisor *s) {
    if (s->wanted >= TF_MAX_WORKERS) {
        tf_log("SIGTTIN: already at the maximum of %d workers", TF_MAX_WORKERS);
        return;
    }
    int id = ++s->wanted;
    s->slots[id].wanted = 1;
    s->slots[id].quick_deaths = 0;
    tf_log("SIGTTIN: now %d workers", s->wanted);
    if (s->slots[id].pid == 0)
        tf_spawn(s, id);
}

static void tf_remove_worker(tf_supervisor *s) {
    if (s->wanted <= 1) {
        tf_log("SIGTTOU: keeping the last worker");
        return;
    }
    int id = s->wanted--;
    tf_slot *slot = &s->slots[id];
    slot->wanted = 0;
    slot->respawn_at = 0;
    tf_log("SIGTTOU: now %d workers", s->wanted);
    if (slot->pid > 0 && kill(slot->pid, SIGTERM) < 0 && errno != ESRCH)
        tf_log("cannot signal worker %d (pid %d): %s", id, (int)slot->pid, strerror(errno));
}

static void tf_on_signal(tf_supervisor *s, int sig) {
    switch (sig) {
    case SIGCHLD:
        tf_reap(s);
        break;
    case SIGTERM:
    case SIGINT:
    case SIGQUIT:
        tf_begin_stop(s, sig);
        break;
    case SIGHUP:
        tf_log("SIGHUP: rolling restart is not supported yet; ignored");
        break;
    case SIGTTIN:
        if (!s->stopping)
            tf_add_worker(s);
        break;
    case SIGTTOU:
        if (!s->stopping)
            tf_remove_worker(s);
        break;
    default:
        break;
    }
}

/* Milliseconds until the next timed event, or -1 when there is none. */
static int tf_next_timeout(const tf_supervisor *s) {
    double now = tf_now(), next = -1;
    if (s->stopping && !s->killed)
        next = s->stop_deadline;
    if (!s->stopping)
        for (int id = 1; id <= s->wanted; id++)
            if (s->slots[id].respawn_at > 0 && (next < 0 || s->slots[id].respawn_at < next))
                next = s->slots[id].respawn_at;
    if (next < 0)
        return -1;
    double ms = (next - now) * 1000.0;
    return ms <= 0 ? 0 : (int)(ms + 1);
}

static void tf_on_timers(tf_supervisor *s) {
    double now = tf_now();
    if (s->stopping && !s->killed && now >= s->stop_deadline && s->live > 0) {
        tf_log("graceful timeout: killing %d remaining workers", s->live);
        s->killed = 1;
        tf_signal_workers(s, SIGKILL);
    }
    if (s->stopping)
        return;
    for (int id = 1; id <= s->wanted; id++)
        if (s->slots[id].respawn_at > 0 && now >= s->slots[id].respawn_at && s->slots[id].pid == 0)
            tf_spawn(s, id);
}

int tf_supervise(const tf_supervisor_config *cfg, const tf_supervisor_callbacks *cb) {
    tf_supervisor *s = calloc(1, sizeof(*s));
    if (!s) {
        tf_log("primary: out of memory");
        return 1;
    }
    s->cfg = cfg;
    s->cb = cb;
    s->self = getpid();
    int workers = cfg->workers < 1 ? 1 : cfg->workers > TF_MAX_WORKERS ? TF_MAX_WORKERS : cfg->workers;

    sigset_t handled, previous;
    sigemptyset(&handled);
    const int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaddset(&handled, sigs[i]);
    if (sigprocmask(SIG_BLOCK, &handled, &previous) < 0) {
        tf_log("primary: sigprocmask: %s", strerror(errno));
        free(s);
        return 1;
    }
    s->signal_fd = signalfd(-1, &handled, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->signal_fd < 0) {
        tf_log("primary: signalfd: %s", strerror(errno));
        sigprocmask(SIG_SETMASK, &previous, NULL);
        free(s);
        return 1;
    }

    s->wanted = workers;
    for (int id = 1; id <= workers; id++) {
        s->slots[id].wanted = 1;
        tf_spawn(s, id);
    }

    while (!(s->stopping && s->live == 0)) {
        struct pollfd pfd = {.fd = s->signal_fd, .events = POLLIN};
        int timeout = tf_next_timeout(s);
        cb->release(cb->ctx);
        int n = poll(&pfd, 1, timeout);
        int poll_errno = errno;
        cb->acquire(cb->ctx);
        if (n < 0 && poll_errno != EINTR) {
            tf_log("primary: poll: %s", strerror(poll_errno));
            break;
        }
        struct signalfd_siginfo info;
        for (;;) {
            ssize_t r = read(s->signal_fd, &info, sizeof(info));
            if (r == (ssize_t)sizeof(info)) {
                tf_on_signal(s, (int)info.ssi_signo);
                continue;
            }
            if (r < 0 && errno == EINTR)
                continue;
            break; /* EAGAIN: nothing more */
        }
        /* SIGCHLDs coalesce; reap also when a wake-up came for another reason */
        tf_reap(s);
        tf_on_timers(s);
    }

    if (s->live > 0) {
        /* only reached when poll failed: do not leave workers behind */
        tf_signal_workers(s, SIGKILL);
        while (s->live > 0) {
            int status;
            pid_t pid = waitpid(-1, &status, 0);
            if (pid < 0 && errno == EINTR)
                continue;
            if (pid < 0)
                break;
            for (int id = 1; id <= TF_MAX_WORKERS; id++)
                if (s->slots[id].pid == pid) {
                    s->slots[id].pid = 0;
                    s->live--;
                }
        }
        s->exit_status = 1;
    }
    int status = s->exit_status;
    tf_log("primary %d stopped", (int)s->self);
    close(s->signal_fd);
    sigprocmask(SIG_SETMASK, &previous, NULL);
    free(s);
    return status;
}
