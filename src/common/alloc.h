/* Allocation wrappers: every allocation failure aborts through one place. */
#ifndef FERRY_COMMON_ALLOC_H
#define FERRY_COMMON_ALLOC_H

#include <stddef.h>

/** malloc() that aborts with a message on failure. Any thread. */
void *xmalloc(size_t n);
/** calloc() that aborts on failure. Any thread. */
void *xcalloc(size_t nmemb, size_t size);
/** realloc() that aborts on failure. Any thread. */
void *xrealloc(void *p, size_t n);
/** strdup() that aborts on failure; NULL in gives NULL out. Any thread. */
char *xstrdup(const char *s);
/** strndup() that aborts on failure. Any thread. */
char *xstrndup(const char *s, size_t n);
/** asprintf() that aborts on failure; returns the new string. Any thread. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
