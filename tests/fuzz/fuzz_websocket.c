/* fuzz_websocket.c — libFuzzer target for csrc/websocket.c (see README.md).
 *
 * An input starting with 'G' is an upgrade request: parsed with
 * tf_parse_request, then checked by tf_ws_handshake and tf_ws_subprotocols.
 * Any other input is a stream of client frames: byte 0 picks the maximum
 * message size, byte 1 a split point, the rest are the frames. Besides
 * crashes and sanitizer reports, it checks (a failed check calls abort):
 *  - the stream gives the same events and the same end (error and close
 *    code) fed whole, split once at the chosen point, and byte by byte;
 *  - every event lies inside the caller's buffer; a message is at most the
 *    maximum, a control payload at most 125 bytes; a text message and a
 *    close reason are valid UTF-8 by a second, plain validator below; a close
 *    code is valid or 1005; an error's code is 1002, 1007 or 1009;
 *  - the parser never grows the caller's length, and `need` is beyond it;
 *  - a handshake that passes has a 28-byte base64 accept value, and every
 *    subprotocol token lies inside the request.
 */
#include "websocket.h"

#include <stdlib.h>
#include <string.h>

static void check(int ok) {
    if (!ok)
        abort();
}

/* UTF-8 by decoding code points: the plain twin of tf_utf8_feed. */
static int plain_utf8(const uint8_t *s, size_t n) {
    static const uint32_t least[4] = {0, 0x80, 0x800, 0x10000}; /* shorter is overlong */
    size_t i = 0;
    while (i < n) {
        uint32_t c = s[i];
        size_t k;
        if (c < 0x80) {
            k = 0;
        } else if ((c & 0xE0) == 0xC0) {
            k = 1;
            c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2;
            c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3;
            c &= 0x07;
        } else {
            return 0;
        }
        if (k > n - i - 1)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            c = c << 6 | (s[i + j] & 0x3F);
        }
        if (c < least[k] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* A digest of the events and the end, to compare ways of feeding. */
typedef struct {
    uint64_t hash;
    int count, end, error_code;
} outcome;

static void mix(uint64_t *h, uint64_t v) {
    *h = (*h ^ v) * 0x100000001b3ull;
}

static void check_event(const tf_ws_event *ev, const char *buf, size_t len, uint64_t max) {
    check(ev->len == 0 || (ev->data >= buf && ev->data + ev->len <= buf + len));
    if (ev->opcode & 0x8) {
        check(ev->len <= TF_WS_MAX_CONTROL);
    } else {
        check(ev->opcode == TF_WS_OP_TEXT || ev->opcode == TF_WS_OP_BINARY);
        check(ev->len <= max);
    }
    if (ev->opcode == TF_WS_OP_TEXT)
        check(plain_utf8((const uint8_t *)ev->data, ev->len));
    if (ev->opcode == TF_WS_OP_CLOSE) {
        check(ev->close_code == TF_WS_CLOSE_NO_STATUS || tf_ws_close_code_valid(ev->close_code));
        check(ev->reason_len == 0 || (ev->reason >= ev->data && ev->reason + ev->reason_len <= ev->data + ev->len));
        check(plain_utf8((const uint8_t *)ev->reason, ev->reason_len));
    }
}

static void feed(const uint8_t *s, size_t n, uint64_t max, size_t cut, int bytewise, outcome *o) {
    memset(o, 0, sizeof *o);
    o->end = TF_WS_INCOMPLETE;
    tf_ws_parser p;
    tf_ws_parser_init(&p, max);
    char *buf = malloc(n + 1);
    size_t len = 0, fed = 0;
    while (fed < n) {
        size_t take = bytewise ? 1 : fed < cut ? cut - fed : n - fed;
        memcpy(buf + len, s + fed, take);
        len += take;
        fed += take;
        tf_ws_event ev;
        int r;
        for (;;) {
            size_t before = len;
            r = tf_ws_parse(&p, buf, &len, &ev);
            check(len <= before);
            if (r != TF_WS_EVENT)
                break;
            check_event(&ev, buf, len, max);
            o->count++;
            mix(&o->hash, (uint64_t)ev.opcode << 32 | (uint64_t)(uint32_t)ev.close_code);
            mix(&o->hash, ev.len);
            for (size_t i = 0; i < ev.len; i++)
                mix(&o->hash, (uint8_t)ev.data[i]);
        }
        if (r == TF_WS_ERROR) {
            check(p.close_code == 1002 || p.close_code == 1007 || p.close_code == 1009);
            o->end = r;
            o->error_code = p.close_code;
            break;
        }
        check(r == TF_WS_INCOMPLETE && (p.need == 0 || p.need > len));
    }
    free(buf);
}

static void fuzz_frames(const uint8_t *data, size_t size) {
    if (size < 2)
        return;
    static const uint64_t maxima[4] = {0, 7, 200, UINT64_MAX};
    uint64_t max = maxima[data[0] & 3];
    const uint8_t *s = data + 2;
    size_t n = size - 2;
    outcome whole, split, bytes;
    feed(s, n, max, n, 0, &whole);
    feed(s, n, max, n ? data[1] % (n + 1) : 0, 0, &split);
    check(memcmp(&whole, &split, sizeof whole) == 0);
    if (n <= 1024) { /* byte by byte is quadratic in the worst case: keep it short */
        feed(s, n, max, 0, 1, &bytes);
        check(memcmp(&whole, &bytes, sizeof whole) == 0);
    }
}

static void fuzz_handshake(const uint8_t *data, size_t size) {
    static tf_request req;
    const tf_limits lim = {8190, 100, 8190};
    const char *buf = (const char *)data;
    int status = 0;
    ssize_t r = tf_parse_request(buf, size, &lim, &req, &status);
    if (r <= 0)
        return;
    (void)tf_ws_is_upgrade(&req);
    char accept[TF_WS_ACCEPT_LEN + 1];
    const char *why = NULL;
    int st = tf_ws_handshake(&req, accept, &why);
    check(st == 0 || st == 400 || st == 426);
    check((st == 0) == (why == NULL));
    if (st == 0) {
        check(strlen(accept) == TF_WS_ACCEPT_LEN && accept[TF_WS_ACCEPT_LEN - 1] == '=');
        check(tf_ws_is_upgrade(&req));
    }
    tf_ws_token toks[8];
    ssize_t n = tf_ws_subprotocols(&req, toks, 8);
    check(n >= -1);
    for (ssize_t i = 0; i < n && i < 8; i++)
        check(toks[i].len > 0 && toks[i].s >= buf && toks[i].s + toks[i].len <= buf + r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 0 && data[0] == 'G')
        fuzz_handshake(data, size);
    else
        fuzz_frames(data, size);
    return 0;
}
