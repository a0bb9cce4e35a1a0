#include "admin/admin.h"

#include "common/alloc.h"
#include "common/buf.h"
#include "common/evloop.h"
#include "common/net.h"
#include "common/text.h"
#include "common/timeutil.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- protocol ---- */

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

int admin_parse_line(const char *buf, size_t len, struct admin_request *req)
{
    const char *nl = memchr(buf, '\n', len);
    if (!nl)
        return -2;
    const char *end = nl;
    if (end > buf && end[-1] == '\r')
        end--;
    const char *p = buf;
    req->nargs = 0;
    req->command.p = NULL;
    req->command.len = 0;
    while (p < end) {
        while (p < end && *p == ' ')
            p++;
        if (p == end)
            break;
        const char *tok = p;
        while (p < end && *p != ' ')
            p++;
        const char *tend = p;
        if (!req->command.p) {
            for (const char *q = tok; q < tend; q++)
                if (!is_name_char(*q))
                    return -1;
            req->command.p = tok;
            req->command.len = (size_t)(tend - tok);
            continue;
        }
        if (req->nargs == ADMIN_MAX_ARGS)
            return -1;
        const char *eq = memchr(tok, '=', (size_t)(tend - tok));
        if (!eq || eq == tok)
            return -1;
        for (const char *q = tok; q < eq; q++)
            if (!is_name_char(*q))
                return -1;
        for (const char *q = eq + 1; q < tend; q++) {
            if (*q < 0x21 || *q > 0x7e)
                return -1;
            if (*q == '%' && (tend - q < 3 || text_hex_value(q[1]) < 0 || text_hex_value(q[2]) < 0))
                return -1;
        }
        req->args[req->nargs].key.p = tok;
        req->args[req->nargs].key.len = (size_t)(eq - tok);
        req->args[req->nargs].value.p = eq + 1;
        req->args[req->nargs].value.len = (size_t)(tend - eq - 1);
        req->nargs++;
    }
    if (!req->command.p)
        return -1;
    return (int)(nl - buf + 1);
}

const struct admin_str *admin_request_arg(const struct admin_request *req, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < req->nargs; i++)
        if (req->args[i].key.len == klen && memcmp(req->args[i].key.p, key, klen) == 0)
            return &req->args[i].value;
    return NULL;
}

int admin_decode_value(const struct admin_str *v, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < v->len; i++) {
        char c = v->p[i];
        if (c == '%') {
            if (v->len - i < 3 || text_hex_value(v->p[i + 1]) < 0 ||
                text_hex_value(v->p[i + 2]) < 0)
                return -1;
            c = (char)(text_hex_value(v->p[i + 1]) * 16 + text_hex_value(v->p[i + 2]));
            i += 2;
        }
        if (o + 1 >= outlen)
            return -1;
        out[o++] = c;
    }
    if (outlen == 0)
        return -1;
    out[o] = '\0';
    return (int)o;
}

int admin_encode_value(struct buf *b, const char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        int r;
        if (c > 0x20 && c < 0x7f && c != '%') {
            r = buf_append(b, &p[i], 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            r = buf_append(b, e, 3);
        }
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- the listening socket ---- */

int admin_listen(const char *path, char *err, size_t errlen)
{
    return net_listen_unix(path, "admin socket", "another ferry is running", true, 64, err, errlen);
}

/* ---- replies ---- */

int admin_reply_error(json_t *reply, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_object_clear(reply);
    json_t *m = json_string(msg);
    if (!m)
        m = json_string("error (its message is not UTF-8)");
    json_object_set_new(reply, "ok", json_false());
    json_object_set_new(reply, "error", m);
    return 0;
}

int admin_json_add(json_t *obj, json_t *members)
{
    int r =
        members && json_is_object(members) && json_object_update(obj, members) == 0 ? 0 : -EINVAL;
    json_decref(members);
    return r;
}

/* Static, so that a reply line can be produced even when nothing else can. */
static const char reply_unbuildable[] =
    "{\"ok\":false,\"error\":\"the reply could not be built\"}\n";
static const char reply_too_large[] = "{\"ok\":false,\"error\":\"reply too large\"}\n";

void admin_reply_format(const json_t *reply, struct buf *out)
{
    buf_reset(out);
    char *s = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
    const char *line = reply_unbuildable;
    if (s && strlen(s) + 1 > ADMIN_REPLY_MAX)
        line = reply_too_large;
    else if (s && buf_append_str(out, s) == 0 && buf_append(out, "\n", 1) == 0)
        line = NULL;
    free(s);
    if (line) {
        buf_reset(out);
        buf_append_str(out, line); /* out's max is at least ADMIN_REPLY_MAX */
    }
}

/* ---- server side ---- */

struct admin_command {
    char *name;
    admin_cmd_fn fn;
    void *arg;
};

struct admin_section {
    char *name;
    admin_status_fn fn;
    void *arg;
};

/* What a client's timer is counting. */
enum client_phase {
    PHASE_LINE, /* a command line is due: the deadline */
    PHASE_IDLE, /* between commands, nothing pending: the idle timeout */
    PHASE_HELD, /* a command is in progress: no timer, never evicted */
};

struct admin_client {
    struct admin *a;
    struct admin_client *prev, *next; /* a->clients, least recently active first */
    int fd;                           /* -1 once closed */
    int refs;                         /* the client list's, plus a hold, plus a callback's */
    enum client_phase phase;
    bool close_after; /* close once out is written */
    bool eof;         /* the client shut down its side: answer, then close */
    uint32_t events;  /* what the loop watches now */
    struct evloop_timer timer;
    struct buf in, out;
};

struct admin {
    struct evloop *loop;
    char *path;
    int fd;
    bool accept_paused;
    struct evloop_timer accept_timer;
    struct admin_client *clients, *clients_tail;
    size_t nclients;
    size_t max_clients;
    uint64_t timeout_ms, idle_ms;
    struct admin_stats stats;
    struct admin_command *cmds;
    size_t ncmds;
    struct admin_section *sections;
    size_t nsections;
    admin_status_hook_fn status_hook; /* admin_set_status_hook() */
    void *status_hook_arg;
};

static void client_on_event(struct evloop *l, int fd, uint32_t events, void *arg);
static void client_process(struct admin_client *c);

static void list_remove(struct admin_client *c)
{
    struct admin *a = c->a;
    if (c->prev)
        c->prev->next = c->next;
    else
        a->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        a->clients_tail = c->prev;
    c->prev = c->next = NULL;
}

static void list_append(struct admin_client *c)
{
    struct admin *a = c->a;
    c->next = NULL;
    c->prev = a->clients_tail;
    if (a->clients_tail)
        a->clients_tail->next = c;
    else
        a->clients = c;
    a->clients_tail = c;
}

static void client_unref(struct admin_client *c)
{
    if (--c->refs > 0)
        return;
    buf_finish(&c->in);
    buf_finish(&c->out);
    free(c);
}

static void client_close(struct admin_client *c)
{
    if (c->fd < 0)
        return;
    struct admin *a = c->a;
    if (c->events)
        evloop_fd_del(a->loop, c->fd);
    close(c->fd);
    c->fd = -1;
    evloop_timer_stop(a->loop, &c->timer);
    list_remove(c);
    a->nclients--;
    client_unref(c);
}

/* Tell a client why it is dropped (best effort: never blocks) and close it. */
static void client_drop(struct admin_client *c, const char *why)
{
    json_t *reply = json_object();
    admin_reply_error(reply, "%s", why);
    struct buf line;
    buf_init(&line, ADMIN_REPLY_MAX);
    admin_reply_format(reply, &line);
    json_decref(reply);
    /* Not after part of an earlier reply: that would splice two lines. */
    if (c->out.len == 0) {
        ssize_t ignored = send(c->fd, line.data, line.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)ignored;
    }
    buf_finish(&line);
    client_close(c);
}

/* Watch c for events; 0 removes the watch (a peer that hung up would
 * otherwise report EPOLLHUP forever while a deferred reply is owed). */
static void client_watch(struct admin_client *c, uint32_t events)
{
    if (c->fd < 0 || c->events == events)
        return;
    struct evloop *l = c->a->loop;
    int r = 0;
    if (events == 0)
        evloop_fd_del(l, c->fd);
    else if (c->events == 0)
        r = evloop_fd_add(l, c->fd, events, client_on_event, c);
    else
        r = evloop_fd_mod(l, c->fd, events);
    if (r < 0) {
        client_close(c);
        return;
    }
    c->events = events;
}

static void client_on_timer(struct evloop *l, void *arg)
{
    struct admin_client *c = arg;
    struct admin *a = c->a;
    char why[128];
    if (c->phase == PHASE_LINE) {
        a->stats.dropped_deadline++;
        snprintf(why, sizeof(why), "no complete command line within %.3g s; closing",
                 (double)a->timeout_ms / 1000);
        client_drop(c, why);
    } else if (c->phase == PHASE_IDLE) {
        a->stats.dropped_idle++;
        snprintf(why, sizeof(why), "idle for %.3g s; closing", (double)a->idle_ms / 1000);
        client_drop(c, why);
    }
}

/* Move c to the state its buffers call for after a read or a reply. A new
 * deadline starts when a line begins after a command (new_line); a line that
 * was already due keeps its deadline, however slowly its bytes arrive. */
static void client_set_phase(struct admin_client *c, bool new_line)
{
    struct admin *a = c->a;
    if (c->fd < 0 || c->phase == PHASE_HELD)
        return;
    if (c->in.len == 0) {
        c->phase = PHASE_IDLE;
        evloop_timer_start(a->loop, &c->timer, a->idle_ms);
    } else if (c->phase != PHASE_LINE || new_line) {
        c->phase = PHASE_LINE;
        evloop_timer_start(a->loop, &c->timer, a->timeout_ms);
    }
}

/* c did something: it is now the client idle shortest. */
static void client_touch(struct admin_client *c)
{
    if (c->fd < 0 || c->a->clients_tail == c)
        return;
    list_remove(c);
    list_append(c);
}

/* Write what is queued; watch for writability while some is left. */
static void client_flush(struct admin_client *c)
{
    while (c->fd >= 0 && c->out.len > 0) {
        ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            client_watch(c, EPOLLOUT);
            return;
        }
        if (n < 0) {
            client_close(c);
            return;
        }
        buf_consume(&c->out, (size_t)n);
    }
    if (c->fd < 0)
        return;
    if (c->close_after) {
        client_close(c);
        return;
    }
    /* After EOF there is nothing more to read (and a readable EOF would wake
     * the loop forever): watch nothing until the deferred reply is sent. */
    client_watch(c, c->eof ? 0 : EPOLLIN);
}

/* Queue the reply line for reply (not taken). */
static void client_send(struct admin_client *c, const json_t *reply)
{
    if (c->fd < 0)
        return;
    struct buf line;
    buf_init(&line, ADMIN_REPLY_MAX);
    admin_reply_format(reply, &line);
    if (buf_append(&c->out, line.data, line.len) < 0) {
        /* The client does not read its replies: it loses the connection. */
        c->close_after = true;
    }
    buf_finish(&line);
}

static int status_admin_section(json_t *section, struct buf *text, void *arg)
{
    struct admin *a = arg;
    struct admin_stats st;
    admin_get_stats(a, &st);
    int r = admin_json_add(section,
                           json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "clients",
                                     (json_int_t)st.clients, "accepted", (json_int_t)st.accepted,
                                     "dropped_deadline", (json_int_t)st.dropped_deadline,
                                     "dropped_idle", (json_int_t)st.dropped_idle, "evicted",
                                     (json_int_t)st.evicted, "refused", (json_int_t)st.refused,
                                     "accept_paused", (json_int_t)st.accept_paused));
    if (r == 0)
        r = buf_printf(text,
                       "admin: %" PRIu64 " client(s); dropped %" PRIu64 " at the command deadline, "
                       "%" PRIu64 " idle, %" PRIu64 " evicted to make room\n",
                       st.clients, st.dropped_deadline, st.dropped_idle, st.evicted);
    return r;
}

static int status_add_section(struct admin *a, json_t *reply, struct buf *text, const char *name,
                              admin_status_fn fn, void *arg)
{
    json_t *section = json_object();
    if (!section || json_object_set_new(reply, name, section) < 0)
        return -ENOMEM;
    int r = fn(section, text, arg);
    if (r == 0 && a->status_hook)
        r = a->status_hook(name, section, text, a->status_hook_arg);
    return r;
}

static void status_command(struct admin *a, json_t *reply)
{
    struct buf text;
    buf_init(&text, ADMIN_TEXT_MAX);
    int r = 0;
    const char *failed = NULL;
    for (size_t i = 0; r == 0 && i < a->nsections; i++) {
        r = status_add_section(a, reply, &text, a->sections[i].name, a->sections[i].fn,
                               a->sections[i].arg);
        failed = a->sections[i].name;
    }
    if (r == 0) {
        r = status_add_section(a, reply, &text, "admin", status_admin_section, a);
        failed = "admin";
    }
    if (r == 0) {
        failed = "text";
        r = json_object_set_new(reply, "text", json_stringn(text.data ? text.data : "", text.len));
        r = r < 0 ? -EINVAL : 0;
    }
    if (r < 0)
        admin_reply_error(reply, "status: section '%s' could not be built: %s", failed,
                          strerror(-r));
    buf_finish(&text);
}

/* Build the reply to req. Returns the reply (the caller's), or NULL when the
 * command holds c for a deferred reply. */
static json_t *dispatch(struct admin *a, struct admin_client *c, const struct admin_request *req)
{
    json_t *reply = json_object();
    if (!reply)
        return json_null(); /* not an object: formatted as an error reply */
    if (req->command.len == 6 && memcmp(req->command.p, "status", 6) == 0) {
        status_command(a, reply);
    } else if (req->command.len == 4 && memcmp(req->command.p, "ping", 4) == 0) {
        json_object_set_new(reply, "pong", json_true());
    } else {
        const struct admin_command *cmd = NULL;
        for (size_t i = 0; !cmd && i < a->ncmds; i++)
            if (strlen(a->cmds[i].name) == req->command.len &&
                memcmp(a->cmds[i].name, req->command.p, req->command.len) == 0)
                cmd = &a->cmds[i];
        if (!cmd) {
            admin_reply_error(reply, "unknown command '%.*s'", (int)req->command.len,
                              req->command.p);
            return reply;
        }
        int r = cmd->fn(c, req, reply, cmd->arg);
        if (r == ADMIN_REPLY_LATER) {
            json_decref(reply);
            return NULL;
        }
        if (r < 0)
            admin_reply_error(reply, "%s: the reply could not be built: %s", cmd->name,
                              strerror(-r));
    }
    if (!json_object_get(reply, "ok") && json_object_set_new(reply, "ok", json_true()) < 0)
        admin_reply_error(reply, "the reply could not be built");
    return reply;
}

/* Handle every complete line in the input, unless a deferred reply is owed. */
static void client_process(struct admin_client *c)
{
    bool dispatched = false;
    while (c->fd >= 0 && c->phase != PHASE_HELD && !c->close_after && c->in.len > 0) {
        struct admin_request req;
        int n = admin_parse_line(c->in.data, c->in.len, &req);
        if (n == -2) {
            if (c->in.len >= ADMIN_LINE_MAX) {
                json_t *reply = json_object();
                admin_reply_error(reply, "request line too long (at most %d bytes)",
                                  ADMIN_LINE_MAX);
                client_send(c, reply);
                json_decref(reply);
                c->close_after = true;
            }
            break;
        }
        if (n == -1) {
            /* Framing is in doubt after garbage: answer and close. */
            json_t *reply = json_object();
            admin_reply_error(reply, "malformed request line (want: COMMAND [KEY=VALUE ...])");
            client_send(c, reply);
            json_decref(reply);
            c->close_after = true;
            break;
        }
        /* The request views point into c->in: dispatch before consuming. */
        json_t *reply = dispatch(c->a, c, &req);
        dispatched = true;
        if (reply) {
            client_send(c, reply);
            json_decref(reply);
        }
        if (c->fd >= 0)
            buf_consume(&c->in, (size_t)n);
    }
    if (c->eof && c->phase != PHASE_HELD)
        c->close_after = true;
    client_set_phase(c, dispatched);
    client_flush(c);
}

/* Read what c sent and handle the complete lines. c must hold a reference
 * the caller drops (a close inside must not free it). */
static void client_read(struct admin_client *c)
{
    bool got = false;
    char tmp[4096];
    for (;;) {
        size_t room = ADMIN_LINE_MAX - c->in.len;
        if (room == 0) {
            /* Unread input would wake the loop forever: a client that
             * floods while waiting for a deferred reply is dropped. */
            if (c->phase == PHASE_HELD)
                client_close(c);
            break;
        }
        ssize_t n = recv(c->fd, tmp, room < sizeof(tmp) ? room : sizeof(tmp), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n == 0) {
            /* Half-closed (e.g. `socat` after stdin ends): still answer
             * what was sent. */
            c->eof = true;
            break;
        }
        if (n < 0) {
            client_close(c);
            break;
        }
        /* room bounds n, and in's maximum is ADMIN_LINE_MAX. */
        buf_append(&c->in, tmp, (size_t)n);
        got = true;
    }
    if (c->fd < 0)
        return;
    if (got)
        client_touch(c);
    /* Bytes after an idle spell start a new command line. */
    if (got && c->phase == PHASE_IDLE) {
        c->phase = PHASE_LINE;
        evloop_timer_start(c->a->loop, &c->timer, c->a->timeout_ms);
    }
    client_process(c);
}

static void client_on_event(struct evloop *l, int fd, uint32_t events, void *arg)
{
    struct admin_client *c = arg;
    c->refs++; /* c must survive a close inside this callback */
    if (events & EPOLLOUT)
        client_flush(c);
    else
        client_read(c);
    client_unref(c);
}

/* Whether c's socket holds bytes not read yet. */
static bool client_has_input(const struct admin_client *c)
{
    int n = 0;
    return !c->eof && ioctl(c->fd, FIONREAD, &n) == 0 && n > 0;
}

/* Drop the client idle longest to make room; false when every client has a
 * command in progress. */
static bool evict_one(struct admin *a)
{
    struct admin_client *next;
    for (struct admin_client *c = a->clients; c; c = next) {
        next = c->next;
        if (c->phase == PHASE_HELD)
            continue;
        if (client_has_input(c)) {
            /* Its command arrived but the loop has not read it yet (a burst
             * of connections is accepted in one round): serve it first, so
             * that `ferry down` sent just before the burst is not dropped. */
            c->refs++;
            client_read(c);
            bool gone = c->fd < 0;
            client_unref(c);
            if (gone)
                return true;
            continue; /* now the newest (or held); look further */
        }
        a->stats.evicted++;
        client_drop(c, "the admin socket is full: this connection, idle longest, was dropped "
                       "to serve a new one");
        return true;
    }
    return false;
}

static void admin_on_accept(struct evloop *l, int fd, uint32_t events, void *arg);

static void accept_resume(struct evloop *l, void *arg)
{
    struct admin *a = arg;
    if (evloop_fd_add(a->loop, a->fd, EPOLLIN, admin_on_accept, a) == 0)
        a->accept_paused = false;
    else
        evloop_timer_start(a->loop, &a->accept_timer, 100);
}

static void admin_on_accept(struct evloop *l, int fd, uint32_t events, void *arg)
{
    struct admin *a = arg;
    for (;;) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* The listener would fire again at once and spin: pause it
                 * for a moment, as nginx does. */
                evloop_fd_del(a->loop, a->fd);
                a->accept_paused = true;
                a->stats.accept_paused++;
                evloop_timer_start(a->loop, &a->accept_timer, 100);
            }
            return; /* EAGAIN, or a transient error: try next time */
        }
        if (a->nclients >= a->max_clients && !evict_one(a)) {
            a->stats.refused++;
            static const char msg[] = "{\"ok\":false,\"error\":\"the admin socket is full: "
                                      "every client has a command in progress\"}\n";
            ssize_t ignored = send(cfd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)ignored;
            close(cfd);
            continue;
        }
        struct admin_client *c = xcalloc(1, sizeof(*c));
        c->a = a;
        c->fd = cfd;
        c->refs = 1;
        c->phase = PHASE_LINE;
        evloop_timer_init(&c->timer, client_on_timer, c);
        buf_init(&c->in, ADMIN_LINE_MAX);
        buf_init(&c->out, 4 * ADMIN_REPLY_MAX);
        if (evloop_fd_add(a->loop, cfd, EPOLLIN, client_on_event, c) < 0) {
            close(cfd);
            client_unref(c);
            continue;
        }
        c->events = EPOLLIN;
        list_append(c);
        a->nclients++;
        a->stats.accepted++;
        /* The first command line is due within the deadline from now. */
        evloop_timer_start(a->loop, &c->timer, a->timeout_ms);
    }
}

struct admin *admin_create(struct evloop *loop, const char *path, char *err, size_t errlen)
{
    int fd = admin_listen(path, err, errlen);
    if (fd < 0)
        return NULL;
    struct admin *a = xcalloc(1, sizeof(*a));
    a->loop = loop;
    a->fd = fd;
    a->path = xstrdup(path);
    a->max_clients = ADMIN_MAX_CLIENTS;
    a->timeout_ms = ADMIN_TIMEOUT_MS;
    a->idle_ms = ADMIN_IDLE_MS;
    evloop_timer_init(&a->accept_timer, accept_resume, a);
    int r = evloop_fd_add(loop, fd, EPOLLIN, admin_on_accept, a);
    if (r < 0) {
        snprintf(err, errlen, "cannot watch the admin socket: %s", strerror(-r));
        admin_destroy(a);
        return NULL;
    }
    return a;
}

void admin_destroy(struct admin *a)
{
    if (!a)
        return;
    while (a->clients)
        client_close(a->clients);
    evloop_timer_stop(a->loop, &a->accept_timer);
    if (a->fd >= 0) {
        if (!a->accept_paused)
            evloop_fd_del(a->loop, a->fd);
        close(a->fd);
        unlink(a->path);
    }
    for (size_t i = 0; i < a->ncmds; i++)
        free(a->cmds[i].name);
    for (size_t i = 0; i < a->nsections; i++)
        free(a->sections[i].name);
    free(a->cmds);
    free(a->sections);
    free(a->path);
    free(a);
}

void admin_set_limits(struct admin *a, uint64_t timeout_ms, uint64_t idle_ms, size_t max_clients)
{
    if (timeout_ms)
        a->timeout_ms = timeout_ms;
    if (idle_ms)
        a->idle_ms = idle_ms;
    if (max_clients)
        a->max_clients = max_clients;
}

int admin_register(struct admin *a, const char *name, admin_cmd_fn fn, void *arg)
{
    if (strcmp(name, "status") == 0 || strcmp(name, "ping") == 0)
        return -EEXIST;
    for (size_t i = 0; i < a->ncmds; i++)
        if (strcmp(a->cmds[i].name, name) == 0)
            return -EEXIST;
    a->cmds = xrealloc(a->cmds, (a->ncmds + 1) * sizeof(*a->cmds));
    a->cmds[a->ncmds++] = (struct admin_command){xstrdup(name), fn, arg};
    return 0;
}

int admin_register_status(struct admin *a, const char *name, admin_status_fn fn, void *arg)
{
    if (strcmp(name, "admin") == 0 || strcmp(name, "ok") == 0 || strcmp(name, "text") == 0)
        return -EEXIST;
    for (size_t i = 0; i < a->nsections; i++)
        if (strcmp(a->sections[i].name, name) == 0)
            return -EEXIST;
    a->sections = xrealloc(a->sections, (a->nsections + 1) * sizeof(*a->sections));
    a->sections[a->nsections++] = (struct admin_section){xstrdup(name), fn, arg};
    return 0;
}

void admin_set_status_hook(struct admin *a, admin_status_hook_fn fn, void *arg)
{
    a->status_hook = fn;
    a->status_hook_arg = arg;
}

void admin_get_stats(const struct admin *a, struct admin_stats *out)
{
    *out = a->stats;
    out->clients = a->nclients;
}

void admin_client_hold(struct admin_client *c)
{
    c->phase = PHASE_HELD;
    c->refs++;
    if (c->fd >= 0)
        evloop_timer_stop(c->a->loop, &c->timer);
}

void admin_client_reply(struct admin_client *c, json_t *reply)
{
    if (!reply)
        reply = json_object();
    if (reply && !json_object_get(reply, "ok") &&
        json_object_set_new(reply, "ok", json_true()) < 0) {
        json_decref(reply);
        reply = NULL; /* admin_reply_format() makes it an error reply */
    }
    /* Not PHASE_LINE: a partial request that arrived meanwhile starts its
     * deadline now (its timer was stopped by the hold). */
    c->phase = PHASE_IDLE;
    if (c->fd >= 0) {
        client_send(c, reply);
        client_touch(c);
        /* Requests that arrived meanwhile are handled now. */
        client_process(c);
    }
    json_decref(reply);
    client_unref(c);
}

/* ---- client side ---- */

/* Milliseconds left before deadline (0: none left), or -1 without a limit. */
static int time_left(uint64_t deadline, int timeout_ms)
{
    if (timeout_ms < 0)
        return -1;
    uint64_t now = time_mono_ms();
    return now >= deadline ? 0 : (int)(deadline - now);
}

/* Connect, waiting (bounded) while the server's backlog is full: a unix
 * socket refuses with EAGAIN then instead of queueing the connection. */
static int call_connect(int fd, const char *path, const struct sockaddr_un *sun, uint64_t deadline,
                        int timeout_ms, char *err, size_t errlen)
{
    for (;;) {
        if (connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0)
            return 0;
        int r = -errno;
        if (r == -EINTR)
            continue;
        if (r == -EAGAIN && time_left(deadline, timeout_ms) != 0) {
            poll(NULL, 0, 10);
            continue;
        }
        if (r == -EAGAIN)
            snprintf(err, errlen,
                     "the admin socket is full: the server did not accept the connection within "
                     "%g s",
                     (double)timeout_ms / 1000);
        else if (r == -ENOENT)
            snprintf(err, errlen, "no server running (admin socket '%s' does not exist)", path);
        else if (r == -ECONNREFUSED)
            snprintf(err, errlen, "no server running (nothing listens on admin socket '%s')", path);
        else if (r == -EACCES || r == -EPERM)
            snprintf(err, errlen, "cannot access admin socket '%s': %s", path, strerror(-r));
        else
            snprintf(err, errlen, "cannot connect to admin socket '%s': %s", path, strerror(-r));
        return r;
    }
}

/* Wait for events on fd until the deadline; 0 when it passed. */
static int call_wait(int fd, short events, uint64_t deadline, int timeout_ms)
{
    for (;;) {
        int left = time_left(deadline, timeout_ms);
        if (left == 0)
            return 0;
        struct pollfd pfd = {.fd = fd, .events = events};
        int pr = poll(&pfd, 1, left);
        if (pr < 0 && errno == EINTR)
            continue;
        return pr < 0 ? -errno : pr;
    }
}

int admin_call(const char *path, const char *line, struct buf *reply, int timeout_ms, char *err,
               size_t errlen)
{
    struct sockaddr_un sun;
    int r = net_unix_addr(path, "admin socket", &sun, err, errlen);
    if (r < 0)
        return r;
    size_t len = strlen(line);
    if (len + 1 > ADMIN_LINE_MAX) {
        snprintf(err, errlen, "request too long for the admin protocol");
        return -E2BIG;
    }
    uint64_t deadline = timeout_ms < 0 ? 0 : time_mono_ms() + (uint64_t)timeout_ms;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        r = -errno;
        snprintf(err, errlen, "socket: %s", strerror(-r));
        return r;
    }
    r = call_connect(fd, path, &sun, deadline, timeout_ms, err, errlen);
    if (r < 0)
        goto fail;
    char *out = xmalloc(len + 1);
    memcpy(out, line, len);
    out[len] = '\n';
    for (size_t off = 0; off < len + 1;) {
        ssize_t n = send(fd, out + off, len + 1 - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            r = call_wait(fd, POLLOUT, deadline, timeout_ms);
            if (r > 0)
                continue;
            r = r == 0 ? -ETIMEDOUT : r;
        } else if (n < 0) {
            r = -errno;
        }
        if (n < 0) {
            free(out);
            if (r == -ETIMEDOUT)
                snprintf(err, errlen, "the server did not answer within %g s",
                         (double)timeout_ms / 1000);
            else
                snprintf(err, errlen, "admin socket '%s': write: %s", path, strerror(-r));
            goto fail;
        }
        off += (size_t)n;
    }
    free(out);
    for (;;) {
        const char *nl = reply->data ? memchr(reply->data, '\n', reply->len) : NULL;
        if (nl) {
            reply->len = (size_t)(nl - reply->data);
            reply->data[reply->len] = '\0';
            close(fd);
            return 0;
        }
        char tmp[4096];
        ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            r = call_wait(fd, POLLIN, deadline, timeout_ms);
            if (r > 0)
                continue;
            r = r == 0 ? -ETIMEDOUT : r;
            snprintf(err, errlen, "the server did not answer within %g s",
                     (double)timeout_ms / 1000);
            goto fail;
        }
        if (n <= 0) {
            r = n < 0 ? -errno : -ECONNRESET;
            snprintf(err, errlen, "the server closed the admin connection without a reply");
            goto fail;
        }
        if (buf_append(reply, tmp, (size_t)n) < 0) {
            r = -ENOBUFS;
            snprintf(err, errlen, "reply from the server too long");
            goto fail;
        }
    }
fail:
    close(fd);
    return r;
}
