/* Structures shared by server.c, conn.c and static.c; not a public header. */
#ifndef FERRY_HTTP_INTERNAL_H
#define FERRY_HTTP_INTERNAL_H

#include "common/buf.h"
#include "common/evloop.h"
#include "http/body.h"
#include "http/chunkq.h"
#include "http/response.h"
#include "http/parser.h"
#include "http/server.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

struct mime_table;
struct fcache;

enum conn_state {
    CONN_IDLE,   /* keep-alive, waiting for the first byte of a request */
    CONN_HEAD,   /* reading a request head */
    CONN_WAIT,   /* a deferred handler has not started its response yet */
    CONN_WRITE,  /* writing a response; a streamed body may still be arriving */
    CONN_LINGER, /* response sent, write side shut, discarding input before close */
};

#define IN_POOL_MAX 64

/* A per-worker counter: written only by its worker's thread, read by anyone
 * with relaxed loads (the scrape sums the workers). The relaxed load and
 * store compile to a plain add: no locked instruction on the request path. */
#define WORKER_STAT_ADD(field, n)                                                                  \
    atomic_store_explicit(&(field), atomic_load_explicit(&(field), memory_order_relaxed) + (n),    \
                          memory_order_relaxed)

/* Request durations (ferry_http_request_duration_seconds), in microseconds. */
#define HTTP_DURATION_BUCKETS 14
extern const uint64_t http_duration_bounds_us[HTTP_DURATION_BUCKETS];

enum { STATUS_CLASSES = 5 }; /* 1xx .. 5xx */

/* The metrics a worker keeps for the scrape (server_metrics.c). */
struct worker_metrics {
    _Atomic uint64_t requests[HANDLER_KIND_COUNT][STATUS_CLASSES];
    _Atomic uint64_t body_bytes[HANDLER_KIND_COUNT];
    _Atomic uint64_t duration[HANDLER_KIND_COUNT][HTTP_DURATION_BUCKETS + 1]; /* not cumulative */
    _Atomic uint64_t duration_us[HANDLER_KIND_COUNT];
    _Atomic uint64_t conns_refused; /* closed at accept: max_connections reached */
};

/* A request's fields kept for the access log as offsets into its head. */
struct log_span {
    uint32_t off, len;
};

/* What a deferred request keeps (conn_defer()): its own copy of the head and
 * of the parsed request, and the request body's reader. */
struct conn_deferred {
    struct http_request req; /* views rebased into head */
    char *head;
    size_t head_len;
    struct http_body body;
    const struct conn_body_sink *sink; /* NULL until conn_body_read() */
    struct buf bodybuf;                /* decoded body bytes not yet taken by the sink */
    bool body_paused;                  /* the sink took less than offered */
    bool body_ended;                   /* sink->end() has run */
    uint64_t body_deadline;            /* body_timeout: the client must send by then (ms) */
};

struct conn {
    int fd;
    enum conn_state state;
    struct worker *w;
    struct sockaddr_storage peer;

    struct evloop_timer timer;        /* the deadline of the current state */
    struct evloop_timer wait_timer;   /* a deferred response's upstream deadline */
    struct evloop_timer kick;         /* 0 ms: resume body reading outside a producer's call */
    struct conn *all_prev, *all_next; /* every connection of the worker */

    char *in; /* request bytes; NULL while idle with nothing buffered */
    size_t in_len;
    size_t in_cap;
    size_t head_len; /* bytes of the current request head at the start of `in` */

    /* The response being written: the head is built in out, then queued
     * (by reference) in front of the body's chunks. */
    struct buf out;
    struct chunkq q;
    uint64_t head_bytes; /* bytes of q that are not body (interim + head) */
    bool head_only;      /* HEAD: no body bytes on the wire */
    bool keep_alive;     /* this response keeps the connection */
    bool responding;     /* conn_respond_start() was called for the current request */
    bool head_done;      /* the head is finished and queued */
    bool head_failed;    /* a head append failed: the response becomes a 500 */
    bool in_request;     /* a request was parsed and its response is not finished */
    bool exempt;         /* conn_mark_exempt() for the current request */
    bool has_body;       /* the request announced a body */
    int status;
    int minor_version;
    struct log_span lg_method, lg_target, lg_referer, lg_ua;
    const char *log_note;      /* conn_set_log_note(); static storage, cleared per log line */
    enum handler_kind handler; /* conn_set_handler(); reset per request */
    uint64_t start_us;         /* when the request's head was dispatched (loop time) */
    uint64_t linger_bytes;

    /* Deferred responses (conn_defer()). */
    const struct conn_producer *prod; /* NULL once the response is complete */
    void *prod_arg;
    uint64_t wait_ms;
    struct conn_deferred *def;
    const struct http_request *req; /* the request during dispatch */
    bool streaming;                 /* conn_respond_stream() was called */
    bool chunked_out;               /* the streamed body is sent chunked */
    bool body_done;                 /* no more body bytes will be appended */
    bool writing;                   /* inside conn_write(): appends only queue */
    int64_t out_left;               /* declared Content-Length not yet appended; -1: unknown */
};

struct worker {
    struct server *srv;
    pthread_t thread;
    bool started; /* the thread was created and must be joined */
    struct evloop *loop;
    const struct ferry_state *state;
    struct conn *all;
    bool stopping;
    bool listening;
    bool accept_paused;     /* out of fds: listeners off until accept_resume */
    uint64_t accept_pauses; /* pauses since accepting last worked */
    struct evloop_timer accept_resume;
    time_t log_time; /* second that log_when shows */
    char log_when[40];
    char date[32];
    time_t date_time;
    struct buf access;       /* access log lines not yet written */
    struct http_request req; /* scratch for the request being handled */
    char *path_buf;          /* scratch for decoded paths (max_uri_size + 1) */
    struct fcache *fcache;   /* small files' contents, NULL when disabled */
    char **in_pool;          /* free input buffers for reuse */
    size_t in_pool_len;

    _Atomic bool exited; /* the loop has ended: the worker starts no request any more */
    _Atomic uint64_t seen_generation;
    _Atomic uint64_t stat_conns_open;
    _Atomic uint64_t stat_conns_total;
    _Atomic uint64_t stat_requests;
    _Atomic uint64_t stat_inflight;
    _Atomic uint64_t stat_inflight_exempt;
    _Atomic uint64_t stat_maint_served;
    _Atomic uint64_t stat_maint_bypassed;
    struct worker_metrics metrics;
};

struct handler_entry {
    http_handler_fn fn;
    void *arg;
};

struct retired_state;

struct server {
    const struct ferry_conf *conf;
    int *listen_fds;
    size_t nlisten;
    int nworkers;
    struct worker *workers;
    pthread_mutex_t *workers_mu; /* taken to (de)allocate workers, and by the metrics collector */
    struct handler_entry handlers[HANDLER_SLOT_COUNT];
    int access_fd; /* -1 when off */
    struct mime_table *mime;
    int root_fd;
    struct http_limits limits;

    _Atomic(struct ferry_state *) state;
    _Atomic uint64_t generation;
    server_release_fn release[STATE_PARTS]; /* who frees each part's snapshots */
    struct retired_state *retired;          /* replaced, maybe still read by a worker */
    _Atomic int conns_total_open;           /* across workers, for max_connections */
    _Atomic bool idle_watch;

    /* Supervisor loop. */
    struct evloop *loop;
    int signal_fd;
    int ack_fd;  /* eventfd workers write after switching state or exiting */
    int idle_fd; /* eventfd workers write when in-flight drops to zero */
    bool stopping;
    bool aborting; /* shutdown_timeout passed: connections are being cut */
    struct evloop_timer shutdown_timer;
    server_idle_cb idle_cb;
    void *idle_arg;
};

/* conn.c */
struct conn *conn_create(struct worker *w, int fd, const struct sockaddr *peer, socklen_t len);
void conn_destroy(struct conn *c);
void conn_on_event(struct conn *c, uint32_t events);
void conn_on_timeout(struct conn *c);
/** Graceful stop: close an idle connection now, let others finish. */
void conn_on_stop(struct conn *c);
/** Arm c's timer for the current state, deadline in monotonic ms. */
void worker_timer_set(struct worker *w, struct conn *c, uint64_t deadline);
void worker_access_flush(struct worker *w);
const char *worker_date(struct worker *w);

/* static.c */
int static_handle(struct conn *c, const struct http_request *req, void *arg);

#endif
