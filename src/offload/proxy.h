/* Store transfers on the HTTP workers' own loops (issue 9): `redirect = proxy`
 * with the s3 store streams the object through ferry, and `verify_remote`
 * HEADs the store before a redirect — both without blocking the worker.
 *
 * Each worker gets its own curl multi handle, created on its first transfer
 * and driven by its evloop (CURLMOPT_SOCKETFUNCTION / TIMERFUNCTION onto fd
 * watches and one timer), so transfers share and reuse connections per worker
 * and no lock is taken on the way except the short one around signing. The
 * requests are built and signed by the store (store_sign_request()); this
 * module only moves bytes. Backpressure: a write callback that finds the
 * client's queue full pauses the transfer (CURL_WRITEFUNC_PAUSE) until the
 * connection's proceed() resumes it, so a slow client never makes ferry buffer
 * more than the queue's high-water mark and curl's own buffer.
 *
 * A GET or HEAD whose store request fails before any of the answer went to
 * the client (cannot connect, reset, no answer in time, 500/502/503/504 or a
 * retryable S3 code such as SlowDown) is tried again, as nginx's
 * proxy_next_upstream does: at most [store] retries times, each after a
 * full-jitter backoff of at most 50 ms doubling per retry up to 1 s (200 ms
 * up for SlowDown), each retry logged. Once the head went out, a failing
 * store cuts the client's connection instead. */
#ifndef FERRY_OFFLOAD_PROXY_H
#define FERRY_OFFLOAD_PROXY_H

#include <pthread.h>
#include <stdint.h>

struct conn;
struct http_request;
struct store;

struct offload_proxy;

/**
 * Prepare transfers from store, a store that supports store_sign_request()
 * (s3). store and lock are borrowed and must outlive the result; lock is taken
 * around every use of store (a struct store is one thread's at a time).
 * timeout_ms bounds how long a request waits for the store's answer before
 * the core's own 504 (curl's connect and low-speed limits normally answer
 * first; it runs afresh for each retry). retries bounds the retries of a failed
 * store GET or HEAD (0: none). Returns the object (the caller's:
 * offload_proxy_destroy()). Supervisor thread, before the workers run.
 */
struct offload_proxy *offload_proxy_create(struct store *store, pthread_mutex_t *lock,
                                           uint64_t timeout_ms, unsigned retries);

/** How many store requests were retried so far, summed over the workers.
 * Any thread. */
uint64_t offload_proxy_retries(struct offload_proxy *p);

/** Free p and every worker's multi handle. NULL-safe. Only after the workers
 * stopped (their loops may already be destroyed: they are not touched). */
void offload_proxy_destroy(struct offload_proxy *p);

/* What an application's X-Accel-Redirect asks of a proxied answer (views,
 * copied by offload_proxy_get()). */
struct offload_proxy_app {
    /* 0 or 200: the store's status (200, 206, 304, 416); another: the whole
     * object with this status, the client's Range and conditionals not
     * forwarded. */
    int status;
    /* Lines added to a 200, 206 or 304 answer ("Name: value\r\n"...); the
     * store's headers of the same names are dropped. */
    const char *headers;
    size_t headers_len;
};

/**
 * Answer req (GET or HEAD) on c with the store's object key (below the store
 * prefix): status 200, or 206 for a single valid Range (If-Range drops the
 * Range); Content-Length, Content-Type (the store's, else content_type),
 * ETag, Last-Modified, Content-Range and Cache-Control as the store sent
 * them; If-None-Match and If-Modified-Since are forwarded and the store's
 * 304 is passed on. 404 when the store has no such object, 416 as the store
 * answers it, 502 (with the reason in the body) for store errors, 504 when
 * the store does not answer in time. A client that hangs up aborts the
 * transfer. app (NULL for a request of the client's own) is what an
 * application's X-Accel-Redirect adds. Returns what the handler returns
 * (HANDLER_LATER, or HANDLER_DONE when it answered at once). content_type
 * and app are copied. Worker thread, from a handler, or from the producer
 * of c's deferred response before it started answering (the connection is
 * handed over: conn_defer()).
 */
int offload_proxy_get(struct offload_proxy *p, struct conn *c, const struct http_request *req,
                      const char *key, const char *content_type,
                      const struct offload_proxy_app *app);

/** What offload_proxy_head() found: 0 (the object exists), -ENOENT (it does
 * not), -ETIMEDOUT (no answer in time) or -EIO (any other store failure, why
 * says which in one line). c is NULL when the client went away: only release
 * arg then. Runs once, on the worker thread, from the worker's loop. */
typedef void (*offload_proxy_head_fn)(struct conn *c, void *arg, int result, const char *why);

/**
 * HEAD key in the store without blocking the worker, then call done(c, arg,
 * result, why), which answers c. arg is the caller's and stays so (done runs
 * exactly once, also when the client left). Returns what the handler
 * returns: HANDLER_LATER, or HANDLER_DONE when the request could not be
 * signed and done() already ran (with -EIO). Worker thread, from a handler.
 */
int offload_proxy_head(struct offload_proxy *p, struct conn *c, const char *key,
                       offload_proxy_head_fn done, void *arg);

#endif
