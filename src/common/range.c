#include "common/range.h"

#include <stdbool.h>
#include <strings.h>

/* A decimal number filling [p, end): digits only, at most INT64_MAX (what an
 * off_t can carry). Returns false for anything else; *out untouched then. */
static bool parse_number(const char *p, const char *end, uint64_t *out)
{
    uint64_t v = 0;
    if (p == end)
        return false;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return false;
        unsigned d = (unsigned)(*p - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

enum range_outcome range_parse(const char *p, size_t len, uint64_t size, uint64_t *offset,
                               uint64_t *length)
{
    if (!p || len < 7 || strncasecmp(p, "bytes=", 6) != 0)
        return RANGE_IGNORE;
    const char *s = p + 6, *end = p + len;
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    const char *dash = NULL;
    for (const char *q = s; q < end; q++) {
        if (*q == ',')
            return RANGE_IGNORE; /* several ranges: serve the whole thing */
        if (*q == '-' && !dash)
            dash = q;
    }
    if (!dash)
        return RANGE_IGNORE;
    uint64_t first = 0, last = 0;
    bool has_first = dash > s, has_last = dash + 1 < end;
    if ((has_first && !parse_number(s, dash, &first)) ||
        (has_last && !parse_number(dash + 1, end, &last)) || (!has_first && !has_last))
        return RANGE_IGNORE;
    if (!has_first) {
        /* suffix range: the last `last` bytes */
        if (last == 0 || size == 0)
            return RANGE_UNSATISFIABLE;
        *offset = size > last ? size - last : 0;
        *length = size - *offset;
        return RANGE_SATISFIABLE;
    }
    if (has_last && last < first)
        return RANGE_IGNORE; /* invalid syntax, not unsatisfiable */
    if (first >= size)
        return RANGE_UNSATISFIABLE;
    uint64_t stop = has_last && last < size ? last : size - 1;
    *offset = first;
    *length = stop - first + 1;
    return RANGE_SATISFIABLE;
}
