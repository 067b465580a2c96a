/* test_accesslog.c — unit tests of csrc/accesslog.c (with csrc/log.c), plain C, no framework.
 *
 * Build (tests/test_c_units.py does this):
 *   cc -std=c11 -O1 -g -Wall -Wextra -Werror -fsanitize=address,undefined \
 *      -fno-sanitize-recover=all -Icsrc tests/c/test_accesslog.c csrc/accesslog.c csrc/log.c
 *
 * Run with one argument, a directory it may write files in. The access log
 * is a leaf (plain data in, lines out), so each case writes entries, makes
 * the log flush (tick, buffer full, close, SIGUSR1) and reads the file back.
 */
#define _GNU_SOURCE /* pipe2, F_SETPIPE_SZ */

#include "accesslog.h"
#include "clock.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"

static const char *dir;

/* ----------------------------------------------------------------- helpers */

static void path_of(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", dir, name);
}

/* The whole file as a NUL-terminated heap string ("" when it does not exist). */
static char *slurp(const char *path) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n;
        while ((n = read(fd, buf + len, cap - len)) > 0) {
            len += (size_t)n;
            if (len == cap) {
                cap *= 2;
                buf = realloc(buf, cap + 1);
            }
        }
        close(fd);
    }
    buf[len] = '\0';
    return buf;
}

static size_t count_lines(const char *s) {
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* The line with its timestamp "[...]" (28 bytes) replaced by "[T]", so that
 * whole lines can be compared. Returns 0 when the timestamp is malformed. */
static int untime(const char *line, char *out, size_t cap) {
    const char *open_ = strchr(line, '[');
    if (!open_ || strlen(open_) < 28 || open_[27] != ']' || open_[3] != '/' || open_[21] != ' ')
        return 0;
    snprintf(out, cap, "%.*s[T]%s", (int)(open_ - line), line, open_ + 28);
    return 1;
}

/* A flush by age: a tick two seconds after the line was buffered. */
static void flush_by_age(void) { tf_accesslog_tick(tf_clock_coarse() + 2.0); }

static tf_access_entry get_entry(void) {
    tf_access_entry e = {
        .peer = "127.0.0.1",
        .method = "GET",
        .method_len = 3,
        .target = "/x?y=1",
        .target_len = 6,
        .version_minor = 1,
        .status = 200,
        .body_bytes = 13,
        .seconds = 0.001234,
    };
    return e;
}

/* ------------------------------------------------------------------- cases */

static void test_common_format(void) {
    char path[512], got[4096];
    path_of(path, sizeof(path), "common.log");
    CHECK(tf_accesslog_format() == -1, "no log open yet");
    CHECK(tf_accesslog_open(path, TF_LOG_COMMON) == 0, "open: %s", strerror(errno));
    CHECK(tf_accesslog_format() == TF_LOG_COMMON, "format");
    tf_access_entry e = get_entry();
    tf_accesslog_write(&e);
    e = (tf_access_entry){.peer = "", .status = 400, .seconds = 0}; /* head unparsable */
    tf_accesslog_write(&e);
    e = get_entry();
    e.version_minor = 0;
    e.method = "HEAD";
    e.method_len = 4;
    e.body_bytes = 0;
    e.referer = "ignored in the common format";
    e.referer_len = 28;
    tf_accesslog_write(&e);
    tf_accesslog_close();
    CHECK(tf_accesslog_format() == -1, "closed");
    tf_accesslog_write(&e); /* no log: nothing, no crash */

    char *text = slurp(path);
    CHECK(count_lines(text) == 3, "3 lines: '%s'", text);
    char *line = strtok(text, "\n");
    CHECK(line && untime(line, got, sizeof(got)) &&
              strcmp(got, "127.0.0.1 - - [T] \"GET /x?y=1 HTTP/1.1\" 200 13 0.001234") == 0,
          "line 1: '%s'", line ? line : "");
    line = strtok(NULL, "\n");
    CHECK(line && untime(line, got, sizeof(got)) && strcmp(got, "- - - [T] \"-\" 400 - 0.000000") == 0,
          "line 2: '%s'", line ? line : "");
    line = strtok(NULL, "\n");
    CHECK(line && untime(line, got, sizeof(got)) &&
              strcmp(got, "127.0.0.1 - - [T] \"HEAD /x?y=1 HTTP/1.0\" 200 - 0.001234") == 0,
          "line 3: '%s'", line ? line : "");
    free(text);
}

static void test_combined_format_and_escaping(void) {
    char path[512], got[4096];
    path_of(path, sizeof(path), "combined.log");
    CHECK(tf_accesslog_open(path, TF_LOG_COMBINED) == 0, "open: %s", strerror(errno));
    tf_access_entry e = get_entry();
    e.peer = "::1";
    e.referer = "http://a/b";
    e.referer_len = 10;
    e.user_agent = "curl/8.0";
    e.user_agent_len = 8;
    tf_accesslog_write(&e);
    /* odd bytes: a quote, a backslash, a control byte, a NUL, DEL and obs-text */
    static const char ua[] = "x\"y\\z\x01\x00\x7f\xff";
    e.user_agent = ua;
    e.user_agent_len = sizeof(ua) - 1;
    e.referer = NULL;
    e.referer_len = 0;
    e.target = "/\x1b[31m\n";
    e.target_len = 7;
    tf_accesslog_write(&e);
    tf_accesslog_close();

    char *text = slurp(path);
    CHECK(count_lines(text) == 2, "2 lines: '%s'", text);
    char *line = strtok(text, "\n");
    CHECK(line && untime(line, got, sizeof(got)) &&
              strcmp(got, "::1 - - [T] \"GET /x?y=1 HTTP/1.1\" 200 13 \"http://a/b\" "
                          "\"curl/8.0\" 0.001234") == 0,
          "combined: '%s'", line ? line : "");
    line = strtok(NULL, "\n");
    CHECK(line && untime(line, got, sizeof(got)) &&
              strcmp(got, "::1 - - [T] \"GET /\\x1b[31m\\x0a HTTP/1.1\" 200 13 \"-\" "
                          "\"x\\x22y\\x5cz\\x01\\x00\\x7f\\xff\" 0.001234") == 0,
          "escaped: '%s'", line ? line : "");
    free(text);
}

/* Over-long fields are cut (target 2048 bytes, header 512), the line stays one line. */
static void test_caps(void) {
    char path[512];
    path_of(path, sizeof(path), "caps.log");
    CHECK(tf_accesslog_open(path, TF_LOG_COMBINED) == 0, "open: %s", strerror(errno));
    static char target[10000], agent[3000];
    memset(target, 'a', sizeof(target));
    memset(agent, '\x01', sizeof(agent)); /* each escaped to 4 bytes */
    tf_access_entry e = get_entry();
    e.target = target;
    e.target_len = sizeof(target);
    e.user_agent = agent;
    e.user_agent_len = sizeof(agent);
    tf_accesslog_write(&e);
    tf_accesslog_close();
    char *text = slurp(path);
    char *a = strstr(text, "\"GET ");
    size_t run = a ? strspn(a + 5, "a") : 0;
    CHECK(count_lines(text) == 1 && run == 2048, "target cut to 2048: %zu", run);
    char *x = strstr(text, "\\x01");
    size_t escaped = 0;
    while (x && strncmp(x, "\\x01", 4) == 0) {
        escaped++;
        x += 4;
    }
    CHECK(escaped == 512, "header cut to 512 bytes: %zu", escaped);
    free(text);
}

/* Lines wait in the buffer for a second (or until it fills), whole lines only. */
static void test_buffering(void) {
    char path[512];
    path_of(path, sizeof(path), "buffer.log");
    CHECK(tf_accesslog_open(path, TF_LOG_COMMON) == 0, "open: %s", strerror(errno));
    tf_access_entry e = get_entry();
    tf_accesslog_write(&e);
    char *text = slurp(path);
    CHECK(text[0] == '\0', "buffered, not written: '%s'", text);
    free(text);
    tf_accesslog_tick(tf_clock_coarse() + 0.5);
    text = slurp(path);
    CHECK(text[0] == '\0', "younger than a second: still buffered");
    free(text);
    flush_by_age();
    text = slurp(path);
    CHECK(count_lines(text) == 1, "a second old: written");
    free(text);

    /* 64 KiB of buffer: 1000 lines of ~260 bytes fill it several times over */
    static char target[200];
    memset(target, 't', sizeof(target));
    e.target = target;
    e.target_len = sizeof(target);
    for (int i = 0; i < 1000; i++)
        tf_accesslog_write(&e);
    text = slurp(path);
    size_t lines = count_lines(text);
    size_t len = strlen(text);
    CHECK(lines > 1 && lines < 1001 && len > 0 && text[len - 1] == '\n',
          "a full buffer is written without a tick, in whole lines: %zu", lines);
    free(text);
    tf_accesslog_close();
    text = slurp(path);
    CHECK(count_lines(text) == 1001, "close writes the rest: %zu", count_lines(text));
    free(text);
}

/* SIGUSR1 (logrotate): what was buffered goes to the old file, then the path is reopened. */
static void test_reopen(void) {
    char path[512], rotated[512];
    path_of(path, sizeof(path), "rotate.log");
    path_of(rotated, sizeof(rotated), "rotate.log.1");
    CHECK(tf_accesslog_open(path, TF_LOG_COMMON) == 0, "open: %s", strerror(errno));
    tf_access_entry e = get_entry();
    tf_accesslog_write(&e);
    flush_by_age();
    tf_accesslog_write(&e); /* buffered across the rotation */
    CHECK(rename(path, rotated) == 0, "rename: %s", strerror(errno));
    CHECK(raise(SIGUSR1) == 0, "raise");
    tf_accesslog_tick(tf_clock_coarse()); /* the reopen is done here, not in the handler */
    e.status = 404;
    tf_accesslog_write(&e);
    tf_accesslog_close();
    char *old = slurp(rotated), *fresh = slurp(path);
    CHECK(count_lines(old) == 2 && !strstr(old, "\" 404 "), "old file: '%s'", old);
    CHECK(count_lines(fresh) == 1 && strstr(fresh, "\" 404 "), "new file: '%s'", fresh);
    free(old);
    free(fresh);
}

/* On a pipe or socket ("-" under a container runtime) the buffer goes out in
 * writes of at most PIPE_BUF bytes, each ending at a line end. */
static void test_pipe_chunks(void) {
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
    int one_mib = 1 << 20;
    (void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &one_mib, sizeof(one_mib));
    (void)setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &one_mib, sizeof(one_mib));
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    dup2(sv[0], STDOUT_FILENO);
    CHECK(tf_accesslog_open("-", TF_LOG_COMMON) == 0, "open -");
    static char target[300];
    memset(target, 'p', sizeof(target));
    tf_access_entry e = get_entry();
    e.target = target;
    e.target_len = sizeof(target);
    for (int i = 0; i < 100; i++)
        tf_accesslog_write(&e);
    tf_accesslog_close(); /* standard output is not closed, only flushed */
    dup2(saved, STDOUT_FILENO);
    close(saved);
    close(sv[0]);

    static char msg[1 << 16];
    ssize_t n;
    int writes = 0, bad = 0;
    size_t lines = 0;
    while ((n = recv(sv[1], msg, sizeof(msg), MSG_DONTWAIT)) > 0) {
        writes++;
        if (n > PIPE_BUF || msg[n - 1] != '\n')
            bad++;
        for (ssize_t i = 0; i < n; i++)
            lines += msg[i] == '\n';
    }
    close(sv[1]);
    CHECK(writes > 1 && bad == 0 && lines == 100,
          "%d writes, %d over PIPE_BUF or cut mid-line, %zu lines", writes, bad, lines);
}

/* A failing write is reported once (at ERROR), not once per flush. */
static void test_write_error(void) {
    int fds[2];
    CHECK(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0, "pipe");
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    static char got[4096];

    CHECK(tf_accesslog_open("/dev/full", TF_LOG_COMMON) == 0, "open /dev/full");
    tf_access_entry e = get_entry();
    tf_accesslog_write(&e);
    flush_by_age();
    tf_accesslog_write(&e);
    flush_by_age();
    ssize_t n1 = read(fds[0], got, sizeof(got) - 1);
    tf_accesslog_close();

    tf_log_set_level(TF_LOG_ERROR + 1); /* above ERROR: the report is dropped */
    CHECK(tf_accesslog_open("/dev/full", TF_LOG_COMMON) == 0, "open /dev/full");
    tf_accesslog_write(&e);
    tf_accesslog_close();
    tf_log_set_level(TF_LOG_INFO);
    char more[64];
    ssize_t n2 = read(fds[0], more, sizeof(more));

    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fds[0]);
    close(fds[1]);
    got[n1 > 0 ? n1 : 0] = '\0';
    CHECK(n1 > 0 && count_lines(got) == 1 && strstr(got, "access log: No space left on device"),
          "one report: '%s'", got);
    CHECK(n2 < 0 && errno == EAGAIN, "filtered by level: %zd", n2);
}

static void test_open_errors(void) {
    char path[512];
    path_of(path, sizeof(path), "no/such/dir.log");
    CHECK(tf_accesslog_open(path, TF_LOG_COMMON) == -1 && errno == ENOENT, "missing directory");
    CHECK(tf_accesslog_format() == -1, "still no log");
    CHECK(tf_accesslog_open(NULL, TF_LOG_COMMON) == 0 && tf_accesslog_format() == -1,
          "no path: no log, but the SIGUSR1 handler");
    CHECK(raise(SIGUSR1) == 0, "SIGUSR1 without a log does not kill");
    tf_accesslog_tick(tf_clock_coarse());
    tf_accesslog_close();
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIRECTORY\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    test_common_format();
    test_combined_format_and_escaping();
    test_caps();
    test_buffering();
    test_reopen();
    test_pipe_chunks();
    test_write_error();
    test_open_errors();
    return check_summary("test_accesslog");
}
