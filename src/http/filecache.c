#include "http/filecache.h"

#include "common/alloc.h"
#include "common/timeutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FCACHE_BUCKETS 4096

struct fcache {
    struct fcache_entry *buckets[FCACHE_BUCKETS];
    struct fcache_entry *oldest, *newest;
    size_t bytes, max_bytes, max_file;
    uint64_t valid_ms;
};

static uint64_t hash_key(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

struct fcache *fcache_create(size_t max_bytes, size_t max_file, uint64_t valid_ms)
{
    struct fcache *fc = xcalloc(1, sizeof(*fc));
    fc->max_bytes = max_bytes;
    fc->max_file = max_file;
    fc->valid_ms = valid_ms;
    return fc;
}

size_t fcache_max_file(const struct fcache *fc)
{
    return fc->max_file;
}

static void entry_free(struct fcache_entry *e)
{
    free(e->headers);
    free(e->key);
    free(e->data);
    free(e);
}

void fcache_ref(struct fcache_entry *e)
{
    e->refs++;
}

void fcache_release(void *arg)
{
    struct fcache_entry *e = arg;
    if (--e->refs == 0)
        entry_free(e);
}

static void entry_remove(struct fcache *fc, struct fcache_entry *e)
{
    struct fcache_entry **p = &fc->buckets[hash_key(e->key, e->key_len) % FCACHE_BUCKETS];
    while (*p && *p != e)
        p = &(*p)->hnext;
    if (*p)
        *p = e->hnext;
    if (e->lprev)
        e->lprev->lnext = e->lnext;
    else
        fc->oldest = e->lnext;
    if (e->lnext)
        e->lnext->lprev = e->lprev;
    else
        fc->newest = e->lprev;
    fc->bytes -= e->size;
    e->live = false;
    fcache_release(e);
}

void fcache_destroy(struct fcache *fc)
{
    if (!fc)
        return;
    while (fc->oldest)
        entry_remove(fc, fc->oldest);
    free(fc);
}

static struct fcache_entry *entry_find(struct fcache *fc, uint64_t h, const char *key, size_t len)
{
    for (struct fcache_entry *e = fc->buckets[h % FCACHE_BUCKETS]; e; e = e->hnext)
        if (e->key_len == len && memcmp(e->key, key, len) == 0)
            return e;
    return NULL;
}

struct fcache_entry *fcache_get(struct fcache *fc, const char *key, size_t len, uint64_t now_ms,
                                struct fcache_entry **stale)
{
    struct fcache_entry *e = entry_find(fc, hash_key(key, len), key, len);
    *stale = NULL;
    if (e && now_ms - e->checked_ms < fc->valid_ms)
        return e;
    *stale = e;
    return NULL;
}

static bool same_file(const struct fcache_entry *e, const struct stat *st)
{
    return e->ino == st->st_ino && e->dev == st->st_dev && (off_t)e->size == st->st_size &&
           e->mtim.tv_sec == st->st_mtim.tv_sec && e->mtim.tv_nsec == st->st_mtim.tv_nsec;
}

bool fcache_revalidate(struct fcache_entry *e, const struct stat *st, uint64_t now_ms)
{
    if (!e->live || !same_file(e, st))
        return false;
    e->checked_ms = now_ms;
    return true;
}

void fcache_format_validators(const struct stat *st, char *etag, size_t etaglen, char *lastmod)
{
    snprintf(etag, etaglen, "\"%llx-%llx\"", (unsigned long long)st->st_mtime,
             (unsigned long long)st->st_size);
    time_format_http(st->st_mtime, lastmod);
}

struct fcache_entry *fcache_put(struct fcache *fc, const char *key, size_t len, int fd,
                                const struct stat *st, const char *ctype, uint64_t now_ms)
{
    if (st->st_size < 0 || (size_t)st->st_size > fc->max_file ||
        (size_t)st->st_size > fc->max_bytes)
        return NULL;
    size_t size = (size_t)st->st_size;
    char *data = xmalloc(size ? size : 1);
    size_t got = 0;
    while (got < size) {
        ssize_t n = pread(fd, data + got, size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got != size) {
        /* The file changed while we read it: serve it uncached this time. */
        free(data);
        return NULL;
    }
    uint64_t h = hash_key(key, len);
    struct fcache_entry *old = entry_find(fc, h, key, len);
    if (old)
        entry_remove(fc, old);
    while (fc->oldest && fc->bytes + size > fc->max_bytes)
        entry_remove(fc, fc->oldest);

    struct fcache_entry *e = xcalloc(1, sizeof(*e));
    e->key = xstrndup(key, len);
    e->key_len = len;
    e->data = data;
    e->size = size;
    e->ino = st->st_ino;
    e->dev = st->st_dev;
    e->mtim = st->st_mtim;
    fcache_format_validators(st, e->etag, sizeof(e->etag), e->lastmod);
    /* The 200 response's headers are the same for every request until the
     * file changes, so format them once. */
    e->headers = xasprintf("Content-Type: %s\r\nLast-Modified: %s\r\nETag: %s\r\n"
                           "Accept-Ranges: bytes\r\n",
                           ctype, e->lastmod, e->etag);
    e->headers_len = strlen(e->headers);
    e->checked_ms = now_ms;
    e->refs = 1;
    e->live = true;
    size_t b = h % FCACHE_BUCKETS;
    e->hnext = fc->buckets[b];
    fc->buckets[b] = e;
    e->lprev = fc->newest;
    if (fc->newest)
        fc->newest->lnext = e;
    else
        fc->oldest = e;
    fc->newest = e;
    fc->bytes += size;
    return e;
}
