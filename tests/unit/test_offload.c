/* The offloader's pure decisions, reached by including offload.c (lighttpd/curl
 * style): which store errors are permanent, how throttling moves the number of
 * transfers in flight, how file names appear in errors, identity comparison. The
 * pipeline itself is exercised end to end in tests/integration/test_offload.py. */
#include "../../src/offload/offload.c"

#include "test.h"

static struct store_error serr(int status, const char *code)
{
    struct store_error e = {.http_status = status};
    snprintf(e.code, sizeof(e.code), "%s", code);
    return e;
}

static void test_error_permanent(void)
{
    struct store_error e = serr(400, "RequestTimeout");
    ASSERT_TRUE(!error_permanent(-EIO, &e));
    e = serr(400, "BadDigest");
    ASSERT_TRUE(!error_permanent(-EBADMSG, &e));
    e = serr(400, "ExpiredToken");
    ASSERT_TRUE(!error_permanent(-EACCES, &e));
    e = serr(403, "RequestTimeTooSkewed");
    ASSERT_TRUE(!error_permanent(-EACCES, &e));
    e = serr(403, "AccessDenied");
    ASSERT_TRUE(error_permanent(-EACCES, &e));
    e = serr(400, "InvalidArgument");
    ASSERT_TRUE(error_permanent(-EIO, &e));
    e = serr(503, "SlowDown");
    ASSERT_TRUE(!error_permanent(-EAGAIN, &e));
    e = serr(500, "InternalError");
    ASSERT_TRUE(!error_permanent(-EIO, &e));
    e = serr(404, "NoSuchKey"); /* a HEAD racing the upload: try again */
    ASSERT_TRUE(!error_permanent(-ENOENT, &e));
    e = serr(429, "TooManyRequests");
    ASSERT_TRUE(!error_permanent(-EIO, &e));
    ASSERT_TRUE(error_permanent(-EINVAL, NULL));
    ASSERT_TRUE(!error_permanent(-EIO, NULL));
    ASSERT_TRUE(!error_permanent(-ENOSPC, NULL)); /* a full archive disk is retried */
}

static void test_throttle(void)
{
    struct ferry_conf conf;
    memset(&conf, 0, sizeof(conf));
    conf.offload.concurrency = 8;
    struct offload o;
    memset(&o, 0, sizeof(o));
    o.conf = &conf;
    o.limit = 8;
    pthread_mutex_init(&o.mu, NULL);
    struct store_error slow = serr(503, "SlowDown"), plain503 = serr(503, ""),
                       other = serr(500, "InternalError");
    throttle_update(&o, -EAGAIN, &slow);
    ASSERT_EQ(o.limit, 4);
    throttle_update(&o, -EIO, &plain503); /* every 503, with or without SlowDown */
    ASSERT_EQ(o.limit, 2);
    throttle_update(&o, -EIO, &other); /* a 500 is no throttling */
    ASSERT_EQ(o.limit, 2);
    throttle_update(&o, -EAGAIN, &slow);
    throttle_update(&o, -EAGAIN, &slow);
    ASSERT_EQ(o.limit, 1);
    ASSERT_EQ(o.st.concurrency, 1);
    /* Back up by one after as many successes as the limit allows, never past the
     * configured concurrency. */
    throttle_update(&o, 0, NULL);
    ASSERT_EQ(o.limit, 2);
    throttle_update(&o, 0, NULL);
    ASSERT_EQ(o.limit, 2);
    throttle_update(&o, 0, NULL);
    ASSERT_EQ(o.limit, 3);
    for (int i = 0; i < 100; i++)
        throttle_update(&o, 0, NULL);
    ASSERT_EQ(o.limit, 8);
    ASSERT_EQ(o.st.concurrency, 8);
    pthread_mutex_destroy(&o.mu);
}

static void test_rel_printable(void)
{
    char out[64];
    rel_printable("a/b c+\xc3\xbc.jpg", out, sizeof(out));
    ASSERT_STREQ(out, "a/b c+\xc3\xbc.jpg"); /* valid UTF-8 stays readable */
    rel_printable("bad\xff.jpg", out, sizeof(out));
    ASSERT_STREQ(out, "bad\\xff.jpg");
    rel_printable("tab\there\\", out, sizeof(out));
    ASSERT_STREQ(out, "tab\\x09here\\x5c");
    char small[8];
    rel_printable("\xff\xff\xff\xff", small, sizeof(small)); /* truncated, terminated */
    ASSERT_TRUE(strlen(small) < sizeof(small));
}

static void test_ident(void)
{
    struct stat st;
    memset(&st, 0, sizeof(st));
    st.st_dev = 3;
    st.st_ino = 77;
    st.st_size = 1234;
    st.st_mtim.tv_sec = 10;
    st.st_mtim.tv_nsec = 5;
    st.st_ctim.tv_sec = 11;
    st.st_ctim.tv_nsec = 6;
    struct offload_ident a, b;
    offload_ident_from_stat(&st, &a);
    ASSERT_EQ(a.mtime_ns, 10000000005LL);
    ASSERT_EQ(a.ctime_ns, 11000000006LL);
    b = a;
    ASSERT_TRUE(offload_ident_equal(&a, &b));
    b.ctime_ns++; /* a hard link, a chmod, a write: all change ctime */
    ASSERT_TRUE(!offload_ident_equal(&a, &b));
    b = a;
    b.ino++;
    ASSERT_TRUE(!offload_ident_equal(&a, &b));
}

int main(void)
{
    test_error_permanent();
    test_throttle();
    test_rel_printable();
    test_ident();
    if (test_failures)
        fprintf(stderr, "%d failure(s)\n", test_failures);
    return test_failures ? 1 : 0;
}
