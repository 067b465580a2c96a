/* supervisor_procs.c — the process and slot tables: fork, respawn, back-off, publishing. */
#define _GNU_SOURCE
#include "supervisor_internal.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

/* The one place a process's state changes: in the primary's table and, for
 * what the primary decides, in the scoreboard (an entry taken or released,
 * and a process without an HTTP loop, ready once forked). A worker's loop
 * publishes its own idle, busy and draining in its entry: the primary learns
 * ready from there (tf_sv_check_ready), and draining is what it asked for. */
void tf_sv_proc_set_state(tf_supervisor *s, int idx, int state) {
    s->procs[idx].state = state;
    if (state == TF_W_IDLE)
        s->ever_ready = 1;
    if (state == TF_W_FREE || state == TF_W_STARTING || (state == TF_W_IDLE && !s->cfg->http))
        __atomic_store_n(&tf_sb->procs[idx].state, state, __ATOMIC_RELEASE);
}

void tf_sv_proc_free(tf_supervisor *s, int idx) {
    tf_scoreboard_fold(idx); /* its counters outlive it, for the metrics */
    tf_sv_proc_set_state(s, idx, TF_W_FREE); /* first: readers skip the entry from here on */
    memset(&s->procs[idx], 0, sizeof(s->procs[idx]));
    memset(&tf_sb->procs[idx], 0, sizeof(tf_sb->procs[idx]));
    while (s->procs_hw > 0 && s->procs[s->procs_hw - 1].state == TF_W_FREE)
        s->procs_hw--;
    tf_sb->procs_hw = s->procs_hw;
}

/* Writes every slot's scoreboard entry from the slot table: the only writer
 * of a slot's state, pid, crashes, restarts and next attempt. Called once per
 * pass of the loop, after everything that pass changed. */
void tf_sv_publish_slots(tf_supervisor *s) {
    double mono = tf_clock_precise(), wall = tf_clock_wall();
    for (int id = 1; id <= s->slots_hw; id++) {
        const tf_slot *slot = &s->slots[id];
        tf_sb_slot *e = &tf_sb->slots[id];
        int32_t state = TF_SLOT_UNUSED, pid = 0;
        if (slot->wanted && slot->current >= 0) {
            state = TF_SLOT_RUNNING;
            pid = (int32_t)s->procs[slot->current].pid;
        } else if (slot->wanted && slot->respawn_at > 0) {
            state = TF_SLOT_BACKOFF;
        }
        e->state = state;
        e->pid = pid;
        e->restarts = slot->restarts;
        e->crashes = (uint32_t)slot->crashes;
        e->next_attempt = slot->respawn_at > 0 ? wall + (slot->respawn_at - mono) : 0;
    }
}

/* Takes a free entry for a process of worker id and publishes it as
 * starting; returns its index, or -1 with errno EAGAIN when none is free. */
static int tf_sv_proc_take(tf_supervisor *s, int id) {
    int idx = -1;
    for (int i = 0; i < TF_MAX_PROCS && idx < 0; i++)
        if (s->procs[i].state == TF_W_FREE)
            idx = i;
    if (idx < 0) {
        errno = EAGAIN;
        return -1;
    }
    tf_sb_proc *e = &tf_sb->procs[idx];
    memset(e, 0, sizeof(*e));
    e->worker_id = id;
    e->generation = s->generation;
    s->procs[idx].id = id;
    tf_sv_proc_set_state(s, idx, TF_W_STARTING);
    if (idx + 1 > s->procs_hw)
        s->procs_hw = idx + 1;
    tf_sb->procs_hw = s->procs_hw;
    return idx;
}

/* Forks a worker for id into a free scoreboard entry; returns the entry's
 * index, or -1 with errno (the fork failed, or no entry is free). */
static int tf_sv_fork(tf_supervisor *s, int id) {
    int idx = tf_sv_proc_take(s, id);
    if (idx < 0)
        return -1;
    s->cb->before_fork(s->cb->ctx);
    pid_t pid = fork();
    if (pid == 0) {
        /* the child: die with the primary, forget the primary's descriptors */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != s->self)
            _exit(0);
        close(s->signal_fd);
        tf_scoreboard_attach(idx);
        _exit(s->cb->child_main(s->cb->ctx, id));
    }
    int fork_errno = errno;
    s->cb->after_fork_parent(s->cb->ctx);
    if (pid < 0) {
        tf_sv_proc_free(s, idx);
        errno = fork_errno;
        return -1;
    }
    tf_sb->procs[idx].pid = (int32_t)pid;
    tf_proc *p = &s->procs[idx];
    p->pid = pid;
    p->started = tf_clock_precise();
    if (!s->cfg->http)
        tf_sv_proc_set_state(s, idx, TF_W_IDLE); /* no loop to wait for: ready once forked */
    s->live++;
    tf_slot *slot = &s->slots[id];
    if (slot->started_once)
        slot->restarts++;
    slot->started_once = 1;
    tf_log("worker %d (pid %d) started", id, (int)pid);
    return idx;
}

/* Counts an early death (or failed fork) of slot id; returns the back-off
 * delay before the next attempt (0: at once). */
double tf_sv_count_crash(tf_supervisor *s, int id, double uptime) {
    tf_slot *slot = &s->slots[id];
    double now = tf_clock_precise();
    if (slot->crashes == 0 || uptime >= TF_STABLE_SECONDS) {
        slot->crashes = 1;
        slot->first_crash = now;
    } else {
        slot->crashes++;
    }
    slot->last_crash = now;
    if (slot->crashes <= 1)
        return 0;
    double delay = TF_BACKOFF_FIRST;
    for (int i = 2; i < slot->crashes && delay < TF_BACKOFF_MAX; i++)
        delay *= 2;
    return delay > TF_BACKOFF_MAX ? TF_BACKOFF_MAX : delay;
}

void tf_sv_backoff(tf_supervisor *s, int id, double delay) {
    s->slots[id].respawn_at = tf_clock_precise() + delay;
}

/* Forks a process for worker id; a failed fork (EAGAIN, ENOMEM) counts as a
 * crash of the slot and backs off instead of taking the primary down.
 * Returns the process index, or -1. */
int tf_sv_fork_or_back_off(tf_supervisor *s, int id) {
    int idx = tf_sv_fork(s, id);
    if (idx >= 0)
        return idx;
    int err = errno;
    tf_slot *slot = &s->slots[id];
    double delay = tf_sv_count_crash(s, id, 0);
    if (delay < TF_BACKOFF_FIRST)
        delay = TF_BACKOFF_FIRST;
    tf_log("worker %d: fork failed: %s; %d failures in %.1f s, next attempt in %.1f s", id,
           strerror(err), slot->crashes, tf_clock_precise() - slot->first_crash, delay);
    tf_sv_backoff(s, id, delay);
    return -1;
}

/* Forks the process serving for an empty slot; backs off when fork fails. */
void tf_sv_slot_spawn(tf_supervisor *s, int id) {
    tf_slot *slot = &s->slots[id];
    slot->respawn_at = 0;
    int idx = tf_sv_fork_or_back_off(s, id);
    if (idx >= 0)
        slot->current = idx;
}

void tf_sv_signal_proc(tf_supervisor *s, int idx, int sig) {
    tf_proc *p = &s->procs[idx];
    if (p->pid > 0 && kill(p->pid, sig) < 0 && errno != ESRCH)
        tf_log("cannot signal worker %d (pid %d): %s", p->id, (int)p->pid, strerror(errno));
}

void tf_sv_signal_workers(tf_supervisor *s, int sig) {
    for (int i = 0; i < TF_MAX_PROCS; i++)
        if (s->procs[i].state != TF_W_FREE)
            tf_sv_signal_proc(s, i, sig);
}

/* Tells a process to drain and exit within the graceful timeout, as at a
 * stop (tf_sv_kill_overdue enforces it); its worker publishes draining
 * itself when it handles the signal. */
void tf_sv_retire(tf_supervisor *s, int idx) {
    tf_sv_proc_set_state(s, idx, TF_W_DRAINING);
    s->procs[idx].drain_deadline = tf_clock_precise() + s->cfg->graceful_timeout;
    tf_sv_signal_proc(s, idx, SIGTERM);
}
