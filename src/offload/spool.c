/* The spool watcher (see spool.h). Known files live in a hash table keyed by
 * their path below the root; each carries its own settle timer. Watched
 * directories live in a small array keyed by inotify watch descriptor. A full
 * scan marks everything it finds with a new generation number and then sweeps
 * what it did not find (files deleted or directories moved while events were
 * lost), so events only ever make the watcher faster, never more correct. */
#include "offload/spool.h"

#include "common/alloc.h"
#include "offload/keymap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define WATCH_MASK                                                                                 \
    (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_ATTRIB | IN_MODIFY |            \
     IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)

/* Bounds of the interval between retries of a busy file (a writer has it
 * open) and of full scans after a failed watch or an unreadable root. */
#define RETRY_MIN_MS 10
#define RETRY_MAX_MS 1000

enum sfile_state {
    SFILE_WAITING,  /* seen, settling: its timer is armed */
    SFILE_REPORTED, /* handed to the ready callback, waiting for spool_done */
    SFILE_KEPT,     /* spool_done(keep=true): silent until its identity changes */
};

struct sfile {
    struct sfile *next; /* hash chain */
    struct spool *s;
    char *rel;
    uint32_t hash;
    enum sfile_state state;
    bool busy; /* the last lease attempt found a writer */
    struct offload_ident id;
    uint64_t first_seen, changed_at, gen;
    struct evloop_timer timer;
};

struct swatch {
    int wd;
    char *rel; /* "" for the root */
    uint64_t gen;
};

struct spool {
    struct evloop *loop;
    char *root;
    char **ignore;
    uint64_t settle_ms, rescan_ms;
    spool_ready_fn ready;
    void *arg;
    int ifd;

    struct sfile **buckets;
    size_t nbuckets, nfiles;

    struct swatch *watches;
    size_t nwatches, capwatches;

    uint64_t gen;      /* scan generation */
    bool scan_failed;  /* a directory could not be read: do not sweep */
    bool watch_failed; /* inotify_add_watch failed: scan again soon */
    bool need_scan;    /* an overflow or a lost root asked for a full scan */
    uint64_t scans, overflows;
    struct evloop_timer scan_timer;
};

static uint64_t retry_ms(const struct spool *s)
{
    uint64_t ms = s->settle_ms;
    return ms < RETRY_MIN_MS ? RETRY_MIN_MS : ms > RETRY_MAX_MS ? RETRY_MAX_MS : ms;
}

/* root + "/" + rel into out; false when it does not fit (such a file cannot
 * be opened by path, so it is skipped). */
static bool spool_path(const struct spool *s, const char *rel, char *out, size_t outlen)
{
    int n =
        *rel ? snprintf(out, outlen, "%s/%s", s->root, rel) : snprintf(out, outlen, "%s", s->root);
    return n >= 0 && (size_t)n < outlen;
}

static char *rel_join(const char *dir, const char *name)
{
    return *dir ? xasprintf("%s/%s", dir, name) : xstrdup(name);
}

/* Is rel (or one of its descendants) under dir? dir "" holds everything. */
static bool rel_under(const char *rel, const char *dir)
{
    size_t n = strlen(dir);
    return n == 0 || (strncmp(rel, dir, n) == 0 && (rel[n] == '\0' || rel[n] == '/'));
}

static bool name_ignored(const struct spool *s, const char *name)
{
    return offload_name_ignored(s->ignore, name);
}

/* ---- the file table ---- */

static uint32_t rel_hash(const char *rel)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)rel; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

static struct sfile **file_slot(struct spool *s, const char *rel, uint32_t h)
{
    struct sfile **pp = &s->buckets[h & (s->nbuckets - 1)];
    while (*pp && ((*pp)->hash != h || strcmp((*pp)->rel, rel) != 0))
        pp = &(*pp)->next;
    return pp;
}

static struct sfile *file_find(struct spool *s, const char *rel)
{
    return *file_slot(s, rel, rel_hash(rel));
}

static void file_timer_fired(struct evloop *l, void *arg);

static struct sfile *file_add(struct spool *s, const char *rel)
{
    if (s->nfiles >= s->nbuckets) {
        size_t n = s->nbuckets * 2;
        struct sfile **b = xcalloc(n, sizeof(*b));
        for (size_t i = 0; i < s->nbuckets; i++) {
            for (struct sfile *f = s->buckets[i], *next; f; f = next) {
                next = f->next;
                f->next = b[f->hash & (n - 1)];
                b[f->hash & (n - 1)] = f;
            }
        }
        free(s->buckets);
        s->buckets = b;
        s->nbuckets = n;
    }
    struct sfile *f = xcalloc(1, sizeof(*f));
    f->s = s;
    f->rel = xstrdup(rel);
    f->hash = rel_hash(rel);
    evloop_timer_init(&f->timer, file_timer_fired, f);
    struct sfile **pp = &s->buckets[f->hash & (s->nbuckets - 1)];
    f->next = *pp;
    *pp = f;
    s->nfiles++;
    return f;
}

static void file_forget(struct spool *s, struct sfile *f)
{
    struct sfile **pp = file_slot(s, f->rel, f->hash);
    *pp = f->next;
    s->nfiles--;
    evloop_timer_stop(s->loop, &f->timer);
    free(f->rel);
    free(f);
}

/* Forget every file matching (under dir) that the pipeline does not hold;
 * with sweep, only those the current scan did not see. */
static void files_drop(struct spool *s, const char *dir, bool sweep)
{
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (struct sfile *f = s->buckets[i], *next; f; f = next) {
            next = f->next;
            if (f->state == SFILE_REPORTED || !rel_under(f->rel, dir))
                continue;
            if (!sweep || f->gen != s->gen)
                file_forget(s, f);
        }
    }
}

/* (Re)start the settle clock of f at its new identity. */
static void file_changed(struct spool *s, struct sfile *f, const struct offload_ident *id)
{
    f->id = *id;
    f->changed_at = evloop_now(s->loop);
    f->busy = false;
    evloop_timer_start(s->loop, &f->timer, s->settle_ms);
}

/* A regular file is at rel with status st (closed: a writer just closed it). */
static void file_seen(struct spool *s, const char *rel, const struct stat *st, bool closed)
{
    struct offload_ident id;
    offload_ident_from_stat(st, &id);
    struct sfile *f = file_find(s, rel);
    if (!f) {
        f = file_add(s, rel);
        f->state = SFILE_WAITING;
        f->first_seen = evloop_now(s->loop);
        f->gen = s->gen;
        file_changed(s, f, &id);
        return;
    }
    f->gen = s->gen;
    if (f->state == SFILE_REPORTED)
        return;
    if (!offload_ident_equal(&f->id, &id)) {
        if (f->state == SFILE_KEPT)
            f->first_seen = evloop_now(s->loop);
        f->state = SFILE_WAITING;
        file_changed(s, f, &id);
    } else if (closed && f->busy) {
        /* The writer that held it went away: check again now. */
        evloop_timer_start(s->loop, &f->timer, 0);
    }
}

/* Nothing (or no regular file) is at rel any more. The pipeline's files are
 * kept until spool_done so that rel is never reported twice at once. */
static void file_gone(struct spool *s, const char *rel)
{
    struct sfile *f = file_find(s, rel);
    if (f && f->state != SFILE_REPORTED)
        file_forget(s, f);
}

/* Look at rel again (an event named it, or spool_done returned it). */
static void file_check(struct spool *s, const char *rel, bool closed)
{
    char path[PATH_MAX];
    struct stat st;
    if (!spool_path(s, rel, path, sizeof(path)) || lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
        file_gone(s, rel);
    else
        file_seen(s, rel, &st, closed);
}

/* Can a read lease be taken on path, whose identity must still be id?
 * Returns 0 (yes, or leases are not allowed here: the settle rule alone
 * decides), -EAGAIN (a writer holds it open), 1 (it changed: *now holds the
 * new identity), or -errno (it is gone or not a regular file). */
static int file_probe_lease(const char *path, const struct offload_ident *id,
                            struct offload_ident *now)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == EWOULDBLOCK)
            return -EAGAIN; /* someone holds a write lease */
        /* Unreadable: report it anyway, the pipeline will say why it fails. */
        return errno == EACCES || errno == EPERM ? 0 : -errno;
    }
    struct stat st;
    int r = 0;
    if (fstat(fd, &st) < 0) {
        r = -errno;
    } else if (!S_ISREG(st.st_mode)) {
        r = -EINVAL;
    } else {
        offload_ident_from_stat(&st, now);
        if (!offload_ident_equal(id, now))
            r = 1;
        else if (fcntl(fd, F_SETLEASE, F_RDLCK) == 0)
            (void)fcntl(fd, F_SETLEASE, F_UNLCK); /* release at once: we only asked */
        else if (errno == EAGAIN)
            r = -EAGAIN;
        /* EACCES (not our file), EINVAL (leases disabled, odd filesystem): settle alone. */
    }
    close(fd);
    return r;
}

static void file_timer_fired(struct evloop *l, void *arg)
{
    struct sfile *f = arg;
    struct spool *s = f->s;
    char path[PATH_MAX];
    struct stat st;
    if (!spool_path(s, f->rel, path, sizeof(path)) || lstat(path, &st) < 0 ||
        !S_ISREG(st.st_mode)) {
        file_forget(s, f);
        return;
    }
    struct offload_ident id;
    offload_ident_from_stat(&st, &id);
    if (!offload_ident_equal(&f->id, &id)) {
        file_changed(s, f, &id);
        return;
    }
    if (evloop_now(l) - f->changed_at < s->settle_ms) {
        evloop_timer_at(l, &f->timer, f->changed_at + s->settle_ms);
        return;
    }
    struct offload_ident now;
    int r = file_probe_lease(path, &f->id, &now);
    if (r == -EAGAIN) {
        f->busy = true;
        evloop_timer_start(l, &f->timer, retry_ms(s));
        return;
    }
    if (r == 1) {
        file_changed(s, f, &now);
        return;
    }
    if (r < 0) {
        file_forget(s, f);
        return;
    }
    f->state = SFILE_REPORTED;
    f->busy = false;
    /* Copies: the callback may call spool_done(), which may free f. */
    char *rel = xstrdup(f->rel);
    id = f->id;
    s->ready(s->arg, rel, &id);
    free(rel);
}

/* ---- directories ---- */

static struct swatch *watch_find(struct spool *s, int wd)
{
    for (size_t i = 0; i < s->nwatches; i++)
        if (s->watches[i].wd == wd)
            return &s->watches[i];
    return NULL;
}

static void watch_remove_at(struct spool *s, size_t i, bool rm)
{
    if (rm)
        (void)inotify_rm_watch(s->ifd, s->watches[i].wd);
    free(s->watches[i].rel);
    s->watches[i] = s->watches[--s->nwatches];
}

/* Watch the directory rel (again: the kernel hands back the same wd for a
 * directory it already watches, and its rel is brought up to date). */
static void watch_add(struct spool *s, const char *rel)
{
    char path[PATH_MAX];
    int wd = -1;
    if (spool_path(s, rel, path, sizeof(path)))
        wd = inotify_add_watch(s->ifd, path, WATCH_MASK);
    if (wd < 0) {
        /* Gone meanwhile (the scan will not find it either), or out of watches
         * (ENOSPC): then scans stand in for events. */
        if (errno != ENOENT && errno != ENOTDIR)
            s->watch_failed = true;
        return;
    }
    struct swatch *w = watch_find(s, wd);
    if (!w) {
        if (s->nwatches == s->capwatches) {
            s->capwatches = s->capwatches ? s->capwatches * 2 : 16;
            s->watches = xrealloc(s->watches, s->capwatches * sizeof(*s->watches));
        }
        w = &s->watches[s->nwatches++];
        w->wd = wd;
        w->rel = xstrdup(rel);
    } else if (strcmp(w->rel, rel) != 0) {
        free(w->rel);
        w->rel = xstrdup(rel);
    }
    w->gen = s->gen;
}

/* The directory rel left the spool (deleted or moved away; if it moved within
 * the spool its new name arrives as a separate event and is scanned anew). */
static void tree_drop(struct spool *s, const char *rel)
{
    for (size_t i = 0; i < s->nwatches;) {
        if (*rel && rel_under(s->watches[i].rel, rel))
            watch_remove_at(s, i, true);
        else
            i++;
    }
    files_drop(s, rel, false);
}

/* Watch and read the tree at top: each directory is watched before it is read
 * so that nothing created after the read goes unseen. Iterative, so that one
 * directory is open at a time however deep the tree. Returns 0, or -errno
 * when top itself cannot be read. */
static int tree_scan(struct spool *s, const char *top)
{
    char **stack = xmalloc(sizeof(*stack));
    size_t n = 1, cap = 1;
    int ret = 0;
    bool first = true;
    stack[0] = xstrdup(top);
    while (n > 0) {
        char *rel = stack[--n];
        char path[PATH_MAX];
        watch_add(s, rel);
        DIR *d = NULL;
        if (spool_path(s, rel, path, sizeof(path)))
            d = opendir(path);
        else
            errno = ENAMETOOLONG;
        if (!d) {
            if (first)
                ret = -errno; /* top itself */
            else if (errno != ENOENT && errno != ENOTDIR)
                s->scan_failed = true;
            free(rel);
            first = false;
            continue;
        }
        first = false;
        struct dirent *de;
        while ((de = readdir(d))) {
            const char *name = de->d_name;
            if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
                continue;
            struct stat st;
            unsigned type = de->d_type;
            bool have_st = false;
            if (type == DT_REG && name_ignored(s, name))
                continue;
            if (type == DT_UNKNOWN || type == DT_REG) {
                if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                    continue;
                have_st = true;
                type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_LNK;
            }
            if (type == DT_DIR && name[0] != '.') {
                if (n == cap) {
                    cap *= 2;
                    stack = xrealloc(stack, cap * sizeof(*stack));
                }
                stack[n++] = rel_join(rel, name);
            } else if (type == DT_REG && have_st && !name_ignored(s, name)) {
                char *child = rel_join(rel, name);
                file_seen(s, child, &st, false);
                free(child);
            }
        }
        closedir(d);
        free(rel);
    }
    free(stack);
    return ret;
}

static void scan_timer_fired(struct evloop *l, void *arg)
{
    struct spool *s = arg;
    s->gen++;
    s->scan_failed = s->watch_failed = s->need_scan = false;
    int r = tree_scan(s, "");
    if (r < 0) {
        /* The root itself is unreadable or gone: nothing can be trusted. */
        s->need_scan = true;
        evloop_timer_start(l, &s->scan_timer, retry_ms(s));
        return;
    }
    if (!s->scan_failed) {
        files_drop(s, "", true);
        for (size_t i = 0; i < s->nwatches;) {
            if (s->watches[i].gen != s->gen)
                watch_remove_at(s, i, true);
            else
                i++;
        }
    }
    s->scans++;
    if (s->watch_failed || s->scan_failed)
        evloop_timer_start(l, &s->scan_timer, retry_ms(s));
    else if (s->rescan_ms)
        evloop_timer_start(l, &s->scan_timer, s->rescan_ms);
}

static void scan_soon(struct spool *s)
{
    s->need_scan = true;
    evloop_timer_start(s->loop, &s->scan_timer, 0);
}

/* ---- events ---- */

static void event_handle(struct spool *s, const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW) {
        s->overflows++;
        scan_soon(s);
        return;
    }
    struct swatch *w = watch_find(s, ev->wd);
    if (!w)
        return; /* a watch already dropped */
    bool root = w->rel[0] == '\0';
    if (ev->mask & IN_IGNORED) {
        /* The kernel dropped the watch (directory deleted, or unmounted). */
        watch_remove_at(s, (size_t)(w - s->watches), false);
        if (root)
            scan_soon(s);
        return;
    }
    if (ev->mask & (IN_MOVE_SELF | IN_UNMOUNT)) {
        if (root)
            scan_soon(s); /* the spool itself moved: find out what is at its path */
        return;
    }
    if (ev->len == 0 || ev->name[0] == '\0')
        return;
    char *rel = rel_join(w->rel, ev->name);
    if (ev->mask & IN_ISDIR) {
        if (ev->mask & (IN_DELETE | IN_MOVED_FROM))
            tree_drop(s, rel);
        else if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) && ev->name[0] != '.')
            (void)tree_scan(s, rel); /* new, or moved in with files already in it */
    } else if (!name_ignored(s, ev->name)) {
        if (ev->mask & (IN_DELETE | IN_MOVED_FROM))
            file_gone(s, rel);
        else
            file_check(s, rel, ev->mask & IN_CLOSE_WRITE);
    }
    free(rel);
}

static void spool_readable(struct evloop *l, int fd, uint32_t events, void *arg)
{
    struct spool *s = arg;
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) {
        /* EAGAIN: nothing after all; anything else: trust scans instead. */
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            scan_soon(s);
        return;
    }
    for (char *p = buf; p < buf + n;) {
        const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
        event_handle(s, ev);
        p += sizeof(*ev) + ev->len;
    }
}

/* ---- public ---- */

int spool_create(struct evloop *loop, const struct spool_opts *o, spool_ready_fn ready, void *arg,
                 struct spool **out, char *err, size_t errlen)
{
    struct stat st;
    if (stat(o->dir, &st) < 0) {
        int e = errno;
        snprintf(err, errlen, "spool '%s': %s", o->dir, strerror(e));
        return -e;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "spool '%s': not a directory", o->dir);
        return -ENOTDIR;
    }
    int ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (ifd < 0) {
        int e = errno;
        snprintf(err, errlen, "spool '%s': inotify: %s", o->dir, strerror(e));
        return -e;
    }
    struct spool *s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->ifd = ifd;
    s->root = xstrdup(o->dir);
    for (size_t n = strlen(s->root); n > 1 && s->root[n - 1] == '/'; n--)
        s->root[n - 1] = '\0';
    size_t n = 0;
    while (o->ignore && o->ignore[n])
        n++;
    s->ignore = xcalloc(n + 1, sizeof(*s->ignore));
    for (size_t i = 0; i < n; i++)
        s->ignore[i] = xstrdup(o->ignore[i]);
    s->settle_ms = o->settle_ms;
    s->rescan_ms = o->rescan_ms;
    s->ready = ready;
    s->arg = arg;
    s->nbuckets = 64;
    s->buckets = xcalloc(s->nbuckets, sizeof(*s->buckets));
    evloop_timer_init(&s->scan_timer, scan_timer_fired, s);
    int r = evloop_fd_add(loop, ifd, EPOLLIN, spool_readable, s);
    if (r < 0) {
        snprintf(err, errlen, "spool '%s': event loop: %s", o->dir, strerror(-r));
        spool_destroy(s);
        return r;
    }
    /* The first scan runs from the loop, like every later one. */
    scan_soon(s);
    *out = s;
    return 0;
}

void spool_destroy(struct spool *s)
{
    if (!s)
        return;
    evloop_timer_stop(s->loop, &s->scan_timer);
    for (size_t i = 0; i < s->nbuckets; i++)
        while (s->buckets[i])
            file_forget(s, s->buckets[i]);
    while (s->nwatches)
        watch_remove_at(s, 0, false); /* closing the fd drops them all */
    (void)evloop_fd_del(s->loop, s->ifd);
    close(s->ifd);
    for (char **p = s->ignore; *p; p++)
        free(*p);
    free(s->ignore);
    free(s->watches);
    free(s->buckets);
    free(s->root);
    free(s);
}

void spool_done(struct spool *s, const char *rel, bool keep)
{
    struct sfile *f = file_find(s, rel);
    if (!f)
        return;
    if (keep) {
        f->state = SFILE_KEPT; /* also when it was still settling: the caller decided */
        f->busy = false;
        evloop_timer_stop(s->loop, &f->timer);
    } else {
        file_forget(s, f);
    }
    /* Whatever is at rel now may have changed while the pipeline held it,
     * with its events swallowed: look once more. */
    const char *name = strrchr(rel, '/');
    if (!name_ignored(s, name ? name + 1 : rel))
        file_check(s, rel, false);
}

void spool_get_stats(const struct spool *s, struct spool_stats *out)
{
    memset(out, 0, sizeof(*out));
    uint64_t now = evloop_now(s->loop), oldest = now;
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (const struct sfile *f = s->buckets[i]; f; f = f->next) {
            if (f->state == SFILE_KEPT) {
                out->kept++;
                continue;
            }
            out->pending++;
            out->pending_bytes += f->id.size;
            if (f->first_seen < oldest)
                oldest = f->first_seen;
        }
    }
    out->oldest_ms = out->pending ? now - oldest : 0;
    out->scans = s->scans;
    out->overflows = s->overflows;
    out->watches = s->nwatches;
}

bool spool_quiet(const struct spool *s)
{
    if (s->scans == 0 || s->need_scan)
        return false;
    for (size_t i = 0; i < s->nbuckets; i++)
        for (const struct sfile *f = s->buckets[i]; f; f = f->next)
            if (f->state == SFILE_WAITING)
                return false;
    return true;
}
