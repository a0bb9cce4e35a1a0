/* Strict HTTP/1.x request-head parser (RFC 9112), picohttpparser's contract:
 * stateless, allocation-free, (ptr, len) views into the caller's buffer. */
#ifndef FERRY_HTTP_PARSER_H
#define FERRY_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEADERS 100
/* Empty lines (CRLF) tolerated before the request line (RFC 9112 2.2). */
#define HTTP_MAX_LEADING_EMPTY_LINES 4
/* Chunked bodies: at most this many hex digits in a chunk-size (leading zeros
 * count), this many bytes of chunk extensions on one chunk line (from the first
 * byte after the size to the CR) and in the whole body (so that tiny chunks with
 * big extensions cannot make the body cost far more than its data), and this
 * many bytes of trailer fields (their lines with CRLF, not the final CRLF). */
#define HTTP_CHUNK_SIZE_MAX_DIGITS 16
#define HTTP_CHUNK_EXT_MAX 4096
#define HTTP_CHUNK_EXT_TOTAL_MAX 65536
#define HTTP_CHUNK_TRAILER_MAX 8192

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
    int method_id;          /* enum http_method */
    struct http_str target; /* the raw request-target */
    /* path: origin-form: the target up to '?'; absolute-form: after the authority, up to
     * '?' ("/" from static storage when empty); asterisk-form (OPTIONS): "*";
     * authority-form (CONNECT): p == NULL. Not percent-decoded. */
    struct http_str path;
    struct http_str query; /* after '?', without it; p == NULL when no '?' */
    /* absolute-form and authority-form (CONNECT): the authority (host[:port]), else
     * p == NULL. When set, it overrides Host (RFC 9112 3.2.2). */
    struct http_str authority;
    int minor_version; /* 0 or 1 (HTTP/1.0, HTTP/1.1) */
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
    bool expect_continue;   /* Expect: 100-continue (HTTP/1.1 only, RFC 9110 10.1.1) */

    int error_status; /* set when the parser returns -1: 400, 414, 431, 501 or 505 */
};

/**
 * Parse the request head in (buf, len).
 *
 * Returns the number of bytes of the head (skipped leading empty lines, request
 * line, fields, blank line) on success; the body or the next pipelined request
 * starts there. Returns -2 when the head is incomplete and may still become
 * valid, -1 when it is invalid: req->error_status says which status to answer,
 * and the connection must then be closed. May be called again on the same
 * buffer once more bytes have arrived (it starts over; there is no state).
 * lim may be NULL for no limits. The views in req point into buf (except a
 * static "/" for an empty absolute-form path); req is overwritten on every call.
 *
 * Strict RFC 9112; rejected with 400:
 *  - anything but single SP between method, target and version; a method that
 *    is not a token; bare LF or bare CR anywhere (LF-only line ends are NOT
 *    accepted); control characters (HTAB only inside field values), DEL;
 *  - a request-target with bytes outside 0x21-0x7E, a '#', a malformed %-escape,
 *    or a form the method does not allow: origin-form ("/..."), absolute-form
 *    ("http://" or "https://" with a non-empty authority and no userinfo),
 *    asterisk-form ("*") for OPTIONS only, authority-form (host:port) for CONNECT
 *    only (and CONNECT only with it);
 *  - a malformed version (not exactly "HTTP/" DIGIT "." DIGIT); 505 for a
 *    well-formed version other than HTTP/1.0 and HTTP/1.1;
 *  - more than HTTP_MAX_LEADING_EMPTY_LINES empty lines before the request line;
 *  - a field name that is not a token, whitespace before the colon, obs-fold
 *    (a line starting with SP/HTAB, also right after the request line);
 *  - Content-Length that is not digits only, overflows int64, or has differing
 *    values across a comma list or repeated lines (identical values are
 *    accepted, RFC 9110 8.6); Content-Length together with Transfer-Encoding;
 *  - Transfer-Encoding in HTTP/1.0, empty, with chunked not last or repeated,
 *    or with parameters on chunked; 501 for other codings before chunked
 *    ("gzip, chunked"): only a lone "chunked" is implemented;
 *  - HTTP/1.1 without Host; more than one Host; a Host that is not host[:port];
 *  - a Connection value that is not a list of tokens.
 * 414 as soon as the request-target exceeds max_uri_size, even while the head
 * is incomplete. 431 when the complete head is bigger than max_header_size, when
 * len >= max_header_size without a complete head, or for more than
 * HTTP_MAX_HEADERS fields. Field values have OWS trimmed; obs-text (0x80-0xFF)
 * is allowed in them. For repeated fields other than Host, Content-Length and
 * Transfer-Encoding, the derived views name the first one. Any thread; no
 * allocation.
 */
int http_parse_request(const char *buf, size_t len, const struct http_limits *lim,
                       struct http_request *req);

/** Case-insensitive comparison of a view with a NUL-terminated lower-case
 * token. A view with p == NULL equals nothing. */
bool http_str_eq_ci(struct http_str s, const char *lower);

/** Find the first header named lower_name (lower-case; names compare
 * case-insensitively); returns its value or {NULL, 0}. */
struct http_str http_find_header(const struct http_request *req, const char *lower_name);

/**
 * Incremental decoder for a chunked request body (RFC 9112 7.1).
 *
 * Caller-owned state, set up by http_chunked_init(). Feed it the bytes that
 * follow the head, in pieces of any size, each exactly once:
 *
 *     size_t n = len;
 *     int r = http_chunked_decode(&c, buf, &n);
 *
 * It decodes in place: the body data found in (buf, len) is moved to the front
 * of buf and n becomes its length. It keeps everything it needs (a partial
 * chunk-size line, the position in the trailers) in c, so the caller never
 * keeps undecoded bytes around: c->consumed says how many input bytes it used.
 *  - Returns 0: more input is needed; all len bytes were consumed
 *    (c->consumed == len).
 *  - Returns 1: the last chunk and the trailer section are complete.
 *    c->consumed bytes of input belonged to the body; the c->consumed_after =
 *    len - c->consumed bytes at buf + c->consumed (untouched by the decoder) come
 *    after the body, e.g. a pipelined request. Further calls return 1 with n = 0
 *    and consume nothing.
 *  - Returns -1: malformed body: missing or non-hex chunk-size, more than
 *    HTTP_CHUNK_SIZE_MAX_DIGITS hex digits or a size above INT64_MAX,
 *    whitespace not followed by ';' or '=', a chunk extension that is not
 *    token[=token|quoted-string], longer than HTTP_CHUNK_EXT_MAX on one line or
 *    HTTP_CHUNK_EXT_TOTAL_MAX in the body, data not
 *    followed by CRLF, bare CR or LF, a malformed trailer field (same rules as
 *    header fields, obs-fold rejected) or trailers above HTTP_CHUNK_TRAILER_MAX.
 *    Answer 400 and close. n and buf are then unspecified; further calls return -1.
 * Trailer fields are validated and discarded. The caller enforces its own limit
 * on the total body size by summing n. Any thread; no allocation.
 */
struct http_chunked {
    int state;
    uint64_t remaining;    /* chunk-size being read, then data bytes left in the chunk */
    unsigned digits;       /* hex digits of the chunk-size read so far */
    size_t ext_bytes;      /* bytes of chunk extensions on the current line */
    size_t ext_total;      /* bytes of chunk extensions in the body so far */
    size_t trailer_bytes;  /* bytes of trailer section so far */
    size_t consumed;       /* bytes of input used by the last call */
    size_t consumed_after; /* on return 1: bytes of input after the body's end */
};

/** Reset c to expect the first chunk. */
void http_chunked_init(struct http_chunked *c);

/** Decode the next piece of a chunked body in place; see above. */
int http_chunked_decode(struct http_chunked *c, char *buf, size_t *len);

#endif
