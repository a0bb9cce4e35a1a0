/* Static files from root: percent-decoding, containment with openat2
 * RESOLVE_BENEATH, Content-Type, ETag/Last-Modified, conditional requests,
 * a single byte range, HEAD, index files; never a directory listing. */
#include "http/static.h"

#include "http/internal.h"
#include "common/text.h"
#include "http/filecache.h"
#include "http/mime.h"
#include "http/response.h"

#include "common/alloc.h"
#include "common/conf.h"
#include "common/range.h"
#include "common/timeutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* static_open_beneath() without openat2: rel walked one component at a time
 * with O_NOFOLLOW, so no symlink is followed at all. Stricter than RESOLVE_BENEATH (a symlink that
 * stays inside is refused too), never looser; ".." cannot occur (static_decode_path() rejects dot
 * segments, and so does this walk). */
static int open_nofollow(int dirfd, const char *rel)
{
    char part[NAME_MAX + 1];
    int cur = dirfd;
    const char *p = rel;
    for (;;) {
        while (*p == '/')
            p++;
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        bool last = !end || end[strspn(end, "/")] == '\0';
        int fd;
        if (n == 0 || n > NAME_MAX || (p[0] == '.' && (n == 1 || (n == 2 && p[1] == '.')))) {
            fd = -(n > NAME_MAX ? ENAMETOOLONG : ENOENT);
        } else {
            memcpy(part, p, n);
            part[n] = '\0';
            int flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY;
            flags |= last ? O_NONBLOCK : O_DIRECTORY | O_PATH;
            fd = openat(cur, part, flags);
            if (fd < 0)
                fd = -errno;
        }
        if (cur != dirfd)
            close(cur);
        if (fd < 0 || last)
            return fd;
        cur = fd;
        p += n;
    }
}

int static_open_beneath(int dirfd, const char *rel)
{
    static atomic_bool no_openat2;
    if (!atomic_load_explicit(&no_openat2, memory_order_relaxed)) {
        struct open_how how = {
            .flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY,
            .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
        };
        int fd = (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
        if (fd >= 0)
            return fd;
        if (errno != ENOSYS)
            return -errno;
        atomic_store_explicit(&no_openat2, true, memory_order_relaxed);
    }
    return open_nofollow(dirfd, rel);
}

int static_open_errno_status(int err)
{
    switch (err) {
    case ENOENT:
    case ENOTDIR:
    case ELOOP:
    case EXDEV:
    case ENAMETOOLONG:
        return 404;
    case EACCES:
    case EPERM:
        return 403;
    case EMFILE:
    case ENFILE:
    case ENOMEM:
        return 503;
    default:
        return 500;
    }
}

long static_decode_path(const char *p, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    if (len == 0 || p[0] != '/')
        return -400;
    for (size_t i = 0; i < len; i++) {
        char ch = p[i];
        if (ch == '%') {
            if (i + 2 >= len)
                return -400;
            int hi = text_hex_value(p[i + 1]), lo = text_hex_value(p[i + 2]);
            if (hi < 0 || lo < 0)
                return -400;
            ch = (char)(hi << 4 | lo);
            i += 2;
            if (ch == '\0')
                return -400;
        }
        if (ch == '/' && o > 0 && out[o - 1] == '/')
            continue;
        if (o + 1 >= cap)
            return -414;
        out[o++] = ch;
    }
    out[o] = '\0';
    /* Reject dot segments outright instead of resolving them: a request that
     * needs them is either broken or probing. */
    for (size_t i = 0; i < o; i++) {
        if (out[i] != '/')
            continue;
        size_t j = i + 1;
        if (j < o && out[j] == '.') {
            if (j + 1 == o || out[j + 1] == '/')
                return -400;
            if (out[j + 1] == '.' && (j + 2 == o || out[j + 2] == '/'))
                return -400;
        }
    }
    return (long)o;
}

/* Does the If-None-Match list (p, len) contain etag (weak comparison) or "*"? */
static bool etag_list_matches(const char *p, size_t len, const char *etag)
{
    size_t elen = strlen(etag);
    size_t i = 0;
    while (i < len) {
        while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == ','))
            i++;
        if (i >= len)
            break;
        if (p[i] == '*')
            return true;
        size_t start = i;
        if (len - i >= 2 && p[i] == 'W' && p[i + 1] == '/')
            start = i + 2;
        i = start;
        if (i < len && p[i] == '"') {
            size_t end = i + 1;
            while (end < len && p[end] != '"')
                end++;
            if (end >= len)
                return false;
            if (end + 1 - i == elen && memcmp(p + i, etag, elen) == 0)
                return true;
            i = end + 1;
        } else {
            while (i < len && p[i] != ',')
                i++;
        }
    }
    return false;
}

static void respond_error(struct conn *c, int status, const char *body)
{
    conn_respond_simple(c, status, "text/plain", body);
}

static void respond_open_error(struct conn *c, int err)
{
    switch (static_open_errno_status(err)) {
    case 404:
        respond_error(c, 404, "404 Not Found\n");
        break;
    case 403:
        respond_error(c, 403, "403 Forbidden\n");
        break;
    case 503:
        respond_error(c, 503, "503 Service Unavailable: out of file descriptors or memory\n");
        break;
    default:
        respond_error(c, 500, "500 Internal Server Error\n");
        break;
    }
}

/* What a response is made from: a cached entry or an open file. */
struct file_view {
    off_t size;
    time_t mtime;
    const char *etag;
    const char *lastmod;
    const char *ctype;         /* used only when served from fd */
    int fd;                    /* -1 when served from e */
    struct fcache_entry *e;    /* NULL when served from fd */
    const char *cache_control; /* NULL: no Cache-Control header */
};

static void view_body(struct conn *c, struct file_view *v, off_t start, off_t len)
{
    if (v->e) {
        fcache_ref(v->e);
        conn_respond_body(c, v->e->data + start, (size_t)len, fcache_release, v->e);
    } else {
        conn_respond_file(c, v->fd, start, len);
        v->fd = -1;
    }
}

static void view_close(struct file_view *v)
{
    if (v->fd >= 0)
        close(v->fd);
    v->fd = -1;
}

/* Conditional requests, Range and the 200/206/304/416 answer for a file. */
static int static_serve(struct conn *c, const struct http_request *req, struct file_view *v)
{
    bool not_modified = false;
    if (req->if_none_match.p) {
        not_modified = etag_list_matches(req->if_none_match.p, req->if_none_match.len, v->etag);
    } else if (req->if_modified_since.p) {
        time_t ims;
        if (time_parse_http(req->if_modified_since.p, req->if_modified_since.len, &ims) == 0 &&
            v->mtime <= ims)
            not_modified = true;
    }
    if (not_modified) {
        view_close(v);
        conn_respond_start(c, 304);
        conn_respond_header(c, "ETag", v->etag);
        conn_respond_header(c, "Last-Modified", v->lastmod);
        if (v->cache_control)
            conn_respond_header(c, "Cache-Control", v->cache_control);
        conn_respond_body(c, "", 0, NULL, NULL);
        return HANDLER_DONE;
    }

    uint64_t start = 0, len = (uint64_t)v->size;
    enum range_outcome rr = RANGE_IGNORE;
    if (req->range.p) {
        bool range_applies = true;
        if (req->if_range.p) {
            /* If-Range: a strong ETag match or the exact Last-Modified date. */
            const char *want =
                req->if_range.len && req->if_range.p[0] == '"' ? v->etag : v->lastmod;
            range_applies = req->if_range.len == strlen(want) &&
                            memcmp(req->if_range.p, want, req->if_range.len) == 0;
        }
        if (range_applies)
            rr = range_parse(req->range.p, req->range.len, (uint64_t)v->size, &start, &len);
    }
    if (rr == RANGE_UNSATISFIABLE) {
        view_close(v);
        char cr[64];
        snprintf(cr, sizeof(cr), "bytes */%lld", (long long)v->size);
        conn_respond_start(c, 416);
        conn_respond_header(c, "Content-Range", cr);
        conn_respond_header(c, "Content-Type", "text/plain");
        conn_respond_body(c, "416 Range Not Satisfiable\n", 26, NULL, NULL);
        return HANDLER_DONE;
    }
    conn_respond_start(c, rr == RANGE_SATISFIABLE ? 206 : 200);
    if (v->e) {
        conn_respond_headers_raw(c, v->e->headers, v->e->headers_len);
    } else {
        conn_respond_header(c, "Content-Type", v->ctype);
        conn_respond_header(c, "Last-Modified", v->lastmod);
        conn_respond_header(c, "ETag", v->etag);
        conn_respond_header(c, "Accept-Ranges", "bytes");
    }
    if (v->cache_control)
        conn_respond_header(c, "Cache-Control", v->cache_control);
    if (rr == RANGE_SATISFIABLE) {
        char cr[96];
        snprintf(cr, sizeof(cr), "bytes %llu-%llu/%lld", (unsigned long long)start,
                 (unsigned long long)(start + len - 1), (long long)v->size);
        conn_respond_header(c, "Content-Range", cr);
    }
    view_body(c, v, (off_t)start, (off_t)len);
    return HANDLER_DONE;
}

static int serve_entry(struct conn *c, const struct http_request *req, struct fcache_entry *e)
{
    struct file_view v = {.size = (off_t)e->size,
                          .mtime = e->mtim.tv_sec,
                          .etag = e->etag,
                          .lastmod = e->lastmod,
                          .fd = -1,
                          .e = e};
    return static_serve(c, req, &v);
}

/* Bytes a path may carry unencoded in a Location (RFC 3986 pchar and '/'). */
static bool location_char_plain(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("/-._~!$&'()*+,;=:@", ch) != NULL);
}

/* Redirect to the slash form so relative links in the index work. The target
 * is built from the decoded, slash-collapsed path (re-encoded), never from the
 * raw request bytes: "//images" must not become the protocol-relative
 * "//images/", which a browser reads as the host "images". */
static int redirect_to_slash(struct conn *c, const struct http_request *req, const char *path,
                             size_t path_len)
{
    char *loc = xmalloc(path_len * 3 + req->query.len + 3);
    size_t n = 0;
    for (size_t i = 0; i < path_len; i++) {
        unsigned char ch = (unsigned char)path[i];
        if (location_char_plain(ch))
            loc[n++] = (char)ch;
        else
            n += (size_t)sprintf(loc + n, "%%%02X", ch);
    }
    loc[n++] = '/';
    if (req->query.p) {
        loc[n++] = '?';
        memcpy(loc + n, req->query.p, req->query.len);
        n += req->query.len;
    }
    loc[n] = '\0';
    conn_respond_start(c, 301);
    conn_respond_header(c, "Location", loc);
    conn_respond_header(c, "Content-Type", "text/plain");
    conn_respond_body(c, "301 Moved Permanently\n", 22, NULL, NULL);
    free(loc);
    return HANDLER_DONE;
}

int static_check_request(struct conn *c, const struct http_request *req)
{
    if (req->method_id != HTTP_M_GET && req->method_id != HTTP_M_HEAD) {
        conn_respond_start(c, 405);
        conn_respond_header(c, "Allow", "GET, HEAD");
        conn_respond_header(c, "Content-Type", "text/plain");
        conn_respond_body(c, "405 Method Not Allowed\n", 23, NULL, NULL);
        return HANDLER_DONE;
    }
    if (req->content_length > 0 || req->chunked) {
        conn_set_close(c);
        respond_error(c, 413, "413 Content Too Large: no request body is accepted here\n");
        return HANDLER_DONE;
    }
    return HANDLER_PASS;
}

int static_serve_fd(struct conn *c, const struct http_request *req, int fd, const struct stat *st,
                    const char *content_type)
{
    return static_serve_fd_with_cache_control(c, req, fd, st, content_type, NULL);
}

int static_serve_fd_with_cache_control(struct conn *c, const struct http_request *req, int fd,
                                       const struct stat *st, const char *content_type,
                                       const char *cache_control)
{
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        respond_error(c, 403, "403 Forbidden\n");
        return HANDLER_DONE;
    }
    char etag[48], lastmod[32];
    fcache_format_validators(st, etag, sizeof(etag), lastmod);
    struct file_view v = {.size = st->st_size,
                          .mtime = st->st_mtime,
                          .etag = etag,
                          .lastmod = lastmod,
                          .ctype = content_type,
                          .fd = fd,
                          .e = NULL,
                          .cache_control = cache_control};
    return static_serve(c, req, &v);
}

/* Resolve the request path below root (file cache first), then answer for the
 * file found through the cache or static_serve_fd(). */
int static_handle(struct conn *c, const struct http_request *req, void *arg)
{
    struct server *s = arg;
    struct worker *w = c->w;
    c->handler = HANDLER_KIND_STATIC;
    if (static_check_request(c, req) == HANDLER_DONE)
        return HANDLER_DONE;
    long plen = static_decode_path(req->path.p, req->path.len, w->path_buf,
                                   s->conf->server.max_uri_size + 1);
    if (plen < 0) {
        if (plen == -414)
            respond_error(c, 414, "414 URI Too Long\n");
        else
            respond_error(c, 400, "400 Bad Request: invalid path\n");
        return HANDLER_DONE;
    }
    uint64_t now = evloop_now(w->loop);
    struct fcache_entry *stale = NULL;
    if (w->fcache) {
        struct fcache_entry *e = fcache_get(w->fcache, w->path_buf, (size_t)plen, now, &stale);
        if (e)
            return serve_entry(c, req, e);
    }
    const char *rel = w->path_buf[1] ? w->path_buf + 1 : ".";
    int fd = static_open_beneath(s->root_fd, rel);
    if (fd < 0) {
        respond_open_error(c, -fd);
        return HANDLER_DONE;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        respond_error(c, 500, "500 Internal Server Error\n");
        return HANDLER_DONE;
    }
    const char *name = w->path_buf;
    size_t name_len = (size_t)plen;
    if (S_ISDIR(st.st_mode)) {
        if (w->path_buf[plen - 1] != '/') {
            close(fd);
            return redirect_to_slash(c, req, w->path_buf, (size_t)plen);
        }
        int ifd = *s->conf->server.index ? static_open_beneath(fd, s->conf->server.index) : -ENOENT;
        close(fd);
        if (ifd < 0) {
            respond_error(c, 403, "403 Forbidden: directory listing is not allowed\n");
            return HANDLER_DONE;
        }
        fd = ifd;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
            close(fd);
            respond_error(c, 403, "403 Forbidden\n");
            return HANDLER_DONE;
        }
        name = s->conf->server.index;
        name_len = strlen(name);
    } else if (!S_ISREG(st.st_mode)) {
        close(fd);
        respond_error(c, 403, "403 Forbidden\n");
        return HANDLER_DONE;
    }
    if (stale && fcache_revalidate(stale, &st, now)) {
        close(fd);
        return serve_entry(c, req, stale);
    }
    const char *ctype = mime_table_lookup(s->mime, name, name_len);
    if (w->fcache && (size_t)st.st_size <= fcache_max_file(w->fcache)) {
        struct fcache_entry *e =
            fcache_put(w->fcache, w->path_buf, (size_t)plen, fd, &st, ctype, now);
        if (e) {
            close(fd);
            return serve_entry(c, req, e);
        }
    }
    return static_serve_fd(c, req, fd, &st, ctype);
}
