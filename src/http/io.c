/* Plain-socket implementation of the io seam (see io.h). */
#include "http/io.h"

#include <errno.h>
#include <stdint.h>
#include <sys/sendfile.h>
#include <sys/socket.h>

static ssize_t plain_recv(void *ctx, void *buf, size_t len)
{
    int fd = *(const int *)ctx;
    for (;;) {
        ssize_t n = recv(fd, buf, len, 0);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return -errno;
    }
}

static ssize_t plain_sendv(void *ctx, const struct iovec *iov, int iovcnt, bool more)
{
    int fd = *(const int *)ctx;
    /* sendmsg() does not modify the iovec array; the cast only drops const. */
    struct msghdr msg = {.msg_iov = (struct iovec *)(uintptr_t)iov, .msg_iovlen = (size_t)iovcnt};
    int flags = MSG_NOSIGNAL | (more ? MSG_MORE : 0);
    for (;;) {
        ssize_t n = sendmsg(fd, &msg, flags);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return -errno;
    }
}

static ssize_t plain_sendfile(void *ctx, int fd, off_t *off, size_t len)
{
    int sock = *(const int *)ctx;
    for (;;) {
        ssize_t n = sendfile(sock, fd, off, len);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return -errno;
    }
}

const struct io_ops io_plain = {
    .recv = plain_recv,
    .sendv = plain_sendv,
    .sendfile = plain_sendfile,
};
