/* websocket.h — the RFC 6455 codec: upgrade check and accept key, client-frame parser with message assembly, server-frame encoder. */
#ifndef TF_WEBSOCKET_H
#define TF_WEBSOCKET_H

/* A leaf like the HTTP parser: it knows nothing of connections, sockets or
 * Python and never allocates. The caller owns every buffer. */

#include "tailfast.h"

#pragma GCC visibility push(hidden) /* direct calls inside the extension, no PLT */

/* ------------------------------------------------------------- constants */

enum {
    TF_WS_OP_CONT = 0x0,
    TF_WS_OP_TEXT = 0x1,
    TF_WS_OP_BINARY = 0x2,
    TF_WS_OP_CLOSE = 0x8,
    TF_WS_OP_PING = 0x9,
    TF_WS_OP_PONG = 0xA
};

/* Close codes (RFC 6455 section 7.4.1). 1005 and 1006 are never sent. */
enum {
    TF_WS_CLOSE_NORMAL = 1000,
    TF_WS_CLOSE_GOING_AWAY = 1001,   /* the server drains (TERM, HUP, recycle) */
    TF_WS_CLOSE_PROTOCOL = 1002,
    TF_WS_CLOSE_UNSUPPORTED = 1003,
    TF_WS_CLOSE_NO_STATUS = 1005,    /* a close frame without a code (reported, not sent) */
    TF_WS_CLOSE_ABNORMAL = 1006,     /* no close frame at all (reported, not sent) */
    TF_WS_CLOSE_INVALID_DATA = 1007, /* text that is not UTF-8 */
    TF_WS_CLOSE_POLICY = 1008,
    TF_WS_CLOSE_TOO_BIG = 1009,      /* a message above the maximum size */
    TF_WS_CLOSE_EXTENSION = 1010,
    TF_WS_CLOSE_INTERNAL = 1011
};

#define TF_WS_ACCEPT_LEN 28     /* base64 of a SHA-1 digest */
#define TF_WS_MAX_HEADER 10     /* a server frame's header: 2 + 8 bytes of length */
#define TF_WS_MAX_CONTROL 125   /* payload of a control frame */
#define TF_WS_MAX_CLOSE_FRAME (2 + TF_WS_MAX_CONTROL)

/* tf_ws_parse's results. */
#define TF_WS_EVENT 1
#define TF_WS_ERROR (-1)
#define TF_WS_INCOMPLETE (-2)

/* ------------------------------------------------------------- handshake */

typedef struct {
    const char *s;
    size_t len;
} tf_ws_token;

/* 1 when the request asks to switch to WebSocket (an Upgrade field with the
 * token "websocket", any case), else 0: then it is an ordinary request. */
int tf_ws_is_upgrade(const tf_request *req);

/* Checks an upgrade request (RFC 6455 section 4.2.1): GET, HTTP/1.1,
 * Upgrade: websocket, Connection with the token "upgrade", exactly one
 * Sec-WebSocket-Version: 13 and exactly one Sec-WebSocket-Key that is the
 * base64 of 16 bytes, Sec-WebSocket-Protocol (if any) a list of tokens.
 * Returns 0 with accept[0..28) set to the Sec-WebSocket-Accept value and
 * accept[28] = '\0'; otherwise the status to answer: 400, or 426 for a
 * version other than 13 (the answer then carries Sec-WebSocket-Version: 13).
 * *why (when why is not NULL) names the failed rule, a static string. */
int tf_ws_handshake(const tf_request *req, char accept[TF_WS_ACCEPT_LEN + 1], const char **why);

/* The subprotocols offered: every Sec-WebSocket-Protocol field's
 * comma-separated tokens in order (empty list elements skipped). Stores the
 * first cap of them in out and returns how many there are, or -1 when an
 * element is not a token. Choosing one is the application's job. */
ssize_t tf_ws_subprotocols(const tf_request *req, tf_ws_token *out, size_t cap);

/* Writes the 101 answer: status line, "Upgrade: websocket",
 * "Connection: Upgrade", Sec-WebSocket-Accept, the given headers (the
 * application's, e.g. the chosen Sec-WebSocket-Protocol; names and values
 * already validated: no CR/LF) and the blank line. Returns its length, or -1
 * when it does not fit in cap bytes. */
ssize_t tf_ws_write_accept(char *out, size_t cap, const char accept[TF_WS_ACCEPT_LEN],
                           const tf_header *headers, size_t num_headers);

/* Sec-WebSocket-Accept for a key as sent (the header value): base64 of the
 * SHA-1 of key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11". */
void tf_ws_accept_key(const char *key, size_t key_len, char accept[TF_WS_ACCEPT_LEN + 1]);

/* ----------------------------------------------- SHA-1 and base64 (FIPS 180-4, RFC 4648) */

typedef struct {
    uint32_t h[5];
    uint64_t total;     /* bytes hashed */
    uint8_t block[64];
    size_t used;        /* bytes in block */
} tf_sha1_ctx;

void tf_sha1_init(tf_sha1_ctx *ctx);
void tf_sha1_update(tf_sha1_ctx *ctx, const void *data, size_t len);
void tf_sha1_final(tf_sha1_ctx *ctx, uint8_t digest[20]);

/* Writes base64 (with '=' padding) of in[0..len) into out, 4 * ceil(len / 3)
 * bytes, no NUL; returns that length. */
size_t tf_base64_encode(const uint8_t *in, size_t len, char *out);
/* Decodes canonical padded base64 (length a multiple of 4, no whitespace,
 * zero pad bits). Returns the decoded length, or -1 when malformed or when
 * more than cap bytes would be written. */
ssize_t tf_base64_decode(const char *in, size_t len, uint8_t *out, size_t cap);

/* ------------------------------------------------------------------ UTF-8 */

/* Incremental UTF-8 validator (RFC 3629: no overlongs, no surrogates, at
 * most U+10FFFF): a code point may be split across calls. Zero it to start. */
typedef struct {
    uint8_t need; /* continuation bytes still expected */
    uint8_t lo;   /* bounds of the next continuation byte */
    uint8_t hi;
} tf_utf8_state;

/* 0 while the bytes so far can start valid UTF-8, -1 once they cannot. */
int tf_utf8_feed(tf_utf8_state *st, const uint8_t *s, size_t len);
/* 1 when s[0..len) is complete, valid UTF-8. */
int tf_utf8_valid(const char *s, size_t len);

/* ------------------------------------------------------ client frames in */

/* What tf_ws_parse hands out. Pointers are into the caller's buffer, valid
 * until the next tf_ws_parse call (or until the buffer moves). */
typedef struct {
    int opcode;        /* TEXT or BINARY: a whole message; CLOSE, PING, PONG */
    const char *data;  /* the payload, unmasked (for a message: all fragments joined) */
    size_t len;
    int close_code;    /* CLOSE: the code, TF_WS_CLOSE_NO_STATUS when the frame had none */
    const char *reason; /* CLOSE: the reason (UTF-8), inside data */
    size_t reason_len;
} tf_ws_event;

/* Parser and message assembler for one connection's frames from a client.
 * Set it up with tf_ws_parser_init; the fields are its own, except the
 * results after a call (close_code, error, need). */
typedef struct {
    uint64_t max_message; /* largest message (all fragments) accepted: 1009 beyond */
    size_t kept;          /* bytes of the open fragmented message, at buf[0..kept) */
    size_t pos;           /* where the next frame starts in buf */
    int msg_opcode;       /* TEXT or BINARY while a fragmented message is open, else 0 */
    int closed;           /* a close frame was handed out: nothing more is parsed */
    tf_utf8_state utf8;   /* of the open text message */
    /* results */
    int close_code;       /* after TF_WS_ERROR: 1002, 1007 or 1009, to close with */
    const char *error;    /* after TF_WS_ERROR: which rule (a static string) */
    size_t need;          /* after TF_WS_INCOMPLETE: bytes buf must hold to finish the
                             next frame, when its header is in (else 0) */
} tf_ws_parser;

void tf_ws_parser_init(tf_ws_parser *p, uint64_t max_message);

/* Parses the next frame(s) of buf[0..*len), the connection's input, whose
 * bytes the caller appends at buf + *len as they arrive. Returns:
 *   TF_WS_EVENT       *ev holds a whole message (fragments joined, text
 *                     checked as UTF-8), a ping, a pong or a close;
 *   TF_WS_INCOMPLETE  more bytes are needed (p->need: how many buf must hold,
 *                     when known); everything parsed has been consumed;
 *   TF_WS_ERROR       a protocol violation: send a close with p->close_code
 *                     and close the connection.
 * The parser moves bytes inside buf[0..*len) and lowers *len as it consumes
 * them (the fragments of an open message are kept joined at the front), so
 * the caller only ever appends after *len; between calls it may move the
 * whole buffer, never bytes inside it. After a CLOSE event the parser is
 * done: later calls drop the input and return TF_WS_INCOMPLETE. Cost: each
 * byte is unmasked once and moved at most twice (once as a fragment, once
 * when a partial frame is shifted down), whatever the split. */
int tf_ws_parse(tf_ws_parser *p, char *buf, size_t *len, tf_ws_event *ev);

/* Whether a close code may appear in a close frame (1000-1003, 1007-1011,
 * 3000-4999). */
int tf_ws_close_code_valid(int code);

/* XORs data[0..len) with the 4-byte mask, starting at mask byte `phase`
 * (0..3), a word at a time. */
void tf_ws_unmask(uint8_t *data, size_t len, const uint8_t mask[4], size_t phase);

/* ------------------------------------------------------ server frames out */

/* Writes a server frame's header (unmasked; FIN when fin) for a payload of
 * payload_len bytes into out; returns its length: 2, 4 or 10. The payload
 * is sent after it as it is (header and payload in one writev). */
size_t tf_ws_frame_header(uint8_t out[TF_WS_MAX_HEADER], int opcode, int fin, uint64_t payload_len);

/* Writes a whole close frame: code (0: none, then no reason either) and the
 * reason, cut to fit 123 bytes at a UTF-8 character boundary. Returns its
 * length (at most TF_WS_MAX_CLOSE_FRAME). */
size_t tf_ws_close_frame(uint8_t out[TF_WS_MAX_CLOSE_FRAME], int code, const char *reason,
                         size_t reason_len);

#pragma GCC visibility pop

#endif
