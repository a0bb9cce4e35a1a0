#include "cli/cli.h"

#include "common/alloc.h"
#include "common/conf.h"
#include "offload/keymap.h"
#include "offload/link.h"
#include "offload/serve.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SIGN_DEFAULT_TTL 3600
#define SIGN_MAX_TTL (3650 * 86400ULL)

static int parse_ttl(const char *arg, int64_t *out)
{
    uint64_t ms;
    if (conf_parse_duration(arg, &ms) < 0 || ms % 1000 || ms < 1000 || ms > SIGN_MAX_TTL * 1000)
        return -1;
    *out = (int64_t)(ms / 1000);
    return 0;
}

static int parse_epoch(const char *arg, int64_t *out)
{
    size_t n = strlen(arg);
    if (n == 0 || n > OFFLOAD_LINK_EPOCH_MAX || strspn(arg, "0123456789") != n)
        return -1;
    *out = (int64_t)strtoll(arg, NULL, 10);
    return 0;
}

/* PATH must be a path the server checks links for, in the form it signs:
 * under url_prefix, decoded, without '//' or dot segments. */
static int check_path(const struct ferry_conf *conf, const char *path)
{
    const char *rel;
    size_t rel_len;
    int in = path[0] == '/' ? offload_rel_from_url(conf->offload.url_prefix, path, strlen(path),
                                                   &rel, &rel_len)
                            : 0;
    if (in == 0) {
        fprintf(stderr,
                "ferry sign: '%s' is not under url_prefix '%s': ferry checks no link there\n", path,
                conf->offload.url_prefix);
        return -1;
    }
    if (in < 0) {
        fprintf(stderr,
                "ferry sign: '%s' names no file ferry serves (an empty, '.' or '..' segment, "
                "'//', a control byte or invalid UTF-8); give the decoded path, e.g. "
                "'%sa b.jpg'\n",
                path, conf->offload.url_prefix);
        return -1;
    }
    return 0;
}

/* ferry sign [-c FILE] PATH [--ttl DURATION] [--expires EPOCH]: print PATH as a
 * signed link: percent-encoded once, with expires= and sig=. */
int cmd_sign(int argc, char **argv)
{
    const char *conf_path = NULL;
    int64_t ttl = SIGN_DEFAULT_TTL, expires = -1;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"ttl", required_argument, NULL, 't'},
        {"expires", required_argument, NULL, 'e'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:t:e:", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            conf_path = optarg;
            break;
        case 't':
            if (parse_ttl(optarg, &ttl) < 0) {
                fprintf(stderr, "ferry sign: --ttl '%s': want whole seconds from 1s to 3650d\n",
                        optarg);
                return EXIT_USAGE;
            }
            break;
        case 'e':
            if (parse_epoch(optarg, &expires) < 0) {
                fprintf(stderr, "ferry sign: --expires '%s': want Unix seconds (digits only)\n",
                        optarg);
                return EXIT_USAGE;
            }
            break;
        default:
            return cli_usage(argv[0]);
        }
    }
    if (optind != argc - 1 || !argv[optind][0])
        return cli_usage(argv[0]);
    const char *path = argv[optind];
    if (expires < 0)
        expires = (int64_t)time(NULL) + ttl;

    struct ferry_conf conf;
    int rc = cli_load_conf(conf_path, &conf);
    if (rc != 0)
        goto done;
    rc = EXIT_USAGE;
    if (!conf.offload.link_secret[0]) {
        const char *file = conf_path ? conf_path : conf_default_path();
        fprintf(stderr,
                "ferry sign: no [offload] link_secret in %s%s%s: ferry checks no links, so "
                "there is nothing to sign with\n",
                file ? "'" : "", file ? file : "the built-in defaults", file ? "'" : "");
        goto done;
    }
    if (check_path(&conf, path) < 0)
        goto done;
    struct offload_link_key *key = NULL;
    if (offload_link_key_create(conf.offload.link_secret, strlen(conf.offload.link_secret), &key) <
        0) {
        fprintf(stderr, "ferry sign: cannot set up HMAC-SHA256\n");
        rc = EXIT_RUNTIME;
        goto done;
    }
    char epoch[24], sig[OFFLOAD_LINK_SIG_LEN + 1];
    int n = snprintf(epoch, sizeof(epoch), "%" PRId64, expires);
    int r = offload_link_sign(key, epoch, (size_t)n, path, strlen(path), sig);
    offload_link_key_destroy(key);
    if (r < 0) {
        fprintf(stderr, "ferry sign: cannot compute the signature\n");
        rc = EXIT_RUNTIME;
        goto done;
    }
    size_t len = strlen(path);
    char *enc = xmalloc(3 * len + 1);
    offload_serve_encode(path, len, enc);
    printf("%s?expires=%s&sig=%s\n", enc, epoch, sig);
    free(enc);
    rc = EXIT_OK;
done:
    conf_finish(&conf);
    return rc;
}
