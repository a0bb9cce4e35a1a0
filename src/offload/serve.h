/* Serving under [offload] url_prefix (issue 9): a file still in the spool is
 * served like a static file from its open descriptor; one that is not is
 * redirected to public_url or to a presigned store URL (after a HEAD of the
 * store with verify_remote), or served by ferry itself: the dir store's own
 * file, or the s3 object streamed through the worker (offload/proxy.h). The
 * path-to-key mapping is keymap.h's, the one the offloader uses. */
#ifndef FERRY_OFFLOAD_SERVE_H
#define FERRY_OFFLOAD_SERVE_H

#include <stddef.h>

struct conn;
struct ferry_conf;
struct metrics;
struct http_request;
struct server;

/** The redirect mode conf asks for, with auto resolved (enum conf_redirect, never
 * REDIRECT_AUTO): proxy for the dir store, public for s3 with public_url, else
 * presign. Pure; any thread. */
int offload_serve_mode(const struct ferry_conf *conf);

/**
 * Percent-encode rel[0..len) for a URL path: RFC 3986 unreserved bytes and '/'
 * are kept, every other byte becomes %XX (upper-case hex), once. Writes at most
 * 3 * len + 1 bytes (NUL-terminated) into out, which must hold that many.
 * Returns the encoded length. Pure; any thread.
 */
size_t offload_serve_encode(const char *rel, size_t len, char *out);

struct offload_serve;

/**
 * Prepare the handler for conf's [offload] section: open the spool (and for
 * proxy mode the dir store's directory) once, create the store client for
 * presign, s3 proxy and verify_remote (and the workers' transfer machinery
 * for the last two with s3) and the Content-Type table. conf must outlive the
 * result.
 * Returns 0 and *out (the caller's: offload_serve_destroy() after the server
 * stopped), or -errno with a message for the operator in err. Supervisor thread.
 */
int offload_serve_create(const struct ferry_conf *conf, struct offload_serve **out, char *err,
                         size_t errlen);

/** Free what offload_serve_create() made. NULL-safe. Not while a worker may
 * still run the handler. */
void offload_serve_destroy(struct offload_serve *os);

/** Register os's families with m under component "offload": with the s3
 * proxy, ferry_offload_proxy_retries_total; else nothing. os must outlive
 * every rendering of m. Returns 0 or as metrics_register(). Supervisor
 * thread. */
int offload_serve_register_metrics(struct offload_serve *os, struct metrics *m);

/** Install os as s's HANDLER_SLOT_OFFLOAD handler (before server_run()). os
 * must outlive the server's run. */
void offload_serve_install(struct offload_serve *os, struct server *s);

/** The handler (http_handler_fn): answers requests under url_prefix, passes
 * the rest. arg is a struct offload_serve. Worker threads, concurrently. */
int offload_serve_handle(struct conn *c, const struct http_request *req, void *arg);

/* What an application asked for with X-Accel-Redirect or X-Sendfile
 * (issue 11, second part), for offload_serve_upload(): views, not kept. */
struct offload_serve_accel {
    /* The application's status: 200 lets the file decide (206, 304, 416);
     * another is kept on a file answered in full. A redirect to the store
     * has the redirect's status. */
    int status;
    const char *headers; /* lines kept on a file answer ("Name: value\r\n"...) */
    size_t headers_len;
    const char *redirect_headers; /* lines kept on a redirect (Set-Cookie) */
    size_t redirect_headers_len;
};

/**
 * Serve the upload at the decoded URL path (plen bytes, not NUL-terminated)
 * for c's request, as a request under url_prefix would be served (local
 * file, else the store per [offload] redirect), except that no signed link
 * is checked (the application decided) and a's status and headers apply.
 * The access log note says accel=local|proxy|presign|redirect|missing. An
 * object the s3 proxy serves is streamed as for a request of the client's
 * own (Range, conditionals, 404 for a missing object, retries), a's status
 * and headers applied: the proxy takes c over from its current producer
 * (conn_defer()'s handover), and the caller then releases what its producer
 * owned without answering. verify_remote is not asked of the s3 store (in
 * proxy mode the GET itself tells; a redirect is the application's
 * decision).
 * Returns HANDLER_DONE when it answered, HANDLER_LATER when the s3 proxy took
 * the connection over, or -EPERM without answering when
 * the path is refused: not under url_prefix, not a valid name, a directory,
 * or reaching out of the spool or the store through a symlink. Worker
 * thread of c (a deferred response whose head was not started).
 */
int offload_serve_upload(struct offload_serve *os, struct conn *c, const char *path, size_t plen,
                         const struct offload_serve_accel *a);

/**
 * offload_serve_upload() for a filesystem path (X-Sendfile; plen bytes, not
 * NUL-terminated): it must be absolute and inside [offload] spool (as
 * configured, or with its symlinks resolved), with no "." or ".." segment;
 * symlinks below the spool are never followed out of it. Same returns.
 */
int offload_serve_file(struct offload_serve *os, struct conn *c, const char *fspath, size_t plen,
                       const struct offload_serve_accel *a);

#endif
