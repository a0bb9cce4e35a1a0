#include "maint/admin.h"
#include "common/text.h"

#include "common/alloc.h"
#include "common/buf.h"
#include "common/timeutil.h"
#include "http/server.h"
#include "maint/json.h"

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

void admin_reply_error(struct buf *reply, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    buf_reset(reply);
    buf_append_str(reply, "{\"ok\":false,\"error\":");
    json_append_string(reply, msg, strlen(msg));
    buf_append_str(reply, "}");
}

/* ---- the listening socket ---- */

static int fill_sockaddr(const char *path, struct sockaddr_un *sun, char *err, size_t errlen)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun->sun_path)) {
        snprintf(err, errlen, "admin socket path '%s' is too long (at most %zu bytes)", path,
                 sizeof(sun->sun_path) - 1);
        return -ENAMETOOLONG;
    }
    memcpy(sun->sun_path, path, strlen(path));
    return 0;
}

static void ensure_parent_dir(const char *path)
{
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        mkdir(dir, 0700); /* a failure shows up as bind()'s error */
    }
    free(dir);
}

int admin_listen(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    int r = fill_sockaddr(path, &sun, err, errlen);
    if (r < 0)
        return r;
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "admin socket '%s' exists and is not a socket; not replacing it",
                     path);
            return -EEXIST;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0) {
            r = -errno;
            snprintf(err, errlen, "socket: %s", strerror(-r));
            return r;
        }
        int c = connect(probe, (struct sockaddr *)&sun, sizeof(sun));
        int e = errno;
        close(probe);
        if (c == 0) {
            snprintf(err, errlen, "admin socket '%s' is in use: another ferry is running", path);
            return -EADDRINUSE;
        }
        if (e != ECONNREFUSED && e != ENOENT) {
            snprintf(err, errlen, "admin socket '%s': %s", path, strerror(e));
            return -e;
        }
        /* Nobody listens: a leftover of a server that did not stop cleanly. */
        if (unlink(path) < 0 && errno != ENOENT) {
            r = -errno;
            snprintf(err, errlen, "cannot remove stale admin socket '%s': %s", path, strerror(-r));
            return r;
        }
    }
    ensure_parent_dir(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        r = -errno;
        snprintf(err, errlen, "socket: %s", strerror(-r));
        return r;
    }
    /* Create the file 0600 from the start: chmod after bind would leave a window
     * in which another user could connect. Startup is single-threaded. */
    mode_t old = umask(0177);
    int b = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    int e = errno;
    umask(old);
    if (b < 0 || listen(fd, 64) < 0) {
        if (b == 0)
            e = errno;
        close(fd);
        snprintf(err, errlen, "cannot listen on admin socket '%s': %s", path, strerror(e));
        return -e;
    }
    return fd;
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

struct admin_client {
    struct admin *a;
    struct admin_client *next;
    int fd;           /* -1 once closed */
    int refs;         /* the client list's, plus a hold */
    bool held;        /* a deferred reply is owed */
    bool close_after; /* close once out is written */
    bool eof;         /* the client shut down its side: answer, then close */
    uint32_t events;  /* what the loop watches now */
    uint64_t idle_timer;
    struct buf in, out;
};

struct admin {
    struct server *s;
    char *path;
    int fd;
    struct admin_client *clients;
    size_t nclients;
    struct admin_command *cmds;
    size_t ncmds;
    struct admin_section *sections;
    size_t nsections;
};

static void client_on_event(struct server *s, int fd, uint32_t events, void *arg);
static void client_process(struct admin_client *c);

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
    server_unwatch_fd(a->s, c->fd);
    close(c->fd);
    c->fd = -1;
    if (c->idle_timer)
        server_cancel_timer(a->s, c->idle_timer);
    c->idle_timer = 0;
    for (struct admin_client **pp = &a->clients; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    a->nclients--;
    client_unref(c);
}

static void client_watch(struct admin_client *c, uint32_t events)
{
    if (c->fd < 0 || c->events == events)
        return;
    server_unwatch_fd(c->a->s, c->fd);
    c->events = 0;
    if (events == 0)
        return;
    if (server_watch_fd(c->a->s, c->fd, events, client_on_event, c) < 0) {
        client_close(c);
        return;
    }
    c->events = events;
}

static void client_idle(struct server *s, void *arg)
{
    struct admin_client *c = arg;
    c->idle_timer = 0;
    /* A client waiting for a deferred reply is not idle. */
    if (!c->held)
        client_close(c);
}

static void client_rearm_idle(struct admin_client *c)
{
    if (c->idle_timer)
        server_cancel_timer(c->a->s, c->idle_timer);
    c->idle_timer = server_add_timer(c->a->s, ADMIN_IDLE_MS, client_idle, c);
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

static void client_send(struct admin_client *c, const char *json, size_t len)
{
    if (c->fd < 0)
        return;
    if (buf_append(&c->out, json, len) < 0 || buf_append(&c->out, "\n", 1) < 0) {
        /* Only a reply larger than ADMIN_REPLY_MAX lands here. */
        buf_reset(&c->out);
        static const char msg[] = "{\"ok\":false,\"error\":\"reply too large\"}\n";
        buf_append(&c->out, msg, sizeof(msg) - 1);
    }
}

static void status_command(struct admin *a, struct buf *reply)
{
    struct buf text;
    buf_init(&text, ADMIN_REPLY_MAX / 2);
    struct server_stats st;
    server_get_stats(a->s, &st);
    buf_printf(reply,
               "{\"ok\":true,\"server\":{\"pid\":%d,\"connections_open\":%" PRIu64
               ",\"requests_total\":%" PRIu64 ",\"requests_inflight\":%" PRIu64 "}",
               (int)getpid(), st.connections_open, st.requests_total, st.requests_inflight);
    buf_printf(&text,
               "server: pid %d, %" PRIu64 " connections open, %" PRIu64 " requests (%" PRIu64
               " in flight)\n",
               (int)getpid(), st.connections_open, st.requests_total, st.requests_inflight);
    for (size_t i = 0; i < a->nsections; i++) {
        buf_append_str(reply, ",");
        json_append_string(reply, a->sections[i].name, strlen(a->sections[i].name));
        buf_append_str(reply, ":{");
        a->sections[i].fn(reply, &text, a->sections[i].arg);
        buf_append_str(reply, "}");
    }
    buf_append_str(reply, ",\"text\":");
    json_append_string(reply, text.data ? text.data : "", text.len);
    buf_append_str(reply, "}");
    buf_finish(&text);
}

static void client_dispatch(struct admin_client *c, const struct admin_request *req)
{
    struct admin *a = c->a;
    struct buf reply;
    buf_init(&reply, ADMIN_REPLY_MAX - 1);
    int r = 0;
    bool found = false;
    if (req->command.len == 6 && memcmp(req->command.p, "status", 6) == 0) {
        status_command(a, &reply);
        found = true;
    } else if (req->command.len == 4 && memcmp(req->command.p, "ping", 4) == 0) {
        buf_append_str(&reply, "{\"ok\":true,\"pong\":true}");
        found = true;
    }
    for (size_t i = 0; !found && i < a->ncmds; i++) {
        if (strlen(a->cmds[i].name) == req->command.len &&
            memcmp(a->cmds[i].name, req->command.p, req->command.len) == 0) {
            found = true;
            r = a->cmds[i].fn(c, req, &reply, a->cmds[i].arg);
        }
    }
    if (!found)
        admin_reply_error(&reply, "unknown command '%.*s'", (int)req->command.len, req->command.p);
    if (r != ADMIN_REPLY_LATER) {
        if (reply.len == 0)
            admin_reply_error(&reply, "command produced no reply");
        client_send(c, reply.data, reply.len);
    }
    buf_finish(&reply);
}

/* Handle every complete line in the input, unless a deferred reply is owed. */
static void client_process(struct admin_client *c)
{
    while (c->fd >= 0 && !c->held && !c->close_after && c->in.len > 0) {
        struct admin_request req;
        int n = admin_parse_line(c->in.data, c->in.len, &req);
        if (n == -2) {
            if (c->in.len >= ADMIN_LINE_MAX) {
                struct buf reply;
                buf_init(&reply, 256);
                admin_reply_error(&reply, "request line too long (at most %d bytes)",
                                  ADMIN_LINE_MAX);
                client_send(c, reply.data, reply.len);
                buf_finish(&reply);
                c->close_after = true;
            }
            break;
        }
        if (n == -1) {
            /* Framing is in doubt after garbage: answer and close. */
            static const char msg[] = "{\"ok\":false,\"error\":\"malformed request line (want: "
                                      "COMMAND [KEY=VALUE ...])\"}";
            client_send(c, msg, sizeof(msg) - 1);
            c->close_after = true;
            break;
        }
        /* The request views point into c->in: dispatch before consuming. */
        client_dispatch(c, &req);
        if (c->fd >= 0)
            buf_consume(&c->in, (size_t)n);
    }
    if (c->eof && !c->held)
        c->close_after = true;
    client_flush(c);
}

static void client_on_event(struct server *s, int fd, uint32_t events, void *arg)
{
    struct admin_client *c = arg;
    c->refs++; /* c must survive a close inside this callback */
    if (events & EPOLLOUT) {
        client_flush(c);
    } else {
        char tmp[4096];
        for (;;) {
            size_t room = ADMIN_LINE_MAX - c->in.len;
            if (room == 0) {
                /* Unread input would wake the loop forever: a client that
                 * floods while waiting for a deferred reply is dropped. */
                if (c->held)
                    client_close(c);
                break;
            }
            ssize_t n = recv(fd, tmp, room < sizeof(tmp) ? room : sizeof(tmp), 0);
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
            buf_append(&c->in, tmp, (size_t)n);
        }
        if (c->fd >= 0) {
            client_rearm_idle(c);
            client_process(c);
        }
    }
    client_unref(c);
}

static void admin_on_accept(struct server *s, int fd, uint32_t events, void *arg)
{
    struct admin *a = arg;
    for (;;) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
            return; /* EAGAIN, or a transient error such as EMFILE: try next time */
        if (a->nclients >= ADMIN_MAX_CLIENTS) {
            static const char msg[] = "{\"ok\":false,\"error\":\"too many admin clients\"}\n";
            ssize_t ignored = send(cfd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)ignored;
            close(cfd);
            continue;
        }
        struct admin_client *c = xcalloc(1, sizeof(*c));
        c->a = a;
        c->fd = cfd;
        c->refs = 1;
        buf_init(&c->in, ADMIN_LINE_MAX);
        buf_init(&c->out, ADMIN_REPLY_MAX + 64);
        if (server_watch_fd(a->s, cfd, EPOLLIN, client_on_event, c) < 0) {
            close(cfd);
            client_unref(c);
            continue;
        }
        c->events = EPOLLIN;
        c->next = a->clients;
        a->clients = c;
        a->nclients++;
        client_rearm_idle(c);
    }
}

struct admin *admin_create(struct server *s, const char *path, char *err, size_t errlen)
{
    int fd = admin_listen(path, err, errlen);
    if (fd < 0)
        return NULL;
    struct admin *a = xcalloc(1, sizeof(*a));
    a->s = s;
    a->fd = fd;
    a->path = xstrdup(path);
    int r = server_watch_fd(s, fd, EPOLLIN, admin_on_accept, a);
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
    if (a->fd >= 0) {
        server_unwatch_fd(a->s, a->fd);
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
    for (size_t i = 0; i < a->nsections; i++)
        if (strcmp(a->sections[i].name, name) == 0)
            return -EEXIST;
    a->sections = xrealloc(a->sections, (a->nsections + 1) * sizeof(*a->sections));
    a->sections[a->nsections++] = (struct admin_section){xstrdup(name), fn, arg};
    return 0;
}

void admin_client_hold(struct admin_client *c)
{
    c->held = true;
    c->refs++;
}

void admin_client_reply(struct admin_client *c, const char *json, size_t len)
{
    c->held = false;
    if (c->fd >= 0) {
        client_send(c, json, len);
        client_rearm_idle(c);
        /* Requests that arrived meanwhile are handled now. */
        client_process(c);
    }
    client_unref(c);
}

/* ---- client side ---- */

int admin_call(const char *path, const char *line, struct buf *reply, int timeout_ms, char *err,
               size_t errlen)
{
    struct sockaddr_un sun;
    int r = fill_sockaddr(path, &sun, err, errlen);
    if (r < 0)
        return r;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        r = -errno;
        snprintf(err, errlen, "socket: %s", strerror(-r));
        return r;
    }
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        r = -errno;
        if (r == -ENOENT)
            snprintf(err, errlen, "no server running (admin socket '%s' does not exist)", path);
        else if (r == -ECONNREFUSED)
            snprintf(err, errlen, "no server running (nothing listens on admin socket '%s')", path);
        else if (r == -EACCES || r == -EPERM)
            snprintf(err, errlen, "cannot access admin socket '%s': %s", path, strerror(-r));
        else
            snprintf(err, errlen, "cannot connect to admin socket '%s': %s", path, strerror(-r));
        goto fail;
    }
    size_t len = strlen(line);
    struct buf out;
    buf_init(&out, ADMIN_LINE_MAX);
    if (buf_append(&out, line, len) < 0 || buf_append(&out, "\n", 1) < 0) {
        buf_finish(&out);
        r = -E2BIG;
        snprintf(err, errlen, "request too long for the admin protocol");
        goto fail;
    }
    for (size_t off = 0; off < out.len;) {
        ssize_t n = send(fd, out.data + off, out.len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            buf_finish(&out);
            snprintf(err, errlen, "admin socket '%s': write: %s", path, strerror(-r));
            goto fail;
        }
        off += (size_t)n;
    }
    buf_finish(&out);
    uint64_t deadline = timeout_ms < 0 ? 0 : time_mono_ms() + (uint64_t)timeout_ms;
    for (;;) {
        const char *nl = reply->data ? memchr(reply->data, '\n', reply->len) : NULL;
        if (nl) {
            reply->len = (size_t)(nl - reply->data);
            reply->data[reply->len] = '\0';
            close(fd);
            return 0;
        }
        int wait = -1;
        if (timeout_ms >= 0) {
            uint64_t now = time_mono_ms();
            if (now >= deadline) {
                r = -ETIMEDOUT;
                snprintf(err, errlen, "no reply from the server within %d ms", timeout_ms);
                goto fail;
            }
            wait = (int)(deadline - now);
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, wait);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        char tmp[4096];
        ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
        if (n < 0 && errno == EINTR)
            continue;
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
