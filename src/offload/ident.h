/* A file's identity as the offloader sees it (issue 8): shared by the journal
 * and the spool watcher. journal.h includes this header. */
#ifndef FERRY_OFFLOAD_IDENT_H
#define FERRY_OFFLOAD_IDENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

/* The identity of a local file: if any of these changed, it is not the file we hashed. */
struct offload_ident {
    uint64_t dev, ino, size;
    int64_t mtime_ns, ctime_ns;
};

/** The identity of the file st describes. */
static inline void offload_ident_from_stat(const struct stat *st, struct offload_ident *id)
{
    id->dev = (uint64_t)st->st_dev;
    id->ino = (uint64_t)st->st_ino;
    id->size = (uint64_t)st->st_size;
    id->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    id->ctime_ns = (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

/** Whether a and b name the same, unchanged file. */
static inline bool offload_ident_equal(const struct offload_ident *a, const struct offload_ident *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

#endif
