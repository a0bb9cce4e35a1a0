/* Socket addresses, CIDR matching, listening sockets and systemd-style socket
 * activation. */
#ifndef FERRY_COMMON_NET_H
#define FERRY_COMMON_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct net_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

struct net_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned bits;
};

/** Parse "HOST:PORT", "[IPV6]:PORT", "*:PORT" or ":PORT" (numeric hosts only,
 * plus "localhost"). Returns 0 or -EINVAL. */
int net_parse_addr(const char *s, struct net_addr *out);

/** Parse "ADDR/BITS" or a bare address (full length). Returns 0 or -EINVAL. */
int net_parse_cidr(const char *s, struct net_cidr *out);

/** Does the socket address fall inside the network? IPv4-mapped IPv6 addresses
 * match IPv4 networks. Any thread. */
bool net_cidr_match(const struct net_cidr *c, const struct sockaddr *sa);

/** Create a non-blocking, close-on-exec listening TCP socket bound to a with
 * SO_REUSEADDR. Returns the fd or -errno. */
int net_listen(const struct net_addr *a, int backlog);

struct sockaddr_un;

/** Fill sun for the unix socket path. Returns 0, or -ENAMETOOLONG with
 * "WHAT path '...' is too long" in err. Any thread. */
int net_unix_addr(const char *path, const char *what, struct sockaddr_un *sun, char *err,
                  size_t errlen);

/** Create a listening unix stream socket at path, mode 0600 from the start,
 * close-on-exec, non-blocking when nonblock: refuses when something answers
 * there (-EADDRINUSE, err says "WHAT '...' is in use: IN_USE"), removes a
 * stale socket file nobody listens on, refuses to replace anything that is
 * not a socket (-EEXIST), creates a missing parent directory (mode 0700).
 * what names the socket in messages ("admin socket"). Returns the fd (the
 * caller's) or -errno with a message in err. Changes the umask briefly: call
 * before other threads create files. */
int net_listen_unix(const char *path, const char *what, const char *in_use, bool nonblock,
                    int backlog, char *err, size_t errlen);

/** Sockets passed by the service manager (LISTEN_PID/LISTEN_FDS, starting at fd 3).
 * Returns how many (0 when none were passed for this process) and unsets the
 * variables so children do not inherit them. The fds are made non-blocking and
 * close-on-exec. */
int net_listen_fds(void);

/** Format a socket address as "1.2.3.4" or "::1" (no port) into out. */
void net_format_ip(const struct sockaddr *sa, char *out, size_t outlen);

/** Format a socket address as "1.2.3.4:80" or "[::1]:80" into out. */
void net_format_addr(const struct sockaddr *sa, char *out, size_t outlen);

#endif
