/* FastCGI records (the FastCGI 1.0 specification): an encoder for what a web
 * server sends (BEGIN_REQUEST, PARAMS with name-value pairs, STDIN,
 * ABORT_REQUEST) and an incremental decoder for what an application answers
 * (STDOUT, STDERR, END_REQUEST ...), in the house parser style: no
 * allocation, views into the caller's buffer, a small caller-owned state as
 * http_chunked keeps for chunked bodies. */
#ifndef FERRY_FCGI_RECORD_H
#define FERRY_FCGI_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

#define FCGI_VERSION_1 1
#define FCGI_HEADER_LEN 8
/* A record's content is at most this long (a 16-bit length). */
#define FCGI_CONTENT_MAX 65535
/* The request id ferry uses: one request per connection. */
#define FCGI_REQUEST_ID 1

enum fcgi_type {
    FCGI_BEGIN_REQUEST = 1,
    FCGI_ABORT_REQUEST = 2,
    FCGI_END_REQUEST = 3,
    FCGI_PARAMS = 4,
    FCGI_STDIN = 5,
    FCGI_STDOUT = 6,
    FCGI_STDERR = 7,
    FCGI_DATA = 8,
    FCGI_GET_VALUES = 9,
    FCGI_GET_VALUES_RESULT = 10,
    FCGI_UNKNOWN_TYPE = 11,
};

enum fcgi_role { FCGI_RESPONDER = 1, FCGI_AUTHORIZER = 2, FCGI_FILTER = 3 };

/* BEGIN_REQUEST flags. */
#define FCGI_KEEP_CONN 1

enum fcgi_protocol_status {
    FCGI_REQUEST_COMPLETE = 0,
    FCGI_CANT_MPX_CONN = 1,
    FCGI_OVERLOADED = 2,
    FCGI_UNKNOWN_ROLE = 3,
};

/* ---- encoding (appends to a struct buf; -ENOBUFS past its maximum, the
 * buffer then unchanged) ---- */

/** Append a BEGIN_REQUEST record for role with flags (FCGI_KEEP_CONN or 0).
 * Returns 0 or -ENOBUFS. */
int fcgi_encode_begin(struct buf *out, uint16_t id, uint16_t role, uint8_t flags);

/** Append (p, len) as records of type (PARAMS, STDIN, STDOUT, STDERR, DATA),
 * split at FCGI_CONTENT_MAX and padded to a multiple of 8 bytes. len 0
 * appends the empty record that ends the stream. Returns 0 or -ENOBUFS (then
 * nothing was appended). */
int fcgi_encode_stream(struct buf *out, uint8_t type, uint16_t id, const void *p, size_t len);

/** Append an ABORT_REQUEST record. Returns 0 or -ENOBUFS. */
int fcgi_encode_abort(struct buf *out, uint16_t id);

/** Append an END_REQUEST record (what an application sends; for tests and
 * test servers). Returns 0 or -ENOBUFS. */
int fcgi_encode_end(struct buf *out, uint16_t id, uint32_t app_status, uint8_t protocol_status);

/** Append one name-value pair in the PARAMS encoding (lengths below 128 in
 * one byte, others in four with the top bit set) to out: the content of
 * PARAMS records, not a record. Returns 0, -EINVAL when a length does not
 * fit in 31 bits, or -ENOBUFS. */
int fcgi_nv_append(struct buf *out, const char *name, size_t nlen, const char *value, size_t vlen);

/** Parse the name-value pair at the front of (p, len): views into p.
 * Returns the bytes it used, -2 when the pair is incomplete, -1 when a
 * 4-byte length is above 2^31 - 1. Pure; any thread. */
long fcgi_nv_parse(const char *p, size_t len, const char **name, size_t *nlen, const char **value,
                   size_t *vlen);

/* ---- decoding ---- */

/** Caller-owned decoder state; fcgi_decoder_init() sets it up. */
struct fcgi_decoder {
    int state;
    uint8_t header[FCGI_HEADER_LEN]; /* the record header being read */
    size_t header_len;
    uint8_t type;
    uint16_t request_id;
    size_t content_left; /* content bytes of the current record still to come */
    size_t padding_left;
    uint8_t small[8]; /* END_REQUEST and UNKNOWN_TYPE bodies, collected */
    size_t small_len;
};

/* What fcgi_decode() found. */
struct fcgi_piece {
    uint8_t type; /* enum fcgi_type; 0: nothing complete yet */
    uint16_t request_id;
    /* STDOUT, STDERR, DATA, GET_VALUES_RESULT: a piece of the record's content
     * (a view into the input), possibly empty. end_of_stream is set for the
     * empty record that closes the stream. */
    const char *p;
    size_t len;
    bool end_of_stream;
    /* END_REQUEST: the application's exit status and the protocol status. */
    uint32_t app_status;
    uint8_t protocol_status;
    /* UNKNOWN_TYPE: the type the application did not understand. */
    uint8_t unknown_type;
};

/** Reset d to expect a record header. */
void fcgi_decoder_init(struct fcgi_decoder *d);

/**
 * Decode the next piece of (buf, len), which continues where the previous
 * call stopped (each input byte is fed exactly once). Returns the number of
 * bytes used (at least 1 when len > 0) and fills out: out->type == 0 when
 * those bytes completed nothing the caller must see (part of a header,
 * padding, part of an END_REQUEST body); otherwise one piece, and the caller
 * calls again with the rest. Stream content comes in pieces as it arrives
 * (never more than len), so nothing is buffered here.
 * Returns -1 for input that is not FastCGI from an application: a version
 * other than 1, a record type a web server never receives (BEGIN_REQUEST,
 * ABORT_REQUEST, PARAMS, STDIN, GET_VALUES) or above 11, an END_REQUEST whose
 * content is not 8 bytes or an UNKNOWN_TYPE whose content is not 8 bytes.
 * Further calls then keep returning -1. Pure; any thread.
 */
long fcgi_decode(struct fcgi_decoder *d, const char *buf, size_t len, struct fcgi_piece *out);

#endif
