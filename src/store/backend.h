/* Internal: what a store backend provides. Only the store module's own .c files include this. */
#ifndef FERRY_STORE_BACKEND_H
#define FERRY_STORE_BACKEND_H

#include "store/store.h"

/* How soon store_put_many() asks again when next() had nothing ready and nobody
 * called store_put_wake() (a safety net: callers wake it). */
#define STORE_STARVED_POLL_MS 1000

struct store_ops {
    int (*put_file)(struct store *s, const char *key, int fd, const struct store_digest *d,
                    const char *content_type, struct store_error *err);
    /* Optional: concurrent uploads; store.c falls back to put_file in turn. */
    int (*put_many)(struct store *s, unsigned concurrency, store_next_fn next, store_done_fn done,
                    void *ctx);
    int (*head)(struct store *s, const char *key, struct store_info *out, struct store_error *err);
    int (*get)(struct store *s, const char *key, const char *range, int out_fd,
               struct store_error *err);
    int (*del)(struct store *s, const char *key, struct store_error *err);
    /* Optional: a stronger check than comparing what head() reports. */
    int (*verify)(struct store *s, const char *key, const struct store_digest *d,
                  struct store_error *err);
    /* Optional: method is "GET" or "HEAD". */
    int (*presign)(struct store *s, const char *method, const char *key, long ttl, struct buf *url);
    /* Optional: s3 only. */
    int (*sign_request)(struct store *s, const char *method, const char *key, const char *range,
                        struct store_signed *out, struct store_error *err);
    int (*abort_multipart)(struct store *s, const char *key, const char *upload_id,
                           struct store_error *err);
    int (*abort_all_multipart)(struct store *s, const char *key, unsigned *aborted,
                               struct store_error *err);
    void (*destroy)(struct store *s);
};

/* Every backend's object starts with this. */
struct store {
    const struct store_ops *ops;
    struct store_options opts; /* defaults filled in */
    char *prefix;              /* prepended to every key */
    int conditional_create;
    uint64_t requests_retried; /* atomic: read by any thread, see store_requests_retried() */
    int wake_fd;               /* eventfd: store_put_wake(); -1 without (a backend made directly) */
    time_t creds_expires;      /* the signing credentials' expiry; 0: none known */
};

/** Wait until store_put_wake() was called on s or timeout_ms passed; consumes the
 * wakeup. (The s3 loop polls wake_fd with its sockets instead.) */
void store_wait_starved(struct store *s, int timeout_ms);

/** Consume a pending store_put_wake() of s, if any. */
void store_wake_drain(struct store *s);

/** Count one retried request of s (any thread). */
static inline void store_count_retry(struct store *s)
{
    __atomic_add_fetch(&s->requests_retried, 1, __ATOMIC_RELAXED);
}

/** Fill err (NULL-safe) with a status, code and printf-formatted message. */
void store_error_set(struct store_error *err, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** Lowercase hex of n bytes into out (2n+1 bytes). */
void store_hex(const unsigned char *in, size_t n, char *out);

/** Base64 of n bytes into out (at least 4*ceil(n/3)+1 bytes). */
void store_base64(const unsigned char *in, size_t n, char *out);

/** Create the dir backend rooted at path. Returns 0 and *out or -errno. */
int dir_store_create(const char *path, struct store **out, struct store_error *err);

#endif
