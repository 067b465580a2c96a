/* supervisor.c — the primary: forks the workers, reaps them, and replaces
 * them without ever dropping below the wanted number of ready workers.
 *
 * A worker id (1..N) is a slot; a slot has the process serving for it
 * (current) and, while it is being replaced, the process that will take over
 * (next). Every replacement, whatever the cause (SIGHUP rolling restart,
 * max-requests, max-rss), goes the same way: fork the new process, wait until
 * it marks itself ready in the scoreboard, then tell the old one to drain.
 * Replacements run one at a time. A slot whose workers keep dying early
 * (before answering a request) backs off exponentially; a failed fork backs
 * off the same way. A request running past the timeout gets the worker a
 * signal, then SIGKILL if it does not return. A stop keeps new connections out
 * of the shared queue and lets the workers drain what is queued.
 *
 * The primary's signals are blocked and read from a signalfd; workers wake it
 * through the scoreboard's pipe when they become ready or ask to retire. No
 * work happens in a signal handler, and every event is handled in the loop.
 */
#define _GNU_SOURCE
#include "tailfast.h"

#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define TF_MAX_WORKERS TF_SB_MAX_WORKERS
#define TF_MAX_PROCS TF_SB_MAX_PROCS
#define TF_STABLE_SECONDS 30.0 /* uptime after which the crash count starts over */
#define TF_BACKOFF_FIRST 0.1
#define TF_BACKOFF_MAX 30.0
#define TF_TICK_SECONDS 1.0 /* RSS, listen queue, boot timeouts, stability */

enum { TF_P_FREE = 0, TF_P_STARTING, TF_P_READY, TF_P_DRAINING };

typedef struct {
    pid_t pid;
    int id;         /* worker id */
    int kind;       /* TF_P_* */
    double started; /* monotonic time of the fork */
    double timed_out; /* request_started of the request sent TF_TIMEOUT_SIGNAL */
    int stuck;        /* killed: its request ran past the timeout and the grace */
} tf_proc;          /* index = scoreboard entry */

typedef struct {
    int wanted;        /* the slot should have a worker */
    int current;       /* process serving for this id, -1 when none */
    int next;          /* its replacement while one starts, -1 when none */
    double respawn_at; /* > 0: in back-off until then */
    int crashes;       /* consecutive early deaths (or failed forks) */
    double first_crash;
    int started_once;
} tf_slot;

typedef struct {
    const tf_supervisor_config *cfg;
    const tf_supervisor_callbacks *cb;
    tf_proc procs[TF_MAX_PROCS];
    tf_slot slots[TF_MAX_WORKERS + 1]; /* index = worker id, from 1 */
    int wanted;    /* worker count asked for (TTIN/TTOU change it) */
    int live;      /* processes not yet reaped */
    int replacing; /* replacements started and not yet ready */
    int signal_fd;
    int wake_fd;
    pid_t self;
    uint32_t generation; /* code generation: SIGHUP bumps it */
    int stopping;        /* 0, or the signal that started the stop */
    double stop_deadline;
    int killed; /* SIGKILL already sent to what is left */
    int delayed;          /* the shutdown delay has begun */
    double delay_until;   /* > 0: still serving after SIGTERM until then */
    int delay_signal;     /* the signal that began the delay */
    double next_timeout_check;
    int ready_sent;       /* READY=1 went to systemd */
    int reloading;        /* RELOADING=1 went, READY=1 not yet */
    int exit_status;
    double next_tick;
} tf_supervisor;

static double tf_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double tf_wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET (a path, or
 * '@' for the abstract namespace). Best effort: systemd may not listen. */
static void tf_notify(const tf_supervisor *s, const char *msg) {
    const char *path = s->cfg->notify_socket;
    if (!path || (path[0] != '/' && path[0] != '@'))
        return;
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    size_t len = strlen(path);
    if (len >= sizeof(addr.sun_path))
        return;
    memcpy(addr.sun_path, path, len);
    if (path[0] == '@')
        addr.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        tf_log("sd_notify: socket: %s", strerror(errno));
        return;
    }
    ssize_t r;
    do
        r = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&addr,
                   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
    while (r < 0 && errno == EINTR);
    if (r < 0)
        tf_log("sd_notify %s: %s", path, strerror(errno));
    close(fd);
}

int tf_signals_unblock_all(void) {
    sigset_t none;
    sigemptyset(&none);
    return sigprocmask(SIG_SETMASK, &none, NULL);
}

static tf_sb_slot *tf_sb_slot_of(int id) { return &tf_sb->slots[id]; }

static void tf_proc_free(tf_supervisor *s, int idx) {
    tf_scoreboard_fold(idx); /* its counters outlive it, for the metrics */
    memset(&s->procs[idx], 0, sizeof(s->procs[idx]));
    memset(&tf_sb->procs[idx], 0, sizeof(tf_sb->procs[idx]));
    int hw = tf_sb->procs_hw;
    while (hw > 0 && s->procs[hw - 1].kind == TF_P_FREE)
        hw--;
    tf_sb->procs_hw = hw;
}

/* Forks a worker for id into a free scoreboard entry; returns the entry's
 * index, or -1 with errno (the fork failed, or no entry is free). */
static int tf_fork(tf_supervisor *s, int id) {
    int idx = -1;
    for (int i = 0; i < TF_MAX_PROCS && idx < 0; i++)
        if (s->procs[i].kind == TF_P_FREE)
            idx = i;
    if (idx < 0) {
        errno = EAGAIN;
        return -1;
    }
    tf_sb_proc *e = &tf_sb->procs[idx];
    memset(e, 0, sizeof(*e));
    e->worker_id = id;
    e->generation = s->generation;
    e->state = TF_W_STARTING;
    if (idx + 1 > tf_sb->procs_hw)
        tf_sb->procs_hw = idx + 1;

    s->cb->before_fork(s->cb->ctx);
    pid_t pid = fork();
    if (pid == 0) {
        /* the child: die with the primary, forget the primary's descriptors */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != s->self)
            _exit(0);
        close(s->signal_fd);
        tf_scoreboard_attach(idx);
        if (!s->cfg->http)
            e->state = TF_W_IDLE; /* no loop to wait for: ready once forked */
        _exit(s->cb->child_main(s->cb->ctx, id));
    }
    int fork_errno = errno;
    s->cb->after_fork_parent(s->cb->ctx);
    if (pid < 0) {
        memset(e, 0, sizeof(*e));
        tf_proc_free(s, idx);
        errno = fork_errno;
        return -1;
    }
    e->pid = (int32_t)pid;
    tf_proc *p = &s->procs[idx];
    p->pid = pid;
    p->id = id;
    p->kind = s->cfg->http ? TF_P_STARTING : TF_P_READY;
    p->started = tf_now();
    s->live++;
    tf_slot *slot = &s->slots[id];
    if (slot->started_once)
        tf_sb_slot_of(id)->restarts++;
    slot->started_once = 1;
    tf_log("worker %d (pid %d) started", id, (int)pid);
    return idx;
}

/* Counts an early death (or failed fork) of slot id; returns the back-off
 * delay before the next attempt (0: at once). */
static double tf_count_crash(tf_supervisor *s, int id, double uptime) {
    tf_slot *slot = &s->slots[id];
    double now = tf_now();
    if (slot->crashes == 0 || uptime >= TF_STABLE_SECONDS) {
        slot->crashes = 1;
        slot->first_crash = now;
    } else {
        slot->crashes++;
    }
    tf_sb_slot_of(id)->crashes = (uint32_t)slot->crashes;
    if (slot->crashes <= 1)
        return 0;
    double delay = TF_BACKOFF_FIRST;
    for (int i = 2; i < slot->crashes && delay < TF_BACKOFF_MAX; i++)
        delay *= 2;
    return delay > TF_BACKOFF_MAX ? TF_BACKOFF_MAX : delay;
}

static void tf_backoff(tf_supervisor *s, int id, double delay) {
    s->slots[id].respawn_at = tf_now() + delay;
    tf_sb_slot *e = tf_sb_slot_of(id);
    e->next_attempt = tf_wall() + delay;
    if (s->slots[id].current < 0) {
        e->state = TF_SLOT_BACKOFF;
        e->pid = 0;
    }
}

/* Forks a process for worker id; a failed fork (EAGAIN, ENOMEM) counts as a
 * crash of the slot and backs off instead of taking the primary down.
 * Returns the process index, or -1. */
static int tf_fork_or_back_off(tf_supervisor *s, int id) {
    int idx = tf_fork(s, id);
    if (idx >= 0)
        return idx;
    int err = errno;
    tf_slot *slot = &s->slots[id];
    double delay = tf_count_crash(s, id, 0);
    if (delay < TF_BACKOFF_FIRST)
        delay = TF_BACKOFF_FIRST;
    tf_log("worker %d: fork failed: %s; %d failures in %.1f s, next attempt in %.1f s", id,
           strerror(err), slot->crashes, tf_now() - slot->first_crash, delay);
    tf_backoff(s, id, delay);
    return -1;
}

/* Forks the process serving for an empty slot; backs off when fork fails. */
static void tf_slot_spawn(tf_supervisor *s, int id) {
    tf_slot *slot = &s->slots[id];
    slot->respawn_at = 0;
    int idx = tf_fork_or_back_off(s, id);
    if (idx < 0)
        return;
    slot->current = idx;
    tf_sb_slot *e = tf_sb_slot_of(id);
    e->state = TF_SLOT_RUNNING;
    e->pid = (int32_t)s->procs[idx].pid;
    e->next_attempt = 0;
}

static void tf_signal_proc(tf_supervisor *s, int idx, int sig) {
    tf_proc *p = &s->procs[idx];
    if (p->pid > 0 && kill(p->pid, sig) < 0 && errno != ESRCH)
        tf_log("cannot signal worker %d (pid %d): %s", p->id, (int)p->pid, strerror(errno));
}

static void tf_signal_workers(tf_supervisor *s, int sig) {
    for (int i = 0; i < TF_MAX_PROCS; i++)
        if (s->procs[i].kind != TF_P_FREE)
            tf_signal_proc(s, i, sig);
}

static void tf_retire(tf_supervisor *s, int idx) {
    s->procs[idx].kind = TF_P_DRAINING;
    tf_signal_proc(s, idx, SIGTERM);
}

static void tf_describe_exit(int status, char *out, size_t cap) {
    if (WIFSIGNALED(status))
        snprintf(out, cap, "killed by signal %d%s", WTERMSIG(status),
                 WCOREDUMP(status) ? " (core dumped)" : "");
    else
        snprintf(out, cap, "exited with status %d", WEXITSTATUS(status));
}

static void tf_begin_stop(tf_supervisor *s, int sig);

static void tf_on_proc_exit(tf_supervisor *s, int idx, int status) {
    tf_proc p = s->procs[idx];
    tf_slot *slot = &s->slots[p.id];
    char why[64];
    tf_describe_exit(status, why, sizeof(why));
    double uptime = tf_now() - p.started;
    /* a worker that answered requests was not boot-looping: a kill from
     * outside (OOM killer, operator) or a crash while serving is replaced at
     * once, and the crash count starts over */
    int served = tf_sb->procs[idx].requests > 0;
    tf_proc_free(s, idx);
    s->live--;
    int was_current = slot->current == idx, was_next = slot->next == idx;
    if (was_current)
        slot->current = -1;
    if (was_next) {
        slot->next = -1;
        s->replacing--;
    }
    if (p.kind == TF_P_DRAINING || s->stopping || !slot->wanted) {
        tf_log("worker %d (pid %d) %s%s", p.id, (int)p.pid, why,
               p.kind == TF_P_DRAINING && !s->stopping && slot->wanted ? " (retired)" : "");
        if (!slot->wanted && slot->current < 0 && slot->next < 0)
            tf_sb_slot_of(p.id)->state = TF_SLOT_UNUSED;
        return;
    }
    tf_sb->restarts_by_cause[TF_CAUSE_CRASH]++; /* an exit nobody asked for */
    if (WIFEXITED(status) && WEXITSTATUS(status) == TF_EXIT_FATAL && !was_next) {
        tf_log("worker %d (pid %d) %s: cannot start; stopping", p.id, (int)p.pid, why);
        s->exit_status = 1;
        tf_begin_stop(s, SIGTERM);
        return;
    }
    if (was_current && slot->next >= 0) {
        /* its replacement is already starting: it takes over the slot */
        slot->current = slot->next;
        slot->next = -1;
        s->replacing--;
        tf_sb_slot_of(p.id)->pid = (int32_t)s->procs[slot->current].pid;
        tf_log("worker %d (pid %d) %s; its replacement (pid %d) takes over", p.id, (int)p.pid,
               why, (int)s->procs[slot->current].pid);
        return;
    }
    if (served && !was_next && !p.stuck) {
        slot->crashes = 0;
        tf_sb_slot_of(p.id)->crashes = 0;
    }
    if (p.stuck && !was_next) {
        /* not a crash: it was killed for a request stuck past the timeout */
        tf_log("worker %d (pid %d) %s (stuck past the request timeout); restarting", p.id,
               (int)p.pid, why);
        tf_slot_spawn(s, p.id);
        return;
    }
    double delay = tf_count_crash(s, p.id, uptime);
    if (was_next) {
        /* a replacement that never became ready: the old worker keeps serving */
        tf_log("worker %d (pid %d) %s before it was ready; crashed %d times in %.1f s, "
               "next attempt in %.1f s",
               p.id, (int)p.pid, why, slot->crashes, tf_now() - slot->first_crash,
               delay < TF_BACKOFF_FIRST ? TF_BACKOFF_FIRST : delay);
        tf_backoff(s, p.id, delay < TF_BACKOFF_FIRST ? TF_BACKOFF_FIRST : delay);
        return;
    }
    if (delay <= 0) {
        tf_log("worker %d (pid %d) %s; restarting", p.id, (int)p.pid, why);
        tf_slot_spawn(s, p.id);
        return;
    }
    tf_log("worker %d (pid %d) %s; crashed %d times in %.1f s, next attempt in %.1f s", p.id,
           (int)p.pid, why, slot->crashes, tf_now() - slot->first_crash, delay);
    tf_backoff(s, p.id, delay);
}

static void tf_reap(tf_supervisor *s) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid <= 0)
            return; /* 0: none left to reap now; ECHILD: no children */
        for (int i = 0; i < TF_MAX_PROCS; i++) {
            if (s->procs[i].kind != TF_P_FREE && s->procs[i].pid == pid) {
                tf_on_proc_exit(s, i, status);
                break;
            }
        }
        /* a child the embedder started itself is reaped and left alone */
    }
}

/* Starting workers that marked themselves ready: a replacement takes over its
 * slot and the worker it replaces is told to drain. */
static void tf_check_ready(tf_supervisor *s) {
    for (int i = 0; i < tf_sb->procs_hw; i++) {
        tf_proc *p = &s->procs[i];
        if (p->kind != TF_P_STARTING)
            continue;
        int state = __atomic_load_n(&tf_sb->procs[i].state, __ATOMIC_ACQUIRE);
        if (state != TF_W_IDLE && state != TF_W_BUSY)
            continue;
        p->kind = TF_P_READY;
        tf_slot *slot = &s->slots[p->id];
        if (slot->next != i) {
            tf_log("worker %d (pid %d) ready in %.0f ms", p->id, (int)p->pid,
                   (tf_now() - p->started) * 1000.0);
            continue;
        }
        int old = slot->current;
        slot->current = i;
        slot->next = -1;
        s->replacing--;
        tf_sb_slot_of(p->id)->pid = (int32_t)p->pid;
        if (old >= 0) {
            tf_log("worker %d (pid %d) ready in %.0f ms; retiring pid %d", p->id, (int)p->pid,
                   (tf_now() - p->started) * 1000.0, (int)s->procs[old].pid);
            tf_retire(s, old);
        }
    }
}

static const char *tf_replace_reason(tf_supervisor *s, int idx, int *cause) {
    const tf_sb_proc *e = &tf_sb->procs[idx];
    if (e->generation != s->generation) {
        *cause = TF_CAUSE_ROLLING;
        return "rolling restart";
    }
    if (e->retire) {
        *cause = TF_CAUSE_MAX_REQUESTS;
        return "max-requests reached";
    }
    if (s->cfg->max_rss && e->rss > s->cfg->max_rss) {
        *cause = TF_CAUSE_MAX_RSS;
        return "max-rss exceeded";
    }
    return NULL;
}

/* Starts at most one replacement at a time: the first ready worker that is
 * from an older generation or asks to retire. */
static void tf_roll(tf_supervisor *s) {
    if (s->stopping || s->replacing > 0 || s->delay_until > 0)
        return;
    double now = tf_now();
    for (int id = 1; id <= s->wanted; id++) {
        tf_slot *slot = &s->slots[id];
        if (!slot->wanted || slot->current < 0 || slot->next >= 0 ||
            s->procs[slot->current].kind != TF_P_READY ||
            (slot->respawn_at > 0 && now < slot->respawn_at))
            continue;
        int cause = TF_CAUSE_CRASH;
        const char *why = tf_replace_reason(s, slot->current, &cause);
        if (!why)
            continue;
        slot->respawn_at = 0;
        tf_log("worker %d (pid %d): %s; starting its replacement", id,
               (int)s->procs[slot->current].pid, why);
        int idx = tf_fork_or_back_off(s, id);
        if (idx < 0)
            continue;
        slot->next = idx;
        s->replacing++;
        tf_sb->restarts_by_cause[cause]++;
        return;
    }
}

/* On a stop: no new connection enters the shared listen queue (a drop-all
 * socket filter: new SYNs are dropped, so clients retry and then find the
 * port closed), while the connections already queued stay for the workers to
 * accept. shutdown(SHUT_RD) on a listener would reset those instead. */
static void tf_stop_accepting(tf_supervisor *s) {
    if (!s->cfg->stop_filter || s->cfg->listen_fd < 0)
        return;
    struct sock_filter drop = BPF_STMT(BPF_RET | BPF_K, 0);
    struct sock_fprog prog = {.len = 1, .filter = &drop};
    if (setsockopt(s->cfg->listen_fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) < 0)
        tf_log("primary: cannot keep new connections out (SO_ATTACH_FILTER: %s); "
               "the workers drain the queue as it is",
               strerror(errno));
}

static void tf_begin_stop(tf_supervisor *s, int sig) {
    if (sig == SIGQUIT) {
        tf_notify(s, "STOPPING=1");
        tf_log("primary %d: SIGQUIT, stopping now", (int)s->self);
        s->stopping = SIGQUIT;
        s->killed = 1;
        tf_signal_workers(s, SIGKILL);
        return;
    }
    if (s->stopping)
        return;
    const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    if (s->cfg->shutdown_delay > 0 && !s->delayed && s->exit_status == 0) {
        /* load balancers see the instance going (health checks, STOPPING=1)
         * while it still answers everything */
        s->delayed = 1;
        s->delay_signal = sig;
        s->delay_until = tf_now() + s->cfg->shutdown_delay;
        tf_notify(s, "STOPPING=1");
        tf_log("primary %d: %s, still accepting for %.1f s (shutdown delay), then stopping",
               (int)s->self, name, s->cfg->shutdown_delay);
        return;
    }
    if (s->delay_until > 0 && tf_now() < s->delay_until)
        tf_log("primary %d: %s again, ending the shutdown delay", (int)s->self, name);
    if (!s->delayed)
        tf_notify(s, "STOPPING=1");
    s->delay_until = 0;
    s->stopping = sig;
    __atomic_store_n(&tf_sb->stopping, 1, __ATOMIC_RELAXED); /* readiness answers 503 */
    s->stop_deadline = tf_now() + s->cfg->graceful_timeout;
    if (sig == SIGINT || (sig == SIGTERM && s->exit_status == 0))
        tf_log("primary %d: %s, stopping gracefully (%d workers, timeout %.0f s)", (int)s->self,
               name, s->live, s->cfg->graceful_timeout);
    tf_stop_accepting(s);
    tf_signal_workers(s, SIGTERM);
}

static void tf_add_worker(tf_supervisor *s) {
    if (s->wanted >= TF_MAX_WORKERS) {
        tf_log("SIGTTIN: already at the maximum of %d workers", TF_MAX_WORKERS);
        return;
    }
    int id = ++s->wanted;
    tf_sb->workers = s->wanted;
    tf_slot *slot = &s->slots[id];
    slot->wanted = 1;
    slot->crashes = 0;
    slot->respawn_at = 0;
    tf_log("SIGTTIN: now %d workers", s->wanted);
    if (slot->current < 0 && slot->next < 0)
        tf_slot_spawn(s, id);
}

static void tf_remove_worker(tf_supervisor *s) {
    if (s->wanted <= 1) {
        tf_log("SIGTTOU: keeping the last worker");
        return;
    }
    int id = s->wanted--;
    tf_sb->workers = s->wanted;
    tf_slot *slot = &s->slots[id];
    slot->wanted = 0;
    slot->respawn_at = 0;
    tf_log("SIGTTOU: now %d workers", s->wanted);
    if (slot->next >= 0) {
        tf_retire(s, slot->next);
        slot->next = -1;
        s->replacing--;
    }
    if (slot->current >= 0) {
        tf_retire(s, slot->current);
        slot->current = -1;
    }
    tf_sb_slot_of(id)->state = TF_SLOT_UNUSED;
    tf_sb_slot_of(id)->pid = 0;
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
        if (s->stopping || s->delay_until > 0)
            break;
        /* signals that arrive during a roll coalesce: every worker older
         * than the newest generation is replaced once more, one at a time */
        s->generation++;
        tf_sb->generation = s->generation;
        tf_log("SIGHUP: rolling restart of %d workers (generation %u)", s->wanted,
               s->generation);
        if (s->cfg->notify_socket) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            char msg[80];
            snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
                     (unsigned long long)ts.tv_sec * 1000000ULL +
                         (unsigned long long)ts.tv_nsec / 1000ULL);
            tf_notify(s, msg);
            s->reloading = 1;
        }
        break;
    case SIGUSR1:
        /* workers reopen their access logs (the primary's own log is stderr) */
        if (s->cfg->http) {
            tf_log("SIGUSR1: reopening the access logs");
            tf_signal_workers(s, SIGUSR1);
        }
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

static void tf_sample(tf_supervisor *s) {
    long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < tf_sb->procs_hw; i++) {
        tf_proc *p = &s->procs[i];
        if (p->kind == TF_P_FREE)
            continue;
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/statm", (int)p->pid);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        unsigned long size = 0, resident = 0;
        if (fscanf(f, "%lu %lu", &size, &resident) == 2 && page > 0)
            tf_sb->procs[i].rss = (uint64_t)resident * (uint64_t)page;
        fclose(f);
    }
    if (s->cfg->listen_fd >= 0) {
        /* for a listening TCP socket: unacked = queued, sacked = backlog */
        struct tcp_info info;
        socklen_t len = sizeof(info);
        if (getsockopt(s->cfg->listen_fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0) {
            tf_sb->queue_depth = (int32_t)info.tcpi_unacked;
            tf_sb->queue_max = (int32_t)info.tcpi_sacked;
        } else {
            tf_sb->queue_depth = tf_sb->queue_max = -1;
        }
    }
}

/* Milliseconds until the next timed event, or -1 when there is none. */
static int tf_next_timeout(const tf_supervisor *s) {
    double now = tf_now(), next = -1;
#define TF_SOONER(t)                                                                         \
    do {                                                                                     \
        double t_ = (t);                                                                     \
        if (t_ > 0 && (next < 0 || t_ < next))                                               \
            next = t_;                                                                       \
    } while (0)
    if (s->stopping && !s->killed)
        TF_SOONER(s->stop_deadline);
    if (!s->stopping) {
        TF_SOONER(s->next_tick);
        TF_SOONER(s->delay_until);
        for (int id = 1; id <= s->wanted; id++)
            TF_SOONER(s->slots[id].respawn_at);
    }
    if (s->cfg->timeout > 0 && !s->killed)
        TF_SOONER(s->next_timeout_check);
#undef TF_SOONER
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
    if (s->delay_until > 0 && now >= s->delay_until)
        tf_begin_stop(s, s->delay_signal);
    if (s->stopping)
        return;
    for (int id = 1; id <= s->wanted; id++) {
        tf_slot *slot = &s->slots[id];
        if (!slot->wanted || slot->current >= 0 || slot->next >= 0)
            continue;
        if (slot->respawn_at <= 0 || now >= slot->respawn_at)
            tf_slot_spawn(s, id);
    }
    if (now >= s->next_tick) {
        s->next_tick = now + TF_TICK_SECONDS;
        tf_sample(s);
        for (int i = 0; i < tf_sb->procs_hw; i++) {
            tf_proc *p = &s->procs[i];
            if (p->kind == TF_P_STARTING && s->cfg->boot_timeout > 0 &&
                now - p->started > s->cfg->boot_timeout) {
                tf_log("worker %d (pid %d) not ready after %.0f s; killing it", p->id,
                       (int)p->pid, s->cfg->boot_timeout);
                tf_signal_proc(s, i, SIGKILL);
            }
        }
        for (int id = 1; id <= s->wanted; id++) {
            tf_slot *slot = &s->slots[id];
            if (slot->crashes && slot->current >= 0 &&
                s->procs[slot->current].kind == TF_P_READY &&
                now - s->procs[slot->current].started >= TF_STABLE_SECONDS) {
                slot->crashes = 0;
                tf_sb_slot_of(id)->crashes = 0;
            }
        }
    }
    tf_roll(s);
}

/* Requests running past cfg->timeout: the worker gets TF_TIMEOUT_SIGNAL once
 * (the embedder raises in the handler, the client gets a 503, the worker
 * stays); if the same request still runs a grace period later, the handler is
 * stuck where no signal reaches it (C code) and the worker is killed.
 * Workers publish request starts without waking the primary, so the next look
 * is at most one timeout away. Returns the monotonic time of the next look. */
static double tf_check_timeouts(tf_supervisor *s, double now) {
    double next = now + s->cfg->timeout;
    for (int i = 0; i < tf_sb->procs_hw; i++) {
        tf_proc *p = &s->procs[i];
        if (p->kind == TF_P_FREE || p->stuck)
            continue;
        const tf_sb_proc *e = &tf_sb->procs[i];
        if (__atomic_load_n(&e->state, __ATOMIC_ACQUIRE) != TF_W_BUSY)
            continue;
        double started = e->request_started;
        int signalled = p->timed_out == started;
        double deadline = started + s->cfg->timeout + (signalled ? s->cfg->timeout_grace : 0);
        if (now < deadline) {
            if (deadline < next)
                next = deadline;
            continue;
        }
        if (!signalled) {
            p->timed_out = started;
            tf_signal_proc(s, i, TF_TIMEOUT_SIGNAL);
            if (now + s->cfg->timeout_grace < next)
                next = now + s->cfg->timeout_grace;
            continue;
        }
        char method[sizeof(e->method)], path[sizeof(e->path)];
        memcpy(method, e->method, sizeof(method)); /* the worker may be rewriting them */
        memcpy(path, e->path, sizeof(path));
        method[sizeof(method) - 1] = path[sizeof(path) - 1] = '\0';
        tf_log("worker %d (pid %d): %s %s still running after %.2f s (timeout %.2f s, grace "
               "%.2f s), stuck where no signal reaches it; killing the worker",
               p->id, (int)p->pid, method, path, now - started, s->cfg->timeout,
               s->cfg->timeout_grace);
        p->stuck = 1;
        tf_signal_proc(s, i, SIGKILL);
    }
    return next;
}

/* READY=1 to systemd once every wanted worker of the current code generation
 * is ready: at start-up, and again after a SIGHUP roll (RELOADING=1). */
static void tf_check_notify(tf_supervisor *s) {
    if (!s->cfg->notify_socket || s->stopping || s->delay_until > 0 ||
        (s->ready_sent && !s->reloading) || s->replacing > 0)
        return;
    for (int id = 1; id <= s->wanted; id++) {
        int cur = s->slots[id].current;
        if (cur < 0 || s->procs[cur].kind != TF_P_READY ||
            tf_sb->procs[cur].generation != s->generation)
            return;
    }
    char msg[96];
    snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%d workers ready", s->wanted);
    tf_notify(s, msg);
    s->ready_sent = 1;
    s->reloading = 0;
}

static void tf_drain_fd(int fd) {
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
}

int tf_supervise(const tf_supervisor_config *cfg, const tf_supervisor_callbacks *cb) {
    int own_scoreboard = 0;
    int workers = cfg->workers < 1 ? 1 : cfg->workers > TF_MAX_WORKERS ? TF_MAX_WORKERS : cfg->workers;
    if (!tf_sb) {
        /* the embedder made none: an anonymous one (no `tailfast status`) */
        if (tf_scoreboard_create(NULL, workers, NULL) < 0) {
            tf_log("primary: scoreboard: %s", strerror(errno));
            return 1;
        }
        own_scoreboard = 1;
    }
    tf_supervisor *s = calloc(1, sizeof(*s));
    if (!s) {
        tf_log("primary: out of memory");
        if (own_scoreboard)
            tf_scoreboard_destroy(NULL);
        return 1;
    }
    s->cfg = cfg;
    s->cb = cb;
    s->self = getpid();
    s->wake_fd = tf_scoreboard_wake_fd();
    tf_sb->primary_pid = (int32_t)s->self;
    tf_sb->workers = workers;
    for (int id = 0; id <= TF_MAX_WORKERS; id++)
        s->slots[id].current = s->slots[id].next = -1;

    sigset_t handled, previous;
    sigemptyset(&handled);
    const int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaddset(&handled, sigs[i]);
    if (sigprocmask(SIG_BLOCK, &handled, &previous) < 0) {
        tf_log("primary: sigprocmask: %s", strerror(errno));
        free(s);
        if (own_scoreboard)
            tf_scoreboard_destroy(NULL);
        return 1;
    }
    s->signal_fd = signalfd(-1, &handled, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->signal_fd < 0) {
        tf_log("primary: signalfd: %s", strerror(errno));
        sigprocmask(SIG_SETMASK, &previous, NULL);
        free(s);
        if (own_scoreboard)
            tf_scoreboard_destroy(NULL);
        return 1;
    }

    s->wanted = workers;
    for (int id = 1; id <= workers; id++) {
        s->slots[id].wanted = 1;
        tf_slot_spawn(s, id);
    }
    s->next_tick = tf_now();

    while (!(s->stopping && s->live == 0)) {
        struct pollfd pfd[2] = {{.fd = s->signal_fd, .events = POLLIN},
                                {.fd = s->wake_fd, .events = POLLIN}};
        int timeout = tf_next_timeout(s);
        cb->release(cb->ctx);
        int n = poll(pfd, s->wake_fd >= 0 ? 2 : 1, timeout);
        int poll_errno = errno;
        cb->acquire(cb->ctx);
        if (n < 0 && poll_errno != EINTR) {
            tf_log("primary: poll: %s", strerror(poll_errno));
            break;
        }
        if (s->wake_fd >= 0 && n > 0 && (pfd[1].revents & POLLIN))
            tf_drain_fd(s->wake_fd);
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
        tf_check_ready(s);
        tf_on_timers(s);
        if (cfg->timeout > 0 && !s->killed)
            s->next_timeout_check = tf_check_timeouts(s, tf_now());
        tf_check_notify(s);
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
            for (int i = 0; i < TF_MAX_PROCS; i++)
                if (s->procs[i].kind != TF_P_FREE && s->procs[i].pid == pid) {
                    tf_proc_free(s, i);
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
    if (own_scoreboard)
        tf_scoreboard_destroy(NULL);
    return status;
}
