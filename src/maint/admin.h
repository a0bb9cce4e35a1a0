/* The admin socket: a unix stream socket (mode 0600) carrying a small line
 * protocol. A request is one line of ASCII:
 *
 *     COMMAND [KEY=VALUE ...]\n
 *
 * COMMAND and KEY are [a-z0-9_-]; VALUE is printable ASCII without spaces,
 * with any other byte percent-encoded (%XX). Every request gets exactly one
 * reply line, a JSON object: {"ok":true,...} or {"ok":false,"error":"..."}.
 * Commands are registered by the features that own them (maintenance: down,
 * up; later offload and swap), and `status` gathers sections from each. */
#ifndef FERRY_MAINT_ADMIN_H
#define FERRY_MAINT_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

struct buf;
struct server;

#define ADMIN_LINE_MAX 16384 /* longest request line, newline included */
#define ADMIN_MAX_ARGS 16
#define ADMIN_MAX_CLIENTS 64
#define ADMIN_IDLE_MS 30000   /* a client that sends nothing for this long is dropped */
#define ADMIN_REPLY_MAX 65536 /* longest reply line */

struct admin_str {
    const char *p;
    size_t len;
};

struct admin_request {
    struct admin_str command;
    struct {
        struct admin_str key;
        struct admin_str value; /* still percent-encoded */
    } args[ADMIN_MAX_ARGS];
    size_t nargs;
};

/**
 * Parse one request line from (buf, len), picohttpparser style: returns the
 * bytes consumed through the newline, -2 when no newline has arrived yet (the
 * caller enforces ADMIN_LINE_MAX), -1 when the line is malformed. A CR before
 * the LF is allowed. Views point into buf. Any thread; no allocation.
 */
int admin_parse_line(const char *buf, size_t len, struct admin_request *req);

/** The raw value of argument key, or NULL when absent. */
const struct admin_str *admin_request_arg(const struct admin_request *req, const char *key);

/**
 * Percent-decode v into out (outlen bytes, NUL-terminated). Returns the decoded
 * length, or -1 when the encoding is invalid or does not fit.
 */
int admin_decode_value(const struct admin_str *v, char *out, size_t outlen);

/** Append (p, n) to b percent-encoded so it is a valid VALUE. Returns 0 or -ENOBUFS. */
int admin_encode_value(struct buf *b, const char *p, size_t n);

/** Write {"ok":false,"error":MESSAGE} into reply (which is reset first). */
void admin_reply_error(struct buf *reply, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/**
 * Create the listening socket at path: refuses when a server answers there
 * (-EADDRINUSE), removes a stale socket file nobody listens on, refuses to
 * replace anything that is not a socket (-EEXIST), creates a missing parent
 * directory (mode 0700). The socket is mode 0600, non-blocking, close-on-exec.
 * Returns the fd or -errno with a message in err. Supervisor thread.
 */
int admin_listen(const char *path, char *err, size_t errlen);

/* ---- the server side ---- */

struct admin;
struct admin_client;

/* A command handler returns 0 after writing its reply object into reply, or
 * ADMIN_REPLY_LATER after admin_client_hold(c) to answer later with
 * admin_client_reply(). Supervisor thread. */
#define ADMIN_REPLY_LATER 1
typedef int (*admin_cmd_fn)(struct admin_client *c, const struct admin_request *req,
                            struct buf *reply, void *arg);

/* A status section appends members ("key":value,... without braces) to json
 * and human-readable lines to text. Supervisor thread. */
typedef void (*admin_status_fn)(struct buf *json, struct buf *text, void *arg);

/**
 * Open the admin socket at path and watch it in s's supervisor loop. Built in
 * commands: `status` (every registered section) and `ping`. Returns NULL with a
 * message in err on failure. Supervisor thread, before or during server_run().
 */
struct admin *admin_create(struct server *s, const char *path, char *err, size_t errlen);

/** Close every client and the listener and remove the socket file. NULL-safe. */
void admin_destroy(struct admin *a);

/** Register a command (name is copied). Returns 0 or -EEXIST. */
int admin_register(struct admin *a, const char *name, admin_cmd_fn fn, void *arg);

/** Register a status section under name (copied); sections appear in order. */
int admin_register_status(struct admin *a, const char *name, admin_status_fn fn, void *arg);

/** Keep c for a deferred reply (one hold at a time). */
void admin_client_hold(struct admin_client *c);
/** Send the deferred reply (a JSON object without the newline) and drop the
 * hold. A client that went away meanwhile just drops the hold. */
void admin_client_reply(struct admin_client *c, const char *json, size_t len);

/* ---- the client side (the CLI) ---- */

/**
 * Connect to the admin socket at path, send line (without newline), and read
 * one reply line into reply (without the newline), waiting at most timeout_ms
 * (-1: no limit). Returns 0, or -errno with a message for the operator in err:
 * no server running, socket not accessible, timeout, reply too long.
 */
int admin_call(const char *path, const char *line, struct buf *reply, int timeout_ms, char *err,
               size_t errlen);

#endif
