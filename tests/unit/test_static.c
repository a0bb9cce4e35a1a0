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

/* The walk used where the kernel has no openat2: files and directories below
 * the root open, symlinks (even ones that stay inside) and dot components do
 * not; errno maps to a status that is never 404 for a file that may exist. */
static void test_open_nofollow(void)
{
    char dir[] = "/tmp/ferry-static-XXXXXX";
    ASSERT_TRUE(mkdtemp(dir) != NULL);
    int root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_TRUE(root >= 0);
    ASSERT_EQ(mkdirat(root, "sub", 0755), 0);
    int f = openat(root, "sub/file.txt", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_TRUE(f >= 0);
    ASSERT_EQ(write(f, "hello", 5), 5);
    close(f);
    ASSERT_EQ(symlinkat("sub", root, "linkdir"), 0);
    ASSERT_EQ(symlinkat("sub/file.txt", root, "link.txt"), 0);
    ASSERT_EQ(symlinkat("/etc/passwd", root, "sub/out"), 0);

    int fd = open_nofollow(root, "sub/file.txt");
    ASSERT_TRUE(fd >= 0);
    char got[8] = "";
    ASSERT_EQ(read(fd, got, sizeof(got)), 5);
    ASSERT_TRUE(memcmp(got, "hello", 5) == 0);
    close(fd);
    fd = open_nofollow(root, "sub//file.txt");
    ASSERT_TRUE(fd >= 0);
    close(fd);
    fd = open_nofollow(root, "sub/");
    ASSERT_TRUE(fd >= 0); /* a directory, for the index/redirect logic */
    close(fd);
    ASSERT_EQ(open_nofollow(root, "link.txt"), -ELOOP);
    ASSERT_TRUE(open_nofollow(root, "linkdir/file.txt") == -ENOTDIR ||
                open_nofollow(root, "linkdir/file.txt") == -ELOOP);
    ASSERT_EQ(open_nofollow(root, "sub/out"), -ELOOP);
    ASSERT_EQ(open_nofollow(root, "sub/../sub/file.txt"), -ENOENT);
    ASSERT_EQ(open_nofollow(root, "./sub/file.txt"), -ENOENT);
    ASSERT_EQ(open_nofollow(root, "missing"), -ENOENT);
    ASSERT_EQ(open_nofollow(root, "sub/file.txt/x"), -ENOTDIR);

    ASSERT_EQ(static_open_errno_status(ENOENT), 404);
    ASSERT_EQ(static_open_errno_status(ELOOP), 404);
    ASSERT_EQ(static_open_errno_status(EACCES), 403);
    ASSERT_EQ(static_open_errno_status(EMFILE), 503);
    ASSERT_EQ(static_open_errno_status(EIO), 500);
    ASSERT_EQ(static_open_errno_status(ENOSYS), 500);

    unlinkat(root, "sub/out", 0);
    unlinkat(root, "link.txt", 0);
    unlinkat(root, "linkdir", 0);
    unlinkat(root, "sub/file.txt", 0);
    unlinkat(root, "sub", AT_REMOVEDIR);
    close(root);
    rmdir(dir);
}

int main(void)
{
    test_open_nofollow();
    test_decode();
    test_etags();
    TEST_MAIN_END();
}
