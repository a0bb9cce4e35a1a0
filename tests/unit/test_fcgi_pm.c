/* The process manager's pieces that need no ferry around them: command
 * splitting, readiness (report, grace, opting out), the gate's capacity,
 * respawn and shutdown, on an evloop of its own with /bin/sh as the backend. */
#include "../../src/fcgi/pm.c"

#include "test.h"
#include "test_signals.h"

#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>

static void test_split_command(void)
{
    char c1[] = "/bin/echo  a\tb   c ", c2[] = "sh -c true", c3[] = "  \t ",
         c4[] = "no-such-program-ferry-test";
    struct pm_gen g = {.command = c1};
    ASSERT_EQ(gen_split_command(&g), 0);
    ASSERT_STREQ(g.argv[0], "/bin/echo");
    ASSERT_STREQ(g.argv[1], "a");
    ASSERT_STREQ(g.argv[2], "b");
    ASSERT_STREQ(g.argv[3], "c");
    ASSERT_TRUE(g.argv[4] == NULL);
    free(g.argv);
    free(g.argbuf);

    /* A bare name is looked up in PATH. */
    struct pm_gen h = {.command = c2};
    ASSERT_EQ(gen_split_command(&h), 0);
    ASSERT_TRUE(h.resolved && h.argv[0] == h.resolved && access(h.argv[0], X_OK) == 0);
    ASSERT_TRUE(strchr(h.argv[0], '/') != NULL);
    free(h.argv);
    free(h.argbuf);
    free(h.resolved);

    struct pm_gen e = {.command = c3};
    ASSERT_EQ(gen_split_command(&e), -EINVAL);
    free(e.argv);
    free(e.argbuf);
    struct pm_gen m = {.command = c4};
    ASSERT_EQ(gen_split_command(&m), -ENOENT);
    free(m.argv);
    free(m.argbuf);
}

struct wait_ctx {
    struct fcgi_pm *pm;
    uint32_t want;
    struct evloop_timer tick;
    uint64_t deadline;
    bool reached;
};

static void on_tick(struct evloop *l, void *arg)
{
    struct wait_ctx *w = arg;
    if (fcgi_gate_capacity(w->pm->gate) == w->want) {
        w->reached = true;
        evloop_stop(l);
        return;
    }
    if (evloop_now(l) >= w->deadline) {
        evloop_stop(l);
        return;
    }
    evloop_timer_start(l, &w->tick, 10);
}

/* Run l until the gate's capacity is want (true) or ms pass (false). */
static bool run_until_capacity(struct evloop *l, struct fcgi_pm *pm, uint32_t want, uint64_t ms)
{
    struct wait_ctx w = {.pm = pm, .want = want};
    evloop_update_time(l);
    w.deadline = evloop_now(l) + ms;
    evloop_timer_init(&w.tick, on_tick, &w);
    evloop_timer_start(l, &w.tick, 0);
    evloop_run(l);
    evloop_timer_stop(l, &w.tick);
    return w.reached;
}

static char dir[64];

/* A backend script: the shell's body in a file, as the command splits on
 * blanks. */
static char *write_script(const char *name, const char *body)
{
    char *path = xasprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fprintf(f, "#!/bin/sh\n%s\n", body);
    fclose(f);
    chmod(path, 0755);
    return path;
}

static void conf_for(struct ferry_conf *c, const char *command, long long processes)
{
    conf_init_defaults(c);
    free(c->backend.command);
    c->backend.command = xstrdup(command);
    free(c->backend.socket);
    c->backend.socket = xasprintf("%s/app.sock", dir);
    c->backend.processes = processes;
    c->backend.concurrency = 2;
    c->backend.ready_grace_ms = 60000;
}

static void test_ready_report_and_shutdown(void)
{
    char *script = write_script("ready.sh", "echo READY >&3\nexec sleep 30");
    struct ferry_conf c;
    conf_for(&c, script, 3);
    struct evloop *l = evloop_create();
    char err[256] = "";
    struct fcgi_pm *pm = fcgi_pm_create(l, &c, err, sizeof(err));
    ASSERT_TRUE(pm != NULL);
    if (!pm) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    struct stat st;
    ASSERT_EQ(stat(c.backend.socket, &st), 0);
    ASSERT_TRUE(S_ISSOCK(st.st_mode));
    /* 3 reporting processes x concurrency 2, long before the 60 s grace. */
    ASSERT_TRUE(run_until_capacity(l, pm, 6, 5000));
    ASSERT_EQ(pm->cur->state, GEN_READY);
    pid_t pids[3];
    for (size_t i = 0; i < 3; i++)
        pids[i] = pm->cur->procs[i].child.pid;

    /* A killed process takes its capacity with it, then comes back. */
    ASSERT_EQ(kill(pids[1], SIGKILL), 0);
    ASSERT_TRUE(run_until_capacity(l, pm, 4, 5000));
    ASSERT_TRUE(run_until_capacity(l, pm, 6, 5000));
    ASSERT_EQ(pm->respawns, 1);
    ASSERT_EQ(pm->cur->procs[1].backoff_ms, 200); /* the next delay doubled */
    ASSERT_TRUE(pm->cur->procs[1].child.pid != pids[1]);
    ASSERT_EQ(kill(pids[1], 0), -1); /* reaped: no zombie left */

    fcgi_pm_destroy(pm); /* sleep ignores nothing: USR1 ends it */
    for (size_t i = 0; i < 3; i++)
        ASSERT_EQ(kill(pids[i], 0), -1);
    ASSERT_EQ(stat(c.backend.socket, &st), -1);
    evloop_destroy(l);
    conf_finish(&c);
    unlink(script);
    free(script);
}

static void test_grace_and_opting_out(void)
{
    /* Silent: ready after the grace. */
    char *quiet = write_script("quiet.sh", "exec sleep 30");
    struct ferry_conf c;
    conf_for(&c, quiet, 2);
    c.backend.ready_grace_ms = 200;
    struct evloop *l = evloop_create();
    char err[256];
    struct fcgi_pm *pm = fcgi_pm_create(l, &c, err, sizeof(err));
    ASSERT_TRUE(pm != NULL);
    ASSERT_EQ(fcgi_gate_capacity(pm->gate), 0);
    ASSERT_TRUE(run_until_capacity(l, pm, 4, 5000));
    fcgi_pm_destroy(pm);
    conf_finish(&c);

    /* Says STARTING: the grace no longer applies. */
    char *slow = write_script("slow.sh", "echo STARTING >&3\nexec sleep 30");
    conf_for(&c, slow, 1);
    c.backend.ready_grace_ms = 100;
    pm = fcgi_pm_create(l, &c, err, sizeof(err));
    ASSERT_TRUE(pm != NULL);
    ASSERT_TRUE(!run_until_capacity(l, pm, 2, 600));
    ASSERT_TRUE(pm->cur->procs[0].reporting);
    ASSERT_EQ(pm->cur->state, GEN_STARTING);
    fcgi_pm_destroy(pm);
    conf_finish(&c);
    evloop_destroy(l);
    unlink(quiet);
    unlink(slow);
    free(quiet);
    free(slow);
}

static void test_bad_command_and_busy_socket(void)
{
    struct ferry_conf c;
    conf_for(&c, "/nonexistent/ferry-app", 1);
    struct evloop *l = evloop_create();
    char err[256] = "";
    ASSERT_TRUE(fcgi_pm_create(l, &c, err, sizeof(err)) == NULL);
    ASSERT_TRUE(strstr(err, "No such file or directory") != NULL);
    struct stat st;
    ASSERT_EQ(stat(c.backend.socket, &st), -1); /* removed again */

    /* Something listens there: refused, and its socket left alone. */
    char serr[256];
    int fd = net_listen_unix(c.backend.socket, "test socket", "test", false, 1, serr, sizeof(serr));
    ASSERT_TRUE(fd >= 0);
    free(c.backend.command);
    c.backend.command = xstrdup("/bin/true");
    ASSERT_TRUE(fcgi_pm_create(l, &c, err, sizeof(err)) == NULL);
    ASSERT_TRUE(strstr(err, "is in use: something is listening there") != NULL);
    ASSERT_EQ(stat(c.backend.socket, &st), 0);
    close(fd);
    unlink(c.backend.socket);
    evloop_destroy(l);
    conf_finish(&c);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/ferry-test-pm-%d", (int)getpid());
    mkdir(dir, 0700);
    test_signals_like_ferry();

    test_split_command();
    test_ready_report_and_shutdown();
    test_grace_and_opting_out();
    test_bad_command_and_busy_socket();
    rmdir(dir);
    TEST_MAIN_END();
}
