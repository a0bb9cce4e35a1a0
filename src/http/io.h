/* The seam between a connection and its socket. Everything the connection
 * reads or writes goes through a struct io_ops, so that TLS can later be a
 * second implementation without handlers or the chunk queue changing.
 *
 * Common contract of every operation: it never blocks on a non-blocking
 * socket, retries EINTR itself, and returns a byte count or a negative errno;
 * -EAGAIN means "nothing could be transferred now, wait for readiness". A
 * short count is normal (the socket took only part). Operations are called
 * by the thread that owns the connection only. */
#ifndef FERRY_HTTP_IO_H
#define FERRY_HTTP_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

struct io_ops {
    /** Receive up to len bytes into buf. Returns the count (> 0), 0 when the
     * peer closed its side, or -errno (-EAGAIN: no data now). */
    ssize_t (*recv)(void *ctx, void *buf, size_t len);
    /** Send the iovcnt buffers of iov in order, as much as the socket takes.
     * more: the caller sends more right after this call, so the transport may
     * hold a partial packet back (MSG_MORE). Returns bytes sent (> 0, may be
     * short) or -errno (-EAGAIN: nothing sent). iovcnt must be >= 1. */
    ssize_t (*sendv)(void *ctx, const struct iovec *iov, int iovcnt, bool more);
    /** Send up to len bytes of the file fd from *off and advance *off by the
     * count sent. The caller keeps fd. Returns bytes sent (> 0), 0 when the
     * file ends at *off (nothing sent), or -errno (-EAGAIN: socket full). */
    ssize_t (*sendfile)(void *ctx, int fd, off_t *off, size_t len);
};

/** Plain TCP (or unix) sockets: recv(2), sendmsg(2) with MSG_NOSIGNAL (and
 * MSG_MORE when asked), sendfile(2). The ctx of each call is a pointer to the
 * socket's fd (an int * that must stay valid during the call, e.g. &conn->fd).
 * Stateless: shareable by all threads. */
extern const struct io_ops io_plain;

#endif
