/* Tests for the strict HTTP/1.x request parser and the chunked decoder. */
#include "http/parser.h"
#include "test.h"

#include <stdbool.h>
#include <stdint.h>

#define FULL 0x7fffffff /* expected return: the whole input is the head */

static const struct http_limits limits = {.max_header_size = 4096, .max_uri_size = 1024};

struct parse_case {
    const char *in;
    int ret;    /* FULL, a byte count, -1 or -2 */
    int status; /* error_status when ret == -1 */
};

static const struct parse_case parse_cases[] = {
    /* valid shapes */
    {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", FULL, 0},
    {"GET / HTTP/1.0\r\n\r\n", FULL, 0},
    {"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", FULL, 0},
    {"\r\n\r\n\r\n\r\nGET / HTTP/1.0\r\n\r\n", FULL, 0},
    {"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n", 27, 0},
    {"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", 48, 0},
    {"GET /a?b HTTP/1.1\r\nHost: a\r\nX:\r\n\r\n", FULL, 0},
    {"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", FULL, 0},
    {"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", FULL, 0},
    {"GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n", FULL, 0},
    {"GET HTTPS://[::1]:8443/p HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n", FULL, 0},
    {"M-SEARCH / HTTP/1.1\r\nHost: a\r\n\r\n", FULL, 0},
    {"GET /%41%2f HTTP/1.1\r\nHost: a\r\n\r\n", FULL, 0},
    {"GET /a|b?{c}^ HTTP/1.1\r\nHost: a\r\n\r\n", FULL, 0},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9 \x80\xff\r\n\r\n", FULL, 0},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n", FULL, 0},
    {"GET / HTTP/1.1\r\nHost:\r\n\r\n", FULL, 0},
    {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n", FULL, 0},
    {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", FULL, 0},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", FULL, 0},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  CHUNKED \t\r\n\r\n", FULL, 0},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: ,keep-alive,, Upgrade\r\n\r\n", FULL, 0},

    /* leading empty lines */
    {"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.0\r\n\r\n", -1, 400},
    {"\nGET / HTTP/1.0\r\n\r\n", -1, 400},
    {"\rGET / HTTP/1.0\r\n\r\n", -1, 400},
    {" GET / HTTP/1.0\r\n\r\n", -1, 400},

    /* request line */
    {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", -1, 400},
    {"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET /\tx HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {" / HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET\r\n\r\n", -1, 400},
    {"GET /\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\nHost: a\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\rHost: a\r\n\r\n", -1, 400},
    {"GET / http/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET / HTTP/1.10\r\nHost: a\r\n\r\n", -1, 400},
    {"GET / HTTP/11\r\nHost: a\r\n\r\n", -1, 400},
    {"GET / HTTP/1.x\r\nHost: a\r\n\r\n", -1, 400},
    {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", -1, 505},
    {"GET / HTTP/1.2\r\nHost: a\r\n\r\n", -1, 505},
    {"GET / HTTP/0.9\r\n\r\n", -1, 505},
    {"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET /a#f HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET /%4 HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET a HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET * HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"CONNECT a.example HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"CONNECT a.example: HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"CONNECT :443 HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"CONNECT http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET http:/a HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET http:///a HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},
    {"GET http://a:8x/ HTTP/1.1\r\nHost: a\r\n\r\n", -1, 400},

    /* fields */
    {"GET / HTTP/1.1\r\nHost: a\r\nX : y\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nX\t: y\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\n: y\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nX y\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nX(: y\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\tz\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\n Host: a\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: y\nZ: w\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: y\rZ: w\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\n\r\r", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fz\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nX\x80: y\r\n\r\n", -1, 400},

    /* Host */
    {"GET / HTTP/1.1\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", -1, 400},
    {"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a:x\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", -1, 400},
    {"GET http://a/ HTTP/1.1\r\n\r\n", -1, 400},

    /* Content-Length */
    {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", -1, 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", -1, 400},

    /* Transfer-Encoding */
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", -1,
     400},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", -1,
     400},
    {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", -1, 400},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", -1, 501},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
     -1, 501},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", -1, 400},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", -1, 400},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
     "\r\n",
     -1, 400},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", -1, 400},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", -1, 400},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", -1, 400},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", -1, 400},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", -1, 400},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", -1, 400},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x;a=\"b, chunked\r\n\r\n", -1, 400},
    /* A quoted comma is legal there, but the list splitter does not know quotes:
     * the pieces are malformed, so such a header is refused as a whole. */
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x;a=\"b,c\", chunked\r\n\r\n", -1, 400},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x;a=\"b;c\", chunked\r\n\r\n", -1, 501},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x ; a = b, chunked\r\n\r\n", -1, 501},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x;a, chunked\r\n\r\n", -1, 400},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", -1, 400},

    /* Connection */
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close x\r\n\r\n", -1, 400},

    /* incomplete */
    {"", -2, 0},
    {"\r", -2, 0},
    {"\r\n", -2, 0},
    {"GET", -2, 0},
    {"GET / HTTP/1.1\r\nHost: a\r\n\r", -2, 0},
    {"GET / HTTP/2", -2, 0},
};

static void test_table(void)
{
    struct http_request req;
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
        const struct parse_case *c = &parse_cases[i];
        size_t len = strlen(c->in);
        int want = c->ret == FULL ? (int)len : c->ret;
        int got = http_parse_request(c->in, len, &limits, &req);
        if (got != want || (want == -1 && req.error_status != c->status)) {
            TEST_FAIL("case %zu \"%s\": returned %d status %d, want %d status %d", i, c->in, got,
                      req.error_status, want, c->status);
        }
    }
}

/* Every proper prefix of a valid head is incomplete, and so is every prefix of
 * an invalid head that ends before the offending byte. */
static void test_prefixes(void)
{
    struct http_request req;
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
        const struct parse_case *c = &parse_cases[i];
        if (c->ret < 0)
            continue;
        size_t len = strlen(c->in);
        int full = c->ret == FULL ? (int)len : c->ret;
        for (size_t k = 0; k < (size_t)full; k++) {
            int got = http_parse_request(c->in, k, &limits, &req);
            if (got != -2)
                TEST_FAIL("case %zu prefix %zu: returned %d, want -2", i, k, got);
        }
        ASSERT_EQ(http_parse_request(c->in, (size_t)full, &limits, &req), full);
    }
}

static void test_views(void)
{
    struct http_request r;
    const char *s = "\r\nPOST /up/load.jpg?a=1&b HTTP/1.1\r\n"
                    "host: Example.com:8080\r\n"
                    "Content-Length: 12 , 12\r\n"
                    "If-None-Match:   \"x\", W/\"y\"  \r\n"
                    "If-Modified-Since: Sat, 29 Oct 1994 19:43:31 GMT\r\n"
                    "If-Range: \"x\"\r\n"
                    "Range: bytes=0-9\r\n"
                    "Range: bytes=5-6\r\n"
                    "User-Agent: t/1.0\r\n"
                    "Referer: http://r/\r\n"
                    "Accept: */*\r\n"
                    "Cookie: a=b; c=d\r\n"
                    "Expect: 100-Continue\r\n"
                    "X-Empty:\r\n"
                    "\r\n"
                    "hello world!";
    int n = http_parse_request(s, strlen(s), &limits, &r);
    ASSERT_EQ(n, (int)(strstr(s, "hello") - s));
    ASSERT_MEMEQ(r.method.p, r.method.len, "POST");
    ASSERT_EQ(r.method_id, HTTP_M_POST);
    ASSERT_MEMEQ(r.target.p, r.target.len, "/up/load.jpg?a=1&b");
    ASSERT_MEMEQ(r.path.p, r.path.len, "/up/load.jpg");
    ASSERT_MEMEQ(r.query.p, r.query.len, "a=1&b");
    ASSERT_TRUE(r.authority.p == NULL);
    ASSERT_EQ(r.minor_version, 1);
    ASSERT_EQ(r.num_headers, 13);
    ASSERT_MEMEQ(r.headers[0].name.p, r.headers[0].name.len, "host");
    ASSERT_MEMEQ(r.host.p, r.host.len, "Example.com:8080");
    ASSERT_EQ(r.content_length, 12);
    ASSERT_MEMEQ(r.if_none_match.p, r.if_none_match.len, "\"x\", W/\"y\"");
    ASSERT_MEMEQ(r.if_modified_since.p, r.if_modified_since.len, "Sat, 29 Oct 1994 19:43:31 GMT");
    ASSERT_MEMEQ(r.if_range.p, r.if_range.len, "\"x\"");
    ASSERT_MEMEQ(r.range.p, r.range.len, "bytes=0-9");
    ASSERT_MEMEQ(r.user_agent.p, r.user_agent.len, "t/1.0");
    ASSERT_MEMEQ(r.referer.p, r.referer.len, "http://r/");
    ASSERT_MEMEQ(r.accept.p, r.accept.len, "*/*");
    ASSERT_MEMEQ(r.cookie.p, r.cookie.len, "a=b; c=d");
    ASSERT_TRUE(r.expect_continue);
    ASSERT_TRUE(r.keep_alive);
    ASSERT_TRUE(!r.chunked);
    ASSERT_EQ(r.error_status, 0);
    struct http_str e = http_find_header(&r, "x-empty");
    ASSERT_TRUE(e.p != NULL);
    ASSERT_EQ(e.len, 0);
    ASSERT_TRUE(http_find_header(&r, "x-missing").p == NULL);
    e = http_find_header(&r, "range");
    ASSERT_MEMEQ(e.p, e.len, "bytes=0-9");

    /* Absent values stay NULL; HTTP/1.0 defaults. */
    s = "HEAD /x HTTP/1.0\r\nExpect: 100-continue\r\n\r\n";
    ASSERT_EQ(http_parse_request(s, strlen(s), &limits, &r), (int)strlen(s));
    ASSERT_EQ(r.method_id, HTTP_M_HEAD);
    ASSERT_EQ(r.minor_version, 0);
    ASSERT_TRUE(r.query.p == NULL);
    ASSERT_TRUE(r.host.p == NULL);
    ASSERT_TRUE(r.range.p == NULL);
    ASSERT_TRUE(r.cookie.p == NULL);
    ASSERT_EQ(r.content_length, -1);
    ASSERT_TRUE(!r.keep_alive);
    ASSERT_TRUE(!r.expect_continue);

    /* An empty query is present but empty. */
    s = "GET /? HTTP/1.1\r\nHost: a\r\n\r\n";
    ASSERT_EQ(http_parse_request(s, strlen(s), &limits, &r), (int)strlen(s));
    ASSERT_MEMEQ(r.path.p, r.path.len, "/");
    ASSERT_TRUE(r.query.p != NULL);
    ASSERT_EQ(r.query.len, 0);

    /* absolute-form */
    s = "GET http://files.example:81/a/b?c HTTP/1.1\r\nHost: other\r\n\r\n";
    ASSERT_EQ(http_parse_request(s, strlen(s), &limits, &r), (int)strlen(s));
    ASSERT_MEMEQ(r.authority.p, r.authority.len, "files.example:81");
    ASSERT_MEMEQ(r.path.p, r.path.len, "/a/b");
    ASSERT_MEMEQ(r.query.p, r.query.len, "c");
    ASSERT_MEMEQ(r.host.p, r.host.len, "other");
    s = "GET http://files.example HTTP/1.1\r\nHost: files.example\r\n\r\n";
    ASSERT_EQ(http_parse_request(s, strlen(s), &limits, &r), (int)strlen(s));
    ASSERT_MEMEQ(r.authority.p, r.authority.len, "files.example");
    ASSERT_MEMEQ(r.path.p, r.path.len, "/");
    ASSERT_TRUE(r.query.p == NULL);
    s = "GET https://f?q=1 HTTP/1.1\r\nHost: f\r\n\r\n";
    ASSERT_EQ(http_parse_request(s, strlen(s), &limits, &r), (int)strlen(s));
    ASSERT_MEMEQ(r.authority.p, r.authority.len, "f");
    ASSERT_MEMEQ(r.path.p, r.path.len, "/");
    ASSERT_MEMEQ(r.query.p, r.query.len, "q=1");

    /* asterisk-form and authority-form */
    s = "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
    ASSERT_EQ(http_parse_request(s, strlen(s), &limits, &r), (int)strlen(s));
    ASSERT_EQ(r.method_id, HTTP_M_OPTIONS);
    ASSERT_MEMEQ(r.path.p, r.path.len, "*");
    ASSERT_TRUE(r.authority.p == NULL);
    s = "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n";
    ASSERT_EQ(http_parse_request(s, strlen(s), &limits, &r), (int)strlen(s));
    ASSERT_EQ(r.method_id, HTTP_M_CONNECT);
    ASSERT_MEMEQ(r.authority.p, r.authority.len, "[::1]:443");
    ASSERT_TRUE(r.path.p == NULL);

    /* Unknown and lower-case methods are tokens but not known methods. */
    s = "get / HTTP/1.1\r\nHost: a\r\n\r\n";
    ASSERT_EQ(http_parse_request(s, strlen(s), &limits, &r), (int)strlen(s));
    ASSERT_EQ(r.method_id, HTTP_M_OTHER);
    ASSERT_MEMEQ(r.method.p, r.method.len, "get");
}

static void test_framing(void)
{
    struct http_request r;
    /* A NUL inside a field value. */
    static const char nul[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0z\r\n\r\n";
    ASSERT_EQ(http_parse_request(nul, sizeof(nul) - 1, &limits, &r), -1);
    ASSERT_EQ(r.error_status, 400);

    const char *s = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n";
    ASSERT_EQ(http_parse_request(s, strlen(s), &limits, &r), (int)strlen(s));
    ASSERT_TRUE(r.chunked);
    ASSERT_EQ(r.content_length, -1);

    s = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n";
    ASSERT_EQ(http_parse_request(s, strlen(s), &limits, &r), (int)strlen(s));
    ASSERT_EQ(r.content_length, INT64_MAX);
    ASSERT_TRUE(!r.chunked);

    s = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n";
    ASSERT_EQ(http_parse_request(s, strlen(s), &limits, &r), (int)strlen(s));
    ASSERT_EQ(r.content_length, 7);
}

struct ka_case {
    const char *in;
    bool keep_alive;
};

static void test_keep_alive(void)
{
    static const struct ka_case cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: a\r\nX-Connection: close\r\n\r\n", true},
        {"GET / HTTP/1.0\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false},
    };
    struct http_request r;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int n = http_parse_request(cases[i].in, strlen(cases[i].in), &limits, &r);
        ASSERT_EQ(n, (int)strlen(cases[i].in));
        if (r.keep_alive != cases[i].keep_alive)
            TEST_FAIL("keep-alive case %zu: got %d", i, r.keep_alive);
    }
}

static void test_limits(void)
{
    static char buf[8192];
    struct http_request r;
    struct http_limits lim = {.max_header_size = 200, .max_uri_size = 50};

    /* 414 as soon as the target is too long, before the head is complete. */
    size_t n = (size_t)snprintf(buf, sizeof(buf), "GET /%s",
                                "0123456789012345678901234567890123456789012345678");
    ASSERT_EQ(http_parse_request(buf, n, &lim, &r), -2); /* 50 bytes of target */
    buf[n++] = 'x';
    ASSERT_EQ(http_parse_request(buf, n, &lim, &r), -1);
    ASSERT_EQ(r.error_status, 414);

    /* A target of exactly max_uri_size is fine. */
    n = (size_t)snprintf(buf, sizeof(buf), "GET /%s HTTP/1.1\r\nHost: a\r\n\r\n",
                         "0123456789012345678901234567890123456789012345678");
    ASSERT_EQ(http_parse_request(buf, n, &lim, &r), (int)n);

    /* A head of exactly max_header_size is fine, one byte more is 431. */
    memset(buf, 0, sizeof(buf));
    const char *pre = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
    size_t fill = 200 - strlen(pre) - 4;
    n = (size_t)snprintf(buf, sizeof(buf), "%s%.*s\r\n\r\n", pre, (int)fill,
                         "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
                         "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
                         "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy");
    ASSERT_EQ(n, 200);
    ASSERT_EQ(http_parse_request(buf, n, &lim, &r), 200);
    /* with body bytes after it, still fine */
    memcpy(buf + n, "BODY", 4);
    ASSERT_EQ(http_parse_request(buf, n + 4, &lim, &r), 200);
    n = (size_t)snprintf(buf, sizeof(buf), "%sy%.*s\r\n\r\n", pre, (int)fill,
                         "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
                         "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
                         "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy");
    ASSERT_EQ(http_parse_request(buf, n, &lim, &r), -1);
    ASSERT_EQ(r.error_status, 431);
    /* Incomplete: -2 below the limit, 431 once len reaches it. */
    ASSERT_EQ(http_parse_request(buf, 199, &lim, &r), -2);
    ASSERT_EQ(http_parse_request(buf, 200, &lim, &r), -1);
    ASSERT_EQ(r.error_status, 431);

    /* Exactly HTTP_MAX_HEADERS fields are fine, one more is 431. */
    n = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 1; i < HTTP_MAX_HEADERS; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "X%d: %d\r\n", i, i);
    memcpy(buf + n, "\r\n", 2);
    ASSERT_EQ(http_parse_request(buf, n + 2, &lim, &r), -1); /* over 200 bytes */
    ASSERT_EQ(r.error_status, 431);
    ASSERT_EQ(http_parse_request(buf, n + 2, NULL, &r), (int)n + 2);
    ASSERT_EQ(r.num_headers, HTTP_MAX_HEADERS);
    ASSERT_MEMEQ(r.headers[99].name.p, r.headers[99].name.len, "X99");
    ASSERT_MEMEQ(r.headers[99].value.p, r.headers[99].value.len, "99");
    memcpy(buf + n, "Y: 1\r\n\r\n", 8);
    ASSERT_EQ(http_parse_request(buf, n + 8, NULL, &r), -1);
    ASSERT_EQ(r.error_status, 431);
}

static void test_str_eq_ci(void)
{
    struct http_str s = {"Content-LENGTH", 14};
    ASSERT_TRUE(http_str_eq_ci(s, "content-length"));
    ASSERT_TRUE(!http_str_eq_ci(s, "content-lengthx"));
    ASSERT_TRUE(!http_str_eq_ci(s, "content-lengt"));
    ASSERT_TRUE(!http_str_eq_ci((struct http_str){NULL, 0}, ""));
    ASSERT_TRUE(http_str_eq_ci((struct http_str){"", 0}, ""));
    /* Only ASCII letters fold: '[' is not '{'. */
    ASSERT_TRUE(!http_str_eq_ci((struct http_str){"[", 1}, "{"));
}

/* ---- chunked ---- */

struct chunk_case {
    const char *in;
    int ret;           /* final return of the decoder */
    const char *data;  /* decoded body when ret == 1 */
    const char *after; /* bytes left after the body when ret == 1 */
};

static const struct chunk_case chunk_cases[] = {
    {"0\r\n\r\n", 1, "", ""},
    {"000\r\n\r\n", 1, "", ""},
    {"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n", 1, "Wikipedia", ""},
    {"4\r\nWiki\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 1, "Wiki", "GET / HTTP/1.1\r\n"},
    {"a\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\n\r\n", 1, "0123456789abcdefghij", ""},
    {"1;a\r\nx\r\n0\r\n\r\n", 1, "x", ""},
    {"1;a=b\r\nx\r\n0;last\r\n\r\n", 1, "x", ""},
    {"1 ; a = b ;c;d=\"q \\\" ;\"\r\nx\r\n0\r\n\r\n", 1, "x", ""},
    {"1;a=\"\xff\"\r\nx\r\n0\r\n\r\n", 1, "x", ""},
    {"1\r\nx\r\n0\r\nTrailer: v\r\nX-Y:\r\n\r\nrest", 1, "x", "rest"},
    {"0000000000000001\r\nx\r\n0\r\n\r\n", 1, "x", ""},
    {"1\r\nx\r\n", 0, NULL, NULL},
    {"1\r\nx\r\n0\r\n", 0, NULL, NULL},
    {"", 0, NULL, NULL},
    /* invalid */
    {"\r\n", -1, NULL, NULL},
    {"x\r\n", -1, NULL, NULL},
    {"-1\r\n", -1, NULL, NULL},
    {"+1\r\n", -1, NULL, NULL},
    {" 1\r\n", -1, NULL, NULL},
    {"0x1\r\n", -1, NULL, NULL},
    {"1 \r\nx\r\n0\r\n\r\n", -1, NULL, NULL},
    {"1\nx\r\n0\r\n\r\n", -1, NULL, NULL},
    {"1\rx\r\n0\r\n\r\n", -1, NULL, NULL},
    {"1\r\nxy\r\n0\r\n\r\n", -1, NULL, NULL},
    {"1\r\nx\n0\r\n\r\n", -1, NULL, NULL},
    {"1\r\nx\r0\r\n\r\n", -1, NULL, NULL},
    {"2\r\nx\r\n\r\n0\r\n\r\n", -1, NULL, NULL},
    {"1;\r\nx\r\n0\r\n\r\n", -1, NULL, NULL},
    {"1;=b\r\nx\r\n0\r\n\r\n", -1, NULL, NULL},
    {"1;a=\r\nx\r\n0\r\n\r\n", -1, NULL, NULL},
    {"1;a \r\nx\r\n0\r\n\r\n", -1, NULL, NULL},
    {"1;a=b \r\nx\r\n0\r\n\r\n", -1, NULL, NULL},
    {"1;a=\"b\r\nx\r\n0\r\n\r\n", -1, NULL, NULL},
    {"1;a=\"b\"c\r\nx\r\n0\r\n\r\n", -1, NULL, NULL},
    {"1;a=\"\x01\"\r\nx\r\n0\r\n\r\n", -1, NULL, NULL},
    {"1;a(=b\r\nx\r\n0\r\n\r\n", -1, NULL, NULL},
    {"1x\r\nx\r\n0\r\n\r\n", -1, NULL, NULL},
    {"00000000000000001\r\nx\r\n0\r\n\r\n", -1, NULL, NULL},
    {"8000000000000000\r\n", -1, NULL, NULL},
    {"ffffffffffffffff\r\n", -1, NULL, NULL},
    {"0\r\nTrailer : v\r\n\r\n", -1, NULL, NULL},
    {"0\r\nTrailer: v\r\n folded\r\n\r\n", -1, NULL, NULL},
    {"0\r\n: v\r\n\r\n", -1, NULL, NULL},
    {"0\r\nT: a\x01\r\n\r\n", -1, NULL, NULL},
    {"0\r\nT: a\r\n\n", -1, NULL, NULL},
    {"0\r\nT: a\n\r\n", -1, NULL, NULL},
    {"0\r\n\n", -1, NULL, NULL},
    {"0\r\n\rx", -1, NULL, NULL},
};

/* Feed in pieces cut at the given positions (sorted, ending with len);
 * collect the body and the bytes after it. Returns the last result. */
static int chunked_feed(const char *in, size_t len, const size_t *cuts, size_t ncuts, char *data,
                        size_t *data_len, char *after, size_t *after_len)
{
    struct http_chunked c;
    char piece[256];
    size_t pos = 0;
    int r = 0;
    http_chunked_init(&c);
    *data_len = 0;
    *after_len = 0;
    for (size_t k = 0; k < ncuts; k++) {
        size_t n = cuts[k] - pos;
        memcpy(piece, in + pos, n);
        size_t out = n;
        r = http_chunked_decode(&c, piece, &out);
        if (r < 0)
            return r;
        if (out > n || c.consumed > n)
            TEST_FAIL("decoder grew the piece: out %zu consumed %zu of %zu", out, c.consumed, n);
        memcpy(data + *data_len, piece, out);
        *data_len += out;
        if (r == 1) {
            if (c.consumed + c.consumed_after != n)
                TEST_FAIL("consumed %zu + after %zu != %zu", c.consumed, c.consumed_after, n);
            memcpy(after, piece + c.consumed, c.consumed_after);
            *after_len = c.consumed_after;
            memcpy(after + *after_len, in + cuts[k], len - cuts[k]);
            *after_len += len - cuts[k];
            /* Done is sticky and consumes nothing. */
            size_t zero = 3;
            ASSERT_EQ(http_chunked_decode(&c, piece, &zero), 1);
            ASSERT_EQ(zero, 0);
            ASSERT_EQ(c.consumed, 0);
            return 1;
        }
        if (c.consumed != n)
            TEST_FAIL("returned 0 but consumed %zu of %zu", c.consumed, n);
        pos = cuts[k];
    }
    return r;
}

static void chunk_check(size_t i, const char *how, int r, const char *data, size_t data_len,
                        const char *after, size_t after_len)
{
    const struct chunk_case *c = &chunk_cases[i];
    if (r != c->ret) {
        TEST_FAIL("chunk case %zu (%s): returned %d, want %d", i, how, r, c->ret);
        return;
    }
    if (r != 1)
        return;
    if (data_len != strlen(c->data) || memcmp(data, c->data, data_len) != 0)
        TEST_FAIL("chunk case %zu (%s): data \"%.*s\"", i, how, (int)data_len, data);
    if (after_len != strlen(c->after) || memcmp(after, c->after, after_len) != 0)
        TEST_FAIL("chunk case %zu (%s): after \"%.*s\"", i, how, (int)after_len, after);
}

static void test_chunked_table(void)
{
    char data[256], after[256];
    size_t data_len, after_len;
    for (size_t i = 0; i < sizeof(chunk_cases) / sizeof(chunk_cases[0]); i++) {
        const char *in = chunk_cases[i].in;
        size_t len = strlen(in);
        /* whole */
        int r = chunked_feed(in, len, &len, 1, data, &data_len, after, &after_len);
        chunk_check(i, "whole", r, data, data_len, after, after_len);
        /* split once at every byte */
        for (size_t k = 0; k < len; k++) {
            size_t cuts[2] = {k, len};
            r = chunked_feed(in, len, cuts, 2, data, &data_len, after, &after_len);
            chunk_check(i, "split", r, data, data_len, after, after_len);
        }
        /* one byte at a time */
        size_t cuts[256];
        for (size_t k = 0; k < len; k++)
            cuts[k] = k + 1;
        if (len) {
            r = chunked_feed(in, len, cuts, len, data, &data_len, after, &after_len);
            chunk_check(i, "bytewise", r, data, data_len, after, after_len);
        }
    }
}

static void test_chunked_limits(void)
{
    static char buf[HTTP_CHUNK_TRAILER_MAX + HTTP_CHUNK_EXT_MAX + 64];
    struct http_chunked c;
    size_t n;

    /* chunk extensions: at the limit fine, beyond it -1 */
    for (int over = 0; over <= 1; over++) {
        n = 0;
        buf[n++] = '1';
        buf[n++] = ';';
        memset(buf + n, 'e', HTTP_CHUNK_EXT_MAX - 1 + (size_t)over);
        n += HTTP_CHUNK_EXT_MAX - 1 + (size_t)over;
        memcpy(buf + n, "\r\nx\r\n0\r\n\r\n", 10);
        n += 10;
        http_chunked_init(&c);
        size_t out = n;
        ASSERT_EQ(http_chunked_decode(&c, buf, &out), over ? -1 : 1);
    }

    /* extensions over the whole body: 16 lines of 4096 bytes fine, one more byte -1 */
    for (int over = 0; over <= 1; over++) {
        http_chunked_init(&c);
        int r = 0;
        for (int line = 0; line < 16 + over && r == 0; line++) {
            n = 0;
            buf[n++] = '1';
            buf[n++] = ';';
            size_t ext = line == 16 ? 1 : HTTP_CHUNK_EXT_MAX - 1; /* after the ';' */
            memset(buf + n, 'e', ext);
            n += ext;
            memcpy(buf + n, "\r\nx\r\n", 5);
            n += 5;
            r = http_chunked_decode(&c, buf, &n);
        }
        ASSERT_EQ(r, over ? -1 : 0);
        ASSERT_EQ(c.ext_total, over ? HTTP_CHUNK_EXT_TOTAL_MAX + 1 : HTTP_CHUNK_EXT_TOTAL_MAX);
    }

    /* trailers: at the limit fine, beyond it -1 */
    for (int over = 0; over <= 1; over++) {
        size_t line = HTTP_CHUNK_TRAILER_MAX + (size_t)over; /* "T: " v... CRLF */
        memcpy(buf, "0\r\nT: ", 6);
        n = 6;
        memset(buf + n, 'v', line - 5);
        n += line - 5;
        memcpy(buf + n, "\r\n\r\n", 4);
        n += 4;
        http_chunked_init(&c);
        size_t out = n;
        ASSERT_EQ(http_chunked_decode(&c, buf, &out), over ? -1 : 1);
    }

    /* largest size accepted; data is counted down across calls */
    http_chunked_init(&c);
    memcpy(buf, "7fffffffffffffff\r\nabc", 21);
    n = 21;
    ASSERT_EQ(http_chunked_decode(&c, buf, &n), 0);
    ASSERT_EQ(n, 3);
    ASSERT_MEMEQ(buf, n, "abc");
    ASSERT_TRUE(c.remaining == (uint64_t)INT64_MAX - 3);

    /* errors are sticky */
    http_chunked_init(&c);
    memcpy(buf, "z", 1);
    n = 1;
    ASSERT_EQ(http_chunked_decode(&c, buf, &n), -1);
    memcpy(buf, "0\r\n\r\n", 5);
    n = 5;
    ASSERT_EQ(http_chunked_decode(&c, buf, &n), -1);
}

int main(void)
{
    test_table();
    test_prefixes();
    test_views();
    test_framing();
    test_keep_alive();
    test_limits();
    test_str_eq_ci();
    test_chunked_table();
    test_chunked_limits();
    TEST_MAIN_END();
}
