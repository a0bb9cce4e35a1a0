/* The spool watcher (issue 8, "Finding work"): finds files the application
 * dropped below the spool directory and reports each once it is complete.
 *
 * inotify events are hints only; readiness is decided by stat. A file is ready
 * when its identity (dev, ino, size, mtime, ctime) has been unchanged for
 * settle_ms AND a read lease can be taken on it (no writer holds it open;
 * where leases are not allowed the settle rule alone decides). Symlinks and
 * non-regular files are skipped; names matching an ignore pattern are never
 * reported; directories whose name starts with '.' are not descended into.
 *
 * Threads: everything here runs on the thread of the loop given to
 * spool_create(), and the ready callback runs there too. */
#ifndef FERRY_OFFLOAD_SPOOL_H
#define FERRY_OFFLOAD_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/evloop.h"
#include "offload/ident.h"

struct spool;

struct spool_opts {
    const char *dir;           /* the spool root (exists); copied */
    const char *const *ignore; /* fnmatch patterns on the file's own name, NULL-terminated,
                                  may be NULL; default ".*", "*.tmp", "*.part" are passed by
                                  the caller; copied */
    uint64_t settle_ms;        /* unchanged this long before it is ready */
    uint64_t rescan_ms;        /* full rescan interval (0: never, tests) */
};

/** rel is '/'-separated below dir (NUL-terminated); id the identity seen when it
 *  settled; both valid only during the call. Runs on the loop's thread; it may call
 *  spool_done() but not spool_destroy(). The spool does not report rel again until
 *  spool_done(rel) (or until it changes after spool_done(keep=true)). */
typedef void (*spool_ready_fn)(void *arg, const char *rel, const struct offload_ident *id);

/** Watch o->dir recursively (inotify: IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE (dirs and
 *  hard links), IN_ATTRIB, IN_MODIFY, IN_DELETE*, IN_MOVE_SELF, IN_Q_OVERFLOW) on loop,
 *  plus a full scan at start (run from the loop, not inside this call), every
 *  rescan_ms, and after an overflow or a failed watch. Events are hints only:
 *  readiness is decided by stat as described at the top of this header.
 *  Copies o's strings. Returns 0 and *out (free with spool_destroy), or -errno with a
 *  message in err. Loop thread. */
int spool_create(struct evloop *loop, const struct spool_opts *o, spool_ready_fn ready, void *arg,
                 struct spool **out, char *err, size_t errlen);

/** Remove watches and timers, close the inotify fd, free s. NULL-safe. Loop thread,
 *  not from inside the ready callback. */
void spool_destroy(struct spool *s);

/** The pipeline finished with rel: forget it (keep=false: deleted, a new file at rel
 *  is reported again), or keep it known but not re-reported unless its identity
 *  changes (keep=true: failed permanently; also stops a file still settling from being
 *  reported). Either way what is at rel now is looked at again (it may have been
 *  replaced while the pipeline held it). Unknown rel: nothing. rel is not kept.
 *  Loop thread. */
void spool_done(struct spool *s, const char *rel, bool keep);

/** Backlog: pending = files seen and not yet done (waiting to settle, or reported and
 *  not yet passed to spool_done), pending_bytes their sizes, oldest_ms the age of the
 *  oldest since it was first seen; scans = full scans completed, overflows = inotify
 *  queue overflows, watches = directories watched, kept = files kept after
 *  spool_done(keep=true) and still present (not in pending). */
struct spool_stats {
    uint64_t pending, pending_bytes, oldest_ms, scans, overflows, watches, kept;
};

/** Fill *out. Loop thread. */
void spool_get_stats(const struct spool *s, struct spool_stats *out);

/** True when a full scan has completed and no file is waiting to settle (for --once).
 *  Loop thread. */
bool spool_quiet(const struct spool *s);

#endif
