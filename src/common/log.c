#include "common/log.h"

#include "common/alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int log_level_current = LOG_LVL_INFO;

static int log_fd = STDERR_FILENO;
static char *log_path;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_write(int level, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03ldZ [%s] ", ts.tv_nsec / 1000000,
                  level_names[level < 0   ? 0
                              : level > 3 ? 3
                                          : level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    /* Control characters from requests never reach the terminal raw. */
    for (size_t i = (size_t)n; i < len; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = '?';
    line[len++] = '\n';
    ssize_t w = write(log_fd, line, len);
    (void)w;
}

int log_open_append(const char *path)
{
    if (!path || strcmp(path, "-") == 0) {
        int fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
        return fd < 0 ? -errno : fd;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    return fd < 0 ? -errno : fd;
}

int log_reopen_fd(int fd, const char *path)
{
    if (!path || strcmp(path, "-") == 0)
        return 0;
    int nfd = log_open_append(path);
    if (nfd < 0)
        return nfd;
    int r = dup3(nfd, fd, O_CLOEXEC) < 0 ? -errno : 0;
    close(nfd);
    return r;
}

int log_open(const char *path)
{
    free(log_path);
    log_path = NULL;
    if (!path || strcmp(path, "-") == 0) {
        log_fd = STDERR_FILENO;
        return 0;
    }
    int fd = log_open_append(path);
    if (fd < 0)
        return fd;
    log_fd = fd;
    log_path = xstrdup(path);
    return 0;
}

int log_reopen(void)
{
    if (!log_path)
        return 0;
    return log_reopen_fd(log_fd, log_path);
}

int log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    if (strcmp(name, "warning") == 0)
        return LOG_LVL_WARN;
    return -1;
}
