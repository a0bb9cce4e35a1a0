/* The event loop: fd callbacks, stale events after a delete in the same round,
 * timer order and cancellation in the heap, posts from another thread. */
#include "common/evloop.h"
#include "common/timeutil.h"

#include "test.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- fd events ---- */

struct fd_ctx {
    int reads;
    char got[16];
};

static void on_readable(struct evloop *l, int fd, uint32_t events, void *arg)
{
    struct fd_ctx *c = arg;
    ASSERT_TRUE(events & EPOLLIN);
    ssize_t n = read(fd, c->got, sizeof(c->got) - 1);
    ASSERT_TRUE(n > 0);
    c->got[n > 0 ? n : 0] = '\0';
    c->reads++;
    evloop_stop(l);
}

static void test_fd_event(void)
{
    struct evloop *l = evloop_create();
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct fd_ctx c = {0};
    ASSERT_EQ(evloop_fd_add(l, sv[0], EPOLLIN, on_readable, &c), 0);
    ASSERT_EQ(evloop_fd_add(l, sv[0], EPOLLIN, on_readable, &c), -EEXIST);
    ASSERT_EQ(evloop_fd_count(l), 1);
    ASSERT_EQ(write(sv[1], "hello", 5), 5);
    ASSERT_EQ(evloop_run(l), 0);
    ASSERT_EQ(c.reads, 1);
    ASSERT_STREQ(c.got, "hello");
    ASSERT_EQ(evloop_fd_mod(l, sv[0], EPOLLIN | EPOLLOUT), 0);
    ASSERT_EQ(evloop_fd_del(l, sv[0]), 0);
    ASSERT_EQ(evloop_fd_del(l, sv[0]), -ENOENT);
    ASSERT_EQ(evloop_fd_mod(l, sv[0], EPOLLIN), -ENOENT);
    ASSERT_EQ(evloop_fd_count(l), 0);
    close(sv[0]);
    close(sv[1]);
    evloop_destroy(l);
}

/* Two readable fds in one round, both with the same callback: the first call
 * removes the other fd's watch, closes it and reuses the fd number for a new
 * watch. The event already fetched for the old watch must reach neither the
 * old callback nor the new watch. */
struct stale_ctx {
    int fds[2];
    int calls_first, calls_new;
    int spare; /* an fd to dup into the freed number */
};

static void stale_new(struct evloop *l, int fd, uint32_t events, void *arg)
{
    struct stale_ctx *s = arg;
    s->calls_new++;
}

static void stop_soon(struct evloop *l, void *arg)
{
    evloop_stop(l);
}

static void stale_first(struct evloop *l, int fd, uint32_t events, void *arg)
{
    static struct evloop_timer t;
    struct stale_ctx *s = arg;
    s->calls_first++;
    int other = fd == s->fds[0] ? s->fds[1] : s->fds[0];
    ASSERT_EQ(evloop_fd_del(l, fd), 0);
    ASSERT_EQ(evloop_fd_del(l, other), 0);
    close(other);
    /* The lowest free fd number is the one just closed. */
    int nfd = dup(s->spare);
    ASSERT_EQ(nfd, other);
    /* Readable too, so a misrouted stale EPOLLIN would be counted. */
    ASSERT_EQ(evloop_fd_add(l, nfd, EPOLLIN, stale_new, s), 0);
    evloop_timer_init(&t, stop_soon, NULL);
    evloop_timer_start(l, &t, 0);
}

static void test_stale_event_dropped(void)
{
    struct evloop *l = evloop_create();
    struct stale_ctx s = {0};
    int p1[2], p2[2], p3[2];
    ASSERT_EQ(pipe(p1), 0);
    ASSERT_EQ(pipe(p2), 0);
    ASSERT_EQ(pipe(p3), 0);
    s.fds[0] = p1[0];
    s.fds[1] = p2[0];
    s.spare = p3[0];
    ASSERT_EQ(evloop_fd_add(l, s.fds[0], EPOLLIN, stale_first, &s), 0);
    ASSERT_EQ(evloop_fd_add(l, s.fds[1], EPOLLIN, stale_first, &s), 0);
    ASSERT_EQ(write(p1[1], "x", 1), 1);
    ASSERT_EQ(write(p2[1], "y", 1), 1);
    /* Both are ready before the loop waits, so one epoll_wait returns both;
     * the timer stops the loop in the same round, before the new watch's own
     * (genuine) event can be fetched in a later round. */
    ASSERT_EQ(evloop_run(l), 0);
    ASSERT_EQ(s.calls_first, 1);
    ASSERT_EQ(s.calls_new, 0);
    /* One of the two numbers now holds the dup (still watched), the other the
     * original read end (unwatched, still open). */
    ASSERT_EQ(evloop_fd_count(l), 1);
    for (int i = 0; i < 2; i++) {
        evloop_fd_del(l, s.fds[i]);
        close(s.fds[i]);
    }
    evloop_destroy(l);
    close(p1[1]);
    close(p2[1]);
    close(p3[0]);
    close(p3[1]);
}

/* ---- timers ---- */

struct order {
    char log[64];
    size_t n;
    struct evloop_timer *cancel; /* stopped by the first timer to fire */
};

struct tctx {
    struct order *o;
    char name;
};

static void on_timer(struct evloop *l, void *arg)
{
    struct tctx *t = arg;
    t->o->log[t->o->n++] = t->name;
    if (t->o->cancel) {
        evloop_timer_stop(l, t->o->cancel);
        t->o->cancel = NULL;
    }
    if (!evloop_timer_count(l))
        evloop_stop(l);
}

static void test_timer_order(void)
{
    struct evloop *l = evloop_create();
    struct order o = {0};
    enum { N = 40 };
    struct evloop_timer t[N];
    struct tctx ctx[N];
    /* Deadlines in a scrambled order (i * 7 mod 40), two pairs equal. */
    for (int i = 0; i < N; i++) {
        ctx[i].o = &o;
        ctx[i].name = (char)('0' + i % 10);
        evloop_timer_init(&t[i], on_timer, &ctx[i]);
    }
    uint64_t base = evloop_now(l) + 20;
    for (int i = 0; i < N; i++)
        evloop_timer_at(l, &t[i], base + (uint64_t)((i * 7) % N));
    ASSERT_EQ(evloop_timer_count(l), N);
    /* Stop every other one; re-arm one of the stopped to the very end. */
    for (int i = 0; i < N; i += 2)
        evloop_timer_stop(l, &t[i]);
    ASSERT_EQ(evloop_timer_count(l), N / 2);
    ASSERT_TRUE(!evloop_timer_active(&t[0]));
    ASSERT_TRUE(evloop_timer_active(&t[1]));
    evloop_timer_at(l, &t[0], base + 1000);
    uint64_t t0 = time_mono_ms();
    ASSERT_EQ(evloop_run(l), 0);
    ASSERT_EQ(o.n, N / 2 + 1);
    /* Odd i fire in deadline order (i * 7 % 40 ascending), t[0] last. */
    char want[64];
    size_t k = 0;
    for (int d = 0; d < N; d++)
        for (int i = 1; i < N; i += 2)
            if ((i * 7) % N == d)
                want[k++] = (char)('0' + i % 10);
    want[k++] = '0';
    want[k] = '\0';
    o.log[o.n] = '\0';
    ASSERT_STREQ(o.log, want);
    ASSERT_TRUE(time_mono_ms() - t0 >= 1000);
    evloop_destroy(l);
}

/* Equal deadlines fire in arming order; a timer stopped by an earlier one in
 * the same round does not fire. */
static void test_timer_ties_and_cancel(void)
{
    struct evloop *l = evloop_create();
    struct order o = {0};
    struct evloop_timer t[4];
    struct tctx ctx[4];
    for (int i = 0; i < 4; i++) {
        ctx[i] = (struct tctx){&o, (char)('a' + i)};
        evloop_timer_init(&t[i], on_timer, &ctx[i]);
    }
    uint64_t when = evloop_now(l) + 5;
    evloop_timer_at(l, &t[2], when);
    evloop_timer_at(l, &t[0], when);
    evloop_timer_at(l, &t[3], when);
    evloop_timer_at(l, &t[1], when);
    o.cancel = &t[3];
    ASSERT_EQ(evloop_run(l), 0);
    o.log[o.n] = '\0';
    ASSERT_STREQ(o.log, "cab");
    ASSERT_TRUE(!evloop_timer_active(&t[3]));
    evloop_destroy(l);
}

/* ---- posts from other threads ---- */

struct post_ctx {
    struct evloop *l;
    int count;
    int order_ok;
    int last[4];
};

#define POSTS_PER_THREAD 2000

struct post_item {
    struct post_ctx *c;
    int thread, seq;
};

static void on_post(struct evloop *l, void *arg)
{
    struct post_item *it = arg;
    struct post_ctx *c = it->c;
    if (it->seq != c->last[it->thread] + 1)
        c->order_ok = 0;
    c->last[it->thread] = it->seq;
    if (++c->count == 4 * POSTS_PER_THREAD)
        evloop_stop(l);
}

struct poster {
    struct post_ctx *c;
    int thread;
    struct post_item items[POSTS_PER_THREAD];
};

static void *post_thread(void *arg)
{
    struct poster *p = arg;
    for (int i = 0; i < POSTS_PER_THREAD; i++) {
        p->items[i] = (struct post_item){p->c, p->thread, i + 1};
        evloop_post(p->c->l, on_post, &p->items[i]);
    }
    return NULL;
}

static void test_posts(void)
{
    struct post_ctx c = {.l = evloop_create(), .order_ok = 1};
    static struct poster posters[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        posters[i].c = &c;
        posters[i].thread = i;
        pthread_create(&th[i], NULL, post_thread, &posters[i]);
    }
    ASSERT_EQ(evloop_run(c.l), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    ASSERT_EQ(c.count, 4 * POSTS_PER_THREAD);
    ASSERT_EQ(c.order_ok, 1);
    /* A post that never ran is freed by destroy without running. */
    struct post_item late = {&c, 0, 999999};
    evloop_post(c.l, on_post, &late);
    evloop_destroy(c.l);
    ASSERT_EQ(c.count, 4 * POSTS_PER_THREAD);
}

/* ---- before_wait ---- */

static void count_round(struct evloop *l, void *arg)
{
    (*(int *)arg)++;
}

static void stop_cb(struct evloop *l, void *arg)
{
    evloop_stop(l);
}

static void test_before_wait(void)
{
    struct evloop *l = evloop_create();
    int rounds = 0;
    evloop_set_before_wait(l, count_round, &rounds);
    struct evloop_timer t;
    evloop_timer_init(&t, stop_cb, NULL);
    evloop_timer_start(l, &t, 1);
    ASSERT_EQ(evloop_run(l), 0);
    /* At least one wait plus the final flush after the loop ends. */
    ASSERT_TRUE(rounds >= 2);
    evloop_destroy(l);
}

int main(void)
{
    test_fd_event();
    test_stale_event_dropped();
    test_timer_order();
    test_timer_ties_and_cancel();
    test_posts();
    test_before_wait();
    if (test_failures) {
        fprintf(stderr, "%d failure(s)\n", test_failures);
        return 1;
    }
    printf("test_evloop: ok\n");
    return 0;
}
