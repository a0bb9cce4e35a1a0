/* AWS Signature Version 4 for S3, on OpenSSL libcrypto: Authorization headers and
 * presigned URLs. S3's canonicalisation rules: the path is not normalised, each
 * segment is URI-encoded exactly once ('/' kept), query parameters are encoded,
 * sorted by encoded name then value, and a valueless parameter becomes "key=". */
#ifndef FERRY_STORE_SIGV4_H
#define FERRY_STORE_SIGV4_H

#include <stddef.h>
#include <time.h>

#include "common/buf.h"

#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
#define SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SIGV4_MAX_EXPIRES 604800

/* A name/value pair, unencoded. A query value of NULL is a valueless parameter. */
struct sigv4_kv {
    const char *name;
    const char *value;
};

/* The signing key (kSigning) of one credential for one day, region and
 * service, kept so that it is derived once per day and credential instead of
 * per request (four HMACs saved on every signature). Zero-initialise it. A
 * cache belongs to one credential set (access key and its secret): the
 * access key is part of what it matches, the secret is not, so credentials
 * that change their secret need a fresh (zeroed) cache. Used by one thread at
 * a time, like the creds it goes with; the key is wiped by sigv4_key_cache_clear(). */
struct sigv4_key_cache {
    char id[256];              /* "AKID/YYYYMMDD/region/service" of key; "" none yet */
    unsigned char key[32];     /* kSigning */
    unsigned long derivations; /* keys derived so far (tests, diagnostics) */
};

struct sigv4_creds {
    const char *access_key;
    const char *secret_key;
    const char *session_token; /* NULL or "" when not temporary credentials */
    const char *region;
    const char *service;          /* "s3" */
    struct sigv4_key_cache *keys; /* NULL: derive the key for each signature */
};

/** Forget and wipe the cached key (credentials rotated, or before freeing). */
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
 * or -ENOBUFS. Any thread; no shared state. */
int sigv4_sign_header(const struct sigv4_request *r, const struct sigv4_creds *c,
                      struct buf *authorization);

/** sigv4_sign_header, also appending the canonical request and the string to sign it
 * built to creq and sts (each may be NULL), for tests and diagnostics. Same returns;
 * on failure creq and sts may hold a part. Any thread. */
int sigv4_sign_header_explain(const struct sigv4_request *r, const struct sigv4_creds *c,
                              struct buf *authorization, struct buf *creq, struct buf *sts);

/** Presign r (payload UNSIGNED-PAYLOAD) valid for expires seconds (1..604800).
 * Appends the query string (without '?') to out: r's parameters in order, then
 * X-Amz-Algorithm, -Credential, -Date, -Expires, -SignedHeaders,
 * [-Security-Token], -Signature — the order botocore writes them in. The URL is
 * scheme://host + sigv4_uri_encode(path, keep '/') + '?' + out. Returns 0,
 * -EINVAL or -ENOBUFS. Any thread. */
int sigv4_presign(const struct sigv4_request *r, const struct sigv4_creds *c, long expires,
                  struct buf *out);

/** Lowercase hex SHA-256 of data into out (65 bytes with NUL). Any thread. */
void sigv4_sha256_hex(const void *data, size_t len, char out[65]);

#endif
