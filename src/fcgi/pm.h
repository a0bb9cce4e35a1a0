/* The FastCGI process manager (issue 10): binds [backend] socket, starts
 * [backend] processes copies of [backend] command with that socket as fd 0
 * (FCGI_LISTENSOCK_FILENO), respawns the ones that die, and replaces them all
 * with a new generation on `ferry swap`.
 *
 * Sockets. Each generation listens on its own socket, which the pm owns
 * (binds, hands to the generation's processes, closes once they are all
 * reaped). The first is bound at [backend] socket; a swap binds the new one at
 * "<socket>.swap.<id>" (fcgi_gate_gen_path()) and, once the new generation is
 * ready, rename()s it over <socket>. The configured path is held for ferry's
 * life and always names the current generation's listening socket (never
 * missing while ferry runs); it is unlinked at fcgi_pm_destroy(). A temporary
 * name whose generation never became ready is unlinked when it is stopped.
 *
 * Readiness. Each process gets the write end of a pipe as fd 3 and
 * FERRY_READY_FD=3 in its environment. It is ready when it writes the line
 * "READY" there. A process that never writes anything there is ready once it
 * is still alive [backend] ready_grace after it started (unmodified libfcgi
 * applications, php-cgi). A process that writes anything else first (e.g.
 * "STARTING\n", before ready_grace ends) has said it will report, and is
 * ready only on "READY".
 *
 * Capacity. The gate (fcgi/gate.h) is told the current generation's ready
 * processes x [backend] concurrency. A starting generation gets no connection
 * before the rename, so it counts for nothing; a draining one keeps the slots
 * of its requests in flight, which the gate adds to the capacity.
 *
 * Swap. `swap` re-reads command from the configuration file, starts the new
 * generation on its own socket and waits until every process of it is ready
 * (ready_timeout; else the new generation is stopped, its socket closed and
 * unlinked, the old one keeps serving, and the swap fails with the reason).
 * Then the rename makes it current and the old generation drains: it is not
 * respawned, and it gets stop_signal (libfcgi's and php-cgi's graceful stop is
 * SIGUSR1) only when it is idle, i.e. fcgi_gate_gen_idle() (no worker is
 * connecting, no connection of ferry's to it is open: after the rename no new
 * one can reach it) and its socket's backlog is empty (connections of other
 * clients made before the rename), polled every few ms; or at drain_timeout
 * anyway, logged. So the signal finds the processes in accept(), where
 * libfcgi's handler (installed without SA_RESTART) interrupts nothing that
 * matters; a signal during a read of a request body would cut it short. Then
 * drain_timeout to exit, SIGTERM, SIGKILL after drain_timeout again; the reply
 * (old and new PIDs) goes out once every old process is reaped. One swap at a
 * time.
 *
 * Threads: everything here runs on the supervisor's loop thread, except
 * fcgi_pm_gate()'s result, which workers use (see gate.h), and the metrics
 * collector (fcgi_pm_register_metrics()). */
#ifndef FERRY_FCGI_PM_H
#define FERRY_FCGI_PM_H

#include <stddef.h>
#include <stdint.h>

struct admin;
struct evloop;
struct fcgi_gate;
struct ferry_conf;

struct fcgi_pm;

/**
 * Bind conf's [backend] socket (refusing when something listens there,
 * removing a stale socket file) and start the first generation on loop.
 * Processes report ready later, on the loop. conf must outlive the pm (swap
 * re-reads conf->path, not conf). Returns NULL with a message in err when the
 * socket cannot be bound (or its path leaves no room for ".swap.<id>") or
 * command cannot be started. Supervisor thread,
 * before or while loop runs.
 */
struct fcgi_pm *fcgi_pm_create(struct evloop *loop, const struct ferry_conf *conf, char *err,
                               size_t errlen);

/**
 * Register the `swap` command and the "backend" status section on a. a must
 * be destroyed after the pm. With pm NULL (no backend configured), `swap`
 * only answers that there is no backend, and there is no status section.
 * Returns 0 or -EEXIST.
 */
int fcgi_pm_register_admin(struct fcgi_pm *pm, struct admin *a);

/** The gate whose capacity the pm keeps; owned by the pm, valid until
 * fcgi_pm_destroy(), which must come after every worker has stopped. */
struct fcgi_gate *fcgi_pm_gate(struct fcgi_pm *pm);

struct fcgi_client;

/** Show cl's held requests and served responses (fcgi_client_held(),
 * fcgi_client_served()) in the status section. cl
 * must outlive the admin's last status call (destroy it after server_run()
 * returned). Supervisor thread. */
void fcgi_pm_show_client(struct fcgi_pm *pm, const struct fcgi_client *cl);

/** Requests holding a backend slot now (the gate's in-flight count). Any
 * thread. */
uint32_t fcgi_pm_in_flight(const struct fcgi_pm *pm);

struct metrics;

/** Register the process manager's "backend" metric families with m:
 * processes by generation and state, capacity, requests in flight, swaps,
 * failed swaps and respawns. Their collector runs on the rendering thread and
 * reads only atomics and a snapshot the supervisor publishes under a lock.
 * pm must outlive every rendering of m. Returns as metrics_register().
 * Supervisor thread, at startup. */
int fcgi_pm_register_metrics(struct fcgi_pm *pm, struct metrics *m);

/**
 * Stop every process (stop_signal, then SIGTERM, then SIGKILL, bounded by a
 * few seconds in all), reap them, answer a swap in progress with an error,
 * close every generation's socket and unlink the configured path and any
 * temporary one, free the gate. Blocks; the loop need not run
 * (call it after server_run() returned, workers joined). NULL-safe.
 */
void fcgi_pm_destroy(struct fcgi_pm *pm);

#endif
