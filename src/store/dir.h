/* The dir store: objects are files below a root directory. Writes go to a temp
 * file in the target directory, are fsynced, renamed (or linked, for conditional
 * create) into place, and the directory is fsynced; directories it creates are
 * fsynced into their parents. A sidecar "<name>.ferry-sum" beside each object
 * holds its size, SHA-256 and MD5.
 *
 * Temp files are named ".ferry-tmp.<pid>.XXXXXX" (pid: the writing process).
 * A crash leaves them behind; the first put into a directory (per store
 * object) removes those that are stale:
 *   - ".ferry-tmp.<pid>.XXXXXX" when no process <pid> exists (kill(pid, 0)
 *     fails with ESRCH) and it was last modified DIR_STORE_TEMP_STALE_AGE_S
 *     or more ago. The pid protects a live writer however slow; the age
 *     protects a writer in another PID namespace sharing the directory (it
 *     keeps the mtime fresh while it writes). A reused pid only delays removal.
 *   - ".ferry-tmp.XXXXXX" (the untagged form of older versions) when last
 *     modified DIR_STORE_TEMP_UNTAGGED_AGE_S or more ago.
 * Nothing else is ever removed: keys may not contain a segment starting with
 * ".ferry-tmp." (dir_store_check_key), so no object can look like a temp. */
#ifndef FERRY_STORE_DIR_H
#define FERRY_STORE_DIR_H

#include "store/store.h"

#define DIR_STORE_SIDECAR_SUFFIX ".ferry-sum"
/* Ages after which a temp file of a gone writer is stale (see above). */
#define DIR_STORE_TEMP_STALE_AGE_S (60 * 60)
#define DIR_STORE_TEMP_UNTAGGED_AGE_S (24 * 60 * 60)

/** Is key usable as a dir store path: non-empty, relative, no empty, "." or ".."
 * segments, not a sidecar name? Returns 0 or -EINVAL. Any thread. */
int dir_store_check_key(const char *key);

#endif
