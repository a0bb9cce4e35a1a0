#include "fcgi/record.h"

#include "common/buf.h"

#include <errno.h>
#include <string.h>

/* Content per record when a stream is split: the largest multiple of 8 that
 * fits, so a full record needs no padding. */
#define STREAM_PIECE (FCGI_CONTENT_MAX & ~(size_t)7)

static void header_put(uint8_t *h, uint8_t type, uint16_t id, size_t clen, size_t plen)
{
    h[0] = FCGI_VERSION_1;
    h[1] = type;
    h[2] = (uint8_t)(id >> 8);
    h[3] = (uint8_t)id;
    h[4] = (uint8_t)(clen >> 8);
    h[5] = (uint8_t)clen;
    h[6] = (uint8_t)plen;
    h[7] = 0;
}

/* A record whose content is 8 bytes (BEGIN_REQUEST, END_REQUEST). */
static int encode_fixed(struct buf *out, uint8_t type, uint16_t id, const uint8_t body[8])
{
    uint8_t rec[FCGI_HEADER_LEN + 8];
    header_put(rec, type, id, 8, 0);
    memcpy(rec + FCGI_HEADER_LEN, body, 8);
    return buf_append(out, rec, sizeof(rec));
}

int fcgi_encode_begin(struct buf *out, uint16_t id, uint16_t role, uint8_t flags)
{
    const uint8_t body[8] = {(uint8_t)(role >> 8), (uint8_t)role, flags};
    return encode_fixed(out, FCGI_BEGIN_REQUEST, id, body);
}

int fcgi_encode_end(struct buf *out, uint16_t id, uint32_t app_status, uint8_t protocol_status)
{
    const uint8_t body[8] = {(uint8_t)(app_status >> 24), (uint8_t)(app_status >> 16),
                             (uint8_t)(app_status >> 8), (uint8_t)app_status, protocol_status};
    return encode_fixed(out, FCGI_END_REQUEST, id, body);
}

int fcgi_encode_abort(struct buf *out, uint16_t id)
{
    uint8_t h[FCGI_HEADER_LEN];
    header_put(h, FCGI_ABORT_REQUEST, id, 0, 0);
    return buf_append(out, h, sizeof(h));
}

int fcgi_encode_stream(struct buf *out, uint8_t type, uint16_t id, const void *p, size_t len)
{
    /* Reserve the whole encoding first so that a failure appends nothing. */
    size_t records = len ? (len + STREAM_PIECE - 1) / STREAM_PIECE : 1;
    size_t total = len + records * (FCGI_HEADER_LEN + 7);
    if (total < len)
        return -ENOBUFS;
    int r = buf_reserve(out, total);
    if (r < 0)
        return r;
    const char *src = p;
    do {
        size_t n = len < STREAM_PIECE ? len : STREAM_PIECE;
        size_t pad = (8 - n % 8) % 8;
        uint8_t h[FCGI_HEADER_LEN];
        header_put(h, type, id, n, pad);
        static const uint8_t zeros[8];
        buf_append(out, h, sizeof(h));
        buf_append(out, src, n);
        buf_append(out, zeros, pad);
        /* src may be NULL for the empty record: no arithmetic on it then. */
        if (n)
            src += n;
        len -= n;
    } while (len);
    return 0;
}

static size_t nv_len_size(size_t n)
{
    return n < 128 ? 1 : 4;
}

static void nv_len_put(uint8_t *p, size_t n)
{
    if (n < 128) {
        p[0] = (uint8_t)n;
        return;
    }
    p[0] = (uint8_t)(0x80 | (n >> 24));
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
}

int fcgi_nv_append(struct buf *out, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (nlen > 0x7fffffff || vlen > 0x7fffffff)
        return -EINVAL;
    uint8_t lens[8];
    size_t a = nv_len_size(nlen), b = nv_len_size(vlen);
    nv_len_put(lens, nlen);
    nv_len_put(lens + a, vlen);
    if (a + b > out->max || nlen > out->max - a - b || vlen > out->max - a - b - nlen)
        return -ENOBUFS;
    int r = buf_reserve(out, a + b + nlen + vlen);
    if (r < 0)
        return r;
    buf_append(out, lens, a + b);
    buf_append(out, name, nlen);
    buf_append(out, value, vlen);
    return 0;
}

/* One length of a pair; returns its size, -2 incomplete, -1 invalid. */
static long nv_len_get(const uint8_t *p, size_t len, size_t *out)
{
    if (len < 1)
        return -2;
    if (!(p[0] & 0x80)) {
        *out = p[0];
        return 1;
    }
    if (len < 4)
        return -2;
    *out = ((size_t)(p[0] & 0x7f) << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | p[3];
    return 4;
}

long fcgi_nv_parse(const char *p, size_t len, const char **name, size_t *nlen, const char **value,
                   size_t *vlen)
{
    const uint8_t *u = (const uint8_t *)p;
    size_t nl, vl;
    long a = nv_len_get(u, len, &nl);
    if (a < 0)
        return a;
    long b = nv_len_get(u + a, len - (size_t)a, &vl);
    if (b < 0)
        return b;
    size_t head = (size_t)(a + b);
    if (len - head < nl || len - head - nl < vl)
        return -2;
    *name = p + head;
    *nlen = nl;
    *value = p + head + nl;
    *vlen = vl;
    return (long)(head + nl + vl);
}

/* ---- decoding ---- */

enum { DEC_HEADER = 0, DEC_CONTENT, DEC_PADDING, DEC_ERROR };

void fcgi_decoder_init(struct fcgi_decoder *d)
{
    memset(d, 0, sizeof(*d));
}

static bool type_is_stream(uint8_t t)
{
    return t == FCGI_STDOUT || t == FCGI_STDERR || t == FCGI_DATA || t == FCGI_GET_VALUES_RESULT;
}

/* The record header is complete: check it and set up for its content. */
static int header_done(struct fcgi_decoder *d)
{
    const uint8_t *h = d->header;
    d->header_len = 0;
    d->type = h[1];
    d->request_id = (uint16_t)(h[2] << 8 | h[3]);
    d->content_left = (size_t)h[4] << 8 | h[5];
    d->padding_left = h[6];
    d->small_len = 0;
    if (h[0] != FCGI_VERSION_1)
        return -1;
    if (type_is_stream(d->type))
        return 0;
    if ((d->type == FCGI_END_REQUEST || d->type == FCGI_UNKNOWN_TYPE) && d->content_left == 8)
        return 0;
    return -1;
}

/* The end of a record's content: what the caller sees for it, if anything. */
static void fixed_done(struct fcgi_decoder *d, struct fcgi_piece *out)
{
    out->type = d->type;
    out->request_id = d->request_id;
    if (d->type == FCGI_END_REQUEST) {
        const uint8_t *b = d->small;
        out->app_status = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
        out->protocol_status = b[4];
    } else {
        out->unknown_type = d->small[0];
    }
}

long fcgi_decode(struct fcgi_decoder *d, const char *buf, size_t len, struct fcgi_piece *out)
{
    memset(out, 0, sizeof(*out));
    size_t used = 0;
    while (used < len) {
        switch (d->state) {
        case DEC_HEADER: {
            size_t n = FCGI_HEADER_LEN - d->header_len;
            if (n > len - used)
                n = len - used;
            memcpy(d->header + d->header_len, buf + used, n);
            d->header_len += n;
            used += n;
            if (d->header_len < FCGI_HEADER_LEN)
                return (long)used;
            if (header_done(d) < 0) {
                d->state = DEC_ERROR;
                return -1;
            }
            d->state = d->content_left ? DEC_CONTENT : d->padding_left ? DEC_PADDING : DEC_HEADER;
            if (d->content_left == 0) {
                /* Only stream types may be empty (header_done checked). */
                out->type = d->type;
                out->request_id = d->request_id;
                out->p = buf + used;
                out->end_of_stream = true;
                return (long)used;
            }
            break;
        }
        case DEC_CONTENT: {
            size_t n = d->content_left < len - used ? d->content_left : len - used;
            const char *p = buf + used;
            d->content_left -= n;
            used += n;
            bool last = d->content_left == 0;
            if (last)
                d->state = d->padding_left ? DEC_PADDING : DEC_HEADER;
            if (type_is_stream(d->type)) {
                out->type = d->type;
                out->request_id = d->request_id;
                out->p = p;
                out->len = n;
                return (long)used;
            }
            memcpy(d->small + d->small_len, p, n);
            d->small_len += n;
            if (last) {
                fixed_done(d, out);
                return (long)used;
            }
            break;
        }
        case DEC_PADDING: {
            size_t n = d->padding_left < len - used ? d->padding_left : len - used;
            d->padding_left -= n;
            used += n;
            if (d->padding_left == 0)
                d->state = DEC_HEADER;
            break;
        }
        default:
            return -1;
        }
    }
    return (long)used;
}
