/* http.c — HTTP/1.1 on the wire: request parser, chunked decoder, response-head writer and reader.
 *
 * No allocation; the caller owns every buffer.
 *
 * The parser is strict (RFC 9112), chosen so that no two readings of one
 * request can disagree — disagreement between parsers is how request
 * smuggling works:
 *
 *  - Line endings are CRLF only. RFC 9112 2.2 lets a recipient accept a bare
 *    LF as a line terminator; we do not. A bare LF anywhere in the head, or in
 *    a chunked body's framing, is an error (400), and so is a CR that is not
 *    followed by LF (RFC 9112 2.2 allows either rejecting or replacing it).
 *  - Empty lines (CRLF) before the request line are skipped (RFC 9112 2.2),
 *    but they count against max_request_line, so they cannot be sent forever.
 *  - obs-fold (a field line starting with SP or HTAB) is rejected (400), as
 *    is whitespace between a field name and its colon (RFC 9112 5.1).
 *  - Field values may hold VCHAR, SP, HTAB and obs-text (0x80-0xff); NUL, the
 *    other control characters and DEL are rejected (400).
 *  - Content-Length: digits only, at most 2^63-1; a second Content-Length
 *    field is a 400 even if it repeats the same value.
 *  - Transfer-Encoding: rejected with Content-Length or in HTTP/1.0 (400);
 *    exactly one such field; its last coding must be "chunked" and no other
 *    coding is supported (501). See tf_transfer_coding.
 *  - HTTP/1.1 requires exactly one Host field; HTTP/1.0 at most one.
 *
 * Errors are found in one left-to-right pass: the first offending byte
 * decides, and a length limit is checked at every byte where a scan stops, so
 * a prefix of a request either yields TF_PARSE_INCOMPLETE or the same error as
 * the whole request, and an over-long line is refused as soon as the limit is
 * passed, without waiting for its end (slowloris). Checks that need the whole
 * head (Host count, Content-Length against Transfer-Encoding, ...) run once it
 * is complete, over the parsed header array, not the bytes.
 *
 * Request fields and their meaning beyond tailfast.h:
 *  - expect_continue: 1 for "Expect: 100-continue" (case-insensitive), 0 when
 *    there is no Expect field, -1 for any other expectation: the parse
 *    succeeds and the caller answers 417 (Expectation Failed).
 *  - path/query: for origin-form ("/p?q#f") path is "/p" and query is "q"
 *    (a "#fragment", which clients should not send, is dropped from both).
 *    For absolute-form ("http://host/p?q") path starts at the first '/' after
 *    "://" ("/p"); when the authority is followed directly by '?', '#' or the
 *    end ("http://host"), path is empty (path_len 0, pointing into buf) and
 *    the caller should treat it as "/". For asterisk-form ("*", OPTIONS
 *    only) path is "*". Every pointer points into buf.
 */
#define _POSIX_C_SOURCE 200809L /* gmtime_r */

#include "http.h"
#include "outbuf.h"

#include <string.h>
#include <time.h>

/* ------------------------------------------------------- character classes */

enum {
    TF_C_TCHAR = 1, /* token character (RFC 9110 5.6.2) */
    TF_C_VCHAR = 2, /* visible ASCII 0x21-0x7e: request-target, version */
    TF_C_FIELD = 4, /* field-value byte: VCHAR, SP, HTAB, obs-text 0x80-0xff */
};

static const unsigned char tf_cclass[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, /* 0x00 (HTAB) */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
    4, 7, 6, 7, 7, 7, 7, 7, 6, 6, 7, 7, 6, 7, 7, 6, /* 0x20  !"#$%&'()*+,-./ */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6, /* 0x30 0-9:;<=>? */
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, /* 0x40 @A-O */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 7, 7, /* 0x50 P-Z[\]^_ */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, /* 0x60 `a-o */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 6, 7, 0, /* 0x70 p-z{|}~ DEL */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* 0x80 obs-text */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* 0x90 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* 0xa0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* 0xb0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* 0xc0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* 0xd0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* 0xe0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* 0xf0 */
};

static inline int tf_is(unsigned char c, unsigned cls) {
    return (tf_cclass[c] & cls) != 0;
}

/* Returns the first byte in [p, end) not of class cls, or end. Unrolled by
 * four: targets and field values are mostly long runs of allowed bytes. */
static inline const char *tf_scan(const char *p, const char *end, unsigned cls) {
    while (end - p >= 4) {
        if (!tf_is((unsigned char)p[0], cls))
            return p;
        if (!tf_is((unsigned char)p[1], cls))
            return p + 1;
        if (!tf_is((unsigned char)p[2], cls))
            return p + 2;
        if (!tf_is((unsigned char)p[3], cls))
            return p + 3;
        p += 4;
    }
    while (p < end && tf_is((unsigned char)*p, cls))
        p++;
    return p;
}

static inline unsigned char tf_lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* s[0..n) equals the lowercase literal lit (of length n), ignoring ASCII case. */
static int tf_ieq(const char *s, size_t n, const char *lit, size_t lit_len) {
    if (n != lit_len)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (tf_lower((unsigned char)s[i]) != (unsigned char)lit[i])
            return 0;
    return 1;
}

#define TF_LIT(s) s, (sizeof(s) - 1) /* a string literal and its length */

static inline int tf_ows(char c) {
    return c == ' ' || c == '\t';
}

/* ------------------------------------------------------------------- lists */

/* Iterates a comma-separated field value (RFC 9110 5.6.1): stores the next
 * non-empty element, OWS-trimmed, and returns 1; returns 0 at the end. Empty
 * elements are skipped, as the RFC requires of recipients. */
static int tf_list_next(const char **pos, const char *end, const char **elem, size_t *elem_len) {
    const char *p = *pos;
    while (p < end && (tf_ows(*p) || *p == ','))
        p++;
    if (p == end) {
        *pos = p;
        return 0;
    }
    const char *s = p; /* not OWS, not ',': the element is not empty */
    while (p < end && *p != ',')
        p++;
    const char *e = p;
    while (e > s && tf_ows(e[-1]))
        e--;
    *pos = p;
    *elem = s;
    *elem_len = (size_t)(e - s);
    return 1;
}

/* Whether a comma-separated value holds the token lit (case-insensitive). */
static int tf_list_has(const char *v, size_t n, const char *lit, size_t lit_len) {
    const char *pos = v, *elem;
    size_t elem_len;
    while (tf_list_next(&pos, v + n, &elem, &elem_len))
        if (tf_ieq(elem, elem_len, lit, lit_len))
            return 1;
    return 0;
}

/* ----------------------------------------------------------- field values */

/* Content-Length: 1*DIGIT, at most INT64_MAX. Returns 0 or -1. */
static int tf_content_length(const char *s, size_t n, int64_t *out) {
    if (n == 0)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned char)s[i] - (unsigned)'0';
        if (d > 9)
            return -1;
        if (v > (INT64_MAX - (int64_t)d) / 10)
            return -1;
        v = v * 10 + (int64_t)d;
    }
    *out = v;
    return 0;
}

/* Transfer-Encoding value (one field; several fields are refused earlier).
 * transfer-coding = token *( OWS ";" OWS transfer-parameter ). Returns 0 when
 * the value is exactly "chunked" (any case), else the status to answer:
 *  - 400: no coding at all, an element that is not a token (with optional
 *    parameters), or "chunked" anywhere but last or more than once — for a
 *    request, the body length then cannot be determined (RFC 9112 6.3);
 *  - 501: a coding we do not implement (gzip, ..., "chunked;param"), including
 *    any coding applied before a final "chunked". */
static int tf_transfer_coding(const char *v, size_t n) {
    const char *pos = v, *elem;
    size_t elem_len;
    size_t count = 0;
    int unknown = 0;     /* an element that is not plain "chunked" */
    int last_chunked = 0;
    int chunked_count = 0;
    while (tf_list_next(&pos, v + n, &elem, &elem_len)) {
        const char *e = elem + elem_len;
        const char *t = tf_scan(elem, e, TF_C_TCHAR);
        if (t == elem)
            return 400;
        size_t tok_len = (size_t)(t - elem);
        const char *q = t;
        while (q < e && tf_ows(*q))
            q++;
        if (q < e && *q != ';')
            return 400;
        count++;
        last_chunked = q == e && tf_ieq(elem, tok_len, TF_LIT("chunked"));
        if (last_chunked)
            chunked_count++;
        else
            unknown = 1;
    }
    if (count == 0)
        return 400;
    if (chunked_count > 1 || (chunked_count == 1 && !last_chunked))
        return 400;
    if (unknown)
        return 501;
    return 0;
}

/* ---------------------------------------------------------- request target */

/* Splits a request-target into path and query; returns 0 or 400. */
static int tf_split_target(tf_request *req) {
    const char *t = req->target;
    const char *end = t + req->target_len;
    const char *p; /* where the path starts */

    if (t[0] == '/') {
        p = t; /* origin-form */
    } else if (t[0] == '*') {
        /* asterisk-form: only "*" and only for OPTIONS (RFC 9112 3.2.4) */
        if (req->target_len != 1 || !(req->method_len == 7 && memcmp(req->method, "OPTIONS", 7) == 0))
            return 400;
        req->path = t;
        req->path_len = 1;
        req->query = end;
        req->query_len = 0;
        return 0;
    } else {
        /* absolute-form: scheme "://" authority [path] — scheme is
         * ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC 3986 3.1) */
        const char *s = t;
        if (!((*s | 0x20) >= 'a' && (*s | 0x20) <= 'z'))
            return 400;
        while (s < end && (((*s | 0x20) >= 'a' && (*s | 0x20) <= 'z') ||
                           (*s >= '0' && *s <= '9') || *s == '+' || *s == '-' || *s == '.'))
            s++;
        if (end - s < 3 || s[0] != ':' || s[1] != '/' || s[2] != '/')
            return 400;
        p = s + 3;
        while (p < end && *p != '/' && *p != '?' && *p != '#')
            p++;
        /* p is at the path's '/', or at '?', '#' or the end: an empty path */
    }

    const char *q = p;
    while (q < end && *q != '?' && *q != '#')
        q++;
    req->path = p;
    req->path_len = (size_t)(q - p);
    if (q < end && *q == '?') {
        const char *f = memchr(q + 1, '#', (size_t)(end - (q + 1)));
        req->query = q + 1;
        req->query_len = (size_t)((f ? f : end) - (q + 1));
    } else {
        req->query = q;
        req->query_len = 0;
    }
    return 0;
}

/* ---------------------------------------------------------- header checks */

/* Checks and interprets the fields of a complete head: framing (Content-Length,
 * Transfer-Encoding), Host, Connection, Expect. Returns 0 or the status.
 * Longer than a screen: one pass over the fields, one branch per field name,
 * then the checks that combine them; split up, the combinations would hide. */
static int tf_check_fields(tf_request *req) {
    int hosts = 0, lengths = 0, encodings = 0;
    const tf_header *te = NULL;
    int close = 0, keep = 0;

    for (size_t i = 0; i < req->num_headers; i++) {
        const tf_header *h = &req->headers[i];
        /* dispatch on length first: most fields are none of these */
        switch (h->name_len) {
        case 4:
            if (tf_ieq(h->name, 4, TF_LIT("host")))
                hosts++;
            break;
        case 6:
            if (tf_ieq(h->name, 6, TF_LIT("expect"))) {
                if (tf_ieq(h->value, h->value_len, TF_LIT("100-continue"))) {
                    if (req->expect_continue == 0)
                        req->expect_continue = 1;
                } else {
                    req->expect_continue = -1; /* any other expectation: 417 */
                }
            }
            break;
        case 10:
            if (tf_ieq(h->name, 10, TF_LIT("connection"))) {
                close |= tf_list_has(h->value, h->value_len, TF_LIT("close"));
                keep |= tf_list_has(h->value, h->value_len, TF_LIT("keep-alive"));
            }
            break;
        case 14:
            if (tf_ieq(h->name, 14, TF_LIT("content-length"))) {
                if (++lengths > 1)
                    return 400;
                if (tf_content_length(h->value, h->value_len, &req->content_length) < 0)
                    return 400;
            }
            break;
        case 17:
            if (tf_ieq(h->name, 17, TF_LIT("transfer-encoding"))) {
                encodings++;
                te = h;
            }
            break;
        default:
            break;
        }
    }

    if (hosts > 1 || (req->version_minor == 1 && hosts != 1))
        return 400;
    if (encodings) {
        if (lengths || req->version_minor == 0 || encodings > 1)
            return 400;
        int status = tf_transfer_coding(te->value, te->value_len);
        if (status)
            return status;
        req->chunked = 1;
    }
    if (req->version_minor == 1)
        req->keep_alive = !close;
    else
        req->keep_alive = keep && !close;
    return 0;
}

/* ------------------------------------------------------------------ parser */

/* Longer than a screen on purpose: one left-to-right pass in which the first
 * offending byte decides and a limit is checked wherever a scan stops (see
 * the top of the file); cut into helpers, that order would be spread over
 * several functions passing cursors back and forth on the hottest path. */
ssize_t tf_parse_request(const char *buf, size_t len, const tf_limits *limits,
                         tf_request *req, int *error_status) {
    const char *p = buf;
    const char *end = buf + len;
    const size_t max_line = limits->max_request_line;
    const size_t max_field = limits->max_header_field;
    const size_t max_count =
        limits->max_header_count < TF_MAX_HEADERS ? limits->max_header_count : TF_MAX_HEADERS;
    int status = 400;

    req->num_headers = 0;
    req->content_length = -1;
    req->chunked = 0;
    req->keep_alive = 0;
    req->expect_continue = 0;
    req->is_head = 0;

    /* Each scan below stops at the first byte not allowed where it is (or at
     * end); a line is too long when that byte lies beyond the line's limit.
     * Checking this before "incomplete" and before the byte itself keeps the
     * answer the same for a request and for all of its prefixes. */

    /* Leading empty lines, counted in the request line's budget. */
    const char *line = buf;
    while (p < end && *p == '\r') {
        if ((size_t)(p - line) > max_line)
            goto line_too_long;
        if (end - p < 2)
            goto incomplete;
        if (p[1] != '\n')
            goto bad;
        p += 2;
    }

    /* method SP */
    const char *method = p;
    p = tf_scan(p, end, TF_C_TCHAR);
    if ((size_t)(p - line) > max_line)
        goto line_too_long;
    if (p == end)
        goto incomplete;
    if (*p != ' ' || p == method)
        goto bad;
    req->method = method;
    req->method_len = (size_t)(p - method);
    p++;

    /* request-target SP */
    const char *target = p;
    p = tf_scan(p, end, TF_C_VCHAR);
    if ((size_t)(p - line) > max_line)
        goto line_too_long;
    if (p == end)
        goto incomplete;
    if (*p != ' ' || p == target)
        goto bad;
    req->target = target;
    req->target_len = (size_t)(p - target);
    if (tf_split_target(req) != 0)
        goto bad;
    p++;

    /* HTTP-version CR: the version is judged once the line is complete */
    const char *version = p;
    p = tf_scan(p, end, TF_C_VCHAR);
    if ((size_t)(p - line) > max_line)
        goto line_too_long;
    if (p == end)
        goto incomplete;
    if (*p != '\r')
        goto bad;
    if (p - version != 8 || memcmp(version, "HTTP/", 5) != 0 || version[6] != '.' ||
        version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9')
        goto bad;
    if (version[5] != '1' || (version[7] != '0' && version[7] != '1')) {
        status = 505;
        goto fail;
    }
    req->version_minor = version[7] - '0';
    /* LF: not subject to the limit, which counts the line without its CRLF */
    if (end - p < 2)
        goto incomplete;
    if (p[1] != '\n')
        goto bad;
    p += 2;

    /* field lines, then the empty line */
    for (;;) {
        line = p;
        if (p == end)
            goto incomplete;
        if (*p == '\r') {
            if (end - p < 2)
                goto incomplete;
            if (p[1] != '\n')
                goto bad;
            p += 2;
            break;
        }
        if (req->num_headers == max_count)
            goto fields_too_large;

        /* field-name ":" — SP/HTAB at the start (obs-fold) or before the colon,
         * and a bare LF, all stop the scan at a byte that is not ':' */
        const char *name = p;
        p = tf_scan(p, end, TF_C_TCHAR);
        if ((size_t)(p - line) > max_field)
            goto fields_too_large;
        if (p == end)
            goto incomplete;
        if (*p != ':' || p == name)
            goto bad;
        const char *name_end = p;
        p++;

        /* OWS field-value OWS CR; the value scan takes the OWS too */
        while (p < end && tf_ows(*p))
            p++;
        const char *value = p;
        p = tf_scan(p, end, TF_C_FIELD);
        if ((size_t)(p - line) > max_field)
            goto fields_too_large;
        if (p == end)
            goto incomplete;
        if (*p != '\r')
            goto bad;
        const char *value_end = p;
        while (value_end > value && tf_ows(value_end[-1]))
            value_end--;
        if (end - p < 2)
            goto incomplete;
        if (p[1] != '\n')
            goto bad;
        p += 2;

        tf_header *h = &req->headers[req->num_headers++];
        h->name = name;
        h->name_len = (size_t)(name_end - name);
        h->value = value;
        h->value_len = (size_t)(value_end - value);
    }

    req->is_head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
    status = tf_check_fields(req);
    if (status)
        goto fail;
    return (ssize_t)(p - buf);

incomplete:
    return TF_PARSE_INCOMPLETE;
line_too_long:
    status = 414;
    goto fail;
fields_too_large:
    status = 431;
    goto fail;
bad:
    status = 400;
fail:
    *error_status = status;
    return TF_PARSE_ERROR;
}

/* --------------------------------------------------------- response heads */

/* Byte i of the fixed start of a status line, "HTTP/1.x NNN": checked one
 * byte at a time, so that a prefix is refused at its first wrong byte. The
 * minor version is 0 or 1, the status code 1xx to 5xx. */
static int tf_status_line_byte(size_t i, char c) {
    static const char prefix[] = "HTTP/1.";
    if (i < 7)
        return c == prefix[i];
    if (i == 7)
        return c == '0' || c == '1';
    if (i == 8)
        return c == ' ';
    if (i == 9)
        return c >= '1' && c <= '5';
    return c >= '0' && c <= '9';
}

/* Whether the last element of a comma-separated value is "chunked". */
static int tf_list_ends_chunked(const char *v, size_t n) {
    const char *pos = v, *elem, *last = NULL;
    size_t elem_len, last_len = 0;
    while (tf_list_next(&pos, v + n, &elem, &elem_len)) {
        last = elem;
        last_len = elem_len;
    }
    return last != NULL && tf_ieq(last, last_len, TF_LIT("chunked"));
}

/* Interprets one response field: framing and Connection. Returns 0 or -1. */
static int tf_response_field(tf_response_head *res, const tf_header *h, int *close, int *keep) {
    switch (h->name_len) {
    case 10:
        if (tf_ieq(h->name, 10, TF_LIT("connection"))) {
            *close |= tf_list_has(h->value, h->value_len, TF_LIT("close"));
            *keep |= tf_list_has(h->value, h->value_len, TF_LIT("keep-alive"));
        }
        return 0;
    case 14:
        if (!tf_ieq(h->name, 14, TF_LIT("content-length")))
            return 0;
        if (res->content_length >= 0)
            return -1; /* a second one: the length is not certain */
        return tf_content_length(h->value, h->value_len, &res->content_length);
    case 17:
        /* the final coding decides (RFC 9112 6.3): chunked, or read until close */
        if (tf_ieq(h->name, 17, TF_LIT("transfer-encoding")) && h->value_len > 0)
            res->chunked = tf_list_ends_chunked(h->value, h->value_len);
        return 0;
    default:
        return 0;
    }
}

/* Steps over the CRLF at *pp: 0, or TF_PARSE_INCOMPLETE / TF_PARSE_ERROR. */
static int tf_crlf(const char **pp, const char *end) {
    const char *p = *pp;
    if (p == end)
        return TF_PARSE_INCOMPLETE;
    if (*p != '\r')
        return TF_PARSE_ERROR;
    if (end - p < 2)
        return TF_PARSE_INCOMPLETE;
    if (p[1] != '\n')
        return TF_PARSE_ERROR;
    *pp = p + 2;
    return 0;
}

/* One field line "name: value" CRLF at *pp, with the request's grammar.
 * Returns 0, or TF_PARSE_INCOMPLETE / TF_PARSE_ERROR. */
static int tf_response_field_line(const char **pp, const char *end, tf_header *h) {
    const char *p = *pp;
    h->name = p;
    p = tf_scan(p, end, TF_C_TCHAR);
    if (p == end)
        return TF_PARSE_INCOMPLETE;
    if (*p != ':' || p == h->name)
        return TF_PARSE_ERROR;
    h->name_len = (size_t)(p - h->name);
    p++;
    while (p < end && tf_ows(*p))
        p++;
    h->value = p;
    p = tf_scan(p, end, TF_C_FIELD);
    const char *value_end = p;
    while (value_end > h->value && tf_ows(value_end[-1]))
        value_end--;
    h->value_len = (size_t)(value_end - h->value);
    *pp = p;
    return tf_crlf(pp, end);
}

ssize_t tf_parse_response_head(const char *buf, size_t len, tf_response_head *res) {
    const char *p = buf + 12;
    const char *end = buf + len;
    int close = 0, keep = 0, rc;

    for (size_t i = 0; i < 12; i++) {
        if (i == len)
            return TF_PARSE_INCOMPLETE;
        if (!tf_status_line_byte(i, buf[i]))
            return TF_PARSE_ERROR;
    }
    res->version_minor = buf[7] - '0';
    res->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    res->content_length = -1;
    res->chunked = 0;
    /* SP reason-phrase; the SP may be missing when the reason is (lenient:
     * a client should ignore the reason, RFC 9112 4) */
    if (p < end && *p == ' ')
        p = tf_scan(p + 1, end, TF_C_FIELD);
    if ((rc = tf_crlf(&p, end)) != 0)
        return rc;
    for (;;) {
        if (p == end)
            return TF_PARSE_INCOMPLETE;
        if (*p == '\r')
            break; /* the empty line */
        tf_header h;
        if ((rc = tf_response_field_line(&p, end, &h)) != 0)
            return rc;
        if (tf_response_field(res, &h, &close, &keep) < 0)
            return TF_PARSE_ERROR;
    }
    if ((rc = tf_crlf(&p, end)) != 0)
        return rc;
    res->keep_alive = res->version_minor == 1 ? !close : keep && !close;
    return (ssize_t)(p - buf);
}

/* ---------------------------------------------------------- chunked bodies */

/* Byte-level states of tf_chunked_decoder.state (0, a zeroed decoder, is the
 * start of the first chunk-size line). Every byte received is consumed at
 * once, so nothing raw is carried between calls. */
enum {
    TF_CK_SIZE = 0,      /* chunk-size hex digits */
    TF_CK_SIZE_WS,       /* BWS after chunk-size: only ';' may follow */
    TF_CK_EXT,           /* after ';': BWS, then a chunk-ext-name */
    TF_CK_EXT_NAME,      /* chunk-ext-name (a token) */
    TF_CK_EXT_NAME_WS,   /* BWS after the name: '=' or ';' must follow */
    TF_CK_EXT_VALUE,     /* after '=': BWS, then a token or a quoted-string */
    TF_CK_EXT_TOKEN,     /* chunk-ext-val as a token */
    TF_CK_EXT_QUOTED,    /* inside a quoted-string */
    TF_CK_EXT_QPAIR,     /* after a backslash in a quoted-string */
    TF_CK_EXT_QEND,      /* after the closing quote */
    TF_CK_SIZE_LF,       /* LF ending the chunk-size line */
    TF_CK_DATA,          /* chunk_remaining bytes of data */
    TF_CK_DATA_CR,       /* CR after the data */
    TF_CK_DATA_LF,       /* LF after the data */
    TF_CK_TRAILER_START, /* start of a trailer field line, or the final CR */
    TF_CK_TRAILER_NAME,  /* trailer field name, up to ':' */
    TF_CK_TRAILER_VALUE, /* trailer field value, up to CR */
    TF_CK_TRAILER_LF,    /* LF ending a trailer field line */
    TF_CK_FINAL_LF,      /* LF ending the body */
    TF_CK_DONE,
    TF_CK_ERROR, /* sticky */
};

/* Bytes of chunk extensions and trailer section accepted per body. */
#define TF_CK_MAX_AUX 4096
/* Digits in a chunk-size; 16 hex digits already exceed the 63-bit cap below. */
#define TF_CK_MAX_DIGITS 16

/* One byte of a chunk extension (RFC 9112 7.1.1), in state st (a TF_CK_EXT*
 * state); returns the next state. Extensions are checked, then skipped:
 *   chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
 *   chunk-ext-name = token; chunk-ext-val = token / quoted-string
 * An empty name (";", ";="), an empty value ("n="), whitespace inside a name
 * or before CR, and an unterminated quote are errors. Whitespace after a
 * value goes to TF_CK_SIZE_WS, where only another ';' may follow. */
static int tf_ck_ext(int st, unsigned char c) {
    int ws = c == ' ' || c == '\t';
    switch (st) {
    case TF_CK_EXT: /* BWS chunk-ext-name */
        return ws ? st : tf_is(c, TF_C_TCHAR) ? TF_CK_EXT_NAME : TF_CK_ERROR;
    case TF_CK_EXT_NAME:
        if (tf_is(c, TF_C_TCHAR))
            return st;
        __attribute__((fallthrough)); /* what may follow a name */
    case TF_CK_EXT_NAME_WS:
        if (ws)
            return TF_CK_EXT_NAME_WS;
        if (c == '=')
            return TF_CK_EXT_VALUE;
        if (c == ';')
            return TF_CK_EXT;
        return c == '\r' && st == TF_CK_EXT_NAME ? TF_CK_SIZE_LF : TF_CK_ERROR;
    case TF_CK_EXT_VALUE: /* BWS chunk-ext-val */
        if (ws)
            return st;
        if (c == '"')
            return TF_CK_EXT_QUOTED;
        return tf_is(c, TF_C_TCHAR) ? TF_CK_EXT_TOKEN : TF_CK_ERROR;
    case TF_CK_EXT_TOKEN:
        if (tf_is(c, TF_C_TCHAR))
            return st;
        __attribute__((fallthrough)); /* what may follow a value */
    case TF_CK_EXT_QEND:
        if (ws)
            return TF_CK_SIZE_WS;
        if (c == ';')
            return TF_CK_EXT;
        return c == '\r' ? TF_CK_SIZE_LF : TF_CK_ERROR;
    case TF_CK_EXT_QUOTED: /* qdtext: field-value bytes but DQUOTE and backslash */
        if (c == '"')
            return TF_CK_EXT_QEND;
        if (c == '\\')
            return TF_CK_EXT_QPAIR;
        return tf_is(c, TF_C_FIELD) ? st : TF_CK_ERROR;
    case TF_CK_EXT_QPAIR: /* quoted-pair: HTAB, SP, VCHAR, obs-text */
        return tf_is(c, TF_C_FIELD) ? TF_CK_EXT_QUOTED : TF_CK_ERROR;
    default:
        return TF_CK_ERROR;
    }
}

static inline int tf_hex(unsigned char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)(c | 0x20);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Longer than a screen: a byte-driven state machine, one case per state, so
 * that any split of the input resumes exactly where it stopped. */
ssize_t tf_chunked_decode(tf_chunked_decoder *dec, char *buf, size_t *len) {
    const size_t n = *len;
    size_t r = 0; /* next raw byte */
    size_t w = 0; /* end of decoded data; w <= r always */
    int st = dec->state;

    while (r < n && st != TF_CK_DONE && st != TF_CK_ERROR) {
        if (st == TF_CK_DATA) {
            /* the bulk of the body: move as much data as there is at once */
            size_t take = n - r;
            if (dec->chunk_remaining < take)
                take = (size_t)dec->chunk_remaining;
            if (w != r)
                memmove(buf + w, buf + r, take);
            w += take;
            r += take;
            dec->chunk_remaining -= take;
            if (dec->chunk_remaining == 0)
                st = TF_CK_DATA_CR;
            continue;
        }

        unsigned char c = (unsigned char)buf[r++];
        switch (st) {
        case TF_CK_SIZE: {
            int d = tf_hex(c);
            if (d >= 0) {
                /* cap chunk sizes at 2^63-1, like Content-Length */
                if (dec->hex_digits == TF_CK_MAX_DIGITS ||
                    dec->chunk_remaining > ((uint64_t)INT64_MAX >> 4)) {
                    st = TF_CK_ERROR;
                    break;
                }
                dec->hex_digits++;
                dec->chunk_remaining = (dec->chunk_remaining << 4) | (uint64_t)d;
                break;
            }
            if (dec->hex_digits == 0)
                st = TF_CK_ERROR;
            else if (c == '\r')
                st = TF_CK_SIZE_LF;
            else if (c == ';')
                st = TF_CK_EXT;
            else if (c == ' ' || c == '\t')
                st = TF_CK_SIZE_WS;
            else
                st = TF_CK_ERROR;
            if (st == TF_CK_EXT || st == TF_CK_SIZE_WS)
                dec->aux_bytes++;
            break;
        }
        case TF_CK_SIZE_WS:
            dec->aux_bytes++;
            if (c == ';')
                st = TF_CK_EXT;
            else if (c != ' ' && c != '\t')
                st = TF_CK_ERROR;
            break;
        case TF_CK_EXT:
        case TF_CK_EXT_NAME:
        case TF_CK_EXT_NAME_WS:
        case TF_CK_EXT_VALUE:
        case TF_CK_EXT_TOKEN:
        case TF_CK_EXT_QUOTED:
        case TF_CK_EXT_QPAIR:
        case TF_CK_EXT_QEND:
            st = tf_ck_ext(st, c);
            if (st != TF_CK_SIZE_LF)
                dec->aux_bytes++;
            break;
        case TF_CK_SIZE_LF:
            if (c != '\n')
                st = TF_CK_ERROR;
            else if (dec->chunk_remaining == 0)
                st = TF_CK_TRAILER_START; /* last-chunk */
            else
                st = TF_CK_DATA;
            break;
        case TF_CK_DATA_CR:
            st = c == '\r' ? TF_CK_DATA_LF : TF_CK_ERROR;
            break;
        case TF_CK_DATA_LF:
            if (c == '\n') {
                st = TF_CK_SIZE;
                dec->hex_digits = 0;
                dec->chunk_remaining = 0;
            } else {
                st = TF_CK_ERROR;
            }
            break;
        case TF_CK_TRAILER_START:
            if (c == '\r') {
                st = TF_CK_FINAL_LF;
            } else {
                /* a field name; obs-fold, an empty name or a bare LF is an error */
                dec->aux_bytes++;
                st = tf_is(c, TF_C_TCHAR) ? TF_CK_TRAILER_NAME : TF_CK_ERROR;
            }
            break;
        case TF_CK_TRAILER_NAME:
            dec->aux_bytes++;
            if (c == ':')
                st = TF_CK_TRAILER_VALUE;
            else if (!tf_is(c, TF_C_TCHAR))
                st = TF_CK_ERROR;
            break;
        case TF_CK_TRAILER_VALUE:
            dec->aux_bytes++;
            if (c == '\r')
                st = TF_CK_TRAILER_LF;
            else if (!tf_is(c, TF_C_FIELD))
                st = TF_CK_ERROR;
            break;
        case TF_CK_TRAILER_LF:
            dec->aux_bytes++;
            st = c == '\n' ? TF_CK_TRAILER_START : TF_CK_ERROR;
            break;
        case TF_CK_FINAL_LF:
            st = c == '\n' ? TF_CK_DONE : TF_CK_ERROR;
            break;
        default:
            st = TF_CK_ERROR; /* a corrupted decoder */
            break;
        }
        if (dec->aux_bytes > TF_CK_MAX_AUX)
            st = TF_CK_ERROR;
    }

    dec->state = st;
    *len = w;
    if (st == TF_CK_ERROR)
        return TF_PARSE_ERROR;
    if (st != TF_CK_DONE)
        return TF_PARSE_INCOMPLETE; /* every raw byte consumed */
    /* what follows the body moves down to follow the decoded data */
    size_t rest = n - r;
    if (rest && w != r)
        memmove(buf + w, buf + r, rest);
    return (ssize_t)rest;
}

/* ----------------------------------------------------------- response head */

/* A table written as a switch (one case per code): long, not complex. */
const char *tf_status_reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 207: return "Multi-Status";
    case 208: return "Already Reported";
    case 226: return "IM Used";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 305: return "Use Proxy";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 418: return "I'm a teapot";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 423: return "Locked";
    case 424: return "Failed Dependency";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 506: return "Variant Also Negotiates";
    case 507: return "Insufficient Storage";
    case 508: return "Loop Detected";
    case 511: return "Network Authentication Required";
    default: return "Unknown";
    }
}

const char *tf_http_date(time_t now) {
    /* single-threaded process: one cache for the whole worker */
    static char date[30];
    static time_t cached_at;
    static int cached;
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    if (cached && now == cached_at)
        return date;

    struct tm tm;
    if (!gmtime_r(&now, &tm) || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999) {
        time_t epoch = 0;
        gmtime_r(&epoch, &tm);
    }
    /* by hand, not strftime: "%a" and "%b" follow the locale */
    int year = tm.tm_year + 1900;
    char *d = date;
    memcpy(d, days[tm.tm_wday % 7], 3);
    d[3] = ',';
    d[4] = ' ';
    d[5] = (char)('0' + tm.tm_mday / 10);
    d[6] = (char)('0' + tm.tm_mday % 10);
    d[7] = ' ';
    memcpy(d + 8, months[tm.tm_mon % 12], 3);
    d[11] = ' ';
    d[12] = (char)('0' + year / 1000);
    d[13] = (char)('0' + year / 100 % 10);
    d[14] = (char)('0' + year / 10 % 10);
    d[15] = (char)('0' + year % 10);
    d[16] = ' ';
    d[17] = (char)('0' + tm.tm_hour / 10);
    d[18] = (char)('0' + tm.tm_hour % 10);
    d[19] = ':';
    d[20] = (char)('0' + tm.tm_min / 10);
    d[21] = (char)('0' + tm.tm_min % 10);
    d[22] = ':';
    d[23] = (char)('0' + tm.tm_sec / 10); /* tm_sec <= 60 (leap second) */
    d[24] = (char)('0' + tm.tm_sec % 10);
    memcpy(d + 25, " GMT", 5); /* with the NUL */
    cached_at = now;
    cached = 1;
    return date;
}

ssize_t tf_write_response_head(char *out, size_t cap, int status,
                               const tf_header *headers, size_t num_headers,
                               int64_t content_length, int flags,
                               int version_minor) {
    tf_out o = tf_out_init(out, cap);
    int keep_alive = (flags & TF_HEAD_KEEP_ALIVE) != 0;

    /* status-code = 3DIGIT (RFC 9110 15); anything else cannot be written */
    if (status < 100 || status > 999)
        return -1;
    tf_out_put(&o, TF_LIT("HTTP/1.1 "));
    tf_out_put_uint(&o, (uint64_t)status);
    tf_out_put(&o, " ", 1);
    const char *reason = tf_status_reason(status);
    tf_out_put(&o, reason, strlen(reason));
    tf_out_put(&o, TF_LIT("\r\nServer: tailfast\r\nDate: "));
    tf_out_put(&o, tf_http_date(time(NULL)), 29);
    tf_out_put(&o, "\r\n", 2);
    for (size_t i = 0; i < num_headers; i++) {
        tf_out_put(&o, headers[i].name, headers[i].name_len);
        tf_out_put(&o, ": ", 2);
        tf_out_put(&o, headers[i].value, headers[i].value_len);
        tf_out_put(&o, "\r\n", 2);
    }
    if (content_length >= 0) {
        tf_out_put(&o, TF_LIT("Content-Length: "));
        tf_out_put_uint(&o, (uint64_t)content_length);
        tf_out_put(&o, "\r\n", 2);
    }
    if (flags & TF_HEAD_CHUNKED)
        tf_out_put(&o, TF_LIT("Transfer-Encoding: chunked\r\n"));
    /* only where the choice differs from the request version's default */
    if (!keep_alive && version_minor == 1)
        tf_out_put(&o, TF_LIT("Connection: close\r\n"));
    else if (keep_alive && version_minor == 0)
        tf_out_put(&o, TF_LIT("Connection: keep-alive\r\n"));
    tf_out_put(&o, "\r\n", 2);
    if (o.overflow)
        return -1; /* a cut head is no head */
    return (ssize_t)tf_out_len(&o, out);
}
