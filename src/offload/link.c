#include "offload/link.h"

#include "common/alloc.h"
#include "common/sha256.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdbool.h>
#include <string.h>

/* HMAC-SHA256 with the key's two padded blocks hashed once (common/sha256.h):
 * a signature costs two SHA-256 blocks and two struct copies, where OpenSSL's
 * one-shot HMAC() is about ten times slower, against a budget of 0.5 us per
 * request under url_prefix (issue 11). The key is only read after creation,
 * so any number of threads may use it at once. */
struct offload_link_key {
    struct sha256_hmac_key hmac;
};

int offload_link_key_create(const char *secret, size_t len, struct offload_link_key **out)
{
    struct offload_link_key *k = xcalloc(1, sizeof(*k));
    sha256_hmac_key_init(&k->hmac, secret, len);
    *out = k;
    return 0;
}

void offload_link_key_destroy(struct offload_link_key *k)
{
    if (!k)
        return;
    sha256_hmac_key_wipe(&k->hmac);
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
    unsigned char md[SHA256_LEN];
    struct sha256_hmac h;
    sha256_hmac_begin(&h, &k->hmac);
    sha256_hmac_update(&h, epoch, epoch_len);
    sha256_hmac_update(&h, "\n", 1);
    sha256_hmac_update(&h, path, path_len);
    sha256_hmac_end(&h, md);
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
