/* The spool watcher on a real event loop and a temporary directory: what is
 * reported (once, after settle, only when no writer holds it), what never is
 * (ignored names, symlinks, hidden directories), and what scans recover
 * (missed events, an inotify overflow). Waiting means running the loop until
 * the condition holds or a deadline passes; nothing sleeps. */
#include "offload/spool.h"

#include "common/alloc.h"

#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define SETTLE 60
#define WAIT 3000 /* deadline for things that must happen */

static char root[256], spool_dir[300], out_dir[300];

struct report {
    char rel[256];
    struct offload_ident id;
    uint64_t at;
};

struct ctx {
    struct evloop *loop;
    struct spool *s;
    struct report r[64];
    int n;
    bool (*until)(struct ctx *c);
    const char *want; /* for until_reported */
    struct evloop_timer poll, deadline;
};

static void on_ready(void *arg, const char *rel, const struct offload_ident *id)
{
    struct ctx *c = arg;
    if (c->n < 64) {
        snprintf(c->r[c->n].rel, sizeof(c->r[c->n].rel), "%s", rel);
        c->r[c->n].id = *id;
        c->r[c->n].at = evloop_now(c->loop);
    }
    c->n++;
}

static int count_reports(const struct ctx *c, const char *rel)
{
    int k = 0;
    for (int i = 0; i < c->n && i < 64; i++)
        k += strcmp(c->r[i].rel, rel) == 0;
    return k;
}

static void on_poll(struct evloop *l, void *arg)
{
    struct ctx *c = arg;
    if (c->until && c->until(c))
        evloop_stop(l);
    else
        evloop_timer_start(l, &c->poll, 2);
}

static void on_deadline(struct evloop *l, void *arg)
{
    (void)arg;
    evloop_stop(l);
}

/* Run the loop until c->until(c) holds (checked every 2 ms) or ms pass;
 * with until NULL, run for ms. Returns whether the condition held. */
static bool run(struct ctx *c, bool (*until)(struct ctx *c), uint64_t ms)
{
    c->until = until;
    evloop_timer_start(c->loop, &c->poll, 0);
    evloop_timer_start(c->loop, &c->deadline, ms);
    evloop_run(c->loop);
    evloop_timer_stop(c->loop, &c->poll);
    evloop_timer_stop(c->loop, &c->deadline);
    return until && until(c);
}

static bool until_reported(struct ctx *c)
{
    return count_reports(c, c->want) > 0;
}

static bool wait_report(struct ctx *c, const char *rel)
{
    c->want = rel;
    return run(c, until_reported, WAIT);
}

static uint64_t want_pending;

static bool until_pending(struct ctx *c)
{
    struct spool_stats ss;
    spool_get_stats(c->s, &ss);
    return ss.pending == want_pending;
}

/* Run until the backlog holds n files. */
static bool wait_pending(struct ctx *c, uint64_t n)
{
    want_pending = n;
    return run(c, until_pending, WAIT);
}

static bool until_quiet(struct ctx *c)
{
    return spool_quiet(c->s);
}

static const char *const ignore[] = {".*", "*.tmp", "*.part", NULL};

static void start(struct ctx *c, uint64_t rescan_ms)
{
    memset(c, 0, sizeof(*c));
    c->loop = evloop_create();
    evloop_timer_init(&c->poll, on_poll, c);
    evloop_timer_init(&c->deadline, on_deadline, c);
    struct spool_opts o = {
        .dir = spool_dir, .ignore = ignore, .settle_ms = SETTLE, .rescan_ms = rescan_ms};
    char err[256] = "";
    int r = spool_create(c->loop, &o, on_ready, c, &c->s, err, sizeof(err));
    ASSERT_EQ(r, 0);
    if (r < 0)
        fprintf(stderr, "%s\n", err);
    ASSERT_TRUE(!spool_quiet(c->s)); /* no scan yet */
    ASSERT_TRUE(run(c, until_quiet, WAIT));
}

static void stop(struct ctx *c)
{
    spool_destroy(c->s);
    ASSERT_EQ(evloop_fd_count(c->loop), 0);
    ASSERT_EQ(evloop_timer_count(c->loop), 0);
    evloop_destroy(c->loop);
}

/* dir/rel in one of a few rotating buffers (so two may be passed at once). */
static char *path_in(const char *dir, const char *rel)
{
    static char p[4][600];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof(p[i]), "%s/%s", dir, rel);
    return p[i];
}

static char *sp(const char *rel)
{
    return path_in(spool_dir, rel);
}

static char *op(const char *rel)
{
    return path_in(out_dir, rel);
}

static void write_file(const char *path, const char *data)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_TRUE(fd >= 0);
    ASSERT_EQ(write(fd, data, strlen(data)), (ssize_t)strlen(data));
    close(fd);
}

static void rm_tree(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char *child = xasprintf("%s/%s", path, de->d_name);
        struct stat st;
        if (lstat(child, &st) == 0 && S_ISDIR(st.st_mode))
            rm_tree(child);
        else
            unlink(child);
        free(child);
    }
    closedir(d);
    rmdir(path);
}

static void fresh_dirs(void)
{
    rm_tree(spool_dir);
    rm_tree(out_dir);
    ASSERT_EQ(mkdir(spool_dir, 0755), 0);
    ASSERT_EQ(mkdir(out_dir, 0755), 0);
}

/* ---- tests ---- */

static void test_written_and_closed(void)
{
    fresh_dirs();
    struct ctx c;
    start(&c, 0);
    uint64_t t0 = evloop_now(c.loop);
    write_file(sp("a.jpg"), "hello");
    ASSERT_TRUE(wait_report(&c, "a.jpg"));
    ASSERT_TRUE(c.r[0].at - t0 >= SETTLE);
    struct stat st;
    ASSERT_EQ(stat(sp("a.jpg"), &st), 0);
    ASSERT_EQ(c.r[0].id.size, 5);
    ASSERT_EQ(c.r[0].id.ino, st.st_ino);
    ASSERT_EQ(c.r[0].id.dev, st.st_dev);
    ASSERT_EQ(c.r[0].id.mtime_ns, (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
    /* Reported, not done: in the backlog, but not waiting to settle. */
    struct spool_stats ss;
    spool_get_stats(c.s, &ss);
    ASSERT_EQ(ss.pending, 1);
    ASSERT_EQ(ss.pending_bytes, 5);
    ASSERT_TRUE(spool_quiet(c.s));
    /* Once only, even when touched again while the pipeline holds it. */
    ASSERT_EQ(utimensat(AT_FDCWD, sp("a.jpg"), NULL, 0), 0);
    run(&c, NULL, 4 * SETTLE);
    ASSERT_EQ(count_reports(&c, "a.jpg"), 1);
    ASSERT_EQ(c.n, 1);
    /* Done (deleted): forgotten. */
    ASSERT_EQ(unlink(sp("a.jpg")), 0);
    spool_done(c.s, "a.jpg", false);
    spool_get_stats(c.s, &ss);
    ASSERT_EQ(ss.pending, 0);
    ASSERT_EQ(ss.kept, 0);
    stop(&c);
}

static void test_open_writer_lease(void)
{
    fresh_dirs();
    struct ctx c;
    start(&c, 0);
    int fd = open(sp("big.bin"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_TRUE(fd >= 0);
    ASSERT_EQ(write(fd, "part1", 5), 5);
    /* Unchanged for far longer than settle, but a writer holds it open. */
    run(&c, NULL, 5 * SETTLE);
    ASSERT_EQ(c.n, 0);
    ASSERT_TRUE(!spool_quiet(c.s));
    struct spool_stats ss;
    spool_get_stats(c.s, &ss);
    ASSERT_EQ(ss.pending, 1);
    ASSERT_EQ(ss.pending_bytes, 5);
    ASSERT_TRUE(ss.oldest_ms >= 4 * SETTLE);
    ASSERT_EQ(write(fd, "part2", 5), 5);
    close(fd);
    ASSERT_TRUE(wait_report(&c, "big.bin"));
    ASSERT_EQ(c.r[0].id.size, 10);
    ASSERT_TRUE(spool_quiet(c.s));
    stop(&c);
}

static void test_rename_link_subdirs(void)
{
    fresh_dirs();
    struct ctx c;
    start(&c, 0);
    uint64_t w0 = 1;
    struct spool_stats ss;
    spool_get_stats(c.s, &ss);
    ASSERT_EQ(ss.watches, w0);

    write_file(op("r.txt"), "renamed");
    ASSERT_EQ(rename(op("r.txt"), sp("r.txt")), 0);
    write_file(op("orig"), "linked");
    ASSERT_EQ(link(op("orig"), sp("hl.txt")), 0);
    /* A new subdirectory (nested) after start. */
    ASSERT_EQ(mkdir(sp("d1"), 0755), 0);
    ASSERT_EQ(mkdir(sp("d1/d2"), 0755), 0);
    write_file(sp("d1/d2/deep.txt"), "deep");
    /* A prepared tree moved in whole. */
    ASSERT_EQ(mkdir(op("tree"), 0755), 0);
    ASSERT_EQ(mkdir(op("tree/sub"), 0755), 0);
    write_file(op("tree/a"), "a");
    write_file(op("tree/sub/b"), "bb");
    ASSERT_EQ(rename(op("tree"), sp("tree")), 0);

    ASSERT_TRUE(wait_report(&c, "r.txt"));
    ASSERT_TRUE(wait_report(&c, "hl.txt"));
    ASSERT_TRUE(wait_report(&c, "d1/d2/deep.txt"));
    ASSERT_TRUE(wait_report(&c, "tree/a"));
    ASSERT_TRUE(wait_report(&c, "tree/sub/b"));
    ASSERT_EQ(c.n, 5);
    spool_get_stats(c.s, &ss);
    ASSERT_EQ(ss.watches, w0 + 4); /* d1, d1/d2, tree, tree/sub */
    ASSERT_EQ(ss.pending, 5);
    ASSERT_EQ(ss.pending_bytes, 7 + 6 + 4 + 1 + 2);

    /* A directory removed: its watches go; files the pipeline holds stay
     * known until spool_done. */
    rm_tree(sp("tree"));
    run(&c, NULL, 2 * SETTLE);
    spool_get_stats(c.s, &ss);
    ASSERT_EQ(ss.watches, w0 + 2);
    spool_done(c.s, "tree/a", false);
    spool_done(c.s, "tree/sub/b", false);
    spool_get_stats(c.s, &ss);
    ASSERT_EQ(ss.pending, 3);

    /* A directory renamed within the spool while its file settles: the file
     * is reported under its new name only, and the watch follows. */
    ASSERT_EQ(mkdir(sp("old"), 0755), 0);
    write_file(sp("old/x"), "x");
    ASSERT_TRUE(wait_pending(&c, 4));
    ASSERT_EQ(rename(sp("old"), sp("new")), 0);
    ASSERT_TRUE(wait_report(&c, "new/x"));
    write_file(sp("new/y"), "y");
    ASSERT_TRUE(wait_report(&c, "new/y"));
    ASSERT_EQ(count_reports(&c, "old/x"), 0);
    spool_get_stats(c.s, &ss);
    ASSERT_EQ(ss.watches, w0 + 3);
    stop(&c);
}

static void test_ignored_and_symlinks(void)
{
    fresh_dirs();
    struct ctx c;
    start(&c, 0);
    write_file(sp(".hidden"), "x");
    write_file(sp("x.tmp"), "x");
    write_file(sp("y.part"), "x");
    ASSERT_EQ(mkdir(sp(".git"), 0755), 0);
    write_file(sp(".git/config"), "x");
    write_file(op("target"), "target");
    ASSERT_EQ(symlink(op("target"), sp("link.jpg")), 0);
    ASSERT_EQ(mkfifo(sp("fifo"), 0644), 0);
    /* A sentinel written last: once it is reported, the others have had
     * their settle time too; give them a few more. */
    write_file(sp("sentinel"), "s");
    ASSERT_TRUE(wait_report(&c, "sentinel"));
    run(&c, NULL, 3 * SETTLE);
    ASSERT_EQ(c.n, 1);
    ASSERT_STREQ(c.r[0].rel, "sentinel");
    struct spool_stats ss;
    spool_get_stats(c.s, &ss);
    ASSERT_EQ(ss.pending, 1);
    ASSERT_EQ(ss.watches, 1); /* .git not watched */
    stop(&c);

    /* The start scan applies the same rules. */
    start(&c, 0);
    run(&c, NULL, 3 * SETTLE);
    ASSERT_EQ(c.n, 1);
    ASSERT_STREQ(c.r[0].rel, "sentinel");
    stop(&c);
}

static bool until_kept_zero(struct ctx *c)
{
    struct spool_stats ss;
    spool_get_stats(c->s, &ss);
    return ss.kept == 0;
}

static int want_count;

static bool until_count(struct ctx *c)
{
    return count_reports(c, c->want) >= want_count;
}

/* Run until rel has been reported k times in all. */
static bool wait_count(struct ctx *c, const char *rel, int k)
{
    c->want = rel;
    want_count = k;
    return run(c, until_count, WAIT);
}

static void test_keep_rewrite_delete(void)
{
    fresh_dirs();
    struct ctx c;
    start(&c, 50);
    write_file(sp("f"), "one");
    ASSERT_TRUE(wait_report(&c, "f"));
    spool_done(c.s, "f", true);
    struct spool_stats ss;
    spool_get_stats(c.s, &ss);
    ASSERT_EQ(ss.kept, 1);
    ASSERT_EQ(ss.pending, 0);
    /* Kept: rescans (every 50 ms here) of an unchanged file report nothing. */
    run(&c, NULL, 4 * SETTLE);
    spool_get_stats(c.s, &ss);
    ASSERT_TRUE(ss.scans >= 3);
    ASSERT_EQ(c.n, 1);
    /* Rewritten in place (same inode): reported again, with the new size. */
    int fd = open(sp("f"), O_WRONLY | O_TRUNC);
    ASSERT_TRUE(fd >= 0);
    ASSERT_EQ(write(fd, "second", 6), 6);
    close(fd);
    ASSERT_TRUE(wait_count(&c, "f", 2));
    ASSERT_EQ(c.n, 2);
    ASSERT_EQ(c.r[1].id.size, 6);
    ASSERT_EQ(c.r[1].id.ino, c.r[0].id.ino);
    /* Kept again, then deleted: forgotten. */
    spool_done(c.s, "f", true);
    ASSERT_EQ(unlink(sp("f")), 0);
    ASSERT_TRUE(run(&c, until_kept_zero, WAIT));
    /* A file deleted while it settles is forgotten and never reported. */
    write_file(sp("brief"), "x");
    ASSERT_TRUE(wait_pending(&c, 1));
    ASSERT_EQ(unlink(sp("brief")), 0);
    ASSERT_TRUE(wait_pending(&c, 0));
    run(&c, NULL, 2 * SETTLE);
    ASSERT_EQ(count_reports(&c, "brief"), 0);
    ASSERT_TRUE(spool_quiet(c.s));
    /* Kept while still settling (before any report): never reported. */
    write_file(sp("early-kept"), "x");
    ASSERT_TRUE(wait_pending(&c, 1));
    spool_done(c.s, "early-kept", true);
    run(&c, NULL, 3 * SETTLE);
    ASSERT_EQ(count_reports(&c, "early-kept"), 0);
    stop(&c);
}

/* spool_done(keep=false) while another file already took rel's place (its
 * events came while the pipeline held rel): the new one is reported. */
static void test_done_replaced(void)
{
    fresh_dirs();
    struct ctx c;
    start(&c, 0);
    write_file(sp("g"), "first");
    ASSERT_TRUE(wait_report(&c, "g"));
    write_file(op("g2"), "replacement");
    ASSERT_EQ(rename(op("g2"), sp("g")), 0);
    run(&c, NULL, 3 * SETTLE);
    ASSERT_EQ(c.n, 1);
    spool_done(c.s, "g", false);
    ASSERT_TRUE(wait_count(&c, "g", 2));
    ASSERT_EQ(c.r[1].id.size, 11);
    stop(&c);
}

/* The inotify fd of the spool under test (the only one in this process). */
static int find_inotify_fd(void)
{
    DIR *d = opendir("/proc/self/fd");
    int found = -1;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char link[300], target[64];
        snprintf(link, sizeof(link), "/proc/self/fd/%s", de->d_name);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        if (n > 0) {
            target[n] = '\0';
            if (strcmp(target, "anon_inode:inotify") == 0)
                found = atoi(de->d_name);
        }
    }
    if (d)
        closedir(d);
    return found;
}

/* Throw away the events queued so far: as if the kernel had lost them. */
static void steal_events(void)
{
    int fd = find_inotify_fd();
    ASSERT_TRUE(fd >= 0);
    char buf[65536];
    while (fd >= 0 && read(fd, buf, sizeof(buf)) > 0)
        ;
}

static void test_scans_find_missed(void)
{
    fresh_dirs();
    /* Present before the spool starts: found by the start scan. */
    write_file(sp("early"), "early");
    struct ctx c;
    start(&c, 0);
    ASSERT_TRUE(wait_report(&c, "early"));

    /* Without rescans, a file whose events were lost stays unknown ... */
    write_file(sp("lost"), "lost");
    steal_events();
    run(&c, NULL, 4 * SETTLE);
    ASSERT_EQ(count_reports(&c, "lost"), 0);
    stop(&c);
    ASSERT_EQ(unlink(sp("lost")), 0);

    /* ... and with rescan_ms it is found. */
    start(&c, 150);
    ASSERT_TRUE(wait_report(&c, "early"));
    write_file(sp("lost"), "lost");
    steal_events();
    ASSERT_TRUE(wait_report(&c, "lost"));
    struct spool_stats ss;
    spool_get_stats(c.s, &ss);
    ASSERT_TRUE(ss.scans >= 2);
    ASSERT_EQ(ss.overflows, 0);
    /* A rescan also forgets a file deleted with its event lost. */
    spool_done(c.s, "lost", true);
    ASSERT_EQ(unlink(sp("lost")), 0);
    steal_events();
    ASSERT_TRUE(run(&c, until_kept_zero, WAIT));
    stop(&c);
}

static void test_overflow_rescans(void)
{
    FILE *f = fopen("/proc/sys/fs/inotify/max_queued_events", "r");
    long max = 0;
    if (!f || fscanf(f, "%ld", &max) != 1 || max <= 0 || max > (1L << 20)) {
        fprintf(stderr, "test_overflow_rescans: skipped (max_queued_events %ld)\n", max);
        if (f)
            fclose(f);
        return;
    }
    fclose(f);
    fresh_dirs();
    struct ctx c;
    start(&c, 0);
    write_file(sp(".a"), "");
    write_file(sp(".b"), "");
    /* Alternating events on two (ignored) files are not merged by the kernel:
     * more of them than the queue holds overflow it. */
    for (long i = 0; i < max + 16; i++)
        ASSERT_EQ(chmod(sp(i % 2 ? ".a" : ".b"), i % 4 < 2 ? 0644 : 0600), 0);
    /* Its events are dropped with the queue full: only the rescan finds it. */
    write_file(sp("after"), "after");
    ASSERT_TRUE(wait_report(&c, "after"));
    struct spool_stats ss;
    spool_get_stats(c.s, &ss);
    ASSERT_EQ(ss.overflows, 1);
    ASSERT_EQ(ss.scans, 2);
    stop(&c);
}

int main(void)
{
    snprintf(root, sizeof(root), "/tmp/ferry-test-spool-%d", (int)getpid());
    snprintf(spool_dir, sizeof(spool_dir), "%s/spool", root);
    snprintf(out_dir, sizeof(out_dir), "%s/out", root);
    ASSERT_EQ(mkdir(root, 0755), 0);
    test_written_and_closed();
    test_open_writer_lease();
    test_rename_link_subdirs();
    test_ignored_and_symlinks();
    test_keep_rewrite_delete();
    test_done_replaced();
    test_scans_find_missed();
    test_overflow_rescans();
    rm_tree(root);
    TEST_MAIN_END();
}
