#include "fcgi/gate.h"

#include "common/alloc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct gate_waiter {
    struct evloop *loop;
    evloop_fn fn;
    void *arg;
};

struct fcgi_gate {
    _Atomic uint32_t capacity;
    _Atomic uint32_t in_flight;
    _Atomic uint32_t nwaiting; /* registered waiters: skip the mutex when 0 */
    pthread_mutex_t lock;      /* guards waiters */
    struct gate_waiter *waiters;
    size_t count, cap;
};

struct fcgi_gate *fcgi_gate_new(void)
{
    struct fcgi_gate *g = xcalloc(1, sizeof(*g));
    pthread_mutex_init(&g->lock, NULL);
    return g;
}

void fcgi_gate_free(struct fcgi_gate *g)
{
    if (!g)
        return;
    pthread_mutex_destroy(&g->lock);
    free(g->waiters);
    free(g);
}

static void gate_wake(struct fcgi_gate *g)
{
    if (atomic_load_explicit(&g->nwaiting, memory_order_acquire) == 0)
        return;
    pthread_mutex_lock(&g->lock);
    for (size_t i = 0; i < g->count; i++)
        evloop_post(g->waiters[i].loop, g->waiters[i].fn, g->waiters[i].arg);
    pthread_mutex_unlock(&g->lock);
}

void fcgi_gate_set_capacity(struct fcgi_gate *g, uint32_t capacity)
{
    uint32_t old = atomic_exchange_explicit(&g->capacity, capacity, memory_order_acq_rel);
    if (capacity > old)
        gate_wake(g);
}

bool fcgi_gate_acquire(struct fcgi_gate *g)
{
    uint32_t n = atomic_load_explicit(&g->in_flight, memory_order_relaxed);
    for (;;) {
        if (n >= atomic_load_explicit(&g->capacity, memory_order_acquire))
            return false;
        if (atomic_compare_exchange_weak_explicit(&g->in_flight, &n, n + 1, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return true;
    }
}

void fcgi_gate_release(struct fcgi_gate *g)
{
    atomic_fetch_sub_explicit(&g->in_flight, 1, memory_order_acq_rel);
    gate_wake(g);
}

void fcgi_gate_waiting(struct fcgi_gate *g, struct evloop *l, bool waiting, evloop_fn fn, void *arg)
{
    pthread_mutex_lock(&g->lock);
    size_t i = 0;
    while (i < g->count && g->waiters[i].loop != l)
        i++;
    if (waiting && i == g->count) {
        if (g->count == g->cap) {
            g->cap = g->cap ? g->cap * 2 : 8;
            g->waiters = xrealloc(g->waiters, g->cap * sizeof(*g->waiters));
        }
        g->waiters[g->count++] = (struct gate_waiter){l, fn, arg};
        atomic_fetch_add_explicit(&g->nwaiting, 1, memory_order_release);
    } else if (!waiting && i < g->count) {
        g->waiters[i] = g->waiters[--g->count];
        atomic_fetch_sub_explicit(&g->nwaiting, 1, memory_order_release);
    }
    pthread_mutex_unlock(&g->lock);
}

uint32_t fcgi_gate_capacity(const struct fcgi_gate *g)
{
    return atomic_load_explicit(&g->capacity, memory_order_relaxed);
}

uint32_t fcgi_gate_in_flight(const struct fcgi_gate *g)
{
    return atomic_load_explicit(&g->in_flight, memory_order_relaxed);
}
