/* http.h — the parser's C-only half: chunked body decoding and the response-head writer. */
#ifndef TF_HTTP_H
#define TF_HTTP_H

#include "tailfast.h"

#include <time.h>

#pragma GCC visibility push(hidden) /* direct calls inside the extension, no PLT */

/* Incremental in-place decoder of a chunked body. Zero it before the first call. */
typedef struct {
    int state;
    uint64_t chunk_remaining;
    size_t aux_bytes; /* bytes spent on chunk extensions / trailers so far */
    int hex_digits;
} tf_chunked_decoder;

/* Decodes buf[0..*len) in place: on return the decoded bytes are at
 * buf[0..*len) (the new *len). Returns TF_PARSE_INCOMPLETE when the body needs
 * more data (call again with the next bytes), TF_PARSE_ERROR on a malformed
 * body, or, when the body is complete, the number n >= 0 of bytes that follow
 * it (left at buf[*len .. *len + n), e.g. a pipelined request). */
ssize_t tf_chunked_decode(tf_chunked_decoder *dec, char *buf, size_t *len);

/* Reason phrase of a status code ("Unknown" for codes it does not know). */
const char *tf_status_reason(int status);

/* Response head flags. */
#define TF_HEAD_KEEP_ALIVE 1 /* else "Connection: close" is written */
#define TF_HEAD_CHUNKED 2    /* "Transfer-Encoding: chunked" instead of a length */

/* Writes "HTTP/1.1 <status> <reason>", Server, Date, the given headers,
 * Content-Length (when content_length >= 0), Connection (when the keep-alive
 * choice differs from the version's default) and the blank line into out.
 * Returns the head's length, or -1 when it does not fit in cap bytes.
 * Header names and values must already be validated (no CR/LF). */
ssize_t tf_write_response_head(char *out, size_t cap, int status,
                               const tf_header *headers, size_t num_headers,
                               int64_t content_length, int flags,
                               int version_minor);

/* IMF-fixdate of now ("Sun, 06 Nov 1994 08:49:37 GMT", 29 bytes), cached per second. */
const char *tf_http_date(time_t now);

#pragma GCC visibility pop

#endif
