#include "offload/serve.h"

#include "common/alloc.h"
#include "common/buf.h"
#include "common/conf.h"
#include "common/fsdir.h"
#include "http/mime.h"
#include "http/parser.h"
#include "http/response.h"
#include "http/server.h"
#include "http/static.h"
#include "metrics/metrics.h"
#include "offload/keymap.h"
#include "offload/link.h"
#include "offload/proxy.h"
#include "store/dir.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct offload_serve {
    const struct ferry_conf *conf;
    int mode;            /* enum conf_redirect, resolved */
    int status;          /* 302, 303 or 307 */
    long ttl_s;          /* presign_ttl in seconds */
    int spool_fd;        /* the spool, opened once */
    int store_fd;        /* proxy with the dir store: its directory; else -1 */
    struct store *store; /* presign, s3 proxy, verify_remote: the store client; else NULL */
    /* A struct store is used by one thread at a time; presigning and signing
     * are short computations, so the workers take turns. */
    pthread_mutex_t store_lock;
    struct offload_proxy *proxy; /* s3 proxy or verify_remote: transfers on the workers */
    struct mime_table *mime;
    size_t prefix_len; /* [store] prefix */
    /* link_secret and link_secret_previous (NULL when unset): read-only keys
     * every worker checks links with. */
    struct offload_link_key *link_key, *link_prev;
    /* The spool as configured (absolute, without trailing '/') and with its
     * symlinks resolved: the prefixes an X-Sendfile path may start with. */
    char *spool_abs, *spool_real;
};

/* The access log note of an answer: offload=WHAT for a request under
 * url_prefix, accel=WHAT for one an application named (a non-NULL). */
#define NOTE(a, what) ((a) ? "accel=" what : "offload=" what)

int offload_serve_mode(const struct ferry_conf *conf)
{
    if (conf->offload.redirect != REDIRECT_AUTO)
        return conf->offload.redirect;
    if (conf->store.type == STORE_DIR)
        return REDIRECT_PROXY;
    return conf->offload.public_url[0] ? REDIRECT_PUBLIC : REDIRECT_PRESIGN;
}

static bool url_unreserved(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

size_t offload_serve_encode(const char *rel, size_t len, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)rel[i];
        if (url_unreserved(ch) || ch == '/') {
            out[n++] = (char)ch;
        } else {
            out[n++] = '%';
            out[n++] = hex[ch >> 4];
            out[n++] = hex[ch & 15];
        }
    }
    out[n] = '\0';
    return n;
}

/* ---- signed links (issue 11, link.h) ----
 * With link_secret set, every request under url_prefix is checked first
 * (link_refuse()); what is answered for a good link then never outlives it:
 * a file gets "Cache-Control: private, max-age=" its time left, a presigned
 * redirect a validity and max-age within it (link_left()). */

static int link_keys_create(struct offload_serve *os, char *err, size_t errlen)
{
    const char *cur = os->conf->offload.link_secret, *prev = os->conf->offload.link_secret_previous;
    if ((cur[0] && offload_link_key_create(cur, strlen(cur), &os->link_key) < 0) ||
        (prev[0] && offload_link_key_create(prev, strlen(prev), &os->link_prev) < 0)) {
        snprintf(err, errlen, "[offload] link_secret: cannot set up HMAC-SHA256");
        return -EIO;
    }
    return 0;
}

/* Seconds left at now for the link of a request link_refuse() let through (0
 * once expired), or -1 when links are not signed. */
static long link_left(const struct offload_serve *os, const struct http_request *req, time_t now)
{
    int64_t expires;
    if (!os->link_key || !req || offload_link_expires(req->query.p, req->query.len, &expires) < 0)
        return -1;
    if (expires <= (int64_t)now)
        return 0;
    return expires - (int64_t)now > LONG_MAX ? LONG_MAX : (long)(expires - (int64_t)now);
}

/* The Cache-Control of a file answered through a signed link, in buf, or NULL. */
static const char *link_cache_control(const struct offload_serve *os,
                                      const struct http_request *req, char *buf, size_t len)
{
    long left = link_left(os, req, time(NULL));
    if (left < 0)
        return NULL;
    snprintf(buf, len, "private, max-age=%ld", left);
    return buf;
}

/* Presign key's URL into url for presign_ttl, or for a signed link at most
 * until the link expires (X-Amz-Date + *ttl <= expires), and never past the
 * signing credentials' expiry. The presigner reads the clock itself: when the
 * second changed around it, its X-Amz-Date may be a second later than ours,
 * so it signs again. The URL is for req's method (HEAD or GET). Returns 0 and
 * *ttl, -ETIME when the link expired meanwhile, -EKEYEXPIRED when the
 * credentials have, or store_presign()'s error. linked = false: no link
 * bounds the URL (an application named the upload). */
static int link_presign(struct offload_serve *os, const struct http_request *req, bool linked,
                        const char *key, long *ttl, struct buf *url)
{
    /* The signature covers the method: a HEAD gets a URL for a HEAD. */
    const char *method = req->method_id == HTTP_M_HEAD ? "HEAD" : "GET";
    int r;
    time_t now;
    /* Nor past the expiry of the credentials that sign it. */
    time_t creds_exp = store_credentials_expiry(os->store);
    do {
        now = time(NULL);
        long left = link_left(os, linked ? req : NULL, now);
        if (left == 0)
            return -ETIME;
        *ttl = left > 0 && left < os->ttl_s ? left : os->ttl_s;
        if (creds_exp && creds_exp - now < *ttl)
            *ttl = (long)(creds_exp - now);
        if (*ttl < 1)
            return -EKEYEXPIRED;
        buf_reset(url);
        pthread_mutex_lock(&os->store_lock);
        r = store_presign(os->store, method, key + os->prefix_len, *ttl, url);
        pthread_mutex_unlock(&os->store_lock);
    } while (r == 0 && (os->link_key || creds_exp) && time(NULL) != now);
    return r;
}

/* The spool's absolute names, without trailing slashes; NULL where unknown. */
static void spool_names(struct offload_serve *os)
{
    const char *spool = os->conf->offload.spool;
    if (spool[0] == '/')
        os->spool_abs = xstrdup(spool);
    os->spool_real = realpath(spool, NULL);
    for (char **p = &os->spool_abs; p; p = p == &os->spool_abs ? &os->spool_real : NULL) {
        size_t n = *p ? strlen(*p) : 0;
        while (n > 1 && (*p)[n - 1] == '/')
            (*p)[--n] = '\0';
    }
}

int offload_serve_create(const struct ferry_conf *conf, struct offload_serve **out, char *err,
                         size_t errlen)
{
    static const int statuses[] = {302, 303, 307};
    struct offload_serve *os = xcalloc(1, sizeof(*os));
    os->conf = conf;
    os->mode = offload_serve_mode(conf);
    os->status = statuses[conf->offload.redirect_status];
    os->ttl_s = (long)(conf->offload.presign_ttl_ms / 1000);
    os->store_fd = -1;
    os->prefix_len = strlen(conf->store.prefix);
    pthread_mutex_init(&os->store_lock, NULL);
    spool_names(os);
    os->spool_fd = open(conf->offload.spool, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (os->spool_fd < 0) {
        int e = errno;
        snprintf(err, errlen, "[offload] spool '%s': %s", conf->offload.spool, strerror(e));
        offload_serve_destroy(os);
        return -e;
    }
    if (os->mode == REDIRECT_PROXY && conf->store.type == STORE_DIR) {
        /* The dir store creates its directory on first use, as it would here. */
        int r = fsdir_make(conf->store.path, 0755);
        if (r < 0) {
            snprintf(err, errlen, "[store] path '%s': %s", conf->store.path, strerror(-r));
            offload_serve_destroy(os);
            return r;
        }
        os->store_fd = open(conf->store.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (os->store_fd < 0) {
            int e = errno;
            snprintf(err, errlen, "[store] path '%s': %s", conf->store.path, strerror(e));
            offload_serve_destroy(os);
            return -e;
        }
    }
    bool s3 = conf->store.type == STORE_S3;
    bool verify = conf->offload.verify_remote && os->mode != REDIRECT_PROXY;
    if (os->mode == REDIRECT_PRESIGN || (s3 && os->mode == REDIRECT_PROXY) || verify) {
        struct store_error serr = {0};
        int r = store_create(conf, NULL, &os->store, &serr);
        if (r < 0) {
            snprintf(err, errlen, "the store for %s: %s",
                     os->mode == REDIRECT_PRESIGN ? "presigned redirects"
                     : os->mode == REDIRECT_PROXY ? "proxy mode"
                                                  : "verify_remote",
                     serr.message[0] ? serr.message : strerror(-r));
            offload_serve_destroy(os);
            return r;
        }
    }
    if (link_keys_create(os, err, errlen) < 0) {
        offload_serve_destroy(os);
        return -EIO;
    }
    if (s3 && (os->mode == REDIRECT_PROXY || verify)) {
        /* Curl's connect and low-speed limits answer first; this is the
         * core's backstop for a transfer that would hang anyway (it starts
         * afresh with each retry). */
        uint64_t t = conf->store.connect_timeout_ms + 2 * conf->store.low_speed_time_ms + 5000;
        os->proxy =
            offload_proxy_create(os->store, &os->store_lock, t, (unsigned)conf->store.retries);
    }
    os->mime = mime_table_create(conf->server.mime_types);
    *out = os;
    return 0;
}

void offload_serve_destroy(struct offload_serve *os)
{
    if (!os)
        return;
    if (os->spool_fd >= 0)
        close(os->spool_fd);
    if (os->store_fd >= 0)
        close(os->store_fd);
    offload_proxy_destroy(os->proxy);
    store_destroy(os->store);
    offload_link_key_destroy(os->link_key);
    offload_link_key_destroy(os->link_prev);
    mime_table_destroy(os->mime);
    free(os->spool_abs);
    free(os->spool_real);
    pthread_mutex_destroy(&os->store_lock);
    free(os);
}

static const struct metrics_family serve_families[] = {
    {.name = "offload_proxy_retries_total",
     .help = "Store GETs and HEADs of redirect = proxy tried again after a store error before "
             "any of the answer went to the client.",
     .type = METRICS_COUNTER},
};

static int serve_collect(struct metrics_collector *mc, void *arg)
{
    struct offload_serve *os = arg;
    metrics_value(mc, 0, NULL, (double)offload_proxy_retries(os->proxy));
    return 0;
}

int offload_serve_register_metrics(struct offload_serve *os, struct metrics *m)
{
    if (!os->proxy)
        return 0;
    return metrics_register(m, "offload", serve_families, 1, serve_collect, os);
}

void offload_serve_install(struct offload_serve *os, struct server *s)
{
    server_set_handler(s, HANDLER_SLOT_OFFLOAD, offload_serve_handle, os);
}

/* A name the offloader never picks up (its own name matches an ignore pattern,
 * or a directory on the way starts with '.'): never redirected, since no
 * object can exist for it. */
static bool rel_ignored(const struct offload_serve *os, const char *rel)
{
    const char *name = rel;
    for (const char *p = rel; *p; p++) {
        if (*p == '/') {
            if (name[0] == '.')
                return true;
            name = p + 1;
        }
    }
    return offload_name_ignored(os->conf->offload.ignore.items, name);
}

/* The access log note and the handler the metrics count the request under:
 * the redirect modes by name, everything else the handler answers (the local
 * file, a 404 or a refusal under url_prefix) as offload_local. */
static void serve_note(struct conn *c, const char *note)
{
    /* offload=WHAT or accel=WHAT: an upload an application named counts as
     * the same kind of answer. */
    const char *what = strchr(note, '=') + 1;
    enum handler_kind k = HANDLER_KIND_OFFLOAD_LOCAL;
    if (strcmp(what, "redirect") == 0)
        k = HANDLER_KIND_REDIRECT;
    else if (strcmp(what, "presign") == 0)
        k = HANDLER_KIND_PRESIGN;
    else if (strcmp(what, "proxy") == 0)
        k = HANDLER_KIND_PROXY;
    conn_set_log_note(c, note);
    conn_set_handler(c, k);
}

static const char *mime_of(struct offload_serve *os, const char *rel)
{
    const char *slash = strrchr(rel, '/');
    const char *name = slash ? slash + 1 : rel;
    return mime_table_lookup(os->mime, name, strlen(name));
}

static int respond_text(struct conn *c, int status, const char *note, const char *body)
{
    serve_note(c, note);
    conn_respond_simple(c, status, "text/plain", body);
    return HANDLER_DONE;
}

/* A failed open that is not "no such file" and not a refusal: out of
 * descriptors or memory is 503, anything else 500 (static_open_errno_status()),
 * never a 404 for a file that may exist. */
static int respond_open_failed(struct conn *c, int err, const char *note)
{
    if (static_open_errno_status(err) == 503)
        return respond_text(c, 503, note, "503 Service Unavailable: out of file descriptors\n");
    return respond_text(c, 500, note, "500 Internal Server Error\n");
}

/* With link_secret set: answer 403 for a missing or wrong signature and 410
 * for an expired link (short bodies that say nothing about the secret), and
 * return HANDLER_DONE; else HANDLER_PASS. path is the decoded request path,
 * the one signed. */
static int link_refuse(const struct offload_serve *os, struct conn *c,
                       const struct http_request *req, const char *path, size_t plen)
{
    if (!os->link_key)
        return HANDLER_PASS;
    switch (offload_link_check(os->link_key, os->link_prev, path, plen, req->query.p,
                               req->query.len, (int64_t)time(NULL))) {
    case OFFLOAD_LINK_OK:
        return HANDLER_PASS;
    case OFFLOAD_LINK_EXPIRED:
        return respond_text(c, 410, "offload=expired", "410 Gone\n");
    case OFFLOAD_LINK_MISSING:
        return respond_text(c, 403, "offload=unsigned", "403 Forbidden\n");
    default:
        return respond_text(c, 403, "offload=badsig", "403 Forbidden\n");
    }
}

/* Serve fd (opened below the spool or the dir store) as a static file. */
static int serve_open_fd(struct offload_serve *os, struct conn *c, const struct http_request *req,
                         int fd, const char *rel, const char *note,
                         const struct offload_serve_accel *a)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return respond_text(c, 500, note, "500 Internal Server Error\n");
    }
    serve_note(c, note);
    char cc[48];
    struct static_serve_opts o = {0};
    if (a) {
        o.headers = a->headers;
        o.headers_len = a->headers_len;
        o.status = a->status == 200 ? 0 : a->status;
    } else {
        o.cache_control = link_cache_control(os, req, cc, sizeof(cc));
    }
    return static_serve_fd_opts(c, req, fd, &st, mime_of(os, rel), &o);
}

static int redirect_to(struct offload_serve *os, struct conn *c, const char *location,
                       const char *cache_control, const char *note,
                       const struct offload_serve_accel *a)
{
    static const char *const bodies[] = {"302 Found\n", "303 See Other\n",
                                         "307 Temporary Redirect\n"};
    const char *body = bodies[os->status == 302 ? 0 : os->status == 303 ? 1 : 2];
    serve_note(c, note);
    conn_respond_start(c, os->status);
    conn_respond_header(c, "Location", location);
    if (cache_control)
        conn_respond_header(c, "Cache-Control", cache_control);
    if (a && a->redirect_headers_len)
        conn_respond_headers_raw(c, a->redirect_headers, a->redirect_headers_len);
    conn_respond_header(c, "Content-Type", "text/plain");
    conn_respond_body(c, body, strlen(body), NULL, NULL);
    return HANDLER_DONE;
}

static int redirect_public(struct offload_serve *os, struct conn *c, const char *rel,
                           size_t rel_len, const struct offload_serve_accel *a)
{
    const char *base = os->conf->offload.public_url;
    size_t blen = strlen(base);
    char *loc = xmalloc(blen + 3 * rel_len + 1);
    memcpy(loc, base, blen);
    offload_serve_encode(rel, rel_len, loc + blen);
    int r = redirect_to(os, c, loc, NULL, NOTE(a, "redirect"), a);
    free(loc);
    return r;
}

static int redirect_presign(struct offload_serve *os, struct conn *c, const char *key,
                            const struct offload_serve_accel *a)
{
    struct buf url;
    buf_init(&url, 64 * 1024);
    long ttl;
    /* An application's decision carries no link to bound the URL by. */
    int r = link_presign(os, conn_request(c), !a, key, &ttl, &url);
    if (r == -ETIME) {
        buf_finish(&url);
        return respond_text(c, 410, "offload=expired", "410 Gone\n");
    }
    if (r < 0 || !url.data) {
        buf_finish(&url);
        return respond_text(c, 500, NOTE(a, "presign"),
                            r == -EKEYEXPIRED
                                ? "500 Internal Server Error: the store's credentials have "
                                  "expired\n"
                                : "500 Internal Server Error: cannot presign the object URL\n");
    }
    /* A cache may keep the redirect for at most 90% of the URL's validity, so
     * that what it hands out still leaves the client time to use it. */
    char cc[64];
    snprintf(cc, sizeof(cc), "private, max-age=%ld", ttl - ttl / 10);
    r = redirect_to(os, c, url.data, cc, NOTE(a, "presign"), a);
    buf_finish(&url);
    return r;
}

static int proxy_dir(struct offload_serve *os, struct conn *c, const struct http_request *req,
                     const char *key, const struct offload_serve_accel *a)
{
    if (dir_store_check_key(key) < 0)
        return respond_text(c, 404, NOTE(a, "proxy"), "404 Not Found\n");
    int fd = static_open_beneath(os->store_fd, key);
    if (fd < 0) {
        if (a && (fd == -EXDEV || fd == -ELOOP))
            return -EPERM;
        if (fd == -EACCES || fd == -EPERM || fd == -EXDEV || fd == -ELOOP)
            return respond_text(c, 403, NOTE(a, "proxy"), "403 Forbidden\n");
        if (fd == -ENOENT || fd == -ENOTDIR)
            return respond_text(c, 404, NOTE(a, "proxy"), "404 Not Found\n");
        return respond_open_failed(c, -fd, NOTE(a, "proxy"));
    }
    return serve_open_fd(os, c, req, fd, key, NOTE(a, "proxy"), a);
}

/* A redirect, once the store confirmed the object (or without asking it). */
static int redirect_now(struct offload_serve *os, struct conn *c, const char *rel, size_t rel_len,
                        const char *key, const struct offload_serve_accel *a)
{
    if (os->mode == REDIRECT_PUBLIC)
        return redirect_public(os, c, rel, rel_len, a);
    return redirect_presign(os, c, key, a);
}

/* verify_remote: what the redirect needs once the store answered. */
struct verify_ctx {
    struct offload_serve *os;
    char *key;
    size_t rel_len;
    char rel[];
};

static int verify_failed(struct conn *c, int result, const char *why)
{
    char body[320];
    if (result == -ENOENT)
        return respond_text(c, 404, "offload=missing", "404 Not Found\n");
    if (result == -ETIMEDOUT)
        snprintf(body, sizeof(body), "504 Gateway Timeout: %s\n", why);
    else
        snprintf(body, sizeof(body), "502 Bad Gateway: %s\n", why);
    return respond_text(c, result == -ETIMEDOUT ? 504 : 502, "offload=verify", body);
}

static void verified(struct conn *c, void *arg, int result, const char *why)
{
    struct verify_ctx *v = arg;
    if (c && result == 0)
        redirect_now(v->os, c, v->rel, v->rel_len, v->key, NULL);
    else if (c)
        verify_failed(c, result, why);
    free(v);
}

/* verify_remote = on: redirect only to an object the store has. */
static int verify_then_redirect(struct offload_serve *os, struct conn *c, const char *rel,
                                size_t rel_len, const char *key,
                                const struct offload_serve_accel *a)
{
    if (!os->proxy) {
        /* The dir store: a local stat, no need to wait elsewhere. */
        struct store_info info;
        struct store_error serr = {0};
        pthread_mutex_lock(&os->store_lock);
        int r = store_head(os->store, key + os->prefix_len, &info, &serr);
        pthread_mutex_unlock(&os->store_lock);
        if (r < 0)
            return verify_failed(c, r == -ENOENT ? r : -EIO, serr.message);
        return redirect_now(os, c, rel, rel_len, key, a);
    }
    size_t klen = strlen(key);
    struct verify_ctx *v = xmalloc(sizeof(*v) + rel_len + 1 + klen + 1);
    v->os = os;
    v->rel_len = rel_len;
    memcpy(v->rel, rel, rel_len);
    v->rel[rel_len] = '\0';
    v->key = v->rel + rel_len + 1;
    memcpy(v->key, key, klen + 1);
    return offload_proxy_head(os->proxy, c, key + os->prefix_len, verified, v);
}

/* The file is not in the spool: answer from the store per the mode. */
static int serve_remote(struct offload_serve *os, struct conn *c, const struct http_request *req,
                        const char *rel, size_t rel_len, const struct offload_serve_accel *a)
{
    if (rel_ignored(os, rel))
        return respond_text(c, 404, NOTE(a, "missing"), "404 Not Found\n");
    char key[OFFLOAD_KEY_MAX + 1];
    if (offload_key_from_rel(os->conf->store.prefix, rel, rel_len, key, sizeof(key)) < 0)
        return respond_text(c, 404, NOTE(a, "missing"), "404 Not Found\n");
    if (os->mode == REDIRECT_PROXY && os->proxy) {
        /* The s3 proxy answers through a producer of its own; for an
         * application's decision it takes the connection over from the
         * backend's (conn_defer()'s handover). As for a request of the
         * client's own, the GET itself tells whether the store has it. */
        struct offload_proxy_app app;
        if (a)
            app = (struct offload_proxy_app){
                .status = a->status, .headers = a->headers, .headers_len = a->headers_len};
        serve_note(c, NOTE(a, "proxy"));
        return offload_proxy_get(os->proxy, c, req, key + os->prefix_len, mime_of(os, rel),
                                 a ? &app : NULL);
    }
    if (os->mode == REDIRECT_PROXY)
        return proxy_dir(os, c, req, key, a);
    /* Asking the s3 store first would also need a producer of its own: an
     * application's decision is redirected without it. */
    if (os->conf->offload.verify_remote && !(a && os->proxy))
        return verify_then_redirect(os, c, rel, rel_len, key, a);
    return redirect_now(os, c, rel, rel_len, key, a);
}

/* Answer for rel (valid, below the spool): the local file, else the store.
 * With a (an application's decision), a name that leads out of the spool
 * through a symlink is refused (-EPERM) instead of answered. */
static int serve_rel(struct offload_serve *os, struct conn *c, const struct http_request *req,
                     const char *rel, size_t rel_len, const struct offload_serve_accel *a)
{
    int fd = static_open_beneath(os->spool_fd, rel);
    if (fd >= 0)
        return serve_open_fd(os, c, req, fd, rel, NOTE(a, "local"), a);
    if (fd == -ENOENT || fd == -ENOTDIR)
        return serve_remote(os, c, req, rel, rel_len, a);
    if (a && (fd == -EXDEV || fd == -ELOOP))
        return -EPERM;
    if (fd == -EACCES || fd == -EPERM || fd == -EXDEV || fd == -ELOOP)
        return respond_text(c, 403, NOTE(a, "refused"), "403 Forbidden\n");
    return respond_open_failed(c, -fd, NOTE(a, "local"));
}

static int handle_decoded(struct offload_serve *os, struct conn *c, const struct http_request *req,
                          const char *path, size_t plen)
{
    const char *rel;
    size_t rel_len;
    int in = offload_rel_from_url(os->conf->offload.url_prefix, path, plen, &rel, &rel_len);
    if (in == 0)
        return HANDLER_PASS;
    if (static_check_request(c, req) == HANDLER_DONE) {
        serve_note(c, "offload=refused");
        return HANDLER_DONE;
    }
    if (in < 0) {
        /* A directory ("/static/sub/") names no file; anything else is a
         * malformed name (control bytes, backslash, invalid UTF-8). */
        if (path[plen - 1] == '/')
            return respond_text(c, 404, "offload=missing", "404 Not Found\n");
        return respond_text(c, 400, "offload=refused", "400 Bad Request: invalid path\n");
    }
    if (link_refuse(os, c, req, path, plen) == HANDLER_DONE)
        return HANDLER_DONE;
    return serve_rel(os, c, req, rel, rel_len, NULL);
}

/* Whether the undecoded path starts with url_prefix as offload_rel_from_url()
 * matches it ("/static" matches "/static/..." only): a malformed path (dot
 * segments, NUL) that is plainly under the prefix is refused here, whatever
 * handler comes next. */
static bool raw_under_prefix(const char *prefix, const char *p, size_t len)
{
    size_t n = strlen(prefix);
    if (len < n || memcmp(p, prefix, n) != 0)
        return false;
    return (n > 0 && prefix[n - 1] == '/') || len == n || p[n] == '/';
}

int offload_serve_handle(struct conn *c, const struct http_request *req, void *arg)
{
    struct offload_serve *os = arg;
    const char *prefix = os->conf->offload.url_prefix;
    /* Without escapes or repeated slashes the decoded path is the raw one:
     * most requests outside url_prefix pass without being decoded. */
    if (!raw_under_prefix(prefix, req->path.p, req->path.len) &&
        !memchr(req->path.p, '%', req->path.len) && !memmem(req->path.p, req->path.len, "//", 2))
        return HANDLER_PASS;
    /* The decoded path is never longer than the raw one. */
    char small[2048];
    size_t cap = req->path.len + 1;
    char *path = cap <= sizeof(small) ? small : xmalloc(cap);
    long plen = static_decode_path(req->path.p, req->path.len, path, cap);
    int r;
    if (plen > 0)
        r = handle_decoded(os, c, req, path, (size_t)plen);
    else if (raw_under_prefix(prefix, req->path.p, req->path.len))
        r = respond_text(c, 400, "offload=refused", "400 Bad Request: invalid path\n");
    else
        r = HANDLER_PASS; /* not ours: the next handlers judge it as they judge any path */
    if (path != small)
        free(path);
    return r;
}

/* ---- the application decides (issue 11, X-Accel-Redirect / X-Sendfile) ---- */

/* rel (rel_len bytes, not NUL-terminated) copied to a NUL-terminated string
 * and served; -EPERM when it is not a valid name. */
static int accel_serve_rel(struct offload_serve *os, struct conn *c, const char *rel,
                           size_t rel_len, const struct offload_serve_accel *a)
{
    if (rel_len == 0 || offload_rel_check(rel, rel_len) < 0)
        return -EPERM;
    char *copy = xmalloc(rel_len + 1);
    memcpy(copy, rel, rel_len);
    copy[rel_len] = '\0';
    int r = serve_rel(os, c, conn_request(c), copy, rel_len, a);
    free(copy);
    return r;
}

int offload_serve_upload(struct offload_serve *os, struct conn *c, const char *path, size_t plen,
                         const struct offload_serve_accel *a)
{
    const char *rel;
    size_t rel_len;
    if (offload_rel_from_url(os->conf->offload.url_prefix, path, plen, &rel, &rel_len) != 1)
        return -EPERM;
    return accel_serve_rel(os, c, rel, rel_len, a);
}

/* The part of fspath below dir ("/spool" takes "/spool/x"), or NULL. */
static const char *below_dir(const char *dir, const char *fspath, size_t plen)
{
    size_t n = dir ? strlen(dir) : 0;
    if (!n || plen <= n + 1 || memcmp(fspath, dir, n) != 0)
        return NULL;
    if (n == 1) /* the spool is "/" */
        return fspath + 1;
    return fspath[n] == '/' ? fspath + n + 1 : NULL;
}

int offload_serve_file(struct offload_serve *os, struct conn *c, const char *fspath, size_t plen,
                       const struct offload_serve_accel *a)
{
    const char *rel = below_dir(os->spool_real, fspath, plen);
    if (!rel)
        rel = below_dir(os->spool_abs, fspath, plen);
    if (!rel)
        return -EPERM;
    return accel_serve_rel(os, c, rel, plen - (size_t)(rel - fspath), a);
}
