/* Store: digests and ETags, the dir backend (atomic writes, sidecar, verify,
 * conditional create, ranges), S3 helpers (XML errors, retry policy, backoff)
 * and credential resolution order. */
#include "common/alloc.h"
#include "common/conf.h"
#include "common/range.h"
#include "common/timeutil.h"
#include "store/creds.h"
#include "store/dir.h"
#include "store/s3.h"
#include "store/sigv4.h"
#include "store/store.h"

#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/ferry-test-store-XXXXXX";

static int make_file(const char *name, const void *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, data, len) != (ssize_t)len)
        abort();
    return fd;
}

static void test_digest_etag(void)
{
    /* 12 bytes with 5-byte parts above a 10-byte threshold: 3 parts. */
    int fd = make_file("d", "hello world!", 12);
    struct store_digest d;
    ASSERT_EQ(store_digest_fd(fd, 100, 5, &d), 0);
    ASSERT_EQ(d.size, 12);
    ASSERT_STREQ(d.etag, "fc3ff98e8c6a0d3087d515c0473f8677"); /* md5("hello world!") */
    ASSERT_EQ(store_digest_fd(fd, 10, 5, &d), 0);
    unsigned char parts[48], md[16];
    EVP_Digest("hello", 5, parts, NULL, EVP_md5(), NULL);
    EVP_Digest(" worl", 5, parts + 16, NULL, EVP_md5(), NULL);
    EVP_Digest("d!", 2, parts + 32, NULL, EVP_md5(), NULL);
    EVP_Digest(parts, 48, md, NULL, EVP_md5(), NULL);
    char want[48];
    for (int i = 0; i < 16; i++)
        snprintf(want + 2 * i, 3, "%02x", md[i]);
    strcat(want, "-3");
    ASSERT_STREQ(d.etag, want);
    close(fd);
}

static struct store *dir_store(int conditional)
{
    struct ferry_conf c;
    conf_init_defaults(&c);
    free(c.store.path);
    c.store.path = xasprintf("%s/objects", tmpdir);
    c.store.conditional_create = conditional;
    struct store *s = NULL;
    struct store_error err;
    ASSERT_EQ(store_create(&c, NULL, &s, &err), 0);
    conf_finish(&c);
    return s;
}

static void read_back(struct store *s, const char *key, const char *range, const char *want)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/out", tmpdir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    struct store_error err;
    ASSERT_EQ(store_get(s, key, range, fd, &err), 0);
    char buf[256] = {0};
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    ASSERT_EQ(n, (ssize_t)strlen(want));
    ASSERT_STREQ(buf, want);
    close(fd);
}

/* The dir store answers a Range exactly as static files do (common/range.h):
 * invalid or multi-range headers give the whole object, never a 416. */
static void test_dir_store_ranges(void)
{
    struct store *s = dir_store(0);
    struct store_error err;
    int fd = make_file("r", "0123456789", 10);
    struct store_digest d;
    ASSERT_EQ(store_digest_fd(fd, 0, 0, &d), 0);
    ASSERT_EQ(store_put_file(s, "r.txt", fd, &d, NULL, &err), 0);
    close(fd);
    static const struct {
        const char *range;
        const char *want; /* NULL: -ERANGE (416) */
    } cases[] = {
        {"bytes=2-4", "234"},
        {"bytes=7-", "789"},
        {"bytes=-2", "89"},
        {"bytes=0-", "0123456789"},
        {"bytes=8-100", "89"},
        {"bytes=10-", NULL},
        {"bytes=-0", NULL},
        {"bytes= 1-2 ", "12"},
        {"bytes=+1-2", "0123456789"},
        {"bytes=-+2", "0123456789"},
        {"bytes=1- 2", "0123456789"},
        {"bytes=0-1,5-6", "0123456789"},
        {"bytes=5-1", "0123456789"},
        {"items=0-1", "0123456789"},
        {"bytes=", "0123456789"},
        {"", "0123456789"},
        {"bytes=99999999999999999999-", "0123456789"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t off, len;
        enum range_outcome o = range_parse(cases[i].range, strlen(cases[i].range), 10, &off, &len);
        ASSERT_EQ(o == RANGE_UNSATISFIABLE, cases[i].want == NULL);
        if (cases[i].want) {
            read_back(s, "r.txt", cases[i].range, cases[i].want);
        } else if (store_get(s, "r.txt", cases[i].range, 1, &err) != -ERANGE) {
            TEST_FAIL("store_get(range \"%s\") is not -ERANGE", cases[i].range);
        }
    }
    store_destroy(s);
}

/* Record which directories are fsynced: this definition wins over libc's for
 * the store code linked into this test. */
static char synced[16][512];
static int n_synced;

int fsync(int fd)
{
    char link[64], target[512];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    struct stat st;
    if (n > 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) && n_synced < 16) {
        target[n] = '\0';
        snprintf(synced[n_synced++], sizeof(synced[0]), "%s", target);
    }
    return (int)syscall(SYS_fsync, fd);
}

static bool was_synced(const char *rel)
{
    char want[600];
    snprintf(want, sizeof(want), "%s/%s", tmpdir, rel);
    for (int i = 0; i < n_synced; i++)
        if (strcmp(synced[i], want) == 0)
            return true;
    return false;
}

/* Directories a put creates are fsynced into their parents, so that the
 * object survives a crash together with the path to it. */
static void test_dir_store_syncs_new_dirs(void)
{
    struct store *s = dir_store(0);
    struct store_error err;
    int fd = make_file("n", "xyz", 3);
    struct store_digest d;
    ASSERT_EQ(store_digest_fd(fd, 0, 0, &d), 0);
    n_synced = 0;
    ASSERT_EQ(store_put_file(s, "new1/new2/obj", fd, &d, NULL, &err), 0);
    ASSERT_TRUE(was_synced("objects"));           /* holds the new new1 */
    ASSERT_TRUE(was_synced("objects/new1"));      /* holds the new new2 */
    ASSERT_TRUE(was_synced("objects/new1/new2")); /* holds obj */
    store_destroy(s);
    close(fd);
}

/* Create objects/<dir>/<name> with its mtime age_s seconds in the past. */
static void make_temp(const char *dir, const char *name, long age_s)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/objects/%s/%s", tmpdir, dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT_TRUE(fd >= 0);
    close(fd);
    struct timespec ts[2] = {{.tv_sec = time(NULL) - age_s}, {.tv_sec = time(NULL) - age_s}};
    ASSERT_EQ(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static bool temp_exists(const char *dir, const char *name)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/objects/%s/%s", tmpdir, dir, name);
    return access(path, F_OK) == 0;
}

/* Temp files left by a crash are removed on the next put into their directory,
 * those of a live writer (or too young to judge) are not; see dir.h's rule. */
static void test_dir_store_stale_temps(void)
{
    struct store *s = dir_store(0);
    struct store_error err;
    int fd = make_file("t", "abc", 3);
    struct store_digest d;
    ASSERT_EQ(store_digest_fd(fd, 0, 0, &d), 0);
    ASSERT_EQ(store_put_file(s, "sw/first", fd, &d, NULL, &err), 0);
    store_destroy(s);

    /* A pid that is surely gone: a child we started and reaped. */
    pid_t dead = fork();
    if (dead == 0)
        _exit(0);
    ASSERT_TRUE(dead > 0);
    waitpid(dead, NULL, 0);
    char stale[64], young[64], live[64], notours[64];
    snprintf(stale, sizeof(stale), ".ferry-tmp.%d.aB3xYz", (int)dead);
    snprintf(young, sizeof(young), ".ferry-tmp.%d.cD4xYz", (int)dead);
    snprintf(live, sizeof(live), ".ferry-tmp.%d.eF5xYz", (int)getpid());
    snprintf(notours, sizeof(notours), ".ferry-tmp.%d.toolong", (int)dead);
    long old = DIR_STORE_TEMP_STALE_AGE_S + 60;
    make_temp("sw", stale, old);
    make_temp("sw", young, DIR_STORE_TEMP_STALE_AGE_S - 60);
    make_temp("sw", live, old);
    make_temp("sw", notours, old);
    make_temp("sw", ".ferry-tmp.gH6xYz", DIR_STORE_TEMP_UNTAGGED_AGE_S + 60); /* untagged, old */
    make_temp("sw", ".ferry-tmp.iJ7xYz", DIR_STORE_TEMP_UNTAGGED_AGE_S - 60); /* untagged, young */
    make_temp("sw", "other.tmp", DIR_STORE_TEMP_UNTAGGED_AGE_S + 60);

    /* A new store object (a restart after the crash) sweeps on its first put. */
    s = dir_store(0);
    ASSERT_EQ(store_put_file(s, "sw/second", fd, &d, NULL, &err), 0);
    ASSERT_TRUE(!temp_exists("sw", stale));
    ASSERT_TRUE(!temp_exists("sw", ".ferry-tmp.gH6xYz"));
    ASSERT_TRUE(temp_exists("sw", young));
    ASSERT_TRUE(temp_exists("sw", live));
    ASSERT_TRUE(temp_exists("sw", notours));
    ASSERT_TRUE(temp_exists("sw", ".ferry-tmp.iJ7xYz"));
    ASSERT_TRUE(temp_exists("sw", "other.tmp"));
    read_back(s, "sw/first", NULL, "abc");
    read_back(s, "sw/second", NULL, "abc");
    store_destroy(s);
    close(fd);
}

static void test_dir_store(void)
{
    struct store *s = dir_store(0);
    struct store_error err;
    int fd = make_file("a", "0123456789", 10);
    struct store_digest d;
    ASSERT_EQ(store_digest_fd(fd, 0, 0, &d), 0);
    ASSERT_EQ(store_put_file(s, "x/y/z.txt", fd, &d, NULL, &err), 0);
    read_back(s, "x/y/z.txt", NULL, "0123456789");
    read_back(s, "x/y/z.txt", "bytes=2-4", "234");
    read_back(s, "x/y/z.txt", "bytes=7-", "789");
    read_back(s, "x/y/z.txt", "bytes=-2", "89");
    ASSERT_EQ(store_get(s, "x/y/z.txt", "bytes=10-", 1, &err), -ERANGE);
    ASSERT_EQ(store_verify(s, "x/y/z.txt", &d, &err), 0);
    struct store_info info;
    ASSERT_EQ(store_head(s, "x/y/z.txt", &info, &err), 0);
    ASSERT_EQ(info.size, 10);
    ASSERT_STREQ(info.etag, "781e5e245d69b566979b86e28d23f2c7");

    /* No temp files are left behind. */
    char dirpath[512];
    snprintf(dirpath, sizeof(dirpath), "%s/objects/x/y", tmpdir);
    DIR *dir = opendir(dirpath);
    int entries = 0;
    for (struct dirent *e; dir && (e = readdir(dir));)
        if (e->d_name[0] != '.' || strncmp(e->d_name, ".ferry-tmp", 10) == 0)
            entries++;
    closedir(dir);
    ASSERT_EQ(entries, 2); /* z.txt and z.txt.ferry-sum */

    /* Other bytes under the same name: verify says so. */
    int fd2 = make_file("b", "0123456780", 10);
    struct store_digest d2;
    ASSERT_EQ(store_digest_fd(fd2, 0, 0, &d2), 0);
    ASSERT_EQ(store_verify(s, "x/y/z.txt", &d2, &err), -EBADMSG);
    ASSERT_STREQ(err.code, "ChecksumMismatch");

    /* A digest that does not describe the file is refused, nothing stored. */
    ASSERT_EQ(store_put_file(s, "x/other", fd2, &d, NULL, &err), -EBADMSG);
    ASSERT_EQ(store_head(s, "x/other", &info, &err), -ENOENT);

    /* Tampering with the stored object is caught by verify. */
    char objpath[512];
    snprintf(objpath, sizeof(objpath), "%s/objects/x/y/z.txt", tmpdir);
    int t = open(objpath, O_WRONLY);
    ASSERT_EQ(pwrite(t, "X", 1, 0), 1);
    close(t);
    ASSERT_EQ(store_verify(s, "x/y/z.txt", &d, &err), -EBADMSG);

    /* Keys that would escape the root or collide with sidecars are refused. */
    const char *bad[] = {"",    "/abs",        "a/../b",        "..", "a//b", "./a",
                         "a/.", "x.ferry-sum", ".ferry-tmp.abc"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ASSERT_EQ(dir_store_check_key(bad[i]), -EINVAL);
        ASSERT_EQ(store_put_file(s, bad[i], fd, &d, NULL, &err), -EINVAL);
    }
    ASSERT_EQ(dir_store_check_key("a/b.c/..d"), 0);

    ASSERT_EQ(store_delete(s, "x/y/z.txt", &err), 0);
    ASSERT_EQ(store_head(s, "x/y/z.txt", &info, &err), -ENOENT);
    ASSERT_EQ(store_delete(s, "x/y/z.txt", &err), 0);
    struct buf url;
    buf_init(&url, 1024);
    ASSERT_EQ(store_presign_get(s, "k", 60, &url), -EOPNOTSUPP);
    buf_finish(&url);
    store_destroy(s);

    /* Conditional create: same bytes succeed, other bytes are refused and the
     * stored object and its sidecar stay as they were. */
    s = dir_store(1);
    ASSERT_EQ(store_put_file(s, "c", fd, &d, NULL, &err), 0);
    ASSERT_EQ(store_put_file(s, "c", fd, &d, NULL, &err), 0);
    ASSERT_EQ(store_put_file(s, "c", fd2, &d2, NULL, &err), -EEXIST);
    ASSERT_EQ(err.http_status, 412);
    ASSERT_EQ(store_verify(s, "c", &d, &err), 0);
    read_back(s, "c", NULL, "0123456789");
    store_destroy(s);
    close(fd);
    close(fd2);
}

static void test_s3_helpers(void)
{
    const char *xml = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code>"
                      "<Message>a &amp; b &lt;c&gt; &quot;d&quot;</Message></Error>";
    char out[64];
    ASSERT_EQ(s3_xml_text(xml, strlen(xml), "Code", out, sizeof(out)), 0);
    ASSERT_STREQ(out, "SlowDown");
    ASSERT_EQ(s3_xml_text(xml, strlen(xml), "Message", out, sizeof(out)), 0);
    ASSERT_STREQ(out, "a & b <c> \"d\"");
    ASSERT_EQ(s3_xml_text(xml, strlen(xml), "UploadId", out, sizeof(out)), -ENOENT);
    char tiny[4];
    ASSERT_EQ(s3_xml_text(xml, strlen(xml), "Code", tiny, sizeof(tiny)), 0);
    ASSERT_STREQ(tiny, "Slo");

    ASSERT_TRUE(s3_code_is_retryable("SlowDown"));
    ASSERT_TRUE(s3_code_is_retryable("InternalError"));
    ASSERT_TRUE(s3_code_is_retryable("RequestTimeout"));
    ASSERT_TRUE(!s3_code_is_retryable("AccessDenied"));
    ASSERT_TRUE(!s3_code_is_retryable("SignatureDoesNotMatch"));
    ASSERT_TRUE(!s3_code_is_retryable("RequestTimeTooSkewed"));
    ASSERT_TRUE(!s3_code_is_retryable("NoSuchBucket"));

    /* Full jitter: within [0, min(max, base << attempt)], and not constant. */
    uint64_t seed = 42;
    unsigned maxseen = 0, minseen = ~0u;
    for (unsigned attempt = 0; attempt < 12; attempt++) {
        unsigned cap = 100u << attempt;
        if (cap > 2000)
            cap = 2000;
        for (int i = 0; i < 200; i++) {
            unsigned ms = s3_backoff_ms(attempt, 100, 2000, &seed);
            ASSERT_TRUE(ms <= cap);
            if (attempt == 11) {
                maxseen = ms > maxseen ? ms : maxseen;
                minseen = ms < minseen ? ms : minseen;
            }
        }
    }
    ASSERT_TRUE(maxseen > 1500 && minseen < 500);
}

/* s3_store_create() on an endpoint: returns its result, err.code in code. */
static int s3_endpoint(const char *endpoint, char *code, size_t codelen)
{
    struct ferry_conf c;
    conf_init_defaults(&c);
    free(c.store.endpoint);
    c.store.endpoint = xstrdup(endpoint);
    free(c.store.bucket);
    c.store.bucket = xstrdup("b");
    free(c.store.access_key);
    c.store.access_key = xstrdup("AK");
    free(c.store.secret_key);
    c.store.secret_key = xstrdup("SK");
    struct store *s = NULL;
    struct store_error err;
    memset(&err, 0, sizeof(err));
    int r = s3_store_create(&c, &s, &err);
    snprintf(code, codelen, "%s", err.code);
    if (r == 0)
        store_destroy(s);
    conf_finish(&c);
    return r;
}

static void test_s3_endpoint_scheme(void)
{
    char code[64];
    ASSERT_EQ(s3_endpoint("http://127.0.0.1:9000", code, sizeof(code)), 0);
    ASSERT_EQ(s3_endpoint("https://s3.example/base/", code, sizeof(code)), 0);
    /* Only the whole scheme counts: prefixes of "http"/"https" are refused. */
    const char *bad[] = {"h://host",   "://host", "htt://host",   "httpx://host",
                         "ftp://host", "http://", "http:///path", "host"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ASSERT_EQ(s3_endpoint(bad[i], code, sizeof(code)), -EINVAL);
        ASSERT_STREQ(code, "InvalidConfig");
    }
}

/* A refusal names keys, profiles and files, never a secret. */
static void assert_no_secret(const char *why)
{
    const char *secrets[] = {"defsecret", "othersecret", "othertoken",
                             "envsecret", "envtoken",    "cfgsecret"};
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        ASSERT_TRUE(strstr(why, secrets[i]) == NULL);
}

static void test_creds_order(void)
{
    char why[256];
    struct creds c;
    char file[512];
    snprintf(file, sizeof(file), "%s/credentials", tmpdir);
    FILE *f = fopen(file, "w");
    fputs("[default]\naws_access_key_id = DEFAULTAK\naws_secret_access_key = defsecret\n"
          "[other]\naws_access_key_id = OTHERAK\naws_secret_access_key = othersecret\n"
          "aws_session_token = othertoken\n[half]\naws_access_key_id = HALF\n",
          f);
    fclose(f);
    setenv("AWS_SHARED_CREDENTIALS_FILE", file, 1);
    unsetenv("AWS_PROFILE");
    setenv("AWS_ACCESS_KEY_ID", "ENVAK", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    setenv("AWS_SESSION_TOKEN", "envtoken", 1);

    ASSERT_EQ(creds_resolve("CFGAK", "cfgsecret", NULL, NULL, &c, why, sizeof(why)), 0);
    ASSERT_STREQ(c.access_key, "CFGAK");
    ASSERT_TRUE(c.session_token == NULL);
    ASSERT_STREQ(c.source, "config");
    creds_finish(&c);
    ASSERT_EQ(creds_resolve("CFGAK", "", NULL, NULL, &c, why, sizeof(why)), -EINVAL);
    assert_no_secret(why);
    ASSERT_EQ(creds_resolve("", "cfgsecret", NULL, NULL, &c, why, sizeof(why)), -EINVAL);
    assert_no_secret(why);

    ASSERT_EQ(creds_resolve("", "", NULL, NULL, &c, why, sizeof(why)), 0);
    ASSERT_STREQ(c.access_key, "ENVAK");
    ASSERT_STREQ(c.session_token, "envtoken");
    creds_finish(&c);

    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");
    ASSERT_EQ(creds_resolve(NULL, NULL, NULL, NULL, &c, why, sizeof(why)), 0);
    ASSERT_STREQ(c.access_key, "DEFAULTAK");
    creds_finish(&c);
    setenv("AWS_PROFILE", "other", 1);
    ASSERT_EQ(creds_resolve(NULL, NULL, NULL, NULL, &c, why, sizeof(why)), 0);
    ASSERT_STREQ(c.access_key, "OTHERAK");
    ASSERT_STREQ(c.session_token, "othertoken");
    ASSERT_STREQ(c.source, "file:other");
    creds_finish(&c);
    ASSERT_EQ(creds_resolve(NULL, NULL, NULL, "default", &c, why, sizeof(why)), 0);
    ASSERT_STREQ(c.access_key, "DEFAULTAK");
    creds_finish(&c);
    ASSERT_EQ(creds_resolve(NULL, NULL, NULL, "half", &c, why, sizeof(why)), -EINVAL);
    ASSERT_TRUE(strstr(why, "half") != NULL);
    assert_no_secret(why);
    ASSERT_EQ(creds_resolve(NULL, NULL, NULL, "missing", &c, why, sizeof(why)), -ENOENT);
    ASSERT_TRUE(strstr(why, "missing") != NULL);
    assert_no_secret(why);
    unsetenv("AWS_PROFILE");
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
}

static void write_creds(const char *file, const char *ak, const char *sk, const char *token)
{
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s.tmp", file);
    FILE *f = fopen(tmp, "w");
    fprintf(f, "[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", ak, sk);
    if (token)
        fprintf(f, "aws_session_token = %s\n", token);
    fclose(f);
    ASSERT_EQ(rename(tmp, file), 0); /* as credential agents replace it */
}

/* Session credentials rotated in the file while running: a look (at most once a
 * second) or a forced re-read after a refusal picks them up; config and
 * environment credentials never change. */
static void test_creds_refresh(void)
{
    char why[256], file[512];
    struct creds c;
    snprintf(file, sizeof(file), "%s/rotating", tmpdir);
    write_creds(file, "AK1", "secret1", "token1");
    setenv("AWS_SHARED_CREDENTIALS_FILE", file, 1);
    unsetenv("AWS_PROFILE");
    ASSERT_EQ(creds_resolve(NULL, NULL, NULL, NULL, &c, why, sizeof(why)), 0);
    ASSERT_STREQ(c.session_token, "token1");
    ASSERT_EQ(creds_refresh(&c, 1, why, sizeof(why)), 0); /* re-read: the same */
    write_creds(file, "AK1", "secret2", "token2");
    ASSERT_EQ(creds_refresh(&c, 0, why, sizeof(why)), 0); /* looked less than 1 s ago */
    ASSERT_STREQ(c.secret_key, "secret1");
    ASSERT_EQ(creds_refresh(&c, 1, why, sizeof(why)), 1);
    ASSERT_STREQ(c.secret_key, "secret2");
    ASSERT_STREQ(c.session_token, "token2");
    ASSERT_STREQ(c.source, "file:default");
    c.checked_ms -= 2000; /* a second later, unchanged: no re-read */
    ASSERT_EQ(creds_refresh(&c, 0, why, sizeof(why)), 0);
    write_creds(file, "AK2", "secret3", NULL);
    c.checked_ms -= 2000;
    ASSERT_EQ(creds_refresh(&c, 0, why, sizeof(why)), 1);
    ASSERT_STREQ(c.access_key, "AK2");
    ASSERT_TRUE(c.session_token == NULL);
    /* A file gone or broken keeps what worked. */
    ASSERT_EQ(unlink(file), 0);
    ASSERT_EQ(creds_refresh(&c, 1, why, sizeof(why)), -ENOENT);
    ASSERT_STREQ(c.access_key, "AK2");
    assert_no_secret(why);
    creds_finish(&c);
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
    ASSERT_EQ(creds_resolve("CFGAK", "cfgsecret", NULL, NULL, &c, why, sizeof(why)), 0);
    ASSERT_EQ(creds_refresh(&c, 1, why, sizeof(why)), 0);
    ASSERT_STREQ(c.access_key, "CFGAK");
    creds_finish(&c);
}

/* A presigning server sends the store nothing else: rotated session
 * credentials in the shared file must still reach its presigned URLs (a look
 * at most once a second), and the URL after rotation must be the one the new
 * credentials sign, made afresh without any cache. */
static void test_presign_follows_rotated_credentials(void)
{
    char file[512];
    snprintf(file, sizeof(file), "%s/presign-creds", tmpdir);
    write_creds(file, "AKROT", "first/secret", NULL);
    setenv("AWS_SHARED_CREDENTIALS_FILE", file, 1);
    unsetenv("AWS_PROFILE");
    struct ferry_conf c;
    conf_init_defaults(&c);
    c.store.type = STORE_S3;
    free(c.store.endpoint);
    c.store.endpoint = xstrdup("http://127.0.0.1:9");
    free(c.store.bucket);
    c.store.bucket = xstrdup("b");
    free(c.store.prefix);
    c.store.prefix = xstrdup("p/");
    struct store *s = NULL;
    struct store_error err;
    memset(&err, 0, sizeof(err));
    ASSERT_EQ(store_create(&c, NULL, &s, &err), 0);
    struct buf url, want;
    buf_init(&url, 64 * 1024);
    buf_init(&want, 64 * 1024);
    ASSERT_EQ(store_presign_get(s, "a b.jpg", 600, &url), 0);
    ASSERT_TRUE(strstr(url.data, "X-Amz-Credential=AKROT%2F") != NULL);
    ASSERT_TRUE(strstr(url.data, "X-Amz-Security-Token") == NULL);

    write_creds(file, "AKROT", "second/secret", "token+2");
    uint64_t deadline = time_mono_ms() + 5000;
    do {
        buf_reset(&url);
        ASSERT_EQ(store_presign_get(s, "a b.jpg", 600, &url), 0);
    } while (!strstr(url.data, "X-Amz-Security-Token=token%2B2") && time_mono_ms() < deadline);
    ASSERT_TRUE(strstr(url.data, "X-Amz-Security-Token=token%2B2") != NULL);
    /* The same URL from the new credentials at the URL's own X-Amz-Date. */
    const char *d = strstr(url.data, "X-Amz-Date=");
    ASSERT_TRUE(d != NULL);
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    ASSERT_TRUE(strptime(d + 11, "%Y%m%dT%H%M%SZ", &tm) != NULL);
    const struct sigv4_creds fresh = {"AKROT", "second/secret", "token+2", "us-east-1", "s3", NULL};
    const struct sigv4_request r = {
        .method = "GET", .host = "127.0.0.1:9", .path = "/b/p/a b.jpg", .when = timegm(&tm)};
    long ttl = strtol(strstr(url.data, "X-Amz-Expires=") + 14, NULL, 10);
    ASSERT_EQ(sigv4_presign_url(&r, &fresh, ttl, "http", &want), 0);
    ASSERT_STREQ(url.data, want.data);
    buf_finish(&url);
    buf_finish(&want);
    store_destroy(s);
    conf_finish(&c);
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
}

/* Session credentials from the environment carry their expiry. */
static void test_creds_expiry(void)
{
    time_t t = 0;
    ASSERT_EQ(creds_parse_expiry("2026-12-04T18:00:00Z", &t), 0);
    ASSERT_EQ(t, 1796407200);
    ASSERT_EQ(creds_parse_expiry("2026-12-04T18:00:00.123Z", &t), 0);
    ASSERT_EQ(t, 1796407200);
    ASSERT_EQ(creds_parse_expiry("2026-12-04T19:30:00+01:30", &t), 0);
    ASSERT_EQ(t, 1796407200);
    ASSERT_EQ(creds_parse_expiry("2026-12-04T16:00:00-02:00", &t), 0);
    ASSERT_EQ(t, 1796407200);
    t = 5;
    ASSERT_EQ(creds_parse_expiry("2026-12-04T18:00:00", &t), -EINVAL);
    ASSERT_EQ(creds_parse_expiry("2026-12-04 18:00:00Z", &t), -EINVAL);
    ASSERT_EQ(creds_parse_expiry("2026-12-04T18:00:00Zjunk", &t), -EINVAL);
    ASSERT_EQ(creds_parse_expiry("tomorrow", &t), -EINVAL);
    ASSERT_EQ(t, 5);

    char why[256];
    struct creds c;
    setenv("AWS_ACCESS_KEY_ID", "ENVAK", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    setenv("AWS_SESSION_TOKEN", "envtoken", 1);
    setenv("AWS_CREDENTIAL_EXPIRATION", "2026-12-04T18:00:00Z", 1);
    ASSERT_EQ(creds_resolve(NULL, NULL, NULL, NULL, &c, why, sizeof(why)), 0);
    ASSERT_EQ(c.expires, 1796407200);
    creds_finish(&c);
    setenv("AWS_CREDENTIAL_EXPIRATION", "soon", 1);
    ASSERT_EQ(creds_resolve(NULL, NULL, NULL, NULL, &c, why, sizeof(why)), -EINVAL);
    ASSERT_TRUE(strstr(why, "AWS_CREDENTIAL_EXPIRATION") != NULL);
    assert_no_secret(why);
    unsetenv("AWS_CREDENTIAL_EXPIRATION");
    ASSERT_EQ(creds_resolve(NULL, NULL, NULL, NULL, &c, why, sizeof(why)), 0);
    ASSERT_EQ(c.expires, 0);
    creds_finish(&c);
    /* The shared credentials file, as saml2aws writes it. */
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    char file[512];
    snprintf(file, sizeof(file), "%s/credentials-exp", tmpdir);
    FILE *f = fopen(file, "w");
    fputs("[default]\naws_access_key_id = ASIAFILE\naws_secret_access_key = filesecret\n"
          "aws_session_token = filetoken\nx_security_token_expires = 2026-12-04T18:00:00Z\n"
          "[bad]\naws_access_key_id = ASIAFILE\naws_secret_access_key = filesecret\n"
          "x_security_token_expires = later\n",
          f);
    fclose(f);
    setenv("AWS_SHARED_CREDENTIALS_FILE", file, 1);
    ASSERT_EQ(creds_resolve(NULL, NULL, NULL, NULL, &c, why, sizeof(why)), 0);
    ASSERT_STREQ(c.access_key, "ASIAFILE");
    ASSERT_EQ(c.expires, 1796407200);
    creds_finish(&c);
    ASSERT_EQ(creds_resolve(NULL, NULL, NULL, "bad", &c, why, sizeof(why)), -EINVAL);
    ASSERT_TRUE(strstr(why, "x_security_token_expires") != NULL);
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
    /* Long-lived credentials in the config never expire. */
    ASSERT_EQ(creds_resolve("CFGAK", "cfgsecret", NULL, NULL, &c, why, sizeof(why)), 0);
    ASSERT_EQ(c.expires, 0);
    creds_finish(&c);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");
}

int main(void)
{
    if (!mkdtemp(tmpdir))
        return 1;
    test_digest_etag();
    test_dir_store();
    test_dir_store_ranges();
    test_dir_store_stale_temps();
    test_dir_store_syncs_new_dirs();
    test_s3_helpers();
    test_s3_endpoint_scheme();
    test_creds_order();
    test_creds_refresh();
    test_presign_follows_rotated_credentials();
    test_creds_expiry();
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        return 1;
    TEST_MAIN_END();
}
