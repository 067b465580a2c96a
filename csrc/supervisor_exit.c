/* supervisor_exit.c — a worker process ended: classify the exit, then act on its class. */
#define _GNU_SOURCE
#include "supervisor_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

/* Why a process ended, as far as the primary can tell; each class has one
 * action in tf_sv_act_on_exit. The first that applies, in this order. */
typedef enum {
    TF_END_STOPPED,    /* the server is stopping, or the slot was removed: not replaced */
    TF_END_RETIRED,    /* drained as asked, its replacement serving: not replaced */
    TF_END_FATAL,      /* exit status TF_EXIT_FATAL before any worker was ever ready: stop */
    TF_END_TAKEN_OVER, /* died while its replacement was starting: that one takes the slot */
    TF_END_UNREADY,    /* a replacement died before it was ready: back off, the old one serves */
    TF_END_STUCK,      /* killed for a request stuck past the timeout: replaced at once */
    TF_END_CRASH       /* died unasked: replaced at once, or after a back-off when it
                          keeps dying early */
} tf_end;

/* What the exit handling needs of a process once its entry is released. */
typedef struct {
    tf_proc proc;   /* the process as the primary knew it */
    int served;     /* it answered requests: it was not boot-looping */
    double uptime;  /* seconds since its fork */
    char why[64];   /* "killed by signal 9", "exited with status 1" */
} tf_ended;

static tf_end tf_sv_classify_exit(const tf_supervisor *s, int idx, int status) {
    const tf_proc *p = &s->procs[idx];
    const tf_slot *slot = &s->slots[p->id];
    int was_next = slot->next == idx;
    if (s->stopping || !slot->wanted)
        return TF_END_STOPPED;
    if (p->state == TF_W_DRAINING)
        return TF_END_RETIRED;
    /* "cannot start" stops the server only at its very first start: later it
     * may be transient (EMFILE, ENOMEM; a --no-preload import of code being
     * deployed) and the workers that started once still serve, so it backs
     * off like a crash below */
    if (WIFEXITED(status) && WEXITSTATUS(status) == TF_EXIT_FATAL && !was_next &&
        !s->ever_ready)
        return TF_END_FATAL;
    if (slot->current == idx && slot->next >= 0)
        return TF_END_TAKEN_OVER;
    if (was_next)
        return TF_END_UNREADY;
    return p->stuck ? TF_END_STUCK : TF_END_CRASH;
}

static void tf_sv_describe_exit(int status, char *out, size_t cap) {
    if (WIFSIGNALED(status))
        snprintf(out, cap, "killed by signal %d%s", WTERMSIG(status),
                 WCOREDUMP(status) ? " (core dumped)" : "");
    else
        snprintf(out, cap, "exited with status %d", WEXITSTATUS(status));
}

/* Releases the process's entry and takes it out of its slot; returns what
 * the actions need to know of it. */
static tf_ended tf_sv_forget(tf_supervisor *s, int idx, int status) {
    tf_ended e = {.proc = s->procs[idx]};
    tf_sv_describe_exit(status, e.why, sizeof(e.why));
    e.uptime = tf_clock_precise() - e.proc.started;
    e.served = tf_sb->procs[idx].requests > 0;
    tf_slot *slot = &s->slots[e.proc.id];
    tf_sv_proc_free(s, idx);
    s->live--;
    if (slot->current == idx)
        slot->current = -1;
    if (slot->next == idx) {
        slot->next = -1;
        s->replacing--;
    }
    return e;
}

/* The serving process died while its replacement starts: no gap to fill. */
static void tf_sv_take_over(tf_supervisor *s, const tf_ended *e) {
    tf_slot *slot = &s->slots[e->proc.id];
    slot->current = slot->next;
    slot->next = -1;
    s->replacing--;
    tf_log("worker %d (pid %d) %s; its replacement (pid %d) takes over", e->proc.id,
           (int)e->proc.pid, e->why, (int)s->procs[slot->current].pid);
}

/* A replacement that never became ready: the old worker keeps serving, and
 * the next replacement waits at least the first back-off. */
static void tf_sv_replacement_failed(tf_supervisor *s, const tf_ended *e) {
    tf_slot *slot = &s->slots[e->proc.id];
    double delay = tf_sv_count_crash(s, e->proc.id, e->uptime);
    if (delay < TF_BACKOFF_FIRST)
        delay = TF_BACKOFF_FIRST;
    tf_log("worker %d (pid %d) %s before it was ready; crashed %d times in %.1f s, "
           "next attempt in %.1f s",
           e->proc.id, (int)e->proc.pid, e->why, slot->crashes,
           tf_clock_precise() - slot->first_crash, delay);
    tf_sv_backoff(s, e->proc.id, delay);
}

/* An unasked death of the serving process. One that answered requests was
 * not boot-looping (a kill from outside, the OOM killer, a crash while
 * serving): the crash count starts over and it is replaced at once. */
static void tf_sv_crashed(tf_supervisor *s, const tf_ended *e) {
    tf_slot *slot = &s->slots[e->proc.id];
    if (e->served)
        slot->crashes = 0;
    double delay = tf_sv_count_crash(s, e->proc.id, e->uptime);
    if (delay <= 0) {
        tf_log("worker %d (pid %d) %s; restarting", e->proc.id, (int)e->proc.pid, e->why);
        tf_sv_slot_spawn(s, e->proc.id);
        return;
    }
    tf_log("worker %d (pid %d) %s; crashed %d times in %.1f s, next attempt in %.1f s",
           e->proc.id, (int)e->proc.pid, e->why, slot->crashes,
           tf_clock_precise() - slot->first_crash, delay);
    tf_sv_backoff(s, e->proc.id, delay);
}

static void tf_sv_act_on_exit(tf_supervisor *s, tf_end end, const tf_ended *e) {
    int id = e->proc.id, pid = (int)e->proc.pid;
    if (end != TF_END_STOPPED && end != TF_END_RETIRED)
        tf_sb->restarts_by_cause[TF_CAUSE_CRASH]++; /* an exit nobody asked for */
    switch (end) {
    case TF_END_STOPPED:
    case TF_END_RETIRED:
        tf_log("worker %d (pid %d) %s%s", id, pid, e->why,
               end == TF_END_RETIRED ? " (retired)" : "");
        break;
    case TF_END_FATAL:
        tf_log("worker %d (pid %d) %s: cannot start; stopping", id, pid, e->why);
        s->exit_status = 1;
        tf_sv_begin_stop(s, SIGTERM);
        break;
    case TF_END_TAKEN_OVER:
        tf_sv_take_over(s, e);
        break;
    case TF_END_UNREADY:
        tf_sv_replacement_failed(s, e);
        break;
    case TF_END_STUCK:
        /* not a crash: it was killed for a request stuck past the timeout */
        tf_log("worker %d (pid %d) %s (stuck past the request timeout); restarting", id, pid,
               e->why);
        tf_sv_slot_spawn(s, id);
        break;
    case TF_END_CRASH:
        tf_sv_crashed(s, e);
        break;
    }
}

/* Reaps every child that has ended; waitpid until none is left, since
 * SIGCHLDs coalesce. */
void tf_sv_reap(tf_supervisor *s) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid <= 0)
            return; /* 0: none left to reap now; ECHILD: no children */
        for (int i = 0; i < TF_MAX_PROCS; i++) {
            if (s->procs[i].state != TF_W_FREE && s->procs[i].pid == pid) {
                tf_end end = tf_sv_classify_exit(s, i, status);
                tf_ended e = tf_sv_forget(s, i, status);
                tf_sv_act_on_exit(s, end, &e);
                break;
            }
        }
        /* a child the embedder started itself is reaped and left alone */
    }
}
