/* The offloader's journal (see journal.h for the line format and the contract). */
#include "offload/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/fsdir.h"
#include "common/text.h"

#define JOURNAL_NAME "offload.journal"
#define JOURNAL_REL_MAX 4095        /* PATH_MAX - 1: no longer path exists below the spool */
#define JOURNAL_LINE_MAX (64 << 10) /* a full line is at most ~14 KiB (rel x3 + the rest) */
#define JOURNAL_FIELDS 13
/* Compact when the file holds more than 4x the live entries, but not for every few
 * lines while the journal is small. */
#define JOURNAL_COMPACT_MIN 64

static const char *const stage_names[] = {"queued",   "uploading", "stored",
                                          "archived", "deleted",   "failed"};
#define STAGE_COUNT (sizeof(stage_names) / sizeof(stage_names[0]))

struct jnode {
    struct jnode *next;
    struct journal_entry e; /* e.rel is owned by the node */
};

struct journal {
    int fd;         /* O_APPEND, flocked */
    char *path;     /* state_dir/offload.journal */
    char *tmp_path; /* path + ".tmp", the compaction target */
    struct jnode **tab;
    size_t nbuckets, count;
    uint64_t lines; /* lines in the file */
    off_t size;     /* bytes in the file: where a failed append is cut back to */
    bool broken;    /* a partial line could not be cut off: refuse further appends */
};

/* CRC-32 (IEEE 802.3, reflected, as zlib's crc32()), bitwise: lines are short. */
static uint32_t crc32_ieee(const char *p, size_t n)
{
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        crc ^= (unsigned char)p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static struct jnode **slot_find(struct journal *j, const char *rel)
{
    struct jnode **p = &j->tab[hash_str(rel) % j->nbuckets];
    while (*p && strcmp((*p)->e.rel, rel) != 0)
        p = &(*p)->next;
    return p;
}

static void table_grow(struct journal *j)
{
    size_t n = j->nbuckets * 2;
    struct jnode **tab = xcalloc(n, sizeof(*tab));
    for (size_t i = 0; i < j->nbuckets; i++) {
        struct jnode *node = j->tab[i], *next;
        for (; node; node = next) {
            next = node->next;
            struct jnode **head = &tab[hash_str(node->e.rel) % n];
            node->next = *head;
            *head = node;
        }
    }
    free(j->tab);
    j->tab = tab;
    j->nbuckets = n;
}

/* Make e the live state of its rel, or forget the rel when e is DELETED. Copies e. */
static void table_apply(struct journal *j, const struct journal_entry *e)
{
    struct jnode **p = slot_find(j, e->rel), *node = *p;

    if (e->stage == OFFLOAD_DELETED) {
        if (node) {
            *p = node->next;
            free(node->e.rel);
            free(node);
            j->count--;
        }
        return;
    }
    if (!node) {
        node = xcalloc(1, sizeof(*node));
        node->e.rel = xstrdup(e->rel);
        *p = node;
        j->count++;
    }
    char *rel = node->e.rel;
    node->e = *e;
    node->e.rel = rel;
    if (j->count > j->nbuckets)
        table_grow(j);
}

static void table_free(struct journal *j)
{
    for (size_t i = 0; i < j->nbuckets; i++) {
        struct jnode *node = j->tab[i], *next;
        for (; node; node = next) {
            next = node->next;
            free(node->e.rel);
            free(node);
        }
    }
    free(j->tab);
}

/* --- line encoding ----------------------------------------------------------------- */

static int put_field(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    int r = buf_append(b, " ", 1);

    if (n == 0)
        return r < 0 ? r : buf_append(b, "-", 1);
    for (size_t i = 0; i < n && r == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e || c == '%' || (c == '-' && i == 0)) {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            r = buf_append(b, esc, 3);
        } else {
            r = buf_append(b, s + i, 1);
        }
    }
    return r;
}

static int put_hex(struct buf *b, const unsigned char *p, size_t n, bool present)
{
    int r = buf_append(b, " ", 1);
    if (!present)
        return r < 0 ? r : buf_append(b, "-", 1);
    for (size_t i = 0; i < n && r == 0; i++)
        r = buf_printf(b, "%02x", p[i]);
    return r;
}

/* Append e's line (with its '\n') to b. */
static int line_format(struct buf *b, const struct journal_entry *e)
{
    size_t start = b->len;
    int r = buf_printf(b, "j1 %08x %s", 0u, stage_names[e->stage]);
    size_t body = b->len - strlen(stage_names[e->stage]);

    if (r == 0)
        r = put_field(b, e->rel, strlen(e->rel));
    if (r == 0)
        r = buf_printf(b, " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRId64 " %" PRId64, e->id.dev,
                       e->id.ino, e->id.size, e->id.mtime_ns, e->id.ctime_ns);
    if (r == 0)
        r = put_hex(b, e->sha256, sizeof(e->sha256), e->has_digest);
    if (r == 0)
        r = put_hex(b, e->md5, sizeof(e->md5), e->has_digest);
    if (r == 0)
        r = put_field(b, e->upload_id, strlen(e->upload_id));
    if (r == 0)
        r = put_field(b, e->error, strlen(e->error));
    if (r < 0)
        return r;
    /* Fill in the checksum of everything after "j1 CRC ". */
    char crc[9];
    snprintf(crc, sizeof(crc), "%08x", crc32_ieee(b->data + body, b->len - body));
    memcpy(b->data + start + 3, crc, 8);
    return buf_append(b, "\n", 1);
}

/* --- line parsing ------------------------------------------------------------------ */

/* Decode a percent-encoded field in place; returns its length, or -1 when it is
 * malformed or decodes to a NUL byte. */
static long field_decode(char *s)
{
    char *start = s, *out = s;

    if (strcmp(s, "-") == 0) {
        *s = '\0';
        return 0;
    }
    for (; *s; s++) {
        if (*s != '%') {
            *out++ = *s;
            continue;
        }
        int hi = text_hex_value(s[1]), lo = hi < 0 ? -1 : text_hex_value(s[2]);
        if (lo < 0 || (hi | lo) == 0)
            return -1;
        *out++ = (char)(hi << 4 | lo);
        s += 2;
    }
    *out = '\0';
    return out - start;
}

static int parse_hex(const char *s, unsigned char *out, size_t n)
{
    if (strlen(s) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = text_hex_value(s[2 * i]), lo = text_hex_value(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

static int parse_u64(const char *s, uint64_t *v)
{
    char *end;
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    *v = strtoull(s, &end, 10);
    return errno || *end ? -1 : 0;
}

static int parse_i64(const char *s, int64_t *v)
{
    char *end;
    if ((*s < '0' || *s > '9') && *s != '-')
        return -1;
    errno = 0;
    *v = strtoll(s, &end, 10);
    return errno || *end ? -1 : 0;
}

/* Parse one line (without its '\n', modified in place) into e; e->rel points into line.
 * Returns 0, -EILSEQ for a checksum mismatch (possibly a torn write), or -EINVAL for a
 * malformed line, with why set to a static description. */
static int line_parse(char *line, struct journal_entry *e, const char **why)
{
    char *f[JOURNAL_FIELDS], *p;
    size_t n = 0;
    long len;

    memset(e, 0, sizeof(*e));
    if (strncmp(line, "j1 ", 3) != 0)
        return *why = "not a journal line (expected \"j1 CRC ...\")", -EINVAL;
    if (strspn(line + 3, "0123456789abcdef") != 8 || line[11] != ' ')
        return *why = "malformed checksum", -EINVAL;
    if (crc32_ieee(line + 12, strlen(line + 12)) != (uint32_t)strtoul(line + 3, NULL, 16))
        return *why = "checksum mismatch", -EILSEQ;
    for (p = line; p && n < JOURNAL_FIELDS; n++) {
        f[n] = p;
        p = strchr(p, ' ');
        if (p)
            *p++ = '\0';
    }
    if (p || n != JOURNAL_FIELDS)
        return *why = "wrong number of fields", -EINVAL;

    e->stage = -1;
    for (size_t i = 0; i < STAGE_COUNT; i++)
        if (strcmp(f[2], stage_names[i]) == 0)
            e->stage = (int)i;
    if (e->stage < 0)
        return *why = "unknown stage", -EINVAL;
    len = field_decode(f[3]);
    if (len <= 0 || len > JOURNAL_REL_MAX)
        return *why = "bad rel", -EINVAL;
    e->rel = f[3];
    if (parse_u64(f[4], &e->id.dev) || parse_u64(f[5], &e->id.ino) ||
        parse_u64(f[6], &e->id.size) || parse_i64(f[7], &e->id.mtime_ns) ||
        parse_i64(f[8], &e->id.ctime_ns))
        return *why = "bad file identity", -EINVAL;
    e->has_digest = strcmp(f[9], "-") != 0;
    if (e->has_digest != (strcmp(f[10], "-") != 0) ||
        (e->has_digest && (parse_hex(f[9], e->sha256, sizeof(e->sha256)) ||
                           parse_hex(f[10], e->md5, sizeof(e->md5)))))
        return *why = "bad digest", -EINVAL;
    len = field_decode(f[11]);
    if (len < 0 || (size_t)len >= sizeof(e->upload_id))
        return *why = "bad upload id", -EINVAL;
    memcpy(e->upload_id, f[11], (size_t)len + 1);
    len = field_decode(f[12]);
    if (len < 0 || (size_t)len >= sizeof(e->error))
        return *why = "bad error", -EINVAL;
    memcpy(e->error, f[12], (size_t)len + 1);
    return 0;
}

/* --- file operations --------------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        if (w == 0)
            return -EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Open path for appending and take the journal's lock on it; -EBUSY when another open
 * journal holds it. Retries when the file was replaced (by a compaction elsewhere)
 * between the open and the lock, so the lock is always on the current file. */
static int open_locked(const char *path, int flags)
{
    for (int tries = 0; tries < 10; tries++) {
        struct stat a, b;
        int fd = open(path, flags | O_WRONLY | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0)
            return -errno;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
            int r = errno == EWOULDBLOCK ? -EBUSY : -errno;
            close(fd);
            return r;
        }
        if (fstat(fd, &a) == 0 &&
            (flags & O_TRUNC ||
             (stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)))
            return fd;
        close(fd);
    }
    return -EBUSY;
}

/* Rewrite the file with only the live entries: temp file, fsync, rename, fsync dir.
 * On success j->fd is the new file. On failure before the rename the old file stays
 * in use, untouched. */
static int journal_compact(struct journal *j)
{
    struct buf b;
    int r = 0, fd = open_locked(j->tmp_path, O_CREAT | O_TRUNC);
    off_t size = 0;

    if (fd < 0)
        return fd;
    buf_init(&b, 2 * JOURNAL_LINE_MAX);
    for (size_t i = 0; i < j->nbuckets && r == 0; i++) {
        for (struct jnode *node = j->tab[i]; node && r == 0; node = node->next) {
            r = line_format(&b, &node->e);
            if (r == 0 && b.len >= JOURNAL_LINE_MAX) {
                r = write_all(fd, b.data, b.len);
                size += (off_t)b.len;
                buf_reset(&b);
            }
        }
    }
    if (r == 0) {
        r = write_all(fd, b.data, b.len);
        size += (off_t)b.len;
    }
    buf_finish(&b);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (r == 0 && rename(j->tmp_path, j->path) < 0)
        r = -errno;
    if (r < 0) {
        unlink(j->tmp_path);
        close(fd);
        return r;
    }
    /* The old file is gone from the directory: appends must go to the new one even if
     * the directory fsync below fails. */
    close(j->fd);
    j->fd = fd;
    j->size = size;
    j->lines = j->count;
    return fsdir_sync_parent(j->path);
}

/* Replay the file at fd's path. A bad line is only forgiven when it is the last. */
static int journal_replay(struct journal *j, char *err, size_t errlen)
{
    FILE *f = fopen(j->path, "re");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    uint64_t lineno = 0;
    int r = 0;

    if (!f) {
        r = -errno;
        set_err(err, errlen, "%s: %s", j->path, strerror(-r));
        return r;
    }
    while ((n = getline(&line, &cap, f)) > 0) {
        struct journal_entry e;
        const char *why = NULL;

        lineno++;
        /* A crash can only tear the line being appended, the last one: without its
         * newline (even if the rest is whole, its record never returned) or with a bad
         * checksum. Drop it; compaction then removes it from the file. */
        if (line[n - 1] != '\n')
            break;
        line[--n] = '\0';
        if (n > JOURNAL_LINE_MAX) {
            r = -EINVAL;
            why = "line too long";
        } else if (strlen(line) != (size_t)n) {
            r = -EINVAL;
            why = "NUL byte in line";
        } else {
            r = line_parse(line, &e, &why);
        }
        if (r == 0) {
            table_apply(j, &e);
            continue;
        }
        if (r == -EILSEQ && getc(f) == EOF) {
            r = 0;
            break;
        }
        set_err(err, errlen, "%s:%" PRIu64 ": %s", j->path, lineno, why);
        r = -EBADMSG;
        break;
    }
    if (r == 0 && ferror(f)) {
        r = -EIO;
        set_err(err, errlen, "%s: read error", j->path);
    }
    free(line);
    fclose(f);
    return r;
}

int journal_open(const char *state_dir, struct journal **out, char *err, size_t errlen)
{
    struct journal *j = xcalloc(1, sizeof(*j));
    int r;

    j->path = xasprintf("%s/%s", state_dir, JOURNAL_NAME);
    j->tmp_path = xasprintf("%s.tmp", j->path);
    j->nbuckets = 64;
    j->tab = xcalloc(j->nbuckets, sizeof(*j->tab));
    j->fd = open_locked(j->path, O_CREAT);
    if (j->fd < 0) {
        r = j->fd;
        set_err(err, errlen, "%s: %s", j->path,
                r == -EBUSY ? "in use by another offloader" : strerror(-r));
        goto fail;
    }
    r = journal_replay(j, err, errlen);
    if (r < 0)
        goto fail;
    r = journal_compact(j);
    if (r < 0) {
        set_err(err, errlen, "%s: compacting: %s", j->path, strerror(-r));
        goto fail;
    }
    *out = j;
    return 0;
fail:
    journal_close(j);
    return r;
}

int journal_record(struct journal *j, const struct journal_entry *e, bool sync)
{
    struct buf b;
    int r;

    if (!e->rel || !*e->rel || e->stage < 0 || e->stage >= (int)STAGE_COUNT ||
        !memchr(e->upload_id, '\0', sizeof(e->upload_id)) ||
        !memchr(e->error, '\0', sizeof(e->error)))
        return -EINVAL;
    if (strlen(e->rel) > JOURNAL_REL_MAX)
        return -ENAMETOOLONG;
    if (j->broken)
        return -EIO;
    buf_init(&b, JOURNAL_LINE_MAX);
    r = line_format(&b, e);
    if (r == 0)
        r = write_all(j->fd, b.data, b.len);
    if (r < 0 && r != -ENOBUFS && ftruncate(j->fd, j->size) < 0)
        j->broken = true; /* a partial line would become a bad middle line */
    if (r == 0 && sync && fdatasync(j->fd) < 0) {
        /* After a failed fsync the page cache cannot be trusted (the line may or may not
         * reach the disk): stop recording rather than guess. */
        r = -errno;
        j->broken = true;
    }
    if (r == 0) {
        j->size += (off_t)b.len;
        j->lines++;
    }
    buf_finish(&b);
    if (r < 0)
        return r;
    table_apply(j, e);
    /* Best effort: a failed compaction leaves the longer file, still valid. */
    if (j->lines >= JOURNAL_COMPACT_MIN && j->lines > 4 * (uint64_t)j->count)
        (void)journal_compact(j);
    return 0;
}

const struct journal_entry *journal_get(struct journal *j, const char *rel)
{
    struct jnode *node = *slot_find(j, rel);
    return node ? &node->e : NULL;
}

void journal_foreach(struct journal *j, void (*fn)(const struct journal_entry *e, void *arg),
                     void *arg)
{
    for (size_t i = 0; i < j->nbuckets; i++)
        for (struct jnode *node = j->tab[i]; node; node = node->next)
            fn(&node->e, arg);
}

size_t journal_count(const struct journal *j)
{
    return j->count;
}

void journal_close(struct journal *j)
{
    if (!j)
        return;
    if (j->fd >= 0)
        close(j->fd);
    table_free(j);
    free(j->path);
    free(j->tmp_path);
    free(j);
}
