/* Subcommand handlers. Each cmd_*.c uses only public headers of the modules. */
#ifndef FERRY_CLI_CLI_H
#define FERRY_CLI_CLI_H

#include <stdbool.h>

struct ferry_conf;

/* Exit codes (DESIGN.md): 0 success, 1 runtime failure, 2 usage or config error. */
enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
    const char *usage;                 /* "[-c FILE] ..." */
    const char *summary;
};

/** The subcommand table, terminated by {NULL}. Defined in main.c. */
extern const struct cli_command cli_commands[];

/** Print "usage: ferry NAME USAGE" for the named command to stderr; returns EXIT_USAGE. */
int cli_usage(const char *name);

/** Load the configuration named by -c (NULL: the default search order) into c,
 * printing errors to stderr. Returns 0, or EXIT_USAGE after printing the
 * problems; c must be conf_finish()ed either way. */
int cli_load_conf(const char *path, struct ferry_conf *c);

/** Set the log level and open [server] error_log of c. Returns 0, or EXIT_RUNTIME
 * after printing why to stderr. Main thread, before other threads start. */
int cli_open_log(const struct ferry_conf *c);

/** Send the admin request line (without newline) to the server named by the
 * configuration at conf_path, waiting at most timeout_ms, and print the reply:
 * raw JSON with json, else its "text" (and "text_drain") members. Exit code:
 * EXIT_RUNTIME when no server answers, the reply says ok:false, or the reply's
 * fail_member object (if given) says "drained":false. */
int cli_admin_run(const char *conf_path, const char *line, int timeout_ms, bool json,
                  const char *fail_member);

/** Parse a control command's -c FILE and --json. Returns 0, or EXIT_USAGE
 * after printing the usage. */
int cli_admin_parse(int argc, char **argv, const char **path, bool *json);

/** A control command with only -c FILE and --json: parse them and send command. */
int cli_admin_simple(int argc, char **argv, const char *command);

struct server;

/** Extra setup for `serve` in a test build: when set, it runs after the
 * server and its modules are created and before server_run() (it may install
 * handlers); a non-zero return stops the start. NULL in ferry itself: the
 * test-only handlers live in tests/tools/ and are never linked into it. */
extern int (*cli_serve_setup)(struct server *s);

int cmd_serve(int argc, char **argv);
int cmd_down(int argc, char **argv);
int cmd_up(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_version(int argc, char **argv);
int cmd_presign(int argc, char **argv);
int cmd_sign(int argc, char **argv);
int cmd_offload(int argc, char **argv);
int cmd_swap(int argc, char **argv);

#endif
