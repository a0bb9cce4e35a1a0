/* The HTTP server: listening sockets, N worker threads each with its own epoll
 * loop, and the supervisor loop (signals, admin socket, timers) that runs on the
 * thread calling server_run(). */
#ifndef FERRY_HTTP_SERVER_H
#define FERRY_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct evloop;

struct server;
struct conn;
struct ferry_conf;
struct http_request;

/* Shared state that requests read: an immutable snapshot behind an atomic
 * pointer, with one part per component. Each part has one owner (the
 * component that publishes it) and one release function; a snapshot passed to
 * server_publish() belongs to the server from then on and is released only
 * once no worker can still be reading it (every worker has loaded a newer
 * state, or has exited), at the latest in server_destroy(). */
enum server_state_part {
    STATE_MAINT = 0, /* struct maint_snapshot (src/maint); NULL when maintenance is off */
    STATE_BACKEND,   /* the backend generation (src/fcgi), not published yet */
    STATE_PARTS,
};

/** Frees one part's snapshot. Runs on the supervisor thread (or the thread
 * calling server_destroy()), never while a worker may read the snapshot. */
typedef void (*server_release_fn)(const void *snapshot);

struct ferry_state {
    uint64_t generation;           /* set by server_publish() */
    const void *part[STATE_PARTS]; /* read-only for workers; owned by the server */
};

/* The request handler chain (DESIGN.md "Request path"). Parsing and limits come
 * first and are built in; then each slot's handler, in this order, either
 * answers (HANDLER_DONE) or passes (HANDLER_PASS). */
enum handler_slot {
    HANDLER_SLOT_MAINT = 0,
    HANDLER_SLOT_OFFLOAD,
    HANDLER_SLOT_BACKEND,
    HANDLER_SLOT_STATIC,
    HANDLER_SLOT_COUNT,
};
enum handler_result { HANDLER_PASS = 0, HANDLER_DONE = 1, HANDLER_LATER = 2 };

/** A request handler, called on a worker thread. It answers with the
 * conn_respond_* functions (response.h) and returns HANDLER_DONE, or defers
 * with conn_defer() and returns its result (HANDLER_LATER), or passes. req is
 * valid during the call only (use conn_request() after conn_defer()). */
typedef int (*http_handler_fn)(struct conn *c, const struct http_request *req, void *arg);

/** Create a server from the configuration (copied as needed; conf must outlive
 * the server). Opens the listening sockets (LISTEN_FDS win over `listen`).
 * Returns NULL and writes a message into err (errlen bytes) on failure.
 * Supervisor thread. */
struct server *server_create(const struct ferry_conf *conf, char *err, size_t errlen);

/** Destroy a server that is not running. NULL-safe. */
void server_destroy(struct server *s);

/** Install the handler for a slot (before server_run()). */
void server_set_handler(struct server *s, enum handler_slot slot, http_handler_fn fn, void *arg);

/** Run until SIGTERM/SIGINT (graceful stop; at shutdown_timeout the
 * remaining connections are closed). SIGHUP reopens the logs. Sends READY=1 to
 * NOTIFY_SOCKET once serving. Every worker thread has been joined when it
 * returns. Returns 0, or -errno when the workers could not be started (the
 * reason is logged; the ones that started have been stopped). Supervisor
 * thread. */
int server_run(struct server *s);

/** The supervisor's event loop (signals, admin socket, timers). It runs
 * inside server_run(); watches and timers may be added before. Supervisor
 * thread. */
struct evloop *server_loop(struct server *s);

/** Say who releases the snapshots of part (before the first publish of it). */
void server_set_release(struct server *s, enum server_state_part part, server_release_fn release);

/**
 * Publish snapshot (may be NULL) as part's new value and return once every
 * worker has switched: each request a worker starts after this returns sees
 * it. Ownership of snapshot passes to the server at the call, whatever the
 * result; the part's previous snapshot is released (with the part's release
 * function) once no worker can still read it. A worker that has exited starts
 * no request and counts as switched.
 * Returns 0, or -ETIMEDOUT when a running worker did not acknowledge within
 * 10 s: the new state IS installed (that worker sees it at its next round),
 * so the caller must treat the switch as made, not roll it back.
 * Supervisor thread.
 */
int server_publish(struct server *s, enum server_state_part part, const void *snapshot);

/** The state most recently published (supervisor's view). */
const struct ferry_state *server_state(const struct server *s);

/** Totals across workers (relaxed reads; exact once workers are quiet). Any
 * thread (server_get_stats() takes a lock only against server_run() freeing
 * the workers). */
struct server_stats {
    uint64_t connections_open;
    uint64_t connections_total;
    uint64_t requests_total;
    uint64_t requests_inflight;        /* requests whose response is not finished */
    uint64_t requests_inflight_exempt; /* of those, marked by conn_mark_exempt() */
    uint64_t maint_served;             /* conn_count_maint_served() */
    uint64_t maint_bypassed;           /* conn_count_maint_bypassed() */
};
void server_get_stats(const struct server *s, struct server_stats *out);

/** Called by the supervisor after a worker's in-flight count drops to zero:
 * cb runs on the supervisor thread (used by `ferry down --drain`). Only one
 * callback at a time; NULL clears it. */
typedef void (*server_idle_cb)(struct server *s, void *arg);
void server_on_idle(struct server *s, server_idle_cb cb, void *arg);

/** The configuration the server runs with. */
const struct ferry_conf *server_conf(const struct server *s);

#endif
