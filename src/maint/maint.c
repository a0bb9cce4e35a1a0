#include "maint/maint.h"

#include "common/alloc.h"
#include "common/buf.h"
#include "common/conf.h"
#include "common/fsdir.h"
#include "common/text.h"
#include "common/timeutil.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STATE_FILE "maintenance.state"
#define STATE_MAGIC "ferry-maintenance 1\n"

/* ---- policy and exemptions ---- */

int maint_policy_init(struct maint_policy *p, const struct ferry_conf *conf, char *err,
                      size_t errlen)
{
    memset(p, 0, sizeof(*p));
    const struct conf_list *paths = &conf->maintenance.allow_paths;
    p->allow_paths = xcalloc(paths->count + 1, sizeof(char *));
    for (size_t i = 0; i < paths->count; i++)
        p->allow_paths[i] = xstrdup(paths->items[i]);
    p->n_paths = paths->count;

    const struct conf_list *from = &conf->maintenance.allow_from;
    p->allow_from = xcalloc(from->count + 1, sizeof(struct net_cidr));
    for (size_t i = 0; i < from->count; i++) {
        if (net_parse_cidr(from->items[i], &p->allow_from[i]) < 0) {
            snprintf(err, errlen, "[maintenance] allow_from: cannot parse '%s'", from->items[i]);
            maint_policy_finish(p);
            return -EINVAL;
        }
    }
    p->n_cidrs = from->count;

    const char *secret = conf->maintenance.bypass_secret;
    if (secret && *secret) {
        p->secret = xstrdup(secret);
        p->secret_len = strlen(secret);
    }
    return 0;
}

void maint_policy_finish(struct maint_policy *p)
{
    if (!p)
        return;
    for (size_t i = 0; p->allow_paths && p->allow_paths[i]; i++)
        free(p->allow_paths[i]);
    free(p->allow_paths);
    free(p->allow_from);
    if (p->secret)
        OPENSSL_cleanse(p->secret, p->secret_len);
    free(p->secret);
    memset(p, 0, sizeof(*p));
}

/* Percent-decode the byte at path[*i] (advancing *i past it); -1 for a
 * malformed escape or a NUL, which no exempt path may contain. */
static int path_next_byte(const char *path, size_t len, size_t *i)
{
    unsigned char ch = (unsigned char)path[*i];
    if (ch == '%') {
        if (len - *i < 3)
            return -1;
        int hi = text_hex_value(path[*i + 1]), lo = text_hex_value(path[*i + 2]);
        if (hi < 0 || lo < 0)
            return -1;
        ch = (unsigned char)(hi << 4 | lo);
        *i += 2;
    }
    (*i)++;
    return ch == '\0' ? -1 : ch;
}

/* Is the raw request path normalised once decoded: it starts with '/', has
 * valid escapes and no NUL, no empty segment inside ("//") and no "." or ".."
 * segment? Only such a path names what it seems to, so only such a path may be
 * exempt. No allocation. */
static bool path_is_normalised(const char *path, size_t len)
{
    if (len == 0 || path[0] != '/')
        return false;
    size_t seg_len = 0;
    bool seg_dots = true; /* the segment so far is only dots */
    size_t i = 1;
    for (;;) {
        bool at_end = i >= len; /* the end closes the last segment like a '/' */
        int ch = at_end ? '/' : path_next_byte(path, len, &i);
        if (ch < 0)
            return false;
        if (ch == '/') {
            if (seg_dots && (seg_len == 1 || seg_len == 2))
                return false; /* "." or ".." */
            if (seg_len == 0 && !at_end)
                return false; /* "//" */
            if (at_end || i >= len)
                return true; /* a trailing slash is fine */
            seg_len = 0;
            seg_dots = true;
            continue;
        }
        seg_len++;
        seg_dots = seg_dots && ch == '.';
    }
}

/* Does the decoded path equal prefix, or continue it at a segment boundary?
 * "/healthz" covers "/healthz" and "/healthz/..." but not "/healthzX"; a
 * prefix ending in '/' covers what lies below it. */
static bool path_under_prefix(const char *path, size_t len, const char *prefix)
{
    size_t i = 0, k = 0, plen = strlen(prefix);
    while (k < plen) {
        if (i >= len || path_next_byte(path, len, &i) != (unsigned char)prefix[k])
            return false;
        k++;
    }
    if (i >= len || prefix[plen - 1] == '/')
        return true;
    return path_next_byte(path, len, &i) == '/';
}

enum maint_verdict maint_decide(const struct maint_policy *p, const char *path, size_t path_len,
                                const struct sockaddr *peer, const char *cookie, size_t cookie_len,
                                int64_t now_s)
{
    /* The prefix test stops at the first byte that differs, so it goes first:
     * the walk over the whole path is only paid for a path that is under one. */
    for (size_t i = 0; i < p->n_paths; i++) {
        if (path_under_prefix(path, path_len, p->allow_paths[i])) {
            if (path_is_normalised(path, path_len))
                return MAINT_EXEMPT_PATH;
            break; /* no prefix exempts a path with dot segments or '//' */
        }
    }
    if (peer) {
        for (size_t i = 0; i < p->n_cidrs; i++)
            if (net_cidr_match(&p->allow_from[i], peer))
                return MAINT_EXEMPT_FROM;
    }
    const char *v;
    size_t vlen;
    if (p->secret && cookie && maint_cookie_find(cookie, cookie_len, &v, &vlen) &&
        maint_cookie_verify(p->secret, p->secret_len, v, vlen, now_s))
        return MAINT_EXEMPT_COOKIE;
    return MAINT_ANSWER;
}

/* ---- Accept negotiation ---- */

static const char *const format_types[MAINT_FORMAT_COUNT] = {"text/html", "application/json",
                                                             "text/plain"};

static bool span_eq_ci(const char *p, size_t n, const char *s)
{
    return strlen(s) == n && strncasecmp(p, s, n) == 0;
}

static void trim(const char **p, const char **end)
{
    while (*p < *end && (**p == ' ' || **p == '\t'))
        (*p)++;
    while (*end > *p && ((*end)[-1] == ' ' || (*end)[-1] == '\t'))
        (*end)--;
}

/* Parse a qvalue ("1", "0.5", "1.000") into thousandths; -1 when malformed. */
static int parse_qvalue(const char *p, const char *end)
{
    if (p >= end || (*p != '0' && *p != '1'))
        return -1;
    int q = (*p - '0') * 1000;
    p++;
    if (p == end)
        return q;
    if (*p++ != '.')
        return -1;
    int scale = 100;
    for (int digits = 0; p < end; p++, digits++) {
        if (digits == 3 || *p < '0' || *p > '9')
            return -1;
        q += (*p - '0') * scale;
        scale /= 10;
    }
    return q > 1000 ? -1 : q;
}

/* How specifically the media range (p, n) matches type: 3 exact, 2 type/x,
 * 1 wildcard, 0 not at all. */
static int range_match(const char *p, size_t n, const char *type)
{
    if (span_eq_ci(p, n, type))
        return 3;
    if (span_eq_ci(p, n, "*/*"))
        return 1;
    const char *slash = strchr(type, '/');
    size_t tlen = (size_t)(slash - type);
    if (n == tlen + 2 && strncasecmp(p, type, tlen) == 0 && p[tlen] == '/' && p[tlen + 1] == '*')
        return 2;
    return 0;
}

/* The first ch in [p, end) that is not inside a quoted-string (RFC 9110
 * 5.6.4: parameter values may be quoted and hold ',' or ';'), or NULL. */
static const char *find_unquoted(const char *p, const char *end, char ch)
{
    bool quoted = false;
    for (; p < end; p++) {
        if (quoted) {
            if (*p == '\\' && p + 1 < end)
                p++;
            else if (*p == '"')
                quoted = false;
        } else if (*p == '"') {
            quoted = true;
        } else if (*p == ch) {
            return p;
        }
    }
    return NULL;
}

enum maint_format maint_negotiate(const char *accept, size_t len)
{
    if (!accept)
        return MAINT_HTML;
    int q[MAINT_FORMAT_COUNT], spec[MAINT_FORMAT_COUNT];
    for (int f = 0; f < MAINT_FORMAT_COUNT; f++)
        q[f] = spec[f] = 0;
    const char *p = accept, *end = accept + len;
    while (p < end) {
        const char *comma = find_unquoted(p, end, ',');
        const char *elem_end = comma ? comma : end;
        const char *semi = find_unquoted(p, elem_end, ';');
        const char *rs = p, *re = semi ? semi : elem_end;
        trim(&rs, &re);
        int weight = 1000;
        /* Parameters: only q matters; a malformed q drops the element. */
        for (const char *a = semi; a && a < elem_end;) {
            const char *next = find_unquoted(a + 1, elem_end, ';');
            const char *ps = a + 1, *pe = next ? next : elem_end;
            trim(&ps, &pe);
            if (pe - ps >= 2 && (ps[0] == 'q' || ps[0] == 'Q') && ps[1] == '=')
                weight = parse_qvalue(ps + 2, pe);
            a = next;
        }
        if (weight >= 0) {
            for (int f = 0; f < MAINT_FORMAT_COUNT; f++) {
                int s = range_match(rs, (size_t)(re - rs), format_types[f]);
                /* The most specific matching range decides a type's q (RFC 9110 12.5.1). */
                if (s > spec[f]) {
                    spec[f] = s;
                    q[f] = weight;
                }
            }
        }
        p = comma ? comma + 1 : end;
    }
    int best = MAINT_HTML;
    for (int f = 1; f < MAINT_FORMAT_COUNT; f++)
        if (q[f] > q[best] || (q[f] == q[best] && spec[f] > spec[best]))
            best = f;
    return (enum maint_format)best;
}

/* ---- rendering ---- */

int maint_html_escape(struct buf *out, const char *s, size_t n)
{
    int r = 0;
    size_t run = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        const char *rep;
        switch (s[i]) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&#39;";
            break;
        default:
            run++;
            continue;
        }
        r = buf_append(out, s + i - run, run);
        run = 0;
        if (r == 0)
            r = buf_append_str(out, rep);
    }
    if (r == 0)
        r = buf_append(out, s + n - run, run);
    return r;
}

static const char builtin_page[] =
    "<!DOCTYPE html>\n"
    "<html lang=\"en\">\n"
    "<head><meta charset=\"utf-8\"><title>Down for maintenance</title></head>\n"
    "<body>\n<h1>Down for maintenance</h1>\n<p>{{message}}</p>\n"
    "<p>Please try again later.</p>\n</body>\n</html>\n";

static int render_html(struct buf *out, const char *tpl, size_t tpl_len, const char *message,
                       const char *retry_after)
{
    static const char tag_msg[] = "{{message}}", tag_retry[] = "{{retry_after}}";
    if (!tpl) {
        tpl = builtin_page;
        tpl_len = sizeof(builtin_page) - 1;
    }
    const char *p = tpl, *end = tpl + tpl_len;
    while (p < end) {
        const char *open = memmem(p, (size_t)(end - p), "{{", 2);
        if (!open)
            break;
        int r = buf_append(out, p, (size_t)(open - p));
        size_t left = (size_t)(end - open);
        if (r == 0 && left >= sizeof(tag_msg) - 1 &&
            memcmp(open, tag_msg, sizeof(tag_msg) - 1) == 0) {
            r = maint_html_escape(out, message, strlen(message));
            p = open + sizeof(tag_msg) - 1;
        } else if (r == 0 && left >= sizeof(tag_retry) - 1 &&
                   memcmp(open, tag_retry, sizeof(tag_retry) - 1) == 0) {
            r = maint_html_escape(out, retry_after, strlen(retry_after));
            p = open + sizeof(tag_retry) - 1;
        } else if (r == 0) {
            r = buf_append(out, "{{", 2);
            p = open + 2;
        }
        if (r < 0)
            return r;
    }
    return buf_append(out, p, (size_t)(end - p));
}

int maint_render(struct buf *out, enum maint_format fmt, const char *tpl, size_t tpl_len,
                 const char *message, const char *retry_after, bool retry_is_date)
{
    int r;
    switch (fmt) {
    case MAINT_JSON: {
        /* Built once per switch into the snapshot, never per request. */
        json_t *retry = retry_is_date ? json_string(retry_after)
                                      : json_integer((json_int_t)strtoll(retry_after, NULL, 10));
        /* "o" takes retry, NULL included (then the pack fails). */
        json_t *body = json_pack("{s:s, s:s, s:o}", "status", "maintenance", "message", message,
                                 "retry_after", retry);
        char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        json_decref(body);
        /* Only text that is not UTF-8 fails here (`down` refuses such a message). */
        r = text ? buf_append_str(out, text) : -EINVAL;
        if (r == 0)
            r = buf_append(out, "\n", 1);
        free(text);
        return r;
    }
    case MAINT_PLAIN:
        r = buf_append_str(out, message);
        if (r == 0)
            r = buf_append(out, "\n", 1);
        return r;
    default:
        return render_html(out, tpl, tpl_len, message, retry_after);
    }
}

/* ---- snapshots ---- */

struct maint_snapshot *maint_snapshot_create(const struct maint_policy *policy,
                                             const struct maint_window *w)
{
    struct maint_snapshot *s = xcalloc(1, sizeof(*s));
    atomic_init(&s->refs, 1);
    s->policy = policy;
    bool is_date = w->until_ms > 0;
    if (is_date)
        time_format_http((time_t)((w->until_ms + 999) / 1000), s->retry_after);
    else
        snprintf(s->retry_after, sizeof(s->retry_after), "%" PRIu64, w->retry_after_s);
    static const char *const ctypes[MAINT_FORMAT_COUNT] = {
        "text/html; charset=utf-8", "application/json", "text/plain; charset=utf-8"};
    const char *msg = w->message && *w->message ? w->message : MAINT_DEFAULT_MESSAGE;
    for (int f = 0; f < MAINT_FORMAT_COUNT; f++) {
        struct buf b;
        /* The template is at most MAINT_PAGE_MAX and each substitution grows by a
         * bounded factor; a page that still does not fit is cut off, which the
         * page size limit makes unreachable in practice. */
        buf_init(&b, 8 * (size_t)MAINT_PAGE_MAX);
        maint_render(&b, (enum maint_format)f, w->page, w->page_len, msg, s->retry_after, is_date);
        s->body[f].data = b.data ? b.data : xstrdup("");
        s->body[f].len = b.len;
        s->body[f].content_type = ctypes[f];
    }
    return s;
}

void maint_snapshot_ref(struct maint_snapshot *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void maint_snapshot_unref(struct maint_snapshot *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (int f = 0; f < MAINT_FORMAT_COUNT; f++)
        free(s->body[f].data);
    free(s);
}

/* ---- bypass cookie ---- */

static int cookie_mac_hex(const char *secret, size_t secret_len, int64_t expires_s, char hex[65])
{
    char msg[64];
    int n = snprintf(msg, sizeof(msg), "ferry-bypass:%" PRId64, expires_s);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)msg, (size_t)n, md,
              &mdlen) ||
        mdlen != 32)
        return -EIO;
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
    return 0;
}

int maint_cookie_sign(const char *secret, size_t secret_len, int64_t expires_s, char *out,
                      size_t outlen)
{
    char hex[65];
    int r = cookie_mac_hex(secret, secret_len, expires_s, hex);
    if (r < 0)
        return r;
    if ((size_t)snprintf(out, outlen, "%" PRId64 ".%s", expires_s, hex) >= outlen)
        return -ENOBUFS;
    return 0;
}

bool maint_cookie_verify(const char *secret, size_t secret_len, const char *value, size_t value_len,
                         int64_t now_s)
{
    const char *dot = memchr(value, '.', value_len);
    if (!dot || dot == value || dot - value > 18 || value + value_len - dot - 1 != 64)
        return false;
    /* Only the form maint_cookie_sign() writes: a leading zero would give one
     * signature any number of spellings. */
    if (value[0] == '0' && dot - value > 1)
        return false;
    int64_t expires = 0;
    for (const char *p = value; p < dot; p++) {
        if (*p < '0' || *p > '9')
            return false;
        expires = expires * 10 + (*p - '0');
    }
    if (expires <= now_s)
        return false;
    char hex[65];
    if (cookie_mac_hex(secret, secret_len, expires, hex) < 0)
        return false;
    return CRYPTO_memcmp(hex, dot + 1, 64) == 0;
}

bool maint_cookie_find(const char *cookie, size_t len, const char **val, size_t *vlen)
{
    static const char name[] = MAINT_COOKIE_NAME "=";
    const size_t nlen = sizeof(name) - 1;
    const char *p = cookie, *end = cookie + len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *pe = semi ? semi : end;
        if ((size_t)(pe - p) >= nlen && memcmp(p, name, nlen) == 0) {
            const char *vs = p + nlen, *ve = pe;
            trim(&vs, &ve);
            if (ve - vs >= 2 && vs[0] == '"' && ve[-1] == '"') {
                vs++;
                ve--;
            }
            *val = vs;
            *vlen = (size_t)(ve - vs);
            return true;
        }
        p = semi ? semi + 1 : end;
    }
    return false;
}

/* ---- persisted state ---- */

void maint_window_finish(struct maint_window *w)
{
    if (!w)
        return;
    free(w->message);
    free(w->page);
    memset(w, 0, sizeof(*w));
}

static const char *const mode_names[] = {"off", "on", "scheduled"};

int maint_state_dir_prepare(const char *dir, char *err, size_t errlen)
{
    int r = fsdir_make(dir, 0700);
    if (r < 0)
        snprintf(err, errlen, "state_dir '%s': cannot create it: %s", dir,
                 r == -ENOTDIR ? "a component is not a directory" : strerror(-r));
    return r;
}

int maint_state_save(const char *dir, const struct maint_window *w)
{
    struct buf b;
    buf_init(&b, MAINT_PAGE_MAX + 64 * 1024);
    int r = buf_printf(&b,
                       STATE_MAGIC "mode=%s\nsince=%" PRId64 "\nat=%" PRId64 "\nuntil=%" PRId64
                                   "\nretry_after=%" PRIu64 "\nmessage=",
                       mode_names[w->mode], w->since_ms, w->at_ms, w->until_ms, w->retry_after_s);
    json_t *msg = json_string(w->message ? w->message : "");
    char *msg_json = msg ? json_dumps(msg, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(msg);
    if (r == 0)
        r = msg_json ? buf_append_str(&b, msg_json) : -EINVAL; /* not UTF-8 */
    free(msg_json);
    if (r == 0)
        r = buf_printf(&b, "\npage=%zd\n", w->page ? (ssize_t)w->page_len : (ssize_t)-1);
    if (r == 0 && w->page)
        r = buf_append(&b, w->page, w->page_len);
    if (r < 0) {
        buf_finish(&b);
        return r;
    }

    char tmp[PATH_MAX], final[PATH_MAX];
    if ((size_t)snprintf(final, sizeof(final), "%s/%s", dir, STATE_FILE) >= sizeof(final) ||
        (size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, STATE_FILE) >= sizeof(tmp)) {
        buf_finish(&b);
        return -ENAMETOOLONG;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        r = -errno;
        goto fail;
    }
    for (size_t off = 0; off < b.len;) {
        ssize_t n = write(fd, b.data + off, b.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            goto fail;
        }
        off += (size_t)n;
    }
    if (fsync(fd) < 0) {
        r = -errno;
        goto fail;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, final) < 0) {
        r = -errno;
        goto fail;
    }
    /* The rename is durable only once the directory is synced. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    buf_finish(&b);
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    buf_finish(&b);
    return r;
}

static int read_file_max(const char *path, size_t max, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    int e = fstat(fd, &st) < 0     ? -errno
            : S_ISDIR(st.st_mode)  ? -EISDIR
            : !S_ISREG(st.st_mode) ? -EINVAL
                                   : 0;
    if (e < 0) {
        close(fd);
        return e;
    }
    struct buf b;
    buf_init(&b, max);
    int r = 0;
    for (;;) {
        char chunk[16384];
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            break;
        }
        if (n == 0)
            break;
        if (buf_append(&b, chunk, (size_t)n) < 0) {
            r = -EFBIG;
            break;
        }
    }
    close(fd);
    if (r < 0) {
        buf_finish(&b);
        return r;
    }
    *out = b.data ? b.data : xstrdup("");
    *len = b.len;
    return 0;
}

int maint_page_read(const char *path, char **out, size_t *len)
{
    return read_file_max(path, MAINT_PAGE_MAX, out, len);
}

/* The value of "key=" at the start of line *p (advancing *p past the line). */
static int state_field(const char **p, const char *end, const char *key, const char **v,
                       size_t *vlen)
{
    size_t klen = strlen(key);
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    if (!nl || (size_t)(nl - *p) < klen + 1 || memcmp(*p, key, klen) != 0 || (*p)[klen] != '=')
        return -EINVAL;
    *v = *p + klen + 1;
    *vlen = (size_t)(nl - *v);
    *p = nl + 1;
    return 0;
}

static int state_int(const char **p, const char *end, const char *key, int64_t *out)
{
    const char *v;
    size_t n;
    if (state_field(p, end, key, &v, &n) < 0 || n == 0 || n > 19)
        return -EINVAL;
    int64_t x = 0;
    bool neg = v[0] == '-';
    if (neg && n == 1)
        return -EINVAL;
    for (size_t i = neg; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -EINVAL;
        /* 19 digits can exceed INT64_MAX: a corrupt file must not overflow. */
        if (x > (INT64_MAX - (v[i] - '0')) / 10)
            return -EINVAL;
        x = x * 10 + (v[i] - '0');
    }
    *out = neg ? -x : x;
    return 0;
}

int maint_state_load(const char *dir, struct maint_window *w)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, STATE_FILE) >= sizeof(path))
        return -ENAMETOOLONG;
    char *data;
    size_t len;
    int r = read_file_max(path, MAINT_PAGE_MAX + 64 * 1024, &data, &len);
    if (r < 0)
        return r;
    const char *p = data, *end = data + len;
    const char *v;
    size_t vlen;
    int64_t since, at, until, retry, page_len;
    json_t *msg = NULL;
    r = -EINVAL;
    if (len < sizeof(STATE_MAGIC) - 1 || memcmp(p, STATE_MAGIC, sizeof(STATE_MAGIC) - 1) != 0)
        goto fail;
    p += sizeof(STATE_MAGIC) - 1;
    if (state_field(&p, end, "mode", &v, &vlen) < 0)
        goto fail;
    int mode = -1;
    for (int i = 0; i < 3; i++)
        if (strlen(mode_names[i]) == vlen && memcmp(v, mode_names[i], vlen) == 0)
            mode = i;
    if (mode < 0 || state_int(&p, end, "since", &since) < 0 || state_int(&p, end, "at", &at) < 0 ||
        state_int(&p, end, "until", &until) < 0 || state_int(&p, end, "retry_after", &retry) < 0 ||
        retry < 0 || state_field(&p, end, "message", &v, &vlen) < 0 ||
        !(msg = json_loadb(v, vlen, JSON_DECODE_ANY, NULL)) || !json_is_string(msg) ||
        state_int(&p, end, "page", &page_len) < 0 || page_len < -1 ||
        (page_len >= 0 && (int64_t)(end - p) != page_len) || (page_len < 0 && p != end))
        goto fail;
    w->mode = mode;
    w->since_ms = since;
    w->at_ms = at;
    w->until_ms = until;
    w->retry_after_s = (uint64_t)retry;
    /* jansson refuses \u0000 by default: the message has no NUL to cut it. */
    w->message = xstrdup(json_string_value(msg));
    json_decref(msg);
    w->page = NULL;
    w->page_len = 0;
    if (page_len >= 0) {
        /* The page may hold any bytes, NULs included. */
        w->page = xmalloc((size_t)page_len + 1);
        memcpy(w->page, p, (size_t)page_len);
        w->page[page_len] = '\0';
        w->page_len = (size_t)page_len;
    }
    free(data);
    return 0;
fail:
    json_decref(msg);
    free(data);
    return r;
}

/* ---- --at / --until ---- */

int64_t maint_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int maint_parse_time(const char *s, int64_t now_ms, int64_t *out_ms)
{
    uint64_t d;
    if (s[0] == '+') {
        if (conf_parse_duration(s + 1, &d) < 0 || d > (uint64_t)INT64_MAX / 2)
            return -EINVAL;
        *out_ms = now_ms + (int64_t)d;
        return 0;
    }
    if (s[0] == '@') {
        char *end;
        errno = 0;
        long long v = strtoll(s + 1, &end, 10);
        if (end == s + 1 || *end || errno || v < 0 || v > INT64_MAX / 2000)
            return -EINVAL;
        *out_ms = (int64_t)v * 1000;
        return 0;
    }
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *rest = strptime(s, "%Y-%m-%dT%H:%M", &tm);
    if (!rest)
        rest = strptime(s, "%Y-%m-%d %H:%M", &tm);
    if (rest) {
        if (*rest == ':') {
            rest = strptime(rest, ":%S", &tm);
            if (!rest)
                return -EINVAL;
        }
        bool utc = *rest == 'Z';
        if (*rest && !(utc && rest[1] == '\0'))
            return -EINVAL;
        tm.tm_isdst = -1;
        time_t t = utc ? timegm(&tm) : mktime(&tm);
        if (t == (time_t)-1)
            return -EINVAL;
        *out_ms = (int64_t)t * 1000;
        return 0;
    }
    memset(&tm, 0, sizeof(tm));
    time_t now = (time_t)(now_ms / 1000);
    struct tm today;
    localtime_r(&now, &today);
    rest = strptime(s, "%H:%M", &tm);
    if (rest && *rest == ':')
        rest = strptime(rest, ":%S", &tm);
    if (rest && *rest == '\0') {
        today.tm_hour = tm.tm_hour;
        today.tm_min = tm.tm_min;
        today.tm_sec = tm.tm_sec;
        today.tm_isdst = -1;
        time_t t = mktime(&today);
        if (t == (time_t)-1)
            return -EINVAL;
        if ((int64_t)t * 1000 <= now_ms)
            t += 24 * 3600;
        *out_ms = (int64_t)t * 1000;
        return 0;
    }
    if (conf_parse_duration(s, &d) == 0 && d <= (uint64_t)INT64_MAX / 2) {
        *out_ms = now_ms + (int64_t)d;
        return 0;
    }
    return -EINVAL;
}
