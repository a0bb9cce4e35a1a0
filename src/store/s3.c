#include "store/s3.h"

#include "common/alloc.h"
#include "common/conf.h"
#include "common/timeutil.h"
#include "store/backend.h"
#include "store/creds.h"
#include "store/sigv4.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define RESP_BODY_MAX (1024 * 1024)
#define MAX_QUERY 4
#define MAX_HEADERS 8
#define PART_READ_CHUNK (256 * 1024) /* hashing a multipart part before it is sent */

struct s3_store {
    struct store base;
    CURL *curl;   /* head, get, delete, abort: one request at a time */
    CURLM *multi; /* uploads; kept so its connections are reused across calls */
    CURL **pool;  /* easy handles for concurrent uploads */
    unsigned npool;
    struct creds creds;
    struct sigv4_key_cache keys; /* the signing key of the day */
    char *scheme;                /* "http" or "https" */
    char *host;                  /* endpoint host[:port], as written */
    char *basepath;              /* endpoint path without a trailing '/', usually "" */
    char *bucket;
    char *region;
    /* What url_parts() makes of every key, made once for presigned redirects:
     * the Host ("bucket.host" or host) and the path before the key
     * ("basepath/" or "basepath/bucket/"). */
    char *sign_host, *path_head;
    char *ca_file; /* NULL: the system's */
    int virtual_host;
    int checksum; /* enum conf_checksum */
    long connect_timeout_ms;
    long low_speed_time_s;
    unsigned retries;
    uint64_t seed;
};

/* One request: what to send and where the response goes. */
struct s3_req {
    const char *method;
    const char *key; /* full key, prefix applied */
    struct sigv4_kv query[MAX_QUERY];
    size_t nquery;
    struct sigv4_kv headers[MAX_HEADERS];
    size_t nheaders;
    const char *payload_hash; /* hex SHA-256; NULL: the empty body's */
    const char *body;         /* memory body, or NULL */
    size_t body_len;
    int body_fd; /* file body when >= 0: body_len bytes from body_off */
    uint64_t body_off;
    int out_fd;        /* GET: 2xx bodies go here when >= 0 */
    int error_in_body; /* a 200 whose body is <Error> is an error (CompleteMultipartUpload) */
};

struct s3_resp {
    long status;
    struct buf body;
    uint64_t length;
    char etag[80];
    char sha256_b64[64];
    char meta_sha256[65];
    char content_type[128];
    time_t mtime;
    uint64_t written; /* bytes written to out_fd */
    int write_errno;
    int read_errno; /* reading the upload's file failed */
    uint64_t sent;  /* body bytes handed to curl */
};

struct xfer {
    struct s3_store *s;
    CURL *c;
    const struct s3_req *req;
    struct s3_resp *resp;
    curl_off_t last_ul, last_dl; /* progress counters at the last movement */
    uint64_t last_move_ms;
    int stalled;
};

static struct s3_store *s3_of(struct store *s)
{
    return (struct s3_store *)s;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int s3_code_is_retryable(const char *code)
{
    static const char *const codes[] = {"SlowDown", "InternalError", "RequestTimeout",
                                        "ServiceUnavailable"};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (strcmp(code, codes[i]) == 0)
            return 1;
    return 0;
}

static uint64_t next_random(uint64_t *seed)
{
    /* splitmix64: good enough for jitter, no shared state. */
    uint64_t z = (*seed += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

unsigned s3_backoff_ms(unsigned attempt, unsigned base_ms, unsigned max_ms, uint64_t *seed)
{
    uint64_t cap = base_ms;
    for (unsigned i = 0; i < attempt && cap < max_ms; i++)
        cap *= 2;
    if (cap > max_ms)
        cap = max_ms;
    return (unsigned)(next_random(seed) % (cap + 1));
}

int s3_xml_text(const char *xml, size_t len, const char *tag, char *out, size_t outlen)
{
    char open[80], close[80];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *a = memmem(xml, len, open, strlen(open));
    if (!a)
        return -ENOENT;
    a += strlen(open);
    const char *b = memmem(a, len - (size_t)(a - xml), close, strlen(close));
    if (!b)
        return -ENOENT;
    static const struct {
        const char *ent;
        char ch;
    } ents[] = {{"&quot;", '"'}, {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&apos;", '\''}};
    size_t n = 0;
    while (a < b && n + 1 < outlen) {
        char ch = *a++;
        if (ch == '&') {
            for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
                size_t el = strlen(ents[i].ent);
                if ((size_t)(b - a + 1) >= el && strncmp(a - 1, ents[i].ent, el) == 0) {
                    ch = ents[i].ch;
                    a += el - 1;
                    break;
                }
            }
        }
        out[n++] = ch;
    }
    out[n] = '\0';
    return 0;
}

static void strip_quotes(char *s)
{
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        memmove(s, s + 1, n - 2);
        s[n - 2] = '\0';
    }
}

/* ---- curl callbacks ---- */

static size_t on_read(char *dst, size_t size, size_t nmemb, void *user)
{
    struct xfer *x = user;
    const struct s3_req *req = x->req;
    size_t room = size * nmemb;
    size_t left = req->body_len - x->resp->sent;
    if (room > left)
        room = left;
    if (room == 0)
        return 0;
    if (req->body_fd >= 0) {
        ssize_t n;
        do
            n = pread(req->body_fd, dst, room, (off_t)(req->body_off + x->resp->sent));
        while (n < 0 && errno == EINTR);
        if (n <= 0) {
            /* A file that shrank or cannot be read is not uploaded short. */
            x->resp->read_errno = n < 0 ? errno : EBADMSG;
            return CURL_READFUNC_ABORT;
        }
        room = (size_t)n;
    } else {
        memcpy(dst, req->body + x->resp->sent, room);
    }
    x->resp->sent += room;
    return room;
}

/* Stall detection: no byte moved either way for low_speed_time, counting the
 * wait for a response after the body was sent (curl's own low-speed check
 * averages over a window and lets such a wait run for several seconds). */
static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct xfer *x = user;
    uint64_t now = time_mono_ms();
    if (dlnow != x->last_dl || ulnow != x->last_ul || !x->last_move_ms) {
        x->last_dl = dlnow;
        x->last_ul = ulnow;
        x->last_move_ms = now;
        return 0;
    }
    if (now - x->last_move_ms >= (uint64_t)x->s->low_speed_time_s * 1000) {
        x->stalled = 1;
        return 1;
    }
    return 0;
}

/* curl rewinds when it resends a request, e.g. on a reused connection that
 * turned out to be closed; the body is re-read from the new offset. */
static int on_seek(void *user, curl_off_t offset, int origin)
{
    struct xfer *x = user;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > x->req->body_len)
        return CURL_SEEKFUNC_FAIL;
    x->resp->sent = (uint64_t)offset;
    return CURL_SEEKFUNC_OK;
}

static size_t on_write(char *src, size_t size, size_t nmemb, void *user)
{
    struct xfer *x = user;
    size_t n = size * nmemb;
    long status = 0;
    curl_easy_getinfo(x->c, CURLINFO_RESPONSE_CODE, &status);
    if (x->req->out_fd >= 0 && status >= 200 && status < 300) {
        size_t done = 0;
        while (done < n) {
            ssize_t w = write(x->req->out_fd, src + done, n - done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                x->resp->write_errno = errno;
                return 0; /* aborts the transfer */
            }
            done += (size_t)w;
            x->resp->written += (uint64_t)w;
        }
        return n;
    }
    /* Error documents and XML results; anything past the cap is dropped. */
    buf_append(&x->resp->body, src, n);
    return n;
}

static void header_copy(char *dst, size_t dstlen, const char *v, size_t vlen)
{
    while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
        vlen--;
    while (vlen && *v == ' ') {
        v++;
        vlen--;
    }
    if (vlen >= dstlen)
        vlen = dstlen - 1;
    memcpy(dst, v, vlen);
    dst[vlen] = '\0';
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *user)
{
    struct xfer *x = user;
    size_t n = size * nmemb;
    struct s3_resp *r = x->resp;
    if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        /* A new response (after 100 Continue or a redirect) starts afresh. */
        r->etag[0] = r->sha256_b64[0] = r->meta_sha256[0] = r->content_type[0] = '\0';
        r->length = 0;
        return n;
    }
    const char *colon = memchr(line, ':', n);
    if (!colon)
        return n;
    size_t nl = (size_t)(colon - line);
    const char *v = colon + 1;
    size_t vl = n - nl - 1;
    char tmp[128];
#define IS(name) (nl == strlen(name) && strncasecmp(line, name, nl) == 0)
    if (IS("etag")) {
        header_copy(r->etag, sizeof(r->etag), v, vl);
        strip_quotes(r->etag);
    } else if (IS("content-length")) {
        header_copy(tmp, sizeof(tmp), v, vl);
        r->length = strtoull(tmp, NULL, 10);
    } else if (IS("x-amz-checksum-sha256")) {
        header_copy(r->sha256_b64, sizeof(r->sha256_b64), v, vl);
    } else if (IS("x-amz-meta-ferry-sha256")) {
        header_copy(r->meta_sha256, sizeof(r->meta_sha256), v, vl);
    } else if (IS("content-type")) {
        header_copy(r->content_type, sizeof(r->content_type), v, vl);
    } else if (IS("last-modified")) {
        header_copy(tmp, sizeof(tmp), v, vl);
        time_parse_http(tmp, strlen(tmp), &r->mtime);
    }
#undef IS
    return n;
}

/* ---- one request ---- */

static void url_parts(struct s3_store *s, const char *key, char **host, char **path)
{
    if (s->virtual_host) {
        *host = xasprintf("%s.%s", s->bucket, s->host);
        *path = xasprintf("%s/%s", s->basepath, key ? key : "");
    } else {
        *host = xstrdup(s->host);
        *path = key ? xasprintf("%s/%s/%s", s->basepath, s->bucket, key)
                    : xasprintf("%s/%s", s->basepath, s->bucket);
    }
}

/* Append "scheme://host/encoded-path" to url. Returns 0 or -ENOBUFS. */
static int url_begin(const struct s3_store *s, const char *host, const char *path, struct buf *url)
{
    int r = buf_printf(url, "%s://%s", s->scheme, host);
    return r < 0 ? r : sigv4_uri_encode(url, path, strlen(path), 1);
}

/* Append "name: value" ("name:" when value is NULL, which makes curl drop a
 * header it would add itself). */
static struct curl_slist *add_header(struct curl_slist *list, const char *name, const char *value)
{
    char *h = value ? xasprintf("%s: %s", name, value) : xasprintf("%s:", name);
    struct curl_slist *l = curl_slist_append(list, h);
    OPENSSL_cleanse(h, strlen(h));
    free(h);
    if (!l)
        abort();
    return l;
}

static int curl_errno(CURLcode c)
{
    switch (c) {
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_CONNECT:
        return -ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST:
        return -EHOSTUNREACH;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CONNECT_ERROR:
        return -EPROTO;
    case CURLE_WRITE_ERROR:
        return -EIO;
    default:
        return -ECONNRESET;
    }
}

static int curl_retryable(CURLcode c)
{
    switch (c) {
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return 1;
    default:
        return 0;
    }
}

/* One request on one easy handle: everything that must outlive the setup
 * until the transfer ends (curl keeps pointers to the headers and to x). */
struct s3_call {
    struct curl_slist *hl;
    struct buf url;
    struct xfer x;
    int renewed; /* the store refused the credentials and fresh ones were found */
};

static void resp_reset(struct s3_resp *r);

/* What the signer needs, with the store's cache of the day's signing key. */
/* creds_refresh() on s's credentials, keeping the expiry presigning looks at and the
 * cached signing key in step. */
static int s3_creds_refresh(struct s3_store *s, int force, char *why, size_t whylen)
{
    int r = creds_refresh(&s->creds, force, why, whylen);
    if (r == 1) {
        s->base.creds_expires = s->creds.expires;
        sigv4_key_cache_clear(&s->keys); /* derived from the old secret */
    }
    return r;
}

static struct sigv4_creds signing_creds(struct s3_store *s)
{
    return (struct sigv4_creds){.access_key = s->creds.access_key,
                                .secret_key = s->creds.secret_key,
                                .session_token = s->creds.session_token,
                                .region = s->region,
                                .service = "s3",
                                .keys = &s->keys};
}

/* Sign req as of when: the URL into url and the header lines ("Name: value",
 * each malloc'd, in sending order) into hdr[*nhdr] (STORE_SIGNED_HEADERS_MAX
 * room). Returns 0, or -EINVAL with err filled; on failure nothing is left to
 * free. */
static int req_sign(struct s3_store *s, const struct s3_req *req, time_t when, struct buf *url,
                    char **hdr, size_t *nhdr, struct store_error *err)
{
    char *host, *path;
    char why[256];
    /* A rewritten credentials file (rotated session credentials) is followed before
     * the store has to refuse the old ones; a file that cannot be read now keeps them. */
    (void)s3_creds_refresh(s, 0, why, sizeof(why));
    url_parts(s, req->key, &host, &path);
    struct sigv4_creds sc = signing_creds(s);
    const char *payload = req->payload_hash ? req->payload_hash : SIGV4_EMPTY_SHA256;
    struct sigv4_request sr = {
        .method = req->method,
        .host = host,
        .path = path,
        .query = req->query,
        .nquery = req->nquery,
        .headers = req->headers,
        .nheaders = req->nheaders,
        .payload_hash = payload,
        .when = when,
    };
    struct buf auth;
    buf_init(&auth, 64 * 1024);
    int r = sigv4_sign_header(&sr, &sc, &auth);
    if (r == 0)
        r = url_begin(s, host, path, url);
    for (size_t i = 0; r == 0 && i < req->nquery; i++) {
        r = buf_append_str(url, i ? "&" : "?");
        const char *n = req->query[i].name, *v = req->query[i].value;
        if (r == 0)
            r = sigv4_uri_encode(url, n, strlen(n), 0);
        if (r == 0 && v) {
            r = buf_append_str(url, "=");
            if (r == 0)
                r = sigv4_uri_encode(url, v, strlen(v), 0);
        }
    }
    if (r < 0) {
        store_error_set(err, 0, "InvalidRequest", "cannot sign the request for '%s'",
                        req->key ? req->key : "");
        r = -EINVAL;
        goto fail;
    }
    char date[17];
    sigv4_format_date(sr.when, date);
    size_t n = 0;
    hdr[n++] = xasprintf("Host: %s", host);
    hdr[n++] = xasprintf("x-amz-date: %s", date);
    hdr[n++] = xasprintf("x-amz-content-sha256: %s", payload);
    if (sc.session_token)
        hdr[n++] = xasprintf("x-amz-security-token: %s", sc.session_token);
    for (size_t i = 0; i < req->nheaders; i++)
        hdr[n++] = xasprintf("%s: %s", req->headers[i].name, req->headers[i].value);
    hdr[n++] = xasprintf("Authorization: %s", auth.data);
    *nhdr = n;
fail:
    buf_finish(&auth);
    free(host);
    free(path);
    return r;
}

static void lines_free(char **hdr, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        OPENSSL_cleanse(hdr[i], strlen(hdr[i]));
        free(hdr[i]);
    }
}

/* Sign req and configure c to send it. Returns 0, or -errno (not retryable)
 * with err filled. On success call_finish() must follow the transfer. */
static int call_start(struct s3_call *call, struct s3_store *s, CURL *c, const struct s3_req *req,
                      struct s3_resp *resp, struct store_error *err)
{
    resp_reset(resp);
    memset(call, 0, sizeof(*call));
    call->x = (struct xfer){.s = s, .c = c, .req = req, .resp = resp};
    buf_init(&call->url, 64 * 1024);
    struct buf *url = &call->url;
    char *hdr[STORE_SIGNED_HEADERS_MAX];
    size_t nhdr = 0;
    int r = req_sign(s, req, time(NULL), url, hdr, &nhdr, err);
    if (r < 0) {
        buf_finish(&call->url);
        return r;
    }
    struct curl_slist *hl = NULL;
    for (size_t i = 0; i < nhdr; i++)
        if (!(hl = curl_slist_append(hl, hdr[i])))
            abort();
    lines_free(hdr, nhdr);
    /* curl must not add headers we did not sign the way it likes: no
     * Expect: 100-continue round trip, no form Content-Type on POST. */
    hl = add_header(hl, "Expect", NULL);
    int has_type = 0;
    for (size_t i = 0; i < req->nheaders; i++)
        has_type |= strcasecmp(req->headers[i].name, "Content-Type") == 0;
    if (!has_type)
        hl = add_header(hl, "Content-Type", NULL);
    call->hl = hl;

    struct xfer *x = &call->x;
    curl_easy_reset(c); /* keeps live connections, DNS and TLS session caches */
    curl_easy_setopt(c, CURLOPT_URL, url->data);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (s->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, s->ca_file);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(c, CURLOPT_READDATA, x);
    curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
    curl_easy_setopt(c, CURLOPT_SEEKDATA, x);
    if (strcmp(req->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (strcmp(req->method, "PUT") == 0) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->body_len);
    } else if (strcmp(req->method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    } else if (strcmp(req->method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
    }
    return 0;
}

static int s3_http_error(const struct s3_req *req, struct s3_resp *resp, int *retryable,
                         struct store_error *err);

/* Did the store refuse the request's credentials (rather than the request)? A 403
 * without a body (HEAD) may be either. */
static int creds_refused(const struct store_error *err)
{
    static const char *const codes[] = {
        "ExpiredToken",          "TokenRefreshRequired", "InvalidToken", "InvalidAccessKeyId",
        "SignatureDoesNotMatch", "AccessDenied",         "BadRequest"};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (strcmp(err->code, codes[i]) == 0)
            return 1;
    return 0;
}

/* Judge a finished transfer (cc is its result) and release what call_start()
 * set up. Returns 0 for a 2xx (without an error body when req->error_in_body),
 * else -errno with err filled and *retryable per the S3 retry rules. */
static int call_finish(struct s3_call *call, CURLcode cc, int *retryable, struct store_error *err)
{
    const struct s3_req *req = call->x.req;
    struct s3_resp *resp = call->x.resp;
    int r;
    *retryable = 0;
    if (cc != CURLE_OK && call->x.stalled) {
        r = -ETIMEDOUT;
        *retryable = 1;
        store_error_set(err, 0, "TransportError", "%s %s: no data moved for %lds", req->method,
                        req->key ? req->key : "/", call->x.s->low_speed_time_s);
    } else if (cc != CURLE_OK && resp->read_errno) {
        r = -resp->read_errno;
        store_error_set(
            err, 0, "ReadFailed", "%s %s: the file %s", req->method, req->key ? req->key : "/",
            resp->read_errno == EBADMSG ? "shrank since it was hashed" : "cannot be read");
    } else if (cc != CURLE_OK) {
        r = resp->write_errno ? -resp->write_errno : curl_errno(cc);
        *retryable = !resp->write_errno && curl_retryable(cc);
        store_error_set(err, 0, "TransportError", "%s %s: %s", req->method,
                        req->key ? req->key : "/", curl_easy_strerror(cc));
    } else {
        curl_easy_getinfo(call->x.c, CURLINFO_RESPONSE_CODE, &resp->status);
        char code[64];
        if (resp->status >= 200 && resp->status < 300 &&
            (!req->error_in_body || !resp->body.data ||
             s3_xml_text(resp->body.data, resp->body.len, "Code", code, sizeof(code)) < 0 ||
             !memmem(resp->body.data, resp->body.len, "<Error>", 7)))
            r = 0;
        else
            /* Includes a 200 OK whose body is an error: S3 may send that for
             * CompleteMultipartUpload after it started answering. */
            r = s3_http_error(req, resp, retryable, err);
    }
    /* Refused credentials (a session token expired, keys rotated): when the
     * credentials file now holds others, the request is to be sent again at once. */
    char why[256];
    if (r < 0 && err && creds_refused(err) && s3_creds_refresh(call->x.s, 1, why, sizeof(why)) == 1)
        call->renewed = 1;
    /* A GET that already wrote to its output cannot be repeated. */
    if (resp->written) {
        *retryable = 0;
        call->renewed = 0;
    }
    curl_slist_free_all(call->hl);
    call->hl = NULL;
    buf_finish(&call->url);
    return r;
}

static void resp_init(struct s3_resp *r)
{
    memset(r, 0, sizeof(*r));
    buf_init(&r->body, RESP_BODY_MAX);
}

static void resp_reset(struct s3_resp *r)
{
    struct buf b = r->body;
    memset(r, 0, sizeof(*r));
    r->body = b;
    buf_reset(&r->body);
}

/* Map an HTTP error (with S3's XML error document when there is one) to err and
 * an errno; *retryable per the S3 retry rules. */
static int s3_http_error(const struct s3_req *req, struct s3_resp *resp, int *retryable,
                         struct store_error *err)
{
    char code[64] = "", message[256] = "";
    const char *body = resp->body.data ? resp->body.data : "";
    s3_xml_text(body, resp->body.len, "Code", code, sizeof(code));
    s3_xml_text(body, resp->body.len, "Message", message, sizeof(message));
    long st = resp->status;
    if (!code[0]) {
        /* HEAD responses carry no body. A 400 to a HEAD, which has no body or
         * parameters to get wrong, is most often an expired session token. */
        const char *c = st == 404   ? "NoSuchKey"
                        : st == 403 ? "AccessDenied"
                        : st == 400 ? "BadRequest"
                        : st == 412 ? "PreconditionFailed"
                        : st == 416 ? "InvalidRange"
                        : st == 503 ? "ServiceUnavailable"
                        : st >= 500 ? "InternalError"
                                    : "HttpError";
        snprintf(code, sizeof(code), "%s", c);
    }
    if (!message[0])
        snprintf(message, sizeof(message), "%s %s", req->method, req->key ? req->key : "/");
    store_error_set(err, (int)st, code, "%s", message);
    *retryable = st == 500 || st == 502 || st == 503 || st == 504 || s3_code_is_retryable(code);
    if (strcmp(code, "NoSuchKey") == 0 || strcmp(code, "NoSuchUpload") == 0 ||
        strcmp(code, "NoSuchBucket") == 0)
        return -ENOENT;
    if (st == 403)
        return -EACCES;
    if (st == 412)
        return -EEXIST;
    if (st == 416)
        return -ERANGE;
    if (strcmp(code, "BadDigest") == 0 || strcmp(code, "InvalidDigest") == 0 ||
        strcmp(code, "XAmzContentSHA256Mismatch") == 0 || strcmp(code, "InvalidPart") == 0)
        return -EBADMSG;
    if (strcmp(code, "RequestTimeout") == 0)
        return -ETIMEDOUT;
    return -EIO;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static unsigned s3_next_backoff(struct s3_store *s, unsigned attempt)
{
    return s3_backoff_ms(attempt, s->base.opts.retry_base_ms, s->base.opts.retry_max_ms, &s->seed);
}

/* Perform req on the store's own easy handle, with retries. Returns 0 for a
 * 2xx (without an error body when req->error_in_body), else -errno with err
 * filled. Blocks the calling thread. */
static int s3_perform(struct s3_store *s, const struct s3_req *req, struct s3_resp *resp,
                      struct store_error *err)
{
    int renewed = 0;
    for (unsigned attempt = 0;;) {
        struct s3_call call;
        int retryable = 0;
        int r = call_start(&call, s, s->curl, req, resp, err);
        if (r < 0)
            return r;
        r = call_finish(&call, curl_easy_perform(s->curl), &retryable, err);
        if (err)
            err->attempts = (int)attempt + 1;
        if (r < 0 && call.renewed && !renewed) {
            renewed = 1; /* once, at once, with the fresh credentials */
            continue;
        }
        if (r == 0 || !retryable || attempt >= s->retries)
            return r;
        store_count_retry(&s->base);
        sleep_ms(s3_next_backoff(s, attempt++));
    }
}

static void req_init(struct s3_req *q, const char *method, const char *key)
{
    memset(q, 0, sizeof(*q));
    q->method = method;
    q->key = key;
    q->body_fd = -1;
    q->out_fd = -1;
}

static void req_header(struct s3_req *q, const char *name, const char *value)
{
    if (q->nheaders < MAX_HEADERS)
        q->headers[q->nheaders++] = (struct sigv4_kv){name, value};
}

static void req_query(struct s3_req *q, const char *name, const char *value)
{
    if (q->nquery < MAX_QUERY)
        q->query[q->nquery++] = (struct sigv4_kv){name, value};
}

static char *full_key(struct store *s, const char *key)
{
    return xasprintf("%s%s", s->prefix, key);
}

/* ---- operations ---- */

static int s3_head_full(struct s3_store *s, const char *fkey, struct store_info *out,
                        struct store_error *err)
{
    struct s3_req q;
    struct s3_resp resp;
    req_init(&q, "HEAD", fkey);
    req_header(&q, "x-amz-checksum-mode", "ENABLED");
    resp_init(&resp);
    int r = s3_perform(s, &q, &resp, err);
    if (r == 0) {
        struct store_info info;
        memset(&info, 0, sizeof(info));
        info.size = resp.length;
        info.mtime = resp.mtime;
        snprintf(info.etag, sizeof(info.etag), "%s", resp.etag);
        snprintf(info.sha256_b64, sizeof(info.sha256_b64), "%s", resp.sha256_b64);
        snprintf(info.meta_sha256, sizeof(info.meta_sha256), "%s", resp.meta_sha256);
        snprintf(info.content_type, sizeof(info.content_type), "%s", resp.content_type);
        *out = info;
    }
    buf_finish(&resp.body);
    return r;
}

static int s3_head(struct store *st, const char *key, struct store_info *out,
                   struct store_error *err)
{
    char *fkey = full_key(st, key);
    int r = s3_head_full(s3_of(st), fkey, out, err);
    free(fkey);
    return r;
}

/* After a 412 (or a retried request whose first attempt may have landed): the
 * upload succeeded only if the store now holds exactly these bytes. This HEAD
 * runs on the store's own easy handle and briefly holds up other uploads in
 * store_put_many(); it is the rare path. */
static int resolve_existing(struct store *st, const char *key, const struct store_digest *d,
                            struct store_error *err)
{
    struct store_error verr;
    memset(&verr, 0, sizeof(verr));
    int r = store_verify(st, key, d, &verr);
    if (r == 0)
        return 0;
    if (r == -EBADMSG) {
        store_error_set(err, 412, "PreconditionFailed",
                        "'%s' already exists with different content", key);
        return -EEXIST;
    }
    if (err)
        *err = verr;
    return r;
}

struct digests {
    char md5_b64[32];
    char sha_b64[48];
    char sha_hex[65];
    char md5_hex[33];
};

static void digests_fill(struct digests *g, const unsigned char *md5, const unsigned char *sha)
{
    store_base64(md5, 16, g->md5_b64);
    store_base64(sha, 32, g->sha_b64);
    store_hex(sha, 32, g->sha_hex);
    store_hex(md5, 16, g->md5_hex);
}

/* Integrity headers per the `checksum` option. */
static void req_integrity(struct s3_store *s, struct s3_req *q, const struct digests *g)
{
    if (s->checksum != CHECKSUM_NONE)
        req_header(q, "Content-MD5", g->md5_b64);
    if (s->checksum == CHECKSUM_SHA256)
        req_header(q, "x-amz-checksum-sha256", g->sha_b64);
}

static int s3_abort_full(struct s3_store *s, const char *fkey, const char *upload_id,
                         struct store_error *err)
{
    struct s3_req q;
    struct s3_resp resp;
    req_init(&q, "DELETE", fkey);
    req_query(&q, "uploadId", upload_id);
    resp_init(&resp);
    int r = s3_perform(s, &q, &resp, err);
    buf_finish(&resp.body);
    return r == -ENOENT ? 0 : r;
}

static int s3_abort_multipart(struct store *st, const char *key, const char *upload_id,
                              struct store_error *err)
{
    char *fkey = full_key(st, key);
    int r = s3_abort_full(s3_of(st), fkey, upload_id, err);
    free(fkey);
    return r;
}

/* ListMultipartUploads with the full key as prefix, then abort each upload of exactly
 * that key: also those whose id never reached the caller (a crash between
 * CreateMultipartUpload's answer and the caller's record of the id). One page of
 * 1000 uploads is plenty for one key. */
static int s3_abort_all_multipart(struct store *st, const char *key, unsigned *aborted,
                                  struct store_error *err)
{
    struct s3_store *s = s3_of(st);
    char *fkey = full_key(st, key);
    struct s3_req q;
    struct s3_resp resp;
    req_init(&q, "GET", NULL);
    req_query(&q, "uploads", NULL);
    req_query(&q, "prefix", fkey);
    resp_init(&resp);
    int r = s3_perform(s, &q, &resp, err);
    unsigned n = 0;
    const char *p = resp.body.data, *end = p ? p + resp.body.len : NULL;
    while (r == 0 && p && p < end) {
        const char *a = memmem(p, (size_t)(end - p), "<Upload>", 8);
        const char *b = a ? memmem(a, (size_t)(end - a), "</Upload>", 9) : NULL;
        if (!b)
            break;
        char k[1100], id[1024];
        if (s3_xml_text(a, (size_t)(b - a), "Key", k, sizeof(k)) == 0 &&
            s3_xml_text(a, (size_t)(b - a), "UploadId", id, sizeof(id)) == 0 &&
            strcmp(k, fkey) == 0 && id[0]) {
            r = s3_abort_full(s, fkey, id, err);
            n += r == 0;
        }
        p = b + 9;
    }
    buf_finish(&resp.body);
    free(fkey);
    if (r == 0)
        *aborted = n;
    return r;
}

static int read_full(int fd, char *p, size_t n, uint64_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, p + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -EBADMSG; /* the file shrank since it was hashed */
        done += (size_t)r;
    }
    return 0;
}

/* ---- uploads: a state machine per file, driven by a curl multi handle ----
 *
 * A single PUT is one request; a multipart upload is Create, the parts one
 * after another, then Complete (Abort on failure). Each upload owns an easy
 * handle while it runs; the multi handle shares connections among them, so
 * many uploads proceed on the calling thread. A retry waits in the loop (no
 * sleep) until its full-jitter backoff expires. */

enum job_state { JOB_PUT, JOB_CREATE, JOB_PART, JOB_COMPLETE, JOB_DONE };

struct s3_job {
    struct s3_store *s;
    CURL *c;
    struct store_put_item item; /* the caller's; its strings outlive the job */
    char *fkey;
    enum job_state state;
    struct s3_req req;
    struct s3_resp resp;
    struct s3_call call;
    int in_flight;
    unsigned attempt;
    int renewed;              /* this request was sent again with fresh credentials */
    unsigned create_attempts; /* CreateMultipartUpload requests sent */
    uint64_t retry_at_ms;     /* waiting for a retry when non-zero */
    int result;
    struct store_error err;
    struct digests whole;
    /* multipart */
    char upload_id[1024];
    size_t part_no, nparts; /* part_no is 1-based */
    char *part;
    struct digests pg;
    char num[24];
    EVP_MD_CTX *all; /* SHA-256 over the parts as sent */
    struct buf xml;
    char xml_hash[65];
};

static int s3_abort_all_multipart(struct store *st, const char *key, unsigned *aborted,
                                  struct store_error *err);

static void job_finish(struct s3_job *j, int r)
{
    struct store_error aerr;
    if (r < 0 && j->upload_id[0])
        s3_abort_full(j->s, j->fkey, j->upload_id, &aerr);
    /* CreateMultipartUpload was sent more than once (an answer lost, a timeout): an
     * earlier one may have created an upload whose id never arrived. Ours is
     * finished or aborted by now, so whatever is still open for the key is such an
     * orphan. Rare; it briefly holds up the other uploads, as resolve_existing(). */
    if (j->create_attempts > 1) {
        unsigned n;
        s3_abort_all_multipart(&j->s->base, j->item.key, &n, &aerr);
    }
    j->result = r;
    j->state = JOB_DONE;
}

/* Build the request for the current state. Returns 0 or -errno (err set). */
static int job_prepare(struct s3_job *j)
{
    struct s3_store *s = j->s;
    struct s3_req *q = &j->req;
    const struct store_digest *d = &j->item.digest;
    j->attempt = 0;
    j->renewed = 0;
    switch (j->state) {
    case JOB_PUT:
        req_init(q, "PUT", j->fkey);
        req_integrity(s, q, &j->whole);
        req_header(q, "x-amz-meta-ferry-sha256", j->whole.sha_hex);
        if (j->item.content_type)
            req_header(q, "Content-Type", j->item.content_type);
        if (s->base.conditional_create)
            req_header(q, "If-None-Match", "*");
        q->payload_hash = j->whole.sha_hex;
        q->body_fd = j->item.fd;
        q->body_len = (size_t)d->size;
        return 0;
    case JOB_CREATE:
        req_init(q, "POST", j->fkey);
        req_query(q, "uploads", NULL);
        req_header(q, "x-amz-meta-ferry-sha256", j->whole.sha_hex);
        if (j->item.content_type)
            req_header(q, "Content-Type", j->item.content_type);
        if (s->checksum == CHECKSUM_SHA256)
            req_header(q, "x-amz-checksum-algorithm", "SHA256");
        return 0;
    case JOB_PART: {
        uint64_t part_size = s->base.opts.part_size;
        uint64_t off = (j->part_no - 1) * part_size;
        size_t len = (size_t)(d->size - off < part_size ? d->size - off : part_size);
        /* The part is hashed here in small reads and sent from the file itself (curl
         * re-reads it for a resend), so memory does not grow with part_size. Should
         * the file change in between, the store refuses the part: its Content-MD5
         * and signed payload hash are of the bytes hashed here. */
        if (!j->part)
            j->part = xmalloc(PART_READ_CHUNK);
        EVP_MD_CTX *pm = EVP_MD_CTX_new(), *ps = EVP_MD_CTX_new();
        EVP_DigestInit_ex(pm, EVP_md5(), NULL);
        EVP_DigestInit_ex(ps, EVP_sha256(), NULL);
        int r = 0;
        for (size_t done = 0; done < len && r == 0;) {
            size_t n = len - done < PART_READ_CHUNK ? len - done : PART_READ_CHUNK;
            r = read_full(j->item.fd, j->part, n, off + done);
            if (r == 0) {
                EVP_DigestUpdate(pm, j->part, n);
                EVP_DigestUpdate(ps, j->part, n);
                EVP_DigestUpdate(j->all, j->part, n);
                done += n;
            }
        }
        unsigned char md5[16], sha[32];
        EVP_DigestFinal_ex(pm, md5, NULL);
        EVP_DigestFinal_ex(ps, sha, NULL);
        EVP_MD_CTX_free(pm);
        EVP_MD_CTX_free(ps);
        if (r < 0) {
            store_error_set(&j->err, 0, "ReadFailed", "reading part %zu of '%s': %s", j->part_no,
                            j->item.key, strerror(-r));
            return r;
        }
        digests_fill(&j->pg, md5, sha);
        snprintf(j->num, sizeof(j->num), "%zu", j->part_no);
        req_init(q, "PUT", j->fkey);
        req_query(q, "partNumber", j->num);
        req_query(q, "uploadId", j->upload_id);
        req_integrity(s, q, &j->pg);
        q->payload_hash = j->pg.sha_hex;
        q->body_fd = j->item.fd;
        q->body_off = off;
        q->body_len = len;
        return 0;
    }
    case JOB_COMPLETE: {
        unsigned char sha_all[32];
        EVP_DigestFinal_ex(j->all, sha_all, NULL);
        if (memcmp(sha_all, d->sha256, 32) != 0) {
            store_error_set(&j->err, 0, "BadDigest", "'%s' changed while it was uploaded",
                            j->item.key);
            return -EBADMSG;
        }
        if (buf_append_str(&j->xml, "</CompleteMultipartUpload>") < 0)
            return -ENOBUFS;
        sigv4_sha256_hex(j->xml.data, j->xml.len, j->xml_hash);
        req_init(q, "POST", j->fkey);
        req_query(q, "uploadId", j->upload_id);
        req_header(q, "Content-Type", "application/xml");
        if (s->base.conditional_create)
            req_header(q, "If-None-Match", "*");
        q->payload_hash = j->xml_hash;
        q->body = j->xml.data;
        q->body_len = j->xml.len;
        q->error_in_body = 1;
        return 0;
    }
    case JOB_DONE:
        break;
    }
    return -EINVAL;
}

static void job_start_request(struct s3_job *j, CURLM *multi)
{
    int r = call_start(&j->call, j->s, j->c, &j->req, &j->resp, &j->err);
    if (r < 0) {
        job_finish(j, r);
        return;
    }
    curl_easy_setopt(j->c, CURLOPT_PRIVATE, j);
    curl_multi_add_handle(multi, j->c);
    j->in_flight = 1;
}

/* Move to the next state (after a successful request when r == 0). */
static void job_advance(struct s3_job *j, int r, CURLM *multi)
{
    struct s3_store *s = j->s;
    const struct store_digest *d = &j->item.digest;
    const char *key = j->item.key;
    switch (j->state) {
    case JOB_PUT:
        if (r == -EEXIST) {
            /* Someone (perhaps our own first attempt whose response was lost)
             * created it: fine only if it holds these bytes. */
            r = resolve_existing(&s->base, key, d, &j->err);
        } else if (r == 0 && j->resp.etag[0] && strlen(j->resp.etag) == 32 &&
                   strcmp(j->resp.etag, j->whole.md5_hex) != 0) {
            store_error_set(&j->err, (int)j->resp.status, "BadDigest",
                            "the store's ETag for '%s' is not the MD5 of the file", key);
            r = -EBADMSG;
        }
        job_finish(j, r);
        return;
    case JOB_CREATE:
        j->create_attempts = j->attempt;
        if (r == 0 && (!j->resp.body.data ||
                       s3_xml_text(j->resp.body.data, j->resp.body.len, "UploadId", j->upload_id,
                                   sizeof(j->upload_id)) < 0 ||
                       !j->upload_id[0])) {
            j->upload_id[0] = '\0';
            store_error_set(&j->err, (int)j->resp.status, "InvalidResponse",
                            "CreateMultipartUpload for '%s' returned no UploadId", key);
            r = -EPROTO;
        }
        if (r < 0) {
            job_finish(j, r);
            return;
        }
        if (j->item.upload_started)
            j->item.upload_started(&j->item, j->upload_id);
        j->nparts = (size_t)((d->size + s->base.opts.part_size - 1) / s->base.opts.part_size);
        j->part_no = 1;
        j->state = JOB_PART;
        j->all = EVP_MD_CTX_new();
        EVP_DigestInit_ex(j->all, EVP_sha256(), NULL);
        buf_init(&j->xml, 1024 + j->nparts * 256);
        buf_append_str(
            &j->xml, "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
        break;
    case JOB_PART:
        if (r == 0 && strcmp(j->resp.etag, j->pg.md5_hex) != 0) {
            store_error_set(&j->err, (int)j->resp.status, "BadDigest",
                            "part %zu of '%s': ETag '%s' is not the part's MD5", j->part_no, key,
                            j->resp.etag);
            r = -EBADMSG;
        }
        if (r == 0) {
            buf_printf(&j->xml, "<Part><PartNumber>%zu</PartNumber><ETag>\"%s\"</ETag>", j->part_no,
                       j->pg.md5_hex);
            if (s->checksum == CHECKSUM_SHA256)
                buf_printf(&j->xml, "<ChecksumSHA256>%s</ChecksumSHA256>", j->pg.sha_b64);
            if (buf_append_str(&j->xml, "</Part>") < 0)
                r = -ENOBUFS;
        }
        if (r < 0) {
            job_finish(j, r);
            return;
        }
        if (++j->part_no > j->nparts)
            j->state = JOB_COMPLETE;
        break;
    case JOB_COMPLETE: {
        char etag[80] = "";
        if (r == 0 && j->resp.body.data)
            s3_xml_text(j->resp.body.data, j->resp.body.len, "ETag", etag, sizeof(etag));
        strip_quotes(etag);
        /* Ceph RGW 16.2 answers a first Complete with an empty ETag: the
         * object's own ETag, from a HEAD, is then what proves the result. */
        if (r == 0 && !etag[0]) {
            struct store_info info;
            r = s3_head_full(s, j->fkey, &info, &j->err);
            if (r == 0)
                snprintf(etag, sizeof(etag), "%s", info.etag);
        }
        /* S3 answers MD5(part MD5s)-N; some compatible stores (s3rver) the
         * MD5 of the whole object. Both prove the bytes; anything else fails. */
        if (r == 0 && etag[0] && strcmp(etag, d->etag) != 0 &&
            strcmp(etag, j->whole.md5_hex) != 0) {
            store_error_set(&j->err, (int)j->resp.status, "BadDigest",
                            "multipart ETag of '%s' is %s, expected %s", key, etag, d->etag);
            r = -EBADMSG;
        }
        if (r == -ENOENT || r == -EEXIST) {
            /* NoSuchUpload: an earlier attempt (ours, or curl's own resend on a
             * connection that died) completed it but the answer was lost.
             * 412: the object existed. Either way only the stored bytes decide. */
            r = resolve_existing(&s->base, key, d, &j->err);
            if (r == 0)
                j->upload_id[0] = '\0'; /* nothing left to abort */
        }
        if (r == 0)
            j->upload_id[0] = '\0';
        job_finish(j, r);
        return;
    }
    case JOB_DONE:
        return;
    }
    r = job_prepare(j);
    if (r < 0)
        job_finish(j, r);
    else
        job_start_request(j, multi);
}

static void job_begin(struct s3_job *j, CURLM *multi)
{
    struct s3_store *s = j->s;
    const struct store_digest *d = &j->item.digest;
    j->fkey = full_key(&s->base, j->item.key);
    resp_init(&j->resp);
    digests_fill(&j->whole, d->md5, d->sha256);
    j->state = d->size >= s->base.opts.multipart_threshold && d->size > 0 ? JOB_CREATE : JOB_PUT;
    int r = job_prepare(j);
    if (r < 0)
        job_finish(j, r);
    else
        job_start_request(j, multi);
}

static void job_clear(struct s3_job *j)
{
    free(j->fkey);
    free(j->part);
    buf_finish(&j->resp.body);
    if (j->all) {
        EVP_MD_CTX_free(j->all);
        buf_finish(&j->xml);
    }
    CURL *c = j->c;
    struct s3_store *s = j->s;
    memset(j, 0, sizeof(*j));
    j->c = c;
    j->s = s;
}

/* A transfer of j ended with cc: retry later, or advance. */
static void job_transfer_done(struct s3_job *j, CURLcode cc, CURLM *multi)
{
    curl_multi_remove_handle(multi, j->c);
    j->in_flight = 0;
    int retryable = 0;
    int r = call_finish(&j->call, cc, &retryable, &j->err);
    if (r < 0 && j->call.renewed && !j->renewed) {
        j->renewed = 1; /* once per request, at once, with the fresh credentials */
        job_start_request(j, multi);
        return;
    }
    j->err.attempts = (int)++j->attempt;
    if (r < 0 && retryable && j->attempt <= j->s->retries) {
        store_count_retry(&j->s->base);
        j->retry_at_ms = time_mono_ms() + s3_next_backoff(j->s, j->attempt - 1) + 1;
        return;
    }
    job_advance(j, r, multi);
}

static int s3_put_many(struct store *st, unsigned concurrency, store_next_fn next,
                       store_done_fn done, void *ctx)
{
    struct s3_store *s = s3_of(st);
    if (concurrency < 1)
        concurrency = 1;
    if (!s->multi && !(s->multi = curl_multi_init()))
        return -ENOMEM;
    CURLM *multi = s->multi;
    if (s->npool < concurrency) {
        s->pool = xrealloc(s->pool, concurrency * sizeof(CURL *));
        for (; s->npool < concurrency; s->npool++)
            if (!(s->pool[s->npool] = curl_easy_init()))
                abort();
    }
    struct s3_job *jobs = xcalloc(concurrency, sizeof(*jobs));
    for (unsigned i = 0; i < concurrency; i++) {
        jobs[i].s = s;
        jobs[i].c = s->pool[i];
    }
    int more = 1, active = 0;
    for (;;) {
        /* Hand finished uploads back, then fill the free slots. */
        int starved = 0;
        for (unsigned i = 0; i < concurrency; i++) {
            struct s3_job *j = &jobs[i];
            if (j->fkey && j->state == JOB_DONE && !j->in_flight) {
                done(ctx, &j->item, j->result, &j->err);
                job_clear(j);
                active--;
            }
            while (!j->fkey && more && !starved) {
                memset(&j->item, 0, sizeof(j->item)); /* fields next() leaves alone: none */
                int n = next(ctx, &j->item);
                if (n == 0) {
                    more = 0;
                    break;
                }
                if (n < 0) {
                    starved = 1; /* nothing ready yet: ask again soon */
                    break;
                }
                active++;
                job_begin(j, multi);
                if (j->state != JOB_DONE)
                    break;
                done(ctx, &j->item, j->result, &j->err);
                job_clear(j);
                active--;
            }
        }
        if (!active && !more)
            break;
        int running = 0;
        curl_multi_perform(multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct s3_job *j = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
            job_transfer_done(j, msg->data.result, multi);
        }
        /* Start retries whose backoff expired; sleep in poll until the next. */
        uint64_t now = time_mono_ms();
        long wait_ms = 1000;
        for (unsigned i = 0; i < concurrency; i++) {
            struct s3_job *j = &jobs[i];
            if (!j->retry_at_ms || j->state == JOB_DONE)
                continue;
            if (j->retry_at_ms <= now) {
                j->retry_at_ms = 0;
                job_start_request(j, multi);
            } else if ((long)(j->retry_at_ms - now) < wait_ms) {
                wait_ms = (long)(j->retry_at_ms - now);
            }
        }
        if (starved && wait_ms > STORE_STARVED_POLL_MS)
            wait_ms = STORE_STARVED_POLL_MS;
        int done_now = 0;
        for (unsigned i = 0; i < concurrency; i++)
            done_now |= jobs[i].fkey && jobs[i].state == JOB_DONE;
        if (!done_now) {
            /* Sleeps until a transfer moves, a retry is due, or the caller has more
             * (store_put_wake()): no polling of next() while nothing happens. */
            struct curl_waitfd wake = {.fd = s->base.wake_fd, .events = CURL_WAIT_POLLIN};
            curl_multi_poll(multi, &wake, s->base.wake_fd >= 0 ? 1 : 0, (int)wait_ms, NULL);
            store_wake_drain(&s->base); /* the loop asks next() again now */
        }
    }
    free(jobs);
    return 0;
}

struct one_put {
    const char *key;
    int fd;
    const struct store_digest *d;
    const char *content_type;
    int taken;
    int result;
    struct store_error *err;
};

static int one_next(void *ctx, struct store_put_item *item)
{
    struct one_put *o = ctx;
    if (o->taken)
        return 0;
    o->taken = 1;
    item->key = o->key;
    item->fd = o->fd;
    item->digest = *o->d;
    item->content_type = o->content_type;
    item->user = NULL;
    item->upload_started = NULL;
    return 1;
}

static void one_done(void *ctx, const struct store_put_item *item, int result,
                     const struct store_error *err)
{
    struct one_put *o = ctx;
    o->result = result;
    if (o->err)
        *o->err = *err;
}

static int s3_put_file(struct store *st, const char *key, int fd, const struct store_digest *d,
                       const char *content_type, struct store_error *err)
{
    struct one_put o = {key, fd, d, content_type, 0, -EIO, err};
    int r = s3_put_many(st, 1, one_next, one_done, &o);
    return r < 0 ? r : o.result;
}

static int s3_get(struct store *st, const char *key, const char *range, int out_fd,
                  struct store_error *err)
{
    char *fkey = full_key(st, key);
    struct s3_req q;
    struct s3_resp resp;
    req_init(&q, "GET", fkey);
    if (range)
        req_header(&q, "Range", range);
    q.out_fd = out_fd;
    resp_init(&resp);
    int r = s3_perform(s3_of(st), &q, &resp, err);
    buf_finish(&resp.body);
    free(fkey);
    return r;
}

static int s3_del(struct store *st, const char *key, struct store_error *err)
{
    char *fkey = full_key(st, key);
    struct s3_req q;
    struct s3_resp resp;
    req_init(&q, "DELETE", fkey);
    resp_init(&resp);
    int r = s3_perform(s3_of(st), &q, &resp, err);
    buf_finish(&resp.body);
    free(fkey);
    return r == -ENOENT ? 0 : r;
}

static int s3_presign(struct store *st, const char *method, const char *key, long ttl,
                      struct buf *url)
{
    struct s3_store *s = s3_of(st);
    /* A presigning server may send the store nothing else, so a rewritten
     * credentials file (rotated session credentials) is followed here too,
     * as before a request: a clock read, and one stat a second at most. */
    char why[256];
    (void)s3_creds_refresh(s, 0, why, sizeof(why));
    /* url_parts() for the full key, without its allocations: this runs for
     * every presigned redirect. A path too long for the stack takes the heap. */
    char stack_path[1024], *heap_path = NULL, *path = stack_path;
    size_t hl = strlen(s->path_head), pl = strlen(st->prefix), kl = strlen(key);
    if (hl + pl + kl + 1 > sizeof(stack_path))
        path = heap_path = xmalloc(hl + pl + kl + 1);
    memcpy(path, s->path_head, hl);
    memcpy(path + hl, st->prefix, pl);
    memcpy(path + hl + pl, key, kl + 1);
    struct sigv4_creds sc = signing_creds(s);
    struct sigv4_request sr = {
        .method = method, .host = s->sign_host, .path = path, .when = time(NULL)};
    /* Never valid past the credentials that sign it. */
    if (st->creds_expires && st->creds_expires - sr.when < ttl)
        ttl = (long)(st->creds_expires - sr.when);
    int r = ttl < 1 ? -EKEYEXPIRED : sigv4_presign_url(&sr, &sc, ttl, s->scheme, url);
    free(heap_path);
    return r;
}

static int s3_sign_request(struct store *st, const char *method, const char *key, const char *range,
                           struct store_signed *out, struct store_error *err)
{
    struct s3_store *s = s3_of(st);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        store_error_set(err, 0, "InvalidRequest", "only GET and HEAD are signed for callers");
        return -EINVAL;
    }
    char *fkey = full_key(st, key);
    struct s3_req q;
    req_init(&q, method, fkey);
    if (range)
        req_header(&q, "Range", range);
    struct buf url;
    buf_init(&url, 64 * 1024);
    struct store_signed sg = {0};
    int r = req_sign(s, &q, time(NULL), &url, sg.headers, &sg.nheaders, err);
    free(fkey);
    if (r < 0) {
        buf_finish(&url);
        return r;
    }
    sg.url = url.data;
    sg.ca_file = s->ca_file ? xstrdup(s->ca_file) : NULL;
    sg.connect_timeout_ms = s->connect_timeout_ms;
    sg.low_speed_time_s = s->low_speed_time_s;
    *out = sg;
    return 0;
}

static void s3_destroy(struct store *st)
{
    struct s3_store *s = s3_of(st);
    if (s->curl)
        curl_easy_cleanup(s->curl);
    for (unsigned i = 0; i < s->npool; i++)
        curl_easy_cleanup(s->pool[i]);
    free(s->pool);
    if (s->multi)
        curl_multi_cleanup(s->multi);
    creds_finish(&s->creds);
    sigv4_key_cache_clear(&s->keys);
    free(s->scheme);
    free(s->host);
    free(s->basepath);
    free(s->bucket);
    free(s->region);
    free(s->sign_host);
    free(s->path_head);
    free(s->ca_file);
    free(s);
}

static const struct store_ops s3_ops = {
    .put_file = s3_put_file,
    .put_many = s3_put_many,
    .head = s3_head,
    .get = s3_get,
    .del = s3_del,
    .presign = s3_presign,
    .sign_request = s3_sign_request,
    .abort_multipart = s3_abort_multipart,
    .abort_all_multipart = s3_abort_all_multipart,
    .destroy = s3_destroy,
};

/* Split "https://host:port/base" into its parts. */
static int parse_endpoint(struct s3_store *s, const char *ep, struct store_error *err)
{
    const char *p = strstr(ep, "://");
    size_t n = p ? (size_t)(p - ep) : 0;
    /* The scheme in full: a prefix such as "h" or "" is not "http". */
    if (!p ||
        !((n == 4 && strncmp(ep, "http", 4) == 0) || (n == 5 && strncmp(ep, "https", 5) == 0)) ||
        p[3] == '\0' || p[3] == '/') {
        store_error_set(err, 0, "InvalidConfig",
                        "key 'endpoint': cannot parse '%s' (want http[s]://HOST[:PORT])", ep);
        return -EINVAL;
    }
    s->scheme = xstrndup(ep, (size_t)(p - ep));
    const char *h = p + 3;
    const char *slash = strchr(h, '/');
    s->host = slash ? xstrndup(h, (size_t)(slash - h)) : xstrdup(h);
    s->basepath = xstrdup(slash ? slash : "");
    n = strlen(s->basepath);
    while (n && s->basepath[n - 1] == '/')
        s->basepath[--n] = '\0';
    return 0;
}

int s3_store_create(const struct ferry_conf *conf, struct store **out, struct store_error *err)
{
    pthread_once(&curl_once, curl_init_once);
    struct s3_store *s = xcalloc(1, sizeof(*s));
    s->base.ops = &s3_ops;
    s->base.wake_fd = -1; /* store_create() makes it */
    const char *ep = conf->store.endpoint;
    int r = -EINVAL;
    if (!ep || !*ep) {
        store_error_set(err, 0, "InvalidConfig", "key 'endpoint' is required for the s3 store");
        goto fail;
    }
    if (!conf->store.bucket || !*conf->store.bucket) {
        store_error_set(err, 0, "InvalidConfig", "key 'bucket' is required for the s3 store");
        goto fail;
    }
    if ((r = parse_endpoint(s, ep, err)) < 0)
        goto fail;
    s->bucket = xstrdup(conf->store.bucket);
    s->region =
        xstrdup(conf->store.region && *conf->store.region ? conf->store.region : "us-east-1");
    s->virtual_host = conf->store.addressing == ADDRESSING_VIRTUAL;
    if (s->virtual_host) {
        s->sign_host = xasprintf("%s.%s", s->bucket, s->host);
        s->path_head = xasprintf("%s/", s->basepath);
    } else {
        s->sign_host = xstrdup(s->host);
        s->path_head = xasprintf("%s/%s/", s->basepath, s->bucket);
    }
    s->checksum = conf->store.checksum;
    s->connect_timeout_ms = (long)conf->store.connect_timeout_ms;
    s->low_speed_time_s = (long)((conf->store.low_speed_time_ms + 999) / 1000);
    s->retries = (unsigned)conf->store.retries;
    /* The configured CA file wins; AWS_CA_BUNDLE is honoured like the AWS SDKs
     * do, but only when it names a readable file, so a stale variable cannot
     * break verification against the system store. */
    const char *env_ca = getenv("AWS_CA_BUNDLE");
    if (conf->store.ca_file && *conf->store.ca_file) {
        if (access(conf->store.ca_file, R_OK) < 0) {
            store_error_set(err, 0, "InvalidConfig", "key 'ca_file': cannot read '%s'",
                            conf->store.ca_file);
            r = -EINVAL;
            goto fail;
        }
        s->ca_file = xstrdup(conf->store.ca_file);
    } else if (env_ca && *env_ca && access(env_ca, R_OK) == 0) {
        s->ca_file = xstrdup(env_ca);
    }
    char why[256];
    r = creds_resolve(conf->store.access_key, conf->store.secret_key, conf->store.session_token,
                      conf->store.profile, &s->creds, why, sizeof(why));
    if (r < 0) {
        store_error_set(err, 0, "NoCredentials", "%s", why);
        goto fail;
    }
    s->base.creds_expires = s->creds.expires;
    if (getrandom(&s->seed, sizeof(s->seed), GRND_NONBLOCK) != sizeof(s->seed))
        s->seed = (uint64_t)time(NULL) ^ (uint64_t)getpid();
    s->curl = curl_easy_init();
    if (!s->curl) {
        store_error_set(err, 0, "InternalError", "curl_easy_init failed");
        r = -ENOMEM;
        goto fail;
    }
    *out = &s->base;
    return 0;
fail:
    s3_destroy(&s->base);
    return r;
}
