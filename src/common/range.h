/* The Range request header for byte ranges (RFC 9110 14.1.2, 14.2), one parser
 * for static files, the offload prefix and the stores. picohttpparser-style:
 * pure, allocation-free, a (ptr, len) view of the header value. */
#ifndef FERRY_COMMON_RANGE_H
#define FERRY_COMMON_RANGE_H

#include <stddef.h>
#include <stdint.h>

/* What to answer for a Range header against a representation of a known size. */
enum range_outcome {
    /* Not a single byte range we serve: not "bytes=", malformed (signs, blanks
     * inside a number, last < first, a number above INT64_MAX, nothing around
     * the dash) or several ranges. The header is ignored and the whole
     * representation is served with 200, as RFC 9110 14.2 allows. */
    RANGE_IGNORE = 0,
    /* A single satisfiable range: answer 206 with *offset and *length. */
    RANGE_SATISFIABLE,
    /* A valid single range that selects nothing: first byte at or past the end,
     * a zero-length suffix ("bytes=-0"), or any range of an empty
     * representation. Answer 416 with "Content-Range: bytes *" "/size". */
    RANGE_UNSATISFIABLE,
};

/**
 * Parse the Range header value (p, len) against a representation of size bytes.
 * Accepted forms (unit case-insensitive, blanks allowed only after '=' and at
 * the end): "bytes=A-B" (B past the end is clamped), "bytes=A-" and the suffix
 * "bytes=-N" (the last N bytes, all of them when N >= size). *offset and
 * *length are written only for RANGE_SATISFIABLE, and then *length > 0 and
 * *offset + *length <= size. No allocation; any thread.
 */
enum range_outcome range_parse(const char *p, size_t len, uint64_t size, uint64_t *offset,
                               uint64_t *length);

#endif
