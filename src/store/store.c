#include "store/store.h"

#include "common/alloc.h"
#include "common/conf.h"
#include "store/backend.h"
#include "store/dir.h"
#include "store/s3.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_THRESHOLD (64ULL << 20)
#define DEFAULT_PART_SIZE (16ULL << 20)
#define MIN_PART_SIZE (5ULL << 20)
#define MAX_PARTS 10000

void store_error_set(struct store_error *err, int status, const char *code, const char *fmt, ...)
{
    if (!err)
        return;
    err->http_status = status;
    snprintf(err->code, sizeof(err->code), "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

void store_error_format(const struct store_error *err, char *out, size_t outlen)
{
    if (err->http_status)
        snprintf(out, outlen, "%s (%d): %s", err->code, err->http_status, err->message);
    else
        snprintf(out, outlen, "%s: %s", err->code, err->message);
}

void store_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void store_base64(const unsigned char *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static void options_fill(struct store_options *o, const struct store_options *in)
{
    memset(o, 0, sizeof(*o));
    if (in)
        *o = *in;
    if (!o->multipart_threshold)
        o->multipart_threshold = DEFAULT_THRESHOLD;
    if (!o->part_size)
        o->part_size = DEFAULT_PART_SIZE;
    if (o->part_size < MIN_PART_SIZE)
        o->part_size = MIN_PART_SIZE;
    if (o->multipart_threshold < o->part_size)
        o->multipart_threshold = o->part_size;
    if (!o->retry_base_ms)
        o->retry_base_ms = 100;
    if (!o->retry_max_ms)
        o->retry_max_ms = 20000;
}

int store_create(const struct ferry_conf *conf, const struct store_options *opts,
                 struct store **out, struct store_error *err)
{
    struct store *s = NULL;
    int r;
    if (conf->store.type == STORE_S3)
        r = s3_store_create(conf, &s, err);
    else
        r = dir_store_create(conf->store.path, &s, err);
    if (r < 0)
        return r;
    options_fill(&s->opts, opts);
    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->wake_fd < 0) {
        r = -errno;
        store_error_set(err, 0, "NoResources", "eventfd: %s", strerror(errno));
        s->ops->destroy(s);
        return r;
    }
    s->prefix = xstrdup(conf->store.prefix ? conf->store.prefix : "");
    s->conditional_create = conf->store.conditional_create;
    *out = s;
    return 0;
}

void store_destroy(struct store *s)
{
    if (!s)
        return;
    free(s->prefix);
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    s->ops->destroy(s);
}

void store_put_wake(struct store *s)
{
    uint64_t one = 1;
    if (s->wake_fd >= 0 && write(s->wake_fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is full, a wakeup is pending anyway. */
    }
}

void store_wake_drain(struct store *s)
{
    uint64_t n;
    if (s->wake_fd >= 0 && read(s->wake_fd, &n, sizeof(n)) < 0) {
        /* EAGAIN: no wakeup was pending. */
    }
}

void store_wait_starved(struct store *s, int timeout_ms)
{
    if (s->wake_fd < 0) {
        struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        return;
    }
    struct pollfd p = {.fd = s->wake_fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) > 0)
        store_wake_drain(s);
}

void store_part_layout(const struct store *s, uint64_t *threshold, uint64_t *part_size)
{
    *threshold = s->opts.multipart_threshold;
    *part_size = s->opts.part_size;
}

int store_digest_fd(int fd, uint64_t threshold, uint64_t part_size, struct store_digest *d)
{
    if (!threshold)
        threshold = DEFAULT_THRESHOLD;
    if (!part_size)
        part_size = DEFAULT_PART_SIZE;
    EVP_MD_CTX *sha = EVP_MD_CTX_new(), *md5 = EVP_MD_CTX_new();
    EVP_MD_CTX *part = EVP_MD_CTX_new(), *parts = EVP_MD_CTX_new();
    if (!sha || !md5 || !part || !parts)
        abort();
    EVP_DigestInit_ex(sha, EVP_sha256(), NULL);
    EVP_DigestInit_ex(md5, EVP_md5(), NULL);
    EVP_DigestInit_ex(part, EVP_md5(), NULL);
    EVP_DigestInit_ex(parts, EVP_md5(), NULL);
    size_t bufsize = 1 << 20;
    unsigned char *buf = xmalloc(bufsize);
    uint64_t off = 0, in_part = 0, nparts = 0;
    unsigned char md[32];
    int r = 0;
    for (;;) {
        /* Never read across a part boundary so each part's MD5 closes exactly. */
        size_t want = bufsize;
        if (part_size - in_part < want)
            want = (size_t)(part_size - in_part);
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            goto fail;
        }
        if (n == 0)
            break;
        EVP_DigestUpdate(sha, buf, (size_t)n);
        EVP_DigestUpdate(md5, buf, (size_t)n);
        EVP_DigestUpdate(part, buf, (size_t)n);
        off += (uint64_t)n;
        in_part += (uint64_t)n;
        if (in_part == part_size) {
            EVP_DigestFinal_ex(part, md, NULL);
            EVP_DigestUpdate(parts, md, 16);
            EVP_DigestInit_ex(part, EVP_md5(), NULL);
            nparts++;
            in_part = 0;
        }
    }
    if (in_part) {
        EVP_DigestFinal_ex(part, md, NULL);
        EVP_DigestUpdate(parts, md, 16);
        nparts++;
    }
    d->size = off;
    EVP_DigestFinal_ex(sha, d->sha256, NULL);
    EVP_DigestFinal_ex(md5, d->md5, NULL);
    if (off >= threshold && off > 0) {
        if (nparts > MAX_PARTS) {
            r = -EFBIG;
            goto fail;
        }
        EVP_DigestFinal_ex(parts, md, NULL);
        store_hex(md, 16, d->etag);
        snprintf(d->etag + 32, sizeof(d->etag) - 32, "-%llu", (unsigned long long)nparts);
    } else {
        store_hex(d->md5, 16, d->etag);
    }
fail:
    free(buf);
    EVP_MD_CTX_free(sha);
    EVP_MD_CTX_free(md5);
    EVP_MD_CTX_free(part);
    EVP_MD_CTX_free(parts);
    return r;
}

int store_put_file(struct store *s, const char *key, int fd, const struct store_digest *d,
                   const char *content_type, struct store_error *err)
{
    return s->ops->put_file(s, key, fd, d, content_type, err);
}

int store_put_many(struct store *s, unsigned concurrency, store_next_fn next, store_done_fn done,
                   void *ctx)
{
    if (s->ops->put_many)
        return s->ops->put_many(s, concurrency, next, done, ctx);
    struct store_put_item item;
    int n;
    while ((n = next(ctx, &item)) != 0) {
        if (n < 0) {
            store_wait_starved(s, STORE_STARVED_POLL_MS); /* nothing ready yet */
            continue;
        }
        struct store_error err;
        memset(&err, 0, sizeof(err));
        int r = s->ops->put_file(s, item.key, item.fd, &item.digest, item.content_type, &err);
        done(ctx, &item, r, &err);
    }
    return 0;
}

int store_head(struct store *s, const char *key, struct store_info *out, struct store_error *err)
{
    return s->ops->head(s, key, out, err);
}

int store_get(struct store *s, const char *key, const char *range, int out_fd,
              struct store_error *err)
{
    return s->ops->get(s, key, range, out_fd, err);
}

int store_delete(struct store *s, const char *key, struct store_error *err)
{
    return s->ops->del(s, key, err);
}

int store_presign_get(struct store *s, const char *key, long ttl, struct buf *url)
{
    if (!s->ops->presign_get)
        return -EOPNOTSUPP;
    return s->ops->presign_get(s, key, ttl, url);
}

int store_abort_multipart(struct store *s, const char *key, const char *upload_id,
                          struct store_error *err)
{
    if (!s->ops->abort_multipart)
        return -EOPNOTSUPP;
    return s->ops->abort_multipart(s, key, upload_id, err);
}

int store_verify(struct store *s, const char *key, const struct store_digest *d,
                 struct store_error *err)
{
    struct store_info info;
    int r = s->ops->head(s, key, &info, err);
    if (r < 0)
        return r;
    if (info.size != d->size) {
        store_error_set(err, 0, "SizeMismatch", "store has %llu bytes, expected %llu",
                        (unsigned long long)info.size, (unsigned long long)d->size);
        return -EBADMSG;
    }
    if (s->ops->verify)
        return s->ops->verify(s, key, d, err);
    int confirmed = 0;
    char want[65];
    if (info.sha256_b64[0]) {
        store_base64(d->sha256, 32, want);
        /* A multipart object's checksum is a checksum of checksums ("...-N"):
         * only a full-object checksum can be compared. */
        if (!strchr(info.sha256_b64, '-')) {
            if (strcmp(info.sha256_b64, want) != 0)
                goto mismatch;
            confirmed = 1;
        }
    }
    if (info.meta_sha256[0]) {
        store_hex(d->sha256, 32, want);
        if (strcmp(info.meta_sha256, want) != 0)
            goto mismatch;
        confirmed = 1;
    }
    if (info.etag[0]) {
        /* An ETag that is not an MD5 (SSE-KMS, other part sizes) says nothing;
         * one in our format that differs is a mismatch. */
        size_t n = strlen(info.etag);
        int ours = (n == 32 && !strchr(d->etag, '-')) || (n > 33 && info.etag[32] == '-');
        if (ours && strcmp(info.etag, d->etag) != 0)
            goto mismatch;
        if (ours)
            confirmed = 1;
    }
    if (!confirmed) {
        store_error_set(err, 0, "Unverifiable", "the store reports no checksum for '%s'", key);
        return -EBADMSG;
    }
    return 0;
mismatch:
    store_error_set(err, 0, "ChecksumMismatch",
                    "the stored object '%s' differs from the local file", key);
    return -EBADMSG;
}

int store_abort_all_multipart(struct store *s, const char *key, unsigned *aborted,
                              struct store_error *err)
{
    if (!s->ops->abort_all_multipart)
        return -EOPNOTSUPP;
    return s->ops->abort_all_multipart(s, key, aborted, err);
}

uint64_t store_requests_retried(const struct store *s)
{
    return __atomic_load_n(&s->requests_retried, __ATOMIC_RELAXED);
}
