/* libFuzzer target for the admin socket: the line parser and the dispatch.
 *
 * Parser: beyond "no crash, no sanitizer report" it checks the contracts: the
 * return value in [-2, len], -2 exactly when no newline has arrived, every
 * view inside the line, the line rebuilt from its views (nothing skipped or
 * invented), the same result with or without the bytes after the line, -2 for
 * every prefix, argument lookup returning the first match, and round trips
 * through admin_decode_value/admin_encode_value.
 *
 * Dispatch: the input is fed as a client's bytes (through a socketpair) to the
 * admin's own client_process(), with commands that echo their decoded
 * arguments into the reply (failing on bytes that are not UTF-8), hold the
 * client for a deferred reply, and a status section that does the same: every
 * reply line must be one JSON object with a boolean "ok", at most one per
 * request line, and a deferred reply must arrive once released. The module is
 * included so that its static functions are reachable (the TESTABLE habit). */
#include "../../src/admin/admin.c"

#include "fuzz.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_name(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9') || p[i] == '_' ||
              p[i] == '-'))
            return false;
    return n > 0;
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_value(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x21 || p[i] > 0x7e)
            return false;
        if (p[i] == '%' && (n - i < 3 || !is_hex(p[i + 1]) || !is_hex(p[i + 2])))
            return false;
    }
    return true;
}

static bool same_request(const struct admin_request *a, const struct admin_request *b)
{
    if (a->command.p != b->command.p || a->command.len != b->command.len || a->nargs != b->nargs)
        return false;
    for (size_t i = 0; i < a->nargs; i++)
        if (a->args[i].key.p != b->args[i].key.p || a->args[i].key.len != b->args[i].key.len ||
            a->args[i].value.p != b->args[i].value.p ||
            a->args[i].value.len != b->args[i].value.len)
            return false;
    return true;
}

/* The line (buf, n), newline included, must be exactly: spaces, COMMAND,
 * (spaces KEY=VALUE)*, spaces, optional CR, LF, with the views in order. */
static void check_layout(const char *buf, size_t n, const struct admin_request *req)
{
    size_t end = n - 1;
    if (end > 0 && buf[end - 1] == '\r')
        end--;
    size_t pos = 0;
    while (pos < end && buf[pos] == ' ')
        pos++;
    CHECK(req->command.p == buf + pos);
    CHECK(is_name(req->command.p, req->command.len));
    pos += req->command.len;
    CHECK(req->nargs <= ADMIN_MAX_ARGS);
    for (size_t i = 0; i < req->nargs; i++) {
        size_t gap = pos;
        while (pos < end && buf[pos] == ' ')
            pos++;
        CHECK(pos > gap);
        CHECK(req->args[i].key.p == buf + pos);
        CHECK(is_name(req->args[i].key.p, req->args[i].key.len));
        pos += req->args[i].key.len;
        CHECK(pos < end && buf[pos] == '=');
        pos++;
        CHECK(req->args[i].value.p == buf + pos);
        CHECK(req->args[i].value.len <= end - pos);
        CHECK(is_value(req->args[i].value.p, req->args[i].value.len));
        pos += req->args[i].value.len;
    }
    CHECK(pos == end || buf[pos] == ' ');
    while (pos < end && buf[pos] == ' ')
        pos++;
    CHECK(pos == end);
}

/* A decoded value that is UTF-8 survives a reply line unchanged. */
static void check_json_roundtrip(const char *p, size_t n)
{
    json_t *v = json_stringn(p, n);
    if (!v)
        return; /* not UTF-8 (or has a NUL jansson takes): add would fail */
    json_t *obj = json_object();
    CHECK(admin_json_add(obj, json_pack("{s:o}", "k", v)) == 0);
    struct buf line;
    buf_init(&line, ADMIN_REPLY_MAX);
    admin_reply_format(obj, &line);
    CHECK(line.len > 0 && line.data[line.len - 1] == '\n');
    CHECK(memchr(line.data, '\n', line.len) == line.data + line.len - 1);
    json_t *back = json_loadb(line.data, line.len - 1, JSON_ALLOW_NUL, NULL);
    CHECK(back && json_equal(back, obj));
    json_decref(back);
    json_decref(obj);
    buf_finish(&line);
}

static void check_value(const struct admin_str *v)
{
    /* Exactly sized output buffers, so ASan sees any write past them. */
    char *out = malloc(v->len + 1);
    CHECK(out);
    int d = admin_decode_value(v, out, v->len + 1);
    CHECK(d >= 0 && (size_t)d <= v->len && out[d] == '\0');
    char *tight = malloc((size_t)d + 1);
    CHECK(tight);
    CHECK(admin_decode_value(v, tight, (size_t)d + 1) == d);
    CHECK(memcmp(tight, out, (size_t)d + 1) == 0);
    CHECK(admin_decode_value(v, tight, (size_t)d) == -1);
    free(tight);

    /* encode(decode(v)) is a valid VALUE that decodes to the same bytes. */
    struct buf enc;
    buf_init(&enc, 3 * (size_t)d + 1);
    CHECK(admin_encode_value(&enc, out, (size_t)d) == 0);
    CHECK(is_value(enc.data ? enc.data : "", enc.len));
    struct admin_str ev = {enc.data ? enc.data : "", enc.len};
    char *again = malloc((size_t)d + 1);
    CHECK(again);
    CHECK(admin_decode_value(&ev, again, (size_t)d + 1) == d);
    CHECK(memcmp(again, out, (size_t)d) == 0);
    free(again);
    buf_finish(&enc);

    check_json_roundtrip(out, (size_t)d);
    free(out);
}

static void check_args(const struct admin_request *req)
{
    for (size_t i = 0; i < req->nargs; i++) {
        char key[ADMIN_LINE_MAX];
        size_t klen = req->args[i].key.len;
        CHECK(klen < sizeof(key));
        memcpy(key, req->args[i].key.p, klen);
        key[klen] = '\0';
        size_t first = 0;
        while (req->args[first].key.len != klen || memcmp(req->args[first].key.p, key, klen) != 0)
            first++;
        CHECK(first <= i);
        CHECK(admin_request_arg(req, key) == &req->args[first].value);
        check_value(&req->args[i].value);
    }
    CHECK(admin_request_arg(req, "KEY") == NULL); /* keys are lower case */
}

/* ---- dispatch ---- */

static struct admin_client *held;

/* echo: every argument, decoded, as a string member. */
static int fz_echo(struct admin_client *c, const struct admin_request *req, json_t *reply,
                   void *arg)
{
    for (size_t i = 0; i < req->nargs; i++) {
        char key[ADMIN_LINE_MAX], val[ADMIN_LINE_MAX];
        memcpy(key, req->args[i].key.p, req->args[i].key.len);
        key[req->args[i].key.len] = '\0';
        int n = admin_decode_value(&req->args[i].value, val, sizeof(val));
        CHECK(n >= 0);
        int r = admin_json_add(reply, json_pack("{s:s%}", key, val, (size_t)n));
        if (r < 0)
            return r;
    }
    return 0;
}

static int fz_hold(struct admin_client *c, const struct admin_request *req, json_t *reply,
                   void *arg)
{
    if (held)
        return admin_reply_error(reply, "already holding");
    held = c;
    admin_client_hold(c);
    return ADMIN_REPLY_LATER;
}

static int fz_section(json_t *section, struct buf *text, void *arg)
{
    const char *last = arg;
    int r = buf_append_str(text, "fuzz: ");
    if (r == 0)
        r = buf_append_str(text, last);
    return r < 0 ? r : admin_json_add(section, json_pack("{s:s}", "last", last));
}

static struct evloop *fz_loop;
static struct admin fz_admin;
static char fz_last[64];

static void fz_init(void)
{
    if (fz_loop)
        return;
    fz_loop = evloop_create();
    CHECK(fz_loop);
    fz_admin.loop = fz_loop;
    fz_admin.fd = -1;
    fz_admin.max_clients = ADMIN_MAX_CLIENTS;
    fz_admin.timeout_ms = ADMIN_TIMEOUT_MS;
    fz_admin.idle_ms = ADMIN_IDLE_MS;
    CHECK(admin_register(&fz_admin, "echo", fz_echo, NULL) == 0);
    CHECK(admin_register(&fz_admin, "hold", fz_hold, NULL) == 0);
    CHECK(admin_register_status(&fz_admin, "fuzz", fz_section, fz_last) == 0);
}

/* Every line read from fd is a JSON object with a boolean "ok"; returns the
 * number of lines. */
static size_t check_replies(int fd, struct buf *acc)
{
    char tmp[65536];
    ssize_t n;
    while ((n = recv(fd, tmp, sizeof(tmp), 0)) > 0)
        CHECK(buf_append(acc, tmp, (size_t)n) == 0);
    size_t lines = 0;
    if (!acc->data)
        return 0; /* nothing was read: no buffer yet */
    const char *p = acc->data, *end = acc->data + acc->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        CHECK(nl); /* replies are whole lines */
        /* \u0000 is valid JSON (a decoded %00): allow it. */
        json_t *j = json_loadb(p, (size_t)(nl - p), JSON_ALLOW_NUL, NULL);
        CHECK(json_is_object(j) && json_is_boolean(json_object_get(j, "ok")));
        json_decref(j);
        lines++;
        p = nl + 1;
    }
    buf_reset(acc);
    return lines;
}

static void check_dispatch(const char *buf, size_t size)
{
    fz_init();
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    int big = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    struct admin_client *c = xcalloc(1, sizeof(*c));
    c->a = &fz_admin;
    c->fd = sv[0];
    c->refs = 1;
    c->phase = PHASE_LINE;
    c->events = EPOLLIN; /* as if watched: the loop is never run here */
    evloop_timer_init(&c->timer, client_on_timer, c);
    buf_init(&c->in, ADMIN_LINE_MAX);
    buf_init(&c->out, 4 * ADMIN_REPLY_MAX);
    list_append(c);
    fz_admin.nclients++;
    snprintf(fz_last, sizeof(fz_last), "%zu bytes\n", size);

    size_t newlines = 0;
    for (size_t i = 0; i < size; i++)
        newlines += buf[i] == '\n';
    size_t take = size < ADMIN_LINE_MAX ? size : ADMIN_LINE_MAX;
    CHECK(buf_append(&c->in, buf, take) == 0);
    c->refs++; /* as client_on_event does */
    client_process(c);
    struct buf acc;
    buf_init(&acc, 64 * ADMIN_REPLY_MAX);
    size_t replies = check_replies(sv[1], &acc);
    if (held) {
        /* The deferred reply arrives, then the lines that waited. */
        struct admin_client *h = held;
        held = NULL;
        admin_client_reply(h, json_pack("{s:b}", "released", 1));
        size_t more = check_replies(sv[1], &acc);
        CHECK(more >= 1 || h->fd < 0);
        replies += more;
        if (held) {
            h = held;
            held = NULL;
            admin_client_reply(h, NULL); /* NULL: still a valid (error) line */
            replies += check_replies(sv[1], &acc);
        }
    }
    /* One reply per request line, plus at most one for a line too long. */
    CHECK(replies <= newlines + 1);
    client_close(c);
    client_unref(c);
    while (held) { /* a third hold in one input: release without a client */
        struct admin_client *h = held;
        held = NULL;
        admin_client_reply(h, NULL);
    }
    buf_finish(&acc);
    close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copy so that ASan catches any read past len. */
    char *buf = malloc(size ? size : 1);
    CHECK(buf);
    memcpy(buf, data, size);

    struct admin_request req;
    int r = admin_parse_line(buf, size, &req);
    const char *nl = memchr(buf, '\n', size);
    CHECK(r == -2 || r == -1 || (r > 0 && (size_t)r <= size));
    CHECK((r == -2) == (nl == NULL));
    if (r > 0) {
        size_t n = (size_t)r;
        CHECK(buf + n - 1 == nl);
        check_layout(buf, n, &req);

        /* The bytes after the line change nothing; no prefix is complete. */
        struct admin_request again;
        CHECK(admin_parse_line(buf, n, &again) == r);
        CHECK(same_request(&req, &again));
        CHECK(admin_parse_line(buf, n - 1, &again) == -2);
        size_t cut = (size_t)data[0] * 131 % n;
        CHECK(admin_parse_line(buf, cut, &again) == -2);
        check_args(&req);

        /* The rest of the input parses on its own like a pipelined request. */
        struct admin_request next;
        int r2 = admin_parse_line(buf + n, size - n, &next);
        CHECK(r2 == -2 || r2 == -1 || (r2 > 0 && (size_t)r2 <= size - n));
    } else if (r == -1) {
        struct admin_request again;
        CHECK(admin_parse_line(buf, (size_t)(nl - buf) + 1, &again) == -1);
    }

    check_dispatch(buf, size);
    free(buf);
    return 0;
}
