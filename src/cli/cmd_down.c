#include "cli/cli.h"

#include "admin/admin.h"
#include "common/buf.h"
#include "common/conf.h"
#include "maint/maint.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* ferry down [-c FILE] [--retry-after SECS | --until TIME] [--message TEXT] [--at TIME]
 * [--drain] [--json]: switch maintenance on and return once every worker has. */
int cmd_down(int argc, char **argv)
{
    const char *path = NULL, *retry = NULL, *until = NULL, *message = NULL, *at = NULL;
    bool drain = false, json = false;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"retry-after", required_argument, NULL, 'r'},
        {"until", required_argument, NULL, 'u'},  {"message", required_argument, NULL, 'm'},
        {"at", required_argument, NULL, 'a'},     {"drain", no_argument, NULL, 'd'},
        {"json", no_argument, NULL, 'j'},         {NULL, 0, NULL, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "+c:r:u:m:a:dj", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 'r':
            retry = optarg;
            break;
        case 'u':
            until = optarg;
            break;
        case 'm':
            message = optarg;
            break;
        case 'a':
            at = optarg;
            break;
        case 'd':
            drain = true;
            break;
        case 'j':
            json = true;
            break;
        default:
            return cli_usage(argv[0]);
        }
    }
    if (optind != argc)
        return cli_usage(argv[0]);
    if (retry && until) {
        fprintf(stderr, "ferry down: give --retry-after or --until, not both\n");
        return EXIT_USAGE;
    }
    if (message && strlen(message) > MAINT_MESSAGE_MAX) {
        fprintf(stderr, "ferry down: --message is longer than %d bytes\n", MAINT_MESSAGE_MAX);
        return EXIT_USAGE;
    }

    struct buf line;
    buf_init(&line, ADMIN_LINE_MAX - 1);
    buf_append_str(&line, "down");
    int64_t now = maint_now_ms();
    if (retry) {
        uint64_t ms;
        if (conf_parse_duration(retry, &ms) < 0) {
            fprintf(stderr,
                    "ferry down: --retry-after: cannot parse '%s' (want SECS or a "
                    "duration like 5m)\n",
                    retry);
            buf_finish(&line);
            return EXIT_USAGE;
        }
        buf_printf(&line, " retry_after=%" PRIu64, (ms + 999) / 1000);
    }
    const char *names[2] = {"until", "at"}, *vals[2] = {until, at};
    for (int i = 0; i < 2; i++) {
        if (!vals[i])
            continue;
        int64_t t;
        if (maint_parse_time(vals[i], now, &t) < 0) {
            fprintf(stderr,
                    "ferry down: --%s: cannot parse '%s' (want +DURATION, @EPOCH, "
                    "YYYY-MM-DDTHH:MM[:SS][Z] or HH:MM)\n",
                    names[i], vals[i]);
            buf_finish(&line);
            return EXIT_USAGE;
        }
        buf_printf(&line, " %s=%" PRId64, names[i], t);
    }
    if (message) {
        buf_append_str(&line, " message=");
        admin_encode_value(&line, message, strlen(message));
    }
    if (drain)
        buf_append_str(&line, " drain=1");

    /* --drain waits up to drain_timeout on the server; allow for that. */
    struct ferry_conf conf;
    int timeout_ms = 30000;
    if (drain && cli_load_conf(path, &conf) == 0)
        timeout_ms += (int)(conf.maintenance.drain_timeout_ms);
    if (drain)
        conf_finish(&conf);
    int r = cli_admin_run(path, line.data, timeout_ms, json, "drain");
    buf_finish(&line);
    return r;
}
