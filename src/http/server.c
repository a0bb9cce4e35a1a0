/* Listening sockets, worker threads (one epoll loop each over the shared
 * listening sockets with EPOLLEXCLUSIVE), and the supervisor loop: signals,
 * watched fds (admin socket), timers, and state publication. */
#include "http/internal.h"
#include "http/filecache.h"
#include "http/mime.h"

#include "common/alloc.h"
#include "common/conf.h"
#include "common/log.h"
#include "common/net.h"
#include "common/timeutil.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#define ACCEPT_BATCH 64
#define PUBLISH_TIMEOUT_MS 10000
/* Out of fds: stop accepting this long, then try again (nginx pauses too). */
#define ACCEPT_PAUSE_MS 100

/* A state replaced by a newer one that some worker may still be reading. */
struct retired_state {
    struct retired_state *next;
    uint64_t until;         /* freed once every live worker has seen this generation */
    struct ferry_state *st; /* the replaced state struct */
    int part;               /* the part whose snapshot was replaced */
};

static void notify_systemd(const char *msg)
{
#ifdef HAVE_SYSTEMD
    sd_notify(0, msg);
#else
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@'))
        return;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof(sa.sun_path))
        return;
    memcpy(sa.sun_path, path, len);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
    close(fd);
#endif
}

/* ---- worker ---- */

static void worker_on_accept(struct evloop *l, int lfd, uint32_t events, void *arg);

static int worker_listen(struct worker *w)
{
    for (size_t i = 0; i < w->srv->nlisten; i++) {
        int r = evloop_fd_add(w->loop, w->srv->listen_fds[i], EPOLLIN | EPOLLEXCLUSIVE,
                              worker_on_accept, w);
        if (r < 0 && r != -EEXIST)
            return r;
    }
    w->listening = true;
    return 0;
}

static void worker_stop_listening(struct worker *w)
{
    if (!w->listening)
        return;
    for (size_t i = 0; i < w->srv->nlisten; i++)
        evloop_fd_del(w->loop, w->srv->listen_fds[i]);
    w->listening = false;
}

static void worker_accept_resume(struct evloop *l, void *arg)
{
    struct worker *w = arg;
    w->accept_paused = false;
    if (!w->stopping && worker_listen(w) < 0)
        log_error("worker: cannot watch the listening sockets again; this worker stops accepting");
}

/* Out of fds: every accept would fail at once and the listener would fire
 * again straight away, spinning a core. Take the listeners out of the loop
 * for a while instead; log once when it starts, once when it is over. */
static void worker_accept_pause(struct worker *w, int err)
{
    if (!w->accept_pauses++)
        log_warn("accept: %s; pausing new connections (%d ms at a time) until fds are free",
                 strerror(err), ACCEPT_PAUSE_MS);
    worker_stop_listening(w);
    w->accept_paused = true;
    evloop_timer_start(w->loop, &w->accept_resume, ACCEPT_PAUSE_MS);
}

static void worker_on_accept(struct evloop *l, int lfd, uint32_t events, void *arg)
{
    struct worker *w = arg;
    struct server *s = w->srv;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                worker_accept_pause(w, errno);
            return;
        }
        if (w->accept_pauses) {
            log_info("accept: accepting again after %llu pause%s",
                     (unsigned long long)w->accept_pauses, w->accept_pauses == 1 ? "" : "s");
            w->accept_pauses = 0;
        }
        int open_now = atomic_fetch_add_explicit(&s->conns_total_open, 1, memory_order_relaxed);
        if (open_now >= s->conf->server.max_connections) {
            /* Over the limit: close at once so served connections are unaffected. */
            atomic_fetch_sub_explicit(&s->conns_total_open, 1, memory_order_relaxed);
            WORKER_STAT_ADD(w->metrics.conns_refused, 1);
            close(fd);
            continue;
        }
        if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        if (!conn_create(w, fd, (struct sockaddr *)&ss, len)) {
            atomic_fetch_sub_explicit(&s->conns_total_open, 1, memory_order_relaxed);
            close(fd);
        }
    }
}

static void ack_supervisor(struct server *s)
{
    uint64_t one = 1;
    ssize_t r = write(s->ack_fd, &one, sizeof(one));
    (void)r;
}

/* Posted by server_publish(): load the newest state and say so. */
static void worker_on_publish(struct evloop *l, void *arg)
{
    struct worker *w = arg;
    struct ferry_state *st = atomic_load_explicit(&w->srv->state, memory_order_acquire);
    if (st == w->state)
        return;
    w->state = st;
    atomic_store_explicit(&w->seen_generation, st->generation, memory_order_release);
    ack_supervisor(w->srv);
}

/* Posted at SIGTERM/SIGINT: accept nothing more, close idle connections, let
 * the responses in flight finish (conn_destroy ends the loop after the last). */
static void worker_on_stop(struct evloop *l, void *arg)
{
    struct worker *w = arg;
    if (w->stopping)
        return;
    w->stopping = true;
    worker_stop_listening(w);
    evloop_timer_stop(l, &w->accept_resume);
    struct conn *next;
    for (struct conn *c = w->all; c; c = next) {
        next = c->all_next;
        conn_on_stop(c);
    }
    if (!w->all)
        evloop_stop(l);
}

/* Posted when shutdown_timeout has passed: end what is left now. */
static void worker_on_abort(struct evloop *l, void *arg)
{
    struct worker *w = arg;
    worker_on_stop(l, w);
    while (w->all)
        conn_destroy(w->all);
    evloop_stop(l);
}

static void worker_before_wait(struct evloop *l, void *arg)
{
    worker_access_flush(arg);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    int r = evloop_run(w->loop);
    if (r < 0)
        log_error("worker: epoll_wait: %s", strerror(-r));
    /* Only an epoll failure ends the loop with connections left. */
    while (w->all)
        conn_destroy(w->all);
    worker_access_flush(w);
    atomic_store_explicit(&w->exited, true, memory_order_release);
    ack_supervisor(w->srv); /* a publish waiting for this worker need not */
    return NULL;
}

static int worker_init(struct server *s, struct worker *w)
{
    w->srv = s;
    buf_init(&w->access, 1 << 20);
    w->path_buf = xmalloc(s->conf->server.max_uri_size + 1);
    if (s->conf->server.file_cache_valid_ms > 0 && s->conf->server.file_cache_size > 0)
        w->fcache =
            fcache_create(s->conf->server.file_cache_size, s->conf->server.file_cache_max_file,
                          s->conf->server.file_cache_valid_ms);
    w->in_pool = xcalloc(IN_POOL_MAX, sizeof(char *));
    w->state = atomic_load(&s->state);
    atomic_store(&w->seen_generation, w->state->generation);
    w->loop = evloop_create();
    if (!w->loop)
        return -errno;
    evloop_timer_init(&w->accept_resume, worker_accept_resume, w);
    evloop_set_before_wait(w->loop, worker_before_wait, w);
    return worker_listen(w);
}

/* Frees what worker_init() set up; the thread has been joined or never ran.
 * Safe on a worker whose init failed half-way or never began. */
static void worker_finish(struct worker *w)
{
    while (w->all)
        conn_destroy(w->all);
    evloop_destroy(w->loop);
    w->loop = NULL;
    buf_finish(&w->access);
    free(w->path_buf);
    fcache_destroy(w->fcache);
    for (size_t i = 0; i < w->in_pool_len; i++)
        free(w->in_pool[i]);
    free(w->in_pool);
}

static void post_to_workers(struct server *s, evloop_fn fn)
{
    for (int i = 0; i < s->nworkers; i++)
        if (s->workers[i].started && !atomic_load(&s->workers[i].exited))
            evloop_post(s->workers[i].loop, fn, &s->workers[i]);
}

/* ---- server ---- */

struct server *server_create(const struct ferry_conf *conf, char *err, size_t errlen)
{
    struct server *s = xcalloc(1, sizeof(*s));
    s->conf = conf;
    s->workers_mu = xmalloc(sizeof(*s->workers_mu));
    pthread_mutex_init(s->workers_mu, NULL);
    s->access_fd = -1;
    s->root_fd = -1;
    s->signal_fd = s->ack_fd = s->idle_fd = -1;
    s->limits.max_header_size = conf->server.max_header_size;
    s->limits.max_uri_size = conf->server.max_uri_size;
    atomic_store(&s->state, xcalloc(1, sizeof(struct ferry_state)));

    int inherited = net_listen_fds();
    if (inherited > 0) {
        s->nlisten = (size_t)inherited;
        s->listen_fds = xcalloc((size_t)inherited, sizeof(int));
        for (int i = 0; i < inherited; i++)
            s->listen_fds[i] = 3 + i;
    } else {
        s->nlisten = conf->server.listen.count;
        s->listen_fds = xcalloc(s->nlisten, sizeof(int));
        for (size_t i = 0; i < s->nlisten; i++)
            s->listen_fds[i] = -1;
        for (size_t i = 0; i < s->nlisten; i++) {
            struct net_addr a;
            const char *spec = conf->server.listen.items[i];
            if (net_parse_addr(spec, &a) < 0) {
                snprintf(err, errlen, "listen: cannot parse '%s'", spec);
                goto fail;
            }
            int fd = net_listen(&a, 4096);
            if (fd < 0) {
                snprintf(err, errlen, "listen on %s: %s", spec, strerror(-fd));
                goto fail;
            }
            s->listen_fds[i] = fd;
        }
    }

    s->root_fd = open(conf->server.root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (s->root_fd < 0) {
        snprintf(err, errlen, "root '%s': %s", conf->server.root, strerror(errno));
        goto fail;
    }
    if (strcmp(conf->server.access_log, "off") != 0) {
        s->access_fd = log_open_append(conf->server.access_log);
        if (s->access_fd < 0) {
            snprintf(err, errlen, "access_log '%s': %s", conf->server.access_log,
                     strerror(-s->access_fd));
            goto fail;
        }
    }
    s->mime = mime_table_create(conf->server.mime_types);
    s->handlers[HANDLER_SLOT_STATIC].fn = static_handle;
    s->handlers[HANDLER_SLOT_STATIC].arg = s;

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    s->nworkers = conf->server.workers ? (int)conf->server.workers : (int)(ncpu > 0 ? ncpu : 1);
    s->loop = evloop_create();
    s->ack_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->idle_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!s->loop || s->ack_fd < 0 || s->idle_fd < 0) {
        snprintf(err, errlen, "epoll/eventfd: %s", strerror(errno));
        goto fail;
    }
    return s;
fail:
    server_destroy(s);
    return NULL;
}

static void state_release_part(struct server *s, const struct ferry_state *st, int part)
{
    if (st->part[part] && s->release[part])
        s->release[part](st->part[part]);
}

/* Release retired states that no live worker can still read: every worker has
 * either loaded a state at least as new, or exited. */
static void retire_collect(struct server *s, bool all)
{
    uint64_t seen = UINT64_MAX;
    for (int i = 0; !all && i < s->nworkers && s->workers; i++) {
        struct worker *w = &s->workers[i];
        if (!w->started || atomic_load_explicit(&w->exited, memory_order_acquire))
            continue;
        uint64_t g = atomic_load_explicit(&w->seen_generation, memory_order_acquire);
        if (g < seen)
            seen = g;
    }
    for (struct retired_state **p = &s->retired; *p;) {
        struct retired_state *r = *p;
        if (!all && r->until > seen) {
            p = &r->next;
            continue;
        }
        *p = r->next;
        state_release_part(s, r->st, r->part);
        free(r->st);
        free(r);
    }
}

void server_destroy(struct server *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nlisten; i++)
        if (s->listen_fds && s->listen_fds[i] >= 0)
            close(s->listen_fds[i]);
    free(s->listen_fds);
    if (s->root_fd >= 0)
        close(s->root_fd);
    if (s->access_fd >= 0)
        close(s->access_fd);
    mime_table_destroy(s->mime);
    evloop_destroy(s->loop);
    if (s->signal_fd >= 0)
        close(s->signal_fd);
    if (s->ack_fd >= 0)
        close(s->ack_fd);
    if (s->idle_fd >= 0)
        close(s->idle_fd);
    retire_collect(s, true);
    struct ferry_state *st = atomic_load(&s->state);
    for (int i = 0; i < STATE_PARTS; i++)
        state_release_part(s, st, i);
    free(st);
    pthread_mutex_destroy(s->workers_mu);
    free(s->workers_mu);
    free(s);
}

void server_set_handler(struct server *s, enum handler_slot slot, http_handler_fn fn, void *arg)
{
    s->handlers[slot].fn = fn;
    s->handlers[slot].arg = arg;
}

const struct ferry_conf *server_conf(const struct server *s)
{
    return s->conf;
}

const struct ferry_state *server_state(const struct server *s)
{
    return atomic_load(&s->state);
}

struct evloop *server_loop(struct server *s)
{
    return s->loop;
}

void server_on_idle(struct server *s, server_idle_cb cb, void *arg)
{
    s->idle_cb = cb;
    s->idle_arg = arg;
    atomic_store(&s->idle_watch, cb != NULL);
}

void server_get_stats(const struct server *s, struct server_stats *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(s->workers_mu);
    for (int i = 0; s->workers && i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        out->connections_open += atomic_load_explicit(&w->stat_conns_open, memory_order_relaxed);
        out->connections_total += atomic_load_explicit(&w->stat_conns_total, memory_order_relaxed);
        out->requests_total += atomic_load_explicit(&w->stat_requests, memory_order_relaxed);
        out->requests_inflight += atomic_load_explicit(&w->stat_inflight, memory_order_acquire);
        out->requests_inflight_exempt +=
            atomic_load_explicit(&w->stat_inflight_exempt, memory_order_acquire);
        out->maint_served += atomic_load_explicit(&w->stat_maint_served, memory_order_relaxed);
        out->maint_bypassed += atomic_load_explicit(&w->stat_maint_bypassed, memory_order_relaxed);
    }
    pthread_mutex_unlock(s->workers_mu);
}

/* ---- state publication ---- */

void server_set_release(struct server *s, enum server_state_part part, server_release_fn release)
{
    s->release[part] = release;
}

static bool workers_switched(struct server *s, uint64_t generation)
{
    for (int i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        if (!w->started || atomic_load_explicit(&w->exited, memory_order_acquire))
            continue;
        if (atomic_load_explicit(&w->seen_generation, memory_order_acquire) < generation)
            return false;
    }
    return true;
}

static void drain_ack_fd(struct server *s)
{
    uint64_t v;
    ssize_t r = read(s->ack_fd, &v, sizeof(v));
    (void)r;
}

int server_publish(struct server *s, enum server_state_part part, const void *snapshot)
{
    struct ferry_state *cur = atomic_load(&s->state);
    struct ferry_state *next = xmalloc(sizeof(*next));
    *next = *cur;
    next->part[part] = snapshot;
    next->generation = atomic_fetch_add(&s->generation, 1) + 1;
    struct retired_state *r = xmalloc(sizeof(*r));
    *r = (struct retired_state){
        .next = s->retired, .until = next->generation, .st = cur, .part = part};
    s->retired = r;
    atomic_store_explicit(&s->state, next, memory_order_release);
    if (!s->workers) {
        /* Not running: each worker loads the current state when it starts. */
        retire_collect(s, true);
        return 0;
    }
    post_to_workers(s, worker_on_publish);
    /* Wait until every live worker has loaded the new pointer: only then can
     * no request that starts from now on see the old state. The supervisor
     * blocks here; workers never wait for it, so this is bounded by their
     * rounds. */
    uint64_t deadline = time_mono_ms() + PUBLISH_TIMEOUT_MS;
    int ret = 0;
    while (!workers_switched(s, next->generation)) {
        uint64_t now = time_mono_ms();
        if (now >= deadline) {
            ret = -ETIMEDOUT;
            break;
        }
        struct pollfd pfd = {.fd = s->ack_fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(deadline - now)) > 0)
            drain_ack_fd(s);
    }
    retire_collect(s, false);
    return ret;
}

/* ---- supervisor ---- */

static void supervisor_stop(struct server *s);

static void on_signal(struct evloop *l, int fd, uint32_t events, void *arg)
{
    struct server *s = arg;
    struct signalfd_siginfo si;
    while (read(s->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGHUP) {
            int r = log_reopen();
            if (r < 0)
                log_error("reopening the error log: %s", strerror(-r));
            if (s->access_fd >= 0) {
                r = log_reopen_fd(s->access_fd, s->conf->server.access_log);
                if (r < 0)
                    log_error("reopening access_log '%s': %s", s->conf->server.access_log,
                              strerror(-r));
            }
            log_info("SIGHUP: logs reopened");
        } else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            if (!s->stopping)
                log_info("%s: stopping gracefully (up to %llums)",
                         si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT",
                         (unsigned long long)s->conf->server.shutdown_timeout_ms);
            supervisor_stop(s);
        }
    }
}

/* Acknowledgements that arrive outside server_publish() (a worker that was
 * late, or exited): late retirements, and the end of the stop. */
static void on_ack(struct evloop *l, int fd, uint32_t events, void *arg)
{
    struct server *s = arg;
    drain_ack_fd(s);
    retire_collect(s, false);
    if (!s->stopping)
        return;
    int running = 0;
    for (int i = 0; i < s->nworkers; i++)
        if (s->workers[i].started && !atomic_load(&s->workers[i].exited))
            running++;
    if (!running)
        evloop_stop(l);
}

static void on_idle(struct evloop *l, int fd, uint32_t events, void *arg)
{
    struct server *s = arg;
    uint64_t v;
    ssize_t r = read(s->idle_fd, &v, sizeof(v));
    (void)r;
    /* Requests cut by shutdown_timeout did not finish: they drain nothing. */
    if (s->idle_cb && !s->aborting)
        s->idle_cb(s, s->idle_arg);
}

static void on_shutdown_timeout(struct evloop *l, void *arg)
{
    struct server *s = arg;
    log_warn("shutdown_timeout reached with responses in flight; closing them");
    s->aborting = true;
    post_to_workers(s, worker_on_abort);
}

static void supervisor_stop(struct server *s)
{
    if (s->stopping)
        return;
    s->stopping = true;
    notify_systemd("STOPPING=1");
    post_to_workers(s, worker_on_stop);
    evloop_timer_start(s->loop, &s->shutdown_timer, s->conf->server.shutdown_timeout_ms);
    on_ack(s->loop, s->ack_fd, 0, s); /* no worker running: done now */
}

/* Stop and join every started worker (startup failure and the end of a run). */
static void workers_join(struct server *s)
{
    for (int i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        if (!w->started)
            continue;
        pthread_join(w->thread, NULL);
        w->started = false;
    }
}

static int workers_start(struct server *s)
{
    for (int i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        int r = worker_init(s, w);
        if (r < 0) {
            log_error("cannot start worker %d of %d: %s", i + 1, s->nworkers, strerror(-r));
            return r;
        }
        r = -pthread_create(&w->thread, NULL, worker_main, w);
        if (r < 0) {
            log_error("cannot start worker %d of %d: %s", i + 1, s->nworkers, strerror(-r));
            return r;
        }
        w->started = true;
    }
    return 0;
}

int server_run(struct server *s)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    /* Block before creating threads so only the signalfd sees them. Children
     * spawned later must restore the mask and SIGPIPE before exec. */
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    s->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->signal_fd < 0)
        return -errno;
    int r = evloop_fd_add(s->loop, s->signal_fd, EPOLLIN, on_signal, s);
    if (r == 0)
        r = evloop_fd_add(s->loop, s->idle_fd, EPOLLIN, on_idle, s);
    if (r == 0)
        r = evloop_fd_add(s->loop, s->ack_fd, EPOLLIN, on_ack, s);
    if (r < 0)
        return r;
    evloop_timer_init(&s->shutdown_timer, on_shutdown_timeout, s);

    pthread_mutex_lock(s->workers_mu);
    s->workers = xcalloc((size_t)s->nworkers, sizeof(struct worker));
    pthread_mutex_unlock(s->workers_mu);
    r = workers_start(s);
    if (r == 0) {
        char addr[80] = "";
        if (s->nlisten) {
            struct sockaddr_storage ss;
            socklen_t len = sizeof(ss);
            if (getsockname(s->listen_fds[0], (struct sockaddr *)&ss, &len) == 0)
                net_format_addr((struct sockaddr *)&ss, addr, sizeof(addr));
        }
        log_info("ferry %s serving %s on %s%s with %d worker%s", FERRY_VERSION,
                 s->conf->server.root, addr, s->nlisten > 1 ? " and more" : "", s->nworkers,
                 s->nworkers == 1 ? "" : "s");
        notify_systemd("READY=1");
        int lr = evloop_run(s->loop);
        if (lr < 0) {
            log_error("supervisor: epoll_wait: %s", strerror(-lr));
            post_to_workers(s, worker_on_abort);
        }
    } else {
        /* Some workers run: stop them at once, they have served nothing. */
        post_to_workers(s, worker_on_abort);
    }
    evloop_timer_stop(s->loop, &s->shutdown_timer);
    workers_join(s);
    retire_collect(s, true);
    for (int i = 0; i < s->nworkers; i++)
        worker_finish(&s->workers[i]);
    pthread_mutex_lock(s->workers_mu);
    free(s->workers);
    s->workers = NULL;
    s->nworkers = 0;
    pthread_mutex_unlock(s->workers_mu);
    evloop_fd_del(s->loop, s->signal_fd);
    evloop_fd_del(s->loop, s->idle_fd);
    evloop_fd_del(s->loop, s->ack_fd);
    return r;
}
