/* Signal state of ferry's supervisor, for tests that spawn children. */
#ifndef FERRY_TEST_SIGNALS_H
#define FERRY_TEST_SIGNALS_H

#include <pthread.h>
#include <signal.h>

/* As ferry's supervisor: termination signals blocked, SIGPIPE ignored (the
 * children must start without either). */
static inline void test_signals_like_ferry(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

#endif
