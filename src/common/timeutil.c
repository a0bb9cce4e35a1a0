#include "common/timeutil.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char wdays[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

uint64_t time_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t time_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void time_format_http(time_t t, char *out)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, 32, "%s, %02d %s %04d %02d:%02d:%02d GMT", wdays[tm.tm_wday % 7], tm.tm_mday,
             months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static int parse_digits(const char **p, const char *end, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (*p >= end || **p < '0' || **p > '9')
            return -1;
        v = v * 10 + (*(*p)++ - '0');
    }
    *out = v;
    return 0;
}

static int parse_month(const char **p, const char *end, int *out)
{
    if (end - *p < 3)
        return -1;
    for (int i = 0; i < 12; i++) {
        if (memcmp(*p, months[i], 3) == 0) {
            *out = i;
            *p += 3;
            return 0;
        }
    }
    return -1;
}

static int expect(const char **p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return -1;
    *p += n;
    return 0;
}

static int parse_hms(const char **p, const char *end, struct tm *tm)
{
    if (parse_digits(p, end, 2, &tm->tm_hour) || expect(p, end, ":") ||
        parse_digits(p, end, 2, &tm->tm_min) || expect(p, end, ":") ||
        parse_digits(p, end, 2, &tm->tm_sec))
        return -1;
    return 0;
}

int time_parse_http(const char *s, size_t len, time_t *out)
{
    const char *p = s, *end = s + len;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *comma = memchr(s, ',', len);
    if (comma && comma - s == 3) {
        /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
        p = comma + 1;
        if (expect(&p, end, " ") || parse_digits(&p, end, 2, &tm.tm_mday) || expect(&p, end, " ") ||
            parse_month(&p, end, &tm.tm_mon) || expect(&p, end, " ") ||
            parse_digits(&p, end, 4, &tm.tm_year) || expect(&p, end, " ") ||
            parse_hms(&p, end, &tm) || expect(&p, end, " GMT"))
            return -EINVAL;
        tm.tm_year -= 1900;
    } else if (comma) {
        /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
        p = comma + 1;
        if (expect(&p, end, " ") || parse_digits(&p, end, 2, &tm.tm_mday) || expect(&p, end, "-") ||
            parse_month(&p, end, &tm.tm_mon) || expect(&p, end, "-") ||
            parse_digits(&p, end, 2, &tm.tm_year) || expect(&p, end, " ") ||
            parse_hms(&p, end, &tm) || expect(&p, end, " GMT"))
            return -EINVAL;
        /* Two-digit years: 70..99 are 19xx, the rest 20xx (RFC 9110 5.6.7). */
        if (tm.tm_year < 70)
            tm.tm_year += 100;
    } else {
        /* asctime: Sun Nov  6 08:49:37 1994 */
        if (len < 24)
            return -EINVAL;
        p = s + 4;
        if (parse_month(&p, end, &tm.tm_mon) || expect(&p, end, " "))
            return -EINVAL;
        if (*p == ' ') {
            p++;
            if (parse_digits(&p, end, 1, &tm.tm_mday))
                return -EINVAL;
        } else if (parse_digits(&p, end, 2, &tm.tm_mday)) {
            return -EINVAL;
        }
        if (expect(&p, end, " ") || parse_hms(&p, end, &tm) || expect(&p, end, " ") ||
            parse_digits(&p, end, 4, &tm.tm_year))
            return -EINVAL;
        tm.tm_year -= 1900;
    }
    if (p != end || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
        tm.tm_sec > 60)
        return -EINVAL;
    *out = timegm(&tm);
    return 0;
}
