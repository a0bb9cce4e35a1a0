/* Error log. Only top-level code (cli/, the server's supervisor and worker loops)
 * logs; library modules return errors. The macros test the level before the
 * arguments are evaluated (redis serverLog). */
#ifndef FERRY_COMMON_LOG_H
#define FERRY_COMMON_LOG_H

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN = 1, LOG_LVL_INFO = 2, LOG_LVL_DEBUG = 3 };

extern int log_level_current;

#define log_at(lvl, ...)                                                                           \
    do {                                                                                           \
        if (log_level_current >= (lvl))                                                            \
            log_write((lvl), __VA_ARGS__);                                                         \
    } while (0)
#define log_error(...) log_at(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_at(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_at(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_at(LOG_LVL_DEBUG, __VA_ARGS__)

/** Write one timestamped line at the given level. Thread-safe (one write(2)). */
void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Direct the error log to path ('-' or NULL for stderr). Returns 0 or -errno.
 * Supervisor thread, before workers start. Copies path. */
int log_open(const char *path);

/** Reopen the error log file (SIGHUP, after rotation); the fd number stays the
 * same, so threads writing concurrently never see a closed descriptor.
 * Returns 0 or -errno. Supervisor thread. */
int log_reopen(void);

/** Parse a level name (error, warn, info, debug). Returns the level or -1. */
int log_level_parse(const char *name);

/** Open path for appending as a log ('-' gives a dup of stderr). Returns an fd or
 * -errno. Used for the error and access logs alike. */
int log_open_append(const char *path);

/** Replace the file behind fd with a fresh open of path, keeping fd's number
 * (dup2), so concurrent writers never see a closed descriptor. '-' is a no-op.
 * Returns 0 or -errno. */
int log_reopen_fd(int fd, const char *path);

#endif
