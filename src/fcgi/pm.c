/* The FastCGI process manager: generations of processes, each on its own
 * socket, their readiness, respawns, the swap and the shutdown. Supervisor thread only,
 * except the metrics collector (pm_collect()). */
#include "fcgi/pm.h"

#include "admin/admin.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/conf.h"
#include "common/evloop.h"
#include "common/log.h"
#include "common/net.h"
#include "common/spawn.h"
#include "common/timeutil.h"
#include "fcgi/client.h"
#include "fcgi/gate.h"
#include "metrics/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define PM_BACKOFF_MIN_MS 100    /* first respawn delay */
#define PM_BACKOFF_MAX_MS 10000  /* the delay doubles up to this */
#define PM_STABLE_MS 60000       /* a process that ran this long resets the delay */
#define PM_SHUTDOWN_STEP_MS 2000 /* at shutdown: stop_signal, then TERM, then KILL */
#define PM_READY_FD 3            /* the readiness pipe's fd in the child */
#define PM_READY_LINE_MAX 64     /* longest line kept from the readiness pipe */
#define PM_IDLE_POLL_MS 5        /* how often a draining generation is checked for idle */

struct pm_gen;

struct pm_proc {
    struct pm_gen *gen;
    struct spawn_child child;
    bool alive;     /* spawned and not yet reaped */
    bool ready;     /* counts for the gate */
    bool reporting; /* wrote something other than READY: no grace */
    int ready_fd;   /* read end of the readiness pipe, -1 when closed */
    char line[PM_READY_LINE_MAX];
    size_t linelen;
    uint64_t started_ms;
    uint64_t backoff_ms; /* the next respawn delay */
    uint64_t respawns;
    struct evloop_timer timer; /* ready_grace while starting; respawn delay while down */
};

/* GEN_DRAINING: the path names a newer generation; this one serves the
 * connections it has and is not signalled until it has none (fcgi/pm.h).
 * GEN_STOPPING: stop_signal sent. Neither is respawned nor counts for the
 * gate's capacity. */
enum gen_state { GEN_STARTING, GEN_READY, GEN_DRAINING, GEN_STOPPING };

/* A process's state as the metrics show it. */
enum proc_state { PROC_STARTING, PROC_READY, PROC_DRAINING, PROC_STATES };

/* One generation's running processes by state, as last published
 * (pm_publish()) for the metrics collector. */
struct pm_gen_count {
    unsigned id;
    uint32_t n[PROC_STATES];
};

/* What ended a stopping generation: the stage of its stop when the last
 * process was reaped. */
enum stop_stage { STOP_NONE, STOP_SIGNALLED, STOP_TERMINATED, STOP_KILLED };

struct pm_gen {
    struct fcgi_pm *pm;
    struct pm_gen *next; /* pm->gens, oldest first */
    unsigned id;
    char *command;
    char *argbuf;   /* command split in place */
    char **argv;    /* into argbuf (argv[0] possibly resolved through PATH) */
    char *resolved; /* argv[0] found in PATH, or NULL */
    enum gen_state state;
    enum stop_stage stage;
    struct pm_proc *procs;
    size_t n;
    size_t alive;
    uint64_t respawns;
    uint64_t started_ms, stop_ms, drain_ms;
    struct evloop_timer timer; /* ready_timeout while starting; idle polls; stop stages */
    /* Its own listening socket (the children's fd 0), bound at bind_path
     * (fcgi_gate_gen_path()); the file may have been renamed to the
     * configured path since. Closed by gen_free(). */
    int sock_fd;
    char *bind_path;
    dev_t sock_dev;
    ino_t sock_ino;
};

struct fcgi_pm {
    struct evloop *loop;
    const struct ferry_conf *conf;
    struct fcgi_gate *gate;
    const struct fcgi_client *client; /* for its held count; may be NULL */
    char *sock_path;                  /* the configured path: always names cur's socket */
    char **envp;                      /* environ plus FERRY_READY_FD */
    struct pm_gen *gens;
    struct pm_gen *cur; /* the generation serving (may still be starting) */
    unsigned next_id;
    /* Written here, read by the metrics collector on its own thread. */
    _Atomic uint64_t respawns, swaps, swaps_failed;
    /* The processes by generation and state for the metrics collector, which
     * must not walk gens: rebuilt by pm_publish() after every change. */
    pthread_mutex_t counts_mu;
    struct pm_gen_count *counts;
    size_t ncounts, counts_cap;
    /* The swap in progress: its client (held), the generation starting and
     * the one being replaced (set once the new one is ready). */
    struct {
        struct admin_client *client;
        struct pm_gen *new_gen, *old_gen;
        uint64_t started_ms;
        char *old_pids, *new_pids; /* "1 2 3" at the moment of the switch */
        json_t *old_arr, *new_arr;
        char *error; /* why it failed, once it has */
    } swap;
};

static const char *const gen_state_names[] = {"starting", "ready", "draining", "stopping"};

/* ---- the socket ---- */

/* Bind g's socket at g->bind_path, blocking: the children share its open
 * file description, and a libfcgi or php-cgi process expects accept() to
 * block. A stale socket file there is removed; a live one refuses. */
static int gen_bind_socket(struct pm_gen *g, char *err, size_t errlen)
{
    int fd = net_listen_unix(g->bind_path, "backend socket",
                             "something is listening there (another ferry, or backend "
                             "processes left running)",
                             false, SOMAXCONN, err, errlen);
    if (fd < 0)
        return fd;
    struct stat st;
    if (fstat(fd, &st) < 0 || stat(g->bind_path, &st) < 0) {
        int r = -errno;
        close(fd);
        snprintf(err, errlen, "backend socket '%s': %s", g->bind_path, strerror(-r));
        return r;
    }
    g->sock_fd = fd;
    g->sock_dev = st.st_dev;
    g->sock_ino = st.st_ino;
    return 0;
}

/* Remove path if it still names g's socket (not a newer one, nor one
 * something else put there meanwhile). */
static void gen_unlink_name(const struct pm_gen *g, const char *path)
{
    struct stat st;
    if (g->sock_fd >= 0 && lstat(path, &st) == 0 && st.st_dev == g->sock_dev &&
        st.st_ino == g->sock_ino)
        unlink(path);
}

/* ---- commands ---- */

/* argv[0] without a slash is looked up in PATH, like a shell would. */
static char *pm_resolve_path(const char *name)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t len = strcspn(path, ":");
        char *cand = xasprintf("%.*s/%s", (int)len, len ? path : ".", name);
        if (access(cand, X_OK) == 0)
            return cand;
        free(cand);
        path += len;
        if (*path == ':')
            path++;
    }
    return NULL;
}

/* Split g->command on blanks into g->argv. Returns 0 or -EINVAL (empty). */
static int gen_split_command(struct pm_gen *g)
{
    g->argbuf = xstrdup(g->command);
    size_t n = 0, cap = 8;
    g->argv = xmalloc(cap * sizeof(*g->argv));
    for (char *save = NULL, *tok = strtok_r(g->argbuf, " \t", &save); tok;
         tok = strtok_r(NULL, " \t", &save)) {
        if (n + 2 > cap) {
            cap *= 2;
            g->argv = xrealloc(g->argv, cap * sizeof(*g->argv));
        }
        g->argv[n++] = tok;
    }
    g->argv[n] = NULL;
    if (n == 0)
        return -EINVAL;
    if (!strchr(g->argv[0], '/')) {
        g->resolved = pm_resolve_path(g->argv[0]);
        if (!g->resolved)
            return -ENOENT;
        g->argv[0] = g->resolved;
    }
    return 0;
}

/* ---- capacity ---- */

/* Publish the running processes by generation and state for the metrics:
 * called after anything that changes them. */
static void pm_publish(struct fcgi_pm *pm)
{
    pthread_mutex_lock(&pm->counts_mu);
    pm->ncounts = 0;
    for (const struct pm_gen *g = pm->gens; g; g = g->next) {
        if (pm->ncounts == pm->counts_cap) {
            pm->counts_cap = pm->counts_cap ? 2 * pm->counts_cap : 4;
            pm->counts = xrealloc(pm->counts, pm->counts_cap * sizeof(*pm->counts));
        }
        struct pm_gen_count *gc = &pm->counts[pm->ncounts++];
        memset(gc, 0, sizeof(*gc));
        gc->id = g->id;
        for (size_t i = 0; i < g->n; i++) {
            const struct pm_proc *p = &g->procs[i];
            if (p->alive)
                gc->n[g->state >= GEN_DRAINING ? PROC_DRAINING
                      : p->ready               ? PROC_READY
                                               : PROC_STARTING]++;
        }
    }
    pthread_mutex_unlock(&pm->counts_mu);
}

/* The gate's capacity: the current generation's ready processes x
 * concurrency. A starting generation gets no connection before the path
 * names it, and a draining one's requests keep their slots in the gate
 * (fcgi/gate.h), so neither counts here. */
static void pm_update_capacity(struct fcgi_pm *pm)
{
    uint64_t ready = 0;
    const struct pm_gen *g = pm->cur;
    if (g && g->state < GEN_DRAINING)
        for (size_t i = 0; i < g->n; i++)
            ready += g->procs[i].ready;
    uint64_t cap = ready * (uint64_t)pm->conf->backend.concurrency;
    fcgi_gate_set_capacity(pm->gate, cap > UINT32_MAX ? UINT32_MAX : (uint32_t)cap);
    pm_publish(pm);
}

/* ---- processes ---- */

static void proc_on_exit(struct evloop *l, int fd, uint32_t events, void *arg);
static void proc_on_ready_fd(struct evloop *l, int fd, uint32_t events, void *arg);
static void gen_check_ready(struct pm_gen *g);
static void gen_check_gone(struct pm_gen *g);

static void proc_close_ready_fd(struct pm_proc *p)
{
    if (p->ready_fd < 0)
        return;
    evloop_fd_del(p->gen->pm->loop, p->ready_fd);
    close(p->ready_fd);
    p->ready_fd = -1;
}

static void proc_set_ready(struct pm_proc *p)
{
    if (p->ready || !p->alive)
        return;
    p->ready = true;
    evloop_timer_stop(p->gen->pm->loop, &p->timer);
    if (p->gen == p->gen->pm->cur)
        pm_update_capacity(p->gen->pm);
    gen_check_ready(p->gen);
}

static void proc_on_grace(struct evloop *l, void *arg)
{
    struct pm_proc *p = arg;
    /* A report written just before the grace ended may still wait in the
     * pipe, its event not yet handled in this round: read it first. */
    if (p->ready_fd >= 0)
        proc_on_ready_fd(l, p->ready_fd, EPOLLIN, p);
    if (p->alive && !p->reporting)
        proc_set_ready(p);
}

/* Start p. Returns 0 or -errno (nothing is left open). */
static int proc_spawn(struct pm_proc *p)
{
    struct pm_gen *g = p->gen;
    struct fcgi_pm *pm = g->pm;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -errno;
    struct spawn_opts o;
    spawn_opts_init(&o);
    o.argv = (const char *const *)g->argv;
    o.envp = (const char *const *)pm->envp;
    o.stdin_fd = g->sock_fd;
    o.fd3 = pfd[1];
    int r = spawn_process(&o, &p->child);
    close(pfd[1]);
    if (r < 0) {
        close(pfd[0]);
        return r;
    }
    r = fcntl(pfd[0], F_SETFL, O_NONBLOCK) < 0 ? -errno : 0;
    if (r == 0)
        r = evloop_fd_add(pm->loop, p->child.pidfd, EPOLLIN, proc_on_exit, p);
    if (r == 0) {
        r = evloop_fd_add(pm->loop, pfd[0], EPOLLIN, proc_on_ready_fd, p);
        if (r < 0)
            evloop_fd_del(pm->loop, p->child.pidfd);
    }
    if (r < 0) {
        close(pfd[0]);
        spawn_finish(&p->child);
        return r;
    }
    p->ready_fd = pfd[0];
    p->alive = true;
    p->ready = false;
    p->reporting = false;
    p->linelen = 0;
    p->started_ms = evloop_now(pm->loop);
    g->alive++;
    evloop_timer_init(&p->timer, proc_on_grace, p);
    evloop_timer_start(pm->loop, &p->timer, pm->conf->backend.ready_grace_ms);
    return 0;
}

static void proc_on_ready_fd(struct evloop *l, int fd, uint32_t events, void *arg)
{
    struct pm_proc *p = arg;
    char tmp[256];
    ssize_t n = read(fd, tmp, sizeof(tmp));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        proc_close_ready_fd(p);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (tmp[i] != '\n') {
            if (p->linelen < sizeof(p->line) - 1)
                p->line[p->linelen++] = tmp[i];
            continue;
        }
        p->line[p->linelen] = '\0';
        if (p->linelen && p->line[p->linelen - 1] == '\r')
            p->line[p->linelen - 1] = '\0';
        p->linelen = 0;
        if (strcmp(p->line, "READY") == 0) {
            proc_set_ready(p);
            return;
        }
        p->reporting = true;
    }
    /* Anything but READY, even without its newline yet, announces a report. */
    if (p->linelen && strncmp(p->line, "READY", p->linelen) != 0)
        p->reporting = true;
}

static void proc_on_respawn(struct evloop *l, void *arg);

/* Log why p's process ended. */
static void proc_log_exit(struct pm_proc *p, int status)
{
    struct pm_gen *g = p->gen;
    uint64_t ran = evloop_now(g->pm->loop) - p->started_ms;
    const char *why = g->state == GEN_STOPPING ? "stopped" : "died";
    if (WIFEXITED(status))
        log_at(g->state == GEN_STOPPING ? LOG_LVL_INFO : LOG_LVL_WARN,
               "backend: generation %u process %d %s: exit status %d after %" PRIu64 " ms", g->id,
               (int)p->child.pid, why, WEXITSTATUS(status), ran);
    else
        log_at(g->state == GEN_STOPPING ? LOG_LVL_INFO : LOG_LVL_WARN,
               "backend: generation %u process %d %s: signal %d (%s)%s after %" PRIu64 " ms", g->id,
               (int)p->child.pid, why, WTERMSIG(status), strsignal(WTERMSIG(status)),
               WCOREDUMP(status) ? ", core dumped" : "", ran);
}

static void proc_schedule_respawn(struct pm_proc *p)
{
    struct fcgi_pm *pm = p->gen->pm;
    uint64_t ran = evloop_now(pm->loop) - p->started_ms;
    if (ran >= PM_STABLE_MS || p->backoff_ms == 0)
        p->backoff_ms = PM_BACKOFF_MIN_MS;
    evloop_timer_init(&p->timer, proc_on_respawn, p);
    evloop_timer_start(pm->loop, &p->timer, p->backoff_ms);
    log_info("backend: generation %u: respawning in %" PRIu64 " ms", p->gen->id, p->backoff_ms);
    p->backoff_ms = p->backoff_ms * 2 > PM_BACKOFF_MAX_MS ? PM_BACKOFF_MAX_MS : p->backoff_ms * 2;
}

static void proc_on_respawn(struct evloop *l, void *arg)
{
    struct pm_proc *p = arg;
    struct pm_gen *g = p->gen;
    if (g->state >= GEN_DRAINING || p->alive)
        return;
    p->respawns++;
    g->respawns++;
    g->pm->respawns++;
    int r = proc_spawn(p);
    if (r < 0) {
        log_error("backend: generation %u: cannot start '%s': %s", g->id, g->command, strerror(-r));
        p->started_ms = evloop_now(l);
        proc_schedule_respawn(p);
        return;
    }
    pm_publish(g->pm);
    log_info("backend: generation %u: process %d started (respawn)", g->id, (int)p->child.pid);
}

static void proc_on_exit(struct evloop *l, int fd, uint32_t events, void *arg)
{
    struct pm_proc *p = arg;
    struct pm_gen *g = p->gen;
    int status = 0;
    int r = spawn_reap(&p->child, &status);
    if (r == -EAGAIN)
        return;
    evloop_fd_del(l, fd);
    proc_close_ready_fd(p);
    if (r == 0)
        proc_log_exit(p, status);
    spawn_finish(&p->child);
    evloop_timer_stop(l, &p->timer);
    bool was_ready = p->ready;
    p->alive = false;
    p->ready = false;
    g->alive--;
    if (g->state >= GEN_DRAINING) {
        pm_publish(g->pm);
        gen_check_gone(g);
        return;
    }
    if (was_ready)
        pm_update_capacity(g->pm);
    else
        pm_publish(g->pm);
    proc_schedule_respawn(p);
}

/* ---- generations ---- */

static void gen_free(struct pm_gen *g)
{
    struct evloop *l = g->pm->loop;
    evloop_timer_stop(l, &g->timer);
    for (size_t i = 0; i < g->n; i++) {
        struct pm_proc *p = &g->procs[i];
        evloop_timer_stop(l, &p->timer);
        proc_close_ready_fd(p);
        if (p->alive) {
            evloop_fd_del(l, p->child.pidfd);
            spawn_finish(&p->child);
        }
    }
    if (g->sock_fd >= 0) {
        /* Its temporary name if it never became current; the configured path
         * if it still names this socket (at shutdown). */
        gen_unlink_name(g, g->bind_path);
        gen_unlink_name(g, g->pm->sock_path);
        close(g->sock_fd);
    }
    fcgi_gate_gen_remove(g->pm->gate, g->id);
    free(g->bind_path);
    free(g->procs);
    free(g->argv);
    free(g->argbuf);
    free(g->resolved);
    free(g->command);
    free(g);
}

/* A new generation for command, linked into pm->gens, processes started.
 * Returns NULL with a message in err (nothing left running). */
static struct pm_gen *gen_start(struct fcgi_pm *pm, const char *command, char *err, size_t errlen)
{
    struct pm_gen *g = xcalloc(1, sizeof(*g));
    g->pm = pm;
    g->id = ++pm->next_id;
    g->command = xstrdup(command);
    g->n = (size_t)pm->conf->backend.processes;
    g->procs = xcalloc(g->n, sizeof(*g->procs));
    g->started_ms = evloop_now(pm->loop);
    for (size_t i = 0; i < g->n; i++) {
        g->procs[i].gen = g;
        g->procs[i].ready_fd = -1;
        evloop_timer_init(&g->procs[i].timer, proc_on_grace, &g->procs[i]);
    }
    evloop_timer_init(&g->timer, NULL, g);
    g->sock_fd = -1;
    g->bind_path = fcgi_gate_gen_path(pm->sock_path, g->id);
    int r = gen_split_command(g);
    if (r < 0) {
        snprintf(err, errlen, "[backend] command '%s': %s", command,
                 r == -ENOENT ? "program not found in PATH" : "empty");
        goto fail;
    }
    if (fcgi_gate_gen_add(pm->gate, g->id) < 0) {
        snprintf(err, errlen, "too many generations still have connections open");
        goto fail;
    }
    if (gen_bind_socket(g, err, errlen) < 0)
        goto fail;
    for (size_t i = 0; i < g->n; i++) {
        r = proc_spawn(&g->procs[i]);
        if (r < 0) {
            snprintf(err, errlen, "cannot start [backend] command '%s': %s", command, strerror(-r));
            goto fail;
        }
    }
    g->next = NULL;
    struct pm_gen **tail = &pm->gens;
    while (*tail)
        tail = &(*tail)->next;
    *tail = g;
    pm_publish(pm);
    char pids[256] = "";
    for (size_t i = 0, off = 0; i < g->n && off < sizeof(pids); i++)
        off += (size_t)snprintf(pids + off, sizeof(pids) - off, "%s%d", i ? " " : "",
                                (int)g->procs[i].child.pid);
    log_info("backend: generation %u starting: '%s', pids %s", g->id, command, pids);
    return g;
fail:
    gen_free(g);
    return NULL;
}

static void gen_unlink(struct pm_gen *g)
{
    for (struct pm_gen **pp = &g->pm->gens; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            return;
        }
}

static void gen_on_stop_stage(struct evloop *l, void *arg);

static void gen_signal_all(struct pm_gen *g, int sig)
{
    for (size_t i = 0; i < g->n; i++)
        if (g->procs[i].alive)
            spawn_signal(&g->procs[i].child, sig);
}

/* Tell g to stop accepting, then escalate on a timer. g may be freed before
 * this returns (when nothing of it is running). */
static void gen_stop(struct pm_gen *g)
{
    struct fcgi_pm *pm = g->pm;
    g->state = GEN_STOPPING;
    fcgi_gate_gen_set(pm->gate, g->id, FCGI_GEN_STOPPED);
    g->stage = STOP_SIGNALLED;
    g->stop_ms = evloop_now(pm->loop);
    for (size_t i = 0; i < g->n; i++)
        if (!g->procs[i].alive)
            evloop_timer_stop(pm->loop, &g->procs[i].timer); /* a pending respawn */
    pm_update_capacity(pm);
    gen_signal_all(g, conf_stop_signal_number(pm->conf->backend.stop_signal));
    evloop_timer_stop(pm->loop, &g->timer); /* its ready_timeout, if still armed */
    evloop_timer_init(&g->timer, gen_on_stop_stage, g);
    evloop_timer_start(pm->loop, &g->timer, pm->conf->backend.drain_timeout_ms);
    gen_check_gone(g);
}

static void gen_on_stop_stage(struct evloop *l, void *arg)
{
    struct pm_gen *g = arg;
    if (g->stage == STOP_SIGNALLED) {
        log_warn("backend: generation %u did not exit within drain_timeout (%" PRIu64
                 " ms): SIGTERM to %zu process(es)",
                 g->id, g->pm->conf->backend.drain_timeout_ms, g->alive);
        g->stage = STOP_TERMINATED;
        gen_signal_all(g, SIGTERM);
        evloop_timer_start(l, &g->timer, g->pm->conf->backend.drain_timeout_ms);
    } else if (g->stage == STOP_TERMINATED) {
        log_warn("backend: generation %u: SIGKILL to %zu process(es) still running", g->id,
                 g->alive);
        g->stage = STOP_KILLED;
        gen_signal_all(g, SIGKILL);
    }
}

static void swap_finish(struct fcgi_pm *pm);

/* Free a stopping generation once nothing of it runs. */
static void gen_check_gone(struct pm_gen *g)
{
    if (g->state < GEN_DRAINING || g->alive > 0)
        return;
    struct fcgi_pm *pm = g->pm;
    log_info("backend: generation %u stopped (%s after %" PRIu64 " ms)", g->id,
             g->stage == STOP_NONE         ? "exited before it was signalled"
             : g->stage == STOP_SIGNALLED  ? "drained"
             : g->stage == STOP_TERMINATED ? "terminated"
                                           : "killed",
             evloop_now(pm->loop) - (g->stop_ms ? g->stop_ms : g->drain_ms));
    bool swap_done = pm->swap.client && (pm->swap.old_gen == g || pm->swap.new_gen == g);
    gen_unlink(g);
    pm_publish(pm);
    if (pm->swap.old_gen == g)
        pm->swap.old_gen = NULL;
    if (pm->swap.new_gen == g)
        pm->swap.new_gen = NULL;
    gen_free(g);
    if (swap_done)
        swap_finish(pm);
}

/* ---- swap ---- */

static json_t *gen_pids_json(const struct pm_gen *g)
{
    json_t *a = json_array();
    for (size_t i = 0; i < g->n; i++)
        if (g->procs[i].alive)
            json_array_append_new(a, json_integer(g->procs[i].child.pid));
    return a;
}

static char *gen_pids_text(const struct pm_gen *g)
{
    struct buf b;
    buf_init(&b, 64 * 1024);
    for (size_t i = 0; i < g->n; i++)
        if (g->procs[i].alive)
            buf_printf(&b, "%s%d", b.len ? " " : "", (int)g->procs[i].child.pid);
    char *s = xstrdup(b.data ? b.data : "");
    buf_finish(&b);
    return s;
}

static void swap_clear(struct fcgi_pm *pm)
{
    free(pm->swap.old_pids);
    free(pm->swap.new_pids);
    free(pm->swap.error);
    json_decref(pm->swap.old_arr);
    json_decref(pm->swap.new_arr);
    memset(&pm->swap, 0, sizeof(pm->swap));
}

/* The swap's end: the old generation is gone (success), or the new one is
 * (failure, swap.error set). Sends the reply. */
static void swap_finish(struct fcgi_pm *pm)
{
    uint64_t took = evloop_now(pm->loop) - pm->swap.started_ms;
    json_t *reply = json_object();
    if (pm->swap.error) {
        pm->swaps_failed++;
        log_warn("backend: swap failed: %s", pm->swap.error);
        admin_reply_error(reply, "swap failed: %s", pm->swap.error);
    } else {
        pm->swaps++;
        char text[1024];
        snprintf(text, sizeof(text),
                 "swapped in %" PRIu64 " ms: old pids %s (exited), new pids %s (generation %u)\n",
                 took, pm->swap.old_pids, pm->swap.new_pids, pm->cur ? pm->cur->id : 0);
        log_info("backend: %.*s", (int)strlen(text) - 1, text);
        if (admin_json_add(reply, json_pack("{s:O, s:O, s:I, s:I, s:s}", "old_pids",
                                            pm->swap.old_arr, "new_pids", pm->swap.new_arr,
                                            "generation", (json_int_t)(pm->cur ? pm->cur->id : 0),
                                            "duration_ms", (json_int_t)took, "text", text)) < 0)
            admin_reply_error(reply, "swap: the reply could not be built");
    }
    struct admin_client *c = pm->swap.client;
    swap_clear(pm);
    admin_client_reply(c, reply);
}

/* Every PM_IDLE_POLL_MS while old drains: signal it once nothing is or can
 * still be on its socket (fcgi_gate_gen_idle()), or at drain_timeout
 * anyway. */
static void gen_on_idle_poll(struct evloop *l, void *arg)
{
    struct pm_gen *g = arg;
    struct fcgi_pm *pm = g->pm;
    /* A connection still in its socket's backlog came from before the
     * rename; ferry's own are counted by the gate, but a client that connects
     * to the path itself (cgi-fcgi, a health check) is seen only here. */
    struct pollfd pfd = {.fd = g->sock_fd, .events = POLLIN};
    bool backlog = poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN);
    if (backlog || !fcgi_gate_gen_idle(pm->gate, g->id)) {
        if (evloop_now(l) - g->drain_ms < pm->conf->backend.drain_timeout_ms) {
            evloop_timer_start(l, &g->timer, PM_IDLE_POLL_MS);
            return;
        }
        log_warn("backend: generation %u still has %" PRIu32
                 " request(s) in flight after drain_timeout (%" PRIu64
                 " ms): sending stop_signal anyway",
                 g->id, fcgi_gate_gen_in_flight(pm->gate, g->id),
                 pm->conf->backend.drain_timeout_ms);
    }
    gen_stop(g); /* may finish the swap at once */
}

/* The new generation g is ready: its socket takes the configured path (an
 * atomic rename, so the path always names a listening socket) and it becomes
 * the current one; the old one drains, and is told to stop once idle. */
static void swap_promote(struct fcgi_pm *pm, struct pm_gen *g)
{
    struct pm_gen *old = pm->cur;
    if (rename(g->bind_path, pm->sock_path) < 0) {
        free(pm->swap.error);
        pm->swap.error = xasprintf("cannot rename '%s' to '%s': %s; the new generation was "
                                   "stopped, the old generation keeps serving",
                                   g->bind_path, pm->sock_path, strerror(errno));
        gen_stop(g); /* finishes the swap once g is gone */
        return;
    }
    /* From here on every connect() by path reaches g. */
    pm->cur = g;
    pm->swap.new_gen = NULL;
    pm->swap.new_pids = gen_pids_text(g);
    pm->swap.new_arr = gen_pids_json(g);
    if (!old) {
        pm_update_capacity(pm);
        pm->swap.old_pids = xstrdup("");
        pm->swap.old_arr = json_array();
        swap_finish(pm);
        return;
    }
    pm->swap.old_pids = gen_pids_text(old);
    pm->swap.old_arr = gen_pids_json(old);
    pm->swap.old_gen = old;
    old->state = GEN_DRAINING;
    old->drain_ms = evloop_now(pm->loop);
    fcgi_gate_gen_set(pm->gate, old->id, FCGI_GEN_DRAINING);
    for (size_t i = 0; i < old->n; i++)
        if (!old->procs[i].alive)
            evloop_timer_stop(pm->loop, &old->procs[i].timer); /* a pending respawn */
    pm_update_capacity(pm);
    log_info("backend: generation %u ready and named '%s'; generation %u (pids %s) is told to "
             "stop once its %" PRIu32 " request(s) in flight are done",
             g->id, pm->sock_path, old->id, pm->swap.old_pids,
             fcgi_gate_gen_in_flight(pm->gate, old->id));
    evloop_timer_stop(pm->loop, &old->timer);
    evloop_timer_init(&old->timer, gen_on_idle_poll, old);
    gen_on_idle_poll(pm->loop, old); /* may finish the swap at once */
}

static void gen_on_ready_timeout(struct evloop *l, void *arg)
{
    struct pm_gen *g = arg;
    struct fcgi_pm *pm = g->pm;
    size_t ready = 0;
    for (size_t i = 0; i < g->n; i++)
        ready += g->procs[i].ready;
    if (pm->swap.new_gen != g) {
        /* The first generation: there is nothing to fall back to, so it keeps
         * trying; requests wait, then get the 503 page. */
        log_warn("backend: generation %u not ready within ready_timeout (%" PRIu64
                 " ms): %zu of %zu process(es) ready; requests are held meanwhile",
                 g->id, pm->conf->backend.ready_timeout_ms, ready, g->n);
        return;
    }
    free(pm->swap.error);
    pm->swap.error =
        xasprintf("the new generation ('%s') was not ready within ready_timeout "
                  "(%" PRIu64 " ms): %zu of %zu process(es) ready, %zu running; "
                  "it was stopped, the old generation keeps serving",
                  g->command, pm->conf->backend.ready_timeout_ms, ready, g->n, g->alive);
    gen_stop(g); /* finishes the swap once g is gone */
}

/* Called when one of g's processes became ready. */
static void gen_check_ready(struct pm_gen *g)
{
    if (g->state != GEN_STARTING)
        return;
    for (size_t i = 0; i < g->n; i++)
        if (!g->procs[i].ready)
            return;
    g->state = GEN_READY;
    evloop_timer_stop(g->pm->loop, &g->timer);
    log_info("backend: generation %u ready (%zu process(es)) after %" PRIu64 " ms", g->id, g->n,
             evloop_now(g->pm->loop) - g->started_ms);
    if (g->pm->swap.new_gen == g)
        swap_promote(g->pm, g);
}

static int swap_cmd(struct admin_client *c, const struct admin_request *req, json_t *reply,
                    void *arg)
{
    struct fcgi_pm *pm = arg;
    if (pm->swap.client)
        return admin_reply_error(reply,
                                 "a swap is already in progress (started %" PRIu64
                                 " ms ago); wait for it to finish",
                                 evloop_now(pm->loop) - pm->swap.started_ms);
    /* The command is re-read from the file, so that a deploy can point it at
     * the new version. */
    char *command = NULL;
    if (pm->conf->path) {
        struct ferry_conf nc;
        struct buf err;
        buf_init(&err, 16 * 1024);
        conf_init_defaults(&nc);
        int r = conf_load(&nc, pm->conf->path, &err);
        if (r == 0)
            command = xstrdup(nc.backend.command);
        conf_finish(&nc);
        if (r < 0) {
            admin_reply_error(reply, "swap: cannot re-read '%s': %s", pm->conf->path,
                              err.data ? err.data : strerror(-r));
            buf_finish(&err);
            return 0;
        }
        buf_finish(&err);
    } else {
        command = xstrdup(pm->conf->backend.command);
    }
    if (!command[0]) {
        free(command);
        return admin_reply_error(reply, "swap: [backend] command is now empty in '%s'",
                                 pm->conf->path);
    }
    char err[512];
    struct pm_gen *g = gen_start(pm, command, err, sizeof(err));
    free(command);
    if (!g) {
        pm->swaps_failed++;
        return admin_reply_error(reply, "swap failed: %s; the old generation keeps serving", err);
    }
    pm->swap.client = c;
    pm->swap.new_gen = g;
    pm->swap.started_ms = evloop_now(pm->loop);
    evloop_timer_init(&g->timer, gen_on_ready_timeout, g);
    evloop_timer_start(pm->loop, &g->timer, pm->conf->backend.ready_timeout_ms);
    pm_update_capacity(pm);
    admin_client_hold(c);
    gen_check_ready(g); /* ready_grace 0 */
    return ADMIN_REPLY_LATER;
}

/* ---- status ---- */

static int status_section(json_t *section, struct buf *text, void *arg)
{
    struct fcgi_pm *pm = arg;
    uint32_t cap = fcgi_gate_capacity(pm->gate), inflight = fcgi_gate_in_flight(pm->gate);
    uint32_t held = pm->client ? fcgi_client_held(pm->client) : 0;
    uint64_t served = pm->client ? fcgi_client_served(pm->client) : 0;
    json_t *gens = json_array();
    int r = admin_json_add(
        section, json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:o}", "socket",
                           pm->sock_path, "capacity", (json_int_t)cap, "in_flight",
                           (json_int_t)inflight, "held", (json_int_t)held, "served",
                           (json_int_t)served, "respawns", (json_int_t)pm->respawns, "swaps",
                           (json_int_t)pm->swaps, "swaps_failed", (json_int_t)pm->swaps_failed,
                           "swap_in_progress", pm->swap.client != NULL, "generations", gens));
    if (r == 0)
        r = buf_printf(text,
                       "backend: socket %s, capacity %" PRIu32 ", in flight %" PRIu32
                       ", held %" PRIu32 ", served %" PRIu64 ", respawns %" PRIu64
                       ", swaps %" PRIu64 " (%" PRIu64 " failed)%s\n",
                       pm->sock_path, cap, inflight, held, served, pm->respawns, pm->swaps,
                       pm->swaps_failed, pm->swap.client ? ", swap in progress" : "");
    for (struct pm_gen *g = pm->gens; g && r == 0; g = g->next) {
        size_t ready = 0;
        uint64_t respawns = 0;
        for (size_t i = 0; i < g->n; i++)
            ready += g->procs[i].ready;
        respawns = g->respawns;
        char *pids = gen_pids_text(g);
        uint32_t gen_in_flight = fcgi_gate_gen_in_flight(pm->gate, g->id);
        json_t *o = json_pack("{s:I, s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:I, s:s}", "generation",
                              (json_int_t)g->id, "state", gen_state_names[g->state], "command",
                              g->command, "pids", gen_pids_json(g), "processes", (json_int_t)g->n,
                              "running", (json_int_t)g->alive, "ready", (json_int_t)ready,
                              "respawns", (json_int_t)respawns, "in_flight",
                              (json_int_t)gen_in_flight, "bind_name", g->bind_path);
        r = o && json_array_append_new(gens, o) == 0 ? 0 : -EINVAL;
        if (r == 0)
            r = buf_printf(text,
                           "  generation %u (%s): %zu/%zu ready, in flight %" PRIu32
                           ", pids %s, respawns %" PRIu64 ", command %s\n",
                           g->id, gen_state_names[g->state], ready, g->n, gen_in_flight,
                           pids[0] ? pids : "-", respawns, g->command);
        free(pids);
    }
    return r;
}

/* ---- metrics ---- */

enum {
    PF_PROCESSES,
    PF_CAPACITY,
    PF_IN_FLIGHT,
    PF_SWAPS,
    PF_SWAPS_FAILED,
    PF_RESPAWNS,
    PF_COUNT,
};

static const struct metrics_family pm_families[PF_COUNT] = {
    [PF_PROCESSES] = {.name = "backend_processes",
                      .help =
                          "Backend processes running, by generation and state (starting, "
                          "ready, or draining: replaced, finishing its requests or told to stop).",
                      .type = METRICS_GAUGE,
                      .labels = {"generation", "state"}},
    [PF_CAPACITY] = {.name = "backend_capacity",
                     .help = "Requests the backend may take at once: ready processes x "
                             "[backend] concurrency.",
                     .type = METRICS_GAUGE},
    [PF_IN_FLIGHT] = {.name = "backend_requests_in_flight",
                      .help = "Requests holding a backend slot now.",
                      .type = METRICS_GAUGE},
    [PF_SWAPS] = {.name = "backend_swaps_total",
                  .help = "Backend swaps completed (`ferry swap`).",
                  .type = METRICS_COUNTER},
    [PF_SWAPS_FAILED] = {.name = "backend_swaps_failed_total",
                         .help = "Backend swaps that failed; the old generation kept serving.",
                         .type = METRICS_COUNTER},
    [PF_RESPAWNS] = {.name = "backend_respawns_total",
                     .help = "Backend processes started again after they died.",
                     .type = METRICS_COUNTER},
};

static const char *const proc_state_names[PROC_STATES] = {"starting", "ready", "draining"};

static int pm_collect(struct metrics_collector *mc, void *arg)
{
    struct fcgi_pm *pm = arg;
    /* The published counts, not gens: those are the supervisor's alone. */
    pthread_mutex_lock(&pm->counts_mu);
    for (size_t i = 0; i < pm->ncounts; i++) {
        char id[16];
        snprintf(id, sizeof(id), "%u", pm->counts[i].id);
        for (int st = 0; st < PROC_STATES; st++)
            metrics_value(mc, PF_PROCESSES, (const char *const[]){id, proc_state_names[st]},
                          (double)pm->counts[i].n[st]);
    }
    pthread_mutex_unlock(&pm->counts_mu);
    metrics_value(mc, PF_CAPACITY, NULL, (double)fcgi_gate_capacity(pm->gate));
    metrics_value(mc, PF_IN_FLIGHT, NULL, (double)fcgi_gate_in_flight(pm->gate));
    metrics_value(mc, PF_SWAPS, NULL, (double)atomic_load(&pm->swaps));
    metrics_value(mc, PF_SWAPS_FAILED, NULL, (double)atomic_load(&pm->swaps_failed));
    metrics_value(mc, PF_RESPAWNS, NULL, (double)atomic_load(&pm->respawns));
    return 0;
}

int fcgi_pm_register_metrics(struct fcgi_pm *pm, struct metrics *m)
{
    return metrics_register(m, "backend", pm_families, PF_COUNT, pm_collect, pm);
}

/* ---- life cycle ---- */

/* Whether the variable assignment e belongs to ferry, not to the children:
 * systemd's (a backend must not notify or inherit sockets as if it were
 * ferry) and our own. */
static bool pm_env_private(const char *e)
{
    static const char *const names[] = {
        "FERRY_READY_FD=", "NOTIFY_SOCKET=", "LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES="};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strncmp(e, names[i], strlen(names[i])) == 0)
            return true;
    return false;
}

/* environ without ferry's own variables, plus FERRY_READY_FD=3. */
static char **pm_build_env(void)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = xcalloc(n + 2, sizeof(*env));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!pm_env_private(environ[i]))
            env[k++] = xstrdup(environ[i]);
    env[k++] = xasprintf("FERRY_READY_FD=%d", PM_READY_FD);
    env[k] = NULL;
    return env;
}

struct fcgi_pm *fcgi_pm_create(struct evloop *loop, const struct ferry_conf *conf, char *err,
                               size_t errlen)
{
    struct fcgi_pm *pm = xcalloc(1, sizeof(*pm));
    pm->loop = loop;
    pm->conf = conf;
    pthread_mutex_init(&pm->counts_mu, NULL);
    pm->gate = fcgi_gate_new();
    pm->envp = pm_build_env();
    pm->sock_path = xstrdup(conf->backend.socket);
    /* Swaps bind next to it, at "<socket>.swap.<generation>". */
    if (strlen(pm->sock_path) + sizeof(".swap.4294967295") >
        sizeof(((struct sockaddr_un *)0)->sun_path)) {
        snprintf(err, errlen,
                 "backend socket '%s': path too long (swaps bind '%s.swap.<n>' next to it)",
                 pm->sock_path, pm->sock_path);
        goto fail;
    }
    pm->cur = gen_start(pm, conf->backend.command, err, errlen);
    if (!pm->cur)
        goto fail;
    evloop_timer_init(&pm->cur->timer, gen_on_ready_timeout, pm->cur);
    evloop_timer_start(loop, &pm->cur->timer, conf->backend.ready_timeout_ms);
    gen_check_ready(pm->cur); /* ready_grace 0 */
    return pm;
fail:
    fcgi_pm_destroy(pm);
    return NULL;
}

static int swap_absent_cmd(struct admin_client *c, const struct admin_request *req, json_t *reply,
                           void *arg)
{
    return admin_reply_error(reply, "no backend to swap: [backend] command is empty in the "
                                    "configuration the server started with");
}

int fcgi_pm_register_admin(struct fcgi_pm *pm, struct admin *a)
{
    if (!pm)
        return admin_register(a, "swap", swap_absent_cmd, NULL);
    int r = admin_register(a, "swap", swap_cmd, pm);
    if (r == 0)
        r = admin_register_status(a, "backend", status_section, pm);
    return r;
}

struct fcgi_gate *fcgi_pm_gate(struct fcgi_pm *pm)
{
    return pm->gate;
}

void fcgi_pm_show_client(struct fcgi_pm *pm, const struct fcgi_client *cl)
{
    pm->client = cl;
}

uint32_t fcgi_pm_in_flight(const struct fcgi_pm *pm)
{
    return fcgi_gate_in_flight(pm->gate);
}

/* Wait until every process is reaped or timeout_ms passed; returns how many
 * are still running. */
static size_t pm_wait_all(struct fcgi_pm *pm, uint64_t timeout_ms)
{
    uint64_t deadline = time_mono_ms() + timeout_ms;
    for (;;) {
        size_t running = 0;
        for (struct pm_gen *g = pm->gens; g; g = g->next)
            for (size_t i = 0; i < g->n; i++) {
                struct pm_proc *p = &g->procs[i];
                int status;
                if (p->alive && spawn_reap(&p->child, &status) == 0) {
                    proc_log_exit(p, status);
                    evloop_fd_del(pm->loop, p->child.pidfd);
                    spawn_finish(&p->child);
                    p->alive = false;
                    g->alive--;
                }
                running += p->alive;
            }
        uint64_t now = time_mono_ms();
        if (running == 0 || now >= deadline)
            return running;
        /* A pidfd becomes readable when its process exits; poll one at a time
         * is enough, the loop above collects the others. */
        int fd = -1;
        for (struct pm_gen *g = pm->gens; g && fd < 0; g = g->next)
            for (size_t i = 0; i < g->n && fd < 0; i++)
                if (g->procs[i].alive)
                    fd = g->procs[i].child.pidfd;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        (void)poll(&pfd, 1, (int)(deadline - now > 50 ? 50 : deadline - now));
    }
}

void fcgi_pm_destroy(struct fcgi_pm *pm)
{
    if (!pm)
        return;
    if (pm->gens) {
        /* Workers have stopped: nothing is in flight, so the stop signal only
         * has idle processes to end. */
        for (struct pm_gen *g = pm->gens; g; g = g->next) {
            g->state = GEN_STOPPING;
            fcgi_gate_gen_set(pm->gate, g->id, FCGI_GEN_STOPPED);
            evloop_timer_stop(pm->loop, &g->timer);
            for (size_t i = 0; i < g->n; i++)
                evloop_timer_stop(pm->loop, &g->procs[i].timer);
            gen_signal_all(g, conf_stop_signal_number(pm->conf->backend.stop_signal));
        }
        size_t left = pm_wait_all(pm, PM_SHUTDOWN_STEP_MS);
        if (left) {
            log_warn("backend: %zu process(es) still running after the stop signal: SIGTERM", left);
            for (struct pm_gen *g = pm->gens; g; g = g->next)
                gen_signal_all(g, SIGTERM);
            left = pm_wait_all(pm, PM_SHUTDOWN_STEP_MS);
        }
        if (left)
            log_warn("backend: %zu process(es) still running after SIGTERM: SIGKILL", left);
        if (pm->swap.client) {
            free(pm->swap.error);
            pm->swap.error = xstrdup("ferry is shutting down");
            swap_finish(pm);
        }
        while (pm->gens) {
            struct pm_gen *g = pm->gens;
            pm->gens = g->next;
            gen_free(g); /* SIGKILLs and reaps what is left */
        }
        pm_publish(pm);
    }
    free(pm->sock_path);
    if (pm->envp) {
        for (char **e = pm->envp; *e; e++)
            free(*e);
        free(pm->envp);
    }
    fcgi_gate_free(pm->gate);
    free(pm->counts);
    pthread_mutex_destroy(&pm->counts_mu);
    free(pm);
}
