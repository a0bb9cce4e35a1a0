/* The one event loop every thread runs on (redis's ae, h2o's evloop): fd
 * events with a callback each (epoll underneath, fd-indexed), timers embedded
 * in their owners and kept in a binary heap (monotonic milliseconds), and
 * cross-thread posts through an eventfd and a queue.
 *
 * Threads: a loop belongs to the thread that runs it. Every function here
 * must be called on that thread, except evloop_post(), which any thread may
 * call, and evloop_create() and evloop_destroy(), which run before and after
 * the loop's thread runs it. */
#ifndef FERRY_COMMON_EVLOOP_H
#define FERRY_COMMON_EVLOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <time.h>

struct evloop;

/** An fd's callback. events is the epoll mask that fired (EPOLLIN, EPOLLOUT,
 * EPOLLRDHUP, EPOLLERR, EPOLLHUP). The callback may add, change or remove any
 * watch, this fd's included, and close fds: an event for an fd whose watch
 * was removed (or removed and added again) earlier in the same round is
 * dropped, never delivered to the new watch. */
typedef void (*evloop_fd_fn)(struct evloop *l, int fd, uint32_t events, void *arg);

/** A timer's or a post's callback. */
typedef void (*evloop_fn)(struct evloop *l, void *arg);

/** A timer, embedded in (and owned by) whatever it times: the loop keeps a
 * pointer to it while it is armed, never frees it, and forgets it on
 * evloop_timer_stop(). Stop it before freeing its memory. */
struct evloop_timer {
    uint64_t when;   /* monotonic ms deadline while armed */
    uint64_t seq;    /* arming order: equal deadlines fire first armed, first */
    size_t heap_idx; /* position in the heap + 1; 0 when not armed */
    evloop_fn fn;
    void *arg;
};

/** Create a loop. Returns NULL with errno set (epoll/eventfd failures). */
struct evloop *evloop_create(void);

/** Destroy a loop that is not running: closes its epoll and eventfd, frees
 * posts that never ran (without calling them), forgets armed timers (their
 * memory belongs to their owners) and watches (their fds are not closed).
 * NULL-safe. */
void evloop_destroy(struct evloop *l);

/** Watch fd for events (EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLEXCLUSIVE ...);
 * fn(l, fd, fired, arg) runs on the loop's thread. Level-triggered. Does not
 * take ownership of fd. Returns 0, -EEXIST if fd is already watched, or
 * -errno from epoll_ctl. */
int evloop_fd_add(struct evloop *l, int fd, uint32_t events, evloop_fd_fn fn, void *arg);

/** Change the events of a watched fd. Returns 0, -ENOENT, or -errno. */
int evloop_fd_mod(struct evloop *l, int fd, uint32_t events);

/** Stop watching fd (before closing it). Pending events for it in this round
 * are dropped. Returns 0 or -ENOENT. */
int evloop_fd_del(struct evloop *l, int fd);

/** Set up a timer that is not armed. */
void evloop_timer_init(struct evloop_timer *t, evloop_fn fn, void *arg);

/** Arm (or re-arm) t to fire once, ms milliseconds after evloop_now(). */
void evloop_timer_start(struct evloop *l, struct evloop_timer *t, uint64_t ms);

/** Arm (or re-arm) t to fire once at the monotonic time deadline (ms). */
void evloop_timer_at(struct evloop *l, struct evloop_timer *t, uint64_t deadline);

/** Disarm t; a timer that is not armed is left alone. */
void evloop_timer_stop(struct evloop *l, struct evloop_timer *t);

/** Whether t is armed. */
static inline bool evloop_timer_active(const struct evloop_timer *t)
{
    return t->heap_idx != 0;
}

/** Run fn(l, arg) on the loop's thread, soon, in the order posted. Any thread.
 * The loop wakes from its wait. A post made after evloop_destroy() began is a
 * bug. Returns 0 (the node is allocated; allocation failure aborts). */
int evloop_post(struct evloop *l, evloop_fn fn, void *arg);

/** Run fn(l, arg) on the loop's thread before it next waits for events, once
 * per round, for as long as it is set (e.g. flushing a log buffer). NULL
 * clears it. */
void evloop_set_before_wait(struct evloop *l, evloop_fn fn, void *arg);

/** Run callbacks until evloop_stop(). Returns 0, or -errno if epoll_wait
 * failed with something other than EINTR. */
int evloop_run(struct evloop *l);

/** Make evloop_run() return after the current callback. Loop thread. */
void evloop_stop(struct evloop *l);

/** Monotonic milliseconds, refreshed once per round (before fd callbacks and
 * timers run); exact enough for timeouts. */
uint64_t evloop_now(const struct evloop *l);

/** evloop_now() in microseconds (the same instant): when this round began,
 * e.g. a request's start as seen by its worker, without a clock call. */
uint64_t evloop_now_us(const struct evloop *l);

/** Wall-clock seconds, refreshed with evloop_now(). */
time_t evloop_wall(const struct evloop *l);

/** Refresh evloop_now() and evloop_wall() from the clocks (after a long
 * callback). */
void evloop_update_time(struct evloop *l);

/** Number of armed timers and watched fds (for tests and status). */
size_t evloop_timer_count(const struct evloop *l);
size_t evloop_fd_count(const struct evloop *l);

#endif
