/* Strict HTTP/1.x request-head parser and chunked body decoder (RFC 9112).
 *
 * The head parser is a single forward scan over (buf, len) that stops at the
 * first byte proving the head invalid (-1) or at the end of the data (-2); the
 * header semantics (framing, Host, Connection...) are checked only once the
 * head is complete. Nothing is allocated and nothing is remembered between
 * calls. */
#include "http/parser.h"
#include "common/text.h"

#include <limits.h>
#include <stddef.h>
#include <string.h>

#define NEED_MORE (-2)
#define FALLTHROUGH __attribute__((fallthrough))

static const struct http_str str_slash = {"/", 1};

/* ---- character classes (RFC 9110 5.6.2, RFC 3986 2) ----
 * One table lookup per byte; the table is built at compile time from the
 * grammar's definitions below. */

enum {
    C_TCHAR = 1,   /* token character */
    C_FVCHAR = 2,  /* field-vchar: VCHAR / obs-text */
    C_REGNAME = 4, /* reg-name: unreserved / sub-delims ('%' is checked apart) */
};

#define CC_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define CC_ALPHA(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define CC_TCHAR(c)                                                                                \
    (CC_DIGIT(c) || CC_ALPHA(c) || (c) == '!' || (c) == '#' || (c) == '$' || (c) == '%' ||         \
     (c) == '&' || (c) == '\'' || (c) == '*' || (c) == '+' || (c) == '-' || (c) == '.' ||          \
     (c) == '^' || (c) == '_' || (c) == '`' || (c) == '|' || (c) == '~')
#define CC_REGNAME(c)                                                                              \
    (CC_DIGIT(c) || CC_ALPHA(c) || (c) == '-' || (c) == '.' || (c) == '_' || (c) == '~' ||         \
     (c) == '!' || (c) == '$' || (c) == '&' || (c) == '\'' || (c) == '(' || (c) == ')' ||          \
     (c) == '*' || (c) == '+' || (c) == ',' || (c) == ';' || (c) == '=')
#define CC(c)                                                                                      \
    (unsigned char)((CC_TCHAR(c) ? C_TCHAR : 0) | (((c) >= 0x21 && (c) != 0x7f) ? C_FVCHAR : 0) |  \
                    (CC_REGNAME(c) ? C_REGNAME : 0))
#define CC4(c) CC(c), CC((c) + 1), CC((c) + 2), CC((c) + 3)
#define CC16(c) CC4(c), CC4((c) + 4), CC4((c) + 8), CC4((c) + 12)
#define CC64(c) CC16(c), CC16((c) + 16), CC16((c) + 32), CC16((c) + 48)

static const unsigned char char_class[256] = {CC64(0), CC64(64), CC64(128), CC64(192)};

static bool is_digit(unsigned char c)
{
    return CC_DIGIT(c);
}

static bool is_tchar(unsigned char c)
{
    return char_class[c] & C_TCHAR;
}

static bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* field-vchar: VCHAR / obs-text. */
static bool is_field_vchar(unsigned char c)
{
    return char_class[c] & C_FVCHAR;
}

/* Bytes allowed in a request-target. RFC 3986 forbids a few more visible
 * characters ('"', '<', '>', '\\', '^', '`', '{', '|', '}'), but browsers send
 * some of them raw in queries (WHATWG URL's query percent-encode set), so only
 * '#' (a fragment is never part of a request-target) is refused among VCHARs. */
static bool is_target_char(unsigned char c)
{
    return c >= 0x21 && c <= 0x7e && c != '#';
}

static bool is_regname_char(unsigned char c)
{
    return char_class[c] & C_REGNAME;
}

static int fail(struct http_request *req, int status)
{
    req->error_status = status;
    return -1;
}

/* ---- small helpers over views ---- */

/* Compare with a lower-case literal of known length: the length test first,
 * so most mismatches cost one comparison. */
static bool str_eq_ci_n(struct http_str s, const char *lower, size_t n)
{
    if (!s.p || s.len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if (c != (unsigned char)lower[i])
            return false;
    }
    return true;
}

#define STR_EQ_LIT(s, lit) str_eq_ci_n((s), "" lit, sizeof(lit) - 1)

bool http_str_eq_ci(struct http_str s, const char *lower)
{
    return str_eq_ci_n(s, lower, strlen(lower));
}

struct http_str http_find_header(const struct http_request *req, const char *lower_name)
{
    for (size_t i = 0; i < req->num_headers; i++)
        if (http_str_eq_ci(req->headers[i].name, lower_name))
            return req->headers[i].value;
    return (struct http_str){NULL, 0};
}

static bool prefix_eq_ci(const char *p, size_t n, const char *lower)
{
    size_t k = strlen(lower);
    return n >= k && str_eq_ci_n((struct http_str){p, k}, lower, k);
}

static bool is_token(struct http_str s)
{
    if (s.len == 0)
        return false;
    for (size_t i = 0; i < s.len; i++)
        if (!is_tchar((unsigned char)s.p[i]))
            return false;
    return true;
}

/* Does p[i] (a '%') start a complete %HH escape within n bytes? */
static bool pct_escape_at(const char *p, size_t n, size_t i)
{
    return n - i >= 3 && text_hex_value((unsigned char)p[i + 1]) >= 0 &&
           text_hex_value((unsigned char)p[i + 2]) >= 0;
}

/* Every '%' must start a %HH escape. */
static bool pct_escapes_valid(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '%')
            continue;
        if (!pct_escape_at(p, n, i))
            return false;
        i += 2;
    }
    return true;
}

/* Next element of a comma-separated list (RFC 9110 5.6.1) starting at *i, with
 * OWS trimmed; empty elements are returned as empty views. Quoted strings are
 * not special: callers that accept only tokens reject the pieces anyway.
 * Returns false at the end of the value. */
static bool list_next(struct http_str v, size_t *i, struct http_str *elem)
{
    if (*i > v.len)
        return false;
    size_t start = *i;
    size_t end = start;
    while (end < v.len && v.p[end] != ',')
        end++;
    *i = end + 1;
    while (start < end && is_ows((unsigned char)v.p[start]))
        start++;
    while (end > start && is_ows((unsigned char)v.p[end - 1]))
        end--;
    *elem = (struct http_str){v.p + start, end - start};
    return true;
}

/* ---- request-target ---- */

/* authority = host [ ":" port ] with host an IP-literal or a reg-name (RFC 3986
 * 3.2; userinfo is refused, RFC 9110 4.2.4). */
static bool authority_valid(const char *p, size_t n, bool need_host, bool need_port)
{
    size_t i = 0;
    if (n > 0 && p[0] == '[') {
        /* IPv6address / IPvFuture: hex digits, '.', ':' and the IPvFuture
         * characters; the exact address syntax is the resolver's business. */
        for (i = 1; i < n && p[i] != ']'; i++)
            if (!is_regname_char((unsigned char)p[i]) && p[i] != ':')
                return false;
        if (i >= n || i == 1)
            return false;
        i++;
    } else {
        while (i < n && p[i] != ':') {
            if (p[i] == '%') {
                if (!pct_escape_at(p, n, i))
                    return false;
                i += 3;
                continue;
            }
            if (!is_regname_char((unsigned char)p[i]))
                return false;
            i++;
        }
        if (need_host && i == 0)
            return false;
    }
    if (i == n)
        return !need_port;
    if (p[i] != ':')
        return false;
    size_t port = ++i;
    while (i < n && is_digit((unsigned char)p[i]))
        i++;
    return i == n && (!need_port || i > port);
}

/* Fill path and query from an absolute-path [ "?" query ] (possibly empty). */
static void split_path_query(struct http_request *req, const char *p, size_t n)
{
    const char *q = memchr(p, '?', n);
    size_t plen = q ? (size_t)(q - p) : n;
    req->path = plen ? (struct http_str){p, plen} : str_slash;
    if (q)
        req->query = (struct http_str){q + 1, n - plen - 1};
}

/* RFC 9112 3.2: which target forms each method may use. */
static int classify_target(struct http_request *req)
{
    const char *t = req->target.p;
    size_t n = req->target.len;

    if (!pct_escapes_valid(t, n))
        return fail(req, 400);
    if (req->method_id == HTTP_M_CONNECT) {
        if (!authority_valid(t, n, true, true))
            return fail(req, 400);
        req->authority = req->target;
        return 0;
    }
    if (t[0] == '/') {
        split_path_query(req, t, n);
        return 0;
    }
    if (n == 1 && t[0] == '*') {
        if (req->method_id != HTTP_M_OPTIONS)
            return fail(req, 400);
        req->path = req->target;
        return 0;
    }
    size_t skip;
    if (prefix_eq_ci(t, n, "http://"))
        skip = 7;
    else if (prefix_eq_ci(t, n, "https://"))
        skip = 8;
    else
        return fail(req, 400);
    size_t a = skip;
    while (a < n && t[a] != '/' && t[a] != '?')
        a++;
    if (!authority_valid(t + skip, a - skip, true, false))
        return fail(req, 400);
    req->authority = (struct http_str){t + skip, a - skip};
    split_path_query(req, t + a, n - a);
    return 0;
}

/* ---- request line and fields ---- */

static int method_lookup(struct http_str m)
{
    static const struct {
        const char *name;
        int id;
    } methods[] = {
        {"GET", HTTP_M_GET},     {"HEAD", HTTP_M_HEAD},       {"POST", HTTP_M_POST},
        {"PUT", HTTP_M_PUT},     {"DELETE", HTTP_M_DELETE},   {"OPTIONS", HTTP_M_OPTIONS},
        {"PATCH", HTTP_M_PATCH}, {"CONNECT", HTTP_M_CONNECT}, {"TRACE", HTTP_M_TRACE},
    };
    /* Methods are case-sensitive (RFC 9110 9.1). */
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strlen(methods[i].name) == m.len && memcmp(methods[i].name, m.p, m.len) == 0)
            return methods[i].id;
    return HTTP_M_OTHER;
}

static int parse_request_line(const char *b, size_t end, size_t *pos_io, size_t max_uri,
                              struct http_request *req)
{
    size_t pos = *pos_io;
    unsigned empty = 0;

    /* RFC 9112 2.2: a server SHOULD ignore at least one empty line before the
     * request-line. Only CRLF ones, and only a few. */
    while (pos < end && (b[pos] == '\r' || b[pos] == '\n')) {
        if (b[pos] == '\n')
            return fail(req, 400);
        if (pos + 1 >= end)
            return NEED_MORE;
        if (b[pos + 1] != '\n' || ++empty > HTTP_MAX_LEADING_EMPTY_LINES)
            return fail(req, 400);
        pos += 2;
    }

    size_t start = pos;
    while (pos < end && is_tchar((unsigned char)b[pos]))
        pos++;
    if (pos >= end)
        return NEED_MORE;
    if (b[pos] != ' ' || pos == start)
        return fail(req, 400);
    req->method = (struct http_str){b + start, pos - start};
    req->method_id = method_lookup(req->method);

    start = ++pos;
    for (;;) {
        if (pos >= end)
            return NEED_MORE;
        unsigned char c = (unsigned char)b[pos];
        if (c == ' ')
            break;
        if (!is_target_char(c))
            return fail(req, 400);
        /* Checked as the bytes arrive so that an endless target is refused
         * long before the head could be complete. */
        if (++pos - start > max_uri)
            return fail(req, 414);
    }
    if (pos == start)
        return fail(req, 400);
    req->target = (struct http_str){b + start, pos - start};
    pos++;

    /* HTTP-version = "HTTP" "/" DIGIT "." DIGIT, then CRLF: nothing else. */
    static const char version[] = "HTTP/#.#\r\n";
    for (size_t i = 0; i < sizeof(version) - 1; i++) {
        if (pos + i >= end)
            return NEED_MORE;
        unsigned char c = (unsigned char)b[pos + i];
        if (version[i] == '#' ? !is_digit(c) : c != (unsigned char)version[i])
            return fail(req, 400);
    }
    if (b[pos + 5] != '1' || b[pos + 7] > '1')
        return fail(req, 505);
    req->minor_version = b[pos + 7] - '0';
    *pos_io = pos + sizeof(version) - 1;
    return classify_target(req);
}

static int parse_fields(const char *b, size_t end, size_t *pos_io, struct http_request *req)
{
    size_t pos = *pos_io;

    for (;;) {
        if (pos >= end)
            return NEED_MORE;
        if (b[pos] == '\r') {
            if (pos + 1 >= end)
                return NEED_MORE;
            if (b[pos + 1] != '\n')
                return fail(req, 400);
            *pos_io = pos + 2;
            return 0;
        }
        if (req->num_headers == HTTP_MAX_HEADERS)
            return fail(req, 431);

        /* field-name = token, then ':' right away. A leading SP/HTAB (obs-fold,
         * or whitespace after the request line) and a space before the colon
         * both fail here. */
        size_t start = pos;
        while (pos < end && is_tchar((unsigned char)b[pos]))
            pos++;
        if (pos >= end)
            return NEED_MORE;
        if (b[pos] != ':' || pos == start)
            return fail(req, 400);
        struct http_header *h = &req->headers[req->num_headers];
        h->name = (struct http_str){b + start, pos - start};
        pos++;

        while (pos < end && is_ows((unsigned char)b[pos]))
            pos++;
        size_t vstart = pos, vend = pos;
        for (;;) {
            if (pos >= end)
                return NEED_MORE;
            unsigned char c = (unsigned char)b[pos];
            if (c == '\r')
                break;
            if (!is_ows(c) && !is_field_vchar(c))
                return fail(req, 400);
            pos++;
            if (!is_ows(c))
                vend = pos;
        }
        if (pos + 1 >= end)
            return NEED_MORE;
        if (b[pos + 1] != '\n')
            return fail(req, 400);
        pos += 2;
        h->value = (struct http_str){b + vstart, vend - vstart};
        req->num_headers++;
    }
}

/* ---- header semantics ---- */

/* Content-Length = 1*DIGIT, or a list of identical ones (RFC 9110 8.6). *cl is
 * -1 until the first value; later values must equal it. */
static bool content_length_merge(struct http_str v, int64_t *cl)
{
    size_t i = 0;
    struct http_str e;
    while (list_next(v, &i, &e)) {
        if (e.len == 0)
            return false;
        int64_t n = 0;
        for (size_t k = 0; k < e.len; k++) {
            unsigned char c = (unsigned char)e.p[k];
            if (!is_digit(c) || n > (INT64_MAX - (c - '0')) / 10)
                return false;
            n = n * 10 + (c - '0');
        }
        if (*cl >= 0 && *cl != n)
            return false;
        *cl = n;
    }
    return true;
}

struct te_state {
    bool seen;
    bool chunked; /* chunked is present (and so far last) */
    bool unknown; /* a coding other than chunked precedes it */
    bool invalid; /* 400 */
};

/* Skip transfer-parameters: *( OWS ";" OWS token BWS "=" BWS ( token /
 * quoted-string ) ). Returns false when they are malformed. */
static bool te_params_valid(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && is_ows((unsigned char)p[i]))
            i++;
        if (i == n)
            return true;
        if (p[i++] != ';')
            return false;
        while (i < n && is_ows((unsigned char)p[i]))
            i++;
        size_t s = i;
        while (i < n && is_tchar((unsigned char)p[i]))
            i++;
        if (i == s)
            return false;
        while (i < n && is_ows((unsigned char)p[i]))
            i++;
        if (i == n || p[i++] != '=')
            return false;
        while (i < n && is_ows((unsigned char)p[i]))
            i++;
        if (i < n && p[i] == '"') {
            for (i++; i < n && p[i] != '"'; i++)
                if (p[i] == '\\')
                    i++;
            if (i >= n)
                return false;
            i++;
        } else {
            s = i;
            while (i < n && is_tchar((unsigned char)p[i]))
                i++;
            if (i == s)
                return false;
        }
    }
    return true;
}

/* Transfer-Encoding (RFC 9112 6.1): list of transfer-codings over all lines. */
static void transfer_encoding_merge(struct http_str v, struct te_state *te)
{
    size_t i = 0;
    struct http_str e;
    te->seen = true;
    while (list_next(v, &i, &e)) {
        size_t k = 0;
        while (k < e.len && is_tchar((unsigned char)e.p[k]))
            k++;
        struct http_str coding = {e.p, k};
        if (k == 0 || !te_params_valid(e.p + k, e.len - k)) {
            te->invalid = true;
            return;
        }
        if (STR_EQ_LIT(coding, "chunked")) {
            /* chunked twice, or with parameters (it has none). */
            if (te->chunked || k != e.len) {
                te->invalid = true;
                return;
            }
            te->chunked = true;
        } else {
            /* Anything after chunked: the body length cannot be determined. */
            if (te->chunked) {
                te->invalid = true;
                return;
            }
            te->unknown = true;
        }
    }
}

struct conn_tokens {
    bool close;
    bool keep_alive;
    bool invalid;
};

static void connection_merge(struct http_str v, struct conn_tokens *ct)
{
    size_t i = 0;
    struct http_str e;
    while (list_next(v, &i, &e)) {
        if (e.len == 0)
            continue; /* RFC 9110 5.6.1: ignore empty list elements */
        if (!is_token(e))
            ct->invalid = true;
        else if (STR_EQ_LIT(e, "close"))
            ct->close = true;
        else if (STR_EQ_LIT(e, "keep-alive"))
            ct->keep_alive = true;
    }
}

static bool expect_has_continue(struct http_str v)
{
    size_t i = 0;
    struct http_str e;
    while (list_next(v, &i, &e))
        if (STR_EQ_LIT(e, "100-continue"))
            return true;
    return false;
}

/* Fields exposed as views in struct http_request; the first line wins. */
#define DERIVED(name, field)                                                                       \
    {                                                                                              \
        name, sizeof(name) - 1, offsetof(struct http_request, field)                               \
    }
static const struct {
    const char *name;
    size_t len;
    size_t offset;
} derived_fields[] = {
    DERIVED("if-none-match", if_none_match),
    DERIVED("if-modified-since", if_modified_since),
    DERIVED("if-range", if_range),
    DERIVED("range", range),
    DERIVED("user-agent", user_agent),
    DERIVED("referer", referer),
    DERIVED("accept", accept),
    DERIVED("cookie", cookie),
};

static void derived_field_set(struct http_request *req, const struct http_header *h)
{
    for (size_t k = 0; k < sizeof(derived_fields) / sizeof(derived_fields[0]); k++) {
        if (!str_eq_ci_n(h->name, derived_fields[k].name, derived_fields[k].len))
            continue;
        struct http_str *dst = (struct http_str *)((char *)req + derived_fields[k].offset);
        if (!dst->p)
            *dst = h->value;
        return;
    }
}

static int interpret_fields(struct http_request *req)
{
    struct te_state te = {0};
    struct conn_tokens ct = {0};
    size_t hosts = 0;
    bool cl_invalid = false;

    for (size_t i = 0; i < req->num_headers; i++) {
        const struct http_header *h = &req->headers[i];
        if (STR_EQ_LIT(h->name, "host")) {
            if (hosts++ == 0)
                req->host = h->value;
        } else if (STR_EQ_LIT(h->name, "content-length")) {
            if (!content_length_merge(h->value, &req->content_length))
                cl_invalid = true;
        } else if (STR_EQ_LIT(h->name, "transfer-encoding")) {
            transfer_encoding_merge(h->value, &te);
        } else if (STR_EQ_LIT(h->name, "connection")) {
            connection_merge(h->value, &ct);
        } else if (STR_EQ_LIT(h->name, "expect")) {
            if (expect_has_continue(h->value))
                req->expect_continue = true;
        } else {
            derived_field_set(req, h);
        }
    }

    /* Framing first: these are the request smuggling shapes (RFC 9112 6.1, 6.3). */
    if (cl_invalid)
        return fail(req, 400);
    if (te.seen) {
        if (req->minor_version == 0 || req->content_length >= 0 || te.invalid || !te.chunked)
            return fail(req, 400);
        if (te.unknown)
            return fail(req, 501);
        req->chunked = true;
    }
    /* RFC 9112 3.2: exactly one valid Host in HTTP/1.1, at most one in 1.0. */
    if (hosts > 1 || (hosts == 0 && req->minor_version == 1))
        return fail(req, 400);
    if (hosts == 1 && !authority_valid(req->host.p, req->host.len, false, false))
        return fail(req, 400);
    if (ct.invalid)
        return fail(req, 400);

    req->keep_alive = req->minor_version == 1 ? !ct.close : ct.keep_alive && !ct.close;
    /* RFC 9110 10.1.1: ignore 100-continue from an HTTP/1.0 client. */
    if (req->minor_version == 0)
        req->expect_continue = false;
    return 0;
}

int http_parse_request(const char *buf, size_t len, const struct http_limits *lim,
                       struct http_request *req)
{
    size_t max_head = lim ? lim->max_header_size : SIZE_MAX;
    size_t max_uri = lim ? lim->max_uri_size : SIZE_MAX;
    /* Nothing past max_head can belong to an acceptable head. */
    size_t end = len < max_head ? len : max_head;
    size_t pos = 0;

    memset(req, 0, sizeof(*req));
    req->content_length = -1;

    int r = parse_request_line(buf, end, &pos, max_uri, req);
    if (r == 0)
        r = parse_fields(buf, end, &pos, req);
    if (r == NEED_MORE) {
        /* Any completion would be longer than max_head. */
        if (len >= max_head)
            return fail(req, 431);
        return NEED_MORE;
    }
    if (r < 0)
        return r;
    if (pos > INT_MAX)
        return fail(req, 431);
    r = interpret_fields(req);
    if (r < 0)
        return r;
    return (int)pos;
}

/* ---- chunked body ---- */

enum chunked_state {
    CH_SIZE_FIRST = 0, /* first hex digit of chunk-size */
    CH_SIZE,           /* more hex digits, or what follows the size */
    CH_EXT_WS,         /* BWS after the size or an extension: ';' must follow */
    CH_EXT_NAME_START, /* after ';' (and BWS): chunk-ext-name */
    CH_EXT_NAME,       /* in chunk-ext-name */
    CH_EXT_NAME_WS,    /* BWS after the name: '=' or ';' must follow */
    CH_EXT_VAL_START,  /* after '=' (and BWS): token or quoted-string */
    CH_EXT_VAL_TOKEN,
    CH_EXT_VAL_QUOTED,
    CH_EXT_VAL_ESCAPE, /* after a backslash in a quoted-string */
    CH_EXT_AFTER_VAL,  /* after a value: BWS ';', or CRLF */
    CH_SIZE_LF,        /* CR of the chunk line seen */
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER_START, /* start of a trailer line, or the final CRLF */
    CH_TRAILER_NAME,
    CH_TRAILER_VALUE,
    CH_TRAILER_LF,
    CH_END_LF, /* CR of the final CRLF seen */
    CH_DONE,
    CH_ERROR,
};

void http_chunked_init(struct http_chunked *c)
{
    memset(c, 0, sizeof(*c));
    c->state = CH_SIZE_FIRST;
}

/* One byte of the chunk line after the size: extensions up to CR. Returns the
 * next state. */
static int chunked_ext_step(struct http_chunked *c, unsigned char ch)
{
    if (ch != '\r' &&
        (++c->ext_bytes > HTTP_CHUNK_EXT_MAX || ++c->ext_total > HTTP_CHUNK_EXT_TOTAL_MAX))
        return CH_ERROR;
    switch (c->state) {
    case CH_EXT_VAL_TOKEN:
        if (is_tchar(ch))
            return CH_EXT_VAL_TOKEN;
        FALLTHROUGH;
    case CH_SIZE:
    case CH_EXT_AFTER_VAL:
        if (ch == '\r')
            return CH_SIZE_LF;
        FALLTHROUGH;
    case CH_EXT_WS:
        if (is_ows(ch))
            return CH_EXT_WS;
        return ch == ';' ? CH_EXT_NAME_START : CH_ERROR;
    case CH_EXT_NAME_START:
        if (is_ows(ch))
            return CH_EXT_NAME_START;
        return is_tchar(ch) ? CH_EXT_NAME : CH_ERROR;
    case CH_EXT_NAME:
        if (is_tchar(ch))
            return CH_EXT_NAME;
        if (ch == '\r')
            return CH_SIZE_LF;
        FALLTHROUGH;
    case CH_EXT_NAME_WS:
        if (is_ows(ch))
            return CH_EXT_NAME_WS;
        if (ch == ';')
            return CH_EXT_NAME_START;
        return ch == '=' ? CH_EXT_VAL_START : CH_ERROR;
    case CH_EXT_VAL_START:
        if (is_ows(ch))
            return CH_EXT_VAL_START;
        if (ch == '"')
            return CH_EXT_VAL_QUOTED;
        return is_tchar(ch) ? CH_EXT_VAL_TOKEN : CH_ERROR;
    case CH_EXT_VAL_QUOTED:
        /* qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text */
        if (ch == '"')
            return CH_EXT_AFTER_VAL;
        if (ch == '\\')
            return CH_EXT_VAL_ESCAPE;
        return is_ows(ch) || is_field_vchar(ch) ? CH_EXT_VAL_QUOTED : CH_ERROR;
    case CH_EXT_VAL_ESCAPE:
        return is_ows(ch) || is_field_vchar(ch) ? CH_EXT_VAL_QUOTED : CH_ERROR;
    default:
        return CH_ERROR;
    }
}

/* One byte of the trailer section. Returns the next state. */
static int chunked_trailer_step(struct http_chunked *c, unsigned char ch)
{
    /* The final CRLF does not count. */
    bool final_crlf = c->state == CH_END_LF || (c->state == CH_TRAILER_START && ch == '\r');
    if (!final_crlf && ++c->trailer_bytes > HTTP_CHUNK_TRAILER_MAX)
        return CH_ERROR;
    switch (c->state) {
    case CH_TRAILER_START:
        if (ch == '\r')
            return CH_END_LF;
        return is_tchar(ch) ? CH_TRAILER_NAME : CH_ERROR;
    case CH_TRAILER_NAME:
        if (is_tchar(ch))
            return CH_TRAILER_NAME;
        return ch == ':' ? CH_TRAILER_VALUE : CH_ERROR;
    case CH_TRAILER_VALUE:
        if (ch == '\r')
            return CH_TRAILER_LF;
        return is_ows(ch) || is_field_vchar(ch) ? CH_TRAILER_VALUE : CH_ERROR;
    case CH_TRAILER_LF:
        return ch == '\n' ? CH_TRAILER_START : CH_ERROR;
    case CH_END_LF:
        return ch == '\n' ? CH_DONE : CH_ERROR;
    default:
        return CH_ERROR;
    }
}

int http_chunked_decode(struct http_chunked *c, char *buf, size_t *len)
{
    size_t in = 0, out = 0, n = *len;

    c->consumed = 0;
    while (in < n && c->state != CH_DONE && c->state != CH_ERROR) {
        unsigned char ch = (unsigned char)buf[in];
        int hex;

        switch (c->state) {
        case CH_SIZE_FIRST:
        case CH_SIZE:
            hex = text_hex_value(ch);
            if (hex >= 0) {
                /* 16 digits cannot overflow uint64; the value must also fit
                 * in int64 for callers that count in off_t. */
                c->remaining = c->remaining * 16 + (uint64_t)hex;
                if (++c->digits > HTTP_CHUNK_SIZE_MAX_DIGITS || c->remaining > (uint64_t)INT64_MAX)
                    c->state = CH_ERROR;
                else
                    c->state = CH_SIZE;
            } else if (c->state == CH_SIZE_FIRST) {
                c->state = CH_ERROR;
            } else {
                c->state = chunked_ext_step(c, ch);
            }
            in++;
            break;
        case CH_EXT_WS:
        case CH_EXT_NAME_START:
        case CH_EXT_NAME:
        case CH_EXT_NAME_WS:
        case CH_EXT_VAL_START:
        case CH_EXT_VAL_TOKEN:
        case CH_EXT_VAL_QUOTED:
        case CH_EXT_VAL_ESCAPE:
        case CH_EXT_AFTER_VAL:
            c->state = chunked_ext_step(c, ch);
            in++;
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                c->state = CH_ERROR;
            else
                c->state = c->remaining ? CH_DATA : CH_TRAILER_START;
            in++;
            break;
        case CH_DATA: {
            size_t take = n - in;
            if (take > c->remaining)
                take = (size_t)c->remaining;
            if (out != in)
                memmove(buf + out, buf + in, take);
            out += take;
            in += take;
            c->remaining -= take;
            if (c->remaining == 0)
                c->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            c->state = ch == '\r' ? CH_DATA_LF : CH_ERROR;
            in++;
            break;
        case CH_DATA_LF:
            if (ch != '\n') {
                c->state = CH_ERROR;
            } else {
                c->state = CH_SIZE_FIRST;
                c->digits = 0;
                c->ext_bytes = 0;
            }
            in++;
            break;
        default:
            c->state = chunked_trailer_step(c, ch);
            in++;
            break;
        }
    }

    if (c->state == CH_ERROR)
        return -1;
    c->consumed = in;
    *len = out;
    if (c->state == CH_DONE) {
        c->consumed_after = n - in;
        return 1;
    }
    return 0;
}
