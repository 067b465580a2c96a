/* test_body.c — a request body's three readers (csrc/body.c) through a whole worker loop, plain C, no Python.
 *
 * Build (tests/test_c_units.py does this): the worker's files with
 * AddressSanitizer and UBSan. The embedder here is C: on_request answers a
 * whole body at once, reads a streamed one inline (tf_body_read on the loop
 * thread), hands it to a runner thread (tf_runq_*, tf_body_read without the
 * loop), or reads it asynchronously on the loop (tf_body_take until
 * TF_BODY_AGAIN, then cb->on_body). A client thread sends bodies by length
 * and chunked, with Expect: 100-continue, and checks each answer ("<length>
 * <checksum>"); then it stops the worker with SIGTERM.
 */
#define _GNU_SOURCE

#include "tailfast.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"


/* ------------------------------------------------------------ the embedder */

typedef struct {
    tf_job job;
    tf_body *body;
    uint64_t len, sum;
    int err;
    size_t most_unread; /* the largest unread amount a reader saw at once */
} upload;

static void add(upload *u, const char *data, size_t n) {
    for (size_t i = 0; i < n; i++)
        u->sum = u->sum * 31 + (unsigned char)data[i];
    u->len += n;
}

static int reset_seen; /* readers that saw ECONNRESET (a client gone mid-body) */

static int answer(tf_conn *conn, const upload *u) {
    char text[96];
    int n = u->err ? snprintf(text, sizeof(text), "error %d\n", u->err)
                   : snprintf(text, sizeof(text), "%llu %llu %zu\n", (unsigned long long)u->len,
                              (unsigned long long)u->sum, u->most_unread);
    return tf_conn_respond(conn, u->err ? 500 : 200, NULL, 0, text, (size_t)n, 0);
}

/* A blocking reader (inline, or a runner): tf_body_read until the end. */
static void read_all(upload *u) {
    size_t cap = 1 << 20; /* more than the window: a read shows all that is unread */
    char *buf = malloc(cap);
    if (!buf) {
        u->err = ENOMEM;
        return;
    }
    for (;;) {
        ssize_t n = tf_body_read(u->body, buf, cap);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            u->err = n < 0 ? errno : 0;
            free(buf);
            return;
        }
        if ((size_t)n > u->most_unread)
            u->most_unread = (size_t)n;
        add(u, buf, (size_t)n);
    }
}

/* The asynchronous reader: takes what is there until TF_BODY_AGAIN (on_body follows). */
static void pump(upload *u) {
    for (;;) {
        const char *data;
        ssize_t n = tf_body_take(u->body, &data);
        if (n == TF_BODY_AGAIN)
            return;
        if (n <= 0) {
            u->err = n < 0 ? errno : 0;
            tf_job_done(&u->job); /* the loop answers it (on_complete) */
            return;
        }
        if ((size_t)n > u->most_unread)
            u->most_unread = (size_t)n;
        add(u, data, (size_t)n);
        tf_body_consume(u->body, (size_t)n);
    }
}

static void nothing(void *ctx) { (void)ctx; }

static int path_is(const tf_request *req, const char *path) {
    return req->path_len == strlen(path) && memcmp(req->path, path, req->path_len) == 0;
}

static int on_request(void *ctx, tf_conn *conn, const tf_request *req, const char *body,
                      size_t body_len) {
    (void)ctx;
    upload *u = calloc(1, sizeof(*u));
    if (!u)
        return -1;
    if (body) { /* whole: the fast path */
        add(u, body, body_len);
        u->most_unread = body_len;
        int r = answer(conn, u);
        free(u);
        return r;
    }
    u->body = tf_conn_body(conn);
    if (path_is(req, "/inline")) {
        read_all(u);
        int r = answer(conn, u);
        free(u);
        return r;
    }
    u->job.data = u;
    tf_conn_defer(conn, &u->job);
    if (path_is(req, "/runner"))
        tf_runq_push(&u->job);
    else
        pump(u);
    return TF_DEFERRED;
}

static void on_body(void *ctx, tf_job *job) {
    (void)ctx;
    pump(job->data);
}

static int on_complete(void *ctx, tf_job *job, int alive) {
    (void)ctx;
    upload *u = job->data;
    if (u->err == ECONNRESET)
        __atomic_add_fetch(&reset_seen, 1, __ATOMIC_RELAXED);
    int r = alive ? answer(job->conn, u) : 0;
    free(u);
    return r;
}

/* A runner thread: reads each body it is given, slowly at first, so that the
 * loop fills the window and must stop reading. */
static void *runner(void *arg) {
    (void)arg;
    tf_job *job = NULL;
    while ((job = tf_runq_next(job)) != NULL) {
        struct timespec pause = {0, 200 * 1000 * 1000};
        nanosleep(&pause, NULL);
        read_all(job->data);
    }
    return NULL;
}

/* --------------------------------------------------------------- the client */

static int port;

static int dial(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        perror("connect");
        exit(2);
    }
    struct timeval tv = {10, 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads one response with a Content-Length; its body into out (NUL-ended). */
static int read_response(int fd, int *status, char *out, size_t cap) {
    char buf[4096];
    size_t len = 0;
    for (;;) {
        char *end = memmem(buf, len, "\r\n\r\n", 4);
        if (end) {
            const char *cl = memmem(buf, (size_t)(end - buf), "Content-Length: ", 16);
            size_t head = (size_t)(end - buf) + 4, body = cl ? strtoul(cl + 16, NULL, 10) : 0;
            if (len >= head + body) {
                *status = atoi(buf + 9);
                size_t n = body < cap - 1 ? body : cap - 1;
                memcpy(out, buf + head, n);
                out[n] = '\0';
                return 0;
            }
        }
        if (len == sizeof(buf))
            return -1;
        ssize_t r = recv(fd, buf + len, sizeof(buf) - len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        len += (size_t)r;
    }
}

static char *pattern(size_t n) {
    char *p = malloc(n);
    uint32_t x = 12345;
    for (size_t i = 0; p && i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (char)(x >> 16);
    }
    return p;
}

static uint64_t checksum(const char *p, size_t n) {
    upload u = {0};
    add(&u, p, n);
    return u.sum;
}

/* Sends data to path (chunked in pieces of `chunk` bytes when chunk > 0),
 * then checks the answer: length and checksum, the unread bytes at once
 * never above the window. */
static void exchange(const char *path, size_t size, size_t chunk, int expect) {
    char *data = pattern(size);
    int fd = dial();
    char head[256];
    int n = chunk ? snprintf(head, sizeof(head),
                             "POST %s HTTP/1.1\r\nHost: t\r\n%sTransfer-Encoding: chunked\r\n\r\n",
                             path, expect ? "Expect: 100-continue\r\n" : "")
                  : snprintf(head, sizeof(head),
                             "POST %s HTTP/1.1\r\nHost: t\r\n%sContent-Length: %zu\r\n\r\n", path,
                             expect ? "Expect: 100-continue\r\n" : "", size);
    CHECK(send_all(fd, head, (size_t)n) == 0, "%s: head", path);
    if (expect) {
        char cont[64];
        ssize_t r = recv(fd, cont, sizeof(cont), 0);
        CHECK(r == 25 && memcmp(cont, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0,
              "%s: no 100 Continue (%zd)", path, r);
    }
    if (!chunk) {
        CHECK(send_all(fd, data, size) == 0, "%s: body", path);
    } else {
        for (size_t off = 0; off < size; off += chunk) {
            size_t k = size - off < chunk ? size - off : chunk;
            n = snprintf(head, sizeof(head), "%zx\r\n", k);
            CHECK(send_all(fd, head, (size_t)n) == 0 && send_all(fd, data + off, k) == 0 &&
                      send_all(fd, "\r\n", 2) == 0,
                  "%s: chunk", path);
        }
        CHECK(send_all(fd, "0\r\n\r\n", 5) == 0, "%s: last chunk", path);
    }
    int status = 0;
    char body[128];
    CHECK(read_response(fd, &status, body, sizeof(body)) == 0, "%s: no answer", path);
    unsigned long long len = 0, sum = 0;
    size_t most = 0;
    CHECK(status == 200 && sscanf(body, "%llu %llu %zu", &len, &sum, &most) == 3,
          "%s: %d %s", path, status, body);
    CHECK(len == size && sum == checksum(data, size), "%s %zu: got %llu bytes", path, size, len);
    CHECK(most <= (size_t)TF_BODY_WINDOW || size <= (size_t)TF_BODY_WINDOW,
          "%s: %zu bytes unread at once", path, most);
    if (strcmp(path, "/runner") == 0 && size > 4 * (size_t)TF_BODY_WINDOW)
        CHECK(most > (size_t)TF_BODY_WINDOW / 2, "%s: the window never filled (%zu)", path, most);
    close(fd);
    free(data);
}

/* Sends part of a body, then waits for the answer: the reader's error. */
static void stall(const char *path, int expect_errno) {
    int fd = dial();
    char head[128];
    int n = snprintf(head, sizeof(head),
                     "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n", path, 4 << 20);
    char part[1000] = {0};
    CHECK(send_all(fd, head, (size_t)n) == 0 && send_all(fd, part, sizeof(part)) == 0,
          "%s: send", path);
    int status = 0;
    char body[128], want[32];
    snprintf(want, sizeof(want), "error %d\n", expect_errno);
    CHECK(read_response(fd, &status, body, sizeof(body)) == 0 && status == 500 &&
              strcmp(body, want) == 0,
          "%s: %d %s", path, status, body);
    close(fd);
}

/* Sends part of a body, then closes: the reader fails with ECONNRESET, the
 * connection is freed once its request ends (ASan checks the rest). */
static void vanish(const char *path) {
    int fd = dial();
    char head[128];
    int n = snprintf(head, sizeof(head),
                     "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n", path, 4 << 20);
    char *part = pattern(100000);
    CHECK(send_all(fd, head, (size_t)n) == 0 && send_all(fd, part, 100000) == 0, "%s: send", path);
    free(part);
    close(fd);
}

static void *client(void *arg) {
    (void)arg;
    exchange("/async", 1000, 0, 0);             /* whole: arrives with its head */
    exchange("/async", 4 << 20, 0, 0);          /* by length, past the window */
    exchange("/async", 3 << 20, 10000, 0);      /* chunked */
    exchange("/async", 2 << 20, 0, 1);          /* 100 Continue at the first take */
    exchange("/runner", 4 << 20, 0, 0);         /* a runner: the window fills, reading stops */
    exchange("/runner", 3 << 20, 65536, 1);     /* chunked, 100 Continue through the loop */
    exchange("/inline", 2 << 20, 0, 1);         /* inline: poll on the one connection */
    exchange("/inline", 1 << 20, 777, 0);
    stall("/inline", ETIMEDOUT); /* body_timeout: nothing more arrives */
    stall("/runner", ETIMEDOUT);
    vanish("/async");
    vanish("/runner");
    exchange("/async", 1 << 20, 0, 0); /* still serving */
    for (int i = 0; i < 500 && __atomic_load_n(&reset_seen, __ATOMIC_RELAXED) < 2; i++) {
        struct timespec tick = {0, 10 * 1000 * 1000};
        nanosleep(&tick, NULL); /* the runner's read fails once the loop sees the close */
    }
    kill(getpid(), SIGTERM); /* the worker drains and returns */
    return NULL;
}

int main(void) {
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 64) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) < 0) {
        perror("listen");
        return 2;
    }
    port = ntohs(a.sin_port);
    tf_worker_config cfg = {
        .listen_fd = lfd, .worker_id = 1, .max_connections = 64, .accepts_per_wakeup = 16,
        .keepalive_timeout = 5, .header_timeout = 5, .body_timeout = 1, .request_timeout = 30,
        .max_body_size = 0, .limits = {8192, 100, 8192}, .threads = 2,
    };
    tf_worker_callbacks cb = {
        .release = nothing, .acquire = nothing, .on_request = on_request,
        .on_complete = on_complete, .on_body = on_body,
    };
    pthread_t run, cli;
    if (pthread_create(&run, NULL, runner, NULL) != 0 ||
        pthread_create(&cli, NULL, client, NULL) != 0) {
        perror("pthread_create");
        return 2;
    }
    int status = tf_worker_run(&cfg, &cb);
    tf_runq_stop();
    pthread_join(run, NULL);
    pthread_join(cli, NULL); /* its CHECKs before ours (the counters are plain ints) */
    CHECK(status == 0, "the worker returned %d", status);
    CHECK(reset_seen == 2, "%d readers saw the client go away, not 2", reset_seen);
    return check_summary("test_body");
}
