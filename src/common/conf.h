/* Configuration: one table of keys {section, name, type, bounds, default, offset}
 * (redis's config.c), so that parsing, `ferry check`, the man page and the
 * defaults cannot drift apart. */
#ifndef FERRY_COMMON_CONF_H
#define FERRY_COMMON_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* A space-separated list value, split into words. */
struct conf_list {
    char **items; /* items[count] == NULL */
    size_t count;
};

enum conf_store_type { STORE_DIR = 0, STORE_S3 = 1 };
enum conf_addressing { ADDRESSING_PATH = 0, ADDRESSING_VIRTUAL = 1 };
enum conf_checksum { CHECKSUM_SHA256 = 0, CHECKSUM_MD5 = 1, CHECKSUM_NONE = 2 };
enum conf_verify { VERIFY_HEAD = 0, VERIFY_READBACK = 1 };
/* [offload] redirect: auto picks proxy for the dir store, public for s3 with a
 * public_url, else presign (offload_serve_mode() in offload/serve.h). */
enum conf_redirect { REDIRECT_AUTO = 0, REDIRECT_PUBLIC, REDIRECT_PRESIGN, REDIRECT_PROXY };
enum conf_redirect_status { REDIRECT_302 = 0, REDIRECT_303, REDIRECT_307 };
/* [backend] stop_signal; conf_stop_signal_number() maps it to SIGUSR1 etc. */
enum conf_stop_signal {
    STOP_USR1 = 0,
    STOP_USR2,
    STOP_TERM,
    STOP_INT,
    STOP_QUIT,
    STOP_HUP,
    STOP_WINCH
};

struct ferry_conf {
    char *path; /* file it came from, NULL for built-in defaults */

    struct {
        struct conf_list listen;
        char *root;
        long long workers; /* 0 = auto */
        char *admin_socket;
        uint64_t admin_timeout_ms;
        char *state_dir;
        char *access_log;
        char *error_log;
        int log_level;
        uint64_t keepalive_timeout_ms;
        uint64_t header_timeout_ms;
        uint64_t body_timeout_ms;
        uint64_t send_timeout_ms;
        uint64_t shutdown_timeout_ms;
        long long max_connections;
        uint64_t max_header_size;
        uint64_t max_uri_size;
        uint64_t max_body_size;
        char *mime_types;
        char *index;
        uint64_t file_cache_valid_ms;
        uint64_t file_cache_max_file;
        uint64_t file_cache_size;
    } server;

    struct {
        char *page;
        uint64_t retry_after_ms;
        struct conf_list allow_paths;
        struct conf_list allow_from;
        char *bypass_secret;
        uint64_t bypass_ttl_ms;
        uint64_t drain_timeout_ms;
    } maintenance;

    struct {
        int type; /* enum conf_store_type */
        char *path;
        char *endpoint;
        char *region;
        char *bucket;
        char *prefix;
        int addressing; /* enum conf_addressing */
        char *access_key;
        char *secret_key;
        char *session_token;
        char *profile;
        char *ca_file;
        int checksum; /* enum conf_checksum */
        int conditional_create;
        uint64_t connect_timeout_ms;
        uint64_t low_speed_time_ms;
        long long retries;
    } store;

    struct {
        char *spool; /* "" = no offloader in `ferry serve` */
        char *url_prefix;
        char *archive; /* "" = no archive copy */
        uint64_t settle_ms;
        long long concurrency;
        uint64_t multipart_threshold;
        uint64_t part_size;
        uint64_t rescan_interval_ms;
        struct conf_list ignore;
        int verify;       /* enum conf_verify */
        int redirect;     /* enum conf_redirect */
        char *public_url; /* "" or http(s)://HOST/...; ends with '/' */
        uint64_t presign_ttl_ms;
        int redirect_status; /* enum conf_redirect_status */
        int verify_remote;   /* bool: HEAD the store before redirecting */
        char *link_secret;   /* "" = links under url_prefix need no signature */
        char *link_secret_previous;
    } offload;

    struct {
        char *command; /* "" = no backend: location is served like any path */
        char *location;
        char *socket;
        long long processes;
        long long concurrency; /* requests one process takes at once */
        uint64_t hold_timeout_ms;
        long long hold_queue;
        uint64_t ready_timeout_ms;
        uint64_t ready_grace_ms;
        uint64_t drain_timeout_ms;
        uint64_t timeout_ms; /* no byte from the backend this long: 504 */
        int stop_signal;     /* enum conf_stop_signal */
        char *script_filename;
        int accel_redirect; /* bool */
        struct conf_list accel_headers;
    } backend;

    struct {
        char *listen; /* "" = no metrics listener */
        struct conf_list allow_from;
    } metrics;
};

enum conf_type {
    CONF_STR,      /* char *, may be empty */
    CONF_PATH,     /* char *, a filesystem path, may be empty */
    CONF_SECRET,   /* char *, never printed */
    CONF_LIST,     /* struct conf_list */
    CONF_BOOL,     /* int: yes/no, true/false, on/off, 1/0 */
    CONF_INT,      /* long long within [min, max] */
    CONF_INT_AUTO, /* long long; 'auto' stores 0 */
    CONF_DURATION, /* uint64_t milliseconds: 500ms 2s 5m 1h 1d, bare = seconds */
    CONF_SIZE,     /* uint64_t bytes: 64KiB 16MiB 1GiB, bare = bytes */
    CONF_ENUM,     /* int index into choices "a|b|c" */
};

struct conf_key {
    const char *section;
    const char *name;
    enum conf_type type;
    long long min, max;  /* INT/DURATION(ms)/SIZE bounds; 0,0 = unbounded */
    const char *choices; /* ENUM: "a|b|c" */
    const char *def;     /* default, parsed like a value from the file */
    size_t offset;       /* into struct ferry_conf */
    int (*check)(const char *value, char *why, size_t whylen); /* extra validation */
    const char *help; /* one line for ferry.conf(5) and `ferry check --keys` */
};

/** The table of every configuration key, terminated by an entry with name NULL. */
extern const struct conf_key conf_keys[];

/** Fill c with the built-in defaults. Caller-owned c; release with conf_finish(). */
void conf_init_defaults(struct ferry_conf *c);

/** Load path over the defaults. On failure returns -EINVAL (or -errno when the
 * file cannot be read) and appends one "FILE:LINE: key 'x': why" line per problem
 * to err; c is then still valid (defaults plus what parsed) and must be finished.
 * Copies path. */
int conf_load(struct ferry_conf *c, const char *path, struct buf *err);

/** Free everything conf_init_defaults()/conf_load() allocated. NULL-safe. */
void conf_finish(struct ferry_conf *c);

/** The config file to use when none was given: ./ferry.conf, then
 * /etc/ferry/ferry.conf, else NULL (built-in defaults). Static storage. */
const char *conf_default_path(void);

/** Parse a duration ("500ms", "2s", "5m", "1h", "1d", "1m30s"; bare digits are
 * seconds) into milliseconds. Returns 0 or -EINVAL/-ERANGE. */
int conf_parse_duration(const char *s, uint64_t *out_ms);

/** Parse a size ("512", "64KiB", "16MiB", "1GiB", "2TiB"; K/M/G/T are binary too)
 * into bytes. Returns 0 or -EINVAL/-ERANGE. */
int conf_parse_size(const char *s, uint64_t *out_bytes);

/** The signal number of a [backend] stop_signal value (enum conf_stop_signal). */
int conf_stop_signal_number(int stop_signal);

/** Write the effective configuration as INI to b (secrets masked). */
void conf_dump(const struct ferry_conf *c, struct buf *b);

#endif
