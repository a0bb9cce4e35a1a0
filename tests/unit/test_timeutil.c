/* Unit tests for common/timeutil.c HTTP dates (RFC 9110 5.6.7). */
#include "common/timeutil.h"

#include "test.h"

int main(void)
{
    char out[32];
    time_format_http(784111777, out);
    ASSERT_STREQ(out, "Sun, 06 Nov 1994 08:49:37 GMT");
    time_t t = 0;
    const char *imf = "Sun, 06 Nov 1994 08:49:37 GMT";
    ASSERT_EQ(time_parse_http(imf, strlen(imf), &t), 0);
    ASSERT_EQ(t, 784111777);
    const char *rfc850 = "Sunday, 06-Nov-94 08:49:37 GMT";
    ASSERT_EQ(time_parse_http(rfc850, strlen(rfc850), &t), 0);
    ASSERT_EQ(t, 784111777);
    const char *asc = "Sun Nov  6 08:49:37 1994";
    ASSERT_EQ(time_parse_http(asc, strlen(asc), &t), 0);
    ASSERT_EQ(t, 784111777);
    const char *bad[] = {"",
                         "garbage",
                         "Sun, 06 Nov 1994 08:49:37 UTC",
                         "Sun, 6 Nov 1994 08:49:37 GMT",
                         "Sun, 06 Foo 1994 08:49:37 GMT",
                         "Sun, 06 Nov 1994 25:49:37 GMT",
                         "Sun, 06 Nov 1994 08:49:37 GMTx"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (time_parse_http(bad[i], strlen(bad[i]), &t) == 0)
            TEST_FAIL("parsed bad date '%s'", bad[i]);
    TEST_MAIN_END();
}
