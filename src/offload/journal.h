/* The offloader's crash-safe journal: one line per state transition of a spool file,
 * appended to state_dir/offload.journal, replayed at start so that a restart after
 * kill -9 resumes each file where it was (issue 8, DESIGN.md "Never neither").
 *
 * Line format (text, one transition per line, '\n'-terminated, fields separated by one
 * space):
 *
 *     j1 CRC STAGE REL DEV INO SIZE MTIME_NS CTIME_NS SHA256 MD5 UPLOAD_ID ERROR
 *
 *   j1        format version tag
 *   CRC       CRC-32 (IEEE, as zlib's crc32) of the bytes from STAGE up to, not
 *             including, the '\n'; 8 lowercase hex digits
 *   STAGE     queued | uploading | stored | archived | deleted | failed
 *   REL       percent-encoded rel (see below)
 *   DEV..     decimal integers (MTIME_NS and CTIME_NS may be negative)
 *   SHA256    64 lowercase hex digits, or "-" when there is no digest
 *   MD5       32 lowercase hex digits, or "-" when there is no digest
 *   UPLOAD_ID, ERROR  percent-encoded, "-" when empty
 *
 * Percent-encoding: every byte outside 0x21..0x7e, '%', and a '-' that starts a field
 * are written as %XX (uppercase hex), so a field never contains a space or a newline
 * and "-" alone always means "empty".
 *
 * A line is the whole state of its rel: replay keeps the last line per rel, and a
 * "deleted" line removes it. Compaction (at open, and when the file holds more than 4x
 * as many lines as there are live entries) rewrites only the live entries via a temp
 * file + rename + fsync of the file and the directory.
 *
 * Not thread-safe: one thread owns a struct journal (the offloader's uploader thread). */
#ifndef FERRY_OFFLOAD_JOURNAL_H
#define FERRY_OFFLOAD_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "offload/ident.h" /* struct offload_ident */

enum offload_stage {
    OFFLOAD_QUEUED = 0,
    OFFLOAD_UPLOADING,
    OFFLOAD_STORED,
    OFFLOAD_ARCHIVED,
    OFFLOAD_DELETED,
    OFFLOAD_FAILED
};

struct journal_entry {
    char *rel; /* owned by the journal for entries it returns */
    struct offload_ident id;
    int stage; /* enum offload_stage */
    bool has_digest;
    unsigned char sha256[32], md5[16];
    char upload_id[256]; /* multipart upload in progress, "" if none */
    char error[256];     /* last error for FAILED, "" otherwise */
};

struct journal;

/** Open (create 0600) state_dir/offload.journal, replay it, and compact it (rewrite only
 *  live entries via a temp file + rename + fsync of file and dir). A torn last line (no
 *  newline, or a bad checksum on the LAST line only) from a crash is dropped; a bad line
 *  elsewhere is -EBADMSG with "FILE:LINE: why" in err. Returns 0 or -errno. One thread.
 *  Also takes an exclusive flock on the journal: a second open of the same journal
 *  (another process, or the same one) fails with -EBUSY. err (caller-owned, may be NULL
 *  when errlen is 0) gets a message on every failure. *out is written only on success;
 *  the caller owns it and frees it with journal_close(). */
int journal_open(const char *state_dir, struct journal **out, char *err, size_t errlen);

/** Record e's new state (copies e). sync: fsync before returning (the transitions that
 *  matter: uploading with an upload id, stored, archived, and before any unlink).
 *  DELETED removes the entry (at the next compaction); returns 0 or -errno (disk full:
 *  the caller must not go on to delete anything).
 *  A DELETED entry is gone from journal_get/foreach/count at once; its line leaves the
 *  file at the next compaction.
 *  e->rel must be non-empty and at most 4095 bytes (-EINVAL / -ENAMETOOLONG), upload_id
 *  and error NUL-terminated, stage a valid enum offload_stage (-EINVAL). On failure the
 *  in-memory state is unchanged and no partial line is left in the file; when a partial
 *  line cannot be removed the journal refuses every later record with -EIO. The caller
 *  keeps ownership of e. Owner thread only. */
int journal_record(struct journal *j, const struct journal_entry *e, bool sync);

/** The live entry for rel, or NULL. Valid until the next journal_record/close.
 *  Owned by the journal. Owner thread only. */
const struct journal_entry *journal_get(struct journal *j, const char *rel);

/** Call fn for every live entry (in any order). fn must not call journal_record.
 *  Owner thread only. */
void journal_foreach(struct journal *j, void (*fn)(const struct journal_entry *e, void *arg),
                     void *arg);

/** Number of live entries. Owner thread only. */
size_t journal_count(const struct journal *j);

/** Close the file and free everything, entries included. NULL-safe. Owner thread. */
void journal_close(struct journal *j);

#endif
