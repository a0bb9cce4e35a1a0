/* Child processes: the child's signal mask and dispositions are clean even
 * though this process blocks SIGTERM/SIGHUP and ignores SIGPIPE (as ferry's
 * supervisor does), fd 0 is the given socket or /dev/null, no other fd leaks,
 * the pidfd works in an evloop, signals go through the pidfd, and exec
 * failures come back as -errno. */
#include "common/evloop.h"
#include "common/spawn.h"

#include "test.h"
#include "test_signals.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Wait for the child to exit (poll on the pidfd) and reap it. */
static int wait_child(struct spawn_child *c)
{
    struct pollfd p = {.fd = c->pidfd, .events = POLLIN};
    ASSERT_EQ(poll(&p, 1, 10000), 1);
    int status = -1;
    ASSERT_EQ(spawn_reap(c, &status), 0);
    return status;
}

/* Run argv with stdout to a pipe; return its output (NUL-terminated in out)
 * and the exit status. */
static int run_capture(struct spawn_opts *o, char *out, size_t outlen)
{
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    o->stdout_fd = p[1];
    struct spawn_child c;
    int r = spawn_process(o, &c);
    ASSERT_EQ(r, 0);
    close(p[1]);
    size_t n = 0;
    ssize_t k;
    while (r == 0 && n + 1 < outlen && (k = read(p[0], out + n, outlen - 1 - n)) > 0)
        n += (size_t)k;
    out[n] = '\0';
    close(p[0]);
    if (r < 0)
        return -1;
    int status = wait_child(&c);
    spawn_finish(&c);
    return status;
}

/* Run o->argv with stdout to a pipe; assert it exits 0 having printed want. */
static void run_expect(struct spawn_opts *o, const char *want)
{
    char out[256];
    int status = run_capture(o, out, sizeof(out));
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ASSERT_STREQ(out, want);
}

static void test_signals_clean(void)
{
    const char *argv[] = {"/bin/sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status", NULL};
    struct spawn_opts o;
    spawn_opts_init(&o);
    o.argv = argv;
    run_expect(&o, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");

    /* The test can fail: this process's own mask is not empty. */
    FILE *f = fopen("/proc/self/status", "r");
    char line[128];
    bool blocked = false;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "SigBlk:", 7) == 0)
            blocked = strcmp(line, "SigBlk:\t0000000000000000\n") != 0;
    if (f)
        fclose(f);
    ASSERT_TRUE(blocked);
}

static void test_stdin_socket(void)
{
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct stat st;
    ASSERT_EQ(fstat(sv[1], &st), 0);
    const char *argv[] = {"/bin/sh", "-c", "readlink /proc/self/fd/0; echo hi >&0", NULL};
    struct spawn_opts o;
    spawn_opts_init(&o);
    o.argv = argv;
    o.stdin_fd = sv[1];
    char want[64];
    snprintf(want, sizeof(want), "socket:[%llu]\n", (unsigned long long)st.st_ino);
    run_expect(&o, want);
    char got[8] = {0};
    ASSERT_EQ(recv(sv[0], got, sizeof(got) - 1, MSG_DONTWAIT), 3); /* the child is gone */
    ASSERT_STREQ(got, "hi\n");
    close(sv[0]);
    close(sv[1]);

    /* Without stdin_fd, fd 0 is /dev/null. */
    const char *argv2[] = {"/bin/readlink", "/proc/self/fd/0", NULL};
    spawn_opts_init(&o);
    o.argv = argv2;
    run_expect(&o, "/dev/null\n");
}

static void test_no_fd_leak(void)
{
    /* An fd without O_CLOEXEC, which exec alone would pass on. */
    int leak = open("/dev/null", O_RDONLY);
    ASSERT_TRUE(leak >= 3);
    /* ls opens the directory it lists with the lowest free fd: 3 when
     * nothing leaked. */
    const char *argv[] = {"/bin/ls", "/proc/self/fd", NULL};
    struct spawn_opts o;
    spawn_opts_init(&o);
    o.argv = argv;
    run_expect(&o, "0\n1\n2\n3\n");
    close(leak);
}

static void test_fd3(void)
{
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    /* The pipe's write end is fd 3 in the child even when it is not 3 here
     * and is close-on-exec; nothing else above 2 survives. */
    int other = open("/dev/null", O_RDONLY);
    ASSERT_TRUE(other >= 3);
    const char *argv[] = {"/bin/sh", "-c", "echo READY >&3; ls /proc/self/fd", NULL};
    struct spawn_opts o;
    spawn_opts_init(&o);
    o.argv = argv;
    o.fd3 = p[1];
    run_expect(&o, "0\n1\n2\n3\n4\n");
    close(p[1]);
    char got[16] = {0};
    ASSERT_EQ(read(p[0], got, sizeof(got) - 1), 6);
    ASSERT_STREQ(got, "READY\n");
    close(p[0]);
    close(other);
}

static void test_env_cwd(void)
{
    const char *argv[] = {"/bin/sh", "-c", "echo \"$FERRY_T:$HOME:$(pwd)\"", NULL};
    const char *envp[] = {"FERRY_T=x", NULL};
    struct spawn_opts o;
    spawn_opts_init(&o);
    o.argv = argv;
    o.envp = envp;
    o.cwd = "/tmp";
    run_expect(&o, "x::/tmp\n");
}

/* ---- pidfd in an evloop ---- */

struct watch_ctx {
    struct spawn_child *child;
    int status;
    int reaps;
};

static void on_child_exit(struct evloop *l, int fd, uint32_t events, void *arg)
{
    struct watch_ctx *w = arg;
    ASSERT_TRUE(events & EPOLLIN);
    ASSERT_EQ(fd, w->child->pidfd);
    if (spawn_reap(w->child, &w->status) == 0)
        w->reaps++;
    ASSERT_EQ(evloop_fd_del(l, fd), 0);
    evloop_stop(l);
}

static void on_timeout(struct evloop *l, void *arg)
{
    (void)arg;
    TEST_FAIL("child exit not seen on the pidfd");
    evloop_stop(l);
}

static void test_evloop_watch(void)
{
    const char *argv[] = {"/bin/sh", "-c", "exit 7", NULL};
    struct spawn_opts o;
    spawn_opts_init(&o);
    o.argv = argv;
    struct spawn_child c;
    ASSERT_EQ(spawn_process(&o, &c), 0);
    ASSERT_TRUE(c.pid > 0 && c.pidfd >= 0);
    struct evloop *l = evloop_create();
    struct watch_ctx w = {.child = &c, .status = -1};
    ASSERT_EQ(evloop_fd_add(l, c.pidfd, EPOLLIN, on_child_exit, &w), 0);
    struct evloop_timer t;
    evloop_timer_init(&t, on_timeout, NULL);
    evloop_timer_start(l, &t, 10000);
    ASSERT_EQ(evloop_run(l), 0);
    evloop_timer_stop(l, &t);
    ASSERT_EQ(w.reaps, 1);
    ASSERT_TRUE(WIFEXITED(w.status));
    ASSERT_EQ(WEXITSTATUS(w.status), 7);
    int status;
    ASSERT_EQ(spawn_reap(&c, &status), -ECHILD);
    ASSERT_EQ(spawn_signal(&c, SIGTERM), -ESRCH);
    spawn_finish(&c);
    ASSERT_EQ(c.pidfd, -1);
    spawn_finish(&c);
    evloop_destroy(l);
}

static void test_signal_term(void)
{
    const char *argv[] = {"/bin/sleep", "30", NULL};
    struct spawn_opts o;
    spawn_opts_init(&o);
    o.argv = argv;
    struct spawn_child c;
    ASSERT_EQ(spawn_process(&o, &c), 0);
    int status = -1;
    ASSERT_EQ(spawn_reap(&c, &status), -EAGAIN);
    ASSERT_EQ(status, -1);
    ASSERT_EQ(spawn_signal(&c, SIGTERM), 0);
    status = wait_child(&c);
    ASSERT_TRUE(WIFSIGNALED(status));
    ASSERT_EQ(WTERMSIG(status), SIGTERM);
    spawn_finish(&c);

    /* spawn_finish() kills and reaps a child still running. */
    ASSERT_EQ(spawn_process(&o, &c), 0);
    pid_t pid = c.pid;
    spawn_finish(&c);
    ASSERT_EQ(c.pidfd, -1);
    ASSERT_EQ(waitpid(pid, NULL, WNOHANG), -1);
    ASSERT_EQ(errno, ECHILD);
}

static void test_exec_errors(void)
{
    struct spawn_opts o;
    spawn_opts_init(&o);
    struct spawn_child c = {.pid = 12345, .pidfd = -7};
    const char *missing[] = {"/nonexistent/ferry-no-such-program", NULL};
    o.argv = missing;
    ASSERT_EQ(spawn_process(&o, &c), -ENOENT);
    const char *notexec[] = {"/etc/passwd", NULL};
    o.argv = notexec;
    ASSERT_EQ(spawn_process(&o, &c), -EACCES);
    const char *sh[] = {"/bin/sh", "-c", "true", NULL};
    o.argv = sh;
    o.cwd = "/nonexistent/ferry-no-such-dir";
    ASSERT_EQ(spawn_process(&o, &c), -ENOENT);
    o.cwd = NULL;
    o.stdin_fd = 1;
    ASSERT_EQ(spawn_process(&o, &c), -EINVAL);
    /* Out-parameters are written only on success. */
    ASSERT_EQ(c.pid, 12345);
    ASSERT_EQ(c.pidfd, -7);
    /* No child was left behind by the failures. */
    ASSERT_EQ(waitpid(-1, NULL, WNOHANG), -1);
    ASSERT_EQ(errno, ECHILD);
}

int main(void)
{
    test_signals_like_ferry();

    test_signals_clean();
    test_stdin_socket();
    test_no_fd_leak();
    test_env_cwd();
    test_fd3();
    test_evloop_watch();
    test_signal_term();
    test_exec_errors();
    TEST_MAIN_END();
}
