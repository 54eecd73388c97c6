/* SPDX-License-Identifier: Apache-2.0 */
/* Shared declarations of the keygate command's subcommands. */
#ifndef KG_CLI_H
#define KG_CLI_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kg_config.h"
#include "kg_err.h"
#include "kg_release.h"

/* Exit codes (docs/cli.md, keygate(1), every --help): 0 success, 1 usage error, otherwise
 * the failed step's kg_step value (10..20); keygate doctor exits 21 when a check failed. */
#define KG_EXIT_OK 0
#define KG_EXIT_USAGE 1
#define KG_EXIT_DOCTOR 21

typedef struct kg_cli_common {
    const char *config_path;  /* --config, else $KEYGATE_CONF, else /etc/keygate/keygate.conf */
    int json;                 /* --json */
    const char *api_key_file; /* --api-key-file: overrides ita_api_key_file; "-" = read stdin */
} kg_cli_common;

/* The options every subcommand takes: -c/--config, -j/--json, -A/--api-key-file, -h/--help. */
#define KG_CLI_COMMON_SHORT "c:jA:h"
#define KG_CLI_COMMON_LONG                                                                                   \
    {"config", required_argument, NULL, 'c'}, {"json", no_argument, NULL, 'j'},                              \
        {"api-key-file", required_argument, NULL, 'A'},                                                      \
    {                                                                                                        \
        "help", no_argument, NULL, 'h'                                                                       \
    }

/* Handles a common option (c, j, A); returns 1 when c was one of them. */
int kg_cli_common_opt(int c, const char *arg, kg_cli_common *common);

/* The one-line answer to getopt's '?' or ':' for subcommand cmd; returns KG_EXIT_USAGE. */
int kg_cli_bad_option(const char *cmd, char **argv);

/* Prints "keygate: usage: <cmd>: <message> (see keygate <cmd> --help)" and returns KG_EXIT_USAGE. */
int kg_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints the common options and the exit codes (the tail of every --help). */
void kg_cli_help_tail(FILE *fp);

/* Loads and checks the configuration (with --api-key-file applied). Returns 1 or 0 with err. */
int kg_cli_load_config(const kg_cli_common *common, kg_config *cfg, kg_err *err);

/* The API key read from stdin when --api-key-file - was given (secure heap, read once, freed at
 * exit); NULL when the key comes from a file. *failed is set on a read error (err filled). */
const char *kg_cli_api_key(const kg_cli_common *common, int *failed, kg_err *err);

#define KG_CLI_MAX_USER_DATA (1024 * 1024) /* ITA's runtime_data limit */

/* Reads a binary file of at most max bytes into a malloc'ed buffer of max + 1 bytes (caller frees).
 * Returns 1/0. */
int kg_cli_read_file(const char *path, size_t max, uint8_t **out, size_t *len, kg_err *err);

/* Prints "keygate: <err.msg>" on stderr (with --json also {"ok": false, ...} on stdout) and
 * returns the exit code for it. */
int kg_cli_fail(const kg_err *err);

/* Prints a JSON document on stdout and deletes it. Returns KG_EXIT_OK, or 19 when out of memory. */
int kg_cli_print_json(cJSON *doc);

/* Adds "steps_ms" (wrapping_key .. transfer, and with released also unwrap, match) and, with
 * released, "attested" to doc (keygate release and status --json). */
void kg_cli_add_times_json(cJSON *doc, const kg_release_times *t, int released);

/* Prints s and a newline on stdout, frees s and returns KG_EXIT_OK. s is what cJSON_Print or
 * strdup returned: NULL means they ran out of memory, which fails through kg_cli_fail(err). */
int kg_cli_print_text(char *s, kg_err *err);

/* Marks --json as active for kg_cli_fail (set by kg_cli_common_opt). */
void kg_cli_set_json(kg_cli_common *common);

int kg_cmd_evidence(int argc, char **argv, const kg_cli_common *common);
int kg_cmd_token(int argc, char **argv, const kg_cli_common *common);
int kg_cmd_verify(int argc, char **argv, const kg_cli_common *common);
int kg_cmd_release(int argc, char **argv, const kg_cli_common *common);
int kg_cmd_ref(int argc, char **argv, const kg_cli_common *common);
int kg_cmd_status(int argc, char **argv, const kg_cli_common *common);
int kg_cmd_agent(int argc, char **argv, const kg_cli_common *common);
int kg_cmd_doctor(int argc, char **argv, const kg_cli_common *common);
int kg_cmd_version(int argc, char **argv, const kg_cli_common *common);

#endif
