/* Static files: the handler for paths under root, and what it exports so that
 * other handlers (the offload prefix) answer for a local file exactly as it
 * does: validators, conditional requests, a single Range, HEAD. */
#ifndef FERRY_HTTP_STATIC_H
#define FERRY_HTTP_STATIC_H

#include "http/parser.h"
#include "http/server.h"

#include <sys/stat.h>

struct conn;

/**
 * Decode the percent-escapes of (p, len) into out (cap bytes, NUL-terminated)
 * and check the result: it must start with '/', contain no NUL and no "." or
 * ".." segment. Repeated slashes are merged (so "//host" becomes "/host").
 * Returns the decoded length, -400 (invalid) or -414 (longer than cap - 1).
 * Pure; any thread. cap >= len + 1 always suffices.
 */
long static_decode_path(const char *p, size_t len, char *out, size_t cap);

/** Open rel (relative, NUL-terminated) below dirfd for reading with openat2
 * RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS (O_NONBLOCK, O_CLOEXEC): nothing
 * outside dirfd is reachable, not even through symlinks. Where the kernel has
 * no openat2 (ENOSYS), rel is walked component by component with O_NOFOLLOW
 * instead: no symlink is followed at all. Returns the fd (the caller's) or
 * -errno. Any thread. */
int static_open_beneath(int dirfd, const char *rel);

/** The status for a failed static_open_beneath() (err > 0): 404 for names that
 * do not resolve (ENOENT, ENOTDIR, ELOOP, EXDEV, ENAMETOOLONG), 403 for EACCES
 * and EPERM, 503 when out of descriptors or memory, else 500 — never a 404 for
 * a file that may exist. Pure. */
int static_open_errno_status(int err);

/**
 * Refuse what no file can answer: methods other than GET and HEAD (405 with
 * Allow: GET, HEAD) and requests with a body (413; the connection is closed).
 * Returns HANDLER_DONE when it answered, HANDLER_PASS when the request may be
 * served from a file. Call it before resolving the path, so that a 405 does
 * not depend on whether the file exists. Worker thread of c.
 */
int static_check_request(struct conn *c, const struct http_request *req);

/**
 * Answer req (already passed by static_check_request()) with the file open as
 * fd, whose fstat() is *st: ETag and Last-Modified from st, If-None-Match /
 * If-Modified-Since (304), If-Range and a single Range through common/range.h
 * (206, or 416 with "Content-Range: bytes * /size"; invalid or multi-range
 * headers give 200), Content-Type content_type (copied), Accept-Ranges, and
 * for HEAD the same head without the body. The body is sent from fd with
 * sendfile, so fd must be open for reading at offset-independent positions
 * (pread semantics); st must describe what fd holds now.
 *
 * Takes ownership of fd in every case: it is closed here (304, 416, errors) or
 * handed to the response, which closes it once sent or aborted. A fd that is
 * not a regular file gets 403. st and content_type are not kept.
 * Returns HANDLER_DONE. Worker thread of c. static_handle() uses it for every
 * file not served from the file cache.
 */
int static_serve_fd(struct conn *c, const struct http_request *req, int fd, const struct stat *st,
                    const char *content_type);

/** static_serve_fd() with a Cache-Control header (cache_control, copied; NULL:
 * none) on the 200, 206 and 304 answers. Same ownership of fd and returns. */
int static_serve_fd_with_cache_control(struct conn *c, const struct http_request *req, int fd,
                                       const struct stat *st, const char *content_type,
                                       const char *cache_control);

#endif
