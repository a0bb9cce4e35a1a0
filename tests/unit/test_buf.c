/* Unit tests for common/buf.c: the maximum is enforced and nothing changes on failure. */
#include "common/buf.h"

#include "test.h"

#include <errno.h>

int main(void)
{
    struct buf b;
    buf_init(&b, 10);
    ASSERT_EQ(buf_append_str(&b, "hello"), 0);
    ASSERT_EQ(buf_printf(&b, "%d", 12345), 0);
    ASSERT_STREQ(b.data, "hello12345");
    ASSERT_EQ(buf_append_str(&b, "!"), -ENOBUFS);
    ASSERT_EQ(buf_printf(&b, "x"), -ENOBUFS);
    ASSERT_STREQ(b.data, "hello12345");
    buf_consume(&b, 5);
    ASSERT_STREQ(b.data, "12345");
    ASSERT_EQ(b.len, 5);
    buf_reset(&b);
    ASSERT_EQ(b.len, 0);
    ASSERT_EQ(buf_append(&b, "0123456789", 10), 0);
    buf_finish(&b);
    buf_finish(NULL);
    TEST_MAIN_END();
}
