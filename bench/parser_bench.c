/* Parser micro-benchmark: tf_parse_request on a typical browser-like GET,
 * repeated; prints nanoseconds per parse. Built and run by bench/test_parser.py. */
#include "tailfast.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char REQUEST[] =
    "GET /api/items?page=2&sort=name HTTP/1.1\r\n"
    "Host: example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/120.0\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: session=0123456789abcdef; theme=dark\r\n"
    "\r\n";

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 1000000;
    tf_limits limits;
    tf_limits_default(&limits);
    static tf_request req;
    int status = 0;
    size_t len = sizeof REQUEST - 1;
    long total = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < iterations; i++) {
        ssize_t n = tf_parse_request(REQUEST, len, &limits, &req, &status);
        if (n != (ssize_t)len) {
            fprintf(stderr, "parse failed: %zd (status %d)\n", n, status);
            return 1;
        }
        total += (long)req.num_headers;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec));
    printf("%.2f ns/parse %zu bytes %ld headers\n", ns / (double)iterations, len,
           total / iterations);
    return 0;
}
