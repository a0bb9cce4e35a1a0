/* CGI/1.1 meta-variables from a parsed request, and the response header
 * block parser. */
#include "test.h"

#include "common/buf.h"
#include "fcgi/cgi.h"
#include "fcgi/record.h"
#include "http/parser.h"

#include <arpa/inet.h>
#include <netinet/in.h>

/* The value of name in the encoded pairs, or NULL (static copy). */
static const char *param(const struct buf *b, const char *name)
{
    static char val[4096];
    size_t off = 0;
    while (off < b->len) {
        const char *n, *v;
        size_t nl, vl;
        long k = fcgi_nv_parse(b->data + off, b->len - off, &n, &nl, &v, &vl);
        if (k < 0)
            return "(malformed)";
        off += (size_t)k;
        if (nl == strlen(name) && memcmp(n, name, nl) == 0 && vl < sizeof(val)) {
            memcpy(val, v, vl);
            val[vl] = '\0';
            return val;
        }
    }
    return NULL;
}

static void build(const char *raw, const char *path, const char *script, struct buf *out)
{
    static struct http_request req;
    ASSERT_TRUE(http_parse_request(raw, strlen(raw), NULL, &req) > 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(41234)};
    inet_pton(AF_INET, "10.1.2.3", &sin.sin_addr);
    struct cgi_request_info in = {
        .req = &req,
        .peer = (const struct sockaddr *)&sin,
        .path = path,
        .path_len = strlen(path),
        .location = "/app/",
        .document_root = "/srv/www",
        .script_filename = script,
        .server_software = "ferry/test",
        .server_port = 8080,
        .content_length = req.content_length,
    };
    buf_init(out, 1 << 20);
    ASSERT_EQ(cgi_params_build(out, &in), 0);
}

static void test_params(void)
{
    struct buf b;
    build("POST /app/a/b%20c?x=1&y=2 HTTP/1.1\r\nHost: example.org:9000\r\n"
          "Content-Length: 5\r\nContent-Type: application/x-www-form-urlencoded\r\n"
          "Proxy: http://evil/\r\nX-A: 1\r\nx-a: 2\r\nX_A: spoof\r\nCookie: a=1\r\n"
          "Cookie: b=2\r\nUser-Agent: t\r\n\r\n",
          "/app/a/b c", "/srv/front.php", &b);
    ASSERT_STREQ(param(&b, "GATEWAY_INTERFACE"), "CGI/1.1");
    ASSERT_STREQ(param(&b, "REQUEST_METHOD"), "POST");
    ASSERT_STREQ(param(&b, "REQUEST_URI"), "/app/a/b%20c?x=1&y=2");
    ASSERT_STREQ(param(&b, "QUERY_STRING"), "x=1&y=2");
    ASSERT_STREQ(param(&b, "SCRIPT_NAME"), "/app");
    ASSERT_STREQ(param(&b, "PATH_INFO"), "/a/b c");
    ASSERT_STREQ(param(&b, "SCRIPT_FILENAME"), "/srv/front.php");
    ASSERT_STREQ(param(&b, "DOCUMENT_ROOT"), "/srv/www");
    ASSERT_STREQ(param(&b, "SERVER_NAME"), "example.org");
    ASSERT_STREQ(param(&b, "SERVER_PORT"), "9000");
    ASSERT_STREQ(param(&b, "SERVER_PROTOCOL"), "HTTP/1.1");
    ASSERT_STREQ(param(&b, "REMOTE_ADDR"), "10.1.2.3");
    ASSERT_STREQ(param(&b, "REMOTE_PORT"), "41234");
    ASSERT_STREQ(param(&b, "CONTENT_LENGTH"), "5");
    ASSERT_STREQ(param(&b, "CONTENT_TYPE"), "application/x-www-form-urlencoded");
    ASSERT_STREQ(param(&b, "HTTP_X_A"), "1, 2");
    ASSERT_STREQ(param(&b, "HTTP_COOKIE"), "a=1; b=2");
    ASSERT_STREQ(param(&b, "HTTP_USER_AGENT"), "t");
    ASSERT_STREQ(param(&b, "HTTP_HOST"), "example.org:9000");
    ASSERT_TRUE(param(&b, "HTTP_PROXY") == NULL);
    ASSERT_TRUE(param(&b, "HTTP_CONTENT_LENGTH") == NULL);
    ASSERT_TRUE(param(&b, "HTTPS") == NULL);
    /* X_A never becomes HTTP_X_A: only the two X-A lines are in it */
    buf_finish(&b);
}

static void test_params_defaults(void)
{
    struct buf b;
    build("GET /app HTTP/1.0\r\n\r\n", "/app", "", &b);
    ASSERT_STREQ(param(&b, "SCRIPT_NAME"), "/app");
    ASSERT_STREQ(param(&b, "PATH_INFO"), "");
    ASSERT_STREQ(param(&b, "QUERY_STRING"), "");
    ASSERT_STREQ(param(&b, "SCRIPT_FILENAME"), "/srv/www/app");
    ASSERT_STREQ(param(&b, "SERVER_PORT"), "8080");
    ASSERT_STREQ(param(&b, "SERVER_PROTOCOL"), "HTTP/1.0");
    ASSERT_TRUE(param(&b, "CONTENT_LENGTH") == NULL);
    buf_finish(&b);
    /* chunked: no CONTENT_LENGTH; IPv6 host with port */
    build("PUT /app/x HTTP/1.1\r\nHost: [::1]:81\r\nTransfer-Encoding: chunked\r\n\r\n", "/app/x",
          "", &b);
    ASSERT_TRUE(param(&b, "CONTENT_LENGTH") == NULL);
    ASSERT_TRUE(param(&b, "HTTP_TRANSFER_ENCODING") == NULL);
    ASSERT_STREQ(param(&b, "SERVER_NAME"), "[::1]");
    ASSERT_STREQ(param(&b, "SERVER_PORT"), "81");
    buf_finish(&b);
}

static void test_head(void)
{
    struct cgi_head h;
    const char *s = "Status: 404 Not Found\r\nContent-Type: text/html\nX-Y:  z \r\n"
                    "Connection: close\r\nContent-Length: 3\r\n\r\nabc";
    long n = cgi_parse_head(s, strlen(s), &h);
    ASSERT_EQ(n, (long)(strlen(s) - 3));
    ASSERT_EQ(h.status, 404);
    ASSERT_EQ(h.content_length, 3);
    ASSERT_EQ(h.num_headers, 2);
    ASSERT_MEMEQ(h.headers[0].name.p, h.headers[0].name.len, "Content-Type");
    ASSERT_MEMEQ(h.headers[1].value.p, h.headers[1].value.len, "z");
    /* every prefix is incomplete */
    for (size_t i = 0; i < strlen(s) - 3; i++)
        ASSERT_EQ(cgi_parse_head(s, i, &h), -2);

    s = "Location: http://example.org/x\n\n";
    ASSERT_EQ(cgi_parse_head(s, strlen(s), &h), (long)strlen(s));
    ASSERT_EQ(h.status, 302);
    ASSERT_TRUE(!h.local_redirect);
    s = "Location: /local\n\n";
    ASSERT_EQ(cgi_parse_head(s, strlen(s), &h), (long)strlen(s));
    ASSERT_EQ(h.status, 302);
    ASSERT_TRUE(h.local_redirect);
    s = "Status: 301\nLocation: /moved\n\n";
    ASSERT_EQ(cgi_parse_head(s, strlen(s), &h), (long)strlen(s));
    ASSERT_EQ(h.status, 301);
    ASSERT_TRUE(!h.local_redirect);
    s = "Content-Type: text/plain\r\n\r\n";
    ASSERT_EQ(cgi_parse_head(s, strlen(s), &h), (long)strlen(s));
    ASSERT_EQ(h.status, 200);
    ASSERT_EQ(h.content_length, -1);

    static const char *const bad[] = {
        "HTTP/1.1 200 OK\r\n\r\n",
        "Status: 99\n\n",
        "Status: 700\n\n",
        "Status: 200x\n\n",
        " X: y\n\n",
        "X : y\n\n",
        "X: a\rb\n\n",
        "Content-Length: x\n\n",
        "Content-Length: 1\nContent-Length: 2\n\n",
        "Status: 200\nStatus: 201\n\n",
        "Status: 101\n\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        long r = cgi_parse_head(bad[i], strlen(bad[i]), &h);
        if (r != -1)
            TEST_FAIL("bad[%zu] \"%s\": %ld", i, bad[i], r);
    }
    /* over CGI_HEAD_MAX without an end: invalid, not incomplete */
    size_t big = CGI_HEAD_MAX + 10;
    char *p = malloc(big);
    memcpy(p, "X-Big: ", 7);
    memset(p + 7, 'a', big - 7);
    ASSERT_EQ(cgi_parse_head(p, big, &h), -1);
    ASSERT_EQ(cgi_parse_head(p, 1000, &h), -2);
    free(p);
    /* too many lines */
    struct buf many;
    buf_init(&many, 1 << 20);
    for (int i = 0; i <= CGI_MAX_HEADERS; i++)
        buf_printf(&many, "X-%d: v\n", i);
    buf_append_str(&many, "\n");
    ASSERT_EQ(cgi_parse_head(many.data, many.len, &h), -1);
    buf_finish(&many);
}

int main(void)
{
    test_params();
    test_params_defaults();
    test_head();
    TEST_MAIN_END();
}
