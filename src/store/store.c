#include "store/store.h"

#include "common/alloc.h"
#include "common/conf.h"
#include "store/backend.h"
#include "store/dir.h"
#include "store/s3.h"

#include "common/timeutil.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdatomic.h>
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

/* ---- request metrics ---- */

const double store_duration_bounds[STORE_DURATION_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30,
};

/* Every store of the process counts here: operations are slow (a network
 * round trip or a file write), so one shared atomic add is no cost. */
static _Atomic uint64_t req_count[STORE_OPS][STORE_OUTCOMES][STORE_DURATION_BUCKETS + 1];
static _Atomic uint64_t req_sum_us[STORE_OPS][STORE_OUTCOMES];

static void request_record(enum store_op op, int result, uint64_t start_us)
{
    uint64_t us = time_mono_us() - start_us;
    enum store_outcome o = result == 0         ? STORE_OUTCOME_OK
                           : result == -ENOENT ? STORE_OUTCOME_NOT_FOUND
                                               : STORE_OUTCOME_ERROR;
    size_t b = 0;
    while (b < STORE_DURATION_BUCKETS && (double)us > store_duration_bounds[b] * 1e6)
        b++;
    atomic_fetch_add_explicit(&req_count[op][o][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&req_sum_us[op][o], us, memory_order_relaxed);
}

void store_get_request_stats(struct store_request_stats *out)
{
    for (int op = 0; op < STORE_OPS; op++)
        for (int o = 0; o < STORE_OUTCOMES; o++) {
            for (int b = 0; b <= STORE_DURATION_BUCKETS; b++)
                out->count[op][o][b] =
                    atomic_load_explicit(&req_count[op][o][b], memory_order_relaxed);
            out->sum_us[op][o] = atomic_load_explicit(&req_sum_us[op][o], memory_order_relaxed);
        }
}

const char *store_op_name(enum store_op op)
{
    static const char *const names[STORE_OPS] = {"put", "head", "get", "delete", "abort"};
    return op < STORE_OPS ? names[op] : "unknown";
}

const char *store_outcome_name(enum store_outcome o)
{
    static const char *const names[STORE_OUTCOMES] = {"ok", "not_found", "error"};
    return o < STORE_OUTCOMES ? names[o] : "unknown";
}

/* store_put_many() timing: each item's start, found again by its key pointer
 * (valid until done(); user and the item's other fields stay the caller's,
 * since upload_started() hands the item back to the caller too). */
struct timed_start {
    const char *key;
    uint64_t start_us;
};

struct timed_many {
    store_next_fn next;
    store_done_fn done;
    void *ctx;
    struct timed_start *starts;
    size_t n, cap;
};

static int timed_next(void *ctx, struct store_put_item *item)
{
    struct timed_many *t = ctx;
    int n = t->next(t->ctx, item);
    if (n == 1) {
        if (t->n == t->cap) {
            t->cap = t->cap ? 2 * t->cap : 16;
            t->starts = xrealloc(t->starts, t->cap * sizeof(*t->starts));
        }
        t->starts[t->n++] = (struct timed_start){item->key, time_mono_us()};
    }
    return n;
}

static void timed_done(void *ctx, const struct store_put_item *item, int result,
                       const struct store_error *err)
{
    struct timed_many *t = ctx;
    for (size_t i = 0; i < t->n; i++) {
        if (t->starts[i].key != item->key)
            continue;
        request_record(STORE_OP_PUT, result, t->starts[i].start_us);
        t->starts[i] = t->starts[--t->n];
        break;
    }
    t->done(t->ctx, item, result, err);
}

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
    /* Both digits of a byte in one copy: two 32-byte digests become hex for
     * every presigned redirect. */
    static const char pairs[] = "000102030405060708090a0b0c0d0e0f"
                                "101112131415161718191a1b1c1d1e1f"
                                "202122232425262728292a2b2c2d2e2f"
                                "303132333435363738393a3b3c3d3e3f"
                                "404142434445464748494a4b4c4d4e4f"
                                "505152535455565758595a5b5c5d5e5f"
                                "606162636465666768696a6b6c6d6e6f"
                                "707172737475767778797a7b7c7d7e7f"
                                "808182838485868788898a8b8c8d8e8f"
                                "909192939495969798999a9b9c9d9e9f"
                                "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
                                "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
                                "c0c1c2c3c4c5c6c7c8c9cacbcccdcecf"
                                "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
                                "e0e1e2e3e4e5e6e7e8e9eaebecedeeef"
                                "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    for (size_t i = 0; i < n; i++)
        memcpy(out + 2 * i, pairs + 2 * in[i], 2);
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
    uint64_t t0 = time_mono_us();
    int r = s->ops->put_file(s, key, fd, d, content_type, err);
    request_record(STORE_OP_PUT, r, t0);
    return r;
}

int store_put_many(struct store *s, unsigned concurrency, store_next_fn next, store_done_fn done,
                   void *ctx)
{
    if (s->ops->put_many) {
        struct timed_many t = {next, done, ctx, NULL, 0, 0};
        int r = s->ops->put_many(s, concurrency, timed_next, timed_done, &t);
        free(t.starts);
        return r;
    }
    struct store_put_item item;
    int n;
    while ((n = next(ctx, &item)) != 0) {
        if (n < 0) {
            store_wait_starved(s, STORE_STARVED_POLL_MS); /* nothing ready yet */
            continue;
        }
        struct store_error err;
        memset(&err, 0, sizeof(err));
        int r = store_put_file(s, item.key, item.fd, &item.digest, item.content_type, &err);
        done(ctx, &item, r, &err);
    }
    return 0;
}

int store_head(struct store *s, const char *key, struct store_info *out, struct store_error *err)
{
    uint64_t t0 = time_mono_us();
    int r = s->ops->head(s, key, out, err);
    request_record(STORE_OP_HEAD, r, t0);
    return r;
}

int store_get(struct store *s, const char *key, const char *range, int out_fd,
              struct store_error *err)
{
    uint64_t t0 = time_mono_us();
    int r = s->ops->get(s, key, range, out_fd, err);
    request_record(STORE_OP_GET, r, t0);
    return r;
}

int store_delete(struct store *s, const char *key, struct store_error *err)
{
    uint64_t t0 = time_mono_us();
    int r = s->ops->del(s, key, err);
    request_record(STORE_OP_DELETE, r, t0);
    return r;
}

int store_presign(struct store *s, const char *method, const char *key, long ttl, struct buf *url)
{
    if (!s->ops->presign)
        return -EOPNOTSUPP;
    return s->ops->presign(s, method, key, ttl, url);
}

int store_presign_get(struct store *s, const char *key, long ttl, struct buf *url)
{
    return store_presign(s, "GET", key, ttl, url);
}

time_t store_credentials_expiry(const struct store *s)
{
    return s->creds_expires;
}

int store_sign_request(struct store *s, const char *method, const char *key, const char *range,
                       struct store_signed *out, struct store_error *err)
{
    if (!s->ops->sign_request)
        return -EOPNOTSUPP;
    return s->ops->sign_request(s, method, key, range, out, err);
}

void store_signed_finish(struct store_signed *sg)
{
    if (!sg)
        return;
    for (size_t i = 0; i < sg->nheaders; i++) {
        OPENSSL_cleanse(sg->headers[i], strlen(sg->headers[i]));
        free(sg->headers[i]);
    }
    free(sg->url);
    free(sg->ca_file);
    memset(sg, 0, sizeof(*sg));
}

int store_abort_multipart(struct store *s, const char *key, const char *upload_id,
                          struct store_error *err)
{
    if (!s->ops->abort_multipart)
        return -EOPNOTSUPP;
    uint64_t t0 = time_mono_us();
    int r = s->ops->abort_multipart(s, key, upload_id, err);
    request_record(STORE_OP_ABORT, r, t0);
    return r;
}

int store_verify(struct store *s, const char *key, const struct store_digest *d,
                 struct store_error *err)
{
    struct store_info info;
    int r = store_head(s, key, &info, err);
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
