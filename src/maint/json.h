/* Just enough JSON for the admin protocol's replies and the maintenance
 * response: writing escaped strings, and reading one top-level member of a
 * flat object (the CLI's view of a reply). */
#ifndef FERRY_MAINT_JSON_H
#define FERRY_MAINT_JSON_H

#include <stdbool.h>
#include <stddef.h>

struct buf;

/** Append (p, n) to b as a quoted JSON string (RFC 8259 escapes; control
 * characters as \u00XX; bytes >= 0x80 are passed through). Returns 0 or
 * -ENOBUFS (b unchanged beyond what fit is not guaranteed). Any thread. */
int json_append_string(struct buf *b, const char *p, size_t n);

/**
 * Find the member named key at the top level of the object in (json, len) and
 * return its raw value's span in val and vlen (a string keeps its quotes).
 * Returns 0, -ENOENT when absent, -EINVAL when the text is not a well-formed
 * object as far as it was scanned. Any thread; no allocation.
 */
int json_find_member(const char *json, size_t len, const char *key, const char **val, size_t *vlen);

/**
 * Decode the JSON string value (with quotes) in (val, vlen) into b (UTF-8;
 * \uXXXX escapes including surrogate pairs). Returns 0, -EINVAL when it is not
 * a string, or -ENOBUFS.
 */
int json_decode_string(const char *val, size_t vlen, struct buf *b);

#endif
