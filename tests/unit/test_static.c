/* Unit tests for http/static.c's pure helpers (included to reach statics). */
#include "../../src/http/static.c"

#include "test.h"

static void expect_path(const char *in, long want_len, const char *want)
{
    char out[64];
    long n = static_decode_path(in, strlen(in), out, sizeof(out));
    if (n != want_len) {
        TEST_FAIL("decode(%s) = %ld, want %ld", in, n, want_len);
        return;
    }
    if (want && strcmp(out, want) != 0)
        TEST_FAIL("decode(%s) = '%s', want '%s'", in, out, want);
}

static void test_decode(void)
{
    expect_path("/", 1, "/");
    expect_path("/a%20b.txt", 8, "/a b.txt");
    expect_path("/a//b///c", 6, "/a/b/c");
    expect_path("/%41%62", 3, "/Ab");
    expect_path("/..", -400, NULL);
    expect_path("/a/../b", -400, NULL);
    expect_path("/%2e%2e/etc/passwd", -400, NULL);
    expect_path("/%2E%2e%2fetc", -400, NULL);
    expect_path("/a/./b", -400, NULL);
    expect_path("/a/.", -400, NULL);
    expect_path("/a%00b", -400, NULL);
    expect_path("/a%zz", -400, NULL);
    expect_path("/a%2", -400, NULL);
    expect_path("/a%", -400, NULL);
    expect_path("relative", -400, NULL);
    /* Overlong UTF-8 for '.' is just two bytes of a name, not a dot. */
    expect_path("/%c0%ae%c0%ae/x", 7, "/\xc0\xae\xc0\xae/x");
    expect_path("/..%5cx", 5, "/..\\x");
    expect_path("/.hidden", 8, "/.hidden");
    expect_path("/...", 4, "/...");
    char longp[100];
    memset(longp, 'a', sizeof(longp));
    longp[0] = '/';
    longp[99] = '\0';
    expect_path(longp, -414, NULL);
}

static void test_etags(void)
{
    const char *etag = "\"5f-10\"";
    ASSERT_TRUE(etag_list_matches("\"5f-10\"", 7, etag));
    ASSERT_TRUE(etag_list_matches("W/\"5f-10\"", 9, etag));
    ASSERT_TRUE(etag_list_matches("\"x\", \"5f-10\"", 12, etag));
    ASSERT_TRUE(etag_list_matches("*", 1, etag));
    ASSERT_TRUE(!etag_list_matches("\"5f-11\"", 7, etag));
    ASSERT_TRUE(!etag_list_matches("\"5f-10", 6, etag));
    ASSERT_TRUE(!etag_list_matches("", 0, etag));
}

int main(void)
{
    test_decode();
    test_etags();
    TEST_MAIN_END();
}
