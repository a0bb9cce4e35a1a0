/* SHA256_Init/Update/Final are deprecated in OpenSSL 3 in favour of EVP, but
 * an EVP digest context lives on the heap and its copy goes through the
 * provider: a check then costs about twice as much (a fresh EVP_MD_CTX copied
 * from the precomputed one and freed, ~0.2 us here, against ~0.1 us with
 * SHA256_CTX copied by assignment), and the check runs on every request under
 * url_prefix, with a budget of 0.5 us (issue 11). This asks the headers for
 * the 1.1.1 API, where these functions are current. */
#define OPENSSL_API_COMPAT 0x10101000L

#include "offload/link.h"

#include "common/alloc.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdbool.h>
#include <string.h>

/* HMAC (RFC 2104) over SHA-256 with the key's two padded blocks hashed once:
 * a signature then costs two SHA-256 blocks and two struct copies. OpenSSL's
 * one-shot HMAC() fetches the algorithm and rehashes the key on every call,
 * about ten times slower. The states are only read after creation, so any
 * number of threads may use a key at once. */
struct offload_link_key {
    SHA256_CTX inner; /* after H(key ^ ipad) */
    SHA256_CTX outer; /* after H(key ^ opad) */
};

static void padded_state(SHA256_CTX *ctx, const unsigned char *key, unsigned char pad)
{
    unsigned char block[SHA256_CBLOCK];
    for (size_t i = 0; i < sizeof(block); i++)
        block[i] = key[i] ^ pad;
    SHA256_Init(ctx);
    SHA256_Update(ctx, block, sizeof(block));
    OPENSSL_cleanse(block, sizeof(block));
}

int offload_link_key_create(const char *secret, size_t len, struct offload_link_key **out)
{
    /* A key longer than the block is replaced by its hash (RFC 2104 2). */
    unsigned char key[SHA256_CBLOCK] = {0};
    if (len > SHA256_CBLOCK)
        SHA256((const unsigned char *)secret, len, key);
    else
        memcpy(key, secret, len);
    struct offload_link_key *k = xcalloc(1, sizeof(*k));
    padded_state(&k->inner, key, 0x36);
    padded_state(&k->outer, key, 0x5c);
    OPENSSL_cleanse(key, sizeof(key));
    *out = k;
    return 0;
}

void offload_link_key_destroy(struct offload_link_key *k)
{
    if (!k)
        return;
    OPENSSL_cleanse(k, sizeof(*k));
    free(k);
}

static void base64url(const unsigned char *in, size_t n, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = abc[v >> 18];
        out[o++] = abc[(v >> 12) & 63];
        out[o++] = abc[(v >> 6) & 63];
        out[o++] = abc[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = abc[v >> 18];
        out[o++] = abc[(v >> 12) & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = abc[v >> 18];
        out[o++] = abc[(v >> 12) & 63];
        out[o++] = abc[(v >> 6) & 63];
    }
    out[o] = '\0';
}

int offload_link_sign(const struct offload_link_key *k, const char *epoch, size_t epoch_len,
                      const char *path, size_t path_len, char out[OFFLOAD_LINK_SIG_LEN + 1])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256_CTX ctx = k->inner;
    SHA256_Update(&ctx, epoch, epoch_len);
    SHA256_Update(&ctx, "\n", 1);
    SHA256_Update(&ctx, path, path_len);
    SHA256_Final(md, &ctx);
    ctx = k->outer;
    SHA256_Update(&ctx, md, sizeof(md));
    SHA256_Final(md, &ctx);
    base64url(md, sizeof(md), out);
    return 0;
}

struct link_params {
    const char *expires, *sig;
    size_t expires_len, sig_len;
    int expires_seen, sig_seen;
};

static void params_scan(const char *q, size_t len, struct link_params *lp)
{
    memset(lp, 0, sizeof(*lp));
    size_t i = 0;
    while (q && i < len) {
        const char *amp = memchr(q + i, '&', len - i);
        size_t end = amp ? (size_t)(amp - q) : len;
        const char *p = q + i;
        size_t n = end - i;
        if (n >= 8 && memcmp(p, "expires=", 8) == 0) {
            lp->expires = p + 8;
            lp->expires_len = n - 8;
            lp->expires_seen++;
        } else if (n >= 4 && memcmp(p, "sig=", 4) == 0) {
            lp->sig = p + 4;
            lp->sig_len = n - 4;
            lp->sig_seen++;
        }
        i = end + 1;
    }
}

static int epoch_parse(const char *p, size_t len, int64_t *out)
{
    if (len == 0 || len > OFFLOAD_LINK_EPOCH_MAX)
        return -EINVAL;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -EINVAL;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 0;
}

int offload_link_expires(const char *query, size_t len, int64_t *expires)
{
    struct link_params lp;
    params_scan(query, len, &lp);
    if (!lp.expires_seen)
        return -ENOENT;
    if (lp.expires_seen > 1)
        return -EINVAL;
    return epoch_parse(lp.expires, lp.expires_len, expires);
}

static bool sig_matches(const struct offload_link_key *k, const struct link_params *lp,
                        const char *path, size_t path_len)
{
    char want[OFFLOAD_LINK_SIG_LEN + 1];
    offload_link_sign(k, lp->expires, lp->expires_len, path, path_len, want);
    /* The length is public (always 43); the bytes are compared in constant time. */
    return CRYPTO_memcmp(want, lp->sig, OFFLOAD_LINK_SIG_LEN) == 0;
}

enum offload_link_verdict offload_link_check(const struct offload_link_key *key,
                                             const struct offload_link_key *previous,
                                             const char *path, size_t path_len, const char *query,
                                             size_t query_len, int64_t now)
{
    struct link_params lp;
    params_scan(query, query_len, &lp);
    if (!lp.expires_seen || !lp.sig_seen)
        return OFFLOAD_LINK_MISSING;
    int64_t expires;
    if (lp.expires_seen > 1 || lp.sig_seen > 1 || lp.sig_len != OFFLOAD_LINK_SIG_LEN ||
        epoch_parse(lp.expires, lp.expires_len, &expires) < 0)
        return OFFLOAD_LINK_BAD;
    if (!sig_matches(key, &lp, path, path_len) &&
        (!previous || !sig_matches(previous, &lp, path, path_len)))
        return OFFLOAD_LINK_BAD;
    return now < expires ? OFFLOAD_LINK_OK : OFFLOAD_LINK_EXPIRED;
}
