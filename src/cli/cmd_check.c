#include "cli/cli.h"

#include "common/buf.h"
#include "common/conf.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

/* ferry check [-c FILE] [--print]: validate the configuration; exit 0 or 2. */
int cmd_check(int argc, char **argv)
{
    const char *path = NULL;
    int print = 0;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"print", no_argument, NULL, 'p'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "+c:p", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 'p':
            print = 1;
            break;
        default:
            return cli_usage(argv[0]);
        }
    }
    if (optind != argc)
        return cli_usage(argv[0]);

    struct ferry_conf conf;
    int r = cli_load_conf(path, &conf);
    if (r == 0) {
        if (print) {
            struct buf b;
            buf_init(&b, 1 << 20);
            conf_dump(&conf, &b);
            fputs(b.data ? b.data : "", stdout);
            buf_finish(&b);
        } else {
            printf("ferry: configuration %s is valid\n",
                   conf.path ? conf.path : "(built-in defaults)");
        }
    }
    conf_finish(&conf);
    return r;
}
