#include "cli/cli.h"

#include "common/conf.h"

#include <stdint.h>

/* ferry swap [-c FILE] [--json]: replace the backend processes with a new
 * generation started from the configuration's current [backend] command, and
 * return once the old generation has exited (exit 1 with the reason when the
 * new one did not become ready). */
int cmd_swap(int argc, char **argv)
{
    const char *path;
    bool json;
    int r = cli_admin_parse(argc, argv, &path, &json);
    if (r != 0)
        return r;
    /* The server answers within ready_timeout plus two drain_timeouts (stop
     * signal, SIGTERM, SIGKILL); wait that long and a little more. */
    struct ferry_conf conf;
    r = cli_load_conf(path, &conf);
    uint64_t ms = conf.backend.ready_timeout_ms + 2 * conf.backend.drain_timeout_ms + 30000;
    conf_finish(&conf);
    if (r != 0)
        return r;
    return cli_admin_run(path, "swap", ms > INT32_MAX ? -1 : (int)ms, json, NULL);
}
