/* Answering a request from a handler (worker thread). A response is a head
 * (status line and headers, built here) followed by a queue of chunks (memory
 * and file ranges, http/chunkq.h) written with writev and sendfile.
 *
 * A handler answers at once (HANDLER_DONE after conn_respond_*) or later: it
 * calls conn_defer() with a producer and returns its result (HANDLER_LATER).
 * The connection then keeps its own copy of the request (conn_request()), and
 * the producer answers from callbacks on the same worker thread, with the
 * same conn_respond_* functions, or streams a body of unknown length with
 * conn_respond_stream() / conn_body_append*() / conn_body_end(). */
#ifndef FERRY_HTTP_RESPONSE_H
#define FERRY_HTTP_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

struct conn;
struct evloop;
struct ferry_state;
struct http_request;

/** The state snapshot this connection's worker sees now. Worker thread. */
const struct ferry_state *conn_state(const struct conn *c);

/** The client's address. */
const struct sockaddr *conn_peer(const struct conn *c);

/** The loop of the connection's worker, for a producer's own fds and timers. */
struct evloop *conn_loop(const struct conn *c);

/** Start a response: status line, Date, Server. Worker thread. Returns 0 (an
 * earlier failed head append is remembered and turns the response into a 500
 * when the head is finished). */
int conn_respond_start(struct conn *c, int status);

/** Add a header line; value is copied. The server adds Date, Server,
 * Content-Length/Transfer-Encoding and Connection itself. Returns 0, or
 * -ENOBUFS when the head would pass 1 MiB: the response then becomes a 500
 * and the connection closes after it (nothing aborts). */
int conn_respond_header(struct conn *c, const char *name, const char *value);

/** Add pre-formatted header lines ("Name: value\r\n"...), copied. Same
 * returns as conn_respond_header(). */
int conn_respond_headers_raw(struct conn *c, const char *p, size_t len);

/** Finish the head and send (p, len) as the body (omitted for HEAD but counted in
 * Content-Length). If release is non-NULL the memory is not copied and
 * release(arg) runs once it has been written or the connection is gone;
 * otherwise it is copied. */
void conn_respond_body(struct conn *c, const void *p, size_t len, void (*release)(void *),
                       void *arg);

/** Finish the head and send len bytes of fd from offset (sendfile). Takes
 * ownership of fd. */
void conn_respond_file(struct conn *c, int fd, off_t offset, off_t len);

/** A complete short response with a text/plain or text/html body. */
void conn_respond_simple(struct conn *c, int status, const char *content_type, const char *body);

/** Append note (static storage, not copied; plain printable ASCII without
 * spaces or quotes) to the current request's access log line, after the
 * combined fields: how a handler answered ("offload=redirect"). Worker thread. */
void conn_set_log_note(struct conn *c, const char *note);

/* Which handler answered a request, for the metrics (ferry_http_requests_total
 * and friends, label "handler"). A request nobody claims (parse errors, 413,
 * the 500 of a handler that did not answer) counts as HANDLER_KIND_CORE. */
enum handler_kind {
    HANDLER_KIND_CORE = 0,      /* "core": answered by the server itself */
    HANDLER_KIND_STATIC,        /* "static": files from [server] root */
    HANDLER_KIND_MAINTENANCE,   /* "maintenance": the 503 page */
    HANDLER_KIND_OFFLOAD_LOCAL, /* "offload_local": under url_prefix, from the spool (or refused) */
    HANDLER_KIND_REDIRECT,      /* "redirect": to [offload] public_url */
    HANDLER_KIND_PRESIGN,       /* "presign": to a presigned store URL */
    HANDLER_KIND_PROXY,         /* "proxy": the object served from the store */
    HANDLER_KIND_BACKEND,       /* "backend": FastCGI */
    HANDLER_KIND_COUNT,
};

/** Say which handler answers the current request (the last call wins; it is
 * reset for each request). A plain store, no atomics: call it from the
 * handler, worker thread. */
void conn_set_handler(struct conn *c, enum handler_kind kind);

/** Close the connection after this response (framing in doubt, or asked for). */
void conn_set_close(struct conn *c);

/** Mark the current request as exempt from maintenance (it does not count for
 * `ferry down --drain`). Worker thread. */
void conn_mark_exempt(struct conn *c);

/** Count a maintenance response or a bypass in the worker's counters. */
void conn_count_maint_served(struct conn *c);
void conn_count_maint_bypassed(struct conn *c);

/* ---- answering later (h2o's generator) ---- */

/** A producer: the upstream side of a deferred response. arg is the pointer
 * given to conn_defer(); the producer owns it. Callbacks run on the worker
 * thread. */
struct conn_producer {
    /** The response queue drained to its low-water mark after the producer had
     * filled it (conn_body_wants_more() was false): produce more. May be NULL
     * for producers that answer with one complete response. */
    void (*proceed)(struct conn *c, void *arg);
    /** The client went away, a timeout passed (wait or request body), the
     * request body was malformed, or the server is closing connections at
     * shutdown_timeout: abort the upstream and release what belongs to arg.
     * Called at most once, and never after the response is complete
     * (conn_body_end() or a conn_respond_body/file/simple). The connection
     * may be answering or freed right after: do not use c after stop returns,
     * and do not call conn_* functions from inside stop. */
    void (*stop)(struct conn *c, void *arg);
};

/** Reading a request body (conn_body_read()). */
struct conn_body_sink {
    /** Body data (decoded: no chunk framing). Return how many bytes were
     * taken (<= len); taking fewer pauses reading until conn_body_resume(),
     * and the rest is offered again then. p is valid during the call only. */
    size_t (*data)(struct conn *c, void *arg, const char *p, size_t len);
    /** The whole body has been delivered. */
    void (*end)(struct conn *c, void *arg);
};

/**
 * Answer later: the connection copies the request (conn_request() stays valid
 * until the response is complete), stops reading from the client (a client
 * that hangs up calls p->stop), and arms timeout_ms: if no response has
 * started by then, p->stop runs and the client gets 504. While a streamed
 * body is being produced, the same timeout applies between appends, except
 * while the queue is full (the producer then waits for proceed(), and the
 * client has send_timeout). While the client sends its request body
 * (conn_body_read()) the timeout is paused too (the client has
 * body_timeout between reads); it runs while the sink is full and again
 * from the body's end. p and arg must stay valid until the response is
 * complete or stop has run.
 * A producer whose response was not started (no conn_respond_start()) may
 * call it again to hand the connection over to another producer (the FastCGI
 * client to the store proxy, for an X-Accel-Redirect): p and arg replace the
 * old producer, which gets no stop() and is released by its owner, the
 * caller; timeout_ms runs afresh; a request body the old producer was reading
 * is no longer delivered (its sink is dropped) and the connection closes
 * after the response unless the body was complete.
 * Returns HANDLER_LATER, for the handler to return. Worker thread, from a
 * handler, or from the current producer's own callbacks for a handover.
 */
int conn_defer(struct conn *c, const struct conn_producer *p, void *arg, uint64_t timeout_ms);

/** The request being answered: the handler's argument during the handler
 * call, the connection's own copy after conn_defer(). Worker thread. */
const struct http_request *conn_request(const struct conn *c);

/**
 * Deliver the request body to sink (Content-Length or chunked, limited by
 * max_body_size and body_timeout between reads). Sends "100 Continue" first
 * when the client asked for it. A deferred handler calls it at most once,
 * after conn_defer(). A malformed body (400), one over max_body_size (413)
 * or a client that stops sending (408) ends in p->stop and that error
 * response if no response was started, else in closing the connection.
 * Returns 0, or -EINVAL when the request has no body (sink->end runs at once
 * in that case too, so callers need no special case). Worker thread.
 */
int conn_body_read(struct conn *c, const struct conn_body_sink *sink);

/** Resume a body read paused by a short sink->data. Worker thread. */
void conn_body_resume(struct conn *c);

/** Finish the head for a streamed body: content_length >= 0 sends that
 * Content-Length and the appends must add up to it exactly; -1 (unknown)
 * sends Transfer-Encoding: chunked to HTTP/1.1 clients and a close-delimited
 * body to HTTP/1.0 ones. Call after conn_respond_start() and the headers.
 * Returns 0. */
int conn_respond_stream(struct conn *c, int64_t content_length);

/** Append body bytes to a streamed response: copied (conn_body_append),
 * referenced until release(arg) (conn_body_append_ref), or a file range whose
 * fd the queue takes in every case (conn_body_append_file). HEAD responses
 * discard the bytes. Return 0, -ENOBUFS when the queue's memory limit is
 * reached (nothing appended: wait for proceed()), -EINVAL past a declared
 * Content-Length or after conn_body_end(). */
int conn_body_append(struct conn *c, const void *p, size_t len);
int conn_body_append_ref(struct conn *c, const void *p, size_t len, void (*release)(void *),
                         void *arg);
int conn_body_append_file(struct conn *c, int fd, off_t offset, off_t len);

/** Whether the producer may append more now (the queue is below its
 * high-water mark). When false, wait for proceed(). */
bool conn_body_wants_more(const struct conn *c);

/** The streamed body is complete. The producer is detached: no callback runs
 * any more. A declared Content-Length not reached closes the connection
 * after what was queued (the client sees a short body). Returns 0. */
int conn_body_end(struct conn *c);

/** The upstream failed. Before the head is finished (nothing sent yet, even
 * after conn_respond_start()) the client gets a 502; after it, there is no
 * way to tell the client but to close the connection once what is queued is
 * out (chunked bodies are left unterminated, so the client sees the
 * failure). Either way the connection closes after it. Detaches the
 * producer. */
void conn_respond_abort(struct conn *c);

#endif
