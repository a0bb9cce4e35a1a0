/* The backend gate: slots up to the capacity, release and capacity growth wake
 * registered loops, withdrawn loops are not woken, and concurrent acquires never
 * exceed the capacity. */
#include "fcgi/gate.h"

#include "test.h"

#include <pthread.h>
#include <stdatomic.h>

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

int main(void)
{
    test_slots();
    test_wake();
    test_concurrent();
    return test_failures ? 1 : 0;
}
