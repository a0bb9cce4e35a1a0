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
#define EVENTS_PER_WAIT 256
#define PUBLISH_TIMEOUT_MS 10000

struct sup_watch {
    struct sup_watch *next;
    int fd;
    server_fd_cb cb;
    void *arg;
};

struct sup_timer {
    struct sup_timer *next;
    uint64_t id;
    uint64_t when;
    server_timer_cb cb;
    void *arg;
};

/* Tags for the worker epoll's non-connection fds. */
static char tag_wake;

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

static void worker_accept(struct worker *w, int lfd)
{
    struct server *s = w->srv;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE)
                log_warn("accept: %s", strerror(errno));
            return;
        }
        int open_now = atomic_fetch_add_explicit(&s->conns_total_open, 1, memory_order_relaxed);
        if (open_now >= s->conf->server.max_connections) {
            /* Over the limit: close at once so served connections are unaffected. */
            atomic_fetch_sub_explicit(&s->conns_total_open, 1, memory_order_relaxed);
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

static void worker_stop_listening(struct worker *w)
{
    if (!w->listening)
        return;
    for (size_t i = 0; i < w->srv->nlisten; i++)
        epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->srv->listen_fds[i], NULL);
    w->listening = false;
}

static void worker_on_wake(struct worker *w)
{
    uint64_t v;
    ssize_t r = read(w->wake_fd, &v, sizeof(v));
    (void)r;
    struct server *s = w->srv;
    struct ferry_state *st = atomic_load_explicit(&s->state, memory_order_acquire);
    if (st != w->state) {
        w->state = st;
        atomic_store_explicit(&w->seen_generation, st->generation, memory_order_release);
        uint64_t one = 1;
        r = write(s->ack_fd, &one, sizeof(one));
    }
    if (atomic_load_explicit(&s->stop, memory_order_acquire) && !w->stopping) {
        w->stopping = true;
        worker_stop_listening(w);
        struct conn *next;
        for (struct conn *c = w->all; c; c = next) {
            next = c->all_next;
            conn_on_stop(c);
        }
    }
}

static int worker_timeout_ms(struct worker *w, uint64_t now)
{
    uint64_t soonest = UINT64_MAX;
    for (int i = 0; i < TL_COUNT; i++)
        if (w->timers[i][0] && w->timers[i][0]->deadline < soonest)
            soonest = w->timers[i][0]->deadline;
    if (soonest == UINT64_MAX)
        return 1000;
    if (soonest <= now)
        return 0;
    uint64_t d = soonest - now;
    return d > 1000 ? 1000 : (int)d;
}

static void worker_expire(struct worker *w, uint64_t now)
{
    for (int i = 0; i < TL_COUNT; i++) {
        while (w->timers[i][0] && w->timers[i][0]->deadline <= now)
            conn_on_timeout(w->timers[i][0]);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct epoll_event events[EVENTS_PER_WAIT];
    for (;;) {
        uint64_t now = time_mono_ms();
        if (w->stopping && !w->all)
            break;
        int n = epoll_wait(w->epfd, events, EVENTS_PER_WAIT, worker_timeout_ms(w, now));
        if (n < 0 && errno != EINTR)
            break;
        w->now_ms = time_mono_ms();
        w->now_wall = time(NULL);
        for (int i = 0; i < n; i++) {
            void *p = events[i].data.ptr;
            if (p == &tag_wake) {
                worker_on_wake(w);
            } else if ((uintptr_t)p & 1) {
                worker_accept(w, (int)((uintptr_t)p >> 1));
            } else {
                conn_on_event(p, events[i].events);
            }
        }
        worker_expire(w, w->now_ms);
        worker_access_flush(w);
    }
    worker_access_flush(w);
    return NULL;
}

static int worker_init(struct server *s, struct worker *w)
{
    w->srv = s;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->epfd < 0 || w->wake_fd < 0)
        return -errno;
    for (int i = 0; i < TL_COUNT; i++)
        w->timers[i][0] = w->timers[i][1] = NULL;
    buf_init(&w->access, 1 << 20);
    w->path_buf = xmalloc(s->conf->server.max_uri_size + 1);
    if (s->conf->server.file_cache_valid_ms > 0 && s->conf->server.file_cache_size > 0)
        w->fcache =
            fcache_create(s->conf->server.file_cache_size, s->conf->server.file_cache_max_file,
                          s->conf->server.file_cache_valid_ms);
    w->in_pool = xcalloc(IN_POOL_MAX, sizeof(char *));
    w->state = atomic_load(&s->state);
    w->now_ms = time_mono_ms();
    w->now_wall = time(NULL);
    atomic_store(&w->seen_generation, w->state->generation);
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &tag_wake};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wake_fd, &e) < 0)
        return -errno;
    for (size_t i = 0; i < s->nlisten; i++) {
        /* Odd pointers mark listening sockets: fds are small, conns aligned. */
        struct epoll_event le = {.events = EPOLLIN | EPOLLEXCLUSIVE,
                                 .data.ptr = (void *)(((uintptr_t)s->listen_fds[i] << 1) | 1)};
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, s->listen_fds[i], &le) < 0)
            return -errno;
    }
    w->listening = true;
    return 0;
}

static void worker_finish(struct worker *w)
{
    while (w->all)
        conn_destroy(w->all);
    if (w->epfd >= 0)
        close(w->epfd);
    if (w->wake_fd >= 0)
        close(w->wake_fd);
    buf_finish(&w->access);
    free(w->path_buf);
    fcache_destroy(w->fcache);
    for (size_t i = 0; i < w->in_pool_len; i++)
        free(w->in_pool[i]);
    free(w->in_pool);
}

static void wake_workers(struct server *s)
{
    for (int i = 0; i < s->nworkers; i++) {
        uint64_t one = 1;
        ssize_t r = write(s->workers[i].wake_fd, &one, sizeof(one));
        (void)r;
    }
}

/* ---- server ---- */

static struct ferry_state initial_state;

struct server *server_create(const struct ferry_conf *conf, char *err, size_t errlen)
{
    struct server *s = xcalloc(1, sizeof(*s));
    s->conf = conf;
    s->access_fd = -1;
    s->root_fd = -1;
    s->sup_epfd = s->signal_fd = s->ack_fd = s->idle_fd = -1;
    s->limits.max_header_size = conf->server.max_header_size;
    s->limits.max_uri_size = conf->server.max_uri_size;
    s->next_timer_id = 1;
    struct ferry_state *st = xcalloc(1, sizeof(*st));
    *st = initial_state;
    atomic_store(&s->state, st);

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
    s->sup_epfd = epoll_create1(EPOLL_CLOEXEC);
    s->ack_fd = eventfd(0, EFD_CLOEXEC);
    s->idle_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->sup_epfd < 0 || s->ack_fd < 0 || s->idle_fd < 0) {
        snprintf(err, errlen, "epoll/eventfd: %s", strerror(errno));
        goto fail;
    }
    return s;
fail:
    server_destroy(s);
    return NULL;
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
    for (int fd_i = 0; fd_i < 4; fd_i++) {
        int fd = fd_i == 0   ? s->sup_epfd
                 : fd_i == 1 ? s->signal_fd
                 : fd_i == 2 ? s->ack_fd
                             : s->idle_fd;
        if (fd >= 0)
            close(fd);
    }
    while (s->watches) {
        struct sup_watch *n = s->watches->next;
        free(s->watches);
        s->watches = n;
    }
    while (s->timers) {
        struct sup_timer *n = s->timers->next;
        free(s->timers);
        s->timers = n;
    }
    struct ferry_state *st = atomic_load(&s->state);
    if (st && st->maint_release && st->maint)
        st->maint_release(st->maint);
    free(st);
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

void server_request_stop(struct server *s)
{
    atomic_store(&s->stop, true);
}

/* ---- supervisor services ---- */

int server_watch_fd(struct server *s, int fd, uint32_t events, server_fd_cb cb, void *arg)
{
    struct sup_watch *wt = xcalloc(1, sizeof(*wt));
    wt->fd = fd;
    wt->cb = cb;
    wt->arg = arg;
    struct epoll_event e = {.events = events, .data.ptr = wt};
    if (epoll_ctl(s->sup_epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
        int r = -errno;
        free(wt);
        return r;
    }
    wt->next = s->watches;
    s->watches = wt;
    return 0;
}

int server_unwatch_fd(struct server *s, int fd)
{
    for (struct sup_watch **p = &s->watches; *p; p = &(*p)->next) {
        if ((*p)->fd == fd) {
            struct sup_watch *wt = *p;
            *p = wt->next;
            epoll_ctl(s->sup_epfd, EPOLL_CTL_DEL, fd, NULL);
            /* Freed lazily: the loop may still hold it for this round. */
            wt->cb = NULL;
            wt->next = NULL;
            free(wt);
            return 0;
        }
    }
    return -ENOENT;
}

uint64_t server_add_timer(struct server *s, uint64_t ms, server_timer_cb cb, void *arg)
{
    struct sup_timer *t = xcalloc(1, sizeof(*t));
    t->id = s->next_timer_id++;
    t->when = time_mono_ms() + ms;
    t->cb = cb;
    t->arg = arg;
    struct sup_timer **p = &s->timers;
    while (*p && (*p)->when <= t->when)
        p = &(*p)->next;
    t->next = *p;
    *p = t;
    return t->id;
}

void server_cancel_timer(struct server *s, uint64_t id)
{
    for (struct sup_timer **p = &s->timers; *p; p = &(*p)->next) {
        if ((*p)->id == id) {
            struct sup_timer *t = *p;
            *p = t->next;
            free(t);
            return;
        }
    }
}

void server_on_idle(struct server *s, server_timer_cb cb, void *arg)
{
    s->idle_cb = cb;
    s->idle_arg = arg;
    atomic_store(&s->idle_watch, cb != NULL);
}

void server_get_stats(const struct server *s, struct server_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!s->workers)
        return;
    for (int i = 0; i < s->nworkers; i++) {
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
}

int server_publish(struct server *s, const struct ferry_state *st)
{
    struct ferry_state *next = xmalloc(sizeof(*next));
    *next = *st;
    next->generation = atomic_fetch_add(&s->generation, 1) + 1;
    struct ferry_state *old = atomic_exchange_explicit(&s->state, next, memory_order_acq_rel);
    if (!s->workers) {
        /* Not running yet: each worker loads the current state when it starts. */
        if (old->maint && old->maint_release)
            old->maint_release(old->maint);
        free(old);
        return 0;
    }
    wake_workers(s);
    /* Wait until every worker has loaded the new pointer: only then can no
     * request that starts from now on see the old state. */
    uint64_t deadline = time_mono_ms() + PUBLISH_TIMEOUT_MS;
    for (;;) {
        bool all = true;
        for (int i = 0; i < s->nworkers; i++)
            if (atomic_load_explicit(&s->workers[i].seen_generation, memory_order_acquire) <
                next->generation)
                all = false;
        if (all)
            break;
        uint64_t now = time_mono_ms();
        if (now >= deadline)
            return -ETIMEDOUT; /* old stays referenced; leaking it is the safe choice */
        struct pollfd pfd = {.fd = s->ack_fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(deadline - now)) > 0) {
            uint64_t v;
            ssize_t r = read(s->ack_fd, &v, sizeof(v));
            (void)r;
        }
    }
    if (old->maint && old->maint_release)
        old->maint_release(old->maint);
    free(old);
    return 0;
}

static void supervisor_signal(struct server *s)
{
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
            if (!atomic_load(&s->stop))
                log_info("%s: stopping gracefully (up to %llums)",
                         si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT",
                         (unsigned long long)s->conf->server.shutdown_timeout_ms);
            atomic_store(&s->stop, true);
        }
    }
}

static void run_timers(struct server *s)
{
    uint64_t now = time_mono_ms();
    while (s->timers && s->timers->when <= now) {
        struct sup_timer *t = s->timers;
        s->timers = t->next;
        server_timer_cb cb = t->cb;
        void *arg = t->arg;
        free(t);
        cb(s, arg);
    }
}

static int sup_timeout(struct server *s)
{
    if (!s->timers)
        return 1000;
    uint64_t now = time_mono_ms();
    if (s->timers->when <= now)
        return 0;
    uint64_t d = s->timers->when - now;
    return d > 1000 ? 1000 : (int)d;
}

static char sup_tag_signal, sup_tag_idle;

int server_run(struct server *s)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    /* Block before creating threads so only the signalfd sees them. */
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    s->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->signal_fd < 0)
        return -errno;
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &sup_tag_signal};
    epoll_ctl(s->sup_epfd, EPOLL_CTL_ADD, s->signal_fd, &e);
    struct epoll_event ie = {.events = EPOLLIN, .data.ptr = &sup_tag_idle};
    epoll_ctl(s->sup_epfd, EPOLL_CTL_ADD, s->idle_fd, &ie);

    s->workers = xcalloc((size_t)s->nworkers, sizeof(struct worker));
    int started = 0, r = 0;
    for (int i = 0; i < s->nworkers; i++) {
        s->workers[i].epfd = s->workers[i].wake_fd = -1;
        r = worker_init(s, &s->workers[i]);
        if (r < 0)
            break;
        if ((r = -pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i])) < 0)
            break;
        started++;
    }
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
    }

    uint64_t stop_deadline = 0;
    while (r == 0) {
        if (atomic_load(&s->stop)) {
            if (!stop_deadline) {
                notify_systemd("STOPPING=1");
                stop_deadline = time_mono_ms() + s->conf->server.shutdown_timeout_ms;
                wake_workers(s);
            }
            bool running = false;
            for (int i = 0; i < started; i++) {
                if (s->workers[i].joined)
                    continue;
                if (pthread_tryjoin_np(s->workers[i].thread, NULL) == 0)
                    s->workers[i].joined = true;
                else
                    running = true;
            }
            if (!running)
                break;
            if (time_mono_ms() >= stop_deadline) {
                log_warn("shutdown_timeout reached with responses in flight; exiting");
                /* Workers may be mid-write; exiting the process ends them. */
                worker_access_flush(&s->workers[0]);
                return 0;
            }
        }
        struct epoll_event evs[32];
        int timeout = stop_deadline ? 20 : sup_timeout(s);
        int n = epoll_wait(s->sup_epfd, evs, 32, timeout);
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &sup_tag_signal) {
                supervisor_signal(s);
            } else if (p == &sup_tag_idle) {
                uint64_t v;
                ssize_t rr = read(s->idle_fd, &v, sizeof(v));
                (void)rr;
                if (s->idle_cb)
                    s->idle_cb(s, s->idle_arg);
            } else {
                struct sup_watch *wt = p;
                bool live = false;
                for (struct sup_watch *x = s->watches; x; x = x->next)
                    if (x == wt)
                        live = true;
                if (live && wt->cb)
                    wt->cb(s, wt->fd, evs[i].events, wt->arg);
            }
        }
        run_timers(s);
    }
    /* Threads that never started or already joined are skipped. */
    for (int i = 0; i < started; i++)
        if (!s->workers[i].joined)
            pthread_join(s->workers[i].thread, NULL);
    for (int i = 0; i < s->nworkers; i++)
        worker_finish(&s->workers[i]);
    free(s->workers);
    s->workers = NULL;
    s->nworkers = 0;
    return r;
}
