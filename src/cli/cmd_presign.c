#include "cli/cli.h"

#include "common/buf.h"
#include "common/conf.h"
#include "store/store.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PRESIGN_DEFAULT_TTL 900

/* ferry presign [-c FILE] KEY [--ttl DURATION]: print a presigned GET URL for KEY. */
int cmd_presign(int argc, char **argv)
{
    const char *path = NULL;
    long ttl = PRESIGN_DEFAULT_TTL;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"ttl", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:t:", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 't': {
            /* The config's duration syntax: bare seconds or "15m", "1h", "7d". */
            uint64_t ms;
            if (conf_parse_duration(optarg, &ms) < 0 || ms % 1000 || ms < 1000 ||
                ms > 604800 * 1000ULL) {
                fprintf(stderr, "ferry presign: --ttl '%s': want whole seconds from 1s to 7d\n",
                        optarg);
                return EXIT_USAGE;
            }
            ttl = (long)(ms / 1000);
            break;
        }
        default:
            return cli_usage(argv[0]);
        }
    }
    if (optind != argc - 1 || !argv[optind][0])
        return cli_usage(argv[0]);
    const char *key = argv[optind];

    struct ferry_conf conf;
    int rc = cli_load_conf(path, &conf);
    if (rc != 0) {
        conf_finish(&conf);
        return rc;
    }
    if (conf.store.type != STORE_S3) {
        fprintf(stderr, "ferry presign: [store] type is not s3; only an s3 store has URLs\n");
        conf_finish(&conf);
        return EXIT_USAGE;
    }
    struct store *s = NULL;
    struct store_error err;
    memset(&err, 0, sizeof(err));
    if (store_create(&conf, NULL, &s, &err) < 0) {
        char line[512];
        store_error_format(&err, line, sizeof(line));
        fprintf(stderr, "ferry presign: %s\n", line);
        conf_finish(&conf);
        return EXIT_USAGE;
    }
    struct buf url;
    buf_init(&url, 64 * 1024);
    int r = store_presign_get(s, key, ttl, &url);
    if (r < 0) {
        fprintf(stderr, "ferry presign: cannot sign a URL for '%s': %s\n", key, strerror(-r));
        rc = EXIT_RUNTIME;
    } else {
        printf("%s\n", url.data);
    }
    buf_finish(&url);
    store_destroy(s);
    conf_finish(&conf);
    return rc;
}
