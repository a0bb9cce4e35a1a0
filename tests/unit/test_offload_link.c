/* Unit tests for src/offload/link.c: signatures against fixed vectors and the
 * verdicts of the check.
 *
 * The vectors were computed independently of ferry, with Python's hmac:
 *
 *   m = hmac.new(secret, epoch + b"\n" + path, hashlib.sha256).digest()
 *   base64.urlsafe_b64encode(m).rstrip(b"=")
 */
#include "offload/link.h"
#include "test.h"

#include <errno.h>
#include <string.h>

struct vector {
    const char *secret;
    size_t secret_len; /* 0: strlen */
    const char *epoch, *path, *sig;
};

static char k64[65], k65[66], k100[101];

static const struct vector vectors[] = {
    {"s3cr3t", 0, "1767225600", "/static/a b.jpg", "Svk0x7pKIAJSoGRq39m2Mqz3Pi20hEVXLp5jFFWKB-U"},
    {"s3cr3t", 0, "1767225601", "/static/a b.jpg", "cE1b8cunW0q5dM-mL14uyHBu5k8rVRDBl0oBZuvFFpk"},
    {"s3cr3t", 0, "1767225600", "/static/a+b.jpg", "RNESitV2A4PDAkGgIlHEdFx-Fs2-nrRWj7nkcZKGZGM"},
    {"another secret", 0, "1767225600", "/static/a b.jpg",
     "bzvA93AKFmLLqxeCVkAnw7AAdwcz1gOlXp3naZMOx_c"},
    /* A key longer than SHA-256's block is hashed first; one of exactly 64 is not. */
    {k100, 100, "2000000000", "/static/caf\xc3\xa9/\xf0\x9f\x98\x80 100%.png",
     "54ZqKX8qTiSWu-9Pmws0G3KESVyUfWefL-6XM1FM5uI"},
    {k64, 64, "1", "/static/x", "TnQn_QqgiLePcvhpYzjzxuDI92BqZQXFBVIrkM1ceKY"},
    {k65, 65, "1", "/static/x", "6OFWXvR7G-ZELZO6TjyUCwjDqzQOZ2Q3Q1oqwE9IrSM"},
};

static struct offload_link_key *key_make(const char *secret, size_t len)
{
    struct offload_link_key *k = NULL;
    ASSERT_EQ(offload_link_key_create(secret, len ? len : strlen(secret), &k), 0);
    return k;
}

static void test_vectors(void)
{
    memset(k64, 'k', 64);
    memset(k65, 'k', 65);
    memset(k100, 'k', 100);
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        const struct vector *v = &vectors[i];
        struct offload_link_key *k = key_make(v->secret, v->secret_len);
        char sig[OFFLOAD_LINK_SIG_LEN + 1];
        ASSERT_EQ(offload_link_sign(k, v->epoch, strlen(v->epoch), v->path, strlen(v->path), sig),
                  0);
        ASSERT_STREQ(sig, v->sig);
        ASSERT_EQ(strlen(sig), OFFLOAD_LINK_SIG_LEN);
        /* The same vector through the check, one second before its expiry. */
        char q[128];
        snprintf(q, sizeof(q), "expires=%s&sig=%s", v->epoch, v->sig);
        long long epoch = atoll(v->epoch);
        ASSERT_EQ(offload_link_check(k, NULL, v->path, strlen(v->path), q, strlen(q), epoch - 1),
                  OFFLOAD_LINK_OK);
        offload_link_key_destroy(k);
    }
}

static enum offload_link_verdict check(const struct offload_link_key *k,
                                       const struct offload_link_key *prev, const char *path,
                                       const char *q, int64_t now)
{
    return offload_link_check(k, prev, path, strlen(path), q, q ? strlen(q) : 0, now);
}

#define GOOD "Svk0x7pKIAJSoGRq39m2Mqz3Pi20hEVXLp5jFFWKB-U" /* s3cr3t, 1767225600, a b.jpg */
#define NOW 1767225000

static void test_verdicts(void)
{
    struct offload_link_key *k = key_make("s3cr3t", 0);
    struct offload_link_key *other = key_make("another secret", 0);
    const char *p = "/static/a b.jpg";
    ASSERT_EQ(check(k, NULL, p, "expires=1767225600&sig=" GOOD, NOW), OFFLOAD_LINK_OK);
    /* Order and other parameters do not matter. */
    ASSERT_EQ(check(k, NULL, p, "sig=" GOOD "&x=1&expires=1767225600&", NOW), OFFLOAD_LINK_OK);
    ASSERT_EQ(check(k, NULL, p, "a&&expires=1767225600&sig=" GOOD "&expiresx=1", NOW),
              OFFLOAD_LINK_OK);
    /* Expiry: good while now < EPOCH; a forged link is BAD, expired or not. */
    ASSERT_EQ(check(k, NULL, p, "expires=1767225600&sig=" GOOD, 1767225599), OFFLOAD_LINK_OK);
    ASSERT_EQ(check(k, NULL, p, "expires=1767225600&sig=" GOOD, 1767225600), OFFLOAD_LINK_EXPIRED);
    ASSERT_EQ(check(k, NULL, p, "expires=1767225600&sig=" GOOD, 1900000000), OFFLOAD_LINK_EXPIRED);
    ASSERT_EQ(check(k, NULL, p, "expires=1767225601&sig=" GOOD, NOW), OFFLOAD_LINK_BAD);
    ASSERT_EQ(check(k, NULL, p, "expires=1767225601&sig=" GOOD, 1900000000), OFFLOAD_LINK_BAD);
    /* EPOCH is signed as sent: leading zeros make another message. */
    ASSERT_EQ(check(k, NULL, p, "expires=01767225600&sig=" GOOD, NOW), OFFLOAD_LINK_BAD);
    /* The path is part of the message, byte for byte. */
    ASSERT_EQ(check(k, NULL, "/static/a+b.jpg", "expires=1767225600&sig=" GOOD, NOW),
              OFFLOAD_LINK_BAD);
    ASSERT_EQ(check(k, NULL, "/static/a b.jpgx", "expires=1767225600&sig=" GOOD, NOW),
              OFFLOAD_LINK_BAD);
    /* Missing parameters. */
    ASSERT_EQ(check(k, NULL, p, NULL, NOW), OFFLOAD_LINK_MISSING);
    ASSERT_EQ(check(k, NULL, p, "", NOW), OFFLOAD_LINK_MISSING);
    ASSERT_EQ(check(k, NULL, p, "sig=" GOOD, NOW), OFFLOAD_LINK_MISSING);
    ASSERT_EQ(check(k, NULL, p, "expires=1767225600", NOW), OFFLOAD_LINK_MISSING);
    ASSERT_EQ(check(k, NULL, p, "Expires=1767225600&sig=" GOOD, NOW), OFFLOAD_LINK_MISSING);
    /* Malformed or repeated ones. */
    ASSERT_EQ(check(k, NULL, p, "expires=&sig=" GOOD, NOW), OFFLOAD_LINK_BAD);
    ASSERT_EQ(check(k, NULL, p, "expires=-1&sig=" GOOD, NOW), OFFLOAD_LINK_BAD);
    ASSERT_EQ(check(k, NULL, p, "expires=1767225600x&sig=" GOOD, NOW), OFFLOAD_LINK_BAD);
    ASSERT_EQ(check(k, NULL, p, "expires=1234567890123456789&sig=" GOOD, NOW), OFFLOAD_LINK_BAD);
    ASSERT_EQ(check(k, NULL, p, "expires=1767225600&sig=" GOOD "=", NOW), OFFLOAD_LINK_BAD);
    ASSERT_EQ(check(k, NULL, p, "expires=1767225600&sig=" GOOD "&sig=" GOOD, NOW),
              OFFLOAD_LINK_BAD);
    ASSERT_EQ(check(k, NULL, p, "expires=1767225600&expires=1767225600&sig=" GOOD, NOW),
              OFFLOAD_LINK_BAD);
    ASSERT_EQ(check(k, NULL, p, "expires=1767225600&sig=", NOW), OFFLOAD_LINK_BAD);
    /* One character changed at either end of the signature. */
    ASSERT_EQ(check(k, NULL, p,
                    "expires=1767225600&sig=Tvk0x7pKIAJSoGRq39m2Mqz3Pi20hEVXLp5jFFWKB-U", NOW),
              OFFLOAD_LINK_BAD);
    ASSERT_EQ(check(k, NULL, p,
                    "expires=1767225600&sig=Svk0x7pKIAJSoGRq39m2Mqz3Pi20hEVXLp5jFFWKB-V", NOW),
              OFFLOAD_LINK_BAD);
    /* Rotation: a link made with the previous key passes only when it is given. */
    ASSERT_EQ(check(other, NULL, p, "expires=1767225600&sig=" GOOD, NOW), OFFLOAD_LINK_BAD);
    ASSERT_EQ(check(other, k, p, "expires=1767225600&sig=" GOOD, NOW), OFFLOAD_LINK_OK);
    ASSERT_EQ(check(other, k, p, "expires=1767225600&sig=" GOOD, 1767225600), OFFLOAD_LINK_EXPIRED);
    ASSERT_EQ(check(k, other, p,
                    "expires=1767225600&sig=bzvA93AKFmLLqxeCVkAnw7AAdwcz1gOlXp3naZMOx_c", NOW),
              OFFLOAD_LINK_OK);
    offload_link_key_destroy(k);
    offload_link_key_destroy(other);
    offload_link_key_destroy(NULL);
}

static void test_expires(void)
{
    int64_t e = 0;
    ASSERT_EQ(offload_link_expires("a=1&expires=42&sig=x", 20, &e), 0);
    ASSERT_EQ(e, 42);
    ASSERT_EQ(offload_link_expires(NULL, 0, &e), -ENOENT);
    ASSERT_EQ(offload_link_expires("expiresx=1", 10, &e), -ENOENT);
    ASSERT_EQ(offload_link_expires("expires=4x", 10, &e), -EINVAL);
    ASSERT_EQ(offload_link_expires("expires=1&expires=1", 19, &e), -EINVAL);
    /* The length bounds the scan: nothing past it is read. */
    ASSERT_EQ(offload_link_expires("expires=12345", 10, &e), 0);
    ASSERT_EQ(e, 12);
}

int main(void)
{
    test_vectors();
    test_verdicts();
    test_expires();
    TEST_MAIN_END();
}
