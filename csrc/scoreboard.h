/* scoreboard.h — the scoreboard's C-only half: what the primary and workers do with it (the layout is public). */
#ifndef TF_SCOREBOARD_H
#define TF_SCOREBOARD_H

#include "tailfast.h"

/* In a new worker, right after fork: makes procs[index] its own entry. */
void tf_scoreboard_attach(int index);
/* Primary: the read end of the wake-up pipe (-1 when none). */
int tf_scoreboard_wake_fd(void);
/* Worker: wakes the primary (after marking itself ready, or asking to retire). */
void tf_scoreboard_notify(void);
/* Worker: 1 while its open connections are above the fair share: the mean
 * over the workers that can accept now (itself, and the others whose loop
 * runs, listener armed or waiting for their share; see scoreboard.c). */
int tf_scoreboard_over_share(void);
/* Worker, above its share: 1 when another worker that can accept has the
 * listener armed (it takes what comes); else 0, and *wake is the pid of a
 * worker waiting for its share that is at or below it now (0: none), to be
 * told to take the queue. Reads the others' accepting with sequential
 * consistency: call it after publishing one's own. */
int tf_scoreboard_accept_peer(int32_t *wake);
/* Worker: has it answered more than (1 + margin) times the ready workers' mean? */
int tf_scoreboard_ahead_of_mean(double margin);
/* Primary: adds the counters of procs[index] (an exited process) to its
 * slot's retired counters, before the entry is cleared. */
void tf_scoreboard_fold(int index);

#endif
