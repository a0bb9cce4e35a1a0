/* SigV4: the examples published in the Amazon S3 API reference
 * (sig-v4-header-based-auth.html, sigv4-query-string-auth.html), asserted as exact
 * signatures, plus the S3 canonicalisation rules. */
#include "store/sigv4.h"

#include "test.h"

#include <errno.h>

#include <string.h>

static const struct sigv4_creds example_creds = {"AKIAIOSFODNN7EXAMPLE",
                                                 "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                                                 NULL,
                                                 "us-east-1",
                                                 "s3",
                                                 NULL};

/* 20130524T000000Z */
static const time_t example_when = 1369353600;

static void expect_auth(const struct sigv4_request *r, const char *expected)
{
    struct buf b;
    buf_init(&b, 4096);
    ASSERT_EQ(sigv4_sign_header(r, &example_creds, &b), 0);
    ASSERT_STREQ(b.data, expected);
    buf_finish(&b);
}

static void test_get_object_range(void)
{
    const struct sigv4_kv headers[] = {{"Range", "bytes=0-9"}};
    struct sigv4_request r = {
        .method = "GET",
        .host = "examplebucket.s3.amazonaws.com",
        .path = "/test.txt",
        .headers = headers,
        .nheaders = 1,
        .payload_hash = SIGV4_EMPTY_SHA256,
        .when = example_when,
    };
    expect_auth(&r, "AWS4-HMAC-SHA256 "
                    "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                    "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                    "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

static void test_put_object(void)
{
    const char *body = "Welcome to Amazon S3.";
    char hash[65];
    sigv4_sha256_hex(body, strlen(body), hash);
    ASSERT_STREQ(hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    const struct sigv4_kv headers[] = {
        {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
        {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
    };
    /* The key is "test$file.text": '$' must be encoded once in the canonical URI. */
    struct sigv4_request r = {
        .method = "PUT",
        .host = "examplebucket.s3.amazonaws.com",
        .path = "/test$file.text",
        .headers = headers,
        .nheaders = 2,
        .payload_hash = hash,
        .when = example_when,
    };
    expect_auth(&r, "AWS4-HMAC-SHA256 "
                    "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                    "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
                    "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
}

static void test_get_lifecycle(void)
{
    const struct sigv4_kv query[] = {{"lifecycle", NULL}};
    struct sigv4_request r = {
        .method = "GET",
        .host = "examplebucket.s3.amazonaws.com",
        .path = "/",
        .query = query,
        .nquery = 1,
        .payload_hash = SIGV4_EMPTY_SHA256,
        .when = example_when,
    };
    expect_auth(&r, "AWS4-HMAC-SHA256 "
                    "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                    "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
                    "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
}

static void test_list_objects(void)
{
    /* Given out of order on purpose: the canonical query is sorted. */
    const struct sigv4_kv query[] = {{"prefix", "J"}, {"max-keys", "2"}};
    struct sigv4_request r = {
        .method = "GET",
        .host = "examplebucket.s3.amazonaws.com",
        .path = "/",
        .query = query,
        .nquery = 2,
        .payload_hash = SIGV4_EMPTY_SHA256,
        .when = example_when,
    };
    expect_auth(&r, "AWS4-HMAC-SHA256 "
                    "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                    "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
                    "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

static void test_presigned_url(void)
{
    struct sigv4_request r = {
        .method = "GET",
        .host = "examplebucket.s3.amazonaws.com",
        .path = "/test.txt",
        .when = example_when,
    };
    struct buf b;
    buf_init(&b, 4096);
    ASSERT_EQ(sigv4_presign(&r, &example_creds, 86400, &b), 0);
    ASSERT_STREQ(b.data,
                 "X-Amz-Algorithm=AWS4-HMAC-SHA256"
                 "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
                 "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
                 "&X-Amz-Signature="
                 "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
    buf_reset(&b);
    ASSERT_EQ(sigv4_presign(&r, &example_creds, 0, &b), -EINVAL);
    ASSERT_EQ(sigv4_presign(&r, &example_creds, SIGV4_MAX_EXPIRES + 1, &b), -EINVAL);
    ASSERT_EQ(sigv4_presign(&r, &example_creds, SIGV4_MAX_EXPIRES, &b), 0);
    buf_finish(&b);
}

static void test_uri_encode(void)
{
    struct buf b;
    buf_init(&b, 4096);
    const char key[] = "/a b+c=d%e~f//g/\xc3\xa9";
    ASSERT_EQ(sigv4_uri_encode(&b, key, strlen(key), 1), 0);
    ASSERT_STREQ(b.data, "/a%20b%2Bc%3Dd%25e~f//g/%C3%A9");
    buf_reset(&b);
    ASSERT_EQ(sigv4_uri_encode(&b, key, strlen(key), 0), 0);
    ASSERT_STREQ(b.data, "%2Fa%20b%2Bc%3Dd%25e~f%2F%2Fg%2F%C3%A9");
    buf_finish(&b);

    /* A buffer that cannot hold the result fails instead of truncating. */
    struct buf small;
    buf_init(&small, 4);
    ASSERT_EQ(sigv4_uri_encode(&small, " ", 1, 0), 0);
    ASSERT_EQ(sigv4_uri_encode(&small, " ", 1, 0), -ENOBUFS);
    buf_finish(&small);
}

static void test_session_token_and_whitespace(void)
{
    /* The token is signed as x-amz-security-token; header values are trimmed and
     * inner whitespace folded, so these two requests sign identically. */
    struct sigv4_creds c = example_creds;
    c.session_token = "token/with+chars=";
    const struct sigv4_kv h1[] = {{"X-Amz-Meta-Note", "  a   b\tc  "}};
    const struct sigv4_kv h2[] = {{"x-amz-meta-note", "a b c"}};
    struct sigv4_request r = {
        .method = "PUT",
        .host = "127.0.0.1:9000",
        .path = "/bucket/k",
        .headers = h1,
        .nheaders = 1,
        .when = example_when,
    };
    struct buf a, b;
    buf_init(&a, 4096);
    buf_init(&b, 4096);
    ASSERT_EQ(sigv4_sign_header(&r, &c, &a), 0);
    r.headers = h2;
    ASSERT_EQ(sigv4_sign_header(&r, &c, &b), 0);
    ASSERT_STREQ(a.data, b.data);
    ASSERT_TRUE(strstr(a.data, "x-amz-meta-note;x-amz-security-token") != NULL);
    buf_reset(&b);
    r.when++;
    ASSERT_EQ(sigv4_sign_header(&r, &c, &b), 0);
    ASSERT_TRUE(strcmp(a.data, b.data) != 0);
    /* Duplicate header names are refused rather than silently merged. */
    const struct sigv4_kv dup[] = {{"x-a", "1"}, {"X-A", "2"}};
    r.headers = dup;
    r.nheaders = 2;
    ASSERT_EQ(sigv4_sign_header(&r, &c, &b), -EINVAL);
    buf_finish(&a);
    buf_finish(&b);
}

/* The signing key is derived once per day and credential: many signatures on
 * one day derive it once, the next day once more, and every signature equals
 * the one made without the cache (AWS's example above). */
static void test_signing_key_cached_per_day(void)
{
    struct sigv4_key_cache kc;
    memset(&kc, 0, sizeof(kc));
    struct sigv4_creds c = example_creds;
    c.keys = &kc;
    struct sigv4_request r = {
        .method = "GET",
        .host = "examplebucket.s3.amazonaws.com",
        .path = "/test.txt",
        .when = example_when,
    };
    struct buf plain, cached;
    buf_init(&plain, 4096);
    buf_init(&cached, 4096);
    for (int i = 0; i < 100; i++) {
        r.when = example_when + i * 60; /* through the day's first hours */
        buf_reset(&plain);
        buf_reset(&cached);
        ASSERT_EQ(sigv4_presign(&r, &example_creds, 86400, &plain), 0);
        ASSERT_EQ(sigv4_presign(&r, &c, 86400, &cached), 0);
        ASSERT_STREQ(cached.data, plain.data);
        ASSERT_EQ(sigv4_sign_header(&r, &c, &cached), 0);
    }
    ASSERT_EQ(kc.derivations, 1);
    r.when = example_when;
    buf_reset(&cached);
    ASSERT_EQ(sigv4_presign(&r, &c, 86400, &cached), 0);
    ASSERT_STREQ(cached.data,
                 "X-Amz-Algorithm=AWS4-HMAC-SHA256"
                 "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
                 "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
                 "&X-Amz-Signature="
                 "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
    ASSERT_EQ(kc.derivations, 1);
    /* The next day: one derivation more, and the key of that day. */
    for (int i = 0; i < 10; i++) {
        r.when = example_when + 86400 + i;
        buf_reset(&plain);
        buf_reset(&cached);
        ASSERT_EQ(sigv4_presign(&r, &example_creds, 600, &plain), 0);
        ASSERT_EQ(sigv4_presign(&r, &c, 600, &cached), 0);
        ASSERT_STREQ(cached.data, plain.data);
    }
    ASSERT_EQ(kc.derivations, 2);
    /* Another region is another key. */
    c.region = "eu-west-3";
    ASSERT_EQ(sigv4_presign(&r, &c, 600, &cached), 0);
    ASSERT_EQ(kc.derivations, 3);
    sigv4_key_cache_clear(&kc);
    ASSERT_TRUE(kc.secret_key == NULL && kc.scope == NULL);
    buf_finish(&plain);
    buf_finish(&cached);
}

/* Presign p and sign h's header with c, through b: the query must end in
 * presig and the Authorization header in hdrsig. */
static void expect_pair(const struct sigv4_request *p, const struct sigv4_request *h,
                        const struct sigv4_creds *c, struct buf *b, const char *query,
                        const char *auth, const char *presig, const char *hdrsig)
{
    char want[1024];
    buf_reset(b);
    ASSERT_EQ(sigv4_presign(p, c, 86400, b), 0);
    snprintf(want, sizeof(want), "%s&X-Amz-Signature=%s", query, presig);
    ASSERT_STREQ(b->data, want);
    buf_reset(b);
    ASSERT_EQ(sigv4_sign_header(h, c, b), 0);
    snprintf(want, sizeof(want), "%s%s", auth, hdrsig);
    ASSERT_STREQ(b->data, want);
}

/* Credentials rotated between two signatures with one cache and no clear in
 * between (the same access key with a new secret, then a session token, then
 * another key, then back): each signature must be the one of the credentials
 * it was made with. Expected values: AWS's published examples for the first
 * credentials; botocore 1.29 (S3SigV4QueryAuth / S3SigV4Auth at
 * 20130524T000000Z) for the others. A cache that matched on the access key
 * and day alone would sign with the old secret's key here. */
static void test_signing_key_follows_rotated_credentials(void)
{
    struct sigv4_key_cache kc;
    memset(&kc, 0, sizeof(kc));
    struct sigv4_creds c = example_creds;
    c.keys = &kc;
    struct sigv4_request p = {
        .method = "GET",
        .host = "examplebucket.s3.amazonaws.com",
        .path = "/test.txt",
        .when = example_when,
    };
    const struct sigv4_kv range[] = {{"Range", "bytes=0-9"}};
    struct sigv4_request h = p;
    h.headers = range;
    h.nheaders = 1;
    h.payload_hash = SIGV4_EMPTY_SHA256;
    const char *query =
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host";
    const char *auth = "AWS4-HMAC-SHA256 "
                       "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                       "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=";
    char want[1024];
    struct buf b;
    buf_init(&b, 4096);

    expect_pair(&p, &h, &c, &b, query, auth,
                "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
                "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    ASSERT_EQ(kc.derivations, 1);

    /* The secret rotates, the access key stays: same day, same key id. */
    c.secret_key = "rotated/secret+KEY";
    expect_pair(&p, &h, &c, &b, query, auth,
                "f78abf7c2dca68a8cbf1aca907630a36d624b35130ab9c8c98a9950044c0f2ac",
                "095805600e6f1d4054c0839066fb94f0cb65c455cd48ecd628fcafb0c095d8bd");
    ASSERT_EQ(kc.derivations, 2);

    /* A session token appears: it is signed, and written after SignedHeaders. */
    c.session_token = "FQoGZXIvYXdzE//token+with/slash=";
    buf_reset(&b);
    ASSERT_EQ(sigv4_presign(&p, &c, 86400, &b), 0);
    snprintf(want, sizeof(want), "%s&X-Amz-Security-Token=%s&X-Amz-Signature=%s", query,
             "FQoGZXIvYXdzE%2F%2Ftoken%2Bwith%2Fslash%3D",
             "cad4991e8b3cf4c4a6bb91f724010553a790f14d9d06b35e475e5977cc26f165");
    ASSERT_STREQ(b.data, want);
    ASSERT_EQ(kc.derivations, 3);

    /* Another access key altogether. */
    c.access_key = "AKIAROTATEDEXAMPLE2";
    c.secret_key = "another/secret";
    c.session_token = NULL;
    buf_reset(&b);
    ASSERT_EQ(sigv4_presign(&p, &c, 86400, &b), 0);
    ASSERT_STREQ(b.data, "X-Amz-Algorithm=AWS4-HMAC-SHA256"
                         "&X-Amz-Credential=AKIAROTATEDEXAMPLE2%2F20130524%2Fus-east-1%2Fs3%2F"
                         "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400"
                         "&X-Amz-SignedHeaders=host&X-Amz-Signature="
                         "434b547e49e4bc39e88890a9bd2e06055ae486ce49a6d5f0a8e40084caddbc4e");
    ASSERT_EQ(kc.derivations, 4);

    /* And back to the first credentials: the full URL this time. */
    c = example_creds;
    c.keys = &kc;
    buf_reset(&b);
    ASSERT_EQ(sigv4_presign_url(&p, &c, 86400, "https", &b), 0);
    snprintf(want, sizeof(want), "https://examplebucket.s3.amazonaws.com/test.txt?%s%s", query,
             "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
    ASSERT_STREQ(b.data, want);
    ASSERT_EQ(kc.derivations, 5);
    /* Signing again with them uses the cache. */
    buf_reset(&b);
    ASSERT_EQ(sigv4_presign_url(&p, &c, 86400, "https", &b), 0);
    ASSERT_STREQ(b.data, want);
    ASSERT_EQ(kc.derivations, 5);
    sigv4_key_cache_clear(&kc);
    buf_finish(&b);
}

int main(void)
{
    test_get_object_range();
    test_put_object();
    test_get_lifecycle();
    test_list_objects();
    test_presigned_url();
    test_uri_encode();
    test_session_token_and_whitespace();
    test_signing_key_cached_per_day();
    test_signing_key_follows_rotated_credentials();
    TEST_MAIN_END();
}
