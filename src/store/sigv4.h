/* AWS Signature Version 4 for S3, on OpenSSL libcrypto: Authorization headers and
 * presigned URLs. S3's canonicalisation rules: the path is not normalised, each
 * segment is URI-encoded exactly once ('/' kept), query parameters are encoded,
 * sorted by encoded name then value, and a valueless parameter becomes "key=". */
#ifndef FERRY_STORE_SIGV4_H
#define FERRY_STORE_SIGV4_H

#include <stddef.h>
#include <time.h>

#include "common/buf.h"
#include "common/sha256.h"

#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
#define SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SIGV4_MAX_EXPIRES 604800

/* A name/value pair, unencoded. A query value of NULL is a valueless parameter. */
struct sigv4_kv {
    const char *name;
    const char *value;
};

/* What signing needs of one credential for one UTC day, region and service,
 * kept so that it is made once per day and credential instead of per
 * signature: the signing key (kSigning) as HMAC states (common/sha256.h),
 * and the constant parts of a presigned URL's query, already encoded. A
 * signature is then one SHA-256 of the canonical request and one HMAC.
 * Zero-initialise it. It holds copies of the credentials it was made from and
 * matches only those (access key, secret, session token, region, service and
 * day all equal), so rotated credentials make a new key on their first use
 * without the caller having to notice. Used by one thread at a time, like the
 * creds it goes with (the store's lock); sigv4_key_cache_clear() wipes and
 * frees what it holds. */
struct sigv4_key_cache {
    char *access_key, *secret_key, *session_token, *region, *service; /* NULL: none yet */
    time_t day;                 /* 00:00:00Z of the key's day */
    char date[9];               /* that day, "YYYYMMDD" */
    char *scope;                /* "YYYYMMDD/region/service/aws4_request" */
    char *query_head;           /* "X-Amz-Algorithm=...&X-Amz-Credential=...&X-Amz-Date=" */
    char *token_param;          /* "&X-Amz-Security-Token=<encoded>", or "" */
    struct sha256_hmac_key key; /* kSigning */
    unsigned long derivations;  /* keys derived so far (tests, diagnostics) */
};

struct sigv4_creds {
    const char *access_key;
    const char *secret_key;
    const char *session_token; /* NULL or "" when not temporary credentials */
    const char *region;
    const char *service;          /* "s3" */
    struct sigv4_key_cache *keys; /* NULL: derive the key for each signature */
};

/** Forget, wipe and free what kc holds (before freeing kc, or to drop a secret
 * early); kc then matches nothing, as if zero-initialised (derivations is
 * kept). NULL-safe. */
void sigv4_key_cache_clear(struct sigv4_key_cache *kc);

struct sigv4_request {
    const char *method;
    const char *host; /* the Host header value: "host" or "host:port" */
    const char *path; /* unencoded, starts with '/': "/bucket/a b//c" */
    const struct sigv4_kv *query;
    size_t nquery;
    const struct sigv4_kv *headers; /* to sign besides host, x-amz-date,
                                       x-amz-content-sha256 and x-amz-security-token */
    size_t nheaders;
    const char *payload_hash; /* lowercase hex SHA-256, or NULL for UNSIGNED-PAYLOAD */
    time_t when;
    int no_content_sha256; /* 1: do not sign x-amz-content-sha256 (plain SigV4 as other
                              AWS services and the generic test suite use it; S3 requires
                              the header, so the store leaves this 0) */
};

/** Format t as the ISO 8601 basic timestamp "20130524T000000Z" into out (>= 17 bytes). */
void sigv4_format_date(time_t t, char out[17]);

/** Append s[0..len) to out URI-encoded per SigV4: unreserved characters
 * (A-Z a-z 0-9 - _ . ~) are kept, '/' is kept when keep_slash, every other byte
 * becomes %XX (uppercase). Returns 0 or -ENOBUFS. Any thread. */
int sigv4_uri_encode(struct buf *out, const char *s, size_t len, int keep_slash);

/** Sign r for header authentication. The caller sends, besides r->headers and Host:
 * "x-amz-date: <sigv4_format_date(r->when)>", "x-amz-content-sha256: <payload hash
 * or UNSIGNED-PAYLOAD>" (not signed, need not be sent, when r->no_content_sha256),
 * "x-amz-security-token" when c has one, and
 * "Authorization: <what is appended to authorization>". Header names in r->headers
 * must be unique case-insensitively. Returns 0, -EINVAL on a bad request,
 * or -ENOBUFS. Any thread; c->keys (when set) is written: one thread at a time. */
int sigv4_sign_header(const struct sigv4_request *r, const struct sigv4_creds *c,
                      struct buf *authorization);

/** sigv4_sign_header, also appending the canonical request and the string to sign it
 * built to creq and sts (each may be NULL), for tests and diagnostics. Same returns;
 * on failure creq and sts may hold a part. Threads as sigv4_sign_header(). */
int sigv4_sign_header_explain(const struct sigv4_request *r, const struct sigv4_creds *c,
                              struct buf *authorization, struct buf *creq, struct buf *sts);

/** Presign r (payload UNSIGNED-PAYLOAD) valid for expires seconds (1..604800).
 * Appends the query string (without '?') to out: r's parameters in order, then
 * X-Amz-Algorithm, -Credential, -Date, -Expires, -SignedHeaders,
 * [-Security-Token], -Signature — the order botocore writes them in. The URL is
 * scheme://host + sigv4_uri_encode(path, keep '/') + '?' + out. Returns 0,
 * -EINVAL or -ENOBUFS. Any thread; c->keys (when set) is written: one thread
 * at a time. */
int sigv4_presign(const struct sigv4_request *r, const struct sigv4_creds *c, long expires,
                  struct buf *out);

/** sigv4_presign, appending the whole URL to out: scheme "://" r->host, the
 * path encoded (sigv4_uri_encode, '/' kept), '?' and the query string. The
 * path is encoded once, for the URL and the signature. Without extra query
 * parameters or headers in r (a presigned redirect), a signature costs one
 * SHA-256 of the canonical request and one HMAC with c->keys's states, and no
 * allocation beyond out's growth. Same returns; on failure out may hold a
 * part. Any thread; c->keys (when set) is written: one thread at a time. */
int sigv4_presign_url(const struct sigv4_request *r, const struct sigv4_creds *c, long expires,
                      const char *scheme, struct buf *out);

/** Lowercase hex SHA-256 of data into out (65 bytes with NUL). Any thread. */
void sigv4_sha256_hex(const void *data, size_t len, char out[65]);

#endif
