/* fuzz_http.c — libFuzzer target for csrc/http.c (see README.md).
 *
 * Each input is fed to tf_parse_request and, on a copy, to tf_chunked_decode.
 * Besides crashes and sanitizer reports, it checks properties that must hold
 * for any input (a failed check calls abort):
 *  - a parsed head of length n parses to n again from exactly n bytes, and
 *    its first n - 1 bytes are incomplete;
 *  - every prefix of a request that fails with status S gives S or
 *    INCOMPLETE (checked on one prefix per input, chosen by the input);
 *  - every pointer in the parsed request lies inside the input;
 *  - chunked decoding gives the same result whole and byte by byte.
 */
#include "http.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check(int ok) {
    if (!ok)
        abort();
}

static void check_inside(const char *buf, size_t len, const char *p, size_t n) {
    check(p >= buf && p + n <= buf + len);
}

static void fuzz_parser(const uint8_t *data, size_t size) {
    static tf_request req;
    tf_limits lim;
    tf_limits_default(&lim);
    /* the first byte picks small limits sometimes, to reach 414/431 */
    if (size > 0 && data[0] == 'L') {
        lim.max_request_line = 32;
        lim.max_header_count = 3;
        lim.max_header_field = 24;
    }
    const char *buf = (const char *)data;
    int status = 0;
    ssize_t r = tf_parse_request(buf, size, &lim, &req, &status);
    check(r == TF_PARSE_INCOMPLETE || r == TF_PARSE_ERROR || (r > 0 && (size_t)r <= size));
    if (r == TF_PARSE_ERROR) {
        check(status == 400 || status == 414 || status == 431 || status == 501 || status == 505);
        /* a prefix: the same error, or incomplete */
        size_t k = size > 1 ? data[size - 1] % size : 0;
        int st2 = 0;
        ssize_t r2 = tf_parse_request(buf, k, &lim, &req, &st2);
        check(r2 == TF_PARSE_INCOMPLETE || (r2 == TF_PARSE_ERROR && st2 == status));
        return;
    }
    if (r > 0) {
        size_t n = (size_t)r;
        check_inside(buf, n, req.method, req.method_len);
        check_inside(buf, n, req.target, req.target_len);
        check_inside(buf, n, req.path, req.path_len);
        check_inside(buf, n, req.query, req.query_len);
        check(req.num_headers <= lim.max_header_count);
        for (size_t i = 0; i < req.num_headers; i++) {
            check_inside(buf, n, req.headers[i].name, req.headers[i].name_len);
            check_inside(buf, n, req.headers[i].value, req.headers[i].value_len);
        }
        check(req.version_minor == 0 || req.version_minor == 1);
        check(req.content_length >= -1);
        check(!(req.chunked && req.content_length >= 0));
        check(tf_parse_request(buf, n, &lim, &req, &status) == r);
        check(tf_parse_request(buf, n - 1, &lim, &req, &status) == TF_PARSE_INCOMPLETE);
    }
}

static void fuzz_chunked(const uint8_t *data, size_t size) {
    /* whole, in a block of exactly size bytes */
    char *whole = malloc(size ? size : 1);
    char *step = malloc(size ? size : 1);
    if (!whole || !step)
        abort();
    memcpy(whole, data, size);
    tf_chunked_decoder dec;
    memset(&dec, 0, sizeof(dec));
    size_t whole_len = size;
    ssize_t r1 = tf_chunked_decode(&dec, whole, &whole_len);
    check(whole_len <= size);
    if (r1 >= 0)
        check(whole_len + (size_t)r1 <= size);

    /* byte by byte, as if each byte arrived in its own read */
    memset(&dec, 0, sizeof(dec));
    size_t body = 0;
    ssize_t r2 = TF_PARSE_INCOMPLETE;
    size_t i = 0;
    for (; i < size && r2 == TF_PARSE_INCOMPLETE; i++) {
        step[body] = (char)data[i];
        size_t one = 1;
        r2 = tf_chunked_decode(&dec, step + body, &one);
        check(one <= 1);
        body += one;
        if (r2 >= 0)
            check((size_t)r2 + one <= 1);
    }
    /* same verdict; on success same body, and the same bytes after it */
    check((r1 < 0) == (r2 < 0));
    if (r1 >= 0) {
        check(r2 >= 0);
        size_t rest2 = (size_t)r2 + (size - i);
        check(rest2 == (size_t)r1);
        check(body == whole_len && memcmp(whole, step, body) == 0);
    } else {
        check(r1 == r2);
        if (r1 == TF_PARSE_INCOMPLETE)
            check(body == whole_len && memcmp(whole, step, body) == 0);
    }
    free(whole);
    free(step);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_parser(data, size);
    fuzz_chunked(data, size);
    return 0;
}
