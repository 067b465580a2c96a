/* log.c — one line per event on stderr, filtered by level.
 *
 * A line is formatted on the stack and written with a single write(2): lines
 * from many workers sharing one stderr (a pipe or a terminal) then never
 * interleave mid-line, since writes up to PIPE_BUF bytes to a pipe are atomic.
 * No stdio buffering, no allocation: usable right after fork and in the
 * supervisor's loop alike. errno is preserved for the caller.
 */
#define _POSIX_C_SOURCE 200809L

#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The whole line, prefix and newline included: at most PIPE_BUF (4096 on
 * Linux) keeps it one atomic write into a pipe. */
#define TF_LOG_LINE 2048

/* Set once, before the workers fork (they inherit it); read on every call. */
static int tf_log_level = TF_LOG_INFO;

/* Formats and writes one line; ap holds the message's arguments. */
static void tf_log_write(const char *fmt, va_list ap) {
    static const char prefix[] = "tailfast: ";
    static const char ellipsis[] = "...";
    const size_t pre = sizeof(prefix) - 1;
    char line[TF_LOG_LINE];
    int saved_errno = errno;

    memcpy(line, prefix, pre);
    /* the message goes after the prefix; its terminating NUL's place is where
     * the newline goes, so the message gets at most room bytes */
    const size_t room = sizeof(line) - pre - 1;
    int n = vsnprintf(line + pre, room + 1, fmt, ap);

    size_t msg;
    if (n < 0) {
        /* an encoding error: say so rather than print nothing */
        static const char oops[] = "(unformattable log message)";
        memcpy(line + pre, oops, sizeof(oops) - 1);
        msg = sizeof(oops) - 1;
    } else if ((size_t)n > room) {
        /* truncated: mark it */
        msg = room;
        memcpy(line + pre + room - (sizeof(ellipsis) - 1), ellipsis, sizeof(ellipsis) - 1);
    } else {
        msg = (size_t)n;
    }
    line[pre + msg] = '\n';

    size_t total = pre + msg + 1;
    while (write(STDERR_FILENO, line, total) < 0 && errno == EINTR) {
    }
    errno = saved_errno;
}

void tf_log_set_level(int level) { tf_log_level = level; }

void tf_log_at(int level, const char *fmt, ...) {
    if (level < tf_log_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    tf_log_write(fmt, ap);
    va_end(ap);
}

void tf_log(const char *fmt, ...) {
    if (TF_LOG_INFO < tf_log_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    tf_log_write(fmt, ap);
    va_end(ap);
}
