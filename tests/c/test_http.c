/* test_http.c — unit tests of csrc/http.c and csrc/log.c, plain C, no framework.
 *
 * Build (tests/test_c_units.py does this):
 *   cc -std=c11 -O1 -g -Wall -Wextra -Werror -fsanitize=address,undefined \
 *      -fno-sanitize-recover=all -Icsrc tests/c/test_http.c csrc/http.c csrc/log.c
 *
 * Every parser case is fed whole and split at every byte: each prefix is
 * copied into a heap block of exactly its size (ASan catches any over-read)
 * and must give TF_PARSE_INCOMPLETE (or, for a bad request, the same error as
 * the whole). One run places each input right against a PROT_NONE page.
 * Chunked bodies are decoded whole, split at every byte, and byte by byte.
 */
#define _GNU_SOURCE /* MAP_ANONYMOUS, pipe2 */

#include "http.h"
#include "log.h"
#include "outbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"

/* The limits these tests parse with: tailfast/config.py's defaults. */
static void tf_limits_for_tests(tf_limits *lim) {
    lim->max_request_line = 8190;
    lim->max_header_count = 100;
    lim->max_header_field = 8190;
}


static int eq(const char *p, size_t n, const char *s) {
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

/* ------------------------------------------------------------ parser cases */

enum { KA_DEFAULT = 0, KA_ON, KA_OFF };

typedef struct {
    const char *name;
    const char *in;
    size_t len;        /* 0: strlen(in) (set it for inputs with NUL) */
    int status;        /* 0: parses; else the expected error status */
    /* checked when status == 0 */
    const char *method;
    const char *path;
    const char *query; /* NULL: expect "" */
    int http10;        /* expect version_minor 0 (else 1) */
    size_t nhdr;
    const char *cl;    /* NULL: expect -1 */
    int chunked;
    int keep;          /* KA_DEFAULT: the version's default */
    int expect;
    size_t consumed;   /* 0: the whole input is the head */
    const char *hname; /* first header, when set */
    const char *hvalue;
} pcase;

#define GET11 "GET / HTTP/1.1\r\nHost: x\r\n"
#define REQ(n, i) .name = n, .in = i
#define BAD(n, i, st) {.name = n, .in = i, .status = st}
#define BADN(n, i, l, st) {.name = n, .in = i, .len = l, .status = st}

static const pcase cases[] = {
    /* ---- good requests */
    {REQ("simple", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), .method = "GET", .path = "/",
     .nhdr = 1, .hname = "Host", .hvalue = "example.com"},
    {REQ("path and query", "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: h\r\n\r\n"), .method = "GET",
     .path = "/a/b", .query = "x=1&y=2", .nhdr = 1},
    {REQ("fragment dropped", "GET /p?q=1#frag HTTP/1.1\r\nHost: h\r\n\r\n"), .method = "GET",
     .path = "/p", .query = "q=1", .nhdr = 1},
    {REQ("fragment before query", "GET /p#f?q HTTP/1.1\r\nHost: h\r\n\r\n"), .method = "GET",
     .path = "/p", .nhdr = 1},
    {REQ("empty query", "GET /p? HTTP/1.1\r\nHost: h\r\n\r\n"), .method = "GET", .path = "/p",
     .nhdr = 1},
    {REQ("absolute-form", "GET http://example.com/x/y?z HTTP/1.1\r\nHost: example.com\r\n\r\n"),
     .method = "GET", .path = "/x/y", .query = "z", .nhdr = 1},
    {REQ("absolute-form no path", "GET https://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n"),
     .method = "GET", .path = "", .nhdr = 1},
    {REQ("absolute-form query no path", "GET http://h:8080?a=b HTTP/1.1\r\nHost: h\r\n\r\n"),
     .method = "GET", .path = "", .query = "a=b", .nhdr = 1},
    {REQ("asterisk OPTIONS", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"), .method = "OPTIONS",
     .path = "*", .nhdr = 1},
    {REQ("HEAD", "HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n"), .method = "HEAD", .path = "/h", .nhdr = 1},
    {REQ("extension method", "M-SEARCH! /x HTTP/1.1\r\nHost: h\r\n\r\n"), .method = "M-SEARCH!",
     .path = "/x", .nhdr = 1},
    {REQ("HTTP/1.0 no host", "GET /old HTTP/1.0\r\n\r\n"), .method = "GET", .path = "/old",
     .http10 = 1},
    {REQ("HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"),
     .method = "GET", .path = "/", .http10 = 1, .nhdr = 1, .keep = KA_ON},
    {REQ("HTTP/1.0 keep-alive and close",
         "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"),
     .method = "GET", .path = "/", .http10 = 1, .nhdr = 1, .keep = KA_OFF},
    {REQ("Connection close", GET11 "Connection: close\r\n\r\n"), .method = "GET", .path = "/",
     .nhdr = 2, .keep = KA_OFF},
    {REQ("Connection list close", GET11 "Connection: upgrade , CLOSE\r\n\r\n"), .method = "GET",
     .path = "/", .nhdr = 2, .keep = KA_OFF},
    {REQ("Connection closed is not close", GET11 "Connection: closed\r\n\r\n"), .method = "GET",
     .path = "/", .nhdr = 2, .keep = KA_ON},
    {REQ("Connection in two fields", GET11 "Connection: te\r\nConnection: close\r\n\r\n"),
     .method = "GET", .path = "/", .nhdr = 3, .keep = KA_OFF},
    {REQ("content-length", "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"),
     .method = "POST", .path = "/p", .nhdr = 2, .cl = "5", .consumed = 48},
    {REQ("content-length zero padded", GET11 "content-length: 007\r\n\r\n"), .method = "GET",
     .path = "/", .nhdr = 2, .cl = "7"},
    {REQ("content-length max", GET11 "Content-Length: 9223372036854775807\r\n\r\n"),
     .method = "GET", .path = "/", .nhdr = 2, .cl = "9223372036854775807"},
    {REQ("content-length OWS", GET11 "Content-Length: \t 12 \t\r\n\r\n"), .method = "GET",
     .path = "/", .nhdr = 2, .cl = "12"},
    {REQ("chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"),
     .method = "POST", .path = "/", .nhdr = 2, .chunked = 1},
    {REQ("chunked any case", "POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: ChUnKeD\r\n\r\n"),
     .method = "POST", .path = "/", .nhdr = 2, .chunked = 1},
    {REQ("chunked with empty list elements", GET11 "Transfer-Encoding: , chunked ,\r\n\r\n"),
     .method = "GET", .path = "/", .nhdr = 2, .chunked = 1},
    {REQ("expect 100-continue", GET11 "Expect: 100-Continue\r\n\r\n"), .method = "GET",
     .path = "/", .nhdr = 2, .expect = 1},
    {REQ("expect other", GET11 "Expect: something\r\n\r\n"), .method = "GET", .path = "/",
     .nhdr = 2, .expect = -1},
    {REQ("leading empty lines", "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), .method = "GET",
     .path = "/", .nhdr = 1},
    {REQ("OWS trimmed", "GET / HTTP/1.1\r\nHost: \t h \t\r\nX-Empty:\r\n\r\n"), .method = "GET",
     .path = "/", .nhdr = 2, .hname = "Host", .hvalue = "h"},
    {REQ("empty value", "GET / HTTP/1.1\r\nX-Empty: \r\nHost: h\r\n\r\n"), .method = "GET",
     .path = "/", .nhdr = 2, .hname = "X-Empty", .hvalue = ""},
    {REQ("obs-text and inner spaces", "GET / HTTP/1.1\r\nX: a \xff\x80 b\tc\r\nHost: h\r\n\r\n"),
     .method = "GET", .path = "/", .nhdr = 2, .hname = "X", .hvalue = "a \xff\x80 b\tc"},
    {REQ("pipelined", "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"),
     .method = "GET", .path = "/1", .nhdr = 1, .consumed = 28},
    {REQ("token chars in name", GET11 "!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n"), .method = "GET",
     .path = "/", .nhdr = 2},

    /* ---- request line */
    BAD("lowercase version", "GET / http/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    BAD("HTTP/1.2", "GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505),
    BAD("HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", 505),
    BAD("HTTP/1.10", "GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400),
    BAD("HTTP/1", "GET / HTTP/1\r\nHost: h\r\n\r\n", 400),
    BAD("HTTP/a.b", "GET / HTTP/a.b\r\nHost: h\r\n\r\n", 400),
    BAD("no version", "GET /\r\nHost: h\r\n\r\n", 400),
    BAD("space after version", "GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400),
    BAD("two spaces", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("two spaces before version", "GET /  HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("tab separator", "GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("empty method", " / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("bad method char", "G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("target with DEL", "GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("target with obs-text", "GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BADN("target with NUL", "GET /\0 HTTP/1.1\r\nHost: h\r\n\r\n", 28, 400),
    BAD("relative target", "GET foo HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("bad scheme", "GET 1http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("scheme without //", "GET http:h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("authority-form", "CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("asterisk with GET", "GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("asterisk plus", "OPTIONS *x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("bare LF request line", "GET / HTTP/1.1\nHost: h\r\n\r\n", 400),
    BAD("bare CR request line", "GET / HTTP/1.1\rHost: h\r\n\r\n", 400),
    BAD("bare LF leading", "\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("bare CR leading", "\r\rGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("leading space", " GET / HTTP/1.1\r\nHost: h\r\n\r\n", 400),

    /* ---- field lines */
    BAD("bare LF in field", "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400),
    BAD("bare LF ending head", "GET / HTTP/1.1\r\nHost: h\r\n\n", 400),
    BAD("bare CR in value", "GET / HTTP/1.1\r\nHost: h\rX\r\n\r\n", 400),
    BAD("bare CR ending head", "GET / HTTP/1.1\r\nHost: h\r\n\rX", 400),
    BAD("obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400),
    BAD("obs-fold tab", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", 400),
    BAD("space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
    BAD("tab before colon", "GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", 400),
    BAD("empty name", "GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", 400),
    BAD("no colon", "GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400),
    BAD("bad name char", "GET / HTTP/1.1\r\nHost: h\r\nX(y): v\r\n\r\n", 400),
    BADN("NUL in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", 35, 400),
    BAD("CTL in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\x01" "b\r\n\r\n", 400),
    BAD("DEL in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f" "b\r\n\r\n", 400),
    BAD("ESC in value", "GET / HTTP/1.1\r\nHost: h\r\nX: \x1b[0m\r\n\r\n", 400),

    /* ---- Host */
    BAD("no Host 1.1", "GET / HTTP/1.1\r\n\r\n", 400),
    BAD("two Host 1.1", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    BAD("two Host 1.0", "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 400),

    /* ---- Content-Length */
    BAD("CL twice same", GET11 "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
    BAD("CL list", GET11 "Content-Length: 5, 5\r\n\r\n", 400),
    BAD("CL sign", GET11 "Content-Length: +5\r\n\r\n", 400),
    BAD("CL negative", GET11 "Content-Length: -1\r\n\r\n", 400),
    BAD("CL inner space", GET11 "Content-Length: 1 2\r\n\r\n", 400),
    BAD("CL empty", GET11 "Content-Length:\r\n\r\n", 400),
    BAD("CL hex", GET11 "Content-Length: 0x10\r\n\r\n", 400),
    BAD("CL overflow", GET11 "Content-Length: 9223372036854775808\r\n\r\n", 400),
    BAD("CL huge", GET11 "Content-Length: 99999999999999999999999\r\n\r\n", 400),

    /* ---- Transfer-Encoding */
    BAD("TE and CL", GET11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
    BAD("CL and TE", GET11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    BAD("TE in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    BAD("TE twice", GET11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    BAD("TE empty", GET11 "Transfer-Encoding:\r\n\r\n", 400),
    BAD("TE only commas", GET11 "Transfer-Encoding: , ,\r\n\r\n", 400),
    BAD("TE gzip", GET11 "Transfer-Encoding: gzip\r\n\r\n", 501),
    BAD("TE gzip, chunked", GET11 "Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    BAD("TE chunked, gzip", GET11 "Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    BAD("TE chunked, chunked", GET11 "Transfer-Encoding: chunked, chunked\r\n\r\n", 400),
    BAD("TE chunked with param", GET11 "Transfer-Encoding: chunked;x=1\r\n\r\n", 501),
    BAD("TE chunkedx", GET11 "Transfer-Encoding: chunkedx\r\n\r\n", 501),
    BAD("TE not a token", GET11 "Transfer-Encoding: chun ked\r\n\r\n", 400),
    BAD("TE quoted", GET11 "Transfer-Encoding: \"chunked\"\r\n\r\n", 400),
};

static const char *status_name(ssize_t r) {
    return r == TF_PARSE_INCOMPLETE ? "INCOMPLETE" : r == TF_PARSE_ERROR ? "ERROR" : "OK";
}

/* Parses in[0..len) from a heap block of exactly len bytes. */
static ssize_t parse_copy(const char *in, size_t len, const tf_limits *lim, tf_request *req,
                          int *status) {
    char *b = malloc(len ? len : 1);
    if (!b)
        abort();
    memcpy(b, in, len);
    *status = 0;
    ssize_t r = tf_parse_request(b, len, lim, req, status);
    /* pointers into b are not used after this: the checks below use offsets */
    if (r >= 0) {
        /* rebase the pointers onto in so the caller can check them */
        ptrdiff_t d = in - b;
        req->method += d;
        req->target += d;
        req->path += d;
        req->query += d;
        for (size_t i = 0; i < req->num_headers; i++) {
            req->headers[i].name += d;
            req->headers[i].value += d;
        }
    }
    free(b);
    return r;
}

static void check_result(const pcase *c, size_t len, ssize_t r, const tf_request *req,
                         int status, const char *how) {
    if (c->status) {
        CHECK(r == TF_PARSE_ERROR && status == c->status, "%s (%s): got %s status %d, want %d",
              c->name, how, status_name(r), status, c->status);
        return;
    }
    size_t want = c->consumed ? c->consumed : len;
    CHECK(r == (ssize_t)want, "%s (%s): got %zd (%s, status %d), want %zu", c->name, how, r,
          status_name(r), status, want);
    if (r != (ssize_t)want)
        return;
    CHECK(eq(req->method, req->method_len, c->method), "%s: method %.*s", c->name,
          (int)req->method_len, req->method);
    CHECK(eq(req->path, req->path_len, c->path), "%s: path '%.*s'", c->name, (int)req->path_len,
          req->path);
    CHECK(eq(req->query, req->query_len, c->query ? c->query : ""), "%s: query '%.*s'", c->name,
          (int)req->query_len, req->query);
    CHECK(req->path >= req->target && req->path + req->path_len <= req->target + req->target_len,
          "%s: path outside target", c->name);
    CHECK(req->version_minor == (c->http10 ? 0 : 1), "%s: version_minor %d", c->name,
          req->version_minor);
    CHECK(req->num_headers == c->nhdr, "%s: num_headers %zu", c->name, req->num_headers);
    int64_t cl = c->cl ? strtoll(c->cl, NULL, 10) : -1;
    CHECK(req->content_length == cl, "%s: content_length %lld", c->name,
          (long long)req->content_length);
    CHECK(req->chunked == c->chunked, "%s: chunked %d", c->name, req->chunked);
    int keep = c->keep == KA_ON ? 1 : c->keep == KA_OFF ? 0 : !c->http10;
    CHECK(req->keep_alive == keep, "%s: keep_alive %d", c->name, req->keep_alive);
    CHECK(req->expect_continue == c->expect, "%s: expect_continue %d", c->name,
          req->expect_continue);
    CHECK(req->is_head == (strcmp(c->method, "HEAD") == 0), "%s: is_head %d", c->name,
          req->is_head);
    if (c->hname) {
        const tf_header *h = &req->headers[0];
        CHECK(req->num_headers > 0 && eq(h->name, h->name_len, c->hname) &&
                  eq(h->value, h->value_len, c->hvalue),
              "%s: first header '%.*s' = '%.*s'", c->name, (int)req->headers[0].name_len,
              req->headers[0].name, (int)req->headers[0].value_len, req->headers[0].value);
    }
}

static void test_parser_cases(void) {
    tf_limits lim;
    tf_limits_for_tests(&lim);
    static tf_request req; /* large: keep it off the stack */
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const pcase *c = &cases[i];
        size_t len = c->len ? c->len : strlen(c->in);
        int status;
        ssize_t r = parse_copy(c->in, len, &lim, &req, &status);
        check_result(c, len, r, &req, status, "whole");

        /* every prefix: INCOMPLETE, or for a bad request possibly its error */
        size_t head = c->status ? len : (c->consumed ? c->consumed : len);
        int prefix_bad = 0;
        for (size_t k = 0; k < head && !prefix_bad; k++) {
            r = parse_copy(c->in, k, &lim, &req, &status);
            if (r == TF_PARSE_INCOMPLETE)
                continue;
            if (c->status && r == TF_PARSE_ERROR && status == c->status)
                continue;
            prefix_bad = 1;
            CHECK(0, "%s: prefix of %zu bytes gave %s status %d", c->name, k, status_name(r),
                  status);
        }
        if (!prefix_bad)
            passed++;
        /* with more bytes after the head, the head length does not change */
        if (!c->status && head < len)
            for (size_t k = head; k <= len; k++) {
                r = parse_copy(c->in, k, &lim, &req, &status);
                if (r != (ssize_t)head) {
                    CHECK(0, "%s: %zu bytes gave %zd", c->name, k, r);
                    break;
                }
            }
    }
}

/* Each case placed so that its last byte is the last one before a PROT_NONE
 * page: any read past buf + len faults. Prefixes too. */
static void test_guard_page(void) {
    long page = sysconf(_SC_PAGESIZE);
    size_t span = 4 * (size_t)page;
    char *map = mmap(NULL, span + (size_t)page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(map != MAP_FAILED, "mmap: %s", strerror(errno));
    if (map == MAP_FAILED)
        return;
    char *guard = map + span;
    CHECK(mprotect(guard, (size_t)page, PROT_NONE) == 0, "mprotect: %s", strerror(errno));
    tf_limits lim;
    tf_limits_for_tests(&lim);
    static tf_request req;
    int ok = 1;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const pcase *c = &cases[i];
        size_t len = c->len ? c->len : strlen(c->in);
        for (size_t k = 0; k <= len; k++) {
            char *b = guard - k;
            memcpy(b, c->in, k);
            int status = 0;
            ssize_t r = tf_parse_request(b, k, &lim, &req, &status);
            if (k == len) {
                ssize_t want = c->status ? TF_PARSE_ERROR
                                         : (ssize_t)(c->consumed ? c->consumed : len);
                if (r != want) {
                    ok = 0;
                    fprintf(stderr, "guard page: %s gave %zd\n", c->name, r);
                }
            }
            /* chunked decoding against the guard page as well (in place) */
            tf_chunked_decoder dec = {0};
            size_t n = k;
            (void)tf_chunked_decode(&dec, b, &n);
        }
    }
    /* the request-line and field limits, right at the page end */
    static const char prefix[] = "GET /";
    size_t long_len = 3 * (size_t)page;
    char *b = guard - long_len;
    memcpy(b, prefix, 5);
    memset(b + 5, 'a', long_len - 5);
    int status = 0;
    ssize_t r = tf_parse_request(b, long_len, &lim, &req, &status);
    if (r != TF_PARSE_ERROR || status != 414) {
        ok = 0;
        fprintf(stderr, "guard page: long line gave %zd %d\n", r, status);
    }
    CHECK(ok, "guard page runs");
    munmap(map, span + (size_t)page);
}

/* ------------------------------------------------------------------ limits */

static ssize_t parse_buf(const char *b, size_t len, const tf_limits *lim, int *status) {
    static tf_request req;
    *status = 0;
    return parse_copy(b, len, lim, &req, status);
}

static void test_limits(void) {
    tf_limits lim;
    tf_limits_for_tests(&lim);
    CHECK(lim.max_request_line == 8190 && lim.max_header_count == 100 &&
              lim.max_header_field == 8190,
          "defaults");

    static char b[40000];
    int status;
    ssize_t r;

    /* request line exactly at the limit, then one byte over */
    for (size_t extra = 0; extra < 2; extra++) {
        size_t line_len = lim.max_request_line + extra;
        size_t target_len = line_len - strlen("GET  HTTP/1.1");
        size_t n = 0;
        memcpy(b, "GET /", 5);
        n = 5;
        memset(b + n, 'a', target_len - 1);
        n += target_len - 1;
        memcpy(b + n, " HTTP/1.1\r\nHost: h\r\n\r\n", 22);
        n += 22;
        r = parse_buf(b, n, &lim, &status);
        if (extra == 0)
            CHECK(r == (ssize_t)n, "request line at the limit: %zd %d", r, status);
        else
            CHECK(r == TF_PARSE_ERROR && status == 414, "request line over: %zd %d", r, status);
        /* a prefix ending at the CR: complete line length known */
        r = parse_buf(b, line_len + 1, &lim, &status);
        if (extra == 0)
            CHECK(r == TF_PARSE_INCOMPLETE, "at limit, up to CR: %zd", r);
        else
            CHECK(r == TF_PARSE_ERROR && status == 414, "over, up to CR: %zd %d", r, status);
    }

    /* early 414: no CRLF within the limit; in the method, target and version */
    memset(b, 'a', lim.max_request_line + 1);
    r = parse_buf(b, lim.max_request_line, &lim, &status);
    CHECK(r == TF_PARSE_INCOMPLETE, "long method at limit: %zd", r);
    r = parse_buf(b, lim.max_request_line + 1, &lim, &status);
    CHECK(r == TF_PARSE_ERROR && status == 414, "long method early 414: %zd %d", r, status);
    memcpy(b, "GET /", 5);
    r = parse_buf(b, lim.max_request_line + 1, &lim, &status);
    CHECK(r == TF_PARSE_ERROR && status == 414, "long target early 414: %zd %d", r, status);
    memcpy(b, "GET / ", 6);
    r = parse_buf(b, lim.max_request_line + 1, &lim, &status);
    CHECK(r == TF_PARSE_ERROR && status == 414, "long version early 414: %zd %d", r, status);
    /* empty lines count against the request line */
    for (size_t i = 0; i + 1 < sizeof(b); i += 2)
        memcpy(b + i, "\r\n", 2);
    r = parse_buf(b, 8000, &lim, &status);
    CHECK(r == TF_PARSE_INCOMPLETE, "empty lines within budget: %zd", r);
    r = parse_buf(b, 9000, &lim, &status);
    CHECK(r == TF_PARSE_ERROR && status == 414, "endless empty lines: %zd %d", r, status);

    /* one field line at the limit, then over; early 431 */
    for (size_t extra = 0; extra < 2; extra++) {
        size_t field_len = lim.max_header_field + extra;
        size_t n = 0;
        memcpy(b, GET11 "X: ", strlen(GET11 "X: "));
        n = strlen(GET11 "X: ");
        memset(b + n, 'v', field_len - 3);
        n += field_len - 3;
        memcpy(b + n, "\r\n\r\n", 4);
        n += 4;
        r = parse_buf(b, n, &lim, &status);
        if (extra == 0)
            CHECK(r == (ssize_t)n, "field at the limit: %zd %d", r, status);
        else
            CHECK(r == TF_PARSE_ERROR && status == 431, "field over: %zd %d", r, status);
    }
    size_t n = strlen(GET11);
    memcpy(b, GET11, n);
    memset(b + n, 'X', lim.max_header_field + 1);
    r = parse_buf(b, n + lim.max_header_field, &lim, &status);
    CHECK(r == TF_PARSE_INCOMPLETE, "long name at limit: %zd", r);
    r = parse_buf(b, n + lim.max_header_field + 1, &lim, &status);
    CHECK(r == TF_PARSE_ERROR && status == 431, "long name early 431: %zd %d", r, status);
    memcpy(b + n, "X: ", 3);
    r = parse_buf(b, n + lim.max_header_field + 1, &lim, &status);
    CHECK(r == TF_PARSE_ERROR && status == 431, "long value early 431: %zd %d", r, status);

    /* header count: 100 fields (Host included) fine, 101 -> 431 as soon as
     * the 101st begins */
    for (size_t count = 100; count <= 101; count++) {
        n = 0;
        memcpy(b, "GET / HTTP/1.1\r\nHost: h\r\n", 25);
        n = 25;
        for (size_t i = 1; i < count; i++)
            n += (size_t)sprintf(b + n, "X-%zu: v\r\n", i);
        size_t before_end = n;
        memcpy(b + n, "\r\n", 2);
        n += 2;
        r = parse_buf(b, n, &lim, &status);
        if (count == 100) {
            CHECK(r == (ssize_t)n, "100 fields: %zd %d", r, status);
        } else {
            CHECK(r == TF_PARSE_ERROR && status == 431, "101 fields: %zd %d", r, status);
            /* the 101st line's first byte is enough */
            size_t start_101 = before_end - strlen("X-100: v\r\n");
            r = parse_buf(b, start_101, &lim, &status);
            CHECK(r == TF_PARSE_INCOMPLETE, "100 fields, incomplete: %zd", r);
            r = parse_buf(b, start_101 + 1, &lim, &status);
            CHECK(r == TF_PARSE_ERROR && status == 431, "101st field begins: %zd %d", r, status);
        }
    }

    /* small custom limits */
    tf_limits small = {21, 2, 10}; /* "GET /0123456 HTTP/1.1" is 21 bytes */
    const char *ok = "GET /0123456 HTTP/1.1\r\nHost: h\r\nA: 1234567\r\n\r\n";
    r = parse_buf(ok, strlen(ok), &small, &status);
    CHECK(r == (ssize_t)strlen(ok), "small limits ok: %zd %d", r, status);
    const char *long_line = "GET /01234567 HTTP/1.1\r\nHost: h\r\n\r\n";
    r = parse_buf(long_line, strlen(long_line), &small, &status);
    CHECK(r == TF_PARSE_ERROR && status == 414, "small line: %zd %d", r, status);
    const char *long_field = "GET / HTTP/1.1\r\nHost: h\r\nA: 12345678\r\n\r\n";
    r = parse_buf(long_field, strlen(long_field), &small, &status);
    CHECK(r == TF_PARSE_ERROR && status == 431, "small field: %zd %d", r, status);
    const char *three = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
    r = parse_buf(three, strlen(three), &small, &status);
    CHECK(r == TF_PARSE_ERROR && status == 431, "small count: %zd %d", r, status);
    /* max_header_count above TF_MAX_HEADERS is capped to the array size */
    tf_limits big = lim;
    big.max_header_count = 1000;
    n = 0;
    memcpy(b, "GET / HTTP/1.1\r\nHost: h\r\n", 25);
    n = 25;
    for (size_t i = 1; i <= TF_MAX_HEADERS; i++)
        n += (size_t)sprintf(b + n, "X-%zu: v\r\n", i);
    memcpy(b + n, "\r\n", 2);
    n += 2;
    r = parse_buf(b, n, &big, &status);
    CHECK(r == TF_PARSE_ERROR && status == 431, "count capped at TF_MAX_HEADERS: %zd %d", r,
          status);
}

/* ----------------------------------------------------------------- chunked */

typedef struct {
    const char *name;
    const char *in;
    int ok;             /* 1: complete; 0: error; -1: incomplete at the end */
    const char *body;   /* decoded, when ok >= 0... checked when ok == 1 */
    const char *after;  /* bytes left after the body (ok == 1) */
} ccase;

static const ccase ccases[] = {
    {"one chunk", "5\r\nhello\r\n0\r\n\r\n", 1, "hello", ""},
    {"two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 1, "hello world", ""},
    {"hex upper lower", "A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", 1,
     "0123456789abcdefghij", ""},
    {"leading zeros", "0005\r\nhello\r\n000\r\n\r\n", 1, "hello", ""},
    {"empty body", "0\r\n\r\n", 1, "", ""},
    {"pipelined after", "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 1, "abc",
     "GET / HTTP/1.1\r\n"},
    {"extensions", "3;name=value;x\r\nabc\r\n0;last\r\n\r\n", 1, "abc", ""},
    {"BWS before ext", "3 \t;x=\"q s\"\r\nabc\r\n0\r\n\r\n", 1, "abc", ""},
    {"trailers", "3\r\nabc\r\n0\r\nX-Sum: 1\r\nY:\r\n\r\nNEXT", 1, "abc", "NEXT"},
    {"data with CRLF inside", "4\r\n\r\n\r\n\r\n0\r\n\r\n", 1, "\r\n\r\n", ""},
    {"16 hex digits overflow", "8000000000000000\r\n", 0, NULL, NULL},
    {"max 63-bit size", "7fffffffffffffff\r\nabc", -1, NULL, NULL},
    {"17 digits", "00000000000000001\r\nx\r\n0\r\n\r\n", 0, NULL, NULL},
    {"no digits", "\r\n", 0, NULL, NULL},
    {"bad digit", "g\r\n", 0, NULL, NULL},
    {"sign", "+5\r\nhello\r\n0\r\n\r\n", 0, NULL, NULL},
    {"space after size", "5 \r\nhello\r\n0\r\n\r\n", 0, NULL, NULL},
    {"bare LF after size", "5\nhello\r\n0\r\n\r\n", 0, NULL, NULL},
    {"bare CR after size", "5\rhello\r\n0\r\n\r\n", 0, NULL, NULL},
    {"bare LF after data", "5\r\nhello\n0\r\n\r\n", 0, NULL, NULL},
    {"data too long", "5\r\nhelloX\r\n0\r\n\r\n", 0, NULL, NULL},
    {"no CRLF after data", "5\r\nhello0\r\n\r\n", 0, NULL, NULL},
    {"bare LF final", "0\r\n\n", 0, NULL, NULL},
    {"bare LF trailer", "0\r\nX: y\n\r\n", 0, NULL, NULL},
    {"obs-fold trailer", "0\r\nX: y\r\n z\r\n\r\n", 0, NULL, NULL},
    {"trailer no colon", "0\r\nXY\r\n\r\n", 0, NULL, NULL},
    {"trailer CTL", "0\r\nX: \x01\r\n\r\n", 0, NULL, NULL},
    {"ext CTL", "1;\x01\r\na\r\n0\r\n\r\n", 0, NULL, NULL},
    /* chunk-ext (RFC 9112 7.1.1): a token name, a token or quoted value, BWS around ';' and '=' */
    {"ext BWS everywhere", "1 ; a = b ;\tc=\"d\" ; e\r\nx\r\n0\r\n\r\n", 1, "x", ""},
    {"ext quoted pair, obs-text", "1;a=\"\\\"\\;\xe9 ;\"\r\nx\r\n0\r\n\r\n", 1, "x", ""},
    {"ext empty quoted", "1;a=\"\"\r\nx\r\n0;b\r\n\r\n", 1, "x", ""},
    {"ext empty", "2;\r\nab\r\n0\r\n\r\n", 0, NULL, NULL},
    {"ext empty, BWS", "2; \r\nab\r\n0\r\n\r\n", 0, NULL, NULL},
    {"ext empty between", "1;a;;b\r\nx\r\n0\r\n\r\n", 0, NULL, NULL},
    {"ext no name", "1;=v\r\nx\r\n0\r\n\r\n", 0, NULL, NULL},
    {"ext no value", "1;n=\r\nx\r\n0\r\n\r\n", 0, NULL, NULL},
    {"ext no value before ;", "1;n=;m\r\nx\r\n0\r\n\r\n", 0, NULL, NULL},
    {"ext last chunk empty", "0;\r\n\r\n", 0, NULL, NULL},
    {"ext name not token", "1;a@b\r\nx\r\n0\r\n\r\n", 0, NULL, NULL},
    {"ext space inside name", "1;a b\r\nx\r\n0\r\n\r\n", 0, NULL, NULL},
    {"ext space before CR", "1;a \r\nx\r\n0\r\n\r\n", 0, NULL, NULL},
    {"ext space after value", "1;a=b \r\nx\r\n0\r\n\r\n", 0, NULL, NULL},
    {"ext value not token", "1;a=b/c\r\nx\r\n0\r\n\r\n", 0, NULL, NULL},
    {"ext two values", "1;a=b=c\r\nx\r\n0\r\n\r\n", 0, NULL, NULL},
    {"ext text after quote", "1;a=\"b\"c\r\nx\r\n0\r\n\r\n", 0, NULL, NULL},
    {"ext unterminated quote", "1;a=\"b\r\nx\r\n0\r\n\r\n", 0, NULL, NULL},
    {"ext CTL in quote", "1;a=\"\x01\"\r\nx\r\n0\r\n\r\n", 0, NULL, NULL},
    {"ext CR quoted-pair", "1;a=\"\\\r\"\r\nx\r\n0\r\n\r\n", 0, NULL, NULL},
    {"ext incomplete in quote", "1;a=\"b", -1, NULL, NULL},
    {"ext bare LF", "1;a\na\r\n0\r\n\r\n", 0, NULL, NULL},
    {"incomplete data", "5\r\nhel", -1, NULL, NULL},
    {"incomplete final", "0\r\n\r", -1, NULL, NULL},
    {"incomplete trailer", "0\r\nX: y\r\n", -1, NULL, NULL},
};

/* Decodes in, fed in pieces at the given split points (sorted, within in), the
 * way the worker does: decoded bytes stay at the start of the buffer, new raw
 * bytes are appended right after them. Returns the decoder's last result;
 * the body and what follows it are in *out (body) and *after. */
static ssize_t decode_split(const char *in, size_t len, const size_t *splits, size_t nsplits,
                            char *out, size_t *out_len, char *after, size_t *after_len) {
    tf_chunked_decoder dec;
    memset(&dec, 0, sizeof(dec));
    char *buf = malloc(len + 1);
    if (!buf)
        abort();
    size_t body = 0; /* decoded bytes at buf[0..body) */
    size_t fed = 0;
    ssize_t r = TF_PARSE_INCOMPLETE;
    for (size_t i = 0; i <= nsplits && r == TF_PARSE_INCOMPLETE; i++) {
        size_t upto = i < nsplits ? splits[i] : len;
        memcpy(buf + body, in + fed, upto - fed);
        size_t raw = upto - fed;
        fed = upto;
        /* exact-size heap block so ASan sees over-reads */
        char *piece = malloc(raw ? raw : 1);
        if (!piece)
            abort();
        memcpy(piece, buf + body, raw);
        r = tf_chunked_decode(&dec, piece, &raw);
        memcpy(buf + body, piece, raw + (r > 0 ? (size_t)r : 0));
        free(piece);
        body += raw;
        if (r >= 0) {
            /* leftover plus anything not fed yet */
            memcpy(after, buf + body, (size_t)r);
            memcpy(after + r, in + fed, len - fed);
            *after_len = (size_t)r + (len - fed);
        }
    }
    memcpy(out, buf, body);
    *out_len = body;
    free(buf);
    return r;
}

static void check_chunked(const ccase *c, ssize_t r, const char *out, size_t out_len,
                          const char *after, size_t after_len, const char *how) {
    if (c->ok == 1) {
        CHECK(r >= 0 && eq(out, out_len, c->body) && eq(after, after_len, c->after),
              "chunked %s (%s): r=%zd body '%.*s' after '%.*s'", c->name, how, r, (int)out_len,
              out, (int)after_len, after);
    } else if (c->ok == 0) {
        CHECK(r == TF_PARSE_ERROR, "chunked %s (%s): r=%zd, want error", c->name, how, r);
    } else {
        CHECK(r == TF_PARSE_INCOMPLETE, "chunked %s (%s): r=%zd, want incomplete", c->name, how,
              r);
    }
}

static void test_chunked(void) {
    static char out[4096], after[4096];
    size_t out_len, after_len;
    for (size_t i = 0; i < sizeof(ccases) / sizeof(ccases[0]); i++) {
        const ccase *c = &ccases[i];
        size_t len = strlen(c->in);
        ssize_t r = decode_split(c->in, len, NULL, 0, out, &out_len, after, &after_len);
        check_chunked(c, r, out, out_len, after, after_len, "whole");
        int bad = 0;
        for (size_t k = 0; k <= len && !bad; k++) {
            r = decode_split(c->in, len, &k, 1, out, &out_len, after, &after_len);
            int before = failed;
            check_chunked(c, r, out, out_len, after, after_len, "split");
            if (failed != before) {
                fprintf(stderr, "  (split at %zu)\n", k);
                bad = 1;
            }
        }
        size_t splits[512];
        size_t ns = 0;
        for (size_t k = 1; k < len && ns < 512; k++)
            splits[ns++] = k;
        r = decode_split(c->in, len, splits, ns, out, &out_len, after, &after_len);
        check_chunked(c, r, out, out_len, after, after_len, "byte by byte");
    }

    /* the extension and trailer budget: 4096 bytes */
    static char big[8192];
    for (int over = 0; over < 2; over++) {
        size_t n = 0;
        big[n++] = '0';
        big[n++] = ';';
        size_t ext = 4096 - 1 + (size_t)over; /* ';' counts */
        memset(big + n, 'e', ext);
        n += ext;
        memcpy(big + n, "\r\n\r\n", 4);
        n += 4;
        ssize_t r = decode_split(big, n, NULL, 0, out, &out_len, after, &after_len);
        if (over)
            CHECK(r == TF_PARSE_ERROR, "extensions over budget: %zd", r);
        else
            CHECK(r == 0, "extensions at budget: %zd", r);
    }
    {
        size_t n = 0;
        memcpy(big, "0\r\n", 3);
        n = 3;
        while (n < 6000) {
            memcpy(big + n, "X-Trailer: some value\r\n", 23);
            n += 23;
        }
        memcpy(big + n, "\r\n", 2);
        n += 2;
        ssize_t r = decode_split(big, n, NULL, 0, out, &out_len, after, &after_len);
        CHECK(r == TF_PARSE_ERROR, "trailers over budget: %zd", r);
    }
    /* sticky error and done states */
    {
        tf_chunked_decoder dec = {0};
        char b1[] = "x";
        size_t n = 1;
        CHECK(tf_chunked_decode(&dec, b1, &n) == TF_PARSE_ERROR, "error");
        char b2[] = "0\r\n\r\n";
        n = 5;
        CHECK(tf_chunked_decode(&dec, b2, &n) == TF_PARSE_ERROR, "error is sticky");
        tf_chunked_decoder done = {0};
        n = 5;
        CHECK(tf_chunked_decode(&done, b2, &n) == 0 && n == 0, "done");
        char b3[] = "abc";
        n = 3;
        CHECK(tf_chunked_decode(&done, b3, &n) == 3 && n == 0 && memcmp(b3, "abc", 3) == 0,
              "after done, everything follows the body");
        n = 0;
        tf_chunked_decoder fresh = {0};
        CHECK(tf_chunked_decode(&fresh, b3, &n) == TF_PARSE_INCOMPLETE && n == 0, "empty input");
    }
}

/* ---------------------------------------------------- response-head parser */

typedef struct {
    const char *name;
    const char *in;
    int error;      /* 1: TF_PARSE_ERROR expected */
    int status;
    int http10;
    const char *cl; /* NULL: expect -1 */
    int chunked;
    int keep;
    size_t consumed; /* 0: the whole input is the head */
} rcase;

static const rcase rcases[] = {
    {"plain", "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n", 0, 200, 0, "13", 0, 1, 0},
    {"no fields", "HTTP/1.1 204 No Content\r\n\r\n", 0, 204, 0, NULL, 0, 1, 0},
    {"body follows", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", 0, 200, 0, "2", 0, 1, 38},
    {"empty reason", "HTTP/1.1 200 \r\n\r\n", 0, 200, 0, NULL, 0, 1, 0},
    {"no reason, no SP", "HTTP/1.1 404\r\n\r\n", 0, 404, 0, NULL, 0, 1, 0},
    {"obs-text reason", "HTTP/1.1 200 \xc3\xa9t\xc3\xa9\r\n\r\n", 0, 200, 0, NULL, 0, 1, 0},
    {"close", "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", 0, 200, 0, NULL, 0,
     0, 0},
    {"1.0 default", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 0, 200, 1, "0", 0, 0, 0},
    {"1.0 keep-alive", "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\n", 0, 200, 1, NULL, 0,
     1, 0},
    {"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n", 0, 200, 0, NULL,
     1, 1, 0},
    {"chunked not last", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 0, 200,
     0, NULL, 0, 1, 0},
    {"chunked and length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked"
     "\r\n\r\n", 0, 200, 0, "5", 1, 1, 0},
    {"OWS trimmed", "HTTP/1.1 301 Moved\r\nContent-Length: \t 7 \r\nX-A:\r\n\r\n", 0, 301, 0,
     "7", 0, 1, 0},
    {"interim", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", 0, 100, 0, NULL, 0, 1,
     25},
    {"599", "HTTP/1.1 599 x\r\n\r\n", 0, 599, 0, NULL, 0, 1, 0},
    /* ---- errors */
    {"HTTP/2", "HTTP/2.0 200 OK\r\n\r\n", 1, 0, 0, NULL, 0, 0, 0},
    {"HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n", 1, 0, 0, NULL, 0, 0, 0},
    {"lowercase", "http/1.1 200 OK\r\n\r\n", 1, 0, 0, NULL, 0, 0, 0},
    {"status 600", "HTTP/1.1 600 x\r\n\r\n", 1, 0, 0, NULL, 0, 0, 0},
    {"status 2 digits", "HTTP/1.1 20 OK\r\n\r\n", 1, 0, 0, NULL, 0, 0, 0},
    {"status 4 digits", "HTTP/1.1 2000 OK\r\n\r\n", 1, 0, 0, NULL, 0, 0, 0},
    {"bare LF status", "HTTP/1.1 200 OK\n\r\n", 1, 0, 0, NULL, 0, 0, 0},
    {"bare LF field", "HTTP/1.1 200 OK\r\nA: b\n\r\n", 1, 0, 0, NULL, 0, 0, 0},
    {"bare LF end", "HTTP/1.1 200 OK\r\n\n", 1, 0, 0, NULL, 0, 0, 0},
    {"CR alone", "HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", 1, 0, 0, NULL, 0, 0, 0},
    {"obs-fold", "HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", 1, 0, 0, NULL, 0, 0, 0},
    {"space before colon", "HTTP/1.1 200 OK\r\nA : b\r\n\r\n", 1, 0, 0, NULL, 0, 0, 0},
    {"no colon", "HTTP/1.1 200 OK\r\nAb\r\n\r\n", 1, 0, 0, NULL, 0, 0, 0},
    {"empty name", "HTTP/1.1 200 OK\r\n: b\r\n\r\n", 1, 0, 0, NULL, 0, 0, 0},
    {"NUL in value", "HTTP/1.1 200 OK\r\nA: \x01\r\n\r\n", 1, 0, 0, NULL, 0, 0, 0},
    {"bad length", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", 1, 0, 0, NULL, 0, 0, 0},
    {"negative length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 1, 0, 0, NULL, 0, 0,
     0},
    {"length overflow", "HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\n", 1, 0,
     0, NULL, 0, 0, 0},
    {"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 1, 0,
     0, NULL, 0, 0, 0},
};

/* Parses in[0..len) from a heap block of exactly len bytes (ASan: no over-read). */
static ssize_t parse_response_copy(const char *in, size_t len, tf_response_head *res) {
    char *b = malloc(len ? len : 1);
    if (!b)
        abort();
    memcpy(b, in, len);
    ssize_t r = tf_parse_response_head(b, len, res);
    free(b);
    return r;
}

static void check_rcase(const rcase *c, ssize_t r, const tf_response_head *res) {
    size_t len = strlen(c->in);
    if (c->error) {
        CHECK(r == TF_PARSE_ERROR, "%s: got %zd, want an error", c->name, r);
        return;
    }
    CHECK(r == (ssize_t)(c->consumed ? c->consumed : len), "%s: consumed %zd", c->name, r);
    if (r < 0)
        return;
    int64_t cl = c->cl ? strtoll(c->cl, NULL, 10) : -1;
    CHECK(res->status == c->status && res->version_minor == (c->http10 ? 0 : 1) &&
              res->content_length == cl && res->chunked == c->chunked &&
              res->keep_alive == c->keep,
          "%s: status %d minor %d length %lld chunked %d keep-alive %d", c->name, res->status,
          res->version_minor, (long long)res->content_length, res->chunked, res->keep_alive);
}

/* Each case whole and split at every byte: a prefix is INCOMPLETE (or, for a
 * bad head, already the error); bytes after the head change nothing. */
static void test_response_parser_cases(void) {
    for (size_t i = 0; i < sizeof(rcases) / sizeof(rcases[0]); i++) {
        const rcase *c = &rcases[i];
        size_t len = strlen(c->in);
        tf_response_head res;
        check_rcase(c, parse_response_copy(c->in, len, &res), &res);
        size_t head = c->error ? len : (c->consumed ? c->consumed : len);
        int bad = 0;
        for (size_t k = 0; k < head && !bad; k++) {
            ssize_t r = parse_response_copy(c->in, k, &res);
            if (r == TF_PARSE_INCOMPLETE || (c->error && r == TF_PARSE_ERROR))
                continue;
            bad = 1;
            CHECK(0, "%s: prefix of %zu bytes gave %s", c->name, k, status_name(r));
        }
        if (!bad)
            passed++;
        for (size_t k = head + 1; !c->error && k <= len; k++) {
            ssize_t r = parse_response_copy(c->in, k, &res);
            if (r != (ssize_t)head) {
                CHECK(0, "%s: %zu bytes gave %zd", c->name, k, r);
                break;
            }
        }
    }
}

/* Every prefix of every case right against a PROT_NONE page. */
static void test_response_parser_guard_page(void) {
    long page = sysconf(_SC_PAGESIZE);
    char *map = mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(map != MAP_FAILED, "mmap: %s", strerror(errno));
    if (map == MAP_FAILED)
        return;
    char *guard = map + page;
    CHECK(mprotect(guard, (size_t)page, PROT_NONE) == 0, "mprotect: %s", strerror(errno));
    int ok = 1;
    for (size_t i = 0; i < sizeof(rcases) / sizeof(rcases[0]); i++) {
        size_t len = strlen(rcases[i].in);
        for (size_t k = 0; k <= len; k++) {
            tf_response_head res;
            memcpy(guard - k, rcases[i].in, k);
            ssize_t r = tf_parse_response_head(guard - k, k, &res);
            if (k == len && (r == TF_PARSE_ERROR) != rcases[i].error)
                ok = 0;
        }
    }
    CHECK(ok, "response parser against the guard page");
    munmap(map, 2 * (size_t)page);
}

/* What tf_write_response_head writes, tf_parse_response_head reads back. */
static void test_response_round_trip(void) {
    tf_header h[1] = {{"Content-Type", 12, "text/plain", 10}};
    char out[512];
    tf_response_head res;
    ssize_t n = tf_write_response_head(out, sizeof(out), 404, h, 1, 9, 0, 1);
    CHECK(n > 0 && tf_parse_response_head(out, (size_t)n, &res) == n && res.status == 404 &&
              res.content_length == 9 && !res.keep_alive && !res.chunked,
          "round trip, close");
    n = tf_write_response_head(out, sizeof(out), 200, NULL, 0, -1,
                               TF_HEAD_KEEP_ALIVE | TF_HEAD_CHUNKED, 0);
    CHECK(n > 0 && tf_parse_response_head(out, (size_t)n, &res) == n && res.status == 200 &&
              res.content_length == -1 && res.keep_alive && res.chunked,
          "round trip, chunked HTTP/1.0 keep-alive");
}

/* ---------------------------------------------------------- response heads */

static void test_date(void) {
    CHECK(strcmp(tf_http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT") == 0, "%s", tf_http_date(0));
    CHECK(strcmp(tf_http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT") == 0, "%s",
          tf_http_date(784111777));
    CHECK(strcmp(tf_http_date(951782400), "Tue, 29 Feb 2000 00:00:00 GMT") == 0, "%s",
          tf_http_date(951782400));
    CHECK(strcmp(tf_http_date(4102444799), "Thu, 31 Dec 2099 23:59:59 GMT") == 0, "%s",
          tf_http_date(4102444799));
    const char *a = tf_http_date(784111777);
    const char *b = tf_http_date(784111777);
    CHECK(a == b && strlen(a) == 29, "cached");
}

static void test_reasons(void) {
    static const int codes[] = {100, 101, 200, 201, 202, 203, 204, 205, 206, 301, 302, 303, 304,
                                305, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409,
                                410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 426, 428, 429,
                                431, 451, 500, 501, 502, 503, 504, 505};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        CHECK(strcmp(tf_status_reason(codes[i]), "Unknown") != 0, "reason of %d", codes[i]);
    CHECK(strcmp(tf_status_reason(200), "OK") == 0, "200");
    CHECK(strcmp(tf_status_reason(404), "Not Found") == 0, "404");
    CHECK(strcmp(tf_status_reason(599), "Unknown") == 0, "599");
    CHECK(strcmp(tf_status_reason(-1), "Unknown") == 0, "-1");
}

/* Writes a head and compares it with want, where "DATE" stands for the Date. */
static void check_head(int status, const tf_header *h, size_t nh, int64_t cl, int flags,
                       int minor, const char *want_tmpl) {
    char want[1024];
    char out[1024];
    ssize_t n = -1;
    const char *date = "";
    /* the second may tick between the two calls: retry once */
    for (int attempt = 0; attempt < 2; attempt++) {
        n = tf_write_response_head(out, sizeof(out), status, h, nh, cl, flags, minor);
        date = tf_http_date(time(NULL));
        if (n >= 0 && memmem(out, (size_t)n, date, 29))
            break;
    }
    const char *d = strstr(want_tmpl, "DATE");
    snprintf(want, sizeof(want), "%.*s%s%s", (int)(d - want_tmpl), want_tmpl, date, d + 4);
    CHECK(n == (ssize_t)strlen(want) && memcmp(out, want, (size_t)n) == 0,
          "head: got '%.*s' want '%s'", (int)(n > 0 ? n : 0), out, want);
    /* every smaller buffer is refused, and nothing is written past cap */
    size_t len = strlen(want);
    int ok = 1;
    for (size_t cap = 0; cap < len; cap++) {
        char *b = malloc(cap ? cap : 1);
        if (tf_write_response_head(b, cap, status, h, nh, cl, flags, minor) != -1)
            ok = 0;
        free(b);
    }
    CHECK(ok, "small buffers refused");
}

static void test_response_head(void) {
    tf_header h[2] = {{"Content-Type", 12, "text/plain", 10}, {"X-Empty", 7, "", 0}};
    check_head(200, h, 1, 5, TF_HEAD_KEEP_ALIVE, 1,
               "HTTP/1.1 200 OK\r\nServer: tailfast\r\nDate: DATE\r\n"
               "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\n");
    check_head(404, h, 2, 0, 0, 1,
               "HTTP/1.1 404 Not Found\r\nServer: tailfast\r\nDate: DATE\r\n"
               "Content-Type: text/plain\r\nX-Empty: \r\nContent-Length: 0\r\n"
               "Connection: close\r\n\r\n");
    check_head(200, NULL, 0, -1, TF_HEAD_KEEP_ALIVE | TF_HEAD_CHUNKED, 0,
               "HTTP/1.1 200 OK\r\nServer: tailfast\r\nDate: DATE\r\n"
               "Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n");
    check_head(204, NULL, 0, -1, 0, 0,
               "HTTP/1.1 204 No Content\r\nServer: tailfast\r\nDate: DATE\r\n\r\n");
    check_head(500, NULL, 0, INT64_MAX, TF_HEAD_KEEP_ALIVE, 1,
               "HTTP/1.1 500 Internal Server Error\r\nServer: tailfast\r\nDate: DATE\r\n"
               "Content-Length: 9223372036854775807\r\n\r\n");
    check_head(299, NULL, 0, 1, TF_HEAD_KEEP_ALIVE, 1,
               "HTTP/1.1 299 Unknown\r\nServer: tailfast\r\nDate: DATE\r\n"
               "Content-Length: 1\r\n\r\n");
    char out[256];
    CHECK(tf_write_response_head(out, sizeof(out), 99, NULL, 0, 0, 0, 1) == -1, "status 99");
    CHECK(tf_write_response_head(out, sizeof(out), 1000, NULL, 0, 0, 0, 1) == -1, "status 1000");
}

/* ------------------------------------------------------------------ outbuf */

/* The one output cursor: cuts at the end, records the overflow, adds nothing after. */
static void test_outbuf(void) {
    char buf[8];
    tf_out o = tf_out_init(buf, sizeof(buf));
    tf_out_puts(&o, "ab");
    tf_out_put_uint(&o, 1234);
    tf_out_putc(&o, '-');
    CHECK(!o.overflow && tf_out_len(&o, buf) == 7 && memcmp(buf, "ab1234-", 7) == 0, "fits");
    tf_out_put(&o, "xyz", 3);
    CHECK(o.overflow && tf_out_len(&o, buf) == 8 && buf[7] == 'x', "cut at the end");
    tf_out_putc(&o, 'q');
    tf_out_put_uint(&o, 0);
    CHECK(o.overflow && tf_out_len(&o, buf) == 8, "nothing after the end");
    tf_out z = tf_out_init(buf, 0);
    tf_out_put_uint(&z, 0);
    CHECK(z.overflow && tf_out_len(&z, buf) == 0, "no room at all");
    tf_out u = tf_out_init(buf, sizeof(buf));
    tf_out_put_uint(&u, 0);
    CHECK(tf_out_len(&u, buf) == 1 && buf[0] == '0', "zero");
}

/* --------------------------------------------------------------------- log */

static void test_log(void) {
    int fds[2];
    CHECK(pipe2(fds, O_NONBLOCK) == 0, "pipe");
    fflush(stderr);
    int saved = dup(2);
    dup2(fds[1], 2);

    static char got[8192];
    errno = 1234;
    tf_log("worker %d (pid %d) started", 2, 4123);
    int errno_kept = errno == 1234;
    ssize_t n1 = read(fds[0], got, sizeof(got));

    static char longmsg[6000];
    memset(longmsg, 'x', sizeof(longmsg) - 1);
    tf_log("%s", longmsg);
    ssize_t n2 = read(fds[0], got + 4096, sizeof(got) - 4096);

    tf_log("%s", "");
    char empty[64];
    ssize_t n3 = read(fds[0], empty, sizeof(empty));

    dup2(saved, 2);
    close(saved);
    close(fds[0]);
    close(fds[1]);

    CHECK(errno_kept, "errno preserved");
    const char *want = "tailfast: worker 2 (pid 4123) started\n";
    CHECK(n1 == (ssize_t)strlen(want) && memcmp(got, want, (size_t)n1) == 0, "log line '%.*s'",
          (int)(n1 > 0 ? n1 : 0), got);
    const char *l = got + 4096;
    CHECK(n2 > 100 && n2 < 4096 && memcmp(l, "tailfast: xxx", 13) == 0 && l[n2 - 1] == '\n' &&
              memcmp(l + n2 - 4, "...", 3) == 0 && !memchr(l, '\0', (size_t)n2),
          "long message truncated to one line: %zd bytes", n2);
    CHECK(n3 == 11 && memcmp(empty, "tailfast: \n", 11) == 0, "empty message");
}

/* Messages below the level set are dropped; tf_log is TF_LOG_INFO. */
static void test_log_levels(void) {
    int fds[2];
    CHECK(pipe2(fds, O_NONBLOCK) == 0, "pipe");
    fflush(stderr);
    int saved = dup(2);
    dup2(fds[1], 2);
    char got[4096];
    ssize_t n;

    tf_log_at(TF_LOG_DEBUG, "debug %d", 1); /* default level: INFO */
    tf_log_at(TF_LOG_INFO, "info %d", 1);
    n = read(fds[0], got, sizeof(got));
    int default_info = n == 17 && memcmp(got, "tailfast: info 1\n", 17) == 0;

    tf_log_set_level(TF_LOG_WARNING);
    tf_log("plain info");
    tf_log_at(TF_LOG_INFO, "info %d", 2);
    tf_log_at(TF_LOG_WARNING, "warning %d", 2);
    tf_log_at(TF_LOG_ERROR, "error %d", 2);
    n = read(fds[0], got, sizeof(got));
    const char *want_warning = "tailfast: warning 2\ntailfast: error 2\n";
    int warning = n == (ssize_t)strlen(want_warning) && memcmp(got, want_warning, (size_t)n) == 0;

    tf_log_set_level(TF_LOG_ERROR + 1);
    tf_log_at(TF_LOG_ERROR, "error %d", 3);
    ssize_t none = read(fds[0], got, sizeof(got));

    tf_log_set_level(TF_LOG_DEBUG);
    tf_log_at(TF_LOG_DEBUG, "debug %d", 4);
    tf_log("info 4");
    n = read(fds[0], got, sizeof(got));
    const char *want_debug = "tailfast: debug 4\ntailfast: info 4\n";
    int debug = n == (ssize_t)strlen(want_debug) && memcmp(got, want_debug, (size_t)n) == 0;
    tf_log_set_level(TF_LOG_INFO);

    dup2(saved, 2);
    close(saved);
    close(fds[0]);
    close(fds[1]);
    CHECK(default_info, "default level INFO drops DEBUG");
    CHECK(warning, "WARNING drops INFO and tf_log, keeps WARNING and ERROR");
    CHECK(none < 0, "above ERROR drops everything");
    CHECK(debug, "DEBUG keeps DEBUG and tf_log");
    CHECK(TF_LOG_DEBUG == 10 && TF_LOG_INFO == 20 && TF_LOG_WARNING == 30 && TF_LOG_ERROR == 40,
          "Python logging's numbers");
}

int main(void) {
    test_parser_cases();
    test_guard_page();
    test_limits();
    test_chunked();
    test_response_parser_cases();
    test_response_parser_guard_page();
    test_response_round_trip();
    test_date();
    test_reasons();
    test_response_head();
    test_outbuf();
    test_log();
    test_log_levels();
    return check_summary("test_http");
}
