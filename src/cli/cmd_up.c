#include "cli/cli.h"

/* ferry up [-c FILE] [--json]: switch maintenance off and return once every
 * worker has. */
int cmd_up(int argc, char **argv)
{
    return cli_admin_simple(argc, argv, "up");
}
