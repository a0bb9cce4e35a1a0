/* Object keys for offloaded files (see keymap.h). */
#include "offload/keymap.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdbool.h>
#include <string.h>

/* Length of the UTF-8 sequence starting at s[0] (at most n bytes available), or 0 when
 * it is not a valid, shortest-form encoding of a scalar value (no surrogates, nothing
 * above U+10FFFF). The second-byte ranges are those of RFC 3629's table. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t len;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4;
    else
        return 0; /* continuation byte, overlong lead C0/C1, or F5..FF */
    if (c == 0xe0)
        lo = 0xa0; /* overlong three-byte forms */
    else if (c == 0xed)
        hi = 0x9f; /* UTF-16 surrogates D800..DFFF */
    else if (c == 0xf0)
        lo = 0x90; /* overlong four-byte forms */
    else if (c == 0xf4)
        hi = 0x8f; /* above U+10FFFF */
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

static bool segment_ok(const char *seg, size_t n)
{
    if (n == 0)
        return false;
    if (n == 1 && seg[0] == '.')
        return false;
    return !(n == 2 && seg[0] == '.' && seg[1] == '.');
}

int offload_rel_check(const char *rel, size_t rel_len)
{
    const unsigned char *s = (const unsigned char *)rel;
    size_t seg = 0; /* start of the current segment */

    if (rel_len == 0)
        return -EINVAL;
    for (size_t i = 0; i < rel_len;) {
        if (s[i] == '/') {
            if (!segment_ok(rel + seg, i - seg))
                return -EINVAL;
            seg = ++i;
            continue;
        }
        if (s[i] < 0x20 || s[i] == 0x7f || s[i] == '\\')
            return -EINVAL; /* NUL, CR, LF and the other control bytes included */
        size_t n = utf8_seq_len(s + i, rel_len - i);
        if (n == 0)
            return -EINVAL;
        i += n;
    }
    return segment_ok(rel + seg, rel_len - seg) ? 0 : -EINVAL;
}

int offload_key_from_rel(const char *prefix, const char *rel, size_t rel_len, char *out,
                         size_t outlen)
{
    size_t plen = prefix ? strlen(prefix) : 0;
    int r = offload_rel_check(rel, rel_len);

    if (r < 0)
        return r;
    if (rel_len > OFFLOAD_KEY_MAX || plen > OFFLOAD_KEY_MAX - rel_len)
        return -ENAMETOOLONG;
    if (plen + rel_len >= outlen)
        return -ENAMETOOLONG;
    if (plen)
        memcpy(out, prefix, plen);
    memcpy(out + plen, rel, rel_len);
    out[plen + rel_len] = '\0';
    return (int)(plen + rel_len);
}

int offload_rel_from_url(const char *url_prefix, const char *path, size_t len, const char **rel,
                         size_t *rel_len)
{
    size_t plen = strlen(url_prefix);

    if (len < plen || memcmp(path, url_prefix, plen) != 0)
        return 0;
    /* "/static" must match "/static/x" but not "/staticfoo". */
    if (plen == 0 || url_prefix[plen - 1] != '/') {
        if (len == plen || path[plen] != '/')
            return 0;
        plen++;
    }
    if (offload_rel_check(path + plen, len - plen) < 0)
        return -EINVAL;
    *rel = path + plen;
    *rel_len = len - plen;
    return 1;
}

/* fnmatch(pattern, name, 0) == 0 without fnmatch for the usual ignore patterns
 * (".*", "*.tmp", "*.part", "core"): 1 match, 0 no match, -1 not such a pattern.
 * With no flags '*' matches any bytes, a leading '.' and '/' included, so a
 * single leading or trailing '*' before or after a literal is a suffix or
 * prefix test. */
static int glob_literal(const char *pat, const char *name)
{
    size_t plen = strlen(pat);
    bool star_first = plen > 0 && pat[0] == '*';
    bool star_last = !star_first && plen > 0 && pat[plen - 1] == '*';
    const char *lit = pat + star_first;
    size_t llen = plen - star_first - star_last;
    if (strcspn(lit, "*?[\\") < llen)
        return -1;
    size_t nlen = strlen(name);
    if (star_first)
        return nlen >= llen && memcmp(name + nlen - llen, lit, llen) == 0;
    if (star_last)
        return nlen >= llen && memcmp(name, lit, llen) == 0;
    return nlen == llen && memcmp(name, lit, llen) == 0;
}

bool offload_name_ignored(char *const *patterns, const char *name)
{
    for (char *const *p = patterns; p && *p; p++) {
        int m = glob_literal(*p, name);
        if (m < 0)
            m = fnmatch(*p, name, 0) == 0;
        if (m)
            return true;
    }
    return false;
}
