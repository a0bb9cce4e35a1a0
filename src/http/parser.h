/* Strict HTTP/1.x request-head parser (RFC 9112), picohttpparser's contract:
 * stateless, allocation-free, (ptr, len) views into the caller's buffer. */
#ifndef FERRY_HTTP_PARSER_H
#define FERRY_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEADERS 100

enum http_method {
    HTTP_M_OTHER = 0,
    HTTP_M_GET,
    HTTP_M_HEAD,
    HTTP_M_POST,
    HTTP_M_PUT,
    HTTP_M_DELETE,
    HTTP_M_OPTIONS,
    HTTP_M_PATCH,
    HTTP_M_CONNECT,
    HTTP_M_TRACE,
};

struct http_str {
    const char *p; /* NULL when absent */
    size_t len;
};

struct http_header {
    struct http_str name;
    struct http_str value; /* leading/trailing OWS removed */
};

struct http_limits {
    size_t max_header_size; /* whole head, request line included: beyond it 431 */
    size_t max_uri_size;    /* request-target: beyond it 414 */
};

struct http_request {
    struct http_str method;
    int method_id;             /* enum http_method */
    struct http_str target;    /* the raw request-target */
    struct http_str path;      /* path part (absolute-form: after the authority), no query */
    struct http_str query;     /* after '?', without it; p == NULL when no '?' */
    struct http_str authority; /* absolute-form authority, else p == NULL */
    int minor_version;         /* 0 or 1 (HTTP/1.0, HTTP/1.1) */
    struct http_header headers[HTTP_MAX_HEADERS];
    size_t num_headers;

    /* Derived from the headers; each names the header's value or p == NULL. */
    struct http_str host;
    struct http_str if_none_match;
    struct http_str if_modified_since;
    struct http_str if_range;
    struct http_str range;
    struct http_str user_agent;
    struct http_str referer;
    struct http_str accept;
    struct http_str cookie;
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding: chunked */
    bool keep_alive;        /* 1.1 unless "Connection: close"; 1.0 only with keep-alive */
    bool expect_continue;   /* Expect: 100-continue */

    int error_status; /* set when the parser returns -1: 400, 414, 431, 501 or 505 */
};

/**
 * Parse the request head in (buf, len).
 *
 * Returns the number of bytes of the head (through the blank line) on success,
 * -2 when the head is incomplete and may still become valid, -1 when it is
 * invalid (req->error_status says which status to answer; the connection must
 * then be closed). The request views point into buf. Rejected with 400: both
 * Content-Length and Transfer-Encoding, differing or malformed Content-Length
 * (a list of identical values is accepted), a Transfer-Encoding other than a
 * lone "chunked" (501 for an unknown coding), obs-fold, whitespace between a
 * field name and the colon, control characters and bare CR anywhere, a missing
 * or repeated Host in HTTP/1.1, invalid tokens, more than HTTP_MAX_HEADERS
 * fields. 414 when the request-target exceeds max_uri_size (detected before the
 * head is complete), 431 when the head exceeds max_header_size, 505 for a
 * version other than HTTP/1.0 or 1.1. Empty lines (CRLF) before the request line
 * are skipped as RFC 9112 2.2 allows. Any thread; no allocation.
 */
int http_parse_request(const char *buf, size_t len, const struct http_limits *lim,
                       struct http_request *req);

/** Case-insensitive comparison of a view with a NUL-terminated lower-case token. */
bool http_str_eq_ci(struct http_str s, const char *lower);

/** Find a header by lower-case name; returns its value or {NULL, 0}. */
struct http_str http_find_header(const struct http_request *req, const char *lower_name);

/**
 * Incremental decoder for a chunked request body (RFC 9112 7.1).
 * Caller-owned state, zeroed by http_chunked_init(). http_chunked_decode()
 * decodes in place: the data bytes of (buf, *len) are moved to its front and
 * *len becomes their count. Returns 1 when the last chunk and trailers are
 * complete (bytes after the body are left after the data... see the .c), 0 when
 * more input is needed, -1 on a malformed body (chunk-size overflow, bad
 * extension, bare CR/LF, oversized trailers).
 */
struct http_chunked {
    int state;
    uint64_t remaining; /* data bytes left in the current chunk */
    size_t trailer_bytes;
    size_t consumed_after; /* on return 1: bytes of buf after the body's end */
};
void http_chunked_init(struct http_chunked *c);
int http_chunked_decode(struct http_chunked *c, char *buf, size_t *len);

#endif
