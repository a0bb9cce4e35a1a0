/* Unit tests for http/filecache.c: hits, expiry, revalidation, replacement,
 * eviction and references held by responses. */
#include "http/filecache.h"

#include "test.h"

#include <fcntl.h>
#include <unistd.h>

static int make_file(const char *path, const char *text)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        abort();
    return fd;
}

int main(void)
{
    char path[] = "/tmp/ferry-fcache-XXXXXX";
    int tfd = mkstemp(path);
    close(tfd);
    struct fcache *fc = fcache_create(100, 50, 1000);
    int fd = make_file(path, "hello");
    struct stat st;
    fstat(fd, &st);
    struct fcache_entry *stale = NULL;
    ASSERT_TRUE(fcache_get(fc, "/a", 2, 0, &stale) == NULL);
    ASSERT_TRUE(stale == NULL);
    struct fcache_entry *e = fcache_put(fc, "/a", 2, fd, &st, "text/plain", 0);
    ASSERT_TRUE(e != NULL);
    ASSERT_MEMEQ(e->data, e->size, "hello");
    ASSERT_TRUE(fcache_get(fc, "/a", 2, 999, &stale) == e);
    /* Expired: returned as stale, revalidated while the file is unchanged. */
    ASSERT_TRUE(fcache_get(fc, "/a", 2, 1000, &stale) == NULL);
    ASSERT_TRUE(stale == e);
    ASSERT_TRUE(fcache_revalidate(stale, &st, 1000));
    ASSERT_TRUE(fcache_get(fc, "/a", 2, 1500, &stale) == e);
    /* A changed size fails revalidation. */
    struct stat st2 = st;
    st2.st_size = 6;
    ASSERT_TRUE(!fcache_revalidate(e, &st2, 2000));
    /* A response holding a reference keeps the data alive across replacement. */
    fcache_ref(e);
    close(fd);
    fd = make_file(path, "world!");
    fstat(fd, &st);
    struct fcache_entry *e2 = fcache_put(fc, "/a", 2, fd, &st, "text/plain", 3000);
    ASSERT_TRUE(e2 != NULL && e2 != e);
    ASSERT_MEMEQ(e->data, e->size, "hello");
    ASSERT_MEMEQ(e2->data, e2->size, "world!");
    fcache_release(e);
    /* Files over max_file are refused; the byte budget evicts the oldest. */
    close(fd);
    fd = make_file(path, "0123456789012345678901234567890123456789012345678901234");
    fstat(fd, &st);
    ASSERT_TRUE(fcache_put(fc, "/big", 4, fd, &st, "text/plain", 3000) == NULL);
    close(fd);
    fd = make_file(path, "0123456789012345678901234567890123456789");
    fstat(fd, &st);
    ASSERT_TRUE(fcache_put(fc, "/b", 2, fd, &st, "text/plain", 3000) != NULL);
    ASSERT_TRUE(fcache_put(fc, "/c", 2, fd, &st, "text/plain", 3000) != NULL);
    ASSERT_TRUE(fcache_put(fc, "/d", 2, fd, &st, "text/plain", 3000) != NULL);
    ASSERT_TRUE(fcache_get(fc, "/a", 2, 3000, &stale) == NULL && stale == NULL);
    ASSERT_TRUE(fcache_get(fc, "/d", 2, 3000, &stale) != NULL);
    close(fd);
    unlink(path);
    fcache_destroy(fc);
    TEST_MAIN_END();
}
