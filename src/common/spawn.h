/* Child processes for the supervisor (FastCGI backends): started clean with
 * posix_spawn, watched and reaped through a pidfd.
 *
 * ferry blocks SIGTERM/SIGINT/SIGHUP in every thread and ignores SIGPIPE; a
 * plain fork+exec would hand both to the child (php-cgi would then ignore
 * SIGTERM). spawn_process() gives the child an empty signal mask, every
 * signal's disposition back to SIG_DFL, /dev/null (or a given fd) as stdin,
 * and no fd above 2.
 *
 * Watching: the returned pidfd becomes readable (EPOLLIN) when the child
 * exits, so the supervisor watches it with evloop_fd_add() instead of
 * handling SIGCHLD, then calls spawn_reap().
 *
 * Ownership: the caller owns the struct spawn_child and its pidfd. It reaps
 * the child with spawn_reap() (nobody else may wait for it: no waitpid(-1),
 * no SIGCHLD set to SIG_IGN, which would reap it behind our back), removes
 * any evloop watch on the pidfd, then calls spawn_finish(), which closes the
 * pidfd. Threads: any, but one child belongs to one thread at a time. */
#ifndef FERRY_COMMON_SPAWN_H
#define FERRY_COMMON_SPAWN_H

#include <stdbool.h>
#include <sys/types.h>

struct spawn_opts {
    /* argv[0] is the program's path, used as given: no PATH lookup. Absolute,
     * or relative to the child's working directory (cwd below). */
    const char *const *argv;
    const char *const *envp; /* NULL: the caller's environ */
    const char *cwd;         /* NULL: the caller's working directory */
    /* The child's fd 0 (FastCGI's FCGI_LISTENSOCK_FILENO), dup2'ed so it
     * survives exec even when it is close-on-exec; -1: /dev/null. The open
     * file description is shared: its O_NONBLOCK flag is the parent's. */
    int stdin_fd;
    int stdout_fd; /* the child's fd 1; -1: inherit the caller's fd 1 */
    int stderr_fd; /* the child's fd 2; -1: inherit the caller's fd 2 */
    /* The child's fd 3 (a readiness pipe, say), dup2'ed like stdin_fd; -1:
     * none, and fd 3 is closed like every fd above 2. */
    int fd3;
};

/** Set o to the defaults: no env/cwd override, stdin /dev/null, stdout and
 * stderr inherited, no fd 3. The caller fills argv. */
void spawn_opts_init(struct spawn_opts *o);

struct spawn_child {
    pid_t pid;   /* for logs; signal and wait through pidfd only */
    int pidfd;   /* close-on-exec; readable once the child has exited */
    bool reaped; /* spawn_reap() collected the exit status */
};

/** Start o->argv. Fds given in o must be -1 or >= 3. The child starts with
 * an empty signal mask, all dispositions SIG_DFL, and only fds 0, 1, 2 open
 * (and 3 when o->fd3 is given).
 * Exec failures come back here: -ENOENT (no such program or cwd), -EACCES
 * (not executable), -ENOEXEC ...; -EINVAL for bad opts; -errno from
 * posix_spawn or pidfd_open. On success fills *out (the caller now owns the
 * child, see above). Does not take ownership of any fd in o. Any thread. */
int spawn_process(const struct spawn_opts *o, struct spawn_child *out);

/** Collect the exit status without blocking. Returns 0 and a waitpid()-style
 * *status (WIFEXITED, WEXITSTATUS, WIFSIGNALED, WTERMSIG work on it),
 * -EAGAIN if the child is still running, -ECHILD if it was already reaped,
 * or -errno from waitid. Does not close the pidfd. */
int spawn_reap(struct spawn_child *c, int *status);

/** Send sig to the child through its pidfd, so a recycled pid is never
 * signalled. Returns 0, -ESRCH once the child has been reaped, or -errno. */
int spawn_signal(const struct spawn_child *c, int sig);

/** Close the pidfd (remove its evloop watch first). A child not yet reaped
 * is sent SIGKILL and waited for, blocking until it is gone, so no zombie is
 * left behind. Leaves c with pidfd -1; a second call does nothing. */
void spawn_finish(struct spawn_child *c);

#endif
