/* Child processes through posix_spawn and pidfds. glibc's posix_spawn runs
 * the child in a vfork-like clone (safe from a multi-threaded process, no
 * copy of the address space) and reports exec and file-action failures
 * through its return value (glibc >= 2.24). */
#include "common/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

void spawn_opts_init(struct spawn_opts *o)
{
    *o = (struct spawn_opts){.stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1, .fd3 = -1};
}

static bool spawn_fd_valid(int fd)
{
    return fd == -1 || fd >= 3;
}

/* The file actions run in order in the child: every given fd is >= 3, so
 * the dup2s onto 0..2 never clobber one another's source; fd 3 is filled
 * last, after every other source has been read (one of them may be fd 3),
 * and closefrom() then drops the sources and anything else not
 * close-on-exec. */
static int spawn_build_actions(const struct spawn_opts *o, posix_spawn_file_actions_t *fa)
{
    int r;
    if (o->stdin_fd >= 0)
        r = posix_spawn_file_actions_adddup2(fa, o->stdin_fd, 0);
    else
        r = posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0);
    if (r == 0 && o->stdout_fd >= 0)
        r = posix_spawn_file_actions_adddup2(fa, o->stdout_fd, 1);
    if (r == 0 && o->stderr_fd >= 0)
        r = posix_spawn_file_actions_adddup2(fa, o->stderr_fd, 2);
    if (r == 0 && o->cwd)
        r = posix_spawn_file_actions_addchdir_np(fa, o->cwd);
    if (r == 0 && o->fd3 >= 0)
        r = posix_spawn_file_actions_adddup2(fa, o->fd3, 3);
    if (r == 0)
        r = posix_spawn_file_actions_addclosefrom_np(fa, o->fd3 >= 0 ? 4 : 3);
    return -r;
}

static int spawn_build_attr(posix_spawnattr_t *attr)
{
    sigset_t none, all;
    sigemptyset(&none);
    /* Every signal, glibc's internal ones (32, 33) included: sigfillset()
     * leaves those out, and glibc's child then sets them to SIG_IGN, which
     * exec keeps (SigIgn 0x180000000 in the child). Setting SIGKILL and
     * SIGSTOP to SIG_DFL fails harmlessly in the child. */
    memset(&all, 0xff, sizeof(all));
    int r = posix_spawnattr_setsigmask(attr, &none);
    if (r == 0)
        r = posix_spawnattr_setsigdefault(attr, &all);
    if (r == 0)
        r = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    return -r;
}

int spawn_process(const struct spawn_opts *o, struct spawn_child *out)
{
    if (!o->argv || !o->argv[0] || !spawn_fd_valid(o->stdin_fd) || !spawn_fd_valid(o->stdout_fd) ||
        !spawn_fd_valid(o->stderr_fd) || !spawn_fd_valid(o->fd3))
        return -EINVAL;

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int r = -posix_spawn_file_actions_init(&fa);
    if (r < 0)
        return r;
    r = -posix_spawnattr_init(&attr);
    if (r < 0) {
        posix_spawn_file_actions_destroy(&fa);
        return r;
    }
    r = spawn_build_actions(o, &fa);
    if (r < 0)
        goto fail;
    r = spawn_build_attr(&attr);
    if (r < 0)
        goto fail;

    pid_t pid;
    /* posix_spawn's prototype predates const; it does not write them. */
    char *const *argv = (char *const *)(uintptr_t)o->argv;
    char *const *envp = o->envp ? (char *const *)(uintptr_t)o->envp : environ;
    r = -posix_spawn(&pid, argv[0], &fa, &attr, argv, envp);
    if (r < 0)
        goto fail;

    /* The child cannot be reaped (and its pid reused) before this: it stays
     * a zombie until we wait for it, and nobody else waits for it. */
    int pidfd = pidfd_open(pid, 0);
    if (pidfd < 0) {
        r = -errno;
        if (kill(pid, SIGKILL) == 0)
            (void)waitpid(pid, NULL, 0);
        goto fail;
    }
    *out = (struct spawn_child){.pid = pid, .pidfd = pidfd, .reaped = false};
    r = 0;
fail:
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return r;
}

/* siginfo from waitid() to the int waitpid() would have stored. */
static int spawn_status_from(const siginfo_t *si)
{
    switch (si->si_code) {
    case CLD_EXITED:
        return (si->si_status & 0xff) << 8;
    case CLD_DUMPED:
        return (si->si_status & 0x7f) | 0x80;
    default: /* CLD_KILLED */
        return si->si_status & 0x7f;
    }
}

int spawn_reap(struct spawn_child *c, int *status)
{
    if (c->reaped || c->pidfd < 0)
        return -ECHILD;
    siginfo_t si = {0};
    if (waitid(P_PIDFD, (id_t)c->pidfd, &si, WEXITED | WNOHANG) < 0)
        return -errno;
    if (si.si_pid == 0)
        return -EAGAIN;
    c->reaped = true;
    *status = spawn_status_from(&si);
    return 0;
}

int spawn_signal(const struct spawn_child *c, int sig)
{
    if (c->reaped || c->pidfd < 0)
        return -ESRCH;
    return pidfd_send_signal(c->pidfd, sig, NULL, 0) < 0 ? -errno : 0;
}

void spawn_finish(struct spawn_child *c)
{
    if (c->pidfd < 0)
        return;
    if (!c->reaped) {
        siginfo_t si;
        (void)pidfd_send_signal(c->pidfd, SIGKILL, NULL, 0);
        while (waitid(P_PIDFD, (id_t)c->pidfd, &si, WEXITED) < 0 && errno == EINTR)
            ;
        c->reaped = true;
    }
    close(c->pidfd);
    c->pidfd = -1;
}
