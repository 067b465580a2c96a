/* supervisor_roll.c — workers becoming ready, replaced one at a time, READY=1 once all are. */
#define _GNU_SOURCE
#include "supervisor_internal.h"

#include <stdio.h>

/* Starting workers that marked themselves ready: a replacement takes over its
 * slot and the worker it replaces is told to drain. */
void tf_sv_check_ready(tf_supervisor *s) {
    for (int i = 0; i < s->procs_hw; i++) {
        tf_proc *p = &s->procs[i];
        if (p->state != TF_W_STARTING)
            continue;
        int state = __atomic_load_n(&tf_sb->procs[i].state, __ATOMIC_ACQUIRE);
        if (state != TF_W_IDLE && state != TF_W_BUSY)
            continue;
        tf_sv_proc_set_state(s, i, TF_W_IDLE);
        double ms = (tf_clock_precise() - p->started) * 1000.0;
        tf_slot *slot = &s->slots[p->id];
        if (slot->next != i) {
            tf_log("worker %d (pid %d) ready in %.0f ms", p->id, (int)p->pid, ms);
            continue;
        }
        int old = slot->current;
        slot->current = i;
        slot->next = -1;
        s->replacing--;
        if (old >= 0) {
            tf_log("worker %d (pid %d) ready in %.0f ms; retiring pid %d", p->id, (int)p->pid,
                   ms, (int)s->procs[old].pid);
            tf_sv_retire(s, old);
        }
    }
}

/* Why the ready process idx should be replaced (and the cause counted for
 * it), or NULL when it should keep serving. */
static const char *tf_sv_replace_reason(tf_supervisor *s, int idx, int *cause) {
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
void tf_sv_roll(tf_supervisor *s) {
    if (s->stopping || s->replacing > 0 || s->delay_until > 0)
        return;
    double now = tf_clock_precise();
    for (int id = 1; id <= s->wanted; id++) {
        tf_slot *slot = &s->slots[id];
        if (!slot->wanted || slot->current < 0 || slot->next >= 0 ||
            s->procs[slot->current].state != TF_W_IDLE ||
            (slot->respawn_at > 0 && now < slot->respawn_at))
            continue;
        int cause = TF_CAUSE_CRASH;
        const char *why = tf_sv_replace_reason(s, slot->current, &cause);
        if (!why)
            continue;
        slot->respawn_at = 0;
        tf_log("worker %d (pid %d): %s; starting its replacement", id,
               (int)s->procs[slot->current].pid, why);
        int idx = tf_sv_fork_or_back_off(s, id);
        if (idx < 0)
            continue;
        slot->next = idx;
        s->replacing++;
        tf_sb->restarts_by_cause[cause]++;
        return;
    }
}

/* READY=1 to systemd once every wanted worker of the current code generation
 * is ready: at start-up, and again after a SIGHUP roll (RELOADING=1). */
void tf_sv_check_notify(tf_supervisor *s) {
    if (!s->cfg->notify_socket || s->stopping || s->delay_until > 0 ||
        (s->ready_sent && !s->reloading) || s->replacing > 0)
        return;
    for (int id = 1; id <= s->wanted; id++) {
        int cur = s->slots[id].current;
        if (cur < 0 || s->procs[cur].state != TF_W_IDLE ||
            tf_sb->procs[cur].generation != s->generation)
            return;
    }
    char msg[96];
    snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%d workers ready", s->wanted);
    tf_sd_notify(s->cfg->notify_socket, msg);
    s->ready_sent = 1;
    s->reloading = 0;
}
