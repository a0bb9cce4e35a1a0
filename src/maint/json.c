#include "maint/json.h"

#include "common/buf.h"
#include "common/text.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int json_append_string(struct buf *b, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    int r = buf_append(b, "\"", 1);
    size_t run = 0; /* bytes that need no escape, appended in one go */
    for (size_t i = 0; i < n && r == 0; i++) {
        unsigned char ch = (unsigned char)p[i];
        char esc[7];
        size_t elen = 0;
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            elen = 2;
        } else if (ch == '\n') {
            memcpy(esc, "\\n", 2);
            elen = 2;
        } else if (ch == '\r') {
            memcpy(esc, "\\r", 2);
            elen = 2;
        } else if (ch == '\t') {
            memcpy(esc, "\\t", 2);
            elen = 2;
        } else if (ch < 0x20 || ch == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            elen = 6;
        } else {
            run++;
            continue;
        }
        r = buf_append(b, p + i - run, run);
        run = 0;
        if (r == 0)
            r = buf_append(b, esc, elen);
    }
    if (r == 0)
        r = buf_append(b, p + n - run, run);
    if (r == 0)
        r = buf_append(b, "\"", 1);
    return r;
}

static size_t skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* Index just past the string starting at s[i] == '"', or 0 when unterminated. */
static size_t skip_string(const char *s, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return 0;
}

/* Index just past the value starting at s[i], or 0 when malformed. Nested
 * objects and arrays are skipped by counting brackets outside strings. */
static size_t skip_value(const char *s, size_t len, size_t i)
{
    if (i >= len)
        return 0;
    if (s[i] == '"')
        return skip_string(s, len, i);
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        while (i < len) {
            if (s[i] == '"') {
                i = skip_string(s, len, i);
                if (!i)
                    return 0;
                continue;
            }
            if (s[i] == '{' || s[i] == '[')
                depth++;
            else if (s[i] == '}' || s[i] == ']')
                depth--;
            i++;
            if (depth == 0)
                return i;
        }
        return 0;
    }
    size_t start = i;
    while (i < len && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\n')
        i++;
    return i > start ? i : 0;
}

int json_find_member(const char *json, size_t len, const char *key, const char **val, size_t *vlen)
{
    size_t klen = strlen(key);
    size_t i = skip_ws(json, len, 0);
    if (i >= len || json[i] != '{')
        return -EINVAL;
    i = skip_ws(json, len, i + 1);
    if (i < len && json[i] == '}')
        return -ENOENT;
    while (i < len) {
        if (json[i] != '"')
            return -EINVAL;
        size_t kend = skip_string(json, len, i);
        if (!kend)
            return -EINVAL;
        bool match = kend - i - 2 == klen && memcmp(json + i + 1, key, klen) == 0;
        i = skip_ws(json, len, kend);
        if (i >= len || json[i] != ':')
            return -EINVAL;
        i = skip_ws(json, len, i + 1);
        size_t vend = skip_value(json, len, i);
        if (!vend)
            return -EINVAL;
        if (match) {
            *val = json + i;
            *vlen = vend - i;
            return 0;
        }
        i = skip_ws(json, len, vend);
        if (i < len && json[i] == '}')
            return -ENOENT;
        if (i >= len || json[i] != ',')
            return -EINVAL;
        i = skip_ws(json, len, i + 1);
    }
    return -EINVAL;
}

static int hex4(const char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int d = text_hex_value(p[i]);
        if (d < 0)
            return -1;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 0;
}

static int append_utf8(struct buf *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return buf_append(b, u, n);
}

int json_decode_string(const char *val, size_t vlen, struct buf *b)
{
    if (vlen < 2 || val[0] != '"' || val[vlen - 1] != '"')
        return -EINVAL;
    const char *p = val + 1, *end = val + vlen - 1;
    while (p < end) {
        int r;
        if (*p != '\\') {
            const char *q = p;
            while (q < end && *q != '\\' && *q != '"' && (unsigned char)*q >= 0x20)
                q++;
            if (q < end && *q != '\\')
                return -EINVAL; /* a raw quote or control character is not JSON */
            r = buf_append(b, p, (size_t)(q - p));
            p = q;
        } else {
            if (end - p < 2)
                return -EINVAL;
            char e = p[1];
            p += 2;
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            const char *k = strchr(from, e);
            if (e && k) {
                r = buf_append(b, &to[k - from], 1);
            } else if (e == 'u') {
                uint32_t cp;
                if (end - p < 4 || hex4(p, &cp) < 0)
                    return -EINVAL;
                p += 4;
                if (cp >= 0xdc00 && cp <= 0xdfff)
                    return -EINVAL; /* a low surrogate must follow a high one */
                if (cp >= 0xd800 && cp < 0xdc00) {
                    uint32_t lo;
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) < 0 ||
                        lo < 0xdc00 || lo > 0xdfff)
                        return -EINVAL;
                    p += 6;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
                r = append_utf8(b, cp);
            } else {
                return -EINVAL;
            }
        }
        if (r < 0)
            return r;
    }
    return 0;
}
