/* Unit tests for http/chunkq.c through real sockets and a real temp file:
 * the sendmsg/sendfile shape of a response, coalescing, the copy maximum,
 * release exactly once, partial writes and -EAGAIN, watermarks, fd ownership
 * and a file shorter than its promised length. */
#include "http/chunkq.h"

#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* An io that forwards to io_plain and records the calls it saw. The fd comes
 * first so that a struct rec * is also a valid io_plain ctx (int *). */
struct rec {
    int fd;
    int sendv_calls;
    int last_iovcnt;
    bool last_more;
    int sendfile_calls;
};

static ssize_t rec_recv(void *ctx, void *buf, size_t len)
{
    return io_plain.recv(ctx, buf, len);
}

static ssize_t rec_sendv(void *ctx, const struct iovec *iov, int iovcnt, bool more)
{
    struct rec *r = ctx;
    r->sendv_calls++;
    r->last_iovcnt = iovcnt;
    r->last_more = more;
    return io_plain.sendv(&r->fd, iov, iovcnt, more);
}

static ssize_t rec_sendfile(void *ctx, int fd, off_t *off, size_t len)
{
    struct rec *r = ctx;
    r->sendfile_calls++;
    return io_plain.sendfile(&r->fd, fd, off, len);
}

static const struct io_ops rec_io = {rec_recv, rec_sendv, rec_sendfile};

static int released;

static void count_release(void *arg)
{
    (void)arg;
    released++;
}

/* A socket pair: sv[0] is the non-blocking writer, sv[1] the reader. */
static void make_pair(int sv[2], int sndbuf)
{
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        abort();
    if (sndbuf > 0)
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
}

/* Read everything available on fd into out (at most cap bytes); returns the count. */
static size_t drain(int fd, char *out, size_t cap)
{
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, out + got, cap - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

/* A temp file holding len bytes of a known pattern; returns an fd open for reading. */
static int make_file(size_t len, char *pattern_out)
{
    char path[] = "/tmp/test_chunkq.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        abort();
    unlink(path);
    for (size_t i = 0; i < len; i++)
        pattern_out[i] = (char)('a' + (i * 7 + i / 251) % 26);
    if (write(fd, pattern_out, len) != (ssize_t)len)
        abort();
    return fd;
}

static bool fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

/* The 4 KiB static response: status line and headers copied (coalesced into
 * one chunk), the cached body referenced; one sendmsg, no MSG_MORE. */
static void test_static_shape(void)
{
    int sv[2];
    make_pair(sv, 0);
    static char body[4096];
    memset(body, 'b', sizeof(body));
    struct chunkq q;
    chunkq_init(&q, 1 << 16, 0, 1 << 20);
    ASSERT_EQ(chunkq_append_mem(&q, "HTTP/1.1 200 OK\r\n", 17), 0);
    ASSERT_EQ(chunkq_append_mem(&q, "Content-Length: 4096\r\n\r\n", 24), 0);
    released = 0;
    ASSERT_EQ(chunkq_append_ref(&q, body, sizeof(body), count_release, NULL), 0);
    ASSERT_EQ(chunkq_queued(&q), 17 + 24 + 4096);
    struct rec r = {.fd = sv[0]};
    bool drained = false;
    ASSERT_EQ(chunkq_write(&q, &rec_io, &r, false, &drained), 17 + 24 + 4096);
    ASSERT_EQ(r.sendv_calls, 1);
    ASSERT_EQ(r.last_iovcnt, 2); /* the two copies coalesced */
    ASSERT_EQ(r.last_more, false);
    ASSERT_EQ(r.sendfile_calls, 0);
    ASSERT_EQ(released, 1);
    ASSERT_TRUE(drained);
    ASSERT_TRUE(chunkq_is_empty(&q));
    ASSERT_EQ(chunkq_written(&q), 17 + 24 + 4096);
    static char got[8192];
    size_t n = drain(sv[1], got, sizeof(got));
    ASSERT_EQ(n, 17 + 24 + 4096);
    ASSERT_MEMEQ(got, 41, "HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n");
    ASSERT_TRUE(memcmp(got + 41, body, sizeof(body)) == 0);
    /* An empty queue writes nothing and reports no drain. */
    ASSERT_EQ(chunkq_write(&q, &rec_io, &r, false, &drained), 0);
    ASSERT_TRUE(!drained);
    ASSERT_EQ(r.sendv_calls, 1);
    chunkq_finish(&q);
    ASSERT_EQ(released, 1);
    close(sv[0]);
    close(sv[1]);
}

/* Head and a file: one sendmsg with MSG_MORE, then sendfile; two ranges share
 * one fd, which is closed when the queue is cleared. */
static void test_file_chunks(void)
{
    int sv[2];
    make_pair(sv, 0);
    static char pat[3000];
    int fd = make_file(sizeof(pat), pat);
    struct chunkq q;
    chunkq_init(&q, 1 << 16, 0, 1 << 20);
    ASSERT_EQ(chunkq_append_mem(&q, "HEAD\n", 5), 0);
    ASSERT_EQ(chunkq_append_file(&q, fd, 100, 1000), 0);
    ASSERT_EQ(chunkq_append_mem(&q, "--sep\n", 6), 0);
    ASSERT_EQ(chunkq_append_file_again(&q, 2500, 500), 0);
    ASSERT_EQ(chunkq_append_file_again(&q, 2999, -1), -EINVAL);
    ASSERT_EQ(chunkq_queued(&q), 5 + 1000 + 6 + 500);
    struct rec r = {.fd = sv[0]};
    ASSERT_EQ(chunkq_write(&q, &rec_io, &r, false, NULL), 5 + 1000 + 6 + 500);
    ASSERT_EQ(r.sendv_calls, 2);
    ASSERT_EQ(r.last_more, true); /* the separator is followed by a file range */
    ASSERT_EQ(r.sendfile_calls, 2);
    static char got[4096];
    size_t n = drain(sv[1], got, sizeof(got));
    ASSERT_EQ(n, 1511);
    ASSERT_MEMEQ(got, 5, "HEAD\n");
    ASSERT_TRUE(memcmp(got + 5, pat + 100, 1000) == 0);
    ASSERT_MEMEQ(got + 1005, 6, "--sep\n");
    ASSERT_TRUE(memcmp(got + 1011, pat + 2500, 500) == 0);
    /* The queue still remembers the file for chunkq_append_file_again(). */
    ASSERT_TRUE(fd_is_open(fd));
    chunkq_clear(&q);
    ASSERT_TRUE(!fd_is_open(fd));
    ASSERT_EQ(chunkq_written(&q), 0);
    ASSERT_EQ(chunkq_append_file_again(&q, 0, 1), -EBADF);

    /* A bad range still takes the fd: closed at once, queue unchanged. */
    fd = make_file(10, pat);
    ASSERT_EQ(chunkq_append_file(&q, fd, 0, -5), -EINVAL);
    ASSERT_TRUE(!fd_is_open(fd));
    ASSERT_EQ(chunkq_queued(&q), 0);
    ASSERT_EQ(chunkq_append_file(&q, -1, 0, 5), -EINVAL);

    /* A file dropped before being written is closed by the clear. */
    fd = make_file(10, pat);
    ASSERT_EQ(chunkq_append_file(&q, fd, 0, 10), 0);
    chunkq_finish(&q);
    ASSERT_TRUE(!fd_is_open(fd));
    close(sv[0]);
    close(sv[1]);
}

/* Appending a copy past the maximum fails and changes nothing. */
static void test_max(void)
{
    int sv[2];
    make_pair(sv, 0);
    struct chunkq q;
    chunkq_init(&q, 16, 0, 1 << 20);
    ASSERT_EQ(chunkq_append_mem(&q, "0123456789", 10), 0);
    ASSERT_EQ(chunkq_append_mem(&q, "abcdefg", 7), -ENOBUFS);
    ASSERT_EQ(chunkq_queued(&q), 10);
    /* Referenced memory does not count against the maximum. */
    ASSERT_EQ(chunkq_append_ref(&q, "REFERENCED", 10, NULL, NULL), 0);
    ASSERT_EQ(chunkq_append_mem(&q, "abcdef", 6), 0);
    ASSERT_EQ(chunkq_append_mem(&q, "x", 1), -ENOBUFS);
    ASSERT_EQ(chunkq_queued(&q), 26);
    int fd = sv[0];
    ASSERT_EQ(chunkq_write(&q, &io_plain, &fd, false, NULL), 26);
    char got[64];
    size_t n = drain(sv[1], got, sizeof(got));
    ASSERT_MEMEQ(got, n, "0123456789REFERENCEDabcdef");
    /* Written copies no longer count. */
    ASSERT_EQ(chunkq_append_mem(&q, "0123456789abcdef", 16), 0);
    ASSERT_EQ(chunkq_append_mem(&q, "", 0), 0);
    ASSERT_EQ(chunkq_append_mem(&q, "x", 1), -ENOBUFS);
    chunkq_finish(&q);
    close(sv[0]);
    close(sv[1]);
}

/* release() runs exactly once: when written, when dropped unwritten, and for
 * a zero-length reference. */
static void test_release_once(void)
{
    int sv[2];
    make_pair(sv, 0);
    struct chunkq q;
    chunkq_init(&q, 1024, 0, 1 << 20);
    released = 0;
    ASSERT_EQ(chunkq_append_ref(&q, "abc", 3, count_release, NULL), 0);
    ASSERT_EQ(chunkq_append_ref(&q, "", 0, count_release, NULL), 0);
    ASSERT_EQ(chunkq_append_ref(&q, "def", 3, count_release, NULL), 0);
    chunkq_clear(&q);
    ASSERT_EQ(released, 3);
    chunkq_clear(&q);
    ASSERT_EQ(released, 3);

    released = 0;
    ASSERT_EQ(chunkq_append_ref(&q, "", 0, count_release, NULL), 0);
    ASSERT_TRUE(chunkq_is_empty(&q));
    ASSERT_EQ(chunkq_append_ref(&q, "abc", 3, count_release, NULL), 0);
    ASSERT_EQ(chunkq_append_ref(&q, "", 0, count_release, NULL), 0);
    int fd = sv[0];
    ASSERT_EQ(chunkq_write(&q, &io_plain, &fd, false, NULL), 3);
    ASSERT_EQ(released, 3);
    chunkq_finish(&q);
    ASSERT_EQ(released, 3);
    close(sv[0]);
    close(sv[1]);
}

/* A small send buffer: writes come back short and then -EAGAIN; the reader
 * still gets every byte in order, each release happens once, and the drain
 * below the low mark is reported exactly once. */
static void test_partial_and_watermarks(void)
{
    enum { REF = 200000, FILE_LEN = 300000, TOTAL = 3 + REF + 2 + FILE_LEN };
    int sv[2];
    make_pair(sv, 4096);
    static char ref[REF], pat[FILE_LEN], want[TOTAL], got[TOTAL + 1];
    for (size_t i = 0; i < REF; i++)
        ref[i] = (char)(i % 251);
    int fd = make_file(FILE_LEN, pat);
    memcpy(want, "abc", 3);
    memcpy(want + 3, ref, REF);
    memcpy(want + 3 + REF, "\r\n", 2);
    memcpy(want + 5 + REF, pat, FILE_LEN);

    struct chunkq q;
    const uint64_t low = 100000, high = 400000;
    chunkq_init(&q, 1024, low, high);
    released = 0;
    ASSERT_EQ(chunkq_append_mem(&q, "abc", 3), 0);
    ASSERT_TRUE(!chunkq_is_full(&q));
    ASSERT_EQ(chunkq_append_ref(&q, ref, REF, count_release, NULL), 0);
    ASSERT_EQ(chunkq_append_mem(&q, "\r\n", 2), 0);
    ASSERT_EQ(chunkq_append_file(&q, fd, 0, FILE_LEN), 0);
    ASSERT_TRUE(chunkq_is_full(&q));

    size_t got_len = 0;
    int eagain = 0, shorts = 0, drains = 0, rounds = 0;
    while (!chunkq_is_empty(&q) && rounds++ < 100000) {
        uint64_t before = chunkq_queued(&q);
        bool drained = false;
        ssize_t n = chunkq_write(&q, &io_plain, &sv[0], false, &drained);
        if (n == -EAGAIN) {
            eagain++;
            ASSERT_EQ(chunkq_queued(&q), before);
        } else {
            ASSERT_TRUE(n > 0);
            ASSERT_EQ(chunkq_queued(&q), before - (uint64_t)n);
            if (!chunkq_is_empty(&q))
                shorts++;
        }
        if (drained) {
            drains++;
            ASSERT_TRUE(before > low);
            ASSERT_TRUE(chunkq_queued(&q) <= low);
        }
        /* The ref is released once its last byte went out, not before. */
        ASSERT_EQ(released, chunkq_written(&q) >= 3 + REF ? 1 : 0);
        /* Drain every other round only, so that the next write finds the
         * socket still full and must return -EAGAIN. */
        if (rounds % 2 == 0)
            got_len += drain(sv[1], got + got_len, sizeof(got) - got_len);
    }
    got_len += drain(sv[1], got + got_len, sizeof(got) - got_len);
    ASSERT_EQ(got_len, TOTAL);
    ASSERT_TRUE(memcmp(got, want, TOTAL) == 0);
    ASSERT_TRUE(eagain > 0);
    ASSERT_TRUE(shorts > 0);
    ASSERT_EQ(drains, 1);
    ASSERT_EQ(released, 1);
    ASSERT_EQ(chunkq_written(&q), TOTAL);
    ASSERT_TRUE(!chunkq_is_full(&q));
    chunkq_finish(&q);
    close(sv[0]);
    close(sv[1]);
}

/* A file shorter than promised fails with -ENODATA after what it had. */
static void test_short_file(void)
{
    int sv[2];
    make_pair(sv, 0);
    char pat[100];
    int fd = make_file(sizeof(pat), pat);
    struct chunkq q;
    chunkq_init(&q, 1024, 0, 1 << 20);
    ASSERT_EQ(chunkq_append_mem(&q, "H", 1), 0);
    ASSERT_EQ(chunkq_append_file(&q, fd, 0, 200), 0);
    ASSERT_EQ(chunkq_write(&q, &io_plain, &sv[0], false, NULL), -ENODATA);
    ASSERT_EQ(chunkq_written(&q), 101);
    ASSERT_EQ(chunkq_queued(&q), 100);
    char got[256];
    size_t n = drain(sv[1], got, sizeof(got));
    ASSERT_EQ(n, 101);
    ASSERT_TRUE(memcmp(got + 1, pat, 100) == 0);
    chunkq_clear(&q);
    ASSERT_TRUE(!fd_is_open(fd));
    ASSERT_TRUE(chunkq_is_empty(&q));
    close(sv[0]);
    close(sv[1]);
}

/* A socket error is returned as -errno (and raises no SIGPIPE). */
static void test_peer_gone(void)
{
    int sv[2];
    make_pair(sv, 0);
    close(sv[1]);
    struct chunkq q;
    chunkq_init(&q, 1024, 0, 1 << 20);
    released = 0;
    ASSERT_EQ(chunkq_append_ref(&q, "abc", 3, count_release, NULL), 0);
    ASSERT_EQ(chunkq_write(&q, &io_plain, &sv[0], true, NULL), -EPIPE);
    ASSERT_EQ(chunkq_written(&q), 0);
    ASSERT_EQ(released, 0);
    chunkq_finish(&q);
    ASSERT_EQ(released, 1);
    close(sv[0]);
}

/* The plain io's recv: data, -EAGAIN when empty, 0 at end of stream. */
static void test_io_recv(void)
{
    int sv[2];
    make_pair(sv, 0);
    char buf[8];
    ASSERT_EQ(io_plain.recv(&sv[1], buf, sizeof(buf)), -EAGAIN);
    ASSERT_EQ(write(sv[0], "hi", 2), 2);
    ASSERT_EQ(io_plain.recv(&sv[1], buf, sizeof(buf)), 2);
    ASSERT_MEMEQ(buf, 2, "hi");
    close(sv[0]);
    ASSERT_EQ(io_plain.recv(&sv[1], buf, sizeof(buf)), 0);
    close(sv[1]);
}

int main(void)
{
    /* sendfile(2) has no MSG_NOSIGNAL; the server ignores SIGPIPE too. */
    signal(SIGPIPE, SIG_IGN);
    test_static_shape();
    test_file_chunks();
    test_max();
    test_release_once();
    test_partial_and_watermarks();
    test_short_file();
    test_peer_gone();
    test_io_recv();
    TEST_MAIN_END();
}
