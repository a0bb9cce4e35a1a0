/* Request body reader: Content-Length or chunked framing, max_body_size and the
 * Expect: 100-continue decision, for one request. I/O-free: the connection reads,
 * feeds the bytes that follow the head and acts on the result. */
#ifndef FERRY_HTTP_BODY_H
#define FERRY_HTTP_BODY_H

#include "http/parser.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Return values of http_body_init() and http_body_feed(). */
enum http_body_result {
    HTTP_BODY_ERROR = -1, /* answer b->error_status (400 or 413) and close */
    HTTP_BODY_MORE = 0,   /* the body continues: feed more */
    HTTP_BODY_DONE = 1,   /* the body is complete */
};

/**
 * State of one request body. Caller-owned (e.g. inside the connection), set up
 * by http_body_init(); nothing to release. The fields are read-only for the
 * caller.
 */
struct http_body {
    struct http_chunked chunked; /* used when is_chunked */
    uint64_t max_size;           /* max_body_size */
    uint64_t remaining;          /* Content-Length: body bytes still to come */
    uint64_t received;           /* body data bytes delivered so far (decoded) */
    size_t consumed;             /* input bytes the last feed used */
    size_t consumed_after;       /* on HTTP_BODY_DONE: input bytes after the body */
    int result;                  /* enum http_body_result of the last init/feed */
    int error_status;            /* on HTTP_BODY_ERROR: 400 or 413 */
    bool is_chunked;
    bool expect_continue; /* HTTP/1.1 client sent Expect: 100-continue */
    bool started;         /* at least one input byte was fed */
    bool continue_sent;   /* http_body_mark_continue_sent() was called */
};

/**
 * Set up b for the body of req (a head parsed by http_parse_request() with
 * success), allowing at most max_size bytes of body data. req is only read
 * during the call; b keeps no pointer into it.
 *
 * Returns HTTP_BODY_DONE when there is no body (no Content-Length and not
 * chunked, or Content-Length: 0), HTTP_BODY_MORE when a body is to be read,
 * and HTTP_BODY_ERROR with b->error_status = 413 when Content-Length exceeds
 * max_size: the connection answers 413 without reading the body and without a
 * 100 Continue. The same value is in b->result. Any thread; no allocation.
 */
int http_body_init(struct http_body *b, const struct http_request *req, uint64_t max_size);

/**
 * Feed the next len bytes that follow the head (in pieces of any size, each byte
 * once). Body data is decoded in place: on return it is at the front of buf and
 * *len is its length (0 is possible). b->consumed says how many input bytes
 * belong to the body, b->received counts the data delivered so far.
 *  - HTTP_BODY_MORE: all len input bytes were consumed.
 *  - HTTP_BODY_DONE: the body ended in this piece (or earlier: then *len = 0 and
 *    nothing is consumed); the b->consumed_after bytes at buf + b->consumed,
 *    untouched, come after the body (the next pipelined request).
 *  - HTTP_BODY_ERROR: b->error_status is 400 (malformed chunked framing, see
 *    http_chunked_decode()) or 413 (chunked data summed past max_size, or
 *    Content-Length refused by http_body_init()); buf and *len are then
 *    unspecified and every further call fails the same way.
 * Any thread (one at a time per b); no allocation; buf stays the caller's.
 */
int http_body_feed(struct http_body *b, char *buf, size_t *len);

/**
 * Whether a "100 Continue" interim response is due now: the client is HTTP/1.1
 * and sent Expect: 100-continue, a body is expected and was not refused, no
 * body byte has arrived yet and it was not sent already. The connection decides
 * when to send it (typically when it starts reading the body) and then calls
 * http_body_mark_continue_sent(). Any thread; no allocation.
 */
bool http_body_continue_due(const struct http_body *b);

/** Record that 100 Continue was sent (or is queued), so it is not due again. */
void http_body_mark_continue_sent(struct http_body *b);

#endif
