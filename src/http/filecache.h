/* Per-worker cache of small files' contents (no locks: one cache per worker).
 * An entry is trusted for `valid_ms` after it was last checked against the
 * file system, as lighttpd's stat cache and nginx's open_file_cache_valid do;
 * after that the next request re-opens and re-stats the file and reuses the
 * entry only if inode, size and mtime are unchanged. */
#ifndef FERRY_HTTP_FILECACHE_H
#define FERRY_HTTP_FILECACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

struct fcache;

struct fcache_entry {
    struct fcache_entry *hnext;         /* hash chain */
    struct fcache_entry *lprev, *lnext; /* least recently inserted first */
    char *key;
    size_t key_len;
    char *data;
    size_t size;
    ino_t ino;
    dev_t dev;
    struct timespec mtim;
    char etag[48];
    char lastmod[32];
    char *headers; /* "Content-Type...Accept-Ranges: bytes\r\n" of a 200 */
    size_t headers_len;
    uint64_t checked_ms;
    int refs;  /* the cache's own reference plus responses in flight */
    bool live; /* still in the cache */
};

/** Create a cache holding at most max_bytes of file data, files of at most
 * max_file bytes, trusted for valid_ms. Worker thread that will own it. */
struct fcache *fcache_create(size_t max_bytes, size_t max_file, uint64_t valid_ms);

/** Destroy the cache; entries still referenced by responses are freed when
 * released. NULL-safe. */
void fcache_destroy(struct fcache *fc);

/** Largest file the cache takes. */
size_t fcache_max_file(const struct fcache *fc);

/** Find key. Returns the entry when it was checked less than valid_ms ago;
 * otherwise NULL, with *stale set to an expired entry for key (or NULL). */
struct fcache_entry *fcache_get(struct fcache *fc, const char *key, size_t len, uint64_t now_ms,
                                struct fcache_entry **stale);

/** The file behind a stale entry was re-opened: if st matches the entry, mark
 * it checked at now_ms and return true. */
bool fcache_revalidate(struct fcache_entry *e, const struct stat *st, uint64_t now_ms);

/** Read the regular file fd (st from fstat) into a new entry for key,
 * replacing any older entry. Does not take fd. Returns the entry, or NULL when
 * the file is too large or cannot be read whole. ctype is copied. */
struct fcache_entry *fcache_put(struct fcache *fc, const char *key, size_t len, int fd,
                                const struct stat *st, const char *ctype, uint64_t now_ms);

/** Take a reference for a response body; fcache_release() drops it. */
void fcache_ref(struct fcache_entry *e);
/** Release callback for conn_respond_body(): arg is the entry. */
void fcache_release(void *arg);

/** Format the ETag and Last-Modified values used for a file. */
void fcache_format_validators(const struct stat *st, char *etag, size_t etaglen, char *lastmod);

#endif
