/* The one event loop (see evloop.h). fd watches live in a table indexed by fd;
 * each slot carries a generation number that goes into the epoll event along
 * with the fd, so an event that was already fetched when its watch was
 * removed (or removed and re-added for a new connection on the same fd
 * number) is recognised as stale and dropped. Timers are embedded in their
 * owners and ordered in a binary heap by (deadline, arming order). Posts from
 * other threads go through a mutex-protected queue and an eventfd. */
#include "common/evloop.h"

#include "common/alloc.h"
#include "common/timeutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define EVENTS_PER_WAIT 256
/* Longest single wait: keeps evloop_now() from lagging when nothing happens. */
#define MAX_WAIT_MS 1000

struct fd_slot {
    evloop_fd_fn fn; /* NULL: not watched */
    void *arg;
    uint32_t events;
    uint32_t gen; /* bumped on every add and delete */
};

struct post {
    struct post *next;
    evloop_fn fn;
    void *arg;
};

struct evloop {
    int epfd;
    int post_fd; /* eventfd: posts are waiting */
    struct fd_slot *slots;
    size_t nslots;
    size_t nwatched;
    struct evloop_timer **heap;
    size_t heap_len, heap_cap;
    uint64_t timer_seq;
    uint64_t now_ms;
    uint64_t now_us; /* the same instant as now_ms */
    time_t now_wall;
    bool stop;
    evloop_fn before_wait;
    void *before_wait_arg;

    pthread_mutex_t post_lock;
    struct post *post_head, **post_tail;
};

/* ---- time ---- */

void evloop_update_time(struct evloop *l)
{
    l->now_us = time_mono_us();
    l->now_ms = l->now_us / 1000;
    l->now_wall = time(NULL);
}

uint64_t evloop_now(const struct evloop *l)
{
    return l->now_ms;
}

uint64_t evloop_now_us(const struct evloop *l)
{
    return l->now_us;
}

time_t evloop_wall(const struct evloop *l)
{
    return l->now_wall;
}

/* ---- create / destroy ---- */

static void post_drain_fd(struct evloop *l, int fd, uint32_t events, void *arg);

struct evloop *evloop_create(void)
{
    struct evloop *l = xcalloc(1, sizeof(*l));
    l->post_fd = -1;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0)
        goto fail;
    l->post_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->post_fd < 0)
        goto fail;
    pthread_mutex_init(&l->post_lock, NULL);
    l->post_tail = &l->post_head;
    evloop_update_time(l);
    if (evloop_fd_add(l, l->post_fd, EPOLLIN, post_drain_fd, NULL) < 0) {
        pthread_mutex_destroy(&l->post_lock);
        goto fail;
    }
    return l;
fail:;
    int e = errno;
    if (l->epfd >= 0)
        close(l->epfd);
    if (l->post_fd >= 0)
        close(l->post_fd);
    free(l->slots);
    free(l);
    errno = e;
    return NULL;
}

void evloop_destroy(struct evloop *l)
{
    if (!l)
        return;
    struct post *p = l->post_head;
    while (p) {
        struct post *n = p->next;
        free(p);
        p = n;
    }
    for (size_t i = 0; i < l->heap_len; i++)
        l->heap[i]->heap_idx = 0;
    pthread_mutex_destroy(&l->post_lock);
    close(l->post_fd);
    close(l->epfd);
    free(l->heap);
    free(l->slots);
    free(l);
}

/* ---- fd watches ---- */

static uint64_t event_key(int fd, uint32_t gen)
{
    return (uint64_t)(uint32_t)fd | ((uint64_t)gen << 32);
}

int evloop_fd_add(struct evloop *l, int fd, uint32_t events, evloop_fd_fn fn, void *arg)
{
    if (fd < 0)
        return -EBADF;
    if ((size_t)fd >= l->nslots) {
        size_t n = l->nslots ? l->nslots : 64;
        while (n <= (size_t)fd)
            n *= 2;
        l->slots = xrealloc(l->slots, n * sizeof(*l->slots));
        memset(l->slots + l->nslots, 0, (n - l->nslots) * sizeof(*l->slots));
        l->nslots = n;
    }
    struct fd_slot *s = &l->slots[fd];
    if (s->fn)
        return -EEXIST;
    uint32_t gen = s->gen + 1;
    struct epoll_event e = {.events = events, .data.u64 = event_key(fd, gen)};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &e) < 0)
        return -errno;
    s->gen = gen;
    s->fn = fn;
    s->arg = arg;
    s->events = events;
    l->nwatched++;
    return 0;
}

int evloop_fd_mod(struct evloop *l, int fd, uint32_t events)
{
    if (fd < 0 || (size_t)fd >= l->nslots || !l->slots[fd].fn)
        return -ENOENT;
    struct fd_slot *s = &l->slots[fd];
    if (s->events == events)
        return 0;
    struct epoll_event e = {.events = events, .data.u64 = event_key(fd, s->gen)};
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &e) < 0)
        return -errno;
    s->events = events;
    return 0;
}

int evloop_fd_del(struct evloop *l, int fd)
{
    if (fd < 0 || (size_t)fd >= l->nslots || !l->slots[fd].fn)
        return -ENOENT;
    struct fd_slot *s = &l->slots[fd];
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
    s->fn = NULL;
    s->arg = NULL;
    s->events = 0;
    s->gen++; /* events already fetched for this watch are now stale */
    l->nwatched--;
    return 0;
}

size_t evloop_fd_count(const struct evloop *l)
{
    return l->nwatched - 1; /* the post eventfd is the loop's own */
}

/* ---- timers: a binary min-heap of pointers, 1-based indexes in the timers ---- */

static bool timer_before(const struct evloop_timer *a, const struct evloop_timer *b)
{
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void heap_set(struct evloop *l, size_t i, struct evloop_timer *t)
{
    l->heap[i] = t;
    t->heap_idx = i + 1;
}

static void heap_up(struct evloop *l, size_t i)
{
    struct evloop_timer *t = l->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_before(t, l->heap[parent]))
            break;
        heap_set(l, i, l->heap[parent]);
        i = parent;
    }
    heap_set(l, i, t);
}

static void heap_down(struct evloop *l, size_t i)
{
    struct evloop_timer *t = l->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= l->heap_len)
            break;
        if (child + 1 < l->heap_len && timer_before(l->heap[child + 1], l->heap[child]))
            child++;
        if (!timer_before(l->heap[child], t))
            break;
        heap_set(l, i, l->heap[child]);
        i = child;
    }
    heap_set(l, i, t);
}

void evloop_timer_init(struct evloop_timer *t, evloop_fn fn, void *arg)
{
    t->when = 0;
    t->seq = 0;
    t->heap_idx = 0;
    t->fn = fn;
    t->arg = arg;
}

void evloop_timer_stop(struct evloop *l, struct evloop_timer *t)
{
    if (!t->heap_idx)
        return;
    size_t i = t->heap_idx - 1;
    t->heap_idx = 0;
    l->heap_len--;
    if (i == l->heap_len)
        return;
    /* Move the last timer into the hole and restore the order around it. */
    heap_set(l, i, l->heap[l->heap_len]);
    if (i > 0 && timer_before(l->heap[i], l->heap[(i - 1) / 2]))
        heap_up(l, i);
    else
        heap_down(l, i);
}

void evloop_timer_at(struct evloop *l, struct evloop_timer *t, uint64_t deadline)
{
    evloop_timer_stop(l, t);
    if (l->heap_len == l->heap_cap) {
        l->heap_cap = l->heap_cap ? 2 * l->heap_cap : 64;
        l->heap = xrealloc(l->heap, l->heap_cap * sizeof(*l->heap));
    }
    t->when = deadline;
    t->seq = ++l->timer_seq;
    l->heap[l->heap_len] = t;
    heap_up(l, l->heap_len++);
}

void evloop_timer_start(struct evloop *l, struct evloop_timer *t, uint64_t ms)
{
    evloop_timer_at(l, t, l->now_ms + ms);
}

size_t evloop_timer_count(const struct evloop *l)
{
    return l->heap_len;
}

static void run_timers(struct evloop *l)
{
    /* Timers armed by these callbacks for "now" run in the next round, so a
     * callback that re-arms itself with 0 ms cannot starve the fds. */
    uint64_t seq_limit = l->timer_seq;
    while (l->heap_len && !l->stop) {
        struct evloop_timer *t = l->heap[0];
        if (t->when > l->now_ms || t->seq > seq_limit)
            break;
        evloop_timer_stop(l, t);
        t->fn(l, t->arg);
    }
}

static int wait_ms(const struct evloop *l)
{
    if (l->stop)
        return 0;
    if (!l->heap_len)
        return MAX_WAIT_MS;
    uint64_t when = l->heap[0]->when;
    if (when <= l->now_ms)
        return 0;
    uint64_t d = when - l->now_ms;
    return d > MAX_WAIT_MS ? MAX_WAIT_MS : (int)d;
}

/* ---- posts ---- */

int evloop_post(struct evloop *l, evloop_fn fn, void *arg)
{
    struct post *p = xmalloc(sizeof(*p));
    p->next = NULL;
    p->fn = fn;
    p->arg = arg;
    pthread_mutex_lock(&l->post_lock);
    *l->post_tail = p;
    l->post_tail = &p->next;
    pthread_mutex_unlock(&l->post_lock);
    uint64_t one = 1;
    /* A full eventfd counter (never in practice) still leaves it readable. */
    ssize_t r = write(l->post_fd, &one, sizeof(one));
    (void)r;
    return 0;
}

static void post_drain_fd(struct evloop *l, int fd, uint32_t events, void *arg)
{
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof(v));
    (void)r;
    pthread_mutex_lock(&l->post_lock);
    struct post *p = l->post_head;
    l->post_head = NULL;
    l->post_tail = &l->post_head;
    pthread_mutex_unlock(&l->post_lock);
    while (p) {
        struct post *n = p->next;
        p->fn(l, p->arg);
        free(p);
        p = n;
    }
}

/* ---- running ---- */

void evloop_set_before_wait(struct evloop *l, evloop_fn fn, void *arg)
{
    l->before_wait = fn;
    l->before_wait_arg = arg;
}

void evloop_stop(struct evloop *l)
{
    l->stop = true;
}

int evloop_run(struct evloop *l)
{
    struct epoll_event events[EVENTS_PER_WAIT];
    l->stop = false;
    evloop_update_time(l);
    while (!l->stop) {
        if (l->before_wait)
            l->before_wait(l, l->before_wait_arg);
        int n = epoll_wait(l->epfd, events, EVENTS_PER_WAIT, wait_ms(l));
        if (n < 0 && errno != EINTR)
            return -errno;
        evloop_update_time(l);
        for (int i = 0; i < n && !l->stop; i++) {
            int fd = (int)(uint32_t)events[i].data.u64;
            uint32_t gen = (uint32_t)(events[i].data.u64 >> 32);
            if ((size_t)fd >= l->nslots)
                continue;
            struct fd_slot *s = &l->slots[fd];
            if (!s->fn || s->gen != gen)
                continue; /* removed earlier in this round */
            s->fn(l, fd, events[i].events, s->arg);
        }
        run_timers(l);
    }
    if (l->before_wait)
        l->before_wait(l, l->before_wait_arg);
    return 0;
}
