/* websocket.c — the RFC 6455 codec: upgrade check and accept key, client-frame parser with message assembly, server-frame encoder. */
#include "websocket.h"

#include <string.h>

/* ================================================================= SHA-1 */

static uint32_t rol32(uint32_t x, int n) {
    return (x << n) | (x >> (32 - n));
}

static uint32_t load_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* One 64-byte block (FIPS 180-4 section 6.1.2), the schedule kept in 16 words. */
static void sha1_block(uint32_t h[5], const uint8_t *block) {
    uint32_t w[16];
    for (int i = 0; i < 16; i++)
        w[i] = load_be32(block + 4 * i);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int t = 0; t < 80; t++) {
        if (t >= 16) {
            uint32_t x = w[(t + 13) & 15] ^ w[(t + 8) & 15] ^ w[(t + 2) & 15] ^ w[t & 15];
            w[t & 15] = rol32(x, 1);
        }
        uint32_t f, k;
        if (t < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999u;
        } else if (t < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1u;
        } else if (t < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDCu;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6u;
        }
        uint32_t temp = rol32(a, 5) + f + e + k + w[t & 15];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = temp;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void tf_sha1_init(tf_sha1_ctx *ctx) {
    static const uint32_t iv[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u,
                                   0xC3D2E1F0u};
    memcpy(ctx->h, iv, sizeof iv);
    ctx->total = 0;
    ctx->used = 0;
}

void tf_sha1_update(tf_sha1_ctx *ctx, const void *data, size_t len) {
    const uint8_t *p = data;
    ctx->total += len;
    while (len > 0) {
        if (ctx->used == 0 && len >= 64) { /* whole blocks straight from the input */
            sha1_block(ctx->h, p);
            p += 64;
            len -= 64;
            continue;
        }
        size_t take = 64 - ctx->used < len ? 64 - ctx->used : len;
        memcpy(ctx->block + ctx->used, p, take);
        ctx->used += take;
        p += take;
        len -= take;
        if (ctx->used == 64) {
            sha1_block(ctx->h, ctx->block);
            ctx->used = 0;
        }
    }
}

void tf_sha1_final(tf_sha1_ctx *ctx, uint8_t digest[20]) {
    uint64_t bits = ctx->total * 8;
    uint8_t pad[72] = {0x80};
    /* pad to 56 mod 64, then the length in bits, big-endian */
    size_t pad_len = ctx->used < 56 ? 56 - ctx->used : 120 - ctx->used;
    for (int i = 0; i < 8; i++)
        pad[pad_len + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
    uint64_t total = ctx->total;
    tf_sha1_update(ctx, pad, pad_len + 8);
    ctx->total = total;
    for (int i = 0; i < 5; i++) {
        digest[4 * i] = (uint8_t)(ctx->h[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(ctx->h[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(ctx->h[i] >> 8);
        digest[4 * i + 3] = (uint8_t)ctx->h[i];
    }
}

/* ================================================================ base64 */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t tf_base64_encode(const uint8_t *in, size_t len, char *out) {
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

static int b64_value(char c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

ssize_t tf_base64_decode(const char *in, size_t len, uint8_t *out, size_t cap) {
    if (len % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int last = i + 4 == len;
        int pads = last ? (in[i + 3] == '=') + (in[i + 2] == '=' && in[i + 3] == '=') : 0;
        int v[4];
        for (int k = 0; k < 4 - pads; k++)
            if ((v[k] = b64_value(in[i + (size_t)k])) < 0)
                return -1;
        for (int k = 4 - pads; k < 4; k++)
            v[k] = 0;
        uint32_t word = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
                        (uint32_t)v[3];
        size_t n = (size_t)(3 - pads);
        if ((pads == 1 && (word & 0xFF)) || (pads == 2 && (word & 0xFFFF)))
            return -1; /* non-zero pad bits: not the canonical encoding */
        if (o + n > cap)
            return -1;
        for (size_t k = 0; k < n; k++)
            out[o++] = (uint8_t)(word >> (16 - 8 * k));
    }
    return (ssize_t)o;
}

/* ================================================================= UTF-8 */

/* 8 bytes at once, for the ASCII fast path (memcpy: no alignment needed). */
static uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* A lead byte's continuation count and the range of its first continuation
 * byte (which rules out overlongs, surrogates and > U+10FFFF); 0: invalid. */
static int utf8_lead(uint8_t b, uint8_t *lo, uint8_t *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
        return 1;
    if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0)
            *lo = 0xA0;
        else if (b == 0xED)
            *hi = 0x9F;
        return 2;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0)
            *lo = 0x90;
        else if (b == 0xF4)
            *hi = 0x8F;
        return 3;
    }
    return 0;
}

int tf_utf8_feed(tf_utf8_state *st, const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        if (st->need == 0) {
            while (i + 8 <= len && !(load64(s + i) & 0x8080808080808080ull))
                i += 8;
            if (i == len)
                break;
            uint8_t b = s[i++];
            if (b < 0x80)
                continue;
            int need = utf8_lead(b, &st->lo, &st->hi);
            if (!need)
                return -1;
            st->need = (uint8_t)need;
            continue;
        }
        uint8_t b = s[i++];
        if (b < st->lo || b > st->hi)
            return -1;
        st->need--;
        st->lo = 0x80;
        st->hi = 0xBF;
    }
    return 0;
}

int tf_utf8_valid(const char *s, size_t len) {
    tf_utf8_state st = {0, 0, 0};
    return tf_utf8_feed(&st, (const uint8_t *)s, len) == 0 && st.need == 0;
}

/* ============================================================= handshake */

static int lower(int c) {
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static int ieq(const char *a, size_t a_len, const char *b) {
    size_t b_len = strlen(b);
    if (a_len != b_len)
        return 0;
    for (size_t i = 0; i < a_len; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return 1;
}

static int is_tchar(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int is_ows(char c) {
    return c == ' ' || c == '\t';
}

/* The next element of a comma-separated list at s[*at..len), OWS trimmed
 * (possibly empty); 0 at the end of the list. */
static int list_next(const char *s, size_t len, size_t *at, tf_ws_token *tok) {
    if (*at > len)
        return 0;
    size_t start = *at, end = start;
    while (end < len && s[end] != ',')
        end++;
    *at = end + 1;
    while (start < end && is_ows(s[start]))
        start++;
    while (end > start && is_ows(s[end - 1]))
        end--;
    tok->s = s + start;
    tok->len = end - start;
    return 1;
}

static int all_tchars(const tf_ws_token *tok) {
    for (size_t i = 0; i < tok->len; i++)
        if (!is_tchar((unsigned char)tok->s[i]))
            return 0;
    return tok->len > 0;
}

/* 1 when any `name` field of req lists the token `want` (any case). */
static int has_token(const tf_request *req, const char *name, const char *want) {
    for (size_t h = 0; h < req->num_headers; h++) {
        const tf_header *f = &req->headers[h];
        if (!ieq(f->name, f->name_len, name))
            continue;
        size_t at = 0;
        tf_ws_token tok;
        while (list_next(f->value, f->value_len, &at, &tok))
            if (ieq(tok.s, tok.len, want))
                return 1;
    }
    return 0;
}

/* The one `name` field of req: 1 with *out set, 0 when absent, -1 when repeated. */
static int only_field(const tf_request *req, const char *name, const tf_header **out) {
    int seen = 0;
    for (size_t h = 0; h < req->num_headers; h++)
        if (ieq(req->headers[h].name, req->headers[h].name_len, name)) {
            *out = &req->headers[h];
            seen++;
        }
    return seen > 1 ? -1 : seen;
}

int tf_ws_is_upgrade(const tf_request *req) {
    return has_token(req, "upgrade", "websocket");
}

ssize_t tf_ws_subprotocols(const tf_request *req, tf_ws_token *out, size_t cap) {
    ssize_t n = 0;
    for (size_t h = 0; h < req->num_headers; h++) {
        const tf_header *f = &req->headers[h];
        if (!ieq(f->name, f->name_len, "sec-websocket-protocol"))
            continue;
        size_t at = 0;
        tf_ws_token tok;
        while (list_next(f->value, f->value_len, &at, &tok)) {
            if (tok.len == 0)
                continue; /* RFC 9110 5.6.1: empty list elements do not count */
            if (!all_tchars(&tok))
                return -1;
            if ((size_t)n < cap)
                out[n] = tok;
            n++;
        }
    }
    return n;
}

static int fail(const char **why, const char *text, int status) {
    if (why)
        *why = text;
    return status;
}

int tf_ws_handshake(const tf_request *req, char accept[TF_WS_ACCEPT_LEN + 1], const char **why) {
    const tf_header *version = NULL, *key = NULL;
    if (req->method_len != 3 || memcmp(req->method, "GET", 3) != 0) /* methods are case-sensitive */
        return fail(why, "method is not GET", 400);
    if (req->version_minor < 1)
        return fail(why, "not HTTP/1.1", 400);
    if (!tf_ws_is_upgrade(req))
        return fail(why, "no Upgrade: websocket", 400);
    if (!has_token(req, "connection", "upgrade"))
        return fail(why, "Connection has no upgrade token", 400);
    int versions = only_field(req, "sec-websocket-version", &version);
    if (versions == 0)
        return fail(why, "no Sec-WebSocket-Version", 426);
    if (versions < 0 || version->value_len != 2 || memcmp(version->value, "13", 2) != 0)
        return fail(why, "Sec-WebSocket-Version is not 13", 426);
    if (only_field(req, "sec-websocket-key", &key) != 1)
        return fail(why, "not exactly one Sec-WebSocket-Key", 400);
    uint8_t nonce[18];
    if (tf_base64_decode(key->value, key->value_len, nonce, sizeof nonce) != 16)
        return fail(why, "Sec-WebSocket-Key is not 16 bytes in base64", 400);
    if (tf_ws_subprotocols(req, NULL, 0) < 0)
        return fail(why, "Sec-WebSocket-Protocol is not a list of tokens", 400);
    tf_ws_accept_key(key->value, key->value_len, accept);
    if (why)
        *why = NULL;
    return 0;
}

void tf_ws_accept_key(const char *key, size_t key_len, char accept[TF_WS_ACCEPT_LEN + 1]) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    tf_sha1_ctx ctx;
    uint8_t digest[20];
    tf_sha1_init(&ctx);
    tf_sha1_update(&ctx, key, key_len);
    tf_sha1_update(&ctx, guid, sizeof guid - 1);
    tf_sha1_final(&ctx, digest);
    accept[tf_base64_encode(digest, sizeof digest, accept)] = '\0';
}

/* Appends text[0..len) at out[*at], if it fits in cap; 0 when it does not. */
static int put(char *out, size_t cap, size_t *at, const char *text, size_t len) {
    if (len > cap - *at)
        return 0;
    memcpy(out + *at, text, len);
    *at += len;
    return 1;
}

#define PUT_LIT(lit) put(out, cap, &at, lit, sizeof(lit) - 1)

ssize_t tf_ws_write_accept(char *out, size_t cap, const char accept[TF_WS_ACCEPT_LEN],
                           const tf_header *headers, size_t num_headers) {
    size_t at = 0;
    int ok = PUT_LIT("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: ") &&
             put(out, cap, &at, accept, TF_WS_ACCEPT_LEN) && PUT_LIT("\r\n");
    for (size_t i = 0; ok && i < num_headers; i++)
        ok = put(out, cap, &at, headers[i].name, headers[i].name_len) && PUT_LIT(": ") &&
             put(out, cap, &at, headers[i].value, headers[i].value_len) && PUT_LIT("\r\n");
    ok = ok && PUT_LIT("\r\n");
    return ok ? (ssize_t)at : -1;
}

/* ============================================================ frames in */

int tf_ws_close_code_valid(int code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

void tf_ws_unmask(uint8_t *data, size_t len, const uint8_t mask[4], size_t phase) {
    uint8_t m[8];
    for (size_t i = 0; i < 8; i++)
        m[i] = mask[(phase + i) & 3];
    uint64_t word;
    memcpy(&word, m, 8); /* the mask from `phase` on, twice: same byte order as the data */
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, data + i, 8);
        v ^= word;
        memcpy(data + i, &v, 8);
    }
    for (; i < len; i++)
        data[i] ^= m[i & 7];
}

void tf_ws_parser_init(tf_ws_parser *p, uint64_t max_message) {
    memset(p, 0, sizeof *p);
    p->max_message = max_message;
}

static int violation(tf_ws_parser *p, int code, const char *why) {
    p->close_code = code;
    p->error = why;
    return TF_WS_ERROR;
}

/* A frame's header, checked by itself. */
typedef struct {
    int fin, opcode;
    uint64_t len;      /* payload */
    size_t header_len; /* with the mask */
    const uint8_t *mask;
} frame_head;

/* Reads the header at b[0..avail): 1 when it is all there, 0 when it is not
 * yet, TF_WS_ERROR on a rule it breaks (RFC 6455 section 5.2). */
static int read_head(tf_ws_parser *p, const uint8_t *b, size_t avail, frame_head *fh) {
    if (avail < 2)
        return 0;
    fh->fin = b[0] >> 7;
    fh->opcode = b[0] & 0x0F;
    if (b[0] & 0x70)
        return violation(p, TF_WS_CLOSE_PROTOCOL, "reserved bits set (no extension negotiated)");
    int control = fh->opcode & 0x8;
    if (fh->opcode > TF_WS_OP_BINARY && (fh->opcode < TF_WS_OP_CLOSE || fh->opcode > TF_WS_OP_PONG))
        return violation(p, TF_WS_CLOSE_PROTOCOL, "unknown opcode");
    if (!(b[1] & 0x80))
        return violation(p, TF_WS_CLOSE_PROTOCOL, "unmasked frame from the client");
    uint64_t len = b[1] & 0x7F;
    size_t ext = len == 126 ? 2 : len == 127 ? 8 : 0;
    if (control && (!fh->fin || len > TF_WS_MAX_CONTROL))
        return violation(p, TF_WS_CLOSE_PROTOCOL,
                         fh->fin ? "control frame longer than 125 bytes" : "fragmented control frame");
    if (!control && fh->opcode == TF_WS_OP_CONT && !p->msg_opcode)
        return violation(p, TF_WS_CLOSE_PROTOCOL, "continuation without a message");
    if (!control && fh->opcode != TF_WS_OP_CONT && p->msg_opcode)
        return violation(p, TF_WS_CLOSE_PROTOCOL, "new message inside a fragmented one");
    if (avail < 2 + ext + 4)
        return 0;
    if (ext) {
        len = 0;
        for (size_t i = 0; i < ext; i++)
            len = len << 8 | b[2 + i];
        if (len >> 63)
            return violation(p, TF_WS_CLOSE_PROTOCOL, "payload length with the top bit set");
    }
    if (!control && len > p->max_message - p->kept)
        return violation(p, TF_WS_CLOSE_TOO_BIG, "message above the maximum size");
    if (len > SIZE_MAX / 4) /* could not be held in memory (a 32-bit build, "unlimited") */
        return violation(p, TF_WS_CLOSE_TOO_BIG, "frame larger than memory");
    fh->len = len;
    fh->header_len = 2 + ext + 4;
    fh->mask = b + 2 + ext;
    return 1;
}

/* A close frame's payload: code, then a UTF-8 reason (RFC 6455 section 5.5.1). */
static int close_event(tf_ws_parser *p, const char *data, size_t len, tf_ws_event *ev) {
    ev->close_code = TF_WS_CLOSE_NO_STATUS;
    ev->reason = data;
    ev->reason_len = 0;
    if (len == 1)
        return violation(p, TF_WS_CLOSE_PROTOCOL, "close payload of one byte");
    if (len >= 2) {
        int code = (uint8_t)data[0] << 8 | (uint8_t)data[1];
        if (!tf_ws_close_code_valid(code))
            return violation(p, TF_WS_CLOSE_PROTOCOL, "invalid close code");
        if (!tf_utf8_valid(data + 2, len - 2))
            return violation(p, TF_WS_CLOSE_INVALID_DATA, "close reason is not UTF-8");
        ev->close_code = code;
        ev->reason = data + 2;
        ev->reason_len = len - 2;
    }
    p->closed = 1;
    return TF_WS_EVENT;
}

/* A data frame, unmasked at buf[at..at+n): joined to the open message at
 * buf[0..kept); returns TF_WS_EVENT when it ends the message, 0 when more
 * fragments follow. */
static int data_frame(tf_ws_parser *p, char *buf, size_t at, size_t n, const frame_head *fh,
                      tf_ws_event *ev) {
    int opcode = fh->opcode == TF_WS_OP_CONT ? p->msg_opcode : fh->opcode;
    if (opcode == TF_WS_OP_TEXT &&
        tf_utf8_feed(&p->utf8, (const uint8_t *)buf + at, n) < 0)
        return violation(p, TF_WS_CLOSE_INVALID_DATA, "text message is not UTF-8");
    if (fh->fin && p->kept == 0) { /* a whole message in one frame: left where it is */
        ev->data = buf + at;
        ev->len = n;
    } else {
        memmove(buf + p->kept, buf + at, n);
        p->kept += n;
        ev->data = buf;
        ev->len = p->kept;
    }
    if (!fh->fin) {
        p->msg_opcode = opcode;
        return 0;
    }
    if (opcode == TF_WS_OP_TEXT && p->utf8.need)
        return violation(p, TF_WS_CLOSE_INVALID_DATA, "text message ends inside a character");
    ev->opcode = opcode;
    p->kept = 0;
    p->msg_opcode = 0;
    memset(&p->utf8, 0, sizeof p->utf8);
    return TF_WS_EVENT;
}

/* Drops the consumed bytes buf[kept..pos), shifting the unparsed rest down. */
static void compact(tf_ws_parser *p, char *buf, size_t *len) {
    if (p->pos > p->kept) {
        memmove(buf + p->kept, buf + p->pos, *len - p->pos);
        *len -= p->pos - p->kept;
        p->pos = p->kept;
    }
}

int tf_ws_parse(tf_ws_parser *p, char *buf, size_t *len, tf_ws_event *ev) {
    p->need = 0;
    if (p->closed) {
        *len = 0;
        return TF_WS_INCOMPLETE;
    }
    for (;;) {
        frame_head fh;
        size_t avail = *len - p->pos;
        int r = read_head(p, (const uint8_t *)buf + p->pos, avail, &fh);
        if (r < 0)
            return r;
        if (r == 1 && fh.len > avail - fh.header_len) {
            r = 0;
            p->need = p->kept + fh.header_len + (size_t)fh.len; /* after the compaction below */
        }
        if (r == 0) {
            compact(p, buf, len);
            return TF_WS_INCOMPLETE;
        }
        size_t at = p->pos + fh.header_len, n = (size_t)fh.len;
        tf_ws_unmask((uint8_t *)buf + at, n, fh.mask, 0);
        p->pos = at + n;
        memset(ev, 0, sizeof *ev);
        if (fh.opcode & 0x8) {
            ev->opcode = fh.opcode;
            ev->data = buf + at;
            ev->len = n;
            return fh.opcode == TF_WS_OP_CLOSE ? close_event(p, buf + at, n, ev) : TF_WS_EVENT;
        }
        r = data_frame(p, buf, at, n, &fh, ev);
        if (r != 0)
            return r;
    }
}

/* =========================================================== frames out */

size_t tf_ws_frame_header(uint8_t out[TF_WS_MAX_HEADER], int opcode, int fin, uint64_t payload_len) {
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
    if (payload_len <= 125) {
        out[1] = (uint8_t)payload_len;
        return 2;
    }
    if (payload_len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
    return 10;
}

size_t tf_ws_close_frame(uint8_t out[TF_WS_MAX_CLOSE_FRAME], int code, const char *reason,
                         size_t reason_len) {
    size_t payload = 0;
    if (code) {
        if (reason_len > TF_WS_MAX_CONTROL - 2) {
            reason_len = TF_WS_MAX_CONTROL - 2;
            while (reason_len > 0 && ((uint8_t)reason[reason_len] & 0xC0) == 0x80)
                reason_len--; /* not inside a character: back to its first byte */
        }
        out[2] = (uint8_t)(code >> 8);
        out[3] = (uint8_t)code;
        if (reason_len)
            memcpy(out + 4, reason, reason_len);
        payload = 2 + reason_len;
    }
    return tf_ws_frame_header(out, TF_WS_OP_CLOSE, 1, payload) + payload;
}
