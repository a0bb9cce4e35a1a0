/* Unit tests for src/maint: Accept negotiation, rendering and escaping, the
 * bypass cookie, exemptions, the state file and --at/--until parsing. (The admin
 * protocol's tests are in test_admin.c.) */
#include "common/buf.h"
#include "common/conf.h"
#include "maint/maint.h"

#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static void test_negotiate(void)
{
#define NEG(s) maint_negotiate((s), strlen(s))
    ASSERT_EQ(maint_negotiate(NULL, 0), MAINT_HTML);
    ASSERT_EQ(NEG(""), MAINT_HTML);
    ASSERT_EQ(NEG("*/*"), MAINT_HTML);
    ASSERT_EQ(NEG("application/json"), MAINT_JSON);
    ASSERT_EQ(NEG("text/plain"), MAINT_PLAIN);
    ASSERT_EQ(NEG("TEXT/PLAIN"), MAINT_PLAIN);
    ASSERT_EQ(NEG("image/png"), MAINT_HTML); /* nothing acceptable: still the page */
    /* A browser. */
    ASSERT_EQ(NEG("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"), MAINT_HTML);
    /* An API client that also takes anything. */
    ASSERT_EQ(NEG("application/json, */*;q=0.1"), MAINT_JSON);
    ASSERT_EQ(NEG("application/json;q=0.5, text/plain;q=0.9"), MAINT_PLAIN);
    ASSERT_EQ(NEG("text/*;q=0.3, application/json;q=0.2"), MAINT_HTML);
    ASSERT_EQ(NEG("text/*, text/html;q=0"),
              MAINT_PLAIN); /* a specific q=0 beats the type wildcard */
    ASSERT_EQ(NEG("text/html;q=0, application/json;q=0"), MAINT_HTML); /* none acceptable */
    ASSERT_EQ(NEG("application/json ; q=1.000 , text/html ; q=0.999"), MAINT_JSON);
    ASSERT_EQ(NEG("application/json;q=2, text/plain;q=0.1"), MAINT_PLAIN); /* bad q dropped */
    ASSERT_EQ(NEG("application/json;charset=utf-8"), MAINT_JSON);
    ASSERT_EQ(NEG(",,, ;;"), MAINT_HTML);
    /* Quoted parameter values may hold ',' and ';': they split nothing. */
    ASSERT_EQ(NEG("text/plain;q=0.5;x=\"a, application/json;\""), MAINT_PLAIN);
    ASSERT_EQ(NEG("text/html;x=\";q=0\", application/json;q=0.5"), MAINT_HTML);
    ASSERT_EQ(NEG("text/plain;x=\"\\\";q=0\""), MAINT_PLAIN);
#undef NEG
}

static void render(enum maint_format f, const char *tpl, const char *msg, const char *retry,
                   bool is_date, struct buf *b)
{
    buf_reset(b);
    ASSERT_EQ(maint_render(b, f, tpl, tpl ? strlen(tpl) : 0, msg, retry, is_date), 0);
}

static void test_render(void)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    render(MAINT_HTML, "<p>{{message}}</p><i>{{retry_after}}</i>{{other}}{{", "a<b>&\"'c", "300",
           false, &b);
    ASSERT_STREQ(b.data, "<p>a&lt;b&gt;&amp;&quot;&#39;c</p><i>300</i>{{other}}{{");
    render(MAINT_HTML, "{{message}}{{message}}", "x", "1", false, &b);
    ASSERT_STREQ(b.data, "xx");
    render(MAINT_HTML, "no tags", "x", "1", false, &b);
    ASSERT_STREQ(b.data, "no tags");
    render(MAINT_HTML, NULL, "Be right back", "1", false, &b);
    ASSERT_TRUE(strstr(b.data, "<p>Be right back</p>") != NULL);
    render(MAINT_JSON, NULL, "say \"hi\"\n\x01\\", "300", false, &b);
    ASSERT_STREQ(b.data, "{\"status\":\"maintenance\",\"message\":\"say \\\"hi\\\"\\n\\u0001\\\\\","
                         "\"retry_after\":300}\n");
    render(MAINT_JSON, NULL, "m", "Wed, 25 Nov 2026 12:00:00 GMT", true, &b);
    ASSERT_STREQ(b.data, "{\"status\":\"maintenance\",\"message\":\"m\",\"retry_after\":\"Wed, 25 "
                         "Nov 2026 12:00:00 GMT\"}\n");
    render(MAINT_PLAIN, "ignored", "<raw>", "1", false, &b);
    ASSERT_STREQ(b.data, "<raw>\n");
    /* A page that does not fit the buffer's maximum is an error, not a crash. */
    struct buf small;
    buf_init(&small, 8);
    ASSERT_EQ(maint_render(&small, MAINT_HTML, "0123456789", 10, "m", "1", false), -ENOBUFS);
    buf_finish(&small);
    buf_finish(&b);
}

static void test_snapshot(void)
{
    struct maint_policy pol = {0};
    struct maint_window w = {0};
    w.mode = MAINT_ON;
    w.retry_after_s = 120;
    w.message = strdup("");
    w.page = strdup("<b>{{retry_after}}</b>");
    w.page_len = strlen(w.page);
    struct maint_snapshot *s = maint_snapshot_create(&pol, &w);
    ASSERT_STREQ(s->retry_after, "120");
    ASSERT_MEMEQ(s->body[MAINT_HTML].data, s->body[MAINT_HTML].len, "<b>120</b>");
    ASSERT_MEMEQ(s->body[MAINT_PLAIN].data, s->body[MAINT_PLAIN].len, MAINT_DEFAULT_MESSAGE "\n");
    ASSERT_STREQ(s->body[MAINT_JSON].content_type, "application/json");
    maint_snapshot_ref(s);
    maint_snapshot_unref(s);
    maint_snapshot_unref(s); /* freed here; ASan checks */

    w.until_ms = 1795608000000LL + 1; /* rounds up to the next second */
    s = maint_snapshot_create(&pol, &w);
    ASSERT_STREQ(s->retry_after, "Wed, 25 Nov 2026 12:00:01 GMT");
    ASSERT_MEMEQ(s->body[MAINT_HTML].data, s->body[MAINT_HTML].len,
                 "<b>Wed, 25 Nov 2026 12:00:01 GMT</b>");
    maint_snapshot_unref(s);
    maint_snapshot_unref(NULL);
    maint_window_finish(&w);
}

static void test_cookie(void)
{
    const char *secret = "k3y";
    char v[MAINT_COOKIE_VALUE_MAX];
    ASSERT_EQ(maint_cookie_sign(secret, 3, 2000000000, v, sizeof(v)), 0);
    /* HMAC-SHA256("k3y", "ferry-bypass:2000000000"), checked with `openssl dgst`. */
    ASSERT_STREQ(v, "2000000000.c8cc40ec57ba6120a8d55dd32e37a5a622bb21843039a18afdab571b0255ddca");
    size_t n = strlen(v);
    ASSERT_TRUE(maint_cookie_verify(secret, 3, v, n, 1999999999));
    ASSERT_TRUE(!maint_cookie_verify(secret, 3, v, n, 2000000000)); /* expired */
    ASSERT_TRUE(!maint_cookie_verify("k3Y", 3, v, n, 0));           /* other secret */
    char t[MAINT_COOKIE_VALUE_MAX];
    memcpy(t, v, n + 1);
    t[n - 1] = t[n - 1] == '0' ? '1' : '0'; /* tampered MAC */
    ASSERT_TRUE(!maint_cookie_verify(secret, 3, t, n, 0));
    memcpy(t, v, n + 1);
    t[0] = '3'; /* extended expiry */
    ASSERT_TRUE(!maint_cookie_verify(secret, 3, t, n, 0));
    ASSERT_TRUE(!maint_cookie_verify(secret, 3, v, n - 1, 0));
    ASSERT_TRUE(!maint_cookie_verify(secret, 3, "", 0, 0));
    ASSERT_TRUE(!maint_cookie_verify(secret, 3, ".", 1, 0));
    ASSERT_TRUE(!maint_cookie_verify(secret, 3, v + 11, n - 11, 0)); /* no expiry */
    t[0] = '0'; /* the same expiry and MAC spelled with a leading zero */
    memcpy(t + 1, v, n + 1);
    ASSERT_TRUE(!maint_cookie_verify(secret, 3, t, n + 1, 0));

    const char *val;
    size_t vlen;
    const char *hdr = "a=1; ferry_bypass=abc.def ; b=2";
    ASSERT_TRUE(maint_cookie_find(hdr, strlen(hdr), &val, &vlen));
    ASSERT_MEMEQ(val, vlen, "abc.def");
    hdr = "ferry_bypass=\"q\"";
    ASSERT_TRUE(maint_cookie_find(hdr, strlen(hdr), &val, &vlen));
    ASSERT_MEMEQ(val, vlen, "q");
    hdr = "xferry_bypass=1; ferry_bypassx=2";
    ASSERT_TRUE(!maint_cookie_find(hdr, strlen(hdr), &val, &vlen));
}

static enum maint_verdict decide(const struct maint_policy *pol, const char *path,
                                 const struct sockaddr *peer, const char *cookie)
{
    return maint_decide(pol, path, strlen(path), peer, cookie, cookie ? strlen(cookie) : 0, 1000);
}
static void test_decide(void)
{
    struct ferry_conf conf;
    conf_init_defaults(&conf);
    conf_finish(&conf);
    /* Build the policy by hand through a config file, the way the server does. */
    char path[] = "/tmp/ferry-test-maint-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "[maintenance]\nallow_paths = /healthz /api/status /dir/\n"
                       "allow_from = 10.0.0.0/8 2001:db8::/32\nbypass_secret = sec\n";
    ASSERT_EQ(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct buf err;
    buf_init(&err, 4096);
    conf_init_defaults(&conf);
    ASSERT_EQ(conf_load(&conf, path, &err), 0);
    unlink(path);
    buf_finish(&err);
    struct maint_policy pol;
    char msg[256];
    ASSERT_EQ(maint_policy_init(&pol, &conf, msg, sizeof(msg)), 0);
    conf_finish(&conf);

    struct sockaddr_in out4 = {.sin_family = AF_INET}, in4 = {.sin_family = AF_INET};
    inet_pton(AF_INET, "192.0.2.1", &out4.sin_addr);
    inet_pton(AF_INET, "10.1.2.3", &in4.sin_addr);
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6}, mapped = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "2001:db8::5", &in6.sin6_addr);
    inet_pton(AF_INET6, "::ffff:10.9.9.9", &mapped.sin6_addr);
    const struct sockaddr *o = (const struct sockaddr *)&out4;

#define DECIDE(path, peer, cookie) decide(&pol, path, peer, cookie)
    ASSERT_EQ(DECIDE("/", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("/healthz", o, NULL), MAINT_EXEMPT_PATH);
    ASSERT_EQ(DECIDE("/healthz/deep", o, NULL), MAINT_EXEMPT_PATH);
    ASSERT_EQ(DECIDE("/health", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("/api/status", o, NULL), MAINT_EXEMPT_PATH);
    /* Whole decoded segments, not raw byte prefixes. */
    ASSERT_EQ(DECIDE("/healthz/", o, NULL), MAINT_EXEMPT_PATH);
    ASSERT_EQ(DECIDE("/healthzX", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("/healthz.big", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("/api/statusfoo", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("/api/status/v2", o, NULL), MAINT_EXEMPT_PATH);
    ASSERT_EQ(DECIDE("/%68ealthz", o, NULL), MAINT_EXEMPT_PATH);
    ASSERT_EQ(DECIDE("/healthz%2Fdeep", o, NULL), MAINT_EXEMPT_PATH);
    ASSERT_EQ(DECIDE("/api%2fstatus", o, NULL), MAINT_EXEMPT_PATH);
    ASSERT_EQ(DECIDE("/healthz%58", o, NULL), MAINT_ANSWER);
    /* Not normalised: never exempt by path. */
    ASSERT_EQ(DECIDE("/healthz/../app", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("/healthz/%2e%2e/app", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("/healthz/./x", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("/healthz/..", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("/healthz/.", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("//healthz", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("/healthz//x", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("/healthz//", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("/healthz%2F%2F", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("/healthz/%00", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("/healthz/%zz", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("/healthz%", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("healthz", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("", o, NULL), MAINT_ANSWER);
    /* Dots inside a name are just a name. */
    ASSERT_EQ(DECIDE("/healthz/...", o, NULL), MAINT_EXEMPT_PATH);
    ASSERT_EQ(DECIDE("/healthz/.well", o, NULL), MAINT_EXEMPT_PATH);
    ASSERT_EQ(DECIDE("/", (const struct sockaddr *)&in4, NULL), MAINT_EXEMPT_FROM);
    ASSERT_EQ(DECIDE("/", (const struct sockaddr *)&in6, NULL), MAINT_EXEMPT_FROM);
    ASSERT_EQ(DECIDE("/", (const struct sockaddr *)&mapped, NULL), MAINT_EXEMPT_FROM);
    /* A path no prefix may exempt is still exempt by network or cookie. */
    ASSERT_EQ(DECIDE("/healthz/../app", (const struct sockaddr *)&in4, NULL), MAINT_EXEMPT_FROM);
    char v[MAINT_COOKIE_VALUE_MAX], cookie[160];
    maint_cookie_sign("sec", 3, 2000, v, sizeof(v));
    snprintf(cookie, sizeof(cookie), "x=y; ferry_bypass=%s", v);
    ASSERT_EQ(DECIDE("/", o, cookie), MAINT_EXEMPT_COOKIE);
    ASSERT_EQ(DECIDE("/healthz//x", o, cookie), MAINT_EXEMPT_COOKIE);
    maint_cookie_sign("other", 5, 2000, v, sizeof(v));
    snprintf(cookie, sizeof(cookie), "ferry_bypass=%s", v);
    ASSERT_EQ(DECIDE("/", o, cookie), MAINT_ANSWER);
    maint_cookie_sign("sec", 3, 999, v, sizeof(v)); /* expired at now=1000 */
    snprintf(cookie, sizeof(cookie), "ferry_bypass=%s", v);
    ASSERT_EQ(DECIDE("/", o, cookie), MAINT_ANSWER);
    /* A prefix ending in '/' covers what lies below it. */
    ASSERT_EQ(DECIDE("/dir/x", o, NULL), MAINT_EXEMPT_PATH);
    ASSERT_EQ(DECIDE("/dir/", o, NULL), MAINT_EXEMPT_PATH);
    ASSERT_EQ(DECIDE("/dir", o, NULL), MAINT_ANSWER);
    ASSERT_EQ(DECIDE("/dirx", o, NULL), MAINT_ANSWER);
#undef DECIDE
    maint_policy_finish(&pol);
    maint_policy_finish(NULL);
}

/* Write text as the state file at path and load it from dir into r. */
static int load_text(const char *dir, const char *path, const char *text, struct maint_window *r)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    fputs(text, f);
    fclose(f);
    return maint_state_load(dir, r);
}

static void test_state(void)
{
    char dir[] = "/tmp/ferry-test-state-XXXXXX";
    ASSERT_TRUE(mkdtemp(dir) != NULL);
    struct maint_window w = {0}, r = {0};
    ASSERT_EQ(maint_state_load(dir, &r), -ENOENT);
    w.mode = MAINT_ON;
    w.since_ms = 1700000000123;
    w.until_ms = 1700000999000;
    w.retry_after_s = 42;
    w.message = strdup("multi\nline \"quoted\" \xc3\xa9");
    w.page = malloc(5);
    memcpy(w.page, "a\0b\nc", 5);
    w.page_len = 5;
    ASSERT_EQ(maint_state_save(dir, &w), 0);
    ASSERT_EQ(maint_state_load(dir, &r), 0);
    ASSERT_EQ(r.mode, MAINT_ON);
    ASSERT_EQ(r.since_ms, w.since_ms);
    ASSERT_EQ(r.until_ms, w.until_ms);
    ASSERT_EQ(r.at_ms, 0);
    ASSERT_EQ(r.retry_after_s, 42);
    ASSERT_STREQ(r.message, w.message);
    ASSERT_EQ(r.page_len, 5);
    ASSERT_TRUE(r.page && memcmp(r.page, "a\0b\nc", 5) == 0);
    maint_window_finish(&r);

    char path[256];
    snprintf(path, sizeof(path), "%s/maintenance.state", dir);
    struct stat st;
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT_EQ(st.st_mode & 0777, 0600);
    snprintf(path, sizeof(path), "%s/.maintenance.state.tmp", dir);
    ASSERT_EQ(stat(path, &st), -1); /* no temporary left behind */

    /* Off, no page. */
    maint_window_finish(&w);
    w.message = strdup("");
    ASSERT_EQ(maint_state_save(dir, &w), 0);
    ASSERT_EQ(maint_state_load(dir, &r), 0);
    ASSERT_EQ(r.mode, MAINT_OFF);
    ASSERT_TRUE(r.page == NULL);
    maint_window_finish(&r);
    maint_window_finish(&w);

    /* A truncated file is corrupt, not half-loaded. */
    snprintf(path, sizeof(path), "%s/maintenance.state", dir);
    ASSERT_EQ(load_text(dir, path, "ferry-maintenance 1\nmode=on\nsince=1\n", &r), -EINVAL);
    ASSERT_EQ(load_text(dir, path,
                        "ferry-maintenance 1\nmode=on\nsince=1\nat=0\nuntil=0\nretry_after=1\n"
                        "message=\"\"\npage=10\nshort",
                        &r),
              -EINVAL);
    /* A number past INT64_MAX, or a bare sign, is corrupt too (not overflowed). */
    static const char *const since[] = {"9999999999999999999", "9223372036854775808", "-",
                                        "9223372036854775807"};
    for (size_t i = 0; i < sizeof(since) / sizeof(since[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text),
                 "ferry-maintenance 1\nmode=on\nsince=%s\nat=-5\nuntil=0\nretry_after=1\n"
                 "message=\"\"\npage=-1\n",
                 since[i]);
        ASSERT_EQ(load_text(dir, path, text, &r), i < 3 ? -EINVAL : 0);
    }
    ASSERT_EQ(r.since_ms, INT64_MAX);
    ASSERT_EQ(r.at_ms, -5);
    maint_window_finish(&r);
    unlink(path);
    ASSERT_EQ(maint_state_save("/nonexistent/dir", &w), -ENOENT);
    rmdir(dir);
}

static void test_parse_time(void)
{
    int64_t now = 1795608000000LL; /* 2026-11-25T12:00:00Z */
    int64_t t;
    ASSERT_EQ(maint_parse_time("+2s", now, &t), 0);
    ASSERT_EQ(t, now + 2000);
    ASSERT_EQ(maint_parse_time("+1500ms", now, &t), 0);
    ASSERT_EQ(t, now + 1500);
    ASSERT_EQ(maint_parse_time("90m", now, &t), 0);
    ASSERT_EQ(t, now + 90 * 60000);
    ASSERT_EQ(maint_parse_time("@1795608600", now, &t), 0);
    ASSERT_EQ(t, 1795608600000LL);
    ASSERT_EQ(maint_parse_time("2026-11-25T13:30:00Z", now, &t), 0);
    ASSERT_EQ(t, now + 90 * 60000);
    ASSERT_EQ(maint_parse_time("2026-11-25T13:30Z", now, &t), 0);
    ASSERT_EQ(t, now + 90 * 60000);
    setenv("TZ", "UTC", 1);
    tzset();
    ASSERT_EQ(maint_parse_time("13:00", now, &t), 0);
    ASSERT_EQ(t, now + 3600000);
    ASSERT_EQ(maint_parse_time("11:00", now, &t), 0); /* passed today: tomorrow */
    ASSERT_EQ(t, now + 23 * 3600000LL);
    ASSERT_EQ(maint_parse_time("", now, &t), -EINVAL);
    ASSERT_EQ(maint_parse_time("soon", now, &t), -EINVAL);
    ASSERT_EQ(maint_parse_time("+", now, &t), -EINVAL);
    ASSERT_EQ(maint_parse_time("@12x", now, &t), -EINVAL);
    ASSERT_EQ(maint_parse_time("2026-11-25T13:30:00+02", now, &t), -EINVAL);
}

/* Random short inputs from an alphabet of the syntax's special characters: the
 * parsers must stay inside their input (ASan) and keep their return contracts. */
static void test_random_inputs(void)
{
    static const char alpha[] = "ab=%0F \n\r\"\\{}[],:;/*q.1ferry_bypass\x01\xff";
    unsigned seed = 12345;
    for (int iter = 0; iter < 20000; iter++) {
        char in[64];
        seed = seed * 1103515245 + 12345;
        size_t n = (seed >> 16) % sizeof(in);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245 + 12345;
            in[i] = alpha[(seed >> 16) % (sizeof(alpha) - 1)];
        }
        /* Exact-size heap copies so ASan sees any overread. */
        char *p = malloc(n ? n : 1);
        memcpy(p, in, n);
        const char *v;
        size_t vlen;
        int f = maint_negotiate(p, n);
        ASSERT_TRUE(f >= 0 && f < MAINT_FORMAT_COUNT);
        if (maint_cookie_find(p, n, &v, &vlen))
            ASSERT_TRUE(v >= p && v + vlen <= p + n);
        ASSERT_TRUE(!maint_cookie_verify("k", 1, p, n, 0));
        free(p);
    }
}

int main(void)
{
    test_random_inputs();
    test_negotiate();
    test_render();
    test_snapshot();
    test_cookie();
    test_decide();
    test_state();
    test_parse_time();
    TEST_MAIN_END();
}
