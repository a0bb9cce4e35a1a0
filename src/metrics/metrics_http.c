#include "metrics/metrics_http.h"

#include "common/alloc.h"
#include "common/buf.h"
#include "common/conf.h"
#include "common/evloop.h"
#include "common/net.h"
#include "metrics/metrics.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEAD_MAX 8192
#define HEAD_TIMEOUT_MS 5000
#define SEND_TIMEOUT_MS 10000
#define MAX_CLIENTS 32

struct mclient {
    struct metrics_http *h;
    struct mclient *prev, *next; /* h->clients, oldest first */
    int fd;
    bool writing;
    char in[HEAD_MAX];
    size_t in_len;
    struct buf out;
    size_t out_off;
    struct evloop_timer timer;
};

struct metrics_http {
    const struct ferry_conf *conf;
    struct metrics *m;
    struct net_cidr *allow;
    size_t nallow;
    int lfd;
    struct evloop *loop;
    pthread_t thread;
    bool started;
    struct mclient *clients, *last;
    size_t nclients;
};

static void client_close(struct mclient *c)
{
    struct metrics_http *h = c->h;
    evloop_timer_stop(h->loop, &c->timer);
    evloop_fd_del(h->loop, c->fd);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        h->last = c->prev;
    h->nclients--;
    buf_finish(&c->out);
    free(c);
}

static void client_timeout(struct evloop *l, void *arg)
{
    client_close(arg);
}

static bool peer_allowed(const struct metrics_http *h, const struct sockaddr *sa)
{
    for (size_t i = 0; i < h->nallow; i++)
        if (net_cidr_match(&h->allow[i], sa))
            return true;
    return false;
}

/* Write what is left of out; close when done or on error. */
static void client_write(struct mclient *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            evloop_fd_mod(c->h->loop, c->fd, EPOLLOUT);
            return;
        }
        if (n <= 0) {
            client_close(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    /* The whole head was read, so closing now sends FIN, not a reset. */
    shutdown(c->fd, SHUT_WR);
    client_close(c);
}

static void respond(struct mclient *c, int status, const char *reason, const char *extra,
                    const char *type, const char *body, size_t len, bool head)
{
    buf_reset(&c->out);
    buf_printf(&c->out,
               "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
               "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
               status, reason, type, len, extra ? extra : "");
    if (!head)
        buf_append(&c->out, body, len);
    c->writing = true;
    evloop_timer_start(c->h->loop, &c->timer, SEND_TIMEOUT_MS);
    client_write(c);
}

static void respond_text(struct mclient *c, int status, const char *reason, const char *extra,
                         bool head)
{
    char body[64];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, reason);
    respond(c, status, reason, extra, "text/plain", body, (size_t)n, head);
}

/* The head is complete in c->in: answer it. */
static void client_answer(struct mclient *c)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) < 0 ||
        !peer_allowed(c->h, (struct sockaddr *)&ss)) {
        respond_text(c, 403, "Forbidden", NULL, false);
        return;
    }
    /* The request line: METHOD SP TARGET SP HTTP/1.x */
    const char *p = c->in, *end = memchr(c->in, '\n', c->in_len);
    const char *sp1 = memchr(p, ' ', (size_t)(end - p));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || (size_t)(end - sp2) < 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        respond_text(c, 400, "Bad Request", NULL, false);
        return;
    }
    size_t mlen = (size_t)(sp1 - p);
    const char *target = sp1 + 1;
    size_t tlen = (size_t)(sp2 - target);
    const char *q = memchr(target, '?', tlen);
    size_t plen = q ? (size_t)(q - target) : tlen;
    bool head = mlen == 4 && memcmp(p, "HEAD", 4) == 0;
    if (plen != 8 || memcmp(target, "/metrics", 8) != 0) {
        respond_text(c, 404, "Not Found", NULL, head);
        return;
    }
    if (!head && !(mlen == 3 && memcmp(p, "GET", 3) == 0)) {
        respond_text(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n", false);
        return;
    }
    struct buf body;
    buf_init(&body, METRICS_TEXT_MAX);
    if (metrics_write_text(c->h->m, &body) < 0)
        respond_text(c, 500, "Internal Server Error", NULL, head);
    else
        respond(c, 200, "OK", NULL, "text/plain; version=0.0.4; charset=utf-8",
                body.data ? body.data : "", body.len, head);
    buf_finish(&body);
}

static bool head_complete(const struct mclient *c)
{
    for (size_t i = 1; i < c->in_len; i++)
        if (c->in[i] == '\n' &&
            (c->in[i - 1] == '\n' || (i >= 2 && c->in[i - 1] == '\r' && c->in[i - 2] == '\n')))
            return true;
    return false;
}

static void client_event(struct evloop *l, int fd, uint32_t events, void *arg)
{
    struct mclient *c = arg;
    if (c->writing) {
        if (events & (EPOLLERR | EPOLLHUP))
            client_close(c);
        else
            client_write(c);
        return;
    }
    ssize_t n = recv(fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        client_close(c);
        return;
    }
    c->in_len += (size_t)n;
    if (head_complete(c)) {
        evloop_fd_mod(l, fd, 0);
        client_answer(c);
    } else if (c->in_len == sizeof(c->in)) {
        evloop_fd_mod(l, fd, 0);
        respond_text(c, 431, "Request Header Fields Too Large", NULL, false);
    }
}

static void on_accept(struct evloop *l, int lfd, uint32_t events, void *arg)
{
    struct metrics_http *h = arg;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        /* Out of slots: the oldest client makes room (a scraper retries). */
        if (h->nclients >= MAX_CLIENTS)
            client_close(h->clients);
        struct mclient *c = xcalloc(1, sizeof(*c));
        c->h = h;
        c->fd = fd;
        buf_init(&c->out, METRICS_TEXT_MAX + 4096);
        evloop_timer_init(&c->timer, client_timeout, c);
        if (evloop_fd_add(l, fd, EPOLLIN | EPOLLRDHUP, client_event, c) < 0) {
            close(fd);
            buf_finish(&c->out);
            free(c);
            continue;
        }
        c->prev = h->last;
        if (h->last)
            h->last->next = c;
        else
            h->clients = c;
        h->last = c;
        h->nclients++;
        evloop_timer_start(l, &c->timer, HEAD_TIMEOUT_MS);
    }
}

static void *thread_main(void *arg)
{
    struct metrics_http *h = arg;
    evloop_run(h->loop);
    return NULL;
}

static void on_stop(struct evloop *l, void *arg)
{
    evloop_stop(l);
}

void metrics_http_stop(struct metrics_http *h)
{
    if (!h)
        return;
    if (h->started) {
        evloop_post(h->loop, on_stop, h);
        pthread_join(h->thread, NULL);
    }
    while (h->clients)
        client_close(h->clients);
    if (h->lfd >= 0) {
        if (h->loop)
            evloop_fd_del(h->loop, h->lfd);
        close(h->lfd);
    }
    evloop_destroy(h->loop);
    free(h->allow);
    free(h);
}

int metrics_http_start(const struct ferry_conf *conf, struct metrics *m, struct metrics_http **out,
                       char *err, size_t errlen)
{
    *out = NULL;
    if (!conf->metrics.listen || !conf->metrics.listen[0])
        return 0;
    struct metrics_http *h = xcalloc(1, sizeof(*h));
    h->conf = conf;
    h->m = m;
    h->lfd = -1;
    int r;
    const struct conf_list *from = &conf->metrics.allow_from;
    h->allow = xcalloc(from->count + 1, sizeof(*h->allow));
    for (size_t i = 0; i < from->count; i++) {
        if (net_parse_cidr(from->items[i], &h->allow[i]) < 0) {
            snprintf(err, errlen, "[metrics] allow_from: cannot parse '%s'", from->items[i]);
            r = -EINVAL;
            goto fail;
        }
    }
    h->nallow = from->count;
    struct net_addr addr;
    if (net_parse_addr(conf->metrics.listen, &addr) < 0) {
        snprintf(err, errlen, "[metrics] listen: cannot parse '%s'", conf->metrics.listen);
        r = -EINVAL;
        goto fail;
    }
    h->lfd = net_listen(&addr, 64);
    if (h->lfd < 0) {
        r = h->lfd;
        snprintf(err, errlen, "[metrics] listen %s: %s", conf->metrics.listen, strerror(-r));
        goto fail;
    }
    h->loop = evloop_create();
    if (!h->loop) {
        r = -errno;
        snprintf(err, errlen, "metrics: event loop: %s", strerror(-r));
        goto fail;
    }
    r = evloop_fd_add(h->loop, h->lfd, EPOLLIN, on_accept, h);
    if (r < 0) {
        snprintf(err, errlen, "metrics: %s", strerror(-r));
        goto fail;
    }
    /* Signals belong to the thread that started us. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    r = -pthread_create(&h->thread, NULL, thread_main, h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r < 0) {
        snprintf(err, errlen, "metrics: thread: %s", strerror(-r));
        goto fail;
    }
    h->started = true;
    *out = h;
    return 0;
fail:
    metrics_http_stop(h);
    return r;
}
