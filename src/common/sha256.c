/* SHA256_Init/Update/Final are deprecated in OpenSSL 3 in favour of EVP, but
 * an EVP digest context lives on the heap and its copy goes through the
 * provider: an HMAC with precomputed states then costs about twice as much (a
 * fresh EVP_MD_CTX copied from the precomputed one and freed, ~0.2 us here,
 * against ~0.1 us with SHA256_CTX copied by assignment), and these run on
 * every request under url_prefix (signed links, issue 11: a budget of 0.5 us;
 * presigned redirects, issue 9: ~3 us). This asks the headers for the 1.1.1
 * API, where these functions are current. */
#define OPENSSL_API_COMPAT 0x10101000L

#include "common/sha256.h"

#include <openssl/crypto.h>
#include <string.h>

void sha256_begin(SHA256_CTX *ctx)
{
    SHA256_Init(ctx);
}

void sha256_update(SHA256_CTX *ctx, const void *data, size_t len)
{
    SHA256_Update(ctx, data, len);
}

void sha256_end(SHA256_CTX *ctx, unsigned char out[SHA256_LEN])
{
    /* SHA256_Final clears the buffered input; what is left is the digest. */
    SHA256_Final(out, ctx);
}

void sha256_digest(const void *data, size_t len, unsigned char out[SHA256_LEN])
{
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, data, len);
    SHA256_Final(out, &ctx);
}

static void padded_state(SHA256_CTX *ctx, const unsigned char *key, unsigned char pad)
{
    unsigned char block[SHA256_CBLOCK];
    for (size_t i = 0; i < sizeof(block); i++)
        block[i] = key[i] ^ pad;
    SHA256_Init(ctx);
    SHA256_Update(ctx, block, sizeof(block));
    OPENSSL_cleanse(block, sizeof(block));
}

void sha256_hmac_key_init(struct sha256_hmac_key *k, const void *secret, size_t len)
{
    /* A key longer than the block is replaced by its hash (RFC 2104 2). */
    unsigned char key[SHA256_CBLOCK] = {0};
    if (len > SHA256_CBLOCK)
        sha256_digest(secret, len, key);
    else if (len)
        memcpy(key, secret, len);
    padded_state(&k->inner, key, 0x36);
    padded_state(&k->outer, key, 0x5c);
    OPENSSL_cleanse(key, sizeof(key));
}

void sha256_hmac_key_wipe(struct sha256_hmac_key *k)
{
    OPENSSL_cleanse(k, sizeof(*k));
}

void sha256_hmac_begin(struct sha256_hmac *h, const struct sha256_hmac_key *k)
{
    h->ctx = k->inner;
    h->key = k;
}

void sha256_hmac_update(struct sha256_hmac *h, const void *data, size_t len)
{
    SHA256_Update(&h->ctx, data, len);
}

void sha256_hmac_end(struct sha256_hmac *h, unsigned char out[SHA256_LEN])
{
    unsigned char md[SHA256_LEN];
    SHA256_Final(md, &h->ctx);
    h->ctx = h->key->outer;
    SHA256_Update(&h->ctx, md, sizeof(md));
    SHA256_Final(out, &h->ctx);
}

void sha256_hmac(const struct sha256_hmac_key *k, const void *msg, size_t len,
                 unsigned char out[SHA256_LEN])
{
    struct sha256_hmac h;
    sha256_hmac_begin(&h, k);
    sha256_hmac_update(&h, msg, len);
    sha256_hmac_end(&h, out);
}
