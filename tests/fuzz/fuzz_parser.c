/* libFuzzer target for the request parser and the chunked decoder.
 *
 * Beyond "no crash, no sanitizer report" it checks the contracts: return
 * values in range, views inside the buffer, framing fields consistent, a
 * successful parse reproducible on the head alone and incomplete one byte
 * short of it, and the chunked decoder giving the same result whether its
 * input arrives whole or in two pieces. */
#include "http/parser.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_view(struct http_str s, const char *buf, size_t len)
{
    if (!s.p) {
        CHECK(s.len == 0);
        return;
    }
    CHECK(s.p >= buf && s.len <= len && (size_t)(s.p - buf) <= len - s.len);
}

static int check_request(const char *buf, size_t len, const struct http_limits *lim, size_t cut)
{
    struct http_request req;
    int r = http_parse_request(buf, len, lim, &req);

    CHECK(r == -2 || r == -1 || (r > 0 && (size_t)r <= len));
    if (r == -1) {
        int s = req.error_status;
        CHECK(s == 400 || s == 414 || s == 431 || s == 501 || s == 505);
        return r;
    }
    if (r == -2) {
        CHECK(!lim || len < lim->max_header_size);
        return r;
    }
    size_t head = (size_t)r;
    CHECK(!lim || head <= lim->max_header_size);
    CHECK(!lim || req.target.len <= lim->max_uri_size);
    CHECK(buf[head - 2] == '\r' && buf[head - 1] == '\n');
    CHECK(req.method.len > 0 && req.target.len > 0);
    check_view(req.method, buf, head);
    check_view(req.target, buf, head);
    /* An empty absolute-form path is a static "/", outside buf. */
    uintptr_t b = (uintptr_t)buf, p = (uintptr_t)req.path.p;
    if (!(req.path.len == 1 && req.path.p[0] == '/' && (p < b || p >= b + head)))
        check_view(req.path, buf, head);
    check_view(req.query, buf, head);
    check_view(req.authority, buf, head);
    CHECK(req.minor_version == 0 || req.minor_version == 1);
    CHECK(req.num_headers <= HTTP_MAX_HEADERS);
    for (size_t i = 0; i < req.num_headers; i++) {
        check_view(req.headers[i].name, buf, head);
        check_view(req.headers[i].value, buf, head);
        CHECK(req.headers[i].name.len > 0);
        CHECK(memchr(req.headers[i].name.p, ':', req.headers[i].name.len) == NULL);
        CHECK(memchr(req.headers[i].value.p ? req.headers[i].value.p : "", '\r',
                     req.headers[i].value.len) == NULL);
        CHECK(memchr(req.headers[i].value.p ? req.headers[i].value.p : "", '\n',
                     req.headers[i].value.len) == NULL);
    }
    check_view(req.host, buf, head);
    check_view(req.range, buf, head);
    check_view(req.cookie, buf, head);
    CHECK(req.content_length >= -1);
    CHECK(!(req.chunked && req.content_length >= 0));
    CHECK(!req.chunked || req.minor_version == 1);
    CHECK(req.minor_version == 0 || req.host.p != NULL);
    CHECK(memchr(req.target.p, ' ', req.target.len) == NULL);

    /* The head alone parses the same; one byte less is incomplete. */
    struct http_request again;
    CHECK(http_parse_request(buf, head, lim, &again) == r);
    CHECK(again.num_headers == req.num_headers && again.content_length == req.content_length &&
          again.chunked == req.chunked && again.keep_alive == req.keep_alive);
    CHECK(http_parse_request(buf, head - 1, lim, &again) == -2);
    CHECK(http_parse_request(buf, cut % head, lim, &again) == -2);
    return r;
}

/* Decode (in, len) in two pieces cut at `cut`; returns the result and fills
 * out/out_len with the body and *after with the bytes left after it. */
static int chunked_run(const uint8_t *in, size_t len, size_t cut, char *out, size_t *out_len,
                       size_t *after)
{
    struct http_chunked c;
    size_t pieces[2][2] = {{0, cut}, {cut, len}};
    int r = 0;

    http_chunked_init(&c);
    *out_len = 0;
    *after = 0;
    for (int k = 0; k < 2; k++) {
        size_t n = pieces[k][1] - pieces[k][0];
        /* Exactly n bytes so that ASan catches any access past the piece. */
        char *work = malloc(n ? n : 1);
        CHECK(work);
        memcpy(work, in + pieces[k][0], n);
        size_t m = n;
        r = http_chunked_decode(&c, work, &m);
        if (r < 0) {
            free(work);
            return r;
        }
        CHECK(m <= n && c.consumed <= n);
        CHECK(m <= c.consumed);
        memcpy(out + *out_len, work, m);
        *out_len += m;
        if (r == 1) {
            CHECK(c.consumed + c.consumed_after == n);
            /* The bytes after the body are untouched. */
            CHECK(memcmp(work + c.consumed, in + pieces[k][0] + c.consumed, c.consumed_after) == 0);
            *after = c.consumed_after + (len - pieces[k][1]);
            free(work);
            return 1;
        }
        CHECK(r == 0 && c.consumed == n);
        free(work);
    }
    return r;
}

static void check_chunked(const uint8_t *data, size_t size)
{
    char *out1 = malloc(size + 1);
    char *out2 = malloc(size + 1);
    size_t n1, n2, a1, a2;
    CHECK(out1 && out2);

    int r1 = chunked_run(data, size, size, out1, &n1, &a1);
    size_t cut = size ? (size_t)data[0] * 257 % (size + 1) : 0;
    int r2 = chunked_run(data, size, cut, out2, &n2, &a2);
    CHECK(r1 == r2);
    if (r1 >= 0) {
        CHECK(n1 == n2 && memcmp(out1, out2, n1) == 0);
        CHECK(r1 == 0 || a1 == a2);
    }
    free(out1);
    free(out2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copy so that ASan catches any read past len. */
    char *buf = malloc(size ? size : 1);
    CHECK(buf);
    memcpy(buf, data, size);

    static const struct http_limits small = {.max_header_size = 512, .max_uri_size = 64};
    static const struct http_limits big = {.max_header_size = 16384, .max_uri_size = 8192};
    size_t cut = size ? (size_t)data[size - 1] * 131 : 0;
    int r_small = check_request(buf, size, &small, cut);
    check_request(buf, size, &big, cut);
    int r_none = check_request(buf, size, NULL, cut);
    /* Limits only ever turn a result into an error, never change a success. */
    if (r_small > 0)
        CHECK(r_none == r_small);
    if (r_none == -1)
        CHECK(r_small == -1);

    /* A body after a valid head (or the whole input) through the decoder. */
    struct http_request req;
    int r = http_parse_request(buf, size, NULL, &req);
    if (r > 0 && req.chunked)
        check_chunked(data + r, size - (size_t)r);
    else
        check_chunked(data, size);

    free(buf);
    return 0;
}
