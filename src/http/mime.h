/* Content-Type by file extension, from a mime.types file plus a built-in table. */
#ifndef FERRY_HTTP_MIME_H
#define FERRY_HTTP_MIME_H

#include <stddef.h>

struct mime_table;

/** Build the table from path (mime.types format; missing or unreadable files
 * leave only the built-in entries). Never NULL. Supervisor thread; the result is
 * read-only and may be shared by all workers. */
struct mime_table *mime_table_create(const char *path);

/** Free the table. NULL-safe. */
void mime_table_destroy(struct mime_table *t);

/** The Content-Type for a file name ("application/octet-stream" when unknown).
 * Static/table storage; any thread. */
const char *mime_table_lookup(const struct mime_table *t, const char *name, size_t len);

#endif
