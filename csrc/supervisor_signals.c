/* supervisor_signals.c — what each signal does: stop, re-read and roll, workers more or less. */
#define _GNU_SOURCE
#include "supervisor_internal.h"

#include <errno.h>
#include <linux/filter.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

int tf_signals_unblock_all(void) {
    sigset_t none;
    sigemptyset(&none);
    return sigprocmask(SIG_SETMASK, &none, NULL);
}

/* On a stop: no new connection enters the shared listen queue, while the
 * connections already queued stay for the workers to accept (shutdown(SHUT_RD)
 * on a listener would reset those). A socket filter drops each segment with
 * SYN set and ACK clear: new connections' SYNs (clients retry, then find the
 * port closed); the last ACK of a handshake in progress passes, and the
 * connection it completes is queued and served (a drop-all filter left those
 * clients established and unanswered until a reset). On a TCP socket the
 * filter sees the segment from its TCP header, for IPv4 and IPv6 alike: the
 * flags are byte 13 (the connections it completes inherit the filter: it
 * passes all their segments). Not for a unix socket, which a filter cannot
 * close (its connections do not pass the listener's filter). Returns 1 when
 * the queue is sealed. */
static int tf_sv_stop_accepting(tf_supervisor *s) {
    int domain = 0;
    socklen_t len = sizeof(domain);
    if (!s->cfg->stop_filter || s->cfg->listen_fd < 0)
        return 0;
    if (getsockopt(s->cfg->listen_fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) {
        tf_log("primary: cannot keep new connections out (SO_DOMAIN: %s); "
               "the workers drain the queue as it is",
               strerror(errno));
        return 0;
    }
    if (domain != AF_INET && domain != AF_INET6)
        return 0;
    struct sock_filter only_syns_out[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),                /* TCP flags */
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, TH_SYN | TH_ACK),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TH_SYN, 0, 1),     /* a connection request */
        BPF_STMT(BPF_RET | BPF_K, 0),                          /* dropped */
        BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),                /* kept whole */
    };
    struct sock_fprog prog = {.len = sizeof(only_syns_out) / sizeof(only_syns_out[0]),
                              .filter = only_syns_out};
    if (setsockopt(s->cfg->listen_fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) < 0) {
        tf_log("primary: cannot keep new connections out (SO_ATTACH_FILTER: %s); "
               "the workers drain the queue as it is",
               strerror(errno));
        return 0;
    }
    return 1;
}

/* SIGTERM/SIGINT with a shutdown delay: load balancers see the instance
 * going (health checks, STOPPING=1) while it still answers everything. */
static void tf_sv_begin_delay(tf_supervisor *s, int sig, const char *name) {
    s->delayed = 1;
    s->delay_signal = sig;
    s->delay_until = tf_clock_precise() + s->cfg->shutdown_delay;
    tf_sd_notify(s->cfg->notify_socket, "STOPPING=1");
    tf_log("primary %d: %s, still accepting for %.1f s (shutdown delay), then stopping",
           (int)s->self, name, s->cfg->shutdown_delay);
}

/* SIGQUIT, or a second SIGTERM/SIGINT: kill what is left and stop now. */
static void tf_sv_stop_now(tf_supervisor *s, const char *why) {
    if (!s->stopping && !s->delayed)
        tf_sd_notify(s->cfg->notify_socket, "STOPPING=1");
    tf_log("primary %d: %s, stopping now", (int)s->self, why);
    s->stopping = SIGQUIT;
    s->killed = 1;
    tf_sv_signal_workers(s, SIGKILL);
}

/* SIGQUIT stops at once; SIGTERM/SIGINT stop gracefully, after the shutdown
 * delay when there is one (a second signal ends the delay). */
void tf_sv_begin_stop(tf_supervisor *s, int sig) {
    const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    if (sig == SIGQUIT) {
        tf_sv_stop_now(s, "SIGQUIT");
        return;
    }
    if (s->stopping)
        return;
    if (s->cfg->shutdown_delay > 0 && !s->delayed && s->exit_status == 0) {
        tf_sv_begin_delay(s, sig, name);
        return;
    }
    if (s->delay_until > 0 && tf_clock_precise() < s->delay_until)
        tf_log("primary %d: %s again, ending the shutdown delay", (int)s->self, name);
    if (!s->delayed)
        tf_sd_notify(s->cfg->notify_socket, "STOPPING=1");
    s->delay_until = 0;
    s->stopping = sig;
    /* readiness answers 503; with the queue sealed the workers empty it */
    int sealed = tf_sv_stop_accepting(s);
    __atomic_store_n(&tf_sb->stopping, sealed ? TF_STOPPING_SEALED : TF_STOPPING_OPEN,
                     __ATOMIC_RELEASE);
    s->stop_deadline = tf_clock_precise() + s->cfg->graceful_timeout;
    if (sig == SIGINT || (sig == SIGTERM && s->exit_status == 0))
        tf_log("primary %d: %s, stopping gracefully (%d workers, timeout %.0f s)", (int)s->self,
               name, s->live, s->cfg->graceful_timeout);
    tf_sv_signal_workers(s, SIGTERM);
}

/* SIGHUP, first: the embedder re-reads its settings (before_roll) and the
 * supervisor takes from them what can change without a new socket or
 * scoreboard; *workers gets the count they ask for. Returns 0, or -1 when the
 * embedder keeps the configuration in force (it has logged why): no roll. */
static int tf_sv_reconfigure(tf_supervisor *s, int *workers) {
    *workers = s->wanted;
    if (!s->cb->before_roll)
        return 0; /* spawn_workers: nothing to re-read, TTIN/TTOU's count stays */
    tf_supervisor_config next = s->cfg_now;
    if (s->cb->before_roll(s->cb->ctx, &next) < 0)
        return -1;
    tf_supervisor_config *now = &s->cfg_now;
    now->graceful_timeout = next.graceful_timeout;
    now->max_rss = next.max_rss;
    now->boot_timeout = next.boot_timeout;
    now->timeout = next.timeout;
    now->timeout_grace = next.timeout_grace;
    now->shutdown_delay = next.shutdown_delay;
    *workers = next.workers < 1 ? 1 : next.workers > TF_MAX_WORKERS ? TF_MAX_WORKERS : next.workers;
    return 0;
}

/* SIGHUP: signals that arrive during a roll coalesce: every worker older
 * than the newest generation is replaced once more, one at a time
 * (tf_sv_roll). The worker count follows the re-read configuration. A slot
 * backing off after failed starts (a replacement, or its only worker) is
 * tried again at once: the signal says new code (or a new configuration) is
 * there to try. */
static void tf_sv_reload(tf_supervisor *s) {
    if (s->stopping || s->delay_until > 0)
        return;
    int workers;
    if (tf_sv_reconfigure(s, &workers) < 0)
        return;
    s->generation++;
    tf_sb->generation = s->generation;
    if (workers != s->wanted)
        tf_log("SIGHUP: rolling restart, %d workers (were %d; generation %u)", workers,
               s->wanted, s->generation);
    else
        tf_log("SIGHUP: rolling restart of %d workers (generation %u)", s->wanted,
               s->generation);
    if (s->cfg->notify_socket) {
        tf_sd_notify_reloading(s->cfg->notify_socket);
        s->reloading = 1;
    }
    tf_sv_set_workers(s, workers);
    for (int id = 1; id <= s->wanted; id++) {
        tf_slot *slot = &s->slots[id];
        if (slot->next < 0 && slot->respawn_at > 0) {
            slot->respawn_at = 0; /* an empty slot is forked by tf_sv_on_timers next */
            slot->crashes = 0;
        }
    }
}

/* One worker id more (its worker starts at once); why names the cause in the
 * log (NULL: the caller logs). Returns 0, or -1 at the maximum. */
static int tf_sv_grow(tf_supervisor *s, const char *why) {
    if (s->wanted >= TF_MAX_WORKERS)
        return -1;
    int id = ++s->wanted;
    tf_sb->workers = s->wanted;
    if (id > s->slots_hw)
        s->slots_hw = id;
    tf_slot *slot = &s->slots[id];
    slot->wanted = 1;
    slot->crashes = 0;
    slot->respawn_at = 0;
    if (why)
        tf_log("%s: now %d workers", why, s->wanted);
    if (slot->current < 0 && slot->next < 0)
        tf_sv_slot_spawn(s, id);
    return 0;
}

/* The highest worker id less: its processes drain. Returns 0, or -1 when one is left. */
static int tf_sv_shrink(tf_supervisor *s, const char *why) {
    if (s->wanted <= 1)
        return -1;
    int id = s->wanted--;
    tf_sb->workers = s->wanted;
    tf_slot *slot = &s->slots[id];
    slot->wanted = 0;
    slot->respawn_at = 0;
    if (why)
        tf_log("%s: now %d workers", why, s->wanted);
    if (slot->next >= 0) {
        tf_sv_retire(s, slot->next);
        slot->next = -1;
        s->replacing--;
    }
    if (slot->current >= 0) {
        tf_sv_retire(s, slot->current);
        slot->current = -1;
    }
    return 0;
}

/* Grows or shrinks to count workers (1..TF_MAX_WORKERS), without logging each step. */
void tf_sv_set_workers(tf_supervisor *s, int count) {
    while (s->wanted < count && tf_sv_grow(s, NULL) == 0) {
    }
    while (s->wanted > count && tf_sv_shrink(s, NULL) == 0) {
    }
}

void tf_sv_on_signal(tf_supervisor *s, int sig) {
    switch (sig) {
    case SIGCHLD:
        tf_sv_reap(s);
        break;
    case SIGTERM:
    case SIGINT:
        /* A second one during a graceful stop means now (Ctrl+C twice); only
         * a signal from outside does this, not a stop the primary began. */
        if (s->stopping && !s->killed)
            tf_sv_stop_now(s, sig == SIGINT ? "SIGINT again" : "SIGTERM again");
        else
            tf_sv_begin_stop(s, sig);
        break;
    case SIGQUIT:
        tf_sv_begin_stop(s, sig);
        break;
    case SIGHUP:
        tf_sv_reload(s);
        break;
    case SIGUSR1:
        /* workers reopen their access logs (the primary's own log is stderr) */
        if (s->cfg->http) {
            tf_log("SIGUSR1: reopening the access logs");
            tf_sv_signal_workers(s, SIGUSR1);
        }
        break;
    case SIGTTIN:
        if (!s->stopping && tf_sv_grow(s, "SIGTTIN") < 0)
            tf_log("SIGTTIN: already at the maximum of %d workers", TF_MAX_WORKERS);
        break;
    case SIGTTOU:
        if (!s->stopping && tf_sv_shrink(s, "SIGTTOU") < 0)
            tf_log("SIGTTOU: keeping the last worker");
        break;
    default:
        break;
    }
}
