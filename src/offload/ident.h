/* A file's identity as the offloader sees it (issue 8): shared by the journal
 * and the spool watcher. journal.h includes this header. */
#ifndef FERRY_OFFLOAD_IDENT_H
#define FERRY_OFFLOAD_IDENT_H

#include <stdint.h>

/* The identity of a local file: if any of these changed, it is not the file we hashed. */
struct offload_ident {
    uint64_t dev, ino, size;
    int64_t mtime_ns, ctime_ns;
};

#endif
