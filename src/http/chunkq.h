/* A response body as a FIFO of chunks (lighttpd's chunkqueue idea): memory
 * copied into the queue, memory referenced without copying, and file ranges.
 * chunkq_write() sends the head of the queue through the io seam: adjacent
 * memory chunks in one sendv (one sendmsg for a header and a cached body),
 * file ranges with sendfile. Chunks may be appended while earlier ones are
 * being written.
 *
 * Accounting, in bytes not yet written:
 * - "memory" counts copied bytes only; appending a copy past `max` fails with
 *   -ENOBUFS and leaves the queue unchanged (common/buf.h's habit). Referenced
 *   memory and files do not count: their owners hold them.
 * - "queued" counts every kind (copied, referenced, file). It drives the
 *   backpressure: a producer stops producing while chunkq_is_full() (queued >=
 *   high) and is resumed (its proceed()) when chunkq_write() reports that
 *   queued fell from above `low` to `low` or less.
 *
 * A queue belongs to one connection and is used by that connection's thread
 * only. Callbacks (release) run on that thread, from chunkq_write(),
 * chunkq_clear() or chunkq_finish(), and must not touch the queue. */
#ifndef FERRY_HTTP_CHUNKQ_H
#define FERRY_HTTP_CHUNKQ_H

#include "http/io.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct chunk;
struct chunkq_file;

/* Caller-owned; the fields are private to chunkq.c. */
struct chunkq {
    struct chunk *head, *tail;
    struct chunkq_file *last_file; /* shared by chunkq_append_file_again() */
    size_t mem;                    /* copied bytes not yet written */
    size_t max;                    /* limit on mem */
    uint64_t queued;               /* bytes not yet written, all kinds */
    uint64_t low, high;            /* watermarks on queued */
    uint64_t written;              /* bytes written since init or clear */
};

/** Initialise an empty queue that holds at most max copied bytes, with
 * watermarks low < high on the queued bytes (low may be 0: "fully drained"). */
void chunkq_init(struct chunkq *q, size_t max, uint64_t low, uint64_t high);
/** Release every chunk as chunkq_clear() does. NULL-safe. The queue may be
 * reused after chunkq_init(). */
void chunkq_finish(struct chunkq *q);
/** Drop every chunk without writing it (the client went away, or the next
 * response starts): frees copies, calls each pending release callback once,
 * closes the fds the queue owns, and zeroes the counters including
 * chunkq_written() (read it first for the access log). */
void chunkq_clear(struct chunkq *q);

/** Append a copy of n bytes of p; small appends fill the tail chunk's spare
 * room. Returns 0, or -ENOBUFS if the copied bytes would exceed max (the
 * queue is then unchanged). */
int chunkq_append_mem(struct chunkq *q, const void *p, size_t n);
/** Append n bytes at p without copying. p must stay valid and unchanged until
 * release(arg) is called; it is called exactly once, when the last byte has
 * been written or when the queue is cleared or finished (also for n == 0).
 * release may be NULL (static or longer-lived memory). Returns 0; never fails
 * (the int is for symmetry with the other appends). */
int chunkq_append_ref(struct chunkq *q, const void *p, size_t n, void (*release)(void *arg),
                      void *arg);
/** Append the range [off, off + len) of the file fd. Takes ownership of fd in
 * every case, including errors: the queue closes it when its last range is
 * written or dropped, or at once on error. The file is also remembered for
 * chunkq_append_file_again() until the next chunkq_append_file() or clear,
 * which keeps fd open until then. The length is a promise (Content-Length):
 * a file found shorter makes chunkq_write() fail with -ENODATA. Returns 0, or
 * -EINVAL for a negative fd, offset or length (or an overflowing range). */
int chunkq_append_file(struct chunkq *q, int fd, off_t off, off_t len);
/** Append another range of the file of the last chunkq_append_file(),
 * sharing its fd (multipart byte ranges). Returns 0, -EBADF if there is no
 * such file, or -EINVAL for a bad range. */
int chunkq_append_file_again(struct chunkq *q, off_t off, off_t len);

/** Write as much of the queue as the socket takes, through io with ctx (see
 * io.h): memory chunks up to the next file chunk go out in one sendv (at most
 * CHUNKQ_IOV_MAX buffers), marked "more" when anything else is queued behind
 * them or more_follows is set (the caller will append more soon); a file
 * chunk at the head goes out with sendfile. Finished chunks are released at
 * once. Loops until the queue is empty or the socket is full.
 * Returns the bytes written by this call (0 if the queue was empty; then the
 * queue is empty unless an error is returned), -EAGAIN if the socket took
 * nothing, -ENODATA if a file ended before its promised length, or another
 * -errno from io (the connection is then unusable; call chunkq_clear()).
 * If drained is non-NULL it is set to whether queued went from above low to
 * low or less during this call: time to call the producer's proceed(). */
ssize_t chunkq_write(struct chunkq *q, const struct io_ops *io, void *ctx, bool more_follows,
                     bool *drained);

/** Bytes queued and not yet written (all kinds). */
uint64_t chunkq_queued(const struct chunkq *q);
/** Bytes written since chunkq_init() or the last chunkq_clear() (access log). */
uint64_t chunkq_written(const struct chunkq *q);
/** True when nothing remains to be written (zero-length chunks waiting for
 * their release do not count). */
bool chunkq_is_empty(const struct chunkq *q);
/** True when queued >= high: the producer should stop until chunkq_write()
 * reports drained. */
bool chunkq_is_full(const struct chunkq *q);

/** Copied bytes that may still be appended before max is reached. */
static inline size_t chunkq_mem_room(const struct chunkq *q)
{
    return q->max - q->mem;
}

/** Most buffers one chunkq_write() sendv carries. */
#define CHUNKQ_IOV_MAX 64

#endif
