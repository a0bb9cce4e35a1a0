/* Answering a request from a handler (worker thread). A response is a queue of
 * memory chunks and file chunks written with writev and sendfile. */
#ifndef FERRY_HTTP_RESPONSE_H
#define FERRY_HTTP_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

struct conn;
struct ferry_state;

/** The state snapshot this connection's worker sees now. Worker thread. */
const struct ferry_state *conn_state(const struct conn *c);

/** The client's address. */
const struct sockaddr *conn_peer(const struct conn *c);

/** Start a response: status line, Date, Server. Worker thread. */
void conn_respond_start(struct conn *c, int status);

/** Add a header line; value is copied. The server adds Date, Server,
 * Content-Length and Connection itself. */
void conn_respond_header(struct conn *c, const char *name, const char *value);

/** Add pre-formatted header lines ("Name: value\r\n"...), copied. */
void conn_respond_headers_raw(struct conn *c, const char *p, size_t len);

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

/** Close the connection after this response (framing in doubt, or asked for). */
void conn_set_close(struct conn *c);

/** Mark the current request as exempt from maintenance (it does not count for
 * `ferry down --drain`). Worker thread. */
void conn_mark_exempt(struct conn *c);

/** Count a maintenance response or a bypass in the worker's counters. */
void conn_count_maint_served(struct conn *c);
void conn_count_maint_bypassed(struct conn *c);

#endif
