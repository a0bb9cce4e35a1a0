/* bench/floor.c: the cost floor for the 4 KiB test, not a web server.
 *
 * One epoll loop; each recv is answered with one send of a fixed response
 * (the file given on the command line, read at start) per request head it
 * contains. No parsing, no files, no timers: what is left is the kernel's
 * work for one recv and one send over loopback TCP, which any HTTP server
 * must also pay. bench/run.sh measures it beside ferry, nginx and lighttpd so
 * the CPU ratios can be read against what is physically possible here.
 *
 *   floor PORT FILE [STATUS [HEADER-LINES]]
 *
 * STATUS (default "200 OK") and HEADER-LINES ("Name: value\r\n"...) let the
 * maintenance benchmark measure the floor for its 503 response too.
 *
 * With FLOOR_OPENAT=DIR/NAME in the environment it also opens NAME relative to
 * DIR (DIR opened once at start) for each request head, closing what it got:
 * the one lookup a server must make before it may say "not here, go to the
 * bucket" (bench/offload_serve's redirect), at the kernel's cost and no more.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: floor PORT FILE [STATUS [HEADER-LINES]]\n");
        return 2;
    }
    const char *status = argc > 3 ? argv[3] : "200 OK";
    const char *extra = argc > 4 ? argv[4] : "";
    int fd = open(argv[2], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size > (1 << 20)) {
        perror(argv[2]);
        return 1;
    }
    size_t headroom = 256 + strlen(status) + strlen(extra);
    char *resp = malloc((size_t)st.st_size + headroom);
    int hl = snprintf(resp, headroom,
                      "HTTP/1.1 %s\r\nServer: floor\r\nContent-Type: application/octet-stream\r\n"
                      "ETag: \"floor\"\r\n%sContent-Length: %lld\r\n\r\n",
                      status, extra, (long long)st.st_size);
    if (read(fd, resp + hl, (size_t)st.st_size) != st.st_size)
        return 1;
    size_t rl = (size_t)hl + (size_t)st.st_size;
    const char *lookup = getenv("FLOOR_OPENAT"), *name = NULL;
    int dirfd = -1;
    if (lookup && *lookup) {
        char *dir = strdup(lookup), *slash = strrchr(dir, '/');
        if (!slash || slash == dir || !slash[1]) {
            fprintf(stderr, "FLOOR_OPENAT: want DIR/NAME, not '%s'\n", lookup);
            return 2;
        }
        *slash = '\0';
        name = slash + 1;
        dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0) {
            perror(dir);
            return 1;
        }
    }
    int one = 1;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)atoi(argv[1])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 4096) < 0) {
        perror("listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event le = {.events = EPOLLIN, .data.fd = l};
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &le);
    struct epoll_event ev[256];
    static char buf[65536];
    for (;;) {
        int n = epoll_wait(ep, ev, 256, -1);
        for (int i = 0; i < n; i++) {
            int c = ev[i].data.fd;
            if (c == l) {
                int s;
                while ((s = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = s};
                    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ce);
                }
                continue;
            }
            ssize_t r = recv(c, buf, sizeof(buf) - 1, 0);
            if (r <= 0) {
                close(c);
                continue;
            }
            buf[r] = '\0';
            for (char *p = buf; (p = strstr(p, "\r\n\r\n")) != NULL; p += 4) {
                if (name) {
                    int f = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
                    if (f >= 0)
                        close(f);
                }
                send(c, resp, rl, MSG_NOSIGNAL);
            }
            if (strcasestr(buf, "\r\nconnection: close"))
                close(c); /* the benchmarks' own checks read until close */
        }
    }
}
