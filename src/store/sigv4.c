#include "store/sigv4.h"

#include "common/alloc.h"
#include "store/backend.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Canonical requests are bounded by what a client would ever send; a request
 * beyond this is refused rather than signed. */
#define SIGV4_MAX_CANONICAL (1024 * 1024)

struct pair {
    char *name;  /* encoded (query) or lowercased (header) */
    char *value; /* encoded (query) or trimmed (header) */
};

void sigv4_format_date(time_t t, char out[17])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

void sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    store_hex(md, 32, out);
}

static void hmac_sha256(const void *key, size_t keylen, const char *msg, size_t msglen,
                        unsigned char out[32])
{
    unsigned int outlen = 32;
    HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, msglen, out, &outlen);
}

static bool is_unreserved(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_' || ch == '.' || ch == '~';
}

static bool kept(unsigned char ch, int keep_slash)
{
    return is_unreserved(ch) || (keep_slash && ch == '/');
}

int sigv4_uri_encode(struct buf *out, const char *s, size_t len, int keep_slash)
{
    static const char digits[] = "0123456789ABCDEF";
    size_t i = 0;
    /* Runs of bytes kept as they are go in one append, escapes in batches:
     * signing encodes every name, value and path, on every request. */
    while (i < len) {
        size_t end = i;
        while (end < len && kept((unsigned char)s[end], keep_slash))
            end++;
        if (end > i) {
            int r = buf_append(out, s + i, end - i);
            if (r < 0)
                return r;
            i = end;
            continue;
        }
        char esc[96];
        size_t n = 0;
        while (i < len && n + 3 <= sizeof(esc) && !kept((unsigned char)s[i], keep_slash)) {
            unsigned char ch = (unsigned char)s[i++];
            esc[n++] = '%';
            esc[n++] = digits[ch >> 4];
            esc[n++] = digits[ch & 15];
        }
        int r = buf_append(out, esc, n);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Append a, b and c (NUL-terminated) to out. Returns 0 or -ENOBUFS. */
static int append3(struct buf *out, const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    int r = buf_reserve(out, la + lb + lc);
    if (r == 0)
        r = buf_append(out, a, la);
    if (r == 0)
        r = buf_append(out, b, lb);
    if (r == 0)
        r = buf_append(out, c, lc);
    return r;
}

static char *encode_dup(const char *s)
{
    struct buf b;
    buf_init(&b, SIGV4_MAX_CANONICAL);
    if (sigv4_uri_encode(&b, s, strlen(s), 0) < 0 || !b.data) {
        buf_finish(&b);
        return xstrdup("");
    }
    return b.data;
}

/* Trimall from the SigV4 rules: strip leading and trailing whitespace and fold
 * each inner run of whitespace into one space. */
static char *trim_all(const char *v)
{
    char *out = xmalloc(strlen(v) + 1);
    size_t n = 0;
    int pending_space = 0;
    for (const char *p = v; *p; p++) {
        if (isspace((unsigned char)*p)) {
            pending_space = n > 0;
            continue;
        }
        if (pending_space)
            out[n++] = ' ';
        pending_space = 0;
        out[n++] = *p;
    }
    out[n] = '\0';
    return out;
}

static char *lower_dup(const char *s)
{
    char *out = xstrdup(s);
    for (char *p = out; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return out;
}

static int pair_cmp(const void *a, const void *b)
{
    const struct pair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

static void pairs_free(struct pair *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(p[i].name);
        free(p[i].value);
    }
    free(p);
}

struct signing {
    const struct sigv4_request *r;
    const struct sigv4_creds *c;
    char date[17];
    char scope[256];
    struct pair *query;
    size_t nquery;
    struct pair *headers;
    size_t nheaders;
    struct buf signed_headers;
};

static void signing_add_header(struct signing *s, const char *name, const char *value)
{
    s->headers[s->nheaders].name = lower_dup(name);
    s->headers[s->nheaders].value = trim_all(value);
    s->nheaders++;
}

static void signing_add_query(struct signing *s, const char *name, const char *value)
{
    s->query[s->nquery].name = encode_dup(name);
    s->query[s->nquery].value = encode_dup(value ? value : "");
    s->nquery++;
}

static int signing_init(struct signing *s, const struct sigv4_request *r,
                        const struct sigv4_creds *c, int presign)
{
    memset(s, 0, sizeof(*s));
    s->r = r;
    s->c = c;
    buf_init(&s->signed_headers, SIGV4_MAX_CANONICAL);
    if (!r->method || !r->host || !r->path || r->path[0] != '/' || !c->access_key ||
        !c->secret_key || !c->region || !c->service || !*c->access_key)
        return -EINVAL;
    sigv4_format_date(r->when, s->date);
    int n = snprintf(s->scope, sizeof(s->scope), "%.8s/%s/%s/aws4_request", s->date, c->region,
                     c->service);
    if (n < 0 || (size_t)n >= sizeof(s->scope))
        return -EINVAL;

    s->headers = xcalloc(r->nheaders + 4, sizeof(struct pair));
    signing_add_header(s, "host", r->host);
    for (size_t i = 0; i < r->nheaders; i++)
        signing_add_header(s, r->headers[i].name, r->headers[i].value);
    int token = c->session_token && *c->session_token;
    if (!presign) {
        if (!r->no_content_sha256)
            signing_add_header(s, "x-amz-content-sha256",
                               r->payload_hash ? r->payload_hash : SIGV4_UNSIGNED_PAYLOAD);
        signing_add_header(s, "x-amz-date", s->date);
        if (token)
            signing_add_header(s, "x-amz-security-token", c->session_token);
    }
    qsort(s->headers, s->nheaders, sizeof(struct pair), pair_cmp);
    for (size_t i = 0; i < s->nheaders; i++) {
        if (i && strcmp(s->headers[i].name, s->headers[i - 1].name) == 0)
            return -EINVAL; /* the caller promised unique names */
        if (buf_printf(&s->signed_headers, "%s%s", i ? ";" : "", s->headers[i].name) < 0)
            return -ENOBUFS;
    }

    s->query = xcalloc(r->nquery + 7, sizeof(struct pair));
    for (size_t i = 0; i < r->nquery; i++)
        signing_add_query(s, r->query[i].name, r->query[i].value);
    return 0;
}

static void signing_finish(struct signing *s)
{
    pairs_free(s->query, s->nquery);
    pairs_free(s->headers, s->nheaders);
    buf_finish(&s->signed_headers);
}

void sigv4_key_cache_clear(struct sigv4_key_cache *kc)
{
    if (kc)
        OPENSSL_cleanse(kc, sizeof(*kc));
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
 * "aws4_request"), from c's cache when it holds the key for this day, access
 * key, region and service. date is the request's "YYYYMMDDTHHMMSSZ". */
static void signing_key(const struct sigv4_creds *c, const char *date, unsigned char out[32])
{
    char id[256];
    int idn = snprintf(id, sizeof(id), "%s/%.8s/%s/%s", c->access_key, date, c->region, c->service);
    bool cacheable = c->keys && idn > 0 && (size_t)idn < sizeof(id);
    if (cacheable && strcmp(c->keys->id, id) == 0) {
        memcpy(out, c->keys->key, 32);
        return;
    }
    size_t klen = strlen(c->secret_key) + 4;
    char *k0 = xmalloc(klen + 1);
    snprintf(k0, klen + 1, "AWS4%s", c->secret_key);
    unsigned char k1[32], k2[32], k3[32];
    hmac_sha256(k0, klen, date, 8, k1);
    OPENSSL_cleanse(k0, klen);
    free(k0);
    hmac_sha256(k1, 32, c->region, strlen(c->region), k2);
    hmac_sha256(k2, 32, c->service, strlen(c->service), k3);
    hmac_sha256(k3, 32, "aws4_request", 12, out);
    OPENSSL_cleanse(k1, 32);
    OPENSSL_cleanse(k2, 32);
    OPENSSL_cleanse(k3, 32);
    if (c->keys) {
        c->keys->derivations++;
        if (cacheable) {
            memcpy(c->keys->key, out, 32);
            memcpy(c->keys->id, id, (size_t)idn + 1);
        }
    }
}

/* Compute the hex signature over the canonical request built from s; append the
 * canonical request and the string to sign to creq_out and sts_out when not NULL. */
static int signing_compute(struct signing *s, const char *payload, char sig[65],
                           struct buf *creq_out, struct buf *sts_out)
{
    struct pair *sorted = xmalloc((s->nquery ? s->nquery : 1) * sizeof(struct pair));
    memcpy(sorted, s->query, s->nquery * sizeof(struct pair));
    qsort(sorted, s->nquery, sizeof(struct pair), pair_cmp);

    struct buf cr;
    buf_init(&cr, SIGV4_MAX_CANONICAL);
    int r = buf_printf(&cr, "%s\n", s->r->method);
    if (r == 0)
        r = sigv4_uri_encode(&cr, s->r->path, strlen(s->r->path), 1);
    if (r == 0)
        r = buf_append_str(&cr, "\n");
    for (size_t i = 0; r == 0 && i < s->nquery; i++) {
        if (i)
            r = buf_append(&cr, "&", 1);
        if (r == 0)
            r = append3(&cr, sorted[i].name, "=", sorted[i].value);
    }
    if (r == 0)
        r = buf_append_str(&cr, "\n");
    for (size_t i = 0; r == 0 && i < s->nheaders; i++) {
        r = append3(&cr, s->headers[i].name, ":", s->headers[i].value);
        if (r == 0)
            r = buf_append(&cr, "\n", 1);
    }
    if (r == 0)
        r = buf_printf(&cr, "\n%s\n%s", s->signed_headers.data, payload);
    free(sorted);
    if (r == 0 && creq_out)
        r = buf_append(creq_out, cr.data, cr.len);
    if (r < 0) {
        buf_finish(&cr);
        return r;
    }

    char crhash[65];
    sigv4_sha256_hex(cr.data, cr.len, crhash);
    buf_finish(&cr);
    char sts[512];
    int n = snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s\n%s", s->date, s->scope, crhash);
    if (n < 0 || (size_t)n >= sizeof(sts))
        return -EINVAL;
    if (sts_out && buf_append(sts_out, sts, (size_t)n) < 0)
        return -ENOBUFS;

    unsigned char k4[32], mac[32];
    signing_key(s->c, s->date, k4);
    hmac_sha256(k4, 32, sts, (size_t)n, mac);
    store_hex(mac, 32, sig);
    OPENSSL_cleanse(k4, 32);
    return 0;
}

int sigv4_sign_header(const struct sigv4_request *r, const struct sigv4_creds *c,
                      struct buf *authorization)
{
    return sigv4_sign_header_explain(r, c, authorization, NULL, NULL);
}

int sigv4_sign_header_explain(const struct sigv4_request *r, const struct sigv4_creds *c,
                              struct buf *authorization, struct buf *creq, struct buf *sts)
{
    struct signing s;
    char sig[65];
    int ret = signing_init(&s, r, c, 0);
    if (ret == 0)
        ret = signing_compute(&s, r->payload_hash ? r->payload_hash : SIGV4_UNSIGNED_PAYLOAD, sig,
                              creq, sts);
    if (ret == 0)
        ret = buf_printf(authorization,
                         "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                         c->access_key, s.scope, s.signed_headers.data, sig);
    signing_finish(&s);
    return ret;
}

int sigv4_presign(const struct sigv4_request *r, const struct sigv4_creds *c, long expires,
                  struct buf *out)
{
    if (expires < 1 || expires > SIGV4_MAX_EXPIRES)
        return -EINVAL;
    struct signing s;
    char sig[65];
    int ret = signing_init(&s, r, c, 1);
    if (ret < 0)
        goto fail;
    char credential[512], exp[24];
    snprintf(credential, sizeof(credential), "%s/%s", c->access_key, s.scope);
    snprintf(exp, sizeof(exp), "%ld", expires);
    signing_add_query(&s, "X-Amz-Algorithm", "AWS4-HMAC-SHA256");
    signing_add_query(&s, "X-Amz-Credential", credential);
    signing_add_query(&s, "X-Amz-Date", s.date);
    signing_add_query(&s, "X-Amz-Expires", exp);
    signing_add_query(&s, "X-Amz-SignedHeaders", s.signed_headers.data);
    if (c->session_token && *c->session_token)
        signing_add_query(&s, "X-Amz-Security-Token", c->session_token);
    ret = signing_compute(&s, SIGV4_UNSIGNED_PAYLOAD, sig, NULL, NULL);
    for (size_t i = 0; ret == 0 && i < s.nquery; i++) {
        ret = append3(out, s.query[i].name, "=", s.query[i].value);
        if (ret == 0)
            ret = buf_append(out, "&", 1);
    }
    if (ret == 0)
        ret = buf_printf(out, "X-Amz-Signature=%s", sig);
fail:
    signing_finish(&s);
    return ret;
}
