#include "fcgi/gate.h"

#include "common/alloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gate_waiter {
    struct evloop *loop;
    evloop_fn fn;
    void *arg;
};

/* One generation's connections. id and state are written by the supervisor
 * only; a slot is reused only once its in_flight is 0. */
struct gate_gen {
    _Atomic unsigned id;
    _Atomic int state; /* enum fcgi_gen_state */
    _Atomic uint32_t in_flight;
};

struct fcgi_gate {
    _Atomic uint32_t capacity;
    _Atomic uint32_t in_flight;
    _Atomic uint32_t connecting; /* workers between connect_begin and connect_end */
    struct gate_gen gens[FCGI_GATE_GENS];
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

/* The connections still open to generations that take no new ones: their
 * slots are taken already, so they are added to the capacity. */
static uint32_t gate_old_in_flight(struct fcgi_gate *g)
{
    uint32_t n = 0;
    for (size_t i = 0; i < FCGI_GATE_GENS; i++) {
        int st = atomic_load_explicit(&g->gens[i].state, memory_order_relaxed);
        if (st == FCGI_GEN_DRAINING || st == FCGI_GEN_STOPPED)
            n += atomic_load_explicit(&g->gens[i].in_flight, memory_order_relaxed);
    }
    return n;
}

bool fcgi_gate_acquire(struct fcgi_gate *g)
{
    uint32_t n = atomic_load_explicit(&g->in_flight, memory_order_relaxed);
    for (;;) {
        uint64_t cap = (uint64_t)atomic_load_explicit(&g->capacity, memory_order_acquire) +
                       gate_old_in_flight(g);
        if (n >= cap)
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

/* ---- generations ---- */

char *fcgi_gate_gen_path(const char *socket, unsigned id)
{
    return id == 1 ? xstrdup(socket) : xasprintf("%s.swap.%u", socket, id);
}

/* The generation whose socket was bound at peer, or 0. */
static unsigned gate_gen_id_of(const char *socket, const char *peer, size_t peerlen)
{
    size_t slen = strlen(socket);
    while (peerlen && peer[peerlen - 1] == '\0')
        peerlen--;
    if (peerlen == slen && memcmp(peer, socket, slen) == 0)
        return 1;
    static const char suffix[] = ".swap.";
    size_t xlen = sizeof(suffix) - 1;
    if (peerlen <= slen + xlen || memcmp(peer, socket, slen) != 0 ||
        memcmp(peer + slen, suffix, xlen) != 0)
        return 0;
    unsigned long id = 0;
    for (size_t i = slen + xlen; i < peerlen; i++) {
        if (peer[i] < '0' || peer[i] > '9' || id > 429496729UL)
            return 0;
        id = id * 10 + (unsigned long)(peer[i] - '0');
    }
    return id > 1 && id <= 0xffffffffUL ? (unsigned)id : 0;
}

/* The slot of generation id (not 0), or -1. */
static int gate_gen_find(const struct fcgi_gate *g, unsigned id)
{
    for (int i = 0; i < FCGI_GATE_GENS; i++)
        if (atomic_load_explicit(&g->gens[i].state, memory_order_acquire) != FCGI_GEN_FREE &&
            atomic_load_explicit(&g->gens[i].id, memory_order_relaxed) == id)
            return i;
    return -1;
}

int fcgi_gate_gen_add(struct fcgi_gate *g, unsigned id)
{
    for (size_t i = 0; i < FCGI_GATE_GENS; i++) {
        struct gate_gen *s = &g->gens[i];
        int st = atomic_load(&s->state);
        /* A removed generation's slot, once its last connection closed. */
        if (st == FCGI_GEN_STOPPED && atomic_load(&s->id) == 0 && atomic_load(&s->in_flight) == 0)
            st = FCGI_GEN_FREE;
        if (st != FCGI_GEN_FREE)
            continue;
        atomic_store(&s->in_flight, 0);
        atomic_store(&s->id, id);
        atomic_store(&s->state, FCGI_GEN_OPEN);
        return 0;
    }
    return -ENOSPC;
}

void fcgi_gate_gen_set(struct fcgi_gate *g, unsigned id, enum fcgi_gen_state state)
{
    int i = gate_gen_find(g, id);
    if (i >= 0 && state != FCGI_GEN_FREE)
        atomic_store(&g->gens[i].state, state);
}

void fcgi_gate_gen_remove(struct fcgi_gate *g, unsigned id)
{
    int i = gate_gen_find(g, id);
    if (i < 0)
        return;
    struct gate_gen *s = &g->gens[i];
    /* id 0 marks the slot as nobody's: fcgi_gate_gen_add() reuses it once the
     * connections a worker still counts on it are closed. */
    atomic_store(&s->state, FCGI_GEN_STOPPED);
    atomic_store(&s->id, 0);
}

bool fcgi_gate_gen_idle(const struct fcgi_gate *g, unsigned id)
{
    /* connecting first: a worker increments it before connect() and, on a
     * connection to id, increments id's in_flight before decrementing it. So
     * connecting == 0 here means every connect() that could have reached id
     * (one begun before the rename) has been counted on id already, and
     * every later one reaches the generation the path now names. */
    /* The caller's rename() must be visible to any worker whose
     * connect_begin comes after this load (store-buffering: the rename on
     * one side, the worker's locked increment, a full barrier, on the other):
     * hence a full fence before the load. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load(&g->connecting) != 0)
        return false;
    int i = gate_gen_find(g, id);
    return i < 0 || atomic_load(&g->gens[i].in_flight) == 0;
}

uint32_t fcgi_gate_gen_in_flight(const struct fcgi_gate *g, unsigned id)
{
    int i = gate_gen_find(g, id);
    return i >= 0 ? atomic_load_explicit(&g->gens[i].in_flight, memory_order_relaxed) : 0;
}

void fcgi_gate_connect_begin(struct fcgi_gate *g)
{
    atomic_fetch_add(&g->connecting, 1);
}

void fcgi_gate_connect_abort(struct fcgi_gate *g)
{
    atomic_fetch_sub(&g->connecting, 1);
}

int fcgi_gate_connect_end(struct fcgi_gate *g, const char *socket, const char *peer, size_t peerlen)
{
    unsigned id = gate_gen_id_of(socket, peer, peerlen);
    int handle = -1;
    for (size_t i = 0; id && i < FCGI_GATE_GENS && handle < 0; i++) {
        struct gate_gen *s = &g->gens[i];
        int st = atomic_load(&s->state);
        if ((st == FCGI_GEN_OPEN || st == FCGI_GEN_DRAINING) && atomic_load(&s->id) == id) {
            atomic_fetch_add(&s->in_flight, 1);
            handle = (int)i;
        }
    }
    atomic_fetch_sub(&g->connecting, 1); /* after the count: see fcgi_gate_gen_idle() */
    return handle;
}

bool fcgi_gate_conn_done(struct fcgi_gate *g, int handle)
{
    if (handle < 0 || handle >= FCGI_GATE_GENS)
        return false;
    struct gate_gen *s = &g->gens[handle];
    atomic_fetch_sub(&s->in_flight, 1);
    return atomic_load(&s->state) != FCGI_GEN_OPEN;
}
