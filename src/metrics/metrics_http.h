/* The Prometheus endpoint: [metrics] listen, its own listening socket served
 * by a small thread with its own event loop, so that a scrape is answered
 * however busy the HTTP workers are, and never by the public listener or the
 * maintenance page.
 *
 * Only GET (and HEAD) /metrics is answered (200, text/plain; version=0.0.4);
 * other paths get 404, other methods on /metrics 405, clients outside
 * [metrics] allow_from 403 (checked first). Every response closes the
 * connection. A client must send its request head (at most 8 KiB) within
 * 5 s; at most 32 clients at a time (the oldest is dropped for a newcomer). */
#ifndef FERRY_METRICS_METRICS_HTTP_H
#define FERRY_METRICS_METRICS_HTTP_H

#include <stddef.h>

struct ferry_conf;
struct metrics;
struct metrics_http;

/**
 * Open [metrics] listen of conf and start serving m on a thread of its own
 * (created with every signal blocked). With listen empty, returns 0 and
 * *out = NULL: nothing to serve. conf and m must outlive the listener.
 * Returns 0 and *out (the caller's: metrics_http_stop()), or -errno with a
 * message for the operator in err. Caller's thread.
 */
int metrics_http_start(const struct ferry_conf *conf, struct metrics *m, struct metrics_http **out,
                       char *err, size_t errlen);

/** Stop the thread, close the listener and every client, free h. NULL-safe.
 * Caller's thread (the one that started it). */
void metrics_http_stop(struct metrics_http *h);

#endif
