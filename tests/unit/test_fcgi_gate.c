/* The backend gate: slots up to the capacity, release and capacity growth wake
 * registered loops, withdrawn loops are not woken, and concurrent acquires never
 * exceed the capacity. */
#include "fcgi/gate.h"

#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static void test_slots(void)
{
    struct fcgi_gate *g = fcgi_gate_new();
    ASSERT_TRUE(!fcgi_gate_acquire(g)); /* capacity 0 until the manager says so */
    fcgi_gate_set_capacity(g, 2);
    ASSERT_TRUE(fcgi_gate_acquire(g));
    ASSERT_TRUE(fcgi_gate_acquire(g));
    ASSERT_TRUE(!fcgi_gate_acquire(g));
    ASSERT_EQ(fcgi_gate_in_flight(g), 2);
    fcgi_gate_set_capacity(g, 1); /* shrinking never revokes slots already taken */
    fcgi_gate_release(g);
    ASSERT_TRUE(!fcgi_gate_acquire(g));
    fcgi_gate_release(g);
    ASSERT_TRUE(fcgi_gate_acquire(g));
    fcgi_gate_release(g);
    ASSERT_EQ(fcgi_gate_in_flight(g), 0);
    ASSERT_EQ(fcgi_gate_capacity(g), 1);
    fcgi_gate_free(g);
}

static int wakes;

static void on_wake(struct evloop *l, void *arg)
{
    (void)arg;
    wakes++;
    evloop_stop(l);
}

static void test_wake(void)
{
    struct evloop *l = evloop_create();
    struct fcgi_gate *g = fcgi_gate_new();
    fcgi_gate_waiting(g, l, true, on_wake, NULL);
    fcgi_gate_waiting(g, l, true, on_wake, NULL); /* one registration per loop */
    fcgi_gate_set_capacity(g, 1);                 /* grew: wake */
    ASSERT_EQ(evloop_run(l), 0);
    ASSERT_EQ(wakes, 1);
    ASSERT_TRUE(fcgi_gate_acquire(g));
    fcgi_gate_release(g); /* a slot came free: wake */
    ASSERT_EQ(evloop_run(l), 0);
    ASSERT_EQ(wakes, 2);
    fcgi_gate_waiting(g, l, false, on_wake, NULL);
    fcgi_gate_set_capacity(g, 4); /* nobody registered: nothing posted */
    struct evloop_timer t;
    evloop_timer_init(&t, on_wake, NULL);
    evloop_timer_start(l, &t, 10);
    ASSERT_EQ(evloop_run(l), 0);
    ASSERT_EQ(wakes, 3); /* the timer, not a post */
    fcgi_gate_free(g);
    evloop_destroy(l);
}

#define THREADS 4
#define ROUNDS 20000
static struct fcgi_gate *shared;
static atomic_int inside, worst;

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        if (!fcgi_gate_acquire(shared))
            continue;
        int n = atomic_fetch_add(&inside, 1) + 1;
        int w = atomic_load(&worst);
        while (n > w && !atomic_compare_exchange_weak(&worst, &w, n))
            ;
        atomic_fetch_sub(&inside, 1);
        fcgi_gate_release(shared);
    }
    return NULL;
}

static void test_concurrent(void)
{
    shared = fcgi_gate_new();
    fcgi_gate_set_capacity(shared, 2);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, hammer, NULL);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    ASSERT_TRUE(atomic_load(&worst) <= 2);
    ASSERT_TRUE(atomic_load(&worst) >= 1);
    ASSERT_EQ(fcgi_gate_in_flight(shared), 0);
    fcgi_gate_free(shared);
}

/* A connection counted on the generation whose bind name getpeername()
 * returned; unknown and stopped generations refuse; idle needs both no
 * connection and nobody connecting; a draining generation's connections add
 * to the capacity. */
static void test_generations(void)
{
    const char *sock = "./run/app.sock";
    char *p1 = fcgi_gate_gen_path(sock, 1), *p2 = fcgi_gate_gen_path(sock, 2);
    ASSERT_STREQ(p1, "./run/app.sock");
    ASSERT_STREQ(p2, "./run/app.sock.swap.2");
    struct fcgi_gate *g = fcgi_gate_new();
    ASSERT_EQ(fcgi_gate_gen_add(g, 1), 0);
    fcgi_gate_set_capacity(g, 1);

    ASSERT_TRUE(fcgi_gate_acquire(g));
    fcgi_gate_connect_begin(g);
    ASSERT_TRUE(!fcgi_gate_gen_idle(g, 1)); /* a connect() under way */
    int h1 = fcgi_gate_connect_end(g, sock, p1, strlen(p1));
    ASSERT_TRUE(h1 >= 0);
    ASSERT_EQ(fcgi_gate_gen_in_flight(g, 1), 1);
    ASSERT_TRUE(!fcgi_gate_gen_idle(g, 1));

    /* Generation 2 takes the path; 1 drains with its request. */
    ASSERT_EQ(fcgi_gate_gen_add(g, 2), 0);
    fcgi_gate_gen_set(g, 1, FCGI_GEN_DRAINING);
    fcgi_gate_set_capacity(g, 1);
    ASSERT_TRUE(fcgi_gate_acquire(g)); /* 1 for the new one + 1 held by the old */
    ASSERT_TRUE(!fcgi_gate_acquire(g));
    fcgi_gate_connect_begin(g);
    int h2 = fcgi_gate_connect_end(g, sock, p2, strlen(p2) + 1); /* a trailing NUL too */
    ASSERT_TRUE(h2 >= 0 && h2 != h1);
    ASSERT_EQ(fcgi_gate_gen_in_flight(g, 2), 1);

    /* Names that are no generation, or a stopped one: refused, not counted. */
    fcgi_gate_connect_begin(g);
    ASSERT_EQ(fcgi_gate_connect_end(g, sock, "./run/app.sock.swap.9", 21), -1);
    fcgi_gate_connect_begin(g);
    ASSERT_EQ(fcgi_gate_connect_end(g, sock, "./run/other.sock", 16), -1);
    fcgi_gate_connect_begin(g);
    ASSERT_EQ(fcgi_gate_connect_end(g, sock, "./run/app.sock.swap.2x", 22), -1);

    /* The old request ends: its slot goes back to the gate, capacity shrinks. */
    ASSERT_TRUE(fcgi_gate_conn_done(g, h1));
    fcgi_gate_release(g);
    ASSERT_TRUE(fcgi_gate_gen_idle(g, 1));
    ASSERT_TRUE(!fcgi_gate_acquire(g)); /* the new generation's one slot is taken */
    fcgi_gate_gen_set(g, 1, FCGI_GEN_STOPPED);
    fcgi_gate_connect_begin(g);
    ASSERT_EQ(fcgi_gate_connect_end(g, sock, p1, strlen(p1)), -1);
    fcgi_gate_gen_remove(g, 1);
    ASSERT_TRUE(!fcgi_gate_conn_done(g, h2)); /* on the current generation */
    fcgi_gate_release(g);
    ASSERT_TRUE(fcgi_gate_gen_idle(g, 2));
    ASSERT_EQ(fcgi_gate_in_flight(g), 0);

    /* Slots are reused once empty. */
    for (unsigned id = 3; id < 3 + 3 * FCGI_GATE_GENS; id++) {
        ASSERT_EQ(fcgi_gate_gen_add(g, id), 0);
        fcgi_gate_gen_remove(g, id);
    }
    fcgi_gate_free(g);
    free(p1);
    free(p2);
}

int main(void)
{
    test_slots();
    test_generations();
    test_wake();
    test_concurrent();
    return test_failures ? 1 : 0;
}
