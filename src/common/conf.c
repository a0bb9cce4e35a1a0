#include "common/conf.h"

#include "common/alloc.h"
#include "common/log.h"
#include "common/net.h"
#include "common/text.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define OFF(field) offsetof(struct ferry_conf, field)
#define KIB 1024LL
#define MIB (1024LL * 1024)
#define SEC 1000LL
#define HOUR (3600LL * SEC)
#define DAY (24 * HOUR)

/* The word-by-word validators: each word is checked on its own so that the
 * error can quote the one that is wrong. */
struct word_check {
    char *why;
    size_t whylen;
};

static int listen_word(const char *w, void *arg)
{
    struct word_check *wc = arg;
    struct net_addr a;
    if (net_parse_addr(w, &a) == 0)
        return 0;
    snprintf(wc->why, wc->whylen, "cannot parse '%s' (want HOST:PORT, [IPV6]:PORT or *:PORT)", w);
    return -EINVAL;
}

static int cidr_word(const char *w, void *arg)
{
    struct word_check *wc = arg;
    struct net_cidr cidr;
    if (net_parse_cidr(w, &cidr) == 0)
        return 0;
    snprintf(wc->why, wc->whylen, "cannot parse '%s' (want ADDRESS/BITS)", w);
    return -EINVAL;
}

static int prefix_word(const char *w, void *arg)
{
    struct word_check *wc = arg;
    if (w[0] == '/')
        return 0;
    snprintf(wc->why, wc->whylen, "'%s' does not start with '/'", w);
    return -EINVAL;
}

static int check_listen(const char *value, char *why, size_t whylen)
{
    struct word_check wc = {why, whylen};
    return text_each_word(value, listen_word, &wc);
}

static int check_cidrs(const char *value, char *why, size_t whylen)
{
    struct word_check wc = {why, whylen};
    return text_each_word(value, cidr_word, &wc);
}

static int check_prefixes(const char *value, char *why, size_t whylen)
{
    struct word_check wc = {why, whylen};
    return text_each_word(value, prefix_word, &wc);
}

/* A base URL that a path is appended to: absolute http(s), a host, and a '/'
 * after it, so that no appended path can change the host; no byte that could
 * break a header line. */
static int check_public_url(const char *value, char *why, size_t whylen)
{
    if (!value[0])
        return 0;
    size_t skip = strncmp(value, "https://", 8) == 0  ? 8
                  : strncmp(value, "http://", 7) == 0 ? 7
                                                      : 0;
    const char *slash = skip ? strchr(value + skip, '/') : NULL;
    if (!skip || !slash || slash == value + skip) {
        snprintf(why, whylen, "'%s' is not an http:// or https:// URL with a host", value);
        return -EINVAL;
    }
    for (const char *p = value; *p; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || strchr("\\\"<>`{}|^#?", *p)) {
            snprintf(why, whylen, "'%s' contains a character a URL needs encoded", value);
            return -EINVAL;
        }
    }
    if (value[strlen(value) - 1] != '/') {
        snprintf(why, whylen, "'%s' must end with '/'", value);
        return -EINVAL;
    }
    return 0;
}

/* A URL prefix that a location matches on: starts and ends with '/'. */
static int check_location(const char *value, char *why, size_t whylen)
{
    size_t n = strlen(value);
    if (n == 0 || value[0] != '/' || value[n - 1] != '/') {
        snprintf(why, whylen, "'%s' must start and end with '/'", value);
        return -EINVAL;
    }
    return 0;
}

/* clang-format off */
const struct conf_key conf_keys[] = {
    {"server", "listen", CONF_LIST, 0, 0, NULL, "127.0.0.1:8080", OFF(server.listen), check_listen,
     "addresses to listen on, space separated (HOST:PORT, [IPV6]:PORT, *:PORT); sockets passed by LISTEN_FDS win"},
    {"server", "root", CONF_PATH, 0, 0, NULL, "./public", OFF(server.root), NULL,
     "document root for paths no other section claims"},
    {"server", "workers", CONF_INT_AUTO, 1, 256, NULL, "auto", OFF(server.workers), NULL,
     "HTTP worker threads; auto = one per CPU"},
    {"server", "admin_socket", CONF_PATH, 0, 0, NULL, "./run/ferry.sock", OFF(server.admin_socket), NULL,
     "unix socket for the control commands (mode 0600)"},
    {"server", "admin_timeout", CONF_DURATION, 100, 600 * SEC, NULL, "5s", OFF(server.admin_timeout_ms), NULL,
     "an admin client must send a complete command line within this, else it is closed"},
    {"server", "state_dir", CONF_PATH, 0, 0, NULL, "./run", OFF(server.state_dir), NULL,
     "directory for persistent state"},
    {"server", "access_log", CONF_STR, 0, 0, NULL, "-", OFF(server.access_log), NULL,
     "access log in combined log format: a file, '-' for stderr, or 'off'"},
    {"server", "error_log", CONF_STR, 0, 0, NULL, "-", OFF(server.error_log), NULL,
     "error log: a file or '-' for stderr"},
    {"server", "log_level", CONF_ENUM, 0, 0, "error|warn|info|debug", "info", OFF(server.log_level), NULL,
     "error log verbosity"},
    {"server", "keepalive_timeout", CONF_DURATION, 0, 3600 * SEC, NULL, "15s", OFF(server.keepalive_timeout_ms), NULL,
     "how long an idle keep-alive connection is kept; 0 disables keep-alive"},
    {"server", "header_timeout", CONF_DURATION, 100, 3600 * SEC, NULL, "10s", OFF(server.header_timeout_ms), NULL,
     "the whole request head must arrive within this (408, then close)"},
    {"server", "body_timeout", CONF_DURATION, 100, 3600 * SEC, NULL, "60s", OFF(server.body_timeout_ms), NULL,
     "longest wait between two reads of a request body (408, then close); not a limit on the whole body"},
    {"server", "send_timeout", CONF_DURATION, 100, 3600 * SEC, NULL, "60s", OFF(server.send_timeout_ms), NULL,
     "a client that accepts no response bytes for this long is disconnected"},
    {"server", "shutdown_timeout", CONF_DURATION, 0, 3600 * SEC, NULL, "10s", OFF(server.shutdown_timeout_ms), NULL,
     "on SIGTERM/SIGINT, in-flight responses get this long to finish"},
    {"server", "max_connections", CONF_INT, 1, 1000000, NULL, "10000", OFF(server.max_connections), NULL,
     "connections beyond this are closed at once"},
    {"server", "max_header_size", CONF_SIZE, 1 * KIB, 1 * MIB, NULL, "16KiB", OFF(server.max_header_size), NULL,
     "largest request head (request line plus headers) accepted; larger gets 431"},
    {"server", "max_uri_size", CONF_SIZE, 256, 1 * MIB, NULL, "8KiB", OFF(server.max_uri_size), NULL,
     "longest request target accepted; longer gets 414"},
    {"server", "max_body_size", CONF_SIZE, 1, 1024 * 1024 * MIB, NULL, "64MiB", OFF(server.max_body_size), NULL,
     "largest request body accepted; larger gets 413 (by Content-Length, before the body is read)"},
    {"server", "mime_types", CONF_PATH, 0, 0, NULL, "/etc/mime.types", OFF(server.mime_types), NULL,
     "mime.types file for Content-Type; a built-in table is used when it is missing"},
    {"server", "index", CONF_STR, 0, 0, NULL, "index.html", OFF(server.index), NULL,
     "file served for a directory request; directories are never listed"},
    {"server", "file_cache_valid", CONF_DURATION, 0, 3600 * SEC, NULL, "1s", OFF(server.file_cache_valid_ms), NULL,
     "small files are served from memory and re-checked on disk after this long; 0 disables the cache"},
    {"server", "file_cache_max_file", CONF_SIZE, 0, 16 * MIB, NULL, "64KiB", OFF(server.file_cache_max_file), NULL,
     "largest file kept in the file cache"},
    {"server", "file_cache_size", CONF_SIZE, 0, 4096 * MIB, NULL, "16MiB", OFF(server.file_cache_size), NULL,
     "file cache size per worker thread"},

    {"maintenance", "page", CONF_PATH, 0, 0, NULL, "./maintenance.html", OFF(maintenance.page), NULL,
     "HTML page served during maintenance; read when maintenance switches on"},
    {"maintenance", "retry_after", CONF_DURATION, 0, 365 * DAY, NULL, "300", OFF(maintenance.retry_after_ms), NULL,
     "default Retry-After for `ferry down` (bare number = seconds)"},
    {"maintenance", "allow_paths", CONF_LIST, 0, 0, NULL, "/healthz", OFF(maintenance.allow_paths), check_prefixes,
     "path prefixes that keep working during maintenance, matched on whole decoded segments"},
    {"maintenance", "allow_from", CONF_LIST, 0, 0, NULL, "", OFF(maintenance.allow_from), check_cidrs,
     "client networks (CIDR, IPv4 and IPv6) exempt from maintenance"},
    {"maintenance", "bypass_secret", CONF_SECRET, 0, 0, NULL, "", OFF(maintenance.bypass_secret), NULL,
     "enables a signed, expiring bypass cookie printed by `ferry down`"},
    {"maintenance", "bypass_ttl", CONF_DURATION, 1 * SEC, 30 * DAY, NULL, "12h", OFF(maintenance.bypass_ttl_ms), NULL,
     "lifetime of a bypass cookie"},
    {"maintenance", "drain_timeout", CONF_DURATION, 0, DAY, NULL, "60s", OFF(maintenance.drain_timeout_ms), NULL,
     "how long `ferry down --drain` waits for in-flight requests"},

    {"store", "type", CONF_ENUM, 0, 0, "dir|s3", "dir", OFF(store.type), NULL,
     "object store: dir (a local directory) or s3"},
    {"store", "path", CONF_PATH, 0, 0, NULL, "./var/store", OFF(store.path), NULL,
     "dir store: directory holding the objects"},
    {"store", "endpoint", CONF_STR, 0, 0, NULL, "", OFF(store.endpoint), NULL,
     "s3: endpoint URL, e.g. https://s3.us-east-1.amazonaws.com"},
    {"store", "region", CONF_STR, 0, 0, NULL, "us-east-1", OFF(store.region), NULL,
     "s3: signing region"},
    {"store", "bucket", CONF_STR, 0, 0, NULL, "", OFF(store.bucket), NULL,
     "s3: bucket name"},
    {"store", "prefix", CONF_STR, 0, 0, NULL, "", OFF(store.prefix), NULL,
     "prepended to every object key"},
    {"store", "addressing", CONF_ENUM, 0, 0, "path|virtual", "path", OFF(store.addressing), NULL,
     "s3: path-style or virtual-hosted-style bucket addressing"},
    {"store", "access_key", CONF_SECRET, 0, 0, NULL, "", OFF(store.access_key), NULL,
     "s3: access key id (else AWS_ACCESS_KEY_ID, else the shared credentials file)"},
    {"store", "secret_key", CONF_SECRET, 0, 0, NULL, "", OFF(store.secret_key), NULL,
     "s3: secret access key"},
    {"store", "session_token", CONF_SECRET, 0, 0, NULL, "", OFF(store.session_token), NULL,
     "s3: session token for temporary credentials"},
    {"store", "profile", CONF_STR, 0, 0, NULL, "", OFF(store.profile), NULL,
     "s3: profile in the shared credentials file (else AWS_PROFILE, else default)"},
    {"store", "ca_file", CONF_PATH, 0, 0, NULL, "", OFF(store.ca_file), NULL,
     "s3: CA bundle for TLS verification (default: the system's)"},
    {"store", "checksum", CONF_ENUM, 0, 0, "sha256|md5|none", "sha256", OFF(store.checksum), NULL,
     "s3: integrity header sent with uploads besides Content-MD5"},
    {"store", "conditional_create", CONF_BOOL, 0, 0, NULL, "no", OFF(store.conditional_create), NULL,
     "s3: send If-None-Match: * so an existing object is never overwritten"},
    {"store", "connect_timeout", CONF_DURATION, 100, 600 * SEC, NULL, "10s", OFF(store.connect_timeout_ms), NULL,
     "s3: TCP/TLS connect timeout"},
    {"store", "low_speed_time", CONF_DURATION, 1 * SEC, 3600 * SEC, NULL, "30s", OFF(store.low_speed_time_ms), NULL,
     "s3: abort a transfer that moves no data for this long"},
    {"store", "retries", CONF_INT, 0, 100, NULL, "5", OFF(store.retries), NULL,
     "s3: attempts after the first for retryable errors (uploads, and GET/HEAD in proxy mode "
     "before the answer starts)"},

    {"offload", "spool", CONF_PATH, 0, 0, NULL, "", OFF(offload.spool), NULL,
     "directory the application drops files in; empty: `ferry serve` runs no offloader"},
    {"offload", "url_prefix", CONF_STR, 0, 0, NULL, "/static/", OFF(offload.url_prefix), check_prefixes,
     "URLs under this prefix map to files in the spool"},
    {"offload", "archive", CONF_PATH, 0, 0, NULL, "", OFF(offload.archive), NULL,
     "second local copy kept (hard link, else copy) before the spool file is deleted; empty: none"},
    {"offload", "settle", CONF_DURATION, 0, 3600 * SEC, NULL, "2s", OFF(offload.settle_ms), NULL,
     "a file must be unchanged this long (and not open for writing) before it is uploaded"},
    {"offload", "concurrency", CONF_INT, 1, 256, NULL, "8", OFF(offload.concurrency), NULL,
     "uploads in flight at once"},
    {"offload", "multipart_threshold", CONF_SIZE, 5 * MIB, 5120LL * 1024 * MIB, NULL, "64MiB", OFF(offload.multipart_threshold), NULL,
     "files of this size or more are uploaded in parts"},
    {"offload", "part_size", CONF_SIZE, 5 * MIB, 5120LL * MIB, NULL, "16MiB", OFF(offload.part_size), NULL,
     "size of each part of a multipart upload"},
    {"offload", "rescan_interval", CONF_DURATION, 0, DAY, NULL, "60s", OFF(offload.rescan_interval_ms), NULL,
     "full scan of the spool this often besides inotify; 0: only at start and after an overflow"},
    {"offload", "ignore", CONF_LIST, 0, 0, NULL, ".* *.tmp *.part", OFF(offload.ignore), NULL,
     "file name patterns (fnmatch) the offloader never picks up"},
    {"offload", "verify", CONF_ENUM, 0, 0, "head|readback", "head", OFF(offload.verify), NULL,
     "head: the store's own checksum and size confirm the upload; readback: download and hash it"},
    {"offload", "redirect", CONF_ENUM, 0, 0, "auto|public|presign|proxy", "auto", OFF(offload.redirect), NULL,
     "a file under url_prefix that is no longer local: public (redirect to public_url), presign (presigned store URL) or proxy (ferry serves the object); auto: proxy for the dir store, public for s3 with public_url, else presign"},
    {"offload", "public_url", CONF_STR, 0, 0, NULL, "", OFF(offload.public_url), check_public_url,
     "base URL of the public objects, ending in '/' (the file's path below url_prefix is appended)"},
    {"offload", "presign_ttl", CONF_DURATION, 1 * SEC, 7 * DAY, NULL, "15m", OFF(offload.presign_ttl_ms), NULL,
     "validity of presigned URLs, 1s to 7d"},
    {"offload", "redirect_status", CONF_ENUM, 0, 0, "302|303|307", "302", OFF(offload.redirect_status), NULL,
     "status code of public and presign redirects"},
    {"offload", "verify_remote", CONF_BOOL, 0, 0, NULL, "off", OFF(offload.verify_remote), NULL,
     "HEAD the store before redirecting a file that is not local; 404 when it is in neither place"},
    {"offload", "link_secret", CONF_SECRET, 0, 0, NULL, "", OFF(offload.link_secret), NULL,
     "set: requests under url_prefix need expires= and sig= made with it (ferry sign); empty: no check"},
    {"offload", "link_secret_previous", CONF_SECRET, 0, 0, NULL, "", OFF(offload.link_secret_previous), NULL,
     "a former link_secret whose links are still accepted, for rotation"},

    {"backend", "command", CONF_STR, 0, 0, NULL, "", OFF(backend.command), NULL,
     "FastCGI application started with the socket as fd 0; empty: no backend"},
    {"backend", "location", CONF_STR, 0, 0, NULL, "/app/", OFF(backend.location), check_location,
     "requests under this prefix go to the FastCGI backend"},
    {"backend", "socket", CONF_PATH, 0, 0, NULL, "./run/app.sock", OFF(backend.socket), NULL,
     "unix socket path ferry holds for its whole life; names the current generation's listening socket"},
    {"backend", "processes", CONF_INT, 1, 1024, NULL, "4", OFF(backend.processes), NULL,
     "copies of command per generation"},
    {"backend", "concurrency", CONF_INT, 1, 1024, NULL, "1", OFF(backend.concurrency), NULL,
     "requests one process handles at once (1 for php-cgi and plain libfcgi)"},
    {"backend", "hold_timeout", CONF_DURATION, 0, 3600 * SEC, NULL, "15s", OFF(backend.hold_timeout_ms), NULL,
     "how long a request may wait for a free backend process before it gets the 503 page"},
    {"backend", "hold_queue", CONF_INT, 0, 1000000, NULL, "1024", OFF(backend.hold_queue), NULL,
     "requests waiting beyond this many get the 503 page at once"},
    {"backend", "ready_timeout", CONF_DURATION, 100, 3600 * SEC, NULL, "30s", OFF(backend.ready_timeout_ms), NULL,
     "a new generation must be ready within this, else it is killed and the old one keeps serving"},
    {"backend", "ready_grace", CONF_DURATION, 0, 600 * SEC, NULL, "1s", OFF(backend.ready_grace_ms), NULL,
     "a process that does not report ready on FERRY_READY_FD counts as ready when alive this long"},
    {"backend", "drain_timeout", CONF_DURATION, 0, DAY, NULL, "60s", OFF(backend.drain_timeout_ms), NULL,
     "how long an old generation may finish its requests before stop_signal, then before SIGTERM"},
    {"backend", "timeout", CONF_DURATION, 1 * SEC, DAY, NULL, "60s", OFF(backend.timeout_ms), NULL,
     "a backend that sends nothing for this long gets the request answered 504"},
    {"backend", "stop_signal", CONF_ENUM, 0, 0, "USR1|USR2|TERM|INT|QUIT|HUP|WINCH", "USR1", OFF(backend.stop_signal), NULL,
     "tells an old generation, once idle, to exit (libfcgi and php-cgi: USR1)"},
    {"backend", "script_filename", CONF_PATH, 0, 0, NULL, "", OFF(backend.script_filename), NULL,
     "SCRIPT_FILENAME sent with every request (a front controller such as index.php); empty: root + path"},
    {"backend", "accel_redirect", CONF_BOOL, 0, 0, NULL, "off", OFF(backend.accel_redirect), NULL,
     "honour accel_headers in backend responses: ferry serves the named upload instead"},
    {"backend", "accel_headers", CONF_LIST, 0, 0, NULL, "X-Accel-Redirect X-Sendfile", OFF(backend.accel_headers), NULL,
     "response headers that name an upload to serve (a URL path under url_prefix, or a file path in the spool)"},

    {"metrics", "listen", CONF_STR, 0, 0, NULL, "", OFF(metrics.listen), check_listen,
     "address of the Prometheus endpoint (/metrics), e.g. 127.0.0.1:9180; empty: off"},
    {"metrics", "allow_from", CONF_LIST, 0, 0, NULL, "127.0.0.1/32 ::1/128", OFF(metrics.allow_from), check_cidrs,
     "clients allowed to scrape /metrics; others get 403"},
    {NULL, NULL, 0, 0, 0, NULL, NULL, 0, NULL, NULL},
};
/* clang-format on */

static const char *const known_sections[] = {"server",  "maintenance", "store", "offload",
                                             "backend", "metrics",     NULL};

static const char *enum_choices(const struct conf_key *k)
{
    return k->choices ? k->choices : "";
}

int conf_parse_duration(const char *s, uint64_t *out_ms)
{
    const char *p = s;
    uint64_t total = 0;
    bool any = false;
    while (*p) {
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
        uint64_t n = 0;
        while (isdigit((unsigned char)*p)) {
            if (n > UINT64_MAX / 10)
                return -ERANGE;
            n = n * 10 + (uint64_t)(*p++ - '0');
        }
        uint64_t mult;
        if (*p == '\0') {
            /* A bare number is seconds, as in nginx; only allowed on its own. */
            if (any)
                return -EINVAL;
            mult = 1000;
        } else if (strncmp(p, "ms", 2) == 0) {
            mult = 1;
            p += 2;
        } else if (*p == 's') {
            mult = 1000;
            p++;
        } else if (*p == 'm') {
            mult = 60 * 1000;
            p++;
        } else if (*p == 'h') {
            mult = 3600 * 1000;
            p++;
        } else if (*p == 'd') {
            mult = 24 * 3600 * 1000ULL;
            p++;
        } else {
            return -EINVAL;
        }
        if (n > (UINT64_MAX - total) / mult)
            return -ERANGE;
        total += n * mult;
        any = true;
    }
    if (!any)
        return -EINVAL;
    *out_ms = total;
    return 0;
}

int conf_parse_size(const char *s, uint64_t *out_bytes)
{
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return -EINVAL;
    uint64_t n = 0;
    while (isdigit((unsigned char)*p)) {
        if (n > UINT64_MAX / 10)
            return -ERANGE;
        n = n * 10 + (uint64_t)(*p++ - '0');
    }
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {{"", 0},   {"B", 0},  {"K", 10},   {"KiB", 10}, {"k", 10}, {"M", 20},  {"MiB", 20},
                 {"m", 20}, {"G", 30}, {"GiB", 30}, {"g", 30},   {"T", 40}, {"TiB", 40}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(p, units[i].suffix) == 0) {
            if (units[i].shift && n > (UINT64_MAX >> units[i].shift))
                return -ERANGE;
            *out_bytes = n << units[i].shift;
            return 0;
        }
    }
    return -EINVAL;
}

static void list_free(struct conf_list *l)
{
    for (size_t i = 0; i < l->count; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

static void list_set(struct conf_list *l, const char *value)
{
    list_free(l);
    l->items = xcalloc(1, sizeof(char *));
    char *copy = xstrdup(value);
    char *save = NULL;
    for (char *w = strtok_r(copy, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
        l->items = xrealloc(l->items, (l->count + 2) * sizeof(char *));
        l->items[l->count++] = xstrdup(w);
        l->items[l->count] = NULL;
    }
    free(copy);
}

static bool parse_bool(const char *v, int *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = 1;
            return true;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = 0;
            return true;
        }
    }
    return false;
}

static int enum_index(const char *choices, const char *v)
{
    size_t vlen = strlen(v);
    int idx = 0;
    const char *p = choices;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == vlen && strncmp(p, v, len) == 0)
            return idx;
        idx++;
        if (!bar)
            break;
        p = bar + 1;
    }
    return -1;
}

static void format_ms(char *out, size_t outlen, long long ms)
{
    if (ms % DAY == 0 && ms)
        snprintf(out, outlen, "%lldd", ms / DAY);
    else if (ms % HOUR == 0 && ms)
        snprintf(out, outlen, "%lldh", ms / HOUR);
    else if (ms % (60 * SEC) == 0 && ms)
        snprintf(out, outlen, "%lldm", ms / (60 * SEC));
    else if (ms % SEC == 0)
        snprintf(out, outlen, "%llds", ms / SEC);
    else
        snprintf(out, outlen, "%lldms", ms);
}

static void format_size(char *out, size_t outlen, long long n)
{
    if (n && n % (MIB * 1024) == 0)
        snprintf(out, outlen, "%lldGiB", n / (MIB * 1024));
    else if (n && n % MIB == 0)
        snprintf(out, outlen, "%lldMiB", n / MIB);
    else if (n && n % KIB == 0)
        snprintf(out, outlen, "%lldKiB", n / KIB);
    else
        snprintf(out, outlen, "%lld", n);
}

/* Parse one value into its field. Returns 0 or -EINVAL with why filled in. */
static int conf_set(struct ferry_conf *c, const struct conf_key *k, const char *v, char *why,
                    size_t whylen)
{
    void *field = (char *)c + k->offset;
    if (k->check && k->check(v, why, whylen) < 0)
        return -EINVAL;
    switch (k->type) {
    case CONF_STR:
    case CONF_PATH:
    case CONF_SECRET: {
        char **s = field;
        free(*s);
        *s = xstrdup(v);
        return 0;
    }
    case CONF_LIST:
        list_set(field, v);
        return 0;
    case CONF_BOOL:
        if (!parse_bool(v, field)) {
            snprintf(why, whylen, "cannot parse '%s' (want yes or no)", v);
            return -EINVAL;
        }
        return 0;
    case CONF_INT:
    case CONF_INT_AUTO: {
        if (k->type == CONF_INT_AUTO && strcmp(v, "auto") == 0) {
            *(long long *)field = 0;
            return 0;
        }
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (!*v || *end || errno || !(isdigit((unsigned char)*v) || *v == '-')) {
            snprintf(why, whylen, "cannot parse '%s' (want an integer%s)", v,
                     k->type == CONF_INT_AUTO ? " or 'auto'" : "");
            return -EINVAL;
        }
        if ((k->min || k->max) && (n < k->min || n > k->max)) {
            snprintf(why, whylen, "%lld is out of range %lld..%lld", n, k->min, k->max);
            return -EINVAL;
        }
        *(long long *)field = n;
        return 0;
    }
    case CONF_DURATION: {
        uint64_t ms;
        if (conf_parse_duration(v, &ms) < 0) {
            snprintf(why, whylen, "cannot parse '%s' (want a duration like 500ms, 2s, 5m, 1h)", v);
            return -EINVAL;
        }
        if ((k->min || k->max) && (ms < (uint64_t)k->min || ms > (uint64_t)k->max)) {
            char lo[32], hi[32];
            format_ms(lo, sizeof(lo), k->min);
            format_ms(hi, sizeof(hi), k->max);
            snprintf(why, whylen, "'%s' is out of range %s..%s", v, lo, hi);
            return -EINVAL;
        }
        *(uint64_t *)field = ms;
        return 0;
    }
    case CONF_SIZE: {
        uint64_t n;
        if (conf_parse_size(v, &n) < 0) {
            snprintf(why, whylen, "cannot parse '%s' (want a size like 4096, 64KiB, 16MiB)", v);
            return -EINVAL;
        }
        if ((k->min || k->max) && (n < (uint64_t)k->min || n > (uint64_t)k->max)) {
            char lo[32], hi[32];
            format_size(lo, sizeof(lo), k->min);
            format_size(hi, sizeof(hi), k->max);
            snprintf(why, whylen, "'%s' is out of range %s..%s", v, lo, hi);
            return -EINVAL;
        }
        *(uint64_t *)field = n;
        return 0;
    }
    case CONF_ENUM: {
        int idx = enum_index(enum_choices(k), v);
        if (idx < 0) {
            char choices[128];
            snprintf(choices, sizeof(choices), "%s", enum_choices(k));
            for (char *p = choices; *p; p++)
                if (*p == '|')
                    *p = ',';
            snprintf(why, whylen, "cannot parse '%s' (want one of %s)", v, choices);
            return -EINVAL;
        }
        *(int *)field = idx;
        return 0;
    }
    }
    return -EINVAL;
}

void conf_init_defaults(struct ferry_conf *c)
{
    memset(c, 0, sizeof(*c));
    for (const struct conf_key *k = conf_keys; k->name; k++) {
        char why[256];
        if (conf_set(c, k, k->def, why, sizeof(why)) < 0)
            abort(); /* a bad built-in default is a programming error */
    }
}

void conf_finish(struct ferry_conf *c)
{
    if (!c)
        return;
    for (const struct conf_key *k = conf_keys; k->name; k++) {
        void *field = (char *)c + k->offset;
        if (k->type == CONF_STR || k->type == CONF_PATH || k->type == CONF_SECRET) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (k->type == CONF_LIST) {
            list_free(field);
        }
    }
    free(c->path);
    c->path = NULL;
}

struct parse_ctx {
    struct ferry_conf *conf;
    FILE *file;
    const char *path;
    struct buf *err;
    int line;
    int errors;
    bool overlong;
    int seen_line[128]; /* line where each key of conf_keys was set, 0 = not yet */
};

/* inih reads lines through this so that we know the line of each key. */
static char *conf_reader(char *str, int num, void *stream)
{
    struct parse_ctx *ctx = stream;
    char *r = fgets(str, num, ctx->file);
    if (!r)
        return NULL;
    ctx->line++;
    size_t len = strlen(r);
    if (len == (size_t)num - 1 && r[len - 1] != '\n' && !feof(ctx->file)) {
        /* Swallow the rest of an overlong line and report it rather than have
         * the tail parsed as a line of its own. */
        int ch;
        while ((ch = fgetc(ctx->file)) != EOF && ch != '\n') {
        }
        ctx->overlong = true;
    }
    return r;
}

static void conf_error(struct parse_ctx *ctx, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void conf_error(struct parse_ctx *ctx, int line, const char *fmt, ...)
{
    ctx->errors++;
    if (ctx->errors > 50)
        return;
    if (line > 0)
        buf_printf(ctx->err, "%s:%d: ", ctx->path, line);
    else
        buf_printf(ctx->err, "%s: ", ctx->path);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(ctx->err, fmt, ap);
    va_end(ap);
    buf_append_str(ctx->err, "\n");
}

static int conf_handler(void *user, const char *section, const char *name, const char *value)
{
    struct parse_ctx *ctx = user;
    if (ctx->overlong) {
        ctx->overlong = false;
        conf_error(ctx, ctx->line, "line is too long");
        return 1;
    }
    bool known = false;
    for (const char *const *s = known_sections; *s; s++)
        if (strcmp(*s, section) == 0)
            known = true;
    if (!known) {
        if (*section)
            conf_error(ctx, ctx->line, "unknown section '[%s]'", section);
        else
            conf_error(ctx, ctx->line, "key '%s': outside of any [section]", name);
        return 1;
    }
    for (const struct conf_key *k = conf_keys; k->name; k++) {
        if (strcmp(k->section, section) != 0 || strcmp(k->name, name) != 0)
            continue;
        size_t idx = (size_t)(k - conf_keys);
        if (ctx->seen_line[idx]) {
            conf_error(ctx, ctx->line, "key '%s': set twice (first on line %d)", name,
                       ctx->seen_line[idx]);
            return 1;
        }
        ctx->seen_line[idx] = ctx->line;
        char why[512];
        if (conf_set(ctx->conf, k, value, why, sizeof(why)) < 0)
            conf_error(ctx, ctx->line, "key '%s': %s", name, why);
        return 1;
    }
    conf_error(ctx, ctx->line, "key '%s': unknown key in [%s]", name, section);
    return 1;
}

/* Checks that involve more than one key. */
static void conf_validate(struct parse_ctx *ctx)
{
    struct ferry_conf *c = ctx->conf;
    if (c->server.listen.count == 0)
        conf_error(ctx, 0, "key 'listen': no address given");
    if (!*c->server.root)
        conf_error(ctx, 0, "key 'root': must not be empty");
    if (strcmp(c->server.access_log, "") == 0)
        conf_error(ctx, 0, "key 'access_log': must not be empty (use 'off')");
    if (c->store.type == STORE_S3) {
        if (!*c->store.bucket)
            conf_error(ctx, 0, "key 'bucket': required when [store] type = s3");
        if (!*c->store.endpoint)
            conf_error(ctx, 0, "key 'endpoint': required when [store] type = s3");
        else if (strncmp(c->store.endpoint, "http://", 7) != 0 &&
                 strncmp(c->store.endpoint, "https://", 8) != 0)
            conf_error(ctx, 0, "key 'endpoint': '%s' is not an http:// or https:// URL",
                       c->store.endpoint);
    }
    if (c->offload.redirect == REDIRECT_PUBLIC && !c->offload.public_url[0])
        conf_error(ctx, 0, "key 'redirect': public needs public_url");
    if (c->offload.redirect == REDIRECT_PRESIGN && c->store.type != STORE_S3)
        conf_error(ctx, 0, "key 'redirect': presign needs [store] type = s3");
    bool public_redirect = c->offload.redirect == REDIRECT_PUBLIC ||
                           (c->offload.redirect == REDIRECT_AUTO && c->store.type == STORE_S3 &&
                            c->offload.public_url[0]);
    if (c->offload.link_secret[0] && public_redirect)
        conf_error(ctx, 0,
                   "key 'link_secret': signed links with a public redirect would let anyone "
                   "bypass the check at public_url (use redirect = presign or proxy)");
    if (c->offload.link_secret_previous[0] && !c->offload.link_secret[0])
        conf_error(ctx, 0, "key 'link_secret_previous': set without link_secret");
    if (c->backend.accel_redirect && !c->offload.spool[0])
        conf_error(ctx, 0,
                   "key 'accel_redirect': needs [offload] spool (the uploads it names are "
                   "served from there)");
    if (strpbrk(c->metrics.listen, " \t"))
        conf_error(ctx, 0, "key 'listen' in [metrics]: one address only, got '%s'",
                   c->metrics.listen);
}

int conf_stop_signal_number(int stop_signal)
{
    static const int numbers[] = {SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGWINCH};
    if (stop_signal < 0 || (size_t)stop_signal >= sizeof(numbers) / sizeof(numbers[0]))
        return SIGUSR1;
    return numbers[stop_signal];
}

int conf_load(struct ferry_conf *c, const char *path, struct buf *err)
{
    struct parse_ctx *ctx = xcalloc(1, sizeof(*ctx));
    ctx->conf = c;
    ctx->path = path;
    ctx->err = err;
    free(c->path);
    c->path = xstrdup(path);
    ctx->file = fopen(path, "re");
    if (!ctx->file) {
        int e = errno;
        buf_printf(err, "%s: cannot open: %s\n", path, strerror(e));
        free(ctx);
        return -e;
    }
    /* Debian's libinih exposes its compile-time options as globals. */
    ini_allow_multiline = false;
    ini_use_stack = false;
    ini_max_line = 4096;
    ini_allow_inline_comments = true;
    int r = ini_parse_stream(conf_reader, ctx, conf_handler, ctx);
    if (ctx->overlong)
        conf_error(ctx, ctx->line, "line is too long");
    if (r > 0) /* a line inih could not parse: no '=' or a broken [section */
        conf_error(ctx, r, "syntax error (want 'key = value' or '[section]')");
    else if (r < 0)
        conf_error(ctx, 0, "cannot read: %s", strerror(errno ? errno : EIO));
    fclose(ctx->file);
    conf_validate(ctx);
    int errors = ctx->errors;
    free(ctx);
    return errors ? -EINVAL : 0;
}

const char *conf_default_path(void)
{
    if (access("ferry.conf", F_OK) == 0)
        return "ferry.conf";
    if (access("/etc/ferry/ferry.conf", F_OK) == 0)
        return "/etc/ferry/ferry.conf";
    return NULL;
}

void conf_dump(const struct ferry_conf *c, struct buf *b)
{
    const char *section = "";
    for (const struct conf_key *k = conf_keys; k->name; k++) {
        if (strcmp(section, k->section) != 0) {
            buf_printf(b, "%s[%s]\n", *section ? "\n" : "", k->section);
            section = k->section;
        }
        const void *field = (const char *)c + k->offset;
        char tmp[64];
        buf_printf(b, "%s = ", k->name);
        switch (k->type) {
        case CONF_STR:
        case CONF_PATH:
            buf_append_str(b, *(char *const *)field);
            break;
        case CONF_SECRET:
            buf_append_str(b, **(char *const *)field ? "(set)" : "");
            break;
        case CONF_LIST: {
            const struct conf_list *l = field;
            for (size_t i = 0; i < l->count; i++)
                buf_printf(b, "%s%s", i ? " " : "", l->items[i]);
            break;
        }
        case CONF_BOOL:
            buf_append_str(b, *(const int *)field ? "yes" : "no");
            break;
        case CONF_INT:
            buf_printf(b, "%lld", *(const long long *)field);
            break;
        case CONF_INT_AUTO:
            if (*(const long long *)field == 0)
                buf_append_str(b, "auto");
            else
                buf_printf(b, "%lld", *(const long long *)field);
            break;
        case CONF_DURATION:
            format_ms(tmp, sizeof(tmp), (long long)*(const uint64_t *)field);
            buf_append_str(b, tmp);
            break;
        case CONF_SIZE:
            format_size(tmp, sizeof(tmp), (long long)*(const uint64_t *)field);
            buf_append_str(b, tmp);
            break;
        case CONF_ENUM: {
            const char *p = enum_choices(k);
            for (int i = *(const int *)field; i > 0 && p; i--) {
                p = strchr(p, '|');
                if (p)
                    p++;
            }
            const char *bar = p ? strchr(p, '|') : NULL;
            if (p)
                buf_append(b, p, bar ? (size_t)(bar - p) : strlen(p));
            break;
        }
        }
        buf_append_str(b, "\n");
    }
}
