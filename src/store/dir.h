/* The dir store: objects are files below a root directory. Writes go to a temp
 * file in the target directory, are fsynced, renamed (or linked, for conditional
 * create) into place, and the directory is fsynced; a sidecar "<name>.ferry-sum"
 * beside each object holds its size, SHA-256 and MD5. */
#ifndef FERRY_STORE_DIR_H
#define FERRY_STORE_DIR_H

#include "store/store.h"

#define DIR_STORE_SIDECAR_SUFFIX ".ferry-sum"

/** Is key usable as a dir store path: non-empty, relative, no empty, "." or ".."
 * segments, not a sidecar name? Returns 0 or -EINVAL. Any thread. */
int dir_store_check_key(const char *key);

#endif
