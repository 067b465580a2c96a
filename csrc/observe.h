/* observe.h — per-response counters in this worker's scoreboard entry. */
#ifndef TF_OBSERVE_H
#define TF_OBSERVE_H

#include "tailfast.h"

#pragma GCC visibility push(hidden)

/* Counts a response in tf_sb_me (nothing without a scoreboard): its status
 * class and its latency (seconds from dispatch, in the histogram). */
void tf_observe_response(int status, double seconds);

#pragma GCC visibility pop

#endif
