/* Maintenance mode wired into the server: the request handler (worker
 * threads), and the `down`/`up` commands, timers and drain (supervisor thread). */
#include "maint/maint.h"

#include "admin/admin.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/conf.h"
#include "common/evloop.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "http/parser.h"
#include "http/response.h"
#include "http/server.h"
#include "metrics/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

struct maint_ctl {
    struct server *s;
    struct admin *admin;
    const struct ferry_conf *conf;
    struct maint_policy policy;
    struct maint_window win;                   /* what is in force or scheduled */
    struct evloop_timer at_timer, until_timer; /* on the supervisor's loop */
    /* A `down --drain` waiting for in-flight requests to finish. */
    struct admin_client *drain_client;
    struct evloop_timer drain_timer;
    uint64_t drain_started_ms;
    json_t *drain_reply; /* the reply so far (owned here until sent) */
    _Atomic bool on;     /* the published state is "on": for the metrics collector */
};

static void format_iso(int64_t ms, char *out, size_t outlen)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- worker side ---- */

static void release_snapshot(void *arg)
{
    maint_snapshot_unref(arg);
}

/* server_publish() timed out: the state is installed, a worker is late. */
#define UNCONFIRMED_SWITCH                                                                         \
    "the switch is made, but a worker did not confirm it within 10 s; requests it is "             \
    "already handling may still see the previous state"

static void release_state(const void *maint)
{
    maint_snapshot_unref((struct maint_snapshot *)(uintptr_t)maint);
}

static int maint_handle_request(struct conn *c, const struct http_request *req, void *arg)
{
    struct maint_ctl *m = arg;
    const struct ferry_state *st = conn_state(c);
    if (!st || !st->part[STATE_MAINT]) {
        /* Mark exempt paths and networks even while up, so that a `down --drain`
         * that follows does not wait for health checks already in flight. */
        if (m->policy.n_paths + m->policy.n_cidrs &&
            maint_decide(&m->policy, req->path.p, req->path.len, conn_peer(c), NULL, 0, 0) !=
                MAINT_ANSWER)
            conn_mark_exempt(c);
        return HANDLER_PASS;
    }
    /* Workers only read the snapshot; the reference count is its one mutable field. */
    struct maint_snapshot *snap = (struct maint_snapshot *)(uintptr_t)st->part[STATE_MAINT];
    int64_t now_s = req->cookie.p ? (int64_t)time(NULL) : 0;
    enum maint_verdict v = maint_decide(snap->policy, req->path.p, req->path.len, conn_peer(c),
                                        req->cookie.p, req->cookie.len, now_s);
    if (v != MAINT_ANSWER) {
        conn_mark_exempt(c);
        conn_count_maint_bypassed(c);
        return HANDLER_PASS;
    }
    const struct maint_body *body = &snap->body[maint_negotiate(req->accept.p, req->accept.len)];
    conn_respond_start(c, 503);
    conn_respond_header(c, "Content-Type", body->content_type);
    conn_respond_header(c, "Retry-After", snap->retry_after);
    conn_respond_header(c, "X-Maintenance-Mode", "1");
    conn_respond_header(c, "Cache-Control", "no-store");
    conn_respond_header(c, "Vary", "Accept");
    /* The body of a request we answer without reading is not worth draining. */
    if (req->content_length > 0 || req->chunked)
        conn_set_close(c);
    maint_snapshot_ref(snap);
    conn_respond_body(c, body->data, body->len, release_snapshot, snap);
    conn_set_handler(c, HANDLER_KIND_MAINTENANCE);
    conn_count_maint_served(c);
    return HANDLER_DONE;
}

/* ---- supervisor side ---- */

static void arm_timers(struct maint_ctl *m);

static void cancel_timers(struct maint_ctl *m)
{
    evloop_timer_stop(server_loop(m->s), &m->at_timer);
    evloop_timer_stop(server_loop(m->s), &m->until_timer);
}

/* Publish the snapshot for the current window (NULL when off); returns once
 * every worker has switched. The snapshot belongs to the server from the call
 * on; -ETIMEDOUT means it is installed but a worker has not confirmed it. */
static int publish_window(struct maint_ctl *m)
{
    const struct maint_snapshot *snap = NULL;
    if (m->win.mode == MAINT_ON)
        snap = maint_snapshot_create(&m->policy, &m->win);
    atomic_store_explicit(&m->on, snap != NULL, memory_order_relaxed);
    return server_publish(m->s, STATE_MAINT, snap);
}

/* Requests in flight that are not exempt from maintenance, across workers. */
static uint64_t nonexempt_inflight(struct maint_ctl *m)
{
    struct server_stats st;
    server_get_stats(m->s, &st);
    return st.requests_inflight > st.requests_inflight_exempt
               ? st.requests_inflight - st.requests_inflight_exempt
               : 0;
}

/* Add the drain outcome to a down reply. Returns 0 or -EINVAL. */
static int drain_append(struct maint_ctl *m, json_t *reply, bool drained, const char *why)
{
    uint64_t left = nonexempt_inflight(m);
    uint64_t waited = time_mono_ms() - m->drain_started_ms;
    char text[256];
    if (drained)
        snprintf(text, sizeof(text), "drained: no request in flight (waited %" PRIu64 " ms)\n",
                 waited);
    else
        snprintf(text, sizeof(text),
                 "NOT drained: %" PRIu64 " request(s) still in flight after %" PRIu64 " ms (%s)\n",
                 left, waited, why);
    return admin_json_add(reply, json_pack("{s:{s:b, s:I, s:I}, s:s}", "drain", "drained", drained,
                                           "waited_ms", (json_int_t)waited, "inflight",
                                           (json_int_t)(drained ? 0 : left), "text_drain", text));
}

/* Answer a waiting `down --drain`. */
static void drain_finish(struct maint_ctl *m, bool drained, const char *why)
{
    if (!m->drain_client)
        return;
    server_on_idle(m->s, NULL, NULL);
    evloop_timer_stop(server_loop(m->s), &m->drain_timer);
    json_t *reply = m->drain_reply;
    m->drain_reply = NULL;
    if (drain_append(m, reply, drained, why) < 0)
        admin_reply_error(reply, "down: the drain outcome could not be added to the reply");
    struct admin_client *c = m->drain_client;
    m->drain_client = NULL;
    admin_client_reply(c, reply);
}

static void drain_check(struct server *s, void *arg)
{
    struct maint_ctl *m = arg;
    if (nonexempt_inflight(m) == 0)
        drain_finish(m, true, NULL);
}

static void drain_timeout(struct evloop *l, void *arg)
{
    struct maint_ctl *m = arg;
    /* The last request may have ended just now. */
    drain_finish(m, nonexempt_inflight(m) == 0, "drain_timeout reached");
}

static void switch_off(struct maint_ctl *m)
{
    cancel_timers(m);
    maint_window_finish(&m->win);
    m->win.message = xstrdup("");
}

static void on_until(struct evloop *l, void *arg)
{
    struct maint_ctl *m = arg;
    cancel_timers(m); /* a pending --at, should the clock have jumped */
    struct maint_window saved = m->win;
    memset(&m->win, 0, sizeof(m->win));
    m->win.message = xstrdup("");
    int r = maint_state_save(m->conf->server.state_dir, &m->win);
    if (r < 0)
        log_warn("maintenance: cannot save state in '%s': %s", m->conf->server.state_dir,
                 strerror(-r));
    if (publish_window(m) < 0) {
        log_error("maintenance: cannot publish the end of the maintenance window");
    } else {
        log_info("maintenance: off (the --until time was reached)");
    }
    drain_finish(m, false, "maintenance ended");
    maint_window_finish(&saved);
}

static void on_at(struct evloop *l, void *arg)
{
    struct maint_ctl *m = arg;
    /* Re-read the page at the switch, as `ferry down` would; keep the copy that
     * was checked when the window was scheduled if it has gone missing since. */
    char *page;
    size_t len;
    int r = maint_page_read(m->conf->maintenance.page, &page, &len);
    if (r == 0) {
        free(m->win.page);
        m->win.page = page;
        m->win.page_len = len;
    } else {
        log_warn("maintenance: cannot read page '%s' (%s); using the copy read at `ferry down`",
                 m->conf->maintenance.page, strerror(-r));
    }
    m->win.mode = MAINT_ON;
    m->win.since_ms = maint_now_ms();
    r = maint_state_save(m->conf->server.state_dir, &m->win);
    if (r < 0)
        log_warn("maintenance: cannot save state in '%s': %s", m->conf->server.state_dir,
                 strerror(-r));
    if (publish_window(m) < 0)
        log_error("maintenance: cannot publish the scheduled maintenance window");
    else
        log_info("maintenance: on (scheduled)");
    arm_timers(m);
}

static uint64_t delay_until(int64_t when_ms)
{
    int64_t d = when_ms - maint_now_ms();
    return d > 0 ? (uint64_t)d : 0;
}

static void arm_timers(struct maint_ctl *m)
{
    struct evloop *l = server_loop(m->s);
    if (m->win.mode == MAINT_SCHEDULED && !evloop_timer_active(&m->at_timer))
        evloop_timer_start(l, &m->at_timer, delay_until(m->win.at_ms));
    if (m->win.mode != MAINT_OFF && m->win.until_ms && !evloop_timer_active(&m->until_timer))
        evloop_timer_start(l, &m->until_timer, delay_until(m->win.until_ms));
}

/* Add the window's members to obj. Returns 0 or -EINVAL. */
static int append_window_json(json_t *obj, const struct maint_window *w)
{
    static const char *const modes[] = {"off", "on", "scheduled"};
    int r = admin_json_add(obj, json_pack("{s:s}", "mode", modes[w->mode]));
    if (r < 0 || w->mode == MAINT_OFF)
        return r;
    if (w->mode == MAINT_ON)
        r |= admin_json_add(obj, json_pack("{s:I}", "since", (json_int_t)w->since_ms));
    if (w->at_ms)
        r |= admin_json_add(obj, json_pack("{s:I}", "at", (json_int_t)w->at_ms));
    if (w->until_ms)
        r |= admin_json_add(obj, json_pack("{s:I}", "until", (json_int_t)w->until_ms));
    else
        r |= admin_json_add(obj, json_pack("{s:I}", "retry_after", (json_int_t)w->retry_after_s));
    r |= admin_json_add(obj, json_pack("{s:s}", "message", w->message ? w->message : ""));
    return r < 0 ? -EINVAL : 0;
}

static void append_window_text(struct buf *t, const struct maint_window *w)
{
    char a[32], b[32];
    if (w->mode == MAINT_OFF) {
        buf_append_str(t, "maintenance: off\n");
        return;
    }
    if (w->mode == MAINT_ON) {
        format_iso(w->since_ms, a, sizeof(a));
        buf_printf(t, "maintenance: ON since %s\n", a);
    } else {
        format_iso(w->at_ms, a, sizeof(a));
        buf_printf(t, "maintenance: scheduled for %s\n", a);
    }
    if (w->until_ms) {
        format_iso(w->until_ms, b, sizeof(b));
        buf_printf(t, "until: %s (switches off by itself)\n", b);
    } else {
        buf_printf(t, "retry-after: %" PRIu64 " s\n", w->retry_after_s);
    }
    buf_printf(t, "message: %s\n", w->message && *w->message ? w->message : MAINT_DEFAULT_MESSAGE);
}

static int status_section(json_t *section, struct buf *text, void *arg)
{
    struct maint_ctl *m = arg;
    struct server_stats st;
    server_get_stats(m->s, &st);
    int r = append_window_json(section, &m->win);
    if (r == 0)
        r = admin_json_add(section,
                           json_pack("{s:I, s:I, s:I}", "served", (json_int_t)st.maint_served,
                                     "bypassed", (json_int_t)st.maint_bypassed, "requests_inflight",
                                     (json_int_t)st.requests_inflight));
    append_window_text(text, &m->win);
    if (r == 0)
        r = buf_printf(
            text, "maintenance responses served: %" PRIu64 "\nbypassed requests: %" PRIu64 "\n",
            st.maint_served, st.maint_bypassed);
    return r;
}

/* Decode an integer argument; false when absent. */
static int arg_int(const struct admin_request *req, const char *key, int64_t *out, bool *present)
{
    const struct admin_str *v = admin_request_arg(req, key);
    *present = v != NULL;
    if (!v)
        return 0;
    char tmp[32];
    int n = admin_decode_value(v, tmp, sizeof(tmp));
    /* Digits only: strtoll would also take leading blanks, a sign, or stop at
     * an encoded NUL. */
    if (n <= 0 || strspn(tmp, "0123456789") != (size_t)n)
        return -EINVAL;
    char *end;
    errno = 0;
    long long x = strtoll(tmp, &end, 10);
    if (*end || errno || x < 0)
        return -EINVAL;
    *out = x;
    return 0;
}

static int cmd_down(struct admin_client *c, const struct admin_request *req, json_t *reply,
                    void *arg)
{
    struct maint_ctl *m = arg;
    const struct ferry_conf *conf = m->conf;
    int64_t retry = (int64_t)(conf->maintenance.retry_after_ms / 1000), until = 0, at = 0,
            drain = 0;
    bool has_retry, has_until, has_at, has_drain;
    if (arg_int(req, "retry_after", &retry, &has_retry) < 0)
        goto bad_arg;
    if (arg_int(req, "until", &until, &has_until) < 0)
        goto bad_arg;
    if (arg_int(req, "at", &at, &has_at) < 0)
        goto bad_arg;
    if (arg_int(req, "drain", &drain, &has_drain) < 0)
        goto bad_arg;
    for (size_t i = 0; i < req->nargs; i++) {
        static const char *const known[] = {"retry_after", "until", "at", "drain", "message"};
        bool ok = false;
        for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
            ok |= strlen(known[k]) == req->args[i].key.len &&
                  memcmp(known[k], req->args[i].key.p, req->args[i].key.len) == 0;
        if (!ok) {
            admin_reply_error(reply, "down: unknown argument '%.*s'", (int)req->args[i].key.len,
                              req->args[i].key.p);
            return 0;
        }
    }
    char message[MAINT_MESSAGE_MAX + 1] = "";
    const struct admin_str *mv = admin_request_arg(req, "message");
    int mlen = mv ? admin_decode_value(mv, message, sizeof(message)) : 0;
    if (mlen < 0) {
        admin_reply_error(reply, "down: message too long (at most %d bytes) or badly encoded",
                          MAINT_MESSAGE_MAX);
        return 0;
    }
    if (memchr(message, '\0', (size_t)mlen)) {
        /* It would be cut at the NUL everywhere it is used: refuse it. */
        admin_reply_error(reply, "down: message contains a NUL byte");
        return 0;
    }
    json_t *utf8 = json_stringn(message, (size_t)mlen);
    if (!utf8) {
        /* It goes into JSON replies, the state file and the JSON 503 body. */
        admin_reply_error(reply, "down: message is not UTF-8");
        return 0;
    }
    json_decref(utf8);
    int64_t now = maint_now_ms();
    if (has_until && has_retry) {
        admin_reply_error(reply, "down: give --retry-after or --until, not both");
        return 0;
    }
    if (has_until && until <= now) {
        admin_reply_error(reply, "down: the --until time is in the past");
        return 0;
    }
    if (has_at && has_until && at >= until) {
        admin_reply_error(reply, "down: the --at time is not before the --until time");
        return 0;
    }
    if (has_at && has_drain && at > now) {
        admin_reply_error(reply, "down: --drain cannot wait for a scheduled (--at) window");
        return 0;
    }
    if (m->drain_client) {
        admin_reply_error(reply, "down: another `ferry down --drain` is still waiting");
        return 0;
    }

    /* Read the page first: a missing page is an error that changes nothing. */
    char *page;
    size_t page_len;
    int r = maint_page_read(conf->maintenance.page, &page, &page_len);
    if (r < 0) {
        admin_reply_error(reply, "cannot read maintenance page '%s': %s", conf->maintenance.page,
                          r == -EFBIG ? "larger than 1 MiB" : strerror(-r));
        return 0;
    }

    struct maint_window w = {0};
    w.mode = has_at && at > now ? MAINT_SCHEDULED : MAINT_ON;
    w.since_ms = m->win.mode == MAINT_ON ? m->win.since_ms : now;
    w.at_ms = w.mode == MAINT_SCHEDULED ? at : 0;
    w.until_ms = has_until ? until : 0;
    w.retry_after_s = (uint64_t)retry;
    w.message = xstrdup(message);
    w.page = page;
    w.page_len = page_len;
    if (w.mode == MAINT_SCHEDULED)
        w.since_ms = 0;

    r = maint_state_save(conf->server.state_dir, &w);
    if (r < 0) {
        admin_reply_error(reply, "cannot save maintenance state in '%s': %s",
                          conf->server.state_dir, strerror(-r));
        maint_window_finish(&w);
        return 0;
    }
    struct maint_window old = m->win;
    m->win = w;
    if (w.mode == MAINT_ON || old.mode == MAINT_ON) {
        /* ON publishes the new page; SCHEDULED after ON switches off until --at. */
        r = publish_window(m);
        if (r < 0) {
            /* Installed but unconfirmed: the new window stands (saved above);
             * say exactly that rather than "failed". */
            maint_window_finish(&old);
            cancel_timers(m);
            arm_timers(m);
            admin_reply_error(reply, UNCONFIRMED_SWITCH);
            return 0;
        }
    }
    maint_window_finish(&old);
    cancel_timers(m);
    arm_timers(m);

    struct buf text;
    buf_init(&text, 16384);
    r = append_window_json(reply, &m->win);
    if (r == 0 && w.mode == MAINT_ON)
        r = admin_json_add(reply, json_pack("{s:b}", "acknowledged", 1));
    append_window_text(&text, &m->win);
    if (w.mode == MAINT_ON)
        buf_append_str(&text, "every worker has switched: new requests get the 503 page\n");
    if (r == 0 && m->policy.secret) {
        int64_t exp = now / 1000 + (int64_t)(conf->maintenance.bypass_ttl_ms / 1000);
        if (w.until_ms && exp > w.until_ms / 1000 + 1)
            exp = w.until_ms / 1000 + 1;
        char cookie[MAINT_COOKIE_VALUE_MAX], iso[32];
        if (maint_cookie_sign(m->policy.secret, m->policy.secret_len, exp, cookie,
                              sizeof(cookie)) == 0) {
            format_iso(exp * 1000, iso, sizeof(iso));
            r = admin_json_add(reply, json_pack("{s:s++, s:I}", "bypass_cookie", MAINT_COOKIE_NAME,
                                                "=", cookie, "bypass_expires", (json_int_t)exp));
            buf_printf(&text, "bypass cookie (valid until %s):\n  Cookie: %s=%s\n", iso,
                       MAINT_COOKIE_NAME, cookie);
        }
    }
    if (r == 0)
        r = admin_json_add(reply,
                           json_pack("{s:s%}", "text", text.data ? text.data : "", text.len));
    buf_finish(&text);
    /* Never a reply that hides the switch: name it in the error. */
    if (r < 0)
        return admin_reply_error(reply, "down: the switch took effect, but its reply could not "
                                        "be built");

    if (has_drain && drain && w.mode == MAINT_ON) {
        m->drain_started_ms = time_mono_ms();
        /* Watch for idleness before looking, so that the last request cannot
         * finish unnoticed between the look and the watch. */
        server_on_idle(m->s, drain_check, m);
        if (nonexempt_inflight(m) == 0) {
            server_on_idle(m->s, NULL, NULL);
            return drain_append(m, reply, true, NULL);
        }
        /* Answer later, from drain_check() or drain_timeout(): keep a copy of
         * the reply so far (reply itself is the admin module's). */
        json_decref(m->drain_reply);
        m->drain_reply = json_deep_copy(reply);
        m->drain_client = c;
        admin_client_hold(c);
        evloop_timer_start(server_loop(m->s), &m->drain_timer, conf->maintenance.drain_timeout_ms);
        return ADMIN_REPLY_LATER;
    }
    return 0;
bad_arg:
    admin_reply_error(reply, "down: bad numeric argument");
    return 0;
}

static int cmd_up(struct admin_client *c, const struct admin_request *req, json_t *reply, void *arg)
{
    struct maint_ctl *m = arg;
    if (req->nargs) {
        admin_reply_error(reply, "up: takes no arguments");
        return 0;
    }
    struct maint_window off = {0};
    off.message = xstrdup("");
    int r = maint_state_save(m->conf->server.state_dir, &off);
    maint_window_finish(&off);
    if (r < 0) {
        admin_reply_error(reply, "cannot save maintenance state in '%s': %s",
                          m->conf->server.state_dir, strerror(-r));
        return 0;
    }
    int was = m->win.mode;
    switch_off(m);
    r = publish_window(m);
    drain_finish(m, false, "cancelled by `ferry up`");
    if (r < 0) {
        admin_reply_error(reply, UNCONFIRMED_SWITCH);
        return 0;
    }
    static const char *const was_names[] = {"off", "on", "scheduled"};
    static const char *const texts[] = {
        "maintenance: off (it was not on)\n",
        "maintenance: off; every worker has switched\n",
        "maintenance: off (the scheduled window is cancelled)\n",
    };
    return admin_json_add(reply, json_pack("{s:s, s:b, s:s, s:s}", "mode", "off", "acknowledged", 1,
                                           "was", was_names[was], "text", texts[was]));
}

struct maint_ctl *maint_attach(struct server *s, struct admin *admin, const struct ferry_conf *conf,
                               char *err, size_t errlen)
{
    struct maint_ctl *m = xcalloc(1, sizeof(*m));
    m->s = s;
    m->admin = admin;
    m->conf = conf;
    evloop_timer_init(&m->at_timer, on_at, m);
    evloop_timer_init(&m->until_timer, on_until, m);
    evloop_timer_init(&m->drain_timer, drain_timeout, m);
    if (maint_policy_init(&m->policy, conf, err, errlen) < 0) {
        free(m);
        return NULL;
    }
    int r = maint_state_load(conf->server.state_dir, &m->win);
    if (r == -EINVAL) {
        snprintf(err, errlen,
                 "maintenance state '%s/maintenance.state' is corrupt; remove it to start",
                 conf->server.state_dir);
        goto fail;
    }
    if (r < 0 && r != -ENOENT) {
        snprintf(err, errlen, "cannot read maintenance state in '%s': %s", conf->server.state_dir,
                 strerror(-r));
        goto fail;
    }
    if (r == -ENOENT)
        m->win.message = xstrdup("");
    /* A window that ended while the server was down stays ended. */
    if (m->win.mode != MAINT_OFF && m->win.until_ms && m->win.until_ms <= maint_now_ms())
        switch_off(m);
    server_set_release(s, STATE_MAINT, release_state);
    if (m->win.mode == MAINT_ON && (r = publish_window(m)) < 0) {
        snprintf(err, errlen, "cannot publish the maintenance state: %s", strerror(-r));
        goto fail;
    }
    arm_timers(m);
    server_set_handler(s, HANDLER_SLOT_MAINT, maint_handle_request, m);
    if (admin_register(admin, "down", cmd_down, m) < 0 ||
        admin_register(admin, "up", cmd_up, m) < 0 ||
        admin_register_status(admin, "maintenance", status_section, m) < 0) {
        snprintf(err, errlen, "maintenance commands already registered");
        goto fail;
    }
    return m;
fail:
    cancel_timers(m);
    maint_window_finish(&m->win);
    maint_policy_finish(&m->policy);
    free(m);
    return NULL;
}

void maint_detach(struct maint_ctl *m)
{
    if (!m)
        return;
    cancel_timers(m);
    /* A `down --drain` still waiting is told why it will get no better answer. */
    drain_finish(m, false, "the server is stopping");
    json_decref(m->drain_reply);
    maint_window_finish(&m->win);
    /* The server still holds the last published snapshot, which points at the
     * policy: the policy is freed here, so detach only after server_run(). */
    maint_policy_finish(&m->policy);
    free(m);
}

/* ---- metrics ---- */

static const struct metrics_family maint_families[] = {
    {.name = "maintenance_mode",
     .help = "1 while maintenance mode is on (the 503 page is served), else 0.",
     .type = METRICS_GAUGE},
    {.name = "maintenance_responses_total",
     .help = "Requests answered with the maintenance page.",
     .type = METRICS_COUNTER},
    {.name = "maintenance_bypassed_total",
     .help = "Requests let through during maintenance (allow_paths, allow_from, bypass cookie).",
     .type = METRICS_COUNTER},
};

static int maint_collect(struct metrics_collector *mc, void *arg)
{
    struct maint_ctl *m = arg;
    struct server_stats st;
    server_get_stats(m->s, &st);
    metrics_value(mc, 0, NULL, atomic_load_explicit(&m->on, memory_order_relaxed) ? 1 : 0);
    metrics_value(mc, 1, NULL, (double)st.maint_served);
    metrics_value(mc, 2, NULL, (double)st.maint_bypassed);
    return 0;
}

int maint_register_metrics(struct maint_ctl *m, struct metrics *reg)
{
    return metrics_register(reg, "maintenance", maint_families,
                            sizeof(maint_families) / sizeof(maint_families[0]), maint_collect, m);
}
