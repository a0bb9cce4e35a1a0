#include "fcgi/client.h"

#include "common/alloc.h"
#include "common/buf.h"
#include "common/conf.h"
#include "common/evloop.h"
#include "common/log.h"
#include "fcgi/cgi.h"
#include "fcgi/gate.h"
#include "fcgi/record.h"
#include "http/parser.h"
#include "http/response.h"
#include "http/server.h"
#include "http/static.h"
#include "maint/maint.h"
#include "metrics/metrics.h"
#include "offload/serve.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Request bytes (params, body) queued for the backend: the client's body is
 * read only while fewer than this are waiting to be written. */
#define OUT_HIGH (256 * 1024)
/* The params of one request (the head is at most max_header_size). */
#define PARAMS_MAX (1024 * 1024)
/* One read from the backend. */
#define IN_READ (64 * 1024)
/* Reads per readiness event, so one backend cannot starve the loop. */
#define READS_PER_EVENT 16
/* A STDERR line longer than this is logged in pieces. */
#define ERR_LINE_MAX 2048
/* New connections for one request (connect refused, backend overloaded). */
#define RETRIES_MAX 3
/* Waiting between connection attempts while the socket's backlog is full. */
#define CONNECT_BACKOFF_MS 20
/* The message of the 503 page for requests no backend could take. */
#define BUSY_MESSAGE "The application is busy. Please try again in a moment."

/* A per-worker counter: written by its worker only, read by the metrics
 * collector with relaxed loads (no read-modify-write on the request path). */
#define STAT_ADD(field)                                                                            \
    atomic_store_explicit(&(field), atomic_load_explicit(&(field), memory_order_relaxed) + 1,      \
                          memory_order_relaxed)

struct fcgi_worker;

enum req_state { REQ_HELD = 0, REQ_CONNECTING, REQ_ACTIVE, REQ_SPOOLING };

/* One request to the backend. Owned by the connection's producer from
 * conn_defer() until stop() runs or the response is complete (req_free()). */
struct fcgi_req {
    struct fcgi_client *cl;
    struct fcgi_worker *w;
    struct conn *c;
    struct evloop *loop;
    int state;                    /* enum req_state */
    struct fcgi_req *prev, *next; /* the worker's hold queue, while REQ_HELD */
    struct evloop_timer timer;    /* hold deadline, connect retry, backend silence */
    uint64_t hold_deadline;       /* monotonic ms */
    int fd;                       /* the backend connection, -1 when none */
    bool connecting;              /* owes fcgi_gate_connect_end() or _abort() */
    int gen;                      /* fd's generation handle (fcgi_gate_connect_end()), or -1 */
    bool gen_old;                 /* the last connection was on a generation being replaced */
    uint32_t watching;            /* events watched on fd; 0: not in the loop */
    bool has_slot;                /* owes one fcgi_gate_release() */
    bool wrote_any;               /* a byte of this connection reached the backend */
    bool write_dead;              /* the backend stopped reading: drop the rest */
    bool body_started;            /* conn_body_read() was called */
    bool body_ended;              /* the whole body was taken */
    bool body_paused;             /* the sink took less: resume when out drains */
    bool head_done;               /* the response head went to the connection */
    bool paused;                  /* the response queue is full: wait for proceed() */
    uint64_t body_taken;          /* request body bytes taken from the client */
    /* A chunked body is read whole into an unlinked file before the request
     * starts, so that the application gets a CONTENT_LENGTH (php-cgi reads
     * nothing without one), as nginx does. */
    int spool_fd; /* -1: the body streams from the client */
    uint64_t spool_len;
    uint64_t spool_off; /* how much of it went into STDIN records */
    bool spool_failed;
    int retries;
    struct buf out; /* encoded records not yet written, from out_off */
    size_t out_off;
    struct buf in;   /* bytes read from the backend before a pause, not yet decoded */
    struct buf head; /* STDOUT until the CGI header block is complete */
    struct buf err;  /* a partial STDERR line */
    struct fcgi_decoder dec;
    char *path; /* the decoded path; owned */
    size_t path_len;
};

/* One worker's hold queue (FIFO), on that worker's thread only. */
struct fcgi_worker {
    struct fcgi_client *cl;
    struct evloop *loop;
    struct fcgi_req *head, *tail;
    bool registered; /* with the gate, as waiting */
    /* Slots finished requests left for the held ones here (no round trip
     * through the gate and an eventfd); worker_drain() runs from handoff. */
    uint32_t spare;
    struct evloop_timer handoff;
    struct fcgi_worker *next_all;
    struct { /* what the backend's metrics count (fcgi_client_register_metrics()) */
        _Atomic uint64_t holds, hold_timeouts, queue_full, errors, timeouts, aborts, retries;
    } stats;
    char rbuf[IN_READ]; /* what one recv() from a backend brings */
};

struct fcgi_client {
    const struct ferry_conf *conf;
    struct fcgi_gate *gate;
    struct sockaddr_un addr;
    socklen_t addr_len;
    char *document_root;
    struct maint_snapshot *busy; /* the rendered 503 page */
    struct offload_serve *accel; /* serves what accel_headers name; NULL: off */
    _Atomic uint32_t held;
    _Atomic uint64_t served; /* responses the application completed */
    pthread_mutex_t lock;    /* guards workers */
    struct fcgi_worker *workers;
};

static _Thread_local struct fcgi_worker *tls_worker;

/* ---- setup ---- */

int fcgi_client_create(const struct ferry_conf *conf, struct fcgi_gate *gate,
                       struct fcgi_client **out, char *err, size_t errlen)
{
    struct fcgi_client *cl = xcalloc(1, sizeof(*cl));
    cl->conf = conf;
    cl->gate = gate;
    pthread_mutex_init(&cl->lock, NULL);
    const char *sock = conf->backend.socket;
    if (strlen(sock) >= sizeof(cl->addr.sun_path)) {
        snprintf(err, errlen, "[backend] socket '%s': path too long", sock);
        fcgi_client_destroy(cl);
        return -ENAMETOOLONG;
    }
    cl->addr.sun_family = AF_UNIX;
    strcpy(cl->addr.sun_path, sock);
    cl->addr_len = (socklen_t)sizeof(cl->addr);
    char *root = realpath(conf->server.root, NULL);
    cl->document_root = root ? root : xstrdup(conf->server.root);
    /* The page as the maintenance module renders it; a missing page file
     * means its built-in page, as for `ferry down`. */
    struct maint_window w = {.mode = MAINT_ON};
    w.retry_after_s = (conf->backend.hold_timeout_ms + 999) / 1000;
    if (w.retry_after_s == 0)
        w.retry_after_s = 1;
    w.message = xstrdup(BUSY_MESSAGE);
    if (conf->maintenance.page[0] &&
        maint_page_read(conf->maintenance.page, &w.page, &w.page_len) < 0)
        w.page = NULL;
    cl->busy = maint_snapshot_create(NULL, &w);
    maint_window_finish(&w);
    *out = cl;
    return 0;
}

void fcgi_client_install(struct fcgi_client *cl, struct server *s)
{
    server_set_handler(s, HANDLER_SLOT_BACKEND, fcgi_client_handle, cl);
}

void fcgi_client_set_accel(struct fcgi_client *cl, struct offload_serve *os)
{
    cl->accel = os;
}

uint32_t fcgi_client_held(const struct fcgi_client *cl)
{
    return atomic_load_explicit(&cl->held, memory_order_relaxed);
}

uint64_t fcgi_client_served(const struct fcgi_client *cl)
{
    return atomic_load_explicit(&cl->served, memory_order_relaxed);
}

void fcgi_client_destroy(struct fcgi_client *cl)
{
    if (!cl)
        return;
    for (struct fcgi_worker *w = cl->workers, *next; w; w = next) {
        next = w->next_all;
        if (w->registered)
            fcgi_gate_waiting(cl->gate, w->loop, false, NULL, NULL);
        free(w);
    }
    maint_snapshot_unref(cl->busy);
    free(cl->document_root);
    pthread_mutex_destroy(&cl->lock);
    free(cl);
}

static void worker_drain(struct evloop *l, void *arg);

/* This thread's hold queue for cl (made on first use). */
static struct fcgi_worker *worker_get(struct fcgi_client *cl, struct evloop *loop)
{
    struct fcgi_worker *w = tls_worker;
    if (w && w->cl == cl && w->loop == loop)
        return w;
    pthread_mutex_lock(&cl->lock);
    for (w = cl->workers; w && w->loop != loop; w = w->next_all)
        ;
    if (!w) {
        w = xcalloc(1, sizeof(*w));
        w->cl = cl;
        w->loop = loop;
        evloop_timer_init(&w->handoff, worker_drain, w);
        w->next_all = cl->workers;
        cl->workers = w;
    }
    pthread_mutex_unlock(&cl->lock);
    tls_worker = w;
    return w;
}

/* ---- the request's life ---- */

static void req_event(struct evloop *l, int fd, uint32_t events, void *arg);
static void req_timer_fired(struct evloop *l, void *arg);
static void req_connect(struct fcgi_req *r);

/* Watch what the state needs: the reply unless paused, writability while
 * records wait. An fd with nothing to wait for leaves the loop, or EPOLLHUP
 * would fire level-triggered while paused. */
static void req_watch(struct fcgi_req *r)
{
    bool pending = r->out.len > r->out_off && !r->write_dead;
    uint32_t ev = r->fd < 0 ? 0 : (r->paused ? 0 : EPOLLIN) | (pending ? EPOLLOUT : 0);
    if (ev == r->watching)
        return;
    if (!ev)
        evloop_fd_del(r->loop, r->fd);
    else if (!r->watching)
        evloop_fd_add(r->loop, r->fd, ev, req_event, r);
    else
        evloop_fd_mod(r->loop, r->fd, ev);
    r->watching = ev;
}

/* The backend owes a byte (a record to take, or the response) unless the
 * client is the one being waited for: its body, or room in its queue. */
static bool backend_owes(const struct fcgi_req *r)
{
    if (r->state != REQ_ACTIVE || r->paused)
        return false;
    return (r->out.len > r->out_off && !r->write_dead) || r->body_ended || r->write_dead;
}

/* Progress from the backend (restart = true) or a change of who is waited
 * for: the silence timer runs only while the backend owes a byte. */
static void req_timer_update(struct fcgi_req *r, bool restart)
{
    if (!backend_owes(r))
        evloop_timer_stop(r->loop, &r->timer);
    else if (restart || !evloop_timer_active(&r->timer))
        evloop_timer_start(r->loop, &r->timer, r->cl->conf->backend.timeout_ms);
}

static void req_close_fd(struct fcgi_req *r)
{
    if (r->connecting) {
        fcgi_gate_connect_abort(r->cl->gate);
        r->connecting = false;
    }
    if (r->gen >= 0) {
        r->gen_old = fcgi_gate_conn_done(r->cl->gate, r->gen);
        r->gen = -1;
    }
    if (r->fd < 0)
        return;
    if (r->watching)
        evloop_fd_del(r->loop, r->fd);
    r->watching = 0;
    close(r->fd);
    r->fd = -1;
}

static void queue_remove(struct fcgi_req *r)
{
    struct fcgi_worker *w = r->w;
    if (r->prev)
        r->prev->next = r->next;
    else
        w->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        w->tail = r->prev;
    r->prev = r->next = NULL;
    atomic_fetch_sub_explicit(&r->cl->held, 1, memory_order_relaxed);
    if (!w->head && w->registered) {
        fcgi_gate_waiting(r->cl->gate, w->loop, false, NULL, NULL);
        w->registered = false;
    }
}

/* Give back r's slot: to the requests held on this worker when there are
 * any (started from a timer on this loop, not from inside the caller, which
 * may be a connection's stop()), else to the gate. */
static void slot_release(struct fcgi_req *r)
{
    struct fcgi_worker *w = r->w;
    /* A slot of the generation being replaced goes back to the gate, whose
     * capacity counts it only while that generation has it. */
    if (w->head && !r->gen_old) {
        w->spare++;
        evloop_timer_start(w->loop, &w->handoff, 0);
        return;
    }
    fcgi_gate_release(r->cl->gate);
}

/* Release everything r owns; the connection no longer refers to it. */
static void req_free(struct fcgi_req *r)
{
    if (r->state == REQ_HELD)
        queue_remove(r);
    evloop_timer_stop(r->loop, &r->timer);
    req_close_fd(r);
    if (r->has_slot)
        slot_release(r);
    buf_finish(&r->out);
    buf_finish(&r->in);
    buf_finish(&r->head);
    buf_finish(&r->err);
    if (r->spool_fd >= 0)
        close(r->spool_fd);
    free(r->path);
    free(r);
}

static void busy_release(void *arg)
{
    maint_snapshot_unref(arg);
}

/* The 503 page with Retry-After: no backend took the request in time. Its
 * body (if any) was never read: the connection closes after the answer. */
static void respond_busy(struct fcgi_client *cl, struct conn *c, const struct http_request *req)
{
    const struct maint_body *body =
        &cl->busy->body[maint_negotiate(req->accept.p, req->accept.len)];
    conn_set_log_note(c, "backend=busy");
    conn_respond_start(c, 503);
    conn_respond_header(c, "Content-Type", body->content_type);
    conn_respond_header(c, "Retry-After", cl->busy->retry_after);
    conn_respond_header(c, "Cache-Control", "no-store");
    conn_respond_header(c, "Vary", "Accept");
    if (req->content_length > 0 || req->chunked)
        conn_set_close(c);
    maint_snapshot_ref(cl->busy);
    conn_respond_body(c, body->data, body->len, busy_release, cl->busy);
}

/* End the request with an error of ours: a status while nothing was sent,
 * else a cut connection. Frees r. */
static void req_fail(struct fcgi_req *r, int status, const char *note)
{
    struct conn *c = r->c;
    if (status == 502)
        STAT_ADD(r->w->stats.errors);
    else if (status == 504)
        STAT_ADD(r->w->stats.timeouts);
    conn_set_log_note(c, note);
    if (!r->body_ended)
        conn_set_close(c);
    if (status == 503 && !r->head_done) { /* the application did not run it */
        respond_busy(r->cl, c, conn_request(c));
    } else if (status == 504 && !r->head_done) {
        conn_set_close(c);
        conn_respond_simple(c, 504, "text/plain", "504 Gateway Timeout\n");
    } else {
        conn_respond_abort(c); /* 502 before the head, a cut body after it */
    }
    req_free(r);
}

/* The response is complete: the producer is detached. Frees r. */
static void req_done(struct fcgi_req *r)
{
    struct conn *c = r->c;
    conn_set_log_note(c, "backend=ok");
    atomic_fetch_add_explicit(&r->cl->served, 1, memory_order_relaxed);
    if (!r->body_ended)
        conn_set_close(c); /* the application answered before the whole body came */
    conn_body_end(c);
    req_free(r);
}

/* ---- the producer ---- */

static bool req_process(struct fcgi_req *r);

static void req_proceed(struct conn *c, void *arg)
{
    struct fcgi_req *r = arg;
    r->paused = false;
    req_process(r); /* what was read before the pause; may free r */
}

/* The client went away or its body failed: close the backend connection
 * (an ABORT_REQUEST first when no record is half written) and free the slot. */
static void req_stop(struct conn *c, void *arg)
{
    struct fcgi_req *r = arg;
    STAT_ADD(r->w->stats.aborts);
    if (r->fd >= 0 && r->out.len == r->out_off && !r->write_dead) {
        struct buf ab;
        buf_init(&ab, FCGI_HEADER_LEN);
        if (fcgi_encode_abort(&ab, FCGI_REQUEST_ID) == 0)
            (void)send(r->fd, ab.data, ab.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        buf_finish(&ab);
    }
    req_free(r);
}

static const struct conn_producer req_producer = {req_proceed, req_stop};

/* ---- writing to the backend ---- */

/* Whether the request may start over on a new connection: nothing of the
 * response arrived and no body byte was taken from the client (it could not
 * be sent again). The caller checks what reached the backend. */
static bool req_retryable(const struct fcgi_req *r)
{
    return !r->head_done && r->head.len == 0 && (r->body_taken == 0 || r->spool_fd >= 0) &&
           r->retries < RETRIES_MAX;
}

static void req_write_out(struct fcgi_req *r);

/* Move the spooled body into STDIN records while fewer than OUT_HIGH bytes
 * wait, and end STDIN after it. A file that cannot be read stops the
 * request's writes (the application then times out: 504). */
static void req_spool_out(struct fcgi_req *r)
{
    char piece[16384];
    while (!r->write_dead && r->out.len - r->out_off < OUT_HIGH && r->spool_off < r->spool_len) {
        size_t want = r->spool_len - r->spool_off;
        if (want > sizeof(piece))
            want = sizeof(piece);
        ssize_t n = pread(r->spool_fd, piece, want, (off_t)r->spool_off);
        if (n <= 0 ||
            fcgi_encode_stream(&r->out, FCGI_STDIN, FCGI_REQUEST_ID, piece, (size_t)n) < 0) {
            r->write_dead = true;
            return;
        }
        r->spool_off += (uint64_t)n;
        r->body_taken += (uint64_t)n;
    }
    if (r->spool_off == r->spool_len && !r->body_ended &&
        fcgi_encode_stream(&r->out, FCGI_STDIN, FCGI_REQUEST_ID, NULL, 0) == 0)
        r->body_ended = true;
}

/* Write what is queued. Never frees r: a backend that stops reading only
 * marks the rest as undeliverable (its response, or its EOF, comes next),
 * except that a connection none of whose bytes arrived is retried. */
static void req_write(struct fcgi_req *r)
{
    for (;;) {
        req_write_out(r);
        /* A spooled body refills the queue as it drains. */
        if (r->spool_fd < 0 || r->body_ended || r->write_dead || r->out.len > r->out_off)
            break;
        req_spool_out(r);
    }
    req_watch(r);
    if (!(r->write_dead && evloop_timer_active(&r->timer) && !r->wrote_any))
        req_timer_update(r, false);
}

static void req_write_out(struct fcgi_req *r)
{
    while (r->out.len > r->out_off && !r->write_dead) {
        ssize_t n = send(r->fd, r->out.data + r->out_off, r->out.len - r->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            r->write_dead = true;
            if (!r->wrote_any && req_retryable(r)) /* retried from the timer */
                evloop_timer_start(r->loop, &r->timer, 0);
            break;
        }
        r->wrote_any = true;
        r->out_off += (size_t)n;
        req_timer_update(r, true);
    }
    if (r->out_off == r->out.len || r->write_dead) {
        buf_reset(&r->out);
        r->out_off = 0;
    } else if (r->out_off > OUT_HIGH) {
        buf_consume(&r->out, r->out_off);
        r->out_off = 0;
    }
    /* The client's body flows again once half of the high-water mark is out. */
    if (r->body_paused && r->out.len - r->out_off <= OUT_HIGH / 2) {
        r->body_paused = false;
        conn_body_resume(r->c);
    }
}

/* ---- the request body: client -> STDIN ---- */

static size_t sink_data(struct conn *c, void *arg, const char *p, size_t len)
{
    struct fcgi_req *r = arg;
    if (r->write_dead) {
        r->body_taken += len; /* the backend is not reading: nowhere to go */
        return len;
    }
    /* Pause only while records wait to be written: the socket's writability
     * then comes, and req_write() resumes the body (a short take with nothing
     * queued would never be resumed). A piece is at most the connection's
     * body buffer (64 KiB), so out stays bounded. */
    if (r->out.len - r->out_off >= OUT_HIGH ||
        fcgi_encode_stream(&r->out, FCGI_STDIN, FCGI_REQUEST_ID, p, len) < 0) {
        r->body_paused = true;
        req_timer_update(r, false);
        return 0;
    }
    r->body_taken += len;
    req_write(r);
    return len;
}

static void sink_end(struct conn *c, void *arg)
{
    struct fcgi_req *r = arg;
    r->body_ended = true;
    if (!r->write_dead)
        fcgi_encode_stream(&r->out, FCGI_STDIN, FCGI_REQUEST_ID, NULL, 0);
    req_write(r);
    req_timer_update(r, false);
}

static const struct conn_body_sink req_sink = {sink_data, sink_end};

/* ---- reading the response: STDOUT -> client ---- */

/* The header block is complete in r->head: start the response and send the
 * bytes after it. Returns 0, or -1 when the block is invalid (r is kept). */
static int req_head(struct fcgi_req *r, long used, const struct cgi_head *h)
{
    struct conn *c = r->c;
    struct buf lines;
    buf_init(&lines, CGI_HEAD_MAX + 2 * CGI_MAX_HEADERS * 4);
    for (size_t i = 0; i < h->num_headers; i++) {
        const struct cgi_header *hd = &h->headers[i];
        buf_append(&lines, hd->name.p, hd->name.len);
        buf_append(&lines, ": ", 2);
        buf_append(&lines, hd->value.p, hd->value.len);
        buf_append(&lines, "\r\n", 2);
    }
    conn_respond_start(c, h->status);
    if (lines.len)
        conn_respond_headers_raw(c, lines.data, lines.len);
    buf_finish(&lines);
    conn_respond_stream(c, h->content_length);
    r->head_done = true;
    size_t rest = r->head.len - (size_t)used;
    int rc = rest ? conn_body_append(c, r->head.data + used, rest) : 0;
    buf_finish(&r->head);
    return rc < 0 ? -1 : 0;
}

/* ---- X-Accel-Redirect / X-Sendfile (issue 11) ---- */

/* Headers of the application's response kept on the upload served instead,
 * as nginx keeps them; on a redirect to the store only Set-Cookie is. */
static const char *const accel_kept[] = {"Set-Cookie", "Content-Disposition", "Cache-Control",
                                         "Expires"};

/* A header named like X-Sendfile (or lighttpd's X-LIGHTTPD-send-file) takes a
 * filesystem path; any other of accel_headers a URL path. */
static bool accel_is_file(const char *name)
{
    return strcasestr(name, "sendfile") || strcasestr(name, "send-file");
}

/* If h names an upload with one of accel_headers, answer with that upload
 * instead of the response (its body is never read: the backend connection
 * closes), or with a 502 when the path is refused, and free r. Returns
 * whether it did. */
static bool fcgi_accel_serve(struct fcgi_req *r, const struct cgi_head *h)
{
    const struct conf_list *names = &r->cl->conf->backend.accel_headers;
    size_t which;
    long at = cgi_head_find(h, (const char *const *)names->items, names->count, &which);
    if (at < 0)
        return false;
    const struct cgi_header *hit = &h->headers[at];
    const char *hname = names->items[which];
    /* Every line fits: they come from a block of at most CGI_HEAD_MAX. */
    struct buf keep, cookies;
    buf_init(&keep, CGI_HEAD_MAX + 4 * CGI_MAX_HEADERS);
    buf_init(&cookies, CGI_HEAD_MAX + 4 * CGI_MAX_HEADERS);
    cgi_head_copy(h, accel_kept, sizeof(accel_kept) / sizeof(accel_kept[0]), &keep);
    cgi_head_copy(h, accel_kept, 1, &cookies);
    struct offload_serve_accel a = {.status = h->status,
                                    .headers = keep.data,
                                    .headers_len = keep.len,
                                    .redirect_headers = cookies.data,
                                    .redirect_headers_len = cookies.len};
    const char *v = hit->value.p;
    size_t vlen = hit->value.len;
    int rc = -EPERM;
    if (accel_is_file(hname)) {
        rc = offload_serve_file(r->cl->accel, r->c, v, vlen, &a);
    } else {
        /* A URL path: a query is allowed and ignored, the path decoded. */
        const char *q = memchr(v, '?', vlen);
        size_t plen = q ? (size_t)(q - v) : vlen;
        char *path = xmalloc(plen + 1);
        long dlen = static_decode_path(v, plen, path, plen + 1);
        if (dlen > 0)
            rc = offload_serve_upload(r->cl->accel, r->c, path, (size_t)dlen, &a);
        free(path);
    }
    buf_finish(&keep);
    buf_finish(&cookies);
    if (rc < 0) {
        log_error("backend: %s '%.*s' refused: not an upload under [offload] %s", hname,
                  (int)(vlen > 1024 ? 1024 : vlen), v,
                  accel_is_file(hname) ? "spool" : "url_prefix");
        req_fail(r, 502, "accel=refused");
        return true;
    }
    /* The response is complete, or the store proxy took the connection over
     * (conn_defer()'s handover: r's producer is detached and gets no stop()).
     * Either way the rest of the application's output is not wanted, and the
     * backend connection, the slot and the timer go with r, once, here. */
    atomic_fetch_add_explicit(&r->cl->served, 1, memory_order_relaxed);
    if (!r->body_ended)
        conn_set_close(r->c);
    req_free(r);
    return true;
}

/* STDOUT content. Returns 0, -1 for a failed request (r is kept), or 1
 * when the application named an upload that was answered instead (r freed). */
static int req_stdout(struct fcgi_req *r, const char *p, size_t len)
{
    if (r->head_done)
        return len && conn_body_append(r->c, p, len) < 0 ? -1 : 0;
    if (buf_append(&r->head, p, len) < 0)
        return -1; /* over CGI_HEAD_MAX */
    struct cgi_head *h = xmalloc(sizeof(*h));
    long used = cgi_parse_head(r->head.data, r->head.len, h);
    int rc = used == -2                               ? 0
             : used < 0                               ? -1
             : r->cl->accel && fcgi_accel_serve(r, h) ? 1
                                                      : req_head(r, used, h);
    free(h);
    return rc;
}

/* STDERR: whole lines to the error log. */
static void req_stderr(struct fcgi_req *r, const char *p, size_t len, bool flush)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '\n' && r->err.len < ERR_LINE_MAX) {
            buf_append(&r->err, p + i, 1);
            continue;
        }
        if (r->err.len)
            log_warn("backend stderr: %s", r->err.data);
        buf_reset(&r->err);
        if (p[i] != '\n')
            buf_append(&r->err, p + i, 1);
    }
    if (flush && r->err.len) {
        log_warn("backend stderr: %s", r->err.data);
        buf_reset(&r->err);
    }
}

/* A fresh connection for a request none of whose bytes were used. */
static void req_retry(struct fcgi_req *r)
{
    r->retries++;
    STAT_ADD(r->w->stats.retries);
    evloop_timer_stop(r->loop, &r->timer);
    req_close_fd(r);
    buf_reset(&r->out);
    buf_reset(&r->in);
    buf_finish(&r->head);
    r->out_off = 0;
    r->wrote_any = r->write_dead = false;
    if (r->spool_fd >= 0) { /* the whole body is still there to send again */
        r->spool_off = r->body_taken = 0;
        r->body_ended = false;
    }
    fcgi_decoder_init(&r->dec);
    r->state = REQ_CONNECTING;
    req_connect(r);
}

/* END_REQUEST. Frees r. */
static void req_end(struct fcgi_req *r, uint8_t protocol_status)
{
    req_stderr(r, "", 0, true);
    bool untouched = !r->head_done && r->head.len == 0 && r->body_taken == 0;
    if ((protocol_status == FCGI_OVERLOADED || protocol_status == FCGI_CANT_MPX_CONN) &&
        req_retryable(r)) {
        req_retry(r);
        return;
    }
    if (protocol_status != FCGI_REQUEST_COMPLETE) {
        if (untouched) /* the application refused it: an error, though answered 503 */
            STAT_ADD(r->w->stats.errors);
        req_fail(r, untouched ? 503 : 502, "backend=error");
        return;
    }
    if (!r->head_done) {
        /* No header block (or an unfinished one): not a CGI response. */
        req_fail(r, 502, "backend=error");
        return;
    }
    req_done(r);
}

/* Decode (p, len), read from the backend, as far as the client's queue
 * allows; *used says how far. Returns false when r was freed or started over
 * on a new connection (then neither r nor p may be used). */
static bool req_feed(struct fcgi_req *r, const char *p, size_t len, size_t *used)
{
    size_t off = 0;
    while (off < len && !r->paused) {
        struct fcgi_piece pc;
        long n = fcgi_decode(&r->dec, p + off, len - off, &pc);
        if (n < 0 || (pc.type && pc.request_id != FCGI_REQUEST_ID && pc.request_id != 0)) {
            req_fail(r, 502, "backend=error");
            return false;
        }
        off += (size_t)n;
        if (pc.request_id == 0 && pc.type != FCGI_GET_VALUES_RESULT && pc.type)
            pc.type = FCGI_UNKNOWN_TYPE; /* only management records may use id 0 */
        switch (pc.type) {
        case FCGI_STDOUT: {
            int rc = req_stdout(r, pc.p, pc.len);
            if (rc < 0) {
                req_fail(r, 502, "backend=error");
                return false;
            }
            if (rc > 0)
                return false; /* an upload answered instead */
            if (r->head_done && !conn_body_wants_more(r->c))
                r->paused = true;
            break;
        }
        case FCGI_STDERR:
            req_stderr(r, pc.p, pc.len, pc.end_of_stream);
            break;
        case FCGI_END_REQUEST:
            req_end(r, pc.protocol_status);
            return false;
        case FCGI_UNKNOWN_TYPE:
        case FCGI_DATA:
            req_fail(r, 502, "backend=error");
            return false;
        default:
            break; /* GET_VALUES_RESULT, or nothing complete yet */
        }
    }
    *used = off;
    return true;
}

/* Decode what a pause left in r->in. Returns false when r was freed or
 * started over. */
static bool req_process(struct fcgi_req *r)
{
    size_t used = 0;
    if (r->in.len && !req_feed(r, r->in.data, r->in.len, &used))
        return false;
    buf_consume(&r->in, used);
    req_watch(r);
    req_timer_update(r, false);
    return true;
}

/* The backend closed the connection (or it failed) before END_REQUEST. */
static void req_eof(struct fcgi_req *r)
{
    req_stderr(r, "", 0, true);
    if (!r->wrote_any && req_retryable(r)) {
        req_retry(r);
        return;
    }
    req_fail(r, 502, "backend=error");
}

/* Read from the backend into the worker's buffer and decode at once; only
 * what a pause leaves over is copied (to r->in). */
static void req_read(struct fcgi_req *r)
{
    char *rbuf = r->w->rbuf;
    for (int i = 0; i < READS_PER_EVENT && !r->paused; i++) {
        ssize_t n = recv(r->fd, rbuf, IN_READ, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            req_eof(r);
            return;
        }
        req_timer_update(r, true);
        size_t used = 0;
        if (!req_feed(r, rbuf, (size_t)n, &used))
            return;
        if (used < (size_t)n)
            buf_append(&r->in, rbuf + used, (size_t)n - used); /* paused: fits, IN_READ max */
        req_watch(r);
        req_timer_update(r, false);
        if ((size_t)n < IN_READ)
            return;
    }
}

static void req_connected(struct fcgi_req *r);
static bool req_count_peer(struct fcgi_req *r);

static void req_event(struct evloop *l, int fd, uint32_t events, void *arg)
{
    struct fcgi_req *r = arg;
    if (r->state == REQ_CONNECTING) {
        int e = 0;
        socklen_t len = sizeof(e);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
            e = errno;
        if (e) {
            req_close_fd(r);
            evloop_timer_start(r->loop, &r->timer, CONNECT_BACKOFF_MS);
            return;
        }
        if (req_count_peer(r))
            req_connected(r);
        return;
    }
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && r->out.len > r->out_off)
        req_write(r);
    if (r->write_dead && !r->wrote_any && req_retryable(r))
        return; /* the retry timer runs */
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && !r->paused)
        req_read(r); /* may free r */
}

/* ---- connecting ---- */

static int req_params(struct fcgi_req *r)
{
    const struct ferry_conf *conf = r->cl->conf;
    const struct http_request *req = conn_request(r->c);
    struct buf params;
    buf_init(&params, PARAMS_MAX);
    struct cgi_request_info info = {
        .req = req,
        .peer = conn_peer(r->c),
        .path = r->path,
        .path_len = r->path_len,
        .location = conf->backend.location,
        .document_root = r->cl->document_root,
        .script_filename = conf->backend.script_filename,
        .server_software = "ferry/" FERRY_VERSION,
        .server_port = 80,
        .content_length = r->spool_fd >= 0 ? (int64_t)r->spool_len : req->content_length,
    };
    int rc = fcgi_encode_begin(&r->out, FCGI_REQUEST_ID, FCGI_RESPONDER, 0);
    if (rc == 0)
        rc = cgi_params_build(&params, &info);
    if (rc == 0 && params.len)
        rc = fcgi_encode_stream(&r->out, FCGI_PARAMS, FCGI_REQUEST_ID, params.data, params.len);
    if (rc == 0)
        rc = fcgi_encode_stream(&r->out, FCGI_PARAMS, FCGI_REQUEST_ID, NULL, 0);
    if (rc == 0 && r->body_ended)
        rc = fcgi_encode_stream(&r->out, FCGI_STDIN, FCGI_REQUEST_ID, NULL, 0);
    buf_finish(&params);
    return rc;
}

/* Connected: send the head, then the body as the client sends it. */
static void req_connected(struct fcgi_req *r)
{
    r->state = REQ_ACTIVE;
    evloop_timer_stop(r->loop, &r->timer);
    const struct http_request *req = conn_request(r->c);
    if (!r->body_started && req->content_length <= 0 && !req->chunked)
        r->body_started = r->body_ended = true; /* no body: STDIN ends with the params */
    if (req_params(r) < 0) {
        req_fail(r, 502, "backend=error");
        return;
    }
    if (r->spool_fd >= 0)
        req_spool_out(r);
    req_write(r);
    if (r->write_dead && !r->wrote_any && req_retryable(r))
        return; /* the retry timer runs */
    if (!r->body_started) {
        r->body_started = true;
        conn_body_read(r->c, &req_sink); /* a request without a body ends at once */
    }
}

/* Connected (r->fd): count the connection on the generation whose socket
 * it reached (fcgi/gate.h). A generation the gate does not know, or one
 * already told to stop, gets nothing: the connection is closed before a byte
 * went out and another is opened. Returns false when r did not go on. */
static bool req_count_peer(struct fcgi_req *r)
{
    struct sockaddr_un peer;
    socklen_t len = sizeof(peer);
    memset(&peer, 0, sizeof(peer));
    size_t plen = 0;
    if (getpeername(r->fd, (struct sockaddr *)&peer, &len) == 0 &&
        len > offsetof(struct sockaddr_un, sun_path))
        plen = len - offsetof(struct sockaddr_un, sun_path);
    if (plen > sizeof(peer.sun_path))
        plen = sizeof(peer.sun_path);
    r->connecting = false;
    r->gen = fcgi_gate_connect_end(r->cl->gate, r->cl->addr.sun_path, peer.sun_path, plen);
    if (r->gen >= 0)
        return true;
    req_close_fd(r);
    evloop_timer_start(r->loop, &r->timer, CONNECT_BACKOFF_MS);
    return false;
}

/* Open a connection; the slot is held. A full backlog or a socket nobody
 * listens on is tried again until the hold deadline. */
static void req_connect(struct fcgi_req *r)
{
    r->state = REQ_CONNECTING;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        req_fail(r, 503, "backend=busy");
        return;
    }
    /* Counted from before connect() until the peer's generation counts the
     * connection: the process manager signals an old generation only when
     * no connect() is under way (fcgi_gate_gen_idle()). */
    fcgi_gate_connect_begin(r->cl->gate);
    r->connecting = true;
    r->fd = fd;
    if (connect(fd, (const struct sockaddr *)&r->cl->addr, r->cl->addr_len) == 0) {
        if (req_count_peer(r))
            req_connected(r);
        return;
    }
    int e = errno;
    if (e == EINPROGRESS) {
        evloop_fd_add(r->loop, fd, EPOLLOUT, req_event, r);
        r->watching = EPOLLOUT;
        return;
    }
    req_close_fd(r);
    evloop_timer_start(r->loop, &r->timer, CONNECT_BACKOFF_MS);
}

static void req_timer_fired(struct evloop *l, void *arg)
{
    struct fcgi_req *r = arg;
    switch (r->state) {
    case REQ_HELD:
        queue_remove(r);
        r->state = REQ_CONNECTING; /* out of the queue */
        STAT_ADD(r->w->stats.hold_timeouts);
        req_fail(r, 503, "backend=busy");
        return;
    case REQ_CONNECTING:
        if (evloop_now(l) >= r->hold_deadline) {
            STAT_ADD(r->w->stats.hold_timeouts);
            req_fail(r, 503, "backend=busy");
            return;
        }
        req_connect(r);
        return;
    default:
        if (r->write_dead && !r->wrote_any && req_retryable(r)) {
            req_retry(r);
            return;
        }
        req_fail(r, 504, "backend=timeout");
        return;
    }
}

/* ---- holding ---- */

static void req_start(struct fcgi_req *r)
{
    /* What the access log shows if the client goes away from here on (stop()
     * may not call into the connection); an answer replaces it. */
    conn_set_log_note(r->c, "backend=aborted");
    r->has_slot = true;
    req_connect(r);
}

/* A slot may be free: start held requests in arrival order, with the slots
 * finished requests left here first. Posted by the gate to this worker's
 * loop, and run from the handoff timer. */
static void worker_drain(struct evloop *l, void *arg)
{
    struct fcgi_worker *w = arg;
    while (w->head) {
        if (w->spare)
            w->spare--;
        else if (!fcgi_gate_acquire(w->cl->gate))
            break;
        struct fcgi_req *r = w->head;
        queue_remove(r);
        evloop_timer_stop(l, &r->timer);
        r->state = REQ_CONNECTING;
        req_start(r);
    }
    for (; w->spare; w->spare--) /* nobody here wants them (any more) */
        fcgi_gate_release(w->cl->gate);
}

static void req_hold(struct fcgi_req *r)
{
    struct fcgi_worker *w = r->w;
    conn_set_log_note(r->c, "backend=held"); /* until it starts or is answered */
    r->state = REQ_HELD;
    r->prev = w->tail;
    if (w->tail)
        w->tail->next = r;
    else
        w->head = r;
    w->tail = r;
    atomic_fetch_add_explicit(&r->cl->held, 1, memory_order_relaxed);
    STAT_ADD(w->stats.holds);
    evloop_timer_at(r->loop, &r->timer, r->hold_deadline);
    if (!w->registered) {
        fcgi_gate_waiting(r->cl->gate, w->loop, true, worker_drain, w);
        w->registered = true;
    }
}

/* Take a slot (a spare one of this worker's first) or join the hold queue,
 * or get the 503 at once when the queue is full. May answer and free r. */
static void req_admit(struct fcgi_req *r)
{
    struct fcgi_client *cl = r->cl;
    struct fcgi_worker *w = r->w;
    r->hold_deadline = evloop_now(r->loop) + cl->conf->backend.hold_timeout_ms;
    r->state = REQ_CONNECTING;
    /* Arrival order: nobody overtakes a held request on this worker. */
    bool slot = false;
    if (!w->head && w->spare) {
        w->spare--;
        slot = true;
    } else if (!w->head) {
        slot = fcgi_gate_acquire(cl->gate);
    }
    if (slot) {
        req_start(r);
        return;
    }
    if (atomic_load_explicit(&cl->held, memory_order_relaxed) >=
        (uint64_t)cl->conf->backend.hold_queue) {
        STAT_ADD(w->stats.queue_full);
        req_fail(r, 503, "backend=busy");
        return;
    }
    req_hold(r);
    /* A slot freed between the failed acquire and the registration woke
     * nobody: look once more. */
    worker_drain(r->loop, w);
}

/* An unlinked file for a chunked body, in $TMPDIR or /tmp. Returns the fd or
 * -errno. */
static int spool_open(void)
{
    const char *dir = getenv("TMPDIR");
    int fd = open(dir && *dir ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    return fd < 0 ? -errno : fd;
}

static size_t spool_data(struct conn *c, void *arg, const char *p, size_t len)
{
    struct fcgi_req *r = arg;
    for (size_t done = 0; done < len && !r->spool_failed;) {
        ssize_t n = pwrite(r->spool_fd, p + done, len - done, (off_t)r->spool_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r->spool_failed = true; /* the rest is dropped; the end answers 500 */
            break;
        }
        done += (size_t)n;
        r->spool_len += (uint64_t)n;
    }
    return len;
}

/* The whole chunked body is in the file: now the request may start. */
static void spool_end(struct conn *c, void *arg)
{
    struct fcgi_req *r = arg;
    if (r->spool_failed) {
        conn_set_log_note(c, "backend=error");
        conn_respond_simple(c, 500, "text/plain", "500 Internal Server Error\n");
        req_free(r);
        return;
    }
    req_admit(r);
}

static const struct conn_body_sink spool_sink = {spool_data, spool_end};

/* ---- the handler ---- */

/* Whether the decoded path is under location ("/app/" takes "/app/..." and
 * "/app"; "/app" takes "/app" and "/app/..."). */
static bool under_location(const char *loc, const char *p, size_t len)
{
    size_t n = strlen(loc);
    while (n && loc[n - 1] == '/')
        n--;
    if (len < n || memcmp(p, loc, n) != 0)
        return false;
    return len == n || p[n] == '/';
}

int fcgi_client_handle(struct conn *c, const struct http_request *req, void *arg)
{
    struct fcgi_client *cl = arg;
    if (!req->path.p)
        return HANDLER_PASS;
    const char *loc = cl->conf->backend.location;
    char *path = xmalloc(req->path.len + 1);
    long plen = static_decode_path(req->path.p, req->path.len, path, req->path.len + 1);
    if (plen < 0) {
        bool ours = under_location(loc, req->path.p, req->path.len);
        free(path);
        if (!ours)
            return HANDLER_PASS;
        conn_set_handler(c, HANDLER_KIND_BACKEND);
        conn_set_log_note(c, "backend=refused");
        conn_respond_simple(c, 400, "text/plain", "400 Bad Request: invalid path\n");
        return HANDLER_DONE;
    }
    if (!under_location(loc, path, (size_t)plen)) {
        free(path);
        return HANDLER_PASS;
    }
    conn_set_handler(c, HANDLER_KIND_BACKEND);
    struct fcgi_worker *w = worker_get(cl, conn_loop(c));
    /* A full queue answers at once, before anything is allocated or read. */
    if ((w->head || fcgi_gate_in_flight(cl->gate) >= fcgi_gate_capacity(cl->gate)) &&
        atomic_load_explicit(&cl->held, memory_order_relaxed) >=
            (uint64_t)cl->conf->backend.hold_queue) {
        STAT_ADD(w->stats.queue_full);
        free(path);
        respond_busy(cl, c, req);
        return HANDLER_DONE;
    }
    struct fcgi_req *r = xcalloc(1, sizeof(*r));
    r->cl = cl;
    r->w = w;
    r->c = c;
    r->loop = conn_loop(c);
    r->fd = -1;
    r->gen = -1;
    r->spool_fd = -1;
    r->path = path;
    r->path_len = (size_t)plen;
    r->state = REQ_CONNECTING;
    buf_init(&r->out, PARAMS_MAX + 2 * OUT_HIGH);
    buf_init(&r->in, IN_READ);
    buf_init(&r->head, CGI_HEAD_MAX);
    buf_init(&r->err, ERR_LINE_MAX + 1);
    fcgi_decoder_init(&r->dec);
    evloop_timer_init(&r->timer, req_timer_fired, r);
    /* The connection's own timeout is a backstop only: the hold deadline
     * and the backend's silence are timed here. */
    uint64_t backstop = cl->conf->backend.hold_timeout_ms + cl->conf->backend.timeout_ms + 1000;
    int rc = conn_defer(c, &req_producer, r, backstop);
    if (!req->chunked) {
        req_admit(r);
        return rc;
    }
    r->spool_fd = spool_open();
    if (r->spool_fd < 0) {
        conn_set_log_note(c, "backend=error");
        conn_set_close(c);
        conn_respond_simple(c, 500, "text/plain", "500 Internal Server Error\n");
        req_free(r);
        return rc;
    }
    r->state = REQ_SPOOLING;
    r->body_started = true;
    conn_body_read(c, &spool_sink);
    return rc;
}

/* ---- metrics ---- */

enum {
    CF_HELD,
    CF_HOLDS,
    CF_HOLD_TIMEOUTS,
    CF_QUEUE_FULL,
    CF_ERRORS,
    CF_TIMEOUTS,
    CF_ABORTS,
    CF_RETRIES,
    CF_COUNT,
};

static const struct metrics_family client_families[CF_COUNT] = {
    [CF_HELD] = {.name = "backend_requests_held",
                 .help = "Requests waiting in the hold queue for a backend slot now.",
                 .type = METRICS_GAUGE},
    [CF_HOLDS] = {.name = "backend_holds_total",
                  .help = "Requests that had to wait in the hold queue for a backend slot.",
                  .type = METRICS_COUNTER},
    [CF_HOLD_TIMEOUTS] = {.name = "backend_hold_timeouts_total",
                          .help = "Requests answered 503 because no backend took them within "
                                  "[backend] hold_timeout.",
                          .type = METRICS_COUNTER},
    [CF_QUEUE_FULL] = {.name = "backend_hold_queue_full_total",
                       .help = "Requests answered 503 at once: [backend] hold_queue was full.",
                       .type = METRICS_COUNTER},
    [CF_ERRORS] = {.name = "backend_errors_total",
                   .help = "Requests the backend failed: answered 502 (a broken or incomplete "
                           "response), or 503 when the application refused them.",
                   .type = METRICS_COUNTER},
    [CF_TIMEOUTS] = {.name = "backend_timeouts_total",
                     .help = "Requests answered 504 (or cut): the backend was silent for "
                             "[backend] timeout.",
                     .type = METRICS_COUNTER},
    [CF_ABORTS] = {.name = "backend_client_aborts_total",
                   .help = "Backend requests whose client went away (or whose body failed) "
                           "before the response was complete.",
                   .type = METRICS_COUNTER},
    [CF_RETRIES] = {.name = "backend_retries_total",
                    .help = "Requests started over on a new backend connection (overloaded, "
                            "or nothing of them was sent).",
                    .type = METRICS_COUNTER},
};

static int client_collect(struct metrics_collector *mc, void *arg)
{
    struct fcgi_client *cl = arg;
    uint64_t sum[CF_COUNT] = {0};
    /* The lock keeps the list steady; each worker's counters are its own and
     * read with relaxed loads. */
    pthread_mutex_lock(&cl->lock);
    for (const struct fcgi_worker *w = cl->workers; w; w = w->next_all) {
        sum[CF_HOLDS] += atomic_load_explicit(&w->stats.holds, memory_order_relaxed);
        sum[CF_HOLD_TIMEOUTS] +=
            atomic_load_explicit(&w->stats.hold_timeouts, memory_order_relaxed);
        sum[CF_QUEUE_FULL] += atomic_load_explicit(&w->stats.queue_full, memory_order_relaxed);
        sum[CF_ERRORS] += atomic_load_explicit(&w->stats.errors, memory_order_relaxed);
        sum[CF_TIMEOUTS] += atomic_load_explicit(&w->stats.timeouts, memory_order_relaxed);
        sum[CF_ABORTS] += atomic_load_explicit(&w->stats.aborts, memory_order_relaxed);
        sum[CF_RETRIES] += atomic_load_explicit(&w->stats.retries, memory_order_relaxed);
    }
    pthread_mutex_unlock(&cl->lock);
    sum[CF_HELD] = fcgi_client_held(cl);
    for (size_t f = 0; f < CF_COUNT; f++)
        metrics_value(mc, f, NULL, (double)sum[f]);
    return 0;
}

int fcgi_client_register_metrics(struct fcgi_client *cl, struct metrics *m)
{
    return metrics_register(m, "backend", client_families, CF_COUNT, client_collect, cl);
}
