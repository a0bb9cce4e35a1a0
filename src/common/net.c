#include "common/net.h"

#include "common/alloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int parse_port(const char *s, uint16_t *out)
{
    if (!*s)
        return -EINVAL;
    unsigned long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > 65535)
            return -EINVAL;
    }
    *out = (uint16_t)v;
    return 0;
}

int net_parse_addr(const char *s, struct net_addr *out)
{
    char host[128];
    const char *portstr;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':' || (size_t)(close - s - 1) >= sizeof(host))
            return -EINVAL;
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = '\0';
        portstr = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof(host))
            return -EINVAL;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
        if (strchr(host, ':'))
            return -EINVAL; /* IPv6 needs brackets */
        portstr = colon + 1;
    }
    uint16_t port;
    if (parse_port(portstr, &port) < 0)
        return -EINVAL;
    struct net_addr a;
    memset(&a, 0, sizeof(a));
    struct sockaddr_in *sin = (struct sockaddr_in *)&a.ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.ss;
    if (host[0] == '\0' || strcmp(host, "*") == 0) {
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        sin->sin_port = htons(port);
        a.len = sizeof(*sin);
    } else if (strcmp(host, "localhost") == 0 || inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        if (strcmp(host, "localhost") == 0)
            sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        a.len = sizeof(*sin);
    } else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        a.len = sizeof(*sin6);
    } else {
        return -EINVAL;
    }
    *out = a;
    return 0;
}

int net_parse_cidr(const char *s, struct net_cidr *out)
{
    char host[64];
    const char *slash = strchr(s, '/');
    size_t hlen = slash ? (size_t)(slash - s) : strlen(s);
    if (hlen == 0 || hlen >= sizeof(host))
        return -EINVAL;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    struct net_cidr c;
    memset(&c, 0, sizeof(c));
    unsigned maxbits;
    if (inet_pton(AF_INET, host, c.addr) == 1) {
        c.family = AF_INET;
        maxbits = 32;
    } else if (inet_pton(AF_INET6, host, c.addr) == 1) {
        c.family = AF_INET6;
        maxbits = 128;
    } else {
        return -EINVAL;
    }
    c.bits = maxbits;
    if (slash) {
        const char *p = slash + 1;
        if (!*p || strlen(p) > 3)
            return -EINVAL;
        unsigned v = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return -EINVAL;
            v = v * 10 + (unsigned)(*p - '0');
        }
        if (v > maxbits)
            return -EINVAL;
        c.bits = v;
    }
    *out = c;
    return 0;
}

static bool prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned bytes = bits / 8, rem = bits % 8;
    if (memcmp(a, b, bytes) != 0)
        return false;
    if (rem == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rem));
    return (a[bytes] & mask) == (b[bytes] & mask);
}

bool net_cidr_match(const struct net_cidr *c, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        if (c->family != AF_INET)
            return false;
        return prefix_match(c->addr, (const uint8_t *)&sin->sin_addr, c->bits);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        const uint8_t *a = sin6->sin6_addr.s6_addr;
        if (c->family == AF_INET6)
            return prefix_match(c->addr, a, c->bits);
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
            return prefix_match(c->addr, a + 12, c->bits);
    }
    return false;
}

int net_listen(const struct net_addr *a, int backlog)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (a->ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 || listen(fd, backlog) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int net_listen_fds(void)
{
    const char *pid = getenv("LISTEN_PID");
    const char *fds = getenv("LISTEN_FDS");
    int n = 0;
    if (pid && fds && strtol(pid, NULL, 10) == (long)getpid()) {
        long v = strtol(fds, NULL, 10);
        if (v > 0 && v < 1024)
            n = (int)v;
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    for (int fd = 3; fd < 3 + n; fd++) {
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0)
            fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    return n;
}

void net_format_ip(const struct sockaddr *sa, char *out, size_t outlen)
{
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)outlen);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
            inet_ntop(AF_INET, sin6->sin6_addr.s6_addr + 12, out, (socklen_t)outlen);
        else
            inet_ntop(AF_INET6, &sin6->sin6_addr, out, (socklen_t)outlen);
    } else if (sa->sa_family == AF_UNIX) {
        snprintf(out, outlen, "unix");
    } else {
        snprintf(out, outlen, "-");
    }
}

void net_format_addr(const struct sockaddr *sa, char *out, size_t outlen)
{
    char ip[64];
    net_format_ip(sa, ip, sizeof(ip));
    if (sa->sa_family == AF_INET)
        snprintf(out, outlen, "%s:%u", ip, ntohs(((const struct sockaddr_in *)sa)->sin_port));
    else if (sa->sa_family == AF_INET6)
        snprintf(out, outlen, "[%s]:%u", ip, ntohs(((const struct sockaddr_in6 *)sa)->sin6_port));
    else
        snprintf(out, outlen, "%s", ip);
}

int net_unix_addr(const char *path, const char *what, struct sockaddr_un *sun, char *err,
                  size_t errlen)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun->sun_path)) {
        snprintf(err, errlen, "%s path '%s' is too long (at most %zu bytes)", what, path,
                 sizeof(sun->sun_path) - 1);
        return -ENAMETOOLONG;
    }
    memcpy(sun->sun_path, path, strlen(path));
    return 0;
}

static void ensure_parent_dir(const char *path)
{
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        mkdir(dir, 0700); /* a failure shows up as bind()'s error */
    }
    free(dir);
}

int net_listen_unix(const char *path, const char *what, const char *in_use, bool nonblock,
                    int backlog, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    int r = net_unix_addr(path, what, &sun, err, errlen);
    if (r < 0)
        return r;
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s '%s' exists and is not a socket; not replacing it", what,
                     path);
            return -EEXIST;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0) {
            r = -errno;
            snprintf(err, errlen, "socket: %s", strerror(-r));
            return r;
        }
        int c = connect(probe, (struct sockaddr *)&sun, sizeof(sun));
        int e = errno;
        close(probe);
        if (c == 0) {
            snprintf(err, errlen, "%s '%s' is in use: %s", what, path, in_use);
            return -EADDRINUSE;
        }
        if (e != ECONNREFUSED && e != ENOENT) {
            snprintf(err, errlen, "%s '%s': %s", what, path, strerror(e));
            return -e;
        }
        /* Nobody listens: a leftover of a server that did not stop cleanly. */
        if (unlink(path) < 0 && errno != ENOENT) {
            r = -errno;
            snprintf(err, errlen, "cannot remove stale %s '%s': %s", what, path, strerror(-r));
            return r;
        }
    }
    ensure_parent_dir(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) {
        r = -errno;
        snprintf(err, errlen, "socket: %s", strerror(-r));
        return r;
    }
    /* Create the file 0600 from the start: chmod after bind would leave a window
     * in which another user could connect. */
    mode_t old = umask(0177);
    int b = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    int e = errno;
    umask(old);
    if (b < 0 || listen(fd, backlog) < 0) {
        if (b == 0)
            e = errno;
        close(fd);
        snprintf(err, errlen, "cannot listen on %s '%s': %s", what, path, strerror(e));
        return -e;
    }
    return fd;
}
