/* Growable byte buffer with a hard maximum (curl's dynbuf habit): appending past
 * the maximum fails instead of growing, which caps headers, bodies and admin
 * messages wherever a buf is used. */
#ifndef FERRY_COMMON_BUF_H
#define FERRY_COMMON_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data; /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    size_t max; /* appending beyond this many bytes fails with -ENOBUFS */
};

/** Initialise an empty buffer (caller-owned) that may hold at most max bytes. */
void buf_init(struct buf *b, size_t max);
/** Release the memory; the buffer may be reused after buf_init(). NULL-safe. */
void buf_finish(struct buf *b);
/** Append n bytes. Returns 0, or -ENOBUFS if the result would exceed max
 * (the buffer is then unchanged). */
int buf_append(struct buf *b, const void *p, size_t n);
/** Append a NUL-terminated string. Same returns as buf_append(). */
int buf_append_str(struct buf *b, const char *s);
/** Append printf-formatted text. Same returns as buf_append(). */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** vprintf variant of buf_printf(). */
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/** Drop the first n bytes (n <= len), moving the rest to the front. */
void buf_consume(struct buf *b, size_t n);
/** Empty the buffer but keep its memory. */
void buf_reset(struct buf *b);
/** Make room for at least n more bytes; returns 0 or -ENOBUFS past max. */
int buf_reserve(struct buf *b, size_t n);

#endif
