/* One HTTP connection: read a request head, run the handler chain, write the
 * response (a chunk queue: writev for memory, sendfile for files), deferred
 * responses and streamed bodies with backpressure both ways, request bodies,
 * keep-alive and pipelining, timeouts, lingering close after errors, and the
 * access log line. The socket is read and written only through io_plain
 * (http/io.h), the seam where TLS would go. */
#include "http/internal.h"

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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LINGER_MAX_BYTES (256 * 1024)
#define LINGER_MS 2000
#define OUT_MAX (1024 * 1024)
/* The response queue: copied bytes it may hold, and the watermarks between
 * which a streaming producer is paused and resumed. */
#define QUEUE_MAX (4 * 1024 * 1024)
#define QUEUE_LOW (64 * 1024)
#define QUEUE_HIGH (256 * 1024)
/* Decoded request body bytes held for a sink that is not taking them. */
#define BODYBUF_MAX (64 * 1024)
/* Body reads per readiness event, so one fast uploader cannot starve the rest. */
#define BODY_READS_PER_EVENT 16

static const struct io_ops *const conn_io = &io_plain;

static int conn_write(struct conn *c);
static int conn_flush(struct conn *c);
static void request_done(struct conn *c);
static void access_log_write(struct conn *c);
static uint64_t body_bytes_sent(const struct conn *c);
static void conn_update_events(struct conn *c);
static void body_pump(struct conn *c);

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

static const struct ferry_conf *conn_conf(const struct conn *c)
{
    return c->w->srv->conf;
}

static uint64_t conn_now(const struct conn *c)
{
    return evloop_now(c->w->loop);
}

static void conn_timer_fired(struct evloop *l, void *arg)
{
    conn_on_timeout(arg);
}

static void wait_timer_fired(struct evloop *l, void *arg);
static void kick_fired(struct evloop *l, void *arg);

/* Inside the handler chain: the caller writes right after, so nothing needs
 * to be scheduled (and no epoll_ctl is spent on the fast path). */
static bool in_dispatch(const struct conn *c)
{
    return c->req != NULL;
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
    memcpy(&c->peer, peer, len < sizeof(c->peer) ? len : sizeof(c->peer));
    buf_init(&c->out, OUT_MAX);
    chunkq_init(&c->q, QUEUE_MAX, QUEUE_LOW, QUEUE_HIGH);
    /* A new connection is reading its first head from the start: header_timeout
     * counts from the accept, not from the first byte. */
    c->state = CONN_HEAD;
    evloop_timer_init(&c->timer, conn_timer_fired, c);
    evloop_timer_init(&c->wait_timer, wait_timer_fired, c);
    evloop_timer_init(&c->kick, kick_fired, c);
    if (evloop_fd_add(w->loop, fd, EPOLLIN | EPOLLRDHUP, conn_fd_event, c) < 0) {
        buf_finish(&c->out);
        free(c);
        return NULL;
    }
    c->all_next = w->all;
    if (w->all)
        w->all->all_prev = c;
    w->all = c;
    worker_timer_set(w, c, evloop_now(w->loop) + conn_conf(c)->server.header_timeout_ms);
    atomic_fetch_add_explicit(&w->stat_conns_open, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->stat_conns_total, 1, memory_order_relaxed);
    return c;
}

static void deferred_free(struct conn *c)
{
    struct conn_deferred *d = c->def;
    if (!d)
        return;
    free(d->head);
    buf_finish(&d->bodybuf);
    free(d);
    c->def = NULL;
}

/* The response is complete (or abandoned): the producer gets no more calls. */
static void producer_detach(struct conn *c)
{
    c->prod = NULL;
    c->prod_arg = NULL;
    evloop_timer_stop(c->w->loop, &c->wait_timer);
}

/* Tell the producer its client is gone. It must not call back into c. */
static void producer_stop(struct conn *c)
{
    const struct conn_producer *p = c->prod;
    void *arg = c->prod_arg;
    producer_detach(c);
    if (p && p->stop)
        p->stop(c, arg);
}

static void response_release(struct conn *c)
{
    chunkq_clear(&c->q);
    buf_reset(&c->out);
    c->head_bytes = 0;
    c->head_done = c->head_failed = false;
    c->streaming = c->chunked_out = c->body_done = false;
    c->out_left = -1;
}

const uint64_t http_duration_bounds_us[HTTP_DURATION_BUCKETS] = {
    500,    1000,   2500,   5000,    10000,   25000,   50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

/* The request's metrics, in the worker's own counters (plain adds). The
 * duration is measured on the loop's clock, as nginx's $request_time is on
 * its cached time: from the round that read the head to the round that
 * finished the response, so a response written in the round its request
 * arrived counts as 0 and no clock is read per request. */
static void request_metrics(struct conn *c)
{
    struct worker_metrics *m = &c->w->metrics;
    unsigned k = c->handler < HANDLER_KIND_COUNT ? (unsigned)c->handler : HANDLER_KIND_CORE;
    int cls = c->status >= 100 && c->status <= 599 ? c->status / 100 - 1 : STATUS_CLASSES - 1;
    uint64_t now = evloop_now_us(c->w->loop);
    uint64_t us = now > c->start_us ? now - c->start_us : 0;
    size_t b = 0;
    while (b < HTTP_DURATION_BUCKETS && us > http_duration_bounds_us[b])
        b++;
    WORKER_STAT_ADD(m->requests[k][cls], 1);
    WORKER_STAT_ADD(m->body_bytes[k], body_bytes_sent(c));
    WORKER_STAT_ADD(m->duration[k][b], 1);
    WORKER_STAT_ADD(m->duration_us[k], us);
    c->handler = HANDLER_KIND_CORE;
}

static void request_end_counters(struct conn *c)
{
    if (!c->in_request)
        return;
    struct worker *w = c->w;
    request_metrics(c);
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
    producer_stop(c);
    /* A response cut short is logged with what was sent; a deferred request
     * whose client left before any answer started, as 499 (nginx's "client
     * closed request"), so that it does not vanish from the log. */
    if (c->in_request && !c->head_done && c->def)
        c->status = 499;
    if (c->in_request && (c->responding || c->def))
        access_log_write(c);
    request_end_counters(c);
    response_release(c);
    chunkq_finish(&c->q);
    deferred_free(c);
    evloop_timer_stop(w->loop, &c->timer);
    evloop_timer_stop(w->loop, &c->kick);
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
    worker_timer_set(c->w, c, conn_now(c) + LINGER_MS);
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

/* The head the log spans point into: the deferred copy, or the input buffer
 * (which holds the head until the request is done). */
static const char *log_base(const struct conn *c)
{
    return c->def ? c->def->head : c->in;
}

static void log_span_write(struct buf *b, const struct conn *c, struct log_span s)
{
    const char *base = log_base(c);
    if (!s.len || !base)
        buf_append(b, "-", 1);
    else
        log_escaped(b, base + s.off, s.len);
}

static struct log_span span_of(const struct conn *c, struct http_str s)
{
    struct log_span sp = {0, 0};
    if (s.p && c->in && s.p >= c->in && s.p + s.len <= c->in + c->head_len) {
        sp.off = (uint32_t)(s.p - c->in);
        sp.len = (uint32_t)s.len;
    }
    return sp;
}

/* Body bytes that actually went out, as nginx's $body_bytes_sent: a response
 * the client cut short logs what it got. */
static uint64_t body_bytes_sent(const struct conn *c)
{
    uint64_t n = chunkq_written(&c->q);
    return n > c->head_bytes ? n - c->head_bytes : 0;
}

static void access_log_write(struct conn *c)
{
    struct worker *w = c->w;
    const char *note = c->log_note;
    c->log_note = NULL;
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
    buf_append(b, "\"", 1);
    if (note)
        buf_printf(b, " %s", note);
    buf_append(b, "\n", 1);
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

void conn_set_log_note(struct conn *c, const char *note)
{
    c->log_note = note;
}

void conn_set_handler(struct conn *c, enum handler_kind kind)
{
    c->handler = kind;
}

const struct ferry_state *conn_state(const struct conn *c)
{
    return c->w->state;
}

const struct sockaddr *conn_peer(const struct conn *c)
{
    return (const struct sockaddr *)&c->peer;
}

struct evloop *conn_loop(const struct conn *c)
{
    return c->w->loop;
}

const struct http_request *conn_request(const struct conn *c)
{
    return c->def ? &c->def->req : c->req;
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
    WORKER_STAT_ADD(c->w->stat_maint_served, 1);
}

void conn_count_maint_bypassed(struct conn *c)
{
    WORKER_STAT_ADD(c->w->stat_maint_bypassed, 1);
}

static int out_str(struct conn *c, const char *s, size_t len)
{
    /* The head is bounded by OUT_MAX: past it the response becomes a 500
     * (finish_head) instead of a truncated head or an abort. */
    if (c->head_failed)
        return -ENOBUFS;
    if (buf_append(&c->out, s, len) < 0) {
        c->head_failed = true;
        return -ENOBUFS;
    }
    return 0;
}

#define OUT_LIT(c, lit) out_str((c), (lit), sizeof(lit) - 1)

static void status_line(struct conn *c, int status)
{
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

int conn_respond_start(struct conn *c, int status)
{
    buf_reset(&c->out);
    c->head_failed = false;
    c->status = status;
    c->responding = true;
    status_line(c, status);
    return 0;
}

int conn_respond_header(struct conn *c, const char *name, const char *value)
{
    int r = out_str(c, name, strlen(name));
    if (r == 0)
        r = OUT_LIT(c, ": ");
    if (r == 0)
        r = out_str(c, value, strlen(value));
    if (r == 0)
        r = OUT_LIT(c, "\r\n");
    return r;
}

int conn_respond_headers_raw(struct conn *c, const char *p, size_t len)
{
    return out_str(c, p, len);
}

static void out_number(struct conn *c, uint64_t v)
{
    char num[24];
    size_t i = sizeof(num);
    do {
        num[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    out_str(c, num + i, sizeof(num) - i);
}

static bool status_has_body(int status)
{
    return !(status == 304 || status == 204 || (status >= 100 && status < 200));
}

static const char head_too_large[] = "500 Internal Server Error: response head too large\n";

/* The framing lines and the blank line that end a head. Returns false when
 * the head passed OUT_MAX somewhere on the way. */
static bool head_close(struct conn *c, int64_t length)
{
    if (c->w->stopping)
        c->keep_alive = false;
    /* A request body not read to its end leaves the framing in doubt. */
    if (c->has_body && !(c->def && c->def->body.result == HTTP_BODY_DONE))
        c->keep_alive = false;
    if (length >= 0) {
        OUT_LIT(c, "Content-Length: ");
        out_number(c, (uint64_t)length);
        OUT_LIT(c, "\r\n");
    } else if (length == -1) {
        if (c->minor_version >= 1 && !c->head_only) {
            OUT_LIT(c, "Transfer-Encoding: chunked\r\n");
            c->chunked_out = true;
        } else if (!c->head_only) {
            c->keep_alive = false; /* the end of the body is the end of the connection */
        }
    }
    if (!c->keep_alive)
        OUT_LIT(c, "Connection: close\r\n");
    else if (c->minor_version == 0)
        OUT_LIT(c, "Connection: keep-alive\r\n");
    OUT_LIT(c, "\r\n");
    return !c->head_failed;
}

/* Finish the head and queue it. length >= 0: Content-Length; -1: unknown
 * (chunked for HTTP/1.1, close-delimited for 1.0); -2: no body framing at all
 * (204/304). Returns false when the head passed OUT_MAX and a 500 went out
 * instead: the caller then drops its body. */
static bool finish_head(struct conn *c, int64_t length)
{
    bool ok = head_close(c, length);
    if (!ok) {
        buf_reset(&c->out);
        c->head_failed = false;
        c->status = 500;
        c->keep_alive = false;
        c->chunked_out = false;
        c->body_done = true;
        status_line(c, 500);
        OUT_LIT(c, "Content-Type: text/plain\r\n");
        head_close(c, (int64_t)sizeof(head_too_large) - 1);
    }
    c->head_done = true;
    c->head_bytes += c->out.len;
    chunkq_append_ref(&c->q, c->out.data, c->out.len, NULL, NULL);
    if (!ok && !c->head_only)
        chunkq_append_ref(&c->q, head_too_large, sizeof(head_too_large) - 1, NULL, NULL);
    return ok;
}

/* A complete response was queued by a deferred producer: it is detached and
 * the connection writes on its next round. */
static void response_complete(struct conn *c)
{
    c->body_done = true;
    if (c->prod)
        producer_detach(c);
    if (c->state == CONN_WAIT)
        c->state = CONN_WRITE;
    if (!c->writing && !in_dispatch(c))
        conn_update_events(c);
}

void conn_respond_body(struct conn *c, const void *p, size_t len, void (*release)(void *),
                       void *arg)
{
    bool body = status_has_body(c->status);
    if (!finish_head(c, body ? (int64_t)len : -2) || !body || c->head_only || len == 0) {
        if (release)
            release(arg);
    } else if (release) {
        chunkq_append_ref(&c->q, p, len, release, arg);
    } else if (chunkq_append_mem(&c->q, p, len) < 0) {
        /* Over QUEUE_MAX: the head promised len bytes that cannot follow;
         * the client sees a short body and the connection closes. */
        c->keep_alive = false;
    }
    response_complete(c);
}

void conn_respond_file(struct conn *c, int fd, off_t offset, off_t len)
{
    if (!finish_head(c, (int64_t)len) || c->head_only || len == 0)
        close(fd);
    else
        chunkq_append_file(&c->q, fd, offset, len);
    response_complete(c);
}

void conn_respond_simple(struct conn *c, int status, const char *content_type, const char *body)
{
    conn_respond_start(c, status);
    if (content_type)
        conn_respond_header(c, "Content-Type", content_type);
    conn_respond_body(c, body, strlen(body), NULL, NULL);
}

/* ---- streamed bodies ---- */

int conn_respond_stream(struct conn *c, int64_t content_length)
{
    bool body = status_has_body(c->status);
    c->streaming = true;
    c->out_left = body ? content_length : 0;
    if (!finish_head(c, body ? content_length : -2))
        c->body_done = true;
    if (c->state == CONN_WAIT)
        c->state = CONN_WRITE;
    if (!c->writing && !in_dispatch(c))
        conn_update_events(c);
    return 0;
}

/* Body bytes the producer gave: they count towards a declared length and
 * show the producer is alive, whether or not they go on the wire. Once the
 * queue is full the producer waits for the client (proceed()), not the
 * other way round: its timeout stops until then, send_timeout covers the
 * client. */
static void body_counted(struct conn *c, size_t len)
{
    if (c->out_left >= 0)
        c->out_left -= (int64_t)len;
    if (!c->prod)
        return;
    if (chunkq_is_full(&c->q))
        evloop_timer_stop(c->w->loop, &c->wait_timer);
    else
        evloop_timer_start(c->w->loop, &c->wait_timer, c->wait_ms);
}

/* Checks shared by the appends; 1 means "accepted, but nothing to send". */
static int append_check(struct conn *c, size_t len)
{
    if (!c->streaming || c->body_done)
        return -EINVAL;
    if (c->out_left >= 0 && (uint64_t)c->out_left < len)
        return -EINVAL;
    if (c->head_only || len == 0) {
        /* HEAD: the bytes are dropped but still counted, or conn_body_end()
         * would take the body for a short one and close the connection. */
        body_counted(c, len);
        return 1;
    }
    return 0;
}

static int chunk_frame_open(struct conn *c, size_t len)
{
    if (!c->chunked_out)
        return 0;
    char line[24];
    int n = snprintf(line, sizeof(line), "%zx\r\n", len);
    return chunkq_append_mem(&c->q, line, (size_t)n);
}

static void appended(struct conn *c, size_t len)
{
    if (c->chunked_out)
        chunkq_append_ref(&c->q, "\r\n", 2, NULL, NULL);
    body_counted(c, len);
    if (!c->writing && !in_dispatch(c))
        conn_update_events(c);
}

int conn_body_append(struct conn *c, const void *p, size_t len)
{
    int r = append_check(c, len);
    if (r != 0)
        return r < 0 ? r : 0;
    /* The frame line and the data are appended together or not at all. */
    if (chunkq_mem_room(&c->q) < len + 24)
        return -ENOBUFS;
    if ((r = chunk_frame_open(c, len)) < 0 || (r = chunkq_append_mem(&c->q, p, len)) < 0)
        return r;
    appended(c, len);
    return 0;
}

int conn_body_append_ref(struct conn *c, const void *p, size_t len, void (*release)(void *),
                         void *arg)
{
    int r = append_check(c, len);
    if (r == 0)
        r = chunk_frame_open(c, len);
    if (r != 0) {
        if (r > 0 && release)
            release(arg);
        return r < 0 ? r : 0;
    }
    chunkq_append_ref(&c->q, p, len, release, arg);
    appended(c, len);
    return 0;
}

int conn_body_append_file(struct conn *c, int fd, off_t offset, off_t len)
{
    int r = len < 0 ? -EINVAL : append_check(c, (size_t)len);
    if (r == 0)
        r = chunk_frame_open(c, (size_t)len);
    if (r != 0) {
        close(fd);
        return r < 0 ? r : 0;
    }
    if ((r = chunkq_append_file(&c->q, fd, offset, len)) < 0)
        return r;
    appended(c, (size_t)len);
    return 0;
}

bool conn_body_wants_more(const struct conn *c)
{
    return !chunkq_is_full(&c->q);
}

int conn_body_end(struct conn *c)
{
    if (!c->streaming || c->body_done)
        return -EINVAL;
    if (c->out_left > 0)
        c->keep_alive = false; /* the client will see a short body */
    else if (c->chunked_out)
        chunkq_append_ref(&c->q, "0\r\n\r\n", 5, NULL, NULL);
    response_complete(c);
    return 0;
}

void conn_respond_abort(struct conn *c)
{
    c->keep_alive = false;
    if (!c->head_done) {
        /* Nothing was sent (a head started with conn_respond_start() is
         * only being built in c->out): a plain 502 is still possible. */
        producer_detach(c);
        conn_respond_simple(c, 502, "text/plain", "502 Bad Gateway\n");
        return;
    }
    c->body_done = true; /* no terminating chunk: the client sees the failure */
    c->out_left = 0;
    response_complete(c);
}

/* ---- deferring ---- */

/* Point a view that lies inside [from, from + len) into to instead. */
static void rebase(struct http_str *s, const char *from, size_t len, char *to)
{
    if (s->p && s->p >= from && s->p < from + len)
        s->p = to + (s->p - from);
}

/* conn_defer() on a connection already deferred: p takes over from the
 * producer before any of the response was started (X-Accel-Redirect to an
 * object the store proxy streams). The old producer is detached without a
 * stop(): its owner is the caller and releases it. */
static int defer_handover(struct conn *c, const struct conn_producer *p, void *arg,
                          uint64_t timeout_ms)
{
    struct conn_deferred *d = c->def;
    if (d->sink) {
        /* The old producer's sink may not outlive it, and p did not ask for
         * the body: what is left of it is never read, so the connection
         * cannot carry another request after this one. */
        d->sink = NULL;
        if (!d->body_ended)
            c->keep_alive = false;
        d->body_paused = false;
    }
    c->prod = p;
    c->prod_arg = arg;
    c->wait_ms = timeout_ms;
    evloop_timer_start(c->w->loop, &c->wait_timer, timeout_ms);
    /* No longer reading a body: wait for the client's hangup only. */
    if (!c->writing && !in_dispatch(c))
        conn_update_events(c);
    return HANDLER_LATER;
}

int conn_defer(struct conn *c, const struct conn_producer *p, void *arg, uint64_t timeout_ms)
{
    if (c->def && c->state == CONN_WAIT && c->prod && !c->responding)
        return defer_handover(c, p, arg, timeout_ms);
    struct conn_deferred *d = xcalloc(1, sizeof(*d));
    /* The request's views point into c->in, which the body and the next
     * request will reuse: keep a copy of the head and rebase them. */
    d->head_len = c->head_len;
    d->head = xmalloc(c->head_len + 1);
    memcpy(d->head, c->in, c->head_len);
    d->req = *c->req;
    struct http_request *r = &d->req;
    struct http_str *views[] = {&r->method,    &r->target, &r->path,          &r->query,
                                &r->authority, &r->host,   &r->if_none_match, &r->if_modified_since,
                                &r->if_range,  &r->range,  &r->user_agent,    &r->referer,
                                &r->accept,    &r->cookie};
    for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++)
        rebase(views[i], c->in, c->head_len, d->head);
    for (size_t i = 0; i < r->num_headers; i++) {
        rebase(&r->headers[i].name, c->in, c->head_len, d->head);
        rebase(&r->headers[i].value, c->in, c->head_len, d->head);
    }
    buf_init(&d->bodybuf, BODYBUF_MAX);
    http_body_init(&d->body, r, conn_conf(c)->server.max_body_size);
    /* What follows the head (body, pipelined requests) moves to the front. */
    memmove(c->in, c->in + c->head_len, c->in_len - c->head_len);
    c->in_len -= c->head_len;
    c->head_len = 0;
    c->def = d;
    c->prod = p;
    c->prod_arg = arg;
    c->wait_ms = timeout_ms;
    c->state = CONN_WAIT;
    evloop_timer_stop(c->w->loop, &c->timer);
    evloop_timer_start(c->w->loop, &c->wait_timer, timeout_ms);
    return HANDLER_LATER;
}

/* No response in time (CONN_WAIT: 504), or no body bytes from the producer
 * in time (streaming: cut the response). */
static void wait_timer_fired(struct evloop *l, void *arg)
{
    struct conn *c = arg;
    producer_stop(c);
    if (c->state == CONN_WAIT) {
        c->keep_alive = false;
        conn_respond_simple(c, 504, "text/plain", "504 Gateway Timeout\n");
    } else {
        conn_respond_abort(c);
    }
    conn_update_events(c);
}

/* ---- request bodies ---- */

/* The client has body_timeout from now to send more of its body. */
static void body_timer_restart(struct conn *c)
{
    c->def->body_deadline = conn_now(c) + conn_conf(c)->server.body_timeout_ms;
    worker_timer_set(c->w, c, c->def->body_deadline);
}

int conn_body_read(struct conn *c, const struct conn_body_sink *sink)
{
    struct conn_deferred *d = c->def;
    if (!d || d->sink)
        return -EINVAL;
    d->sink = sink;
    if (d->body.result == HTTP_BODY_DONE && !c->has_body) {
        d->body_ended = true;
        sink->end(c, c->prod_arg);
        return -EINVAL;
    }
    if (http_body_continue_due(&d->body)) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        http_body_mark_continue_sent(&d->body);
        chunkq_append_ref(&c->q, cont, sizeof(cont) - 1, NULL, NULL);
        c->head_bytes += sizeof(cont) - 1;
    }
    body_timer_restart(c);
    /* While the client sends its body, the time is the client's (body_timeout
     * between reads); the producer's timeout runs again when the producer is
     * the one being waited for: its sink is full, or the body is complete. */
    evloop_timer_stop(c->w->loop, &c->wait_timer);
    /* Bytes that came with the head are decoded after the caller returns: a
     * producer's call never sees its own sink (or stop) run inside it. The
     * handler chain's caller pumps them itself. */
    if (!in_dispatch(c))
        evloop_timer_start(c->w->loop, &c->kick, 0);
    return 0;
}

void conn_body_resume(struct conn *c)
{
    struct conn_deferred *d = c->def;
    if (!d || !d->body_paused)
        return;
    d->body_paused = false;
    evloop_timer_stop(c->w->loop, &c->wait_timer);
    /* The client was not asked for more while paused: its time starts now.
     * Only the deadline: the pump's conn_update_events() arms the timer
     * with it unless a queued response's send_timeout applies. */
    d->body_deadline = conn_now(c) + conn_conf(c)->server.body_timeout_ms;
    evloop_timer_start(c->w->loop, &c->kick, 0);
}

static void kick_fired(struct evloop *l, void *arg)
{
    struct conn *c = arg;
    if (c->def && c->def->sink && c->prod)
        body_pump(c);
}

static bool body_reading(const struct conn *c)
{
    const struct conn_deferred *d = c->def;
    return d && d->sink && c->prod && d->body.result == HTTP_BODY_MORE && !d->body_paused &&
           d->bodybuf.len < d->bodybuf.max;
}

/* The body failed (malformed, too large, too slow, client gone half-way). */
static void body_fail(struct conn *c, int status)
{
    producer_stop(c);
    c->keep_alive = false;
    if (!c->head_done) {
        char text[64];
        snprintf(text, sizeof(text), "%d %s\n", status, status_reason(status));
        conn_respond_simple(c, status, "text/plain", text);
    } else {
        conn_respond_abort(c);
    }
    c->def->sink = NULL;
    conn_update_events(c);
}

/* Move body bytes along: decoded bytes to the sink, raw input through the
 * decoder, and the socket into the input buffer, until the sink pauses, the
 * body ends, or the socket has nothing more. */
static void body_pump(struct conn *c)
{
    struct conn_deferred *d = c->def;
    for (int reads = 0;;) {
        while (d->bodybuf.len && !d->body_paused && c->prod && d->sink) {
            size_t n = d->sink->data(c, c->prod_arg, d->bodybuf.data, d->bodybuf.len);
            if (n > d->bodybuf.len)
                n = d->bodybuf.len;
            buf_consume(&d->bodybuf, n);
            if (d->bodybuf.len && c->prod) {
                d->body_paused = true;
                evloop_timer_start(c->w->loop, &c->wait_timer, c->wait_ms);
            }
        }
        if (!c->prod || !d->sink || d->body_paused)
            break; /* answered early, or the sink is full */
        if (d->body.result == HTTP_BODY_DONE) {
            if (!d->body_ended) {
                d->body_ended = true;
                evloop_timer_stop(c->w->loop, &c->timer);
                if (!c->streaming)
                    evloop_timer_start(c->w->loop, &c->wait_timer, c->wait_ms);
                d->sink->end(c, c->prod_arg);
            }
            break;
        }
        if (c->in_len) {
            size_t piece = d->bodybuf.max - d->bodybuf.len;
            if (piece > c->in_len)
                piece = c->in_len;
            size_t n = piece;
            int r = http_body_feed(&d->body, c->in, &n);
            if (r == HTTP_BODY_ERROR) {
                body_fail(c, d->body.error_status);
                return;
            }
            buf_append(&d->bodybuf, c->in, n);
            size_t used = d->body.consumed;
            memmove(c->in, c->in + used, c->in_len - used);
            c->in_len -= used;
            continue;
        }
        if (reads++ == BODY_READS_PER_EVENT)
            break;
        conn_in_ensure(c);
        ssize_t n = conn_io->recv(&c->fd, c->in, c->in_cap);
        if (n == -EAGAIN)
            break;
        if (n <= 0) {
            /* The client closed before the end of its body. */
            conn_destroy(c);
            return;
        }
        c->in_len = (size_t)n;
        body_timer_restart(c);
    }
    conn_update_events(c);
}

/* ---- writing ---- */

/* Which events the connection waits for, from its state. */
static void conn_update_events(struct conn *c)
{
    uint32_t ev;
    switch (c->state) {
    case CONN_WAIT:
    case CONN_WRITE: {
        bool queued = !chunkq_is_empty(&c->q);
        bool complete = c->head_done && c->body_done;
        bool reading = body_reading(c);
        ev = 0;
        /* A complete response with nothing left to write still needs one
         * writable event to be finished (request_done). */
        if (queued || complete)
            ev |= EPOLLOUT;
        if (reading)
            ev |= EPOLLIN;
        /* Waiting on an upstream: a client that hangs up cancels it (as nginx
         * does). A response being written to a half-closed client is not
         * cut: EPOLLRDHUP would fire level-triggered until it is out. */
        if (c->prod && !queued)
            ev |= EPOLLRDHUP;
        /* Once the queue (say a 100 Continue) is out, the body's own
         * deadline applies again, not what is left of send_timeout. */
        if (queued)
            worker_timer_set(c->w, c, conn_now(c) + conn_conf(c)->server.send_timeout_ms);
        else if (reading)
            worker_timer_set(c->w, c, c->def->body_deadline);
        else
            evloop_timer_stop(c->w->loop, &c->timer);
        break;
    }
    default:
        ev = EPOLLIN | EPOLLRDHUP;
    }
    set_events(c, ev);
}

/* An error before or instead of handling: answer and close (framing in doubt). */
static void conn_error(struct conn *c, int status)
{
    char body[96];
    snprintf(body, sizeof(body), "%d %s\n", status, status_reason(status));
    c->keep_alive = false;
    if (!c->in_request) {
        c->in_request = true;
        c->handler = HANDLER_KIND_CORE;
        c->start_us = evloop_now_us(c->w->loop);
        atomic_fetch_add_explicit(&c->w->stat_inflight, 1, memory_order_relaxed);
    }
    c->state = CONN_WRITE;
    conn_respond_simple(c, status, "text/plain", body);
    conn_flush(c);
}

/* ---- the request cycle ---- */

static void request_done(struct conn *c)
{
    struct worker *w = c->w;
    access_log_write(c);
    WORKER_STAT_ADD(w->stat_requests, 1);
    request_end_counters(c);
    response_release(c);
    deferred_free(c);
    c->responding = false;
    c->has_body = false;
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
        worker_timer_set(w, c, conn_now(c) + conn_conf(c)->server.header_timeout_ms);
    } else {
        c->state = CONN_IDLE;
        conn_in_release(c);
        /* 10,000 idle keep-alive connections should cost little memory. */
        if (c->out.cap > 1024)
            buf_finish(&c->out);
        worker_timer_set(w, c, conn_now(c) + conn_conf(c)->server.keepalive_timeout_ms);
    }
    set_events(c, EPOLLIN | EPOLLRDHUP);
}

/* Write what is queued. Returns 1 when the response is complete, 0 when
 * waiting (the socket is full, or a producer has more to give), -1 when the
 * connection was destroyed. */
static int conn_write(struct conn *c)
{
    for (;;) {
        bool drained = false;
        c->writing = true;
        /* Never "more follows": a producer's next bytes may be a while away,
         * and MSG_MORE would hold a partial packet back until then. */
        ssize_t n = chunkq_write(&c->q, conn_io, &c->fd, false, &drained);
        c->writing = false;
        if (n == -EAGAIN)
            return 0;
        if (n < 0) {
            /* The client is gone, or a file shrank under its promised length. */
            conn_destroy(c);
            return -1;
        }
        /* The producer's turn again: its timeout runs from now. */
        if (drained && c->prod && !c->body_done)
            evloop_timer_start(c->w->loop, &c->wait_timer, c->wait_ms);
        if (drained && c->prod && !c->body_done && c->prod->proceed) {
            c->writing = true;
            c->prod->proceed(c, c->prod_arg);
            c->writing = false;
            if (!chunkq_is_empty(&c->q))
                continue;
        }
        if (!chunkq_is_empty(&c->q))
            return 0;
        return c->body_done && c->head_done ? 1 : 0;
    }
}

/* Write, then finish the request or wait for the socket or the producer.
 * Returns -1 when the connection was destroyed. */
static int conn_flush(struct conn *c)
{
    int r = conn_write(c);
    if (r < 0)
        return -1;
    if (r == 1)
        request_done(c);
    else
        conn_update_events(c);
    return 0;
}

static void dispatch(struct conn *c, struct http_request *req)
{
    struct server *s = c->w->srv;
    c->in_request = true;
    c->exempt = false;
    c->handler = HANDLER_KIND_CORE;
    c->start_us = evloop_now_us(c->w->loop);
    atomic_fetch_add_explicit(&c->w->stat_inflight, 1, memory_order_relaxed);
    c->minor_version = req->minor_version;
    c->head_only = req->method_id == HTTP_M_HEAD;
    c->keep_alive = req->keep_alive && s->conf->server.keepalive_timeout_ms > 0;
    c->has_body = req->content_length > 0 || req->chunked;
    c->out_left = -1;
    c->lg_method = span_of(c, req->method);
    c->lg_target = span_of(c, req->target);
    c->lg_referer = span_of(c, req->referer);
    c->lg_ua = span_of(c, req->user_agent);
    c->responding = false;
    c->req = req;
    /* A body announced larger than max_body_size is refused before a byte of
     * it is read, whoever would have handled it. */
    if (req->content_length > 0 && (uint64_t)req->content_length > s->conf->server.max_body_size) {
        c->keep_alive = false;
        conn_respond_simple(c, 413, "text/plain", "413 Content Too Large\n");
        c->req = NULL;
        return;
    }
    int r = HANDLER_PASS;
    for (int i = 0; i < HANDLER_SLOT_COUNT; i++) {
        struct handler_entry *h = &s->handlers[i];
        if (h->fn && (r = h->fn(c, req, h->arg)) != HANDLER_PASS)
            break;
    }
    c->req = NULL;
    if (r == HANDLER_LATER)
        return;
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
        if (c->state == CONN_WAIT) {
            /* Deferred: body bytes that came with the head are read once the
             * handler asks for them (conn_body_read()). */
            if (c->def && c->def->sink && c->in_len && c->prod)
                body_pump(c);
            else
                conn_update_events(c);
            return;
        }
        int wr = conn_write(c);
        if (wr < 0)
            return;
        if (wr == 0) {
            conn_update_events(c);
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
    ssize_t n = conn_io->recv(&c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n == -EAGAIN)
        return;
    if (n <= 0) {
        conn_destroy(c);
        return;
    }
    c->in_len += (size_t)n;
    if (c->state == CONN_IDLE) {
        c->state = CONN_HEAD;
        worker_timer_set(w, c, conn_now(c) + conn_conf(c)->server.header_timeout_ms);
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
    case CONN_WAIT:
    case CONN_WRITE:
        if (events & EPOLLERR) {
            conn_destroy(c);
            return;
        }
        if ((events & EPOLLIN) && body_reading(c)) {
            body_pump(c); /* may destroy c, or change the state */
            return;
        }
        if (events & (EPOLLHUP | EPOLLRDHUP)) {
            if (c->prod || (events & EPOLLHUP)) {
                /* The client hung up while its answer was being produced. */
                conn_destroy(c);
                return;
            }
        }
        if (!(events & EPOLLOUT))
            return; /* pipelined input waits until this response is out */
        if (conn_flush(c) == 0 && c->state == CONN_HEAD)
            conn_process(c);
        return;
    case CONN_LINGER: {
        char sink[4096];
        for (;;) {
            ssize_t n = conn_io->recv(&c->fd, sink, sizeof(sink));
            if (n > 0) {
                c->linger_bytes += (uint64_t)n;
                if (c->linger_bytes > LINGER_MAX_BYTES) {
                    conn_destroy(c);
                    return;
                }
                continue;
            }
            if (n == -EAGAIN)
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
    case CONN_WAIT:
    case CONN_WRITE:
        if (body_reading(c) && chunkq_is_empty(&c->q)) {
            /* The client stopped sending its body. */
            body_fail(c, 408);
            return;
        }
        conn_destroy(c); /* send_timeout */
        return;
    case CONN_IDLE:
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
