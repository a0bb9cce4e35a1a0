#include "store/sigv4.h"

#include "common/alloc.h"
#include "store/backend.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
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
    unsigned char md[SHA256_LEN];
    sha256_digest(data, len, md);
    store_hex(md, SHA256_LEN, out);
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

static void secret_free(char **p)
{
    if (*p) {
        OPENSSL_cleanse(*p, strlen(*p));
        free(*p);
        *p = NULL;
    }
}

void sigv4_key_cache_clear(struct sigv4_key_cache *kc)
{
    if (!kc)
        return;
    unsigned long derivations = kc->derivations;
    char **strs[] = {&kc->access_key, &kc->secret_key, &kc->session_token, &kc->region,
                     &kc->service,    &kc->scope,      &kc->query_head,    &kc->token_param};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        secret_free(strs[i]);
    OPENSSL_cleanse(kc, sizeof(*kc));
    kc->derivations = derivations;
}

static const char *token_of(const struct sigv4_creds *c)
{
    return c->session_token ? c->session_token : "";
}

/* Whether kc holds what c signs with at when. */
static bool key_cache_matches(const struct sigv4_key_cache *kc, const struct sigv4_creds *c,
                              time_t when)
{
    return kc->secret_key && when >= kc->day && when - kc->day < 86400 &&
           strcmp(kc->secret_key, c->secret_key) == 0 &&
           strcmp(kc->access_key, c->access_key) == 0 &&
           strcmp(kc->session_token, token_of(c)) == 0 && strcmp(kc->region, c->region) == 0 &&
           strcmp(kc->service, c->service) == 0;
}

/* Make kc hold what c signs with on when's day: kSigning = HMAC(HMAC(HMAC(
 * HMAC("AWS4" + secret, date), region), service), "aws4_request") as HMAC
 * states, and the encoded constant parts of presigned queries. */
static int key_cache_fill(struct sigv4_key_cache *kc, const struct sigv4_creds *c, time_t when)
{
    unsigned long derivations = kc->derivations;
    sigv4_key_cache_clear(kc);
    kc->derivations = derivations + 1;
    struct tm tm;
    gmtime_r(&when, &tm);
    kc->day = when - (tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec);
    strftime(kc->date, sizeof(kc->date), "%Y%m%d", &tm);
    kc->scope = xasprintf("%s/%s/%s/aws4_request", kc->date, c->region, c->service);

    size_t klen = strlen(c->secret_key) + 4;
    char *k0 = xasprintf("AWS4%s", c->secret_key);
    struct sha256_hmac_key k;
    unsigned char mac[SHA256_LEN];
    sha256_hmac_key_init(&k, k0, klen);
    secret_free(&k0);
    const char *steps[] = {kc->date, c->region, c->service, "aws4_request"};
    for (size_t i = 0; i < 4; i++) {
        sha256_hmac(&k, steps[i], strlen(steps[i]), mac);
        sha256_hmac_key_init(i < 3 ? &k : &kc->key, mac, sizeof(mac));
    }
    sha256_hmac_key_wipe(&k);
    OPENSSL_cleanse(mac, sizeof(mac));

    struct buf b;
    buf_init(&b, SIGV4_MAX_CANONICAL);
    char *credential = xasprintf("%s/%s", c->access_key, kc->scope);
    int r = buf_append_str(&b, "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=");
    if (r == 0)
        r = sigv4_uri_encode(&b, credential, strlen(credential), 0);
    if (r == 0)
        r = buf_append_str(&b, "&X-Amz-Date=");
    free(credential);
    kc->query_head = b.data;
    buf_init(&b, SIGV4_MAX_CANONICAL);
    const char *token = token_of(c);
    if (r == 0 && *token) {
        r = buf_append_str(&b, "&X-Amz-Security-Token=");
        if (r == 0)
            r = sigv4_uri_encode(&b, token, strlen(token), 0);
    }
    kc->token_param = b.data ? b.data : xstrdup("");
    kc->access_key = xstrdup(c->access_key);
    kc->session_token = xstrdup(token);
    kc->region = xstrdup(c->region);
    kc->service = xstrdup(c->service);
    if (r < 0 || !kc->query_head) {
        sigv4_key_cache_clear(kc);
        return r < 0 ? r : -ENOBUFS;
    }
    /* Set last: a cache without its secret matches nothing. */
    kc->secret_key = xstrdup(c->secret_key);
    return 0;
}

/* What c signs with at when: c->keys refreshed when it does not hold it, else
 * tmp filled (the caller clears it). Returns it, or NULL with *err set. */
static const struct sigv4_key_cache *key_cache_get(const struct sigv4_creds *c, time_t when,
                                                   struct sigv4_key_cache *tmp, int *err)
{
    struct sigv4_key_cache *kc = c->keys ? c->keys : tmp;
    if (c->keys && key_cache_matches(kc, c, when))
        return kc;
    *err = key_cache_fill(kc, c, when);
    return *err < 0 ? NULL : kc;
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

    struct sigv4_key_cache tmp = {0};
    const struct sigv4_key_cache *kc = key_cache_get(s->c, s->r->when, &tmp, &r);
    if (kc) {
        unsigned char mac[SHA256_LEN];
        sha256_hmac(&kc->key, sts, (size_t)n, mac);
        store_hex(mac, SHA256_LEN, sig);
    }
    if (kc == &tmp || !kc)
        sigv4_key_cache_clear(&tmp);
    return r;
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

/* The generic presigner: any query parameters and headers. Appends the query
 * string to out. */
static int presign_query(const struct sigv4_request *r, const struct sigv4_creds *c, long expires,
                         struct buf *out)
{
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

/* Digits of v (>= 0) into out; returns their count. */
static size_t format_long(long v, char out[24])
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
    return n;
}

/* "YYYYMMDDTHHMMSSZ" of when, a second of kc's day, into out. */
static void format_time_of_day(const struct sigv4_key_cache *kc, time_t when, char out[17])
{
    long t = (long)(when - kc->day);
    int hms[3] = {(int)(t / 3600), (int)(t / 60 % 60), (int)(t % 60)};
    memcpy(out, kc->date, 8);
    out[8] = 'T';
    for (int i = 0; i < 3; i++) {
        out[9 + 2 * i] = (char)('0' + hms[i] / 10);
        out[10 + 2 * i] = (char)('0' + hms[i] % 10);
    }
    out[15] = 'Z';
    out[16] = '\0';
}

/* The presigner of a request with no query parameters or headers of its own,
 * the redirect's case: the canonical request is hashed piece by piece as the
 * URL is written, from the day's constant parts in kc, with no sorting and no
 * allocation. ctx has hashed the canonical request's method and path lines;
 * the query string is appended to out. The canonical query sorts
 * X-Amz-Security-Token before X-Amz-SignedHeaders; the URL has them in
 * botocore's order, the other way round. */
static int presign_plain(const struct sigv4_request *r, const struct sigv4_key_cache *kc,
                         long expires, SHA256_CTX *ctx, struct buf *out)
{
    static const char signed_headers[] = "&X-Amz-SignedHeaders=host";
    static const char tail[] = "\n\nhost\n" SIGV4_UNSIGNED_PAYLOAD;
    char date[17], exp[24];
    format_time_of_day(kc, r->when, date);
    size_t explen = format_long(expires, exp);
    size_t head = strlen(kc->query_head), token = strlen(kc->token_param);
    size_t scope = strlen(kc->scope);
    if (scope > 256)
        return -EINVAL;
    /* Everything appended below fits once this succeeds. */
    int ret =
        buf_reserve(out, head + 16 + 15 + explen + (sizeof(signed_headers) - 1) + token + 17 + 64);
    if (ret < 0)
        return ret;
    size_t query_off = out->len;
    buf_append(out, kc->query_head, head);
    buf_append(out, date, 16);
    buf_append(out, "&X-Amz-Expires=", 15);
    buf_append(out, exp, explen);
    sha256_update(ctx, out->data + query_off, out->len - query_off);
    sha256_update(ctx, kc->token_param, token);
    sha256_update(ctx, signed_headers, sizeof(signed_headers) - 1);
    sha256_update(ctx, "\nhost:", 6);
    sha256_update(ctx, r->host, strlen(r->host));
    sha256_update(ctx, tail, sizeof(tail) - 1);
    unsigned char md[SHA256_LEN];
    sha256_end(ctx, md);

    /* The string to sign: "AWS4-HMAC-SHA256\n" date "\n" scope "\n" hex(md). */
    char sts[17 + 17 + 257 + 65];
    size_t n = 0;
    memcpy(sts, "AWS4-HMAC-SHA256\n", 17);
    n += 17;
    memcpy(sts + n, date, 16);
    sts[n + 16] = '\n';
    n += 17;
    memcpy(sts + n, kc->scope, scope);
    sts[n + scope] = '\n';
    n += scope + 1;
    store_hex(md, SHA256_LEN, sts + n);
    n += 64;
    sha256_hmac(&kc->key, sts, n, md);
    char sig[65];
    store_hex(md, SHA256_LEN, sig);

    buf_append(out, signed_headers, sizeof(signed_headers) - 1);
    buf_append(out, kc->token_param, token);
    buf_append(out, "&X-Amz-Signature=", 17);
    buf_append(out, sig, 64);
    return 0;
}

static bool has_space(const char *s)
{
    for (; *s; s++)
        if (isspace((unsigned char)*s))
            return true;
    return false;
}

/* sigv4_presign_url when scheme, else sigv4_presign. */
static int presign(const struct sigv4_request *r, const struct sigv4_creds *c, long expires,
                   const char *scheme, struct buf *out)
{
    if (expires < 1 || expires > SIGV4_MAX_EXPIRES)
        return -EINVAL;
    if (!r->method || !r->host || !r->path || r->path[0] != '/' || !c->access_key ||
        !c->secret_key || !c->region || !c->service || !*c->access_key)
        return -EINVAL;
    int ret = 0;
    size_t path_len = strlen(r->path);
    if (scheme) {
        /* One allocation for the whole URL rather than one per doubling; the
         * query is some 250 bytes besides a session token. When out cannot
         * take this much, the appends below say whether the URL fits. */
        (void)buf_reserve(out, strlen(scheme) + 3 + strlen(r->host) + 3 * path_len + 1 + 320 +
                                   (c->session_token ? 3 * strlen(c->session_token) : 0));
        ret = append3(out, scheme, "://", r->host);
    }
    /* Host is the one header then: trimming it changes nothing unless it has
     * whitespace, which the generic presigner folds. */
    if (r->nquery || r->nheaders || has_space(r->host)) {
        if (ret == 0 && scheme)
            ret = sigv4_uri_encode(out, r->path, path_len, 1);
        if (ret == 0 && scheme)
            ret = buf_append(out, "?", 1);
        return ret < 0 ? ret : presign_query(r, c, expires, out);
    }
    struct sigv4_key_cache tmp = {0};
    const struct sigv4_key_cache *kc = ret < 0 ? NULL : key_cache_get(c, r->when, &tmp, &ret);
    if (kc) {
        /* The encoded path goes into out once, for the URL and the hash. */
        SHA256_CTX ctx;
        sha256_begin(&ctx);
        sha256_update(&ctx, r->method, strlen(r->method));
        sha256_update(&ctx, "\n", 1);
        size_t path_off = out->len;
        ret = sigv4_uri_encode(out, r->path, path_len, 1);
        if (ret == 0) {
            sha256_update(&ctx, out->data + path_off, out->len - path_off);
            sha256_update(&ctx, "\n", 1);
            if (scheme) {
                ret = buf_append(out, "?", 1);
            } else if (out->data) {
                /* sigv4_presign: the query alone. */
                out->len = path_off;
                out->data[path_off] = '\0';
            }
        }
        if (ret == 0)
            ret = presign_plain(r, kc, expires, &ctx, out);
    }
    if (kc == &tmp || !kc)
        sigv4_key_cache_clear(&tmp);
    return ret;
}

int sigv4_presign(const struct sigv4_request *r, const struct sigv4_creds *c, long expires,
                  struct buf *out)
{
    return presign(r, c, expires, NULL, out);
}

int sigv4_presign_url(const struct sigv4_request *r, const struct sigv4_creds *c, long expires,
                      const char *scheme, struct buf *out)
{
    return presign(r, c, expires, scheme, out);
}
