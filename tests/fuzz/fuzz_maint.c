/* libFuzzer target for maintenance mode's pure parts: Accept negotiation, the
 * bypass cookie, exemptions, the 503 bodies and --at/--until parsing.
 *
 * The input is split into fields at 0x1e (ASCII record separator):
 *   ACCEPT RS COOKIE RS PATH RS MESSAGE RS TEMPLATE RS TAIL
 * TAIL's bytes pick the clock, the peer address, the retry value and the
 * output limit. Invariants checked: negotiation ignores case and unknown
 * trailing ranges; verify accepts only values that re-sign to the same bytes
 * and have not expired; maint_decide's verdict has its stated reason; rendering
 * stays within the buf maximum, a failed render is a prefix of the full one,
 * HTML adds no markup from the message, JSON is well formed and carries the
 * message back, plain text is the message and a newline. An input that starts
 * like a state file is also loaded as one, and what loads must save and load
 * back the same. */
#include "common/buf.h"
#include "common/net.h"
#include "maint/maint.h"

#include "fuzz.h"

#include <jansson.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NFIELDS 6
#define SECRET "fuzz-secret"

struct field {
    char *p; /* malloc'd copy of exactly len bytes plus a NUL */
    size_t len;
    bool present;
};

static uint64_t tail_u64(const struct field *t, size_t off)
{
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++)
        v = v << 8 | (off + i < t->len ? (uint8_t)t->p[off + i] : 0);
    return v;
}

/* ---- Accept ---- */

static void check_negotiate(const struct field *f)
{
    enum maint_format r = maint_negotiate(f->p, f->len);
    CHECK((int)r >= 0 && r < MAINT_FORMAT_COUNT);
    CHECK(maint_negotiate(NULL, 0) == MAINT_HTML);

    char *upper = malloc(f->len + 16);
    CHECK(upper);
    for (size_t i = 0; i < f->len; i++)
        upper[i] = (char)toupper((unsigned char)f->p[i]);
    /* Media ranges and the q parameter are case-insensitive. */
    CHECK(maint_negotiate(upper, f->len) == r);
    /* A range that matches nothing changes nothing. */
    memcpy(upper, f->p, f->len);
    memcpy(upper + f->len, ",image/x-y", 10);
    CHECK(maint_negotiate(upper, f->len + 10) == r);
    free(upper);
}

/* ---- the bypass cookie ---- */

/* Did verify accept exactly what maint_cookie_sign produces for a live time? */
static void check_accepted(const char *v, size_t vlen, int64_t now_s)
{
    const char *dot = memchr(v, '.', vlen);
    CHECK(dot && dot > v && dot - v <= 19);
    int64_t exp = 0;
    for (const char *p = v; p < dot; p++) {
        CHECK(*p >= '0' && *p <= '9');
        exp = exp * 10 + (*p - '0');
    }
    CHECK(exp > now_s);
    char again[MAINT_COOKIE_VALUE_MAX];
    CHECK(maint_cookie_sign(SECRET, strlen(SECRET), exp, again, sizeof(again)) == 0);
    CHECK(strlen(again) == vlen && memcmp(again, v, vlen) == 0);
}

static void check_cookie(const struct field *c, int64_t now_s, uint64_t delta)
{
    const char *v = NULL;
    size_t vlen = 0;
    if (maint_cookie_find(c->p, c->len, &v, &vlen)) {
        CHECK(v >= c->p && vlen <= c->len && (size_t)(v - c->p) <= c->len - vlen);
        if (maint_cookie_verify(SECRET, strlen(SECRET), v, vlen, now_s))
            check_accepted(v, vlen, now_s);
    }
    if (maint_cookie_verify(SECRET, strlen(SECRET), c->p, c->len, now_s))
        check_accepted(c->p, c->len, now_s);

    /* What sign produces verifies until it expires, and not with a flipped byte. */
    int64_t exp = now_s + 1 + (int64_t)(delta % 100000000);
    char good[MAINT_COOKIE_VALUE_MAX];
    CHECK(maint_cookie_sign(SECRET, strlen(SECRET), exp, good, sizeof(good)) == 0);
    size_t glen = strlen(good);
    CHECK(maint_cookie_verify(SECRET, strlen(SECRET), good, glen, now_s));
    CHECK(maint_cookie_verify(SECRET, strlen(SECRET), good, glen, exp - 1));
    CHECK(!maint_cookie_verify(SECRET, strlen(SECRET), good, glen, exp));
    CHECK(!maint_cookie_verify("other", 5, good, glen, now_s));
    size_t at = (size_t)(delta >> 32) % glen;
    good[at] ^= (char)(1 + (delta >> 8) % 15);
    if (good[at] != '\0')
        CHECK(!maint_cookie_verify(SECRET, strlen(SECRET), good, glen, now_s));
}

/* ---- exemptions ---- */

/* The reference for allow_paths: decode the whole path (NULL for a bad escape
 * or a NUL), then refuse it unless it is normalised: starts with '/', no "//",
 * no "." or ".." segment. maint_decide() does this in one pass, without
 * allocating. */
static char *decode_normalised(const char *p, size_t len)
{
    char *out = malloc(len + 2);
    size_t o = 0;
    CHECK(out != NULL);
    for (size_t i = 0; i < len; i++) {
        int ch = (unsigned char)p[i];
        if (ch == '%') {
            if (len - i < 3 || !isxdigit((unsigned char)p[i + 1]) ||
                !isxdigit((unsigned char)p[i + 2]))
                goto bad;
            char hex[3] = {p[i + 1], p[i + 2], 0};
            ch = (int)strtol(hex, NULL, 16);
            i += 2;
        }
        if (ch == 0)
            goto bad;
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    if (o == 0 || out[0] != '/' || strstr(out, "//") || strstr(out, "/./") || strstr(out, "/../"))
        goto bad;
    if ((o >= 2 && strcmp(out + o - 2, "/.") == 0) || (o >= 3 && strcmp(out + o - 3, "/..") == 0))
        goto bad;
    return out;
bad:
    free(out);
    return NULL;
}

static void check_decide(const struct maint_policy *pol, const struct field *path,
                         const struct field *cookie, const struct field *tail, int64_t now_s)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
    const struct sockaddr *peer = NULL;
    uint8_t kind = tail->len > 16 ? (uint8_t)tail->p[16] % 3 : 0;
    uint64_t a = tail_u64(tail, 17), b = tail_u64(tail, 25);
    if (kind == 1) {
        uint32_t ip = (uint32_t)a;
        memcpy(&sin.sin_addr, &ip, 4);
        peer = (const struct sockaddr *)&sin;
    } else if (kind == 2) {
        memcpy(sin6.sin6_addr.s6_addr, &a, 8);
        memcpy(sin6.sin6_addr.s6_addr + 8, &b, 8);
        peer = (const struct sockaddr *)&sin6;
    }
    const char *ck = cookie->present ? cookie->p : NULL;
    enum maint_verdict v = maint_decide(pol, path->p, path->len, peer, ck, cookie->len, now_s);

    bool by_path = false, by_from = false, by_cookie = false;
    char *decoded = decode_normalised(path->p, path->len);
    for (size_t i = 0; decoded && i < pol->n_paths; i++) {
        const char *pre = pol->allow_paths[i];
        size_t n = strlen(pre);
        by_path |= strncmp(decoded, pre, n) == 0 &&
                   (decoded[n] == '\0' || decoded[n] == '/' || pre[n - 1] == '/');
    }
    free(decoded);
    for (size_t i = 0; peer && i < pol->n_cidrs; i++)
        by_from |= net_cidr_match(&pol->allow_from[i], peer);
    const char *cv;
    size_t cvlen;
    if (pol->secret && ck && maint_cookie_find(ck, cookie->len, &cv, &cvlen)) {
        by_cookie = maint_cookie_verify(pol->secret, pol->secret_len, cv, cvlen, now_s);
        if (by_cookie)
            check_accepted(cv, cvlen, now_s);
    }
    enum maint_verdict want = by_path     ? MAINT_EXEMPT_PATH
                              : by_from   ? MAINT_EXEMPT_FROM
                              : by_cookie ? MAINT_EXEMPT_COOKIE
                                          : MAINT_ANSWER;
    CHECK(v == want);
}

/* ---- rendering ---- */

static size_t count_byte(const char *p, size_t n, char c)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += p[i] == c;
    return k;
}

static const char *builtin_tpl(struct buf *tmp)
{
    /* The built-in page, as rendered for an empty message. */
    CHECK(maint_render(tmp, MAINT_HTML, NULL, 0, "", "", false) == 0);
    return tmp->data;
}

static void check_render_one(enum maint_format fmt, const struct field *tpl, const char *msg,
                             const char *retry, bool is_date, size_t small_max)
{
    size_t mlen = strlen(msg), rlen = strlen(retry);
    const char *t = tpl->present ? tpl->p : NULL;
    size_t tlen = tpl->present ? tpl->len : 0;
    /* Every tag is at least 11 bytes and becomes at most 6 bytes per character. */
    size_t big = 4096 + tlen + (tlen / 11 + 1) * 6 * (mlen > rlen ? mlen : rlen) + 16 * mlen;
    if (fmt == MAINT_JSON) {
        /* JSON carries UTF-8 only: anything else is refused, not mangled
         * (`ferry down` refuses such a message before it gets here). */
        json_t *m = json_string(msg), *d = json_string(retry);
        bool utf8 = m && d;
        json_decref(m);
        json_decref(d);
        if (!utf8) {
            struct buf b;
            buf_init(&b, big);
            CHECK(maint_render(&b, fmt, t, tlen, msg, retry, is_date) == -EINVAL);
            CHECK(b.len == 0);
            buf_finish(&b);
            return;
        }
    }
    struct buf full, part;
    buf_init(&full, big);
    buf_init(&part, small_max);
    CHECK(maint_render(&full, fmt, t, tlen, msg, retry, is_date) == 0);
    CHECK(full.len <= full.max);
    int r = maint_render(&part, fmt, t, tlen, msg, retry, is_date);
    CHECK(r == 0 || r == -ENOBUFS);
    CHECK(part.len <= small_max);
    CHECK((r == 0) == (full.len <= small_max));
    /* A failed render leaves a prefix of the real body, never garbage. */
    CHECK(part.len <= full.len && (part.len == 0 || memcmp(part.data, full.data, part.len) == 0));
    if (r == 0)
        CHECK(part.len == full.len);

    const char *o = full.data;
    size_t olen = full.len;
    if (fmt == MAINT_HTML) {
        struct buf tmp;
        buf_init(&tmp, 1 << 16);
        const char *src = t ? t : builtin_tpl(&tmp);
        size_t slen = t ? tlen : tmp.len;
        /* The message and retry value add no markup: every <, >, " and ' in
         * the page comes from the template. */
        CHECK(count_byte(o, olen, '<') == count_byte(src, slen, '<'));
        CHECK(count_byte(o, olen, '>') == count_byte(src, slen, '>'));
        CHECK(count_byte(o, olen, '"') == count_byte(src, slen, '"'));
        CHECK(count_byte(o, olen, '\'') == count_byte(src, slen, '\''));
        buf_finish(&tmp);
    } else if (fmt == MAINT_JSON) {
        CHECK(olen >= 2 && o[olen - 1] == '\n');
        json_t *j = json_loadb(o, olen - 1, 0, NULL);
        CHECK(json_is_object(j) && json_object_size(j) == 3);
        CHECK(strcmp(json_string_value(json_object_get(j, "status")), "maintenance") == 0);
        const char *m = json_string_value(json_object_get(j, "message"));
        CHECK(m && strlen(m) == mlen && memcmp(m, msg, mlen) == 0);
        const json_t *ra = json_object_get(j, "retry_after");
        if (is_date) {
            CHECK(json_is_string(ra) && strcmp(json_string_value(ra), retry) == 0);
        } else {
            char num[24];
            snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(ra));
            CHECK(json_is_integer(ra) && strcmp(num, retry) == 0);
        }
        json_decref(j);
    } else {
        CHECK(olen == mlen + 1 && memcmp(o, msg, mlen) == 0 && o[mlen] == '\n');
    }
    buf_finish(&full);
    buf_finish(&part);
}

static void check_render(const struct field *msgf, const struct field *tpl,
                         const struct field *tail)
{
    uint64_t secs = tail_u64(tail, 0) & INT64_MAX; /* `down` takes int64 seconds */
    size_t small_max = (size_t)(tail_u64(tail, 8) % 1024);
    char num[24];
    snprintf(num, sizeof(num), "%" PRIu64, secs);
    /* Messages are C strings (the admin protocol decodes them into one). */
    const char *msg = msgf->p;
    /* A date-style value from the template field's first line, to be escaped too. */
    char date[64];
    size_t dl = 0;
    while (dl < sizeof(date) - 1 && dl < tpl->len && tpl->p[dl] != '\n' && tpl->p[dl] != '\0') {
        date[dl] = tpl->p[dl];
        dl++;
    }
    date[dl] = '\0';
    for (int f = 0; f < MAINT_FORMAT_COUNT; f++) {
        check_render_one((enum maint_format)f, tpl, msg, num, false, small_max);
        check_render_one((enum maint_format)f, tpl, msg, date, true, small_max);
    }
    /* maint_html_escape leaves none of its special characters. */
    struct buf e;
    buf_init(&e, 6 * strlen(msg) + 1);
    CHECK(maint_html_escape(&e, msg, strlen(msg)) == 0);
    for (size_t i = 0; i < e.len; i++)
        CHECK(!strchr("<>\"'", e.data[i]));
    buf_finish(&e);
}

/* ---- --at / --until ---- */

static void check_parse_time(const struct field *f, int64_t now_ms)
{
    int64_t out = 0;
    int r = maint_parse_time(f->p, now_ms, &out);
    CHECK(r == 0 || r == -EINVAL);
}

/* ---- the state file ---- */

/* What the input holds; what save writes back. Made for each state-file input
 * and removed after it: libFuzzer does not always run atexit handlers. */
static char state_dir[2][64];

static void write_file(const char *dir, const uint8_t *data, size_t size)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/maintenance.state", dir);
    FILE *fp = fopen(path, "wb");
    CHECK(fp);
    CHECK(fwrite(data, 1, size, fp) == size);
    CHECK(fclose(fp) == 0);
}

static void remove_state_dirs(void)
{
    char path[128];
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/maintenance.state", state_dir[i]);
        unlink(path);
        rmdir(state_dir[i]);
    }
}

/* An input that starts like a state file is loaded as one: a corrupt file is
 * refused cleanly, and what loads saves and loads back the same. */
static void check_state(const uint8_t *data, size_t size)
{
    static const char magic[] = "ferry-maintenance 1\n";
    if (size < sizeof(magic) - 1 || memcmp(data, magic, sizeof(magic) - 1) != 0)
        return;
    /* tmpfs when there is one: maint_state_save fsyncs. */
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    for (int i = 0; i < 2; i++) {
        snprintf(state_dir[i], sizeof(state_dir[i]), "%s/fuzz_maint.XXXXXX", base);
        CHECK(mkdtemp(state_dir[i]));
    }
    write_file(state_dir[0], data, size);
    struct maint_window w, again;
    memset(&w, 0, sizeof(w));
    memset(&again, 0, sizeof(again));
    int r = maint_state_load(state_dir[0], &w);
    CHECK(r == 0 || r == -EINVAL);
    if (r < 0) {
        remove_state_dirs();
        return;
    }
    CHECK(w.mode >= MAINT_OFF && w.mode <= MAINT_SCHEDULED && w.message);
    CHECK(maint_state_save(state_dir[1], &w) == 0);
    CHECK(maint_state_load(state_dir[1], &again) == 0);
    CHECK(again.mode == w.mode && again.since_ms == w.since_ms && again.at_ms == w.at_ms &&
          again.until_ms == w.until_ms && again.retry_after_s == w.retry_after_s);
    CHECK(strcmp(again.message, w.message) == 0);
    CHECK((again.page == NULL) == (w.page == NULL) && again.page_len == w.page_len);
    CHECK(!w.page || memcmp(again.page, w.page, w.page_len) == 0);
    maint_window_finish(&w);
    maint_window_finish(&again);
    remove_state_dirs();
}

static struct maint_policy policy, policy_nosecret;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    setenv("TZ", "UTC", 1);
    static char *paths[] = {"/healthz", "/.well-known/", NULL};
    static struct net_cidr cidrs[2];
    CHECK(net_parse_cidr("10.0.0.0/8", &cidrs[0]) == 0);
    CHECK(net_parse_cidr("2001:db8::/32", &cidrs[1]) == 0);
    policy = (struct maint_policy){.allow_paths = paths,
                                   .n_paths = 2,
                                   .allow_from = cidrs,
                                   .n_cidrs = 2,
                                   .secret = (char *)SECRET,
                                   .secret_len = strlen(SECRET)};
    policy_nosecret = policy;
    policy_nosecret.secret = NULL;
    policy_nosecret.secret_len = 0;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct field f[NFIELDS];
    const uint8_t *p = data, *end = data + size;
    bool more = size > 0; /* a field exists when a separator came before it */
    for (int i = 0; i < NFIELDS; i++) {
        const uint8_t *rs = i < NFIELDS - 1 ? memchr(p, 0x1e, (size_t)(end - p)) : NULL;
        const uint8_t *fe = rs ? rs : end;
        f[i].present = more;
        more = rs != NULL;
        f[i].len = (size_t)(fe - p);
        f[i].p = malloc(f[i].len + 1);
        CHECK(f[i].p);
        memcpy(f[i].p, p, f[i].len);
        f[i].p[f[i].len] = '\0';
        p = rs ? rs + 1 : end;
    }
    const struct field *accept = &f[0], *cookie = &f[1], *path = &f[2], *msg = &f[3], *tpl = &f[4],
                       *tail = &f[5];
    int64_t now_s = 1700000000 + (int64_t)(tail_u64(tail, 33) % 400000000);

    check_negotiate(accept);
    check_cookie(cookie, now_s, tail_u64(tail, 41));
    check_decide(&policy, path, cookie, tail, now_s);
    check_decide(&policy_nosecret, path, cookie, tail, now_s);
    check_render(msg, tpl, tail);
    check_parse_time(path, now_s * 1000);
    check_parse_time(msg, now_s * 1000);
    check_state(data, size);

    for (int i = 0; i < NFIELDS; i++)
        free(f[i].p);
    return 0;
}
