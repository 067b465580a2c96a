/* accesslog.c — one worker's access log: lines in the common or combined
 * format plus the request time in seconds, collected in a buffer and written
 * with one write(2) when it fills or when its oldest line is a second old.
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
#include "tailfast.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define TF_LOG_BUF (64 * 1024)
#define TF_LOG_LINE_MAX (16 * 1024) /* flush first when less room is left */
#define TF_LOG_MAX_AGE 1.0          /* seconds a line may wait in the buffer */
/* raw bytes kept of each variable field; escaping may quadruple them */
#define TF_LOG_TARGET_MAX 2048
#define TF_LOG_HEADER_MAX 512

static int tf_log_fd = -1;
static int tf_log_own_fd; /* 0 for standard output: never closed */
static int tf_log_format = TF_LOG_COMBINED;
static size_t tf_log_chunk = 0; /* > 0: write at most this much at once (pipe) */
static char *tf_log_path;
static char tf_log_buf[TF_LOG_BUF];
static size_t tf_log_len;
static double tf_log_oldest; /* monotonic seconds of the oldest buffered line */
static int tf_log_failed;    /* a write error was reported already */
static volatile sig_atomic_t tf_log_reopen_asked;

static void tf_log_on_usr1(int sig) {
    (void)sig;
    tf_log_reopen_asked = 1;
}

static double tf_log_coarse_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int tf_log_open_file(const char *path) {
    int fd;
    do
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    while (fd < 0 && errno == EINTR);
    return fd;
}

static void tf_log_set_chunk(int fd) {
    struct stat st;
    tf_log_chunk = 0;
    if (fstat(fd, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)))
        tf_log_chunk = PIPE_BUF;
}

/* Writes buf[0..len) in full; returns 0 or -1 with errno. */
static int tf_log_write_all(const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(tf_log_fd, buf, len);
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

static void tf_log_flush(void) {
    if (tf_log_len == 0 || tf_log_fd < 0) {
        tf_log_len = 0;
        return;
    }
    const char *p = tf_log_buf;
    size_t left = tf_log_len;
    int r = 0;
    while (left > 0 && r == 0) {
        size_t n = left;
        if (tf_log_chunk && n > tf_log_chunk) {
            /* the last line end within the chunk (a line never exceeds it) */
            n = tf_log_chunk;
            while (n > 0 && p[n - 1] != '\n')
                n--;
            if (n == 0)
                n = tf_log_chunk;
        }
        r = tf_log_write_all(p, n);
        p += n;
        left -= n;
    }
    if (r < 0 && !tf_log_failed) {
        /* once: a full disk must not flood stderr; lines are dropped */
        tf_log_failed = 1;
        tf_log("worker (pid %d): access log: %s; dropping lines", (int)getpid(), strerror(errno));
    } else if (r == 0) {
        tf_log_failed = 0;
    }
    tf_log_len = 0;
}

int tf_accesslog_open(const char *path, int format) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = tf_log_on_usr1;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    /* installed even without a log: SIGUSR1's default action would kill */
    if (sigaction(SIGUSR1, &sa, NULL) < 0)
        return -1;
    tf_log_format = format;
    tf_log_len = 0;
    if (!path || !path[0])
        return 0;
    if (strcmp(path, "-") == 0) {
        tf_log_fd = STDOUT_FILENO;
        tf_log_own_fd = 0;
    } else {
        tf_log_fd = tf_log_open_file(path);
        if (tf_log_fd < 0)
            return -1;
        tf_log_own_fd = 1;
        tf_log_path = strdup(path);
        if (!tf_log_path) {
            close(tf_log_fd);
            tf_log_fd = -1;
            errno = ENOMEM;
            return -1;
        }
    }
    tf_log_set_chunk(tf_log_fd);
    return 0;
}

static void tf_log_reopen(void) {
    tf_log_flush(); /* what was logged before the rotation goes to the old file */
    if (!tf_log_own_fd || !tf_log_path)
        return;
    int fd = tf_log_open_file(tf_log_path);
    if (fd < 0) {
        tf_log("worker (pid %d): cannot reopen access log %s: %s; keeping the old file",
               (int)getpid(), tf_log_path, strerror(errno));
        return;
    }
    close(tf_log_fd);
    tf_log_fd = fd;
    tf_log_set_chunk(fd);
    tf_log_failed = 0;
}

void tf_accesslog_tick(double now) {
    if (tf_log_reopen_asked) {
        tf_log_reopen_asked = 0;
        tf_log_reopen();
    }
    if (tf_log_len > 0 && now - tf_log_oldest >= TF_LOG_MAX_AGE)
        tf_log_flush();
}

void tf_accesslog_close(void) {
    tf_log_flush();
    if (tf_log_fd >= 0 && tf_log_own_fd)
        close(tf_log_fd);
    tf_log_fd = -1;
    free(tf_log_path);
    tf_log_path = NULL;
}

/* ------------------------------------------------------------ line format */

typedef struct {
    char *p, *end;
} tf_out;

static void tf_put(tf_out *o, const char *s, size_t n) {
    if ((size_t)(o->end - o->p) < n)
        n = (size_t)(o->end - o->p);
    memcpy(o->p, s, n);
    o->p += n;
}

static void tf_puts(tf_out *o, const char *s) { tf_put(o, s, strlen(s)); }

/* Copies at most max bytes of s, escaping '"', '\\' and non-printable bytes
 * as \xHH (a log line must not be forged by a header value); "-" when empty. */
static void tf_put_escaped(tf_out *o, const char *s, size_t n, size_t max) {
    static const char hex[] = "0123456789abcdef";
    if (n == 0) {
        tf_put(o, "-", 1);
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
            tf_put(o, esc, 4);
        }
    }
}

static const tf_header *tf_find_header(const tf_request *req, const char *name) {
    size_t len = strlen(name);
    for (size_t i = 0; i < req->num_headers; i++)
        if (req->headers[i].name_len == len && strncasecmp(req->headers[i].name, name, len) == 0)
            return &req->headers[i];
    return NULL;
}

/* "[10/Oct/2000:13:55:36 +0000]" for now, formatted once per second. */
static const char *tf_log_time(void) {
    static time_t cached_at = (time_t)-1;
    static char text[40];
    time_t now = time(NULL);
    if (now != cached_at) {
        struct tm tm;
        if (!localtime_r(&now, &tm) || strftime(text, sizeof(text), "[%d/%b/%Y:%H:%M:%S %z]", &tm) == 0)
            snprintf(text, sizeof(text), "[-]");
        cached_at = now;
    }
    return text;
}

void tf_accesslog_line(const tf_conn *conn, const tf_request *req, int status,
                       uint64_t body_bytes, double seconds) {
    if (tf_log_fd < 0)
        return;
    /* the peer's text is made here, so that it costs nothing without a log */
    char peer[64];
    int port = 0;
    if (tf_conn_peer(conn, peer, sizeof(peer), &port) < 0 || !peer[0])
        strcpy(peer, "-");
    if (TF_LOG_BUF - tf_log_len < TF_LOG_LINE_MAX)
        tf_log_flush();
    if (tf_log_len == 0)
        tf_log_oldest = tf_log_coarse_now();
    tf_out o = {tf_log_buf + tf_log_len, tf_log_buf + TF_LOG_BUF};
    char num[64];

    tf_puts(&o, peer);
    tf_puts(&o, " - - ");
    tf_puts(&o, tf_log_time());
    tf_puts(&o, " \"");
    if (req) {
        tf_put_escaped(&o, req->method, req->method_len, 32);
        tf_put(&o, " ", 1);
        tf_put_escaped(&o, req->target, req->target_len, TF_LOG_TARGET_MAX);
        tf_puts(&o, req->version_minor == 1 ? " HTTP/1.1" : " HTTP/1.0");
    } else {
        tf_put(&o, "-", 1);
    }
    if (body_bytes > 0)
        snprintf(num, sizeof(num), "\" %d %llu", status, (unsigned long long)body_bytes);
    else
        snprintf(num, sizeof(num), "\" %d -", status);
    tf_puts(&o, num);
    if (tf_log_format == TF_LOG_COMBINED) {
        static const char *const names[2] = {"Referer", "User-Agent"};
        for (int i = 0; i < 2; i++) {
            const tf_header *h = req ? tf_find_header(req, names[i]) : NULL;
            tf_puts(&o, " \"");
            tf_put_escaped(&o, h ? h->value : "", h ? h->value_len : 0, TF_LOG_HEADER_MAX);
            tf_put(&o, "\"", 1);
        }
    }
    snprintf(num, sizeof(num), " %.6f\n", seconds);
    tf_puts(&o, num);
    if (o.p == o.end)
        o.p[-1] = '\n'; /* cannot happen with the caps above; keep lines whole */
    tf_log_len = (size_t)(o.p - tf_log_buf);
}
