/* Object keys for offloaded files: the one mapping from a path below the spool (file
 * side) and from a URL path (serving side, issue 9) to a store key, so that the two can
 * never disagree. Pure functions: no allocation, no state, any thread. */
#ifndef FERRY_OFFLOAD_KEYMAP_H
#define FERRY_OFFLOAD_KEYMAP_H

#include <stdbool.h>
#include <stddef.h>

#define OFFLOAD_KEY_MAX 1024 /* S3's limit on key bytes */

/** Check that rel[0..rel_len) is a valid rel: non-empty, valid UTF-8 (no overlong forms,
 *  no surrogates, nothing above U+10FFFF), '/'-separated segments none of which is empty,
 *  "." or "..", and no NUL, CR, LF, backslash or other control byte (< 0x20, 0x7f).
 *  Returns 0 or -EINVAL. Any thread, no allocation. */
int offload_rel_check(const char *rel, size_t rel_len);

/** Validate rel (path below the spool, '/'-separated, no leading '/') and write
 *  prefix + rel into out (NUL-terminated). Returns the key length, -EINVAL when rel is
 *  empty, not valid UTF-8, has an empty, "." or ".." segment, or contains NUL, CR, LF,
 *  backslash or another control byte (< 0x20, 0x7f); -ENAMETOOLONG when the key would
 *  exceed OFFLOAD_KEY_MAX or outlen. Any thread, no allocation.
 *  prefix is used verbatim (NULL means ""): pass "uploads/" to get "uploads/a/b.jpg".
 *  out is caller-owned and written only on success; the key fits when
 *  key length + 1 <= outlen. */
int offload_key_from_rel(const char *prefix, const char *rel, size_t rel_len, char *out,
                         size_t outlen);

/** For the serving side (issue 9): given url_prefix ("/static/") and a decoded URL path,
 *  return 1 and set *rel and *rel_len to the part below the prefix when path is under it,
 *  0 when it is not, -EINVAL when the remainder is not a valid rel (same rules).
 *  path[0..len) need not be NUL-terminated; *rel points into path (borrowed, no copy).
 *  A url_prefix without a trailing '/' ("/static") matches "/static/..." only, never
 *  "/staticfoo". The out-parameters are written only when 1 is returned. Any thread. */
int offload_rel_from_url(const char *url_prefix, const char *path, size_t len, const char **rel,
                         size_t *rel_len);

/** The [offload] ignore rule, shared by the offloader (which never uploads such a
 *  file) and the serving side (which never redirects for one): whether the file name
 *  (the last segment, no '/') matches one of patterns (NULL-terminated; NULL means
 *  none), each as fnmatch(3) with no flags matches it. A pattern that is "*LITERAL",
 *  "LITERAL*" or LITERAL (no other '*', '?', '[' or '\\') is compared directly, with
 *  fnmatch's result: this runs for every request for a file that is not local. Any
 *  thread, no allocation. */
bool offload_name_ignored(char *const *patterns, const char *name);

#endif
