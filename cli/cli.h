/* Shared declarations of the keygate command's subcommands. */
#ifndef KG_CLI_H
#define KG_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "kg_config.h"
#include "kg_err.h"

/* Exit codes: 0 success, 1 usage error, otherwise the failed step's kg_step value (10..19). */
#define KG_EXIT_OK 0
#define KG_EXIT_USAGE 1

typedef struct kg_cli_common {
    const char *config_path; /* --config, else $KEYGATE_CONF, else /etc/keygate/keygate.conf */
    int json;                /* --json */
} kg_cli_common;

/* Loads and checks the configuration. Returns 1 or 0 with err. */
int kg_cli_load_config(const kg_cli_common *common, kg_config *cfg, kg_err *err);

#define KG_CLI_MAX_USER_DATA (1024 * 1024) /* ITA's runtime_data limit */

/* Reads a binary file of at most max bytes into a malloc'ed buffer of max + 1 bytes (caller frees).
 * Returns 1/0. */
int kg_cli_read_file(const char *path, size_t max, uint8_t **out, size_t *len, kg_err *err);

/* Prints "keygate: <err.msg>" on stderr and returns the exit code for it. */
int kg_cli_fail(const kg_err *err);

int kg_cmd_evidence(int argc, char **argv, const kg_cli_common *common);
int kg_cmd_token(int argc, char **argv, const kg_cli_common *common);
int kg_cmd_verify(int argc, char **argv, const kg_cli_common *common);
int kg_cmd_release(int argc, char **argv, const kg_cli_common *common);
int kg_cmd_ref(int argc, char **argv, const kg_cli_common *common);

#endif
