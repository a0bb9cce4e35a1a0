/* libFuzzer target for common/range.c. The first 8 bytes of the input are the
 * representation size (little-endian, taken modulo 2^40 so that sizes around
 * the numbers in the header are reached), the rest is the header value, read
 * through a copy of exactly that length so that reading past it is caught.
 * Invariants: out-parameters are written only for RANGE_SATISFIABLE, and then
 * the range is non-empty and inside the representation; the answer does not
 * depend on bytes past len; and it agrees with a slower reference that splits
 * the value with sscanf-free string handling. */
#include "common/range.h"

#include "fuzz.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* Reference: digits only, no more than 19 after leading zeros, value <= INT64_MAX. */
static bool ref_number(const char *p, size_t n, uint64_t *out)
{
    if (n == 0)
        return false;
    while (n > 1 && p[0] == '0') {
        p++;
        n--;
    }
    if (n > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX)
        return false;
    *out = v;
    return true;
}

static enum range_outcome ref_parse(const char *p, size_t len, uint64_t size, uint64_t *off,
                                    uint64_t *n)
{
    if (len < 7 || strncasecmp(p, "bytes=", 6) != 0)
        return RANGE_IGNORE;
    size_t b = 6, e = len;
    while (b < e && (p[b] == ' ' || p[b] == '\t'))
        b++;
    while (e > b && (p[e - 1] == ' ' || p[e - 1] == '\t'))
        e--;
    if (memchr(p + b, ',', e - b))
        return RANGE_IGNORE;
    const char *dash = memchr(p + b, '-', e - b);
    if (!dash)
        return RANGE_IGNORE;
    size_t d = (size_t)(dash - p);
    uint64_t first, last;
    bool hf = d > b, hl = d + 1 < e;
    if (!hf && !hl)
        return RANGE_IGNORE;
    if ((hf && !ref_number(p + b, d - b, &first)) ||
        (hl && !ref_number(p + d + 1, e - d - 1, &last)))
        return RANGE_IGNORE;
    if (!hf) {
        if (last == 0 || size == 0)
            return RANGE_UNSATISFIABLE;
        *off = last >= size ? 0 : size - last;
        *n = size - *off;
        return RANGE_SATISFIABLE;
    }
    if (hl && last < first)
        return RANGE_IGNORE;
    if (first >= size)
        return RANGE_UNSATISFIABLE;
    *off = first;
    *n = (hl && last < size ? last + 1 : size) - first;
    return RANGE_SATISFIABLE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    uint64_t rsize = 0;
    for (int i = 7; i >= 0; i--)
        rsize = rsize << 8 | data[i];
    rsize &= (1ULL << 40) - 1;
    size_t len = size - 8;
    char *p = malloc(len + 1);
    CHECK(p != NULL);
    memcpy(p, data + 8, len);
    p[len] = '5'; /* a digit past the end must change nothing */
    uint64_t off = 7, n = 9, roff = 0, rn = 0;
    enum range_outcome got = range_parse(p, len, rsize, &off, &n);
    enum range_outcome want = ref_parse(p, len, rsize, &roff, &rn);
    CHECK(got == want);
    if (got == RANGE_SATISFIABLE) {
        CHECK(n > 0 && off < rsize && n <= rsize - off);
        CHECK(off == roff && n == rn);
    } else {
        CHECK(off == 7 && n == 9);
    }
    free(p);
    return 0;
}
