/* Structures shared by server.c, conn.c and static.c; not a public header. */
#ifndef FERRY_HTTP_INTERNAL_H
#define FERRY_HTTP_INTERNAL_H

#include "common/buf.h"
#include "common/evloop.h"
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
    CONN_WRITE,  /* writing a response */
    CONN_LINGER, /* response sent, write side shut, discarding input before close */
};

#define IN_POOL_MAX 64

/* A request's fields kept for the access log as offsets into conn->in. */
struct log_span {
    uint32_t off, len;
};

struct conn {
    int fd;
    enum conn_state state;
    struct worker *w;
    struct sockaddr_storage peer;

    /* The deadline of the current state (head, idle, write, linger). */
    struct evloop_timer timer;
    struct conn *all_prev, *all_next; /* every connection of the worker */

    char *in; /* request bytes; NULL while idle with nothing buffered */
    size_t in_len;
    size_t in_cap;
    size_t head_len; /* bytes of the current request head in `in` */

    /* The response being written. */
    struct buf out; /* status line and headers, small bodies */
    size_t out_off;
    const char *body; /* uncopied memory body */
    size_t body_len, body_off;
    void (*body_release)(void *);
    void *body_arg;
    int file_fd;
    off_t file_off, file_rem;
    bool head_only;  /* HEAD: no body bytes on the wire */
    bool keep_alive; /* this response keeps the connection */
    bool responding; /* conn_respond_start() was called for the current request */
    bool in_request; /* a request was parsed and its response is not finished */
    bool exempt;     /* conn_mark_exempt() for the current request */
    int status;
    size_t head_end;  /* length of the head in `out`; body bytes may follow it */
    off_t file_start; /* where the file chunk began, for bytes-sent accounting */
    int minor_version;
    struct log_span lg_method, lg_target, lg_referer, lg_ua;
    uint64_t linger_bytes;
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
    struct sup_watch *watches;
    struct sup_timer *timers;
    uint64_t next_timer_id;
    server_timer_cb idle_cb;
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
