/* accesslog.h — the access log as a leaf: plain data in, buffered lines out (open/close are public). */
#ifndef TF_ACCESSLOG_H
#define TF_ACCESSLOG_H

#include "tailfast.h"

#pragma GCC visibility push(hidden)

/* One response, as the log line shows it. Strings need not be NUL-terminated
 * (except peer); an empty one is written as "-". */
typedef struct {
    const char *peer;          /* client address text ("" or NULL: "-") */
    const char *method;        /* NULL: the head could not be parsed; the request shows as "-" */
    size_t method_len;
    const char *target;        /* request-target as sent */
    size_t target_len;
    int version_minor;         /* HTTP/1.<version_minor> */
    int status;
    uint64_t body_bytes;       /* 0 is written as "-" */
    double seconds;            /* dispatch to response */
    const char *referer;       /* combined format only */
    size_t referer_len;
    const char *user_agent;    /* combined format only */
    size_t user_agent_len;
} tf_access_entry;

/* The open log's format (TF_LOG_COMMON or TF_LOG_COMBINED), -1 when none is
 * open. Read through tf_accesslog_format(), so that a caller builds an entry
 * (peer text, header lookups) only when a log will take it. */
extern int tf_accesslog_format_;

static inline int tf_accesslog_format(void) { return tf_accesslog_format_; }

/* Buffers one line (nothing when no log is open); written when the buffer
 * fills or by tf_accesslog_tick. */
void tf_accesslog_write(const tf_access_entry *e);

/* At least once a second: writes lines older than a second, and reopens the
 * file after SIGUSR1. now: tf_clock_coarse() seconds. */
void tf_accesslog_tick(double now);

#pragma GCC visibility pop

#endif
