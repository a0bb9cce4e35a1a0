/* The server's metric families (component "server" of the metrics registry):
 * requests by handler and status class, response body bytes, request
 * durations, connections. Workers count in their own struct worker_metrics
 * with plain adds; the collector sums the workers with relaxed loads. */
#ifndef FERRY_HTTP_SERVER_METRICS_H
#define FERRY_HTTP_SERVER_METRICS_H

struct metrics;
struct server;

/**
 * Register s's families with m under "server". s must outlive every rendering
 * of m (stop the metrics listener and destroy the admin before s). Returns
 * as metrics_register(). Supervisor thread, before server_run().
 */
int server_register_metrics(struct server *s, struct metrics *m);

/** The label value of a handler kind ("static", "offload_local", ...). */
const char *server_handler_name(int kind);

#endif
