/* Signed, expiring links under [offload] url_prefix (issue 11, first part).
 *
 * A link is PATH?expires=EPOCH&sig=SIG where
 *
 *     SIG = base64url, without '=' padding, of HMAC-SHA256(secret, EPOCH "\n" PATH)
 *
 * EPOCH is the expiry as decimal Unix seconds, exactly the digits sent in the
 * query. PATH is the request path as ferry matches it against url_prefix: the
 * path part of the request-target (before '?'), every %XX decoded to its byte
 * ('+' stays '+'), runs of '/' merged into one, and url_prefix included:
 * "/static/a%20b.jpg" is signed as "/static/a b.jpg", and UTF-8 names as their
 * bytes. A link is good while the server's clock is before EPOCH.
 *
 * Pure functions over precomputed keys: no I/O, no logging; a key is read-only
 * once made, so any number of threads may sign and check with it at once. */
#ifndef FERRY_OFFLOAD_LINK_H
#define FERRY_OFFLOAD_LINK_H

#include <stddef.h>
#include <stdint.h>

#define OFFLOAD_LINK_SIG_LEN 43   /* base64url of 32 bytes, no padding */
#define OFFLOAD_LINK_EPOCH_MAX 18 /* digits of expires= taken at most */

enum offload_link_verdict {
    OFFLOAD_LINK_OK,      /* signed with one of the keys and not expired */
    OFFLOAD_LINK_MISSING, /* no expires= or no sig= */
    OFFLOAD_LINK_BAD,     /* malformed, repeated, or signed with neither key */
    OFFLOAD_LINK_EXPIRED, /* signed right, but EPOCH is not after now */
};

/** An HMAC-SHA256 key with its inner and outer states computed once. */
struct offload_link_key;

/**
 * Make a key for secret[0..len) (len > 0; copied, not kept). Returns 0 and
 * *out (the caller's: offload_link_key_destroy()); the int leaves room for a
 * digest implementation that can fail. Any thread.
 */
int offload_link_key_create(const char *secret, size_t len, struct offload_link_key **out);

/** Free a key (NULL-safe). No thread may still use it. */
void offload_link_key_destroy(struct offload_link_key *k);

/**
 * The signature of the link to path[0..path_len) expiring at epoch[0..epoch_len)
 * (decimal digits): OFFLOAD_LINK_SIG_LEN base64url characters and a NUL into
 * out. Returns 0. Any thread.
 */
int offload_link_sign(const struct offload_link_key *k, const char *epoch, size_t epoch_len,
                      const char *path, size_t path_len, char out[OFFLOAD_LINK_SIG_LEN + 1]);

/**
 * Find expires= in query[0..len) (the raw query, without '?'; NULL allowed):
 * parameters split at '&', names compared as sent (no decoding). Sets *expires
 * and returns 0 when exactly one expires= holds 1 to OFFLOAD_LINK_EPOCH_MAX
 * digits; -ENOENT when there is none, -EINVAL when it is malformed or
 * repeated. Any thread.
 */
int offload_link_expires(const char *query, size_t len, int64_t *expires);

/**
 * Check the link for the decoded path[0..path_len) with its raw query: the
 * signature must match key's or (when not NULL) previous's, compared in
 * constant time; then EPOCH must be after now (Unix seconds). Parameters
 * other than expires= and sig= are ignored. A wrong signature is BAD whatever
 * its expiry, so an expired link says nothing about a forged one. Any thread.
 */
enum offload_link_verdict offload_link_check(const struct offload_link_key *key,
                                             const struct offload_link_key *previous,
                                             const char *path, size_t path_len, const char *query,
                                             size_t query_len, int64_t now);

#endif
