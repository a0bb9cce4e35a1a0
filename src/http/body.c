/* Request body reader: framing, size limit and the 100-continue decision. */
#include "http/body.h"

#include <string.h>

static int body_fail(struct http_body *b, int status)
{
    b->error_status = status;
    b->result = HTTP_BODY_ERROR;
    return HTTP_BODY_ERROR;
}

int http_body_init(struct http_body *b, const struct http_request *req, uint64_t max_size)
{
    memset(b, 0, sizeof(*b));
    b->max_size = max_size;
    /* The parser sets expect_continue for HTTP/1.1 only; checking the version
     * again keeps an HTTP/1.0 client (which cannot parse 1xx) safe regardless. */
    b->expect_continue = req->expect_continue && req->minor_version >= 1;
    if (req->chunked) {
        b->is_chunked = true;
        http_chunked_init(&b->chunked);
        b->result = HTTP_BODY_MORE;
        return b->result;
    }
    if (req->content_length > 0) {
        /* Decided before any body byte is read, so that the connection can
         * answer 413 at once and never invites the body with 100 Continue. */
        if ((uint64_t)req->content_length > max_size)
            return body_fail(b, 413);
        b->remaining = (uint64_t)req->content_length;
        b->result = HTTP_BODY_MORE;
        return b->result;
    }
    b->result = HTTP_BODY_DONE;
    return b->result;
}

int http_body_feed(struct http_body *b, char *buf, size_t *len)
{
    size_t n = *len;

    b->consumed = 0;
    if (b->result == HTTP_BODY_ERROR)
        return HTTP_BODY_ERROR;
    if (b->result == HTTP_BODY_DONE) {
        b->consumed_after = n;
        *len = 0;
        return HTTP_BODY_DONE;
    }
    if (n > 0)
        b->started = true;

    if (!b->is_chunked) {
        /* The data is already at the front of buf: only cut it at the end. */
        size_t take = n < b->remaining ? n : (size_t)b->remaining;
        b->remaining -= take;
        b->received += take;
        b->consumed = take;
        *len = take;
        if (b->remaining > 0)
            return HTTP_BODY_MORE;
        b->consumed_after = n - take;
        b->result = HTTP_BODY_DONE;
        return HTTP_BODY_DONE;
    }

    int r = http_chunked_decode(&b->chunked, buf, &n);
    if (r < 0)
        return body_fail(b, 400);
    /* received never exceeds max_size, so the subtraction cannot wrap. */
    if (n > b->max_size - b->received)
        return body_fail(b, 413);
    b->received += n;
    b->consumed = b->chunked.consumed;
    *len = n;
    if (r == 0)
        return HTTP_BODY_MORE;
    b->consumed_after = b->chunked.consumed_after;
    b->result = HTTP_BODY_DONE;
    return HTTP_BODY_DONE;
}

bool http_body_continue_due(const struct http_body *b)
{
    return b->expect_continue && b->result == HTTP_BODY_MORE && !b->started && !b->continue_sent;
}

void http_body_mark_continue_sent(struct http_body *b)
{
    b->continue_sent = true;
}
