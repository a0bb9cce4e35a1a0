#include "cli/cli.h"

/* ferry status [-c FILE] [--json]: mode, since, until, message, counters, and
 * whatever other features report in their status sections. */
int cmd_status(int argc, char **argv)
{
    return cli_admin_simple(argc, argv, "status");
}
