/* test_websocket.c — unit tests of csrc/websocket.c (requests built with csrc/http.c), plain C, no framework.
 *
 * Build (tests/test_c_units.py does this):
 *   cc -std=c11 -O1 -g -Wall -Wextra -Werror -fsanitize=address,undefined \
 *      -fno-sanitize-recover=all -Icsrc tests/c/test_websocket.c csrc/websocket.c csrc/http.c csrc/log.c
 *
 * Every rule of the codec has a case; streams of frames are also fed split at
 * every byte boundary and one byte at a time, and must give the same events.
 */
#include "websocket.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"


/* ------------------------------------------------------------ SHA-1, base64 */

static void hex(const uint8_t *d, size_t n, char *out) {
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void sha1_hex(const void *data, size_t len, char out[41]) {
    tf_sha1_ctx ctx;
    uint8_t digest[20];
    tf_sha1_init(&ctx);
    tf_sha1_update(&ctx, data, len);
    tf_sha1_final(&ctx, digest);
    hex(digest, 20, out);
}

static void test_sha1(void) {
    static const struct {
        const char *in, *digest;
    } vectors[] = { /* FIPS 180 examples, and the empty message */
        {"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"},
        {"", "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "84983e441c3bd26ebaae4aa1f95129e5e54670f1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopq"
         "rlmnopqrsmnopqrstnopqrstu",
         "a49b2446a02c645bf419f995b67091253a04a259"},
    };
    char out[41];
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        sha1_hex(vectors[i].in, strlen(vectors[i].in), out);
        CHECK(strcmp(out, vectors[i].digest) == 0, "sha1(%s) = %s", vectors[i].in, out);
    }
    /* one million 'a', fed in pieces of 1000 */
    char chunk[1000];
    memset(chunk, 'a', sizeof chunk);
    tf_sha1_ctx ctx;
    uint8_t digest[20];
    tf_sha1_init(&ctx);
    for (int i = 0; i < 1000; i++)
        tf_sha1_update(&ctx, chunk, sizeof chunk);
    tf_sha1_final(&ctx, digest);
    hex(digest, 20, out);
    CHECK(strcmp(out, "34aa973cd4c4daa4f61eeb2bdbad27316534016f") == 0, "million a: %s", out);
    /* any split of the input gives the one-shot digest (block edges 55, 56, 63, 64) */
    uint8_t data[200];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7 + 1);
    for (size_t len = 0; len <= sizeof data; len++) {
        char whole[41], split[41];
        sha1_hex(data, len, whole);
        for (size_t cut = 0; cut <= len; cut += 13) {
            tf_sha1_init(&ctx);
            tf_sha1_update(&ctx, data, cut);
            tf_sha1_update(&ctx, data + cut, len - cut);
            tf_sha1_final(&ctx, digest);
            hex(digest, 20, split);
            CHECK(strcmp(whole, split) == 0, "len %zu cut %zu", len, cut);
        }
    }
}

static void test_base64(void) {
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
                                        "Zm9vYmFy"}; /* RFC 4648 section 10 */
    char out[16];
    uint8_t back[16];
    for (int i = 0; i < 7; i++) {
        size_t n = tf_base64_encode((const uint8_t *)plain[i], strlen(plain[i]), out);
        CHECK(n == strlen(coded[i]) && memcmp(out, coded[i], n) == 0, "encode %s", plain[i]);
        ssize_t m = tf_base64_decode(coded[i], strlen(coded[i]), back, sizeof back);
        CHECK(m == (ssize_t)strlen(plain[i]) && memcmp(back, plain[i], (size_t)m) == 0,
              "decode %s", coded[i]);
    }
    static const char *const bad[] = {"Zg=", "Zh==", "Zm9=", "Z===", "====", "Zg==Zg==",
                                      "Zm9v\n", "Zm 9", "Zm9-", "Zg=a"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(tf_base64_decode(bad[i], strlen(bad[i]), back, sizeof back) == -1, "%s", bad[i]);
    CHECK(tf_base64_decode("Zm9vYmFy", 8, back, 5) == -1, "no room: refused");
}

/* ---------------------------------------------------------------- handshake */

static const char KEY[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const char ACCEPT[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; /* RFC 6455 section 1.3 (and 4.2.2) */

static tf_request parsed;
static const tf_limits limits = {8192, 100, 8192};

static const tf_request *request(const char *text) {
    int status = 0;
    ssize_t n = tf_parse_request(text, strlen(text), &limits, &parsed, &status);
    if (n != (ssize_t)strlen(text)) {
        fprintf(stderr, "test request does not parse (%zd, %d): %s\n", n, status, text);
        abort();
    }
    return &parsed;
}

#define HEAD "GET /chat HTTP/1.1\r\nHost: example.com\r\n"
#define GOOD_FIELDS                                                                      \
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"         \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"

static int handshake(const char *text, char accept[TF_WS_ACCEPT_LEN + 1]) {
    const char *why = "unset";
    int status = tf_ws_handshake(request(text), accept, &why);
    if ((status == 0) != (why == NULL))
        fprintf(stderr, "why is %s for status %d\n", why ? why : "NULL", status);
    return status;
}

static void test_handshake(void) {
    char accept[TF_WS_ACCEPT_LEN + 1];
    tf_ws_accept_key(KEY, strlen(KEY), accept);
    CHECK(strcmp(accept, ACCEPT) == 0, "accept key %s", accept);

    memset(accept, 0, sizeof accept);
    CHECK(handshake(HEAD GOOD_FIELDS "\r\n", accept) == 0, "the RFC's request");
    CHECK(strcmp(accept, ACCEPT) == 0, "accept %s", accept);
    CHECK(tf_ws_is_upgrade(request(HEAD GOOD_FIELDS "\r\n")) == 1, "is an upgrade");
    CHECK(tf_ws_is_upgrade(request(HEAD "Upgrade: h2c\r\n\r\n")) == 0, "h2c is not");
    CHECK(tf_ws_is_upgrade(request(HEAD "\r\n")) == 0, "plain GET is not");
    CHECK(handshake(HEAD "upgrade: WebSocket\r\nconnection: keep-alive, UPGRADE\r\n"
                         "sec-websocket-version: 13\r\nsec-websocket-key: " "dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                    accept) == 0, "tokens and names in any case, Connection a list");
    CHECK(handshake(HEAD "Upgrade: foo, websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " "dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                    accept) == 0, "Upgrade a list");

    static const struct {
        const char *text;
        int status;
    } bad[] = {
        {"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n" GOOD_FIELDS "\r\n", 400},
        {"get /chat HTTP/1.1\r\nHost: x\r\n" GOOD_FIELDS "\r\n", 400},
        {"GET /chat HTTP/1.0\r\nHost: x\r\n" GOOD_FIELDS "\r\n", 400},
        {HEAD "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " "dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400},
        {HEAD "Upgrade: websocket2\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400},
        {HEAD "Upgrade: websocket\r\nConnection: keep-alive\r\nSec-WebSocket-Version: 13\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400},
        {HEAD "Upgrade: websocket\r\nConnection: upgraded\r\nSec-WebSocket-Version: 13\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400},
        {HEAD "Upgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 426},
        {HEAD "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 426},
        {HEAD "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
              "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 426},
        {HEAD "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", 400},
        {HEAD GOOD_FIELDS "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400},
        {HEAD "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j\r\n\r\n", 400}, /* 15 bytes */
        {HEAD "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n\r\n", 400}, /* no padding */
        {HEAD "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==AAAA\r\n\r\n", 400}, /* 19 bytes */
        {HEAD "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ*==\r\n\r\n", 400},
        {HEAD GOOD_FIELDS "Sec-WebSocket-Protocol: chat, a b\r\n\r\n", 400},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int got = handshake(bad[i].text, accept);
        CHECK(got == bad[i].status, "case %zu: %d, expected %d", i, got, bad[i].status);
    }
}

static void test_subprotocols(void) {
    tf_ws_token toks[4];
    const tf_request *req = request(HEAD GOOD_FIELDS "Sec-WebSocket-Protocol: chat, ,superchat\r\n"
                                    "Sec-WebSocket-Protocol:  v2.json \r\n\r\n");
    ssize_t n = tf_ws_subprotocols(req, toks, 4);
    CHECK(n == 3, "three offered: %zd", n);
    CHECK(n == 3 && toks[0].len == 4 && memcmp(toks[0].s, "chat", 4) == 0, "first");
    CHECK(n == 3 && toks[1].len == 9 && memcmp(toks[1].s, "superchat", 9) == 0, "second");
    CHECK(n == 3 && toks[2].len == 7 && memcmp(toks[2].s, "v2.json", 7) == 0, "third field");
    CHECK(tf_ws_subprotocols(req, toks, 1) == 3, "count beyond cap");
    CHECK(tf_ws_subprotocols(request(HEAD GOOD_FIELDS "\r\n"), toks, 4) == 0, "none offered");
    CHECK(tf_ws_subprotocols(request(HEAD "Sec-WebSocket-Protocol: a/b\r\n\r\n"), toks, 4) == -1,
          "not a token");
    char accept[TF_WS_ACCEPT_LEN + 1];
    CHECK(handshake(HEAD GOOD_FIELDS "Sec-WebSocket-Protocol: chat\r\n\r\n", accept) == 0,
          "a valid offer passes the handshake");
}

static void test_write_accept(void) {
    char out[256];
    tf_header proto = {"Sec-WebSocket-Protocol", 22, "chat", 4};
    ssize_t n = tf_ws_write_accept(out, sizeof out, ACCEPT, &proto, 1);
    const char *want = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                       "Sec-WebSocket-Protocol: chat\r\n\r\n";
    CHECK(n == (ssize_t)strlen(want) && memcmp(out, want, (size_t)n) == 0, "101 head");
    for (size_t cap = 0; cap < strlen(want); cap++)
        CHECK(tf_ws_write_accept(out, cap, ACCEPT, &proto, 1) == -1, "cap %zu too small", cap);
}

/* -------------------------------------------------------------------- UTF-8 */

static void test_utf8(void) {
    static const char *const good[] = {"", "plain ascii, long enough for words", "\xC2\x80",
                                       "\xDF\xBF", "\xE0\xA0\x80", "\xED\x9F\xBF", "\xEE\x80\x80",
                                       "\xEF\xBF\xBF", "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF",
                                       "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 end"};
    static const char *const bad[] = {"\x80", "\xBF", "\xC0\x80", "\xC1\xBF", "\xE0\x9F\xBF",
                                      "\xED\xA0\x80", "\xF0\x8F\xBF\xBF", "\xF4\x90\x80\x80",
                                      "\xF5\x80\x80\x80", "\xFF", "\xC3", "\xE2\x82",
                                      "abcdefgh\xC3(", "\xF0\x9F\x98"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        size_t len = strlen(good[i]);
        CHECK(tf_utf8_valid(good[i], len), "good %zu", i);
        for (size_t cut = 0; cut <= len; cut++) { /* split at every byte */
            tf_utf8_state st = {0, 0, 0};
            int r = tf_utf8_feed(&st, (const uint8_t *)good[i], cut);
            r |= tf_utf8_feed(&st, (const uint8_t *)good[i] + cut, len - cut);
            CHECK(r == 0 && st.need == 0, "good %zu cut %zu", i, cut);
        }
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = strlen(bad[i]);
        CHECK(!tf_utf8_valid(bad[i], len), "bad %zu", i);
        for (size_t cut = 0; cut <= len; cut++) {
            tf_utf8_state st = {0, 0, 0};
            int r = tf_utf8_feed(&st, (const uint8_t *)bad[i], cut);
            if (r == 0)
                r = tf_utf8_feed(&st, (const uint8_t *)bad[i] + cut, len - cut);
            CHECK(r < 0 || st.need != 0, "bad %zu cut %zu", i, cut);
        }
    }
}

/* ------------------------------------------------------------------- frames */

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Appends a client frame to out (masked with MASK unless unmasked); ext forces
 * a 16-bit (126) or 64-bit (127) length; returns its length. */
static size_t frame_ext(uint8_t *out, int b0, const void *payload, size_t len, int unmasked, int ext) {
    size_t at = 0;
    out[at++] = (uint8_t)b0;
    uint8_t maskbit = unmasked ? 0 : 0x80;
    if (ext == 0 && len <= 125) {
        out[at++] = (uint8_t)(maskbit | len);
    } else if (ext != 127 && len <= 0xFFFF) {
        out[at++] = maskbit | 126;
        out[at++] = (uint8_t)(len >> 8);
        out[at++] = (uint8_t)len;
    } else {
        out[at++] = maskbit | 127;
        for (int i = 0; i < 8; i++)
            out[at++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    if (!unmasked) {
        memcpy(out + at, MASK, 4);
        at += 4;
    }
    for (size_t i = 0; i < len; i++)
        out[at + i] = ((const uint8_t *)payload)[i] ^ (unmasked ? 0 : MASK[i & 3]);
    return at + len;
}

static size_t frame(uint8_t *out, int b0, const void *payload, size_t len) {
    return frame_ext(out, b0, payload, len, 0, 0);
}

#define FIN 0x80

/* What a stream of frames gave: events (payloads copied) and how it ended. */
typedef struct {
    int count;
    int opcode[32];
    size_t len[32];
    char data[32][1024];
    int close_code[32];
    int end;        /* TF_WS_INCOMPLETE or TF_WS_ERROR */
    int error_code; /* after TF_WS_ERROR */
} outcome;

/* Feeds stream[0..n) to a parser in pieces: first the bytes up to each cut,
 * then the rest (cut = n: whole; step 1: byte by byte when bytewise). */
static void run(const uint8_t *stream, size_t n, uint64_t max, size_t cut, int bytewise, outcome *o) {
    memset(o, 0, sizeof *o);
    tf_ws_parser p;
    tf_ws_parser_init(&p, max);
    char *buf = malloc(n + 1);
    size_t len = 0, fed = 0;
    o->end = TF_WS_INCOMPLETE;
    while (fed < n || len > 0) {
        size_t take = bytewise ? 1 : fed < cut ? cut - fed : n - fed;
        if (take > n - fed)
            take = n - fed;
        memcpy(buf + len, stream + fed, take); /* the caller appends after *len */
        len += take;
        fed += take;
        tf_ws_event ev;
        int r;
        while ((r = tf_ws_parse(&p, buf, &len, &ev)) == TF_WS_EVENT && o->count < 32) {
            o->opcode[o->count] = ev.opcode;
            o->len[o->count] = ev.len;
            memcpy(o->data[o->count], ev.data, ev.len < 1024 ? ev.len : 1024);
            o->close_code[o->count] = ev.close_code;
            o->count++;
        }
        if (r == TF_WS_ERROR) {
            o->end = TF_WS_ERROR;
            o->error_code = p.close_code;
            break;
        }
        if (fed == n)
            break;
    }
    free(buf);
}

static void whole(const uint8_t *stream, size_t n, uint64_t max, outcome *o) {
    run(stream, n, max, n, 0, o);
}

static int same(const outcome *a, const outcome *b) {
    if (a->count != b->count || a->end != b->end || a->error_code != b->error_code)
        return 0;
    for (int i = 0; i < a->count; i++)
        if (a->opcode[i] != b->opcode[i] || a->len[i] != b->len[i] ||
            a->close_code[i] != b->close_code[i] ||
            memcmp(a->data[i], b->data[i], a->len[i] < 1024 ? a->len[i] : 1024) != 0)
            return 0;
    return 1;
}

static void test_rfc_examples(void) {
    /* RFC 6455 section 5.7: a masked "Hello", then "Hel" + "lo" unmasked would be refused */
    static const uint8_t hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    outcome o;
    whole(hello, sizeof hello, 1 << 20, &o);
    CHECK(o.count == 1 && o.opcode[0] == TF_WS_OP_TEXT && o.len[0] == 5 &&
              memcmp(o.data[0], "Hello", 5) == 0, "masked Hello");
    static const uint8_t unmasked[] = {0x81, 0x05, 'H', 'e', 'l', 'l', 'o'};
    whole(unmasked, sizeof unmasked, 1 << 20, &o);
    CHECK(o.end == TF_WS_ERROR && o.error_code == 1002 && o.count == 0, "unmasked: 1002");
    uint8_t s[64];
    size_t n = frame(s, TF_WS_OP_TEXT, "Hel", 3);
    n += frame(s + n, FIN | TF_WS_OP_CONT, "lo", 2);
    whole(s, n, 1 << 20, &o);
    CHECK(o.count == 1 && o.len[0] == 5 && memcmp(o.data[0], "Hello", 5) == 0, "fragmented Hello");
}

static void test_header_rules(void) {
    uint8_t s[256];
    outcome o;
    for (int rsv = 1; rsv <= 4; rsv <<= 1) {
        size_t n = frame(s, FIN | rsv << 4 | TF_WS_OP_TEXT, "x", 1);
        whole(s, n, 100, &o);
        CHECK(o.end == TF_WS_ERROR && o.error_code == 1002, "rsv bit %d: 1002", rsv);
    }
    for (int op = 0; op < 16; op++) {
        size_t n = frame(s, FIN | op, "", 0);
        whole(s, n, 100, &o);
        int known = op == 1 || op == 2 || op == 8 || op == 9 || op == 10;
        if (op == 0)
            CHECK(o.end == TF_WS_ERROR && o.error_code == 1002, "continuation first: 1002");
        else if (known)
            CHECK(o.count == 1 && o.opcode[0] == op && o.end == TF_WS_INCOMPLETE, "opcode %d", op);
        else
            CHECK(o.end == TF_WS_ERROR && o.error_code == 1002, "opcode %d: 1002", op);
    }
    uint8_t big[200] = {0};
    size_t n = frame(s, FIN | TF_WS_OP_PING, big, 125);
    whole(s, n, 100, &o);
    CHECK(o.count == 1 && o.opcode[0] == TF_WS_OP_PING && o.len[0] == 125, "ping of 125");
    uint8_t s2[300];
    n = frame(s2, FIN | TF_WS_OP_PING, big, 126);
    whole(s2, n, 1000, &o);
    CHECK(o.end == TF_WS_ERROR && o.error_code == 1002, "ping of 126: 1002");
    n = frame_ext(s2, FIN | TF_WS_OP_PONG, big, 5, 0, 126);
    whole(s2, n, 1000, &o);
    CHECK(o.end == TF_WS_ERROR && o.error_code == 1002, "control with a 16-bit length: 1002");
    n = frame(s, TF_WS_OP_PING, "x", 1);
    whole(s, n, 100, &o);
    CHECK(o.end == TF_WS_ERROR && o.error_code == 1002, "fragmented ping: 1002");
    /* 64-bit length with the top bit set: refused from the header alone */
    uint8_t top[14] = {FIN | TF_WS_OP_BINARY, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
    whole(top, sizeof top, UINT64_MAX, &o);
    CHECK(o.end == TF_WS_ERROR && o.error_code == 1002, "length MSB set: 1002");
    /* lengths: 16-bit, and 64-bit for a small payload (not minimal, accepted) */
    static uint8_t payload[70000], stream[70100];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 31);
    n = frame(stream, FIN | TF_WS_OP_BINARY, payload, 300);
    whole(stream, n, 1 << 20, &o);
    CHECK(o.count == 1 && o.len[0] == 300 && memcmp(o.data[0], payload, 300) == 0, "16-bit length");
    n = frame(stream, FIN | TF_WS_OP_BINARY, payload, sizeof payload);
    CHECK(stream[1] == (0x80 | 127), "64-bit length used");
    whole(stream, n, 1 << 20, &o);
    CHECK(o.count == 1 && o.len[0] == sizeof payload && memcmp(o.data[0], payload, 1024) == 0,
          "64-bit length");
    n = frame_ext(stream, FIN | TF_WS_OP_BINARY, payload, 10, 0, 127);
    whole(stream, n, 1 << 20, &o);
    CHECK(o.count == 1 && o.len[0] == 10, "64-bit form of a short length");
}

static void test_fragmentation(void) {
    uint8_t s[512];
    outcome o;
    size_t n = frame(s, TF_WS_OP_TEXT, "one ", 4);
    n += frame(s + n, FIN | TF_WS_OP_PING, "p1", 2);
    n += frame(s + n, TF_WS_OP_CONT, "two ", 4);
    n += frame(s + n, FIN | TF_WS_OP_PONG, "", 0);
    n += frame(s + n, TF_WS_OP_CONT, "", 0);
    n += frame(s + n, FIN | TF_WS_OP_CONT, "three", 5);
    n += frame(s + n, FIN | TF_WS_OP_BINARY, "\xff\x00", 2);
    whole(s, n, 100, &o);
    CHECK(o.count == 4 && o.end == TF_WS_INCOMPLETE, "events: %d", o.count);
    CHECK(o.opcode[0] == TF_WS_OP_PING && o.len[0] == 2 && memcmp(o.data[0], "p1", 2) == 0, "ping");
    CHECK(o.opcode[1] == TF_WS_OP_PONG && o.len[1] == 0, "pong");
    CHECK(o.opcode[2] == TF_WS_OP_TEXT && o.len[2] == 13 && memcmp(o.data[2], "one two three", 13) == 0,
          "joined text");
    CHECK(o.opcode[3] == TF_WS_OP_BINARY && o.len[3] == 2, "binary after it");

    n = frame(s, FIN | TF_WS_OP_CONT, "x", 1);
    whole(s, n, 100, &o);
    CHECK(o.end == TF_WS_ERROR && o.error_code == 1002, "continuation without a message");
    n = frame(s, TF_WS_OP_TEXT, "a", 1);
    n += frame(s + n, FIN | TF_WS_OP_BINARY, "b", 1);
    whole(s, n, 100, &o);
    CHECK(o.end == TF_WS_ERROR && o.error_code == 1002, "new message inside a fragmented one");
    n = frame(s, FIN | TF_WS_OP_TEXT, "a", 1);
    n += frame(s + n, FIN | TF_WS_OP_CONT, "b", 1);
    whole(s, n, 100, &o);
    CHECK(o.count == 1 && o.end == TF_WS_ERROR && o.error_code == 1002, "continuation after a FIN");
}

static void test_max_message(void) {
    uint8_t s[512], payload[200] = {0};
    outcome o;
    size_t n = frame(s, FIN | TF_WS_OP_BINARY, payload, 100);
    whole(s, n, 100, &o);
    CHECK(o.count == 1 && o.len[0] == 100, "exactly the maximum");
    whole(s, n, 99, &o);
    CHECK(o.end == TF_WS_ERROR && o.error_code == 1009, "one above: 1009");
    run(s, n, 99, 8, 0, &o); /* header and mask only, first */
    CHECK(o.end == TF_WS_ERROR && o.error_code == 1009, "refused from the header alone");
    n = frame(s, TF_WS_OP_TEXT, payload, 60);
    n += frame(s + n, FIN | TF_WS_OP_CONT, payload, 40);
    whole(s, n, 100, &o);
    CHECK(o.count == 1 && o.len[0] == 100, "fragments up to the maximum");
    n += frame(s + n, TF_WS_OP_TEXT, payload, 60);
    n += frame(s + n, FIN | TF_WS_OP_CONT, payload, 41);
    whole(s, n, 100, &o);
    CHECK(o.count == 1 && o.end == TF_WS_ERROR && o.error_code == 1009, "fragments above: 1009");
    n = frame(s, FIN | TF_WS_OP_PING, payload, 20);
    whole(s, n, 10, &o);
    CHECK(o.count == 1, "control frames do not count against the maximum");
}

static void test_text_utf8(void) {
    uint8_t s[512];
    outcome o;
    size_t n = frame(s, FIN | TF_WS_OP_TEXT, "\xC3\x28", 2);
    whole(s, n, 100, &o);
    CHECK(o.end == TF_WS_ERROR && o.error_code == 1007, "invalid text: 1007");
    n = frame(s, FIN | TF_WS_OP_BINARY, "\xC3\x28", 2);
    whole(s, n, 100, &o);
    CHECK(o.count == 1, "binary is not checked");
    n = frame(s, TF_WS_OP_TEXT, "\xE2", 1); /* a euro sign across three fragments */
    n += frame(s + n, TF_WS_OP_CONT, "\x82", 1);
    n += frame(s + n, FIN | TF_WS_OP_CONT, "\xAC", 1);
    whole(s, n, 100, &o);
    CHECK(o.count == 1 && o.len[0] == 3 && memcmp(o.data[0], "\xE2\x82\xAC", 3) == 0,
          "character split across fragments");
    n = frame(s, TF_WS_OP_TEXT, "ok\xE2\x82", 4);
    n += frame(s + n, FIN | TF_WS_OP_CONT, "", 0);
    whole(s, n, 100, &o);
    CHECK(o.end == TF_WS_ERROR && o.error_code == 1007, "message ends inside a character");
    n = frame(s, TF_WS_OP_TEXT, "\xED\xA0\x80", 3); /* a surrogate, in the first fragment */
    whole(s, n, 100, &o);
    CHECK(o.end == TF_WS_ERROR && o.error_code == 1007, "fails before the last fragment");
}

static void test_close_frames(void) {
    uint8_t s[256], payload[130];
    outcome o;
    size_t n = frame(s, FIN | TF_WS_OP_CLOSE, "", 0);
    whole(s, n, 100, &o);
    CHECK(o.count == 1 && o.close_code[0] == 1005, "no code: 1005 reported");
    n = frame(s, FIN | TF_WS_OP_CLOSE, "\x03\xe8" "bye", 5);
    n += frame(s + n, FIN | TF_WS_OP_TEXT, "after", 5);
    whole(s, n, 100, &o);
    CHECK(o.count == 1 && o.close_code[0] == 1000 && o.len[0] == 5, "1000 with a reason, then done");
    n = frame(s, FIN | TF_WS_OP_CLOSE, "\x03", 1);
    whole(s, n, 100, &o);
    CHECK(o.end == TF_WS_ERROR && o.error_code == 1002, "one-byte close payload: 1002");
    static const int codes[] = {0, 999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008,
                                1009, 1010, 1011, 1012, 1015, 1016, 2000, 2999, 3000, 3999,
                                4000, 4999, 5000, 65535};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        int c = codes[i];
        int valid = (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1011) || (c >= 3000 && c <= 4999);
        CHECK(tf_ws_close_code_valid(c) == valid, "code %d", c);
        uint8_t code[2] = {(uint8_t)(c >> 8), (uint8_t)c};
        n = frame(s, FIN | TF_WS_OP_CLOSE, code, 2);
        whole(s, n, 100, &o);
        if (valid)
            CHECK(o.count == 1 && o.close_code[0] == c, "code %d accepted", c);
        else
            CHECK(o.end == TF_WS_ERROR && o.error_code == 1002, "code %d: 1002", c);
    }
    n = frame(s, FIN | TF_WS_OP_CLOSE, "\x03\xe8\xff", 3);
    whole(s, n, 100, &o);
    CHECK(o.end == TF_WS_ERROR && o.error_code == 1007, "reason not UTF-8: 1007");
    memset(payload, 'r', sizeof payload);
    payload[0] = 0x03;
    payload[1] = 0xe8;
    n = frame(s, FIN | TF_WS_OP_CLOSE, payload, 125);
    whole(s, n, 100, &o);
    CHECK(o.count == 1 && o.len[0] == 125, "reason of 123 bytes");
    n = frame(s, TF_WS_OP_TEXT, "half", 4); /* a close inside a fragmented message */
    n += frame(s + n, FIN | TF_WS_OP_CLOSE, "\x03\xe9", 2);
    whole(s, n, 100, &o);
    CHECK(o.count == 1 && o.opcode[0] == TF_WS_OP_CLOSE && o.close_code[0] == 1001,
          "close between fragments");

    /* after a close: the input is dropped */
    tf_ws_parser p;
    tf_ws_parser_init(&p, 100);
    char buf[64];
    n = frame((uint8_t *)buf, FIN | TF_WS_OP_CLOSE, "", 0);
    n += frame((uint8_t *)buf + n, FIN | TF_WS_OP_TEXT, "x", 1);
    size_t len = n;
    tf_ws_event ev;
    CHECK(tf_ws_parse(&p, buf, &len, &ev) == TF_WS_EVENT && ev.opcode == TF_WS_OP_CLOSE, "close");
    CHECK(tf_ws_parse(&p, buf, &len, &ev) == TF_WS_INCOMPLETE && len == 0, "then nothing");
}

/* A stream using every kind of frame, fed split at every byte and bytewise. */
static void test_every_split(void) {
    static uint8_t s[4096];
    uint8_t bin[300];
    for (size_t i = 0; i < sizeof bin; i++)
        bin[i] = (uint8_t)(255 - i);
    size_t n = frame(s, FIN | TF_WS_OP_TEXT, "hello \xE2\x82\xAC", 9);
    n += frame(s + n, TF_WS_OP_TEXT, "frag\xC3", 5);
    n += frame(s + n, FIN | TF_WS_OP_PING, "are you there", 13);
    n += frame(s + n, TF_WS_OP_CONT, "\xA9", 1);
    n += frame(s + n, FIN | TF_WS_OP_CONT, "mented", 6);
    n += frame_ext(s + n, FIN | TF_WS_OP_BINARY, bin, sizeof bin, 0, 0);
    n += frame_ext(s + n, FIN | TF_WS_OP_BINARY, bin, 7, 0, 127);
    n += frame(s + n, TF_WS_OP_BINARY, bin, 100);
    n += frame(s + n, FIN | TF_WS_OP_PONG, "", 0);
    n += frame(s + n, FIN | TF_WS_OP_CONT, bin + 100, 200);
    n += frame(s + n, FIN | TF_WS_OP_CLOSE, "\x03\xe8" "done", 6);
    outcome ref, got;
    whole(s, n, 1000, &ref);
    CHECK(ref.count == 8 && ref.end == TF_WS_INCOMPLETE, "reference: %d events", ref.count);
    CHECK(ref.len[2] == 12 && memcmp(ref.data[2], "frag\xC3\xA9mented", 12) == 0, "joined");
    CHECK(ref.len[3] == 300 && ref.opcode[5] == TF_WS_OP_PONG && ref.len[6] == 300 &&
              memcmp(ref.data[6], bin, 300) == 0, "binary joined");
    CHECK(ref.close_code[7] == 1000, "close last");
    int bad = 0;
    for (size_t cut = 0; cut <= n; cut++) {
        run(s, n, 1000, cut, 0, &got);
        bad += !same(&ref, &got);
    }
    CHECK(bad == 0, "%d splits differ", bad);
    run(s, n, 1000, 0, 1, &got);
    CHECK(same(&ref, &got), "byte by byte");

    /* a stream that fails: the same error wherever it is split */
    n = frame(s, TF_WS_OP_TEXT, "ab", 2);
    n += frame(s + n, FIN | TF_WS_OP_PING, "", 0);
    n += frame(s + n, FIN | TF_WS_OP_CONT, "\xC0\xAF", 2);
    whole(s, n, 1000, &ref);
    CHECK(ref.count == 1 && ref.end == TF_WS_ERROR && ref.error_code == 1007, "reference error");
    bad = 0;
    for (size_t cut = 0; cut <= n; cut++) {
        run(s, n, 1000, cut, 0, &got);
        bad += !same(&ref, &got);
    }
    CHECK(bad == 0, "%d splits differ", bad);
}

static void test_need_and_compaction(void) {
    uint8_t payload[300] = {1};
    char buf[512];
    size_t n = frame((uint8_t *)buf, FIN | TF_WS_OP_PING, "p", 1);  /* 7 bytes */
    size_t second = frame((uint8_t *)buf + n, FIN | TF_WS_OP_BINARY, payload, 300); /* 8 + 300 */
    tf_ws_parser p;
    tf_ws_parser_init(&p, 1000);
    tf_ws_event ev;
    size_t len = n + 10; /* the ping and the next frame's header */
    CHECK(tf_ws_parse(&p, buf, &len, &ev) == TF_WS_EVENT && ev.opcode == TF_WS_OP_PING, "ping");
    CHECK(tf_ws_parse(&p, buf, &len, &ev) == TF_WS_INCOMPLETE, "binary incomplete");
    CHECK(len == 10 && p.need == second, "ping dropped (len %zu), need %zu", len, p.need);
    memmove(buf + len, buf + n + 10, second - 10); /* the rest arrives */
    len = second;
    CHECK(tf_ws_parse(&p, buf, &len, &ev) == TF_WS_EVENT && ev.len == 300, "binary");
    CHECK(tf_ws_parse(&p, buf, &len, &ev) == TF_WS_INCOMPLETE && len == 0 && p.need == 0, "empty");
}

static void test_unmask(void) {
    uint8_t data[64], want[64];
    for (size_t phase = 0; phase < 4; phase++)
        for (size_t off = 0; off < 8; off++)
            for (size_t len = 0; len + off <= sizeof data; len += 3) {
                for (size_t i = 0; i < sizeof data; i++)
                    data[i] = want[i] = (uint8_t)(i * 13 + 5);
                for (size_t i = 0; i < len; i++)
                    want[off + i] ^= MASK[(phase + i) & 3];
                tf_ws_unmask(data + off, len, MASK, phase);
                CHECK(memcmp(data, want, sizeof data) == 0, "phase %zu off %zu len %zu", phase, off, len);
            }
}

/* ---------------------------------------------------------------- encoder */

static void test_encoder(void) {
    uint8_t h[TF_WS_MAX_HEADER];
    CHECK(tf_ws_frame_header(h, TF_WS_OP_TEXT, 1, 0) == 2 && h[0] == 0x81 && h[1] == 0, "empty");
    CHECK(tf_ws_frame_header(h, TF_WS_OP_BINARY, 1, 125) == 2 && h[0] == 0x82 && h[1] == 125, "125");
    CHECK(tf_ws_frame_header(h, TF_WS_OP_TEXT, 0, 126) == 4 && h[0] == 0x01 && h[1] == 126 &&
              h[2] == 0 && h[3] == 126, "126, not FIN");
    CHECK(tf_ws_frame_header(h, TF_WS_OP_CONT, 1, 65535) == 4 && h[0] == 0x80 && h[2] == 0xFF &&
              h[3] == 0xFF, "65535");
    CHECK(tf_ws_frame_header(h, TF_WS_OP_BINARY, 1, 65536) == 10 && h[1] == 127 && h[2] == 0 &&
              h[7] == 1 && h[8] == 0 && h[9] == 0, "65536");
    CHECK(tf_ws_frame_header(h, TF_WS_OP_PONG, 1, 3) == 2 && h[0] == 0x8A, "pong");

    uint8_t f[TF_WS_MAX_CLOSE_FRAME];
    size_t n = tf_ws_close_frame(f, 1001, "bye", 3);
    CHECK(n == 7 && f[0] == 0x88 && f[1] == 5 && f[2] == 0x03 && f[3] == 0xE9 &&
              memcmp(f + 4, "bye", 3) == 0, "close 1001 bye");
    n = tf_ws_close_frame(f, 0, "ignored", 7);
    CHECK(n == 2 && f[0] == 0x88 && f[1] == 0, "close without a code");
    char reason[300];
    for (size_t i = 0; i < sizeof reason; i += 2) { /* "é" repeated: cut at 123 would split one */
        reason[i] = (char)0xC3;
        reason[i + 1] = (char)0xA9;
    }
    n = tf_ws_close_frame(f, 1000, reason, sizeof reason);
    CHECK(n == 2 + 2 + 122 && f[1] == 124, "reason cut to 122 bytes: %zu", n);
    CHECK(tf_utf8_valid((const char *)f + 4, n - 4), "cut reason is UTF-8");
    memset(reason, 'x', sizeof reason);
    n = tf_ws_close_frame(f, 1000, reason, sizeof reason);
    CHECK(n == TF_WS_MAX_CLOSE_FRAME && f[1] == 125, "ASCII reason cut to 123 bytes");
}

int main(void) {
    test_sha1();
    test_base64();
    test_handshake();
    test_subprotocols();
    test_write_accept();
    test_utf8();
    test_rfc_examples();
    test_header_rules();
    test_fragmentation();
    test_max_message();
    test_text_utf8();
    test_close_frames();
    test_every_split();
    test_need_and_compaction();
    test_unmask();
    test_encoder();
    return check_summary("test_websocket");
}
