#include "offload/offload.h"

#include "admin/admin.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/conf.h"
#include "common/evloop.h"
#include "common/fsdir.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "metrics/metrics.h"
#include "http/mime.h"
#include "offload/journal.h"
#include "offload/keymap.h"
#include "offload/spool.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RETRY_BASE_MS 500
#define RETRY_CAP_MS 60000
#define WATCH_TICK_MS 100 /* stats copy and the --once drain check */

/* One file on its way through the pipeline. Created by the watcher thread, owned by
 * the uploader thread from the moment it leaves the queue. */
struct job {
    struct job *next;
    struct offload *o;
    char *rel;
    char key[OFFLOAD_KEY_MAX + 1]; /* prefix + rel; the store gets key + prefix_len */
    struct offload_ident id;       /* settled identity, then the hashed one */
    int fd;                        /* -1 when closed */
    struct store_digest digest;
    bool hashed;     /* digest is valid */
    bool verified;   /* the store already confirmed it (resumed after a restart) */
    int verdict;     /* the hasher's: enum hash_verdict */
    int verdict_err; /* -errno for HASH_FAILED */
    unsigned attempts;
    uint64_t not_before; /* monotonic ms */
};

/* What the hasher thread found; the uploader acts on it (it owns the journal). */
enum hash_verdict { HASH_OK, HASH_RETRY, HASH_FAILED };

/* A spool_done() posted from the uploader to the watcher's loop. */
struct done_post {
    struct offload *o;
    char *rel;
    bool keep;
};

struct offload {
    const struct ferry_conf *conf;
    struct offload_opts opts;
    size_t prefix_len;
    char **ignore; /* NULL-terminated, points into conf */
    int spool_fd;  /* O_PATH|O_DIRECTORY on the spool */

    /* The journal: the uploader and the finisher record into it, under jmu. */
    pthread_mutex_t jmu;
    /* The finisher thread's own store (a store is used by one thread at a time). */
    struct store *vstore;

    /* The uploader thread's own. */
    struct store *store;
    struct mime_table *mime; /* Content-Type of uploads, as ferry would serve them */
    struct journal *journal;
    uint64_t threshold, part_size;
    unsigned in_flight;
    unsigned limit;     /* transfers allowed in flight: lowered on 503, raised on success */
    unsigned successes; /* since the limit last changed */

    /* The watcher thread's own. */
    struct evloop *loop;
    struct spool *spool;
    struct evloop_timer tick;
    uint64_t outstanding; /* reported by the spool, not yet spool_done() */

    /* Shared: under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cond;        /* work queued, drained, or stopping (CLOCK_MONOTONIC) */
    pthread_cond_t exited;      /* uploader_exited became true */
    pthread_cond_t hasher_cond; /* ready queued, hashed taken, or stopping */
    bool uploader_exited, hasher_exited, hashing;
    struct job *queue_head, *queue_tail;   /* ready (spool, retries): for the hasher */
    struct job *hashed_head, *hashed_tail; /* hashed: for the uploader */
    unsigned nhashed;
    struct job *finish_head, *finish_tail; /* uploaded: for the finisher */
    unsigned nfinish;
    bool finishing, finisher_exited;
    pthread_cond_t finisher_cond; /* uploaded queued, or stopping */
    struct job *retry;            /* waiting for their backoff (uploader and finisher add) */
    unsigned rand_state;
    bool stopping, drained, fatal;
    struct offload_stats st;
    char errors[OFFLOAD_LAST_ERRORS][320]; /* ring of the last errors */
    uint64_t nerrors;

    pthread_t watcher, uploader, hasher, finisher;
    bool started, joined;
};

/* Add n to one counter of o->st. */
static void stat_add(struct offload *o, uint64_t *counter, uint64_t n)
{
    pthread_mutex_lock(&o->mu);
    *counter += n;
    pthread_mutex_unlock(&o->mu);
}

/* rel as text that is safe to log and to put in JSON: valid names as they are, other
 * bytes (a name that is not UTF-8, control bytes) as \xNN. */
static void rel_printable(const char *rel, char *out, size_t outlen)
{
    if (offload_rel_check(rel, strlen(rel)) == 0) {
        snprintf(out, outlen, "%s", rel);
        return;
    }
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)rel; *p && o + 5 < outlen; p++) {
        if (*p >= 0x20 && *p < 0x7f && *p != '\\')
            out[o++] = (char)*p;
        else
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", *p);
    }
    out[o] = '\0';
}

/* Keep "rel: msg" (rel may be NULL) among the last errors and log it. */
static void error_note(struct offload *o, const char *rel, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void error_note(struct offload *o, const char *rel, const char *fmt, ...)
{
    char name[128] = "", msg[320];
    if (rel)
        rel_printable(rel, name, sizeof(name));
    int n = rel ? snprintf(msg, sizeof(msg), "%s: ", name) : 0;
    if (n < 0 || (size_t)n >= sizeof(msg))
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    va_end(ap);
    log_warn("offload: %s", msg);
    pthread_mutex_lock(&o->mu);
    snprintf(o->errors[o->nerrors % OFFLOAD_LAST_ERRORS], sizeof(o->errors[0]), "%s", msg);
    o->nerrors++;
    pthread_mutex_unlock(&o->mu);
}

static void job_free(struct job *j)
{
    if (!j)
        return;
    if (j->fd >= 0)
        close(j->fd);
    free(j->rel);
    free(j);
}

/* ---- the watcher thread ---- */

static void post_done_run(struct evloop *l, void *arg)
{
    struct done_post *p = arg;
    spool_done(p->o->spool, p->rel, p->keep);
    p->o->outstanding--;
    free(p->rel);
    free(p);
}

/* Uploader thread: hand rel back to the spool (on its thread) and free the job. */
static void job_done(struct offload *o, struct job *j, bool keep)
{
    struct done_post *p = xmalloc(sizeof(*p));
    p->o = o;
    p->rel = j->rel;
    p->keep = keep;
    j->rel = NULL;
    evloop_post(o->loop, post_done_run, p);
    job_free(j);
}

static void on_ready(void *arg, const char *rel, const struct offload_ident *id)
{
    struct offload *o = arg;
    struct job *j = xcalloc(1, sizeof(*j));
    j->o = o;
    j->rel = xstrdup(rel);
    j->id = *id;
    j->fd = -1;
    o->outstanding++;
    pthread_mutex_lock(&o->mu);
    if (o->queue_tail)
        o->queue_tail->next = j;
    else
        o->queue_head = j;
    o->queue_tail = j;
    o->st.queued++;
    pthread_cond_signal(&o->hasher_cond);
    pthread_mutex_unlock(&o->mu);
}

static void on_tick(struct evloop *l, void *arg)
{
    struct offload *o = arg;
    struct spool_stats ss;
    spool_get_stats(o->spool, &ss);
    bool drained = o->opts.once && spool_quiet(o->spool) && o->outstanding == 0;
    pthread_mutex_lock(&o->mu);
    o->st.backlog_files = ss.pending;
    o->st.backlog_bytes = ss.pending_bytes;
    o->st.oldest_pending_ms = ss.oldest_ms;
    o->st.kept = ss.kept;
    if (drained && !o->drained) {
        o->drained = true;
        pthread_cond_signal(&o->cond);
    }
    pthread_mutex_unlock(&o->mu);
    evloop_timer_start(l, &o->tick, WATCH_TICK_MS);
}

static void watcher_stop_run(struct evloop *l, void *arg)
{
    evloop_stop(l);
}

static void *watcher_main(void *arg)
{
    struct offload *o = arg;
    int r = evloop_run(o->loop);
    if (r < 0)
        error_note(o, NULL, "watcher loop: %s", strerror(-r));
    evloop_timer_stop(o->loop, &o->tick);
    spool_destroy(o->spool);
    o->spool = NULL;
    return NULL;
}

/* ---- the uploader thread: per-file steps ---- */

/* S3 answers a few transient conditions with a 4xx: a body that arrived too slowly or
 * damaged, a clock or token the next attempt fixes, throttling. */
static const char *const transient_codes[] = {"RequestTimeout",
                                              "BadDigest",
                                              "XAmzContentSHA256Mismatch",
                                              "IncompleteBody",
                                              "RequestTimeTooSkewed",
                                              "ExpiredToken",
                                              "TokenRefreshRequired",
                                              "BadRequest", /* a HEAD's: see s3.c */
                                              "SlowDown",
                                              "Throttling",
                                              "ThrottlingException",
                                              "OperationAborted",
                                              NULL};

static bool error_permanent(int r, const struct store_error *err)
{
    for (const char *const *c = transient_codes; err && *c; c++)
        if (strcmp(err->code, *c) == 0)
            return false;
    if (r == -EINVAL || r == -EACCES || r == -EPERM || r == -EEXIST || r == -ENAMETOOLONG)
        return true;
    int h = err ? err->http_status : 0;
    return h >= 400 && h < 500 && h != 404 && h != 408 && h != 409 && h != 429;
}

/* The file could not make progress: retry it later with full-jitter backoff, or mark
 * it FAILED (permanent errors; --once after OFFLOAD_ONCE_ATTEMPTS tries). */
static void job_fail(struct offload *o, struct job *j, const char *what, int r,
                     const struct store_error *err)
{
    char why[300] = "";
    if (err && (err->http_status || err->code[0]))
        store_error_format(err, why, sizeof(why));
    else
        snprintf(why, sizeof(why), "%s", strerror(-r));
    error_note(o, j->rel, "%s: %s", what, why);
    if (j->fd >= 0) {
        close(j->fd);
        j->fd = -1;
    }
    j->attempts++;
    bool give_up =
        error_permanent(r, err) || (o->opts.once && j->attempts >= OFFLOAD_ONCE_ATTEMPTS);
    if (give_up) {
        /* The digest stays: a later run that finds the store holding these bytes
         * (say only the archive failed) does not upload them again. */
        struct journal_entry e = {
            .rel = j->rel, .id = j->id, .stage = OFFLOAD_FAILED, .has_digest = j->hashed};
        if (j->hashed) {
            memcpy(e.sha256, j->digest.sha256, sizeof(e.sha256));
            memcpy(e.md5, j->digest.md5, sizeof(e.md5));
        }
        snprintf(e.error, sizeof(e.error), "%s: %s", what, why);
        pthread_mutex_lock(&o->jmu);
        journal_record(o->journal, &e, false);
        pthread_mutex_unlock(&o->jmu);
        stat_add(o, &o->st.failed, 1);
        job_done(o, j, true);
        return;
    }
    stat_add(o, &o->st.retried, 1);
    uint64_t cap = RETRY_BASE_MS << (j->attempts < 8 ? j->attempts : 8);
    if (cap > RETRY_CAP_MS)
        cap = RETRY_CAP_MS;
    pthread_mutex_lock(&o->mu);
    j->not_before = time_mono_ms() + (uint64_t)rand_r(&o->rand_state) % (cap + 1);
    j->next = o->retry;
    o->retry = j;
    pthread_cond_signal(&o->cond);
    pthread_cond_signal(&o->hasher_cond); /* it requeues retries when due */
    pthread_mutex_unlock(&o->mu);
}

/* j changed (or a writer holds it): look again once it may have settled, expecting
 * identity id. The spool is not asked: its events for j may already be spent. */
static void job_retry_later(struct offload *o, struct job *j, const struct offload_ident *id)
{
    j->id = *id;
    j->hashed = false;
    if (j->fd >= 0) {
        close(j->fd);
        j->fd = -1;
    }
    j->not_before = time_mono_ms() + o->conf->offload.settle_ms;
    pthread_mutex_lock(&o->mu);
    j->next = o->retry;
    o->retry = j;
    pthread_cond_signal(&o->cond);
    pthread_cond_signal(&o->hasher_cond); /* it requeues retries when due */
    pthread_mutex_unlock(&o->mu);
}

static int journal_put(struct offload *o, struct job *j, int stage, bool sync)
{
    struct journal_entry e = {.rel = j->rel, .id = j->id, .stage = stage, .has_digest = true};
    memcpy(e.sha256, j->digest.sha256, sizeof(e.sha256));
    memcpy(e.md5, j->digest.md5, sizeof(e.md5));
    pthread_mutex_lock(&o->jmu);
    int r = journal_record(o->journal, &e, sync);
    pthread_mutex_unlock(&o->jmu);
    return r;
}

/* verify = readback: download the object into an anonymous file and hash it. */
static int verify_readback(struct offload *o, struct job *j, struct store_error *err)
{
    int tfd = open(o->conf->server.state_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (tfd < 0)
        return -errno;
    int r = store_get(o->vstore, j->key + o->prefix_len, NULL, tfd, err);
    struct store_digest d;
    if (r == 0)
        r = store_digest_fd(tfd, o->threshold, o->part_size, &d);
    if (r == 0 &&
        (d.size != j->digest.size || memcmp(d.sha256, j->digest.sha256, sizeof(d.sha256)) != 0)) {
        snprintf(err->code, sizeof(err->code), "ReadbackMismatch");
        snprintf(err->message, sizeof(err->message),
                 "the object read back (%llu bytes) differs from the local file",
                 (unsigned long long)d.size);
        r = -EBADMSG;
    }
    close(tfd);
    return r;
}

/* Copy j's file into the new file out_fd. */
static int copy_fd(int in, int out, uint64_t size)
{
    char buf[65536];
    uint64_t off = 0;
    while (off < size) {
        size_t want = size - off < sizeof(buf) ? (size_t)(size - off) : sizeof(buf);
        ssize_t n = pread(in, buf, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO; /* shrank: the identity check will catch it too */
        for (ssize_t w = 0; w < n;) {
            ssize_t m = write(out, buf + w, (size_t)(n - w));
            if (m < 0 && errno == EINTR)
                continue;
            if (m < 0)
                return -errno;
            w += m;
        }
        off += (uint64_t)n;
    }
    return 0;
}

/* archive/rel: a hard link to the hashed inode (through /proc/self/fd, so that it is
 * the file we hold, not whatever the path names now), else a copy; fsync the data and
 * the directory. An archive that already is this inode is left alone. */
static int archive_file(struct offload *o, struct job *j)
{
    char *dst = xasprintf("%s/%s", o->conf->offload.archive, j->rel);
    char *tmp = xasprintf("%s.ferry-tmp", dst);
    char *dir = xstrdup(dst);
    int r = 0;
    *strrchr(dir, '/') = '\0';
    struct stat st;
    if (stat(dst, &st) == 0 && (uint64_t)st.st_dev == j->id.dev && (uint64_t)st.st_ino == j->id.ino)
        goto done;
    r = fsdir_make(dir, 0755);
    if (r < 0)
        goto done;
    unlink(tmp);
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", j->fd);
    if (linkat(AT_FDCWD, proc, AT_FDCWD, tmp, AT_SYMLINK_FOLLOW) == 0) {
        r = fsync(j->fd) < 0 ? -errno : 0;
    } else if (errno == EXDEV || errno == EPERM || errno == ENOENT) {
        int out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (out < 0) {
            r = -errno;
            goto done;
        }
        r = copy_fd(j->fd, out, j->id.size);
        if (r == 0 && fsync(out) < 0)
            r = -errno;
        if (close(out) < 0 && r == 0)
            r = -errno;
    } else {
        r = -errno;
    }
    if (r == 0 && rename(tmp, dst) < 0)
        r = -errno;
    if (r < 0)
        unlink(tmp);
    else
        r = fsdir_sync_parent(dst);
done:
    free(dst);
    free(tmp);
    free(dir);
    return r;
}

/* Uploaded (or found already stored): verify, journal STORED, archive, journal
 * ARCHIVED, re-check the identity, unlink, fsync the directory, journal DELETED. */
static void job_finish(struct offload *o, struct job *j)
{
    struct store_error err = {0};
    const char *key = j->key + o->prefix_len;
    int r = 0;
    if (!j->verified)
        r = o->conf->offload.verify == VERIFY_READBACK
                ? verify_readback(o, j, &err)
                : store_verify(o->vstore, key, &j->digest, &err);
    if (r < 0) {
        job_fail(o, j, "verify", r, &err);
        return;
    }
    stat_add(o, &o->st.verified, 1);
    r = journal_put(o, j, OFFLOAD_STORED, true);
    if (r < 0) {
        job_fail(o, j, "journal", r, NULL);
        return;
    }
    if (o->conf->offload.archive[0]) {
        r = archive_file(o, j);
        if (r < 0) {
            job_fail(o, j, "archive", r, NULL);
            return;
        }
        /* A hard link changes the inode's ctime (and only that): accept the new ctime
         * when everything else is still what was hashed. */
        struct stat ast;
        if (fstat(j->fd, &ast) == 0) {
            struct offload_ident aid;
            offload_ident_from_stat(&ast, &aid);
            int64_t ctime_ns = aid.ctime_ns;
            aid.ctime_ns = j->id.ctime_ns;
            if (offload_ident_equal(&aid, &j->id))
                j->id.ctime_ns = ctime_ns;
        }
        r = journal_put(o, j, OFFLOAD_ARCHIVED, true);
        if (r < 0) {
            job_fail(o, j, "journal", r, NULL);
            return;
        }
        stat_add(o, &o->st.archived, 1);
    }
    /* The path must still name the file we hashed, unchanged; if anything moved,
     * start over and delete nothing. */
    struct stat fst, pst;
    struct offload_ident fid, pid;
    if (fstat(j->fd, &fst) < 0 || fstatat(o->spool_fd, j->rel, &pst, AT_SYMLINK_NOFOLLOW) < 0) {
        error_note(o, j->rel, "changed before delete (%s): kept, starts over", strerror(errno));
        job_done(o, j, false);
        return;
    }
    offload_ident_from_stat(&fst, &fid);
    offload_ident_from_stat(&pst, &pid);
    if (!offload_ident_equal(&fid, &j->id) || !offload_ident_equal(&pid, &j->id)) {
        error_note(o, j->rel, "changed during upload: kept, starts over");
        job_retry_later(o, j, &pid);
        return;
    }
    if (unlinkat(o->spool_fd, j->rel, 0) < 0) {
        r = -errno;
        job_fail(o, j, "unlink", r, NULL);
        return;
    }
    char *path = xasprintf("%s/%s", o->conf->offload.spool, j->rel);
    r = fsdir_sync_parent(path);
    free(path);
    if (r < 0)
        error_note(o, j->rel, "fsync of its directory after unlink: %s", strerror(-r));
    journal_put(o, j, OFFLOAD_DELETED, false);
    stat_add(o, &o->st.deleted, 1);
    job_done(o, j, false);
}

/* Append j to one of o's queues. Caller holds o->mu. */
static void queue_push(struct job **head, struct job **tail, struct job *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

/* Take the head of one of o's queues (NULL when empty). Caller holds o->mu. */
static struct job *queue_pop(struct job **head, struct job **tail)
{
    struct job *j = *head;
    if (j) {
        *head = j->next;
        if (!*head)
            *tail = NULL;
        j->next = NULL;
    }
    return j;
}

/* Free every job of a list. */
static void jobs_free(struct job *j)
{
    while (j) {
        struct job *next = j->next;
        job_free(j);
        j = next;
    }
}

/* Uploader thread: j is uploaded (or found stored): the finisher takes it from here. */
static void finish_push(struct offload *o, struct job *j)
{
    pthread_mutex_lock(&o->mu);
    queue_push(&o->finish_head, &o->finish_tail, j);
    o->nfinish++;
    pthread_cond_signal(&o->finisher_cond);
    pthread_mutex_unlock(&o->mu);
}

/* Hasher thread: open, check and hash j. Jobs that end here (gone, not a regular
 * file, a name that cannot be a key) are finished at once; every other job goes to
 * the uploader with a verdict. */
static void job_hash(struct offload *o, struct job *j)
{
    j->verdict = HASH_OK;
    j->hashed = false;
    int n =
        offload_key_from_rel(o->conf->store.prefix, j->rel, strlen(j->rel), j->key, sizeof(j->key));
    if (n < 0) {
        error_note(o, j->rel, "%s: stays local",
                   n == -ENAMETOOLONG ? "key too long"
                                      : "not a valid key (UTF-8, no control bytes)");
        stat_add(o, &o->st.rejected, 1);
        job_done(o, j, true);
        return;
    }
    j->fd = openat(o->spool_fd, j->rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (j->fd < 0 && errno == ENOENT) { /* gone meanwhile: nothing to do */
        job_done(o, j, false);
        return;
    }
    struct stat st;
    struct offload_ident id;
    if (j->fd < 0) {
        j->verdict = HASH_FAILED;
        j->verdict_err = -errno;
    } else if (fstat(j->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        job_done(o, j, false);
        return;
    } else {
        offload_ident_from_stat(&st, &id);
        /* A writer that still holds the file open (a read lease is refused), or a file
         * that changed since it settled: try again once it has been quiet a while. */
        bool busy = false;
        if (fcntl(j->fd, F_SETLEASE, F_RDLCK) == 0)
            fcntl(j->fd, F_SETLEASE, F_UNLCK);
        else if (errno == EAGAIN || errno == EBUSY)
            busy = true;
        if (busy || !offload_ident_equal(&id, &j->id)) {
            j->verdict = HASH_RETRY;
            j->id = id;
        } else {
            int r = store_digest_fd(j->fd, o->threshold, o->part_size, &j->digest);
            if (r == 0 && fstat(j->fd, &st) == 0) {
                offload_ident_from_stat(&st, &id);
                if (!offload_ident_equal(&id, &j->id)) { /* changed while we read it */
                    j->verdict = HASH_RETRY;
                    j->id = id;
                }
            } else if (r < 0) {
                j->verdict = HASH_FAILED;
                j->verdict_err = r;
            }
            j->hashed = r == 0 && j->verdict == HASH_OK;
        }
    }
    pthread_mutex_lock(&o->mu);
    queue_push(&o->hashed_head, &o->hashed_tail, j);
    o->nhashed++;
    pthread_cond_signal(&o->cond);
    pthread_mutex_unlock(&o->mu);
}

/* Uploader thread: act on the hasher's verdict. Returns 1 when j is to be uploaded, 0
 * when it was handled here (retry, failure, or already stored after a restart). */
static int job_prepare(struct offload *o, struct job *j)
{
    if (j->verdict == HASH_RETRY) {
        struct offload_ident id = j->id;
        job_retry_later(o, j, &id);
        return 0;
    }
    if (j->verdict == HASH_FAILED) {
        job_fail(o, j, j->fd < 0 ? "open" : "hash", j->verdict_err, NULL);
        return 0;
    }
    /* After a restart or a failure: this very file (same identity and digest) is not
     * uploaded again when the store confirms it holds these bytes — whether the journal
     * got to STORED or the crash came between the upload and that record. */
    pthread_mutex_lock(&o->jmu);
    const struct journal_entry *e = journal_get(o->journal, j->rel);
    bool known = e && e->has_digest && offload_ident_equal(&e->id, &j->id) &&
                 memcmp(e->sha256, j->digest.sha256, sizeof(e->sha256)) == 0;
    pthread_mutex_unlock(&o->jmu);
    struct store_error err = {0};
    if (known && store_verify(o->store, j->key + o->prefix_len, &j->digest, &err) == 0) {
        stat_add(o, &o->st.skipped, 1);
        j->verified = true;
        finish_push(o, j);
        return 0;
    }
    int r = journal_put(o, j, OFFLOAD_UPLOADING, false);
    if (r < 0) {
        job_fail(o, j, "journal", r, NULL);
        return 0;
    }
    return 1;
}

/* Uploader thread: retries whose backoff ended go back to the hasher. */
static void retry_requeue_due(struct offload *o, uint64_t now)
{
    pthread_mutex_lock(&o->mu);
    for (struct job **pp = &o->retry; *pp;) {
        struct job *j = *pp;
        if (j->not_before > now) {
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        queue_push(&o->queue_head, &o->queue_tail, j);
        o->st.queued++;
        pthread_cond_signal(&o->hasher_cond);
    }
    pthread_mutex_unlock(&o->mu);
}

/* Uploader thread: the next hashed job, or NULL; *busy tells whether the hasher has
 * (or is doing) work that will come. */
static struct job *hashed_take(struct offload *o, bool *busy)
{
    pthread_mutex_lock(&o->mu);
    struct job *j = queue_pop(&o->hashed_head, &o->hashed_tail);
    if (j) {
        o->nhashed--;
        pthread_cond_signal(&o->hasher_cond);
    }
    *busy = o->hashing || o->queue_head;
    pthread_mutex_unlock(&o->mu);
    return j;
}

static bool stopping(struct offload *o)
{
    pthread_mutex_lock(&o->mu);
    bool s = o->stopping;
    pthread_mutex_unlock(&o->mu);
    return s;
}

/* A multipart upload began: journal its id (fsynced) before the first part goes out,
 * so that a restart after a crash can abort it. */
static void put_upload_started(const struct store_put_item *item, const char *upload_id)
{
    struct job *j = item->user;
    struct journal_entry e = {
        .rel = j->rel, .id = j->id, .stage = OFFLOAD_UPLOADING, .has_digest = true};
    memcpy(e.sha256, j->digest.sha256, sizeof(e.sha256));
    memcpy(e.md5, j->digest.md5, sizeof(e.md5));
    snprintf(e.upload_id, sizeof(e.upload_id), "%s", upload_id);
    pthread_mutex_lock(&j->o->jmu);
    int r = journal_record(j->o->journal, &e, true);
    pthread_mutex_unlock(&j->o->jmu);
    if (r < 0)
        error_note(j->o, j->rel, "journal (multipart upload id): %s", strerror(-r));
}

/* Uploaded files waiting for the finisher (each holds its fd). */
static unsigned finish_backlog(struct offload *o)
{
    pthread_mutex_lock(&o->mu);
    unsigned n = o->nfinish;
    pthread_mutex_unlock(&o->mu);
    return n;
}

static int put_next(void *ctx, struct store_put_item *item)
{
    struct offload *o = ctx;
    for (;;) {
        if (stopping(o))
            return 0;
        if (o->in_flight >= o->limit || finish_backlog(o) >= 2 * o->limit)
            return -EAGAIN;
        retry_requeue_due(o, time_mono_ms());
        bool busy;
        struct job *j = hashed_take(o, &busy);
        if (!j)
            return o->in_flight > 0 || busy ? -EAGAIN : 0;
        if (job_prepare(o, j) != 1)
            continue;
        memset(item, 0, sizeof(*item));
        item->key = j->key + o->prefix_len;
        item->fd = j->fd;
        item->digest = j->digest;
        item->content_type = mime_table_lookup(o->mime, j->rel, strlen(j->rel));
        item->user = j;
        item->upload_started = put_upload_started;
        o->in_flight++;
        stat_add(o, &o->st.in_flight, 1);
        return 1;
    }
}

/* Every 503 (SlowDown or not) is the store asking for less: halve the transfers in
 * flight; raise the limit by one again after as many successes as it allows. */
static void throttle_update(struct offload *o, int result, const struct store_error *err)
{
    unsigned max = (unsigned)o->conf->offload.concurrency;
    if (result < 0 && err && (err->http_status == 503 || strcmp(err->code, "SlowDown") == 0)) {
        unsigned limit = o->limit > 1 ? o->limit / 2 : 1;
        if (limit != o->limit)
            log_info("offload: the store throttles (503): at most %u transfers in flight", limit);
        o->limit = limit;
        o->successes = 0;
    } else if (result == 0 && o->limit < max && ++o->successes >= o->limit) {
        o->limit++;
        o->successes = 0;
    }
    pthread_mutex_lock(&o->mu);
    o->st.concurrency = o->limit;
    pthread_mutex_unlock(&o->mu);
}

static void put_done(void *ctx, const struct store_put_item *item, int result,
                     const struct store_error *err)
{
    struct offload *o = ctx;
    struct job *j = item->user;
    o->in_flight--;
    pthread_mutex_lock(&o->mu);
    o->st.in_flight--;
    pthread_mutex_unlock(&o->mu);
    throttle_update(o, result, err);
    if (result < 0) {
        job_fail(o, j, "upload", result, err);
        return;
    }
    stat_add(o, &o->st.uploaded, 1);
    stat_add(o, &o->st.bytes_uploaded, j->digest.size);
    finish_push(o, j);
}

/* Earliest backoff deadline among the retries, or UINT64_MAX. */
static uint64_t retry_next_due(const struct offload *o)
{
    uint64_t due = UINT64_MAX;
    for (const struct job *j = o->retry; j; j = j->next)
        if (j->not_before < due)
            due = j->not_before;
    return due;
}

/* The CLOCK_MONOTONIC deadline ms from now, for pthread_cond_timedwait() on o's
 * condition variables (both use that clock). */
static void deadline_after(uint64_t ms, struct timespec *ts)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

/* The hasher thread: hashing never stalls the transfers in flight. It keeps at most
 * 2 x concurrency hashed jobs (each with an open fd) waiting for the uploader. */
static void *hasher_main(void *arg)
{
    struct offload *o = arg;
    unsigned cap = 2 * (unsigned)o->conf->offload.concurrency;
    pthread_mutex_lock(&o->mu);
    for (;;) {
        /* Retries whose backoff ends come back here on time: the uploader may be
         * asleep in store_put_many() until someone has work for it. */
        while (!o->stopping && (!o->queue_head || o->nhashed >= cap)) {
            uint64_t now = time_mono_ms(), due = retry_next_due(o);
            if (due <= now) {
                pthread_mutex_unlock(&o->mu);
                retry_requeue_due(o, now);
                pthread_mutex_lock(&o->mu);
                continue;
            }
            if (due == UINT64_MAX) {
                pthread_cond_wait(&o->hasher_cond, &o->mu);
            } else {
                struct timespec ts;
                deadline_after(due - now, &ts);
                pthread_cond_timedwait(&o->hasher_cond, &o->mu, &ts);
            }
        }
        if (o->stopping)
            break;
        struct job *j = queue_pop(&o->queue_head, &o->queue_tail);
        o->st.queued--;
        o->hashing = true;
        pthread_mutex_unlock(&o->mu);
        job_hash(o, j);
        store_put_wake(o->store); /* a job for next(), or the hasher no longer busy */
        pthread_mutex_lock(&o->mu);
        o->hashing = false;
        pthread_cond_signal(&o->cond); /* the uploader may be waiting for the last one */
    }
    o->hasher_exited = true;
    pthread_cond_broadcast(&o->exited);
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

/* The finisher thread: verify, journal, archive, re-check, unlink — with its own store,
 * so that none of it holds up the transfers in flight. */
static void *finisher_main(void *arg)
{
    struct offload *o = arg;
    pthread_mutex_lock(&o->mu);
    for (;;) {
        while (!o->stopping && !o->finish_head)
            pthread_cond_wait(&o->finisher_cond, &o->mu);
        if (o->stopping)
            break;
        struct job *j = queue_pop(&o->finish_head, &o->finish_tail);
        o->nfinish--;
        o->finishing = true;
        pthread_mutex_unlock(&o->mu);
        store_put_wake(o->store); /* below 2 x limit again: next() may go on */
        job_finish(o, j);
        pthread_mutex_lock(&o->mu);
        o->finishing = false;
        pthread_cond_signal(&o->cond); /* a slot for the uploader, or the last one */
    }
    o->finisher_exited = true;
    pthread_cond_broadcast(&o->exited);
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

static void *uploader_main(void *arg)
{
    struct offload *o = arg;
    pthread_mutex_lock(&o->mu);
    for (;;) {
        if (o->stopping)
            break;
        if (o->hashed_head) {
            pthread_mutex_unlock(&o->mu);
            int r = store_put_many(o->store, (unsigned)o->conf->offload.concurrency, put_next,
                                   put_done, o);
            pthread_mutex_lock(&o->mu);
            if (r < 0) {
                o->fatal = true;
                pthread_mutex_unlock(&o->mu);
                error_note(o, NULL, "uploads stopped: %s", strerror(-r));
                pthread_mutex_lock(&o->mu);
                break;
            }
            continue;
        }
        if (o->opts.once && o->drained && !o->retry && !o->queue_head && !o->hashing &&
            !o->finish_head && !o->finishing)
            break;
        /* Sleep until work arrives (the hasher brings back retries when they are
         * due) or a stop; the timeout is only a safety net. */
        struct timespec ts;
        deadline_after(1000, &ts);
        pthread_cond_timedwait(&o->cond, &o->mu, &ts);
    }
    bool by_itself = !o->stopping;
    o->uploader_exited = true;
    pthread_cond_broadcast(&o->exited);
    pthread_mutex_unlock(&o->mu);
    if (by_itself && o->opts.finished)
        o->opts.finished(o->opts.finished_arg);
    return NULL;
}

/* ---- lifecycle ---- */

struct resume_ctx {
    struct offload *o;
    char **gone; /* rels whose file no longer exists */
    size_t ngone;
    unsigned aborted; /* multipart uploads a crash left open */
};

static void resume_entry(const struct journal_entry *e, void *arg)
{
    struct resume_ctx *rc = arg;
    struct offload *o = rc->o;
    /* An entry still uploading may have a multipart upload the journal never saw (the
     * crash came between its creation and the record of its id): ask the store for
     * all of them. Where it cannot list them, abort the one recorded. Only files large
     * enough go multipart: a start after many crashes must not wait for a listing per
     * small file. */
    struct store_error err = {0};
    unsigned n = 0;
    bool listed = e->stage == OFFLOAD_UPLOADING && e->id.size >= o->threshold &&
                  store_abort_all_multipart(o->store, e->rel, &n, &err) == 0;
    rc->aborted += n;
    if (!listed && e->upload_id[0] &&
        store_abort_multipart(o->store, e->rel, e->upload_id, &err) == 0)
        rc->aborted++;
    struct stat st;
    if (fstatat(o->spool_fd, e->rel, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT) {
        rc->gone = xrealloc(rc->gone, (rc->ngone + 1) * sizeof(*rc->gone));
        rc->gone[rc->ngone++] = xstrdup(e->rel);
    }
}

/* After a restart: entries whose file is gone were deleted (or removed by the
 * application) before DELETED was recorded: drop them. The spool's first scan
 * reports every file still present, and job_prepare() resumes those. */
static int offload_resume(struct offload *o)
{
    struct resume_ctx rc = {o, NULL, 0, 0};
    journal_foreach(o->journal, resume_entry, &rc);
    if (rc.aborted)
        log_info("offload: aborted %u multipart upload(s) left open by an earlier run", rc.aborted);
    int r = 0;
    for (size_t i = 0; i < rc.ngone; i++) {
        struct journal_entry e = {.rel = rc.gone[i], .stage = OFFLOAD_DELETED};
        if (r == 0)
            r = journal_record(o->journal, &e, false);
        free(rc.gone[i]);
    }
    free(rc.gone);
    return r;
}

/* Is path (when it exists) the directory root or below it? */
static bool path_inside(const char *root, const char *path)
{
    char *r = realpath(root, NULL), *p = path[0] ? realpath(path, NULL) : NULL;
    bool inside = false;
    if (r && p) {
        size_t n = strlen(r);
        inside = strncmp(r, p, n) == 0 && (p[n] == '\0' || p[n] == '/' || n == 1);
    }
    free(r);
    free(p);
    return inside;
}

int offload_check_paths(const struct ferry_conf *conf, char *err, size_t errlen)
{
    const char *spool = conf->offload.spool;
    const struct {
        const char *what, *path;
    } inner[] = {
        {"[offload] archive", conf->offload.archive},
        {"[server] state_dir", conf->server.state_dir},
        {"[store] path", conf->store.type == STORE_DIR ? conf->store.path : ""},
    };
    if (!spool[0])
        return 0;
    for (size_t i = 0; i < sizeof(inner) / sizeof(inner[0]); i++) {
        if (path_inside(spool, inner[i].path)) {
            snprintf(err, errlen, "%s '%s' is inside [offload] spool '%s': it would be offloaded",
                     inner[i].what, inner[i].path, spool);
            return -EINVAL;
        }
    }
    return 0;
}

int offload_create(const struct ferry_conf *conf, const struct offload_opts *opts,
                   struct offload **out, char *err, size_t errlen)
{
    const char *spool = conf->offload.spool;
    if (!spool || !spool[0]) {
        snprintf(err, errlen, "[offload] spool is not set");
        return -EINVAL;
    }
    struct offload *o = xcalloc(1, sizeof(*o));
    o->conf = conf;
    if (opts)
        o->opts = *opts;
    o->prefix_len = strlen(conf->store.prefix ? conf->store.prefix : "");
    o->rand_state = (unsigned)time_mono_ms() ^ (unsigned)getpid();
    o->spool_fd = -1;
    pthread_mutex_init(&o->mu, NULL);
    pthread_mutex_init(&o->jmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&o->cond, &ca);
    pthread_cond_init(&o->exited, &ca);
    pthread_cond_init(&o->hasher_cond, &ca);
    pthread_cond_init(&o->finisher_cond, &ca);
    pthread_condattr_destroy(&ca);
    int r;
    o->spool_fd = open(spool, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (o->spool_fd < 0) {
        r = -errno;
        snprintf(err, errlen, "[offload] spool '%s': %s", spool, strerror(errno));
        goto fail;
    }
    if (conf->offload.archive[0] && (r = fsdir_make(conf->offload.archive, 0755)) < 0) {
        snprintf(err, errlen, "[offload] archive '%s': %s", conf->offload.archive, strerror(-r));
        goto fail;
    }
    if ((r = fsdir_make(conf->server.state_dir, 0700)) < 0) {
        snprintf(err, errlen, "[server] state_dir '%s': %s", conf->server.state_dir, strerror(-r));
        goto fail;
    }
    if ((r = offload_check_paths(conf, err, errlen)) < 0)
        goto fail;
    struct store_options so = {
        .multipart_threshold = conf->offload.multipart_threshold,
        .part_size = conf->offload.part_size,
    };
    struct store_error serr = {0};
    /* Two stores: one for the uploads, one for the finisher's verifications. */
    r = store_create(conf, &so, &o->store, &serr);
    if (r == 0)
        r = store_create(conf, &so, &o->vstore, &serr);
    if (r < 0) {
        char why[300];
        store_error_format(&serr, why, sizeof(why));
        snprintf(err, errlen, "store: %s", serr.message[0] || serr.code[0] ? why : strerror(-r));
        goto fail;
    }
    store_part_layout(o->store, &o->threshold, &o->part_size);
    o->mime = mime_table_create(conf->server.mime_types);
    o->limit = (unsigned)conf->offload.concurrency;
    o->st.concurrency = o->limit;
    char jerr[256] = "";
    r = journal_open(conf->server.state_dir, &o->journal, jerr, sizeof(jerr));
    if (r < 0) {
        if (r == -EBUSY)
            snprintf(err, errlen, "another offloader already uses %s/offload.journal",
                     conf->server.state_dir);
        else
            snprintf(err, errlen, "journal: %s", jerr[0] ? jerr : strerror(-r));
        goto fail;
    }
    r = offload_resume(o);
    if (r < 0) {
        snprintf(err, errlen, "journal: %s", strerror(-r));
        goto fail;
    }
    o->ignore = conf->offload.ignore.items;
    *out = o;
    return 0;
fail:
    offload_destroy(o);
    return r;
}

int offload_start(struct offload *o, char *err, size_t errlen)
{
    o->loop = evloop_create();
    if (!o->loop) {
        snprintf(err, errlen, "event loop: %s", strerror(errno));
        return -errno;
    }
    struct spool_opts so = {
        .dir = o->conf->offload.spool,
        .ignore = (const char *const *)o->ignore,
        .settle_ms = o->conf->offload.settle_ms,
        .rescan_ms = o->conf->offload.rescan_interval_ms,
    };
    int r = spool_create(o->loop, &so, on_ready, o, &o->spool, err, errlen);
    if (r < 0)
        return r;
    evloop_timer_init(&o->tick, on_tick, o);
    evloop_timer_start(o->loop, &o->tick, WATCH_TICK_MS);

    /* Signals stay with the caller's thread (ferry serve's signalfd). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    r = -pthread_create(&o->watcher, NULL, watcher_main, o);
    bool watcher = r == 0, hasher = false, finisher = false;
    if (r == 0)
        hasher = (r = -pthread_create(&o->hasher, NULL, hasher_main, o)) == 0;
    if (r == 0)
        finisher = (r = -pthread_create(&o->finisher, NULL, finisher_main, o)) == 0;
    if (r == 0)
        r = -pthread_create(&o->uploader, NULL, uploader_main, o);
    if (r < 0) { /* undo: stop and join what did start */
        pthread_mutex_lock(&o->mu);
        o->stopping = true;
        pthread_cond_broadcast(&o->hasher_cond);
        pthread_cond_broadcast(&o->finisher_cond);
        pthread_mutex_unlock(&o->mu);
        if (hasher)
            pthread_join(o->hasher, NULL);
        if (finisher)
            pthread_join(o->finisher, NULL);
        if (watcher) {
            evloop_post(o->loop, watcher_stop_run, NULL);
            pthread_join(o->watcher, NULL);
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r < 0) {
        snprintf(err, errlen, "thread: %s", strerror(-r));
        return r;
    }
    o->started = true;
    return 0;
}

int offload_stop(struct offload *o, uint64_t timeout_ms)
{
    if (!o->started || o->joined)
        return 0;
    pthread_mutex_lock(&o->mu);
    o->stopping = true;
    pthread_cond_signal(&o->cond);
    pthread_cond_broadcast(&o->hasher_cond);
    pthread_cond_broadcast(&o->finisher_cond);
    store_put_wake(o->store);
    /* Uploads in flight cannot be cut short (the store finishes what it started), nor
     * a file being hashed or verified: wait for those threads within the bound, else
     * leave them to the process's exit. */
    struct timespec ts;
    deadline_after(timeout_ms, &ts);
    int r = 0;
    while (!(o->uploader_exited && o->hasher_exited && o->finisher_exited) && r != ETIMEDOUT)
        r = pthread_cond_timedwait(&o->exited, &o->mu, &ts);
    bool exited = o->uploader_exited && o->hasher_exited && o->finisher_exited;
    pthread_mutex_unlock(&o->mu);
    if (!exited)
        return -ETIMEDOUT;
    /* Those first: they still post spool_done() to the watcher's loop. */
    pthread_join(o->hasher, NULL);
    pthread_join(o->finisher, NULL);
    pthread_join(o->uploader, NULL);
    evloop_post(o->loop, watcher_stop_run, NULL);
    pthread_join(o->watcher, NULL);
    o->joined = true;
    return 0;
}

int offload_result(const struct offload *o)
{
    return o->fatal || o->st.failed || o->st.rejected || o->queue_head || o->hashed_head ||
                   o->finish_head || o->retry
               ? 1
               : 0;
}

void offload_get_stats(struct offload *o, struct offload_stats *out)
{
    pthread_mutex_lock(&o->mu);
    *out = o->st;
    pthread_mutex_unlock(&o->mu);
    out->requests_retried = store_requests_retried(o->store) + store_requests_retried(o->vstore);
}

static int status_section(json_t *section, struct buf *text, void *arg)
{
    struct offload *o = arg;
    struct offload_stats s;
    offload_get_stats(o, &s);
    pthread_mutex_lock(&o->mu);
    json_t *errors = json_array();
    uint64_t first = o->nerrors > OFFLOAD_LAST_ERRORS ? o->nerrors - OFFLOAD_LAST_ERRORS : 0;
    for (uint64_t i = first; i < o->nerrors; i++)
        json_array_append_new(errors, json_string(o->errors[i % OFFLOAD_LAST_ERRORS]));
    pthread_mutex_unlock(&o->mu);
    int r = admin_json_add(
        section,
        json_pack(
            "{s:s, s:{s:I, s:I, s:I, s:I}, s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
            "s:I, s:I, s:I}, s:o}",
            "spool", o->conf->offload.spool, "backlog", "files", (json_int_t)s.backlog_files,
            "bytes", (json_int_t)s.backlog_bytes, "oldest_ms", (json_int_t)s.oldest_pending_ms,
            "kept", (json_int_t)s.kept, "in_flight", (json_int_t)s.in_flight, "concurrency",
            (json_int_t)s.concurrency, "queued", (json_int_t)s.queued, "totals", "uploaded",
            (json_int_t)s.uploaded, "verified", (json_int_t)s.verified, "archived",
            (json_int_t)s.archived, "deleted", (json_int_t)s.deleted, "failed",
            (json_int_t)s.failed, "retried", (json_int_t)s.retried, "skipped",
            (json_int_t)s.skipped, "rejected", (json_int_t)s.rejected, "bytes_uploaded",
            (json_int_t)s.bytes_uploaded, "requests_retried", (json_int_t)s.requests_retried,
            "last_errors", errors));
    if (r < 0)
        return r;
    if (buf_printf(text,
                   "offload: backlog %llu files (%llu bytes, oldest %llus), %llu in flight; "
                   "uploaded %llu, verified %llu, archived %llu, deleted %llu, failed %llu, "
                   "retried %llu (store requests %llu), rejected %llu\n",
                   (unsigned long long)s.backlog_files, (unsigned long long)s.backlog_bytes,
                   (unsigned long long)(s.oldest_pending_ms / 1000),
                   (unsigned long long)s.in_flight, (unsigned long long)s.uploaded,
                   (unsigned long long)s.verified, (unsigned long long)s.archived,
                   (unsigned long long)s.deleted, (unsigned long long)s.failed,
                   (unsigned long long)s.retried, (unsigned long long)s.requests_retried,
                   (unsigned long long)s.rejected) < 0)
        return -ENOBUFS;
    return 0;
}

int offload_register_admin(struct offload *o, struct admin *a)
{
    return admin_register_status(a, "offload", status_section, o);
}

void offload_destroy(struct offload *o)
{
    if (!o)
        return;
    offload_stop(o, UINT64_MAX / 2);
    if (o->spool) /* started, but the threads never ran */
        spool_destroy(o->spool);
    evloop_destroy(o->loop);
    jobs_free(o->queue_head);
    jobs_free(o->hashed_head);
    jobs_free(o->finish_head);
    jobs_free(o->retry);
    journal_close(o->journal);
    store_destroy(o->store);
    store_destroy(o->vstore);
    mime_table_destroy(o->mime);
    if (o->spool_fd >= 0)
        close(o->spool_fd);
    pthread_cond_destroy(&o->cond);
    pthread_cond_destroy(&o->exited);
    pthread_cond_destroy(&o->hasher_cond);
    pthread_cond_destroy(&o->finisher_cond);
    pthread_mutex_destroy(&o->jmu);
    pthread_mutex_destroy(&o->mu);
    free(o);
}

/* ---- --dry-run ---- */

/* nftw() takes no argument for its callback: the walk's context lives here. */
static __thread struct {
    const struct ferry_conf *conf;
    size_t root_len;
    FILE *out;
    int count;
} dry;

static int dry_visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    const char *name = path + ftw->base;
    if (ftw->level == 0)
        return FTW_CONTINUE;
    if (type == FTW_D)
        return name[0] == '.' ? FTW_SKIP_SUBTREE : FTW_CONTINUE;
    if (type != FTW_F || !S_ISREG(st->st_mode))
        return FTW_CONTINUE;
    if (offload_name_ignored(dry.conf->offload.ignore.items, name))
        return FTW_CONTINUE;
    const char *rel = path + dry.root_len + 1;
    char key[OFFLOAD_KEY_MAX + 1];
    if (offload_key_from_rel(dry.conf->store.prefix, rel, strlen(rel), key, sizeof(key)) < 0) {
        fprintf(dry.out, "%s: not a valid key, stays local\n", rel);
        return FTW_CONTINUE;
    }
    fprintf(dry.out, "%s -> %s (%llu bytes)\n", rel, key, (unsigned long long)st->st_size);
    dry.count++;
    return FTW_CONTINUE;
}

int offload_dry_run(const struct ferry_conf *conf, FILE *out, char *err, size_t errlen)
{
    const char *spool = conf->offload.spool;
    if (!spool || !spool[0]) {
        snprintf(err, errlen, "[offload] spool is not set");
        return -EINVAL;
    }
    char *root = xstrdup(spool);
    size_t len = strlen(root);
    while (len > 1 && root[len - 1] == '/')
        root[--len] = '\0';
    dry.conf = conf;
    dry.root_len = len;
    dry.out = out;
    dry.count = 0;
    int r = nftw(root, dry_visit, 32, FTW_PHYS | FTW_ACTIONRETVAL);
    free(root);
    if (r < 0) {
        snprintf(err, errlen, "[offload] spool '%s': %s", spool, strerror(errno));
        return -errno;
    }
    return dry.count;
}

/* ---- metrics ---- */

enum {
    OF_BACKLOG_FILES,
    OF_BACKLOG_BYTES,
    OF_BACKLOG_OLDEST,
    OF_IN_FLIGHT,
    OF_FILES,
    OF_RETRIES,
    OF_BYTES_UPLOADED,
    OF_STORE_DURATION,
    OF_COUNT,
};

static const struct metrics_family offload_families[OF_COUNT] = {
    [OF_BACKLOG_FILES] = {.name = "offload_backlog_files",
                          .help = "Files in the spool waiting to be offloaded.",
                          .type = METRICS_GAUGE},
    [OF_BACKLOG_BYTES] = {.name = "offload_backlog_bytes",
                          .help = "Bytes of the files waiting to be offloaded.",
                          .type = METRICS_GAUGE},
    [OF_BACKLOG_OLDEST] = {.name = "offload_backlog_oldest_seconds",
                           .help = "Age of the oldest file waiting to be offloaded.",
                           .type = METRICS_GAUGE},
    [OF_IN_FLIGHT] = {.name = "offload_transfers_in_flight",
                      .help = "Uploads to the store in progress.",
                      .type = METRICS_GAUGE},
    [OF_FILES] = {.name = "offload_files_total",
                  .help = "Files that passed each stage: uploaded, verified, archived, deleted "
                          "(locally, once stored), failed (left in place), rejected.",
                  .type = METRICS_COUNTER,
                  .labels = {"stage"}},
    [OF_RETRIES] = {.name = "offload_retries_total",
                    .help = "Uploads retried after a transient failure.",
                    .type = METRICS_COUNTER},
    [OF_BYTES_UPLOADED] = {.name = "offload_uploaded_bytes_total",
                           .help = "Bytes uploaded to the store.",
                           .type = METRICS_COUNTER},
    [OF_STORE_DURATION] = {.name = "store_request_duration_seconds",
                           .help = "Store operations (retries included), by operation and "
                                   "outcome.",
                           .type = METRICS_HISTOGRAM,
                           .labels = {"operation", "outcome"},
                           .buckets = store_duration_bounds,
                           .nbuckets = STORE_DURATION_BUCKETS},
};

static int offload_collect(struct metrics_collector *mc, void *arg)
{
    struct offload_stats st;
    offload_get_stats(arg, &st);
    metrics_value(mc, OF_BACKLOG_FILES, NULL, (double)st.backlog_files);
    metrics_value(mc, OF_BACKLOG_BYTES, NULL, (double)st.backlog_bytes);
    metrics_value(mc, OF_BACKLOG_OLDEST, NULL, (double)st.oldest_pending_ms / 1000.0);
    metrics_value(mc, OF_IN_FLIGHT, NULL, (double)st.in_flight);
    const struct {
        const char *stage;
        uint64_t n;
    } stages[] = {{"uploaded", st.uploaded}, {"verified", st.verified}, {"archived", st.archived},
                  {"deleted", st.deleted},   {"failed", st.failed},     {"rejected", st.rejected}};
    for (size_t i = 0; i < sizeof(stages) / sizeof(stages[0]); i++)
        metrics_value(mc, OF_FILES, &stages[i].stage, (double)stages[i].n);
    metrics_value(mc, OF_RETRIES, NULL, (double)st.retried);
    metrics_value(mc, OF_BYTES_UPLOADED, NULL, (double)st.bytes_uploaded);
    struct store_request_stats rs;
    store_get_request_stats(&rs);
    for (int op = 0; op < STORE_OPS; op++)
        for (int o = 0; o < STORE_OUTCOMES; o++)
            metrics_histogram(mc, OF_STORE_DURATION,
                              (const char *const[]){store_op_name(op), store_outcome_name(o)},
                              rs.count[op][o], (double)rs.sum_us[op][o] / 1e6);
    return 0;
}

int offload_register_metrics(struct offload *o, struct metrics *m)
{
    return metrics_register(m, "offload", offload_families, OF_COUNT, offload_collect, o);
}
