/* log.h — C-only logging: a message at a chosen level (tf_log and the levels are public). */
#ifndef TF_LOG_H
#define TF_LOG_H

#include "tailfast.h"

#pragma GCC visibility push(hidden)

/* Writes "tailfast: <message>\n" to stderr in one write(2) when level is at
 * or above the level set with tf_log_set_level. Levels: TF_LOG_DEBUG (chatter),
 * TF_LOG_INFO (lifecycle), TF_LOG_WARNING (transient or odd conditions),
 * TF_LOG_ERROR (a lost request, a failed syscall that changes behaviour). */
void tf_log_at(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#pragma GCC visibility pop

#endif
