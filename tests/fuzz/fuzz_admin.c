/* libFuzzer target for the admin socket's line protocol and the JSON helpers.
 *
 * Beyond "no crash, no sanitizer report" it checks the contracts: the return
 * value in [-2, len], -2 exactly when no newline has arrived, every view inside
 * the line, the line rebuilt from its views (nothing skipped or invented), the
 * same result with or without the bytes after the line, -2 for every prefix,
 * argument lookup returning the first match, and round trips through
 * admin_decode_value/admin_encode_value and json_append_string/
 * json_find_member/json_decode_string. */
#include "common/buf.h"
#include "maint/admin.h"
#include "maint/json.h"

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

/* A JSON string written by json_append_string is found again as a member and
 * decodes back to the same bytes. */
static void check_json_roundtrip(const char *p, size_t n)
{
    struct buf obj, dec;
    buf_init(&obj, 16 * n + 64);
    buf_init(&dec, n);
    CHECK(buf_append_str(&obj, "{ \"a\" : [1,{\"}\":\"]\"}], \"k\":") == 0);
    size_t vstart = obj.len;
    CHECK(json_append_string(&obj, p, n) == 0);
    size_t vend = obj.len;
    CHECK(buf_append_str(&obj, ",\"k\":1}") == 0);
    const char *val;
    size_t vlen;
    CHECK(json_find_member(obj.data, obj.len, "k", &val, &vlen) == 0);
    CHECK(val == obj.data + vstart && vlen == vend - vstart);
    CHECK(json_decode_string(val, vlen, &dec) == 0);
    CHECK(dec.len == n && (n == 0 || memcmp(dec.data, p, n) == 0));
    CHECK(json_find_member(obj.data, obj.len, "missing", &val, &vlen) == -ENOENT);
    /* No byte beyond the object's end is needed. */
    CHECK(json_find_member(obj.data, vend, "k", &val, &vlen) == 0);
    CHECK(json_find_member(obj.data, vend - 1, "k", &val, &vlen) == -EINVAL);
    buf_finish(&obj);
    buf_finish(&dec);
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

/* json_find_member on arbitrary text: any span it returns lies inside it. */
static void check_json_raw(const char *buf, size_t size)
{
    static const char *const keys[] = {"ok", "error", "", "text"};
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        const char *val = NULL;
        size_t vlen = 0;
        int r = json_find_member(buf, size, keys[k], &val, &vlen);
        CHECK(r == 0 || r == -ENOENT || r == -EINVAL);
        if (r != 0)
            continue;
        CHECK(val >= buf && vlen > 0 && vlen <= size && (size_t)(val - buf) <= size - vlen);
        struct buf dec;
        buf_init(&dec, vlen);
        int d = json_decode_string(val, vlen, &dec);
        CHECK(d == 0 || d == -EINVAL);
        CHECK(d != 0 || val[0] == '"');
        buf_finish(&dec);
    }
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

    check_json_raw(buf, size);
    free(buf);
    return 0;
}
