/* SHA-256 and HMAC-SHA256 on OpenSSL's SHA256_CTX, for the per-request
 * signatures (signed links under url_prefix, SigV4 presigned redirects).
 *
 * OpenSSL 3's one-shot EVP_Digest() and HMAC() fetch the algorithm from the
 * provider on every call, and HMAC() hashes the key's two padded blocks again
 * each time; an EVP context lives on the heap and is copied through the
 * provider. Here a context is a plain struct on the caller's stack, and an
 * HMAC key holds the states after its padded blocks, copied by assignment:
 * an HMAC of a short message costs the message's blocks plus one.
 *
 * Pure functions over caller-owned structs: no allocation, no I/O. A key is
 * only read after sha256_hmac_key_init(), so any number of threads may use one
 * key at once; a context belongs to the thread using it. */
#ifndef FERRY_COMMON_SHA256_H
#define FERRY_COMMON_SHA256_H

#include <openssl/sha.h>
#include <stddef.h>

#define SHA256_LEN 32 /* bytes of a digest */

/** An HMAC-SHA256 key with its inner and outer states computed once. */
struct sha256_hmac_key {
    SHA256_CTX inner; /* after H(key ^ ipad) */
    SHA256_CTX outer; /* after H(key ^ opad) */
};

/** An HMAC computation in progress (sha256_hmac_begin()). */
struct sha256_hmac {
    SHA256_CTX ctx;
    const struct sha256_hmac_key *key; /* not owned; must outlive the computation */
};

/** Start a SHA-256 into the caller's ctx. Any thread. */
void sha256_begin(SHA256_CTX *ctx);

/** Hash data[0..len) into ctx. */
void sha256_update(SHA256_CTX *ctx, const void *data, size_t len);

/** Finish ctx: the digest into out. ctx is then spent (holds no input). */
void sha256_end(SHA256_CTX *ctx, unsigned char out[SHA256_LEN]);

/** SHA-256 of data[0..len) into out. Any thread. */
void sha256_digest(const void *data, size_t len, unsigned char out[SHA256_LEN]);

/** Make k (caller's storage) the HMAC key secret[0..len) (copied, not kept;
 * any length: a key longer than a block is replaced by its hash). Any thread. */
void sha256_hmac_key_init(struct sha256_hmac_key *k, const void *secret, size_t len);

/** Wipe k (before freeing it or when the secret must go). */
void sha256_hmac_key_wipe(struct sha256_hmac_key *k);

/** Start an HMAC with k into h (k must outlive h's use). Any thread. */
void sha256_hmac_begin(struct sha256_hmac *h, const struct sha256_hmac_key *k);

/** Add data[0..len) to the message of h. */
void sha256_hmac_update(struct sha256_hmac *h, const void *data, size_t len);

/** Finish h: the MAC into out. h is then spent (holds no key state). */
void sha256_hmac_end(struct sha256_hmac *h, unsigned char out[SHA256_LEN]);

/** The HMAC with k of msg[0..len) into out. Any thread. */
void sha256_hmac(const struct sha256_hmac_key *k, const void *msg, size_t len,
                 unsigned char out[SHA256_LEN]);

#endif
