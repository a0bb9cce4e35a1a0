/* Directories that must exist, and survive a crash once created: the state
 * directory, the admin socket's directory, the dir store's object tree. */
#ifndef FERRY_COMMON_FSDIR_H
#define FERRY_COMMON_FSDIR_H

#include <stddef.h>
#include <sys/types.h>

/**
 * Create the directory dir and any missing parents (`mkdir -p`), each new one
 * with mode (less the umask), and fsync the parent of every directory created
 * so that the new entry survives a crash. Existing directories are left as
 * they are (their mode is not changed). Returns 0, -ENOTDIR when a component
 * exists and is not a directory, or -errno of the mkdir/fsync that failed.
 * Any thread; dir is not kept.
 */
int fsdir_make(const char *dir, mode_t mode);

/**
 * Would fsdir_make(dir) succeed, without creating anything? Returns 0 when dir
 * is an existing directory, 1 when it is missing but its nearest existing
 * ancestor is a directory this process may create entries in, or -ENOTDIR /
 * -EACCES / -errno when it could not be created; then the path that is in
 * the way (dir or an ancestor) is copied into blocker (blen bytes, may be 0).
 * Any thread.
 */
int fsdir_probe(const char *dir, char *blocker, size_t blen);

/**
 * fsync the directory that holds path (the text before its last '/', or "."),
 * so that a create, rename or unlink of path survives a crash.
 * Returns 0 or -errno. Any thread.
 */
int fsdir_sync_parent(const char *path);

#endif
