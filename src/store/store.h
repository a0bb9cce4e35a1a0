/* The object store: one interface, two backends (a local directory and S3).
 *
 * A struct store is used by one thread at a time (it owns curl handles for s3);
 * store_put_many() runs concurrent uploads on that thread. Every operation returns 0 or
 * a negative errno and, on failure, fills the caller's struct store_error with
 * what the store said (S3's error code and message) — never with credentials. */
#ifndef FERRY_STORE_STORE_H
#define FERRY_STORE_STORE_H

#include <stdint.h>
#include <time.h>

#include "common/buf.h"

struct ferry_conf;

/* What a caller knows about the bytes it stores, computed in one pass over the
 * file by store_digest_fd(). */
struct store_digest {
    uint64_t size;
    unsigned char sha256[32];
    unsigned char md5[16];
    /* The ETag S3 reports for this object: the MD5 as hex for a single PUT, or
     * hex(MD5(part MD5s)) "-" N for a multipart upload with part_size parts. */
    char etag[48];
};

/* What the store reports about an object. Empty strings for what it did not say. */
struct store_info {
    uint64_t size;
    time_t mtime;
    char etag[80];        /* without quotes */
    char sha256_b64[64];  /* x-amz-checksum-sha256 (S3) */
    char meta_sha256[65]; /* x-amz-meta-ferry-sha256 (S3) or the sidecar (dir) */
    char content_type[128];
};

struct store_error {
    int http_status; /* 0 when no HTTP response */
    char code[64];   /* S3 error code ("SlowDown"), or a short ferry reason */
    char message[256];
    int attempts; /* requests made, retries included */
};

struct store_options {
    uint64_t multipart_threshold; /* files of this size or more go multipart; 0: 64 MiB */
    uint64_t part_size;           /* 5 MiB .. 5 GiB; 0: 16 MiB */
    unsigned retry_base_ms;       /* first backoff cap; 0: 100 ms */
    unsigned retry_max_ms;        /* largest backoff cap; 0: 20 s */
};

struct store;

/** Create the store the [store] section of conf describes (copies what it needs
 * from conf; opts may be NULL for defaults). Resolves S3 credentials (config, then
 * AWS_* environment, then the shared credentials file). Returns 0 and *out, or
 * -EINVAL with err filled (a configuration problem), or -errno. Any thread; the
 * result belongs to the caller: store_destroy(). */
int store_create(const struct ferry_conf *conf, const struct store_options *opts,
                 struct store **out, struct store_error *err);

/** Free a store. NULL-safe. */
void store_destroy(struct store *s);

/** Hash fd (from offset 0) into d: size, SHA-256, MD5 and the ETag S3 will report
 * when uploaded with part_size parts above threshold (part_size 0: 16 MiB,
 * threshold 0: 64 MiB). Returns 0 or -errno. Any thread; does not move fd's offset. */
int store_digest_fd(int fd, uint64_t threshold, uint64_t part_size, struct store_digest *d);

/** The threshold and part size s uses, for store_digest_fd(). */
void store_part_layout(const struct store *s, uint64_t *threshold, uint64_t *part_size);

/** Upload the whole file fd (read with pread; offset untouched) as key, whose
 * digest d the caller computed with store_digest_fd() under store_part_layout().
 * The store checks the bytes it received against d (Content-MD5 and
 * x-amz-checksum-sha256 per the `checksum` option, ETags of parts and of the
 * result). With conditional_create, an existing object is never overwritten:
 * returns 0 if it holds exactly these bytes, else -EEXIST. Retries retryable
 * failures with full-jitter backoff. content_type (NULL: none, the store's default)
 * is what the store will serve the object as; the dir store ignores it. Returns 0
 * or -errno. */
int store_put_file(struct store *s, const char *key, int fd, const struct store_digest *d,
                   const char *content_type, struct store_error *err);

struct store_put_item;

/** A multipart upload of item was created as upload_id (S3 only), before its first
 * part is sent: the caller may record the id (to abort it after a crash) — it must
 * do so before returning. Runs on store_put_many()'s thread. */
typedef void (*store_upload_started_fn)(const struct store_put_item *item, const char *upload_id);

/* One file for store_put_many(). */
struct store_put_item {
    const char *key;                        /* must stay valid until done() is called for it */
    int fd;                                 /* read with pread; stays open until done() */
    struct store_digest digest;             /* from store_digest_fd() under store_part_layout() */
    const char *content_type;               /* NULL: none; must stay valid until done() */
    void *user;                             /* the caller's */
    store_upload_started_fn upload_started; /* NULL: not told */
};

/** Fill *item (zeroed before the call) with the next file to upload and return 1; return -EAGAIN
 * when none is ready yet (asked again when a transfer moves, when store_put_wake() is called —
 * the caller must call it when it has more — or after a second at the latest), or 0 when there
 * will be no more (store_put_many() then finishes what is in flight and returns). Must not
 * block: uploads in flight wait while it runs. */
typedef int (*store_next_fn)(void *ctx, struct store_put_item *item);
/** One upload ended: result as store_put_file() returns it, err filled on failure. */
typedef void (*store_done_fn)(void *ctx, const struct store_put_item *item, int result,
                              const struct store_error *err);

/** Upload files concurrently on the calling thread: up to concurrency uploads in
 * flight (S3: one curl multi handle, connections shared and reused; dir: one
 * after another), each with store_put_file()'s checks and retries. Calls next()
 * whenever a slot is free and done() once per item, both on this thread.
 * Returns 0 when next() ran dry and every item was reported, or -ENOMEM. */
int store_put_many(struct store *s, unsigned concurrency, store_next_fn next, store_done_fn done,
                   void *ctx);

/** Make a store_put_many() running on s (now, or the next that waits) ask next() again:
 * call it when something next() said -EAGAIN about may have changed. Any thread. */
void store_put_wake(struct store *s);

/** Report what the store has for key. Returns 0 and *out, -ENOENT, or -errno. */
int store_head(struct store *s, const char *key, struct store_info *out, struct store_error *err);

/** Write the object (or the single range "bytes=A-B" when range is not NULL) to
 * out_fd, a file or a blocking socket; blocking writes give backpressure. Returns 0,
 * -ENOENT, -ERANGE (416), or -errno. Retries only while nothing was written.
 * range follows common/range.h as an HTTP server does: a range that is invalid
 * or names several ranges is ignored and the whole object is written (so pass
 * ranges you built, or check them with range_parse() first). */
int store_get(struct store *s, const char *key, const char *range, int out_fd,
              struct store_error *err);

/** Delete key; deleting a missing key succeeds. Returns 0 or -errno. */
int store_delete(struct store *s, const char *key, struct store_error *err);

/** Check that the store holds exactly the bytes d describes: size, and the
 * checksum, ETag or stored digest the store reports (at least one must confirm
 * and none may disagree). Returns 0, -ENOENT, -EBADMSG on a mismatch or when
 * nothing can confirm the bytes, or -errno. */
int store_verify(struct store *s, const char *key, const struct store_digest *d,
                 struct store_error *err);

/** Append a presigned URL for method ("GET" or "HEAD": the signature covers the
 * method, so a store refuses a GET URL used for a HEAD) on key, valid for ttl
 * seconds (1..604800), or for less: never past store_credentials_expiry().
 * Returns 0, -EOPNOTSUPP for the dir store, -EKEYEXPIRED when the credentials
 * have expired, -EINVAL, or -ENOBUFS. Same thread rules as the other operations. */
int store_presign(struct store *s, const char *method, const char *key, long ttl, struct buf *url);

/** store_presign() for a GET. */
int store_presign_get(struct store *s, const char *key, long ttl, struct buf *url);

/* A request built and signed by the store for the caller to send itself (on
 * its own transport, e.g. a worker's curl multi handle): store_sign_request(). */
#define STORE_SIGNED_HEADERS_MAX 16
struct store_signed {
    char *url;                               /* absolute and encoded: send as it is */
    char *headers[STORE_SIGNED_HEADERS_MAX]; /* "Name: value" lines to send, in order */
    size_t nheaders;
    char *ca_file;           /* the CA bundle the endpoint is verified with; NULL: the system's */
    long connect_timeout_ms; /* [store] connect_timeout */
    long low_speed_time_s;   /* [store] low_speed_time: no byte this long is a timeout */
};

/**
 * Build, without sending it, the signed request method ("GET" or "HEAD") for
 * key (below the store prefix, as for store_head()), asking for the single
 * range (NULL: the whole object; "bytes=A-B", "bytes=A-" or "bytes=-N", sent
 * and signed as given: check it with range_parse() first). The signature is
 * valid for about 15 minutes (S3's clock skew limit): send it now. The caller
 * may add headers S3 does not need signed (If-None-Match, If-Modified-Since).
 * Fills *out (caller-owned: store_signed_finish()) and returns 0; -EOPNOTSUPP
 * for the dir store; -EINVAL with err filled when it cannot be signed.
 * Under the struct store's one-thread-at-a-time rule.
 */
int store_sign_request(struct store *s, const char *method, const char *key, const char *range,
                       struct store_signed *out, struct store_error *err);

/** Wipe (the headers carry a token and a signature) and free what
 * store_sign_request() filled in sg; sg may then be reused. NULL-safe. Any thread. */
void store_signed_finish(struct store_signed *sg);

/** When the credentials the store signs with expire (wall-clock seconds), or 0
 * when they do not or it is not known: presigned URLs must not outlive them
 * (store_presign_get() shortens ttl to what is left). Any thread that may use s. */
time_t store_credentials_expiry(const struct store *s);

/** Abort the multipart upload upload_id of key. Returns 0 (also when it no
 * longer exists) or -errno; -EOPNOTSUPP for the dir store. */
int store_abort_multipart(struct store *s, const char *key, const char *upload_id,
                          struct store_error *err);

/** Abort every multipart upload in progress for exactly key, also those whose id the
 * caller never learnt (a crash between CreateMultipartUpload's answer and recording
 * the id): S3 lists them (ListMultipartUploads, which needs the
 * s3:ListBucketMultipartUploads permission). Returns 0 and *aborted (how many), or
 * -EOPNOTSUPP for the dir store, or -errno with err filled (then abort the ids you
 * know with store_abort_multipart()). The thread that owns s. */
int store_abort_all_multipart(struct store *s, const char *key, unsigned *aborted,
                              struct store_error *err);

/** How many requests s has retried since it was created (a transient failure: a 5xx, a
 * reset, a timeout, a refused checksum). Any thread, while s exists. */
uint64_t store_requests_retried(const struct store *s);

/* ---- request metrics (process-wide, every store) ---- */

/* What store operations the metrics count, and how they ended. One operation
 * is one call (an upload of store_put_many() is one put), retries included. */
enum store_op {
    STORE_OP_PUT,    /* store_put_file(), each file of store_put_many() */
    STORE_OP_HEAD,   /* store_head(), the HEAD of store_verify() */
    STORE_OP_GET,    /* store_get() */
    STORE_OP_DELETE, /* store_delete() */
    STORE_OP_ABORT,  /* store_abort_multipart() */
    STORE_OPS,
};
enum store_outcome {
    STORE_OUTCOME_OK,
    STORE_OUTCOME_NOT_FOUND,
    STORE_OUTCOME_ERROR,
    STORE_OUTCOMES
};

#define STORE_DURATION_BUCKETS 12
/** Upper bounds (seconds) of the duration buckets. */
extern const double store_duration_bounds[STORE_DURATION_BUCKETS];

struct store_request_stats {
    uint64_t count[STORE_OPS][STORE_OUTCOMES][STORE_DURATION_BUCKETS + 1]; /* not cumulative */
    uint64_t sum_us[STORE_OPS][STORE_OUTCOMES];
};

/** Copy the counters of every store operation since the process started
 * (relaxed reads). Any thread. */
void store_get_request_stats(struct store_request_stats *out);

/** Label values: "put", "head", ... and "ok", "not_found", "error". */
const char *store_op_name(enum store_op op);
const char *store_outcome_name(enum store_outcome o);

/** Describe err in one line for logs ("SlowDown (503): Please reduce..."). */
void store_error_format(const struct store_error *err, char *out, size_t outlen);

#endif
