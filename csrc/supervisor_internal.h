/* supervisor_internal.h — what the primary's files share: its tables and what changes them.
 *
 * The primary keeps the truth about its processes and slots here, in private
 * memory; the scoreboard is their published view (tf_sv_proc_set_state,
 * tf_sv_publish_slots). What it reads back from the scoreboard is what a
 * worker reports of itself (ready or busy, requests answered, the request it
 * runs, asking to retire) and what the primary wrote there itself (a
 * process's generation and sampled RSS), never an index into its tables.
 *
 *   supervisor.c          the loop: set up, wait for signals and wake-ups, tear down
 *   supervisor_procs.c    the tables: fork, respawn, back-off, process states, publishing
 *   supervisor_exit.c     a process ended: classify the exit, then act on its class
 *   supervisor_roll.c     workers becoming ready, replacements one at a time, READY=1
 *   supervisor_signals.c  what each signal does: stop, re-read and roll, workers more or less
 *   supervisor_timers.c   timed work: stop and drain deadlines, back-off, boot/request timeouts
 *   sd_notify.c           the systemd notification socket
 */
#ifndef TF_SUPERVISOR_INTERNAL_H
#define TF_SUPERVISOR_INTERNAL_H

#include "clock.h"
#include "scoreboard.h"
#include "tailfast.h"

#include <signal.h>
#include <sys/types.h>
#include <time.h>

#define TF_MAX_WORKERS TF_SB_MAX_WORKERS
#define TF_MAX_PROCS TF_SB_MAX_PROCS
#define TF_STABLE_SECONDS 30.0 /* uptime after which the crash count starts over */
#define TF_BACKOFF_FIRST 0.1
#define TF_BACKOFF_MAX 30.0
#define TF_TICK_SECONDS 1.0 /* RSS, listen queue, boot timeouts, stability */

/* One process. Its state is one of TF_W_* (see tailfast.h), changed only by
 * tf_sv_proc_set_state. Here TF_W_IDLE means ready: idle or busy is known
 * only to the worker, which writes it in its own scoreboard entry. */
typedef struct {
    pid_t pid;
    int id;           /* worker id */
    int state;        /* TF_W_FREE, TF_W_STARTING, TF_W_IDLE (ready), TF_W_DRAINING */
    double started;   /* monotonic time of the fork */
    double timed_out; /* request_started of the request sent TF_TIMEOUT_SIGNAL */
    int stuck;        /* killed: its request ran past the timeout and the grace */
    double drain_deadline; /* > 0: retired, SIGKILL at this monotonic time */
} tf_proc;            /* index = scoreboard entry */

/* One worker id. Its published state (TF_SLOT_*) is derived from these
 * fields by tf_sv_publish_slots; nothing else writes the scoreboard's slots. */
typedef struct {
    int wanted;        /* the slot should have a worker */
    int current;       /* process serving for this id, -1 when none */
    int next;          /* its replacement while one starts, -1 when none */
    double respawn_at; /* > 0: in back-off until then */
    int crashes;       /* consecutive early deaths (or failed forks) */
    double first_crash;
    double last_crash;
    int started_once;
    uint32_t restarts; /* processes started for this id after the first */
} tf_slot;

typedef struct {
    const tf_supervisor_config *cfg; /* = &cfg_now */
    tf_supervisor_config cfg_now;    /* the embedder's, as a SIGHUP last changed it */
    const tf_supervisor_callbacks *cb;
    tf_proc procs[TF_MAX_PROCS];
    int procs_hw; /* entries [0, procs_hw) may be in use; published, never read back
                     (workers can write the scoreboard) */
    tf_slot slots[TF_MAX_WORKERS + 1]; /* index = worker id, from 1 */
    int slots_hw;  /* highest worker id ever wanted */
    int wanted;    /* worker count asked for (TTIN/TTOU change it) */
    int live;      /* processes not yet reaped */
    int replacing; /* replacements started and not yet ready */
    int signal_fd;
    int wake_fd;
    pid_t self;
    uint32_t generation; /* code generation: SIGHUP bumps it */
    int stopping;        /* 0, or the signal that started the stop */
    double stop_deadline;
    int killed;         /* SIGKILL already sent to what is left */
    int delayed;        /* the shutdown delay has begun */
    double delay_until; /* > 0: still serving after SIGTERM until then */
    int delay_signal;   /* the signal that began the delay */
    double next_timeout_check;
    int ever_ready; /* a worker became ready once: a start failure no longer stops */
    int ready_sent; /* READY=1 went to systemd */
    int reloading;  /* RELOADING=1 went, READY=1 not yet */
    int exit_status;
    double next_tick;
} tf_supervisor;

/* supervisor_procs.c */
void tf_sv_proc_set_state(tf_supervisor *s, int idx, int state);
void tf_sv_proc_free(tf_supervisor *s, int idx);
void tf_sv_publish_slots(tf_supervisor *s);
double tf_sv_count_crash(tf_supervisor *s, int id, double uptime);
void tf_sv_backoff(tf_supervisor *s, int id, double delay);
int tf_sv_fork_or_back_off(tf_supervisor *s, int id);
void tf_sv_slot_spawn(tf_supervisor *s, int id);
void tf_sv_signal_proc(tf_supervisor *s, int idx, int sig);
void tf_sv_signal_workers(tf_supervisor *s, int sig);
void tf_sv_retire(tf_supervisor *s, int idx);

/* supervisor_exit.c */
void tf_sv_reap(tf_supervisor *s);

/* supervisor_roll.c */
void tf_sv_check_ready(tf_supervisor *s);
void tf_sv_roll(tf_supervisor *s);
void tf_sv_check_notify(tf_supervisor *s);

/* supervisor_signals.c */
void tf_sv_on_signal(tf_supervisor *s, int sig);
void tf_sv_set_workers(tf_supervisor *s, int count);
void tf_sv_begin_stop(tf_supervisor *s, int sig);

/* supervisor_timers.c */
int tf_sv_next_timeout(const tf_supervisor *s);
void tf_sv_on_timers(tf_supervisor *s);
double tf_sv_check_timeouts(tf_supervisor *s, double now);

/* sd_notify.c: one datagram to the systemd notification socket at path (a
 * file path, or '@' for the abstract namespace; NULL or anything else: no
 * socket). Best effort: systemd may not listen. */
void tf_sd_notify(const char *path, const char *msg);
/* RELOADING=1 with the MONOTONIC_USEC systemd asks of a reload. */
void tf_sd_notify_reloading(const char *path);

#endif
