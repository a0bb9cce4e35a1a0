#include "fcgi/cgi.h"

#include "common/buf.h"
#include "common/net.h"
#include "fcgi/record.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- meta-variables ---- */

static int nv(struct buf *out, const char *name, const char *value, size_t vlen)
{
    return fcgi_nv_append(out, name, strlen(name), value, vlen);
}

static int nv_str(struct buf *out, const char *name, const char *value)
{
    return nv(out, name, value, strlen(value));
}

static bool eq_ci(struct http_str s, const char *lower)
{
    return http_str_eq_ci(s, lower);
}

/* Headers that have their own variable or describe this hop only. */
static bool header_skipped(struct http_str name)
{
    static const char *const skip[] = {"content-length", "content-type", "transfer-encoding",
                                       "connection", "proxy"};
    for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
        if (eq_ci(name, skip[i]))
            return true;
    return memchr(name.p, '_', name.len) != NULL;
}

static bool same_name(struct http_str a, struct http_str b)
{
    return a.len == b.len && strncasecmp(a.p, b.p, a.len) == 0;
}

/* HTTP_<NAME> for header i, its value joined with later repeats; a repeat
 * seen before (j < i with the same name) was already sent. */
static int header_var(struct buf *out, struct buf *tmp, const struct http_request *req, size_t i)
{
    struct http_str name = req->headers[i].name;
    for (size_t j = 0; j < i; j++)
        if (same_name(req->headers[j].name, name))
            return 0;
    buf_reset(tmp);
    int r = buf_append_str(tmp, "HTTP_");
    for (size_t k = 0; k < name.len && r == 0; k++) {
        char ch = name.p[k];
        ch = ch == '-' ? '_' : (ch >= 'a' && ch <= 'z') ? (char)(ch - 32) : ch;
        r = buf_append(tmp, &ch, 1);
    }
    size_t nlen = tmp->len;
    const char *sep = eq_ci(name, "cookie") ? "; " : ", ";
    bool first = true;
    for (size_t j = i; j < req->num_headers && r == 0; j++) {
        if (!same_name(req->headers[j].name, name))
            continue;
        if (!first)
            r = buf_append_str(tmp, sep);
        if (r == 0)
            r = buf_append(tmp, req->headers[j].value.p, req->headers[j].value.len);
        first = false;
    }
    if (r < 0)
        return r;
    return fcgi_nv_append(out, tmp->data, nlen, tmp->data + nlen, tmp->len - nlen);
}

/* SERVER_NAME and SERVER_PORT from the authority (or Host). */
static int server_name_port(struct buf *out, const struct cgi_request_info *in)
{
    const struct http_request *req = in->req;
    struct http_str host = req->authority.p ? req->authority : req->host;
    const char *p = host.p ? host.p : "";
    size_t len = host.p ? host.len : 0;
    size_t name_len = len;
    char port[8];
    snprintf(port, sizeof(port), "%u", in->server_port);
    /* "[v6]:port" or "name:port": the port follows the last ':' outside brackets. */
    const char *close = len && p[0] == '[' ? memchr(p, ']', len) : NULL;
    const char *from = close ? close : p;
    const char *colon = memchr(from, ':', len - (size_t)(from - p));
    if (colon && (size_t)(p + len - colon - 1) < sizeof(port)) {
        name_len = (size_t)(colon - p);
        memcpy(port, colon + 1, (size_t)(p + len - colon - 1));
        port[p + len - colon - 1] = '\0';
    }
    int r = nv(out, "SERVER_NAME", p, name_len);
    return r < 0 ? r : nv_str(out, "SERVER_PORT", port);
}

static int remote_vars(struct buf *out, const struct sockaddr *sa)
{
    char ip[64] = "";
    unsigned port = 0;
    if (sa) {
        net_format_ip(sa, ip, sizeof(ip));
        if (sa->sa_family == AF_INET)
            port = ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
        else if (sa->sa_family == AF_INET6)
            port = ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
    }
    char num[8];
    snprintf(num, sizeof(num), "%u", port);
    int r = nv_str(out, "REMOTE_ADDR", ip);
    return r < 0 ? r : nv_str(out, "REMOTE_PORT", num);
}

int cgi_params_build(struct buf *out, const struct cgi_request_info *in)
{
    const struct http_request *req = in->req;
    /* SCRIPT_NAME is the location without its trailing slash; PATH_INFO the
     * rest of the path, from its '/' on. */
    size_t loc_len = strlen(in->location);
    while (loc_len && in->location[loc_len - 1] == '/')
        loc_len--;
    if (loc_len > in->path_len)
        loc_len = in->path_len;
    char proto[16];
    snprintf(proto, sizeof(proto), "HTTP/1.%d", req->minor_version);
    /* REQUEST_URI: the target as sent; for the absolute form, path and query. */
    struct http_str uri = req->target;
    if (req->authority.p && req->path.p)
        uri = (struct http_str){req->path.p, req->target.p + req->target.len - req->path.p};
    struct buf tmp;
    buf_init(&tmp, out->max);
    int r = nv_str(out, "GATEWAY_INTERFACE", "CGI/1.1");
    if (r == 0)
        r = nv_str(out, "SERVER_SOFTWARE", in->server_software);
    if (r == 0)
        r = nv_str(out, "SERVER_PROTOCOL", proto);
    if (r == 0)
        r = server_name_port(out, in);
    if (r == 0)
        r = nv(out, "REQUEST_METHOD", req->method.p, req->method.len);
    if (r == 0)
        r = nv(out, "REQUEST_URI", uri.p, uri.len);
    if (r == 0)
        r = nv(out, "QUERY_STRING", req->query.p ? req->query.p : "", req->query.len);
    if (r == 0)
        r = nv(out, "SCRIPT_NAME", in->path, loc_len);
    if (r == 0)
        r = nv(out, "PATH_INFO", in->path + loc_len, in->path_len - loc_len);
    if (r == 0 && in->script_filename[0]) {
        r = nv_str(out, "SCRIPT_FILENAME", in->script_filename);
    } else if (r == 0) {
        r = buf_append_str(&tmp, in->document_root);
        if (r == 0)
            r = buf_append(&tmp, in->path, in->path_len);
        if (r == 0)
            r = nv(out, "SCRIPT_FILENAME", tmp.data, tmp.len);
    }
    if (r == 0)
        r = nv_str(out, "DOCUMENT_ROOT", in->document_root);
    if (r == 0)
        r = remote_vars(out, in->peer);
    if (r == 0 && in->content_length >= 0) {
        char num[24];
        snprintf(num, sizeof(num), "%lld", (long long)in->content_length);
        r = nv_str(out, "CONTENT_LENGTH", num);
    }
    struct http_str ctype = http_find_header(req, "content-type");
    if (r == 0 && ctype.p)
        r = nv(out, "CONTENT_TYPE", ctype.p, ctype.len);
    if (r == 0)
        r = nv_str(out, "REDIRECT_STATUS", "200");
    if (r == 0 && in->https)
        r = nv_str(out, "HTTPS", "on");
    for (size_t i = 0; i < req->num_headers && r == 0; i++)
        if (!header_skipped(req->headers[i].name))
            r = header_var(out, &tmp, req, i);
    buf_finish(&tmp);
    return r;
}

/* ---- the response header block ---- */

static bool is_tchar(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static bool hop_by_hop(struct http_str name)
{
    static const char *const hop[] = {"connection", "keep-alive", "transfer-encoding",
                                      "te",         "trailer",    "proxy-connection",
                                      "upgrade"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (eq_ci(name, hop[i]))
            return true;
    return false;
}

/* "NNN" or "NNN reason": returns the status or -1. */
static int parse_status(struct http_str v)
{
    if (v.len < 3 || (v.len > 3 && v.p[3] != ' '))
        return -1;
    int s = 0;
    for (int i = 0; i < 3; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -1;
        s = s * 10 + (v.p[i] - '0');
    }
    return s >= 200 && s <= 599 ? s : -1;
}

static int64_t parse_length(struct http_str v)
{
    if (v.len == 0 || v.len > 18)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -1;
        n = n * 10 + (v.p[i] - '0');
    }
    return n;
}

/* One "name: value" line (without its line end) into h. */
static int parse_line(const char *p, size_t len, struct cgi_head *h, bool *has_status)
{
    size_t i = 0;
    while (i < len && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i == len || p[i] != ':')
        return -1;
    struct http_str name = {p, i};
    i++;
    for (size_t k = i; k < len; k++) {
        unsigned char ch = (unsigned char)p[k];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return -1;
    }
    while (i < len && (p[i] == ' ' || p[i] == '\t'))
        i++;
    size_t end = len;
    while (end > i && (p[end - 1] == ' ' || p[end - 1] == '\t'))
        end--;
    struct http_str value = {p + i, end - i};
    if (eq_ci(name, "status")) {
        if (*has_status || (h->status = parse_status(value)) < 0)
            return -1;
        *has_status = true;
        return 0;
    }
    if (eq_ci(name, "content-length")) {
        int64_t n = parse_length(value);
        if (n < 0 || (h->content_length >= 0 && h->content_length != n))
            return -1;
        h->content_length = n;
        return 0;
    }
    if (hop_by_hop(name))
        return 0;
    if (eq_ci(name, "location")) {
        if (h->location.p || value.len == 0)
            return -1;
        h->location = value;
    }
    if (h->num_headers == CGI_MAX_HEADERS)
        return -1;
    h->headers[h->num_headers++] = (struct cgi_header){name, value};
    return 0;
}

long cgi_parse_head(const char *buf, size_t len, struct cgi_head *out)
{
    memset(out, 0, sizeof(*out));
    out->content_length = -1;
    bool has_status = false;
    size_t pos = 0;
    for (;;) {
        if (pos >= CGI_HEAD_MAX)
            return -1;
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl)
            return len >= CGI_HEAD_MAX ? -1 : -2;
        size_t line_len = (size_t)(nl - (buf + pos));
        size_t next = pos + line_len + 1;
        if (next > CGI_HEAD_MAX)
            return -1;
        if (line_len && buf[pos + line_len - 1] == '\r')
            line_len--;
        if (line_len == 0) {
            pos = next;
            break;
        }
        if (parse_line(buf + pos, line_len, out, &has_status) < 0)
            return -1;
        pos = next;
    }
    if (!has_status)
        out->status = out->location.p ? 302 : 200;
    out->local_redirect = !has_status && out->location.p && out->location.p[0] == '/' &&
                          (out->location.len == 1 || out->location.p[1] != '/');
    return (long)pos;
}
