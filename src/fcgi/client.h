/* The FastCGI client: the handler for requests under [backend] location
 * (DESIGN.md request path, step 4). Each request gets a slot from the gate
 * (fcgi/gate.h) before a byte of it goes to the backend; a request that gets
 * none waits in its worker's FIFO hold queue (at most [backend] hold_queue
 * requests wait in all) for up to hold_timeout, then gets the 503 page (the
 * maintenance page rendered by src/maint with a "busy" message) and
 * Retry-After. With a slot it opens a non-blocking connection to the
 * backend socket by path (one request per connection, no FCGI_KEEP_CONN),
 * counts it on the generation whose socket it reached (getpeername(), see
 * fcgi/gate.h: the process manager signals an old generation only when
 * none is left; a connection to a generation already stopped is closed
 * unused and made again), sends
 * BEGIN_REQUEST, the CGI/1.1 params (fcgi/cgi.h) and the request body as
 * STDIN with backpressure both ways (a chunked body is read whole into an
 * unlinked temporary file first, so that CONTENT_LENGTH can be sent), and
 * streams STDOUT to the client (chunked when the application sets no
 * Content-Length). STDERR lines go to the error log.
 *
 * Failures: protocol garbage, a response header block over CGI_HEAD_MAX or
 * a connection closed before END_REQUEST: 502 (or, once the response has
 * started, a cut connection). No byte from the backend for [backend]
 * timeout while it owes one: 504. A request is tried again on a new
 * connection only when none of its bytes reached the backend, or when the
 * backend answered FCGI_OVERLOADED / FCGI_CANT_MPX_CONN before any of the
 * request body was taken from the client; never once a response byte went
 * out. A client that goes away closes the backend connection (after an
 * FCGI_ABORT_REQUEST when the record stream allows one) and frees the slot.
 * The access log line carries backend=ok|busy|error|timeout|refused, or
 * backend=held|aborted for a client that went away while held or while the
 * backend had the request.
 *
 * A Location without Status (a CGI "local redirect") is answered as a 302
 * to that path: ferry does not re-run the request internally. With [backend]
 * accel_redirect, a header block naming an upload in one of accel_headers is
 * answered with that upload instead (fcgi_client_set_accel()). */
#ifndef FERRY_FCGI_CLIENT_H
#define FERRY_FCGI_CLIENT_H

#include <stddef.h>
#include <stdint.h>

struct conn;
struct fcgi_gate;
struct ferry_conf;
struct http_request;
struct server;

struct fcgi_client;

/**
 * Set up the client for conf's [backend] section (location, socket,
 * hold_timeout, hold_queue, timeout, script_filename) and [server] root,
 * taking slots from gate (the process manager's, fcgi_pm_gate()). Renders
 * the 503 page from [maintenance] page once. conf and gate must outlive the
 * client. Returns 0, or -errno with a message in err. Supervisor thread.
 */
int fcgi_client_create(const struct ferry_conf *conf, struct fcgi_gate *gate,
                       struct fcgi_client **out, char *err, size_t errlen);

/** Install the client as the HANDLER_SLOT_BACKEND handler of s (before
 * server_run()). Supervisor thread. */
void fcgi_client_install(struct fcgi_client *cl, struct server *s);

/** The handler (arg is the client): passes requests outside location. Worker
 * thread. */
int fcgi_client_handle(struct conn *c, const struct http_request *req, void *arg);

struct offload_serve;

/** Honour [backend] accel_headers (issue 11): a response naming an upload
 * with one of them is answered by os (offload_serve_upload() for a URL path,
 * offload_serve_file() for X-Sendfile's filesystem path) instead, keeping
 * the application's status, Content-Disposition, Cache-Control, Expires and
 * Set-Cookie; its body is never sent. A refused path gets 502 and an error
 * log line. os must outlive the client. Before server_run(). */
void fcgi_client_set_accel(struct fcgi_client *cl, struct offload_serve *os);

/** Requests waiting for a slot now, across workers (racy read; for status).
 * Any thread. */
uint32_t fcgi_client_held(const struct fcgi_client *cl);

/** Responses the application completed (END_REQUEST), across workers (racy
 * read; for status). Any thread. */
uint64_t fcgi_client_served(const struct fcgi_client *cl);

struct metrics;

/** Register the client's "backend" metric families with m: requests held
 * now, and per-worker counters summed at each rendering (holds, hold
 * timeouts, hold queue full, errors, timeouts, client aborts, retries). cl
 * must outlive every rendering of m. Returns as metrics_register().
 * Supervisor thread, at startup. */
int fcgi_client_register_metrics(struct fcgi_client *cl, struct metrics *m);

/** Free the client after server_run() returned (every worker has stopped)
 * and before the gate is freed. NULL-safe. */
void fcgi_client_destroy(struct fcgi_client *cl);

#endif
