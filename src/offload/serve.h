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

/** Install os as s's HANDLER_SLOT_OFFLOAD handler (before server_run()). os
 * must outlive the server's run. */
void offload_serve_install(struct offload_serve *os, struct server *s);

/** The handler (http_handler_fn): answers requests under url_prefix, passes
 * the rest. arg is a struct offload_serve. Worker threads, concurrently. */
int offload_serve_handle(struct conn *c, const struct http_request *req, void *arg);

#endif
