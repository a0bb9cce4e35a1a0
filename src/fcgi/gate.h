/* The backend gate: how many FastCGI requests may be in flight at once, shared
 * by the process manager (which sets the capacity) and every HTTP worker (which
 * takes and returns slots).
 *
 * A request is written to the backend only after fcgi_gate_acquire() gave it a
 * slot, so no request waits in the socket's backlog where nobody can time it
 * (issue 10). A worker that holds requests registers a waker; when a slot may
 * have come free (a release, or the capacity grew) every registered waker is
 * posted to its own loop, and the worker retries its queue in arrival order.
 *
 * Generations. Each generation of backend processes listens on its own
 * socket (fcgi/pm.h); the configured path names the current one's. The gate
 * also keeps, per generation, the connections open to it (in flight), keyed by
 * the name its socket was bound at (fcgi_gate_gen_path()), which a worker
 * reads back with getpeername() after connect(): an AF_UNIX peer name is the
 * listening socket's bind name, whatever the file is called now. A worker
 * calls fcgi_gate_connect_begin() before connect() and fcgi_gate_connect_end()
 * once it knows the peer, so that the process manager can tell, race-free,
 * that no connection is or can still get to a generation the path no longer
 * names (fcgi_gate_gen_idle()): only then are its processes signalled.
 *
 * Capacity: acquire succeeds while in_flight < capacity + the connections
 * still open to generations that are draining or stopped. The process manager
 * sets capacity = ready processes of the current generation x [backend]
 * concurrency; requests on the old generation keep their slots (they count in
 * in_flight and in the addend alike), so every new slot is one the current
 * generation can take at once, and the addend shrinks as the old one drains.
 * The sum is read without a lock: a slot may briefly be given one early or
 * one late, never lost.
 *
 * Threads: fcgi_gate_set_capacity() and the fcgi_gate_gen_* calls from the
 * supervisor; acquire/release/connect/waiting from any worker; all lock-free
 * on the request path except fcgi_gate_waiting() and the wake fan-out, which
 * take a short mutex. */
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

/** How many generations the gate tracks at once: the current one, one
 * starting or draining, and stopped ones whose connections are not all
 * closed yet. */
#define FCGI_GATE_GENS 8

enum fcgi_gen_state {
    FCGI_GEN_FREE = 0, /* unused slot */
    FCGI_GEN_OPEN,     /* current or starting: connections to it count */
    FCGI_GEN_DRAINING, /* the path names another generation: count, and add to capacity */
    FCGI_GEN_STOPPED,  /* signalled: a connection landing here is refused (retried) */
};

/** The name generation id's socket is bound at, for the configured path
 * socket: socket itself for generation 1, "<socket>.swap.<id>" for later
 * ones (the next to the configured path, renamed over it once ready).
 * Returns a string the caller frees. Any thread. */
char *fcgi_gate_gen_path(const char *socket, unsigned id);

/** Track generation id (not tracked yet) in state FCGI_GEN_OPEN. Returns 0, or
 * -ENOSPC when FCGI_GATE_GENS generations still have connections. Supervisor
 * thread. */
int fcgi_gate_gen_add(struct fcgi_gate *g, unsigned id);

/** Move generation id to state (not FCGI_GEN_FREE). Supervisor thread. */
void fcgi_gate_gen_set(struct fcgi_gate *g, unsigned id, enum fcgi_gen_state state);

/** Stop tracking generation id: its slot is reused once its last connection
 * is closed (until then it is FCGI_GEN_STOPPED). Supervisor thread. */
void fcgi_gate_gen_remove(struct fcgi_gate *g, unsigned id);

/** Whether no connection is open to generation id and none can still reach
 * it: no worker is between fcgi_gate_connect_begin() and _end(). Meaningful
 * once the path no longer names id's socket (every connect() from then on
 * reaches another generation): then a true answer stays true. Both loads are
 * seq_cst, connecting first (see gate.c). Supervisor thread. */
bool fcgi_gate_gen_idle(const struct fcgi_gate *g, unsigned id);

/** Connections open to generation id now (for status; racy). Any thread. */
uint32_t fcgi_gate_gen_in_flight(const struct fcgi_gate *g, unsigned id);

/** A worker is about to connect() to the configured path. It then owes one
 * fcgi_gate_connect_end() or fcgi_gate_connect_abort(). Any thread. */
void fcgi_gate_connect_begin(struct fcgi_gate *g);

/** The connect() failed: end what fcgi_gate_connect_begin() started. */
void fcgi_gate_connect_abort(struct fcgi_gate *g);

/** The connection reached the socket bound at peer (peerlen bytes, from
 * getpeername(); not NUL-terminated) for configured path socket. Counts it on
 * that generation and returns the generation's handle (>= 0), which the
 * caller passes to fcgi_gate_conn_done() when the connection is closed; or
 * returns -1 when the peer is no generation the gate tracks, or one already
 * stopped: the caller closes the connection, sends nothing on it and connects
 * again. Either way it ends what fcgi_gate_connect_begin() started. Any
 * thread. */
int fcgi_gate_connect_end(struct fcgi_gate *g, const char *socket, const char *peer,
                          size_t peerlen);

/** The connection counted by fcgi_gate_connect_end() as handle is closed.
 * Returns true when it was on a generation that no longer takes new
 * connections: the caller then gives its slot back to the gate
 * (fcgi_gate_release()), not to another request directly, so that the
 * capacity shrinks as the old generation drains. Any thread. */
bool fcgi_gate_conn_done(struct fcgi_gate *g, int handle);

/** Current capacity and in-flight count (for status and metrics; racy reads). */
uint32_t fcgi_gate_capacity(const struct fcgi_gate *g);
uint32_t fcgi_gate_in_flight(const struct fcgi_gate *g);

#endif
