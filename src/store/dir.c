#include "store/dir.h"

#include "common/alloc.h"
#include "common/fsdir.h"
#include "common/range.h"
#include "store/backend.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TMP_PREFIX ".ferry-tmp."

#define DIR_SWEPT_SLOTS 1024

struct dir_store {
    struct store base;
    char *root;
    pthread_mutex_t lock;            /* guards swept */
    uint64_t swept[DIR_SWEPT_SLOTS]; /* hashes of directories swept for stale temps */
};

static struct dir_store *dir_of(struct store *s)
{
    return (struct dir_store *)s;
}

int dir_store_check_key(const char *key)
{
    size_t n = strlen(key);
    size_t sl = strlen(DIR_STORE_SIDECAR_SUFFIX);
    if (n == 0 || key[0] == '/' || (n >= sl && strcmp(key + n - sl, DIR_STORE_SIDECAR_SUFFIX) == 0))
        return -EINVAL;
    const char *seg = key;
    for (;;) {
        const char *slash = strchr(seg, '/');
        size_t len = slash ? (size_t)(slash - seg) : strlen(seg);
        if (len == 0 || (len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return -EINVAL;
        if (strncmp(seg, TMP_PREFIX, strlen(TMP_PREFIX)) == 0)
            return -EINVAL;
        if (!slash)
            return 0;
        seg = slash + 1;
    }
}

/* root/prefix+key, checked. */
static int dir_path(struct store *s, const char *key, char **out, struct store_error *err)
{
    char *full = xasprintf("%s%s", s->prefix, key);
    if (dir_store_check_key(full) < 0) {
        store_error_set(err, 0, "InvalidKey", "'%s' is not a valid object key", full);
        free(full);
        return -EINVAL;
    }
    *out = xasprintf("%s/%s", dir_of(s)->root, full);
    free(full);
    return 0;
}

/* mkdir -p for the directories above path; each one created is fsynced into
 * its parent, so that an object renamed into it later survives a crash. */
static int make_parents(const char *path)
{
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    int r = 0;
    if (slash && slash != dir) {
        *slash = '\0';
        r = fsdir_make(dir, 0755);
    }
    free(dir);
    return r;
}

/* Is the temp file `name` (in the directory open as dirfd) left over by a
 * crash? The rule is in dir.h. */
static bool temp_is_stale(int dirfd, const char *name, time_t now)
{
    const char *rest = name + strlen(TMP_PREFIX);
    time_t min_age;
    if (strlen(rest) == 6) {
        min_age = DIR_STORE_TEMP_UNTAGGED_AGE_S; /* written before temps carried a pid */
    } else {
        char *end;
        errno = 0;
        long pid = strtol(rest, &end, 10);
        if (errno || end == rest || pid <= 0 || pid > INT32_MAX || *end != '.' ||
            strlen(end + 1) != 6)
            return false; /* not a name we make */
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            return false; /* its writer (or some process with that pid) still runs */
        min_age = DIR_STORE_TEMP_STALE_AGE_S;
    }
    struct stat st;
    return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
           st.st_mtime + min_age <= now;
}

/* Remove the stale temp files in dir. Best effort: a file that cannot be
 * read or removed stays for the next sweep. */
static void sweep_stale_temps(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    time_t now = time(NULL);
    bool removed = false;
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0 &&
            temp_is_stale(fd, e->d_name, now) && unlinkat(fd, e->d_name, 0) == 0)
            removed = true;
    }
    if (removed)
        fsync(fd);
    closedir(d);
}

/* Sweep the directory of path for stale temps on the first put into it (per
 * store, as far as a small direct-mapped table of directory hashes remembers:
 * a collision only costs another sweep). */
static void sweep_once(struct dir_store *ds, const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)path[i]) * 1099511628211ULL;
    h |= 1; /* 0 marks an empty slot */
    size_t slot = (size_t)(h % DIR_SWEPT_SLOTS);
    pthread_mutex_lock(&ds->lock);
    bool seen = ds->swept[slot] == h;
    ds->swept[slot] = h;
    pthread_mutex_unlock(&ds->lock);
    if (!seen) {
        char *dir = n ? xstrndup(path, n) : xstrdup(".");
        sweep_stale_temps(dir);
        free(dir);
    }
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Make a temp file next to path; returns its fd and name. */
static int temp_beside(const char *path, char **tmp_out)
{
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    *slash = '\0';
    char *tmp = xasprintf("%s/" TMP_PREFIX "%ld.XXXXXX", dir, (long)getpid());
    free(dir);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        int r = -errno;
        free(tmp);
        return r;
    }
    *tmp_out = tmp;
    return fd;
}

static void sidecar_format(const struct store_digest *d, char *out, size_t outlen)
{
    char sha[65], md5[33];
    store_hex(d->sha256, 32, sha);
    store_hex(d->md5, 16, md5);
    snprintf(out, outlen, "size %llu\nsha256 %s\nmd5 %s\n", (unsigned long long)d->size, sha, md5);
}

/* Write the sidecar for path atomically. */
static int sidecar_write(const char *path, const struct store_digest *d)
{
    char *side = xasprintf("%s" DIR_STORE_SIDECAR_SUFFIX, path);
    char *tmp = NULL, text[256];
    sidecar_format(d, text, sizeof(text));
    int fd = temp_beside(side, &tmp);
    int r = fd < 0 ? fd : write_all(fd, text, strlen(text));
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (fd >= 0)
        close(fd);
    if (r == 0 && rename(tmp, side) < 0)
        r = -errno;
    if (r < 0 && tmp)
        unlink(tmp);
    free(tmp);
    free(side);
    return r;
}

/* Copy fd to out while hashing, so the check is on the bytes written. */
static int copy_hashing(int fd, int out, struct store_digest *got)
{
    EVP_MD_CTX *sha = EVP_MD_CTX_new(), *md5 = EVP_MD_CTX_new();
    if (!sha || !md5)
        abort();
    EVP_DigestInit_ex(sha, EVP_sha256(), NULL);
    EVP_DigestInit_ex(md5, EVP_md5(), NULL);
    size_t cap = 1 << 20;
    char *buf = xmalloc(cap);
    uint64_t off = 0;
    int r = 0;
    for (;;) {
        ssize_t n = pread(fd, buf, cap, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            break;
        }
        if (n == 0)
            break;
        EVP_DigestUpdate(sha, buf, (size_t)n);
        EVP_DigestUpdate(md5, buf, (size_t)n);
        r = write_all(out, buf, (size_t)n);
        if (r < 0)
            break;
        off += (uint64_t)n;
    }
    got->size = off;
    EVP_DigestFinal_ex(sha, got->sha256, NULL);
    EVP_DigestFinal_ex(md5, got->md5, NULL);
    EVP_MD_CTX_free(sha);
    EVP_MD_CTX_free(md5);
    free(buf);
    return r;
}

static int sidecar_read(const char *path, struct store_info *info)
{
    char *side = xasprintf("%s" DIR_STORE_SIDECAR_SUFFIX, path);
    FILE *f = fopen(side, "re");
    free(side);
    if (!f)
        return -errno;
    char line[256];
    while (fgets(line, sizeof(line), f)) {
        char hex[80];
        if (sscanf(line, "sha256 %64s", hex) == 1)
            snprintf(info->meta_sha256, sizeof(info->meta_sha256), "%.64s", hex);
        else if (sscanf(line, "md5 %32s", hex) == 1)
            snprintf(info->etag, sizeof(info->etag), "%.32s", hex);
    }
    fclose(f);
    return 0;
}

static int dir_head(struct store *s, const char *key, struct store_info *out,
                    struct store_error *err)
{
    char *path;
    int r = dir_path(s, key, &path, err);
    if (r < 0)
        return r;
    struct stat st;
    int bad = stat(path, &st) < 0 ? errno : 0;
    if (bad || !S_ISREG(st.st_mode)) {
        r = bad && bad != ENOENT ? -bad : -ENOENT;
        store_error_set(err, 0, "NoSuchKey", "no object '%s'", key);
        free(path);
        return r;
    }
    struct store_info info;
    memset(&info, 0, sizeof(info));
    info.size = (uint64_t)st.st_size;
    info.mtime = st.st_mtime;
    /* Without a sidecar the object has no recorded digest; verify then refuses. */
    sidecar_read(path, &info);
    free(path);
    *out = info;
    return 0;
}

/* Is the object at path exactly the bytes of d? Re-hashes the stored file. */
static int dir_same_bytes(const char *path, const struct store_digest *d)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct store_digest got;
    int r = store_digest_fd(fd, UINT64_MAX, 0, &got);
    close(fd);
    if (r < 0)
        return r;
    return got.size == d->size && memcmp(got.sha256, d->sha256, 32) == 0 ? 0 : -EEXIST;
}

static int dir_put_file(struct store *s, const char *key, int fd, const struct store_digest *d,
                        const char *content_type, struct store_error *err)
{
    char *path, *tmp = NULL;
    int r = dir_path(s, key, &path, err);
    if (r < 0)
        return r;
    r = make_parents(path);
    if (r == 0)
        sweep_once(dir_of(s), path);
    int out = r < 0 ? r : temp_beside(path, &tmp);
    if (out < 0) {
        r = out;
        store_error_set(err, 0, "WriteFailed", "cannot create a file for '%s': %s", key,
                        strerror(-r));
        goto fail;
    }
    struct store_digest got;
    r = copy_hashing(fd, out, &got);
    if (r == 0 && fsync(out) < 0)
        r = -errno;
    close(out);
    if (r < 0) {
        store_error_set(err, 0, "WriteFailed", "writing '%s': %s", key, strerror(-r));
        goto fail;
    }
    /* The file may have changed since the caller hashed it: store only what the
     * caller's digest describes. */
    if (got.size != d->size || memcmp(got.sha256, d->sha256, 32) != 0 ||
        memcmp(got.md5, d->md5, 16) != 0) {
        r = -EBADMSG;
        store_error_set(err, 0, "BadDigest", "'%s' changed while it was stored", key);
        goto fail;
    }
    if (s->conditional_create) {
        /* link() never replaces: an existing object stays, and counts as
         * success only when it holds exactly these bytes. The sidecar follows
         * the object, so an existing object's sidecar is never replaced by a
         * digest of other bytes (a crash in between leaves an object without
         * sidecar, which verify refuses rather than confirms). */
        if (link(tmp, path) < 0) {
            r = -errno;
            if (r == -EEXIST)
                r = dir_same_bytes(path, d);
            if (r < 0)
                store_error_set(err, 412, "PreconditionFailed",
                                "'%s' exists with different content", key);
        }
        if (r == 0)
            r = sidecar_write(path, d);
    } else {
        /* The sidecar goes first: a crash before the rename leaves the old
         * object with a sidecar that does not match it, which verify reports
         * as a mismatch, never as the new bytes. */
        r = sidecar_write(path, d);
        if (r == 0 && rename(tmp, path) < 0)
            r = -errno;
        if (r < 0)
            store_error_set(err, 0, "WriteFailed", "storing '%s': %s", key, strerror(-r));
    }
    if (r < 0)
        goto fail;
    r = fsdir_sync_parent(path);
fail:
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(path);
    return r;
}

/* Local bytes can be re-read: hash the stored file itself, not its sidecar. */
static int dir_verify(struct store *s, const char *key, const struct store_digest *d,
                      struct store_error *err)
{
    char *path;
    int r = dir_path(s, key, &path, err);
    if (r < 0)
        return r;
    r = dir_same_bytes(path, d);
    free(path);
    if (r == -EEXIST) {
        store_error_set(err, 0, "ChecksumMismatch",
                        "the stored object '%s' differs from the local file", key);
        return -EBADMSG;
    }
    if (r < 0)
        store_error_set(err, 0, "ReadFailed", "'%s': %s", key, strerror(-r));
    return r;
}

static int dir_get(struct store *s, const char *key, const char *range, int out_fd,
                   struct store_error *err)
{
    char *path;
    int r = dir_path(s, key, &path, err);
    if (r < 0)
        return r;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0) {
        r = -errno;
        store_error_set(err, 0, r == -ENOENT ? "NoSuchKey" : "ReadFailed", "'%s': %s", key,
                        strerror(-r));
        return r;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        r = -errno;
        store_error_set(err, 0, "ReadFailed", "'%s': %s", key, strerror(-r));
        close(fd);
        return r;
    }
    uint64_t start = 0, len = (uint64_t)st.st_size;
    /* The same parser and outcomes as static files: an invalid or multi-range
     * header is ignored (the whole object), only a valid one that selects
     * nothing is a 416. */
    if (range && range_parse(range, strlen(range), len, &start, &len) == RANGE_UNSATISFIABLE) {
        store_error_set(err, 416, "InvalidRange", "range '%s' of '%s'", range, key);
        close(fd);
        return -ERANGE;
    }
    off_t off = (off_t)start;
    while (len > 0) {
        ssize_t n = sendfile(out_fd, fd, &off, len > (1 << 30) ? (1 << 30) : (size_t)len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r = n < 0 ? -errno : -EIO;
            store_error_set(err, 0, "ReadFailed", "sending '%s': %s", key, strerror(-r));
            break;
        }
        len -= (uint64_t)n;
    }
    close(fd);
    return r;
}

static int dir_del(struct store *s, const char *key, struct store_error *err)
{
    char *path;
    int r = dir_path(s, key, &path, err);
    if (r < 0)
        return r;
    char *side = xasprintf("%s" DIR_STORE_SIDECAR_SUFFIX, path);
    if (unlink(path) < 0 && errno != ENOENT)
        r = -errno;
    if (unlink(side) < 0 && errno != ENOENT && r == 0)
        r = -errno;
    if (r == 0)
        r = fsdir_sync_parent(path);
    else
        store_error_set(err, 0, "DeleteFailed", "'%s': %s", key, strerror(-r));
    if (r == -ENOENT)
        r = 0;
    free(side);
    free(path);
    return r;
}

static void dir_destroy(struct store *s)
{
    pthread_mutex_destroy(&dir_of(s)->lock);
    free(dir_of(s)->root);
    free(s);
}

static const struct store_ops dir_ops = {
    .put_file = dir_put_file,
    .head = dir_head,
    .get = dir_get,
    .del = dir_del,
    .verify = dir_verify,
    .destroy = dir_destroy,
};

int dir_store_create(const char *path, struct store **out, struct store_error *err)
{
    if (!path || !*path) {
        store_error_set(err, 0, "InvalidConfig", "[store] path is empty");
        return -EINVAL;
    }
    struct dir_store *d = xcalloc(1, sizeof(*d));
    d->base.ops = &dir_ops;
    d->base.wake_fd = -1; /* store_create() makes it */
    d->root = xstrdup(path);
    pthread_mutex_init(&d->lock, NULL);
    size_t n = strlen(d->root);
    while (n > 1 && d->root[n - 1] == '/')
        d->root[--n] = '\0';
    if (mkdir(d->root, 0755) < 0 && errno != EEXIST) {
        int r = -errno;
        store_error_set(err, 0, "InvalidConfig", "cannot create store directory '%s': %s", path,
                        strerror(-r));
        dir_destroy(&d->base);
        return r;
    }
    *out = &d->base;
    return 0;
}
