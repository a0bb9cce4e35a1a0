/* The /_test/ relay handler (see test_upstream.h): one non-blocking unix
 * socket per request, watched on the connection's worker loop. */
#include "test_upstream.h"

#include "common/alloc.h"
#include "common/evloop.h"
#include "http/parser.h"
#include "http/response.h"
#include "http/server.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define UP_TIMEOUT_MS 5000
#define UP_READ_SIZE (64 * 1024)
/* Upstream reads per readiness event, so one upstream cannot starve the loop. */
#define UP_READS_PER_EVENT 16
#define UP_HEAD_MAX 64

/* One relayed request. Owned by the connection's producer from conn_defer()
 * until stop() runs or the response is complete (up_finish()). */
struct up {
    struct conn *c;
    struct evloop *loop;
    int fd;            /* the upstream socket; owned */
    uint32_t watching; /* events currently watched on fd; 0: not in the loop */
    bool body_blocked; /* the sink took less: wait for EPOLLOUT, then resume */
    bool paused;       /* the response queue is full: wait for proceed() */
    bool head_parsed;  /* "STATUS LENGTH\n" was read and the response started */
    int64_t left;      /* declared body bytes still to come; -1: until EOF */
    char head[UP_HEAD_MAX];
    size_t head_len;
};

static void up_event(struct evloop *l, int fd, uint32_t events, void *arg);

/* Watch what the state needs: the reply unless paused, writability while the
 * body is blocked. An fd with nothing to wait for leaves the loop entirely, or
 * EPOLLHUP (always reported) would fire level-triggered while paused. */
static void up_watch(struct up *u)
{
    uint32_t ev = (u->paused ? 0 : EPOLLIN) | (u->body_blocked ? EPOLLOUT : 0);
    if (ev == u->watching)
        return;
    if (!ev)
        evloop_fd_del(u->loop, u->fd);
    else if (!u->watching)
        evloop_fd_add(u->loop, u->fd, ev, up_event, u);
    else
        evloop_fd_mod(u->loop, u->fd, ev);
    u->watching = ev;
}

/* Release everything u owns; the connection no longer refers to it. */
static void up_free(struct up *u)
{
    if (u->watching)
        evloop_fd_del(u->loop, u->fd);
    close(u->fd);
    free(u);
}

/* ---- producer ---- */

static void up_proceed(struct conn *c, void *arg)
{
    struct up *u = arg;
    u->paused = false;
    up_watch(u);
}

static void up_stop(struct conn *c, void *arg)
{
    up_free(arg);
}

static const struct conn_producer up_producer = {up_proceed, up_stop};

/* ---- request body: client -> upstream ---- */

static size_t up_body_data(struct conn *c, void *arg, const char *p, size_t len)
{
    struct up *u = arg;
    ssize_t n = send(u->fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        return len; /* the upstream is gone; its EOF or error ends the response */
    if (n < 0)
        n = 0;
    if ((size_t)n < len) {
        u->body_blocked = true;
        up_watch(u);
    }
    return (size_t)n;
}

static void up_body_end(struct conn *c, void *arg)
{
    struct up *u = arg;
    shutdown(u->fd, SHUT_WR);
}

static const struct conn_body_sink up_sink = {up_body_data, up_body_end};

/* ---- reply: upstream -> client ---- */

/* Parse "STATUS LENGTH\n" from the front of (p, n) into u->head and start the
 * response. Returns the bytes used, or -1 when the head is malformed. */
static ssize_t up_head(struct up *u, const char *p, size_t n)
{
    const char *nl = memchr(p, '\n', n);
    size_t take = nl ? (size_t)(nl - p) + 1 : n;
    if (u->head_len + take >= sizeof(u->head))
        return -1;
    memcpy(u->head + u->head_len, p, take);
    u->head_len += take;
    if (!nl)
        return (ssize_t)take;
    u->head[u->head_len] = '\0';
    char *end;
    long status = strtol(u->head, &end, 10);
    if (end == u->head || *end != ' ' || status < 100 || status > 999)
        return -1;
    /* The response starts with a valid status, before the length is
     * checked: a bad length then aborts a response that has started (as a
     * handler copying upstream headers one by one would). */
    conn_respond_start(u->c, (int)status);
    conn_respond_header(u->c, "Content-Type", "application/octet-stream");
    long long length = strtoll(end + 1, &end, 10);
    if (*end != '\n' || length < -1)
        return -1;
    u->head_parsed = true;
    u->left = length;
    conn_respond_stream(u->c, length);
    return (ssize_t)take;
}

/* The response is complete (ended or aborted): the producer is detached. */
static void up_finish(struct up *u, bool ok)
{
    if (ok)
        conn_body_end(u->c);
    else
        conn_respond_abort(u->c);
    up_free(u);
}

static void up_read(struct up *u)
{
    char buf[UP_READ_SIZE];
    for (int i = 0; i < UP_READS_PER_EVENT && !u->paused; i++) {
        ssize_t n = recv(u->fd, buf, sizeof(buf), 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            /* EOF ends a started response; before a head it is a failure. */
            up_finish(u, n == 0 && u->head_parsed);
            return;
        }
        const char *p = buf;
        size_t len = (size_t)n;
        if (!u->head_parsed) {
            ssize_t used = up_head(u, p, len);
            if (used < 0) {
                up_finish(u, false);
                return;
            }
            p += used;
            len -= (size_t)used;
        }
        if (len && conn_body_append(u->c, p, len) < 0) {
            up_finish(u, false); /* more than the declared length */
            return;
        }
        if (u->head_parsed && u->left >= 0) {
            /* A declared length ends the response without waiting for EOF
             * (the upstream may still be reading the request body). */
            u->left -= (int64_t)len;
            if (u->left == 0) {
                up_finish(u, true);
                return;
            }
        }
        if (u->head_parsed && !conn_body_wants_more(u->c)) {
            u->paused = true;
            up_watch(u);
        }
    }
}

static void up_event(struct evloop *l, int fd, uint32_t events, void *arg)
{
    struct up *u = arg;
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && u->body_blocked) {
        u->body_blocked = false;
        up_watch(u);
        conn_body_resume(u->c);
    }
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && !u->paused)
        up_read(u); /* may free u */
}

/* ---- the handler ---- */

static uint64_t up_timeout(const struct http_request *req)
{
    struct http_str v = http_find_header(req, "x-test-timeout-ms");
    char num[24];
    if (!v.p || v.len == 0 || v.len >= sizeof(num))
        return UP_TIMEOUT_MS;
    memcpy(num, v.p, v.len);
    num[v.len] = '\0';
    char *end;
    unsigned long long ms = strtoull(num, &end, 10);
    return *end ? UP_TIMEOUT_MS : (uint64_t)ms;
}

/* A connected non-blocking socket to the upstream (the caller owns it), or
 * -errno. A full backlog is an error (EAGAIN), not a wait. */
static int up_connect(void)
{
    const char *path = getenv("FERRY_TEST_UPSTREAM");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!path || strlen(path) >= sizeof(sa.sun_path))
        return -EINVAL;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (const struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static int up_handle(struct conn *c, const struct http_request *req, void *arg)
{
    static const char prefix[] = "/_test/";
    if (!req->path.p || req->path.len < sizeof(prefix) - 1 ||
        memcmp(req->path.p, prefix, sizeof(prefix) - 1) != 0)
        return HANDLER_PASS;
    int fd = up_connect();
    /* The request line goes out at once: a fresh unix socket's buffer takes it. */
    char line[4096];
    int n = snprintf(line, sizeof(line), "%.*s %.*s\n", (int)req->method.len, req->method.p,
                     (int)req->path.len, req->path.p);
    if (fd >= 0 && (n >= (int)sizeof(line) || send(fd, line, (size_t)n, MSG_NOSIGNAL) != n)) {
        close(fd);
        fd = -EIO;
    }
    if (fd < 0) {
        conn_respond_simple(c, 502, "text/plain", "502 Bad Gateway: no test upstream\n");
        return HANDLER_DONE;
    }
    /* u owns fd from here; the connection's producer owns u (up_stop, up_finish). */
    struct up *u = xcalloc(1, sizeof(*u));
    u->c = c;
    u->loop = conn_loop(c);
    u->fd = fd;
    int r = conn_defer(c, &up_producer, u, up_timeout(req));
    up_watch(u);
    conn_body_read(c, &up_sink); /* a request without a body ends at once */
    return r;
}

int test_upstream_install(struct server *s)
{
    server_set_handler(s, HANDLER_SLOT_BACKEND, up_handle, NULL);
    return 0;
}
