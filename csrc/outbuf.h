/* outbuf.h — a bounded output cursor: appends into caller-owned memory and records overflow. */
#ifndef TF_OUTBUF_H
#define TF_OUTBUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Writes past the end are cut at the end and set overflow; the caller
 * decides what an overflow means (the response head fails, a log line is
 * kept cut). Once full, every further write adds nothing. */
typedef struct {
    char *p;
    char *end;
    int overflow;
} tf_out;

static inline tf_out tf_out_init(char *buf, size_t cap) {
    tf_out o = {buf, buf + cap, 0};
    return o;
}

static inline void tf_out_put(tf_out *o, const char *s, size_t n) {
    size_t room = (size_t)(o->end - o->p);
    if (n > room) {
        n = room;
        o->overflow = 1;
    }
    memcpy(o->p, s, n);
    o->p += n;
}

static inline void tf_out_puts(tf_out *o, const char *s) { tf_out_put(o, s, strlen(s)); }

static inline void tf_out_putc(tf_out *o, char ch) {
    if (o->p < o->end)
        *o->p++ = ch;
    else
        o->overflow = 1;
}

/* Decimal digits of v. */
static inline void tf_out_put_uint(tf_out *o, uint64_t v) {
    char digits[20];
    size_t i = sizeof(digits);
    do {
        digits[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    tf_out_put(o, digits + i, sizeof(digits) - i);
}

/* Bytes written so far from buf (as given to tf_out_init). */
static inline size_t tf_out_len(const tf_out *o, const char *buf) { return (size_t)(o->p - buf); }

#endif
