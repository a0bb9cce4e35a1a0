#include "cli/cli.h"

#include "admin/admin.h"
#include "common/conf.h"
#include "common/log.h"
#include "fcgi/client.h"
#include "fcgi/pm.h"
#include "http/server.h"
#include "http/server_admin.h"
#include "http/server_metrics.h"
#include "maint/maint.h"
#include "metrics/metrics.h"
#include "metrics/metrics_http.h"
#include "offload/offload.h"
#include "offload/serve.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int (*cli_serve_setup)(struct server *s);

/* ferry serve [-c FILE]: run the origin until SIGTERM/SIGINT. */
int cmd_serve(int argc, char **argv)
{
    const char *path = NULL;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "+c:", opts, NULL)) != -1) {
        if (ch != 'c')
            return cli_usage(argv[0]);
        path = optarg;
    }
    if (optind != argc)
        return cli_usage(argv[0]);

    struct ferry_conf conf;
    int r = cli_load_conf(path, &conf);
    if (r == 0)
        r = cli_open_log(&conf);
    if (r != 0) {
        conf_finish(&conf);
        return r;
    }
    /* Each part below is created in order and destroyed in reverse; a part that
     * failed to start leaves its pointer NULL and every destroy is NULL-safe. */
    char err[512] = "";
    const char *what = "cannot start";
    struct admin *admin = NULL;
    struct maint_ctl *maint = NULL;
    struct offload_serve *oserve = NULL;
    struct offload *off = NULL;
    struct metrics *metrics = metrics_create();
    struct metrics_http *mhttp = NULL;
    struct fcgi_pm *pm = NULL;
    struct fcgi_client *fclient = NULL;
    struct server *s = maint_state_dir_prepare(conf.server.state_dir, err, sizeof(err)) < 0
                           ? NULL
                           : server_create(&conf, err, sizeof(err));
    if (!s)
        goto fail;
    admin = admin_create(server_loop(s), conf.server.admin_socket, err, sizeof(err));
    if (!admin)
        goto fail;
    admin_set_limits(admin, conf.server.admin_timeout_ms, 0, 0);
    if (server_register_admin(s, admin) < 0) {
        snprintf(err, sizeof(err), "the server's status section is already registered");
        goto fail;
    }
    maint = maint_attach(s, admin, &conf, err, sizeof(err));
    if (!maint)
        goto fail;
    /* The FastCGI processes (issue 10): their socket is bound here, once, and
     * held until exit. */
    if (conf.backend.command[0]) {
        what = "cannot start the backend";
        pm = fcgi_pm_create(server_loop(s), &conf, err, sizeof(err));
        if (!pm)
            goto fail;
        if (fcgi_pm_register_admin(pm, admin) < 0) {
            snprintf(err, sizeof(err), "the backend's admin command is already registered");
            goto fail;
        }
        /* Requests under location go to it (DESIGN.md request path, step 4). */
        if (fcgi_client_create(&conf, fcgi_pm_gate(pm), &fclient, err, sizeof(err)) < 0)
            goto fail;
        fcgi_client_install(fclient, s);
        fcgi_pm_show_client(pm, fclient);
        what = "cannot start";
    } else if (fcgi_pm_register_admin(NULL, admin) < 0) { /* `swap` says why not */
        snprintf(err, sizeof(err), "the backend's admin command is already registered");
        goto fail;
    }
    /* Requests under url_prefix: local file, else redirect or proxy (issue 9). */
    if (conf.offload.spool[0]) {
        if (offload_serve_create(&conf, &oserve, err, sizeof(err)) < 0)
            goto fail;
        offload_serve_install(oserve, s);
    }
    /* X-Accel-Redirect / X-Sendfile (issue 11): the application names an
     * upload, the offload handler serves it. */
    if (fclient && oserve && conf.backend.accel_redirect) /* conf_load() checked the spool */
        fcgi_client_set_accel(fclient, oserve);
    /* The offloader runs on its own threads; it only shares the admin registry. */
    if (conf.offload.spool[0]) {
        what = "cannot start the offloader";
        if (offload_create(&conf, NULL, &off, err, sizeof(err)) < 0 ||
            offload_register_admin(off, admin) < 0 || offload_start(off, err, sizeof(err)) < 0)
            goto fail;
    }
    /* Every component's metric families, then the endpoint that serves them
     * ([metrics] listen) and the "metrics" members of `ferry status`. */
    what = "cannot start the metrics";
    if (metrics_register_process(metrics, "server") < 0 ||
        server_register_metrics(s, metrics) < 0 || maint_register_metrics(maint, metrics) < 0 ||
        (off && offload_register_metrics(off, metrics) < 0) ||
        (oserve && offload_serve_register_metrics(oserve, metrics) < 0) ||
        (pm && (fcgi_pm_register_metrics(pm, metrics) < 0 ||
                fcgi_client_register_metrics(fclient, metrics) < 0))) {
        snprintf(err, sizeof(err), "a metric family is registered twice");
        goto fail;
    }
    metrics_attach_admin(metrics, admin);
    if (metrics_http_start(&conf, metrics, &mhttp, err, sizeof(err)) < 0)
        goto fail;
    what = "cannot start";
    if (cli_serve_setup && cli_serve_setup(s) != 0) {
        snprintf(err, sizeof(err), "the test setup failed");
        goto fail;
    }
    r = server_run(s);
    if (r < 0)
        log_error("server: %s", strerror(-r));
    else
        log_info("stopped");
    if (off && offload_stop(off, conf.server.shutdown_timeout_ms) < 0) {
        log_warn("the offloader did not stop within %llums: its uploads in flight are "
                 "abandoned; the journal resumes them at the next start",
                 (unsigned long long)conf.server.shutdown_timeout_ms);
        fcgi_pm_destroy(pm); /* no backend process outlives ferry */
        _exit(r < 0 ? EXIT_RUNTIME : EXIT_OK);
    }
    r = r < 0 ? EXIT_RUNTIME : EXIT_OK;
    goto out;
fail:
    log_error("%s: %s", what, err);
    r = EXIT_RUNTIME;
out:
    metrics_http_stop(mhttp);
    fcgi_client_destroy(fclient); /* before the pm frees the gate */
    fcgi_pm_destroy(pm);
    maint_detach(maint);
    admin_destroy(admin);
    offload_destroy(off);
    server_destroy(s);
    offload_serve_destroy(oserve);
    metrics_destroy(metrics);
    conf_finish(&conf);
    return r;
}
