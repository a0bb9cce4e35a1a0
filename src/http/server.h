/* The HTTP server: listening sockets, N worker threads each with its own epoll
 * loop, and the supervisor loop (signals, admin socket, timers) that runs on the
 * thread calling server_run(). */
#ifndef FERRY_HTTP_SERVER_H
#define FERRY_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct server;
struct conn;
struct ferry_conf;
struct http_request;

/* Shared state that requests read: an immutable snapshot behind an atomic
 * pointer. A switch publishes a new one with server_publish(), which returns
 * once every worker has seen it. */
struct ferry_state {
    uint64_t generation;                      /* set by server_publish() */
    const void *maint;                        /* maintenance snapshot (src/maint), NULL when off */
    void (*maint_release)(const void *maint); /* frees maint once no worker can see it */
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
enum handler_result { HANDLER_PASS = 0, HANDLER_DONE = 1 };

/** A request handler, called on a worker thread. It may answer with the
 * conn_respond_* functions (response.h) and return HANDLER_DONE. */
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

/** Run until SIGTERM/SIGINT (graceful stop, bounded by shutdown_timeout).
 * SIGHUP reopens the logs. Sends READY=1 to NOTIFY_SOCKET once serving.
 * Returns 0 or -errno. Supervisor thread. */
int server_run(struct server *s);

/** Ask a running server to stop gracefully (async-signal-safe). */
void server_request_stop(struct server *s);

/* ---- supervisor loop services (supervisor thread only) ---- */

typedef void (*server_fd_cb)(struct server *s, int fd, uint32_t events, void *arg);
typedef void (*server_timer_cb)(struct server *s, void *arg);

/** Watch fd (EPOLLIN etc.) in the supervisor loop; cb runs on the supervisor
 * thread. Does not take ownership of fd. Returns 0 or -errno. */
int server_watch_fd(struct server *s, int fd, uint32_t events, server_fd_cb cb, void *arg);
/** Stop watching fd. Returns 0 or -errno. */
int server_unwatch_fd(struct server *s, int fd);
/** Run cb once, ms milliseconds from now. Returns a timer id (> 0). */
uint64_t server_add_timer(struct server *s, uint64_t ms, server_timer_cb cb, void *arg);
/** Cancel a timer that has not fired; unknown ids are ignored. */
void server_cancel_timer(struct server *s, uint64_t id);

/** Publish a new state and return only after every worker has switched to it:
 * each request a worker starts after this returns sees st. The previous
 * state's maint_release runs when no worker can still be reading it.
 * Copies st. Returns 0 or -errno. Supervisor thread. */
int server_publish(struct server *s, const struct ferry_state *st);

/** The state most recently published (supervisor's view). */
const struct ferry_state *server_state(const struct server *s);

/** Totals across workers (relaxed reads; exact once workers are quiet). */
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
void server_on_idle(struct server *s, server_timer_cb cb, void *arg);

/** The configuration the server runs with. */
const struct ferry_conf *server_conf(const struct server *s);

#endif
