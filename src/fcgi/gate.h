/* The backend gate: how many FastCGI requests may be in flight at once, shared
 * by the process manager (which sets the capacity) and every HTTP worker (which
 * takes and returns slots).
 *
 * A request is written to the backend only after fcgi_gate_acquire() gave it a
 * slot, so no request waits in the socket's backlog where nobody can time it
 * (issue 10). capacity = ready processes x [backend] concurrency, summed over
 * the generations that accept (during a swap, both). A worker that holds
 * requests registers a waker; when a slot may have come free (a release, or the
 * capacity grew) every registered waker is posted to its own loop, and the
 * worker retries its queue in arrival order.
 *
 * Threads: fcgi_gate_set_capacity() from the supervisor; acquire/release/
 * waiting from any worker; all lock-free on the request path except
 * fcgi_gate_waiting() and the wake fan-out, which take a short mutex. */
#ifndef FERRY_FCGI_GATE_H
#define FERRY_FCGI_GATE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/evloop.h"

struct fcgi_gate;

/** A gate with capacity 0 (nothing may go to the backend until the process
 * manager says so). Owned by the caller; free with fcgi_gate_free() after every
 * worker has stopped. */
struct fcgi_gate *fcgi_gate_new(void);

/** Free g. NULL-safe. No thread may use g afterwards. */
void fcgi_gate_free(struct fcgi_gate *g);

/** Set how many requests may be in flight. When it grows, waiting workers are
 * woken. Any thread (the process manager's). */
void fcgi_gate_set_capacity(struct fcgi_gate *g, uint32_t capacity);

/** Take a slot if in_flight < capacity. Returns true when taken; the caller
 * then owes exactly one fcgi_gate_release(). Any thread. */
bool fcgi_gate_acquire(struct fcgi_gate *g);

/** Return a slot taken by fcgi_gate_acquire() and wake waiting workers. Any
 * thread. */
void fcgi_gate_release(struct fcgi_gate *g);

/** Register (or, with waiting false, withdraw) loop l as holding requests: while
 * registered, fn(l, arg) is posted to l each time a slot may be free. One
 * registration per loop; fn and arg must stay valid while registered. The
 * loop's own thread. */
void fcgi_gate_waiting(struct fcgi_gate *g, struct evloop *l, bool waiting, evloop_fn fn,
                       void *arg);

/** Current capacity and in-flight count (for status and metrics; racy reads). */
uint32_t fcgi_gate_capacity(const struct fcgi_gate *g);
uint32_t fcgi_gate_in_flight(const struct fcgi_gate *g);

#endif
