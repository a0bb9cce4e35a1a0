/* Response chunk queue (see chunkq.h). */
#include "http/chunkq.h"

#include "common/alloc.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A new copy chunk has at least this much room, so that a status line, the
 * headers and small body pieces appended one by one share one allocation. */
#define CHUNK_MEM_MIN 1024
/* One sendfile() call sends at most this much (Linux caps it near 2 GiB). */
#define CHUNK_SENDFILE_MAX ((size_t)1 << 30)

enum chunk_kind { CHUNK_MEM, CHUNK_REF, CHUNK_FILE };

/* An fd shared by the file chunks (and q->last_file) that reference it. */
struct chunkq_file {
    int fd;
    unsigned refs;
};

struct chunk {
    struct chunk *next;
    enum chunk_kind kind;
    union {
        struct {             /* CHUNK_MEM and CHUNK_REF */
            const char *ptr; /* MEM: points at data[] */
            size_t len;      /* bytes held */
            size_t off;      /* bytes of them already written */
            size_t cap;      /* MEM: room at data[] */
            void (*release)(void *arg);
            void *arg;
        } m;
        struct { /* CHUNK_FILE */
            struct chunkq_file *file;
            off_t off; /* next byte to send */
            off_t rem; /* bytes still to send */
        } f;
    };
    char data[]; /* CHUNK_MEM only */
};

static void file_unref(struct chunkq_file *f)
{
    if (f && --f->refs == 0) {
        close(f->fd);
        free(f);
    }
}

static uint64_t chunk_remaining(const struct chunk *c)
{
    return c->kind == CHUNK_FILE ? (uint64_t)c->f.rem : c->m.len - c->m.off;
}

static void chunkq_push(struct chunkq *q, struct chunk *c)
{
    c->next = NULL;
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
}

/* Unlink the head chunk and release what it holds; bytes it still had are
 * taken off the counters (a drop, not a write). */
static void chunkq_pop(struct chunkq *q)
{
    struct chunk *c = q->head;
    uint64_t rem = chunk_remaining(c);
    q->queued -= rem;
    q->head = c->next;
    if (!q->head)
        q->tail = NULL;
    switch (c->kind) {
    case CHUNK_MEM:
        q->mem -= (size_t)rem;
        break;
    case CHUNK_REF:
        if (c->m.release)
            c->m.release(c->m.arg);
        break;
    case CHUNK_FILE:
        file_unref(c->f.file);
        break;
    }
    free(c);
}

void chunkq_init(struct chunkq *q, size_t max, uint64_t low, uint64_t high)
{
    *q = (struct chunkq){.max = max, .low = low, .high = high};
}

void chunkq_clear(struct chunkq *q)
{
    while (q->head)
        chunkq_pop(q);
    file_unref(q->last_file);
    q->last_file = NULL;
    q->written = 0;
}

void chunkq_finish(struct chunkq *q)
{
    if (q)
        chunkq_clear(q);
}

int chunkq_append_mem(struct chunkq *q, const void *p, size_t n)
{
    if (n > q->max - q->mem)
        return -ENOBUFS;
    q->mem += n;
    q->queued += n;
    struct chunk *t = q->tail;
    if (t && t->kind == CHUNK_MEM && t->m.cap > t->m.len) {
        size_t k = t->m.cap - t->m.len < n ? t->m.cap - t->m.len : n;
        memcpy(t->data + t->m.len, p, k);
        t->m.len += k;
        p = (const char *)p + k;
        n -= k;
    }
    if (n == 0)
        return 0;
    size_t cap = n < CHUNK_MEM_MIN ? CHUNK_MEM_MIN : n;
    struct chunk *c = xmalloc(sizeof(*c) + cap);
    c->kind = CHUNK_MEM;
    c->m = (__typeof__(c->m)){.ptr = c->data, .len = n, .cap = cap};
    memcpy(c->data, p, n);
    chunkq_push(q, c);
    return 0;
}

int chunkq_append_ref(struct chunkq *q, const void *p, size_t n, void (*release)(void *arg),
                      void *arg)
{
    struct chunk *c = xmalloc(sizeof(*c));
    c->kind = CHUNK_REF;
    c->m = (__typeof__(c->m)){.ptr = p, .len = n, .release = release, .arg = arg};
    q->queued += n;
    chunkq_push(q, c);
    return 0;
}

static int chunkq_append_range(struct chunkq *q, struct chunkq_file *f, off_t off, off_t len)
{
    if (off < 0 || len < 0 || off > INT64_MAX - len)
        return -EINVAL;
    if (len == 0)
        return 0;
    struct chunk *c = xmalloc(sizeof(*c));
    c->kind = CHUNK_FILE;
    c->f.file = f;
    c->f.off = off;
    c->f.rem = len;
    f->refs++;
    q->queued += (uint64_t)len;
    chunkq_push(q, c);
    return 0;
}

int chunkq_append_file(struct chunkq *q, int fd, off_t off, off_t len)
{
    if (fd < 0)
        return -EINVAL;
    struct chunkq_file *f = xmalloc(sizeof(*f));
    *f = (struct chunkq_file){.fd = fd, .refs = 1};
    int r = chunkq_append_range(q, f, off, len);
    if (r < 0) {
        file_unref(f);
        return r;
    }
    file_unref(q->last_file);
    q->last_file = f; /* keeps the reference taken at creation */
    return 0;
}

int chunkq_append_file_again(struct chunkq *q, off_t off, off_t len)
{
    if (!q->last_file)
        return -EBADF;
    return chunkq_append_range(q, q->last_file, off, len);
}

/* Account n written bytes against the chunks from the head on; finished
 * chunks are popped (and released) by the caller's loop. */
static void chunkq_advance(struct chunkq *q, size_t n)
{
    q->queued -= n;
    q->written += n;
    for (struct chunk *c = q->head; n > 0; c = c->next) {
        size_t take = c->m.len - c->m.off < n ? c->m.len - c->m.off : n;
        c->m.off += take;
        if (c->kind == CHUNK_MEM)
            q->mem -= take;
        n -= take;
    }
}

/* Send the memory chunks at the head (up to a file chunk) in one sendv. */
static ssize_t chunkq_write_mem(struct chunkq *q, const struct io_ops *io, void *ctx,
                                bool more_follows)
{
    struct iovec iov[CHUNKQ_IOV_MAX];
    int cnt = 0;
    struct chunk *c = q->head;
    for (; c && c->kind != CHUNK_FILE && cnt < CHUNKQ_IOV_MAX; c = c->next) {
        if (c->m.off == c->m.len)
            continue;
        iov[cnt].iov_base = (void *)(uintptr_t)(c->m.ptr + c->m.off);
        iov[cnt++].iov_len = c->m.len - c->m.off;
    }
    ssize_t n = io->sendv(ctx, iov, cnt, more_follows || c != NULL);
    if (n > 0)
        chunkq_advance(q, (size_t)n);
    return n;
}

static ssize_t chunkq_write_file(struct chunkq *q, const struct io_ops *io, void *ctx)
{
    struct chunk *c = q->head;
    size_t want = (uint64_t)c->f.rem > CHUNK_SENDFILE_MAX ? CHUNK_SENDFILE_MAX : (size_t)c->f.rem;
    ssize_t n = io->sendfile(ctx, c->f.file->fd, &c->f.off, want);
    if (n == 0)
        return -ENODATA; /* the file shrank below the promised length */
    if (n > 0) {
        c->f.rem -= n;
        q->queued -= (uint64_t)n;
        q->written += (uint64_t)n;
    }
    return n;
}

ssize_t chunkq_write(struct chunkq *q, const struct io_ops *io, void *ctx, bool more_follows,
                     bool *drained)
{
    uint64_t before = q->queued;
    ssize_t total = 0, n = 0;
    for (;;) {
        while (q->head && chunk_remaining(q->head) == 0)
            chunkq_pop(q);
        if (!q->head)
            break;
        if (q->head->kind == CHUNK_FILE)
            n = chunkq_write_file(q, io, ctx);
        else
            n = chunkq_write_mem(q, io, ctx, more_follows);
        if (n < 0)
            break;
        total += n;
    }
    if (drained)
        *drained = before > q->low && q->queued <= q->low;
    if (n < 0 && (n != -EAGAIN || total == 0))
        return n;
    return total;
}

uint64_t chunkq_queued(const struct chunkq *q)
{
    return q->queued;
}

uint64_t chunkq_written(const struct chunkq *q)
{
    return q->written;
}

bool chunkq_is_empty(const struct chunkq *q)
{
    return q->queued == 0;
}

bool chunkq_is_full(const struct chunkq *q)
{
    return q->queued >= q->high;
}
