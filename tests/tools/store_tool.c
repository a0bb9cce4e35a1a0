/* Test tool: drive ferry's store client from the command line, so integration
 * tests and the benchmark exercise the real code against a real server.
 *
 *   store_tool [-c CONF] [--threshold N] [--part-size N] [--retry-base MS]
 *              [--change-after-digest truncate|flip] COMMAND ...
 *     put KEY FILE [TYPE]   digest FILE, upload it (Content-Type TYPE), print the ETag
 *     get KEY FILE [RANGE]  download to FILE
 *     head KEY              print size, etag, sha256 and meta digest
 *     verify KEY FILE       compare the stored object with FILE
 *     delete KEY
 *     abort KEY UPLOAD_ID
 *     presign KEY TTL
 *     put-many JOBS DIR     upload every regular file below DIR (key = relative
 *                           path) with store_put_many(): JOBS uploads in flight
 *                           on one thread, two threads hashing ahead; prints
 *                           files, bytes and seconds
 * Every failure prints "error: CODE (STATUS): MESSAGE attempts=N errno=NAME"
 * and exits 1; usage errors exit 2. */
#include "common/alloc.h"
#include "common/buf.h"
#include "common/conf.h"
#include "common/timeutil.h"
#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct ferry_conf conf;
static struct store_options opts;
static const char *change_after_digest; /* test hook: "truncate" or "flip" */

static const char *errno_name(int e)
{
    switch (e) {
    case ENOENT:
        return "ENOENT";
    case EEXIST:
        return "EEXIST";
    case EBADMSG:
        return "EBADMSG";
    case EACCES:
        return "EACCES";
    case ETIMEDOUT:
        return "ETIMEDOUT";
    case ECONNRESET:
        return "ECONNRESET";
    case ERANGE:
        return "ERANGE";
    case EINVAL:
        return "EINVAL";
    case EIO:
        return "EIO";
    case EPROTO:
        return "EPROTO";
    default:
        return "OTHER";
    }
}

static int report(int r, const struct store_error *err)
{
    if (r == 0)
        return 0;
    char line[512];
    store_error_format(err, line, sizeof(line));
    printf("error: %s attempts=%d errno=%s\n", line, err->attempts, errno_name(-r));
    return 1;
}

static int open_store(struct store **s)
{
    struct store_error err;
    memset(&err, 0, sizeof(err));
    int r = store_create(&conf, &opts, s, &err);
    if (r < 0) {
        report(r, &err);
        return -1;
    }
    return 0;
}

static int digest_file(struct store *s, const char *path, int *fd, struct store_digest *d)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) {
        printf("error: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    uint64_t threshold, part;
    store_part_layout(s, &threshold, &part);
    if (store_digest_fd(*fd, threshold, part, d) < 0) {
        printf("error: cannot read %s\n", path);
        close(*fd);
        return -1;
    }
    return 0;
}

/* put-many: hasher threads open and digest files ahead of the uploader (as the
 * offloader's hashing stage will), handing them over through a bounded queue. */
#define MANY_QUEUE 64
#define MANY_HASHERS 2

struct many {
    struct store *s;
    const char *root;
    char **files;
    size_t nfiles;
    pthread_mutex_t lock;
    pthread_cond_t room;
    size_t claim;  /* next file for a hasher */
    size_t hashed; /* files the hashers are finished with */
    struct store_put_item queue[MANY_QUEUE];
    size_t head, nqueued;
    size_t reserved; /* slots promised to hashers at work */
    uint64_t bytes;
    int failures;
};

static void *many_hasher(void *arg)
{
    struct many *m = arg;
    for (;;) {
        pthread_mutex_lock(&m->lock);
        /* Reserve a queue slot before hashing, so two hashers never both
         * fill the last one. */
        while (m->nqueued + m->reserved >= MANY_QUEUE)
            pthread_cond_wait(&m->room, &m->lock);
        size_t i = m->claim < m->nfiles ? m->claim++ : m->nfiles;
        if (i < m->nfiles)
            m->reserved++;
        pthread_mutex_unlock(&m->lock);
        if (i == m->nfiles)
            return NULL;
        char *path = xasprintf("%s/%s", m->root, m->files[i]);
        struct store_put_item item = {.key = m->files[i]};
        int ok = digest_file(m->s, path, &item.fd, &item.digest) == 0;
        free(path);
        pthread_mutex_lock(&m->lock);
        m->reserved--;
        if (ok) {
            m->queue[(m->head + m->nqueued++) % MANY_QUEUE] = item;
        } else {
            m->failures++;
            pthread_cond_signal(&m->room);
        }
        m->hashed++;
        pthread_mutex_unlock(&m->lock);
    }
}

/* store_put_many() asks for the next file; never blocks. */
static int many_next(void *ctx, struct store_put_item *item)
{
    struct many *m = ctx;
    int r;
    pthread_mutex_lock(&m->lock);
    if (m->nqueued) {
        *item = m->queue[m->head];
        m->head = (m->head + 1) % MANY_QUEUE;
        m->nqueued--;
        pthread_cond_signal(&m->room);
        r = 1;
    } else {
        r = m->hashed == m->nfiles ? 0 : -EAGAIN;
    }
    pthread_mutex_unlock(&m->lock);
    return r;
}

static void many_done(void *ctx, const struct store_put_item *item, int result,
                      const struct store_error *err)
{
    struct many *m = ctx;
    close(item->fd);
    if (report(result, err))
        m->failures++;
    else
        m->bytes += item->digest.size;
}

static void list_files(const char *root, const char *rel, char ***files, size_t *n)
{
    char *dirpath = *rel ? xasprintf("%s/%s", root, rel) : xstrdup(root);
    DIR *dir = opendir(dirpath);
    free(dirpath);
    if (!dir)
        return;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.')
            continue;
        char *r = *rel ? xasprintf("%s/%s", rel, e->d_name) : xstrdup(e->d_name);
        if (e->d_type == DT_DIR) {
            list_files(root, r, files, n);
            free(r);
        } else {
            *files = xrealloc(*files, (*n + 1) * sizeof(char *));
            (*files)[(*n)++] = r;
        }
    }
    closedir(dir);
}

/* All files below root, `jobs` uploads in flight on this one thread. */
static int cmd_put_many(struct store *s, int jobs, const char *root)
{
    struct many m = {.s = s, .root = root};
    pthread_mutex_init(&m.lock, NULL);
    pthread_cond_init(&m.room, NULL);
    list_files(root, "", &m.files, &m.nfiles);
    uint64_t t0 = time_mono_ms();
    pthread_t hashers[MANY_HASHERS];
    for (int i = 0; i < MANY_HASHERS; i++)
        pthread_create(&hashers[i], NULL, many_hasher, &m);
    store_put_many(s, (unsigned)jobs, many_next, many_done, &m);
    for (int i = 0; i < MANY_HASHERS; i++)
        pthread_join(hashers[i], NULL);
    double secs = (double)(time_mono_ms() - t0) / 1000.0;
    pthread_mutex_destroy(&m.lock);
    pthread_cond_destroy(&m.room);
    printf("files=%zu bytes=%llu seconds=%.3f failures=%d\n", m.nfiles, (unsigned long long)m.bytes,
           secs, m.failures);
    for (size_t i = 0; i < m.nfiles; i++)
        free(m.files[i]);
    free(m.files);
    return m.failures ? 1 : 0;
}

static int run(struct store *s, int argc, char **argv)
{
    const char *cmd = argv[0];
    struct store_error err;
    memset(&err, 0, sizeof(err));
    if (strcmp(cmd, "put") == 0 && (argc == 3 || argc == 4)) {
        int fd;
        struct store_digest d;
        if (digest_file(s, argv[2], &fd, &d) < 0)
            return 1;
        /* Simulate a file that changes between hashing and upload. */
        if (change_after_digest) {
            int w = open(argv[2], O_WRONLY | O_CLOEXEC);
            int bad = w < 0;
            if (!bad && strcmp(change_after_digest, "truncate") == 0)
                bad = ftruncate(w, (off_t)(d.size / 2)) < 0;
            else if (!bad)
                bad = pwrite(w, "\xff", 1, (off_t)(d.size / 2)) != 1;
            if (w >= 0)
                close(w);
            if (bad) {
                printf("error: cannot change %s\n", argv[2]);
                return 1;
            }
        }
        int r = store_put_file(s, argv[1], fd, &d, argc == 4 ? argv[3] : NULL, &err);
        close(fd);
        if (r == 0)
            printf("ok etag=%s attempts=%d\n", d.etag, err.attempts);
        return report(r, &err);
    }
    if (strcmp(cmd, "verify") == 0 && argc == 3) {
        int fd;
        struct store_digest d;
        if (digest_file(s, argv[2], &fd, &d) < 0)
            return 1;
        close(fd);
        int r = store_verify(s, argv[1], &d, &err);
        if (r == 0)
            printf("ok verified\n");
        return report(r, &err);
    }
    if (strcmp(cmd, "get") == 0 && (argc == 3 || argc == 4)) {
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            return 1;
        int r = store_get(s, argv[1], argc == 4 ? argv[3] : NULL, fd, &err);
        close(fd);
        if (r == 0)
            printf("ok\n");
        return report(r, &err);
    }
    if (strcmp(cmd, "head") == 0 && argc == 2) {
        struct store_info info;
        int r = store_head(s, argv[1], &info, &err);
        if (r == 0)
            printf("ok size=%llu etag=%s sha256=%s meta=%s\n", (unsigned long long)info.size,
                   info.etag, info.sha256_b64, info.meta_sha256);
        return report(r, &err);
    }
    if (strcmp(cmd, "delete") == 0 && argc == 2) {
        int r = store_delete(s, argv[1], &err);
        if (r == 0)
            printf("ok\n");
        return report(r, &err);
    }
    if (strcmp(cmd, "abort") == 0 && argc == 3) {
        int r = store_abort_multipart(s, argv[1], argv[2], &err);
        if (r == 0)
            printf("ok\n");
        return report(r, &err);
    }
    if (strcmp(cmd, "presign") == 0 && argc == 3) {
        struct buf url;
        buf_init(&url, 64 * 1024);
        int r = store_presign_get(s, argv[1], strtol(argv[2], NULL, 10), &url);
        if (r == 0)
            printf("%s\n", url.data);
        buf_finish(&url);
        return r == 0 ? 0 : 1;
    }
    fprintf(stderr, "store_tool: bad command\n");
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option lopts[] = {
        {"threshold", required_argument, NULL, 't'},
        {"part-size", required_argument, NULL, 'p'},
        {"retry-base", required_argument, NULL, 'b'},
        {"change-after-digest", required_argument, NULL, 'x'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int ch;
    while ((ch = getopt_long(argc, argv, "+c:", lopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        /* A mistyped option must stop the test, not quietly run on defaults. */
        case 't':
            if (conf_parse_size(optarg, &opts.multipart_threshold) < 0)
                return 2;
            break;
        case 'p':
            if (conf_parse_size(optarg, &opts.part_size) < 0)
                return 2;
            break;
        case 'b': { /* milliseconds */
            char *end;
            errno = 0;
            unsigned long ms = strtoul(optarg, &end, 10);
            if (errno || end == optarg || *end || ms > UINT32_MAX)
                return 2;
            opts.retry_base_ms = (unsigned)ms;
            break;
        }
        case 'x':
            change_after_digest = optarg;
            break;
        default:
            return 2;
        }
    }
    if (optind >= argc)
        return 2;
    conf_init_defaults(&conf);
    if (path) {
        struct buf err;
        buf_init(&err, 65536);
        if (conf_load(&conf, path, &err) < 0) {
            fprintf(stderr, "%s", err.data ? err.data : "");
            buf_finish(&err);
            conf_finish(&conf);
            return 2;
        }
        buf_finish(&err);
    }
    struct store *s;
    if (open_store(&s) < 0) {
        conf_finish(&conf);
        return 2;
    }
    int rc;
    if (strcmp(argv[optind], "put-many") == 0 && argc - optind == 3)
        rc = cmd_put_many(s, atoi(argv[optind + 1]), argv[optind + 2]);
    else
        rc = run(s, argc - optind, argv + optind);
    store_destroy(s);
    conf_finish(&conf);
    return rc;
}
