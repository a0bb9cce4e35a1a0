/* Clocks and HTTP dates. */
#ifndef FERRY_COMMON_TIMEUTIL_H
#define FERRY_COMMON_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/** Monotonic clock in milliseconds. Any thread. */
uint64_t time_mono_ms(void);

/** Monotonic clock in microseconds (same clock as time_mono_ms()). Any thread. */
uint64_t time_mono_us(void);

/** Format t as an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT", 29 chars) into
 * out (at least 32 bytes). Any thread. */
void time_format_http(time_t t, char *out);

/** Parse an HTTP-date (IMF-fixdate, RFC 850 or asctime form, RFC 9110 5.6.7)
 * from (s, len). Returns 0 and writes *out, or -EINVAL. Any thread. */
int time_parse_http(const char *s, size_t len, time_t *out);

#endif
