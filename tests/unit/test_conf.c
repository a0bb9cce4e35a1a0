/* Unit tests for common/conf.c: durations, sizes, the key table, and error lines. */
#include "common/conf.h"

#include "test.h"

#include <errno.h>
#include <unistd.h>

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/ferry-test-conf-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        abort();
    close(fd);
    return path;
}

static void test_durations(void)
{
    uint64_t ms = 0;
    ASSERT_EQ(conf_parse_duration("500ms", &ms), 0);
    ASSERT_EQ(ms, 500);
    ASSERT_EQ(conf_parse_duration("2s", &ms), 0);
    ASSERT_EQ(ms, 2000);
    ASSERT_EQ(conf_parse_duration("5m", &ms), 0);
    ASSERT_EQ(ms, 300000);
    ASSERT_EQ(conf_parse_duration("1h", &ms), 0);
    ASSERT_EQ(ms, 3600000);
    ASSERT_EQ(conf_parse_duration("1m30s", &ms), 0);
    ASSERT_EQ(ms, 90000);
    ASSERT_EQ(conf_parse_duration("300", &ms), 0);
    ASSERT_EQ(ms, 300000);
    ASSERT_EQ(conf_parse_duration("", &ms), -EINVAL);
    ASSERT_EQ(conf_parse_duration("2 s", &ms), -EINVAL);
    ASSERT_EQ(conf_parse_duration("2x", &ms), -EINVAL);
    ASSERT_EQ(conf_parse_duration("-1s", &ms), -EINVAL);
    ASSERT_EQ(conf_parse_duration("1s5", &ms), -EINVAL);
    ASSERT_EQ(conf_parse_duration("99999999999999999999s", &ms), -ERANGE);
}

static void test_sizes(void)
{
    uint64_t n = 0;
    ASSERT_EQ(conf_parse_size("64KiB", &n), 0);
    ASSERT_EQ(n, 65536);
    ASSERT_EQ(conf_parse_size("16MiB", &n), 0);
    ASSERT_EQ(n, 16 << 20);
    ASSERT_EQ(conf_parse_size("4096", &n), 0);
    ASSERT_EQ(n, 4096);
    ASSERT_EQ(conf_parse_size("1G", &n), 0);
    ASSERT_EQ(n, 1 << 30);
    ASSERT_EQ(conf_parse_size("16MB", &n), -EINVAL);
    ASSERT_EQ(conf_parse_size("KiB", &n), -EINVAL);
    ASSERT_EQ(conf_parse_size("1.5MiB", &n), -EINVAL);
}

static void test_defaults(void)
{
    struct ferry_conf c;
    conf_init_defaults(&c);
    ASSERT_EQ(c.server.listen.count, 1);
    ASSERT_STREQ(c.server.listen.items[0], "127.0.0.1:8080");
    ASSERT_STREQ(c.server.root, "./public");
    ASSERT_EQ(c.server.workers, 0);
    ASSERT_EQ(c.server.keepalive_timeout_ms, 15000);
    ASSERT_EQ(c.server.header_timeout_ms, 10000);
    ASSERT_EQ(c.server.max_header_size, 16384);
    ASSERT_EQ(c.server.body_timeout_ms, 60000);
    ASSERT_EQ(c.server.max_body_size, 64 * 1024 * 1024);
    ASSERT_EQ(c.server.max_connections, 10000);
    ASSERT_EQ(c.maintenance.retry_after_ms, 300000);
    ASSERT_EQ(c.store.type, STORE_DIR);
    conf_finish(&c);
}

static void expect_error(const char *text, const char *want)
{
    struct ferry_conf c;
    conf_init_defaults(&c);
    char *path = write_tmp(text);
    struct buf err;
    buf_init(&err, 65536);
    int r = conf_load(&c, path, &err);
    ASSERT_EQ(r, -EINVAL);
    char full[512];
    snprintf(full, sizeof(full), "%s:%s", path, want);
    if (!err.data || !strstr(err.data, full))
        TEST_FAIL("want error containing '%s', got '%s'", full, err.data ? err.data : "");
    buf_finish(&err);
    conf_finish(&c);
    unlink(path);
}

static void test_errors(void)
{
    expect_error("[server]\nlisten = 127.0.0.1:80x\n",
                 "2: key 'listen': cannot parse '127.0.0.1:80x'");
    expect_error("[server]\n\nbogus = 1\n", "3: key 'bogus': unknown key in [server]");
    expect_error("[nosuch]\nx = 1\n", "2: unknown section '[nosuch]'");
    expect_error("[server]\nworkers = many\n", "2: key 'workers': cannot parse 'many'");
    expect_error("[server]\nworkers = 0\n", "2: key 'workers': 0 is out of range 1..256");
    expect_error("[server]\nheader_timeout = 10q\n", "2: key 'header_timeout': cannot parse '10q'");
    expect_error("[server]\nmax_header_size = 10\n",
                 "2: key 'max_header_size': '10' is out of range 1KiB..1MiB");
    /* nginx's "0 = unlimited" would silently mean something else here: refuse it. */
    expect_error("[server]\nmax_body_size = 0\n",
                 "2: key 'max_body_size': '0' is out of range 1..1024GiB");
    expect_error("[server]\nbody_timeout = 0\n",
                 "2: key 'body_timeout': '0' is out of range 100ms..1h");
    expect_error("[server]\nroot = a\nroot = b\n", "3: key 'root': set twice (first on line 2)");
    expect_error("[server]\nthis line has no equals sign\n", "2: syntax error");
    expect_error("[store]\ntype = s4\n", "2: key 'type': cannot parse 's4' (want one of dir,s3)");
    expect_error("[store]\ntype = s3\n", " key 'bucket': required when [store] type = s3");
    expect_error("[backend]\naccel_redirect = on\n",
                 " key 'accel_redirect': needs [offload] spool");
    expect_error("[maintenance]\nallow_from = 10.0.0.0/33\n",
                 "2: key 'allow_from': cannot parse '10.0.0.0/33'");
}

static void test_good_file(void)
{
    struct ferry_conf c;
    conf_init_defaults(&c);
    char *path = write_tmp("; comment\n[server]\nlisten = 127.0.0.1:9 [::1]:9 ; two\n"
                           "workers = 3\nkeepalive_timeout = 500ms\n"
                           "[maintenance]\nallow_from = 127.0.0.1/32 ::1/128\n");
    struct buf err;
    buf_init(&err, 65536);
    ASSERT_EQ(conf_load(&c, path, &err), 0);
    ASSERT_EQ(c.server.listen.count, 2);
    ASSERT_STREQ(c.server.listen.items[1], "[::1]:9");
    ASSERT_EQ(c.server.workers, 3);
    ASSERT_EQ(c.server.keepalive_timeout_ms, 500);
    ASSERT_EQ(c.maintenance.allow_from.count, 2);
    struct buf dump;
    buf_init(&dump, 1 << 20);
    conf_dump(&c, &dump);
    ASSERT_TRUE(strstr(dump.data, "keepalive_timeout = 500ms\n") != NULL);
    ASSERT_TRUE(strstr(dump.data, "max_header_size = 16KiB\n") != NULL);
    ASSERT_TRUE(strstr(dump.data, "max_body_size = 64MiB\n") != NULL);
    buf_finish(&dump);
    buf_finish(&err);
    conf_finish(&c);
    unlink(path);
}

int main(void)
{
    test_durations();
    test_sizes();
    test_defaults();
    test_errors();
    test_good_file();
    TEST_MAIN_END();
}
