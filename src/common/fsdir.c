#include "common/fsdir.h"

#include "common/alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fsdir_sync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = !slash          ? xstrdup(".")
                : slash == path ? xstrdup("/")
                                : xstrndup(path, (size_t)(slash - path));
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

/* Is p (which mkdir refused) already a directory? 0, -ENOTDIR or mkdir's error. */
static int existing_dir(const char *p, int mkdir_errno)
{
    struct stat st;
    if (stat(p, &st) < 0)
        return -mkdir_errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int fsdir_make(const char *dir, mode_t mode)
{
    size_t n = strlen(dir);
    if (n == 0)
        return -EINVAL;
    char *p = xstrdup(dir);
    int r = 0;
    /* Each prefix ending before a '/' (or at the end) names one directory;
     * repeated and trailing slashes add none. */
    for (size_t i = 1; i <= n && r == 0; i++) {
        if ((i < n && p[i] != '/') || p[i - 1] == '/')
            continue;
        char saved = p[i];
        p[i] = '\0';
        if (mkdir(p, mode) == 0)
            r = fsdir_sync_parent(p);
        else
            r = existing_dir(p, errno);
        p[i] = saved;
    }
    free(p);
    return r;
}

int fsdir_probe(const char *dir, char *blocker, size_t blen)
{
    if (!*dir)
        return -EINVAL;
    char *p = xstrdup(dir);
    size_t n = strlen(p);
    int r;
    bool missing = false;
    for (;;) {
        while (n > 1 && p[n - 1] == '/')
            p[--n] = '\0';
        struct stat st;
        if (stat(p, &st) == 0) {
            if (!S_ISDIR(st.st_mode))
                r = -ENOTDIR;
            else if (missing && access(p, W_OK | X_OK) < 0)
                r = -errno;
            else
                r = missing ? 1 : 0;
            break;
        }
        if (errno != ENOENT && errno != ENOTDIR) {
            r = -errno;
            break;
        }
        missing = true;
        char *slash = strrchr(p, '/');
        if (!slash) {
            /* a relative path whose first component is missing: "." holds it */
            r = access(".", W_OK | X_OK) < 0 ? -errno : 1;
            if (r < 0)
                snprintf(p, n + 1, ".");
            break;
        }
        n = slash == p ? 1 : (size_t)(slash - p);
        p[n] = '\0';
    }
    if (r < 0 && blen)
        snprintf(blocker, blen, "%s", p);
    free(p);
    return r;
}
