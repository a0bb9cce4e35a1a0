/* The control commands' common half: send one admin request, print the reply. */
#include "cli/cli.h"

#include "admin/admin.h"
#include "common/buf.h"
#include "common/conf.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

/* Print the string member key of reply (if it is one) to out. */
static void print_text_member(const json_t *reply, const char *key, FILE *out)
{
    const char *t = json_string_value(json_object_get(reply, key));
    if (t)
        fputs(t, out);
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
    struct buf raw;
    buf_init(&raw, ADMIN_REPLY_MAX);
    char err[512];
    r = admin_call(conf.server.admin_socket, line, &raw, timeout_ms, err, sizeof(err));
    conf_finish(&conf);
    if (r < 0) {
        fprintf(stderr, "ferry: %s\n", err);
        buf_finish(&raw);
        return EXIT_RUNTIME;
    }
    int rc = EXIT_OK;
    json_t *reply = json_loadb(raw.data, raw.len, 0, NULL);
    const json_t *ok = json_object_get(reply, "ok");
    if (!json_is_object(reply) || !json_is_boolean(ok)) {
        fprintf(stderr, "ferry: unexpected reply from the server: %s\n", raw.data);
        json_decref(reply);
        buf_finish(&raw);
        return EXIT_RUNTIME;
    }
    if (!json_is_true(ok)) {
        rc = EXIT_RUNTIME;
        if (!json) {
            fputs("ferry: ", stderr);
            print_text_member(reply, "error", stderr);
            fputs("\n", stderr);
        }
    } else if (fail_member) {
        /* e.g. drain: {"drained":false,...} means the operator must not go on. */
        const json_t *d = json_object_get(json_object_get(reply, fail_member), "drained");
        if (json_is_false(d))
            rc = EXIT_RUNTIME;
    }
    if (json) {
        printf("%s\n", raw.data);
    } else if (rc == EXIT_OK || fail_member) {
        print_text_member(reply, "text", stdout);
        print_text_member(reply, "text_drain", rc == EXIT_OK ? stdout : stderr);
    }
    json_decref(reply);
    buf_finish(&raw);
    return rc;
}

int cli_admin_parse(int argc, char **argv, const char **path, bool *json)
{
    *path = NULL;
    *json = false;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "+c:j", opts, NULL)) != -1) {
        if (ch == 'c')
            *path = optarg;
        else if (ch == 'j')
            *json = true;
        else
            return cli_usage(argv[0]);
    }
    if (optind != argc)
        return cli_usage(argv[0]);
    return 0;
}

int cli_admin_simple(int argc, char **argv, const char *command)
{
    const char *path;
    bool json;
    int r = cli_admin_parse(argc, argv, &path, &json);
    if (r != 0)
        return r;
    return cli_admin_run(path, command, 30000, json, NULL);
}
