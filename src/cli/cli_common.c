#include "cli/cli.h"

#include "common/buf.h"
#include "common/conf.h"
#include "common/log.h"

#include <stdio.h>
#include <string.h>

int cli_usage(const char *name)
{
    for (const struct cli_command *c = cli_commands; c->name; c++) {
        if (strcmp(c->name, name) == 0) {
            fprintf(stderr, "usage: ferry %s %s\n", c->name, c->usage);
            return EXIT_USAGE;
        }
    }
    return EXIT_USAGE;
}

int cli_load_conf(const char *path, struct ferry_conf *c)
{
    conf_init_defaults(c);
    if (!path)
        path = conf_default_path();
    if (!path)
        return 0;
    struct buf err;
    buf_init(&err, 64 * 1024);
    int r = conf_load(c, path, &err);
    if (r < 0)
        fprintf(stderr, "%s", err.data ? err.data : "");
    buf_finish(&err);
    return r < 0 ? EXIT_USAGE : 0;
}

int cli_open_log(const struct ferry_conf *c)
{
    log_level_current = c->server.log_level;
    int r = log_open(c->server.error_log);
    if (r < 0) {
        fprintf(stderr, "ferry: error_log '%s': %s\n", c->server.error_log, strerror(-r));
        return EXIT_RUNTIME;
    }
    return 0;
}
