/* The offloader (issue 8): ships the files the application drops in the spool to the
 * object store, verifies them, archives them, and only then deletes them locally.
 *
 * Per file, a crash-safe state machine recorded in the journal (offload/journal.h):
 *
 *     ready (spool) -> open O_RDONLY, fstat == the settled identity -> hash (SHA-256,
 *     MD5, ETag) -> journal UPLOADING -> store_put_many() upload -> verify (store_verify:
 *     size plus a checksum the store recomputed; or verify=readback: download and hash)
 *     -> journal STORED (fsync) -> archive (hard link, else copy; fsync file and dir)
 *     -> journal ARCHIVED (fsync) -> the path still names the file that was hashed
 *     (lstat and fstat == the hashed identity) -> unlink, fsync dir -> journal DELETED
 *     -> spool_done().
 *
 * Nothing is unlinked unless STORED (and ARCHIVED when [offload] archive is set) is
 * fsynced in the journal and the identity re-check passed. Any failure leaves the file
 * where it is; transient failures are retried with full-jitter backoff, permanent ones
 * (or, with `once`, any failure after OFFLOAD_ONCE_ATTEMPTS tries) mark it FAILED and
 * the spool keeps it known but does not report it again until it changes.
 *
 * Threads and ownership:
 *   - the caller's thread: offload_create(), offload_start(), offload_register_admin()
 *     (on the admin's loop thread), offload_stop(), offload_destroy(), offload_result();
 *   - the watcher thread: its own evloop running the spool (offload/spool.h); ready
 *     files go into the ready queue (mutex); spool_done() is posted back to its loop;
 *   - the hasher thread: takes ready files, opens, checks (identity, read lease) and
 *     hashes them, and hands them to the uploader through the hashed queue (at most
 *     2 x concurrency waiting, each with its open fd), so that hashing a large file
 *     never stalls the transfers in flight;
 *   - the uploader thread: owns the upload store; runs store_put_many() with [offload]
 *     concurrency (lowered while the store throttles) while there is work and sleeps on
 *     a condition variable otherwise; journals UPLOADING (and multipart upload ids);
 *   - the finisher thread: with a store of its own, verifies each uploaded file,
 *     journals STORED, archives, journals ARCHIVED, re-checks the identity, unlinks,
 *     so that none of that holds up the transfers (at most 2 x concurrency wait);
 *   - the journal is shared by the uploader and the finisher under its own mutex; the
 *     retry list (files waiting for their backoff) under the main mutex;
 *   - a file (struct job) belongs to exactly one thread at a time: the queue it sits
 *     in, or the thread that took it from there;
 *   - the admin status callback runs on the admin's loop thread and reads counters
 *     under the mutex only: the offloader never blocks an HTTP worker or the admin loop.
 * Its threads are created with every signal blocked: signals belong to the caller. */
#ifndef FERRY_OFFLOAD_OFFLOAD_H
#define FERRY_OFFLOAD_OFFLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct admin;
struct ferry_conf;
struct offload;

#define OFFLOAD_LAST_ERRORS 10  /* errors kept for `ferry status` */
#define OFFLOAD_ONCE_ATTEMPTS 3 /* --once: tries per file before it counts as failed */

struct offload_opts {
    bool once; /* stop by itself once the spool is drained (a full scan done, every
                  ready file stored or failed) */
    /* Called once, on the uploader thread, when the offloader stopped by itself (once
       mode drained, or a fatal error such as a journal write failure). It should only
       wake the caller (evloop_post()); it must not call offload_stop(). May be NULL. */
    void (*finished)(void *arg);
    void *finished_arg;
};

/** Counters, as `ferry status` shows them. */
struct offload_stats {
    uint64_t backlog_files, backlog_bytes, oldest_pending_ms; /* from the spool */
    uint64_t kept; /* failed files left in place, not retried until they change */
    uint64_t in_flight, queued;
    uint64_t concurrency; /* transfers allowed in flight now (lowered while throttled) */
    uint64_t uploaded, verified, archived, deleted, failed, retried, skipped, rejected;
    uint64_t bytes_uploaded;
    uint64_t requests_retried; /* store requests retried (within one file's attempt) */
};

/** Refuse an [offload] archive, a [server] state_dir or a dir store path that exists
 * inside the spool (the offloader would ship its own journal and copies). Returns 0
 * or -EINVAL with a message in err. Any thread. */
int offload_check_paths(const struct ferry_conf *conf, char *err, size_t errlen);

/** Check conf's [offload] and [store] sections, create the store, open (and replay)
 * the journal in [server] state_dir, and prepare the archive directory. Nothing runs
 * yet. conf must outlive the offloader. Returns 0 and *out (the caller's: free with
 * offload_destroy()), or -errno with a message for the operator in err. The journal's
 * lock makes a second offloader on the same state_dir fail here with -EBUSY. */
int offload_create(const struct ferry_conf *conf, const struct offload_opts *opts,
                   struct offload **out, char *err, size_t errlen);

/** Start the watcher, hasher, uploader and finisher threads. Returns 0 or -errno with err. Caller's
 * thread, once. */
int offload_start(struct offload *o, char *err, size_t errlen);

/** Register the "offload" status section on a (the admin's loop thread). The
 * offloader must be destroyed after the admin (or the admin must not run any more).
 * Returns 0 or -EEXIST. */
int offload_register_admin(struct offload *o, struct admin *a);

struct metrics;

/** Register the "offload" metric families (backlog, files by stage, retries,
 * bytes, transfers in flight, and the store's request durations) with m. o
 * must outlive every rendering of m. Returns as metrics_register(). Caller's
 * thread, at startup. */
int offload_register_metrics(struct offload *o, struct metrics *m);

/** Ask both threads to stop and join them: uploads in flight finish (or fail) and are
 * then verified and deleted as usual or left for the next start; nothing unverified is
 * deleted. Returns 0 once joined, or -ETIMEDOUT when the uploader was still busy after
 * timeout_ms (a transfer the store does not cut short): its threads still run and use
 * o and the conf, so the caller must then end the process with _exit() without freeing
 * either; the journal makes the next start finish the work. Idempotent. Caller's
 * thread. */
int offload_stop(struct offload *o, uint64_t timeout_ms);

/** 0 when every file the offloader was given ended stored (and deleted), 1 when some
 * failed or were rejected, or a fatal error stopped it. After offload_stop(). */
int offload_result(const struct offload *o);

/** Copy the counters (any thread). */
void offload_get_stats(struct offload *o, struct offload_stats *out);

/** offload_stop() (without a bound) if needed, then close the journal and the store and free o.
 * NULL-safe. Caller's thread. */
void offload_destroy(struct offload *o);

/** List what would be uploaded now (every regular file below spool not ignored by
 * name: "rel -> key (size bytes)", or "rel: not a valid key, stays local") to out.
 * Returns the number of files that can be uploaded, or -errno with err. Any thread. */
int offload_dry_run(const struct ferry_conf *conf, FILE *out, char *err, size_t errlen);

#endif
