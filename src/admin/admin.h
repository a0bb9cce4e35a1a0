/* The admin socket: a unix stream socket (mode 0600) carrying a small line
 * protocol, served on one event loop, with a registry of commands and status
 * sections that each component (server, maintenance, offloader, backend) fills.
 *
 * A request is one line of ASCII:
 *
 *     COMMAND [KEY=VALUE ...]\n
 *
 * COMMAND and KEY are [a-z0-9_-]; VALUE is printable ASCII without spaces,
 * with any other byte percent-encoded (%XX). Every request gets exactly one
 * reply line, a JSON object built with jansson: {"ok":true,...} or
 * {"ok":false,"error":"..."}. A reply that cannot be built (a member that
 * failed to add, text that is not UTF-8, a reply past ADMIN_REPLY_MAX) is sent
 * as an error reply, never as malformed JSON.
 *
 * Built-in commands: `ping`, and `status`, which gathers every registered
 * section (the admin socket's own, "admin", comes last).
 *
 * Clients are bounded in time and number (issue 15): a client must send a
 * complete command line within the command deadline (counted from the
 * connection, then from the first byte of each later command), a client idle
 * between commands is closed after the idle timeout, and when all slots are
 * taken the client idle longest is dropped to serve the newcomer. A client
 * whose command is in progress (held for a deferred reply) is never dropped.
 * A dropped client is told why in an error reply line, best effort. */
#ifndef FERRY_ADMIN_ADMIN_H
#define FERRY_ADMIN_ADMIN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;
struct evloop;

#define ADMIN_LINE_MAX 16384 /* longest request line, newline included */
#define ADMIN_MAX_ARGS 16
#define ADMIN_MAX_CLIENTS 64  /* client slots; the idlest is dropped past this */
#define ADMIN_TIMEOUT_MS 5000 /* default command deadline ([server] admin_timeout) */
#define ADMIN_IDLE_MS 30000   /* a client idle between commands this long is closed */
#define ADMIN_REPLY_MAX 65536 /* longest reply line, newline included */
#define ADMIN_TEXT_MAX 32768  /* longest human-readable status text */

/* ---- the protocol (any thread, no allocation) ---- */

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

/** The raw value of argument key, or NULL when absent (the first one wins). */
const struct admin_str *admin_request_arg(const struct admin_request *req, const char *key);

/**
 * Percent-decode v into out (outlen bytes, NUL-terminated). Returns the decoded
 * length, or -1 when the encoding is invalid or does not fit. Any thread.
 */
int admin_decode_value(const struct admin_str *v, char *out, size_t outlen);

/** Append (p, n) to b percent-encoded so it is a valid VALUE. Returns 0 or
 * -ENOBUFS. Any thread. */
int admin_encode_value(struct buf *b, const char *p, size_t n);

/* ---- building replies (jansson) ---- */

/**
 * Make reply {"ok":false,"error":MESSAGE}: every member reply had is removed
 * first. A message that is not UTF-8 is replaced by a fixed one. reply stays
 * the caller's. Returns 0, so that a command handler may end with
 * `return admin_reply_error(reply, ...)`. Any thread.
 */
int admin_reply_error(json_t *reply, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * Add every member of members to obj. Takes the reference to members (also on
 * failure), which may be NULL: json_pack() returns NULL when a string is not
 * UTF-8 or memory runs out, and then this fails instead of losing a member
 * silently. obj stays the caller's. Returns 0 or -EINVAL. Any thread.
 */
int admin_json_add(json_t *obj, json_t *members);

/**
 * Serialise reply as one reply line (compact JSON and "\n") into out, which is
 * reset first and must have a maximum of at least ADMIN_REPLY_MAX. A reply that cannot be
 * serialised or does not fit ADMIN_REPLY_MAX becomes an error reply line instead. Does not take
 * reply. Any thread.
 */
void admin_reply_format(const json_t *reply, struct buf *out);

/* ---- the server side (the loop's thread) ---- */

struct admin;
struct admin_client;

/**
 * A command handler. reply is an empty object owned by the admin module, lent
 * for the call: add members to it (admin_json_add(), json_object_set_new()).
 * req's views point into the client's input and are valid for the call only.
 * Returns:
 *   0                   send reply; "ok":true is added unless reply has "ok"
 *                       (admin_reply_error() sets it to false);
 *   ADMIN_REPLY_LATER   after admin_client_hold(c): reply is discarded and the
 *                       answer goes out with admin_client_reply() later;
 *   -errno              the reply could not be built: an error reply naming the
 *                       command and the errno is sent instead.
 * Runs on the admin's loop thread.
 */
#define ADMIN_REPLY_LATER 1
typedef int (*admin_cmd_fn)(struct admin_client *c, const struct admin_request *req, json_t *reply,
                            void *arg);

/**
 * A status section. section is an empty object owned by the admin module, lent
 * for the call; it becomes the member named after the section in the status
 * reply. text (bounded by ADMIN_TEXT_MAX, shared by every section) takes the
 * section's human-readable lines, each ending in "\n". Returns 0, or -errno
 * when a member or a line could not be added: the status reply is then an error
 * reply naming the section. Runs on the admin's loop thread.
 */
typedef int (*admin_status_fn)(json_t *section, struct buf *text, void *arg);

/** Clients dropped, by reason, since admin_create(). */
struct admin_stats {
    uint64_t clients;          /* connected now */
    uint64_t accepted;         /* connections accepted */
    uint64_t dropped_deadline; /* no complete command line within the deadline */
    uint64_t dropped_idle;     /* idle between commands for the idle timeout */
    uint64_t evicted;          /* idlest client dropped to serve a newcomer */
    uint64_t refused;          /* newcomer refused: every slot had a command in progress */
    uint64_t accept_paused;    /* accept() paused for lack of fds (EMFILE and such) */
};

/**
 * Open the admin socket at path (see admin_listen()) and serve it on loop.
 * Built-in commands: `status` and `ping`; built-in status section "admin"
 * (client counters). Returns NULL with a message in err on failure. Must be
 * called on the loop's thread (or before it runs); every other admin_*
 * server-side function runs on that thread too. loop must outlive the admin.
 */
struct admin *admin_create(struct evloop *loop, const char *path, char *err, size_t errlen);

/**
 * Close every client and the listener and remove the socket file. A client
 * still held is closed too; its holder must still call admin_client_reply()
 * (which then only releases it), so destroy the holders' components first or
 * let them answer. NULL-safe. Loop thread, loop not necessarily running.
 */
void admin_destroy(struct admin *a);

/** Set the command deadline and the idle timeout (ms, 0: keep the current
 * value) and the number of client slots (0: keep). Affects later arming. */
void admin_set_limits(struct admin *a, uint64_t timeout_ms, uint64_t idle_ms, size_t max_clients);

/** Register command name (copied) served by fn(c, req, reply, arg); arg stays
 * the caller's and must outlive the admin or be unregistered by destroying
 * the admin first. Returns 0 or -EEXIST (also for the built-in names). */
int admin_register(struct admin *a, const char *name, admin_cmd_fn fn, void *arg);

/** Register status section name (copied); sections appear in registration
 * order, before "admin". Returns 0 or -EEXIST. */
int admin_register_status(struct admin *a, const char *name, admin_status_fn fn, void *arg);

/**
 * A hook run after every status section's own function (the built-in
 * "admin" included), with the section's name, object and the shared text:
 * the metrics registry adds each component's metrics this way
 * (metrics_attach_admin()). Same returns as admin_status_fn.
 */
typedef int (*admin_status_hook_fn)(const char *name, json_t *section, struct buf *text, void *arg);

/** Install the status hook (NULL: none); arg stays the caller's and must
 * outlive the admin. One hook at a time. The admin's loop thread. */
void admin_set_status_hook(struct admin *a, admin_status_hook_fn fn, void *arg);

/** Counters of the clients (see struct admin_stats). */
void admin_get_stats(const struct admin *a, struct admin_stats *out);

/**
 * Keep c for a deferred reply, from inside its command handler (which then
 * returns ADMIN_REPLY_LATER). One hold at a time. The holder owns a reference
 * to c until admin_client_reply(): c's memory stays valid even if the client
 * hangs up or the admin is destroyed meanwhile. A held client is neither timed
 * out nor evicted, and its further request lines wait for the reply.
 */
void admin_client_hold(struct admin_client *c);

/**
 * Send the deferred reply and release the hold (and the holder's reference:
 * c must not be used afterwards). Takes the reference to reply, which may be
 * NULL (an error reply is sent). "ok":true is added unless reply has "ok". A
 * client that went away meanwhile just has its hold released.
 */
void admin_client_reply(struct admin_client *c, json_t *reply);

/* ---- the client side (the CLI; any thread) ---- */

/**
 * Create the listening socket at path: refuses when a server answers there
 * (-EADDRINUSE), removes a stale socket file nobody listens on, refuses to
 * replace anything that is not a socket (-EEXIST), creates a missing parent
 * directory (mode 0700). The socket is mode 0600, non-blocking, close-on-exec.
 * Returns the fd (the caller's) or -errno with a message in err.
 */
int admin_listen(const char *path, char *err, size_t errlen);

/**
 * Connect to the admin socket at path, send line (without newline), and read
 * one reply line into reply (without the newline), within timeout_ms overall
 * (-1: no limit). Returns 0, or -errno with a message for the operator in err
 * naming the cause: no server running, socket not accessible, "the admin
 * socket is full" (the server is not accepting), "the server did not answer
 * within N s", closed without a reply, reply too long.
 */
int admin_call(const char *path, const char *line, struct buf *reply, int timeout_ms, char *err,
               size_t errlen);

#endif
