/* supervisor_timers.c — timed work: stop and drain deadlines, back-off, boot/request timeouts. */
#define _GNU_SOURCE
#include "supervisor_internal.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Milliseconds until the next timed event, or -1 when there is none. */
int tf_sv_next_timeout(const tf_supervisor *s) {
    double now = tf_clock_precise(), next = -1;
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
    for (int i = 0; i < s->procs_hw && !s->killed; i++)
        if (s->procs[i].state == TF_W_DRAINING)
            TF_SOONER(s->procs[i].drain_deadline);
#undef TF_SOONER
    if (next < 0)
        return -1;
    double ms = (next - now) * 1000.0;
    return ms <= 0 ? 0 : (int)(ms + 1);
}

/* Each process's resident memory (for --max-rss and the metrics) and the
 * listen queue's depth, into the scoreboard. */
static void tf_sv_sample(tf_supervisor *s) {
    long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < s->procs_hw; i++) {
        tf_proc *p = &s->procs[i];
        if (p->state == TF_W_FREE)
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

/* Once a second: sampling, workers too slow to become ready, and the crash
 * count of slots whose worker has now been up long enough. */
static void tf_sv_tick(tf_supervisor *s, double now) {
    tf_sv_sample(s);
    for (int i = 0; i < s->procs_hw; i++) {
        tf_proc *p = &s->procs[i];
        if (p->state == TF_W_STARTING && s->cfg->boot_timeout > 0 &&
            now - p->started > s->cfg->boot_timeout) {
            tf_log("worker %d (pid %d) not ready after %.0f s; killing it", p->id, (int)p->pid,
                   s->cfg->boot_timeout);
            tf_sv_signal_proc(s, i, SIGKILL);
        }
    }
    for (int id = 1; id <= s->wanted; id++) {
        /* only a process started after the last crash proves the slot stable:
         * failed replacements of a long-serving worker keep counting */
        tf_slot *slot = &s->slots[id];
        const tf_proc *cur = slot->current >= 0 ? &s->procs[slot->current] : NULL;
        if (slot->crashes && cur && cur->state == TF_W_IDLE && cur->started >= slot->last_crash &&
            now - cur->started >= TF_STABLE_SECONDS)
            slot->crashes = 0;
    }
}

/* Retired processes (replaced, or removed by SIGTTOU) past their graceful
 * timeout get SIGKILL: neither a client that does not read nor a replacement
 * stuck while starting may keep one alive, and reloads never pile them up. */
static void tf_sv_kill_overdue(tf_supervisor *s, double now) {
    for (int i = 0; i < s->procs_hw; i++) {
        tf_proc *p = &s->procs[i];
        if (p->state != TF_W_DRAINING || p->drain_deadline <= 0 || now < p->drain_deadline)
            continue;
        tf_log("worker %d (pid %d) still draining %.0f s after it was retired (graceful "
               "timeout); killing it",
               p->id, (int)p->pid, s->cfg->graceful_timeout);
        p->drain_deadline = 0; /* once */
        tf_sv_signal_proc(s, i, SIGKILL);
    }
}

void tf_sv_on_timers(tf_supervisor *s) {
    double now = tf_clock_precise();
    if (s->stopping && !s->killed && now >= s->stop_deadline && s->live > 0) {
        tf_log("graceful timeout: killing %d remaining workers", s->live);
        s->killed = 1;
        tf_sv_signal_workers(s, SIGKILL);
    }
    if (!s->killed)
        tf_sv_kill_overdue(s, now);
    if (s->delay_until > 0 && now >= s->delay_until)
        tf_sv_begin_stop(s, s->delay_signal);
    if (s->stopping)
        return;
    for (int id = 1; id <= s->wanted; id++) {
        tf_slot *slot = &s->slots[id];
        if (!slot->wanted || slot->current >= 0 || slot->next >= 0)
            continue;
        if (slot->respawn_at <= 0 || now >= slot->respawn_at)
            tf_sv_slot_spawn(s, id);
    }
    if (now >= s->next_tick) {
        s->next_tick = now + TF_TICK_SECONDS;
        tf_sv_tick(s, now);
    }
}

/* Requests running past cfg->timeout: the worker gets TF_TIMEOUT_SIGNAL once
 * (the embedder raises in the handler, the client gets a 503, the worker
 * stays); if the same request still runs a grace period later, the handler is
 * stuck where no signal reaches it (C code) and the worker is killed.
 * Workers publish request starts without waking the primary, so the next look
 * is at most one timeout away. Returns the monotonic time of the next look. */
double tf_sv_check_timeouts(tf_supervisor *s, double now) {
    double next = now + s->cfg->timeout;
    for (int i = 0; i < s->procs_hw; i++) {
        tf_proc *p = &s->procs[i];
        if (p->state == TF_W_FREE || p->stuck)
            continue;
        const tf_sb_proc *e = &tf_sb->procs[i];
        /* the loop's own request, or the oldest on a runner thread */
        int busy = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE) == TF_W_BUSY;
        double started = busy ? e->request_started : 0;
        double deferred = e->in_flight_started;
        if (deferred > 0 && (started == 0 || deferred < started))
            started = deferred;
        if (started == 0)
            continue;
        int signalled = p->timed_out == started;
        double deadline = started + s->cfg->timeout + (signalled ? s->cfg->timeout_grace : 0);
        if (now < deadline) {
            if (deadline < next)
                next = deadline;
            continue;
        }
        if (!signalled) {
            p->timed_out = started;
            tf_sv_signal_proc(s, i, TF_TIMEOUT_SIGNAL);
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
        tf_sv_signal_proc(s, i, SIGKILL);
    }
    return next;
}
