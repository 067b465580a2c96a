/* accesslog.c — one worker's access log: formats, buffers and writes lines; knows nothing of connections.
 *
 * Lines in the common or combined format plus the request time in seconds,
 * collected in a buffer and written with one write(2) when it fills or when
 * its oldest line is a second old. The caller hands over plain data
 * (tf_access_entry), so this file is tested on its own (tests/c).
 *
 * Every worker opens the file itself with O_APPEND, so lines of different
 * workers never overwrite each other, and a buffer only ever holds whole
 * lines. On a pipe (e.g. `--access-log -` under a container runtime) only
 * writes up to PIPE_BUF are atomic, so the buffer goes out in pieces of at
 * most that many bytes, cut at line ends.
 *
 * SIGUSR1 (forwarded by the primary) asks for a reopen, for logrotate: the
 * handler only sets a flag; tf_accesslog_tick does the work.
 */
#define _GNU_SOURCE
#include "accesslog.h"
#include "clock.h"
#include "log.h"
#include "outbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TF_AL_BUF (64 * 1024)
#define TF_AL_LINE_MAX (16 * 1024) /* flush first when less room is left */
#define TF_AL_MAX_AGE 1.0          /* seconds a line may wait in the buffer */
/* raw bytes kept of each variable field; escaping may quadruple them */
#define TF_AL_TARGET_MAX 2048
#define TF_AL_HEADER_MAX 512

static int tf_al_fd = -1;
static int tf_al_own_fd; /* 0 for standard output: never closed */
int tf_accesslog_format_ = -1; /* -1: no log open (see accesslog.h) */
static size_t tf_al_chunk = 0; /* > 0: write at most this much at once (pipe) */
static char *tf_al_path;
static char tf_al_buf[TF_AL_BUF];
static size_t tf_al_len;
static double tf_al_oldest; /* monotonic seconds of the oldest buffered line */
static int tf_al_failed;    /* a write error was reported already */
static volatile sig_atomic_t tf_al_reopen_asked;

static void tf_al_on_usr1(int sig) {
    (void)sig;
    tf_al_reopen_asked = 1;
}

static int tf_al_open_file(const char *path) {
    int fd;
    do
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    while (fd < 0 && errno == EINTR);
    return fd;
}

static void tf_al_set_chunk(int fd) {
    struct stat st;
    tf_al_chunk = 0;
    if (fstat(fd, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)))
        tf_al_chunk = PIPE_BUF;
}

/* Writes buf[0..len) in full; returns 0 or -1 with errno. */
static int tf_al_write_all(const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(tf_al_fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static void tf_al_flush(void) {
    if (tf_al_len == 0 || tf_al_fd < 0) {
        tf_al_len = 0;
        return;
    }
    const char *p = tf_al_buf;
    size_t left = tf_al_len;
    int r = 0;
    while (left > 0 && r == 0) {
        size_t n = left;
        if (tf_al_chunk && n > tf_al_chunk) {
            /* the last line end within the chunk (a line never exceeds it) */
            n = tf_al_chunk;
            while (n > 0 && p[n - 1] != '\n')
                n--;
            if (n == 0)
                n = tf_al_chunk;
        }
        r = tf_al_write_all(p, n);
        p += n;
        left -= n;
    }
    if (r < 0 && !tf_al_failed) {
        /* once: a full disk must not flood stderr; lines are dropped */
        tf_al_failed = 1;
        tf_log_at(TF_LOG_ERROR, "worker (pid %d): access log: %s; dropping lines", (int)getpid(),
                  strerror(errno));
    } else if (r == 0) {
        tf_al_failed = 0;
    }
    tf_al_len = 0;
}

int tf_accesslog_open(const char *path, int format) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = tf_al_on_usr1;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    /* installed even without a log: SIGUSR1's default action would kill */
    if (sigaction(SIGUSR1, &sa, NULL) < 0)
        return -1;
    tf_al_len = 0;
    tf_al_failed = 0; /* a newly opened log reports its own first failure */
    if (!path || !path[0])
        return 0;
    if (strcmp(path, "-") == 0) {
        tf_al_fd = STDOUT_FILENO;
        tf_al_own_fd = 0;
    } else {
        tf_al_fd = tf_al_open_file(path);
        if (tf_al_fd < 0)
            return -1;
        tf_al_own_fd = 1;
        tf_al_path = strdup(path);
        if (!tf_al_path) {
            close(tf_al_fd);
            tf_al_fd = -1;
            errno = ENOMEM;
            return -1;
        }
    }
    tf_al_set_chunk(tf_al_fd);
    tf_accesslog_format_ = format; /* from here on, callers build entries */
    return 0;
}

static void tf_al_reopen(void) {
    tf_al_flush(); /* what was logged before the rotation goes to the old file */
    if (!tf_al_own_fd || !tf_al_path)
        return;
    int fd = tf_al_open_file(tf_al_path);
    if (fd < 0) {
        tf_log_at(TF_LOG_WARNING,
                  "worker (pid %d): cannot reopen access log %s: %s; keeping the old file",
                  (int)getpid(), tf_al_path, strerror(errno));
        return;
    }
    close(tf_al_fd);
    tf_al_fd = fd;
    tf_al_set_chunk(fd);
    tf_al_failed = 0;
}

void tf_accesslog_tick(double now) {
    if (tf_al_reopen_asked) {
        tf_al_reopen_asked = 0;
        tf_al_reopen();
    }
    if (tf_al_len > 0 && now - tf_al_oldest >= TF_AL_MAX_AGE)
        tf_al_flush();
}

void tf_accesslog_close(void) {
    tf_al_flush();
    if (tf_al_fd >= 0 && tf_al_own_fd)
        close(tf_al_fd);
    tf_al_fd = -1;
    tf_accesslog_format_ = -1;
    free(tf_al_path);
    tf_al_path = NULL;
}

/* ------------------------------------------------------------ line format */

/* Copies at most max bytes of s, escaping '"', '\\' and non-printable bytes
 * as \xHH (a log line must not be forged by a header value); "-" when empty. */
static void tf_al_put_escaped(tf_out *o, const char *s, size_t n, size_t max) {
    static const char hex[] = "0123456789abcdef";
    if (n == 0 || !s) {
        tf_out_putc(o, '-');
        return;
    }
    if (n > max)
        n = max;
    for (size_t i = 0; i < n && o->p < o->end; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
            *o->p++ = (char)ch;
        } else {
            char esc[4] = {'\\', 'x', hex[ch >> 4], hex[ch & 15]};
            tf_out_put(o, esc, 4);
        }
    }
}

/* "[10/Oct/2000:13:55:36 +0000]" for now, formatted once per second. */
static const char *tf_al_time(void) {
    static time_t cached_at = (time_t)-1;
    static char text[40];
    time_t now = time(NULL);
    if (now != cached_at) {
        struct tm tm;
        if (!localtime_r(&now, &tm) ||
            strftime(text, sizeof(text), "[%d/%b/%Y:%H:%M:%S %z]", &tm) == 0)
            snprintf(text, sizeof(text), "[-]");
        cached_at = now;
    }
    return text;
}

/* `"GET /path HTTP/1.1" 200 1234`: the request line, status and body size. */
static void tf_al_put_request(tf_out *o, const tf_access_entry *e) {
    tf_out_putc(o, '"');
    if (e->method) {
        tf_al_put_escaped(o, e->method, e->method_len, 32);
        tf_out_putc(o, ' ');
        tf_al_put_escaped(o, e->target, e->target_len, TF_AL_TARGET_MAX);
        tf_out_puts(o, e->version_minor == 1 ? " HTTP/1.1" : " HTTP/1.0");
    } else {
        tf_out_putc(o, '-');
    }
    tf_out_put(o, "\" ", 2);
    tf_out_put_uint(o, (uint64_t)(e->status > 0 ? e->status : 0));
    tf_out_putc(o, ' ');
    if (e->body_bytes > 0)
        tf_out_put_uint(o, e->body_bytes);
    else
        tf_out_putc(o, '-');
}

/* ` "referer" "user-agent"`: the combined format's two fields. */
static void tf_al_put_quoted(tf_out *o, const char *s, size_t n) {
    tf_out_put(o, " \"", 2);
    tf_al_put_escaped(o, s, n, TF_AL_HEADER_MAX);
    tf_out_putc(o, '"');
}

void tf_accesslog_write(const tf_access_entry *e) {
    if (tf_al_fd < 0)
        return;
    if (TF_AL_BUF - tf_al_len < TF_AL_LINE_MAX)
        tf_al_flush();
    if (tf_al_len == 0)
        tf_al_oldest = tf_clock_coarse();
    char *line = tf_al_buf + tf_al_len;
    tf_out o = tf_out_init(line, TF_AL_BUF - tf_al_len);
    tf_out_puts(&o, e->peer && e->peer[0] ? e->peer : "-");
    tf_out_put(&o, " - - ", 5);
    tf_out_puts(&o, tf_al_time());
    tf_out_putc(&o, ' ');
    tf_al_put_request(&o, e);
    if (tf_accesslog_format_ == TF_LOG_COMBINED) {
        tf_al_put_quoted(&o, e->referer, e->referer_len);
        tf_al_put_quoted(&o, e->user_agent, e->user_agent_len);
    }
    char num[40];
    int k = snprintf(num, sizeof(num), " %.6f\n", e->seconds);
    tf_out_put(&o, num, k > 0 ? (size_t)k : 0);
    if (o.overflow)
        o.p[-1] = '\n'; /* cannot happen with the caps above; keep lines whole */
    tf_al_len += tf_out_len(&o, line);
}
