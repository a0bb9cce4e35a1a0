/* Maintenance mode: the immutable snapshot that workers read, how a request is
 * answered from it (Accept negotiation, the 503 bodies), exemptions (path
 * prefixes, client networks, a signed bypass cookie) and the persisted state.
 * Everything here is pure or works on caller-provided data; the wiring into
 * the server and the admin socket is in maint_ctl.c. */
#ifndef FERRY_MAINT_MAINT_H
#define FERRY_MAINT_MAINT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/net.h"

struct buf;
struct ferry_conf;

/* Name of the bypass cookie `ferry down` prints. */
#define MAINT_COOKIE_NAME "ferry_bypass"
/* Largest maintenance page accepted. */
#define MAINT_PAGE_MAX (1024 * 1024)
/* Longest --message accepted. */
#define MAINT_MESSAGE_MAX 4096
/* The message used when `ferry down` gives none. */
#define MAINT_DEFAULT_MESSAGE "This site is down for maintenance."

enum maint_format { MAINT_HTML = 0, MAINT_JSON, MAINT_PLAIN, MAINT_FORMAT_COUNT };

enum maint_mode { MAINT_OFF = 0, MAINT_ON, MAINT_SCHEDULED };

/* What is exempt from maintenance: fixed for the server's life (from the
 * configuration). Caller-owned; maint_policy_init()/maint_policy_finish(). */
struct maint_policy {
    char **allow_paths; /* copied prefixes, allow_paths[n_paths] == NULL */
    size_t n_paths;
    struct net_cidr *allow_from;
    size_t n_cidrs;
    char *secret; /* bypass_secret, NULL when unset */
    size_t secret_len;
};

/* A maintenance window as `ferry down` asked for it, and as it is persisted.
 * Times are wall-clock milliseconds since the epoch; 0 means unset. */
struct maint_window {
    int mode; /* enum maint_mode */
    int64_t since_ms;
    int64_t at_ms;    /* scheduled start (mode SCHEDULED) */
    int64_t until_ms; /* switches itself off then; Retry-After becomes this date */
    uint64_t retry_after_s;
    char *message; /* never NULL once set up; owned */
    char *page;    /* the page template as read at `ferry down`; owned, may be NULL */
    size_t page_len;
};

/* One rendered variant of the 503 response. */
struct maint_body {
    char *data;
    size_t len;
    const char *content_type;
};

/* The snapshot workers read through conn_state(c)->maint: immutable once
 * published, freed when the last reference goes (the server's and those of
 * responses still being written). */
struct maint_snapshot {
    atomic_uint refs;
    const struct maint_policy *policy; /* outlives every snapshot */
    struct maint_body body[MAINT_FORMAT_COUNT];
    char retry_after[40]; /* Retry-After header value */
};

/* The outcome of maint_decide() for one request. */
enum maint_verdict {
    MAINT_ANSWER = 0,    /* answer with the 503 */
    MAINT_EXEMPT_PATH,   /* allow_paths prefix */
    MAINT_EXEMPT_FROM,   /* allow_from network */
    MAINT_EXEMPT_COOKIE, /* valid bypass cookie */
};

/** Fill p from conf's [maintenance] section (copies everything). Returns 0 or
 * -EINVAL with a message in err (a CIDR that does not parse). */
int maint_policy_init(struct maint_policy *p, const struct ferry_conf *conf, char *err,
                      size_t errlen);
/** Free what maint_policy_init() allocated. NULL-safe. */
void maint_policy_finish(struct maint_policy *p);

/**
 * Decide whether a request is exempt. path is the raw request path (no query),
 * cookie the Cookie header value (p may be NULL), now_s the wall clock.
 * allow_paths match whole decoded segments: "/healthz" exempts "/healthz",
 * "/healthz/" and "/healthz/x" (also written "/%68ealthz/x"), never
 * "/healthzX"; a path that is not normalised once decoded ("//", "." or ".."
 * segments, a bad escape, a NUL) is never exempt by path.
 * Any thread; no allocation.
 */
enum maint_verdict maint_decide(const struct maint_policy *p, const char *path, size_t path_len,
                                const struct sockaddr *peer, const char *cookie, size_t cookie_len,
                                int64_t now_s);

/**
 * Pick the response format for an Accept header value ((NULL, 0) when absent):
 * the highest q among text/html, application/json and text/plain, a more
 * specific range winning over a wildcard, ties going to HTML, then JSON, then
 * plain text. HTML when nothing matches (a 503 is never turned into a 406).
 * Any thread; no allocation.
 */
enum maint_format maint_negotiate(const char *accept, size_t len);

/**
 * Render the body for one format into out (which the caller initialised):
 * HTML fills {{message}} (HTML-escaped) and {{retry_after}} into the page
 * template (tpl may be NULL: a built-in page); JSON is
 * {"status":"maintenance","message":...,"retry_after":...} with retry_after a
 * number of seconds, or the HTTP-date string when retry_is_date; plain text is
 * the message and a newline. Returns 0 or -ENOBUFS.
 */
int maint_render(struct buf *out, enum maint_format fmt, const char *tpl, size_t tpl_len,
                 const char *message, const char *retry_after, bool retry_is_date);

/** Append s HTML-escaped (& < > " ') to out. Returns 0 or -ENOBUFS. */
int maint_html_escape(struct buf *out, const char *s, size_t n);

/**
 * Build a snapshot for w (mode ON) under policy: renders the three bodies and
 * the Retry-After value. Returns it with one reference (the caller's).
 * Supervisor thread.
 */
struct maint_snapshot *maint_snapshot_create(const struct maint_policy *policy,
                                             const struct maint_window *w);
/** Take a reference. Any thread. */
void maint_snapshot_ref(struct maint_snapshot *s);
/** Drop a reference; the last one frees it. NULL-safe. Any thread. */
void maint_snapshot_unref(struct maint_snapshot *s);

/**
 * Write the bypass cookie value for expiry time expires_s into out (at least
 * MAINT_COOKIE_VALUE_MAX bytes): "EXPIRES.HEX(HMAC-SHA256(secret, "ferry-bypass:" EXPIRES))".
 * Returns 0 or -EIO when OpenSSL fails.
 */
#define MAINT_COOKIE_VALUE_MAX 96
int maint_cookie_sign(const char *secret, size_t secret_len, int64_t expires_s, char *out,
                      size_t outlen);

/** Is value (value_len bytes) a well-formed cookie value signed with secret that
 * has not expired at now_s? Constant-time MAC comparison. Any thread. */
bool maint_cookie_verify(const char *secret, size_t secret_len, const char *value, size_t value_len,
                         int64_t now_s);

/** Find the bypass cookie in a Cookie header value; writes its value's span.
 * Returns true when present. */
bool maint_cookie_find(const char *cookie, size_t len, const char **val, size_t *vlen);

/** Free what a window owns and zero it. NULL-safe. */
void maint_window_finish(struct maint_window *w);

/**
 * Make sure the state directory dir exists before the server starts, so that
 * `ferry down` can save its state when it is needed: create it and any
 * missing parents with mode 0700 (fsynced, see common/fsdir.h); an existing
 * directory is left as it is. Returns 0, or -errno with a message naming dir
 * in err. Supervisor thread, at startup.
 */
int maint_state_dir_prepare(const char *dir, char *err, size_t errlen);

/**
 * Save w atomically as dir/maintenance.state (temporary file, fsync, rename,
 * fsync of the directory). Returns 0 or -errno. Supervisor thread.
 */
int maint_state_save(const char *dir, const struct maint_window *w);

/**
 * Load dir/maintenance.state into w (zeroed by the caller). Returns 0, -ENOENT
 * when there is none, -EINVAL when it is corrupt, or -errno.
 */
int maint_state_load(const char *dir, struct maint_window *w);

/** Read a page file (at most MAINT_PAGE_MAX bytes) into out and len (owned by the
 * caller, NUL-terminated). Returns 0, -EFBIG or -errno. */
int maint_page_read(const char *path, char **out, size_t *len);

/** Wall-clock time in milliseconds since the epoch (CLOCK_REALTIME). Any thread. */
int64_t maint_now_ms(void);

/**
 * Parse a --at/--until TIME relative to now_ms (wall clock, ms): "+DURATION" or
 * a bare DURATION ("+90s", "1500ms", "2h"), "@EPOCH" seconds,
 * "YYYY-MM-DDTHH:MM[:SS]" (local time; UTC with a trailing Z), or "HH:MM[:SS]"
 * (the next such local time). Writes epoch milliseconds. Returns 0 or -EINVAL.
 */
int maint_parse_time(const char *s, int64_t now_ms, int64_t *out_ms);

/* ---- wiring into a running server (maint_ctl.c; supervisor thread) ---- */

struct server;
struct admin;
struct maint_ctl;

/**
 * Attach maintenance mode to server s: installs the HANDLER_SLOT_MAINT
 * handler, registers the `down` and `up` commands and the `maintenance` status
 * section with admin, restores the state persisted under
 * conf->server.state_dir (publishing it, re-arming --at/--until timers).
 * conf must outlive the result. Returns NULL with a message in err on failure.
 * Call after server_create() and admin_create(), before server_run().
 */
struct maint_ctl *maint_attach(struct server *s, struct admin *admin, const struct ferry_conf *conf,
                               char *err, size_t errlen);

struct metrics;

/** Register the "maintenance" metric families (mode, responses served,
 * bypassed) of m with reg. m must outlive every rendering of reg. Returns as
 * metrics_register(). Supervisor thread, at startup. */
int maint_register_metrics(struct maint_ctl *m, struct metrics *reg);

/** Free what maint_attach() set up, after server_run() returned and before
 * admin_destroy() and server_destroy(). NULL-safe. */
void maint_detach(struct maint_ctl *m);

#endif
