/* ferry-test: ferry's own main with the test-only handlers installed through
 * cli_serve_setup. Built for the integration tests, never installed. */
#include "cli/cli.h"
#include "test_upstream.h"

int ferry_main(int argc, char **argv);

/* ferry's main.c, compiled here under another name so that this binary runs
 * exactly the same subcommand table and argument handling. */
#define main ferry_main
#include "main.c"
#undef main

int main(int argc, char **argv)
{
    cli_serve_setup = test_upstream_install;
    return ferry_main(argc, argv);
}
