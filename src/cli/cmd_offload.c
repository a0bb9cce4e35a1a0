#include "cli/cli.h"

#include "admin/admin.h"
#include "common/conf.h"
#include "common/evloop.h"
#include "common/log.h"
#include "metrics/metrics.h"
#include "metrics/metrics_http.h"
#include "offload/offload.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

struct offload_main {
    struct evloop *loop;
    int signal_fd;
    bool finished; /* the offloader stopped by itself (--once drained) */
    struct offload *o;
    bool progress, tty; /* --progress; stderr is a terminal (redraw one line) */
    struct evloop_timer progress_timer;
    uint64_t started_ms;
};

/* One progress line: files done of known, bytes uploaded, rate, ETA. */
static void progress_print(struct offload_main *m, bool last)
{
    struct offload_stats st;
    offload_get_stats(m->o, &st);
    uint64_t done = st.deleted + st.failed + st.rejected;
    uint64_t known = done + st.backlog_files + st.queued + st.in_flight;
    uint64_t ms = evloop_now(m->loop) - m->started_ms;
    double mib = (double)st.bytes_uploaded / (1024.0 * 1024.0);
    double rate = ms ? mib * 1000.0 / (double)ms : 0.0;
    char eta[32] = "-";
    if (rate > 0.0 && st.backlog_bytes)
        snprintf(eta, sizeof(eta), "%.0fs", (double)st.backlog_bytes / (1024.0 * 1024.0) / rate);
    fprintf(stderr, "%soffload: %llu/%llu files, %.1f MiB, %.1f MiB/s, ETA %s, %llu failed%s",
            m->tty ? "\r\033[K" : "", (unsigned long long)done, (unsigned long long)known, mib,
            rate, eta, (unsigned long long)(st.failed + st.rejected), m->tty && !last ? "" : "\n");
    fflush(stderr);
}

static void on_progress(struct evloop *l, void *arg)
{
    struct offload_main *m = arg;
    progress_print(m, false);
    evloop_timer_start(l, &m->progress_timer, m->tty ? 200 : 5000);
}

static void on_signal(struct evloop *l, int fd, uint32_t events, void *arg)
{
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGHUP) {
            int r = log_reopen();
            if (r < 0)
                log_error("reopening the error log: %s", strerror(-r));
        } else {
            log_info("%s: stopping the offloader", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
            evloop_stop(l);
        }
    }
}

static void on_finished_run(struct evloop *l, void *arg)
{
    struct offload_main *m = arg;
    m->finished = true;
    evloop_stop(l);
}

/* The uploader thread: the offloader drained the spool (--once). */
static void on_finished(void *arg)
{
    struct offload_main *m = arg;
    evloop_post(m->loop, on_finished_run, m);
}

/* Run the offloader alone until a signal (or, with once, until the spool is drained),
 * with its own admin socket so that `ferry status` works. */
static int offload_run(const struct ferry_conf *conf, bool once, bool progress)
{
    struct offload_main m = {.signal_fd = -1, .progress = progress, .tty = isatty(2) == 1};
    struct admin *admin = NULL;
    struct offload *o = NULL;
    struct metrics *metrics = metrics_create();
    struct metrics_http *mhttp = NULL;
    char err[512] = "";
    int ret = EXIT_RUNTIME;
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    m.loop = evloop_create();
    if (!m.loop) {
        log_error("cannot start: event loop: %s", strerror(errno));
        return EXIT_RUNTIME;
    }
    m.signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (m.signal_fd < 0 || evloop_fd_add(m.loop, m.signal_fd, EPOLLIN, on_signal, &m) < 0) {
        log_error("cannot start: signalfd: %s", strerror(errno));
        goto done;
    }
    /* The admin socket first: it refuses to start while `ferry serve` (or another
     * `ferry offload`) answers on it. */
    admin = admin_create(m.loop, conf->server.admin_socket, err, sizeof(err));
    if (!admin) {
        log_error("cannot start: %s", err);
        goto done;
    }
    admin_set_limits(admin, conf->server.admin_timeout_ms, 0, 0);
    struct offload_opts oo = {.once = once, .finished = on_finished, .finished_arg = &m};
    if (offload_create(conf, &oo, &o, err, sizeof(err)) < 0 ||
        offload_register_admin(o, admin) < 0 || offload_start(o, err, sizeof(err)) < 0) {
        log_error("cannot start: %s", err);
        goto done;
    }
    /* [metrics] listen serves the offloader's metrics when it runs alone too. */
    if (metrics_register_process(metrics, "offload") < 0 ||
        offload_register_metrics(o, metrics) < 0) {
        log_error("cannot start: a metric family is registered twice");
        goto done;
    }
    metrics_attach_admin(metrics, admin);
    if (metrics_http_start(conf, metrics, &mhttp, err, sizeof(err)) < 0) {
        log_error("cannot start: %s", err);
        goto done;
    }
    log_info("offloading %s%s", conf->offload.spool, once ? " once" : "");
    m.o = o;
    m.started_ms = evloop_now(m.loop);
    evloop_timer_init(&m.progress_timer, on_progress, &m);
    if (progress)
        evloop_timer_start(m.loop, &m.progress_timer, m.tty ? 200 : 5000);
    int r = evloop_run(m.loop);
    evloop_timer_stop(m.loop, &m.progress_timer);
    if (r < 0)
        log_error("event loop: %s", strerror(-r));
    if (offload_stop(o, conf->server.shutdown_timeout_ms) < 0) {
        log_warn("the offloader did not stop within %llums: its uploads in flight are "
                 "abandoned; the journal resumes them at the next start",
                 (unsigned long long)conf->server.shutdown_timeout_ms);
        _exit(once ? EXIT_RUNTIME : EXIT_OK);
    }
    if (progress)
        progress_print(&m, true);
    struct offload_stats st;
    offload_get_stats(o, &st);
    log_info("offload: uploaded %llu, deleted %llu, failed %llu, rejected %llu",
             (unsigned long long)st.uploaded, (unsigned long long)st.deleted,
             (unsigned long long)st.failed, (unsigned long long)st.rejected);
    if (r < 0)
        ret = EXIT_RUNTIME;
    else if (once)
        ret = m.finished && offload_result(o) == 0 ? EXIT_OK : EXIT_RUNTIME;
    else
        ret = EXIT_OK;
done:
    metrics_http_stop(mhttp);
    admin_destroy(admin);
    offload_destroy(o);
    metrics_destroy(metrics);
    if (m.signal_fd >= 0) {
        evloop_fd_del(m.loop, m.signal_fd);
        close(m.signal_fd);
    }
    evloop_destroy(m.loop);
    return ret;
}

/* ferry offload [-c FILE] [--once] [--progress] [--dry-run] */
int cmd_offload(int argc, char **argv)
{
    const char *path = NULL;
    bool once = false, dry_run = false, progress = false;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"once", no_argument, NULL, 'o'},
        {"progress", no_argument, NULL, 'p'},
        {"dry-run", no_argument, NULL, 'n'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "+c:", opts, NULL)) != -1) {
        if (ch == 'c')
            path = optarg;
        else if (ch == 'o')
            once = true;
        else if (ch == 'n')
            dry_run = true;
        else if (ch == 'p')
            progress = true;
        else
            return cli_usage(argv[0]);
    }
    if (optind != argc)
        return cli_usage(argv[0]);

    struct ferry_conf conf;
    int r = cli_load_conf(path, &conf);
    if (r != 0) {
        conf_finish(&conf);
        return r;
    }
    if (!conf.offload.spool[0]) {
        fprintf(stderr, "ferry offload: [offload] spool is not set in %s\n",
                conf.path ? conf.path : "the built-in defaults");
        conf_finish(&conf);
        return EXIT_USAGE;
    }
    if (dry_run) {
        char err[512] = "";
        r = offload_dry_run(&conf, stdout, err, sizeof(err));
        if (r < 0)
            fprintf(stderr, "ferry offload: %s\n", err);
        conf_finish(&conf);
        return r < 0 ? EXIT_RUNTIME : EXIT_OK;
    }
    r = cli_open_log(&conf);
    if (r != 0) {
        conf_finish(&conf);
        return r;
    }
    r = offload_run(&conf, once, progress);
    conf_finish(&conf);
    return r;
}
