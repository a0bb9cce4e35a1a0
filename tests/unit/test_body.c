/* Tests for the request body reader: framing, limits and 100-continue. */
#include "http/body.h"
#include "test.h"

#include <stdbool.h>
#include <stdint.h>

#define MAX 1024

struct fed {
    int r;          /* last result */
    int status;     /* error_status on HTTP_BODY_ERROR */
    char data[512]; /* body data delivered */
    size_t data_len;
    char after[512]; /* bytes after the body: unconsumed part plus unfed input */
    size_t after_len;
    uint64_t received;
};

/* Parse head (must be a complete, valid head) into req. */
static void parse_head(const char *head, struct http_request *req)
{
    int n = http_parse_request(head, strlen(head), NULL, req);
    if (n != (int)strlen(head))
        TEST_FAIL("head did not parse: %d for \"%s\"", n, head);
}

/* Set up a body for head and feed it the bytes in, cut into pieces of step
 * bytes except that the first piece ends at first (0: no special first cut).
 * Each piece is copied into its own exactly-sized heap buffer, so ASan sees any
 * read or write beyond it. Checks the per-call contract on the way. */
static void feed(const char *head, uint64_t max, const char *in, size_t first, size_t step,
                 struct fed *f)
{
    struct http_request req;
    struct http_body b;
    size_t len = strlen(in), pos = 0;

    memset(f, 0, sizeof(*f));
    parse_head(head, &req);
    f->r = http_body_init(&b, &req, max);
    while (f->r == HTTP_BODY_MORE && pos < len) {
        size_t n = first && pos == 0 ? first : step;
        if (n > len - pos)
            n = len - pos;
        char *piece = malloc(n ? n : 1);
        memcpy(piece, in + pos, n);
        size_t out = n;
        f->r = http_body_feed(&b, piece, &out);
        if (f->r == HTTP_BODY_ERROR) {
            free(piece);
            break;
        }
        if (out > n || b.consumed > n)
            TEST_FAIL("grew the piece: out %zu consumed %zu of %zu", out, b.consumed, n);
        memcpy(f->data + f->data_len, piece, out);
        f->data_len += out;
        if (f->r == HTTP_BODY_MORE && b.consumed != n)
            TEST_FAIL("MORE but consumed %zu of %zu", b.consumed, n);
        if (f->r == HTTP_BODY_DONE) {
            if (b.consumed + b.consumed_after != n)
                TEST_FAIL("consumed %zu + after %zu != %zu", b.consumed, b.consumed_after, n);
            memcpy(f->after, piece + b.consumed, b.consumed_after);
            f->after_len = b.consumed_after;
        }
        free(piece);
        pos += n;
    }
    if (f->r == HTTP_BODY_DONE) {
        /* Done is sticky: input fed afterwards is all "after", nothing is data. */
        char tail[512];
        size_t rest = len - pos;
        memcpy(tail, in + pos, rest);
        size_t out = rest;
        ASSERT_EQ(http_body_feed(&b, tail, &out), HTTP_BODY_DONE);
        ASSERT_EQ(out, 0);
        ASSERT_EQ(b.consumed, 0);
        ASSERT_EQ(b.consumed_after, rest);
        memcpy(f->after + f->after_len, tail, rest);
        f->after_len += rest;
    }
    if (f->r == HTTP_BODY_ERROR) {
        f->status = b.error_status;
        /* Errors are sticky too. */
        char x[1] = {'0'};
        size_t one = 1;
        ASSERT_EQ(http_body_feed(&b, x, &one), HTTP_BODY_ERROR);
    }
    f->received = b.received;
    ASSERT_EQ(b.result, f->r);
}

#define CL_HEAD(n) "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: " n "\r\n\r\n"
#define CHUNKED_HEAD "POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
#define NEXT "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"

static void expect_done(const struct fed *f, const char *data, const char *after)
{
    ASSERT_EQ(f->r, HTTP_BODY_DONE);
    ASSERT_MEMEQ(f->data, f->data_len, data);
    ASSERT_MEMEQ(f->after, f->after_len, after);
    ASSERT_EQ(f->received, strlen(data));
}

static void test_content_length(void)
{
    struct fed f;
    /* exact, in one piece */
    feed(CL_HEAD("5"), MAX, "hello", 0, 5, &f);
    expect_done(&f, "hello", "");
    /* pipelined request right after, in one piece and byte by byte */
    feed(CL_HEAD("5"), MAX, "hello" NEXT, 0, 1000, &f);
    expect_done(&f, "hello", NEXT);
    feed(CL_HEAD("5"), MAX, "hello" NEXT, 0, 1, &f);
    expect_done(&f, "hello", NEXT);
    /* every split position, with the pipelined request */
    const char *in = "hello world" NEXT;
    for (size_t cut = 1; cut < strlen(in); cut++) {
        feed(CL_HEAD("11"), MAX, in, cut, 1000, &f);
        expect_done(&f, "hello world", NEXT);
    }
    /* incomplete: MORE, counting what came */
    feed(CL_HEAD("10"), MAX, "hel", 0, 1, &f);
    ASSERT_EQ(f.r, HTTP_BODY_MORE);
    ASSERT_EQ(f.received, 3);
    ASSERT_MEMEQ(f.data, f.data_len, "hel");
}

/* Copy lit into buf, feed it to b expecting result want; returns the data length. */
static size_t feed_lit(struct http_body *b, char *buf, const char *lit, int want)
{
    size_t n = strlen(lit);
    uint64_t before = b->received;
    memcpy(buf, lit, n);
    ASSERT_EQ(http_body_feed(b, buf, &n), want);
    ASSERT_EQ(b->received, before + n);
    return n;
}

static void test_content_length_progress(void)
{
    struct http_request req;
    struct http_body b;
    char buf[4];
    parse_head(CL_HEAD("3"), &req);
    ASSERT_EQ(http_body_init(&b, &req, MAX), HTTP_BODY_MORE);
    ASSERT_EQ(b.remaining, 3);
    ASSERT_TRUE(!b.started);
    /* an empty read changes nothing */
    size_t n = 0;
    ASSERT_EQ(http_body_feed(&b, buf, &n), HTTP_BODY_MORE);
    ASSERT_TRUE(!b.started);
    n = feed_lit(&b, buf, "ab", HTTP_BODY_MORE);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(b.remaining, 1);
    ASSERT_TRUE(b.started);
    n = feed_lit(&b, buf, "cGE", HTTP_BODY_DONE);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(b.consumed, 1);
    ASSERT_EQ(b.consumed_after, 2);
    ASSERT_MEMEQ(buf + b.consumed, b.consumed_after, "GE");
    ASSERT_EQ(b.received, 3);
}

static void test_chunked(void)
{
    struct fed f;
    const char *ext = "5;a=b ; c=\"d; e\"\r\nhello\r\n6;x\r\n world\r\n0;end=1\r\n\r\n" NEXT;
    const char *trl = "3\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Sum: 13\r\nY: z\r\n\r\n" NEXT;

    feed(CHUNKED_HEAD, MAX, ext, 0, 1000, &f);
    expect_done(&f, "hello world", NEXT);
    feed(CHUNKED_HEAD, MAX, trl, 0, 1000, &f);
    expect_done(&f, "abc0123456789", NEXT);
    /* split at every byte position, then byte by byte */
    for (size_t cut = 1; cut < strlen(ext); cut++) {
        feed(CHUNKED_HEAD, MAX, ext, cut, 1000, &f);
        expect_done(&f, "hello world", NEXT);
    }
    for (size_t cut = 1; cut < strlen(trl); cut++) {
        feed(CHUNKED_HEAD, MAX, trl, cut, 1000, &f);
        expect_done(&f, "abc0123456789", NEXT);
    }
    feed(CHUNKED_HEAD, MAX, ext, 0, 1, &f);
    expect_done(&f, "hello world", NEXT);
    feed(CHUNKED_HEAD, MAX, trl, 0, 1, &f);
    expect_done(&f, "abc0123456789", NEXT);
    /* incomplete */
    feed(CHUNKED_HEAD, MAX, "5\r\nhel", 0, 2, &f);
    ASSERT_EQ(f.r, HTTP_BODY_MORE);
    ASSERT_EQ(f.received, 3);
    ASSERT_MEMEQ(f.data, f.data_len, "hel");
}

static void test_empty_bodies(void)
{
    struct fed f;
    /* no body at all: done at init, everything fed is the next request */
    feed("GET / HTTP/1.1\r\nHost: a\r\n\r\n", MAX, NEXT, 0, 1000, &f);
    expect_done(&f, "", NEXT);
    feed("POST / HTTP/1.0\r\n\r\n", MAX, NEXT, 0, 1000, &f);
    expect_done(&f, "", NEXT);
    feed(CL_HEAD("0"), MAX, NEXT, 0, 1000, &f);
    expect_done(&f, "", NEXT);
    feed(CHUNKED_HEAD, MAX, "0\r\n\r\n" NEXT, 0, 1000, &f);
    expect_done(&f, "", NEXT);
    feed(CHUNKED_HEAD, MAX, "000;a=b\r\n\r\n" NEXT, 0, 1, &f);
    expect_done(&f, "", NEXT);
    /* a limit of 0 still allows empty bodies */
    feed(CL_HEAD("0"), 0, "", 0, 1, &f);
    expect_done(&f, "", "");
    feed(CHUNKED_HEAD, 0, "0\r\n\r\n", 0, 1, &f);
    expect_done(&f, "", "");
}

static void test_limits(void)
{
    struct http_request req;
    struct http_body b;
    struct fed f;

    /* Content-Length: refused by init, before any byte is fed */
    parse_head(CL_HEAD("11"), &req);
    ASSERT_EQ(http_body_init(&b, &req, 10), HTTP_BODY_ERROR);
    ASSERT_EQ(b.error_status, 413);
    ASSERT_EQ(b.received, 0);
    char buf[4] = "abc";
    size_t n = 3;
    ASSERT_EQ(http_body_feed(&b, buf, &n), HTTP_BODY_ERROR);
    ASSERT_EQ(b.consumed, 0);
    parse_head(CL_HEAD("9223372036854775807"), &req);
    ASSERT_EQ(http_body_init(&b, &req, UINT64_MAX - 1), HTTP_BODY_MORE);
    ASSERT_EQ(http_body_init(&b, &req, MAX), HTTP_BODY_ERROR);
    ASSERT_EQ(b.error_status, 413);
    /* exactly at the limit is fine */
    feed(CL_HEAD("10"), 10, "0123456789", 0, 3, &f);
    expect_done(&f, "0123456789", "");

    /* chunked: 413 as soon as the sum passes the limit, however it is cut */
    const char *over = "6\r\nabcdef\r\n5\r\nghijk\r\n0\r\n\r\n";
    const char *exact = "6\r\nabcdef\r\n4\r\nghij\r\n0\r\n\r\n";
    for (size_t cut = 1; cut < strlen(over); cut++) {
        feed(CHUNKED_HEAD, 10, over, cut, 1000, &f);
        ASSERT_EQ(f.r, HTTP_BODY_ERROR);
        ASSERT_EQ(f.status, 413);
        ASSERT_TRUE(f.received <= 10);
    }
    for (size_t cut = 1; cut < strlen(exact); cut++) {
        feed(CHUNKED_HEAD, 10, exact, cut, 1000, &f);
        expect_done(&f, "abcdefghij", "");
    }
    /* the 11th byte is the one refused, even when the framing after it never comes */
    feed(CHUNKED_HEAD, 10, "b\r\nabcdefghijk", 0, 1, &f);
    ASSERT_EQ(f.r, HTTP_BODY_ERROR);
    ASSERT_EQ(f.status, 413);
    ASSERT_EQ(f.received, 10);
}

static void test_malformed(void)
{
    static const char *const bad[] = {
        "zz\r\n",
        "5\r\nhelloXX\r\n",
        "5\nhello\r\n0\r\n\r\n",
        "5;=x\r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\n0\r\nBad Field: x\r\n\r\n",
        "5\r\nhello\r\n0\r\n\n",
        "\r\n",
    };
    struct fed f;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        feed(CHUNKED_HEAD, MAX, bad[i], 0, 1000, &f);
        if (f.r != HTTP_BODY_ERROR || f.status != 400)
            TEST_FAIL("bad[%zu]: result %d status %d, want -1 and 400", i, f.r, f.status);
        feed(CHUNKED_HEAD, MAX, bad[i], 0, 1, &f);
        if (f.r != HTTP_BODY_ERROR || f.status != 400)
            TEST_FAIL("bad[%zu] bytewise: result %d status %d, want -1 and 400", i, f.r, f.status);
    }
}

static bool continue_due(const char *head, uint64_t max)
{
    struct http_request req;
    struct http_body b;
    parse_head(head, &req);
    http_body_init(&b, &req, max);
    return http_body_continue_due(&b);
}

static void test_continue(void)
{
    const char *cl11 =
        "PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    const char *ch11 =
        "PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n";

    ASSERT_TRUE(continue_due(cl11, MAX));
    ASSERT_TRUE(continue_due(ch11, MAX));
    /* without Expect, or from an HTTP/1.0 client: never */
    ASSERT_TRUE(!continue_due(CL_HEAD("5"), MAX));
    ASSERT_TRUE(!continue_due(CHUNKED_HEAD, MAX));
    ASSERT_TRUE(
        !continue_due("PUT /u HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", MAX));
    /* over the limit: 413 instead, no invitation to send the body */
    ASSERT_TRUE(!continue_due(cl11, 4));
    /* no body to wait for */
    ASSERT_TRUE(!continue_due("PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                              "Content-Length: 0\r\n\r\n",
                              MAX));

    /* Even if a head claimed Expect for HTTP/1.0, 1xx is never due to it. */
    struct http_request req;
    struct http_body b;
    parse_head(cl11, &req);
    req.minor_version = 0;
    http_body_init(&b, &req, MAX);
    ASSERT_TRUE(!http_body_continue_due(&b));

    /* due once: after it was sent, or once the body started arriving */
    parse_head(cl11, &req);
    http_body_init(&b, &req, MAX);
    ASSERT_TRUE(http_body_continue_due(&b));
    http_body_mark_continue_sent(&b);
    ASSERT_TRUE(!http_body_continue_due(&b));

    http_body_init(&b, &req, MAX);
    char buf[2] = {'h', 'e'};
    size_t n = 0;
    http_body_feed(&b, buf, &n);
    ASSERT_TRUE(http_body_continue_due(&b));
    n = 2;
    ASSERT_EQ(http_body_feed(&b, buf, &n), HTTP_BODY_MORE);
    ASSERT_TRUE(!http_body_continue_due(&b));

    /* a malformed first chunk line: an error, no 100 either */
    parse_head(ch11, &req);
    http_body_init(&b, &req, MAX);
    char junk[3] = {'x', '\r', '\n'};
    n = 3;
    ASSERT_EQ(http_body_feed(&b, junk, &n), HTTP_BODY_ERROR);
    ASSERT_TRUE(!http_body_continue_due(&b));
}

int main(void)
{
    test_content_length();
    test_content_length_progress();
    test_chunked();
    test_empty_bodies();
    test_limits();
    test_malformed();
    test_continue();
    TEST_MAIN_END();
}
