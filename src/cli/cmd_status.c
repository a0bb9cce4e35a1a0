#include "cli/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WATCH_DEFAULT_S 2

/* ferry status [-c FILE] [--json] [--watch[=SECS]]: every component's state
 * and metrics (the same data as /metrics). --watch asks again every SECS
 * seconds: on a terminal the screen is redrawn in place, otherwise each
 * reply is printed after the last, until interrupted or the server is gone. */
int cmd_status(int argc, char **argv)
{
    const char *path = NULL;
    bool json = false;
    long watch = 0;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"watch", optional_argument, NULL, 'w'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "+c:jw", opts, NULL)) != -1) {
        if (ch == 'c') {
            path = optarg;
        } else if (ch == 'j') {
            json = true;
        } else if (ch == 'w') {
            char *end = NULL;
            watch = optarg ? strtol(optarg, &end, 10) : WATCH_DEFAULT_S;
            if ((optarg && (*end || end == optarg)) || watch < 1 || watch > 86400) {
                fprintf(stderr, "ferry status: --watch takes whole seconds (1..86400), got '%s'\n",
                        optarg);
                return EXIT_USAGE;
            }
        } else {
            return cli_usage(argv[0]);
        }
    }
    if (optind != argc)
        return cli_usage(argv[0]);
    if (!watch)
        return cli_admin_run(path, "status", 30000, json, NULL);
    bool tty = isatty(1) == 1;
    for (;;) {
        if (tty)
            fputs("\033[H\033[2J", stdout); /* home, clear: redraw in place */
        int r = cli_admin_run(path, "status", 30000, json, NULL);
        fflush(stdout);
        if (r != EXIT_OK)
            return r;
        struct timespec ts = {watch, 0};
        while (nanosleep(&ts, &ts) < 0)
            ;
    }
}
