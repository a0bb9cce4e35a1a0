/* One HTTP connection: read a request head, run the handler chain, write the
 * response (writev for memory, sendfile for files), keep-alive and pipelining,
 * timeouts, lingering close after errors, and the access log line. */
#include "http/internal.h"
#include "http/response.h"

#include "common/alloc.h"
#include "common/conf.h"
#include "common/log.h"
#include "common/net.h"
#include "common/timeutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define LINGER_MAX_BYTES (256 * 1024)
#define LINGER_MS 2000
#define OUT_MAX (1024 * 1024)

static int conn_write(struct conn *c);
static void request_done(struct conn *c);
static void access_log_write(struct conn *c);

static const char *status_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

const char *worker_date(struct worker *w)
{
    time_t now = evloop_wall(w->loop);
    if (now != w->date_time) {
        w->date_time = now;
        time_format_http(now, w->date);
    }
    return w->date;
}

/* ---- timeouts ---- */

void worker_timer_set(struct worker *w, struct conn *c, uint64_t deadline)
{
    evloop_timer_at(w->loop, &c->timer, deadline);
}

static void conn_timer_fired(struct evloop *l, void *arg)
{
    conn_on_timeout(arg);
}

/* ---- buffers ---- */

static void conn_in_release(struct conn *c)
{
    struct worker *w = c->w;
    /* Idle connections hold no buffer; a small pool saves malloc churn. */
    if (c->in && w->in_pool_len < IN_POOL_MAX)
        w->in_pool[w->in_pool_len++] = c->in;
    else
        free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = 0;
}

static void conn_in_ensure(struct conn *c)
{
    if (c->in)
        return;
    /* One byte more than the largest head, so a full buffer without a complete
     * head is unambiguously too large. */
    struct worker *w = c->w;
    c->in_cap = w->srv->limits.max_header_size + 1;
    c->in = w->in_pool_len ? w->in_pool[--w->in_pool_len] : xmalloc(c->in_cap);
    c->in_len = 0;
}

/* While a response waits for EPOLLOUT the connection is registered for
 * EPOLLOUT alone: a client that half-closed would otherwise keep a
 * level-triggered EPOLLRDHUP firing until the write completes. */
static void set_events(struct conn *c, uint32_t ev)
{
    evloop_fd_mod(c->w->loop, c->fd, ev);
}

static void conn_fd_event(struct evloop *l, int fd, uint32_t events, void *arg)
{
    conn_on_event(arg, events);
}

/* ---- lifecycle ---- */

struct conn *conn_create(struct worker *w, int fd, const struct sockaddr *peer, socklen_t len)
{
    struct conn *c = xcalloc(1, sizeof(*c));
    c->fd = fd;
    c->w = w;
    c->file_fd = -1;
    memcpy(&c->peer, peer, len < sizeof(c->peer) ? len : sizeof(c->peer));
    buf_init(&c->out, OUT_MAX);
    /* A new connection is reading its first head from the start: header_timeout
     * counts from the accept, not from the first byte. */
    c->state = CONN_HEAD;
    evloop_timer_init(&c->timer, conn_timer_fired, c);
    if (evloop_fd_add(w->loop, fd, EPOLLIN | EPOLLRDHUP, conn_fd_event, c) < 0) {
        buf_finish(&c->out);
        free(c);
        return NULL;
    }
    c->all_next = w->all;
    if (w->all)
        w->all->all_prev = c;
    w->all = c;
    const struct ferry_conf *conf = w->srv->conf;
    /* A new connection must send its head within header_timeout. */
    worker_timer_set(w, c, evloop_now(w->loop) + conf->server.header_timeout_ms);
    atomic_fetch_add_explicit(&w->stat_conns_open, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->stat_conns_total, 1, memory_order_relaxed);
    return c;
}

static void response_release(struct conn *c)
{
    if (c->body_release) {
        c->body_release(c->body_arg);
        c->body_release = NULL;
    }
    c->body = NULL;
    c->body_len = c->body_off = 0;
    if (c->file_fd >= 0) {
        close(c->file_fd);
        c->file_fd = -1;
    }
    c->file_rem = 0;
    c->head_end = 0;
    buf_reset(&c->out);
    c->out_off = 0;
}

static void request_end_counters(struct conn *c)
{
    if (!c->in_request)
        return;
    struct worker *w = c->w;
    c->in_request = false;
    /* Exempt first: a reader between the two must never see fewer non-exempt
     * requests in flight than there are (`ferry down --drain` trusts it). */
    if (c->exempt)
        atomic_fetch_sub_explicit(&w->stat_inflight_exempt, 1, memory_order_release);
    uint64_t left = atomic_fetch_sub_explicit(&w->stat_inflight, 1, memory_order_release) - 1;
    c->exempt = false;
    struct server *s = w->srv;
    if (atomic_load_explicit(&s->idle_watch, memory_order_acquire) &&
        left <= atomic_load_explicit(&w->stat_inflight_exempt, memory_order_relaxed)) {
        uint64_t one = 1;
        ssize_t r = write(s->idle_fd, &one, sizeof(one));
        (void)r;
    }
}

void conn_destroy(struct conn *c)
{
    struct worker *w = c->w;
    if (c->in_request && c->responding)
        access_log_write(c); /* a response cut short is logged with what was sent */
    request_end_counters(c);
    response_release(c);
    evloop_timer_stop(w->loop, &c->timer);
    evloop_fd_del(w->loop, c->fd);
    close(c->fd);
    if (c->all_prev)
        c->all_prev->all_next = c->all_next;
    else
        w->all = c->all_next;
    if (c->all_next)
        c->all_next->all_prev = c->all_prev;
    conn_in_release(c);
    buf_finish(&c->out);
    atomic_fetch_sub_explicit(&w->stat_conns_open, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&w->srv->conns_total_open, 1, memory_order_relaxed);
    free(c);
    /* A stopping worker ends its loop with its last connection. */
    if (w->stopping && !w->all)
        evloop_stop(w->loop);
}

/* Stop reading, send what is queued, then discard input for a while before
 * closing, so the client reads our error response instead of a reset. */
static void conn_linger(struct conn *c)
{
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_LINGER;
    c->linger_bytes = 0;
    set_events(c, EPOLLIN | EPOLLRDHUP);
    worker_timer_set(c->w, c, evloop_now(c->w->loop) + LINGER_MS);
}

/* ---- access log ---- */

static void log_escaped(struct buf *b, const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
            buf_printf(b, "\\x%02X", ch);
        else
            buf_append(b, &p[i], 1);
    }
}

static void log_span_write(struct buf *b, const struct conn *c, struct log_span s)
{
    if (!s.len || !c->in)
        buf_append(b, "-", 1);
    else
        log_escaped(b, c->in + s.off, s.len);
}

static struct log_span span_of(const struct conn *c, struct http_str s)
{
    struct log_span sp = {0, 0};
    if (s.p && c->in && s.p >= c->in && s.p + s.len <= c->in + c->in_len) {
        sp.off = (uint32_t)(s.p - c->in);
        sp.len = (uint32_t)s.len;
    }
    return sp;
}

/* Body bytes that actually went out, as nginx's $body_bytes_sent: a response
 * the client cut short logs what it got. */
static uint64_t body_bytes_sent(const struct conn *c)
{
    uint64_t n = c->out_off > c->head_end ? c->out_off - c->head_end : 0;
    n += c->body_off;
    if (c->file_fd >= 0) /* open until the response is released */
        n += (uint64_t)(c->file_off - c->file_start);
    return n;
}

static void access_log_write(struct conn *c)
{
    struct worker *w = c->w;
    if (w->srv->access_fd < 0)
        return;
    char ip[64];
    net_format_ip((const struct sockaddr *)&c->peer, ip, sizeof(ip));
    if (w->log_time != evloop_wall(w->loop)) {
        struct tm tm;
        w->log_time = evloop_wall(w->loop);
        gmtime_r(&w->log_time, &tm);
        strftime(w->log_when, sizeof(w->log_when), "%d/%b/%Y:%H:%M:%S +0000", &tm);
    }
    struct buf *b = &w->access;
    buf_printf(b, "%s - - [%s] \"", ip, w->log_when);
    if (c->lg_method.len) {
        log_span_write(b, c, c->lg_method);
        buf_append(b, " ", 1);
        log_span_write(b, c, c->lg_target);
        buf_printf(b, " HTTP/1.%d", c->minor_version);
    } else {
        buf_append(b, "-", 1);
    }
    buf_printf(b, "\" %d %llu \"", c->status, (unsigned long long)body_bytes_sent(c));
    log_span_write(b, c, c->lg_referer);
    buf_append(b, "\" \"", 3);
    log_span_write(b, c, c->lg_ua);
    buf_append(b, "\"\n", 2);
    if (b->len > 32 * 1024)
        worker_access_flush(w);
}

void worker_access_flush(struct worker *w)
{
    if (!w->access.len || w->srv->access_fd < 0)
        return;
    /* O_APPEND makes each write land whole at the end, even from several workers. */
    ssize_t r = write(w->srv->access_fd, w->access.data, w->access.len);
    (void)r;
    buf_reset(&w->access);
}

/* ---- response API (response.h) ---- */

const struct ferry_state *conn_state(const struct conn *c)
{
    return c->w->state;
}

const struct sockaddr *conn_peer(const struct conn *c)
{
    return (const struct sockaddr *)&c->peer;
}

void conn_set_close(struct conn *c)
{
    c->keep_alive = false;
}

void conn_mark_exempt(struct conn *c)
{
    if (c->in_request && !c->exempt) {
        c->exempt = true;
        atomic_fetch_add_explicit(&c->w->stat_inflight_exempt, 1, memory_order_relaxed);
    }
}

void conn_count_maint_served(struct conn *c)
{
    atomic_fetch_add_explicit(&c->w->stat_maint_served, 1, memory_order_relaxed);
}

void conn_count_maint_bypassed(struct conn *c)
{
    atomic_fetch_add_explicit(&c->w->stat_maint_bypassed, 1, memory_order_relaxed);
}

static void out_str(struct conn *c, const char *s, size_t len)
{
    /* The head is bounded by OUT_MAX; a handler exceeding it is a bug that
     * would truncate, so fail loudly rather than send a broken response. */
    if (buf_append(&c->out, s, len) < 0)
        abort();
}

#define OUT_LIT(c, lit) out_str((c), (lit), sizeof(lit) - 1)

void conn_respond_start(struct conn *c, int status)
{
    buf_reset(&c->out);
    c->out_off = 0;
    c->status = status;
    c->responding = true;
    /* Built by hand: snprintf was a measurable share of the user time. */
    char line[64];
    const char *reason = status_reason(status);
    size_t rlen = strlen(reason);
    memcpy(line, "HTTP/1.1 ", 9);
    line[9] = (char)('0' + status / 100 % 10);
    line[10] = (char)('0' + status / 10 % 10);
    line[11] = (char)('0' + status % 10);
    line[12] = ' ';
    memcpy(line + 13, reason, rlen);
    memcpy(line + 13 + rlen, "\r\n", 2);
    out_str(c, line, 15 + rlen);
    OUT_LIT(c, "Server: ferry\r\nDate: ");
    out_str(c, worker_date(c->w), 29);
    OUT_LIT(c, "\r\n");
}

void conn_respond_header(struct conn *c, const char *name, const char *value)
{
    out_str(c, name, strlen(name));
    OUT_LIT(c, ": ");
    out_str(c, value, strlen(value));
    OUT_LIT(c, "\r\n");
}

void conn_respond_headers_raw(struct conn *c, const char *p, size_t len)
{
    out_str(c, p, len);
}

static void finish_head(struct conn *c, uint64_t content_length, bool has_length)
{
    if (c->w->stopping)
        c->keep_alive = false;
    if (has_length) {
        char num[24];
        size_t i = sizeof(num);
        uint64_t v = content_length;
        do {
            num[--i] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        OUT_LIT(c, "Content-Length: ");
        out_str(c, num + i, sizeof(num) - i);
        OUT_LIT(c, "\r\n");
    }
    if (!c->keep_alive)
        OUT_LIT(c, "Connection: close\r\n");
    else if (c->minor_version == 0)
        OUT_LIT(c, "Connection: keep-alive\r\n");
    OUT_LIT(c, "\r\n");
    c->head_end = c->out.len;
}

static bool status_has_body(int status)
{
    return !(status == 304 || status == 204 || (status >= 100 && status < 200));
}

void conn_respond_body(struct conn *c, const void *p, size_t len, void (*release)(void *),
                       void *arg)
{
    bool body = status_has_body(c->status);
    finish_head(c, len, body);
    if (!body || c->head_only || len == 0) {
        if (release)
            release(arg);
        return;
    }
    if (release) {
        c->body = p;
        c->body_len = len;
        c->body_off = 0;
        c->body_release = release;
        c->body_arg = arg;
    } else {
        out_str(c, p, len);
    }
}

void conn_respond_file(struct conn *c, int fd, off_t offset, off_t len)
{
    finish_head(c, (uint64_t)len, true);
    if (c->head_only || len == 0) {
        close(fd);
        return;
    }
    c->file_fd = fd;
    c->file_off = offset;
    c->file_start = offset;
    c->file_rem = len;
}

void conn_respond_simple(struct conn *c, int status, const char *content_type, const char *body)
{
    conn_respond_start(c, status);
    if (content_type)
        conn_respond_header(c, "Content-Type", content_type);
    conn_respond_body(c, body, strlen(body), NULL, NULL);
}

/* The socket is full: wait for EPOLLOUT, at most send_timeout. */
static void conn_wait_writable(struct conn *c)
{
    set_events(c, EPOLLOUT);
    worker_timer_set(c->w, c, evloop_now(c->w->loop) + c->w->srv->conf->server.send_timeout_ms);
}

/* An error before or instead of handling: answer and close (framing in doubt). */
static void conn_error(struct conn *c, int status)
{
    char body[96];
    snprintf(body, sizeof(body), "%d %s\n", status, status_reason(status));
    c->keep_alive = false;
    if (!c->in_request) {
        c->in_request = true;
        atomic_fetch_add_explicit(&c->w->stat_inflight, 1, memory_order_relaxed);
    }
    conn_respond_simple(c, status, "text/plain", body);
    c->state = CONN_WRITE;
    int r = conn_write(c);
    if (r == 0)
        conn_wait_writable(c);
    else if (r == 1)
        request_done(c);
}

/* ---- the request cycle ---- */

static void request_done(struct conn *c)
{
    struct worker *w = c->w;
    access_log_write(c);
    atomic_fetch_add_explicit(&w->stat_requests, 1, memory_order_relaxed);
    request_end_counters(c);
    response_release(c);
    c->responding = false;
    c->lg_method.len = c->lg_target.len = c->lg_referer.len = c->lg_ua.len = 0;
    if (!c->keep_alive || w->stopping) {
        c->in_len = 0;
        c->head_len = 0;
        conn_linger(c);
        return;
    }
    /* Keep pipelined bytes that followed this request's head. */
    if (c->head_len) {
        memmove(c->in, c->in + c->head_len, c->in_len - c->head_len);
        c->in_len -= c->head_len;
        c->head_len = 0;
    }
    c->status = 0;
    if (c->in_len) {
        c->state = CONN_HEAD;
        worker_timer_set(w, c, evloop_now(w->loop) + w->srv->conf->server.header_timeout_ms);
    } else {
        c->state = CONN_IDLE;
        conn_in_release(c);
        /* 10,000 idle keep-alive connections should cost little memory. */
        if (c->out.cap > 1024)
            buf_finish(&c->out);
        worker_timer_set(w, c, evloop_now(w->loop) + w->srv->conf->server.keepalive_timeout_ms);
    }
}

/* Returns 1 when the response is fully written, 0 when the socket is full, -1
 * when the connection was destroyed. */
static int conn_write(struct conn *c)
{
    for (;;) {
        size_t head_left = c->out.len - c->out_off;
        size_t body_left = c->body ? c->body_len - c->body_off : 0;
        if (head_left || body_left) {
            struct iovec iov[2];
            int cnt = 0;
            if (head_left) {
                iov[cnt].iov_base = c->out.data + c->out_off;
                iov[cnt++].iov_len = head_left;
            }
            if (body_left) {
                iov[cnt].iov_base = (void *)(uintptr_t)(c->body + c->body_off);
                iov[cnt++].iov_len = body_left;
            }
            struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
            ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | (c->file_rem ? MSG_MORE : 0));
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    return 0;
                conn_destroy(c);
                return -1;
            }
            size_t k = (size_t)n;
            size_t h = k < head_left ? k : head_left;
            c->out_off += h;
            c->body_off += k - h;
            continue;
        }
        if (c->file_rem > 0) {
            size_t want = c->file_rem > (1 << 30) ? (1 << 30) : (size_t)c->file_rem;
            ssize_t n = sendfile(c->fd, c->file_fd, &c->file_off, want);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    return 0;
                conn_destroy(c);
                return -1;
            }
            if (n == 0) {
                /* The file shrank under us: the promised length cannot be
                 * delivered, so the connection must end. */
                conn_destroy(c);
                return -1;
            }
            c->file_rem -= n;
            continue;
        }
        return 1;
    }
}

static void dispatch(struct conn *c, struct http_request *req)
{
    struct server *s = c->w->srv;
    c->in_request = true;
    c->exempt = false;
    atomic_fetch_add_explicit(&c->w->stat_inflight, 1, memory_order_relaxed);
    c->minor_version = req->minor_version;
    c->head_only = req->method_id == HTTP_M_HEAD;
    c->keep_alive = req->keep_alive && s->conf->server.keepalive_timeout_ms > 0;
    /* No handler reads request bodies yet: close afterwards instead of
     * guessing where the next request starts. */
    if (req->content_length > 0 || req->chunked)
        c->keep_alive = false;
    c->lg_method = span_of(c, req->method);
    c->lg_target = span_of(c, req->target);
    c->lg_referer = span_of(c, req->referer);
    c->lg_ua = span_of(c, req->user_agent);
    c->responding = false;
    for (int i = 0; i < HANDLER_SLOT_COUNT; i++) {
        struct handler_entry *h = &s->handlers[i];
        if (h->fn && h->fn(c, req, h->arg) == HANDLER_DONE)
            break;
    }
    if (!c->responding)
        conn_respond_simple(c, 500, "text/plain", "500 Internal Server Error\n");
}

static void conn_process(struct conn *c)
{
    struct worker *w = c->w;
    while (c->state == CONN_HEAD) {
        struct http_request *req = &w->req;
        int r = http_parse_request(c->in, c->in_len, &w->srv->limits, req);
        if (r == -2) {
            if (c->in_len >= c->in_cap)
                conn_error(c, 431);
            return;
        }
        if (r < 0) {
            int status = req->error_status ? req->error_status : 400;
            conn_error(c, status);
            return;
        }
        c->head_len = (size_t)r;
        c->state = CONN_WRITE;
        dispatch(c, req);
        int wr = conn_write(c);
        if (wr < 0)
            return;
        if (wr == 0) {
            conn_wait_writable(c);
            return;
        }
        request_done(c);
    }
}

static void conn_read(struct conn *c)
{
    struct worker *w = c->w;
    conn_in_ensure(c);
    if (c->in_len >= c->in_cap) {
        conn_process(c);
        return;
    }
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        conn_destroy(c);
        return;
    }
    if (n == 0) {
        conn_destroy(c);
        return;
    }
    c->in_len += (size_t)n;
    if (c->state == CONN_IDLE) {
        c->state = CONN_HEAD;
        worker_timer_set(w, c, evloop_now(w->loop) + w->srv->conf->server.header_timeout_ms);
    }
    conn_process(c);
}

void conn_on_event(struct conn *c, uint32_t events)
{
    switch (c->state) {
    case CONN_IDLE:
    case CONN_HEAD:
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
            conn_read(c);
        return;
    case CONN_WRITE: {
        if (events & (EPOLLERR | EPOLLHUP)) {
            conn_destroy(c);
            return;
        }
        if (!(events & EPOLLOUT))
            return; /* pipelined input waits until this response is out */
        int r = conn_write(c);
        if (r <= 0) {
            if (r == 0)
                worker_timer_set(c->w, c,
                                 evloop_now(c->w->loop) + c->w->srv->conf->server.send_timeout_ms);
            return;
        }
        set_events(c, EPOLLIN | EPOLLRDHUP);
        request_done(c);
        if (c->state == CONN_HEAD)
            conn_process(c);
        return;
    }
    case CONN_LINGER: {
        char sink[4096];
        for (;;) {
            ssize_t n = recv(c->fd, sink, sizeof(sink), 0);
            if (n > 0) {
                c->linger_bytes += (uint64_t)n;
                if (c->linger_bytes > LINGER_MAX_BYTES) {
                    conn_destroy(c);
                    return;
                }
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            conn_destroy(c);
            return;
        }
    }
    }
}

void conn_on_timeout(struct conn *c)
{
    switch (c->state) {
    case CONN_HEAD:
        if (c->in_len) {
            conn_error(c, 408);
            return;
        }
        conn_destroy(c);
        return;
    case CONN_IDLE:
    case CONN_WRITE:
    case CONN_LINGER:
        conn_destroy(c);
        return;
    }
}

void conn_on_stop(struct conn *c)
{
    /* Idle keep-alive connections and ones that sent nothing yet go now;
     * responses in flight finish and then close (finish_head sees stopping). */
    if (c->state == CONN_IDLE || (c->state == CONN_HEAD && c->in_len == 0))
        conn_destroy(c);
}
