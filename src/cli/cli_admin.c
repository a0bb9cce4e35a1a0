/* The control commands' common half: send one admin request, print the reply. */
#include "cli/cli.h"

#include "common/buf.h"
#include "common/conf.h"
#include "maint/admin.h"
#include "maint/json.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

/* Print the JSON string member key of reply to stdout (if present). */
static void print_text_member(const struct buf *reply, const char *key, FILE *out)
{
    const char *v;
    size_t vlen;
    if (json_find_member(reply->data, reply->len, key, &v, &vlen) < 0)
        return;
    struct buf t;
    buf_init(&t, ADMIN_REPLY_MAX);
    if (json_decode_string(v, vlen, &t) == 0 && t.data)
        fputs(t.data, out);
    buf_finish(&t);
}

int cli_admin_run(const char *conf_path, const char *line, int timeout_ms, bool json,
                  const char *fail_member)
{
    struct ferry_conf conf;
    int r = cli_load_conf(conf_path, &conf);
    if (r != 0) {
        conf_finish(&conf);
        return r;
    }
    struct buf reply;
    buf_init(&reply, ADMIN_REPLY_MAX);
    char err[512];
    r = admin_call(conf.server.admin_socket, line, &reply, timeout_ms, err, sizeof(err));
    conf_finish(&conf);
    if (r < 0) {
        fprintf(stderr, "ferry: %s\n", err);
        buf_finish(&reply);
        return EXIT_RUNTIME;
    }
    const char *v;
    size_t vlen;
    int rc = EXIT_OK;
    if (json_find_member(reply.data, reply.len, "ok", &v, &vlen) < 0) {
        fprintf(stderr, "ferry: unexpected reply from the server: %s\n", reply.data);
        rc = EXIT_RUNTIME;
    } else if (vlen != 4 || memcmp(v, "true", 4) != 0) {
        rc = EXIT_RUNTIME;
        if (!json) {
            fputs("ferry: ", stderr);
            print_text_member(&reply, "error", stderr);
            fputs("\n", stderr);
        }
    } else if (fail_member &&
               json_find_member(reply.data, reply.len, fail_member, &v, &vlen) == 0) {
        /* e.g. drain: {"drained":false,...} means the operator must not go on. */
        const char *d;
        size_t dlen;
        if (json_find_member(v, vlen, "drained", &d, &dlen) == 0 && dlen == 5 &&
            memcmp(d, "false", 5) == 0)
            rc = EXIT_RUNTIME;
    }
    if (json) {
        printf("%s\n", reply.data);
    } else if (rc == EXIT_OK || fail_member) {
        print_text_member(&reply, "text", stdout);
        print_text_member(&reply, "text_drain", rc == EXIT_OK ? stdout : stderr);
    }
    buf_finish(&reply);
    return rc;
}

int cli_admin_simple(int argc, char **argv, const char *command)
{
    const char *path = NULL;
    bool json = false;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "+c:j", opts, NULL)) != -1) {
        if (ch == 'c')
            path = optarg;
        else if (ch == 'j')
            json = true;
        else
            return cli_usage(argv[0]);
    }
    if (optind != argc)
        return cli_usage(argv[0]);
    return cli_admin_run(path, command, 30000, json, NULL);
}
