/* Unit tests for src/offload/serve.c: the Location encoding and the auto mode. */
#include "common/conf.h"
#include "offload/serve.h"
#include "test.h"

static void expect_encoded(const char *in, const char *want)
{
    char out[256];
    size_t n = offload_serve_encode(in, strlen(in), out);
    ASSERT_STREQ(out, want);
    ASSERT_EQ(n, strlen(want));
}

static void test_encode(void)
{
    expect_encoded("a/b-c_d.e~f/AZaz09", "a/b-c_d.e~f/AZaz09");
    expect_encoded("a b+c%d", "a%20b%2Bc%25d");
    expect_encoded("#?&=;:@!$'()*,", "%23%3F%26%3D%3B%3A%40%21%24%27%28%29%2A%2C");
    expect_encoded("\"<>\\^`{|}[]", "%22%3C%3E%5C%5E%60%7B%7C%7D%5B%5D");
    /* CR and LF can never survive into a header. */
    expect_encoded("a\r\nb\x7f", "a%0D%0Ab%7F");
    expect_encoded("caf\xc3\xa9 \xf0\x9f\x98\x80", "caf%C3%A9%20%F0%9F%98%80");
    expect_encoded("", "");
    /* Encoded once: an escape in the input is data. */
    expect_encoded("%41", "%2541");
}

static void test_auto_mode(void)
{
    struct ferry_conf c;
    conf_init_defaults(&c);
    ASSERT_EQ(offload_serve_mode(&c), REDIRECT_PROXY); /* dir store */
    c.store.type = STORE_S3;
    ASSERT_EQ(offload_serve_mode(&c), REDIRECT_PRESIGN);
    char url[] = "https://cdn.example.com/o/";
    char *saved = c.offload.public_url;
    c.offload.public_url = url;
    ASSERT_EQ(offload_serve_mode(&c), REDIRECT_PUBLIC);
    c.offload.redirect = REDIRECT_PRESIGN;
    ASSERT_EQ(offload_serve_mode(&c), REDIRECT_PRESIGN);
    c.offload.public_url = saved;
    conf_finish(&c);
}

int main(void)
{
    test_encode();
    test_auto_mode();
    TEST_MAIN_END();
}
