#include "cli/cli.h"

#include "common/buf.h"
#include "common/conf.h"
#include "common/fsdir.h"
#include "offload/offload.h"

#include <errno.h>
#include <limits.h>

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* `ferry serve` creates a missing state_dir (mode 0700); say so, and refuse a
 * configuration whose state_dir cannot be created, before it is needed. */
static int check_state_dir(const char *dir)
{
    char blocker[PATH_MAX] = "";
    int r = fsdir_probe(dir, blocker, sizeof(blocker));
    if (r == 1)
        printf("ferry: state_dir '%s' does not exist; ferry serve will create it (mode 0700)\n",
               dir);
    if (r >= 0)
        return 0;
    fprintf(stderr, "ferry: state_dir '%s' does not exist and cannot be created: '%s': %s\n", dir,
            blocker, r == -ENOTDIR ? "not a directory" : strerror(-r));
    return EXIT_USAGE;
}

/* [offload]: the spool must be an existing directory (the application creates it;
 * ferry only watches it); the archive must exist or be creatable. */
static int check_offload_dirs(const struct ferry_conf *c)
{
    const char *spool = c->offload.spool, *archive = c->offload.archive;
    if (!spool[0])
        return 0;
    struct stat st;
    const char *why = stat(spool, &st) < 0   ? strerror(errno)
                      : !S_ISDIR(st.st_mode) ? "not a directory"
                                             : NULL;
    if (why) {
        fprintf(stderr, "ferry: [offload] spool '%s': %s\n", spool, why);
        return EXIT_USAGE;
    }
    char blocker[PATH_MAX] = "";
    int r = archive[0] ? fsdir_probe(archive, blocker, sizeof(blocker)) : 0;
    if (r < 0) {
        fprintf(stderr, "ferry: [offload] archive '%s' cannot be created: '%s': %s\n", archive,
                blocker, r == -ENOTDIR ? "not a directory" : strerror(-r));
        return EXIT_USAGE;
    }
    char err[PATH_MAX * 3];
    if (offload_check_paths(c, err, sizeof(err)) < 0) {
        fprintf(stderr, "ferry: %s\n", err);
        return EXIT_USAGE;
    }
    return 0;
}

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
            r = check_state_dir(conf.server.state_dir);
            if (r == 0)
                r = check_offload_dirs(&conf);
            if (r == 0)
                printf("ferry: configuration %s is valid\n",
                       conf.path ? conf.path : "(built-in defaults)");
        }
    }
    conf_finish(&conf);
    return r;
}
