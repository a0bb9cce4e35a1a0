/* ferry: the subcommand table and nothing else. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

const struct cli_command cli_commands[] = {
    {"serve", cmd_serve, "[-c FILE]", "run the origin server"},
    {"offload", cmd_offload, "[-c FILE] [--once] [--progress] [--dry-run]",
     "run only the offloader, or drain the spool once"},
    {"down", cmd_down,
     "[-c FILE] [--retry-after SECS|--until TIME] [--message TEXT] [--at TIME] [--drain] [--json]",
     "switch maintenance mode on; returns once every worker has"},
    {"up", cmd_up, "[-c FILE] [--json]",
     "switch maintenance mode off; returns once every worker has"},
    {"status", cmd_status, "[-c FILE] [--json] [--watch[=SECS]]",
     "show each component's state and metrics"},
    {"swap", cmd_swap, "[-c FILE] [--json]",
     "hot-swap the FastCGI backend processes; returns once the old ones exited"},
    {"presign", cmd_presign, "[-c FILE] KEY [--ttl SECS]", "print a presigned GET URL for KEY"},
    {"sign", cmd_sign, "[-c FILE] PATH [--ttl DURATION] [--expires EPOCH]",
     "print a signed, expiring link to PATH"},
    {"check", cmd_check, "[-c FILE] [--print]", "validate the configuration and exit"},
    {"version", cmd_version, "", "print the version"},
    {NULL, NULL, NULL, NULL},
};

static int usage(FILE *out)
{
    fprintf(out, "usage: ferry COMMAND [OPTIONS]\n\ncommands:\n");
    for (const struct cli_command *c = cli_commands; c->name; c++)
        fprintf(out, "  %-8s %-28s %s\n", c->name, c->usage, c->summary);
    return out == stdout ? EXIT_OK : EXIT_USAGE;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0)
        return usage(stdout);
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)
        return cmd_version(1, argv + 1);
    for (const struct cli_command *c = cli_commands; c->name; c++)
        if (strcmp(c->name, argv[1]) == 0)
            return c->run(argc - 1, argv + 1);
    fprintf(stderr, "ferry: unknown command '%s'\n", argv[1]);
    return usage(stderr);
}
